"""The demo's MLP and training step in JAX with optax (``--backend jax``)."""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import optax

from .experiment import topk_loss


def loss_function(name):
    """``f(scores, labels, key) -> scalar`` for loss ``name``; the noised loss draws from ``key``."""
    if name == "cross_entropy":
        return lambda scores, labels, key: optax.softmax_cross_entropy_with_integer_labels(scores, labels).mean()
    fn, params = topk_loss(name)
    if name == "noised_topk_hinge":
        return lambda scores, labels, key: fn(scores, labels, key=key, **params)
    return lambda scores, labels, key: fn(scores, labels, **params)


session = contextlib.nullcontext  # XLA's CPU threading is set when JAX starts; left as it is


def mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


@functools.lru_cache(maxsize=None)
def compiled_step(loss, lr):
    """One jitted Adam step for ``loss`` (compiled once per loss and batch shape, reused across runs)."""
    optimizer = optax.adam(lr)
    loss_fn = loss_function(loss)

    def objective(params, x, y, key):
        return loss_fn(mlp(params, x), y, key)

    @jax.jit
    def step(params, state, x, y, key):
        grads = jax.grad(objective)(params, x, y, key)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return optimizer, step


class Trainer:
    """A ReLU MLP with the given initial weights, trained by Adam on (x, y)."""

    def __init__(self, loss, params, lr, loss_seed, x, y):
        optimizer, self._step = compiled_step(loss, lr)
        self.params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in params]
        self.state = optimizer.init(self.params)
        self.key = jax.random.key(loss_seed)
        self.t = 0
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)

    def step(self, idx):
        key = jax.random.fold_in(self.key, self.t)
        self.params, self.state = self._step(self.params, self.state, self.x[idx], self.y[idx], key)
        self.t += 1

    def scores(self, x):
        return jax.jit(mlp)(self.params, jnp.asarray(x))

    @staticmethod
    def asarray(a):
        return jnp.asarray(a)

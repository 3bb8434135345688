"""Train a linear classifier with the smooth top-k SVM loss in JAX + optax.

The same synthetic problem as ``torch_training_loop.py``: 20 classes in 4
groups of 5 similar classes, 16 features, 30% of the training labels moved
to a random class of the same group. The whole training step (loss,
gradient through topkloss's custom VJP, optimizer update) runs under
``jax.jit``:

    python examples/jax_optax_training_loop.py [--steps 200]
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import optax

import topkloss

N_CLASSES, GROUP, N_FEATURES = 20, 5, 16


@jax.jit
def make_centres(key):
    """Class centres: 4 well separated groups of 5 nearby classes."""
    k_group, k_offset = jax.random.split(key)
    groups = 3.0 * jax.random.normal(k_group, (N_CLASSES // GROUP, N_FEATURES))
    offsets = jax.random.normal(k_offset, (N_CLASSES, N_FEATURES))
    return jnp.repeat(groups, GROUP, axis=0) + offsets


@functools.partial(jax.jit, static_argnames="n")
def make_data(key, centres, n, noise):
    """Features, observed labels and true labels. A fraction ``noise`` of
    the observed labels is replaced by a random class of the same group."""
    k_label, k_x, k_noise, k_other = jax.random.split(key, 4)
    labels = jax.random.randint(k_label, (n,), 0, N_CLASSES)
    x = centres[labels] + 1.5 * jax.random.normal(k_x, (n, N_FEATURES))
    noisy = jax.random.uniform(k_noise, (n,)) < noise
    other = jax.random.randint(k_other, (n,), 0, GROUP)
    same_group = labels // GROUP * GROUP + other
    return x, jnp.where(noisy, same_group, labels), labels


def init_params(key):
    bound = 1.0 / N_FEATURES**0.5
    shape = (N_FEATURES, N_CLASSES)
    w = jax.random.uniform(key, shape, minval=-bound, maxval=bound)
    return {"w": w, "b": jnp.zeros(N_CLASSES)}


def model(params, x):
    return x @ params["w"] + params["b"]


# k and tau are static parameters: bind them outside jit
loss_fn = functools.partial(topkloss.smooth_topk_svm, k=5, tau=1.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    keys = jax.random.split(jax.random.key(0), 5)
    k_centres, k_train, k_test, k_init, key = keys
    centres = make_centres(k_centres)
    x, y_noisy, _ = make_data(k_train, centres, n=2000, noise=0.3)
    x_test, _, y_test = make_data(k_test, centres, n=2000, noise=0.0)

    params = init_params(k_init)
    optimizer = optax.adam(0.05)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        key, sub = jax.random.split(key)
        idx = jax.random.randint(sub, (args.batch_size,), 0, x.shape[0])
        xb, yb = x[idx], y_noisy[idx]
        grad_fn = jax.value_and_grad(lambda p: loss_fn(model(p, xb), yb))
        loss, grads = grad_fn(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss

    for step in range(1, args.steps + 1):
        params, opt_state, key, loss = train_step(params, opt_state, key)
        if step % 50 == 0:
            print(f"step {step:4d}  loss {float(loss):.4f}")

    @jax.jit
    def evaluate(params, x, y):
        scores = model(params, x)
        top1 = topkloss.topk_accuracy(scores, y, k=1)
        return top1, topkloss.topk_accuracy(scores, y, k=5)

    top1, top5 = map(float, evaluate(params, x_test, y_test))
    print(f"test set (clean labels): top-1 accuracy {top1:.3f}, "
          f"top-5 accuracy {top5:.3f}")
    return top1, top5


if __name__ == "__main__":
    main()

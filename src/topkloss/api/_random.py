"""Standard-normal noise, drawn by the framework of the array it goes with.

Frameworks are found through ``sys.modules`` (a framework that is not imported cannot
have made the array), never imported here, so ``import topkloss`` imports none.

``seed`` is an int (a fresh generator seeded with it at every call: same seed, same
draws), or a generator whose state advances with each call: ``numpy.random.Generator``
(any array type; drawn on the host, then moved), ``torch.Generator`` (torch tensors, on
their device type) or ``cupy.random.Generator`` (CuPy arrays). ``key`` is a JAX PRNG key
(JAX arrays only; it may be a traced argument under ``jax.jit``). With neither, torch uses
its global generator (``torch.manual_seed``), NumPy and CuPy a fresh unseeded one; JAX has
no global state and asks for a key.
"""

from __future__ import annotations

import sys

import numpy as np

from ..adapters import _framework
from ..core import validate as v
from ..core.ops import _device

_SEED_KINDS = "an int in [0, 2**63 - 1] or a generator (numpy.random.Generator; torch.Generator for torch tensors; cupy.random.Generator for CuPy arrays)"


def standard_normal(xp, shape, like, *, seed=None, key=None):
    """A standard-normal array of ``shape`` in the dtype, array type and device of ``like``."""
    if seed is not None and key is not None:
        raise ValueError("give seed or key, not both")
    kind = _framework(like)
    if kind == "jax":
        return _jax_normal(shape, like, seed, key)
    if key is not None:
        raise TypeError(
            f"key is a JAX PRNG key, for JAX arrays; with {type(like).__module__}.{type(like).__name__} "
            f"pass seed ({_SEED_KINDS})"
        )
    if kind == "torch":
        return _torch_normal(shape, like, seed)
    return _numpy_like_normal(xp, shape, like, seed)


SEED_MAX = 2**63 - 1
"""The largest int seed: JAX's ``random.key`` takes up to int64's maximum (torch's
``manual_seed`` up to 2**64 - 1, NumPy any size); one range everywhere, so a seed that works on
one backend works on all."""


def _int_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be {_SEED_KINDS}; got {seed!r} ({type(seed).__name__})")
    # one range on every backend: JAX's keys take up to int64's maximum
    return v.check_int(seed, "seed", 0, SEED_MAX)


def _normal(gen, shape, double):
    return gen.standard_normal(shape, dtype=np.float64 if double else np.float32)


def _jax_normal(shape, like, seed, key):
    jax = sys.modules["jax"]
    if key is None:
        if seed is None:
            raise ValueError(
                "JAX has no global random state: pass key (a JAX PRNG key such as jax.random.key(0)), "
                "seed (an int) or noise"
            )
        if isinstance(seed, np.random.Generator):
            if isinstance(like, jax.core.Tracer):  # drawn once, at trace time: pass a key
                raise TypeError("seed: a numpy.random.Generator cannot draw inside a JAX transform (jit, grad, vmap); pass key")
            return jax.numpy.asarray(_normal(seed, shape, like.dtype == jax.numpy.float64), dtype=like.dtype)
        key = jax.random.key(_int_seed(seed))
    typed = isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = isinstance(key, jax.Array) and key.dtype == jax.numpy.uint32 and key.ndim == 1
    if not ((typed and key.ndim == 0) or raw):
        what = f"{type(key).__name__} of dtype {getattr(key, 'dtype', None)} and shape {getattr(key, 'shape', None)}"
        raise TypeError(f"key must be one JAX PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)); got {what}")
    return jax.random.normal(key, shape, dtype=like.dtype)


def _torch_normal(shape, like, seed):
    torch = sys.modules["torch"]
    gen = None
    if isinstance(seed, torch.Generator):
        if seed.device.type != like.device.type:
            raise ValueError(f"seed (a torch.Generator on {seed.device}) must be on the device of scores ({like.device})")
        gen = seed
    elif isinstance(seed, np.random.Generator):
        return torch.asarray(_normal(seed, shape, like.dtype == torch.float64), device=like.device)
    elif seed is not None:
        gen = torch.Generator(device=like.device).manual_seed(_int_seed(seed))
    return torch.randn(shape, generator=gen, dtype=like.dtype, device=like.device)


def _numpy_like_normal(xp, shape, like, seed):
    double = like.dtype == xp.float64
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(like, cupy.ndarray):
        with like.device:
            if isinstance(seed, np.random.Generator):
                return cupy.asarray(_normal(seed, shape, double))
            gen = seed if isinstance(seed, cupy.random.Generator) else cupy.random.default_rng(_maybe_int(seed))
            return _normal(gen, shape, double)
    gen = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(_maybe_int(seed))
    z = _normal(gen, shape, double)
    return z if isinstance(like, np.ndarray) else xp.asarray(z, device=_device(like))


def _maybe_int(seed):
    return None if seed is None else _int_seed(seed)

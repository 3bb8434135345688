"""How each framework learns about a core (forward, backward) pair.

Frameworks are found lazily, by looking in ``sys.modules`` (as array-api-compat does):
a framework that is not imported cannot have made the array, so ``import topkloss``
imports none. Each framework has one small module here; the first call with its arrays
imports it.
"""

from __future__ import annotations

import sys


def _framework(x):
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return "jax"
    return "other"


def adapter_for(x):
    """The adapter module for the array type of ``x``."""
    kind = _framework(x)
    if kind == "torch":
        from . import torch as adapter
    elif kind == "jax":
        from . import jax as adapter
    else:
        from . import numpy_like as adapter
    return adapter


def namespace(*arrays):
    """The array-API namespace of ``arrays``; TypeError if they come from different libraries."""
    kinds = {_framework(a) for a in arrays}
    if len(kinds) > 1:
        raise TypeError("arrays of different libraries")
    return adapter_for(arrays[0]).namespace(*arrays)


def device(x):
    """The device of ``x``, or None where it cannot be known (a traced array)."""
    return adapter_for(x).device(x)


def apply(op, static, x, *args):
    """``op``'s value at ``x``, differentiable with respect to ``x`` by the array's framework."""
    return adapter_for(x).apply(op, static, x, *args)


def is_concrete(x):
    """Whether the values of ``x`` can be read now without breaking a trace or a transform.

    False under ``jax.jit`` tracing, ``torch.compile``, ``torch.func`` transforms and for
    lazy arrays (Dask): value checks are skipped there, or deferred (:func:`check_lazily`).
    """
    return adapter_for(x).is_concrete(x)


def check_lazily(x, check):
    """``x``, with ``check(chunk)`` run on its values when a lazy array (Dask) is computed.

    For arrays whose values cannot be read now, this is where a value check can still run
    without a host synchronisation; adapters without such arrays return ``x`` unchanged
    (a traced JAX array or a compiled torch tensor goes unchecked).
    """
    fn = getattr(adapter_for(x), "check_lazily", None)
    return x if fn is None else fn(x, check)

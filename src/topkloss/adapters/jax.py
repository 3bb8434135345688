"""JAX: one ``jax.custom_vjp`` per core op.

Static parameters (k, tau, ...) are ``nondiff_argnums``; non-differentiable array inputs
(labels, noise, weights) get ``None`` cotangents. Works with ``grad``, ``jit``, ``vmap``
and ``checkpoint``. An op with ``float64_inside`` is traced with ``jax_enable_x64`` on (CPUs and
GPUs), whatever the program's setting: its float64 plans are open to float32 inputs.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as xp


X64_PLATFORMS = ("cpu", "gpu", "cuda", "rocm")
"""Where an op with ``float64_inside`` is traced with ``jax_enable_x64`` on: backends with
float64 arithmetic (TPUs have none)."""


def _x64(op):
    """``jax_enable_x64`` on while ``op`` is traced, if it computes part of its work in float64
    (``Op.float64_inside``) and the default backend has float64; else no change."""
    if op.float64_inside and jax.default_backend() in X64_PLATFORMS:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


@functools.cache
def vjp_for(op):
    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def f(static, x, *args):
        with _x64(op):
            return op.forward(xp, x, *args, static=static)[0]

    def f_fwd(static, x, *args):
        with _x64(op):
            out, residuals = op.forward(xp, x, *args, static=static)
        return out, (x, args, residuals)

    def f_bwd(static, saved, g):
        x, args, residuals = saved
        with _x64(op):
            dx = op.backward(xp, x, args, residuals, g, static=static)
        return (dx, *([None] * len(args)))

    f.defvjp(f_fwd, f_bwd)
    return f


def namespace(*arrays):
    return xp


def apply(op, static, x, *args):
    return vjp_for(op)(static, x, *args)


def is_concrete(x):
    """Not a tracer, and not inside a staging trace (``jit``, ``checkpoint``...): there even
    operations on a concrete (closed-over) array are staged, and their values cannot be read."""
    return not isinstance(x, jax.core.Tracer) and _evaluating_now()


def _evaluating_now():
    # one tiny operation says whether operations run now (top level, eager grad or vmap of
    # constants) or are staged into a jaxpr (public API only: no private trace state)
    return not isinstance(xp.logical_not(xp.asarray(False)), jax.core.Tracer)


def device(x):
    if isinstance(x, jax.core.Tracer):
        return None
    devices = x.devices()
    return next(iter(devices)) if len(devices) == 1 else frozenset(devices)

"""Standard-only helpers shared by the losses.

Everything here uses only functions of the Python array API standard, so it runs on
NumPy, CuPy, PyTorch, JAX (also under ``jit``) and array-api-strict. Log-space
helpers never evaluate ``log(0)`` or ``-inf - (-inf)``: no warnings, no NaN.
"""

from __future__ import annotations

import math

import array_api_compat

NEG_INF = -math.inf


def _device(x):
    """The standard ``x.device``; array-api-compat's lookup where the attribute is missing or
    raises (JAX tracers, NumPy < 2). The attribute first, so torch.compile traces it directly."""
    try:
        return x.device
    except Exception:
        return array_api_compat.device(x)


def full_like_shape(xp, shape, value, like):
    """``xp.full`` on the device and in the dtype of ``like``."""
    return xp.full(shape, value, dtype=like.dtype, device=_device(like))


def arange_like(xp, n, like, dtype=None):
    """``xp.arange(n)`` on the device of ``like``."""
    return xp.arange(n, dtype=dtype, device=_device(like))


def logsumexp_list(xp, terms):
    """Element-wise ``log(sum(exp(t) for t in terms))`` of same-shaped arrays.

    Terms may be ``-inf``; the result is ``-inf`` where every term is. Shifted by the
    element-wise maximum, so nothing overflows; all summands are positive, so nothing
    cancels.
    """
    if len(terms) == 1:
        return terms[0]
    m = terms[0]
    for t in terms[1:]:
        m = xp.maximum(m, t)
    finite = xp.isfinite(m)
    shift = xp.where(finite, m, xp.zeros_like(m))
    acc = xp.exp(terms[0] - shift)
    for t in terms[1:]:
        acc = acc + xp.exp(t - shift)
    acc = xp.where(finite, acc, xp.ones_like(acc))
    return xp.where(finite, shift + xp.log(acc), m)


def logsumexp(xp, x, axis=-1, keepdims=False):
    """``log(sum(exp(x), axis))`` along one axis, stable, ``-inf`` for an all ``-inf`` slice."""
    m = xp.max(x, axis=axis, keepdims=True)
    finite = xp.isfinite(m)
    shift = xp.where(finite, m, xp.zeros_like(m))
    acc = xp.sum(xp.exp(x - shift), axis=axis, keepdims=True)
    acc = xp.where(finite, acc, xp.ones_like(acc))
    out = xp.where(finite, shift + xp.log(acc), m)
    return out if keepdims else xp.squeeze(out, axis=axis)


def softplus(xp, r):
    """``log(1 + exp(r))`` without overflow."""
    return xp.maximum(r, xp.zeros_like(r)) + xp.log1p(xp.exp(-xp.abs(r)))


def sigmoid(xp, r):
    """``1 / (1 + exp(-r))`` without overflow."""
    e = xp.exp(-xp.abs(r))
    return xp.where(r >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def onehot(xp, labels, n, like):
    """Boolean ``(batch, n)`` mask, true at each row's label."""
    cols = arange_like(xp, n, like, dtype=labels.dtype)
    return labels[:, None] == cols[None, :]


def pick(xp, x, mask):
    """Sum of ``x`` where ``mask`` along the last axis (a gather written as a masked sum)."""
    return xp.sum(xp.where(mask, x, xp.zeros_like(x)), axis=-1)


def reduce(xp, values, reduction):
    """Apply ``reduction`` (``"mean"``, ``"sum"`` or ``"none"``) to per-sample values.

    The mean of an empty batch is 0 (the empty sum), not NaN.
    """
    if reduction == "none":
        return values
    total = xp.sum(values)
    if reduction == "sum":
        return total
    return total / max(values.shape[0], 1)


def reduction_cotangent(xp, values, reduction):
    """Cotangent of the per-sample values for d(reduce(values)) — ones or 1/batch.

    For ``"none"`` it is ones: the gradient returned is that of the sum of the
    per-sample values, i.e. each row's gradient of its own loss.
    """
    g = xp.ones_like(values)
    if reduction == "mean":
        g = g / max(values.shape[0], 1)
    return g

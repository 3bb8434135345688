r"""Smooth and hard top-k SVM (Berrada, Zisserman, Kumar, ICLR 2018): forward and backward.

With :math:`z = (s - \max_j s_j) / (k\tau)` (the row maximum is subtracted *before* the
division), :math:`x = \exp(z_{\setminus y})` and :math:`e_j` the elementary symmetric
polynomials,

.. math::
    L_{k,\tau}(s, y) = \tau\,\mathrm{softplus}(r),\qquad
    r = \alpha/\tau + \log e_k(x) - \log e_{k-1}(x) - z_y .

With :math:`p = \sigma(r)` and :math:`\pi_j(i) = x_i e_{j-1}(x_{\setminus i}) / e_j(x)`:
:math:`\partial L/\partial s_i = (p/k)(\pi_k(i) - \pi_{k-1}(i))` for :math:`i \ne y` and
:math:`\partial L/\partial s_y = -p/k`. The smooth loss is computed on every row: there is
no switch to the hard loss and no approximation in the gradient.
"""

from __future__ import annotations

from .esf import complement, flatten_levels, log_pi, tree_levels, tree_top, unflatten_levels
from .op import Op
from .ops import NEG_INF, arange_like, onehot, pick, sigmoid, softplus

__all__ = ["SMOOTH_TOPK_SVM", "TOPK_SVM"]


def _smooth_forward(xp, s, labels, *, static):
    k, tau, alpha = static
    n = s.shape[-1]
    mask = onehot(xp, labels, n, s)
    z = (s - xp.max(s, axis=-1, keepdims=True)) / (k * tau)
    z_y = pick(xp, z, mask)
    zx = xp.where(mask, xp.asarray(NEG_INF, dtype=s.dtype), z)
    levels = tree_levels(xp, zx, k)
    log_e = tree_top(xp, levels, k, zx)
    log_ek1 = log_e[k - 2] if k >= 2 else xp.zeros_like(z_y)
    r = (alpha / tau + (log_e[k - 1] - log_ek1)) - z_y
    return tau * softplus(xp, r), (r, *flatten_levels(levels))


def _smooth_backward(xp, s, args, residuals, g, *, static):
    k, tau, alpha = static
    (labels,) = args
    n = s.shape[-1]
    r, levels = residuals[0], unflatten_levels(residuals[1:], k)
    zx = levels[0][0][..., :n]
    log_e = tree_top(xp, levels, k, zx)
    outside = complement(xp, levels, k - 1, n)
    coef = (g * sigmoid(xp, r) / k)[:, None]
    diff = xp.exp(log_pi(xp, zx, outside, log_e, k))
    if k >= 2:
        diff = diff - xp.exp(log_pi(xp, zx, outside, log_e, k - 1))
    mask = onehot(xp, labels, n, s)
    return xp.where(mask, -coef, coef * diff)


SMOOTH_TOPK_SVM = Op("smooth_topk_svm", _smooth_forward, _smooth_backward)


def _hard_forward(xp, s, labels, *, static):
    k, alpha = static
    n = s.shape[-1]
    mask = onehot(xp, labels, n, s)
    s_y = pick(xp, s, mask)
    others = xp.where(mask, xp.asarray(NEG_INF, dtype=s.dtype), s)
    # index of the k-th largest score among the other classes (stable: lowest index on ties)
    idx = xp.argsort(others, axis=-1, descending=True, stable=True)[:, k - 1]
    kth = arange_like(xp, n, s, dtype=idx.dtype)[None, :] == idx[:, None]
    margin = alpha + (pick(xp, s, kth) - s_y) / k
    loss = xp.maximum(margin, xp.zeros_like(margin))
    return loss, (xp.astype(margin > 0, s.dtype), idx)


def _hard_backward(xp, s, args, residuals, g, *, static):
    k, alpha = static
    (labels,) = args
    active, idx = residuals
    n = s.shape[-1]
    cols = arange_like(xp, n, s, dtype=idx.dtype)[None, :]
    coef = (g * active / k)[:, None]
    zero = xp.zeros_like(s)
    return xp.where(cols == idx[:, None], coef, zero) - xp.where(onehot(xp, labels, n, s), coef, zero)


TOPK_SVM = Op("topk_svm", _hard_forward, _hard_backward)

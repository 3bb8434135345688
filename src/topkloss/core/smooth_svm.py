r"""Smooth and hard top-k SVM (Berrada, Zisserman, Kumar, ICLR 2018): forward and backward.

The smooth loss is :math:`L = \tau\,\mathrm{softplus}(r)` with
:math:`r = \alpha/\tau + \log e_k(x) - \log e_{k-1}(x) - z_y`, :math:`z = (s - c)/(k\tau)`,
:math:`x = \exp(z_{\setminus y})`, for any per-row constant :math:`c` (the loss is shift
invariant).

**Exact, cancellation-free evaluation.** Take :math:`c` = the k-th largest score among
the classes other than ``y``, let :math:`T` be the :math:`k-1` classes above it and
:math:`U` the others (label excluded). Every :math:`x_u \le 1` on :math:`U` (with
:math:`x = 1` at the k-th), every :math:`w_t = 1/x_t \le 1` on :math:`T`, and dividing by
:math:`\prod_T x_t`

.. math::
    \frac{e_k(x)}{e_{k-1}(x)} = \frac{N}{D},\quad
    N = \sum_{b=0}^{k-1} e_b(w)\, e_{b+1}(x_U),\quad
    D = \sum_{b=0}^{k-1} e_b(w)\, e_b(x_U),

two sums of positive terms with :math:`N, D \ge 1`. Computing :math:`\log e_k` and
:math:`\log e_{k-1}` separately instead would cancel the large shared terms of the top
:math:`k-1` classes (a float32 error of :math:`\epsilon \sum |z_{[j]}|`).

Since :math:`x_U \le 1` and :math:`N, D \ge 1`, a term of :math:`e_j(x_U)` below
:math:`\epsilon / (k 2^{k-1})` cannot change the result: when the largest possible value
:math:`\binom{|U|}{k}` leaves that range above the dtype's smallest normal number, the
polynomial of :math:`U` is computed in **linear space** (fast: products and sums, no
exp/log); otherwise in log space. The choice depends only on shapes and dtype, never
on values.

**Gradient.** With :math:`p = \sigma(r)`, :math:`\partial L/\partial s = (p/k)\,
\partial r/\partial z`: :math:`-1` at ``y``; at :math:`u \in U`,
:math:`x_u \sum_b e_b(w)\,[e_b(x_{U\setminus u})/N - e_{b-1}(x_{U \setminus u}) \cdot e_{b+1}... ]`
(see ``_smooth_backward``), with the complement polynomials :math:`e_b(x_{U\setminus u})`
from the top-down pass of :mod:`.esf`; at :math:`t \in T` the same from the small
polynomial of :math:`w`. No switch to the hard loss, no truncated series.
"""

from __future__ import annotations

import math

from .esf import complement, flatten_levels, tree_levels, tree_top, unflatten_levels
from .op import Op
from .ops import (
    NEG_INF,
    arange_like,
    logsumexp_list,
    onehot,
    pick,
    scatter_columns,
    sigmoid,
    softplus,
    top_k,
)

__all__ = ["SMOOTH_TOPK_SVM", "TOPK_SVM", "plan_mode"]


def _log_binom(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def plan_mode(n_leaves, k, double):
    """``"linear"`` if e_0..e_k of ``n_leaves`` values in [0, 1] can be computed in linear
    space without losing any term that matters, else ``"log"``.

    The largest value is at most C(n_leaves, k); the smallest that can matter is
    eps / (k 2^(k-1)). Linear space is exact when C(n_leaves, k) / that floor stays within
    the dtype's normal range (with a margin of e^2).
    """
    if n_leaves <= 0 or k <= 0:
        return "linear"
    eps, tiny = (2.0**-53, 2.2250738585072014e-308) if double else (2.0**-24, 1.1754943508222875e-38)
    floor = math.log(eps) - math.log(k) - (k - 1) * math.log(2.0)
    return "linear" if _log_binom(max(n_leaves, k), k) - floor + 2.0 <= -math.log(tiny) else "log"


def _safe_log(xp, v):
    positive = v > 0
    return xp.where(positive, xp.log(xp.where(positive, v, xp.ones_like(v))), xp.asarray(NEG_INF, dtype=v.dtype))


def _log_e_w(xp, levels_w, k, zero):
    """log e_0 .. log e_{k-1} of w (the k - 1 reciprocals of T) from its tree."""
    if k < 2:
        return [zero]
    return [zero, *tree_top(xp, levels_w, k - 1, levels_w[0][0])]


def _split(xp, s, labels, k, tau):
    """Shift, exclude the label, select T (the k-1 classes above the k-th) and build U's leaves."""
    n = s.shape[-1]
    mask_y = onehot(xp, labels, n, s)
    neg_inf = xp.asarray(NEG_INF, dtype=s.dtype)
    vals, idx = top_k(xp, xp.where(mask_y, neg_inf, s), k)
    c = vals[:, k - 1 : k]
    z = (s - c) / (k * tau)  # subtract before dividing: exact differences, then one rounding
    z_y = pick(xp, z, mask_y)
    idx_t = idx[:, : k - 1]
    excluded = mask_y
    cols = arange_like(xp, n, s, dtype=idx.dtype)[None, :]
    for j in range(k - 1):
        excluded = excluded | (cols == idx_t[:, j : j + 1])
    log_w = (c - vals[:, : k - 1]) / (k * tau)  # log(1 / x_t) <= 0
    z_u = xp.where(excluded, neg_inf, z)
    return z_y, idx_t, log_w, z_u


def _smooth_forward(xp, s, labels, *, static):
    k, tau, alpha = static
    n = s.shape[-1]
    mode = plan_mode(n - k, k, s.dtype == xp.float64)
    z_y, idx_t, log_w, z_u = _split(xp, s, labels, k, tau)
    # U: e_1..e_k of x_U (x_U <= 1), linear or log space
    levels_u = tree_levels(xp, xp.exp(z_u) if mode == "linear" else z_u, k, mode)
    top_u = tree_top(xp, levels_u, k, z_u, mode)
    log_eu = [_safe_log(xp, e) for e in top_u] if mode == "linear" else top_u
    zero = xp.zeros_like(z_y)
    log_eu = [zero, *log_eu]  # log e_0 .. log e_k
    # T: e_0..e_{k-1} of w = 1/x_T (k - 1 values in (0, 1]), always in log space
    levels_w = tree_levels(xp, log_w, k - 1) if k >= 2 else [[]]
    log_ew = _log_e_w(xp, levels_w, k, zero)
    log_n = logsumexp_list(xp, [log_ew[b] + log_eu[b + 1] for b in range(k)])
    log_d = logsumexp_list(xp, [log_ew[b] + log_eu[b] for b in range(k)])
    r = (alpha / tau + (log_n - log_d)) - z_y
    # residuals must not alias each other (torch.compile): log_w and log e(U) are recomputed from the trees
    residuals = (r, log_n, log_d, idx_t, *flatten_levels(levels_u), *flatten_levels(levels_w))
    return tau * softplus(xp, r), residuals


def _smooth_backward(xp, s, args, residuals, g, *, static):
    k, tau, alpha = static
    (labels,) = args
    n = s.shape[-1]
    mode = plan_mode(n - k, k, s.dtype == xp.float64)
    r, log_n, log_d, idx_t = residuals[:4]
    flat = residuals[4:]
    n_u = len(flatten_levels(tree_levels_shape(n, k)))
    levels_u = unflatten_levels(flat[:n_u], k)
    levels_w = unflatten_levels(flat[n_u:], k - 1) if k >= 2 else [[]]
    zero = xp.zeros_like(r)
    log_w = levels_w[0][0][:, : k - 1] if k >= 2 else None
    log_ew = _log_e_w(xp, levels_w, k, zero)
    top_u = tree_top(xp, levels_u, k, levels_u[0][0], mode)
    log_eu = [zero, *([_safe_log(xp, e) for e in top_u] if mode == "linear" else top_u)]

    # U entries: dr/dz_u = x_u sum_b e_b(U \ u) (e_b(w) / N - e_{b+1}(w) / D)
    outside = complement(xp, levels_u, k - 1, n, mode)
    leaves = levels_u[0][0][:, :n]
    if mode == "linear":  # all factors are in range by plan_mode: combine the per-row coefficients first
        c_b = [xp.exp(log_ew[b] - log_n) - (xp.exp(log_ew[b + 1] - log_d) if b + 1 < k else zero) for b in range(k)]
        acc = c_b[0][:, None] + xp.zeros_like(leaves)
        for b in range(1, k):
            acc = acc + c_b[b][:, None] * outside[b - 1]
        d_u = leaves * acc
    else:  # every term is a fraction (<= 1) of N or D: exponentiate whole terms only
        d_u = xp.zeros_like(leaves)
        for b in range(k):
            log_term = leaves if b == 0 else leaves + outside[b - 1]
            d_u = d_u + xp.exp(log_term + (log_ew[b] - log_n)[:, None])
            if b + 1 < k:
                d_u = d_u - xp.exp(log_term + (log_ew[b + 1] - log_d)[:, None])

    # T entries (w_t = 1/x_t): dr/dz_t = sum_{b>=1} w_t e_{b-1}(w \ t) (e_b(U)/D - e_{b+1}(U)/N)
    grad = d_u
    if k >= 2:
        out_w = complement(xp, levels_w, k - 2, k - 1)
        d_t = xp.zeros_like(log_w)
        for b in range(1, k):
            log_comp = log_w if b == 1 else log_w + out_w[b - 2]
            d_t = d_t + (
                xp.exp(log_comp + (log_eu[b] - log_d)[:, None]) - xp.exp(log_comp + (log_eu[b + 1] - log_n)[:, None])
            )
        grad = grad + scatter_columns(xp, d_t, idx_t, n, s)

    coef = (g * sigmoid(xp, r) / k)[:, None]
    mask = onehot(xp, labels, n, s)
    return xp.where(mask, -coef, coef * grad)


def tree_levels_shape(m, k):
    """The level structure :func:`tree_levels` makes for ``m`` leaves: widths only (for unflattening)."""
    size = 1 << max(0, (m - 1).bit_length())
    levels, width = [], 1
    while True:
        levels.append([None] * min(width, k))
        if size == 1:
            return levels
        size //= 2
        width *= 2


SMOOTH_TOPK_SVM = Op("smooth_topk_svm", _smooth_forward, _smooth_backward)


def _hard_forward(xp, s, labels, *, static):
    k, alpha = static
    n = s.shape[-1]
    mask = onehot(xp, labels, n, s)
    s_y = pick(xp, s, mask)
    vals, idx = top_k(xp, xp.where(mask, xp.asarray(NEG_INF, dtype=s.dtype), s), k)
    margin = alpha + (vals[:, k - 1] - s_y) / k
    loss = xp.maximum(margin, xp.zeros_like(margin))
    return loss, (xp.astype(margin > 0, s.dtype), idx[:, k - 1])


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

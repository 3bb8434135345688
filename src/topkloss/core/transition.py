r"""Top-k transition loss (after Sawada, Kaneko, Sagi 2020): forward and backward.

SPEC's reading of the paper's abstract (its full text is not available). With
:math:`p = \mathrm{softmax}(s)`, :math:`T_k` the indices of the ``k`` largest scores of the
row (ties towards the lowest index; no gradient through the choice) and
:math:`P_T = \sum_{j \in T_k} p_j`,

.. math::
    \ell_{\mathrm{group}} = \begin{cases} -\log P_T & y \in T_k \\ -\log p_y & y \notin T_k
    \end{cases},\qquad
    \ell = (1 - \lambda)\,\mathrm{CE} + \lambda\,\ell_{\mathrm{group}},

with :math:`\lambda` a constant, one value per row, or :math:`P_T` itself ("adaptive", no
gradient through it). Computed from :math:`e = \exp(s - \max s)` with the sums
:math:`S_T = \sum_{T_k} e \ge 1` and :math:`S_{\bar T}` over the other classes:
:math:`\mathrm{CE} = \log(S_T + S_{\bar T}) - (s_y - \max s)`,
:math:`-\log P_T = \mathrm{log1p}(S_{\bar T}/S_T)` (no cancellation when :math:`P_T \to 1`).

Gradient (rows sum to 0): :math:`\partial \ell / \partial s = p - q`, where
:math:`q = e_y` if :math:`y \notin T_k`, else
:math:`q = (1-\lambda)\,e_y + \lambda\,[j \in T_k]\, e_j / S_T`. With the adaptive
:math:`\lambda = P_T` and :math:`y \in T_k` that is exactly 0 on :math:`T_k \setminus \{y\}` and
:math:`-S_{\bar T} / (S_T + S_{\bar T})` at ``y``, and it is computed so (no rounding residue).
"""

from __future__ import annotations

from .op import Op
from .ops import eager_host, mask_columns, put_columns, put_labels, scale_rows_where, sum_outside, take_columns, take_rows, top_k, top_k_and_mask, topk_mask

__all__ = ["TOPK_TRANSITION", "WEIGHT_KINDS"]

WEIGHT_KINDS = ("adaptive", "fixed", "array")
"""``static[1]``: λ = the mass of T_k; λ = ``static[2]`` (a float); λ = the extra array argument."""


def _weights(xp, kind, value, args, s_top, s_out, total):
    """(λ, 1 - λ), one value per row."""
    if kind == "adaptive":
        return s_top / total, s_out / total
    lam = xp.zeros_like(total) + value if kind == "fixed" else args[1]
    return lam, 1 - lam


NUMPY_COLUMNS_MIN = 2000
"""Rows at least this long take :func:`_forward_by_columns` on NumPy (eager torch on a CPU takes
it at every n). NumPy's top-k with indices (``argpartition``) costs more than its values-only
``partition`` at small n, and on a host the mask is one compare and one count when no row has
a tie at the k-th value (:func:`~.ops.topk_mask`). ``benchmarks/ab.py`` (5 rounds, this limit
against 1000, the previous one, which the mask's running count set): 0.87 / 0.93 / 1.00x the
time at 256 x 1000 / 1500 / 2000; 5000 measured 1.00 / 1.07x at 256 x 3000 / 4000."""


def by_columns(xp, s):
    """Whether the forward holds T_k as columns (:func:`_forward_by_columns`). Static."""
    if not eager_host(xp, s):
        return False
    return getattr(xp, "__name__", "") == "array_api_compat.torch" or s.shape[-1] >= NUMPY_COLUMNS_MIN


def _forward(xp, s, *args, static):
    if by_columns(xp, s):
        return _forward_by_columns(xp, s, *args, static=static)
    k, kind, value = static
    labels = args[0]
    values, top = top_k_and_mask(xp, s, k)  # the scores of T_k (in any order), T_k
    m = xp.max(values, axis=-1, keepdims=True)  # the row maximum (a slice would make XLA sort)
    e = xp.exp(s - m)
    e_top = xp.exp(values - m)
    s_top = xp.sum(e_top, axis=-1)
    s_out = sum_outside(xp, e, top)  # a sum of positive terms: no 1 - P_T cancellation
    s_y = take_rows(xp, s, labels)
    d_y = s_y - m[:, 0]
    e_y = xp.exp(d_y)
    inside = take_rows(xp, top, labels)
    # S_T less one entry of T equal to s_y, from (batch, k) arrays: the entries unequal to s_y
    # and all but one of the equal ones (each is e_y: the exp of the same difference)
    match = values == s_y[:, None]
    n_match = xp.sum(xp.astype(match, s.dtype), axis=-1)
    top_not_y = xp.sum(xp.where(match, 0.0, e_top), axis=-1) + (n_match - 1) * e_y  # read where y is in T
    loss, others = _loss(xp, kind, value, args, d_y, s_top, s_out, inside, top_not_y, e_y)
    return loss, (e, top, s_top, s_out, inside, others, e_y)


def _loss(xp, kind, value, args, d_y, s_top, s_out, inside, top_not_y, e_y):
    """Per-sample loss and ``others`` (the mass of the classes other than y, for the backward)
    from the sums of a row: ``d_y = s_y - max s``; ``top_not_y`` is S_T less y's entry when y is
    in T_k. The mass of the other classes without cancellation: y in T: S_out + top_not_y;
    y not in T: S_T + (S_out - e_y), where e_y <= every e of T, so the difference's rounding is
    at most a few of the result's."""
    others = xp.where(inside, s_out + top_not_y, s_top + (s_out - e_y))
    total = s_top + s_out
    ce = xp.log(total) - d_y
    lam, rest = _weights(xp, kind, value, args, s_top, s_out, total)
    # y outside T_k: the loss is CE itself (no rounding of (1 - λ) + λ). Inside, a weight of
    # exactly 0 drops CE: for scores a float maximum apart CE overflows to inf, and 0 * inf is NaN
    weighted_ce = rest * xp.where(rest == 0, xp.zeros_like(ce), ce)
    return xp.where(inside, weighted_ce + lam * xp.log1p(s_out / s_top), ce), others


def _forward_by_columns(xp, s, *args, static):
    """The forward of :func:`_forward` with T_k as k columns instead of a ``(batch, n)`` mask:
    NumPy and eager torch on a CPU (:func:`~.ops.eager_host`), where the mask's compares, running
    count and ``where`` passes cost more than the rest of the loss at n >= 1000.

    One top-k of ``k + 1`` (``k < n``) gives T_k's columns unless an entry outside them equals
    the k-th value (a tie across the boundary, which the top-k may break either way): then, and
    only then, the tie rule's mask and its columns (:func:`~.ops.mask_columns`). The branch
    reads a value: only concrete host arrays come here. Same residuals as the mask form, except
    that ``e`` is zero on T_k, and T_k's columns and entries of ``e`` stand for the mask."""
    k, kind, value = static
    labels = args[0]
    values, cols = top_k(xp, s, k + 1)  # k < n
    if bool(xp.any(values[:, k] == values[:, k - 1])):
        cols = mask_columns(xp, topk_mask(xp, s, k, values=values[:, :k]), k)
    else:
        cols = cols[:, :k]
    m = values[:, :1]  # the row maximum: top_k sorts
    e = xp.exp(s - m)
    e_top = take_columns(xp, e, cols)
    s_top = xp.sum(e_top, axis=-1)
    e = put_columns(xp, e, xp.zeros_like(e_top), cols)  # e outside T_k (e is this function's own)
    s_out = xp.sum(e, axis=-1)  # a sum of positive terms: no 1 - P_T cancellation
    d_y = take_rows(xp, s, labels) - m[:, 0]
    e_y = xp.exp(d_y)
    is_y = cols == labels[:, None]
    inside = xp.any(is_y, axis=-1)
    top_not_y = xp.sum(xp.where(is_y, 0.0, e_top), axis=-1)  # S_T less y's entry
    loss, others = _loss(xp, kind, value, args, d_y, s_top, s_out, inside, top_not_y, e_y)
    return loss, (e, cols, e_top, s_top, s_out, inside, others, e_y)


def _backward(xp, s, args, residuals, g, *, static):
    k, kind, value = static
    if len(residuals) == 8:  # T_k as columns (_forward_by_columns)
        e, cols, e_top, s_top, s_out, inside, others, e_y = residuals
    else:
        e, top, s_top, s_out, inside, others, e_y = residuals
    total = s_top + s_out
    # d loss / d s = e * (1/total - [j in T] λ'/S_T) - [j = y] (1 - λ'), with λ' = λ on rows
    # whose label is in T_k and 0 elsewhere. On T: b = 1/total - λ'/S_T, written without the
    # cancellation of two near-equal terms when P_T -> 1.
    a = g / total
    if kind == "adaptive":
        # λ' = S_T / total: b = 0 exactly on rows with y in T (and a elsewhere), and the
        # label's entry -g S_out / total there (p_y - (1 - λ) - λ e_y / S_T); -g others / total
        # elsewhere. Five operations on (batch,) arrays where the general form takes seventeen
        b = xp.where(inside, 0.0, a)
        at_y = -a * xp.where(inside, s_out, others)
    else:
        lam, rest = _weights(xp, kind, value, args, s_top, s_out, total)
        lam_in = xp.where(inside, lam, 0.0)
        rest_in = xp.where(inside, rest, 1.0)
        b = g * (rest_in * s_top - lam_in * s_out) / (total * s_top)
        # the label's entry e_y b - g (1 - λ') cancels when p_y -> 1; as one sum of positive
        # terms: -g [(1 - λ')(total - e_y) + λ' e_y S_out / S_T] / total, over the row's entry
        at_y = -g * (rest_in * others + lam_in * e_y * s_out / s_top) / total
    if len(residuals) == 8:  # e is zero on T: T's entries written over e * a
        grad = put_columns(xp, e * a[:, None], e_top * b[:, None], cols)
    else:
        grad = scale_rows_where(xp, e, top, b, a)
    return put_labels(xp, grad, at_y, args[0])


TOPK_TRANSITION = Op("topk_transition", _forward, _backward)

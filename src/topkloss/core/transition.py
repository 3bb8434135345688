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
:math:`q = (1-\lambda)\,e_y + \lambda\,[j \in T_k]\, e_j / S_T`.
"""

from __future__ import annotations

from .op import Op
from .ops import put_labels, take_rows, top_k_and_mask

__all__ = ["TOPK_TRANSITION", "WEIGHT_KINDS"]

WEIGHT_KINDS = ("adaptive", "fixed", "array")
"""``static[1]``: λ = the mass of T_k; λ = ``static[2]`` (a float); λ = the extra array argument."""


def _weights(xp, kind, value, args, s_top, s_out, total):
    """(λ, 1 - λ), one value per row."""
    if kind == "adaptive":
        return s_top / total, s_out / total
    lam = xp.zeros_like(total) + value if kind == "fixed" else args[1]
    return lam, 1 - lam


def _forward(xp, s, *args, static):
    k, kind, value = static
    labels = args[0]
    values, top = top_k_and_mask(xp, s, k)  # the scores of T_k (in any order), T_k
    m = xp.max(values, axis=-1, keepdims=True)  # the row maximum (a slice would make XLA sort)
    e = xp.exp(s - m)
    e_top = xp.exp(values - m)
    s_top = xp.sum(e_top, axis=-1)
    s_out = xp.sum(xp.where(top, 0.0, e), axis=-1)  # a sum of positive terms: no 1 - P_T cancellation
    s_y = take_rows(xp, s, labels)
    e_y = xp.exp(s_y - m[:, 0])
    inside = take_rows(xp, top, labels)
    # the mass of the classes other than y, from (batch, k) arrays and without cancellation:
    # y in T: S_out + S_T less one entry of T equal to s_y; y not in T: S_T + (S_out - e_y),
    # where e_y <= every e of T: the difference's rounding is at most a few of the result's
    match = xp.astype(values == s_y[:, None], xp.int32)
    first = (match == 1) & (xp.cumulative_sum(match, axis=-1) == 1)
    top_not_y = xp.sum(xp.where(first, 0.0, e_top), axis=-1)
    others = xp.where(inside, s_out + top_not_y, s_top + (s_out - e_y))
    total = s_top + s_out
    ce = xp.log(total) - (s_y - m[:, 0])
    grouped = xp.where(inside, xp.log1p(s_out / s_top), ce)
    lam, rest = _weights(xp, kind, value, args, s_top, s_out, total)
    return rest * ce + lam * grouped, (e, top, s_top, s_out, inside, others, e_y)


def _backward(xp, s, args, residuals, g, *, static):
    k, kind, value = static
    e, top, s_top, s_out, inside, others, e_y = residuals
    total = s_top + s_out
    lam, rest = _weights(xp, kind, value, args, s_top, s_out, total)
    # d loss / d s = e * (1/total - [j in T] λ'/S_T) - [j = y] (1 - λ'), with λ' = λ on rows
    # whose label is in T_k and 0 elsewhere. On T: 1/total - λ'/S_T, written without the
    # cancellation of two near-equal terms when P_T -> 1 (exactly 0 for the adaptive λ).
    lam_in = xp.where(inside, lam, 0.0)
    rest_in = xp.where(inside, rest, 1.0)
    a = g / total
    b = g * (rest_in * s_top - lam_in * s_out) / (total * s_top)
    # the label's entry e_y b - g (1 - λ') cancels when p_y -> 1; as one sum of positive terms:
    # -g [(1 - λ')(total - e_y) + λ' e_y S_out / S_T] / total, written over the row's entry
    at_y = -g * (rest_in * others + lam_in * e_y * s_out / s_top) / total
    return put_labels(xp, e * xp.where(top, b[:, None], a[:, None]), at_y, args[0])


TOPK_TRANSITION = Op("topk_transition", _forward, _backward)

r"""Top-K calibrated hinge (Yang & Koyejo 2020) and its noised smoothing (Garcin et al., ICML 2022).

With :math:`s_{[j]}` the j-th largest entry of the FULL row (label included), :math:`m_y`
the margin of the label's class and ``scale`` a positive factor,

.. math::
    \ell_k(s, y) = \mathrm{scale}\cdot\max\big(0,\ m_y + s_{[k+1]} - s_y\big).

The noised loss replaces :math:`s_{[k+1]}` by the mean over ``S`` draws of the
(k+1)-th largest entry of :math:`s + \varepsilon Z_b`, :math:`Z_b \sim N(0, I_n)` given
as ``noise`` of shape ``(batch, S, n)``. It is computed from :math:`d = s - s_y` (the label's
entry is exactly 0), so a common offset of the row costs no precision in float32:

.. math::
    \ell_{k,\varepsilon}(s, y) = \mathrm{scale}\cdot\max\Big(0,\ m_y
        + \frac1S\sum_b (d + \varepsilon Z_b)_{[k+1]}\Big).

Subgradient where the hinge is active (:math:`m_y + \dots > 0`, else 0):
:math:`\mathrm{scale}\,(w - e_y)` with :math:`w = \frac1S \sum_b w_b`, where :math:`w_b`
is the one-hot of the class at the (k+1)-th largest entry of draw ``b``. When several
classes tie at that value (probability 0 with noise), they share the unit weight
equally: a point of the Clarke subdifferential that does not depend on how a backend
orders ties, so native selection (``torch.topk``, ``partition``) and the standard sort
give identical results. A row whose label is itself the (k+1)-th largest has
:math:`w = e_y`: loss :math:`m_y\cdot\mathrm{scale}` and gradient 0. Rows of the gradient
sum to 0. The hard loss is the noised one with :math:`\varepsilon = 0` and ``S = 1``.

``static`` holds ``(k, margin, scale)`` (hard) or ``(k, epsilon, margin, scale)``
(noised); ``margin`` is ``None`` when a per-class margin array follows the labels (and
the noise) in ``args``.
"""

from __future__ import annotations

import math

from .op import Op
from .ops import kth_largest, nan_rows, onehot, per_label, pick, relu_and_gate

__all__ = ["TOPK_HINGE", "NOISED_TOPK_HINGE"]


def _selected(xp, p, j):
    """The j-th largest entry of ``p`` along the last axis (shape ``p.shape[:-1]``), the 0/1
    indicator of the entries equal to it (shape of ``p``) and 1 / their number (``(..., 1)``):
    tied classes share the unit weight."""
    v = xp.reshape(kth_largest(xp, xp.reshape(p, (-1, p.shape[-1])), j), (*p.shape[:-1], 1))
    hit = xp.astype(p == v, p.dtype)
    count = xp.sum(hit, axis=-1, keepdims=True)  # >= 1: v is an entry of p (unless NaN)
    return v[..., 0], hit, 1 / xp.maximum(count, xp.ones_like(count))  # ones_like: keeps device / sharding


def _hinge(xp, s, gap, w, mask, labels, margins, margin, scale):
    """Per-sample loss ``scale * max(0, m_y + gap)`` and the residual ``d loss / d s``; a row of
    ``s`` with a NaN has loss NaN and a gradient row of NaN (:func:`nan_rows`)."""
    m = margin if margin is not None else per_label(xp, margins[0], labels, mask)
    hinge, gate = relu_and_gate(xp, nan_rows(xp, s, m + gap))
    d = (scale * gate)[:, None] * xp.where(mask, w - 1, w)
    return scale * hinge, (d,)


def _hard_forward(xp, s, labels, *margins, static):
    k, margin, scale = static
    mask = onehot(xp, labels, s.shape[-1], s)
    v, hit, share = _selected(xp, s, k + 1)
    return _hinge(xp, s, v - pick(xp, s, mask), hit * share, mask, labels, margins, margin, scale)


def _noised_forward(xp, s, labels, noise, *margins, static):
    k, epsilon, margin, scale = static
    mask = onehot(xp, labels, s.shape[-1], s)
    # the scores relative to the label's. An infinite s_y would make s_y - s_y NaN at the label:
    # NumPy warns, and its selection ranks the NaN last (loss NaN). So s_y is taken as half the
    # float range's end there (half: the mean of the draws' values stays finite), and the loss
    # set to +inf at s_y = -inf, as cross-entropy's (at +inf it is 0 from the floor). Not under
    # XLA: its top_k ranks the NaN first, which gives those limits as they are, and a second use
    # of s_y cost a fifth of the loss at 64 x 100000 (benchmarks/ab.py)
    s_y = raw = pick(xp, s, mask)
    xla = getattr(xp, "__name__", "") == "jax.numpy"
    if not xla:
        info = xp.finfo(s.dtype)
        lowest, highest = float(info.min), float(info.max)
        s_y = xp.where(raw < lowest, lowest / 2, xp.where(raw > highest, highest / 2, raw))
    d = s - s_y[:, None]
    p = d[:, None, :] + (noise if epsilon == 1.0 else epsilon * noise)
    v, hit, share = _selected(xp, p, k + 1)
    w = xp.sum(hit * (share / noise.shape[1]), axis=-2)
    # the mean as a sum of v / S: summing first overflows when |v| is near the float max
    gap = xp.sum(v / noise.shape[1], axis=-1)
    if not xla:
        gap = xp.where(raw < lowest, math.inf, gap)
    return _hinge(xp, s, gap, w, mask, labels, margins, margin, scale)


def _backward(xp, s, args, residuals, g, *, static):
    (d,) = residuals
    return g[:, None] * d


TOPK_HINGE = Op("topk_hinge", _hard_forward, _backward)
NOISED_TOPK_HINGE = Op("noised_topk_hinge", _noised_forward, _backward)

"""float64 NumPy references for the top-K calibrated hinge, its noised form and LDAM margins.

Written from the definitions, one row and one draw at a time, without the library's
tricks (no shift by the label's score, no shared selection code).
"""

from __future__ import annotations

import numpy as np


def _kth_and_share(row, j):
    """The j-th largest entry of ``row`` and the tie-shared one-hot of the classes holding it."""
    value = np.sort(row)[::-1][j - 1]
    hit = row == value
    return value, hit / hit.sum()


def noised_topk_hinge(s, y, k, noise, epsilon, margin=1.0, scale=1.0):
    """Per-sample loss and subgradient (of each row's own loss); ``noise`` (batch, S, n)."""
    s = np.asarray(s, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    batch, n = s.shape
    margins = np.broadcast_to(np.asarray(margin, dtype=np.float64), (n,))
    loss, grad = np.zeros(batch), np.zeros((batch, n))
    for b in range(batch):
        lab = int(y[b])
        draws = [_kth_and_share(s[b] + epsilon * z, k + 1) for z in noise[b]]
        v = np.mean([d[0] for d in draws])
        arg = margins[lab] + v - s[b, lab]
        if arg > 0:
            loss[b] = scale * arg
            grad[b] = scale * np.mean([d[1] for d in draws], axis=0)
            grad[b, lab] -= scale
    return loss, grad


def topk_hinge(s, y, k, margin=1.0, scale=1.0):
    """Per-sample loss and subgradient of ``scale * max(0, m_y + s_[k+1] - s_y)``."""
    s = np.asarray(s, dtype=np.float64)
    return noised_topk_hinge(s, y, k, np.zeros((s.shape[0], 1, s.shape[1])), 0.0, margin, scale)


def smoothed_topk_hinge(s, y, k, epsilon, margin=1.0, n_draws=400_000, seed=12345):
    """Large-sample estimates, per row, of the hinge argument m_y + E[(s + eps Z)_[k+1]] - s_y
    (before the relu), of the standard deviation of one draw of (s + eps Z)_[k+1], and of the
    probability w (batch, n) that each class holds the (k+1)-th place (the mean subgradient
    of the order statistic)."""
    rng = np.random.default_rng(seed)
    s = np.asarray(s, dtype=np.float64)
    batch, n = s.shape
    margins = np.broadcast_to(np.asarray(margin, dtype=np.float64), (n,))
    arg, sd, w = np.zeros(batch), np.zeros(batch), np.zeros((batch, n))
    for b in range(batch):
        p = s[b] + epsilon * rng.standard_normal((n_draws, n))
        order = np.argsort(-p, axis=1)[:, k]
        kth = p[np.arange(n_draws), order]
        arg[b] = margins[int(y[b])] + kth.mean() - s[b, int(y[b])]
        sd[b] = kth.std(ddof=1)
        w[b] = np.bincount(order, minlength=n) / n_draws
    return arg, sd, w


def ldam_margins(counts, max_margin=0.2, power=0.25):
    counts = np.asarray(counts, dtype=np.float64)
    raw = counts ** (-power)
    return max_margin * raw / raw.max()

"""float64 NumPy references for the top-k transition loss and top-k accuracy, row by row from
the definitions (SPEC section 3 and "Baselines and helpers")."""

from __future__ import annotations

import math

import numpy as np


def top_set(row, k):
    """The k largest entries of ``row``; among equal scores the lowest indices first."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]


def softmax(row):
    row = np.asarray(row, dtype=np.float64)
    e = np.exp(row - row.max())
    return e / e.sum()


def _row_weight(weight, b, p, top):
    if isinstance(weight, str):
        return p[top].sum()  # "adaptive": the softmax mass of T_k
    w = np.asarray(weight, dtype=np.float64)
    return float(w) if w.ndim == 0 else float(w[b])


def topk_transition(s, y, k, weight, at=None):
    """Per-sample losses. ``at``: scores that fix T_k and the adaptive λ (default ``s``), so
    finite differences of this function see no gradient through the choice or through λ."""
    s = np.asarray(s, dtype=np.float64)
    at = s if at is None else np.asarray(at, dtype=np.float64)
    out = np.empty(s.shape[0])
    for b in range(s.shape[0]):
        label = int(y[b])
        top = top_set(at[b], k)
        lam = _row_weight(weight, b, softmax(at[b]), top)
        m = s[b].max()
        log_all = m + math.log(np.exp(s[b] - m).sum())
        ce = log_all - s[b, label]
        if label in top:
            grouped = log_all - (m + math.log(np.exp(s[b, top] - m).sum()))
        else:
            grouped = ce
        out[b] = (1 - lam) * ce + lam * grouped
    return out


def topk_transition_grad(s, y, k, weight):
    """Per-row gradients of the per-sample losses, element by element."""
    s = np.asarray(s, dtype=np.float64)
    g = np.zeros_like(s)
    for b in range(s.shape[0]):
        label = int(y[b])
        p = softmax(s[b])
        top = top_set(s[b], k)
        lam = _row_weight(weight, b, p, top)
        mass = p[top].sum()
        for i in range(s.shape[1]):
            d_ce = p[i] - (i == label)
            if label in top:
                d_group = p[i] - (p[i] / mass if i in top else 0.0)
            else:
                d_group = d_ce
            g[b, i] = (1 - lam) * d_ce + lam * d_group
    return g


def cross_entropy(s, y):
    s = np.asarray(s, dtype=np.float64)
    return np.array([-math.log(softmax(row)[int(label)]) for row, label in zip(s, y)])


def topk_hits(s, y, k):
    """Ties and NaN count against the label: fewer than k other classes may score >= it."""
    s = np.asarray(s, dtype=np.float64)
    hits = []
    for row, label in zip(s, y):
        sy = row[int(label)]
        others = [row[j] for j in range(len(row)) if j != int(label)]
        beaten_by = sum(1 for v in others if not v < sy)
        hits.append(not math.isnan(sy) and beaten_by < k)
    return np.array(hits)


def topk_accuracy(s, y, k, average="micro"):
    hits = topk_hits(s, y, k)
    if average == "micro":
        return hits.mean()
    y = np.asarray(y)
    return np.mean([hits[y == c].mean() for c in np.unique(y)])

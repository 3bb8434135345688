"""float64 NumPy references by brute-force enumeration over subsets (small n only)."""

from __future__ import annotations

import itertools
import math

import numpy as np


def _lse(v):
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0 or np.all(v == -np.inf):
        return -np.inf
    m = v.max()
    return m + math.log(np.exp(v - m).sum())


def log_esf(x, k):
    """log e_0..e_k of exp(x) (last axis) by enumerating every subset."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(x.shape[:-1] + (k + 1,))
    m = x.shape[-1]
    for idx in np.ndindex(*x.shape[:-1]):
        row = x[idx]
        for j in range(k + 1):
            out[idx + (j,)] = _lse([row[list(c)].sum() for c in itertools.combinations(range(m), j)]) if j <= m else -np.inf
    return out


def smooth_topk_svm(s, y, k, tau, alpha):
    """Per-sample loss from the definition over k-subsets A of the classes."""
    s = np.asarray(s, dtype=np.float64)
    out = np.empty(s.shape[0])
    for b in range(s.shape[0]):
        row, lab = s[b], int(y[b])
        subsets = list(itertools.combinations(range(s.shape[1]), k))
        first = [(alpha * (lab not in A) + row[list(A)].sum() / k) / tau for A in subsets]
        second = [row[list(A)].sum() / k / tau for A in subsets if lab in A]
        out[b] = tau * (_lse(first) - _lse(second))
    return out


def topk_svm(s, y, k, alpha):
    s = np.asarray(s, dtype=np.float64)
    out = np.empty(s.shape[0])
    for b in range(s.shape[0]):
        others = np.delete(s[b], int(y[b]))
        kth = np.sort(others)[::-1][k - 1]
        out[b] = max(0.0, alpha + (kth - s[b, int(y[b])]) / k)
    return out


def numerical_grad(f, s, eps=1e-6):
    """Central finite differences of a scalar function of a float64 array."""
    s = np.array(s, dtype=np.float64)
    g = np.zeros_like(s)
    for idx in np.ndindex(*s.shape):
        sp, sm = s.copy(), s.copy()
        sp[idx] += eps
        sm[idx] -= eps
        g[idx] = (f(sp) - f(sm)) / (2 * eps)
    return g

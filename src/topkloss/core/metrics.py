r"""Top-k accuracy, micro and macro (per class) averaged.

A label counts as a top-k hit when fewer than ``k`` *other* classes score at least as
high as the label: :math:`\#\{j \ne y : \lnot(s_j < s_y)\} < k` (and :math:`s_y` is not NaN).
Ties and NaN scores count against the label, so equal scores never earn a hit (constant
scores give 0, not 1, for ``k < n``) and the result does not depend on the order of the
classes. No sort: one comparison with the label's score per entry.
"""

from __future__ import annotations

from .ops import onehot, take_rows

__all__ = ["topk_hits", "micro_accuracy", "macro_accuracy"]


def topk_hits(xp, s, labels, k):
    """Boolean ``(batch,)``: the label is among the ``k`` largest scores of its row."""
    s_y = take_rows(xp, s, labels)
    # counts the label itself too (s_y < s_y is false), or every class if s_y is NaN
    not_below = xp.sum(xp.astype(xp.logical_not(s < s_y[:, None]), xp.int32), axis=-1)
    return (not_below <= k) & (s_y == s_y)


def micro_accuracy(xp, hits, dtype):
    """The fraction of hits."""
    return xp.mean(xp.astype(hits, dtype))


def macro_accuracy(xp, hits, labels, n, like):
    """The mean over the classes present in ``labels`` of each class's fraction of hits.

    Per-class counts are sums of one-hot rows (no data-dependent shapes, so it jits).
    """
    members = xp.astype(onehot(xp, labels, n, like), like.dtype)
    counts = xp.sum(members, axis=0)
    class_hits = xp.sum(members * xp.astype(hits, like.dtype)[:, None], axis=0)
    present = counts > 0
    per_class = class_hits / xp.where(present, counts, xp.ones_like(counts))
    return xp.sum(per_class) / xp.sum(xp.astype(present, like.dtype))

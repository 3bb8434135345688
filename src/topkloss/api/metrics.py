"""Top-k accuracy (micro and macro averaged)."""

from __future__ import annotations

from ..core import validate as v
from ..core.metrics import macro_accuracy, micro_accuracy, topk_hits
from ._common import prepare_scores_labels

AVERAGES = ("micro", "macro")


def topk_accuracy(scores, labels, *, k=5, average="micro"):
    r"""Top-k accuracy: how often the label is among the ``k`` largest scores.

    .. math::
        \mathrm{hit}(s, y) = \big[\#\{j \ne y : s_j \ge s_y\} < k\big], \qquad
        \mathrm{micro} = \frac1B \sum_b \mathrm{hit}(s_b, y_b), \qquad
        \mathrm{macro} = \frac{1}{|C|} \sum_{c \in C}
            \frac{\sum_{b : y_b = c} \mathrm{hit}(s_b, y_b)}{\#\{b : y_b = c\}}

    where :math:`C` is the set of classes present in ``labels``. Macro-averaged top-k
    accuracy weighs every class alike, the headline metric of long-tailed benchmarks such
    as Pl@ntNet-300K.

    Ties count against the label: it is a hit only if fewer than ``k`` other classes score
    at least as high (a NaN score, the label's own included, also counts against it). So
    equal scores never earn a hit — constant scores give 0, not 1, for ``k < n`` — and the
    result does not depend on the order of the classes. On data without ties this equals
    :func:`sklearn.metrics.top_k_accuracy_score` (which, on ties, favours higher class
    indices). A metric: it has no gradient and no sort, and runs under ``jax.jit``,
    ``jax.vmap`` and ``torch.compile``.

    Parameters
    ----------
    scores : array, shape (batch, n)
        Scores (logits or probabilities), any real floating dtype; ``batch >= 1``.
    labels : array of int, shape (batch,)
        Class indices in ``[0, n)``, same array library and device as ``scores``.
    k : int, default 5
        ``1 <= k <= n`` (``k = n`` counts every row with a non-NaN label score).
    average : {"micro", "macro"}, default "micro"
        ``"micro"``: fraction of rows that are hits. ``"macro"``: mean over the classes
        present in ``labels`` of their per-class top-k accuracy.

    Returns
    -------
    array, shape ()
        A 0-d array of the array type and device of ``scores``, in its dtype (half
        precision is counted in float32 and then rounded to the input dtype).

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    >>> labels = np.array([0, 0, 0, 1])
    >>> topkloss.topk_accuracy(scores, labels, k=2)
    array(0.5)
    >>> float(topkloss.topk_accuracy(scores, labels, k=2, average="macro"))  # (1/3 + 1) / 2
    0.666...
    >>> float(topkloss.topk_accuracy(scores, labels, k=1))  # the last row ties: not a hit
    0.25
    """
    xp, s, y = prepare_scores_labels(scores, labels, "mean")
    batch, n = s.shape
    k = v.check_int(k, "k", 1, n, hint=f" for n_classes = {n}")
    average = v.check_choice(average, "average", AVERAGES)
    if batch == 0:
        raise ValueError("scores must have at least one row to compute an accuracy; got shape (0, n)")
    hits = topk_hits(xp, s, y, k)
    out = micro_accuracy(xp, hits, s.dtype) if average == "micro" else macro_accuracy(xp, hits, y, n, s)
    out = out if out.dtype == scores.dtype else xp.astype(out, scores.dtype)
    return xp.asarray(out)  # NumPy reductions give a scalar: a 0-d array, as documented

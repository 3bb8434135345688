"""Top-k transition loss (after Sawada, Kaneko, Sagi 2020; SPEC's reading of the abstract)."""

from __future__ import annotations

import numbers

from .._config import value_checks_enabled
from ..adapters import device, is_concrete, namespace
from ..core import validate as v
from ..core.transition import TOPK_TRANSITION
from ._common import Call, differentiable, prepare_scores_labels, run


def _prepare_weight(xp, weight, s, scores):
    """``(kind, value, extra args)`` of the core op for a ``weight`` argument."""
    if isinstance(weight, str):
        v.check_choice(weight, "weight", ("adaptive",))
        return "adaptive", 0.0, ()
    if isinstance(weight, numbers.Number) or not hasattr(weight, "shape"):  # Python/NumPy/symbolic scalars
        return "fixed", v.check_fraction(weight, "weight"), ()
    v.namespace(namespace, scores=scores, weight=weight)
    v.check_device("scores", device(scores), weight=device(weight))
    checks = value_checks_enabled() and is_concrete(weight)
    w = v.check_per_sample(xp, weight, "weight", s, check_values=checks, interval=(0, 1))
    return "array", 0.0, (xp.broadcast_to(xp.astype(w, s.dtype), (s.shape[0],)),)


def _prepare(scores, labels, *, k=5, weight="adaptive", reduction="mean"):
    xp, s, y = prepare_scores_labels(scores, labels, reduction)
    k = v.check_k(k, s.shape[1])
    kind, value, extra = _prepare_weight(xp, weight, s, scores)
    return Call(xp, TOPK_TRANSITION, s, (y, *extra), (k, kind, value), scores.dtype, reduction)


@differentiable(_prepare)
def topk_transition(scores, labels, *, k=5, weight="adaptive", reduction="mean"):
    r"""Top-k transition loss: cross-entropy moving towards a loss that groups the top k classes.

    **Source.** After Sawada, Kaneko and Sagi (2020, arXiv:2007.15359). The paper's full text
    is not available to this project: this is SPEC's reading of its abstract ("cross-entropy
    modified by grouping the temporal top-k classes as a single class, with an adaptive
    transition from normal CE to the grouped loss"), not a reproduction of the paper.

    With :math:`p = \mathrm{softmax}(s)` and :math:`T_k` the indices of the ``k`` largest
    scores of the row (recomputed at every call; no gradient flows through the choice),

    .. math::
        \ell_{\mathrm{group}}(s, y) = \begin{cases}
            -\log \sum_{j \in T_k} p_j & \text{if } y \in T_k \\
            -\log p_y & \text{otherwise}\end{cases}
        \qquad
        \ell(s, y) = (1 - \lambda)\,(-\log p_y) + \lambda\,\ell_{\mathrm{group}}(s, y)

    so a label already among the top k is no longer pushed above the other top-k classes.
    ``weight="adaptive"`` sets :math:`\lambda = \sum_{j \in T_k} p_j` (treated as a constant):
    near ``k/n`` at initialisation, so training starts as cross-entropy, and near 1 once the
    model is confident. With ``k = 1`` the loss is cross-entropy for every weight.

    Ties: when several classes share the k-th largest score, :math:`T_k` takes the lowest
    class indices first, on every backend. The gradient is hand-derived:
    :math:`\partial\ell/\partial s = p - q` with :math:`q = e_y` if :math:`y \notin T_k` and
    :math:`q = (1-\lambda)\,e_y + \lambda\,[j \in T_k]\,p_j / \sum_{T_k} p` otherwise; each
    row sums to 0. Log-sum-exp is taken after subtracting the row maximum, so logits of
    magnitude 1e4 are exact in float32.

    Parameters
    ----------
    scores : array, shape (batch, n)
        Scores (logits), any real floating dtype. float16/bfloat16 are computed in float32
        and the result is returned in the input dtype.
    labels : array of int, shape (batch,)
        Class indices in ``[0, n)``, same array library and device as ``scores``.
    k : int, default 5
        Size of the group, ``1 <= k <= n - 1`` (with ``k = n`` every label would be in the
        group and the grouped loss would be 0).
    weight : "adaptive", float or array, default "adaptive"
        :math:`\lambda`: ``"adaptive"`` (the softmax mass of :math:`T_k`), a number in
        ``[0, 1]``, or an array of shape ``(batch,)`` (one value per row) or ``()`` with
        values in ``[0, 1]``, of the array type of ``scores``. No gradient flows through
        :math:`\lambda`. Under ``jax.jit`` or ``torch.compile`` pass a schedule as a 0-d
        array: a Python number is a static parameter and each new value recompiles.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"`` returns the per-sample losses, shape ``(batch,)``. The mean of an empty
        batch is 0.

    Returns
    -------
    array
        The loss, in the array type, device and dtype of ``scores``. Differentiable with
        ``loss.backward()`` / ``torch.func`` / ``torch.compile`` for torch tensors and
        ``jax.grad`` (also under ``jit`` and ``vmap``) for JAX arrays; use
        :func:`value_and_grad` for NumPy, CuPy and array-api-strict.

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> scores = np.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    >>> labels = np.array([1, 3])  # label inside / outside the top 2
    >>> topkloss.topk_transition(scores, labels, k=2, weight=1.0, reduction="none").round(4)
    array([0.1269, 3.4402])
    >>> ce = topkloss.topk_transition(scores, labels, k=2, weight=0.0, reduction="none")
    >>> bool(np.allclose(ce, topkloss.topk_transition(scores, labels, k=1, reduction="none")))
    True
    """
    return run(_prepare(scores, labels, k=k, weight=weight, reduction=reduction))

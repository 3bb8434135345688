"""Smooth and hard top-k SVM (Berrada, Zisserman, Kumar, ICLR 2018)."""

from __future__ import annotations

from ..core import validate as v
from ..core.smooth_svm import SMOOTH_TOPK_SVM, TOPK_SVM
from ._common import Call, differentiable, prepare_scores_labels, run


def _prepare_smooth(scores, labels, *, k=5, tau=1.0, alpha=1.0, reduction="mean"):
    xp, s, y = prepare_scores_labels(scores, labels, reduction)
    k = v.check_k(k, s.shape[1])
    tau = v.check_real(tau, "tau", positive=True)
    alpha = v.check_real(alpha, "alpha")
    return Call(xp, SMOOTH_TOPK_SVM, s, (y,), (k, tau, alpha), scores.dtype, reduction)


def _prepare_hard(scores, labels, *, k=5, alpha=1.0, reduction="mean"):
    xp, s, y = prepare_scores_labels(scores, labels, reduction)
    k = v.check_k(k, s.shape[1])
    alpha = v.check_real(alpha, "alpha")
    return Call(xp, TOPK_SVM, s, (y,), (k, alpha), scores.dtype, reduction)


@differentiable(_prepare_smooth)
def smooth_topk_svm(scores, labels, *, k=5, tau=1.0, alpha=1.0, reduction="mean"):
    r"""Smooth top-k SVM loss (Berrada et al., ICLR 2018), exact on every row.

    .. math::
        L_{k,\tau}(s, y) = \tau \log \sum_{|A|=k} \exp\Big(\frac{\alpha[y\notin A]
        + \frac1k\sum_{j\in A} s_j}{\tau}\Big)
        - \tau \log \sum_{|A|=k,\ y\in A} \exp\Big(\frac{\frac1k\sum_{j\in A} s_j}{\tau}\Big)

    which, with :math:`x = \exp(s_{\setminus y}/(k\tau))` and :math:`e_j` the elementary
    symmetric polynomials, equals
    :math:`\tau \log\big(1 + e^{\alpha/\tau}\, e_k(x) / (e^{s_y/(k\tau)} e_{k-1}(x))\big)`.
    It is computed by a divide-and-conquer product of the polynomials
    :math:`\prod_i (1 + x_i t)` with the top :math:`k - 1` classes factored out exactly (so
    nothing cancels, even in float32 with score spreads of 1e4), in linear space where a
    static bound on the shapes proves it exact and in log space otherwise (see
    :func:`log_esf` and the Algorithms page). The gradient is exact:
    :math:`\partial L/\partial s_i = \frac{p}{k}(\pi_k(i) - \pi_{k-1}(i))`
    (:math:`i \ne y`), :math:`\partial L/\partial s_y = -p/k`, where :math:`p` is the sigmoid
    of the log of the ratio above and :math:`\pi_j(i) = x_i e_{j-1}(x_{\setminus i})/e_j(x)`.
    Unlike the reference implementation there is no switch to the hard loss and no
    approximation in the gradient. With ``k=1, alpha=0, tau=1`` it is cross-entropy.

    Parameters
    ----------
    scores : array, shape (batch, n)
        Scores (logits), any real floating dtype. float16/bfloat16 are computed in float32
        and the result is returned in the input dtype.
    labels : array of int, shape (batch,)
        Class indices in ``[0, n)``, same array library and device as ``scores``.
    k : int, default 5
        The top-k the loss targets, ``1 <= k <= n - 1``.
    tau : float, default 1.0
        Temperature, ``> 0``. As ``tau -> 0`` the loss tends to :func:`topk_svm`.
    alpha : float, default 1.0
        Margin.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"`` returns the per-sample losses, shape ``(batch,)``. The mean of an empty
        batch is 0.

    Returns
    -------
    array
        The loss, in the array type, device and dtype of ``scores``. Differentiable with
        ``loss.backward()`` / ``torch.func`` for torch tensors and ``jax.grad`` (also
        under ``jit`` and ``vmap``) for JAX arrays; use :func:`value_and_grad` for NumPy,
        CuPy and array-api-strict.

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    >>> labels = np.array([0, 0])
    >>> topkloss.smooth_topk_svm(scores, labels, k=2, reduction="none").round(4)
    array([0.6931, 2.1269])
    """
    return run(_prepare_smooth(scores, labels, k=k, tau=tau, alpha=alpha, reduction=reduction))


@differentiable(_prepare_hard)
def topk_svm(scores, labels, *, k=5, alpha=1.0, reduction="mean"):
    r"""Hard top-k SVM loss, the ``tau -> 0`` limit of :func:`smooth_topk_svm`.

    .. math::  l_k(s, y) = \max\big(0,\ \alpha + (s_{\setminus y,[k]} - s_y)/k\big)

    where :math:`s_{\setminus y,[k]}` is the k-th largest score among the classes other
    than ``y``. Its subgradient is :math:`+1/k` at that class and :math:`-1/k` at ``y``
    where the loss is positive, 0 elsewhere. Classes tied at the k-th score share the
    :math:`+1/k` equally: a point of the subdifferential that does not depend on how a
    backend's top-k orders ties.

    Parameters
    ----------
    scores : array, shape (batch, n)
    labels : array of int, shape (batch,)
    k : int, default 5
        ``1 <= k <= n - 1``.
    alpha : float, default 1.0
        Margin.
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    array
        The loss, in the array type, device and dtype of ``scores``.

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> scores = np.array([[3.0, 2.0, 1.0, 0.0]])
    >>> topkloss.topk_svm(scores, np.array([2]), k=2, reduction="none")
    array([1.5])
    """
    return run(_prepare_hard(scores, labels, k=k, alpha=alpha, reduction=reduction))

"""Top-K calibrated hinge, its noised smoothing (Garcin et al., ICML 2022) and LDAM margins."""

from __future__ import annotations

import numbers

import numpy as np

from .._config import value_checks_enabled
from ..adapters import device, is_concrete, namespace
from ..core import validate as v
from ..core.hinge import NOISED_TOPK_HINGE, TOPK_HINGE
from ._common import Call, differentiable, prepare_scores_labels, run
from ._random import standard_normal


def _same_array_kind(scores, name, arr):
    """``arr`` comes from the library and lives on the device of ``scores``."""
    v.namespace(namespace, scores=scores, **{name: arr})
    v.check_device("scores", device(scores), **{name: device(arr)})


def _prepare_margin(xp, margin, s, scores):
    """``(static margin, extra args)``: a number is static; a per-class array travels as an argument."""
    if isinstance(margin, numbers.Real) or not hasattr(margin, "shape"):
        return v.check_real(margin, "margin"), ()
    _same_array_kind(scores, "margin", margin)
    n = s.shape[1]
    v.check_shape(margin, "margin", (n,), "(n_classes,)")
    v.check_real_array(xp, margin, "margin")
    v.check_finite_values(xp, margin, "margin", value_checks_enabled() and is_concrete(margin))
    return None, (xp.astype(margin, s.dtype),)


def _prepare_hinge(scores, labels, *, k=5, margin=1.0, scale=1.0, reduction="mean"):
    xp, s, y = prepare_scores_labels(scores, labels, reduction)
    k = v.check_k(k, s.shape[1])
    margin, extra = _prepare_margin(xp, margin, s, scores)
    scale = v.check_real(scale, "scale", positive=True)
    return Call(xp, TOPK_HINGE, s, (y, *extra), (k, margin, scale), scores.dtype, reduction)


def _prepare_noise(xp, noise, shape, s, scores, seed, key):
    """The standard-normal noise of shape ``(batch, n_samples, n)``: given, or drawn."""
    if noise is None:
        return standard_normal(xp, shape, s, seed=seed, key=key)
    if seed is not None or key is not None:
        raise ValueError("give noise, or seed / key to draw it, not both")
    _same_array_kind(scores, "noise", noise)
    v.check_shape(noise, "noise", shape, "(batch, n_samples, n_classes)")
    if not v.is_kind(xp, noise.dtype, "real floating"):
        raise TypeError(f"noise must have a real floating dtype; got {noise.dtype}")
    return noise if noise.dtype == s.dtype else xp.astype(noise, s.dtype)


def _prepare_noised(
    scores, labels, *, k=5, epsilon=1.0, n_samples=5, margin=1.0, scale=1.0, noise=None, seed=None, key=None,
    reduction="mean",
):
    xp, s, y = prepare_scores_labels(scores, labels, reduction)
    k = v.check_k(k, s.shape[1])
    epsilon = v.check_real(epsilon, "epsilon", nonnegative=True)
    n_samples = v.check_int(n_samples, "n_samples", 1)
    margin, extra = _prepare_margin(xp, margin, s, scores)
    scale = v.check_real(scale, "scale", positive=True)
    z = _prepare_noise(xp, noise, (s.shape[0], n_samples, s.shape[1]), s, scores, seed, key)
    return Call(xp, NOISED_TOPK_HINGE, s, (y, z, *extra), (k, epsilon, margin, scale), scores.dtype, reduction)


@differentiable(_prepare_hinge)
def topk_hinge(scores, labels, *, k=5, margin=1.0, scale=1.0, reduction="mean"):
    r"""Top-K calibrated hinge loss (Yang & Koyejo 2020), balanced or with per-class margins.

    .. math::  \ell_k(s, y) = \mathrm{scale}\cdot\max\big(0,\ m_y + s_{[k+1]} - s_y\big)

    where :math:`s_{[k+1]}` is the (k+1)-th largest score of the FULL row, the label's own
    score included: the loss is ``m_y * scale`` or less exactly when the label is among
    the top k with a lead of ``m_y`` over the next class. :math:`m_y` is ``margin``, or
    ``margin[y]`` for a per-class array (the imbalanced variant of Garcin et al.; see
    :func:`ldam_margins`).

    Subgradient, where the hinge is active: ``scale`` at the class holding the (k+1)-th
    largest score, ``-scale`` at the label, 0 elsewhere; rows sum to 0. A row whose label
    is itself the (k+1)-th largest has loss ``m_y * scale`` and gradient 0. When several
    classes tie at the (k+1)-th largest score they share the ``scale`` equally (a
    subgradient that does not depend on how a backend orders ties).

    Parameters
    ----------
    scores : array, shape (batch, n)
        Scores (logits), any real floating dtype. float16/bfloat16 are computed in float32
        and the result is returned in the input dtype.
    labels : array of int, shape (batch,)
        Class indices in ``[0, n)``, same array library and device as ``scores``.
    k : int, default 5
        The top-k the loss targets, ``1 <= k <= n - 1`` (the loss needs a (k+1)-th class).
    margin : float or array of shape (n,), default 1.0
        The margin, one finite number or one per class (same array library and device as
        ``scores``; its values are checked like the labels'). Numbers (here and for ``scale``) are static under ``jax.jit`` and
        ``torch.compile``: a new value recompiles; an array does not.
    scale : float, default 1.0
        Positive factor of the whole hinge (e.g. 50-60 for cosine scores).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"`` returns the per-sample losses, shape ``(batch,)``.

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
    >>> scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    >>> labels = np.array([0, 0])
    >>> topkloss.topk_hinge(scores, labels, k=2, reduction="none")
    array([0., 2.])
    >>> topkloss.topk_hinge(scores, labels, k=2, margin=np.array([2.5, 1.0, 1.0, 1.0]), reduction="none")
    array([0.5, 3.5])
    """
    return run(_prepare_hinge(scores, labels, k=k, margin=margin, scale=scale, reduction=reduction))


@differentiable(_prepare_noised)
def noised_topk_hinge(
    scores, labels, *, k=5, epsilon=1.0, n_samples=5, margin=1.0, scale=1.0, noise=None, seed=None, key=None,
    reduction="mean",
):
    r"""Noised top-K hinge loss (Garcin et al., ICML 2022): the calibrated hinge smoothed by Gaussian noise.

    .. math::
        \ell_{k,\varepsilon}(s, y) = \mathrm{scale}\cdot\max\Big(0,\
            m_y + \mathbb{E}_Z\big[(s + \varepsilon Z)_{[k+1]}\big] - s_y\Big),
        \qquad Z \sim N(0, I_n),

    estimated with ``S = n_samples`` draws per row: with
    :math:`v = \frac1S\sum_b (s + \varepsilon Z_b)_{[k+1]}` the loss is
    :math:`\mathrm{scale}\cdot\max(0, m_y + v - s_y)` and, where it is positive, its gradient
    is :math:`\mathrm{scale}\,(\frac1S\sum_b e_{j_b} - e_y)`, with :math:`j_b` the class
    holding the (k+1)-th largest entry of draw ``b`` (Berthet et al. 2020's perturbed
    maximiser). Value and gradient come from the same draws. ``epsilon = 0`` gives
    :func:`topk_hinge`.

    The gradient is unbiased for the gradient of the smoothed order statistic, and the
    value is unbiased for the smoothed loss where the hinge is active with high
    probability. Near the kink the value is biased upwards: the mean of
    :math:`\max(0, m_y + v - s_y)` over draws exceeds :math:`\max(0, m_y + \mathbb{E}v - s_y)`
    (Jensen; the gap shrinks like :math:`\varepsilon/\sqrt{S}`).

    Randomness, reproducible on every backend (give at most one of the three):

    - ``noise``: the standard-normal draws themselves, shape ``(batch, n_samples, n)``,
      used as ``s + epsilon * noise``: the same noise gives the same result on every
      backend.
    - ``seed``: an int in [0, 2**63 - 1] (same seed, same draws, at every call; different seeds,
      independent draws) or a generator whose state advances at each call
      (``numpy.random.Generator`` for any array type, ``torch.Generator`` for torch
      tensors, ``cupy.random.Generator`` for CuPy arrays). Each framework draws with its
      own generator, so one seed gives different draws on different backends.
    - ``key``: a JAX PRNG key (JAX arrays only; an argument of a jitted function, no global
      state).

    With none of them, torch draws from its global generator (``torch.manual_seed``),
    NumPy and CuPy from a fresh unseeded generator; JAX requires ``key``, ``seed`` or
    ``noise``. Under ``torch.compile(fullgraph=True)`` pass ``noise`` or use the global
    generator (dynamo cannot trace a ``seed``: it makes a graph break); under
    ``torch.func.vmap`` pass ``noise`` (or ``randomness=...`` to vmap).

    Parameters
    ----------
    scores : array, shape (batch, n)
        Scores (logits), any real floating dtype (half precision is computed in float32).
    labels : array of int, shape (batch,)
        Class indices in ``[0, n)``, same array library and device as ``scores``.
    k : int, default 5
        ``1 <= k <= n - 1``.
    epsilon : float, default 1.0
        Noise level, ``>= 0`` (paper: 1.0 on Pl@ntNet-300K, 0.2 on CIFAR-100, 0.01 with
        cosine scores and ``scale`` 50-60). Static under ``jax.jit`` and ``torch.compile``
        (a new value recompiles).
    n_samples : int, default 5
        Draws per row, ``>= 1``.
    margin : float or array of shape (n,), default 1.0
        The margin, or one finite value per class (see :func:`ldam_margins`).
    scale : float, default 1.0
        Positive factor of the whole hinge.
    noise, seed, key
        See above.
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    array
        The loss estimate, in the array type, device and dtype of ``scores``.
        Differentiable as :func:`topk_hinge`.

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    >>> labels = np.array([0, 0])
    >>> a = topkloss.noised_topk_hinge(scores, labels, k=2, epsilon=0.5, seed=0, reduction="none")
    >>> b = topkloss.noised_topk_hinge(scores, labels, k=2, epsilon=0.5, seed=0, reduction="none")
    >>> bool((a == b).all()), a.shape
    (True, (2,))
    >>> topkloss.noised_topk_hinge(scores, labels, k=2, noise=np.zeros((2, 5, 4)), reduction="none")
    array([0., 2.])
    """
    return run(
        _prepare_noised(
            scores, labels, k=k, epsilon=epsilon, n_samples=n_samples, margin=margin, scale=scale, noise=noise,
            seed=seed, key=key, reduction=reduction,
        )
    )


def ldam_margins(class_counts, *, max_margin=0.2, power=0.25):
    r"""Per-class margins from class counts (LDAM, Cao et al. 2019), for the imbalanced hinge.

    .. math::  m_c = \mathrm{max\_margin}\cdot\frac{n_c^{-\mathrm{power}}}{\max_{c'} n_{c'}^{-\mathrm{power}}}

    so the rarest class gets ``max_margin`` and frequent classes smaller margins. Pass the
    result as ``margin`` to :func:`topk_hinge` or :func:`noised_topk_hinge` (Garcin et al.
    use ``max_margin = 0.2``, ``power = 1/4``, ``scale`` 50-60, ``epsilon = 0.01``).

    Parameters
    ----------
    class_counts : array or sequence, shape (n,)
        Number of training examples of each class, all positive and finite. An array keeps its array
        library and device; a Python sequence gives a NumPy array.
    max_margin : float, default 0.2
        The largest margin, ``>= 0``.
    power : float, default 0.25
        Exponent, ``>= 0``.

    Returns
    -------
    array, shape (n,)
        The margins, in the floating dtype of ``class_counts`` (the library's default
        floating dtype for integer counts).

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> topkloss.ldam_margins(np.array([10000, 100, 1])).round(4)
    array([0.02  , 0.0632, 0.2   ])
    """
    if not hasattr(class_counts, "shape"):
        class_counts = np.asarray(class_counts)
    xp = v.namespace(namespace, class_counts=class_counts)
    if getattr(class_counts, "ndim", None) != 1 or class_counts.shape[0] < 1:
        raise ValueError(f"class_counts must be a non-empty 1-D array (n_classes,); got shape {tuple(class_counts.shape)}")
    v.check_real_array(xp, class_counts, "class_counts")
    checks = value_checks_enabled() and is_concrete(class_counts)
    v.check_positive_values(xp, class_counts, "class_counts", checks)
    v.check_finite_values(xp, class_counts, "class_counts", checks)
    max_margin = v.check_real(max_margin, "max_margin", nonnegative=True)
    power = v.check_real(power, "power", nonnegative=True)
    counts = class_counts
    if not v.is_kind(xp, counts.dtype, "real floating"):
        info = xp.__array_namespace_info__()
        counts = xp.astype(counts, info.default_dtypes(device=device(counts))["real floating"])
    log_w = -power * xp.log(counts)
    return max_margin * xp.exp(log_w - xp.max(log_w))

"""The log elementary-symmetric-polynomial primitive."""

from __future__ import annotations

from ..core import validate as v
from ..core.esf import LOG_ESF
from ..adapters import namespace
from ._common import Call, compute_dtype, differentiable, run


def _prepare_log_esf(x, k):
    xp = v.namespace(namespace, x=x)
    if getattr(x, "ndim", 0) < 1:
        raise ValueError(f"x must have at least 1 dimension (..., m); got shape {tuple(getattr(x, 'shape', ()))}")
    if not v.is_kind(xp, x.dtype, "real floating"):
        raise TypeError(f"x must have a real floating dtype; got {x.dtype}")
    k = v.check_int(k, "k", 0)
    return Call(xp, LOG_ESF, compute_dtype(xp, x), (), (k,), x.dtype, "none")


@differentiable(_prepare_log_esf)
def log_esf(x, k):
    r"""Log elementary symmetric polynomials of ``exp(x)``: ``log e_0 .. log e_k`` along the last axis.

    .. math::
        \mathrm{log\_esf}(x, k)_j = \log e_j(e^{x_1}, \dots, e^{x_m})
        = \log \sum_{|A| = j} \exp\Big(\sum_{i\in A} x_i\Big), \qquad j = 0, \dots, k

    so ``out[..., 0] = 0`` and ``out[..., 1]`` is the log-sum-exp of ``x``. Computed by
    multiplying the factors :math:`(1 + e^{x_i} t)` pairwise in a balanced tree truncated at
    degree ``k`` (:math:`\lceil \log_2 m \rceil` vectorised rounds, :math:`O(mk)` work),
    in log space so nothing overflows or cancels. Degrees above ``m`` are ``-inf``; entries
    of ``x`` may be ``-inf`` (a zero factor).

    Accuracy: each ``log e_j`` is within a few ``eps`` times ``j max|x| + 1`` of the exact
    value (sums of ``j`` entries of ``x`` round in the input's dtype; the tests hold float32 to
    ``4 eps (j max|x| + 1)``). That is an absolute bound: where large entries of both signs
    nearly cancel, the result carries their rounding (eight float32 entries of magnitude up to
    2400 whose sum is -0.2286 give ``log e_8`` to about 2e-4).

    The gradient is exact: :math:`\partial\, \mathrm{out}_j / \partial x_i = \pi_j(i) =
    e^{x_i} e_{j-1}(x_{\setminus i}) / e_j(x)`, the probability that ``i`` belongs to a random
    ``j``-subset drawn with weight :math:`\exp(\sum_{i \in A} x_i)`, with the complement
    polynomials :math:`e_{j-1}(x_{\setminus i})` from a top-down pass over the same tree (no
    subtraction).

    Useful beyond top-k losses: k-subset models, Poisson-binomial likelihoods,
    determinantal point processes.

    Parameters
    ----------
    x : array, shape (..., m)
        Logs of the positive variables, any real floating dtype (half precision is
        computed in float32).
    k : int
        Highest degree, ``>= 0``.

    Returns
    -------
    array, shape (..., k + 1)
        ``log e_0 .. log e_k``, in the array type, device and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> np.exp(topkloss.log_esf(np.log(np.array([1.0, 2.0, 3.0])), 3))
    array([ 1.,  6., 11.,  6.])
    """
    return run(_prepare_log_esf(x, k))

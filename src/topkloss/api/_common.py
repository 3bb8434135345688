"""What every public differentiable function shares: the prepared call, running it, value_and_grad."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from .._config import value_checks_enabled
from ..adapters import apply, check_lazily, device, is_concrete, namespace
from ..core import validate as v
from ..core.ops import reduce, reduction_cotangent


@dataclass(frozen=True)
class Call:
    """A validated call of one core op: ``op(x, *args; static)``, then cast and reduce.

    ``x`` is the differentiable input already in the compute dtype (float32 for half
    precision inputs); ``dtype`` is the input dtype the results are returned in.
    """

    xp: Any
    op: Any
    x: Any
    args: tuple
    static: tuple
    dtype: Any
    reduction: str = "none"


def compute_dtype(xp, x):
    """float32 and float64 compute as themselves; float16 / bfloat16 compute in float32."""
    if x.dtype in (xp.float32, xp.float64):
        return x
    return xp.astype(x, xp.float32)


def prepare_scores_labels(scores, labels, reduction):
    """Common checks of (scores, labels, reduction); returns (xp, scores in compute dtype, labels).

    The label range is read now from concrete arrays; a Dask array's is checked chunk by
    chunk when it is computed; under tracing or transforms it is not checked.
    """
    xp = v.namespace(namespace, scores=scores, labels=labels)
    v.check_scores(xp, scores)
    checks = value_checks_enabled()
    concrete = checks and is_concrete(labels)
    v.check_labels(xp, labels, scores, check_values=checks and concrete)
    v.check_device("scores", device(scores), labels=device(labels))
    v.check_reduction(reduction)
    if checks and not concrete:
        labels = check_lazily(labels, functools.partial(_check_label_chunk, n=scores.shape[1]))
    return xp, compute_dtype(xp, scores), v.as_index_dtype(xp, labels)


def _check_label_chunk(chunk, n):
    v.check_label_values(namespace(chunk), chunk, n)


def finish(call, values):
    values = reduce(call.xp, values, call.reduction)
    return values if values.dtype == call.dtype else call.xp.astype(values, call.dtype)


def run(call):
    """The value of a prepared call, differentiable by the array's own framework."""
    return finish(call, apply(call.op, call.static, call.x, *call.args))


def differentiable(prepare: Callable[..., Call]):
    """Decorator: mark a public loss as served by ``value_and_grad`` through ``prepare``."""

    def mark(fn):
        fn._topkloss_prepare = prepare
        return fn

    return mark


def value_and_grad(loss_fn):
    """Value and gradient with respect to the first argument, on every backend.

    ``topkloss.value_and_grad(loss_fn)(scores, labels, **params)`` returns
    ``(value, grad)``: ``value`` is what ``loss_fn(scores, labels, **params)`` returns and
    ``grad`` has the shape, dtype and array type of ``scores``. It runs the same core
    forward and hand-derived backward that the PyTorch and JAX adapters register, and is
    the way to get gradients for NumPy, CuPy and array-api-strict arrays. With
    ``reduction="none"`` the gradient is that of the sum of the per-sample values (each
    row holds the gradient of its own loss).

    Parameters
    ----------
    loss_fn : callable
        A differentiable function of topkloss (``smooth_topk_svm``, ``topk_svm``,
        ``topk_hinge``, ``noised_topk_hinge``, ``topk_transition``, ``log_esf``...).

    Returns
    -------
    callable
        ``f(x, *args, **params) -> (value, grad)``.

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> scores = np.array([[2.0, 1.0, 0.0, -1.0]])
    >>> value, grad = topkloss.value_and_grad(topkloss.smooth_topk_svm)(scores, np.array([1]), k=2)
    >>> bool(abs(grad.sum()) < 1e-12)
    True
    """
    prepare = getattr(loss_fn, "_topkloss_prepare", None)
    if prepare is None:
        raise TypeError(f"loss_fn must be a differentiable function of topkloss; got {loss_fn!r}")

    @functools.wraps(loss_fn)
    def wrapped(*args, **params):
        call = prepare(*args, **params)
        xp = call.xp
        values, residuals = call.op.forward(xp, call.x, *call.args, static=call.static)
        g = reduction_cotangent(xp, values, call.reduction)
        grad = call.op.backward(xp, call.x, call.args, residuals, g, static=call.static)
        if grad.dtype != call.dtype:
            grad = xp.astype(grad, call.dtype)
        return finish(call, values), grad

    return wrapped

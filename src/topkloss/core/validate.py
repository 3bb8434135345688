"""Argument checks with messages that name the argument and what was expected.

Shape, dtype and parameter checks are static (they never look at array values), so they
run under ``jax.jit`` and ``torch.compile``. The one check that reads values, the label
range, runs only when the caller says the values can be read (concrete arrays, not under
tracing) and checks are on: it costs a device synchronisation on GPU (see
``topkloss.value_checks``).
"""

from __future__ import annotations

import math
import numbers

from array_api_compat import array_namespace

REDUCTIONS = ("mean", "sum", "none")


def namespace(find=array_namespace, **arrays):
    """The array namespace shared by the named arrays, or a TypeError naming them.

    ``find`` maps arrays to their namespace (``array_namespace`` by default).
    """
    try:
        return find(*arrays.values())
    except TypeError as exc:
        kinds = ", ".join(f"{name}: {type(a).__module__}.{type(a).__name__}" for name, a in arrays.items())
        raise TypeError(f"{', '.join(arrays)} must be arrays of one array library on one device; got {kinds}") from exc


def check_device(ref_name, ref_device, **devices):
    """Every named device equals ``ref_device`` (None, the device of a traced array, passes)."""
    for name, dev in devices.items():
        if ref_device is not None and dev is not None and dev != ref_device:
            raise ValueError(f"{name} must be on the device of {ref_name} ({ref_device}); got {dev}")


def is_kind(xp, dtype, kind):
    """``xp.isdtype(dtype, kind)``, False for a dtype the namespace does not know: NumPy's
    ``isdtype`` raises its own TypeError for an extension dtype such as ml_dtypes' bfloat16, and
    the caller's error should name the argument instead."""
    try:
        return bool(xp.isdtype(dtype, kind))
    except TypeError:
        return False


def check_scores(xp, scores, name="scores", ndim=2):
    if getattr(scores, "ndim", None) != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array (batch, n_classes); got shape {tuple(scores.shape)}")
    check_known_shape(scores, name)
    if not is_kind(xp, scores.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype; got {scores.dtype}")
    if ndim == 2 and scores.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes (columns); got shape {tuple(scores.shape)}")


def known(size):
    """Whether an entry of a shape is a known size (Dask writes an unknown one as NaN, the
    array API as None)."""
    return size is not None and not (isinstance(size, float) and math.isnan(size))


def check_known_shape(x, name):
    """Every size of ``x`` is known: a Dask array after boolean indexing has unknown chunk
    sizes, which the losses cannot lay out (say so, rather than fail inside the core)."""
    if not all(known(d) for d in x.shape):
        raise ValueError(
            f"{name} must have a known shape; got {tuple(x.shape)} (a Dask array with unknown chunk "
            f"sizes, e.g. after boolean indexing: call {name}.compute_chunk_sizes() first)"
        )


def check_labels(xp, labels, scores, check_values=True):
    """Labels: 1-D integers of the batch size of ``scores``, each in ``[0, n)``.

    The range is checked only if ``check_values`` (the caller passes False for arrays
    whose values cannot be read: under tracing, transforms or for lazy arrays).
    """
    if getattr(labels, "ndim", None) != 1:
        raise ValueError(f"labels must be a 1-D array of class indices; got shape {tuple(labels.shape)}")
    if not is_kind(xp, labels.dtype, "integral"):
        raise TypeError(f"labels must have an integer dtype (class indices); got {labels.dtype}")
    check_known_shape(labels, "labels")
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels must have one entry per row of scores: scores has {scores.shape[0]} rows, "
            f"labels has {labels.shape[0]} entries"
        )
    if check_values:
        check_label_values(xp, labels, scores.shape[1])


def check_label_values(xp, labels, n):
    """Every label in ``[0, n)``: one read of the values (one device synchronisation on GPU);
    the observed range is computed only to word the error."""
    if labels.shape[0] > 0 and not bool(xp.all((labels >= 0) & (labels < n))):
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        raise ValueError(f"labels must be in [0, {n - 1}] (n_classes = {n}); got values in [{lo}, {hi}]")


def as_index_dtype(xp, labels):
    """Labels in int32/int64, so comparisons with ``arange(n)`` cannot overflow (e.g. uint8)."""
    if labels.dtype in (xp.int32, xp.int64):
        return labels
    return xp.astype(labels, xp.int32)


def check_int(value, name, low, high=None, hint=""):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {rng}{hint}; got {value}")
    return int(value)


def check_real(value, name, *, positive=False, nonnegative=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    value = float(value)
    # comparisons, not math.isfinite: under torch.compile a hyper-parameter that changes
    # between calls becomes a symbolic float, which compares (with a guard) but has no isfinite
    if not -math.inf < value < math.inf:
        raise ValueError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value


def check_k(k, n, name="k", offset=0):
    """``1 <= k`` and ``k + offset <= n - 1`` (the loss needs k + offset classes besides one)."""
    return check_int(k, name, 1, n - 1 - offset, hint=f" for n_classes = {n}")


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    return reduction


def check_choice(value, name, choices):
    """``value`` is one of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")
    return value


def check_fraction(value, name):
    """A real number in [0, 1]."""
    value = check_real(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value}")
    return value


def check_per_sample(xp, arr, name, scores, check_values=True, interval=None):
    """A real array of shape ``()`` or ``(batch,)`` (one value per row of ``scores``).

    With ``interval=(lo, hi)`` its values must lie in ``[lo, hi]`` (NaN fails); read only if
    ``check_values`` (concrete arrays, value checks on).
    """
    batch = scores.shape[0]
    if getattr(arr, "ndim", None) not in (0, 1) or (arr.ndim == 1 and arr.shape[0] != batch):
        raise ValueError(
            f"{name} must be a number or an array of shape () or ({batch},) (one value per row of scores); "
            f"got shape {tuple(arr.shape)}"
        )
    check_real_array(xp, arr, name)
    if check_values and interval is not None and batch > 0:
        lo, hi = interval
        if not bool(xp.all((arr >= lo) & (arr <= hi))):
            raise ValueError(
                f"{name} must be in [{lo}, {hi}]; got values in [{float(xp.min(arr))}, {float(xp.max(arr))}]"
            )
    return arr


def check_shape(arr, name, shape, meaning):
    """``arr.shape == shape``; ``meaning`` names the axes, e.g. ``"(batch, n_samples, n)"``."""
    got = tuple(getattr(arr, "shape", ()))
    if got != tuple(shape):
        raise ValueError(f"{name} must have shape {meaning} = {tuple(shape)}; got {got}")
    return arr


def check_real_array(xp, arr, name):
    """An array with a real (floating or integer) dtype."""
    if not (is_kind(xp, arr.dtype, "real floating") or is_kind(xp, arr.dtype, "integral")):
        raise TypeError(f"{name} must have a real dtype; got {arr.dtype}")
    return arr


def check_finite_values(xp, arr, name, check_values=True):
    """Every entry of ``arr`` is finite (NaN and +-inf fail); read only if ``check_values``."""
    if check_values and 0 not in arr.shape:
        bad = xp.sum(xp.astype(~xp.isfinite(arr), xp.int64))
        if bool(bad > 0):
            raise ValueError(f"{name} must be finite; got {int(bad)} entries that are NaN or infinite")


def check_positive_values(xp, arr, name, check_values=True):
    """Every entry of ``arr`` is > 0 (NaN fails); read only if ``check_values``."""
    if check_values and 0 not in arr.shape and not bool(xp.all(arr > 0)):
        raise ValueError(f"{name} must be positive; got values in [{float(xp.min(arr))}, {float(xp.max(arr))}]")
    return arr

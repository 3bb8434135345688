"""Global switches."""

from __future__ import annotations

import contextlib

_STATE = {"check_values": True}


def value_checks_enabled() -> bool:
    return _STATE["check_values"]


def set_value_checks(enabled: bool) -> bool:
    """Turn the checks that read array values (label range) on or off; returns the previous setting.

    These checks read concrete arrays when the function is called; a Dask array's labels
    are checked chunk by chunk when the result is computed; under ``jax.jit`` tracing,
    ``torch.compile`` and ``torch.func`` transforms they are skipped. On a GPU each check
    costs one device synchronisation per call: turn them off in a training loop whose
    labels are known to be valid. With the checks off an out-of-range label gives an undefined
    result (garbage, or the backend's own index error; on torch CUDA a device-side assert,
    which leaves the process's CUDA context unusable).

    Examples
    --------
    >>> import topkloss
    >>> previous = topkloss.set_value_checks(False)
    >>> topkloss.set_value_checks(previous)
    False
    """
    previous = _STATE["check_values"]
    _STATE["check_values"] = bool(enabled)
    return previous


@contextlib.contextmanager
def value_checks(enabled: bool):
    """Context manager form of :func:`set_value_checks`.

    Examples
    --------
    >>> import numpy as np, topkloss
    >>> with topkloss.value_checks(False):
    ...     float(topkloss.topk_svm(np.zeros((1, 3)), np.array([0]), k=1))
    1.0
    """
    previous = set_value_checks(enabled)
    try:
        yield
    finally:
        set_value_checks(previous)

"""The array backends the suite runs on, and helpers to move data between them and NumPy.

array-api-strict always runs; NumPy, PyTorch and JAX (with x64 enabled) when installed;
CuPy only with a working GPU. A missing backend is a clean skip, never an error.

``TOPKLOSS_TEST_TORCH_DEVICE=cuda`` puts the suite's torch arrays on that device (for a run on
a GPU machine; JAX already puts its arrays on the GPU when it has one).
"""

from __future__ import annotations

import importlib
import os

import numpy as np

NAMES = ("array_api_strict", "numpy", "torch", "jax", "cupy")

TORCH_DEVICE = os.environ.get("TOPKLOSS_TEST_TORCH_DEVICE", "cpu")


def load(name):
    """(xp, reason): the namespace of backend ``name``, or None and why it is skipped."""
    try:
        if name == "array_api_strict":
            return importlib.import_module("array_api_strict"), None
        if name == "numpy":
            return np, None
        if name == "torch":
            importlib.import_module("torch")
            return importlib.import_module("array_api_compat.torch"), None
        if name == "jax":
            jax = importlib.import_module("jax")
            jax.config.update("jax_enable_x64", True)
            return importlib.import_module("jax.numpy"), None
        if name == "cupy":
            cp = importlib.import_module("cupy")
            cp.cuda.runtime.getDeviceCount()
            return importlib.import_module("array_api_compat.cupy"), None
    except Exception as exc:  # ImportError, or CuPy without a GPU
        return None, f"{name} unavailable: {type(exc).__name__}: {exc}"
    raise ValueError(name)


def name_of(xp):
    n = xp.__name__
    for key in ("strict", "torch", "jax", "cupy"):
        if key in n:
            return {"strict": "array_api_strict"}.get(key, key)
    return "numpy"


def asarray(xp, a, dtype=None):
    """A NumPy array (or list) as an array of ``xp``; floating data in ``dtype`` if given."""
    a = np.asarray(a)
    if name_of(xp) == "torch":
        import torch

        out = torch.asarray(a.copy(), device=TORCH_DEVICE)
    else:
        out = xp.asarray(a)
    if dtype is not None:
        out = xp.astype(out, dtype)
    return out


def to_numpy(x):
    """Any backend's array as a NumPy array (detached, on the host)."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        return x.detach().cpu().numpy()
    if mod.startswith("cupy"):
        return x.get()
    return np.asarray(x)


def assert_close(actual, desired, rtol=1e-7, atol=0.0, err_msg=""):
    """``numpy.testing.assert_allclose`` after converting ``actual`` to NumPy."""
    np.testing.assert_allclose(to_numpy(actual), np.asarray(desired), rtol=rtol, atol=atol, err_msg=err_msg)


def assert_array_type(x, xp):
    """``x`` is an array of backend ``xp`` (the library returns the input's array type)."""
    import array_api_compat

    got = name_of(array_api_compat.array_namespace(x))
    assert got == name_of(xp), f"expected a {name_of(xp)} array, got {type(x)}"

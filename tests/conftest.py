"""Fixtures: ``xp`` runs a test on every backend that is installed, ``dtype`` in float32 and float64."""

from __future__ import annotations

import pytest

import backends

_LOADED = {name: backends.load(name) for name in backends.NAMES}


@pytest.fixture(params=backends.NAMES)
def xp(request):
    mod, reason = _LOADED[request.param]
    if mod is None:
        pytest.skip(reason)
    return mod


@pytest.fixture(params=["float32", "float64"])
def dtype(request, xp):
    return getattr(xp, request.param)


def available(name):
    """The namespace of backend ``name`` or a skip."""
    mod, reason = _LOADED[name]
    if mod is None:
        pytest.skip(reason)
    return mod


def force_level_forms(monkeypatch, stacked):
    """Every linear-space tree level of the polynomial engine in one form: all stacked, or all
    lists (the planned choice mixes them by size, degree and device: ``esf.level_forms``)."""
    from topkloss.core import esf

    real = esf.level_forms

    def forms(m, k, rest=1, mode="linear", accelerator=False, xla=False):
        return [stacked and mode == "linear" for _ in real(m, k, rest, mode, accelerator, xla)]

    monkeypatch.setattr(esf, "level_forms", forms)


def force_scan(monkeypatch):
    """The smooth SVM's polynomials by prefix sums wherever linear space is exact, on every
    backend (the planned choice takes them on eager torch and on CuPy only: ``smooth_svm.scan_applies``)."""
    from topkloss.core import smooth_svm

    monkeypatch.setattr(smooth_svm, "scan_applies", lambda xp, s, k, mode: mode != "log")

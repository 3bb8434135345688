"""SPEC's numerical contract in float32: offsets, spreads, temperatures, wide rows; never NaN/Inf.

loss: within 1e-5 relative (or 1e-6 absolute, if larger) of float64 on the same inputs;
gradient: within 1e-5 (1 + R) of its largest entry, R = (max - min of the row) / (k tau).
Gradient entries below float32's smallest normal number cannot be represented at all, so
that is the absolute floor of the gradient comparison.
"""

from __future__ import annotations

import numpy as np
import pytest

import topkloss
from conftest import force_level_forms, force_scan
from topkloss.core import smooth_svm

VG = topkloss.value_and_grad(topkloss.smooth_topk_svm)
TINY32 = float(np.finfo(np.float32).tiny)


def _check_contract(s32, y, k, tau, alpha=1.0):
    l32, g32 = VG(s32, y, k=k, tau=tau, alpha=alpha, reduction="none")
    l64, g64 = VG(s32.astype(np.float64), y, k=k, tau=tau, alpha=alpha, reduction="none")
    assert l32.dtype == np.float32 and g32.dtype == np.float32
    assert np.all(np.isfinite(l32)) and np.all(np.isfinite(g32))
    loss_tol = np.maximum(1e-5 * np.abs(l64), 1e-6)
    bad = np.abs(l32 - l64) > loss_tol
    assert not bad.any(), f"loss off in rows {np.flatnonzero(bad)}: {l32[bad]} vs {l64[bad]}"
    r = (s32.max(1) - s32.min(1)).astype(np.float64) / (k * tau)
    grad_tol = np.maximum(1e-5 * (1 + r) * np.abs(g64).max(1), TINY32)
    err = np.abs(g32 - g64).max(1)
    assert np.all(err <= grad_tol), f"gradient off by {np.max(err / grad_tol):.3g} x tolerance"


@pytest.fixture(params=["planned", "stacked", "log", "linear64", "scan"])
def mode(request, monkeypatch):
    """The planned path; the planned path with every linear tree level stacked; and each other
    exact path forced (log space; linear space in float64; prefix sums in float64, which the
    planned path takes on eager torch only)."""
    if request.param == "stacked":
        force_level_forms(monkeypatch, True)
    elif request.param == "scan":
        force_scan(monkeypatch)
    elif request.param != "planned":
        monkeypatch.setattr(smooth_svm, "plan_mode", lambda *a: request.param)
    return request.param


@pytest.mark.parametrize("offset", [0.0, 1e4, -1e4])
@pytest.mark.parametrize("spread", [1.0, 100.0, 1e4])
@pytest.mark.parametrize("tau", [1e-3, 1e-1, 1.0, 1e3])
def test_float32_contract(offset, spread, tau, mode):
    rng = np.random.default_rng(int(abs(offset) + spread + 1000 * tau) % 2**32)
    for n, k in ((10, 1), (10, 5), (200, 5), (50, 20)):
        s = (offset + spread * rng.normal(size=(24, n))).astype(np.float32)
        y = rng.integers(0, n, size=24)
        _check_contract(s, y, k, tau)


@pytest.mark.parametrize("tau", [1e-3, 1.0])
def test_float32_near_the_hinge_with_far_top_classes(tau):
    """Rows where the top k-1 classes sit 1e4 above and the label near the k-th: the case that
    cancels catastrophically if log e_k and log e_{k-1} are computed separately."""
    rng = np.random.default_rng(1)
    n, k = 12, 5
    s = np.zeros((40, n), dtype=np.float32)
    s[:, : k - 1] = 1e4 + rng.uniform(0, 1e4, size=(40, k - 1)).astype(np.float32)
    s[:, k - 1 :] = rng.normal(size=(40, n - k + 1)).astype(np.float32)
    y = np.full(40, n - 1)
    s[:, n - 1] = s[:, k - 1] + np.float32(k) * rng.uniform(-2, 0.5, size=40).astype(np.float32)  # around the kink
    _check_contract(s, y, k, tau)


@pytest.mark.parametrize("scan", [False, True], ids=["planned", "scan"])
@pytest.mark.parametrize("n,k", [(1000, 5), (100_000, 5), (3000, 10), (2000, 20)])
def test_float32_wide_rows(monkeypatch, n, k, scan):
    """Wide rows, planned and by prefix sums (whose rounding grows with the row: float64)."""
    if scan:
        force_scan(monkeypatch)
    rng = np.random.default_rng(n + k)
    s = (rng.normal(size=(2, n)) * np.array([[3.0], [300.0]])).astype(np.float32)
    y = rng.integers(0, n, size=2)
    _check_contract(s, y, k, tau=1.0)


def test_plan_mode_is_static_and_sensible():
    assert smooth_svm.plan_mode(100_000, 5, double=False) == "linear"
    assert smooth_svm.plan_mode(100_000, 20, double=False) == "log"
    assert smooth_svm.plan_mode(100_000, 20, double=False, float64_ok=True) == "linear64"
    assert smooth_svm.plan_mode(100_000, 10, double=False, float64_ok=True) == "linear64"
    assert smooth_svm.plan_mode(10**9, 200, double=False, float64_ok=True) == "log"
    assert smooth_svm.plan_mode(100_000, 20, double=True) == "linear"
    assert smooth_svm.plan_mode(99, 20, double=False) == "linear"
    # where float32 trees end (docs/benchmarks.md quotes these): n classes give n - k leaves
    for k, first64 in ((10, 1872), (20, 145)):
        assert smooth_svm.plan_mode(first64 - 1 - k, k, double=False, float64_ok=True) == "linear"
        assert smooth_svm.plan_mode(first64 - k, k, double=False, float64_ok=True) == "linear64"
    assert smooth_svm.plan_mode(200_000 - 5, 5, double=False) == "linear"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    s = rng.normal(size=(8, 50)).astype(np.float32)
    y = torch.asarray(rng.integers(0, 50, size=8))
    half = torch.asarray(s).to(getattr(torch, dtype)).requires_grad_(True)
    out = topkloss.smooth_topk_svm(half, y, k=5)
    assert out.dtype == half.dtype
    out.backward()
    assert half.grad.dtype == half.dtype and torch.isfinite(half.grad).all()
    want = topkloss.smooth_topk_svm(half.detach().float(), y, k=5)
    torch.testing.assert_close(out.float(), want, rtol=1e-2, atol=0)  # rounding of the result to half


def test_level_forms_policy():
    """The per-level choice of tree form (esf.level_forms): static, lists in log space, deep
    levels stacked, more of them on an accelerator, none beyond the memory budget."""
    from topkloss.core import esf

    for accelerator in (False, True):
        assert not any(esf.level_forms(10_000, 5, 256, "log", accelerator))
    cpu = esf.level_forms(100_000, 20, 64, "linear", False)
    gpu = esf.level_forms(100_000, 20, 64, "linear", True)
    assert len(cpu) == len(gpu) == 17
    assert not cpu[0] and cpu[-1]  # the widest level a list, the root stacked
    assert sum(gpu) >= sum(cpu)
    # on a CPU: lists while a level's list form is small (k = 5), stacked beyond
    assert not any(esf.level_forms(10_000, 5, 256, "linear", False))
    assert esf.level_forms(10_000, 20, 256, "linear", False)[-1]
    assert sum(esf.level_forms(10_000, 5, 256, "linear", True)) >= 4
    # eager on a CPU: a deep level whose stacked transient is large stays a list
    # (esf.CPU_STACK_TRANSIENT): the first past CPU_LIST_OPS at 10000 x 256 (640 nodes), not the root
    wide = esf.level_forms(10_000, 20, 256, "linear", False)
    first_deep = [esf._list_ops(min(2**i, 20), min(2 ** (i + 1), 20)) > esf.CPU_LIST_OPS for i in range(len(wide))].index(True)
    assert not wide[first_deep] and wide[-1]
    # under XLA on a CPU: lists up to k = 20 (esf.XLA_CPU_LIST_OPS), the deep levels stacked beyond
    assert not any(esf.level_forms(100_000, 20, 64, "linear", False, True))
    assert esf.level_forms(100_000, 32, 64, "linear", False, True)[-1]
    assert esf.level_forms(100_000, 20, 64, "linear", True, True) == gpu  # accelerators: the cost model
    # the transient never exceeds the budget
    size, rest = 1 << 17, 64
    d_child, h = 1, size // 2
    for stacked in gpu:
        d = min(2 * d_child, 20)
        if stacked:
            assert 2 * d * (d_child + 1) * h * rest <= max(esf.STACK_BUDGET * size * rest, esf.STACK_SMALL)
        d_child, h = d, h // 2
    # level_structure agrees with the forms (what the backward unflattens)
    structure = esf.level_structure(100_000, 20, 64, "linear", True)
    assert [w == 0 for w in structure[1:]] == list(gpu)


def test_level_forms_memo():
    """level_forms answers from its memo exactly what the plan computes, and the memo is keyed
    by every argument (a different device or mode gets its own plan)."""
    from topkloss.core import esf

    for args in [(100_000, 20, 64, "linear", False), (100_000, 20, 64, "linear", True), (10_000, 5, 256, "log", False),
                 (100_000, 20, 64, "linear", False, True)]:
        first = esf.level_forms(*args)
        assert first == esf._plan_forms(*args)
        assert esf.level_forms(*args) is first  # the memo's answer
    assert esf.level_forms(10_000, 5, 256, "linear", False) != esf.level_forms(10_000, 5, 256, "linear", True)
    assert esf.level_forms(10_000, 20, 256, "linear", False) != esf.level_forms(10_000, 20, 256, "linear", False, True)

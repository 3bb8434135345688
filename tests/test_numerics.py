"""SPEC's numerical contract in float32: offsets, spreads, temperatures, wide rows; never NaN/Inf.

loss: within 1e-5 relative (or 1e-6 absolute, if larger) of float64 on the same inputs;
gradient: within 1e-5 (1 + R) of its largest entry, R = (max - min of the row) / (k tau).
Gradient entries below float32's smallest normal number cannot be represented at all, so
that is the absolute floor of the gradient comparison.
"""

from __future__ import annotations

import math

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


def test_xla_on_a_cpu_flushes_subnormals():
    """Why the gradient tolerance has the floor TINY32 (docs/algorithms.md, the contract): XLA
    on a CPU flushes subnormal float32 results to zero. Should this fail, XLA keeps them now,
    and the docs' paragraph on the floor is out of date."""
    jax = pytest.importorskip("jax")
    x = jax.device_put(np.array([TINY32, 4 * TINY32], dtype=np.float32), jax.devices("cpu")[0])
    got = np.asarray(jax.jit(lambda v: v * 0.25)(x))
    np.testing.assert_array_equal(got, np.array([0.0, TINY32], dtype=np.float32))


@pytest.fixture(params=["planned", "stacked", "log", "linear64", "scaled", "scan"])
def mode(request, monkeypatch):
    """The planned path; the planned path with every linear tree level stacked; and each other
    exact path forced (log space; linear space in float64; linear space on scaled leaves;
    prefix sums in float64, which the planned path takes on eager torch only)."""
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
    assert smooth_svm.plan_mode(100_000, 20, double=False) == "log"  # scaled leaves need float64 tables
    assert smooth_svm.plan_mode(100_000, 20, double=False, float64_ok=True) == "scaled"
    assert smooth_svm.plan_mode(100_000, 10, double=False, float64_ok=True) == "scaled"
    assert smooth_svm.plan_mode(10**9, 28, double=False, float64_ok=True) == "scaled"
    assert smooth_svm.plan_mode(100_000, 29, double=False, float64_ok=True) == "linear64"
    assert smooth_svm.plan_mode(10**9, 200, double=False, float64_ok=True) == "log"
    assert smooth_svm.plan_mode(100_000, 20, double=True) == "linear"
    assert smooth_svm.plan_mode(99, 20, double=False) == "linear"
    # where plain float32 trees end and leaves scaled per row begin (docs/benchmarks.md quotes
    # these; n classes give up to n - 1 leaves); the scaled mode has no upper end in n, and
    # reaches k = 28
    for k, first_scaled in ((10, 1863), (20, 126)):
        assert smooth_svm.plan_mode(first_scaled - 2, k, double=False, float64_ok=True) == "linear"
        assert smooth_svm.plan_mode(first_scaled - 1, k, double=False, float64_ok=True) == "scaled"
    assert smooth_svm._row_scale_is_exact(28) and not smooth_svm._row_scale_is_exact(29)
    assert smooth_svm.plan_mode(200_000 - 5, 5, double=False) == "linear"


@pytest.mark.parametrize("n,k", [(146, 20), (5000, 20), (100_000, 28), (2000, 10), (40, 3)])
def test_row_scale_keeps_every_value_in_range(n, k):
    """The scaled mode's bounds (smooth_svm._row_scale_is_exact), checked on its leaves
    (smooth_svm._row_scaled) with exact float64 polynomials: every e_j of a row's scaled leaves
    is at most c^j / j! (c = ROW_SCALE k), and at least 1 where the factor is below 1, for rows
    of every kind (all of U tied at 1, leaves spread just below, sparse among many tiny ones)."""
    from array_api_compat import numpy as xp

    rng = np.random.default_rng(n + k)
    width = n - k
    rows = [np.ones(width), np.exp(-rng.uniform(0, 0.3, width)), np.exp(-rng.uniform(0, 3, width))]
    sparse = np.full(width, 1e-30)
    sparse[: 3 * k] = np.exp(-rng.uniform(0, 1, 3 * k))
    rows += [sparse, np.concatenate([np.ones(1), np.zeros(width - 1)]), np.exp(-rng.exponential(1e-3 * width, width))]
    leaves, a = smooth_svm._row_scaled(xp, np.stack(rows), k)
    log_a = np.log(a)
    c = smooth_svm.ROW_SCALE * k
    bound = np.array([j * math.log(c) - math.lgamma(j + 1) for j in range(k + 1)])
    with np.errstate(divide="ignore"):  # log 0 = -inf: the zero leaves of the one-hot row
        log_e = topkloss.log_esf(np.log(leaves), k)  # float64, exact to rounding
    assert np.all(log_e <= bound + 1e-9)
    scaled = log_a < 0
    assert scaled.sum() >= 3 and (~scaled).sum() >= 2  # rows of both kinds
    assert np.all(log_e[scaled] >= -1e-9)
    assert np.all(log_a <= 0)


def _extreme_rows(n, k, tau, rng):
    """Rows that reach the ends of the range: m = 0 .. k - 1 classes of T far or near above c,
    the others tied at c or spread just below it, U's leaves 1 (all of U tied), e^-0.3, e^-3 or
    sparse; the label first or last."""
    rows = []
    for m in range(k):
        for top in (0.5, 5.0, 1e3):
            for base in (0.0, -0.3, -3.0, -45.0):
                s = np.full(n, base * k * tau)
                s[:m] = (top + rng.uniform(0, 1, m)) * k * tau
                s[m:k] = 0.0
                if base:
                    s[m:] += rng.uniform(0, 1e-3, n - m) * k * tau
                if base == -45.0:
                    s[k : 3 * k] = -0.5 * k * tau  # a few leaves near 1 among many that do not matter
                rows.append(s)
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("n,k", [(100, 5), (1000, 5), (144, 20), (1871, 10)])
def test_float32_far_past_the_margin(n, k):
    """Rows whose label sits far above every other class: sigmoid(r), the chain rule's
    coefficient, is 1e-40 to 1e-6, and so is the whole gradient; it stays within the contract
    relative to its largest entry. (With the coefficient folded into the trees' cotangents,
    they fell below float32's normal range first: 490 times the tolerance at 144 classes,
    k = 20, 6 times at 1000, k = 5.)"""
    rng = np.random.default_rng(n * k)
    tau = 1.0
    rows = _extreme_rows(n, k, tau, rng)
    rows = np.concatenate([rows, (rng.normal(size=(8, n)) * k).astype(np.float32)])
    for above in (5.0, 20.0, 50.0, 80.0):
        lifted = rows.copy()
        lifted[:, 0] = rows.max(axis=1) + np.float32(above * k * tau)
        _check_contract(lifted, np.zeros(rows.shape[0], dtype=np.int64), k, tau)


@pytest.mark.parametrize("n,k", [(146, 20), (1617, 20), (5000, 20), (2000, 10), (3000, 28)])
@pytest.mark.parametrize("tau", [1e-3, 1.0])
def test_float32_scaled_extremes(n, k, tau):
    """The scaled mode where it is planned, on rows at the ends of its range: the largest values
    (all of U tied at c), the smallest that matter, and T's cotangents, up to C(|U|, k) / D (its
    polynomial runs in float64: in float32 they overflowed to inf and NaN at 1617 classes, k = 20,
    when one factor scaled every row)."""
    assert smooth_svm.plan_mode(n - 1, k, double=False, float64_ok=True) == "scaled"
    s = _extreme_rows(n, k, tau, np.random.default_rng(n + k))
    for label in (0, n - 1):
        _check_contract(s, np.full(s.shape[0], label), k, tau)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_scores_equal_at_large_k(dtype):
    """Every score equal: U holds n - 1 leaves at 1 and e_k(U) = C(n - 1, k), beyond float32's
    range at k = 66, n = 133 (C(132, 66) = 3.8e38). The plan counts n - 1 leaves, not n - k
    (which planned plain float32 trees, and gave NaN): finite, and equal to float64's."""
    n, k = 133, 66
    s = np.zeros((2, n), dtype=dtype)
    value, grad = VG(s, np.array([0, n - 1]), k=k, reduction="none")
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    want, want_g = VG(s.astype(np.float64), np.array([0, n - 1]), k=k, reduction="none")
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_g, rtol=0, atol=1e-6 * np.abs(want_g).max())


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

"""smooth_topk_svm and topk_svm: brute force, gradients, backends, reductions, bad input."""

from __future__ import annotations

import functools

import types

import numpy as np
import pytest

import reference as ref
import topkloss
from backends import asarray, assert_array_type, assert_close, to_numpy
from conftest import force_level_forms, force_scan
from topkloss.core import esf, smooth_svm

VG_SMOOTH = topkloss.value_and_grad(topkloss.smooth_topk_svm)
VG_HARD = topkloss.value_and_grad(topkloss.topk_svm)


def _data(seed, batch, n, scale=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=(batch, n)), rng.integers(0, n, size=batch)


@pytest.fixture(params=["linear", "linear-stacked", "linear-lists", "linear-compact", "log", "log-compact", "linear64", "linear64-stacked", "scaled", "scaled-stacked", "scan"])
def mode(request, monkeypatch):
    """Run a test with the polynomial of U in linear space (tree levels as planned, all stacked,
    all lists, compact level sizes), in log space (power-of-two or compact level sizes), in
    linear space in float64, in linear space on leaves scaled per row (``smooth_svm._row_scaled``),
    and by prefix sums in float64 (all exact). Compact: every level
    padded to an even count only, as wide rows are (``esf.level_sizes``); small trees are
    otherwise padded to a power of two."""
    if request.param == "scan":
        force_scan(monkeypatch)
        return request.param
    plan, _, forms = request.param.partition("-")
    monkeypatch.setattr(smooth_svm, "plan_mode", lambda *a: plan)
    if forms == "compact":
        monkeypatch.setattr(esf, "PAD_SMALL", -1)
    elif forms:
        force_level_forms(monkeypatch, forms == "stacked")
    return request.param


# --- exactness against the definition (float64, brute force over subsets) -----------------------
@pytest.mark.parametrize("n", [2, 3, 5, 8])
@pytest.mark.parametrize("tau,alpha", [(1.0, 1.0), (0.3, 0.5), (4.0, 0.0), (0.05, 2.0)])
def test_values_match_brute_force(n, tau, alpha, mode):
    s, y = _data(n, 4, n)
    for k in range(1, n):
        got = topkloss.smooth_topk_svm(s, y, k=k, tau=tau, alpha=alpha, reduction="none")
        np.testing.assert_allclose(got, ref.smooth_topk_svm(s, y, k, tau, alpha), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n,k", [(2, 1), (4, 1), (5, 2), (6, 3), (7, 6)])
def test_gradient_matches_finite_differences(n, k, mode):
    s, y = _data(10 + n, 3, n)
    _, grad = VG_SMOOTH(s, y, k=k, tau=0.7, alpha=0.8, reduction="sum")
    num = ref.numerical_grad(lambda a: ref.smooth_topk_svm(a, y, k, 0.7, 0.8).sum(), s)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-9)


def test_gradient_matches_closed_form_with_inclusion_probabilities():
    """SPEC: dL/ds_i = (p/k)(pi_k(i) - pi_{k-1}(i)) for i != y, dL/ds_y = -p/k."""
    n, k, tau, alpha = 6, 3, 0.9, 1.0
    s, y = _data(3, 2, n)
    _, grad = VG_SMOOTH(s, y, k=k, tau=tau, alpha=alpha, reduction="sum")
    for b in range(2):
        others = [i for i in range(n) if i != y[b]]
        lx = s[b, others] / (k * tau)
        le = ref.log_esf(lx, k)
        r = alpha / tau + le[k] - le[k - 1] - s[b, y[b]] / (k * tau)
        p = 1 / (1 + np.exp(-r))
        for pos, i in enumerate(others):
            rest = np.delete(lx, pos)
            lr = ref.log_esf(rest, k)
            pi_k = np.exp(lx[pos] + lr[k - 1] - le[k])
            pi_k1 = np.exp(lx[pos] + lr[k - 2] - le[k - 1]) if k >= 2 else 0.0
            np.testing.assert_allclose(grad[b, i], p / k * (pi_k - pi_k1), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(grad[b, y[b]], -p / k, rtol=1e-12)


def test_k1_alpha0_tau1_is_cross_entropy(xp, dtype):
    s, y = _data(0, 16, 12, scale=3.0)
    ce = -(s[np.arange(16), y] - np.log(np.exp(s).sum(1)))
    got = topkloss.smooth_topk_svm(asarray(xp, s, dtype), asarray(xp, y), k=1, tau=1.0, alpha=0.0, reduction="none")
    assert_close(got, ce, rtol=1e-12 if dtype == xp.float64 else 1e-5, atol=1e-6)


def test_ties_and_equal_scores():
    s = np.array([[1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, 2.0, 2.0], [0.0, 3.0, 3.0, 3.0, -1.0]])
    y = np.array([2, 2, 0])
    for k in (1, 2, 3, 4):
        np.testing.assert_allclose(
            topkloss.smooth_topk_svm(s, y, k=k, tau=0.5, reduction="none"),
            ref.smooth_topk_svm(s, y, k, 0.5, 1.0),
            rtol=1e-12,
        )
        _, g = VG_SMOOTH(s, y, k=k, tau=0.5, reduction="sum")
        num = ref.numerical_grad(lambda a: ref.smooth_topk_svm(a, y, k, 0.5, 1.0).sum(), s)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)


def test_hard_loss_matches_definition_and_subgradient():
    s, y = _data(5, 20, 9)
    for k in (1, 3, 8):
        np.testing.assert_allclose(topkloss.topk_svm(s, y, k=k, alpha=0.7, reduction="none"), ref.topk_svm(s, y, k, 0.7), rtol=1e-14)
        _, g = VG_HARD(s, y, k=k, alpha=0.7, reduction="sum")
        num = ref.numerical_grad(lambda a: ref.topk_svm(a, y, k, 0.7).sum(), s)  # no ties: differentiable a.e.
        np.testing.assert_allclose(g, num, atol=1e-6)


@pytest.mark.parametrize(
    "row, label, k, tied",
    [
        ([0.0, 1.0, 1.0, 1.0, 0.0], 0, 1, [1, 2, 3]),  # three classes tie for the first place
        ([0.0, 1.0, 1.0, 1.0, 0.0], 0, 3, [1, 2, 3]),
        ([2.0, 1.0, 1.0, 1.0, 3.0], 0, 2, [1, 2, 3]),  # tied at the k-th place, one class above
        ([1.0, 1.0, 1.0, 0.0], 1, 2, [0, 2]),  # the label ties too: it is not among the others
        ([0.5, -0.0, 0.0, 2.0], 0, 2, [1, 2]),  # -0.0 and +0.0 are one score
    ],
)
def test_hard_loss_ties_share_the_subgradient(xp, dtype, row, label, k, tied):
    """Classes tied at the k-th largest of the others share +1/k equally: the same gradient on
    every backend, however its top-k orders ties."""
    s = np.array([row])
    value, grad = VG_HARD(asarray(xp, s, dtype), asarray(xp, np.array([label])), k=k, reduction="sum")
    want = np.zeros_like(s)
    want[0, tied] = 1.0 / (k * len(tied))
    want[0, label] = -1.0 / k
    assert_close(value, ref.topk_svm(s, np.array([label]), k, 1.0).sum(), rtol=1e-6, atol=0)
    assert_close(grad, want, rtol=1e-6, atol=0)


def test_hard_loss_finite_for_scores_a_float_maximum_apart(xp):
    """s_k - s_y overflows for scores near +-float max; the loss itself (here 2/3 of the
    maximum, plus alpha) is finite, and so is its gradient."""
    big = float(np.finfo(np.float32).max) * 0.9
    s = np.array([[big, big, -big, big]])
    value, grad = VG_HARD(asarray(xp, s, xp.float32), asarray(xp, np.array([2])), k=3, reduction="none")
    assert_close(value, [2 * big / 3], rtol=1e-6, atol=0)
    assert_close(grad, [[1 / 9, 1 / 9, -1 / 3, 1 / 9]], rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype,big", [("float32", 2e38), ("float64", 1e308)])
@pytest.mark.parametrize("tau", [1e-3, 1.0, 1e3])
def test_smooth_loss_finite_for_scores_a_float_maximum_apart(xp, dtype, big, tau):
    """s_y - c overflows where the label's score is -big and the k-th largest other is +big;
    the loss, about (c - s_y) / k = big (k = 2) plus alpha and a term below tau log 6, is finite.
    The gradient: 1/(2k) at each of the two top classes, -1/k at y (sigma(r) = 1)."""
    dt = getattr(np, dtype)
    big = float(dt(big))
    s = np.array([[big, big, -big, 0.0, 0.0]])
    value, grad = VG_SMOOTH(asarray(xp, s, getattr(xp, dtype)), asarray(xp, np.array([2])), k=2, tau=tau, reduction="none")
    assert_close(value, [big], rtol=1e-6 if dtype == "float32" else 1e-12, atol=0)
    assert_close(grad, [[0.25, 0.25, -0.5, 0.0, 0.0]], rtol=1e-6, atol=1e-30)


def test_smooth_tends_to_hard_as_tau_goes_to_zero():
    """-tau log C(n-1, k-1) <= L_tau - l <= tau log C(n, k).

    Each of the two log-sum-exps of the definition exceeds its max term (whose difference
    is the hard loss) by at most tau times the log of its number of subsets.
    """
    from math import comb, log

    s, y = _data(7, 30, 10)
    hard = topkloss.topk_svm(s, y, k=3, reduction="none")
    for tau in (1.0, 0.1, 0.01, 1e-3):
        gap = topkloss.smooth_topk_svm(s, y, k=3, tau=tau, reduction="none") - hard
        assert np.all(gap >= -tau * log(comb(9, 2)) - 1e-12) and np.all(gap <= tau * log(comb(10, 3)) + 1e-12)
        assert np.max(np.abs(gap)) > tau / 100  # the bounds are not vacuous: the gap is of order tau


# --- invariances ---------------------------------------------------------------------------------
def test_shift_invariance_and_rows_of_gradient_sum_to_zero(xp):
    s, y = _data(2, 8, 20)
    v1, g1 = VG_SMOOTH(asarray(xp, s, xp.float64), asarray(xp, y), k=4, reduction="none")
    v2, g2 = VG_SMOOTH(asarray(xp, s + 123.25, xp.float64), asarray(xp, y), k=4, reduction="none")
    assert_close(v2, to_numpy(v1), rtol=1e-12)
    assert_close(g2, to_numpy(g1), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(to_numpy(g1).sum(axis=1), 0.0, atol=1e-15)


def test_inputs_are_not_modified(xp):
    s, y = _data(3, 4, 9)
    a, b = asarray(xp, s), asarray(xp, y)
    VG_SMOOTH(a, b, k=3)
    topkloss.smooth_topk_svm(a, b, k=3)
    np.testing.assert_array_equal(to_numpy(a), s)
    np.testing.assert_array_equal(to_numpy(b), y)


# --- every backend agrees, in its own array type and dtype ----------------------------------------
@functools.cache
def _agree_case():
    """Inputs (float32-representable, the same for every dtype) and their brute-force losses."""
    s, y = _data(4, 6, 12)
    s = s.astype(np.float32).astype(np.float64)
    return s, y, ref.smooth_topk_svm(s, y, 5, 1.0, 1.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_backends_agree(xp, dtype, reduction):
    s, y, want = _agree_case()
    want = {"mean": want.mean(), "sum": want.sum(), "none": want}[reduction]
    a = asarray(xp, s, dtype)
    value, grad = VG_SMOOTH(a, asarray(xp, y), k=5, reduction=reduction)
    plain = topkloss.smooth_topk_svm(a, asarray(xp, y), k=5, reduction=reduction)
    for out in (value, plain):
        assert_array_type(out, xp)
        assert out.dtype == dtype
        assert_close(out, want, rtol=1e-12 if dtype == xp.float64 else 1e-5, atol=1e-6)
    assert grad.dtype == dtype and tuple(grad.shape) == (6, 12)
    g64 = VG_SMOOTH(s, y, k=5, reduction=reduction)[1]
    assert_close(grad, g64, rtol=0, atol=1e-12 if dtype == xp.float64 else 1e-6)


@pytest.mark.parametrize("k", [10, 20])
def test_scaled_plan_backends_agree(xp, k):
    """float32 at 4 x 2000, k = 10 and 20: linear space on leaves scaled per row wherever float64
    tables exist (every backend here; JAX with x64 inside), against NumPy's float64. (Eager torch
    takes prefix sums up to 1800 classes at k = 20: 2000 builds the tree.)"""
    s, y = _data(7, 4, 2000)
    s = s.astype(np.float32)
    assert smooth_svm.plan_mode(2000 - k, k, double=False, float64_ok=True) == "scaled"
    value, grad = VG_SMOOTH(asarray(xp, s, xp.float32), asarray(xp, y), k=k, reduction="none")
    want, g64 = VG_SMOOTH(s.astype(np.float64), y, k=k, reduction="none")
    assert_close(value, want, rtol=1e-5, atol=1e-6)
    assert_close(grad, g64, rtol=0, atol=1e-6 * float(np.abs(g64).max()))


def test_hard_loss_backends_agree(xp, dtype):
    s, y = _data(6, 6, 30)
    want = ref.topk_svm(s.astype(np.float32).astype(np.float64), y, 5, 1.0)
    got = topkloss.topk_svm(asarray(xp, s, dtype), asarray(xp, y), k=5, reduction="none")
    assert_array_type(got, xp)
    assert_close(got, want, rtol=1e-12 if dtype == xp.float64 else 1e-6, atol=1e-6)


def test_empty_batch_gives_zero_mean():
    s, y = np.zeros((0, 5)), np.zeros((0,), dtype=np.int64)
    assert topkloss.smooth_topk_svm(s, y, k=2) == 0.0
    assert topkloss.smooth_topk_svm(s, y, k=2, reduction="none").shape == (0,)
    value, grad = VG_SMOOTH(s, y, k=2)
    assert value == 0.0 and grad.shape == (0, 5)


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(k=0), ValueError, r"k must be in \[1, 4\]"),
        (dict(k=5), ValueError, r"k must be in \[1, 4\]"),
        (dict(k=2.5), TypeError, "k must be an integer"),
        (dict(tau=0.0), ValueError, "tau must be > 0"),
        (dict(tau=-1.0), ValueError, "tau must be > 0"),
        (dict(tau=float("nan")), ValueError, "tau must be finite"),
        (dict(alpha="1"), TypeError, "alpha must be a real number"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
    ],
)
def test_bad_parameters(kwargs, exc, match):
    s, y = _data(0, 3, 5)
    params = dict(k=2) | kwargs
    with pytest.raises(exc, match=match):
        topkloss.smooth_topk_svm(s, y, **params)


def test_bad_arrays():
    s, y = _data(0, 3, 5)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\]"):
        topkloss.smooth_topk_svm(s, np.array([0, 5, 1]), k=2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\]"):
        topkloss.topk_svm(s, np.array([0, -1, 1]), k=2)
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        topkloss.smooth_topk_svm(s, y.astype(float), k=2)
    with pytest.raises(ValueError, match="scores must be a 2-D array"):
        topkloss.smooth_topk_svm(s[0], y, k=2)
    with pytest.raises(ValueError, match="labels must be a 1-D array"):
        topkloss.smooth_topk_svm(s, y[:, None], k=2)
    with pytest.raises(ValueError, match="labels must have one entry per row of scores"):
        topkloss.smooth_topk_svm(s, y[:2], k=2)
    with pytest.raises(TypeError, match="scores must have a real floating dtype"):
        topkloss.smooth_topk_svm(s.astype(np.int64), y, k=2)
    with pytest.raises(TypeError, match="scores, labels must be arrays of one array library"):
        import array_api_strict as xs

        topkloss.smooth_topk_svm(xs.asarray(s), y, k=2)
    with pytest.raises(TypeError, match="loss_fn must be a differentiable function of topkloss"):
        topkloss.value_and_grad(np.sum)


def test_value_checks_switch():
    s, y = _data(0, 3, 5)
    bad = np.array([0, 9, 1])
    with topkloss.value_checks(False):  # not checked: the caller vouches for the labels
        try:
            topkloss.smooth_topk_svm(s, bad, k=2)
        except IndexError:  # what the backend's gather does with them is undefined
            pass
    with pytest.raises(ValueError, match="labels must be in"):
        topkloss.smooth_topk_svm(s, bad, k=2)


@pytest.mark.parametrize("label_dtype", ["int32", "int64", "uint8", "int16"])
def test_label_dtypes(label_dtype):
    s, y = _data(8, 4, 300)
    want = topkloss.smooth_topk_svm(s, y % 256, k=3, reduction="none")
    got = topkloss.smooth_topk_svm(s, (y % 256).astype(label_dtype), k=3, reduction="none")
    np.testing.assert_array_equal(got, want)


def test_native_top_k_delegation_agrees_with_standard_fallback(xp, monkeypatch):
    """torch.topk / jax.lax.top_k / numpy.argpartition against the standard-only O(nk) selection."""
    from topkloss.core import ops

    s, y = _data(9, 7, 40)
    s[0, :6] = 1.5  # ties among the top classes
    a, b = asarray(xp, s, xp.float64), asarray(xp, y)
    native = VG_SMOOTH(a, b, k=5, reduction="none")
    vals, idx = ops.top_k(xp, a, 5)
    ref_vals, ref_idx = ops.top_k_standard(xp, a, 5)
    assert_close(vals, to_numpy(ref_vals), rtol=0)
    monkeypatch.setattr(ops, "_native_top_k", lambda xp: None)
    standard = VG_SMOOTH(a, b, k=5, reduction="none")
    assert_close(native[0], to_numpy(standard[0]), rtol=1e-13)
    assert_close(native[1], to_numpy(standard[1]), rtol=1e-10, atol=1e-15)


def test_results_stay_on_the_input_device():
    """array-api-strict has several (simulated) devices: every result lives on the input's."""
    xs = pytest.importorskip("array_api_strict")
    dev = xs.Device("device1")
    s, y = _data(11, 3, 8)
    a, b = xs.asarray(s, device=dev), xs.asarray(y, device=dev)
    value, grad = VG_SMOOTH(a, b, k=3)
    assert value.device == dev and grad.device == dev
    assert topkloss.topk_svm(a, b, k=3).device == dev
    assert topkloss.log_esf(a, 3).device == dev


# --- the polynomials by prefix sums (eager torch, CuPy on a GPU) against the tree -----------------------
@pytest.mark.parametrize("case", ["random", "ties", "spread"])
@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_prefix_sums_and_tree_agree_through_autograd(monkeypatch, case, k):
    """Eager torch takes the polynomials by prefix sums (``smooth_svm.scan_applies``); forced
    onto the tree, the same loss and ``backward()`` gradient, float32 and float64 inputs."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(k)
    s = rng.normal(scale=3.0, size=(16, 30))
    if case == "ties":  # integer scores: ties at and across the k-th place
        s = rng.integers(0, 3, size=(16, 30)).astype(np.float64)
    elif case == "spread":  # top classes 1e3 above the rest
        s[:, :4] += 1e3
    y = rng.integers(0, 30, size=16)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        out = {}
        for form in (True, False):
            calls = []
            monkeypatch.setattr(smooth_svm, "scan_applies", lambda xp, s, k, mode, form=form: calls.append(1) or form)
            a = torch.tensor(s, dtype=dtype, requires_grad=True)
            loss = topkloss.smooth_topk_svm(a, torch.tensor(y), k=k, tau=0.5, reduction="none")
            loss.sum().backward()
            out[form] = (loss.detach().numpy(), a.grad.numpy())
            assert calls
        (l_scan, g_scan), (l_tree, g_tree) = out[True], out[False]
        np.testing.assert_allclose(l_scan, l_tree, rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(g_scan, g_tree, rtol=0, atol=rtol * np.abs(g_tree).max())
    assert np.any(g_scan != 0)


def test_which_form_takes_the_polynomials():
    """Prefix sums on eager torch on a CPU up to max(SCAN_N_MIN, SCAN_N_PER_K k) classes where the
    linear space is exact; on CUDA (torch, CuPy) also float32 batches of up to
    SCAN_ACCELERATOR_MAX entries; the tree on NumPy, JAX and the standard-only path, on wider
    rows, in log space, on other accelerators and under torch.compile."""
    from topkloss.adapters import namespace

    torch = pytest.importorskip("torch")

    def scan(x, k, mode="linear"):
        return smooth_svm.scan_applies(namespace(x), x, k, mode)

    widest = lambda k: max(smooth_svm.SCAN_N_MIN, smooth_svm.SCAN_N_PER_K * k)
    for k in (5, 20):
        assert scan(torch.zeros(2, widest(k)), k) and not scan(torch.zeros(2, widest(k) + 1), k)
    assert widest(20) > widest(5)
    assert not scan(torch.zeros(2, 100), 5, mode="log")
    most = smooth_svm.SCAN_ACCELERATOR_MAX
    with pytest.MonkeyPatch.context() as mp:  # a CUDA tensor, as far as the policy can tell
        mp.setattr(smooth_svm, "on_accelerator", lambda x: True)
        mp.setattr(smooth_svm, "_device", lambda x: torch.device("cuda"))  # as _on_cuda reads it
        meta = lambda *shape, dtype=torch.float32: torch.empty(*shape, dtype=dtype, device="meta")
        assert scan(meta(2, 100), 5) and scan(meta(1, most), 5) and scan(meta(4, most // 4), 20)
        assert not scan(meta(1, most + 1), 5) and not scan(meta(64, 100_000), 5)  # memory: the tree
        assert scan(meta(2, widest(5), dtype=torch.float64), 5)  # float64: the CPU's widths
        assert not scan(meta(2, widest(5) + 1, dtype=torch.float64), 5)
        assert not scan(meta(2, 100), 5, mode="log")
        mp.setattr(smooth_svm, "_device", lambda x: torch.device("mps"))  # no float64 there
        assert not scan(meta(2, 100), 5)
    cupy_like = types.SimpleNamespace(**{**vars(namespace(np.zeros(1))), "__name__": "array_api_compat.cupy"})
    with pytest.MonkeyPatch.context() as mp:  # CuPy arrays, as far as the policy can tell
        mp.setattr(smooth_svm, "on_accelerator", lambda x: True)
        assert smooth_svm.scan_applies(cupy_like, np.zeros((4, 5000), np.float32), 5, "linear")
        assert not smooth_svm.scan_applies(cupy_like, np.zeros((4, 5000)), 5, "linear")
        assert not smooth_svm.scan_applies(cupy_like, np.zeros((64, 100_000), np.float32), 5, "linear")
    assert not smooth_svm.scan_applies(cupy_like, np.zeros((2, 100), np.float32), 5, "linear")  # a host
    assert not scan(np.zeros((2, 100)), 5)
    from conftest import available

    assert not scan(available("array_api_strict").zeros((2, 100)), 5)
    jnp = pytest.importorskip("jax.numpy")
    assert not scan(jnp.zeros((2, 100)), 5)
    seen = []
    torch._dynamo.reset()
    torch.compile(lambda x: seen.append(scan(x, 5)) or x, fullgraph=True, backend="eager")(torch.zeros(2, 100))
    assert seen == [False]


def test_jax_on_a_cpu_builds_wide_trees_nodes_last():
    """Under XLA on a CPU, rows of NODES_LAST_MIN classes and more take nodes-last trees while every
    level of the tree is a list (k <= 20 in linear space, any k in log space); narrower rows
    and NumPy keep nodes first. The values are the same either way."""
    from topkloss.adapters import namespace

    jnp = pytest.importorskip("jax.numpy")
    wide = smooth_svm.NODES_LAST_MIN

    def last(x, k):
        return smooth_svm._plan(namespace(x), x, k)[3]

    assert last(jnp.zeros((4, wide), dtype=jnp.float32), 5) and not last(jnp.zeros((4, wide - 1), dtype=jnp.float32), 5)
    assert last(jnp.zeros((4, wide), dtype=jnp.float32), 20)
    assert not last(np.zeros((4, wide), dtype=np.float32), 5)
    import jax

    rng = np.random.default_rng(0)
    s = rng.normal(size=(4, wide)).astype(np.float32) * 3
    y = rng.integers(0, wide, size=4)
    for k in (5, 10):  # linear and log space at this width
        f = jax.jit(jax.value_and_grad(lambda a: topkloss.smooth_topk_svm(a, jnp.asarray(y), k=k, reduction="sum")))
        value, grad = f(jnp.asarray(s))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(smooth_svm, "NODES_LAST_MIN", wide + 1)  # nodes first, as before
            value_f, grad_f = jax.jit(jax.value_and_grad(lambda a: topkloss.smooth_topk_svm(a, jnp.asarray(y), k=k, reduction="sum")))(jnp.asarray(s))
        np.testing.assert_allclose(float(value), float(value_f), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(grad_f), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch, wide", [(256, 1000), (64, 2817)], ids=["copy-padded", "tree-padded"])
def test_torch_on_a_cpu_builds_wide_trees_nodes_last(batch, wide):
    """Eager torch on a CPU builds list-only trees (k <= 6) of rows of NODES_LAST_MIN classes and
    more nodes last, the in-place halves included (a row of 1000 classes at batch 256 has halves of
    FMA_HALVES_MIN entries and more); k = 7 has stacked levels and keeps nodes first. The loss and
    gradient equal those of nodes first, and of NumPy in float64; the gradient is one contiguous
    array. Both ways to pad the leaves: in the scores' copy (esf.padded_leaves, 1000 -> 1024) and,
    where a tree of the padded count would be padded further, by the tree (2817 at batch 64)."""
    from topkloss.adapters import namespace
    from topkloss.core import esf, ops

    torch = pytest.importorskip("torch")
    assert wide >= smooth_svm.NODES_LAST_MIN
    assert (esf.padded_leaves(wide, batch) > wide) == (wide == 1000)
    assert esf.level_sizes(wide, batch)[0] > wide  # padded either way

    def last(x, k):
        return smooth_svm._plan(namespace(x), x, k)[3]

    assert last(torch.zeros(4, wide), 6) and not last(torch.zeros(4, wide), 7)
    assert not last(torch.zeros(4, smooth_svm.NODES_LAST_MIN - 1), 5)
    rng = np.random.default_rng(1)
    assert batch * (wide // 2) >= ops.FMA_HALVES_MIN  # the leaves level: halves of half the row
    s = rng.normal(size=(batch, wide)) * 3
    y = rng.integers(0, wide, size=batch)

    def run(dtype, k=5):
        t = torch.tensor(s, dtype=dtype, requires_grad=True)
        topkloss.smooth_topk_svm(t, torch.tensor(y), k=k, reduction="sum").backward()
        return t.grad.numpy().astype(np.float64)

    grad_last = run(torch.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(smooth_svm, "NODES_LAST_MIN", wide + 1)
        grad_first = run(torch.float32)
    np.testing.assert_allclose(grad_last, grad_first, rtol=1e-5, atol=1e-7)
    for k in (5, 2, 1):  # k = 1: a tree of degree 1, whose backward multiplies by the leaves apart
        assert last(torch.zeros(batch, wide), k)
        _, want = topkloss.value_and_grad(topkloss.smooth_topk_svm)(s, y, k=k, reduction="sum")
        np.testing.assert_allclose(run(torch.float64, k), want, rtol=1e-12, atol=1e-15)
    _, grad = topkloss.value_and_grad(topkloss.smooth_topk_svm)(torch.tensor(s, dtype=torch.float32), torch.tensor(y), k=5)
    assert grad.is_contiguous() and grad.shape == (batch, wide)

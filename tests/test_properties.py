r"""Property-based tests (hypothesis) of every loss, on every backend.

- shift invariance: adding a constant to a row changes neither the loss nor its gradient;
- the gradient's rows sum to 0;
- permutation equivariance: permuting the classes (and relabelling) permutes the gradient;
- finite output (and gradient) for finite input in float16, bfloat16, float32 and float64,
  half precision computed in float32 and returned in the input dtype;
- smooth top-k SVM: k=1, alpha=0, tau=1 is cross-entropy, and the tau -> 0 limit is the hard
  top-k SVM within the bound derived below;
- log_esf: adding c to every variable adds j*c to log e_j, and d log e_j / dx sums to j.

The tau -> 0 bound. Write the smooth loss over k-subsets A with m_A = (1/k) sum_{j in A} s_j:
L_tau = tau LSE_A((alpha[y not in A] + m_A)/tau) - tau LSE_{A : y in A}(m_A / tau), and
l = F1 - F2 with F1, F2 the maxima of the two sets. Since max <= tau LSE(v/tau) <= max +
tau log(count), with a = e^{F1'/tau} (the best subset without y, margin included), b =
e^{F2/tau}: L_tau = tau log(1 + S1/S2), S1 in [a, C(n-1,k) a], S2 in [b, C(n-1,k-1) b], and
l = max(0, tau log(a/b)). Hence

    -tau log C(n-1, k-1)  <=  L_tau - l  <=  tau log(1 + C(n-1, k)).

The lower bound is attained (all scores equal, alpha/tau -> inf: L_tau - l -> -tau log(n-1
choose k-1)... for n=3, k=2, exactly -tau log 2), so the naive "0 <= L_tau - l" is false for
k >= 2; for k = 1 the lower bound is 0 and L_tau >= l.

Hypothesis runs derandomized (a fixed seed: the same examples on every run and in CI),
without a database, with example counts sized per backend: eager JAX compiles each new
shape, so it gets fixed shapes and fewer examples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import topkloss
from backends import asarray, name_of, to_numpy
from conftest import available
from loss_table import ALL, LOSSES, ids

BASE = [e for e in ALL if not e.variant]  # one entry per function where extra arrays change nothing
BASE_LOSSES = [e for e in LOSSES if not e.variant]

EXAMPLES = {"numpy": 12, "array_api_strict": 5, "torch": 8, "jax": 4, "cupy": 8}
# shapes: (batch, n) per backend; JAX eager compiles once per shape and k, so it gets one
SHAPES = {"jax": ((4,), (6,))}
DEFAULT_SHAPES = ((1, 2, 3, 4), (3, 4, 5, 6, 8))


def _settings(xp, factor=1.0):
    return settings(
        max_examples=max(2, int(EXAMPLES[name_of(xp)] * factor)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def _check(xp, test, factor=1.0):
    """Run the hypothesis ``test(data)`` with the settings of backend ``xp``."""
    given(st.data())(_settings(xp, factor)(test))()


# ---------------------------------------------------------------- strategies

GRID = 8  # scores on a grid of 1/8: sums, differences and shifts below 2**20 are exact in float32


def _draw_shape(data, xp, min_n=3):
    batches, ns = SHAPES.get(name_of(xp), DEFAULT_SHAPES)
    b = data.draw(st.sampled_from(batches), label="batch")
    n = data.draw(st.sampled_from([n for n in ns if n >= min_n] or [max(ns)]), label="n")
    return b, n


def _draw_k(data, xp, entry, n):
    if name_of(xp) == "jax":  # one k: one compilation
        return entry.params.get("k", 2)
    return data.draw(st.integers(1, n - 1), label="k")


def _grid_scores(data, b, n, span=64, unique=False):
    ints = hnp.arrays(np.int64, (b, n), elements=st.integers(-span * GRID, span * GRID), unique=unique)
    return data.draw(ints, label="scores") / GRID


def _labels(data, b, n):
    return np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=b, max_size=b), label="labels"), dtype=np.int64)


def _params(entry, k, **extra):
    p = dict(entry.params)
    p["k"] = k
    p.update(extra)
    return p


def _extras(entry, data, b, n):
    seed = data.draw(st.integers(0, 2**32 - 1), label="extras seed")
    return entry.arrays(np.random.default_rng(seed), b, n)


def _value_and_grad(entry, xp, s, y, extras, dtype, **params):
    """(value, grad) as float64 NumPy; grad None for a metric."""
    S, Y = asarray(xp, s, dtype), asarray(xp, y)
    if not entry.differentiable:
        return to_numpy(entry.call(xp, S, Y, extras, dtype=dtype, **params)).astype(np.float64), None
    v, g = entry.value_and_grad(xp, S, Y, extras, **params)
    return to_numpy(v).astype(np.float64), to_numpy(g).astype(np.float64)


def _as64(xp, x):
    """Any backend's array (bfloat16 included) as a float64 NumPy array."""
    return to_numpy(xp.astype(x, xp.float64))


def _none(entry):
    return {"reduction": "none"} if "none" in entry.reductions else {}


# ---------------------------------------------------------------- shift invariance

@pytest.mark.parametrize("entry", BASE, ids=ids(BASE))
def test_shift_invariance(xp, dtype, entry):
    """loss(s + c) == loss(s) with one c per row, up to large offsets (|c| <= 1e4).

    Scores and shifts lie on a grid of 1/8, so s + c is exact in float32 too: the two calls see
    the same values up to the offset. Tolerance: twice the float32 contract (each result is
    within 1e-5 relative / 1e-6 absolute of float64); float64 results agree to rounding."""
    f32 = to_numpy(asarray(xp, np.zeros(1), dtype)).dtype == np.float32
    entry.fn  # skip now if not implemented
    _skip_eager_jax_float32(xp, f32)

    def test(data):
        b, n = _draw_shape(data, xp)
        k = _draw_k(data, xp, entry, n)
        s, y = _grid_scores(data, b, n), _labels(data, b, n)
        c = data.draw(hnp.arrays(np.int64, (b, 1), elements=st.integers(-10**4 * GRID, 10**4 * GRID)), label="shift") / GRID
        extras = _extras(entry, data, b, n)
        params = _params(entry, k, **_none(entry))
        v0, g0 = _value_and_grad(entry, xp, s, y, extras, dtype, **params)
        v1, g1 = _value_and_grad(entry, xp, s + c, y, extras, dtype, **params)
        rtol, atol = (2e-5, 2e-6) if f32 else (1e-12, 1e-12)
        np.testing.assert_allclose(v1, v0, rtol=rtol, atol=atol)
        if g0 is not None:
            np.testing.assert_allclose(g1, g0, rtol=0, atol=_grad_tol(entry, s, k, g0, f32, 2))

    _check(xp, test, 0.5 if f32 else 1.0)


def _skip_eager_jax_float32(xp, f32):
    """Eager JAX compiles every operation once per dtype (seconds per loss): float32 JAX runs in
    the finite-output and cross-entropy properties, float32 maths everywhere on the others."""
    if f32 and name_of(xp) == "jax":
        pytest.skip("float32 on eager JAX: covered by test_finite_for_finite_input and the CE property")


def _grad_tol(entry, s, k, g, f32, copies=1):
    """The contract's gradient tolerance per row: 1e-5 (1 + R) of the row's largest entry in
    float32, R = (max - min of the row) / (k tau); rounding in float64."""
    scale = np.abs(g).max(axis=-1, keepdims=True) + 1e-300
    if not f32:
        return copies * 1e-12 * scale.max()
    tau = entry.params.get("tau", 1.0)
    r = (s.max(axis=-1, keepdims=True) - s.min(axis=-1, keepdims=True)) / (k * tau)
    return (copies * 1e-5 * (1 + r) * scale).max()


# ---------------------------------------------------------------- gradient rows sum to zero

@pytest.mark.parametrize("entry", BASE_LOSSES, ids=ids(BASE_LOSSES))
def test_gradient_rows_sum_to_zero(xp, dtype, entry):
    """Shift invariance, differentiated: every row of the gradient sums to 0 (to rounding of
    the n entries, each within the contract's tolerance in float32)."""
    f32 = to_numpy(asarray(xp, np.zeros(1), dtype)).dtype == np.float32
    entry.fn
    _skip_eager_jax_float32(xp, f32)

    def test(data):
        b, n = _draw_shape(data, xp)
        k = _draw_k(data, xp, entry, n)
        scale = data.draw(st.sampled_from([1.0, 10.0, 1e3]), label="scale")
        s = data.draw(hnp.arrays(np.float64, (b, n), elements=st.floats(-1, 1)), label="scores") * scale
        s = to_numpy(asarray(xp, s, dtype)).astype(np.float64)  # the values the backend sees
        y = _labels(data, b, n)
        extras = _extras(entry, data, b, n)
        _, g = _value_and_grad(entry, xp, s, y, extras, dtype, **_params(entry, k, **_none(entry)))
        tol = _grad_tol(entry, s, k, g, f32) * n
        assert np.all(np.abs(g.sum(axis=-1)) <= tol), (g.sum(axis=-1), tol)

    _check(xp, test, 0.5 if f32 else 1.0)


# ---------------------------------------------------------------- permutation equivariance

@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_permutation_equivariance(xp, entry):
    """Permuting the classes (columns of the scores and of every per-class argument) and
    relabelling gives the same per-sample values and the permuted gradient. Scores are
    distinct, so which class is the k-th largest does not depend on the order of the
    classes."""
    entry.fn

    def test(data):
        b, n = _draw_shape(data, xp)
        k = _draw_k(data, xp, entry, n)
        s, y = _grid_scores(data, b, n, unique=True), _labels(data, b, n)
        perm = np.asarray(data.draw(st.permutations(range(n)), label="perm"))
        extras = _extras(entry, data, b, n)
        pextras = {name: (a[..., perm] if entry.extras[name].class_axis else a) for name, a in extras.items()}
        inverse = np.argsort(perm)  # class perm[j] moves to column j
        params = _params(entry, k, **_none(entry))
        v0, g0 = _value_and_grad(entry, xp, s, y, extras, xp.float64, **params)
        v1, g1 = _value_and_grad(entry, xp, s[:, perm], inverse[y], pextras, xp.float64, **params)
        np.testing.assert_allclose(v1, v0, rtol=1e-12, atol=1e-12)
        if g0 is not None:
            np.testing.assert_allclose(g1, g0[:, perm], rtol=0, atol=1e-12 * (1 + np.abs(g0).max()))

    _check(xp, test)


# ---------------------------------------------------------------- finite in every dtype

FLOATS = [("numpy", "float16"), ("torch", "float16"), ("torch", "bfloat16"), ("jax", "float16"),
          ("jax", "bfloat16"), ("numpy", "float32"), ("torch", "float32"), ("jax", "float32"),
          ("numpy", "float64"), ("torch", "float64"), ("jax", "float64"), ("array_api_strict", "float32"),
          ("array_api_strict", "float64")]
LIMITS = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": 3.4028234663852886e38,
          "float64": 1.7976931348623157e308}


@pytest.mark.parametrize("entry", BASE, ids=ids(BASE))
@pytest.mark.parametrize("backend, dtype_name", FLOATS, ids=[f"{b}-{d}" for b, d in FLOATS])
def test_finite_for_finite_input(backend, dtype_name, entry):
    """Any finite scores with |s| <= max/4 of the dtype (so the loss itself, about
    alpha + spread/k, is representable) give a finite loss and gradient, in the input dtype.
    Half precision is computed in float32: the result equals the float32 result rounded."""
    xp = available(backend)
    dtype = getattr(xp, dtype_name)
    half = dtype_name in ("float16", "bfloat16")
    limit = LIMITS[dtype_name] / 4
    entry.fn

    def test(data):
        b, n = _draw_shape(data, xp)
        k = _draw_k(data, xp, entry, n)
        magnitude = data.draw(st.sampled_from([1.0, 1e2, 1e4, limit]), label="magnitude")
        s = data.draw(hnp.arrays(np.float64, (b, n), elements=st.floats(-1, 1)), label="unit scores") * magnitude
        y = _labels(data, b, n)
        # extra arrays rounded to the dtype first, so the float32 computation sees the same values
        extras = {name: _as64(xp, asarray(xp, a, dtype)) for name, a in _extras(entry, data, b, n).items()}
        S, Y = asarray(xp, s, dtype), asarray(xp, y)
        params = _params(entry, k, **_none(entry))
        if "tau" in params:  # the contract's range of temperatures
            params["tau"] = data.draw(st.sampled_from([1.0, 1e-3, 1e3]), label="tau")
        # the sum of n_samples values near max/2 overflows: pinned by test_noised_hinge_extreme_spread
        assume(not (entry.name == "noised_topk_hinge" and magnitude == limit))
        out = entry.call(xp, S, Y, extras, dtype=dtype, **params)
        assert out.dtype == dtype
        assert np.all(np.isfinite(_as64(xp, out))), (s, _as64(xp, out))
        if half:  # computed in float32, rounded once at the end
            want = entry.call(xp, xp.astype(S, xp.float32), Y, extras, dtype=xp.float32, **params)
            np.testing.assert_array_equal(_as64(xp, out), _as64(xp, xp.astype(want, dtype)))
        if entry.differentiable:
            _, g = entry.value_and_grad(xp, S, Y, extras, **params)
            assert g.dtype == dtype
            assert np.all(np.isfinite(_as64(xp, g))), (s, _as64(xp, g))

    _check(xp, test, 0.6)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_noised_hinge_extreme_spread(dtype_name):
    """Regression: the mean over the draws summed first and overflowed at |s| ~ max/4."""
    fn = getattr(topkloss, "noised_topk_hinge", None)
    if fn is None:
        pytest.skip("noised_topk_hinge not implemented yet")
    m = LIMITS[dtype_name] / 4
    dt = getattr(np, dtype_name)
    s, y = np.array([[-m, m, m]], dtype=dt), np.array([0])
    out = fn(s, y, k=1, epsilon=0.5, noise=np.zeros((1, 5, 3), dtype=dt), reduction="none")
    np.testing.assert_allclose(out, [1.0 + 2 * m], rtol=1e-6)


# ---------------------------------------------------------------- smooth top-k SVM specifics

@pytest.mark.parametrize("backend, dtype_name", [("numpy", "float64"), ("numpy", "float32"), ("torch", "bfloat16")])
def test_smooth_svm_extreme_spread_small_tau(backend, dtype_name):
    """Regression: spread / (k tau) beyond the float range (tau = 1e-3, |s| ~ max/4) used to
    overflow to an infinite loss; the exact loss, about alpha + spread / k, is representable."""
    xp = available(backend)
    m = LIMITS[dtype_name] / 4
    s = asarray(xp, np.array([[m, -m, 0.0, m / 2]]), getattr(xp, dtype_name))
    y = asarray(xp, np.array([1]))
    out = topkloss.smooth_topk_svm(s, y, k=2, tau=1e-3)
    hard = topkloss.topk_svm(s, y, k=2)
    np.testing.assert_allclose(_as64(xp, out), _as64(xp, hard), rtol=1e-2)

def _log_comb(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def test_smooth_svm_tends_to_hard_svm_within_the_bound(xp):
    """-tau log C(n-1,k-1) <= L_tau - l <= tau log(1 + C(n-1,k)) (module docstring), for tau
    from 1e-3 to 10; so L_tau -> l linearly in tau."""
    smooth, hard = topkloss.smooth_topk_svm, topkloss.topk_svm

    def test(data):
        b, n = _draw_shape(data, xp)
        k = _draw_k(data, xp, LOSSES[0], n)
        tau = data.draw(st.sampled_from([1e-3, 1e-2, 0.1, 1.0, 10.0]), label="tau")
        alpha = data.draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]), label="alpha")
        s = data.draw(hnp.arrays(np.float64, (b, n), elements=st.floats(-10, 10)), label="scores")
        y = _labels(data, b, n)
        S, Y = asarray(xp, s, xp.float64), asarray(xp, y)
        L = to_numpy(smooth(S, Y, k=k, tau=tau, alpha=alpha, reduction="none"))
        l = to_numpy(hard(S, Y, k=k, alpha=alpha, reduction="none"))
        slack = 1e-12 * (1 + np.abs(l))
        lower = -tau * _log_comb(n - 1, k - 1)
        upper = tau * math.log1p(math.exp(_log_comb(n - 1, k)))
        assert np.all(L - l >= lower - slack), (L - l, lower)
        assert np.all(L - l <= upper + slack), (L - l, upper)

    _check(xp, test)


def test_smooth_svm_can_be_below_the_hard_loss():
    """The lower bound is attained: n=3, k=2, equal scores, alpha=1, tau=0.1 gives
    L_tau = tau log(1 + e^{alpha/tau} C(2,2)/C(2,1)) = l - tau log 2 + O(e^{-10})."""
    s, y = np.zeros((1, 3)), np.array([0])
    L = topkloss.smooth_topk_svm(s, y, k=2, tau=0.1, alpha=1.0, reduction="none")
    l = topkloss.topk_svm(s, y, k=2, alpha=1.0, reduction="none")
    np.testing.assert_allclose(L - l, [0.1 * math.log1p(math.exp(10) / 2) - 1.0], rtol=1e-12)
    assert float(L[0] - l[0]) < -0.9 * 0.1 * math.log(2)


def _ce(s, y):
    m = s.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True)))[:, 0]
    p = np.exp(s - m)
    p /= p.sum(axis=-1, keepdims=True)
    g = p.copy()
    rows = np.arange(len(y))
    g[rows, y] = 0.0
    g[rows, y] = -g.sum(axis=-1)  # p_y - 1 = -(the others' mass): no cancellation when p_y -> 1
    return lse - s[rows, y], g


CE_CASES = [("smooth_topk_svm", dict(k=1, tau=1.0, alpha=0.0)), ("topk_transition", dict(k=1, weight="adaptive")),
            ("topk_transition", dict(k=1, weight=0.7))]
def test_transition_fixed_weight_label_gradient_float32(xp):
    """The label's gradient -(1 - p_y) for p_y -> 1, formed without cancellation (was a pinned bug)."""
    fn = getattr(topkloss, "topk_transition", None)
    if fn is None:
        pytest.skip("topk_transition not implemented yet")
    s, y = np.array([[30.0, 0.0, 0.0]]), np.array([0])
    _, g = topkloss.value_and_grad(fn)(asarray(xp, s, xp.float32), asarray(xp, y), k=1, weight=0.7)
    _, want = _ce(s, y)
    np.testing.assert_allclose(to_numpy(g), want, rtol=1e-5)


@pytest.mark.parametrize("name, params", CE_CASES, ids=[f"{n}-{p.get('weight', '')}" for n, p in CE_CASES])
def test_cross_entropy_special_case(xp, dtype, name, params):
    """smooth_topk_svm with k=1, alpha=0, tau=1, and topk_transition with k=1 (any weight), are
    cross-entropy: value and gradient (softmax - onehot), float64 to rounding, float32 within
    the contract (against float64 on the same float32 inputs)."""
    fn = getattr(topkloss, name, None)
    if fn is None:
        pytest.skip(f"{name} not implemented yet")
    f32 = to_numpy(asarray(xp, np.zeros(1), dtype)).dtype == np.float32

    def test(data):
        b, n = _draw_shape(data, xp, min_n=2)
        scale = data.draw(st.sampled_from([1.0, 30.0, 1e4]), label="scale")
        offset = data.draw(st.sampled_from([0.0, 1e4, -1e4]), label="offset")
        s = data.draw(hnp.arrays(np.float64, (b, n), elements=st.floats(-1, 1)), label="scores") * scale + offset
        s = to_numpy(asarray(xp, s, dtype)).astype(np.float64)
        y = _labels(data, b, n)
        v, g = topkloss.value_and_grad(fn)(asarray(xp, s, dtype), asarray(xp, y), reduction="none", **params)
        want_v, want_g = _ce(s, y)
        if f32:
            np.testing.assert_allclose(to_numpy(v), want_v, rtol=1e-5, atol=1e-6)
            r = s.max(axis=-1, keepdims=True) - s.min(axis=-1, keepdims=True)
            tol = 1e-5 * (1 + r) * np.abs(want_g).max(axis=-1, keepdims=True)
            assert np.all(np.abs(to_numpy(g) - want_g) <= tol)
        else:
            np.testing.assert_allclose(to_numpy(v), want_v, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(to_numpy(g), want_g, rtol=0, atol=1e-12)

    _check(xp, test, 0.5 if f32 else 1.0)


# ---------------------------------------------------------------- log_esf

def test_log_esf_shift_and_gradient_laws(xp):
    """log e_j(exp(x + c)) = log e_j(exp(x)) + j c, and sum_i d log e_j / d x_i = j (each
    variable's inclusion probability, summed, is the subset size)."""

    def test(data):
        m = data.draw(st.sampled_from([6] if name_of(xp) == "jax" else [1, 2, 3, 5, 8]), label="m")
        k = 2 if name_of(xp) == "jax" else data.draw(st.integers(0, m), label="k")
        x = _grid_scores(data, 3, m, span=32)
        c = data.draw(st.integers(-10**3 * GRID, 10**3 * GRID), label="shift") / GRID
        a = to_numpy(topkloss.log_esf(asarray(xp, x, xp.float64), k))
        b = to_numpy(topkloss.log_esf(asarray(xp, x + c, xp.float64), k))
        j = np.arange(k + 1)
        np.testing.assert_allclose(b, a + j * c, rtol=1e-12, atol=1e-9)
        # value_and_grad differentiates the sum of the outputs: sum over i of d(sum_j log e_j)/dx_i
        _, g = topkloss.value_and_grad(topkloss.log_esf)(asarray(xp, x, xp.float64), k)
        np.testing.assert_allclose(to_numpy(g).sum(axis=-1), np.full(3, j.sum(), dtype=np.float64), rtol=1e-12)

    _check(xp, test)

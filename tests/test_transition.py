"""topk_transition: values and gradients against the NumPy reference on every backend, hand-built
cases (label inside / outside T_k, ties), k = 1 is cross-entropy, float32 at 1e4, transforms, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference
import reference_transition as ref
import topkloss
from backends import asarray, assert_close, to_numpy
from conftest import available

vg = topkloss.value_and_grad(topkloss.topk_transition)


def _data(batch=7, n=9, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, n)) * scale, rng.integers(0, n, size=batch)


def _half_inside(s, y, k):
    """Labels: even rows get a class of T_k, odd rows one outside it (both cases every time)."""
    y = y.copy()
    for b in range(len(y)):
        order = ref.top_set(s[b], s.shape[1])
        y[b] = order[b % k] if b % 2 == 0 else order[k + b % (s.shape[1] - k)]
    return y


def _weight_arg(xp, weight, dtype):
    return asarray(xp, weight, dtype) if isinstance(weight, np.ndarray) else weight


def _tolerances(dtype, s, k):
    """(loss rtol, loss atol, gradient tolerance relative to the row's largest entry): SPEC's contract."""
    if "64" in str(dtype):
        return 1e-12, 0.0, 1e-12
    spread = float(np.max(s.max(axis=1) - s.min(axis=1)))
    return 1e-5, 1e-6, 1e-5 * (1 + spread / k)


def _assert_grad_close(actual, desired, tol):
    actual, desired = to_numpy(actual), np.asarray(desired)
    assert np.all(np.isfinite(actual))
    scale = np.abs(desired).max(axis=1, keepdims=True)
    # rows whose true gradient is below the dtype's range (P_T = 1 to rounding) must round to 0
    scale = np.maximum(scale, np.finfo(actual.dtype).tiny)
    err = np.abs(actual - desired) / scale
    assert err.max() <= tol, f"gradient error {err.max():.3g} (relative to each row's largest entry) > {tol:.3g}"


WEIGHTS = ["adaptive", 0.0, 0.35, 1.0, np.array([0.0, 0.1, 0.5, 0.9, 1.0, 0.25, 0.75])]
WEIGHT_IDS = ["adaptive", "w0", "w035", "w1", "per-sample"]


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("weight", WEIGHTS, ids=WEIGHT_IDS)
def test_values_and_gradients_match_reference(xp, dtype, k, weight):
    s, y = _data()
    y = _half_inside(s, y, k)
    s = s.astype(np.float32).astype(np.float64)  # float32-representable: same inputs for both
    rtol, atol, gtol = _tolerances(dtype, s, k)
    value, grad = vg(asarray(xp, s, dtype), asarray(xp, y), k=k, weight=_weight_arg(xp, weight, dtype), reduction="none")
    assert value.dtype == dtype and grad.dtype == dtype
    assert_close(value, ref.topk_transition(s, y, k, weight), rtol=rtol, atol=atol)
    _assert_grad_close(grad, ref.topk_transition_grad(s, y, k, weight), gtol)


@pytest.mark.parametrize("weight", WEIGHTS, ids=WEIGHT_IDS)
def test_reference_gradient_is_the_finite_difference_with_frozen_choice_and_weight(weight):
    s, y = _data(seed=1)
    k = 3
    y = _half_inside(s, y, k)
    fd = reference.numerical_grad(lambda x: ref.topk_transition(x, y, k, weight, at=s).sum(), s)
    np.testing.assert_allclose(ref.topk_transition_grad(s, y, k, weight), fd, atol=1e-8)


def test_gradient_is_the_finite_difference_of_the_loss():
    """Away from ties the choice of T_k is locally constant; only the adaptive λ must be frozen."""
    s, y = _data(seed=2)
    k = 3
    y = _half_inside(s, y, k)
    weight = np.linspace(0.0, 1.0, s.shape[0])
    fd = reference.numerical_grad(lambda x: topkloss.topk_transition(x, y, k=k, weight=weight, reduction="sum"), s)
    _, grad = vg(s, y, k=k, weight=weight, reduction="sum")
    np.testing.assert_allclose(grad, fd, atol=1e-8)


@pytest.mark.parametrize("weight", WEIGHTS, ids=WEIGHT_IDS)
def test_k1_is_cross_entropy(xp, dtype, weight):
    s, y = _data(seed=3)
    s = s.astype(np.float32).astype(np.float64)
    rtol, atol, gtol = _tolerances(dtype, s, 1)
    value, grad = vg(asarray(xp, s, dtype), asarray(xp, y), k=1, weight=_weight_arg(xp, weight, dtype), reduction="none")
    assert_close(value, ref.cross_entropy(s, y), rtol=rtol, atol=atol)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    _assert_grad_close(grad, p - np.eye(s.shape[1])[y], gtol)


@pytest.mark.parametrize("weight", WEIGHTS, ids=WEIGHT_IDS)
def test_gradient_rows_sum_to_zero(xp, dtype, weight):
    s, y = _data(seed=4)
    _, grad = vg(asarray(xp, s, dtype), asarray(xp, y), k=4, weight=_weight_arg(xp, weight, dtype), reduction="none")
    g = to_numpy(grad)
    eps = 1e-6 if "32" in str(dtype) else 1e-14
    assert np.all(np.abs(g.sum(axis=1)) <= eps * np.abs(g).max(axis=1))


# --- hand-built cases ------------------------------------------------------------------------------
def _log_sum_exp(values):
    return math.log(sum(math.exp(v) for v in values))


def test_hand_built_label_inside_and_outside(xp, dtype):
    """Scores (3, 2, 1, 0), k = 2, T = {0, 1}; λ = 1 gives the grouped loss alone."""
    s = np.array([[3.0, 2.0, 1.0, 0.0]] * 3)
    y = np.array([1, 0, 3])
    lse = _log_sum_exp([3.0, 2.0, 1.0, 0.0])
    grouped_in = lse - _log_sum_exp([3.0, 2.0])
    expected = [grouped_in, grouped_in, lse - 0.0]
    rtol = 1e-6 if "32" in str(dtype) else 1e-14
    value, grad = vg(asarray(xp, s, dtype), asarray(xp, y), k=2, weight=1.0, reduction="none")
    assert_close(value, expected, rtol=rtol)
    p = np.exp(s[0] - lse)
    inside = p - np.array([p[0], p[1], 0, 0]) / (p[0] + p[1])  # d(-log P_T): p - p[T] / P_T
    outside = p - np.array([0, 0, 0, 1.0])
    assert_close(grad, [inside, inside, outside], rtol=0, atol=10 * rtol)


def test_hand_built_adaptive_weight_is_the_top_k_mass(xp, dtype):
    s = np.array([[3.0, 2.0, 1.0, 0.0]])
    lse = _log_sum_exp([3.0, 2.0, 1.0, 0.0])
    mass = math.exp(_log_sum_exp([3.0, 2.0]) - lse)
    ce, grouped = lse - 2.0, lse - _log_sum_exp([3.0, 2.0])
    value = topkloss.topk_transition(asarray(xp, s, dtype), asarray(xp, np.array([1])), k=2, reduction="none")
    assert_close(value, [(1 - mass) * ce + mass * grouped], rtol=1e-6 if "32" in str(dtype) else 1e-14)


def test_adaptive_weight_gradient_vanishes_on_the_rest_of_top_k(xp, dtype):
    """The adaptive weight with y in T_k: d loss / d s_j = p_j - λ e_j / S_T = 0 exactly for j in
    T_k other than y (no rounding residue), -S_out / total at y, and p_j elsewhere; a row with
    y outside T_k has the cross-entropy's gradient p - onehot(y). Batch of random rows."""
    rng = np.random.default_rng(7)
    s = rng.normal(size=(40, 9)) * 3
    k = 3
    order = np.argsort(-s, axis=-1, kind="stable")
    y = np.where(np.arange(40) % 2 == 0, order[:, 1], order[:, 5])  # inside on even rows, outside on odd
    _, grad = vg(asarray(xp, s, dtype), asarray(xp, y), k=k, reduction="sum")
    grad = to_numpy(grad)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    tol = 1e-6 if "32" in str(dtype) else 1e-14
    for b in range(40):
        top, rest = order[b, :k], order[b, k:]
        if b % 2 == 0:
            others = [j for j in top if j != y[b]]
            assert np.all(grad[b, others] == 0.0)
            assert_close(grad[b, y[b]], -p[b, rest].sum(), rtol=tol)
            assert_close(grad[b, rest], p[b, rest], rtol=tol, atol=tol * 1e-3)
        else:
            want = p[b].copy()
            want[y[b]] -= 1.0
            assert_close(grad[b], want, rtol=0, atol=10 * tol)


@pytest.mark.parametrize(
    "row, label, k, inside",
    [
        ([2.0, 1.0, 1.0, 1.0, 0.0], 1, 2, True),  # three-way tie for the 2nd place: index 1 wins
        ([2.0, 1.0, 1.0, 1.0, 0.0], 2, 2, False),
        ([2.0, 1.0, 1.0, 1.0, 0.0], 2, 3, True),
        ([2.0, 1.0, 1.0, 1.0, 0.0], 3, 3, False),
        ([1.0, 1.0, 1.0, 1.0], 1, 2, True),  # constant row: T_k = the first k classes
        ([1.0, 1.0, 1.0, 1.0], 2, 2, False),
        ([0.0, 5.0, 0.0, 5.0, 5.0], 4, 2, False),  # tie at the top
        ([0.0, 5.0, 0.0, 5.0, 5.0], 3, 2, True),
        ([-0.0, -1.0, -1.0, 0.0, 1.0, 3.0], 3, 3, False),  # -0.0 ties with +0.0 (JAX's top_k
        ([-0.0, -1.0, -1.0, 0.0, 1.0, 3.0], 0, 3, True),  # orders them): the lower index wins
        ([0.0, -0.0, 1.0], 1, 2, False),
    ],
)
def test_ties_in_top_k_go_to_the_lowest_index(xp, dtype, row, label, k, inside):
    s = np.array([row])
    top = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
    lse = _log_sum_exp(row)
    expected = lse - (_log_sum_exp([row[j] for j in top]) if inside else row[label])
    value, grad = vg(asarray(xp, s, dtype), asarray(xp, np.array([label])), k=k, weight=1.0, reduction="none")
    tol = 1e-6 if "32" in str(dtype) else 1e-14
    assert_close(value, [expected], rtol=tol)
    p = np.exp(np.array(row) - lse)
    q = np.zeros_like(p)
    if inside:
        q[top] = p[top] / p[top].sum()
    else:
        q[label] = 1.0
    assert_close(grad, [p - q], rtol=0, atol=10 * tol)


def _tied_batch():
    """Rows with ties across the k-th place (integer scores), within T_k only, and none, mixed in
    one batch, with labels on both sides of the boundary."""
    rng = np.random.default_rng(11)
    tied = rng.integers(0, 3, size=(6, 9)).astype(np.float64)
    inner = np.array([[5.0, 5.0, 4.0, 1.0, 0.0, -1.0, 2.0, 3.0, 0.5]])  # k = 3: the tie is inside T_3
    s = np.concatenate([rng.normal(size=(3, 9)), tied, inner, rng.normal(size=(2, 9))])
    y = np.array([ref.top_set(row, 9)[(3 * b) % 9] for b, row in enumerate(s)])
    return s, y


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("weight", ["adaptive", 0.35, 1.0], ids=["adaptive", "w035", "w1"])
def test_a_batch_with_and_without_ties_matches_reference(xp, dtype, k, weight):
    """Rows whose k-th place is tied take the tie rule, the others the plain top-k, in the same
    batch (on NumPy and eager torch the columns of T_k are then found by the tie rule's mask)."""
    s, y = _tied_batch()
    rtol, atol, gtol = _tolerances(dtype, s, k)
    value, grad = vg(asarray(xp, s, dtype), asarray(xp, y), k=k, weight=weight, reduction="none")
    assert_close(value, ref.topk_transition(s, y, k, weight), rtol=rtol, atol=atol)
    _assert_grad_close(grad, ref.topk_transition_grad(s, y, k, weight), gtol)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_columns_and_mask_forms_agree(monkeypatch, backend, tied):
    """NumPy and eager torch hold T_k as columns (transition._forward_by_columns); the mask form
    runs under JAX, compilers and on accelerators. Both forms on the same float64 data."""
    from topkloss.core import transition

    xp = available(backend)
    s, y = _tied_batch() if tied else _data(batch=12)
    if not tied:
        y = _half_inside(s, y, 3)
    args = (asarray(xp, s, xp.float64), asarray(xp, y))
    forms = {}
    for form in (True, False):
        calls = []
        monkeypatch.setattr(transition, "by_columns", lambda xp, s, form=form: calls.append(1) or form)
        forms[form] = [to_numpy(a) for a in vg(*args, k=3, weight="adaptive", reduction="none")]
        assert calls
    columns, mask = forms[True], forms[False]
    np.testing.assert_allclose(columns[0], mask[0], rtol=1e-14)
    np.testing.assert_allclose(columns[1], mask[1], rtol=0, atol=1e-15)


def test_which_form_holds_t_k():
    """Columns on eager torch on a CPU at every n and on NumPy from NUMPY_COLUMNS_MIN classes;
    the mask under JAX, on the standard-only path, under torch.compile, torch.jit.trace and
    torch.func, and on a meta tensor (no values to branch on)."""
    from topkloss.adapters import namespace
    from topkloss.core import transition

    def form(x):
        return transition.by_columns(namespace(x), x)

    n_min = transition.NUMPY_COLUMNS_MIN
    assert form(np.zeros((2, n_min))) and not form(np.zeros((2, n_min - 1)))
    assert not form(available("array_api_strict").zeros((2, n_min)))
    torch = pytest.importorskip("torch")
    assert form(torch.zeros(2, 5)) and not form(torch.zeros(2, 5, device="meta"))
    seen = []
    torch.func.vmap(lambda r: seen.append(form(r[None, :])) or r)(torch.zeros(2, 5))
    torch._dynamo.reset()
    torch.compile(lambda x: seen.append(form(x)) or x, fullgraph=True, backend="eager")(torch.zeros(2, 5))
    torch.jit.trace(lambda x: seen.append(form(x)) or x * 1, torch.zeros(2, 5), check_trace=False)
    assert seen == [False, False, False]
    jax = pytest.importorskip("jax")
    assert not form(jax.numpy.zeros((2, n_min)))


# --- numerics -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["offset", "spread"])
@pytest.mark.parametrize("weight", ["adaptive", 0.5], ids=["adaptive", "w05"])
def test_float32_with_logits_of_magnitude_1e4(xp, case, weight):
    rng = np.random.default_rng(5)
    n, k = 12, 3
    s = 1e4 + rng.normal(size=(6, n)) if case == "offset" else rng.uniform(-1e4, 1e4, size=(6, n))
    if case == "spread":
        s[:, 0] = s.max(axis=1) - rng.uniform(0.0, 3.0, size=6)  # a close second: mass not all on one class
    s = s.astype(np.float32).astype(np.float64)
    y = _half_inside(s, rng.integers(0, n, size=6), k)
    value, grad = vg(asarray(xp, s, xp.float32), asarray(xp, y), k=k, weight=weight, reduction="none")
    assert np.all(np.isfinite(to_numpy(value))) and np.all(np.isfinite(to_numpy(grad)))
    assert_close(value, ref.topk_transition(s, y, k, weight), rtol=1e-5, atol=1e-6)
    # the contract's R uses the row's spread; the offset case has a spread of a few units
    _, _, gtol = _tolerances(xp.float32, s, k)
    _assert_grad_close(grad, ref.topk_transition_grad(s, y, k, weight), gtol)


def test_float32_offset_is_as_accurate_as_without_offset():
    """Subtracting the row maximum first: a common offset of 1e4 costs nothing in float32."""
    s, y = _data(seed=6)
    s32 = s.astype(np.float32)
    shifted = (s32 + np.float32(1e4)).astype(np.float64)  # exact: the same row, shifted by 1e4
    a = topkloss.topk_transition(shifted.astype(np.float32), y, k=3, reduction="none")
    b = ref.topk_transition(shifted, y, 3, "adaptive")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype_name,big", [("float32", 3e38), ("float64", 1.7e308)])
@pytest.mark.parametrize("weight", ["adaptive", 1.0, 0.5], ids=["adaptive", "w1", "w05"])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NumPy's, on s_y - max s
def test_scores_a_float_maximum_apart(xp, dtype_name, big, weight):
    """CE = max s - s_y overflows to +inf where the scores lie a float maximum apart. Row 0
    (y = 1 in T_2 by the tie rule, P_T = 1): the grouped loss is 0, so a weight of 1, or the
    adaptive one (1 - P_T = 0), gives loss 0 and gradient 0, not 0 * inf = NaN; 0.5 gives +inf
    (half of a CE beyond the range). Row 1 (y outside T_2): the loss is CE, +inf, for every
    weight, and the gradient p - e_y is exact."""
    dtype = getattr(xp, dtype_name)
    s = np.array([[big, -big, -big, -big], [big, -big, -big, 0.0]])
    value, grad = vg(asarray(xp, s, dtype), asarray(xp, np.array([1, 1])), k=2, weight=weight, reduction="none")
    value, grad = to_numpy(value), to_numpy(grad)
    assert value[0] == (math.inf if weight == 0.5 else 0.0) and value[1] == math.inf, value
    want = [[0.5, -0.5, 0.0, 0.0] if weight == 0.5 else [0.0] * 4, [1.0, -1.0, 0.0, 0.0]]
    np.testing.assert_array_equal(grad, want)


def test_invariant_to_a_constant_added_to_a_row():
    s, y = _data(seed=7)
    a, ga = vg(s, y, k=3, reduction="none")
    b, gb = vg(s + np.arange(s.shape[0])[:, None] * 7.0, y, k=3, reduction="none")
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(ga, gb, rtol=0, atol=1e-14)


def test_all_backends_give_the_same_numbers(xp):
    s, y = _data(batch=16, n=30, seed=8)
    s[:, 5] = s[:, 6]  # ties inside rows
    w = np.linspace(0, 1, 16)
    weights = ("adaptive", 0.3, asarray(xp, w, xp.float64))
    got = [vg(asarray(xp, s, xp.float64), asarray(xp, y), k=5, weight=wt, reduction="none") for wt in weights]
    want = [vg(s, y, k=5, weight=wt, reduction="none") for wt in ("adaptive", 0.3, w)]
    for (v1, g1), (v0, g0) in zip(got, want):
        assert_close(v1, v0, rtol=1e-13)
        assert_close(g1, g0, rtol=0, atol=1e-15)


# --- API: weights, reductions, dtypes -------------------------------------------------------------
def test_weight_forms_agree(xp):
    s, y = _data(seed=9)
    S, Y = asarray(xp, s, xp.float64), asarray(xp, y)
    fixed = topkloss.topk_transition(S, Y, k=3, weight=0.4, reduction="none")
    zero_d = topkloss.topk_transition(S, Y, k=3, weight=asarray(xp, np.array(0.4), xp.float64), reduction="none")
    per_sample = topkloss.topk_transition(S, Y, k=3, weight=asarray(xp, np.full(7, 0.4), xp.float64), reduction="none")
    assert_close(zero_d, to_numpy(fixed), rtol=1e-15)
    assert_close(per_sample, to_numpy(fixed), rtol=1e-15)


def test_reductions(xp):
    s, y = _data(seed=10)
    S, Y = asarray(xp, s, xp.float64), asarray(xp, y)
    none = to_numpy(topkloss.topk_transition(S, Y, k=2, reduction="none"))
    assert_close(topkloss.topk_transition(S, Y, k=2), none.mean(), rtol=1e-14)
    assert_close(topkloss.topk_transition(S, Y, k=2, reduction="sum"), none.sum(), rtol=1e-14)
    empty = topkloss.topk_transition(asarray(xp, np.zeros((0, 4)), xp.float64), asarray(xp, np.zeros(0, int)), k=2)
    assert float(to_numpy(empty)) == 0.0


def test_half_precision_returns_the_input_dtype():
    torch = pytest.importorskip("torch")
    s, y = _data(seed=11)
    t = torch.asarray(s).to(torch.float16).requires_grad_(True)
    loss = topkloss.topk_transition(t, torch.asarray(y), k=3)
    loss.backward()
    assert loss.dtype == torch.float16 and t.grad.dtype == torch.float16
    expected = ref.topk_transition(t.detach().double().numpy(), y, 3, "adaptive").mean()
    assert abs(float(loss.detach()) - expected) <= 1e-3 * expected


# --- autograd and transforms ------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [0.3, "array"])
def test_torch_gradcheck(weight):
    """Fixed weights only: with the adaptive weight the gradient deliberately omits d λ / d s."""
    torch = pytest.importorskip("torch")
    s, y = _data(batch=4, n=6, seed=12)
    w = torch.rand(4, dtype=torch.float64, requires_grad=True) if weight == "array" else weight
    x = torch.asarray(s).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: topkloss.topk_transition(a, torch.asarray(y), k=2, weight=w, reduction="none"), (x,))
    # the per-sample weight gets no gradient
    if weight == "array":
        topkloss.topk_transition(x, torch.asarray(y), k=2, weight=w).backward()
        assert w.grad is None


def test_torch_func_and_compile():
    torch = pytest.importorskip("torch")
    s, y = _data(batch=5, n=8, seed=13)
    x, labels = torch.asarray(s), torch.asarray(y)
    expected = ref.topk_transition_grad(s, y, 3, "adaptive")
    g = torch.func.grad(lambda a: topkloss.topk_transition(a, labels, k=3, reduction="sum"))(x)
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12, atol=1e-15)
    per_row = torch.func.vmap(
        torch.func.grad(lambda row, lab: topkloss.topk_transition(row[None], lab[None], k=3, reduction="sum"))
    )(x, labels)
    np.testing.assert_allclose(per_row.numpy(), expected, rtol=1e-12, atol=1e-15)
    compiled = torch.compile(lambda a, b, w: topkloss.topk_transition(a, b, k=3, weight=w), fullgraph=True)
    a = x.clone().requires_grad_(True)
    loss = compiled(a, labels, torch.tensor(0.25, dtype=torch.float64))
    loss.backward()
    np.testing.assert_allclose(float(loss), ref.topk_transition(s, y, 3, 0.25).mean(), rtol=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), ref.topk_transition_grad(s, y, 3, 0.25) / 5, rtol=1e-12, atol=1e-15)


def test_jax_jit_grad_vmap():
    jnp = available("jax")
    import jax

    s, y = _data(batch=5, n=8, seed=14)
    x, labels = jnp.asarray(s), jnp.asarray(y)
    f = jax.jit(jax.value_and_grad(lambda a, b, w: topkloss.topk_transition(a, b, k=3, weight=w, reduction="sum")))
    for w in (jnp.asarray(0.6), jnp.linspace(0.0, 1.0, 5)):
        value, grad = f(x, labels, w)
        np.testing.assert_allclose(float(value), ref.topk_transition(s, y, 3, np.asarray(w)).sum(), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(grad), ref.topk_transition_grad(s, y, 3, np.asarray(w)), rtol=1e-12, atol=1e-15)
    # no gradient through the weight
    dw = jax.grad(lambda w: topkloss.topk_transition(x, labels, k=3, weight=w))(jnp.asarray(0.6))
    assert float(dw) == 0.0
    per_row = jax.jit(jax.vmap(jax.grad(lambda row, lab: topkloss.topk_transition(row[None], lab[None], k=3))))(x, labels)
    np.testing.assert_allclose(np.asarray(per_row), ref.topk_transition_grad(s, y, 3, "adaptive"), rtol=1e-12, atol=1e-15)


# --- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(weight=1.5), ValueError, "weight must be in \\[0, 1\\]; got 1.5"),
        (dict(weight=-0.1), ValueError, "weight must be in \\[0, 1\\]"),
        (dict(weight=math.nan), ValueError, "weight must be finite"),
        (dict(weight="adaptiv"), ValueError, "weight must be one of"),
        (dict(weight=True), TypeError, "weight must be a real number"),
        (dict(weight=np.full(3, 0.5)), ValueError, "weight must be a number or an array of shape \\(\\) or \\(4,\\)"),
        (dict(weight=np.full((4, 1), 0.5)), ValueError, "weight must be a number or an array"),
        (dict(weight=np.array([0.1, 0.2, 1.2, 0.0])), ValueError, "weight must be in \\[0, 1\\]"),
        (dict(weight=np.array([0.1, np.nan, 0.2, 0.0])), ValueError, "weight must be in \\[0, 1\\]"),
        (dict(weight=np.array([0.5 + 0j] * 4)), TypeError, "weight must have a real dtype"),
        (dict(k=0), ValueError, "k must be in \\[1, 4\\]"),
        (dict(k=5), ValueError, "k must be in \\[1, 4\\] for n_classes = 5; got 5"),
        (dict(k=2.0), TypeError, "k must be an integer"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
    ],
)
def test_bad_input(kwargs, error, match):
    s, y = _data(batch=4, n=5, seed=15)
    with pytest.raises(error, match=match):
        topkloss.topk_transition(s, y, **{"k": 2, **kwargs})


def test_weight_of_another_library_is_a_type_error():
    torch = pytest.importorskip("torch")
    s, y = _data(batch=4, n=5)
    with pytest.raises(TypeError, match="scores, weight must be arrays of one array library"):
        topkloss.topk_transition(torch.asarray(s), torch.asarray(y), weight=np.full(4, 0.5), k=2)


def test_weight_values_are_not_read_with_checks_off():
    s, y = _data(batch=4, n=5)
    with topkloss.value_checks(False):
        topkloss.topk_transition(s, y, k=2, weight=np.full(4, 2.0))


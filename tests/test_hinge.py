"""topk_hinge, noised_topk_hinge and ldam_margins: values and subgradients against the NumPy
reference on every backend, ties, identical results from the same injected noise, seeded draws
(reproducible, independent, unbiased where the hinge is active), float32 at 1e4, transforms,
native and standard selection, bad input."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import numpy as np
import pytest

import reference_hinge as ref
import topkloss
import topkloss.core.hinge as core_hinge
from backends import asarray, assert_close, name_of, to_numpy
from conftest import available

hinge_vg = topkloss.value_and_grad(topkloss.topk_hinge)
noised_vg = topkloss.value_and_grad(topkloss.noised_topk_hinge)


def _data(batch=8, n=7, seed=0):
    """Scores with gaps in [1.1, 1.5] between consecutive classes (no near-ties, float32-
    representable); labels cycle through the row's bottom class, top class and a random one."""
    rng = np.random.default_rng(seed)
    s = np.stack([rng.permutation(n) * 1.3 + rng.uniform(-0.1, 0.1, n) for _ in range(batch)]) - 2.0
    y = rng.integers(0, n, size=batch)
    y[0::3] = np.argmin(s[0::3], axis=1)
    y[1::3] = np.argmax(s[1::3], axis=1)
    return s.astype(np.float32).astype(np.float64), y


def _noise(batch, n_samples, n, seed=1):
    z = np.random.default_rng(seed).standard_normal((batch, n_samples, n))
    return z.astype(np.float32).astype(np.float64)


def _tol(dtype):
    """(rtol, atol) of SPEC's contract: 1e-12 in float64; 1e-5 relative / 1e-6 absolute in float32."""
    return (1e-12, 0.0) if "64" in str(dtype) else (1e-5, 1e-6)


def _margin_arg(xp, margin, dtype):
    return asarray(xp, margin, dtype) if isinstance(margin, np.ndarray) else margin


MARGINS = [1.0, 0.3, np.array([0.5, 1.0, 1.5, 0.2, 0.0, 2.0, 0.7])]
MARGIN_IDS = ["m1", "m03", "per-class"]


# --- values and subgradients against the reference ------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("margin", MARGINS, ids=MARGIN_IDS)
def test_topk_hinge_matches_reference(xp, dtype, k, margin):
    s, y = _data()
    rtol, atol = _tol(dtype)
    value, grad = hinge_vg(asarray(xp, s, dtype), asarray(xp, y), k=k, margin=_margin_arg(xp, margin, dtype),
                           scale=2.5, reduction="none")
    want_value, want_grad = ref.topk_hinge(s, y, k, margin, 2.5)
    assert value.dtype == dtype and grad.dtype == dtype
    assert_close(value, want_value, rtol=rtol, atol=atol)
    assert_close(grad, want_grad, rtol=0, atol=1e-15)  # entries are 0, +-scale: exact
    assert (want_value > 0).any()
    if not isinstance(margin, np.ndarray):  # both active and inactive rows are tested
        assert (want_value == 0).any()


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("margin", MARGINS, ids=MARGIN_IDS)
def test_noised_topk_hinge_matches_reference(xp, dtype, k, margin):
    s, y = _data(seed=2)
    z = _noise(8, 5, 7)
    rtol, atol = _tol(dtype)
    value, grad = noised_vg(asarray(xp, s, dtype), asarray(xp, y), k=k, epsilon=0.7, n_samples=5,
                            noise=asarray(xp, z, dtype), margin=_margin_arg(xp, margin, dtype), scale=1.5,
                            reduction="none")
    want_value, want_grad = ref.noised_topk_hinge(s, y, k, z, 0.7, margin, 1.5)
    assert_close(value, want_value, rtol=rtol, atol=atol)
    assert_close(grad, want_grad, rtol=0, atol=1e-6 if "32" in str(dtype) else 1e-15)
    assert 0 < (want_value > 0).sum()


def test_reference_subgradient_is_the_finite_difference():
    """Away from ties and kinks the hinge is linear: the reference's subgradient is its derivative."""
    s, y = _data(seed=3)
    z = _noise(8, 3, 7, seed=4)
    for f in (lambda x: ref.topk_hinge(x, y, 2, 0.6, 1.7), lambda x: ref.noised_topk_hinge(x, y, 2, z, 0.4, 0.6, 1.7)):
        eps = 1e-6
        fd = np.zeros_like(s)
        for idx in np.ndindex(*s.shape):
            sp, sm = s.copy(), s.copy()
            sp[idx] += eps
            sm[idx] -= eps
            fd[idx] = (f(sp)[0].sum() - f(sm)[0].sum()) / (2 * eps)
        np.testing.assert_allclose(f(s)[1], fd, atol=1e-8)


def test_label_at_the_k_plus_1_th_place_has_loss_margin_times_scale_and_gradient_zero(xp, dtype):
    s = np.array([[4.0, 3.0, 2.0, 1.0, 0.0]] * 2)
    y = np.array([2, 3])  # the 3rd and the 4th largest
    value, grad = hinge_vg(asarray(xp, s, dtype), asarray(xp, y), k=2, margin=0.5, scale=3.0, reduction="none")
    assert_close(value, [1.5, 4.5], rtol=1e-7)
    assert_close(grad, [[0.0] * 5, [0.0, 0.0, 3.0, -3.0, 0.0]], rtol=0, atol=0)


@pytest.mark.parametrize(
    "row, label, k",
    [
        ([1.0, 1.0, 1.0, 1.0], 0, 1),  # constant row: all four share the 2nd place
        ([2.0, 1.0, 1.0, 1.0, 0.0], 1, 1),  # three-way tie at the 2nd place, label among them
        ([2.0, 1.0, 1.0, 1.0, 0.0], 4, 2),
        ([0.0, 5.0, 0.0, 5.0, 5.0], 0, 2),  # tie at the top reaching the 3rd place
        ([0.0, 5.0, 0.0, 5.0, 5.0], 2, 3),
    ],
)
def test_ties_share_the_weight(xp, dtype, row, label, k):
    s, y = np.array([row]), np.array([label])
    value, grad = hinge_vg(asarray(xp, s, dtype), asarray(xp, y), k=k, reduction="none")
    want_value, want_grad = ref.topk_hinge(s, y, k)
    assert_close(value, want_value, rtol=1e-7)
    assert_close(grad, want_grad, rtol=1e-7, atol=0)
    assert abs(float(to_numpy(grad).sum())) <= 1e-6


def test_sort_and_native_selection_give_identical_results(xp, monkeypatch):
    """The core selects through ``ops.kth_largest`` (torch.topk, partition, ...): a plain
    standard sort must give bit-identical values and subgradients, ties included."""
    s, y = _data(batch=16, n=9, seed=5)
    s[:, 3] = s[:, 4]  # ties in every row
    s[:4] = 0.0  # constant rows
    z = _noise(16, 4, 9)
    z[:, :, 2] = z[:, :, 5]
    args = (asarray(xp, s, xp.float64), asarray(xp, y))
    calls = [(hinge_vg, dict(k=3)), (noised_vg, dict(k=2, epsilon=0.0, n_samples=4, noise=asarray(xp, z, xp.float64))),
             (noised_vg, dict(k=2, epsilon=0.3, n_samples=4, noise=asarray(xp, z, xp.float64)))]
    native = [[to_numpy(a) for a in f(*args, **kw, reduction="none")] for f, kw in calls]

    def sort_kth(xp_, x, j):
        return xp_.sort(x, axis=-1)[..., x.shape[-1] - j : x.shape[-1] - j + 1]

    monkeypatch.setattr(core_hinge, "kth_largest", sort_kth)
    for (f, kw), want in zip(calls, native):
        got = [to_numpy(a) for a in f(*args, **kw, reduction="none")]
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_epsilon_zero_is_the_hard_hinge(xp):
    s, y = _data(seed=6)
    S, Y = asarray(xp, s, xp.float64), asarray(xp, y)
    hard = hinge_vg(S, Y, k=3, margin=0.4, reduction="none")
    noised = noised_vg(S, Y, k=3, epsilon=0.0, n_samples=3, margin=0.4, seed=0, reduction="none")
    for a, b in zip(hard, noised):
        assert_close(a, to_numpy(b), rtol=1e-15)


# --- same noise, same numbers, on every backend ----------------------------------------------------
def test_same_injected_noise_gives_identical_results_on_every_backend(xp, dtype):
    """The NumPy backend on the same (dtype-rounded) inputs is the yardstick: only the order of
    the final sums may differ."""
    np_dtype = np.float64 if "64" in str(dtype) else np.float32
    s, y = _data(batch=32, n=50, seed=7)
    z = _noise(32, 10, 50, seed=8)
    m = np.linspace(0.2, 1.4, 50)
    kw = dict(k=5, epsilon=0.5, n_samples=10, reduction="none")
    want = noised_vg(s.astype(np_dtype), y, noise=z.astype(np_dtype), margin=m.astype(np_dtype), **kw)
    got = noised_vg(asarray(xp, s, dtype), asarray(xp, y), noise=asarray(xp, z, dtype), margin=asarray(xp, m, dtype), **kw)
    tol = 1e-14 if "64" in str(dtype) else 1e-6
    assert_close(got[0], want[0], rtol=tol)
    assert_close(got[1], want[1], rtol=0, atol=tol)


# --- numerics ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["offset", "spread"])
def test_float32_with_scores_of_magnitude_1e4(xp, case):
    """A common offset of 1e4 costs no precision: the noise is added to s - s_y, not to s."""
    rng = np.random.default_rng(9)
    batch, n = 8, 12
    s = 1e4 + rng.normal(size=(batch, n)) if case == "offset" else rng.uniform(-1e4, 1e4, size=(batch, n))
    s = s.astype(np.float32).astype(np.float64)
    y = rng.integers(0, n, size=batch)
    z = _noise(batch, 5, n, seed=10)
    value, grad = noised_vg(asarray(xp, s, xp.float32), asarray(xp, y), k=3, epsilon=0.8, n_samples=5,
                            noise=asarray(xp, z, xp.float32), reduction="none")
    want_value, want_grad = ref.noised_topk_hinge(s, y, 3, z, 0.8)
    assert_close(value, want_value, rtol=1e-5, atol=1e-6)
    assert_close(grad, want_grad, rtol=0, atol=1e-6)
    value, _ = hinge_vg(asarray(xp, s, xp.float32), asarray(xp, y), k=3, reduction="none")
    assert_close(value, ref.topk_hinge(s, y, 3)[0], rtol=1e-5, atol=1e-6)


def test_invariant_to_a_constant_added_to_a_row_and_gradient_rows_sum_to_zero():
    s, y = _data(seed=11)
    z = _noise(8, 5, 7)
    a, ga = noised_vg(s, y, k=2, epsilon=0.5, n_samples=5, noise=z, reduction="none")
    b, gb = noised_vg(s + np.arange(8)[:, None] * 3.0, y, k=2, epsilon=0.5, n_samples=5, noise=z, reduction="none")
    np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_array_equal(ga, gb)
    np.testing.assert_allclose(ga.sum(axis=1), 0.0, atol=1e-15)


def test_reductions_and_empty_batch(xp):
    s, y = _data(seed=12)
    S, Y = asarray(xp, s, xp.float64), asarray(xp, y)
    for fn, kw in ((topkloss.topk_hinge, {}), (topkloss.noised_topk_hinge, dict(noise=asarray(xp, _noise(8, 5, 7), xp.float64)))):
        none = to_numpy(fn(S, Y, k=2, reduction="none", **kw))
        assert_close(fn(S, Y, k=2, **kw), none.mean(), rtol=1e-14)
        assert_close(fn(S, Y, k=2, reduction="sum", **kw), none.sum(), rtol=1e-14)
    empty = topkloss.noised_topk_hinge(asarray(xp, np.zeros((0, 4)), xp.float64), asarray(xp, np.zeros(0, int)), k=2, seed=0)
    assert float(to_numpy(empty)) == 0.0


def test_half_precision_returns_the_input_dtype():
    torch = pytest.importorskip("torch")
    s, y = _data(seed=13)
    t = torch.asarray(s).to(torch.float16).requires_grad_(True)
    loss = topkloss.noised_topk_hinge(t, torch.asarray(y), k=2, noise=torch.asarray(_noise(8, 5, 7)).half())
    loss.backward()
    assert loss.dtype == torch.float16 and t.grad.dtype == torch.float16
    want = ref.noised_topk_hinge(t.detach().double().numpy(), y, 2, _noise(8, 5, 7).astype(np.float16), 1.0)[0].mean()
    assert abs(float(loss.detach()) - want) <= 1e-3 * want


# --- randomness ------------------------------------------------------------------------------------
def _seeded(xp, s, y, r, **kw):
    """(loss, grad) as NumPy, per row, with the r-th seed (a JAX key for JAX)."""
    if name_of(xp) == "jax":
        import jax

        return tuple(to_numpy(a) for a in _jax_noised_vg(s, y, jax.random.key(r), **kw))
    return tuple(to_numpy(a) for a in noised_vg(s, y, seed=r, reduction="none", **kw))


def _jax_noised_vg(s, y, key, **kw):
    import jax

    f = _JAX_CACHE.get(tuple(sorted(kw.items())))
    if f is None:
        f = _JAX_CACHE[tuple(sorted(kw.items()))] = jax.jit(
            lambda a, b, key: noised_vg(a, b, key=key, reduction="none", **kw)
        )
    return f(s, y, key)


_JAX_CACHE: dict = {}


def test_seeded_estimates_are_unbiased_where_the_hinge_is_active(xp):
    """R seeded calls on a batch of 4 distinct rows, each repeated 25 times (S = 5 draws per
    estimate). The mean estimate matches a 400 000-draw estimate of the smoothed loss within
    4.5 standard errors, for value and gradient. The rows are chosen so that the hinge
    argument is >= 1.4, about 6 standard deviations of one estimate above 0: there the relu
    is linear and the estimate unbiased. The spread of the estimates must be that of
    independent draws, across rows and across seeds: repeated, correlated or rescaled draws
    fail."""
    base = np.array([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5]] * 2 + [[0.3, -1.0, 2.2, 0.9, 1.1, -0.2]] * 2)
    base_y = np.array([3, 5, 1, 5])
    reps, k, eps, n_samples, R, n_draws = 25, 2, 1.0, 5, 200, 400_000
    s, y = np.tile(base, (reps, 1)), np.tile(base_y, reps)
    arg, sd, w_ref = ref.smoothed_topk_hinge(base, base_y, k, eps, n_draws=n_draws)
    assert arg.min() > 1.3
    S, Y = asarray(xp, s, xp.float64), asarray(xp, y)
    draws = [_seeded(xp, S, Y, r, k=k, epsilon=eps, n_samples=n_samples) for r in range(R)]
    values = np.stack([d[0] for d in draws]).reshape(R, reps, 4)  # (seed, repeat, row)
    grads = np.stack([d[1] for d in draws]).reshape(R, reps, 4, 6)
    assert np.unique(values).size == values.size  # no two estimates from the same draws
    flat = values.reshape(-1, 4)
    se = np.sqrt(flat.var(axis=0, ddof=1) / flat.shape[0] + sd**2 / n_draws)
    assert np.all(np.abs(flat.mean(axis=0) - arg) < 4.5 * se), (flat.mean(axis=0), arg, se)
    g, g_ref = grads.reshape(-1, 4, 6), w_ref - np.eye(6)[base_y]
    g_se = np.sqrt(g.var(axis=0, ddof=1) / g.shape[0] + w_ref * (1 - w_ref) / n_draws)
    assert np.all(np.abs(g.mean(axis=0) - g_ref) <= 4.5 * g_se + 1e-12)
    # independent draws: one estimate has variance Var[(s + eps Z)_[k+1]] / S, and the mean of
    # one seed's 25 repeats that over 25 (standard errors of the ratios: about 0.01 and 0.05)
    one = sd**2 / n_samples
    within = (flat.var(axis=0, ddof=1) / one).mean()
    across = (values.mean(axis=1).var(axis=0, ddof=1) / (one / reps)).mean()
    assert 0.95 < within < 1.05 and 0.8 < across < 1.2, (within, across)


def test_same_seed_same_result_and_different_seeds_differ(xp):
    s, y = _data(seed=14)
    S, Y = asarray(xp, s, xp.float64), asarray(xp, y)
    a, b, c = (_seeded(xp, S, Y, r, k=2, epsilon=1.0, n_samples=5) for r in (3, 3, 4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_drawn_noise_is_standard_normal_and_independent_across_seeds(xp, dtype):
    from topkloss.api._random import standard_normal

    like = asarray(xp, np.zeros((1, 1)), dtype)
    if name_of(xp) == "jax":
        import jax

        z0, z1 = (standard_normal(xp, (50, 20, 40), like, key=jax.random.key(r)) for r in (0, 1))
    else:
        z0, z1 = (standard_normal(xp, (50, 20, 40), like, seed=r) for r in (0, 1))
    assert z0.dtype == dtype and type(z0) is type(like)
    a, b = to_numpy(z0).ravel().astype(np.float64), to_numpy(z1).ravel().astype(np.float64)
    n = a.size
    assert abs(a.mean()) < 5 / math.sqrt(n) and abs(a.std() - 1) < 5 / math.sqrt(2 * n)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(n)


def test_numpy_generator_advances_and_reseeding_reproduces(xp):
    if name_of(xp) == "jax":
        pytest.skip("JAX takes keys (a NumPy generator also works, tested below)")
    s, y = _data(seed=15)
    S, Y = asarray(xp, s, xp.float64), asarray(xp, y)
    gen = np.random.default_rng(7)
    a = to_numpy(topkloss.noised_topk_hinge(S, Y, k=2, seed=gen, reduction="none"))
    b = to_numpy(topkloss.noised_topk_hinge(S, Y, k=2, seed=gen, reduction="none"))
    c = to_numpy(topkloss.noised_topk_hinge(S, Y, k=2, seed=np.random.default_rng(7), reduction="none"))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_torch_generator_and_global_seed():
    torch = pytest.importorskip("torch")
    s, y = _data(seed=16)
    S, Y = torch.asarray(s), torch.asarray(y)
    gen = torch.Generator().manual_seed(5)
    a = topkloss.noised_topk_hinge(S, Y, k=2, seed=gen, reduction="none")
    b = topkloss.noised_topk_hinge(S, Y, k=2, seed=gen, reduction="none")
    c = topkloss.noised_topk_hinge(S, Y, k=2, seed=torch.Generator().manual_seed(5), reduction="none")
    d = topkloss.noised_topk_hinge(S, Y, k=2, seed=5, reduction="none")
    assert not torch.equal(a, b)
    assert torch.equal(a, c) and torch.equal(a, d)
    torch.manual_seed(1)
    e = topkloss.noised_topk_hinge(S, Y, k=2, reduction="none")
    torch.manual_seed(1)
    assert torch.equal(e, topkloss.noised_topk_hinge(S, Y, k=2, reduction="none"))


def test_jax_needs_a_key_and_takes_seed_or_numpy_generator():
    jnp = available("jax")
    import jax

    s, y = _data(seed=17)
    S, Y = jnp.asarray(s), jnp.asarray(y)
    with pytest.raises(ValueError, match="key"):
        topkloss.noised_topk_hinge(S, Y, k=2)
    a = topkloss.noised_topk_hinge(S, Y, k=2, seed=3, reduction="none")
    np.testing.assert_array_equal(a, topkloss.noised_topk_hinge(S, Y, k=2, key=jax.random.key(3), reduction="none"))
    legacy = topkloss.noised_topk_hinge(S, Y, k=2, key=jax.random.PRNGKey(3), reduction="none")
    np.testing.assert_array_equal(a, legacy)
    g = topkloss.noised_topk_hinge(S, Y, k=2, seed=np.random.default_rng(0), reduction="none")
    h = topkloss.noised_topk_hinge(S, Y, k=2, seed=np.random.default_rng(0), reduction="none")
    np.testing.assert_array_equal(g, h)
    with pytest.raises(TypeError, match="seed: a numpy.random.Generator cannot draw inside a JAX transform"):
        jax.jit(lambda a, b: topkloss.noised_topk_hinge(a, b, k=2, seed=np.random.default_rng(0)))(S, Y)


# --- autograd and transforms ------------------------------------------------------------------------
def test_torch_autograd_and_gradcheck():
    torch = pytest.importorskip("torch")
    s, y = _data(batch=5, n=6, seed=18)
    z = torch.asarray(_noise(5, 3, 6))
    Y = torch.asarray(y)
    m = torch.asarray(np.linspace(0.3, 1.3, 6))
    x = torch.asarray(s).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: topkloss.topk_hinge(a, Y, k=2, margin=m, reduction="none"), (x,))
    assert torch.autograd.gradcheck(
        lambda a: topkloss.noised_topk_hinge(a, Y, k=2, epsilon=0.4, n_samples=3, noise=z, scale=2.0, reduction="none"), (x,)
    )
    loss = topkloss.noised_topk_hinge(x, Y, k=2, epsilon=0.4, n_samples=3, noise=z, reduction="sum")
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), ref.noised_topk_hinge(s, y, 2, z.numpy(), 0.4)[1], atol=1e-15)


def _per_row(fn):
    """A loss of one row (for vmap): ``fn`` on a batch of one."""
    return lambda row, lab, *extra: fn(row[None], lab[None], *(e[None] for e in extra))


def test_torch_func_and_compile():
    torch = pytest.importorskip("torch")
    s, y = _data(batch=6, n=8, seed=19)
    z = _noise(6, 4, 8)
    x, Y, Z = torch.asarray(s), torch.asarray(y), torch.asarray(z)
    m = torch.asarray(np.linspace(0.5, 1.5, 8))
    noised = functools.partial(topkloss.noised_topk_hinge, k=3, epsilon=0.5, n_samples=4, reduction="sum")
    want = ref.noised_topk_hinge(s, y, 3, z, 0.5)[1]
    g = torch.func.grad(lambda a: noised(a, Y, noise=Z))(x)
    np.testing.assert_allclose(g.numpy(), want, atol=1e-15)
    per_row = torch.func.vmap(torch.func.grad(_per_row(lambda a, b, zz: noised(a, b, noise=zz))))(x, Y, Z)
    np.testing.assert_allclose(per_row.numpy(), want, atol=1e-15)
    hard = functools.partial(topkloss.topk_hinge, k=3, reduction="sum")
    per_row = torch.func.vmap(torch.func.grad(_per_row(hard)))(x, Y)
    np.testing.assert_allclose(per_row.numpy(), ref.topk_hinge(s, y, 3)[1], atol=1e-15)

    full_graph = functools.partial(torch.compile, fullgraph=True, backend="aot_eager")
    compiled = full_graph(lambda a, b, zz, mm: noised(a, b, noise=zz, margin=mm))
    a = x.clone().requires_grad_(True)
    loss = compiled(a, Y, Z, m)
    loss.backward()
    want_value, want_grad = ref.noised_topk_hinge(s, y, 3, z, 0.5, m.numpy())
    np.testing.assert_allclose(float(loss.detach()), want_value.sum(), rtol=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), want_grad, atol=1e-15)
    # no input requiring grad (evaluation): a full graph too, with two or more extra arrays
    np.testing.assert_allclose(float(compiled(x, Y, Z, m)), want_value.sum(), rtol=1e-12)
    compiled_hard = full_graph(lambda a, b: hard(a, b, scale=2.0))
    np.testing.assert_allclose(float(compiled_hard(x, Y)), ref.topk_hinge(s, y, 3, 1.0, 2.0)[0].sum(), rtol=1e-12)
    # the global generator works in a full graph (an int seed makes a graph break, documented)
    drawn = full_graph(lambda a, b: topkloss.noised_topk_hinge(a, b, k=3, reduction="none"))
    torch.manual_seed(0)
    first = drawn(x, Y)
    torch.manual_seed(0)
    assert torch.equal(first, drawn(x, Y)) and not torch.equal(first, drawn(x, Y))


def test_jax_jit_grad_vmap():
    jnp = available("jax")
    import jax

    s, y = _data(batch=6, n=8, seed=20)
    z = _noise(6, 4, 8)
    x, Y, Z = jnp.asarray(s), jnp.asarray(y), jnp.asarray(z)
    m = jnp.linspace(0.5, 1.5, 8)
    noised = functools.partial(topkloss.noised_topk_hinge, k=3, epsilon=0.5, n_samples=4, reduction="sum")
    f = jax.jit(jax.value_and_grad(lambda a, b, zz, mm: noised(a, b, noise=zz, margin=mm)))
    value, grad = f(x, Y, Z, m)
    want_value, want_grad = ref.noised_topk_hinge(s, y, 3, z, 0.5, np.asarray(m))
    np.testing.assert_allclose(float(value), want_value.sum(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad), want_grad, atol=1e-15)
    # the key is an argument of the jitted function; the same key gives the eager result
    g = jax.jit(jax.grad(lambda a, b, key: topkloss.noised_topk_hinge(a, b, k=3, key=key)))
    key = jax.random.key(11)
    eager = jax.grad(lambda a: topkloss.noised_topk_hinge(a, Y, k=3, key=key))(x)
    np.testing.assert_array_equal(np.asarray(g(x, Y, key)), np.asarray(eager))
    # vmap over rows
    per_row = jax.jit(jax.vmap(jax.grad(_per_row(lambda a, b, zz: noised(a, b, noise=zz)))))(x, Y, Z)
    np.testing.assert_allclose(np.asarray(per_row), ref.noised_topk_hinge(s, y, 3, z, 0.5)[1], atol=1e-15)
    hard = jax.vmap(lambda a, b: topkloss.topk_hinge(a, b, k=3, reduction="none"), in_axes=(0, None))
    got = jax.jit(hard)(jnp.stack([x, x + 1.0]), Y)
    np.testing.assert_allclose(np.asarray(got), np.stack([ref.topk_hinge(s, y, 3)[0]] * 2), rtol=1e-12)
    counts = np.array([40, 7, 3, 1])
    margins = jax.jit(topkloss.ldam_margins)(jnp.asarray(counts))
    np.testing.assert_allclose(np.asarray(margins), ref.ldam_margins(counts), rtol=1e-14)


def test_import_draws_no_framework():
    code = (
        "import sys, numpy as np, topkloss\n"
        "topkloss.noised_topk_hinge(np.zeros((2, 4)), np.array([0, 1]), k=2, seed=0)\n"
        "loaded = {'torch', 'jax', 'cupy'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- LDAM margins and the imbalanced hinge ----------------------------------------------------------
def test_ldam_margins_match_reference(xp, dtype):
    counts = np.array([5000, 1200, 300, 80, 20, 5, 1])
    rtol = 1e-14 if "64" in str(dtype) else 1e-6
    assert_close(topkloss.ldam_margins(asarray(xp, counts, dtype)), ref.ldam_margins(counts), rtol=rtol)
    got = topkloss.ldam_margins(asarray(xp, counts), max_margin=0.5, power=0.5)
    assert xp.isdtype(got.dtype, "real floating")
    assert_close(got, ref.ldam_margins(counts, 0.5, 0.5), rtol=1e-6)  # float32 for torch's default dtype


def test_ldam_margins_from_a_list():
    np.testing.assert_allclose(topkloss.ldam_margins([16, 1]), [0.1, 0.2], rtol=1e-15)


def test_imbalanced_hinge_with_margins_from_class_counts(xp, dtype):
    """Long-tailed classes: rare classes get larger margins, picked by each row's label."""
    counts = np.array([4000, 1000, 250, 60, 15, 4, 1])
    s, y = _data(batch=14, seed=21)
    y = np.arange(14) % 7
    z = _noise(14, 5, 7)
    margins = topkloss.ldam_margins(asarray(xp, counts, dtype), max_margin=0.2)
    rtol, atol = _tol(dtype)
    s = s * 0.05  # cosine-like scores, scaled by 30 as in the paper's imbalanced setting
    kw = dict(k=2, epsilon=0.01, n_samples=5, scale=30.0, reduction="none")
    value, grad = noised_vg(asarray(xp, s, dtype), asarray(xp, y), margin=margins, noise=asarray(xp, z, dtype), **kw)
    want_value, want_grad = ref.noised_topk_hinge(s, y, 2, z, 0.01, ref.ldam_margins(counts), 30.0)
    assert_close(value, want_value, rtol=rtol, atol=30 * atol)
    assert_close(grad, want_grad, rtol=0, atol=1e-5 if "32" in str(dtype) else 1e-13)
    assert np.all(np.diff(ref.ldam_margins(counts)) > 0)  # margins grow as the classes get rarer


# --- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(epsilon=-0.1), ValueError, "epsilon must be >= 0; got -0.1"),
        (dict(epsilon="1"), TypeError, "epsilon must be a real number"),
        (dict(epsilon=math.inf), ValueError, "epsilon must be finite"),
        (dict(n_samples=0), ValueError, "n_samples must be >= 1; got 0"),
        (dict(n_samples=2.0), TypeError, "n_samples must be an integer"),
        (dict(noise=np.zeros((4, 3, 5))), ValueError, "noise must have shape \\(batch, n_samples, n_classes\\) = \\(4, 5, 5\\); got \\(4, 3, 5\\)"),
        (dict(noise=np.zeros((4, 5))), ValueError, "noise must have shape"),
        (dict(noise=np.zeros((4, 5, 5), dtype=int)), TypeError, "noise must have a real floating dtype"),
        (dict(noise=np.zeros((4, 5, 5)), seed=0), ValueError, "give noise, or seed / key to draw it, not both"),
        (dict(seed="0"), TypeError, "seed must be an int in \\[0, 2\\*\\*63 - 1\\] or a generator"),
        (dict(seed=-1), ValueError, "seed must be in \\[0, 9223372036854775807\\]; got -1"),
        (dict(seed=0, key=0), ValueError, "give seed or key, not both"),
        (dict(key=0), TypeError, "key is a JAX PRNG key, for JAX arrays"),
        (dict(margin=np.ones(4)), ValueError, "margin must have shape \\(n_classes,\\) = \\(5,\\); got \\(4,\\)"),
        (dict(margin=np.ones((1, 5))), ValueError, "margin must have shape"),
        (dict(margin=np.array(1.0)), ValueError, "margin must have shape"),
        (dict(margin=np.ones(5, dtype=complex)), TypeError, "margin must have a real dtype"),
        (dict(margin=math.nan), ValueError, "margin must be finite"),
        (dict(margin=np.array([1.0, np.nan, 1.0, 1.0, 1.0])), ValueError, "margin must be finite; got 1 entries"),
        (dict(margin=np.array([1.0, np.inf, -np.inf, 1.0, 1.0])), ValueError, "margin must be finite; got 2 entries"),
        (dict(scale=0.0), ValueError, "scale must be > 0; got 0.0"),
        (dict(k=5), ValueError, "k must be in \\[1, 4\\] for n_classes = 5; got 5"),
        (dict(k=0), ValueError, "k must be in \\[1, 4\\]"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
    ],
)
def test_bad_input(kwargs, error, match):
    s, y = _data(batch=4, n=5, seed=22)
    shared = {a: b for a, b in kwargs.items() if a in ("margin", "scale", "k", "reduction")}
    with pytest.raises(error, match=match):
        topkloss.noised_topk_hinge(s, y, **{"k": 2, **kwargs})
    if shared:  # the same message from the hard hinge
        with pytest.raises(error, match=match):
            topkloss.topk_hinge(s, y, **{"k": 2, **shared})


def test_arrays_of_another_library_are_type_errors():
    torch = pytest.importorskip("torch")
    s, y = _data(batch=4, n=5)
    S, Y = torch.asarray(s), torch.asarray(y)
    with pytest.raises(TypeError, match="scores, margin must be arrays of one array library"):
        topkloss.topk_hinge(S, Y, k=2, margin=np.ones(5))
    with pytest.raises(TypeError, match="scores, noise must be arrays of one array library"):
        topkloss.noised_topk_hinge(S, Y, k=2, noise=np.zeros((4, 5, 5)))
    with pytest.raises(TypeError, match="seed must be an int in"):
        topkloss.noised_topk_hinge(S, Y, k=2, seed=np.random.RandomState(0))


def test_seed_range_is_the_same_on_every_backend(xp):
    """The largest seed JAX's keys take works everywhere; one more is a ValueError naming seed
    everywhere (torch failed deep inside manual_seed at 2**64, NumPy took any size)."""
    s, y = _data(batch=4, n=5)
    S, Y = asarray(xp, s), asarray(xp, y)
    a = topkloss.noised_topk_hinge(S, Y, k=2, seed=2**63 - 1)
    b = topkloss.noised_topk_hinge(S, Y, k=2, seed=2**63 - 1)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    for bad in (2**63, 2**64):
        with pytest.raises(ValueError, match=f"seed must be in \\[0, 9223372036854775807\\]; got {bad}"):
            topkloss.noised_topk_hinge(S, Y, k=2, seed=bad)


def test_bad_jax_key():
    jnp = available("jax")
    s, y = _data(batch=4, n=5)
    with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
        topkloss.noised_topk_hinge(jnp.asarray(s), jnp.asarray(y), k=2, key=jnp.zeros(3))
    with pytest.raises(TypeError, match="seed must be an int"):
        topkloss.noised_topk_hinge(jnp.asarray(s), jnp.asarray(y), k=2, seed=1.5)


@pytest.mark.parametrize(
    "counts, kwargs, error, match",
    [
        (np.array([3, 0, 2]), {}, ValueError, "class_counts must be positive; got values in \\[0"),
        (np.array([3.0, -1.0]), {}, ValueError, "class_counts must be positive"),
        (np.array([3.0, np.nan]), {}, ValueError, "class_counts must be positive"),
        (np.array([3.0, np.inf]), {}, ValueError, "class_counts must be finite; got 1 entries"),
        (np.ones((2, 2)), {}, ValueError, "class_counts must be a non-empty 1-D array"),
        (np.ones(0), {}, ValueError, "class_counts must be a non-empty 1-D array"),
        (np.array([True, True]), {}, TypeError, "class_counts must have a real dtype"),
        (np.array([3, 2]), dict(max_margin=-0.1), ValueError, "max_margin must be >= 0"),
        (np.array([3, 2]), dict(power=-1.0), ValueError, "power must be >= 0"),
        (np.array([3, 2]), dict(power="a"), TypeError, "power must be a real number"),
    ],
)
def test_ldam_margins_bad_input(counts, kwargs, error, match):
    with pytest.raises(error, match=match):
        topkloss.ldam_margins(counts, **kwargs)

"""Helpers of the core with a native path per backend and a standard-only fallback: each path
against a NumPy statement of what it must return (array-api-strict takes the fallbacks)."""

from __future__ import annotations

import numpy as np
import pytest
from backends import asarray, to_numpy

from topkloss.adapters import namespace
from topkloss.core import ops


@pytest.mark.parametrize("add", [False, True], ids=["write", "add"])
def test_put_columns(xp, add):
    rng = np.random.default_rng(0)
    base, values = rng.normal(size=(4, 7)), rng.normal(size=(4, 3))
    idx = np.stack([rng.permutation(7)[:3] for _ in range(4)])  # distinct within a row
    want = base.copy()
    for b in range(4):
        want[b, idx[b]] = want[b, idx[b]] + values[b] if add else values[b]
    x = asarray(xp, base, xp.float64)
    ns = namespace(x)
    got = ops.put_columns(ns, x, asarray(xp, values, xp.float64), asarray(xp, idx), add=add)
    np.testing.assert_array_equal(to_numpy(got), want)


@pytest.mark.parametrize("n", [6, 3000])
def test_nan_rows(xp, n):
    """NaN exactly on the rows that hold a NaN, wherever it is; infinities are not NaN. 3000
    classes: XLA's CPU ``max`` passes over a NaN in rows this long (the reason JAX takes
    ``any(isnan)``)."""
    x = np.random.default_rng(1).normal(size=(6, n))
    x[0, 0], x[1, n // 2], x[2, n - 1] = np.nan, np.nan, np.nan
    x[3, :2] = [np.inf, -np.inf]
    x[4, 1] = -np.inf
    a = asarray(xp, x, xp.float32)
    ns = namespace(a)
    got = to_numpy(ops.nan_rows(ns, a, asarray(xp, np.arange(6.0), xp.float32)))
    np.testing.assert_array_equal(got, [np.nan, np.nan, np.nan, 3.0, 4.0, 5.0])


def test_top_k_standard_columns_are_distinct(xp):
    """The standard-only top-k (array-api-strict, Dask): k distinct columns, ties and -inf to the
    lowest index not taken yet, even in rows with fewer than k finite entries (its argmax of the
    values alone returned column 0 again and again there)."""
    rows = np.array([[0.5, -np.inf, -np.inf, -np.inf], [-np.inf] * 4, [1.0, 2.0, 2.0, -np.inf], [np.nan, 1.0, 0.0, -1.0]])
    x = asarray(xp, rows, xp.float64)
    values, cols = ops.top_k_standard(namespace(x), x, 3)
    np.testing.assert_array_equal(to_numpy(cols), [[0, 1, 2], [0, 1, 2], [1, 2, 0], [0, 1, 2]])
    np.testing.assert_array_equal(to_numpy(values), [[0.5, -np.inf, -np.inf], [-np.inf] * 3, [2.0, 2.0, 1.0], [np.nan, 1.0, 0.0]])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_top_k_and_mask_follow_the_tie_rule(xp, k):
    """Ties at the k-th value: the lowest indices first, in the one-top-k path (JAX) and the
    values-then-mask path alike; the values are the k largest in any order."""
    rows = np.array([[1.0, 3.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0], [0.0, 5.0, 1.0, 4.0, 1.0, 1.0]])
    heavy = np.random.default_rng(k).integers(0, 3, size=(40, 6)).astype(np.float64)  # ties everywhere
    rows = np.concatenate([rows, heavy])
    want = np.zeros(rows.shape, dtype=bool)
    for b, row in enumerate(rows):
        want[b, sorted(range(row.size), key=lambda j: (-row[j], j))[:k]] = True
    x = asarray(xp, rows, xp.float64)
    ns = namespace(x)
    values, mask = ops.top_k_and_mask(ns, x, k)
    np.testing.assert_array_equal(to_numpy(mask), want)
    np.testing.assert_array_equal(np.sort(to_numpy(values), axis=-1), np.sort(rows[want].reshape(len(rows), k), axis=-1))
    np.testing.assert_array_equal(to_numpy(ops.topk_mask(ns, x, k)), want)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_topk_mask_without_ties_at_the_boundary(xp, k):
    """Ties above and below the k-th value but none across it in any row: on NumPy and eager
    torch the entries >= the k-th value are the mask (one compare, no running count); the
    test above, with ties at the k-th value, takes the running count."""
    rng = np.random.default_rng(k)
    rows = []
    for _ in range(30):
        top = rng.permutation(np.repeat([9.0, 8.0, 7.0], 2))[: k - 1]  # ties among the first k - 1
        rest = rng.integers(0, 3, size=12 - k).astype(np.float64)  # ties below the k-th value
        row = np.concatenate([top, [5.0], rest])
        rows.append(rng.permutation(row))
    rows = np.stack(rows)
    want = rows >= 5.0
    assert np.all(want.sum(axis=1) == k)
    x = asarray(xp, rows, xp.float64)
    ns = namespace(x)
    np.testing.assert_array_equal(to_numpy(ops.topk_mask(ns, x, k)), want)
    np.testing.assert_array_equal(to_numpy(ops.top_k_and_mask(ns, x, k)[1]), want)


def test_topk_mask_on_a_host_counts_only_with_a_tie_at_the_boundary():
    """On NumPy the running count runs only when some row has a tie across the k-th value."""
    import types

    import array_api_compat.numpy as real

    counts = []

    def cumulative_sum(*args, **kwargs):
        counts.append(1)
        return real.cumulative_sum(*args, **kwargs)

    ns = types.SimpleNamespace(**{n: getattr(real, n) for n in dir(real) if not n.startswith("__")})
    ns.__name__, ns.cumulative_sum = real.__name__, cumulative_sum
    free = np.array([[3.0, 1.0, 3.0, 0.0], [2.0, 4.0, 5.0, 2.0]])  # k = 2: no tie across the 2nd value
    np.testing.assert_array_equal(ops.topk_mask(ns, free, 2), free >= np.array([[3.0], [4.0]]))
    assert counts == []
    tied = np.array([[3.0, 1.0, 3.0, 0.0], [2.0, 5.0, 2.0, 1.0]])  # row 2: 5, then 2 twice for one place
    np.testing.assert_array_equal(ops.topk_mask(ns, tied, 2), [[True, False, True, False], [True, True, False, False]])
    assert counts == [1]


def test_fma_and_gathers(xp):
    """fma is acc + a * b with broadcasting (one addcmul in torch); take_rows and take_columns
    gather by non-negative indices (torch's take_along_dim directly)."""
    rng = np.random.default_rng(1)
    acc, a, b = rng.normal(size=(1, 3, 4)), rng.normal(size=(2, 3, 4)), rng.normal(size=(1, 3, 4))
    ns = namespace(asarray(xp, acc, xp.float64))
    got = ops.fma(ns, *(asarray(xp, v, xp.float64) for v in (acc, a, b)))
    # fused or not, each entry is within two roundings of the exact acc + a * b
    bound = 2 * np.finfo(np.float64).eps * (np.abs(acc) + np.abs(a * b))
    assert to_numpy(got).shape == (2, 3, 4)
    assert np.all(np.abs(to_numpy(got) - (acc + a * b)) <= bound)
    x, idx = rng.normal(size=(4, 7)), rng.integers(0, 7, size=(4, 3)).astype(np.int32)  # int32: torch's cast
    xa = asarray(xp, x, xp.float64)
    np.testing.assert_array_equal(to_numpy(ops.take_columns(ns, xa, asarray(xp, idx))), np.take_along_axis(x, idx, axis=-1))
    np.testing.assert_array_equal(to_numpy(ops.take_rows(ns, xa, asarray(xp, idx[:, 0]))), x[np.arange(4), idx[:, 0]])


@pytest.mark.parametrize("exponentiate", [True, False], ids=["exp", "gaps"])
def test_exp_gaps(xp, exponentiate):
    """exp(clip(x - c, lo, 0) / scale): subtracted, clipped, divided with one rounding each (the
    same bits as NumPy's float64 steps), for -inf entries, entries above c (clipped to 0) and
    below lo; in place in x on NumPy and eager torch, where x is a temporary the caller owns."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 9)) * 50
    x[0, 1], x[2, 4] = -np.inf, -np.inf
    c = np.sort(x, axis=-1)[:, -3:-2]  # the third largest: two entries of each row above it
    lo, scale = -60.0, 7.0
    gaps = np.clip(x - c, lo, 0.0) / scale
    assert np.any(x - c > 0) and np.any(x - c < lo)
    xa = asarray(xp, x, xp.float64)
    ns = namespace(xa)
    got = to_numpy(ops.exp_gaps(ns, xa, asarray(xp, c, xp.float64), lo, scale, exponentiate=exponentiate))
    want = np.exp(gaps) if exponentiate else gaps
    # a few ulps: libraries' exp differ, and XLA may divide by a constant as a product
    np.testing.assert_allclose(got, want, rtol=8 * np.finfo(np.float64).eps, atol=0)
    if exponentiate:
        assert np.all(got[x - c >= 0] == 1.0)
        np.testing.assert_allclose(got[0, 1], np.exp(lo / scale), rtol=8 * np.finfo(np.float64).eps)  # -inf: clipped to lo
    if isinstance(xa, np.ndarray) or hasattr(xa, "is_contiguous"):  # NumPy, torch: in place, the standard steps' bits
        x2, c2 = asarray(xp, x, xp.float64), asarray(xp, c, xp.float64)
        standard = ops.clip(ns, x2 - c2, lo, 0.0) / scale
        standard = to_numpy(ns.exp(standard) if exponentiate else standard)
        np.testing.assert_array_equal(to_numpy(ops.exp_gaps(ns, x2, c2, lo, scale, exponentiate=exponentiate)), standard)
        np.testing.assert_array_equal(to_numpy(x2), standard)  # written into x itself


def test_times_rows(xp):
    """x times a per-row column: the standard product's values, in place in x on NumPy and
    eager torch (x is a temporary the caller owns)."""
    rng = np.random.default_rng(5)
    x, v = rng.normal(size=(4, 7)), rng.normal(size=(4, 1))
    xa = asarray(xp, x, xp.float64)
    got = ops.times_rows(namespace(xa), xa, asarray(xp, v, xp.float64))
    np.testing.assert_array_equal(to_numpy(got), x * v)
    if isinstance(xa, np.ndarray) or hasattr(xa, "is_contiguous"):
        np.testing.assert_array_equal(to_numpy(xa), x * v)  # written into x itself


def xp_transpose(xp, a):
    """A contiguous transposed copy of a 2-D array of the backend ``xp``."""
    ns = namespace(a)
    return ns.asarray(ns.permute_dims(a, (1, 0)), copy=True)


@pytest.mark.parametrize("cut", [False, True], ids=["whole", "stop"])
@pytest.mark.parametrize("axis", [0, -1], ids=["nodes-first", "nodes-last"])
@pytest.mark.parametrize("pairs", [0, 1, 3])
@pytest.mark.parametrize("rows", [4, ops.FMA_HALVES_MIN // 8], ids=["small", "in-place"])
def test_fma_halves(xp, rows, pairs, axis, cut):
    """Both halves of a child level, concatenated: each half within two roundings per term of
    base + sum(u * v) (fused or not), on the standard path and the in-place one (NumPy and eager
    torch, halves of FMA_HALVES_MIN entries and more); with ``stop``, the first ``stop`` entries
    of that, as one contiguous array; the inputs are left as they were."""
    rng = np.random.default_rng(pairs)
    base = rng.normal(size=(rows, 8))
    first = [tuple(rng.normal(size=(rows, 8)) for _ in range(2)) for _ in range(pairs)]
    second = [tuple(rng.normal(size=(rows, 8)) for _ in range(2)) for _ in range(pairs)]
    ns = namespace(asarray(xp, base, xp.float64))

    def dev(terms):
        return [tuple(asarray(xp, v, xp.float64) for v in pair) for pair in terms]

    args = (asarray(xp, base, xp.float64), dev(first), dev(second))
    stop = 2 * rows - 3 if cut else None
    if axis == 0:
        out = ops.fma_halves(ns, *args, stop=stop)
    else:  # the same halves with the nodes on the last axis: transposed in, transposed back
        t = lambda a: xp_transpose(xp, a)
        out = ops.fma_halves(ns, t(args[0]), [tuple(map(t, p)) for p in args[1]], [tuple(map(t, p)) for p in args[2]], axis=-1, stop=stop)
    got = to_numpy(out) if axis == 0 else to_numpy(out).T
    assert got.shape == ((stop or 2 * rows), 8)
    in_place = rows >= ops.FMA_HALVES_MIN // 8 and (isinstance(out, np.ndarray) or hasattr(out, "is_contiguous"))
    if in_place:  # one array, not a view of a longer one
        assert out.flags.c_contiguous if isinstance(out, np.ndarray) else out.is_contiguous()
    for part, terms in ((got[:rows], first), (got[rows:], second)):
        size = part.shape[0]
        want = base[:size] + sum((u[:size] * v[:size] for u, v in terms), np.zeros_like(base[:size]))
        bound = 2 * pairs * np.finfo(np.float64).eps * (np.abs(base[:size]) + sum((np.abs(u[:size] * v[:size]) for u, v in terms), np.zeros_like(base[:size])))
        assert np.all(np.abs(part - want) <= bound)
    np.testing.assert_array_equal(to_numpy(args[0]), base)
    for given, terms in ((args[1], first), (args[2], second)):
        for pair, orig in zip(given, terms):
            for a, b in zip(pair, orig):
                np.testing.assert_array_equal(to_numpy(a), b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_masked_row_sums_and_scales(xp, dtype):
    """sum_outside and scale_rows_where (NumPy: einsum, a ufunc's where=) give the standard
    expressions: the same products exactly, and sums of the same non-negative terms within
    their rounding; inputs untouched."""
    rng = np.random.default_rng(2)
    x = rng.random(size=(6, 40)).astype(dtype)
    x[0] = 0.0
    mask = rng.random(size=(6, 40)) < 0.2
    on, off = rng.normal(size=6).astype(dtype), rng.normal(size=6).astype(dtype)
    xa, ma = asarray(xp, x), asarray(xp, mask)
    ns = namespace(xa)
    before = to_numpy(xa).copy()
    got = to_numpy(ops.sum_outside(ns, xa, ma))
    want = np.where(mask, 0.0, x).sum(axis=-1)
    np.testing.assert_allclose(got, want, rtol=40 * np.finfo(dtype).eps)
    assert got[0] == 0.0 and got.dtype == np.dtype(dtype)
    got = to_numpy(ops.scale_rows_where(ns, xa, ma, asarray(xp, on), asarray(xp, off)))
    np.testing.assert_array_equal(got, x * np.where(mask, on[:, None], off[:, None]))
    np.testing.assert_array_equal(to_numpy(xa), before)


def test_fusion_barrier():
    """Under jax.jit on a CPU, a level passes through a conditional (a boundary XLA's fusion
    keeps) with its values unchanged, NaN and -0.0 included; eager, under vmap and on other
    backends it is the level itself."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    level = [np.array([[np.nan, -0.0, 2.5], [1.0, np.inf, -3.0]], dtype=np.float32), np.ones((2, 3), np.float32)]
    assert ops.fusion_barrier(np, level) is level
    xs = [jnp.asarray(a) for a in level]
    assert ops.fusion_barrier(jnp, xs) is xs  # eager: nothing to fuse
    for first in (level[0], np.abs(level[0])):  # the probe NaN or not: either branch
        xs = [jnp.asarray(first), jnp.asarray(level[1])]
        f = jax.jit(lambda t: ops.fusion_barrier(jnp, t))
        out = f(xs)
        for got, want in zip(out, xs):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
            assert np.array_equal(np.signbit(np.asarray(got)), np.signbit(np.asarray(want)))
        single = jax.jit(lambda a: ops.fusion_barrier(jnp, a))(xs[0])  # one (stacked) array
        np.testing.assert_array_equal(np.asarray(single), np.asarray(xs[0]))
    if jax.default_backend() == "cpu":
        assert "conditional(" in jax.jit(lambda t: ops.fusion_barrier(jnp, t)).lower(xs).compile().as_text()
    batched = jax.vmap(lambda a: ops.fusion_barrier(jnp, [a])[0])(jnp.asarray(level[0]))
    np.testing.assert_array_equal(np.asarray(batched), level[0])


LONG_ROW_KINDS = ["normal", "ties", "three-values", "mostly-neg-inf", "inf", "nan"]


def _long_rows(rng, kind, batch, n):
    """float32 rows for the top-k forms of long rows: normal, ties, few values, infinities, NaN."""
    x = rng.normal(size=(batch, n)).astype(np.float32)
    if kind == "ties":
        x = np.round(x * 2) / 2
    elif kind == "three-values":
        x = rng.integers(0, 3, size=(batch, n)).astype(np.float32)
    elif kind == "mostly-neg-inf":
        x[:, rng.random(n) < 0.999] = -np.inf
    elif kind == "inf":
        x[:, rng.integers(0, n, 3)] = np.inf
        x[0, 1] = -np.inf
    elif kind == "nan":
        x[0, 7], x[-1, -1] = np.nan, np.nan
    return x


@pytest.mark.parametrize("kind", LONG_ROW_KINDS)
def test_jax_top_k_of_long_rows_equals_lax_top_k(kind):
    """Long rows on a CPU take the blocked top-k (block maxima, then the top k of the best
    blocks): the same values and indices as ``lax.top_k``, ties (lower index first), infinities
    and NaN (which the plain top-k answers) included, with and without jit, and under vmap."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    if jax.default_backend() != "cpu":
        pytest.skip("the blocked top-k is for CPUs")
    rng = np.random.default_rng(7)
    for batch, n, k in ((6, 2048, 5), (5, 2061, 5), (4, 5131, 20), (3, 4000, 1), (7, 3001, 2)):
        x = _long_rows(rng, kind, batch, n)
        xj = jnp.asarray(x)
        assert ops.blocked_top_k_applies(n, k)  # sizes of the blocked path
        want_v, want_i = (np.asarray(a) for a in jax.lax.top_k(xj, k))
        paths = {"eager": ops.top_k(jnp, xj, k), "jit": jax.jit(lambda a, k=k: ops.top_k(jnp, a, k))(xj)}
        if kind != "nan":  # the blocked form itself (top_k sends arrays holding a NaN past it)
            paths["blocked"] = jax.jit(lambda a, k=k: ops._blocked_top_k(jnp, jax.lax, a, k))(xj)
        # vmapped over a leading axis (the predicate batched: both branches, selected)
        v, i = jax.vmap(lambda a, k=k: ops.top_k(jnp, a, k))(xj[None, ...])
        paths["vmap"] = (v[0], i[0])
        for name, (v, i) in paths.items():
            np.testing.assert_array_equal(np.asarray(v), want_v, err_msg=name)
            np.testing.assert_array_equal(np.asarray(i), want_i, err_msg=name)


@pytest.mark.parametrize("n", [3 * ops.NUMPY_GROUPED_MIN + 5, 20005], ids=["slices", "reshaped"])
@pytest.mark.parametrize("kind", LONG_ROW_KINDS)
@pytest.mark.parametrize("k", [1, 6, 21])
def test_numpy_selection_among_group_candidates(kind, k, n):
    """Long NumPy rows select among the candidates of group maxima (``ops._grouped_candidates``):
    ``_partition_top`` gives the row's k largest values (the multiset, the k-th at k - 1) and
    ``top_k`` values largest first with indices that hold them, as the full ``partition`` does,
    with a tail of columns outside the groups (n not a multiple of the group). The maxima of
    slices, and of a reshaped view in wider rows, where k = 1 takes groups of 64."""
    import array_api_compat.numpy as cnp

    rng = np.random.default_rng(k)
    batch = 7
    assert (n >= ops.GROUP_MAXIMA_RESHAPE_MIN) == (n == 20005)
    assert ops.top_k_group(n, k) == (64 if (n, k) == (20005, 1) else ops.TOP_K_GROUP)
    x = _long_rows(rng, kind, batch, n)
    x[1, -3:] = 50.0  # a row's largest values in the tail
    assert ops._grouped_applies(cnp, x, k)
    before = x.copy()
    want = np.flip(np.partition(x, n - k, axis=-1)[:, n - k :], axis=-1)  # NaN ranks largest
    got = ops._partition_top(cnp, x, k)
    np.testing.assert_array_equal(np.sort(got, axis=-1), np.sort(want, axis=-1))
    np.testing.assert_array_equal(got[:, k - 1], want[:, k - 1])
    values, idx = ops.top_k(cnp, x, k)
    if kind != "nan":  # largest first (a NaN's place in a descending sort is the sort's choice)
        np.testing.assert_array_equal(values, -np.sort(-want, axis=-1))
    np.testing.assert_array_equal(np.sort(values, axis=-1), np.sort(want, axis=-1))
    np.testing.assert_array_equal(np.take_along_axis(x, idx, axis=-1), values)
    assert all(len(set(row)) == k for row in idx.tolist())
    np.testing.assert_array_equal(x, before)


def test_top_k_group_balances_maxima_and_candidates():
    """The group size: a power of two from TOP_K_GROUP up, the largest with BALANCE k g^2 <= n;
    never so wide that fewer than k groups remain."""
    assert ops.top_k_group(1000, 6) == ops.top_k_group(10000, 6) == 16
    assert ops.top_k_group(100000, 6) == 64 and ops.top_k_group(100000, 21) == 32
    for n in (1000, 4000, 25000, 10**5, 10**6):
        for k in (1, 6, 21):
            g = ops.top_k_group(n, k)
            assert g >= ops.TOP_K_GROUP and g & (g - 1) == 0 and n // g > k
            assert g == ops.TOP_K_GROUP or ops.TOP_K_GROUP_BALANCE * k * g * g <= n
            assert ops.TOP_K_GROUP_BALANCE * k * (2 * g) ** 2 > n


def test_numpy_group_candidates_route_by_width():
    """Rows below ``max(NUMPY_GROUPED_MIN, 4 k TOP_K_GROUP)`` keep the full selection; NumPy only."""
    import array_api_compat.numpy as cnp

    n = ops.NUMPY_GROUPED_MIN
    assert ops._grouped_applies(cnp, np.zeros((2, n)), 5) and not ops._grouped_applies(cnp, np.zeros((2, n - 1)), 5)
    wide_k = n // (4 * ops.TOP_K_GROUP) + 1
    assert not ops._grouped_applies(cnp, np.zeros((2, n)), wide_k)
    assert not ops._grouped_applies(cnp, np.zeros((2, 3, n)), 5)
    from conftest import available

    strict = available("array_api_strict")
    assert not ops._grouped_applies(strict, strict.zeros((2, n)), 5)


@pytest.mark.parametrize("name", ["numpy", "cupy"])
def test_partition_top_of_each_numpy_like_form(name):
    """Both forms of the NumPy-like selection (NumPy's top of ``partition(x, n - k)``, CuPy's
    ``-partition(-x, k - 1)``), run here on NumPy arrays through a namespace of that name: the
    first k entries are the k largest, the k-th largest at k - 1; ties and signed zeros kept."""
    import types

    rng = np.random.default_rng(5)
    rows = np.concatenate([rng.normal(size=(6, 40)), rng.integers(-2, 3, size=(20, 40)).astype(np.float64)])
    rows[0, :5] = -0.0
    xp = types.SimpleNamespace(__name__=name, partition=np.partition, flip=np.flip)
    for k in (1, 3, 17, 40):
        top = ops._partition_top(xp, rows, k)
        want = -np.sort(-rows, axis=-1)[:, :k]
        np.testing.assert_array_equal(np.sort(top, axis=-1), np.sort(want, axis=-1))
        np.testing.assert_array_equal(top[:, k - 1], want[:, k - 1])
    assert not np.signbit(ops._partition_top(xp, np.array([[0.0, -1.0]]), 1)).any()


def test_top_k_by_rank_cupys_form():
    """CuPy's top-k with indices (ranks of the mask's entries, no row sort), run here on NumPy
    arrays through a namespace of CuPy's name: the values largest first, the indices holding
    them, ties lowest index first (the order of a stable descending sort); k = 1 to n."""
    import types

    import array_api_compat.numpy as cnp

    xp = types.SimpleNamespace(**{**vars(cnp), "__name__": "array_api_compat.cupy"})
    rng = np.random.default_rng(4)
    rows = np.concatenate([rng.normal(size=(6, 12)), rng.integers(0, 3, size=(30, 12)).astype(np.float64)])
    rows[0, 3:6] = -0.0
    stable = np.argsort(-rows, axis=-1, kind="stable")
    for k in (1, 2, 5, 12):
        vals, idx = ops._top_k_by_rank(xp, rows, k)
        np.testing.assert_array_equal(idx, stable[:, :k])
        np.testing.assert_array_equal(vals, np.take_along_axis(rows, stable[:, :k], axis=-1))


@pytest.mark.parametrize("threshold", [0, 10**9], ids=["by-rank", "argpartition"])
def test_cupy_top_k_routes_by_size(monkeypatch, threshold):
    """CuPy's top_k takes the ranks from CUPY_RANK_TOP_K_MIN entries up, argpartition below;
    each gives the k largest, largest first, at distinct indices that hold them."""
    import types

    import array_api_compat.numpy as cnp

    monkeypatch.setattr(ops, "CUPY_RANK_TOP_K_MIN", threshold)
    calls = []
    for name in ("_top_k_by_rank", "_argpartition_top_k"):
        real = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    xp = types.SimpleNamespace(**{**vars(cnp), "__name__": "cupy"})
    rows = np.random.default_rng(6).integers(0, 4, size=(20, 15)).astype(np.float32)
    vals, idx = ops.top_k(xp, rows, 4)
    assert calls == ["_top_k_by_rank" if threshold == 0 else "_argpartition_top_k"]
    np.testing.assert_array_equal(vals, -np.sort(-rows, axis=-1)[:, :4])
    np.testing.assert_array_equal(np.take_along_axis(rows, idx, axis=-1), vals)
    assert all(len(set(r)) == 4 for r in idx.tolist())


def test_top_k_values_and_indices(xp):
    """top_k on every backend: the k largest values of each row, largest first, and distinct
    indices at which the row holds them (heavy ties included; k = n too)."""
    rng = np.random.default_rng(3)
    rows = np.concatenate([rng.normal(size=(6, 9)), rng.integers(0, 3, size=(30, 9)).astype(np.float64)])
    x = asarray(xp, rows, xp.float64)
    ns = namespace(x)
    for k in (1, 4, 9):
        vals, idx = (to_numpy(a) for a in ops.top_k(ns, x, k))
        assert vals.shape == idx.shape == (rows.shape[0], k)
        np.testing.assert_array_equal(vals, -np.sort(-rows, axis=-1)[:, :k])
        np.testing.assert_array_equal(np.take_along_axis(rows, idx.astype(np.int64), axis=-1), vals)
        assert all(len(set(r)) == k for r in idx.tolist())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_torch_top_k_of_rows_padded_to_the_heap(monkeypatch, dtype, k):
    """Eager torch on a CPU may pad rows with -inf to ``TORCH_HEAP_TOP_K k`` entries before
    ``torch.topk`` (forced here, whatever the cost model says): the values are the row's k
    largest, largest first, at distinct indices inside the row that hold them; rows of ties,
    of -inf (a row with fewer than k finite entries, one all -inf) and with a NaN included.
    The input is not modified."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as ctorch

    rng = np.random.default_rng(k)
    n = 40
    rows = np.concatenate([rng.normal(size=(8, n)), rng.integers(0, 3, size=(20, n)).astype(np.float64)])
    rows[0, 2:] = -np.inf  # two finite entries
    rows[1, :] = -np.inf
    rows[2, 7] = np.nan
    x = torch.asarray(rows.astype(dtype))
    before = x.clone()
    widths = []
    real_topk = ctorch.topk
    monkeypatch.setattr(ctorch, "topk", lambda a, *args, **kw: widths.append(a.shape[-1]) or real_topk(a, *args, **kw))
    monkeypatch.setattr(ops, "torch_pads_top_k", lambda rows, n, k, threads: True)
    vals, idx = ops.top_k(ctorch, x, k)
    assert widths == [ops.TORCH_HEAP_TOP_K * k]
    want_v = real_topk(before, k, dim=-1)[0]
    torch.testing.assert_close(vals, want_v, equal_nan=True, rtol=0, atol=0)
    assert int(idx.max()) < n and all(len(set(r)) == k for r in idx.tolist())
    torch.testing.assert_close(torch.take_along_dim(before, idx, dim=-1), vals, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(x, before, equal_nan=True, rtol=0, atol=0)


def test_torch_pads_top_k_where_its_cost_model_says():
    """The cost model of ATen's two CPU selections (``benchmarks/torch_top_k.py`` prints both
    forms' times beside it): padding only below ``TORCH_HEAP_TOP_K k`` entries and from k up;
    k = 5 at 256 x 100 pads on two threads (the padded rows split into two tasks, the row as
    is in one) but not on one; 256 x 100 at k = 20 not on one or two threads (1280 entries
    against 100), but on eight (eight tasks against one)."""
    heap = ops.TORCH_HEAP_TOP_K
    assert not ops.torch_pads_top_k(256, 5 * heap, 5, 2) and not ops.torch_pads_top_k(256, 4, 5, 2)
    assert ops.torch_pads_top_k(256, 100, 5, 2) and not ops.torch_pads_top_k(256, 100, 5, 1)
    assert ops.torch_pads_top_k(256, 300, 5, 1) and ops.torch_pads_top_k(256, 5 * heap - 1, 5, 1)
    assert not any(ops.torch_pads_top_k(256, 100, 20, t) for t in (1, 2)) and ops.torch_pads_top_k(256, 100, 20, 8)
    assert ops.torch_pads_top_k(256, 1000, 20, 2)


def test_torch_top_k_pads_only_eager_floating_cpu_rows(monkeypatch):
    """No padding for integer rows (no -inf to pad with) nor, like the grouped form, while
    torch.compile traces; the cost model decides for floating rows on a CPU."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as ctorch

    threads = torch.get_num_threads()
    x = torch.zeros((256, 100))
    assert ops._torch_pads(ctorch, x, 5) == ops.torch_pads_top_k(256, 100, 5, threads)
    assert not ops._torch_pads(ctorch, torch.zeros((256, 100), dtype=torch.int64), 5)
    assert not ops._torch_pads(ctorch, torch.zeros((256, 5 * ops.TORCH_HEAP_TOP_K)), 5)
    monkeypatch.setattr(ops, "torch_pads_top_k", lambda rows, n, k, threads: True)
    assert ops._torch_pads(ctorch, x, 5)
    monkeypatch.setattr(ops, "_torch_compiling", lambda: True)  # as while torch.compile traces
    assert not ops._torch_pads(ctorch, x, 5) and not ops._torch_grouped(ctorch, torch.zeros((2, 10000)), 5)


@pytest.mark.parametrize("n", [ops.TORCH_GROUPED_MIN + 5, 100003], ids=["one-level", "two-level"])
@pytest.mark.parametrize("kind", LONG_ROW_KINDS)
@pytest.mark.parametrize("k", [1, 6, 15])
def test_torch_selection_among_group_candidates(kind, k, n):
    """Long rows on eager torch (CPU) select among the candidates of group maxima: the values
    equal ``torch.topk``'s (largest first; NaN, which it ranks largest, included), at distinct
    indices that hold them, with a tail of columns outside the groups (n not a multiple of 8).
    At 100003 the group maxima (12500) are long rows themselves and are selected the same way.
    The input is not modified."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as ctorch

    x = torch.from_numpy(_long_rows(np.random.default_rng(k), kind, 3, n))
    x[1, -3:] = 50.0  # a row's largest values in the tail
    before = x.clone()
    assert ops._torch_grouped(ctorch, x, k)
    assert ops._torch_grouped(ctorch, x[:, : n // ops.TORCH_TOP_K_GROUP], k) == (n == 100003)
    values, idx = ops.top_k(ctorch, x, k)
    want = torch.topk(before, k).values
    torch.testing.assert_close(values, want, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(torch.take_along_dim(before, idx, dim=-1), values, equal_nan=True, rtol=0, atol=0)
    assert all(len(set(row)) == k for row in idx.tolist()) and int(idx.max()) < n
    torch.testing.assert_close(x, before, equal_nan=True, rtol=0, atol=0)


def test_torch_grouped_selection_routes_by_width():
    """Eager torch on a CPU groups rows from max(TORCH_GROUPED_MIN, TORCH_GROUPED_PER_K k group)
    entries (k times the bound when that is more)."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as ctorch

    lo = ops.TORCH_GROUPED_MIN
    assert ops._torch_grouped(ctorch, torch.zeros((2, lo)), 5) and not ops._torch_grouped(ctorch, torch.zeros((2, lo - 1)), 5)
    wide_k = lo // (ops.TORCH_GROUPED_PER_K * ops.TORCH_TOP_K_GROUP) + 1
    assert not ops._torch_grouped(ctorch, torch.zeros((2, lo)), wide_k)
    assert ops._torch_grouped(ctorch, torch.zeros((2, ops.TORCH_GROUPED_PER_K * ops.TORCH_TOP_K_GROUP * wide_k)), wide_k)


@pytest.mark.parametrize("shape", [(256, 100), (8, 6000)], ids=["padded", "grouped"])
def test_torch_top_k_forms_under_vmap(monkeypatch, shape):
    """The padded and the grouped top-k run under ``torch.func.vmap`` of ``grad`` (per-sample
    gradients of a batch of batches): the same gradients as plain autograd on each slice. The
    padding is forced (the cost model's answer depends on the thread count)."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as ctorch

    import topkloss

    monkeypatch.setattr(ops, "torch_pads_top_k", lambda rows, n, k, threads: n < ops.TORCH_HEAP_TOP_K * k)
    gen = torch.Generator().manual_seed(0)
    S = torch.randn(2, *shape, dtype=torch.float64, generator=gen)
    y = torch.randint(0, shape[1], (shape[0],), generator=gen)
    assert ops._torch_pads(ctorch, S[0], 5) == (shape[1] == 100) and ops._torch_grouped(ctorch, S[0], 5) == (shape[1] == 6000)
    for loss in (topkloss.smooth_topk_svm, topkloss.topk_transition):
        got = torch.func.vmap(torch.func.grad(lambda s: loss(s, y, k=5)))(S)
        for i in range(2):
            s = S[i].clone().requires_grad_(True)
            loss(s, y, k=5).backward()
            torch.testing.assert_close(got[i], s.grad, rtol=1e-12, atol=1e-14)

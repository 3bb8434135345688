"""topkloss.log_esf: brute force over subsets, gradients, every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
import topkloss
from backends import asarray, assert_array_type, assert_close, to_numpy


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 9])
@pytest.mark.parametrize("k", [0, 1, 2, 4, 10])
def test_matches_brute_force_float64(m, k):
    x = np.random.default_rng(m * 10 + k).normal(scale=3.0, size=(3, 2, m))
    got = topkloss.log_esf(x, k)
    want = ref.log_esf(x, k)
    assert got.shape == (3, 2, k + 1)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite)  # e_j = 0 for j > m
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12)


def test_small_integers_exact():
    out = np.exp(topkloss.log_esf(np.log(np.array([1.0, 2.0, 3.0, 4.0])), 4))
    np.testing.assert_allclose(out, [1, 10, 35, 50, 24], rtol=1e-14)


def test_minus_infinity_is_a_zero_factor():
    x = np.array([[0.5, -np.inf, 1.0, -np.inf]])
    got = topkloss.log_esf(x, 3)
    want = topkloss.log_esf(np.array([[0.5, 1.0]]), 3)
    np.testing.assert_allclose(got[:, :3], want[:, :3], rtol=1e-14)
    assert got[0, 3] == -np.inf
    _, grad = topkloss.value_and_grad(topkloss.log_esf)(x, 2)
    assert np.all(np.isfinite(grad)) and grad[0, 1] == 0 and grad[0, 3] == 0


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_gradient_matches_brute_force_inclusion_probabilities(k):
    """d log e_j / d x_i = pi_j(i), the probability that i is in a random j-subset."""
    rng = np.random.default_rng(k)
    x = rng.normal(size=(2, 6))
    cot = rng.normal(size=(2, k + 1))
    value_and_grad = topkloss.value_and_grad(topkloss.log_esf)
    # gradient of sum(out * cot) via the core backward: check against finite differences
    num = ref.numerical_grad(lambda a: float(np.sum(ref.log_esf(a, k) * cot)), x)
    from topkloss.core.esf import LOG_ESF

    out, res = LOG_ESF.forward(np, x, static=(k,))
    got = LOG_ESF.backward(np, x, (), res, cot, static=(k,))
    np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-8)
    # value_and_grad is the gradient of the sum of the outputs
    _, g_sum = value_and_grad(x, k)
    num_sum = ref.numerical_grad(lambda a: float(np.sum(ref.log_esf(a, k))), x)
    np.testing.assert_allclose(g_sum, num_sum, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("extra", [1, 2, 5])
def test_degrees_beyond_m_have_no_gradient(xp, extra):
    """k > m: e_j = 0 for j > m whatever x (log -inf), so those outputs take no gradient, and
    the rest is the gradient of degrees 0..m (every backward failed from k = m + 2 before)."""
    x = np.random.default_rng(extra).normal(size=(2, 3))
    value, grad = topkloss.value_and_grad(topkloss.log_esf)(asarray(xp, x, xp.float64), 3 + extra)
    assert np.all(to_numpy(value)[:, 4:] == -np.inf)
    assert_close(grad, topkloss.value_and_grad(topkloss.log_esf)(x, 3)[1], rtol=1e-13, atol=0)
    from topkloss.core.esf import LOG_ESF

    cot = np.random.default_rng(9).normal(size=(2, 4 + extra))
    out, res = LOG_ESF.forward(np, x, static=(3 + extra,))
    got = LOG_ESF.backward(np, x, (), res, cot, static=(3 + extra,))
    want = LOG_ESF.backward(np, x, (), LOG_ESF.forward(np, x, static=(3,))[1], cot[:, :4], static=(3,))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (30.0, 1e3), (1e3, 0.0), (1e4, -1e3)])
def test_float32_absolute_error_bound(scale, offset):
    """The docstring's accuracy: in float32 each log e_j is within 4 eps (j max|x| + 1) of the
    float64 result on the same inputs (sums of j entries of x are rounded in float32; the worst
    case seen is 1.5 eps (j max|x| + 1)). Relative to a result near 0 that can be large: eight
    entries of magnitude up to 2400 summing to -0.2286 give an error of 2e-4 (the docs' example)."""
    rng = np.random.default_rng(int(scale) + int(offset))
    eps = float(np.finfo(np.float32).eps)
    for m, k in ((8, 8), (50, 10), (300, 20)):
        x = (rng.normal(size=(16, m)) * scale + offset).astype(np.float32)
        got = topkloss.log_esf(x, k).astype(np.float64)
        want = topkloss.log_esf(x.astype(np.float64), k)
        bound = 4 * eps * (np.arange(k + 1) * np.abs(x).max(axis=-1, keepdims=True) + 1)
        assert np.all(np.abs(got - want) <= bound)
    x = np.array([-1490.2179, 159.12024, 1204.3779, -1045.4764, -929.3965, 2402.6458, 30.077183, -331.3589], np.float32)
    exact = math.fsum(float(v) for v in x)  # log e_8 is the sum of all 8
    assert round(exact, 4) == -0.2286 and 1.5e-4 < abs(float(topkloss.log_esf(x, 8)[8]) - exact) < 2.5e-4


def _dp_log_esf(x, k):
    """An independent O(mk) reference: the sequential recursion e_j <- e_j + x_i e_{j-1}, in log space (float64)."""
    out = np.full(x.shape[:-1] + (k + 1,), -np.inf)
    out[..., 0] = 0.0
    for i in range(x.shape[-1]):
        prev = out.copy()
        out[..., 1:] = np.logaddexp(prev[..., 1:], prev[..., :-1] + x[..., i : i + 1])
    return out


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("m", [100, 1000, 4097])
def test_large_m_matches_sequential_recursion(monkeypatch, m, compact):
    if compact:  # level sizes as for wide rows (esf.level_sizes), padded on the way up
        from topkloss.core import esf

        monkeypatch.setattr(esf, "PAD_SMALL", -1)
    x = np.random.default_rng(m).normal(scale=2.0, size=(2, m))
    np.testing.assert_allclose(topkloss.log_esf(x, 5), _dp_log_esf(x, 5), rtol=1e-12)


def test_every_backend(xp, dtype):
    x = np.random.default_rng(0).normal(scale=3.0, size=(4, 11))
    want = ref.log_esf(x, 4)
    got = topkloss.log_esf(asarray(xp, x, dtype), 4)
    assert_array_type(got, xp)
    assert got.dtype == dtype
    assert_close(got, want, rtol=1e-12 if dtype == xp.float64 else 2e-6)
    _, grad = topkloss.value_and_grad(topkloss.log_esf)(asarray(xp, x, dtype), 4)
    assert grad.dtype == dtype and grad.shape == (4, 11)
    assert np.all(np.isfinite(to_numpy(grad)))


def test_bad_input():
    with pytest.raises(ValueError, match="k must be >= 0"):
        topkloss.log_esf(np.zeros(3), -1)
    with pytest.raises(TypeError, match="k must be an integer"):
        topkloss.log_esf(np.zeros(3), 2.0)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        topkloss.log_esf(np.zeros(3, dtype=np.int64), 2)


@pytest.mark.parametrize("rest", [1, 256])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 6, 9, 17, 33, 100, 1000, 4097, 10_000, 100_000])
def test_level_sizes(m, rest):
    """Even counts below the root, a parent for every pair, the depth of a power-of-two tree;
    a power of two where its padding is small, else at most an eighth of the leaves (or one)."""
    from topkloss.core.esf import PAD_SMALL, level_sizes

    sizes = level_sizes(m, rest)
    depth = max(0, (m - 1).bit_length())
    assert sizes[-1] == 1 and len(sizes) - 1 == depth
    assert all(s % 2 == 0 for s in sizes[:-1])
    assert all(parent in (child // 2, child // 2 + 1) for child, parent in zip(sizes, sizes[1:]))
    if m > 1 and ((1 << depth) - m) * rest <= PAD_SMALL:
        assert sizes[0] == 1 << depth
    else:
        assert m <= sizes[0] <= max(m + 1, m + m // 8)


@pytest.mark.parametrize("rest", [1, 64, 256])
def test_padded_leaves_build_the_same_tree(rest):
    """A caller may pad the leaves itself to padded_leaves(m) (the smooth SVM pads the scores'
    copy): the tree of that many leaves has the same level sizes, so it pads nothing more and its
    backward restores it from m alone. Where the padded count's tree would differ, m itself."""
    from topkloss.core import esf

    kept = 0
    for m in range(1, 5000):
        width, sizes = esf.padded_leaves(m, rest), esf.level_sizes(m, rest)
        assert width in (m, sizes[0])
        if width == sizes[0]:
            assert esf.level_sizes(width, rest) == sizes
        else:
            kept += 1
            assert esf.level_sizes(sizes[0], rest) != sizes
    assert kept < 5000 // 2  # most counts are padded up front
    assert esf.padded_leaves(1000, 256) == 1024 and esf.padded_leaves(2817, 64) == 2817


@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("m", [3, 5, 9, 37, 100, 1000])
def test_linear_tree_and_its_reverse_pass_with_padded_levels(monkeypatch, m, stacked):
    """The linear-space tree (lists or stacked levels) and its reverse pass against the
    sequential recursion, for counts whose levels gain zero nodes on the way up: e_j, and
    d(sum_j c_j e_j)/dx_i = sum_j c_j e_{j-1}(x without i) (the recursion on the other leaves)."""
    from conftest import force_level_forms
    from topkloss.core import esf

    force_level_forms(monkeypatch, stacked)
    monkeypatch.setattr(esf, "PAD_SMALL", -1)  # compact level sizes, as for wide rows
    k, batch = 4, 3
    rng = np.random.default_rng(m)
    x = rng.uniform(0.0, 1.0, size=(m, batch))
    levels = esf.tree_levels(np, x, k, "linear")
    assert [esf._nodes(level) for level in levels] == list(esf.level_sizes(m, batch))
    want = np.exp(_dp_log_esf(np.log(x.T), k))  # (batch, k + 1)
    np.testing.assert_allclose(esf.tree_root(np, levels, k, x, "linear").T, want[:, 1:], rtol=1e-12)
    cot = rng.normal(size=(k, batch))
    got = esf.tree_backprop(np, levels, cot, m)
    times = esf.tree_backprop(np, levels, cot, m, times_leaves=True)  # x_i dF/dx_i, fused where level 1 is a list
    assert times.shape == (m, batch)
    for i in sorted({0, m // 2, m - 1}):
        rest = np.exp(_dp_log_esf(np.log(np.delete(x, i, axis=0).T), k - 1))  # (batch, k)
        want_i = np.sum(cot.T * rest, axis=-1)
        np.testing.assert_allclose(got[i], want_i, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(times[i], x[i] * want_i, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["linear", "log"])
@pytest.mark.parametrize("m", [1, 3, 9, 37, 100, 1000])
def test_nodes_last_trees_equal_nodes_first(monkeypatch, m, mode):
    """The nodes-last layout (axis=-1: the rows as they are, XLA on a CPU) builds the same tree as
    nodes first: the same pairs and operations, so the same values to the bit, for the root, the
    saved and restored levels, the reverse pass (linear) and the complements (log), with levels
    that gain zero nodes on the way up."""
    from topkloss.core import esf

    monkeypatch.setattr(esf, "PAD_SMALL", -1)  # compact level sizes, as for wide rows
    k, batch = 5, 3
    rng = np.random.default_rng(m)
    x = rng.uniform(0.0, 1.0, size=(batch, m))
    leaves = x if mode == "linear" else np.log(x)
    first = esf.tree_levels(np, leaves.T, k, mode)
    last = esf.tree_levels(np, leaves, k, mode, axis=-1)
    assert len(first) == len(last)
    for level_f, level_l in zip(first, last):
        for a, b in zip(level_f, level_l):
            np.testing.assert_array_equal(a.T, b)
    np.testing.assert_array_equal(esf.tree_root(np, first, k, leaves.T, mode), esf.tree_root(np, last, k, leaves, mode, axis=-1))
    restored, used = esf.restore_tree(np, esf.tree_residuals(last), m, k, batch, mode, axis=-1)
    assert used == len(esf.tree_residuals(last))
    for level_r, level_l in zip(restored, last):
        for a, b in zip(level_r, level_l):
            np.testing.assert_array_equal(a, b)
    if mode == "linear":
        cot = rng.normal(size=(k, batch))
        np.testing.assert_array_equal(esf.tree_backprop(np, first, cot, m).T, esf.tree_backprop(np, last, cot, m, axis=-1))
        times_first = esf.tree_backprop(np, first, cot, m, times_leaves=True)
        times_last = esf.tree_backprop(np, last, cot, m, axis=-1, times_leaves=True)
        np.testing.assert_array_equal(times_first.T, times_last)
        assert times_last.shape == (batch, m) and times_last.flags.c_contiguous  # no padding to cut
    else:
        for a, b in zip(esf.complement(np, first, k - 1, m), esf.complement(np, last, k - 1, m, axis=-1)):
            np.testing.assert_array_equal(a.T, b)


def test_nodes_last_applies_under_xla_on_a_cpu_with_list_levels_only():
    from topkloss.core import esf

    jnp = pytest.importorskip("jax.numpy")
    like = jnp.zeros((256, 10_000), dtype=jnp.float32)
    assert esf.nodes_last_applies(jnp, like, 10_000, 20)
    assert not esf.nodes_last_applies(jnp, like, 10_000, 21)  # stacked deep levels: nodes first
    assert esf.nodes_last_applies(jnp, like, 10_000, 21, "log")  # log space: lists at every degree
    assert not esf.nodes_last_applies(np, np.zeros((256, 10_000)), 10_000, 5)  # eager: nodes first
    with pytest.raises(ValueError, match="nodes-last"):
        esf.tree_levels(jnp, like, 21, "linear", axis=-1)


# --- prefix sums (esf.scan_prefix / scan_backprop): the smooth SVM's polynomials on eager torch ---
@pytest.mark.parametrize("m,k", [(1, 1), (1, 3), (2, 2), (3, 7), (6, 1), (6, 5), (9, 4), (12, 6)])
def test_prefix_sums_and_their_reverse_pass_match_brute_force(xp, m, k):
    """e_1..e_k of x >= 0 (zeros included) and dF/dx_i = sum_j c_j e_{j-1}(x \\ i), float64, every backend."""
    from topkloss.core import esf

    rng = np.random.default_rng(m * 10 + k)
    x = rng.uniform(0.0, 1.0, size=(3, m))
    x[0, : m // 2] = 0.0  # zero leaves (the smooth SVM writes T's columns and the label as zeros)
    c = rng.normal(size=(3, k))
    with np.errstate(divide="ignore"):
        want = np.exp(ref.log_esf(np.log(x), k))[:, 1:]
        without = [np.exp(ref.log_esf(np.log(np.delete(x, i, axis=1)), k)) for i in range(m)]
    want_grad = np.stack([(c * w[:, :k]).sum(-1) for w in without], axis=-1)  # sum_j c_j e_{j-1}(x \ i)
    top, state = esf.scan_prefix(xp, asarray(xp, x, xp.float64), k)
    assert_array_type(top, xp)
    assert tuple(top.shape) == (3, k)
    assert_close(top, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(to_numpy(esf.scan_leaves(state)), x)
    grad = esf.scan_backprop(xp, state, asarray(xp, c, xp.float64))
    assert tuple(grad.shape) == (3, m)
    assert_close(grad, want_grad, rtol=1e-12, atol=1e-13)

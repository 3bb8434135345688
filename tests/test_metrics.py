"""topk_accuracy: micro and macro against a NumPy reference and scikit-learn, the tie rule, transforms,
bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference_transition as ref
import topkloss
from backends import asarray, assert_close, to_numpy
from conftest import available


def _data(batch=40, n=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, n)), rng.integers(0, n, size=batch)


def _accuracy(xp, s, y, dtype=None, **kw):
    return topkloss.topk_accuracy(asarray(xp, s, dtype or xp.float64), asarray(xp, y), **kw)


@pytest.mark.parametrize("average", ["micro", "macro"])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_matches_reference(xp, dtype, k, average):
    s, y = _data()
    s = np.round(s, 1)  # many ties
    s = s.astype(np.float32).astype(np.float64)
    out = _accuracy(xp, s, y, dtype, k=k, average=average)
    assert out.shape == () and out.dtype == dtype
    assert_close(out, ref.topk_accuracy(s, y, k, average), rtol=1e-6 if "32" in str(dtype) else 1e-15)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_agrees_with_scikit_learn_without_ties(xp, k):
    metrics = pytest.importorskip("sklearn.metrics")
    s, y = _data(batch=200, n=8, seed=1)
    assert all(len(set(row)) == len(row) for row in s)
    classes = np.arange(s.shape[1])
    want = metrics.top_k_accuracy_score(y, s, k=k, labels=classes)
    assert_close(_accuracy(xp, s, y, k=k), want, rtol=1e-15)
    per_class = [metrics.top_k_accuracy_score(y[y == c], s[y == c], k=k, labels=classes) for c in np.unique(y)]
    assert_close(_accuracy(xp, s, y, k=k, average="macro"), np.mean(per_class), rtol=1e-15)


def test_macro_weighs_classes_alike(xp):
    """Nine rows of class 0 all hit, one row of class 2 misses: micro 0.9, macro 0.5 (class 1 absent)."""
    s = np.array([[3.0, 2.0, 1.0]] * 10)
    y = np.array([0] * 9 + [2])
    assert float(to_numpy(_accuracy(xp, s, y, k=1))) == pytest.approx(0.9, rel=1e-15)
    assert float(to_numpy(_accuracy(xp, s, y, k=1, average="macro"))) == pytest.approx(0.5, rel=1e-15)


@pytest.mark.parametrize(
    "row, label, k, hit",
    [
        ([1.0, 1.0, 1.0, 1.0], 0, 1, False),  # constant scores earn nothing for k < n
        ([1.0, 1.0, 1.0, 1.0], 3, 3, False),
        ([1.0, 1.0, 1.0, 1.0], 2, 4, True),  # k = n: every row counts
        ([3.0, 2.0, 2.0, 0.0], 1, 2, False),  # tie at the boundary: against the label
        ([3.0, 2.0, 2.0, 0.0], 2, 2, False),
        ([3.0, 2.0, 2.0, 0.0], 2, 3, True),
        ([3.0, 3.0, 2.0, 0.0], 1, 2, True),  # tie inside the top k: both hit
        ([3.0, 3.0, 2.0, 0.0], 0, 2, True),
        ([3.0, 3.0, 2.0, 0.0], 0, 1, False),
        ([1.0, math.nan, 0.0, -1.0], 2, 2, False),  # a NaN score counts against the label
        ([1.0, math.nan, 0.0, -1.0], 0, 2, True),
        ([1.0, 0.5, math.nan, -1.0], 2, 3, False),  # the label's own score is NaN: never a hit
    ],
)
def test_ties_and_nan_count_against_the_label(xp, row, label, k, hit):
    out = _accuracy(xp, np.array([row]), np.array([label]), k=k)
    assert float(to_numpy(out)) == float(hit)


def test_independent_of_class_order(xp):
    s, y = _data(seed=2)
    s = np.round(s)  # heavy ties
    perm = np.random.default_rng(3).permutation(s.shape[1])
    inverse = np.argsort(perm)
    for average in ("micro", "macro"):
        a = _accuracy(xp, s, y, k=2, average=average)
        b = _accuracy(xp, s[:, perm], inverse[y], k=2, average=average)
        assert_close(a, to_numpy(b), rtol=1e-15)  # the macro sum runs over the classes in another order


def test_returns_a_0d_array_of_the_input_type(xp):
    s, y = _data()
    out = _accuracy(xp, s, y, xp.float32, k=3)
    assert type(out) is type(asarray(xp, s)) and out.shape == () and out.dtype == xp.float32


def test_half_precision():
    torch = pytest.importorskip("torch")
    s, y = _data(seed=4)
    out = topkloss.topk_accuracy(torch.asarray(s).to(torch.float16), torch.asarray(y), k=2, average="macro")
    assert out.dtype == torch.float16
    expected = ref.topk_accuracy(torch.asarray(s).to(torch.float16).double().numpy(), y, 2, "macro")
    assert abs(float(out) - expected) <= 1e-3


def test_jax_jit_and_vmap():
    jnp = available("jax")
    import jax

    s, y = _data(seed=5)
    f = jax.jit(lambda a, b: topkloss.topk_accuracy(a, b, k=3, average="macro"))
    np.testing.assert_allclose(float(f(jnp.asarray(s), jnp.asarray(y))), ref.topk_accuracy(s, y, 3, "macro"), rtol=1e-15)
    stacked = np.stack([s, s[::-1], np.round(s)])
    labels = np.stack([y, y[::-1], y])
    got = jax.vmap(lambda a, b: topkloss.topk_accuracy(a, b, k=2))(jnp.asarray(stacked), jnp.asarray(labels))
    np.testing.assert_allclose(np.asarray(got), [ref.topk_accuracy(a, b, 2) for a, b in zip(stacked, labels)], rtol=1e-15)


def test_torch_compile():
    torch = pytest.importorskip("torch")
    s, y = _data(seed=6)
    f = torch.compile(lambda a, b: topkloss.topk_accuracy(a, b, k=2, average="macro"), fullgraph=True)
    np.testing.assert_allclose(float(f(torch.asarray(s), torch.asarray(y))), ref.topk_accuracy(s, y, 2, "macro"), rtol=1e-15)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(average="weighted"), ValueError, "average must be one of \\('micro', 'macro'\\); got 'weighted'"),
        (dict(average=None), ValueError, "average must be one of"),
        (dict(k=0), ValueError, "k must be in \\[1, 7\\] for n_classes = 7; got 0"),
        (dict(k=8), ValueError, "k must be in \\[1, 7\\]"),
        (dict(k=1.5), TypeError, "k must be an integer"),
    ],
)
def test_bad_input(kwargs, error, match):
    s, y = _data()
    with pytest.raises(error, match=match):
        topkloss.topk_accuracy(s, y, **kwargs)


def test_bad_arrays():
    s, y = _data()
    with pytest.raises(ValueError, match="scores must have at least one row"):
        topkloss.topk_accuracy(s[:0], y[:0])
    with pytest.raises(ValueError, match="labels must be in \\[0, 6\\]"):
        topkloss.topk_accuracy(s, y + 7)
    with pytest.raises(TypeError, match="scores must have a real floating dtype"):
        topkloss.topk_accuracy(s.astype(int), y)


"""Bad input is rejected by every public function, with a ValueError/TypeError naming the argument.

Also: label dtypes, mixed array types and devices, the empty batch, inputs never modified,
and the value checks (label range): on for concrete arrays, skipped where values cannot be
read (``jax.jit``, ``torch.compile``, ``torch.func``, the ``meta`` device, Dask), off with
``topkloss.value_checks(False)``, and at most one read of the labels' values per call.
"""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest

import topkloss
from backends import asarray, assert_array_type, name_of, to_numpy
from conftest import available
from loss_table import ALL, LOSSES, METRICS, OTHER_PUBLIC, ids, names

N, B = 6, 4
RNG_SEED = 20240608
BASE = [e for e in ALL if not e.variant]  # one entry per function, for checks that ignore extra arrays


def _data(xp, batch=B, n=N, dtype=None):
    rng = np.random.default_rng(RNG_SEED)
    s = asarray(xp, rng.standard_normal((batch, n)), dtype if dtype is not None else xp.float64)
    y = asarray(xp, (np.arange(batch) * 5) % n)
    return s, y


def _extras(entry, batch=B, n=N):
    return entry.arrays(np.random.default_rng(RNG_SEED + 1), batch, n)


def test_every_public_function_is_in_the_table():
    public = {n for n in topkloss.__all__ if callable(getattr(topkloss, n))}
    covered = names(ALL) | set(OTHER_PUBLIC)
    assert public <= covered, f"add these public functions to tests/loss_table.py: {sorted(public - covered)}"


# ---------------------------------------------------------------- scores and labels (every entry)

BAD_SCORES_LABELS = [
    # (name, make(xp, s, y) -> (scores, labels), exception, the argument the message must name)
    ("scores-1d", lambda xp, s, y: (s[0, :], y[:1]), ValueError, "scores"),
    ("scores-3d", lambda xp, s, y: (xp.reshape(s, (1, B, N)), y), ValueError, "scores"),
    ("scores-int", lambda xp, s, y: (xp.astype(s, xp.int32), y), TypeError, "scores"),
    ("scores-one-class", lambda xp, s, y: (s[:, :1], y * 0), ValueError, "scores"),
    ("labels-float", lambda xp, s, y: (s, xp.astype(y, xp.float64)), TypeError, "labels"),
    ("labels-bool", lambda xp, s, y: (s, y > 2), TypeError, "labels"),
    ("labels-2d", lambda xp, s, y: (s, xp.reshape(y, (B, 1))), ValueError, "labels"),
    ("labels-short", lambda xp, s, y: (s, y[:-1]), ValueError, "labels"),
    ("labels-too-big", lambda xp, s, y: (s, y + N), ValueError, "labels"),
    ("labels-negative", lambda xp, s, y: (s, y - N + 1), ValueError, "labels"),
    ("scores-list", lambda xp, s, y: (to_numpy(s).tolist(), y), TypeError, "scores"),
]


def _bad_cases():
    """Every case for every function on NumPy; every case on every backend for one function
    (the checks live in one place, prepare_scores_labels, whatever the function)."""
    for entry in BASE:
        for case in BAD_SCORES_LABELS:
            backends = ["numpy"] if entry is not BASE[0] else ["numpy", "array_api_strict", "torch", "jax", "cupy"]
            for backend in backends:
                yield pytest.param(backend, entry, case, id=f"{backend}-{entry.id}-{case[0]}")


@pytest.mark.parametrize("backend, entry, case", list(_bad_cases()))
def test_bad_scores_and_labels(backend, entry, case):
    xp = available(backend)
    _, make, exc, arg = case
    s, y = _data(xp)
    scores, labels = make(xp, s, y)
    with pytest.raises(exc, match=arg):
        entry.call(xp, scores, labels, _extras(entry), dtype=xp.float64)


@pytest.mark.parametrize("entry", BASE, ids=ids(BASE))
def test_numpy_extension_dtype_is_a_type_error_naming_scores(entry):
    """NumPy scores of ml_dtypes' bfloat16 (what a JAX bfloat16 array becomes in NumPy): NumPy's
    isdtype raised its own TypeError from inside the check; now the message names scores."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    s, y = _data(np)
    with pytest.raises(TypeError, match="scores must have a real floating dtype; got bfloat16"):
        entry.call(np, s.astype(ml_dtypes.bfloat16), y, _extras(entry), dtype=np.float64)


def test_numpy_extension_dtype_in_log_esf_and_noise():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    s, y = _data(np)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        topkloss.log_esf(s.astype(ml_dtypes.bfloat16), 2)
    noise = np.zeros((B, 2, N), dtype=ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match="noise must have a real floating dtype"):
        topkloss.noised_topk_hinge(s, y, k=2, n_samples=2, noise=noise)


@pytest.mark.parametrize("entry", LOSSES, ids=ids(LOSSES))
@pytest.mark.parametrize("reduction", ["avg", None, "MEAN"])
def test_bad_reduction(entry, reduction):
    s, y = _data(np)
    with pytest.raises(ValueError, match="reduction"):
        entry.call(np, s, y, _extras(entry), reduction=reduction)


@pytest.mark.parametrize("entry", BASE, ids=ids(BASE))
@pytest.mark.parametrize("label_dtype", ["int32", "int64", "uint8"])
def test_label_dtypes(xp, entry, label_dtype):
    s, y = _data(xp)
    want = entry.call(xp, s, y, _extras(entry), **_none(entry))
    got = entry.call(xp, s, xp.astype(y, getattr(xp, label_dtype)), _extras(entry), **_none(entry))
    np.testing.assert_array_equal(to_numpy(got), to_numpy(want))


def _none(entry):
    return {"reduction": "none"} if "none" in entry.reductions else {}


# ---------------------------------------------------------------- parameters, per entry

def _k_cases(k_max):
    return [
        ({"k": 0}, ValueError, r"\bk\b"),
        ({"k": k_max + 1}, ValueError, r"\bk\b"),
        ({"k": -1}, ValueError, r"\bk\b"),
        ({"k": 2.0}, TypeError, r"\bk\b"),
        ({"k": True}, TypeError, r"\bk\b"),
        ({"k": "2"}, TypeError, r"\bk\b"),
    ]


def _real_cases(name, *, positive=False, nonnegative=False):
    cases = [
        ({name: float("nan")}, ValueError, name),
        ({name: float("inf")}, ValueError, name),
        ({name: "1"}, TypeError, name),
        ({name: None}, TypeError, name),
    ]
    if positive:
        cases += [({name: 0.0}, ValueError, name), ({name: -1.0}, ValueError, name)]
    if nonnegative:
        cases += [({name: -0.5}, ValueError, name)]
    return cases


def _array_cases(name, good_shape, wrong_shape, *, floating=True):
    """An array argument: wrong shape, another array library, an integer dtype if ``floating``."""
    cases = [
        ({name: lambda xp: asarray(xp, np.zeros(wrong_shape), xp.float64)}, ValueError, name),
        ({name: lambda xp: _other_library(xp, np.zeros(good_shape))}, TypeError, name),
        ({name: lambda xp: asarray(xp, np.zeros(good_shape) > 0)}, TypeError, name),
    ]
    if floating:
        cases.append(({name: lambda xp: xp.astype(asarray(xp, np.zeros(good_shape)), xp.int32)}, TypeError, name))
    return cases


def _other_library(xp, a):
    """``a`` as an array of a library other than ``xp``'s."""
    if name_of(xp) == "numpy":
        return importlib.import_module("array_api_strict").asarray(a)
    return np.asarray(a)


BAD_PARAMS = {
    "smooth_topk_svm": _k_cases(N - 1) + _real_cases("tau", positive=True) + _real_cases("alpha"),
    "topk_svm": _k_cases(N - 1) + _real_cases("alpha"),
    "topk_hinge": _k_cases(N - 1)
    + _real_cases("margin")
    + _real_cases("scale", positive=True)
    + _array_cases("margin", (N,), (N + 1,), floating=False),
    "noised_topk_hinge": _k_cases(N - 1)
    + _real_cases("epsilon", nonnegative=True)
    + _real_cases("margin")
    + _real_cases("scale", positive=True)
    + [
        ({"n_samples": 0, "noise": None, "seed": 0}, ValueError, "n_samples"),
        ({"n_samples": 2.5, "noise": None, "seed": 0}, TypeError, "n_samples"),
    ]
    + _array_cases("noise", (B, 3, N), (B, 3, N + 1))
    + [({"noise": lambda xp: asarray(xp, np.zeros((B + 1, 3, N)), xp.float64)}, ValueError, "noise")],
    "topk_transition": _k_cases(N - 1)
    + [
        ({"weight": 1.5}, ValueError, "weight"),
        ({"weight": -0.1}, ValueError, "weight"),
        ({"weight": float("nan")}, ValueError, "weight"),
        ({"weight": "bogus"}, ValueError, "weight"),
        ({"weight": lambda xp: asarray(xp, np.full(B, 0.5))[:-1]}, ValueError, "weight"),
        ({"weight": lambda xp: asarray(xp, np.full(B, 1.5))}, ValueError, "weight"),
        ({"weight": lambda xp: _other_library(xp, np.full(B, 0.5))}, TypeError, "weight"),
    ],
    "topk_accuracy": _k_cases(N) + [({"average": "bogus"}, ValueError, "average"), ({"average": None}, ValueError, "average")],
}


def _param_cases():
    for entry in ALL:
        if entry.variant:
            continue  # the parameter cases are per function
        for i, (params, exc, arg) in enumerate(BAD_PARAMS[entry.name]):
            yield pytest.param(entry, params, exc, arg, id=f"{entry.name}-{i}-{'-'.join(params)}")


@pytest.mark.parametrize("entry, params, exc, arg", list(_param_cases()))
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_bad_parameters(backend, entry, params, exc, arg):
    xp = available(backend)
    s, y = _data(xp)
    params = {name: (p(xp) if callable(p) else p) for name, p in params.items()}
    extras = {name: a for name, a in _extras(entry).items() if name not in params}
    with pytest.raises(exc, match=arg):
        entry.call(xp, s, y, extras, **params)


def test_every_entry_has_parameter_cases():
    assert set(BAD_PARAMS) == names(ALL)


# ---------------------------------------------------------------- mixed array types and devices

MIXED = [("numpy", "torch"), ("torch", "numpy"), ("numpy", "jax"), ("jax", "numpy"), ("torch", "jax"),
         ("array_api_strict", "numpy"), ("numpy", "array_api_strict")]


@pytest.mark.parametrize("entry", BASE, ids=ids(BASE))
@pytest.mark.parametrize("pair", MIXED, ids=["-".join(p) for p in MIXED])
def test_mixed_array_types(entry, pair):
    xs, xl = available(pair[0]), available(pair[1])
    s, _ = _data(xs)
    _, y = _data(xl)
    with pytest.raises(TypeError, match="scores.*labels"):
        entry.call(xs, s, y, _extras(entry))


@pytest.mark.parametrize("entry", [e for e in ALL if e.extras], ids=ids([e for e in ALL if e.extras]))
def test_mixed_array_types_of_extra_arrays(entry):
    s, y = _data(np)
    for name, a in _extras(entry).items():
        others = {k: v for k, v in _extras(entry).items() if k != name}
        with pytest.raises(TypeError, match=name):
            entry.call(np, s, y, others, **{name: available("torch").asarray(a)})


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_mixed_devices_torch(entry):
    torch = pytest.importorskip("torch")
    s, y = _data(available("torch"))
    meta = {k: torch.asarray(a, device="meta") for k, a in _extras(entry).items()}
    with pytest.raises(ValueError, match="labels.*device"):
        entry.fn(s.to("meta"), y, **entry.params, **meta)
    with pytest.raises(ValueError, match="labels.*device"):
        entry.call(available("torch"), s, y.to("meta"), _extras(entry))
    for name, a in _extras(entry).items():
        others = {k: v for k, v in _extras(entry).items() if k != name}
        with pytest.raises(ValueError, match=f"{name}.*device"):
            entry.call(torch, s, y, others, **{name: torch.asarray(a, device="meta")})


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_mixed_devices_array_api_strict(entry):
    xs = available("array_api_strict")
    s, y = _data(xs)
    other = xs.Device("device1")
    with pytest.raises(ValueError, match="labels.*device"):
        entry.call(xs, s, xs.asarray(y, device=other), _extras(entry))
    with pytest.raises(ValueError, match="labels.*device"):
        entry.call(xs, xs.asarray(s, device=other), y, _extras(entry))


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_output_on_the_input_device(entry):
    """Everything the core allocates goes on the input's device (not the default one)."""
    xs = available("array_api_strict")
    other = xs.Device("device1")
    s, y = _data(xs)
    s, y = xs.asarray(s, device=other), xs.asarray(y, device=other)
    extras = {k: xs.asarray(xs.asarray(a), device=other) for k, a in _extras(entry).items()}
    out = entry.fn(s, y, **entry.params, **extras)
    assert out.device == other
    if entry.differentiable:
        value, grad = topkloss.value_and_grad(entry.fn)(s, y, **entry.params, **extras)
        assert value.device == other and grad.device == other


# ---------------------------------------------------------------- empty batch

@pytest.mark.parametrize("entry", LOSSES, ids=ids(LOSSES))
def test_empty_batch(xp, entry):
    """Decided: an empty batch has loss 0 with "mean" (the empty sum over max(batch, 1)), 0 with
    "sum", shape (0,) with "none", and a (0, n) gradient."""
    dtype = xp.float64
    s, y = _data(xp, batch=0, dtype=dtype)
    extras = _extras(entry, batch=0)
    for reduction in ("mean", "sum"):
        out = entry.call(xp, s, y, extras, reduction=reduction)
        assert tuple(out.shape) == () and out.dtype == dtype
        assert float(to_numpy(out)) == 0.0
    out = entry.call(xp, s, y, extras, reduction="none")
    assert tuple(out.shape) == (0,) and out.dtype == dtype
    value, grad = entry.value_and_grad(xp, s, y, extras)
    assert float(to_numpy(value)) == 0.0
    assert tuple(grad.shape) == (0, N) and grad.dtype == dtype


@pytest.mark.parametrize("entry", LOSSES, ids=ids(LOSSES))
def test_empty_batch_autograd(entry):
    torch = pytest.importorskip("torch")
    s, y = _data(available("torch"), batch=0)
    s.requires_grad_(True)
    entry.call(available("torch"), s, y, _extras(entry, batch=0)).backward()
    assert s.grad is not None and tuple(s.grad.shape) == (0, N)

    jax = pytest.importorskip("jax")
    s, y = _data(available("jax"), batch=0)
    extras = {k: jax.numpy.asarray(a) for k, a in _extras(entry, batch=0).items()}
    fn = entry.fn
    grad = jax.jit(jax.grad(lambda s: fn(s, y, **entry.params, **extras)))(s)
    assert grad.shape == (0, N)


@pytest.mark.parametrize("entry", METRICS, ids=ids(METRICS))
def test_empty_batch_metric(xp, entry):
    """A metric of no rows is undefined: topk_accuracy raises a ValueError naming scores."""
    s, y = _data(xp, batch=0)
    with pytest.raises(ValueError, match="scores"):
        entry.call(xp, s, y)


# ---------------------------------------------------------------- NaN scores

@pytest.mark.parametrize("entry", LOSSES, ids=ids(LOSSES))
@pytest.mark.parametrize("dtype_name,n", [("float32", N), ("float64", N), ("float32", 3000)])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy's, on NaN arithmetic
def test_nan_scores_give_nan_rows(xp, entry, dtype_name, n):
    """Decided (as cross-entropy does): a NaN score makes its row's loss NaN and every entry of
    its gradient row NaN, on every backend, wherever the NaN is (at the label, at a class the
    selection would rank first or last); the other rows are untouched. 3000 classes: the
    selections of long rows (NumPy's candidates, JAX's blocks), and a width where XLA's CPU
    ``max`` passes over a NaN."""
    dtype = getattr(xp, dtype_name)
    s, y = _data(xp, n=n, dtype=xp.float64)
    clean = to_numpy(s).copy()
    labels = to_numpy(y)
    top = np.argsort(-clean, axis=-1, kind="stable")
    dirty = clean.copy()
    dirty[0, labels[0]] = np.nan  # at the label
    dirty[1, top[1, 0] if top[1, 0] != labels[1] else top[1, 1]] = np.nan  # at the largest other
    dirty[2, top[2, -1] if top[2, -1] != labels[2] else top[2, -2]] = np.nan  # at the smallest other
    extras = _extras(entry, n=n)
    want_value, want_grad = entry.value_and_grad(xp, asarray(xp, clean, dtype), y, extras, reduction="none")
    value, grad = entry.value_and_grad(xp, asarray(xp, dirty, dtype), y, extras, reduction="none")
    value, grad = to_numpy(value), to_numpy(grad)
    assert np.isnan(value[:3]).all(), value
    assert np.isnan(grad[:3]).all(), grad
    np.testing.assert_array_equal(value[3:], to_numpy(want_value)[3:])
    np.testing.assert_array_equal(grad[3:], to_numpy(want_grad)[3:])
    assert np.isnan(to_numpy(entry.call(xp, asarray(xp, dirty, dtype), y, extras, dtype=dtype, reduction="mean")))


# ---------------------------------------------------------------- -inf scores exclude classes

@pytest.mark.parametrize("entry", LOSSES, ids=ids(LOSSES))
@pytest.mark.parametrize("n", [9, 6000])
def test_minus_inf_scores_exclude_their_classes(xp, entry, n):
    """A score of -inf takes its class out of the row (a class unavailable to a sample, say): the
    loss and the gradient are those of the rows without those classes, on every backend, and
    the excluded classes get a gradient of exactly 0 (-inf at the label:
    test_minus_inf_at_the_label). 6000 classes, most of them excluded in one block: the
    selections of long rows (group and block maxima of -inf) and the smooth SVM's long trees."""
    dropped = [1, 4, 5] if n == 9 else [1, 4, *range(100, 5000)]
    kept = [c for c in range(n) if c not in dropped]
    rng = np.random.default_rng(RNG_SEED)
    full = rng.standard_normal((B, n))
    full[:, dropped] = -np.inf
    reduced_labels = np.arange(B) % len(kept)
    labels = np.asarray(kept)[reduced_labels]
    extras = _extras(entry, n=n)
    reduced_extras = {name: a[..., kept] if entry.extras[name].class_axis else a for name, a in extras.items()}
    value, grad = entry.value_and_grad(xp, asarray(xp, full), asarray(xp, labels), extras, reduction="none")
    want, want_grad = entry.value_and_grad(xp, asarray(xp, full[:, kept]), asarray(xp, reduced_labels), reduced_extras, reduction="none")
    value, grad = to_numpy(value), to_numpy(grad)
    np.testing.assert_allclose(value, to_numpy(want), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad[:, kept], to_numpy(want_grad), rtol=1e-12, atol=1e-15)
    assert (grad[:, dropped] == 0).all(), grad[:, dropped]


@pytest.mark.parametrize("entry", LOSSES, ids=ids(LOSSES))
@pytest.mark.parametrize("dtype_name,n,k", [("float64", 9, 2), ("float32", 9, 2), ("float64", 40, 5), ("float32", 3000, 5)])
def test_fewer_than_k_finite_others(xp, entry, dtype_name, n, k):
    """Rows with fewer than k finite scores besides the label's (the rest -inf): finite values,
    no NumPy warning (they are errors here), a gradient of exactly 0 at the -inf classes. Both
    SVMs give loss 0 and gradient 0, their limit: no k other classes can push the label out of
    the top k (smooth_topk_svm gave NaN, from -inf - (-inf) at the k-th score)."""
    dtype = getattr(xp, dtype_name)
    rng = np.random.default_rng(RNG_SEED)
    s = np.full((4, n), -np.inf)
    labels = np.array([0, 3, n - 1, 1])
    s[np.arange(4), labels] = rng.standard_normal(4)
    s[0, 1] = s[1, 0] = 0.5  # one finite other (k - 1 or fewer); rows 2 and 3: none
    if k > 2:
        s[1, 4 : k + 2] = rng.standard_normal(k - 2)  # with column 0: k - 1 finite others
    value, grad = entry.value_and_grad(xp, asarray(xp, s, dtype), asarray(xp, labels), _extras(entry, batch=4, n=n), reduction="none", k=k)
    value, grad = to_numpy(value), to_numpy(grad)
    assert np.isfinite(value).all() and np.isfinite(grad).all(), (value, grad)
    assert (grad[~np.isfinite(s)] == 0).all()
    if entry.name in ("smooth_topk_svm", "topk_svm"):
        assert (value == 0).all() and (grad == 0).all(), (value, grad)


@pytest.mark.parametrize("entry", LOSSES, ids=ids(LOSSES))
def test_minus_inf_at_the_label(xp, entry):
    """-inf at the label: loss +inf, as cross-entropy's, and a finite gradient (the limit's); the
    other rows untouched."""
    s, y = _data(xp, dtype=xp.float64)
    dirty = to_numpy(s).copy()
    dirty[0, to_numpy(y)[0]] = -np.inf
    extras = _extras(entry)
    want_value, want_grad = entry.value_and_grad(xp, s, y, extras, reduction="none")
    value, grad = entry.value_and_grad(xp, asarray(xp, dirty), y, extras, reduction="none")
    value, grad = to_numpy(value), to_numpy(grad)
    assert value[0] == np.inf and np.isfinite(grad).all(), (value, grad)
    np.testing.assert_array_equal(value[1:], to_numpy(want_value)[1:])
    np.testing.assert_array_equal(grad[1:], to_numpy(want_grad)[1:])


# ---------------------------------------------------------------- inputs are never modified

@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_inputs_not_modified(backend, entry):
    xp = available(backend)
    s, y = _data(xp)
    extras = {k: asarray(xp, a) for k, a in _extras(entry).items()}
    before = [to_numpy(a).copy() for a in (s, y, *extras.values())]
    entry.fn(s, y, **entry.params, **extras)
    if entry.differentiable:
        topkloss.value_and_grad(entry.fn)(s, y, **entry.params, **extras)
    for a, b in zip((s, y, *extras.values()), before):
        np.testing.assert_array_equal(to_numpy(a), b)


# ---------------------------------------------------------------- value checks

def _out_of_range(xp):
    s, y = _data(xp)
    return s, y + N  # every label out of range


@pytest.mark.parametrize("entry", BASE, ids=ids(BASE))
def test_value_checks_switch(xp, entry):
    s, y = _out_of_range(xp)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\]"):
        entry.call(xp, s, y, _extras(entry))
    with topkloss.value_checks(False):
        _unchecked(lambda: entry.call(xp, s, y, _extras(entry)), s)
    with pytest.raises(ValueError, match="labels"):  # the context manager restored the setting
        entry.call(xp, s, y, _extras(entry))
    previous = topkloss.set_value_checks(False)
    try:
        assert previous is True
        _unchecked(lambda: entry.call(xp, s, y, _extras(entry)), s)
    finally:
        assert topkloss.set_value_checks(previous) is False


def _unchecked(call, scores):
    """Out-of-range labels with the checks off are not checked: the result is undefined (garbage,
    or the backend's own IndexError where it bounds-checks a gather), but never our check.

    Not called on torch CUDA: there a gather's bounds check is a device-side assert, which leaves
    the process's CUDA context unusable (every later test of the worker would fail)."""
    if getattr(getattr(scores, "device", None), "type", None) == "cuda":
        return
    try:
        call()
    except (IndexError, RuntimeError) as exc:  # a backend's bounds check of a gather, nothing else
        if not re.search(r"out of (bounds|range)", str(exc)):
            raise


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_value_checks_skipped_under_jax_jit(entry):
    jax = pytest.importorskip("jax")
    s, y = _out_of_range(available("jax"))
    extras = {k: jax.numpy.asarray(a) for k, a in _extras(entry).items()}
    fn = entry.fn
    jax.jit(lambda s, y: fn(s, y, **entry.params, **extras))(s, y)  # traced labels: not read


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_value_checks_skipped_under_torch_transforms(entry):
    torch = pytest.importorskip("torch")
    torch._dynamo.reset()  # one lambda per entry: fresh recompile counts
    s, y = _out_of_range(available("torch"))
    extras = {k: torch.asarray(a, device=s.device) for k, a in _extras(entry).items()}
    fn = entry.fn
    f = lambda s, y: fn(s, y, **entry.params, **extras)  # noqa: E731
    # not checked (the backend may still bounds-check a gather: garbage in, an IndexError out)
    _unchecked(lambda: torch.compile(f, fullgraph=True, backend="eager")(s, y), s)
    _unchecked(lambda: torch.func.vmap(f, in_dims=(None, 0))(s, torch.stack([y, y])), s)  # batched labels are wrapped
    meta = {k: a.to("meta") for k, a in extras.items()}
    fn(s.to("meta"), y.to("meta"), **entry.params, **meta)  # values of a meta tensor do not exist


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_value_checks_of_dask_arrays_run_at_compute(entry):
    """A Dask graph is built without reading labels; each chunk's labels are checked when it is
    computed (no extra pass over the data), unless the checks were off when it was built."""
    da = pytest.importorskip("dask.array")
    s, y = _data(np)
    y = np.where(np.arange(B) == B - 1, N, y)  # only the last chunk is bad
    extras = {k: da.from_array(a, chunks=(2, *a.shape[1:])) for k, a in _extras(entry).items()}
    ds, dy = da.from_array(s, chunks=(2, N)), da.from_array(y, chunks=2)
    out = entry.fn(ds, dy, **entry.params, **extras)  # lazy: nothing read yet
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\]"):
        out.compute()
    with topkloss.value_checks(False):
        out = entry.fn(ds, dy, **entry.params, **extras)
    with topkloss.value_checks(True):
        _unchecked(out.compute, ds)


class _Watched:
    """A torch.Tensor subclass that records every read of its values on the host."""

    READS = ("__bool__", "item", "__int__", "__float__", "__index__", "tolist", "numpy")

    @staticmethod
    def make():
        torch = pytest.importorskip("torch")
        log = []

        class Watched(torch.Tensor):
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                if getattr(func, "__name__", "") in _Watched.READS:
                    log.append(func.__name__)
                return super().__torch_function__(func, types, args, kwargs or {})

        return Watched, log


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_value_checks_read_values_at_most_once(entry, monkeypatch):
    """One host synchronisation per checked array with checks on (the label range), none with them off.

    On a GPU each read of an array's values waits for the device: a training loop that turns
    the checks off must not pay for any. The tensors here are on the CPU, so the code is held
    to its accelerator forms (the host forms of the transition loss and of ``ops.topk_mask``
    read one value each to branch on ties, free on the host)."""
    from topkloss.core import ops, transition

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(transition, "by_columns", lambda xp, s: False)
    monkeypatch.setattr(ops, "eager_host", lambda xp, x: False)
    Watched, log = _Watched.make()
    s, y = _data(available("torch"))
    s = s.as_subclass(Watched).requires_grad_(entry.differentiable)
    y = y.as_subclass(Watched)
    extras = {k: torch.asarray(a).as_subclass(Watched) for k, a in _extras(entry).items()}
    checked = 1 + sum(e.value_checked for e in entry.extras.values())  # labels, and a range-checked array
    for checks, most in ((True, checked), (False, 0)):
        del log[:]
        with topkloss.value_checks(checks):
            out = entry.fn(s, y, **entry.params, **extras)
            if entry.differentiable:
                out.backward()
        assert len(log) <= most, f"value checks {checks}: values read {log}"


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_no_device_synchronisation_with_checks_off(entry):
    """With a GPU: no CUDA synchronisation at all once value checks are off (skipped on CPU)."""
    xp = available("torch")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    s, y = _data(xp)
    s, y = s.cuda().requires_grad_(entry.differentiable), y.cuda()
    extras = {k: torch.asarray(a, device="cuda") for k, a in _extras(entry).items()}
    entry.fn(s, y, **entry.params, **extras)  # warm up
    torch.cuda.set_sync_debug_mode("error")
    try:
        with topkloss.value_checks(False):
            out = entry.fn(s, y, **entry.params, **extras)
            if entry.differentiable:
                out.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ---------------------------------------------------------------- log_esf and value_and_grad

@pytest.mark.parametrize(
    "make, k, exc, arg",
    [
        (lambda xp: asarray(xp, 1.0, xp.float64), 2, ValueError, "x"),
        (lambda xp: xp.astype(asarray(xp, np.ones((2, 3))), xp.int32), 2, TypeError, "x"),
        (lambda xp: [1.0, 2.0], 2, TypeError, "x"),
        (lambda xp: asarray(xp, np.ones((2, 3)), xp.float64), -1, ValueError, r"\bk\b"),
        (lambda xp: asarray(xp, np.ones((2, 3)), xp.float64), 1.0, TypeError, r"\bk\b"),
    ],
    ids=["0d", "int", "list", "k-negative", "k-float"],
)
def test_log_esf_bad_input(xp, make, k, exc, arg):
    with pytest.raises(exc, match=arg):
        topkloss.log_esf(make(xp), k)


def test_log_esf_empty(xp):
    out = topkloss.log_esf(asarray(xp, np.zeros((0, 3)), xp.float64), 2)
    assert tuple(out.shape) == (0, 3)
    out = topkloss.log_esf(asarray(xp, np.zeros((2, 0)), xp.float64), 2)  # no variables: e_0 = 1, rest 0
    np.testing.assert_array_equal(to_numpy(out), [[0.0, -np.inf, -np.inf]] * 2)


@pytest.mark.parametrize("fn", [np.sum, lambda s, y: s, "topk_accuracy"])
def test_value_and_grad_rejects_other_functions(fn):
    if isinstance(fn, str):
        if not hasattr(topkloss, fn):
            pytest.skip(f"{fn} not implemented yet")
        fn = getattr(topkloss, fn)
    with pytest.raises(TypeError, match="loss_fn"):
        topkloss.value_and_grad(fn)


def test_ldam_margins_bad_input():
    if not hasattr(topkloss, "ldam_margins"):
        pytest.skip("ldam_margins not implemented yet")
    f = topkloss.ldam_margins
    with pytest.raises(ValueError, match="class_counts"):
        f(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="class_counts"):
        f(np.array([3.0, -1.0, 2.0]))
    with pytest.raises(TypeError, match="class_counts"):
        f(np.array(["3", "1"]))
    with pytest.raises(ValueError, match="class_counts"):
        f(np.array([3.0, 0.0]))
    with pytest.raises(ValueError, match="max_margin"):
        f(np.array([3.0, 1.0]), max_margin=float("nan"))
    with pytest.raises(ValueError, match="power"):
        f(np.array([3.0, 1.0]), power=float("inf"))


# ---------------------------------------------------------------- results (every entry)


@pytest.mark.parametrize("entry", BASE, ids=ids(BASE))
def test_reduced_results_are_0d_arrays_of_the_input_type(xp, entry):
    """"mean" and "sum" give a 0-d array of the input's array type (NumPy's own reductions give
    NumPy scalars, which are not arrays), from the loss and from ``value_and_grad``."""
    s, y = _data(xp)
    extras = {k: asarray(xp, a) for k, a in _extras(entry).items()}
    for reduction in entry.reductions[:2]:
        outs = [entry.fn(s, y, **entry.params, **extras, reduction=reduction)]
        if entry.differentiable:
            outs.append(topkloss.value_and_grad(entry.fn)(s, y, **entry.params, **extras, reduction=reduction)[0])
        for out in outs:
            assert_array_type(out, xp)
            assert not isinstance(out, np.generic), type(out)  # array_namespace takes NumPy scalars too
            assert out.shape == () and out.dtype == s.dtype

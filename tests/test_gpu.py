"""The library on a GPU: PyTorch CUDA tensors, CuPy arrays and JAX arrays on a GPU device.

Every public loss and metric is called on the device and compared with the same call on NumPy
in float64; its results must stay on the input's device, in its array type. Seeded noise must
be reproducible on the device, and the framework transforms (``torch.compile``, ``jax.jit``)
must give the eager results. Each backend skips cleanly where it has no GPU (CI has none); the
numbers of a run on a lent H100 are in docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np
import pytest

import topkloss
from loss_table import ALL, LOSSES, distinct_scores, ids

BATCH, N = 16, 50


class Gpu:
    """One GPU backend: how to move a NumPy array there and how to check where an array is."""

    def __init__(self, name):
        self.name = name
        try:
            if name == "torch_cuda":
                import torch

                if not torch.cuda.is_available():
                    raise RuntimeError("torch.cuda.is_available() is False")
                self.mod, self.dev = torch, torch.device("cuda", 0)
            elif name == "cupy":
                import cupy

                cupy.cuda.runtime.getDeviceCount()
                self.mod, self.dev = cupy, cupy.cuda.Device(0)
            else:
                import jax

                self.mod, self.dev = jax, jax.devices("gpu")[0]
        except Exception as exc:  # ImportError, no driver, no GPU device
            pytest.skip(f"{name} unavailable: {type(exc).__name__}: {exc}")

    def put(self, a):
        a = np.asarray(a)
        if self.name == "torch_cuda":
            return self.mod.asarray(a.copy(), device=self.dev)
        if self.name == "cupy":
            with self.dev:
                return self.mod.asarray(a)
        return self.mod.device_put(a, self.dev)

    def get(self, x):
        if self.name == "torch_cuda":
            return x.detach().cpu().numpy()
        if self.name == "cupy":
            return x.get()
        return np.asarray(x)

    def assert_on_device(self, x, like):
        assert type(x) is type(like) or self.name == "jax", (type(x), type(like))
        if self.name == "torch_cuda":
            assert x.device == self.dev, x.device
        elif self.name == "cupy":
            assert x.device == self.dev, x.device
        else:
            assert x.devices() == {self.dev}, x.devices()

    def value_and_grad(self, fn, scores, labels, **kw):
        """The summed value of ``fn`` and its gradient, through the framework's own autograd
        (``topkloss.value_and_grad`` on CuPy)."""
        if self.name == "torch_cuda":
            s = scores.detach().clone().requires_grad_(True)
            value = fn(s, labels, **kw).sum()
            value.backward()
            return value.detach(), s.grad
        if self.name == "cupy":
            value, grad = topkloss.value_and_grad(fn)(scores, labels, **kw)
            return value.sum(), grad
        import jax

        return jax.jit(jax.value_and_grad(lambda a: fn(a, labels, **kw).sum()))(scores)


GPUS = ("torch_cuda", "cupy", "jax")


@pytest.fixture(params=GPUS)
def gpu(request):
    return Gpu(request.param)


def _tolerances(dtype):
    # float32: about 100 ulp of a value or a gradient entry (|g| <= 1 + alpha); float64: 1e-12
    return (1e-5, 1e-6) if dtype == "float32" else (1e-12, 1e-13)


def _case(entry, seed=0):
    rng = np.random.default_rng(seed)
    scores = distinct_scores(rng, BATCH, N)
    labels = rng.integers(0, N, BATCH)
    return scores, labels, entry.arrays(rng, BATCH, N)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_every_function_on_the_gpu_matches_numpy_float64(gpu, entry, dtype):
    scores, labels, extras = _case(entry)
    kw = dict(entry.params)
    ref_kw = dict(kw, **extras)
    S, Y = gpu.put(scores.astype(dtype)), gpu.put(labels)
    dev_kw = dict(kw, **{name: gpu.put(a.astype(dtype)) for name, a in extras.items()})
    rtol, atol = _tolerances(dtype)
    if not entry.differentiable:
        out = entry.fn(S, Y, **dev_kw)
        gpu.assert_on_device(out, S)
        np.testing.assert_allclose(gpu.get(out), entry.fn(scores, labels, **ref_kw), rtol=rtol, atol=atol)
        return
    for reduction in entry.reductions:
        ref_v, ref_g = topkloss.value_and_grad(entry.fn)(scores, labels, reduction=reduction, **ref_kw)
        v, g = gpu.value_and_grad(entry.fn, S, Y, reduction=reduction, **dev_kw)
        gpu.assert_on_device(v, S)
        gpu.assert_on_device(g, S)
        assert str(g.dtype).endswith(dtype), g.dtype
        np.testing.assert_allclose(gpu.get(v), np.sum(ref_v), rtol=rtol, atol=atol, err_msg=reduction)
        np.testing.assert_allclose(gpu.get(g), ref_g, rtol=rtol, atol=atol, err_msg=reduction)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("k", [1, 3, 10, 49])
def test_log_esf_on_the_gpu(gpu, dtype, k):
    x = np.random.default_rng(k).normal(size=(8, 50))
    out = topkloss.log_esf(gpu.put(x.astype(dtype)), k)
    want = topkloss.log_esf(x, k)
    gpu.assert_on_device(out, gpu.put(x))
    rtol, atol = _tolerances(dtype)
    np.testing.assert_allclose(gpu.get(out), want, rtol=rtol, atol=atol * np.abs(want).max())


@pytest.mark.parametrize("k", [5, 10, 20])
def test_smooth_svm_float32_at_large_n_matches_float64(gpu, k):
    """The planned paths (linear, linear in float64 at k >= 10, n = 1e5) on the device."""
    rng = np.random.default_rng(k)
    scores, labels = rng.normal(size=(4, 100_000)) * 3, rng.integers(0, 100_000, 4)
    ref_v, ref_g = topkloss.value_and_grad(topkloss.smooth_topk_svm)(scores, labels, k=k, reduction="none")
    S = gpu.put(scores.astype("float32"))
    v, g = gpu.value_and_grad(topkloss.smooth_topk_svm, S, gpu.put(labels), k=k, reduction="none")
    np.testing.assert_allclose(gpu.get(v), ref_v.sum(), rtol=1e-5)
    np.testing.assert_allclose(gpu.get(g), ref_g, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape, dtype, scan", [
    ((4, 100_000), "float32", True),  # wide float32 rows: prefix sums (float64 inside)
    ((64, 100_000), "float32", False),  # beyond SCAN_ACCELERATOR_MAX entries: the tree's memory
    ((4, 100_000), "float64", False),  # float64 keeps the tree's rounding on wide rows
    ((16, 50), "float64", True),
])
def test_the_polynomials_form_planned_on_the_device(gpu, shape, dtype, scan):
    """Eager torch on CUDA and CuPy take the polynomials by prefix sums (``scan_applies``), JAX the tree."""
    from topkloss.adapters import namespace
    from topkloss.core import smooth_svm

    x = gpu.put(np.zeros(shape, dtype))
    assert smooth_svm.scan_applies(namespace(x), x, 5, "linear") is (scan and gpu.name != "jax")


@pytest.mark.parametrize("k", [1, 5, 20])
def test_prefix_sums_and_tree_agree_on_the_device(gpu, monkeypatch, k):
    """Both forms of the polynomials forced on the device: the NumPy float64 loss and gradient."""
    from topkloss.core import smooth_svm

    if gpu.name == "jax":
        pytest.skip("JAX takes the tree")
    rng = np.random.default_rng(k)
    scores, labels = rng.normal(size=(32, 3000)) * 3, rng.integers(0, 3000, 32)
    scores[:, :3] += 1e3  # a spread: the top classes far above the rest
    scores = scores.astype(np.float32).astype(np.float64)  # the reference on the device's inputs
    ref_v, ref_g = topkloss.value_and_grad(topkloss.smooth_topk_svm)(scores, labels, k=k, reduction="none")
    S, Y = gpu.put(scores.astype("float32")), gpu.put(labels)
    for form in (True, False):
        calls = []
        monkeypatch.setattr(smooth_svm, "scan_applies", lambda xp, s, k, mode, form=form, calls=calls: calls.append(1) or form)
        v, g = gpu.value_and_grad(topkloss.smooth_topk_svm, S, Y, k=k, reduction="none")
        assert calls
        np.testing.assert_allclose(gpu.get(v), ref_v.sum(), rtol=1e-5, err_msg=str(form))
        np.testing.assert_allclose(gpu.get(g), ref_g, rtol=0, atol=1e-6, err_msg=str(form))


def test_seeded_noise_is_reproducible_on_the_device(gpu):
    scores, labels, _ = _case(LOSSES[0])
    S, Y = gpu.put(scores.astype("float32")), gpu.put(labels)
    kw = dict(k=3, epsilon=1.0, n_samples=4, reduction="none")
    if gpu.name == "jax":
        import jax

        def draw(seed):
            return topkloss.noised_topk_hinge(S, Y, key=jax.random.key(seed), **kw)
    else:
        def draw(seed):
            return topkloss.noised_topk_hinge(S, Y, seed=seed, **kw)
    a, b, c = draw(1), draw(1), draw(2)
    gpu.assert_on_device(a, S)
    np.testing.assert_array_equal(gpu.get(a), gpu.get(b))
    assert not np.array_equal(gpu.get(a), gpu.get(c))


def test_device_generators(gpu):
    """A torch.Generator / cupy.random.Generator on the device drives the draws and advances."""
    if gpu.name == "jax":
        pytest.skip("JAX takes a key, tested above")
    scores, labels, _ = _case(LOSSES[0])
    S, Y = gpu.put(scores.astype("float32")), gpu.put(labels)
    if gpu.name == "torch_cuda":
        make = lambda: gpu.mod.Generator(device=gpu.dev).manual_seed(7)  # noqa: E731
    else:
        make = lambda: gpu.mod.random.default_rng(7)  # noqa: E731
    g1, g2 = make(), make()
    first = gpu.get(topkloss.noised_topk_hinge(S, Y, k=3, seed=g1, reduction="none"))
    np.testing.assert_array_equal(first, gpu.get(topkloss.noised_topk_hinge(S, Y, k=3, seed=g2, reduction="none")))
    second = gpu.get(topkloss.noised_topk_hinge(S, Y, k=3, seed=g1, reduction="none"))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("wide", [False, True], ids=["16x50", "256x10000"])
@pytest.mark.parametrize("name", ["smooth_topk_svm", "topk_hinge", "topk_transition"])
def test_compiled_equals_eager_on_the_device(gpu, name, wide):
    """Compiled and eager agree; the wide rows are where Inductor splits the running count's
    scan (which failed to generate code for the transition when the k-th value was a slice)."""
    if gpu.name == "cupy":
        pytest.skip("CuPy has no compiler of Python functions")
    fn = getattr(topkloss, name)
    if wide:
        rng = np.random.default_rng(1)
        scores, labels = rng.normal(size=(256, 10_000)), rng.integers(0, 10_000, 256)
    else:
        scores, labels, _ = _case(LOSSES[0])
    S, Y = gpu.put(scores.astype("float32")), gpu.put(labels)
    eager_v, eager_g = gpu.value_and_grad(fn, S, Y, k=5)
    if gpu.name == "torch_cuda":
        import torch

        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True)
        s = S.detach().clone().requires_grad_(True)
        v = compiled(s, Y, k=5)
        v.backward()
        v, g = v.detach(), s.grad
    else:  # gpu.value_and_grad already runs under jax.jit; compare with eager JAX
        import jax

        v, g = jax.value_and_grad(lambda a: fn(a, Y, k=5))(S)
    gpu.assert_on_device(g, S)
    np.testing.assert_allclose(gpu.get(v), gpu.get(eager_v), rtol=1e-6)
    np.testing.assert_allclose(gpu.get(g), gpu.get(eager_g), rtol=0, atol=1e-7)

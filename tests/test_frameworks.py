"""The foundation's functions under each framework's autograd and transforms.

torch: loss.backward(), gradcheck (float64), torch.func.grad / vmap, torch.compile(fullgraph=True).
JAX: grad, jit, vmap, in float32 and float64. Every gradient equals value_and_grad's.
"""

from __future__ import annotations

import numpy as np
import pytest

import topkloss
from conftest import available

FUNCS = {
    "smooth_topk_svm": (topkloss.smooth_topk_svm, dict(k=3, tau=0.8, alpha=1.0)),
    "topk_svm": (topkloss.topk_svm, dict(k=3, alpha=1.0)),
}


def _data(batch=5, n=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, n)), rng.integers(0, n, size=batch)


@pytest.mark.parametrize("name", FUNCS)
def test_torch_backward_gradcheck_and_func(name):
    available("torch")
    import torch

    fn, params = FUNCS[name]
    s, y = _data()
    want_v, want_g = topkloss.value_and_grad(fn)(s, y, **params)
    st, yt = torch.tensor(s, requires_grad=True), torch.tensor(y)
    out = fn(st, yt, **params)
    out.backward()
    np.testing.assert_allclose(out.item(), want_v, rtol=1e-13)
    np.testing.assert_allclose(st.grad.numpy(), want_g, rtol=1e-12, atol=1e-15)
    assert torch.autograd.gradcheck(lambda a: fn(a, yt, reduction="none", **params), (st.detach().requires_grad_(),))
    g = torch.func.grad(lambda a: fn(a, yt, **params))(st.detach())
    np.testing.assert_allclose(g.numpy(), want_g, rtol=1e-12, atol=1e-15)
    per_row = torch.func.vmap(torch.func.grad(lambda a, b: fn(a[None], b[None], **params)))(st.detach(), yt)
    np.testing.assert_allclose(per_row.numpy() / len(y), want_g, rtol=1e-12, atol=1e-15)
    # batched labels, unbatched scores: nothing may be written in place into an unbatched array
    label_sets = torch.tensor(np.stack([y, y[::-1].copy(), np.roll(y, 1)]))
    grads = torch.func.vmap(torch.func.grad(lambda a, b: fn(a, b, **params)), in_dims=(None, 0))(st.detach(), label_sets)
    for g_b, y_b in zip(grads, label_sets.numpy()):
        np.testing.assert_allclose(g_b.numpy(), topkloss.value_and_grad(fn)(s, y_b, **params)[1], rtol=1e-12, atol=1e-15)


def test_torch_log_esf_gradcheck_and_vmap():
    available("torch")
    import torch

    x = torch.tensor(np.random.default_rng(1).normal(size=(3, 7)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: topkloss.log_esf(a, 4), (x,))
    batched = torch.func.vmap(lambda a: topkloss.log_esf(a, 3))(x.detach())
    torch.testing.assert_close(batched, topkloss.log_esf(x.detach(), 3))


def test_torch_compile_fullgraph():
    available("torch")
    import torch

    fn, params = FUNCS["smooth_topk_svm"]
    s, y = _data(seed=2)
    want_v, want_g = topkloss.value_and_grad(fn)(s.astype(np.float32), y, **params)
    compiled = torch.compile(lambda a, b: fn(a, b, **params), fullgraph=True)
    st = torch.tensor(s, dtype=torch.float32, requires_grad=True)
    out = compiled(st, torch.tensor(y))
    out.backward()
    np.testing.assert_allclose(out.item(), want_v, rtol=1e-5)
    np.testing.assert_allclose(st.grad.numpy(), want_g, rtol=1e-4, atol=1e-6)


def test_torch_compile_does_not_recompile_for_the_same_shapes():
    """The core's eager-only state (esf.level_forms' memo) is invisible to dynamo: a shape seen
    before reuses its graph (a guard on the memo would fail as the memo fills: one more graph)."""
    available("torch")
    import torch
    from torch._dynamo.utils import counters

    from topkloss.core import esf

    fn, params = FUNCS["smooth_topk_svm"]
    esf._FORMS_MEMO.clear()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(lambda a, b: fn(a, b, **params), dynamic=False)
    for batch in (8, 8, 4, 6, 8):
        s, y = _data(batch=batch, n=20, seed=batch)
        compiled(torch.tensor(s, dtype=torch.float32, requires_grad=True), torch.tensor(y)).backward()
    assert counters["stats"]["unique_graphs"] == 3


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_grad_jit_vmap(name, dtype):
    available("jax")
    import jax
    import jax.numpy as jnp

    fn, params = FUNCS[name]
    s, y = _data(seed=3)
    s = s.astype(dtype)
    want_v, want_g = topkloss.value_and_grad(fn)(s, y, **params)
    sj, yj = jnp.asarray(s), jnp.asarray(y)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    f = lambda a, b: fn(a, b, **params)  # noqa: E731
    for vg in (jax.value_and_grad(f), jax.jit(jax.value_and_grad(f))):
        v, g = vg(sj, yj)
        assert v.dtype == jnp.dtype(dtype) and g.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(float(v), want_v, rtol=rtol)
        np.testing.assert_allclose(np.asarray(g), want_g, rtol=rtol, atol=rtol * 1e-2)
    per_row = jax.jit(jax.vmap(jax.grad(lambda a, b: fn(a[None], b[None], **params))))(sj, yj)
    np.testing.assert_allclose(np.asarray(per_row) / len(y), want_g, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("name", ["smooth_topk_svm", "topk_svm", "topk_hinge", "topk_transition", "noised_topk_hinge"])
@pytest.mark.parametrize("n,k", [(100, 5), (1000, 20)])
def test_jax_gradient_selects_without_a_full_sort(name, n, k):
    """The compiled forward + backward of every loss that selects holds no sort: XLA turns a
    slice of ``top_k``'s results into a full sort of the rows. One slipped into
    smooth_topk_svm's backward (T's k - 1 columns of the top-k indices) and took its jit'd
    gradient from 2.2 to 38 ms at 256 x 1000 (k = 5)."""
    available("jax")
    import re

    import jax
    import jax.numpy as jnp

    fn, params = getattr(topkloss, name), ({"seed": 0} if name == "noised_topk_hinge" else {})
    s, y = jnp.zeros((8, n), jnp.float32), jnp.zeros((8,), jnp.int32)
    hlo = jax.jit(jax.value_and_grad(lambda a, b: fn(a, b, k=k, **params))).lower(s, y).compile().as_text()
    assert re.search(r"\btop_?k", hlo, flags=re.IGNORECASE)  # the selection is there, as a top-k
    assert not re.findall(r"\bsort\(", hlo)


@pytest.mark.parametrize("n,k,eager,no_row_scale", [(60, 5, True, False), (2000, 10, False, False), (2500, 20, False, False), (300, 20, False, True)])
def test_jax_smooth_svm_float64_inside_without_x64(n, k, eager, no_row_scale):
    """With the user's ``jax_enable_x64`` off, ``smooth_topk_svm`` still plans as NumPy does
    (leaves scaled per row for k = 10 at 2000 classes and k = 20 at 2500; float64 trees, which
    k >= 28 takes, forced for k = 20 at 300), because the adapter traces it with x64 on
    (``Op.float64_inside``): float32 in and out, within the numerical contract of NumPy's
    float64, eager, under ``jit``, ``vmap`` and ``checkpoint``, and the rest of the program keeps
    x64 off. (Eager, ``vmap`` and ``checkpoint`` on the smallest size only: XLA compiles each for
    minutes at k = 20.)"""
    available("jax")
    import jax
    import jax.numpy as jnp

    from topkloss.core import smooth_svm

    rng = np.random.default_rng(n + k)
    s = (rng.normal(size=(3, n)) * 4).astype(np.float32)
    y = rng.integers(0, n, size=3)
    want_v, want_g = topkloss.value_and_grad(topkloss.smooth_topk_svm)(s.astype(np.float64), y, k=k, reduction="sum")
    planned = []
    real = smooth_svm.plan_mode

    def spy(*a):
        planned.append(real(*a))
        return planned[-1]

    f = lambda a, b: topkloss.smooth_topk_svm(a, b, k=k, reduction="sum")  # noqa: E731
    with jax.enable_x64(False), pytest.MonkeyPatch.context() as mp:
        mp.setattr(smooth_svm, "plan_mode", spy)
        if no_row_scale:
            mp.setattr(smooth_svm, "_row_scale_is_exact", lambda k: False)
        sj, yj = jnp.asarray(s), jnp.asarray(y)
        assert sj.dtype == jnp.float32 and yj.dtype == jnp.int32  # the user's x64 is off
        for vg in (jax.value_and_grad(f), jax.jit(jax.value_and_grad(f)))[0 if eager else 1 :]:
            v, g = vg(sj, yj)
            assert v.dtype == jnp.float32 and g.dtype == jnp.float32
            np.testing.assert_allclose(float(v), want_v, rtol=1e-5)
            np.testing.assert_allclose(np.asarray(g), want_g, rtol=0, atol=1e-5 * np.abs(want_g).max())
        if eager:
            per_row = jax.jit(jax.vmap(jax.grad(lambda a, b: f(a[None], b[None]))))(sj, yj)
            np.testing.assert_allclose(np.asarray(per_row), want_g, rtol=0, atol=1e-5 * np.abs(want_g).max())
            remat = jax.jit(jax.grad(jax.checkpoint(f)))(sj, yj)  # the forward traced again in the backward
            assert remat.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(remat), want_g, rtol=0, atol=1e-5 * np.abs(want_g).max())
        assert jnp.asarray(1.0).dtype == jnp.float32  # still off outside the loss
        want_mode = real(n - 1, k, False, True)
    assert set(planned) == {want_mode}
    assert want_mode == {(2000, 10): "scaled", (2500, 20): "scaled", (300, 20): "linear64", (60, 5): "linear"}[(n, k)]


def test_jax_log_esf_jit_grad():
    available("jax")
    import jax
    import jax.numpy as jnp

    x = np.random.default_rng(4).normal(size=(3, 6))
    _, want = topkloss.value_and_grad(topkloss.log_esf)(x, 3)
    got = jax.jit(jax.grad(lambda a: jnp.sum(topkloss.log_esf(a, 3))))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)

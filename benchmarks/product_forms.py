"""The smooth SVM's polynomial products against products as matrix multiplications, timed.

``smooth_topk_svm`` multiplies polynomials in two places, both in O(k) or O(k^2) array
operations per step:

- ``T``: U's polynomial (degrees 0 .. k) times T's k factors ``(a_i + b_i t)``, a chain of
  k - 1 steps of two slices and one multiply-add each (``smooth_svm._times_top``), and its
  reverse (``smooth_svm._times_top_backward``), giving ``N / D``, the cotangents of U's
  coefficients and ``-w_i dF/dw_i``;
- ``U``: U's polynomial ``e_1 .. e_k`` of ``(batch, n)`` leaves and ``x dF/dx`` for a cotangent of
  ``e_1 .. e_k``, by the form the library plans for these shapes (prefix sums or the product
  tree: ``smooth_svm._plan``).

The product of two polynomials of ``d`` coefficients is also their outer product summed along
its anti-diagonals: one elementwise product and one multiplication by a fixed 0/1 matrix of
``(d^2, d')``. A tree of such products (``matmul tree`` below; pairs of nodes, the odd one
paired with the polynomial 1) takes the same few array operations per level whatever k:
``log2 k`` levels for T's factors, ``log2 n`` for U's leaves, the backward by the transposed
matrices. Where a backend pays per operation (eager frameworks, launches on a GPU) that
predicts fewer costs; the matrices are dense (each product costs ``d^2 d'`` multiply-adds for
``d^2`` useful ones) and the inner dimensions are small. The script times both forms, forward
+ backward, interleaved in one run, and prints how far they agree (the largest difference over
the largest magnitude, per output, taken in float64). Usage::

    python benchmarks/product_forms.py --backend torch --ks 5,10,20 --ns 100,1000
    python benchmarks/product_forms.py --backend jax        # under jax.jit
    python benchmarks/product_forms.py --backend torch --device cuda   # or --backend cupy
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_losses


@functools.lru_cache(maxsize=None)
def _sums(d, d_out):
    """The 0/1 matrix ``(d^2, d_out)`` that sums an outer product of two ``d``-coefficient
    polynomials along its anti-diagonals, truncated at ``d_out`` coefficients."""
    m = np.zeros((d * d, d_out))
    for a in range(d):
        for b in range(d):
            if a + b < d_out:
                m[a * d + b, a + b] = 1.0
    return m


_ON_DEVICE = {}


def _device_sums(xp, d, d_out, dtype, device):
    """:func:`_sums` as an array of ``xp`` on ``device``, made once per key (kept, as a library
    would keep such constants; under ``jax.jit`` a constant of the trace, made at tracing)."""
    if getattr(xp, "__name__", "") == "jax.numpy":
        return xp.asarray(_sums(d, d_out), dtype=dtype)
    key = (getattr(xp, "__name__", ""), d, d_out, str(dtype), str(device))
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = xp.asarray(_sums(d, d_out), dtype=dtype, device=device)
    return _ON_DEVICE[key]


def matmul_tree(xp, nodes, degree, device=None):
    """``nodes`` ``(batch, p, d)``: the coefficients of p polynomials. Their product, truncated
    at ``degree`` ``(batch, degree + 1)``, and what :func:`matmul_tree_backward` needs."""
    levels = []
    while nodes.shape[1] > 1:
        batch, p, d = nodes.shape
        if p % 2:  # the odd node pairs with the polynomial 1
            one = xp.concat([xp.ones_like(nodes[:, :1, :1]), xp.zeros_like(nodes[:, :1, 1:])], axis=-1)
            nodes = xp.concat([nodes, one], axis=1)
        pairs = xp.reshape(nodes, (batch, (p + 1) // 2, 2, d))
        left, right = pairs[:, :, 0, :], pairs[:, :, 1, :]
        d_out = min(2 * d - 1, degree + 1)
        sums = _device_sums(xp, d, d_out, nodes.dtype, device)
        outer = xp.reshape(left[..., :, None] * right[..., None, :], (-1, d * d))
        nodes = xp.reshape(xp.matmul(outer, sums), (batch, (p + 1) // 2, d_out))
        levels.append((left, right, p, sums))
    root = nodes[:, 0, :]
    if root.shape[-1] < degree + 1:  # fewer leaves than the degree: e_j = 0 above their count
        root = xp.concat([root, xp.zeros((root.shape[0], degree + 1 - root.shape[-1]), dtype=root.dtype, device=device)], axis=-1)
    return root, levels


def matmul_tree_backward(xp, g, levels):
    """The cotangents ``(batch, p, d)`` of :func:`matmul_tree`'s nodes for the cotangent ``g``
    ``(batch, degree + 1)`` of its product."""
    g = g[:, None, : (levels[-1][3].shape[1] if levels else g.shape[-1])]  # the root's own coefficients
    for left, right, p, sums in reversed(levels):
        batch, half, d = left.shape
        outer = xp.reshape(xp.matmul(xp.reshape(g[:, :half, :], (-1, sums.shape[1])), xp.permute_dims(sums, (1, 0))), (batch, half, d, d))
        g_left = xp.matmul(outer, right[..., :, None])[..., 0]  # batched matrix-vector products
        g_right = xp.matmul(left[..., None, :], outer)[..., 0, :]
        g = xp.reshape(xp.stack([g_left, g_right], axis=2), (batch, 2 * half, d))[:, :p, :]
    return g


def t_forms(xp, k, device):
    """T's product: (the library's chain, the matmul tree), each ``f(e_u, a, b, w)`` returning
    ``(N / D, cotangents of e_1 .. e_k, -w dF/dw)`` for ``F = log N - log D``."""
    from topkloss.core import smooth_svm

    def chain(e_u, a, b, w):
        factors = (a, b, w)
        steps = smooth_svm._times_top(xp, e_u, factors, "linear")
        cot, d_t = smooth_svm._times_top_backward(xp, steps, factors, "linear")
        return steps[-1][:, k] / steps[-1][:, k - 1], cot, d_t

    def tree(e_u, a, b, w):
        q, levels = matmul_tree(xp, xp.stack([a, b], axis=-1), k, device)  # (batch, k + 1)
        e = xp.flip(xp.concat([xp.ones_like(e_u[:, :1]), e_u], axis=-1), axis=-1)  # e_k .. e_0
        n_, d_ = xp.sum(q * e, axis=-1), xp.sum(q[:, :k] * e[:, 1:], axis=-1)
        g_n, g_d = (1.0 / n_)[:, None], (-1.0 / d_)[:, None]
        zero = xp.zeros_like(e[:, :1])
        g_q = e * g_n + xp.concat([e[:, 1:] * g_d, zero], axis=-1)
        g_e = xp.flip(q * g_n + xp.concat([zero, q[:, :k] * g_d], axis=-1), axis=-1)  # degrees 0 .. k
        g_ab = matmul_tree_backward(xp, g_q, levels)
        return n_ / d_, g_e[:, 1:], -w * g_ab[..., 0]

    return chain, tree


def u_forms(xp, k, n, batch, s, device):
    """U's polynomial: (the library's planned form, the matmul tree, the planned form's name, its
    dtype, the tree's dtype), each ``f(x, c)`` returning ``(e_1 .. e_k, x dF/dx)`` for
    ``F = sum_j c_j e_j``. Each form in the dtype the library would run it in for float32 scores:
    prefix sums in float64 (their rounding grows with the row); a tree in float32 where plain
    linear space is exact (``smooth_svm.plan_mode``). Where the library instead scales the leaves
    per row (the ``"scaled"`` mode, a float32 tree), both forms run here in float64 on the
    leaves as they are."""
    from topkloss.core import smooth_svm
    from topkloss.core.ops import on_accelerator

    _, wide, scan, last, scale = smooth_svm._plan(xp, s, k)
    accelerator = on_accelerator(s)

    def planned(x, c):
        top, saved = smooth_svm._polynomial(xp, x, k, "linear", scan, last)
        leaves, state, _ = smooth_svm._restore(xp, saved, n, k, batch, "linear", scan, accelerator, last)
        return top, smooth_svm._backprop(xp, leaves, state, c, scan, last)

    def tree(x, c):
        root, levels = matmul_tree(xp, xp.stack([xp.ones_like(x), x], axis=-1), k, device)
        g = matmul_tree_backward(xp, xp.concat([xp.zeros_like(c[:, :1]), c], axis=-1), levels)
        return root[:, 1:], x * g[..., 1]

    name = "prefix sums" if scan else ("tree, nodes last" if last else "tree")
    tree_dtype = "float32" if smooth_svm.plan_mode(n - 1, k, False) == "linear" else "float64"
    return planned, tree, name, "float64" if (wide or scale) else "float32", tree_dtype


def _backend(name, device):
    """(namespace, array maker, how to compile a function, how to wait for results, device)."""
    import array_api_compat

    if name == "torch":
        import torch

        wait = (lambda out: torch.cuda.synchronize()) if device == "cuda" else (lambda out: None)
        return array_api_compat.array_namespace(torch.zeros(1)), (lambda a: torch.asarray(a, device=device)), (lambda f: f), wait, torch.device(device)
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # T's chain runs in float64, as inside the loss
        dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        return jax.numpy, (lambda a: jax.device_put(jax.numpy.asarray(a), dev)), jax.jit, jax.block_until_ready, None
    if name == "cupy":
        import cupy

        return array_api_compat.array_namespace(cupy.zeros(1)), cupy.asarray, (lambda f: f), (lambda out: cupy.cuda.get_current_stream().synchronize()), None
    return array_api_compat.array_namespace(np.zeros(1)), np.asarray, (lambda f: f), (lambda out: None), None


def _time(forms, args, repeat, wait):
    times = [[] for _ in forms]
    for rep in range(repeat + 3):  # three warm-up rounds (and compilation)
        for i in np.random.default_rng(rep).permutation(len(forms)):
            t0 = time.perf_counter()
            wait(forms[i](*args))
            if rep >= 3:
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1e3 for t in times]


def _difference(xp, ours, other):
    """The largest ``|ours - other|`` over the largest ``|ours|``, across the outputs (in float64)."""
    pairs = [(xp.astype(a, xp.float64), xp.astype(b, xp.float64)) for a, b in zip(ours, other)]
    return max(float(xp.max(xp.abs(a - b)) / xp.max(xp.abs(a))) for a, b in pairs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="torch", choices=("numpy", "torch", "jax", "cupy"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where torch and JAX arrays live")
    p.add_argument("--ks", default="5,10,20")
    p.add_argument("--ns", default="100,1000")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--system-malloc", action="store_true", help="do not pin glibc's allocator")
    a = p.parse_args(argv)
    allocator = bench_losses.pin_malloc(a.system_malloc)
    xp, make, compiled, wait, device = _backend(a.backend, a.device)
    jit = " under jax.jit" if a.backend == "jax" else ""
    print(f"# {a.backend}{jit} ({bench_losses.machine(a.device)}), batch {a.batch}, forward + backward, median of {a.repeat}, interleaved; {allocator}")
    print("part    k       n  ours (form, dtype)                 matmul tree  ours ms  matmul tree ms   ratio  difference")
    rng = np.random.default_rng(0)
    for k in (int(v) for v in a.ks.split(",")):
        in_t = rng.random((a.batch, k)) < 0.8
        in_t[:, -1] = False  # the k-th entry is c itself: never in T
        w = np.where(in_t, rng.random((a.batch, k)), 0.0)
        args = [make(v) for v in (rng.random((a.batch, k)) * 10 + 1, np.where(in_t, w, 1.0), in_t.astype(np.float64), w)]
        chain, tree = (compiled(f) for f in t_forms(xp, k, device))
        ours, theirs = _time([chain, tree], args, a.repeat, wait)
        diff = _difference(xp, chain(*args), tree(*args))
        print(f"T    {k:4d}       - {'chain, float64':34s} {'float64':11s} {ours:8.3f} {theirs:15.3f} {theirs / ours:7.2f}  {diff:10.1e}", flush=True)
        for n in (int(v) for v in a.ns.split(",")):
            s = make(rng.normal(size=(a.batch, n)).astype(np.float32))
            planned, tree, name, dtype, tree_dtype = u_forms(xp, k, n, a.batch, s, device)
            x, c = np.exp(-rng.random((a.batch, n)) * 3), rng.normal(size=(a.batch, k))
            args = {t: (make(x.astype(t)), make(c.astype(t))) for t in {dtype, tree_dtype}}
            planned, tree = compiled(planned), compiled(tree)
            ours, theirs = _time([lambda: planned(*args[dtype]), lambda: tree(*args[tree_dtype])], (), a.repeat, wait)
            diff = _difference(xp, planned(*args[dtype]), tree(*args[tree_dtype]))
            print(f"U    {k:4d} {n:7d} {name + ', ' + dtype:34s} {tree_dtype:11s} {ours:8.3f} {theirs:15.3f} {theirs / ours:7.2f}  {diff:10.1e}", flush=True)


if __name__ == "__main__":
    main()

"""The cost of single building blocks, as ratios to the same backend's cross-entropy.

A loss cannot cost less than the work its definition requires. This script times, beside
cross-entropy forward + backward (``bench_losses.py``'s baseline, interleaved in one run):

- ``top-k``: the k = 5 largest values of each row of (batch, n), the backend's native
  selection (``torch.topk``, ``np.partition``, ``lax.top_k``) as ``topkloss.core.ops`` uses it
  (long rows: JAX's blocked form on a CPU, NumPy's and eager torch's group maxima; torch's short
  rows padded to its heap).
  ``topk_transition`` and ``smooth_topk_svm`` need one (``topk_transition`` adds a running
  count on torch and NumPy for the lowest-index rule for ties at the k-th value);
- ``exp``: one ``exp`` of (batch, n): an elementwise pass;
- ``transpose``: (batch, n) copied into (n + 8, batch), the layout of ``smooth_topk_svm``'s
  product trees (nodes first, a few padding leaves), as their first concatenation makes it
  (NumPy and accelerators; JAX and torch on a CPU build the list-only trees of rows of 1000
  classes and more nodes last, without the copy).
  A tree pays one such copy in the forward and one on the way back to (batch, n);
- ``normal S=5``: the (batch, 5, n) standard-normal draws of ``noised_topk_hinge`` with
  ``n_samples=5``, from the generator the library uses for an int seed (NumPy's for NumPy,
  ``torch.randn`` for torch, ``jax.random.normal`` under ``jit`` for JAX);
- ``top-k S=5``: the (k+1)-th largest of each of the (batch * 5) noisy rows of length n;
- ``transition``: ``topk_transition`` (k = 5, the adaptive weight, the mean) written directly
  in the backend's own operations, forward + backward: torch's autograd over ``torch.topk``
  and ``logsumexp``, ``jax.value_and_grad`` under ``jit``, NumPy by hand
  (:func:`native_transition`). No validation, no tie rule (the mask is the entries >= the
  k-th value: right for rows without a tie across it, as random scores are), no care for
  cancellation: what the loss costs with nothing around it, the floor for topkloss's own;
- ``by hand`` (torch only): the same loss as a ``torch.autograd.Function`` with the
  hand-derived gradient (:func:`_torch_transition_by_hand`), as topkloss registers its own,
  again with no validation, tie rule or care for cancellation (NumPy's ``transition`` is by
  hand already; JAX's is one compiled program either way);
- ``svm`` and ``svm by hand`` (torch and NumPy, at the sizes where the form by hand has the
  library's polynomial forms, :func:`smooth_svm_by_hand_applies`: rows of up to 900 classes on
  torch, fewer than 1000 on NumPy): topkloss's ``smooth_topk_svm`` (k = 5, the defaults, the
  mean; NumPy's through ``value_and_grad``), and the same loss made of the library's own
  polynomial forms and the backend's operations for everything else, on torch as a
  ``torch.autograd.Function`` (:func:`_torch_smooth_svm_by_hand`), on NumPy by hand
  (:func:`_numpy_smooth_svm_by_hand`): what topkloss's algorithm costs with nothing around it,
  beside what the library pays, in one run.

Each backend is timed in a process of its own, as ``bench_losses.py`` times them. Usage:
``python benchmarks/floors.py [--backends torch,jax,numpy] [--sizes 256x100,...]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_losses

import topkloss
from topkloss.api._random import standard_normal
from topkloss.core import ops, smooth_svm

S = 5


def native_transition(backend, k=5, by_hand=False):
    """``f(scores, labels) -> (mean loss, gradient)`` of ``topk_transition`` (adaptive weight),
    in ``backend``'s own operations (see the module's docstring). ``scores`` and ``labels`` are
    the backend's arrays; torch's ``scores`` must require grad. ``by_hand``: torch's gradient
    from :func:`_torch_transition_by_hand` instead of autograd (NumPy's is by hand always)."""
    if backend == "torch":
        import torch

        def loss(s, y):
            v, idx = torch.topk(s, k)
            lse, lse_top = torch.logsumexp(s, -1), torch.logsumexp(v, -1)
            ce = lse - s.gather(1, y[:, None])[:, 0]
            grouped = torch.where((idx == y[:, None]).any(-1), lse - lse_top, ce)
            lam = torch.exp(lse_top - lse).detach()
            return ((1 - lam) * ce + lam * grouped).mean()

        return _torch_step(_torch_transition_by_hand(k).apply if by_hand else loss)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss(s, y):
            v, idx = jax.lax.top_k(s, k)
            lse, lse_top = jax.nn.logsumexp(s, -1), jax.nn.logsumexp(v, -1)
            ce = lse - jnp.take_along_axis(s, y[:, None], axis=1)[:, 0]
            grouped = jnp.where((idx == y[:, None]).any(-1), lse - lse_top, ce)
            lam = jax.lax.stop_gradient(jnp.exp(lse_top - lse))
            return jnp.mean((1 - lam) * ce + lam * grouped)

        return jax.jit(jax.value_and_grad(loss))

    def step(s, y):  # NumPy: the forward, then the gradient p - q by hand
        b, n = s.shape
        rows = np.arange(b)
        top = np.partition(s, n - k, axis=-1)[:, n - k :]
        m = top.max(axis=-1, keepdims=True)
        mask = s >= top.min(axis=-1, keepdims=True)
        e = np.exp(s - m)
        s_top = np.exp(top - m).sum(axis=-1)
        s_out = np.where(mask, 0.0, e).sum(axis=-1)
        total = s_top + s_out
        inside = mask[rows, y]
        ce = np.log(total) - (s[rows, y] - m[:, 0])
        lam = s_top / total
        grouped = np.where(inside, np.log1p(s_out / s_top), ce)
        a = 1 / (b * total)
        on_top = a - np.where(inside, lam, 0.0) / (b * s_top)
        grad = e * np.where(mask, on_top[:, None], a[:, None])
        grad[rows, y] -= np.where(inside, 1 - lam, 1.0) / b
        return np.mean((1 - lam) * ce + lam * grouped), grad

    return step


def _torch_transition_by_hand(k):
    """A ``torch.autograd.Function`` of the mean ``topk_transition`` (adaptive weight) with the
    hand-derived gradient in torch's own operations: the fewest operations we found (one top-k,
    one ``exp`` and a product over ``(batch, n)``, two writes of columns on the way back), no
    validation, no tie rule (T_k is what ``torch.topk`` returns), no care for cancellation."""
    import torch

    class TransitionByHand(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s, y):
            v, cols = torch.topk(s, k)
            m = v[:, :1]
            e = torch.exp(s - m)
            total = e.sum(-1)
            s_top = torch.exp(v - m).sum(-1)
            s_out = total - s_top
            inside = (cols == y[:, None]).any(-1)
            ce = torch.log(total) - (s.gather(1, y[:, None])[:, 0] - m[:, 0])
            lam = s_top / total
            loss = torch.where(inside, (1 - lam) * ce + lam * torch.log1p(s_out / s_top), ce)
            ctx.save_for_backward(e, cols, inside, total, s_out, y)
            return loss.mean()

        @staticmethod
        def backward(ctx, g):
            e, cols, inside, total, s_out, y = ctx.saved_tensors
            a = g / (e.shape[0] * total)
            grad = e * a[:, None]  # p / batch; on T_k, where y is in it, 0 (the adaptive weight)
            grad.scatter_(1, cols, torch.where(inside[:, None], 0.0, grad.gather(1, cols)))
            at_y = -a * torch.where(inside, s_out, total - e.gather(1, y[:, None])[:, 0])
            return grad.scatter_(1, y[:, None], at_y[:, None]), None

    return TransitionByHand


def native_smooth_svm(backend="torch", k=5, tau=1.0, alpha=1.0):
    """``f(scores, labels) -> (mean loss, gradient)`` of ``smooth_topk_svm``: topkloss's own
    algorithm with nothing around it, on torch (:func:`_torch_smooth_svm_by_hand`; ``scores``
    must require grad) or NumPy (:func:`_numpy_smooth_svm_by_hand`)."""
    if backend == "numpy":
        return _numpy_smooth_svm_by_hand(k, tau, alpha)
    return _torch_step(_torch_smooth_svm_by_hand(k, tau, alpha).apply)


def smooth_svm_by_hand_applies(backend, xp, scores, k=5):
    """Whether :func:`native_smooth_svm` has the library's forms for ``scores``: on torch where the
    library takes prefix sums (eager, on a CPU: rows of up to 900 classes at k = 5), on NumPy
    where it builds its tree nodes first in the scores' dtype, in plain linear space, and
    selects with ``argpartition`` itself (rows of fewer than 1000 classes; longer ones select
    among group maxima, ``ops._grouped_applies``). Elsewhere the library's forms differ."""
    if backend == "torch":
        return smooth_svm.scan_applies(xp, scores, k, "linear")
    plain = smooth_svm._plan(xp, scores, k) == ("linear", False, False, False, False)
    return backend == "numpy" and plain and not ops._grouped_applies(xp, scores, k)


def _torch_step(loss):
    """``f(scores, labels) -> (loss, gradient)``: forward + backward of the torch ``loss``."""

    def step(s, y):
        s.grad = None
        out = loss(s, y)
        out.backward()
        return out, s.grad

    return step


def _numpy_smooth_svm_by_hand(k, tau, alpha):
    """``f(scores, labels) -> (mean loss, gradient)`` of ``smooth_topk_svm`` on NumPy: the
    library's own forms for the two polynomials (U's tree nodes first, in the scores' dtype,
    ``smooth_svm._polynomial`` and its reverse; T's factors by ``smooth_svm._times_top`` and its
    reverse) and its top-k (``argpartition``, then the k sorted), everything else written
    directly in NumPy, the fewest operations we found; none of the library's plan, validation
    or guards (see :func:`_torch_smooth_svm_by_hand`)."""
    import array_api_compat.numpy as xp

    kt = k * tau

    def step(s, y):
        b, n = s.shape
        rows = np.arange(b)[:, None]
        others = s.copy()
        others[rows[:, 0], y] = -np.inf
        idx = np.argpartition(others, n - k, axis=-1)[:, n - k :]
        v = np.take_along_axis(others, idx, axis=-1)
        order = np.argsort(-v, axis=-1, kind="stable")
        v, idx = np.take_along_axis(v, order, axis=-1), np.take_along_axis(idx, order, axis=-1)
        c = v[:, k - 1 :]
        x = others
        x -= c
        np.clip(x, -1e4 * kt, 0.0, out=x)
        x /= kt
        np.exp(x, out=x)
        in_t = v > c
        x[rows, idx] = ~in_t  # T out of U (x = 0); the top-k tied at c: x = 1
        e_u, saved = smooth_svm._polynomial(xp, x, k, "linear", False, False)
        w = np.exp(np.where(in_t, (c - v) / kt, -np.inf))
        factors = (np.where(in_t, w, 1.0).astype(s.dtype), in_t.astype(s.dtype), w)
        chain = smooth_svm._times_top(xp, e_u, factors, "linear")
        top = chain[-1]
        tau_r = alpha + tau * np.log(top[:, k] / top[:, k - 1]) - (s[rows[:, 0], y] - c[:, 0]) / k
        r = tau_r / tau
        loss = np.maximum(tau_r, 0.0) + tau * np.log1p(np.exp(-np.abs(r)))
        coef = (0.5 / (k * b)) * (1.0 + np.tanh(r / 2))[:, None]  # sigmoid(r) / (k b)
        cot, d_t = smooth_svm._times_top_backward(xp, chain, factors, "linear")
        leaves, state, _ = smooth_svm._restore(xp, saved, n, k, b, "linear", False, False, False)
        d = smooth_svm._backprop(xp, leaves, state, cot, False, False)
        d *= coef
        d[rows, idx] += d_t * coef
        d[rows[:, 0], y] = -coef[:, 0]
        return np.mean(loss), d

    return step


def _torch_smooth_svm_by_hand(k, tau, alpha):
    """A ``torch.autograd.Function`` of the mean ``smooth_topk_svm``: the library's own forms
    for the two polynomials (U's by prefix sums in float64, ``esf.scan_prefix`` and
    ``esf.scan_backprop``; T's factors by ``smooth_svm._times_top`` and its reverse), everything
    else written directly in torch's operations, the fewest we found. None of the library's
    plan (prefix sums at every width, linear space always: exact for k = 5 and float32 scores
    at every size of the table), validation, half-precision handling, guards for scores a
    float maximum apart or rows with fewer than k finite scores, and no Op or adapter layer:
    what the algorithm costs eager torch, a floor for topkloss's own."""
    import array_api_compat.torch as xp
    import torch

    from topkloss.core import esf

    kt = k * tau

    class SmoothSVMByHand(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s, y):
            n = s.shape[1]
            others = s.scatter(1, y[:, None], -math.inf)
            padded = torch.nn.functional.pad(others, (0, 64 * k - n), value=-math.inf) if n < 64 * k else others  # ATen's heap
            v, idx = torch.topk(padded, k)
            c = v[:, k - 1 :]
            x = others.sub_(c).clamp_(-1e4 * kt, 0.0).div_(kt).double().exp_()
            in_t = v > c
            x.scatter_(1, idx, (~in_t).double())  # T out of U (x = 0); the top-k tied at c: x = 1
            e_u, state = esf.scan_prefix(xp, x, k)
            w = ((c - v) / kt).double().exp_().mul_(in_t)
            factors = (w + (~in_t), in_t.double(), w)
            chain = smooth_svm._times_top(xp, e_u, factors, "linear")
            top = chain[-1]
            s_y = s.gather(1, y[:, None])[:, 0]
            tau_r = alpha + tau * torch.log(top[:, k] / top[:, k - 1]) - (s_y - c[:, 0]).double() / k
            r = tau_r / tau
            loss = tau_r.clamp(min=0) + tau * torch.log1p(torch.exp(-r.abs()))
            ctx.save_for_backward(idx, y, r, *factors, *state, *chain)
            return loss.mean().to(s.dtype)

        @staticmethod
        def backward(ctx, g):
            idx, y, r, *rest = ctx.saved_tensors
            factors, state, chain = rest[:3], rest[3 : 3 + k], rest[3 + k :]
            coef = (g * torch.sigmoid(r) / (k * r.shape[0]))[:, None]
            cot, d_t = smooth_svm._times_top_backward(xp, chain, factors, "linear")
            d = (esf.scan_leaves(state) * esf.scan_backprop(xp, state, cot)).mul_(coef)
            d.scatter_add_(1, idx, d_t * coef)
            d.scatter_(1, y[:, None], -coef)
            return d.to(g.dtype), None

    return SmoothSVMByHand


def _blocks(backend, scores, labels):
    """{name: step} for one backend's building blocks on ``scores`` (NumPy float32) and ``labels``."""
    b, n = scores.shape
    transition = native_transition(backend)
    if backend == "torch":
        import array_api_compat.torch as xp
        import torch

        x = torch.asarray(scores)
        noisy = torch.asarray(np.repeat(scores, S, axis=0))
        wrap, sync = (lambda f: f), (lambda r: r)
        draw = lambda: standard_normal(xp, (b, S, n), x, seed=0)
        args = (torch.asarray(scores).requires_grad_(True), torch.asarray(labels))
    elif backend == "jax":
        import jax
        import jax.numpy as xp

        x, noisy = xp.asarray(scores), xp.asarray(np.repeat(scores, S, axis=0))
        wrap, sync = jax.jit, jax.block_until_ready
        key = jax.random.key(0)
        normal = jax.jit(lambda kk: jax.random.normal(kk, (b, S, n), dtype=xp.float32))
        draw = lambda: normal(key)
        args = (x, xp.asarray(labels))
    else:
        import array_api_compat.numpy as xp

        x, noisy = scores, np.repeat(scores, S, axis=0)
        wrap, sync = (lambda f: f), (lambda r: r)
        draw = lambda: standard_normal(xp, (b, S, n), x, seed=0)
        args = (x, labels)
    topk = wrap(lambda a: ops.top_k_values(xp, a, 5, ordered=False))
    kth = wrap(lambda a: ops.kth_largest(xp, a, 6))
    exp = wrap(xp.exp)
    pad = xp.zeros((8, b), dtype=xp.float32)
    transpose = wrap(lambda a: xp.concat([xp.permute_dims(a, (1, 0)), pad], axis=0))
    by_hand = native_transition(backend, by_hand=True) if backend == "torch" else None
    svm_by_hand = native_smooth_svm(backend) if smooth_svm_by_hand_applies(backend, xp, x) else None
    if svm_by_hand is None:
        svm = None
    elif backend == "torch":
        svm = _torch_step(topkloss.smooth_topk_svm)
    else:
        svm = topkloss.value_and_grad(topkloss.smooth_topk_svm)
    return {
        "top-k": lambda: sync(topk(x)),
        "exp": lambda: sync(exp(x)),
        "transpose": lambda: sync(transpose(x)),
        "normal S=5": lambda: sync(draw()),
        "top-k S=5": lambda: sync(kth(noisy)),
        "transition": lambda: sync(transition(*args)),
        "by hand": (lambda: by_hand(*args)) if by_hand else None,
        "svm": (lambda: svm(*args)) if svm else None,
        "svm by hand": (lambda: svm_by_hand(*args)) if svm_by_hand else None,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,jax,numpy")
    p.add_argument("--sizes", default=bench_losses.DEFAULT_SIZES)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--markdown", action="store_true", help="a Markdown table")
    p.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)  # a child: no header
    raw = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    allocator = bench_losses.pin_malloc(argv is not None)  # as bench_losses.py times: see there
    backends = a.backends.split(",")
    caption = f"{bench_losses.machine()}; float32; each block's median time / cross-entropy's (forward + backward); {allocator}"
    names = ["top-k", "exp", "transpose", "normal S=5", "top-k S=5", "transition", "by hand", "svm", "svm by hand"]
    if a.rows_only:
        pass
    elif a.markdown:
        print(f"*{caption}*\n")
        print("| backend | batch x n | CE ms | " + " | ".join(names) + " |")
        print("|---|---|---|" + "---|" * len(names))
    else:
        print(f"# {caption}")
        print(f"{'backend':8} {'size':>10} {'CE ms':>8} " + " ".join(f"{m:>11}" for m in names))
    if len(backends) > 1:  # one process per backend, as bench_losses.py times (see there)
        for backend in backends:
            cmd = [sys.executable, os.path.abspath(__file__), *bench_losses._without_backends(raw), "--backends", backend, "--rows-only"]
            sys.stdout.flush()
            subprocess.run(cmd, check=True)
        return
    for backend in backends:
        for size in a.sizes.split(","):
            batch, n = map(int, size.split("x"))
            rng = np.random.default_rng(0)
            scores = rng.normal(size=(batch, n)).astype(np.float32)
            labels = rng.integers(0, n, size=batch)
            blocks = {m: step for m, step in _blocks(backend, scores, labels).items() if step is not None}
            steps = {"CE": bench_losses.BACKENDS[backend](scores, labels)(None, {}), **blocks}
            times = {m: [] for m in steps}
            for step in steps.values():
                step()  # warm-up (and jit compilation)
            for _ in range(a.repeat):
                for m, step in steps.items():
                    t0 = time.perf_counter()
                    step()
                    times[m].append(time.perf_counter() - t0)
            ce = statistics.median(times["CE"])
            ratios = [f"{statistics.median(times[m]) / ce:.2f}x" if m in times else "-" for m in names]
            if a.markdown:
                print(f"| {backend} | {size.replace('x', ' x ')} | {ce * 1e3:.3f} | " + " | ".join(ratios) + " |", flush=True)
            else:
                print(f"{backend:8} {size:>10} {ce * 1e3:8.3f} " + " ".join(f"{r:>11}" for r in ratios), flush=True)


if __name__ == "__main__":
    main()

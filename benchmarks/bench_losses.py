"""Forward + backward time of each topkloss loss against the same backend's cross-entropy.

Run: ``python benchmarks/bench_losses.py`` (or ``make bench``). Options: ``--backends``,
``--sizes`` (BATCHxN, comma separated), ``--losses``, ``--repeat``, ``--markdown``.

Every loss and the cross-entropy baseline of the same backend are timed in the same run,
interleaved, on the same inputs; the table reports the median time of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

import topkloss

# name -> (function, keyword arguments). Add a loss here to benchmark it on every backend.
LOSSES = {
    "smooth_topk_svm": (topkloss.smooth_topk_svm, dict(k=5, tau=1.0, alpha=1.0)),
    "smooth_topk_svm_k10": (topkloss.smooth_topk_svm, dict(k=10, tau=1.0, alpha=1.0)),
    "smooth_topk_svm_k20": (topkloss.smooth_topk_svm, dict(k=20, tau=1.0, alpha=1.0)),
    "topk_svm": (topkloss.topk_svm, dict(k=5, alpha=1.0)),
    "topk_hinge": (topkloss.topk_hinge, dict(k=5, margin=1.0)),
    "noised_topk_hinge_5": (topkloss.noised_topk_hinge, dict(k=5, epsilon=1.0, n_samples=5, seed=0)),
    "noised_topk_hinge_10": (topkloss.noised_topk_hinge, dict(k=5, epsilon=1.0, n_samples=10, seed=0)),
    "topk_transition": (topkloss.topk_transition, dict(k=5, weight="adaptive")),
}

DEFAULT_SIZES = "256x100,256x1000,256x10000,64x100000"


# --- backends: each turns (fn, params) into a callable doing forward + backward ------------------
def _numpy_setup(scores, labels):
    def ce(s, y):
        m = s.max(axis=1, keepdims=True)
        e = np.exp(s - m)
        z = e.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(z[:, 0]) + m[:, 0] - s[np.arange(len(y)), y])
        g = e / z
        g[np.arange(len(y)), y] -= 1.0
        return loss, g / len(y)

    def wrap(fn, params):
        if fn is None:
            return lambda: ce(scores, labels)
        vg = topkloss.value_and_grad(fn)
        return lambda: vg(scores, labels, **params)

    return wrap


def _torch_setup(scores, labels):
    import torch

    s = torch.asarray(scores).requires_grad_(True)
    y = torch.asarray(labels)

    def wrap(fn, params):
        f = (lambda a, b: torch.nn.functional.cross_entropy(a, b)) if fn is None else (lambda a, b: fn(a, b, **params))

        def step():
            s.grad = None
            f(s, y).backward()
            return s.grad

        return step

    return wrap


def _jax_setup(scores, labels):
    import jax
    import jax.numpy as jnp

    s, y = jnp.asarray(scores), jnp.asarray(labels)

    def ce(a, b):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(a), b[:, None], axis=1))

    def wrap(fn, params):
        f = ce if fn is None else (lambda a, b: fn(a, b, **params))
        vg = jax.jit(jax.value_and_grad(f))
        return lambda: jax.block_until_ready(vg(s, y))

    return wrap


BACKENDS = {"numpy": _numpy_setup, "torch": _torch_setup, "jax": _jax_setup}


def _time_once(step):
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def run(backends, sizes, losses, repeat, dtype="float32"):
    rows = []
    for backend in backends:
        for batch, n in sizes:
            rng = np.random.default_rng(0)
            scores = rng.normal(size=(batch, n)).astype(dtype)
            labels = rng.integers(0, n, size=batch)
            try:
                wrap = BACKENDS[backend](scores, labels)
            except ImportError as exc:
                print(f"# skipping {backend}: {exc}", file=sys.stderr)
                break
            steps = {"cross_entropy": wrap(None, {})}
            steps.update({name: wrap(*LOSSES[name]) for name in losses})
            for step in steps.values():
                step()  # warm-up (and jit compilation)
            times = {name: [] for name in steps}
            for _ in range(repeat):  # interleaved, so drifts in machine load hit all alike
                for name, step in steps.items():
                    times[name].append(_time_once(step))
            ce = statistics.median(times["cross_entropy"])
            for name in losses:
                t = statistics.median(times[name])
                rows.append((backend, batch, n, name, t * 1e3, ce * 1e3, t / ce))
    return rows


def peak_memory(sizes, losses):
    """Peak memory of forward + backward on NumPy (``tracemalloc`` sees NumPy's allocations),
    as a ratio to NumPy cross-entropy's: the algorithm's memory, independent of any framework's
    allocator. Rows: (batch, n, loss, MiB, CE MiB, ratio)."""
    import tracemalloc

    rows = []
    for batch, n in sizes:
        rng = np.random.default_rng(0)
        scores = rng.normal(size=(batch, n)).astype("float32")
        labels = rng.integers(0, n, size=batch)
        wrap = _numpy_setup(scores, labels)

        def peak(step):
            step()  # warm-up outside the measurement
            tracemalloc.start()
            step()
            result = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            return result / 2**20

        ce = peak(wrap(None, {}))
        for name in losses:
            mib = peak(wrap(*LOSSES[name]))
            rows.append((batch, n, name, mib, ce, mib / ce))
    return rows


def format_memory(rows, markdown=False):
    head = ("batch", "n", "loss", "peak MiB", "CE peak MiB", "ratio to CE")
    body = [(str(b), str(n), name, f"{m:.1f}", f"{c:.1f}", f"{r:.1f}x") for b, n, name, m, c, r in rows]
    return _table(head, body, markdown)


def _table(head, body, markdown):
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join("{:>%d}" % w for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*r) for r in body])


def format_table(rows, markdown=False):
    head = ("backend", "batch", "n", "loss", "ms (fwd+bwd)", "CE ms", "ratio to CE")
    body = [(b, str(bs), str(n), name, f"{t:.2f}", f"{c:.2f}", f"{r:.1f}x") for b, bs, n, name, t, c, r in rows]
    return _table(head, body, markdown)


def machine():
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,jax,numpy")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="BATCHxN,... (default %(default)s)")
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--memory", action="store_true", help="also print peak memory (NumPy, tracemalloc) per loss")
    p.add_argument("--memory-only", action="store_true", help="print only the peak-memory table")
    a = p.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    if a.memory_only:
        caption = f"{machine()}; peak memory of forward + backward, NumPy float32 (tracemalloc), ratio to NumPy cross-entropy"
        print(f"*{caption}*\n" if a.markdown else f"# {caption}")
        print(format_memory(peak_memory(sizes, a.losses.split(",")), markdown=a.markdown))
        return
    rows = run(a.backends.split(","), sizes, a.losses.split(","), a.repeat)
    print(f"# {machine()}; float32, forward + backward, median of {a.repeat}")
    print(format_table(rows, markdown=a.markdown))
    if a.memory:
        print(f"\n# peak memory of forward + backward, NumPy float32 (tracemalloc), ratio to NumPy cross-entropy")
        print(format_memory(peak_memory(sizes, a.losses.split(",")), markdown=a.markdown))


if __name__ == "__main__":
    main()

"""Forward + backward time of each topkloss loss against the same backend's cross-entropy.

Run: ``python benchmarks/bench_losses.py`` (or ``make bench``). Options: ``--backends``
(torch, jax, numpy, cupy), ``--device`` (cpu or cuda: where torch and JAX arrays live; CuPy is
always on the GPU), ``--sizes`` (BATCHxN, comma separated), ``--losses``, ``--repeat``,
``--markdown``, ``--memory``.

Every loss and the cross-entropy baseline of the same backend are timed in the same run,
interleaved in a new random order each round (so that no step always follows the same one, or
runs first), on the same inputs; the table reports the median time of each and their ratio.
Each backend runs in a process of its own (the script starts itself once per backend), as in
a program that uses one framework: in one process the frameworks timed earlier slowed NumPy
down (NumPy's ``topk_transition`` at 256 x 1000 read 5.6x its cross-entropy after torch and JAX,
3.2-3.4x alone). ``--one-process`` times them all in this process, as before.

The script runs with glibc's allocator pinned (:data:`PINNED_MALLOC`; it starts itself again
with those variables set): by default, arrays above glibc's mmap threshold are fresh pages on
every call, and on a virtual machine the page faults cost as much as the arithmetic and vary
from run to run (``benchmarks/page_faults.py`` measures both settings). ``--system-malloc``
keeps the process's own settings.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
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

PINNED_MALLOC = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "2000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}
"""glibc's allocator for timings: one arena (XLA allocates from its worker threads, whose own
arenas map large blocks afresh), no mmap below 2 GB, no trimming below 4 GB: freed memory is
reused, not returned to the system and faulted in again on the next call. Other C libraries
ignore these variables."""


def pin_malloc(keep_system=False):
    """Start this script again with :data:`PINNED_MALLOC` in the environment, unless it is there
    already or ``keep_system``; returns the header line that says which allocator settings ran."""
    if keep_system:
        return "allocator: the process's own settings"
    if any(os.environ.get(key) != value for key, value in PINNED_MALLOC.items()):
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **PINNED_MALLOC})
    return "allocator: glibc malloc pinned (" + ", ".join(f"{k}={v}" for k, v in PINNED_MALLOC.items()) + ")"


# --- backends: each turns (fn, params) into a callable doing forward + backward ------------------
def _numpy_setup(scores, labels, device="cpu", xp=np, sync=lambda: None):
    scores, labels = xp.asarray(scores), xp.asarray(labels)
    rows = xp.arange(len(labels))

    def ce(s, y):
        m = s.max(axis=1, keepdims=True)
        e = xp.exp(s - m)
        z = e.sum(axis=1, keepdims=True)
        loss = xp.mean(xp.log(z[:, 0]) + m[:, 0] - s[rows, y])
        g = e / z
        g[rows, y] -= 1.0
        return loss, g / len(y)

    def wrap(fn, params):
        vg = (lambda s, y: ce(s, y)) if fn is None else functools.partial(topkloss.value_and_grad(fn), **params)

        def step():
            out = vg(scores, labels)
            sync()
            return out

        return step

    return wrap


def _cupy_setup(scores, labels, device="cuda"):
    import cupy

    return _numpy_setup(scores, labels, xp=cupy, sync=cupy.cuda.get_current_stream().synchronize)


def _torch_setup(scores, labels, device="cpu", compile=False, compile_mode=None):
    import torch

    s = torch.asarray(scores, device=device).requires_grad_(True)
    y = torch.asarray(labels, device=device)
    sync = torch.cuda.synchronize if s.is_cuda else (lambda: None)

    def wrap(fn, params):
        f = (lambda a, b: torch.nn.functional.cross_entropy(a, b)) if fn is None else (lambda a, b: fn(a, b, **params))
        if compile:  # the loss and the baseline alike, forward and backward (fresh graphs per size)
            f = torch.compile(f, dynamic=False, mode=compile_mode)

        def step():
            s.grad = None
            f(s, y).backward()
            sync()
            return s.grad

        return step

    return wrap


def _jax_setup(scores, labels, device="cpu"):
    import jax
    import jax.numpy as jnp

    dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
    s, y = jax.device_put(jnp.asarray(scores), dev), jax.device_put(jnp.asarray(labels), dev)

    def ce(a, b):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(a), b[:, None], axis=1))

    def wrap(fn, params):
        f = ce if fn is None else (lambda a, b: fn(a, b, **params))
        vg = jax.jit(jax.value_and_grad(f))
        return lambda: jax.block_until_ready(vg(s, y))

    return wrap


BACKENDS = {"numpy": _numpy_setup, "torch": _torch_setup, "jax": _jax_setup, "cupy": _cupy_setup}


def _time_once(step):
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def run(backends, sizes, losses, repeat, dtype="float32", device="cpu", compile=False, compile_mode=None):
    rows = []
    for backend in backends:
        for batch, n in sizes:
            rng = np.random.default_rng(0)
            scores = rng.normal(size=(batch, n)).astype(dtype)
            labels = rng.integers(0, n, size=batch)
            try:
                extra = {"compile": True, "compile_mode": compile_mode} if compile else {}
                wrap = BACKENDS[backend](scores, labels, device=device, **extra)
            except (ImportError, RuntimeError) as exc:  # not installed, or no such device
                print(f"# skipping {backend}: {exc}", file=sys.stderr)
                break
            steps = {"cross_entropy": wrap(None, {})}
            steps.update({name: wrap(*LOSSES[name]) for name in losses})
            for step in steps.values():
                step()  # warm-up (and jit compilation)
            times = {name: [] for name in steps}
            names, order = list(steps), np.random.default_rng(1)
            for _ in range(repeat):  # interleaved, so drifts in machine load hit all alike
                for j in order.permutation(len(names)):  # shuffled: a step's cost can depend on the one before
                    times[names[j]].append(_time_once(steps[names[j]]))
            ce = statistics.median(times["cross_entropy"])
            for name in losses:
                t = statistics.median(times[name])
                rows.append((backend, batch, n, name, t * 1e3, ce * 1e3, t / ce))
            done = ", ".join(f"{r[3]} {r[6]:.1f}x" for r in rows[-len(losses) :])
            print(f"# {backend} {batch}x{n}: CE {ce * 1e3:.3f} ms; {done}", file=sys.stderr, flush=True)
    return rows


def run_isolated(backends, argv):
    """:func:`run`'s rows, each backend timed by this script in a fresh process (``argv``: this
    call's arguments; the child gets ``--backends`` one of them and prints its rows as JSON)."""
    rows = []
    for backend in backends:
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--backends", backend, "--rows-json"]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows += [tuple(r) for r in json.loads(out)]
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


def cuda_peak_memory(sizes, losses):
    """Peak memory of forward + backward of torch on the GPU, above what the inputs hold
    (``torch.cuda.max_memory_allocated``), as a ratio to torch cross-entropy's. Same rows as
    :func:`peak_memory`."""
    import torch

    rows = []
    for batch, n in sizes:
        rng = np.random.default_rng(0)
        scores = rng.normal(size=(batch, n)).astype("float32")
        labels = rng.integers(0, n, size=batch)
        wrap = _torch_setup(scores, labels, device="cuda")

        def peak(step):
            step()  # warm-up outside the measurement
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            return (torch.cuda.max_memory_allocated() - base) / 2**20

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


def machine(device="cpu"):
    host = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    if device != "cpu":
        import torch

        host = f"{torch.cuda.get_device_name()} (torch {torch.__version__}); host {host}"
    return host


def _without_backends(args):
    """``args`` less ``--backends X`` / ``--backends=X`` and ``--memory`` (the parent prints memory)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--backends":
            skip = True
        elif not arg.startswith("--backends=") and arg != "--memory":
            out.append(arg)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,jax,numpy")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="BATCHxN,... (default %(default)s)")
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where torch and JAX arrays live")
    p.add_argument("--compile", action="store_true", help="torch only: time torch.compile'd losses and cross-entropy")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="with --compile: torch.compile's mode (e.g. reduce-overhead: CUDA graphs on a GPU)",
    )
    p.add_argument("--markdown", action="store_true")
    p.add_argument(
        "--memory",
        action="store_true",
        help="also print peak memory per loss (NumPy with tracemalloc; with --device cuda, torch on the GPU)",
    )
    p.add_argument("--memory-only", action="store_true", help="print only the peak-memory table")
    p.add_argument("--system-malloc", action="store_true", help="do not pin glibc's allocator (see PINNED_MALLOC)")
    p.add_argument("--one-process", action="store_true", help="time every backend in this process (default: one each)")
    p.add_argument("--rows-json", action="store_true", help=argparse.SUPPRESS)  # run_isolated's child
    raw = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    # pinned when run as a script (memory is counted by tracemalloc: the allocator does not matter)
    allocator = pin_malloc(a.system_malloc or a.memory_only or argv is not None)
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    if a.memory_only:
        caption = f"{machine()}; peak memory of forward + backward, NumPy float32 (tracemalloc), ratio to NumPy cross-entropy"
        print(f"*{caption}*\n" if a.markdown else f"# {caption}")
        print(format_memory(peak_memory(sizes, a.losses.split(",")), markdown=a.markdown))
        return
    backends = a.backends.split(",")
    if len(backends) > 1 and not a.one_process:
        rows = run_isolated(backends, _without_backends(raw))
    else:
        rows = run(
            backends, sizes, a.losses.split(","), a.repeat, device=a.device, compile=a.compile,
            compile_mode=a.compile_mode,
        )
    if a.rows_json:
        print(json.dumps(rows))
        return
    compiled = (f", torch.compile (mode {a.compile_mode})" if a.compile_mode else ", torch.compile") if a.compile else ""
    print(f"# {machine(a.device)}; float32, forward + backward{compiled}, median of {a.repeat}")
    print(f"# {allocator}")
    print(format_table(rows, markdown=a.markdown))
    if a.memory and a.device == "cuda":
        print("\n# peak GPU memory of forward + backward above the inputs, torch float32, ratio to torch cross-entropy")
        print(format_memory(cuda_peak_memory(sizes, a.losses.split(",")), markdown=a.markdown))
    elif a.memory:
        print("\n# peak memory of forward + backward, NumPy float32 (tracemalloc), ratio to NumPy cross-entropy")
        print(format_memory(peak_memory(sizes, a.losses.split(",")), markdown=a.markdown))


if __name__ == "__main__":
    main()

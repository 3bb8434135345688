"""Time and minor page faults per call, forward + backward, with glibc's allocator as a process
starts and pinned as ``bench_losses.py`` pins it (``bench_losses.PINNED_MALLOC``).

By default glibc maps arrays above its mmap threshold afresh and returns them on free (and
XLA's worker threads allocate from arenas of their own), so each call faults its large arrays
in again, page by page: on a virtual machine that is a large and variable share of the time,
of cross-entropy's as well as of a loss's. This script runs itself once per setting (a child
process each, since glibc reads the variables at start-up) and prints one table.

Usage: ``python benchmarks/page_faults.py [--backends torch,jax,numpy] [--sizes 256x10000]
[--losses smooth_topk_svm,topk_transition]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_losses


def measure(backends, sizes, losses, repeat):
    """{(backend, size, name): (median ms, minor faults per call)}, cross-entropy included."""
    out = {}
    for backend in backends:
        for size in sizes:
            batch, n = map(int, size.split("x"))
            rng = np.random.default_rng(0)
            scores = rng.normal(size=(batch, n)).astype(np.float32)
            labels = rng.integers(0, n, size=batch)
            wrap = bench_losses.BACKENDS[backend](scores, labels)
            steps = {"cross_entropy": wrap(None, {}), **{m: wrap(*bench_losses.LOSSES[m]) for m in losses}}
            for step in steps.values():
                step()  # warm-up (and jit compilation)
            times, faults = {m: [] for m in steps}, {m: 0 for m in steps}
            for _ in range(repeat):  # interleaved, as in bench_losses.py
                for m, step in steps.items():
                    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
                    step()
                    times[m].append(time.perf_counter() - t0)
                    faults[m] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            for m in steps:
                out[f"{backend} {size} {m}"] = (statistics.median(times[m]) * 1e3, faults[m] / repeat)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,jax,numpy")
    p.add_argument("--sizes", default="256x10000,64x100000")
    p.add_argument("--losses", default="smooth_topk_svm,topk_transition")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.backends.split(","), a.sizes.split(","), a.losses.split(","), a.repeat)))
        return
    system = {k: v for k, v in os.environ.items() if k not in bench_losses.PINNED_MALLOC}
    runs = {}
    for name, env in (("system", system), ("pinned", {**system, **bench_losses.PINNED_MALLOC})):
        cmd = [sys.executable, __file__, "--child", *(argv if argv is not None else sys.argv[1:])]
        runs[name] = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    print(f"# {bench_losses.machine()}; float32, forward + backward, median of {a.repeat}; minor page faults per call")
    print("# system: glibc as the process starts; pinned: " + ", ".join(f"{k}={v}" for k, v in bench_losses.PINNED_MALLOC.items()))
    print(f"{'backend':8} {'size':>10} {'':18} {'system ms':>10} {'faults':>8} {'pinned ms':>10} {'faults':>8}")
    for key, (ms, faults) in runs["system"].items():
        backend, size, m = key.split()
        pms, pfaults = runs["pinned"][key]
        print(f"{backend:8} {size:>10} {m:18} {ms:10.2f} {faults:8.0f} {pms:10.2f} {pfaults:8.0f}")


if __name__ == "__main__":
    main()

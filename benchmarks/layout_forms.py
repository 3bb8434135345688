"""The smooth top-k SVM's trees nodes last against nodes first, timed in one run.

``esf.nodes_last_applies`` builds the trees with the nodes on the last axis (the rows as they
come, no transposed copy) under XLA and on eager torch on a CPU (``esf.NODES_LAST_EAGER``), for
rows of at least ``smooth_svm.NODES_LAST_MIN`` classes. This script times forward + backward
with each layout forced, interleaved in one process, per size, and prints the ratio nodes last /
nodes first (below 1: nodes last is faster). Usage::

    python benchmarks/layout_forms.py --backend torch --sizes 256x1000,256x10000,64x100000
    python benchmarks/layout_forms.py --backend numpy

Only list-only trees can be built nodes last (k <= 6 on eager backends); the script checks
that the plan takes each forced layout, and stops where it cannot.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_losses

import topkloss
import topkloss.adapters
from topkloss.core import esf, smooth_svm


NAMES = {"torch": ("array_api_compat.torch",), "numpy": ("numpy", "array_api_compat.numpy")}
"""The namespace names of each backend's arrays (NumPy's come through array-api-compat)."""


def _forced(backend, last):
    """Force the layout: nodes last at every width for ``backend``'s namespace, or nowhere."""
    esf.NODES_LAST_EAGER = NAMES[backend] if last else ()
    smooth_svm.NODES_LAST_MIN = 0 if last else 1 << 62


def planned_layout(backend, scores, k):
    """Whether the smooth SVM's plan builds the trees nodes last for ``scores`` as ``backend``'s
    array: the check that forcing took effect."""
    x = scores
    if backend == "torch":
        import torch

        x = torch.asarray(scores)
    return smooth_svm._plan(topkloss.adapters.namespace(x), x, k)[3]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="torch", choices=("torch", "numpy"))
    p.add_argument("--sizes", default="256x1000,256x10000,64x100000")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args(argv)
    allocator = bench_losses.pin_malloc(argv is not None)
    print(f"# {bench_losses.machine()}; {a.backend}, float32, k = {a.k}, forward + backward, median of {a.repeat}; {allocator}")
    print(f"{'size':>10} {'nodes last ms':>14} {'nodes first ms':>15} {'last/first':>11}")
    for size in a.sizes.split(","):
        batch, n = map(int, size.split("x"))
        rng = np.random.default_rng(0)
        scores = rng.normal(size=(batch, n)).astype(np.float32)
        labels = rng.integers(0, n, size=batch)
        step = bench_losses.BACKENDS[a.backend](scores, labels)(topkloss.smooth_topk_svm, dict(k=a.k))
        for last in (True, False):  # each column times the layout it names, or the script stops
            _forced(a.backend, last)
            if planned_layout(a.backend, scores, a.k) != last:
                sys.exit(f"{size}, k = {a.k}: the trees cannot be built nodes {'last' if last else 'first'} here")
        times = {True: [], False: []}
        for r in range(a.repeat + 1):
            for last in (True, False):
                _forced(a.backend, last)
                t0 = time.perf_counter()
                step()
                if r:  # the first round warms up
                    times[last].append(time.perf_counter() - t0)
        t_last, t_first = statistics.median(times[True]), statistics.median(times[False])
        print(f"{size:>10} {t_last * 1e3:14.2f} {t_first * 1e3:15.2f} {t_last / t_first:11.2f}", flush=True)


if __name__ == "__main__":
    main()

"""The smooth top-k SVM's polynomials by prefix sums against the tree, timed in one run.

``smooth_svm.scan_applies`` picks, from shapes alone, prefix sums (``esf.scan_prefix``: two
operations per degree, in float64) or the product tree (``esf.tree_levels``); both are exact.
This script times forward + backward with each form forced, interleaved, per (k, n) at batch
256, and prints the ratio prefix sums / tree (below 1: prefix sums are faster) and which form
the policy picks. Usage::

    python benchmarks/scan_forms.py --backend torch --ks 5,10,20 --ns 100,400,850,1000,1500,2500
    python benchmarks/scan_forms.py --backend numpy --ks 5,20 --ns 100,1000
    python benchmarks/scan_forms.py --backend torch --device cuda   # or --backend cupy (a GPU)

With ``--device cuda`` (torch) it also prints each form's peak GPU memory above the inputs.

Forcing prefix sums bypasses the policy, so the form can be timed where the policy never takes
it (CuPy, torch on a GPU); each step waits for the device (``bench_losses``' setups).
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="torch", choices=("numpy", "torch", "cupy"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where torch arrays live")
    p.add_argument("--ks", default="5,10,20")
    p.add_argument("--ns", default="100,400,850,1000,1500,2500")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--system-malloc", action="store_true", help="do not pin glibc's allocator")
    a = p.parse_args(argv)
    allocator = bench_losses.pin_malloc(a.system_malloc)
    import topkloss
    from topkloss.core import smooth_svm

    real = smooth_svm.scan_applies
    forced = {"scan": lambda xp, s, k, mode: mode != "log", "tree": lambda xp, s, k, mode: False}
    print(f"# {a.backend} ({bench_losses.machine(a.device)}), batch {a.batch}, float32, forward + backward, median of {a.repeat}, interleaved; {allocator}")
    cuda = a.backend == "torch" and a.device == "cuda"
    extra = "   prefix sums MiB   tree MiB" if cuda else ""
    print(f"    k        n   prefix sums ms     tree ms    ratio   policy{extra}")
    for k in (int(v) for v in a.ks.split(",")):
        for n in (int(v) for v in a.ns.split(",")):
            rng = np.random.default_rng(0)
            s, y = rng.normal(size=(a.batch, n)).astype(np.float32), rng.integers(0, n, a.batch)
            step = bench_losses.BACKENDS[a.backend](s, y, device=a.device)(topkloss.smooth_topk_svm, {"k": k})
            if a.backend == "torch":  # an array of the timed kind, for the policy's answer
                import torch

                s = torch.asarray(s, device=a.device)
            elif a.backend == "cupy":
                import cupy

                s = cupy.asarray(s)
            times = {name: [] for name in forced}
            for rep in range(a.repeat + 3):  # three warm-up rounds
                for name, rule in forced.items():
                    smooth_svm.scan_applies = rule
                    t0 = time.perf_counter()
                    step()
                    if rep >= 3:
                        times[name].append(time.perf_counter() - t0)
            smooth_svm.scan_applies = real
            xp = __import__("array_api_compat").array_namespace(s)
            mode = smooth_svm._plan(xp, s, k)[0]
            picked = "prefix sums" if real(xp, s, k, mode) else "tree"
            scan_ms, tree_ms = (statistics.median(times[name]) * 1e3 for name in forced)
            line = f"{k:5d} {n:8d} {scan_ms:16.2f} {tree_ms:11.2f} {scan_ms / tree_ms:8.2f}   {picked:11s}"
            if cuda:  # peak GPU memory of one forward + backward above what was allocated before
                peaks = []
                for rule in forced.values():
                    smooth_svm.scan_applies = rule
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    step()
                    peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
                smooth_svm.scan_applies = real
                line += f" {peaks[0]:17.1f} {peaks[1]:10.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()

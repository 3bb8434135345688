"""``torch.topk`` of rows as they are against rows padded with ``-inf`` to ``64 k`` entries, on a CPU.

ATen's CPU top-k selects each row with ``std::partial_sort`` (a heap of k) when ``64 k <= n`` and
with ``std::nth_element`` otherwise, and on random data the second branches unpredictably:
at k = 5, 256 x 100 can take longer than 256 x 1000. Padding a row with ``-inf`` to ``64 k``
entries moves it to the heap (``ops.torch_pads_top_k`` decides where, ``ops.top_k`` pads).
This prints both forms' median time per size and k, each call on the next of 16 fresh arrays
(one array timed over and over trains the branch predictor), the two forms in a new random
order each round.

Usage: ``python benchmarks/torch_top_k.py [--sizes 256x100,256x300] [--ks 5,10] [--repeat 31]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256x20,256x50,256x100,256x200,256x300,256x600,256x1000,64x100,64x300")
    p.add_argument("--ks", default="1,2,3,5,6,10,20")
    p.add_argument("--repeat", type=int, default=31)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)

    from topkloss.core import ops

    def pad(x, k):
        return torch.nn.functional.pad(x, (0, 64 * k - x.shape[-1]), value=-torch.inf)

    print(f"# torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; float32, median of {a.repeat} ms")
    print(f"{'batch x n':>12} {'k':>3} {'padded':>7} {'as is ms':>9} {'padded ms':>10} {'ratio':>7}")
    order = np.random.default_rng(1)
    for size in a.sizes.split(","):
        batch, n = map(int, size.split("x"))
        xs = [torch.from_numpy(np.random.default_rng(s).standard_normal((batch, n)).astype(np.float32)) for s in range(16)]
        for k in map(int, a.ks.split(",")):
            if k > n or 64 * k <= n:  # padding applies below 64 k only
                continue
            forms = (lambda x, k=k: torch.topk(x, k), lambda x, k=k: torch.topk(pad(x, k), k))
            runs = ([], [])
            for f in forms:
                f(xs[0])
            for i in range(a.repeat):
                for j in order.permutation(2):
                    t0 = time.perf_counter()
                    forms[j](xs[i % len(xs)])
                    runs[j].append(time.perf_counter() - t0)
            plain, padded = (statistics.median(r) * 1e3 for r in runs)
            planned = ops.torch_pads_top_k(batch, n, k, torch.get_num_threads())
            print(f"{size:>12} {k:3d} {str(planned):>7} {plain:9.3f} {padded:10.3f} {padded / plain:6.2f}x", flush=True)


if __name__ == "__main__":
    main()

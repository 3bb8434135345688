"""``torch.topk`` of rows as they are against rows padded with ``-inf`` to ``64 k`` entries, on a CPU.

ATen's CPU top-k selects each row with ``std::partial_sort`` (a heap of k) when ``64 k <= n`` and
with ``std::nth_element`` otherwise, and on random data the second branches unpredictably:
at k = 5, 256 x 100 can take longer than 256 x 1000. Padding a row with ``-inf`` to ``64 k``
entries moves it to the heap (``ops.torch_pads_top_k`` decides where, ``ops.top_k`` pads).
This prints both forms' median time per size and k, each call on the next of 16 fresh arrays
(one array timed over and over trains the branch predictor), the two forms in a new random
order each round.

With ``--groups 8,16,32`` it times long rows instead: ``torch.topk`` against ``ops.top_k``
selecting among the candidates of group maxima (``ops._grouped_candidates``) with each group
size forced, and as planned (``ops.TORCH_TOP_K_GROUP`` where ``ops._torch_grouped``; ``-``
where the plan keeps ``torch.topk``), each as the ratio to ``torch.topk``'s time, all in a new random order each round.

Usage: ``python benchmarks/torch_top_k.py [--sizes 256x100,256x300] [--ks 5,10] [--repeat 31]``,
``python benchmarks/torch_top_k.py --groups 8,16,32 --sizes 256x10000,64x100000 --ks 5,20``.
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
    p.add_argument("--groups", default="", help="time long rows with these group sizes forced (and the plan)")
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.groups:
        return _groups(a, [int(g) for g in a.groups.split(",")])

    from topkloss.core import ops

    heap = ops.TORCH_HEAP_TOP_K

    def pad(x, k):
        return torch.nn.functional.pad(x, (0, heap * k - x.shape[-1]), value=-torch.inf)

    print(f"# torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; float32, median of {a.repeat} ms")
    print(f"{'batch x n':>12} {'k':>3} {'padded':>7} {'as is ms':>9} {'padded ms':>10} {'ratio':>7}")
    order = np.random.default_rng(1)
    for size in a.sizes.split(","):
        batch, n = map(int, size.split("x"))
        xs = [torch.from_numpy(np.random.default_rng(s).standard_normal((batch, n)).astype(np.float32)) for s in range(16)]
        for k in map(int, a.ks.split(",")):
            if k > n or heap * k <= n:  # padding applies below TORCH_HEAP_TOP_K k only
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
            print(f"{size:>12} {k:3d} {planned!s:>7} {plain:9.3f} {padded:10.3f} {padded / plain:6.2f}x", flush=True)


def _groups(a, groups):
    import array_api_compat.torch as xp
    import torch

    from topkloss.core import ops

    def forced(group):
        def f(x, k):  # group None: the plan; else this group size wherever the rows are long enough
            return ops.top_k(xp, x, k) if group is None else ops._torch_grouped_top_k(xp, x, k, group)

        return f

    print(f"# torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; float32, median of {a.repeat}; ms of torch.topk, then time / torch.topk's")
    names = ["torch.topk", *(f"group {g}" for g in groups), "plan"]
    print(f"{'batch x n':>12} {'k':>3} {'plan':>5} " + " ".join(f"{name:>10}" for name in names))
    order = np.random.default_rng(1)
    for size in a.sizes.split(","):
        batch, n = map(int, size.split("x"))
        xs = [torch.from_numpy(np.random.default_rng(s).standard_normal((batch, n)).astype(np.float32)) for s in range(8)]
        for k in map(int, a.ks.split(",")):
            forms = [lambda x, k: torch.topk(x, k), *(forced(g) for g in groups if n // g > 4 * k), forced(None)]
            runs = [[] for _ in forms]
            for f in forms:
                f(xs[0], k)
            for i in range(a.repeat):
                for j in order.permutation(len(forms)):
                    t0 = time.perf_counter()
                    forms[j](xs[i % len(xs)], k)
                    runs[j].append(time.perf_counter() - t0)
            times = [statistics.median(r) * 1e3 for r in runs]
            cells = [f"{times[0]:10.3f}"]
            it = iter(times[1:-1])
            cells += [f"{next(it) / times[0]:9.2f}x" if n // g > 4 * k else f"{'':>10}" for g in groups]
            cells.append(f"{times[-1] / times[0]:9.2f}x")
            plan = ops.TORCH_TOP_K_GROUP if ops._torch_grouped(xp, xs[0], k) else "-"
            print(f"{size:>12} {k:3d} {plan!s:>5} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()

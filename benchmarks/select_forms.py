"""The selection forms of NumPy-like backends: ``partition`` from either end, ``argpartition``
and a full ``sort``, per size (NumPy on the CPU; CuPy on a GPU with ``--backend cupy``).

``ops._partition_top`` takes the top of ``partition(x, n - k)`` on NumPy and
``-partition(-x, k - 1)`` on CuPy, whose partition has a selection kernel only for a small
``kth`` and sorts whole rows otherwise; ``argpartition`` on CuPy is a full argsort, so there
``ops.top_k`` (values and indices, last column) ranks the entries of ``topk_mask`` instead.
On NumPy, rows of at least ``ops.NUMPY_GROUPED_MIN`` entries select among the candidates of
group maxima (``ops._grouped_candidates``): the ``ops.top_k_values`` (values only) and
``ops.top_k`` columns. Each call gets the next of four arrays: selections branch on the data,
and one array timed over and over runs faster than fresh data.

With ``--groups 16,32,64`` it then times NumPy's ``ops.top_k`` with each group size forced
(``ops.top_k_group``), its group maxima taken both ways (``loop``: elementwise maxima of
slices; ``reshape``: one reduction over a reshaped view, ``ops.GROUP_MAXIMA_RESHAPE_MIN``),
every form in turn (in a new random order each round), as the ratio to the planned form's time.

Usage: ``python benchmarks/select_forms.py [--backend cupy] [--sizes 640x100000] [--k 6] [--groups 16,32]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    p.add_argument("--sizes", default="256x100,256x500,256x1000,256x10000,640x100000")
    p.add_argument("--k", type=int, default=6, help="how many of the largest (the hinge's k + 1)")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--groups", default="", help="NumPy: also time ops.top_k with these group sizes forced")
    a = p.parse_args(argv)
    if a.backend == "cupy":
        import cupy as xp

        sync = xp.cuda.runtime.deviceSynchronize
        where = f"cupy {xp.__version__}, {xp.cuda.runtime.getDeviceProperties(0)['name'].decode()}"
    else:
        xp, sync, where = np, (lambda: None), f"numpy {np.__version__}, CPU"

    def median_ms(f, xs):
        f(xs[0])
        sync()
        runs = []
        for i in range(a.repeat):  # a different array each call: selections branch on the data
            t0 = time.perf_counter()
            f(xs[i % len(xs)])
            sync()
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs) * 1e3

    from topkloss.adapters import namespace
    from topkloss.core import ops

    k = a.k
    forms = {
        "partition(x, n-k)": lambda x: xp.partition(x, x.shape[-1] - k, axis=-1),
        "-partition(-x, k-1)": lambda x: -xp.partition(-x, k - 1, axis=-1),
        "argpartition(x, n-k)": lambda x: xp.argpartition(x, x.shape[-1] - k, axis=-1),
        "sort": lambda x: xp.sort(x, axis=-1),
        "ops.top_k_values": lambda x: ops.top_k_values(namespace(x), x, k, ordered=False),
        "ops.top_k": lambda x: ops.top_k(namespace(x), x, k),  # values and indices
    }
    x0 = xp.asarray(np.random.default_rng(1).normal(size=(256, 10000)).astype(np.float32))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:  # a GPU's clocks ramp up under load: time none of that
        for f in forms.values():
            f(x0)
        sync()
    print(f"# {where}; float32, k = {k}, median of {a.repeat}, ms (after 1 s of warm-up)")
    print(f"{'rows x n':>12} " + " ".join(f"{name:>21}" for name in forms))
    for size in a.sizes.split(","):
        rows, n = (int(v) for v in size.split("x"))
        xs = [xp.asarray(np.random.default_rng(s).normal(size=(rows, n)).astype(np.float32)) for s in range(4)]
        print(f"{size:>12} " + " ".join(f"{median_ms(f, xs):>21.3f}" for f in forms.values()), flush=True)
    if a.groups and a.backend == "numpy":
        _group_forms(a, [int(g) for g in a.groups.split(",")])


def _group_forms(a, groups):
    """NumPy's ``ops.top_k`` with each group size and maxima form forced, interleaved call by
    call (in a new random order each round), as ratios to the planned form (``ops.top_k_group``, ``ops.GROUP_MAXIMA_RESHAPE_MIN``)."""
    import array_api_compat.numpy as cnp

    from topkloss.core import ops

    planned_group, planned_min = ops.top_k_group, ops.GROUP_MAXIMA_RESHAPE_MIN
    forms = {"planned": (planned_group, planned_min)}
    for g in groups:
        forms[f"loop {g}"] = (lambda n, k, g=g: g, float("inf"))
        forms[f"reshape {g}"] = (lambda n, k, g=g: g, 0)
    print(f"\n# ops.top_k (values and indices), k = {a.k}: median time of each forced form / the planned form's, forms interleaved")
    print(f"{'rows x n':>12} {'planned ms':>10} {'group':>5} " + " ".join(f"{name:>11}" for name in list(forms)[1:]))
    try:
        for size in a.sizes.split(","):
            rows, n = (int(v) for v in size.split("x"))
            xs = [np.random.default_rng(s).normal(size=(rows, n)).astype(np.float32) for s in range(4)]
            if not ops._grouped_applies(cnp, xs[0], a.k):
                continue
            times = {name: [] for name in forms}
            names, order = list(forms), np.random.default_rng(0)
            for i in range(a.repeat + 1):
                for j in order.permutation(len(names)):  # shuffled: no form always first, or after the same one
                    name = names[j]
                    group, reshape_min = forms[name]
                    ops.top_k_group, ops.GROUP_MAXIMA_RESHAPE_MIN = group, reshape_min
                    t0 = time.perf_counter()
                    ops.top_k(cnp, xs[i % len(xs)], a.k)
                    if i:  # the first round warms up
                        times[name].append(time.perf_counter() - t0)
            base = statistics.median(times["planned"])
            ratios = " ".join(f"{statistics.median(times[name]) / base:>11.2f}" for name in list(forms)[1:])
            print(f"{size:>12} {base * 1e3:>10.3f} {planned_group(n, a.k):>5} {ratios}", flush=True)
    finally:
        ops.top_k_group, ops.GROUP_MAXIMA_RESHAPE_MIN = planned_group, planned_min


if __name__ == "__main__":
    main()

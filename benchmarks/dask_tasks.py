"""How many tasks the Dask graph of each loss's gradient holds, per number of classes.

A Dask graph costs scheduling time per task, so a gradient whose graph grows with the number of
classes (as ``smooth_topk_svm``'s did while its trees' halves kept their chunks) is slow long
before it runs out of memory. This prints, for scores of ``--batch`` rows in ``--chunks`` row
chunks and each number of classes, the tasks of ``topkloss.value_and_grad(loss)``'s gradient
(built, not computed) and the gradient's number of chunks along the classes. Usage::

    python benchmarks/dask_tasks.py --ns 64,1024 --k 5
"""

from __future__ import annotations

import argparse

import numpy as np

LOSSES = ("smooth_topk_svm", "topk_svm", "topk_hinge", "topk_transition")


def tasks(loss, batch, n, chunks, k):
    """``(tasks in the gradient's graph, chunks of the gradient along the classes)``."""
    import dask.array as da

    import topkloss

    rng = np.random.default_rng(0)
    s, y = rng.standard_normal((batch, n)), rng.integers(0, n, batch)
    rows = batch // chunks
    _, grad = topkloss.value_and_grad(getattr(topkloss, loss))(da.from_array(s, chunks=(rows, n)), da.from_array(y, chunks=rows), k=k)
    return len(dict(grad.__dask_graph__())), len(grad.chunks[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", default="64,1024")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--chunks", type=int, default=2, help="row chunks")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--losses", default=",".join(LOSSES))
    a = p.parse_args(argv)
    ns = [int(n) for n in a.ns.split(",")]
    print(f"# batch {a.batch} in {a.chunks} row chunks, k = {a.k}; per n: tasks of the gradient's graph (its chunks along the classes)")
    print(f"{'loss':18}" + "".join(f"{f'n = {n}':>18}" for n in ns))
    for loss in a.losses.split(","):
        cells = [tasks(loss, a.batch, n, a.chunks, a.k) for n in ns]
        print(f"{loss:18}" + "".join(f"{f'{t} ({c})':>18}" for t, c in cells))


if __name__ == "__main__":
    main()

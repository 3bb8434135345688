"""The forward product tree of ``smooth_topk_svm`` under ``jax.jit`` on a CPU, with and without
``ops.fusion_barrier`` between its levels.

XLA's CPU fusion copies cheap elementwise producers into every consumer; without a boundary a
level's products recompute the levels below them many times. Prints the median time of
``esf.tree_levels`` + ``esf.tree_root`` (linear space, float32 leaves in [0, 1]) per size.

Usage: ``python benchmarks/jax_fusion.py [--sizes 256x100,256x10000] [--k 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256x100,256x1000,256x10000,64x100000")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from topkloss.core import esf

    barrier = esf.fusion_barrier
    print(f"# jax {jax.__version__}, {jax.default_backend()}; k = {a.k}; forward tree, median of {a.repeat}")
    print(f"{'batch x n':>12} {'with ms':>9} {'without ms':>11} {'without/with':>13}")
    for size in a.sizes.split(","):
        batch, n = map(int, size.split("x"))
        leaves = jnp.asarray(np.random.default_rng(0).uniform(size=(n, batch)).astype(np.float32))
        times = {}
        for name, fn in (("with", barrier), ("without", lambda xp, level: level)):
            esf.fusion_barrier = fn
            f = jax.jit(lambda x: esf.tree_root(jnp, esf.tree_levels(jnp, x, a.k, "linear"), a.k, x, "linear"))
            jax.block_until_ready(f(leaves))
            runs = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                jax.block_until_ready(f(leaves))
                runs.append(time.perf_counter() - t0)
            times[name] = statistics.median(runs) * 1e3
        esf.fusion_barrier = barrier
        print(f"{size:>12} {times['with']:9.2f} {times['without']:11.2f} {times['without'] / times['with']:12.1f}x", flush=True)


if __name__ == "__main__":
    main()

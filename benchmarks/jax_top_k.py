"""``lax.top_k`` against ``ops.top_k`` (the blocked form for long rows) under ``jax.jit`` on a CPU.

Both give the same values and indices (``tests/test_ops.py`` checks it); this prints the median
time of each per size and k, and whether the blocked form is used there.

Usage: ``python benchmarks/jax_top_k.py [--sizes 256x1000,256x10000] [--ks 5,20]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256x100,256x1000,256x3000,256x10000,64x100000")
    p.add_argument("--ks", default="5,20")
    p.add_argument("--repeat", type=int, default=15)
    a = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from topkloss.core import ops

    def median_ms(f, x):
        jax.block_until_ready(f(x))
        runs = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            jax.block_until_ready(f(x))
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs) * 1e3

    print(f"# jax {jax.__version__}, {jax.default_backend()}; float32, median of {a.repeat}")
    print(f"{'batch x n':>12} {'k':>3} {'blocked':>8} {'lax.top_k ms':>13} {'ops.top_k ms':>13} {'ratio':>7}")
    for size in a.sizes.split(","):
        batch, n = map(int, size.split("x"))
        x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, n)).astype(np.float32))
        for k in map(int, a.ks.split(",")):
            blocked = ops.blocked_top_k_applies(n, k)
            base = median_ms(jax.jit(lambda x, k=k: jax.lax.top_k(x, k)), x)
            ours = median_ms(jax.jit(lambda x, k=k: ops.top_k(jnp, x, k)), x)
            print(f"{size:>12} {k:3d} {str(blocked):>8} {base:13.3f} {ours:13.3f} {ours / base:6.2f}x", flush=True)


if __name__ == "__main__":
    main()

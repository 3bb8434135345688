"""Seconds that ``jax.jit`` takes to trace, compile and run once ``value_and_grad`` of
``smooth_topk_svm`` (float32 scores; ``jax_enable_x64`` on, so that k = 10 and 20 at large n take
the float64 linear path). Usage: ``python benchmarks/jax_compile_time.py [--batch 4] [--n 100000] [--k 5,20]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--k", default="5,20")
    a = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import topkloss

    rng = np.random.default_rng(0)
    s = jnp.asarray(rng.normal(size=(a.batch, a.n)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, a.n, a.batch))
    print(f"# jax {jax.__version__} on {jax.devices()[0].platform}; batch {a.batch}, n {a.n}")
    print("k  first call (trace + compile + run), s")
    for k in (int(v) for v in a.k.split(",")):
        f = jax.jit(jax.value_and_grad(lambda x, k=k: topkloss.smooth_topk_svm(x, y, k=k)))
        t0 = time.perf_counter()
        jax.block_until_ready(f(s))
        print(f"{k:<2} {time.perf_counter() - t0:.1f}")


if __name__ == "__main__":
    main()

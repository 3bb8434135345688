"""The smooth top-k SVM's tree levels in each form, timed against each other in one run.

``esf.level_forms`` picks, per level, a list of coefficient arrays or one stacked array (both
exact); this script times forward + backward with the planned choice, with every level a list
and with every level stacked, interleaved, on one backend (for JAX: under ``jit``, also the
first call, which includes compilation). Usage::

    python benchmarks/level_forms.py --backend jax --sizes 256x100,256x1000 --k 5
    python benchmarks/level_forms.py --backend jax --x64 --sizes 64x100000 --k 20 --repeat 3
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


def _forms(real, stacked):
    def forms(m, k, rest=1, mode="linear", accelerator=False, xla=False):
        return [stacked and mode == "linear" for _ in real(m, k, rest, mode, accelerator, xla)]

    return forms


def _step(backend, s, y, k):
    import topkloss

    if backend == "jax":
        import jax

        f = jax.jit(jax.value_and_grad(lambda a: topkloss.smooth_topk_svm(a, y, k=k)))
        return lambda: jax.block_until_ready(f(s))
    if backend == "torch":
        def step():
            s.grad = None
            topkloss.smooth_topk_svm(s, y, k=k).backward()

        return step
    vg = topkloss.value_and_grad(topkloss.smooth_topk_svm)
    return lambda: vg(s, y, k=k)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="jax", choices=("numpy", "torch", "jax"))
    p.add_argument("--sizes", default="256x100,256x1000,256x10000")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--x64", action="store_true", help="JAX: enable float64 (k = 10, 20 at large n then take the float64 linear path)")
    p.add_argument("--system-malloc", action="store_true", help="do not pin glibc's allocator")
    a = p.parse_args(argv)
    # the forms in turn: without the pinned allocator the stacked form's transients are given back
    # and the next form faults its arrays in again (NumPy k = 5 read 1.88 ms planned against
    # 1.58 ms all lists, the same forms there; pinned, 1.55 and 1.50 ms)
    allocator = bench_losses.pin_malloc(a.system_malloc)
    if a.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    from topkloss.core import esf

    real = esf.level_forms
    print(f"# {a.backend}, k = {a.k}, float32, forward + backward, median of {a.repeat} (first call in s); {allocator}")
    print("batch x n     planned         lists           stacked")
    for size in a.sizes.split(","):
        b, n = (int(v) for v in size.split("x"))
        rng = np.random.default_rng(0)
        s, y = rng.normal(size=(b, n)).astype(np.float32), rng.integers(0, n, b)
        if a.backend == "jax":
            import jax.numpy as jnp

            s, y = jnp.asarray(s), jnp.asarray(y)
        elif a.backend == "torch":
            import torch

            s, y = torch.asarray(s).requires_grad_(True), torch.asarray(y)
        steps, first = {}, {}
        for name, forms in (("planned", real), ("lists", _forms(real, False)), ("stacked", _forms(real, True))):
            esf.level_forms = forms  # read when the step is traced or run
            steps[name] = _step(a.backend, s, y, a.k)
            t0 = time.perf_counter()
            steps[name]()
            first[name] = time.perf_counter() - t0
        times = {name: [] for name in steps}
        for _ in range(a.repeat):
            for name, step in steps.items():
                esf.level_forms = real if name == "planned" else _forms(real, name == "stacked")
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
        esf.level_forms = real
        cells = [f"{statistics.median(times[m]) * 1e3:7.2f} ms ({first[m]:4.1f})" for m in steps]
        print(f"{size:<12}  " + "  ".join(cells))


if __name__ == "__main__":
    main()

"""A/B: forward + backward time of losses at a git revision against the working tree.

Runs ``bench_losses.py`` (this tree's copy) alternately with the package of each side on
``PYTHONPATH``, ``--rounds`` times (the two sides in a new random order each round), and prints
the median time of each side, their ratio, and the ratio of the medians of each run's time over
that run's own cross-entropy (``per CE``). A whole process can run fast or slow: NumPy's
``topk_transition`` at 256 x 100 took 0.28-0.29 ms in some processes and 0.40-0.46 ms in others
of the same code, with cross-entropy 0.08 and 0.10-0.11 ms alongside, and with the sides always
in one order, an A/B of identical code read 0.70x. Within a process the loss and the
baseline move together, so ``per CE`` is the column to read; the raw ratio shows how far the
processes moved. Usage::

    python benchmarks/ab.py HEAD~1 --backends jax --losses topk_transition
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _times(src, args):
    """{(backend, batch, n, loss): (ms, cross-entropy ms)} from one run of bench_losses.py with
    ``src`` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_losses.py"), *args]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[1].isdigit():
            backend, batch, n, loss, ms, ce = parts[:6]
            rows[backend, int(batch), int(n), loss] = (float(ms), float(ce))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="the git revision to compare the working tree with")
    p.add_argument("--backends", default="torch,jax,numpy")
    p.add_argument("--sizes", default="256x100,256x1000,256x10000,64x100000")
    p.add_argument("--losses", default="topk_transition")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5, help="timed calls per loss in each run")
    p.add_argument("--seed", type=int, default=0, help="of the sides' order in each round")
    a = p.parse_args(argv)
    bench = ["--backends", a.backends, "--sizes", a.sizes, "--losses", a.losses, "--repeat", str(a.repeat)]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.rev, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        sides = {a.rev: Path(tmp) / "src", "tree": ROOT / "src"}
        times = defaultdict(lambda: defaultdict(list))
        order = random.Random(a.seed)
        for r in range(a.rounds):
            for name in order.sample(list(sides), 2):
                for key, (ms, ce) in _times(sides[name], bench).items():
                    times[key][name].append(ms)
                    times[key][name + " per CE"].append(ms / ce)
            print(f"# round {r + 1} of {a.rounds} done", file=sys.stderr, flush=True)
    print(f"# median over {a.rounds} runs of each side (in random order), each the median of {a.repeat} calls; float32, forward + backward")
    print(f"{'backend':8} {'size':>10} {'loss':24} {a.rev + ' ms':>12} {'tree ms':>10} {'tree/' + a.rev:>10} {'per CE':>7}")
    for (backend, batch, n, loss), by in sorted(times.items()):
        old, new = statistics.median(by[a.rev]), statistics.median(by["tree"])
        per_ce = statistics.median(by["tree per CE"]) / statistics.median(by[a.rev + " per CE"])
        print(f"{backend:8} {f'{batch}x{n}':>10} {loss:24} {old:12.3f} {new:10.3f} {new / old:10.2f} {per_ce:7.2f}")


if __name__ == "__main__":
    main()

"""``topkloss demo``: robustness of top-k losses to label noise, on a synthetic data set of similar classes.

The same small MLP is trained with cross-entropy, ``smooth_topk_svm``, ``noised_topk_hinge`` and
``topk_transition`` (k = 5) under the same hyper-parameter budget, for every noise level and
seed; the clean-test top-1 and top-5 accuracies are printed as a table and written to
``OUT/results.csv``, ``OUT/results.json`` and ``OUT/top5_vs_noise.png``. See docs/demo.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from .data import Blocks, load_npz, make_blocks
from .experiment import LOSS_PARAMS, LOSSES, Budget, budget_dict, run_one, topk_loss

DEFAULTS = {"noise": (0.0, 0.2, 0.4, 0.6), "losses": LOSSES, "seeds": 3, "epochs": Budget().epochs}
QUICK = {"noise": (0.0, 0.6), "losses": LOSSES, "seeds": 1, "epochs": 10}
BACKEND_NEEDS = {"torch": ("torch",), "jax": ("jax", "optax")}


def _noise_list(text):
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1], e.g. 0,0.2,0.4; got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"noise levels must be numbers in [0, 1]; got {text!r}")
    return tuple(sorted(set(values)))


def _loss_list(text):
    names = [v for v in text.replace(",", " ").split()]
    unknown = [v for v in names if v not in LOSSES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown loss {', '.join(unknown) or repr(text)}; choose from {', '.join(LOSSES)}")
    return tuple(dict.fromkeys(names))


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _npz_path(text):
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def add_arguments(parser):
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (under a minute): noise 0,0.6, 1 seed, 10 epochs (explicit options win)")
    parser.add_argument("--out", type=Path, default=Path("demo-out"), metavar="DIR",
                        help="where results.csv, results.json and top5_vs_noise.png go (default: demo-out)")
    parser.add_argument("--noise", type=_noise_list, metavar="P,P,...",
                        help="label-noise levels in [0, 1] (default: 0,0.2,0.4,0.6)")
    parser.add_argument("--losses", type=_loss_list, metavar="NAME,...",
                        help=f"losses to train with (default: all of {','.join(LOSSES)})")
    parser.add_argument("--seeds", type=_positive_int, metavar="N",
                        help="number of seeds 0..N-1; each seed draws data, noise, init, batches (default: 3)")
    parser.add_argument("--epochs", type=_positive_int, metavar="N",
                        help=f"training epochs, the same for every loss (default: {DEFAULTS['epochs']})")
    parser.add_argument("--dataset", type=_npz_path, metavar="PATH.npz",
                        help="your own features: arrays X (n, d) and y (n,); optional X_test, y_test, "
                             "blocks (block id per class). Default: the built-in synthetic data set")
    parser.add_argument("--backend", choices=("torch", "jax"), default="torch",
                        help="train the MLP in PyTorch (default) or in JAX with optax")
    parser.set_defaults(demo_parser=parser)


def _options(args):
    """The run's settings: explicit options, else --quick's, else the defaults."""
    base = QUICK if args.quick else DEFAULTS
    return {name: getattr(args, name) or base[name] for name in DEFAULTS}


def _missing_modules(backend):
    needed = (*BACKEND_NEEDS[backend], "tqdm", "matplotlib")
    return [m for m in needed if importlib.util.find_spec(m) is None]


def run(args):
    opts = _checked_options(args)
    from . import report

    if args.backend == "jax":
        from . import train_jax as backend
    else:
        from . import train_torch as backend

    budget = replace(Budget(), epochs=opts["epochs"])
    args.out.mkdir(parents=True, exist_ok=True)
    print(_describe(args, opts, budget), flush=True)
    start = time.perf_counter()
    with backend.session():
        runs, data = _train_all(args, opts, budget, backend.Trainer)
    elapsed = time.perf_counter() - start
    rows = report.summarize(runs, opts["losses"], opts["noise"])
    print("\nClean-test accuracy, mean ± std over seeds (top-5 vs CE: paired difference to "
          "cross-entropy trained on the same seed):")
    print(report.format_table(rows))
    paths = {"csv": args.out / "results.csv", "json": args.out / "results.json", "png": args.out / "top5_vs_noise.png"}
    report.write_csv(rows, paths["csv"])
    report.write_json(_document(args, opts, budget, data, runs, rows, elapsed), paths["json"])
    title = f"{data.name} data, {opts['seeds']} seed(s), {budget.epochs} epochs, {args.backend}"
    report.plot(rows, opts["losses"], paths["png"], title)
    print(f"\n{len(runs)} runs in {elapsed:.0f} s. Wrote {paths['csv']}, {paths['json']}, {paths['png']}")
    if args.quick:
        print("(--quick is a smoke run: too short to compare the losses.)")
    return 0


def _checked_options(args):
    """The run's settings, after every check that can fail before training (argparse-style errors)."""
    parser = args.demo_parser
    missing = _missing_modules(args.backend)
    if missing:
        hint = "pip install jax optax tqdm matplotlib" if args.backend == "jax" else "pip install 'topkloss[demo]'"
        parser.error(f"--backend {args.backend} needs {' and '.join(missing)} (not installed); install with: {hint}")
    opts = _options(args)
    try:
        for loss in opts["losses"]:
            if loss != "cross_entropy":
                topk_loss(loss)
        if args.dataset is not None:
            load_npz(args.dataset, seed=0)
    except (RuntimeError, ValueError) as exc:
        parser.error(str(exc))
    return opts


def _train_all(args, opts, budget, trainer):
    """Every (seed, noise, loss) run, behind a progress bar; returns the runs and the last data set."""
    from tqdm import tqdm

    runs = []
    total = opts["seeds"] * len(opts["noise"]) * len(opts["losses"])
    with tqdm(total=total, unit="run", desc=f"training ({args.backend})", dynamic_ncols=True) as bar:
        for seed in range(opts["seeds"]):
            data = _dataset(args, seed).standardized()
            for noise in opts["noise"]:
                for loss in opts["losses"]:
                    bar.set_postfix_str(f"{loss} p={noise:g} seed={seed}")
                    runs.append(run_one(trainer, data, loss, noise, seed, budget))
                    bar.update()
    return runs, data


def _dataset(args, seed):
    if args.dataset is not None:
        return load_npz(args.dataset, seed)
    return make_blocks(seed)


def _describe(args, opts, budget):
    if args.dataset is None:
        p = Blocks()
        data = (f"synthetic data: {p.n_classes} classes in blocks of {p.block_size} similar classes, "
                f"{p.train_per_class} training / {p.test_per_class} clean test samples per class, dim {p.dim}")
    else:
        data = f"data set {args.dataset}"
    n = len(opts["losses"]) * len(opts["noise"]) * opts["seeds"]
    return (f"{data}\n{len(opts['losses'])} losses x {len(opts['noise'])} noise levels x {opts['seeds']} seed(s) "
            f"= {n} runs; MLP (hidden {budget.hidden}), Adam lr {budget.lr:g}, batch {budget.batch_size}, "
            f"{budget.epochs} epochs, backend {args.backend}")


def _document(args, opts, budget, data, runs, rows, elapsed):
    import numpy

    import topkloss

    framework = "torch" if args.backend == "torch" else "jax"
    versions = {"topkloss": topkloss.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
                framework: sys.modules[framework].__version__}
    dataset = {"name": data.name, **data.info} if args.dataset is not None else {"name": "synthetic", **vars(Blocks())}
    return {
        "quick": args.quick,
        "backend": args.backend,
        "dataset": dataset,
        "budget": budget_dict(budget),
        "losses": {name: LOSS_PARAMS[name] for name in opts["losses"]},
        "noise": list(opts["noise"]),
        "seeds": list(range(opts["seeds"])),
        "elapsed_seconds": round(elapsed, 1),
        "versions": versions,
        "summary": rows,
        "runs": runs,
    }

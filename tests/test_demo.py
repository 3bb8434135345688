"""``topkloss demo``: the command runs and writes its outputs, the data generator and noise protocol, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from topkloss.__main__ import main
from topkloss.demo import data as D
from topkloss.demo import report
from topkloss.demo.experiment import LOSSES, Budget, batch_indices, run_one

pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")


def _outputs(out):
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads((out / "results.json").read_text())
    assert (out / "top5_vs_noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return rows, doc


def test_quick_run_writes_table_and_plot(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "tmp"
    proc = subprocess.run(
        [sys.executable, "-m", "topkloss", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top-5 (%)" in proc.stdout and "cross_entropy" in proc.stdout
    rows, doc = _outputs(out)
    assert [(r["noise"], r["loss"]) for r in rows] == [(str(p), loss) for p in (0.0, 0.6) for loss in LOSSES]
    for r in rows:
        assert 0.0 <= float(r["top1_mean"]) <= float(r["top5_mean"]) <= 1.0
        assert float(r["top5_mean"]) > 0.1  # well above chance (0.05): the model learned something
    assert doc["quick"] and doc["backend"] == "torch" and len(doc["runs"]) == 8
    assert doc["summary"][0]["seeds"] == 1
    assert rows[1]["top5_vs_ce_mean"] and float(rows[0]["top5_vs_ce_mean"]) == 0.0


# --- the synthetic data set and the noise protocol ---------------------------------------


def test_blocks_data_set():
    p = D.Blocks()
    d = D.make_blocks(0, p)
    assert d.x_train.shape == (p.n_classes * p.train_per_class, p.dim) and d.x_train.dtype == np.float32
    assert d.x_test.shape == (p.n_classes * p.test_per_class, p.dim)
    assert np.array_equal(np.bincount(d.y_train), np.full(p.n_classes, p.train_per_class))
    assert np.array_equal(np.bincount(d.y_test), np.full(p.n_classes, p.test_per_class))
    assert np.array_equal(d.block_of, np.repeat(np.arange(20), 5))
    # classes of a block are closer to each other than to other classes (class means of the test set)
    means = np.stack([d.x_test[d.y_test == c].mean(0) for c in range(p.n_classes)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    same = d.block_of[:, None] == d.block_of[None]
    off = ~np.eye(p.n_classes, dtype=bool)
    assert dist[same & off].mean() < 0.6 * dist[~same].mean()
    # a seed is a data set: same seed, same arrays; another seed, other arrays
    again, other = D.make_blocks(0, p), D.make_blocks(1, p)
    assert np.array_equal(d.x_train, again.x_train) and np.array_equal(d.y_train, again.y_train)
    assert not np.allclose(d.x_train, other.x_train)
    s = d.standardized()
    np.testing.assert_allclose(s.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s.x_train.std(0), 1, atol=1e-4)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.4, 0.6, 1.0])
def test_label_noise_flips_within_blocks_at_rate_p(p):
    rng = np.random.default_rng(0)
    block_of = np.repeat(np.arange(20), 5)
    n = 50_000
    y = rng.integers(0, 100, n)
    draws = D.noise_draws(3, n)
    noisy = D.add_label_noise(y, p, block_of, draws)
    assert np.array_equal(block_of[noisy], block_of[y])  # only within blocks
    redrawn = draws[0] < p
    assert np.array_equal(noisy[~redrawn], y[~redrawn])
    assert abs(redrawn.mean() - p) < 0.01
    # a re-drawn label is uniform over its block, the true class included (the reference protocol)
    changed = (noisy != y).mean()
    assert abs(changed - 0.8 * p) < 0.01
    if p > 0:
        offset = noisy[redrawn] - 5 * block_of[noisy[redrawn]]
        np.testing.assert_allclose(np.bincount(offset, minlength=5) / redrawn.sum(), 0.2, atol=0.015)


def test_label_noise_nested_across_p_and_any_block_layout():
    block_of = np.array([2, 0, 2, 1, 0, 2, 1, 0])  # non-contiguous blocks of sizes 3, 2, 3
    y = np.tile(np.arange(8), 2000)
    draws = D.noise_draws(0, y.shape[0])
    low, high = (D.add_label_noise(y, p, block_of, draws) for p in (0.2, 0.5))
    assert np.array_equal(block_of[high], block_of[y])
    assert set(np.flatnonzero(low != y)) <= set(np.flatnonzero(high != y))
    for c in range(8):
        assert set(np.unique(high[y == c])) == set(np.flatnonzero(block_of == block_of[c]))


def test_runs_are_reproducible_and_backends_train_the_same_model():
    torch_backend = pytest.importorskip("topkloss.demo.train_torch")
    d = _small_data(seed=0)
    budget = Budget(epochs=3, hidden=32, batch_size=50)
    a, b = (run_one(torch_backend.Trainer, d, "noised_topk_hinge", 0.4, 5, budget) for _ in range(2))
    assert {**a, "train_seconds": 0} == {**b, "train_seconds": 0}
    assert len(list(batch_indices(np.random.default_rng(0), 130, 50, 2))) == 4  # full batches only
    pytest.importorskip("optax")
    jax_backend = pytest.importorskip("topkloss.demo.train_jax")
    t, j = (run_one(m.Trainer, d, "cross_entropy", 0.4, 5, budget) for m in (torch_backend, jax_backend))
    # same data, init, batches and optimizer: the same model up to float32 rounding
    assert abs(t["top5"] - j["top5"]) <= 0.02 and abs(t["top1"] - j["top1"]) <= 0.02


def test_summary_pairs_each_loss_with_cross_entropy_of_the_same_seed():
    runs = [{"loss": loss, "noise": 0.2, "seed": seed, "top1": 0.1 * seed, "top5": 0.5 + 0.1 * seed + gain}
            for seed in (0, 1, 2) for loss, gain in (("cross_entropy", 0.0), ("smooth_topk_svm", 0.04))]
    rows = report.summarize(runs, ["cross_entropy", "smooth_topk_svm"], [0.2])
    ce, svm = rows
    assert ce["seeds"] == 3 and ce["top5_mean"] == pytest.approx(0.6) and ce["top5_std"] == pytest.approx(0.1)
    assert svm["top5_vs_ce_mean"] == pytest.approx(0.04) and svm["top5_vs_ce_std"] == pytest.approx(0, abs=1e-12)
    table = report.format_table(rows)
    assert "| 0.2     | smooth_topk_svm | 10.0 ± 10.0 | 64.0 ± 10.0 | +4.0 ± 0.0" in table
    no_ce = report.summarize([r for r in runs if r["loss"] != "cross_entropy"], ["smooth_topk_svm"], [0.2])
    assert no_ce[0]["top5_vs_ce_mean"] is None and "vs CE" not in report.format_table(no_ce)


# --- --dataset, and errors ------------------------------------------------------------------


def _small_data(seed, n_classes=10, n=400, dim=6):
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((n_classes, dim))
    y = rng.integers(0, n_classes, n)
    x = (centres[y] + rng.standard_normal((n, dim))).astype(np.float32)
    return D.Dataset(x[:300], y[:300], x[300:], y[300:], D.contiguous_blocks(n_classes, 5)).standardized()


@pytest.fixture
def small_npz(tmp_path):
    d = _small_data(seed=1)
    path = tmp_path / "mine.npz"
    np.savez(path, X=np.concatenate([d.x_train, d.x_test]), y=np.concatenate([d.y_train, d.y_test]))
    return path


def test_dataset_option(tmp_path, small_npz, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    argv = ["demo", "--dataset", str(small_npz), "--epochs", "2", "--seeds", "2", "--noise", "0.5,0",
            "--losses", "cross_entropy,smooth_topk_svm", "--out", str(out)]
    assert main(argv) == 0
    rows, doc = _outputs(out)
    assert [(r["noise"], r["loss"], r["seeds"]) for r in rows] == [
        ("0.0", "cross_entropy", "2"), ("0.0", "smooth_topk_svm", "2"),
        ("0.5", "cross_entropy", "2"), ("0.5", "smooth_topk_svm", "2"),
    ]
    assert doc["dataset"]["name"] == "npz" and doc["dataset"]["n_train"] + doc["dataset"]["n_test"] == 400
    assert "Clean-test accuracy" in capsys.readouterr().out


def test_load_npz_with_test_split_and_blocks(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 3)), np.arange(60) % 7
    blocks = np.array([0, 0, 1, 1, 1, 2, 2])
    path = tmp_path / "d.npz"
    np.savez(path, X=x, y=y, X_test=x[:14], y_test=y[:14], blocks=blocks)
    d = D.load_npz(path, seed=0)
    assert d.x_train.shape == (60, 3) and d.x_test.shape == (14, 3) and np.array_equal(d.block_of, blocks)
    np.savez(path, X=x, y=y)
    d = D.load_npz(path, seed=0)  # stratified 25% split, blocks of 5 consecutive classes
    assert d.y_test.shape[0] + d.y_train.shape[0] == 60 and set(d.y_test) == set(range(7))
    assert np.array_equal(d.block_of, [0, 0, 0, 0, 0, 1, 1])


def _bad_npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "make_argv, message",
    [
        (lambda t: ["--noise", "0,1.5"], "noise levels must be numbers in [0, 1]"),
        (lambda t: ["--noise", "low"], "expected comma-separated numbers"),
        (lambda t: ["--losses", "cross_entropy,focal"], "unknown loss focal; choose from cross_entropy"),
        (lambda t: ["--seeds", "0"], "argument --seeds: expected a positive integer"),
        (lambda t: ["--epochs", "ten"], "argument --epochs: expected a positive integer"),
        (lambda t: ["--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
        (lambda t: ["--dataset", str(t / "nope.npz")], "no such file"),
        (lambda t: ["--dataset", _bad_npz(t, X=np.ones((4, 2)))], "missing array(s) ['y']"),
        (lambda t: ["--dataset", _bad_npz(t, X=np.ones((4, 2)), y=np.arange(3))], "X has 4 rows but y has 3 labels"),
        (lambda t: ["--dataset", _bad_npz(t, X=np.ones((40, 2)), y=np.arange(40) % 4)], "at least 6 classes"),
        (lambda t: ["--dataset", _bad_npz(t, X=np.ones((9, 2)), y=np.ones(9))], "y must be a 1-D integer array"),
    ],
)
def test_bad_options_give_clear_errors(tmp_path, capsys, make_argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(tmp_path / "out"), *make_argv(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "topkloss demo: error:" in err and message in err
    assert not (tmp_path / "out").exists()


def test_missing_jax_says_what_to_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optax" else find_spec(name, *a))
    with pytest.raises(SystemExit):
        main(["demo", "--backend", "jax", "--out", str(tmp_path)])
    assert "--backend jax needs optax (not installed); install with: pip install jax optax" in capsys.readouterr().err

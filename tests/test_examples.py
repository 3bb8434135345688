"""The training-loop scripts of examples/ (shown on the docs' Examples page) run and learn."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import topkloss

ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = {
    "torch_training_loop.py": "torch",
    "jax_optax_training_loop.py": "optax",
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_trains(script):
    needs = SCRIPTS[script]
    if importlib.util.find_spec(needs) is None:
        pytest.skip(f"{script} needs {needs}")
    if not hasattr(topkloss, "topk_accuracy"):  # the scripts report it; it comes with issue 4
        pytest.skip("the examples need topkloss.topk_accuracy")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"top-1 accuracy ([\d.]+), top-5 accuracy ([\d.]+)", proc.stdout)
    assert match, proc.stdout
    top1, top5 = map(float, match.groups())
    # 20 classes: chance is 0.05 (top-1) and 0.25 (top-5); the loss targets top-5
    assert top5 > 0.8, proc.stdout
    assert top1 > 0.15, proc.stdout

"""``import topkloss`` imports no framework: detection is lazy (sys.modules), as in array-api-compat."""

from __future__ import annotations

import subprocess
import sys


def test_import_topkloss_imports_no_framework():
    code = (
        "import sys, topkloss, numpy as np\n"
        "topkloss.smooth_topk_svm(np.zeros((2, 4)), np.array([0, 1]), k=2)\n"
        "loaded = [m for m in ('torch', 'jax', 'jaxlib', 'cupy') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import topkloss loaded {out.stdout.strip()}"


def test_core_imports_no_framework():
    """The core is array-API code only: no framework module is named in its source."""
    import pathlib

    import topkloss.core

    for path in pathlib.Path(topkloss.core.__file__).parent.glob("*.py"):
        text = path.read_text()
        for fw in ("import torch", "import jax", "import cupy", "from torch", "from jax", "from cupy", ".item()"):
            assert fw not in text, f"{path.name} contains {fw!r}"

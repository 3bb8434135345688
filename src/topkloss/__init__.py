"""topkloss: top-k classification losses for NumPy, CuPy, PyTorch and JAX arrays.

The same function runs on every array type and returns the same array type, on the same
device. Importing topkloss imports no framework.
"""

from ._config import set_value_checks, value_checks
from .api._common import value_and_grad
from .api.esf import log_esf
from .api.hinge import ldam_margins, noised_topk_hinge, topk_hinge
from .api.metrics import topk_accuracy
from .api.svm import smooth_topk_svm, topk_svm
from .api.transition import topk_transition

__version__ = "0.1.0"

__all__ = [
    "ldam_margins",
    "log_esf",
    "noised_topk_hinge",
    "set_value_checks",
    "smooth_topk_svm",
    "topk_accuracy",
    "topk_hinge",
    "topk_svm",
    "topk_transition",
    "value_and_grad",
    "value_checks",
]

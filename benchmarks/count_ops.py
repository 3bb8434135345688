"""How many PyTorch operations one forward + backward pass of a loss (``smooth_topk_svm`` unless
``--loss``) dispatches, and where in topkloss they come from (the innermost topkloss function
and its caller).

On a GPU each operation is a kernel launch, so in eager mode this count, not n, sets the time.
Usage: ``python benchmarks/count_ops.py [--loss topk_transition | smooth_topk_svm_by_hand] [--batch 256] [--n 100] [--k 5] [--top 15] [--as-gpu]``
(``--as-gpu``: with the forms planned for a CUDA device, counted on the CPU).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loss", default="smooth_topk_svm", help="a loss of topkloss taking k, or smooth_topk_svm_by_hand (floors.py's)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--as-gpu", action="store_true", help="plan the forms as for a CUDA device")
    a = p.parse_args(argv)
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import topkloss
    from topkloss.core import esf, ops, smooth_svm

    if a.as_gpu:  # the forms are planned from on_accelerator (and CUDA for prefix sums): answer yes
        esf.on_accelerator = smooth_svm.on_accelerator = ops.on_accelerator = lambda x: True
        smooth_svm._on_cuda = lambda xp, s: True

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.where = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            frame, names = sys._getframe(1), []
            while frame is not None and len(names) < 2:
                if "topkloss" in frame.f_code.co_filename:
                    names.append(frame.f_code.co_name)
                frame = frame.f_back
            self.where[" < ".join(names) or "(outside topkloss)"] += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    s = torch.randn(a.batch, a.n, requires_grad=True)
    y = torch.randint(0, a.n, (a.batch,))
    if a.loss == "smooth_topk_svm_by_hand":  # floors.py's form by hand (its `svm by hand` column)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import floors

        run = lambda: floors.native_smooth_svm("torch", a.k)(s, y)
    else:
        run = lambda: getattr(topkloss, a.loss)(s, y, k=a.k).backward()
    with Count() as count:
        run()
    planned = "as for a CUDA device" if a.as_gpu else "as for this CPU"
    print(f"# {a.loss}, batch {a.batch}, n {a.n}, k {a.k}, forward + backward, forms planned {planned}")
    print(f"{sum(count.where.values())} operations; by origin:")
    for where, c in count.where.most_common(a.top):
        print(f"{c:6d}  {where}")


if __name__ == "__main__":
    main()

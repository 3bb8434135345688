"""The numbers on the Algorithms page: exactness and float32 stability, measured.

Run from the repository root (``make docs-plots`` runs it too)::

    python docs/scripts/numerics.py

It writes ``docs/_generated/numerics_{switch,gradient,float32}.md``, which the Algorithms page
includes. Three tables:

1. **The reference's switch.** On rows exactly at the reference implementation's threshold
   ``s_[k] - s_[k+1] = k tau ln 1000``, where it returns the hard loss, the difference
   between the true smooth loss (topkloss) and the hard loss.
2. **Gradient by subtraction vs complement products.** ``pi_k(i) = x_i e_{k-1}(x\\i) / e_k(x)``
   in float32, from the alternating-sign recursion ``e_j(x\\i) = e_j(x) - x_i e_{j-1}(x\\i)``
   (NumPy, linear space after shifting each row by its maximum; the recursion the reference
   code starts from), and from topkloss (autograd of ``log_esf`` in float32). Error against
   float64, where ``pi_k`` lies in [0, 1].
3. **float32 against float64** for ``smooth_topk_svm``: the loss's relative error and the
   gradient's error relative to its largest entry, with offsets, spreads and temperatures far
   from the usual, next to the bound of the numerical contract.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import topkloss

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "_generated"


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


# 1. ---------------------------------------------------------------------------------------------
def switch_table():
    rows = []
    tau, alpha = 1.0, 1.0
    for k in (1, 2, 5, 10):
        for n in (10, 100, 1000):
            if k >= n:
                continue
            gap = k * tau * math.log(1000.0)
            scores = np.zeros((2, n))
            scores[:, :k] = gap  # k scores exactly `gap` above the other n - k, which are equal
            labels = np.array([0, n - 1])  # the label among the top k / among the others
            smooth = topkloss.smooth_topk_svm(scores, labels, k=k, tau=tau, alpha=alpha, reduction="none")
            hard = topkloss.topk_svm(scores, labels, k=k, alpha=alpha, reduction="none")
            d = smooth - hard
            rows.append((k, n, f"{smooth[0]:.3f}", f"{hard[0]:.3f}", f"{d[0]:+.3f}",
                         f"{smooth[1]:.3f}", f"{hard[1]:.3f}", f"{d[1]:+.3f}"))
    head = ("k", "n", "label in top k: smooth", "hard", "difference",
            "label below: smooth", "hard", "difference")
    return table(head, rows), max(max(abs(float(r[4])), abs(float(r[7]))) for r in rows)


# 2. ---------------------------------------------------------------------------------------------
def esf_linear(x, k):
    """e_0..e_k of the rows of x (float32 arrays stay float32), by the O(nk) recurrence."""
    e = [np.ones(x.shape[0], dtype=x.dtype)] + [np.zeros(x.shape[0], dtype=x.dtype) for _ in range(k)]
    for i in range(x.shape[1]):
        for j in range(k, 0, -1):
            e[j] = e[j] + x[:, i] * e[j - 1]
    return e


def pi_by_subtraction(z, k):
    """pi_k(i) from e_j(x\\i) = e_j(x) - x_i e_{j-1}(x\\i), in the dtype of z (log-weights)."""
    x = np.exp(z - z.max(axis=1, keepdims=True))
    e = esf_linear(x, k)
    comp = np.ones_like(x)  # e_0(x\i)
    for j in range(1, k):
        comp = e[j][:, None] - x * comp  # e_j(x\i)
    return x * comp / e[k][:, None]


def pi_topkloss(z, k):
    import torch

    t = torch.tensor(z, requires_grad=True)
    topkloss.log_esf(t, k)[..., k].sum().backward()
    return t.grad.numpy()


def gradient_table():
    rows = []
    n, k = 100, 5
    rng = np.random.default_rng(0)
    for spread in (1.0, 5.0, 10.0, 20.0):
        z64 = rng.normal(size=(64, n)) * spread
        z32 = z64.astype(np.float32)
        exact = pi_topkloss(z32.astype(np.float64), k)  # float64, on the float32-rounded inputs
        with np.errstate(all="ignore"):
            sub = pi_by_subtraction(z32, k).astype(np.float64)
        ours = pi_topkloss(z32, k).astype(np.float64)
        err_sub = np.nanmax(np.abs(sub - exact)) if np.isfinite(sub).all() else float("nan")
        bad = int((~np.isfinite(sub)).sum() + (np.abs(np.nan_to_num(sub) - exact) > 0.01).sum())
        rows.append((f"{spread:g}", f"{err_sub:.1e}", bad, f"{np.abs(ours - exact).max():.1e}"))
    head = ("spread of log x (std)", "subtraction: max error", "subtraction: entries off by > 0.01 or not finite",
            "topkloss: max error")
    return table(head, rows), n, k


# 3. ---------------------------------------------------------------------------------------------
def float32_table():
    rows = []
    n, k, batch = 100, 5, 32
    rng = np.random.default_rng(1)
    worst = 0.0
    for offset in (0.0, 1e4, -1e4):
        for spread in (1.0, 1e2, 1e4):
            for tau in (1e-3, 1.0, 1e3):
                s32 = (offset + spread * rng.normal(size=(batch, n))).astype(np.float32)
                y = rng.integers(0, n, size=batch)
                vg = topkloss.value_and_grad(topkloss.smooth_topk_svm)
                v32, g32 = vg(s32, y, k=k, tau=tau, reduction="none")
                v64, g64 = vg(s32.astype(np.float64), y, k=k, tau=tau, reduction="none")
                finite = bool(np.isfinite(v32).all() and np.isfinite(g32).all())
                loss_err = np.max(np.abs(v32 - v64) / np.maximum(np.abs(v64), 0.1))  # the contract: <= 1e-5
                # error relative to the row's largest gradient entry; absolute on rows whose exact
                # gradient is below float32's smallest normal number (it underflows to 0 there)
                gscale = np.abs(g64).max(axis=1)
                tiny = np.finfo(np.float32).tiny
                row_err = np.abs(g32 - g64).max(axis=1) / np.where(gscale > tiny, gscale, 1.0)
                grad_err = row_err.max()
                r = (s32.max(axis=1).astype(np.float64) - s32.min(axis=1)) / (k * tau)
                bound = np.max(1e-5 * (1 + r))
                ratio = np.max(row_err / (1e-5 * (1 + r)))
                worst = max(worst, ratio)
                rows.append((f"{offset:g}", f"{spread:g}", f"{tau:g}", f"{loss_err:.1e}", f"{grad_err:.1e}",
                             f"{bound:.1e}", "yes" if finite else "NO"))
    head = ("offset", "spread (std)", "tau", "loss: relative error", "gradient: error / max entry",
            "contract: 1e-5 (1 + R)", "all finite")
    return table(head, rows), n, k, batch, worst


def main(argv=None):
    import argparse

    global OUT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(OUT), help="output folder (default %(default)s)")
    OUT = Path(p.parse_args(argv).out)
    t1, max_switch = switch_table()
    t2, n2, k2 = gradient_table()
    t3, n3, k3, b3, worst = float32_table()
    texts = {
        "switch": f"**Table 1.** True smooth loss minus the hard loss the reference returns, on rows exactly at its "
        f"switching threshold $s_{{[k]}} - s_{{[k+1]}} = k\\tau\\ln 1000$ ($\\tau = 1$, $\\alpha = 1$; $k$ scores "
        f"at the threshold above the other $n-k$, which are equal). Largest difference: "
        f"**{max_switch:.2f}**.\n\n{t1}\n",
        "gradient": f"**Table 2.** $\\pi_k(i)$ in float32 ($n = {n2}$, $k = {k2}$, 64 rows of normal log-weights per "
        f"spread), against float64 on the same inputs.\n\n{t2}\n",
        "float32": f"**Table 3.** `smooth_topk_svm` in float32 against float64 on the same float32 inputs "
        f"($n = {n3}$, $k = {k3}$, {b3} rows per line; scores = offset + spread × standard normal). "
        f"The loss error is $|L_{{32}} - L_{{64}}| / \\max(|L_{{64}}|, 0.1)$: the contract (1e-5 relative, or 1e-6 "
        f"absolute if larger) asks for at most 1e-5. "
        f"$R$ is the row's range divided by $k\\tau$, and the bound column shows the largest "
        f"$10^{{-5}}(1 + R)$ of the line. The gradient error is relative to the row's largest entry, "
        f"except on rows whose exact gradient underflows float32 (largest entry below 1.2e-38), "
        f"where it is absolute. Worst gradient error as a fraction of its row's bound: "
        f"**{worst:.2f}**.\n\n{t3}\n",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (OUT / f"numerics_{name}.md").write_text("<!-- generated by docs/scripts/numerics.py: do not edit -->\n\n" + text)
    print(f"wrote {OUT}/numerics_*.md")


if __name__ == "__main__":
    main()

"""Plots of each loss and its gradient against the label's score, for the documentation.

Run from the repository root (``make docs-plots``)::

    python docs/scripts/plot_losses.py [--out docs/img]

Every curve is computed by topkloss itself (NumPy, float64), values and gradients through
``topkloss.value_and_grad``. A figure whose functions are not in ``topkloss`` yet is
skipped with a message. One row of ``n = 10`` classes: the nine other scores are fixed,
the label's score ``s_y`` sweeps an interval; the right panel is ``dL/ds_y``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import topkloss

ROOT = Path(__file__).resolve().parents[2]
OTHERS = np.array([3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0])  # the nine other scores
K = 5


def row_batch(sy):
    """A batch with one row per value of the label's score; the label is class 0."""
    scores = np.empty((len(sy), 1 + len(OTHERS)))
    scores[:, 0] = sy
    scores[:, 1:] = OTHERS
    return scores, np.zeros(len(sy), dtype=np.int64)


def curve(fn, sy, **params):
    """Per-row loss and its derivative with respect to the label's score."""
    scores, labels = row_batch(sy)
    value, grad = topkloss.value_and_grad(fn)(scores, labels, reduction="none", **params)
    return np.asarray(value), np.asarray(grad)[:, 0]


def _figure(title, left="loss"):
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_g) = plt.subplots(1, 2, figsize=(9.6, 3.6), dpi=110)
    ax_l.set_title(left, fontsize=10)
    ax_g.set_title(r"gradient $\partial L / \partial s_y$", fontsize=10)
    for ax in (ax_l, ax_g):
        ax.set_xlabel(r"score of the label $s_y$")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig, ax_l, ax_g


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def _draw(axes, sy, fn, label, style="-", **params):
    """One curve of ``fn`` on both panels: the loss, and its derivative in ``s_y``."""
    for ax, values in zip(axes, curve(fn, sy, **params)):
        ax.plot(sy, values, style, label=label)


def _finish(fig, axes, path, mark_kth=True):
    if mark_kth:  # the k-th largest of the other scores
        for ax in axes:
            ax.axvline(_kth(K), color="grey", linewidth=0.8, linestyle=":")
    axes[0].legend(fontsize=8)
    _save(fig, path)


def _kth(k):
    """The k-th largest of the other scores (the hard top-k SVM's threshold)."""
    return np.sort(OTHERS)[::-1][k - 1]


def plot_smooth_topk_svm(out):
    sy = np.linspace(-4.0, 11.0, 601)
    fig, ax_l, ax_g = _figure(
        f"smooth_topk_svm, k = {K}, alpha = 1; other scores {OTHERS.tolist()}"
    )
    axes = (ax_l, ax_g)
    for tau in (2.0, 1.0, 0.5, 0.1):
        _draw(axes, sy, topkloss.smooth_topk_svm, f"tau = {tau:g}", k=K, tau=tau, alpha=1.0)
    _draw(axes, sy, topkloss.topk_svm, "topk_svm (tau -> 0)", "k--", k=K, alpha=1.0)
    _finish(fig, axes, out / "smooth_topk_svm.png")


def plot_topk_hinge(out):
    sy = np.linspace(-3.0, 5.0, 401)
    fig, ax_l, ax_g = _figure(
        f"topk_hinge and noised_topk_hinge, k = {K}, margin = 1; other scores {OTHERS.tolist()}"
    )
    n = 1 + len(OTHERS)
    # the same 2000 draws for every value of s_y (common random numbers): smooth curves
    draws = np.random.default_rng(0).standard_normal((1, 2000, n))
    noise = np.ascontiguousarray(np.broadcast_to(draws, (len(sy), 2000, n)))
    axes = (ax_l, ax_g)
    for eps in (2.0, 1.0, 0.5):
        label = f"epsilon = {eps:g} (2000 draws)"
        _draw(axes, sy, topkloss.noised_topk_hinge, label, k=K, epsilon=eps, n_samples=2000, noise=noise)
    _draw(axes, sy, topkloss.topk_hinge, "topk_hinge (epsilon = 0)", "k--", k=K)
    _finish(fig, axes, out / "topk_hinge.png", mark_kth=False)


def plot_topk_transition(out):
    sy = np.linspace(-3.0, 6.0, 451)
    fig, ax_l, ax_g = _figure(f"topk_transition, k = {K}; other scores {OTHERS.tolist()}")
    axes = (ax_l, ax_g)
    _draw(axes, sy, topkloss.topk_transition, "weight = 0 (cross-entropy)", "k--", k=K, weight=0.0)
    for weight in (0.5, 1.0, "adaptive"):
        _draw(axes, sy, topkloss.topk_transition, f"weight = {weight}", k=K, weight=weight)
    _finish(fig, axes, out / "topk_transition.png")


def plot_surrogates(out):
    """The top-k error of one row and the losses that stand in for it, on one axis."""
    import matplotlib.pyplot as plt

    sy = np.linspace(-3.0, 8.0, 551)
    scores, labels = row_batch(sy)
    fig, ax = plt.subplots(figsize=(7.2, 3.8), dpi=110)
    err = np.array([1.0 - float(topkloss.topk_accuracy(s[None], l[None], k=K)) for s, l in zip(scores, labels)])
    ax.plot(sy, err, "k", linewidth=2, label=f"top-{K} error (1 - topk_accuracy)")
    ax.plot(sy, curve(topkloss.topk_svm, sy, k=K)[0], label=f"topk_svm (k={K})")
    ax.plot(sy, curve(topkloss.smooth_topk_svm, sy, k=K)[0], label=f"smooth_topk_svm (k={K}, tau=1)")
    if hasattr(topkloss, "topk_hinge"):
        ax.plot(sy, curve(topkloss.topk_hinge, sy, k=K)[0], label=f"topk_hinge (k={K})")
    if hasattr(topkloss, "topk_transition"):
        ax.plot(sy, curve(topkloss.topk_transition, sy, k=K)[0], label=f"topk_transition (k={K}, adaptive)")
    ax.axvline(_kth(K), color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel(r"score of the label $s_y$")
    ax.set_ylabel("per-sample value")
    ax.set_title(f"top-{K} error and its surrogate losses; other scores {OTHERS.tolist()}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out / "surrogates.png")


def plot_log_esf(out):
    """log e_j of exp(x) and its gradient pi_j(i) against one entry x_i."""
    others = np.log(np.array([3.0, 2.0, 1.0, 1.0, 0.5]))
    xi = np.linspace(-4.0, 4.0, 401)
    x = np.empty((len(xi), 1 + len(others)))
    x[:, 0] = xi
    x[:, 1:] = others
    k = 4
    fig, ax_l, ax_g = _figure(
        f"log_esf(x, k={k}) with x = (x_i, log {np.exp(others).round(2).tolist()})",
        left=r"value $\log e_j(e^{x})$",
    )
    out_all = np.asarray(topkloss.log_esf(x, k))
    for j in range(1, k + 1):
        g = _log_esf_grad(x, k, j)[:, 0]
        ax_l.plot(xi, out_all[:, j], label=f"log e_{j}")
        ax_g.plot(xi, g, label=rf"$\pi_{j}(i)$")
    ax_l.set_xlabel(r"$x_i$")
    ax_g.set_xlabel(r"$x_i$")
    ax_g.set_title(r"gradient $\partial \log e_j / \partial x_i = \pi_j(i)$", fontsize=10)
    ax_l.legend(fontsize=8)
    ax_g.legend(fontsize=8)
    _save(fig, out / "log_esf.png")


def _log_esf_grad(x, k, j):
    """d out[..., j] / d x by torch autograd through topkloss.log_esf (the public adapter)."""
    import torch

    t = torch.tensor(x, requires_grad=True)
    topkloss.log_esf(t, k)[..., j].sum().backward()
    return t.grad.numpy()


FIGURES = {
    "smooth_topk_svm": (plot_smooth_topk_svm, ["smooth_topk_svm", "topk_svm"]),
    "topk_hinge": (plot_topk_hinge, ["topk_hinge", "noised_topk_hinge"]),
    "topk_transition": (plot_topk_transition, ["topk_transition"]),
    "surrogates": (plot_surrogates, ["topk_accuracy", "topk_svm", "smooth_topk_svm"]),  # + the others that exist
    "log_esf": (plot_log_esf, ["log_esf"]),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "img"), help="output folder (default %(default)s)")
    p.add_argument("--only", default=None, help="comma-separated figure names: " + ",".join(FIGURES))
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = a.only.split(",") if a.only else list(FIGURES)
    skipped = []
    for name in names:
        fn, needs = FIGURES[name]
        missing = [n for n in needs if not hasattr(topkloss, n)]
        if missing:
            skipped.append(name)
            print(f"skipped {name}: topkloss has no {', '.join(missing)} yet", file=sys.stderr)
            continue
        fn(out)
    return skipped


if __name__ == "__main__":
    main()

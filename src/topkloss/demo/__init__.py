"""A first demo: a linear classifier on synthetic data trained with smooth_topk_svm in NumPy.

Gradients come from ``topkloss.value_and_grad`` (NumPy has no autograd).
"""

from __future__ import annotations

import numpy as np

import topkloss


def add_arguments(parser):
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)


def make_data(rng, n_classes=100, dim=32, n_train=5000, n_test=2000):
    centers = rng.normal(size=(n_classes, dim))

    def sample(n):
        y = rng.integers(0, n_classes, size=n)
        return centers[y] + 1.5 * rng.normal(size=(n, dim)), y

    return sample(n_train), sample(n_test)


def run(args):
    rng = np.random.default_rng(args.seed)
    (x, y), (xt, yt) = make_data(rng)
    w = np.zeros((x.shape[1], 100))
    loss_grad = topkloss.value_and_grad(topkloss.smooth_topk_svm)
    for epoch in range(args.epochs):
        for start in range(0, len(x), 256):
            xb, yb = x[start : start + 256], y[start : start + 256]
            loss, g = loss_grad(xb @ w, yb, k=5, tau=1.0)
            w -= 0.5 * xb.T @ g
        if (epoch + 1) % 10 == 0:
            st = xt @ w
            print(
                f"epoch {epoch + 1:3d}  loss {float(loss):.4f}  "
                f"top-1 {float(np.mean(st.argmax(1) == yt)):.3f}  "
                f"top-5 {float(np.mean((np.argsort(-st, 1)[:, :5] == yt[:, None]).any(1))):.3f}"
            )
    return 0

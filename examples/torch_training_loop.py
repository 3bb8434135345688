"""Train a linear classifier with the smooth top-k SVM loss in PyTorch.

A small synthetic problem: 20 classes in 4 groups of 5 similar classes,
16 features, and 30% of the training labels replaced by a random class of
the same group (the kind of ambiguity top-k losses are designed for).
It runs in seconds on a CPU:

    python examples/torch_training_loop.py [--steps 200]
"""

from __future__ import annotations

import argparse

import torch

import topkloss

N_CLASSES, GROUP, N_FEATURES = 20, 5, 16


def make_centres(gen):
    """Class centres: 4 well separated groups of 5 nearby classes."""
    groups = 3.0 * torch.randn(N_CLASSES // GROUP, N_FEATURES, generator=gen)
    offsets = torch.randn(N_CLASSES, N_FEATURES, generator=gen)
    return groups.repeat_interleave(GROUP, dim=0) + offsets


def make_data(centres, n, noise, gen):
    """Features, observed labels and true labels. A fraction ``noise`` of
    the observed labels is replaced by a random class of the same group."""
    labels = torch.randint(0, N_CLASSES, (n,), generator=gen)
    x = centres[labels] + 1.5 * torch.randn(n, N_FEATURES, generator=gen)
    noisy = torch.rand(n, generator=gen) < noise
    other = torch.randint(0, GROUP, (n,), generator=gen)
    same_group = labels // GROUP * GROUP + other
    return x, torch.where(noisy, same_group, labels), labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    gen = torch.Generator().manual_seed(0)
    centres = make_centres(gen)
    x, y_noisy, _ = make_data(centres, 2000, noise=0.3, gen=gen)
    x_test, _, y_test = make_data(centres, 2000, noise=0.0, gen=gen)

    torch.manual_seed(0)
    model = torch.nn.Linear(N_FEATURES, N_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    topkloss.set_value_checks(False)  # labels known to be valid: no check

    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(x), (args.batch_size,), generator=gen)
        scores = model(x[idx])
        loss = topkloss.smooth_topk_svm(scores, y_noisy[idx], k=5, tau=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")

    topkloss.set_value_checks(True)
    with torch.no_grad():
        scores = model(x_test)
    top1 = topkloss.topk_accuracy(scores, y_test, k=1).item()
    top5 = topkloss.topk_accuracy(scores, y_test, k=5).item()
    print(f"test set (clean labels): top-1 accuracy {top1:.3f}, "
          f"top-5 accuracy {top5:.3f}")
    return top1, top5


if __name__ == "__main__":
    main()

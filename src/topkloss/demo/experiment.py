"""What the torch and JAX versions of the demo share: the losses, the budget, the model's init, one run.

A backend (``train_torch`` or ``train_jax``) supplies a ``Trainer``: it holds the MLP, the
optimizer state and the training arrays; ``step(indices)`` takes one Adam step on a mini-batch
and ``scores(x)`` returns test scores in the backend's array type. Everything else (the data, the
noisy labels, the initial weights, the order of the mini-batches, the accuracy) is decided here,
once, so every loss and both backends see the same experiment.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

import topkloss

from .data import BATCHES, INIT, LOSS, add_label_noise, noise_draws, rng_for

LOSSES = ("cross_entropy", "smooth_topk_svm", "noised_topk_hinge", "topk_transition")

# The parameters of each loss: the papers' defaults, k = 5 (the size of a block).
LOSS_PARAMS = {
    "cross_entropy": {},
    "smooth_topk_svm": {"k": 5, "tau": 1.0, "alpha": 1.0},
    "noised_topk_hinge": {"k": 5, "epsilon": 1.0, "n_samples": 5},
    "topk_transition": {"k": 5, "weight": "adaptive"},
}


@dataclass(frozen=True)
class Budget:
    """The hyper-parameter budget, identical for every loss (nothing is tuned per loss).

    A one-hidden-layer ReLU MLP trained with Adam (scale-invariant, so one learning rate suits
    losses whose gradients differ in scale) at a constant learning rate, on mini-batches in the
    same order for every loss; the model of the last epoch is evaluated (the noisy setting has
    no clean validation set to stop early on).
    """

    hidden: int = 256
    epochs: int = 60
    batch_size: int = 100
    lr: float = 1e-3


def topk_loss(name):
    """The topkloss function ``name`` and its parameters, or a clear error if this install lacks it."""
    fn = getattr(topkloss, name, None)
    if fn is None:
        raise RuntimeError(f"topkloss.{name} is not available in this version of topkloss ({topkloss.__version__})")
    return fn, dict(LOSS_PARAMS[name])


def init_mlp(rng, sizes):
    """Weights ``[(W (in, out), b (out,)), ...]`` in float32, drawn like torch's ``nn.Linear``.

    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases; drawn in NumPy so that both
    backends start from the same model.
    """
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)
        b = rng.uniform(-bound, bound, size=fan_out).astype(np.float32)
        params.append((w, b))
    return params


def batch_indices(rng, n, batch_size, epochs):
    """Mini-batch index arrays: each epoch, a fresh permutation of ``range(n)`` cut into full batches.

    Every batch has ``min(batch_size, n)`` samples (one shape: JAX compiles the step once); the
    remainder of a permutation (fewer than ``batch_size`` samples) is left to later epochs.
    """
    batch_size = min(batch_size, n)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def run_one(trainer_cls, data, loss, noise, seed, budget):
    """Train one model (loss, noise level, seed) and return its clean-test accuracies as a dict.

    ``data`` is the standardized data set of ``seed``. The seed fixes the noisy labels, the
    initial weights, the mini-batch order and the noised loss's random draws.
    """
    n = data.y_train.shape[0]
    noisy = add_label_noise(data.y_train, noise, data.block_of, noise_draws(seed, n))
    params = init_mlp(rng_for(seed, INIT), [data.x_train.shape[1], budget.hidden, data.n_classes])
    loss_seed = int(rng_for(seed, LOSS).integers(2**31))
    trainer = trainer_cls(loss, params, budget.lr, loss_seed, data.x_train, noisy)
    start = time.perf_counter()
    for idx in batch_indices(rng_for(seed, BATCHES), n, budget.batch_size, budget.epochs):
        trainer.step(idx)
    scores, labels = trainer.scores(data.x_test), trainer.asarray(data.y_test)
    return {
        "loss": loss,
        "noise": float(noise),
        "seed": int(seed),
        "top1": float(topkloss.topk_accuracy(scores, labels, k=1)),
        "top5": float(topkloss.topk_accuracy(scores, labels, k=5)),
        "changed_labels": float(np.mean(noisy != data.y_train)),
        "train_seconds": round(time.perf_counter() - start, 3),
    }


def budget_dict(budget):
    return {**asdict(budget), "optimizer": "Adam (betas 0.9, 0.999, eps 1e-8), constant learning rate"}

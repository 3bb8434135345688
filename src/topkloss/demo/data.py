"""The demo's data: a synthetic data set of blocks of similar classes, label noise, user ``.npz`` files.

Everything here is NumPy and seeded: the same seed gives the same arrays on every backend.

The synthetic data set (``make_blocks``) is a Gaussian mixture built in two levels, so that
classes come in blocks of similar classes, like the 20 super-classes of 5 classes of CIFAR-100
used by Berrada et al. (ICLR 2018):

- each block ``b`` has a centre ``m_b ~ N(0, block_scale^2 I_dim)``;
- each class ``c`` of block ``b`` has a centre ``mu_c = m_b + N(0, class_scale^2 I_dim)``
  (``class_scale < block_scale``: the classes of a block are closer to each other than to the
  classes of other blocks);
- a sample of class ``c`` is ``x = mu_c + N(0, sample_scale^2 I_dim)``.

Classes are numbered block by block: block ``b`` holds classes ``b*block_size ...
(b+1)*block_size - 1``. The test set is balanced and its labels are clean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Streams of randomness derived from one seed (np.random.default_rng([seed, STREAM])).
DATA, NOISE, SPLIT, INIT, BATCHES, LOSS = range(6)


def rng_for(seed, stream):
    """The NumPy generator of one stream (data, noise, init...) of run seed ``seed``."""
    return np.random.default_rng([seed, stream])


@dataclass(frozen=True)
class Blocks:
    """Parameters of the synthetic data set (the defaults are the demo's; see docs/demo.md)."""

    n_classes: int = 100
    block_size: int = 5
    dim: int = 32
    block_scale: float = 1.0
    class_scale: float = 0.5
    sample_scale: float = 2.0
    train_per_class: int = 10
    test_per_class: int = 50


@dataclass
class Dataset:
    """Train and clean test splits, and the block (group of similar classes) of every class."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    block_of: np.ndarray  # (n_classes,) block id of each class
    name: str = "synthetic"
    info: dict = field(default_factory=dict)

    @property
    def n_classes(self):
        return int(self.block_of.shape[0])

    def standardized(self):
        """Features centred and scaled by the training set's per-feature mean and std."""
        mean = self.x_train.mean(0)
        std = self.x_train.std(0)
        std = np.where(std > 0, std, 1.0)

        def scale(x):
            return ((x - mean) / std).astype(np.float32)

        return Dataset(scale(self.x_train), self.y_train, scale(self.x_test), self.y_test, self.block_of, self.name, self.info)


def contiguous_blocks(n_classes, block_size):
    """Block id of each class when classes are numbered block by block (the last block may be smaller)."""
    return np.arange(n_classes) // block_size


def make_blocks(seed, params=Blocks()):
    """The synthetic data set of ``params`` drawn with ``seed`` (a new instance per seed)."""
    p = params
    if p.n_classes % p.block_size:
        raise ValueError(f"n_classes ({p.n_classes}) must be a multiple of block_size ({p.block_size})")
    rng = rng_for(seed, DATA)
    n_blocks = p.n_classes // p.block_size
    block_centres = p.block_scale * rng.standard_normal((n_blocks, p.dim))
    block_of = contiguous_blocks(p.n_classes, p.block_size)
    class_centres = block_centres[block_of] + p.class_scale * rng.standard_normal((p.n_classes, p.dim))

    def sample(per_class):
        y = np.repeat(np.arange(p.n_classes), per_class)
        x = class_centres[y] + p.sample_scale * rng.standard_normal((y.shape[0], p.dim))
        return x.astype(np.float32), y

    x_train, y_train = sample(p.train_per_class)
    x_test, y_test = sample(p.test_per_class)
    order = rng.permutation(y_train.shape[0])
    return Dataset(x_train[order], y_train[order], x_test, y_test, block_of, "synthetic", {"params": vars(p).copy()})


def noise_draws(seed, n):
    """The uniform numbers and in-block positions that corrupt the labels of run seed ``seed``.

    They do not depend on the noise level, so the labels corrupted at p = 0.2 are a subset of
    those corrupted at p = 0.4 (the comparison across p is paired).
    """
    rng = rng_for(seed, NOISE)
    return rng.random(n), rng.random(n)


def add_label_noise(labels, p, block_of, draws):
    """Labels where each one is, with probability ``p``, replaced by a class of its block drawn uniformly.

    This is the protocol of Berrada et al. (ICLR 2018, the ``LabelNoise`` data set of their
    code): the new class is drawn among all the classes of the block, the true one included,
    so a label actually changes with probability ``p * (b - 1) / b`` for a block of ``b``
    classes. ``draws`` is ``noise_draws(seed, len(labels))``.
    """
    u, position = draws
    labels = np.asarray(labels)
    block_of = np.asarray(block_of)
    size = np.bincount(block_of)  # classes per block
    members = np.zeros((size.shape[0], int(size.max())), dtype=np.int64)  # members[b, :size[b]]
    for b in range(size.shape[0]):
        members[b, : size[b]] = np.flatnonzero(block_of == b)
    block = block_of[labels]
    pick = np.minimum((position * size[block]).astype(np.int64), size[block] - 1)
    replacement = members[block, pick]
    return np.where(u < p, replacement, labels)


def load_npz(path, seed, test_fraction=0.25, block_size=5):
    """A user data set: ``X`` (n, d) features and ``y`` (n,) integer labels in an ``.npz`` file.

    Optional arrays: ``X_test`` and ``y_test`` (a clean test set; otherwise a stratified
    ``test_fraction`` of the samples, drawn with ``seed``) and ``blocks`` (the block id of each
    class, for the label-noise protocol; otherwise classes ``0..4``, ``5..9``, ... form the
    blocks, as in the reference code on CIFAR-100). Raises ValueError with a readable message.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"--dataset {path}: cannot read it as an .npz file ({exc})") from exc
    missing = [name for name in ("X", "y") if name not in arrays]
    if missing:
        raise ValueError(f"--dataset {path}: missing array(s) {missing}; found {sorted(arrays)} (expected X and y)")
    x, y = _features_labels(path, arrays["X"], arrays["y"], "X", "y")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"--dataset {path}: give both X_test and y_test, or neither")
    if "X_test" in arrays:
        x_test, y_test = _features_labels(path, arrays["X_test"], arrays["y_test"], "X_test", "y_test")
        if x_test.shape[1] != x.shape[1]:
            raise ValueError(f"--dataset {path}: X_test has {x_test.shape[1]} features, X has {x.shape[1]}")
    else:
        train, test = stratified_split(y, test_fraction, rng_for(seed, SPLIT))
        x, y, x_test, y_test = x[train], y[train], x[test], y[test]
    n_classes = int(max(y.max(), y_test.max())) + 1
    if n_classes < 6:
        raise ValueError(f"--dataset {path}: the demo's losses use k=5, so it needs at least 6 classes; y has {n_classes}")
    if "blocks" in arrays:
        block_of = np.asarray(arrays["blocks"])
        if block_of.shape != (n_classes,) or not np.issubdtype(block_of.dtype, np.integer) or block_of.min() < 0:
            raise ValueError(
                f"--dataset {path}: blocks must hold one non-negative integer block id per class, "
                f"shape ({n_classes},); got {block_of.dtype} of shape {block_of.shape}"
            )
    else:
        block_of = contiguous_blocks(n_classes, block_size)
    info = {"path": str(path), "n_train": int(y.shape[0]), "n_test": int(y_test.shape[0]), "dim": int(x.shape[1])}
    return Dataset(x, y, x_test, y_test, block_of.astype(np.int64), "npz", info)


def _features_labels(path, x, y, xname, yname):
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"--dataset {path}: {xname} must be a 2-D numeric array (n, d); got {x.dtype} of shape {x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"--dataset {path}: {yname} must be a 1-D integer array (n,); got {y.dtype} of shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"--dataset {path}: {xname} has {x.shape[0]} rows but {yname} has {y.shape[0]} labels")
    if y.shape[0] == 0 or y.min() < 0:
        raise ValueError(f"--dataset {path}: {yname} must hold class indices 0, 1, 2, ... (non-empty, non-negative)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"--dataset {path}: {xname} contains NaN or infinite values")
    return x.astype(np.float32), y.astype(np.int64)


def stratified_split(y, test_fraction, rng):
    """Train and test indices with about ``test_fraction`` of each class in the test set."""
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx))) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), np.sort(np.concatenate(test))

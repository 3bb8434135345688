"""The public losses and metrics, as a table the hardening tests are parametrised over.

Adding a public loss to the library is one line here: its name, the keyword parameters the
tests call it with, and what kind of function it is. An entry whose function is not (yet)
in ``topkloss`` is skipped cleanly. ``test_validation.test_every_public_function_is_in_the_table``
fails if a public function has no entry, so a new loss cannot slip past these tests.

Extra array arguments (the noise of ``noised_topk_hinge``, per-sample weights...) are made by
the entry's ``arrays`` function as float64 NumPy arrays, with a declared layout: whether
axis 0 is the batch (so the tests can shard or vmap it with the scores) and whether the
last axis is the classes (so the permutation test permutes it with the scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import topkloss
from backends import asarray


@dataclass(frozen=True)
class Extra:
    """An array argument besides scores and labels: its layout and how to make it."""

    make: Callable  # (rng, batch, n) -> float64 NumPy array
    batch_axis: bool = True  # axis 0 runs along the batch
    class_axis: bool = False  # the last axis runs along the classes
    value_checked: bool = False  # its values are checked (a range, finiteness): one more read of values per call


@dataclass(frozen=True)
class Entry:
    """One public function of the form ``fn(scores, labels, **params)``."""

    name: str  # the public function
    params: dict  # keyword arguments for tests with n >= 4 classes
    differentiable: bool = True
    smooth: bool = True  # gradient continuous in the scores (not piecewise constant)
    exact_grad: bool = True  # the gradient is the derivative of the value (False: a stop-gradient inside)
    shift_invariant: bool = True
    extras: dict = field(default_factory=dict)  # name -> Extra
    reductions: tuple = ("mean", "sum", "none")
    variant: str = ""  # tells apart two entries of one function (e.g. number vs array parameter)

    @property
    def id(self):
        return f"{self.name}[{self.variant}]" if self.variant else self.name

    @property
    def fn(self):
        fn = getattr(topkloss, self.name, None)
        if fn is None:
            pytest.skip(f"topkloss.{self.name} is not implemented yet")
        return fn

    def __str__(self):
        return self.id

    def arrays(self, rng, batch, n):
        """The extra arguments as float64 NumPy arrays."""
        return {name: e.make(rng, batch, n) for name, e in self.extras.items()}

    def call(self, xp, scores, labels, extras=None, dtype=None, **params):
        """``fn(scores, labels, **extras, **params)`` with NumPy extras moved to ``xp``."""
        kw = dict(self.params)
        kw.update(params)
        for name, a in (extras or {}).items():
            kw[name] = asarray(xp, a, dtype if dtype is not None else scores.dtype)
        return self.fn(scores, labels, **kw)

    def value_and_grad(self, xp, scores, labels, extras=None, **params):
        kw = dict(self.params)
        kw.update(params)
        for name, a in (extras or {}).items():
            kw[name] = asarray(xp, a, scores.dtype)
        return topkloss.value_and_grad(self.fn)(scores, labels, **kw)


def _noise(rng, batch, n, n_samples=3):
    return rng.standard_normal((batch, n_samples, n))


def _per_class(rng, batch, n):
    return rng.uniform(0.5, 1.5, n)


def _per_sample(rng, batch, n):
    return rng.uniform(0.0, 1.0, batch)


LOSSES = (
    Entry("smooth_topk_svm", dict(k=2, tau=1.0, alpha=1.0)),
    Entry("topk_svm", dict(k=2, alpha=1.0), smooth=False),
    Entry("topk_hinge", dict(k=2, margin=1.0, scale=1.0), smooth=False),
    Entry(
        "topk_hinge",
        dict(k=2, scale=2.0),
        smooth=False,
        extras={"margin": Extra(_per_class, batch_axis=False, class_axis=True, value_checked=True)},
        variant="margin-array",
    ),
    Entry(
        "noised_topk_hinge",
        dict(k=2, epsilon=0.5, n_samples=3, margin=1.0),
        smooth=False,
        extras={"noise": Extra(_noise, batch_axis=True, class_axis=True)},
    ),
    Entry("topk_transition", dict(k=2, weight="adaptive"), exact_grad=False),  # no gradient through the weight
    Entry(
        "topk_transition",
        dict(k=2),
        extras={"weight": Extra(_per_sample, batch_axis=True, class_axis=False, value_checked=True)},
        variant="weight-array",
    ),
)
"""Differentiable losses: ``fn(scores, labels, **params, reduction=...)``."""

METRICS = (
    Entry("topk_accuracy", dict(k=2), differentiable=False, smooth=False, reductions=()),
)
"""Non-differentiable functions of (scores, labels)."""

ALL = LOSSES + METRICS

OTHER_PUBLIC = {
    "log_esf": "a primitive of x alone: tested on its own",
    "ldam_margins": "a function of class counts: tested on its own",
    "value_and_grad": "the gradient helper every differentiable entry is tested through",
    "set_value_checks": "the value-check switch: tested in test_validation",
    "value_checks": "the value-check switch: tested in test_validation",
}
"""Public callables that are not of the form ``fn(scores, labels)``, and where they are tested."""


def ids(entries):
    return [e.id for e in entries]


def names(entries):
    return {e.name for e in entries}


def distinct_scores(rng, batch, n, gap=0.37):
    """Scores whose entries differ by at least ``gap`` within a row (no ties: gradients are unique)."""
    base = gap * np.arange(n, dtype=np.float64)
    return np.stack([rng.permutation(base) for _ in range(batch)]) + rng.uniform(-0.01, 0.01, (batch, 1)) - base.mean()

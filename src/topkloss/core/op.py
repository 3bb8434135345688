"""The (forward, backward) pair that every differentiable function of topkloss is made of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


REGISTRY: list = []
"""Every Op ever created, so adapters can prepare for all of them before any trace."""


@dataclass(frozen=True, eq=False)
class Op:
    """A differentiable function of one array ``x``, written against the array API.

    ``forward(xp, x, *args, static=...) -> (out, residuals)``
        ``args`` are arrays that are not differentiated (labels, noise, weights);
        ``static`` is a tuple of Python scalars (k, tau, ...); ``residuals`` is a
        tuple of distinct arrays, none a view of another or of ``x`` (torch.compile
        cannot trace autograd outputs that alias each other).
    ``backward(xp, x, args, residuals, g, static=...) -> dx``
        the vector-Jacobian product: ``g`` has the shape of ``out``, ``dx`` the shape
        of ``x``.

    ``float64_inside``: part of the work runs in float64 where the backend has it
    (:func:`~.ops.float64_available`), also for float32 inputs. The JAX adapter then traces
    ``forward`` and ``backward`` with ``jax_enable_x64`` on (on CPUs and GPUs), whatever the
    user's setting: the inputs and results keep their dtypes.

    Ops are compared by identity, so they can be used as static (hashable)
    arguments of ``jax.custom_vjp`` and as keys of the adapters' caches.
    """

    name: str
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    float64_inside: bool = False

    def __post_init__(self):
        REGISTRY.append(self)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"Op({self.name})"

"""Backend-agnostic maths: array-API code only, no framework imports.

Each differentiable quantity is an :class:`~topkloss.core.op.Op`: a ``forward``
that returns the value and the residuals its ``backward`` needs, and a
``backward`` with the hand-derived gradient. Adapters register these pairs with
each framework's autograd.
"""

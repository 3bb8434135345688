r"""Log-space elementary symmetric polynomials: tree product and complement products.

For leaves :math:`x_1..x_m > 0` (given as ``logx``), :math:`e_j(x)` is the coefficient of
:math:`t^j` in :math:`\prod_i (1 + x_i t)`. We multiply the degree-1 factors pairwise in a
balanced binary tree, truncating every product at degree ``k``: :math:`\lceil\log_2 m\rceil`
vectorised rounds, :math:`O(mk)` work. Every coefficient is a sum of positive terms, computed
as a log-sum-exp, so nothing cancels.

The gradient needs, for every leaf :math:`i`, the polynomial of all *other* leaves,
:math:`\prod_{l \ne i}(1 + x_l t)`, whose coefficients are :math:`e_j(x_{\setminus i})`. Walking
the same tree top-down, the product of everything outside a node is (everything outside
its parent) times (its sibling): two truncated products per parent, no subtraction. Then

.. math::  \pi_j(i) = \frac{x_i\, e_{j-1}(x_{\setminus i})}{e_j(x)}
           = \frac{\partial \log e_j(x)}{\partial \log x_i}.

Representation: a polynomial with constant term 1 (every node of the tree has one) is a
Python list ``[c_1, ..., c_d]`` of arrays of coefficients (or their logs), each of shape
``(nodes, ...)``: coefficient-major, **nodes on the first axis** and the batch on the
last, so every operation is a plain loop over contiguous batch rows. The parent of nodes
``i`` and ``i + nodes/2`` is node ``i`` of the level above: both children of a level are
contiguous blocks.
"""

from __future__ import annotations

from .op import Op
from .ops import NEG_INF, _device, full_like_shape, logsumexp_list

__all__ = ["LOG_ESF", "tree_levels", "tree_top", "complement", "tree_backprop", "log_pi"]


def _halves(level, half):
    """Children of node ``i`` of the next level up are nodes ``i`` and ``i + half``: contiguous
    halves (any pairing is valid, the polynomial is symmetric; contiguous slices are fast)."""
    return [c[:half, ...] for c in level], [c[half:, ...] for c in level]


def poly_mul(xp, a, b, degree, mode="log"):
    """Product of two polynomials with constant term 1, truncated at ``degree``.

    ``mode="log"``: coefficients are logs and sums are log-sum-exps; ``mode="linear"``:
    plain non-negative coefficients. Either way every term is positive: nothing cancels.
    """
    da, db = len(a), len(b)
    out = []
    for j in range(1, min(da + db, degree) + 1):
        terms = []
        if j <= da:
            terms.append(a[j - 1])
        if j <= db:
            terms.append(b[j - 1])
        for i in range(max(1, j - db), min(da, j - 1) + 1):
            terms.append(a[i - 1] + b[j - i - 1] if mode == "log" else a[i - 1] * b[j - i - 1])
        if mode == "log":
            out.append(logsumexp_list(xp, terms))
        else:
            acc = terms[0]
            for t in terms[1:]:
                acc = acc + t
            out.append(acc)
    return out


def pad_leaves(xp, leaves, mode="log"):
    """Leaves ``(m, ...)`` padded with zeros (``-inf`` in log mode) to a power-of-two count."""
    m = leaves.shape[0]
    size = 1 << max(0, (m - 1).bit_length())
    if size == m:
        return leaves
    pad = full_like_shape(xp, (size - m, *leaves.shape[1:]), NEG_INF if mode == "log" else 0.0, leaves)
    return xp.concat([leaves, pad], axis=0)


def tree_levels(xp, leaves, k, mode="log"):
    """All levels of the product tree of ``prod_i (1 + x_i t)``, truncated at ``k``.

    ``leaves`` has shape ``(m, ...)``: ``log x`` (``mode="log"``, ``-inf`` for a leaf
    equal to 0) or ``x >= 0`` (``mode="linear"``). The leaves are padded with zeros to a
    power of two. Returns a list of levels; level ``L`` is a list of ``min(2**L, k)``
    arrays of shape ``(size / 2**L, ...)``; the last level has a single node: the product.
    """
    leaves = pad_leaves(xp, leaves, mode)
    size = leaves.shape[0]
    level = [leaves] if k >= 1 else []
    levels = [level]
    while size > 1:
        size //= 2
        first, second = _halves(level, size)
        level = poly_mul(xp, first, second, k, mode)
        levels.append(level)
    return levels


def tree_top(xp, levels, k, like, mode="log"):
    """``e_1 .. e_k`` of the whole product (logs in log mode): ``k`` arrays of shape ``(...)``.

    Degrees above the number of leaves are ``e_j = 0``.
    """
    top = [c[0, ...] for c in levels[-1]]
    while len(top) < k:
        top.append(full_like_shape(xp, like.shape[1:], NEG_INF if mode == "log" else 0.0, like))
    return top


def complement(xp, levels, degree, m, mode="log"):
    """For every leaf ``i``: ``e_1 .. e_degree`` of the leaves other than ``i`` (logs in log mode).

    Returns a list of ``degree`` arrays of shape ``(m, ...)`` (the constant term 1 is
    implicit). Top-down over the tree: outside(child) = outside(parent) x sibling.
    """
    outside = []  # the root has nothing outside it: the polynomial 1
    for level in reversed(levels[:-1]):
        first, second = _halves(level, level[0].shape[0] // 2)
        out_first = poly_mul(xp, outside, second, degree, mode)
        out_second = poly_mul(xp, outside, first, degree, mode)
        outside = [xp.concat([a, b], axis=0) for a, b in zip(out_first, out_second)]
    return [c[:m, ...] for c in outside]


def tree_backprop(xp, levels, cotangent, m):
    r"""Reverse mode through a linear-space product tree: :math:`\partial F / \partial x_i` for every leaf.

    ``F = sum_j cotangent[j-1] * e_j`` (root coefficients, ``j = 1..len(cotangent)``).
    Walking down, the derivative with respect to a child's coefficient ``j`` is
    ``R_child,j = R_parent,j + sum_m sibling_m R_parent,j+m``: a child of degree ``d``
    needs only ``d`` of them, so the wide levels near the leaves carry 1 or 2 arrays (the
    complement polynomials would carry ``k - 1`` at every level). Signs may mix; every
    other factor is non-negative, so rounding errors stay within ``eps * depth`` of the
    same sum taken with absolute values.
    """
    r = [g[None, ...] for g in cotangent]
    for level in reversed(levels[:-1]):
        first, second = _halves(level, level[0].shape[0] // 2)
        r_first, r_second = [], []
        for j in range(1, len(level) + 1):
            acc_1, acc_2 = r[j - 1], r[j - 1]
            for mm in range(1, min(len(level), len(r) - j) + 1):
                acc_1 = acc_1 + second[mm - 1] * r[j + mm - 1]
                acc_2 = acc_2 + first[mm - 1] * r[j + mm - 1]
            r_first.append(acc_1)
            r_second.append(acc_2)
        r = [xp.concat([a, b], axis=0) for a, b in zip(r_first, r_second)]
    return r[0][:m, ...]


def log_pi(xp, logx, outside, log_e, j):
    r"""``log pi_j(i) = log x_i + log e_{j-1}(x \ i) - log e_j(x)`` for every leaf ``i``.

    ``outside`` is :func:`complement`'s list, ``log_e`` the list ``[log e_1, ...]`` with
    shape ``(...)``. Where ``e_j = 0`` the result is ``-inf`` (the term has no weight).
    """
    le = log_e[j - 1]
    le = xp.where(xp.isfinite(le), le, xp.zeros_like(le))[None, ...]
    num = logx if j == 1 else logx + outside[j - 2]
    return num - le


def flatten_levels(levels):
    """The tree's levels as one flat tuple of arrays (what autograd frameworks can save)."""
    return tuple(c for level in levels for c in level)


def unflatten_levels(flat, k, first_width=1):
    """Inverse of :func:`flatten_levels`: level ``L`` holds ``min(2**L, k)`` arrays
    (``first_width`` is ``2**L`` of the first level in ``flat``)."""
    levels, pos, width = [], 0, first_width
    while pos < len(flat):
        n = min(width, k)
        levels.append(list(flat[pos : pos + n]))
        pos += n
        width *= 2
    return levels


def _nodes_first(xp, x):
    """``(..., m) -> (m, ...)``: the tree's layout."""
    return xp.moveaxis(x, -1, 0) if x.ndim > 1 else x


def _log_esf_forward(xp, x, *, static):
    (k,) = static
    xt = _nodes_first(xp, x)
    levels = tree_levels(xp, xt, k)
    top = tree_top(xp, levels, k, xt)
    zero = xp.zeros(x.shape[:-1], dtype=x.dtype, device=_device(x))
    out = xp.stack([zero, *top], axis=-1)
    return out, flatten_levels(levels[1:])  # level 0 is (a view of) x: rebuilt in the backward


def _log_esf_backward(xp, x, args, residuals, g, *, static):
    (k,) = static
    if k == 0:
        return xp.zeros_like(x)
    xt = _nodes_first(xp, x)
    levels = [[pad_leaves(xp, xt)], *unflatten_levels(residuals, k, first_width=2)]
    log_e = tree_top(xp, levels, k, xt)
    outside = complement(xp, levels, k - 1, x.shape[-1])
    dx = xp.zeros_like(xt)
    for j in range(1, k + 1):
        dx = dx + g[..., j][None, ...] * xp.exp(log_pi(xp, xt, outside, log_e, j))
    return xp.moveaxis(dx, 0, -1) if x.ndim > 1 else dx


LOG_ESF = Op("log_esf", _log_esf_forward, _log_esf_backward)

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
last, so every operation is a plain loop over contiguous batch rows. Under XLA and eager
torch on a CPU the trees can also be built **nodes last** (``axis=-1``, :func:`nodes_last_applies`): the rows as
they come, with no transposed copy. The parent of nodes
``i`` and ``i + nodes/2`` is node ``i`` of the level above: both children of a level are
contiguous blocks.
"""

from __future__ import annotations

import math

from .op import Op
from .ops import NEG_INF, _device, _torch_compiling, cumsum, fma, fma_halves, full_like_shape, fusion_barrier, logsumexp_list, on_accelerator

__all__ = ["LOG_ESF", "nodes_last_applies", "tree_levels", "tree_top", "tree_root", "complement", "tree_backprop", "log_pi", "level_structure", "scan_prefix", "scan_backprop", "scan_leaves"]


def _cut(c, start, stop, axis=0):
    """Nodes ``start:stop`` of a coefficient array whose nodes are on ``axis`` (0, or -1: the
    nodes-last layout, :func:`nodes_last_applies`)."""
    return c[start:stop, ...] if axis == 0 else c[..., start:stop]


def _halves(level, half, axis=0):
    """Children of node ``i`` of the next level up are nodes ``i`` and ``i + half``: contiguous
    halves (any pairing is valid, the polynomial is symmetric; contiguous slices are fast)."""
    return [_cut(c, None, half, axis) for c in level], [_cut(c, half, None, axis) for c in level]


def poly_mul(xp, a, b, degree, mode="log"):
    """Product of two polynomials with constant term 1, truncated at ``degree``.

    ``mode="log"``: coefficients are logs and sums are log-sum-exps; ``mode="linear"``:
    plain non-negative coefficients. Either way every term is positive: nothing cancels.
    """
    da, db = len(a), len(b)
    out = []
    for j in range(1, min(da + db, degree) + 1):
        ends = ([a[j - 1]] if j <= da else []) + ([b[j - 1]] if j <= db else [])
        pairs = [(a[i - 1], b[j - i - 1]) for i in range(max(1, j - db), min(da, j - 1) + 1)]
        if mode == "log":
            out.append(logsumexp_list(xp, ends + [u + v for u, v in pairs]))
            continue
        if ends:
            acc = ends[0] if len(ends) == 1 else ends[0] + ends[1]
        else:
            (u, v), pairs = pairs[0], pairs[1:]
            acc = u * v
        for u, v in pairs:  # one multiply-add each (a single operation in torch)
            acc = fma(xp, acc, u, v)
        out.append(acc)
    return out


PAD_SMALL = 1 << 16
"""Trees whose power-of-two padding adds at most this many elements (leaves times the other
axes; 256 KiB of float32) are padded to a power of two: there the padding costs less than the
operations that padding levels on the way up adds (a concatenation per coefficient array and
level), which eager torch pays per call. A round figure between the benchmark's sizes: 256 x 100
pads 24 x 256 elements, 256 x 10000 would pad 6384 x 256."""


def level_sizes(m, rest=1):
    """How many nodes each level of the tree of ``m`` leaves stores, leaves first, root (1) last.

    Every level but the root has an even count: node ``i`` pairs with node ``i + size/2``.
    The leaves are padded with zero leaves (the polynomial 1) to a multiple of ``2**p``, ``p``
    four less than the tree's depth, so at most an eighth of them is padding and the first
    ``p`` levels halve exactly; a level above them with an odd count gains one zero node, at
    most sixteen nodes wide there. (Padding every row to a power of two would waste up to half
    of the widest levels: 16384 leaves for 10000 classes.) Small trees (``rest`` is the size
    of the other axes, :data:`PAD_SMALL`) are padded to a power of two. The depth,
    ``ceil(log2 m)``, is that of a power-of-two tree either way.
    """
    if m <= 1:
        return (2, 1) if m == 0 else (1,)
    depth = (m - 1).bit_length()
    p = depth if ((1 << depth) - m) * rest <= PAD_SMALL else max(0, depth - 4)
    size = -(-m // (1 << p)) << p
    size += size % 2  # p = 0: an even count all the same
    sizes = [size]
    while size > 1:
        size //= 2
        size += size % 2 if size > 1 else 0
        sizes.append(size)
    return tuple(sizes)


def _pad_nodes(xp, level, size, mode, axis=0):
    """A level (a list of ``(nodes, ...)`` arrays, ``(..., nodes)`` with ``axis=-1``, or one stacked
    ``(d, nodes, ...)`` array) with zero nodes (``-inf`` in log mode) appended up to ``size`` nodes."""
    fill = NEG_INF if mode == "log" else 0.0
    if isinstance(level, list):
        have = level[0].shape[axis]
        if have == size:
            return level
        if axis == 0:
            return [xp.concat([c, full_like_shape(xp, (size - have, *c.shape[1:]), fill, c)], axis=0) for c in level]
        return [xp.concat([c, full_like_shape(xp, (*c.shape[:-1], size - have), fill, c)], axis=-1) for c in level]
    have = level.shape[1]
    if have == size:
        return level
    pad = full_like_shape(xp, (level.shape[0], size - have, *level.shape[2:]), fill, level)
    return xp.concat([level, pad], axis=1)


def padded_leaves(m, rest=1):
    """How many leaves a caller may pass for a tree of ``m`` leaves, padding included
    (:func:`level_sizes`' first count), so that :func:`tree_levels` pads nothing and builds the
    same levels: ``m`` itself where a tree of the padded count would be padded further."""
    sizes = level_sizes(m, rest)
    return sizes[0] if level_sizes(sizes[0], rest) == sizes else m


def pad_leaves(xp, leaves, mode="log", axis=0):
    """Leaves ``(m, ...)`` (``(..., m)`` with ``axis=-1``) padded with zeros (``-inf`` in log mode)
    to :func:`level_sizes`' first count."""
    return _pad_nodes(xp, [leaves], level_sizes(leaves.shape[axis], _rest(leaves, axis))[0], mode, axis)[0]


ACCELERATOR_COSTS = (1 << 20, 6)
"""On an accelerator: (the fixed cost of one array operation, the cost per element of a stacked
level's transient array), in elements moved by a list-form operation. An operation is a kernel
launch and its dispatch (eager torch on an H100 spent about 18 microseconds per operation: 10.1
ms for the 563 operations that ``benchmarks/count_ops.py --as-gpu`` counts at 256 x 100, k = 5);
the stacked form moves its transient about six times. Round figures: the choice only moves time between two
exact forms."""

CPU_LIST_OPS = 48
"""On a CPU a level is stacked iff its list form would take more than this many operations
(degree 8 and up). There the stacked form's gather and broadcast product cost more than the
list form's small operations save, except where a level's list form explodes: then, in eager
torch, its operation count, and under XLA its compile and run times. ``benchmarks/level_forms.py``
measured (2-core CPU, forward + backward, all lists against a cost-model mix with stacked deep
levels): NumPy k = 5 at 256 x 100, 2.42 against 3.54 ms; torch k = 5, 4.39 against 5.50 ms;
torch k = 20, 16.35 against 8.56 ms; JAX k = 5, 1.25 against 9.35 ms all stacked; JAX k = 20 at
64 x 100000 (float64 trees), 8.4 s and 125 s to compile with lists against 7.1 s and 16 s
stacked. Those JAX figures predate the fusion boundary between levels: under XLA the limit is
now :data:`XLA_CPU_LIST_OPS`."""

CPU_STACK_TRANSIENT = 1 << 19
"""Eager on a CPU (NumPy, torch), a level past :data:`CPU_LIST_OPS` is stacked only if its
stacked product's transient array (``d (d_child + 1) h rest`` elements) is at most this large:
on small levels the stacked form saves operations, on large ones its transient costs more than
the list form's passes. ``benchmarks/level_forms.py`` (2-core CPU, allocator pinned, planned
against all lists): torch k = 10 at 256 x 1000, 11.60 against 12.15 ms; torch k = 20 at
256 x 100, 8.35 against 13.49 ms, at 256 x 1000 27.58 against 31.28 ms; NumPy k = 10 at
256 x 1000, 11.96 against 9.66 ms. Before this limit, with every such level stacked: torch
14.04 ms and NumPy 16.79 ms for k = 10 at 256 x 1000, torch 33.54 ms for k = 20 there."""

XLA_CPU_LIST_OPS = 400
""":data:`CPU_LIST_OPS` under XLA on a CPU (JAX): there the list form runs faster at every degree
once a fusion boundary separates the levels (:func:`~.ops.fusion_barrier`), and the limit only
bounds the compile time (k <= 20 runs all lists; a product of two degree-20 nodes takes 400
operations). ``benchmarks/level_forms.py --backend jax`` (2-core CPU, forward + backward, the
planned mix with :data:`CPU_LIST_OPS` against all lists, first call with compilation in
brackets): k = 10 at 256 x 1000, 26.75 ms (2.6 s) against 3.58 ms (5.2 s); k = 20 at 256 x 100,
8.10 ms (2.4 s) against 1.89 ms (8.1 s); with x64, k = 20 at 64 x 100000, 372 ms (11.0 s)
against 236 ms (26.3 s)."""

STACK_BUDGET = 2.0
"""A stacked level's transient array may hold at most this many times the padded leaves'
elements, or :data:`STACK_SMALL` elements if more: memory stays within a small multiple of the
input's."""

STACK_SMALL = 1 << 22
"""Transient arrays up to this many elements (16 MiB of float32) are always allowed."""


def _list_ops(d_child, d):
    """Array operations of one list-form product of two degree-``d_child`` polynomials at ``d``."""
    ops = 0
    for j in range(1, d + 1):
        pairs = max(0, min(d_child, j - 1) - max(1, j - d_child) + 1)
        terms = (j <= d_child) * 2 + pairs
        ops += pairs + terms - 1
    return ops


_FORMS_MEMO = {}
"""level_forms' answers by argument: an eager call pays a dictionary lookup, not the plan (a
Python loop over levels and degrees, six times per forward + backward). A dict, not ``functools.lru_cache``, which
``torch.compile`` warns about; it is not used while ``torch.compile`` traces (a guard on the
dict would recompile the graph as it fills), nor for symbolic sizes."""


def level_forms(m, k, rest=1, mode="linear", accelerator=False, xla=False):
    """Per level above the leaves, whether it is *stacked* (one array of coefficients) or a list.

    A stacked product costs about ten array operations whatever the degree, where the list
    product costs one or two per pair of coefficients (``O(k^2)``); but the stacked form moves
    a transient ``(K, d+1, nodes, ...)`` array (:func:`stacked_product`), about six times its
    size in memory traffic. On an accelerator, where operations are dear, a cost model
    (operations times a fixed cost plus elements moved, :data:`ACCELERATOR_COSTS`) stacks nearly
    every level; on a CPU only the levels whose list form explodes (:data:`CPU_LIST_OPS`: the
    deep levels at k >= 10) and, eager, whose transient is small (:data:`CPU_STACK_TRANSIENT`);
    under XLA (``xla``) :data:`XLA_CPU_LIST_OPS` instead.
    Within :data:`STACK_BUDGET` always; log space always uses lists. ``accelerator`` is
    :func:`~.ops.on_accelerator`'s answer, ``xla`` whether the namespace is JAX's. Static: ``m``
    leaves, degree ``k``, ``rest`` = the size of the other axes; never values.
    """
    key = (m, k, rest, mode, accelerator, xla)
    if _torch_compiling() or not all(type(v) in (int, str, bool) for v in key):
        return _plan_forms(*key)
    forms = _FORMS_MEMO.get(key)
    if forms is None:
        if len(_FORMS_MEMO) >= 1024:  # many distinct shapes: start again rather than grow
            _FORMS_MEMO.clear()
        forms = _FORMS_MEMO[key] = _plan_forms(*key)
    return forms


def _plan_forms(m, k, rest, mode, accelerator, xla=False):
    sizes = level_sizes(m, rest)
    op_cost, per_element = ACCELERATOR_COSTS
    limit = max(STACK_BUDGET * sizes[0] * rest, STACK_SMALL)
    forms, d_child = [], 1
    for child in sizes[:-1] if k >= 1 else ():
        h = child // 2
        d = min(2 * d_child, k)
        transient = d * (d_child + 1) * h * rest
        list_cost = _list_ops(d_child, d) * (op_cost + 3 * h * rest)
        stacked_cost = 10 * op_cost + per_element * transient
        if accelerator:
            cheaper = stacked_cost < list_cost
        elif xla:
            cheaper = _list_ops(d_child, d) > XLA_CPU_LIST_OPS
        else:
            cheaper = _list_ops(d_child, d) > CPU_LIST_OPS and transient <= CPU_STACK_TRANSIENT
        forms.append(mode == "linear" and cheaper and 2 * transient <= limit)
        d_child = d
    return tuple(forms)


def _index(xp, values, like):
    return xp.asarray(values, dtype=xp.int32, device=_device(like))


def _with_one(xp, a):
    """``(d, ...) -> (d + 1, ...)``: the constant term 1 first."""
    return xp.concat([xp.ones_like(a[:1, ...]), a], axis=0)


def stacked_product(xp, a, b, degree):
    """Product of two stacked polynomials with constant term 1, truncated at ``degree``.

    ``a``: ``(da, h, ...)`` holds coefficients 1..da, ``b`` likewise: returns ``(K, h, ...)``,
    ``K = min(da + db, degree)``. ``C_j = sum_i A_{j-i} B_i``: one gather builds the Toeplitz
    array ``A_{j-i}`` (``(K, db + 1, h, ...)``, zero outside ``0..da``), one product and one sum
    over ``i`` finish. Elementwise products and sums only (never ``matmul``, which TF32 settings
    would round): every term is non-negative, as in the list form.
    """
    da, db = a.shape[0], b.shape[0]
    big = min(da + db, degree)
    a_ext = xp.concat([xp.ones_like(a[:1, ...]), a, xp.zeros_like(a[:1, ...])], axis=0)  # 1, a_1..a_da, 0
    idx = [j - i if 0 <= j - i <= da else da + 1 for j in range(1, big + 1) for i in range(db + 1)]
    toeplitz = xp.reshape(xp.take(a_ext, _index(xp, idx, a), axis=0), (big, db + 1, *a.shape[1:]))
    return xp.sum(toeplitz * _with_one(xp, b)[None, ...], axis=1)


def _stacked_backprop(xp, r, level):
    """One level of :func:`tree_backprop` in stacked form: ``r`` ``(dp, h, ...)`` are the
    parents' cotangents of coefficients 1..dp, ``level`` ``(dc, 2h, ...)`` the children; returns
    the children's ``(dc, 2h, ...)``: ``R_c,j = sum_{m=0..dc} S_m R_p,j+m`` with ``S`` the
    sibling (``S_0 = 1``, ``R_p`` zero above ``dp``)."""
    dp, h = r.shape[0], r.shape[1]
    dc = level.shape[0]
    rest = level.shape[2:]
    pairs = xp.reshape(level, (dc, 2, h, *rest))  # node i and its sibling i + h
    sibling = _with_one(xp, xp.flip(pairs, axis=1))  # (dc + 1, 2, h, ...)
    r_ext = xp.concat([r, xp.zeros_like(r[:1, ...])], axis=0)  # r_1..r_dp, 0
    idx = [min(j + mm - 1, dp) for j in range(1, dc + 1) for mm in range(dc + 1)]
    hankel = xp.reshape(xp.take(r_ext, _index(xp, idx, r), axis=0), (dc, dc + 1, 1, h, *rest))
    return xp.reshape(xp.sum(hankel * sibling[None, ...], axis=1), (dc, 2 * h, *rest))


def _as_list(level):
    return level if isinstance(level, list) else [level[j, ...] for j in range(level.shape[0])]


def _as_stack(xp, level):
    return level if not isinstance(level, list) else xp.stack(level, axis=0)


def tree_levels(xp, leaves, k, mode="log", axis=0):
    """All levels of the product tree of ``prod_i (1 + x_i t)``, truncated at ``k``.

    ``leaves`` has shape ``(m, ...)``: ``log x`` (``mode="log"``, ``-inf`` for a leaf
    equal to 0) or ``x >= 0`` (``mode="linear"``). The leaves are padded with zeros to
    :func:`level_sizes`' counts. Returns a list of levels;
    level ``L`` holds ``min(2**L, k)`` coefficients of ``level_sizes(m, rest)[L]`` nodes (``rest``
    the size of the other axes): a list of
    arrays of shape ``(nodes, ...)``, or (a stacked level, see :func:`level_forms`) one array
    of shape ``(min(2**L, k), nodes, ...)``. Level 0 is the list ``[leaves]``; the last level
    has a single node: the product. With ``axis=-1`` the nodes are on the last axis of every
    array (``leaves`` ``(..., m)``), lists only (:func:`nodes_last_applies`).
    """
    m, rest = leaves.shape[axis], _rest(leaves, axis)
    forms = level_forms(m, k, rest, mode, on_accelerator(leaves), _is_xla(xp))
    if axis != 0 and any(forms):
        raise ValueError("the nodes-last layout takes list levels only: see nodes_last_applies")
    sizes = level_sizes(m, rest)
    leaves = pad_leaves(xp, leaves, mode, axis)
    level = [leaves] if k >= 1 else []
    levels = [level]
    for stacked, size in zip(forms, sizes[1:]):
        level = _next_level(xp, level, size, stacked, k, mode, axis)
        levels.append(level)
    return levels


def nodes_last_applies(xp, like, m, k, mode="linear"):
    """Whether a tree of ``m`` leaves of degree ``k`` over batch rows like ``like`` ``(batch, ...)``
    is built nodes last (``axis=-1``: the rows' own layout, no transposed copy on the way in or
    out): under XLA and torch (:data:`NODES_LAST_EAGER`) on a CPU, when every level is a list
    (:func:`level_forms`; under XLA k <= 20, on eager torch k <= 6). Under XLA a transposed copy
    fused with its producer or consumer was among the slowest fusions, and XLA's fusions read
    the strided halves of each row as fast as contiguous blocks. NumPy keeps nodes first, where
    each operation's inner loop runs over the batch, and so do accelerators, where the stacked
    levels need it. Static."""
    if on_accelerator(like) or not (_is_xla(xp) or getattr(xp, "__name__", "") in NODES_LAST_EAGER):
        return False
    return not any(level_forms(m, k, math.prod(like.shape[:-1]), mode, False, _is_xla(xp)))


NODES_LAST_EAGER = ("array_api_compat.torch",)
"""Eager namespaces that build list-only trees nodes last on a CPU, as XLA does: torch, where the
two transposed copies go. ``benchmarks/layout_forms.py`` (2-core CPU, k = 5, forward + backward,
nodes last / nodes first in one process): torch 0.97 / 0.93 / 0.89 at 256 x 1000 / 256 x 10000 /
64 x 100000 (``benchmarks/ab.py`` against nodes first, 3 rounds: 0.89 / 0.89 / 0.72x the time);
NumPy 1.43 / 1.60 / 1.02, its strided loops slower, so it keeps nodes first
(``docs/benchmarks/layout-forms.txt``)."""


def _is_xla(xp):
    """Whether ``xp`` is JAX's namespace (XLA compiles the tree: :data:`XLA_CPU_LIST_OPS`)."""
    return getattr(xp, "__name__", "") == "jax.numpy"


def _next_level(xp, level, size, stacked, k, mode, axis=0):
    """The level above ``level`` (``size`` nodes): products of its nodes ``i`` and
    ``i + half`` (half its nodes), then zero nodes up to ``size``."""
    half = _nodes(level, axis) // 2
    if stacked:
        both = _as_stack(xp, level)
        parent = stacked_product(xp, both[:, :half, ...], both[:, half:, ...], k)
    else:
        first, second = _halves(_as_list(level), half, axis)
        parent = poly_mul(xp, first, second, k, mode)
    return fusion_barrier(xp, _pad_nodes(xp, parent, size, mode, axis))


def _nodes(level, axis=0):
    """How many nodes a level (a list or a stacked array) holds."""
    return level[0].shape[axis] if isinstance(level, list) else level.shape[1]


def _rest(x, axis=0):
    """The size of the axes other than the nodes'."""
    return math.prod(x.shape[1:] if axis == 0 else x.shape[:-1])


def tree_top(xp, levels, k, like, mode="log", axis=0):
    """``e_1 .. e_k`` of the whole product (logs in log mode): ``k`` arrays of shape ``(...)``.

    Degrees above the number of leaves are ``e_j = 0``.
    """
    top = [c[0, ...] if axis == 0 else c[..., 0] for c in _as_list(levels[-1])]
    while len(top) < k:
        top.append(full_like_shape(xp, like.shape[1:] if axis == 0 else like.shape[:-1], NEG_INF if mode == "log" else 0.0, like))
    return top


def tree_root(xp, levels, k, like, mode="log", axis=0):
    """:func:`tree_top` as one array ``(k, ...)``: row ``j - 1`` holds ``e_j`` (its log in log mode).
    A stacked root is sliced once, not split into ``k`` arrays and stacked again."""
    root = levels[-1]
    if isinstance(root, list):
        return xp.stack(tree_top(xp, levels, k, like, mode, axis), axis=0)
    top = root[:, 0, ...]
    if top.shape[0] < k:
        fill = full_like_shape(xp, (k - top.shape[0], *top.shape[1:]), NEG_INF if mode == "log" else 0.0, like)
        top = xp.concat([top, fill], axis=0)
    return top


def complement(xp, levels, degree, m, mode="log", axis=0):
    """For every leaf ``i``: ``e_1 .. e_degree`` of the leaves other than ``i`` (logs in log mode).

    Returns a list of ``degree`` arrays of shape ``(m, ...)`` (``(..., m)`` with ``axis=-1``;
    the constant term 1 is implicit). Top-down over the tree: outside(child) = outside(parent)
    x sibling.
    """
    outside = []  # the root has nothing outside it: the polynomial 1
    for level in reversed(levels[:-1]):
        half = level[0].shape[axis] // 2
        first, second = _halves(level, half, axis)
        outside = [_cut(o, None, half, axis) for o in outside]  # the parents' padding nodes have no children
        out_first = poly_mul(xp, outside, second, degree, mode)
        out_second = poly_mul(xp, outside, first, degree, mode)
        outside = fusion_barrier(xp, [xp.concat([a, b], axis=axis) for a, b in zip(out_first, out_second)])
    return [_cut(c, None, m, axis) for c in outside]


def tree_backprop(xp, levels, cotangent, m, axis=0, times_leaves=False):
    r"""Reverse mode through a linear-space product tree: :math:`\partial F / \partial x_i` for every leaf.

    ``F = sum_j cotangent[j-1] * e_j`` (root coefficients, ``j = 1..len(cotangent)``;
    ``cotangent`` a list of arrays ``(...)`` or one array ``(degrees, ...)``).
    Walking down, the derivative with respect to a child's coefficient ``j`` is
    ``R_child,j = R_parent,j + sum_m sibling_m R_parent,j+m``: a child of degree ``d``
    needs only ``d`` of them, so the wide levels near the leaves carry 1 or 2 arrays (the
    complement polynomials would carry ``k - 1`` at every level). Signs may mix; every
    other factor is non-negative, so rounding errors stay within ``eps * depth`` of the
    same sum taken with absolute values. Stacked levels (:func:`level_forms`) are walked in
    stacked form. With ``axis=-1`` (:func:`nodes_last_applies`) the nodes are on the last axis and
    the result is ``(..., m)``.

    ``times_leaves=True`` returns :math:`x_i\,\partial F/\partial x_i` instead, folded into the
    last step where level 1 is a list: for the leaves :math:`a, b` of one node,
    :math:`x_a (R_1 + x_b R_2) = x_a R_1 + e_2 R_2` with the node's own :math:`e_2 = x_a x_b`, so
    the two leaves share one product and no separate pass multiplies the result by the leaves
    (the same roundings, reordered: every factor but ``R`` is non-negative). The result has
    exactly ``m`` entries along the nodes' axis (a contiguous array, no padding to cut).
    """
    if isinstance(cotangent, list):
        r = [g[None, ...] if axis == 0 else g[..., None] for g in cotangent]
    else:
        r = cotangent[:, None, ...] if axis == 0 else cotangent[..., None]
    for child, parent in zip(reversed(levels[:-1]), reversed(levels[1:])):
        half = _nodes(child, axis) // 2  # the parents' padding nodes (beyond half) have no children
        if not isinstance(parent, list):  # the level above was computed stacked: so is its backprop
            level = _as_stack(xp, child)
            r = _as_stack(xp, r)
            r = fusion_barrier(xp, _stacked_backprop(xp, r[: min(r.shape[0], 2 * level.shape[0]), :half, ...], level))
            continue
        level = _as_list(child)
        r = [_cut(a, None, half, axis) for a in _as_list(r)]
        first, second = _halves(level, half, axis)
        if times_leaves and child is levels[0] and len(r) == 2:  # x_a R_1 + e_2 R_2, and for b
            shared = _cut(parent[1], None, half, axis) * r[1]
            return fma_halves(xp, shared, [(first[0], r[0])], [(second[0], r[0])], axis, stop=m)
        children = []
        for j in range(1, len(level) + 1):
            # node i of the first half pairs with sibling i of the second, and the reverse. Plain
            # loops: a comprehension over r would make it a closure's cell, and torch.compile
            # cannot trace the `del r` below (DELETE_DEREF)
            pairs_1, pairs_2 = [], []
            for mm in range(1, min(len(level), len(r) - j) + 1):
                pairs_1.append((second[mm - 1], r[j + mm - 1]))
                pairs_2.append((first[mm - 1], r[j + mm - 1]))
            children.append(fma_halves(xp, r[j - 1], pairs_1, pairs_2, axis))
        del r
        r = fusion_barrier(xp, children)
        del children
    grad = _cut(_as_list(r)[0], None, m, axis)
    return grad * _cut(_as_list(levels[0])[0], None, m, axis) if times_leaves else grad


def scan_prefix(xp, x, k):
    r"""``e_1 .. e_k`` of ``x >= 0`` along the last axis by prefix sums: ``(top, state)``.

    With :math:`Q_j[i] = e_j(x_0 .. x_{i-1})` (the leaves before ``i``; :math:`Q_0 = 1`),
    :math:`Q_j[i + 1] = Q_j[i] + x_i Q_{j-1}[i]`: each degree is one product and one
    cumulative sum, ``2k`` array operations in all where the tree takes ``O(k^2)`` per level.
    The row is padded with ``d - 1`` zero leaves at each end (``d = min(k, m)``), which change
    no :math:`e_j` and let every shift by one be a slice: the prefix sums of degree ``j`` start
    ``j - 1`` places in. Every term is non-negative (no subtraction): each :math:`e_j` is
    within ``(m + j) eps`` of its value, so callers run it in float64 (the tree's bound is
    ``depth * eps``). ``top`` is ``(..., k)`` (:math:`e_j = 0` for ``j > m``); ``state`` the
    tuple (padded leaves, prefix sums of degrees ``1 .. d - 1``) for :func:`scan_backprop`
    and :func:`scan_leaves`: distinct arrays, none a view of another.
    """
    m = x.shape[-1]
    d = min(k, m)
    pad = xp.zeros_like(x[..., : d - 1])
    padded = xp.concat([pad, x, pad], axis=-1) if d > 1 else x
    left = padded[..., : m + d - 1]  # the zeros in front and the leaves
    prefixes, top = [], []
    for j in range(1, d + 1):  # prefixes[j - 1][t] = e_j of left[0 .. t + j - 1]
        term = left if j == 1 else left[..., j - 1 :] * prefixes[-1][..., :-1]
        if j == d:  # only the total of the last degree
            top.append(xp.sum(term, axis=-1))
            break
        prefixes.append(cumsum(xp, term))
        top.append(prefixes[-1][..., -1])
    top.extend([xp.zeros_like(top[0])] * (k - len(top)))
    return xp.stack(top, axis=-1), (padded, *prefixes)


def scan_leaves(state):
    """The leaves ``x`` that :func:`scan_prefix` was given, from its state (a view)."""
    padded, p = state[0], len(state) - 1
    return padded[..., p : padded.shape[-1] - p]


def scan_backprop(xp, state, cotangent):
    r"""Reverse mode through :func:`scan_prefix`: :math:`\partial F / \partial x_i` for
    :math:`F = \sum_j c_j e_j(x)`, ``cotangent`` ``(..., k)`` holding :math:`c_1 .. c_k`.

    :math:`\partial F / \partial x_i = \sum_{a<d} Q_a[i]\, G_a[i]` with
    :math:`G_a[i] = \sum_b c_{a+b+1} e_b(x_{i+1} .. x_{m-1})` (the leaves after ``i``):
    :math:`G_{d-1} = c_d` and :math:`G_a[i] = c_{a+1} + \sum_{l > i} x_l G_{a+1}[l]`, a
    cumulative sum along the reversed row (the zeros of the padding again make each shift a
    slice); each :math:`G_a` is flipped back to meet :math:`Q_a`. Not formed as a total minus
    a prefix sum: every product in it is one of distinct leaves, so its rounding stays within
    ``m eps`` of the same sum taken with absolute values (signs may mix: ``c`` does).
    """
    padded, prefixes = state[0], state[1:]
    p = len(prefixes)  # d - 1
    d = p + 1
    m = padded.shape[-1] - 2 * p
    rev = xp.flip(padded, axis=-1)[..., : m + p]  # the zeros in front and the leaves, reversed
    g = cotangent[..., d - 1 : d]  # G_{d-1}, constant along the row
    grad = g if d == 1 else prefixes[d - 2][..., :-1] * g  # Q_{d-1} G_{d-1}
    for a in range(d - 2, -1, -1):  # g covers places d - 2 - a .. m + p - 1 of rev
        v = g * rev if a == d - 2 else rev[..., d - 2 - a :] * g
        g = cotangent[..., a : a + 1] + cumsum(xp, v)[..., :-1]
        g_real = xp.flip(g[..., a:], axis=-1)  # the leaves' places, in their order
        grad = grad + g_real if a == 0 else fma(xp, grad, prefixes[a - 1][..., p - a : -1], g_real)
    return xp.broadcast_to(grad, (*grad.shape[:-1], m)) if d == 1 else grad


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
    return tuple(a for level in levels for a in (level if isinstance(level, list) else [level]))


def unflatten_levels(flat, structure):
    """Inverse of :func:`flatten_levels`; ``structure`` is :func:`level_structure`'s."""
    levels, pos = [], 0
    for width in structure:
        if width == 0:  # a stacked level: one array
            levels.append(flat[pos])
            pos += 1
        else:
            levels.append(list(flat[pos : pos + width]))
            pos += width
    return levels


def tree_residuals(levels):
    """What a backward needs of a tree, as one flat tuple: every level but level 1, which
    :func:`restore_tree` recomputes from the leaves (one product of pairs). Level 1 is as
    large as the leaves: saving it would make it the largest residual after them."""
    return flatten_levels(levels[:1] + levels[2:] if len(levels) > 2 else levels)


def restore_tree(xp, flat, m, k, rest=1, mode="linear", accelerator=False, axis=0):
    """Inverse of :func:`tree_residuals` for a tree of ``m`` leaves built by :func:`tree_levels`
    with the same arguments: ``(levels, number of arrays of flat it used)``."""
    structure = level_structure(m, k, rest, mode, accelerator, _is_xla(xp))
    if len(structure) <= 2:
        saved = structure
    else:
        saved = structure[:1] + structure[2:]
    used = sum(max(w, 1) for w in saved)
    levels = unflatten_levels(flat[:used], saved)
    if len(structure) > 2:
        stacked = level_forms(m, k, rest, mode, accelerator, _is_xla(xp))[0]
        levels.insert(1, _next_level(xp, levels[0], level_sizes(m, rest)[1], stacked, k, mode, axis))
    return levels, used


def level_structure(m, k, rest=1, mode="linear", accelerator=False, xla=False):
    """What :func:`tree_levels` returns for ``m`` leaves, per level: the number of arrays of
    a list level, 0 for a stacked one (level 0, the leaves, is a list of one array)."""
    out, width = [1 if k >= 1 else 0], 1
    for stacked in level_forms(m, k, rest, mode, accelerator, xla):
        width *= 2
        out.append(0 if stacked else min(width, k))
    return out


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
    structure = level_structure(xt.shape[0], k, _rest(xt), "log")
    levels = [[pad_leaves(xp, xt)], *unflatten_levels(residuals, structure[1:])]
    log_e = tree_top(xp, levels, k, xt)
    outside = complement(xp, levels, k - 1, x.shape[-1])
    dx = xp.zeros_like(xt)
    for j in range(1, min(k, x.shape[-1]) + 1):  # e_j = 0 for every x beyond degree m: no gradient
        dx = dx + g[..., j][None, ...] * xp.exp(log_pi(xp, xt, outside, log_e, j))
    return xp.moveaxis(dx, 0, -1) if x.ndim > 1 else dx


LOG_ESF = Op("log_esf", _log_esf_forward, _log_esf_backward)

r"""Smooth and hard top-k SVM (Berrada, Zisserman, Kumar, ICLR 2018): forward and backward.

The smooth loss is :math:`L = \tau\,\mathrm{softplus}(r)` with
:math:`r = \alpha/\tau + \log e_k(x) - \log e_{k-1}(x) - z_y`, :math:`z = (s - c)/(k\tau)`
(formed as :math:`\tau r = \alpha + \tau \log(N/D) - (s_y - c)/k`, see below, so that no
finite scores overflow),
:math:`x = \exp(z_{\setminus y})`, for any per-row constant :math:`c` (the loss is shift
invariant).

**Exact, cancellation-free evaluation.** Take :math:`c` = the k-th largest score among
the classes other than ``y`` and split those classes into :math:`T = \{i : s_i > c\}`
(:math:`m \le k - 1` classes) and :math:`U` (the rest; ties at :math:`c` stay in
:math:`U`). Every :math:`x_u \le 1` on :math:`U`, every :math:`w_t = 1/x_t < 1` on
:math:`T`, and dividing by :math:`\prod_T x_t`

.. math::
    \frac{e_k(x)}{e_{k-1}(x)} = \frac{N}{D},\quad
    N = \sum_{b=0}^{m} e_b(w)\, e_{k-m+b}(x_U),\quad
    D = \sum_{b=0}^{m} e_b(w)\, e_{k-1-m+b}(x_U),

two sums of positive terms with :math:`N, D \ge 1` (:math:`U` holds the :math:`k - m`
classes tied at :math:`c`, each with :math:`x = 1`). They are the coefficients of
:math:`t^k` and :math:`t^{k-1}` in :math:`P_U(t) \prod_{i \in T} (w_i + t)`, with
:math:`P_U(t) = \prod_{u \in U} (1 + x_u t) = \sum_j e_j(x_U) t^j`:
:func:`_times_top` multiplies U's polynomial by T's ``k - 1`` factors one at a time (an
entry of the top k that is not in T gives the factor 1), every factor's coefficients in
:math:`[0, 1]`, so no degree has to be looked up per row from ``m``. Computing
:math:`\log e_k` and :math:`\log e_{k-1}` separately would instead cancel the large terms the top classes
share (a float32 error of :math:`\epsilon \sum_j |z_{[j]}|`, beyond the contract at spreads of 1e4).

Because :math:`x_U \le 1` and :math:`N, D \ge 1`, no term of :math:`e_j(x_U)` below
:math:`\epsilon / (k\,2^{k-1})` can change the result: when the largest possible value,
:math:`\binom{|U|}{k}`, keeps that floor above the dtype's smallest normal number, the
polynomial of :math:`U` is computed in **linear space** (products and sums, no exp/log per
term); for float32 inputs where float32's range is too narrow, in linear space in float32 on
leaves scaled by a factor :math:`\beta` per row (:func:`_row_scaled`), put back in float64 by
T's factors :math:`(w_i + \beta t)` and :math:`N/D = N'/(\beta D')`, or for k beyond that
mode's reach, in linear space in float64; else in log space (:func:`plan_mode`; shapes and
dtype decide, never values). JAX gets float64 for this whatever the program's
``jax_enable_x64`` (the op's ``float64_inside``). Where linear
space is exact, eager torch takes U's polynomial of rows up to about a thousand classes by
prefix sums in float64 instead of the tree, and on a GPU (eager torch, CuPy) also those of float32
batches of up to 2^22 entries (:func:`scan_applies`, :func:`~.esf.scan_prefix`): two
operations per degree, where each tree level takes :math:`O(k^2)`, and eager code pays per
operation.

**Gradient.** With :math:`p = \sigma(r)`, :math:`\partial L/\partial s = (p/k)\,\partial r /
\partial z`, which is :math:`-1` at ``y``;
:math:`x_u \sum_j C_j\, e_{j-1}(x_{U\setminus u})` at :math:`u \in U`, with
:math:`C_j = \partial(\log N - \log D)/\partial e_j(x_U)` — in linear space by reverse mode
down the same tree (:func:`~.esf.tree_backprop`) or back along the prefix sums
(:func:`~.esf.scan_backprop`), in log space from the complement
polynomials; the :math:`C_j` and :math:`-w_t\, \partial(\log N - \log D)/\partial w_t` at
:math:`t \in T` by reverse mode back along T's factors (:func:`_times_top_backward`). No
switch to the hard loss, no truncated series.
"""

from __future__ import annotations

import math

from .esf import _is_xla, complement, nodes_last_applies, padded_leaves, restore_tree, scan_backprop, scan_leaves, scan_prefix, tree_backprop, tree_levels, tree_residuals, tree_root
from .op import Op
from .ops import NEG_INF, _device, _torch_compiling, clip, copy, exp_gaps, float64_available, fma, full_like_shape, fusion_barrier, logsumexp, logsumexp_list, nan_rows, on_accelerator, onehot, put_columns, relu_and_gate, sigmoid, take_columns, times_rows, top_k, top_k_values

__all__ = ["SMOOTH_TOPK_SVM", "TOPK_SVM", "plan_mode"]

_Z_CLIP = 1e4  # |scaled differences| beyond this: exp underflows to exactly 0, sigmoid is exactly 0 or 1


def _log_binom(n, k):
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _linear_is_exact(n_leaves, k, double):
    eps, tiny = (2.0**-53, 2.2250738585072014e-308) if double else (2.0**-24, 1.1754943508222875e-38)
    floor = math.log(eps) - math.log(k) - (k - 1) * math.log(2.0)
    return _log_binom(max(n_leaves, k), k) - floor + 2.0 <= -math.log(tiny)


ROW_SCALE = 2.0
"""In the ``"scaled"`` mode the leaves of a row are multiplied by ``a = min(1, ROW_SCALE k / p)``,
``p`` the sum of the row's leaves (:func:`_row_scaled`)."""


def _row_scale_is_exact(k):
    """Whether float32 trees on leaves scaled per row (:func:`_row_scaled`) keep every term that
    matters and every value within float32's normal range, for any number of leaves.

    With ``c = ROW_SCALE k`` and ``y = a x``: ``e_j(y) <= (a p)^j / j! <= c^j / j!`` (Maclaurin's
    bound ``e_j <= p^j / j!``), for every node of the tree too (its leaves sum to at most p).
    Rows with ``p <= c`` keep ``a = 1``: ``N, D >= 1``, and a term of ``e_j`` below the floor
    ``eps / (k 2^(k-1))`` cannot change the result, as in plain linear space. Rows with ``p > c``
    have ``a = c / p`` and ``e_j(y) >= a^j C(floor(p), j) >= k^j / j! >= 1`` (``e_j`` is
    Schur-concave: with leaves in [0, 1] and sum p it is least when they are floor(p) ones,
    and ``floor(p) - j + 1 >= p / 2``); ``N >= e_b(w) e_j(x)`` for the ``b`` that pairs with
    degree j, so a term of ``e_j(y)`` below the floor times ``e_j(y)`` (>= the floor) cannot
    change the result either. Each leaf is at most a <= 1, so every partial product of a term
    that matters is at least the floor. The bound: ``max_j c^j / j!`` over the floor within the
    normal range, a margin of e^2, as :func:`_linear_is_exact` asks of ``C(n, k)``: k <= 28."""
    eps, tiny = 2.0**-24, 1.1754943508222875e-38
    floor = math.log(eps) - math.log(k) - (k - 1) * math.log(2.0)
    c = ROW_SCALE * k
    largest = max(j * math.log(c) - math.lgamma(j + 1) for j in range(k + 1))
    return largest - floor + 2.0 <= -math.log(tiny)


def plan_mode(n_leaves, k, double, float64_ok=False):
    """How to compute e_0..e_k of ``n_leaves`` values in [0, 1] without losing any term that matters.

    ``"linear"``: linear space in the input's dtype; for float32 (or half) inputs where
    float32's range is too narrow and ``float64_ok``: ``"scaled"``, linear space in float32 on
    leaves scaled by a factor per row (:func:`_row_scaled`; the per-degree factors undone in
    float64) for k up to 28 (:func:`_row_scale_is_exact`), else ``"linear64"``, linear space in
    float64; ``"log"``: log space. The largest
    value is at most C(n_leaves, k); the smallest that can matter is eps / (k 2^(k-1)) (eps of
    the input's dtype). Linear space is exact when C(n_leaves, k) / that floor stays within the
    normal range (with a margin of e^2).
    """
    if n_leaves <= 0 or k <= 0 or _linear_is_exact(n_leaves, k, double):
        return "linear"
    if not double and float64_ok and _row_scale_is_exact(k):
        return "scaled"
    if not double and float64_ok and _linear_is_exact(n_leaves, k, True):
        return "linear64"
    return "log"


SCAN_N_MIN, SCAN_N_PER_K = 900, 90
"""Eager torch on a CPU takes the polynomials by prefix sums (:func:`~.esf.scan_prefix`) for rows
of at most ``max(SCAN_N_MIN, SCAN_N_PER_K * k)`` classes, the tree for wider ones.
``benchmarks/scan_forms.py`` (2-core CPU, allocator pinned, forward + backward, batch 256,
prefix sums' time / the tree's) measured the crossover: k = 5, 0.80 at n = 100, 0.96 at 850,
1.04 at 1000; k = 10, 0.94 at 850, 1.02 at 1000; k = 20, 0.94 at 1500, 1.18 at 2500. On NumPy,
whose ``cumsum`` is a slow sequential loop, prefix sums took 1.39x the tree's time at k = 5,
n = 100 and 2.94x at n = 1000, so NumPy keeps the tree. Float64 inputs keep this width on
every device: prefix sums round within ``(n + k) eps`` (2e-13 at 1800 classes), the tree within
``depth * eps``."""

SCAN_ACCELERATOR_MAX = 1 << 22
"""On a GPU (torch on CUDA, CuPy), float32 inputs take prefix sums at any width while the batch
has at most this many entries (256 x 16384), the tree beyond. ``benchmarks/scan_forms.py`` on an
H100 (forward + backward, prefix sums' time / the tree's): torch 0.60 / 0.53 / 0.47 at k = 5 and
0.86 / 0.44 / 0.22 at k = 20 for 256 x 100 / 1000 / 10000, 0.43 and 0.29 at 64 x 100000; CuPy
0.17 to 0.91. Eager GPU time is launches, and prefix sums launch fewer. Their float64 state
(the leaves and ``k - 1`` prefix sums, kept for the backward) costs memory: peak 230 against
76 MiB at 256 x 10000, 562 against 146 MiB at 64 x 100000 (k = 5), so the widest batches keep the
tree's memory (issue 5's bound: 3x cross-entropy's at 64 x 100000)."""


def scan_applies(xp, s, k, mode):
    """Whether the polynomials of ``s`` are taken by prefix sums rather than the tree: eager
    torch (not while ``torch.compile`` traces) and CuPy, linear space exact; on a CPU torch
    alone, for rows of up to ``max(SCAN_N_MIN, SCAN_N_PER_K * k)`` classes; on CUDA also
    float32 batches of up to ``SCAN_ACCELERATOR_MAX`` entries. Static: the namespace, the device,
    shapes, the dtype and the tree's mode; never values."""
    name = getattr(xp, "__name__", "")
    if mode == "log" or name not in ("array_api_compat.torch", "array_api_compat.cupy") or _torch_compiling():
        return False
    narrow = s.shape[-1] <= max(SCAN_N_MIN, SCAN_N_PER_K * k)
    if not on_accelerator(s):
        return narrow and name == "array_api_compat.torch"
    if not _on_cuda(xp, s):
        return False  # another accelerator (torch's MPS has no float64 to run them in)
    return narrow or (s.dtype != xp.float64 and math.prod(s.shape) <= SCAN_ACCELERATOR_MAX)


def _on_cuda(xp, s):
    """Whether ``s`` is a CuPy array or a torch tensor on CUDA (static metadata)."""
    return getattr(xp, "__name__", "") == "array_api_compat.cupy" or getattr(_device(s), "type", None) == "cuda"


NODES_LAST_MIN = 1000
"""Under XLA and torch on a CPU the trees are built nodes last (:func:`~.esf.nodes_last_applies`) for
rows of at least this many classes. ``benchmarks/ab.py`` (JAX, 3 rounds, nodes last against nodes first
at every width): 0.81-0.88x the time at k = 5 for 256 x 10000 and 64 x 100000, 0.43-0.49x for the
log-space trees of k = 10 and 20 there; 0.82-1.00x at 256 x 1000; 1.12x (k = 5) and 1.22x
(k = 20) at 256 x 100, where the halves of a row are short."""


def _plan(xp, s, k):
    """(mode, whether the polynomials run in float64, whether by prefix sums, whether the trees
    are built nodes last, whether U's leaves are scaled per row) for scores ``s``: shapes and
    dtypes only. Prefix
    sums run in float64 (their rounding grows with the row). Nodes last
    (:func:`~.esf.nodes_last_applies`, XLA and torch on a CPU): U's tree takes the rows as they
    are, with no transposed copy. U's leaves are scaled per row
    (:func:`_row_scaled`) in the ``"scaled"`` mode off prefix sums; the product with T's factors
    (:func:`_times_top`) then runs in float64."""
    # U holds up to n - 1 leaves (every class but y when T is empty): the bound's count
    mode = plan_mode(s.shape[-1] - 1, k, s.dtype == xp.float64, float64_available(xp))
    scan = scan_applies(xp, s, k, mode)
    wide = mode == "linear64" or (scan and s.dtype != xp.float64)
    scale = mode == "scaled" and not scan
    tree_mode = "log" if mode == "log" else "linear"
    last = not scan and s.shape[-1] >= NODES_LAST_MIN and nodes_last_applies(xp, s, s.shape[-1], k, tree_mode)
    return tree_mode, wide, scan, last, scale


def _polynomial(xp, leaves, degree, mode, scan, last):
    """``e_1 .. e_degree`` of ``leaves`` ``(batch, m)``, as ``(batch, degree)`` (logs in log
    mode), and the arrays the backward needs (:func:`_restore`)."""
    if scan:
        return scan_prefix(xp, leaves, degree)
    if last:  # the rows as they are: nodes on the last axis
        levels = tree_levels(xp, leaves, degree, mode, axis=-1)
        top = tree_root(xp, levels, degree, levels[0][0], mode, axis=-1)  # (degree, batch)
        return xp.permute_dims(top, (1, 0)), tree_residuals(levels)
    # the trees take nodes first, batch last: (m, batch), contiguous halves, vectorised rows
    levels = tree_levels(xp, xp.permute_dims(leaves, (1, 0)), degree, mode)
    top = tree_root(xp, levels, degree, levels[0][0], mode)  # (degree, batch)
    return xp.permute_dims(top, (1, 0)), tree_residuals(levels)


def _restore(xp, flat, m, degree, batch, mode, scan, accelerator, last):
    """What :func:`_polynomial` saved, from the front of ``flat``: ``(leaves (batch, m), state,
    number of arrays used)``; ``state`` is the prefix list or the tree's levels."""
    if scan:
        state = tuple(flat[: min(degree, m)])  # the padded leaves and scan_prefix's prefix sums
        return scan_leaves(state), state, len(state)
    levels, used = restore_tree(xp, flat, m, degree, batch, mode, accelerator, axis=-1 if last else 0)
    if last:
        return levels[0][0][..., :m], levels, used
    return xp.permute_dims(levels[0][0][:m, ...], (1, 0)), levels, used


def _backprop(xp, leaves, state, cotangent, scan, last):
    """``leaves * dF/d leaves`` ``(batch, m)`` for ``F = sum_j cotangent[:, j-1] e_j`` (linear space)."""
    if scan:
        return leaves * scan_backprop(xp, state, cotangent)
    m = leaves.shape[-1]
    if last:
        return tree_backprop(xp, state, xp.permute_dims(cotangent, (1, 0)), m, axis=-1, times_leaves=True)
    grad = tree_backprop(xp, state, xp.permute_dims(cotangent, (1, 0)), m)  # (m, batch)
    if _is_xla(xp):
        # the product in the tree's layout, then the transpose apart from it: XLA's CPU fusion
        # of a transpose with an elementwise product is several times slower than the two alone
        return xp.permute_dims(fusion_barrier(xp, xp.permute_dims(leaves, (1, 0)) * grad), (1, 0))
    return leaves * xp.permute_dims(grad, (1, 0))


def _tree_layout(xp, a, last):
    """``(batch, m)`` to the trees' layout and back: transposed for nodes first, as is for nodes last."""
    return a if last else xp.permute_dims(a, (1, 0))


def _per_row(v, last):
    """A per-row ``(batch,)`` array broadcast against the trees' layout."""
    return v[:, None] if last else v[None, :]


def _safe_log(xp, v):
    positive = v > 0
    return xp.where(positive, xp.log(xp.where(positive, v, xp.ones_like(v))), NEG_INF)


def _scaled(xp, diff, scale):
    """``diff / scale`` clipped to ``[-_Z_CLIP, _Z_CLIP]`` (clipped first: the division cannot
    overflow). :func:`~.ops.clip`: one operation, and on torch its ``clamp``, which takes a
    symbolic ``scale`` under ``torch.compile`` (a tau schedule)."""
    bound = _Z_CLIP * scale
    return clip(xp, diff, -bound, bound) / scale


def _forward_parts(xp, s, labels, k, tau, mode, wide, scan, last, scale):
    """Everything both passes need: (s_y - c) / 2, the top k's columns, U's polynomial
    (:func:`_polynomial`'s pair), T's factors (:func:`_top_factors`) and, with ``scale``, the
    factor per row that multiplied U's leaves (:func:`_row_scaled`; else None)."""
    neg_inf = NEG_INF  # a Python scalar: takes the array's dtype and device
    # the label out of the ranking: a copy of s with -inf written at y (O(batch) writes). Nodes
    # last, the copy already spans the tree's padded leaves (padded_leaves), its padding -inf as
    # at y: x = 0 there, and the tree pads nothing (a pass over the leaves fewer)
    batch, n = s.shape
    width = padded_leaves(n, batch) if last else n
    others = copy(xp, s) if width == n else xp.concat([s, full_like_shape(xp, (batch, width - n), neg_inf, s)], axis=-1)
    others = put_columns(xp, others, full_like_shape(xp, (batch, 1), neg_inf, s), labels[:, None])
    vals, idx = top_k(xp, others, k)
    # the k-th largest (a min, not a slice: XLA keeps top_k), at least the lowest finite value:
    # a row with fewer than k finite scores among the other classes (-inf takes a class out) has
    # c = -inf, and -inf - c would be NaN below. Its loss and gradient are exactly 0 (the limit:
    # no k others can push the label out): the top-k entries of -inf then tie at that floor, and
    # s_y - c is beyond the clip of r. Every finite c is its own floor: no other row changes. A
    # where, not maximum: array-api-compat's torch maximum with a Python float calls result_type,
    # which torch.compile cannot trace
    c = xp.min(vals, axis=-1, keepdims=True)
    lowest = float(xp.finfo(s.dtype).min)
    c = xp.where(c < lowest, lowest, c)
    in_t = vals > c  # (batch, k): which of the top k are in T (never the k-th, the last: c)
    # subtract before dividing: exact differences, one rounding. Clipped to [-_Z_CLIP k tau, 0]
    # first: the division cannot overflow however far apart the scores are; below -_Z_CLIP
    # exp gives exactly 0 already (the label's -inf lands there), and T's entries, clipped to
    # 0, are written out of U below. One clip: every (batch, n) operation is a pass over memory.
    # In place in `others` where the backend can (exp_gaps), exponentiated there unless in float64.
    exp_now = mode == "linear" and not wide
    z = exp_gaps(xp, others, c, -_Z_CLIP * k * tau, k * tau, exponentiate=exp_now)
    del others  # (batch, n) temporaries go before the trees are built: the peak is there
    if wide:
        z = xp.astype(z, xp.float64)
    leaves = xp.exp(z) if mode == "linear" and not exp_now else z
    del z
    # T leaves U (x = 0). The other top-k columns tie with c: z = 0 exactly, x = 1, written as is
    tie = xp.astype(~in_t, leaves.dtype)
    leaves = put_columns(xp, leaves, tie if mode == "linear" else _safe_log(xp, tie), idx)
    a = None
    if scale:
        leaves, a = _row_scaled(xp, leaves, k)
    # (s_y - c) / 2, formed in halves: the same rounding as s_y - c (halving is exact), and no
    # overflow where the scores lie a float maximum apart (the loss, about (c - s_y) / k, is finite)
    half_d_y = take_columns(xp, s, labels[:, None])[:, 0] / 2 - c[:, 0] / 2
    # all k top values, never a slice of them: XLA turns top_k followed by a slice into a full
    # sort. log(1/x_t) < 0 on T, -inf elsewhere; float64 where T's factors multiply U's
    # polynomial in float64 (k entries a row)
    log_w = xp.where(in_t, _scaled(xp, c - vals, k * tau), neg_inf)
    if wide or scale:
        log_w = xp.astype(log_w, xp.float64)
    poly_u = _polynomial(xp, leaves, k, mode, scan, last)
    return half_d_y, idx, poly_u, _top_factors(xp, in_t, log_w, a, mode), a


def _row_scaled(xp, leaves, k):
    """U's leaves ``x`` (``(batch, width)``, this function's own) times ``a = min(1, c / p)`` per
    row, ``c = ROW_SCALE k``, ``p`` the row's sum (at least 1: U holds a leaf tied at c), and
    ``a`` in float64, ``(batch,)``: exactly the factor that multiplied the leaves, which the
    product with T's factors (:func:`_top_factors`) puts back. The leaves of every row then sum
    to at most c, and to c where they are many (:func:`_row_scale_is_exact`). In place on NumPy
    and eager torch."""
    p = xp.sum(leaves, axis=-1, keepdims=True)
    c = ROW_SCALE * k
    a = xp.where(p > c, c / p, 1.0)
    return times_rows(xp, leaves, a), xp.astype(a[:, 0], xp.float64)


def _top_factors(xp, in_t, log_w, scale, mode):
    r"""T's factors :math:`(w_i + \beta t)` as three ``(batch, k)`` arrays ``(a, b, w)``, one
    column per top-k entry, ``(1 + 0 t)`` where an entry is not in T (the k-th, the last, is c:
    never in T, and the chain stops before it). :math:`\beta` is U's factor per row in the
    scaled mode (:func:`_row_scaled`), else 1. ``w`` is 0 outside T. Logs of all three in log
    mode (``w = -inf`` outside T). All k columns, never a slice: XLA turns a slice of top_k's
    results into a full sort (it took JAX's gradient from 2.2 to 38 ms at 256 x 1000)."""
    if mode == "log":
        return xp.where(in_t, log_w, 0.0), xp.where(in_t, 0.0, NEG_INF), log_w
    w = xp.exp(log_w)
    b = xp.astype(in_t, w.dtype)
    return xp.where(in_t, w, 1.0), (b if scale is None else b * scale[:, None]), w


def _times_top(xp, e_u, factors, mode):
    r"""The chain :math:`Z_0 .. Z_{k-1}` of :math:`P_U(t) \prod_{i \in T} (w_i + \beta t)`,
    one factor at a time, truncated at degree k; N and D are the last array's two top
    coefficients (see the module's docstring).

    ``e_u``: :math:`e_1 .. e_k` of U's leaves (logs in log mode). :math:`Z_j` has ``2k - j``
    columns: ``k - 1 - j`` zeros (``-inf``) in front, then degrees ``0 .. k``, so that each
    step :math:`Z_{j+1}[i] = a_j Z_j[i + 1] + b_j Z_j[i]` is two slices of :math:`Z_j` and no
    shifted copy. Every product and sum is of non-negative numbers: nothing cancels, and no
    term that matters falls below the floor of the mode that U's polynomial ran in (every
    factor is at most 1, and N, D >= 1). In the scaled mode the chain runs in float64 on
    :math:`e_j(\beta x_U)`; :math:`N' = \beta^k N` and :math:`D' = \beta^{k-1} D` are at
    least :math:`\beta^m \ge (2k/n)^{k-1}` (their term that takes no w;
    :math:`e_j(\beta x_U) \ge 1`, :func:`_row_scale_is_exact`): the float32 floor times that
    stays normal in float64 for any row shorter than 2^40 at k <= 28, and the cotangents, at
    most :math:`2^{k-1} / \beta^{k-1}`, finite."""
    a, b, _ = factors
    batch, k = e_u.shape
    linear = mode != "log"
    one = full_like_shape(xp, (batch, 1), 1.0 if linear else 0.0, e_u)
    chain = [_between(xp, xp.concat([one, e_u], axis=-1), k - 1, 0, 0.0 if linear else NEG_INF)]  # (batch, 2k)
    for j in range(k - 1):
        z, aj, bj = chain[-1], a[:, j : j + 1], b[:, j : j + 1]
        # each step a boundary for XLA's CPU fusion, which would otherwise copy the whole chain
        # into each consumer: every entry of a step reads two of the one before, so 2^j times over
        nxt = fma(xp, aj * z[:, 1:], bj, z[:, :-1]) if linear else logsumexp_list(xp, [aj + z[:, 1:], bj + z[:, :-1]])
        chain.append(fusion_barrier(xp, nxt))
    return chain


def _between(xp, x, before, after, fill):
    """``x`` (2-D) with ``before`` and ``after`` columns of ``fill`` around it."""
    parts = [full_like_shape(xp, (x.shape[0], size), fill, x) for size in (before, after)]
    parts = [p for p, size in zip((parts[0], x, parts[1]), (before, 1, after)) if size]
    return xp.concat(parts, axis=-1) if len(parts) > 1 else x


def _times_top_backward(xp, chain, factors, mode):
    r"""Reverse mode through :func:`_times_top` for :math:`F = \log N - \log D`:
    :math:`\partial F / \partial e_j(U)` for ``j = 1 .. k`` and :math:`-w_t\, \partial F /
    \partial w_t` for T's ``k`` columns (0 outside T), each ``(batch, ...)``. In log mode
    the two parts of F, :math:`1/N` and :math:`-1/D`, go down apart (each a sum of positive
    terms, as logs): ``((log dN, log dD), (log of T's N part, log of T's D part))``, and
    the caller takes the differences of whole terms.

    The cotangents :math:`H_j` of :math:`Z_j` are kept in ``3k - 1`` columns, ``j`` zeros in
    front of :math:`Z_j`'s own, so that each step down is again two slices:
    :math:`H_j[p] = a_j H_{j+1}[p] + b_j H_{j+1}[p + 1]`."""
    a, b, w = factors
    last = chain[-1]  # (batch, k + 1): degrees 0 .. k
    k = last.shape[-1] - 1
    linear = mode != "log"
    fill = 0.0 if linear else NEG_INF
    if linear:  # -1/D at degree k - 1, 1/N at k
        h = _between(xp, xp.stack([-1.0 / last[:, k - 1], 1.0 / last[:, k]], axis=-1), 2 * k - 2, k - 1, fill)
        grads = []
        for j in range(k - 2, -1, -1):
            grads.append(xp.sum(h[:, j + 1 : 2 * k] * chain[j][:, 1:], axis=-1))
            h = fusion_barrier(xp, fma(xp, a[:, j : j + 1] * h[:, :-1], b[:, j : j + 1], h[:, 1:]))  # as in _times_top
        # the k-th column too (w = 0 there): the top-k's columns whole, as in _top_factors
        d_t = -w * xp.stack([*grads[::-1], xp.zeros_like(grads[0])], axis=-1) if grads else None
        return h[:, k:], d_t
    # log mode: the N part (row 0, -log N at degree k) and the D part (row 1, -log D at degree
    # k - 1) side by side, (batch, 2, 3k - 1)
    h = xp.stack([_between(xp, -last[:, k:], 2 * k - 1, k - 1, fill), _between(xp, -last[:, k - 1 : k], 2 * k - 2, k, fill)], axis=1)
    parts = []
    for j in range(k - 2, -1, -1):
        parts.append(logsumexp(xp, h[:, :, j + 1 : 2 * k] + chain[j][:, None, 1:], axis=-1))  # (batch, 2)
        h = fusion_barrier(xp, logsumexp_list(xp, [a[:, j : j + 1, None] + h[:, :, :-1], b[:, j : j + 1, None] + h[:, :, 1:]]))
    logs_t = xp.stack([*parts[::-1], xp.zeros_like(parts[0])], axis=-1) + w[:, None, :] if parts else None  # (batch, 2, k)
    return (h[:, 0, k:], h[:, 1, k:]), logs_t


def _smooth_forward(xp, s, labels, *, static):
    k, tau, alpha = static
    mode, wide, scan, last, scale = _plan(xp, s, k)
    half_d_y, idx_t, poly_u, factors, a = _forward_parts(xp, s, labels, k, tau, mode, wide, scan, last, scale)
    wide = wide or scale  # from here on: whether the chain (float64 for scaled leaves) is wider than s
    e_u = xp.astype(poly_u[0], xp.float64) if scale else poly_u[0]
    chain = _times_top(xp, e_u, factors, mode)
    # log(N / D) (the chain's N' / D' over a in the scaled mode: N = a^-k N', D = a^(1-k) D')
    top = chain[-1]
    if mode == "log":
        log_nd = top[:, k] - top[:, k - 1]
    else:
        log_nd = xp.log(top[:, k] / (top[:, k - 1] if a is None else top[:, k - 1] * a))
    # L = tau softplus(r), r = alpha / tau + log(N / D) - (s_y - c) / (k tau). tau r is formed
    # without dividing by tau (finite for any finite scores, and accurate near the hinge);
    # r itself only enters through exp(-|r|) and the sigmoid, where clipping it changes nothing.
    tau_r = (alpha + tau * log_nd) - (xp.astype(half_d_y, log_nd.dtype) if wide else half_d_y) / (k / 2)
    r = _scaled(xp, tau_r, tau)
    loss = xp.maximum(tau_r, xp.zeros_like(tau_r)) + tau * xp.log1p(xp.exp(-xp.abs(r)))
    # residuals are distinct arrays (torch.compile): everything else is recomputed from the trees
    residuals = (r, idx_t, *factors, *chain, *poly_u[1])
    return (xp.astype(loss, s.dtype) if wide else loss), residuals


def _smooth_backward(xp, s, args, residuals, g, *, static):
    k, tau, alpha = static
    (labels,) = args
    n = s.shape[-1]
    mode, wide, scan, last, scale = _plan(xp, s, k)
    r, idx_t = residuals[:2]
    factors, chain = residuals[2:5], residuals[5 : 5 + k]
    batch, accelerator = s.shape[0], on_accelerator(s)
    leaves, state_u, _ = _restore(xp, residuals[5 + k :], n, k, batch, mode, scan, accelerator, last)
    wide = wide or scale
    # dL/ds = coef dr/dz, coef = g sigmoid(r) / k, applied to the results, not folded into the
    # cotangents: far past the margin coef is as small as 1e-40, and the cotangents times coef
    # fell below the normal range in the tree before the gradient entries did
    coef = g * sigmoid(xp, r) / k
    coef_b = (xp.astype(coef, chain[0].dtype) if wide else coef)[:, None]  # scaled: coef in float64
    coef_n = xp.astype(coef, s.dtype, copy=False)[:, None]
    # U: d(log N - log D)/d e_j(U), j = 1..k; T: -w_t d(log N - log D)/d w_t (= dr/dz_t)
    cot, d_t = _times_top_backward(xp, chain, factors, mode)
    if mode == "linear":
        d_z = _backprop(xp, leaves, state_u, xp.astype(cot, leaves.dtype) if scale else cot, scan, last)
        d_z = times_rows(xp, xp.astype(d_z, s.dtype) if wide else d_z, coef_n)  # d_z: the tree's new array
    else:  # every term is a fraction (<= 1) of N or D: exponentiate whole terms only
        log_cn, log_cd = cot
        leaves = _tree_layout(xp, leaves, last)
        outside = complement(xp, state_u, k - 1, n, axis=-1 if last else 0)
        d_z = xp.zeros_like(leaves)
        for j in range(1, k + 1):
            log_term = leaves if j == 1 else leaves + outside[j - 2]
            d_z = d_z + (xp.exp(log_term + _per_row(log_cn[:, j - 1], last)) - xp.exp(log_term + _per_row(log_cd[:, j - 1], last)))
        d_z = _tree_layout(xp, d_z, last) * coef_b
        if wide:
            d_z = xp.astype(d_z, s.dtype)
        if d_t is not None:  # w_t (dD/dw_t / D - dN/dw_t / N): whole terms, each a fraction of 1
            d_t = xp.exp(d_t[:, 1, :]) - xp.exp(d_t[:, 0, :])
    if d_t is not None:
        d_t = d_t * coef_b
        d_z = put_columns(xp, d_z, xp.astype(d_t, s.dtype) if wide else d_t, idx_t, add=True)
    return put_columns(xp, d_z, -xp.astype(coef, s.dtype)[:, None], labels[:, None])  # -coef at y (written, not added)


SMOOTH_TOPK_SVM = Op("smooth_topk_svm", _smooth_forward, _smooth_backward, float64_inside=True)


def _hard_forward(xp, s, labels, *, static):
    k, alpha = static
    n = s.shape[-1]
    s_y = take_columns(xp, s, labels[:, None])[:, 0]
    # the k-th largest of the others: values only (the backward finds the classes at it)
    kth = xp.min(top_k_values(xp, xp.where(onehot(xp, labels, n, s), NEG_INF, s), k, ordered=False), axis=-1)
    # (s_k - s_y) / k in halves: the same two roundings (halving is exact), and no overflow where
    # the scores lie a float maximum apart
    loss, active = relu_and_gate(xp, nan_rows(xp, s, alpha + (kth / 2 - s_y / 2) / (k / 2)))
    return loss, (active, kth)


def _hard_backward(xp, s, args, residuals, g, *, static):
    """+coef at the k-th largest of the other classes, shared equally by the classes tied there
    (a subgradient whatever order a backend's top-k gives ties), -coef at y."""
    k, alpha = static
    (labels,) = args
    active, kth = residuals
    coef = (g * active / k)[:, None]
    at_kth = put_columns(xp, xp.astype(s == kth[:, None], s.dtype), xp.zeros_like(coef), labels[:, None])  # y is not an other
    count = xp.sum(at_kth, axis=-1, keepdims=True)  # >= 1: kth is an entry of the others (unless NaN)
    d = times_rows(xp, at_kth, coef / xp.maximum(count, xp.ones_like(count)))
    return put_columns(xp, d, -coef, labels[:, None])


TOPK_SVM = Op("topk_svm", _hard_forward, _hard_backward)

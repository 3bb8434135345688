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
classes tied at :math:`c`, each with :math:`x = 1`). Computing :math:`\log e_k` and
:math:`\log e_{k-1}` separately would instead cancel the large terms the top classes
share (a float32 error of :math:`\epsilon \sum_j |z_{[j]}|`, beyond the contract at spreads of 1e4).

Because :math:`x_U \le 1` and :math:`N, D \ge 1`, no term of :math:`e_j(x_U)` below
:math:`\epsilon / (k\,2^{k-1})` can change the result: when the largest possible value,
:math:`\binom{|U|}{k}`, keeps that floor above the dtype's smallest normal number, the
polynomial of :math:`U` is computed in **linear space** (products and sums, no exp/log per
term); for float32 inputs where float32's range is too narrow, in linear space in float32 on
leaves scaled by a factor per row that the float64 table of logs takes off per degree
(:func:`_row_scaled`), or for k beyond that mode's reach, in linear space in float64; else in
log space (:func:`plan_mode`; shapes and dtype decide, never values). JAX gets float64 for this
whatever the program's ``jax_enable_x64`` (the op's ``float64_inside``). Where linear
space is exact, eager torch takes both polynomials of rows up to about a thousand classes by
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
polynomials; and :math:`-\sum_b w_t\, e_{b-1}(w_{\setminus t})\, \partial(\log N - \log D)/
\partial e_b(w)` at :math:`t \in T`. No switch to the hard loss, no truncated series.
"""

from __future__ import annotations

import math

from .esf import _is_xla, complement, nodes_last_applies, padded_leaves, restore_tree, scan_backprop, scan_leaves, scan_prefix, tree_backprop, tree_levels, tree_residuals, tree_root
from .op import Op
from .ops import NEG_INF, _device, _torch_compiling, arange_like, copy, exp_gaps, float64_available, full_like_shape, fusion_barrier, logsumexp, nan_rows, on_accelerator, onehot, put_columns, relu_and_gate, sigmoid, take_columns, times_rows, top_k, top_k_values

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
    (:func:`~.esf.nodes_last_applies`, XLA and torch on a CPU): both trees, of U and of w, take
    the rows as they are, with no transposed copy. U's leaves are scaled per row
    (:func:`_row_scaled`) in the ``"scaled"`` mode off prefix sums; its tables of logs are float64."""
    # U holds up to n - 1 leaves (every class but y when T is empty): the bound's count
    mode = plan_mode(s.shape[-1] - 1, k, s.dtype == xp.float64, float64_available(xp))
    scan = scan_applies(xp, s, k, mode)
    wide = mode == "linear64" or (scan and s.dtype != xp.float64)
    scale = mode == "scaled" and not scan
    tree_mode = "log" if mode == "log" else "linear"
    last = not scan and s.shape[-1] >= NODES_LAST_MIN and nodes_last_applies(xp, s, s.shape[-1], k, tree_mode)
    last = last and (k < 2 or nodes_last_applies(xp, s, k, k - 1, tree_mode))
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


def _padded_table(xp, table, pad):
    """``(batch, pad + L + pad)`` array of log values, ``-inf`` in the padding, for ``table`` ``(batch, L)``."""
    if pad == 0:
        return table
    fill = full_like_shape(xp, (table.shape[0], pad), NEG_INF, table)
    return xp.concat([fill, table, fill], axis=-1)


def _gather_degrees(xp, table, degrees, pad):
    """``table[b, degrees[b, j]]`` (``-inf`` outside the table) for a table made by
    :func:`_padded_table` with padding ``pad`` and integer ``degrees`` of shape (batch, J)."""
    return take_columns(xp, table, degrees + pad)


def _scaled(xp, diff, scale):
    """``diff / scale`` clipped to ``[-_Z_CLIP, _Z_CLIP]`` (clipped first: the division cannot overflow).

    Two ``where`` rather than ``clip``: array-api-compat's torch ``clip`` inspects its bounds in
    Python, which dynamo cannot trace once ``scale`` is a symbolic float (a tau schedule)."""
    bound = _Z_CLIP * scale
    return xp.where(diff < -bound, -bound, xp.where(diff > bound, bound, diff)) / scale


def _forward_parts(xp, s, labels, k, tau, mode, wide, scan, last, scale):
    """Everything both passes need: m = |T|, (s_y - c) / 2, T's columns, and the polynomials of U and of
    w = 1/x_T (:func:`_polynomial`'s pairs); with a factor ``scale``, U's leaves are ``scale x``."""
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
    in_t = vals > c  # (batch, k): which of the top k are in T
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
    log_a = None
    if scale:
        leaves, log_a = _row_scaled(xp, leaves, k)
    # (s_y - c) / 2, formed in halves: the same rounding as s_y - c (halving is exact), and no
    # overflow where the scores lie a float maximum apart (the loss, about (c - s_y) / k, is finite)
    half_d_y = take_columns(xp, s, labels[:, None])[:, 0] / 2 - c[:, 0] / 2
    # all k top values, never a slice of them: XLA turns top_k followed by a slice into a full
    # sort. The k-th (= c) is not in T: its w is 0 (log w = -inf) and it adds nothing.
    log_w = xp.where(in_t, _scaled(xp, c - vals, k * tau), neg_inf)  # log(1/x_t) < 0 on T, -inf elsewhere
    if wide or scale:  # scaled: k leaves a row; float64 keeps its cotangents, which are up to
        log_w = xp.astype(log_w, xp.float64)  # C(|U|, k) / D, within range
    m = xp.sum(xp.astype(in_t, labels.dtype), axis=-1)
    poly_u = _polynomial(xp, leaves, k, mode, scan, last)
    # w < 1: the same bound makes linear space exact for its polynomial
    poly_w = _polynomial(xp, xp.exp(log_w) if mode == "linear" else log_w, k - 1, mode, scan, last) if k >= 2 else None
    return half_d_y, m, idx, poly_u, poly_w, log_a


def _row_scaled(xp, leaves, k):
    """U's leaves ``x`` (``(batch, width)``, this function's own) times ``a = min(1, c / p)`` per
    row, ``c = ROW_SCALE k``, ``p`` the row's sum (at least 1: U holds a leaf tied at c), and
    ``log a`` in float64, ``(batch,)``: the tables take ``j log a`` off degree j, exactly the a
    that multiplied the leaves. The leaves of every row then sum to at most c, and to c where
    they are many (:func:`_row_scale_is_exact`). In place on NumPy and eager torch."""
    p = xp.sum(leaves, axis=-1, keepdims=True)
    c = ROW_SCALE * k
    a = xp.where(p > c, c / p, 1.0)
    return times_rows(xp, leaves, a), xp.log(xp.astype(a[:, 0], xp.float64))


def _log_e(xp, poly_u, poly_w, mode, zero, log_a):
    """log e_0..e_k of x_U, ``(batch, k + 1)``, and log e_0..e_{k-1} of w, ``(batch, k)``, in
    ``zero``'s dtype; with U's leaves scaled by a per row (``log_a``), j log a taken off each
    degree j."""

    def logs(top):
        top = xp.astype(top, zero.dtype, copy=False)  # float64 tables for scaled leaves, else as is
        return xp.concat([zero[:, None], _safe_log(xp, top) if mode == "linear" else top], axis=-1)

    log_eu = logs(poly_u[0])
    if log_a is not None:
        log_eu = log_eu - _degree_logs(xp, log_eu.shape[-1] - 1, log_a)
    return log_eu, (logs(poly_w[0]) if poly_w is not None else zero[:, None])


def _degree_logs(xp, k, log_a, first=0):
    """``j log a`` for ``j = first .. k``, ``(batch, k + 1 - first)``, for ``log_a`` ``(batch,)``."""
    return (arange_like(xp, k + 1 - first, log_a, dtype=log_a.dtype) + float(first))[None, :] * log_a[:, None]


def _pair_degrees(xp, m, k, first, sign):
    """Per-row degrees ``first + sign * m + b`` and ``first + 1 + sign * m + b`` (``b = 0..k-1``)
    side by side: shape (batch, 2k)."""
    b = arange_like(xp, k, m, dtype=m.dtype)[None, :]
    base = (first + sign * m)[:, None] + b
    return xp.concat([base, base + 1], axis=-1)


def _log_terms(xp, table, degrees, k, pad, shift):
    """Two gathers in one: ``(batch, 2, k)`` log values from :func:`_pair_degrees`, plus ``shift``."""
    got = _gather_degrees(xp, table, degrees, pad)
    return xp.reshape(got, (got.shape[0], 2, k)) + shift


def _smooth_forward(xp, s, labels, *, static):
    k, tau, alpha = static
    mode, wide, scan, last, scale = _plan(xp, s, k)
    half_d_y, m, idx_t, poly_u, poly_w, log_a = _forward_parts(xp, s, labels, k, tau, mode, wide, scan, last, scale)
    # (batch,), in the tables' dtype: the polynomials', float64 where U's leaves were scaled
    zero = xp.zeros_like(poly_u[0][:, 0], dtype=xp.float64 if scale else None)
    wide = wide or scale  # from here on: whether the tables are wider than s
    log_eu, log_ew = _log_e(xp, poly_u, poly_w, mode, zero, log_a)
    # D = sum_b e_b(w) e_{k-1-m+b}(U), N = sum_b e_b(w) e_{k-m+b}(U); e_b(w) = 0 for b > m
    table_u = _padded_table(xp, log_eu, k)
    log_dn = logsumexp(xp, _log_terms(xp, table_u, _pair_degrees(xp, m, k, k - 1, -1), k, k, log_ew[:, None, :]), axis=-1)
    log_d, log_n = log_dn[:, 0], log_dn[:, 1]
    # L = tau softplus(r), r = alpha / tau + log(N / D) - (s_y - c) / (k tau). tau r is formed
    # without dividing by tau (finite for any finite scores, and accurate near the hinge);
    # r itself only enters through exp(-|r|) and the sigmoid, where clipping it changes nothing.
    tau_r = (alpha + tau * (log_n - log_d)) - (xp.astype(half_d_y, zero.dtype) if wide else half_d_y) / (k / 2)
    r = _scaled(xp, tau_r, tau)
    loss = xp.maximum(tau_r, xp.zeros_like(tau_r)) + tau * xp.log1p(xp.exp(-xp.abs(r)))
    # residuals are distinct arrays (torch.compile): everything else is recomputed from the trees
    scaled = (log_a,) if scale else ()
    residuals = (r, log_dn, m, idx_t, table_u, log_ew, *scaled, *poly_u[1], *(poly_w[1] if poly_w is not None else ()))
    return (xp.astype(loss, s.dtype) if wide else loss), residuals


def _smooth_backward(xp, s, args, residuals, g, *, static):
    k, tau, alpha = static
    (labels,) = args
    n = s.shape[-1]
    mode, wide, scan, last, scale = _plan(xp, s, k)
    r, log_dn, m, idx_t, table_u, log_ew = residuals[:6]
    first = 7 if scale else 6  # the trees' arrays after log a, in the scaled mode
    batch, accelerator = s.shape[0], on_accelerator(s)
    leaves, state_u, n_u = _restore(xp, residuals[first:], n, k, batch, mode, scan, accelerator, last)
    shift = -log_dn[:, :, None]  # (batch, 2, 1): log(1/D), log(1/N)
    # dL/ds = coef dr/dz, coef = g sigmoid(r) / k, applied to the trees' results, not folded into
    # their cotangents: far past the margin coef is as small as 1e-40, and the cotangents times
    # coef fell below the normal range in the tree before the gradient entries did
    coef = g * sigmoid(xp, r) / k
    coef_b = (xp.astype(coef, leaves.dtype) if wide else coef)[:, None]  # scaled: coef in float64
    coef_n = xp.astype(coef, s.dtype, copy=False)[:, None]

    # U: d(log N - log D)/d e_j(U) = e_{j-k+m}(w) / N - e_{j-k+1+m}(w) / D, j = 1..k, as logs
    table_w = _padded_table(xp, log_ew, k)
    log_c = _log_terms(xp, table_w, _pair_degrees(xp, m, k, 1 - k, 1), k, k, xp.flip(shift, axis=1))
    if scale:  # d/d e_j(a x_U) = a^-j d/d e_j(x_U)
        log_c = log_c - _degree_logs(xp, k, residuals[6], first=1)[:, None, :]
    log_cn, log_cd = log_c[:, 0, :], log_c[:, 1, :]  # (batch, k)
    if mode == "linear":
        cot = xp.exp(log_cn) - xp.exp(log_cd)
        d_z = _backprop(xp, leaves, state_u, xp.astype(cot, leaves.dtype) if scale else cot, scan, last)
        d_z = times_rows(xp, xp.astype(d_z, s.dtype) if wide else d_z, coef_n)  # d_z: the tree's new array
    else:  # every term is a fraction (<= 1) of N or D: exponentiate whole terms only
        leaves = _tree_layout(xp, leaves, last)
        outside = complement(xp, state_u, k - 1, n, axis=-1 if last else 0)
        d_z = xp.zeros_like(leaves)
        for j in range(1, k + 1):
            log_term = leaves if j == 1 else leaves + outside[j - 2]
            d_z = d_z + (xp.exp(log_term + _per_row(log_cn[:, j - 1], last)) - xp.exp(log_term + _per_row(log_cd[:, j - 1], last)))
        d_z = _tree_layout(xp, d_z, last) * coef_b
        if wide:
            d_z = xp.astype(d_z, s.dtype)

    # T: dr/dz_t = -sum_{b>=1} w_t e_{b-1}(w \ t) (e_{k-m+b}(U) / N - e_{k-1-m+b}(U) / D)
    if k >= 2:
        w, state_w, _ = _restore(xp, residuals[first + n_u :], k, k - 1, batch, mode, scan, accelerator, last)
        log_a = _log_terms(xp, table_u, _pair_degrees(xp, m, k, k - 1, -1), k, k, shift)  # as in the forward
        log_ad, log_an = log_a[:, 0, :], log_a[:, 1, :]
        if mode == "linear":  # w_t sum_b e_{b-1}(w \ t) (A_b - N_b): reverse mode through w's polynomial
            d_t = _backprop(xp, w, state_w, xp.exp(log_ad[:, 1:]) - xp.exp(log_an[:, 1:]), scan, last) * coef_b
        else:
            w = _tree_layout(xp, w, last)
            out_w = complement(xp, state_w, k - 2, k, mode, axis=-1 if last else 0)
            log_comp = [w, *(w + o for o in out_w)]
            d_t = xp.zeros_like(w)
            for b in range(1, k):
                lc = log_comp[b - 1]
                d_t = d_t + (xp.exp(lc + _per_row(log_ad[:, b], last)) - xp.exp(lc + _per_row(log_an[:, b], last)))
            d_t = _tree_layout(xp, d_t, last) * coef_b
        d_z = put_columns(xp, d_z, xp.astype(d_t, s.dtype) if wide or scale else d_t, idx_t, add=True)

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

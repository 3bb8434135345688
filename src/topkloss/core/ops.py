"""Standard-only helpers shared by the losses.

Everything here uses only functions of the Python array API standard, so it runs on
NumPy, CuPy, PyTorch, JAX (also under ``jit``) and array-api-strict. Log-space
helpers never evaluate ``log(0)`` or ``-inf - (-inf)``: no warnings, no NaN.
"""

from __future__ import annotations

import math
import sys

import array_api_compat

NEG_INF = -math.inf


def _device(x):
    """The standard ``x.device``; array-api-compat's lookup where the attribute is missing or
    raises (JAX tracers, NumPy < 2). The attribute first, so torch.compile traces it directly."""
    try:
        return x.device
    except Exception:
        return array_api_compat.device(x)


def on_accelerator(x):
    """Whether ``x`` lives on a GPU or another accelerator: static metadata, never values.

    A traced JAX array has no device yet: JAX's default backend answers for it."""
    module = type(x).__module__
    if module.startswith("cupy"):
        return True
    try:
        dev = _device(x)
    except Exception:
        dev = None
    kind = getattr(dev, "type", None) or getattr(dev, "platform", None)
    if not isinstance(kind, str):
        jax = sys.modules.get("jax")
        return jax is not None and module.startswith("jax") and jax.default_backend() != "cpu"
    return kind not in ("cpu", "meta")


def full_like_shape(xp, shape, value, like):
    """``xp.full`` on the device and in the dtype of ``like``. Under JAX, where ``shape`` is
    ``like``'s but along one axis, a broadcast of ``like``'s first slice there: it keeps
    ``like``'s sharding on the other axes (a batch-sharded array and a replicated fill cannot be
    concatenated in JAX's explicit-sharding mode)."""
    if getattr(xp, "__name__", "") == "jax.numpy" and len(shape) == like.ndim:
        differ = [i for i, (a, b) in enumerate(zip(shape, like.shape)) if a != b]
        if len(differ) <= 1 and all(like.shape[i] > 0 for i in differ):
            first = like[tuple(slice(0, 1) if i in differ else slice(None) for i in range(like.ndim))]
            return xp.broadcast_to(xp.full_like(first, value), shape)
    return xp.full(shape, value, dtype=like.dtype, device=_device(like))


def arange_like(xp, n, like, dtype=None):
    """``xp.arange(n)`` on the device of ``like``."""
    return xp.arange(n, dtype=dtype, device=_device(like))


def logsumexp_list(xp, terms):
    """Element-wise ``log(sum(exp(t) for t in terms))`` of same-shaped arrays.

    Terms may be ``-inf``; the result is ``-inf`` where every term is. Shifted by the
    element-wise maximum, so nothing overflows; all summands are positive, so nothing
    cancels.
    """
    if len(terms) == 1:
        return terms[0]
    m = terms[0]
    for t in terms[1:]:
        m = xp.maximum(m, t)
    finite = xp.isfinite(m)
    shift = xp.where(finite, m, xp.zeros_like(m))
    acc = xp.exp(terms[0] - shift)
    for t in terms[1:]:
        acc = acc + xp.exp(t - shift)
    acc = xp.where(finite, acc, xp.ones_like(acc))
    return xp.where(finite, shift + xp.log(acc), m)


def logsumexp(xp, x, axis=-1, keepdims=False):
    """``log(sum(exp(x), axis))`` along one axis, stable, ``-inf`` for an all ``-inf`` slice."""
    m = xp.max(x, axis=axis, keepdims=True)
    finite = xp.isfinite(m)
    shift = xp.where(finite, m, xp.zeros_like(m))
    acc = xp.sum(xp.exp(x - shift), axis=axis, keepdims=True)
    acc = xp.where(finite, acc, xp.ones_like(acc))
    out = xp.where(finite, shift + xp.log(acc), m)
    return out if keepdims else xp.squeeze(out, axis=axis)


def fma(xp, acc, a, b):
    """``acc + a * b`` (broadcasting). torch: one ``addcmul``, one operation and one pass
    where the standard spelling takes two (eager torch pays a dispatch per operation; the
    product trees are made of these). Elsewhere the standard spelling: XLA fuses it, NumPy
    has no fused form."""
    if getattr(xp, "__name__", "") == "array_api_compat.torch":
        return xp.addcmul(acc, a, b)
    return acc + a * b


FMA_HALVES_MIN = 1 << 16
""":func:`fma_halves` writes in place for halves of at least this many elements: on smaller ones the
extra operations (an empty array, two slices) cost eager torch more than the pass they save."""


def fma_halves(xp, base, first, second, axis=0, stop=None):
    """``concat([base + sum(u * v for u, v in first), base + sum(u * v for u, v in second)])``
    along ``axis`` (0, or -1 for the nodes-last trees of JAX and torch): the two halves of a child level in
    :func:`~.esf.tree_backprop`. With ``stop``, only the first ``stop`` entries along ``axis``
    (at least one half's): the second half's operands are cut before they are combined, so no
    entry past ``stop`` is computed and the result is one contiguous array.

    NumPy and eager torch write each half's last multiply-add into its place in one new array
    (``out=``) when the halves are large (:data:`FMA_HALVES_MIN`), where the standard spelling
    computes both halves and then copies them into the concatenation: one pass over the level
    fewer. Elsewhere (JAX, CuPy, ``torch.compile``, ``torch.func``) the standard spelling, which
    compilers fuse.
    """
    h = base.shape[axis]
    if stop is not None and stop < 2 * h:
        def cut(a):
            return a[: stop - h, ...] if axis == 0 else a[..., : stop - h]

        second = [(cut(u), cut(v)) for u, v in second]
        base_2 = cut(base)
    else:
        base_2, stop = base, 2 * h
    name = getattr(xp, "__name__", "")
    large = math.prod(base.shape) >= FMA_HALVES_MIN
    torch_eager = large and name == "array_api_compat.torch" and _torch_writable(base, *[a for pair in first + second for a in pair])
    if not (torch_eager or (large and name in ("numpy", "array_api_compat.numpy"))):
        halves = []
        for start, pairs in ((base, first), (base_2, second)):
            acc = start
            for u, v in pairs:
                acc = fma(xp, acc, u, v)
            halves.append(acc)
        return xp.concat(halves, axis=axis)
    shape = (stop, *base.shape[1:]) if axis == 0 else (*base.shape[:-1], stop)
    out = xp.empty(shape, dtype=base.dtype, device=_device(base))
    parts = (out[:h, ...], out[h:, ...]) if axis == 0 else (out[..., :h], out[..., h:])
    for part, start, pairs in zip(parts, (base, base_2), (first, second)):
        if not pairs:
            part[...] = start
            continue
        acc = start
        for u, v in pairs[:-1]:
            acc = fma(xp, acc, u, v)
        u, v = pairs[-1]
        if torch_eager:
            sys.modules["torch"].addcmul(acc, u, v, out=part)
        else:
            xp.multiply(u, v, out=part)
            part += acc
    return out


def cumsum(xp, x):
    """The standard ``cumulative_sum`` along the last axis. torch and NumPy: their own ``cumsum``,
    without array-api-compat's wrapper (a namespace lookup per call, which eager torch pays per
    operation)."""
    name = getattr(xp, "__name__", "")
    if name == "array_api_compat.torch":
        return x.cumsum(-1)
    if name in ("numpy", "array_api_compat.numpy"):
        return xp.cumsum(x, axis=-1)
    return xp.cumulative_sum(x, axis=-1)


def clip(xp, x, lo, hi):
    """``min(max(x, lo), hi)`` for Python (or symbolic) numbers ``lo <= hi``: one operation.
    torch: ``clamp`` itself, which takes symbolic floats under ``torch.compile`` (array-api-compat's
    ``clip`` inspects its bounds in Python and fails on them)."""
    if getattr(xp, "__name__", "") == "array_api_compat.torch":
        return xp.clamp(x, lo, hi)
    return xp.clip(x, min=lo, max=hi)


def exp_gaps(xp, x, c, lo, scale, exponentiate=True):
    """``exp(clip(x - c, lo, 0) / scale)`` (without the ``exp`` unless ``exponentiate``), ``c``
    broadcast against ``x``: subtracted before dividing, one rounding each, as the numerical
    contract asks.

    ``x`` must be a temporary the caller owns: NumPy and eager torch compute every step in
    place in it, where the standard spelling writes a new array per step (four of the size of
    ``x``). Elsewhere (JAX, CuPy, ``torch.compile``, ``torch.func``) the standard spelling,
    which compilers fuse into one pass.
    """
    name = getattr(xp, "__name__", "")
    if name == "array_api_compat.torch" and _torch_writable(x, c):
        x.sub_(c).clamp_(lo, 0.0).div_(scale)
        if not exponentiate:
            return x
        return x.exp_()
    if name in ("numpy", "array_api_compat.numpy"):
        np = sys.modules["numpy"]
        np.subtract(x, c, out=x)
        np.clip(x, lo, 0.0, out=x)
        np.divide(x, scale, out=x)
        if not exponentiate:
            return x
        return np.exp(x, out=x)
    z = clip(xp, x - c, lo, 0.0) / scale
    if not exponentiate:
        return z
    return xp.exp(z)


def times_rows(xp, x, v):
    """``x * v`` for a 2-D ``x`` and a ``(batch, 1)`` column ``v`` of its dtype. ``x`` must be a
    temporary the caller owns: NumPy and eager torch multiply in place in it (no second
    ``(batch, n)`` array); elsewhere the standard product."""
    name = getattr(xp, "__name__", "")
    if name == "array_api_compat.torch" and _torch_writable(x, v):
        return x.mul_(v)
    if name in ("numpy", "array_api_compat.numpy"):
        return sys.modules["numpy"].multiply(x, v, out=x)
    return x * v


def fusion_barrier(xp, level):
    """A tree level (a list of arrays, or one array), unchanged: under ``jax.jit`` on a CPU, a
    boundary that XLA's fusion cannot cross. Elsewhere ``level`` itself.

    XLA's CPU fusion copies cheap elementwise producers into each of their consumers. In a
    product tree every coefficient of a level feeds several products of the next, so the lower
    levels were recomputed many times over: ``benchmarks/jax_fusion.py`` times the forward tree
    with and without this boundary. ``lax.optimization_barrier`` is removed before fusion on a
    CPU; a conditional is not. Its predicate reads one element (``isnan``) and both branches
    return the level's values (one multiplies by 1, so XLA keeps the two apart): the result is
    exact for every input, NaN included. Not on accelerators, where a conditional's predicate
    travels to the host, and not outside a trace (eager JAX fuses nothing). Under ``vmap`` the
    conditional becomes a select: correct, without the boundary.
    """
    if getattr(xp, "__name__", "") != "jax.numpy":
        return level
    jax = sys.modules["jax"]
    arrays = level if isinstance(level, list) else [level]
    first = arrays[0] if arrays else None
    if not isinstance(first, jax.core.Tracer) or first.size == 0 or on_accelerator(first) or _jax_sharded(first):
        return level  # sharded in explicit mode: no element can be read without a reduction
    probe = xp.isnan(xp.reshape(first, (-1,))[0])
    out = jax.lax.cond(probe, lambda t: [a * 1 for a in t], lambda t: list(t), list(arrays))
    return out if isinstance(level, list) else out[0]


def softplus(xp, r):
    """``log(1 + exp(r))`` without overflow."""
    return xp.maximum(r, xp.zeros_like(r)) + xp.log1p(xp.exp(-xp.abs(r)))


def sigmoid(xp, r):
    """``1 / (1 + exp(-r))`` without overflow. torch: its own ``sigmoid``, one operation where
    the standard spelling takes nine (eager torch pays a dispatch for each)."""
    if getattr(xp, "__name__", "") == "array_api_compat.torch":
        return xp.sigmoid(r)
    e = xp.exp(-xp.abs(r))
    return xp.where(r >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def onehot(xp, labels, n, like):
    """Boolean ``(batch, n)`` mask, true at each row's label."""
    cols = arange_like(xp, n, like, dtype=labels.dtype)
    return labels[:, None] == cols[None, :]


def nan_rows(xp, x, v):
    """``v`` (``(batch,)``) with NaN where the row of a 2-D ``x`` holds a NaN. The losses that
    select a value of the row need it: a backend's selection may rank a NaN first, last or drop
    it (``topk`` and ``partition`` differ), and a hinge at a NaN is 0, so without it a NaN score
    could give a finite loss that depends on the backend. One reduction over ``x``: its ``max``,
    NaN wherever the row has one (the standard's rule); under XLA, whose CPU ``max`` may pass over
    a NaN, ``any(isnan)`` (one fused pass). Not ``any(isnan)`` everywhere: torch's CPU ``any``
    along rows costs many times its ``amax`` (docs/benchmarks.md, "A NaN check")."""
    if getattr(xp, "__name__", "") == "jax.numpy":
        bad = xp.any(xp.isnan(x), axis=-1)
    else:
        bad = xp.isnan(xp.max(x, axis=-1))
    return xp.where(bad, float("nan"), v)


def per_label(xp, table, labels, mask):
    """``table[labels]`` for a per-class ``table`` ``(n,)``, ``(batch,)``; ``mask`` is
    :func:`onehot` of the labels. Under JAX a masked row sum, which XLA fuses: a gather of a
    replicated table at batch-sharded labels needs an explicit output sharding in JAX's
    explicit-sharding mode. Elsewhere the gather (O(batch))."""
    if getattr(xp, "__name__", "") == "jax.numpy":
        # not pick() of a broadcast table: a replicated (batch, n) operand beside the sharded
        # mask is refused; a (1, n) one broadcasts inside the select
        return xp.sum(xp.where(mask, table[None, :], 0.0), axis=-1)
    return xp.take(table, labels, axis=0)


def relu_and_gate(xp, arg):
    """``(max(0, arg), [arg > 0])`` for a ``(batch,)`` hinge argument, NaN kept in both: the
    loss of a NaN row (:func:`nan_rows`) is NaN, and its gradient gate (1, 0 or NaN) makes the
    whole gradient row NaN. ``maximum`` and a boolean gate would drop it on some backends."""
    zero = xp.zeros_like(arg)
    return xp.where(arg <= 0, zero, arg), xp.where(arg > 0, xp.ones_like(arg), xp.where(arg <= 0, zero, arg))


def pick(xp, x, mask):
    """Sum of ``x`` where ``mask`` along the last axis (a gather written as a masked sum)."""
    return xp.sum(xp.where(mask, x, xp.zeros_like(x)), axis=-1)


def sum_outside(xp, x, mask):
    """Row sums of a 2-D ``x`` over the entries where ``mask`` is false. NumPy: one ``einsum``
    of ``x`` with the complement (no ``where`` pass: ``where`` then ``sum`` is a temporary and
    two passes); elsewhere ``sum(where(mask, 0, x))``, which compilers fuse. Both sum the same
    terms (order aside), so exact zeros stay zeros. For finite ``x`` only (the transition's
    ``e <= 1``): the einsum multiplies the masked entries by zero, and an infinity times zero is NaN."""
    if getattr(xp, "__name__", "") in ("numpy", "array_api_compat.numpy"):
        return xp.einsum("ij,ij->i", x, ~mask)
    return xp.sum(xp.where(mask, 0.0, x), axis=-1)


def scale_rows_where(xp, x, mask, on, off):
    """``x * where(mask, on[:, None], off[:, None])`` for a 2-D ``x`` and per-row ``on``,
    ``off``. NumPy: ``x * off`` then ``x * on`` written over the masked entries (the ufunc's
    ``where=``), the same products without the ``(batch, n)`` temporary of the factors."""
    if getattr(xp, "__name__", "") in ("numpy", "array_api_compat.numpy"):
        out = x * off[:, None]
        xp.multiply(x, on[:, None], out=out, where=mask)
        return out
    return x * xp.where(mask, on[:, None], off[:, None])


def reduce(xp, values, reduction):
    """Apply ``reduction`` (``"mean"``, ``"sum"`` or ``"none"``) to per-sample values.

    The mean of an empty batch is 0 (the empty sum), not NaN. A 0-d array on every backend
    (NumPy's reductions give a NumPy scalar: made an array again).
    """
    if reduction == "none":
        return values
    total = xp.sum(values)
    if reduction == "mean":
        total = total / max(values.shape[0], 1)
    return xp.asarray(total) if getattr(xp, "__name__", "") in _NUMPY_LIKE else total


def reduction_cotangent(xp, values, reduction):
    """Cotangent of the per-sample values for d(reduce(values)) — ones or 1/batch.

    For ``"none"`` it is ones: the gradient returned is that of the sum of the
    per-sample values, i.e. each row's gradient of its own loss.
    """
    g = xp.ones_like(values)
    if reduction == "mean":
        g = g / max(values.shape[0], 1)
    return g


_NUMPY_LIKE = ("numpy", "array_api_compat.numpy", "cupy", "array_api_compat.cupy")
"""Names of the namespaces whose arrays have NumPy's ``partition`` / ``argpartition``."""


_CUPY = ("cupy", "array_api_compat.cupy")


def _partition_top(xp, x, k):
    """NumPy-like backends: a partition of each row of a 2-D ``x`` whose first ``k`` entries are
    its ``k`` largest, the ``k``-th largest at ``[:, k - 1]``.

    NumPy's introselect costs the same from either end: the top of ``partition(x, n - k)``, no
    negated copy. CuPy's partition has a selection kernel only for a small ``kth`` (below 512;
    a larger one sorts the whole row): ``-partition(-x, k - 1)``. ``benchmarks/select_forms.py``
    on an H100 at 640 x 100000, k = 6: 4.7 against 24.0 ms. Negation is exact. Long NumPy
    rows partition only :func:`_grouped_candidates`' entries.
    """
    if getattr(xp, "__name__", "") in _CUPY:
        return -xp.partition(-x, k - 1, axis=-1)[:, :k]
    if _grouped_applies(xp, x, k):
        x = _take_candidates(xp, x, _grouped_candidates(xp, x, k))
    n = x.shape[-1]
    return xp.flip(xp.partition(x, n - k, axis=-1)[:, n - k :], axis=-1)


NUMPY_GROUPED_MIN, TOP_K_GROUP = 1000, 16
"""NumPy selects among candidates (:func:`_grouped_candidates`) in rows of at least
``max(NUMPY_GROUPED_MIN, 4 k TOP_K_GROUP)`` entries, groups of ``TOP_K_GROUP`` and wider (:func:`top_k_group`).
``benchmarks/select_forms.py`` (2-core AMD EPYC, k = 6, ms; ``docs/benchmarks/select-forms.txt``):
values 1.52 -> 0.56 at 256 x 1000, 19.6 -> 3.2 at 256 x 10000, 37.5 -> 7.1 at 64 x 100000
(``partition`` -> ``ops.top_k_values``); with indices 2.72 -> 0.87, 21.2 -> 3.3, 53.8 -> 7.0
(``argpartition`` -> ``ops.top_k``). At 256 x 500 ``partition`` took 0.24 ms against 1.52 ms at
256 x 1000: about three times less per entry."""


TOP_K_GROUP_BALANCE = 4
"""Wider rows take wider groups (:func:`top_k_group`): the largest power of two ``g >=
TOP_K_GROUP`` with ``TOP_K_GROUP_BALANCE * k * g**2 <= n``, which balances the selection among
the ``n / g`` group maxima against the gather and selection of the ``k g`` candidates."""

GROUP_MAXIMA_RESHAPE_MIN = 4000
"""Rows of at least this many entries take their group maxima as one reduction over a reshaped
view; shorter ones as ``group - 1`` elementwise maxima of contiguous slices.
``python benchmarks/select_forms.py --sizes 256x1000,256x2000,256x5000,256x10000,64x100000
--groups 16,32,64,128 --repeat 31`` (2-core AMD EPYC, k = 6, ``ops.top_k``, forms interleaved in
random order; time / the plan's, run with this limit at 2000, so the plan at 256 x 2000 was the
reshaped view): the slices at group 16, the form before, 1.03 / 0.93 / 1.19 /
1.30 / 1.91; the reshaped view at group 16, 1.25 / 1.00 / 0.96 / 1.01 / 1.90, at 32 1.73 / 1.44 /
1.11 / 0.96 / 1.29, at 128 7.61 / 5.37 / 2.36 / 1.91 / 1.05. The slices won at 2000 (0.93 against
1.00) and the view at 5000 (0.96 against 1.19): hence this limit between them. The plan takes
group 64 at 64 x 100000 (:data:`TOP_K_GROUP_BALANCE`) and 16 below."""


def top_k_group(n, k):
    """The group size of :func:`_grouped_candidates` for rows of ``n`` entries and their ``k`` largest."""
    g = TOP_K_GROUP
    while TOP_K_GROUP_BALANCE * k * (2 * g) ** 2 <= n:
        g *= 2
    return g


def _grouped_applies(xp, x, k):
    """Whether NumPy's top ``k`` of the rows of a 2-D ``x`` come from :func:`_grouped_candidates`."""
    return (
        getattr(xp, "__name__", "") in ("numpy", "array_api_compat.numpy")
        and x.ndim == 2
        and x.shape[-1] >= max(NUMPY_GROUPED_MIN, 4 * k * TOP_K_GROUP)
    )


def _grouped_candidates(xp, x, k, group=None):
    """NumPy and eager torch, long rows: the columns ``(batch, k * group + tail)`` of a set of
    candidates that holds the multiset of each row's ``k`` largest values, from one pass of group
    maxima and a selection among them (NumPy's ``argpartition``, torch's ``topk``).

    With ``m = n // group`` (``group``: :func:`top_k_group`, :data:`TORCH_TOP_K_GROUP` on
    torch), group ``c`` holds columns ``c, c + m, ..., c + (group - 1) m`` (its maxima are
    elementwise maxima of ``group`` contiguous slices, taken as one reduction over axis 1 of the
    ``(batch, group, m)`` view in wide rows); the last ``n - group m`` columns are candidates
    always. The candidates are the ``k`` groups of largest maxima. If one of a row's top ``k``
    entries is in no chosen group, each chosen group's maximum is at least its value: the
    candidates hold ``k`` entries at least as large, so their ``i``-th largest is the row's
    ``i``-th largest for every ``i <= k`` (NaN, which NumPy's selections and torch's ``topk``
    rank largest, also wins its group's maximum)."""
    batch, n = x.shape
    torch = getattr(xp, "__name__", "") == "array_api_compat.torch"
    group = (TORCH_TOP_K_GROUP if torch else top_k_group(n, k)) if group is None else group
    m = n // group
    if torch or n >= GROUP_MAXIMA_RESHAPE_MIN:  # (batch, group, m): a view of the first group * m columns
        maxima = xp.max(xp.reshape(x[:, : group * m], (batch, group, m)), axis=1)
    else:
        maxima = xp.asarray(x[:, :m], copy=True)
        for j in range(1, group):
            xp.maximum(maxima, x[:, j * m : (j + 1) * m], out=maxima)
    if torch:  # the k groups of largest maxima (torch.topk ranks a NaN maximum first, as NumPy)
        first = top_k(xp, maxima, k)[1]
    else:
        first = xp.argpartition(maxima, m - k, axis=-1)[:, m - k :]
    cols = xp.reshape(first[:, :, None] + m * arange_like(xp, group, x, dtype=first.dtype)[None, None, :], (batch, k * group))
    if group * m < n:
        tail = arange_like(xp, n - group * m, x, dtype=cols.dtype) + group * m
        cols = xp.concat([cols, xp.broadcast_to(tail[None, :], (batch, n - group * m))], axis=-1)
    return cols


def _take_candidates(xp, x, cols):
    if getattr(xp, "__name__", "") == "array_api_compat.torch":
        return _take_along_last(xp, x, cols)
    return x[xp.arange(x.shape[0])[:, None], cols]


TORCH_GROUPED_MIN, TORCH_TOP_K_GROUP, TORCH_GROUPED_PER_K = 5000, 8, 40
"""Eager torch on a CPU selects the top ``k`` of rows of at least ``max(TORCH_GROUPED_MIN,
TORCH_GROUPED_PER_K * k * TORCH_TOP_K_GROUP)`` entries among :func:`_grouped_candidates`, groups of
``TORCH_TOP_K_GROUP``. ``python benchmarks/torch_top_k.py --groups 4,8,16,32`` (2-core CPU,
``docs/benchmarks/torch-top-k.txt``, time / ``torch.topk``'s): groups of 8 were the fastest or
within 0.05 of it from 256 x 5000 up; 0.52 / 0.78 at 256 x 10000 (k = 5 / 20), 0.37 / 0.44 at 64 x
100000; at 256 x 5000 0.69 for k = 5 but 1.04 for k = 20, hence the bound in k (an earlier run: 0.78
and 1.05); 0.77 to 1.03 at 256 x 3000 (an earlier run: 0.86 to 1.17, and one before it 0.94 to
1.57), 1.29 to 1.52 at 256 x 2000 (the first run)."""


def _torch_grouped_top_k(xp, x, k, group=None):
    """Eager torch's top ``k`` (values, indices) of the rows of a 2-D ``x``, selected among
    :func:`_grouped_candidates` (groups of ``group``, default :data:`TORCH_TOP_K_GROUP`)."""
    cols = _grouped_candidates(xp, x, k, group)
    values, at = top_k(xp, _take_along_last(xp, x, cols), k)
    return values, _take_along_last(xp, cols, at)


def _torch_grouped(xp, x, k):
    """Whether eager torch's top ``k`` of the 2-D ``x`` selects among :func:`_grouped_candidates`:
    on a CPU, not while ``torch.compile`` traces, long rows."""
    if x.shape[-1] < max(TORCH_GROUPED_MIN, TORCH_GROUPED_PER_K * k * TORCH_TOP_K_GROUP):
        return False
    return not (on_accelerator(x) or _torch_compiling())


def kth_largest(xp, x, k):
    """The ``k``-th largest entry of each row of a 2-D ``x`` (counted with multiplicity), shape
    ``(batch, 1)``: a value, so it does not depend on how a backend orders ties."""
    if getattr(xp, "__name__", "") in _NUMPY_LIKE:  # values only: one O(n) partition, 3-7x faster
        return _partition_top(xp, x, k)[:, k - 1 : k]
    # the min of the top k, not a slice of it: XLA rewrites top_k followed by a slice into a
    # full sort (150x slower on CPU)
    return xp.min(top_k(xp, x, k)[0], axis=-1, keepdims=True)


def top_k_values(xp, x, k, ordered=True):
    """The ``k`` largest entries of each row of a 2-D ``x`` (values only): largest first, or with
    ``ordered=False`` the k-th largest at ``[:, k - 1]`` and the others before it in no
    particular order (enough for their max, min or sum)."""
    if getattr(xp, "__name__", "") in _NUMPY_LIKE:  # partition: 4x faster than argpartition
        top = _partition_top(xp, x, k)
        return xp.sort(top, axis=-1, descending=True) if ordered else top
    return top_k(xp, x, k)[0]


def top_k_and_mask(xp, x, k):
    """``(values, mask)``: the ``k`` largest entries of each row of a 2-D ``x`` (in any order)
    and :func:`topk_mask`. JAX's ``top_k`` puts the lower index first among equal values (once
    -0.0 is +0.0), so its indices already follow the tie rule: one top-k and a compare against
    its indices there; elsewhere the values, then the mask from them."""
    if getattr(xp, "__name__", "") == "jax.numpy":
        # top_k orders -0.0 below +0.0, where the tie rule sees one value: zeros made +0.0 first
        # (a select XLA keeps; x + 0.0 it may fold away)
        values, indices = top_k(xp, xp.where(x == 0, 0.0, x), k)
        # a fused compare against the k indices, not a scatter: a scatter needs an explicit
        # output sharding in JAX's explicit-sharding mode
        cols = arange_like(xp, x.shape[-1], x, dtype=indices.dtype)
        return values, xp.any(indices[:, :, None] == cols, axis=1)
    values = top_k_values(xp, x, k, ordered=False)
    return values, topk_mask(xp, x, k, values=values)


def topk_mask(xp, x, k, values=None):
    """Boolean mask of the ``k`` largest entries of each row of a 2-D ``x``, exactly ``k`` per row.

    Ties at the k-th value are broken towards the lowest index (the order of a stable
    descending sort), on every backend. ``values``: the row's k largest values, if known, the
    k-th largest at ``[:, k - 1]`` (as :func:`top_k_values` and :func:`top_k` return them).
    With the k-th value ``t`` and ``room`` (what the entries above ``t`` leave of ``k``),
    the entries equal to ``t`` are in up to the ``room``-th from the left: a running count
    of them. Under JAX a second top-k finds that index instead (XLA runs a cumulative sum in
    O(n log n) on a CPU; ``top_k_and_mask`` needs neither there).
    """
    n = x.shape[-1]
    values = top_k_values(xp, x, k, ordered=False) if values is None else values
    if getattr(xp, "__name__", "") == "jax.numpy" or _torch_compiling():
        # a slice of top_k makes XLA sort the row; under torch.compile on CUDA, Inductor
        # (torch 2.11) fails to generate the running count's split scan (n >= 10000) reading it
        t = xp.min(values, axis=-1, keepdims=True)
    else:  # a reduction over k entries a row costs NumPy about as much as one over the whole row
        t = values[:, k - 1 : k]
    if eager_host(xp, x):
        # every row holds at least k entries >= t; exactly k in all rows (no tie across the
        # boundary anywhere: the common case) makes them the mask. One compare and one count
        # instead of the running count's six passes (a NaN row counts fewer: the general form)
        at_least = x >= t
        if bool(xp.count_nonzero(at_least) == k * x.shape[0]):
            return at_least
    room = k - xp.sum(xp.astype(values > t, xp.int32), axis=-1, keepdims=True)  # 1 <= room <= #ties
    at = x == t
    if getattr(xp, "__name__", "") != "jax.numpy":
        # int32 throughout: an int64 running count is many times slower in NumPy and torch on a CPU
        count = xp.cumulative_sum(xp.astype(at, xp.int32), axis=-1, dtype=xp.int32)
        return (x > t) | (at & (count <= xp.astype(room, xp.int32)))
    neg_col = -arange_like(xp, n, x, dtype=x.dtype)[None, :]  # exact: 2n < 2**24
    # minus the indices of the ties first, lowest first; distinct keys everywhere
    lowest = top_k_values(xp, xp.where(at, neg_col, neg_col - n), k)
    rank = arange_like(xp, k, x, dtype=room.dtype)[None, :]
    last = xp.min(xp.where(rank < room, lowest, math.inf), axis=-1, keepdims=True)
    return (x > t) | (at & (neg_col >= last))  # boolean temporaries: a quarter of the memory


def _native_top_k(xp):
    """A backend's own top-k (values, indices) along the last axis, or None.

    array-api-extra's pattern: delegate where a backend has a faster op, keep the
    standard-only fallback beside it. Frameworks are reached through the namespace or
    ``sys.modules``, never imported here.
    """
    import sys

    # by the namespace's name (array-api-compat's is_*_namespace are lru_cached, which dynamo warns about)
    name = getattr(xp, "__name__", "")
    if name == "array_api_compat.torch":

        def top_k(x, k):
            if x.ndim == 2 and _torch_grouped(xp, x, k):
                return _torch_grouped_top_k(xp, x, k)
            if x.ndim == 2 and _torch_pads(xp, x, k):
                # -inf after the row: ATen's heap never lets one in (it admits only entries strictly
                # larger than its k-th, and the row's own n >= k entries fill it first). torch's
                # own pad: one operation, half the time of a concat with a filled array
                x = sys.modules["torch"].nn.functional.pad(x, (0, TORCH_HEAP_TOP_K * k - x.shape[1]), value=NEG_INF)
            return xp.topk(x, k, dim=-1)

        return top_k
    if name == "jax.numpy":
        lax = sys.modules["jax"].lax

        def top_k(x, k):
            if x.ndim == 2 and blocked_top_k_applies(x.shape[-1], k) and not on_accelerator(x):
                # XLA's CPU max may pass over a NaN, which top_k ranks first: with a NaN anywhere
                # (the sum is NaN then; also for +inf and -inf together) the plain top_k
                exact = lambda x: tuple(lax.top_k(x, k))
                return lax.cond(xp.isnan(xp.sum(x)), exact, lambda x: _blocked_top_k(xp, lax, x, k), x)
            return lax.top_k(x, k)

        return top_k
    if name in _CUPY:
        return lambda x, k: (_top_k_by_rank if x.size >= CUPY_RANK_TOP_K_MIN else _argpartition_top_k)(xp, x, k)
    if name in _NUMPY_LIKE:
        return lambda x, k: _argpartition_top_k(xp, x, k)
    return None


TORCH_HEAP_TOP_K = 64
"""ATen's CPU top-k selects a row of ``n`` entries with a heap of ``k`` (``std::partial_sort``)
when ``TORCH_HEAP_TOP_K * k <= n``, else with ``std::nth_element``, whose branches on random
data are unpredictable: ``benchmarks/torch_top_k.py`` (torch 2.13, 2-core CPU) read 0.27 ms for
256 x 100 at k = 5 as is, 0.15 ms padded to 320 entries (``docs/benchmarks/torch-top-k.txt``)."""

TORCH_TOP_K_GRAIN = 32768
"""ATen runs a CPU top-k on up to ``torch.get_num_threads()`` threads, in tasks of whole rows
holding at least this many entries: 256 rows of 128 entries take one thread, of 129 two
(``benchmarks/torch_top_k.py --sizes 256x128,256x129 --ks 5``, as is: 0.35 against 0.19 ms on
two threads)."""

TORCH_NTH_ELEMENT_COST = 2.3
"""What one entry costs ATen's ``nth_element`` top-k against one entry of the heap, on random
data (``benchmarks/torch_top_k.py --threads 1``: 2.1-2.5 at k = 2, 5 and 10, n = 100-300,
each form's time per entry)."""


def torch_pads_top_k(rows, n, k, threads=1):
    """Whether torch on a CPU pads rows of ``n`` entries with ``-inf`` to ``TORCH_HEAP_TOP_K * k``
    before their top ``k``: a cost model of ATen's two selections (:data:`TORCH_HEAP_TOP_K`)
    and their threads (:data:`TORCH_TOP_K_GRAIN`). Static: shapes and the thread count.
    ``benchmarks/torch_top_k.py`` prints both forms' times beside this answer."""
    heap = TORCH_HEAP_TOP_K * k
    if not k <= n < heap:
        return False

    def cost(width, per_entry):  # per thread: the rows split into tasks of TORCH_TOP_K_GRAIN entries
        tasks = min(threads, max(1, -(-rows * width // TORCH_TOP_K_GRAIN)))
        return per_entry * width / tasks

    return cost(heap, 1.0) < cost(n, TORCH_NTH_ELEMENT_COST)


def _torch_pads(xp, x, k):
    """Whether torch's top-k of the 2-D ``x`` pads its rows (:func:`torch_pads_top_k`): eager, on a
    CPU, floating point (``-inf`` is the padding)."""
    if on_accelerator(x) or _torch_compiling() or not xp.isdtype(x.dtype, "real floating"):
        return False
    return torch_pads_top_k(x.shape[0], x.shape[1], k, sys.modules["torch"].get_num_threads())


def _argpartition_top_k(xp, x, k):
    """NumPy-like top-k with indices: the k largest at the end of ``argpartition(x, n - k)`` (no
    negated copy of x to select from), then those k sorted, largest first. Long NumPy rows
    select among :func:`_grouped_candidates` and map the chosen places back to columns."""
    cols = _grouped_candidates(xp, x, k) if _grouped_applies(xp, x, k) else None
    if cols is not None:
        x = _take_candidates(xp, x, cols)
    n = x.shape[-1]
    idx = xp.argpartition(x, n - k, axis=-1)[..., n - k :]
    vals = xp.take_along_axis(x, idx, axis=-1)
    if cols is not None:
        idx = xp.take_along_axis(cols, idx, axis=-1)
    order = xp.argsort(-vals, axis=-1, stable=True)
    return xp.take_along_axis(vals, order, axis=-1), xp.take_along_axis(idx, order, axis=-1)


CUPY_RANK_TOP_K_MIN = 1 << 22
"""Arrays of at least this many entries take :func:`_top_k_by_rank` on CuPy, smaller ones
``argpartition`` (a full argsort there). ``benchmarks/select_forms.py`` on an H100, k = 6:
3.12 against 1.55 ms at 64 x 100000, 1.49 against 1.57 ms at 256 x 10000 (``argpartition``
against ``_top_k_by_rank``, which costs about 1.5 ms of launches at any size)."""


def _top_k_by_rank(xp, x, k):
    """CuPy's top-k with indices without sorting rows (its ``argpartition`` is a full argsort):
    the columns of the mask of the k largest (:func:`topk_mask`, from the values of one
    partition, :func:`mask_columns`), then their k values sorted, ties lowest index first.
    ``benchmarks/select_forms.py`` times the forms it avoids."""
    idx = mask_columns(xp, topk_mask(xp, x, k, values=_partition_top(xp, x, k)), k)
    vals = xp.take_along_axis(x, idx, axis=-1)
    order = xp.argsort(-vals, axis=-1, stable=True)
    return xp.take_along_axis(vals, order, axis=-1), xp.take_along_axis(idx, order, axis=-1)


def mask_columns(xp, mask, k):
    """The columns of the ``k`` true entries of each row of a 2-D boolean ``mask`` (exactly ``k``
    per row), in increasing order: a running count ranks them, and each writes its column to
    its rank (:func:`put_columns`; every false entry to a spare column 0, the one slot where
    writes collide, which is dropped). NumPy-like backends and torch only (a native write)."""
    rank = xp.cumulative_sum(xp.astype(mask, xp.int32), axis=-1, dtype=xp.int32)
    dt = xp.__array_namespace_info__().default_dtypes()["indexing"]
    slot = xp.astype(xp.where(mask, rank, xp.zeros_like(rank)), dt)
    cols = xp.broadcast_to(arange_like(xp, mask.shape[-1], mask, dtype=dt)[None, :], mask.shape)
    out = xp.zeros((mask.shape[0], k + 1), dtype=dt, device=_device(mask))
    return put_columns(xp, out, cols, slot)[:, 1:]


TOP_K_BLOCK = 16
"""Entries per block of :func:`_blocked_top_k`."""

BLOCKED_TOP_K_MIN = 2048
"""Rows at least this long (and of ``16 k`` blocks) take :func:`_blocked_top_k` under JAX on a
CPU. ``benchmarks/jax_top_k.py`` times both forms (``docs/benchmarks/jax-top-k.txt``: jax 0.10.2,
2-core CPU, k = 5): 1.47 against 0.86 ms at 256 x 3000, 4.36 against 1.32 ms at 256 x 10000 and
10.21 against 2.13 ms at 64 x 100000."""


def blocked_top_k_applies(n, k):
    """Whether rows of ``n`` entries take :func:`_blocked_top_k` for the top ``k`` (JAX, CPU)."""
    return n >= max(BLOCKED_TOP_K_MIN, 16 * k * TOP_K_BLOCK)


def _blocked_top_k(xp, lax, x, k, block=TOP_K_BLOCK):
    """``lax.top_k(x, k)`` of a 2-D ``x``, the same values and indices (ties: lower index first),
    from one pass of block maxima and two small top-k's.

    The row's first ``n - n % block`` entries form blocks of ``block``. An entry among the row's
    top k (ordered by value, then lower index first) lies in one of the ``k`` blocks whose
    maxima come first in that order: each block ahead of its own holds an entry ahead of it,
    and at most ``k - 1`` entries are. Those blocks, in index order, and the short tail are the
    candidates; the top k of the candidates, kept in the row's order, is the answer. For arrays
    without NaN: XLA's CPU ``max`` may pass over one (jax 0.10.2), which ``top_k`` ranks first
    (:func:`_native_top_k` sends such arrays to ``lax.top_k``).
    """
    batch, n = x.shape
    nb = n // block
    maxima = xp.max(xp.reshape(x[:, : nb * block], (batch, nb, block)), axis=-1)
    first = xp.sort(lax.top_k(maxima, k)[1], axis=-1)  # the k blocks, in index order
    cols = xp.reshape(first[:, :, None] * block + xp.arange(block, dtype=first.dtype), (batch, k * block))
    if nb * block < n:  # the tail (fewer than ``block`` entries): always a candidate
        # built from ``first`` (0 * first + columns) so that it shares the rows' sharding: JAX's
        # explicit-sharding mode concatenates only arrays sharded alike
        tail = first[:, :1] * 0 + xp.arange(nb * block, n, dtype=cols.dtype)
        cols = xp.concat([cols, tail], axis=-1)
    values, at = lax.top_k(xp.take_along_axis(x, cols, axis=-1), k)
    return values, xp.take_along_axis(cols, at, axis=-1)


def top_k_standard(xp, x, k):
    """The k largest entries along the last axis, largest first, with their indices.

    Standard-only: ``k`` rounds of max / mask / argmax, O(nk). Ties go to the lowest index. Each
    round takes the lowest column not taken yet that holds the largest value left (NaN first),
    so the k columns are distinct even where the rest of a row is -inf (an argmax of the
    values alone would return a taken column again).
    """
    taken = xp.zeros(x.shape, dtype=xp.bool, device=_device(x))
    cols = None
    values, indices = [], []
    for _ in range(k):
        key = xp.where(taken, NEG_INF, x)
        top = xp.max(key, axis=-1, keepdims=True)
        best = ((key == top) | xp.isnan(key)) & ~taken
        i = xp.argmax(xp.astype(best, xp.int8), axis=-1)  # the first true: the lowest such column
        if cols is None:
            cols = arange_like(xp, x.shape[-1], x, dtype=i.dtype)[None, :]
        values.append(top[:, 0])
        indices.append(i)
        taken = taken | (cols == i[:, None])
    return xp.stack(values, axis=-1), xp.stack(indices, axis=-1)


def top_k(xp, x, k, native=True):
    """``(values, indices)`` of the ``k >= 1`` largest entries of each row of ``x`` (2-D), largest first."""
    impl = _native_top_k(xp) if native else None
    return impl(x, k) if impl is not None else top_k_standard(xp, x, k)


def take_rows(xp, x, index):
    """``x[b, index[b]]`` for every row ``b`` of a 2-D ``x``: shape ``(batch,)``, O(batch).

    ``take_along_axis`` with the index cast to the namespace's default indexing dtype
    (torch gathers only with int64).
    """
    if getattr(xp, "__name__", "") in _NUMPY_LIKE:
        # integer-array indexing: NumPy's take_along_axis builds its index arrays in Python
        return x[xp.arange(x.shape[0]), index]
    dt = xp.__array_namespace_info__().default_dtypes()["indexing"]
    index = index if index.dtype == dt else xp.astype(index, dt)
    return _take_along_last(xp, x, index[:, None])[:, 0]


def take_columns(xp, x, indices):
    """``x[b, indices[b, j]]`` for a 2-D ``x`` and 2-D integer ``indices`` (``take_along_axis``)."""
    return _take_along_last(xp, x, indices)


def _take_along_last(xp, x, indices):
    """``take_along_axis`` on the last axis for non-negative ``indices``. torch: ``gather``, one
    operation, where array-api-compat's wrapper adds three to map negative indices (a compare,
    an add, a where), which ours never are, and torch's own ``take_along_dim`` two (it wraps
    the indices with a ``remainder``); ``take_along_dim`` where the leading shapes differ
    (it broadcasts, ``gather`` does not)."""
    if getattr(xp, "__name__", "") == "array_api_compat.torch":
        if indices.dtype != xp.int64:
            indices = xp.astype(indices, xp.int64)  # torch gathers with int64 indices only
        if indices.shape[:-1] == x.shape[:-1]:
            return x.gather(-1, indices)
        return xp.take_along_dim(x, indices, dim=-1)
    return xp.take_along_axis(x, indices, axis=-1)


def _torch_compiling():
    """Whether ``torch.compile`` is tracing this call (torch looked up, never imported)."""
    is_compiling = getattr(getattr(sys.modules.get("torch"), "compiler", None), "is_compiling", None)
    return is_compiling is not None and bool(is_compiling())


def eager_host(xp, x):
    """Whether ``x`` is a concrete array on the host that code may branch on: NumPy, or eager
    torch on a CPU (not while ``torch.compile`` or ``torch.jit.trace`` traces, not under
    ``torch.func`` transforms).
    Static (the namespace, the device, the tracing state): no value is read. Never JAX (traced
    under ``jit``), never an accelerator (a branch on a value would wait for the device)."""
    name = getattr(xp, "__name__", "")
    if name in ("numpy", "array_api_compat.numpy"):
        return True
    if name != "array_api_compat.torch" or _torch_compiling() or x.device.type != "cpu":  # not meta either
        return False
    torch = sys.modules["torch"]
    return not (torch.jit.is_tracing() or torch._C._functorch.is_functorch_wrapped_tensor(x))


def _torch_writable(base, *others):
    """Whether eager torch may write into ``base``: not while ``torch.compile`` traces (the graph
    is functional anyway), nor under ``torch.func`` transforms (a batched index cannot be written
    into an unbatched base), nor where autograd records ``base``."""
    if _torch_compiling() or base.requires_grad:
        return False
    wrapped = sys.modules["torch"]._C._functorch.is_functorch_wrapped_tensor
    return not any(wrapped(a) for a in (base, *others))


def copy(xp, x):
    """A new array equal to ``x``, for :func:`put_columns` to write into. torch: ``clone``
    (array-api-compat's ``asarray`` makes ``torch.compile`` warn about its caches)."""
    if getattr(xp, "__name__", "") == "array_api_compat.torch":
        return x.clone()
    return xp.asarray(x, copy=True)


def _jax_sharded(x):
    """Whether the JAX array or tracer ``x`` is typed as sharded along a mesh axis (JAX's
    explicit-sharding mode; under automatic sharding its type names no axis). False on a JAX
    without ``jax.typeof`` (older than explicit sharding)."""
    typeof = getattr(sys.modules["jax"], "typeof", None)
    spec = getattr(getattr(typeof(x), "sharding", None), "spec", ()) if typeof is not None else ()
    return any(axis is not None for axis in spec)


def _jax_explicit_out(base):
    """``{"out_sharding": base's sharding}`` where ``base`` is typed as sharded, else ``{}``: a
    scatter into it needs its output sharding spelled out in JAX's explicit-sharding mode."""
    return {"out_sharding": sys.modules["jax"].typeof(base).sharding} if _jax_sharded(base) else {}


def put_columns(xp, base, values, indices, add=False):
    """``base`` with ``values[:, j]`` written (``add=True``: added) at column ``indices[:, j]``
    of each row; the indices of one row must be distinct.

    ``base`` must be a temporary the caller owns: NumPy, CuPy and eager torch write into it (no
    second ``(batch, n)`` array; torch returns a new array under ``torch.compile`` and
    ``torch.func`` transforms); JAX returns a new array (in place under ``jit``); elsewhere a
    standard-only masked sum over the j's.
    """
    name = getattr(xp, "__name__", "")
    if name == "array_api_compat.torch":
        idx = indices if indices.dtype == xp.int64 else xp.astype(indices, xp.int64)  # astype copies
        if _torch_writable(base, values, idx):  # in place: no copy of the (batch, n) base
            return base.scatter_add_(-1, idx, values) if add else base.scatter_(-1, idx, values)
        return base.scatter_add(-1, idx, values) if add else base.scatter(-1, idx, values)
    if name == "jax.numpy":
        if indices.shape[-1] == 1:
            # one column: a compare and a select, which XLA fuses with the op that made base.
            # A scatter's row indices (an arange, replicated) would meet batch-sharded column
            # indices in one array, which JAX's explicit-sharding mode refuses
            hit = arange_like(xp, base.shape[-1], base, dtype=indices.dtype)[None, :] == indices
            return xp.where(hit, base + values if add else values, base)
        at = base.at[xp.arange(base.shape[0])[:, None], indices]
        kw = _jax_explicit_out(base)
        return at.add(values, **kw) if add else at.set(values, **kw)
    if name in _NUMPY_LIKE:  # integer-array indexing (put_along_axis builds its index arrays in Python)
        rows = xp.arange(base.shape[0])[:, None]
        if add:
            base[rows, indices] += values  # distinct indices: no entry is written twice
        else:
            base[rows, indices] = values
        return base
    cols = arange_like(xp, base.shape[-1], base, dtype=indices.dtype)[None, :]
    for j in range(indices.shape[-1]):
        hit = cols == indices[:, j : j + 1]
        base = xp.where(hit, base + values[:, j : j + 1] if add else values[:, j : j + 1], base)
    return base


def put_labels(xp, base, values, labels):
    """``base`` with ``values[b]`` written at column ``labels[b]`` of each row ``b``: O(batch)
    writes into a temporary the caller owns (:func:`put_columns`), where a one-hot mask and a
    ``where`` take two passes over ``(batch, n)``. Under JAX the mask and the ``where``: XLA
    fuses them into one pass, and a scatter needs an explicit output sharding in JAX's
    explicit-sharding mode."""
    if getattr(xp, "__name__", "") == "jax.numpy":
        return xp.where(onehot(xp, labels, base.shape[-1], base), values[:, None], base)
    return put_columns(xp, base, values[:, None], labels[:, None])


def float64_available(xp):
    """Whether ``xp`` computes in float64 (JAX only with ``jax_enable_x64``, which the JAX adapter
    turns on while it traces an op with ``float64_inside``). Static: no array is read."""
    import sys

    if getattr(xp, "__name__", "") == "jax.numpy":
        return bool(sys.modules["jax"].config.read("jax_enable_x64"))
    return hasattr(xp, "float64")

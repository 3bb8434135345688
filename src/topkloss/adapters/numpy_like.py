"""NumPy, CuPy, array-api-strict, Dask (and any other array-API library): no autograd.

The value is the core's forward; gradients come from ``topkloss.value_and_grad``, which
calls the same core backward.

Dask arrays are lazy: the core builds a task graph, chunk by chunk along the batch, and
nothing is computed until ``.compute()``. array-api-compat's Dask namespace lacks
``take_along_axis`` (array API 2024.12), its ``clip`` materialises scalar bounds as
full-size single chunks, and its ``concat`` keeps every input's chunks (the product trees
concatenate two halves per level on the way back: one-column chunks at the leaves);
:func:`namespace` hands the core a namespace that fixes all three. The label range of a Dask array is checked inside the graph, when its chunks
are computed (:func:`check_lazily`).
"""

from __future__ import annotations

import functools
import types

from array_api_compat import array_namespace, is_dask_array, is_lazy_array


def namespace(*arrays):
    xp = array_namespace(*arrays)
    if any(is_dask_array(a) for a in arrays):
        return _dask_namespace(xp)
    return xp


def apply(op, static, x, *args):
    return op.forward(namespace(x), x, *args, static=static)[0]


def is_concrete(x):
    return not is_lazy_array(x)


def device(x):
    from array_api_compat import device as _device

    return _device(x)


def check_lazily(x, check):
    """``x`` with ``check(block)`` run on every chunk when it is computed (Dask); else ``x``.

    ``check`` raises on a bad chunk, so the error surfaces at ``.compute()``, with no extra
    pass over the data.
    """
    if not is_dask_array(x):
        return x

    def checked(block):
        check(block)
        return block

    return x.map_blocks(checked, dtype=x.dtype, meta=x._meta)


class _Namespace(types.ModuleType):
    """A namespace module with a few functions added; the rest is looked up in ``base``."""

    def __init__(self, base, **extra):
        super().__init__(base.__name__, base.__doc__)
        self._base = base
        for name, fn in extra.items():
            setattr(self, name, fn)

    def __getattr__(self, name):
        return getattr(self._base, name)


@functools.cache
def _dask_namespace(base):
    return _Namespace(
        base,
        take_along_axis=_dask_take_along_axis,
        clip=functools.partial(_dask_clip, base),
        concat=functools.partial(_dask_concat, base),
    )


def _dask_concat(base, arrays, /, *, axis=0):
    """``concat``, in one chunk along ``axis`` where every input is one chunk along it.

    Dask keeps each input's chunks: the backward of a product tree concatenates the two halves
    of every level along the node axis, level after level, so a gradient of ``n`` classes came
    out in ``n`` one-column chunks (``n`` tasks a row block). Arrays chunked along ``axis``
    (the batch) keep their chunks."""
    out = base.concat(arrays, axis=axis)
    if axis is None:
        return out
    axis = axis % out.ndim
    if len(out.chunks[axis]) > 1 and all(len(a.chunks[axis]) == 1 for a in arrays):
        out = out.rechunk({axis: -1})
    return out


def _dask_clip(base, x, /, min=None, max=None):
    """``clip`` with scalar bounds, element by element: array-api-compat's Dask ``clip``
    broadcasts the bounds to the full shape as single-chunk arrays, one task holding as
    much memory as all the scores."""
    import dask.array as da

    if isinstance(min, (int, float, type(None))) and isinstance(max, (int, float, type(None))):
        if min is None and max is None:
            return x
        out = da.clip(x, min, max)
        return out if out.dtype == x.dtype else out.astype(x.dtype)
    return base.clip(x, min=min, max=max)


def _dask_take_along_axis(x, indices, /, *, axis=-1):
    """``take_along_axis`` for Dask: each chunk of ``x`` with the matching chunk of ``indices``.

    Both are put in one chunk along ``axis`` (a row of scores fits in memory; the batch
    stays chunked), then gathered block by block.
    """
    import dask.array as da

    if x.ndim != indices.ndim:
        raise ValueError(f"take_along_axis: x and indices need the same number of axes; got {x.ndim} and {indices.ndim}")
    axis = axis % x.ndim
    x = x.rechunk({axis: -1})
    chunks = tuple(-1 if d == axis else c for d, c in enumerate(x.chunks))
    indices = indices.rechunk(chunks)
    block_xp = array_namespace(x._meta)
    out_chunks = tuple(indices.shape[axis] if d == axis else c for d, c in enumerate(x.chunks))
    out_chunks = tuple((c,) if d == axis else c for d, c in enumerate(out_chunks))
    return da.map_blocks(
        lambda xb, ib: block_xp.take_along_axis(xb, ib, axis=axis), x, indices, chunks=out_chunks, dtype=x.dtype,
        meta=x._meta,
    )

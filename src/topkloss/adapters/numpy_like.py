"""NumPy, CuPy, array-api-strict (and any other array-API library): no autograd.

The value is the core's forward; gradients come from ``topkloss.value_and_grad``, which
calls the same core backward.
"""

from __future__ import annotations

from array_api_compat import array_namespace, is_lazy_array


def namespace(*arrays):
    return array_namespace(*arrays)


def apply(op, static, x, *args):
    return op.forward(array_namespace(x), x, *args, static=static)[0]


def is_concrete(x):
    return not is_lazy_array(x)


def device(x):
    from array_api_compat import device as _device

    return _device(x)

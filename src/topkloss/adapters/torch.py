"""PyTorch: one ``torch.autograd.Function`` per core op.

``forward`` takes no ctx and ``setup_context`` saves the residuals, so the function works
with ``loss.backward()``, ``torch.func`` (``generate_vmap_rule``), ``gradcheck`` and
``torch.compile(fullgraph=True)``. The residuals travel as extra, non-differentiable
outputs. The classes are made when this module is imported (dynamo cannot trace a class
definition), for every op in the core's registry.
"""

from __future__ import annotations

import inspect

import array_api_compat.torch as xp
import torch

from ..core.op import REGISTRY


def _make_function(op):
    forward, backward = op.forward, op.backward  # plain functions: dynamo can trace these

    class _Function(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x, static, *args):
            out, residuals = forward(xp, x, *args, static=static)
            # an output may not be an input: save an alias instead
            return (out, *(r.detach() if r is x else r for r in residuals))

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, static, *args = inputs
            residuals = output[1:]
            ctx.static = static
            ctx.n_args = len(args)
            ctx.mark_non_differentiable(*residuals)
            ctx.set_materialize_grads(False)  # no zero-filled cotangents for the residual outputs
            ctx.save_for_backward(x, *args, *residuals)

        @staticmethod
        def backward(ctx, g, *_):
            if g is None:  # an undefined output gradient: the input gets none either
                return (None, None, *([None] * ctx.n_args))
            x, *rest = ctx.saved_tensors
            args, residuals = tuple(rest[: ctx.n_args]), tuple(rest[ctx.n_args :])
            dx = backward(xp, x, args, residuals, g, static=ctx.static)
            return (dx, None, *([None] * ctx.n_args))

    _Function.__name__ = _Function.__qualname__ = f"{op.name}_function"
    # Function.apply binds its arguments to forward's signature on every call (for
    # setup_context); inspect.signature reads __signature__ first: computed once here
    _Function.forward.__signature__ = inspect.signature(_Function.forward)
    return _Function


_FUNCTIONS = {op: _make_function(op) for op in REGISTRY}


def namespace(*arrays):
    return xp


def apply(op, static, x, *args):
    if not (torch.is_grad_enabled() and x.requires_grad):
        # nothing to differentiate: the forward alone. (Dynamo mis-binds ``*args`` when it
        # inlines a Function's forward without grad, failing with two or more extra arrays.)
        return op.forward(xp, x, *args, static=static)[0]
    fn = _FUNCTIONS.get(op)
    if fn is None:  # an op created after this module was imported (eager only)
        fn = _FUNCTIONS[op] = _make_function(op)
    return fn.apply(x, static, *args)[0]


def is_concrete(x):
    if torch.compiler.is_compiling():
        return False
    return not torch._C._functorch.is_functorch_wrapped_tensor(x) and x.device.type != "meta"


def device(x):
    return x.device

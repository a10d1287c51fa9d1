"""Each layer's parameters updated as soon as the backward is done with them.

A training step runs the backward from the loss down, layer by layer, and then the
optimizer's update over every parameter. But once layer k has computed dL/dx (the last
time the step reads its weight) and its own dL/dW and dL/db, nothing else in the step
reads or writes its parameters: they can be updated at once, while the layers below
compute their gradients. In a CUDA graph those updates go to a stream of their own, so
the GPU runs layer k's update beside the backward of the layers below it, and only the
first layer's update is left after the backward (3 layers; time runs to the right)::

    one update at the end        main:    dx_3   dx_2
                                 side:    dW_3   dW_2   dW_1
                                 main:                         upd_3 upd_2 upd_1

    an update per layer          main:    dx_3   dx_2
                                 side:    dW_3   dW_2   dW_1
                                 update:         upd_3  upd_2  upd_1

(dx_k: layer k's dL/dx, on the stream the backward runs on; dW_k: its dL/dW and dL/db,
on the gradient streams of ``nograd.nn.grad_stream``; upd_k: the update of its
parameters, which waits for both.)

Whether it pays depends on the update: on an H100 it saved SGD on the MLP
784-1024-1024-10 a few us of kernel time, but made Adam's step slower (each part of
the update is a separate set of kernels: Adam's ten lines each split in two), so
``GraphedTrainStep`` runs it only when asked (``update_per_layer=True``);
docs/benchmarks.md has the figures.

The numbers are the same: every update rule is elementwise, so updating a group's
tensors in several calls gives, bit for bit, what one call gives.

``backward_updating_each_layer`` runs a ``Sequential``'s backward child by child (as
``Sequential.backward`` does) and calls ``update`` with each child's parameters right
after that child's backward. It applies when ``updates_per_layer_apply(model)``: the
model is a ``Sequential`` whose backward is Sequential's own, and no parameter belongs
to two children (a shared weight is read again by the other child's backward).
``GraphedTrainStep(..., update_per_layer=True)`` uses it inside its capture.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet

import torch
from torch import Tensor

from nograd.nn import grad_stream, hooks
from nograd.nn.container import Sequential
from nograd.nn.module import Module
from nograd.nn.parameter import Parameter

Update = Callable[[AbstractSet[Parameter]], None]  # update just these parameters


def updates_per_layer_apply(model: Module) -> bool:
    """Whether ``backward_updating_each_layer`` can run ``model``'s backward.

    It must be a ``Sequential`` with Sequential's own ``backward`` (the loop this module
    runs in its place) and no backward hooks of its own (which that loop would skip;
    its children's still run), and each parameter must belong to one child only. What this
    cannot see: a module that reads another module's weight without holding it (neither
    as a parameter nor as a child) would read the updated weight in its backward.
    """
    if not isinstance(model, Sequential) or type(model).backward is not Sequential.backward:
        return False
    if hooks.has_backward_hooks(model):
        return False
    owners: set[int] = set()
    for child in model:
        params = {id(param) for param in child.parameters()}
        if params & owners:
            return False
        owners |= params
    return True


def backward_updating_each_layer(
    model: Sequential, grad_output: Tensor, update: Update, stream: torch.cuda.Stream | None
) -> set[Parameter]:
    """``model.backward(grad_output)``, with each child's parameters updated after its backward.

    With ``stream``, each update runs there, after the current stream's work so far (the
    child's dL/dx: its weight may change now) and after the gradient streams', if in
    use (``grad_stream.sides()``: the child's dL/dW and dL/db). The caller joins
    ``stream`` before anything reads the parameters. Without it, each update runs at
    once, in order (the same numbers; the CPU tests check them so).

    Returns the parameters passed to ``update``: those with a gradient.
    """
    updated: set[Parameter] = set()
    for child in model.backward_order():  # each use's saved tensors in place
        grad_output = child.backward(grad_output)  # dL/d(in_k) = dL/d(out_{k-1})
        params = {param for param in child.parameters() if param.grad is not None}
        if not params:
            continue
        if stream is None:
            update(params)
        else:
            stream.wait_stream(torch.cuda.current_stream(stream.device))  # dL/dx is done
            for side in grad_stream.sides():
                stream.wait_stream(side)  # dL/dW and dL/db are done
            for param in params:
                assert param.grad is not None
                param.grad.record_stream(stream)  # made on another stream, read on this one
            with torch.cuda.stream(stream):
                update(params)
        updated |= params
    return updated

"""Parameter gradients on side CUDA streams, so that a captured step has branches.

In a backward pass, each layer's dL/dx feeds the backward of the layer below it: that
chain is the step's critical path. dL/dW and dL/db feed only the optimizer, at the end.
A GPU runs the kernels of one stream one after the other, so on one stream the chain
also waits for every dL/dW. With the parameter gradients on side streams, they run
beside it: the small matrix products of a small network each fill only a few of the
GPU's multiprocessors, and the step gets shorter. dL/db, a sum over the batch, gets a
stream of its own, so that the chain of dL/dW does not wait for it either: on the MLP
784-1024-1024-10 the three sums were about a quarter of that chain on an H100.

``GraphedTrainStep`` does this inside its capture only. There the fork (a side stream
waits for the current one) and the join (the current stream waits for the sides) become
edges of the graph and cost nothing per replay. An eager step keeps one stream: there
the CPU's launches set the pace, not the GPU, and each fork would add work on the CPU.

What the capture runs::

    with parameter_grads_on_side_stream(stream, bias_stream):  # dL/dW, dL/db go there
        model.backward(loss_fn.backward())
    optimizer.step()                                           # after the join

How a layer takes part (``Linear.backward`` does)::

    stream = grad_stream.side  # None, except inside parameter_grads_on_side_stream()
    if stream is None:
        self.weight.accumulate_grad(matmul.mm(g.t(), x))  # dL/dW = g^T x
        self.bias.accumulate_grad(g.sum(0))  # dL/db = sum_n g_n
    else:
        with grad_stream.branch(stream, g, x):  # g and x: the tensors the branch reads
            self._accumulate_weight_grad(g, x)  # the same dL/dW, on the side stream
        with grad_stream.branch(grad_stream.bias_side or stream, g):
            self._accumulate_bias_grad(g)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

# The streams that parameter gradients go to, or None: everything on the current stream.
side: torch.cuda.Stream | None = None  # dL/dW (and any parameter gradient but a bias's)
bias_side: torch.cuda.Stream | None = None  # dL/db: the sums over the batch


@contextlib.contextmanager
def parameter_grads_on_side_stream(
    stream: torch.cuda.Stream, bias_stream: torch.cuda.Stream | None = None
) -> Iterator[None]:
    """Within the block, layers compute parameter gradients on ``stream``.

    With ``bias_stream``, dL/db goes there instead, beside dL/dW: then neither chain of
    gradients waits for the other. On exit the current stream waits for both (the
    join), so whatever comes next on it, the optimizer's update, sees every gradient.
    """
    global side, bias_side
    current = torch.cuda.current_stream(stream.device)
    side, bias_side = stream, bias_stream or stream
    try:
        yield
    finally:
        side = bias_side = None
        current.wait_stream(stream)  # join: the update starts after the last dL/dW...
        if bias_stream is not None:
            current.wait_stream(bias_stream)  # ...and the last dL/db


def sides() -> list[torch.cuda.Stream]:
    """The streams that parameter gradients go to now (none outside a capture)."""
    if side is None:
        return []
    return [side] if bias_side is None or bias_side is side else [side, bias_side]


@contextlib.contextmanager
def branch(stream: torch.cuda.Stream, *reads: Tensor) -> Iterator[None]:
    """Run the block on ``stream``, after the current stream's work so far (the fork).

    ``reads`` are the tensors the block reads that the current stream made: each is
    marked as in use by ``stream``, so that torch's allocator does not hand its memory
    to a new tensor of the current stream while the block may still read it.
    """
    stream.wait_stream(torch.cuda.current_stream(stream.device))  # fork: g and x are ready
    for tensor in reads:
        tensor.record_stream(stream)
    with torch.cuda.stream(stream):
        yield

"""Parameter gradients on a second CUDA stream, so that a captured step has two branches.

In a backward pass, each layer's dL/dx feeds the backward of the layer below it: that
chain is the step's critical path. dL/dW and dL/db feed only the optimizer, at the end.
A GPU runs the kernels of one stream one after the other, so on one stream the chain
also waits for every dL/dW. With the parameter gradients on a second stream, the two
run side by side: the small matrix products of a small network each fill only a few of
the GPU's multiprocessors, and the step gets shorter.

``GraphedTrainStep`` does this inside its capture only. There the fork (the side stream
waits for the current one) and the join (the current stream waits for the side) become
edges of the graph and cost nothing per replay. An eager step keeps one stream: there
the CPU's launches set the pace, not the GPU, and each fork would add work on the CPU.

What the capture runs::

    with parameter_grads_on_side_stream(stream):   # layers put dL/dW, dL/db on stream
        model.backward(loss_fn.backward())
    optimizer.step()                               # after the join

How a layer takes part (``Linear.backward`` does)::

    stream = grad_stream.side  # None, except inside parameter_grads_on_side_stream()
    if stream is None:
        self._accumulate_grads(g, x)
    else:
        with grad_stream.branch(stream, g, x):  # g and x: the tensors the branch reads
            self._accumulate_grads(g, x)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

# The stream that parameter gradients go to, or None: everything on the current stream.
side: torch.cuda.Stream | None = None


@contextlib.contextmanager
def parameter_grads_on_side_stream(stream: torch.cuda.Stream) -> Iterator[None]:
    """Within the block, layers compute parameter gradients on ``stream``.

    On exit the current stream waits for ``stream`` (the join), so whatever comes next
    on it, the optimizer's update, sees every gradient.
    """
    global side
    current = torch.cuda.current_stream(stream.device)
    side = stream
    try:
        yield
    finally:
        side = None
        current.wait_stream(stream)  # join: the update starts after the last dL/dW


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

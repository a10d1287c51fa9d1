"""ATen's kernels that have no ``torch.*`` function, as plain functions.

Several backward passes call the very kernels torch's autograd calls, for PyTorch's
numbers to the bit: ``threshold_backward`` (ReLU), ``nll_loss_forward`` and
``nll_loss_backward`` (the cross-entropy), ``native_layer_norm_backward`` and others.
They live under ``torch.ops.aten``, where each is an ``OpOverload`` object whose
``__call__`` only forwards its arguments to the compiled operator.

That forwarding is a Python function call: about 0.2 us at every call, and a small
network's training step makes five of them (three ReLUs and the loss), 1 us of a
70 us step on the reference network. ``kernel`` returns the compiled operator itself:
the same dispatcher, the same kernel, the same numbers, without that frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch._ops import OpOverload


def kernel(op: OpOverload) -> Callable[..., Any]:
    """``op``'s compiled operator, called as ``op`` is (``op.__call__`` calls it).

    Looked up once, when a module is imported: ``torch.ops`` resolves names slowly.
    Falls back to ``op`` itself if a torch ever stores the operator elsewhere.
    """
    compiled: Callable[..., Any] = getattr(op, "_op", op)
    return compiled

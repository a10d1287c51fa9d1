"""LogSoftmax: the log of a softmax, computed without forming the softmax."""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.activations import along_dim, softmax_dim
from nograd.nn.module import Module

# torch's kernel for the backward, looked up once, as torch.ops resolves names slowly
_log_softmax_backward = aten.kernel(torch.ops.aten._log_softmax_backward_data.default)


class LogSoftmax(Module):
    """Log-softmax along ``dim``, y_i = x_i - log(sum_j exp(x_j)).

    ``torch.log_softmax`` subtracts the maximum m first, y_i = x_i - m - log(sum_j
    exp(x_j - m)), so inputs of +-1000 stay finite, and y keeps its precision where
    softmax rounds to 0 (log(softmax(x)) would be -inf there).

    The derivative reads off the output, since exp(y) is the softmax:
    dy_i/dx_k = 1[i = k] - exp(y_k), so dL/dx_k = dL/dy_k - exp(y_k) sum_i dL/dy_i.
    Forward and backward are torch's (``torch.log_softmax`` and the kernel of its
    backward, which rounds exp(y) * sum once, in a fused multiply-add, and sums in its
    own order), so outputs and gradients are torch's to the bit.

    Args:
        dim: the dimension along which exp(y) sums to 1. None (the default, as in
            torch) picks it from the input at every forward, as torch does and with
            torch's warning that this is deprecated: dim 0 for inputs of 0, 1 or 3
            dimensions (one sample, or a (C, H, W) image), dim 1 for any other.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        y = along_dim(self, self.dim, torch.log_softmax, x)  # (x - max) - log sum exp(x - max)
        self.saved["y"] = y  # the backward needs only the output: exp(y) is the softmax
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        y = self._saved_for(grad_output, "y")
        dim = softmax_dim(self.dim, y.dim())
        # dL/dx = dL/dy - exp(y) * sum(dL/dy, dim)
        grad_input: Tensor = _log_softmax_backward(grad_output, y, dim, y.dtype)
        return grad_input

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

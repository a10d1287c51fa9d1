"""Smooth rectifiers, SiLU and Softplus: curves that bend where ReLU has a kink.

Both run torch's own elementwise kernels (aten's silu, softplus and their backward
functions), with the formula they evaluate written next to each call. A composition
of torch's public ops gives the same numbers to within an ulp or two of their scale,
never to the bit: each kernel evaluates exp and log1p with vectorised code of its
own, and computes float16 and bfloat16 in float32. With the kernels, outputs and
gradients are torch's to the bit in every dtype (tested on the CPU; on a GPU the
calls reach torch's CUDA kernels themselves).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.module import Module

# torch's elementwise kernels, looked up once, as torch.ops resolves names slowly
_silu = aten.kernel(torch.ops.aten.silu.default)
_silu_ = aten.kernel(torch.ops.aten.silu_.default)
_silu_backward = aten.kernel(torch.ops.aten.silu_backward.default)
_softplus = aten.kernel(torch.ops.aten.softplus.default)
_softplus_backward = aten.kernel(torch.ops.aten.softplus_backward.default)

# Above these values of z = beta x, log(1 + exp(z)) = z + exp(-z) rounds to z, and its
# slope sigmoid(z) to 1: 20 in float32 (in which float16 and bfloat16 are computed), 40
# in float64. exp(z) is then at most 2e17, far from overflowing.
_ROUNDS_TO_X_ABOVE = {torch.float64: 40.0}
_ROUNDS_TO_X_ABOVE_FLOAT32 = 20.0


class SiLU(Module):
    """Sigmoid linear unit (swish), y = x * sigmoid(x), applied elementwise.

    Its derivative, with s = sigmoid(x), is dy/dx = s + x s (1 - s) = s (1 + x (1 - s)).
    Outputs and gradients are torch's to the bit (its own kernels). Inputs of +-1000
    give y = -0 and 1000, with slopes 0 and 1.

    Args:
        inplace: overwrite the input with the output, as ``torch.nn.SiLU`` does. The
            backward needs x, which is then gone, so the forward keeps a copy of it,
            as torch's autograd does.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            self.saved["x"] = x.clone()  # y is not invertible (it dips below 0): x is kept
            y: Tensor = _silu_(x)  # y = x * sigmoid(x), written over x
        else:
            self.saved["x"] = x
            y = _silu(x)  # y = x * sigmoid(x)
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        x = self._saved_for(grad_output, "x")
        # dL/dx = dL/dy * s * (1 + x * (1 - s)), s = sigmoid(x)
        grad_input: Tensor = _silu_backward(grad_output, x)
        return grad_input

    def overwrites_input(self) -> bool:
        return self.inplace

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""  # shown only when True, as in torch


class Softplus(Module):
    """Softplus, y = log(1 + exp(beta x)) / beta, and y = x where beta x > threshold.

    A smooth ReLU, whose derivative is a sigmoid: dy/dx = sigmoid(beta x) =
    exp(beta x) / (exp(beta x) + 1), and 1 where beta x > threshold. Far above 0,
    log(1 + exp(beta x)) / beta is x + exp(-beta x) / beta, x to within rounding, so
    torch returns x itself above the threshold, and no exp overflows at x = 1000.

    Outputs and gradients are torch's to the bit (its own kernels) whenever threshold
    <= 20 (the default) in float32, float16 and bfloat16, or <= 40 in float64. A higher
    threshold is lowered to those values: above them torch's formula rounds to x, and
    its gradient to dL/dy, anyway (to within an ulp), while its exp(beta x) overflows
    for beta x > 88 (709 in float64), giving inf and a NaN gradient, and its
    dL/dy * exp(beta x) overflows sooner, for a large dL/dy.

    Args:
        beta: the sharpness; as beta grows, softplus tends to ReLU.
        threshold: above this value of beta x, y = x.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        self.saved["x"] = x
        # y = x if beta x > threshold else log1p(exp(beta x)) / beta
        y: Tensor = _softplus(x, self.beta, self._threshold_for(x))
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        x = self._saved_for(grad_output, "x")
        # dL/dx = dL/dy if beta x > threshold else dL/dy * z / (z + 1), z = exp(beta x)
        grad_input: Tensor = _softplus_backward(grad_output, x, self.beta, self._threshold_for(x))
        return grad_input

    def _threshold_for(self, x: Tensor) -> float:
        """``threshold``, lowered to where softplus rounds to x in x's dtype (see above)."""
        rounds_to_x = _ROUNDS_TO_X_ABOVE.get(x.dtype, _ROUNDS_TO_X_ABOVE_FLOAT32)
        return min(self.threshold, rounds_to_x)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"

"""Layer normalization: each sample normalised over its own last dimensions.

The forward is ``torch.native_layer_norm``, the op ``torch.nn.LayerNorm`` runs, so the
output and the saved mean and 1/std are torch's bits. The backward is ATen's
``native_layer_norm_backward``, the kernel torch's autograd runs, with the formulas it
evaluates written beside the call: written out in Python the same sums round in
another order, and the gradients would differ from torch's in the last bit.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from numbers import Integral

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.module import NO_INPUT_GRAD, Module
from nograd.nn.parameter import Parameter, wants_grad

# ATen's gradient of layer norm, looked up once: torch.ops resolves names slowly
_native_layer_norm_backward = aten.kernel(torch.ops.aten.native_layer_norm_backward.default)


def _sizes(normalized_shape: int | Iterable[int]) -> tuple[int, ...]:
    """normalized_shape as torch reads it: an integer is one size, else an iterable of them.

    Bools are refused, as torch's tensor sizes refuse them, though Python counts them ints.
    """
    try:
        sizes = (
            (normalized_shape,)
            if isinstance(normalized_shape, (int, Integral))  # numpy's integers are Integral
            else tuple(normalized_shape)
        )
        if any(isinstance(size, bool) for size in sizes):
            raise TypeError
        return tuple(operator.index(size) for size in sizes)
    except TypeError:
        raise TypeError(
            f"LayerNorm: expected normalized_shape to be an int or a sequence of ints, "
            f"got {normalized_shape!r}"
        ) from None


class LayerNorm(Module):
    """Layer norm, y = (x - mean) / sqrt(var + eps) * w + b over the last dimensions.

    mean and var (biased: divided by D, not D - 1) are taken over the last
    ``len(normalized_shape)`` dimensions of each sample, D numbers in all; w and b
    have shape ``normalized_shape``, initialised to ones and zeros as in torch.
    Unlike batch norm it keeps no running statistics and behaves alike in training
    and evaluation.

    Args:
        normalized_shape: the shape of the trailing dimensions normalised over, an
            int for the last dimension alone.
        eps: added to the variance, so that a constant input divides by sqrt(eps).
        elementwise_affine: whether to learn w and b (else y = x_hat).
        bias: whether to learn b (with ``elementwise_affine``).
        device: where to allocate the parameters.
        dtype: their floating-point type (default: torch's default dtype).

    Shape:
        input: (*, *normalized_shape) -> output: the same shape
    """

    weight: Parameter | None
    bias: Parameter | None

    def __init__(
        self,
        normalized_shape: int | Sequence[int] | torch.Size,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        shape = _sizes(normalized_shape)
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(torch.empty(shape, device=device, dtype=dtype))
            self.register_parameter(
                "bias", Parameter(torch.empty(shape, device=device, dtype=dtype)) if bias else None
            )
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """w = 1 and b = 0: at first the layer only normalises, as in torch."""
        if self.weight is not None:
            self.weight.data.fill_(1)
        if self.bias is not None:
            self.bias.data.zero_()

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        try:
            # y, and per sample the mean and rstd = 1 / sqrt(var + eps) the backward needs
            y, mean, rstd = torch.native_layer_norm(
                x, self.normalized_shape, weight, bias, self.eps
            )
        except RuntimeError as error:  # our explanation runs only after torch refused
            raise self._mismatch(x) or error from None
        self.saved["x"], self.saved["mean"], self.saved["rstd"] = x, mean, rstd
        return y

    def _mismatch(self, x: Tensor) -> Exception | None:
        """The clear error for an input whose trailing dimensions are not normalized_shape."""
        count = len(self.normalized_shape)
        if x.dim() < count or tuple(x.shape[x.dim() - count :]) != self.normalized_shape:
            return ValueError(
                f"{self._describe()}: expected input of shape (*, "
                f"{', '.join(map(str, self.normalized_shape))}), got {tuple(x.shape)}"
            )
        return None

    def backward(self, grad_output: Tensor) -> Tensor:
        x = self._saved_for(grad_output, "x")
        mean, rstd = self.saved["mean"], self.saved["rstd"]
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        # With g = dL/dy, x_hat = (x - mean) * rstd and D = the numbers per sample
        # (sums over those D numbers for dL/dx, over all leading dimensions for w, b):
        #   dL/dx = rstd / D * (D * g w - sum(g w) - x_hat * sum(g w * x_hat))
        #   dL/dw = sum g * x_hat
        #   dL/db = sum g
        # ATen's kernel, as torch's autograd calls it; the mask skips what is not wanted
        mask = [self.needs_input_grad, wants_grad(self.weight), wants_grad(self.bias)]
        grad_input, grad_weight, grad_bias = _native_layer_norm_backward(
            grad_output, x, self.normalized_shape, mean, rstd, weight, bias, mask
        )
        if self.weight is not None:
            self.weight.accumulate_grad(grad_weight)  # dL/dw = sum g * x_hat
        if self.bias is not None:
            self.bias.accumulate_grad(grad_bias)  # dL/db = sum g
        if not self.needs_input_grad:
            return NO_INPUT_GRAD
        return grad_input  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )

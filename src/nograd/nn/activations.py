"""Activation functions, each with its derivative written out by hand.

Where the derivative can be read off the output (ReLU, Tanh, Sigmoid, Softmax), the
forward saves y instead of x: the next layer keeps y alive anyway, so x can be freed.
Derivatives at the kinks follow PyTorch: ReLU'(0) = 0, LeakyReLU'(0) = negative_slope,
ELU'(0) = alpha.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.constants import HALF_DTYPES, one_like, scalar
from nograd.nn.module import Module

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)  # the tanh approximation of GELU
_KAPPA = 0.044715
_K3 = _SQRT_2_OVER_PI * _KAPPA  # the coefficient of x^3 in u
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)  # the standard normal density at 0
_MINUS_SQRT_HALF = -math.sqrt(0.5)  # Phi(x) = erfc(-x / sqrt(2)) / 2
# dL/dy * 1[y > threshold] in one kernel; looked up once, as torch.ops resolves names slowly
_threshold_backward = aten.kernel(torch.ops.aten.threshold_backward.default)
# torch's own backward kernels, which Tanh and Sigmoid call for half types (see there)
_tanh_backward = aten.kernel(torch.ops.aten.tanh_backward.default)
_sigmoid_backward = aten.kernel(torch.ops.aten.sigmoid_backward.default)


@functools.lru_cache(maxsize=64)
def _is_zero_in(slope: float, dtype: torch.dtype) -> bool:
    """Whether x * slope is 0 * x for ``dtype`` (slope 0, or too small for the dtype).

    Asked of inf * slope itself, so that it holds in the precision torch multiplies in.
    """
    if not dtype.is_floating_point:
        return False  # no inf to multiply
    return bool(torch.tensor(math.inf, dtype=dtype).mul(slope).isnan())


def _inplace_repr(inplace: bool, first: bool = False) -> str:
    """The ``inplace`` part of ``extra_repr``, shown only when True, as in PyTorch."""
    if not inplace:
        return ""
    return "inplace=True" if first else ", inplace=True"


class ReLU(Module):
    """Rectified linear unit, y = max(0, x), applied elementwise.

    Args:
        inplace: overwrite the input with the output, as ``torch.nn.ReLU`` does.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        y = x.relu_() if self.inplace else x.relu()  # y > 0 exactly where x > 0
        self.saved["y"] = y
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        y = self.saved.get("y")  # _saved_for's two checks, without its call (the hot path)
        if y is None or grad_output.shape != y.shape:
            raise self._backward_error(grad_output, y)
        # dL/dx = dL/dy * 1[y > 0], in one fused kernel instead of a compare and a multiply
        grad_input: Tensor = _threshold_backward(grad_output, y, 0)
        return grad_input

    def overwrites_input(self) -> bool:
        return self.inplace

    def extra_repr(self) -> str:
        return _inplace_repr(self.inplace, first=True)


class Tanh(Module):
    """Hyperbolic tangent, y = tanh(x), applied elementwise.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def forward(self, x: Tensor) -> Tensor:
        y = torch.tanh(x)
        self.saved["y"] = y  # the backward needs only the output
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        y = self._saved_for(grad_output, "y")
        if y.dtype in HALF_DTYPES:
            # torch computes float16 and bfloat16 in float32 and rounds once (on the CPU
            # and on a GPU): its own kernel has those bits
            grad_input: Tensor = _tanh_backward(grad_output, y)  # dL/dx = dL/dy * (1 - y^2)
            return grad_input
        # 1 - y^2 rounded once (a fused multiply-add), as in torch's own tanh_backward
        one_minus_y2 = torch.addcmul(one_like(y), y, y, value=-1)
        return grad_output * one_minus_y2  # dL/dx = dL/dy * (1 - y^2)


class Sigmoid(Module):
    """Logistic sigmoid, y = 1 / (1 + exp(-x)), applied elementwise.

    ``torch.sigmoid`` never evaluates exp of a large positive number, so inputs of
    +-1000 give 0 and 1, not NaN.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def forward(self, x: Tensor) -> Tensor:
        y = torch.sigmoid(x)
        self.saved["y"] = y  # the backward needs only the output
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        y = self._saved_for(grad_output, "y")
        if y.dtype in HALF_DTYPES:
            # torch's kernel computes half types in a precision that depends on the dtype
            # and the device (bfloat16 in float32 on the CPU, float16 step by step in
            # float16): its own kernel has those bits
            grad_input: Tensor = _sigmoid_backward(grad_output, y)  # dL/dx = dL/dy * (1 - y) * y
            return grad_input
        return (1 - y).mul_(grad_output).mul_(y)  # dL/dx = dL/dy * (1 - y) * y, torch's order


class LeakyReLU(Module):
    """Leaky rectifier, y = x if x > 0 else negative_slope * x, applied elementwise.

    Args:
        negative_slope: the slope for x <= 0.
        inplace: overwrite the input with the output. The backward then recovers the
            sign of x from y, which needs negative_slope >= 0 (as in PyTorch).

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        slope = self.negative_slope
        out = x if self.inplace else None
        if slope > 0 and not _is_zero_in(slope, x.dtype):
            # y = max(x, slope x) for slope <= 1, min(x, slope x) for slope > 1: no mask
            pick = torch.maximum if slope <= 1 else torch.minimum
            y = pick(x, x * slope, out=out)
        else:
            # torch's own formula: with a slope that is 0 in x's dtype, max(x, slope x)
            # is max(inf, 0 * inf) = NaN at x = +inf, and with a negative one it gives
            # x = +-0 where torch gives slope * x = -+0
            y = torch.where(x > 0, x, x * slope, out=out)
        # the backward reads the sign of x; after an in-place forward x is gone, and y
        # has it. Only the one it reads is kept (a Sequential checks what was kept for
        # in-place edits, as torch checks what it saved)
        self.saved["x"], self.saved["y"] = (None, y) if self.inplace else (x, None)
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        from_y = self.saved.get("x") is None  # an in-place forward (or none yet)
        sign_of_x = self._saved_for(grad_output, "y" if from_y else "x")
        slope = self.negative_slope
        if from_y and slope < 0:  # y > 0 exactly where x > 0 only when slope >= 0
            raise RuntimeError(
                f"{self._describe()}: the in-place forward lost the sign of x; "
                f"backward needs negative_slope >= 0, got {slope}"
            )
        # dL/dx = dL/dy * (1 if x > 0 else negative_slope)
        return torch.where(sign_of_x > 0, grad_output, grad_output * slope)

    def overwrites_input(self) -> bool:
        return self.inplace

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}{_inplace_repr(self.inplace)}"


class ELU(Module):
    """Exponential linear unit, y = x if x > 0 else alpha * (exp(x) - 1), elementwise.

    Its float32 forward and its backward agree with torch to about one unit in the last
    place, not to the bit (torch's kernel computes exp(x) - 1 its own way; docs/design.md).

    Args:
        alpha: the scale of the negative part; y tends to -alpha as x -> -inf.
        inplace: overwrite the input with the output. The backward then uses
            alpha * exp(x) = y + alpha, and needs alpha >= 0 (as in PyTorch).

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        # y = max(0, x) + alpha (exp(min(0, x)) - 1); exp never sees a positive number
        negative_part = torch.expm1(torch.clamp(x, max=0))
        if self.inplace:
            y = torch.relu_(x).add_(negative_part, alpha=self.alpha)
            self.saved["x"], self.saved["y"] = None, y  # x is gone; y + alpha = alpha exp(x)
        else:
            y = torch.add(torch.relu(x), negative_part, alpha=self.alpha)
            # alpha * exp(x) is more accurate than y + alpha for x << 0
            self.saved["x"], self.saved["y"] = x, None
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        alpha = self.alpha
        if self.saved.get("x") is not None:
            x = self._saved_for(grad_output, "x")
            # dL/dx = dL/dy * (1 if x > 0 else alpha exp(x))
            negative = torch.exp(x).mul_(grad_output).mul_(scalar(alpha, x))
            return torch.where(x > 0, grad_output, negative)
        y = self._saved_for(grad_output, "y")  # an in-place forward (or none yet)
        if alpha < 0:
            raise RuntimeError(
                f"{self._describe()}: the in-place forward lost the sign of x; "
                f"backward needs alpha >= 0, got {alpha}"
            )
        # dL/dx = dL/dy * (1 if x > 0 else y + alpha)
        return torch.where(y > 0, grad_output, grad_output * (y + scalar(alpha, y)))

    def overwrites_input(self) -> bool:
        return self.inplace

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}{_inplace_repr(self.inplace)}"


class GELU(Module):
    """Gaussian error linear unit, y = x * Phi(x), with Phi the standard normal CDF.

    Phi(x) = erfc(-x / sqrt(2)) / 2, which keeps its relative accuracy in the lower
    tail: at x = -10, where torch's 0.5 * (1 + erf(x / sqrt(2))) rounds Phi to 0, it is
    right to 6 digits in float32. With ``approximate="tanh"``, Phi(x) is replaced by
    0.5 * (1 + tanh(u)) with u = sqrt(2/pi) * (x + 0.044715 x^3), as in PyTorch.
    float16 and bfloat16 inputs are computed in float32 and rounded once, as torch does.
    Neither form gives torch's bits: they agree to about one unit in the last place
    (docs/design.md, "Not to the bit, by choice").

    Args:
        approximate: ``"none"`` for the exact CDF, ``"tanh"`` for the approximation.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: expected approximate 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in HALF_DTYPES:
            # torch computes half types in float32 and rounds once; in float16 itself the
            # x^3 of u overflows for |x| > ~97, and the backward's inf * 0 is NaN
            return self.forward(x.float()).to(x.dtype)
        if self.approximate == "tanh":
            # 0.5 (1 + tanh(u)) = sigmoid(2u): one kernel, and no 1 + tanh cancellation;
            # 2u = 2 sqrt(2/pi) x + 2 sqrt(2/pi) 0.044715 x^3, as x * c1 + (x x) x * c3
            two_u = torch.addcmul(x * scalar(2 * _SQRT_2_OVER_PI, x), x * x, x, value=2 * _K3)
            cdf = torch.sigmoid(two_u)
            self.saved["two_u"] = two_u
        else:
            # Phi(x) = erfc(-x / sqrt 2) / 2 keeps its relative accuracy in the lower tail, where
            # (1 + erf(x / sqrt 2)) / 2 (torch.special.ndtr, torch's GELU) cancels to 0
            cdf = torch.erfc(x * scalar(_MINUS_SQRT_HALF, x)).mul_(scalar(0.5, x))
        self.saved["x"], self.saved["cdf"] = x, cdf
        return x * cdf

    def backward(self, grad_output: Tensor) -> Tensor:
        x = self._saved_for(grad_output, "x")
        cdf = self.saved["cdf"]
        if self.approximate == "tanh":
            two_u = self.saved["two_u"]
            # x du/dx = sqrt(2/pi) (x + 3 * 0.044715 x^3) = 3/2 (2u - 4/3 sqrt(2/pi) x)
            two_thirds_x_dudx = torch.add(two_u, x, alpha=-4 / 3 * _SQRT_2_OVER_PI)
            cdf_times_tail = torch.addcmul(cdf, cdf, cdf, value=-1)  # Phi (1 - Phi)
            # dy/dx = Phi + x dPhi/dx, with dPhi/dx = d sigmoid(2u)/dx = 2 Phi (1 - Phi) du/dx,
            # so dy/dx = Phi + 3 (2/3 x du/dx) Phi (1 - Phi)
            slope = torch.addcmul(cdf, two_thirds_x_dudx, cdf_times_tail, value=3)
        else:
            minus_half_x2 = torch.mul(x, x).mul_(scalar(-0.5, x))  # -x^2 / 2
            gauss = minus_half_x2.exp_()  # exp(-x^2 / 2) = sqrt(2 pi) phi(x)
            slope = torch.addcmul(cdf, x, gauss, value=_INV_SQRT_2PI)  # dy/dx = Phi(x) + x phi(x)
        if slope.dtype != grad_output.dtype:  # a half-precision input, computed in float32
            return (grad_output.float() * slope).to(grad_output.dtype)  # rounded once, as torch
        return grad_output * slope  # dL/dx = dL/dy * dy/dx

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


def softmax_dim(dim: int | None, ndim: int) -> int:
    """``dim``, or for dim=None torch's implicit choice for an input of ``ndim`` dims.

    That choice is 0 for inputs of 0, 1 or 3 dimensions (one sample, or a (C, H, W)
    image), 1 for any other. Shared with LogSoftmax, as in torch.
    """
    if dim is not None:
        return dim
    return 0 if ndim in (0, 1, 3) else 1


def along_dim(
    module: Module, dim: int | None, op: Callable[[Tensor, int], Tensor], x: Tensor
) -> Tensor:
    """``op(x, d)`` along a softmax's ``dim`` (Softmax's, LogSoftmax's), as torch runs it.

    For dim=None, torch's warning that the implicit choice is deprecated, naming the
    function as torch does ("softmax", "log_softmax"). For a dim that x lacks, a clear
    error, built only once torch has refused it, so free otherwise.
    """
    if dim is None:
        warnings.warn(
            f"Implicit dimension choice for {op.__name__} has been deprecated. "
            "Change the call to include dim=X as an argument.",
            UserWarning,
            stacklevel=4,  # the line that called the module, past this, forward and __call__
        )
    try:
        return op(x, softmax_dim(dim, x.dim()))
    except IndexError:
        rank = max(x.dim(), 1)
        raise ValueError(
            f"{module._describe()}: expected dim in [{-rank}, {rank - 1}] for input of "
            f"shape {tuple(x.shape)}, got {dim}"
        ) from None


class Softmax(Module):
    """Softmax along ``dim``, y_i = exp(x_i) / sum_j exp(x_j).

    ``torch.softmax`` subtracts the maximum first, so inputs of +-1000 stay finite. The
    forward is torch's; the backward, written out, agrees to about one unit in the last
    place.

    Args:
        dim: the dimension that sums to 1. None (the default, as in torch) picks it
            from the input at every forward, as torch does and with torch's warning
            that this is deprecated: dim 0 for inputs of 0, 1 or 3 dimensions (one
            sample, or a (C, H, W) image), dim 1 for any other.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        y = along_dim(self, self.dim, torch.softmax, x)  # exp(x - max) / sum exp(x - max)
        self.saved["y"] = y  # the backward needs only the output
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        y = self._saved_for(grad_output, "y")
        grad_y = grad_output * y
        # dL/dx_i = y_i (dL/dy_i - sum_j dL/dy_j y_j)
        sum_grad_y = grad_y.sum(softmax_dim(self.dim, y.dim()), keepdim=True)
        return torch.addcmul(grad_y, y, sum_grad_y, value=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Identity(Module):
    """Identity map, y = x; a placeholder that passes its input through untouched.

    Args:
        *args: ignored, as in PyTorch, so that any layer can be swapped for it.
        **kwargs: ignored likewise.

    Shape:
        input: (*) -> output: (*), the same tensor
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        self.saved["shape"] = x.shape  # to check the shape of grad_output
        return x

    def backward(self, grad_output: Tensor) -> Tensor:
        self._check_shape(grad_output, "shape")
        return grad_output  # dL/dx = dL/dy

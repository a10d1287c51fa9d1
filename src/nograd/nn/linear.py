"""The fully connected layer."""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from nograd.nn import grad_stream, init, matmul
from nograd.nn.module import NO_INPUT_GRAD, Module
from nograd.nn.parameter import Parameter

if TYPE_CHECKING:
    from nograd.nn.activations import ReLU


class Linear(Module):
    """Affine map y = x W^T + b, with W of shape (out_features, in_features).

    Initialised as ``torch.nn.Linear``: W and b uniform in [-1/sqrt(in), 1/sqrt(in)],
    drawn from the global generator in the same order, so the same seed gives the
    same weights in both frameworks.

    The products go through ``nograd.nn.matmul``: torch's ``addmm`` and ``mm``, as
    torch.nn.Linear calls them, unless ``nograd.set_cpu_matmul("onednn")`` sends the
    large float32 ones on the CPU to oneDNN.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: whether to learn the additive bias b.
        device: where to allocate the parameters.
        dtype: their floating-point type (default: torch's default dtype).

    Shape:
        input: (*, in_features) -> output: (*, out_features), where * is any number
        of leading dimensions, including none.
    """

    bias: Parameter | None
    _weight_data: Tensor | None = None  # the weight.data that _weight_t views
    _weight_t: Tensor  # W^T, made once rather than at every forward; again for a new .data

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        try:  # anything an index can be (int, numpy integers), as torch.nn.Linear takes
            in_features, out_features = operator.index(in_features), operator.index(out_features)
        except TypeError:
            raise TypeError(
                f"Linear: expected integer sizes, got in_features={in_features!r}, "
                f"out_features={out_features!r}"
            ) from None
        if in_features < 0 or out_features < 0:
            raise ValueError(
                f"Linear: expected non-negative sizes, got in_features={in_features}, "
                f"out_features={out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.register_parameter(
            "bias",
            Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in)."""
        init.kaiming_uniform_(self.weight.data, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias.data, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.data is not self._weight_data:
            self._view_weight()
        try:  # torch checks x's shape, dtype and device; ours run only after it refused
            if self.bias is None:
                y = matmul.mm(x, self._weight_t)  # y = x W^T
            else:
                y = matmul.addmm(self.bias.data, x, self._weight_t)  # y = b + x W^T
        except RuntimeError as error:
            if x.dim() != 2:
                return self._forward_any_shape(x)
            raise self._mismatch(x) or error from None
        self.saved["x"] = x  # the backward needs the input for dL/dW
        return y

    def forward_relu(self, relu: ReLU, x: Tensor) -> Tensor:
        """y = relu(x W^T + b): this layer's forward, then ``relu``'s, as one op where it can.

        ``Sequential`` calls this for a Linear that a ReLU follows, bound to the pair
        once, so that a pair costs one Python call a step. torch's
        ``_addmm_activation`` (``matmul.addmm_relu``) adds the bias and clamps at 0 as
        part of the matrix product: one kernel launch instead of two on a GPU, and on
        the CPU addmm then relu in place, the very numbers of the two forwards. Each
        module saves what its own backward needs: x here, y in ``relu.saved``, as
        ``ReLU.forward`` does. Without a bias, or where torch's op refuses the input
        (one that is not a matrix, say), the two forwards run, which take any shape
        and explain any error.
        """
        bias = self.bias
        if bias is not None:
            if self.weight.data is not self._weight_data:
                self._view_weight()
            try:
                y = matmul.addmm_relu(bias.data, x, self._weight_t)  # max(0, b + x W^T)
            except RuntimeError:
                return relu.forward(self.forward(x))
            self.saved["x"] = x  # the backward needs the input for dL/dW
            relu.saved["y"] = y  # the ReLU's output, for its mask 1[y > 0]
            return y
        return relu.forward(self.forward(x))

    def _view_weight(self) -> None:
        """Keep W^T as a view of the current weight.data (new after to(), or a flat buffer)."""
        weight = self.weight.data
        self._weight_data, self._weight_t = weight, weight.t()  # a view: updates show through

    def _forward_any_shape(self, x: Tensor) -> Tensor:
        """(*, in_features) -> (*, out_features): the same map on the rows of x."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise self._wrong_shape(x)
        # the row count is spelled out: -1 cannot be inferred when in_features is 0
        y = self.forward(x.reshape(math.prod(x.shape[:-1]), self.in_features))
        self.saved["x"] = x  # backward flattens it again
        return y.reshape(*x.shape[:-1], self.out_features)

    def _wrong_shape(self, x: Tensor) -> ValueError:
        return ValueError(
            f"{self._describe()}: expected input of shape (N, {self.in_features}), "
            f"got {tuple(x.shape)}"
        )

    def _mismatch(self, x: Tensor) -> Exception | None:
        """The clear error for a matrix input of the wrong width, dtype or device."""
        if x.shape[1] != self.in_features:
            return self._wrong_shape(x)
        weight = self.weight.data
        if x.dtype != weight.dtype:
            return TypeError(
                f"{self._describe()}: expected input of dtype {weight.dtype} (the weights'), "
                f"got {x.dtype}; convert the input or the model with .to()"
            )
        if x.device != weight.device:
            return RuntimeError(
                f"{self._describe()}: expected input on {weight.device} (where the weights "
                f"are), got {x.device}; move the input or the model with .to()"
            )
        return None

    def backward(self, grad_output: Tensor) -> Tensor:
        x, g = self.saved.get("x"), grad_output  # x: (N, in), g = dL/dy: (N, out)
        if x is None or x.dim() != 2 or g.shape != (x.shape[0], self.out_features):
            x, g = self._rows(grad_output, x)  # an input of shape (*, in_features); or an error
        # side is None except inside a CUDA graph's capture (grad_stream); the lines are
        # written out here, not called as _accumulate_*_grad: two calls fewer a step.
        # A slot is None, or where an optimizer keeps the gradient (Parameter.grad_out):
        # then it is computed straight into it, as the parameter's first gradient
        if grad_stream.side is None:
            weight, bias = self.weight, self.bias
            # _trainable, the flag behind the trainable property, whose getter would
            # cost a Python call for each parameter at every step
            if weight._trainable:  # a frozen weight takes no gradient: skip the product
                slot = weight.grad_out()
                if slot is None:
                    weight.accumulate_grad(matmul.mm(g.t(), x))  # dL/dW = g^T x
                else:
                    weight.grad = matmul.mm(g.t(), x, out=slot)  # dL/dW = g^T x
            if bias is not None and bias._trainable:
                slot = bias.grad_out()
                if slot is None:
                    bias.accumulate_grad(g.sum(0))  # dL/db = sum_n g_n
                else:
                    bias.grad = torch.sum(g, 0, out=slot)  # dL/db = sum_n g_n
        else:
            self._parameter_grads_on_side_streams(grad_stream.side, g, x)
        if not self.needs_input_grad:
            return NO_INPUT_GRAD
        grad_input = matmul.mm(g, self.weight.data)  # dL/dx = g W
        if g is not grad_output:  # the input had other leading dimensions: give dL/dx its shape
            grad_input = grad_input.reshape(*grad_output.shape[:-1], self.in_features)
        return grad_input

    def _parameter_grads_on_side_streams(
        self, stream: torch.cuda.Stream, g: Tensor, x: Tensor
    ) -> None:
        """backward's dL/dW on ``stream`` and dL/db on the bias stream, each beside dL/dx,
        which the layers below wait for (``nograd.nn.grad_stream``)."""
        with grad_stream.branch(stream, g, x):  # g and x: the tensors the branch reads
            self._accumulate_weight_grad(g, x)
        if self.bias is not None:
            with grad_stream.branch(grad_stream.bias_side or stream, g):
                self._accumulate_bias_grad(g)

    def _accumulate_weight_grad(self, g: Tensor, x: Tensor) -> None:
        """Add dL/dW, for dL/dy = g (N, out) and input x (N, in), into weight.grad
        (unless the weight is frozen)."""
        if self.weight.trainable:
            self.weight.accumulate_grad(matmul.mm(g.t(), x))  # dL/dW = g^T x

    def _accumulate_bias_grad(self, g: Tensor) -> None:
        """Add dL/db, for dL/dy = g (N, out), into bias.grad (if there is a bias, and
        it is not frozen)."""
        if self.bias is not None and self.bias.trainable:
            self.bias.accumulate_grad(g.sum(0))  # dL/db = sum_n g_n

    def _rows(self, grad_output: Tensor, x: Tensor | None) -> tuple[Tensor, Tensor]:
        """x and dL/dy as rows, for an input of shape (*, in_features).

        Raises for a backward that cannot run: no forward yet, or dL/dy not of the
        output's shape.
        """
        if x is None:
            raise self._backward_error(grad_output, None)
        expected = (*x.shape[:-1], self.out_features)
        if x.dim() == 2 or grad_output.shape != expected:
            raise self._backward_error(grad_output, expected)
        n = math.prod(x.shape[:-1])  # not -1, which a size of 0 leaves undetermined
        return x.reshape(n, self.in_features), grad_output.reshape(n, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

"""Flatten and Unflatten: reshapes, whose backward reshapes the gradient back.

A reshape moves no number and changes none, so dL/dx holds the numbers of dL/dy, read
in the same order and laid out in x's shape. The forward is a view of the input when
its strides allow (a contiguous input), else a copy, as torch's flatten and unflatten.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn.module import Module


class Flatten(Module):
    """Merges the dims start_dim, ..., end_dim into one, of their sizes' product.

    y = x.reshape(S_0, ..., S_start * ... * S_end, ..., S_last); the defaults keep
    the batch dim and flatten all the others: (N, C, H, W) -> (N, C * H * W).
    The derivative is the identity, reshaped: dL/dx = dL/dy in x's shape.

    Args:
        start_dim: the first dim to flatten (negative counts from the end).
        end_dim: the last dim to flatten.

    Shape:
        input: (*, S_start, ..., S_end, *) -> output: (*, S_start * ... * S_end, *)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: Tensor) -> Tensor:
        try:
            y = x.flatten(self.start_dim, self.end_dim)
        except (IndexError, RuntimeError):  # looked into only once torch refused
            raise self._dims_error(x) from None
        self.saved["x_shape"], self.saved["y_shape"] = x.shape, y.shape
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        self._check_shape(grad_output, "y_shape")
        return grad_output.reshape(self.saved["x_shape"])  # dL/dx = dL/dy, in x's shape

    def _dims_error(self, x: Tensor) -> ValueError:
        """Why torch could not flatten ``x``: a dim it lacks, or start after end."""
        rank = max(x.dim(), 1)  # torch flattens a 0-dim tensor as one of 1 dim
        if not all(-rank <= dim < rank for dim in (self.start_dim, self.end_dim)):
            problem = f"expected start_dim and end_dim in [{-rank}, {rank - 1}]"
        else:
            problem = "start_dim comes after end_dim"
        return ValueError(f"{self._describe()}: {problem} for input of shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Splits the dim ``dim`` into dims of sizes ``unflattened_size``; undoes Flatten.

    y = x.reshape(S_0, ..., U_1, ..., U_n, ..., S_last), with U_1 * ... * U_n = S_dim;
    one U_i may be -1, inferred from the others, e.g. (N, 784) -> (N, 1, 28, 28) with
    ``Unflatten(1, (1, 28, 28))``. The derivative is the identity, reshaped:
    dL/dx = dL/dy in x's shape.

    Args:
        dim: the dim to split (negative counts from the end).
        unflattened_size: the sizes it splits into: a tuple, a list or a torch.Size of
            ints, kept as given (its repr shows which), as in torch.

    Raises:
        TypeError: ``unflattened_size`` is not a tuple or a list of ints, as in torch.

    Shape:
        input: (*, S_dim, *) -> output: (*, U_1, ..., U_n, *)
    """

    def __init__(
        self, dim: int, unflattened_size: torch.Size | list[int] | tuple[int, ...]
    ) -> None:
        super().__init__()
        if not isinstance(unflattened_size, (tuple, list)):
            raise TypeError(
                f"Unflatten: expected unflattened_size to be a tuple or list of ints, "
                f"got {type(unflattened_size).__name__}"
            )
        for position, size in enumerate(unflattened_size):
            if not isinstance(size, int):  # a bool is an int, to torch as to Python
                raise TypeError(
                    f"Unflatten: expected unflattened_size to be a tuple or list of ints, "
                    f"got {type(size).__name__} at position {position}"
                )
        self.dim = dim
        self.unflattened_size = unflattened_size

    def forward(self, x: Tensor) -> Tensor:
        try:
            y = torch.unflatten(x, self.dim, self.unflattened_size)
        except (IndexError, RuntimeError):  # looked into only once torch refused
            raise self._split_error(x) from None
        self.saved["x_shape"], self.saved["y_shape"] = x.shape, y.shape
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        self._check_shape(grad_output, "y_shape")
        return grad_output.reshape(self.saved["x_shape"])  # dL/dx = dL/dy, in x's shape

    def _split_error(self, x: Tensor) -> ValueError:
        """Why torch could not unflatten ``x``: a dim it lacks, or sizes that do not fit."""
        rank, shape = x.dim(), tuple(x.shape)
        if rank == 0:
            return ValueError(f"{self._describe()}: expected an input of at least 1 dimension")
        if not -rank <= self.dim < rank:
            problem = f"expected dim in [{-rank}, {rank - 1}]"
        else:
            problem = (
                f"expected non-empty sizes whose product is {shape[self.dim]}, the size of "
                f"dim {self.dim} (one of them may be -1, inferred from the others)"
            )
        return ValueError(f"{self._describe()}: {problem} for input of shape {shape}")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"

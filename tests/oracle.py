"""The oracle: run a nograd module and its torch.nn twin side by side and compare.

float64 must agree to 1e-10 relative, float32 to 1e-5 (issue 2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from nograd.nn import Module


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 1e-5, "atol": 1e-6}


def assert_close(
    actual: Tensor,
    expected: Tensor,
    dtype: torch.dtype | None = None,
    tol: dict[str, float] | None = None,
) -> None:
    """Within ``tolerance(dtype)``, or within ``tol`` where a test names its own."""
    torch.testing.assert_close(actual, expected, **(tol or tolerance(dtype or expected.dtype)))


def compare_module(
    ours: Module,
    ref: torch.nn.Module,
    x: Tensor,
    grad_output: Tensor | None = None,
    tol: dict[str, float] | None = None,
) -> None:
    """Copy our weights into ``ref``, then compare output, dL/dx and every dL/dparam.

    ``tol``: rtol and atol for every comparison, instead of those of x's dtype.
    """
    if ours.state_dict():
        ref.load_state_dict(ours.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(x_ref)
        g = torch.randn_like(y_ref) if grad_output is None else grad_output
        y_ref.backward(g)

    y = ours(x)
    assert_close(y, y_ref.detach(), tol=tol)
    assert_close(ours.backward(g), _grad(x_ref), tol=tol)
    ours_params = dict(ours.named_parameters())
    ref_params: dict[str, Any] = dict(ref.named_parameters())
    assert ours_params.keys() == ref_params.keys()
    for name, param in ours_params.items():
        assert param.grad is not None, f"{name} got no gradient"
        assert_close(param.grad, ref_params[name].grad, tol=tol)


def _grad(t: Tensor) -> Tensor:
    assert t.grad is not None
    return t.grad


class OpNames(TorchDispatchMode):
    """The names of the aten ops that run, views excluded: on a GPU, one launch each."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not func.is_view:
            self.names.append(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


# ------------------------------------------------- losses of class indices (CE, NLL)
def class_dim(shape: tuple[int, ...]) -> int:
    """Where the classes lie in pred's shape: dim 0 for one sample (C,), else dim 1."""
    return 0 if len(shape) == 1 else 1


def index_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """pred's shape without its class dim: the shape of class indices."""
    dim = class_dim(shape)
    return shape[:dim] + shape[dim + 1 :]


def upstream(
    reduction: str, shape: tuple[int, ...], scale: float | None, dtype: torch.dtype, seed: int
) -> Tensor | None:
    """dL/dl for a loss on pred of ``shape``: one per row under "none", else None or a
    0-dim ``scale``."""
    if reduction == "none":
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(index_shape(shape), generator=gen).to(dtype)
    return None if scale is None else torch.tensor(scale, dtype=dtype)


def torch_loss_and_grad(
    loss: torch.nn.Module, pred: Tensor, target: Tensor, g: Tensor | None
) -> tuple[Tensor, Tensor]:
    """torch's ``loss(pred, target)`` and its dL/dpred for upstream g, by autograd."""
    leaf = pred.clone().requires_grad_()
    with torch.enable_grad():
        value = loss(leaf, target)
        value.backward(g)
    assert leaf.grad is not None
    return value.detach(), leaf.grad

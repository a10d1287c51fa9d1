"""Parameter: a trainable tensor and the gradient that accumulates for it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def wants_grad(param: Parameter | None) -> bool:
    """Whether a layer's backward must compute this parameter's gradient: it exists
    (a layer made with ``bias=False`` has None) and is not frozen."""
    return param is not None and param.requires_grad


class Parameter:
    """A trainable tensor: ``data`` holds its value, ``grad`` holds dL/d(data).

    Gradients accumulate: every backward pass adds into ``grad``, so a weight used
    twice receives both contributions, and ``zero_grad`` clears it between steps.

    A frozen parameter (``requires_grad`` False, as in torch: ``requires_grad_(False)``
    or ``model.requires_grad_(False)``) gets no gradient: its ``grad`` stays None, so
    optimizers leave it as it is, and the layers skip the products that would make it.

    Args:
        data: the initial value; the parameter keeps this tensor (no copy).
        requires_grad: whether backward passes compute dL/d(data) for it.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data: Tensor, requires_grad: bool = True) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: expected a torch.Tensor, got {type(data).__name__}")
        self.data: Tensor = data
        self.grad: Tensor | None = None
        self.requires_grad: bool = requires_grad

    def requires_grad_(self, requires_grad: bool = True) -> Parameter:
        """Freeze (False) or unfreeze (True) the parameter in place; returns it."""
        self.requires_grad = requires_grad
        return self

    def accumulate_grad(self, grad: Tensor) -> None:
        """Add ``grad`` into ``self.grad``; the first gradient is stored as it is.

        As torch's AccumulateGrad, the new gradient is computed in full before it is
        added, so a sum over several backward passes rounds as PyTorch's does. (A
        product that adds into ``.grad`` as it goes, ``grad.addmm_(g.t(), x)``, saves a
        pass over memory but rounds each partial sum with the old gradient in it: other
        bits in the last place.)
        """
        if not self.requires_grad:  # frozen: no gradient, as torch leaves .grad None
            return
        if self.grad is None:
            self.grad = grad  # callers hand over a tensor they will not reuse
        else:
            self.grad.add_(grad)

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy``, ``deepcopy`` and ``pickle`` keep: the value and whether it is
        frozen, not the gradient.

        As torch's ``nn.Parameter``: a snapshot of a model (``best = deepcopy(model)``)
        starts with no gradient, so its first backward does not add into stale ones.
        """
        return {"data": self.data, "requires_grad": self.requires_grad}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state["data"]
        self.grad = None
        self.requires_grad = state.get("requires_grad", True)  # pickled before it existed

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    def numel(self) -> int:
        return self.data.numel()

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype}{frozen})"

"""Parameter: a tensor that training learns, and the gradient that accumulates for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

import torch
from torch import Tensor

# What a torch script asks a parameter for under autograd's name, and nograd's own
_AUTOGRAD_NAMES = {
    "requires_grad": "param.trainable (param.trainable = False freezes it)",
    "requires_grad_": "param.trainable = False, or model.freeze() for a module's parameters",
}

# Counts every change to which parameters are trainable, to which parameters and
# children a module holds, and to a ``needs_input_grad`` flag that a chain sets on a
# child (``changed``): a Sequential plans again when it moved, to find the frozen start
# that its backward skips and to set its children's flags (``nograd.nn.Sequential``).
version = 0


def changed() -> None:
    """Some parameter's ``trainable`` flag, or some module's registry, changed."""
    global version
    version += 1


class Parameter:
    """A learnable tensor: ``data`` holds its value, ``grad`` holds dL/d(data).

    Gradients accumulate: every backward pass adds into ``grad``, so a weight used
    twice receives both contributions, and ``zero_grad`` clears it between steps.

    A frozen parameter (``trainable`` False: ``param.trainable = False``, or
    ``model.freeze()`` for all of a module's) gets no gradient: backward passes add
    nothing into its ``grad`` (None after ``zero_grad``), so optimizers leave it as it
    is, and the layers skip the products that would compute it. torch names this flag
    ``requires_grad``, after its autograd; nograd has no autograd.

    Args:
        data: the initial value; the parameter keeps this tensor (no copy).
        trainable: whether backward passes compute dL/d(data) for it.

    Attributes:
        lent_grad: None, or (the ``data`` it is for, a tensor to write the next gradient
            into), lent by an optimizer's ``zero_grad`` and taken once by ``grad_out``.
    """

    __slots__ = ("_trainable", "data", "grad", "lent_grad")

    def __init__(self, data: Tensor, trainable: bool = True) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter: expected a torch.Tensor, got {type(data).__name__}")
        self.data: Tensor = data
        self.grad: Tensor | None = None
        self._trainable = trainable  # not registered anywhere yet: no plan depends on it
        self.lent_grad: tuple[Tensor, Tensor] | None = None  # see grad_out

    @property
    def trainable(self) -> bool:
        """Whether backward passes compute dL/d(data) (False: frozen)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = value
        changed()  # a Sequential's frozen start may have moved

    def accumulate_grad(self, grad: Tensor) -> None:
        """Add ``grad`` into ``self.grad``; the first gradient is stored as it is.

        As torch's AccumulateGrad, the new gradient is computed in full before it is
        added, so a sum over several backward passes rounds as PyTorch's does. (A
        product that adds into ``.grad`` as it goes, ``grad.addmm_(g.t(), x)``, saves a
        pass over memory but rounds each partial sum with the old gradient in it: other
        bits in the last place.)
        """
        if not self._trainable:  # frozen: no gradient, as torch leaves a frozen .grad None
            return
        if self.grad is None:
            self.grad = grad  # callers hand over a tensor they will not reuse
        else:
            self.grad.add_(grad)

    def grad_out(self) -> Tensor | None:
        """Where a layer may compute this parameter's next gradient, or None (a new tensor).

        A layer asks before it computes a gradient. Given a tensor, it writes the
        gradient into it (``torch.mm(a, b, out=slot)``) and makes that ``grad``; given
        None, it hands a new tensor to ``accumulate_grad``.

        An optimizer that keeps its gradients end to end in one buffer
        (``nograd.optim.flat``) lends each parameter its slice of that buffer at
        ``zero_grad()`` (``lent_grad``: the ``data`` it is lent for, and the slice),
        where nobody else holds the slice, as torch's AccumulateGrad reuses a gradient
        that nobody else holds. The first gradient of the next backward is then
        written straight into it, and the optimizer's step has nothing to copy. The
        slice is given once: where ``grad`` is already set (a second backward before
        the step adds into it) or ``data`` is no longer the tensor it was lent for
        (``model.to()``), this is None.
        """
        lent = self.lent_grad  # (the data it was lent for, the tensor), or None
        if lent is None:
            return None
        self.lent_grad = None
        lent_for, out = lent
        return out if self.grad is None and self.data is lent_for else None

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy``, ``deepcopy`` and ``pickle`` keep: the value and whether it is
        frozen, not the gradient.

        As torch's ``nn.Parameter``: a snapshot of a model (``best = deepcopy(model)``)
        starts with no gradient, so its first backward does not add into stale ones.
        """
        return {"data": self.data, "trainable": self.trainable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state["data"]
        self.grad = None
        self.lent_grad = None
        self.trainable = state.get("trainable", True)  # pickled before it existed

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.dim()

    @overload
    def size(self, dim: None = None) -> torch.Size: ...

    @overload
    def size(self, dim: int) -> int: ...

    def size(self, dim: int | None = None) -> torch.Size | int:
        """The shape, or its length along ``dim``, as ``Tensor.size``."""
        return self.data.size() if dim is None else self.data.size(dim)

    def numel(self) -> int:
        return self.data.numel()

    def nelement(self) -> int:
        return self.data.nelement()

    def element_size(self) -> int:
        """Bytes per number: ``p.numel() * p.element_size()`` is the memory it takes."""
        return self.data.element_size()

    @property
    def is_cuda(self) -> bool:
        return self.data.is_cuda

    if not TYPE_CHECKING:  # hidden from mypy, which would accept any name on a Parameter

        def __getattr__(self, name: str) -> Any:
            """Only reached for a name the parameter lacks: say what nograd calls it.

            A torch script's ``p.requires_grad`` or ``p.copy_(...)`` meets a Parameter
            that is no Tensor (its value is ``p.data``) and has no autograd.
            """
            message = f"'Parameter' object has no attribute '{name}'"
            if name in _AUTOGRAD_NAMES:
                message += f": nograd has no autograd; use {_AUTOGRAD_NAMES[name]}"
            elif not name.startswith("__") and hasattr(Tensor, name):
                message += f": a nograd Parameter is not a Tensor; use param.data.{name}"
            raise AttributeError(message, name=name, obj=self)

    def __repr__(self) -> str:
        frozen = "" if self.trainable else ", trainable=False"
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype}{frozen})"


def wants_grad(param: Parameter | None) -> bool:
    """Whether a layer's backward must compute this parameter's gradient: it exists
    (a layer made with ``bias=False`` has None) and is not frozen."""
    return param is not None and param.trainable

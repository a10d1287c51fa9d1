"""Sequential: a chain of modules, run forwards by ``forward`` and backwards by ``backward``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, overload

from torch import Tensor

from nograd.nn.activations import ReLU
from nograd.nn.linear import Linear
from nograd.nn.module import Module

Plan = list[Module | tuple[Linear, ReLU]]  # forward's steps: a module, or a Linear and its ReLU


class Sequential(Module):
    """y = f_n(... f_2(f_1(x))), with the chain rule run in reverse by ``backward``.

    Children are named "0", "1", ... as in ``torch.nn.Sequential``, so state_dict keys
    such as ``"0.weight"`` match a torch.nn twin.

    Setting ``needs_input_grad = False`` tells the first module that nobody wants
    dL/d(input) (a training loop never does), which saves the first layer's largest
    matrix product; ``fit`` does this for you.

    A ``Linear`` followed by a ``ReLU`` runs its forward as one op (``Linear.forward_relu``),
    with the same numbers; both modules still save what their backward needs, so
    ``backward`` runs module by module as ever.

    Shape:
        input: whatever the first module takes -> output: whatever the last returns.
    """

    _plan: Plan | None = None  # forward's steps, made from the children when first needed

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for module in modules:
            self.append(module)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        object.__setattr__(self, "_plan", None)  # the children may have changed: plan again

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        object.__setattr__(self, "_plan", None)

    def append(self, module: Module) -> Sequential:
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self._modules)), module)
        return self

    @property
    def needs_input_grad(self) -> bool:
        return bool(self._modules) and next(iter(self._modules.values())).needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value: bool) -> None:
        if self._modules:
            next(iter(self._modules.values())).needs_input_grad = value

    def forward(self, x: Tensor) -> Tensor:
        plan = self._plan if self._plan is not None else self._make_plan()
        for step in plan:  # a pair is relu(linear(x)), in one op where it can be
            x = _linear_relu(*step, x) if isinstance(step, tuple) else step.forward(x)
        return x

    def _make_plan(self) -> Plan:
        """Pair each Linear with the ReLU right after it (exactly these classes).

        A subclass may override ``forward``, so only the classes themselves are fused.
        """
        modules = list(self._modules.values())
        plan: Plan = []
        i = 0
        while i < len(modules):
            module = modules[i]
            following = modules[i + 1] if i + 1 < len(modules) else None
            if type(module) is Linear and type(following) is ReLU:
                plan.append((module, following))
                i += 2
            else:
                plan.append(module)
                i += 1
        object.__setattr__(self, "_plan", plan)
        return plan

    def backward(self, grad_output: Tensor) -> Tensor:
        for module in reversed(self._modules.values()):
            grad_output = module.backward(grad_output)  # dL/d(in_k) = dL/d(out_{k-1})
        return grad_output

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    @overload
    def __getitem__(self, index: int) -> Module: ...

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...

    def __getitem__(self, index: int | slice) -> Module | Sequential:
        if isinstance(index, slice):
            sliced = Sequential()
            for name, module in list(self._modules.items())[index]:
                sliced.add_module(name, module)  # keep the names, as torch does
            return sliced
        modules = list(self._modules.values())
        if not -len(modules) <= index < len(modules):
            raise IndexError(f"Sequential: index {index} out of range for {len(modules)} modules")
        return modules[index]


def _linear_relu(linear: Linear, relu: ReLU, x: Tensor) -> Tensor:
    """y = relu(linear(x)); each module saves what its own backward needs."""
    y = linear.forward_relu(x)  # saves x for the Linear
    if y is None:  # no bias, or an input the fused op refuses: the two forwards
        return relu.forward(linear.forward(x))
    relu.saved["y"] = y  # what ReLU.forward saves: its output, for the mask 1[y > 0]
    return y

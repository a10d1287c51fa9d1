"""Sequential: a chain of modules, run forwards by ``forward`` and backwards by ``backward``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import overload

from torch import Tensor

from nograd.nn.module import Module


class Sequential(Module):
    """y = f_n(... f_2(f_1(x))), with the chain rule run in reverse by ``backward``.

    Children are named "0", "1", ... as in ``torch.nn.Sequential``, so state_dict keys
    such as ``"0.weight"`` match a torch.nn twin.

    Setting ``needs_input_grad = False`` tells the first module that nobody wants
    dL/d(input) (a training loop never does), which saves the first layer's largest
    matrix product; ``fit`` does this for you.

    Shape:
        input: whatever the first module takes -> output: whatever the last returns.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for module in modules:
            self.append(module)

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
        for module in self._modules.values():
            x = module.forward(x)
        return x

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

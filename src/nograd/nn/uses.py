"""What a chain keeps of each use of a module, and what its in-place children destroy.

A module's ``saved`` holds what its last forward saved. That is enough for a chain of
distinct modules, but not for one that uses a module twice (the second forward
overwrites the first's tensors) or holds a module that writes its output into its
input (``inplace=True``), which may be a tensor the module before it saved. torch's
autograd keeps a record per use and a version counter per saved tensor. ``Sequential``
keeps the first (``Use``, for a chain that shares a module) and, instead of the second,
asks before each child's forward whether it overwrites its input
(``Module.overwrites_input``) and whether a module before it saved a tensor in that
memory (``saved_into``). That works under ``torch.inference_mode()`` too, where
``fit`` trains and tensors have no version counter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from nograd.nn.module import Module


def shares_a_module(module: Module, others: list[Module]) -> bool:
    """Whether ``module`` or a module inside it is also one of ``others`` or inside one."""
    inside = {id(inner) for inner in module.modules()}
    return any(id(inner) in inside for other in others for inner in other.modules())


class Use(NamedTuple):
    """One use of a module in a chain: what its forward left in ``saved``, for its backward."""

    module: Module
    saved: list[tuple[Module, dict[str, Any]]]  # the module and each one inside it

    @classmethod
    def record(cls, subtree: list[Module]) -> Use:
        """What ``subtree[0]`` and each module inside it hold in ``saved`` now (copies)."""
        return cls(subtree[0], [(inner, dict(inner.saved)) for inner in subtree])

    def restore(self) -> Module:
        """Put this use's tensors back in place, for its backward."""
        for inner, entries in self.saved:
            # past __setattr__, which on a Sequential would also throw away its plan
            object.__setattr__(inner, "saved", dict(entries))
        return self.module


def saved_into(memory: Tensor, saved: list[tuple[Module, dict[str, Any]]]) -> Module | None:
    """The first module of ``saved`` that kept a tensor in ``memory``'s storage, or None.

    An empty ``memory`` holds no number to destroy (and its address, 0, is that of
    every other empty tensor): None.
    """
    if memory.numel() == 0:
        return None
    place = memory.untyped_storage().data_ptr()
    for module, entries in saved:
        for value in entries.values():
            if isinstance(value, Tensor) and value.untyped_storage().data_ptr() == place:
                return module
    return None

"""What a chain keeps of each use of a module, for the backward of that use.

A module's ``saved`` holds what its last forward saved. That is enough for a chain of
distinct modules, but not for one that uses a module twice (the second forward
overwrites the first's tensors) or holds a module with ``inplace=True`` (which may
overwrite a tensor the module before it saved). torch's autograd keeps a record per
use and a version counter per saved tensor; ``Use`` is the same two things, which
``Sequential`` makes after each forward of such a chain and reads before each backward.
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
    versions: list[tuple[Tensor, int]]  # every saved tensor, with its version then

    @classmethod
    def record(cls, subtree: list[Module]) -> Use:
        """What ``subtree[0]`` and each module inside it hold in ``saved`` now."""
        saved = [(inner, dict(inner.saved)) for inner in subtree]
        versions = [
            (value, value._version)
            for _, entries in saved
            for value in entries.values()
            if isinstance(value, Tensor)
        ]
        return cls(subtree[0], saved, versions)

    def restore(self) -> Module:
        """Put this use's tensors back in place; raise if one was changed in place since."""
        for tensor, version in self.versions:
            if tensor._version != version:
                raise RuntimeError(
                    f"Sequential.backward: a tensor that {type(self.module).__name__} saved "
                    f"for its backward was modified in place after its forward (by a module "
                    f"with inplace=True?), so its gradient would be wrong; "
                    f"use inplace=False there"
                )
        for inner, entries in self.saved:
            # past __setattr__, which on a Sequential would also throw away its plan
            object.__setattr__(inner, "saved", dict(entries))
        return self.module

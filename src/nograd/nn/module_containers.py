"""ModuleList and ModuleDict: children held in a list or a dict, for a Module that runs them.

Neither runs anything itself. They register what they hold, so that the Module owning
them sees every child's parameters, buffers and ``state_dict`` keys ("layers.0.weight",
"heads.cls.bias"), and ``to()``, ``train()``, ``zero_grad()`` reach them, as in torch.
That Module's own ``forward`` and ``backward`` decide the order in which they run.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from itertools import chain, groupby
from typing import Any, overload

from nograd.nn.module import Module


class ModuleList(Module):
    """[m_0, m_1, ...]: modules held in a list, each a child named by its position.

    As ``torch.nn.ModuleList``: indexing (negative too; a slice gives a new
    ModuleList numbered from "0"), ``append``, ``extend``, ``insert``, ``pop``,
    ``ml[i] = m``, ``del ml[i]`` (the children are numbered again), ``+`` and ``+=``.
    An entry may be None, an empty slot, as torch allows. The Module that holds the
    list runs it, forwards in its ``forward`` and in reverse in its ``backward``::

        for layer in self.layers:
            x = layer(x)
        ...
        for layer in reversed(self.layers):
            grad = layer.backward(grad)  # dL/d(in_k) = dL/d(out_{k-1})

    Args:
        modules: the modules to hold, in order.

    Shape:
        none of its own: it has no forward; each module it holds has its own shapes.
    """

    # torch types the entries as modules, though it allows None (an empty slot) as here
    _modules: OrderedDict[str, Module]  # type: ignore[assignment]

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _name_at(self, index: int) -> str:
        """The name of the child at position ``index`` (negative counts from the end).

        Raises:
            TypeError: ``index`` is not an int (a bool is refused, as in Sequential,
                though torch reads True as 1).
            IndexError: it is out of range.
        """
        try:
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)  # numpy's int64 or a 0-d integer tensor too
        except TypeError:
            raise TypeError(
                f"{type(self).__name__}: expected an int or a slice as index, "
                f"got {type(index).__name__}"
            ) from None
        n = len(self._modules)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} modules")
        return str(index + n if index < 0 else index)

    def _check(self, module: object) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(
                f"{type(self).__name__}: expected a Module (or None), got {type(module).__name__}"
            )

    def _renumber(self, modules: list[Module]) -> None:
        """Make ``modules`` the children, named "0", "1", ... (as torch renumbers them)."""
        for name in list(self._modules):
            delattr(self, name)  # each name is also an attribute: ml.0 must follow the list
        for module in modules:
            self.append(module)

    @overload
    def __getitem__(self, index: int) -> Module: ...

    @overload
    def __getitem__(self, index: slice) -> ModuleList: ...

    def __getitem__(self, index: int | slice) -> Module | ModuleList:
        if isinstance(index, slice):  # numbered from "0" again, as torch's (a Sequential's keep)
            return type(self)(list(self._modules.values())[index])
        return self._modules[self._name_at(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        name = self._name_at(index)
        self._check(module)
        setattr(self, name, module)  # the child's name stays

    def __delitem__(self, index: int | slice) -> None:
        names = list(self._modules)
        doomed = set(names[index]) if isinstance(index, slice) else {self._name_at(index)}
        self._renumber([module for name, module in self._modules.items() if name not in doomed])

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        """A new ModuleList of this one's modules, then ``other``'s (the same objects)."""
        return ModuleList(chain(self, other))

    def __dir__(self) -> list[str]:
        """As torch's: the children's names ("0", "1", ...) are left out."""
        return [name for name in super().__dir__() if not name.isdigit()]

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), module)  # add_module checks it is a Module
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Append each of ``modules``, in order.

        Raises:
            TypeError: ``modules`` is not iterable, or holds something not a Module.
        """
        if not isinstance(modules, Iterable):
            raise TypeError(
                f"{type(self).__name__}.extend: expected an iterable of modules, "
                f"got {type(modules).__name__}"
            )
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Put ``module`` before position ``index`` (-1: before the last); renumber.

        torch's own ``insert`` fails on a negative index and leaves a gap past the end,
        and takes anything; this one takes an index as ``list.insert`` does, within
        -len <= index <= len, and only a Module (or None).

        Raises:
            IndexError: ``index`` is out of that range.
            TypeError: ``module`` is neither a Module nor None.
        """
        self._check(module)
        n = len(self._modules)
        if not -n <= index <= n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} modules")
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)

    @overload
    def pop(self, key: int) -> Module: ...

    @overload
    def pop(self, key: slice) -> ModuleList: ...

    def pop(self, key: int | slice) -> Module | ModuleList:
        """Remove and return the module at ``key`` (a ModuleList for a slice)."""
        popped = self[key]
        del self[key]
        return popped

    def __repr__(self) -> str:
        """torch's layout, a run of equal entries shown once: ``(0-2): 3 x Linear(...)``."""
        if not self._modules:
            return f"{type(self).__name__}()"
        lines: list[str] = []
        start = 0
        for text, run in groupby(repr(module) for module in self):
            count = len(list(run))
            end = start + count - 1
            prefix = f"({start}): " if count == 1 else f"({start}-{end}): {count} x "
            lines.append(prefix + text.replace("\n", "\n  "))  # a child's lines, indented
            start += count
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


class ModuleDict(Module):
    """{key: module}: modules held in an ordered dict, each a child named by its key.

    As ``torch.nn.ModuleDict``: ``md[key]``, ``md[key] = m``, ``del md[key]``, ``in``,
    ``len``, iteration over the keys, ``keys``, ``items``, ``values``, ``pop``,
    ``clear`` and ``update``, in insertion order. A key must be a valid child name:
    a non-empty string, without ".", and not an attribute of the class ("keys",
    "training"; here also nograd's own "saved" and "backward").

    Args:
        modules: a mapping of key to module, or an iterable of (key, module) pairs.

    Shape:
        none of its own: it has no forward; each module it holds has its own shapes.
    """

    _modules: OrderedDict[str, Module]  # type: ignore[assignment]

    def __init__(
        self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None
    ) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def _name_of(self, key: str) -> str:
        if key not in self._modules:
            raise KeyError(f"{type(self).__name__}: no module under key {key!r}")
        return key

    def __getitem__(self, key: str) -> Module:
        return self._modules[self._name_of(key)]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)  # torch's checks of the key and the module

    def __delitem__(self, key: str) -> None:
        delattr(self, self._name_of(key))

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def clear(self) -> None:
        for key in list(self._modules):
            delattr(self, key)

    def pop(self, key: str) -> Module:
        """Remove the module under ``key`` and return it."""
        popped = self[key]
        del self[key]
        return popped

    def keys(self) -> KeysView[str]:
        return self._modules.keys()

    def items(self) -> ItemsView[str, Module]:
        return self._modules.items()

    def values(self) -> ValuesView[Module]:
        return self._modules.values()

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        """Add each (key, module), in order; a key already here keeps its place.

        Raises:
            TypeError: ``modules`` is not iterable, or one of its entries is not.
            ValueError: an entry of an iterable is not a pair.
        """
        name = type(self).__name__
        if not isinstance(modules, Iterable):
            raise TypeError(
                f"{name}.update: expected a mapping or an iterable of (key, module) pairs, "
                f"got {type(modules).__name__}"
            )
        pairs: Iterable[Any] = (
            modules.items() if isinstance(modules, (Mapping, ModuleDict)) else modules
        )
        for j, pair in enumerate(pairs):
            try:
                key, module = pair
            except TypeError:  # not iterable at all
                raise TypeError(
                    f"{name}.update: entry #{j} should be a (key, module) pair, "
                    f"got {type(pair).__name__}"
                ) from None
            except ValueError:  # too few or too many items
                raise ValueError(
                    f"{name}.update: entry #{j} should be a (key, module) pair, of length 2"
                ) from None
            self[key] = module

"""Page-locked ("pinned") batches, which a GPU can copy from while the host works on.

A tensor in ordinary (pageable) host memory may be moved by the operating system at any
time, so a copy to the GPU goes through a pinned staging buffer and the host waits for
it. A tensor already in pinned memory is copied by the GPU's DMA engine directly, and
``x.to("cuda", non_blocking=True)`` returns at once: the copy of the next batch overlaps
the step on this one. ``DataLoader(pin_memory=True)`` hands out its batches pinned;
``fit`` then copies them with ``non_blocking=True``.

Pinning costs a copy on the host and pinned memory is scarce, so it only pays when the
batches go to a GPU; without one, ``DataLoader`` warns and leaves the batches as they
are, as torch's does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

import torch


def pin_memory(data: Any) -> Any:
    """``data`` with every tensor in it replaced by a pinned copy.

    Tensors nested in dicts, tuples, namedtuples and lists are pinned and the nesting
    kept (a tuple stays a tuple, where torch's makes it a list; a dict or list is a
    shallow copy with its items replaced, as in torch, so a defaultdict keeps its
    factory); an object with a ``pin_memory()`` method of its own is pinned by it;
    strings, numbers and anything else come back as they are. Needs a GPU: torch
    refuses to pin without one.
    """
    if isinstance(data, torch.Tensor):
        return data.pin_memory()
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, Mapping):
        pinned = {key: pin_memory(value) for key, value in data.items()}
        try:
            if isinstance(data, MutableMapping):  # a copy keeps a defaultdict's factory
                clone = copy.copy(data)
                clone.update(pinned)
                return clone
            return type(data)(pinned)  # type: ignore[call-arg]  # a mapping of the user's
        except TypeError:  # a mapping that cannot be built from a dict
            return pinned
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # a namedtuple
        return type(data)(*(pin_memory(field) for field in data))
    if isinstance(data, tuple):
        return tuple(pin_memory(item) for item in data)
    if isinstance(data, Sequence):
        items = [pin_memory(item) for item in data]
        try:
            if isinstance(data, MutableSequence):  # a copy, for a list whose __init__ differs
                copied = copy.copy(data)
                for position, item in enumerate(items):
                    copied[position] = item
                return copied
            return type(data)(items)  # type: ignore[call-arg]
        except TypeError:  # a sequence that cannot be built from a list
            return items
    if hasattr(data, "pin_memory"):
        return data.pin_memory()
    return data

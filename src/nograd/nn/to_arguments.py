"""The arguments of ``Module.to``: torch's three call forms, told apart and bound.

``model.to(device, dtype, non_blocking)``, ``model.to(dtype, non_blocking)`` and
``model.to(tensor, non_blocking)`` (that tensor's device and dtype), each with a
keyword-only ``memory_format``, as ``torch.nn.Module.to`` takes them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# what a call of Module.to asks for: (device, dtype, non_blocking, memory_format)
ToArguments = tuple[
    torch.device | str | int | None, torch.dtype | None, bool, torch.memory_format | None
]


def to_arguments(*args: Any, **kwargs: Any) -> ToArguments:
    """(device, dtype, non_blocking, memory_format) from a call of ``Module.to``.

    The first argument tells torch's three forms apart; Python's own binding of the
    rest refuses what the chosen form does not take, with a TypeError.
    """
    first = args[0] if args else None
    if isinstance(first, torch.dtype):
        return _to_dtype(*args, **kwargs)
    if isinstance(first, Tensor) or "tensor" in kwargs:
        return _to_like(*args, **kwargs)
    return _to_device(*args, **kwargs)


def _to_device(
    device: torch.device | str | int | None = None,
    dtype: torch.dtype | None = None,
    non_blocking: bool = False,
    *,
    memory_format: torch.memory_format | None = None,
) -> ToArguments:
    return device, dtype, non_blocking, memory_format


def _to_dtype(
    dtype: torch.dtype,
    non_blocking: bool = False,
    *,
    memory_format: torch.memory_format | None = None,
) -> ToArguments:
    return None, dtype, non_blocking, memory_format


def _to_like(
    tensor: Tensor, non_blocking: bool = False, *, memory_format: torch.memory_format | None = None
) -> ToArguments:
    return tensor.device, tensor.dtype, non_blocking, memory_format

"""Constants as cached tensors: torch takes a tensor operand faster than a Python number.

For ``x * c`` with a Python number c, torch first wraps c in a fresh tensor of its own
and promotes it: about a microsecond on a small batch, as much as the multiplication.
A 0-dim tensor of x's dtype, made once, gives the same bits where the number would be
rounded to that dtype anyway (float32 and float64 on the CPU).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

# Dtypes in which a 0-dim tensor c of the same dtype stands in for a Python number c
# bit for bit (and sum / N rounds as mean): float16 and bfloat16 compute both in float32.
EXACT_SCALAR_DTYPES = (torch.float32, torch.float64)
# The half-precision dtypes. torch's kernels compute them in float32 and round once, or
# step by step in the dtype, kernel by kernel: code that claims torch's bits for them
# follows each kernel's way (often by calling that kernel)
HALF_DTYPES = (torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=64)
def filled(value: float, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A CPU tensor of ``shape`` full of ``value``, made once and never written to."""
    with torch.inference_mode(False):  # a normal tensor, usable in and out of that mode
        return torch.full(shape, value, dtype=dtype, device="cpu")


def scalar(value: float, like: Tensor) -> Tensor | float:
    """``value`` as an operand for ``like``: a cached 0-dim tensor where that has the
    number's bits (a float32 or float64 CPU tensor), else the number itself."""
    if like.is_cpu and like.dtype in EXACT_SCALAR_DTYPES:
        return filled(value, (), like.dtype)
    return value


_ONES: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def one_like(like: Tensor) -> Tensor:
    """1 as a 0-dim tensor on ``like``'s device and of its dtype, made once for each.

    On a GPU that saves a kernel launch per use. During a CUDA graph capture a new
    tensor is not kept: its memory belongs to the graph and goes with it. A capture
    reuses the one made before it (by its warm-up steps), or makes its own.
    """
    key = (like.device, like.dtype)
    one = _ONES.get(key)
    if one is None:
        with torch.inference_mode(False):  # a normal tensor, usable in and out of that mode
            one = torch.ones((), device=like.device, dtype=like.dtype)
        if not (like.is_cuda and torch.cuda.is_current_stream_capturing()):
            _ONES[key] = one
    return one

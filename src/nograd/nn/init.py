"""Weight initialisation, with ``torch.nn.init``'s names, signatures and draw order.

Here: calculate_gain, uniform_, normal_, constant_, ones_, zeros_, xavier_uniform_,
xavier_normal_, kaiming_uniform_, kaiming_normal_. Re-exported from ``init_structured``:
trunc_normal_, eye_, dirac_, orthogonal_, sparse_.

Every function fills its tensor in place and returns it; given a ``Parameter`` (torch
users write ``init.zeros_(layer.bias)``), it fills the parameter's ``data`` and returns
the parameter. ``fan_in`` and ``fan_out`` follow PyTorch: for a weight of shape
(out, in, *kernel), fan_in = in * prod(kernel) and fan_out = out * prod(kernel).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, get_args

import torch
from torch import Tensor

from nograd.nn.init_structured import (
    Fillable,
    dirac_,
    eye_,
    orthogonal_,
    sparse_,
    trunc_normal_,
    values_of,
)

__all__ = [
    "calculate_gain",
    "constant_",
    "dirac_",
    "eye_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "orthogonal_",
    "sparse_",
    "trunc_normal_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

Nonlinearity = Literal[
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
]
FanMode = Literal["fan_in", "fan_out"]

# the names whose gain is 1: every one but the four nonlinearities below
_GAIN_ONE = frozenset(get_args(Nonlinearity)) - {"tanh", "relu", "leaky_relu", "selu"}


def calculate_gain(nonlinearity: Nonlinearity, param: int | float | None = None) -> float:
    """The gain that keeps activations' variance steady through ``nonlinearity``.

    1 for linear, conv*, conv_transpose* and sigmoid; 5/3 for tanh; sqrt(2) for relu;
    sqrt(2 / (1 + slope^2)) for leaky_relu, ``param`` being its negative slope
    (default 0.01, ignored by the others); 3/4 for selu. Names are case-sensitive.

    Raises:
        ValueError: an unknown ``nonlinearity``, or a ``param`` for leaky_relu that is
            not an int or a float (a bool, a string), as in torch.
    """
    if nonlinearity in _GAIN_ONE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope: float = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            negative_slope = param
        else:  # True is an int, and would give a gain of 1: refused, as torch does
            raise ValueError(
                f"calculate_gain: negative_slope {param!r} not a valid number "
                f"(expected an int or a float)"
            )
        return math.sqrt(2.0 / (1 + negative_slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    if tensor.dim() < 2:
        raise ValueError(
            f"init: fan in and fan out need a tensor of 2 or more dimensions, "
            f"got shape {tuple(tensor.shape)}"
        )
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _fan(tensor: Tensor, mode: str) -> int:
    mode = mode.lower()  # torch accepts "FAN_IN" too
    if mode not in {"fan_in", "fan_out"}:
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(
    tensor: Fillable, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None
) -> Fillable:
    """Fill with draws from U(a, b)."""
    values_of(tensor).uniform_(a, b, generator=generator)
    return tensor


def normal_(
    tensor: Fillable,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
) -> Fillable:
    """Fill with draws from N(mean, std^2)."""
    values_of(tensor).normal_(mean, std, generator=generator)
    return tensor


def zeros_(tensor: Fillable) -> Fillable:
    """Fill with 0."""
    values_of(tensor).zero_()
    return tensor


def ones_(tensor: Fillable) -> Fillable:
    """Fill with 1."""
    values_of(tensor).fill_(1.0)
    return tensor


def constant_(tensor: Fillable, val: float) -> Fillable:
    """Fill with ``val``."""
    values_of(tensor).fill_(val)
    return tensor


def xavier_uniform_(
    tensor: Fillable, gain: float = 1.0, generator: torch.Generator | None = None
) -> Fillable:
    """Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    values = values_of(tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(values)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    values.uniform_(-bound, bound, generator=generator)
    return tensor


def xavier_normal_(
    tensor: Fillable, gain: float = 1.0, generator: torch.Generator | None = None
) -> Fillable:
    """Glorot: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    values = values_of(tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(values)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    values.normal_(0.0, std, generator=generator)
    return tensor


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: Nonlinearity) -> float:
    fan = _fan(tensor, mode)  # before the gain, so a bad mode is reported first, as in torch
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(
    tensor: Fillable,
    a: float = 0,
    mode: FanMode = "fan_in",
    nonlinearity: Nonlinearity = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Fillable:
    """He: U(-bound, bound) with bound = gain * sqrt(3 / fan).

    ``a`` is the negative slope of the leaky ReLU that follows (used by the gain).
    A tensor with a zero-sized dimension is returned untouched with a warning, before
    ``mode`` or its shape are checked, as torch does.
    """
    if 0 in tensor.shape:
        warnings.warn(
            "kaiming_uniform_: initializing zero-element tensors is a no-op", stacklevel=2
        )
        return tensor
    values = values_of(tensor)
    bound = math.sqrt(3.0) * _kaiming_std(values, a, mode, nonlinearity)
    values.uniform_(-bound, bound, generator=generator)
    return tensor


def kaiming_normal_(
    tensor: Fillable,
    a: float = 0,
    mode: FanMode = "fan_in",
    nonlinearity: Nonlinearity = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Fillable:
    """He: N(0, std^2) with std = gain / sqrt(fan); zero-sized tensors as kaiming_uniform_."""
    if 0 in tensor.shape:
        warnings.warn("kaiming_normal_: initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    values = values_of(tensor)
    values.normal_(0, _kaiming_std(values, a, mode, nonlinearity), generator=generator)
    return tensor

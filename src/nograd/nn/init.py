"""Weight initialisation, with ``torch.nn.init``'s names, formulas and draw order.

Every function fills its tensor in place and returns it. ``fan_in`` and ``fan_out``
follow PyTorch: for a weight of shape (out, in, *kernel), fan_in = in * prod(kernel)
and fan_out = out * prod(kernel).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain that keeps activations' variance steady through ``nonlinearity``.

    ``param`` is leaky_relu's negative slope (default 0.01), ignored otherwise.

    Raises:
        ValueError: an unknown ``nonlinearity``, or a ``param`` for leaky_relu that is
            not an int or a float (a bool, a string), as in torch.
    """
    if nonlinearity in {
        "linear",
        "identity",
        "sigmoid",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
    }:
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
    if mode not in {"fan_in", "fan_out"}:
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(
    tensor: Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill with draws from U(a, b)."""
    return tensor.uniform_(a, b, generator=generator)


def normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill with draws from N(mean, std^2)."""
    return tensor.normal_(mean, std, generator=generator)


def zeros_(tensor: Tensor) -> Tensor:
    """Fill with 0."""
    return tensor.zero_()


def ones_(tensor: Tensor) -> Tensor:
    """Fill with 1."""
    return tensor.fill_(1.0)


def constant_(tensor: Tensor, val: float) -> Tensor:
    """Fill with ``val``."""
    return tensor.fill_(val)


def eye_(tensor: Tensor) -> Tensor:
    """Fill a 2-D tensor with the identity: W[i, j] = 1 if i == j else 0.

    A Linear with this weight passes its first min(in, out) inputs through unchanged.
    """
    if tensor.dim() != 2:
        raise ValueError(f"eye_: expected a 2-D tensor, got shape {tuple(tensor.shape)}")
    return torch.eye(*tensor.shape, out=tensor)


def orthogonal_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Fill with gain * Q, Q a random (semi-)orthogonal matrix (Saxe et al., 2013).

    The tensor is seen as a matrix of shape (rows, numel / rows). Q comes from the QR
    factorisation A = Q R of a matrix A of N(0, 1) draws (its transpose when it is
    wider than tall), each column of Q multiplied by the sign of R's diagonal so that
    Q is uniform over orthogonal matrices (Mezzadri, 2007). Drawn as torch draws it.
    """
    if tensor.dim() < 2:
        raise ValueError(
            f"orthogonal_: expected 2 or more dimensions, got shape {tuple(tensor.shape)}"
        )
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    a = tensor.new_empty((rows, cols)).normal_(0, 1, generator=generator)
    wide = rows < cols
    q, r = torch.linalg.qr(a.t() if wide else a)  # A = Q R, Q of orthonormal columns
    q *= torch.diag(r, 0).sign()  # column j of Q times sign(R[j, j])
    tensor.view_as(q.t() if wide else q).copy_(q.t() if wide else q)
    return tensor.mul_(gain)


def xavier_uniform_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return tensor.uniform_(-bound, bound, generator=generator)


def xavier_normal_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Glorot: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return tensor.normal_(0.0, std, generator=generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He: U(-bound, bound) with bound = gain * sqrt(3 / fan).

    ``a`` is the negative slope of the leaky ReLU that follows (used by the gain).
    """
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor  # an empty tensor has nothing to fill
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return tensor.uniform_(-bound, bound, generator=generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He: N(0, std^2) with std = gain / sqrt(fan)."""
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return tensor.normal_(0.0, std, generator=generator)

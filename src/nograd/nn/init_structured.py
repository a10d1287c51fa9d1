"""Initialisations that need an algorithm, not one fill call with a formula for its scale.

trunc_normal_ samples by rejection, over several rounds; eye_ and dirac_ write identity
weights; orthogonal_ factorises a normal draw; sparse_ zeroes random rows of one.
Re-exported by ``nograd.nn.init``, which holds the one-call fills (uniform, normal,
constants) and their scale rules (calculate_gain, Xavier, Kaiming). As there, every
function fills its tensor (or a Parameter's data) in place, returns it, and draws its
random numbers in ``torch.nn.init``'s order, so that equal seeds give torch's bits.
"""

from __future__ import annotations

import math
import warnings
from typing import TypeVar

import torch
from torch import Tensor

from nograd.nn.parameter import Parameter

# what the functions fill: a tensor, or a Parameter, whose data they fill (torch's
# functions take an nn.Parameter, and torch users write init.zeros_(layer.bias))
Fillable = TypeVar("Fillable", Tensor, Parameter)


def values_of(tensor: Tensor | Parameter) -> Tensor:
    """The tensor to fill in place: a Parameter's ``data``, or ``tensor`` itself."""
    return tensor.data if isinstance(tensor, Parameter) else tensor


def _standard_normal_cdf(x: float) -> float:
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0  # Phi(x) = (1 + erf(x / sqrt 2)) / 2


def trunc_normal_(
    tensor: Fillable,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Fillable:
    """Fill with draws from N(mean, std^2) conditioned on a <= x <= b.

    By rejection, with torch 2.13's two samplers, chosen by the mass the bounds keep,
    p = Phi((b - mean) / std) - Phi((a - mean) / std):

    - p > 0.3: x ~ N(mean, std^2); while some x lie outside [a, b], draw a whole fresh
      normal tensor and take its values there (about 1 / p rounds).
    - otherwise: propose x ~ U(a, b) and accept it when log u <= log f(x) - log f(m),
      u ~ U(0, 1), f(x) = exp(-((x - mean) / std)^2 / 2) and m the point of [a, b]
      nearest the mean, where f peaks; redraw whole tensors for the rejected ones.

    Warns, as torch does, when the mean lies more than 2 std outside [a, b].
    """
    values = values_of(tensor)
    if values.is_meta:
        return tensor  # no storage to fill, and torch draws nothing
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn(
            "trunc_normal_: mean is more than 2 std from [a, b]; "
            "the distribution of values may be incorrect.",
            stacklevel=2,
        )
    kept_mass = _standard_normal_cdf((b - mean) / std) - _standard_normal_cdf((a - mean) / std)
    if kept_mass > 0.3:
        result = _reject_normal_draws(values, mean, std, a, b, generator)
    else:
        result = _reject_uniform_proposals(values, mean, std, a, b, generator)
    if result is not values:
        values.copy_(result)
    return tensor


def _reject_normal_draws(
    tensor: Tensor, mean: float, std: float, a: float, b: float, generator: torch.Generator | None
) -> Tensor:
    # bounds in the tensor's precision, so a draw that rounds onto a bound is kept
    low = tensor.new_tensor(a, device="cpu").item()
    high = tensor.new_tensor(b, device="cpu").item()
    result = tensor.normal_(mean, std, generator=generator)
    outside = (result < low) | (result > high)
    while outside.any():
        fresh = torch.empty_like(result).normal_(mean, std, generator=generator)
        result = torch.where(outside, fresh, result)
        outside = (result < low) | (result > high)
    return result


def _log_density_ratio_(x: Tensor, mean: float, std: float, log_peak: float) -> Tensor:
    # x <- log f(x) - log f(m) = -((x - mean) / std)^2 / 2 - log f(m), in torch's op order
    return x.sub_(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)


def _reject_uniform_proposals(
    tensor: Tensor, mean: float, std: float, a: float, b: float, generator: torch.Generator | None
) -> Tensor:
    peak = max(a, min(mean, b))
    log_peak = -0.5 * ((peak - mean) / std) ** 2
    proposal = torch.empty_like(tensor)
    log_u = torch.empty_like(tensor)
    result = tensor.uniform_(a, b, generator=generator)
    log_ratio = _log_density_ratio_(proposal.copy_(result), mean, std, log_peak)
    rejected = log_u.uniform_(generator=generator).log_().gt(log_ratio)
    while rejected.any():
        proposal.uniform_(a, b, generator=generator)
        result = torch.where(rejected, proposal, result)
        log_ratio = _log_density_ratio_(proposal, mean, std, log_peak)
        # still rejected: rejected before, and the new proposal is rejected too
        rejected &= log_u.uniform_(generator=generator).log_().gt(log_ratio)
    return result


def eye_(tensor: Fillable) -> Fillable:
    """Fill a 2-D tensor with the identity: W[i, j] = 1 if i == j else 0.

    A Linear with this weight passes its first min(in, out) inputs through unchanged.
    """
    values = values_of(tensor)
    if values.dim() != 2:
        raise ValueError(f"eye_: expected a 2-D tensor, got shape {tuple(values.shape)}")
    torch.eye(*values.shape, out=values)
    return tensor


def dirac_(tensor: Fillable, groups: int = 1) -> Fillable:
    """Fill a convolution weight with the Dirac delta, so that the convolution is identity.

    For a weight of shape (out, in, *kernel) split into ``groups`` blocks of
    out / groups output channels, block g maps input channel c to output channel
    g * (out / groups) + c for c < min(out / groups, in):

        W[g * (out / groups) + c, c, *centre] = 1,   every other entry 0,

    where centre = (k // 2 for k in kernel). With padding k // 2 such a convolution
    copies those input channels to its output.

    Shape:
        tensor: (out, in, k) or (out, in, kH, kW) or (out, in, kD, kH, kW)

    Raises:
        ValueError: a tensor that is not 3-, 4- or 5-D, or ``groups`` not dividing out.
    """
    values = values_of(tensor)
    if values.dim() not in (3, 4, 5):
        raise ValueError(
            f"dirac_: expected a 3-, 4- or 5-D tensor, got shape {tuple(values.shape)}"
        )
    out_channels, in_channels = values.shape[0], values.shape[1]
    if out_channels % groups != 0:
        raise ValueError(f"dirac_: dim 0 ({out_channels}) must be divisible by groups ({groups})")
    if values.is_meta:
        return tensor  # no storage to write into
    out_per_group = out_channels // groups
    identity_channels = min(out_per_group, in_channels)
    centre: tuple[int, ...] = tuple(size // 2 for size in values.shape[2:])
    values.zero_()
    for group in range(groups):
        for channel in range(identity_channels):
            index = (group * out_per_group + channel, channel, *centre)
            values[index] = 1
    return tensor


def orthogonal_(
    tensor: Fillable, gain: float = 1, generator: torch.Generator | None = None
) -> Fillable:
    """Fill with gain * Q, Q a random (semi-)orthogonal matrix (Saxe et al., 2013).

    The tensor is seen as a matrix of shape (rows, numel / rows). Q comes from the QR
    factorisation A = Q R of a matrix A of N(0, 1) draws (its transpose when it is
    wider than tall), each column of Q multiplied by the sign of R's diagonal so that
    Q is uniform over orthogonal matrices (Mezzadri, 2007). Drawn as torch draws it.
    """
    values = values_of(tensor)
    if values.dim() < 2:
        raise ValueError(
            f"orthogonal_: expected 2 or more dimensions, got shape {tuple(values.shape)}"
        )
    if values.numel() == 0 or values.is_meta:
        return tensor  # nothing to fill, and torch draws nothing either
    rows = values.shape[0]
    cols = values.numel() // rows
    a = values.new_empty((rows, cols)).normal_(0, 1, generator=generator)
    wide = rows < cols
    q, r = torch.linalg.qr(a.t() if wide else a)  # A = Q R, Q of orthonormal columns
    q *= torch.diag(r, 0).sign()  # column j of Q times sign(R[j, j])
    values.view_as(q.t() if wide else q).copy_(q.t() if wide else q)
    values.mul_(gain)
    return tensor


def sparse_(
    tensor: Fillable,
    sparsity: float,
    std: float = 0.01,
    generator: torch.Generator | None = None,
) -> Fillable:
    """Fill a 2-D tensor with N(0, std^2) draws, then zero part of each column (Martens, 2010).

    In every column, ceil(sparsity * rows) entries, at rows chosen uniformly without
    replacement, are set to 0; the others keep their normal draw.

    The normal draws come from ``generator`` but, as in torch 2.13, the zeroed rows
    come from one ``torch.randperm(rows)`` per column on the global RNG, so equal
    seeds give torch's bits only when both the generator and the global RNG match.

    Shape:
        tensor: (rows, cols)

    Raises:
        ValueError: a tensor that is not 2-D.
    """
    values = values_of(tensor)
    if values.dim() != 2:
        raise ValueError(f"sparse_: expected a 2-D tensor, got shape {tuple(values.shape)}")
    if values.is_meta:
        return tensor  # no storage, and torch consumes no random numbers here
    rows, cols = values.shape
    zeros_per_column = math.ceil(sparsity * rows)
    values.normal_(0, std, generator=generator)
    for column in range(cols):
        zeroed_rows = torch.randperm(rows)[:zeros_per_column]  # global RNG, as torch
        values[zeroed_rows, column] = 0
    return tensor

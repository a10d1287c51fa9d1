"""Gradient clipping: scale or clamp the gradients between ``backward`` and ``step``.

A training step that meets a steep cliff of the loss can get a gradient so large that
one update throws the weights far away. Clipping bounds the step instead:

- by norm: ``clip_grad_norm_`` treats all gradients as one vector g and, when
  ||g|| > max_norm, scales it to length max_norm, g = g * max_norm / (||g|| + 1e-6);
  the direction of the step is kept;
- by value: ``clip_grad_value_`` clamps each number of each gradient to [-c, c].

Used as in PyTorch::

    model.backward(loss_fn.backward())
    nograd.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()

Each function runs the ops torch.nn.utils runs, in its order, so the clipped
gradients and the returned norm are PyTorch's to the bit: the norm of each gradient,
the norm of those norms, and the scale computed as ``float / tensor`` is (the
reciprocal, then the product). Gradients of several dtypes or devices are grouped by
torch's own grouping function, whose order of groups (that of a C++ hash map) is the
order in which the total norm sums the norms.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable
from numbers import Real
from typing import cast

import torch
from torch import Tensor

from nograd.nn.parameter import Parameter

Parameters = Parameter | Iterable[Parameter]
# where torch's _foreach_* kernels run (torch.utils._foreach_utils); elsewhere, one op
# per tensor, as torch falls back to
FOREACH_DEVICES = ("cpu", "cuda", "xpu", "mtia")


def get_total_norm(
    tensors: Tensor | Iterable[Tensor],
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """The p-norm of the tensors taken together as one vector, ||(||t_1||, ||t_2||, ...)||.

    Args:
        tensors: the tensors (usually gradients), or one tensor.
        norm_type: p; ``inf`` (or ``"inf"``) for the largest absolute value.
        error_if_nonfinite: raise if the norm is nan or infinite.
        foreach: torch's ``_foreach_norm`` (one call per device and dtype) when True or
            None where it runs; False: one ``vector_norm`` per tensor.

    Returns:
        A 0-dim tensor on the first tensor's device; ``tensor(0.)`` for no tensors.
    """
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    p = float(norm_type)
    if not tensors:
        return torch.tensor(0.0)
    first_device = tensors[0].device
    norms: list[Tensor] = []  # ||t_i||, each a 0-dim tensor
    for device, group in _by_device_and_dtype(tensors):
        if _use_foreach(foreach, device):
            norms.extend(torch._foreach_norm(group, p))
        else:
            norms.extend(torch.linalg.vector_norm(t, p) for t in group)
    total: Tensor = torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]), p)
    if error_if_nonfinite and bool(torch.logical_or(total.isnan(), total.isinf())):
        raise RuntimeError(
            f"get_total_norm: the total norm of order {p} of the gradients is non-finite "
            f"({total.item()}), so it cannot be clipped; pass error_if_nonfinite=False to "
            "scale the gradients by it anyway"
        )
    return total


def clip_grads_with_norm_(
    parameters: Parameters,
    max_norm: float,
    total_norm: Tensor,
    foreach: bool | None = None,
) -> None:
    """Scale every gradient by min(max_norm / (total_norm + 1e-6), 1), in place.

    ``clip_grad_norm_`` with the norm computed beforehand (``get_total_norm``). The
    factor is applied even when it is 1, as torch does: comparing it with 1 first would
    read a GPU's number on the host and wait for the GPU.
    """
    grads = _grads(parameters)
    max_norm = float(max_norm)  # checked even when there is nothing to clip, as torch does
    if not grads:
        return
    # Written as torch writes it: a number over a tensor is Tensor.__rtruediv__, which
    # rounds 1 / x, then * max_norm (not the same bits as one division)
    coef = max_norm / (total_norm + 1e-6)  # coef = max_norm / (||g|| + 1e-6)
    coef = torch.clamp(coef, max=1.0)  # never scaled up
    for device, group in _by_device_and_dtype(grads):
        coef_here = coef.to(device)
        if _use_foreach(foreach, device):
            torch._foreach_mul_(group, coef_here)  # g = g * coef
        else:
            for g in group:
                g.mul_(coef_here)


def clip_grad_norm_(
    parameters: Parameters,
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Scale all gradients together so that their total p-norm is at most ``max_norm``.

    g = g * min(max_norm / (||g|| + 1e-6), 1), for the gradients of ``parameters``
    (those that have one) seen as one vector, in place.

    Args:
        parameters: the parameters (``model.parameters()``), or one parameter.
        max_norm: the largest norm the gradients keep.
        norm_type: p of the norm; ``inf`` (or ``"inf"``) for the largest absolute value.
        error_if_nonfinite: raise if the norm is nan or infinite, instead of scaling
            every gradient by it (to nan or 0).
        foreach: as in ``get_total_norm``.

    Returns:
        The total norm before clipping, a 0-dim tensor.
    """
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    else:
        was_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)  # a generator is read once, and used twice below
        if was_generator and not parameters:
            warnings.warn(
                "clip_grad_norm_: `parameters` is an empty generator, no gradient clipping "
                "will occur.",
                stacklevel=2,
            )
    total_norm = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
    return total_norm


def clip_grad_value_(
    parameters: Parameters, clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every number of every gradient to [-clip_value, clip_value], in place."""
    c = float(clip_value)
    for device, group in _by_device_and_dtype(_grads(parameters)):
        if _use_foreach(foreach, device):
            torch._foreach_clamp_min_(group, -c)  # g = max(g, -c)
            torch._foreach_clamp_max_(group, c)  # g = min(g, c)
        else:
            for g in group:
                g.clamp_(min=-c, max=c)


def check_max_norm(max_norm: object, what: str) -> None:
    """Raise unless ``max_norm`` is None or a positive finite number (for fit and the graph).

    ``clip_grad_norm_`` itself takes any number, as torch's does: 0 sets every
    gradient to 0, and a negative one turns the step around.
    """
    if max_norm is None:
        return
    if (
        isinstance(max_norm, bool)
        or not isinstance(max_norm, Real)
        or not 0 < float(max_norm) < math.inf
    ):
        raise ValueError(f"{what} must be a positive number, got {max_norm!r}")


def _grads(parameters: Parameters) -> list[Tensor]:
    """The gradients of the parameters that have one."""
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _by_device_and_dtype(tensors: list[Tensor]) -> list[tuple[torch.device, list[Tensor]]]:
    """The tensors in groups of one device and dtype (a foreach call takes one of each).

    torch's own grouping, so the groups come in torch's order (that of a C++ hash map,
    not of appearance): the total norm sums the groups' norms in that order, and a sum
    in another order may round differently. A None among the tensors raises its
    RuntimeError, as in torch."""
    if not tensors:
        return []  # (torch's grouping refuses an empty list)
    groups = torch._C._group_tensors_by_device_and_dtype([list(tensors)], False)
    return [(device, cast(list[Tensor], group)) for (device, _), ([group], _) in groups.items()]


def _use_foreach(foreach: bool | None, device: torch.device) -> bool:
    """Whether a group on ``device`` takes torch's ``_foreach_*`` ops, as torch decides."""
    supported = device.type in FOREACH_DEVICES
    if foreach and not supported:
        raise RuntimeError(
            f"foreach=True was passed, but can't use the foreach API on {device.type} tensors"
        )
    return supported if foreach is None else foreach

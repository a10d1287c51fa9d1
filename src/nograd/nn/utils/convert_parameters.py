"""A model's parameters as one vector and back, as ``torch.nn.utils`` does it.

Second-order methods, evolution strategies and weight averaging often treat all the
numbers of a model as one vector θ::

    theta = parameters_to_vector(model.parameters())        # (n,), a new tensor
    vector_to_parameters(theta + 0.01 * noise, model.parameters())

The order is that of the iterable: ``model.parameters()`` gives torch's, so a vector
moves between a nograd model and its ``torch.nn`` twin.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from nograd.nn.parameter import Parameter


def parameters_to_vector(parameters: Iterable[Parameter]) -> Tensor:
    """Every parameter's values, flattened and joined end to end in one new vector.

    Raises:
        TypeError: parameters on different devices, as torch raises.
    """
    params = list(parameters)
    _check_one_device(params)
    return torch.cat([param.data.reshape(-1) for param in params])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Parameter]) -> None:
    """Make each parameter's value its slice of ``vec``, in order, as torch does.

    Each ``param.data`` becomes a view of ``vec`` (no copy), shaped as the parameter:
    writing into ``vec`` afterwards changes the parameters, as in torch.

    Raises:
        TypeError: ``vec`` is not a tensor, or parameters on different devices.
    """
    if not isinstance(vec, Tensor):
        raise TypeError(f"vector_to_parameters: expected a torch.Tensor, got {type(vec).__name__}")
    params = list(parameters)
    _check_one_device(params)
    start = 0
    for param in params:
        stop = start + param.numel()
        param.data = vec[start:stop].view_as(param.data)  # θ[start:stop], in p's shape
        start = stop


def _check_one_device(params: list[Parameter]) -> None:
    devices = {param.device for param in params}
    if len(devices) > 1:
        raise TypeError(
            f"Found two parameters on different devices, this is currently not supported "
            f"(got {sorted(str(device) for device in devices)})"
        )

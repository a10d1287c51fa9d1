"""torch's fused update kernels, for the param groups of an optimizer built with ``fused=True``.

A fused kernel runs every line of an update rule (the decay, the moments, the step) in
one pass over each tensor, where the list version runs a pass per line. torch offers
them for SGD, Adam, AdamW and Adagrad, on the CPU and on GPUs, and uses them when asked
(``torch.optim.Adam(..., fused=True)``); so does nograd, with the same kernels, so a
fused group gives the bits of torch's fused optimizer. Those differ from the default
update's in the last place here and there: the kernel keeps the intermediate values in
registers and may contract a multiply and an add into one rounding.

The kernels read each parameter's step count t as a float32 0-dim tensor on its
device, which torch keeps in a fused group's state. nograd keeps t a Python number, as
for every group (``Optimizer.scalar_state``), and hands the kernel tensors made from it
at each step, in one copy to the device.

A fused group is never flattened (``nograd.optim.flat``): the kernels treat the start and
the end of each tensor in their own way, so a flat buffer could round a few numbers
differently from torch's separate tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from nograd.optim.foreach import TensorList


def check_fused(owner: str, p: TensorList) -> None:
    """torch's condition for its fused kernels: floating-point parameters."""
    for x in p:
        if not torch.is_floating_point(x):
            raise RuntimeError(
                f"{owner}: `fused=True` requires all the params to be floating point Tensors, "
                f"got {x.dtype}"
            )


def step_tensors(t: Sequence[float], like: Tensor) -> list[Tensor]:
    """Each step count t (already counted for this step) as the kernels read it."""
    return list(torch.tensor(list(t), dtype=torch.float32, device=like.device).unbind())


def sgd_step(
    group: Mapping[str, Any], p: TensorList, g: TensorList, states: list[dict[str, Any]]
) -> None:
    """SGD's whole rule (``nograd.optim.SGD``'s docstring) by ``torch._fused_sgd_``.

    With momentum, a parameter's first step makes its buffer b = g; the kernel does so
    for a whole call (``is_first_step``), so parameters whose first gradient came late
    take a call of their own.
    """
    options = {
        "weight_decay": group["weight_decay"],
        "momentum": group["momentum"],
        "lr": group["lr"],
        "dampening": group["dampening"],
        "nesterov": group["nesterov"],
        "maximize": group["maximize"],
    }
    if group["momentum"] == 0:  # no buffer: p = p - lr * g
        torch._fused_sgd_(list(p), list(g), [], is_first_step=False, **options)
        return
    seen = [i for i, state in enumerate(states) if "momentum_buffer" in state]
    new = [i for i, state in enumerate(states) if "momentum_buffer" not in state]
    for i in new:  # b = g, written by the kernel at this first step
        states[i]["momentum_buffer"] = torch.empty_like(g[i])
    for indices, first in ((seen, False), (new, True)):
        if indices:
            torch._fused_sgd_(
                [p[i] for i in indices],
                [g[i] for i in indices],
                [states[i]["momentum_buffer"] for i in indices],
                is_first_step=first,
                **options,
            )


def adam_step(
    group: Mapping[str, Any],
    p: TensorList,
    g: TensorList,
    m: TensorList,
    v: TensorList,
    v_max: TensorList,
    t: Sequence[float],
) -> None:
    """Adam's or AdamW's whole rule (``nograd.optim.Adam``'s docstring) by
    ``torch._fused_adam_`` or ``torch._fused_adamw_``; ``v_max`` empty without amsgrad."""
    kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
    beta1, beta2 = group["betas"]
    kernel(
        list(p),
        list(g),
        list(m),
        list(v),
        list(v_max),
        step_tensors(t, p[0]),
        amsgrad=group["amsgrad"],
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
    )


def adagrad_step(
    group: Mapping[str, Any], p: TensorList, g: TensorList, s: TensorList, t: Sequence[float]
) -> None:
    """Adagrad's whole rule (``nograd.optim.Adagrad``'s docstring) by ``torch._fused_adagrad_``."""
    torch._fused_adagrad_(
        list(p),
        list(g),
        list(s),
        step_tensors(t, p[0]),
        lr=group["lr"],
        lr_decay=group["lr_decay"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
    )

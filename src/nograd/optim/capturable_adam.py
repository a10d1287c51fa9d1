"""Adam's step with its step count t on the device, so that a CUDA graph can replay it.

``Adam.step`` computes the bias corrections 1 - beta^t as Python numbers; a CUDA graph
would freeze them at the values of the step it recorded. Here t, the bias corrections
and the step size are 0-dim device tensors instead, and the update is otherwise the
same (``nograd.cuda_graph.GraphedTrainStep`` uses it).
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import torch
from torch import Tensor

from nograd.nn.parameter import Parameter
from nograd.optim import foreach
from nograd.optim.adam import Adam


def adam_step_counts(optimizer: Adam) -> list[Tensor]:
    """Adam's t per param group, as 0-dim float64 tensors on the group's device.

    Read from ``state["step"]`` of the parameters that have state, not from which ones
    have a gradient now: a ``zero_grad()`` between two calls must change nothing.

    Raises:
        ValueError: if the parameters of one group have taken different numbers of steps.
    """
    counts = []
    for i, group in enumerate(optimizer.param_groups):
        params = [param for param in group["params"] if optimizer.state.get(param)]
        steps = {float(optimizer.state[param]["step"]) for param in params}
        if len(steps) > 1:
            raise ValueError(
                f"GraphedTrainStep: expected every parameter of param_groups[{i}] to have "
                f"taken the same number of steps, got step counts {sorted(steps)}"
            )
        device = params[0].device if params else group["params"][0].device
        counts.append(
            torch.tensor(steps.pop() if steps else 0.0, dtype=torch.float64, device=device)
        )
    return counts


def capturable_adam_step(
    optimizer: Adam,
    steps: Sequence[Tensor],
    only: AbstractSet[Parameter] | None = None,
    advanced: set[int] | None = None,
) -> None:
    """``optimizer.step()`` for Adam/AdamW with t on the device, so a graph can replay it.

    The update is ``Adam.step``'s (see its docstring); only the step count t, the bias
    corrections and the step size s = lr / (1 - beta1^t) are tensors, computed on the
    device in float64, where ``Adam.step`` computes them as Python floats that a capture
    would freeze. The last line is rearranged (as in ``torch.optim.Adam(capturable=True)``)
    because ``addcdiv_`` takes its factor as a Python number only::

        p - s m / d  =  p + m / (d / -s),   d = sqrt(v) / sqrt(1 - beta2^t) + eps

    ``state["step"]`` (a Python float) is left alone: a graph replays tensor work only,
    so whoever replays advances it (``GraphedTrainStep`` does, after every replay).

    Args:
        optimizer: an Adam or AdamW whose state exists (after at least one eager step).
        steps: t of each param group before this step (``adam_step_counts``), advanced
            in place.
        only: update just these of the parameters (a step in parts, layer by layer:
            ``nograd.layer_updates``); None: every parameter that has a gradient.
        advanced: for a step in parts, the indices of the groups whose t this step has
            advanced already; t of each group is advanced once, by the first part that
            updates it, which adds the group's index here.
    """
    for i, (group, t) in enumerate(zip(optimizer.param_groups, steps, strict=True)):
        params = [
            param
            for param in group["params"]
            if param.grad is not None and (only is None or param in only)
        ]
        if not params:
            continue
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        amsgrad = group["amsgrad"]
        states = [optimizer.state[param] for param in params]
        if not all(states):
            raise ValueError(
                f"GraphedTrainStep: a parameter has a gradient but no {type(optimizer).__name__}"
                " state; every parameter must take part in the warm-up steps"
            )
        p = [param.data for param in params]
        g = [param.grad for param in params if param.grad is not None]
        m = [state["exp_avg"] for state in states]
        v = [state["exp_avg_sq"] for state in states]
        g = list(optimizer._maximize_and_decay(group, p, g))  # -g; g + wd p, or p (1 - lr wd)
        optimizer._update_moments(m, v, g, beta1, beta2)  # m, v = running g and g^2
        if amsgrad:
            v_max = [state["max_exp_avg_sq"] for state in states]
            foreach.maximum_(v_max, v)  # v_max = max(v_max, v)
            v = v_max
        if advanced is None or i not in advanced:
            t.add_(1)  # t = t + 1, on the device
            if advanced is not None:
                advanced.add(i)
        if lr == 0:
            continue  # s = 0: p stays as it is (d / -s would divide by zero)
        dtype = p[0].dtype
        bias_correction2_sqrt = torch.sqrt(1 - torch.pow(beta2, t)).to(dtype)  # sqrt(1 - beta2^t)
        minus_s = torch.reciprocal(1 - torch.pow(beta1, t)).mul_(-lr).to(dtype)  # -lr/(1-beta1^t)
        denom = foreach.sqrt(v)  # sqrt(v)
        foreach.div_(denom, bias_correction2_sqrt)  # sqrt(v) / sqrt(1 - beta2^t)
        foreach.add_scalar_(denom, eps)  # d = ... + eps
        foreach.div_(denom, minus_s)  # d / -s
        foreach.addcdiv_(p, m, denom)  # p = p + m / (d / -s) = p - s m / d

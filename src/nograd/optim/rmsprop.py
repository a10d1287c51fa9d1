"""RMSprop: steps divided by a running root-mean-square of the gradient."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.nn.parameter import Parameter
from nograd.optim import foreach
from nograd.optim.optimizer import Optimizer, ParamsT


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012), as ``torch.optim.RMSprop``.

    For each parameter p with gradient g (skipped when ``g is None``)::

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            a = a + (1 - alpha) * (g - a)       running mean of g
            d = sqrt(v - a * a) + eps           (a running standard deviation)
        else:
            d = sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / d
            p = p - lr * b
        else:
            p = p - lr * g / d

    Each line runs once per param group, on all its parameters together.

    State per parameter: ``step`` (a Python float; a 0-dim CPU tensor in
    ``state_dict()``, as torch writes it), ``square_avg`` (v), ``momentum_buffer``
    (b) when momentum > 0 and ``grad_avg`` (a) when centered.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        alpha: smoothing constant of the running averages.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        momentum: momentum factor.
        centered: normalise by the gradient's estimated variance, not its raw
            second moment.
        capturable, foreach, differentiable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
        maximize: ascend the objective instead of descending it.
    """

    scalar_state = frozenset({"step"})

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(options, "lr", "alpha", "eps", "weight_decay", "momentum")

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            tensors = self._with_grads(group)  # p, g, v, a, b, d: one per parameter, or one flat
            params, p, g = tensors.params, tensors.p, tensors.g
            if not params:
                continue
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            mu, centered = group["momentum"], group["centered"]
            states = [self._state_of(param, mu, centered) for param in params]
            tensors.count_step(states)  # t = t + 1: unused by the update, kept for torch's format
            g = self._maximize_and_decay(group, p, g)  # g = -g if maximize; g = g + wd * p
            v = tensors.state(states, "square_avg")
            foreach.mul_(v, self._scalar(alpha, v))  # v = alpha * v
            foreach.addcmul_(v, g, g, value=1 - alpha)  # v = v + (1 - alpha) * g * g
            scratch = self._scratch(group, "d", v)  # d's memory: on the CPU, kept between steps
            if centered:
                a = tensors.state(states, "grad_avg")
                foreach.lerp_(a, g, 1 - alpha)  # a = a + (1 - alpha) * (g - a)
                d = foreach.addcmul(v, a, a, value=-1, out=scratch)  # d = v - a * a
                foreach.sqrt_(d)  # d = sqrt(d)
            else:
                d = foreach.sqrt(v, out=scratch)  # d = sqrt(v)
            foreach.add_scalar_(d, self._scalar(eps, d))  # d = d + eps
            if mu > 0:
                b = tensors.state(states, "momentum_buffer")
                foreach.mul_(b, self._scalar(mu, b))  # b = mu * b
                foreach.addcdiv_(b, g, d)  # b = b + g / d
                foreach.add_(p, b, alpha=-lr)  # p = p - lr * b
            else:
                foreach.addcdiv_(p, g, d, value=-lr)  # p = p - lr * g / d
        return loss

    def _state_of(self, param: Parameter, mu: float, centered: bool) -> dict[str, Any]:
        """The parameter's state, created at its first step: t = 0 and zero averages."""
        state = self.state[param]
        if not state:
            state["step"] = 0.0
            state["square_avg"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
            if mu > 0:
                state["momentum_buffer"] = torch.zeros_like(
                    param.data, memory_format=torch.preserve_format
                )
            if centered:
                state["grad_avg"] = torch.zeros_like(
                    param.data, memory_format=torch.preserve_format
                )
        return state

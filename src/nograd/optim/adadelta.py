"""Adadelta: steps scaled by the ratio of two running root mean squares, of steps and of g."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.nn.parameter import Parameter
from nograd.optim import foreach
from nograd.optim.optimizer import Optimizer, ParamsT


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012), as ``torch.optim.Adadelta``.

    For each parameter p with gradient g (skipped when ``g is None``)::

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0
        v = rho * v + (1 - rho) * g * g         running mean of g^2
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta running mean of the steps' squares
        p = p - lr * delta

    The step has the units of p: the root mean square of past steps over that of
    the gradients, times g. So it needs no learning rate in principle; torch's keeps
    one, 1.0 by default.

    Each line runs once per param group, on all its parameters together, in the order
    and with the ops of torch's single-tensor Adadelta, its default on the CPU.

    State per parameter: ``step`` (a Python float; a 0-dim CPU tensor in
    ``state_dict()``, as torch writes it; the rule does not use it), ``square_avg``
    (v) and ``acc_delta`` (u).

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: scales delta before it is applied.
        rho: decay rate of the running averages, in [0, 1].
        eps: added under both square roots, for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend the objective instead of descending it.
        foreach, capturable, differentiable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
    """

    scalar_state = frozenset({"step"})

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "capturable": capturable,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(options, "lr", "eps", "weight_decay")
        rho = options["rho"]
        self._require(isinstance(rho, (int, float)) and 0 <= rho <= 1, "rho", "in [0, 1]", rho)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            tensors = self._with_grads(group)  # p, g, v, u: one tensor per parameter, or one flat
            params, p, g = tensors.params, tensors.p, tensors.g
            if not params:
                continue
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            states = [self._state_of(param) for param in params]
            tensors.count_step(states)  # t = t + 1: unused by the update, kept for torch's format
            g = self._maximize_and_decay(group, p, g)  # g = -g if maximize; g = g + wd * p
            v, u = tensors.state(states, "square_avg"), tensors.state(states, "acc_delta")
            foreach.mul_(v, self._scalar(rho, v))  # v = rho * v
            foreach.addcmul_(v, g, g, value=1 - rho)  # v = v + (1 - rho) * g * g
            eps_scalar = self._scalar(eps, v)
            std = foreach.add_scalar(v, eps_scalar, out=self._scratch(group, "std", v))
            foreach.sqrt_(std)  # std = sqrt(v + eps)
            delta = foreach.add_scalar(u, eps_scalar, out=self._scratch(group, "delta", u))
            foreach.sqrt_(delta)  # delta = sqrt(u + eps)
            foreach.div_(delta, std)  # delta = sqrt(u + eps) / sqrt(v + eps)
            foreach.mul_(delta, g)  # delta = delta * g
            foreach.mul_(u, self._scalar(rho, u))  # u = rho * u
            foreach.addcmul_(u, delta, delta, value=1 - rho)  # u = u + (1 - rho) * delta^2
            foreach.add_(p, delta, alpha=-lr)  # p = p - lr * delta
        return loss

    def _state_of(self, param: Parameter) -> dict[str, Any]:
        """The parameter's state, created at its first step: t = 0, v = 0 and u = 0."""
        state = self.state[param]
        if not state:
            state["step"] = 0.0
            state["square_avg"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
            state["acc_delta"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
        return state

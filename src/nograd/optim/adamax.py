"""Adamax: Adam with the infinity norm of the gradients in place of their root mean square."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.nn.parameter import Parameter
from nograd.optim import foreach
from nograd.optim.optimizer import Optimizer, ParamsT


class Adamax(Optimizer):
    """Adamax (Kingma & Ba, 2015, section 7.1), as ``torch.optim.Adamax``.

    For each parameter p with gradient g (skipped when ``g is None``), t counting
    the steps this parameter has taken::

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0
        m = m + (1 - beta1) * (g - m)           running mean of g, as Adam's
        u = max(beta2 * u, |g| + eps)           a decaying maximum of |g|
        p = p - lr / (1 - beta1^t) * m / u

    Where Adam divides by the root of a running mean of g^2, Adamax divides by a
    running maximum of |g|: the limit of Adam's p-norm as p grows. u needs no bias
    correction, and eps inside the maximum keeps it away from 0.

    Each line runs once per param group, on all its parameters together, in the order
    and with the ops of torch's single-tensor Adamax, its default on the CPU.

    State per parameter: ``step`` (t, a Python float; a 0-dim CPU tensor in
    ``state_dict()``, as torch writes it), ``exp_avg`` (m) and ``exp_inf`` (u).

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        betas: decay rates (beta1, beta2) of m and of u, each in [0, 1).
        eps: added to |g| inside the maximum, for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend the objective instead of descending it.
        foreach, differentiable, capturable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
    """

    scalar_state = frozenset({"step"})

    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(options, "lr", "eps", "weight_decay")
        self._require_betas(options)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            tensors = self._with_grads(group)  # p, g, m, u: one tensor per parameter, or one flat
            params, p, g = tensors.params, tensors.p, tensors.g
            if not params:
                continue
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            states = [self._state_of(param) for param in params]
            t = tensors.count_step(states)  # t = t + 1
            g = self._maximize_and_decay(group, p, g)  # g = -g if maximize; g = g + wd * p
            m, u = tensors.state(states, "exp_avg"), tensors.state(states, "exp_inf")
            foreach.lerp_(m, g, 1 - beta1)  # m = m + (1 - beta1) * (g - m)
            foreach.mul_(u, self._scalar(beta2, u))  # u = beta2 * u
            g_abs = foreach.abs(g, out=self._scratch(group, "g_abs", g))  # |g|
            foreach.add_scalar_(g_abs, self._scalar(eps, g_abs))  # |g| + eps
            foreach.maximum_(u, g_abs)  # u = max(beta2 * u, |g| + eps)
            minus_step_size = [-lr / (1 - beta1**t_i) for t_i in t]
            foreach.addcdiv_(p, m, u, minus_step_size)  # p = p - lr / (1 - beta1^t) * m / u
        return loss

    def _state_of(self, param: Parameter) -> dict[str, Any]:
        """The parameter's state, created at its first step: t = 0, m = 0 and u = 0."""
        state = self.state[param]
        if not state:
            state["step"] = 0.0
            state["exp_avg"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
            state["exp_inf"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
        return state

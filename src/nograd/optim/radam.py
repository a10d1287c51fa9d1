"""RAdam: Adam whose adaptive step waits until the variance estimate can be trusted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.nn.parameter import Parameter
from nograd.optim import foreach
from nograd.optim.foreach import TensorList
from nograd.optim.optimizer import Optimizer, ParamsT


class RAdam(Optimizer):
    """RAdam (Liu et al., 2020), as ``torch.optim.RAdam``.

    For each parameter p with gradient g (skipped when ``g is None``), t counting
    the steps this parameter has taken::

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0 (L2)
        p = p * (1 - lr * weight_decay)         instead, if decoupled_weight_decay
        m = m + (1 - beta1) * (g - m)           i.e. beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        u = m / (1 - beta1^t) * lr              Adam's step without its denominator
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        if rho_t > 5:                           the variance estimate is usable
            r = sqrt(1 - beta2^t) / (sqrt(v) + eps)
            rect = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
            u = u * r * rect
        p = p - u

    rho_t estimates how many gradients v has seen; while it is small (the first
    steps: 5 of them with beta2 = 0.999), v's variance is too large to divide by, and
    the step is momentum alone. After that, ``rect`` scales the adaptive step by how
    far v's variance has come down, rising to 1.

    Each line runs once per param group, on all its parameters together (a group
    whose parameters differ in t takes the rectified step for some only). The lines
    round as torch's do: r as the reciprocal of sqrt(v) + eps times sqrt(1 - beta2^t)
    (torch's ``number / tensor``), then u * r, then u * rect.

    State per parameter: ``step`` (t, a Python float; a 0-dim CPU tensor in
    ``state_dict()``, as torch writes it), ``exp_avg`` (m) and ``exp_avg_sq`` (v).

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        betas: decay rates (beta1, beta2) of the moment estimates, each in [0, 1).
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty (or, when decoupled, the decay rate of p).
        decoupled_weight_decay: decay p directly instead of adding to g, as AdamW.
        maximize: ascend the objective instead of descending it.
        foreach, capturable, differentiable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
    """

    scalar_state = frozenset({"step"})

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(options, "lr", "eps", "weight_decay")
        self._require_betas(options)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            tensors = self._with_grads(group)  # p, g, m, v: one tensor per parameter, or one flat
            params, p, g = tensors.params, tensors.p, tensors.g
            if not params:
                continue
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            states = [self._state_of(param) for param in params]
            t = tensors.count_step(states)  # t = t + 1
            g = self._maximize_and_decay(group, p, g)  # -g if maximize; g + wd p, or p (1 - lr wd)
            m, v = tensors.state(states, "exp_avg"), tensors.state(states, "exp_avg_sq")
            self._update_moments(m, v, g, beta1, beta2)  # m, v = running g and g^2
            bias_correction1 = [1 - beta1**t_i for t_i in t]
            u = foreach.div(m, bias_correction1, out=self._scratch(group, "u", m))  # m / (1-b1^t)
            foreach.mul_(u, self._scalar(lr, u))  # u = m / (1 - beta1^t) * lr
            rectified = _rectified(t, beta2)  # {i: (sqrt(1 - beta2^t), rect)} where rho_t > 5
            if rectified:
                chosen = list(rectified)
                u_r, v_r = _pick(u, chosen), _pick(v, chosen)
                scratch = self._scratch(group, "r", v)
                kept = None if scratch is None else _pick(scratch, chosen)  # memory, CPU only
                r = foreach.sqrt(v_r, out=kept)  # r = sqrt(v)
                foreach.add_scalar_(r, self._scalar(eps, r))  # r = sqrt(v) + eps
                foreach.reciprocal_(r)  # r = 1 / (sqrt(v) + eps)
                foreach.mul_(r, [rectified[i][0] for i in chosen])  # r = sqrt(1 - beta2^t) * r
                foreach.mul_(u_r, r)  # u = u * r
                foreach.mul_(u_r, [rectified[i][1] for i in chosen])  # u = u * rect
            foreach.add_(p, u, alpha=-1.0)  # p = p - u
        return loss

    def _state_of(self, param: Parameter) -> dict[str, Any]:
        """The parameter's state, created at its first step: t = 0 and zero moments."""
        state = self.state[param]
        if not state:
            state["step"] = 0.0
            state["exp_avg"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
        return state


def _rectified(t: list[float], beta2: float) -> dict[int, tuple[float, float]]:
    """For each tensor i whose rho_t > 5: (sqrt(1 - beta2^t), rect), as torch computes them."""
    rho_inf = 2 / (1 - beta2) - 1
    chosen = {}
    for i, t_i in enumerate(t):
        bias_correction2 = 1 - beta2**t_i
        rho_t = rho_inf - 2 * t_i * (beta2**t_i) / bias_correction2
        if rho_t > 5.0:
            rect = (
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            ) ** 0.5
            chosen[i] = (bias_correction2**0.5, rect)
    return chosen


def _pick(tensors: TensorList, indices: list[int]) -> TensorList:
    """The tensors at these positions (all of them, often)."""
    return tensors if len(indices) == len(tensors) else [tensors[i] for i in indices]

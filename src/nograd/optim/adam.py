"""Adam and AdamW: steps scaled by running estimates of the gradient's moments."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.nn.parameter import Parameter
from nograd.optim import foreach, fused
from nograd.optim.optimizer import Optimizer, ParamsT


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), as ``torch.optim.Adam``.

    For each parameter p with gradient g (skipped when ``g is None``), t counting
    the steps this parameter has taken::

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0 (L2, Adam)
        p = p * (1 - lr * weight_decay)         instead, if decoupled (AdamW)
        m = m + (1 - beta1) * (g - m)           i.e. beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v); v = v_max        if amsgrad
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Each line runs once per param group, on all its parameters together.

    State per parameter: ``step`` (t, a Python float; a 0-dim CPU tensor in
    ``state_dict()``, as torch writes it), ``exp_avg`` (m), ``exp_avg_sq`` (v) and,
    with amsgrad, ``max_exp_avg_sq``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        betas: decay rates (beta1, beta2) of the moment estimates, each in [0, 1).
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty (or, when decoupled, the decay rate of p).
        amsgrad: normalise by the largest v seen so far (Reddi et al., 2018).
        maximize: ascend the objective instead of descending it.
        foreach, capturable, differentiable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
        fused: the whole update in torch's fused kernel (``nograd.optim.fused``).
        decoupled_weight_decay: decay p directly instead of adding to g (AdamW).
    """

    scalar_state = frozenset({"step"})

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
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
            amsgrad = group["amsgrad"]
            if group.get("fused"):  # refused before any state changes, as in torch
                fused.check_fused(self._name, p)
            states = [self._state_of(param, amsgrad) for param in params]
            t = tensors.count_step(states)  # t = t + 1
            m, v = tensors.state(states, "exp_avg"), tensors.state(states, "exp_avg_sq")
            if group.get("fused"):  # every line below in one kernel per tensor, torch's fused bits
                v_max = tensors.state(states, "max_exp_avg_sq") if amsgrad else []
                fused.adam_step(group, p, g, m, v, v_max, t)
                continue
            g = self._maximize_and_decay(group, p, g)  # -g if maximize; g + wd p, or p (1 - lr wd)
            self._update_moments(m, v, g, beta1, beta2)  # m, v = running g and g^2
            if amsgrad:
                v_max = tensors.state(states, "max_exp_avg_sq")
                foreach.maximum_(v_max, v)  # v_max = max(v_max, v)
                v = v_max
            bias_correction2_sqrt = [(1 - beta2**t_i) ** 0.5 for t_i in t]
            minus_step_size = [-lr / (1 - beta1**t_i) for t_i in t]
            denom = foreach.sqrt(v, out=self._scratch(group, "denom", v))  # d = sqrt(v)
            foreach.div_(denom, bias_correction2_sqrt)  # d = d / sqrt(1 - beta2^t)
            foreach.add_scalar_(denom, self._scalar(eps, denom))  # d = d + eps
            foreach.addcdiv_(p, m, denom, minus_step_size)  # p = p - lr/(1-beta1^t) * m/d
        return loss

    def _state_of(self, param: Parameter, amsgrad: bool) -> dict[str, Any]:
        """The parameter's state, created at its first step: t = 0 and zero moments."""
        state = self.state[param]
        if not state:
            state["step"] = 0.0
            state["exp_avg"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(
                    param.data, memory_format=torch.preserve_format
                )
        return state


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``.

    The decay shrinks p directly, before the moments are updated, instead of
    entering g, so it is not rescaled by sqrt(v)::

        p = p * (1 - lr * weight_decay)
        (then the Adam step with weight_decay = 0)

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        betas: decay rates (beta1, beta2) of the moment estimates, each in [0, 1).
        eps: added to the denominator for numerical stability.
        weight_decay: decay rate lambda of the parameters (default 1e-2).
        amsgrad: normalise by the largest v seen so far.
        maximize: ascend the objective instead of descending it.
        foreach, capturable, differentiable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
        fused: the whole update in torch's fused kernel (``nograd.optim.fused``).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``; the decay stays decoupled, as in torch."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True

"""Adagrad: each number's step divided by the root of its summed squared gradients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.nn.parameter import Parameter
from nograd.optim import foreach, fused
from nograd.optim.optimizer import Optimizer, ParamsT


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer, 2011), as ``torch.optim.Adagrad``.

    For each parameter p with gradient g (skipped when ``g is None``), t counting
    the steps this parameter has taken::

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0
        s = s + g * g                           the squared gradients so far
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)

    A number whose gradients have been large takes small steps from then on, and one
    whose gradients have been small takes large ones. s only grows, so every step
    shrinks over time; ``lr_decay`` shrinks them faster still.

    Each line runs once per param group, on all its parameters together. The last is
    one ``addcdiv``, as in torch's single-tensor Adagrad, its default on the CPU, whose
    bits its foreach Adagrad gives there too; on a GPU torch's default is the foreach
    one, which computes that line as a product, a quotient and a sum, so there
    nograd's bits should be those of ``torch.optim.Adagrad(..., foreach=False)``, which
    ``tests/test_cuda.py`` checks on a GPU.

    State per parameter: ``step`` (t, a Python float; a 0-dim CPU tensor in
    ``state_dict()``, as torch writes it) and ``sum`` (s). As in torch, the
    optimizer makes them when it is built, so a checkpoint taken before the first
    step holds them too, and s starts at the ``initial_accumulator_value`` given to
    the constructor for every parameter: a param group's own value is kept in the
    group and not used, as torch does. A parameter without state at a step (of a
    group added later, or after ``del optimizer.state[p]``) gets it then, as in torch
    2.13 (torch 2.11 raised KeyError).

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        lr_decay: the step size at step t is lr / (1 + (t - 1) * lr_decay).
        weight_decay: L2 penalty added to the gradient.
        initial_accumulator_value: the starting value of every number of s.
        eps: added to the denominator for numerical stability.
        maximize: ascend the objective instead of descending it.
        foreach, differentiable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
        fused: the whole update in torch's fused kernel (``nograd.optim.fused``).
    """

    scalar_state = frozenset({"step"})

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:  # torch makes the state now, not at the first step
            for param in group["params"]:
                self._state_of(param)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(
            options, "lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"
        )

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            tensors = self._with_grads(group)  # p, g, s: one tensor per parameter, or one flat
            params, p, g = tensors.params, tensors.p, tensors.g
            if not params:
                continue
            lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
            if group.get("fused"):  # refused before any state changes, as in torch
                fused.check_fused(self._name, p)
            states = [self._state_of(param) for param in params]
            t = tensors.count_step(states)  # t = t + 1
            s = tensors.state(states, "sum")
            if group.get("fused"):  # every line below in one kernel per tensor, torch's fused bits
                fused.adagrad_step(group, p, g, s, t)
                continue
            g = self._maximize_and_decay(group, p, g)  # g = -g if maximize; g = g + wd * p
            foreach.addcmul_(s, g, g, value=1)  # s = s + g * g
            d = foreach.sqrt(s, out=self._scratch(group, "d", s))  # d = sqrt(s)
            foreach.add_scalar_(d, self._scalar(eps, d))  # d = d + eps
            minus_step_size = [-lr / (1 + (t_i - 1) * lr_decay) for t_i in t]
            foreach.addcdiv_(p, g, d, minus_step_size)  # p = p - lr / (1 + (t-1) decay) * g / d
        return loss

    def _state_of(self, param: Parameter) -> dict[str, Any]:
        """The parameter's state: t = 0 and s filled with the constructor's initial value."""
        state = self.state[param]
        if not state:
            state["step"] = 0.0
            initial = self.defaults["initial_accumulator_value"]
            state["sum"] = torch.full_like(param.data, initial, memory_format=torch.preserve_format)
        return state

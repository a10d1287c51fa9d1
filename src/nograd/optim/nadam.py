"""NAdam: Adam whose momentum looks one step ahead, as Nesterov's does."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.nn.parameter import Parameter
from nograd.optim import foreach
from nograd.optim.optimizer import Optimizer, ParamsT, scalar_dtype


class NAdam(Optimizer):
    """NAdam (Dozat, 2016), as ``torch.optim.NAdam``.

    For each parameter p with gradient g (skipped when ``g is None``), t counting
    the steps this parameter has taken::

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0 (L2)
        p = p * (1 - lr * weight_decay)         instead, if decoupled_weight_decay
        mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))    the momentum at step t
        P = P * mu_t                            P: the product mu_1 ... mu_t
        m = m + (1 - beta1) * (g - m)           i.e. beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        d = sqrt(v / (1 - beta2^t)) + eps
        p = p - lr * (1 - mu_t) / (1 - P) * g / d
        p = p - lr * mu_{t+1} / (1 - P * mu_{t+1}) * m / d

    The last two lines are Adam's step with Nesterov's look-ahead: the momentum m
    weighted with next step's mu_{t+1}, and the fresh gradient g with this step's
    share. ``momentum_decay`` makes mu_t grow from 0.5 beta1 towards beta1.

    Each line runs once per param group, on all its parameters together.

    State per parameter: ``step`` (t) and ``mu_product`` (P), Python floats here and
    0-dim CPU tensors in ``state_dict()``, as torch writes them; P is rounded as
    torch's tensor rounds it, to float32 unless the default dtype is float64.
    ``exp_avg`` (m) and ``exp_avg_sq`` (v).

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        betas: decay rates (beta1, beta2) of the moment estimates, each in [0, 1).
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty (or, when decoupled, the decay rate of p).
        momentum_decay: how fast mu_t rises to beta1 (psi in the paper).
        decoupled_weight_decay: decay p directly instead of adding to g, as AdamW.
        maximize: ascend the objective instead of descending it.
        foreach, capturable, differentiable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
    """

    scalar_state = frozenset({"step", "mu_product"})

    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
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
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(options, "lr", "eps", "weight_decay", "momentum_decay")
        self._require_betas(options)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            tensors = self._with_grads(group)  # p, g, m, v: one tensor per parameter, or one flat
            params, p, g = tensors.params, tensors.p, tensors.g
            if not params:
                continue
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            psi = group["momentum_decay"]
            states = [self._state_of(param) for param in params]
            for state in states:
                t = state["step"] = float(state["step"]) + 1  # t = t + 1
                mu = beta1 * (1 - 0.5 * 0.96 ** (t * psi))  # mu_t
                state["mu_product"] = _as_scalar(float(state["mu_product"]) * _as_scalar(mu))
            g = self._maximize_and_decay(group, p, g)  # -g if maximize; g + wd p, or p (1 - lr wd)
            m, v = tensors.state(states, "exp_avg"), tensors.state(states, "exp_avg_sq")
            self._update_moments(m, v, g, beta1, beta2)  # m, v = running g and g^2
            t_list = tensors.counters(states, "step")
            product = tensors.counters(states, "mu_product")
            bias_correction2 = [1 - beta2**t_i for t_i in t_list]
            d = foreach.div(v, bias_correction2, out=self._scratch(group, "d", v))  # v / (1-b2^t)
            foreach.sqrt_(d)  # d = sqrt(v / (1 - beta2^t))
            foreach.add_scalar_(d, self._scalar(eps, d))  # d = d + eps
            g_share, m_share = [], []
            for t_i, product_i in zip(t_list, product, strict=True):
                mu = beta1 * (1 - 0.5 * 0.96 ** (t_i * psi))
                mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t_i + 1) * psi))
                g_share.append(-lr * (1 - mu) / (1 - product_i))
                m_share.append(-lr * mu_next / (1 - product_i * mu_next))
            foreach.addcdiv_(p, g, d, g_share)  # p = p - lr (1 - mu_t) / (1 - P) * g / d
            foreach.addcdiv_(p, m, d, m_share)  # p = p - lr mu_t+1 / (1 - P mu_t+1) * m / d
        return loss

    def _state_of(self, param: Parameter) -> dict[str, Any]:
        """The parameter's state, created at its first step: t = 0, P = 1, zero moments."""
        state = self.state[param]
        if not state:
            state["step"] = 0.0
            state["mu_product"] = 1.0
            state["exp_avg"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param.data, memory_format=torch.preserve_format)
        return state


def _as_scalar(value: float) -> float:
    """``value`` rounded to the dtype of torch's counter tensors (``scalar_dtype``).

    torch keeps P in a 0-dim tensor: ``P *= mu`` rounds mu to its dtype, then the
    product. For float32, the exact product of two float32 numbers fits in a Python
    float, so rounding it once more gives what the tensor holds.
    """
    if scalar_dtype() == torch.float64:
        return value
    rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    return rounded

"""Adam and AdamW: steps scaled by running estimates of the gradient's moments."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.optim.optimizer import Optimizer, ParamsT, scalar_dtype


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

    State per parameter: ``step`` (t, a 0-dim CPU tensor, as torch keeps it),
    ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with amsgrad, ``max_exp_avg_sq``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        betas: decay rates (beta1, beta2) of the moment estimates, each in [0, 1).
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty (or, when decoupled, the decay rate of p).
        amsgrad: normalise by the largest v seen so far (Reddi et al., 2018).
        maximize: ascend the objective instead of descending it.
        decoupled_weight_decay: decay p directly instead of adding to g (AdamW).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(options, "lr", "eps", "weight_decay")
        betas = options["betas"]
        self._require(
            isinstance(betas, (tuple, list)) and len(betas) == 2, "betas", "to be a pair", betas
        )
        for i, beta in enumerate(betas):
            self._require(0 <= beta < 1, f"betas[{i}]", "in [0, 1)", beta)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            weight_decay, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
            amsgrad, maximize = group["amsgrad"], group["maximize"]
            for param in group["params"]:
                g = param.grad
                if g is None:
                    continue
                p = param.data
                state = self.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if amsgrad:
                        state["max_exp_avg_sq"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                t = state["step"].add_(1).item()  # t = t + 1
                if maximize:
                    g = -g
                if weight_decay != 0:
                    if decoupled:
                        p.mul_(1 - lr * weight_decay)  # p = p * (1 - lr * wd)
                    else:
                        g = g.add(p, alpha=weight_decay)  # g + wd * p, param.grad intact
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)  # m = m + (1 - beta1) * (g - m)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v = beta2*v + (1-beta2)*g^2
                if amsgrad:
                    v_max = state["max_exp_avg_sq"]
                    torch.maximum(v_max, v, out=v_max)  # v_max = max(v_max, v)
                    v = v_max
                step_size = lr / (1 - beta1**t)
                bias_correction2_sqrt = (1 - beta2**t) ** 0.5
                denom = v.sqrt().div_(bias_correction2_sqrt).add_(eps)  # sqrt(v_hat) + eps
                p.addcdiv_(m, denom, value=-step_size)  # p -= lr * m_hat / denom
        return loss


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
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
        )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``; the decay stays decoupled, as in torch."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True

"""RMSprop: steps divided by a running root-mean-square of the gradient."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from nograd.optim.optimizer import Optimizer, ParamsT, scalar_dtype


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

    State per parameter: ``step`` (a 0-dim CPU tensor, kept as torch keeps it),
    ``square_avg`` (v), ``momentum_buffer`` (b) when momentum > 0 and
    ``grad_avg`` (a) when centered.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        alpha: smoothing constant of the running averages.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        momentum: momentum factor.
        centered: normalise by the gradient's estimated variance, not its raw
            second moment.
        maximize: ascend the objective instead of descending it.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(options, "lr", "alpha", "eps", "weight_decay", "momentum")

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            weight_decay, mu = group["weight_decay"], group["momentum"]
            centered, maximize = group["centered"], group["maximize"]
            for param in group["params"]:
                g = param.grad
                if g is None:
                    continue
                p = param.data
                state = self.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                    if centered:
                        state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"].add_(1)  # unused by the update; kept for torch's checkpoints
                if maximize:
                    g = -g
                if weight_decay != 0:
                    g = g.add(p, alpha=weight_decay)  # g + wd * p, param.grad intact
                v = state["square_avg"]
                v.mul_(alpha).addcmul_(g, g, value=1 - alpha)  # v = alpha*v + (1-alpha)*g^2
                if centered:
                    a = state["grad_avg"]
                    a.lerp_(g, 1 - alpha)  # a = a + (1 - alpha) * (g - a)
                    d = v.addcmul(a, a, value=-1).sqrt_()  # sqrt(v - a^2)
                else:
                    d = v.sqrt()
                d.add_(eps)  # d = d + eps
                if mu > 0:
                    b = state["momentum_buffer"]
                    b.mul_(mu).addcdiv_(g, d)  # b = mu*b + g/d
                    p.add_(b, alpha=-lr)  # p -= lr * b
                else:
                    p.addcdiv_(g, d, value=-lr)  # p -= lr * g/d
        return loss

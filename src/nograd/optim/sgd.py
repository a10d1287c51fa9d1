"""Stochastic gradient descent, with momentum, dampening and Nesterov's variant."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nograd.optim.optimizer import Optimizer, ParamsT


class SGD(Optimizer):
    """Gradient descent p -= lr * g, optionally with momentum, as ``torch.optim.SGD``.

    For each parameter p with gradient g (skipped when ``g is None``)::

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0
        if momentum != 0:
            b = g                               on the first step (no dampening yet)
            b = momentum * b + (1 - dampening) * g    on later steps
            g = g + momentum * b                if nesterov, else  g = b
        p = p - lr * g

    State per parameter: ``momentum_buffer`` (b), only when momentum != 0.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        momentum: momentum factor mu.
        dampening: scales the new gradient by (1 - dampening) in the buffer.
        weight_decay: L2 penalty added to the gradient.
        nesterov: look ahead along the momentum (needs momentum > 0, dampening 0).
        maximize: ascend the objective instead of descending it.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        self._require_non_negative(options, "lr", "momentum", "weight_decay")
        if options["nesterov"]:
            momentum, dampening = options["momentum"], options["dampening"]
            if not (momentum > 0 and dampening == 0):
                raise ValueError(
                    f"SGD: nesterov=True expects momentum > 0 and dampening == 0, "
                    f"got momentum={momentum!r}, dampening={dampening!r}"
                )

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            dampening, weight_decay = group["dampening"], group["weight_decay"]
            nesterov, maximize = group["nesterov"], group["maximize"]
            for param in group["params"]:
                g = param.grad
                if g is None:
                    continue
                p = param.data
                if maximize:
                    g = -g
                if weight_decay != 0:
                    g = g.add(p, alpha=weight_decay)  # g + wd * p, leaving param.grad intact
                if mu != 0:
                    state = self.state[param]
                    b = state.get("momentum_buffer")
                    if b is None:
                        b = state["momentum_buffer"] = g.clone()  # b = g
                    else:
                        b.mul_(mu).add_(g, alpha=1 - dampening)  # b = mu*b + (1-dampening)*g
                    g = g.add(b, alpha=mu) if nesterov else b  # g + mu*b  or  b
                p.add_(g, alpha=-lr)  # p -= lr * g
        return loss

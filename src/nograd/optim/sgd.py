"""Stochastic gradient descent, with momentum, dampening and Nesterov's variant."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from nograd.nn.parameter import Parameter
from nograd.optim import foreach, fused
from nograd.optim.flat import FlatGroup
from nograd.optim.foreach import TensorList
from nograd.optim.optimizer import GroupTensors, Optimizer, ParamGroup, ParamsT


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

    Each line runs once per param group, on all its parameters together.

    State per parameter: ``momentum_buffer`` (b), only when momentum != 0.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate.
        momentum: momentum factor mu.
        dampening: scales the new gradient by (1 - dampening) in the buffer.
        weight_decay: L2 penalty added to the gradient.
        nesterov: look ahead along the momentum (needs momentum > 0, dampening 0).
        maximize: ascend the objective instead of descending it.
        foreach, differentiable: torch's choices of implementation, kept in the groups
            (``optimizer.IMPLEMENTATION_OPTIONS``); differentiable=True is refused.
        fused: the whole update in torch's fused kernel (``nograd.optim.fused``).
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
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
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
        self._update()
        return loss

    def _update(self, only: AbstractSet[Parameter] | None = None) -> None:
        """``step()``'s update; with ``only``, of just those of the parameters.

        The rule is elementwise, so updating a group in parts gives, bit for bit, what
        one call gives (``GraphedTrainStep(update_per_layer=True)`` updates layer by layer).
        """
        for group in self.param_groups:
            tensors = self._with_grads(group, only)  # p, g: a tensor per parameter, or one flat
            params, p, g = tensors.params, tensors.p, tensors.g
            if not params:
                continue
            if group.get("fused"):  # every line below in one kernel per tensor, torch's fused bits
                fused.check_fused(self._name, p)
                # without momentum there is no state: none made, as torch's has none
                states = [self.state[param] for param in params] if group["momentum"] else []
                fused.sgd_step(group, p, g, states)
                continue
            lr, mu = group["lr"], group["momentum"]
            dampening = group["dampening"]
            if tensors.checked and self._flat_momentum_step(group, tensors):
                continue  # the lines below, straight on one flat tensor each
            g = self._maximize_and_decay(group, p, g)  # g = -g if maximize; g = g + wd * p
            if mu != 0:
                b = self._momentum_buffers(tensors, g, mu, dampening)
                nesterov = group["nesterov"]
                g = foreach.add(g, b, alpha=mu) if nesterov else b  # g + mu * b  or  b
            foreach.add_(p, g, alpha=-lr)  # p = p - lr * g

    def _flat_momentum_step(self, group: ParamGroup, tensors: GroupTensors) -> bool:
        """The usual step of a flat group with momentum and no other option, if it is one::

            b = mu * b + g
            p = p - lr * b

        on the flat tensors themselves (``nograd.optim.flat``). These are ``_update``'s
        lines for this case, with the same kernels and bits; reached through its
        general helpers, which take lists and check each option, they cost ten Python
        calls more, 5% of a training step of the reference network on the CPU
        (``benchmarks/versions.py``). False, having done nothing, where the group is
        not that case or its buffer does not exist yet (the first step).
        """
        mu, flat, g = group["momentum"], tensors.flat, tensors.g
        if mu == 0 or flat is None:
            return False
        if group["nesterov"] or group["dampening"] or group["weight_decay"] or group["maximize"]:
            return False
        b = flat.state_buffers.get("momentum_buffer")
        # mul_add_'s conditions (foreach.one_pass_mul_add): the group's, asked once when
        # it was made, and a buffer of the gradient's dtype
        if b is None or not (flat.one_pass_mul_add and b.dtype == g[0].dtype):
            return False
        foreach.mul_add_([b], mu, g)  # b = mu * b + g, one pass
        tensors.p[0].add_(b, alpha=-group["lr"])  # p = p - lr * b
        return True

    def step_on_flat(self, flat: FlatGroup) -> bool:
        """``step()``, for a caller that has just written every gradient of ``flat``'s
        group into ``flat.grad`` (``nograd.TrainStep``), where it is the usual momentum
        line (``_flat_momentum_step``); False, having done nothing, elsewhere.

        The caller made each ``param.grad`` its slice of ``flat.grad``; it vouches for
        that, so ``grad_if_unchanged``'s loop over the parameters is skipped. Also
        skipped, and so not seen: a state tensor replaced by hand since the last
        ``step()`` (``nograd.train_step``).
        """
        group, tensors = self.param_groups[0], flat.step_tensors
        if (
            len(self.param_groups) != 1
            or self.flat_group(group) is not flat  # the group's own, and current
            or group.get("fused")
            or tensors is None
            or tensors.g[0] is not flat.grad  # the lists of a step on this very buffer
            or not self._flat_momentum_step(group, tensors)
        ):
            return False
        self._opt_called = True  # what step() notes (a scheduler checks it)
        return True

    def _momentum_buffers(
        self, tensors: GroupTensors, g: TensorList, mu: float, dampening: float
    ) -> TensorList:
        """Each parameter's buffer b: a copy of g on its first step, then updated in place."""
        states = [self.state[param] for param in tensors.params]
        if tensors.flat is not None:  # the parameters share one history: all seen or none
            if "momentum_buffer" not in states[0]:
                return [tensors.flat.new_state(states, "momentum_buffer", g[0])]  # b = g, a copy
            b = tensors.state(states, "momentum_buffer")
            self._decay_and_add(b, g, mu, dampening)
            return b
        try:  # every step but the first: each parameter has its buffer
            b = [state["momentum_buffer"] for state in states]
        except KeyError:  # the first step, or parameters whose first gradient came late
            return self._start_buffers(states, g, mu, dampening)
        self._decay_and_add(b, g, mu, dampening)
        return b

    def _start_buffers(
        self, states: list[dict[str, Any]], g: TensorList, mu: float, dampening: float
    ) -> TensorList:
        """b = g for each parameter without a buffer yet; the others' buffers as usual."""
        seen = [i for i, state in enumerate(states) if "momentum_buffer" in state]
        if seen:  # parameters that joined late: only those with a buffer decay
            b_seen = [states[i]["momentum_buffer"] for i in seen]
            self._decay_and_add(b_seen, [g[i] for i in seen], mu, dampening)
        for state, g_i in zip(states, g, strict=True):
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g_i.clone()  # b = g, on the first step
        return [state["momentum_buffer"] for state in states]

    def _decay_and_add(self, b: TensorList, g: TensorList, mu: float, dampening: float) -> None:
        """b = mu * b + (1 - dampening) * g, in place, rounded as PyTorch's SGD rounds it."""
        if dampening == 0 and foreach.one_pass_mul_add(b, g):
            foreach.mul_add_(b, mu, g)  # b = mu * b + g, one pass instead of the two below
            return
        foreach.mul_(b, self._scalar(mu, b))  # b = mu * b
        foreach.add_(b, g, alpha=1 - dampening)  # b = b + (1 - damp) * g

"""OneCycleLR: the 1cycle policy, a warm-up to max_lr and an annealing far below the start.

With ``cycle_momentum`` the momentum (SGD, RMSprop) or Adam's beta1 moves the
other way: high while the lr is low, low at the peak.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypedDict

from nograd.optim.lr_scheduler.base import (
    LRScheduler,
    PerGroup,
    _check,
    _check_optimizer,
    _is_count,
    _is_number,
    _per_group,
)
from nograd.optim.optimizer import Optimizer


class _SchedulePhase(TypedDict):
    """One phase: from the group's ``start_lr`` value to its ``end_lr`` value by ``end_step``."""

    end_step: float
    start_lr: str
    end_lr: str
    start_momentum: str
    end_momentum: str


def _phase(end_step: float, lrs: tuple[str, str], momenta: tuple[str, str]) -> _SchedulePhase:
    return {
        "end_step": end_step,
        "start_lr": lrs[0],
        "end_lr": lrs[1],
        "start_momentum": momenta[0],
        "end_momentum": momenta[1],
    }


class OneCycleLR(LRScheduler):
    """The 1cycle policy: lr from max_lr / div_factor up to max_lr, then down to far below.

    With N = total_steps and p = pct_start, step t anneals (cos or linear) between
    initial_lr = max_lr / div_factor and min_lr = initial_lr / final_div_factor:
        t in [0, p*N - 1]:          initial_lr -> max_lr
        t in [p*N - 1, N - 1]:      max_lr -> min_lr
    With three_phase, the second phase returns to initial_lr at 2*p*N - 2 and a third
    goes on to min_lr at N - 1. Cosine annealing from a to b over a phase, at the
    fraction f of it: b + (a - b) / 2 * (1 + cos(pi * f)); linear: a + (b - a) * f.
    The momentum (or beta1) anneals the other way, max_momentum -> base_momentum and back.

    Step it once per batch; stepping past total_steps raises ValueError.

    Args:
        optimizer, last_epoch: as in ``LRScheduler`` (last_epoch counts batches).
        max_lr: the peak lr, one for all groups or a list with one per group.
        total_steps: steps in the cycle; or give epochs and steps_per_epoch.
        epochs, steps_per_epoch: total_steps = epochs * steps_per_epoch.
        pct_start: the fraction of the cycle spent raising the lr, a float in [0, 1].
        anneal_strategy: ``"cos"`` or ``"linear"``.
        cycle_momentum: move the optimizer's ``momentum`` (or beta1 of ``betas``) too.
        base_momentum, max_momentum: the momentum at the lr's peak and at its ends.
        div_factor: initial_lr = max_lr / div_factor (> 0).
        final_div_factor: min_lr = initial_lr / final_div_factor (> 0).
        three_phase: go back to initial_lr before the final annealing to min_lr.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | PerGroup,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | PerGroup = 0.85,
        max_momentum: float | PerGroup = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(self, optimizer)
        self.total_steps = _total_steps(self, total_steps, epochs, steps_per_epoch)
        ok = isinstance(pct_start, float) and 0 <= pct_start <= 1
        _check(self, ok, "pct_start", "a float in [0, 1]", pct_start)
        ok = anneal_strategy in ("cos", "linear")
        _check(self, ok, "anneal_strategy", "'cos' or 'linear'", anneal_strategy)
        for name, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            _check(self, _is_number(value) and value > 0, name, "> 0", value)
        max_lrs = _per_group(self, optimizer, "max_lr", max_lr)
        if cycle_momentum:
            _check_momentum(self, optimizer)
        max_momenta = _per_group(self, optimizer, "max_momentum", max_momentum)
        base_momenta = _per_group(self, optimizer, "base_momentum", base_momentum)

        n = self.total_steps
        momentum_down = ("max_momentum", "base_momentum")
        momentum_up = ("base_momentum", "max_momentum")
        warm_up = _phase(float(pct_start * n) - 1, ("initial_lr", "max_lr"), momentum_down)
        self._schedule_phases = [warm_up]
        if three_phase:  # back down to initial_lr symmetrically, then on to min_lr
            self._schedule_phases += [
                _phase(float(2 * pct_start * n) - 2, ("max_lr", "initial_lr"), momentum_up),
                _phase(n - 1, ("initial_lr", "min_lr"), ("max_momentum", "max_momentum")),
            ]
        else:
            self._schedule_phases += [_phase(n - 1, ("max_lr", "min_lr"), momentum_up)]
        self._anneal_func_type = anneal_strategy
        if last_epoch == -1:  # a fresh run: each group's ends of the cycle
            for group, peak in zip(optimizer.param_groups, max_lrs, strict=True):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                _start_momentum(optimizer, max_momenta, base_momenta, self.use_beta1)
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        """The value the fraction ``pct`` of the way from ``start`` to ``end``."""
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR: stepped {step} times, past total_steps={self.total_steps}"
            )
        start_step, pct = 0.0, 0.0
        for i, phase in enumerate(self._schedule_phases):
            end_step = phase["end_step"]
            if step <= end_step or i == len(self._schedule_phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                break
            start_step = end_step
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
            if self.cycle_momentum:
                momentum = group[phase["start_momentum"]], group[phase["end_momentum"]]
                _set_momentum(group, self._anneal(*momentum, pct), self.use_beta1)
        return lrs


def _total_steps(
    scheduler: OneCycleLR, total_steps: int | None, epochs: int | None, steps: int | None
) -> int:
    """total_steps if given, else epochs * steps_per_epoch."""
    if total_steps is not None:
        ok = _is_count(total_steps) and total_steps > 0
        _check(scheduler, ok, "total_steps", "an int > 0", total_steps)
        return total_steps
    if epochs is None or steps is None:
        raise ValueError("OneCycleLR: expected total_steps, or both epochs and steps_per_epoch")
    _check(scheduler, _is_count(epochs) and epochs > 0, "epochs", "an int > 0", epochs)
    ok = _is_count(steps) and steps > 0
    _check(scheduler, ok, "steps_per_epoch", "an int > 0", steps)
    return epochs * steps


def _check_momentum(scheduler: LRScheduler, optimizer: Optimizer) -> None:
    """Raise unless the optimizer has a momentum or betas for cycle_momentum to move."""
    if not {"momentum", "betas"} & optimizer.defaults.keys():
        raise ValueError(
            f"{scheduler._name}: cycle_momentum=True needs an optimizer with momentum or "
            f"betas, got {type(optimizer).__name__}; pass cycle_momentum=False"
        )


def _start_momentum(
    optimizer: Optimizer, max_momenta: list[float], base_momenta: list[float], use_beta1: bool
) -> None:
    """A fresh cycle: each group starts at its max_momentum and records both ends."""
    for group, top, bottom in zip(optimizer.param_groups, max_momenta, base_momenta, strict=True):
        _set_momentum(group, top, use_beta1)
        group["max_momentum"] = top
        group["base_momentum"] = bottom


def _set_momentum(group: dict[str, Any], momentum: float, use_beta1: bool) -> None:
    """Set the group's momentum, or beta1 of its betas for Adam and AdamW."""
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum

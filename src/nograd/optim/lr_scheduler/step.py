"""Schedules that multiply the lr by a constant at chosen epochs: StepLR, MultiStepLR,
ExponentialLR and ConstantLR."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable

from nograd.optim.lr_scheduler.base import LRScheduler, _check, _is_count, _is_number
from nograd.optim.optimizer import Optimizer


class StepLR(LRScheduler):
    """Decay by gamma every ``step_size`` epochs: lr(t) = base_lr * gamma^(t // step_size).

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        step_size: epochs between two decays (> 0).
        gamma: the decay factor (>= 0).
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        _check(self, _is_count(step_size) and step_size > 0, "step_size", "an int > 0", step_size)
        _check(self, _is_number(gamma) and gamma >= 0, "gamma", ">= 0", gamma)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]  # lr(t) = gamma * lr(t-1)

    def _closed_form_lr(self) -> list[float]:
        decay = self.gamma ** (self.last_epoch // self.step_size)
        return [base_lr * decay for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Decay by gamma at each milestone: lr(t) = base_lr * gamma^(milestones <= t).

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        milestones: epochs at which to decay; one listed twice decays twice.
        gamma: the decay factor (>= 0).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        milestones = list(milestones)
        ok = all(_is_count(m) and m >= 0 for m in milestones)
        _check(self, ok, "milestones", "to be ints >= 0", milestones)
        _check(self, _is_number(gamma) and gamma >= 0, "gamma", ">= 0", gamma)
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        decay = self.gamma ** self.milestones[self.last_epoch]
        return [lr * decay for lr in self._current_lrs()]  # lr(t) = gamma^k * lr(t-1)

    def _closed_form_lr(self) -> list[float]:
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base_lr * self.gamma**passed for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Decay by gamma every epoch: lr(t) = base_lr * gamma^t.

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        gamma: the decay factor (>= 0).
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        _check(self, _is_number(gamma) and gamma >= 0, "gamma", ">= 0", gamma)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]  # lr(t) = gamma * lr(t-1)

    def _closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    """Scale base_lr by ``factor`` for the first ``total_iters`` epochs, a flat warm-up.

    lr(t) = base_lr * factor for t < total_iters, and base_lr from then on.

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        factor: the scale of the first epochs, in (0, 1].
        total_iters: epochs at the reduced lr (>= 0).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        _check(self, _is_number(factor) and 0 < factor <= 1, "factor", "in (0, 1]", factor)
        ok = _is_count(total_iters) and total_iters >= 0
        _check(self, ok, "total_iters", "an int >= 0", total_iters)
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self._current_lrs()]
        if self.last_epoch != self.total_iters:
            return self._current_lrs()
        return [lr * (1.0 / self.factor) for lr in self._current_lrs()]  # undo the factor

    def _closed_form_lr(self) -> list[float]:
        done = self.last_epoch >= self.total_iters
        return [base_lr * (self.factor + done * (1 - self.factor)) for base_lr in self.base_lrs]

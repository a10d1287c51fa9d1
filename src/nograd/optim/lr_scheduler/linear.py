"""Schedules that move the lr along a polynomial over ``total_iters`` epochs: LinearLR
(a warm-up or a linear decay) and PolynomialLR (a decay to zero)."""

from __future__ import annotations

from nograd.optim.lr_scheduler.base import LRScheduler, _check, _is_count, _is_number
from nograd.optim.optimizer import Optimizer


class LinearLR(LRScheduler):
    """Scale base_lr by a factor moving linearly from start_factor to end_factor.

    lr(t) = base_lr * (start + (end - start) * min(t, total_iters) / total_iters),
    a warm-up when start_factor < end_factor.

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        start_factor: the factor at epoch 0, in (0, 1].
        end_factor: the factor from epoch total_iters on, in [0, 1].
        total_iters: epochs the factor takes to reach end_factor (> 0).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        ok = _is_number(start_factor) and 0 < start_factor <= 1
        _check(self, ok, "start_factor", "in (0, 1]", start_factor)
        ok = _is_number(end_factor) and 0 <= end_factor <= 1
        _check(self, ok, "end_factor", "in [0, 1]", end_factor)
        ok = _is_count(total_iters) and total_iters > 0
        _check(self, ok, "total_iters", "an int > 0", total_iters)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        t, start, end = self.last_epoch, self.start_factor, self.end_factor
        if t == 0:
            return [lr * start for lr in self._current_lrs()]  # lr(0) = start * base_lr
        if self._is_initial or t > self.total_iters:
            return self._current_lrs()
        # factor(t) / factor(t-1), with factor(t-1) = start + (end - start) * (t-1) / total
        ratio = 1.0 + (end - start) / (self.total_iters * start + (t - 1) * (end - start))
        return [lr * ratio for lr in self._current_lrs()]

    def _closed_form_lr(self) -> list[float]:
        start, end, total = self.start_factor, self.end_factor, self.total_iters
        factor = start + (end - start) * min(total, self.last_epoch) / total
        return [base_lr * factor for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    """Decay to zero along a polynomial over total_iters epochs.

    lr(t) = base_lr * (1 - min(t, total_iters) / total_iters)^power: with power = 1,
    a straight line down to 0 at epoch total_iters, where the lr stays.

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        total_iters: epochs the decay takes (> 0).
        power: the power of the polynomial (>= 0).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int = 5,
        power: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        ok = _is_count(total_iters) and total_iters > 0
        _check(self, ok, "total_iters", "an int > 0", total_iters)
        _check(self, _is_number(power) and power >= 0, "power", ">= 0", power)
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        t, total = self.last_epoch, self.total_iters
        if self._is_initial or t > total:
            return self._current_lrs()
        # lr(t) / lr(t-1) = ((1 - t/total) / (1 - (t-1)/total))^power
        decay = ((1.0 - t / total) / (1.0 - (t - 1) / total)) ** self.power
        return [lr * decay for lr in self._current_lrs()]

    def _closed_form_lr(self) -> list[float]:
        total = self.total_iters
        return [
            base_lr * (1.0 - min(total, self.last_epoch) / total) ** self.power
            for base_lr in self.base_lrs
        ]

"""Cosine schedules: CosineAnnealingLR (one half-cosine from base_lr down to eta_min)
and CosineAnnealingWarmRestarts (SGDR: the half-cosine again after each restart)."""

from __future__ import annotations

import math

from nograd.optim.lr_scheduler.base import LRScheduler, _check, _is_count, _is_number
from nograd.optim.optimizer import Optimizer


class CosineAnnealingLR(LRScheduler):
    """Cosine from base_lr down to eta_min over T_max epochs (SGDR without restarts).

    lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2; past
    T_max the cosine continues, climbing back to base_lr at 2 * T_max.

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        T_max: epochs from base_lr down to eta_min (> 0).
        eta_min: the smallest learning rate (>= 0).
    """

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        _check(self, _is_number(T_max) and T_max > 0, "T_max", "> 0", T_max)
        _check(self, _is_number(eta_min) and eta_min >= 0, "eta_min", ">= 0", eta_min)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and t > 0:  # a user's get_lr() on a resumed schedule, before
            return self._closed_form_lr()  # its first step: the closed form, as torch's
        if (t - 1 - T) % (2 * T) == 0:  # leaving a minimum, where the ratio below is 0/0
            return [
                lr + (base - eta_min) * (1 - math.cos(math.pi / T)) / 2
                for base, lr in zip(self.base_lrs, self._current_lrs(), strict=True)
            ]
        # lr(t) - eta_min = (lr(t-1) - eta_min) * (1 + cos(pi t/T)) / (1 + cos(pi (t-1)/T))
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - eta_min) + eta_min for lr in self._current_lrs()]

    def _closed_form_lr(self) -> list[float]:
        cosine = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base_lr - self.eta_min) * cosine / 2 for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine from base_lr down towards eta_min, restarting at base_lr every T_i epochs (SGDR).

    lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2, where
    T_cur counts the epochs since the last restart and T_i is the current period:
    T_0 at first, then T_mult times longer after each restart (T_0, T_0 * T_mult, ...).

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        T_0: epochs until the first restart (an int > 0).
        T_mult: the factor by which each period is longer than the last (an int >= 1).
        eta_min: the smallest learning rate.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _check(self, _is_count(T_0) and T_0 > 0, "T_0", "an int > 0", T_0)
        _check(self, _is_count(T_mult) and T_mult >= 1, "T_mult", "an int >= 1", T_mult)
        _check(self, _is_number(eta_min), "eta_min", "a number", eta_min)
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur: float = last_epoch  # a fraction after step(epoch) with one
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        cosine = 1 + math.cos(math.pi * self.T_cur / self.T_i)
        return [self.eta_min + (base_lr - self.eta_min) * cosine / 2 for base_lr in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        """Advance one epoch, restarting the cosine when T_cur reaches T_i; or go to ``epoch``.

        ``step(epoch)`` is not deprecated here: called once per batch with a fraction,
        ``scheduler.step(epoch + i / batches)``, it moves the lr within an epoch.
        As in PyTorch, this step leaves ``_step_count`` as the constructor set it.
        """
        if epoch is None and self.last_epoch < 0:  # the constructor's step 0
            epoch = 0
        if epoch is None:
            self.T_cur += 1
            if self.T_cur >= self.T_i:  # a restart: the next period is T_mult times longer
                self.T_cur %= self.T_i  # (a resumed run may start past T_0)
                self.T_i *= self.T_mult
            self.last_epoch += 1
        else:
            self._go_to(epoch)
            self.last_epoch = math.floor(epoch)
        with self._stepping():
            lrs = self.get_lr()
        self._set_lrs(lrs)

    def _go_to(self, epoch: float) -> None:
        """Set T_cur and T_i for ``epoch`` (a fraction too), counted from the first period."""
        if epoch < 0:
            raise ValueError(f"CosineAnnealingWarmRestarts: expected epoch >= 0, got {epoch}")
        if epoch < self.T_0:
            self.T_i, self.T_cur = self.T_0, epoch
        elif self.T_mult == 1:
            self.T_cur = epoch % self.T_0
        else:
            # period n starts at T_0 * (1 + m + ... + m^(n-1)) = T_0 * (m^n - 1) / (m - 1)
            n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
            self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
            self.T_i = self.T_0 * self.T_mult**n

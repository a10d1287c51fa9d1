"""Learning-rate schedules that rewrite each param group's ``lr``, as torch.optim.lr_scheduler.

Each docstring gives the closed form lr(t) for epoch t. The code updates the current
lr from the previous one (lr(t) = lr(t-1) * ratio), as PyTorch does, so that two
schedulers on one optimizer compose and the numbers agree with PyTorch's to the bit.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from nograd.optim.optimizer import Optimizer


class LRScheduler:
    """Base class: ``step()`` advances ``last_epoch`` and writes the new lr into each group.

    Construction records each group's lr as ``initial_lr`` (kept if already there)
    and in ``base_lrs``, then takes step 0. Call ``scheduler.step()`` after
    ``optimizer.step()``, once per epoch (or per batch, as the schedule intends).

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        last_epoch: -1 for a fresh run; the last finished epoch when resuming, in
            which case every group must already hold ``initial_lr``.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{self._name}: expected a nograd Optimizer, got {type(optimizer).__name__}"
            )
        ok = _is_count(last_epoch) and last_epoch >= -1
        _check(self, ok, "last_epoch", "an int >= -1", last_epoch)
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise ValueError(
                    f"{self._name}: resuming at last_epoch={last_epoch} expects 'initial_lr' in "
                    f"param_groups[{i}], got none; load the optimizer's state_dict first"
                )
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True  # step 0 below: schedules that resume keep the lr as it is
        self.step()
        self._is_initial = False

    @property
    def _name(self) -> str:
        return type(self).__name__

    def get_lr(self) -> list[float]:
        """The lr of each group for epoch ``last_epoch``, from the current ones."""
        raise NotImplementedError(f"{self._name} must implement get_lr()")

    def step(self) -> None:
        """Advance one epoch and set every group's lr."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rates that the last ``step()`` set, one per group."""
        return self._last_lr

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer (as in PyTorch), copied."""
        return {key: copy.deepcopy(v) for key, v in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the attributes saved by ``state_dict`` (ours or PyTorch's).

        Raises:
            ValueError: if an attribute is missing or the number of groups differs.
        """
        missing = sorted(key for key in self.state_dict() if key not in state_dict)
        if missing:
            raise ValueError(f"{self._name}.load_state_dict: missing keys {missing}")
        groups = len(self.optimizer.param_groups)
        if len(state_dict["base_lrs"]) != groups:
            raise ValueError(
                f"{self._name}.load_state_dict: expected base_lrs for {groups} param groups, "
                f"got {len(state_dict['base_lrs'])}"
            )
        for key in list(self.__dict__):
            if key != "optimizer":
                setattr(self, key, copy.deepcopy(state_dict[key]))


def _check(scheduler: LRScheduler, ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{type(scheduler).__name__}: expected {name} {expected}, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]  # lr(t) = gamma * lr(t-1)


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
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        decay = self.gamma ** self.milestones[self.last_epoch]
        return [lr * decay for lr in self._current_lrs()]  # lr(t) = gamma^k * lr(t-1)


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
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]  # lr(t) = gamma * lr(t-1)


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
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if (t - 1 - T) % (2 * T) == 0:  # leaving a minimum, where the ratio below is 0/0
            return [
                lr + (base - eta_min) * (1 - math.cos(math.pi / T)) / 2
                for base, lr in zip(self.base_lrs, self._current_lrs(), strict=True)
            ]
        # lr(t) - eta_min = (lr(t-1) - eta_min) * (1 + cos(pi t/T)) / (1 + cos(pi (t-1)/T))
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - eta_min) + eta_min for lr in self._current_lrs()]


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
        t, start, end = self.last_epoch, self.start_factor, self.end_factor
        if t == 0:
            return [lr * start for lr in self._current_lrs()]  # lr(0) = start * base_lr
        if self._is_initial or t > self.total_iters:
            return self._current_lrs()
        # factor(t) / factor(t-1), with factor(t-1) = start + (end - start) * (t-1) / total
        ratio = 1.0 + (end - start) / (self.total_iters * start + (t - 1) * (end - start))
        return [lr * ratio for lr in self._current_lrs()]

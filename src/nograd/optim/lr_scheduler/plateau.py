"""ReduceLROnPlateau: divide the lr when a measured metric stops improving."""

from __future__ import annotations

import math
import warnings
from typing import Literal, SupportsFloat

from nograd.optim.lr_scheduler.base import (
    EPOCH_DEPRECATION_WARNING,
    LRScheduler,
    PerGroup,
    _check,
    _check_optimizer,
    _is_count,
    _is_number,
    _per_group,
)
from nograd.optim.optimizer import Optimizer


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` after ``patience`` epochs without improvement.

    There is no closed form: lr(t) depends on the metrics. ``step(metric)`` after
    each validation does, in order:
        better = metric < best * (1 - threshold)   mode 'min', threshold_mode 'rel'
                 metric < best - threshold         mode 'min', threshold_mode 'abs'
                 metric > best * (threshold + 1)   mode 'max', threshold_mode 'rel'
                 metric > best + threshold         mode 'max', threshold_mode 'abs'
        if better: best = metric and num_bad_epochs = 0, else num_bad_epochs += 1
        during a cooldown: cooldown_counter -= 1 and num_bad_epochs = 0
        if num_bad_epochs > patience:
            lr = max(lr * factor, min_lr) in each group, unless that changes it by eps
            or less; then a cooldown of ``cooldown`` epochs, and num_bad_epochs = 0

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        mode: ``"min"`` for a metric that should fall (a loss), ``"max"`` for one
            that should rise (an accuracy).
        factor: the lr's multiplier at each reduction, in [0, 1).
        patience: epochs without improvement tolerated before a reduction (>= 0).
        threshold: how much better than ``best`` counts as an improvement (>= 0).
        threshold_mode: ``"rel"`` (a fraction of best) or ``"abs"``.
        cooldown: epochs after a reduction during which bad epochs are not counted.
        min_lr: the lowest lr, one for all groups or a list with one per group.
        eps: reductions smaller than eps are skipped (>= 0).
    """

    _per_group_keys = ("min_lrs", "_last_lr")

    def __init__(
        self,
        optimizer: Optimizer,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: float | PerGroup = 0,
        eps: float = 1e-8,
    ) -> None:  # as PyTorch's: no last_epoch, and no call of LRScheduler.__init__
        _check_optimizer(self, optimizer)
        _check(self, _is_number(factor) and 0 <= factor < 1, "factor", "in [0, 1)", factor)
        _check(self, mode in ("min", "max"), "mode", "'min' or 'max'", mode)
        ok = threshold_mode in ("rel", "abs")
        _check(self, ok, "threshold_mode", "'rel' or 'abs'", threshold_mode)
        _check(self, _is_number(threshold) and threshold >= 0, "threshold", ">= 0", threshold)
        for name, count in (("patience", patience), ("cooldown", cooldown)):
            _check(self, _is_count(count) and count >= 0, name, "an int >= 0", count)
        _check(self, _is_number(eps) and eps >= 0, "eps", ">= 0", eps)
        min_lrs = _per_group(self, optimizer, "min_lr", min_lr)
        ok = all(_is_number(lr) and lr >= 0 for lr in min_lrs)
        _check(self, ok, "min_lr", "to be numbers >= 0", min_lr)
        self.factor = factor
        self.optimizer = optimizer
        self.default_min_lr = None if isinstance(min_lr, (list, tuple)) else min_lr
        self.min_lrs = min_lrs
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self.mode_worse = math.inf if mode == "min" else -math.inf  # worse than any metric
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        """Whether the epochs after the last reduction are still being ignored."""
        return self.cooldown_counter > 0

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record one epoch's metric (such as the validation loss) and reduce the lr if due.

        Args:
            metrics: the epoch's value of the watched quantity (a number, a 0-dim tensor).
            epoch: deprecated, as in PyTorch, which warns the same way: the epoch to
                record the metric at, in place of ``last_epoch + 1``.
        """
        current = float(metrics)  # a 0-dim tensor too
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during a cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def _is_better(self, metric: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return metric < best * (1.0 - self.threshold)
        if self.mode == "min":
            return metric < best - self.threshold
        if self.threshold_mode == "rel":
            return metric > best * (self.threshold + 1.0)
        return metric > best + self.threshold

    def _reduce_lr(self) -> None:
        groups = len(self.optimizer.param_groups)
        if len(self.min_lrs) != groups:  # a param group was added since
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"ReduceLROnPlateau: the optimizer has {groups} param groups, min_lr "
                    f"lists {len(self.min_lrs)}; set min_lrs to one value per group"
                )
            self.min_lrs = [self.default_min_lr] * groups
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

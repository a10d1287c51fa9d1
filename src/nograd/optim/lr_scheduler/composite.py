"""Schedules made of other schedules: SequentialLR (one after another) and
ChainedScheduler (all at once, their factors multiplied)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nograd.optim.lr_scheduler.base import LRScheduler, _check, _is_count
from nograd.optim.lr_scheduler.plateau import ReduceLROnPlateau
from nograd.optim.optimizer import Optimizer


class _CompositeScheduler(LRScheduler):
    """What both share: the checks of the parts, and a state_dict holding theirs."""

    _unsaved: ClassVar[frozenset[str]] = frozenset({"optimizer", "_schedulers"})
    _per_group_keys = ("_last_lr",)
    _schedulers: list[LRScheduler]

    def _check_parts(
        self, optimizer: Optimizer | None, schedulers: Sequence[LRScheduler]
    ) -> Optimizer:
        """The optimizer they all share (by default the first one's); raise if they differ."""
        if len(schedulers) < 1:
            raise ValueError(f"{self._name}: expected at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if not hasattr(scheduler, "optimizer"):
                raise TypeError(
                    f"{self._name}: expected schedulers, got {type(scheduler).__name__} "
                    f"at index {i}"
                )
            if optimizer is None:
                optimizer = scheduler.optimizer
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(
                    f"{self._name}: cannot hold ReduceLROnPlateau (index {i}): its step "
                    f"needs a metric"
                )
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    f"{self._name}: expected every scheduler on one optimizer, but "
                    f"{type(scheduler).__name__} at index {i} has another"
                )
        assert optimizer is not None  # set from schedulers[0] at the latest
        return optimizer

    def state_dict(self) -> dict[str, Any]:
        """The attributes but the optimizer, and each scheduler's state_dict in ``_schedulers``."""
        state = super().state_dict()
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the attributes and every scheduler's state.

        Raises:
            ValueError: if an attribute is missing, or the schedulers or groups differ.
        """
        saved = state_dict.get("_schedulers", [])
        if len(saved) != len(self._schedulers):
            raise ValueError(
                f"{self._name}.load_state_dict: expected the states of "
                f"{len(self._schedulers)} schedulers, got {len(saved)}"
            )
        super().load_state_dict(state_dict)
        for scheduler, state in zip(self._schedulers, saved, strict=True):
            scheduler.load_state_dict(state)


class SequentialLR(_CompositeScheduler):
    """Run ``schedulers[i]`` from epoch ``milestones[i-1]`` on, each restarted at its epoch 0.

    lr(t) = lr_i(t - milestones[i-1]) for milestones[i-1] <= t < milestones[i], with
    lr_i the closed form of schedulers[i] (milestones[-1] = 0). A typical use: a
    LinearLR warm-up, then a CosineAnnealingLR.

    Args:
        optimizer: the optimizer of every scheduler in ``schedulers``.
        schedulers: the schedules, in the order they run.
        milestones: the epochs at which the next one takes over, one fewer than schedulers.
        last_epoch: as in ``LRScheduler``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
    ) -> None:
        self._check_parts(optimizer, schedulers)
        ok = len(milestones) == len(schedulers) - 1
        expected = f"one fewer than the {len(schedulers)} schedulers"
        _check(self, ok, "milestones", expected, milestones)
        _check(self, all(_is_count(m) for m in milestones), "milestones", "ints", milestones)
        ok = _is_count(last_epoch) and last_epoch >= -1
        _check(self, ok, "last_epoch", "an int >= -1", last_epoch)
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:  # undo the steps 0 the schedulers took
            group["lr"] = group["initial_lr"]
        self.recursive_undo()
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()  # only the schedule that runs at epoch 0 takes its step 0
        self._last_lr = first.get_last_lr()

    def recursive_undo(self, sched: LRScheduler | None = None) -> None:
        """Take back the epoch that each scheduler's constructor counted, nested ones too."""
        scheduler = self if sched is None else sched
        if isinstance(scheduler, _CompositeScheduler):
            for part in scheduler._schedulers:
                self.recursive_undo(part)
        else:
            scheduler.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]  # no epoch, as torch's
        """Advance one epoch: restart the next schedule at a milestone, else step the current."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)  # its epoch 0, by its closed form where it has one
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_CompositeScheduler):
    """Step every scheduler at each step, so that their factors multiply.

    For schedules that scale the current lr (lr(t) = lr(t-1) * ratio_i(t)), as most
    here do: lr(t) = base_lr * prod_i factor_i(t).

    Args:
        schedulers: the schedules, all on one optimizer.
        optimizer: that optimizer; default: the first scheduler's.
    """

    def __init__(
        self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None
    ) -> None:
        optimizer = self._check_parts(optimizer, schedulers)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = self._current_lrs()

    def step(self) -> None:  # type: ignore[override]  # no epoch, as torch's
        """Step each scheduler, in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = self._current_lrs()

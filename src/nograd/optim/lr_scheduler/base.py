"""LRScheduler: the base class every schedule shares, and the argument checks they use.

A schedule rewrites each param group's ``lr``. Each subclass docstring gives the
closed form lr(t) for epoch t, but most compute the new lr from the current one
(lr(t) = lr(t-1) * ratio), as PyTorch does, so that two schedulers on one optimizer
compose and the numbers agree with PyTorch's to the bit.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, TypeAlias

from nograd.optim.optimizer import Optimizer

PerGroup: TypeAlias = "list[float] | tuple[float, ...]"  # one value per param group

# torch's words, so that a warnings filter written for torch's message works here too
EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated "
    "where possible. Please use `scheduler.step()` to step the scheduler. During the "
    "deprecation, if epoch is different from None, the closed form is used instead of the "
    "new chainable form, where available."
)
GET_LR_WARNING = (
    "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."
)
STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. In PyTorch 1.1.0 and "
    "later, you should call them in the opposite order: `optimizer.step()` before "
    "`lr_scheduler.step()`.  Failure to do this will result in PyTorch skipping the first "
    "value of the learning rate schedule. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)


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

    _unsaved: ClassVar[frozenset[str]] = frozenset({"optimizer"})
    """Attributes that ``state_dict`` leaves out (or saves in a form of its own)."""
    _per_group_keys: ClassVar[tuple[str, ...]] = ("base_lrs",)
    """State entries that hold one value per param group (where the scheduler has them)."""
    _in_step: bool = False
    """True while a step computes the new lrs (``_stepping``); never in ``state_dict``."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(self, optimizer)
        ok = _is_count(last_epoch) and last_epoch >= -1
        _check(self, ok, "last_epoch", "an int >= -1", last_epoch)
        self.optimizer = optimizer
        if not optimizer._scheduled:  # torch counts the steps from its first scheduler on
            optimizer._opt_called, optimizer._scheduled = False, True
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
        self._initial_step()

    @property
    def _name(self) -> str:
        return type(self).__name__

    def _initial_step(self) -> None:
        """Step 0, taken by the constructor (and by SequentialLR when it starts a schedule)."""
        self._step_count = 0
        self._is_initial = True  # schedules that resume keep the lr as it is
        self.step()
        self._is_initial = False

    def get_lr(self) -> list[float]:
        """The lr of each group for epoch ``last_epoch``, from the current ones.

        The step calls it; a call from outside warns, as in PyTorch, since for most
        schedules it gives the next lr rather than the last (``get_last_lr()``).
        """
        raise NotImplementedError(f"{self._name} must implement get_lr()")

    def _warn_unless_stepping(self) -> None:
        """Each ``get_lr`` calls this first: PyTorch's warning for a user's call."""
        if not self._in_step:
            warnings.warn(GET_LR_WARNING, UserWarning, stacklevel=3)

    @contextmanager
    def _stepping(self) -> Iterator[None]:
        """The step computing the new lrs: its own ``get_lr()`` calls do not warn."""
        self._in_step = True
        try:
            yield
        finally:
            del self._in_step  # the class's False again, kept out of state_dict

    def _closed_form_lr(self) -> list[float] | None:
        """The lr of each group at ``last_epoch`` from ``base_lrs``; None if there is no formula."""
        return None

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch and set every group's lr.

        Call it after ``optimizer.step()``: a first call before any optimizer step since
        the optimizer's first scheduler was made warns, as in PyTorch (the schedule's
        first lr would be skipped).

        Args:
            epoch: deprecated, as in PyTorch, which warns the same way: go to this
                epoch instead, by the closed form where the schedule has one.
        """
        if self._step_count == 1 and not self.optimizer._opt_called:  # 1: the constructor's
            warnings.warn(STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        """Set every group's lr for the next epoch, or for ``epoch`` by the closed form."""
        with self._stepping():
            if epoch is None:
                self.last_epoch += 1
                lrs = self.get_lr()
            else:  # step(epoch), and SequentialLR restarting a schedule at epoch 0
                self.last_epoch = epoch
                closed_form = self._closed_form_lr()
                lrs = self.get_lr() if closed_form is None else closed_form
        self._set_lrs(lrs)

    def _set_lrs(self, lrs: list[float]) -> None:
        """Write one lr into each group, and remember them for ``get_last_lr``."""
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = self._current_lrs()

    def get_last_lr(self) -> list[float]:
        """The learning rates that the last ``step()`` set, one per group."""
        return self._last_lr

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer (as in PyTorch), copied."""
        return {
            key: copy.deepcopy(value)
            for key, value in self.__dict__.items()
            if key not in self._unsaved
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the attributes saved by ``state_dict`` (ours or PyTorch's).

        Raises:
            ValueError: if an attribute is missing or the number of groups differs.
        """
        missing = sorted(key for key in self.state_dict() if key not in state_dict)
        if missing:
            raise ValueError(f"{self._name}.load_state_dict: missing keys {missing}")
        groups = len(self.optimizer.param_groups)
        for key in self._per_group_keys:
            if key in self.__dict__ and len(state_dict[key]) != groups:
                raise ValueError(
                    f"{self._name}.load_state_dict: expected {key} for {groups} param groups, "
                    f"got {len(state_dict[key])}"
                )
        for key in list(self.__dict__):
            if key not in self._unsaved:
                setattr(self, key, copy.deepcopy(state_dict[key]))


def _check(scheduler: object, ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{type(scheduler).__name__}: expected {name} {expected}, got {value!r}")


def _check_optimizer(scheduler: object, optimizer: object) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"{type(scheduler).__name__}: expected a nograd Optimizer, "
            f"got {type(optimizer).__name__}"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _per_group(
    scheduler: object, optimizer: Optimizer, name: str, value: float | PerGroup
) -> list[float]:
    """One value per param group: ``value`` itself if it is a list or tuple, else repeated."""
    groups = len(optimizer.param_groups)
    if not isinstance(value, (list, tuple)):
        return [value] * groups
    if len(value) != groups:
        raise ValueError(
            f"{type(scheduler).__name__}: expected {name} for {groups} param groups, "
            f"got {len(value)} values"
        )
    return list(value)

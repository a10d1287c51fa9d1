"""CyclicLR: the lr goes back and forth between base_lr and max_lr, a triangle per cycle.

With ``cycle_momentum`` the momentum (SGD) or Adam's beta1 moves the other way, as in
OneCycleLR, whose helpers it shares. As in PyTorch, ``state_dict`` saves a custom
``scale_fn`` only as the attributes of a callable object (None for a function).
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from nograd.optim.lr_scheduler.base import (
    LRScheduler,
    PerGroup,
    _check,
    _check_optimizer,
    _is_number,
    _per_group,
)
from nograd.optim.lr_scheduler.one_cycle import _check_momentum, _set_momentum, _start_momentum
from nograd.optim.optimizer import Optimizer

ScaleFn = Callable[[float], float]
MODES = ("triangular", "triangular2", "exp_range")


class CyclicLR(LRScheduler):
    """Cyclical learning rates (Smith, 2017): up from base_lr to max_lr and back, again and again.

    With up = step_size_up, down = step_size_down and r = up / (up + down), batch t is
    at the fraction x of its cycle, and f rises from 0 to 1 and falls back over it:
        cycle = floor(1 + t / (up + down)),   x = 1 + t / (up + down) - cycle
        f = x / r if x <= r else (x - 1) / (r - 1)
        lr(t) = base_lr + (max_lr - base_lr) * f * scale
        momentum(t) = max_momentum - (max_momentum - base_momentum) * f * scale
    where scale = scale_fn(cycle) for scale_mode 'cycle' and scale_fn(t) for
    'iterations'. The modes' scale_fn: 'triangular' 1, 'triangular2' 1 / 2**(cycle - 1)
    (the height halves each cycle), 'exp_range' gamma**t (scale_mode 'iterations').

    Construction sets each group's lr to base_lr (and momentum to max_momentum). Step
    it once per batch.

    Args:
        optimizer, last_epoch: as in ``LRScheduler`` (last_epoch counts batches).
        base_lr: the lower end of the cycle, one for all groups or a list, one per group.
        max_lr: the upper end (reached only where scale is 1), a float or a list.
        step_size_up: batches from base_lr up to max_lr (> 0).
        step_size_down: batches back down (>= 0); None for step_size_up.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; ignored with scale_fn.
        gamma: the base of 'exp_range' scaling, gamma**t.
        scale_fn: the user's scaling, a function with 0 <= scale_fn(x) <= 1; replaces mode.
        scale_mode: ``"cycle"`` or ``"iterations"``, what scale_fn takes (with scale_fn).
        cycle_momentum: move the optimizer's ``momentum`` (or beta1 of ``betas``) too.
        base_momentum, max_momentum: the momentum at the lr's peak and at base_lr.
    """

    _unsaved: ClassVar[frozenset[str]] = frozenset({"optimizer", "_scale_fn_custom"})
    _per_group_keys: ClassVar[tuple[str, ...]] = (
        "base_lrs",
        "max_lrs",
        "base_momentums",
        "max_momentums",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | PerGroup,
        max_lr: float | PerGroup,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: ScaleFn | None = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | PerGroup = 0.8,
        max_momentum: float | PerGroup = 0.9,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(self, optimizer)
        base_lrs = _per_group(self, optimizer, "base_lr", base_lr)
        self.max_lrs = _per_group(self, optimizer, "max_lr", max_lr)
        _check(
            self, _is_number(step_size_up) and step_size_up > 0, "step_size_up", "> 0", step_size_up
        )
        down = step_size_up if step_size_down is None else step_size_down
        _check(self, _is_number(down) and down >= 0, "step_size_down", ">= 0", step_size_down)
        if scale_fn is None:
            _check(self, mode in MODES, "mode", "'triangular', 'triangular2' or 'exp_range'", mode)
        elif not callable(scale_fn):
            raise TypeError(
                f"CyclicLR: expected scale_fn a function, got {type(scale_fn).__name__}"
            )
        ok = scale_mode in ("cycle", "iterations")
        _check(self, ok, "scale_mode", "'cycle' or 'iterations'", scale_mode)
        _check(self, _is_number(gamma), "gamma", "a number", gamma)
        if cycle_momentum:
            _check_momentum(self, optimizer)
            self.use_beta1 = "betas" in optimizer.defaults
            self.base_momentums = _per_group(self, optimizer, "base_momentum", base_momentum)
            self.max_momentums = _per_group(self, optimizer, "max_momentum", max_momentum)

        self.total_size = float(step_size_up) + float(down)
        self.step_ratio = float(step_size_up) / self.total_size
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        if scale_fn is None:  # the modes fix what their scale_fn takes
            self.scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.cycle_momentum = cycle_momentum
        if last_epoch == -1:  # a fresh run: the start of a cycle
            for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = lr
            if cycle_momentum:
                _start_momentum(optimizer, self.max_momentums, self.base_momentums, self.use_beta1)
        super().__init__(optimizer, last_epoch)  # step 0 from each group's initial_lr
        self.base_lrs = base_lrs

    def scale_fn(self, x: float) -> float:
        """The height of the cycle, a fraction of max_lr - base_lr, at x (a cycle or a batch)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return float(1 / (2.0 ** (x - 1)))  # float() for mypy: a float already
        return float(self.gamma**x)

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        up = x <= self.step_ratio  # always, when step_size_down is 0
        rise = x / self.step_ratio if up else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [
            base_lr + (max_lr - base_lr) * rise * scale
            for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True)
        ]
        if self.cycle_momentum:
            for group, bottom, top in zip(
                self.optimizer.param_groups, self.base_momentums, self.max_momentums, strict=True
            ):
                _set_momentum(group, top - (top - bottom) * rise * scale, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """The attributes; ``_scale_fn_custom`` as a callable object's ``__dict__``, else None."""
        state = super().state_dict()
        fn = self._scale_fn_custom
        keep = fn is not None and not isinstance(fn, types.FunctionType)
        state["_scale_fn_custom"] = copy.deepcopy(fn.__dict__) if keep else None
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the attributes, and those of a callable object given as scale_fn.

        Raises:
            ValueError: if an attribute is missing, the number of groups differs, or the
                state holds a scale_fn object's attributes but this scheduler has none.
        """
        saved = state_dict.get("_scale_fn_custom")
        if saved is not None and self._scale_fn_custom is None:
            raise ValueError(
                "CyclicLR.load_state_dict: the state holds the attributes of a scale_fn "
                "object, but this scheduler has no scale_fn"
            )
        super().load_state_dict(state_dict)
        if saved is not None:
            self._scale_fn_custom.__dict__.update(copy.deepcopy(saved))

"""Schedules given by the user's own function of the epoch: LambdaLR and MultiplicativeLR.

``state_dict`` cannot hold a function; as in PyTorch, it saves the attributes
(``__dict__``) of a callable object and ``None`` for a plain function or lambda, so
that loading restores an object's settings and leaves functions as they are.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from nograd.optim.lr_scheduler.base import LRScheduler, _check_optimizer
from nograd.optim.optimizer import Optimizer

LrLambda = Callable[[int], float]


class _LambdaScheduler(LRScheduler):
    """What LambdaLR and MultiplicativeLR share: one function per group, and how to save them."""

    _unsaved: ClassVar[frozenset[str]] = frozenset({"optimizer", "lr_lambdas"})

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: LrLambda | list[LrLambda] | tuple[LrLambda, ...],
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(self, optimizer)
        groups = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != groups:
                raise ValueError(
                    f"{self._name}: expected {groups} lr_lambdas, one per param group, "
                    f"got {len(lr_lambda)}"
                )
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * groups
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(
                    f"{self._name}: expected lr_lambda to be a function of the epoch, "
                    f"got {type(fn).__name__}"
                )
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The attributes; ``lr_lambdas`` as each object's ``__dict__``, None for a function."""
        state = super().state_dict()
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else copy.deepcopy(fn.__dict__)
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the attributes, and those of each callable object in ``lr_lambdas``.

        Raises:
            ValueError: if an attribute is missing or the number of groups differs.
        """
        saved = state_dict.get("lr_lambdas")
        if saved is not None and len(saved) != len(self.lr_lambdas):
            raise ValueError(
                f"{self._name}.load_state_dict: expected lr_lambdas for "
                f"{len(self.lr_lambdas)} param groups, got {len(saved)}"
            )
        super().load_state_dict(state_dict)
        for fn, attributes in zip(self.lr_lambdas, saved or [], strict=True):
            if attributes is not None:
                fn.__dict__.update(copy.deepcopy(attributes))


class LambdaLR(_LambdaScheduler):
    """Scale base_lr by the user's function of the epoch: lr(t) = base_lr * lr_lambda(t).

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        lr_lambda: a function of the epoch t giving the factor, or a list of such
            functions, one per param group.
    """

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        return [
            base_lr * fn(self.last_epoch)
            for fn, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)
        ]


class MultiplicativeLR(_LambdaScheduler):
    """Multiply the lr by the user's factor each epoch: lr(t) = lr(t-1) * lr_lambda(t).

    In closed form lr(t) = base_lr * lr_lambda(1) * ... * lr_lambda(t).

    Args:
        optimizer, last_epoch: as in ``LRScheduler``.
        lr_lambda: a function of the epoch t giving the factor, or a list of such
            functions, one per param group.
    """

    def get_lr(self) -> list[float]:
        self._warn_unless_stepping()
        if self._is_initial:
            return self._current_lrs()
        return [
            lr * fn(self.last_epoch)
            for fn, lr in zip(self.lr_lambdas, self._current_lrs(), strict=True)
        ]

"""Schedulers against torch.optim.lr_scheduler where an audit found them apart: the
(deprecated) ``step(epoch)``, CosineAnnealingWarmRestarts stepped with fractions of an
epoch, and the warning torch gives when a user calls ``get_lr()``."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

from nograd.nn import Parameter
from nograd.optim import SGD, Adam, lr_scheduler

LRS = [0.1, 0.03, 0.5]  # three param groups, three base learning rates
Maker = Callable[[Any, Any], Any]  # (lib, optimizer) -> scheduler, lib nograd's or torch's
SCHEDULERS: dict[str, Maker] = {
    # with a closed form, which step(epoch) uses
    "StepLR": lambda lib, o: lib.StepLR(o, step_size=4, gamma=0.5),
    "MultiStepLR": lambda lib, o: lib.MultiStepLR(o, [3, 7, 7, 20], gamma=0.7),
    "ExponentialLR": lambda lib, o: lib.ExponentialLR(o, gamma=0.93),
    "ConstantLR": lambda lib, o: lib.ConstantLR(o, factor=0.4, total_iters=6),
    "LinearLR": lambda lib, o: lib.LinearLR(o, start_factor=0.2, total_iters=9),
    "PolynomialLR": lambda lib, o: lib.PolynomialLR(o, total_iters=15, power=1.5),
    "CosineAnnealingLR": lambda lib, o: lib.CosineAnnealingLR(o, T_max=11, eta_min=1e-3),
    # without one: step(epoch) sets last_epoch and calls get_lr
    "LambdaLR": lambda lib, o: lib.LambdaLR(o, lambda t: 0.9**t),
    "MultiplicativeLR": lambda lib, o: lib.MultiplicativeLR(o, lambda t: 0.97),
    "OneCycleLR": lambda lib, o: lib.OneCycleLR(o, max_lr=1.0, total_steps=60),
    "CyclicLR": lambda lib, o: lib.CyclicLR(o, 0.01, 0.1, step_size_up=3, step_size_down=5),
    "CosineAnnealingWarmRestarts": lambda lib, o: lib.CosineAnnealingWarmRestarts(
        o, T_0=3, T_mult=2, eta_min=1e-3
    ),
}
# step() with nothing, or step(epoch): a jump forward, back, to the same epoch, to 0
MOVES: list[int | None] = [None, None, 5, None, 2, 2, None, 13, 0, None, None, 40, None, 9, None]


def twins(optimizer: str = "sgd") -> tuple[Any, torch.optim.Optimizer]:
    """A nograd optimizer and torch's twin, three groups with different lr."""
    groups = [{"params": [Parameter(torch.zeros(2))], "lr": lr} for lr in LRS]
    ref_groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in LRS]
    if optimizer == "adam":
        return Adam(groups), torch.optim.Adam(ref_groups)
    return SGD(groups, momentum=0.9), torch.optim.SGD(ref_groups, momentum=0.9)


def groups_of(optimizer: Any) -> list[tuple[Any, ...]]:
    """What a schedule writes into each group: lr, and momentum or betas."""
    return [(g["lr"], g.get("momentum"), g.get("betas")) for g in optimizer.param_groups]


def messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught]


def step_both(sched: Any, ref: Any, epoch: float | None) -> tuple[list[str], list[str]]:
    """Step both schedulers (after their optimizers, as torch wants); their warnings."""
    found = []
    for scheduler in (sched, ref):
        scheduler.optimizer.step()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if epoch is None:
                scheduler.step()
            else:
                scheduler.step(epoch)
        found.append(messages(caught))
    return found[0], found[1]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", SCHEDULERS)
def test_step_with_an_epoch_warns_and_moves_to_it_as_torch(name: str, optimizer: str) -> None:
    opt, ref_opt = twins(optimizer)
    sched = SCHEDULERS[name](lr_scheduler, opt)
    ref = SCHEDULERS[name](torch.optim.lr_scheduler, ref_opt)
    for epoch in MOVES:
        ours, theirs = step_both(sched, ref, epoch)
        assert sched.last_epoch == ref.last_epoch
        assert sched.get_last_lr() == ref.get_last_lr()  # to the bit
        assert groups_of(opt) == groups_of(ref_opt)  # the momentum (or beta1) cycled too
        # warmrestarts' step(epoch) is its per-batch form, not deprecated: neither warns
        assert len(ours) == len(theirs) == (epoch is not None and "Warm" not in name)
        for our_message, message in zip(ours, theirs, strict=True):
            assert message.startswith(our_message)  # torch's text, less its link
    resumed = SCHEDULERS[name](lr_scheduler, twins(optimizer)[0])
    resumed.optimizer.load_state_dict(ref_opt.state_dict())
    resumed.load_state_dict(copy.deepcopy(ref.state_dict()))  # torch's state after the jumps
    assert "_in_step" not in sched.state_dict()
    for _ in range(5):
        step_both(resumed, ref, None)
        assert resumed.get_last_lr() == ref.get_last_lr()


def test_an_epoch_deprecation_warning_can_be_filtered_with_torchs_message() -> None:
    optimizer = twins()[0]
    sched = lr_scheduler.StepLR(optimizer, step_size=2)
    optimizer.step()  # first, or the scheduler warns about the order (as torch's does)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        start = "The epoch parameter in `scheduler.step()` was not necessary"  # torch's words
        warnings.filterwarnings("ignore", message=re.escape(start))
        sched.step(3)
    assert sched.last_epoch == 3


@pytest.mark.parametrize(
    "kwargs", [{"T_0": 4}, {"T_0": 3, "T_mult": 2, "eta_min": 0.01}, {"T_0": 2, "T_mult": 3}]
)
def test_warm_restarts_step_with_fractions_of_an_epoch_as_torch(kwargs: dict[str, Any]) -> None:
    """torch's documented loop: ``scheduler.step(epoch + i / iters)`` after each batch."""
    opt, ref_opt = twins()
    sched = lr_scheduler.CosineAnnealingWarmRestarts(opt, **kwargs)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(ref_opt, **kwargs)
    iters = 7
    for epoch in range(30):
        for i in range(iters):
            ours, theirs = step_both(sched, ref, epoch + i / iters)
            assert ours == theirs == []
            position = (sched.T_cur, sched.T_i, sched.last_epoch)
            assert position == (ref.T_cur, ref.T_i, ref.last_epoch)
            assert sched.get_last_lr() == ref.get_last_lr()
        if epoch == 12:  # swap states mid-run, both ways
            ours_state, ref_state = sched.state_dict(), copy.deepcopy(ref.state_dict())
            ref.load_state_dict(ours_state)
            sched.load_state_dict(ref_state)
    step_both(sched, ref, None)  # and on by whole epochs from a fraction
    assert (sched.T_cur, sched.last_epoch) == (ref.T_cur, ref.last_epoch)
    assert sched.get_last_lr() == ref.get_last_lr()


def test_warm_restarts_refuses_a_negative_epoch_as_torch() -> None:
    opt, ref_opt = twins()
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(ref_opt, T_0=3)
    with pytest.raises(ValueError, match="non-negative epoch"):
        ref.step(-0.5)
    sched = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3)
    with pytest.raises(ValueError, match=r"CosineAnnealingWarmRestarts: expected epoch >= 0"):
        sched.step(-0.5)


def test_reduce_lr_on_plateau_step_with_an_epoch_warns_and_sets_last_epoch() -> None:
    opt, ref_opt = twins()
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, patience=1)
    for metric, epoch in [(1.0, None), (2.0, 7), (2.0, None), (3.0, 3), (0.5, None)]:
        caught = []
        for scheduler in (sched, ref):
            with warnings.catch_warnings(record=True) as found:
                warnings.simplefilter("always")
                scheduler.step(metric) if epoch is None else scheduler.step(metric, epoch)
            caught.append(messages(found))
        assert len(caught[0]) == len(caught[1]) == (epoch is not None)
        assert sched.last_epoch == ref.last_epoch
        assert sched.get_last_lr() == ref.get_last_lr()


@pytest.mark.parametrize("name", ["SequentialLR", "ChainedScheduler"])
def test_composite_schedulers_take_no_epoch_as_torch(name: str) -> None:
    def make(lib: Any, o: Any) -> Any:
        parts = [lib.LinearLR(o, total_iters=3), lib.ExponentialLR(o, gamma=0.9)]
        if name == "SequentialLR":
            return lib.SequentialLR(o, parts, [3])
        return lib.ChainedScheduler(parts)

    opt, ref_opt = twins()
    with pytest.raises(TypeError):
        make(torch.optim.lr_scheduler, ref_opt).step(2)
    with pytest.raises(TypeError):
        make(lr_scheduler, opt).step(2)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_calling_get_lr_warns_as_torch_and_gives_its_values(name: str) -> None:
    opt, ref_opt = twins()
    sched = SCHEDULERS[name](lr_scheduler, opt)
    ref = SCHEDULERS[name](torch.optim.lr_scheduler, ref_opt)
    for _ in range(4):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a step's own get_lr() is silent
            opt.step()
            sched.step()
        ref_opt.step()
        ref.step()
        with pytest.warns(UserWarning, match=r"please use `get_last_lr\(\)`") as ours:
            lrs = sched.get_lr()
        with pytest.warns(UserWarning) as theirs:
            ref_lrs = ref.get_lr()
        assert messages(list(ours)) == messages(list(theirs))
        assert lrs == ref_lrs
        assert groups_of(opt) == groups_of(ref_opt)  # the cycling ones move the momentum here


def test_cosine_get_lr_right_after_resuming_is_torchs_closed_form() -> None:
    opt, ref_opt = twins()
    for group in opt.param_groups + ref_opt.param_groups:
        group["initial_lr"] = group["lr"]
        group["lr"] *= 0.3  # a resumed run's lr, off the cosine on purpose
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10, last_epoch=4)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=10, last_epoch=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sched.get_lr() == ref.get_lr()

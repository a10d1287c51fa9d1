"""Learning-rate schedules against torch.optim.lr_scheduler, step by step."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from nograd.nn import Parameter
from nograd.optim import SGD, lr_scheduler
from tests.oracle import assert_close

LRS = [0.1, 0.03]  # two param groups, two base learning rates
CASES: list[tuple[str, dict[str, Any]]] = [
    ("StepLR", {"step_size": 7}),
    ("StepLR", {"step_size": 1, "gamma": 0.97}),
    ("StepLR", {"step_size": 30, "gamma": 0.5}),
    ("CosineAnnealingLR", {"T_max": 10}),
    ("CosineAnnealingLR", {"T_max": 37, "eta_min": 1e-4}),
    ("CosineAnnealingLR", {"T_max": 1}),
    ("CosineAnnealingLR", {"T_max": 150, "eta_min": 0.01}),
    ("LinearLR", {}),
    ("LinearLR", {"start_factor": 0.1, "total_iters": 40}),
    ("LinearLR", {"start_factor": 1.0, "end_factor": 0.05, "total_iters": 60}),
    ("LinearLR", {"start_factor": 0.25, "end_factor": 0.0, "total_iters": 10}),
    ("MultiStepLR", {"milestones": [5, 20, 20, 70], "gamma": 0.5}),
    ("ExponentialLR", {"gamma": 0.95}),
]
IDS = [f"{name}-{kwargs}" for name, kwargs in CASES]


class Twins:
    """A nograd SGD + scheduler and the torch pair, on two groups with different lr."""

    def __init__(self, name: str, kwargs: dict[str, Any]) -> None:
        self.opt = SGD([{"params": [Parameter(torch.zeros(2))], "lr": lr} for lr in LRS])
        self.ref_opt = torch.optim.SGD(
            [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in LRS]
        )
        self.sched = getattr(lr_scheduler, name)(self.opt, **kwargs)
        self.ref_sched = getattr(torch.optim.lr_scheduler, name)(self.ref_opt, **kwargs)

    def step(self) -> None:
        self.opt.step()
        self.ref_opt.step()  # before the scheduler, or torch warns
        self.sched.step()
        self.ref_sched.step()

    def assert_same_lr(self) -> None:
        expected = self.ref_sched.get_last_lr()
        assert self.sched.get_last_lr() == pytest.approx(expected, rel=1e-12, abs=1e-15)
        lrs = [group["lr"] for group in self.opt.param_groups]
        assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)


def lr_sequence(sched: lr_scheduler.LRScheduler, steps: int) -> list[list[float]]:
    lrs = []
    for _ in range(steps):
        sched.optimizer.step()
        sched.step()
        lrs.append(sched.get_last_lr())
    return lrs


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_150_steps_match_torch(name: str, kwargs: dict[str, Any]) -> None:
    twins = Twins(name, kwargs)
    twins.assert_same_lr()
    seen = {tuple(twins.sched.get_last_lr())}
    for _ in range(150):
        twins.step()
        twins.assert_same_lr()
        seen.add(tuple(twins.sched.get_last_lr()))
    assert len(seen) >= 2  # the schedule did change the learning rate
    assert [g["initial_lr"] for g in twins.opt.param_groups] == twins.sched.base_lrs == LRS


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_state_dict_round_trip_continues_exactly(name: str, kwargs: dict[str, Any]) -> None:
    straight = Twins(name, kwargs).sched
    expected = lr_sequence(straight, 60)

    first = Twins(name, kwargs).sched
    head = lr_sequence(first, 23)
    saved_opt, saved = first.optimizer.state_dict(), first.state_dict()
    lr_sequence(first, 5)  # the saved copy must not follow the original any more
    resumed = Twins(name, kwargs).sched
    resumed.optimizer.load_state_dict(saved_opt)
    resumed.load_state_dict(saved)
    assert head + lr_sequence(resumed, 37) == expected


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_state_dicts_move_between_nograd_and_torch(name: str, kwargs: dict[str, Any]) -> None:
    twins = Twins(name, kwargs)
    for _ in range(23):
        twins.step()
    ours_opt, ours = twins.opt.state_dict(), twins.sched.state_dict()
    ref_opt, ref = twins.ref_opt.state_dict(), twins.ref_sched.state_dict()
    assert ours.keys() <= ref.keys()
    twins.ref_opt.load_state_dict(copy.deepcopy(ours_opt))
    twins.ref_sched.load_state_dict(copy.deepcopy(ours))
    twins.opt.load_state_dict(ref_opt)
    twins.sched.load_state_dict(ref)
    for _ in range(40):
        twins.step()
        twins.assert_same_lr()


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_resuming_with_last_epoch_matches_torch(name: str, kwargs: dict[str, Any]) -> None:
    opt = SGD([Parameter(torch.zeros(2))], lr=0.02)
    ref_opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.02)
    for group in opt.param_groups + ref_opt.param_groups:
        group["initial_lr"] = 0.1
    sched = getattr(lr_scheduler, name)(opt, last_epoch=12, **kwargs)
    ref = getattr(torch.optim.lr_scheduler, name)(ref_opt, last_epoch=12, **kwargs)
    assert sched.last_epoch == ref.last_epoch
    for _ in range(40):
        ref_opt.step()
        ref.step()
        sched.step()
        assert sched.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-12, abs=1e-15)


def test_resuming_without_initial_lr_raises() -> None:
    opt = SGD([Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match=r"StepLR: resuming at last_epoch=3 expects 'initial_lr'"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=3)


def test_scheduler_drives_the_optimizer_like_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(5, dtype=torch.float64, generator=gen)
    p, t = Parameter(start.clone()), start.clone().requires_grad_()
    opt, ref_opt = SGD([p], lr=0.5, momentum=0.9), torch.optim.SGD([t], lr=0.5, momentum=0.9)
    sched = lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=5, gamma=0.5)
    for _ in range(40):
        g = torch.randn(5, dtype=torch.float64, generator=gen)
        p.grad, t.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
        sched.step()
        ref.step()
    assert_close(p.data, t.detach())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.5**8, rel=1e-12)


def test_load_state_dict_rejects_a_foreign_schedule() -> None:
    opt = SGD([Parameter(torch.zeros(2))], lr=0.1)
    cosine = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    step = lr_scheduler.StepLR(SGD([Parameter(torch.zeros(2))], lr=0.1), step_size=3)
    with pytest.raises(ValueError, match=r"CosineAnnealingLR.load_state_dict: missing keys"):
        cosine.load_state_dict(step.state_dict())
    two_groups = Twins("StepLR", {"step_size": 3}).sched.state_dict()
    with pytest.raises(ValueError, match=r"expected base_lrs for 1 param groups, got 2"):
        lr_scheduler.StepLR(opt, step_size=3).load_state_dict(two_groups)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("StepLR", {"step_size": 0}, r"StepLR: expected step_size an int > 0, got 0"),
        ("StepLR", {"step_size": 2.5}, r"StepLR: expected step_size an int > 0, got 2.5"),
        ("StepLR", {"step_size": 2, "gamma": -0.1}, r"StepLR: expected gamma >= 0, got -0.1"),
        ("CosineAnnealingLR", {"T_max": 0}, r"CosineAnnealingLR: expected T_max > 0, got 0"),
        (
            "CosineAnnealingLR",
            {"T_max": 5, "eta_min": -1e-3},
            r"CosineAnnealingLR: expected eta_min >= 0, got -0.001",
        ),
        ("LinearLR", {"start_factor": 0.0}, r"LinearLR: expected start_factor in \(0, 1\], got 0"),
        ("LinearLR", {"start_factor": 1.5}, r"expected start_factor in \(0, 1\], got 1.5"),
        ("LinearLR", {"end_factor": -0.5}, r"LinearLR: expected end_factor in \[0, 1\], got -0.5"),
        ("LinearLR", {"end_factor": 2.0}, r"LinearLR: expected end_factor in \[0, 1\], got 2.0"),
        ("LinearLR", {"total_iters": 0}, r"LinearLR: expected total_iters an int > 0, got 0"),
        ("MultiStepLR", {"milestones": [3, -1]}, r"MultiStepLR: expected milestones to be ints"),
        ("ExponentialLR", {"gamma": -2.0}, r"ExponentialLR: expected gamma >= 0, got -2.0"),
        ("StepLR", {"step_size": 2, "last_epoch": -5}, r"expected last_epoch an int >= -1"),
    ],
)
def test_invalid_arguments_raise(name: str, kwargs: dict[str, Any], match: str) -> None:
    opt = SGD([Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match=match):
        getattr(lr_scheduler, name)(opt, **kwargs)
    assert opt.param_groups[0]["lr"] == 0.1


def test_scheduler_needs_a_nograd_optimizer() -> None:
    ref_opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(TypeError, match=r"StepLR: expected a nograd Optimizer, got SGD"):
        lr_scheduler.StepLR(ref_opt, step_size=2)  # type: ignore[arg-type]

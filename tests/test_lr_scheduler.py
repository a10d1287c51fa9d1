"""Learning-rate schedules against torch.optim.lr_scheduler, step by step."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from nograd.data import disk
from nograd.nn import Linear, Parameter, Sequential, Tanh
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.optim import SGD, Adam, AdamW, Optimizer, lr_scheduler
from nograd.train import History, fit
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


@pytest.mark.filterwarnings("ignore:Detected call of")  # the lr alone: no optimizer steps
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


# ------------------------------------------------- the schedulers added to the first six
# Each case builds its scheduler from a library, nograd's lr_scheduler or torch's, so one
# lambda makes both twins (composite ones from their parts, on the same optimizer).
THREE_LRS = [0.1, 0.03, 0.5]


class Warmup:
    """A callable object: its attributes are what LambdaLR's state_dict saves."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, epoch: int) -> float:
        return min(1.0, (epoch + 1) / self.steps)


def tenth_per_group(epoch: int) -> float:
    return 0.9 if epoch % 3 else 1.0


class Shrink:
    """A callable object as CyclicLR's scale_fn: its attributes are what state_dict saves."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, x: float) -> float:
        return 1 / (1 + self.rate * x)


Maker = Any  # (lib, optimizer) -> scheduler, lib being nograd's module or torch's
NEW_CASES: dict[str, Maker] = {
    "LambdaLR-lambda": lambda lib, o: lib.LambdaLR(o, lambda t: 0.95**t),
    "LambdaLR-per-group": lambda lib, o: lib.LambdaLR(
        o, [lambda t: 0.95**t, Warmup(8), lambda t: 1 / (1 + t)]
    ),
    "MultiplicativeLR-lambda": lambda lib, o: lib.MultiplicativeLR(o, lambda t: 0.93),
    "MultiplicativeLR-per-group": lambda lib, o: lib.MultiplicativeLR(
        o, (tenth_per_group, Warmup(3), lambda t: 0.99)
    ),
    "ConstantLR-default": lambda lib, o: lib.ConstantLR(o),
    "ConstantLR-half-10": lambda lib, o: lib.ConstantLR(o, factor=0.5, total_iters=10),
    "ConstantLR-0.3-0": lambda lib, o: lib.ConstantLR(o, factor=0.3, total_iters=0),
    "PolynomialLR-default": lambda lib, o: lib.PolynomialLR(o),
    "PolynomialLR-30-squared": lambda lib, o: lib.PolynomialLR(o, total_iters=30, power=2.0),
    "PolynomialLR-7-sqrt": lambda lib, o: lib.PolynomialLR(o, total_iters=7, power=0.5),
    "WarmRestarts-10": lambda lib, o: lib.CosineAnnealingWarmRestarts(o, T_0=10),
    "WarmRestarts-3-x2": lambda lib, o: lib.CosineAnnealingWarmRestarts(
        o, T_0=3, T_mult=2, eta_min=1e-3
    ),
    "WarmRestarts-2": lambda lib, o: lib.CosineAnnealingWarmRestarts(o, T_0=2, eta_min=0.01),
    "OneCycleLR-cos": lambda lib, o: lib.OneCycleLR(o, max_lr=1.0, total_steps=40),
    "OneCycleLR-linear-3-phase": lambda lib, o: lib.OneCycleLR(
        o,
        max_lr=[0.4, 0.2, 2.0],
        epochs=5,
        steps_per_epoch=9,
        anneal_strategy="linear",
        three_phase=True,
        base_momentum=[0.8, 0.7, 0.6],
        max_momentum=0.99,
    ),
    "OneCycleLR-no-momentum": lambda lib, o: lib.OneCycleLR(
        o,
        max_lr=0.3,
        total_steps=45,
        pct_start=0.5,
        cycle_momentum=False,
        div_factor=10.0,
        final_div_factor=100.0,
    ),
    "CyclicLR-triangular": lambda lib, o: lib.CyclicLR(o, 0.01, 0.1, step_size_up=5),
    "CyclicLR-triangular2-down": lambda lib, o: lib.CyclicLR(
        o, 0.01, 0.1, step_size_up=3, step_size_down=6, mode="triangular2"
    ),
    "CyclicLR-exp-range-lists": lambda lib, o: lib.CyclicLR(
        o,
        base_lr=[0.01, 0.02, 0.05],
        max_lr=(0.1, 0.3, 0.5),
        step_size_up=4,
        mode="exp_range",
        gamma=0.97,
        base_momentum=[0.8, 0.85, 0.7],
        max_momentum=[0.9, 0.95, 0.99],
    ),
    "CyclicLR-scale-fn-cycle": lambda lib, o: lib.CyclicLR(
        o, 0.02, 0.2, step_size_up=2, step_size_down=5, scale_fn=Shrink(0.5), mode="bad"
    ),
    "CyclicLR-scale-fn-iterations": lambda lib, o: lib.CyclicLR(
        o,
        0.01,
        [0.1, 0.2, 0.3],
        step_size_up=6,
        scale_fn=lambda t: 0.98**t,
        scale_mode="iterations",
        base_momentum=0.5,
        max_momentum=0.95,
    ),
    "CyclicLR-no-momentum-down-0": lambda lib, o: lib.CyclicLR(
        o, 0.05, 0.5, step_size_up=7, step_size_down=0, cycle_momentum=False
    ),
    "SequentialLR-warmup-cosine": lambda lib, o: lib.SequentialLR(
        o, [lib.LinearLR(o, 0.1, total_iters=5), lib.CosineAnnealingLR(o, T_max=30)], [5]
    ),
    "SequentialLR-three": lambda lib, o: lib.SequentialLR(
        o,
        [
            lib.ConstantLR(o, factor=0.2, total_iters=4),
            lib.MultiStepLR(o, [3, 6, 6], gamma=0.5),
            lib.CosineAnnealingWarmRestarts(o, T_0=4, eta_min=1e-3),
        ],
        milestones=[4, 15],
    ),
    # every schedule with a closed form, restarted at its milestone by that form, as torch's
    "SequentialLR-closed-forms": lambda lib, o: lib.SequentialLR(
        o,
        [
            lib.ExponentialLR(o, gamma=0.9),
            lib.StepLR(o, step_size=3, gamma=0.5),
            lib.LinearLR(o, start_factor=0.5, end_factor=1.0, total_iters=4),
            lib.PolynomialLR(o, total_iters=6, power=2.0),
            lib.ConstantLR(o, factor=0.3, total_iters=3),
        ],
        milestones=[3, 9, 15, 24],
    ),
    "SequentialLR-lambda-exp": lambda lib, o: lib.SequentialLR(
        o, [lib.LambdaLR(o, Warmup(6)), lib.ExponentialLR(o, gamma=0.9)], milestones=[6]
    ),
    "ChainedScheduler-constant-exp": lambda lib, o: lib.ChainedScheduler(
        [lib.ConstantLR(o, factor=0.1, total_iters=20), lib.ExponentialLR(o, gamma=0.9)]
    ),
    "ChainedScheduler-linear-step-poly": lambda lib, o: lib.ChainedScheduler(
        [
            lib.LinearLR(o, start_factor=0.5, total_iters=8),
            lib.StepLR(o, step_size=6, gamma=0.7),
            lib.PolynomialLR(o, total_iters=35, power=1.5),
        ],
        optimizer=o,
    ),
}


def three_groups(optimizer: str = "sgd") -> tuple[Any, torch.optim.Optimizer]:
    """A nograd optimizer and torch's twin, with three param groups of different lr."""
    groups = [{"params": [Parameter(torch.zeros(2))], "lr": lr} for lr in THREE_LRS]
    ref_groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in THREE_LRS]
    if optimizer == "sgd":
        return SGD(groups, lr=0.1, momentum=0.9), torch.optim.SGD(ref_groups, momentum=0.9)
    if optimizer == "adam":
        return Adam(groups, lr=0.1), torch.optim.Adam(ref_groups)
    return AdamW(groups, lr=0.1), torch.optim.AdamW(ref_groups)


class NewTwins:
    """A nograd scheduler and torch's, made by one case, on twin optimizers."""

    def __init__(self, case: str, optimizer: str = "sgd") -> None:
        self.opt, self.ref_opt = three_groups(optimizer)
        self.sched = NEW_CASES[case](lr_scheduler, self.opt)
        self.ref_sched = NEW_CASES[case](torch.optim.lr_scheduler, self.ref_opt)

    def step(self) -> None:
        self.opt.step()
        self.ref_opt.step()
        self.sched.step()
        self.ref_sched.step()

    def assert_same(self) -> None:
        """The same lr (and momentum, betas), to the bit, in the scheduler and the groups."""
        assert self.sched.get_last_lr() == self.ref_sched.get_last_lr()
        for group, ref_group in zip(self.opt.param_groups, self.ref_opt.param_groups, strict=True):
            keys = ("lr", "momentum", "betas", "initial_lr", "max_lr", "min_lr")
            for key in (*keys, "max_momentum", "base_momentum"):
                assert group.get(key) == ref_group.get(key), key


def same_values(ours: Any, ref: Any) -> bool:
    """Our state equals torch's on our keys (torch keeps a few private flags more)."""
    if isinstance(ours, dict):
        return all(key in ref and same_values(v, ref[key]) for key, v in ours.items())
    if isinstance(ours, list):
        return len(ours) == len(ref) and all(map(same_values, ours, ref))
    return bool(ours == ref)


@pytest.mark.parametrize("case", NEW_CASES)
def test_new_schedulers_match_torch_to_the_bit(case: str) -> None:
    twins = NewTwins(case)
    twins.assert_same()
    seen = {tuple(twins.sched.get_last_lr())}
    for _ in range(40):
        twins.step()
        twins.assert_same()
        seen.add(tuple(twins.sched.get_last_lr()))
    assert len(seen) >= 2 or case == "ConstantLR-0.3-0"  # that one stays at factor * base_lr
    assert same_values(twins.sched.state_dict(), twins.ref_sched.state_dict())


@pytest.mark.parametrize("case", NEW_CASES)
def test_new_state_dicts_move_between_nograd_and_torch(case: str) -> None:
    twins = NewTwins(case)
    for _ in range(17):
        twins.step()
    ours_opt, ours = twins.opt.state_dict(), twins.sched.state_dict()
    ref_opt, ref = twins.ref_opt.state_dict(), twins.ref_sched.state_dict()
    assert same_values(ours, ref)
    resumed = NewTwins(case)  # fresh objects on both sides, each loading the other's state
    resumed.ref_opt.load_state_dict(copy.deepcopy(ours_opt))
    resumed.ref_sched.load_state_dict(copy.deepcopy(ours))
    resumed.opt.load_state_dict(ref_opt)
    resumed.sched.load_state_dict(copy.deepcopy(ref))
    for _ in range(23):
        twins.step()
        resumed.step()
        resumed.assert_same()
        assert resumed.sched.get_last_lr() == twins.sched.get_last_lr()


@pytest.mark.parametrize("case", NEW_CASES)
def test_new_state_dict_round_trip_is_a_copy(case: str) -> None:
    first = NewTwins(case).sched
    for _ in range(11):
        first.optimizer.step()
        first.step()
    saved_opt, saved = first.optimizer.state_dict(), first.state_dict()
    expected = lr_sequence(first, 20)
    resumed = NewTwins(case).sched
    resumed.optimizer.load_state_dict(saved_opt)
    resumed.load_state_dict(saved)
    assert lr_sequence(resumed, 20) == expected


CYCLING = [case for case in NEW_CASES if case.startswith(("OneCycleLR", "CyclicLR"))]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("case", CYCLING)
def test_cycling_schedulers_cycle_adams_beta1_as_torch(case: str, optimizer: str) -> None:
    twins = NewTwins(case, optimizer)
    betas = {twins.opt.param_groups[0]["betas"]}
    for _ in range(40):
        twins.step()
        twins.assert_same()  # lr and betas, to the bit
        betas.add(twins.opt.param_groups[0]["betas"])
    cycled = "no-momentum" not in case
    assert len(betas) > 1 if cycled else betas == {(0.9, 0.999)}


DRIVERS: dict[str, Maker] = {
    "OneCycleLR": lambda lib, o: lib.OneCycleLR(o, max_lr=0.5, total_steps=30, three_phase=True),
    "CyclicLR": lambda lib, o: lib.CyclicLR(o, 0.05, 0.5, step_size_up=4, mode="triangular2"),
}


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("name", DRIVERS)
def test_cycling_schedulers_drive_the_optimizer_like_torch(name: str, optimizer: str) -> None:
    gen = torch.Generator().manual_seed(3)
    start = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    p, t = Parameter(start.clone()), start.clone().requires_grad_()
    opt, ref_opt = {
        "sgd": (SGD([p], lr=0.1, momentum=0.5), torch.optim.SGD([t], lr=0.1, momentum=0.5)),
        "adam": (Adam([p], lr=0.1), torch.optim.Adam([t], lr=0.1)),
        "adamw": (AdamW([p], lr=0.1), torch.optim.AdamW([t], lr=0.1)),
    }[optimizer]
    sched = DRIVERS[name](lr_scheduler, opt)
    ref = DRIVERS[name](torch.optim.lr_scheduler, ref_opt)
    for _ in range(30):
        g = torch.randn(3, 4, dtype=torch.float64, generator=gen)
        p.grad, t.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
        sched.step()
        ref.step()
        assert sched.get_last_lr() == ref.get_last_lr()
    assert_close(p.data, t.detach())


class PlainDescent(Optimizer):
    """An optimizer with neither momentum nor betas."""

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    def step(self, closure: Any = None) -> None:
        """Leaves the parameters as they are: only the schedule is under test."""


def test_one_cycle_refuses_an_optimizer_without_momentum_and_stops_at_total_steps() -> None:
    opt = PlainDescent([Parameter(torch.zeros(2))])
    ref_opt = torch.optim.Adagrad([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=r"OneCycleLR: cycle_momentum=True needs an optimizer"):
        lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)
    with pytest.raises(ValueError):
        torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=1.0, total_steps=5)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5, cycle_momentum=False)
    lr_sequence(sched, 5)
    with pytest.raises(ValueError, match=r"OneCycleLR: stepped 6 times, past total_steps=5"):
        sched.step()


@pytest.mark.filterwarnings("ignore:Detected call of")  # the lr alone: no optimizer steps
def test_cyclic_lr_refuses_an_optimizer_without_momentum() -> None:
    opt = PlainDescent([Parameter(torch.zeros(2))])
    ref_opt = torch.optim.Adagrad([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"CyclicLR: cycle_momentum=True needs an optimizer"):
        lr_scheduler.CyclicLR(opt, 0.01, 0.1)
    with pytest.raises(ValueError):
        torch.optim.lr_scheduler.CyclicLR(ref_opt, 0.01, 0.1)
    sched = lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=3, cycle_momentum=False)
    ref = torch.optim.lr_scheduler.CyclicLR(
        ref_opt, 0.01, 0.1, step_size_up=3, cycle_momentum=False
    )
    for _ in range(10):
        ref_opt.step()
        ref.step()
        sched.step()
        assert sched.get_last_lr() == ref.get_last_lr()
    assert same_values(sched.state_dict(), ref.state_dict())


@pytest.mark.filterwarnings("ignore:Detected call of")  # the lr alone: no optimizer steps
def test_cyclic_lr_starts_at_base_lr_even_after_another_schedule_as_torch() -> None:
    opt, ref_opt = three_groups()
    lr_scheduler.StepLR(opt, step_size=2)  # leaves initial_lr in every group
    torch.optim.lr_scheduler.StepLR(ref_opt, step_size=2)
    sched = NEW_CASES["CyclicLR-triangular"](lr_scheduler, opt)
    ref = NEW_CASES["CyclicLR-triangular"](torch.optim.lr_scheduler, ref_opt)
    assert sched.get_last_lr() == ref.get_last_lr() == THREE_LRS  # step 0 from initial_lr
    assert [g["momentum"] for g in opt.param_groups] == [0.9] * 3
    for _ in range(12):
        ref_opt.step()
        ref.step()
        sched.step()
        assert sched.get_last_lr() == ref.get_last_lr()
        assert [g["momentum"] for g in opt.param_groups] == [
            g["momentum"] for g in ref_opt.param_groups
        ]


def test_cyclic_lr_state_dict_saves_a_scale_fn_object_not_a_function() -> None:
    opt, ref_opt = three_groups()
    sched = lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=3, scale_fn=Shrink(0.25))
    ref = torch.optim.lr_scheduler.CyclicLR(
        ref_opt, 0.01, 0.1, step_size_up=3, scale_fn=Shrink(0.25)
    )
    assert sched.state_dict()["_scale_fn_custom"] == {"rate": 0.25}
    assert same_values(sched.state_dict(), ref.state_dict())
    assert "_scale_fn_ref" not in ref.state_dict()
    function = lr_scheduler.CyclicLR(three_groups()[0], 0.01, 0.1, scale_fn=lambda x: 1.0)
    assert function.state_dict()["_scale_fn_custom"] is None
    other = Shrink(0.9)
    resumed = lr_scheduler.CyclicLR(three_groups()[0], 0.01, 0.1, step_size_up=3, scale_fn=other)
    saved = sched.state_dict()
    resumed.load_state_dict(saved)
    assert other.rate == 0.25  # the object's attributes came back
    assert saved["_scale_fn_custom"] == {"rate": 0.25}  # and the state is left as it was
    with pytest.raises(ValueError, match=r"CyclicLR.load_state_dict: the state holds"):
        lr_scheduler.CyclicLR(three_groups()[0], 0.01, 0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"expected max_lrs for 3 param groups, got 2"):
        resumed.load_state_dict({**saved, "max_lrs": [0.1, 0.1]})


def test_cyclic_lr_step_size_up_0_raises_where_torch_divides_by_zero() -> None:
    opt, ref_opt = three_groups()
    with pytest.raises(ValueError, match=r"CyclicLR: expected step_size_up > 0, got 0"):
        lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=0)
    with pytest.raises(ZeroDivisionError):
        torch.optim.lr_scheduler.CyclicLR(ref_opt, 0.01, 0.1, step_size_up=0)


RESUMABLE: list[tuple[str, dict[str, Any]]] = [
    ("LambdaLR", {"lr_lambda": lambda t: 0.9**t}),
    ("MultiplicativeLR", {"lr_lambda": lambda t: 0.95}),
    ("ConstantLR", {"factor": 0.5, "total_iters": 20}),
    ("PolynomialLR", {"total_iters": 30, "power": 2.0}),
    ("CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 2}),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 50}),
    ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4, "mode": "triangular2"}),
]


@pytest.mark.filterwarnings("ignore:Detected call of")  # the lr alone: no optimizer steps
@pytest.mark.parametrize(("name", "kwargs"), RESUMABLE, ids=[n for n, _ in RESUMABLE])
def test_new_schedulers_resume_with_last_epoch_as_torch(name: str, kwargs: dict[str, Any]) -> None:
    opt, ref_opt = three_groups()
    getattr(lr_scheduler, name)(opt, **kwargs)
    getattr(torch.optim.lr_scheduler, name)(ref_opt, **kwargs)  # their groups' initial_lr &c.
    opt_state, ref_state = opt.state_dict(), ref_opt.state_dict()
    opt, ref_opt = three_groups()
    opt.load_state_dict(opt_state)
    ref_opt.load_state_dict(ref_state)
    sched = getattr(lr_scheduler, name)(opt, last_epoch=12, **kwargs)
    ref = getattr(torch.optim.lr_scheduler, name)(ref_opt, last_epoch=12, **kwargs)
    assert sched.get_last_lr() == ref.get_last_lr()
    for _ in range(25):
        ref_opt.step()
        ref.step()
        sched.step()
        assert sched.get_last_lr() == ref.get_last_lr()


def test_lambda_state_dict_saves_callable_objects_not_functions() -> None:
    opt, ref_opt = three_groups()
    lambdas = [lambda t: 0.9**t, Warmup(5), tenth_per_group]
    sched = lr_scheduler.LambdaLR(opt, lambdas)
    ref = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambdas)
    assert sched.state_dict()["lr_lambdas"] == [None, {"steps": 5}, None]
    assert sched.state_dict()["lr_lambdas"] == ref.state_dict()["lr_lambdas"]
    other = Warmup(9)
    resumed = lr_scheduler.LambdaLR(three_groups()[0], [lambdas[0], other, lambdas[2]])
    resumed.load_state_dict(sched.state_dict())
    assert other.steps == 5  # the object's attributes came back
    with pytest.raises(ValueError, match=r"expected lr_lambdas for 3 param groups, got 2"):
        resumed.load_state_dict({**sched.state_dict(), "lr_lambdas": [None, None]})


# ------------------------------------------------------------------- ReduceLROnPlateau
def plateau_metrics(mode: str) -> list[float]:
    """Improving, then flat with noise, then improving a little: 60 epochs."""
    metrics = [
        2.0 - 0.1 * min(t, 8) - 0.002 * max(0, t - 30) + 0.01 * (t % 3 == 1) for t in range(60)
    ]
    return metrics if mode == "min" else [3.0 - m for m in metrics]  # rising, as an accuracy


PLATEAU_CASES: list[dict[str, Any]] = [
    {},
    {"patience": 3, "cooldown": 2},
    {"mode": "max", "factor": 0.5, "patience": 2, "threshold": 0.01},
    {"threshold_mode": "abs", "threshold": 0.05, "patience": 1, "cooldown": 3},
    {"mode": "max", "threshold_mode": "abs", "patience": 0, "cooldown": 1,
     "min_lr": [0.01, 0.001, 0.2]},
    {"mode": "max", "threshold_mode": "rel", "threshold": 0.0, "patience": 1},
    {"factor": 0.9, "patience": 0, "min_lr": 0.005, "eps": 0.004},
    {"factor": 0.0, "patience": 4, "min_lr": [0.0, 0.02, 0.3]},
]  # fmt: skip


@pytest.mark.parametrize("kwargs", PLATEAU_CASES, ids=[str(k) for k in PLATEAU_CASES])
def test_reduce_lr_on_plateau_matches_torch(kwargs: dict[str, Any]) -> None:
    opt, ref_opt = three_groups()
    sched = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, **kwargs)
    lrs = set()
    for i, metric in enumerate(plateau_metrics(kwargs.get("mode", "min"))):
        opt.step()
        ref_opt.step()
        sched.step(torch.tensor(metric, dtype=torch.float64) if i % 2 else metric)  # or a float
        ref.step(metric)
        assert sched.get_last_lr() == ref.get_last_lr()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]
        assert same_values(sched.state_dict(), ref.state_dict())
        lrs.add(tuple(sched.get_last_lr()))
    assert len(lrs) >= 2  # each case reduced the lr at least once


@pytest.mark.parametrize("kwargs", PLATEAU_CASES, ids=[str(k) for k in PLATEAU_CASES])
def test_reduce_lr_on_plateau_state_dicts_move_between_nograd_and_torch(
    kwargs: dict[str, Any],
) -> None:
    metrics = plateau_metrics(kwargs.get("mode", "min"))
    opt, ref_opt = three_groups()
    sched = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, **kwargs)
    for metric in metrics[:25]:
        sched.step(metric)
        ref.step(metric)
    assert sched.state_dict().keys() <= ref.state_dict().keys()
    opt2, ref_opt2 = three_groups()
    sched2 = lr_scheduler.ReduceLROnPlateau(opt2, **kwargs)
    ref2 = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt2, **kwargs)
    opt2.load_state_dict(ref_opt.state_dict())
    sched2.load_state_dict(copy.deepcopy(ref.state_dict()))
    ref_opt2.load_state_dict(opt.state_dict())
    ref2.load_state_dict(sched.state_dict())
    for metric in metrics[25:]:
        for s in (sched, ref, sched2, ref2):
            s.step(metric)
        assert sched2.get_last_lr() == ref.get_last_lr() == ref2.get_last_lr()
        assert sched.state_dict() == sched2.state_dict()


# ------------------------------------------------------------------- argument checks
def f(t: int) -> float:
    return 1.0


NEW_INVALID: list[tuple[str, dict[str, Any], type[Exception], str, bool]] = [
    # name, kwargs, the error, its message, whether torch raises it too (at construction)
    ("LambdaLR", {"lr_lambda": [f]}, ValueError, r"LambdaLR: expected 3 lr_lambdas, one per param group, got 1", True),  # noqa: E501
    ("LambdaLR", {"lr_lambda": 0.5}, TypeError, r"LambdaLR: expected lr_lambda to be a function of the epoch, got float", True),  # noqa: E501
    ("MultiplicativeLR", {"lr_lambda": [f, f, "x"]}, TypeError, r"MultiplicativeLR: expected lr_lambda to be a function", True),  # noqa: E501
    ("ConstantLR", {"factor": 1.5}, ValueError, r"ConstantLR: expected factor in \(0, 1\], got 1.5", True),  # noqa: E501
    ("ConstantLR", {"factor": -0.1}, ValueError, r"ConstantLR: expected factor in \(0, 1\], got -0.1", True),  # noqa: E501
    ("ConstantLR", {"total_iters": -1}, ValueError, r"ConstantLR: expected total_iters an int >= 0, got -1", False),  # noqa: E501
    ("PolynomialLR", {"total_iters": 0}, ValueError, r"PolynomialLR: expected total_iters an int > 0, got 0", False),  # noqa: E501
    ("PolynomialLR", {"power": -1.0}, ValueError, r"PolynomialLR: expected power >= 0, got -1.0", False),  # noqa: E501
    ("CosineAnnealingWarmRestarts", {"T_0": 0}, ValueError, r"expected T_0 an int > 0, got 0", True),  # noqa: E501
    ("CosineAnnealingWarmRestarts", {"T_0": 2.5}, ValueError, r"expected T_0 an int > 0, got 2.5", True),  # noqa: E501
    ("CosineAnnealingWarmRestarts", {"T_0": 5, "T_mult": 0}, ValueError, r"expected T_mult an int >= 1, got 0", True),  # noqa: E501
    ("CosineAnnealingWarmRestarts", {"T_0": 5, "eta_min": "0"}, ValueError, r"expected eta_min a number, got '0'", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0}, ValueError, r"OneCycleLR: expected total_steps, or both epochs and steps_per_epoch", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 0}, ValueError, r"OneCycleLR: expected total_steps an int > 0, got 0", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0, "epochs": 0, "steps_per_epoch": 3}, ValueError, r"expected epochs an int > 0, got 0", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0, "epochs": 2, "steps_per_epoch": 1.5}, ValueError, r"expected steps_per_epoch an int > 0, got 1.5", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 9, "pct_start": 1.5}, ValueError, r"expected pct_start a float in \[0, 1\], got 1.5", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 9, "pct_start": 1}, ValueError, r"expected pct_start a float in \[0, 1\], got 1", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 9, "anneal_strategy": "exp"}, ValueError, r"expected anneal_strategy 'cos' or 'linear', got 'exp'", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": [1.0, 2.0], "total_steps": 9}, ValueError, r"OneCycleLR: expected max_lr for 3 param groups, got 2 values", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 9, "base_momentum": [0.8]}, ValueError, r"expected base_momentum for 3 param groups, got 1 values", True),  # noqa: E501
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 9, "div_factor": 0}, ValueError, r"expected div_factor > 0, got 0", False),  # noqa: E501
    ("CyclicLR", {"base_lr": [0.1, 0.2], "max_lr": 1.0}, ValueError, r"CyclicLR: expected base_lr for 3 param groups, got 2 values", True),  # noqa: E501
    ("CyclicLR", {"base_lr": 0.1, "max_lr": [1.0]}, ValueError, r"CyclicLR: expected max_lr for 3 param groups, got 1 values", True),  # noqa: E501
    ("CyclicLR", {"base_lr": 0.1, "max_lr": 1.0, "mode": "cosine"}, ValueError, r"expected mode 'triangular', 'triangular2' or 'exp_range', got 'cosine'", True),  # noqa: E501
    ("CyclicLR", {"base_lr": 0.1, "max_lr": 1.0, "max_momentum": [0.9, 0.9]}, ValueError, r"expected max_momentum for 3 param groups, got 2 values", True),  # noqa: E501
    ("CyclicLR", {"base_lr": 0.1, "max_lr": 1.0, "scale_fn": 0.5}, TypeError, r"CyclicLR: expected scale_fn a function, got float", True),  # noqa: E501
    ("CyclicLR", {"base_lr": 0.1, "max_lr": 1.0, "step_size_up": -2}, ValueError, r"expected step_size_up > 0, got -2", False),  # noqa: E501
    ("CyclicLR", {"base_lr": 0.1, "max_lr": 1.0, "step_size_down": -1}, ValueError, r"expected step_size_down >= 0, got -1", False),  # noqa: E501
    ("CyclicLR", {"base_lr": 0.1, "max_lr": 1.0, "scale_fn": f, "scale_mode": "batch"}, ValueError, r"expected scale_mode 'cycle' or 'iterations', got 'batch'", False),  # noqa: E501
    ("CyclicLR", {"base_lr": 0.1, "max_lr": 1.0, "gamma": "0.9"}, ValueError, r"CyclicLR: expected gamma a number, got '0.9'", False),  # noqa: E501
    ("ReduceLROnPlateau", {"factor": 1.0}, ValueError, r"ReduceLROnPlateau: expected factor in \[0, 1\), got 1.0", True),  # noqa: E501
    ("ReduceLROnPlateau", {"mode": "maximum"}, ValueError, r"expected mode 'min' or 'max', got 'maximum'", True),  # noqa: E501
    ("ReduceLROnPlateau", {"threshold_mode": "relative"}, ValueError, r"expected threshold_mode 'rel' or 'abs', got 'relative'", True),  # noqa: E501
    ("ReduceLROnPlateau", {"min_lr": [0.0, 0.1]}, ValueError, r"expected min_lr for 3 param groups, got 2 values", True),  # noqa: E501
    ("ReduceLROnPlateau", {"patience": -1}, ValueError, r"expected patience an int >= 0, got -1", False),  # noqa: E501
    ("ReduceLROnPlateau", {"cooldown": 1.5}, ValueError, r"expected cooldown an int >= 0, got 1.5", False),  # noqa: E501
    ("ReduceLROnPlateau", {"eps": -1.0}, ValueError, r"expected eps >= 0, got -1.0", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match", "torch_raises"),
    NEW_INVALID,
    ids=[f"{name}-{i}" for i, (name, *_) in enumerate(NEW_INVALID)],
)
def test_new_invalid_arguments_raise_and_change_nothing(
    name: str, kwargs: dict[str, Any], error: type[Exception], match: str, torch_raises: bool
) -> None:
    opt, ref_opt = three_groups()
    with pytest.raises(error, match=match):
        getattr(lr_scheduler, name)(opt, **kwargs)
    assert [g["lr"] for g in opt.param_groups] == THREE_LRS
    assert all("initial_lr" not in g and g["momentum"] == 0.9 for g in opt.param_groups)
    if torch_raises:
        with pytest.raises(error):
            getattr(torch.optim.lr_scheduler, name)(ref_opt, **kwargs)


COMPOSITE_INVALID: list[tuple[Maker, type[Exception], str]] = [
    (lambda lib, o, other: lib.SequentialLR(o, [], []), ValueError, r"SequentialLR: expected at least one scheduler"),  # noqa: E501
    (lambda lib, o, other: lib.ChainedScheduler([], o), ValueError, r"ChainedScheduler: expected at least one scheduler"),  # noqa: E501
    (lambda lib, o, other: lib.SequentialLR(o, [lib.ReduceLROnPlateau(o)], []), ValueError, r"SequentialLR: cannot hold ReduceLROnPlateau \(index 0\)"),  # noqa: E501
    (lambda lib, o, other: lib.ChainedScheduler([lib.StepLR(o, 2), lib.ReduceLROnPlateau(o)]), ValueError, r"ChainedScheduler: cannot hold ReduceLROnPlateau \(index 1\)"),  # noqa: E501
    (lambda lib, o, other: lib.SequentialLR(o, [lib.StepLR(other, 2)], []), ValueError, r"SequentialLR: expected every scheduler on one optimizer, but StepLR at index 0"),  # noqa: E501
    (lambda lib, o, other: lib.ChainedScheduler([lib.StepLR(o, 2), lib.StepLR(other, 2)]), ValueError, r"StepLR at index 1 has another"),  # noqa: E501
    (lambda lib, o, other: lib.ChainedScheduler([lib.StepLR(o, 2), 3], o), TypeError, r"ChainedScheduler: expected schedulers, got int at index 1"),  # noqa: E501
    (lambda lib, o, other: lib.SequentialLR(o, [lib.StepLR(o, 2), lib.StepLR(o, 3)], []), ValueError, r"SequentialLR: expected milestones one fewer than the 2 schedulers, got \[\]"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(("make", "error", "match"), COMPOSITE_INVALID)
def test_composite_schedulers_check_their_parts_as_torch(
    make: Maker, error: type[Exception], match: str
) -> None:
    opt, ref_opt = three_groups()
    other, ref_other = three_groups()
    with pytest.raises(error, match=match):
        make(lr_scheduler, opt, other)
    with pytest.raises(error):
        make(torch.optim.lr_scheduler, ref_opt, ref_other)


def test_composite_load_state_dict_needs_the_same_parts() -> None:
    twins = NewTwins("SequentialLR-three")
    two = NewTwins("SequentialLR-warmup-cosine").sched.state_dict()
    with pytest.raises(ValueError, match=r"expected the states of 3 schedulers, got 2"):
        twins.sched.load_state_dict(two)


# ---------------------------------------------------------------- in fit, and resumed
def fit_run(make: Maker, interval: str = "epoch", **options: Any) -> tuple[Any, Any, History]:
    """A short seeded fit with the scheduler ``make`` builds; the model, scheduler, History."""
    generator = torch.Generator().manual_seed(7)
    train, test = disk(60, generator=generator), disk(30, generator=generator)
    torch.manual_seed(11)
    model = Sequential(Linear(2, 8), Tanh(), Linear(8, 2))
    optimizer = SGD(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.2}],
        lr=0.5, momentum=0.5,
    )  # fmt: skip
    scheduler = make(lr_scheduler, optimizer)
    history = fit(
        model, CrossEntropyLoss(), optimizer, train, test, epochs=options.pop("epochs", 6),
        batch_size=16, scheduler=scheduler, scheduler_interval=interval,  # type: ignore[arg-type]
        generator=generator, progress=False, **options,
    )  # fmt: skip
    return model, scheduler, history


FIT_CASES: dict[str, tuple[Maker, str]] = {
    "ReduceLROnPlateau": (
        lambda lib, o: lib.ReduceLROnPlateau(o, patience=0, factor=0.5, threshold=0.05),
        "epoch",
    ),
    "SequentialLR": (NEW_CASES["SequentialLR-three"], "epoch"),
    "ChainedScheduler": (NEW_CASES["ChainedScheduler-linear-step-poly"], "step"),
    "LambdaLR": (lambda lib, o: lib.LambdaLR(o, [Warmup(3), lambda t: 0.9**t]), "epoch"),
    "OneCycleLR": (lambda lib, o: lib.OneCycleLR(o, max_lr=[1.0, 0.4], total_steps=24), "step"),
    "WarmRestarts": (NEW_CASES["WarmRestarts-3-x2"], "step"),
    "CyclicLR": (
        lambda lib, o: lib.CyclicLR(o, [0.1, 0.05], [1.0, 0.4], step_size_up=5, mode="triangular2"),
        "step",
    ),
}


@pytest.mark.parametrize("case", FIT_CASES)
def test_fit_resumes_every_new_scheduler_exactly(tmp_path: Path, case: str) -> None:
    make, interval = FIT_CASES[case]
    model, scheduler, history = fit_run(make, interval)
    fit_run(make, interval, epochs=3, checkpoint_path=tmp_path / "c.safetensors")
    resumed, resumed_scheduler, resumed_history = fit_run(
        make, interval, resume_from=tmp_path / "c.safetensors"
    )
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p.data, q.data)
    assert resumed_scheduler.state_dict() == scheduler.state_dict()
    assert resumed_history.lr == history.lr
    assert len(set(history.lr)) >= 2


def test_fit_steps_reduce_lr_on_plateau_with_the_test_loss() -> None:
    make = FIT_CASES["ReduceLROnPlateau"][0]
    _, _, history = fit_run(make, epochs=8)
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    ref = make(torch.optim.lr_scheduler, ref_opt)
    expected = [0.5]
    for loss in history.test_loss[:-1]:
        ref.step(loss)
        expected.append(ref.get_last_lr()[0])
    assert history.lr == expected  # each epoch's lr: after the previous epochs' test losses
    assert min(expected) < 0.5


def test_fit_refuses_reduce_lr_on_plateau_without_a_test_loss() -> None:
    opt = SGD([Parameter(torch.zeros(2))], lr=0.1)
    model = Sequential(Linear(2, 2))
    train = disk(20, generator=torch.Generator().manual_seed(0))
    expected = r"fit: ReduceLROnPlateau steps on the test loss once per epoch; pass test_data"
    with pytest.raises(ValueError, match=expected):
        fit(model, CrossEntropyLoss(), opt, train, epochs=1, progress=False,
            scheduler=lr_scheduler.ReduceLROnPlateau(opt))  # fmt: skip
    with pytest.raises(ValueError, match=expected):
        fit(model, CrossEntropyLoss(), opt, train, train, epochs=1, progress=False,
            scheduler=lr_scheduler.ReduceLROnPlateau(opt), scheduler_interval="step")  # fmt: skip


def step_order_warnings(scheduler: Any, optimizer: Any, scheduler_first: bool) -> list[str]:
    """The messages of the step-order warnings that two steps give, in that order."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            if scheduler_first:
                scheduler.step()
            optimizer.step()
            if not scheduler_first:
                scheduler.step()
    return [str(w.message) for w in caught if "before `optimizer.step()`" in str(w.message)]


@pytest.mark.parametrize("scheduler_first", [True, False])
@pytest.mark.parametrize("case", [*NEW_CASES, *IDS])
def test_a_scheduler_stepped_before_its_optimizer_warns_as_torchs(
    case: str, scheduler_first: bool
) -> None:
    """torch's words, where torch warns (the composite schedules through their parts;
    CosineAnnealingWarmRestarts, whose step is its own, never), and the same learning
    rates after (the first value of the schedule skipped)."""
    if case in NEW_CASES:
        twins: Any = NewTwins(case)
    else:
        name, kwargs = CASES[IDS.index(case)]
        twins = Twins(name, kwargs)
    ours = step_order_warnings(twins.sched, twins.opt, scheduler_first)
    theirs = step_order_warnings(twins.ref_sched, twins.ref_opt, scheduler_first)
    assert ours == theirs
    assert bool(ours) == (scheduler_first and not case.startswith("WarmRestarts"))
    assert twins.sched.get_last_lr() == pytest.approx(twins.ref_sched.get_last_lr(), rel=1e-12)


def test_the_step_order_is_noted_for_an_optimizer_of_ones_own_and_through_hooks() -> None:
    """A subclass's own step notes that it ran (Optimizer.__init_subclass__), also when
    step hooks wrap it or a subclass of it calls it through super()."""

    class HalfSGD(SGD):
        def step(self, closure: Any = None) -> Any:
            for group in self.param_groups:
                group["lr"] /= 2
            return super().step(closure)

    class Plain(Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {"lr": 0.1})

        def step(self, closure: Any = None) -> None:
            for group in self.param_groups:
                for p in group["params"]:
                    p.data.add_(p.grad, alpha=-group["lr"])

    for cls in (HalfSGD, Plain):
        param = Parameter(torch.zeros(2))
        param.grad = torch.ones(2)
        optimizer = cls([param])
        scheduler = lr_scheduler.StepLR(optimizer, 3)
        assert not optimizer._opt_called
        assert step_order_warnings(scheduler, optimizer, scheduler_first=False) == []
    for scheduler_first in (True, False):
        hooked = SGD([Parameter(torch.zeros(2))], lr=0.1)
        hooked.register_step_post_hook(lambda *args: None)
        seen = step_order_warnings(lr_scheduler.StepLR(hooked, 3), hooked, scheduler_first)
        assert bool(seen) == scheduler_first


def test_only_steps_after_the_first_scheduler_count_as_in_torch() -> None:
    """torch notes the optimizer's steps through a wrapper that its first scheduler puts
    on it: steps before it do not count, a second scheduler sees the steps after the
    first, and a copy of the optimizer has taken none."""
    ours_param, ref_param = Parameter(torch.zeros(2)), torch.zeros(2, requires_grad=True)
    ours_param.grad, ref_param.grad = torch.ones(2), torch.ones(2)
    ours, ref = SGD([ours_param], lr=0.1), torch.optim.SGD([ref_param], lr=0.1)
    ours.step()
    ref.step()  # before any scheduler: not counted

    def warnings_of_a_new_schedule(ours: Any, ref: Any) -> tuple[list[str], list[str]]:
        ours_sched = lr_scheduler.StepLR(ours, 2)
        ref_sched = torch.optim.lr_scheduler.StepLR(ref, 2)
        return (
            step_order_warnings(ours_sched, ours, scheduler_first=True),
            step_order_warnings(ref_sched, ref, scheduler_first=True),
        )

    first = warnings_of_a_new_schedule(ours, ref)
    assert first[0] == first[1] and len(first[0]) == 1
    second = warnings_of_a_new_schedule(ours, ref)  # the steps since the first count
    assert second == ([], [])
    copies = warnings_of_a_new_schedule(copy.deepcopy(ours), copy.deepcopy(ref))
    assert copies[0] == copies[1] and len(copies[0]) == 1


def test_a_step_the_class_binds_itself_runs_and_is_noted() -> None:
    """A step that is a staticmethod, a classmethod, a partialmethod or a callable object
    runs as the class binds it (Optimizer.__init_subclass__ wraps it)."""
    import functools

    calls: list[str] = []

    class Counter:
        def __call__(self, *args: Any) -> None:
            calls.append("object")

    def record(kind: str, *args: Any) -> None:
        calls.append(kind)

    steps = {
        "static": staticmethod(lambda *args: record("static")),
        "class": classmethod(lambda cls, *args: record("class")),
        "partial": functools.partialmethod(lambda self, kind: record(kind), "partial"),
        "object": Counter(),
    }
    for kind, step in steps.items():
        cls = type(f"{kind}Optimizer", (SGD,), {"step": step})
        optimizer = cls([Parameter(torch.zeros(2))], lr=0.1)
        scheduler = lr_scheduler.StepLR(optimizer, 2)
        assert step_order_warnings(scheduler, optimizer, scheduler_first=False) == []
        assert calls[-1] == kind and optimizer._opt_called

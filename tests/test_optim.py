"""Optimizers against torch.optim: same gradients in, same trajectories and checkpoints out."""

from __future__ import annotations

import copy
import inspect
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from nograd.nn import Parameter
from nograd.optim import (
    LBFGS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    Optimizer,
    RAdam,
    RMSprop,
)
from tests.oracle import assert_close, torch_makes_state_at_first_step

SHAPES = [(3, 4), (4,), (2, 1, 3)]
TWINS: dict[type[Optimizer], Callable[..., torch.optim.Optimizer]] = {
    SGD: torch.optim.SGD,
    Adam: torch.optim.Adam,
    AdamW: torch.optim.AdamW,
    RMSprop: torch.optim.RMSprop,
    Adagrad: torch.optim.Adagrad,
    NAdam: torch.optim.NAdam,
    RAdam: torch.optim.RAdam,
    Adamax: torch.optim.Adamax,
    Adadelta: torch.optim.Adadelta,
}
CASES: list[tuple[type[Optimizer], dict[str, Any]]] = [
    (SGD, {}),
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (SGD, {"lr": 0.1, "weight_decay": 0.1}),
    (SGD, {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1, "nesterov": True}),
    (SGD, {"lr": 0.1, "maximize": True}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.05, "maximize": True}),
    (Adam, {}),
    (Adam, {"lr": 0.05}),
    (Adam, {"lr": 0.05, "weight_decay": 0.1}),
    (Adam, {"lr": 0.05, "amsgrad": True}),
    (Adam, {"lr": 0.05, "maximize": True}),
    (Adam, {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3}),
    (Adam, {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    (AdamW, {}),
    (AdamW, {"lr": 0.05, "weight_decay": 0.5}),
    (AdamW, {"lr": 0.05, "amsgrad": True}),
    (AdamW, {"lr": 0.05, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    (RMSprop, {}),
    (RMSprop, {"centered": True}),
    (RMSprop, {"momentum": 0.9}),
    (RMSprop, {"centered": True, "momentum": 0.5}),
    (RMSprop, {"weight_decay": 0.1}),
    (RMSprop, {"maximize": True}),
    (RMSprop, {"alpha": 0.5, "eps": 1e-4}),
    (RMSprop, {"centered": True, "momentum": 0.9, "weight_decay": 0.1, "maximize": True}),
    (Adagrad, {}),
    (Adagrad, {"lr": 0.1, "lr_decay": 0.05}),
    (Adagrad, {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-3}),
    (Adagrad, {"lr": 0.1, "weight_decay": 0.1}),
    (Adagrad, {"lr": 0.1, "maximize": True}),
    (Adagrad, {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1, "maximize": True}),
    (NAdam, {}),
    (NAdam, {"lr": 0.05, "momentum_decay": 0.05}),
    (NAdam, {"lr": 0.05, "weight_decay": 0.1}),
    (NAdam, {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (NAdam, {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3, "maximize": True}),
    (RAdam, {}),
    (RAdam, {"lr": 0.05, "weight_decay": 0.1}),
    (RAdam, {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (RAdam, {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3, "maximize": True}),
    (Adamax, {}),
    (Adamax, {"lr": 0.05, "weight_decay": 0.1}),
    (Adamax, {"lr": 0.05, "betas": (0.5, 0.8), "eps": 1e-3, "maximize": True}),
    (Adadelta, {}),
    (Adadelta, {"lr": 0.5, "rho": 0.5, "eps": 1e-3}),
    (Adadelta, {"weight_decay": 0.1, "maximize": True}),
    (Adadelta, {"rho": 1.0}),
]
IDS = [f"{cls.__name__}-{kwargs}" for cls, kwargs in CASES]
# One override per optimizer for a first group that differs from the second.
GROUP_OPTIONS: dict[type[Optimizer], dict[str, Any]] = {
    SGD: {"lr": 0.3, "momentum": 0.9, "nesterov": True, "dampening": 0.0},
    Adam: {"lr": 0.2, "amsgrad": True, "betas": (0.8, 0.9)},
    AdamW: {"lr": 0.2, "weight_decay": 0.3},
    RMSprop: {"lr": 0.05, "centered": True, "momentum": 0.5},
    Adagrad: {"lr": 0.2, "lr_decay": 0.1, "initial_accumulator_value": 0.1},
    NAdam: {"lr": 0.2, "betas": (0.8, 0.9), "momentum_decay": 0.01},
    RAdam: {"lr": 0.2, "betas": (0.8, 0.9), "eps": 1e-4},
    Adamax: {"lr": 0.2, "betas": (0.8, 0.9), "eps": 1e-4},
    Adadelta: {"lr": 0.5, "rho": 0.8},
}


class Twins:
    """Our optimizer and torch's on identical parameters, fed identical gradients."""

    def __init__(
        self,
        cls: type[Optimizer],
        kwargs: dict[str, Any],
        dtype: torch.dtype = torch.float64,
        groups: bool = False,
        seed: int = 0,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        values = [torch.randn(shape, generator=gen, dtype=dtype) for shape in SHAPES]
        self.ours = [Parameter(v.clone()) for v in values]
        self.ref = [v.clone().requires_grad_() for v in values]
        self.opt = cls(self._arrange(self.ours, cls, groups), **kwargs)
        self.ref_opt = TWINS[cls](self._arrange(self.ref, cls, groups), **kwargs)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.steps = 0

    @staticmethod
    def _arrange(params: list[Any], cls: type[Optimizer], groups: bool) -> list[Any]:
        if not groups:
            return params
        return [{"params": params[:1], **GROUP_OPTIONS[cls]}, {"params": params[1:]}]

    def step(self, count: int = 1) -> None:
        for _ in range(count):
            for i, (p, t) in enumerate(zip(self.ours, self.ref, strict=True)):
                if i == 1 and self.steps % 3 == 1:  # parameter 1 gets no gradient now and then
                    p.grad, t.grad = None, None
                else:
                    g = torch.randn(p.shape, generator=self.gen, dtype=p.dtype)
                    p.grad, t.grad = g.clone(), g.clone()
            self.opt.step()
            self.ref_opt.step()
            self.steps += 1

    def assert_same_params(self) -> None:
        for p, t in zip(self.ours, self.ref, strict=True):
            assert_close(p.data, t.detach())


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_100_steps_match_torch_in_float64(cls: type[Optimizer], kwargs: dict[str, Any]) -> None:
    twins = Twins(cls, kwargs)
    twins.step(100)
    twins.assert_same_params()
    assert not torch.equal(twins.ours[0].data, Twins(cls, kwargs).ours[0].data)  # it moved


@pytest.mark.parametrize("cls", list(TWINS))
def test_param_groups_with_different_options_match_torch(cls: type[Optimizer]) -> None:
    twins = Twins(cls, {"lr": 0.01}, groups=True)
    twins.step(100)
    twins.assert_same_params()
    assert twins.opt.param_groups[0]["lr"] != twins.opt.param_groups[1]["lr"]


@pytest.mark.parametrize("cls", list(TWINS))
def test_float32_matches_torch(cls: type[Optimizer]) -> None:
    twins = Twins(cls, {"lr": 0.01, "weight_decay": 0.1}, dtype=torch.float32)
    twins.step(50)
    twins.assert_same_params()


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_step_leaves_grad_untouched(cls: type[Optimizer], kwargs: dict[str, Any]) -> None:
    twins = Twins(cls, kwargs)
    twins.step(3)  # later steps use the momentum buffers; all grads are set after step 3
    grads = [_grad_of(p).clone() for p in twins.ours]
    twins.opt.step()
    assert all(torch.equal(_grad_of(p), g) for p, g in zip(twins.ours, grads, strict=True))


@pytest.mark.parametrize("cls", list(TWINS))
def test_parameter_without_grad_is_skipped(cls: type[Optimizer]) -> None:
    used, unused = Parameter(torch.ones(3)), Parameter(torch.ones(3))
    opt = cls([used, unused], lr=0.1)
    used.grad = torch.ones(3)
    opt.step()
    assert torch.equal(unused.data, torch.ones(3))
    assert not torch.equal(used.data, torch.ones(3))
    assert_untouched_state_as_torchs(cls, opt, unused, 1)


def assert_untouched_state_as_torchs(
    cls: type[Optimizer], opt: Optimizer, param: Parameter, index: int
) -> None:
    """No state for a parameter that never had a gradient, or, where torch makes the
    state when the optimizer is built (Adagrad), torch's state of step 0."""
    ref = [torch.ones(3, requires_grad=True), torch.ones(param.shape, requires_grad=True)]
    ref_opt = TWINS[cls](ref, lr=0.1)
    ref[0].grad = torch.ones(3)
    ref_opt.step()
    assert (param in opt.state) == (ref[1] in ref_opt.state)
    if param in opt.state:
        ours, theirs = opt.state_dict()["state"][index], ref_opt.state_dict()["state"][1]
        assert ours.keys() == theirs.keys() and ours["step"].item() == 0
        assert all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_step_returns_the_closure_loss() -> None:
    p = Parameter(torch.ones(2))
    calls = []

    def closure() -> float:
        calls.append(1)
        p.grad = torch.ones(2)
        return 3.5

    assert SGD([p], lr=0.1).step(closure) == 3.5
    assert calls == [1]
    assert torch.equal(p.data, torch.full((2,), 0.9))


# ------------------------------------------------------------------ state_dict
@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_state_dict_has_torch_structure_and_values(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    twins = Twins(cls, kwargs, groups=True)
    twins.step(5)
    ours, ref = twins.opt.state_dict(), twins.ref_opt.state_dict()
    assert ours.keys() == ref.keys() == {"state", "param_groups"}
    assert ours["state"].keys() == ref["state"].keys()
    for index, entry in ours["state"].items():
        assert entry.keys() == ref["state"][index].keys()
        for key, value in entry.items():
            expected = ref["state"][index][key]
            assert value.dtype == expected.dtype and value.shape == expected.shape
            assert_close(value, expected)
    for group, ref_group in zip(ours["param_groups"], ref["param_groups"], strict=True):
        assert group == ref_group  # every option, foreach, fused, ... included


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_state_dict_round_trip_continues_exactly(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    straight = Twins(cls, kwargs, groups=True)
    straight.step(15)

    first = Twins(cls, kwargs, groups=True)
    first.step(7)
    buffer = io.BytesIO()
    torch.save(first.opt.state_dict(), buffer)  # through a file, as a checkpoint goes
    resumed = Twins(cls, kwargs, groups=True)
    for p, q in zip(resumed.ours, first.ours, strict=True):
        p.data = q.data.clone()
    buffer.seek(0)
    resumed.opt.load_state_dict(torch.load(buffer))
    resumed.gen, resumed.steps = first.gen, first.steps
    resumed.step(8)
    for p, q in zip(resumed.ours, straight.ours, strict=True):
        assert torch.equal(p.data, q.data)


@pytest.mark.parametrize("cls", list(TWINS))
def test_checkpoints_move_between_nograd_and_torch(cls: type[Optimizer]) -> None:
    twins = Twins(cls, {"lr": 0.01}, groups=True)
    twins.step(6)
    ours_saved, ref_saved = twins.opt.state_dict(), twins.ref_opt.state_dict()
    twins.ref_opt.load_state_dict(copy.deepcopy(ours_saved))  # torch shares what it loads
    twins.opt.load_state_dict(ref_saved)
    twins.step(10)
    twins.assert_same_params()


def test_load_state_dict_copies_and_casts_to_the_params() -> None:
    p64 = Parameter(torch.randn(3, dtype=torch.float64))
    saved_opt = Adam([p64])
    p64.grad = torch.randn(3, dtype=torch.float64)
    saved_opt.step()
    saved = saved_opt.state_dict()

    p32 = Parameter(torch.randn(3, dtype=torch.float32))
    opt = Adam([p32])
    opt.load_state_dict(saved)
    state = opt.state[p32]
    assert state["exp_avg"].dtype == torch.float32
    assert state["step"].dtype == saved["state"][0]["step"].dtype  # step keeps its dtype
    torch.testing.assert_close(state["exp_avg"], saved["state"][0]["exp_avg"].float())
    state["step"].add_(1)
    state["exp_avg"].add_(1)
    assert saved["state"][0]["step"].item() == 1  # loaded state is a copy
    assert not torch.equal(saved["state"][0]["exp_avg"].float(), state["exp_avg"])


def test_adamw_stays_decoupled_after_loading_an_adam_checkpoint() -> None:
    p = Parameter(torch.ones(2))
    opt = AdamW([p])
    opt.load_state_dict(Adam([Parameter(torch.ones(2))]).state_dict())
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


@pytest.mark.parametrize("cls", list(TWINS))
def test_load_state_dict_takes_options_unchecked_as_torch_does(cls: type[Optimizer]) -> None:
    """A scheduler can drive lr a little below 0; torch saves and loads that checkpoint."""
    twins = Twins(cls, {"lr": 0.01}, dtype=torch.float32)
    twins.step(3)
    saved = copy.deepcopy(twins.ref_opt.state_dict())
    saved["param_groups"][0]["lr"] = -2.35e-5  # refused by __init__, not by a load
    twins.opt.load_state_dict(copy.deepcopy(saved))
    twins.ref_opt.load_state_dict(saved)
    assert twins.opt.param_groups[0]["lr"] == -2.35e-5
    twins.step(3)
    for p, t in zip(twins.ours, twins.ref, strict=True):
        assert torch.equal(p.data, t.detach())


def _momentum_state_dict(*shapes: tuple[int, ...]) -> dict[str, Any]:
    params = [Parameter(torch.ones(shape)) for shape in shapes]
    opt = SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.ones(p.shape)
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize(
    ("saved", "match"),
    [
        ({"state": {}}, r"SGD.load_state_dict: expected keys 'state' and 'param_groups'"),
        (
            {"state": {}, "param_groups": [{"params": [0]}, {"params": [1]}]},
            r"SGD.load_state_dict: expected 1 parameter groups, got 2",
        ),
        (
            _momentum_state_dict((3, 4)),
            r"SGD.load_state_dict: expected 2 parameters in group 0, got 1",
        ),
        (
            _momentum_state_dict((3, 4), (2, 2)),
            r"SGD.load_state_dict: expected state 'momentum_buffer' of parameter 1 to have "
            r"shape \(5,\), got \(2, 2\)",
        ),
        (
            {**_momentum_state_dict((3, 4), (5,)), "state": {7: {}}},
            r"SGD.load_state_dict: state entry 7 belongs to no parameter",
        ),
    ],
)
def test_load_state_dict_errors(saved: dict[str, Any], match: str) -> None:
    params = [Parameter(torch.zeros(3, 4)), Parameter(torch.zeros(5))]
    opt = SGD(params, lr=0.5)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.5 and not opt.state  # nothing changed


# ------------------------------------------------------------------ zero_grad
@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none: bool) -> None:
    with_grad, without = Parameter(torch.ones(2, 3)), Parameter(torch.ones(4))
    grad = torch.ones(2, 3)
    with_grad.grad = grad
    SGD([with_grad, without]).zero_grad(set_to_none=set_to_none)
    assert without.grad is None
    if set_to_none:
        assert with_grad.grad is None
    else:
        assert with_grad.grad is grad and torch.equal(grad, torch.zeros(2, 3))


def test_zero_grad_defaults_to_none() -> None:
    p = Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    Adam([p]).zero_grad()
    assert p.grad is None


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (SGD, {"lr": -0.1}, r"SGD: expected lr >= 0, got -0.1"),
        (SGD, {"lr": float("nan")}, r"SGD: expected lr >= 0, got nan"),
        (SGD, {"momentum": -0.5}, r"SGD: expected momentum >= 0, got -0.5"),
        (SGD, {"weight_decay": -1e-3}, r"SGD: expected weight_decay >= 0, got -0.001"),
        (
            SGD,
            {"nesterov": True},
            r"SGD: nesterov=True expects momentum > 0 and dampening == 0, "
            r"got momentum=0, dampening=0",
        ),
        (
            SGD,
            {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
            r"got momentum=0.9, dampening=0.1",
        ),
        (Adam, {"lr": -1.0}, r"Adam: expected lr >= 0, got -1.0"),
        (Adam, {"eps": -1e-8}, r"Adam: expected eps >= 0, got -1e-08"),
        (Adam, {"weight_decay": -0.1}, r"Adam: expected weight_decay >= 0, got -0.1"),
        (Adam, {"betas": (1.0, 0.999)}, r"Adam: expected betas\[0\] in \[0, 1\), got 1.0"),
        (Adam, {"betas": (0.9, -0.1)}, r"Adam: expected betas\[1\] in \[0, 1\), got -0.1"),
        (Adam, {"betas": (0.9,)}, r"Adam: expected betas to be a pair, got \(0.9,\)"),
        (AdamW, {"weight_decay": -0.1}, r"AdamW: expected weight_decay >= 0, got -0.1"),
        (AdamW, {"betas": (0.9, 1.0)}, r"AdamW: expected betas\[1\] in \[0, 1\), got 1.0"),
        (RMSprop, {"lr": -0.01}, r"RMSprop: expected lr >= 0, got -0.01"),
        (RMSprop, {"alpha": -0.1}, r"RMSprop: expected alpha >= 0, got -0.1"),
        (RMSprop, {"eps": -1.0}, r"RMSprop: expected eps >= 0, got -1.0"),
        (RMSprop, {"momentum": -0.9}, r"RMSprop: expected momentum >= 0, got -0.9"),
        (RMSprop, {"weight_decay": -2}, r"RMSprop: expected weight_decay >= 0, got -2"),
        (Adagrad, {"lr": -0.01}, r"Adagrad: expected lr >= 0, got -0.01"),
        (Adagrad, {"lr_decay": -1}, r"Adagrad: expected lr_decay >= 0, got -1"),
        (Adagrad, {"weight_decay": -2}, r"Adagrad: expected weight_decay >= 0, got -2"),
        (
            Adagrad,
            {"initial_accumulator_value": -0.1},
            r"Adagrad: expected initial_accumulator_value >= 0, got -0.1",
        ),
        (Adagrad, {"eps": -1.0}, r"Adagrad: expected eps >= 0, got -1.0"),
        (NAdam, {"momentum_decay": -1}, r"NAdam: expected momentum_decay >= 0, got -1"),
        (NAdam, {"betas": (0.9, 1.0)}, r"NAdam: expected betas\[1\] in \[0, 1\), got 1.0"),
        (RAdam, {"eps": -1e-8}, r"RAdam: expected eps >= 0, got -1e-08"),
        (RAdam, {"betas": (-0.1, 0.9)}, r"RAdam: expected betas\[0\] in \[0, 1\), got -0.1"),
        (Adamax, {"lr": -0.1}, r"Adamax: expected lr >= 0, got -0.1"),
        (Adamax, {"betas": (0.9, 1.0)}, r"Adamax: expected betas\[1\] in \[0, 1\), got 1.0"),
        (Adadelta, {"rho": 1.5}, r"Adadelta: expected rho in \[0, 1\], got 1.5"),
        (Adadelta, {"eps": -1e-6}, r"Adadelta: expected eps >= 0, got -1e-06"),
        (Adadelta, {"weight_decay": -1}, r"Adadelta: expected weight_decay >= 0, got -1"),
    ],
)
def test_invalid_options_raise(cls: type[Optimizer], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls([Parameter(torch.ones(2))], **kwargs)
    with pytest.raises(ValueError, match=match):  # in a param group too
        cls([{"params": [Parameter(torch.ones(2))], **kwargs}])


def test_option_of_wrong_type_raises() -> None:
    with pytest.raises(TypeError, match=r"SGD: expected lr to be a number, got str"):
        SGD([Parameter(torch.ones(2))], lr="0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", list(TWINS))
def test_empty_parameter_list_raises(cls: type[Optimizer]) -> None:
    with pytest.raises(ValueError, match=rf"{cls.__name__}: got an empty parameter list"):
        cls([])


def test_duplicate_parameters_raise() -> None:
    p, q = Parameter(torch.ones(2)), Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"SGD: a parameter group holds the same parameter twice"):
        SGD([p, q, p])
    with pytest.raises(ValueError, match=r"Adam: a parameter appears in more than one group"):
        Adam([{"params": [p]}, {"params": [q, p]}])
    opt = SGD([p])
    with pytest.raises(ValueError, match=r"SGD: a parameter appears in more than one group"):
        opt.add_param_group({"params": [p]})


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ([torch.ones(2)], r"SGD: expected nograd.nn.Parameter objects, got Tensor"),
        (Parameter(torch.ones(2)), r"SGD: expected an iterable .* got a single Parameter"),
        ({Parameter(torch.ones(2))}, r"SGD: expected parameters in an ordered collection"),
    ],
)
def test_params_of_wrong_type_raise(params: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        SGD(params)


def test_add_param_group_fills_defaults_and_trains_the_new_group() -> None:
    first, second = Parameter(torch.ones(2)), Parameter(torch.ones(3))
    opt = SGD([first], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": second, "lr": 0.5})
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.5
    second.grad = torch.ones(3)
    opt.step()
    assert torch.equal(second.data, torch.full((3,), 0.5))


def step_both(
    opt: Optimizer,
    ref_opt: torch.optim.Optimizer,
    ours: list[Parameter],
    ref: list[Tensor],
    gen: torch.Generator,
) -> None:
    """One step of our optimizer and of torch's twin, each parameter given the same random
    gradient as its twin."""
    for p, t in zip(ours, ref, strict=True):
        g = torch.randn(p.shape, generator=gen)
        p.grad, t.grad = g.clone(), g.clone()
    opt.step()
    ref_opt.step()


@pytest.mark.parametrize("cls", list(TWINS))
def test_param_groups_are_the_callers_dicts_as_in_torch(cls: type[Optimizer]) -> None:
    """torch.optim keeps the dict it was given: an edit through it changes the optimizer."""
    if not torch_makes_state_at_first_step(cls.__name__):
        pytest.skip("this torch's Adagrad makes no state for a group added later")
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(shape, generator=gen) for shape in SHAPES]
    ours = [Parameter(v.clone()) for v in values]
    ref = [v.clone().requires_grad_() for v in values]
    group, ref_group = {"params": ours[:1], "lr": 0.1}, {"params": ref[:1], "lr": 0.1}
    opt, ref_opt = cls([group], lr=0.05), TWINS[cls]([ref_group], lr=0.05)
    added, ref_added = {"params": iter(ours[1:])}, {"params": iter(ref[1:])}
    opt.add_param_group(added)
    ref_opt.add_param_group(ref_added)
    assert opt.param_groups[0] is group and opt.param_groups[1] is added
    assert isinstance(added["params"], list) and added["params"] == ours[1:]
    options = added.keys() - {"params"}
    assert options == opt.defaults.keys()  # filled with the defaults, as torch fills it
    assert all(added[key] == ref_added[key] for key in options)
    for step in range(6):
        if step == 3:  # freeze the first group through the caller's dict
            group["lr"], ref_group["lr"] = 0.0, 0.0
        step_both(opt, ref_opt, ours, ref, gen)
    for p, t in zip(ours, ref, strict=True):
        assert torch.equal(p.data, t.detach())


@pytest.mark.parametrize("cls", list(TWINS))
def test_repr_is_torchs(cls: type[Optimizer]) -> None:
    ours = [Parameter(torch.ones(2)), Parameter(torch.ones(3))]
    ref = [torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)]
    opt = cls([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.5}])
    ref_opt = TWINS[cls]([{"params": ref[:1]}, {"params": ref[1:], "lr": 0.5}])
    assert repr(opt) == repr(ref_opt)
    assert repr(opt).startswith(f"{cls.__name__} (\nParameter Group 0\n")


@pytest.mark.parametrize("cls", list(TWINS))
def test_named_parameters_keep_their_names_as_in_torch(cls: type[Optimizer]) -> None:
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(shape, generator=gen) for shape in SHAPES]
    names = ["layer.weight", "layer.bias", "head.weight"]
    ours = [Parameter(v.clone()) for v in values]
    ref = [v.clone().requires_grad_() for v in values]
    if not torch_makes_state_at_first_step(cls.__name__):
        pytest.skip("this torch's Adagrad makes no state for a group added later")
    opt = cls(list(zip(names[:2], ours[:2], strict=True)), lr=0.05)
    ref_opt = TWINS[cls](list(zip(names[:2], ref[:2], strict=True)), lr=0.05)
    opt.add_param_group({"params": [(names[2], ours[2])], "lr": 0.1})
    ref_opt.add_param_group({"params": [(names[2], ref[2])], "lr": 0.1})
    assert [group["params"] for group in opt.param_groups] == [ours[:2], ours[2:]]
    assert [group["param_names"] for group in opt.param_groups] == [names[:2], names[2:]]
    for _ in range(3):
        step_both(opt, ref_opt, ours, ref, gen)
    ours_saved, ref_saved = opt.state_dict(), ref_opt.state_dict()
    assert ours_saved["param_groups"] == ref_saved["param_groups"]  # the names included
    opt.load_state_dict(ref_saved)
    ref_opt.load_state_dict(ours_saved)
    for group in ref_saved["param_groups"]:  # a checkpoint without names: the live ones stay
        del group["param_names"]
    opt.load_state_dict(ref_saved)
    assert [group["param_names"] for group in opt.param_groups] == [names[:2], names[2:]]
    for p, t in zip(ours, ref, strict=True):
        assert torch.equal(p.data, t.detach())


def test_names_for_some_parameters_or_groups_only_are_refused_as_in_torch() -> None:
    a, b = Parameter(torch.ones(2)), Parameter(torch.ones(2))
    ta, tb = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="a name for every parameter of a group or for none"):
        SGD([("a", a), b], lr=0.1)
    with pytest.raises(ValueError):
        torch.optim.SGD([("a", ta), tb], lr=0.1)
    opt, ref_opt = SGD([("a", a)], lr=0.1), torch.optim.SGD([("a", ta)], lr=0.1)
    group = {"params": [b]}
    with pytest.raises(
        ValueError, match="in every param group or in none, got a group without names"
    ):
        opt.add_param_group(group)
    with pytest.raises(ValueError):
        ref_opt.add_param_group({"params": [tb]})
    assert group == {"params": [b]} and len(opt.param_groups) == 1


def test_a_refused_param_group_is_left_as_it_came() -> None:
    opt = SGD([Parameter(torch.ones(2))], lr=0.1)
    group = {"params": [Parameter(torch.ones(3))], "lr": -1.0}
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group(group)
    assert group.keys() == {"params", "lr"} and len(opt.param_groups) == 1


def _grad_of(p: Parameter) -> Tensor:
    assert p.grad is not None
    return p.grad


# ------------------------------------------------------- multi-tensor steps, counters
def _race(
    cls: type[Optimizer],
    kwargs: dict[str, Any],
    values: list[Tensor],
    steps: int,
    skip: Callable[[int, int], bool] = lambda step, i: False,
) -> tuple[list[Parameter], list[Tensor], Optimizer]:
    """Ours and torch's from the same values and gradients; ``skip(step, i)``: no grad."""
    ours = [Parameter(v.clone()) for v in values]
    ref = [v.clone().requires_grad_() for v in values]
    opt, ref_opt = cls(ours, **kwargs), TWINS[cls](ref, **kwargs)
    gen = torch.Generator().manual_seed(3)
    for step in range(steps):
        for i, (p, t) in enumerate(zip(ours, ref, strict=True)):
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            p.grad, t.grad = (None, None) if skip(step, i) else (g.clone(), g.clone())
        opt.step()
        ref_opt.step()
    return ours, ref, opt


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_parameter_whose_first_gradient_comes_late_matches_torch(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    values = [torch.randn(shape, dtype=torch.float64) for shape in SHAPES]
    # parameter 1 starts (momentum buffer = g, t = 1) while the others are at step 4
    ours, ref, _ = _race(cls, kwargs, values, 20, skip=lambda step, i: i == 1 and step < 4)
    for p, t in zip(ours, ref, strict=True):
        assert_close(p.data, t.detach())
    assert not torch.equal(ours[1].data, values[1])


@pytest.mark.parametrize("cls", list(TWINS))
def test_group_without_any_gradient_is_left_alone(cls: type[Optimizer]) -> None:
    trained, idle = Parameter(torch.ones(3)), Parameter(torch.ones(2, 2))
    opt = cls([{"params": [trained]}, {"params": [idle]}], lr=0.1)
    trained.grad = torch.ones(3)
    opt.step()
    assert not torch.equal(trained.data, torch.ones(3))
    assert torch.equal(idle.data, torch.ones(2, 2))
    assert_untouched_state_as_torchs(cls, opt, idle, 1)


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_float32_and_float64_in_one_group_match_torch(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    dtypes = [torch.float32, torch.float64, torch.float32]
    values = [torch.randn(s, dtype=d) for s, d in zip(SHAPES, dtypes, strict=True)]
    ours, ref, _ = _race(cls, kwargs, values, 30)
    for p, t in zip(ours, ref, strict=True):
        assert p.dtype == t.dtype
        assert_close(p.data, t.detach())  # float64 to 1e-10: no constant rounded to float32


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_bfloat16_steps_match_torch_bit_for_bit(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    values = [torch.randn(shape).to(torch.bfloat16) for shape in SHAPES]
    ours, ref, _ = _race(cls, kwargs, values, 20, skip=lambda step, i: i == 2 and step % 3 == 1)
    for p, t in zip(ours, ref, strict=True):  # any other rounding of a constant shows here
        torch.testing.assert_close(p.data, t.detach(), rtol=0, atol=0)


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_half_precision_beside_other_dtypes_matches_torch_bit_for_bit(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    # a group that is never flattened: float16 and bfloat16 among float32 and float64,
    # 0-dim tensors too. torch's _foreach_* CPU ops would round each factor to a half
    # tensor's type first (foreach.one_by_one), and a 0-dim float32 factor would make a
    # 0-dim half tensor's line compute in float32
    dtypes = [torch.bfloat16, torch.float32, torch.float16, torch.bfloat16, torch.float64]
    shapes = [(3, 4), (), (), (5,), (2,)]
    values = [torch.randn(s).to(d) for s, d in zip(shapes, dtypes, strict=True)]
    ours, ref, _ = _race(cls, kwargs, values, 20, skip=lambda step, i: i == 3 and step % 3 == 1)
    for p, t in zip(ours, ref, strict=True):
        torch.testing.assert_close(p.data, t.detach(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", [Adam, AdamW, RMSprop, Adagrad, NAdam, RAdam, Adamax, Adadelta])
def test_step_counter_is_a_number_written_as_torchs_tensor(
    cls: type[Optimizer], default_dtype: torch.dtype
) -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)  # torch's step is float64 then
    try:
        twins = Twins(cls, {"lr": 0.01})
        twins.step(5)  # parameter 1 skips steps 1 and 4: its count differs
        ours, ref = twins.opt.state_dict()["state"], twins.ref_opt.state_dict()["state"]
    finally:
        torch.set_default_dtype(previous)
    for index, entry in ours.items():
        step, ref_step = entry["step"], ref[index]["step"]
        assert step.dtype == ref_step.dtype == default_dtype
        assert step.shape == () and step.device.type == "cpu"
        assert torch.equal(step, ref_step)
    assert ours[0]["step"].item() == 5 and ours[1]["step"].item() == 3
    assert all(isinstance(state["step"], float) for state in twins.opt.state.values())


@pytest.mark.parametrize("cls", [Adam, RMSprop, Adagrad, NAdam, RAdam, Adamax, Adadelta])
def test_torch_step_counter_loads_and_counts_on(cls: type[Optimizer]) -> None:
    twins = Twins(cls, {"lr": 0.01})
    twins.step(3)
    twins.opt.load_state_dict(copy.deepcopy(twins.ref_opt.state_dict()))
    loaded = twins.opt.state_dict()["state"][0]["step"]
    assert loaded.dtype == torch.float32 and loaded.item() == 3  # shown as it came in
    twins.step(2)
    twins.assert_same_params()
    counted = twins.opt.state_dict()["state"][0]["step"]
    assert torch.equal(counted, twins.ref_opt.state_dict()["state"][0]["step"])
    assert counted.item() == 5 and counted.dtype == torch.float32


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (Adam, {}),
        (AdamW, {"amsgrad": True}),
        (RMSprop, {}),
        (RMSprop, {"centered": True}),
        (Adagrad, {}),
        (NAdam, {}),
        (Adamax, {}),
        (Adadelta, {}),
    ],
)
def test_the_denominator_reuses_its_memory_and_keeps_torchs_bits(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    """d = sqrt(v) is written into tensors made at the first step, not new ones each step."""
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(300, 300, generator=gen), torch.randn(300, generator=gen)]  # not flat
    ours = [Parameter(v.clone()) for v in values]
    ref = [v.clone().requires_grad_() for v in values]
    opt, ref_opt = cls(ours, **kwargs), TWINS[cls](ref, **kwargs)
    addresses = []
    for _ in range(3):
        step_both(opt, ref_opt, ours, ref, gen)
        scratch = [t for tensors in opt._scratch_space.values() for t in tensors]
        addresses.append([t.data_ptr() for t in scratch])
    scratches = 2 if cls is Adadelta else 1  # Adadelta's two square roots, d's for the rest
    assert len(addresses[0]) == 2 * scratches and addresses[0] == addresses[1] == addresses[2]
    assert all(torch.equal(p.data, t.detach()) for p, t in zip(ours, ref, strict=True))
    state = opt.state_dict()["state"]
    assert all(set(entry) == set(ref_opt.state_dict()["state"][0]) for entry in state.values())


def test_a_scratch_tensor_follows_a_change_of_shape() -> None:
    param = Parameter(torch.randn(300, 300))
    opt = Adam([param])
    param.grad = torch.randn(300, 300)
    opt.step()
    group = opt.param_groups[0]
    assert opt._scratch(group, "denom", [param.data])[0].shape == (300, 300)
    assert opt._scratch(group, "denom", [torch.zeros(2, 3)])[0].shape == (2, 3)  # made again
    assert opt._scratch(group, "denom", [torch.zeros(2, 3, device="meta")]) is None  # off the CPU


def test_adagrad_makes_torchs_state_when_built() -> None:
    """torch fills s when the optimizer is built, from the constructor's value for every
    parameter (a group's own initial_accumulator_value is kept and not used)."""
    ours = [Parameter(torch.randn(2, 3)), Parameter(torch.randn(3))]
    ref = [p.data.clone().requires_grad_() for p in ours]
    override = {"initial_accumulator_value": 0.7, "lr": 0.5}
    opt = Adagrad([{"params": ours[:1], **override}, {"params": ours[1:]}], 0.1, 0.0, 0.0, 0.25)
    ref_opt = torch.optim.Adagrad(
        [{"params": ref[:1], **override}, {"params": ref[1:]}], 0.1, 0.0, 0.0, 0.25
    )
    state, ref_state = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    assert state.keys() == ref_state.keys() == {0, 1}
    for index, entry in state.items():
        assert entry.keys() == ref_state[index].keys() == {"step", "sum"}
        assert all(torch.equal(entry[key], ref_state[index][key]) for key in entry)
        assert torch.all(entry["sum"] == 0.25)
    assert opt.param_groups[0]["initial_accumulator_value"] == 0.7


def test_adagrad_gives_a_later_group_its_state_at_its_first_step() -> None:
    first, later = Parameter(torch.ones(2)), Parameter(torch.ones(2))
    opt = Adagrad([first], lr=0.1, initial_accumulator_value=3.0)
    opt.add_param_group({"params": [later]})
    assert later not in opt.state  # as in torch, which then fails at the step
    first.grad, later.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert opt.state[later]["step"] == 1.0
    assert torch.equal(opt.state[later]["sum"], torch.full((2,), 4.0))  # 3 + 1 * 1
    assert torch.equal(later.data, first.data)  # the same history, the same step


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
def test_nadam_keeps_the_momentum_product_as_torchs_tensor_rounds_it(
    default_dtype: torch.dtype,
) -> None:
    """P = mu_1 ... mu_t lives in a 0-dim tensor in torch: rounded to float32 at each
    step (float64 under a float64 default); ours is a Python number rounded alike."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        twins = Twins(NAdam, {"lr": 0.01, "momentum_decay": 0.02})
        twins.step(60)
        ours, ref = twins.opt.state_dict()["state"], twins.ref_opt.state_dict()["state"]
    finally:
        torch.set_default_dtype(previous)
    for index, entry in ours.items():
        assert entry["mu_product"].dtype == ref[index]["mu_product"].dtype == default_dtype
        assert torch.equal(entry["mu_product"], ref[index]["mu_product"])
    twins.assert_same_params()


@pytest.mark.parametrize("cls", [*TWINS, LBFGS], ids=lambda cls: cls.__name__)
def test_constructors_take_torchs_arguments_in_torchs_order(cls: type[Optimizer]) -> None:
    """The same names, defaults and kinds (positional or keyword-only) as torch.optim's."""

    def parameters(of: Any) -> list[tuple[str, Any, Any]]:
        signature = inspect.signature(of.__init__)
        return [(p.name, p.default, p.kind) for p in signature.parameters.values()]

    assert parameters(cls) == parameters(getattr(torch.optim, cls.__name__))


IMPLEMENTATIONS = [
    {"foreach": True},
    {"foreach": False},
    {"capturable": True},
    {"foreach": False, "fused": False, "capturable": True},
]


@pytest.mark.parametrize("choice", IMPLEMENTATIONS, ids=str)
@pytest.mark.parametrize("cls", list(TWINS), ids=lambda cls: cls.__name__)
def test_torchs_implementation_options_are_kept_and_change_no_bit(
    cls: type[Optimizer], choice: dict[str, Any]
) -> None:
    """foreach and capturable choose an implementation in torch; nograd keeps the ones
    torch's optimizer takes in its groups and steps exactly as without them (fused=True
    runs torch's fused kernels: the tests below)."""
    accepted = inspect.signature(cls.__init__).parameters.keys()
    choice = {key: value for key, value in choice.items() if key in accepted}
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(shape, generator=gen) for shape in SHAPES]
    plain, chosen = ([Parameter(v.clone()) for v in values] for _ in range(2))
    plain_opt, chosen_opt = cls(plain, lr=0.05), cls(chosen, lr=0.05, **choice)
    for _ in range(6):
        for p, q in zip(plain, chosen, strict=True):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g, g.clone()
        plain_opt.step()
        chosen_opt.step()
    for p, q in zip(plain, chosen, strict=True):
        assert torch.equal(p.data, q.data)
    assert all(chosen_opt.param_groups[0][key] == value for key, value in choice.items())


@pytest.mark.parametrize("cls", list(TWINS), ids=lambda cls: cls.__name__)
def test_differentiable_is_refused_and_fused_with_foreach_as_in_torch(
    cls: type[Optimizer],
) -> None:
    """differentiable=True would let autograd go through the step: nograd has none."""
    params = [Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="differentiable=True"):
        cls(params, differentiable=True)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="differentiable=True"):
        cls([{"params": params, "differentiable": True}])
    if "fused" in inspect.signature(cls.__init__).parameters:
        with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True`"):
            TWINS[cls]([torch.zeros(2, requires_grad=True)], fused=True, foreach=True)
        with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True`"):
            cls(params, fused=True, foreach=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="foreach to be a bool or None"):
        cls(params, foreach="yes")  # type: ignore[call-arg, arg-type]


FUSED_CASES = [(cls, kwargs) for cls, kwargs in CASES if cls in (SGD, Adam, AdamW, Adagrad)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("cls", "kwargs"), FUSED_CASES, ids=[str(c) for c in FUSED_CASES])
def test_fused_groups_give_torchs_fused_bits(
    cls: type[Optimizer], kwargs: dict[str, Any], dtype: torch.dtype
) -> None:
    """fused=True runs torch's fused kernel: torch.optim's fused=True to the bit (which
    differs from the default update in the last place here and there), with two groups
    and a parameter whose gradient is missing now and then."""
    twins = Twins(cls, {**kwargs, "fused": True}, dtype=dtype, groups=True)
    twins.step(12)
    for p, t in zip(twins.ours, twins.ref, strict=True):
        assert torch.equal(p.data, t.detach())
    ours, ref = twins.opt.state_dict(), twins.ref_opt.state_dict()
    for index, entry in ref["state"].items():
        for key, value in entry.items():
            assert torch.equal(ours["state"][index][key].to(value.dtype), value.cpu()), key


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, Adagrad], ids=lambda cls: cls.__name__)
def test_a_fused_run_moves_to_torch_and_back_mid_training(cls: type[Optimizer]) -> None:
    """Our fused state_dict loads into torch's fused optimizer, and torch's into ours:
    each then goes on as the other would have, to the bit."""
    kwargs = {"lr": 0.05, "momentum": 0.9} if cls is SGD else {"lr": 0.05}
    straight = Twins(cls, {**kwargs, "fused": True}, dtype=torch.float32)
    straight.step(10)
    moved = Twins(cls, {**kwargs, "fused": True}, dtype=torch.float32)
    moved.step(5)
    ours, theirs = copy.deepcopy(moved.opt.state_dict()), copy.deepcopy(moved.ref_opt.state_dict())
    moved.ref_opt.load_state_dict(ours)  # torch goes on from our state, we from torch's
    moved.opt.load_state_dict(theirs)
    moved.step(5)
    for a, b, c in zip(straight.ours, moved.ours, moved.ref, strict=True):
        assert torch.equal(a.data, b.data) and torch.equal(a.data, c.detach())


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, Adagrad], ids=lambda cls: cls.__name__)
def test_fused_refuses_integer_parameters_as_torch(cls: type[Optimizer]) -> None:
    param = Parameter(torch.zeros(3, dtype=torch.int64))
    param.grad = torch.ones(3, dtype=torch.int64)
    ref = torch.zeros(3, dtype=torch.int64)
    ref.grad = torch.ones(3, dtype=torch.int64)
    opt = cls([param], lr=0.1, fused=True)  # type: ignore[call-arg]
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating"):
        opt.step()
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating"):
        TWINS[cls]([ref], lr=0.1, fused=True).step()


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, Adagrad], ids=lambda cls: cls.__name__)
def test_a_group_without_the_fused_key_steps_as_before(cls: type[Optimizer]) -> None:
    """An optimizer pickled before the groups held torch's implementation options."""
    params = [Parameter(torch.ones(3))]
    opt = cls(params, lr=0.1)
    for name in ("foreach", "fused", "capturable", "differentiable"):
        opt.param_groups[0].pop(name, None)
    params[0].grad = torch.ones(3)
    opt.step()
    assert not torch.equal(params[0].data, torch.ones(3))


def test_fused_sgd_gives_a_parameter_that_joins_late_its_first_step() -> None:
    """torch's fused SGD raises a TypeError when some parameters have a momentum buffer and
    others not yet; nograd steps the new ones as their first step (b = g), as the
    default update does: the late parameter moves as it would in an optimizer of its own."""
    gen = torch.Generator().manual_seed(0)
    early, late, alone = (Parameter(torch.randn(4, generator=gen)) for _ in range(3))
    alone.data = late.data.clone()
    both = SGD([early, late], lr=0.1, momentum=0.9, fused=True)
    own = SGD([alone], lr=0.1, momentum=0.9, fused=True)
    early.grad = torch.randn(4, generator=gen)
    both.step()  # late has no gradient yet
    for _ in range(3):
        g = torch.randn(4, generator=gen)
        early.grad, late.grad, alone.grad = torch.randn(4, generator=gen), g, g.clone()
        both.step()
        own.step()
    assert torch.equal(late.data, alone.data)

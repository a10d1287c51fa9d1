"""Optimizer hooks against torch.optim's: the same calls, arguments, order and results."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch

from nograd import data, nn, optim
from nograd.cuda_graph import GraphedTrainStep
from nograd.nn import Parameter
from nograd.train import fit

Log = list[tuple[Any, ...]]


def twins(make: str = "SGD", **options: Any) -> tuple[optim.Optimizer, torch.optim.Optimizer]:
    """A nograd optimizer and torch's over equal parameters with equal gradients."""
    torch.manual_seed(0)
    values = [torch.randn(3, 2), torch.randn(2)]
    grads = [torch.randn(3, 2), torch.randn(2)]
    ours = [Parameter(v.clone()) for v in values]
    theirs = [v.clone().requires_grad_() for v in values]
    for p, q, g in zip(ours, theirs, grads, strict=True):
        p.grad, q.grad = g.clone(), g.clone()
    options = options or {"lr": 0.1, "momentum": 0.9}
    return getattr(optim, make)(ours, **options), getattr(torch.optim, make)(theirs, **options)


def both(
    register: Callable[[Any, Log, str], Any],
) -> tuple[optim.Optimizer, torch.optim.Optimizer, Log, Log]:
    ours, theirs = twins()
    our_log: Log = []
    their_log: Log = []
    register(ours, our_log, "ours")
    register(theirs, their_log, "theirs")
    return ours, theirs, our_log, their_log


def describe_args(optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """What a step hook was given, in terms both libraries share."""
    return (len(args), args[0] is optimizer, [type(a).__name__ for a in args[1:]], kwargs)


def test_step_hooks_run_in_torchs_order_with_torchs_arguments() -> None:
    def register(opt: Any, log: Log, _: str) -> None:
        for name in ("pre A", "pre B"):

            def pre(o: Any, args: tuple[Any, ...], kwargs: Any, name: str = name) -> None:
                log.append((name, *describe_args(o, args, kwargs)))

            opt.register_step_pre_hook(pre)
        opt.register_step_post_hook(
            lambda o, args, kwargs: log.append(("post", *describe_args(o, args, kwargs)))
        )

    ours, theirs, our_log, their_log = both(register)
    for opt in (ours, theirs):
        opt.step()
        opt.step(None)
        opt.step(closure=None)
    assert our_log == their_log
    assert [entry[0] for entry in our_log[:3]] == ["pre A", "pre B", "post"]
    assert our_log[3][1:] == (2, True, ["NoneType"], {})  # args start with the optimizer


def test_step_hooks_see_the_update_between_them() -> None:
    seen: dict[str, list[torch.Tensor]] = {"ours": [], "theirs": []}

    def register(opt: Any, _: Log, side: str) -> None:
        first = opt.param_groups[0]["params"][0]
        opt.register_step_pre_hook(lambda o, a, k: seen[side].append(first.data.clone()))
        opt.register_step_post_hook(lambda o, a, k: seen[side].append(first.data.clone()))

    ours, theirs, _, _ = both(register)
    ours.step()
    theirs.step()
    for our, their in zip(seen["ours"], seen["theirs"], strict=True):
        assert torch.equal(our, their)
    assert not torch.equal(seen["ours"][0], seen["ours"][1])


def test_a_pre_hook_replaces_the_arguments() -> None:
    def closure() -> float:
        return 7.0

    def register(opt: Any, _: Log, __: str) -> None:
        opt.register_step_pre_hook(lambda o, args, kwargs: ((o,), {"closure": closure}))

    ours, theirs, _, _ = both(register)
    assert ours.step() == theirs.step() == 7.0


def test_a_pre_hook_that_returns_something_else_raises_runtime_error() -> None:
    for opt in twins():
        opt.register_step_pre_hook(lambda o, args, kwargs: 3)
        with pytest.raises(RuntimeError, match="must return None or a tuple of"):
            opt.step()


def test_removing_the_last_step_hook_restores_the_class_step() -> None:
    ours, _ = twins()
    calls: list[int] = []
    pre = ours.register_step_pre_hook(lambda o, a, k: calls.append(1))
    with ours.register_step_post_hook(lambda o, a, k: calls.append(2)):
        ours.step()
    assert calls == [1, 2] and "step" in ours.__dict__
    pre.remove()
    pre.remove()  # again: nothing happens
    ours.step()
    assert calls == [1, 2]
    assert "step" not in ours.__dict__  # no hooks: the class's step, called directly


@pytest.mark.parametrize("prepend", [False, True])
def test_state_dict_hooks_match_torchs(prepend: bool) -> None:
    def register(opt: Any, log: Log, _: str) -> None:
        opt.register_state_dict_pre_hook(lambda o: log.append(("pre 1", o is opt)))
        opt.register_state_dict_pre_hook(lambda o: log.append(("pre 2",)), prepend=prepend)

        def add_key(o: Any, state_dict: dict[str, Any]) -> None:
            log.append(("post 1", sorted(state_dict)))
            state_dict["note"] = "kept in place"

        def replace(o: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
            log.append(("post 2", sorted(state_dict)))
            return {**state_dict, "replaced": True}

        opt.register_state_dict_post_hook(add_key)
        opt.register_state_dict_post_hook(replace, prepend=prepend)

    ours, theirs, our_log, their_log = both(register)
    ours.step()
    theirs.step()
    our_dict, their_dict = ours.state_dict(), theirs.state_dict()
    assert our_log == their_log
    assert sorted(our_dict) == sorted(their_dict)
    assert our_dict["replaced"] and (our_dict.get("note") == their_dict.get("note"))


def test_load_state_dict_hooks_match_torchs() -> None:
    saved_ours, saved_theirs = twins()
    saved_ours.step()
    saved_theirs.step()

    def register(opt: Any, log: Log, _: str) -> None:
        def pre(o: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
            log.append(("pre", sorted(state_dict)))
            state_dict["scribbled"] = True  # on a shallow copy: the caller's dict is untouched
            groups = [{**g, "lr": 0.5} for g in state_dict["param_groups"]]
            return {"state": state_dict["state"], "param_groups": groups}

        opt.register_load_state_dict_pre_hook(pre)
        opt.register_load_state_dict_post_hook(
            lambda o: log.append(("post", o.param_groups[0]["lr"]))
        )

    ours, theirs, our_log, their_log = both(register)
    ours_dict, theirs_dict = saved_ours.state_dict(), saved_theirs.state_dict()
    ours.load_state_dict(ours_dict)
    theirs.load_state_dict(theirs_dict)
    assert our_log == their_log == [("pre", ["param_groups", "state"]), ("post", 0.5)]
    assert "scribbled" not in ours_dict and "scribbled" not in theirs_dict
    ours.step()
    theirs.step()
    for p, q in zip(ours.param_groups[0]["params"], theirs.param_groups[0]["params"], strict=True):
        assert torch.equal(p.data, q.detach())


def save_and_load(optimizer: Any) -> Any:
    """The whole optimizer through ``torch.save`` and ``torch.load`` (a pickle)."""
    buffer = io.BytesIO()
    torch.save(optimizer, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


DUPLICATES = [copy.copy, copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o)), save_and_load]
DUPLICATE_IDS = ["copy", "deepcopy", "pickle", "torch.save"]


@pytest.mark.parametrize("duplicate", DUPLICATES, ids=DUPLICATE_IDS)
@pytest.mark.parametrize("make", ["SGD", "Adam"])
def test_a_copy_has_no_hooks_and_steps_on_as_torchs_copy(make: str, duplicate: Callable) -> None:
    """torch's ``Optimizer.__getstate__`` keeps defaults, state and param_groups only: a
    copy, deep copy or unpickled optimizer has no hooks (so closures, which pickle
    cannot hold, are no obstacle), and goes on from the original's state. Copied after
    a step, when nograd holds its flat buffers (which deepcopy could not copy)."""
    ours, theirs = twins(make, lr=0.1)
    calls: list[str] = []
    for opt in (ours, theirs):
        opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
        opt.register_state_dict_pre_hook(lambda o: calls.append("state_dict"))
        opt.step()
        opt.step()
    calls.clear()
    our_copy, their_copy = duplicate(ours), duplicate(theirs)
    our_params, their_params = (opt.param_groups[0]["params"] for opt in (our_copy, their_copy))
    for p, q in zip(our_params, their_params, strict=True):
        p.grad = q.grad = torch.ones_like(q)  # (torch's pickle drops a tensor's grad)
    for opt in (our_copy, their_copy):
        opt.state_dict()
        opt.step()
    assert calls == []
    assert "step" not in our_copy.__dict__  # the class's step, run directly
    for p, q in zip(our_params, their_params, strict=True):
        assert torch.equal(p.data, q.detach())
    ours.step()
    assert calls == ["pre"]  # the original keeps its hooks
    our_copy.register_step_pre_hook(lambda o, a, k: calls.append("copy's"))
    ours.step()
    assert calls == ["pre", "pre"]  # and a copy's hook is the copy's alone


def test_a_post_hook_registered_during_the_step_runs_in_it_as_in_torch() -> None:
    """torch reads the post-hooks after the step: one that a pre-hook registers runs
    the same step, one that a pre-hook removes does not."""

    def register(opt: Any, log: Log, _: str) -> None:
        handles: list[Any] = []

        def pre(o: Any, args: Any, kwargs: Any) -> None:
            log.append(("pre",))
            if len(log) == 1:
                handles.append(o.register_step_post_hook(lambda *a: log.append(("new post",))))
            elif handles:
                handles.pop().remove()

        opt.register_step_pre_hook(pre)

    ours, theirs, our_log, their_log = both(register)
    for opt in (ours, theirs):
        for _ in range(3):
            opt.step()
    assert our_log == their_log == [("pre",), ("new post",), ("pre",), ("pre",)]


def test_removing_the_last_hook_keeps_a_step_the_user_set() -> None:
    """A wrapper the user puts on ``optimizer.step`` stays when the hooks go."""
    ours, _ = twins()
    calls: list[str] = []
    handle = ours.register_step_post_hook(lambda o, a, k: calls.append("hook"))
    hooked = ours.step

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append("wrapper")
        return hooked(*args, **kwargs)

    ours.step = wrapper  # type: ignore[method-assign]
    ours.step()
    handle.remove()
    ours.step()
    assert calls == ["wrapper", "hook", "wrapper"]


def test_a_hook_must_be_callable() -> None:
    ours, _ = twins()
    with pytest.raises(TypeError, match="SGD: expected a callable hook, got int"):
        ours.register_step_pre_hook(3)  # type: ignore[arg-type]


def test_fit_calls_the_step_hooks_once_a_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    steps: list[int] = []
    optimizer.register_step_post_hook(lambda o, a, k: steps.append(1))
    train = data.disk(64, generator=torch.Generator().manual_seed(1))
    fit(model, nn.CrossEntropyLoss(), optimizer, train, epochs=2, batch_size=16, progress=False)
    assert len(steps) == 2 * 4


def test_a_cuda_graph_refuses_an_optimizer_with_step_hooks() -> None:
    model = nn.Sequential(nn.Linear(2, 3))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    optimizer.register_step_pre_hook(lambda o, a, k: None)
    x, y = torch.randn(4, 2), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match="SGD optimizer has step hooks"):
        GraphedTrainStep(model, nn.CrossEntropyLoss(), optimizer, x, y)


def test_global_step_hooks_run_around_every_optimizers_own_as_in_torch() -> None:
    """torch.optim.optimizer's global hooks: a global pre-hook before the optimizer's
    own, a global post-hook after them, for optimizers made before and after it."""
    import torch.optim.optimizer as torch_optimizer

    from nograd.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    logs: dict[str, Log] = {"ours": [], "theirs": []}
    ours, theirs = twins()
    libraries = {
        "ours": (register_optimizer_step_pre_hook, register_optimizer_step_post_hook),
        "theirs": (
            torch_optimizer.register_optimizer_step_pre_hook,
            torch_optimizer.register_optimizer_step_post_hook,
        ),
    }
    handles = []
    for side, opt in (("ours", ours), ("theirs", theirs)):
        log = logs[side]
        pre, post = libraries[side]
        opt.register_step_pre_hook(lambda o, a, k, log=log: log.append(("own pre", len(a))))
        opt.register_step_post_hook(lambda o, a, k, log=log: log.append(("own post", len(a))))
        handles.append(pre(lambda o, a, k, log=log: log.append(("global pre", len(a)))))
        handles.append(post(lambda o, a, k, log=log: log.append(("global post", len(a)))))
    try:
        ours.step()
        theirs.step()
        later_ours, later_theirs = twins()  # made while the global hooks last
        later_ours.step()
        later_theirs.step()
    finally:
        for handle in handles:
            handle.remove()
    assert logs["ours"] == logs["theirs"]
    assert [name for name, _ in logs["ours"][:4]] == [
        "global pre",
        "own pre",
        "own post",
        "global post",
    ]
    assert len(logs["ours"]) == 6  # the later optimizers ran the global hooks only
    assert "step" not in later_ours.__dict__  # no hook left: the class's step again
    ours.step()
    assert len(logs["ours"]) == 8  # its own hooks stay

"""Module hooks against torch.nn's: the same calls, in the same order, with the same values.

Each test registers the same hooks on a nograd model and on its torch.nn twin (same
weights), runs a forward and a backward in both, and compares what the hooks saw and
what they changed: activations, gradients, and the parameter gradients that follow.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

from nograd import nn
from nograd.nn import hooks

Twin = tuple[nn.Sequential, torch.nn.Sequential]


def twins() -> Twin:
    """A small chain with every kind of step: fused Linear + ReLU pairs, Tanh, Sigmoid."""
    torch.manual_seed(0)
    ours = nn.Sequential(
        nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 4), nn.ReLU(),
        nn.Linear(4, 2), nn.Sigmoid(),
    )  # fmt: skip
    theirs = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4), torch.nn.Tanh(),
        torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2), torch.nn.Sigmoid(),
    )  # fmt: skip
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def run(ours: nn.Sequential, theirs: torch.nn.Sequential) -> tuple[Any, Any]:
    """One forward and backward of 0.5 * sum(y^2) in each; their outputs."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    y = ours(x)
    ours.backward(y.clone())  # dL/dy = y
    with torch.enable_grad():
        y_torch = theirs(x)
        (0.5 * (y_torch**2).sum()).backward()
    return y, y_torch.detach()


def param_grads(model: nn.Sequential) -> list[torch.Tensor]:
    return [p.grad for p in model.parameters()]  # type: ignore[misc]


def assert_same_grads(ours: nn.Sequential, theirs: torch.nn.Sequential) -> None:
    for a, b in zip(param_grads(ours), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b.grad, rtol=1e-6, atol=1e-7)


def plain(value: Any) -> Any:
    """Tensors detached and cloned, tuples kept: what a hook saw, to compare later."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(plain(part) for part in value)
    return value


def assert_same_records(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        if isinstance(a, tuple):
            assert isinstance(b, tuple) and len(a) == len(b)
            assert_same_records(list(a), list(b))
        elif isinstance(a, torch.Tensor):
            assert isinstance(b, torch.Tensor)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        else:
            assert a == b


def on_every_child(
    model: Any, register: str, make: Callable[[list[Any], int], Callable[..., Any]]
) -> list[Any]:
    """Register ``make(records, i)`` on child i with ``register``; the records list."""
    records: list[Any] = []
    for i, child in enumerate(model):
        getattr(child, register)(make(records, i))
    return records


# ------------------------------------------------------------------ forward hooks
def test_forward_hooks_see_torchs_inputs_and_outputs_in_torchs_order() -> None:
    ours, theirs = twins()

    def recorder(records: list[Any], i: int) -> Callable[..., None]:
        def hook(module: Any, args: tuple[Any, ...], output: Any) -> None:
            records.append((i, plain(args), plain(output)))

        return hook

    seen = [on_every_child(model, "register_forward_hook", recorder) for model in (ours, theirs)]
    pre = [on_every_child(model, "register_forward_pre_hook",
                          lambda records, i: lambda m, args: records.append((i, plain(args))))
           for model in (ours, theirs)]  # fmt: skip
    run(ours, theirs)
    assert [r[0] for r in seen[0]] == list(range(8)) == [r[0] for r in pre[0]]
    assert_same_records(seen[0], seen[1])
    assert_same_records(pre[0], pre[1])
    # a Linear followed by a ReLU runs apart while hooked: its hook sees x W^T + b
    assert (seen[0][0][2] < 0).any()


def test_hooks_that_change_values_need_their_derivative_as_a_backward_hook() -> None:
    """autograd differentiates what a torch hook computes; nograd's backward is the
    module's own, so a hook that changes a value brings its derivative along: here
    x -> 2x before model[2] (dL/dx = 2 dL/d(2x)) and a flip of the rows before
    model[6] (flip dL/d(input) back). The forward output of y - 0.25 needs nothing."""
    ours, theirs = twins()
    for model in (ours, theirs):
        model[2].register_forward_pre_hook(lambda m, args: args[0] * 2)  # a value: wrapped
        model[4].register_forward_hook(lambda m, args, output: output - 0.25)
        model[6].register_forward_pre_hook(lambda m, args: (args[0].flip(0),))
    ours[2].register_full_backward_hook(lambda m, gi, go: (gi[0] * 2,))
    ours[6].register_full_backward_hook(lambda m, gi, go: (gi[0].flip(0),))
    with pytest.warns(UserWarning, match="its derivative is not in backward") as caught:
        y, y_torch = run(ours, theirs)
    assert len(caught) == 3  # once for each hook that changed a value
    torch.testing.assert_close(y, y_torch)
    assert_same_grads(ours, theirs)


def test_a_hook_on_the_whole_model_and_one_on_a_child() -> None:
    ours, theirs = twins()
    calls: list[list[str]] = [[], []]
    for model, record in zip((ours, theirs), calls, strict=True):
        model.register_forward_hook(lambda m, a, o, record=record: record.append("model"))
        model[0].register_forward_hook(lambda m, a, o, record=record: record.append("first"))
    run(ours, theirs)
    assert calls[0] == calls[1] == ["first", "model"]


def test_forward_hooks_with_kwargs_prepend_and_always_call_are_torchs() -> None:
    """prepend runs first; with_kwargs passes the keyword arguments (none here, nor in
    torch's call below); always_call runs when forward raised, with output None."""

    def hooked_run(lib: Any) -> tuple[list[Any], torch.Tensor]:
        torch.manual_seed(0)
        layer = lib.Linear(3, 2)
        order: list[Any] = []
        layer.register_forward_hook(lambda m, a, o: order.append("plain"))
        layer.register_forward_hook(lambda m, a, o: order.append("first"), prepend=True)
        layer.register_forward_hook(
            lambda m, a, k, o: order.append(("kwargs", k)), with_kwargs=True, always_call=True
        )
        layer.register_forward_pre_hook(
            lambda m, a, k: ((a[0] + 1,), k), with_kwargs=True
        )  # returns (args, kwargs)
        output = layer(torch.ones(4, 3))
        with pytest.raises((RuntimeError, ValueError)):  # nograd's says which width it takes
            layer(torch.ones(4, 7))  # the wrong width: forward raises
        return order, output.detach()

    with pytest.warns(UserWarning, match="changed a value"):  # x + 1: its derivative is 1
        results = [hooked_run(nn)]
    results.append(hooked_run(torch.nn))
    assert results[0][0] == results[1][0] == [
        "first", "plain", ("kwargs", {}), ("kwargs", {}),
    ]  # fmt: skip
    torch.testing.assert_close(results[0][1], results[1][1])


def test_an_always_called_hook_that_raises_too_is_a_warning() -> None:
    layer = nn.Linear(3, 2)

    def broken(module: Any, args: Any, output: Any) -> None:
        raise KeyError("in the hook")

    layer.register_forward_hook(broken, always_call=True)
    warning = pytest.warns(UserWarning, match="always_call=True raised KeyError")
    with warning, pytest.raises(ValueError, match="expected input of shape"):  # forward's own
        layer(torch.ones(4, 7))


def test_an_inner_forward_call_runs_the_hooks_once() -> None:
    """Linear flattens an input of three dimensions and calls its forward again."""
    ours, seen = nn.Linear(3, 2), []
    ours.register_forward_hook(lambda m, a, o: seen.append(tuple(o.shape)))
    ours(torch.ones(2, 5, 3))
    assert seen == [(2, 5, 2)]


def test_a_module_used_twice_calls_its_hooks_at_each_use() -> None:
    calls = []
    for lib in (nn, torch.nn):
        torch.manual_seed(0)
        act = lib.Tanh()
        model = lib.Sequential(lib.Linear(2, 2), act, lib.Linear(2, 2), act)
        seen: list[Any] = []
        act.register_forward_hook(lambda m, a, o, seen=seen: seen.append(plain(o)))
        act.register_full_backward_hook(lambda m, gi, go, seen=seen: seen.append(plain(go)))
        x = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
        if lib is nn:
            model.backward(model(x))
        else:
            with torch.enable_grad():
                (0.5 * (model(x) ** 2).sum()).backward()
        calls.append(seen)
    assert_same_records(calls[0], calls[1])
    assert len(calls[0]) == 4


# ------------------------------------------------------------------ backward hooks
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # torch's, for layer 0
def test_backward_hooks_see_torchs_gradients() -> None:
    """grad_output is (dL/dy,), grad_input (dL/dx,): (None,) for the first layer, whose
    input gradient nobody needs (in torch, x does not require grad)."""
    ours, theirs = twins()
    ours.needs_input_grad = False

    def recorder(records: list[Any], i: int) -> Callable[..., None]:
        def hook(module: Any, grad_input: Any, grad_output: Any) -> None:
            records.append((i, plain(grad_input), plain(grad_output)))

        return hook

    seen = [on_every_child(m, "register_full_backward_hook", recorder) for m in (ours, theirs)]
    pre = [on_every_child(m, "register_full_backward_pre_hook",
                          lambda records, i: lambda mod, go: records.append((i, plain(go))))
           for m in (ours, theirs)]  # fmt: skip
    run(ours, theirs)
    assert [r[0] for r in seen[0]] == list(range(7, -1, -1)) == [r[0] for r in pre[0]]
    assert seen[0][-1][1] == (None,)
    assert_same_records(seen[0], seen[1])
    assert_same_records(pre[0], pre[1])


def test_backward_hooks_that_change_gradients_change_them_as_torchs() -> None:
    ours, theirs = twins()
    for model in (ours, theirs):
        model[5].register_full_backward_hook(lambda m, gi, go: (gi[0] * 0.5,))
        model[3].register_full_backward_pre_hook(lambda m, go: (go[0] + 0.125,))
        model[2].register_full_backward_hook(lambda m, gi, go: (gi[0].clamp(-0.01, 0.01),))
    run(ours, theirs)
    assert_same_grads(ours, theirs)


def test_a_backward_hook_on_a_loss_sees_dl_dpred() -> None:
    loss_fn, seen = nn.CrossEntropyLoss(), []
    loss_fn.register_full_backward_hook(lambda m, gi, go: seen.append((gi, go)))
    pred, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    loss_fn(pred, target)
    grad = loss_fn.backward()
    assert seen[0][1] == () and seen[0][0][0] is grad  # backward() was called without dL/dloss


# ------------------------------------------------------------------ handles and plans
def test_removing_hooks_restores_the_plain_module_and_the_fused_pair() -> None:
    model, _ = twins()
    x = torch.randn(4, 3)
    expected = model(x).clone()
    assert isinstance(model._plan[0], tuple)  # type: ignore[index]
    version = hooks.version
    handle = model[0].register_forward_hook(lambda m, a, o: o * 0)
    other = model[0].register_full_backward_hook(lambda m, gi, go: None)
    with pytest.warns(UserWarning, match="changed a value"):  # o * 0
        y = model(x)
    assert hooks.version > version and torch.equal(y, torch.sigmoid(model[6](model[5](
        model[4](model[3](model[2](torch.zeros(4, 5))))))))  # fmt: skip
    assert model._plan[0] is model[0]  # type: ignore[index]
    handle.remove()
    handle.remove()  # again: nothing
    assert "forward" not in model[0].__dict__ and "backward" in model[0].__dict__
    with other:
        pass  # a handle is a context manager: removed at the end of the block
    assert "backward" not in model[0].__dict__
    assert torch.equal(model(x), expected)
    assert isinstance(model._plan[0], tuple)  # type: ignore[index]


def test_hooks_are_copied_with_their_module() -> None:
    model, seen = nn.Sequential(nn.Linear(2, 2), nn.ReLU()), []
    model[0].register_forward_hook(lambda m, a, o: seen.append(m))
    twin = copy.deepcopy(model)
    twin(torch.ones(1, 2))
    model(torch.ones(1, 2))
    assert seen == [twin[0], model[0]]


def test_a_hook_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="expected a callable hook, got int"):
        nn.ReLU().register_forward_hook(3)  # type: ignore[arg-type]


def test_a_model_without_hooks_runs_the_class_methods() -> None:
    """No hook, no wrapper: the hot path is the class's forward and backward."""
    model, _ = twins()
    assert not any(hooks.has_hooks(child) for child in model.modules())
    assert all("forward" not in child.__dict__ for child in model.modules())


def trained(hooked: bool) -> tuple[dict[str, torch.Tensor], int]:
    """Two epochs of fit on the disk task; with ``hooked``, a forward and a backward
    hook on every child. The parameters, and how many times the hooks ran."""
    from nograd.data import disk
    from nograd.optim import SGD
    from nograd.train import fit

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    calls: list[str] = []
    if hooked:
        for child in model:
            child.register_forward_hook(lambda m, a, o: calls.append("forward"))
            child.register_full_backward_hook(lambda m, gi, go: calls.append("backward"))
    data = disk(64, generator=torch.Generator().manual_seed(3))
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    fit(model, nn.CrossEntropyLoss(), optimizer, data, epochs=2, batch_size=16, progress=False)
    return model.state_dict(), len(calls)


def test_hooks_that_only_read_leave_training_as_it_was() -> None:
    """fit with hooks that only look (the Linear and ReLU then run apart) ends with the
    parameters of fit without hooks, to the bit."""
    plain, no_calls = trained(hooked=False)
    hooked, calls = trained(hooked=True)
    for key, value in plain.items():
        assert torch.equal(value, hooked[key]), key
    assert no_calls == 0 and calls > 0


def test_a_pickled_sequential_plans_again_and_runs_the_hooks_it_gets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plan is not pickled: hooks.version counts in one process only, so a plan
    from another process could look current and skip hooks registered here."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model(torch.ones(2, 3))
    loaded = pickle.loads(pickle.dumps(model))
    assert "_plan" not in loaded.__dict__ and "_hooks_version" not in loaded.__dict__
    seen: list[int] = []
    loaded[0].register_forward_hook(lambda m, a, o: seen.append(0))
    monkeypatch.setattr(hooks, "version", model._hooks_version)  # as if counted as far here
    loaded(torch.ones(2, 3))
    assert seen == [0]


def test_a_hook_that_hands_back_its_input_does_not_warn() -> None:
    layer = nn.Linear(3, 2)
    layer.register_forward_pre_hook(lambda m, args: args[0])  # the same tensor
    layer.register_forward_pre_hook(lambda m, args: (args[0],))
    layer.register_forward_pre_hook(lambda m, args, kwargs: ((args[0],), kwargs), with_kwargs=True)
    layer.register_forward_hook(lambda m, args, output: output)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.ones(4, 3))


def test_fit_calls_the_hooks_once_per_step_only() -> None:
    """fit checks the data with one sample through the model; the hooks do not see it."""
    _, calls = trained(hooked=True)
    assert calls == 2 * 5 * 8  # a forward and a backward hook on 5 children, 8 steps


def test_a_pre_hook_that_raises_still_runs_the_always_called_hooks() -> None:
    for lib in (nn, torch.nn):
        layer, seen = lib.Linear(3, 2), []
        layer.register_forward_pre_hook(lambda m, args: 1 / 0)
        layer.register_forward_hook(lambda m, a, o, seen=seen: seen.append(o), always_call=True)
        with pytest.raises(ZeroDivisionError):
            layer(torch.ones(1, 3))
        assert seen == [None]


def test_a_shallow_copy_runs_itself_with_the_shared_hooks() -> None:
    """copy.copy shares the hook dicts, as torch's does, and runs the copy."""
    for lib in (nn, torch.nn):
        dropout, seen = lib.Dropout(0.5), []
        dropout.register_forward_hook(lambda m, a, o, seen=seen: seen.append(m))
        twin = copy.copy(dropout)
        twin.eval()
        assert torch.equal(twin(torch.ones(8)), torch.ones(8))  # the copy's eval mode
        assert seen == [twin]


def test_per_layer_updates_keep_the_models_own_backward_hooks() -> None:
    from nograd.layer_updates import updates_per_layer_apply

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert updates_per_layer_apply(model)
    model[0].register_full_backward_hook(lambda m, gi, go: None)  # a child's: still run
    assert updates_per_layer_apply(model)
    model.register_full_backward_pre_hook(lambda m, go: None)  # the loop would skip it
    assert not updates_per_layer_apply(model)


def test_keyword_arguments_reach_a_hooked_forward_as_in_torch() -> None:
    class Scale(nn.Module):
        def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return x * scale

        def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
            return grad_output

    class TorchScale(torch.nn.Module):
        def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return x * scale

    seen: list[tuple[str, dict[str, float]]] = []
    outputs = []
    for module, name in ((Scale(), "ours"), (TorchScale(), "torch")):

        def pre(m: Any, args: tuple[Any, ...], kwargs: dict[str, float], who: str = name) -> Any:
            seen.append((who, dict(kwargs)))
            return args, {"scale": kwargs["scale"] * 2}

        module.register_forward_pre_hook(pre, with_kwargs=True)
        outputs.append(module(torch.ones(2), scale=3.0))
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], torch.full((2,), 6.0))
    assert seen == [("ours", {"scale": 3.0}), ("torch", {"scale": 3.0})]

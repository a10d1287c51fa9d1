"""The Module and Parameter contract, checked against torch.nn.Module where they overlap."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor

import nograd.nn
from nograd.nn import Linear, Module, Parameter, Sequential
from tests.oracle import assert_close, compare_module


def nested_pair() -> tuple[Sequential, torch.nn.Sequential]:
    """The same nested architecture in both frameworks (weights not yet shared)."""
    ours = Sequential(
        Linear(3, 4),
        Linear(4, 5, bias=False),
        Sequential(Linear(5, 2), Linear(2, 2), Sequential(Linear(2, 1))),
    )
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 4),
        torch.nn.Linear(4, 5, bias=False),
        torch.nn.Sequential(
            torch.nn.Linear(5, 2), torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 1))
        ),
    )
    return ours, ref


class TwoLayer(Module):
    """A user-written model: two named Linear children, not a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Linear(3, 5)
        self.head = Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.encoder.backward(self.head.backward(grad_output))


class TorchTwoLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(3, 5)
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.encoder(x))
        return out


class WithBuffers(Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = Linear(2, 2)
        self.register_buffer("running_mean", torch.zeros(2))
        self.register_buffer("num_batches", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("scratch", torch.ones(2), persistent=False)


class TorchWithBuffers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.register_buffer("running_mean", torch.zeros(2))
        self.register_buffer("num_batches", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("scratch", torch.ones(2), persistent=False)


# ------------------------------------------------------------------ state_dict
def test_state_dict_keys_and_layouts_match_torch_for_nested_sequentials() -> None:
    ours, ref = nested_pair()
    ours_state, ref_state = ours.state_dict(), ref.state_dict()
    assert list(ours_state) == list(ref_state)
    assert "0.weight" in ours_state and "2.1.bias" in ours_state and "2.2.0.weight" in ours_state
    for key, tensor in ours_state.items():
        assert tensor.shape == ref_state[key].shape, key
        assert tensor.dtype == ref_state[key].dtype, key


def test_state_dict_shares_storage_with_the_parameters() -> None:
    layer = Linear(2, 3)
    layer.state_dict()["weight"].fill_(7.0)
    assert torch.equal(layer.weight.data, torch.full((3, 2), 7.0))


def test_weights_move_both_ways_and_give_identical_outputs() -> None:
    ours, ref = nested_pair()
    x = torch.randn(6, 3)
    ref.load_state_dict(ours.state_dict())
    assert torch.equal(ours(x), ref(x))

    ours2, ref2 = nested_pair()
    ours2.load_state_dict(ref2.state_dict())
    assert torch.equal(ours2(x), ref2(x))
    for key, tensor in ours2.state_dict().items():
        assert torch.equal(tensor, ref2.state_dict()[key])


def test_load_state_dict_copies_values_not_references() -> None:
    source, target = Linear(2, 2), Linear(2, 2)
    target.load_state_dict(source.state_dict())
    source.weight.data.add_(1.0)
    assert not torch.equal(source.weight.data, target.weight.data)


def twins_with_batch_norm(device: str = "cpu") -> tuple[Sequential, torch.nn.Sequential]:
    ours = Sequential(Linear(3, 4, device=device), nograd.nn.BatchNorm1d(4, device=device))
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 4, device=device), torch.nn.BatchNorm1d(4, device=device)
    )
    return ours, ref


def float64_weights() -> dict[str, Tensor]:
    torch.manual_seed(0)
    _, source = twins_with_batch_norm()
    source.double()(torch.randn(5, 3, dtype=torch.float64))  # running statistics move
    return {key: value.detach() for key, value in source.state_dict().items()}


def test_load_state_dict_assign_takes_the_tensors_themselves_as_torch() -> None:
    """assign=True: no copy; each tensor keeps the state dict's memory and dtype."""
    for model in twins_with_batch_norm():
        state = float64_weights()
        model.load_state_dict(state, assign=True)
        for key, value in model.state_dict().items():
            assert value.data_ptr() == state[key].data_ptr(), key
            assert value.dtype == state[key].dtype, key
    ours, ref = twins_with_batch_norm()
    ours.load_state_dict(float64_weights(), assign=True)
    ref.load_state_dict(float64_weights(), assign=True)
    x = torch.randn(6, 3, dtype=torch.float64)
    ours.eval(), ref.eval()
    assert torch.equal(ours(x), ref(x).detach())


def test_load_state_dict_assign_fills_a_model_built_on_meta() -> None:
    ours, ref = twins_with_batch_norm("meta")
    ours.load_state_dict(float64_weights(), assign=True)
    ref.load_state_dict(float64_weights(), assign=True)
    assert {t.device.type for t in ours.state_dict().values()} == {"cpu"}
    x = torch.randn(6, 3, dtype=torch.float64)
    with torch.enable_grad():
        x_ref = x.clone().requires_grad_()
        y_ref = ref(x_ref)
        y_ref.sum().backward()
    y = ours(x)
    assert torch.equal(y, y_ref.detach())
    assert torch.equal(ours.backward(torch.ones_like(y)), x_ref.grad)


def test_load_state_dict_assign_keeps_our_parameters_for_the_optimizer() -> None:
    """torch's assign puts new Parameters in; ours keeps them, holding the new tensors,
    so an optimizer built before trains the loaded weights, and a tied weight stays tied.
    (Only the weight has a gradient: the group is not flattened, which would move the
    parameters into the optimizer's buffer, as after any load.)"""
    model = Sequential(Linear(2, 2), Linear(2, 2))
    model[1].weight = model[0].weight  # tied
    params = list(model.parameters())
    optimizer = nograd.optim.SGD(params, lr=0.5)
    own = model.state_dict()  # the tied weight under two keys, one tensor
    zeros = {id(value): torch.zeros_like(value) for value in own.values()}
    state = {key: zeros[id(value)] for key, value in own.items()}
    model.load_state_dict(state, assign=True)
    assert list(model.parameters()) == params and model[1].weight is model[0].weight
    assert model[0].weight.data.data_ptr() == state["0.weight"].data_ptr()
    model[0].weight.grad = torch.ones(2, 2)
    optimizer.step()
    assert torch.equal(state["0.weight"], torch.full((2, 2), -0.5))  # stepped in place


def test_load_state_dict_assign_checks_what_a_copy_checks() -> None:
    model = Linear(2, 3)
    before = model.weight.data
    with pytest.raises(RuntimeError, match=r"weight: expected shape \(3, 2\), got \(2, 2\)"):
        model.load_state_dict({"weight": torch.zeros(2, 2), "bias": torch.zeros(3)}, assign=True)
    assert model.weight.data is before
    with pytest.raises(RuntimeError, match=r"missing keys \['bias'\]"):
        model.load_state_dict({"weight": torch.zeros(3, 2)}, assign=True)
    result = model.load_state_dict({"weight": torch.ones(3, 2)}, strict=False, assign=True)
    assert result.missing_keys == ["bias"] and torch.equal(model.weight.data, torch.ones(3, 2))


def test_load_state_dict_names_missing_and_unexpected_keys() -> None:
    ours, _ = nested_pair()
    state = dict(ours.state_dict())
    del state["2.1.bias"]
    state["2.9.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"missing keys \['2\.1\.bias'\]") as info:
        ours.load_state_dict(state)
    assert "unexpected keys ['2.9.weight']" in str(info.value)


def test_load_state_dict_strict_false_returns_the_keys() -> None:
    ours, _ = nested_pair()
    before = ours.state_dict()["0.weight"].clone()
    state = {key: torch.zeros_like(t) for key, t in ours.state_dict().items()}
    del state["1.weight"]
    state["extra"] = torch.zeros(3)
    result = ours.load_state_dict(state, strict=False)
    assert result.missing_keys == ["1.weight"]
    assert result.unexpected_keys == ["extra"]
    assert not torch.equal(before, ours.state_dict()["0.weight"])
    assert torch.equal(ours.state_dict()["0.weight"], torch.zeros(4, 3))


def test_load_state_dict_lists_unexpected_keys_in_torchs_order() -> None:
    # torch lists them module by module (as state_dict walks), not in the dict's order,
    # and counts a key that goes on past a parameter ("0.weight.x") as unexpected
    ours, ref = nested_pair()
    state = OrderedDict(
        [("2.1.extra", torch.zeros(1)), ("zz", torch.zeros(1)), ("0.weight.x", torch.zeros(1))]
    )
    state.update((key, torch.zeros_like(t)) for key, t in ref.state_dict().items())
    state["7.weight"] = torch.zeros(1)
    state["2.extra"] = torch.zeros(1)
    del state["2.0.bias"]
    result = ours.load_state_dict(state, strict=False)
    expected = ref.load_state_dict(state, strict=False)
    assert result.unexpected_keys == expected.unexpected_keys
    assert result.missing_keys == expected.missing_keys == ["2.0.bias"]


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_refuses_a_value_that_is_not_a_tensor_as_torch(strict: bool) -> None:
    state: dict[str, Any] = {"weight": torch.zeros(3, 2), "bias": [0.0, 0.0, 0.0]}
    with pytest.raises(RuntimeError):
        torch.nn.Linear(2, 3).load_state_dict(state, strict=strict)
    layer = Linear(2, 3)
    before = layer.weight.data.clone()
    with pytest.raises(RuntimeError, match="bias: expected a Tensor, got list"):
        layer.load_state_dict(state, strict=strict)
    assert torch.equal(layer.weight.data, before)


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_names_shape_mismatches_and_changes_nothing(strict: bool) -> None:
    layer = Linear(2, 3)
    before = layer.weight.data.clone()
    state = {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}
    with pytest.raises(RuntimeError, match=r"weight: expected shape \(3, 2\), got \(3, 4\)"):
        layer.load_state_dict(state, strict=strict)
    assert torch.equal(layer.weight.data, before)


def test_state_dict_of_a_shared_parameter_appears_once_in_named_parameters() -> None:
    shared = Linear(3, 3)
    ours = Sequential(shared, Linear(3, 3), shared)
    ref_shared = torch.nn.Linear(3, 3)
    ref = torch.nn.Sequential(ref_shared, torch.nn.Linear(3, 3), ref_shared)
    names = [name for name, _ in ours.named_parameters()]
    assert names == [name for name, _ in ref.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert len(list(ours.parameters())) == 4


def test_state_dict_of_a_shared_module_lists_every_name_as_torch() -> None:
    shared = Linear(3, 3)
    ours = Sequential(shared, Linear(3, 3), shared)
    ref_shared = torch.nn.Linear(3, 3)
    ref = torch.nn.Sequential(ref_shared, torch.nn.Linear(3, 3), ref_shared)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())


@pytest.mark.parametrize("source", ["state_dict(keep_vars=True)", "named_parameters()"])
def test_load_state_dict_from_tensors_that_require_grad_stays_out_of_autograd(source: str) -> None:
    """torch Parameters as the source: the copy must not make our storage an autograd node."""
    ref = torch.nn.Linear(3, 2)
    if source == "named_parameters()":
        state: dict[str, Tensor] = dict(ref.named_parameters())
    else:
        state = dict(ref.state_dict(keep_vars=True))
    assert all(tensor.requires_grad for tensor in state.values())
    ours, twin = Linear(3, 2), torch.nn.Linear(3, 2)
    with torch.enable_grad():  # as in a user's script, where autograd is on
        twin.load_state_dict(state)
        ours.load_state_dict(state)
        x = torch.randn(4, 3)
        y = ours(x)
    assert twin.weight.is_leaf  # torch copies without recording
    for name, param in ours.named_parameters():
        assert not param.data.requires_grad and param.data.grad_fn is None, name
        assert torch.equal(param.data, state[name].detach()), name
    assert not y.requires_grad
    assert_close(torch.from_numpy(y.numpy()), twin(x))  # .numpy() refuses a grad-tracking y


# ------------------------------------------------------------ buffers, dtypes
def test_buffers_persistent_and_not_match_torch_state_dict() -> None:
    ours, ref = WithBuffers(), TorchWithBuffers()
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert "scratch" not in ours.state_dict()
    assert [name for name, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    ours.load_state_dict(ref.state_dict())


def test_to_casts_floating_buffers_but_not_integer_ones() -> None:
    module = WithBuffers()
    assert module.to(torch.float64) is module
    assert module.running_mean.dtype == torch.float64
    assert module.scratch.dtype == torch.float64
    assert module.num_batches.dtype == torch.int64
    assert module.state_dict()["running_mean"].dtype == torch.float64


@pytest.mark.parametrize(
    "convert",
    [
        lambda m: m.to(torch.float64),
        lambda m: m.to(dtype=torch.float64),
        lambda m: m.to("cpu", torch.float64),
        lambda m: m.double(),
    ],
    ids=["positional", "keyword", "device-and-dtype", "double"],
)
def test_to_float64_casts_parameters_and_gradients(convert) -> None:  # type: ignore[no-untyped-def]
    model = Sequential(Linear(3, 2), Sequential(Linear(2, 2)))
    model(torch.randn(4, 3))
    model.backward(torch.randn(4, 2))
    weight_before = model[0].weight.data.clone()  # type: ignore[union-attr]
    assert convert(model) is model
    for name, param in model.named_parameters():
        assert param.dtype == torch.float64, name
        assert param.grad is not None and param.grad.dtype == torch.float64, name
    assert torch.equal(model[0].weight.data, weight_before.double())  # type: ignore[union-attr]
    y = model(torch.randn(4, 3, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_float_casts_back_and_to_cpu_keeps_dtype() -> None:
    model = Linear(2, 2, dtype=torch.float64)
    model.to("cpu")
    assert model.weight.dtype == torch.float64
    assert model.to(torch.device("cpu")).weight.device.type == "cpu"
    model.float()
    assert model.weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("method", "dtype"),
    [("half", torch.float16), ("bfloat16", torch.bfloat16), ("double", torch.float64)],
)
def test_dtype_shorthands_cast_as_torchs(method: str, dtype: torch.dtype) -> None:
    model, ref = Linear(3, 2), torch.nn.Linear(3, 2)
    ref.load_state_dict(model.state_dict())
    getattr(model, method)()
    getattr(ref, method)()
    assert model.weight.dtype == dtype
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True)
    )


def test_cpu_keeps_a_cpu_model_where_it_is() -> None:
    model = Linear(2, 2, dtype=torch.float64)
    assert model.cpu() is model and model.weight.device.type == "cpu"
    assert model.weight.dtype == torch.float64


def test_to_rejects_an_integer_dtype() -> None:
    with pytest.raises(TypeError, match=r"Linear\.to: expected a floating dtype, got torch.int64"):
        Linear(2, 2).to(torch.int64)


# ---------------------------------------------------------- modes, gradients
def test_train_and_eval_reach_every_descendant() -> None:
    ours, ref = nested_pair()
    assert ours.eval() is ours
    assert all(not m.training for m in ours.modules())
    assert len(list(ours.modules())) == len(list(ref.modules())) == 8
    ours.train()
    assert all(m.training for m in ours.modules())
    ours.train(False)
    assert not ours[2][2][0].training  # type: ignore[index]


@pytest.mark.parametrize("lib", [nograd.nn, torch.nn])
def test_train_calls_each_childs_own_train_as_torch(lib: ModuleType) -> None:
    # a common pattern: a block that keeps one of its parts frozen in eval mode
    class KeepsInnerInEval(lib.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.inner = lib.Linear(2, 2)

        def train(self, mode: bool = True) -> Any:
            super().train(mode)
            self.inner.training = False
            return self

    model = lib.Sequential(lib.Linear(2, 2), KeepsInnerInEval())
    assert model.train() is model
    assert model[0].training and model[1].training
    assert not model[1].inner.training


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none: bool) -> None:
    model = Sequential(Linear(3, 2), Linear(2, 2))
    model(torch.randn(4, 3))
    model.backward(torch.randn(4, 2))
    grads = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=set_to_none)
    for param, grad in zip(model.parameters(), grads, strict=True):
        if set_to_none:
            assert param.grad is None
        else:
            assert param.grad is grad  # cleared in place, so optimizer buffers stay valid
            assert param.grad is not None and torch.equal(param.grad, torch.zeros_like(grad))


def test_zero_grad_defaults_to_none_as_torch() -> None:
    layer = Linear(2, 2)
    layer(torch.randn(1, 2))
    layer.backward(torch.randn(1, 2))
    layer.zero_grad()
    assert layer.weight.grad is None


# ------------------------------------------------------------------- Parameter
def test_parameter_rejects_non_tensors() -> None:
    with pytest.raises(TypeError, match=r"Parameter: expected a torch\.Tensor, got list"):
        Parameter([1.0, 2.0])  # type: ignore[arg-type]


def test_parameter_accumulate_grad_stores_then_adds() -> None:
    param = Parameter(torch.zeros(3))
    first = torch.tensor([1.0, 2.0, 3.0])
    param.accumulate_grad(first)
    assert param.grad is first
    param.accumulate_grad(torch.tensor([1.0, 1.0, 1.0]))
    assert param.grad is not None
    assert torch.equal(param.grad, torch.tensor([2.0, 3.0, 4.0]))
    assert param.shape == (3,) and param.numel() == 3 and param.dtype == torch.float32


def test_assigning_a_parameter_or_module_registers_it() -> None:
    module = Module()
    module.w = Parameter(torch.zeros(2))
    module.child = Linear(2, 1)
    assert [name for name, _ in module.named_parameters()] == ["w", "child.weight", "child.bias"]
    del module.child
    assert [name for name, _ in module.named_parameters()] == ["w"]


def test_assigning_a_tensor_over_a_parameter_raises() -> None:
    layer = Linear(2, 2)
    with pytest.raises(TypeError, match="weight"):
        layer.weight = torch.zeros(2, 2)  # type: ignore[assignment]


def test_assigning_none_over_a_child_module_removes_its_parameters() -> None:
    ours, ref = TwoLayer(), TorchTwoLayer()
    ours.head = None  # type: ignore[assignment]
    ref.head = None  # type: ignore[assignment]
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["encoder.weight", "encoder.bias"]
    assert repr(ours) == repr(ref).replace("TorchTwoLayer", "TwoLayer")  # (head): None


def test_a_child_set_to_none_keeps_its_slot_as_torch() -> None:
    # a module assigned there later takes the old place: the parameter order, which an
    # optimizer's per-index state follows, stays torch's
    ours, ref = TwoLayer(), TorchTwoLayer()
    for model, nn in ((ours, nograd.nn), (ref, torch.nn)):
        model.encoder = None
        model.encoder = nn.Linear(3, 5)
    assert names(ours) == names(ref)
    assert names(ours)[0] == ["encoder.weight", "encoder.bias", "head.weight", "head.bias"]


def test_add_module_none_makes_an_empty_slot_as_torch() -> None:
    ours, ref = Module(), torch.nn.Module()
    for model, nn in ((ours, nograd.nn), (ref, torch.nn)):
        model.add_module("first", None)
        model.second = nn.ReLU()
        model.first = nn.Tanh()
    assert names(ours) == names(ref) and names(ours)[2] == ["first", "second"]


def test_sequential_refuses_none_where_torch_fails_only_in_forward() -> None:
    model = Sequential(Linear(2, 2), nograd.nn.ReLU())
    with pytest.raises(TypeError, match="Sequential: expected a Module, got NoneType"):
        model[1] = None  # type: ignore[assignment]
    with pytest.raises(TypeError, match="Sequential: cannot set child '1' to None"):
        setattr(model, "1", None)
    with pytest.raises(TypeError, match="Sequential: expected a Module, got NoneType"):
        model.add_module("2", None)
    assert len(model) == 2


class Registered(Module):
    """One of each: a parameter, a buffer, a child module and a plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.w = Parameter(torch.zeros(2))
        self.register_buffer("b", torch.zeros(2))
        self.fc = Linear(2, 2)
        self.k = 3


class TorchRegistered(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.register_buffer("b", torch.zeros(2))
        self.fc = torch.nn.Linear(2, 2)
        self.k = 3


def names(module: Any) -> tuple[list[str], list[str], list[str], list[str]]:
    """Parameters, buffers, children and state_dict keys: what a registration changes."""
    return (
        [name for name, _ in module.named_parameters()],
        [name for name, _ in module.named_buffers()],
        [name for name, _ in module.named_children()],
        list(module.state_dict()),
    )


@pytest.mark.parametrize(
    "replace",
    [
        lambda m, nn: setattr(m, "b", nn.Parameter(torch.ones(2))),  # a parameter over a buffer
        lambda m, nn: setattr(m, "fc", nn.Parameter(torch.ones(2))),  # ... over a child
        lambda m, nn: setattr(m, "k", nn.Parameter(torch.ones(2))),  # ... over an attribute
        lambda m, nn: setattr(m, "b", nn.Linear(2, 2)),  # a child over a buffer
    ],
    ids=["param-over-buffer", "param-over-child", "param-over-attr", "child-over-buffer"],
)  # fmt: skip
def test_assigning_over_a_registered_name_replaces_it_as_torch(
    replace: Callable[[Any, ModuleType], None],
) -> None:
    ours, ref = Registered(), TorchRegistered()
    replace(ours, nograd.nn)
    replace(ref, torch.nn)
    assert names(ours) == names(ref)
    ref.load_state_dict(ours.state_dict())  # same keys, same shapes, same values
    for key, tensor in ours.state_dict().items():
        assert torch.equal(tensor, ref.state_dict()[key]), key


def test_load_state_dict_writes_into_a_parameter_that_replaced_a_buffer() -> None:
    ours = Registered()
    ours.b = Parameter(torch.ones(2))
    assert torch.equal(ours.state_dict()["b"], torch.ones(2))  # not the dead buffer's zeros
    ours.load_state_dict({**ours.state_dict(), "b": torch.full((2,), 5.0)})
    assert isinstance(ours.b, Parameter) and torch.equal(ours.b.data, torch.full((2,), 5.0))


# Each action runs on a Registered and on a TorchRegistered, given its framework's nn;
# the error is torch's (None: both accept it).
REGISTRATIONS: dict[str, tuple[Callable[[Any, ModuleType], object], type[Exception] | None]] = {
    "buffer-over-param": (lambda m, nn: m.register_buffer("w", torch.zeros(2)), KeyError),
    "buffer-over-child": (lambda m, nn: m.register_buffer("fc", torch.zeros(2)), KeyError),
    "buffer-over-attr": (lambda m, nn: m.register_buffer("k", torch.zeros(2)), KeyError),
    "buffer-over-method": (lambda m, nn: m.register_buffer("forward", None), KeyError),
    "buffer-dotted": (lambda m, nn: m.register_buffer("a.b", torch.zeros(2)), KeyError),
    "buffer-empty": (lambda m, nn: m.register_buffer("", torch.zeros(2)), KeyError),
    "buffer-not-str": (lambda m, nn: m.register_buffer(3, torch.zeros(2)), TypeError),
    "buffer-a-list": (lambda m, nn: m.register_buffer("c", [1.0]), TypeError),
    "buffer-again": (lambda m, nn: m.register_buffer("b", torch.ones(3)), None),
    "buffer-none": (lambda m, nn: m.register_buffer("c", None), None),
    "param-over-buffer": (
        lambda m, nn: m.register_parameter("b", nn.Parameter(torch.zeros(2))),
        KeyError,
    ),
    "param-over-child": (
        lambda m, nn: m.register_parameter("fc", nn.Parameter(torch.zeros(2))),
        KeyError,
    ),
    "param-dotted": (
        lambda m, nn: m.register_parameter("a.b", nn.Parameter(torch.zeros(2))),
        KeyError,
    ),
    "param-empty": (lambda m, nn: m.register_parameter("", nn.Parameter(torch.zeros(2))), KeyError),
    "param-not-str": (
        lambda m, nn: m.register_parameter(3, nn.Parameter(torch.zeros(2))),
        TypeError,
    ),
    "param-a-tensor": (lambda m, nn: m.register_parameter("c", torch.zeros(2)), TypeError),
    "param-again": (lambda m, nn: m.register_parameter("w", nn.Parameter(torch.ones(3))), None),
    "param-none": (lambda m, nn: m.register_parameter("c", None), None),
    "child-over-param": (lambda m, nn: m.add_module("w", nn.Linear(2, 2)), KeyError),
    "child-over-buffer": (lambda m, nn: m.add_module("b", nn.Linear(2, 2)), KeyError),
    "child-dotted": (lambda m, nn: m.add_module("a.b", nn.Linear(2, 2)), KeyError),
    "child-empty": (lambda m, nn: m.add_module("", nn.Linear(2, 2)), KeyError),
    "child-not-str": (lambda m, nn: m.add_module(3, nn.Linear(2, 2)), TypeError),
    "child-a-tensor": (lambda m, nn: m.add_module("c", torch.zeros(2)), TypeError),
    "child-a-class": (lambda m, nn: m.add_module("c", nn.Linear), TypeError),
    "child-again": (lambda m, nn: m.add_module("fc", nn.Linear(2, 3)), None),
    "assign-child-over-param": (lambda m, nn: setattr(m, "w", nn.Linear(2, 2)), TypeError),
    "assign-tensor-over-child": (lambda m, nn: setattr(m, "fc", torch.zeros(2)), TypeError),
    "assign-tensor-over-param": (lambda m, nn: setattr(m, "w", torch.zeros(2)), TypeError),
    "train-str": (lambda m, nn: m.train("no"), ValueError),
    "train-int": (lambda m, nn: m.train(1), ValueError),
    "train-none": (lambda m, nn: m.train(None), ValueError),
}


@pytest.mark.parametrize(("action", "error"), list(REGISTRATIONS.values()), ids=list(REGISTRATIONS))
def test_registration_rules_match_torch(
    action: Callable[[Any, ModuleType], object], error: type[Exception] | None
) -> None:
    ours, ref = Registered(), TorchRegistered()
    if error is None:
        action(ours, nograd.nn)
        action(ref, torch.nn)
        assert names(ours) == names(ref)
        return
    with pytest.raises(error):
        action(ref, torch.nn)
    before = names(ours)
    with pytest.raises(error):
        action(ours, nograd.nn)
    assert names(ours) == before  # a refused registration changes nothing
    assert all(module.training for module in ours.modules())


def test_registration_errors_name_the_problem() -> None:
    with pytest.raises(KeyError, match=r"Linear: attribute 'bias' already exists"):
        Linear(2, 2).register_buffer("bias", torch.zeros(2))
    with pytest.raises(KeyError, match=r'parameter name can.*t contain ".", got'):
        Module().register_parameter("a.b", Parameter(torch.zeros(2)))
    with pytest.raises(TypeError, match=r"cannot assign 'torch.FloatTensor' object to parameter"):
        Module().register_parameter("p", torch.zeros(2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Module: torch.FloatTensor is not a Module subclass"):
        Module().add_module("c", torch.zeros(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Sequential.train: .*boolean, got 'no'"):
        Sequential(Linear(2, 2)).train("no")  # type: ignore[arg-type]


# ------------------------------------------------------------------- apply
def test_apply_visits_children_first_then_self_as_torch() -> None:
    ours, ref = nested_pair()
    name_of = {id(module): name for name, module in ours.named_modules()}
    ref_name_of = {id(module): name for name, module in ref.named_modules()}
    visited: list[str] = []
    ref_visited: list[str] = []
    assert ours.apply(lambda module: visited.append(name_of[id(module)])) is ours
    assert ref.apply(lambda module: ref_visited.append(ref_name_of[id(module)])) is ref
    assert visited == ref_visited
    assert visited == ["0", "1", "2.0", "2.1", "2.2.0", "2.2", "2", ""]


def test_apply_reaches_a_shared_child_once_per_parent_as_torch() -> None:
    shared = Linear(2, 2)
    ours = Sequential(shared, Linear(2, 2), shared)
    ref_shared = torch.nn.Linear(2, 2)
    ref = torch.nn.Sequential(ref_shared, torch.nn.Linear(2, 2), ref_shared)
    assert [n for n, _ in ours.named_children()] == [n for n, _ in ref.named_children()]
    counts: list[int] = []
    ref_counts: list[int] = []
    ours.apply(lambda module: counts.append(module is shared))
    ref.apply(lambda module: ref_counts.append(module is ref_shared))
    assert counts == ref_counts and sum(counts) == 1


def test_apply_initialises_every_linear() -> None:
    def init(module: Module) -> None:
        if isinstance(module, Linear):
            nograd.nn.init.ones_(module.weight.data)

    model, _ = nested_pair()
    model.apply(init)
    weights = [p.data for name, p in model.named_parameters() if name.endswith("weight")]
    assert len(weights) == 5 and all(bool((w == 1).all()) for w in weights)


# ---------------------------------------------------------- contract, repr
def test_user_module_with_two_children_matches_torch() -> None:
    ours, ref = TwoLayer().to(torch.float64), TorchTwoLayer().to(torch.float64)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_children()] == ["encoder", "head"]
    compare_module(ours, ref, torch.randn(7, 3, dtype=torch.float64))


def test_user_module_round_trips_through_torch_state_dict() -> None:
    ours, ref = TwoLayer(), TorchTwoLayer()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3)
    assert_close(ours(x), ref(x))


def test_repr_of_nested_sequential_equals_torch() -> None:
    ours, ref = nested_pair()
    assert repr(ours) == repr(ref)
    assert repr(Sequential()) == repr(torch.nn.Sequential())


def test_repr_with_extra_repr_and_children_equals_torch() -> None:
    class Ours(TwoLayer):
        def extra_repr(self) -> str:
            return "k=3"

    class Ref(TorchTwoLayer):
        def extra_repr(self) -> str:
            return "k=3"

    assert repr(Ours()).replace("Ours", "X") == repr(Ref()).replace("Ref", "X")


def test_base_module_forward_and_backward_are_abstract() -> None:
    with pytest.raises(NotImplementedError, match="Module must implement forward"):
        Module()(torch.zeros(1))
    with pytest.raises(NotImplementedError, match="Module must implement backward"):
        Module().backward(torch.zeros(1))


def test_saved_and_grad_output_checks_name_the_module() -> None:
    layer = Linear(2, 3)
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=2.*before forward"):
        layer._saved("x")
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=2.*before forward"):
        layer.backward(torch.zeros(4, 3))
    layer(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"Linear\(.*expected grad_output of shape \(4, 3\)"):
        layer.backward(torch.zeros(4, 2))


class Square(Module):
    """y = x ** 2: the custom module of docs/design.md ("Adding a layer"), as written there."""

    def forward(self, x: Tensor) -> Tensor:
        self.saved["x"] = x  # dy/dx = 2x needs x
        return x * x

    def backward(self, grad_output: Tensor) -> Tensor:
        x = self._saved_for(grad_output, "x")  # raises if forward never ran
        return grad_output * 2 * x  # dL/dx = dL/dy * 2x


def test_the_documented_custom_module_matches_autograd_and_explains_misuse() -> None:
    x = torch.randn(3, 4, dtype=torch.float64)
    g = torch.randn(3, 4, dtype=torch.float64)
    ref = x.clone().requires_grad_()
    with torch.enable_grad():
        (ref * ref).backward(g)
    layer = Square()
    assert torch.equal(layer(x), x * x)
    assert ref.grad is not None and torch.allclose(layer.backward(g), ref.grad)
    with pytest.raises(ValueError, match=r"Square\(\): expected grad_output of shape \(3, 4\)"):
        layer.backward(g[:2])
    with pytest.raises(RuntimeError, match=r"Square\(\): backward\(\) called before forward\(\)"):
        Square().backward(g)


def test_state_dict_prefix_and_destination_as_torch() -> None:
    ours = Sequential(Linear(2, 3), Sequential(Linear(3, 1)))
    ref = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sequential(torch.nn.Linear(3, 1)))
    assert list(ours.state_dict(prefix="net.")) == list(ref.state_dict(prefix="net."))
    destination: OrderedDict[str, torch.Tensor] = OrderedDict(other=torch.zeros(1))
    assert ours.state_dict(destination=destination) is destination
    assert list(destination) == ["other", *ref.state_dict()]


def test_named_buffers_and_parameters_recurse_and_duplicates_as_torch() -> None:
    def build(module_cls: Any, linear: Any) -> Any:
        inner = module_cls()
        inner.register_buffer("scale", torch.ones(2))
        outer = module_cls()
        outer.register_buffer("shift", torch.zeros(2))
        shared = linear(2, 2)
        outer.a, outer.b, outer.inner = shared, shared, inner
        return outer

    ours, ref = build(Module, Linear), build(torch.nn.Module, torch.nn.Linear)
    for kwargs in ({}, {"recurse": False}, {"remove_duplicate": False}, {"prefix": "m"}):
        assert [n for n, _ in ours.named_buffers(**kwargs)] == [
            n for n, _ in ref.named_buffers(**kwargs)
        ]
        assert [n for n, _ in ours.named_parameters(**kwargs)] == [
            n for n, _ in ref.named_parameters(**kwargs)
        ]
    assert len(list(ours.buffers(recurse=False))) == len(list(ref.buffers(recurse=False)))


def test_state_dict_keep_vars_gives_the_parameters_themselves_as_torch() -> None:
    ours, ref = WithBuffers(), TorchWithBuffers()
    for keep_vars in (False, True):
        ours_state = ours.state_dict(keep_vars=keep_vars)
        ref_state = ref.state_dict(keep_vars=keep_vars)
        assert list(ours_state) == list(ref_state)
        # parameters: the Parameter object itself, or a tensor sharing its storage
        for key, param in [("fc.weight", ours.fc.weight), ("fc.bias", ours.fc.bias)]:
            ref_param = ref.get_parameter(key)
            assert (ours_state[key] is param) == (ref_state[key] is ref_param) == keep_vars
            assert isinstance(ours_state[key], Parameter) == keep_vars
            tensor = ours_state[key].data if keep_vars else ours_state[key]
            assert tensor.data_ptr() == param.data.data_ptr()
        # buffers are tensors either way, sharing storage with the module's
        for key in ("running_mean", "num_batches"):
            assert isinstance(ours_state[key], Tensor)
            assert ours_state[key].data_ptr() == getattr(ours, key).data_ptr()
    assert (
        ours.state_dict(keep_vars=True, prefix="m.").keys()
        == ref.state_dict(keep_vars=True, prefix="m.").keys()
    )


def test_load_state_dict_accepts_a_keep_vars_state_dict_and_copies_it() -> None:
    source, target = Sequential(Linear(3, 2), Linear(2, 1)), Sequential(Linear(3, 2), Linear(2, 1))
    state = source.state_dict(keep_vars=True)
    assert isinstance(state["0.weight"], Parameter)
    assert target.load_state_dict(state) == ([], [])
    for (name, ours), (_, theirs) in zip(
        target.named_parameters(), source.named_parameters(), strict=True
    ):
        assert torch.equal(ours.data, theirs.data), name
        assert ours is not theirs and ours.data.data_ptr() != theirs.data.data_ptr(), name
    state["0.bias"] = Parameter(torch.zeros(5))  # a shape mismatch is named as for tensors
    with pytest.raises(RuntimeError, match=r"0.bias: expected shape \(2,\), got \(5,\)"):
        target.load_state_dict(state)


def test_named_modules_takes_torchs_memo_first_and_skips_what_it_holds() -> None:
    def build(seq: Any, linear: Any) -> tuple[Any, Any]:
        shared = linear(2, 2)
        return seq(shared, seq(linear(2, 2), shared), linear(2, 2)), shared

    ours, ours_shared = build(Sequential, Linear)
    ref, ref_shared = build(torch.nn.Sequential, torch.nn.Linear)
    for args, kwargs in [
        ((), {}),
        ((None, "net"), {}),  # memo, then prefix, positionally as torch
        ((), {"remove_duplicate": False}),
        ((), {"prefix": "net", "remove_duplicate": False}),
    ]:
        assert [n for n, _ in ours.named_modules(*args, **kwargs)] == [
            n for n, _ in ref.named_modules(*args, **kwargs)
        ]
    for remove_duplicate in (True, False):
        ours_memo, ref_memo = {ours_shared}, {ref_shared}
        ours_names = [n for n, _ in ours.named_modules(ours_memo, "", remove_duplicate)]
        ref_names = [n for n, _ in ref.named_modules(ref_memo, "", remove_duplicate)]
        assert ours_names == ref_names
        assert len(ours_memo) == len(ref_memo)  # what was yielded joins the memo, or not
    assert len(list(ours.modules(remove_duplicate=False))) == len(
        list(ref.modules(remove_duplicate=False))
    )
    assert len(list(ours.modules())) == len(list(ref.modules()))


def with_buffers(nn: ModuleType) -> Any:
    """The same nested model in nograd.nn or torch.nn, with a buffer of each kind."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Tanh(), nn.Linear(3, 1)))
    model[1][1].register_buffer("count", torch.zeros(1))
    model[1][1].register_buffer("scratch", torch.ones(2), persistent=False)
    return model


@pytest.mark.parametrize("getter", ["get_submodule", "get_parameter", "get_buffer"])
@pytest.mark.parametrize(
    "target",
    ["", "0", "1", "1.1", "2", "0.weight", "1.1.bias", "1.1.count", "1.1.scratch",
     "0.in_features", "0.nothing", "1.0.weight", "weight", "1.2.weight", "1.1.count.x"],
)  # fmt: skip
def test_get_by_dotted_path_finds_and_refuses_as_torch(getter: str, target: str) -> None:
    ours, theirs = with_buffers(nograd.nn), with_buffers(torch.nn)
    try:
        expected = getattr(theirs, getter)(target)
    except AttributeError as error:
        with pytest.raises(AttributeError) as raised:
            getattr(ours, getter)(target)
        assert str(raised.value) == str(error)
        return
    found = getattr(ours, getter)(target)
    if getter == "get_submodule":
        assert type(found).__name__ == type(expected).__name__
        assert dict(found.named_modules()).keys() == dict(expected.named_modules()).keys()
    elif getter == "get_parameter":
        assert isinstance(found, Parameter) and found is ours.get_parameter(target)
        assert found.shape == expected.shape
    else:
        assert isinstance(found, Tensor) and torch.equal(found, expected)


def test_register_module_is_add_module() -> None:
    model = Module()
    child = Linear(2, 2)
    model.register_module("head", child)
    assert model.get_submodule("head") is child and dict(model.named_children()) == {"head": child}

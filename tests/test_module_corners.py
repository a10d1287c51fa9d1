"""Module API corners found by a differential audit against torch.nn.Module.

Each test runs the same calls on a nograd module and its torch.nn twin and compares
what comes back: reprs, errors, dtypes and layouts, gradients.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from nograd import nn
from tests.oracle import since_torch_2_13


class Scaled(nn.Module):
    """y = t * x with a 0-dim parameter t and a 0-dim buffer, as a temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("count", torch.tensor(0.0))


class TorchScaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.t = torch.nn.Parameter(torch.tensor(1.0))
        self.register_buffer("count", torch.tensor(0.0))


# ----------------------------------------------------------------- load_state_dict
def test_load_state_dict_result_prints_as_torchs() -> None:
    ours = nn.Linear(2, 3).load_state_dict(nn.Linear(2, 3).state_dict())
    ref = torch.nn.Linear(2, 3).load_state_dict(torch.nn.Linear(2, 3).state_dict())
    assert repr(ours) == str(ours) == repr(ref) == "<All keys matched successfully>"
    partial = {"weight": torch.zeros(3, 2), "extra": torch.zeros(1)}
    ours = nn.Linear(2, 3).load_state_dict(partial, strict=False)
    ref = torch.nn.Linear(2, 3).load_state_dict(partial, strict=False)
    assert repr(ours) == str(ours) == repr(ref)
    assert ours == ref == (["bias"], ["extra"])


@pytest.mark.parametrize("assign", [False, True])
def test_a_one_element_vector_loads_into_a_0_dim_entry_as_torch(assign: bool) -> None:
    """torch reads it as a scalar saved by its version 0.3 (a parameter and a buffer)."""
    state = {"t": torch.tensor([5.0]), "count": torch.tensor([3.0])}
    ours, ref = Scaled(), TorchScaled()
    ours.load_state_dict(state, assign=assign)
    ref.load_state_dict(state, assign=assign)
    assert torch.equal(ours.t.data, ref.t.detach()) and ours.t.data.shape == ()
    assert torch.equal(ours.count, ref.count) and ours.count.shape == ()  # type: ignore[attr-defined]
    wider = {"t": torch.tensor([5.0, 6.0]), "count": torch.tensor(3.0)}  # only one element
    with pytest.raises(RuntimeError):
        TorchScaled().load_state_dict(wider)
    with pytest.raises(RuntimeError, match=r"t: expected shape \(\), got \(2,\)"):
        Scaled().load_state_dict(wider)


def test_load_state_dict_refuses_a_list_of_pairs_with_a_type_error_as_torch() -> None:
    pairs = list(torch.nn.Linear(2, 3).state_dict().items())
    with pytest.raises(TypeError):
        torch.nn.Linear(2, 3).load_state_dict(pairs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a dict-like state_dict, got list"):
        nn.Linear(2, 3).load_state_dict(pairs)  # type: ignore[arg-type]


def test_copying_into_a_model_on_meta_warns_as_torch() -> None:
    """Without assign=True nothing is loaded into a meta tensor: torch warns, so do we."""
    state = torch.nn.Linear(2, 3).state_dict()
    with torch.device("meta"):
        ours, ref = nn.Linear(2, 3), torch.nn.Linear(2, 3)
    with warnings.catch_warnings(record=True) as ref_warnings:
        warnings.simplefilter("always")
        ref.load_state_dict(state)
    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter("always")
        ours.load_state_dict(state)
    assert len(our_warnings) == len(ref_warnings) == 2  # one for each key
    assert "weight is on the meta device" in str(our_warnings[0].message)
    assert "assign=True" in str(our_warnings[0].message)
    assert ours.weight.data.is_meta
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours.load_state_dict(state, assign=True)  # what the warning suggests: no warning
    assert torch.equal(ours.weight.data, state["weight"])


# ------------------------------------------------------------------------- to()
def with_image_buffers(lib: Any) -> Any:
    """A Linear with a float and an integer 4-D buffer (what memory_format reaches)."""
    module = lib.Linear(2, 3)
    module.register_buffer("image", torch.ones(2, 3, 4, 5))
    module.register_buffer("counts", torch.ones(2, 3, 4, 5, dtype=torch.int64))
    return module


def layout(module: Any) -> tuple[Any, ...]:
    weight = module.weight.data if isinstance(module, nn.Module) else module.weight
    return (
        weight.dtype,
        module.image.dtype,
        module.counts.dtype,
        module.image.is_contiguous(memory_format=torch.channels_last),
        module.counts.is_contiguous(memory_format=torch.channels_last),
    )


TO_CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "device, non_blocking=": (("cpu",), {"non_blocking": True}),
    "device, dtype, non_blocking": (("cpu", torch.float64, True), {}),
    "dtype, non_blocking": ((torch.float64, True), {}),
    "tensor": ((torch.zeros(1, dtype=torch.float64),), {}),
    "tensor, non_blocking=": ((torch.zeros(1, dtype=torch.float16),), {"non_blocking": True}),
    "memory_format=": ((), {"memory_format": torch.channels_last}),
    "dtype, memory_format=": ((torch.bfloat16,), {"memory_format": torch.channels_last}),
}


@pytest.mark.parametrize("call", TO_CALLS, ids=list(TO_CALLS))
def test_to_takes_each_of_torchs_forms(call: str) -> None:
    args, kwargs = TO_CALLS[call]
    ours = with_image_buffers(nn).to(*args, **kwargs)
    ref = with_image_buffers(torch.nn).to(*args, **kwargs)
    assert layout(ours) == layout(ref)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((torch.zeros(1, dtype=torch.int64),), {}),  # a tensor of an integer dtype
        (("cpu", "float64"), {}),  # a dtype by name
        ((torch.float64, torch.float32), {}),
        (("cpu",), {"wrong": 1}),
    ],
)
def test_to_refuses_what_torch_refuses_with_a_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        torch.nn.Linear(2, 3).to(*args, **kwargs)
    with pytest.raises(TypeError):
        nn.Linear(2, 3).to(*args, **kwargs)


# --------------------------------------------------------------- copies, pickles
COPIES: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
}


@pytest.mark.parametrize("how", COPIES)
def test_a_copied_parameter_has_no_gradient_as_torchs(how: str) -> None:
    ours, ref = nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    ours.grad, ref.grad = torch.ones(2), torch.ones(2)
    ours_copy, ref_copy = COPIES[how](ours), COPIES[how](ref)
    assert ours_copy.grad is None and ref_copy.grad is None
    assert torch.equal(ours_copy.data, ref_copy.detach())
    assert (ours_copy.data is ours.data) == (how == "copy")  # deepcopy and pickle copy data
    assert ours.grad is not None  # the original keeps its own


def test_a_snapshot_of_a_model_trains_from_fresh_gradients_as_torchs() -> None:
    """``best = deepcopy(model)`` after a backward: the copy's first backward must not
    add into the gradients the original had (torch's copy has none)."""
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    ref = ref.double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3, dtype=torch.float64)
    g = torch.randn(5, 1, dtype=torch.float64)
    ours(x)
    ours.backward(g)
    with torch.enable_grad():
        ref(x).backward(g)
    ours_copy, ref_copy = copy.deepcopy(ours), copy.deepcopy(ref)
    assert all(p.grad is None for p in ours_copy.parameters())
    ours_copy(x)
    ours_copy.backward(g)
    with torch.enable_grad():
        ref_copy(x).backward(g)
    for param, ref_param in zip(ours_copy.parameters(), ref_copy.parameters(), strict=True):
        assert param.grad is not None and ref_param.grad is not None
        torch.testing.assert_close(param.grad, ref_param.grad, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------- hooks
def backward_with_hook(lib: Any, kind: str, result: Callable[[tuple[Any, ...]], Any]) -> Any:
    """dL/dx and dL/dW of a Linear with a backward hook of ``kind`` that returns
    ``result(its gradient tuple)``."""
    torch.manual_seed(0)
    layer = lib.Linear(2, 3).double()
    if kind == "pre":
        layer.register_full_backward_pre_hook(lambda m, grad_output: result(grad_output))
    else:
        layer.register_full_backward_hook(lambda m, grad_input, grad_output: result(grad_input))
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if lib is nn:
        layer(x)
        return layer.backward(g), layer.weight.grad
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        layer(leaf).backward(g)
    return leaf.grad, layer.weight.grad


@pytest.mark.parametrize("kind", ["pre", "post"])
def test_a_backward_hook_may_return_a_list_as_in_torch(kind: str) -> None:
    def doubled(grads: tuple[Tensor, ...]) -> list[Tensor]:
        return [grad * 2 for grad in grads]  # a common way to write it

    ours = backward_with_hook(nn, kind, doubled)
    ref = backward_with_hook(torch.nn, kind, doubled)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["pre", "post"])
@pytest.mark.parametrize("count", [0, 2])
def test_a_backward_hook_returning_another_number_of_gradients_raises_as_torch(
    kind: str, count: int
) -> None:
    def wrong(grads: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (grads[0],) * count

    with pytest.raises(RuntimeError, match="invalid number"):
        backward_with_hook(torch.nn, kind, wrong)
    name = "grad_output" if kind == "pre" else "grad_input"
    expected = rf"expected a backward hook to return 1 value\(s\) for {name}, got {count}"
    with pytest.raises(RuntimeError, match=expected):
        backward_with_hook(nn, kind, wrong)


@pytest.mark.parametrize(
    "result",
    [lambda args, kwargs: [args, kwargs], lambda args, kwargs: (args, kwargs, None)],
    ids=["list", "three"],
)
def test_a_forward_pre_hook_with_kwargs_must_return_a_pair_as_in_torch(
    result: Callable[[tuple[Any, ...], dict[str, Any]], Any],
) -> None:
    for lib in (torch.nn, nn):
        layer = lib.Linear(2, 3)
        layer.register_forward_pre_hook(lambda m, a, k: result(a, k), with_kwargs=True)
        with pytest.raises(RuntimeError, match="tuple"):
            layer(torch.ones(1, 2))


# -------------------------------------------------------------------- Sequential
@pytest.mark.parametrize("other", ["list", "modulelist"])
def test_sequential_plus_something_else_is_a_value_error_as_torch(other: str) -> None:
    def addend(lib: Any) -> Any:
        return lib.ModuleList([lib.ReLU()]) if other == "modulelist" else [lib.ReLU()]

    for lib in (torch.nn, nn):
        chain = lib.Sequential(lib.Linear(1, 1))
        with pytest.raises(ValueError):
            chain + addend(lib)
        with pytest.raises(ValueError):
            chain += addend(lib)
        assert len(chain) == 1


def test_dir_of_a_sequential_leaves_out_the_numbers_as_torchs() -> None:
    ours = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
    ref = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.ReLU())
    assert [n for n in dir(ours) if n.isdigit()] == [n for n in dir(ref) if n.isdigit()] == []
    assert {"append", "forward", "backward", "training"} <= set(dir(ours))


# -------------------------------------------------------------------------- init
INIT_CALLS: dict[str, tuple[tuple[int, ...], tuple[Any, ...]]] = {
    "uniform_": ((3, 4), (-0.5, 2.0)),
    "normal_": ((3, 4), (1.0, 0.3)),
    "zeros_": ((3,), ()),
    "ones_": ((3,), ()),
    "constant_": ((3, 4), (0.25,)),
    "xavier_uniform_": ((3, 4), (2.0,)),
    "xavier_normal_": ((3, 4), ()),
    "kaiming_uniform_": ((3, 4), (5**0.5,)),
    "kaiming_normal_": ((3, 4, 2), (0, "fan_out", "relu")),
    "trunc_normal_": ((50,), (0.0, 1.0, 1.5, 2.5)),
    "eye_": ((3, 4), ()),
    "dirac_": ((4, 2, 3), (2,)),
    "orthogonal_": ((3, 5), (1.5,)),
    "sparse_": ((5, 3), (0.4,)),
}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=since_torch_2_13) if n == "trunc_normal_" else n for n in INIT_CALLS],
)  # trunc_normal_'s sampler is torch 2.13's
def test_init_functions_take_a_parameter_as_torchs(name: str) -> None:
    """torch users write ``init.xavier_uniform_(layer.weight)``: a Parameter, filled in
    place, with torch's numbers (the same seed, the same draws after), and returned."""
    shape, args = INIT_CALLS[name]
    torch.manual_seed(0)
    ours = nn.Parameter(torch.full(shape, 7.0))
    returned = getattr(nn.init, name)(ours, *args)
    ours_next = torch.rand(1)
    torch.manual_seed(0)
    ref = torch.nn.Parameter(torch.full(shape, 7.0))
    ref_returned = getattr(torch.nn.init, name)(ref, *args)
    ref_next = torch.rand(1)
    assert returned is ours and ref_returned is ref
    assert torch.equal(ours.data, ref.detach())
    assert torch.equal(ours_next, ref_next)  # as many draws from the global generator


def test_a_model_initialised_as_torch_users_write_it_matches_torch() -> None:
    """``model.apply(init_weights)`` with the functions on ``m.weight`` and ``m.bias``."""

    def init_weights(module: Any) -> None:
        if isinstance(module, (nn.Linear, torch.nn.Linear)):
            lib = nn if isinstance(module, nn.Linear) else torch.nn
            lib.init.xavier_uniform_(module.weight)
            lib.init.zeros_(module.bias)

    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    torch.manual_seed(1)
    ours.apply(init_weights)
    torch.manual_seed(1)
    ref.apply(init_weights)
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key

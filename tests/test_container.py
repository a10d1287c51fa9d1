"""Sequential: the container API and the reverse-order chain rule, against torch.nn.Sequential."""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import nograd.data
import nograd.nn
import nograd.optim
import nograd.train
from nograd.nn import (
    ELU,
    NO_INPUT_GRAD,
    Dropout,
    Identity,
    LeakyReLU,
    Linear,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from tests.oracle import OpNames, assert_close, compare_module


class Scale(Module):
    """y = c x, recording the order of its calls in a shared log."""

    def __init__(self, c: float, log: list[str], name: str) -> None:
        super().__init__()
        self.c, self.log, self.name = c, log, name

    def forward(self, x: Tensor) -> Tensor:
        self.log.append(f"forward {self.name}")
        return self.c * x

    def backward(self, grad_output: Tensor) -> Tensor:
        self.log.append(f"backward {self.name}")
        return self.c * grad_output  # dL/dx = c dL/dy


def three_linears() -> Sequential:
    return Sequential(Linear(2, 3), Linear(3, 4), Linear(4, 1))


# ------------------------------------------------------------------ container
def test_indexing_positive_and_negative() -> None:
    model = three_linears()
    layers = list(model._modules.values())
    assert model[0] is layers[0]
    assert model[2] is layers[2]
    assert model[-1] is layers[2]
    assert model[-3] is layers[0]


@pytest.mark.parametrize("index", [3, -4, 100])
def test_index_out_of_range_raises_a_clear_index_error(index: int) -> None:
    with pytest.raises(IndexError, match=rf"Sequential: index {index} out of range for 3 modules"):
        three_linears()[index]


def test_slicing_returns_a_sequential_of_the_same_modules() -> None:
    model = three_linears()
    tail = model[1:]
    assert isinstance(tail, Sequential)
    assert len(tail) == 2
    assert tail[0] is model[1] and tail[1] is model[2]
    assert len(model[::2]) == 2 and model[::2][1] is model[2]
    assert len(model[5:]) == 0
    x = torch.randn(4, 3)
    assert torch.equal(tail(x), model[2](model[1](x)))


def test_slice_keeps_child_names_as_torch() -> None:
    model = three_linears()
    ref = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    assert list(model[1:].state_dict()) == list(ref[1:].state_dict())


def test_len_and_iteration_follow_insertion_order() -> None:
    a, b = Linear(2, 2), Linear(2, 2)
    model = Sequential(a, b)
    assert len(model) == 2
    assert list(model) == [a, b]
    assert len(Sequential()) == 0
    assert [name for name, _ in model.named_children()] == ["0", "1"]


def test_append_names_the_next_child_and_returns_self() -> None:
    model = Sequential(Linear(2, 3))
    assert model.append(Linear(3, 1)) is model
    assert len(model) == 2
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


@pytest.mark.parametrize("bad", [torch.nn.Linear(2, 2), lambda x: x, 3])
def test_append_and_constructor_reject_non_modules(bad: object) -> None:
    with pytest.raises(TypeError, match=r"Sequential: expected a Module, got \w+"):
        Sequential(Linear(2, 2)).append(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Sequential: expected a Module"):
        Sequential(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the oracle
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    batch=st.integers(1, 8),
    bias=st.booleans(),
)
def test_linear_stack_matches_torch_sequential(
    dtype: torch.dtype, widths: list[int], batch: int, bias: bool
) -> None:
    pairs = list(itertools.pairwise(widths))
    ours = Sequential(*[Linear(i, o, bias=bias, dtype=dtype) for i, o in pairs])
    ref = torch.nn.Sequential(*[torch.nn.Linear(i, o, bias=bias, dtype=dtype) for i, o in pairs])
    compare_module(ours, ref, torch.randn(batch, widths[0], dtype=dtype))


def test_empty_sequential_is_the_identity() -> None:
    x = torch.randn(3, 2)
    model = Sequential()
    assert torch.equal(model(x), x)
    assert torch.equal(model.backward(x), x)


# ---------------------------------------------------------- needs_input_grad
def test_needs_input_grad_false_reaches_the_first_child_only() -> None:
    model = three_linears()
    assert model.needs_input_grad
    model.needs_input_grad = False
    assert not model.needs_input_grad
    assert not model[0].needs_input_grad
    assert model[1].needs_input_grad and model[2].needs_input_grad
    Sequential().needs_input_grad = False  # nothing to tell, and no error


def test_needs_input_grad_false_keeps_parameter_gradients() -> None:
    full = three_linears().to(torch.float64)
    skipping = three_linears().to(torch.float64)
    skipping.load_state_dict(full.state_dict())
    skipping.needs_input_grad = False
    x = torch.randn(5, 2, dtype=torch.float64)
    g = torch.randn(5, 1, dtype=torch.float64)
    full(x)
    skipping(x)
    assert full.backward(g).shape == x.shape
    assert skipping.backward(g) is NO_INPUT_GRAD
    pairs = zip(full.named_parameters(), skipping.named_parameters(), strict=True)
    for (name, p_full), (_, p_skip) in pairs:
        assert p_full.grad is not None and p_skip.grad is not None, name
        assert torch.equal(p_full.grad, p_skip.grad), name


# -------------------------------------------------------------- chain rule
def test_backward_runs_the_children_in_reverse_order() -> None:
    log: list[str] = []
    model = Sequential(Scale(2.0, log, "a"), Scale(3.0, log, "b"), Scale(-1.0, log, "c"))
    x = torch.randn(4)
    assert_close(model(x), -6.0 * x)
    g = torch.randn(4)
    assert_close(model.backward(g), -6.0 * g)  # dL/dx = 2 * 3 * (-1) * g
    assert log == [
        "forward a",
        "forward b",
        "forward c",
        "backward c",
        "backward b",
        "backward a",
    ]


def test_chain_rule_through_a_custom_module_and_a_linear() -> None:
    log: list[str] = []
    layer = Linear(3, 2, dtype=torch.float64)
    model = Sequential(Scale(2.0, log, "in"), layer, Scale(2.0, log, "out"))
    ref = torch.nn.Linear(3, 2, dtype=torch.float64)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(4, 3, dtype=torch.float64)
    g = torch.randn(4, 2, dtype=torch.float64)
    x_ref = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = 2.0 * ref(2.0 * x_ref)
        y_ref.backward(g)
    assert_close(model(x), y_ref.detach())
    assert x_ref.grad is not None and ref.weight.grad is not None and ref.bias.grad is not None
    assert_close(model.backward(g), x_ref.grad)
    assert layer.weight.grad is not None and layer.bias is not None
    assert_close(layer.weight.grad, ref.weight.grad)
    assert layer.bias.grad is not None
    assert_close(layer.bias.grad, ref.bias.grad)


# ------------------------------------------------ Linear then ReLU, fused in the forward
class PlainLinear(Linear):
    """A subclass, which Sequential never fuses: the unfused twin of a model."""


def mlp(linear: type[Linear], dtype: torch.dtype) -> Sequential:
    torch.manual_seed(0)
    return Sequential(
        linear(3, 5, dtype=dtype), ReLU(), linear(5, 4, dtype=dtype), ReLU(inplace=True),
        linear(4, 2, dtype=dtype),
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_then_relu_runs_as_one_op_with_the_same_bits(dtype: torch.dtype) -> None:
    fused, plain = mlp(Linear, dtype), mlp(PlainLinear, dtype)
    x = torch.randn(7, 3, dtype=dtype)
    with OpNames() as ops:
        y = fused(x)
    assert ops.names == ["_addmm_activation", "_addmm_activation", "addmm"]
    assert torch.equal(y, plain(x))
    grad_output = torch.randn(7, 2, dtype=dtype)
    assert torch.equal(fused.backward(grad_output), plain.backward(grad_output))
    for ours, theirs in zip(fused.parameters(), plain.parameters(), strict=True):
        assert ours.grad is not None and theirs.grad is not None
        assert torch.equal(ours.grad, theirs.grad)


def test_fused_model_matches_torch() -> None:
    model = mlp(Linear, torch.float64)
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4), torch.nn.ReLU(),
        torch.nn.Linear(4, 2),
    ).double()  # fmt: skip
    compare_module(model, ref, torch.randn(6, 3, dtype=torch.float64))


def test_a_new_child_is_used_at_once() -> None:
    first, last = Linear(2, 3), Linear(3, 1)
    model = Sequential(first, ReLU())
    x = torch.randn(4, 2)
    model(x)  # the first forward plans the steps
    model.append(last)
    assert model(x).shape == (4, 1)
    setattr(model, "1", Tanh())  # the ReLU replaced: Linear then Tanh, nothing fused
    with OpNames() as ops:
        y = model(x)
    assert "tanh" in ops.names and "_addmm_activation" not in ops.names
    assert_close(y, last(torch.tanh(first(x))))


@pytest.mark.parametrize(
    ("first", "x"),
    [
        (Linear(3, 4, bias=False), torch.randn(5, 3)),  # no bias: nothing to fuse with
        (Linear(3, 4), torch.randn(2, 5, 3)),  # not a matrix: Linear takes (*, in)
    ],
)
def test_the_two_forwards_run_where_the_fused_op_cannot(first: Linear, x: Tensor) -> None:
    model = Sequential(first, ReLU())
    ref = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=first.bias is not None), torch.nn.ReLU())
    compare_module(model, ref, x)


def test_a_wrong_input_still_gets_the_linear_error() -> None:
    model = Sequential(Linear(3, 4), ReLU())
    with pytest.raises(TypeError, match=r"expected input of dtype torch.float32"):
        model(torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3\), got \(5, 2\)"):
        model(torch.randn(5, 2))


def test_a_copy_runs_its_own_modules() -> None:
    model = Sequential(Linear(2, 3), ReLU(), Linear(3, 1))
    x = torch.randn(4, 2)
    y = model(x)
    twin = copy.deepcopy(model)
    for param in twin.parameters():
        param.data.zero_()
    assert torch.equal(model(x), y)  # the original's plan still runs the original
    assert not torch.equal(twin(x), y)


# ------------------------------------------------- a module used twice, in-place modules
def shared_tanh_pair() -> tuple[Sequential, torch.nn.Sequential]:
    act, ref_act = Tanh(), torch.nn.Tanh()
    ours = Sequential(Linear(2, 4), act, Linear(4, 3), act)
    ref = torch.nn.Sequential(torch.nn.Linear(2, 4), ref_act, torch.nn.Linear(4, 3), ref_act)
    return ours, ref


def test_an_activation_used_twice_gets_each_use_its_own_derivative() -> None:
    ours, ref = shared_tanh_pair()
    compare_module(ours.double(), ref.double(), torch.randn(5, 2, dtype=torch.float64))


def test_a_linear_used_twice_receives_both_contributions() -> None:
    linear, ref_linear = Linear(3, 3), torch.nn.Linear(3, 3)
    ours = Sequential(linear, Tanh(), linear)
    ref = torch.nn.Sequential(ref_linear, torch.nn.Tanh(), ref_linear)
    compare_module(ours.double(), ref.double(), torch.randn(4, 3, dtype=torch.float64))


def test_a_block_used_twice_inside_a_chain() -> None:
    block = Sequential(Linear(3, 3), Tanh())
    ref_block = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh())
    ours, ref = (
        Sequential(block, ReLU(), block),
        torch.nn.Sequential(ref_block, torch.nn.ReLU(), ref_block),
    )
    compare_module(ours.double(), ref.double(), torch.randn(4, 3, dtype=torch.float64))


def test_putting_a_use_back_keeps_an_inner_chains_plan() -> None:
    block = Sequential(Linear(3, 3), Tanh())
    model = Sequential(block, ReLU(), block)
    y = model(torch.randn(4, 3))
    plan = block._plan
    model.backward(torch.ones_like(y))
    assert plan is not None and block._plan is plan  # not planned again at every step


def test_a_shared_first_module_still_passes_its_input_gradient_on() -> None:
    linear, ref_linear = Linear(3, 3), torch.nn.Linear(3, 3)
    ours = Sequential(linear, Tanh(), linear).double()
    ref = torch.nn.Sequential(ref_linear, torch.nn.Tanh(), ref_linear).double()
    ref.load_state_dict(ours.state_dict())
    ours.needs_input_grad = False  # what fit asks: the first use may skip it, the second not
    x, g = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    with torch.enable_grad():
        ref(x).backward(g)
    ours(x)
    ours.backward(g)
    assert linear.weight.grad is not None and ref_linear.weight.grad is not None
    assert_close(linear.weight.grad, ref_linear.weight.grad)


@pytest.mark.parametrize(
    ("saver", "ref_saver", "inplace", "ref_inplace"),
    [
        (
            Tanh(),
            torch.nn.Tanh(),
            LeakyReLU(0.1, inplace=True),
            torch.nn.LeakyReLU(0.1, inplace=True),
        ),
        (
            Sigmoid(),
            torch.nn.Sigmoid(),
            Dropout(0.5, inplace=True),
            torch.nn.Dropout(0.5, inplace=True),
        ),
        (Tanh(), torch.nn.Tanh(), ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
    ],
    ids=["tanh-leaky_relu_", "sigmoid-dropout_", "tanh-relu_"],
)
def test_an_inplace_module_that_overwrites_a_saved_tensor_raises_as_torch(
    saver: Module, ref_saver: torch.nn.Module, inplace: Module, ref_inplace: torch.nn.Module
) -> None:
    ours = Sequential(Linear(2, 3), saver, inplace)
    ref = torch.nn.Sequential(torch.nn.Linear(2, 3), ref_saver, ref_inplace)
    x = torch.randn(4, 2)
    with torch.enable_grad(), pytest.raises(RuntimeError, match="modified by an inplace"):
        ref(x.requires_grad_()).sum().backward()
    y = ours(x.detach())
    with pytest.raises(RuntimeError, match="modified in place after its forward"):
        ours.backward(torch.ones_like(y))


@pytest.mark.parametrize(
    ("inplace", "ref_inplace"),
    [
        (ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
        (LeakyReLU(0.1, inplace=True), torch.nn.LeakyReLU(0.1, inplace=True)),
        (ELU(inplace=True), torch.nn.ELU(inplace=True)),
    ],
    ids=["relu_", "leaky_relu_", "elu_"],
)
def test_an_inplace_module_after_a_linear_matches_torch(
    inplace: Module, ref_inplace: torch.nn.Module
) -> None:
    ours = Sequential(Linear(2, 4), inplace, Linear(4, 3), Tanh())
    ref = torch.nn.Sequential(
        torch.nn.Linear(2, 4), ref_inplace, torch.nn.Linear(4, 3), torch.nn.Tanh()
    )
    compare_module(ours.double(), ref.double(), torch.randn(5, 2, dtype=torch.float64))


class _DoubleInPlace(Module):
    """A user's module that overwrites its input, y = 2 x, without torch's inplace flag."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(2)

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output * 2  # dL/dx = 2 dL/dy

    def overwrites_input(self) -> bool:
        return True


def test_a_users_module_that_overwrites_a_saved_tensor_raises_too() -> None:
    """``overwrites_input()`` is the contract, not an attribute named ``inplace``: Tanh's
    saved y, doubled in place, would give a wrong dL/dx without a word."""
    model = Sequential(Tanh(), _DoubleInPlace())
    y = model(torch.randn(4))
    with pytest.raises(RuntimeError, match="modified in place after its forward"):
        model.backward(torch.ones_like(y))
    after_a_linear = Sequential(Linear(2, 3), _DoubleInPlace(), Tanh())  # Linear saves x only
    x = torch.randn(4, 2, dtype=torch.float64)
    after_a_linear.double()
    out = after_a_linear(x)
    after_a_linear.backward(torch.ones_like(out))  # nothing it needs was overwritten


def test_a_chain_of_distinct_modules_records_nothing() -> None:
    model = Sequential(Linear(2, 3), ReLU(), Linear(3, 1))
    model(torch.randn(4, 2))
    assert "uses" not in model.saved
    ours, _ = shared_tanh_pair()
    ours(torch.randn(4, 2))
    assert len(ours.saved["uses"]) == 4


@pytest.mark.parametrize(
    ("between", "ref_between"),
    [(Identity(), torch.nn.Identity()), (LeakyReLU(0.1), torch.nn.LeakyReLU(0.1))],
    ids=["identity", "leaky_relu"],
)
def test_an_inplace_module_after_one_that_keeps_no_output_matches_torch(
    between: Module, ref_between: torch.nn.Module
) -> None:
    # Identity and a LeakyReLU out of place keep nothing of their output (torch neither),
    # so a Dropout overwriting it is not an error
    torch.manual_seed(0)
    ours = Sequential(Linear(2, 4), between, Dropout(0.5, inplace=True), Linear(4, 3))
    ref = torch.nn.Sequential(
        torch.nn.Linear(2, 4),
        ref_between,
        torch.nn.Dropout(0.5, inplace=True),
        torch.nn.Linear(4, 3),
    )
    ref.load_state_dict(ours.state_dict())
    x, g = torch.randn(5, 2), torch.randn(5, 3)
    leaf = x.clone().requires_grad_()
    torch.manual_seed(1)
    with torch.enable_grad():
        y_ref = ref(leaf)
        y_ref.backward(g)
    torch.manual_seed(1)
    assert torch.equal(ours(x), y_ref.detach())
    assert torch.equal(ours.backward(g), leaf.grad)


# ------------------------------------------------- editing a chain, as torch.nn.Sequential
def twin_chains() -> tuple[Sequential, torch.nn.Sequential]:
    ours = Sequential(Linear(2, 3), Tanh(), Linear(3, 4), ReLU(), Linear(4, 1))
    ref = torch.nn.Sequential(
        torch.nn.Linear(2, 3),
        torch.nn.Tanh(),
        torch.nn.Linear(3, 4),
        torch.nn.ReLU(),
        torch.nn.Linear(4, 1),
    )
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def kinds(model: Module | torch.nn.Module) -> list[tuple[str, str]]:
    """Each child's name and class, to compare a nograd chain with its torch twin."""
    return [(name, type(child).__name__) for name, child in model.named_children()]


EDITS = {
    "del 1": lambda m, make: m.__delitem__(1),
    "del -1": lambda m, make: m.__delitem__(-1),
    "del 1:3": lambda m, make: m.__delitem__(slice(1, 3)),
    "del ::2": lambda m, make: m.__delitem__(slice(None, None, 2)),
    "set 1": lambda m, make: m.__setitem__(1, make("ReLU")),
    "set -2": lambda m, make: m.__setitem__(-2, make("Tanh")),
    "insert 0": lambda m, make: m.insert(0, make("Tanh")),
    "insert 2": lambda m, make: m.insert(2, make("Tanh")),
    "insert -1": lambda m, make: m.insert(-1, make("Tanh")),
    "insert len": lambda m, make: m.insert(len(m), make("Tanh")),
    "extend": lambda m, make: m.extend([make("Tanh"), make("ReLU")]),
    "pop 1": lambda m, make: m.pop(1),
    "iadd": lambda m, make: m.__iadd__(type(m)(make("Tanh"))),
    "imul": lambda m, make: m.__imul__(2),
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edit_names_the_children_as_torch(edit: str) -> None:
    ours, ref = twin_chains()
    EDITS[edit](ours, lambda name: getattr(nograd.nn, name)())
    EDITS[edit](ref, lambda name: getattr(torch.nn, name)())
    assert kinds(ours) == kinds(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("edit", ["del 1", "set 1", "insert 2", "pop 1", "iadd"])
def test_an_edited_chain_computes_as_its_torch_twin(edit: str) -> None:
    ours, ref = twin_chains()
    EDITS[edit](ours, lambda name: getattr(nograd.nn, name)())
    EDITS[edit](ref, lambda name: getattr(torch.nn, name)())
    compare_module(ours.double(), ref.double(), torch.randn(5, 2, dtype=torch.float64))


def test_a_repeated_chain_shares_its_modules_and_computes_as_torch() -> None:
    ours = Sequential(Linear(2, 2), Tanh())
    ref = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
    ours *= 3
    ref *= 3
    assert list(ours.state_dict()) == list(ref.state_dict())
    compare_module(ours.double(), ref.double(), torch.randn(5, 2, dtype=torch.float64))


def test_sequential_of_an_ordered_dict_keeps_the_names() -> None:
    ours = Sequential(
        OrderedDict([("hidden", Linear(2, 3)), ("act", Tanh()), ("out", Linear(3, 1))])
    )
    ref = torch.nn.Sequential(
        OrderedDict(
            [
                ("hidden", torch.nn.Linear(2, 3)),
                ("act", torch.nn.Tanh()),
                ("out", torch.nn.Linear(3, 1)),
            ]
        )
    )
    assert kinds(ours) == kinds(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    compare_module(ours.double(), ref.double(), torch.randn(4, 2, dtype=torch.float64))


def test_add_and_mul_make_new_chains_of_the_same_modules() -> None:
    a, b = Sequential(Linear(2, 2), Tanh()), Sequential(Linear(2, 2))
    joined = a + b
    assert list(joined) == [*a, *b] and len(a) == 2
    twice = a * 2
    assert list(twice) == [*a, *a] and list(2 * a) == list(twice)
    with pytest.raises(ValueError, match="positive number of repeats"):
        a * 0


@pytest.mark.parametrize("make_index", [np.int64, torch.tensor], ids=["numpy", "tensor"])
def test_an_index_that_torch_reads_as_an_int_is_one(make_index: Callable[[int], Any]) -> None:
    ours = three_linears()
    ref = torch.nn.Sequential(*(torch.nn.Linear(1, 1) for _ in range(3)))
    for position in [1, -1]:
        assert ours[make_index(position)] is list(ours)[position]
        assert ref[make_index(position)] is list(ref)[position]
    del ours[make_index(0)]
    assert len(ours) == 2 and ours[0].in_features == 3


@pytest.mark.parametrize("index", ["0", 1.0, True])
def test_an_index_of_another_type_is_a_clear_type_error(index: object) -> None:
    with pytest.raises(TypeError, match="expected an int or a slice as index"):
        three_linears()[index]  # type: ignore[index]


# ------------------------------------ the same books under torch.inference_mode(), as fit runs
def test_a_shared_activation_under_inference_mode_matches_torch() -> None:
    ours, ref = shared_tanh_pair()
    ours, ref = ours.double(), ref.double()
    ref.load_state_dict(ours.state_dict())
    x, g = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        ref(leaf).backward(g)
    with torch.inference_mode():  # tensors without version counters
        ours(x)
        grad_x = ours.backward(g)
    assert_close(grad_x, leaf.grad)  # type: ignore[arg-type]
    for (name, param), ref_param in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert param.grad is not None and ref_param.grad is not None, name
        assert_close(param.grad, ref_param.grad)


def test_an_inplace_overwrite_under_inference_mode_still_raises() -> None:
    model = Sequential(Linear(2, 3), Tanh(), LeakyReLU(0.1, inplace=True))
    with torch.inference_mode():
        y = model(torch.randn(4, 2))
        with pytest.raises(
            RuntimeError, match=r"LeakyReLU\(.*inplace=True\) overwrote a tensor Tanh"
        ):
            model.backward(torch.ones_like(y))


def test_fit_trains_a_chain_with_inplace_and_shared_modules_as_without() -> None:
    def make(inplace: bool) -> Sequential:
        torch.manual_seed(0)
        act = Tanh()
        return Sequential(
            Linear(2, 8), ReLU(inplace), Linear(8, 8), act, Linear(8, 8), act, Linear(8, 2)
        )

    data = nograd.data.disk(64, generator=torch.Generator().manual_seed(1))
    results = []
    for inplace in (False, True):
        model = make(inplace)
        optimizer = nograd.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = nograd.nn.CrossEntropyLoss()
        nograd.train.fit(
            model, loss_fn, optimizer, data, epochs=2, batch_size=16, shuffle=False, progress=False
        )
        results.append(model.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


def test_an_inner_chain_that_overwrites_its_input_raises_as_torch() -> None:
    ours = Sequential(Linear(2, 3), Tanh(), Sequential(LeakyReLU(0.1, inplace=True), Linear(3, 1)))
    ref = torch.nn.Sequential(
        torch.nn.Linear(2, 3),
        torch.nn.Tanh(),
        torch.nn.Sequential(torch.nn.LeakyReLU(0.1, inplace=True), torch.nn.Linear(3, 1)),
    )
    x = torch.randn(4, 2)
    with torch.enable_grad(), pytest.raises(RuntimeError, match="modified by an inplace"):
        ref(x.requires_grad_()).sum().backward()
    y = ours(x.detach())
    with pytest.raises(RuntimeError, match="overwrote a tensor Tanh"):
        ours.backward(torch.ones_like(y))


def test_a_relu_inplace_fused_with_its_linear_keeps_no_books() -> None:
    model = Sequential(Linear(2, 3), ReLU(inplace=True), Linear(3, 1))
    model(torch.randn(4, 2))
    assert "uses" not in model.saved

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nograd.gradcheck import gradcheck
from nograd.nn.activations import ReLU, Tanh
from nograd.nn.container import Sequential
from nograd.nn.flatten import Flatten, Unflatten
from nograd.nn.linear import Linear
from nograd.nn.module import Module
from tests.oracle import SEEDS

DTYPES = [torch.float64, torch.float32]
SHAPES = st.lists(st.integers(1, 5), min_size=1, max_size=4)  # size-1 dims included


def run_both(
    ours: Module, ref: torch.nn.Module, x: torch.Tensor, g: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our output and dL/dx, then torch's, for the upstream gradient g (random if None)."""
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(leaf)
        g = torch.randn_like(y_ref) if g is None else g
        y_ref.backward(g)
    assert leaf.grad is not None
    y = ours(x)
    return y, ours.backward(g), y_ref.detach(), leaf.grad


def dims_of(draw: Any, rank: int) -> int:
    """A dim of a tensor of ``rank`` dims, negative or not."""
    return int(draw(st.integers(-max(rank, 1), max(rank, 1) - 1)))


# ------------------------------------------------------------------- Flatten
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=SHAPES, seed=SEEDS, data=st.data())
def test_flatten_matches_torch_for_any_dims(
    dtype: torch.dtype, shape: list[int], seed: int, data: st.DataObject
) -> None:
    torch.manual_seed(seed)
    start, end = sorted(data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=2, max_size=2)))
    # the same dims, some written from the end
    start -= len(shape) * data.draw(st.integers(0, 1))
    end -= len(shape) * data.draw(st.integers(0, 1))
    x = torch.randn(shape, dtype=dtype)
    y, grad_input, y_ref, grad_ref = run_both(Flatten(start, end), torch.nn.Flatten(start, end), x)
    assert y.shape == y_ref.shape and torch.equal(y, y_ref)
    assert grad_input.shape == x.shape and torch.equal(grad_input, grad_ref)


def test_flatten_keeps_the_batch_dim_by_default() -> None:
    x = torch.randn(4, 3, 2, 5)
    assert Flatten()(x).shape == (4, 30)
    assert Flatten(0, 2)(x).shape == (24, 5)
    assert Flatten(-2)(x).shape == (4, 3, 10)


@pytest.mark.parametrize("start_end", [(1, -1), (0, 1), (1, 1), (0, -1)])
@pytest.mark.parametrize("transposed", [False, True])
def test_flatten_is_a_view_exactly_where_torchs_is(
    start_end: tuple[int, int], transposed: bool
) -> None:
    x = torch.randn(3, 4, 5)
    x = x.transpose(0, 2) if transposed else x
    y, y_ref = Flatten(*start_end)(x), torch.nn.Flatten(*start_end)(x)
    shares = y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    shares_ref = y_ref.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    assert shares == shares_ref
    assert y.stride() == y_ref.stride()
    assert shares or transposed  # a contiguous input is never copied


def test_flatten_of_a_number_gives_one_element_as_torch() -> None:
    x = torch.tensor(2.5, dtype=torch.float64)
    y, grad_input, y_ref, grad_ref = run_both(Flatten(0), torch.nn.Flatten(0), x)
    assert y.shape == (1,) and torch.equal(y, y_ref)
    assert grad_input.shape == () and torch.equal(grad_input, grad_ref)


@pytest.mark.parametrize(
    ("start_end", "shape", "problem"),
    [
        ((5, 6), (2, 3, 4), "expected start_dim and end_dim in [-3, 2]"),
        ((0, -4), (2, 3, 4), "expected start_dim and end_dim in [-3, 2]"),
        ((1, -1), (), "expected start_dim and end_dim in [-1, 0]"),
        ((1, -1), (5,), "expected start_dim and end_dim in [-1, 0]"),
        ((2, 1), (2, 3, 4), "start_dim comes after end_dim"),
        ((-1, 0), (2, 3), "start_dim comes after end_dim"),
    ],
)
def test_flatten_refuses_what_torch_refuses_naming_itself(
    start_end: tuple[int, int], shape: tuple[int, ...], problem: str
) -> None:
    x = torch.randn(shape)
    with pytest.raises((IndexError, RuntimeError)):
        torch.nn.Flatten(*start_end)(x)
    start, end = start_end
    message = f"Flatten(start_dim={start}, end_dim={end}): {problem} for input of shape {shape}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        Flatten(*start_end)(x)


# ----------------------------------------------------------------- Unflatten
@st.composite
def splits(draw: Any) -> tuple[list[int], int, list[int]]:
    """A shape, a dim of it and sizes whose product is that dim's size (one maybe -1)."""
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    shape = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    position = draw(st.integers(0, len(shape)))
    shape.insert(position, math.prod(sizes))
    dim = position - len(shape) * draw(st.integers(0, 1))  # from the end, sometimes
    if draw(st.booleans()):
        sizes[draw(st.integers(0, len(sizes) - 1))] = -1
    return shape, dim, sizes


@pytest.mark.parametrize("dtype", DTYPES)
@given(split=splits(), seed=SEEDS, container=st.sampled_from([tuple, list, torch.Size]))
def test_unflatten_matches_torch(
    dtype: torch.dtype, split: tuple[list[int], int, list[int]], seed: int, container: Any
) -> None:
    torch.manual_seed(seed)
    shape, dim, sizes = split
    x = torch.randn(shape, dtype=dtype)
    ours, ref = Unflatten(dim, container(sizes)), torch.nn.Unflatten(dim, container(sizes))
    y, grad_input, y_ref, grad_ref = run_both(ours, ref, x)
    assert y.shape == y_ref.shape and torch.equal(y, y_ref)
    assert grad_input.shape == x.shape and torch.equal(grad_input, grad_ref)
    assert y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()  # a view


def test_unflatten_undoes_flatten_and_back() -> None:
    x = torch.randn(2, 784)
    image = Unflatten(1, (1, 28, 28))(x)
    assert image.shape == (2, 1, 28, 28)
    assert torch.equal(Flatten()(image), x)


PRODUCT = "expected non-empty sizes whose product is {}, the size of dim {} (one of them may be "
PRODUCT += "-1, inferred from the others) for input of shape {}"


@pytest.mark.parametrize(
    ("dim", "sizes", "shape", "problem"),
    [
        (2, (2, 3), (2, 6), "expected dim in [-2, 1] for input of shape (2, 6)"),
        (-3, (2, 3), (2, 6), "expected dim in [-2, 1] for input of shape (2, 6)"),
        (0, (1,), (), "expected an input of at least 1 dimension"),
        (1, (4,), (2, 6), PRODUCT.format(6, 1, (2, 6))),
        (-1, (4, 2), (2, 6), PRODUCT.format(6, -1, (2, 6))),
        (1, (-1, -1), (2, 6), PRODUCT.format(6, 1, (2, 6))),
        (1, (-2, -3), (2, 6), PRODUCT.format(6, 1, (2, 6))),
        (1, (), (2, 6), PRODUCT.format(6, 1, (2, 6))),
        (1, (), (2, 1), PRODUCT.format(1, 1, (2, 1))),
        (1, (0, -1), (2, 0), PRODUCT.format(0, 1, (2, 0))),  # -1 could be anything
    ],
)
def test_unflatten_refuses_what_torch_refuses_naming_itself(
    dim: int, sizes: tuple[int, ...], shape: tuple[int, ...], problem: str
) -> None:
    x = torch.randn(shape)
    with pytest.raises((IndexError, RuntimeError)):
        torch.nn.Unflatten(dim, sizes)(x)
    message = f"Unflatten(dim={dim}, unflattened_size={sizes}): {problem}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        Unflatten(dim, sizes)(x)


@pytest.mark.parametrize(
    ("sizes", "what"),
    [
        ("ab", "got str"),
        (5, "got int"),
        (None, "got NoneType"),
        ((2.0, 3), "got float at position 0"),
        ([2, "3"], "got str at position 1"),
        ((2, torch.tensor(3)), "got Tensor at position 1"),
    ],
)
def test_unflatten_refuses_sizes_that_are_not_ints_as_torch(sizes: Any, what: str) -> None:
    with pytest.raises(TypeError):
        torch.nn.Unflatten(1, sizes)
    expected = f"Unflatten: expected unflattened_size to be a tuple or list of ints, {what}"
    with pytest.raises(TypeError, match="^" + re.escape(expected) + "$"):
        Unflatten(1, sizes)


def test_unflatten_takes_bools_as_ints_as_torch() -> None:
    assert repr(Unflatten(1, (True, 3))) == repr(torch.nn.Unflatten(1, (True, 3)))


# ---------------------------------------------------------------- both of them
PAIRS = {
    "Flatten": lambda: (Flatten(), torch.nn.Flatten()),
    "Flatten-0-1": lambda: (Flatten(0, 1), torch.nn.Flatten(0, 1)),
    "Unflatten": lambda: (Unflatten(1, (2, 3)), torch.nn.Unflatten(1, (2, 3))),
    "Unflatten-list": lambda: (Unflatten(-1, [3, -1]), torch.nn.Unflatten(-1, [3, -1])),
    "Unflatten-Size": lambda: (
        Unflatten(0, torch.Size([1, 4])),
        torch.nn.Unflatten(0, torch.Size([1, 4])),
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_repr_matches_torch(name: str) -> None:
    ours, ref = PAIRS[name]()
    assert repr(ours) == repr(ref)


def test_hyperparameters_keep_torch_attribute_names() -> None:
    flatten, unflatten = Flatten(2, 3), Unflatten(1, [2, 3])
    assert (flatten.start_dim, flatten.end_dim) == (2, 3)
    assert (unflatten.dim, unflatten.unflattened_size) == (1, [2, 3])


@pytest.mark.parametrize("name", list(PAIRS))
def test_backward_before_forward_names_the_module(name: str) -> None:
    ours, _ = PAIRS[name]()
    prefix = re.escape(f"{type(ours).__name__}({ours.extra_repr()})")
    with pytest.raises(RuntimeError, match=prefix + r": backward\(\) called before forward\(\)"):
        ours.backward(torch.ones(4, 6))


@pytest.mark.parametrize("name", list(PAIRS))
def test_grad_output_of_wrong_shape(name: str) -> None:
    ours, _ = PAIRS[name]()
    y = ours(torch.randn(4, 6))
    wrong = torch.randn(1, y.numel())  # the right size, not the right shape
    shape = re.escape(str(tuple(y.shape)))
    with pytest.raises(ValueError, match=rf"grad_output of shape {shape}, got \(1, {y.numel()}\)"):
        ours.backward(wrong)


@pytest.mark.parametrize("name", list(PAIRS))
def test_backward_agrees_with_finite_differences(name: str) -> None:
    ours, _ = PAIRS[name]()
    assert gradcheck(ours, torch.randn(4, 6, dtype=torch.float64)).ok


def test_a_network_around_flatten_and_unflatten_matches_torch() -> None:
    torch.manual_seed(0)
    ours = Sequential(Linear(6, 12), Unflatten(1, (3, 4)), Tanh(), Flatten(), Linear(12, 2))
    ref = torch.nn.Sequential(
        torch.nn.Linear(6, 12),
        torch.nn.Unflatten(1, (3, 4)),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(12, 2),
    )
    ref.load_state_dict(ours.state_dict())
    ours.double(), ref.double()
    x = torch.randn(5, 6, dtype=torch.float64)
    y, grad_input, y_ref, grad_ref = run_both(ours, ref, x)
    assert torch.equal(y, y_ref) and torch.equal(grad_input, grad_ref)
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert param.grad is not None and torch.equal(param.grad, ref_params[name].grad)


def test_an_inplace_module_after_flatten_overwrites_what_it_views_as_torch_says() -> None:
    """Flatten's output is a view of Tanh's saved y; an in-place ReLU overwrites both."""
    ref = torch.nn.Sequential(
        torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Unflatten(1, (2, 3)), torch.nn.Flatten()
    )
    ref.append(torch.nn.ReLU(inplace=True))
    with torch.enable_grad(), pytest.raises(RuntimeError, match="modified by an inplace"):
        ref(torch.randn(4, 2).requires_grad_()).sum().backward()
    ours = Sequential(Linear(2, 6), Tanh(), Unflatten(1, (2, 3)), Flatten(), ReLU(inplace=True))
    y = ours(torch.randn(4, 2))
    with pytest.raises(RuntimeError, match=r"ReLU\(inplace=True\) overwrote a tensor Tanh"):
        ours.backward(torch.ones_like(y))

"""LogSoftmax, against torch.nn.LogSoftmax.

Forward and backward are torch's (torch.log_softmax and the kernel of its backward),
so outputs and gradients must be torch's very bits (same_bits) in every dtype and
layout; dim=None must pick torch's implicit dim, with torch's warning.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nograd.gradcheck import gradcheck
from nograd.nn.activations import Softmax
from nograd.nn.log_softmax import LogSoftmax
from nograd.nn.module import Module
from tests.oracle import (
    SEEDS,
    SHAPES,
    Pair,
    assert_close,
    assert_module_bits,
    check_backward_before_forward,
    check_finite_at_1000,
    check_grad_output_shape,
    check_implicit_dim,
    check_kinks,
    check_missing_dim_refused,
    check_no_warning_with_a_dim,
    compare_module,
)

DTYPES = [torch.float64, torch.float32]

# LogSoftmax along two dims, and the torch.nn twin of each.
ALL: dict[str, Pair] = {
    "LogSoftmax-last": lambda: (LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
    "LogSoftmax-0": lambda: (LogSoftmax(0), torch.nn.LogSoftmax(dim=0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=SHAPES, seed=SEEDS, dim_index=st.integers(0, 5))
def test_log_softmax_matches_torch_over_every_dim(
    dtype: torch.dtype, shape: list[int], seed: int, dim_index: int
) -> None:
    torch.manual_seed(seed)
    dim = dim_index % (2 * len(shape)) - len(shape)  # negative and non-negative dims
    compare_module(LogSoftmax(dim), torch.nn.LogSoftmax(dim=dim), torch.randn(shape, dtype=dtype))
    out = torch.exp(LogSoftmax(dim)(torch.randn(shape, dtype=dtype)))  # the probabilities
    assert_close(out.sum(dim), torch.ones_like(out.sum(dim)))


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 5), (1, 2, 3, 2, 2)])
def test_log_softmax_without_dim_picks_torchs_implicit_dim_and_warns_as_torch(
    shape: tuple[int, ...],
) -> None:
    """dim=None: dim 0 for 0, 1 or 3 dimensions, else dim 1, with torch's UserWarning."""
    assert LogSoftmax().dim is None and torch.nn.LogSoftmax().dim is None
    check_implicit_dim(LogSoftmax(), torch.nn.LogSoftmax(), shape)


def test_log_softmax_warns_with_torchs_name_for_it() -> None:
    with pytest.warns(UserWarning, match=r"^Implicit dimension choice for log_softmax has"):
        LogSoftmax()(torch.randn(2, 3))
    with pytest.warns(UserWarning, match=r"^Implicit dimension choice for softmax has"):
        Softmax()(torch.randn(2, 3))


def test_log_softmax_with_a_dim_does_not_warn() -> None:
    check_no_warning_with_a_dim(LogSoftmax(dim=0))


@pytest.mark.parametrize(("dim", "shape", "dims"), [(2, (2, 3), "[-2, 1]"), (-2, (4,), "[-1, 0]")])
def test_a_dim_the_input_lacks_is_refused_naming_the_module(
    dim: int, shape: tuple[int, ...], dims: str
) -> None:
    check_missing_dim_refused(LogSoftmax(dim), torch.nn.LogSoftmax(dim=dim), shape, dims)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ALL))
def test_kinks_match_torch(name: str, dtype: torch.dtype) -> None:
    check_kinks(*ALL[name](), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["LogSoftmax-last", "LogSoftmax-0"])
def test_inputs_of_1000_stay_finite_and_match_torch(name: str, dtype: torch.dtype) -> None:
    check_finite_at_1000(*ALL[name](), dtype)


@pytest.mark.parametrize("name", list(ALL))
def test_backward_before_forward_names_the_module(name: str) -> None:
    check_backward_before_forward(ALL[name]()[0])


@pytest.mark.parametrize("name", list(ALL))
def test_grad_output_of_wrong_shape(name: str) -> None:
    check_grad_output_shape(ALL[name]()[0])


def test_output_is_saved_instead_of_input() -> None:
    module = LogSoftmax(1)
    x = torch.randn(3, 4)
    y = module(x)
    saved = [value for value in module.saved.values() if isinstance(value, torch.Tensor)]
    assert any(value is y for value in saved)
    assert not any(value is x for value in saved)


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (LogSoftmax(), torch.nn.LogSoftmax()),
        (LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
    ],
    ids=repr,
)
def test_repr_matches_torch(ours: Module, ref: torch.nn.Module) -> None:
    assert repr(ours) == repr(ref)


def test_hyperparameters_keep_torch_attribute_names() -> None:
    assert LogSoftmax(dim=0).dim == 0 and LogSoftmax().dim is None


# Forward and backward are torch's to the bit in float32 and float64: the backward is
# torch's kernel itself, as no composition of ops rounds its exp and sums as it does.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("shape", [(1,), (7, 3), (64, 33), (1000,)])
def test_log_softmax_is_torchs_to_the_bit(
    name: str, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    generator = torch.Generator().manual_seed(len(shape) * 1000 + shape[0])
    x = (3 * torch.randn(shape, generator=generator)).to(dtype)
    g = torch.randn(shape, generator=generator).to(dtype)
    assert_module_bits(*ALL[name](), x, g)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, *DTYPES])
@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("transposed", [False, True])
def test_torchs_kernels_give_torchs_bits_in_every_dtype_and_layout(
    name: str, dtype: torch.dtype, transposed: bool
) -> None:
    """Half precision (computed in float32 by the kernels) and strided inputs too."""
    generator = torch.Generator().manual_seed(7)
    x = (4 * torch.randn(37, 21, generator=generator)).to(dtype)
    g = torch.randn(37, 21, generator=generator).to(dtype)
    if transposed:
        x, g = x.t(), g.t()
    assert_module_bits(*ALL[name](), x, g)


def test_log_softmax_keeps_its_precision_where_softmax_rounds_to_zero() -> None:
    x = torch.tensor([[0.0, -1000.0, -200.0]])
    assert torch.log(torch.softmax(x, 1))[0, 1].item() == -math.inf
    assert LogSoftmax(1)(x).tolist() == [[0.0, -1000.0, -200.0]]


@pytest.mark.parametrize("module", [LogSoftmax(1), LogSoftmax(0)], ids=repr)
def test_backward_agrees_with_finite_differences(module: Module) -> None:
    x = torch.tensor([[-2.5, -0.7, 0.1], [0.4, 1.3, 3.0]], dtype=torch.float64)
    assert gradcheck(module, x).ok

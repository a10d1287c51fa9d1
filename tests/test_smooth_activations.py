"""SiLU and Softplus, against torch.nn.SiLU and torch.nn.Softplus.

Both run torch's own kernels, so outputs and gradients must be torch's very bits
(same_bits) in every dtype and layout, for any beta and threshold of Softplus.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nograd.gradcheck import gradcheck
from nograd.nn.activations import Tanh
from nograd.nn.container import Sequential
from nograd.nn.linear import Linear
from nograd.nn.module import Module
from nograd.nn.smooth_activations import SiLU, Softplus
from tests.oracle import (
    SEEDS,
    SHAPES,
    Pair,
    assert_close,
    assert_module_bits,
    check_backward_before_forward,
    check_finite_at_1000,
    check_grad_output_shape,
    check_kinks,
    compare_activation,
    compare_module,
    same_bits,
)

DTYPES = [torch.float64, torch.float32]

# Modules without free parameters, and the torch.nn twin of each.
PLAIN: dict[str, Pair] = {
    "SiLU": lambda: (SiLU(), torch.nn.SiLU()),
    "Softplus": lambda: (Softplus(), torch.nn.Softplus()),
    "Softplus-2-5": lambda: (Softplus(2.0, 5.0), torch.nn.Softplus(2.0, 5.0)),
}
# Everything, including in-place variants; in-place twins are applied to a non-leaf.
ALL: dict[str, Pair] = {
    **PLAIN,
    "SiLU-inplace": lambda: (SiLU(inplace=True), torch.nn.SiLU(inplace=True)),
    "Softplus-0.5-1": lambda: (Softplus(0.5, 1.0), torch.nn.Softplus(0.5, 1.0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(PLAIN))
@given(shape=SHAPES, seed=SEEDS)
def test_activation_matches_torch(
    name: str, dtype: torch.dtype, shape: list[int], seed: int
) -> None:
    torch.manual_seed(seed)
    ours, ref = PLAIN[name]()
    compare_module(ours, ref, torch.randn(shape, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ALL))
def test_kinks_match_torch(name: str, dtype: torch.dtype) -> None:
    check_kinks(*ALL[name](), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name", ["SiLU", "SiLU-inplace", "Softplus", "Softplus-2-5", "Softplus-0.5-1"]
)
def test_inputs_of_1000_stay_finite_and_match_torch(name: str, dtype: torch.dtype) -> None:
    check_finite_at_1000(*ALL[name](), dtype)


@pytest.mark.parametrize("name", list(ALL))
def test_backward_before_forward_names_the_module(name: str) -> None:
    check_backward_before_forward(ALL[name]()[0])


@pytest.mark.parametrize("name", list(ALL))
def test_grad_output_of_wrong_shape(name: str) -> None:
    check_grad_output_shape(ALL[name]()[0])


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (SiLU(), torch.nn.SiLU()),
        (SiLU(inplace=True), torch.nn.SiLU(inplace=True)),
        (Softplus(), torch.nn.Softplus()),
        (Softplus(2, 10), torch.nn.Softplus(2, 10)),
        (Softplus(threshold=0.5), torch.nn.Softplus(threshold=0.5)),
    ],
    ids=repr,
)
def test_repr_matches_torch(ours: Module, ref: torch.nn.Module) -> None:
    assert repr(ours) == repr(ref)


def test_hyperparameters_keep_torch_attribute_names() -> None:
    assert (Softplus(beta=2, threshold=3).beta, Softplus(beta=2, threshold=3).threshold) == (2, 3)
    assert SiLU(inplace=True).inplace and not SiLU().inplace


# Forward and backward are torch's to the bit in float32 and float64: they run torch's
# kernels themselves, as no composition of ops rounds their vectorised exp and log1p as
# they do.
BITWISE = ["SiLU", "SiLU-inplace", "Softplus", "Softplus-2-5", "Softplus-0.5-1"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BITWISE)
@pytest.mark.parametrize("shape", [(1,), (7, 3), (64, 33), (1000,)])
def test_activation_is_torchs_to_the_bit(
    name: str, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    generator = torch.Generator().manual_seed(len(shape) * 1000 + shape[0])
    x = (3 * torch.randn(shape, generator=generator)).to(dtype)
    g = torch.randn(shape, generator=generator).to(dtype)
    assert_module_bits(*ALL[name](), x, g)


KERNELS = ["SiLU", "SiLU-inplace", "Softplus", "Softplus-0.5-1"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, *DTYPES])
@pytest.mark.parametrize("name", KERNELS)
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


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    shape=SHAPES,
    seed=SEEDS,
    beta=st.floats(-4, 4).filter(lambda b: b != 0),
    threshold=st.floats(-30, 20),  # above 20 it is lowered: see the test after next
)
def test_softplus_is_torchs_to_the_bit_for_any_beta_and_threshold(
    dtype: torch.dtype, shape: list[int], seed: int, beta: float, threshold: float
) -> None:
    torch.manual_seed(seed)
    x = 10 * torch.randn(shape, dtype=dtype)
    g = torch.randn(shape, dtype=dtype)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = torch.nn.Softplus(beta, threshold)(leaf)
        y_ref.backward(g)
    ours = Softplus(beta, threshold)
    assert same_bits(ours(x), y_ref.detach())
    assert leaf.grad is not None and same_bits(ours.backward(g), leaf.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("beta", "threshold"), [(1.0, 1.0), (2.0, 5.0), (0.5, 20.0)])
def test_softplus_at_its_threshold_follows_torchs_rule(
    dtype: torch.dtype, beta: float, threshold: float
) -> None:
    """y = x only where beta x > threshold: at beta x = threshold, the formula."""
    at = torch.tensor(threshold / beta, dtype=dtype)
    above = torch.nextafter(at, torch.tensor(math.inf, dtype=dtype))
    x = torch.stack([at, above])
    ours = Softplus(beta, threshold)
    y = ours(x)
    slope = ours.backward(torch.ones_like(x))
    assert (x[0] * beta).item() == threshold  # exactly at the threshold
    torch.testing.assert_close(y[0], torch.log1p(torch.exp(x[0] * beta)) / beta)
    assert y[1].item() == x[1].item() and slope[1].item() == 1.0
    torch.testing.assert_close(slope[0], torch.sigmoid(x[0] * beta))
    compare_activation(ours, torch.nn.Softplus(beta, threshold), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, *DTYPES])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_softplus_with_a_high_threshold_gives_x_where_torch_rounds_to_x_or_overflows(
    dtype: torch.dtype, beta: float
) -> None:
    """With a threshold of 1e4, torch's exp(beta x) overflows: inf and a NaN gradient.
    Here y = x and dL/dx = dL/dy above beta x = 20 (40 in float64), torch's bits below,
    and within its rounding (two ulps) in between."""
    z = [-1000.0, -5.0, 0.0, 15.0, 19.5, 20.5, 30.0, 39.5, 40.5, 60.0, 80.0, 88.5, 100.0]
    x = (torch.tensor([*z, 709.5, 1000.0], dtype=torch.float64) / beta).to(dtype)
    g = torch.linspace(0.5, 2.0, len(x)).to(dtype)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = torch.nn.Softplus(beta, threshold=1e4)(leaf)
        y_ref.backward(g)
    assert leaf.grad is not None
    ours = Softplus(beta, threshold=1e4)
    y, grad_input = ours(x), ours.backward(g)
    assert torch.isfinite(y).all() and torch.isfinite(grad_input).all()
    above = x * beta > (40 if dtype == torch.float64 else 20)
    assert torch.equal(y[above], x[above]) and torch.equal(grad_input[above], g[above])
    assert torch.equal(y[~above], y_ref.detach()[~above])
    assert torch.equal(grad_input[~above], leaf.grad[~above])
    finite = torch.isfinite(y_ref.detach()) & torch.isfinite(leaf.grad)
    assert not finite.all()  # torch does overflow here, in every dtype
    two_ulps = {"rtol": 2 * torch.finfo(dtype).eps, "atol": 0.0}
    torch.testing.assert_close(y[finite], y_ref.detach()[finite], **two_ulps)
    torch.testing.assert_close(grad_input[finite], leaf.grad[finite], **two_ulps)


def test_softplus_is_finite_at_1000_with_its_default_threshold_as_torch() -> None:
    x = torch.tensor([-1000.0, 1000.0])
    ours = Softplus()
    assert ours(x).tolist() == [0.0, 1000.0]
    assert ours.backward(torch.ones(2)).tolist() == [0.0, 1.0]


def test_inplace_silu_keeps_x_for_its_backward() -> None:
    x = torch.tensor([-3.0, -1.0, 0.0, 2.0], dtype=torch.float64)
    silu = SiLU(inplace=True)
    y = silu(x)
    assert y is x and silu.overwrites_input() and not SiLU().overwrites_input()
    s = torch.sigmoid(torch.tensor([-3.0, -1.0, 0.0, 2.0], dtype=torch.float64))
    x_before = torch.tensor([-3.0, -1.0, 0.0, 2.0], dtype=torch.float64)
    assert_close(silu.backward(torch.ones(4, dtype=torch.float64)), s * (1 + x_before * (1 - s)))


def test_inplace_silu_after_a_linear_matches_torch() -> None:
    torch.manual_seed(0)
    ours = Sequential(Linear(3, 5), SiLU(inplace=True), Linear(5, 2)).double()
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.SiLU(inplace=True), torch.nn.Linear(5, 2)
    ).double()
    compare_module(ours, ref, torch.randn(4, 3, dtype=torch.float64))


def test_inplace_silu_over_a_saved_output_raises_as_torch() -> None:
    ref = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.SiLU(True))
    with torch.enable_grad(), pytest.raises(RuntimeError, match="modified by an inplace"):
        ref(torch.randn(4, 2).requires_grad_()).sum().backward()
    ours = Sequential(Linear(2, 3), Tanh(), SiLU(inplace=True))
    y = ours(torch.randn(4, 2))
    with pytest.raises(RuntimeError, match=r"SiLU\(inplace=True\) overwrote a tensor Tanh"):
        ours.backward(torch.ones_like(y))


@pytest.mark.parametrize(
    "module", [SiLU(), SiLU(inplace=True), Softplus(), Softplus(3.0, 2.0)], ids=repr
)
def test_backward_agrees_with_finite_differences(module: Module) -> None:
    # away from Softplus's threshold, where y jumps by up to log1p(exp(-threshold)) / beta
    x = torch.tensor([[-2.5, -0.7, 0.1], [0.4, 1.3, 3.0]], dtype=torch.float64)
    assert gradcheck(module, x).ok

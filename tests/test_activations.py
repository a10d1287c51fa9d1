from __future__ import annotations

import math

import mpmath
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nograd.nn.activations import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
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
    compare_activation,
    compare_module,
    same_bits,
)

DTYPES = [torch.float64, torch.float32]

# Modules without free parameters, and the torch.nn twin of each.
PLAIN: dict[str, Pair] = {
    "ReLU": lambda: (ReLU(), torch.nn.ReLU()),
    "Tanh": lambda: (Tanh(), torch.nn.Tanh()),
    "Sigmoid": lambda: (Sigmoid(), torch.nn.Sigmoid()),
    "GELU-none": lambda: (GELU(), torch.nn.GELU()),
    "GELU-tanh": lambda: (GELU("tanh"), torch.nn.GELU("tanh")),
    "Identity": lambda: (Identity(), torch.nn.Identity()),
}
# Everything, including in-place variants; in-place twins are applied to a non-leaf.
ALL: dict[str, Pair] = {
    **PLAIN,
    "ReLU-inplace": lambda: (ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
    "LeakyReLU": lambda: (LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    "LeakyReLU-inplace": lambda: (LeakyReLU(0.2, True), torch.nn.LeakyReLU(0.2, True)),
    "ELU": lambda: (ELU(0.7), torch.nn.ELU(0.7)),
    "ELU-inplace": lambda: (ELU(0.7, True), torch.nn.ELU(0.7, True)),
    "ELU-2.5": lambda: (ELU(2.5), torch.nn.ELU(2.5)),
    "Softmax-last": lambda: (Softmax(dim=-1), torch.nn.Softmax(dim=-1)),
    "Softmax-0": lambda: (Softmax(0), torch.nn.Softmax(dim=0)),
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
@given(shape=SHAPES, seed=SEEDS, slope=st.floats(-3, 3), inplace=st.booleans())
def test_leaky_relu_matches_torch(
    dtype: torch.dtype, shape: list[int], seed: int, slope: float, inplace: bool
) -> None:
    torch.manual_seed(seed)
    slope = abs(slope) if inplace else slope  # torch's in-place backward needs slope >= 0
    compare_activation(
        LeakyReLU(slope, inplace),
        torch.nn.LeakyReLU(slope, inplace),
        torch.randn(shape, dtype=dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=SHAPES, seed=SEEDS, alpha=st.floats(-2, 3), inplace=st.booleans())
def test_elu_matches_torch(
    dtype: torch.dtype, shape: list[int], seed: int, alpha: float, inplace: bool
) -> None:
    torch.manual_seed(seed)
    alpha = abs(alpha) if inplace else alpha  # torch's in-place backward needs alpha >= 0
    compare_activation(
        ELU(alpha, inplace), torch.nn.ELU(alpha, inplace), torch.randn(shape, dtype=dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=SHAPES, seed=SEEDS, dim_index=st.integers(0, 5))
def test_softmax_matches_torch_over_every_dim(
    dtype: torch.dtype, shape: list[int], seed: int, dim_index: int
) -> None:
    torch.manual_seed(seed)
    dim = dim_index % (2 * len(shape)) - len(shape)  # negative and non-negative dims
    compare_module(Softmax(dim), torch.nn.Softmax(dim=dim), torch.randn(shape, dtype=dtype))
    out = Softmax(dim)(torch.randn(shape, dtype=dtype))
    assert_close(out.sum(dim), torch.ones_like(out.sum(dim)))


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 5), (1, 2, 3, 2, 2)])
def test_softmax_without_dim_picks_torchs_implicit_dim_and_warns_as_torch(
    shape: tuple[int, ...],
) -> None:
    """dim=None: dim 0 for 0, 1 or 3 dimensions, else dim 1, with torch's UserWarning."""
    assert Softmax().dim is None and torch.nn.Softmax().dim is None
    check_implicit_dim(Softmax(), torch.nn.Softmax(), shape)


def test_softmax_with_a_dim_does_not_warn() -> None:
    check_no_warning_with_a_dim(Softmax(dim=0))


@pytest.mark.parametrize(("dim", "shape", "dims"), [(2, (2, 3), "[-2, 1]"), (-2, (4,), "[-1, 0]")])
def test_a_dim_the_input_lacks_is_refused_naming_the_module(
    dim: int, shape: tuple[int, ...], dims: str
) -> None:
    check_missing_dim_refused(Softmax(dim), torch.nn.Softmax(dim=dim), shape, dims)


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=SHAPES, seed=SEEDS)
def test_inplace_relu_matches_torch(dtype: torch.dtype, shape: list[int], seed: int) -> None:
    torch.manual_seed(seed)
    compare_activation(
        ReLU(inplace=True), torch.nn.ReLU(inplace=True), torch.randn(shape, dtype=dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ALL))
def test_kinks_match_torch(name: str, dtype: torch.dtype) -> None:
    check_kinks(*ALL[name](), dtype)


SPECIALS = [math.inf, -math.inf, math.nan, 2.5, -3.0, 0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, *DTYPES])
@pytest.mark.parametrize("slope", [0.0, -0.0, 1e-50, 1e-320, 1e-10, 0.2, 1.0, 1.5, -0.5])
@pytest.mark.parametrize("inplace", [False, True])
def test_leaky_relu_at_infinities_and_zeros_is_torchs_to_the_bit(
    dtype: torch.dtype, slope: float, inplace: bool
) -> None:
    """max(x, slope x) is max(inf, 0 * inf) = NaN at +inf for a slope that is 0 in the
    dtype (0, or 1e-50 in float32); torch's x if x > 0 else slope x gives inf."""
    if inplace and slope < 0:
        pytest.skip("torch's in-place backward needs slope >= 0")
    x = torch.tensor(SPECIALS, dtype=dtype)
    g = torch.arange(1.0, len(SPECIALS) + 1).to(dtype)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = torch.nn.LeakyReLU(slope, inplace)(leaf * 1)
        y_ref.backward(g)
    x_ours = x.clone()
    ours = LeakyReLU(slope, inplace)
    y = ours(x_ours)
    assert (y is x_ours) == inplace
    assert same_bits(y, y_ref.detach())
    assert leaf.grad is not None and same_bits(ours.backward(g), leaf.grad)


def test_derivatives_at_zero_follow_torch_conventions() -> None:
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    for module, slope_at_zero in [
        (ReLU(), 0.0),
        (ReLU(inplace=True), 0.0),
        (LeakyReLU(0.3), 0.3),
        (LeakyReLU(0.3, inplace=True), 0.3),
        (ELU(1.5), 1.5),
        (ELU(1.5, inplace=True), 1.5),
    ]:
        module(zero.clone())
        assert module.backward(one).item() == slope_at_zero, module


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name",
    ["Sigmoid", "Tanh", "GELU-none", "GELU-tanh", "ELU", "ELU-2.5", "Softmax-last", "Softmax-0"],
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
    ("dtype", "points", "rtol"),
    [
        (torch.float32, [-12.0, -10.0, -8.0, -6.0, -4.0, -2.0], 2e-5),
        (torch.float64, [-37.0, -30.0, -20.0, -10.0, -5.0, -2.0], 1e-12),
    ],
)
def test_gelu_is_accurate_in_the_lower_tail(
    dtype: torch.dtype, points: list[float], rtol: float
) -> None:
    """y = x Phi(x) and dy/dx = Phi(x) + x phi(x) where Phi is tiny, against 50 digits.

    (1 + erf(x / sqrt 2)) / 2 rounds Phi to 0 below x = -6 in float32 (-9 in float64).
    """
    mpmath.mp.dps = 50
    y_exact = [float(v * mpmath.ncdf(v)) for v in points]
    slope_exact = [float(mpmath.ncdf(v) + v * mpmath.npdf(v)) for v in points]
    gelu = GELU()
    y = gelu(torch.tensor(points, dtype=dtype))
    slope = gelu.backward(torch.ones(len(points), dtype=dtype))
    exact = torch.tensor([y_exact, slope_exact], dtype=torch.float64)
    torch.testing.assert_close(torch.stack([y, slope]).double(), exact, rtol=rtol, atol=0)


def test_gelu_rejects_an_unknown_approximation() -> None:
    with pytest.raises(ValueError, match=r"GELU: expected approximate 'none' or 'tanh', got 'erf'"):
        GELU("erf")


@pytest.mark.parametrize("module", [LeakyReLU(-0.5, inplace=True), ELU(-1.0, inplace=True)])
def test_inplace_backward_with_a_negative_slope_is_refused(module: Module) -> None:
    module(torch.randn(4))  # the forward works, as in torch; the sign of x is lost
    with pytest.raises(RuntimeError, match=r"inplace=True\): .*lost the sign of x.*got -"):
        module.backward(torch.ones(4))


@pytest.mark.parametrize("module", [ReLU(), Tanh(), Sigmoid(), Softmax(1)])
def test_output_is_saved_instead_of_input(module: Module) -> None:
    x = torch.randn(3, 4)
    y = module(x)
    saved = [value for value in module.saved.values() if isinstance(value, torch.Tensor)]
    assert any(value is y for value in saved)
    assert not any(value is x for value in saved)


def test_a_second_forward_replaces_the_saved_state() -> None:
    module = ELU(0.5)
    module(torch.full((3,), -1.0, dtype=torch.float64))
    module(torch.full((3,), 2.0, dtype=torch.float64))
    ones = torch.ones(3, dtype=torch.float64)
    assert_close(module.backward(ones), ones)  # the slope at x = 2, not at x = -1


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (ReLU(), torch.nn.ReLU()),
        (ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
        (Tanh(), torch.nn.Tanh()),
        (Sigmoid(), torch.nn.Sigmoid()),
        (LeakyReLU(), torch.nn.LeakyReLU()),
        (LeakyReLU(0.2, inplace=True), torch.nn.LeakyReLU(0.2, inplace=True)),
        (LeakyReLU(negative_slope=1), torch.nn.LeakyReLU(negative_slope=1)),
        (ELU(), torch.nn.ELU()),
        (ELU(alpha=2, inplace=True), torch.nn.ELU(alpha=2, inplace=True)),
        (GELU(), torch.nn.GELU()),
        (GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
        (Softmax(), torch.nn.Softmax()),
        (Softmax(dim=-1), torch.nn.Softmax(dim=-1)),
        (Softmax(dim=1), torch.nn.Softmax(dim=1)),
        (Identity(), torch.nn.Identity()),
        (Identity(3, unused="ignored"), torch.nn.Identity(3, unused="ignored")),
    ],
    ids=repr,
)
def test_repr_matches_torch(ours: Module, ref: torch.nn.Module) -> None:
    assert repr(ours) == repr(ref)


def test_hyperparameters_keep_torch_attribute_names() -> None:
    assert LeakyReLU(0.2, inplace=True).negative_slope == 0.2
    assert ELU(alpha=0.5).alpha == 0.5
    assert GELU("tanh").approximate == "tanh"
    assert Softmax(dim=0).dim == 0
    assert ReLU(inplace=True).inplace and ELU(inplace=True).inplace
    assert not LeakyReLU().inplace


# Modules whose forward and backward are torch's to the bit in float32 and float64: the
# backward runs the same arithmetic as torch's kernel (for Tanh, 1 - y^2 rounded once, as
# torch's fused multiply-add does). SiLU, Softplus and LogSoftmax, which run torch's
# kernels themselves, are tested to the bit in their own test files. ELU
# (forward in float32, backward from x) and Softmax's backward agree with torch to about
# one unit in the last place only (their kernels evaluate exp(x) - 1, exp or the sum in
# their own way); GELU's Phi is erfc-based, more accurate than torch's in the tail.
BITWISE = ["ReLU", "ReLU-inplace", "Tanh", "Sigmoid", "LeakyReLU", "LeakyReLU-inplace"]
BITWISE += ["Identity"]


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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_in_half_precision_computes_in_float32_as_torch(
    dtype: torch.dtype, approximate: str
) -> None:
    # In float16 the x^3 of the tanh form overflows for |x| > ~97: two_u = inf, and the
    # backward's inf * Phi (1 - Phi) = inf * 0 gave NaN where torch, computing in
    # float32, gives 1 or 0.
    x = torch.tensor([-1000.0, -200.0, -5.5, -3.0, -0.5, 0.0, 0.5, 3.0, 50.0, 200.0, 1000.0])
    x = x.to(dtype)
    g = torch.linspace(-2.0, 2.0, len(x)).to(dtype)
    ours, ref = GELU(approximate), torch.nn.GELU(approximate=approximate)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(leaf)
        y_ref.backward(g)
    y, grad_input = ours(x), ours.backward(g)
    assert y.dtype == dtype and grad_input.dtype == dtype
    assert torch.isfinite(grad_input).all()
    torch.testing.assert_close(y, y_ref.detach(), rtol=1e-2, atol=1e-3)
    assert leaf.grad is not None
    torch.testing.assert_close(grad_input, leaf.grad, rtol=1e-2, atol=1e-3)

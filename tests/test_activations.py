from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable

import mpmath
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nograd.gradcheck import gradcheck
from nograd.nn.activations import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from nograd.nn.container import Sequential
from nograd.nn.linear import Linear
from nograd.nn.log_softmax import LogSoftmax
from nograd.nn.module import Module
from nograd.nn.smooth_activations import SiLU, Softplus
from tests import oracle
from tests.oracle import assert_close, compare_module

DTYPES = [torch.float64, torch.float32]
SHAPES = st.lists(st.integers(1, 6), min_size=1, max_size=3)  # 1-D to 3-D, size-1 dims included
SEEDS = st.integers(0, 2**31 - 1)

Pair = Callable[[], tuple[Module, torch.nn.Module]]

# Modules without free parameters, and the torch.nn twin of each.
PLAIN: dict[str, Pair] = {
    "ReLU": lambda: (ReLU(), torch.nn.ReLU()),
    "Tanh": lambda: (Tanh(), torch.nn.Tanh()),
    "Sigmoid": lambda: (Sigmoid(), torch.nn.Sigmoid()),
    "GELU-none": lambda: (GELU(), torch.nn.GELU()),
    "GELU-tanh": lambda: (GELU("tanh"), torch.nn.GELU("tanh")),
    "Identity": lambda: (Identity(), torch.nn.Identity()),
    "SiLU": lambda: (SiLU(), torch.nn.SiLU()),
    "Softplus": lambda: (Softplus(), torch.nn.Softplus()),
    "Softplus-2-5": lambda: (Softplus(2.0, 5.0), torch.nn.Softplus(2.0, 5.0)),
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
    "SiLU-inplace": lambda: (SiLU(inplace=True), torch.nn.SiLU(inplace=True)),
    "Softplus-0.5-1": lambda: (Softplus(0.5, 1.0), torch.nn.Softplus(0.5, 1.0)),
    "LogSoftmax-last": lambda: (LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
    "LogSoftmax-0": lambda: (LogSoftmax(0), torch.nn.LogSoftmax(dim=0)),
}


def compare(
    ours: Module, ref: torch.nn.Module, x: torch.Tensor, g: torch.Tensor | None = None
) -> None:
    """compare_module, or for an in-place module: same outputs, same dL/dx, same tensor."""
    if not getattr(ours, "inplace", False):
        compare_module(ours, ref, x, g)
        return
    g = torch.randn_like(x) if g is None else g
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(leaf * 1)  # torch refuses in-place ops on a leaf that requires grad
        y_ref.backward(g)
    x_ours = x.clone()
    y = ours(x_ours)
    assert y is x_ours, "an in-place module must return its input, overwritten"
    assert_close(y, y_ref.detach())
    assert leaf.grad is not None
    assert_close(ours.backward(g), leaf.grad)


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
    compare(
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
    compare(ELU(alpha, inplace), torch.nn.ELU(alpha, inplace), torch.randn(shape, dtype=dtype))


# The modules along a dim, each with its torch.nn twin and what sums to 1 along it.
ALONG_DIM: dict[str, tuple[type[Softmax | LogSoftmax], type[torch.nn.Module]]] = {
    "Softmax": (Softmax, torch.nn.Softmax),
    "LogSoftmax": (LogSoftmax, torch.nn.LogSoftmax),
}
PROBABILITIES = {"Softmax": lambda y: y, "LogSoftmax": torch.exp}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ALONG_DIM))
@given(shape=SHAPES, seed=SEEDS, dim_index=st.integers(0, 5))
def test_softmax_matches_torch_over_every_dim(
    name: str, dtype: torch.dtype, shape: list[int], seed: int, dim_index: int
) -> None:
    torch.manual_seed(seed)
    ours, ref = ALONG_DIM[name]
    dim = dim_index % (2 * len(shape)) - len(shape)  # negative and non-negative dims
    compare_module(ours(dim), ref(dim=dim), torch.randn(shape, dtype=dtype))
    out = PROBABILITIES[name](ours(dim)(torch.randn(shape, dtype=dtype)))
    assert_close(out.sum(dim), torch.ones_like(out.sum(dim)))


@pytest.mark.parametrize("name", list(ALONG_DIM))
@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4), (2, 3, 4, 5), (1, 2, 3, 2, 2)])
def test_softmax_without_dim_picks_torchs_implicit_dim_and_warns_as_torch(
    name: str, shape: tuple[int, ...]
) -> None:
    """dim=None: dim 0 for 0, 1 or 3 dimensions, else dim 1, with torch's UserWarning."""
    ours_cls, ref_cls = ALONG_DIM[name]
    assert ours_cls().dim is None and ref_cls().dim is None
    x = torch.randn(shape, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare_module(ours_cls(), ref_cls(), x)
    ours, ref = caught[1], caught[0]  # compare_module runs torch's twin first
    assert len(caught) == 2
    assert (ours.category, str(ours.message)) == (ref.category, str(ref.message))
    assert ours.category is UserWarning and "Implicit dimension choice" in str(ours.message)
    # at the line that called the module (torch 2.13 stops one frame short, in its __call__)
    assert ours.filename == oracle.__file__


def test_log_softmax_warns_with_torchs_name_for_it() -> None:
    with pytest.warns(UserWarning, match=r"^Implicit dimension choice for log_softmax has"):
        LogSoftmax()(torch.randn(2, 3))
    with pytest.warns(UserWarning, match=r"^Implicit dimension choice for softmax has"):
        Softmax()(torch.randn(2, 3))


@pytest.mark.parametrize("name", list(ALONG_DIM))
def test_softmax_with_a_dim_does_not_warn(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        softmax = ALONG_DIM[name][0](dim=0)
        softmax(torch.randn(2, 3))
        softmax.backward(torch.randn(2, 3))


@pytest.mark.parametrize("name", list(ALONG_DIM))
@pytest.mark.parametrize(("dim", "shape", "dims"), [(2, (2, 3), "[-2, 1]"), (-2, (4,), "[-1, 0]")])
def test_a_dim_the_input_lacks_is_refused_naming_the_module(
    name: str, dim: int, shape: tuple[int, ...], dims: str
) -> None:
    ours_cls, ref_cls = ALONG_DIM[name]
    with pytest.raises(IndexError, match="Dimension out of range"):
        ref_cls(dim=dim)(torch.randn(shape))  # torch's IndexError is nograd's ValueError
    message = f"{name}(dim={dim}): expected dim in {dims} for input of shape {shape}, got {dim}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        ours_cls(dim)(torch.randn(shape))


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=SHAPES, seed=SEEDS)
def test_inplace_relu_matches_torch(dtype: torch.dtype, shape: list[int], seed: int) -> None:
    torch.manual_seed(seed)
    compare(ReLU(inplace=True), torch.nn.ReLU(inplace=True), torch.randn(shape, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ALL))
def test_kinks_match_torch(name: str, dtype: torch.dtype) -> None:
    x = torch.tensor([-1.0, -0.0, 0.0, 0.0, 2.0], dtype=dtype)
    g = torch.arange(1.0, 6.0, dtype=dtype)
    compare(*ALL[name](), x, g)


def same_bits(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """NaN where expected has NaN, and every other element identical, the sign of 0 included."""
    nan = expected.isnan()
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[expected.element_size()]
    return torch.equal(actual.isnan(), nan) and torch.equal(
        actual[~nan].view(as_int), expected[~nan].view(as_int)
    )


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


EXTREME = [[-1000.0, -1.0, 0.0, 1.0, 1000.0], [1000.0, 1000.0, -1000.0, 0.5, -1000.0]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name",
    [
        *["Sigmoid", "Tanh", "GELU-none", "GELU-tanh", "ELU", "ELU-2.5", "Softmax-last"],
        *["Softmax-0", "SiLU", "SiLU-inplace", "Softplus", "Softplus-2-5", "Softplus-0.5-1"],
        *["LogSoftmax-last", "LogSoftmax-0"],
    ],
)
def test_inputs_of_1000_stay_finite_and_match_torch(name: str, dtype: torch.dtype) -> None:
    x = torch.tensor(EXTREME, dtype=dtype)
    g = torch.randn(x.shape, dtype=dtype)
    ours, ref = ALL[name]()
    y = ours(x)
    grad_input = ours.backward(g)
    assert torch.isfinite(y).all() and torch.isfinite(grad_input).all()
    compare(ours, ref, x, g)


@pytest.mark.parametrize("name", list(ALL))
def test_backward_before_forward_names_the_module(name: str) -> None:
    ours, _ = ALL[name]()
    prefix = re.escape(f"{type(ours).__name__}({ours.extra_repr()})")
    with pytest.raises(RuntimeError, match=prefix + r": backward\(\) called before forward\(\)"):
        ours.backward(torch.ones(2, 3))


@pytest.mark.parametrize("name", list(ALL))
def test_grad_output_of_wrong_shape(name: str) -> None:
    ours, _ = ALL[name]()
    ours(torch.randn(2, 3))
    prefix = re.escape(type(ours).__name__)
    with pytest.raises(ValueError, match=prefix + r".*grad_output of shape \(2, 3\), got \(3, 2\)"):
        ours.backward(torch.randn(3, 2))


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


@pytest.mark.parametrize("module", [ReLU(), Tanh(), Sigmoid(), Softmax(1), LogSoftmax(1)])
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
        (SiLU(), torch.nn.SiLU()),
        (SiLU(inplace=True), torch.nn.SiLU(inplace=True)),
        (Softplus(), torch.nn.Softplus()),
        (Softplus(2, 10), torch.nn.Softplus(2, 10)),
        (Softplus(threshold=0.5), torch.nn.Softplus(threshold=0.5)),
        (LogSoftmax(), torch.nn.LogSoftmax()),
        (LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
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
    assert LogSoftmax(dim=0).dim == 0 and LogSoftmax().dim is None
    assert (Softplus(beta=2, threshold=3).beta, Softplus(beta=2, threshold=3).threshold) == (2, 3)
    assert SiLU(inplace=True).inplace and not SiLU().inplace
    assert ReLU(inplace=True).inplace and ELU(inplace=True).inplace
    assert not LeakyReLU().inplace


# Modules whose forward and backward are torch's to the bit in float32 and float64: the
# backward runs the same arithmetic as torch's kernel (for Tanh, 1 - y^2 rounded once, as
# torch's fused multiply-add does), or torch's kernel itself (SiLU, Softplus, LogSoftmax:
# no composition of ops rounds their vectorised exp, log1p and sums as they do). ELU
# (forward in float32, backward from x) and Softmax's backward agree with torch to about
# one unit in the last place only (their kernels evaluate exp(x) - 1, exp or the sum in
# their own way); GELU's Phi is erfc-based, more accurate than torch's in the tail.
BITWISE = ["ReLU", "ReLU-inplace", "Tanh", "Sigmoid", "LeakyReLU", "LeakyReLU-inplace"]
BITWISE += ["Identity", "SiLU", "SiLU-inplace", "Softplus", "Softplus-2-5", "Softplus-0.5-1"]
BITWISE += ["LogSoftmax-last", "LogSoftmax-0"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BITWISE)
@pytest.mark.parametrize("shape", [(1,), (7, 3), (64, 33), (1000,)])
def test_activation_is_torchs_to_the_bit(
    name: str, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    generator = torch.Generator().manual_seed(len(shape) * 1000 + shape[0])
    x = (3 * torch.randn(shape, generator=generator)).to(dtype)
    g = torch.randn(shape, generator=generator).to(dtype)
    ours, ref = ALL[name]()
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(leaf * 1)  # a non-leaf, which in-place modules may overwrite
        y_ref.backward(g)
    assert torch.equal(ours(x.clone()), y_ref.detach())
    assert torch.equal(ours.backward(g), leaf.grad)


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


# ------------------------------------------------------- SiLU, Softplus, LogSoftmax
KERNELS = ["SiLU", "SiLU-inplace", "Softplus", "Softplus-0.5-1", "LogSoftmax-last"]
KERNELS += ["LogSoftmax-0"]


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
    ours, ref = ALL[name]()
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(leaf * 1)  # a non-leaf, which in-place modules may overwrite
        y_ref.backward(g)
    y = ours(x.clone())
    assert y.dtype == dtype and same_bits(y, y_ref.detach())
    assert leaf.grad is not None and same_bits(ours.backward(g), leaf.grad)


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
    compare(ours, torch.nn.Softplus(beta, threshold), x)


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


def test_log_softmax_keeps_its_precision_where_softmax_rounds_to_zero() -> None:
    x = torch.tensor([[0.0, -1000.0, -200.0]])
    assert torch.log(torch.softmax(x, 1))[0, 1].item() == -math.inf
    assert LogSoftmax(1)(x).tolist() == [[0.0, -1000.0, -200.0]]


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
    "module",
    [SiLU(), SiLU(inplace=True), Softplus(), Softplus(3.0, 2.0), LogSoftmax(1), LogSoftmax(0)],
    ids=repr,
)
def test_backward_agrees_with_finite_differences(module: Module) -> None:
    # away from Softplus's threshold, where y jumps by up to log1p(exp(-threshold)) / beta
    x = torch.tensor([[-2.5, -0.7, 0.1], [0.4, 1.3, 3.0]], dtype=torch.float64)
    assert gradcheck(module, x).ok

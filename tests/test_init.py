"""nograd.nn.init against torch.nn.init: same seed, same bits."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from nograd.nn import init
from tests.oracle import since_torch_2_13

SHAPES = [(5, 3), (1, 7), (4, 3, 2, 2)]
NONLINEARITIES = [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
]

# (name, keyword arguments): each call is made on both sides with the same arguments.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("uniform_", {}),
    ("uniform_", {"a": -2.0, "b": 0.5}),
    ("normal_", {}),
    ("normal_", {"mean": 1.5, "std": 0.1}),
    ("xavier_uniform_", {}),
    ("xavier_uniform_", {"gain": 5.0 / 3}),
    ("xavier_normal_", {}),
    ("xavier_normal_", {"gain": math.sqrt(2.0)}),
    ("orthogonal_", {}),
    ("orthogonal_", {"gain": 2.0}),
    *[
        (name, {"a": a, "mode": mode, "nonlinearity": nonlinearity})
        for name in ("kaiming_uniform_", "kaiming_normal_")
        for mode in ("fan_in", "fan_out")
        for nonlinearity, a in [
            ("leaky_relu", 0.0),
            ("leaky_relu", 0.2),
            ("leaky_relu", math.sqrt(5)),
            ("relu", 0.0),
            ("tanh", 0.0),
            ("linear", 0.0),
            ("selu", 0.0),
        ]
    ],
]


def _fill(fn: Callable[..., torch.Tensor], shape: tuple[int, ...], **kwargs: Any) -> torch.Tensor:
    tensor = torch.full(shape, float("nan"), dtype=torch.float32)
    returned = fn(tensor, generator=torch.Generator().manual_seed(1234), **kwargs)
    assert returned is tensor, "init functions fill in place and return their argument"
    return tensor


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_init_matches_torch_bit_for_bit(
    name: str, kwargs: dict[str, Any], shape: tuple[int, ...]
) -> None:
    ours = _fill(getattr(init, name), shape, **kwargs)
    ref = _fill(getattr(torch.nn.init, name), shape, **kwargs)
    assert torch.isfinite(ours).all()
    assert torch.equal(ours, ref)


@pytest.mark.parametrize(("name", "kwargs"), CASES[:: len(CASES) // 6])
def test_init_without_generator_uses_the_global_rng_as_torch(
    name: str, kwargs: dict[str, Any]
) -> None:
    torch.manual_seed(99)
    ours = getattr(init, name)(torch.empty(6, 4, dtype=torch.float64), **kwargs)
    torch.manual_seed(99)
    ref = getattr(torch.nn.init, name)(torch.empty(6, 4, dtype=torch.float64), **kwargs)
    assert torch.equal(ours, ref)


def test_init_draws_differ_for_different_seeds() -> None:
    # guards the bit-for-bit test against a generator that is silently ignored
    a = init.kaiming_uniform_(torch.empty(8, 8), generator=torch.Generator().manual_seed(1))
    b = init.kaiming_uniform_(torch.empty(8, 8), generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", ["zeros_", "ones_"])
def test_constant_inits_match_torch(name: str) -> None:
    ours = getattr(init, name)(torch.randn(3, 4))
    ref = getattr(torch.nn.init, name)(torch.randn(3, 4))
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (5, 5)])
def test_constant_and_eye_match_torch(shape: tuple[int, int]) -> None:
    assert torch.equal(
        init.constant_(torch.randn(shape), -0.3), torch.nn.init.constant_(torch.randn(shape), -0.3)
    )
    assert torch.equal(init.eye_(torch.randn(shape)), torch.nn.init.eye_(torch.randn(shape)))


def test_eye_refuses_what_is_not_a_matrix() -> None:
    with pytest.raises(ValueError, match=r"eye_: expected a 2-D tensor, got shape \(2, 2, 2\)"):
        init.eye_(torch.empty(2, 2, 2))


@pytest.mark.parametrize("shape", [(6, 6), (8, 3), (3, 8), (4, 3, 2, 2)])
def test_orthogonal_rows_or_columns_are_orthonormal_times_gain(shape: tuple[int, ...]) -> None:
    w = init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=1.5)
    matrix = w.reshape(shape[0], -1)
    small = matrix if matrix.shape[0] >= matrix.shape[1] else matrix.t()
    assert_close = torch.testing.assert_close
    assert_close(small.t() @ small, 2.25 * torch.eye(small.shape[1], dtype=torch.float64))


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_calculate_gain_matches_torch(nonlinearity: str) -> None:
    assert init.calculate_gain(nonlinearity) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity), rel=1e-15
    )


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 1, math.sqrt(5)])
def test_calculate_gain_leaky_relu_slope_matches_torch(slope: float) -> None:
    assert init.calculate_gain("leaky_relu", slope) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", slope), rel=1e-15
    )


@pytest.mark.parametrize("param", [True, False, "0.1", None, 2, -0.5, np.float64(0.1), np.int64(2)])
def test_calculate_gain_leaky_relu_accepts_what_torch_accepts(param: Any) -> None:
    """A bool is an int, but torch refuses it: gain 1 for slope True would be a silent bug."""
    try:
        expected = torch.nn.init.calculate_gain("leaky_relu", param)
    except ValueError:
        with pytest.raises(ValueError, match=r"calculate_gain: negative_slope .* not a valid"):
            init.calculate_gain("leaky_relu", param)
        return
    assert init.calculate_gain("leaky_relu", param) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("nonlinearity", ["conv_transpose1d", "conv_transpose2d"])
def test_calculate_gain_knows_conv_transpose(nonlinearity: str) -> None:
    assert init.calculate_gain(nonlinearity) == torch.nn.init.calculate_gain(nonlinearity)


def test_calculate_gain_rejects_unknown_nonlinearity() -> None:
    with pytest.raises(ValueError, match="softplus"):
        init.calculate_gain("softplus")


@pytest.mark.parametrize(
    "name", ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]
)
def test_fan_based_inits_reject_1d_tensors(name: str) -> None:
    with pytest.raises(ValueError, match=r"2 or more dimensions.*\(5,\)"):
        getattr(init, name)(torch.empty(5))


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_rejects_bad_mode(name: str) -> None:
    with pytest.raises(ValueError, match=r"fan_in.*fan_out.*'fan_avg'"):
        getattr(init, name)(torch.empty(3, 3), mode="fan_avg")


def test_kaiming_uniform_bound_is_gain_times_sqrt_3_over_fan() -> None:
    # the formula in the docstring, independent of torch: bound = sqrt(2) * sqrt(3 / 50)
    weight = init.kaiming_uniform_(torch.empty(400, 50), nonlinearity="relu")
    bound = math.sqrt(2.0) * math.sqrt(3.0 / 50)
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.95 * bound


# ---------------------------------------------------------------------------------------
# The whole of torch.nn.init's public API, with its signatures


TORCH_NAMES = sorted(
    name for name in torch.nn.init.__all__ if name.endswith("_") or name == "calculate_gain"
)  # the deprecated aliases (uniform, normal, ...) left out


def test_init_exports_exactly_torch_names() -> None:
    assert sorted(init.__all__) == TORCH_NAMES


def _parameters(fn: Callable[..., Any]) -> list[tuple[str, Any, Any, type]]:
    """Name, kind and default of each parameter; the default's type too, as 0 == 0.0."""
    return [
        (p.name, p.kind, p.default, type(p.default))
        for p in inspect.signature(fn).parameters.values()
    ]


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_signature_matches_torch(name: str) -> None:
    assert _parameters(getattr(init, name)) == _parameters(getattr(torch.nn.init, name))


# ---------------------------------------------------------------------------------------
# Running both sides from the same seeds and comparing everything that comes out


@dataclass
class Outcome:
    error: type[BaseException] | None
    tensor: torch.Tensor | None
    warnings: list[type[Warning]]
    next_global: torch.Tensor  # the global RNG's next draws: equal only if equally consumed
    next_generator: torch.Tensor | None  # the same for the generator, when one was passed


def _run(
    fn: Callable[..., torch.Tensor],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    kwargs: dict[str, Any],
    seed: int,
    with_generator: bool,
    device: str = "cpu",
) -> Outcome:
    torch.manual_seed(seed)
    tensor = torch.full(shape, 7, dtype=dtype, device=device)  # 7: no init writes it
    generator = torch.Generator().manual_seed(seed + 1) if with_generator else None
    if generator is not None:
        kwargs = {**kwargs, "generator": generator}
    error: type[BaseException] | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            returned = fn(tensor, **kwargs)
            assert returned is tensor, "init functions fill in place and return their argument"
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError, TypeError) as e:
            error = type(e)
    return Outcome(
        error=error,
        tensor=None if error else tensor,
        warnings=[w.category for w in caught],
        next_global=torch.rand(4),
        next_generator=None if generator is None else torch.rand(4, generator=generator),
    )


def _assert_same_outcome(
    name: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    kwargs: dict[str, Any],
    seed: int = 0,
    with_generator: bool = False,
    device: str = "cpu",
) -> Outcome:
    ours = _run(getattr(init, name), shape, dtype, kwargs, seed, with_generator, device)
    ref = _run(getattr(torch.nn.init, name), shape, dtype, kwargs, seed, with_generator, device)
    assert ours.error is ref.error
    if ref.tensor is not None:
        assert ours.tensor is not None
        if device == "meta":
            assert ours.tensor.shape == ref.tensor.shape
        else:
            assert torch.equal(ours.tensor, ref.tensor)
    assert ours.warnings == ref.warnings
    assert torch.equal(ours.next_global, ref.next_global)
    if ref.next_generator is not None:
        assert ours.next_generator is not None
        assert torch.equal(ours.next_generator, ref.next_generator)
    return ref


FLOATS = [torch.float32, torch.float64]


# ---------------------------------------------------------------------------------------
# trunc_normal_


TRUNC_KWARGS: list[dict[str, Any]] = [
    {},  # p = 0.95: normal draws, about 5 % of them redrawn
    {"mean": 0.5, "std": 2.0, "a": -1.0, "b": 3.0},
    {"mean": -1.0, "std": 0.5, "a": -2.0, "b": -0.5},
    {"a": -0.5, "b": 2.0},
    {"a": 0.5, "b": 0.6},  # p < 0.3: uniform proposals
    {"a": 2.0, "b": 5.0},  # a single tail
    {"mean": 3.0, "std": 0.5, "a": -1.0, "b": 1.0},  # mean 4 std away: warns
    {"std": 1e-3, "a": -1.0, "b": 1.0},
    {"std": -1.0},  # p < 0: torch samples |std| by uniform proposals, without an error
]


@since_torch_2_13  # torch 2.13's samplers
@pytest.mark.parametrize("with_generator", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(5, 3), (1, 7), (4, 3, 2, 2), (1000,), (0, 4)])
@pytest.mark.parametrize("kwargs", TRUNC_KWARGS)
def test_trunc_normal_matches_torch_bit_for_bit(
    kwargs: dict[str, Any], shape: tuple[int, ...], dtype: torch.dtype, with_generator: bool
) -> None:
    for seed in range(3):
        _assert_same_outcome("trunc_normal_", shape, dtype, kwargs, seed, with_generator)


@since_torch_2_13  # torch 2.13's samplers
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [{}, {"a": -0.1, "b": 0.1}])
def test_trunc_normal_matches_torch_in_half_precision(
    kwargs: dict[str, Any], dtype: torch.dtype
) -> None:
    _assert_same_outcome("trunc_normal_", (64, 33), dtype, kwargs, seed=5)


@since_torch_2_13  # torch 2.13's samplers
@pytest.mark.parametrize("kwargs", [{}, {"a": 0.5, "b": 0.6}])
def test_trunc_normal_fills_a_transposed_view_as_torch(kwargs: dict[str, Any]) -> None:
    torch.manual_seed(3)
    ours = init.trunc_normal_(torch.empty(7, 50).t(), **kwargs)
    torch.manual_seed(3)
    ref = torch.nn.init.trunc_normal_(torch.empty(7, 50).t(), **kwargs)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("kwargs", TRUNC_KWARGS[:-1])
def test_trunc_normal_stays_within_its_bounds(kwargs: dict[str, Any]) -> None:
    """The definition, independent of torch; 4000 draws make every branch redraw."""
    a, b = kwargs.get("a", -2.0), kwargs.get("b", 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = init.trunc_normal_(torch.empty(4000, dtype=torch.float64), **kwargs)
    assert a <= x.min() and x.max() <= b
    assert len(x.unique()) == len(x)  # every entry drawn, none left at a stale value


def test_trunc_normal_is_normal_inside_the_bounds() -> None:
    """Mean and std of N(0, 1) cut at [-1, 2], from the closed form."""
    x = init.trunc_normal_(torch.empty(200_000, dtype=torch.float64), a=-1.0, b=2.0)
    phi = [math.exp(-t * t / 2) / math.sqrt(2 * math.pi) for t in (-1.0, 2.0)]
    mass = (math.erf(2 / math.sqrt(2)) - math.erf(-1 / math.sqrt(2))) / 2
    mean = (phi[0] - phi[1]) / mass
    var = 1 + (-1.0 * phi[0] - 2.0 * phi[1]) / mass - mean**2
    assert x.mean().item() == pytest.approx(mean, abs=0.01)
    assert x.std().item() == pytest.approx(math.sqrt(var), abs=0.01)


def test_trunc_normal_warns_when_the_mean_is_far_from_the_bounds() -> None:
    with pytest.warns(UserWarning, match="more than 2 std"):
        init.trunc_normal_(torch.empty(10), mean=5.0, a=-1.0, b=1.0)


@pytest.mark.parametrize(
    ("kwargs", "dtype", "error"),
    [
        ({"std": 0.0}, torch.float32, ZeroDivisionError),
        ({"a": 2.0, "b": -2.0}, torch.float32, RuntimeError),
        ({}, torch.int64, NotImplementedError),
        ({"a": 0.5, "b": 0.6}, torch.int64, NotImplementedError),
    ],
)
def test_trunc_normal_raises_what_torch_raises(
    kwargs: dict[str, Any], dtype: torch.dtype, error: type[Exception]
) -> None:
    with pytest.raises(error):
        torch.nn.init.trunc_normal_(torch.zeros(4, 3, dtype=dtype), **kwargs)
    with pytest.raises(error):
        init.trunc_normal_(torch.zeros(4, 3, dtype=dtype), **kwargs)


# ---------------------------------------------------------------------------------------
# dirac_


DIRAC_CASES = [
    ((4, 4, 3), 1),
    ((6, 4, 3, 3), 1),  # more outputs than inputs
    ((2, 5, 3), 1),  # more inputs than outputs
    ((6, 2, 3, 3, 3), 1),
    ((4, 4, 2, 2), 1),  # even kernel: the centre is k // 2
    ((6, 3, 3), 3),
    ((8, 2, 5, 5), 2),
    ((6, 3, 1, 1), 2),
    ((4, 2, 3, 3, 3), 4),
    ((4, 2, 3), -2),  # 4 % -2 == 0 and an empty range: torch writes zeros only
    ((0, 3, 3), 1),
]


@pytest.mark.parametrize("dtype", [*FLOATS, torch.int64])
@pytest.mark.parametrize(("shape", "groups"), DIRAC_CASES)
def test_dirac_matches_torch(shape: tuple[int, ...], groups: int, dtype: torch.dtype) -> None:
    outcome = _assert_same_outcome("dirac_", shape, dtype, {"groups": groups})
    assert outcome.error is None


@pytest.mark.parametrize(
    ("shape", "groups", "error"),
    [
        ((3, 3), 1, ValueError),  # 2-D
        ((1, 1, 1, 1, 1, 1), 1, ValueError),  # 6-D
        ((5, 4, 3), 2, ValueError),  # 5 channels in 2 groups
        ((4, 2, 3), 3, ValueError),
        ((4, 2, 3), 0, ZeroDivisionError),
        ((2, 2, 0), 1, IndexError),  # a kernel of size 0 has no centre
    ],
)
def test_dirac_raises_what_torch_raises(
    shape: tuple[int, ...], groups: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        torch.nn.init.dirac_(torch.empty(shape), groups)
    with pytest.raises(error):
        init.dirac_(torch.empty(shape), groups)
    outcome = _assert_same_outcome("dirac_", shape, torch.float32, {"groups": groups})
    assert outcome.error is error


def test_dirac_convolution_is_the_identity_per_group() -> None:
    """The docstring's promise, checked through a real convolution."""
    weight = init.dirac_(torch.empty(4, 2, 3, 3, dtype=torch.float64), groups=2)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    assert torch.equal(torch.nn.functional.conv2d(x, weight, padding=1, groups=2), x)


# ---------------------------------------------------------------------------------------
# sparse_


@pytest.mark.parametrize("with_generator", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(5, 3), (10, 20), (1, 7), (0, 3), (3, 0)])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"sparsity": 0.0},
        {"sparsity": 0.1},
        {"sparsity": 0.5, "std": 1.0},
        {"sparsity": 0.9, "std": 0.5},
        {"sparsity": 1.0},
        {"sparsity": 1.5},
        {"sparsity": -0.2},  # keeps all but ceil(0.2 * rows) rows zeroed: a slice [:-k]
    ],
)
def test_sparse_matches_torch_bit_for_bit(
    kwargs: dict[str, Any], shape: tuple[int, int], dtype: torch.dtype, with_generator: bool
) -> None:
    """With a generator, the zeroed rows still come from the global RNG, as in torch."""
    for seed in range(2):
        outcome = _assert_same_outcome("sparse_", shape, dtype, kwargs, seed, with_generator)
        assert outcome.error is None


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.75])
def test_sparse_zeroes_the_stated_share_of_each_column(sparsity: float) -> None:
    w = init.sparse_(torch.empty(40, 30, dtype=torch.float64), sparsity, std=1.0)
    zeros_per_column = (w == 0).sum(dim=0)
    assert torch.all(zeros_per_column == math.ceil(sparsity * 40))  # normal draws are never 0


@pytest.mark.parametrize(
    ("shape", "kwargs", "error"),
    [
        ((5,), {"sparsity": 0.1}, ValueError),
        ((2, 3, 4), {"sparsity": 0.1}, ValueError),
        ((4, 3), {"sparsity": 0.1, "std": -1.0}, RuntimeError),
        ((4, 3), {"sparsity": "0.1"}, TypeError),
    ],
)
def test_sparse_raises_what_torch_raises(
    shape: tuple[int, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        torch.nn.init.sparse_(torch.empty(shape), **kwargs)
    with pytest.raises(error):
        init.sparse_(torch.empty(shape), **kwargs)


# ---------------------------------------------------------------------------------------
# meta tensors: no storage, and no random numbers consumed


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [
        ("trunc_normal_", (4, 3), {}),
        ("trunc_normal_", (4, 3), {"a": 0.5, "b": 0.6}),
        ("dirac_", (4, 4, 3), {"groups": 2}),
        # torch 2.11 drew for a meta tensor
        pytest.param("sparse_", (4, 3), {"sparsity": 0.5}, marks=since_torch_2_13),
        ("orthogonal_", (3, 5), {}),
    ],
)
def test_meta_tensors_are_left_alone_as_torch_does(
    name: str, shape: tuple[int, ...], kwargs: dict[str, Any]
) -> None:
    outcome = _assert_same_outcome(name, shape, torch.float32, kwargs, device="meta")
    assert outcome.error is None


# ---------------------------------------------------------------------------------------
# The existing functions, where they used to differ from torch 2.13


@pytest.mark.parametrize("nonlinearity", ["identity", "Linear", "RELU", "softplus", "gelu"])
def test_calculate_gain_refuses_what_torch_refuses(nonlinearity: str) -> None:
    with pytest.raises(ValueError):
        torch.nn.init.calculate_gain(nonlinearity)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain(nonlinearity)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
@pytest.mark.parametrize("mode", ["FAN_IN", "Fan_Out", "fan_out"])
def test_kaiming_mode_is_case_insensitive_as_in_torch(name: str, mode: str) -> None:
    for with_generator in (False, True):
        outcome = _assert_same_outcome(
            name, (6, 4, 3), torch.float32, {"mode": mode}, with_generator=with_generator
        )
        assert outcome.error is None


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 3)])
@pytest.mark.parametrize("mode", ["fan_in", "fan_avg"])
def test_kaiming_warns_and_returns_on_zero_element_tensors_as_torch(
    name: str, shape: tuple[int, ...], mode: str
) -> None:
    """Before looking at mode or dimensions: (0,) and a bad mode are no errors in torch."""
    outcome = _assert_same_outcome(name, shape, torch.float32, {"mode": mode})
    assert outcome.error is None
    assert outcome.warnings == [UserWarning]


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_reports_a_bad_mode_before_a_bad_nonlinearity(name: str) -> None:
    with pytest.raises(ValueError, match="Mode"):
        getattr(torch.nn.init, name)(torch.empty(3, 3), mode="fan_avg", nonlinearity="gelu")
    with pytest.raises(ValueError, match="mode"):
        getattr(init, name)(torch.empty(3, 3), mode="fan_avg", nonlinearity="gelu")


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [
        ("kaiming_uniform_", (5,), {}),
        ("kaiming_normal_", (), {}),
        ("kaiming_uniform_", (3, 3), {"nonlinearity": "gelu"}),
        ("kaiming_normal_", (3, 3), {"a": True}),
        ("xavier_uniform_", (0, 0), {}),
        ("xavier_normal_", (4,), {}),
        ("orthogonal_", (4,), {}),
        ("eye_", (2, 2, 2), {}),
        ("uniform_", (3,), {"a": 1.0, "b": 0.0}),
        ("normal_", (3,), {"std": -1.0}),
    ],
)
def test_existing_inits_raise_what_torch_raises(
    name: str, shape: tuple[int, ...], kwargs: dict[str, Any]
) -> None:
    outcome = _assert_same_outcome(name, shape, torch.float32, kwargs)
    assert outcome.error is not None

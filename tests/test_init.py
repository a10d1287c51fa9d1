"""nograd.nn.init against torch.nn.init: same seed, same bits."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from nograd.nn import init

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

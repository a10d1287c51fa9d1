"""nograd.nn.constants: cached tensors that stand in for Python numbers, bit for bit."""

from __future__ import annotations

import math

import pytest
import torch

from nograd.nn.constants import filled, one_like, scalar


def test_constants_made_in_inference_mode_are_normal_tensors() -> None:
    with torch.inference_mode():
        constant = filled(-0.375, (3, 1), torch.float64)
        like = torch.empty(2, dtype=torch.float16, device="meta")
        one = one_like(like)
    assert not constant.is_inference() and constant.device.type == "cpu"
    assert filled(-0.375, (3, 1), torch.float64) is constant  # made once
    assert not one.is_inference() and one.shape == () and one.dtype == torch.float16
    assert one.device.type == "meta" and one_like(like) is one  # made once
    assert torch.equal(one_like(torch.zeros(3, dtype=torch.float64)), torch.tensor(1.0).double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [-math.sqrt(0.5), 0.5, 1 / 3, 1e-30, -2.5e38])
def test_a_scalar_tensor_gives_the_bits_of_the_number(dtype: torch.dtype, value: float) -> None:
    x = torch.randn(1000, dtype=dtype) * 100
    c = scalar(value, x)
    assert isinstance(c, torch.Tensor) and c.shape == () and c.dtype == dtype
    assert scalar(value, x) is c  # made once
    assert torch.equal(x * c, x * value)
    assert torch.equal(x.clone().mul_(c), x.clone().mul_(value))
    assert torch.equal(x + c, x + value)


@pytest.mark.parametrize(
    "like",
    [torch.zeros(3, dtype=torch.float16), torch.zeros(3, dtype=torch.bfloat16),
     torch.zeros(3, device="meta")],
)  # fmt: skip
def test_elsewhere_the_number_itself(like: torch.Tensor) -> None:
    """Half precision computes x * c in float32, with c unrounded: a tensor would differ."""
    assert scalar(0.1, like) == 0.1 and not isinstance(scalar(0.1, like), torch.Tensor)

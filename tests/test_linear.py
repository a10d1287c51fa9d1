from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nograd.nn import Linear
from tests.oracle import assert_close, compare_module

DTYPES = [torch.float64, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    batch=st.integers(1, 17),
    d_in=st.integers(1, 9),
    d_out=st.integers(1, 9),
    bias=st.booleans(),
)
def test_linear_matches_autograd(
    dtype: torch.dtype, batch: int, d_in: int, d_out: int, bias: bool
) -> None:
    ours = Linear(d_in, d_out, bias=bias, dtype=dtype)
    ref = torch.nn.Linear(d_in, d_out, bias=bias, dtype=dtype)
    compare_module(ours, ref, torch.randn(batch, d_in, dtype=dtype))


def test_linear_accepts_leading_dimensions() -> None:
    ours = Linear(4, 3, dtype=torch.float64)
    ref = torch.nn.Linear(4, 3, dtype=torch.float64)
    compare_module(ours, ref, torch.randn(2, 5, 4, dtype=torch.float64))
    compare_module(ours, ref, torch.randn(4, dtype=torch.float64))


@pytest.mark.filterwarnings("ignore:.*zero-element tensors")
@pytest.mark.parametrize(("d_in", "d_out"), [(0, 3), (4, 0), (0, 0)])
@pytest.mark.parametrize("leading", [(), (2, 5), (2, 0)])
def test_linear_with_no_features_accepts_leading_dimensions(
    d_in: int, d_out: int, leading: tuple[int, ...]
) -> None:
    # torch.nn.Linear takes an empty feature dimension with any leading ones (a reshape
    # to (-1, 0) cannot infer its rows there)
    ours = Linear(d_in, d_out, dtype=torch.float64)
    ref = torch.nn.Linear(d_in, d_out, dtype=torch.float64)
    compare_module(ours, ref, torch.randn(*leading, d_in, dtype=torch.float64))


def test_linear_gradients_accumulate_until_zero_grad() -> None:
    layer = Linear(3, 2, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    g = torch.randn(4, 2, dtype=torch.float64)
    layer(x)
    layer.backward(g)
    assert layer.weight.grad is not None
    once = layer.weight.grad.clone()
    layer(x)
    layer.backward(g)
    assert_close(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert layer.weight.grad is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [3, 256])
def test_accumulated_gradients_are_torchs_bits(dtype: torch.dtype, batch: int) -> None:
    # Three backward passes before a step, as in gradient accumulation over micro-batches.
    # torch's AccumulateGrad adds each new dL/dW into .grad once it is computed; a product
    # that adds into .grad as it goes (addmm_) rounds differently in the last bits.
    generator = torch.Generator().manual_seed(batch)
    ref = torch.nn.Linear(300, 200, dtype=dtype)
    ours = Linear(300, 200, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    for _ in range(3):
        x = torch.randn(batch, 300, dtype=dtype, generator=generator)
        g = torch.randn(batch, 200, dtype=dtype, generator=generator)
        with torch.enable_grad():
            ref(x).backward(g)
        ours(x)
        ours.backward(g)
    assert ours.weight.grad is not None and ours.bias is not None
    assert torch.equal(ours.weight.grad, ref.weight.grad)
    assert torch.equal(ours.bias.grad, ref.bias.grad)


def test_linear_default_init_is_torch_bit_for_bit() -> None:
    torch.manual_seed(7)
    ours = Linear(25, 13)
    torch.manual_seed(7)
    ref = torch.nn.Linear(25, 13)
    assert torch.equal(ours.weight.data, ref.weight.detach())
    assert ours.bias is not None
    assert torch.equal(ours.bias.data, ref.bias.detach())
    assert ours.weight.data.abs().max() <= 1 / math.sqrt(25)


def test_linear_wrong_feature_count_names_module_and_shapes() -> None:
    layer = Linear(2, 25)
    with pytest.raises(ValueError, match=r"Linear\(in_features=2.*\(N, 2\), got \(10, 3\)"):
        layer(torch.randn(10, 3))


def test_linear_backward_before_forward() -> None:
    with pytest.raises(RuntimeError, match=r"Linear\(in_features=2.*before forward"):
        Linear(2, 3).backward(torch.randn(1, 3))


def test_linear_grad_output_of_wrong_shape() -> None:
    layer = Linear(2, 3)
    layer(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"Linear.*grad_output of shape \(4, 3\), got \(4, 2\)"):
        layer.backward(torch.randn(4, 2))


def test_linear_skips_input_grad_when_told() -> None:
    layer = Linear(3, 2, dtype=torch.float64)
    layer.needs_input_grad = False
    layer(torch.randn(4, 3, dtype=torch.float64))
    assert layer.backward(torch.randn(4, 2, dtype=torch.float64)).numel() == 0
    assert layer.weight.grad is not None


def test_linear_follows_its_weight_when_updated_or_rebound() -> None:
    """The forward keeps a view of W^T: in-place updates show through it, and a new
    weight.data (``to()``, an optimizer's flat buffer) is viewed afresh."""
    layer = Linear(3, 2, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)

    def expected() -> torch.Tensor:
        assert layer.bias is not None
        return torch.addmm(layer.bias.data, x, layer.weight.data.t())

    assert torch.equal(layer(x), expected())
    layer.weight.data.mul_(2)  # an optimizer step, in place
    assert torch.equal(layer(x), expected())
    flat = torch.zeros(9, dtype=torch.float64)
    flat[:6].copy_(layer.weight.data.flatten())
    layer.weight.data = flat[:6].view(2, 3)  # rebound to a view of one flat buffer
    flat.add_(1)
    assert torch.equal(layer(x), expected())
    layer.to(torch.float32)
    x = x.float()
    assert torch.equal(layer(x), expected())


def test_linear_repr() -> None:
    assert repr(Linear(2, 3, bias=False)) == "Linear(in_features=2, out_features=3, bias=False)"

"""Half precision in the layers, activations and losses that claim torch's bits.

A differential audit against torch.nn and autograd found three places where float16 or
bfloat16 took other bits than torch: Tanh's and Sigmoid's backward (torch's kernels
compute half types in float32, or by dtype and device) and MSELoss's gradient under
"mean" (torch's kernel rounds 2 / N to pred's dtype). These tests pin those, and the
other modules that already had torch's bits in half types, so that none drifts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from nograd.nn import (
    BCELoss,
    BCEWithLogitsLoss,
    HuberLoss,
    L1Loss,
    LeakyReLU,
    LogSoftmax,
    Loss,
    MSELoss,
    ReLU,
    Sigmoid,
    SiLU,
    SmoothL1Loss,
    Softplus,
    Tanh,
)
from nograd.nn.module import Module
from tests.oracle import assert_module_bits, same_bits, torch_loss_and_grad

HALF = [torch.float16, torch.bfloat16]
# special values torch's kernels and ours must agree on too
SPECIALS = [0.0, -0.0, 1.0, -1.0, 1000.0, -1000.0, 30.0, -30.0, float("inf"), float("-inf")]


def half_input(dtype: torch.dtype, seed: int, shape: tuple[int, ...] = (7, 37)) -> Tensor:
    """3 * N(0, 1) in ``dtype``, with SPECIALS in its first row; 259 elements cover both
    the vectorised loop of torch's CPU kernels and the scalar loop that ends each run."""
    gen = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(shape, generator=gen, dtype=torch.float64)
    x[0, : len(SPECIALS)] = torch.tensor(SPECIALS, dtype=torch.float64)
    return x.to(dtype)


def assert_loss_bits(
    ours: Loss, ref: torch.nn.Module, pred: Tensor, target: Tensor, g: Tensor | None
) -> None:
    """Value and dL/dpred of ``ours`` are torch's, bit for bit (NaN where torch's is:
    an infinite logit makes BCEWithLogitsLoss NaN in both)."""
    expected_loss, expected_grad = torch_loss_and_grad(ref, pred, target, g)
    loss = ours(pred, target)
    assert loss.dtype == expected_loss.dtype and same_bits(loss, expected_loss)
    assert same_bits(ours.backward(g), expected_grad)


def upstream(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------- activations
ACTIVATIONS: dict[str, Callable[[], tuple[Module, torch.nn.Module]]] = {
    "Tanh": lambda: (Tanh(), torch.nn.Tanh()),
    "Sigmoid": lambda: (Sigmoid(), torch.nn.Sigmoid()),
    "ReLU": lambda: (ReLU(), torch.nn.ReLU()),
    "ReLU-inplace": lambda: (ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
    "LeakyReLU": lambda: (LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    "SiLU": lambda: (SiLU(), torch.nn.SiLU()),
    "Softplus": lambda: (Softplus(2.0, 5.0), torch.nn.Softplus(2.0, 5.0)),
    "LogSoftmax": lambda: (LogSoftmax(dim=1), torch.nn.LogSoftmax(dim=1)),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_in_half_precision_is_torchs_to_the_bit(
    name: str, dtype: torch.dtype, seed: int
) -> None:
    ours, ref = ACTIVATIONS[name]()
    x = half_input(dtype, seed)
    assert_module_bits(ours, ref, x, upstream(tuple(x.shape), dtype, seed))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", ["Tanh", "Sigmoid"])
def test_tanh_and_sigmoid_backward_take_torchs_rounding_of_half_types(
    name: str, dtype: torch.dtype
) -> None:
    """torch computes Tanh's backward in float16 and bfloat16, and Sigmoid's in bfloat16,
    in float32 and rounds once: rounding 1 - y^2, or each of Sigmoid's two products, to
    the half type on the way puts thousands of these 10^5 gradients an ulp or more away."""
    ours, ref = ACTIVATIONS[name]()
    x = half_input(dtype, seed=7, shape=(100, 1000))
    g = upstream(tuple(x.shape), dtype, seed=7)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        ref(leaf).backward(g)
    ours(x)
    assert leaf.grad is not None
    assert torch.equal(ours.backward(g), leaf.grad)


# --------------------------------------------------------------------- losses
LOSSES: dict[str, Callable[[str], tuple[Loss, torch.nn.Module]]] = {
    "MSELoss": lambda r: (MSELoss(reduction=r), torch.nn.MSELoss(reduction=r)),
    "L1Loss": lambda r: (L1Loss(reduction=r), torch.nn.L1Loss(reduction=r)),
    "HuberLoss": lambda r: (HuberLoss(r, 0.5), torch.nn.HuberLoss(r, 0.5)),
    "SmoothL1Loss": lambda r: (
        SmoothL1Loss(reduction=r, beta=0.3),
        torch.nn.SmoothL1Loss(reduction=r, beta=0.3),
    ),
    "BCEWithLogitsLoss": lambda r: (
        BCEWithLogitsLoss(reduction=r),
        torch.nn.BCEWithLogitsLoss(reduction=r),
    ),
    "BCELoss": lambda r: (BCELoss(reduction=r), torch.nn.BCELoss(reduction=r)),
}


@pytest.mark.parametrize("scale", [None, -2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_in_half_precision_is_torchs_to_the_bit(
    name: str, dtype: torch.dtype, reduction: str, scale: float | None
) -> None:
    ours, ref = LOSSES[name](reduction)
    pred = half_input(dtype, seed=3, shape=(5, 13))
    target = torch.rand(pred.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    if name == "BCELoss":
        pred = torch.sigmoid(pred)  # probabilities
    g: Tensor | None
    if reduction == "none":
        g = upstream(tuple(pred.shape), dtype, seed=5)
    else:
        g = None if scale is None else torch.tensor(scale, dtype=dtype)
    assert_loss_bits(ours, ref, pred, target, g)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (1000,), (7,)])
def test_mse_mean_rounds_two_over_n_to_the_half_type_as_torch(
    dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    """torch's mse_loss_backward multiplies by 2 / N rounded to pred's dtype; the number
    itself (2 / 7 in float32 precision, say) gave other bits in about half the elements."""
    gen = torch.Generator().manual_seed(11)
    pred = (3 * torch.randn(shape, generator=gen)).to(dtype)
    target = torch.randn(shape, generator=gen).to(dtype)
    assert_loss_bits(MSELoss(), torch.nn.MSELoss(), pred, target, None)

"""HuberLoss and SmoothL1Loss (src/nograd/nn/huber.py) against torch.

The tests every loss shares (reductions, grad_output, legacy size_average/reduce, argument
order) are tests/test_losses.py's.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.gradcheck import gradcheck
from nograd.nn import Loss
from nograd.nn.huber import HuberLoss, SmoothL1Loss
from tests.oracle import assert_torchs_bits, elementwise_upstream

DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]

seeds = st.integers(0, 2**32 - 1)
# None: backward() as the training loop calls it; a number: a 0-dim grad_output
scales = st.sampled_from([None, 3.0, -0.5])


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    n=st.sampled_from([1, 3, 7, 17, 40, 333]),  # under and over torch's vectorised width
    threshold=st.sampled_from([1.0, 0.3, 2.7, 1e-3]),
    reduction=st.sampled_from(REDUCTIONS),
    scale=scales,
    seed=seeds,
)
def test_huber_and_smooth_l1_are_torchs_to_the_bit(
    dtype: torch.dtype, n: int, threshold: float, reduction: str, scale: float | None, seed: int
) -> None:
    """Both sides of the threshold, the threshold itself and d = 0; any upstream gradient.

    torch's backward kernel rounds in one order in its vectorised loop and in another
    in the loop that finishes the last elements, so sizes under and over the width of
    its vectors both matter; composed tensor ops miss some of those bits.
    """
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 3, generator=gen, dtype=dtype)
    d = 3 * threshold * torch.randn(n, 3, generator=gen, dtype=dtype)
    d.view(-1)[:4] = torch.tensor([threshold, -threshold, 0.0, threshold / 2])[: d.numel()]
    pred = target + d
    g = elementwise_upstream(reduction, (n, 3), scale, dtype)
    for ours, ref in [
        (HuberLoss(reduction, threshold), torch.nn.HuberLoss(reduction, threshold)),
        (
            SmoothL1Loss(reduction=reduction, beta=threshold),
            torch.nn.SmoothL1Loss(reduction=reduction, beta=threshold),
        ),
    ]:
        assert_torchs_bits(ours, ref, pred, target, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("scale", [None, 0.37])
def test_smooth_l1_with_beta_0_is_l1_as_in_torch(
    dtype: torch.dtype, reduction: str, scale: float | None
) -> None:
    """torch takes L1's route for beta = 0: its gradient at pred == target is 0."""
    target = torch.randn(40, 3, dtype=dtype)
    pred = target + torch.randn(40, 3, dtype=dtype)
    pred[:5] = target[:5]  # d = 0 exactly
    g = elementwise_upstream(reduction, (40, 3), scale, dtype)
    ours = SmoothL1Loss(reduction=reduction, beta=0.0)
    assert_torchs_bits(ours, torch.nn.SmoothL1Loss(reduction=reduction, beta=0.0), pred, target, g)
    grad = ours.backward(g)
    assert torch.equal(grad[:5], torch.zeros(5, 3, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_huber_and_smooth_l1_are_finite_at_1000(dtype: torch.dtype, reduction: str) -> None:
    pred = torch.tensor([1000.0, -1000.0, 1000.0, 0.5, -1000.0], dtype=dtype)
    target = torch.tensor([-1000.0, 1000.0, 1000.0, 0.0, 0.0], dtype=dtype)
    for ours, ref in [
        (HuberLoss(reduction, delta=2.0), torch.nn.HuberLoss(reduction, delta=2.0)),
        (SmoothL1Loss(reduction=reduction), torch.nn.SmoothL1Loss(reduction=reduction)),
    ]:
        loss = ours(pred, target)
        assert loss.isfinite().all()
        grad = ours.backward(torch.ones_like(loss))
        assert grad.isfinite().all()
        # the line's slope far out: delta sign(d) for Huber, sign(d) for smooth L1
        slope = 2.0 if isinstance(ours, HuberLoss) else 1.0
        per_element = 1 / 5 if reduction == "mean" else 1.0
        expected = torch.tensor([slope, -slope], dtype=dtype) * per_element
        assert torch.equal(grad[:2], expected)
        assert_torchs_bits(ours, ref, pred, target, torch.ones_like(loss))


def test_huber_and_smooth_l1_refuse_thresholds_torch_refuses() -> None:
    pred, target = torch.randn(3), torch.randn(3)
    for delta in [0.0, -1.0, math.nan]:
        with pytest.raises(RuntimeError, match="non-positive values for delta"):
            torch.nn.HuberLoss(delta=delta)(pred, target)
        with pytest.raises(RuntimeError, match=rf"^HuberLoss: expected delta > 0, got {delta}"):
            HuberLoss(delta=delta)
    for beta in [-1.0, math.nan]:
        with pytest.raises(RuntimeError, match="negative values for beta"):
            torch.nn.SmoothL1Loss(beta=beta)(pred, target)
        with pytest.raises(RuntimeError, match=rf"^SmoothL1Loss: expected beta >= 0, got {beta}"):
            SmoothL1Loss(beta=beta)
    SmoothL1Loss(beta=0.0)(pred, target)  # L1, allowed as in torch


@pytest.mark.parametrize(
    ("loss_fn", "pred", "target"),
    [
        (HuberLoss(delta=0.5), torch.tensor([0.1, -0.3, 2.0, -1.5, 0.7]).double(),
         torch.zeros(5).double()),
        (SmoothL1Loss(beta=0.5, reduction="sum"), torch.tensor([0.1, -0.3, 2.0, -1.5]).double(),
         torch.zeros(4).double()),
        (SmoothL1Loss(beta=0.0), torch.tensor([0.1, -0.3, 2.0]).double(), torch.zeros(3).double()),
    ],
)  # fmt: skip
def test_huber_and_smooth_l1_pass_central_differences(
    loss_fn: Loss, pred: Tensor, target: Tensor
) -> None:
    """The backward against the definition, with no torch oracle (away from the kinks)."""
    gradcheck(loss_fn, pred, target).assert_ok()

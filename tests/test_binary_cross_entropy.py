"""BCELoss and BCEWithLogitsLoss (src/nograd/nn/binary_cross_entropy.py) against torch.

The tests every loss shares (reductions, grad_output, legacy size_average/reduce, argument
order) are tests/test_losses.py's.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.gradcheck import gradcheck
from nograd.nn import BCEWithLogitsLoss, Loss
from nograd.nn.binary_cross_entropy import BCELoss
from tests.oracle import assert_torchs_bits, compare_loss, elementwise_upstream

DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]

seeds = st.integers(0, 2**32 - 1)
# None: backward() as the training loop calls it; a number: a 0-dim grad_output
scales = st.sampled_from([None, 3.0, -0.5])


# The shapes a BCE weight or pos_weight takes, for pred of shape (n, c); None: no weight.
WEIGHT_SHAPES = {
    "none": lambda n, c: None,
    "scalar": lambda n, c: (),
    "per class": lambda n, c: (c,),
    "per row": lambda n, c: (n, 1),
    "per element": lambda n, c: (n, c),
}


# ------------------------------------------------------------ with logits
@pytest.mark.parametrize("dtype", DTYPES)
@given(
    n=st.integers(1, 6),
    c=st.integers(1, 5),
    weight_shape=st.sampled_from(list(WEIGHT_SHAPES)),
    pos_weight_shape=st.sampled_from(["none", "scalar", "per class"]),
    reduction=st.sampled_from(REDUCTIONS),
    scale=scales,
    seed=seeds,
)
def test_bce_with_weights_matches_torch(
    dtype: torch.dtype,
    n: int,
    c: int,
    weight_shape: str,
    pos_weight_shape: str,
    reduction: str,
    scale: float | None,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    pred = 3 * torch.randn(n, c, generator=gen, dtype=dtype)
    target = torch.rand(n, c, generator=gen, dtype=dtype).round()

    def draw(shape: tuple[int, ...] | None, scale: float) -> Tensor | None:
        return None if shape is None else scale * torch.rand(shape, generator=gen, dtype=dtype)

    weight = draw(WEIGHT_SHAPES[weight_shape](n, c), 2)
    pos_weight = draw(WEIGHT_SHAPES[pos_weight_shape](n, c), 3)
    ours = BCEWithLogitsLoss(weight, reduction=reduction, pos_weight=pos_weight)
    ref = torch.nn.BCEWithLogitsLoss(weight, reduction=reduction, pos_weight=pos_weight)
    compare_loss(ours, ref, pred, target, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [None, 2.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_is_finite_at_1000(
    dtype: torch.dtype, reduction: str, pos_weight: float | None, weighted: bool
) -> None:
    logits = torch.tensor([1000.0, -1000.0, 1000.0, -1000.0, 0.0, 1000.0], dtype=dtype)
    target = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5, 0.3], dtype=dtype)
    p = None if pos_weight is None else torch.tensor(pos_weight, dtype=dtype)
    # a zero weight where the loss is 1000: 0 * 1000, never 0 * inf
    w = torch.tensor([0.0, 2.0, 0.5, 1.0, 3.0, 0.25], dtype=dtype) if weighted else None
    ours = BCEWithLogitsLoss(reduction=reduction, pos_weight=p, weight=w)
    loss = ours(logits, target)
    assert loss.isfinite().all()
    assert ours.backward(torch.ones_like(loss)).isfinite().all()
    ref = torch.nn.BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=p)
    compare_loss(ours, ref, logits, target, None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, *DTYPES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weighted", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_value_and_gradient_are_autograds_to_the_bit(
    dtype: torch.dtype, reduction: str, pos_weighted: bool, weighted: bool
) -> None:
    """The same ops in the same order as torch's forward and backward, in any precision.

    (s(z) - y) * (1 / N), or a loss written as softplus(z) - z y, differ from torch's
    numbers in the last bit.
    """
    generator = torch.Generator().manual_seed(3)
    pred = (3 * torch.randn(5, 7, generator=generator)).to(dtype)
    target = torch.rand(5, 7, generator=generator).to(dtype)
    pos_weight = (3 * torch.rand(7, generator=generator)).to(dtype) if pos_weighted else None
    weight = (2 * torch.rand(5, 1, generator=generator)).to(dtype) if weighted else None
    g = torch.randn(5, 7, generator=generator).to(dtype) if reduction == "none" else None
    z = pred.clone().requires_grad_()
    ref_fn = torch.nn.BCEWithLogitsLoss(weight=weight, reduction=reduction, pos_weight=pos_weight)
    with torch.enable_grad():
        expected = ref_fn(z, target)
        expected.backward(g)
    ours = BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight, weight=weight)
    assert torch.equal(ours(pred, target), expected.detach())
    assert torch.equal(ours.backward(g), z.grad)


def test_bce_pos_weight_errors() -> None:
    pred, target = torch.randn(4, 3), torch.rand(4, 3)
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\).*pred's shape \(4, 3\)"):
        BCEWithLogitsLoss(pos_weight=torch.ones(2))(pred, target)
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2, 4, 3\)"):
        BCEWithLogitsLoss(pos_weight=torch.ones(2, 4, 3))(pred, target)
    with pytest.raises(TypeError, match=r"pos_weight of dtype torch.float32.*got torch.float64"):
        BCEWithLogitsLoss(pos_weight=torch.ones(3, dtype=torch.float64))(pred, target)
    with pytest.raises(TypeError, match=r"BCEWithLogitsLoss: pos_weight must be a Tensor, got \["):
        BCEWithLogitsLoss(pos_weight=[1.0, 2.0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ours", "ref"), [(BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss), (BCELoss, torch.nn.BCELoss)]
)
def test_bce_weight_errors(ours: type[Loss], ref: type[torch.nn.Module]) -> None:
    pred, target = torch.rand(4, 3), torch.rand(4, 3)  # probabilities suit both
    for weight in [torch.ones(2), torch.ones(4, 2), torch.ones(2, 4, 3)]:
        with pytest.raises(RuntimeError):  # torch refuses these shapes too
            ref(weight=weight)(pred, target)
        message = rf"weight of shape {re.escape(str(tuple(weight.shape)))} does not broadcast"
        with pytest.raises(ValueError, match=message + r".*pred's shape \(4, 3\)"):
            ours(weight=weight)(pred, target)  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"expected weight of dtype torch.float32.*got torch.float64"
    ):
        ours(weight=torch.ones(3, dtype=torch.float64))(pred, target)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=rf"{ours.__name__}: weight must be a Tensor, got \["):
        ours(weight=[1.0, 2.0])  # type: ignore[call-arg]


# ------------------------------------------------------------ on probabilities
@pytest.mark.parametrize("dtype", DTYPES)
@given(
    n=st.sampled_from([1, 2, 7, 40, 333]),  # under and over torch's vectorised width
    c=st.integers(1, 5),
    weight_shape=st.sampled_from(list(WEIGHT_SHAPES)),
    hard_labels=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    scale=scales,
    seed=seeds,
)
def test_bce_on_probabilities_is_torchs_to_the_bit(
    dtype: torch.dtype,
    n: int,
    c: int,
    weight_shape: str,
    hard_labels: bool,
    reduction: str,
    scale: float | None,
    seed: int,
) -> None:
    """Value and gradient, weighted or not, with p = 0 and p = 1 among the inputs."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(n, c, generator=gen, dtype=dtype)
    p.view(-1)[:2] = torch.tensor([0.0, 1.0])[: p.numel()]  # where the logs are clamped
    y = torch.rand(n, c, generator=gen, dtype=dtype)
    if hard_labels:
        y = y.round()
    shape = WEIGHT_SHAPES[weight_shape](n, c)
    w = None if shape is None else 2 * torch.rand(shape, generator=gen, dtype=dtype)
    ours, ref = BCELoss(w, reduction=reduction), torch.nn.BCELoss(w, reduction=reduction)
    assert_torchs_bits(ours, ref, p, y, elementwise_upstream(reduction, (n, c), scale, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_on_probabilities_is_finite_at_0_and_1(dtype: torch.dtype, reduction: str) -> None:
    """Each log is clamped at -100, and (1 - p) p at eps, as in torch: no inf, no NaN.

    In float64 eps is 1e-12 rounded to float32, torch's constant; 1e-12 itself gives
    other gradients at p = 0 and 1.
    """
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 1e-30, 1 - 1e-7], dtype=dtype)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.7, 0.3], dtype=dtype)
    ours = BCELoss(reduction=reduction)
    loss = ours(p, y)
    assert loss.isfinite().all()
    if reduction == "none":
        assert torch.equal(loss[:4], torch.tensor([100.0, 100.0, 0.0, 0.0], dtype=dtype))
    grad = ours.backward(torch.ones_like(loss))
    assert grad.isfinite().all()
    g = torch.ones_like(loss)
    assert_torchs_bits(BCELoss(reduction=reduction), torch.nn.BCELoss(reduction=reduction), p, y, g)


@pytest.mark.parametrize(
    ("p", "y", "which"),
    [
        ([0.5, 1.5], [1.0, 0.0], "input"),
        ([0.5, -0.1], [1.0, 0.0], "input"),
        ([0.5, math.nan], [1.0, 0.0], "input"),
        ([0.5, 0.5], [1.0, 1.5], "target"),
        ([0.5, 0.5], [math.nan, 0.0], "target"),
    ],
)
def test_bce_refuses_what_is_not_a_probability_as_torch(
    p: list[float], y: list[float], which: str
) -> None:
    pred, target = torch.tensor(p), torch.tensor(y)
    with pytest.raises(RuntimeError, match=f"{which} should be between 0 and 1"):
        torch.nn.BCELoss()(pred, target)
    message = rf"^BCELoss\(reduction='sum'\): all elements of {which} should be between 0 and 1"
    with pytest.raises(RuntimeError, match=message):
        BCELoss(reduction="sum")(pred, target)


@pytest.mark.parametrize(
    ("loss_fn", "pred", "target"),
    [
        (BCELoss(), torch.rand(5, 3).double().clamp(0.05, 0.95), torch.rand(5, 3).double()),
        (BCELoss(torch.rand(3).double(), reduction="sum"), torch.rand(4, 3).double() * 0.8 + 0.1,
         torch.rand(4, 3).double().round()),
    ],
)  # fmt: skip
def test_bce_passes_central_differences(loss_fn: Loss, pred: Tensor, target: Tensor) -> None:
    """The backward against the definition, with no torch oracle (away from p = 0 and 1)."""
    gradcheck(loss_fn, pred, target).assert_ok()


def test_bce_weight_is_a_buffer_named_as_in_torch() -> None:
    w = torch.rand(3)
    ours, ref = BCELoss(w), torch.nn.BCELoss(w)
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight"]
    assert BCELoss().state_dict() == {} == dict(torch.nn.BCELoss().state_dict())
    ours.to(torch.float64)
    assert ours.weight is not None and ours.weight.dtype == torch.float64

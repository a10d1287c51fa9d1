"""CrossEntropyLoss against class probabilities, soft labels (nn/soft_targets.py):
a floating target of the logits' shape, (N, C), one sample (C,) or K-dimensional.

The oracle is torch.nn.CrossEntropyLoss run by autograd on the same logits and
targets; value and gradient must be its very bits (torch.equal), in float32 and
float64, or agree within tests/oracle.py's tolerance where a test says so. Class
indices are tested in test_cross_entropy.py and test_cross_entropy_shapes.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.nn import CrossEntropyLoss, Loss
from tests.oracle import assert_cross_entropy_bits, class_dim, index_shape, upstream

DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]
# one sample, then K = 1, 2 and 3 dims after (N, C)
SHAPES = [(5,), (3, 5, 4), (2, 5, 3, 4), (2, 5, 3, 2, 2)]
SHAPE_IDS = ["C", "N,C,d1", "N,C,d1,d2", "N,C,d1,d2,d3"]

seeds = st.integers(0, 2**32 - 1)
# None: backward() as the training loop calls it; a number: a 0-dim grad_output
scales = st.sampled_from([None, 3.0, -0.5])


# ------------------------------------------------------ oracle tests, every shape
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@given(
    reduction=st.sampled_from(REDUCTIONS),
    label_smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    weighted=st.booleans(),
    scale=scales,
    seed=seeds,
)
def test_class_probabilities_of_any_shape_are_torchs_to_the_bit(
    dtype: torch.dtype,
    shape: tuple[int, ...],
    reduction: str,
    label_smoothing: float,
    weighted: bool,
    scale: float | None,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    dim = class_dim(shape)
    z = (4 * torch.randn(shape, generator=gen)).to(dtype)
    q = torch.softmax(torch.randn(shape, generator=gen), dim).to(dtype)
    options: dict[str, Any] = {"reduction": reduction, "label_smoothing": label_smoothing}
    if weighted:
        options["weight"] = torch.rand(shape[dim], generator=gen).to(dtype)
    g = upstream(reduction, shape, scale, dtype, seed)
    assert_cross_entropy_bits(CrossEntropyLoss(**options), z, q, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("targets", ["sum to 3", "negative", "of 100", "logits of 1000"])
def test_class_probabilities_torch_does_not_check_give_its_numbers(
    dtype: torch.dtype, shape: tuple[int, ...], targets: str
) -> None:
    """torch scores any q, whether its rows sum to 1 or not: the gradient is then
    sum_c(q_ic) p_i - q_i, not p_i - q_i, and it must be torch's all the same."""
    gen = torch.Generator().manual_seed(len(shape))
    z = (4 * torch.randn(shape, generator=gen)).to(dtype)
    q = {
        "sum to 3": 3 * torch.softmax(torch.randn(shape, generator=gen), class_dim(shape)),
        "negative": torch.randn(shape, generator=gen),
        "of 100": 100 * torch.randn(shape, generator=gen),
        "logits of 1000": torch.rand(shape, generator=gen),
    }[targets].to(dtype)
    if targets == "logits of 1000":
        z = 1000 * z.sign()
    weight = torch.rand(shape[class_dim(shape)], generator=gen).to(dtype)
    for reduction in REDUCTIONS:
        g = upstream(reduction, shape, 2.0, dtype, 0)
        ours = CrossEntropyLoss(weight, reduction=reduction, label_smoothing=0.2)
        assert_cross_entropy_bits(ours, z, q, g)
        assert ours(z, q).isfinite().all() and ours.backward(g).isfinite().all()


# ----------------------------------------------------------------------- (N, C)
@pytest.mark.parametrize("dtype", DTYPES)
@given(
    n=st.integers(1, 6),
    c=st.integers(1, 5),
    reduction=st.sampled_from(REDUCTIONS),
    weighted=st.booleans(),
    label_smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    scale=scales,
    seed=seeds,
)
def test_cross_entropy_with_class_probabilities_is_torchs_to_the_bit(
    dtype: torch.dtype,
    n: int,
    c: int,
    reduction: str,
    weighted: bool,
    label_smoothing: float,
    scale: float | None,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    z = (4 * torch.randn(n, c, generator=gen)).to(dtype)
    q = torch.softmax(torch.randn(n, c, generator=gen), 1).to(dtype)
    weight = torch.rand(c, generator=gen).to(dtype) if weighted else None
    options = {"weight": weight, "reduction": reduction, "label_smoothing": label_smoothing}
    ours = CrossEntropyLoss(**options)  # type: ignore[arg-type]
    ref = torch.nn.CrossEntropyLoss(**options)  # type: ignore[arg-type]
    if reduction == "none":
        g: Tensor | None = torch.randn(n, generator=gen).to(dtype)
    else:
        g = None if scale is None else torch.tensor(scale, dtype=dtype)
    leaf = z.clone().requires_grad_()
    with torch.enable_grad():
        expected = ref(leaf, q)
        expected.backward(g)
    assert torch.equal(ours(z, q), expected.detach())
    assert torch.equal(ours.backward(g), leaf.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_with_class_probabilities_stays_finite_at_1000(dtype: torch.dtype) -> None:
    z = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0]], dtype=dtype)
    q = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=dtype)
    ours = CrossEntropyLoss()
    leaf = z.clone().requires_grad_()
    with torch.enable_grad():
        expected = torch.nn.CrossEntropyLoss()(leaf, q)
        expected.backward()
    loss = ours(z, q)
    assert torch.isfinite(loss) and torch.equal(loss, expected.detach())
    assert torch.equal(ours.backward(), leaf.grad)


def test_cross_entropy_switches_between_indices_and_probabilities() -> None:
    ours, ref = CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    z, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    q = torch.nn.functional.one_hot(y, 3).float()
    for target in (q, y, q):
        leaf = z.clone().requires_grad_()
        with torch.enable_grad():
            expected = ref(leaf, target)
            expected.backward()
        assert torch.equal(ours(z, target), expected.detach())
        assert torch.equal(ours.backward(), leaf.grad)


def test_cross_entropy_with_no_rows_of_probabilities_is_nan_as_torch() -> None:
    z, q = torch.randn(0, 3), torch.rand(0, 3)
    loss = CrossEntropyLoss()(z, q)
    assert torch.isnan(loss) and torch.isnan(torch.nn.CrossEntropyLoss()(z, q))


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_class_probabilities_of_another_shape_or_dtype_are_refused(shape: tuple[int, ...]) -> None:
    z = torch.randn(shape)
    expected = re.escape(str(index_shape(shape)))
    with pytest.raises(
        TypeError, match=rf"class indices of shape {expected}\) or class probabilities of pred's"
    ):
        CrossEntropyLoss()(z, torch.rand(*shape, 2))
    with pytest.raises(TypeError, match=r"class probabilities of dtype torch.float32"):
        CrossEntropyLoss()(z, torch.rand(shape, dtype=torch.float64))
    with pytest.raises(ValueError, match="ignore_index is not supported"):
        CrossEntropyLoss(ignore_index=0)(z, torch.rand(shape))


@pytest.mark.parametrize(
    ("loss_fn", "pred", "target", "error", "message"),
    [
        (
            CrossEntropyLoss(),
            torch.randn(4, 3),
            torch.rand(4, 2),
            TypeError,
            r"class probabilities of pred's shape \(4, 3\), got torch.float32 of shape \(4, 2\)",
        ),
        (
            CrossEntropyLoss(),
            torch.randn(4, 3),
            torch.rand(4, 3, dtype=torch.float64),
            TypeError,
            "class probabilities of dtype torch.float32",
        ),
        (
            CrossEntropyLoss(ignore_index=0),
            torch.randn(4, 3),
            torch.rand(4, 3),
            ValueError,
            "ignore_index is not supported",
        ),
        (
            CrossEntropyLoss(torch.ones(2)),
            torch.randn(4, 3),
            torch.rand(4, 3),
            ValueError,
            r"weight of shape \(3,\)",
        ),
    ],
)
def test_class_probabilities_that_do_not_fit_are_refused(
    loss_fn: Loss, pred: Tensor, target: Tensor, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        loss_fn(pred, target)

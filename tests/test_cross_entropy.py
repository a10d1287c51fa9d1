"""CrossEntropyLoss: class indices or class probabilities, (N, C), one sample (C,)
and K-dimensional inputs.

The oracle is torch.nn.CrossEntropyLoss run by autograd on the same logits and
targets; value and gradient must be its very bits (torch.equal), in float32 and
float64, or agree within tests/oracle.py's tolerance where a test says so. What
every loss shares (reductions, grad_output, legacy size_average/reduce, argument
order) is tested in test_losses.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.gradcheck import gradcheck
from nograd.nn import CrossEntropyLoss, Loss
from tests.oracle import (
    OpNames,
    assert_loss_close,
    class_dim,
    compare_loss,
    index_shape,
    torch_loss_and_grad,
    upstream,
)

DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]
# one sample, then K = 1, 2 and 3 dims after (N, C): the route to each kernel
SHAPES = [(5,), (3, 5, 4), (2, 5, 3, 4), (2, 5, 3, 2, 2)]
SHAPE_IDS = ["C", "N,C,d1", "N,C,d1,d2", "N,C,d1,d2,d3"]

seeds = st.integers(0, 2**32 - 1)
# None: backward() as the training loop calls it; a number: a 0-dim grad_output
scales = st.sampled_from([None, 3.0, -0.5])


def autograd(
    options: dict[str, Any], z: Tensor, target: Tensor, g: Tensor | None
) -> tuple[Tensor, Tensor]:
    """torch's loss and dL/dz for logits z, by torch.nn.CrossEntropyLoss and autograd."""
    return torch_loss_and_grad(torch.nn.CrossEntropyLoss(**options), z, target, g)


def assert_bits(ours: CrossEntropyLoss, z: Tensor, target: Tensor, g: Tensor | None) -> None:
    """Value and gradient of ``ours`` are torch's, bit for bit (NaN where torch's is)."""
    options: dict[str, Any] = {
        "weight": ours.weight,
        "ignore_index": ours.ignore_index,
        "reduction": ours.reduction,
        "label_smoothing": ours.label_smoothing,
    }
    expected, expected_grad = autograd(options, z, target, g)
    loss = ours(z, target)
    assert loss.shape == expected.shape
    torch.testing.assert_close(loss, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(ours.backward(g), expected_grad)


# ------------------------------------------------------ oracle tests, every shape
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@given(
    reduction=st.sampled_from(REDUCTIONS),
    label_smoothing=st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0.0, 1.0),
    weighted=st.booleans(),
    ignore=st.sampled_from(["nothing", "-100", "a class"]),
    scale=scales,
    seed=seeds,
)
def test_class_indices_of_any_shape_are_torchs_to_the_bit(
    dtype: torch.dtype,
    shape: tuple[int, ...],
    reduction: str,
    label_smoothing: float,
    weighted: bool,
    ignore: str,
    scale: float | None,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    c = shape[class_dim(shape)]
    z = (3 * torch.randn(shape, generator=gen)).to(dtype)
    y = torch.randint(0, c, index_shape(shape), generator=gen)
    options: dict[str, Any] = {"reduction": reduction, "label_smoothing": label_smoothing}
    if weighted:
        options["weight"] = (torch.rand(c, generator=gen) + 0.1).to(dtype)
    if ignore == "-100":
        y = y.masked_fill(torch.rand(y.shape, generator=gen) < 0.4, -100)
    elif ignore == "a class":
        options["ignore_index"] = c - 1
    g = upstream(reduction, shape, scale, dtype, seed)
    assert_bits(CrossEntropyLoss(**options), z, y, g)


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
    assert_bits(CrossEntropyLoss(**options), z, q, g)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2, "weight": True}])
def test_every_row_ignored_gives_torchs_nan_and_a_zero_gradient(
    shape: tuple[int, ...], reduction: str, options: dict[str, Any]
) -> None:
    """ "mean" over no rows is 0/0: NaN, as in torch; the gradient is 0 all the same."""
    z = torch.randn(shape)
    y = torch.full(index_shape(shape), -100)
    if options.get("weight"):
        options = {**options, "weight": torch.rand(shape[class_dim(shape)]) + 0.1}
    ours = CrossEntropyLoss(reduction=reduction, **options)
    g = torch.randn(y.shape) if reduction == "none" else None
    assert_bits(ours, z, y, g)
    loss = ours(z, y)
    assert loss.isnan() if reduction == "mean" else torch.equal(loss, torch.zeros(loss.shape))
    assert torch.equal(ours.backward(g), torch.zeros(shape))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("shape", "target_shape"),
    [((0, 4, 3), (0, 3)), ((2, 4, 0), (2, 0)), ((0, 4, 2, 2), (0, 2, 2)), ((2, 4, 0, 3, 1), None)],
)
def test_empty_inputs_are_torchs(
    reduction: str, shape: tuple[int, ...], target_shape: tuple[int, ...] | None
) -> None:
    """No rows: "mean" is NaN, the others empty or 0, and the gradient is empty."""
    z = torch.randn(shape)
    y = torch.zeros(target_shape or index_shape(shape), dtype=torch.long)
    g = torch.randn(y.shape) if reduction == "none" else None
    assert_bits(CrossEntropyLoss(reduction=reduction), z, y, g)
    assert_bits(CrossEntropyLoss(reduction=reduction), z, torch.rand(shape), g)


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
        assert_bits(ours, z, q, g)
        assert ours(z, q).isfinite().all() and ours.backward(g).isfinite().all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (2, 0, 3)], ids=str)
@pytest.mark.parametrize("soft", [False, True])
def test_no_classes_with_label_smoothing_is_torchs(
    reduction: str, shape: tuple[int, ...], soft: bool
) -> None:
    """Each class's share e / C is inf for C = 0, as torch divides: the targets are
    empty, or every row ignored, and the loss is torch's -0 or NaN, not an error."""
    z = torch.randn(shape, dtype=torch.float64)
    if soft:
        target = torch.rand(shape, dtype=torch.float64)
    elif len(shape) == 3:
        pytest.skip("torch's image kernel refuses (N, 0, d1) with class indices")
    else:
        target = torch.full(index_shape(shape), -100)
    g = torch.randn(index_shape(shape), dtype=torch.float64) if reduction == "none" else None
    assert_bits(CrossEntropyLoss(reduction=reduction, label_smoothing=0.3), z, target, g)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_a_sequence_models_logits_moved_to_dim_1_are_torchs(
    reduction: str, label_smoothing: float
) -> None:
    """(N, L, C) logits moved to (N, C, L) are not contiguous, nor is a sliced dL/dl."""
    z = torch.randn(4, 7, 6).transpose(1, 2)  # (N, C, L) = (4, 6, 7), classes strided
    y = torch.randint(0, 6, (4, 7)).masked_fill(torch.rand(4, 7) < 0.2, -100)
    g = torch.randn(4, 7, 2)[..., 0] if reduction == "none" else None
    assert_bits(CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing), z, y, g)


@pytest.mark.parametrize("shape", SHAPES[1:], ids=SHAPE_IDS[1:])
def test_integer_targets_of_any_dtype_are_class_indices(shape: tuple[int, ...]) -> None:
    z = torch.randn(shape, dtype=torch.float64)
    y = torch.randint(0, shape[1], index_shape(shape))
    ours = CrossEntropyLoss(reduction="none")
    for dtype in (torch.int32, torch.uint8):
        assert torch.equal(ours(z, y.to(dtype)), CrossEntropyLoss(reduction="none")(z, y))


# ------------------------------------------------- (N, C) class indices, the usual case
@pytest.mark.parametrize("dtype", DTYPES)
@given(
    n=st.integers(1, 9),
    c=st.sampled_from([1, 2, 3, 5, 7]),
    reduction=st.sampled_from(REDUCTIONS),
    label_smoothing=st.sampled_from([0.0, 0.1, 1.0]) | st.floats(0.0, 1.0),
    weighted=st.booleans(),
    ignore=st.sampled_from(["nothing", "-100", "a class"]),
    scale=scales,
    seed=seeds,
)
def test_cross_entropy_matches_torch(
    dtype: torch.dtype,
    n: int,
    c: int,
    reduction: str,
    label_smoothing: float,
    weighted: bool,
    ignore: str,
    scale: float | None,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, c, generator=gen, dtype=dtype)
    target = torch.randint(0, c, (n,), generator=gen)
    options: dict[str, Any] = {"label_smoothing": label_smoothing}
    if weighted:
        options["weight"] = torch.rand(c, generator=gen, dtype=dtype) + 0.1
    if ignore == "-100":
        dropped = torch.rand(n, generator=gen) < 0.4
        target = target.masked_fill(dropped, -100)
    elif ignore == "a class":
        options["ignore_index"] = c - 1
    ours = CrossEntropyLoss(reduction=reduction, **options)
    ref = torch.nn.CrossEntropyLoss(reduction=reduction, **options)
    compare_loss(ours, ref, logits, target, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 6, 300])
@given(
    reduction=st.sampled_from(REDUCTIONS),
    label_smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    weighted=st.booleans(),
    ignore=st.sampled_from(["nothing", "-100", "a class"]),
    seed=seeds,
)
def test_cross_entropy_is_torchs_to_the_bit_with_every_option(
    dtype: torch.dtype,
    n: int,
    reduction: str,
    label_smoothing: float,
    weighted: bool,
    ignore: str,
    seed: int,
) -> None:
    """Label smoothing, class weights and ignored rows: value and gradient, bit for bit.

    The smoothing term follows torch's own decomposition op for op, so a float32 run
    with any of these options trains as PyTorch's does.
    """
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, 5, generator=gen)).to(dtype)
    target = torch.randint(0, 5, (n,), generator=gen)
    options: dict[str, Any] = {"label_smoothing": label_smoothing}
    if weighted:
        options["weight"] = (torch.rand(5, generator=gen) + 0.1).to(dtype)
    if ignore == "-100":
        target = target.masked_fill(torch.rand(n, generator=gen) < 0.3, -100)
    elif ignore == "a class":
        options["ignore_index"] = 4
    g = torch.randn(n, generator=gen).to(dtype) if reduction == "none" else None
    z = logits.clone().requires_grad_()
    with torch.enable_grad():
        expected = torch.nn.CrossEntropyLoss(reduction=reduction, **options)(z, target)
        expected.backward(g)
    ours = CrossEntropyLoss(reduction=reduction, **options)
    loss = ours(logits, target)
    torch.testing.assert_close(loss, expected.detach(), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(ours.backward(g), z.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, *DTYPES])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000, 4099])
def test_cross_entropy_value_has_the_bits_of_torch(
    dtype: torch.dtype, reduction: str, n: int
) -> None:
    """The loss value is torch's to the last bit, ignored rows or not, in any reduction."""
    logits = 3 * torch.randn(n, 5, dtype=dtype)
    target = torch.randint(0, 5, (n,))
    ignored = target.masked_fill(torch.rand(n) < 0.3, -100)
    for y in (target, ignored):
        ours = CrossEntropyLoss(reduction=reduction)(logits, y)
        theirs = torch.nn.functional.cross_entropy(logits, y, reduction=reduction)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)  # all ignored: NaN


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, *DTYPES])
@pytest.mark.parametrize("n", [1, 5, 1000])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradient_is_autograds_to_the_bit(
    dtype: torch.dtype, n: int, reduction: str
) -> None:
    """The usual case runs torch's own backward kernels: autograd's bits, in any precision.

    The textbook (p - onehot(y)) / N, built from exp, scatter_add_ and mul_, differs from
    them in the last bit (softmax's backward kernel has an exp of its own), and so would a
    whole float32 training run.
    """
    generator = torch.Generator().manual_seed(n)
    logits = (3 * torch.randn(n, 4, generator=generator)).to(dtype)
    target = torch.randint(0, 4, (n,), generator=generator)
    if n > 1:
        target[0] = -100  # an ignored row, which the kernels skip as autograd's do
    g = torch.rand(n, generator=generator).to(dtype) if reduction == "none" else None
    z = logits.clone().requires_grad_()
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(z, target, reduction=reduction)
        loss.backward(g)
    ours = CrossEntropyLoss(reduction=reduction)
    assert torch.equal(ours(logits, target), loss.detach())
    assert torch.equal(ours.backward(g), z.grad)


def test_cross_entropy_all_rows_ignored_gives_nan_loss_and_zero_gradient() -> None:
    logits = torch.randn(3, 4, dtype=torch.float64)
    target = torch.full((3,), -100)
    for options in [{}, {"label_smoothing": 0.2, "weight": torch.rand(4, dtype=torch.float64)}]:
        compare_loss(
            CrossEntropyLoss(**options), torch.nn.CrossEntropyLoss(**options), logits, target, None
        )
    loss_fn = CrossEntropyLoss()
    assert loss_fn(logits, target).isnan()
    assert torch.equal(loss_fn.backward(), torch.zeros_like(logits))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_backward_finds_rows_the_quick_forward_skipped(reduction: str) -> None:
    """nll_loss skips an ignored row silently; the backward must zero it, every call."""
    logits = torch.randn(5, 3, dtype=torch.float64)
    target = torch.tensor([0, -100, 2, 1, -100])
    ours = CrossEntropyLoss(reduction=reduction)
    compare_loss(ours, torch.nn.CrossEntropyLoss(reduction=reduction), logits, target, 2.0)
    grad_output = torch.ones(5, dtype=torch.float64) if reduction == "none" else None
    grad = ours.backward(grad_output)
    assert torch.equal(grad[[1, 4]], torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(ours.backward(grad_output), grad)  # the second call agrees


@pytest.mark.parametrize("n", [1, 300])  # a long target is range-checked on the device
def test_cross_entropy_large_batch_with_ignored_rows(n: int) -> None:
    logits = torch.randn(n, 4, dtype=torch.float64)
    target = torch.randint(0, 4, (n,)).masked_fill(torch.rand(n) < 0.3, -100)
    target[0] = -100
    options: dict[str, Any] = {"label_smoothing": 0.2}
    ours, ref = CrossEntropyLoss(**options), torch.nn.CrossEntropyLoss(**options)
    compare_loss(ours, ref, logits, target, None)
    with pytest.raises(ValueError, match=r"C=4.*got values in \[\d, 4\]"):
        CrossEntropyLoss()(logits, target.masked_fill(target == -100, 4))


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_cross_entropy_accepts_any_integer_target_dtype(dtype: torch.dtype) -> None:
    logits = torch.randn(5, 3, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 1, 0])
    ours, ref = CrossEntropyLoss(reduction="sum"), CrossEntropyLoss(reduction="sum")
    assert_loss_close(ours(logits, target.to(dtype)), ref(logits, target))
    assert_loss_close(ours.backward(), ref.backward())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_is_finite_at_1000(
    dtype: torch.dtype, reduction: str, label_smoothing: float
) -> None:
    logits = torch.tensor(
        [[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0], [1000.0, 1000.0, -1000.0]],
        dtype=dtype,
    )
    target = torch.tensor([1, 2, 0])
    ours = CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)
    loss = ours(logits, target)
    assert loss.isfinite().all()
    assert ours.backward(torch.ones_like(loss)).isfinite().all()
    ref = torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)
    compare_loss(ours, ref, logits, target, None)


# ------------------------------------------- (N, C) class probabilities (soft labels)
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


# --------------------------------------------------------- off the CPU, and state
class AsIfOnGPU(Tensor):
    """A CPU tensor that says it is not on the CPU: runs a loss's GPU code on CI."""

    @property
    def is_cpu(self) -> bool:
        return False


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    ("ignore_index", "target"),
    [
        (-100, [0, 3, -100, 1, 2, -100]),  # the default, outside [0, C)
        (2, [0, 3, 2, 1, 2, 1]),  # a class, which nll_loss skips as well
        (-100, [-100] * 6),  # every row ignored: "mean" is 0/0 = NaN, the gradient 0
    ],
)
def test_cross_entropy_off_the_cpu_has_torchs_bits(
    reduction: str, label_smoothing: float, weighted: bool, ignore_index: int, target: list[int]
) -> None:
    """Tensors that say they are not on the CPU, as on a GPU: the same bits as torch's.

    The targets are never read on the host, and value and gradient come from the ops
    torch's own forward and autograd run. One exception: with class weights, smoothing
    and "mean", torch sums the kept rows' weights after a ``masked_select``, which would
    wait for the GPU; nograd sums them masked, which may differ in the last bit.
    """
    logits = torch.randn(6, 4)
    y = torch.tensor(target)
    weight = torch.rand(4) + 0.1 if weighted else None
    ours = CrossEntropyLoss(
        reduction=reduction,
        label_smoothing=label_smoothing,
        weight=weight,
        ignore_index=ignore_index,
    )
    loss = ours(logits.as_subclass(AsIfOnGPU), y.as_subclass(AsIfOnGPU))
    pred = logits.clone().requires_grad_()
    ref_fn = torch.nn.CrossEntropyLoss(
        weight=weight,
        reduction=reduction,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
    )
    with torch.enable_grad():
        expected = ref_fn(pred, y)
    grad_output = torch.randn(6) if reduction == "none" else None
    expected.backward(grad_output)
    assert pred.grad is not None
    exact = not (weighted and label_smoothing > 0 and reduction == "mean")
    tol = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": 1e-6, "atol": 1e-7}
    torch.testing.assert_close(loss.as_subclass(Tensor), expected.detach(), **tol, equal_nan=True)
    upstream = None if grad_output is None else grad_output.as_subclass(AsIfOnGPU)
    grad = ours.backward(upstream).as_subclass(Tensor)
    torch.testing.assert_close(grad, pred.grad, **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_ignoring_a_class_has_torchs_bits(reduction: str) -> None:
    """An ignore_index inside [0, C) takes torch's kernels too, on the CPU and beyond."""
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 5, generator=gen)
    target = torch.randint(0, 5, (64,), generator=gen)
    pred = logits.clone().requires_grad_()
    with torch.enable_grad():
        expected = torch.nn.CrossEntropyLoss(reduction=reduction, ignore_index=2)(pred, target)
    grad_output = torch.randn(64) if reduction == "none" else None
    expected.backward(grad_output)
    assert pred.grad is not None
    for wrap in (Tensor, AsIfOnGPU):
        ours = CrossEntropyLoss(reduction=reduction, ignore_index=2)
        loss = ours(logits.as_subclass(wrap), target.as_subclass(wrap)).as_subclass(Tensor)
        upstream = None if grad_output is None else grad_output.as_subclass(wrap)
        assert torch.equal(loss, expected.detach())
        assert torch.equal(ours.backward(upstream).as_subclass(Tensor), pred.grad)


def test_cross_entropy_on_a_device_takes_four_ops() -> None:
    """A small network's GPU step costs about one kernel launch per op, so count them.

    On the meta device, which like a GPU is not the CPU, the forward is log_softmax and
    nll_loss; the backward is nll_loss_backward and
    _log_softmax_backward_data, as in torch's autograd, with dL/dl = 1 made once.
    Building p - onehot(y) and masking the ignored rows took 9; an earlier gather,
    where and sums took 19.
    """
    logits = torch.empty(100, 2, device="meta")
    target = torch.empty(100, dtype=torch.long, device="meta")
    loss_fn = CrossEntropyLoss()
    loss_fn(logits, target)
    loss_fn.backward()  # the first call may make dL/dl = 1
    with OpNames() as ops:
        loss_fn(logits, target)
        loss_fn.backward()
    assert ops.names == [
        "_log_softmax", "nll_loss_forward", "nll_loss_backward", "_log_softmax_backward_data"
    ]  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_off_the_cpu_and_in_inference_mode_it_is_torchs(
    shape: tuple[int, ...], reduction: str, label_smoothing: float, weighted: bool
) -> None:
    """The GPU code, which never reads the targets, under torch.inference_mode().

    As for (N, C) (test_cross_entropy_off_the_cpu_has_torchs_bits, above): with class
    weights, smoothing and "mean", torch sums the kept rows' weights after a
    ``masked_select``, which waits for the GPU; nograd sums them masked, which may
    differ in the last bit.
    """
    gen = torch.Generator().manual_seed(len(shape))
    c = shape[class_dim(shape)]
    z = 3 * torch.randn(shape, generator=gen)
    y = torch.randint(0, c, index_shape(shape), generator=gen)
    y = y.masked_fill(torch.rand(y.shape, generator=gen) < 0.3, -100)
    weight = torch.rand(c, generator=gen) + 0.1 if weighted else None
    options: dict[str, Any] = {
        "weight": weight,
        "reduction": reduction,
        "label_smoothing": label_smoothing,
    }
    g = torch.randn(y.shape, generator=gen) if reduction == "none" else None
    expected, expected_grad = autograd(options, z, y, g)
    ours = CrossEntropyLoss(**options)
    with torch.inference_mode():
        loss = ours(z.as_subclass(AsIfOnGPU), y.as_subclass(AsIfOnGPU)).as_subclass(Tensor)
        upstream = None if g is None else g.as_subclass(AsIfOnGPU)
        grad = ours.backward(upstream).as_subclass(Tensor)
    exact = not (weighted and label_smoothing > 0 and reduction == "mean")
    tol = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": 1e-6, "atol": 1e-7}
    torch.testing.assert_close(loss, expected, **tol, equal_nan=True)
    torch.testing.assert_close(grad, expected_grad, **tol)


@pytest.mark.parametrize(
    ("shape", "kernels"),
    [
        ((7,), ["nll_loss_forward", "nll_loss_backward"]),
        ((3, 7, 5), ["nll_loss2d_forward", "nll_loss2d_backward"]),
        ((3, 7, 5, 4), ["nll_loss2d_forward", "nll_loss2d_backward"]),
        ((3, 7, 5, 4, 2), ["nll_loss2d_forward", "nll_loss2d_backward"]),
    ],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_each_shape_takes_torchs_kernels_and_only_them(
    shape: tuple[int, ...], kernels: list[str], reduction: str
) -> None:
    """On the meta device, which like a GPU is not the CPU: the 4 ops of torch's
    autograd, the other ranks' views of the image kernel costing nothing."""
    z = torch.empty(shape, device="meta")
    y = torch.empty(index_shape(shape), dtype=torch.long, device="meta")
    g = torch.empty(y.shape, device="meta") if reduction == "none" else None
    loss_fn = CrossEntropyLoss(reduction=reduction)
    loss_fn(z, y)
    loss_fn.backward(g)  # the first call may make dL/dl = 1
    with OpNames() as ops:
        loss = loss_fn(z, y)
        grad = loss_fn.backward(g)
    forward, backward = kernels
    assert ops.names == ["_log_softmax", forward, backward, "_log_softmax_backward_data"]
    assert loss.shape == (y.shape if reduction == "none" else ())
    assert grad.shape == shape


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True])
def test_no_value_is_read_on_the_host_with_any_option(
    shape: tuple[int, ...], reduction: str, soft: bool
) -> None:
    """The meta device has shapes but no values: reading one (.item(), masked_select,
    a branch on a tensor) raises there, as on a GPU it would wait for the device."""
    c = shape[class_dim(shape)]
    z = torch.empty(shape, device="meta")
    if soft:
        y = torch.empty(shape, device="meta")
        options: dict[str, Any] = {}
    else:
        y = torch.empty(index_shape(shape), dtype=torch.long, device="meta")
        options = {"ignore_index": 1}
    loss_fn = CrossEntropyLoss(
        torch.empty(c, device="meta"), reduction=reduction, label_smoothing=0.1, **options
    )
    g = torch.empty(index_shape(shape), device="meta") if reduction == "none" else None
    loss = loss_fn(z, y)
    assert loss.shape == (index_shape(shape) if reduction == "none" else ())
    assert loss_fn.backward(g).shape == shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2, "weight": True}])
def test_on_cuda_it_reads_no_target_and_is_torchs(
    shape: tuple[int, ...], reduction: str, options: dict[str, Any]
) -> None:
    """Within float64's rounding, as test_cuda.py checks (N, C), not bit for bit: a GPU's
    reductions may sum in another order from one run to the next."""
    cuda = torch.device("cuda")
    c = shape[class_dim(shape)]
    z = torch.randn(shape, dtype=torch.float64, device=cuda)
    y = torch.randint(0, c, index_shape(shape), device=cuda)
    y = y.masked_fill(torch.rand(y.shape, device=cuda) < 0.3, -100)
    if options.get("weight"):
        options = {**options, "weight": torch.rand(c, dtype=torch.float64, device=cuda) + 0.1}
    g = torch.randn(y.shape, dtype=torch.float64, device=cuda) if reduction == "none" else None
    expected, expected_grad = autograd({**options, "reduction": reduction}, z, y, g)
    ours = CrossEntropyLoss(reduction=reduction, **options)
    torch.cuda.set_sync_debug_mode("error")  # any host read of the targets raises
    try:
        loss = ours(z, y)
        grad = ours.backward(g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_one_loss_takes_every_shape_in_turn() -> None:
    """What the backward needs is saved by each forward, whatever the shape before."""
    ours = CrossEntropyLoss(label_smoothing=0.1)
    for shape in [(3, 5), *SHAPES, (3, 5), SHAPES[2]]:
        c = shape[class_dim(shape)]
        z = torch.randn(shape, dtype=torch.float64)
        assert_bits(ours, z, torch.randint(0, c, index_shape(shape)), None)
        q = torch.softmax(torch.randn(shape, dtype=torch.float64), class_dim(shape))
        assert_bits(ours, z, q, None)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_finite_differences_agree(shape: tuple[int, ...]) -> None:
    """Independent of torch's autograd: central differences in float64."""
    gen = torch.Generator().manual_seed(0)
    c = shape[class_dim(shape)]
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, index_shape(shape), generator=gen)
    ignored = torch.rand(y.shape, generator=gen) < 0.3
    ignored.view(-1)[0] = False  # a row kept: "mean" over no rows is NaN
    y = y.masked_fill(ignored, -100)
    weight = torch.rand(c, generator=gen, dtype=torch.float64) + 0.1
    for reduction in REDUCTIONS:
        ours = CrossEntropyLoss(weight, reduction=reduction, label_smoothing=0.1)
        gradcheck(ours, z, y).assert_ok()
    q = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64), class_dim(shape))
    gradcheck(CrossEntropyLoss(weight), z, q).assert_ok()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_logits_of_1000_stay_finite(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    z = 1000 * torch.randn(shape).sign().to(dtype)
    y = torch.randint(0, shape[class_dim(shape)], index_shape(shape))
    ours = CrossEntropyLoss(label_smoothing=0.1)
    assert_bits(ours, z, y, None)
    assert ours(z, y).isfinite() and ours.backward().isfinite().all()


# --------------------------------------------------------------- repr and errors
def test_repr_is_torchs_and_errors_name_the_settings() -> None:
    ours = CrossEntropyLoss(reduction="sum", label_smoothing=0.1, ignore_index=0)
    twin = torch.nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1, ignore_index=0)
    assert repr(ours) == repr(twin) == "CrossEntropyLoss()"
    assert ours._describe() == (
        "CrossEntropyLoss(reduction='sum', ignore_index=0, label_smoothing=0.1)"
    )


def test_cross_entropy_option_errors() -> None:
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: expected label_smoothing in \[0, 1\]"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(
        ValueError, match=r"CrossEntropyLoss: expected weight of shape \(C,\), got \(2, 2\)"
    ):
        CrossEntropyLoss(weight=torch.ones(2, 2))
    with pytest.raises(TypeError, match=r"CrossEntropyLoss: weight must be a Tensor, got \[1"):
        CrossEntropyLoss(weight=[1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"weight of shape \(3,\) for C=3 classes, got \(2,\)"):
        CrossEntropyLoss(weight=torch.ones(2))(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(TypeError, match=r"weight of dtype torch.float64.*got torch.float32"):
        weighted = CrossEntropyLoss(weight=torch.ones(3))
        weighted(torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0]))


def test_cross_entropy_shape_and_dtype_errors() -> None:
    ce = CrossEntropyLoss()
    # one sample (C,) and K dims (N, C, d1, ...): test_a_target_of_the_wrong_shape_is_refused
    with pytest.raises(ValueError, match=r"CrossEntropyLoss\(.*shape \(\), got \(4,\)"):
        ce(torch.randn(4), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss\(.*shape \(2, 4\), got \(2,\)"):
        ce(torch.randn(2, 3, 4), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"CrossEntropyLoss\(.*integer dtype.*got torch.float32"):
        ce(torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(
        TypeError, match=r"CrossEntropyLoss\(.*floating pred \(logits\), got torch.int64"
    ):
        ce(torch.tensor([[0, 1]]), torch.tensor([0]))
    with pytest.raises(TypeError, match=r"integer dtype.*got torch.bool"):
        ce(torch.randn(2, 3), torch.tensor([True, False]))
    with pytest.raises(
        ValueError, match=r"CrossEntropyLoss\(.*target of shape \(4,\), got \(4, 1\)"
    ):
        ce(torch.randn(4, 3), torch.tensor([[0], [1], [2], [0]]))


def test_cross_entropy_target_out_of_range() -> None:
    ce = CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"values in \[0, 3\) for C=3.*got values in \[0, 3\]"):
        ce(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"values in \[0, 3\) for C=3.*got values in \[-1, 2\]"):
        ce(torch.randn(4, 3), torch.tensor([0, -1, 2, 2]))
    # ignored rows are left out of the range, others are still checked
    with pytest.raises(ValueError, match=r"C=3.*got values in \[1, 5\]"):
        ce(torch.randn(3, 3), torch.tensor([-100, 5, 1]))
    with pytest.raises(ValueError, match=r"C=1.*got values in \[1, 1\]"):
        CrossEntropyLoss(ignore_index=0)(torch.randn(3, 1), torch.tensor([0, 1, 0]))


@pytest.mark.parametrize("wrap", [Tensor, AsIfOnGPU])
def test_cross_entropy_explains_what_torchs_kernels_refused(wrap: type[Tensor]) -> None:
    """The usual case goes straight to torch's kernels; a refusal gets our message."""
    loss_fn = CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"expected target of shape \(4,\), got \(4, 1\)"):
        loss_fn(torch.randn(4, 3).as_subclass(wrap), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected target of shape \(4, 2\), got \(4,\)"):
        loss_fn(torch.randn(4, 3, 2).as_subclass(wrap), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected pred of shape \(C,\), \(N, C\) or"):
        loss_fn(torch.randn(()).as_subclass(wrap), torch.zeros((), dtype=torch.long))


@pytest.mark.parametrize(
    ("pred_shape", "target", "message"),
    [
        ((5,), torch.tensor([0, 1, 2, 3, 4]), r"target of shape \(\), got \(5,\)"),
        ((2, 5, 3), torch.zeros(2, dtype=torch.long), r"target of shape \(2, 3\), got \(2,\)"),
        ((2, 5, 3), torch.zeros(3, 3, dtype=torch.long), r"target of shape \(2, 3\), got \(3, 3\)"),
        (
            (2, 5, 3, 4),
            torch.zeros(2, 4, 3, dtype=torch.long),
            r"target of shape \(2, 3, 4\), got \(2, 4, 3\): class indices have pred's "
            r"shape \(2, 5, 3, 4\) without its class dim 1",
        ),
        (
            (2, 5, 3, 2, 2),
            torch.zeros(2, 3, 4, dtype=torch.long),
            r"target of shape \(2, 3, 2, 2\), got \(2, 3, 4\)",
        ),
        ((), torch.tensor(0), r"pred of shape \(C,\), \(N, C\) or \(N, C, d1, ..., dk\), got \(\)"),
    ],
)
def test_a_target_of_the_wrong_shape_is_refused(
    pred_shape: tuple[int, ...], target: Tensor, message: str
) -> None:
    """A ValueError naming the module and both shapes."""
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss\(.*\): expected " + message):
        CrossEntropyLoss()(torch.randn(pred_shape), target)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", ["none", "weight", "ignored", "weight-ignored"])
def test_one_sample_with_a_target_of_shape_1_gives_torchs_loss_and_no_gradient(
    dtype: torch.dtype, reduction: str, options: str
) -> None:
    """torch's kernel takes one sample's class index as (1,) as well as (): its loss is
    the same, of shape () under every reduction; its backward refuses (1,)."""
    z = (3 * torch.randn(5)).to(dtype)
    y = torch.tensor([2])
    kwargs: dict[str, Any] = {"reduction": reduction}
    if "weight" in options:
        kwargs["weight"] = (torch.rand(5) + 0.1).to(dtype)
    if "ignored" in options:
        kwargs["ignore_index"] = 2  # "mean" over no rows: NaN, as in torch
    leaf = z.clone().requires_grad_()
    with torch.enable_grad():
        expected = torch.nn.CrossEntropyLoss(**kwargs)(leaf, y)
        with pytest.raises(RuntimeError, match="size mismatch"):
            expected.backward(torch.ones_like(expected))
    ours = CrossEntropyLoss(**kwargs)
    loss = ours(z, y)
    assert loss.shape == ()
    torch.testing.assert_close(loss, expected.detach(), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(loss.nan_to_num(7.0), ours(z, y[0]).nan_to_num(7.0))  # () gives the same
    ours(z, y)
    with pytest.raises(ValueError, match=r"expected target of shape \(\) for pred of shape \(5,\)"):
        ours.backward(torch.ones_like(loss) if reduction == "none" else None)


def test_one_sample_with_a_target_of_shape_1_and_label_smoothing_is_refused() -> None:
    """torch refuses it in its forward then (a shape () loss against a (1,) mask)."""
    z, y = torch.randn(5), torch.tensor([2])
    with pytest.raises(RuntimeError):
        torch.nn.CrossEntropyLoss(label_smoothing=0.1)(z, y)
    with pytest.raises(
        ValueError, match=r"^CrossEntropyLoss\(.*\): expected target of shape \(\), got \(1,\)"
    ):
        CrossEntropyLoss(label_smoothing=0.1)(z, y)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_a_wrong_class_count_is_refused(shape: tuple[int, ...]) -> None:
    c = shape[class_dim(shape)]
    z, y = torch.randn(shape), torch.randint(0, c, index_shape(shape))
    with pytest.raises(
        ValueError, match=rf"weight of shape \({c},\) for C={c} classes, got \(2,\)"
    ):
        CrossEntropyLoss(weight=torch.ones(2))(z, y)
    with pytest.raises(ValueError, match=rf"weight of shape \({c},\) and dtype torch.float32"):
        CrossEntropyLoss(weight=torch.ones(2))(z, torch.rand(shape))
    with pytest.raises(
        ValueError, match=rf"values in \[0, {c}\) for C={c}.*got values in \[\d, 9\]"
    ):
        CrossEntropyLoss()(z, y.flatten().index_fill(0, torch.tensor([0]), 9).view(y.shape))
    with pytest.raises(TypeError, match=r"weight of dtype torch.float32.*got torch.float64"):
        CrossEntropyLoss(weight=torch.ones(c, dtype=torch.float64))(z, y)


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


def test_integer_logits_and_boolean_targets_are_refused() -> None:
    with pytest.raises(TypeError, match=r"floating pred \(logits\), got torch.int64"):
        CrossEntropyLoss()(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 4).long())
    with pytest.raises(TypeError, match=r"integer dtype \(class indices\), got torch.bool"):
        CrossEntropyLoss()(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.bool))


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

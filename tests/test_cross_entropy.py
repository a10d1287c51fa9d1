"""CrossEntropyLoss on (N, C) logits and class indices: the usual case, its options
(class weights, ignore_index, label smoothing), its errors, and off the CPU.

The oracle is torch.nn.CrossEntropyLoss run by autograd on the same logits and
targets; value and gradient must be its very bits (torch.equal), in float32 and
float64, or agree within tests/oracle.py's tolerance where a test says so. One
sample (C,) and K-dimensional inputs are tested in test_cross_entropy_shapes.py,
class probabilities in test_soft_targets.py. What every loss shares (reductions,
grad_output, legacy size_average/reduce, argument order) is tested in test_losses.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.nn import CrossEntropyLoss
from tests.oracle import (
    AsIfOnGPU,
    OpNames,
    assert_cross_entropy_bits,
    assert_loss_close,
    compare_loss,
    index_shape,
)

DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]

seeds = st.integers(0, 2**32 - 1)
# None: backward() as the training loop calls it; a number: a 0-dim grad_output
scales = st.sampled_from([None, 3.0, -0.5])


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
    assert_cross_entropy_bits(
        CrossEntropyLoss(reduction=reduction, label_smoothing=0.3), z, target, g
    )


# --------------------------------------------------------- off the CPU, and state
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
    # one sample (C,) and K dims (N, C, d1, ...): test_cross_entropy_shapes.py's
    # test_a_target_of_the_wrong_shape_is_refused
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
    with pytest.raises(IndexError, match="out of bounds"):  # torch's error
        torch.nn.CrossEntropyLoss()(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(IndexError, match=r"values in \[0, 3\) for C=3.*got values in \[0, 3\]"):
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

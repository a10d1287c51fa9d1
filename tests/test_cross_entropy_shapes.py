"""CrossEntropyLoss on one sample (C,) and K-dimensional (N, C, d1, ..., dk) inputs
(nn/cross_entropy_shapes.py): values, gradients, the kernel each shape takes, and
the targets of the wrong shape it refuses.

The oracle is torch.nn.CrossEntropyLoss run by autograd on the same logits and
targets; value and gradient must be its very bits (torch.equal), in float32 and
float64, or agree within tests/oracle.py's tolerance where a test says so. The
usual (N, C) case is tested in test_cross_entropy.py, class probabilities of any
shape in test_soft_targets.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.gradcheck import gradcheck
from nograd.nn import CrossEntropyLoss
from tests.oracle import (
    AsIfOnGPU,
    OpNames,
    assert_cross_entropy_bits,
    class_dim,
    cross_entropy_autograd,
    index_shape,
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
    assert_cross_entropy_bits(CrossEntropyLoss(**options), z, y, g)


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
    assert_cross_entropy_bits(ours, z, y, g)
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
    assert_cross_entropy_bits(CrossEntropyLoss(reduction=reduction), z, y, g)
    assert_cross_entropy_bits(CrossEntropyLoss(reduction=reduction), z, torch.rand(shape), g)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_a_sequence_models_logits_moved_to_dim_1_are_torchs(
    reduction: str, label_smoothing: float
) -> None:
    """(N, L, C) logits moved to (N, C, L) are not contiguous, nor is a sliced dL/dl."""
    z = torch.randn(4, 7, 6).transpose(1, 2)  # (N, C, L) = (4, 6, 7), classes strided
    y = torch.randint(0, 6, (4, 7)).masked_fill(torch.rand(4, 7) < 0.2, -100)
    g = torch.randn(4, 7, 2)[..., 0] if reduction == "none" else None
    assert_cross_entropy_bits(
        CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing), z, y, g
    )


@pytest.mark.parametrize("shape", SHAPES[1:], ids=SHAPE_IDS[1:])
def test_integer_targets_of_any_dtype_are_class_indices(shape: tuple[int, ...]) -> None:
    z = torch.randn(shape, dtype=torch.float64)
    y = torch.randint(0, shape[1], index_shape(shape))
    ours = CrossEntropyLoss(reduction="none")
    for dtype in (torch.int32, torch.uint8):
        assert torch.equal(ours(z, y.to(dtype)), CrossEntropyLoss(reduction="none")(z, y))


def test_one_loss_takes_every_shape_in_turn() -> None:
    """What the backward needs is saved by each forward, whatever the shape before."""
    ours = CrossEntropyLoss(label_smoothing=0.1)
    for shape in [(3, 5), *SHAPES, (3, 5), SHAPES[2]]:
        c = shape[class_dim(shape)]
        z = torch.randn(shape, dtype=torch.float64)
        assert_cross_entropy_bits(ours, z, torch.randint(0, c, index_shape(shape)), None)
        q = torch.softmax(torch.randn(shape, dtype=torch.float64), class_dim(shape))
        assert_cross_entropy_bits(ours, z, q, None)


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
    assert_cross_entropy_bits(ours, z, y, None)
    assert ours(z, y).isfinite() and ours.backward().isfinite().all()


# ----------------------------------------- off the CPU: torch's kernels, no host reads
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_off_the_cpu_and_in_inference_mode_it_is_torchs(
    shape: tuple[int, ...], reduction: str, label_smoothing: float, weighted: bool
) -> None:
    """The GPU code, which never reads the targets, under torch.inference_mode().

    As for (N, C) (test_cross_entropy.py's test_cross_entropy_off_the_cpu_has_torchs_bits):
    with class weights, smoothing and "mean", torch sums the kept rows' weights after a
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
    expected, expected_grad = cross_entropy_autograd(options, z, y, g)
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
    expected, expected_grad = cross_entropy_autograd({**options, "reduction": reduction}, z, y, g)
    ours = CrossEntropyLoss(reduction=reduction, **options)
    torch.cuda.set_sync_debug_mode("error")  # any host read of the targets raises
    try:
        loss = ours(z, y)
        grad = ours.backward(g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- errors
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


def test_integer_logits_and_boolean_targets_are_refused() -> None:
    with pytest.raises(TypeError, match=r"floating pred \(logits\), got torch.int64"):
        CrossEntropyLoss()(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 4).long())
    with pytest.raises(TypeError, match=r"integer dtype \(class indices\), got torch.bool"):
        CrossEntropyLoss()(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.bool))

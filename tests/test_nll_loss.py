"""NLLLoss: log-probabilities against class indices, for every shape torch takes.

The oracle is torch.nn.NLLLoss run by autograd on the same inputs and targets; value
and gradient must be its very bits (torch.equal), in float32 and float64. LogSoftmax
followed by NLLLoss must be CrossEntropyLoss, to the bit, as torch's own pair is.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.data import xor
from nograd.gradcheck import gradcheck
from nograd.nn.container import Sequential
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.linear import Linear
from nograd.nn.log_softmax import LogSoftmax
from nograd.nn.nll_loss import NLLLoss
from nograd.optim import SGD
from nograd.targets import predict_classes, target_for
from nograd.train import fit
from tests.oracle import AsIfOnGPU, OpNames, class_dim, index_shape, torch_loss_and_grad, upstream

DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]
# one sample, rows, then K = 1, 2 and 3 dims after (N, C): the route to each kernel
SHAPES = [(5,), (6, 5), (3, 5, 4), (2, 5, 3, 4), (2, 5, 3, 2, 2)]
SHAPE_IDS = ["C", "N,C", "N,C,d1", "N,C,d1,d2", "N,C,d1,d2,d3"]

seeds = st.integers(0, 2**32 - 1)
# None: backward() as the training loop calls it; a number: a 0-dim grad_output
scales = st.sampled_from([None, 3.0, -0.5])


def autograd(
    options: dict[str, Any], x: Tensor, target: Tensor, g: Tensor | None
) -> tuple[Tensor, Tensor]:
    """torch's loss and dL/dx for log-probabilities x, by torch.nn.NLLLoss and autograd."""
    return torch_loss_and_grad(torch.nn.NLLLoss(**options), x, target, g)


def assert_bits(ours: NLLLoss, x: Tensor, target: Tensor, g: Tensor | None) -> None:
    """Value and gradient of ``ours`` are torch's, bit for bit (NaN where torch's is)."""
    options = {"weight": ours.weight, "ignore_index": ours.ignore_index}
    expected, expected_grad = autograd({**options, "reduction": ours.reduction}, x, target, g)
    loss = ours(x, target)
    assert loss.shape == expected.shape
    assert loss.dtype == expected.dtype
    torch.testing.assert_close(loss, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(ours.backward(g), expected_grad)


def inputs(
    shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator, log_probabilities: bool
) -> tuple[Tensor, Tensor]:
    """x (log-probabilities, or any numbers: NLLLoss does not check) and class indices."""
    c = shape[class_dim(shape)]
    x = 3 * torch.randn(shape, generator=gen)
    if log_probabilities:
        x = torch.log_softmax(x, class_dim(shape))
    y = torch.randint(0, c, index_shape(shape), generator=gen)
    return x.to(dtype), y


# ------------------------------------------------------------------ oracle tests
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@given(
    reduction=st.sampled_from(REDUCTIONS),
    weighted=st.booleans(),
    ignore=st.sampled_from(["nothing", "-100", "a class", "-1"]),
    log_probabilities=st.booleans(),
    scale=scales,
    seed=seeds,
)
def test_every_shape_and_option_is_torchs_to_the_bit(
    dtype: torch.dtype,
    shape: tuple[int, ...],
    reduction: str,
    weighted: bool,
    ignore: str,
    log_probabilities: bool,
    scale: float | None,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    c = shape[class_dim(shape)]
    x, y = inputs(shape, dtype, gen, log_probabilities)
    options: dict[str, Any] = {"reduction": reduction}
    if weighted:
        options["weight"] = (torch.rand(c, generator=gen) + 0.1).to(dtype)
    if ignore == "-100":
        y = y.masked_fill(torch.rand(y.shape, generator=gen) < 0.4, -100)
    elif ignore == "a class":
        options["ignore_index"] = c - 1
    elif ignore == "-1":  # any value may be ignored, inside [0, C) or not
        options["ignore_index"] = -1
        y = y.masked_fill(torch.rand(y.shape, generator=gen) < 0.4, -1)
    g = upstream(reduction, shape, scale, dtype, seed)
    assert_bits(NLLLoss(**options), x, y, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_the_gradient_is_minus_the_weight_over_the_denominator_at_each_target(
    dtype: torch.dtype, shape: tuple[int, ...], reduction: str, weighted: bool
) -> None:
    """dL/dx_ic = -g_i w_{y_i} [c = y_i] (/ sum_i w_{y_i} under "mean"), written out."""
    gen = torch.Generator().manual_seed(len(shape))
    c, dim = shape[class_dim(shape)], class_dim(shape)
    x, y = inputs(shape, dtype, gen, log_probabilities=True)
    y = y.masked_fill(torch.rand(y.shape, generator=gen) < 0.3, -100)
    y.view(-1)[0] = 1  # a row kept: "mean" over no rows is NaN
    w = (torch.rand(c, generator=gen) + 0.1).to(dtype) if weighted else torch.ones(c, dtype=dtype)
    ours = NLLLoss(w if weighted else None, reduction=reduction)
    g = torch.randn(y.shape, dtype=dtype) if reduction == "none" else torch.tensor(2.0, dtype=dtype)
    loss, grad = ours(x, y), ours.backward(g)
    kept = y != -100
    index = y.masked_fill(~kept, 0)
    w_y = w[index] * kept  # w_{y_i}, 0 in ignored rows
    per_row = -w_y * x.gather(dim, index.unsqueeze(dim)).squeeze(dim)
    expected_grad = torch.zeros_like(x).scatter(dim, index.unsqueeze(dim), (-w_y).unsqueeze(dim))
    if reduction == "none":
        expected, expected_grad = per_row, expected_grad * g.unsqueeze(dim)
    elif reduction == "sum":
        expected, expected_grad = per_row.sum(), expected_grad * 2
    else:
        expected, expected_grad = per_row.sum() / w_y.sum(), expected_grad * 2 / w_y.sum()
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {}
    torch.testing.assert_close(loss, expected, **tol)
    torch.testing.assert_close(grad, expected_grad, **tol)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_every_row_ignored_gives_torchs_nan_and_a_zero_gradient(
    shape: tuple[int, ...], reduction: str, weighted: bool
) -> None:
    """ "mean" over no rows is 0/0: NaN, as in torch; the gradient is 0 all the same."""
    x = torch.randn(shape).log_softmax(class_dim(shape))
    y = torch.full(index_shape(shape), -100)
    weight = torch.rand(shape[class_dim(shape)]) + 0.1 if weighted else None
    ours = NLLLoss(weight, reduction=reduction)
    g = torch.randn(y.shape) if reduction == "none" else None
    assert_bits(ours, x, y, g)
    loss = ours(x, y)
    assert loss.isnan() if reduction == "mean" else torch.equal(loss, torch.zeros(loss.shape))
    assert torch.equal(ours.backward(g), torch.zeros(shape))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("shape", "target_shape"),
    [((0, 4), (0,)), ((0, 4, 3), (0, 3)), ((2, 4, 0), (2, 0)), ((0, 4, 2, 2), (0, 2, 2))],
)
def test_empty_inputs_are_torchs(
    reduction: str, shape: tuple[int, ...], target_shape: tuple[int, ...]
) -> None:
    """No rows: "mean" is NaN, the others empty or 0, and the gradient is empty."""
    x = torch.randn(shape)
    y = torch.zeros(target_shape, dtype=torch.long)
    g = torch.randn(y.shape) if reduction == "none" else None
    assert_bits(NLLLoss(reduction=reduction), x, y, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_extreme_log_probabilities_are_torchs(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    """-inf outside the targets (a softmax that rounded to 0), and +-1000 anywhere."""
    gen = torch.Generator().manual_seed(0)
    x, y = inputs(shape, dtype, gen, log_probabilities=True)
    dim = class_dim(shape)
    at_target = torch.zeros(shape, dtype=torch.bool).scatter(dim, y.unsqueeze(dim), True)
    for reduction in REDUCTIONS:
        g = upstream(reduction, shape, 2.0, dtype, 0)
        assert_bits(NLLLoss(reduction=reduction), x.masked_fill(~at_target, -torch.inf), y, g)
        thousands = 1000 * torch.randn(shape, generator=gen).sign().to(dtype)
        ours = NLLLoss(reduction=reduction)
        assert_bits(ours, thousands, y, g)
        assert ours(thousands, y).isfinite().all() and ours.backward(g).isfinite().all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_a_sequence_models_log_probabilities_moved_to_dim_1_are_torchs(reduction: str) -> None:
    """(N, L, C) moved to (N, C, L) is not contiguous, nor are a transposed target and
    a sliced dL/dl."""
    x = torch.randn(4, 7, 6).log_softmax(2).transpose(1, 2)  # (N, C, L) = (4, 6, 7)
    y = torch.randint(0, 6, (7, 4)).masked_fill(torch.rand(7, 4) < 0.2, -100).t()
    g = torch.randn(4, 7, 2)[..., 0] if reduction == "none" else None
    assert_bits(NLLLoss(torch.rand(6) + 0.1, reduction=reduction), x, y, g)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_log_probabilities_in_any_layout_are_torchs(reduction: str, shape: tuple[int, ...]) -> None:
    """Classes last in memory, as channels-last images hold them. torch's own backward
    refuses a permuted (N, C, H, W) ("grad_input must be contiguous"); nograd gives it
    the gradient of the same numbers laid out contiguously, torch's to the bit."""
    dim = class_dim(shape)
    x, y = inputs(shape, torch.float32, torch.Generator().manual_seed(0), True)
    permuted = x.movedim(dim, -1).contiguous().movedim(-1, dim)  # x's values, classes last
    assert len(shape) < 3 or not permuted.is_contiguous()
    g = upstream(reduction, shape, 2.0, torch.float32, 0)
    expected, expected_grad = autograd({"reduction": reduction}, x, y, g)
    ours = NLLLoss(reduction=reduction)
    torch.testing.assert_close(ours(permuted, y), expected, rtol=0, atol=0)
    assert torch.equal(ours.backward(g), expected_grad)
    if len(shape) == 4:
        with pytest.raises(RuntimeError, match="grad_input must be contiguous"):
            autograd({"reduction": reduction}, permuted, y, g)
    else:
        assert_bits(ours, permuted, y, g)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_integer_targets_of_any_dtype_are_class_indices(shape: tuple[int, ...]) -> None:
    """torch's kernels take int64, and for (N, C) or (C,) uint8; nograd takes any
    integer dtype, as CrossEntropyLoss does, and reads it as int64."""
    x, y = inputs(shape, torch.float64, torch.Generator().manual_seed(0), True)
    expected = NLLLoss(reduction="none")(x, y)
    for dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        ours = NLLLoss(reduction="none")
        assert torch.equal(ours(x, y.to(dtype)), expected)
    if len(shape) <= 2:
        assert_bits(NLLLoss(), x, y.to(torch.uint8), None)
    else:
        with pytest.raises(RuntimeError, match="expected scalar type Long but found Byte"):
            torch.nn.NLLLoss()(x, y.to(torch.uint8))


def test_one_loss_takes_every_shape_in_turn() -> None:
    """What the backward needs is saved by each forward, whatever the shape before."""
    ours = NLLLoss(ignore_index=0)
    gen = torch.Generator().manual_seed(0)
    for shape in [*SHAPES, (3, 5), SHAPES[3], SHAPES[0]]:
        assert_bits(ours, *inputs(shape, torch.float64, gen, True), None)


# ------------------------------------------- LogSoftmax + NLLLoss = CrossEntropyLoss
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@given(
    reduction=st.sampled_from(REDUCTIONS),
    weighted=st.booleans(),
    ignored=st.booleans(),
    scale=scales,
    seed=seeds,
)
def test_log_softmax_then_nll_loss_is_cross_entropy_to_the_bit(
    dtype: torch.dtype,
    shape: tuple[int, ...],
    reduction: str,
    weighted: bool,
    ignored: bool,
    scale: float | None,
    seed: int,
) -> None:
    """As torch's own pair is (checked here too): cross-entropy is NLL after log_softmax."""
    gen = torch.Generator().manual_seed(seed)
    z, y = inputs(shape, dtype, gen, log_probabilities=False)
    if ignored:
        y = y.masked_fill(torch.rand(y.shape, generator=gen) < 0.4, -100)
    c = shape[class_dim(shape)]
    weight = (torch.rand(c, generator=gen) + 0.1).to(dtype) if weighted else None
    g = upstream(reduction, shape, scale, dtype, seed)

    log_softmax, nll = LogSoftmax(dim=class_dim(shape)), NLLLoss(weight, reduction=reduction)
    loss = nll(log_softmax(z), y)
    grad = log_softmax.backward(nll.backward(g))
    cross_entropy = CrossEntropyLoss(weight, reduction=reduction)
    expected = cross_entropy(z, y)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(grad, cross_entropy.backward(g))

    leaf = z.clone().requires_grad_()  # torch's pair, against torch's cross-entropy
    with torch.enable_grad():
        pair = torch.nn.NLLLoss(weight, reduction=reduction)(leaf.log_softmax(class_dim(shape)), y)
        pair.backward(g)
    torch_ce, torch_ce_grad = autograd_cross_entropy(weight, reduction, z, y, g)
    torch.testing.assert_close(pair.detach(), torch_ce, rtol=0, atol=0, equal_nan=True)
    assert leaf.grad is not None and torch.equal(leaf.grad, torch_ce_grad)
    torch.testing.assert_close(loss, torch_ce, rtol=0, atol=0, equal_nan=True)


def autograd_cross_entropy(
    weight: Tensor | None, reduction: str, z: Tensor, y: Tensor, g: Tensor | None
) -> tuple[Tensor, Tensor]:
    leaf = z.clone().requires_grad_()
    with torch.enable_grad():
        loss = torch.nn.CrossEntropyLoss(weight, reduction=reduction)(leaf, y)
        loss.backward(g)
    assert leaf.grad is not None
    return loss.detach(), leaf.grad


def test_a_network_trained_with_log_softmax_and_nll_loss_is_the_cross_entropy_one() -> None:
    """fit keeps class indices as NLLLoss's target and takes the argmax as the
    prediction, as for cross-entropy: the same run, weights and history to the bit."""
    runs = []
    for loss_fn, head in [(NLLLoss(), [LogSoftmax(dim=1)]), (CrossEntropyLoss(), [])]:
        torch.manual_seed(0)
        model = Sequential(Linear(2, 8), Linear(8, 2), *head)
        g = torch.Generator().manual_seed(1)
        history = fit(
            model, loss_fn, SGD(model.parameters(), lr=0.1), xor(64, generator=g),
            xor(32, generator=g), epochs=3, batch_size=16, generator=g, progress=False,
        )  # fmt: skip
        runs.append((history, model.state_dict()))
    (nll_history, nll_weights), (ce_history, ce_weights) = runs
    assert nll_history.train_loss == ce_history.train_loss
    assert nll_history.test_acc == ce_history.test_acc
    assert all(torch.equal(nll_weights[k], ce_weights[k]) for k in ce_weights)
    assert target_for(NLLLoss(), 3, torch.float32) is None
    log_p = torch.tensor([[-2.0, -0.1, -3.0], [-0.5, -1.0, -4.0]])
    assert torch.equal(predict_classes(log_p, NLLLoss()), torch.tensor([1, 0]))


# --------------------------------------------------------- off the CPU, and state
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_off_the_cpu_and_in_inference_mode_it_is_torchs(
    shape: tuple[int, ...], reduction: str
) -> None:
    gen = torch.Generator().manual_seed(len(shape))
    x, y = inputs(shape, torch.float32, gen, log_probabilities=True)
    y = y.masked_fill(torch.rand(y.shape, generator=gen) < 0.3, -100)
    weight = torch.rand(shape[class_dim(shape)], generator=gen) + 0.1
    g = torch.randn(y.shape, generator=gen) if reduction == "none" else None
    expected, expected_grad = autograd({"weight": weight, "reduction": reduction}, x, y, g)
    ours = NLLLoss(weight, reduction=reduction)
    with torch.inference_mode():
        loss = ours(x.as_subclass(AsIfOnGPU), y.as_subclass(AsIfOnGPU)).as_subclass(Tensor)
        grad_output = None if g is None else g.as_subclass(AsIfOnGPU)
        grad = ours.backward(grad_output).as_subclass(Tensor)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(grad, expected_grad)


@pytest.mark.parametrize(
    ("shape", "kernels"),
    [
        ((7,), ["nll_loss_forward", "nll_loss_backward"]),
        ((9, 7), ["nll_loss_forward", "nll_loss_backward"]),
        ((3, 7, 5), ["nll_loss2d_forward", "nll_loss2d_backward"]),
        ((3, 7, 5, 4), ["nll_loss2d_forward", "nll_loss2d_backward"]),
        ((3, 7, 5, 4, 2), ["nll_loss2d_forward", "nll_loss2d_backward"]),
    ],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_each_shape_takes_torchs_kernels_and_only_them_reading_no_value(
    shape: tuple[int, ...], kernels: list[str], reduction: str
) -> None:
    """On the meta device, which like a GPU is not the CPU and has no values to read
    (.item() or masked_select would raise): one op forward and one backward."""
    c = shape[class_dim(shape)]
    x = torch.empty(shape, device="meta")
    y = torch.empty(index_shape(shape), dtype=torch.long, device="meta")
    g = torch.empty(y.shape, device="meta") if reduction == "none" else None
    loss_fn = NLLLoss(torch.empty(c, device="meta"), ignore_index=1, reduction=reduction)
    loss_fn(x, y)
    loss_fn.backward(g)  # the first call may make dL/dl = 1
    with OpNames() as ops:
        loss = loss_fn(x, y)
        grad = loss_fn.backward(g)
    assert ops.names == kernels
    assert loss.shape == (y.shape if reduction == "none" else ())
    assert grad.shape == shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_on_cuda_it_reads_no_target_and_is_torchs(shape: tuple[int, ...], reduction: str) -> None:
    """Within float64's rounding, not bit for bit: a GPU's reductions may sum in
    another order from one run to the next."""
    cuda = torch.device("cuda")
    c = shape[class_dim(shape)]
    x = torch.randn(shape, dtype=torch.float64, device=cuda).log_softmax(class_dim(shape))
    y = torch.randint(0, c, index_shape(shape), device=cuda)
    y = y.masked_fill(torch.rand(y.shape, device=cuda) < 0.3, -100)
    weight = torch.rand(c, dtype=torch.float64, device=cuda) + 0.1
    g = torch.randn(y.shape, dtype=torch.float64, device=cuda) if reduction == "none" else None
    expected, expected_grad = autograd({"weight": weight, "reduction": reduction}, x, y, g)
    ours = NLLLoss(weight, reduction=reduction)
    torch.cuda.set_sync_debug_mode("error")  # any host read of the targets raises
    try:
        loss = ours(x, y)
        grad = ours.backward(g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_finite_differences_agree(shape: tuple[int, ...]) -> None:
    """Independent of torch's autograd: central differences in float64."""
    gen = torch.Generator().manual_seed(0)
    x, y = inputs(shape, torch.float64, gen, log_probabilities=True)
    ignored = torch.rand(y.shape, generator=gen) < 0.3
    ignored.view(-1)[0] = False  # a row kept: "mean" over no rows is NaN
    y = y.masked_fill(ignored, -100)
    weight = torch.rand(shape[class_dim(shape)], generator=gen, dtype=torch.float64) + 0.1
    for reduction in REDUCTIONS:
        gradcheck(NLLLoss(weight, reduction=reduction), x, y).assert_ok()


# ----------------------------------------------------------- the public face
def test_signature_repr_buffers_and_settings_are_torchs() -> None:
    ours_sig = inspect.signature(NLLLoss.__init__).parameters
    torch_sig = inspect.signature(torch.nn.NLLLoss.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in ours_sig.values()] == [
        (p.name, p.kind, p.default) for p in torch_sig.values()
    ]
    weight = torch.tensor([1.0, 2.0, 3.0])
    ours = NLLLoss(weight, ignore_index=0, reduction="sum")
    twin = torch.nn.NLLLoss(weight, ignore_index=0, reduction="sum")
    assert repr(ours) == repr(twin) == "NLLLoss()"
    assert ours._describe() == "NLLLoss(reduction='sum', weight=..., ignore_index=0)"
    assert NLLLoss()._describe() == "NLLLoss(reduction='mean')"
    assert list(ours.state_dict()) == list(twin.state_dict()) == ["weight"]
    assert ours.to(torch.float64).state_dict()["weight"].dtype == torch.float64


@pytest.mark.parametrize(
    ("legacy", "reduction"),
    [({"size_average": False}, "sum"), ({"reduce": False}, "none"), ({"reduce": True}, "mean")],
)
def test_the_deprecated_pair_sets_the_reduction_with_torchs_warning(
    legacy: dict[str, bool], reduction: str
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, twin = NLLLoss(**legacy), torch.nn.NLLLoss(**legacy)  # type: ignore[arg-type]
    assert ours.reduction == twin.reduction == reduction
    assert len(caught) == 2 and str(caught[0].message) == str(caught[1].message)


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("pred_shape", "target", "message"),
    [
        ((4, 3), torch.zeros(2, dtype=torch.long), r"target of shape \(4,\), got \(2,\)"),
        ((4, 3), torch.zeros(4, 1, dtype=torch.long), r"target of shape \(4,\), got \(4, 1\)"),
        ((5,), torch.tensor([0, 1]), r"target of shape \(\), got \(2,\)"),
        ((2, 5, 3), torch.zeros(2, 4, dtype=torch.long), r"target of shape \(2, 3\), got \(2, 4\)"),
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
@pytest.mark.parametrize("wrap", [Tensor, AsIfOnGPU])
def test_a_target_of_the_wrong_shape_is_refused_as_torch_does(
    pred_shape: tuple[int, ...], target: Tensor, message: str, wrap: type[Tensor]
) -> None:
    """A ValueError naming the module and both shapes (torch raises a ValueError or a
    RuntimeError)."""
    x = torch.randn(pred_shape)
    with pytest.raises((ValueError, RuntimeError)):
        torch.nn.NLLLoss()(x, target)
    with pytest.raises(ValueError, match=r"^NLLLoss\(reduction='mean'\): expected " + message):
        NLLLoss()(x.as_subclass(wrap), target.as_subclass(wrap))


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_floating_or_boolean_targets_are_refused_as_torch_does(
    shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    """NLLLoss takes class indices only: no class probabilities, unlike CrossEntropyLoss."""
    x = torch.randn(shape).log_softmax(class_dim(shape))
    y = torch.zeros(index_shape(shape), dtype=dtype)
    with pytest.raises(RuntimeError, match=r"expected (target dtype|scalar type Long)"):
        torch.nn.NLLLoss()(x, y)
    with pytest.raises(
        TypeError, match=rf"^NLLLoss\(.*integer dtype \(class indices\), got {dtype}"
    ):
        NLLLoss()(x, y)
    if len(shape) == 1:
        return  # a target of pred's shape (C,) is one of C class indices: refused as above
    # of pred's shape: refused for its dtype (N, C), or its shape (the kernel's views)
    probabilities = torch.rand(shape).to(dtype)
    with pytest.raises((RuntimeError, ValueError)):
        torch.nn.NLLLoss()(x, probabilities)
    error = TypeError if len(shape) == 2 else ValueError
    with pytest.raises(error, match=r"^NLLLoss\(.*\): expected target (of shape|of an integer)"):
        NLLLoss()(x, probabilities)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("bad", [-1, 5, 9])
def test_targets_out_of_range_are_refused_on_the_cpu_as_torch_does(
    shape: tuple[int, ...], bad: int
) -> None:
    """torch raises an IndexError ("Target 5 is out of bounds"); nograd an error that is
    both an IndexError and a ValueError, naming the range, as CrossEntropyLoss does. An
    ignored row may hold any value."""
    x, y = inputs(shape, torch.float32, torch.Generator().manual_seed(0), True)
    y = y.flatten().index_fill(0, torch.tensor([0]), bad).view(y.shape)
    with pytest.raises(IndexError, match="out of bounds"):
        torch.nn.NLLLoss()(x, y)
    low, high = int(y.min()), int(y.max())
    assert bad in (low, high)
    with pytest.raises(
        IndexError, match=rf"^NLLLoss\(.*values in \[0, 5\) for C=5 .*got values in \[{low}, {high}"
    ) as refused:
        NLLLoss()(x, y)
    assert isinstance(refused.value, ValueError) and refused.value.__cause__ is None
    assert_bits(NLLLoss(ignore_index=bad), x, y, None)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_a_weight_of_the_wrong_size_dtype_or_rank_is_refused(shape: tuple[int, ...]) -> None:
    c = shape[class_dim(shape)]
    x, y = inputs(shape, torch.float32, torch.Generator().manual_seed(0), True)
    with pytest.raises(RuntimeError, match="weight tensor should be defined"):
        torch.nn.NLLLoss(weight=torch.ones(2))(x, y)
    with pytest.raises(ValueError, match=rf"weight of shape \({c},\) for C={c} classes, got \(2,"):
        NLLLoss(weight=torch.ones(2))(x, y)
    with pytest.raises(TypeError, match=r"weight of dtype torch.float32.*got torch.float64"):
        NLLLoss(weight=torch.ones(c, dtype=torch.float64))(x, y)
    with pytest.raises(ValueError, match=r"^NLLLoss: expected weight of shape \(C,\), got \(1, "):
        NLLLoss(weight=torch.ones(1, c))
    with pytest.raises(TypeError, match=r"^NLLLoss: weight must be a Tensor"):
        NLLLoss(weight=[1.0] * c)  # type: ignore[arg-type]


def test_integer_log_probabilities_and_unknown_reductions_are_refused() -> None:
    with pytest.raises(TypeError, match=r"floating pred \(log-probabilities\), got torch.int64"):
        NLLLoss()(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2).long())
    with pytest.raises(TypeError, match=r"floating pred \(log-probabilities\), got torch.int64"):
        NLLLoss()(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 4).long())
    with pytest.raises(ValueError, match=r"NLLLoss: expected reduction in .*got 'avg'"):
        NLLLoss(reduction="avg")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_one_sample_with_a_target_of_shape_1_gives_torchs_loss_and_no_gradient(
    dtype: torch.dtype, reduction: str, ignore_index: int
) -> None:
    """torch's kernel takes one sample's class index as (1,) as well as (): its loss is
    the same, of shape () under every reduction; its backward refuses (1,)."""
    x = torch.randn(5).log_softmax(0).to(dtype)
    y = torch.tensor([2])
    leaf = x.clone().requires_grad_()
    options: dict[str, Any] = {"reduction": reduction, "ignore_index": ignore_index}
    with torch.enable_grad():
        expected = torch.nn.NLLLoss(**options)(leaf, y)
        with pytest.raises(RuntimeError, match="size mismatch"):
            expected.backward(torch.ones_like(expected))
    ours = NLLLoss(**options)
    loss = ours(x, y)
    assert loss.shape == ()
    torch.testing.assert_close(loss, expected.detach(), rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match=r"expected target of shape \(\) for pred of shape \(5,\)"):
        ours.backward(torch.ones_like(loss) if reduction == "none" else None)


def test_backward_checks_its_grad_output() -> None:
    with pytest.raises(RuntimeError, match=r"^NLLLoss\(.*\): backward\(\) called before forward"):
        NLLLoss().backward()
    x, y = torch.randn(4, 3).log_softmax(1), torch.tensor([0, 1, 2, 0])
    mean = NLLLoss()
    mean(x, y)
    with pytest.raises(ValueError, match=r"^NLLLoss\(.*\): expected a 0-dim grad_output, got"):
        mean.backward(torch.ones(4))
    unreduced = NLLLoss(reduction="none")
    unreduced(x, y)
    with pytest.raises(ValueError, match=r"grad_output of shape \(4,\) .*got None"):
        unreduced.backward()
    with pytest.raises(ValueError, match=r"grad_output of shape \(4,\) .*got \(4, 1\)"):
        unreduced.backward(torch.ones(4, 1))
    one = NLLLoss(reduction="none")  # a loss of one element needs none, as autograd's
    assert_bits(one, torch.randn(5, dtype=torch.float64).log_softmax(0), torch.tensor(3), None)

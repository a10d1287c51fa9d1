from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.nn import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, Loss, MSELoss
from nograd.nn.binary_cross_entropy import BCELoss
from nograd.nn.huber import HuberLoss, SmoothL1Loss
from tests.oracle import OpNames, assert_loss_close, compare_loss

DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]
ELEMENTWISE = [
    (MSELoss, torch.nn.MSELoss),
    (L1Loss, torch.nn.L1Loss),
    (BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss),
    (HuberLoss, torch.nn.HuberLoss),
    (SmoothL1Loss, torch.nn.SmoothL1Loss),
]
LOSSES = [MSELoss, L1Loss, BCEWithLogitsLoss, BCELoss, HuberLoss, SmoothL1Loss, CrossEntropyLoss]
# the losses whose target has pred's shape and dtype
PAIRED = [MSELoss, L1Loss, BCEWithLogitsLoss, BCELoss, HuberLoss, SmoothL1Loss]

seeds = st.integers(0, 2**32 - 1)
# None: backward() as the training loop calls it; a number: a 0-dim grad_output
scales = st.sampled_from([None, 3.0, -0.5])


# ------------------------------------------------------------------ oracle tests
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("ours_cls", "ref_cls"), ELEMENTWISE)
@given(
    shape=st.lists(st.integers(1, 5), max_size=3),
    reduction=st.sampled_from(REDUCTIONS),
    scale=scales,
    hard_labels=st.booleans(),
    seed=seeds,
)
def test_elementwise_loss_matches_torch(
    dtype: torch.dtype,
    ours_cls: type[Loss],
    ref_cls: type[torch.nn.Module],
    shape: list[int],
    reduction: str,
    scale: float | None,
    hard_labels: bool,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    pred = 3 * torch.randn(shape, generator=gen, dtype=dtype)
    target = torch.rand(shape, generator=gen, dtype=dtype)  # probabilities, for BCE
    if hard_labels:
        target = target.round()
    compare_loss(ours_cls(reduction=reduction), ref_cls(reduction=reduction), pred, target, scale)


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


# --------------------------------------------------------- gradient scaling
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss_cls", LOSSES)
def test_zero_dim_grad_output_scales_the_gradient(loss_cls: type[Loss], reduction: str) -> None:
    pred = torch.randn(4, 3, dtype=torch.float64)
    if loss_cls is BCELoss:
        pred = torch.sigmoid(pred)  # probabilities
    target = torch.tensor([0, 2, 1, 1]) if loss_cls is CrossEntropyLoss else torch.rand_like(pred)
    loss_fn = loss_cls(reduction=reduction)
    loss_fn(pred, target)
    once = loss_fn.backward()
    assert once.abs().sum() > 0
    assert_loss_close(loss_fn.backward(torch.tensor(3.0, dtype=torch.float64)), 3 * once)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss_cls", LOSSES)
def test_a_scaled_loss_has_autograds_gradient_to_the_bit(
    loss_cls: type[Loss], reduction: str, dtype: torch.dtype
) -> None:
    """backward(g) for L = g * loss: torch multiplies by g last (MSE: 2 (pred - target)
    / N first), and so does nograd, so the gradient has autograd's bits."""
    generator = torch.Generator().manual_seed(5)
    pred = (3 * torch.randn(64, 33, generator=generator)).to(dtype)
    if loss_cls is BCELoss:
        pred = torch.sigmoid(pred)  # probabilities
    if loss_cls is CrossEntropyLoss:
        target = torch.randint(0, 33, (64,), generator=generator)
    else:
        target = torch.rand(64, 33, generator=generator).to(dtype)
    g = torch.tensor(0.37, dtype=dtype)
    z = pred.clone().requires_grad_()
    with torch.enable_grad():
        getattr(torch.nn, loss_cls.__name__)(reduction=reduction)(z, target).backward(g)
    loss_fn = loss_cls(reduction=reduction)
    loss_fn(pred, target)
    assert torch.equal(loss_fn.backward(g), z.grad)


# ------------------------------------------------------------ extreme inputs
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


def test_l1_gradient_is_zero_where_pred_equals_target() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0, -1.0], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 3.0, 0.0], dtype=torch.float64)
    loss_fn = L1Loss(reduction="sum")
    loss_fn(pred, target)
    assert torch.equal(loss_fn.backward(), torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64))
    compare_loss(L1Loss(), torch.nn.L1Loss(), pred, target, None)


# ------------------------------------------------- the quick paths, bit for bit
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


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch_gives_an_empty_gradient(reduction: str) -> None:
    logits = torch.randn(0, 3, dtype=torch.float64)
    cases: list[tuple[Loss, torch.nn.Module, Tensor]] = [
        (
            MSELoss(reduction=reduction),
            torch.nn.MSELoss(reduction=reduction),
            torch.randn(0, 3).double(),
        ),
        (
            CrossEntropyLoss(reduction=reduction),
            torch.nn.CrossEntropyLoss(reduction=reduction),
            torch.zeros(0, dtype=torch.long),
        ),
    ]
    for ours, ref, target in cases:
        compare_loss(ours, ref, logits, target, None)


# ------------------------------------------------------------ buffers, repr
def test_weights_are_buffers_named_as_in_torch() -> None:
    weight = torch.rand(3)
    ours, ref = CrossEntropyLoss(weight=weight), torch.nn.CrossEntropyLoss(weight=weight)
    assert ours.state_dict().keys() == ref.state_dict().keys() == {"weight"}
    for options in [
        {"pos_weight": weight},
        {"weight": weight},
        {"weight": weight, "pos_weight": weight},
    ]:
        bce = BCEWithLogitsLoss(**options)
        assert list(bce.state_dict()) == list(torch.nn.BCEWithLogitsLoss(**options).state_dict())
        ref_buffers = torch.nn.BCEWithLogitsLoss(**options).named_buffers()
        assert [name for name, _ in bce.named_buffers()] == [name for name, _ in ref_buffers]
    bce = BCEWithLogitsLoss(weight=weight).to(torch.float64)
    assert bce.weight is not None and bce.weight.dtype == torch.float64
    ours.to(torch.float64)
    assert ours.weight is not None and ours.weight.dtype == torch.float64
    assert MSELoss().state_dict() == {}


def test_repr_is_torchs_and_errors_name_the_settings() -> None:
    ours = CrossEntropyLoss(reduction="sum", label_smoothing=0.1, ignore_index=0)
    twin = torch.nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1, ignore_index=0)
    assert repr(ours) == repr(twin) == "CrossEntropyLoss()"
    assert ours._describe() == (
        "CrossEntropyLoss(reduction='sum', ignore_index=0, label_smoothing=0.1)"
    )


def test_bce_and_smooth_l1_reprs_are_torchs_and_errors_name_the_settings() -> None:
    w = torch.rand(3)
    pairs = [
        (BCELoss(w, reduction="sum"), torch.nn.BCELoss(w, reduction="sum")),
        (HuberLoss("none", 0.5), torch.nn.HuberLoss("none", 0.5)),
        (SmoothL1Loss(beta=2.0), torch.nn.SmoothL1Loss(beta=2.0)),
    ]
    for ours, ref in pairs:
        assert repr(ours) == repr(ref)
    assert [ours._describe() for ours, _ in pairs] == [
        "BCELoss(reduction='sum', weight=...)",
        "HuberLoss(reduction='none', delta=0.5)",
        "SmoothL1Loss(reduction='mean', beta=2.0)",
    ]


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("loss_cls", LOSSES)
def test_unknown_reduction(loss_cls: type[Loss]) -> None:
    name = loss_cls.__name__
    with pytest.raises(ValueError, match=rf"{name}: expected reduction in .*'none'.*got 'avg'"):
        loss_cls(reduction="avg")


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_backward_before_forward(loss_cls: type[Loss]) -> None:
    with pytest.raises(RuntimeError, match=rf"{loss_cls.__name__}\(.*before forward"):
        loss_cls().backward()


@pytest.mark.parametrize("loss_cls", PAIRED)
def test_no_silent_broadcasting(loss_cls: type[Loss]) -> None:
    name = loss_cls.__name__
    message = rf"{name}\(reduction='mean'.*\): expected target of shape \(4, 1\).*got \(4,\)"
    with pytest.raises(ValueError, match=message):
        loss_cls()(torch.randn(4, 1), torch.randn(4))


@pytest.mark.parametrize("loss_cls", PAIRED)
def test_target_dtype_must_match_pred(loss_cls: type[Loss]) -> None:
    match = r"floating pred and target of one dtype, got pred torch.float32 and target torch.%s"
    with pytest.raises(TypeError, match=match % "float64"):
        loss_cls()(torch.randn(3), torch.randn(3, dtype=torch.float64))
    with pytest.raises(TypeError, match=match % "int64"):
        loss_cls()(torch.randn(3), torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError, match=r"got pred torch.int64 and target torch.int64"):
        loss_cls()(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]))


ONE_SAMPLE = {  # (pred, target) whose unreduced loss has one element
    "MSELoss": lambda: (torch.randn(1, 1, dtype=torch.float64), torch.randn(1, 1).double()),
    "L1Loss": lambda: (torch.randn(1, dtype=torch.float64), torch.randn(1).double()),
    "BCEWithLogitsLoss": lambda: (torch.randn((), dtype=torch.float64), torch.tensor(1.0).double()),
    "BCELoss": lambda: (torch.rand(1, dtype=torch.float64), torch.rand(1).double()),
    "HuberLoss": lambda: (torch.randn(1, 1, dtype=torch.float64), torch.randn(1, 1).double()),
    "SmoothL1Loss": lambda: (torch.randn((), dtype=torch.float64), torch.randn(()).double()),
    "CrossEntropyLoss": lambda: (torch.randn(5, dtype=torch.float64), torch.tensor(3)),
}


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_an_unreduced_loss_of_one_element_needs_no_grad_output(loss_cls: type[Loss]) -> None:
    """As autograd's ``loss.backward()`` seeds a loss of one element with 1."""
    pred, target = ONE_SAMPLE[loss_cls.__name__]()
    ours = loss_cls(reduction="none")
    ours(pred, target)
    grad = ours.backward()
    leaf = pred.clone().requires_grad_()
    with torch.enable_grad():
        getattr(torch.nn, loss_cls.__name__)(reduction="none")(leaf, target).backward()
    assert torch.equal(grad, leaf.grad)


def test_grad_output_checks() -> None:
    loss_fn = MSELoss(reduction="none")
    loss_fn(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"MSELoss.*grad_output of shape \(4, 2\).*got \(4,\)"):
        loss_fn.backward(torch.randn(4))
    with pytest.raises(ValueError, match=r"MSELoss.*grad_output of shape \(4, 2\).*got None"):
        loss_fn.backward()
    ce = CrossEntropyLoss()
    ce(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*0-dim grad_output, got shape \(4,\)"):
        ce.backward(torch.ones(4))


def test_cross_entropy_shape_and_dtype_errors() -> None:
    ce = CrossEntropyLoss()
    # one sample (C,) and K dims (N, C, d1, ...) are tests/test_cross_entropy.py's
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


# ------------------------------------------------------------ torch's argument order
@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (MSELoss, torch.nn.MSELoss),
        (L1Loss, torch.nn.L1Loss),
        (BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss),
        (BCELoss, torch.nn.BCELoss),
        (HuberLoss, torch.nn.HuberLoss),
        (SmoothL1Loss, torch.nn.SmoothL1Loss),
        (CrossEntropyLoss, torch.nn.CrossEntropyLoss),
    ],
)
def test_constructor_arguments_in_torchs_order(
    ours: type[Loss], ref: type[torch.nn.Module]
) -> None:
    def parameters(cls: type) -> list[tuple[str, object]]:
        signature = inspect.signature(cls.__init__)
        return [(p.name, p.default) for p in signature.parameters.values() if p.name != "self"]

    assert parameters(ours) == parameters(ref)


def test_a_weight_given_first_positionally_is_the_weight_as_in_torch() -> None:
    w = torch.tensor([1.0, 2.0, 0.5])
    z, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert torch.equal(CrossEntropyLoss(w)(z, y), torch.nn.CrossEntropyLoss(w)(z, y))
    t = torch.rand(4, 3)
    assert torch.equal(BCEWithLogitsLoss(w)(z, t), torch.nn.BCEWithLogitsLoss(w)(z, t))
    p = torch.sigmoid(z)
    assert torch.equal(BCELoss(w)(p, t), torch.nn.BCELoss(w)(p, t))


@pytest.mark.parametrize("name", ["MSELoss", "SmoothL1Loss", "BCELoss"])
@pytest.mark.parametrize(
    ("size_average", "reduce"),
    [(None, False), (False, None), (True, True), (False, False), (True, None)],
)
def test_deprecated_size_average_and_reduce_choose_torchs_reduction(
    name: str, size_average: bool | None, reduce: bool | None
) -> None:
    ours_cls = {"MSELoss": MSELoss, "SmoothL1Loss": SmoothL1Loss, "BCELoss": BCELoss}[name]
    # BCELoss takes a weight first, as torch's: the pair comes by name
    with pytest.warns(
        UserWarning, match="size_average and reduce args will be deprecated"
    ) as ours_warnings:
        ours = ours_cls(size_average=size_average, reduce=reduce)
    with pytest.warns(UserWarning) as ref_warnings:
        ref = getattr(torch.nn, name)(size_average=size_average, reduce=reduce)
    assert ours.reduction == ref.reduction
    assert str(ours_warnings[0].message) == str(ref_warnings[0].message)


# ------------------------------------------------------ class probabilities (soft labels)
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

from __future__ import annotations

import inspect

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.nn import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, Loss, MSELoss
from nograd.nn.binary_cross_entropy import BCELoss
from nograd.nn.huber import HuberLoss, SmoothL1Loss
from nograd.nn.nll_loss import NLLLoss
from tests.oracle import assert_loss_close, compare_loss

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


# ------------------------------------------------------------ edge cases


def test_l1_gradient_is_zero_where_pred_equals_target() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0, -1.0], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 3.0, 0.0], dtype=torch.float64)
    loss_fn = L1Loss(reduction="sum")
    loss_fn(pred, target)
    assert torch.equal(loss_fn.backward(), torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64))
    compare_loss(L1Loss(), torch.nn.L1Loss(), pred, target, None)


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
    with pytest.raises(TypeError, match=r"CrossEntropyLoss.*Tensor or None, got float"):
        ce.backward(1 / 3)  # type: ignore[arg-type]  (torch's backward takes no number either)


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


@pytest.mark.parametrize("loss_cls", [*LOSSES, NLLLoss])
def test_a_loss_takes_torchs_keyword_arguments(loss_cls: type[Loss]) -> None:
    """``loss_fn(input=..., target=...)``, as torch's losses name their arguments."""
    torch_cls = getattr(torch.nn, loss_cls.__name__)
    pred = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    target: Tensor = torch.rand(4, 3)
    if loss_cls in (CrossEntropyLoss, NLLLoss):
        target = torch.tensor([0, 2, 1, 2])
    if loss_cls is BCELoss:
        pred = torch.sigmoid(pred)
    assert list(inspect.signature(torch_cls.forward).parameters)[1:] == ["input", "target"]
    ours = loss_cls()(input=pred, target=target)
    assert torch.equal(ours, torch_cls()(input=pred, target=target))


def test_a_loss_of_ones_own_takes_its_own_arguments_as_torchs() -> None:
    """A Loss subclass whose forward names its arguments otherwise, or takes a third,
    is called with them, by position or keyword, as a torch.nn.Module subclass is."""

    class Masked(Loss):
        """l = sum_i m_i (y_hat_i - y_i)^2 / sum_i m_i."""

        def forward(self, logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
            self.saved["d"], self.saved["m"] = logits - labels, mask
            return (mask * (logits - labels) ** 2).sum() / mask.sum()

    y_hat, y, m = torch.randn(4), torch.randn(4), torch.tensor([1.0, 0.0, 1.0, 1.0])
    expected = (m * (y_hat - y) ** 2).sum() / m.sum()
    loss = Masked()
    assert torch.equal(loss(y_hat, y, m), expected)
    assert torch.equal(loss(logits=y_hat, labels=y, mask=m), expected)
    assert torch.equal(loss(y_hat, labels=y, mask=m), expected)

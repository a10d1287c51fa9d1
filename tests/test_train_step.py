"""TrainStep: the four lines of a training step in one call, straight-line where it can.

Each test trains twins side by side: a ``TrainStep``, the same four lines written out
(nograd's eager loop), and where it applies torch.nn with autograd and torch.optim.
Their parameters, gradients and optimizer state must agree bit for bit, and
``straight_steps`` says whether the straight form ran, so a test of it cannot pass
through the eager lines by accident.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

import nograd
from nograd import nn
from nograd.nn.module import Module
from nograd.optim import SGD, Adam, Optimizer

SIZES = (2, 25, 25, 25, 2)
Builder = Callable[[list[Any]], Optimizer]


def _mlp(sizes: tuple[int, ...] = SIZES, final_relu: bool = False) -> nn.Sequential:
    layers: list[Module] = []
    for d_in, d_out in itertools.pairwise(sizes):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*(layers if final_relu else layers[:-1]))


def _batches(
    n: int, batch: int, classes: int = 2, dtype: torch.dtype = torch.float32
) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, SIZES[0], generator=gen, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=gen)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _twins(
    make_model: Callable[[], nn.Sequential],
    make_loss: Callable[[], nn.CrossEntropyLoss],
    make_opt: Builder,
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any]:
    """Two identical (model, loss, optimizer) triples."""
    torch.manual_seed(0)
    first = make_model().to(dtype=dtype)
    second = make_model().to(dtype=dtype)
    second.load_state_dict(first.state_dict())
    triples = []
    for model in (first, second):
        triples.append((model, make_loss(), make_opt(list(model.parameters()))))
    return triples[0], triples[1]


def _eager(model: Module, loss_fn: Any, opt: Optimizer, x: Tensor, y: Tensor) -> Tensor:
    opt.zero_grad()
    loss: Tensor = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    opt.step()
    return loss


def _assert_same(ours: tuple[Any, Any, Optimizer], eager: tuple[Any, Any, Optimizer]) -> None:
    (model, _, opt), (model_e, _, opt_e) = ours, eager
    for p, q in zip(model.parameters(), model_e.parameters(), strict=True):
        assert torch.equal(p.data, q.data)
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad)
        state, state_e = opt.state.get(p, {}), opt_e.state.get(q, {})
        assert state.keys() == state_e.keys()
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_e[key]))


def _train_both(
    ours: tuple[Any, Any, Optimizer],
    eager: tuple[Any, Any, Optimizer],
    batches: list[tuple[Tensor, Tensor]],
    epochs: int = 2,
) -> nograd.TrainStep:
    step = nograd.TrainStep(*ours)
    for _ in range(epochs):
        for x, y in batches:
            loss = step(x, y)
            loss_e = _eager(*eager, x, y)
            assert torch.equal(loss, loss_e)
    _assert_same(ours, eager)
    return step


def _one_hot(batches: list[tuple[Tensor, Tensor]], classes: int) -> list[tuple[Tensor, Tensor]]:
    """The batches with one-hot float targets, for an elementwise loss such as the MSE."""
    return [(x, torch.nn.functional.one_hot(y, classes).to(x.dtype)) for x, y in batches]


def _sgd(params: list[Any]) -> Optimizer:
    return SGD(params, lr=0.05, momentum=0.9)


def _started(
    calls: int,
) -> tuple[nn.Sequential, Optimizer, nograd.TrainStep, list[tuple[Tensor, Tensor]]]:
    """A TrainStep of the reference network with SGD after ``calls`` calls on batches of
    4; also the 10 batches, of which those calls took the first."""
    model = _mlp()
    opt = _sgd(list(model.parameters()))
    step = nograd.TrainStep(model, nn.CrossEntropyLoss(), opt)
    batches = _batches(40, 4)
    for x, y in batches[:calls]:
        step(x, y)
    return model, opt, step, batches


@pytest.mark.parametrize("batch", [1, 10, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_straight_steps_train_as_the_eager_lines_bit_for_bit(
    batch: int, dtype: torch.dtype
) -> None:
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd, dtype)
    batches = _batches(200, batch, dtype=dtype)
    step = _train_both(ours, eager, batches)
    assert step.straight_steps == 2 * len(batches) - 1  # all but the first call


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_mse_of_the_original_course_runs_straight(reduction: str, dtype: torch.dtype) -> None:
    """MSELoss on one-hot targets, as the course's network was trained."""
    ours, eager = _twins(_mlp, lambda: nn.MSELoss(reduction=reduction), _sgd, dtype)
    batches = _one_hot(_batches(100, 10, dtype=dtype), 2)
    step = _train_both(ours, eager, batches)
    assert step.straight_steps == 19


@pytest.mark.parametrize(
    "target",
    [torch.zeros(4, 3), torch.zeros(4, 2, dtype=torch.float64), torch.zeros(2)],
    ids=["width", "dtype", "broadcast"],
)
def test_an_mse_target_of_another_shape_or_dtype_gets_the_eager_lines_error(
    target: Tensor,
) -> None:
    """torch would broadcast a (2,) target against (4, 2); MSELoss refuses it."""
    model = _mlp()
    step = nograd.TrainStep(model, nn.MSELoss(), _sgd(list(model.parameters())))
    for x, y in _one_hot(_batches(12, 4), 2):
        step(x, y)
    assert step.straight_steps == 2
    with pytest.raises((ValueError, TypeError), match="MSELoss"):
        step(torch.rand(4, 2), target)


def test_straight_steps_train_as_torch_does() -> None:
    """Against torch.nn, autograd and torch.optim: the same float32 bits."""
    torch.manual_seed(0)
    ref = torch.nn.Sequential(
        torch.nn.Linear(2, 25), torch.nn.ReLU(), torch.nn.Linear(25, 25), torch.nn.ReLU(),
        torch.nn.Linear(25, 2),
    )  # fmt: skip
    model = _mlp((2, 25, 25, 2))
    model.load_state_dict(ref.state_dict())
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    step = nograd.TrainStep(model, nn.CrossEntropyLoss(), _sgd(list(model.parameters())))
    for x, y in _batches(200, 10):
        loss = step(x, y)
        with torch.enable_grad():
            ref_opt.zero_grad()
            ref_loss = torch.nn.functional.cross_entropy(ref(x), y)
            ref_loss.backward()
            ref_opt.step()
        assert torch.equal(loss, ref_loss.detach())
    assert step.straight_steps == 19
    for p, t in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p.data, t.detach())
        assert torch.equal(p.grad, t.grad)


@pytest.mark.parametrize(
    "make_loss",
    [
        lambda: nn.CrossEntropyLoss(reduction="sum"),
        lambda: nn.CrossEntropyLoss(ignore_index=1),
        lambda: nn.CrossEntropyLoss(weight=torch.tensor([0.3, 0.2, 0.5])),
    ],
    ids=["sum", "ignore_index", "weight"],
)
def test_the_losses_options_are_the_eager_ones(make_loss: Callable[[], Any]) -> None:
    ours, eager = _twins(lambda: _mlp((2, 8, 3)), make_loss, _sgd)
    step = _train_both(ours, eager, _batches(60, 6, classes=3))
    assert step.straight_steps > 0


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: _mlp((2, 7, 5, 3), final_relu=True),  # the last Linear is followed by a ReLU
        lambda: nn.Sequential(nn.Linear(2, 6), nn.Linear(6, 4), nn.ReLU(inplace=True)),
        lambda: nn.Sequential(nn.Linear(2, 3)),
    ],
    ids=["final_relu", "linear_linear_inplace_relu", "one_linear"],
)
def test_other_chains_of_linear_and_relu_run_straight(make_model: Any) -> None:
    ours, eager = _twins(make_model, nn.CrossEntropyLoss, _sgd)
    step = _train_both(ours, eager, _batches(40, 4, classes=3))
    assert step.straight_steps == 19


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda params: Adam(params, lr=1e-2),
        lambda params: SGD(params, lr=0.1),  # no momentum
        lambda params: SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda params: nograd.optim.AdamW(params, lr=1e-2, amsgrad=True),
    ],
    ids=["adam", "sgd_plain", "sgd_nesterov_decay", "adamw_amsgrad"],
)
def test_other_optimizers_take_their_own_step_after_the_straight_backward(
    make_opt: Builder,
) -> None:
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, make_opt)
    step = _train_both(ours, eager, _batches(100, 10))
    assert step.straight_steps == 19


@pytest.mark.parametrize(
    ("make_model", "make_loss"),
    [
        (lambda: nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 2)), nn.CrossEntropyLoss),
        (
            lambda: nn.Sequential(nn.Linear(2, 5, bias=False), nn.ReLU(), nn.Linear(5, 2)),
            nn.CrossEntropyLoss,
        ),
        (lambda: nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), nn.CrossEntropyLoss),
        (_mlp, lambda: nn.CrossEntropyLoss(label_smoothing=0.1)),
        (_mlp, nn.L1Loss),
    ],
    ids=["tanh", "no_bias", "relu_first", "label_smoothing", "l1"],
)
def test_what_the_straight_form_does_not_cover_runs_the_eager_lines(
    make_model: Callable[[], nn.Sequential], make_loss: Callable[[], Any]
) -> None:
    ours, eager = _twins(make_model, make_loss, _sgd)
    batches = _batches(40, 4)
    if make_loss is nn.L1Loss:
        batches = _one_hot(batches, 2)
    step = nograd.TrainStep(*ours)
    for x, y in batches:
        assert torch.equal(step(x, y), _eager(*eager, x, y))
    _assert_same(ours, eager)
    assert step.straight_steps == 0


def test_reduction_none_fails_as_the_eager_lines_do() -> None:
    model = _mlp()
    step = nograd.TrainStep(model, nn.CrossEntropyLoss(reduction="none"), _sgd(model.parameters()))
    x, y = _batches(4, 4)[0]
    with pytest.raises(ValueError, match="grad_output") as ours:  # from the loss's backward
        step(x, y)
    model_e = _mlp()
    loss_e = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(type(ours.value)):
        _eager(model_e, loss_e, _sgd(model_e.parameters()), x, y)


def test_a_hook_added_between_steps_runs_and_the_steps_go_eager() -> None:
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd)
    batches = _batches(60, 6)
    step = nograd.TrainStep(*ours)
    seen: list[int] = []
    for i, (x, y) in enumerate(batches):
        if i == 4:
            handle = ours[0][2].register_forward_hook(lambda m, a, out: seen.append(len(seen)))
        if i == 7:
            handle.remove()
        step(x, y)
        _eager(*eager, x, y)
    _assert_same(ours, eager)
    assert seen == [0, 1, 2]  # the hook ran at each of the three steps it was there
    # eager: the first, the hooked ones, and the first after the hook (which plans again)
    assert step.straight_steps == 10 - 5


def test_an_old_gradient_the_user_holds_keeps_its_numbers() -> None:
    """As after zero_grad: a kept ``p.grad`` is left alone by the next steps."""
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd)
    step = nograd.TrainStep(*ours)
    batches = _batches(40, 4)
    kept, copies = [], []
    for i, (x, y) in enumerate(batches):
        step(x, y)
        _eager(*eager, x, y)
        if i in (2, 5):
            weight = next(ours[0].parameters())
            kept.append(weight.grad)
            copies.append(weight.grad.clone())
    for grad, numbers in zip(kept, copies, strict=True):
        assert torch.equal(grad, numbers)
    _assert_same(ours, eager)
    assert 0 < step.straight_steps < len(batches) - 1  # the step after each keep: eager


def test_a_frozen_layer_and_a_new_learning_rate_are_seen() -> None:
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd)
    step = nograd.TrainStep(*ours)
    for i, (x, y) in enumerate(_batches(80, 4)):
        if i == 5:  # a scheduler's change: the straight step reads lr at every call
            for opt in (ours[2], eager[2]):
                opt.param_groups[0]["lr"] = 0.01
        if i == 10:
            for model in (ours[0], eager[0]):
                model[0].weight.trainable = False
        if i == 15:
            for model in (ours[0], eager[0]):
                model[0].weight.trainable = True
        step(x, y)
        _eager(*eager, x, y)
        _assert_same(ours, eager)
    assert 0 < step.straight_steps < 19


def test_loss_options_set_between_steps_are_seen() -> None:
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd)
    step = nograd.TrainStep(*ours)
    for i, (x, y) in enumerate(_batches(40, 4)):
        if i == 3:
            ours[1].label_smoothing = eager[1].label_smoothing = 0.2
        if i == 6:
            ours[1].label_smoothing = eager[1].label_smoothing = 0.0
            ours[1].reduction = eager[1].reduction = "sum"
        assert torch.equal(step(x, y), _eager(*eager, x, y))
    _assert_same(ours, eager)
    assert step.straight_steps == 10 - 4  # eager: the first, and the smoothed ones


def test_new_parameter_data_is_seen() -> None:
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd)
    step = nograd.TrainStep(*ours)
    for i, (x, y) in enumerate(_batches(40, 4)):
        if i == 4:
            for model in (ours[0], eager[0]):
                model[2].weight.data = model[2].weight.data.clone()  # out of the flat buffer
        step(x, y)
        _eager(*eager, x, y)
    _assert_same(ours, eager)
    assert step.straight_steps == 10 - 2  # eager: the first, and the one with new data


def test_an_optimizer_state_loaded_between_steps_is_seen() -> None:
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd)
    step = nograd.TrainStep(*ours)
    batches = _batches(40, 4)
    for i, (x, y) in enumerate(batches):
        if i == 3:
            saved_opt = copy.deepcopy(eager[2].state_dict())
        if i == 6:  # back to the momentum of step 3, in both
            ours[2].load_state_dict(saved_opt)
            eager[2].load_state_dict(saved_opt)
        step(x, y)
        _eager(*eager, x, y)
    _assert_same(ours, eager)
    assert step.straight_steps > 5


def test_the_modules_keep_no_saved_tensors_after_a_straight_step() -> None:
    model, _, step, _ = _started(3)
    assert step.straight_steps == 2
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(torch.ones(4, 2))


@pytest.mark.parametrize(
    ("x", "y", "error"),
    [
        (torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), "expected input of shape"),
        (torch.rand(4, 2), torch.tensor([0, 1, 0]), None),
        (torch.rand(4, 2), torch.tensor([0, 1, 0, 5]), None),
    ],
    ids=["features", "targets", "class_range"],
)
def test_a_batch_the_kernels_refuse_gets_the_eager_lines_error(
    x: Tensor, y: Tensor, error: str | None
) -> None:
    model, _, step, _ = _started(3)
    model_e = _mlp()
    opt_e = _sgd(model_e.parameters())
    with pytest.raises((RuntimeError, ValueError, IndexError)) as eager_error:
        _eager(model_e, nn.CrossEntropyLoss(), opt_e, x, y)
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(type(eager_error.value), match=error) as ours:
        step(x, y)
    assert str(ours.value) == str(eager_error.value)
    for p, value in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.data, value)  # nothing trained on the refused batch


def test_other_inputs_the_eager_lines_take_still_train() -> None:
    """int32 targets and a batch of shape (N, 1, in): not the straight form's, trained."""
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd)
    step = nograd.TrainStep(*ours)
    for x, y in _batches(40, 4):
        for xb, yb in ((x, y), (x, y.int())):
            loss = step(xb, yb)
            assert torch.equal(loss, _eager(*eager, xb, yb))
    _assert_same(ours, eager)
    assert step.straight_steps == 9


def test_the_output_is_the_models_for_the_last_batch() -> None:
    ours, eager = _twins(_mlp, nn.CrossEntropyLoss, _sgd)
    step = nograd.TrainStep(*ours)
    assert step.output is None
    for x, y in _batches(12, 4):
        before = eager[0](x)  # the eager twin's model, at the weights of this step
        _eager(*eager, x, y)
        step(x, y)
        assert step.output is not None and torch.equal(step.output, before)
    assert step.straight_steps == 2


def test_nobody_gets_the_input_gradient() -> None:
    """As GraphedTrainStep: the first layer computes no dL/d(input), which no call returns."""
    model = _mlp()
    nograd.TrainStep(model, nn.CrossEntropyLoss(), _sgd(model.parameters()))
    assert model.needs_input_grad is False


def test_an_optimizer_that_needs_a_closure_is_refused() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match="closure"):
        nograd.TrainStep(model, nn.CrossEntropyLoss(), nograd.optim.LBFGS(model.parameters()))


def test_step_hooks_see_every_step() -> None:
    _, opt, step, batches = _started(3)
    calls: list[int] = []
    handle = opt.register_step_post_hook(lambda *args: calls.append(1))
    for x, y in batches[3:6]:
        step(x, y)
    handle.remove()
    assert calls == [1, 1, 1]
    for x, y in batches[6:]:
        step(x, y)
    assert step.straight_steps == 10 - 4  # eager: the first and the hooked ones


def test_a_straight_step_counts_as_a_step_for_a_scheduler() -> None:
    """A scheduler made mid-training warns if its step comes before the optimizer's."""
    _, opt, step, batches = _started(3)
    scheduler = nograd.optim.lr_scheduler.StepLR(opt, step_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in batches[3:]:
            step(x, y)
            scheduler.step()
    assert step.straight_steps == 9


def test_a_group_too_large_for_a_flat_buffer_runs_the_eager_lines() -> None:
    big = (2, 300, 300, 2)  # more than FLAT_MAX_NUMEL numbers: no flat buffer
    ours, eager = _twins(lambda: _mlp(big), nn.CrossEntropyLoss, _sgd)
    step = _train_both(ours, eager, _batches(40, 4))
    assert step.straight_steps == 0


EVENTS = ("none", "lr", "freeze", "unfreeze", "keep_grad", "zero_grad", "hook", "unhook")


@given(
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    relus=st.lists(st.booleans(), min_size=4, max_size=4),
    batch=st.integers(1, 7),
    optimizer=st.sampled_from(["sgd", "sgd_nesterov", "adam"]),
    events=st.lists(st.sampled_from(EVENTS), min_size=4, max_size=12),
)
def test_any_chain_and_any_change_between_steps_train_as_the_eager_lines(
    widths: list[int], relus: list[bool], batch: int, optimizer: str, events: list[str]
) -> None:
    """Random chains of Linear and ReLU, and random changes between steps: the same bits."""
    sizes = (2, *widths, 3)

    def make_model() -> nn.Sequential:
        layers: list[Module] = []
        for k, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(d_in, d_out))
            if relus[k]:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def make_opt(params: list[Any]) -> Optimizer:
        if optimizer == "adam":
            return Adam(params, lr=1e-2)
        return SGD(params, lr=0.1, momentum=0.9, nesterov=optimizer == "sgd_nesterov")

    ours, eager = _twins(make_model, nn.CrossEntropyLoss, make_opt)
    step = nograd.TrainStep(*ours)
    kept, handles, calls = [], [], []
    for event, (x, y) in zip(events, _batches(batch * len(events), batch, classes=3), strict=False):
        for model, _, opt in (ours, eager):
            first = next(iter(model.parameters()))
            if event == "lr":
                opt.param_groups[0]["lr"] *= 0.5
            elif event in ("freeze", "unfreeze"):
                first.trainable = event == "unfreeze"
            elif event == "zero_grad":
                opt.zero_grad()
        if event == "keep_grad" and next(iter(ours[0].parameters())).grad is not None:
            grad = next(iter(ours[0].parameters())).grad
            kept.append((grad, grad.clone()))
        if event == "hook":
            handles.append(ours[0][0].register_forward_hook(lambda *args: calls.append(1)))
        elif event == "unhook" and handles:
            handles.pop().remove()
        assert torch.equal(step(x, y), _eager(*eager, x, y))
        _assert_same(ours, eager)
    for grad, numbers in kept:
        assert torch.equal(grad, numbers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_train_step_runs_the_eager_lines() -> None:
    """No flat buffer on a GPU (nograd.optim.flat): the four lines, as written."""
    ours, eager = _twins(lambda: _mlp().to("cuda"), nn.CrossEntropyLoss, _sgd)
    batches = [(x.cuda(), y.cuda()) for x, y in _batches(100, 10)]
    step = _train_both(ours, eager, batches)
    assert step.straight_steps == 0

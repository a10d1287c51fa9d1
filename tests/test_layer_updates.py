"""nograd.layer_updates: updating layer by layer during the backward trains as one update after it.

``backward_updating_each_layer`` without a stream runs each layer's update right after
that layer's backward, on the CPU: every later step reads the updated weights, so an
update that came too early (before the layer's dL/dx) or touched the wrong parameters
would change the numbers. The streams themselves are checked by test_cuda_graph.py.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

import pytest
import torch
from torch import Tensor

from nograd.layer_updates import backward_updating_each_layer, updates_per_layer_apply
from nograd.nn import CrossEntropyLoss, Linear, Module, Parameter, ReLU, Sequential, Tanh
from nograd.optim import SGD, Adam, AdamW, Optimizer
from nograd.optim.capturable_adam import adam_step_counts, capturable_adam_step

SGD_OPTIONS: list[dict[str, Any]] = [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True},
]
ADAM_CASES: list[tuple[type[Adam], dict[str, Any]]] = [
    (Adam, {"lr": 0.01}),
    (Adam, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    (AdamW, {"lr": 0.01, "betas": (0.5, 0.8)}),
]


def make_model(dtype: torch.dtype) -> Sequential:
    torch.manual_seed(0)
    return Sequential(Linear(5, 16), ReLU(), Linear(16, 16), Tanh(), Linear(16, 4)).to(dtype)


def batches(n: int, dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 5, generator=generator, dtype=dtype), torch.randint(0, 4, (8,)))
        for _ in range(n)
    ]


def train(
    model: Sequential,
    optimizer: Optimizer,
    data: list[tuple[Tensor, Tensor]],
    backward_and_update: Callable[[Tensor], None],
) -> None:
    loss_fn = CrossEntropyLoss()
    for x, y in data:
        optimizer.zero_grad()
        loss_fn(model(x), y)
        backward_and_update(loss_fn.backward())


def one_update_at_the_end(model: Module, optimizer: Optimizer) -> Callable[[Tensor], None]:
    """The usual step: the whole backward, then ``optimizer.step()``."""

    def backward_and_update(grad: Tensor) -> None:
        model.backward(grad)
        optimizer.step()

    return backward_and_update


def assert_same_bits(ours: Module, reference: Module) -> None:
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.data, q.data), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=[str(o) for o in SGD_OPTIONS])
def test_sgd_layer_by_layer_has_the_bits_of_one_step(
    options: dict[str, Any], dtype: torch.dtype
) -> None:
    model, reference = make_model(dtype), make_model(dtype)
    sgd, reference_sgd = SGD(model.parameters(), **options), SGD(reference.parameters(), **options)
    calls: list[int] = []

    def update(params: AbstractSet[Parameter]) -> None:
        calls.append(len(params))
        sgd._update(params)

    def per_layer(grad: Tensor) -> None:
        updated = backward_updating_each_layer(model, grad, update, stream=None)
        assert updated == set(model.parameters())

    data = batches(6, dtype)
    train(model, sgd, data, per_layer)
    train(reference, reference_sgd, data, one_update_at_the_end(reference, reference_sgd))
    assert calls == [2, 2, 2] * 6  # a weight and a bias per Linear, every step
    assert_same_bits(model, reference)


def test_a_shared_activation_gets_each_uses_tensors_layer_by_layer() -> None:
    def shared_model() -> Sequential:
        torch.manual_seed(0)
        act = Tanh()
        return Sequential(Linear(5, 16), act, Linear(16, 16), act, Linear(16, 4)).double()

    model, reference = shared_model(), shared_model()
    sgd, reference_sgd = SGD(model.parameters(), lr=0.1), SGD(reference.parameters(), lr=0.1)

    def per_layer(grad: Tensor) -> None:
        backward_updating_each_layer(model, grad, sgd._update, stream=None)

    data = batches(4, torch.float64)
    train(model, sgd, data, per_layer)
    train(reference, reference_sgd, data, one_update_at_the_end(reference, reference_sgd))
    assert_same_bits(model, reference)


@pytest.mark.parametrize(("cls", "options"), ADAM_CASES, ids=[str(c) for c in ADAM_CASES])
def test_capturable_adam_layer_by_layer_advances_t_once(
    cls: type[Adam], options: dict[str, Any]
) -> None:
    """Each group's t goes up once per step, however many layers the group spans."""
    dtype = torch.float64
    model, reference = make_model(dtype), make_model(dtype)
    adam, reference_adam = (
        cls(model.parameters(), **options),
        cls(reference.parameters(), **options),
    )
    data = batches(6, dtype)
    train(model, adam, data[:1], one_update_at_the_end(model, adam))
    steps = adam_step_counts(adam)  # t = 1 on the device, as in GraphedTrainStep

    def per_layer(grad: Tensor) -> None:
        advanced: set[int] = set()
        backward_updating_each_layer(
            model, grad, lambda params: capturable_adam_step(adam, steps, params, advanced), None
        )
        assert advanced == {0}

    train(model, adam, data[1:], per_layer)
    train(
        reference,
        reference_adam,
        data,
        one_update_at_the_end(reference, reference_adam),
    )
    assert float(steps[0]) == 6
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.data, q.data, rtol=1e-12, atol=1e-14, msg=name)


def test_an_update_before_a_layers_backward_would_show() -> None:
    """The tests above can fail: updating a layer before its dL/dx changes the numbers."""
    dtype = torch.float64
    model, reference = make_model(dtype), make_model(dtype)
    sgd, reference_sgd = SGD(model.parameters(), lr=0.1), SGD(reference.parameters(), lr=0.1)

    def too_early(grad: Tensor) -> None:
        for child in reversed(list(model)):
            if isinstance(child, Linear):  # dL/dW first, the weight updated, then dL/dx
                child._accumulate_weight_grad(grad, child.saved["x"])
                child._accumulate_bias_grad(grad)
                sgd._update(set(child.parameters()))
                child.weight.grad = child.bias.grad = None
            grad = child.backward(grad)

    data = batches(3, dtype)
    train(model, sgd, data, too_early)
    train(
        reference,
        reference_sgd,
        data,
        one_update_at_the_end(reference, reference_sgd),
    )
    with pytest.raises(AssertionError):
        assert_same_bits(model, reference)


def test_parameters_outside_the_optimizer_stay_as_they_are() -> None:
    model = make_model(torch.float64)
    first = model[0]
    assert isinstance(first, Linear)
    frozen = first.weight.data.clone()
    sgd = SGD([p for name, p in model.named_parameters() if name != "0.weight"], lr=0.1)

    def per_layer(grad: Tensor) -> None:
        backward_updating_each_layer(model, grad, sgd._update, stream=None)

    train(model, sgd, batches(2, torch.float64), per_layer)
    assert torch.equal(first.weight.data, frozen)
    assert first.bias.grad is not None  # it had a gradient, and its bias was updated


def test_which_models_can_update_per_layer() -> None:
    assert updates_per_layer_apply(make_model(torch.float32))
    shared = Linear(3, 3)
    assert not updates_per_layer_apply(Sequential(shared, ReLU(), shared))
    assert not updates_per_layer_apply(Linear(3, 3))  # not a Sequential

    class Residual(Sequential):
        def backward(self, grad_output: Tensor) -> Tensor:
            return super().backward(grad_output) + grad_output

    assert not updates_per_layer_apply(Residual(Linear(3, 3)))
    nested = Sequential(Sequential(Linear(3, 3), ReLU()), Linear(3, 2))
    assert updates_per_layer_apply(nested)  # a child is updated after its whole backward

"""Frozen parameters (``trainable = False``, ``freeze()``), against torch's
``requires_grad_(False)``: a frozen parameter gets no gradient, an optimizer leaves it
as it is, and everything else trains as torch's twin does, to the bit in float32."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch

from nograd import nn, optim


def twins() -> tuple[nn.Sequential, torch.nn.Sequential]:
    """A network with each kind of layer that has parameters, and its torch twin."""
    torch.manual_seed(0)
    ours = nn.Sequential(
        nn.Linear(3, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 8), nn.Tanh(),
        nn.BatchNorm1d(8), nn.Linear(8, 2),
    )  # fmt: skip
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 8),
        torch.nn.Tanh(), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2),
    )  # fmt: skip
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def freeze(model: nn.Sequential) -> None:
    """The first Linear whole, the LayerNorm's weight and the BatchNorm's bias."""
    model[0].freeze()
    model[2].weight.trainable = False
    model[5].bias.trainable = False


def freeze_torch(model: torch.nn.Sequential) -> None:
    """``freeze`` in torch's words."""
    model[0].requires_grad_(False)
    model[2].weight.requires_grad_(False)
    model[5].bias.requires_grad_(False)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
        ("AdamW", {"lr": 0.01}),
        ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ],
)
def test_a_frozen_parameter_gets_no_gradient_and_the_rest_trains_as_torchs(
    name: str, options: dict[str, Any]
) -> None:
    ours, ref = twins()
    freeze(ours)
    freeze_torch(ref)
    frozen = {key: value.clone() for key, value in ours.state_dict().items()}
    opt = getattr(optim, name)(ours.parameters(), **options)
    ref_opt = getattr(torch.optim, name)(ref.parameters(), **options)
    loss_fn, ref_loss_fn = nn.MSELoss(), torch.nn.MSELoss()
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(16, 3, generator=gen), torch.randn(16, 2, generator=gen)
        opt.zero_grad()
        loss_fn(ours(x), y)
        ours.backward(loss_fn.backward())
        opt.step()
        ref_opt.zero_grad()
        with torch.enable_grad():  # the suite runs nograd as it runs: without autograd
            ref_loss_fn(ref(x), y).backward()
        ref_opt.step()
    for (key, p), t in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert p.trainable == t.requires_grad, key
        assert (p.grad is None) == (t.grad is None), key  # None exactly where torch's is
        assert torch.equal(p.data, t.detach()), key
        if not p.trainable:
            assert torch.equal(p.data, frozen[key]), key
    assert ours[0].weight.grad is None and ours[2].bias.grad is not None


def test_a_frozen_first_layer_still_passes_its_input_gradient() -> None:
    ours, ref = twins()
    ours.eval()
    ref.eval()
    assert ours.freeze() is ours
    ref.requires_grad_(False)
    x = torch.randn(4, 3, dtype=torch.float32)
    x_ref = x.clone().requires_grad_()
    ours(x)
    grad_input = ours.backward(torch.ones(4, 2))
    with torch.enable_grad():
        ref(x_ref).backward(torch.ones(4, 2))
    assert torch.equal(grad_input, x_ref.grad)
    assert all(p.grad is None for p in ours.parameters())


def test_an_optimizer_of_the_trainable_parameters_only_as_torch_users_build_it() -> None:
    ours, ref = twins()
    freeze(ours)
    freeze_torch(ref)
    opt = optim.SGD([p for p in ours.parameters() if p.trainable], lr=0.5)
    ref_opt = torch.optim.SGD(filter(lambda p: p.requires_grad, ref.parameters()), lr=0.5)
    assert len(opt.param_groups[0]["params"]) == len(ref_opt.param_groups[0]["params"]) == 6
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    loss_fn = nn.MSELoss()
    loss_fn(ours(x), y)
    ours.backward(loss_fn.backward())
    opt.step()
    with torch.enable_grad():
        torch.nn.MSELoss()(ref(x), y).backward()
    ref_opt.step()
    for p, t in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p.data, t.detach())


def test_unfreezing_brings_the_gradient_back() -> None:
    assert nn.Linear(3, 2).freeze().unfreeze().weight.trainable
    layer = nn.Linear(3, 2)
    assert layer.freeze() is layer
    layer(torch.randn(5, 3))
    layer.backward(torch.ones(5, 2))
    assert layer.weight.grad is None and layer.bias.grad is None
    layer.weight.trainable = True
    layer(torch.randn(5, 3))
    layer.backward(torch.ones(5, 2))
    assert layer.weight.grad is not None and layer.bias.grad is None


def test_a_frozen_parameter_adds_no_gradient() -> None:
    p = nn.Parameter(torch.ones(2), trainable=False)
    assert p.trainable is False and "trainable=False" in repr(p)
    assert nn.Parameter(torch.ones(2)).trainable is True
    p.trainable = True
    p.accumulate_grad(torch.ones(2))
    p.trainable = False
    p.accumulate_grad(torch.ones(2))  # frozen: nothing added
    assert torch.equal(p.grad, torch.ones(2))  # type: ignore[arg-type]


def test_copies_stay_frozen_as_torchs() -> None:
    p = nn.Parameter(torch.ones(2), trainable=False)
    t = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    for copied, ref_copied in [
        (copy.deepcopy(p), copy.deepcopy(t)),
        (pickle.loads(pickle.dumps(p)), pickle.loads(pickle.dumps(t))),
    ]:
        assert copied.trainable is ref_copied.requires_grad is False
    old = nn.Parameter.__new__(nn.Parameter)  # pickled before trainable existed
    old.__setstate__({"data": torch.ones(2)})
    assert old.trainable is True and old.grad is None

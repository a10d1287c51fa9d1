"""Frozen parameters (``requires_grad_(False)``), against torch: a frozen parameter gets
no gradient, an optimizer leaves it as it is, and everything else trains as torch's
twin does, to the bit in float32."""

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


def freeze(model: Any) -> None:
    """The first Linear whole, the LayerNorm's weight and the BatchNorm's bias."""
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
    freeze(ref)
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
        assert p.requires_grad == t.requires_grad, key
        assert (p.grad is None) == (t.grad is None), key  # None exactly where torch's is
        assert torch.equal(p.data, t.detach()), key
        if not p.requires_grad:
            assert torch.equal(p.data, frozen[key]), key
    assert ours[0].weight.grad is None and ours[2].bias.grad is not None


def test_a_frozen_first_layer_still_passes_its_input_gradient() -> None:
    ours, ref = twins()
    ours.eval()
    ref.eval()
    ours.requires_grad_(False)
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
    freeze(ref)
    opt = optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.5)
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
    layer = nn.Linear(3, 2)
    assert layer.requires_grad_(False) is layer
    layer(torch.randn(5, 3))
    layer.backward(torch.ones(5, 2))
    assert layer.weight.grad is None and layer.bias.grad is None
    layer.weight.requires_grad = True
    layer(torch.randn(5, 3))
    layer.backward(torch.ones(5, 2))
    assert layer.weight.grad is not None and layer.bias.grad is None


def test_parameter_takes_requires_grad_as_torchs() -> None:
    p = nn.Parameter(torch.ones(2), requires_grad=False)
    assert p.requires_grad is False and "requires_grad=False" in repr(p)
    assert p.requires_grad_() is p and p.requires_grad is True
    assert nn.Parameter(torch.ones(2)).requires_grad is True
    p.accumulate_grad(torch.ones(2))
    p.requires_grad_(False)
    p.accumulate_grad(torch.ones(2))  # frozen: nothing added
    assert torch.equal(p.grad, torch.ones(2))  # type: ignore[arg-type]


def test_copies_keep_requires_grad_as_torchs() -> None:
    p = nn.Parameter(torch.ones(2), requires_grad=False)
    t = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    for copied, ref_copied in [
        (copy.deepcopy(p), copy.deepcopy(t)),
        (pickle.loads(pickle.dumps(p)), pickle.loads(pickle.dumps(t))),
    ]:
        assert copied.requires_grad is ref_copied.requires_grad is False
    old = nn.Parameter.__new__(nn.Parameter)  # pickled before requires_grad existed
    old.__setstate__({"data": torch.ones(2)})
    assert old.requires_grad is True and old.grad is None

"""Gradients written straight into an optimizer's flat buffer (``Parameter.grad_out``).

``zero_grad()`` lends each parameter of a flattened group its slice of the flat
gradient buffer, and ``Linear.backward`` computes the next gradient into it: the
step then has nothing to copy. Whatever the user holds of an old gradient must keep
its numbers, as torch's ``zero_grad()`` leaves old gradients alone; the oracle is
torch.nn, autograd and torch.optim, step by step, to the bit.
"""

from __future__ import annotations

import copy
import itertools
import pickle
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import nograd.nn
import nograd.optim.flat
from nograd.nn import Parameter
from nograd.optim import SGD, Optimizer
from tests.test_optim import CASES, IDS, TWINS

SIZES = (3, 8, 8, 2)


class Twins:
    """A nograd MLP and its torch.nn twin, with the same weights, SGD with momentum.

    With ``norm``, a BatchNorm1d after the first Linear: a layer whose gradients come
    as new tensors, copied into the flat buffer beside the Linears' slices.
    """

    def __init__(
        self,
        seed: int = 0,
        norm: bool = False,
        optimizer: tuple[type[Optimizer], dict[str, Any]] = (SGD, {"lr": 0.1, "momentum": 0.9}),
    ) -> None:
        torch.manual_seed(seed)
        layers: list[torch.nn.Module] = []
        ours: list[nograd.nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
            layers.append(torch.nn.Linear(n_in, n_out))
            ours.append(nograd.nn.Linear(n_in, n_out))
            if norm and i == 0:
                layers.append(torch.nn.BatchNorm1d(n_out))
                ours.append(nograd.nn.BatchNorm1d(n_out))
            if i < len(SIZES) - 2:
                layers.append(torch.nn.ReLU())
                ours.append(nograd.nn.ReLU())
        self.ref = torch.nn.Sequential(*layers)
        self.ours = nograd.nn.Sequential(*ours)
        self.ours.load_state_dict(self.ref.state_dict())
        cls, kwargs = optimizer
        self.opt = cls(self.ours.parameters(), **kwargs)
        self.ref_opt = TWINS[cls](self.ref.parameters(), **kwargs)
        self.loss_fn = nograd.nn.CrossEntropyLoss()
        self.gen = torch.Generator().manual_seed(seed + 1)

    def params(self) -> list[Parameter]:
        return list(self.ours.parameters())

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none)
        self.ref_opt.zero_grad(set_to_none)

    def backward(self, batch: int = 4) -> None:
        """One forward and backward of each on the same random batch."""
        x = torch.randn(batch, SIZES[0], generator=self.gen)
        y = torch.randint(0, SIZES[-1], (batch,), generator=self.gen)
        with torch.enable_grad():
            torch.nn.functional.cross_entropy(self.ref(x), y).backward()
        self.loss_fn(self.ours(x), y)
        self.ours.backward(self.loss_fn.backward())

    def step(self) -> None:
        self.opt.step()
        self.ref_opt.step()

    def train(self, steps: int) -> None:
        """``steps`` whole steps of each, as a training loop takes them."""
        for _ in range(steps):
            self.zero_grad()
            self.backward()
            self.step()

    def assert_same_bits(self) -> None:
        for p, t in zip(self.params(), self.ref.parameters(), strict=True):
            assert torch.equal(p.data, t.detach())
            if t.grad is None:
                assert p.grad is None
            else:
                assert p.grad is not None and torch.equal(p.grad, t.grad)


def _in_flat_buffer(twins: Twins, grad: Tensor | None) -> bool:
    """Whether ``grad`` is a slice of the optimizer's flat gradient buffer (if it has one)."""
    flats = list(twins.opt._flat.values())
    if grad is None or not flats:
        return False
    (flat,) = flats
    return grad.untyped_storage().data_ptr() == flat.grad.data_ptr()


@pytest.mark.parametrize("batch", [1, 4, 64])
def test_gradients_are_written_into_the_flat_buffer_with_torchs_bits(batch: int) -> None:
    twins = Twins()
    for step in range(6):
        twins.zero_grad()
        twins.backward(batch)
        if step > 0:  # the group is flat from the first step on: then the slices are lent
            assert all(_in_flat_buffer(twins, p.grad) for p in twins.params())
        twins.assert_same_bits()
        twins.step()
        twins.assert_same_bits()


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_every_optimizer_leaves_the_lent_gradients_as_the_backward_wrote_them(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    """``param.grad`` is the flat buffer's slice, which the update reads: no rule may
    write into it (torch's leave ``p.grad`` as the backward left it)."""
    twins = Twins(optimizer=(cls, kwargs))
    for step in range(4):
        twins.zero_grad()
        twins.backward()
        twins.step()
        twins.assert_same_bits()  # the parameters, and the gradients after the step
        if step > 0 and twins.opt._flat:
            assert all(_in_flat_buffer(twins, p.grad) for p in twins.params())


def test_the_step_copies_nothing_once_the_slices_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    twins = Twins()
    copies = 0
    real_copy = torch._foreach_copy_

    def counting_copy(*args: object, **kwargs: object) -> None:
        nonlocal copies
        copies += 1
        real_copy(*args, **kwargs)  # type: ignore[arg-type]

    for step in range(4):
        if step == 2:
            monkeypatch.setattr(torch, "_foreach_copy_", counting_copy)
        twins.zero_grad()
        twins.backward()
        twins.step()
    assert copies == 0
    twins.assert_same_bits()


def test_new_gradients_beside_slices_are_copied_in_and_the_buffer_is_kept() -> None:
    twins = Twins(norm=True)
    for step in range(6):
        twins.zero_grad()
        twins.backward()
        twins.step()
        if step == 1:
            (flat,) = twins.opt._flat.values()
            buffer = flat.grad
        twins.assert_same_bits()
    assert flat.grad is buffer  # nobody held a slice: no new buffer at any step
    assert _in_flat_buffer(twins, twins.ours[0].weight.grad)  # the Linears' slices
    assert not _in_flat_buffer(twins, twins.ours[1].weight.grad)  # BatchNorm's: new tensors


def test_a_gradient_the_user_kept_keeps_its_numbers() -> None:
    twins = Twins()
    twins.train(2)
    kept = twins.params()[0].grad
    assert kept is not None
    before = kept.clone()
    twins.zero_grad()
    twins.backward()
    assert torch.equal(kept, before)  # as torch's: zero_grad() left the old tensor alone
    assert twins.params()[0].grad is not kept
    assert _in_flat_buffer(twins, twins.params()[1].grad)  # the others still got their slices
    twins.step()
    twins.assert_same_bits()


@pytest.mark.parametrize("norm", [False, True])
def test_a_kept_gradient_survives_the_step_after_model_zero_grad(norm: bool) -> None:
    """Cleared by the model, not the optimizer: the new gradients are copied in at the
    step, and not into the slice the user still holds."""
    twins = Twins(norm=norm)
    twins.train(2)
    kept = twins.params()[0].grad
    assert kept is not None
    before = kept.clone()
    twins.ours.zero_grad()
    twins.ref.zero_grad()
    twins.backward()
    twins.step()
    assert torch.equal(kept, before)
    twins.assert_same_bits()


@pytest.mark.parametrize("hold", ["view", "slice", "numpy", "list"])
def test_anything_that_shares_an_old_gradient_keeps_its_numbers(hold: str) -> None:
    twins = Twins()
    twins.train(2)
    grad = twins.params()[2].grad
    assert grad is not None
    held: object = {
        "view": grad.view(-1),
        "slice": grad[1:],
        "numpy": grad.numpy(),
        "list": [grad],
    }[hold]
    del grad
    before = copy.deepcopy(held)
    twins.zero_grad()
    twins.backward()
    twins.step()
    if isinstance(held, np.ndarray):
        assert np.array_equal(held, before)  # type: ignore[arg-type]
    elif isinstance(held, list):
        assert torch.equal(held[0], before[0])  # type: ignore[index]
    else:
        assert isinstance(held, Tensor) and torch.equal(held, before)  # type: ignore[arg-type]
    twins.assert_same_bits()


def test_two_backward_passes_before_a_step_add_up_as_in_torch() -> None:
    twins = Twins()
    for _ in range(4):
        twins.zero_grad()
        twins.backward()
        twins.backward()
        twins.assert_same_bits()
        twins.step()
    twins.assert_same_bits()


def test_zero_grad_to_zeros_in_place_lends_nothing_and_matches_torch() -> None:
    twins = Twins()
    for _ in range(4):
        twins.zero_grad(set_to_none=False)
        twins.backward()
        twins.step()
    assert all(p.lent_grad is None for p in twins.params())
    twins.assert_same_bits()


def test_module_zero_grad_gives_new_tensors_and_the_step_copies_them() -> None:
    twins = Twins()
    twins.train(2)
    twins.ours.zero_grad()  # not the optimizer's: no slices lent
    twins.ref.zero_grad()
    old = [p.grad for p in twins.params()]  # None: nothing holds the slices
    assert old == [None] * len(old)
    twins.backward()
    twins.assert_same_bits()
    twins.step()
    twins.assert_same_bits()


def test_a_model_converted_after_zero_grad_gets_new_gradients_of_its_dtype() -> None:
    twins = Twins()
    twins.train(2)
    twins.zero_grad()  # lends float32 slices
    twins.ours.double()
    twins.ref.double()
    x = torch.randn(4, SIZES[0], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    with torch.enable_grad():
        torch.nn.functional.cross_entropy(twins.ref(x), y).backward()
    twins.loss_fn(twins.ours(x), y)
    twins.ours.backward(twins.loss_fn.backward())
    for p in twins.params():
        assert p.grad is not None and p.grad.dtype == torch.float64
    twins.step()
    twins.assert_same_bits()


def test_a_frozen_parameter_takes_no_slice_and_no_gradient() -> None:
    twins = Twins()
    twins.ref[2].weight.requires_grad_(False)
    twins.ours[2].weight.trainable = False
    twins.train(3)
    assert twins.ours[2].weight.grad is None
    twins.assert_same_bits()


def test_without_torchs_storage_count_nothing_is_lent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nograd.optim.flat, "_STORAGE_USE_COUNT", None)
    twins = Twins()
    for _ in range(3):
        twins.zero_grad()
        twins.backward()
        assert not any(_in_flat_buffer(twins, p.grad) for p in twins.params()[1:])
        twins.step()
    twins.assert_same_bits()


def test_a_slot_is_given_once_and_only_for_the_data_it_was_lent_for() -> None:
    param = Parameter(torch.zeros(3))
    slot = torch.empty(3)
    param.lent_grad = (param.data, slot)
    assert param.grad_out() is slot
    assert param.grad_out() is None  # taken
    param.lent_grad = (param.data, slot)
    param.grad = torch.ones(3)  # a gradient already: the next one adds into it
    assert param.grad_out() is None
    param.grad = None
    param.lent_grad = (param.data, slot)
    param.data = torch.zeros(3)  # new data (model.to()): the slot was for the old
    assert param.grad_out() is None


def test_copies_of_a_parameter_hold_no_slot() -> None:
    param = Parameter(torch.zeros(3))
    param.lent_grad = (param.data, torch.empty(3))
    for clone in (copy.deepcopy(param), pickle.loads(pickle.dumps(param))):
        assert clone.grad_out() is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "train",
                "zero_grad",
                "zero_grad_in_place",
                "model_zero_grad",
                "keep",
                "backward",
                "step",
            ]
        ),
        min_size=1,
        max_size=24,
    )
)
@pytest.mark.parametrize("norm", [False, True])
def test_any_order_of_steps_and_kept_gradients_matches_torch(
    norm: bool, actions: list[str]
) -> None:
    """A gradient the user holds (``kept = p.grad``) changes exactly when torch's does:
    an in-place ``zero_grad(set_to_none=False)`` or a backward that adds into it."""
    twins = Twins(norm=norm)
    kept: list[tuple[Tensor, Tensor]] = []  # (ours, torch's), taken together
    for action in actions:
        if action == "train":
            twins.train(1)
        elif action == "zero_grad":
            twins.zero_grad()
        elif action == "zero_grad_in_place":
            twins.zero_grad(set_to_none=False)
        elif action == "model_zero_grad":  # the model's, not the optimizer's: nothing lent
            twins.ours.zero_grad()
            twins.ref.zero_grad()
        elif action == "keep":
            for p, t in zip(twins.params(), twins.ref.parameters(), strict=True):
                if p.grad is not None and t.grad is not None:
                    kept.append((p.grad, t.grad))
        elif action == "backward":
            twins.backward()
        else:
            twins.step()
        twins.assert_same_bits()
        for ours, ref in kept:
            assert torch.equal(ours, ref)

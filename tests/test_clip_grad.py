"""Gradient clipping (nograd.nn.utils) against torch.nn.utils, to the bit."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from nograd.nn import CrossEntropyLoss, Linear, Parameter, ReLU, Sequential, utils
from nograd.optim import SGD

SHAPES = [(4, 3), (3,), (5, 4), (5,)]
NORMS: list[Any] = [2.0, 1.0, 3.5, 0.5, math.inf, "inf"]


def twins(
    dtypes: list[torch.dtype], scale: float = 1.0, seed: int = 0, device: str = "cpu"
) -> tuple[list[Parameter], list[torch.nn.Parameter]]:
    """Parameters with the same values and gradients, ours and torch's."""
    generator = torch.Generator().manual_seed(seed)
    ours, theirs = [], []
    for shape, dtype in zip(SHAPES, dtypes, strict=True):
        data = torch.randn(shape, generator=generator, dtype=dtype).to(device)
        grad = (torch.randn(shape, generator=generator, dtype=dtype) * scale).to(device)
        ours.append(Parameter(data.clone()))
        ours[-1].grad = grad.clone()
        theirs.append(torch.nn.Parameter(data.clone()))
        theirs[-1].grad = grad.clone()
    return ours, theirs


def assert_same_grads(ours: list[Parameter], theirs: list[torch.nn.Parameter]) -> None:
    for p, t in zip(ours, theirs, strict=True):
        assert (p.grad is None) == (t.grad is None)
        if p.grad is not None:
            assert t.grad is not None
            torch.testing.assert_close(p.grad, t.grad, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clips, and leaves alone (times 1)
@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_grad_norm_is_torchs(
    dtype: torch.dtype, norm_type: Any, max_norm: float, foreach: bool | None
) -> None:
    ours, theirs = twins([dtype] * 4, scale=3.0)
    total = utils.clip_grad_norm_(ours, max_norm, norm_type, foreach=foreach)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type, foreach=foreach)
    assert total.dtype == expected.dtype
    assert torch.equal(total, expected)
    assert_same_grads(ours, theirs)


def test_the_clipped_norm_is_max_norm_and_the_direction_is_kept() -> None:
    ours, _ = twins([torch.float64] * 4, scale=3.0)
    before = torch.cat([p.grad.flatten() for p in ours if p.grad is not None])
    total = utils.clip_grad_norm_(ours, 0.5)
    after = torch.cat([p.grad.flatten() for p in ours if p.grad is not None])
    assert float(total) > 0.5
    assert math.isclose(float(after.norm()), 0.5, rel_tol=1e-5)
    torch.testing.assert_close(after, before * (0.5 / (float(total) + 1e-6)))


def test_parameters_without_a_gradient_are_skipped_and_a_generator_is_read_once() -> None:
    ours, theirs = twins([torch.float32] * 4, scale=3.0)
    ours[1].grad = theirs[1].grad = None
    total = utils.clip_grad_norm_((p for p in ours), 1.0)
    expected = torch.nn.utils.clip_grad_norm_((t for t in theirs), 1.0)
    assert torch.equal(total, expected)
    assert_same_grads(ours, theirs)


def test_one_parameter_alone() -> None:
    ours, theirs = twins([torch.float32] * 4, scale=3.0)
    assert torch.equal(
        utils.clip_grad_norm_(ours[2], 0.1), torch.nn.utils.clip_grad_norm_(theirs[2], 0.1)
    )
    assert_same_grads(ours, theirs)


def test_no_gradient_at_all_gives_torchs_zero_and_an_empty_generator_warns() -> None:
    assert torch.equal(utils.clip_grad_norm_([], 1.0), torch.nn.utils.clip_grad_norm_([], 1.0))
    with pytest.warns(UserWarning, match="empty generator"):
        utils.clip_grad_norm_((p for p in []), 1.0)
    lone = Parameter(torch.ones(2))
    assert torch.equal(utils.clip_grad_norm_([lone], 1.0), torch.tensor(0.0))
    assert lone.grad is None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_norm_raises_on_request_and_scales_as_torch_otherwise(bad: float) -> None:
    ours, theirs = twins([torch.float32] * 4)
    for params in (ours, theirs):
        assert params[0].grad is not None
        params[0].grad[1, 2] = bad
    with pytest.raises(RuntimeError, match=r"^get_total_norm: the total norm .* non-finite"):
        utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    total = utils.clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    torch.testing.assert_close(total, expected, rtol=0, atol=0, equal_nan=True)
    assert_same_grads(ours, theirs)


@pytest.mark.parametrize("norm_type", NORMS)
def test_get_total_norm_and_clip_grads_with_norm_are_torchs(norm_type: Any) -> None:
    ours, theirs = twins([torch.float32] * 4, scale=2.0)
    grads: list[Tensor] = [p.grad for p in ours if p.grad is not None]
    total = utils.get_total_norm(grads, norm_type)
    expected = torch.nn.utils.get_total_norm([t.grad for t in theirs], norm_type)
    assert torch.equal(total, expected)
    assert torch.equal(utils.get_total_norm(grads[0]), torch.nn.utils.get_total_norm(grads[0]))
    utils.clip_grads_with_norm_(ours, 0.3, total)
    torch.nn.utils.clip_grads_with_norm_(theirs, 0.3, expected)
    assert_same_grads(ours, theirs)


def test_gradients_of_two_dtypes_are_torchs() -> None:
    """torch orders its (device, dtype) groups by a hash map, and so does nograd (it
    groups with torch's function): the norms are summed in the same order."""
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64]
    ours, theirs = twins(dtypes, scale=3.0)
    total = utils.clip_grad_norm_(ours, 0.5)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    assert torch.equal(total, expected)
    for p, t in zip(ours, theirs, strict=True):
        assert p.grad is not None and t.grad is not None and p.grad.dtype == t.grad.dtype
        assert torch.equal(p.grad, t.grad)


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clip_grad_value_is_torchs(dtype: torch.dtype, foreach: bool | None) -> None:
    ours, theirs = twins([dtype] * 4, scale=2.0)
    utils.clip_grad_value_(ours, 0.7, foreach=foreach)
    torch.nn.utils.clip_grad_value_(theirs, 0.7, foreach=foreach)
    assert_same_grads(ours, theirs)
    assert all(p.grad is not None and float(p.grad.abs().max()) <= 0.7 for p in ours)


def test_foreach_on_a_device_without_foreach_kernels_raises_as_torchs() -> None:
    ours, theirs = twins([torch.float32] * 4, device="meta")
    with pytest.raises(RuntimeError, match="foreach=True was passed"):
        utils.clip_grad_value_(ours, 1.0, foreach=True)
    with pytest.raises(RuntimeError, match="foreach=True was passed"):
        torch.nn.utils.clip_grad_value_(theirs, 1.0, foreach=True)
    utils.clip_grad_value_(ours, 1.0)  # one op per tensor there
    assert utils.get_total_norm([p.grad for p in ours if p.grad is not None]).is_meta


def test_training_with_clipping_is_torchs_to_the_bit() -> None:
    torch.manual_seed(0)
    ours = Sequential(Linear(2, 16), ReLU(), Linear(16, 3))
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    theirs.load_state_dict(ours.state_dict())
    opt, ref_opt = SGD(ours.parameters(), lr=0.5), torch.optim.SGD(theirs.parameters(), lr=0.5)
    loss_fn, ref_loss_fn = CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(8, 2, generator=generator) * 10
        y = torch.randint(0, 3, (8,), generator=generator)
        opt.zero_grad()
        loss_fn(ours(x), y)
        ours.backward(loss_fn.backward())
        norm = utils.clip_grad_norm_(ours.parameters(), 0.25)
        opt.step()
        ref_opt.zero_grad()
        with torch.enable_grad():
            ref_loss_fn(theirs(x), y).backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.25)
        ref_opt.step()
        assert torch.equal(norm, ref_norm)
        assert float(norm) > 0.25  # every step clipped
    for (name, ours_t), ref_t in zip(
        ours.state_dict().items(), theirs.state_dict().values(), strict=True
    ):
        assert torch.equal(ours_t, ref_t), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_on_cuda_is_torchs(norm_type: float) -> None:
    ours, theirs = twins([torch.float32] * 4, scale=3.0, device="cuda")
    total = utils.clip_grad_norm_(ours, 0.5, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type)
    assert torch.equal(total, expected)
    assert_same_grads(ours, theirs)
    utils.clip_grad_value_(ours, 0.01)
    torch.nn.utils.clip_grad_value_(theirs, 0.01)
    assert_same_grads(ours, theirs)

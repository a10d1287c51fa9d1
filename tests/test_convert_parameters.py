"""parameters_to_vector and vector_to_parameters against torch.nn.utils'."""

from __future__ import annotations

import pytest
import torch

from nograd import nn
from nograd.nn.utils import parameters_to_vector, vector_to_parameters


def twins() -> tuple[nn.Sequential, torch.nn.Sequential]:
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.LayerNorm(4),
        torch.nn.Linear(4, 2, bias=False),
    )  # fmt: skip
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_the_vector_is_torchs() -> None:
    ours, ref = twins()
    vec = parameters_to_vector(ours.parameters())
    assert torch.equal(vec, torch.nn.utils.parameters_to_vector(ref.parameters()).detach())
    vec.zero_()  # a new tensor: the parameters keep their values
    assert not all(torch.equal(p.data, torch.zeros_like(p.data)) for p in ours.parameters())


def test_a_vector_goes_back_into_the_parameters_as_views_as_in_torch() -> None:
    ours, ref = twins()
    vec = torch.randn(sum(p.numel() for p in ours.parameters()))
    vector_to_parameters(vec, ours.parameters())
    torch.nn.utils.vector_to_parameters(vec.clone(), ref.parameters())
    for p, t in zip(ours.parameters(), ref.parameters(), strict=True):
        assert p.shape == t.shape and torch.equal(p.data, t.detach())
    x = torch.randn(5, 3)
    assert torch.equal(ours(x), ref(x))  # the same network, from the same vector
    vec.add_(1.0)  # each parameter is a view of vec, as torch's
    assert torch.equal(parameters_to_vector(ours.parameters()), vec)


def test_refusals_are_torchs() -> None:
    ours, _ = twins()
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor"):
        vector_to_parameters([1.0, 2.0], ours.parameters())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        torch.nn.utils.vector_to_parameters([1.0, 2.0], [])  # type: ignore[arg-type]
    meta = nn.Parameter(torch.empty(2, device="meta"))
    with pytest.raises(TypeError, match="different devices"):
        parameters_to_vector([*ours.parameters(), meta])

"""nograd.optim.foreach: each helper gives the bits of torch's ``_foreach_*`` op.

A one-tensor CPU list (a flat group) takes the single-tensor op; longer lists go to
``_foreach_*``. Both must agree with torch's op to the last bit, in place or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from nograd.optim import foreach

Lists = tuple[list[Tensor], list[Tensor], list[Tensor]]

# (name, ours, torch's), each called with three lists x, y, z of positive tensors
CASES: list[tuple[str, Callable[[Lists], Any], Callable[[Lists], Any]]] = [
    ("neg", lambda t: foreach.neg(t[0]), lambda t: torch._foreach_neg(t[0])),
    (
        "add",
        lambda t: foreach.add(t[0], t[1], alpha=0.3),
        lambda t: torch._foreach_add(t[0], t[1], alpha=0.3),
    ),
    (
        "add_",
        lambda t: foreach.add_(t[0], t[1], alpha=-0.05),
        lambda t: torch._foreach_add_(t[0], t[1], alpha=-0.05),
    ),
    (
        "add_ alpha 1",  # left out of the call: x + 1 * y must still be torch's x + 1.0 * y
        lambda t: foreach.add_(t[0], t[1], alpha=1.0),
        lambda t: torch._foreach_add_(t[0], t[1], alpha=1.0),
    ),
    (
        "add_scalar_",
        lambda t: foreach.add_scalar_(t[0], foreach.foreach_scalar(1e-8, t[0])),
        lambda t: torch._foreach_add_(t[0], 1e-8),
    ),
    (
        "mul_",
        lambda t: foreach.mul_(t[0], foreach.foreach_scalar(0.9, t[0])),
        lambda t: torch._foreach_mul_(t[0], 0.9),
    ),
    (
        "div_",
        lambda t: foreach.div_(t[0], [0.7 + i for i in range(len(t[0]))]),
        lambda t: torch._foreach_div_(t[0], [0.7 + i for i in range(len(t[0]))]),
    ),
    (
        "lerp_",
        lambda t: foreach.lerp_(t[0], t[1], 0.1),
        lambda t: torch._foreach_lerp_(t[0], t[1], 0.1),
    ),
    (
        "addcmul",
        lambda t: foreach.addcmul(t[0], t[1], t[2], value=-1.0),
        lambda t: torch._foreach_addcmul(t[0], t[1], t[2], value=-1.0),
    ),
    (
        "addcmul_",
        lambda t: foreach.addcmul_(t[0], t[1], t[2], value=0.001),
        lambda t: torch._foreach_addcmul_(t[0], t[1], t[2], value=0.001),
    ),
    (
        "addcdiv_ one value",
        lambda t: foreach.addcdiv_(t[0], t[1], t[2], value=-0.01),
        lambda t: torch._foreach_addcdiv_(t[0], t[1], t[2], value=-0.01),
    ),
    (
        "addcdiv_ a value each",
        lambda t: foreach.addcdiv_(t[0], t[1], t[2], [-0.01 * (i + 1) for i in range(len(t[0]))]),
        lambda t: torch._foreach_addcdiv_(
            t[0], t[1], t[2], [-0.01 * (i + 1) for i in range(len(t[0]))]
        ),
    ),
    ("maximum_", lambda t: foreach.maximum_(t[0], t[1]), lambda t: torch._foreach_maximum_(*t[:2])),
    ("sqrt", lambda t: foreach.sqrt(t[0]), lambda t: torch._foreach_sqrt(t[0])),
    ("sqrt_", lambda t: foreach.sqrt_(t[0]), lambda t: torch._foreach_sqrt_(t[0])),
]


def lists(count: int, dtype: torch.dtype, seed: int) -> Lists:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(1427,), (25, 25), (7,), (2, 25)][:count]
    x, y, z = ([torch.rand(s, generator=gen, dtype=dtype) + 0.5 for s in shapes] for _ in "xyz")
    return x, y, z


def copies(tensors: Lists) -> Lists:
    x, y, z = tensors
    return [t.clone() for t in x], [t.clone() for t in y], [t.clone() for t in z]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("count", [1, 4])  # one tensor: the single-tensor op; four: _foreach_*
@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=[case[0] for case in CASES])
def test_each_helper_has_the_bits_of_torchs_foreach_op(
    name: str,
    ours: Callable[[Lists], Any],
    theirs: Callable[[Lists], Any],
    count: int,
    dtype: torch.dtype,
) -> None:
    mine, reference = lists(count, dtype, seed=count), lists(count, dtype, seed=count)
    result, expected = ours(mine), theirs(reference)
    if name.split()[0].endswith("_"):  # in place: the first list holds the result
        assert result is None
        result, expected = mine[0], reference[0]
    assert len(result) == count
    for a, b in zip(result, expected, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_a_new_list_leaves_its_input_alone() -> None:
    x = [torch.rand(5)]
    before = x[0].clone()
    (out,) = foreach.add(x, x, alpha=2.0)
    assert out is not x[0] and torch.equal(x[0], before)


def test_foreach_scalar_is_float64_when_any_tensor_is() -> None:
    mixed = [torch.zeros(2), torch.zeros(2, dtype=torch.float64)]
    assert foreach.foreach_scalar(0.1, mixed).dtype == torch.float64
    assert foreach.foreach_scalar(0.1, [torch.zeros(2)]).dtype == torch.float32

"""LBFGS and gradient clipping against torch where an audit looked for them apart.

Clipping: the total norm of gradients of several dtypes (torch sums the groups' norms
in the order of its own grouping, a C++ hash map's), and the error cases torch raises
before it looks at the gradients. LBFGS: paths the other tests do not walk (a closure
that returns a Python float, a tensor lr of another dtype than the parameters, a
history of one pair, state_dicts swapped mid-run), each to torch's bits.
"""

from __future__ import annotations

import copy
import io
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from nograd.nn import Parameter, utils
from nograd.optim import LBFGS

# ----------------------------------------------------------------------- clipping
MIXES = [  # dtypes whose groups torch orders other than by first appearance
    [torch.float64, torch.float16],
    [torch.float16, torch.float16, torch.float64],
    [torch.float16, torch.bfloat16, torch.bfloat16, torch.float32, torch.float32],
    [torch.bfloat16, torch.float32, torch.float64, torch.float32, torch.float64],
]


def mixed_twins(
    dtypes: list[torch.dtype], seed: int
) -> tuple[list[Parameter], list[torch.nn.Parameter]]:
    """Parameters of the given dtypes, ours and torch's, with equal gradients."""
    generator = torch.Generator().manual_seed(seed)
    ours, theirs = [], []
    for i, dtype in enumerate(dtypes):
        shape = (3 + 5 * i,)
        data = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
        grad = (torch.randn(shape, generator=generator, dtype=torch.float64) * 10).to(dtype)
        ours.append(Parameter(data.clone()))
        ours[-1].grad = grad.clone()
        theirs.append(torch.nn.Parameter(data.clone()))
        theirs[-1].grad = grad.clone()
    return ours, theirs


@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5])
@pytest.mark.parametrize("dtypes", MIXES, ids=lambda d: "-".join(str(t)[6:] for t in d))
def test_total_norm_of_several_dtypes_is_torchs_to_the_bit(
    dtypes: list[torch.dtype], norm_type: float, foreach: bool | None
) -> None:
    """The norms of the dtype groups are summed in torch's order of groups, not in order
    of appearance: another order rounds the sum differently in its last bit."""
    for seed in range(8):
        ours, theirs = mixed_twins(dtypes, seed)
        grads = [p.grad for p in ours if p.grad is not None]
        ref_grads = [t.grad for t in theirs if t.grad is not None]
        total = utils.get_total_norm(grads, norm_type, foreach=foreach)
        expected = torch.nn.utils.get_total_norm(ref_grads, norm_type, foreach=foreach)
        assert total.dtype == expected.dtype and torch.equal(total, expected), seed

        total = utils.clip_grad_norm_(ours, 1.0, norm_type, foreach=foreach)
        expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type, foreach=foreach)
        assert torch.equal(total, expected), seed
        for p, t in zip(ours, theirs, strict=True):
            assert p.grad is not None and t.grad is not None
            assert p.grad.dtype == t.grad.dtype and torch.equal(p.grad, t.grad), seed


@pytest.mark.parametrize("bad", [None, "abc"])
def test_max_norm_is_checked_even_without_gradients_as_torch(bad: Any) -> None:
    """torch converts max_norm with float() before it looks for gradients to clip."""
    ours, theirs = Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    error = TypeError if bad is None else ValueError
    with pytest.raises(error):
        torch.nn.utils.clip_grad_norm_([theirs], bad)
    with pytest.raises(error):
        utils.clip_grad_norm_([ours], bad)
    with pytest.raises(error):
        torch.nn.utils.clip_grads_with_norm_([theirs], bad, torch.tensor(1.0))
    with pytest.raises(error):
        utils.clip_grads_with_norm_([ours], bad, torch.tensor(1.0))


def test_a_total_norm_that_is_not_a_tensor_raises_typeerror_as_torch() -> None:
    ours, theirs = mixed_twins([torch.float32], seed=0)
    with pytest.raises(TypeError):
        torch.nn.utils.clip_grads_with_norm_(theirs, 1.0, 5.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        utils.clip_grads_with_norm_(ours, 1.0, 5.0)  # type: ignore[arg-type]


def test_a_none_among_the_tensors_of_get_total_norm_raises_runtimeerror_as_torch() -> None:
    grad = torch.randn(4)
    with pytest.raises(RuntimeError):
        torch.nn.utils.get_total_norm([grad, None])  # type: ignore[list-item]
    with pytest.raises(RuntimeError):
        utils.get_total_norm([grad, None])  # type: ignore[list-item]


@pytest.mark.parametrize("norm_type", [2.0, 0.0, 1.0, math.inf, -math.inf, 3.5])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_single_parameter_and_its_norm_dtype_are_torchs(
    dtype: torch.dtype, norm_type: float
) -> None:
    (ours,), (theirs,) = mixed_twins([dtype], seed=3)
    total = utils.clip_grad_norm_(ours, 0.5, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type)
    assert total.dtype == expected.dtype == dtype and torch.equal(total, expected)
    assert ours.grad is not None and torch.equal(ours.grad, theirs.grad)  # type: ignore[arg-type]


# -------------------------------------------------------------------------- LBFGS
def quartic(x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """f(x) = sum (x - c)^4 / 4 + |x|^2 / 20, and df/dx = (x - c)^3 + x / 10."""
    diff = x - c
    return (diff**4).sum() / 4 + x.dot(x) / 20, diff**3 + x / 10


class Twins:
    """Two flat parameters, ours and torch's, with LBFGS each and one gradient formula,
    so that the optimizers alone are compared."""

    def __init__(self, dtype: torch.dtype, as_float: bool, **options: Any) -> None:
        generator = torch.Generator().manual_seed(7)
        values = [torch.randn(n, generator=generator, dtype=dtype) for n in (3, 4)]
        self.c = torch.randn(7, generator=generator, dtype=dtype)
        self.ours = [Parameter(v.clone()) for v in values]
        self.theirs = [v.clone().requires_grad_() for v in values]
        self.options = options
        self.opt = LBFGS(self.ours, **options)
        self.ref_opt = torch.optim.LBFGS(self.theirs, **options)
        self.as_float = as_float  # the closure returns a Python float, not a tensor

    def _closure(self, params: list[Any], values: list[Tensor]) -> Tensor | float:
        loss, grad = quartic(torch.cat(values), self.c)
        params[0].grad, params[1].grad = grad[:3].clone(), grad[3:].clone()
        return float(loss) if self.as_float else loss

    def step(self) -> None:
        with torch.inference_mode():
            loss = self.opt.step(lambda: self._closure(self.ours, [p.data for p in self.ours]))
        ref_loss = self.ref_opt.step(
            lambda: self._closure(self.theirs, [t.detach() for t in self.theirs])
        )
        assert type(loss) is type(ref_loss) and loss == ref_loss
        for p, t in zip(self.ours, self.theirs, strict=True):
            assert torch.equal(p.data, t.detach())
        assert_same_state(self.opt.state_dict(), self.ref_opt.state_dict())

    def swap_state_dicts(self) -> None:
        """Each side goes on from a fresh optimizer loaded with the other's state_dict."""
        ours, buffer = self.opt.state_dict(), io.BytesIO()
        torch.save(self.ref_opt.state_dict(), buffer)
        buffer.seek(0)
        self.opt = LBFGS(self.ours, **self.options)
        self.opt.load_state_dict(torch.load(buffer))
        self.ref_opt = torch.optim.LBFGS(self.theirs, **self.options)
        self.ref_opt.load_state_dict(copy.deepcopy(ours))


def assert_same_state(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["param_groups"] == theirs["param_groups"]
    for index, entry in theirs["state"].items():
        assert ours["state"][index].keys() == entry.keys()
        for key, value in entry.items():
            assert_same_value(ours["state"][index][key], value, key)


def assert_same_value(ours: Any, theirs: Any, where: str) -> None:
    if isinstance(theirs, Tensor):
        assert isinstance(ours, Tensor) and ours.dtype == theirs.dtype, where
        assert torch.equal(ours, theirs), where
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for a, b in zip(ours, theirs, strict=True):
            assert_same_value(a, b, where)
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


CASES: list[dict[str, Any]] = [
    {"history_size": 1},
    {"lr": torch.tensor(0.5, dtype=torch.float64)},  # of another dtype than float32 x
    {"lr": torch.tensor([0.7], dtype=torch.float16)},
    {"lr": torch.tensor(1)},  # an integer tensor
    {"max_iter": 3, "max_eval": 2},
    {"tolerance_change": 1e-4},
]


@pytest.mark.parametrize("as_float", [False, True], ids=["tensor-loss", "float-loss"])
@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("options", CASES, ids=lambda o: str(o))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lbfgs_steps_and_state_dicts_swapped_mid_run_are_torchs(
    dtype: torch.dtype, options: dict[str, Any], line_search_fn: str | None, as_float: bool
) -> None:
    twins = Twins(dtype, as_float, line_search_fn=line_search_fn, **{"max_iter": 6, **options})
    for _ in range(2):
        twins.step()
    twins.swap_state_dicts()
    for _ in range(3):
        twins.step()

"""LBFGS and its strong-Wolfe line search against torch.optim.LBFGS: the same bits.

A nograd network and its torch.nn twin start from the same weights; each optimizer
steps its own with a closure, and after every step the losses, the parameters and the
whole optimizer state (counts, history lists, step lengths, their types) must agree to
the bit, in float32 and float64, with and without the line search.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch import Tensor
from torch.optim.lbfgs import _cubic_interpolate, _strong_wolfe

from nograd import nn
from nograd.nn import Parameter
from nograd.optim import LBFGS
from nograd.optim.line_search import cubic_interpolate, strong_wolfe

DTYPES = [torch.float32, torch.float64]
LINE_SEARCHES = [None, "strong_wolfe"]
# Each option set, and whether it must stop some step before max_iter iterations.
OPTIONS: list[tuple[dict[str, Any], bool]] = [
    ({}, False),
    ({"history_size": 2}, False),  # the history wraps after two pairs
    ({"lr": 0.3, "max_iter": 6}, False),
    ({"lr": 2.5, "max_iter": 5, "history_size": 3}, False),  # long steps: the search zooms
    ({"max_iter": 8, "max_eval": 3}, True),  # out of closure calls
    ({"max_iter": 4, "max_eval": 1}, True),  # the line search gets no evaluation to spare
    ({"tolerance_change": 1e-2}, True),  # the loss or the step stops moving
    ({"tolerance_grad": 5e-2}, True),  # the gradient is small enough
    ({"tolerance_grad": 1e3}, True),  # optimal at once: step returns after one closure call
    ({"max_iter": 1}, False),
]
OPTION_IDS = [str(options) for options, _ in OPTIONS]


class NetTwins:
    """A nograd Linear-Tanh-Linear network and its torch.nn twin, each with an LBFGS."""

    def __init__(self, dtype: torch.dtype, seed: int = 0, **options: Any) -> None:
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1)).to(dtype=dtype)
        self.ref = torch.nn.Sequential(
            torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)
        ).to(dtype)
        self.ref.load_state_dict(self.model.state_dict())
        gen = torch.Generator().manual_seed(seed + 1)
        self.x = torch.randn(16, 4, generator=gen, dtype=dtype)
        self.y = torch.randn(16, 1, generator=gen, dtype=dtype)
        self.loss_fn = nn.MSELoss()
        self.opt = LBFGS(list(self.model.parameters()), **options)
        self.ref_opt = torch.optim.LBFGS(self.ref.parameters(), **options)

    def closure(self) -> Any:
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        self.model.backward(self.loss_fn.backward())
        return loss

    def ref_closure(self) -> Any:
        self.ref_opt.zero_grad()  # torch.optim.LBFGS turns autograd on around it
        loss = torch.nn.functional.mse_loss(self.ref(self.x), self.y)
        loss.backward()
        return loss

    def step(self, inference_mode: bool = True) -> tuple[Tensor, Tensor]:
        with torch.inference_mode(inference_mode):
            loss = self.opt.step(self.closure)
        return loss, self.ref_opt.step(self.ref_closure)

    def assert_same(self) -> None:
        for p, q in zip(self.model.parameters(), self.ref.parameters(), strict=True):
            assert torch.equal(p.data, q.detach())
        assert_same_state_dict(self.opt.state_dict(), self.ref_opt.state_dict())


def assert_same_value(ours: Any, theirs: Any, where: str) -> None:
    """Equal to the bit, and of the same type: a 0-dim tensor where torch has one."""
    if isinstance(theirs, Tensor):
        assert isinstance(ours, Tensor), where
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, where
        assert torch.equal(ours, theirs), where
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_value(a, b, f"{where}[{i}]")
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


def assert_same_state_dict(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["param_groups"] == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys()
    for index, entry in theirs["state"].items():
        assert ours["state"][index].keys() == entry.keys()
        for key, value in entry.items():
            assert_same_value(ours["state"][index][key], value, f"state[{index}][{key!r}]")


# ------------------------------------------------------------ networks, to the bit
@pytest.mark.parametrize(("options", "stops_early"), OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_network_steps_match_torch_bit_for_bit(
    dtype: torch.dtype, line_search_fn: str | None, options: dict[str, Any], stops_early: bool
) -> None:
    twins = NetTwins(dtype, line_search_fn=line_search_fn, **options)
    before = [p.data.clone() for p in twins.model.parameters()]
    steps = 4
    for _ in range(steps):
        loss, ref_loss = twins.step()
        assert torch.equal(loss, ref_loss.detach())
        twins.assert_same()

    n_iter = twins.ref_opt.state_dict()["state"][0]["n_iter"]
    max_iter = twins.ref_opt.param_groups[0]["max_iter"]
    if stops_early:  # the case runs the exit it is there for
        assert n_iter < steps * max_iter
    params = twins.model.parameters()
    moved = any(not torch.equal(p.data, b) for p, b in zip(params, before, strict=True))
    assert moved == (options.get("tolerance_grad") != 1e3)


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_history_keeps_the_last_history_size_pairs(line_search_fn: str | None) -> None:
    twins = NetTwins(torch.float64, line_search_fn=line_search_fn, history_size=3, max_iter=6)
    twins.step()
    twins.step()
    state = twins.opt.state[next(twins.model.parameters())]
    assert len(state["old_dirs"]) == len(state["old_stps"]) == len(state["ro"]) == 3
    assert len(state["al"]) == 3
    twins.assert_same()


def test_steps_in_and_out_of_inference_mode_continue_alike() -> None:
    """No state tensor is written in place, so a step outside torch.inference_mode can
    follow one inside it (tensors made there cannot be updated in place outside)."""
    twins = NetTwins(torch.float32, line_search_fn="strong_wolfe", max_iter=5)
    for inference_mode in [True, False, True, False]:
        twins.step(inference_mode)
        twins.assert_same()


def test_tensor_lr_matches_torch() -> None:
    twins = NetTwins(torch.float64, lr=torch.tensor([0.5], dtype=torch.float64), max_iter=5)
    for _ in range(3):
        twins.step()
        twins.assert_same()


# --------------------------------------------------------------- raw parameters
def rosenbrock(x: Tensor) -> Tensor:
    """f(x) = sum_i 100 (x_(i+1) - x_i^2)^2 + (1 - x_i)^2, least at x = (1, ..., 1)."""
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def rosenbrock_grad(x: Tensor) -> Tensor:
    inner = x[1:] - x[:-1] ** 2
    g = torch.zeros_like(x)
    g[:-1] = -400 * x[:-1] * inner - 2 * (1 - x[:-1])  # df/dx_i from both terms of i
    g[1:] += 200 * inner  # df/dx_(i+1) from the first term of i
    return g


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_rosenbrock_on_parameters_matches_torch_autograd(line_search_fn: str | None) -> None:
    """Our closure computes the gradient by formula, torch's by autograd: equal to
    rounding (the formula rounds other than autograd's chain of ops)."""
    x0 = torch.tensor([-1.2, 1.0, -0.5, 0.8, 1.3, 0.1], dtype=torch.float64)
    p, t = Parameter(x0.clone()), x0.clone().requires_grad_()
    lr = 1 if line_search_fn else 0.01
    opt = LBFGS([p], lr=lr, history_size=5, line_search_fn=line_search_fn)
    ref_opt = torch.optim.LBFGS([t], lr=lr, history_size=5, line_search_fn=line_search_fn)

    def closure() -> Tensor:
        p.grad = rosenbrock_grad(p.data)
        return rosenbrock(p.data)

    def ref_closure() -> Tensor:
        ref_opt.zero_grad()
        loss = rosenbrock(t)
        loss.backward()
        return loss

    for _ in range(6):
        loss, ref_loss = opt.step(closure), ref_opt.step(ref_closure)
        torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(p.data, t.detach(), rtol=1e-9, atol=1e-12)
    if line_search_fn:  # converged to the minimum at (1, ..., 1)
        torch.testing.assert_close(p.data, torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-4)


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_quadratic_on_two_parameters_bit_for_bit(
    dtype: torch.dtype, line_search_fn: str | None
) -> None:
    """f(W, b) = 1/2 z.Az - c.z over z = (W flattened, b): the same gradient formula on
    both sides, so the optimizers alone are compared, to the bit."""
    gen = torch.Generator().manual_seed(3)
    m = torch.randn(10, 10, generator=gen, dtype=dtype)
    a = m @ m.T / 10 + torch.eye(10, dtype=dtype)  # positive definite
    c = torch.randn(10, generator=gen, dtype=dtype)
    w0, b0 = (
        torch.randn(2, 4, generator=gen, dtype=dtype),
        torch.randn(2, generator=gen, dtype=dtype),
    )
    ours = [Parameter(w0.clone()), Parameter(b0.clone())]
    ref = [w0.clone().requires_grad_(), b0.clone().requires_grad_()]
    opt = LBFGS(ours, max_iter=7, history_size=4, line_search_fn=line_search_fn)
    ref_opt = torch.optim.LBFGS(ref, max_iter=7, history_size=4, line_search_fn=line_search_fn)

    def evaluate(w: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = torch.cat([w.reshape(-1), b])
        az = a @ z
        grad = az - c  # df/dz = A z - c
        return z.dot(az) / 2 - c.dot(z), grad[:8].view(2, 4), grad[8:]

    step_both_by_formula(opt, ref_opt, ours, ref, evaluate)


def step_both_by_formula(
    opt: LBFGS,
    ref_opt: torch.optim.LBFGS,
    ours: list[Parameter],
    ref: list[torch.nn.Parameter],
    evaluate: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]],
) -> None:
    """Three steps of each, two parameters' gradients by the same formula on both sides:
    the same losses, parameters and state, to the bit."""

    def closure() -> Tensor:
        loss, ours[0].grad, ours[1].grad = evaluate(ours[0].data, ours[1].data)
        return loss

    def ref_closure() -> Tensor:
        loss, ref[0].grad, ref[1].grad = evaluate(ref[0].detach(), ref[1].detach())
        return loss

    for _ in range(3):
        assert torch.equal(opt.step(closure), ref_opt.step(ref_closure))  # type: ignore[arg-type]
        for p, q in zip(ours, ref, strict=True):
            assert torch.equal(p.data, q.detach())
        assert_same_state_dict(opt.state_dict(), ref_opt.state_dict())


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_pairs_with_too_little_curvature_are_not_stored(line_search_fn: str | None) -> None:
    """On a very flat quadratic y . s stays below 1e-10: no pair is stored and H0 stays
    the number 1, as in torch."""
    x0 = torch.linspace(1e-3, 4e-3, 4, dtype=torch.float64)
    p, t = Parameter(x0.clone()), x0.clone().requires_grad_()
    options = {"tolerance_grad": 0, "tolerance_change": 0, "max_iter": 4}
    opt = LBFGS([p], line_search_fn=line_search_fn, **options)
    ref_opt = torch.optim.LBFGS([t], line_search_fn=line_search_fn, **options)

    def closure() -> Tensor:
        p.grad = 1e-6 * p.data  # f = 1e-6 / 2 |x|^2
        return 0.5e-6 * p.data.dot(p.data)

    def ref_closure() -> Tensor:
        t.grad = 1e-6 * t.detach()
        return 0.5e-6 * t.detach().dot(t.detach())

    for _ in range(2):
        assert torch.equal(opt.step(closure), ref_opt.step(ref_closure))
        assert torch.equal(p.data, t.detach())
        assert_same_state_dict(opt.state_dict(), ref_opt.state_dict())
    assert opt.state[p]["old_dirs"] == [] and opt.state[p]["H_diag"] == 1


def test_parameter_without_gradient_counts_as_zeros() -> None:
    """A parameter the closure never reaches: its slice of g is 0, so it never moves."""
    twins = NetTwins(torch.float64, line_search_fn="strong_wolfe", max_iter=5)
    unused_value = torch.randn(3, dtype=torch.float64)
    unused, ref_unused = Parameter(unused_value.clone()), unused_value.clone().requires_grad_()
    twins.opt = LBFGS([*twins.model.parameters(), unused], line_search_fn="strong_wolfe")
    twins.ref_opt = torch.optim.LBFGS(
        [*twins.ref.parameters(), ref_unused], line_search_fn="strong_wolfe"
    )
    for _ in range(3):
        twins.step()
        twins.assert_same()
    assert unused.grad is None and torch.equal(unused.data, unused_value)
    assert torch.equal(ref_unused.detach(), unused_value)


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_non_contiguous_parameters(line_search_fn: str | None) -> None:
    """A transposed parameter is updated in place through its view, as torch does; a
    non-contiguous gradient is read too (torch's ``grad.view(-1)`` would refuse it)."""
    value = torch.randn(4, 3, dtype=torch.float64).T
    target = torch.randn(3, 4, dtype=torch.float64)
    ours, ref = Parameter(value.clone()), value.clone().requires_grad_()
    assert not ours.data.is_contiguous() and not ref.is_contiguous()
    storage = ours.data.untyped_storage().data_ptr()
    opt = LBFGS([ours], max_iter=4, line_search_fn=line_search_fn)
    ref_opt = torch.optim.LBFGS([ref], max_iter=4, line_search_fn=line_search_fn)

    def closure() -> Tensor:
        diff = ours.data - target
        ours.grad = diff * 2  # strided as the parameter: not contiguous
        return (diff * diff).sum()

    def ref_closure() -> Tensor:
        diff = ref.detach() - target
        ref.grad = (diff * 2).contiguous()  # what torch's LBFGS can flatten with view(-1)
        return (diff * diff).sum()

    for _ in range(2):
        opt.step(closure)
        ref_opt.step(ref_closure)
        assert torch.equal(ours.data, ref.detach())
    assert ours.data.untyped_storage().data_ptr() == storage  # updated in place


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_parameters_are_pairs_of_real_ones_as_in_torch(
    dtype: torch.dtype, line_search_fn: str | None
) -> None:
    """torch's LBFGS flattens a complex parameter and its gradient into their real and
    imaginary parts (``view_as_real``); beside a real parameter, to the same bits."""
    gen = torch.Generator().manual_seed(4)
    z0, c = torch.randn(2, 3, 2, generator=gen, dtype=dtype)
    r0 = torch.randn(4, generator=gen, dtype=dtype.to_real())
    ours = [Parameter(z0.clone()), Parameter(r0.clone())]
    ref = [z0.clone().requires_grad_(), r0.clone().requires_grad_()]
    opt = LBFGS(ours, max_iter=6, history_size=3, line_search_fn=line_search_fn)
    ref_opt = torch.optim.LBFGS(ref, max_iter=6, history_size=3, line_search_fn=line_search_fn)

    def evaluate(z: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """f = |z - c|^2 + sum r^4 + r^2, and its gradient as torch writes a complex
        one: df/d(Re z) + i df/d(Im z) = 2 (z - c)."""
        dz = z - c
        loss = (dz.real**2 + dz.imag**2).sum() + (r**4 + r**2).sum()
        return loss, 2 * dz, 4 * r**3 + 2 * r

    step_both_by_formula(opt, ref_opt, ours, ref, evaluate)


# ------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dict_moves_both_ways_and_continues(
    dtype: torch.dtype, line_search_fn: str | None
) -> None:
    """After two steps each optimizer is replaced by a fresh one loaded from the other
    framework's state_dict (torch's through a file); both go on to the same bits."""
    options = {"line_search_fn": line_search_fn, "max_iter": 5, "history_size": 3}
    twins = NetTwins(dtype, **options)
    for _ in range(2):
        twins.step()
    ours_saved, ref_saved = twins.opt.state_dict(), twins.ref_opt.state_dict()
    buffer = io.BytesIO()
    torch.save(ref_saved, buffer)
    buffer.seek(0)

    twins.opt = LBFGS(list(twins.model.parameters()), **options)
    twins.opt.load_state_dict(torch.load(buffer))
    twins.ref_opt = torch.optim.LBFGS(twins.ref.parameters(), **options)
    twins.ref_opt.load_state_dict(copy.deepcopy(ours_saved))  # torch shares what it loads
    twins.assert_same()
    for _ in range(3):
        loss, ref_loss = twins.step()
        assert torch.equal(loss, ref_loss.detach())
        twins.assert_same()


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_a_state_dict_made_under_inference_mode_steps_on_in_torch(
    line_search_fn: str | None,
) -> None:
    """torch's load_state_dict keeps the tensors it is given and its step overwrites
    prev_flat_grad in place, which torch refuses for a tensor made under
    torch.inference_mode: state_dict gives that one as a normal tensor."""
    options = {"line_search_fn": line_search_fn, "max_iter": 5, "history_size": 3}
    twins = NetTwins(torch.float32, **options)
    twins.step(inference_mode=True)
    twins.ref_opt = torch.optim.LBFGS(twins.ref.parameters(), **options)
    twins.ref_opt.load_state_dict(twins.opt.state_dict())  # torch keeps what it is given
    ours = twins.opt.state[next(twins.model.parameters())]["prev_flat_grad"]
    before = ours.clone()
    for _ in range(2):
        twins.step(inference_mode=True)
        twins.assert_same()
    assert torch.equal(ours, before)  # torch's copy_ went into a copy, not into ours


def test_loaded_state_is_a_copy_cast_to_the_parameters() -> None:
    twins = NetTwins(torch.float64, max_iter=4)
    twins.step()
    saved = twins.ref_opt.state_dict()
    params32 = [Parameter(p.data.float()) for p in twins.model.parameters()]
    opt = LBFGS(params32, max_iter=4)
    opt.load_state_dict(saved)
    state = opt.state[params32[0]]
    assert state["d"].dtype == torch.float32 and state["old_dirs"][0].dtype == torch.float32
    assert state["n_iter"] == saved["state"][0]["n_iter"]
    state["old_dirs"].clear()
    assert saved["state"][0]["old_dirs"]  # the loaded lists are new lists


# ----------------------------------------------------------------------- errors
def _params() -> tuple[list[Parameter], list[Tensor]]:
    return [Parameter(torch.ones(2)), Parameter(torch.ones(3))], [
        torch.ones(2, requires_grad=True),
        torch.ones(3, requires_grad=True),
    ]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"lr": -1.0}, ValueError, r"LBFGS: expected lr >= 0, got -1.0"),
        ({"lr": float("nan")}, ValueError, r"LBFGS: expected lr >= 0, got nan"),
        ({"lr": torch.tensor([0.1, 0.2])}, ValueError, r"LBFGS: expected lr to be a 1-element"),
    ],
)
def test_bad_options_raise_torchs_errors(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    ours, ref = _params()
    with pytest.raises(error, match=match):
        LBFGS(ours, **options)
    with pytest.raises(error):
        torch.optim.LBFGS(ref, **options)


def test_two_param_groups_raise_valueerror_as_torch() -> None:
    ours, ref = _params()
    with pytest.raises(ValueError, match=r"LBFGS: expected a single parameter group"):
        LBFGS([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.1}])
    with pytest.raises(ValueError):
        torch.optim.LBFGS([{"params": ref[:1]}, {"params": ref[1:], "lr": 0.1}])
    opt = LBFGS(ours[:1])
    with pytest.raises(ValueError, match=r"LBFGS: expected a single parameter group"):
        opt.add_param_group({"params": ours[1:]})
    assert len(opt.param_groups) == 1


def test_step_without_closure_raises_typeerror_as_torch() -> None:
    ours, ref = _params()
    with pytest.raises(TypeError, match=r"LBFGS.step: expected a closure"):
        LBFGS(ours).step()
    with pytest.raises(TypeError):
        torch.optim.LBFGS(ref).step()  # type: ignore[call-arg]


def test_unknown_line_search_raises_runtimeerror_at_step_as_torch() -> None:
    ours, ref = _params()
    opt = LBFGS(ours, line_search_fn="armijo")  # accepted here, as torch accepts it
    ref_opt = torch.optim.LBFGS(ref, line_search_fn="armijo")

    def closure() -> float:
        for p in ours:
            p.grad = p.data.clone()
        return 1.0

    def ref_closure() -> float:
        for t in ref:
            t.grad = t.detach().clone()
        return 1.0

    with pytest.raises(
        RuntimeError, match=r"expected line_search_fn None or 'strong_wolfe', got 'armijo'"
    ):
        opt.step(closure)
    with pytest.raises(RuntimeError):
        ref_opt.step(ref_closure)


# ---------------------------------------------------------- the line search alone
FLOATS = st.floats(-4, 4, allow_nan=False, width=32)


@given(
    x1=FLOATS, f1=FLOATS, g1=FLOATS, x2=FLOATS, f2=FLOATS, g2=FLOATS,
    bounded=st.booleans(), float64=st.booleans(),
)  # fmt: skip
def test_cubic_interpolate_matches_torch(
    x1: float, f1: float, g1: float, x2: float, f2: float, g2: float, bounded: bool, float64: bool
) -> None:
    if x1 == x2:
        return  # 0/0 in both: no interval to interpolate in
    dtype = torch.float64 if float64 else torch.float32
    slope1, slope2 = torch.tensor(g1, dtype=dtype), torch.tensor(g2, dtype=dtype)
    bounds = (min(x1, x2) - 1, max(x1, x2) + 1) if bounded else None
    ours = cubic_interpolate(x1, f1, slope1, x2, f2, slope2, bounds)
    theirs = _cubic_interpolate(x1, f1, slope1, x2, f2, slope2, bounds)
    assert same(ours, theirs)


def same(ours: Any, theirs: Any) -> bool:
    """The same type and the same bits: a tensor for a tensor, a number for a number."""
    if type(ours) is not type(theirs):
        return False
    if isinstance(theirs, Tensor):
        both_nan = bool(ours.isnan().all() and theirs.isnan().all())
        return ours.dtype == theirs.dtype and (torch.equal(ours, theirs) or both_nan)
    return bool(ours == theirs) or (math.isnan(ours) and math.isnan(theirs))


def profile_line(
    coefficients: Tensor, u: Tensor, x0: Tensor, d: Tensor
) -> Callable[[Any], tuple[float, Tensor]]:
    """phi(t) = f(x0 + t d) for f(x) = c0 s^4 + c1 s^3 + c2 s^2 + s, s = x . u: a wiggly
    quartic along u, bounded below, with a local minimum or two to search for."""

    def phi(t: Any) -> tuple[float, Tensor]:
        s = (x0 + t * d).dot(u)
        c0, c1, c2 = coefficients
        f = c0 * s**4 + c1 * s**3 + c2 * s**2 + s
        slope = 4 * c0 * s**3 + 3 * c1 * s**2 + 2 * c2 * s + 1  # df/ds
        return float(f), slope * u  # grad f = df/ds * u

    return phi


@example(seed=2112, t=1.0, max_ls=25, float64=False)  # zoom: t moved off the upper end
@example(seed=9925, t=1e-3, max_ls=25, float64=False)  # bracket: phi(t) above the last trial
@given(
    seed=st.integers(0, 2**31 - 1),
    t=st.sampled_from([1e-3, 0.1, 1.0, 3.0, 30.0]),
    max_ls=st.integers(0, 25),
    float64=st.booleans(),
)
def test_strong_wolfe_matches_torch(seed: int, t: float, max_ls: int, float64: bool) -> None:
    dtype = torch.float64 if float64 else torch.float32
    gen = torch.Generator().manual_seed(seed)
    coefficients = torch.rand(3, generator=gen, dtype=dtype) * 2 - 1
    coefficients[0] = coefficients[0].abs() + 0.1  # c0 > 0: bounded below
    u = torch.randn(3, generator=gen, dtype=dtype)
    x0, d = torch.randn(2, 3, generator=gen, dtype=dtype)
    f, g = profile_line(coefficients, u, x0, d)(0)
    if g.dot(d) >= 0:
        d = -d  # a descent direction, as L-BFGS hands the search
    phi = profile_line(coefficients, u, x0, d)
    f, g = phi(0)
    gtd = g.dot(d)

    ours = strong_wolfe(phi, t, d, f, g, gtd, max_ls=max_ls)
    theirs = _strong_wolfe(lambda x, step, direction: phi(step), x0, t, d, f, g, gtd, max_ls=max_ls)
    assert all(same(a, b) for a, b in zip(ours, theirs, strict=True))

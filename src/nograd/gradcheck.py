"""Central finite differences: check a hand-written backward against the definition.

For a scalar L(theta), each partial derivative is approximated by

    dL/dtheta_i ~= (L(theta + eps e_i) - L(theta - eps e_i)) / (2 eps),

which is accurate to O(eps^2), and compared with what ``backward`` computed. An
ordinary module y = f(x) is turned into a scalar with a fixed random upstream
gradient g: L = sum(f(x) * g), so dL/dy = g and ``backward(g)`` must return dL/dx.
A reduced loss is already a scalar: ``loss_fn.backward()`` must return dL/dpred
(with ``reduction="none"`` it is treated like any module, via ``backward(g)``).

Everything runs in float64 on a deep copy of the module, so the user's module,
its dtype and its weights are untouched. One element is perturbed at a time,
which is slow but plain: this is a tool for small layers, not large models.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nograd.nn.module import Module

if TYPE_CHECKING:
    from nograd.nn.losses import Loss


@dataclass
class TensorCheck:
    """The comparison for one tensor: the first input, or one parameter.

    Attributes:
        name: ``"input"`` or the parameter's dotted name, e.g. ``"0.weight"``.
        max_abs_error: max |analytic - numeric| over the tensor's elements.
        max_rel_error: max |analytic - numeric| / |numeric| (0/0 counts as 0).
        passed: whether every element satisfies the tolerance.
        note: why the check could not compare values (no gradient, wrong shape).
    """

    name: str
    max_abs_error: float
    max_rel_error: float
    passed: bool
    note: str = ""


@dataclass
class GradcheckResult:
    """What ``gradcheck`` found; true in a boolean context when every check passed."""

    ok: bool
    checks: list[TensorCheck] = field(default_factory=list)
    atol: float = 1e-5
    rtol: float = 1e-3

    @property
    def failures(self) -> list[TensorCheck]:
        return [check for check in self.checks if not check.passed]

    def __bool__(self) -> bool:
        return self.ok

    def assert_ok(self) -> GradcheckResult:
        """Raise AssertionError naming each failing tensor and its error size."""
        if self.ok:
            return self
        lines = [
            f"{check.name}: max abs error {check.max_abs_error:.3e}, "
            f"max rel error {check.max_rel_error:.3e}" + (f" ({check.note})" if check.note else "")
            for check in self.failures
        ]
        raise AssertionError(
            f"gradcheck failed (atol={self.atol:g}, rtol={self.rtol:g}) for " + "; ".join(lines)
        )

    def __str__(self) -> str:
        header = ("tensor", "max abs error", "max rel error", "result")
        rows = [
            (
                check.name,
                f"{check.max_abs_error:.3e}",
                f"{check.max_rel_error:.3e}",
                "ok" if check.passed else f"FAILED {check.note}".rstrip(),
            )
            for check in self.checks
        ]
        width = max(len(row[0]) for row in [header, *rows])
        lines = [f"{a:<{width}}  {b:>13}  {c:>13}  {d}" for a, b, c, d in [header, *rows]]
        verdict = "passed" if self.ok else f"FAILED ({len(self.failures)} of {len(self.checks)})"
        return "\n".join([f"gradcheck {verdict}, atol={self.atol:g}, rtol={self.rtol:g}", *lines])


class _RandomState:
    """The global RNG states and every submodule's ``generator``, frozen at creation.

    Restoring them before each forward makes a stochastic module (Dropout) draw the
    same mask every time, so L is a deterministic function of the perturbed value.
    The global states are the CPU's and, once CUDA is in use, each GPU's: a module
    on a GPU draws from its device's generator.
    """

    def __init__(self, module: Module) -> None:
        self.global_state = torch.get_rng_state()
        self.cuda_states: list[Tensor] | None = None
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            self.cuda_states = torch.cuda.get_rng_state_all()
        self.generators = [
            (generator, generator.get_state())
            for sub in module.modules()
            if isinstance(generator := getattr(sub, "generator", None), torch.Generator)
        ]

    def restore(self) -> None:
        torch.set_rng_state(self.global_state)
        if self.cuda_states is not None:
            torch.cuda.set_rng_state_all(self.cuda_states)
        for generator, state in self.generators:
            generator.set_state(state)


def _as_loss(module: Module) -> Loss | None:
    """``module`` typed as a Loss when it is one: its ``backward()`` needs no argument."""
    from nograd.nn.losses import Loss  # lazily: only a check of a loss needs losses

    return module if isinstance(module, Loss) else None


def gradcheck(
    module: Module,
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> GradcheckResult:
    """Compare ``module.backward`` with central differences, in float64.

    An element passes when |analytic - numeric| <= atol + rtol * |numeric|.

    Args:
        module: a Module, or a Loss called as ``loss_fn(pred, target)``.
        *inputs: the forward's arguments; the first (``pred`` for a loss) is checked
            along with every trainable parameter (a frozen one gets no gradient).
            Floating inputs are cast to float64, others (class indices, say) are
            passed unchanged.
        eps: the step of the central difference.
        atol: absolute tolerance.
        rtol: relative tolerance.
        generator: draws the upstream gradient g of an ordinary module (default: a
            generator seeded with 0, so results are repeatable).

    Returns:
        A GradcheckResult with one TensorCheck per checked tensor.

    Raises:
        ValueError: no inputs, or nothing to check (the first input is not a
            floating-point tensor and the module has no trainable parameters).
    """
    if not inputs:
        raise ValueError(f"gradcheck: {module._describe()} needs at least one input")
    model = copy.deepcopy(module).to(torch.float64)
    for sub in model.modules():
        sub.needs_input_grad = True  # dL/dx is checked too, so nothing may skip it
    args = [_as_float64(x) for x in inputs]
    x = args[0]
    checks_input = isinstance(x, Tensor) and x.is_floating_point()
    # a frozen parameter gets no gradient by design: as torch checks only the tensors
    # that require grad, it is left out
    trained = [(name, p) for name, p in model.named_parameters() if p.trainable]
    if not checks_input and not trained:
        # a pass that checked nothing would vouch for any backward (torch refuses too)
        raise ValueError(
            f"gradcheck: nothing to check in {module._describe()}: its first input is not "
            f"a floating-point tensor and it has no trainable parameters"
        )
    rng = _RandomState(model)
    loss_fn = _as_loss(model)

    def run_forward() -> Tensor:
        rng.restore()
        # fresh copies each time: an in-place layer (ReLU(inplace=True)) overwrites its input
        out: Tensor = model(*[a.clone() if isinstance(a, Tensor) else a for a in args])
        return out

    # The analytic gradients, all from one forward and one backward.
    model.zero_grad()
    y = run_forward()
    if loss_fn is not None and y.dim() == 0:
        upstream = torch.ones((), dtype=torch.float64)
        grad_x = loss_fn.backward()  # a reduced loss: dL/dL = 1 is implied
    else:
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        upstream = torch.randn(y.shape, generator=generator, dtype=torch.float64).to(y.device)
        # a copy: a backward may write into its grad_output (grad_output *= mask), and
        # L must go on using g, or it would check that backward against another L
        grad_x = model.backward(upstream.clone())

    # Copies, taken now: the forwards below must not change them, even in a module that
    # reuses one buffer for its outputs and gradients.
    targets: list[tuple[str, Tensor, Tensor | None]] = []
    if checks_input:
        targets.append(("input", x, _copy(grad_x)))
    targets += [(name, p.data, _copy(p.grad)) for name, p in trained]

    def objective() -> float:
        return float((run_forward() * upstream).sum())  # L = sum(f(x) * g)

    checks = [
        _check(name, value, grad, objective, eps, atol, rtol) for name, value, grad in targets
    ]
    rng.restore()  # leave the global RNG where the caller had it
    return GradcheckResult(all(check.passed for check in checks), checks, atol, rtol)


def _copy(gradient: Any) -> Tensor | None:
    """A copy of an analytic gradient; None for anything that is not a tensor."""
    return gradient.clone() if isinstance(gradient, Tensor) else None


def _as_float64(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.detach().to(torch.float64).clone()  # a copy we may perturb
    return value


def _check(
    name: str,
    value: Tensor,
    analytic: Tensor | None,
    objective: Callable[[], float],
    eps: float,
    atol: float,
    rtol: float,
) -> TensorCheck:
    inf = float("inf")
    if analytic is None:
        return TensorCheck(name, inf, inf, False, "no gradient")
    if analytic.shape != value.shape:
        note = f"gradient shape {tuple(analytic.shape)}, expected {tuple(value.shape)}"
        return TensorCheck(name, inf, inf, False, note)
    numeric = _numeric_gradient(value, objective, eps)
    error = (analytic.to(torch.float64) - numeric).abs()
    if error.numel() == 0:
        return TensorCheck(name, 0.0, 0.0, True)
    # 0/0 is a perfect match; x/0 with x > 0 is an infinite relative error
    relative = torch.where(error == 0, torch.zeros_like(error), error / numeric.abs())
    passed = bool((error <= atol + rtol * numeric.abs()).all())  # NaN fails
    return TensorCheck(name, float(error.max()), float(relative.max()), passed)


def _numeric_gradient(value: Tensor, objective: Callable[[], float], eps: float) -> Tensor:
    """dL/dvalue by central differences, perturbing ``value`` in place one element at a time."""
    numeric = torch.zeros_like(value)
    for index in itertools.product(*(range(size) for size in value.shape)):
        original = value[index].item()
        value[index] = original + eps
        loss_plus = objective()
        value[index] = original - eps
        loss_minus = objective()
        value[index] = original
        numeric[index] = (loss_plus - loss_minus) / (2 * eps)  # (L(v+eps) - L(v-eps)) / 2eps
    return numeric

"""The oracle: run a nograd module and its torch.nn twin side by side and compare.

float64 must agree to 1e-10 relative, float32 to 1e-5 (issue 2).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import strategies as st
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from nograd.nn import CrossEntropyLoss, Loss, Module

# nograd follows the torch that requirements.txt pins, 2.13. A few of the behaviours the
# tests compare with are not in torch 2.11 (the GPU machines' torch): BatchNorm1d's
# bias=False, the norms' reprs that show bias, eps = 0 with running statistics,
# trunc_normal_'s two samplers, sparse_ drawing nothing for a meta tensor, Adagrad making
# a missing state at a step, fused Adagrad on a GPU. Those tests skip on an older torch;
# every other test runs there as here.
TORCH_2_13 = torch.__version__ >= "2.13"  # a TorchVersion compares with a string
since_torch_2_13 = pytest.mark.skipif(
    not TORCH_2_13, reason="compares with a behaviour of torch 2.13 that this torch lacks"
)


def torch_makes_state_at_first_step(optimizer_name: str) -> bool:
    """Whether torch.optim's optimizer of that name makes a missing state at a first step.

    Every one does in torch 2.13 (Adagrad makes its state when it is built too).
    torch 2.11's Adagrad made it only when it was built, so a parameter of a group added
    later, or one whose state was deleted (``del optimizer.state[p]``), raised KeyError.
    """
    return TORCH_2_13 or optimizer_name != "Adagrad"


# What the elementwise modules' tests draw: shapes of 1 to 3 dims (size-1 dims included)
# and seeds; a Pair makes a nograd module and its torch.nn twin.
SHAPES = st.lists(st.integers(1, 6), min_size=1, max_size=3)
SEEDS = st.integers(0, 2**31 - 1)
Pair = Callable[[], tuple[Module, torch.nn.Module]]


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 1e-5, "atol": 1e-6}


def assert_close(
    actual: Tensor,
    expected: Tensor,
    dtype: torch.dtype | None = None,
    tol: dict[str, float] | None = None,
) -> None:
    """Within ``tolerance(dtype)``, or within ``tol`` where a test names its own."""
    torch.testing.assert_close(actual, expected, **(tol or tolerance(dtype or expected.dtype)))


def compare_module(
    ours: Module,
    ref: torch.nn.Module,
    x: Tensor,
    grad_output: Tensor | None = None,
    tol: dict[str, float] | None = None,
) -> None:
    """Copy our weights into ``ref``, then compare output, dL/dx and every dL/dparam.

    ``tol``: rtol and atol for every comparison, instead of those of x's dtype.
    """
    if ours.state_dict():
        ref.load_state_dict(ours.state_dict())
    x_ref = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(x_ref)
        g = torch.randn_like(y_ref) if grad_output is None else grad_output
        y_ref.backward(g)

    y = ours(x)
    assert_close(y, y_ref.detach(), tol=tol)
    assert_close(ours.backward(g), _grad(x_ref), tol=tol)
    ours_params = dict(ours.named_parameters())
    ref_params: dict[str, Any] = dict(ref.named_parameters())
    assert ours_params.keys() == ref_params.keys()
    for name, param in ours_params.items():
        assert param.grad is not None, f"{name} got no gradient"
        assert_close(param.grad, ref_params[name].grad, tol=tol)


def _grad(t: Tensor) -> Tensor:
    assert t.grad is not None
    return t.grad


class OpNames(TorchDispatchMode):
    """The names of the aten ops that run, views excluded: on a GPU, one launch each."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not func.is_view:
            self.names.append(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


# ------------------------------------------------- losses of class indices (CE, NLL)
def class_dim(shape: tuple[int, ...]) -> int:
    """Where the classes lie in pred's shape: dim 0 for one sample (C,), else dim 1."""
    return 0 if len(shape) == 1 else 1


def index_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """pred's shape without its class dim: the shape of class indices."""
    dim = class_dim(shape)
    return shape[:dim] + shape[dim + 1 :]


def upstream(
    reduction: str, shape: tuple[int, ...], scale: float | None, dtype: torch.dtype, seed: int
) -> Tensor | None:
    """dL/dl for a loss on pred of ``shape``: one per row under "none", else None or a
    0-dim ``scale``."""
    if reduction == "none":
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(index_shape(shape), generator=gen).to(dtype)
    return None if scale is None else torch.tensor(scale, dtype=dtype)


def torch_loss_and_grad(
    loss: torch.nn.Module, pred: Tensor, target: Tensor, g: Tensor | None
) -> tuple[Tensor, Tensor]:
    """torch's ``loss(pred, target)`` and its dL/dpred for upstream g, by autograd."""
    leaf = pred.clone().requires_grad_()
    with torch.enable_grad():
        value = loss(leaf, target)
        value.backward(g)
    assert leaf.grad is not None
    return value.detach(), leaf.grad


# ------------------------------------- losses whose target has pred's shape (MSE, BCE, Huber)
def assert_loss_close(actual: Tensor, expected: Tensor) -> None:
    """Within ``tolerance``; NaN only where torch has NaN too: "mean" over rows that are
    all ignored is 0/0."""
    torch.testing.assert_close(actual, expected, equal_nan=True, **tolerance(expected.dtype))


def compare_loss(
    ours: Loss, ref: torch.nn.Module, pred: Tensor, target: Tensor, scale: float | None
) -> None:
    """Loss value and dL/dpred of ``ours`` against ``ref`` run by torch.autograd;
    ``scale``: a 0-dim grad_output, None: 1 (ignored under "none")."""
    loss = ours(pred, target)
    if ours.reduction == "none":
        grad_output: Tensor | None = torch.randn(loss.shape, dtype=pred.dtype)
    else:
        grad_output = None if scale is None else torch.tensor(scale, dtype=pred.dtype)
    expected_loss, expected_grad = torch_loss_and_grad(ref, pred, target, grad_output)
    assert loss.shape == expected_loss.shape
    assert_loss_close(loss, expected_loss)
    assert_loss_close(ours.backward(grad_output), expected_grad)


def assert_torchs_bits(
    ours: Loss, ref: torch.nn.Module, pred: Tensor, target: Tensor, grad_output: Tensor | None
) -> None:
    """Value and dL/dpred of ``ours`` equal torch's, bit for bit."""
    expected_loss, expected_grad = torch_loss_and_grad(ref, pred, target, grad_output)
    loss = ours(pred, target)
    assert torch.equal(loss, expected_loss)
    assert torch.equal(ours.backward(grad_output), expected_grad)


def elementwise_upstream(
    reduction: str, shape: tuple[int, ...], scale: float | None, dtype: torch.dtype
) -> Tensor | None:
    """dL/dloss: one per element when unreduced, else None (1) or a 0-dim scale."""
    if reduction == "none":
        return torch.randn(shape, dtype=dtype)
    return None if scale is None else torch.tensor(scale, dtype=dtype)


# ---------------------------------------------- activations (in-place ones, bitwise checks)
def compare_activation(
    ours: Module, ref: torch.nn.Module, x: Tensor, g: Tensor | None = None
) -> None:
    """compare_module, or for an in-place module: same outputs, same dL/dx, same tensor."""
    if not getattr(ours, "inplace", False):
        compare_module(ours, ref, x, g)
        return
    g = torch.randn_like(x) if g is None else g
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(leaf * 1)  # torch refuses in-place ops on a leaf that requires grad
        y_ref.backward(g)
    x_ours = x.clone()
    y = ours(x_ours)
    assert y is x_ours, "an in-place module must return its input, overwritten"
    assert_close(y, y_ref.detach())
    assert leaf.grad is not None
    assert_close(ours.backward(g), leaf.grad)


def assert_module_bits(ours: Module, ref: torch.nn.Module, x: Tensor, g: Tensor) -> None:
    """Output and dL/dx of ``ours`` are torch's, bit for bit (``same_bits``), in x's dtype."""
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(leaf * 1)  # a non-leaf, which in-place modules may overwrite
        y_ref.backward(g)
    y = ours(x.clone())
    assert y.dtype == x.dtype and same_bits(y, y_ref.detach())
    assert leaf.grad is not None and same_bits(ours.backward(g), leaf.grad)


def same_bits(actual: Tensor, expected: Tensor) -> bool:
    """NaN where expected has NaN, and every other element identical, the sign of 0 included."""
    nan = expected.isnan()
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[expected.element_size()]
    return torch.equal(actual.isnan(), nan) and torch.equal(
        actual[~nan].view(as_int), expected[~nan].view(as_int)
    )


# ------------------------------------ CrossEntropyLoss (test_cross_entropy*, test_soft_targets)
class AsIfOnGPU(Tensor):
    """A CPU tensor that says it is not on the CPU: runs a loss's GPU code on CI."""

    @property
    def is_cpu(self) -> bool:
        return False


def cross_entropy_autograd(
    options: dict[str, Any], z: Tensor, target: Tensor, g: Tensor | None
) -> tuple[Tensor, Tensor]:
    """torch's loss and dL/dz for logits z, by torch.nn.CrossEntropyLoss and autograd."""
    return torch_loss_and_grad(torch.nn.CrossEntropyLoss(**options), z, target, g)


def assert_cross_entropy_bits(
    ours: CrossEntropyLoss, z: Tensor, target: Tensor, g: Tensor | None
) -> None:
    """Value and gradient of ``ours`` are torch's, bit for bit (NaN where torch's is)."""
    options: dict[str, Any] = {
        "weight": ours.weight,
        "ignore_index": ours.ignore_index,
        "reduction": ours.reduction,
        "label_smoothing": ours.label_smoothing,
    }
    expected, expected_grad = cross_entropy_autograd(options, z, target, g)
    loss = ours(z, target)
    assert loss.shape == expected.shape
    torch.testing.assert_close(loss, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(ours.backward(g), expected_grad)


# ------------------------------------------------ every activation's contract
EXTREME = [[-1000.0, -1.0, 0.0, 1.0, 1000.0], [1000.0, 1000.0, -1000.0, 0.5, -1000.0]]


def check_kinks(ours: Module, ref: torch.nn.Module, dtype: torch.dtype) -> None:
    """Values and slopes at the kinks (-0, 0, 0 twice in a row) are torch's."""
    x = torch.tensor([-1.0, -0.0, 0.0, 0.0, 2.0], dtype=dtype)
    g = torch.arange(1.0, 6.0, dtype=dtype)
    compare_activation(ours, ref, x, g)


def check_finite_at_1000(ours: Module, ref: torch.nn.Module, dtype: torch.dtype) -> None:
    """Inputs of +-1000 give finite outputs and gradients, and torch's."""
    x = torch.tensor(EXTREME, dtype=dtype)
    g = torch.randn(x.shape, dtype=dtype)
    y = ours(x)
    grad_input = ours.backward(g)
    assert torch.isfinite(y).all() and torch.isfinite(grad_input).all()
    compare_activation(ours, ref, x, g)


def check_backward_before_forward(ours: Module) -> None:
    """A backward before any forward raises, naming the module."""
    prefix = re.escape(f"{type(ours).__name__}({ours.extra_repr()})")
    with pytest.raises(RuntimeError, match=prefix + r": backward\(\) called before forward\(\)"):
        ours.backward(torch.ones(2, 3))


def check_grad_output_shape(ours: Module) -> None:
    """A grad_output of another shape than the output raises, naming the module."""
    ours(torch.randn(2, 3))
    prefix = re.escape(type(ours).__name__)
    with pytest.raises(ValueError, match=prefix + r".*grad_output of shape \(2, 3\), got \(3, 2\)"):
        ours.backward(torch.randn(3, 2))


# --------------------------------------------- a softmax's dim (Softmax, LogSoftmax)
def check_implicit_dim(ours: Module, ref: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """dim=None: dim 0 for 0, 1 or 3 dimensions, else dim 1, with torch's UserWarning,
    pointing at the line that called the module."""
    x = torch.randn(shape, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare_module(ours, ref, x)
    mine, torchs = caught[1], caught[0]  # compare_module runs torch's twin first
    assert len(caught) == 2
    assert (mine.category, str(mine.message)) == (torchs.category, str(torchs.message))
    assert mine.category is UserWarning and "Implicit dimension choice" in str(mine.message)
    # at the line that called the module (torch 2.13 stops one frame short, in its __call__)
    assert mine.filename == __file__


def check_no_warning_with_a_dim(ours: Module) -> None:
    """A module given its dim warns neither in forward nor in backward."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours(torch.randn(2, 3))
        ours.backward(torch.randn(2, 3))


def check_missing_dim_refused(
    ours: Module, ref: torch.nn.Module, shape: tuple[int, ...], dims: str
) -> None:
    """A dim the input lacks: torch's IndexError is our ValueError, naming the module."""
    dim = ref.dim  # type: ignore[attr-defined]
    with pytest.raises(IndexError, match="Dimension out of range"):
        ref(torch.randn(shape))
    message = (
        f"{type(ours).__name__}(dim={dim}): expected dim in {dims} for input of shape "
        f"{shape}, got {dim}"
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        ours(torch.randn(shape))


class SquaresDataset:
    """A dataset with no tensors behind it: item i is ([i, i^2] as float, label i mod 3)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.tensor([index, index**2], dtype=torch.float32), index % 3

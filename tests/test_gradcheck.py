"""gradcheck: passes correct backwards, catches wrong ones, and leaves the user's module alone."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

import nograd.nn
from nograd.gradcheck import GradcheckResult, TensorCheck, gradcheck
from nograd.nn import (
    NO_INPUT_GRAD,
    Linear,
    Module,
    Parameter,
    Sequential,
    activations,
    cross_entropy,
    losses,
)
from nograd.nn.dropout import Dropout

F64 = torch.float64


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------- wrong layers
class DoubledWeightGrad(Linear):
    def backward(self, grad_output: Tensor) -> Tensor:
        grad_input = super().backward(grad_output)
        assert self.weight.grad is not None
        self.weight.grad.mul_(2)  # wrong: dL/dW = 2 g^T x
        return grad_input


class ForgetsBiasGrad(Linear):
    def backward(self, grad_output: Tensor) -> Tensor:
        grad_input = super().backward(grad_output)
        assert self.bias is not None
        self.bias.grad = None  # wrong: dL/db never accumulated
        return grad_input


class WrongInputGrad(Linear):
    def backward(self, grad_output: Tensor) -> Tensor:
        return -super().backward(grad_output)  # wrong sign of dL/dx


class SlightlyWrongWeightGrad(Linear):
    def backward(self, grad_output: Tensor) -> Tensor:
        grad_input = super().backward(grad_output)
        assert self.weight.grad is not None
        self.weight.grad.mul_(1.01)  # 1% too large
        return grad_input


class WrongShapeInputGrad(Linear):
    def backward(self, grad_output: Tensor) -> Tensor:
        return super().backward(grad_output).sum(0)


class HalvedMSE(losses.MSELoss):
    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        return super().backward(grad_output) / 2  # wrong: dL/dpred = (pred - target) / n


class DoublesInPlace(Module):
    """y = 2 x, whose backward writes dL/dx = 2 g into grad_output: right, if in place."""

    def forward(self, x: Tensor) -> Tensor:
        return 2 * x

    def backward(self, grad_output: Tensor) -> Tensor:
        grad_output *= 2  # dL/dx = 2 g
        return grad_output


class ReusesItsBuffer(Module):
    """y = 3 x, whose forward and backward write into one buffer, kept between calls (as
    a layer that avoids allocations might): each forward overwrites the last dL/dx."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = torch.empty(0)

    def forward(self, x: Tensor) -> Tensor:
        if self.buffer.shape != x.shape:
            self.buffer = torch.empty_like(x)
        return torch.mul(x, 3, out=self.buffer)

    def backward(self, grad_output: Tensor) -> Tensor:
        return torch.mul(grad_output, 3, out=self.buffer)  # dL/dx = 3 g


class ScalesWithStaleGrad(Module):
    """y = w x elementwise, whose backward takes dL/dw from the g it overwrote."""

    def __init__(self) -> None:
        super().__init__()
        self.w = Parameter(torch.tensor([0.5, -2.0, 3.0]))

    def forward(self, x: Tensor) -> Tensor:
        self.saved["x"] = x
        return x * self.w.data

    def backward(self, grad_output: Tensor) -> Tensor:
        grad_output.mul_(self.w.data)  # dL/dx = g w, in place
        self.w.grad = (grad_output * self.saved["x"]).sum(0)  # wrong: dL/dw = sum g x
        return grad_output


# -------------------------------------------------------- stochastic layers
class GlobalNoise(Module):
    """y = 2 m x with a mask m drawn from x's device's global RNG at every forward."""

    def forward(self, x: Tensor) -> Tensor:
        m = (torch.rand(x.shape, dtype=x.dtype, device=x.device) > 0.5).to(x.dtype)
        self.saved["m"] = m
        return 2 * m * x

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * self._saved("m") * grad_output  # dL/dx = 2 m g


class OwnNoise(Module):
    """y = 2 m x with m drawn from the module's own ``generator`` (as Dropout does)."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(3)

    def forward(self, x: Tensor) -> Tensor:
        u = torch.rand(x.shape, generator=self.generator, dtype=x.dtype)
        m = (u > 0.5).to(x.dtype)
        self.saved["m"] = m
        return 2 * m * x

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * self._saved("m") * grad_output  # dL/dx = 2 m g


class RecordsDtype(Linear):
    seen: ClassVar[list[torch.dtype]] = []  # a class attribute, shared with the deep copy

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.dtype)
        return super().forward(x)


# ----------------------------------------------------------- correct layers
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (1, 3), (2, 3, 3), (3,)], ids=str)
def test_linear_passes(bias: bool, shape: tuple[int, ...]) -> None:
    result = gradcheck(Linear(3, 2, bias=bias), randn(*shape))
    assert result.ok and bool(result)
    names = [check.name for check in result.checks]
    assert names == ["input", "weight", "bias"] if bias else ["input", "weight"]
    assert all(check.max_abs_error < 1e-7 for check in result.checks)


def test_sequential_of_linears_passes_and_checks_every_parameter() -> None:
    model = Sequential(Linear(4, 3), Sequential(Linear(3, 3), Linear(3, 2, bias=False)))
    result = gradcheck(model, randn(6, 4)).assert_ok()
    assert [c.name for c in result.checks] == [
        "input",
        "0.weight",
        "0.bias",
        "1.0.weight",
        "1.0.bias",
        "1.1.weight",
    ]


def test_user_module_sequential_with_input_grad_off_is_still_checked() -> None:
    model = Sequential(Linear(3, 3), Linear(3, 1))
    model.needs_input_grad = False
    result = gradcheck(model, randn(4, 3))
    assert result.ok and result.checks[0].name == "input"
    assert not model.needs_input_grad  # the user's setting is untouched


def test_a_passed_generator_draws_the_upstream_gradient() -> None:
    layer, x = Linear(3, 2), randn(4, 3)

    def errors(seed: int) -> list[float]:
        result = gradcheck(layer, x, generator=torch.Generator().manual_seed(seed))
        assert result.ok
        return [c.max_abs_error for c in result.checks]

    assert errors(5) == errors(5)
    assert errors(5) != errors(6)
    assert gradcheck(layer, x).checks == gradcheck(layer, x).checks  # seeded by default


# ------------------------------------------------------ activations, dropout
ACTIVATION_CASES: list[Module] = [
    activations.ReLU(),
    activations.ReLU(inplace=True),
    activations.Tanh(),
    activations.Sigmoid(),
    activations.LeakyReLU(),
    activations.LeakyReLU(0.2, inplace=True),
    activations.LeakyReLU(3.0),
    activations.ELU(),
    activations.ELU(alpha=0.5, inplace=True),
    activations.GELU(),
    activations.GELU(approximate="tanh"),
    activations.Softmax(dim=1),
    activations.Softmax(dim=0),
    activations.Identity(),
]


@pytest.mark.parametrize("activation", ACTIVATION_CASES, ids=repr)
def test_every_activation_passes(activation: Module) -> None:
    result = gradcheck(activation, randn(4, 5) * 2)
    result.assert_ok()
    assert [c.name for c in result.checks] == ["input"]


def test_activation_cases_cover_every_activation_class() -> None:
    defined = {
        cls
        for cls in vars(activations).values()
        if inspect.isclass(cls)
        and issubclass(cls, Module)
        and cls.__module__ == activations.__name__
    }
    assert defined == {type(case) for case in ACTIVATION_CASES}


@pytest.mark.parametrize(
    "dropout",
    [
        Dropout(0.5),
        Dropout(0.3, inplace=True),
        Dropout(0.5, generator=torch.Generator().manual_seed(1)),
        Dropout(0.5).eval(),
    ],
    ids=["global-rng", "inplace", "own-generator", "eval"],
)
def test_dropout_passes(dropout: Module) -> None:
    result = gradcheck(dropout, randn(6, 5))
    result.assert_ok()


def test_a_network_with_dropout_in_training_mode_passes() -> None:
    model = Sequential(
        Linear(3, 6),
        activations.Tanh(),
        Dropout(0.5, generator=torch.Generator().manual_seed(2)),
        Linear(6, 4),
        Dropout(0.25),
        activations.GELU(),
    )
    assert model.training
    gradcheck(model, randn(5, 3)).assert_ok()


# -------------------------------------------------------------------- losses
LOSS_CASES: list[tuple[str, Any, tuple[Tensor, Tensor]]] = [
    ("mse", losses.MSELoss(), (randn(4, 3), randn(4, 3, seed=1))),
    ("mse-sum", losses.MSELoss(reduction="sum"), (randn(4, 3), randn(4, 3, seed=1))),
    ("mse-none", losses.MSELoss(reduction="none"), (randn(4, 3), randn(4, 3, seed=1))),
    ("l1", losses.L1Loss(), (randn(5), randn(5, seed=1))),
    ("bce", nograd.nn.BCEWithLogitsLoss(), (randn(6, 2), torch.rand(6, 2))),
    (
        "bce-pos-weight",
        nograd.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([0.5, 3.0])),
        (randn(6, 2), torch.rand(6, 2)),
    ),
    ("bce-probabilities", nograd.nn.BCELoss(), (torch.rand(6, 2) * 0.8 + 0.1, torch.rand(6, 2))),
    # |pred - target| on both sides of delta (beta): 3 randn against 0
    ("huber", nograd.nn.HuberLoss(delta=0.7), (3 * randn(5, 3), torch.zeros(5, 3))),
    ("smooth-l1", nograd.nn.SmoothL1Loss(beta=0.7), (3 * randn(5, 3), torch.zeros(5, 3))),
    ("ce", cross_entropy.CrossEntropyLoss(), (randn(5, 4), torch.tensor([0, 3, 1, 1, 2]))),
    ("ce-1-row", cross_entropy.CrossEntropyLoss(), (randn(1, 3), torch.tensor([2]))),
    (
        "ce-weight-smooth-ignore",
        cross_entropy.CrossEntropyLoss(
            reduction="mean",
            label_smoothing=0.1,
            weight=torch.tensor([1.0, 2.0, 0.5, 1.0]),
            ignore_index=-1,
        ),
        (randn(5, 4), torch.tensor([0, -1, 3, 2, 2])),
    ),
    (
        "ce-none",
        cross_entropy.CrossEntropyLoss(reduction="none"),
        (randn(3, 4), torch.tensor([1, 0, 3])),
    ),
    (
        "nll-weight-ignore",
        nograd.nn.NLLLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0]), ignore_index=-1),
        (torch.log_softmax(randn(5, 4), 1), torch.tensor([0, -1, 3, 2, 2])),
    ),
]


@pytest.mark.parametrize(
    ("loss_fn", "inputs"), [c[1:] for c in LOSS_CASES], ids=[c[0] for c in LOSS_CASES]
)
def test_every_loss_passes(loss_fn: losses.Loss, inputs: tuple[Tensor, Tensor]) -> None:
    result = gradcheck(loss_fn, *inputs)
    result.assert_ok()
    assert [c.name for c in result.checks] == ["input"]  # only pred is differentiated


def test_loss_cases_cover_every_loss_class() -> None:
    """Every loss that nograd.nn exports, whichever file defines it."""
    exported = {getattr(nograd.nn, name) for name in nograd.nn.__all__}
    defined = {
        cls
        for cls in exported
        if inspect.isclass(cls) and issubclass(cls, losses.Loss) and cls is not losses.Loss
    }
    assert defined == {type(case[1]) for case in LOSS_CASES}


def test_a_wrong_loss_backward_is_caught() -> None:
    result = gradcheck(HalvedMSE(), randn(4, 3), randn(4, 3, seed=1))
    assert not result.ok
    assert [c.name for c in result.failures] == ["input"]


def test_integer_targets_are_not_cast() -> None:
    target = torch.tensor([0, 2, 1])
    assert gradcheck(cross_entropy.CrossEntropyLoss(), randn(3, 3), target).ok
    assert target.dtype == torch.int64


# ------------------------------------------------------------- stochastic
@pytest.mark.parametrize("module_type", [GlobalNoise, OwnNoise])
def test_stochastic_modules_see_the_same_randomness_at_every_forward(module_type: type) -> None:
    result = gradcheck(module_type(), randn(8, 5))
    result.assert_ok()


def test_rng_states_are_left_as_they_were() -> None:
    module = OwnNoise()
    own_before = module.generator.get_state()
    global_before = torch.get_rng_state()
    gradcheck(Sequential(GlobalNoise(), module), randn(4, 3))
    assert torch.equal(module.generator.get_state(), own_before)
    assert torch.equal(torch.get_rng_state(), global_before)


# --------------------------------------------------------- wrong backwards
def test_doubled_weight_gradient_is_caught_and_named() -> None:
    result = gradcheck(DoubledWeightGrad(3, 2), randn(4, 3))
    assert not result.ok and not bool(result)
    assert [c.name for c in result.failures] == ["weight"]
    weight = result.failures[0]
    assert weight.max_rel_error == pytest.approx(1.0, rel=1e-6)  # analytic = 2 numeric
    with pytest.raises(AssertionError, match=r"weight: max abs error \d\.\d+e[+-]\d+"):
        result.assert_ok()


def test_forgotten_bias_gradient_is_caught() -> None:
    result = gradcheck(ForgetsBiasGrad(3, 2), randn(4, 3))
    assert [(c.name, c.note) for c in result.failures] == [("bias", "no gradient")]
    with pytest.raises(AssertionError, match=r"bias.*no gradient"):
        result.assert_ok()


def test_wrong_input_gradient_is_caught() -> None:
    result = gradcheck(WrongInputGrad(3, 2), randn(4, 3))
    assert [c.name for c in result.failures] == ["input"]


def test_wrong_gradient_shape_is_caught() -> None:
    result = gradcheck(WrongShapeInputGrad(3, 2), randn(4, 3))
    assert [c.name for c in result.failures] == ["input"]
    assert "gradient shape (3,), expected (4, 3)" in result.failures[0].note


def test_input_grad_skipped_by_a_layer_is_caught() -> None:
    class SkipsInputGrad(Linear):
        def backward(self, grad_output: Tensor) -> Tensor:
            super().backward(grad_output)
            return NO_INPUT_GRAD

    assert [c.name for c in gradcheck(SkipsInputGrad(2, 2), randn(3, 2)).failures] == ["input"]


def test_a_wrong_layer_inside_a_sequential_is_named_by_its_path() -> None:
    model = Sequential(Linear(3, 4), Sequential(Linear(4, 4), DoubledWeightGrad(4, 2)))
    result = gradcheck(model, randn(5, 3))
    assert [c.name for c in result.failures] == ["1.1.weight"]
    with pytest.raises(AssertionError, match=r"1\.1\.weight"):
        result.assert_ok()


def test_tolerances_decide_a_small_error() -> None:
    layer, x = SlightlyWrongWeightGrad(3, 2), randn(6, 3)
    assert not gradcheck(layer, x).ok  # 1% > rtol = 0.1%
    assert gradcheck(layer, x, rtol=0.02).ok


def test_a_backward_that_writes_into_grad_output_is_checked_against_the_same_loss() -> None:
    """L = sum(f(x) * g) keeps its g whatever backward does with the tensor it was given:
    a right backward in place passes, and a wrong one is named for what is wrong."""
    assert gradcheck(DoublesInPlace(), randn(3, 4)).ok
    result = gradcheck(ScalesWithStaleGrad(), randn(4, 3))
    assert [c.name for c in result.failures] == ["w"]


def test_gradients_are_kept_before_the_forwards_of_the_finite_differences() -> None:
    """A right backward passes even if the forwards that follow overwrite its output."""
    assert gradcheck(ReusesItsBuffer(), randn(3, 4, seed=1)).ok  # x is not g


def test_nan_gradient_fails() -> None:
    class NanGrad(Linear):
        def backward(self, grad_output: Tensor) -> Tensor:
            return super().backward(grad_output) * float("nan")

    result = gradcheck(NanGrad(2, 2), randn(3, 2))
    assert [c.name for c in result.failures] == ["input"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("module_type", [GlobalNoise, Dropout])
def test_on_cuda_a_stochastic_module_passes_and_the_generator_is_left_alone(
    module_type: type,
) -> None:
    """On a GPU the mask comes from the device's generator, which must be restored too."""
    cuda = torch.device("cuda")
    x = randn(6, 5).to(cuda)
    before = torch.cuda.get_rng_state()
    gradcheck(module_type(), x).assert_ok()
    assert torch.equal(torch.cuda.get_rng_state(), before)


# ------------------------------------------------------------------ hygiene
def test_the_users_module_and_input_are_not_mutated() -> None:
    model = Sequential(Linear(3, 4), Linear(4, 2))
    x = randn(5, 3)
    x_before = x.clone()
    state_before = {key: t.clone() for key, t in model.state_dict().items()}
    assert gradcheck(model, x).ok
    for key, tensor in model.state_dict().items():
        assert tensor.dtype == torch.float32, key
        assert torch.equal(tensor, state_before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert x.dtype == torch.float32 and torch.equal(x, x_before)


def test_a_float32_module_is_checked_in_float64() -> None:
    RecordsDtype.seen.clear()
    layer = RecordsDtype(3, 2)
    # 1e-9 is far below what float32 finite differences could reach
    result = gradcheck(layer, randn(4, 3), atol=1e-9, rtol=1e-7)
    assert result.ok
    assert len(RecordsDtype.seen) > 1 and set(RecordsDtype.seen) == {F64}
    assert layer.weight.dtype == torch.float32


def test_no_inputs_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"Linear\(in_features=3.*at least one input"):
        gradcheck(Linear(3, 2))


# -------------------------------------------------------------- the report
def test_result_table_lists_every_tensor_aligned() -> None:
    result = gradcheck(Sequential(Linear(3, 2), DoubledWeightGrad(2, 2)), randn(4, 3))
    text = str(result)
    lines = text.splitlines()
    assert lines[0].startswith("gradcheck FAILED (1 of 5)")
    assert lines[1].split() == ["tensor", "max", "abs", "error", "max", "rel", "error", "result"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == ["input", "0.weight", "0.bias", "1.weight", "1.bias"]
    assert rows["1.weight"].rstrip().endswith("FAILED")
    assert rows["0.weight"].rstrip().endswith("ok")
    result_column = {line.rindex(line.split()[-1]) for line in lines[1:]}
    assert len(result_column) == 1  # every row's verdict starts in the same column


def test_result_api() -> None:
    passed = TensorCheck("input", 1e-12, 1e-10, True)
    failed = TensorCheck("weight", 2.0, 1.0, False)
    result = GradcheckResult(False, [passed, failed])
    assert result.failures == [failed]
    assert not result
    assert GradcheckResult(True, [passed]).assert_ok().ok


def test_nothing_to_check_is_an_error_not_a_pass() -> None:
    # an integer input and no parameters: a "passed" would vouch for any backward
    class WrongSquare(Module):
        def forward(self, x: Tensor) -> Tensor:
            return x * x

        def backward(self, grad_output: Tensor) -> Tensor:
            return grad_output  # wrong: dL/dx = 2 x g

    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(WrongSquare(), torch.tensor([1, 2, 3]))
    assert not gradcheck(WrongSquare(), torch.tensor([1.0, 2.0, 3.0]))

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

from nograd.nn.dropout import Dropout
from tests.oracle import OpNames, assert_close


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def nonzero_input(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Entries of magnitude >= 0.5, so a zero in the output can only mean 'dropped'."""
    x = torch.randn(*shape, dtype=dtype)
    return x.sign() * (x.abs() + 0.5)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a float tensor, so that NaN == NaN and -0 != +0."""
    return t.view({torch.float64: torch.int64, torch.float32: torch.int32}[t.dtype])


@pytest.mark.parametrize("p", [-0.1, -1, 1.0001, 1.5, 2, math.nan])
def test_p_outside_0_1_is_rejected(p: float) -> None:
    # torch raises ValueError too ("dropout probability has to be between 0 and 1"), and
    # refuses NaN only at the first forward; here it is refused when given
    with pytest.raises(ValueError, match=rf"Dropout: expected p in \[0, 1\], got {p}"):
        Dropout(p)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("p", [1.0, 1])
def test_p_one_drops_everything_as_torch_to_the_bit(
    p: float, inplace: bool, dtype: torch.dtype
) -> None:
    # y = x * 0: -0 for negative x, NaN for +-inf and NaN; and dL/dx = dL/dy * 0
    special = [1.5, -2.0, 0.0, -0.0, math.inf, -math.inf, math.nan]
    x = torch.tensor(special + [3.0] * 5, dtype=dtype).reshape(3, 4)
    g = torch.tensor([1.0, -2.0, math.inf, -math.inf, math.nan, 0.0] * 2, dtype=dtype).view(3, 4)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = torch.nn.Dropout(p, inplace)(leaf * 1)  # a non-leaf, which in-place may overwrite
        y_ref.backward(g)
    assert leaf.grad is not None
    x_ours = x.clone()
    dropout = Dropout(p, inplace)
    y = dropout(x_ours)
    assert (y is x_ours) == inplace
    assert torch.equal(bits(y), bits(y_ref.detach()))
    assert torch.equal(bits(dropout.backward(g)), bits(leaf.grad))


def test_p_one_draws_no_random_numbers_as_torch() -> None:
    x = torch.randn(4, 5)
    torch.manual_seed(5)
    Dropout(1.0)(x)
    ours_next = torch.rand(3)
    torch.manual_seed(5)
    torch.nn.Dropout(1.0)(x)
    assert torch.equal(ours_next, torch.rand(3))
    generator = seeded(5)
    Dropout(1.0, generator=generator)(x)
    assert torch.equal(generator.get_state(), seeded(5).get_state())


def test_p_one_in_eval_mode_is_the_identity() -> None:
    dropout = Dropout(1.0).eval()
    x, g = torch.randn(3, 2), torch.randn(3, 2)
    assert dropout(x) is x
    assert dropout.backward(g) is g


def test_p_one_keeps_the_dtype_of_integer_input_as_torch() -> None:
    x = torch.arange(-3, 3)
    y = Dropout(1)(x)
    assert y.dtype == torch.nn.Dropout(1)(x).dtype == torch.int64
    assert torch.equal(y, torch.zeros(6, dtype=torch.int64))


@pytest.mark.parametrize("p", [0, 1, True, False])
def test_p_given_as_an_int_or_bool_is_kept_as_given_as_torch(p: float) -> None:
    ours, ref = Dropout(p), torch.nn.Dropout(p)
    assert type(ours.p) is type(ref.p) and ours.p == ref.p
    assert repr(ours) == repr(ref)  # "Dropout(p=1, inplace=False)", not p=1.0
    x = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(ours(x), ref(x))


def test_p_zero_is_accepted_and_is_the_identity() -> None:
    dropout = Dropout(0.0)
    x = torch.randn(4, 5)
    g = torch.randn(4, 5)
    assert torch.equal(dropout(x), x)
    assert torch.equal(dropout.backward(g), g)


def test_generator_passed_positionally_is_caught() -> None:
    with pytest.raises(TypeError, match="Dropout: expected inplace to be a bool, got Generator"):
        Dropout(0.5, torch.Generator())  # type: ignore[arg-type]


def test_eval_mode_is_the_identity_forward_and_backward() -> None:
    dropout = Dropout(0.9)
    dropout.eval()
    x = torch.randn(3, 7)
    g = torch.randn(3, 7)
    assert torch.equal(dropout(x), x)
    assert torch.equal(dropout.backward(g), g)


@pytest.mark.parametrize("p", [0.5, 0.75, 0.875])
def test_each_output_is_zero_or_exactly_x_over_1_minus_p(p: float) -> None:
    # 1 - p is a power of two here, so x / (1 - p) has no rounding to blur "exactly"
    x = nonzero_input(50, 40)
    y = Dropout(p, generator=seeded(0))(x)
    kept = y != 0
    assert torch.equal(y[kept], x[kept] / (1 - p))
    assert 0 < kept.sum() < x.numel()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@given(p=st.floats(0.05, 0.95), seed=st.integers(0, 2**31 - 1))
def test_kept_outputs_are_scaled_by_1_over_1_minus_p(
    dtype: torch.dtype, p: float, seed: int
) -> None:
    torch.manual_seed(seed)
    x = nonzero_input(6, 9, dtype=dtype)
    y = Dropout(p)(x)
    kept = y != 0
    assert_close(y[kept], x[kept] / (1 - p))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_about_p_of_the_entries_are_dropped_and_the_mean_is_kept(p: float) -> None:
    n = 200_000
    x = torch.rand(n, dtype=torch.float64) + 1.0
    y = Dropout(p, generator=seeded(1))(x)
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - p) < 6 * math.sqrt(p * (1 - p) / n)
    # Var(y) <= E[x^2] p / (1 - p) <= 4 p / (1 - p): six standard errors of the mean
    assert abs(y.mean().item() - x.mean().item()) < 6 * math.sqrt(4 * p / (1 - p) / n)


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_backward_applies_the_forward_mask(p: float) -> None:
    dropout = Dropout(p, generator=seeded(2))
    x = nonzero_input(30, 20)
    g = torch.randn(30, 20, dtype=torch.float64)
    kept = dropout(x) != 0  # the mask, read off the output
    expected = torch.where(kept, g / (1 - p), torch.zeros_like(g))
    assert_close(dropout.backward(g), expected)
    assert_close(dropout.backward(g), expected)  # the mask is kept, not redrawn


def test_same_seed_same_mask_different_seed_different_mask() -> None:
    x = nonzero_input(1000)
    first = Dropout(0.5, generator=seeded(7))(x) != 0
    again = Dropout(0.5, generator=seeded(7))(x) != 0
    other = Dropout(0.5, generator=seeded(8))(x) != 0
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_a_generator_advances_so_successive_masks_differ() -> None:
    dropout = Dropout(0.5, generator=seeded(3))
    x = nonzero_input(1000)
    assert not torch.equal(dropout(x) != 0, dropout(x) != 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_global_generator_draws_the_same_mask_and_the_same_next_numbers_as_torch(
    p: float, dtype: torch.dtype
) -> None:
    x = torch.randn(8, 16, dtype=torch.float64).to(dtype)[:, ::2]  # strided, too
    torch.manual_seed(11)
    ours = Dropout(p)(x)
    ours_next = torch.rand(3)
    torch.manual_seed(11)
    ref = torch.nn.Dropout(p)(x)
    assert torch.equal(ours, ref)
    assert torch.equal(ours_next, torch.rand(3))


def test_inplace_overwrites_the_input() -> None:
    x = nonzero_input(10, 10)
    original = x.clone()
    y = Dropout(0.5, inplace=True, generator=seeded(4))(x)
    assert y is x
    kept = x != 0
    assert torch.equal(x[kept], original[kept] * 2)


def test_backward_before_forward() -> None:
    with pytest.raises(RuntimeError, match=r"Dropout\(p=0.5, inplace=False\): backward\(\) called"):
        Dropout().backward(torch.ones(2))


@pytest.mark.parametrize("training", [True, False])
def test_grad_output_of_wrong_shape(training: bool) -> None:
    dropout = Dropout(0.5).train(training)
    dropout(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"Dropout.*grad_output of shape \(4, 2\), got \(2, 4\)"):
        dropout.backward(torch.randn(2, 4))


def test_repr_and_attributes_match_torch() -> None:
    generator = seeded(0)
    dropout = Dropout(0.25, generator=generator)
    assert repr(dropout) == repr(torch.nn.Dropout(0.25))
    assert repr(Dropout(0.1, inplace=True)) == repr(torch.nn.Dropout(0.1, inplace=True))
    assert dropout.p == 0.25
    assert dropout.generator is generator


# ------------------------------------------------------------------ on a GPU
class AsIfOnGPU(torch.Tensor):
    """A CPU tensor that says it is on a GPU: runs Dropout's GPU code on CI."""

    @property
    def is_cuda(self) -> bool:
        return True


def dropout_ops(module: torch.nn.Module | Dropout, x: torch.Tensor) -> list[str]:
    with OpNames() as ops:
        module(x)
    return [name for name in ops.names if name != "device"]  # x.is_cuda asks for it


@pytest.mark.parametrize("inplace", [False, True])
def test_on_a_gpu_it_runs_the_kernels_torch_runs(inplace: bool) -> None:
    """On a GPU torch.nn.Dropout draws its mask in one fused kernel, ``native_dropout``,
    whose random numbers are not those of ``bernoulli_`` (in place it draws as on the
    CPU). Fake CUDA tensors dispatch as on a GPU, with no GPU and no values."""
    with FakeTensorMode():
        x = torch.empty(4, 5, device="cuda")
        g = torch.empty(4, 5, device="cuda")
        ours = Dropout(0.3, inplace)
        assert dropout_ops(ours, x.clone()) == dropout_ops(torch.nn.Dropout(0.3, inplace), x)
        with OpNames() as ops:
            grad = ours.backward(g)
        expected = ["mul"] if inplace else ["native_dropout_backward"]  # torch's autograd's
        assert ops.names == expected
        assert grad.shape == x.shape and grad.is_cuda
        # its own generator: bernoulli_ takes one, the fused kernel none
        own = Dropout(0.3, generator=torch.Generator())
        assert "bernoulli_" in dropout_ops(own, x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_fused_kernels_output_and_gradient_are_torchs_autograd(dtype: torch.dtype) -> None:
    """The GPU code, run on the CPU, against torch's autograd of the same kernel."""
    x = torch.randn(6, 7, dtype=dtype)
    g = torch.randn(6, 7, dtype=dtype)
    torch.manual_seed(3)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref, _ = torch.native_dropout(leaf, 0.3, True)
        y_ref.backward(g)
    assert leaf.grad is not None
    torch.manual_seed(3)
    dropout = Dropout(0.3)
    y = dropout(x.as_subclass(AsIfOnGPU)).as_subclass(torch.Tensor)
    assert torch.equal(y, y_ref.detach())
    assert torch.equal(dropout.backward(g).as_subclass(torch.Tensor), leaf.grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("inplace", [False, True])
def test_on_cuda_the_mask_and_the_next_draws_are_torchs(dtype: torch.dtype, inplace: bool) -> None:
    cuda = torch.device("cuda")
    x = torch.randn(33, 65, dtype=dtype, device=cuda)
    g = torch.randn(33, 65, dtype=dtype, device=cuda)
    torch.manual_seed(9)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = torch.nn.Dropout(0.4, inplace)(leaf * 1)
        y_ref.backward(g)
    next_ref = torch.rand(5, device=cuda)
    torch.manual_seed(9)
    dropout = Dropout(0.4, inplace)
    assert torch.equal(dropout(x.clone()), y_ref.detach())
    assert torch.equal(dropout.backward(g), leaf.grad)
    assert torch.equal(torch.rand(5, device=cuda), next_ref)

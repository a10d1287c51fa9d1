"""The CPU matmul switch: BLAS (torch's ops, PyTorch's bits) or oneDNN for large products."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nograd
from nograd.nn import Linear, ReLU, Sequential, matmul
from nograd.optim import SGD
from tests.oracle import OpNames, assert_close, compare_module

needs_onednn = pytest.mark.skipif(
    not matmul.onednn_available(), reason="this torch build has no oneDNN linear op"
)
ONEDNN_OP = "_linear_pointwise"
# 64 x 256 x 256 multiply-adds: exactly the smallest product that goes to oneDNN
BATCH, WIDTH = 64, 256
assert BATCH * WIDTH * WIDTH == matmul.ONEDNN_MIN_MACS
# oneDNN sums in another order than MKL: float32 rounding of sums of 64 to 256 terms of
# up to about 16 (dL/dW), so an absolute tolerance on that scale, not the oracle's 1e-6
ONEDNN_TOL = {"rtol": 1e-5, "atol": 2e-5}


@pytest.fixture(autouse=True)
def _blas_after() -> Iterator[None]:
    yield
    nograd.set_cpu_matmul("blas")


def op_names(run: Callable[[], object]) -> list[str]:
    """The aten ops that ``run()`` calls, in order."""
    with OpNames() as ops:
        run()
    return ops.names


def test_blas_is_the_default_and_its_products_are_torch_ops_themselves() -> None:
    assert nograd.get_cpu_matmul() == "blas"
    assert matmul.mm is torch.mm
    assert matmul.addmm is torch.addmm
    assert matmul.addmm_relu is torch._addmm_activation


@needs_onednn
def test_set_cpu_matmul_switches_and_switches_back() -> None:
    nograd.set_cpu_matmul("onednn")
    assert nograd.get_cpu_matmul() == "onednn"
    assert matmul.mm is not torch.mm
    nograd.set_cpu_matmul("blas")
    assert nograd.get_cpu_matmul() == "blas"
    assert matmul.mm is torch.mm


def test_set_cpu_matmul_refuses_other_names() -> None:
    with pytest.raises(ValueError, match=r"expected 'blas' or 'onednn', got 'mkl'"):
        nograd.set_cpu_matmul("mkl")  # type: ignore[arg-type]
    assert nograd.get_cpu_matmul() == "blas"


def test_set_cpu_matmul_refuses_onednn_where_torch_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(matmul, "onednn_available", lambda: False)
    with pytest.raises(RuntimeError, match="no oneDNN"):
        nograd.set_cpu_matmul("onednn")
    assert nograd.get_cpu_matmul() == "blas"
    assert matmul.mm is torch.mm


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_autograd_in_float32(bias: bool) -> None:
    nograd.set_cpu_matmul("onednn")
    ours = Linear(WIDTH, WIDTH, bias=bias)
    ref = torch.nn.Linear(WIDTH, WIDTH, bias=bias)
    x = torch.randn(BATCH, WIDTH)
    names = op_names(lambda: compare_module(ours, ref, x, tol=ONEDNN_TOL))
    # forward y, dL/dW and dL/dx each by oneDNN (the autograd twin runs mm and addmm)
    assert names.count(ONEDNN_OP) == 3


@needs_onednn
def test_onednn_runs_linear_relu_as_one_op_and_matches_autograd() -> None:
    nograd.set_cpu_matmul("onednn")
    ours = Sequential(Linear(WIDTH, WIDTH), ReLU(), Linear(WIDTH, WIDTH))
    ref = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH)
    )
    x = torch.randn(BATCH, WIDTH)
    y = ours(x)
    ref.load_state_dict(ours.state_dict())
    assert_close(y, ref(x), tol=ONEDNN_TOL)
    names = op_names(lambda: ours(x))
    assert names.count(ONEDNN_OP) == 2 and "relu" not in names and "relu_" not in names
    compare_module(ours, ref, x, tol=ONEDNN_TOL)


@needs_onednn
def test_onednn_takes_non_contiguous_inputs() -> None:
    nograd.set_cpu_matmul("onednn")
    ours, ref = Linear(WIDTH, WIDTH), torch.nn.Linear(WIDTH, WIDTH)
    x = torch.randn(2 * BATCH, 2 * WIDTH)[::2, ::2]  # strided rows and columns
    assert not x.is_contiguous()
    names = op_names(lambda: compare_module(ours, ref, x, tol=ONEDNN_TOL))
    assert names.count(ONEDNN_OP) == 3


@needs_onednn
def test_onednn_gradients_accumulate_until_zero_grad() -> None:
    nograd.set_cpu_matmul("onednn")
    layer = Linear(WIDTH, WIDTH)
    x, g = torch.randn(BATCH, WIDTH), torch.randn(BATCH, WIDTH)
    layer(x)
    layer.backward(g)
    assert layer.weight.grad is not None and layer.bias is not None
    assert layer.bias.grad is not None
    once = layer.weight.grad.clone()
    layer(x)
    assert op_names(lambda: layer.backward(g)).count(ONEDNN_OP) == 2  # dL/dW += g^T x, dL/dx
    assert_close(layer.weight.grad, 2 * once, tol=ONEDNN_TOL)


@needs_onednn
def test_small_products_stay_with_torch_bit_for_bit() -> None:
    torch.manual_seed(0)
    x, g = torch.randn(BATCH - 1, WIDTH), torch.randn(BATCH - 1, WIDTH)  # 1 row short
    blas = Linear(WIDTH, WIDTH)
    onednn = Linear(WIDTH, WIDTH)
    onednn.load_state_dict(blas.state_dict())
    y, dx = blas(x), blas.backward(g)
    nograd.set_cpu_matmul("onednn")
    names = op_names(lambda: (onednn(x), onednn.backward(g)))
    assert ONEDNN_OP not in names
    assert torch.equal(onednn(x), y)
    assert torch.equal(onednn.backward(g), dx)


@needs_onednn
def test_float64_stays_with_torch_bit_for_bit() -> None:
    ours = Linear(WIDTH, WIDTH, dtype=torch.float64)
    ref = torch.nn.Linear(WIDTH, WIDTH, dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(BATCH, WIDTH, dtype=torch.float64)
    nograd.set_cpu_matmul("onednn")
    names = op_names(lambda: ours(x))
    assert ONEDNN_OP not in names
    assert torch.equal(ours(x), ref(x))


@needs_onednn
def test_other_devices_stay_with_torch() -> None:
    nograd.set_cpu_matmul("onednn")
    a = torch.empty(BATCH, WIDTH, device="meta")
    c = torch.empty(WIDTH, WIDTH, device="meta")
    names = op_names(
        lambda: (matmul.mm(a, c), matmul.addmm(torch.empty(WIDTH, device="meta"), a, c))
    )
    assert ONEDNN_OP not in names and "mm" in names and "addmm" in names


@needs_onednn
def test_onednn_keeps_the_clear_errors_of_linear() -> None:
    nograd.set_cpu_matmul("onednn")
    layer = Linear(WIDTH, WIDTH)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 256\), got \(64, 255\)"):
        layer(torch.randn(BATCH, WIDTH - 1))
    with pytest.raises(TypeError, match=r"expected input of dtype torch\.float32"):
        layer(torch.randn(BATCH, WIDTH, dtype=torch.float64))


@needs_onednn
def test_onednn_training_strays_from_the_exact_run_no_more_than_torch_float32() -> None:
    """Five SGD steps in float32: oneDNN's other summation order is rounding, not a bug."""
    torch.manual_seed(0)
    ref = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, 10)
    )
    exact = copy.deepcopy(ref).double()  # the same weights, run in float64
    ours = Sequential(Linear(WIDTH, WIDTH), ReLU(), Linear(WIDTH, 10))
    ours.load_state_dict(ref.state_dict())
    batches = [(torch.randn(BATCH, WIDTH), torch.randint(0, 10, (BATCH,))) for _ in range(5)]

    for model in (ref, exact):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        dtype = next(model.parameters()).dtype
        with torch.enable_grad():
            for x, y in batches:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x.to(dtype)), y).backward()
                opt.step()
    nograd.set_cpu_matmul("onednn")
    loss_fn = nograd.nn.CrossEntropyLoss()
    ours_opt = SGD(ours.parameters(), lr=0.1, momentum=0.9)
    for x, y in batches:
        ours_opt.zero_grad()
        loss_fn(ours(x), y)
        ours.backward(loss_fn.backward())
        ours_opt.step()

    def gap(params: dict[str, torch.Tensor]) -> float:
        return max(
            float((params[k].double() - v).abs().max()) for k, v in exact.state_dict().items()
        )

    ours_gap, torch_gap = gap(ours.state_dict()), gap(ref.state_dict())
    assert torch_gap > 0 and ours_gap <= 4 * torch_gap, (ours_gap, torch_gap)


@needs_onednn
@given(
    n=st.sampled_from([1, 3, 64, 200]),
    k=st.sampled_from([7, 256, 1000]),
    m=st.sampled_from([5, 256, 300]),
)
def test_each_onednn_product_matches_torch_and_goes_where_its_size_says(
    n: int, k: int, m: int
) -> None:
    generator = torch.Generator().manual_seed(n * k * m)
    a, c = torch.randn(n, k, generator=generator), torch.randn(k, m, generator=generator)
    bias = torch.randn(m, generator=generator)
    tol = {"rtol": 1e-5, "atol": 1e-6 * k**0.5 * 4}  # sums of k products of N(0, 1) numbers
    nograd.set_cpu_matmul("onednn")
    with OpNames() as ops:
        results = [
            matmul.mm(a, c),
            matmul.addmm(bias, a, c),
            matmul.addmm_relu(bias, a, c),
        ]
    expected = [a @ c, bias + a @ c, (bias + a @ c).relu()]
    for result, reference in zip(results, expected, strict=True):
        assert_close(result, reference, tol=tol)
    on_onednn = n * k * m >= matmul.ONEDNN_MIN_MACS
    assert ops.names.count(ONEDNN_OP) == (3 if on_onednn else 0)


@needs_onednn
def test_a_bias_that_is_not_a_vector_stays_with_torch() -> None:
    """oneDNN adds a bias vector; addmm's general b (here a full matrix) goes to torch."""
    a, c = torch.randn(BATCH, WIDTH), torch.randn(WIDTH, WIDTH)
    b = torch.randn(BATCH, WIDTH)
    nograd.set_cpu_matmul("onednn")
    names = op_names(lambda: matmul.addmm(b, a, c))
    assert ONEDNN_OP not in names
    assert torch.equal(matmul.addmm(b, a, c), torch.addmm(b, a, c))


@pytest.mark.parametrize("backend", ["blas", pytest.param("onednn", marks=needs_onednn)])
@pytest.mark.parametrize("n", [3, BATCH])
def test_mm_into_out_gives_the_bits_of_a_new_tensor(backend: matmul.CpuMatmul, n: int) -> None:
    """``mm(a, c, out=slot)``, as Linear computes dL/dW into an optimizer's flat buffer
    (``Parameter.grad_out``): the same numbers as the new tensor, in ``slot`` itself."""
    generator = torch.Generator().manual_seed(n)
    a, c = torch.randn(WIDTH, n, generator=generator), torch.randn(n, WIDTH, generator=generator)
    nograd.set_cpu_matmul(backend)
    buffer = torch.full((WIDTH * WIDTH + 32,), float("nan"))
    slot = buffer[16 : 16 + WIDTH * WIDTH].view(WIDTH, WIDTH)  # 64-byte aligned, as flat's
    result = matmul.mm(a, c, out=slot)
    assert result is slot
    assert torch.equal(slot, matmul.mm(a, c))
    assert buffer[:16].isnan().all() and buffer[-16:].isnan().all()  # nothing written outside

"""nograd.optim.foreach: each helper gives the bits of torch's ``_foreach_*`` op.

A one-tensor CPU list (a flat group) takes the single-tensor op; longer lists go to
``_foreach_*``, but for their big GPU tensors inside ``own_kernels()`` (a CUDA graph
capture), which take the single-tensor op. All must agree with torch's ``_foreach_*``
op to the last bit, in place or not; the split is also run on the CPU, with "big"
redefined, to check its bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from nograd.nn.parameter import Parameter
from nograd.optim import SGD, foreach
from nograd.optim.foreach import _one_pass_mul_add_exact
from tests.oracle import OpNames

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
    (
        "mul_add_",  # SGD's momentum update, b = mu b + g: one pass on the CPU
        lambda t: foreach.mul_add_(t[0], 0.9, t[1]),
        lambda t: (torch._foreach_mul_(t[0], 0.9), torch._foreach_add_(t[0], t[1]))[-1],
    ),
    (
        "div_ by a 0-dim tensor",  # capturable Adam's bias correction, on the device
        lambda t: foreach.div_(
            t[0], torch.full((), 0.7, dtype=t[0][0].dtype, device=t[0][0].device)
        ),
        lambda t: torch._foreach_div_(
            t[0], torch.full((), 0.7, dtype=t[0][0].dtype, device=t[0][0].device)
        ),
    ),
    ("maximum_", lambda t: foreach.maximum_(t[0], t[1]), lambda t: torch._foreach_maximum_(*t[:2])),
    (
        "div a number each",  # NAdam's v / (1 - beta2^t), new tensors
        lambda t: foreach.div(t[0], [0.3 + 0.1 * i for i in range(len(t[0]))]),
        lambda t: torch._foreach_div(t[0], [0.3 + 0.1 * i for i in range(len(t[0]))]),
    ),
    (
        "div into out",  # into the tensors an optimizer keeps on the CPU
        lambda t: foreach.div(t[0], [0.7] * len(t[0]), out=t[2]),
        lambda t: torch._foreach_div(t[0], [0.7] * len(t[0])),
    ),
    (
        "mul_ a number each",  # RAdam's sqrt(1 - beta2^t) and rect, one per tensor
        lambda t: foreach.mul_(t[0], [0.3 + 0.1 * i for i in range(len(t[0]))]),
        lambda t: torch._foreach_mul_(t[0], [0.3 + 0.1 * i for i in range(len(t[0]))]),
    ),
    (
        "mul_ a tensor each",
        lambda t: foreach.mul_(t[0], t[1]),
        lambda t: torch._foreach_mul_(*t[:2]),
    ),
    (
        "reciprocal_",
        lambda t: foreach.reciprocal_(t[0]),
        lambda t: torch._foreach_reciprocal_(t[0]),
    ),
    ("sqrt", lambda t: foreach.sqrt(t[0]), lambda t: torch._foreach_sqrt(t[0])),
    ("sqrt_", lambda t: foreach.sqrt_(t[0]), lambda t: torch._foreach_sqrt_(t[0])),
]


def lists(
    count: int, dtype: torch.dtype, seed: int, shapes: list[tuple[int, ...]] | None = None
) -> Lists:
    gen = torch.Generator().manual_seed(seed)
    shapes = (shapes or [(1427,), (25, 25), (7,), (2, 25)])[:count]
    x, y, z = ([torch.rand(s, generator=gen, dtype=dtype) + 0.5 for s in shapes] for _ in "xyz")
    return x, y, z


def check_case(
    name: str,
    ours: Callable[[Lists], Any],
    theirs: Callable[[Lists], Any],
    mine: Lists,
    reference: Lists,
) -> None:
    """ours on mine and theirs on reference (equal lists) give the same numbers, bit for bit."""
    count = len(mine[0])
    result, expected = ours(mine), theirs(reference)
    if name.split()[0].endswith("_"):  # in place: the first list holds the result
        assert result is None
        result, expected = mine[0], reference[0]
    assert len(result) == count
    for a, b in zip(result, expected, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


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
    check_case(name, ours, theirs, lists(count, dtype, count), lists(count, dtype, count))


@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=[case[0] for case in CASES])
def test_big_tensors_take_the_single_op_and_the_rest_one_foreach_call(
    name: str,
    ours: Callable[[Lists], Any],
    theirs: Callable[[Lists], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The GPU's split, run on the CPU: results in the list's order, arguments split along."""
    if name in ("mul_add_", "div into out", "mul_ a number each"):
        pytest.skip("one single-tensor op per tensor anyway on the CPU")
    monkeypatch.setattr(foreach, "_own_kernel", lambda x: x.numel() >= 600)  # 1427 and 625
    calls: list[int] = []

    def counted(op: Callable[..., Any]) -> Callable[..., Any]:
        def call(xs: Any, *args: Any, **kw: Any) -> Any:
            calls.append(len(xs))
            return op(xs, *args, **kw)

        return call

    mine, reference = lists(4, torch.float64, 3), lists(4, torch.float64, 3)
    with monkeypatch.context() as patched, foreach.own_kernels():  # count ours only
        for op in [name for name in dir(torch) if name.startswith("_foreach_")]:
            patched.setattr(torch, op, counted(getattr(torch, op)))
        result = ours(mine)
    assert calls == [2], calls  # one _foreach_* call, for (7,) and (2, 25)
    expected = theirs(reference)
    if name.split()[0].endswith("_"):
        result, expected = mine[0], reference[0]
    for a, b in zip(result, expected, strict=True):
        assert torch.equal(a, b), name


def test_only_big_gpu_tensors_in_a_capture_leave_the_foreach_call() -> None:
    big = torch.zeros(foreach.OWN_KERNEL_NUMEL, device="meta")
    assert not foreach._own_kernel(big)  # eager: one _foreach_* call for the whole list
    with foreach.own_kernels():
        with foreach.own_kernels():  # nested: still on after the inner block
            pass
        assert foreach._own_kernel(big)
        assert not foreach._own_kernel(torch.zeros(foreach.OWN_KERNEL_NUMEL - 1, device="meta"))
        assert not foreach._own_kernel(torch.zeros(foreach.OWN_KERNEL_NUMEL))  # CPU: foreach
    assert not foreach._own_kernel(big)


def test_an_eager_step_makes_one_foreach_call_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(foreach, "_own_kernel", lambda x: True)  # every tensor "big"...
    xs = [torch.ones(3), torch.ones(4)]
    with OpNames() as ops:
        foreach.mul_(xs, 2.0)  # ...yet outside own_kernels() the list stays whole
    assert ops.names == ["_foreach_mul_"], ops.names


CUDA_SHAPES = [(1024, 784), (7,), (foreach.OWN_KERNEL_NUMEL,), (10, 1024), (65536 + 17,)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=[case[0] for case in CASES])
def test_cuda_split_lists_keep_the_bits_of_torchs_foreach_op(
    name: str, ours: Callable[[Lists], Any], theirs: Callable[[Lists], Any], dtype: torch.dtype
) -> None:
    """Big tensors by the single-tensor kernel, small ones by _foreach_*: torch's bits."""
    if name in ("mul_add_", "div into out"):
        pytest.skip("the one-pass momentum update and kept tensors are the CPU's only")

    def on_cuda(tensors: Lists) -> Lists:
        x, y, z = tensors
        return [t.cuda() for t in x], [t.cuda() for t in y], [t.cuda() for t in z]

    mine = on_cuda(lists(5, dtype, 5, CUDA_SHAPES))
    reference = on_cuda(lists(5, dtype, 5, CUDA_SHAPES))
    with foreach.own_kernels():  # as in a capture: big tensors by their own kernels
        check_case(name, ours, theirs, mine, reference)


def test_a_new_list_leaves_its_input_alone() -> None:
    x = [torch.rand(5)]
    before = x[0].clone()
    (out,) = foreach.add(x, x, alpha=2.0)
    assert out is not x[0] and torch.equal(x[0], before)


def test_foreach_scalar_is_float64_when_any_tensor_is() -> None:
    mixed = [torch.zeros(2), torch.zeros(2, dtype=torch.float64)]
    assert foreach.foreach_scalar(0.1, mixed).dtype == torch.float64
    assert foreach.foreach_scalar(0.1, [torch.zeros(2)]).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [0.9, 0.99, 0.5, 1 / 3, 1e-3])
@pytest.mark.parametrize("n", [1, 7, 8, 15, 16, 17, 31, 32, 33, 1000, 4099])
def test_mul_add_rounds_twice_as_mul_then_add_does(n: int, c: float, dtype: torch.dtype) -> None:
    """Every length the vector loop and its tail can split, signed numbers of all sizes."""
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=gen, dtype=dtype) * torch.logspace(-3, 3, n, dtype=dtype)
    y = torch.randn(n, generator=gen, dtype=dtype)
    expected = x.clone().mul_(c).add_(y)  # torch.optim.SGD's b.mul_(mu).add_(g)
    assert foreach.one_pass_mul_add([x], [y])
    foreach.mul_add_([x], c, [y])
    assert torch.equal(x, expected)


def test_one_pass_mul_add_only_where_checked() -> None:
    mixed = [torch.zeros(3), torch.zeros(2, dtype=torch.float64)]
    assert foreach.one_pass_mul_add(mixed, [x.clone() for x in mixed])
    for dtype in (torch.bfloat16, torch.float16):  # one rounding, in float: not torch's bits
        half = [torch.zeros(3, dtype=dtype)]
        assert not foreach.one_pass_mul_add(half, half)
    meta = [torch.zeros(3, device="meta")]
    assert not foreach.one_pass_mul_add(meta, meta)


def test_one_pass_mul_add_only_where_each_y_has_its_xs_dtype() -> None:
    """A float64 y and a float32 x: c x + y in float64, rounded once; torch rounds c x first."""
    x32, x64 = torch.zeros(3), torch.zeros(3, dtype=torch.float64)
    assert not foreach.one_pass_mul_add([x32], [x64])
    assert not foreach.one_pass_mul_add([x64], [x32])
    assert not foreach.one_pass_mul_add([x32, x32], [x32, x64])


def test_a_kernel_that_rounds_once_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """If torch's addcmul fused c x + y into one rounding, SGD would take two passes."""

    def fused(
        y: Tensor, x: Tensor, one: Tensor, *, value: float, out: Tensor | None = None
    ) -> Tensor:
        # c x + y rounded once, as a fused multiply-add would: float32 numbers in float64
        result = (y.double() + value * (x * one).double()).to(y.dtype)
        return result if out is None else out.copy_(result)

    _one_pass_mul_add_exact.cache_clear()
    monkeypatch.setattr(torch, "addcmul", fused)
    x = [torch.zeros(3)]
    try:
        assert not foreach.one_pass_mul_add(x, x)
    finally:
        monkeypatch.undo()
        _one_pass_mul_add_exact.cache_clear()
    assert foreach.one_pass_mul_add(x, x)


@pytest.mark.parametrize("flat", [True, False], ids=["flat group", "tensor by tensor"])
def test_sgd_momentum_takes_one_pass_and_torchs_bits(flat: bool) -> None:
    """b = mu b + g by one addcmul per buffer, not mul_ and add_; parameters as torch's."""
    torch.manual_seed(0)
    width = 30 if flat else 300  # 300 x 300 numbers are too many for a flat group
    reference = nn.Linear(width, 3)
    ours = nn.Linear(width, 3)
    ours.load_state_dict(reference.state_dict())
    params = [Parameter(t.detach().clone()) for t in ours.parameters()]
    torch_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    our_opt = SGD(params, lr=0.1, momentum=0.9)
    x = [params[0].data]
    foreach.one_pass_mul_add(x, x)  # its once-per-dtype check, before ops are counted
    for step in range(4):
        grads = [torch.randn_like(p.data) for p in params]
        for p, q, g in zip(params, reference.parameters(), grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        torch_opt.step()
        with OpNames() as ops:
            our_opt.step()
        if step > 0:  # the first step copies g into the new buffer
            assert "addcmul" in ops.names and "mul_" not in ops.names, ops.names
        for p, q in zip(params, reference.parameters(), strict=True):
            assert torch.equal(p.data, q.detach())


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("flat", [True, False], ids=["flat group", "tensor by tensor"])
def test_sgd_momentum_after_model_double_rounds_as_torch(flat: bool, nesterov: bool) -> None:
    """float32 buffers, then float64 gradients (``model.double()``): torch's two roundings.

    torch rounds mu * b to the buffer's float32, then adds the float64 g; one addcmul
    would add in float64 and round once.
    """
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,)] if flat else [(300, 300), (4,)]  # 90004 numbers: too many to flatten
    values = [torch.randn(shape, generator=gen) for shape in shapes]
    ours = [Parameter(v.clone()) for v in values]
    ref = [v.clone().requires_grad_() for v in values]
    our_opt = SGD(ours, lr=0.1, momentum=0.9, nesterov=nesterov)
    torch_opt = torch.optim.SGD(ref, lr=0.1, momentum=0.9, nesterov=nesterov)
    for step in range(6):
        if step == 3:  # model.double(): the momentum buffers stay float32, as in torch
            for p, t in zip(ours, ref, strict=True):
                p.data, t.data = p.data.double(), t.data.double()
        for p, t in zip(ours, ref, strict=True):
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad, t.grad = g.clone(), g.clone()
        our_opt.step()
        torch_opt.step()
    for p, t in zip(ours, ref, strict=True):
        buffer, torch_buffer = (
            our_opt.state[p]["momentum_buffer"],
            torch_opt.state[t]["momentum_buffer"],
        )
        assert buffer.dtype == torch_buffer.dtype == torch.float32
        assert torch.equal(buffer, torch_buffer)
        assert torch.equal(p.data, t.detach())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_number_each_multiplies_half_precision_as_each_tensors_mul_(dtype: torch.dtype) -> None:
    """torch's _foreach_mul_ rounds a list of numbers to the tensors' half-precision
    type first; torch's single-tensor optimizers multiply by the number itself."""
    x = lists(4, torch.float32, 0)[0]
    ours, theirs = [t.to(dtype) for t in x], [t.to(dtype) for t in x]
    numbers = [0.0848, 0.1407, 0.3, 0.9]
    foreach.mul_(ours, numbers)
    for t, c in zip(theirs, numbers, strict=True):
        t.mul_(c)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    rounded = [t.to(dtype) for t in x]
    torch._foreach_mul_(rounded, numbers)
    assert not all(torch.equal(a, b) for a, b in zip(rounded, theirs, strict=True))

"""One line of an update rule, applied to every tensor of a param group in one call.

An optimizer's ``step`` reads like the textbook rule, ``v = beta2 * v`` and so on,
because each line runs on lists: the group's values p, gradients g and states. Here,
torch's ``_foreach_*`` ops do the work; on a GPU they also fuse a list into a few
kernels.

On the CPU those ops are a C++ loop that calls the single-tensor op on each tensor,
and the loop costs up to 1 µs per call on its own. A flat group
(``nograd.optim.flat``) is a list of one tensor, so for it each function below calls
the single-tensor op directly: the same kernel, the same bits, without the loop.
On a GPU a list goes to ``_foreach_*``, whose fused kernels PyTorch's optimizers use
too, except for its big tensors, which take the single-tensor op (below).

One line gets a kernel that PyTorch's SGD does not use for it: SGD's momentum update
b = mu * b + g, two passes in torch (``mul_``, then ``add_``), is one ``addcmul`` per
tensor on the CPU (``mul_add_``), rounded in the same two places, where each
gradient has its buffer's dtype (``one_pass_mul_add``).

Big tensors on a GPU: a ``_foreach_*`` kernel gives each chunk of 65536 numbers one
block of threads, so a list of a few big tensors runs on a few dozen of the GPU's
processors, and a kernel takes about as long as one block needs for one chunk. On the
MLP 784-1024-1024-10 (1.9 million parameters, about 30 chunks), each line of SGD took
10 to 17 us on an H100, where the single-tensor op, with blocks on every processor,
reads and writes the same memory in a few us. So on a GPU every tensor of at least
``OWN_KERNEL_NUMEL`` numbers gets the single-tensor op, and the rest of the list one
``_foreach_*`` call; but only inside ``own_kernels()``, which a CUDA graph's capture
uses, since an eager step pays the CPU a launch for each kernel. Each number is
computed by the same formula either way (tests/test_foreach.py and tests/test_cuda.py
check the bits on a GPU), except that a division by a Python number on a GPU kernel
of one tensor multiplies by its inverse: ``div_`` passes it as a 0-dim tensor.

Half precision on the CPU: a list holding a float16 or bfloat16 tensor takes each
tensor's own op, as ``torch.optim`` does there (``one_by_one`` says why).

Scalars: on the CPU, ``foreach_scalar`` turns a number into the 0-dim tensor these
ops take fastest (on a GPU the number itself is as fast); a list of numbers gives
each tensor its own (Adam's bias correction, where the tensors' step counts differ).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from nograd.nn.constants import HALF_DTYPES

TensorList = list[Tensor] | tuple[Tensor, ...]  # what torch's _foreach_* ops take and return
Scalars = float | list[float]  # one number for every tensor, or one number each


def foreach_scalar(value: float, tensors: TensorList) -> Tensor:
    """``value`` as a 0-dim tensor for torch's ``_foreach_*`` ops: same arithmetic, faster.

    On the CPU those ops loop over the tensors in C++ and turn a Python number into
    a tensor again for each one (about 1 us apiece); this tensor is made once. It is
    float64 if any tensor is float64, else float32, so the value rounds to each
    tensor's precision exactly as the number would, and it sits on the device of the
    first tensor, as the ops require.
    """
    float64 = any(tensor.dtype == torch.float64 for tensor in tensors)
    dtype = torch.float64 if float64 else torch.float32
    return torch.full((), value, dtype=dtype, device=tensors[0].device)


def _alone(tensors: TensorList) -> Tensor | None:
    """The tensor of a one-tensor CPU list (a flat group), else None."""
    if len(tensors) == 1 and tensors[0].is_cpu:
        return tensors[0]
    return None


OWN_KERNEL_NUMEL = 1 << 15  # in a capture, a GPU tensor this big skips the _foreach_* kernel
# Whether big GPU tensors take their own kernels now: only inside own_kernels(), which
# GraphedTrainStep's capture uses. An eager step keeps one _foreach_* call per line.
_split_big = False


@contextlib.contextmanager
def own_kernels() -> Iterator[None]:
    """Within the block, each big GPU tensor gets the single-tensor op (a CUDA graph capture).

    In a graph, launches cost the CPU nothing per replay and only the kernels' time
    counts, so more, faster kernels win. An eager step on a GPU is paced by the CPU's
    launches instead (a few us each), and one ``_foreach_*`` call per line is faster.
    """
    global _split_big
    previous, _split_big = _split_big, True
    try:
        yield
    finally:
        _split_big = previous


def _own_kernel(x: Tensor) -> bool:
    """Whether x takes the single-tensor op rather than a place in a ``_foreach_*`` call."""
    return _split_big and not x.is_cpu and x.numel() >= OWN_KERNEL_NUMEL


def _parts(xs: TensorList) -> tuple[list[int], list[int]]:
    """The indices of xs's big GPU tensors, then of the others."""
    if not _split_big:
        return [], []  # the usual case: the caller makes one call for the whole list
    big = [i for i, x in enumerate(xs) if _own_kernel(x)]
    return big, [i for i in range(len(xs)) if i not in big]


def _at(arg: Any, i: int) -> Any:
    """Tensor i's argument: item i of a list (one item per tensor), else the argument itself."""
    return arg[i] if isinstance(arg, list | tuple) else arg


def _pick(arg: Any, indices: list[int]) -> Any:
    """The items of a per-tensor list at these indices; any other argument as it is."""
    return [arg[i] for i in indices] if isinstance(arg, list | tuple) else arg


def one_by_one(xs: TensorList) -> bool:
    """Whether a list takes each tensor's own op: a CPU list holding a half-precision tensor.

    torch's optimizers on the CPU run each tensor's own op, and those compute a
    float16 or bfloat16 tensor's line in float32 with the number as given. The
    ``_foreach_*`` CPU ops round a Python number to the tensor's type first: 0.9 times a
    bfloat16 tensor becomes 0.8984375 times it, and some results differ in the last bit.
    """
    return xs[0].is_cpu and any(x.dtype in HALF_DTYPES for x in xs)


def _each_(
    fused: Callable[..., Any], single: Callable[..., Any], xs: TensorList, *args: Any, **kw: Any
) -> None:
    """``fused(xs, *args)`` in place, but ``single(x_i, *args_i)`` on each big GPU tensor,
    and on every tensor of a ``one_by_one`` list.

    A list argument has one item per tensor and is split along with xs; ``kw`` goes
    to both ops as it is.
    """
    if one_by_one(xs):
        for i, x in enumerate(xs):
            single(x, *(_at(arg, i) for arg in args), **kw)
        return
    if not _split_big:  # the usual case (no capture under way): one call for the whole list
        fused(xs, *args, **kw)
        return
    big, small = _parts(xs)
    for i in big:
        single(xs[i], *(_at(arg, i) for arg in args), **kw)
    if small:
        fused(_pick(xs, small), *(_pick(arg, small) for arg in args), **kw)


def _each(
    fused: Callable[..., Any], single: Callable[..., Any], xs: TensorList, *args: Any, **kw: Any
) -> TensorList:
    """``_each_`` for an op that returns new tensors: they come back in the order of xs."""
    if one_by_one(xs):
        return [single(x, *(_at(arg, i) for arg in args), **kw) for i, x in enumerate(xs)]
    big, small = _parts(xs)
    if not big:
        return fused(xs, *args, **kw)  # type: ignore[no-any-return]
    out = {i: single(xs[i], *(_at(arg, i) for arg in args), **kw) for i in big}
    if small:
        rest = fused(_pick(xs, small), *(_pick(arg, small) for arg in args), **kw)
        out.update(zip(small, rest, strict=True))
    return [out[i] for i in range(len(xs))]


def neg(xs: TensorList) -> TensorList:
    """-x, as new tensors."""
    x = _alone(xs)
    if x is not None:
        return [x.neg()]
    return _each(torch._foreach_neg, torch.neg, xs)


def add(xs: TensorList, ys: TensorList, alpha: float) -> TensorList:
    """x + alpha * y, as new tensors."""
    x = _alone(xs)
    if x is not None:
        return [torch.add(x, ys[0], alpha=alpha)]
    return _each(torch._foreach_add, torch.add, xs, ys, alpha=alpha)


def add_(xs: TensorList, ys: TensorList, alpha: float = 1) -> None:
    """x += alpha * y.

    alpha = 1 is left out of the call: x + 1 * y is x + y exactly, and passing the
    number costs torch a conversion (0.3 us of a 0.65 us add_ on a small flat group).
    """
    x = _alone(xs)
    if x is not None and alpha == 1:
        x.add_(ys[0])
    elif x is not None:
        x.add_(ys[0], alpha=alpha)
    elif alpha == 1:
        _each_(torch._foreach_add_, Tensor.add_, xs, ys)
    else:
        _each_(torch._foreach_add_, Tensor.add_, xs, ys, alpha=alpha)


def add_scalar(xs: TensorList, c: Tensor | float, out: TensorList | None = None) -> TensorList:
    """x + c, as new tensors, or into ``out`` (CPU tensors) where given; c as in
    ``add_scalar_``."""
    if out is not None:
        return [torch.add(x, c, out=o) for x, o in zip(xs, out, strict=True)]
    x = _alone(xs)
    if x is not None:
        return [x + c]
    return _each(torch._foreach_add, torch.add, xs, c)


def add_scalar_(xs: TensorList, c: Tensor | float) -> None:
    """x += c, for a number c or a 0-dim c from ``foreach_scalar``."""
    x = _alone(xs)
    if x is not None:
        x.add_(c)
    elif isinstance(c, Tensor):  # alpha=1 keeps c a tensor: without it, torch reads it back
        _each_(torch._foreach_add_, Tensor.add_, xs, c, alpha=1)
    else:
        _each_(torch._foreach_add_, Tensor.add_, xs, c)


def mul_(xs: TensorList, c: Tensor | float | list[float] | TensorList) -> None:
    """x *= c: by a number, a 0-dim c from ``foreach_scalar``, a number each (a list of
    numbers), or elementwise by a tensor each (a list of tensors)."""
    x = _alone(xs)
    if x is not None:
        x.mul_(c[0] if isinstance(c, list | tuple) else c)
    else:
        _each_(torch._foreach_mul_, Tensor.mul_, xs, c)


def reciprocal_(xs: TensorList) -> None:
    """x = 1 / x."""
    x = _alone(xs)
    if x is not None:
        x.reciprocal_()
    else:
        _each_(torch._foreach_reciprocal_, Tensor.reciprocal_, xs)


def mul_add_(xs: TensorList, c: float, ys: TensorList) -> None:
    """x = c * x + y in one pass over memory, for lists that ``one_pass_mul_add`` allows.

    Rounded as ``x.mul_(c).add_(y)`` (SGD's momentum update) rounds it, in two passes:
    ``addcmul(y, x, 1, value=c)`` computes y + (c * x) * 1, and a product with 1 is
    exact, so the kernel rounds c * x, adds y and rounds again, whether or not the
    compiler fused its last multiply and add.
    """
    for x, y in zip(xs, ys, strict=True):
        torch.addcmul(y, x, _ONE[x.dtype], value=c, out=x)  # x = (c x) * 1 + y


# the 1 of mul_add_'s (c x) * 1, for each dtype it may run in
_ONE = {dtype: torch.ones((), dtype=dtype) for dtype in (torch.float32, torch.float64)}


def one_pass_mul_add(xs: TensorList, ys: TensorList) -> bool:
    """Whether ``mul_add_`` may update xs with ys: float32 or float64 on the CPU, same dtypes.

    Each y must have its x's dtype. A float64 gradient (``model.double()`` after some
    float32 steps) with a float32 buffer would make the kernel compute c * x + y in
    float64 and round it to float32 once, where torch's ``mul_`` rounds c * x to
    float32 first. (On a GPU the ``_foreach_*`` kernels already batch the launches.)
    """
    if not xs[0].is_cpu:
        return False
    for x, y in zip(xs, ys, strict=True):  # one loop: this runs at every step of SGD
        if x.dtype != y.dtype or not _one_pass_mul_add_exact(x.dtype):
            return False
    return True


@functools.cache
def _one_pass_mul_add_exact(dtype: torch.dtype) -> bool:
    """Whether ``addcmul(y, x, 1, value=c)`` gives ``x.mul_(c).add_(y)``'s bits on the CPU.

    Checked once per dtype, on numbers that fill the kernel's vector loop and its tail,
    for a few c. A torch whose kernel computed y + c * (x * 1) as one fused
    multiply-add would round once instead of twice, and fail here.
    """
    if dtype not in _ONE:
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1031, generator=generator, dtype=dtype)
    y = torch.randn(1031, generator=generator, dtype=dtype)
    for c in (0.9, 0.99, 1 / 3):
        expected = x.clone().mul_(c).add_(y)
        if not torch.equal(torch.addcmul(y, x, _ONE[dtype], value=c), expected):
            return False
    return True


def div_(xs: TensorList, cs: list[float] | Tensor | TensorList) -> None:
    """x_i /= c_i, for one number or one tensor per tensor (elementwise), or x /= c for
    a 0-dim c on the tensors' device."""
    x = _alone(xs)
    if x is not None:
        x.div_(cs[0] if isinstance(cs, list | tuple) else cs)
    else:
        _each_(torch._foreach_div_, _div_, xs, cs)


def _div_(x: Tensor, c: float | Tensor) -> None:
    """x /= c for one tensor: on a GPU divided as ``_foreach_div_`` divides, on the CPU
    (a ``one_by_one`` list) as ``torch.optim``'s own ``div_``.

    For a Python number, torch's single-tensor GPU kernel multiplies by 1 / c, which
    can round differently; a 0-dim tensor on the device makes it divide.
    """
    if not isinstance(c, Tensor) and not x.is_cpu:
        c = torch.full((), c, dtype=x.dtype, device=x.device)
    x.div_(c)


def div(xs: TensorList, cs: list[float], out: TensorList | None = None) -> TensorList:
    """x_i / c_i, as new tensors, or into ``out`` (CPU tensors) where given."""
    if out is not None:
        return [torch.div(x, c, out=o) for x, c, o in zip(xs, cs, out, strict=True)]
    x = _alone(xs)
    if x is not None:
        return [x / cs[0]]
    return _each(torch._foreach_div, _div, xs, cs)


def _div(x: Tensor, c: float) -> Tensor:
    """x / c for one tensor, divided as ``_div_`` divides."""
    if x.is_cpu:
        return x / c
    return x / torch.full((), c, dtype=x.dtype, device=x.device)


def lerp_(xs: TensorList, ys: TensorList, weight: float) -> None:
    """x += weight * (y - x)."""
    x = _alone(xs)
    if x is not None:
        x.lerp_(ys[0], weight)
    else:
        _each_(torch._foreach_lerp_, Tensor.lerp_, xs, ys, weight)


def addcmul(
    xs: TensorList, ys: TensorList, zs: TensorList, value: float, out: TensorList | None = None
) -> TensorList:
    """x + value * y * z, as new tensors, or into ``out`` (CPU tensors) where given."""
    if out is not None:
        return [
            torch.addcmul(x, y, z, value=value, out=o)
            for x, y, z, o in zip(xs, ys, zs, out, strict=True)
        ]
    x = _alone(xs)
    if x is not None:
        return [torch.addcmul(x, ys[0], zs[0], value=value)]
    return _each(torch._foreach_addcmul, torch.addcmul, xs, ys, zs, value=value)


def addcmul_(xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> None:
    """x += value * y * z."""
    x = _alone(xs)
    if x is not None:
        x.addcmul_(ys[0], zs[0], value=value)
    else:
        _each_(torch._foreach_addcmul_, Tensor.addcmul_, xs, ys, zs, value=value)


def addcdiv_(xs: TensorList, ys: TensorList, zs: TensorList, value: Scalars = 1.0) -> None:
    """x += value * y / z, with one value for all or one value each."""
    x = _alone(xs)
    if x is not None:
        x.addcdiv_(ys[0], zs[0], value=value[0] if isinstance(value, list) else value)
    elif isinstance(value, list):
        _each_(torch._foreach_addcdiv_, _addcdiv_with, xs, ys, zs, value)
    else:
        _each_(torch._foreach_addcdiv_, Tensor.addcdiv_, xs, ys, zs, value=value)


def _addcdiv_with(x: Tensor, y: Tensor, z: Tensor, value: float) -> None:
    x.addcdiv_(y, z, value=value)  # addcdiv_ takes its value by keyword only


def maximum_(xs: TensorList, ys: TensorList) -> None:
    """x = max(x, y), elementwise."""
    x = _alone(xs)
    if x is not None:
        torch.maximum(x, ys[0], out=x)
    else:
        _each_(torch._foreach_maximum_, _maximum_, xs, ys)


def _maximum_(x: Tensor, y: Tensor) -> None:
    torch.maximum(x, y, out=x)  # x = max(x, y)


def abs(xs: TensorList, out: TensorList | None = None) -> TensorList:
    """|x|, as new tensors, or into ``out`` (CPU tensors) where given."""
    if out is not None:
        return [torch.abs(x, out=o) for x, o in zip(xs, out, strict=True)]
    x = _alone(xs)
    if x is not None:
        return [x.abs()]
    return _each(torch._foreach_abs, torch.abs, xs)


def sqrt(xs: TensorList, out: TensorList | None = None) -> TensorList:
    """sqrt(x), as new tensors, or into ``out`` (CPU tensors) where given."""
    if out is not None:
        return [torch.sqrt(x, out=o) for x, o in zip(xs, out, strict=True)]
    x = _alone(xs)
    if x is not None:
        return [x.sqrt()]
    return _each(torch._foreach_sqrt, torch.sqrt, xs)


def sqrt_(xs: TensorList) -> None:
    """x = sqrt(x)."""
    x = _alone(xs)
    if x is not None:
        x.sqrt_()
    else:
        _each_(torch._foreach_sqrt_, Tensor.sqrt_, xs)

"""One line of an update rule, applied to every tensor of a param group in one call.

An optimizer's ``step`` reads like the textbook rule, ``v = beta2 * v`` and so on,
because each line runs on lists: the group's values p, gradients g and states. Here,
torch's ``_foreach_*`` ops do the work; on a GPU they also fuse a list into a few
kernels.

On the CPU those ops are a C++ loop that calls the single-tensor op on each tensor,
and the loop costs up to 1 µs per call on its own. A flat group
(``nograd.optim.flat``) is a list of one tensor, so for it each function below calls
the single-tensor op directly: the same kernel, the same bits, without the loop.
GPU lists always go through ``_foreach_*``, whose fused kernels PyTorch's optimizers use too.

One line gets a kernel that PyTorch's SGD does not use for it: SGD's momentum update
b = mu * b + g, two passes in torch (``mul_``, then ``add_``), is one ``addcmul`` per
tensor on the CPU (``mul_add_``), rounded in the same two places.

Scalars: on the CPU, ``foreach_scalar`` turns a number into the 0-dim tensor these
ops take fastest (on a GPU the number itself is as fast); a list of numbers gives
each tensor its own (Adam's bias correction, where the tensors' step counts differ).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

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


def neg(xs: TensorList) -> TensorList:
    """-x, as new tensors."""
    x = _alone(xs)
    if x is not None:
        return [x.neg()]
    return torch._foreach_neg(xs)


def add(xs: TensorList, ys: TensorList, alpha: float) -> TensorList:
    """x + alpha * y, as new tensors."""
    x = _alone(xs)
    if x is not None:
        return [torch.add(x, ys[0], alpha=alpha)]
    return torch._foreach_add(xs, ys, alpha=alpha)


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
        torch._foreach_add_(xs, ys)
    else:
        torch._foreach_add_(xs, ys, alpha=alpha)


def add_scalar_(xs: TensorList, c: Tensor | float) -> None:
    """x += c, for a number c or a 0-dim c from ``foreach_scalar``."""
    x = _alone(xs)
    if x is not None:
        x.add_(c)
    elif isinstance(c, Tensor):  # alpha=1 keeps c a tensor: without it, torch reads it back
        torch._foreach_add_(xs, c, alpha=1)
    else:
        torch._foreach_add_(xs, c)


def mul_(xs: TensorList, c: Tensor | float) -> None:
    """x *= c, for a number c or a 0-dim c from ``foreach_scalar``."""
    x = _alone(xs)
    if x is not None:
        x.mul_(c)
    else:
        torch._foreach_mul_(xs, c)


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


def one_pass_mul_add(xs: TensorList) -> bool:
    """Whether ``mul_add_`` may update these tensors: float32 or float64 on the CPU.

    (On a GPU the ``_foreach_*`` kernels already batch the launches.)
    """
    return xs[0].is_cpu and all(_one_pass_mul_add_exact(x.dtype) for x in xs)


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


def div_(xs: TensorList, cs: list[float]) -> None:
    """x_i /= c_i."""
    x = _alone(xs)
    if x is not None:
        x.div_(cs[0])
    else:
        torch._foreach_div_(xs, cs)


def lerp_(xs: TensorList, ys: TensorList, weight: float) -> None:
    """x += weight * (y - x)."""
    x = _alone(xs)
    if x is not None:
        x.lerp_(ys[0], weight)
    else:
        torch._foreach_lerp_(xs, ys, weight)


def addcmul(xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> TensorList:
    """x + value * y * z, as new tensors."""
    x = _alone(xs)
    if x is not None:
        return [torch.addcmul(x, ys[0], zs[0], value=value)]
    return torch._foreach_addcmul(xs, ys, zs, value=value)


def addcmul_(xs: TensorList, ys: TensorList, zs: TensorList, value: float) -> None:
    """x += value * y * z."""
    x = _alone(xs)
    if x is not None:
        x.addcmul_(ys[0], zs[0], value=value)
    else:
        torch._foreach_addcmul_(xs, ys, zs, value=value)


def addcdiv_(xs: TensorList, ys: TensorList, zs: TensorList, value: Scalars = 1.0) -> None:
    """x += value * y / z, with one value for all or one value each."""
    x = _alone(xs)
    if x is not None:
        x.addcdiv_(ys[0], zs[0], value=value[0] if isinstance(value, list) else value)
    elif isinstance(value, list):
        torch._foreach_addcdiv_(xs, ys, zs, value)
    else:
        torch._foreach_addcdiv_(xs, ys, zs, value=value)


def maximum_(xs: TensorList, ys: TensorList) -> None:
    """x = max(x, y), elementwise."""
    x = _alone(xs)
    if x is not None:
        torch.maximum(x, ys[0], out=x)
    else:
        torch._foreach_maximum_(xs, ys)


def sqrt(xs: TensorList) -> TensorList:
    """sqrt(x), as new tensors."""
    x = _alone(xs)
    if x is not None:
        return [x.sqrt()]
    return torch._foreach_sqrt(xs)


def sqrt_(xs: TensorList) -> None:
    """x = sqrt(x)."""
    x = _alone(xs)
    if x is not None:
        x.sqrt_()
    else:
        torch._foreach_sqrt_(xs)

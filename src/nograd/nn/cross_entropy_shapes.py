"""The shapes cross-entropy takes: where the classes lie, and which NLL kernel each gets.

Like ``torch.nn.CrossEntropyLoss``, ``CrossEntropyLoss`` takes logits of three kinds of
shape, the C classes along dim 1 (along dim 0 for one sample), and ``NLLLoss`` takes
log-probabilities of the same shapes (``nograd.nn.nll_loss``):

    pred (C,)                  target ()                 loss under "none": ()
    pred (N, C)                target (N,)               loss under "none": (N,)
    pred (N, C, d1, ..., dk)   target (N, d1, ..., dk)   loss under "none": (N, d1, ..., dk)

Class indices have pred's shape without its class dim (one sample's may be (1,), as
torch's kernel takes it, but only for the loss, not its gradient); class
probabilities have pred's shape. A K-dimensional input, the pixels of a segmentation
map or the steps of a sequence, is N d1 ... dk rows of C logits each, strided along
dim 1: the loss is that of those rows, with log_softmax, sums and weights taken along
dim 1.

The NLL term goes to the kernel torch's own ``cross_entropy`` picks for the rank,
so that value and gradient are torch's bits:

- (C,) and (N, C): ``nll_loss_forward``, which takes one sample as well as rows;
- (N, C, H, W): ``nll_loss2d_forward``, the kernel made for images;
- (N, C, d1) and (N, C, d1, ..., dk) for k > 2: the same image kernel, on the
  views (N, C, 1, d1 ... dk) and (N, 1, d1 ... dk): one image of 1 x (d1 ... dk).

The backward takes the same route in reverse, through the same views. Only shapes
are looked at, never values, so nothing here waits for a GPU. The clear errors for a
target or weight that does not fit pred are here too, shared by both losses; only
they read the targets' values, once a kernel has refused them, and only on the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.losses import REDUCTION_CODES

if TYPE_CHECKING:
    from nograd.nn.cross_entropy import CrossEntropyLoss
    from nograd.nn.losses import Loss
    from nograd.nn.nll_loss import NLLLoss

    IndexLoss: TypeAlias = CrossEntropyLoss | NLLLoss  # the losses of class indices

# ATen's kernels, looked up once (torch.ops resolves names slowly). Each forward
# returns the reduced -w_{y_i} log p_{i,y_i} and the mean's denominator sum_i w_{y_i}.
_nll_loss_forward = aten.kernel(torch.ops.aten.nll_loss_forward.default)
_nll_loss_backward = aten.kernel(torch.ops.aten.nll_loss_backward.default)
_nll_loss2d_forward = aten.kernel(torch.ops.aten.nll_loss2d_forward.default)
_nll_loss2d_backward = aten.kernel(torch.ops.aten.nll_loss2d_backward.default)
_NONE = REDUCTION_CODES["none"]


def class_dim(z: Tensor) -> int:
    """The dim of z that holds the C classes: 0 for one sample (C,), else 1."""
    return 0 if z.dim() == 1 else 1


def index_shape(z: Tensor) -> tuple[int, ...]:
    """The shape of class indices for logits z: z's shape without its class dim."""
    shape = tuple(z.shape)
    dim = class_dim(z)
    return shape[:dim] + shape[dim + 1 :]


def along_classes(w: Tensor, like: Tensor) -> Tensor:
    """Class weights w of shape (C,) as a view that broadcasts along like's class dim."""
    if like.dim() == 1:
        return w
    shape = [1] * like.dim()
    shape[1] = -1  # (1, C, 1, ..., 1)
    return w.view(shape)


def rows(z: Tensor) -> int:
    """How many rows of C logits z holds: N d1 ... dk (1 for one sample, 0 if empty)."""
    return z.numel() // z.shape[class_dim(z)] if z.numel() > 0 else 0


def misfit(z: Tensor, y: Tensor, label_smoothing: float = 0.0) -> str | None:
    """What is wrong with the shapes of logits z and class indices y, or None.

    One sample (C,) takes its target as () or, as torch's kernel does, as (1,); only
    without label smoothing, which torch then refuses, and only forward: torch's
    backward refuses (1,) (see ``one_sample_target_of_shape_1``).
    """
    if z.dim() == 0:
        return f"expected pred of shape (C,), (N, C) or (N, C, d1, ..., dk), got {tuple(z.shape)}"
    expected = index_shape(z)
    if y.shape == expected or (one_sample_target_of_shape_1(z, y) and label_smoothing == 0):
        return None
    message = f"expected target of shape {expected}, got {tuple(y.shape)}"
    if z.dim() != 2:  # the usual (N, C) needs no reminder
        message += (
            f": class indices have pred's shape {tuple(z.shape)} "
            f"without its class dim {class_dim(z)}"
        )
    return message


def one_sample_target_of_shape_1(z: Tensor, y: Tensor) -> bool:
    """Whether y is one sample's class index as (1,), not (): torch's loss takes it, its
    gradient not ("size mismatch")."""
    return z.dim() == 1 and y.dim() == 1 and y.shape[0] == 1


def check_fit(loss_fn: IndexLoss, z: Tensor, y: Tensor, label_smoothing: float = 0.0) -> None:
    """Refuse class indices y that do not fit pred z, before a kernel sees their views."""
    problem = misfit(z, y, label_smoothing)
    if problem is not None:
        raise ValueError(f"{loss_fn._describe()}: {problem}")


def check_gradient_target(loss_fn: IndexLoss, z: Tensor, y: Tensor) -> None:
    """Refuse, in the backward, one sample's target of shape (1,), as torch's backward does."""
    if one_sample_target_of_shape_1(z, y):
        raise ValueError(
            f"{loss_fn._describe()}: expected target of shape () for pred of shape "
            f"{tuple(z.shape)} to take the gradient, got (1,) (torch's loss "
            f"takes it too, and its backward refuses it)"
        )


def _as_image(log_p: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """log p (N, C, d1, ..., dk) and y (N, d1, ..., dk) as the image kernel's operands.

    (N, C, 1, d1 ... dk) and (N, 1, d1 ... dk), as torch views them; an empty tensor
    becomes (N, C, 0, 0) or (N, 0, 0), since -1 cannot be inferred from 0 elements.
    """
    n, c = log_p.shape[0], log_p.shape[1]
    log_p = log_p.reshape(n, c, 1, -1) if log_p.numel() > 0 else log_p.reshape(n, c, 0, 0)
    y = y.reshape(n, 1, -1) if y.numel() > 0 else y.reshape(n, 0, 0)
    return log_p, y


def nll_forward(
    log_p: Tensor, y: Tensor, w: Tensor | None, reduction: int, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """The NLL term sum_i -w_{y_i} log p_{i,y_i}, reduced, and sum_i w_{y_i} over rows kept.

    ``reduction`` is ATen's code (0 "none", 1 "mean", 2 "sum"); targets equal to
    ``ignore_index`` count for nothing.
    """
    if log_p.dim() <= 2:  # one sample, or rows
        nll, total_weight = _nll_loss_forward(log_p, y, w, reduction, ignore_index)
    elif log_p.dim() == 4:  # images
        nll, total_weight = _nll_loss2d_forward(log_p, y, w, reduction, ignore_index)
    else:
        log_p_image, y_image = _as_image(log_p, y)
        nll, total_weight = _nll_loss2d_forward(log_p_image, y_image, w, reduction, ignore_index)
        if reduction == _NONE:
            nll = nll.view(y.shape)  # (N, 1, d1 ... dk) back to (N, d1, ..., dk)
    return nll, total_weight


def nll_backward(
    g: Tensor,
    log_p: Tensor,
    y: Tensor,
    w: Tensor | None,
    reduction: int,
    ignore_index: int,
    total_weight: Tensor,
) -> Tensor:
    """dL/dlog p of the NLL term, for its upstream gradient g = dL/dl.

    dL/dlog p_ic = -g_i w_{y_i} [c = y_i] (over sum_i w_{y_i} under "mean"), 0 in the
    rows ignored: the kernel ``nll_forward`` ran, backward, through the same views.
    """
    if log_p.dim() <= 2:
        grad: Tensor = _nll_loss_backward(g, log_p, y, w, reduction, ignore_index, total_weight)
        return grad
    if log_p.dim() == 4:
        grad = _nll_loss2d_backward(g, log_p, y, w, reduction, ignore_index, total_weight)
        return grad
    log_p_image, y_image = _as_image(log_p, y)
    if reduction == _NONE:
        g = g.reshape(y_image.shape)  # dL/dl of the kernel's (N, 1, d1 ... dk) output
    grad = _nll_loss2d_backward(g, log_p_image, y_image, w, reduction, ignore_index, total_weight)
    return grad.view(log_p.shape)


class TargetIndexError(IndexError, ValueError):
    """A class index outside [0, C) in the target of a cross-entropy or NLL loss.

    torch's kernels raise an ``IndexError`` there ("Target 5 is out of bounds."), so
    this is one, for code that catches what torch raises; it is also a ``ValueError``,
    as nograd's other refusals of bad input are.
    """


def register_class_weight(loss_fn: Loss, weight: Tensor | None) -> None:
    """Keep class weights w of shape (C,) as the buffer ``weight``, as torch does."""
    loss_fn._register_weight("weight", weight)
    if weight is not None and weight.dim() != 1:
        raise ValueError(
            f"{type(loss_fn).__name__}: expected weight of shape (C,), got {tuple(weight.shape)}"
        )


def settings(loss_fn: IndexLoss) -> str:
    """The class weights and ignore_index, where set, for ``extra_repr`` (error messages)."""
    extra = ", weight=..." if loss_fn.weight is not None else ""
    if loss_fn.ignore_index != -100:
        extra += f", ignore_index={loss_fn.ignore_index}"
    return extra


def is_index_dtype(dtype: torch.dtype) -> bool:
    """Whether a target of this dtype holds class indices: an integer dtype, not bool."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def explain_indices(
    loss_fn: IndexLoss, z: Tensor, y: Tensor, pred_is: str = "logits"
) -> Exception | None:
    """The clear error for what torch's kernels refused, or None if we see no fault.

    Shapes and dtypes first; then, on the CPU, the targets' values. (On a GPU the
    kernels assert on a target outside [0, C), as torch's do: reading the targets
    to explain it would make the CPU wait for the device.) ``pred_is`` says what
    pred holds, for the messages: logits, or log-probabilities for NLLLoss.
    """
    describe, w = loss_fn._describe(), loss_fn.weight
    if z.dim() == 0:
        return ValueError(f"{describe}: {misfit(z, y)}")
    if not z.is_floating_point():
        return TypeError(f"{describe}: expected floating pred ({pred_is}), got {z.dtype}")
    if not is_index_dtype(y.dtype):
        return TypeError(
            f"{describe}: expected target of an integer dtype (class indices), got {y.dtype}"
        )
    problem = misfit(z, y)
    if problem is not None:
        return ValueError(f"{describe}: {problem}")
    c = z.shape[class_dim(z)]
    if w is not None:
        if w.shape != (c,):
            return ValueError(
                f"{describe}: expected weight of shape ({c},) for C={c} classes, "
                f"got {tuple(w.shape)}"
            )
        if w.dtype != z.dtype:
            return loss_fn._dtype_mismatch("weight", w, z)
    if y.is_cpu and y.numel() > 0:
        kept = y[y != loss_fn.ignore_index]
        low, high = (int(kept.min()), int(kept.max())) if kept.numel() else (0, 0)
        if low < 0 or high >= c:
            return TargetIndexError(
                f"{describe}: expected target values in [0, {c}) for C={c} classes, "
                f"got values in [{low}, {high}]"
            )
    return None


def explain_probabilities(loss_fn: CrossEntropyLoss, z: Tensor, q: Tensor) -> Exception | None:
    """Why class probabilities q cannot be scored against logits z, or None."""
    describe, w = loss_fn._describe(), loss_fn.weight
    if z.dim() == 0:
        return ValueError(f"{describe}: {misfit(z, q)}")
    if q.shape != z.shape:
        return TypeError(
            f"{describe}: expected target of an integer dtype (class indices of shape "
            f"{index_shape(z)}) or class probabilities of pred's shape {tuple(z.shape)}, "
            f"got {q.dtype} of shape {tuple(q.shape)}"
        )
    if q.dtype != z.dtype:
        return TypeError(
            f"{describe}: expected class probabilities of dtype {z.dtype} (same as pred), "
            f"got {q.dtype}"
        )
    if loss_fn.ignore_index >= 0:  # torch refuses it too: no class index to ignore
        return ValueError(f"{describe}: ignore_index is not supported for class probabilities")
    c = z.shape[class_dim(z)]
    if w is not None and (w.shape != (c,) or w.dtype != z.dtype):
        return ValueError(
            f"{describe}: expected weight of shape ({c},) and dtype {z.dtype}, "
            f"got {tuple(w.shape)} and {w.dtype}"
        )
    return None

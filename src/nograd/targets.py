"""Between class indices and tensors: what the loss compares with, and what was predicted.

Datasets hold class indices y, one per sample: y of shape (N,). ``fit`` and
``evaluate`` refuse any other shape, such as (N, 1) or one-hot rows, before training,
since the accuracy compares y with the predicted classes whatever the loss's target.
``target_for(loss_fn, n_outputs, dtype)`` says how y becomes the loss's target
(one-hot rows for MSE, floats for BCE, y itself for cross-entropy), and
``predict_classes`` turns the network's outputs back into class indices, by the
decision rule that fits the loss, for the accuracy. ``ignored_class(loss_fn)`` is the
label whose samples the loss skips, and the accuracy with it (``skipped_by`` finds
them); ``class_weights`` and ``weight_of`` weigh a batch's mean loss as the loss weighs
its samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nograd.nn.binary_cross_entropy import BCELoss, BCEWithLogitsLoss
from nograd.nn.huber import HuberLoss, SmoothL1Loss
from nograd.nn.losses import L1Loss, Loss, MSELoss
from nograd.nn.module import Module

TargetTransform = Callable[[Tensor], Tensor]
# losses that regress the outputs onto one-hot rows (or onto y itself, with one output)
REGRESSION_LOSSES = (MSELoss, L1Loss, HuberLoss, SmoothL1Loss)


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Row n is e_{y_n}: 1 in column y_n, 0 elsewhere.  Shape: (N,) -> (N, num_classes).

    y holds class indices (other dtypes are read as ``y.long()`` reads them). A label
    outside 0..num_classes-1 raises, as ``torch.nn.functional.one_hot``'s does, instead
    of giving a row of zeros that a regression loss would quietly train towards: on
    the CPU a ValueError; on a GPU the scatter kernel stops the process with an assert.
    """
    index = (y if y.dtype == torch.int64 else y.long()).unsqueeze(1)  # (N, 1)
    rows = torch.zeros(y.shape[0], num_classes, dtype=dtype, device=y.device)
    try:
        return rows.scatter_(1, index, 1)  # rows[n, y_n] = 1
    except RuntimeError:  # the kernel's range check; it raises on the CPU
        raise ValueError(
            f"one_hot: expected class labels in 0..{num_classes - 1} for {num_classes} "
            f"classes, got labels in [{int(y.min())}, {int(y.max())}]"
        ) from None


def target_for(loss_fn: Loss, n_outputs: int, dtype: torch.dtype) -> TargetTransform | None:
    """How class indices become targets for ``loss_fn``; None keeps them (cross-entropy).

    MSE, L1, Huber and smooth L1 regress one-hot rows (or y itself with one output); BCE
    (on logits or on probabilities) with one output takes y as a float of shape (N, 1),
    with several outputs one-hot rows.
    """
    if not isinstance(loss_fn, (*REGRESSION_LOSSES, BCELoss, BCEWithLogitsLoss)):
        return None
    if n_outputs == 1:
        return lambda y: y.to(dtype).unsqueeze(1)
    return lambda y: one_hot(y, n_outputs, dtype)


def ignored_class(loss_fn: Module | None) -> int | None:
    """The label whose samples ``loss_fn`` skips: ``ignore_index`` of CrossEntropyLoss
    and NLLLoss (-100 by default); None for a loss without one.

    ``fit`` and ``evaluate`` leave such samples out of the accuracy and the mean loss
    too, as the loss leaves them out of its mean.
    """
    value = getattr(loss_fn, "ignore_index", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def class_weights(loss_fn: Module | None) -> Tensor | None:
    """The class weights w of CrossEntropyLoss and NLLLoss, None without them.

    Their mean is weighted, sum_i w_{y_i} l_i / sum_i w_{y_i} over the samples counted:
    ``fit`` and ``evaluate`` weigh each batch's loss by its sum_i w_{y_i}, so that
    their mean loss is torch's loss over all the data, whatever the batches.
    """
    weight = getattr(loss_fn, "weight", None) if ignored_class(loss_fn) is not None else None
    return weight if isinstance(weight, Tensor) else None


def skipped_by(target: Tensor, ignored: int) -> Tensor | None:
    """Which samples the loss skips: those whose target is the class ``ignored``.

    The targets are compared as the loss compares them, as int64: a uint8 label 156 is
    not -100, though ``uint8_tensor == -100`` says it is (-100 wraps around to 156).
    None for probability targets (floats), of which torch's loss skips none.
    """
    if target.is_floating_point():
        return None
    return (target if target.dtype == torch.int64 else target.long()) == ignored


def weight_of(target: Tensor, ignored: int | None, weight: Tensor) -> Tensor:
    """What the loss's weighted mean over a batch divides by (``class_weights``):
    sum_i w_{t_i} over the samples whose target t_i is not ``ignored``; for probability
    targets N, since torch takes their mean over the batch."""
    if target.is_floating_point():
        return weight.new_full((), target.shape[0])
    classes = target.long()
    skipped = None if ignored is None else classes == ignored
    if skipped is None:
        return weight.gather(0, classes).sum()
    classes = classes.masked_fill(skipped, 0)  # an ignored label may lie outside [0, C)
    return weight.gather(0, classes).masked_fill_(skipped, 0).sum()


def predict_classes(output: Tensor, loss_fn: Module | None = None) -> Tensor:
    """Class indices: argmax over several outputs; for one output, logit > 0 (BCE on
    logits, or no loss given) or value > 0.5 (a probability for BCELoss, or a regression
    loss on 0/1 targets)."""
    if output.dim() == 2 and output.shape[1] > 1:
        return output.argmax(1)
    threshold = 0.5 if isinstance(loss_fn, (*REGRESSION_LOSSES, BCELoss)) else 0.0
    return (output.reshape(-1) > threshold).long()

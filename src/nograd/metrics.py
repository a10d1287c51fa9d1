"""Measuring a model: ``History`` (per-epoch figures of a ``fit``) and ``evaluate``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from nograd.data import DataLoader
from nograd.data_checks import as_loader, check_data, usable_device
from nograd.nn.losses import Loss
from nograd.nn.module import Module
from nograd.targets import (
    TargetTransform,
    class_weights,
    ignored_class,
    predict_classes,
    skipped_by,
    target_for,
    weight_of,
)

Data = Any  # a dataset of (x, y) pairs (TensorDataset) or a DataLoader over one


@dataclass
class History:
    """Per-epoch figures of one ``fit``: list index e is epoch e + 1.

    ``train_*`` are running means over the epoch's batches (train mode, as the
    weights moved); ``test_*`` are measured after the epoch in eval mode and stay
    empty without test data. Accuracies are fractions in [0, 1].
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)


def evaluate(
    model: Module,
    loss_fn: Loss,
    data: Data,
    batch_size: int = 1024,
    target_transform: TargetTransform | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy (a fraction) of ``model`` on ``data``, in eval mode.

    Samples labelled with the loss's ``ignore_index`` count in neither. With class
    weights w the mean loss is the loss's weighted mean over all the data,
    sum_i w_{y_i} l_i / sum_i w_{y_i}, whatever ``batch_size``.

    The model's training/eval mode is restored afterwards, also when the forward raises.

    Raises:
        ValueError: for a loss whose reduction is not 'mean', empty data, data with
            nan or inf, or data that do not fit the model (as ``fit``).
        TypeError: for data that are not a dataset of (x, y) pairs or a DataLoader.
    """
    check_mean_loss(loss_fn, "evaluate")
    params = list(model.parameters())
    device = usable_device(params[0].device, "evaluate: the model's device") if params else None
    device = device or torch.device("cpu")
    dtype = params[0].dtype if params else torch.get_default_dtype()
    loader = as_loader(data, batch_size, False, None, "evaluate: data")
    n_outputs = check_data(model, loader, "evaluate: data", device, dtype, loss_fn)
    if target_transform is None:
        target_transform = target_for(loss_fn, n_outputs, dtype)
    return _evaluate(model, loss_fn, loader, target_transform, device, dtype)


def sum_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to sum losses over an epoch in: the model's, but float32 at least.

    A half-precision sum keeps 8 (bfloat16) or 11 (float16) bits: the epoch's mean loss
    of a bfloat16 model came out 6% off over 250 batches, and a float16 sum overflows
    to inf past 65504, about 100 000 samples of a loss near 0.7.
    """
    return torch.promote_types(dtype, torch.float32)


def check_mean_loss(loss_fn: Loss, caller: str) -> None:
    """Refuse a loss summed (or not reduced) over the batch: its figures would depend on
    the batch size, and ``fit`` weighs each batch's mean by its size."""
    if getattr(loss_fn, "reduction", "mean") != "mean":
        raise ValueError(
            f"{caller}: expected a loss with reduction='mean', got {loss_fn._describe()}"
        )


def _evaluate(
    model: Module,
    loss_fn: Loss,
    loader: DataLoader[Any],
    target_transform: TargetTransform | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    ignored = ignored_class(loss_fn)  # samples with this label count for nothing
    weight = class_weights(loss_fn)  # a batch's loss then weighs sum_i w_{y_i}, not its count
    try:
        with torch.inference_mode():  # no autograd bookkeeping: nothing here outlives the call
            loss_sum = torch.zeros((), device=device, dtype=sum_dtype(dtype))
            weight_sum = torch.zeros_like(loss_sum)  # with class weights
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = torch.zeros((), device=device, dtype=torch.long)
            pinned = loader.pin_memory and device.type == "cuda"  # copies that need not wait
            for x, y in loader:
                x = x.to(device=device, dtype=dtype, non_blocking=pinned)
                y = y.to(device, non_blocking=pinned)
                output = model(x)
                target = y if target_transform is None else target_transform(y)
                loss = loss_fn(output, target)  # the mean over the samples that count
                loss = loss.to(loss_sum.dtype)  # summed in float32 at least (``sum_dtype``)
                hits = predict_classes(output, loss_fn) == y
                if ignored is None:  # then no class weights either
                    loss_sum += loss * len(y)
                    seen += len(y)
                else:
                    skipped = skipped_by(target, ignored)  # None: probability targets
                    counts = hits.new_ones(hits.shape) if skipped is None else ~skipped
                    kept, hits = counts.sum(), hits & counts
                    # what the loss's mean divided by: its samples, or their class weights
                    weighs = kept if weight is None else weight_of(target, ignored, weight)
                    # none counts (or weighs): 0 / 0, not a loss
                    loss_sum += torch.where(weighs > 0, loss, 0.0) * weighs
                    if weight is not None:
                        weight_sum += weighs
                    seen += kept
                correct += hits.sum()
    finally:  # an error (or Ctrl-C) on the way leaves the model in the mode it came in
        model.train(was_training)
    count = int(seen)
    total = count if weight is None else float(weight_sum)  # the mean loss's denominator
    return (
        float(loss_sum) / total if total else math.nan,
        int(correct) / count if count else math.nan,
    )

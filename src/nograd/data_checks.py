"""Checks that data fit a model, made once by ``fit`` and ``evaluate`` before training.

A mistake in the data (a wrong feature count, a label the model cannot output, a
nan in the inputs) shows up deep inside the first step, or worse, as a loss that
quietly becomes nan after a while. These checks look at the data once, before
training, and name what was expected and what came in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nograd.data.datasets import TensorDataset
from nograd.data.loader import DataLoader
from nograd.nn.module import Module


def as_loader(
    data: Any,
    batch_size: int | None,
    shuffle: bool,
    generator: torch.Generator | None,
    what: str,
) -> DataLoader:
    """``data`` itself if it is a DataLoader, else a DataLoader over it (default batch 32).

    Raises:
        ValueError: for batch_size < 1, an empty dataset, or a batch_size that
            contradicts the given DataLoader's.
        TypeError: for data that is neither a dataset nor a DataLoader.
    """
    caller = what.split(":")[0]
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"{caller}: batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(data, DataLoader):
        if batch_size is not None and batch_size != data.batch_size and what == "fit: train_data":
            raise ValueError(
                f"fit: batch_size={batch_size} disagrees with the DataLoader's "
                f"batch_size={data.batch_size}; pass one or the other"
            )
        loader = data
    else:
        loader = DataLoader(_sized(data, what), batch_size or 32, shuffle, generator=generator)
    if len(loader) == 0:
        raise ValueError(f"{what} yields no batch: {loader!r}")
    return loader


def _sized(data: Any, what: str) -> Any:
    try:
        size = len(data)
    except TypeError:
        raise TypeError(
            f"{what} must be a TensorDataset or a DataLoader, got {type(data).__name__}"
        ) from None
    if size == 0:
        raise ValueError(f"{what} is empty")
    return data


def check_finite(dataset: Any, what: str) -> None:
    """Raise if a floating tensor of a TensorDataset holds nan or inf.

    One pass over the data, once; other datasets are not read ahead of training.
    """
    if not isinstance(dataset, TensorDataset):
        return
    for position, tensor in enumerate(dataset.tensors):
        if not tensor.is_floating_point():
            continue
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            count = int(bad.sum())
            sample = int(bad.reshape(len(tensor), -1).any(1).nonzero()[0, 0])
            name = {0: "x", 1: "y"}.get(position, f"tensor {position}")
            raise ValueError(
                f"{what}: expected finite values, got {count} nan or inf in {name} "
                f"(the first in sample {sample})"
            )


def check_data(
    model: Module, loader: DataLoader, what: str, device: torch.device, dtype: torch.dtype
) -> int:
    """Run one sample through the model (eval mode) and return its number of outputs.

    Catches a feature-count mismatch, labels the model cannot output, and nan or inf
    in the data up front, with both sides in the message.
    """
    check_finite(loader.dataset, what)
    x, y = loader.dataset[0]
    first = next((m for m in model.modules() if hasattr(m, "in_features")), None)
    in_features = getattr(first, "in_features", None)
    if in_features is not None and (x.dim() != 1 or x.shape[0] != in_features):
        raise ValueError(
            f"{what} has {_features(x)} per sample but the model's first layer "
            f"{first._describe()} expects {in_features} features"  # type: ignore[union-attr]
        )
    was_training = model.training
    model.eval()
    output = model(x.unsqueeze(0).to(device=device, dtype=dtype))
    model.train(was_training)
    n_outputs = int(output.shape[-1]) if output.dim() > 1 else 1
    labels = getattr(loader.dataset, "tensors", (x, y))[1]
    if not labels.is_floating_point() and labels.numel() > 0:
        n_classes = max(n_outputs, 2)  # one output separates two classes
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= n_classes:
            raise ValueError(
                f"{what} has class labels in [{low}, {high}] but the model has "
                f"{n_outputs} output(s), which fit classes 0..{n_classes - 1}"
            )
    return n_outputs


def _features(x: Tensor) -> str:
    return f"{x.shape[0]} features" if x.dim() == 1 else f"shape {tuple(x.shape)}"

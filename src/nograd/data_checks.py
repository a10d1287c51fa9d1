"""Checks that data fit a model, made once by ``fit`` and ``evaluate`` before training.

A mistake in the data (a wrong container, a wrong feature count, labels of the wrong
shape or that the model cannot output, a nan in the inputs) shows up deep inside the
first step, or worse, as a loss that quietly becomes nan after a while. These checks
look at the data once, before training, and name what was expected and what came in.
``usable_device`` checks, as cheaply, that the device to train on can hold data.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from nograd.data.collate import default_collate
from nograd.data.iterable import is_iterable_dataset
from nograd.data.loader import DataLoader
from nograd.data.split import tensors_of
from nograd.nn import hooks
from nograd.nn.module import Module
from nograd.targets import TargetTransform, ignored_class, skipped_by


def as_loader(
    data: Any,
    batch_size: int | None,
    shuffle: bool,
    generator: torch.Generator | None,
    what: str,
) -> DataLoader[Any]:
    """``data`` itself if it is a DataLoader, else a DataLoader over it (default batch 32;
    an IterableDataset's in the order of its stream, whatever ``shuffle`` says).

    Raises:
        ValueError: for batch_size < 1, an empty dataset, a DataLoader without
            batching, or a batch_size that contradicts the given DataLoader's.
        TypeError: for data that is neither a dataset nor a DataLoader.
    """
    caller = what.split(":")[0]
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"{caller}: batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(data, DataLoader) and data.batch_sampler is None:
        raise ValueError(
            f"{what} is a DataLoader without batching (batch_size=None), which yields "
            f"single samples; {caller} needs batches: give the DataLoader a batch_size"
        )
    if isinstance(data, DataLoader):
        if batch_size is not None and batch_size != data.batch_size and what == "fit: train_data":
            raise ValueError(
                f"fit: batch_size={batch_size} disagrees with the DataLoader's "
                f"batch_size={data.batch_size}; pass one or the other"
            )
        loader = data
    elif is_iterable_dataset(data):  # a stream keeps its own order: nothing to shuffle
        loader = DataLoader(data, batch_size or 32)
    else:
        loader = DataLoader(_sized(data, what), batch_size or 32, shuffle, generator=generator)
    if batches_per_epoch(loader) == 0:
        raise ValueError(f"{what} yields no batch: {loader!r}")
    return loader


def batches_per_epoch(loader: DataLoader[Any]) -> int | None:
    """``len(loader)``, or None for a stream that does not say how long it is."""
    try:
        return len(loader)
    except TypeError:  # an IterableDataset without __len__
        return None


def _sized(data: Any, what: str) -> Any:
    try:
        size = len(data)
    except TypeError:
        raise TypeError(
            f"{what} must be a TensorDataset or a DataLoader, got {type(data).__name__}"
        ) from None
    if not hasattr(data, "__getitem__"):  # torch's DataLoader, a set: iterable, not indexable
        kind = type(data).__name__
        if type(data).__module__.startswith("torch.utils.data"):
            kind = f"a torch.utils.data.{kind}; pass its .dataset instead"
        raise TypeError(
            f"{what} must be a dataset (with __len__ and __getitem__, such as TensorDataset) "
            f"or a nograd.data.DataLoader, got {kind}"
        )
    if size == 0:
        raise ValueError(f"{what} is empty")
    return data


def first_pair(dataset: Any, what: str) -> tuple[Tensor, Tensor]:
    """The first sample as tensors (x, y): y a 0-dimensional tensor, a number made one.

    The global random state is put back after the read: a dataset that draws random
    numbers in ``__getitem__`` (noise, augmentation) then draws in training what it
    draws in a torch loop, which never reads a sample ahead.

    Raises:
        TypeError: for items that are not pairs of a tensor and a tensor or number.
        ValueError: for items of another number of elements than 2.
    """
    state = torch.get_rng_state()
    if is_iterable_dataset(dataset):  # a stream's first sample, from an iterator of its own
        item = next(iter(dataset), None)
        if item is None:
            torch.set_rng_state(state)
            raise ValueError(f"{what} is empty: its stream yields no sample")
    else:
        item = dataset[0]
    torch.set_rng_state(state)
    if not isinstance(item, (tuple, list)):
        raise TypeError(
            f"{what} must yield (x, y) pairs, got items of type {type(item).__name__}; "
            f"wrap tensors as TensorDataset(x, y)"
        )
    if len(item) != 2:
        elements = "element" if len(item) == 1 else "elements"
        raise ValueError(f"{what} must yield (x, y) pairs, got items of {len(item)} {elements}")
    x, y = item
    if not isinstance(x, Tensor):
        raise TypeError(f"{what}: expected each x to be a tensor, got {type(x).__name__}")
    if isinstance(y, numbers.Real):  # a Python or numpy number, which the collation takes
        y = torch.as_tensor(y)
    if not isinstance(y, Tensor):
        raise TypeError(
            f"{what}: expected each y to be a class index (a number or a tensor), "
            f"got {type(y).__name__}"
        )
    return x, y


def check_labels_shape(tensors: tuple[Tensor, ...] | None, y: Tensor, what: str) -> None:
    """Refuse labels y that are not one class index per sample: y of shape (N,).

    The loss's target is made from them (``nograd.targets``), and the accuracy compares
    them with the predicted classes, whatever the ``target_transform``. ``tensors`` are
    the dataset's (``tensors_of``), if it has any: the message then names y's shape.
    """
    if y.dim() == 0:
        return
    got = (
        f"y of shape {tuple(tensors[1].shape)}"
        if tensors
        else f"samples whose y has shape {tuple(y.shape)}"
    )
    hint = ""
    if y.shape == (1,):
        hint = "; squeeze it to (N,) with y.squeeze(1)"
    elif y.dim() == 1:
        hint = "; for one-hot rows pass y.argmax(1)"
    raise ValueError(
        f"{what}: expected y of shape (N,), one class index per sample (the loss's target is "
        f"made from it), got {got}{hint}"
    )


def usable_device(device: torch.device | str, where: str) -> torch.device:
    """``device`` as a torch.device, once a tensor was made and changed there.

    Raises:
        ValueError: for a device torch does not know, one this machine lacks, or meta
            (shapes without data), each named after ``where``.
    """
    try:
        place = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{where}: unknown device {str(device)!r}") from None
    if place.type == "meta":
        raise ValueError(
            f"{where}: meta is not a device to compute on (its tensors have shapes but no "
            f"data); use cpu or cuda"
        )
    if place.type != "cpu":  # the CPU is always there
        try:
            torch.ones(1, device=place).add_(1)
        except Exception:  # torch raises RuntimeError or AssertionError, by backend
            raise ValueError(f"{where}: {place} is not available on this machine") from None
    return place


def check_finite(tensors: tuple[Tensor, ...] | None, what: str) -> None:
    """Raise if a floating tensor of the dataset's (``tensors_of``) holds nan or inf.

    One pass over the data, once; datasets without tensors are not read ahead of
    training.
    """
    if tensors is None:
        return
    for position, tensor in enumerate(tensors):
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
    model: Module,
    loader: DataLoader[Any],
    what: str,
    device: torch.device,
    dtype: torch.dtype,
    loss_fn: Module | None = None,
) -> int:
    """Run the first sample through the model (eval mode, as a batch of two copies);
    return the model's number of outputs.

    Catches a feature-count mismatch, labels the model cannot output, and nan or inf
    in the data up front, with both sides in the message. The model's mode is restored
    afterwards, also when its forward raises.
    """
    x, y = first_pair(loader.dataset, what)
    tensors = tensors_of(loader.dataset)  # None: a dataset read sample by sample
    check_labels_shape(tensors, y, what)
    check_finite(tensors, what)
    was_training = model.training
    model.eval()
    # Two copies of the sample, not one: a BatchNorm1d without running statistics
    # normalises over the batch in eval mode too, and refuses a batch of one, as torch's
    probe = torch.stack((x, x)).to(device=device, dtype=dtype)
    try:
        with hooks.suspended():  # the user's hooks see the training, not this probe
            output = model(probe)
    except (ValueError, TypeError, RuntimeError):
        # Only now, once the model refused the data, is the sample's layout compared
        # with the first Linear's: a model may flatten or reshape its input first
        _check_features(model, x, what)
        raise
    finally:
        model.train(was_training)
    n_outputs = int(output.shape[-1]) if output.dim() > 1 else 1
    labels = (tensors or (x, y))[1]
    ignored = ignored_class(loss_fn)
    skipped = None if ignored is None else skipped_by(labels, ignored)
    if skipped is not None:  # those samples are skipped
        labels = labels[~skipped]
        if labels.numel() == 0 and tensors is not None:
            raise ValueError(
                f"{what}: every label equals {type(loss_fn).__name__}'s ignore_index "
                f"({ignored}), so no sample counts"
            )
    if not labels.is_floating_point() and labels.numel() > 0:
        n_classes = max(n_outputs, 2)  # one output separates two classes
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= n_classes:
            raise ValueError(
                f"{what} has class labels in [{low}, {high}] but the model has "
                f"{n_outputs} output(s), which fit classes 0..{n_classes - 1}"
            )
    return n_outputs


def may_hold_ignored(
    loader: DataLoader[Any], loss_fn: Module, target_transform: TargetTransform | None
) -> int | None:
    """The loss's ignored label if some sample's target may carry it, else None.

    For a ``TensorDataset`` batched by the default collation, with the labels as the
    loss's targets, that is known up front (one pass over its labels). Any other dataset
    is read batch by batch, and a ``collate_fn`` or ``target_transform`` of the user's
    may change the labels (one that marks some as ignored), so it may.
    """
    ignored = ignored_class(loss_fn)
    if ignored is None or target_transform is not None:
        return ignored
    tensors = tensors_of(loader.dataset) if loader.collate_fn is default_collate else None
    if tensors is not None and len(tensors) == 2:
        skipped = skipped_by(tensors[1], ignored)
        if skipped is None or not bool(skipped.any()):
            return None
    return ignored


def _check_features(model: Module, x: Tensor, what: str) -> None:
    """Raise a ValueError naming both sizes if a sample's last dimension is not what
    the model's first Linear takes (Linear maps (*, in_features)); else nothing."""
    first = next((m for m in model.modules() if hasattr(m, "in_features")), None)
    in_features = getattr(first, "in_features", None)
    if in_features is not None and (x.dim() == 0 or x.shape[-1] != in_features):
        raise ValueError(
            f"{what} has {_features(x)} per sample but the model's first layer "
            f"{first._describe()} expects {in_features} features"  # type: ignore[union-attr]
        ) from None


def _features(x: Tensor) -> str:
    return f"{x.shape[0]} features" if x.dim() == 1 else f"shape {tuple(x.shape)}"

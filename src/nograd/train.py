"""The training loop: ``fit`` runs epochs of mini-batch descent, ``evaluate`` measures.

One step is the whole of backpropagation in five lines::

    optimizer.zero_grad()
    output = model(x)                        # forward: every layer saves what it needs
    loss = loss_fn(output, target)
    model.backward(loss_fn.backward())       # dL/d(output), then the chain rule in reverse
    optimizer.step()                         # theta -= lr * (a function of dL/dtheta)

Datasets hold class indices y; ``nograd.targets`` turns them into what the loss
compares with, and the outputs back into class indices for the accuracy.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from nograd.data import DataLoader
from nograd.nn.losses import Loss
from nograd.nn.module import Module
from nograd.optim import Optimizer
from nograd.optim.lr_scheduler import LRScheduler
from nograd.targets import TargetTransform, predict_classes, target_for

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


def fit(
    model: Module,
    loss_fn: Loss,
    optimizer: Optimizer,
    train_data: Data,
    test_data: Data | None = None,
    *,
    epochs: int,
    batch_size: int | None = None,
    scheduler: LRScheduler | None = None,
    scheduler_interval: Literal["epoch", "step"] = "epoch",
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "fit",
    device: torch.device | str | None = None,
    target_transform: TargetTransform | None = None,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``train_data``; return the History.

    Args:
        model: the network; trained in place (and moved to ``device`` if given).
        loss_fn: a nograd loss, called as ``loss_fn(output, target)``.
        optimizer: built over ``model.parameters()``.
        train_data: a TensorDataset of (x, y) or a DataLoader over one.
        test_data: measured after every epoch when given.
        epochs: number of passes over the training data (>= 1).
        batch_size: mini-batch size for a dataset (default 32); a DataLoader keeps its own.
        scheduler: an lr scheduler, stepped once per epoch or per batch.
        scheduler_interval: ``"epoch"`` or ``"step"``.
        shuffle: reshuffle the dataset every epoch (ignored for a DataLoader).
        generator: draws the shuffling order, for repeatable runs.
        progress: show a tqdm bar over epochs; False prints nothing.
        desc: the bar's label.
        device: where to train; default: where the model's parameters are.
        target_transform: class indices -> loss targets; default ``target_for(loss_fn)``.

    Raises:
        ValueError: for epochs or batch_size < 1, an empty dataset, or data whose
            feature count or classes do not fit the model.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive integer, got {epochs!r}")
    if getattr(loss_fn, "reduction", "mean") != "mean":
        raise ValueError(f"fit: expected a loss with reduction='mean', got {loss_fn._describe()}")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(
            f"fit: scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
        )
    params = list(model.parameters())
    if device is not None:
        model.to(torch.device(device))
    device = params[0].device if params else torch.device(device or "cpu")
    dtype = params[0].dtype if params else torch.get_default_dtype()
    train_loader = _loader(train_data, batch_size, shuffle, generator, "fit: train_data")
    test_loader = (
        None if test_data is None else _loader(test_data, batch_size, False, None, "fit: test_data")
    )
    n_outputs = _check_data(model, train_loader, "fit: train_data", device, dtype)
    if test_loader is not None:
        _check_data(model, test_loader, "fit: test_data", device, dtype)
    if target_transform is None:
        target_transform = target_for(loss_fn, n_outputs, dtype)

    history = History()
    previous_needs_input_grad = model.needs_input_grad
    model.needs_input_grad = False  # nobody wants dL/dx of the data: skip the first layer's
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False, unit="epoch")
    try:
        for _ in bar:
            start = time.perf_counter()
            history.lr.append(_current_lr(optimizer))
            model.train()
            loss_sum = torch.zeros((), device=device, dtype=dtype)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for x, y in train_loader:
                x, y = x.to(device=device, dtype=dtype), y.to(device)
                target = y if target_transform is None else target_transform(y)
                optimizer.zero_grad()
                output = model(x)  # each layer saves what its backward needs
                loss = loss_fn(output, target)
                model.backward(loss_fn.backward())  # dL/d(output), then the chain rule
                optimizer.step()
                if scheduler is not None and scheduler_interval == "step":
                    scheduler.step()
                n = len(y)
                loss_sum.add_(loss, alpha=n)  # kept as tensors: no device sync per step
                correct.add_((predict_classes(output, loss_fn) == y).sum())
                seen += n
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()
            history.train_loss.append(float(loss_sum) / seen)
            history.train_acc.append(int(correct) / seen)
            postfix = {
                "loss": f"{history.train_loss[-1]:.4f}",
                "acc": f"{history.train_acc[-1]:.3f}",
            }
            if test_loader is not None:
                test_loss, test_acc = _evaluate(
                    model, loss_fn, test_loader, target_transform, device, dtype
                )
                history.test_loss.append(test_loss)
                history.test_acc.append(test_acc)
                postfix["test_acc"] = f"{test_acc:.3f}"
            history.seconds.append(time.perf_counter() - start)
            bar.set_postfix(postfix, refresh=False)
    finally:
        bar.close()
        model.needs_input_grad = previous_needs_input_grad
    return history


def evaluate(
    model: Module,
    loss_fn: Loss,
    data: Data,
    batch_size: int = 1024,
    target_transform: TargetTransform | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy (a fraction) of ``model`` on ``data``, in eval mode.

    The model's training/eval mode is restored afterwards.
    """
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.get_default_dtype()
    loader = _loader(data, batch_size, False, None, "evaluate: data")
    n_outputs = _check_data(model, loader, "evaluate: data", device, dtype)
    if target_transform is None:
        target_transform = target_for(loss_fn, n_outputs, dtype)
    return _evaluate(model, loss_fn, loader, target_transform, device, dtype)


def _evaluate(
    model: Module,
    loss_fn: Loss,
    loader: DataLoader,
    target_transform: TargetTransform | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=dtype)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in loader:
        x, y = x.to(device=device, dtype=dtype), y.to(device)
        output = model(x)
        target = y if target_transform is None else target_transform(y)
        loss_sum += loss_fn(output, target) * len(y)
        correct += (predict_classes(output, loss_fn) == y).sum()
        seen += len(y)
    model.train(was_training)
    return float(loss_sum) / seen, int(correct) / seen


def _loader(
    data: Data, batch_size: int | None, shuffle: bool, generator: torch.Generator | None, what: str
) -> DataLoader:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        caller = what.split(":")[0]
        raise ValueError(f"{caller}: batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(data, DataLoader):
        if batch_size is not None and batch_size != data.batch_size and what == "fit: train_data":
            raise ValueError(
                f"fit: batch_size={batch_size} disagrees with the DataLoader's "
                f"batch_size={data.batch_size}; pass one or the other"
            )
        return data
    try:
        size = len(data)
    except TypeError:
        raise TypeError(
            f"{what} must be a TensorDataset or a DataLoader, got {type(data).__name__}"
        ) from None
    if size == 0:
        raise ValueError(f"{what} is empty")
    return DataLoader(data, batch_size=batch_size or 32, shuffle=shuffle, generator=generator)


def _check_data(
    model: Module, loader: DataLoader, what: str, device: torch.device, dtype: torch.dtype
) -> int:
    """Run one sample through the model (eval mode) and return its number of outputs.

    Catches a feature-count mismatch up front, with both sizes in the message.
    """
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


def _current_lr(optimizer: Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])

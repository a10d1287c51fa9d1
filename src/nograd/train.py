"""The training loop: ``fit`` runs epochs of mini-batch descent, and keeps its promises.

One step is the whole of backpropagation in five lines::

    optimizer.zero_grad()
    output = model(x)                        # forward: every layer saves what it needs
    loss = loss_fn(output, target)
    model.backward(loss_fn.backward())       # dL/d(output), then the chain rule in reverse
    optimizer.step()                         # theta -= lr * (a function of dL/dtheta)

``nograd.loop`` runs it, one epoch at a time. Datasets hold class indices y;
``nograd.targets`` turns them into what the loss compares with, and the outputs back
into class indices for the accuracy. A sample labelled with the loss's ``ignore_index``
counts in neither the epoch's loss nor its accuracy, as it counts in no loss; with
class weights w, each batch's loss weighs sum_i w_{y_i}, as the loss's mean weighs it,
so that the epoch's loss is torch's weighted mean over the epoch's samples.

Around the step, ``fit`` keeps three promises (docs/reliability.md): a loss of nan or
inf stops training at once with ``DivergenceError`` (``nograd.guards``); checkpoints
(``nograd.checkpoint``) are written whole or not at all, and never after divergence;
and a run resumed from one ends bit-identical to a run that never stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from nograd import io
from nograd.checkpoint import CheckpointWriter, Progress, restore_rng
from nograd.data_checks import as_loader, check_data, may_hold_ignored, usable_device
from nograd.guards import DeferredLossWatch, DivergenceError, TrainingInterrupted
from nograd.loop import EpochLoop
from nograd.metrics import Data, History, check_mean_loss, evaluate
from nograd.nn.losses import Loss
from nograd.nn.module import Module
from nograd.nn.utils.clip_grad import check_max_norm
from nograd.optim import Optimizer
from nograd.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from nograd.resume import load_progress, restore_last
from nograd.targets import TargetTransform, class_weights, target_for

__all__ = ["DivergenceError", "History", "TrainingInterrupted", "evaluate", "fit"]


def fit(
    model: Module,
    loss_fn: Loss,
    optimizer: Optimizer,
    train_data: Data,
    test_data: Data | None = None,
    *,
    epochs: int,
    batch_size: int | None = None,
    test_batch_size: int = 1024,
    scheduler: LRScheduler | None = None,
    scheduler_interval: Literal["epoch", "step"] = "epoch",
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "fit",
    device: torch.device | str | None = None,
    target_transform: TargetTransform | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    checkpoint_metadata: dict[str, Any] | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    cuda_graph: bool = False,
    clip_grad_norm: float | None = None,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``train_data``; return the History.

    Args:
        model: the network; trained in place (and moved to ``device`` if given).
        loss_fn: a nograd loss, called as ``loss_fn(output, target)``.
        optimizer: built over ``model.parameters()``. One whose ``step`` needs a
            closure (``LBFGS``) is given the step's lines as one.
        train_data: a dataset of (x, y) pairs, y a class index (such as
            TensorDataset(x, y), y of shape (N,)), an ``IterableDataset`` that
            yields such pairs (read in its own order, with or without a length), or a
            DataLoader over either (with worker processes, pinned batches, ...).
        test_data: measured after every epoch when given.
        epochs: number of passes over the training data (>= 1), in all: a resumed
            run trains the epochs that remain.
        batch_size: mini-batch size for a dataset (default 32); a DataLoader keeps its own.
        test_batch_size: batch size for measuring a ``test_data`` dataset (default
            1024, as ``evaluate``, whose figures the last epoch's then equal to the bit);
            a DataLoader keeps its own. Accuracy does not depend on it, the mean loss
            only in its last bits, and large batches are quicker: measuring in batches
            of 32 took a quarter of ``nograd train``'s time. Lower it if 1024 inputs at
            once do not fit in memory.
        scheduler: an lr scheduler, stepped once per epoch or per batch; a
            ReduceLROnPlateau is stepped once per epoch with the test loss, so it
            needs ``test_data``.
        scheduler_interval: ``"epoch"`` or ``"step"``.
        shuffle: reshuffle the dataset every epoch (ignored for a DataLoader and an
            IterableDataset, which keep their own order).
        generator: draws the shuffling order, for repeatable runs (ignored for a
            DataLoader, which has its own).
        progress: show a tqdm bar over epochs; False prints nothing.
        desc: the bar's label.
        device: where to train; default: where the model's parameters are.
        target_transform: class indices -> loss targets; default ``target_for(loss_fn)``.
        checkpoint_path: write a training checkpoint (``nograd.checkpoint``) here every
            ``checkpoint_every`` epochs and after the last, atomically; Ctrl-C then
            saves one between two steps and raises ``TrainingInterrupted``.
        checkpoint_every: epochs between two checkpoints (>= 1).
        checkpoint_metadata: JSON-able values stored in every checkpoint.
        resume_from: a checkpoint written by ``fit`` for this same model, optimizer,
            scheduler and data; training goes on exactly where it stopped.
        cuda_graph: replay each training step as one CUDA graph
            (``nograd.cuda_graph.GraphedTrainStep``): needs a CUDA device and SGD, Adam
            or AdamW; every batch must have the first batch's shape, so the last,
            partial batch of each epoch is dropped. A per-step scheduler makes it
            capture the graph again at every step: schedule per epoch.
        clip_grad_norm: before each update, scale the gradients of the optimizer's
            parameters, taken as one vector in the model's order, to this norm at most
            (the bits of ``clip_grad_norm_(model.parameters(), ...)`` in a torch loop,
            whatever the order of the param groups); None: no clipping.

    Raises:
        ValueError: for epochs, batch_size, test_batch_size or checkpoint_every < 1, a
            clip_grad_norm that is not a positive number, a
            ReduceLROnPlateau without test_data or stepped per batch, a
            loss whose reduction is not 'mean', a device that cannot compute here, an
            empty dataset, data with nan or inf, labels y not of shape (N,), data whose
            feature count or classes do not fit the model, or a checkpoint that does
            not fit the run.
        TypeError: for data that are not a dataset of (x, y) pairs or a DataLoader.
        DivergenceError: (a RuntimeError) when the loss becomes nan or inf, or an
            update holds a number the parameters' dtype cannot (an lr or weight decay
            far too large), naming the epoch and step; no checkpoint is written after that.
        TrainingInterrupted: (a KeyboardInterrupt) on Ctrl-C, naming the checkpoint.
    """
    _check_options(loss_fn, scheduler, scheduler_interval, test_data, clip_grad_norm,
                   epochs=epochs, test_batch_size=test_batch_size,
                   checkpoint_every=checkpoint_every)  # fmt: skip
    # checked before the model moves there: a failed move would leave it half moved
    move_to = None if device is None else usable_device(device, "fit: device")
    device = move_to or usable_device(_device_of(model), "fit: the model's device")
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"fit: cuda_graph=True needs a CUDA device, got {device}")
    params = list(model.parameters())
    if move_to is not None:
        model.to(move_to)
    device = params[0].device if params else device
    dtype = params[0].dtype if params else torch.get_default_dtype()
    train_loader = as_loader(train_data, batch_size, shuffle, generator, "fit: train_data")
    test_loader = (
        None
        if test_data is None
        else as_loader(test_data, test_batch_size, False, None, "fit: test_data")
    )
    batch_size = train_loader.batch_size  # None: a batch sampler's batches
    n_train = len(train_loader.dataset) if hasattr(train_loader.dataset, "__len__") else None
    if cuda_graph and batch_size is not None and n_train is not None and n_train < batch_size:
        raise ValueError(
            f"fit: cuda_graph=True drops partial batches, and the {n_train} "
            f"training samples make none of batch_size={batch_size}"
        )
    n_outputs = check_data(model, train_loader, "fit: train_data", device, dtype, loss_fn)
    if test_loader is not None:
        check_data(model, test_loader, "fit: test_data", device, dtype, loss_fn)
    ignored = may_hold_ignored(train_loader, loss_fn, target_transform)  # None: all count
    if target_transform is None:
        target_transform = target_for(loss_fn, n_outputs, dtype)

    loop = EpochLoop(model, loss_fn, optimizer, scheduler, scheduler_interval, train_loader,
                 test_loader, target_transform, device, dtype, epochs)  # fmt: skip
    loop.cuda_graph, loop.clip_grad_norm = cuda_graph, clip_grad_norm
    loop.ignored = ignored
    loop.weight = class_weights(loss_fn)  # None: every counted sample weighs 1
    if checkpoint_path is not None:
        loop.writer = CheckpointWriter(checkpoint_path, model, scheduler, checkpoint_metadata)
        io.pack_optimizer(model, optimizer)  # refused now, not after an epoch of training
        loop.every = checkpoint_every
    resumed = None if resume_from is None else _resume(loop, Path(resume_from))
    loop.watch.checkpoint = loop.last_good
    loop.guard.enabled = checkpoint_path is not None

    start = 0 if resumed is None else resumed.epoch
    previous_needs_input_grad = model.needs_input_grad
    model.needs_input_grad = False  # nobody wants dL/dx of the data: skip its g W product
    bar = tqdm(range(start, epochs), desc=desc, disable=not progress, leave=False, unit="epoch",
               initial=start, total=epochs)  # fmt: skip
    try:
        # No autograd bookkeeping in any op (nograd needs none): about 10% of a small step
        with loop.guard, torch.inference_mode():
            for epoch in bar:
                loop.run_epoch(epoch, resumed if epoch == start and resumed else None)
                bar.set_postfix(loop.postfix(), refresh=False)
        if loop.guard.requested:  # Ctrl-C after the last check: the checkpoint is current
            raise TrainingInterrupted(loop.last_good, saved_now=True)
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, TrainingInterrupted):
            raise
        raise TrainingInterrupted(loop.last_good, saved_now=False) from None
    except DivergenceError:
        if isinstance(loop.watch, DeferredLossWatch) and loop.last_good is not None:
            _leave_inference_mode(model, optimizer)  # restore_last copies into their state
            restore_last(loop.last_good, model, optimizer, device)  # the steps after it ran on
        raise
    finally:
        bar.close()
        model.needs_input_grad = previous_needs_input_grad
        _leave_inference_mode(model, optimizer)
    return loop.history


def _check_options(
    loss_fn: Loss,
    scheduler: LRScheduler | None,
    scheduler_interval: str,
    test_data: Data | None,
    clip_grad_norm: float | None,
    **counts: object,
) -> None:
    """``fit``'s checks of its options that need no data and no device (see its Raises);
    ``counts``: the options that must be positive integers, by name."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit: {name} must be a positive integer, got {value!r}")
    check_max_norm(clip_grad_norm, "fit: clip_grad_norm")
    check_mean_loss(loss_fn, "fit")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(
            f"fit: scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
        )
    if isinstance(scheduler, ReduceLROnPlateau) and (
        test_data is None or scheduler_interval != "epoch"
    ):
        raise ValueError(
            "fit: ReduceLROnPlateau steps on the test loss once per epoch; pass test_data "
            "and scheduler_interval='epoch'"
        )


def _resume(loop: EpochLoop, checkpoint: Path) -> Progress:
    """Load ``checkpoint`` into the loop's model, optimizer, scheduler and generators, and
    its history into the loop; the progress it holds (epoch, step, running sums)."""
    resumed = load_progress(
        checkpoint, loop.model, loop.optimizer, loop.scheduler, loop.named, loop.device
    )
    if resumed.epoch > loop.epochs or (resumed.epoch == loop.epochs and resumed.step > 0):
        raise ValueError(f"fit: {checkpoint} is past epoch {resumed.epoch}, epochs={loop.epochs}")
    loop.history = History(**resumed.history)
    loop.last_good = checkpoint
    if resumed.step == 0:  # at an epoch's start: the generators as they were then
        restore_rng(resumed.rng, loop.named, loop.device)
    return resumed


def _leave_inference_mode(model: Module, optimizer: Optimizer) -> None:
    """Make the tensors that training made and that outlive ``fit`` normal tensors.

    Under ``torch.inference_mode`` every tensor an op creates is an inference tensor,
    which torch refuses to update in place outside that mode. Two kinds outlive
    ``fit``: the gradients (a later ``backward`` adds into them) and optimizer state
    made at the first step (a later ``step`` updates it). Their clones are normal.
    """
    for param in model.parameters():
        if param.grad is not None and param.grad.is_inference():
            param.grad = param.grad.clone()
    for state in optimizer.state.values():
        for key, value in state.items():  # a list: LBFGS's history of vectors
            state[key] = [_normal(v) for v in value] if isinstance(value, list) else _normal(value)


def _normal(value: Any) -> Any:
    """A normal clone of an inference tensor; anything else as it is."""
    is_inference = isinstance(value, torch.Tensor) and value.is_inference()
    return value.clone() if is_inference else value


def _device_of(model: Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))

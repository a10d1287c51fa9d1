"""Training checkpoints: everything a run needs to go on exactly where it stopped.

A training checkpoint is a nograd checkpoint (``nograd.io``: the model, the optimizer's
state and the caller's metadata, so ``nograd.load`` and ``nograd evaluate`` read it)
with a training section added::

    tensors   training.rng.<name>        generator states (uint8), now:
                  torch                    torch's global generator (initialisation, dropout)
                  cuda                     the accelerator's, when training there
                  shuffle                  the DataLoader's own generator, if it shuffles
                  sampler, batch_sampler   a sampler's own generator (DataLoader.generators)
                  test.<name>              the same for the test data's DataLoader
                  module.<dotted name>     a module's own generator (Dropout(generator=...))
              training.rng_epoch.<name>  the same at the start of an unfinished epoch
              training.loss_sum, training.correct   that epoch's running sums
    metadata  training                   JSON: epoch, step, seen, history, scheduler

Resuming (``fit(resume_from=...)``) copies the saved values into the model's own
tensors, so the optimizer's references stay valid; restores the optimizer's state, the
scheduler's, the History and every generator; and replays an unfinished epoch from its
start: the same shuffle is drawn again and the finished steps are skipped. The run then
ends bit-identical to one that never stopped. ``nograd.resume`` reads the file back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nograd import io
from nograd.nn.module import Module
from nograd.optim import Optimizer
from nograd.optim.lr_scheduler import LRScheduler
from nograd.safefile import atomic_write, check_folder, encode

HISTORY_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")


@dataclass
class Progress:
    """Where a run stands, besides its model and optimizer.

    ``epoch`` epochs are finished, and ``step`` steps (``seen`` samples) of the next
    one; ``step`` is 0 at an epoch boundary. ``rng`` holds the generators' states now,
    ``rng_epoch`` their states when the unfinished epoch began (only when step > 0).
    """

    epoch: int = 0
    step: int = 0
    seen: int = 0
    loss_sum: Tensor = field(default_factory=lambda: torch.zeros(()))
    correct: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))
    history: dict[str, list[float]] = field(default_factory=dict)
    rng: dict[str, Tensor] = field(default_factory=dict)
    rng_epoch: dict[str, Tensor] = field(default_factory=dict)


# ------------------------------------------------------------------ generators
def generators(model: Module, loader: dict[str, torch.Generator]) -> dict[str, torch.Generator]:
    """Every generator a run draws from, besides torch's global ones, by name: the
    loader's (``DataLoader.generators``) and each module's."""
    named = dict(loader)
    for name, module in model.named_modules():
        generator = getattr(module, "generator", None)
        if isinstance(generator, torch.Generator):
            named[f"module.{name}"] = generator
    return named


def capture_rng(named: dict[str, torch.Generator], device: torch.device) -> dict[str, Tensor]:
    """The state of torch's global generator(s) and of every named one."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    for name, generator in named.items():
        states[name] = generator.get_state()
    return states


def restore_rng(
    states: dict[str, Tensor], named: dict[str, torch.Generator], device: torch.device
) -> None:
    """Put back what ``capture_rng`` took (its keys were checked on loading)."""
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)
    for name, generator in named.items():
        generator.set_state(states[name])


# --------------------------------------------------------------------- writing
class CheckpointWriter:
    """Writes one run's training checkpoints to ``path``, each atomically.

    The model is checked against the allow-list once, here, so each ``write`` costs
    little more than copying the tensors: well under a millisecond for a small model.

    Raises:
        TypeError: for a model outside the allow-list, metadata JSON cannot hold, or a
            scheduler whose state JSON cannot hold.
        ValueError: if the folder of ``path`` does not exist, or ``path`` is a folder.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        model: Module,
        scheduler: LRScheduler | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        check_folder(self.path, "fit: checkpoint_path")
        self.header = io.model_header(model)
        if metadata is not None:
            self.header["metadata"] = io.metadata_json(metadata)
        _scheduler_state(scheduler)  # refuse now, not after the first epoch
        self.written = False

    def write(
        self,
        model: Module,
        optimizer: Optimizer,
        scheduler: LRScheduler | None,
        progress: Progress,
    ) -> None:
        tensors = {f"model.{key}": tensor for key, tensor in model.state_dict().items()}
        header = dict(self.header)
        optimizer_tensors, header["optimizer"] = io.pack_optimizer(model, optimizer)
        tensors.update(optimizer_tensors)
        for section, states in (("rng", progress.rng), ("rng_epoch", progress.rng_epoch)):
            for name, state in states.items():
                tensors[f"{io.TRAINING_PREFIX}{section}.{name}"] = state
        tensors[f"{io.TRAINING_PREFIX}loss_sum"] = progress.loss_sum
        tensors[f"{io.TRAINING_PREFIX}correct"] = progress.correct
        training = {
            "epoch": progress.epoch,
            "step": progress.step,
            "seen": progress.seen,
            "history": progress.history,
            "scheduler": _scheduler_state(scheduler),
        }
        header["training"] = json.dumps(training)
        atomic_write(self.path, encode(tensors, header))
        self.written = True


def _scheduler_state(scheduler: LRScheduler | None) -> dict[str, Any] | None:
    if scheduler is None:
        return None
    state = scheduler.state_dict()
    try:
        json.dumps(state)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"fit: cannot checkpoint {type(scheduler).__name__}: its state_dict is not "
            f"JSON-serialisable ({error})"
        ) from None
    return {"class": type(scheduler).__name__, "state": state}

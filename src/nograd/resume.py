"""Reading checkpoints back: a training run's state, and the experiment's.

``load_progress`` restores a model, an optimizer and a scheduler from a training
checkpoint (``nograd.checkpoint``) and returns the rest of the run's state;
``read_resume`` reads what ``nograd train`` stored beside it (the config, the round,
the finished rounds). Neither trusts the file: ``nograd.io`` checks the tensors and
the architecture (nothing in the file is ever executed, and the model can only be
built from an allow-list, with bounded sizes), and every number of the training
section and of the config is type- and range-checked before it is used. All checks
come first: a refused file changes nothing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, NamedTuple

import torch
from torch import Tensor

from nograd import io
from nograd.architecture import architecture
from nograd.checkpoint import HISTORY_KEYS, Progress
from nograd.config import TrainConfig, config_from_dict
from nograd.nn.module import Module
from nograd.optim import Optimizer
from nograd.optim.lr_scheduler import LRScheduler

TRAINING_KEYS = {"epoch", "step", "seen", "history", "scheduler"}
MAX_COUNT = 10**12  # epochs, steps, samples: anything larger is a forged file
MAX_RNG_BYTES = 2**20  # a CPU generator's state is 5056 bytes, a CUDA one's 16
RECORD_KEYS = {
    "round", "seed", "input_mean", "input_std", "train_loss", "train_acc", "test_loss",
    "test_acc", "seconds", "history",
}  # fmt: skip


def load_progress(
    path: str | os.PathLike[str],
    model: Module,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    named: dict[str, torch.Generator],
    device: torch.device,
) -> Progress:
    """Restore ``model``, ``optimizer`` and ``scheduler`` from ``path``; return the rest.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: for anything but an intact training checkpoint of this very model,
            optimizer type, scheduler type and set of generators, naming what differs.
    """
    where = f"resume: {os.fspath(path)}"
    contents = io._read(path, device, where)
    if "training" not in contents.header:
        raise ValueError(
            f"{where}: holds a model but no training state; resume from the "
            f"checkpoint.safetensors that training writes"
        )
    training = io._from_json(contents.header, "training", where)
    if not isinstance(training, dict) or set(training) != TRAINING_KEYS:
        raise ValueError(f"{where}: malformed training metadata")
    progress = Progress(
        epoch=_count(training["epoch"], "epoch", where),
        step=_count(training["step"], "step", where),
        seen=_count(training["seen"], "seen", where),
        history=check_history(training["history"], where),
    )
    tensors = contents.training
    for name in ("loss_sum", "correct"):
        if name not in tensors or tensors[name].dim() != 0:
            raise ValueError(f"{where}: the running sum {name!r} is missing or not a scalar")
    progress.loss_sum = tensors["loss_sum"].to(device)
    progress.correct = tensors["correct"].to(device)
    progress.rng = _states(tensors, "rng", named, where)
    if progress.step > 0:
        progress.rng_epoch = _states(tensors, "rng_epoch", named, where)
    _check_scheduler(scheduler, training["scheduler"], where)
    # Every check passed: only now does anything of the caller's change.
    restore_model_and_optimizer(contents, model, optimizer, where)
    if scheduler is not None:
        _restore_scheduler(scheduler, training["scheduler"]["state"], where)
    return progress


def restore_last(
    path: str | os.PathLike[str], model: Module, optimizer: Optimizer, device: torch.device
) -> None:
    """Put the parameters and optimizer state of the checkpoint at ``path`` back."""
    where = f"fit: {os.fspath(path)}"
    restore_model_and_optimizer(io._read(path, device, where), model, optimizer, where)


def restore_model_and_optimizer(
    contents: io._Contents, model: Module, optimizer: Optimizer, where: str
) -> None:
    """Copy the saved values into ``model``'s tensors and load the optimizer's state."""
    saved_arch = json.loads(contents.header["architecture"])
    if saved_arch != architecture(model):
        raise ValueError(
            f"{where}: holds a different model: {_summary(saved_arch)}, "
            f"not {_summary(architecture(model))}"
        )
    for key, tensor in contents.model.state_dict().items():
        own = model.state_dict()[key]
        if own.dtype != tensor.dtype:
            raise ValueError(f"{where}: holds {key} as {tensor.dtype}, the model has {own.dtype}")
    if contents.optimizer_state is None or contents.optimizer_class != type(optimizer).__name__:
        raise ValueError(
            f"{where}: holds the state of optimizer {contents.optimizer_class}, "
            f"this run has {type(optimizer).__name__}"
        )
    key_of = {id(param): key for key, param in model.named_parameters()}
    keys = [key_of.get(id(p)) for group in optimizer.param_groups for p in group["params"]]
    if keys != contents.param_keys:
        raise ValueError(
            f"{where}: the optimizer's parameters {keys} are not the saved ones "
            f"{contents.param_keys}"
        )
    io.check_options(contents.optimizer_state["param_groups"], optimizer, where)
    model.load_state_dict(contents.model.state_dict())  # in place: the optimizer keeps its refs
    optimizer.load_state_dict(contents.optimizer_state)


def _count(value: Any, name: str, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{where}: expected {name} to be an integer in [0, {MAX_COUNT}]")
    return value


def check_history(value: Any, where: str) -> dict[str, list[float]]:
    ok = isinstance(value, dict) and set(value) == set(HISTORY_KEYS)
    ok = ok and all(
        isinstance(v, list) and all(type(x) in (int, float) for x in v) for v in value.values()
    )
    if not ok:
        raise ValueError(f"{where}: malformed history (expected lists of numbers {HISTORY_KEYS})")
    return {key: [float(x) for x in value[key]] for key in HISTORY_KEYS}


def _check_scheduler(scheduler: LRScheduler | None, saved: Any, where: str) -> None:
    ours = None if scheduler is None else type(scheduler).__name__
    theirs = saved.get("class") if isinstance(saved, dict) else None
    if ours != theirs or (saved is not None and not isinstance(saved.get("state"), dict)):
        raise ValueError(f"{where}: holds the state of scheduler {theirs}, this run has {ours}")
    # load_state_dict takes any values: forged ones would fail steps later
    if scheduler is not None and not io.same_kinds(scheduler.state_dict(), saved["state"]):
        raise ValueError(
            f"{where}: malformed scheduler state (its entries are not those, or not of the "
            f"kinds, of a {ours}'s)"
        )


def _restore_scheduler(scheduler: LRScheduler, saved: dict[str, Any], where: str) -> None:
    try:
        scheduler.load_state_dict(_as_before_json(scheduler.state_dict(), saved))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{where}: malformed scheduler state ({error})") from None


def _as_before_json(live: Any, saved: Any) -> Any:
    """``saved`` with the types of ``live`` (the scheduler's own state) back, nested too.

    JSON turned tuples into lists and a Counter's integer keys into strings; a
    composite scheduler holds the states of its parts in a list of dicts.
    """
    if isinstance(live, Counter):
        return Counter({int(k): v for k, v in saved.items()})
    if isinstance(live, tuple):
        return tuple(saved)
    if isinstance(live, dict) and isinstance(saved, dict):
        return {k: _as_before_json(live[k], v) if k in live else v for k, v in saved.items()}
    if isinstance(live, list) and isinstance(saved, list) and len(live) == len(saved):
        return [_as_before_json(a, b) for a, b in zip(live, saved, strict=True)]
    return saved


def _states(
    tensors: dict[str, Tensor], section: str, named: dict[str, torch.Generator], where: str
) -> dict[str, Tensor]:
    prefix = f"{section}."
    states = {k.removeprefix(prefix): t for k, t in tensors.items() if k.startswith(prefix)}
    live = {"torch": torch.get_rng_state(), **{n: g.get_state() for n, g in named.items()}}
    if set(live) - set(states) or set(states) - set(live) - {"cuda"}:  # cuda: optional
        raise ValueError(
            f"{where}: holds generator states {sorted(states)}, this run draws from {sorted(live)}"
        )
    for name, state in states.items():
        size = live[name].numel() if name in live else state.numel()
        if state.dtype != torch.uint8 or state.shape != (size,) or size > MAX_RNG_BYTES:
            raise ValueError(
                f"{where}: expected generator state {name!r} to be a uint8 tensor of shape "
                f"({size},), got {state.dtype} of shape {tuple(state.shape)}"
            )
    return states


def _summary(arch: Any) -> str:
    """One line: ``Linear(2, 25), GELU, Linear(25, 2)``, cut at 200 characters."""

    def show(node: Any) -> str:
        if node.get("type") == "Sequential":
            return ", ".join(show(child) for child in node["children"])
        args = ", ".join(str(v) for v in node.get("args", {}).values())
        return f"{node['type']}({args})" if args else str(node["type"])

    text = show(arch)
    return text if len(text) <= 200 else text[:197] + "..."


class Resume(NamedTuple):
    """What a checkpoint of ``run_rounds`` says about the run it was written in."""

    config: TrainConfig
    round: int  # the round it was written in
    records: list[dict[str, Any]]  # of the rounds before


def read_resume(path: str | os.PathLike[str]) -> Resume:
    """The config, round and finished records stored in a ``run_rounds`` checkpoint.

    Every value is checked (types, ranges, the network's size) before it is used.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: for a file that is not such a checkpoint, naming what is wrong.
    """
    where = f"resume: {os.fspath(path)}"
    _, _, metadata = io.load_checkpoint(path)
    state = metadata.get("experiment")
    if not isinstance(state, dict) or set(state) != {"config", "round", "records"}:
        raise ValueError(f"{where}: not a checkpoint of nograd train (no experiment state)")
    config = config_from_dict(state["config"], where)
    index, records = state["round"], state["records"]
    if type(index) is not int or not 0 <= index < config.rounds:
        raise ValueError(f"{where}: expected a round in [0, {config.rounds}), got {index!r}")
    if not isinstance(records, list) or len(records) != index:
        raise ValueError(f"{where}: expected the records of {index} finished rounds")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or set(record) != RECORD_KEYS or record["round"] != i:
            raise ValueError(f"{where}: malformed record of round {i}")
        for key in ("train_acc", "test_acc", "seconds"):
            if type(record[key]) not in (int, float):
                raise ValueError(f"{where}: round {i}: expected a number for {key}")
        check_history(record["history"], f"{where}: round {i}")
    return Resume(config, index, records)

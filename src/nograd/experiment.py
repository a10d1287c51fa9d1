"""The reference experiment: what ``nograd train`` trains, and how it is measured.

The disk task (1000 train and 1000 test points, fresh each round), the 2-25-25-25-2
network and the defaults in ``PRESETS["default"]``, for 10 rounds, each with fresh
data and a fresh initialisation seeded by ``1000 * seed + round``. ``TrainConfig``
(``nograd.config``) names every choice; ``build_model``, ``build_loss`` and
``build_optimizer`` turn it into objects; ``train_round`` runs one round through
``nograd.train.fit``, and ``run_rounds`` runs them all and writes metrics.json, the
figures and the last model.

Every round writes ``checkpoint.safetensors`` into the output folder (a training
checkpoint, ``nograd.checkpoint``, whose metadata also holds the config, the round and
the finished rounds' records), so ``run_rounds(..., resume_from=path)`` continues an
interrupted run: the unfinished round, then the remaining ones, ending with the
metrics.json an uninterrupted run writes, timings aside.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from nograd import io
from nograd.config import (
    LOSSES,
    SEED_STRIDE,
    TASKS,
    TrainConfig,
    build_loss,
    build_model,
    build_optimizer,
)
from nograd.data import TensorDataset
from nograd.guards import DivergenceError
from nograd.nn import Linear, Sequential
from nograd.nn.losses import Loss
from nograd.nn.matmul import get_cpu_matmul
from nograd.optim.lr_scheduler import CosineAnnealingLR
from nograd.resume import read_resume
from nograd.targets import predict_classes
from nograd.train import History, evaluate, fit

__all__ = [
    "CHECKPOINT_FILE", "MODEL_FILE", "Round", "run_rounds", "saved_model_accuracy", "train_round",
]  # fmt: skip
CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_FILE = "model.safetensors"


def _scaled(
    data: TensorDataset, mean: torch.Tensor, std: torch.Tensor, device: torch.device
) -> TensorDataset:
    """(x - mean) / std and the labels, on the training device.

    Moved once here, not batch by batch in ``fit``: a batch already on the device costs
    no copy, and on a GPU a copy from pageable CPU memory would stall the host at every
    step. The values are the same bits either way (the same float32s, copied).
    """
    x, y = data.tensors
    return TensorDataset(((x - mean) / std).to(device), y.to(device))


def _fold_standardization(model: Sequential, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make model(x) equal the trained model((x - mean) / std).

    W ((x - m) / s) + b = (W / s) x + (b - (W / s) m), with s dividing W's columns.
    """
    first = model[0]
    assert isinstance(first, Linear) and first.bias is not None
    weight = first.weight.data
    weight /= std.to(weight)  # W' = W / s
    first.bias.data -= weight @ mean.to(weight)  # b' = b - W' m


@dataclass
class Round:
    """One round's outcome; ``record`` goes to metrics.json."""

    record: dict[str, Any]
    history: History
    model: Sequential
    loss_fn: Loss
    test_data: TensorDataset


def train_round(
    config: TrainConfig,
    index: int,
    progress: bool,
    checkpoint: Path | None = None,
    checkpoint_every: int = 1,
    state: dict[str, Any] | None = None,
    resume_from: Path | None = None,
) -> Round:
    """Fresh data and weights from seed 1000 * seed + index; fit; measure the final model.

    With ``checkpoint``, ``fit`` writes a training checkpoint there every
    ``checkpoint_every`` epochs, with ``state`` (the run's config, round and finished
    records) in its metadata; ``resume_from`` continues the round from such a file.
    """
    round_seed = SEED_STRIDE * config.seed + index
    generator = torch.Generator().manual_seed(round_seed)
    train_data = TASKS[config.task](config.n_train, generator=generator)
    test_data = TASKS[config.task](config.n_test, generator=generator)
    torch.manual_seed(round_seed)  # the initial weights (and any dropout masks)
    device = torch.device(config.device)
    model = build_model(config)
    model.to(device)
    loss_fn = build_loss(config)
    optimizer = build_optimizer(config, model)
    cosine = config.schedule == "cosine"
    scheduler = CosineAnnealingLR(optimizer, T_max=config.epochs) if cosine else None
    x_train = train_data.tensors[0]
    if config.standardize:  # (x - mean) / std; the CLI asks for 2 points at least
        mean, std = x_train.mean(0), x_train.std(0)
    else:  # the identity
        mean, std = torch.zeros_like(x_train[0]), torch.ones_like(x_train[0])
    metadata = {"task": config.task, "loss": config.loss, "experiment": state}
    start = time.perf_counter()
    history = fit(
        model, loss_fn, optimizer, _scaled(train_data, mean, std, device),
        _scaled(test_data, mean, std, device),
        epochs=config.epochs, batch_size=config.batch_size, scheduler=scheduler,
        generator=generator, progress=progress, desc=f"round {index + 1}/{config.rounds}",
        checkpoint_path=checkpoint, checkpoint_every=checkpoint_every,
        checkpoint_metadata=metadata if checkpoint else None, resume_from=resume_from,
        cuda_graph=config.cuda_graph, clip_grad_norm=config.clip_grad_norm,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    _fold_standardization(model, mean, std)  # the saved model takes raw inputs
    train_loss, train_acc = evaluate(model, loss_fn, train_data)
    test_loss, test_acc = evaluate(model, loss_fn, test_data)
    record = {
        "round": index, "seed": round_seed, "input_mean": mean.tolist(), "input_std": std.tolist(),
        "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
        "test_acc": test_acc, "seconds": seconds, "history": history.to_dict(),
    }  # fmt: skip
    return Round(record, history, model, loss_fn, test_data)


def run_rounds(
    config: TrainConfig,
    out: Path,
    quiet: bool = False,
    checkpoint_every: int = 1,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Train ``config.rounds`` fresh models on fresh data; write every file into ``out``.

    ``out/checkpoint.safetensors`` is rewritten every ``checkpoint_every`` epochs;
    ``resume_from`` (such a file, written with this same ``config``) skips the rounds it
    records as finished and continues the one it was written in.
    """
    from nograd import plots  # matplotlib loads only when figures are drawn

    say = (lambda *_: None) if quiet else print
    records: list[dict[str, Any]] = []
    if resume_from is not None:
        resume = read_resume(resume_from)
        if resume.config != config:
            raise ValueError(f"resume: {resume_from} was written by another config")
        records = resume.records
    say(f"{'round':>5}  {'train error':>11}  {'test error':>10}  {'seconds':>7}")
    for r in records:
        _say_round(say, r)
    checkpoint = out / CHECKPOINT_FILE
    first = len(records)
    for index in range(first, config.rounds):
        state = {"config": asdict(config), "round": index, "records": records}
        resume_this = resume_from if index == first else None
        try:
            last = train_round(
                config, index, not quiet, checkpoint, checkpoint_every, state, resume_this
            )
        except DivergenceError as error:  # say which round, when there are several
            if config.rounds > 1:
                error.args = (f"round {index + 1} of {config.rounds}: {error}",)
            raise
        records = [*records, last.record]
        _say_round(say, last.record)

    summary = {
        f"{split}_{kind}_pct": _mean_std(
            [100 * (r[f"{split}_acc"] if kind == "acc" else 1 - r[f"{split}_acc"]) for r in records]
        )
        for split in ("train", "test")
        for kind in ("acc", "error")
    }
    for key, label in [("train_error_pct", "train error"), ("test_error_pct", "test error"),
                       ("test_acc_pct", "test accuracy")]:  # fmt: skip
        say(f"{label:>15}: {summary[key]['mean']:.2f}% ± {summary[key]['std']:.2f}")

    io.save(last.model, out / MODEL_FILE, metadata={"task": config.task, "loss": config.loss})
    metrics = {
        "config": asdict(config),
        "std": "sample standard deviation over rounds (n - 1 in the denominator)",
        "accuracy": "fractions in [0, 1] per round and per epoch; *_pct in percent",
        "saved_model": {"file": MODEL_FILE, "round": config.rounds - 1, "which": "last"},
        "threads": torch.get_num_threads(),  # the bits of a CPU run depend on it
        "cpu_matmul": get_cpu_matmul(),  # and on who computes its products
        "summary": summary,
        "rounds": records,
    }
    # the figures last: a failure to draw them (memory, a font) loses no figure of the run
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    histories = [History(**r["history"]) for r in records]
    plots.plot_curves(histories, "loss", out / "loss.png")
    plots.plot_curves(histories, "acc", out / "accuracy.png")
    classify = partial(predict_classes, loss_fn=last.loss_fn)
    plots.plot_boundary(last.model, last.test_data, out / "boundary.png", classify=classify)
    say(
        f"wrote {out}/: metrics.json, loss.png, accuracy.png, boundary.png, {MODEL_FILE}, "
        f"{CHECKPOINT_FILE}"
    )
    return metrics


def _say_round(say: Any, r: dict[str, Any]) -> None:
    train_error, test_error = 100 * (1 - r["train_acc"]), 100 * (1 - r["test_acc"])
    say(f"{r['round'] + 1:>5}  {train_error:>10.2f}%  {test_error:>9.2f}%  {r['seconds']:>7.1f}")


def _mean_std(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0}


def saved_model_accuracy(path: Path, task: str | None, n: int, seed: int) -> tuple[float, str]:
    """Accuracy (a fraction) of the model saved at ``path`` on ``n`` fresh points, and
    the task they were drawn from: ``task``, or (None) the one named in the file's
    metadata, as ``nograd train`` writes it, else "disk".

    The points are drawn with ``seed``; the loss named in the checkpoint's metadata
    picks the decision rule (argmax, logit > 0, or value > 0.5).

    Raises:
        ValueError: for a file that is not a nograd model, or whose metadata names a
            task or a loss that nograd does not know.
    """
    model, _, metadata = io.load_checkpoint(path, map_location="cpu")
    task = task or _known(metadata.get("task", "disk"), TASKS, "task", path)
    loss = _known(metadata.get("loss", "ce"), LOSSES, "loss", path)
    x, y = TASKS[task](n, generator=torch.Generator().manual_seed(seed)).tensors
    dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
    loss_fn = build_loss(TrainConfig(loss=loss))  # the decision rule
    # in batches, as nograd train measured its rounds: the same figures, in bounded memory
    _, accuracy = evaluate(model, loss_fn, TensorDataset(x.to(dtype), y))
    return accuracy, task


def _known(name: Any, known: Collection[str], what: str, path: Path) -> str:
    if not isinstance(name, str) or name not in known:
        raise ValueError(
            f"{path}: its metadata names the {what} {name!r}, not one of {sorted(known)}"
        )
    return name

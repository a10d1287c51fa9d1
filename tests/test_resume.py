"""Exact resume: a run stopped anywhere and resumed ends bit-identical to one that never stopped.

Every test trains the same run twice: once straight through, once stopped (at an
epoch boundary, by a deferred Ctrl-C between two steps, or by a KeyboardInterrupt
raised from inside a step) and resumed from its checkpoint by fresh objects. The
parameters, the optimizer's state, the scheduler's and the History must be equal to
the bit (History's timings aside).
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors
import torch

import nograd.experiment
from nograd.cli import main
from nograd.data import DataLoader, TensorDataset, WeightedRandomSampler, disk
from nograd.nn import Linear, Module, Sequential, matmul
from nograd.nn.activations import GELU
from nograd.nn.batch_norm import BatchNorm1d
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.dropout import Dropout
from nograd.optim import (
    LBFGS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    Optimizer,
    RAdam,
    RMSprop,
)
from nograd.optim.lr_scheduler import CosineAnnealingLR
from nograd.resume import read_resume
from nograd.safefile import encode
from nograd.train import History, TrainingInterrupted, fit
from tests.streams import BatchedStream, SizedBatchedStream

EPOCHS = 5
OPTIMIZERS: dict[str, Callable[[Module], Optimizer]] = {
    "sgd_nesterov": lambda m: SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda m: Adam(m.parameters(), lr=0.01),
    "adamw": lambda m: AdamW(m.parameters(), lr=0.01),
    "rmsprop": lambda m: RMSprop(m.parameters(), lr=0.005, momentum=0.5),
    "adagrad": lambda m: Adagrad(m.parameters(), lr=0.05, lr_decay=0.01),
    "nadam": lambda m: NAdam(m.parameters(), lr=0.01),
    "radam": lambda m: RAdam(m.parameters(), lr=0.01),
    "adamax": lambda m: Adamax(m.parameters(), lr=0.01),
    "adadelta": lambda m: Adadelta(m.parameters(), weight_decay=0.01),
    "lbfgs": lambda m: LBFGS(  # a history of lists of vectors, stored item by item
        m.parameters(), lr=0.5, max_iter=3, history_size=4, line_search_fn="strong_wolfe"
    ),
}
in_main_thread = threading.current_thread() is threading.main_thread()


class Run:
    """One seeded run: data, a model with batch norm and dropout, an optimizer, a scheduler."""

    def __init__(self, optimizer: str = "adam", interval: str = "epoch", loader: str = "none"):
        generator = torch.Generator().manual_seed(7)
        self.train, self.test = disk(90, generator=generator), disk(40, generator=generator)
        torch.manual_seed(11)
        self.model = Sequential(
            Linear(2, 12), BatchNorm1d(12), GELU(), Dropout(0.2), Linear(12, 2)
        )  # running statistics too must resume where they were
        self.optimizer = OPTIMIZERS[optimizer](self.model)
        steps = EPOCHS * 6 if interval == "step" else EPOCHS
        self.scheduler = CosineAnnealingLR(self.optimizer, T_max=steps)
        self.interval, self.generator = interval, generator
        self.loss_fn = CrossEntropyLoss()
        self.data: Any = self.train
        if loader == "shuffle":  # a DataLoader that draws its shuffle from the global generator
            self.data = DataLoader(self.train, batch_size=16, shuffle=True)
        elif loader == "sampler":  # one whose sampler draws from a generator of its own
            weights = self.train.tensors[1].double() + 0.5  # class 1 three times as often
            sampler = WeightedRandomSampler(weights, 90, generator=torch.Generator().manual_seed(9))
            self.data = DataLoader(self.train, batch_size=16, sampler=sampler)
        elif loader == "workers":  # shuffled, read by two worker processes
            self.data = DataLoader(self.train, batch_size=16, shuffle=True, num_workers=2)
        elif loader == "stream":  # a stream of known length, read by two workers
            self.data = DataLoader(SizedBatchedStream(self.train, 16), batch_size=16, num_workers=2)
        elif loader == "unsized_stream":  # a stream with no length, batched by fit
            self.data = BatchedStream(self.train, 16)

    def fit(self, **options: Any) -> History:
        return fit(
            self.model, self.loss_fn, self.optimizer, self.data, self.test,
            epochs=options.pop("epochs", EPOCHS),
            batch_size=None if isinstance(self.data, DataLoader) else 16,
            scheduler=self.scheduler, scheduler_interval=self.interval,  # type: ignore[arg-type]
            generator=self.generator, progress=False, **options,
        )  # fmt: skip


def assert_same(a: Run, b: Run, history_a: History, history_b: History) -> None:
    state_of_b = b.model.state_dict()
    for name, tensor in a.model.state_dict().items():  # parameters and buffers
        assert torch.equal(tensor, state_of_b[name]), name
    state_a, state_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for index, entry in state_a["state"].items():
        for key, value in entry.items():
            assert_same_value(value, state_b["state"][index][key], (index, key))
    assert a.scheduler.state_dict() == b.scheduler.state_dict()
    da, db = history_a.to_dict(), history_b.to_dict()
    del da["seconds"], db["seconds"]
    assert da == db


def assert_same_value(value: Any, other: Any, where: Any) -> None:
    """Equal numbers or tensors, or lists of them item by item (LBFGS's history)."""
    if isinstance(value, list) or value is None:
        assert type(other) is type(value), where
        for a, b in zip(value or [], other, strict=True):
            assert_same_value(a, b, where)
    else:
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), where


def step_hook(monkeypatch: pytest.MonkeyPatch, optimizer: Optimizer, at: int, action: Any) -> None:
    """Run ``action`` just before the ``at``-th call of ``optimizer.step``."""
    original, calls = optimizer.step, [0]

    def step(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            action()
        return original(*args)

    monkeypatch.setattr(optimizer, "step", step)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_resume_at_an_epoch_boundary_is_exact(
    tmp_path: Path, optimizer: str, interval: str
) -> None:
    straight = Run(optimizer, interval)
    history = straight.fit()

    first = Run(optimizer, interval)
    first.fit(epochs=2, checkpoint_path=tmp_path / "c.safetensors")  # as if killed after epoch 2
    resumed = Run(optimizer, interval)
    torch.manual_seed(12345)  # whatever the global generator holds now is overwritten
    history_resumed = resumed.fit(resume_from=tmp_path / "c.safetensors")
    assert len(history_resumed.train_loss) == EPOCHS
    assert_same(straight, resumed, history, history_resumed)


@pytest.mark.skipif(not in_main_thread, reason="signal handlers live in the main thread")
@pytest.mark.parametrize("at_step", [1, 9, 12, 17])  # first step; mid-epoch; epoch ends (6 steps)
@pytest.mark.parametrize(
    "loader", ["none", "shuffle", "sampler", "workers", "stream", "unsized_stream"]
)
def test_a_deferred_ctrl_c_saves_between_two_steps_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at_step: int, loader: str
) -> None:
    straight = Run(loader=loader)
    history = straight.fit()

    path = tmp_path / "c.safetensors"
    stopped = Run(loader=loader)
    step_hook(monkeypatch, stopped.optimizer, at_step, lambda: signal.raise_signal(signal.SIGINT))
    with pytest.raises(TrainingInterrupted) as info:
        stopped.fit(checkpoint_path=path, checkpoint_every=100)
    assert info.value.checkpoint == path and info.value.saved_now
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back

    resumed = Run(loader=loader)
    history_resumed = resumed.fit(resume_from=path, checkpoint_path=path)
    assert_same(straight, resumed, history, history_resumed)


class Records:
    """The samples of a dataset one by one: a dataset fit cannot read ahead."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        return self.data[index]


@pytest.mark.skipif(not in_main_thread, reason="signal handlers live in the main thread")
@pytest.mark.parametrize("at_step", [2, 3, 9])  # before and after the ignored batch; epoch 2
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("generic", [False, True])
def test_a_run_with_ignored_labels_resumes_exactly_from_a_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at_step: int, weighted: bool, generic: bool
) -> None:
    """The epoch's counted samples (Progress.seen) and, with class weights, the sum of
    their weights (not in the checkpoint: summed again over the replayed batches)
    resume where they stopped; the second batch holds ignored samples only."""

    def run() -> Run:
        run = Run("sgd_nesterov")
        x, y = run.train.tensors
        y = y.masked_fill(torch.arange(90) % 3 == 0, -100)
        y[16:32] = -100
        run.data = TensorDataset(x, y)
        run.data = Records(run.data) if generic else run.data
        weight = torch.tensor([0.5, 2.0]) if weighted else None
        run.loss_fn = CrossEntropyLoss(weight=weight)
        return run

    straight = run()
    history = straight.fit(shuffle=False)
    path = tmp_path / "c.safetensors"
    stopped = run()
    step_hook(monkeypatch, stopped.optimizer, at_step, lambda: signal.raise_signal(signal.SIGINT))
    with pytest.raises(TrainingInterrupted):
        stopped.fit(shuffle=False, checkpoint_path=path, checkpoint_every=100)
    resumed = run()
    history_resumed = resumed.fit(shuffle=False, resume_from=path)
    assert_same(straight, resumed, history, history_resumed)


def test_a_keyboard_interrupt_from_inside_a_step_falls_back_to_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = Run("sgd_nesterov")
    history = straight.fit()

    path = tmp_path / "c.safetensors"
    stopped = Run("sgd_nesterov")

    def interrupt() -> None:
        raise KeyboardInterrupt  # mid-step: this state cannot be trusted, so it is not saved

    step_hook(monkeypatch, stopped.optimizer, 6 * 3 + 2, interrupt)  # in epoch 4
    with pytest.raises(TrainingInterrupted) as info:
        stopped.fit(checkpoint_path=path, checkpoint_every=2)
    assert info.value.checkpoint == path and not info.value.saved_now

    resumed = Run("sgd_nesterov")
    history_resumed = resumed.fit(resume_from=path)  # from the end of epoch 2
    assert_same(straight, resumed, history, history_resumed)


def test_an_interrupt_before_any_checkpoint_names_none(monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run()

    def interrupt() -> None:
        raise KeyboardInterrupt

    step_hook(monkeypatch, run.optimizer, 2, interrupt)
    with pytest.raises(TrainingInterrupted) as info:
        run.fit()
    assert info.value.checkpoint is None


def test_resuming_a_finished_run_trains_nothing_and_a_shorter_one_is_refused(
    tmp_path: Path,
) -> None:
    done = Run()
    history = done.fit(checkpoint_path=tmp_path / "c.safetensors")
    again = Run()
    assert again.fit(resume_from=tmp_path / "c.safetensors").train_loss == history.train_loss
    with pytest.raises(ValueError, match="is past epoch 5, epochs=3"):
        Run().fit(resume_from=tmp_path / "c.safetensors", epochs=3)


def test_resume_with_other_generators_is_refused(tmp_path: Path) -> None:
    Run().fit(epochs=1, checkpoint_path=tmp_path / "c.safetensors")
    other = Run()
    with pytest.raises(ValueError, match="this run draws from"):
        fit(other.model, CrossEntropyLoss(), other.optimizer, other.train, epochs=3,
            scheduler=other.scheduler, shuffle=False, progress=False,
            resume_from=tmp_path / "c.safetensors")  # fmt: skip


# ------------------------------------------------------------ the experiment
SHORT = ["--epochs", "4", "--rounds", "3", "--n-train", "60", "--n-test", "40", "--quiet"]


def metrics_without_timings(out: Path) -> dict[str, Any]:
    metrics = json.loads((out / "metrics.json").read_text())
    for record in metrics["rounds"]:
        del record["seconds"], record["history"]["seconds"]
    return metrics


@pytest.mark.skipif(not in_main_thread, reason="signal handlers live in the main thread")
@pytest.mark.parametrize("how", ["ctrl_c", "raised"])
def test_nograd_train_resume_writes_the_metrics_of_an_uninterrupted_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    assert main(["train", *SHORT, "--preset", "seed", "--out", str(tmp_path / "straight")]) == 0

    def stop() -> None:
        if how == "ctrl_c":
            signal.raise_signal(signal.SIGINT)
        else:
            raise KeyboardInterrupt

    original, calls = SGD.step, [0]

    def step(self: SGD, *args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 6 * 4 + 6 * 2 + 3:  # round 2, epoch 3, step 3 (6 batches of 10)
            stop()
        return original(self, *args)

    monkeypatch.setattr(SGD, "step", step)
    out = tmp_path / "stopped"
    capsys.readouterr()
    argv = ["train", *SHORT, "--preset", "seed", "--out", str(out), "--checkpoint-every", "2"]
    assert main(argv) == 130
    checkpoint = out / "checkpoint.safetensors"
    assert capsys.readouterr().err == (
        f"interrupted: checkpoint saved to {checkpoint} "
        f"(resume with: nograd train --resume {checkpoint})\n"
    )
    monkeypatch.undo()
    assert main(["train", "--resume", str(checkpoint), "--quiet"]) == 0
    assert metrics_without_timings(out) == metrics_without_timings(tmp_path / "straight")


@pytest.mark.skipif(not in_main_thread, reason="signal handlers live in the main thread")
@pytest.mark.parametrize("how", ["ctrl_c", "raised"])
def test_nograd_train_resume_of_an_lbfgs_run_writes_the_metrics_of_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """L-BFGS over the whole training set: one step, many closure calls, per epoch; its
    history of vectors, the cosine's lr and the clipping resume to the bit."""
    options = [*SHORT, "--optimizer", "lbfgs", "--clip-grad-norm", "2"]
    assert main(["train", *options, "--out", str(tmp_path / "straight")]) == 0

    original, calls = LBFGS.step, [0]

    def step(self: LBFGS, *args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 4 + 3:  # round 2, epoch 3 (one step an epoch)
            if how == "ctrl_c":
                signal.raise_signal(signal.SIGINT)  # saved after this step
            else:
                raise KeyboardInterrupt  # back to the checkpoint of epoch 2
        return original(self, *args)

    monkeypatch.setattr(LBFGS, "step", step)
    out = tmp_path / "stopped"
    assert main(["train", *options, "--out", str(out), "--checkpoint-every", "2"]) == 130
    monkeypatch.undo()
    assert main(["train", "--resume", str(out / "checkpoint.safetensors"), "--quiet"]) == 0
    assert metrics_without_timings(out) == metrics_without_timings(tmp_path / "straight")
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.safetensors")]) == 0
    assert capsys.readouterr().out.startswith(f"{out / 'model.safetensors'}: accuracy ")


def test_resume_refuses_other_options_and_model_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *SHORT, "--rounds", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    checkpoint = tmp_path / "checkpoint.safetensors"
    assert main(["train", "--resume", str(checkpoint), "--lr", "0.5"]) == 2
    assert capsys.readouterr().err == (
        "nograd: error: argument --resume: the run's options come from its checkpoint; drop --lr\n"
    )
    assert main(["train", "--resume", str(tmp_path / "model.safetensors")]) == 2
    assert capsys.readouterr().err == (
        f"nograd: error: resume: {tmp_path / 'model.safetensors'}: not a checkpoint of "
        "nograd train (no experiment state)\n"
    )


def stop_in_round_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt from inside a step of round 2 (the seed preset's SGD)."""
    original, calls = SGD.step, [0]

    def step(self: SGD, *args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 6 * 4 + 6 * 2 + 3:  # round 2, epoch 3, step 3 (6 batches of 10)
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(SGD, "step", step)


def test_nograd_train_resume_keeps_the_threads_and_the_cpu_matmul(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bits of a CPU run depend on both: a resumed run must use the run's own."""
    backend = "onednn" if matmul.onednn_available() else "blas"
    options = [*SHORT, "--preset", "seed", "--threads", "2", "--cpu-matmul", backend]
    assert main(["train", *options, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "stopped"
    stop_in_round_2(monkeypatch)
    assert main(["train", *options, "--out", str(out), "--checkpoint-every", "2"]) == 130
    monkeypatch.undo()

    seen: list[tuple[str, int]] = []
    honest_fit = nograd.experiment.fit

    def fit_noting_the_settings(*args: Any, **kwargs: Any) -> Any:
        seen.append((nograd.get_cpu_matmul(), torch.get_num_threads()))
        return honest_fit(*args, **kwargs)

    monkeypatch.setattr(nograd.experiment, "fit", fit_noting_the_settings)
    threads = torch.get_num_threads()
    assert main(["train", "--resume", str(out / "checkpoint.safetensors"), "--quiet"]) == 0
    assert seen == [(backend, 2)] * 2  # rounds 2 and 3
    metrics = metrics_without_timings(out)
    assert (metrics["threads"], metrics["cpu_matmul"]) == (2, backend)
    assert metrics == metrics_without_timings(tmp_path / "straight")
    assert (torch.get_num_threads(), nograd.get_cpu_matmul()) == (threads, "blas")  # undone


@pytest.mark.parametrize(("flag", "value"), [("--threads", "2"), ("--cpu-matmul", "blas")])
def test_resume_refuses_the_threads_and_cpu_matmul_as_other_options(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--resume", "c.safetensors", flag, value]) == 2
    assert capsys.readouterr().err == (
        f"nograd: error: argument --resume: the run's options come from its checkpoint; "
        f"drop {flag}\n"
    )


def test_a_checkpoint_from_before_threads_cpu_matmul_and_clipping_were_kept_resumes(
    tmp_path: Path,
) -> None:
    """Their config lacks the three keys: the run resumes with the defaults it had."""
    assert main(["train", *SHORT, "--rounds", "1", "--out", str(tmp_path)]) == 0
    path = tmp_path / "checkpoint.safetensors"
    with safetensors.safe_open(str(path), framework="pt") as file:
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
        header = dict(file.metadata())
    metadata = json.loads(header["metadata"])
    for key in ("threads", "cpu_matmul", "clip_grad_norm"):
        del metadata["experiment"]["config"][key]
    header["metadata"] = json.dumps(metadata)
    path.write_bytes(encode(tensors, header))
    config = read_resume(path).config
    assert (config.threads, config.cpu_matmul, config.clip_grad_norm) == (None, "blas", None)
    assert main(["train", "--resume", str(path), "--quiet"]) == 0


def test_nograd_train_fused_resumes_to_the_bit_and_keeps_its_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--fused`` (torch's fused Adam) is kept in the checkpoint's config: the resumed run
    updates with the same kernels and writes the metrics of a run that never stopped."""
    options = [*SHORT, "--fused"]
    kernel, kernel_calls = torch._fused_adam_, [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        kernel_calls[0] += 1
        return kernel(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "_fused_adam_", counted)
        assert main(["train", *options, "--out", str(tmp_path / "straight")]) == 0
    assert kernel_calls[0] == 3 * 4 * 2  # every step of the 3 rounds, 4 epochs, 2 batches
    straight = metrics_without_timings(tmp_path / "straight")
    assert straight["config"]["fused"] is True
    original, calls = Adam.step, [0]

    def step(self: Adam, *args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2 * 4 + 2 * 2 + 2:  # round 2, epoch 3, step 2 (2 batches of 32)
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Adam, "step", step)
    out = tmp_path / "stopped"
    assert main(["train", *options, "--out", str(out), "--checkpoint-every", "2"]) == 130
    monkeypatch.undo()
    assert main(["train", "--resume", str(out / "checkpoint.safetensors"), "--quiet"]) == 0
    assert metrics_without_timings(out) == straight

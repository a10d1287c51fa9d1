"""The promises of docs/reliability.md: divergence, atomic checkpoints, safe loading, Ctrl-C.

The misuse table has its own file (test_misuse.py), exact resume (test_resume.py) and
the property tests (test_properties.py) too.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import nograd.loop
import nograd.train
from nograd import io
from nograd.cli import main
from nograd.data import DataLoader, disk
from nograd.guards import DeferredLossWatch, DivergenceError
from nograd.nn import Linear, Parameter, Sequential, activations
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.losses import MSELoss
from nograd.optim import SGD, Adam
from nograd.optim.lr_scheduler import ExponentialLR
from nograd.resume import load_progress
from nograd.targets import one_hot

CPU = torch.device("cpu")
SRC = str(Path(nograd.train.__file__).parents[1])


# ------------------------------------------------------------------ divergence
class Diverging:
    """SGD on the MSE with an lr that grows 4-fold each epoch: it blows up after a few."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = Sequential(Linear(2, 8), Linear(8, 2))
        self.optimizer = SGD(self.model.parameters(), lr=0.05)
        self.scheduler = ExponentialLR(self.optimizer, gamma=4.0)
        self.data = disk(64, generator=torch.Generator().manual_seed(0))

    def fit(self, **options: Any) -> Any:
        return nograd.train.fit(
            self.model, MSELoss(), self.optimizer, self.data, epochs=30, batch_size=8,
            scheduler=self.scheduler, generator=torch.Generator().manual_seed(1),
            progress=False, **options,
        )  # fmt: skip


def first_bad_step() -> tuple[int, int, list[torch.Tensor], list[torch.Tensor]]:
    """The oracle: a bare loop over the same batches; where the loss first is not finite.

    Returns the (1-based) epoch and step, the parameters just before that step and
    those at the end of the epoch before.
    """
    run = Diverging()
    loader = DataLoader(
        run.data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    loss_fn = MSELoss()
    params = list(run.model.parameters())
    for epoch in range(1, 31):
        at_epoch_start = [p.data.clone() for p in params]
        for step, (x, y) in enumerate(loader, 1):
            run.optimizer.zero_grad()
            loss = loss_fn(run.model(x), one_hot(y, 2, torch.float32))
            if not torch.isfinite(loss):
                return epoch, step, [p.data.clone() for p in params], at_epoch_start
            run.model.backward(loss_fn.backward())
            run.optimizer.step()
        run.scheduler.step()
    raise AssertionError("the oracle run did not diverge")


def test_divergence_stops_at_the_first_bad_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    epoch, step, before, _ = first_bad_step()
    assert epoch > 1  # so that a good checkpoint exists
    path = tmp_path / "c.safetensors"
    run = Diverging()
    with pytest.raises(DivergenceError) as info:
        run.fit(checkpoint_path=path)
    error = info.value
    assert isinstance(error, RuntimeError)
    assert (error.epoch, error.step, error.checkpoint) == (epoch, step, path)
    assert f"at epoch {epoch}, step {step}" in str(error)
    assert str(error).endswith("try a lower learning rate")
    for param, expected in zip(run.model.parameters(), before, strict=True):
        assert torch.equal(param.data, expected)  # stopped before the bad step's update

    fresh = Diverging()  # the checkpoint on disk is the last good one, whole and finite
    named = {"shuffle": torch.Generator()}
    progress = load_progress(path, fresh.model, fresh.optimizer, fresh.scheduler, named, CPU)
    assert progress.epoch == epoch - 1 and progress.step == 0
    assert all(torch.isfinite(p.data).all() for p in fresh.model.parameters())


def test_the_accelerator_strategy_names_the_same_step_and_restores_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-epoch read used on GPUs, forced here on the CPU."""
    epoch, step, _, at_epoch_start = first_bad_step()
    monkeypatch.setattr(nograd.loop, "loss_watch", DeferredLossWatch)
    run = Diverging()
    with pytest.raises(DivergenceError) as info:
        run.fit(checkpoint_path=tmp_path / "c.safetensors")
    assert (info.value.epoch, info.value.step) == (epoch, step)
    for param, expected in zip(run.model.parameters(), at_epoch_start, strict=True):
        assert torch.equal(param.data, expected)  # put back from the checkpoint


def test_the_accelerator_strategy_keeps_every_loss_of_a_stream_of_unknown_length() -> None:
    """For a stream without a length the buffer of the epoch's losses grows as the
    steps come: the first bad one is still the one named, and the next epoch starts
    clean."""
    watch = DeferredLossWatch(SGD([Parameter(torch.zeros(1))], lr=0.1), CPU)
    watch.start_epoch(1, None)
    for step in range(300):
        watch.check(torch.tensor(float("nan") if step in (150, 200) else 1.0), step)
    with pytest.raises(DivergenceError, match="at epoch 1, step 151"):
        watch.flush()
    watch.start_epoch(2, None)
    for step in range(500):
        watch.check(torch.tensor(0.5), step)
    watch.flush()  # nothing left of epoch 1's nan


def test_a_non_finite_parameter_is_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = Sequential(Linear(2, 4), activations.Tanh(), Linear(4, 2))
    optimizer = Adam(model.parameters(), lr=0.01)
    original, calls = optimizer.step, [0]

    def step(*args: Any) -> Any:
        calls[0] += 1
        result = original(*args)
        if calls[0] == 4:  # the last step of epoch 2 (2 batches per epoch)
            model[0].weight.data[0, 0] = float("nan")
        return result

    monkeypatch.setattr(optimizer, "step", step)
    path = tmp_path / "c.safetensors"
    with pytest.raises(DivergenceError, match="a parameter became nan at epoch 2, step 2"):
        nograd.train.fit(model, CrossEntropyLoss(), optimizer, disk(64), epochs=5,
                         checkpoint_path=path, progress=False)  # fmt: skip
    loaded = io.load(path)
    assert all(torch.isfinite(p.data).all() for p in loaded.parameters())
    assert json.loads(io._read(path, None, "").header["training"])["epoch"] == 1


def test_nograd_train_reports_divergence_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--lr", "1e6", "--optimizer", "sgd", "--loss", "mse", "--rounds", "1",
            "--n-train", "50", "--n-test", "20", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nograd: error: fit: the loss became") and err.count("\n") == 1
    assert "try a lower learning rate" in err and "Traceback" not in err


# ---------------------------------------------------------- atomic checkpoints
STALL_IN_RENAME = """
import os, sys, time, torch
from nograd import io
from nograd.nn import Linear
torch.manual_seed(1)
def stall(source, target):  # the new file is written and synced; the rename never comes
    print(source, flush=True)
    time.sleep(60)
os.replace = stall
io.save(Linear(64, 64), sys.argv[1])
"""

SAVE_FOREVER = """
import sys, torch
from nograd import io
from nograd.nn import Linear
torch.manual_seed(1)
models = [Linear(256, 256), Linear(256, 256)]
io.save(models[0], sys.argv[1])
print("saving", flush=True)
i = 0
while True:
    i += 1
    io.save(models[i % 2], sys.argv[1])
"""


def python(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    command = [sys.executable, "-c", script, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def test_a_process_killed_between_write_and_rename_leaves_the_old_checkpoint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "model.safetensors"
    torch.manual_seed(0)
    old = Linear(64, 64)
    io.save(old, path)
    writer = python(STALL_IN_RENAME, str(path))
    assert writer.stdout is not None
    temporary = Path(writer.stdout.readline().strip())
    writer.kill()  # SIGKILL: no cleanup, no finally
    writer.wait(30)
    assert temporary.parent == path.parent and temporary.stat().st_size > 0  # it was written
    assert torch.equal(io.load(path).weight.data, old.weight.data)  # and never took the name


def test_a_process_killed_at_a_random_moment_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    writer = python(SAVE_FOREVER, str(path))
    assert writer.stdout is not None and writer.stdout.readline() == "saving\n"
    time.sleep(0.2)  # some hundred saves in
    writer.kill()
    writer.wait(30)
    torch.manual_seed(1)
    versions = [Linear(256, 256).weight.data, Linear(256, 256).weight.data]
    weight = io.load(path).weight.data
    assert any(torch.equal(weight, version) for version in versions)


# ----------------------------------------------------------------- safe loading
class Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_resuming_from_hostile_files_runs_no_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "checkpoint.safetensors"
    evil.write_bytes(pickle.dumps({"model.0.weight": Payload(marker)}))
    torch.save({"x": Payload(marker)}, tmp_path / "torch.safetensors")
    for path in (evil, tmp_path / "torch.safetensors"):
        assert main(["train", "--resume", str(path)]) == 2
        err = capsys.readouterr().err
        assert "not a valid safetensors file" in err and err.count("\n") == 1
        run = Diverging()
        with pytest.raises(ValueError, match="not a valid safetensors file"):
            run.fit(resume_from=path)
    assert not marker.exists()


# ------------------------------------------------------------------ a real Ctrl-C
def test_ctrl_c_on_nograd_train_saves_and_the_resumed_run_matches(tmp_path: Path) -> None:
    options = ["--epochs", "300", "--rounds", "2", "--n-train", "64", "--n-test", "32",
               "--quiet", "--checkpoint-every", "1"]  # fmt: skip
    out = tmp_path / "stopped"
    checkpoint = out / "checkpoint.safetensors"
    env = {**os.environ, "PYTHONPATH": SRC}
    command = [sys.executable, "-m", "nograd", "train", *options, "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err == (
        f"interrupted: checkpoint saved to {checkpoint} "
        f"(resume with: nograd train --resume {checkpoint})\n"
    )
    assert main(["train", "--resume", str(checkpoint), "--quiet"]) == 0
    assert main(["train", *options, "--out", str(tmp_path / "straight")]) == 0
    metrics = [
        json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("stopped", "straight")
    ]
    for m in metrics:
        for record in m["rounds"]:
            del record["seconds"], record["history"]["seconds"]
    assert metrics[0] == metrics[1]

"""Training checkpoints (nograd.checkpoint) and the safetensors writer (nograd.safefile)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from nograd import io
from nograd.checkpoint import (
    CheckpointWriter,
    Progress,
    capture_rng,
    generators,
    restore_rng,
)
from nograd.nn import Linear, Module, Sequential
from nograd.nn.activations import Tanh
from nograd.nn.dropout import Dropout
from nograd.optim import SGD, Adam
from nograd.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    StepLR,
)
from nograd.resume import load_progress
from nograd.safefile import encode

CPU = torch.device("cpu")


# ------------------------------------------------------------------ safefile
def test_encode_is_read_back_exactly_by_safetensors() -> None:
    tensors = {
        "f32": torch.randn(3, 4),
        "f64_transposed": torch.randn(2, 3, dtype=torch.float64).t(),  # not contiguous
        "i64": torch.arange(5),
        "u8": torch.arange(7, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    back = safetensors.torch.load(encode(tensors, {"key": "value"}))
    assert set(back) == set(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    data = encode(tensors, {"key": "value"})
    header_size = int.from_bytes(data[:8], "little")
    assert (8 + header_size) % 8 == 0  # the data section is aligned, as safetensors writes it
    assert json.loads(data[8 : 8 + header_size])["__metadata__"] == {"key": "value"}


def test_encode_of_nothing_is_a_valid_file() -> None:
    assert safetensors.torch.load(encode({}, {})) == {}


# ------------------------------------------------------------ a small run
def small_run(
    scheduler_type: Callable[..., LRScheduler] | None = None,
) -> tuple[Module, Any, LRScheduler | None, torch.Generator]:
    torch.manual_seed(0)
    model = Sequential(Linear(2, 5), Tanh(), Dropout(0.1), Linear(5, 2))
    optimizer = Adam(model.parameters(), lr=0.01)
    scheduler = None if scheduler_type is None else scheduler_type(optimizer)
    for _ in range(3):  # some optimizer state and scheduler progress worth restoring
        for param in model.parameters():
            param.grad = torch.randn_like(param.data)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return model, optimizer, scheduler, torch.Generator().manual_seed(5)


def progress_of(model: Module, generator: torch.Generator, step: int = 0) -> Progress:
    history = {key: [0.5, 0.25] for key in ("train_loss", "train_acc", "test_loss", "test_acc")}
    rng = capture_rng(generators(model, {"shuffle": generator}), CPU)
    return Progress(
        epoch=2,
        step=step,
        seen=7 * step,
        loss_sum=torch.tensor(1.25),
        correct=torch.tensor(6),
        history={**history, "lr": [0.01, 0.009], "seconds": [0.1, 0.2]},
        rng=rng,
        rng_epoch=rng if step else {},
    )


def write(path: Path, step: int = 0, scheduler_type: Any = None) -> tuple[Module, Any, Any]:
    model, optimizer, scheduler, generator = small_run(scheduler_type)
    writer = CheckpointWriter(path, model, scheduler, {"note": "hello"})
    writer.write(model, optimizer, scheduler, progress_of(model, generator, step))
    return model, optimizer, scheduler


def fresh(scheduler_type: Any = None) -> tuple[Module, Any, Any, torch.Generator]:
    torch.manual_seed(123)  # other initial weights: the checkpoint must overwrite them
    model = Sequential(Linear(2, 5), Tanh(), Dropout(0.1), Linear(5, 2))
    optimizer = Adam(model.parameters(), lr=0.01)
    scheduler = None if scheduler_type is None else scheduler_type(optimizer)
    return model, optimizer, scheduler, torch.Generator()


SCHEDULERS: list[Callable[..., LRScheduler]] = [
    lambda opt: StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: MultiStepLR(opt, milestones=[1, 2, 2], gamma=0.5),  # a Counter of milestones
    lambda opt: ExponentialLR(opt, gamma=0.9),
    lambda opt: CosineAnnealingLR(opt, T_max=10),
    lambda opt: LinearLR(opt, start_factor=0.5, total_iters=4),
]


@pytest.mark.parametrize("scheduler_type", SCHEDULERS)
def test_everything_comes_back(tmp_path: Path, scheduler_type: Any) -> None:
    path = tmp_path / "checkpoint.safetensors"
    model, optimizer, scheduler = write(path, step=3, scheduler_type=scheduler_type)
    expected_rng = torch.get_rng_state()

    ours, our_optimizer, our_scheduler, generator = fresh(scheduler_type)
    param_ids = [id(p.data) for p in ours.parameters()]
    progress = load_progress(path, ours, our_optimizer, our_scheduler, {"shuffle": generator}, CPU)

    assert [id(p.data) for p in ours.parameters()] == param_ids  # restored in place
    for saved, loaded in zip(model.parameters(), ours.parameters(), strict=True):
        assert torch.equal(saved.data, loaded.data)
    saved_state, loaded_state = optimizer.state_dict(), our_optimizer.state_dict()
    assert saved_state["param_groups"] == loaded_state["param_groups"]
    for index, entry in saved_state["state"].items():
        for key, value in entry.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(loaded_state["state"][index][key])
            )
    assert our_scheduler.state_dict() == scheduler.state_dict()
    assert (progress.epoch, progress.step, progress.seen) == (2, 3, 21)
    assert progress.loss_sum.item() == 1.25 and progress.correct.item() == 6
    assert progress.history["lr"] == [0.01, 0.009]

    torch.manual_seed(999)
    restore_rng(progress.rng, {"shuffle": generator}, CPU)
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(5).get_state())
    assert set(progress.rng_epoch) == {"torch", "shuffle"}


def test_a_training_checkpoint_is_also_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.safetensors"
    model, _, _ = write(path)
    loaded = io.load(path).eval()
    x = torch.randn(4, 2)
    assert torch.equal(loaded(x), model.eval()(x))
    assert io.load_checkpoint(path).metadata == {"note": "hello"}


def test_writer_checks_the_model_and_folder_up_front(tmp_path: Path) -> None:
    class Custom(Module):
        pass

    with pytest.raises(TypeError, match="cannot describe"):
        CheckpointWriter(tmp_path / "c.safetensors", Sequential(Linear(2, 2), Custom()))
    with pytest.raises(ValueError, match="no such folder"):
        CheckpointWriter(tmp_path / "missing" / "c.safetensors", Linear(2, 2))
    with pytest.raises(TypeError, match="JSON"):
        CheckpointWriter(tmp_path / "c.safetensors", Linear(2, 2), None, {"bad": object()})


def test_fit_refuses_an_optimizer_a_checkpoint_cannot_hold_before_training(
    tmp_path: Path,
) -> None:
    """LBFGS takes a tensor lr, as torch's does; JSON cannot hold it, so fit says so up
    front instead of after the first epoch."""
    from nograd.data import disk
    from nograd.nn.cross_entropy import CrossEntropyLoss
    from nograd.optim import LBFGS
    from nograd.train import fit

    model = Sequential(Linear(2, 2))
    optimizer = LBFGS(model.parameters(), lr=torch.tensor(0.5))
    before = model[0].weight.data.clone()
    with pytest.raises(TypeError, match="must be JSON-serialisable"):
        fit(model, CrossEntropyLoss(), optimizer, disk(20), epochs=1, progress=False,
            checkpoint_path=tmp_path / "c.safetensors")  # fmt: skip
    assert torch.equal(model[0].weight.data, before)  # no step was taken


# ------------------------------------------------------------ refusals
def forge(path: Path, change: Callable[[dict[str, torch.Tensor], dict[str, str]], None]) -> None:
    with safetensors.safe_open(str(path), framework="pt") as file:
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
        header = dict(file.metadata())
    change(tensors, header)
    path.write_bytes(encode(tensors, header))


def training_json(change: Callable[[dict[str, Any]], None]) -> Any:
    def apply(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
        training = json.loads(header["training"])
        change(training)
        header["training"] = json.dumps(training)

    return apply


def tensor(name: str, value: torch.Tensor) -> Any:
    return lambda tensors, header: tensors.update({name: value})


def optimizer_json(change: Callable[[dict[str, Any]], None]) -> Any:
    def apply(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
        packed = json.loads(header["optimizer"])
        change(packed)
        header["optimizer"] = json.dumps(packed)

    return apply


def group(**options: Any) -> Any:
    return optimizer_json(lambda o: o["param_groups"][0].update(options))


BYTES = torch.uint8
FORGERIES: list[tuple[str, Any, str]] = [
    ("negative epoch", training_json(lambda t: t.update(epoch=-1)), "expected epoch"),
    ("float step", training_json(lambda t: t.update(step=1.5)), "expected step"),
    ("huge seen", training_json(lambda t: t.update(seen=10**13)), "expected seen"),
    ("extra key", training_json(lambda t: t.update(code="import os")), "malformed training"),
    ("history of text", training_json(lambda t: t["history"].update(lr=["x"])), "history"),
    ("other scheduler", training_json(lambda t: t.update(scheduler={"class": "X"})), "scheduler"),
    ("no training json", lambda t, h: h.update(training="{"), "not valid JSON"),
    ("no rng", lambda t, h: t.pop("training.rng.torch"), "generator states"),
    ("unknown generator", tensor("training.rng.evil", torch.zeros(3, dtype=BYTES)), "states"),
    ("rng of floats", tensor("training.rng.torch", torch.zeros(5056)), "uint8"),
    ("short rng", tensor("training.rng.torch", torch.zeros(9, dtype=BYTES)), "uint8"),
    ("sum not a scalar", tensor("training.loss_sum", torch.zeros(2)), "running sum"),
    ("unknown tensor", tensor("elsewhere.x", torch.zeros(2)), "unexpected tensor"),
    # load_state_dict takes options as saved: these failed steps later, after the model changed
    ("lr of text", group(lr="x"), "option 'lr' of group 0"),
    ("betas of one", group(betas=[1.0, 0.999]), r"betas\[0\] in \[0, 1\)"),
    ("nan eps", group(eps=float("nan")), "eps >= 0"),
    ("one beta", group(betas=[0.9]), "option 'betas'"),
    ("no eps", optimizer_json(lambda o: o["param_groups"][0].pop("eps")), "option 'eps'"),
    ("differentiable", group(differentiable=True), "differentiable=True"),
    ("foreach of text", group(foreach="yes"), "foreach to be a bool or None"),
    ("param key a list", optimizer_json(lambda o: o["param_keys"].__setitem__(0, [1])), "names"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "change", "message"), FORGERIES, ids=[f[0] for f in FORGERIES])
def test_forged_training_sections_are_refused(
    tmp_path: Path, name: str, change: Any, message: str
) -> None:
    path = tmp_path / "checkpoint.safetensors"
    write(path, step=0)
    forge(path, change)
    model, optimizer, _, generator = fresh()
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message) as info:
        load_progress(path, model, optimizer, None, {"shuffle": generator}, CPU)
    assert str(path) in str(info.value)
    assert all(torch.equal(a, p.data) for a, p in zip(before, model.parameters(), strict=True))
    assert not optimizer.state  # refused before anything of the caller's changed


def test_forged_optimizer_options_are_refused_by_load_too(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.safetensors"
    write(path)
    forge(path, group(lr="x"))
    _, optimizer, _, _ = fresh()
    with pytest.raises(ValueError, match="option 'lr' of group 0"):
        io.load(path, optimizer=optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.01 and not optimizer.state


def test_a_checkpoint_without_torchs_implementation_options_loads(tmp_path: Path) -> None:
    """Checkpoints written before the groups kept foreach, capturable, differentiable and
    fused: the load takes their defaults, and the run goes on as it would have."""
    path = tmp_path / "checkpoint.safetensors"
    saved_model, saved_optimizer, _ = write(path)
    implementation = ("foreach", "capturable", "differentiable", "fused")
    strip = optimizer_json(lambda o: [o["param_groups"][0].pop(k) for k in implementation])
    forge(path, strip)
    model, optimizer, _, generator = fresh()
    load_progress(path, model, optimizer, None, {"shuffle": generator}, CPU)
    assert optimizer.param_groups[0]["foreach"] is None
    assert optimizer.param_groups[0]["differentiable"] is False
    for a, b in zip(model.parameters(), saved_model.parameters(), strict=True):
        assert torch.equal(a.data, b.data)
    for p, q in zip(model.parameters(), saved_model.parameters(), strict=True):
        assert torch.equal(optimizer.state[p]["exp_avg"], saved_optimizer.state[q]["exp_avg"])


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update(gamma="x"),
        lambda s: s.update(last_epoch=None),
        lambda s: s.update(base_lrs=[0.1, 0.2]),
        lambda s: s.pop("step_size"),
    ],
)
def test_forged_scheduler_states_are_refused(tmp_path: Path, change: Any) -> None:
    def step_lr(optimizer: Any) -> LRScheduler:
        return StepLR(optimizer, step_size=2, gamma=0.5)

    path = tmp_path / "checkpoint.safetensors"
    write(path, scheduler_type=step_lr)
    forge(path, training_json(lambda t: change(t["scheduler"]["state"])))
    model, optimizer, scheduler, generator = fresh(step_lr)
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="malformed scheduler state"):
        load_progress(path, model, optimizer, scheduler, {"shuffle": generator}, CPU)
    assert all(torch.equal(a, p.data) for a, p in zip(before, model.parameters(), strict=True))


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.safetensors"
    write(path)
    model, optimizer, _, generator = fresh()
    named = {"shuffle": generator}

    wider = Sequential(Linear(2, 6), Tanh(), Dropout(0.1), Linear(6, 2))
    with pytest.raises(ValueError, match=r"holds a different model: Linear\(2, 5, True\)"):
        load_progress(path, wider, Adam(wider.parameters()), None, named, CPU)
    double = fresh()[0].to(torch.float64)
    with pytest.raises(ValueError, match=r"as torch\.float32, the model has torch\.float64"):
        load_progress(path, double, Adam(double.parameters()), None, named, CPU)
    with pytest.raises(ValueError, match="optimizer Adam, this run has SGD"):
        load_progress(path, model, SGD(model.parameters(), lr=0.1), None, named, CPU)
    reordered = Adam(list(model.parameters())[::-1], lr=0.01)
    with pytest.raises(ValueError, match="are not the saved ones"):
        load_progress(path, model, reordered, None, named, CPU)
    with pytest.raises(ValueError, match="scheduler None, this run has StepLR"):
        load_progress(path, model, optimizer, StepLR(optimizer, 2), named, CPU)
    with pytest.raises(
        ValueError, match=r"states \['shuffle', 'torch'\], this run draws from \['torch'\]"
    ):
        load_progress(path, model, optimizer, None, {}, CPU)  # saved with a shuffle generator


def test_a_model_file_is_not_a_training_checkpoint(tmp_path: Path) -> None:
    model, optimizer, _, _ = fresh()
    io.save(model, tmp_path / "model.safetensors", optimizer)
    with pytest.raises(ValueError, match="holds a model but no training state"):
        load_progress(tmp_path / "model.safetensors", model, optimizer, None, {}, CPU)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_progress(tmp_path / "absent.safetensors", model, optimizer, None, {}, CPU)

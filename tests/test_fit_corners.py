"""An audit of ``fit``, ``evaluate`` and ``nograd train`` against the loop a torch user writes.

Each test pins a divergence that an audit found: models that flatten or reshape their
samples, and a BatchNorm1d without running statistics, refused before training; the
model left in eval mode when the first forward raised; an lr too large for float32
shown as a traceback on the command line; half-precision epoch losses summed in half
precision; and a shuffled test loader whose own generator a checkpoint did not keep.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from nograd import nn, optim
from nograd.cli import main
from nograd.data import DataLoader, TensorDataset, disk
from nograd.guards import DivergenceError
from nograd.train import TrainingInterrupted, evaluate, fit

in_main_thread = threading.current_thread() is threading.main_thread()


def torch_loop(
    twin: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TensorDataset,
    epochs: int,
    batch_size: int,
) -> None:
    """The loop a torch user writes: cross-entropy, batches in order, train mode."""
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data.tensors), batch_size)
    twin.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            with torch.enable_grad():
                loss_fn(twin(x), y).backward()
            optimizer.step()


def assert_same_state(ours: nn.Module, twin: torch.nn.Module | nn.Module) -> None:
    state = ours.state_dict()
    for key, value in twin.state_dict().items():
        assert torch.equal(state[key], value), key


RESHAPING: dict[str, tuple[tuple[int, ...], Callable[[Any], list[Any]]]] = {
    # samples of shape (2, 3), flattened to 6 features first
    "flatten-first": ((2, 3), lambda lib: [lib.Flatten(), lib.Linear(6, 8), lib.ReLU(),
                                           lib.Linear(8, 2)]),
    # a Linear over the last dimension of (4, 3) samples, as torch's Linear maps (*, in)
    "linear-over-rows": ((4, 3), lambda lib: [lib.Linear(3, 5), lib.Tanh(), lib.Flatten(),
                                              lib.Linear(20, 2)]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RESHAPING))
def test_fit_trains_a_model_that_reshapes_its_samples_as_a_torch_loop(case: str) -> None:
    """A model that flattens or reshapes its samples before its first Linear trains as in
    torch's loop: the data check compares a sample's shape with that Linear's
    in_features only once the model has refused the data."""
    shape, layers = RESHAPING[case]
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(40, *shape, generator=g), torch.randint(0, 2, (40,), generator=g)
    )
    torch.manual_seed(1)
    ours = nn.Sequential(*layers(nn))
    twin = torch.nn.Sequential(*layers(torch.nn))
    twin.load_state_dict(ours.state_dict())
    fit(ours, nn.CrossEntropyLoss(), optim.SGD(ours.parameters(), lr=0.1, momentum=0.9), data,
        data, epochs=2, batch_size=8, shuffle=False, progress=False)  # fmt: skip
    torch_loop(twin, torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9), data, 2, 8)
    assert_same_state(ours, twin)

    loss, accuracy = evaluate(ours, nn.CrossEntropyLoss(), data)
    x, y = data.tensors
    with torch.no_grad():
        output = twin.eval()(x)
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(output, y)), rel=1e-6)
    assert accuracy == float((output.argmax(1) == y).double().mean())


def test_a_sample_of_the_wrong_width_still_names_both_sizes() -> None:
    """The message of the misuse table, given now once the model has refused the data
    (a regression test of the fix above, which passed before it too)."""
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
    data = TensorDataset(torch.randn(8, 3), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^fit: train_data has 3 features per sample but") as info:
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), data, epochs=1,
            progress=False)  # fmt: skip
    error = info.value  # not chained to the model's own error
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_batch_norm_without_running_statistics_trains_and_evaluates_as_torch() -> None:
    """A BatchNorm1d(track_running_stats=False) normalises over the batch in eval mode
    too, and refuses a batch of one, as torch's does: so ``fit``'s data check runs the
    model on two copies of a sample, since one alone would refuse every such model."""
    data = disk(48, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    ours = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8, track_running_stats=False),
                         nn.ReLU(), nn.Linear(8, 2))  # fmt: skip
    twin = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8, track_running_stats=False),
        torch.nn.ReLU(), torch.nn.Linear(8, 2),
    )  # fmt: skip
    twin.load_state_dict(ours.state_dict())
    fit(ours, nn.CrossEntropyLoss(), optim.Adam(ours.parameters(), lr=0.01), data, data,
        epochs=3, batch_size=16, shuffle=False, progress=False)  # fmt: skip
    torch_loop(twin, torch.optim.Adam(twin.parameters(), lr=0.01), data, 3, 16)
    assert_same_state(ours, twin)

    loss, _ = evaluate(ours, nn.CrossEntropyLoss(), data)  # one batch of 48: its statistics
    x, y = data.tensors
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(twin.eval()(x), y)
    assert loss == float(expected)


class RefusesEveryInput(nn.Module):
    """A layer whose forward always raises, after the Linear before it ran."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("refused")


@pytest.mark.parametrize("caller", ["evaluate", "fit"])
def test_the_mode_is_restored_when_the_first_forward_raises(caller: str) -> None:
    """``evaluate`` promises the model's mode back also when the forward raises; the
    forward that ``fit`` and ``evaluate`` run first, on the first sample, left it in eval."""
    model = nn.Sequential(nn.Linear(2, 2), RefusesEveryInput()).train()
    with pytest.raises(RuntimeError, match="refused"):
        if caller == "evaluate":
            evaluate(model, nn.CrossEntropyLoss(), disk(10))
        else:
            fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), disk(10),
                epochs=1, progress=False)  # fmt: skip
    assert all(module.training for module in model.modules())


OVERFLOWS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd-lr": ("SGD", {"lr": 1e300}),
    "sgd-weight-decay": ("SGD", {"lr": 0.1, "weight_decay": 1e299}),
    "adam-lr": ("Adam", {"lr": 1e38}),  # lr / (1 - beta1) is beyond float32's 3.4e38
    "lbfgs-lr": ("LBFGS", {"lr": 1e300}),
}


@pytest.mark.parametrize("case", list(OVERFLOWS))
def test_an_update_float32_cannot_hold_stops_as_a_divergence(case: str) -> None:
    """torch's optimizer refuses the update ("value cannot be converted to type float
    without overflow") at the first step, before it writes a parameter; ``fit`` raises
    ``DivergenceError`` (a RuntimeError, as torch's) there, with the parameters of
    torch's loop, which the command line reports in one line."""
    name, options = OVERFLOWS[case]
    data = disk(16, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(5)
    ours = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    twin.load_state_dict(ours.state_dict())
    with pytest.raises(
        DivergenceError, match=r"^fit: the update became inf at epoch 1, step 1"
    ) as info:
        fit(ours, nn.CrossEntropyLoss(), getattr(optim, name)(ours.parameters(), **options),
            data, epochs=1, batch_size=8, shuffle=False, progress=False)  # fmt: skip
    assert info.value.__cause__ is None and "weight decay" in str(info.value)

    torch_optimizer = getattr(torch.optim, name)(twin.parameters(), **options)
    x, y = data.tensors[0][:8], data.tensors[1][:8]

    def closure() -> torch.Tensor:
        torch_optimizer.zero_grad()
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(twin(x), y)
            loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="without overflow"):
        torch_optimizer.step(closure)
    assert_same_state(ours, twin)


def test_the_command_line_reports_such_an_lr_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--optimizer", "sgd", "--lr", "1e300", "--epochs", "1", "--rounds", "1",
            "--n-train", "20", "--n-test", "10", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("nograd: error: fit: the update became inf at epoch 1, step 1")
    assert captured.err.count("\n") == 1 and captured.out == ""


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_losses_are_averaged_as_a_torch_user_averages_them(
    dtype: torch.dtype,
) -> None:
    """The epoch's loss is sum_batches loss * n / N, which a torch user sums as Python
    floats. Summed in bfloat16, 250 batches came out 6% high; float16 overflows to inf
    once the sum passes 65504 (here: 1600 samples of a loss near 56)."""
    g = torch.Generator().manual_seed(6)
    data = TensorDataset(
        torch.randn(1600, 2, generator=g) * 1000, torch.randint(0, 2, (1600,), generator=g)
    )
    torch.manual_seed(7)
    ours = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).to(dtype)
    twin = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    twin.to(dtype).load_state_dict(ours.state_dict())
    # lr 0: every batch's loss is that of the same model, in training as in the test
    sgd = optim.SGD(ours.parameters(), lr=0.0)
    history = fit(ours, nn.CrossEntropyLoss(), sgd, data, data, epochs=1, batch_size=8,
                  test_batch_size=8, shuffle=False, progress=False)  # fmt: skip

    total = 0.0
    for x, y in torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data.tensors), 8):
        with torch.no_grad():
            total += float(torch.nn.functional.cross_entropy(twin(x.to(dtype)), y)) * len(y)
    expected = total / 1600
    assert expected > 40  # large enough that a float16 sum overflows
    for figure in (history.train_loss[0], history.test_loss[0],
                   evaluate(ours, nn.CrossEntropyLoss(), data, batch_size=8)[0]):  # fmt: skip
        assert figure == pytest.approx(expected, rel=1e-6)


@pytest.mark.skipif(not in_main_thread, reason="signal handlers live in the main thread")
def test_a_shuffled_test_loader_with_its_own_generator_resumes_to_the_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test loss is summed in the test loader's order, which its own generator
    draws: the checkpoint keeps that generator too, so the resumed run's test losses
    are those of the run that never stopped."""
    path = tmp_path / "c.safetensors"

    def run(stop_at: int | None = None, **options: Any) -> tuple[nn.Module, Any]:
        generator = torch.Generator().manual_seed(8)
        train, test = disk(64, generator=generator), disk(41, generator=generator)
        torch.manual_seed(9)
        model = nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 2))
        optimizer = optim.Adam(model.parameters(), lr=0.01)
        if stop_at is not None:  # Ctrl-C just before that step
            original, calls = optimizer.step, [0]

            def step(*args: Any) -> Any:
                calls[0] += 1
                if calls[0] == stop_at:
                    signal.raise_signal(signal.SIGINT)
                return original(*args)

            monkeypatch.setattr(optimizer, "step", step)
        test_loader = DataLoader(test, 8, shuffle=True, generator=torch.Generator().manual_seed(3))
        history = fit(model, nn.CrossEntropyLoss(), optimizer, train, test_loader, epochs=4,
                      batch_size=16, generator=generator, progress=False, **options)  # fmt: skip
        return model, history

    straight, history = run()
    with pytest.raises(TrainingInterrupted):
        run(stop_at=10, checkpoint_path=path, checkpoint_every=100)  # in epoch 3
    resumed, history_resumed = run(resume_from=path)
    assert_same_state(resumed, straight)
    assert history_resumed.test_loss == history.test_loss
    assert all(math.isfinite(loss) for loss in history.test_loss)

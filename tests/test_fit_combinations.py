"""``fit`` with several of its features at once, against the loop a torch user writes.

Each case trains a 2-8-3 network for a few epochs with an optimizer, a scheduler,
gradient clipping, frozen parameters, param groups, a loss and a dtype, and compares
the parameters, the optimizer's state and the History with a torch loop over a
``torch.utils.data.DataLoader``: to the bit in float32, to 1e-12 in float64. A case
with ``resume`` is stopped by a Ctrl-C inside its second epoch and resumed from its
checkpoint, and must end where the run that never stopped ends.
"""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import nograd.optim.lr_scheduler as nograd_schedulers
from nograd import nn, optim
from nograd.data import TensorDataset
from nograd.train import History, TrainingInterrupted, fit

N, BATCH, EPOCHS = 23, 5, 3  # 5 steps an epoch, the last of 3 samples
in_main_thread = threading.current_thread() is threading.main_thread()


def make_schedule(library: Any, name: str | None, optimizer: Any, steps: int) -> Any:
    if name is None:
        return None
    if name == "OneCycleLR":
        return library.OneCycleLR(optimizer, max_lr=0.05, total_steps=steps, cycle_momentum=False)
    if name == "ReduceLROnPlateau":
        return library.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    return library.StepLR(optimizer, step_size=2, gamma=0.5)


CASES: dict[str, dict[str, Any]] = {
    # the head's group listed first: the norm that clipping takes sums in the model's order
    "groups_head_first_clipped": dict(optimizer="Adam", options={"lr": 0.01}, groups=True,
                                      clip=0.05),
    "named_groups_clipped_rmsprop": dict(optimizer="RMSprop", options={"lr": 0.005,
                                         "centered": True}, groups=True, named=True, clip=0.05),
    "fused_adamw_frozen_per_step": dict(optimizer="AdamW", options={"lr": 0.01, "fused": True},
                                        freeze="bias", schedule="OneCycleLR", per_step=True,
                                        resume=True),
    "sgd_nesterov_weighted_smoothed": dict(optimizer="SGD", options={"lr": 0.1, "momentum": 0.9,
                                           "nesterov": True}, loss="weighted_ce", clip=0.5,
                                           resume=True),
    "nadam_mse_float64_plateau": dict(optimizer="NAdam", options={"lr": 0.01}, loss="mse",
                                      dtype=torch.float64, schedule="ReduceLROnPlateau"),
    "adagrad_bce_frozen_layer": dict(optimizer="Adagrad", options={"lr": 0.05, "lr_decay": 0.01},
                                     loss="bce", freeze="layer", schedule="StepLR", groups=True,
                                     clip=0.05, resume=True),
    "lbfgs_clipped": dict(optimizer="LBFGS", options={"lr": 0.5, "max_iter": 3,
                          "history_size": 4, "line_search_fn": "strong_wolfe"}, clip=0.5),
}  # fmt: skip


class Case:
    """One configuration, built for either library from the same seeds."""

    def __init__(self, **config: Any) -> None:
        self.config = {"dtype": torch.float32, "loss": "ce", "per_step": False, **config}
        self.dtype = self.config["dtype"]
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, 2, generator=generator, dtype=self.dtype)
        self.y = torch.randint(0, 3, (N,), generator=generator)
        self.test_x = torch.randn(11, 2, generator=generator, dtype=self.dtype)
        self.test_y = torch.randint(0, 3, (11,), generator=generator)

    def build(self, library: Any, schedulers: Any, optimizers: Any) -> tuple[Any, ...]:
        config = self.config
        torch.manual_seed(1)
        model = library.Sequential(library.Linear(2, 8), library.Tanh(), library.Linear(8, 3))
        model.to(self.dtype)
        frozen = {"bias": [model[0].bias], "layer": list(model[0].parameters())}
        for param in frozen.get(config.get("freeze", ""), []):
            if library is torch.nn:
                param.requires_grad_(False)
            else:
                param.trainable = False
        named = list(model.named_parameters())
        strip = (lambda ps: ps) if config.get("named") else (lambda ps: [p for _, p in ps])
        params: Any = strip(named)
        if config.get("groups"):  # the head first, the first layer at half the rate
            head = [(n, p) for n, p in named if n.startswith("2.")]
            first = [(n, p) for n, p in named if n.startswith("0.")]
            half = config["options"]["lr"] / 2
            params = [{"params": strip(head)}, {"params": strip(first), "lr": half}]
        optimizer = getattr(optimizers, config["optimizer"])(params, **config["options"])
        steps = EPOCHS * math.ceil(N / BATCH) if config["per_step"] else EPOCHS
        scheduler = make_schedule(schedulers, config.get("schedule"), optimizer, steps)
        weight = torch.tensor([0.5, 2.0, 1.0], dtype=self.dtype)
        loss_fn = {
            "ce": lambda: library.CrossEntropyLoss(),
            "weighted_ce": lambda: library.CrossEntropyLoss(weight=weight, label_smoothing=0.1),
            "mse": lambda: library.MSELoss(),
            "bce": lambda: library.BCEWithLogitsLoss(),
        }[config["loss"]]()
        return model, optimizer, scheduler, loss_fn

    def fit(self, **options: Any) -> tuple[Any, Any, History]:
        model, optimizer, scheduler, loss_fn = self.build(nn, nograd_schedulers, optim)
        if "at_step" in options:  # Ctrl-C just before this call of optimizer.step
            original, at, calls = optimizer.step, options.pop("at_step"), [0]

            def step(*args: Any) -> Any:
                calls[0] += 1
                if calls[0] == at:
                    signal.raise_signal(signal.SIGINT)
                return original(*args)

            optimizer.step = step
        torch.manual_seed(2)
        history = fit(
            model, loss_fn, optimizer, TensorDataset(self.x, self.y),
            TensorDataset(self.test_x, self.test_y), epochs=EPOCHS, batch_size=BATCH,
            scheduler=scheduler, scheduler_interval="step" if self.config["per_step"] else "epoch",
            generator=torch.Generator().manual_seed(3), progress=False,
            clip_grad_norm=self.config.get("clip"), **options,
        )  # fmt: skip
        return model, optimizer, history

    def torch_loop(self) -> tuple[Any, Any, dict[str, list[float]]]:
        """The loop a torch user writes, with fit's History computed beside it."""
        model, optimizer, scheduler, loss_fn = self.build(torch.nn, torch.optim.lr_scheduler,
                                                          torch.optim)  # fmt: skip
        torch.manual_seed(2)
        dataset = torch.utils.data.TensorDataset(self.x, self.y)
        generator = torch.Generator().manual_seed(3)
        loader = torch.utils.data.DataLoader(dataset, BATCH, shuffle=True, generator=generator)
        history: dict[str, list[float]] = {"train_loss": [], "train_acc": [], "test_loss": [],
                                           "test_acc": [], "lr": []}  # fmt: skip
        weighted = self.config["loss"] == "weighted_ce"
        clip = self.config.get("clip")
        summed = torch.promote_types(self.dtype, torch.float32)

        def target(y: torch.Tensor) -> torch.Tensor:
            if self.config["loss"] in ("mse", "bce"):
                return torch.nn.functional.one_hot(y, 3).to(self.dtype)
            return y

        for _ in range(EPOCHS):
            history["lr"].append(optimizer.param_groups[0]["lr"])
            model.train()
            loss_sum, weight_sum, correct = torch.zeros((), dtype=summed), 0.0, 0
            for x, y in loader:
                first: list[tuple[torch.Tensor, torch.Tensor]] = []

                def closure(x: torch.Tensor = x, y: torch.Tensor = y, first: list = first) -> Any:
                    optimizer.zero_grad()
                    with torch.enable_grad():
                        output = model(x)
                        loss = loss_fn(output, target(y))
                        loss.backward()
                    first.append((output.detach(), loss.detach()))
                    if clip is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                    return loss

                if isinstance(optimizer, torch.optim.LBFGS):
                    optimizer.step(closure)
                else:
                    closure()
                    optimizer.step()
                if scheduler is not None and self.config["per_step"]:
                    scheduler.step()
                output, loss = first[0]
                if weighted:  # fit weighs each batch's mean by its sum of class weights
                    weighs = loss_fn.weight[y].sum()
                    loss_sum.add_(loss * weighs)
                    weight_sum += float(weighs)
                else:
                    loss_sum.add_(loss, alpha=y.shape[0])
                correct += int((output.argmax(1) == y).sum())
            history["train_loss"].append(float(loss_sum) / (weight_sum if weighted else N))
            history["train_acc"].append(correct / N)
            model.eval()
            with torch.no_grad():
                output = model(self.test_x)
                test_loss = loss_fn(output, target(self.test_y)).to(summed)
                # fit sums each batch's mean times what it weighs, and divides at the end
                weighs = loss_fn.weight[self.test_y].sum() if weighted else torch.tensor(11)
                history["test_loss"].append(float(test_loss * weighs) / float(weighs))
                history["test_acc"].append(int((output.argmax(1) == self.test_y).sum()) / 11)
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(history["test_loss"][-1])
            elif scheduler is not None and not self.config["per_step"]:
                scheduler.step()
        return model, optimizer, history


def assert_close(a: Any, b: Any, dtype: torch.dtype, what: object) -> None:
    if isinstance(a, torch.Tensor):
        if dtype == torch.float64 and a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=str(what))
        else:
            assert torch.equal(a, torch.as_tensor(b)), what
    elif isinstance(a, list):  # LBFGS's history of vectors
        assert len(a) == len(b), what
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_close(u, v, dtype, (what, i))
    elif isinstance(a, float) and dtype == torch.float64:
        assert a == pytest.approx(b, rel=1e-12, nan_ok=True), what
    else:
        assert a == b or (a != a and b != b), what


def assert_same_run(ours: tuple[Any, ...], theirs: tuple[Any, ...], dtype: torch.dtype) -> None:
    (model, optimizer, history), (twin, twin_optimizer, twin_history) = ours, theirs
    state = model.state_dict()
    for name, value in twin.state_dict().items():
        assert_close(state[name], value, dtype, name)
    ours_state, their_state = optimizer.state_dict(), twin_optimizer.state_dict()
    groups = [{k: v for k, v in g.items() if k != "foreach"} for g in ours_state["param_groups"]]
    assert groups == [
        {k: v for k, v in g.items() if k != "foreach"} for g in their_state["param_groups"]
    ]
    assert ours_state["state"].keys() == their_state["state"].keys()
    for index, entry in their_state["state"].items():
        for key, value in entry.items():
            assert_close(ours_state["state"][index][key], value, dtype, (index, key))
    recorded = history if isinstance(history, dict) else history.to_dict()
    for key, values in twin_history.items():
        assert len(recorded[key]) == len(values), key
        for epoch, (a, b) in enumerate(zip(recorded[key], values, strict=True)):
            assert_close(a, b, dtype, (key, epoch))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fit_with_features_combined_is_the_torch_loop(name: str) -> None:
    case = Case(**CASES[name])
    assert_same_run(case.fit(), case.torch_loop(), case.dtype)


@pytest.mark.skipif(not in_main_thread, reason="signal handlers live in the main thread")
@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.get("resume")))
def test_a_combined_run_stopped_by_ctrl_c_resumes_to_the_bit(name: str, tmp_path: Path) -> None:
    case = Case(**CASES[name])
    straight = case.fit()
    path = tmp_path / "c.safetensors"
    with pytest.raises(TrainingInterrupted):
        case.fit(at_step=7, checkpoint_path=path, checkpoint_every=100)  # in epoch 2
    torch.manual_seed(12345)  # the checkpoint, not the global generator, decides
    resumed = case.fit(resume_from=path)
    straight_history = straight[2].to_dict()
    resumed_history = resumed[2].to_dict()
    del straight_history["seconds"], resumed_history["seconds"]
    assert_same_run((*resumed[:2], resumed_history), (*straight[:2], straight_history),
                    torch.float32)  # fmt: skip

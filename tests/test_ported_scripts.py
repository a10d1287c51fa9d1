"""Ordinary PyTorch training scripts and their nograd ports, run from the same seed.

Each test holds a script as people write it for torch (DataLoader, a scheduler,
clipping, an eval loop under ``torch.no_grad``, ``state_dict`` saved and loaded, a
custom ``nn.Module``, ...) and its port, which changes only what the README and
docs/design.md say changes: the imports, ``loss.backward()`` becoming
``model.backward(loss_fn.backward())``, a custom module's ``backward``, and
``requires_grad`` becoming ``trainable``. Both run on the same data from the same seed
and must end with the same parameters, bit for bit in float32 (and float64), and the
same metrics. The data are small stand-ins for sklearn's digits and diabetes sets,
made here so that the tests need nothing but torch.

The last tests pin what the ports needed from nograd beyond that: a Parameter that
answers ``p.dim()``, ``p.ndim``, ``p.size()``, ``p.element_size()``; keyword arguments
passed through ``model(x, scale=2.0)``; a plain attribute set before
``super().__init__()``; and errors that name nograd's spelling of autograd's words.
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import TensorDataset as TorchTensorDataset
from torch.utils.data import random_split as torch_random_split

from nograd import nn, optim
from nograd.data import DataLoader, Dataset, TensorDataset, random_split

Metrics = list[Any]


def digit_like(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of 8 x 8 pixels in [0, 1], flattened, each a noisy copy of one of ten
    prototypes, and its class: the shape of ``load_digits`` scaled by 1/16."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(10, 64, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    noise = 0.35 * torch.randn(n, 64, generator=generator)
    return (prototypes[labels] + noise).clamp(0, 1), labels


def diabetes_like(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n standardised rows of 10 features and a standardised target of shape (n, 1),
    partly nonlinear in them: the shape of ``load_diabetes``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=generator)
    w = torch.randn(10, 1, generator=generator)
    y = (
        x @ w
        + 0.5 * torch.tanh(x[:, :1] * x[:, 1:2])
        + 0.3 * torch.randn(n, 1, generator=generator)
    )
    return x, (y - y.mean()) / y.std()


def assert_same_state(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> None:
    """The same keys in the same order, and every tensor the same bits."""
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key


def run_both(
    original: Callable[[], tuple[Mapping[str, torch.Tensor], Metrics]],
    port: Callable[[], tuple[Mapping[str, torch.Tensor], Metrics]],
) -> Metrics:
    """Run the torch script (with autograd on, as it is written for) and its port; they
    must end with the same state and metrics. Returns the metrics."""
    with torch.enable_grad():
        torch_state, torch_metrics = original()
    state, metrics = port()
    assert_same_state(state, torch_state)
    assert metrics == torch_metrics
    return metrics


# ---------------------------------------------------------------------------------------
# 1. A classifier: CrossEntropyLoss, Adam, StepLR, DataLoader, clip_grad_norm_, an eval
#    loop under torch.no_grad, accuracy, and the weights saved and loaded with torch.save.


def test_digits_classifier_with_adam_steplr_clipping_and_a_saved_model(tmp_path: Path) -> None:
    def original() -> tuple[Mapping[str, torch.Tensor], Metrics]:
        torch.manual_seed(0)
        x, y = digit_like(400)
        perm = torch.randperm(len(x))
        train, test = perm[:300], perm[300:]
        train_ds = TorchTensorDataset(x[train], y[train])
        train_loader = TorchDataLoader(train_ds, batch_size=32, shuffle=True)
        test_loader = TorchDataLoader(TorchTensorDataset(x[test], y[test]), batch_size=64)

        def build() -> torch.nn.Sequential:
            return torch.nn.Sequential(
                torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                torch.nn.Linear(48, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10),
            )  # fmt: skip

        model = build()
        criterion = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        metrics: Metrics = [sum(p.numel() for p in model.parameters() if p.requires_grad)]
        for _ in range(5):
            model.train()
            running = 0.0
            for xb, yb in train_loader:
                optimizer.zero_grad()
                loss = criterion(model(xb), yb)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                optimizer.step()
                running += loss.item() * xb.size(0)
            scheduler.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for xb, yb in test_loader:
                    correct += (model(xb).argmax(dim=1) == yb).sum().item()
            metrics.append((running / len(train_ds), correct, norm.item()))
            metrics.append(scheduler.get_last_lr())
        torch.save(model.state_dict(), tmp_path / "torch.pt")
        loaded = build()
        loaded.load_state_dict(torch.load(tmp_path / "torch.pt"))
        loaded.eval()
        with torch.no_grad():
            metrics.append(torch.equal(loaded(x[test]), model(x[test])))
        return model.state_dict(), metrics

    def port() -> tuple[Mapping[str, torch.Tensor], Metrics]:
        torch.manual_seed(0)
        x, y = digit_like(400)
        perm = torch.randperm(len(x))
        train, test = perm[:300], perm[300:]
        train_ds = TensorDataset(x[train], y[train])
        train_loader = DataLoader(train_ds, batch_size=32, shuffle=True)
        test_loader = DataLoader(TensorDataset(x[test], y[test]), batch_size=64)

        def build() -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.2),
                nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10),
            )  # fmt: skip

        model = build()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
        scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        metrics: Metrics = [sum(p.numel() for p in model.parameters() if p.trainable)]
        for _ in range(5):
            model.train()
            running = 0.0
            for xb, yb in train_loader:
                optimizer.zero_grad()
                loss = criterion(model(xb), yb)
                model.backward(criterion.backward())
                norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
                optimizer.step()
                running += loss.item() * xb.size(0)
            scheduler.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for xb, yb in test_loader:
                    correct += (model(xb).argmax(dim=1) == yb).sum().item()
            metrics.append((running / len(train_ds), correct, norm.item()))
            metrics.append(scheduler.get_last_lr())
        torch.save(model.state_dict(), tmp_path / "nograd.pt")
        loaded = build()
        loaded.load_state_dict(torch.load(tmp_path / "nograd.pt"))
        loaded.eval()
        with torch.no_grad():
            metrics.append(torch.equal(loaded(x[test]), model(x[test])))
        return model.state_dict(), metrics

    metrics = run_both(original, port)
    assert metrics[-1] is True  # the saved weights predict as the model did
    assert metrics[-3][1] > 80  # of 100 test images: it did learn
    # the file torch wrote loads into the nograd model and predicts the same
    ported = nn.Sequential(
        nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10),
    )  # fmt: skip
    ported.load_state_dict(torch.load(tmp_path / "torch.pt"))
    assert_same_state(ported.state_dict(), torch.load(tmp_path / "nograd.pt"))


# ---------------------------------------------------------------------------------------
# 2. A regression: a custom Module over a ModuleList, model.apply(init) with isinstance,
#    SGD with Nesterov momentum, ReduceLROnPlateau, clip_grad_value_, and early stopping
#    that keeps the best weights with copy.deepcopy(model.state_dict()).


def test_regression_with_a_modulelist_model_plateau_schedule_and_early_stopping() -> None:
    class TorchMLP(torch.nn.Module):
        def __init__(self, sizes: list[int], p: float = 0.1) -> None:
            super().__init__()
            pairs = itertools.pairwise(sizes)
            self.layers = torch.nn.ModuleList([torch.nn.Linear(a, b) for a, b in pairs])
            self.dropout = torch.nn.Dropout(p)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers[:-1]:
                x = self.dropout(F.relu(layer(x)))
            return self.layers[-1](x)  # type: ignore[no-any-return]

    class MLP(nn.Module):
        """The port: one ReLU and one Dropout per hidden layer, since each keeps its own
        mask for the backward (torch's F.relu and its shared Dropout need no such care)."""

        def __init__(self, sizes: list[int], p: float = 0.1) -> None:
            super().__init__()
            pairs = itertools.pairwise(sizes)
            self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in pairs])
            self.acts = nn.ModuleList([nn.ReLU() for _ in sizes[2:]])
            self.dropouts = nn.ModuleList([nn.Dropout(p) for _ in sizes[2:]])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer, act, dropout in zip(self.layers[:-1], self.acts, self.dropouts, strict=True):
                x = dropout(act(layer(x)))
            return self.layers[-1](x)  # type: ignore[no-any-return]

        def backward(self, grad: torch.Tensor) -> torch.Tensor:
            grad = self.layers[-1].backward(grad)
            hidden = list(zip(self.layers[:-1], self.acts, self.dropouts, strict=True))
            for layer, act, dropout in reversed(hidden):
                grad = layer.backward(act.backward(dropout.backward(grad)))
            return grad

    def script(lib: Any, data: Any, optimizers: Any, make_model: Any) -> Any:
        """The script, written once against torch's names: ``lib`` is torch.nn or
        nograd.nn, ``data`` and ``optimizers`` their loaders and optimizers."""

        def init_weights(m: Any) -> None:
            if isinstance(m, lib.Linear):
                lib.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.bias.data.fill_(0.01)

        torch.manual_seed(1)
        x, y = diabetes_like(200)
        train_ds, val_ds = data.random_split(data.TensorDataset(x, y), [0.8, 0.2])
        train_loader = data.DataLoader(train_ds, batch_size=16, shuffle=True, drop_last=True)
        val_loader = data.DataLoader(val_ds, batch_size=64)
        model = make_model([10, 24, 24, 1]).to("cpu")
        model.apply(init_weights)
        metrics: Metrics = [sum(p.numel() for p in model.parameters())]
        criterion = lib.MSELoss()
        optimizer = optimizers.SGD(
            model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4
        )
        scheduler = optimizers.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        best_val, best_state, bad_epochs = math.inf, None, 0
        for _ in range(25):
            model.train()
            for xb, yb in train_loader:
                loss = criterion(model(xb), yb)
                optimizer.zero_grad()
                if lib is nn:
                    model.backward(criterion.backward())
                else:
                    loss.backward()
                lib.utils.clip_grad_value_(model.parameters(), clip_value=0.5)
                optimizer.step()
            model.eval()
            val_loss = 0.0
            with torch.no_grad():
                for xb, yb in val_loader:
                    val_loss += criterion(model(xb), yb).item() * len(xb)
            val_loss /= len(val_ds)
            scheduler.step(val_loss)
            metrics.append((val_loss, optimizer.param_groups[0]["lr"]))
            if val_loss < best_val - 1e-4:
                best_val, bad_epochs = val_loss, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                if bad_epochs >= 4:
                    break
        model.load_state_dict(best_state)
        return model.state_dict(), [*metrics, best_val]

    class TorchData:  # torch.utils.data under the names the script uses
        DataLoader, TensorDataset, random_split = (
            TorchDataLoader,
            TorchTensorDataset,
            torch_random_split,
        )

    class Data:
        DataLoader, TensorDataset, random_split = DataLoader, TensorDataset, random_split

    metrics = run_both(
        lambda: script(torch.nn, TorchData, torch.optim, TorchMLP),
        lambda: script(nn, Data, optim, MLP),
    )
    assert metrics[0] == 10 * 24 + 24 + 24 * 24 + 24 + 24 + 1
    assert metrics[-1] < 0.5  # the best validation loss: it did learn


# ---------------------------------------------------------------------------------------
# 3. Fine-tuning: a frozen first layer, AdamW with a param group without weight decay
#    for biases and norms, OneCycleLR stepped per optimizer step, and gradients
#    accumulated over three micro-batches of a loss divided by three.


def test_gradient_accumulation_with_a_frozen_layer_param_groups_and_one_cycle() -> None:
    def script(lib: Any, optimizers: Any, data: tuple[Any, Any]) -> Any:
        loader_class, dataset_class = data
        torch.manual_seed(2)
        x, y = digit_like(240, seed=2)
        loader = loader_class(dataset_class(x, y), batch_size=16, shuffle=True)
        model = lib.Sequential(
            lib.Linear(64, 32), lib.Tanh(), lib.Linear(32, 24), lib.SiLU(),
            lib.LayerNorm(24), lib.Linear(24, 10),
        )  # fmt: skip

        def init(m: Any) -> None:
            if isinstance(m, lib.Linear):
                lib.init.xavier_uniform_(m.weight, gain=lib.init.calculate_gain("tanh"))
                if m.bias is not None:
                    lib.init.zeros_(m.bias)

        with torch.no_grad():
            model.apply(init)
        for p in model[0].parameters():
            if lib is nn:
                p.trainable = False
            else:
                p.requires_grad = False

        def trains(p: Any) -> bool:
            return bool(p.trainable if lib is nn else p.requires_grad)

        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if trains(p):
                (no_decay if name.endswith("bias") or p.ndim == 1 else decay).append(p)
        metrics: Metrics = [
            sum(p.numel() for p in model.parameters() if trains(p)),
            sum(p.numel() * p.element_size() for p in model.parameters()),
        ]
        optimizer = optimizers.AdamW(
            [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
            lr=3e-3,
        )
        accum, epochs = 3, 3
        scheduler = optimizers.lr_scheduler.OneCycleLR(
            optimizer, max_lr=1e-2, epochs=epochs, steps_per_epoch=len(loader) // accum
        )
        criterion = lib.CrossEntropyLoss(label_smoothing=0.1)
        for _ in range(epochs):
            model.train()
            optimizer.zero_grad()
            for i, (xb, yb) in enumerate(loader):
                loss = criterion(model(xb), yb) / accum
                if lib is nn:  # d(loss / accum)/d(loss) = 1 / accum, computed as torch does
                    model.backward(criterion.backward(torch.tensor(1.0) / accum))
                else:
                    loss.backward()
                if (i + 1) % accum == 0:
                    lib.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
            model.eval()
            with torch.no_grad():
                accuracy = (model(x).argmax(1) == y).float().mean().item()
            metrics.append((accuracy, scheduler.get_last_lr(), optimizer.param_groups[0]["betas"]))
        return model.state_dict(), metrics

    metrics = run_both(
        lambda: script(torch.nn, torch.optim, (TorchDataLoader, TorchTensorDataset)),
        lambda: script(nn, optim, (DataLoader, TensorDataset)),
    )
    assert metrics[0] == 32 * 24 + 24 + 24 + 24 + 24 * 10 + 10  # all but the first layer
    assert metrics[1] == 4 * (64 * 32 + 32 + 32 * 24 + 24 + 24 + 24 + 24 * 10 + 10)


# ---------------------------------------------------------------------------------------
# 4. A checkpoint: a custom Module around a Sequential with BatchNorm1d, SGD with
#    momentum, MultiStepLR; {model, optimizer, scheduler, epoch, rng} saved with
#    torch.save mid-run, and a resumed run that ends where the straight run ended.


def test_a_checkpoint_resumes_to_the_bits_of_the_straight_run(tmp_path: Path) -> None:
    def script(lib: Any, optimizers: Any, loader_class: Any, dataset_class: Any) -> Any:
        class Net(lib.Module):  # type: ignore[name-defined, misc]
            def __init__(self) -> None:
                super().__init__()
                self.body = lib.Sequential(
                    lib.Linear(64, 32), lib.BatchNorm1d(32), lib.ReLU(),
                    lib.Linear(32, 24), lib.BatchNorm1d(24), lib.ReLU(),
                )  # fmt: skip
                self.head = lib.Linear(24, 10)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(self.body(x))  # type: ignore[no-any-return]

            def backward(self, grad: torch.Tensor) -> torch.Tensor:  # the port's addition
                return self.body.backward(self.head.backward(grad))  # type: ignore[no-any-return]

        def build() -> tuple[Any, Any, Any]:
            model = Net()
            optimizer = optimizers.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            scheduler = optimizers.lr_scheduler.MultiStepLR(optimizer, [2, 3], gamma=0.1)
            return model, optimizer, scheduler

        def train_epoch(model: Any, optimizer: Any, scheduler: Any) -> None:
            model.train()
            for xb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = criterion(model(xb), yb)
                if lib is nn:
                    model.backward(criterion.backward())
                else:
                    loss.backward()
                optimizer.step()
            scheduler.step()

        torch.manual_seed(3)
        x, y = digit_like(200, seed=3)
        loader = loader_class(dataset_class(x, y), batch_size=25, shuffle=True)
        criterion = lib.CrossEntropyLoss()
        model, optimizer, scheduler = build()
        for _ in range(2):
            train_epoch(model, optimizer, scheduler)
        path = tmp_path / f"{lib.__name__}.ckpt"
        torch.save(
            {
                "epoch": 2, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
            },
            path,
        )  # fmt: skip
        for _ in range(2, 4):
            train_epoch(model, optimizer, scheduler)
        straight = copy.deepcopy(model.state_dict())

        model, optimizer, scheduler = build()  # as in a new process
        checkpoint = torch.load(path)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["rng"])
        for _ in range(checkpoint["epoch"], 4):
            train_epoch(model, optimizer, scheduler)
        resumed = all(torch.equal(straight[k], v) for k, v in model.state_dict().items())
        return model.state_dict(), [resumed, scheduler.get_last_lr()]

    metrics = run_both(
        lambda: script(torch.nn, torch.optim, TorchDataLoader, TorchTensorDataset),
        lambda: script(nn, optim, DataLoader, TensorDataset),
    )
    assert metrics[0] is True


# ---------------------------------------------------------------------------------------
# 5. Two heads on one trunk (ModuleDict), a Dataset subclass that augments with
#    torch.randn, a seeded loader generator, a weighted sum of two losses, RMSprop with
#    a LambdaLR warm-up, an EMA copy made with deepcopy, eval under inference_mode;
#    everything in float64 through torch.set_default_dtype.


def test_two_heads_augmented_dataset_ema_and_warmup_in_float64() -> None:
    class TorchDigits(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
        def __init__(self, x: torch.Tensor, y: torch.Tensor, noise: float) -> None:
            self.x, self.y, self.noise = x.view(-1, 1, 8, 8), y, noise

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return self.x[i] + self.noise * torch.randn_like(self.x[i]), self.y[i]

    class Digits(Dataset[tuple[torch.Tensor, torch.Tensor]]):  # the same, on nograd's base
        def __init__(self, x: torch.Tensor, y: torch.Tensor, noise: float) -> None:
            self.x, self.y, self.noise = x.view(-1, 1, 8, 8), y, noise

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return self.x[i] + self.noise * torch.randn_like(self.x[i]), self.y[i]

    def script(lib: Any, optimizers: Any, loader_class: Any, dataset_class: Any) -> Any:
        class TwoHead(lib.Module):  # type: ignore[name-defined, misc]
            def __init__(self) -> None:
                super().__init__()
                self.trunk = lib.Sequential(
                    lib.Linear(64, 32), lib.Softplus(), lib.Linear(32, 32), lib.Sigmoid()
                )
                self.heads = lib.ModuleDict(
                    {"digit": lib.Linear(32, 10), "parity": lib.Linear(32, 1)}
                )

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                self.shape = x.shape
                h = self.trunk(x.view(x.size(0), -1))
                return self.heads["digit"](h), self.heads["parity"](h)

            def backward(self, grads: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
                g_digit, g_parity = grads  # the port's addition: both heads feed h
                g_h = self.heads["digit"].backward(g_digit) + self.heads["parity"].backward(
                    g_parity
                )
                return self.trunk.backward(g_h).view(self.shape)  # type: ignore[no-any-return]

        torch.manual_seed(4)
        x, y = digit_like(240, seed=4)
        x = x.double()
        generator = torch.Generator().manual_seed(123)
        loader = loader_class(
            dataset_class(x[:160], y[:160], 0.05), batch_size=20, shuffle=True, generator=generator
        )
        model = TwoHead()
        ema = copy.deepcopy(model)
        ce = lib.CrossEntropyLoss()
        bce = lib.BCEWithLogitsLoss(pos_weight=torch.tensor([1.5]))
        optimizer = optimizers.RMSprop(model.parameters(), lr=3e-3, alpha=0.9)
        scheduler = optimizers.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10))
        metrics: Metrics = []
        for _ in range(3):
            model.train()
            for xb, yb in loader:
                digit, parity = model(xb)
                loss = ce(digit, yb) + 0.5 * bce(parity, (yb % 2).double().unsqueeze(1))
                optimizer.zero_grad()
                if lib is nn:  # d(ce + 0.5 bce)/d(bce) = 0.5
                    model.backward((ce.backward(), bce.backward(torch.tensor(0.5))))
                else:
                    loss.backward()
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                        if lib is nn:
                            p_ema.data.mul_(0.9).add_(p.data, alpha=0.1)
                        else:
                            p_ema.mul_(0.9).add_(p, alpha=0.1)
            ema.eval()
            with torch.inference_mode():
                digit, parity = ema(x[160:].view(-1, 1, 8, 8))
                metrics.append(
                    ((digit.argmax(1) == y[160:]).sum().item(), parity.sum().item(), loss.item())
                )
        state = OrderedDict(model.state_dict())
        state.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        return state, metrics

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        run_both(
            lambda: script(torch.nn, torch.optim, TorchDataLoader, TorchDigits),
            lambda: script(nn, optim, DataLoader, Digits),
        )
    finally:
        torch.set_default_dtype(previous)


# ---------------------------------------------------------------------------------------
# What the ports needed of nograd itself.


def test_a_parameter_answers_the_tensor_questions_scripts_ask() -> None:
    """p.dim() > 1 picks the weights to initialise (the Transformer tutorial's idiom),
    p.ndim == 1 the biases and norms to spare from weight decay, numel * element_size
    the model's size in bytes: each as torch's parameter answers."""
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3, bias=False))
    theirs = torch.nn.Sequential(
        torch.nn.Linear(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3, bias=False)
    )
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert (p.dim(), p.ndim, p.size(), p.size(0), p.size(-1)) == (
            q.dim(), q.ndim, q.size(), q.size(0), q.size(-1),
        )  # fmt: skip
        assert (p.nelement(), p.element_size(), p.is_cuda) == (
            q.nelement(), q.element_size(), q.is_cuda,
        )  # fmt: skip
    ours.to(torch.float16)
    assert sum(p.numel() * p.element_size() for p in ours.parameters()) == 2 * (20 + 4 + 8 + 12)

    ours.float()
    theirs.load_state_dict(ours.state_dict())
    for lib, model in ((nn, ours), (torch.nn, theirs)):
        torch.manual_seed(1)
        for p in model.parameters():
            if p.dim() > 1:
                lib.init.xavier_uniform_(p)
    with torch.no_grad():
        assert_same_state(ours.state_dict(), theirs.state_dict())


def test_keyword_arguments_reach_forward_as_in_torch() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            self.scale = scale
            return self.fc(x) * scale  # type: ignore[no-any-return]

        def backward(self, grad: torch.Tensor) -> torch.Tensor:
            return self.fc.backward(grad * self.scale)  # dL/dy_fc = dL/dy * scale

    class TorchScaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return self.fc(x) * scale  # type: ignore[no-any-return]

    torch.manual_seed(0)
    ours, theirs = Scaled(), TorchScaled()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(ours(x, scale=2.0), theirs(x, scale=2.0))
    assert torch.equal(ours(x=x), theirs(x=x))


def test_a_plain_attribute_set_before_super_init_is_kept_as_in_torch() -> None:
    def build(lib: Any) -> Any:
        class Net(lib.Module):  # type: ignore[name-defined, misc]
            def __init__(self, width: int) -> None:
                self.width = width  # before super().__init__(): torch allows a plain value
                super().__init__()
                self.fc = lib.Linear(2, self.width)

        return Net(3)

    ours, theirs = build(nn), build(torch.nn)
    assert ours.width == theirs.width == 3
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("what", ["module", "parameter"])
def test_a_parameter_or_module_before_super_init_is_refused_as_in_torch(what: str) -> None:
    def build(lib: Any) -> None:
        class Net(lib.Module):  # type: ignore[name-defined, misc]
            def __init__(self) -> None:
                if what == "module":
                    self.fc = lib.Linear(2, 3)
                else:
                    self.w = lib.Parameter(torch.zeros(2))
                super().__init__()

        Net()

    for lib in (nn, torch.nn):
        with pytest.raises(AttributeError, match=r"before Module.__init__\(\) call"):
            build(lib)


def test_a_buffer_registered_before_super_init_says_what_to_do() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            self.register_buffer("mean", torch.zeros(2))

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\) first"):
        Net()


def test_autograd_words_get_nograds_spellings_in_the_error() -> None:
    """A ported script's p.requires_grad, model.requires_grad_(False) or p.copy_(...)
    still raises AttributeError (hasattr and getattr with a default work as before),
    now naming what to write instead."""
    model = nn.Sequential(nn.Linear(2, 3))
    p = model[0].weight
    with pytest.raises(AttributeError, match=r"requires_grad.*trainable"):
        _ = p.requires_grad  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match=r"requires_grad_.*freeze\(\)"):
        model.requires_grad_(False)  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match=r"not a Tensor; use param\.data\.copy_"):
        p.copy_(torch.zeros(3, 2))  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match=r"^'Parameter' object has no attribute 'nope'$"):
        _ = p.nope  # type: ignore[attr-defined]
    assert not hasattr(p, "requires_grad") and getattr(p, "requires_grad", 7) == 7
    assert not hasattr(model, "requires_grad_") and not hasattr(model, "nope")
    # the copies go on as before: no gradient, the frozen flag kept
    p.trainable = False
    p.grad = torch.ones(3, 2)
    for clone in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert clone.grad is None and clone.trainable is False and torch.equal(clone.data, p.data)
    assert list(copy.deepcopy(model).state_dict()) == ["0.weight", "0.bias"]

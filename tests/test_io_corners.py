"""Corners of model files, gradcheck and the evaluate command, with torch as the oracle."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

import nograd.nn
from nograd import io, optim
from nograd.cli import main
from nograd.gradcheck import gradcheck
from nograd.nn import Linear, Module, MSELoss, Sequential
from nograd.nn.activations import ELU, GELU, LeakyReLU, ReLU, Tanh
from nograd.nn.batch_norm import BatchNorm1d
from nograd.nn.dropout import Dropout
from nograd.nn.layer_norm import LayerNorm
from tests.oracle import since_torch_2_13

Builder = Callable[[Any], Any]  # the same network from nograd.nn or torch.nn


def train_a_little(model: Module, optimizer: Any, steps: int = 3) -> None:
    g = torch.Generator().manual_seed(1)
    loss_fn = MSELoss()
    for _ in range(steps):
        x, y = torch.randn(5, 3, generator=g), torch.randn(5, 2, generator=g)

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> float:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            return float(loss)

        optimizer.step(closure)  # LBFGS calls it several times, the others once


def network() -> Sequential:
    torch.manual_seed(0)
    return Sequential(Linear(3, 4), Tanh(), Linear(4, 2))


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safetensors.safe_open(str(path), framework="pt") as file:
        return {key: file.get_tensor(key) for key in file.keys()}, file.metadata()  # noqa: SIM118


# ------------------------------------------------------ files and torch twins
TWINS: list[Any] = [  # Builders, one marked
    lambda nn: nn.Sequential(
        nn.Linear(4, 4, bias=False), nn.LayerNorm(4, elementwise_affine=False)
    ),
    lambda nn: nn.Sequential(nn.Linear(4, 4), nn.LayerNorm([4], bias=False)),
    lambda nn: nn.Sequential(nn.BatchNorm1d(4, affine=False)),
    lambda nn: nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False)),
    pytest.param(  # BatchNorm1d's bias=False is torch 2.13's
        lambda nn: nn.Sequential(nn.BatchNorm1d(4, bias=False, momentum=None)),
        marks=since_torch_2_13,
    ),
    lambda nn: nn.Sequential(
        nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Softplus(2.0, 5.0), nn.Linear(4, 4))),
        nn.ELU(0.3),
        nn.LeakyReLU(0.02),
        nn.Dropout(0.1),
        nn.SiLU(),
        nn.Unflatten(1, (2, 2)),
        nn.Flatten(),
        nn.LogSoftmax(-1),
    ),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("builder", TWINS)
def test_a_file_loads_into_the_torch_twin_and_back_with_the_same_bits(
    tmp_path: Path, builder: Builder, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    ours = builder(nograd.nn).to(dtype)
    for _ in range(2):  # running statistics worth saving
        ours(torch.randn(6, 4, dtype=dtype))
    path = tmp_path / "m.safetensors"
    io.save(ours, path)
    twin = builder(torch.nn).to(dtype)
    file = {k.removeprefix("model."): v for k, v in safetensors.torch.load_file(path).items()}
    twin.load_state_dict(file, strict=True)
    for key, tensor in twin.state_dict().items():
        assert (
            torch.equal(tensor, ours.state_dict()[key])
            and tensor.dtype == ours.state_dict()[key].dtype
        )
    loaded = io.load(path).eval()
    x = torch.randn(5, 4, dtype=dtype)
    with torch.no_grad():
        expected = twin.eval()(x)
    assert torch.equal(loaded(x), expected)


def test_a_strided_parameter_is_saved(tmp_path: Path) -> None:
    # weight[:, ::2] flattens to a 1-D view of stride 2, which cannot be read as bytes
    layer = Linear(4, 3)
    layer.weight.data = torch.randn(3, 8)[:, ::2]
    io.save(layer, tmp_path / "m.safetensors")
    assert torch.equal(io.load(tmp_path / "m.safetensors").weight.data, layer.weight.data)


def test_numpy_hyperparameters_are_saved_as_torch_takes_them(tmp_path: Path) -> None:
    model = Sequential(Linear(2, 2), Dropout(np.float64(0.25)), LeakyReLU(np.float64(0.1)))
    assert torch.nn.Dropout(np.float64(0.25)).p == 0.25  # torch takes them as they are
    io.save(model, tmp_path / "m.safetensors")
    _, dropout, leaky = io.load(tmp_path / "m.safetensors")
    assert (dropout.p, leaky.negative_slope) == (0.25, 0.1)


def test_save_names_itself_for_an_argument_load_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^nograd.io.save: .*negative_slope.*got 2000000.0"):
        io.save(Sequential(LeakyReLU(2e6)), tmp_path / "m.safetensors")


# ------------------------------------------------------------ optimizer state
OPTIMIZERS: dict[str, Callable[[Module], Any]] = {
    "Adam, named": lambda m: optim.Adam(m.named_parameters(), lr=0.01),
    "SGD, momentum": lambda m: optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
    "RMSprop, centered": lambda m: optim.RMSprop(m.parameters(), lr=0.01, centered=True),
    "LBFGS": lambda m: optim.LBFGS(m.parameters(), history_size=3),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_loaded_optimizer_keeps_its_state_order_and_saves_the_same_bytes(
    tmp_path: Path, name: str
) -> None:
    # safetensors returns the tensors in an order of its own, new in each process
    model = network()
    optimizer = OPTIMIZERS[name](model)
    train_a_little(model, optimizer)
    files = [tmp_path / f"{i}.safetensors" for i in range(3)]
    io.save(model, files[0], optimizer=optimizer)
    states = [optimizer.state_dict()["state"]]
    for before, after in itertools.pairwise(files):
        reloaded = OPTIMIZERS[name](network())
        again = io.load(before, optimizer=reloaded)
        states.append(reloaded.state_dict()["state"])
        io.save(again, after, optimizer=reloaded)
    assert list(states[0]) == list(states[1]) == list(states[2])
    assert files[1].read_bytes() == files[2].read_bytes()
    if name != "LBFGS":  # LBFGS's state mixes numbers and tensors: its numbers come back first
        assert [list(entry) for entry in states[1].values()] == [
            list(entry) for entry in states[0].values()
        ]
        assert files[0].read_bytes() == files[1].read_bytes()


def test_param_names_come_back_as_the_list_torch_keeps(tmp_path: Path) -> None:
    twin = torch.nn.Linear(3, 2)
    torch_state = torch.optim.Adam(twin.named_parameters()).state_dict()
    model = Linear(3, 2)
    io.save(model, tmp_path / "m.safetensors", optimizer=optim.Adam(model.named_parameters()))
    optimizer = optim.Adam(Linear(3, 2).named_parameters())
    io.load(tmp_path / "m.safetensors", optimizer=optimizer)
    ours = optimizer.state_dict()["param_groups"][0]
    theirs = torch_state["param_groups"][0]
    assert ours["param_names"] == theirs["param_names"] == ["weight", "bias"]
    assert type(ours["param_names"]) is type(theirs["param_names"]) is list
    assert type(ours["betas"]) is type(theirs["betas"]) is tuple
    saved = io.load_checkpoint(tmp_path / "m.safetensors").optimizer_state
    assert saved is not None and type(saved["param_groups"][0]["param_names"]) is list


@pytest.mark.parametrize("index", ["\u00b2", "\u0661", "00", " 0", "-0"])
def test_a_forged_state_index_is_refused_naming_the_file(tmp_path: Path, index: str) -> None:
    model = Linear(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(3, 2))
    model.backward(torch.randn(3, 2))
    optimizer.step()
    io.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    tensors, metadata = read(tmp_path / "m.safetensors")
    forged = {
        key.replace("optimizer.state.0.", f"optimizer.state.{index}."): t
        for key, t in tensors.items()
    }
    path = tmp_path / "forged.safetensors"
    safetensors.torch.save_file(forged, str(path), metadata=metadata)
    fresh = optim.SGD(Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"forged.safetensors: malformed optimizer .*state index"):
        io.load(path, optimizer=fresh)


# ------------------------------------------------------------------ gradcheck
def test_gradcheck_leaves_frozen_parameters_out_as_torch_checks_only_what_requires_grad() -> None:
    model = Sequential(Linear(3, 4), Tanh(), Linear(4, 2))
    model[0].freeze()
    x = torch.randn(5, 3, dtype=torch.float64)
    result = gradcheck(model, x)
    assert result.ok, str(result)
    assert [check.name for check in result.checks] == ["input", "2.weight", "2.bias"]

    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    twin.double().load_state_dict(model.state_dict())
    twin[0].requires_grad_(False)
    checked = [name for name, p in twin.named_parameters() if p.requires_grad]
    assert checked == ["2.weight", "2.bias"]  # what torch's gradcheck would perturb

    frozen = Linear(3, 2).freeze()
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(frozen, torch.tensor([[1, 2, 3]]))


class ScaledTanh(Module):
    """tanh with a backward scaled by (1 + delta): wrong unless delta is 0."""

    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.saved["y"] = y = torch.tanh(x)
        return y

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        y = self._saved_for(grad_output, "y")
        return grad_output * (1 - y * y) * (1 + self.delta)  # dL/dx = g (1 - y^2), scaled


class TorchScaledTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, delta: float) -> torch.Tensor:
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        ctx.delta = delta
        return y

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        return grad_output * (1 - y * y) * (1 + ctx.delta), None


@pytest.mark.parametrize("delta", [0.0, 1e-4, 1e-2, 0.1])
def test_gradcheck_judges_a_wrong_backward_as_torch_does(delta: float) -> None:
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours = gradcheck(ScaledTanh(delta), x).ok
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        theirs = torch.autograd.gradcheck(
            lambda t: TorchScaledTanh.apply(t, delta), (leaf,), raise_exception=False
        )
    assert ours == theirs == (delta < 1e-3)


# ------------------------------------------------------------ nograd evaluate
def test_evaluate_of_a_model_that_cannot_run_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = Sequential(Linear(2, 4), ReLU(), Linear(4, 2))
    metadata = {"format": "nograd", "format_version": "1"}
    metadata["architecture"] = json.dumps(io.architecture(model))
    mixed = {f"model.{key}": tensor for key, tensor in model.state_dict().items()}
    mixed["model.2.weight"] = mixed["model.2.weight"].double()
    eight = {f"model.{k}": t.to(torch.float8_e4m3fn) for k, t in model.state_dict().items()}
    for name, tensors in [("mixed", mixed), ("eight", eight)]:
        path = tmp_path / f"{name}.safetensors"
        safetensors.torch.save_file(tensors, str(path), metadata=metadata)
        capsys.readouterr()
        assert main(["evaluate", str(path), "--n", "10"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, err
        assert err.startswith(f"nograd: error: {path}: cannot evaluate the model it holds: ")


def test_round_trip_of_every_activation_argument(tmp_path: Path) -> None:
    model = Sequential(
        Linear(2, 3), GELU("tanh"), ELU(0.5, True), BatchNorm1d(3, eps=1e-3), LayerNorm(3, eps=0.1)
    )
    io.save(model, tmp_path / "m.safetensors")
    assert repr(io.load(tmp_path / "m.safetensors")) == repr(model)

"""The misuse table of docs/reliability.md: every mistake gets exactly its documented error.

Each case is one row of the table: what the user did, the exception type and the
exact message, in which ``{tmp}`` stands for the test's folder and ``…`` for text
that comes from elsewhere (safetensors' own diagnosis, argparse's list of choices).
``test_the_table_in_the_docs_is_this_list`` keeps the page and this file in step.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from nograd import io
from nograd.checkpoint import CheckpointWriter
from nograd.cli import main
from nograd.config import TrainConfig, build_loss, build_model, build_optimizer
from nograd.data import DataLoader, IterableDataset, TensorDataset
from nograd.nn import Linear, Module, Sequential, activations
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.cross_entropy_shapes import TargetIndexError
from nograd.nn.dropout import Dropout
from nograd.nn.losses import MSELoss
from nograd.optim import SGD, Adam
from nograd.train import evaluate, fit

DOC = Path(__file__).parents[1] / "docs" / "reliability.md"
L23 = "Linear(in_features=2, out_features=3, bias=True)"


@dataclass(frozen=True)
class Case:
    name: str
    mistake: str  # what the user did, as the table says it
    call: Callable[[Path], Any]
    error: type[BaseException]
    message: str


def model() -> Sequential:
    torch.manual_seed(0)
    return Sequential(Linear(2, 4), activations.Tanh(), Linear(4, 2))


def fit_on(x: torch.Tensor, y: torch.Tensor, **options: Any) -> Any:
    net = model()
    options = {"epochs": 1, "progress": False, **options}
    return fit(net, CrossEntropyLoss(), Adam(net.parameters()), TensorDataset(x, y), **options)


def points(n: int = 8, features: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, features), torch.arange(n) % 2


def poisoned(value: float, sample: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = points()
    x[sample, 1] = value
    return x, y


def with_file(make: Callable[[Path], Any], then: Callable[[Path], Any]) -> Callable[[Path], Any]:
    def call(tmp: Path) -> Any:
        make(tmp)
        return then(tmp)

    return call


def truncated(tmp: Path) -> None:
    io.save(model(), tmp / "m.safetensors")
    data = (tmp / "m.safetensors").read_bytes()
    (tmp / "m.safetensors").write_bytes(data[: len(data) // 2])


class Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return print, ("this code ran",)


def nograd_file(tmp: Path, arch: Any) -> None:
    header = {"format": "nograd", "format_version": "1", "architecture": json.dumps(arch)}
    safetensors.torch.save_file({}, str(tmp / "m.safetensors"), metadata=header)


class Custom(Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def resume_with(optimizer: Callable[[Module], Any], net: Callable[[], Module] = model) -> Any:
    def call(tmp: Path) -> Any:
        first = model()
        fit(first, CrossEntropyLoss(), Adam(first.parameters()), TensorDataset(*points()),
            epochs=1, progress=False, checkpoint_path=tmp / "c.safetensors")  # fmt: skip
        second = net()
        return fit(second, CrossEntropyLoss(), optimizer(second), TensorDataset(*points()),
                   epochs=2, progress=False, resume_from=tmp / "c.safetensors")  # fmt: skip

    return call


class Slow:
    """Two samples, each read in 1 s: slower than a worker's timeout of 0.2 s."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(1.0)
        return torch.zeros(1)


class Empty(IterableDataset[Any]):
    """A stream that yields nothing."""

    def __iter__(self) -> Iterator[Any]:
        return iter([])


def diverges(tmp: Path) -> Any:
    torch.manual_seed(0)
    net = Sequential(Linear(2, 2))  # one layer: outputs near 1e30, their squares overflow to +inf
    x, y = points(64)  # and a sum of squares is never nan, on any machine's BLAS
    return fit(net, MSELoss(), SGD(net.parameters(), lr=1e30), TensorDataset(x, y),
               epochs=3, progress=False, shuffle=False)  # fmt: skip


ARCH_ALLOWED = (
    "(Sequential, BatchNorm1d, Dropout, ELU, Flatten, GELU, Identity, LayerNorm, LeakyReLU, "
    "Linear, LogSoftmax, ReLU, SiLU, Sigmoid, Softmax, Softplus, Tanh, Unflatten)"
)
ACTIVATION_NAMES = "['elu', 'gelu', 'leaky_relu', 'relu', 'sigmoid', 'silu', 'softplus', 'tanh']"
LOAD = "nograd.io.load: {tmp}/m.safetensors"
CASES = [
    Case("linear-width", "input with the wrong number of features",
         lambda tmp: Linear(2, 3)(torch.randn(10, 3)), ValueError,
         f"{L23}: expected input of shape (N, 2), got (10, 3)"),
    Case("linear-dtype", "float64 input to float32 weights",
         lambda tmp: Linear(2, 3)(torch.randn(4, 2, dtype=torch.float64)), TypeError,
         f"{L23}: expected input of dtype torch.float32 (the weights'), got torch.float64; "
         "convert the input or the model with .to()"),
    Case("linear-integer-input", "integer input (class indices passed as x)",
         lambda tmp: Linear(2, 3)(torch.ones(4, 2, dtype=torch.long)), TypeError,
         f"{L23}: expected input of dtype torch.float32 (the weights'), got torch.int64; "
         "convert the input or the model with .to()"),
    Case("linear-device", "model on one device, data on another",
         lambda tmp: Linear(2, 3, device="meta")(torch.randn(4, 2)), RuntimeError,
         f"{L23}: expected input on meta (where the weights are), got cpu; "
         "move the input or the model with .to()"),
    Case("linear-size-type", "a layer size that is not an integer",
         lambda tmp: Linear(2.5, 3), TypeError,  # type: ignore[arg-type]
         "Linear: expected integer sizes, got in_features=2.5, out_features=3"),
    Case("linear-negative", "a negative layer size",
         lambda tmp: Linear(-1, 3), ValueError,
         "Linear: expected non-negative sizes, got in_features=-1, out_features=3"),
    Case("backward-first", "backward before any forward",
         lambda tmp: Linear(2, 3).backward(torch.ones(1, 3)), RuntimeError,
         f"{L23}: backward() called before forward()"),
    Case("softmax-dim", "Softmax over a dimension the input lacks",
         lambda tmp: activations.Softmax(dim=3)(torch.randn(2, 2)), ValueError,
         "Softmax(dim=3): expected dim in [-2, 1] for input of shape (2, 2), got 3"),
    Case("sequential-item", "a non-module in a Sequential",
         lambda tmp: Sequential(Linear(2, 2), "relu"), TypeError,  # type: ignore[arg-type]
         "Sequential: expected a Module, got str"),
    Case("hook-not-callable", "a hook that is not a function",
         lambda tmp: Linear(2, 2).register_forward_hook("print"), TypeError,  # type: ignore[arg-type]
         "Linear(in_features=2, out_features=2, bias=True): expected a callable hook, got str"),
    Case("mse-shape", "targets of another shape than the predictions",
         lambda tmp: MSELoss()(torch.randn(4, 2), torch.randn(4, 3)), ValueError,
         "MSELoss(reduction='mean'): expected target of shape (4, 2) (same as pred), got (4, 3)"),
    Case("ce-float-target", "float targets to cross-entropy",
         lambda tmp: CrossEntropyLoss()(torch.randn(4, 2), torch.rand(4)), TypeError,
         "CrossEntropyLoss(reduction='mean'): expected target of an integer dtype "
         "(class indices of shape (4,)) or class probabilities of pred's shape (4, 2), "
         "got torch.float32 of shape (4,)"),
    Case("ce-target-range", "a class index the logits have no class for",
         lambda tmp: CrossEntropyLoss()(torch.randn(4, 2), torch.tensor([0, 1, 2, 1])),
         TargetIndexError,
         "CrossEntropyLoss(reduction='mean'): expected target values in [0, 2) for C=2 "
         "classes, got values in [0, 2]"),
    Case("dropout-p", "a dropout probability above 1",
         lambda tmp: Dropout(1.5), ValueError, "Dropout: expected p in [0, 1], got 1.5"),
    Case("model-int-dtype", "casting a model to an integer dtype",
         lambda tmp: model().to(torch.int64), TypeError,
         "Sequential.to: expected a floating dtype, got torch.int64"),
    Case("sgd-negative-lr", "a negative learning rate",
         lambda tmp: SGD(model().parameters(), lr=-1), ValueError, "SGD: expected lr >= 0, got -1"),
    Case("adam-nan-lr", "a NaN learning rate",
         lambda tmp: Adam(model().parameters(), lr=math.nan), ValueError,
         "Adam: expected lr >= 0, got nan"),
    Case("optimizer-empty", "an optimizer over no parameters",
         lambda tmp: SGD([], lr=0.1), ValueError, "SGD: got an empty parameter list"),
    Case("unknown-activation", "an unknown activation name",
         lambda tmp: build_model(TrainConfig(activation="swish")), ValueError,
         f"unknown activation 'swish'; expected one of {ACTIVATION_NAMES}"),
    Case("unknown-optimizer", "an unknown optimizer name",
         lambda tmp: build_optimizer(TrainConfig(optimizer="lion"), model()), ValueError,
         "unknown optimizer 'lion'; expected one of "
         "['adadelta', 'adagrad', 'adam', 'adamax', 'adamw', 'lbfgs', 'nadam', 'radam', "
         "'rmsprop', 'sgd']"),
    Case("unknown-loss", "an unknown loss name",
         lambda tmp: build_loss(TrainConfig(loss="hinge")), ValueError,
         "unknown loss 'hinge'; expected one of ['bce', 'ce', 'mse']"),
    Case("fit-batch-zero", "batch_size = 0",
         lambda tmp: fit_on(*points(), batch_size=0), ValueError,
         "fit: batch_size must be a positive integer, got 0"),
    Case("fit-batch-negative", "batch_size < 0",
         lambda tmp: fit_on(*points(), batch_size=-4), ValueError,
         "fit: batch_size must be a positive integer, got -4"),
    Case("loader-batch-zero", "a DataLoader with batch_size = 0",
         lambda tmp: DataLoader(TensorDataset(*points()), batch_size=0), ValueError,
         "DataLoader: expected batch_size >= 1, got 0"),
    Case("loader-sampler-shuffle", "a sampler and shuffle=True together",
         lambda tmp: DataLoader(TensorDataset(*points()), 4, True, sampler=range(8)), ValueError,
         "DataLoader: sampler is mutually exclusive with shuffle=True"),
    Case("loader-batch-sampler-size", "a batch sampler and a batch size together",
         lambda tmp: DataLoader(TensorDataset(*points()), 4, batch_sampler=[[0, 1]]), ValueError,
         "DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, sampler "
         "and drop_last"),
    Case("loader-workers-negative", "a negative number of worker processes",
         lambda tmp: DataLoader(TensorDataset(*points()), 4, num_workers=-1), ValueError,
         "DataLoader: expected num_workers >= 0 (0 reads the batches in this process), got -1"),
    Case("loader-stream-shuffle", "shuffle=True for an IterableDataset, which has its own order",
         lambda tmp: DataLoader(Empty(), 4, shuffle=True), ValueError,
         "DataLoader with an IterableDataset: expected no shuffle, got shuffle=True"),
    Case("loader-timeout", "a worker slower than the loader's timeout",
         lambda tmp: next(iter(DataLoader(Slow(), num_workers=1, timeout=0.2))), RuntimeError,
         "DataLoader timed out after 0.2 seconds"),
    Case("fit-empty", "an empty dataset",
         lambda tmp: fit_on(*points(0)), ValueError, "fit: train_data is empty"),
    Case("fit-empty-stream", "an IterableDataset that yields nothing",
         lambda tmp: fit(model(), CrossEntropyLoss(), Adam(model().parameters()), Empty(),
                         epochs=1), ValueError,
         "fit: train_data is empty: its stream yields no sample"),
    Case("fit-no-batch", "a DataLoader that drops its only, partial batch",
         lambda tmp: fit(model(), CrossEntropyLoss(), Adam(model().parameters()),
                         DataLoader(TensorDataset(*points(5)), 8, drop_last=True), epochs=1),
         ValueError,
         "fit: train_data yields no batch: DataLoader(n=5, batch_size=8, shuffle=False, "
         "drop_last=True)"),
    Case("fit-nan", "NaN in the inputs",
         lambda tmp: fit_on(*poisoned(math.nan, 5)), ValueError,
         "fit: train_data: expected finite values, got 1 nan or inf in x (the first in sample 5)"),
    Case("fit-inf-test", "inf in the test inputs",
         lambda tmp: fit_on(*points(), test_data=TensorDataset(*poisoned(math.inf, 2))),
         ValueError,
         "fit: test_data: expected finite values, got 1 nan or inf in x (the first in sample 2)"),
    Case("evaluate-nan", "NaN in data to evaluate",
         lambda tmp: evaluate(model(), CrossEntropyLoss(), TensorDataset(*poisoned(math.nan, 0))),
         ValueError,
         "evaluate: data: expected finite values, got 1 nan or inf in x (the first in sample 0)"),
    Case("fit-features", "data with more features than the model takes",
         lambda tmp: fit_on(*points(8, 3)), ValueError,
         "fit: train_data has 3 features per sample but the model's first layer "
         "Linear(in_features=2, out_features=4, bias=True) expects 2 features"),
    Case("fit-labels", "labels the model cannot output",
         lambda tmp: fit_on(torch.rand(8, 2), torch.arange(8) % 3), ValueError,
         "fit: train_data has class labels in [0, 2] but the model has 2 output(s), "
         "which fit classes 0..1"),
    Case("fit-epochs", "epochs = 0",
         lambda tmp: fit_on(*points(), epochs=0), ValueError,
         "fit: epochs must be a positive integer, got 0"),
    Case("fit-checkpoint-every", "checkpoint_every = 0",
         lambda tmp: fit_on(*points(), checkpoint_every=0), ValueError,
         "fit: checkpoint_every must be a positive integer, got 0"),
    Case("fit-label-shape", "labels y of shape (N, 1) instead of (N,)",
         lambda tmp: fit_on(torch.rand(8, 2), (torch.arange(8) % 2).unsqueeze(1)), ValueError,
         "fit: train_data: expected y of shape (N,), one class index per sample (the loss's "
         "target is made from it), got y of shape (8, 1); squeeze it to (N,) with y.squeeze(1)"),
    Case("fit-not-pairs", "a dataset whose items are not (x, y) pairs",
         lambda tmp: fit(model(), CrossEntropyLoss(), Adam(model().parameters()),
                         TensorDataset(torch.rand(8, 2)), epochs=1), ValueError,
         "fit: train_data must yield (x, y) pairs, got items of 1 element"),
    Case("fit-tensors", "the tensors (x, y) themselves passed as data",
         lambda tmp: fit(model(), CrossEntropyLoss(), Adam(model().parameters()), points(),
                         epochs=1), TypeError,
         "fit: train_data must yield (x, y) pairs, got items of type Tensor; wrap tensors as "
         "TensorDataset(x, y)"),
    Case("fit-torch-loader", "a torch.utils.data.DataLoader passed as data",
         lambda tmp: fit(model(), CrossEntropyLoss(), Adam(model().parameters()),
                         torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*points())),
                         epochs=1), TypeError,
         "fit: train_data must be a dataset (with __len__ and __getitem__, such as "
         "TensorDataset) or a nograd.data.DataLoader, got a torch.utils.data.DataLoader; "
         "pass its .dataset instead"),
    Case("fit-device-meta", "training on the meta device",
         lambda tmp: fit_on(*points(), device="meta"), ValueError,
         "fit: device: meta is not a device to compute on (its tensors have shapes but no "
         "data); use cpu or cuda"),
    Case("evaluate-summed-loss", "evaluating with a loss summed over the batch",
         lambda tmp: evaluate(model(), CrossEntropyLoss(reduction="sum"),
                              TensorDataset(*points())), ValueError,
         "evaluate: expected a loss with reduction='mean', got CrossEntropyLoss(reduction='sum')"),
    Case("save-folder", "saving a model into a folder that does not exist",
         lambda tmp: io.save(model(), tmp / "no" / "m.safetensors"), ValueError,
         "nograd.io.save: path '{tmp}/no/m.safetensors': no such folder"),
    Case("fit-checkpoint-folder", "a checkpoint in a folder that does not exist",
         lambda tmp: fit_on(*points(), checkpoint_path=tmp / "no" / "c.safetensors"), ValueError,
         "fit: checkpoint_path '{tmp}/no/c.safetensors': no such folder"),
    Case("checkpoint-custom-module", "checkpointing a model with a module of one's own",
         lambda tmp: CheckpointWriter(tmp / "c.safetensors", Sequential(Linear(2, 2), Custom())),
         TypeError,
         "nograd.io: cannot describe a …Custom; checkpoints support Sequential and "
         "['BatchNorm1d', 'Dropout', 'ELU', 'Flatten', 'GELU', 'Identity', 'LayerNorm', "
         "'LeakyReLU', 'Linear', 'LogSoftmax', 'ReLU', 'SiLU', 'Sigmoid', 'Softmax', "
         "'Softplus', 'Tanh', 'Unflatten']"),
    Case("fit-diverges", "a learning rate so high that the loss overflows",
         diverges, RuntimeError,
         "fit: the loss became inf at epoch 1, step 2 (lr 1e+30); training stopped "
         "(no checkpoint); try a lower learning rate"),
    Case("load-truncated", "loading a truncated file",
         with_file(truncated, lambda tmp: io.load(tmp / "m.safetensors")), ValueError,
         f"{LOAD}: not a valid safetensors file (…)"),
    Case("load-pickle", "loading a pickle renamed to .safetensors",
         with_file(lambda tmp: (tmp / "m.safetensors").write_bytes(pickle.dumps(Payload())),
                   lambda tmp: io.load(tmp / "m.safetensors")),
         ValueError, f"{LOAD}: not a valid safetensors file (…)"),
    Case("load-foreign", "loading a safetensors file that nograd did not write",
         with_file(lambda tmp: safetensors.torch.save_file({"w": torch.zeros(2)},
                                                           str(tmp / "m.safetensors")),
                   lambda tmp: io.load(tmp / "m.safetensors")),
         ValueError, f"{LOAD}: not a nograd checkpoint (its metadata lacks format=nograd)"),
    Case("load-forbidden-type", "an architecture naming a class outside the allow-list",
         with_file(lambda tmp: nograd_file(tmp, {"type": "os.system", "args": {}}),
                   lambda tmp: io.load(tmp / "m.safetensors")),
         ValueError, f"{LOAD}: architecture.type: 'os.system' is not an allowed module type "
         f"{ARCH_ALLOWED}"),
    Case("load-huge-layer", "an architecture asking for terabytes",
         with_file(lambda tmp: nograd_file(tmp, {"type": "Linear", "args": {
             "in_features": 2**40, "out_features": 2**40, "bias": True}}),
                   lambda tmp: io.load(tmp / "m.safetensors")),
         ValueError, f"{LOAD}: architecture.args.in_features: expected an integer in "
         "[0, 1048576], got 1099511627776"),
    Case("resume-model-file", "resuming from a model file instead of a checkpoint",
         with_file(lambda tmp: io.save(model(), tmp / "m.safetensors"),
                   lambda tmp: fit_on(*points(), resume_from=tmp / "m.safetensors")),
         ValueError, "resume: {tmp}/m.safetensors: holds a model but no training state; "
         "resume from the checkpoint.safetensors that training writes"),
    Case("resume-other-model", "resuming with another network",
         resume_with(lambda m: Adam(m.parameters()),
                     lambda: Sequential(Linear(2, 5), activations.Tanh(), Linear(5, 2))),
         ValueError, "resume: {tmp}/c.safetensors: holds a different model: Linear(2, 4, True), "
         "Tanh, Linear(4, 2, True), not Linear(2, 5, True), Tanh, Linear(5, 2, True)"),
    Case("resume-other-optimizer", "resuming with another optimizer",
         resume_with(lambda m: SGD(m.parameters(), lr=0.1)), ValueError,
         "resume: {tmp}/c.safetensors: holds the state of optimizer Adam, this run has SGD"),
]  # fmt: skip


CLI_CASES = [
    ("cli-lr", "nograd train --lr -1", ["train", "--lr", "-1"],
     "argument --lr: expected a number in (0, inf), got '-1'"),
    ("cli-clip-grad-norm", "nograd train --clip-grad-norm 0", ["train", "--clip-grad-norm", "0"],
     "argument --clip-grad-norm: expected a number in (0, inf), got '0'"),
    ("cli-batch-size", "nograd train --batch-size 0", ["train", "--batch-size", "0"],
     "argument --batch-size: expected a positive integer, got '0'"),
    ("cli-activation", "nograd train --activation swish", ["train", "--activation", "swish"],
     "argument --activation: invalid choice: 'swish' (choose from …)"),
    ("cli-optimizer", "nograd train --optimizer lion", ["train", "--optimizer", "lion"],
     "argument --optimizer: invalid choice: 'lion' (choose from …)"),
    ("cli-epochs", "nograd train --epochs 0", ["train", "--epochs", "0"],
     "argument --epochs: expected a positive integer, got '0'"),
    ("cli-huge-network", "nograd train --hidden 100000,100000",
     ["train", "--hidden", "100000,100000"],
     "argument --hidden: the network would have 10000600002 parameters, more than 268435456"),
    ("cli-huge-data", "nograd train --n-train 1000000000", ["train", "--n-train", "1000000000"],
     "argument --n-train: expected at most 100000000 samples, got '1000000000'"),
    ("cli-device", "nograd train --device nonsense", ["train", "--device", "nonsense"],
     "argument --device: unknown device 'nonsense'"),
    ("cli-lbfgs-weight-decay", "nograd train --optimizer lbfgs --weight-decay 0.1",
     ["train", "--optimizer", "lbfgs", "--weight-decay", "0.1"],
     "argument --weight-decay: lbfgs has no weight_decay option"),
    ("cli-momentum", "nograd train --optimizer adam --momentum 0.9",
     ["train", "--optimizer", "adam", "--momentum", "0.9"],
     "argument --momentum: adam has no momentum option"),
    ("cli-device-meta", "nograd train --device meta", ["train", "--device", "meta"],
     "argument --device: meta is not a device to compute on (its tensors have shapes but no "
     "data); use cpu or cuda"),
    ("cli-seed", "nograd train --seed 99999999999999999999",
     ["train", "--seed", "99999999999999999999"],
     "argument --seed: expected an integer in [-9223372036854775, 18446744073709550], "
     "got '99999999999999999999'"),
    ("cli-epochs-max", "nograd train --epochs 1000001", ["train", "--epochs", "1000001"],
     "argument --epochs: expected at most 1000000 epochs, got '1000001'"),
    ("cli-hidden-wide", "nograd train --hidden 1048577", ["train", "--hidden", "1048577"],
     "argument --hidden: expected layer widths of at most 1048576, got 1048577"),
    ("cli-checkpoint-every", "nograd train --checkpoint-every 0",
     ["train", "--checkpoint-every", "0"],
     "argument --checkpoint-every: expected a positive integer, got '0'"),
    ("cli-resume-missing", "nograd train --resume nope.safetensors",
     ["train", "--resume", "nope.safetensors"],
     "argument --resume: no such file 'nope.safetensors'"),
    ("cli-resume-options", "nograd train --resume PATH --lr 0.1",
     ["train", "--resume", "nope.safetensors", "--lr", "0.1"],
     "argument --resume: the run's options come from its checkpoint; drop --lr"),
    ("cli-resume-threads", "nograd train --resume PATH --threads 2",
     ["train", "--resume", "nope.safetensors", "--threads", "2"],
     "argument --resume: the run's options come from its checkpoint; drop --threads"),
    ("cli-evaluate-missing", "nograd evaluate nope.safetensors", ["evaluate", "nope.safetensors"],
     "argument path: no such file 'nope.safetensors'"),
]  # fmt: skip


def pattern(message: str, tmp: Path) -> str:
    """The message as a regex: ``{tmp}`` is the folder, ``…`` any text."""
    parts = [re.escape(part.replace("{tmp}", str(tmp))) for part in message.split("…")]
    return ".*".join(parts)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_mistake_gets_its_documented_error(case: Case, tmp_path: Path) -> None:
    with pytest.raises(BaseException) as info:  # the exact type is checked below
        case.call(tmp_path)
    assert type(info.value) is case.error or (
        case.error is RuntimeError and isinstance(info.value, RuntimeError)  # DivergenceError
    ), f"{type(info.value).__name__}: {info.value}"
    assert re.fullmatch(pattern(case.message, tmp_path), str(info.value), re.DOTALL), str(
        info.value
    )
    assert info.value.__cause__ is None  # never a chained error from deep inside torch


@pytest.mark.parametrize(("name", "_", "argv", "message"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_each_command_line_mistake_is_one_line_and_exit_2(
    name: str, _: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert re.fullmatch("nograd: error: " + pattern(message, Path()) + "\n", captured.err)
    assert captured.out == ""


def table_rows() -> dict[str, tuple[str, str]]:
    """``name -> (exception type, message)`` from the misuse table of docs/reliability.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0] != "`name`":
            rows[cells[0].strip("`")] = (cells[2].strip("`"), cells[3].strip("`"))
    return rows


def test_the_table_in_the_docs_is_this_list() -> None:
    expected = {case.name: (case.error.__name__, case.message) for case in CASES}
    expected.update({name: ("exit 2", message) for name, _, _, message in CLI_CASES})
    rows = table_rows()
    assert rows == expected
    assert len(rows) >= 25

"""What ``nograd train`` runs: ``TrainConfig``, its presets, and the objects it names.

``TrainConfig`` names every choice of the reference experiment; ``build_model``,
``build_loss`` and ``build_optimizer`` turn it into objects, refusing unknown names
with the list of known ones. ``config_from_dict`` rebuilds a config read from a file
(a checkpoint to resume), checking each field's type and range and the size of the
network it describes before anything is allocated.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import torch

from nograd.architecture import MAX_FEATURES, MAX_PARAMETERS, _integer, _one_of, _real, _show
from nograd.data import TensorDataset, disk, moons, spirals, xor
from nograd.nn import Linear, Module, Sequential, activations
from nograd.nn.binary_cross_entropy import BCEWithLogitsLoss
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.losses import Loss, MSELoss
from nograd.nn.smooth_activations import SiLU, Softplus
from nograd.optim import (
    LBFGS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    RAdam,
    RMSprop,
)

TASKS: dict[str, Callable[..., TensorDataset]] = {
    "disk": disk,
    "xor": xor,
    "moons": moons,
    "spirals": spirals,
}
ACTIVATIONS = {
    "relu": activations.ReLU,
    "tanh": activations.Tanh,
    "sigmoid": activations.Sigmoid,
    "leaky_relu": activations.LeakyReLU,
    "elu": activations.ELU,
    "gelu": activations.GELU,
    "silu": SiLU,
    "softplus": Softplus,
}
OPTIMIZERS = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
    "nadam": NAdam,
    "radam": RAdam,
    "adamax": Adamax,
    "adadelta": Adadelta,
    "lbfgs": LBFGS,  # with the strong-Wolfe line search, over the whole training set
}
FUSED_OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad")  # those torch has fused kernels for
# nograd train's --lr for the optimizers that size their steps themselves, when none is
# given: their lr only scales that step, so torch's default, 1.0, not the others' 0.01
OWN_STEP_LR = {"adadelta": 1.0, "lbfgs": 1.0}
LOSSES = ("ce", "mse", "bce")
SCHEDULES = ("cosine", "constant")
CPU_MATMULS = ("blas", "onednn")  # nograd.set_cpu_matmul's backends
# The bounds of a config, shared by the command line (at parse time) and by
# config_from_dict (a checkpoint to resume), so that what trains also resumes.
MAX_SAMPLES = 10**8  # per split: 800 MB of float32 inputs
MAX_EPOCHS = 10**6
MAX_BATCH_SIZE = 2**62
MAX_HIDDEN_LAYERS = 64  # each at most MAX_FEATURES wide
MAX_WEIGHT_DECAY = 1e300
MAX_THREADS = 1024  # torch takes far more threads, then crashes
SEED_STRIDE = 1000  # round r of a run with seed s is seeded with SEED_STRIDE * s + r
MAX_ROUNDS = SEED_STRIDE  # so no two rounds of two runs share a seed
TORCH_SEEDS = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts
# Seeds whose every round's seed, SEED_STRIDE * seed + round, torch accepts
MIN_SEED = -(-TORCH_SEEDS[0] // SEED_STRIDE)
MAX_SEED = (TORCH_SEEDS[1] - (MAX_ROUNDS - 1)) // SEED_STRIDE


@dataclass
class TrainConfig:
    """Everything one ``nograd train`` run depends on; written to metrics.json.

    The defaults are the reference experiment, chosen by measurement: GELU hidden
    layers, cross-entropy, Adam at lr 0.01 decayed to 0 by a per-epoch cosine, batches
    of 32, 60 epochs. The cosine matters most (a constant lr gave 97.4% +- 1.5 against
    99.5% +- 0.3); centring the inputs, label smoothing and weight decay gained nothing.
    ``weight_decay=None`` means the optimizer's own default (0.01 for AdamW, else 0).
    ``standardize`` feeds (x - mean) / std with the training set's statistics, and
    folds them into the first layer after training, so the saved model takes raw x.
    ``clip_grad_norm`` scales the gradients to that total 2-norm before each step, as
    ``torch.nn.utils.clip_grad_norm_`` does (None: no clipping).
    ``threads`` (None: 1 for a small network, else torch's default), ``cpu_matmul`` and
    ``fused`` (torch's fused optimizer kernels, ``nograd.optim.fused``) change only the
    last bits of the numbers; a resumed run keeps them, so that it ends bit-identical to
    one that never stopped.
    """

    task: str = "disk"
    n_train: int = 1000
    n_test: int = 1000
    hidden: tuple[int, ...] = (25, 25, 25)
    activation: str = "gelu"
    loss: str = "ce"
    label_smoothing: float = 0.0
    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float | None = None
    clip_grad_norm: float | None = None
    schedule: str = "cosine"
    batch_size: int = 32
    epochs: int = 60
    rounds: int = 10
    seed: int = 0
    standardize: bool = False
    device: str = "cpu"
    cuda_graph: bool = False
    threads: int | None = None
    cpu_matmul: str = "blas"
    fused: bool = False


# Fields added after the first checkpoints were written, with the value those runs had
# (an old run that chose --threads or --cpu-matmul is resumed with the defaults).
LATER_FIELDS: dict[str, Any] = {
    "threads": None,
    "cpu_matmul": "blas",
    "clip_grad_norm": None,
    "fused": False,
}


# "default" is the reference experiment. "seed" is the original course setup: plain
# SGD (lr 0.1, batches of 10, no schedule) on the MSE to one-hot targets, ReLU, and
# inputs standardized by the training set's mean and std, as the course's practicals
# did (raw inputs in [0, 1]^2 gave 94.5% +- 2.2 with the same settings).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "seed": {
        "activation": "relu", "loss": "mse", "optimizer": "sgd", "lr": 0.1,
        "schedule": "constant", "batch_size": 10, "standardize": True,
    },
}  # fmt: skip

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``, or a ValueError that lists the known names."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]


def build_model(config: TrainConfig) -> Sequential:
    """2 -> hidden... -> outputs (1 for BCE, else 2), the activation after each hidden layer."""
    activation = lookup(ACTIVATIONS, config.activation, "activation")
    lookup(dict.fromkeys(LOSSES), config.loss, "loss")
    widths = [2, *config.hidden]
    layers: list[Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [Linear(width_in, width_out), activation()]
    layers.append(Linear(widths[-1], 1 if config.loss == "bce" else 2))
    return Sequential(*layers)


def parameter_count(config: TrainConfig) -> int:
    """The number of weights and biases ``build_model(config)`` allocates."""
    widths = [2, *config.hidden, 1 if config.loss == "bce" else 2]
    return sum((w_in + 1) * w_out for w_in, w_out in itertools.pairwise(widths))


def build_loss(config: TrainConfig) -> Loss:
    """The loss named by ``config.loss``: "ce" (with label smoothing), "mse" or "bce"."""
    lookup(dict.fromkeys(LOSSES), config.loss, "loss")
    if config.loss == "ce":
        return CrossEntropyLoss(label_smoothing=config.label_smoothing)
    return MSELoss() if config.loss == "mse" else BCEWithLogitsLoss()


def build_optimizer(config: TrainConfig, model: Module) -> Any:
    """The optimizer named by ``config.optimizer``, over ``model.parameters()``."""
    optimizer = lookup(OPTIMIZERS, config.optimizer, "optimizer")
    options: dict[str, Any] = {"lr": config.lr}
    if config.optimizer == "lbfgs":  # no weight decay; a line search sizes each step
        if config.weight_decay:
            raise ValueError("lbfgs has no weight_decay option")
        options["line_search_fn"] = "strong_wolfe"
    elif config.weight_decay is not None:  # None: the optimizer's own default
        options["weight_decay"] = config.weight_decay
    if config.optimizer in ("sgd", "rmsprop"):
        options["momentum"] = config.momentum
    if config.fused:
        if config.optimizer not in FUSED_OPTIMIZERS:
            raise ValueError(f"{config.optimizer} has no fused update")
        options["fused"] = True
    return optimizer(model.parameters(), **options)


def _positive(where: str, value: Any) -> Any:
    if type(value) not in (int, float) or not 0 < value < math.inf:
        raise ValueError(f"{where}: expected a finite number > 0, got {_show(value)}")
    return value


def _device(where: str, value: Any) -> Any:
    try:
        ok = isinstance(value, str) and torch.device(value) is not None
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{where}: expected a device such as 'cpu', got {_show(value)}")
    return value


FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "task": _one_of(*TASKS),
    "n_train": _integer(1, MAX_SAMPLES),
    "n_test": _integer(1, MAX_SAMPLES),
    "activation": _one_of(*ACTIVATIONS),
    "loss": _one_of(*LOSSES),
    "label_smoothing": _real(0.0, 1.0, high_included=False),
    "optimizer": _one_of(*OPTIMIZERS),
    "lr": _positive,
    "momentum": _real(0.0, 1.0, high_included=False),
    "schedule": _one_of(*SCHEDULES),
    "batch_size": _integer(1, MAX_BATCH_SIZE),
    "epochs": _integer(1, MAX_EPOCHS),
    "rounds": _integer(1, MAX_ROUNDS),
    "seed": _integer(MIN_SEED, MAX_SEED),
    "standardize": _one_of(True, False),
    "device": _device,
    "cuda_graph": _one_of(True, False),
    "cpu_matmul": _one_of(*CPU_MATMULS),
    "fused": _one_of(True, False),
}


def config_from_dict(values: Any, where: str) -> TrainConfig:
    """A TrainConfig from ``asdict(config)`` read back from JSON, every field checked.

    Raises:
        ValueError: naming the field, what it should be and what it was.
    """
    names = [f.name for f in fields(TrainConfig)]
    if isinstance(values, dict):  # a checkpoint from before LATER_FIELDS
        values = {**LATER_FIELDS, **values}
    if not isinstance(values, dict) or sorted(values) != sorted(names):
        keys = sorted(values) if isinstance(values, dict) else _show(values)
        raise ValueError(f"{where}: expected a config with keys {sorted(names)}, got {keys}")
    for name, check in FIELD_CHECKS.items():
        check(f"{where}: config.{name}", values[name])
    hidden = values["hidden"]
    if not isinstance(hidden, list) or not 1 <= len(hidden) <= MAX_HIDDEN_LAYERS:
        raise ValueError(
            f"{where}: config.hidden: expected 1 to {MAX_HIDDEN_LAYERS} widths, got {_show(hidden)}"
        )
    for width in hidden:
        _integer(1, MAX_FEATURES)(f"{where}: config.hidden", width)
    if values["weight_decay"] is not None:
        _real(0.0, MAX_WEIGHT_DECAY)(f"{where}: config.weight_decay", values["weight_decay"])
    if values["threads"] is not None:
        _integer(1, MAX_THREADS)(f"{where}: config.threads", values["threads"])
    if values["clip_grad_norm"] is not None:
        _positive(f"{where}: config.clip_grad_norm", values["clip_grad_norm"])
    config = TrainConfig(**{**values, "hidden": tuple(hidden)})
    check_size(config, where)
    return config


def check_size(config: TrainConfig, where: str) -> None:
    """Refuse a network of more than MAX_PARAMETERS weights before it is allocated."""
    count = parameter_count(config)
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{where}: the network would have {count} parameters, more than {MAX_PARAMETERS}"
        )

"""The public face of nograd.nn against torch.nn: repr of every module, and constructor
and Module method signatures (names, order, kinds, defaults)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any

import pytest
import torch

import nograd.nn
from tests.oracle import since_torch_2_13

Pair = Callable[[], tuple[Any, torch.nn.Module]]


def both(name: str, *args: Any, **kwargs: Any) -> Pair:
    """The same class of nograd.nn and torch.nn, built with the same arguments."""
    return lambda: (
        getattr(nograd.nn, name)(*args, **kwargs),
        getattr(torch.nn, name)(*args, **kwargs),
    )


def sequential(module: Any) -> Any:
    return module.Sequential(
        module.Linear(2, 3), module.ReLU(), module.Dropout(0.1), module.Linear(3, 1, bias=False)
    )


def module_list(module: Any) -> Any:
    """Runs of equal reprs are shown once by torch: "(0-2): 3 x Linear(...)"."""
    return module.ModuleList(
        [module.Linear(2, 2) for _ in range(3)] + [module.ReLU(), None, module.Tanh()]
    )


def module_dict(module: Any) -> Any:
    return module.ModuleDict({"body": module_list(module), "head": module.Linear(2, 1)})


WEIGHT = torch.tensor([1.0, 2.0, 3.0])
REPRS: dict[str, Pair] = {
    "Linear": both("Linear", 3, 4),
    "Linear-no-bias": both("Linear", 3, 4, bias=False),
    "ReLU": both("ReLU"),
    "ReLU-inplace": both("ReLU", inplace=True),
    "Tanh": both("Tanh"),
    "Sigmoid": both("Sigmoid"),
    "LeakyReLU": both("LeakyReLU"),
    "LeakyReLU-inplace": both("LeakyReLU", 0.2, inplace=True),
    "ELU": both("ELU"),
    "ELU-inplace": both("ELU", 0.5, True),
    "GELU": both("GELU"),
    "GELU-tanh": both("GELU", approximate="tanh"),
    "Softmax": both("Softmax"),
    "Softmax-1": both("Softmax", dim=1),
    "Identity": both("Identity"),
    "Identity-args": both("Identity", 3, unused="ignored"),
    "Dropout": both("Dropout"),
    "Dropout-inplace": both("Dropout", 0.25, inplace=True),
    "Dropout-int": both("Dropout", 1),
    "MSELoss": both("MSELoss"),
    "MSELoss-sum": both("MSELoss", reduction="sum"),
    "L1Loss-none": both("L1Loss", reduction="none"),
    "BCEWithLogitsLoss": both("BCEWithLogitsLoss"),
    "BCEWithLogitsLoss-weights": both(
        "BCEWithLogitsLoss", weight=WEIGHT, reduction="sum", pos_weight=WEIGHT
    ),
    "CrossEntropyLoss": both("CrossEntropyLoss"),
    "CrossEntropyLoss-options": both(
        "CrossEntropyLoss", weight=WEIGHT, ignore_index=1, label_smoothing=0.1
    ),
    "LayerNorm": both("LayerNorm", (3, 4)),
    "LayerNorm-no-bias": both("LayerNorm", 5, eps=1e-3, bias=False),
    "BatchNorm1d": both("BatchNorm1d", 4),
    "BatchNorm1d-options": both("BatchNorm1d", 4, momentum=None, affine=False),
    "SiLU": both("SiLU"),
    "SiLU-inplace": both("SiLU", inplace=True),
    "Softplus": both("Softplus"),
    "Softplus-options": both("Softplus", 2, threshold=10),
    "LogSoftmax": both("LogSoftmax"),
    "LogSoftmax-1": both("LogSoftmax", dim=1),
    "Flatten": both("Flatten"),
    "Flatten-0-2": both("Flatten", 0, 2),
    "Unflatten": both("Unflatten", 1, (2, 3)),
    "Unflatten-list": both("Unflatten", -1, [2, -1]),
    "Unflatten-Size": both("Unflatten", 0, torch.Size([2, 3])),
    "BCELoss": both("BCELoss"),
    "BCELoss-weight": both("BCELoss", weight=WEIGHT, reduction="sum"),
    "NLLLoss": both("NLLLoss"),
    "NLLLoss-options": both("NLLLoss", weight=WEIGHT, ignore_index=1, reduction="sum"),
    "HuberLoss": both("HuberLoss", "none", 0.5),
    "SmoothL1Loss": both("SmoothL1Loss", beta=0.5),
    "Sequential": lambda: (sequential(nograd.nn), sequential(torch.nn)),
    "Sequential-empty": both("Sequential"),
    "ModuleList": lambda: (module_list(nograd.nn), module_list(torch.nn)),
    "ModuleList-empty": both("ModuleList"),
    "ModuleDict": lambda: (module_dict(nograd.nn), module_dict(torch.nn)),
    "ModuleDict-empty": both("ModuleDict"),
}


# their reprs show bias from torch 2.13 on
NORMS = {"LayerNorm", "LayerNorm-no-bias", "BatchNorm1d", "BatchNorm1d-options"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=since_torch_2_13) if n in NORMS else n for n in REPRS]
)
def test_repr_equals_torchs(name: str) -> None:
    ours, ref = REPRS[name]()
    assert repr(ours) == repr(ref)


def test_every_exported_module_has_a_repr_case() -> None:
    covered = {name.split("-")[0] for name in REPRS}
    assert set(CLASSES) - {"Module"} <= covered


def test_a_loss_repr_shows_no_settings_but_its_errors_do() -> None:
    loss = nograd.nn.MSELoss(reduction="sum")
    assert repr(loss) == "MSELoss()"  # as torch's
    with pytest.raises(ValueError, match=r"^MSELoss\(reduction='sum'\): expected target"):
        loss(torch.zeros(2), torch.zeros(3))


# --------------------------------------------------------------------- signatures
# every class nograd.nn exports, but Parameter (a plain pair here, a Tensor in torch)
# and Loss (torch's base class is the private _Loss)
CLASSES = [
    name
    for name in nograd.nn.__all__
    if isinstance(getattr(nograd.nn, name), type) and name not in {"Parameter", "Loss"}
]
# Arguments nograd adds on purpose, each keyword-only, so that torch's calls still work.
EXTRA_ARGUMENTS = {"Dropout": {"generator"}}  # a seedable mask, without the global seed
# Module methods whose signatures differ on purpose: torch's ``to`` takes (*args, **kwargs)
# and parses them (ours names device and dtype); ``load_state_dict(assign=)`` is not offered.
DIFFERENT_METHODS = {"to", "load_state_dict"}


def shape_of(function: Any, drop: Collection[str] = ()) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter after self; a star argument's name is moot."""
    if function is torch.nn.Module.__init__:
        return []  # takes (*args, **kwargs), only to refuse them with a TypeError
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [
        (p.name if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) else "*", p.kind, p.default)
        for p in parameters
        if p.name not in drop
    ]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=since_torch_2_13) if n == "BatchNorm1d" else n for n in CLASSES]
)
def test_constructor_arguments_are_torchs(name: str) -> None:
    ours = getattr(nograd.nn, name).__init__
    extra = EXTRA_ARGUMENTS.get(name, set())
    assert all(
        inspect.signature(ours).parameters[arg].kind is inspect.Parameter.KEYWORD_ONLY
        for arg in extra
    )
    assert shape_of(ours, extra) == shape_of(getattr(torch.nn, name).__init__)


METHODS = sorted(
    name
    for name in dir(nograd.nn.Module)
    if not name.startswith("_") and callable(getattr(torch.nn.Module, name, None))
)


@pytest.mark.parametrize("name", [m for m in METHODS if m not in DIFFERENT_METHODS])
def test_module_method_arguments_are_torchs(name: str) -> None:
    ours, ref = getattr(nograd.nn.Module, name), getattr(torch.nn.Module, name)
    if name == "state_dict":  # torch's takes deprecated positional *args first; ours does not
        assert shape_of(ours) == shape_of(ref)[1:]
        return
    assert shape_of(ours) == shape_of(ref)


def test_the_method_list_covers_the_common_methods() -> None:
    assert {"state_dict", "named_modules", "modules", "train"} <= set(METHODS)

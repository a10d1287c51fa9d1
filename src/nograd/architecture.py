"""Architectures as JSON: describe a model as a tree, and rebuild it from an allow-list.

``architecture(model)`` turns a Sequential of nograd layers into a JSON-able tree;
``build(tree)`` constructs it again. ``build`` never imports or instantiates anything
outside ``ALLOWED``: each node's type is looked up there, each argument is type- and
range-checked, and the depth, module count and parameter count are bounded before a
single tensor is allocated. Checkpoints (``nograd.io``) store the tree in their metadata.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nograd.nn.activations import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from nograd.nn.batch_norm import BatchNorm1d
from nograd.nn.container import Sequential
from nograd.nn.dropout import Dropout
from nograd.nn.flatten import Flatten, Unflatten
from nograd.nn.layer_norm import LayerNorm
from nograd.nn.linear import Linear
from nograd.nn.log_softmax import LogSoftmax
from nograd.nn.module import Module
from nograd.nn.smooth_activations import SiLU, Softplus

MAX_FEATURES = 2**20  # per Linear side
MAX_PARAMETERS = 2**28  # in the whole model: 1 GiB of float32
MAX_DEPTH = 32  # nested Sequentials
MAX_MODULES = 10_000

# ------------------------------------------------------------- argument checks
Check = Callable[[str, Any], Any]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(low: int, high: int) -> Check:
    def check(where: str, value: Any) -> Any:
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"{where}: expected an integer in [{low}, {high}], got {_show(value)}")
        return value

    return check


def _real(low: float, high: float, *, high_included: bool = True) -> Check:
    interval = f"[{low}, {high}" + ("]" if high_included else ")")

    def check(where: str, value: Any) -> Any:
        # a float's subclass too (NumPy's float64, as a hyperparameter often comes), not a bool
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        finite = number and math.isfinite(value)
        if not (finite and low <= value <= high and (high_included or value < high)):
            raise ValueError(f"{where}: expected a number in {interval}, got {_show(value)}")
        return value

    return check


def _or_none(inner: Check) -> Check:
    """``inner``'s check, or None (an optional argument left to its default)."""

    def check(where: str, value: Any) -> Any:
        return None if value is None else inner(where, value)

    return check


def _shape(max_dims: int, high: int, *, one_inferred: bool = False) -> Check:
    """A list of 1 to ``max_dims`` sizes in [0, high] (LayerNorm's normalized_shape);
    with ``one_inferred``, one of them may be -1, a size the input decides (Unflatten's)."""
    size = _integer(-1 if one_inferred else 0, high)

    def check(where: str, value: Any) -> Any:
        if type(value) is not list or not 1 <= len(value) <= max_dims:
            raise ValueError(
                f"{where}: expected a list of 1 to {max_dims} integers, got {_show(value)}"
            )
        sizes = [size(f"{where}[{i}]", item) for i, item in enumerate(value)]
        if sizes.count(-1) > 1:
            raise ValueError(f"{where}: expected at most one size of -1, got {_show(value)}")
        return sizes

    return check


def _one_of(*options: Any) -> Check:
    def check(where: str, value: Any) -> Any:
        if not any(type(value) is type(option) and value == option for option in options):
            raise ValueError(f"{where}: expected one of {list(options)}, got {_show(value)}")
        return value

    return check


# ------------------------------------------------------------------ allow-list
FLAG = _one_of(True, False)


@dataclass(frozen=True)
class Kind:
    """One allowed leaf type: its class, checked constructor arguments, parameter count."""

    cls: type[Module]
    args: dict[str, Check] = field(default_factory=dict)
    extract: Callable[[Any], dict[str, Any]] | None = None  # default: getattr per arg
    # the constructor's arguments from the checked ones (default: as they are)
    restore: Callable[[Mapping[str, Any]], dict[str, Any]] = dict
    parameter_count: Callable[[Mapping[str, Any]], int] = lambda args: 0
    takes_device: bool = False


ALLOWED: dict[str, Kind] = {
    "Linear": Kind(
        Linear,
        {
            "in_features": _integer(0, MAX_FEATURES),
            "out_features": _integer(0, MAX_FEATURES),
            "bias": FLAG,
        },
        extract=lambda m: {
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
        },
        parameter_count=lambda a: a["out_features"] * (a["in_features"] + int(a["bias"])),
        takes_device=True,
    ),
    "ReLU": Kind(ReLU, {"inplace": FLAG}),
    "Tanh": Kind(Tanh),
    "Sigmoid": Kind(Sigmoid),
    "Identity": Kind(Identity),
    "LeakyReLU": Kind(LeakyReLU, {"negative_slope": _real(-1e6, 1e6), "inplace": FLAG}),
    "ELU": Kind(ELU, {"alpha": _real(-1e6, 1e6), "inplace": FLAG}),
    "GELU": Kind(GELU, {"approximate": _one_of("none", "tanh")}),
    "Softmax": Kind(Softmax, {"dim": _or_none(_integer(-64, 63))}),  # None: torch's implicit dim
    "LogSoftmax": Kind(LogSoftmax, {"dim": _or_none(_integer(-64, 63))}),  # None: as Softmax
    "SiLU": Kind(SiLU, {"inplace": FLAG}),
    "Softplus": Kind(Softplus, {"beta": _real(-1e6, 1e6), "threshold": _real(-1e6, 1e6)}),
    "Flatten": Kind(Flatten, {"start_dim": _integer(-64, 63), "end_dim": _integer(-64, 63)}),
    "Unflatten": Kind(
        Unflatten,
        {"dim": _integer(-64, 63), "unflattened_size": _shape(64, MAX_FEATURES, one_inferred=True)},
        # JSON has lists, not tuples: saved as a list, given back as the usual tuple
        extract=lambda m: {"dim": m.dim, "unflattened_size": list(m.unflattened_size)},
        restore=lambda a: {"dim": a["dim"], "unflattened_size": tuple(a["unflattened_size"])},
    ),
    # A Dropout's own generator is run-time state, not architecture: it is not saved.
    "Dropout": Kind(Dropout, {"p": _real(0.0, 1.0), "inplace": FLAG}),
    "LayerNorm": Kind(
        LayerNorm,
        {
            "normalized_shape": _shape(8, MAX_FEATURES),
            "eps": _real(0.0, 1e6),
            "elementwise_affine": FLAG,
            "bias": FLAG,
        },
        extract=lambda m: {
            "normalized_shape": list(m.normalized_shape),
            "eps": m.eps,
            "elementwise_affine": m.elementwise_affine,
            "bias": m.bias is not None,
        },
        # w and b, each of normalized_shape, when learnt
        parameter_count=lambda a: (
            math.prod(a["normalized_shape"])
            * (int(a["elementwise_affine"]) + int(a["elementwise_affine"] and a["bias"]))
        ),
        takes_device=True,
    ),
    "BatchNorm1d": Kind(
        BatchNorm1d,
        {
            "num_features": _integer(0, MAX_FEATURES),
            "eps": _real(0.0, 1e6),
            "momentum": _or_none(_real(0.0, 1.0)),
            "affine": FLAG,
            "track_running_stats": FLAG,
            "bias": FLAG,
        },
        extract=lambda m: {
            "num_features": m.num_features,
            "eps": m.eps,
            "momentum": m.momentum,
            "affine": m.affine,
            "track_running_stats": m.track_running_stats,
            "bias": m.bias is not None,
        },
        # w and b when learnt, and the two running statistics (buffers), C numbers each
        parameter_count=lambda a: (
            a["num_features"]
            * (
                2 * int(a["track_running_stats"])
                + int(a["affine"])
                + int(a["affine"] and a["bias"])
            )
        ),
        takes_device=True,
    ),
}


def architecture(model: Module) -> dict[str, Any]:
    """The model as a JSON-able tree that ``build`` turns back into the same model.

    ``{"type": "Sequential", "children": [...]}`` for a Sequential, with ``"names"``
    when its children are named otherwise than "0", "1", ... (an ``OrderedDict``);
    ``{"type": name, "args": {constructor arguments}}`` for an allowed leaf.

    Raises:
        TypeError: naming a module whose type is not in the allow-list, or one that
            the model uses twice (a tree would rebuild it as two modules).
    """
    return _describe(model, set())


def _describe(model: Module, seen: set[int]) -> dict[str, Any]:
    """``architecture``, with the ids of the modules described so far."""
    if id(model) in seen:
        raise TypeError(
            f"nograd.io: the model uses one {type(model).__name__} module twice; a checkpoint "
            f"describes a tree, which would load as two separate modules. Save its "
            f"state_dict() instead"
        )
    seen.add(id(model))
    if type(model) is Sequential:
        tree = {"type": "Sequential", "children": [_describe(child, seen) for child in model]}
        names = list(model._modules)
        if names != [str(i) for i in range(len(names))]:
            tree["names"] = names
        return tree
    name = type(model).__name__
    kind = ALLOWED.get(name)
    if kind is None or type(model) is not kind.cls or model._modules:
        raise TypeError(
            f"nograd.io: cannot describe a {type(model).__module__}.{type(model).__qualname__}; "
            f"checkpoints support Sequential and {sorted(ALLOWED)}"
        )
    args = kind.extract(model) if kind.extract else {a: getattr(model, a) for a in kind.args}
    return {"type": name, "args": args}


def build(
    arch: Mapping[str, Any],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Module:
    """Construct the model that ``arch`` (from ``architecture``) describes.

    Every node is checked first (allowed type, exact argument names, argument
    types and ranges, depth <= MAX_DEPTH, at most MAX_MODULES modules and
    MAX_PARAMETERS parameters); only then is anything allocated. Parameters are
    freshly initialised from the global generator, as the constructors do.

    Raises:
        ValueError: naming the node and what was wrong with it.
    """
    budget = {"modules": 0, "parameters": 0}
    _check_node(arch, "architecture", 0, budget)
    return _construct(arch, device, dtype)


def _check_node(node: Any, where: str, depth: int, budget: dict[str, int]) -> None:
    if not isinstance(node, Mapping):
        raise ValueError(f"{where}: expected an object, got {_show(node)}")
    budget["modules"] += 1
    if depth > MAX_DEPTH or budget["modules"] > MAX_MODULES:
        raise ValueError(f"{where}: deeper than {MAX_DEPTH} or more than {MAX_MODULES} modules")
    name = node.get("type")
    if name == "Sequential":
        _check_keys(node, {"type", "children"} | ({"names"} & set(node)), where)
        children = node["children"]
        if not isinstance(children, list):
            raise ValueError(f"{where}.children: expected a list, got {_show(children)}")
        if "names" in node:
            _check_names(node["names"], len(children), f"{where}.names")
        for i, child in enumerate(children):
            _check_node(child, f"{where}.children[{i}]", depth + 1, budget)
        return
    if not isinstance(name, str) or name not in ALLOWED:
        raise ValueError(
            f"{where}.type: {_show(name)} is not an allowed module type "
            f"(Sequential, {', '.join(sorted(ALLOWED))})"
        )
    _check_keys(node, {"type", "args"}, where)
    kind, args = ALLOWED[name], node["args"]
    if not isinstance(args, Mapping):
        raise ValueError(f"{where}.args: expected an object, got {_show(args)}")
    _check_keys(args, set(kind.args), f"{where}.args ({name})")
    for arg, check in kind.args.items():
        check(f"{where}.args.{arg}", args[arg])
    budget["parameters"] += kind.parameter_count(args)
    if budget["parameters"] > MAX_PARAMETERS:
        raise ValueError(f"{where}: the model would exceed {MAX_PARAMETERS} parameters")


_TAKEN = {"training", "saved", *dir(Sequential)}  # a child may not shadow these


def _check_names(names: Any, count: int, where: str) -> None:
    """A Sequential's child names: one per child, distinct, non-empty, without dots."""
    if not (isinstance(names, list) and len(names) == count):
        raise ValueError(f"{where}: expected a list of {count} names, got {_show(names)}")
    for name in names:
        usable = isinstance(name, str) and 0 < len(name) <= 256 and "." not in name
        if not usable or name.startswith("_") or name in _TAKEN:
            raise ValueError(
                f"{where}: expected names without '.' or a leading '_' that are not "
                f"Sequential's own attributes, got {_show(name)}"
            )
    if len(set(names)) != count:
        raise ValueError(f"{where}: expected distinct names, got {_show(names)}")


def _check_keys(node: Mapping[str, Any], expected: set[str], where: str) -> None:
    if set(node) != expected:
        raise ValueError(f"{where}: expected keys {sorted(expected)}, got {sorted(node)}")


def _construct(
    node: Mapping[str, Any], device: torch.device | str | None, dtype: torch.dtype | None
) -> Module:
    if node["type"] == "Sequential":
        children = [_construct(child, device, dtype) for child in node["children"]]
        if "names" in node:
            return Sequential(OrderedDict(zip(node["names"], children, strict=True)))
        return Sequential(*children)
    kind = ALLOWED[node["type"]]
    extra = {"device": device, "dtype": dtype} if kind.takes_device else {}
    return kind.cls(**kind.restore(node["args"]), **extra)

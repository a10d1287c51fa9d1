"""Checkpoints: a model (and optionally its optimizer) in one safetensors file.

Layout of the file:
    tensors: ``model.<state_dict key>`` for every model tensor and
        ``optimizer.state.<index>.<name>`` for every optimizer state tensor.
    metadata (str -> str): ``format`` = "nograd", ``format_version``,
        ``architecture`` (the model as a JSON tree, see ``nograd.architecture``),
        ``optimizer`` (its class, param_groups, non-tensor state and the model key
        of each of its parameters, as JSON) and ``metadata`` (the caller's dict).
    A training checkpoint (``nograd.checkpoint``) adds ``training.*`` tensors and a
    ``training`` entry; ``load`` ignores them, ``nograd.resume`` reads them.

Loading never runs code from the file: safetensors holds raw tensors only, and the
model is rebuilt by ``nograd.architecture.build`` from an allow-list of types whose
arguments are checked one by one, with bounds on sizes, depth and parameter count,
before anything is allocated. Writing is atomic (``nograd.safefile``): a crash leaves
the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import safetensors.torch
import torch
from torch import Tensor

from nograd.architecture import (
    _show,
    architecture,
    build,
)
from nograd.nn.module import Module
from nograd.optim.optimizer import IMPLEMENTATION_OPTIONS
from nograd.safefile import atomic_write, check_folder, encode

FORMAT = "nograd"
FORMAT_VERSION = 1
TRAINING_PREFIX = "training."  # tensors of a training checkpoint (nograd.checkpoint)
OPTIMIZER_KEYS = {"class", "param_groups", "state", "param_keys"}
LIST_OPTIONS = {"params", "param_names"}  # the group entries that torch keeps as lists
PathLike = str | os.PathLike[str]


class SupportsStateDict(Protocol):
    """What ``save`` and ``load`` need of an optimizer (``nograd.optim.Optimizer``)."""

    @property
    def param_groups(self) -> Sequence[Mapping[str, Any]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class Checkpoint(NamedTuple):
    """What ``load_checkpoint`` returns."""

    model: Module
    optimizer_state: dict[str, Any] | None  # torch.optim's state_dict format
    metadata: dict[str, Any]  # the caller's dict given to ``save`` ({} if none)


# -------------------------------------------------------------------- writing
def save(
    model: Module,
    path: PathLike,
    optimizer: SupportsStateDict | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model`` (and ``optimizer``'s state, and ``metadata``) to ``path``.

    Args:
        model: a Sequential of allowed layers, or one allowed layer.
        path: the file to write; replaced atomically if it exists.
        optimizer: an optimizer over parameters of ``model``, whose state to keep.
        metadata: JSON-able values to keep alongside (tuples come back as lists).

    Raises:
        TypeError: for a module type outside the allow-list, or metadata that JSON
            cannot hold.
        ValueError: if ``optimizer`` holds a parameter that is not in ``model``,
            layers share a parameter (the architecture cannot say so), or the folder
            of ``path`` does not exist.
    """
    check_folder(path, "nograd.io.save: path")
    header = model_header(model)
    tensors = {f"model.{key}": tensor for key, tensor in model.state_dict().items()}
    if metadata is not None:
        header["metadata"] = metadata_json(metadata)
    if optimizer is not None:
        optimizer_tensors, header["optimizer"] = pack_optimizer(model, optimizer)
        tensors.update(optimizer_tensors)
    try:
        data = encode(tensors, header)
    except ValueError as error:
        raise ValueError(f"nograd.io.save: {error}") from None
    atomic_write(path, data)


def model_header(model: Module) -> dict[str, str]:
    """The metadata entries that say what ``model`` is, once it is known to rebuild.

    Raises:
        TypeError, ValueError: as ``save`` does for a model it cannot describe.
    """
    arch = architecture(model)
    _check_rebuilds(model, arch)
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "architecture": json.dumps(arch),
    }


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """The caller's metadata as the JSON text ``save`` stores."""
    if not isinstance(metadata, Mapping):
        raise TypeError(f"nograd.io.save: expected a dict of metadata, got {_show(metadata)}")
    return _to_json("metadata", dict(metadata))


def _check_rebuilds(model: Module, arch: dict[str, Any]) -> None:
    """Refuse to write a checkpoint that ``load`` could not match up again."""
    slots = sum(p is not None for m in model.modules() for p in m._parameters.values())
    if slots != len(list(model.parameters())):
        raise ValueError("nograd.io.save: the model shares (ties) parameters between layers")
    try:
        rebuilt = {key: t.shape for key, t in build(arch, device="meta").state_dict().items()}
    except ValueError as error:  # an argument outside what ``load`` accepts
        raise ValueError(f"nograd.io.save: load would refuse this model: {error}") from None
    actual = {key: t.shape for key, t in model.state_dict().items()}
    if rebuilt != actual:
        raise TypeError(
            f"nograd.io.save: the model's tensors {_shapes(actual)} differ from those its "
            f"architecture rebuilds {_shapes(rebuilt)}"
        )


def _to_json(what: str, value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"nograd.io.save: {what} must be JSON-serialisable: {error}") from None


def pack_optimizer(model: Module, optimizer: SupportsStateDict) -> tuple[dict[str, Tensor], str]:
    """The optimizer's state tensors (by file key) and the JSON of everything else."""
    key_of = {id(param): key for key, param in model.named_parameters()}
    param_keys = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) not in key_of:
                raise ValueError(
                    f"nograd.io.save: the optimizer holds a parameter of shape "
                    f"{tuple(param.shape)} that is not in the model"
                )
            param_keys.append(key_of[id(param)])
    state_dict = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            key = f"optimizer.state.{index}.{name}"
            if isinstance(value, Tensor):
                tensors[key] = value
            elif isinstance(value, list) and any(isinstance(item, Tensor) for item in value):
                # a list of tensors (LBFGS's history): each at "key.j", {"tensor": j} in its place
                tensors.update({f"{key}.{j}": t for j, t in _tensors_in(value)})
                scalars.setdefault(str(index), {})[name] = [
                    {"tensor": j} if isinstance(item, Tensor) else item
                    for j, item in enumerate(value)
                ]
            else:
                scalars.setdefault(str(index), {})[name] = value
    packed = {
        "class": type(optimizer).__name__,
        "param_groups": state_dict["param_groups"],
        "state": scalars,
        "param_keys": param_keys,
    }
    return tensors, _to_json("the optimizer's state", packed)


def _tensors_in(items: list[Any]) -> list[tuple[int, Tensor]]:
    return [(j, item) for j, item in enumerate(items) if isinstance(item, Tensor)]


# -------------------------------------------------------------------- reading
class _Contents(NamedTuple):
    model: Module
    optimizer_state: dict[str, Any] | None
    optimizer_class: str | None
    param_keys: list[str]  # the model key of each optimizer parameter, in order
    metadata: dict[str, Any]
    header: dict[str, str]  # the file's raw metadata entries
    training: dict[str, Tensor]  # a training checkpoint's tensors, without the prefix, on the CPU


def load(
    path: PathLike,
    optimizer: SupportsStateDict | None = None,
    map_location: torch.device | str | None = None,
) -> Module:
    """Rebuild the model saved at ``path``, with its tensors on ``map_location``.

    The model's dtype is that of the saved tensors. When ``optimizer`` is given it
    must be of the saved class, with its parameters in the order of the saved one
    (as ``Adam(model.parameters())`` on a model of the same architecture gives):
    those Parameter objects receive the saved values (their ``grad`` is cleared)
    and become the returned model's parameters, and the optimizer's state is
    restored, so training continues exactly where it stopped.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: for anything but an intact nograd checkpoint, naming the path and
            what is wrong; for an optimizer that does not match the saved one.
    """
    where = f"nograd.io.load: {os.fspath(path)}"
    contents = _read(path, map_location, where)
    if optimizer is not None:
        _restore_optimizer(contents, optimizer, where)
    return contents.model


def load_checkpoint(path: PathLike, map_location: torch.device | str | None = None) -> Checkpoint:
    """Rebuild the model and return it with the optimizer's state_dict and the metadata.

    ``optimizer_state`` is None when no optimizer was saved; otherwise pass it to
    ``load_state_dict`` of an optimizer built over ``model.parameters()``.
    """
    where = f"nograd.io.load_checkpoint: {os.fspath(path)}"
    contents = _read(path, map_location, where)
    return Checkpoint(contents.model, contents.optimizer_state, contents.metadata)


def _read(path: PathLike, map_location: torch.device | str | None, where: str) -> _Contents:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    except OSError as error:  # a directory, no permission
        raise ValueError(f"{where}: cannot read it ({error.strerror})") from None
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # safetensors' own error types are not public
        raise ValueError(f"{where}: not a valid safetensors file ({error})") from None
    header_size = int.from_bytes(data[:8], "little")  # safetensors has checked the header
    file_header = json.loads(data[8 : 8 + header_size])
    header = file_header.get("__metadata__") or {}
    # safetensors hands the tensors back in no fixed order: put them in the file's, so that
    # a loaded optimizer's state keeps the order it was saved in (and saves the same bytes)
    tensors = {key: tensors[key] for key in file_header if key != "__metadata__"}
    if header.get("format") != FORMAT:
        raise ValueError(f"{where}: not a nograd checkpoint (its metadata lacks format=nograd)")
    if header.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(
            f"{where}: format version {_show(header.get('format_version'))} is not the "
            f"one this nograd reads ({FORMAT_VERSION})"
        )
    try:
        model = build(_from_json(header, "architecture", where), device="meta")
    except (TypeError, ValueError) as error:  # constructors may refuse what the checks allow
        raise ValueError(f"{where}: {error}") from None

    device = torch.device("cpu" if map_location is None else map_location)
    model_tensors, optimizer_tensors, training = {}, {}, {}
    for key, tensor in tensors.items():
        if key.startswith("model."):
            model_tensors[key.removeprefix("model.")] = tensor.to(device)
        elif key.startswith("optimizer.state."):
            optimizer_tensors[key.removeprefix("optimizer.state.")] = tensor.to(device)
        elif key.startswith(TRAINING_PREFIX):
            training[key.removeprefix(TRAINING_PREFIX)] = tensor
        else:
            raise ValueError(f"{where}: unexpected tensor {_show(key)}")
    _attach(model, model_tensors, where)

    metadata = _from_json(header, "metadata", where) if "metadata" in header else {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: the metadata is not a JSON object")
    if "optimizer" not in header:
        if optimizer_tensors:
            raise ValueError(f"{where}: optimizer tensors but no optimizer metadata")
        return _Contents(model, None, None, [], metadata, header, training)
    packed = _from_json(header, "optimizer", where)
    state, param_keys = _unpack_optimizer(packed, optimizer_tensors, model, where)
    return _Contents(model, state, packed["class"], param_keys, metadata, header, training)


def _from_json(header: Mapping[str, str], key: str, where: str) -> Any:
    text = header.get(key)
    if not isinstance(text, str):
        raise ValueError(f"{where}: its metadata has no {key!r} entry")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{where}: the {key!r} metadata is not valid JSON") from None


def _shapes(shapes: Mapping[str, torch.Size]) -> str:
    items = [f"{key}: {tuple(shape)}" for key, shape in shapes.items()]
    return "{" + ", ".join(items[:8]) + (", ..." if len(items) > 8 else "") + "}"


def _attach(model: Module, tensors: dict[str, Tensor], where: str) -> None:
    """Make the saved tensors the (meta-device) model's parameters, without copies."""
    expected = {key: tensor.shape for key, tensor in model.state_dict().items()}
    found = {key: tensor.shape for key, tensor in tensors.items()}
    if expected != found:
        raise ValueError(
            f"{where}: the file's model tensors {_shapes(found)} do not match its "
            f"architecture, which needs {_shapes(expected)}"
        )
    # floats where the model holds floats (in the file's precision), and the model's own
    # dtype where it holds an integer (BatchNorm1d's num_batches_tracked, int64)
    dtypes = {key: tensor.dtype for key, tensor in model.state_dict().items()}
    misfits = [
        f"{key}: {tensor.dtype}"
        for key, tensor in tensors.items()
        if not (
            tensor.is_floating_point()
            if dtypes[key].is_floating_point
            else tensor.dtype == dtypes[key]
        )
    ]
    if misfits:
        raise ValueError(
            f"{where}: expected floating-point model tensors (and int64 counts), got {misfits[:8]}"
        )
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, param in module._parameters.items():
            if param is not None:
                param.data = tensors[prefix + name]
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and name not in module._non_persistent:
                setattr(module, name, tensors[prefix + name])


def _unpack_optimizer(
    packed: Any, tensors: dict[str, Tensor], model: Module, where: str
) -> tuple[dict[str, Any], list[str]]:
    """Check the optimizer's JSON and tensors and reassemble torch's state_dict."""
    bad = f"{where}: malformed optimizer metadata"
    if not isinstance(packed, dict) or set(packed) != OPTIMIZER_KEYS:
        raise ValueError(bad)
    groups, scalars, param_keys = packed["param_groups"], packed["state"], packed["param_keys"]
    if not (
        isinstance(packed["class"], str)
        and isinstance(groups, list)
        and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
        and isinstance(param_keys, list)
        and isinstance(scalars, dict)
        and all(isinstance(entry, dict) for entry in scalars.values())
    ):
        raise ValueError(bad)
    indices = [index for group in groups for index in group["params"]]
    if any(type(i) is not int for i in indices) or sorted(indices) != list(range(len(param_keys))):
        raise ValueError(f"{bad}: parameter indices {_show(indices)}")
    model_keys = {key for key, _ in model.named_parameters()}
    if not all(isinstance(key, str) for key in param_keys):  # before the set: lists don't hash
        raise ValueError(f"{bad}: parameter keys {_show(param_keys)} are not all names")
    if len(set(param_keys)) != len(param_keys) or not set(param_keys) <= model_keys:
        raise ValueError(f"{bad}: parameters {_show(param_keys)} are not those of the model")

    state: dict[int, dict[str, Any]] = {}
    for index_text, entry in scalars.items():
        state.setdefault(_index(index_text, len(param_keys), bad), {}).update(entry)
    for name, tensor in tensors.items():
        index_text, _, state_name = name.partition(".")
        if not state_name:
            raise ValueError(f"{bad}: tensor name {_show(name)}")
        state.setdefault(_index(index_text, len(param_keys), bad), {})[state_name] = tensor
    for entry in state.values():  # lists of tensors: each {"tensor": j} from "name.j"
        for name, value in list(entry.items()):
            if isinstance(value, list):
                entry[name] = [_list_item(entry, name, item, bad) for item in value]
    param_groups = [
        {
            key: tuple(v) if isinstance(v, list) and key not in LIST_OPTIONS else v
            for key, v in g.items()
        }
        for g in groups
    ]  # JSON turned tuples (Adam's betas) into lists; torch's own lists stay lists
    return {"state": state, "param_groups": param_groups}, param_keys


def _list_item(entry: dict[str, Any], name: str, item: Any, bad: str) -> Any:
    """An item of a saved list: the tensor its {"tensor": j} names, taken out of
    ``entry``, or the item itself."""
    if not (isinstance(item, dict) and set(item) == {"tensor"}):
        return item
    key = f"{name}.{item['tensor']}"
    if key not in entry or not isinstance(entry[key], Tensor):
        raise ValueError(f"{bad}: no tensor {_show(key)} for the list {_show(name)}")
    return entry.pop(key)


def _index(text: str, count: int, bad: str) -> int:
    # the ASCII digits that str(index) wrote: isdigit alone takes "²" (int() refuses it),
    # "١" and "01" (which int() reads as another entry's index)
    if not (text.isascii() and text.isdigit() and str(int(text)) == text and int(text) < count):
        raise ValueError(f"{bad}: state index {_show(text)}")
    return int(text)


def check_options(saved_groups: list[dict[str, Any]], optimizer: Any, where: str) -> None:
    """Refuse saved hyperparameters that ``optimizer`` could not step with.

    ``load_state_dict`` takes the options as saved, as torch's does, so a forged file
    with an lr of text or betas of 1 would pass and fail (or divide by zero) steps
    later. Each saved group must hold every option of the live one, with values of
    the same kinds (``same_kinds``), that pass the checks of the optimizer's constructor.
    """
    for i, (saved, live) in enumerate(zip(saved_groups, optimizer.param_groups, strict=False)):
        for name, value in live.items():
            if name in IMPLEMENTATION_OPTIONS and name not in saved:
                continue  # written before nograd kept them: the load takes the default
            if name == "param_names" and name not in saved:
                continue  # saved without names: the load keeps the live group's, as torch
            if name != "params" and (name not in saved or not same_kinds(value, saved[name])):
                raise ValueError(
                    f"{where}: the optimizer's option {name!r} of group {i} is "
                    f"{_show(saved.get(name, 'missing'))}, expected one like {_show(value)}"
                )
        try:
            optimizer.check_all_options({k: v for k, v in saved.items() if k != "params"})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: group {i}: {error}") from None


def same_kinds(live: Any, saved: Any) -> bool:
    """Whether ``saved`` (read from JSON) has the entries and kinds of ``live``, nested.

    A number stands for a number, text for text, a bool for a bool, a list (JSON makes
    tuples lists) for a list or tuple of the same length; a dict holds at least
    ``live``'s keys (a Counter's, counts by milestone, may differ). Where ``live`` holds
    None (an entry set later, or a function), or a kind JSON does not hold, anything
    goes: the owner's checks judge it.
    """
    if live is None:
        return True
    if isinstance(live, (bool, str)):
        return type(saved) is type(live)
    if isinstance(live, (int, float)):
        return type(saved) in (int, float)
    if isinstance(live, Counter):
        return isinstance(saved, dict) and all(type(v) is int for v in saved.values())
    if isinstance(live, dict):
        return (
            isinstance(saved, dict)
            and set(live) <= set(saved)
            and all(same_kinds(value, saved[key]) for key, value in live.items())
        )
    if isinstance(live, (list, tuple)):
        return (
            isinstance(saved, (list, tuple))
            and len(saved) == len(live)
            and all(same_kinds(a, b) for a, b in zip(live, saved, strict=True))
        )
    return True


def _restore_optimizer(contents: _Contents, optimizer: SupportsStateDict, where: str) -> None:
    saved = contents.optimizer_state
    if saved is None:
        raise ValueError(f"{where}: holds no optimizer state to restore")
    if type(optimizer).__name__ != contents.optimizer_class:
        raise ValueError(
            f"{where}: holds the state of a {contents.optimizer_class}, "
            f"not of a {type(optimizer).__name__}"
        )
    check_options(saved["param_groups"], optimizer, where)
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    saved_sizes = [len(group["params"]) for group in saved["param_groups"]]
    if sizes != saved_sizes:
        raise ValueError(
            f"{where}: the optimizer's parameter groups hold {sizes} parameters, "
            f"the saved ones {saved_sizes}"
        )
    slots = {}
    for module_name, module in contents.model.named_modules():
        for name, param in module._parameters.items():
            if param is not None:
                slots[f"{module_name}.{name}" if module_name else name] = (module, name, param)
    params = [param for group in optimizer.param_groups for param in group["params"]]
    for param, key in zip(params, contents.param_keys, strict=True):
        if param.shape != slots[key][2].shape:
            raise ValueError(
                f"{where}: the optimizer's parameter for {key} has shape "
                f"{tuple(param.shape)}, the saved one {tuple(slots[key][2].shape)}"
            )
    for param, key in zip(params, contents.param_keys, strict=True):
        module, name, loaded = slots[key]
        param.data, param.grad = loaded.data, None
        module.register_parameter(name, param)  # the model now trains the optimizer's objects
    optimizer.load_state_dict(saved)

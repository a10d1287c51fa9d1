from __future__ import annotations

import json
import os
import pickle
import random
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch

from nograd import io
from nograd.nn import Linear, Module, Parameter, Sequential
from nograd.nn.activations import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from nograd.nn.batch_norm import BatchNorm1d
from nograd.nn.dropout import Dropout
from nograd.nn.layer_norm import LayerNorm

DTYPES = [torch.float32, torch.float64]


def every_layer(dtype: torch.dtype = torch.float32) -> Sequential:
    """One of every allowed type, a nested Sequential and a bias-free Linear."""
    return Sequential(
        Linear(2, 8, dtype=dtype),
        ReLU(),
        Sequential(Linear(8, 8, bias=False, dtype=dtype), LeakyReLU(0.2), Dropout(0.25)),
        Tanh(),
        Linear(8, 8, dtype=dtype),
        ELU(alpha=0.7),
        GELU(approximate="tanh"),
        Linear(8, 8, dtype=dtype),
        LayerNorm((8,), eps=1e-4, dtype=dtype),
        BatchNorm1d(8, momentum=None, dtype=dtype),
        Sigmoid(),
        Identity(),
        Linear(8, 3, dtype=dtype),
        Softmax(dim=1),
    )


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safetensors.safe_open(str(path), framework="pt") as file:
        return {key: file.get_tensor(key) for key in file.keys()}, file.metadata()  # noqa: SIM118


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def crafted(tmp_path: Path, arch: Any, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    header = {"format": "nograd", "format_version": "1", "architecture": json.dumps(arch)}
    return write(tmp_path / "crafted.safetensors", tensors or {}, header)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_gives_identical_predictions_and_state(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    model = every_layer(dtype).eval()
    path = tmp_path / "model.safetensors"
    io.save(model, path)
    loaded = io.load(path).eval()

    x = torch.randn(16, 2, dtype=dtype)
    assert torch.equal(loaded(x), model(x))
    assert loaded(x).dtype == dtype
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]) and theirs[key].dtype == ours[key].dtype
        assert ours[key].dtype == (torch.int64 if key.endswith("num_batches_tracked") else dtype)
        assert ours[key].data_ptr() != theirs[key].data_ptr()  # a copy, not shared
    assert repr(loaded) == repr(model)
    assert io.architecture(loaded) == io.architecture(model)


def test_round_trip_of_a_single_layer_and_of_dropout_settings(tmp_path: Path) -> None:
    layer = Linear(3, 5, bias=False, dtype=torch.float64)
    io.save(layer, tmp_path / "a.safetensors")
    loaded = io.load(tmp_path / "a.safetensors")
    assert isinstance(loaded, Linear) and loaded.bias is None
    assert torch.equal(loaded.weight.data, layer.weight.data)
    seeded = Dropout(0.8, inplace=True, generator=torch.Generator().manual_seed(0))
    io.save(Sequential(seeded, LeakyReLU(0.1, inplace=True), ReLU()), tmp_path / "b.safetensors")
    dropout, leaky, relu = io.load(tmp_path / "b.safetensors")
    assert isinstance(dropout, Dropout) and (dropout.p, dropout.inplace) == (0.8, True)
    assert dropout.generator is None  # run-time state, not architecture
    assert isinstance(leaky, LeakyReLU) and (leaky.negative_slope, leaky.inplace) == (0.1, True)
    assert isinstance(relu, ReLU) and relu.inplace is False
    io.save(Sequential(Dropout(1.0), Softmax()), tmp_path / "c.safetensors")  # torch's edges
    dropout, softmax = io.load(tmp_path / "c.safetensors")
    assert isinstance(dropout, Dropout) and dropout.p == 1.0
    assert isinstance(softmax, Softmax) and softmax.dim is None


def test_round_trip_keeps_batch_norm_statistics_and_its_int64_count(tmp_path: Path) -> None:
    model = Sequential(Linear(3, 4), BatchNorm1d(4), LayerNorm(4, bias=False)).train()
    for _ in range(3):
        model(torch.randn(5, 3))
    io.save(model, tmp_path / "m.safetensors")
    loaded = io.load(tmp_path / "m.safetensors")
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    count = loaded.state_dict()["1.num_batches_tracked"]
    assert count.dtype == torch.int64 and int(count) == 3
    tensors, metadata = read(tmp_path / "m.safetensors")
    tensors["model.1.num_batches_tracked"] = tensors["model.1.num_batches_tracked"].double()
    with pytest.raises(ValueError, match=r"1.num_batches_tracked: torch.float64"):
        io.load(write(tmp_path / "float_count.safetensors", tensors, metadata))
    tensors["model.1.num_batches_tracked"] = torch.tensor(3)
    tensors["model.0.weight"] = tensors["model.0.weight"].int()
    with pytest.raises(ValueError, match=r"0.weight: torch.int32"):
        io.load(write(tmp_path / "int_weight.safetensors", tensors, metadata))


def test_architecture_is_json_and_build_constructs_like_the_constructors() -> None:
    model = every_layer()
    arch = io.architecture(model)
    assert json.loads(json.dumps(arch)) == arch
    assert arch["children"][0] == {
        "type": "Linear",
        "args": {"in_features": 2, "out_features": 8, "bias": True},
    }
    torch.manual_seed(0)
    built = io.build(arch)
    torch.manual_seed(0)
    again = every_layer()
    assert repr(built) == repr(again)
    for a, b in zip(built.parameters(), again.parameters(), strict=True):
        assert torch.equal(a.data, b.data)
    assert io.build(arch, dtype=torch.float64).state_dict()["0.weight"].dtype == torch.float64


def test_load_leaves_the_global_generator_alone(tmp_path: Path) -> None:
    io.save(every_layer(), tmp_path / "m.safetensors")
    before = torch.random.get_rng_state()
    io.load(tmp_path / "m.safetensors")
    assert torch.equal(before, torch.random.get_rng_state())


def test_map_location_places_the_tensors(tmp_path: Path) -> None:
    io.save(every_layer(), tmp_path / "m.safetensors")
    on_meta = io.load(tmp_path / "m.safetensors", map_location="meta")
    assert all(p.device.type == "meta" for p in on_meta.parameters())
    on_cpu = io.load(tmp_path / "m.safetensors", map_location=torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in on_cpu.parameters())


def test_metadata_round_trips(tmp_path: Path) -> None:
    metadata = {"epoch": 3, "loss": 0.25, "tags": ["disk", "relu"], "more": {"x": None, "ok": True}}
    io.save(every_layer(), tmp_path / "m.safetensors", metadata=metadata)
    checkpoint = io.load_checkpoint(tmp_path / "m.safetensors")
    assert checkpoint.metadata == metadata
    assert checkpoint.optimizer_state is None
    io.save(every_layer(), tmp_path / "plain.safetensors")
    assert io.load_checkpoint(tmp_path / "plain.safetensors").metadata == {}


def test_save_refuses_bad_metadata(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        io.save(every_layer(), tmp_path / "m.safetensors", metadata={"f": object()})
    with pytest.raises(TypeError, match="dict of metadata"):
        io.save(every_layer(), tmp_path / "m.safetensors", metadata=[1, 2])  # type: ignore[arg-type]
    assert not (tmp_path / "m.safetensors").exists()


class Custom(Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MyLinear(Linear):
    pass


def test_save_refuses_a_type_outside_the_allow_list(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"Custom.*checkpoints support"):
        io.save(Sequential(Linear(2, 2), Custom()), tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="MyLinear"):
        io.save(Sequential(MyLinear(2, 2)), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_model_its_architecture_cannot_rebuild(tmp_path: Path) -> None:
    model = Sequential(Linear(2, 3), Linear(3, 1))
    model[1].weight = Parameter(torch.randn(1, 5))  # no longer what Linear(3, 1) makes
    with pytest.raises(TypeError, match=r"1\.weight: \(1, 5\)"):
        io.save(model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_children_with_names_of_their_own_round_trip(tmp_path: Path) -> None:
    model = Sequential(
        OrderedDict([("hidden", Linear(2, 3)), ("act", Tanh()), ("out", Linear(3, 1))])
    )
    model.add_module("head", Linear(1, 2))  # a name after the numbered ones, too
    io.save(model, tmp_path / "m.safetensors")
    loaded = io.load(tmp_path / "m.safetensors")
    assert [name for name, _ in loaded.named_children()] == ["hidden", "act", "out", "head"]
    x = torch.randn(4, 2)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("shared", ["activation", "linear"])
def test_save_refuses_a_module_used_twice(tmp_path: Path, shared: str) -> None:
    module = Tanh() if shared == "activation" else Linear(3, 3)
    model = Sequential(Linear(2, 3), module, Linear(3, 3), module)
    with pytest.raises(TypeError, match=r"uses one (Tanh|Linear) module twice.*state_dict\(\)"):
        io.save(model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_tied_parameters(tmp_path: Path) -> None:
    model = Sequential(Linear(3, 3), Tanh(), Linear(3, 3))
    model[2].weight = model[0].weight
    with pytest.raises(ValueError, match="ties"):
        io.save(model, tmp_path / "m.safetensors")


# -------------------------------------------------------------------- optimizer
def train(model: Module, optimizer: Any, steps: int) -> None:
    """A few steps of least squares, with dL/dy = 2 (y - t) / N written by hand."""
    generator = torch.Generator().manual_seed(123)
    for _ in range(steps):
        x = torch.randn(8, 2, generator=generator, dtype=torch.float64)
        target = torch.randn(8, 3, generator=generator, dtype=torch.float64)
        optimizer.zero_grad()
        y = model(x)
        model.backward(2 * (y - target) / y.numel())
        optimizer.step()


def small_model() -> Sequential:
    return Sequential(Linear(2, 6, dtype=torch.float64), Tanh(), Linear(6, 3, dtype=torch.float64))


OPTIMIZERS = {
    "sgd": lambda params: pytest.importorskip("nograd.optim").SGD(
        params, lr=0.1, momentum=0.9, nesterov=True
    ),
    "adam": lambda params: pytest.importorskip("nograd.optim").Adam(
        params, lr=0.01, betas=(0.8, 0.99)
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_continues_exactly_after_save_and_load(tmp_path: Path, name: str) -> None:
    make = OPTIMIZERS[name]
    model = small_model()
    optimizer = make(model.parameters())
    train(model, optimizer, 3)
    io.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    train(model, optimizer, 4)

    other = small_model()  # fresh weights: load must overwrite them
    other_optimizer = make(other.parameters())
    resumed = io.load(tmp_path / "m.safetensors", optimizer=other_optimizer)
    assert list(resumed.parameters()) == [
        p for group in other_optimizer.param_groups for p in group["params"]
    ]
    train(resumed, other_optimizer, 4)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a.data, b.data)

    checkpoint = io.load_checkpoint(tmp_path / "m.safetensors")
    assert checkpoint.optimizer_state is not None
    third_optimizer = make(checkpoint.model.parameters())
    third_optimizer.load_state_dict(checkpoint.optimizer_state)
    train(checkpoint.model, third_optimizer, 4)
    for a, b in zip(model.parameters(), checkpoint.model.parameters(), strict=True):
        assert torch.equal(a.data, b.data)


def test_optimizer_state_dict_round_trips(tmp_path: Path) -> None:
    model = small_model()
    optimizer = OPTIMIZERS["adam"](model.parameters())
    train(model, optimizer, 2)
    io.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    saved = io.load_checkpoint(tmp_path / "m.safetensors").optimizer_state
    assert saved is not None
    expected = optimizer.state_dict()
    assert saved["param_groups"] == expected["param_groups"]
    assert saved["state"].keys() == expected["state"].keys()
    for index, entry in expected["state"].items():
        assert saved["state"][index].keys() == entry.keys()
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(saved["state"][index][key], value)
            else:
                assert saved["state"][index][key] == value


def test_optimizer_mismatches_are_refused(tmp_path: Path) -> None:
    optim = pytest.importorskip("nograd.optim")
    model = small_model()
    optimizer = optim.Adam(model.parameters())
    train(model, optimizer, 1)
    io.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    io.save(model, tmp_path / "plain.safetensors")

    with pytest.raises(ValueError, match="state of a Adam, not of a SGD"):
        io.load(tmp_path / "m.safetensors", optimizer=optim.SGD(small_model().parameters()))
    with pytest.raises(ValueError, match="no optimizer state"):
        io.load(tmp_path / "plain.safetensors", optimizer=optim.Adam(small_model().parameters()))
    fewer = small_model()
    with pytest.raises(ValueError, match="parameter groups hold"):
        io.load(tmp_path / "m.safetensors", optimizer=optim.Adam(list(fewer.parameters())[:2]))
    with pytest.raises(ValueError, match="not in the model"):
        io.save(Sequential(Tanh()), tmp_path / "x.safetensors", optimizer=optimizer)


def _packed(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, str]], None]:
    def apply(header: dict[str, str]) -> None:
        packed = json.loads(header["optimizer"])
        edit(packed)
        header["optimizer"] = json.dumps(packed)

    return apply


def _rename(old: str, new: str) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda tensors: tensors.__setitem__(new, tensors.pop(old))


# A model file with an optimizer, forged one way at a time: (header edit, tensor edit, message)
FORGED_OPTIMIZERS: dict[str, tuple[Any, Any, str]] = {
    "metadata a list": (lambda h: h.update(metadata="[1, 2]"), None, "not a JSON object"),
    "optimizer tensors, no section": (lambda h: h.pop("optimizer"), None, "no optimizer metadata"),
    "indices not 0..n-1": (_packed(lambda o: o["param_groups"][0]["params"].append(7)), None,
                           "parameter indices"),
    "a key not the model's": (_packed(lambda o: o["param_keys"].__setitem__(0, "9.weight")), None,
                              "not those of the model"),
    "a tensor without a state name": (None, _rename("optimizer.state.0.exp_avg",
                                                    "optimizer.state.0"), "tensor name"),
    "a state index out of range": (None, _rename("optimizer.state.0.exp_avg",
                                                 "optimizer.state.99.exp_avg"), "state index"),
}  # fmt: skip


@pytest.mark.parametrize("case", FORGED_OPTIMIZERS)
def test_forged_optimizer_sections_are_refused(tmp_path: Path, case: str) -> None:
    model = small_model()
    optimizer = OPTIMIZERS["adam"](model.parameters())
    train(model, optimizer, 1)
    io.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    tensors, metadata = read(tmp_path / "m.safetensors")
    header = dict(metadata)
    edit_header, edit_tensors, message = FORGED_OPTIMIZERS[case]
    if edit_header is not None:
        edit_header(header)
    if edit_tensors is not None:
        edit_tensors(tensors)
    with pytest.raises(ValueError, match=message):
        io.load(write(tmp_path / "forged.safetensors", tensors, header))


# ------------------------------------------------------------ crafted metadata
@pytest.mark.parametrize(
    "arch",
    [
        {"type": "os.system", "args": {}},
        {"type": "Module", "args": {}},
        {"type": "__import__", "args": {"name": "os"}},
        {"type": "Sequential", "children": [{"type": "MSELoss", "args": {}}]},
    ],
)
def test_the_allow_list_refuses_unknown_types(tmp_path: Path, arch: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="is not an allowed module type"):
        io.load(crafted(tmp_path, arch))


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"type": "Linear", "args": {"in_features": 2, "out_features": 2}}, "expected keys"),
        ({"type": "ReLU", "args": {"inplace": True, "x": 1}}, "expected keys"),
        ({"type": "ReLU", "args": {}}, "expected keys"),
        ({"type": "ReLU", "args": {"inplace": "yes"}}, "inplace"),
        ({"type": "Dropout", "args": {"p": -0.5, "inplace": False}}, "args.p"),
        ({"type": "ReLU"}, "expected keys"),
        (
            {"type": "Linear", "args": {"in_features": "2", "out_features": 2, "bias": True}},
            "in_features",
        ),
        (
            {"type": "Linear", "args": {"in_features": 2.0, "out_features": 2, "bias": True}},
            "in_features",
        ),
        (
            {"type": "Linear", "args": {"in_features": True, "out_features": 2, "bias": True}},
            "in_features",
        ),
        (
            {"type": "Linear", "args": {"in_features": -1, "out_features": 2, "bias": True}},
            "in_features",
        ),
        ({"type": "Linear", "args": {"in_features": 2, "out_features": 2, "bias": 1}}, "bias"),
        ({"type": "Dropout", "args": {"p": 1.5, "inplace": False}}, "args.p"),
        (
            {"type": "LeakyReLU", "args": {"negative_slope": float("nan"), "inplace": False}},
            "negative_slope",
        ),
        ({"type": "GELU", "args": {"approximate": "erf"}}, "approximate"),
        ({"type": "Softmax", "args": {"dim": "1"}}, "dim"),
        ({"type": "Softmax", "args": {"dim": 10**6}}, "dim"),
        ({"type": "Sequential", "children": {"0": {"type": "Tanh", "args": {}}}}, "children"),
        *[
            (
                {
                    "type": "Sequential",
                    "children": [{"type": "Tanh", "args": {}}] * 2,
                    "names": names,
                },
                "names",
            )
            for names in (
                ["a"],
                ["a", "a"],
                ["a", "b.c"],
                ["a", ""],
                ["a", "_x"],
                ["a", "forward"],
                "ab",
                ["a", 1],
            )
        ],
        ([1, 2, 3], "expected an object"),
    ],
)
def test_arguments_are_type_and_range_checked(tmp_path: Path, arch: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        io.load(crafted(tmp_path, arch))


def test_absurd_sizes_are_refused_before_any_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Linear was constructed")

    monkeypatch.setattr(Linear, "__init__", never)
    huge = {"type": "Linear", "args": {"in_features": 10**9, "out_features": 10**9, "bias": True}}
    with pytest.raises(ValueError, match=r"in_features: expected an integer in \[0, 1048576\]"):
        io.load(crafted(tmp_path, huge))
    within_each_bound = {
        "type": "Sequential",
        "children": [
            {"type": "Linear", "args": {"in_features": 2**20, "out_features": 2**20, "bias": False}}
        ],
    }
    with pytest.raises(ValueError, match="exceed"):
        io.load(crafted(tmp_path, within_each_bound))
    with pytest.raises(ValueError, match="exceed"):
        io.build(within_each_bound)
    deep: dict[str, Any] = {"type": "Tanh", "args": {}}
    for _ in range(100):
        deep = {"type": "Sequential", "children": [deep]}
    with pytest.raises(ValueError, match="deeper than"):
        io.load(crafted(tmp_path, deep))
    wide = {"type": "Sequential", "children": [{"type": "Tanh", "args": {}}] * 20_000}
    with pytest.raises(ValueError, match="modules"):
        io.load(crafted(tmp_path, wide))
    nested_json = "[" * 100_000 + "]" * 100_000
    header = {"format": "nograd", "format_version": "1", "architecture": nested_json}
    with pytest.raises(ValueError, match="not valid JSON"):
        io.load(write(tmp_path / "nested.safetensors", {}, header))


def test_tensors_must_match_the_architecture(tmp_path: Path) -> None:
    io.save(small_model(), tmp_path / "m.safetensors")
    tensors, metadata = read(tmp_path / "m.safetensors")
    cases = {
        "missing": {k: v for k, v in tensors.items() if k != "model.2.bias"},
        "extra": {**tensors, "model.2.extra": torch.zeros(3, dtype=torch.float64)},
        "shape": {**tensors, "model.2.bias": torch.zeros(4, dtype=torch.float64)},
        "stray": {**tensors, "something": torch.zeros(1)},
    }
    for name, bad in cases.items():
        with pytest.raises(ValueError, match=r"do not match its architecture|unexpected tensor"):
            io.load(write(tmp_path / f"{name}.safetensors", bad, metadata))
    integral = {**tensors, "model.2.bias": torch.zeros(3, dtype=torch.int64)}
    with pytest.raises(ValueError, match="floating-point"):
        io.load(write(tmp_path / "int.safetensors", integral, metadata))


def test_other_safetensors_files_and_versions_are_refused(tmp_path: Path) -> None:
    foreign = write(tmp_path / "foreign.safetensors", {"w": torch.zeros(2)}, {"x": "y"})
    with pytest.raises(ValueError, match="not a nograd checkpoint"):
        io.load(foreign)
    io.save(small_model(), tmp_path / "m.safetensors")
    tensors, metadata = read(tmp_path / "m.safetensors")
    newer = write(tmp_path / "v2.safetensors", tensors, {**metadata, "format_version": "2"})
    with pytest.raises(ValueError, match="format version '2'"):
        io.load(newer)
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.load(tmp_path / "absent.safetensors")


# ------------------------------------------------------------- hostile files
class Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def assert_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="not a valid safetensors file") as excinfo:
        io.load(path)
    assert str(path) in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_corrupted_files_are_refused(tmp_path: Path) -> None:
    io.save(every_layer(), tmp_path / "good.safetensors")
    data = (tmp_path / "good.safetensors").read_bytes()
    for name, content in {
        "truncated": data[: len(data) // 2],
        "truncated_header": data[:20],
        "random": random.Random(0).randbytes(4096),
        "text": b"this is just a text file\n" * 20,
        "empty": b"",
    }.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        assert_refused(path)


def test_a_pickle_payload_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # The payload works: unpickling a twin of it creates its marker.
    twin_marker = tmp_path / "twin"
    pickle.loads(pickle.dumps(Payload(twin_marker))).close()
    assert twin_marker.exists()

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model.0.weight": Payload(marker)}))
    assert_refused(path)
    torch.save({"x": Payload(marker)}, tmp_path / "evil_torch.safetensors")
    assert_refused(tmp_path / "evil_torch.safetensors")
    assert not marker.exists()


# -------------------------------------------------------------- atomic writes
def test_a_failed_write_leaves_the_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.safetensors"
    first, second = small_model(), small_model()
    io.save(first, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]

    def crash(source: Any, target: Any) -> None:
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        io.save(second, path)
    monkeypatch.undo()

    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left
    x = torch.randn(4, 2, dtype=torch.float64)
    assert torch.equal(io.load(path)(x), first(x))
    io.save(second, path)  # and a write that succeeds replaces the file
    assert torch.equal(io.load(path)(x), second(x))
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_saving_into_a_missing_folder_or_onto_a_folder_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "m.safetensors"
    with pytest.raises(ValueError) as info:
        io.save(small_model(), path)
    assert str(info.value) == f"nograd.io.save: path {str(path)!r}: no such folder"
    assert info.value.__cause__ is None
    with pytest.raises(ValueError) as info:
        io.save(small_model(), tmp_path)
    assert (
        str(info.value) == f"nograd.io.save: path {str(tmp_path)!r}: is a folder; name a file in it"
    )
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_lbfgs_history_lists_round_trip_and_a_missing_item_is_refused(tmp_path: Path) -> None:
    """LBFGS keeps lists of vectors (and of Nones) in its state: each tensor is stored
    as a tensor of its own, named by its position, and comes back in its place."""
    from nograd.optim import LBFGS

    model = small_model()
    optimizer = LBFGS(model.parameters(), max_iter=3, history_size=2)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    target = torch.randn(8, 3, generator=generator, dtype=torch.float64)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        y = model(x)
        model.backward(2 * (y - target) / y.numel())  # dL/dy of the mean squared error
        return ((y - target) ** 2).mean()

    for _ in range(2):
        optimizer.step(closure)
    path = tmp_path / "m.safetensors"
    io.save(model, path, optimizer=optimizer)
    saved = io.load_checkpoint(path).optimizer_state
    assert saved is not None
    expected = optimizer.state_dict()["state"][0]
    assert saved["state"][0].keys() == expected.keys()
    for key in ("old_dirs", "old_stps", "ro", "al"):
        assert len(saved["state"][0][key]) == len(expected[key]) > 0, key
        for a, b in zip(saved["state"][0][key], expected[key], strict=True):
            assert (a is None and b is None) or torch.equal(a, b), key

    with safetensors.safe_open(str(path), "pt") as handle:  # the same file, one item short
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    del tensors["optimizer.state.0.old_dirs.0"]
    safetensors.torch.save_file(tensors, str(tmp_path / "short.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"no tensor 'old_dirs\.0' for the list 'old_dirs'"):
        io.load_checkpoint(tmp_path / "short.safetensors")

"""ModuleList and ModuleDict against torch.nn's: a user's model built on them trains as its
torch twin trains, their state_dicts move both ways, and every list and dict operation
leaves the same children under the same names, with the same reprs and errors."""

from __future__ import annotations

import inspect
import operator
from collections import OrderedDict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor

import nograd.nn
import nograd.optim
from nograd.nn import Module
from nograd.nn.module_containers import ModuleDict, ModuleList

# the names a test builds with, from nograd or from torch.nn alike
OURS = SimpleNamespace(
    ModuleList=ModuleList,
    ModuleDict=ModuleDict,
    **{name: getattr(nograd.nn, name) for name in ("Linear", "ReLU", "Tanh", "Sigmoid")},
)
FRAMEWORKS = {"nograd": OURS, "torch": torch.nn}


# ------------------------------------------------------------- a user's model
class Net(Module):
    """A user's model: a ModuleList body and a ModuleDict of heads, run by hand.

    y = [cls(h), reg(h)] with h = body(x); the two heads share h, so dL/dh is the sum
    of what each head's backward returns.
    """

    def __init__(self) -> None:
        super().__init__()
        nn = OURS
        self.layers = nn.ModuleList([nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU()])
        self.heads = nn.ModuleDict({"cls": nn.Linear(8, 2), "reg": nn.Linear(8, 1)})

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return torch.cat([self.heads["cls"](x), self.heads["reg"](x)], dim=1)

    def backward(self, grad_output: Tensor) -> Tensor:
        grad_cls, grad_reg = grad_output[:, :2], grad_output[:, 2:]
        # dL/dh = dL/d(cls) d(cls)/dh + dL/d(reg) d(reg)/dh
        grad = self.heads["cls"].backward(grad_cls) + self.heads["reg"].backward(grad_reg)
        for layer in reversed(self.layers):
            grad = layer.backward(grad)  # dL/d(in_k) = dL/d(out_{k-1})
        return grad


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.layers = nn.ModuleList([nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU()])
        self.heads = nn.ModuleDict({"cls": nn.Linear(8, 2), "reg": nn.Linear(8, 1)})

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return torch.cat([self.heads["cls"](x), self.heads["reg"](x)], dim=1)


def twins() -> tuple[Net, TorchNet]:
    torch.manual_seed(0)
    ours, twin = Net(), TorchNet()
    twin.load_state_dict(ours.state_dict())
    return ours, twin


def test_a_model_of_containers_trains_as_its_torch_twin_to_the_bit() -> None:
    ours, twin = twins()
    initial = ours.state_dict()["layers.0.weight"].clone()
    optimizer = nograd.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    loss_fn, torch_loss_fn = nograd.nn.MSELoss(), torch.nn.MSELoss()
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, target = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
        optimizer.zero_grad()
        loss = loss_fn(ours(x), target)
        ours.backward(loss_fn.backward())
        optimizer.step()
        torch_optimizer.zero_grad()
        with torch.enable_grad():
            torch_loss = torch_loss_fn(twin(x), target)
            torch_loss.backward()
        torch_optimizer.step()
        assert torch.equal(loss, torch_loss.detach())
    for (name, param), (torch_name, torch_param) in zip(
        ours.named_parameters(), twin.named_parameters(), strict=True
    ):
        assert name == torch_name
        assert torch.equal(param.data, torch_param.detach()), name
    assert not torch.equal(ours.state_dict()["layers.0.weight"], initial)  # it did train


def test_state_dict_keys_and_loading_both_ways() -> None:
    ours, twin = twins()
    assert list(ours.state_dict()) == list(twin.state_dict())
    assert "layers.2.weight" in ours.state_dict() and "heads.cls.bias" in ours.state_dict()
    with torch.no_grad():
        for param in twin.parameters():
            param.mul_(-2.0)
    ours.load_state_dict(twin.state_dict())
    for key, value in twin.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    ours.heads["reg"].bias.data.fill_(7.0)
    twin.load_state_dict(ours.state_dict())
    assert torch.equal(twin.heads["reg"].bias.detach(), torch.tensor([7.0]))


def test_traversal_modes_dtypes_and_zero_grad_reach_the_children() -> None:
    ours, twin = twins()
    assert [name for name, _ in ours.named_modules()] == [n for n, _ in twin.named_modules()]
    assert [name for name, _ in ours.named_children()] == ["layers", "heads"]
    assert ours.get_submodule("heads.cls") is ours.heads["cls"]
    assert ours.get_parameter("layers.0.weight") is ours.layers[0].weight
    ours.eval()
    twin.eval()
    assert [m.training for m in ours.modules()] == [m.training for m in twin.modules()]
    assert not any(m.training for m in ours.modules())
    ours.train()
    assert all(m.training for m in ours.modules())
    ours.to(torch.float64)
    assert all(p.data.dtype == torch.float64 for p in ours.parameters())
    ours.backward(torch.ones_like(ours(torch.randn(4, 3, dtype=torch.float64))))
    assert all(p.grad is not None for p in ours.parameters())
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def test_a_module_held_twice_is_named_twice_in_state_dict_as_in_torch() -> None:
    def build(nn: Any) -> Any:
        shared = nn.Linear(2, 2)
        return nn.ModuleList([shared, nn.ReLU(), shared])

    ours, ref = build(OURS), build(torch.nn)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_children()] == [n for n, _ in ref.named_children()]
    assert len(list(ours.parameters())) == len(list(ref.parameters())) == 2


# ----------------------------------------------------------- list operations
def structure(container: Any) -> Any:
    """What a container holds, comparable across the frameworks: each child by name and
    repr, the state_dict's keys and shapes, and which child names are attributes."""
    return (
        [(name, repr(child)) for name, child in container._modules.items()],
        [(key, tuple(value.shape)) for key, value in container.state_dict().items()],
        [name for name in [*map(str, range(8)), *"abcdyz", "extra"] if hasattr(container, name)],
    )


def described(result: Any) -> Any:
    """An operation's result, comparable across the frameworks."""
    if isinstance(result, (Module, torch.nn.Module)):
        return structure(result)
    if isinstance(result, (list, tuple)):
        return [described(item) for item in result]
    return result


def assert_names_are_attributes(container: Any) -> None:
    """nograd keeps each child as an attribute too: it must follow the renumbering."""
    for name, child in container._modules.items():
        assert getattr(container, name) is child
    assert {name for name in vars(container) if name.isdigit()} <= set(container._modules)


def distinct_list(nn: Any) -> Any:
    return nn.ModuleList([nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 4)])


Op = Callable[[Any, Any], Any]
LIST_OPS: dict[str, Op] = {
    "getitem": lambda ml, nn: ml[1],
    "getitem-negative": lambda ml, nn: ml[-1],
    "getitem-numpy-int": lambda ml, nn: ml[__import__("numpy").int64(2)],
    "getitem-slice": lambda ml, nn: ml[1:4],  # numbered from "0" again
    "getitem-step": lambda ml, nn: ml[::-2],
    "getitem-empty-slice": lambda ml, nn: ml[3:1],
    "setitem": lambda ml, nn: operator.setitem(ml, 2, nn.Sigmoid()),
    "setitem-negative": lambda ml, nn: operator.setitem(ml, -2, nn.Sigmoid()),
    "setitem-none": lambda ml, nn: operator.setitem(ml, 0, None),
    "delitem": lambda ml, nn: operator.delitem(ml, 1),
    "delitem-negative": lambda ml, nn: operator.delitem(ml, -5),
    "delitem-slice": lambda ml, nn: operator.delitem(ml, slice(1, 3)),
    "delitem-step": lambda ml, nn: operator.delitem(ml, slice(None, None, 2)),
    "delitem-all": lambda ml, nn: operator.delitem(ml, slice(None)),
    "insert-front": lambda ml, nn: ml.insert(0, nn.Sigmoid()),
    "insert-middle": lambda ml, nn: ml.insert(2, nn.Sigmoid()),
    "insert-end": lambda ml, nn: ml.insert(5, nn.Sigmoid()),
    "append": lambda ml, nn: ml.append(nn.Sigmoid()),
    "append-none": lambda ml, nn: ml.append(None),
    "extend": lambda ml, nn: ml.extend([nn.Sigmoid(), nn.Linear(4, 5)]),
    "extend-generator": lambda ml, nn: ml.extend(m for m in [nn.Sigmoid()]),
    "extend-modulelist": lambda ml, nn: ml.extend(nn.ModuleList([nn.Sigmoid()])),
    "iadd": lambda ml, nn: operator.iadd(ml, [nn.Sigmoid(), nn.Linear(4, 5)]),
    "add-list": lambda ml, nn: operator.add(ml, [nn.Sigmoid()]),  # ModuleList + list
    "add-modulelist": lambda ml, nn: ml + nn.ModuleList([nn.Sigmoid(), nn.Linear(4, 5)]),
    "pop": lambda ml, nn: ml.pop(1),
    "pop-negative": lambda ml, nn: ml.pop(-1),
    "pop-slice": lambda ml, nn: ml.pop(slice(1, 3)),
    "len": lambda ml, nn: len(ml),
    "iter": lambda ml, nn: list(ml),
    "reversed": lambda ml, nn: list(reversed(ml)),
    "contains": lambda ml, nn: (ml[2] in ml, nn.ReLU() in ml),
    "dir": lambda ml, nn: [name for name in dir(ml) if name.isdigit()],
    "named_modules": lambda ml, nn: [name for name, _ in ml.named_modules()],
    "init-none": lambda ml, nn: nn.ModuleList(),
    "init-generator": lambda ml, nn: nn.ModuleList(nn.Linear(i, i + 1) for i in range(1, 3)),
}


@pytest.mark.parametrize("op", list(LIST_OPS))
def test_list_operations_leave_what_torchs_leave(op: str) -> None:
    ours, ref = distinct_list(OURS), distinct_list(torch.nn)
    result, torch_result = LIST_OPS[op](ours, OURS), LIST_OPS[op](ref, torch.nn)
    assert described(result) == described(torch_result)
    assert structure(ours) == structure(ref)
    assert_names_are_attributes(ours)
    if isinstance(result, ModuleList):
        assert_names_are_attributes(result)


def test_slicing_and_adding_hold_the_same_objects() -> None:
    ml = distinct_list(OURS)
    assert list(ml[1:4]) == [ml[1], ml[2], ml[3]]
    assert all(a is b for a, b in zip(ml + ml, [*ml, *ml], strict=True))
    assert operator.add(ml, []) is not ml  # a new ModuleList
    extended = ml.extend([])
    assert extended is ml


@pytest.mark.parametrize("index", [-5, -3, -1, 0, 2, 5])
def test_insert_takes_an_index_as_torchs_sequential_does(index: int) -> None:
    """torch's ModuleList.insert fails on a negative index (KeyError, the list half
    shifted); ours counts it from the end, as torch.nn.Sequential.insert does."""
    ml, seq = distinct_list(OURS), torch.nn.Sequential(*distinct_list(torch.nn))
    ml.insert(index, OURS.Sigmoid())
    seq.insert(index, torch.nn.Sigmoid())
    assert structure(ml) == structure(seq)
    assert_names_are_attributes(ml)


@pytest.mark.parametrize("index", [-6, 6])
def test_insert_out_of_range_raises_and_changes_nothing(index: int) -> None:
    ml = distinct_list(OURS)
    before = structure(ml)
    with pytest.raises(IndexError, match=r"^ModuleList: index -?6 out of range for 5 modules"):
        ml.insert(index, OURS.Sigmoid())
    with pytest.raises(TypeError, match=r"^ModuleList: expected a Module \(or None\), got int"):
        ml.insert(0, 3)  # type: ignore[arg-type]  # torch stores the 3
    assert structure(ml) == before


# ----------------------------------------------------------- dict operations
def distinct_dict(nn: Any) -> Any:
    return nn.ModuleDict({"b": nn.Linear(1, 2), "a": nn.ReLU(), "c": nn.Linear(2, 3)})


DICT_OPS: dict[str, Op] = {
    "getitem": lambda md, nn: md["c"],
    "setitem-new": lambda md, nn: operator.setitem(md, "d", nn.Tanh()),
    "setitem-existing": lambda md, nn: operator.setitem(md, "b", nn.Sigmoid()),  # same place
    "setitem-none": lambda md, nn: operator.setitem(md, "a", None),
    "setattr": lambda md, nn: setattr(md, "extra", nn.Tanh()),
    "delitem": lambda md, nn: operator.delitem(md, "b"),
    "pop": lambda md, nn: md.pop("a"),
    "clear": lambda md, nn: md.clear(),
    "contains": lambda md, nn: ("a" in md, "z" in md, 3 in md),
    "len": lambda md, nn: len(md),
    "iter": lambda md, nn: list(md),
    "keys": lambda md, nn: list(md.keys()),
    "items": lambda md, nn: [(key, repr(module)) for key, module in md.items()],
    "values": lambda md, nn: list(md.values()),
    "dir": lambda md, nn: [name for name in dir(md) if name in "abc"],
    "update-dict": lambda md, nn: md.update({"z": nn.Tanh(), "b": nn.Sigmoid()}),
    "update-ordereddict": lambda md, nn: md.update(OrderedDict(y=nn.Tanh(), a=nn.Sigmoid())),
    "update-pairs": lambda md, nn: md.update([("z", nn.Tanh()), ["y", nn.Sigmoid()]]),
    "update-moduledict": lambda md, nn: md.update(nn.ModuleDict({"z": nn.Tanh()})),
    "update-empty": lambda md, nn: md.update([]),
    "init-pairs": lambda md, nn: nn.ModuleDict([("z", nn.Tanh()), ("y", nn.Linear(2, 2))]),
    "init-none": lambda md, nn: nn.ModuleDict(),
    "named_modules": lambda md, nn: [name for name, _ in md.named_modules()],
}


@pytest.mark.parametrize("op", list(DICT_OPS))
def test_dict_operations_leave_what_torchs_leave(op: str) -> None:
    ours, ref = distinct_dict(OURS), distinct_dict(torch.nn)
    result, torch_result = DICT_OPS[op](ours, OURS), DICT_OPS[op](ref, torch.nn)
    assert described(result) == described(torch_result)
    assert structure(ours) == structure(ref)


# ----------------------------------------------------------------- errors
ERRORS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "index-out-of-range": lambda ml, md, nn: ml[5],
    "negative-index-out-of-range": lambda ml, md, nn: ml[-6],
    "index-str": lambda ml, md, nn: ml["0"],
    "index-float": lambda ml, md, nn: ml[1.0],
    "setitem-out-of-range": lambda ml, md, nn: operator.setitem(ml, 5, nn.ReLU()),
    "setitem-not-a-module": lambda ml, md, nn: operator.setitem(ml, 0, 3),
    "delitem-out-of-range": lambda ml, md, nn: operator.delitem(ml, -6),
    "append-not-a-module": lambda ml, md, nn: ml.append(3),
    "extend-not-iterable": lambda ml, md, nn: ml.extend(3),
    "extend-not-modules": lambda ml, md, nn: ml.extend([nn.Tanh(), "relu"]),
    "init-not-iterable": lambda ml, md, nn: nn.ModuleList(3),
    "init-not-modules": lambda ml, md, nn: nn.ModuleList([nn.ReLU(), "relu"]),
    "add-not-iterable": lambda ml, md, nn: ml + 3,
    "iadd-itself": lambda ml, md, nn: operator.iadd(ml, ml),  # changed while iterated
    "pop-out-of-range": lambda ml, md, nn: ml.pop(5),
    "list-forward": lambda ml, md, nn: ml(torch.zeros(1)),
    "dict-missing-key": lambda ml, md, nn: md["z"],
    "dict-del-missing-key": lambda ml, md, nn: operator.delitem(md, "z"),
    "dict-pop-missing-key": lambda ml, md, nn: md.pop("z"),
    "dict-dotted-key": lambda ml, md, nn: operator.setitem(md, "a.b", nn.ReLU()),
    "dict-empty-key": lambda ml, md, nn: operator.setitem(md, "", nn.ReLU()),
    "dict-int-key": lambda ml, md, nn: operator.setitem(md, 3, nn.ReLU()),
    "dict-method-key": lambda ml, md, nn: operator.setitem(md, "keys", nn.ReLU()),
    "dict-attribute-key": lambda ml, md, nn: operator.setitem(md, "training", nn.ReLU()),
    "dict-not-a-module": lambda ml, md, nn: operator.setitem(md, "z", 3),
    "update-not-iterable": lambda ml, md, nn: md.update(3),
    "update-entry-not-iterable": lambda ml, md, nn: md.update([3]),
    "update-entry-too-short": lambda ml, md, nn: md.update([("z",)]),
    "update-entry-too-long": lambda ml, md, nn: md.update([("z", nn.ReLU(), 1)]),
    "update-a-string": lambda ml, md, nn: md.update("ab"),
    "update-entry-not-a-module": lambda ml, md, nn: md.update([("z", 3)]),
    "dict-forward": lambda ml, md, nn: md(torch.zeros(1)),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_torchs(case: str) -> None:
    raised: list[type[BaseException]] = []
    states = []
    for nn in (OURS, torch.nn):
        ml, md = distinct_list(nn), distinct_dict(nn)
        with pytest.raises(Exception) as info:
            ERRORS[case](ml, md, nn)
        raised.append(info.type)
        states.append((structure(ml), structure(md)))
    assert raised[0] is raised[1]
    assert states[0] == states[1]  # what was done before the error stays, as in torch


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ml, md: ml[5], r"^ModuleList: index 5 out of range for 5 modules$"),
        (lambda ml, md: ml["0"], r"^ModuleList: expected an int or a slice as index, got str$"),
        (lambda ml, md: ml.append(3), r"^ModuleList: int is not a Module subclass$"),
        (lambda ml, md: ml.extend(3), r"^ModuleList.extend: expected an iterable of modules"),
        (lambda ml, md: md["z"], r"ModuleDict: no module under key 'z'"),
        (lambda ml, md: md.update([3]), r"^ModuleDict.update: entry #0 should be a \(key"),
    ],
)
def test_errors_name_the_container(call: Callable[[Any, Any], Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        call(distinct_list(OURS), distinct_dict(OURS))


def test_a_bool_index_is_refused_as_sequential_refuses_it() -> None:
    with pytest.raises(TypeError, match="got bool"):
        distinct_list(OURS)[True]  # torch reads it as 1


def test_saved_and_backward_cannot_be_keys() -> None:
    """torch allows them; here they are the module's own attributes."""
    md = distinct_dict(OURS)
    for key in ("saved", "backward"):
        with pytest.raises(KeyError, match="already exists"):
            md[key] = OURS.ReLU()


# ------------------------------------------------------------------ reprs
def shared_entries(nn: Any) -> Any:
    relu = nn.ReLU()
    return nn.ModuleList([relu, relu, None, None, nn.Tanh()])


REPRS: dict[str, Callable[[Any], Any]] = {
    "list-empty": lambda nn: nn.ModuleList(),
    "list-one": lambda nn: nn.ModuleList([nn.Linear(2, 3)]),
    "list-distinct": distinct_list,
    # equal reprs, distinct objects: one line "(0-2): 3 x Linear(...)"
    "list-runs": lambda nn: nn.ModuleList(
        [nn.Linear(2, 2) for _ in range(3)] + [nn.ReLU(), nn.ReLU(), nn.Linear(2, 2)]
    ),
    "list-alternating": lambda nn: nn.ModuleList([nn.ReLU(), nn.Tanh(), nn.ReLU(), nn.Tanh()]),
    "list-shared-and-none": shared_entries,
    "list-nested": lambda nn: nn.ModuleList(
        [nn.ModuleList([nn.Tanh(), nn.Tanh()]), nn.ModuleList([nn.Tanh(), nn.Tanh()]), nn.ReLU()]
    ),
    "list-of-dicts": lambda nn: nn.ModuleList([distinct_dict(nn), nn.ModuleDict()]),
    "dict": distinct_dict,
    "dict-empty": lambda nn: nn.ModuleDict(),
    "dict-of-lists": lambda nn: nn.ModuleDict({"body": distinct_list(nn), "none": None}),
}


@pytest.mark.parametrize("name", list(REPRS))
def test_repr_equals_torchs(name: str) -> None:
    assert repr(REPRS[name](OURS)) == repr(REPRS[name](torch.nn))


def test_a_users_model_repr_equals_torchs() -> None:
    ours, twin = twins()
    assert repr(ours).replace("Net(", "TorchNet(", 1) == repr(twin)


@pytest.mark.parametrize("cls", [ModuleList, ModuleDict])
def test_constructor_arguments_are_torchs(cls: type[Module]) -> None:
    def arguments(function: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    assert arguments(cls.__init__) == arguments(getattr(torch.nn, cls.__name__).__init__)

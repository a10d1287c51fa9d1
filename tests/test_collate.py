"""default_collate, default_convert and DataLoader(batch_size=None) against torch's.

Each test hands the same samples to nograd and to ``torch.utils.data`` and compares
what comes back: the same types (a tuple where torch gives a list: nograd's one
deliberate difference), the same keys, tensors of the same dtype and values, strings
as they were. Errors must have torch's types and name the field and the samples.
"""

from __future__ import annotations

import collections
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.utils.data as tud
from hypothesis import given
from hypothesis import strategies as st

import nograd.data as nd
from nograd.data import DataLoader, TensorDataset, default_collate, default_convert


class Point(NamedTuple):
    x: Any
    y: Any


class Frozen(Mapping[str, Any]):
    """A mapping that cannot be rebuilt from a dict: collation falls back to a dict."""

    def __init__(self, keys: Sequence[str], values: Sequence[Any]) -> None:
        self._items = dict(zip(keys, values, strict=True))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def assert_same(ours: Any, theirs: Any, like: Any) -> None:
    """ours is torch's output, structure by structure; ``like`` is the input the two
    were made from (the first sample, for a collated batch), which says where a tuple
    stands and torch's list is expected to be nograd's tuple."""
    if ours is theirs:
        return
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), (ours, theirs)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, (ours, theirs)
        assert torch.equal(ours, theirs), (ours, theirs)
    elif isinstance(like, (str, bytes)) or not isinstance(like, (Mapping, Sequence)):
        assert type(ours) is type(theirs) and ours == theirs, (ours, theirs)  # as they were
    elif isinstance(like, Mapping):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), (ours, theirs)
        for key in like:
            assert_same(ours[key], theirs[key], like[key])
    else:
        if type(like) is tuple:  # nograd's one difference: a tuple stays a tuple
            assert type(ours) is tuple and type(theirs) is list, (ours, theirs)
        else:
            assert type(ours) is type(theirs), (ours, theirs)
        assert len(ours) == len(theirs) == len(like)
        for our, their, part in zip(ours, theirs, like, strict=True):
            assert_same(our, their, part)


def same_collation(batch: list[Any]) -> Any:
    ours = default_collate(batch)
    assert_same(ours, tud.default_collate(batch), batch[0])
    return ours


# ------------------------------------------------------------------ default_collate
def t(*values: float) -> torch.Tensor:
    return torch.tensor(values)


BATCHES: dict[str, list[Any]] = {
    "tensors": [t(1, 2), t(3, 4), t(5, 6)],
    "tuples": [(t(1), 1, 0.5, True), (t(2), 2, 1.5, False)],
    "lists": [[t(1), 1, "a"], [t(2), 2, "b"]],
    "dicts": [{"x": t(1, 2), "y": 0, "name": "a"}, {"x": t(3, 4), "y": 1, "name": "b"}],
    "ordered-dicts": [collections.OrderedDict(b=i, a=float(i)) for i in range(3)],
    "defaultdicts": [collections.defaultdict(list, x=t(i)) for i in range(2)],
    "mapping-proxies": [types.MappingProxyType({"x": i}) for i in range(2)],
    "frozen-mappings": [Frozen(["x", "y"], [t(i), i]) for i in range(2)],
    "nested": [
        {"pair": (t(i), i), "meta": {"id": i, "tag": f"s{i}", "w": [0.5 * i, i]}} for i in range(3)
    ],
    "namedtuples": [Point(t(i, i), 0.25 * i) for i in range(3)],
    "namedtuples-in-dicts": [{"p": Point(i, (f"s{i}", t(i)))} for i in range(2)],
    "strings": ["a", "bb", "c"],
    "bytes": [b"a", b"b"],
    "numpy-strings": [np.str_("a"), np.str_("b")],
    "strings-in-tuples": [("a", 1), ("b", 2)],
    "ranges": [range(2), range(2)],
    "deques": [collections.deque([i, 0.5]) for i in range(2)],
    "numpy": [
        (
            np.arange(3, dtype=np.float32) * i,
            np.float32(i),
            np.int32(i),
            np.bool_(i > 0),
            np.array(i / 3),
            np.float64(i) / 7,
        )
        for i in range(3)
    ],
    "mixed-numbers": [(1, 2.5, True, np.float32(1), np.int32(1)), (2.5, 1, 2, 2.5, 2.5)],
    "tensor-dtypes": [torch.tensor([1, 2]), torch.tensor([0.5, 1.0])],
    "arrays-then-lists": [np.array([1, 2]), [3, 4]],
}


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
def test_default_collate_is_torchs(batch: list[Any]) -> None:
    same_collation(batch)


def test_default_collate_keeps_the_mapping_type_and_its_extras() -> None:
    batch = same_collation(BATCHES["defaultdicts"])
    assert batch.default_factory is list
    assert list(same_collation(BATCHES["ordered-dicts"])) == ["b", "a"]
    assert type(same_collation(BATCHES["frozen-mappings"])) is dict
    assert same_collation(BATCHES["strings-in-tuples"])[0] == ("a", "b")  # as torch's zip


def test_a_mapping_takes_the_first_samples_keys_as_torch() -> None:
    batch = same_collation([{"a": 1}, {"a": 2, "b": 3}])
    assert list(batch) == ["a"]


# the leaves a random sample is made of: (a name, a value for sample i)
LEAVES: dict[str, Callable[[int], Any]] = {
    "tensor": lambda i: torch.arange(3) * i,
    "float-tensor": lambda i: torch.full((2, 2), 0.1 * i, dtype=torch.float64),
    "int": lambda i: i,
    "float": lambda i: 0.1 * i,
    "bool": lambda i: i % 2 == 0,
    "str": lambda i: f"s{i}",
    "array": lambda i: np.full(2, i, dtype=np.int16),
    "numpy-float": lambda i: np.float32(i / 3),
}
Template = Any  # a leaf's name, or a container of templates


def templates() -> st.SearchStrategy[Template]:
    leaves = st.sampled_from(sorted(LEAVES))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, min_size=1),
            st.lists(inner, min_size=1, max_size=3).map(tuple),
            st.lists(inner, min_size=1, max_size=3),
            st.tuples(inner, inner).map(lambda pair: Point(*pair)),
        ),
        max_leaves=8,
    )


def sample_of(template: Template, i: int) -> Any:
    if isinstance(template, str):
        return LEAVES[template](i)
    if isinstance(template, dict):
        return {key: sample_of(part, i) for key, part in template.items()}
    if isinstance(template, Point):
        return Point(*(sample_of(part, i) for part in template))
    return type(template)(sample_of(part, i) for part in template)


@given(template=templates(), size=st.integers(1, 4))
def test_any_nesting_collates_as_torchs(template: Template, size: int) -> None:
    same_collation([sample_of(template, i) for i in range(size)])


# (id, batch, torch's error type, what nograd's message says)
ERRORS: list[tuple[str, list[Any], type[Exception], str]] = [
    ("ragged-tensors", [t(1, 2), t(1, 2, 3)], RuntimeError,
     r"expected tensors of one shape in every sample, got \[\(2,\), \(3,\)\] within the "
     r"batch of indices \[0, 1\]"),
    ("tensor-then-int", [t(1), t(2), 3], TypeError,
     "expected a Tensor in the sample at index 2, as at index 0, got int"),
    ("uneven-tuples", [(t(1), 1), (t(2), 2), (t(3),)], RuntimeError,
     "each element in list of batch should be of equal size: 2 elements in the sample at "
     "index 0, 1 in the sample at index 2"),
    ("tuple-then-int", [(1, 2), 3], TypeError,
     "expected a sequence in the sample at index 1, as at index 0, got int"),
    ("missing-key", [{"a": 1, "b": 2}, {"a": 1}], KeyError,
     "expected key 'b' in the sample at index 1, as at index 0, got a dict without it"),
    ("dict-then-tuple", [{"a": 1}, (1,)], TypeError,
     "expected key 'a' in the sample at index 1, as at index 0, got a tuple without it"),
    ("none", [None, None], TypeError, "found <class 'NoneType'> in the sample at index 0"),
    ("complex", [1j, 2j], TypeError, "found <class 'complex'>"),
    ("object", [object()], TypeError, "found <class 'object'>"),
    ("numpy-strings", [np.array(["a"]), np.array(["b"])], TypeError, "found <U1"),
    ("int-then-str", [1, 2, "a"], TypeError,
     "expected a number in the sample at index 2, as at index 0, got str"),
    ("float-then-str", [1.5, "a"], TypeError, "expected a number in the sample at index 1"),
    ("int-then-none", [1, None], RuntimeError, "expected a number in the sample at index 1"),
    ("nested-ragged", [{"x": (t(1),)}, {"x": (t(1, 2),)}], RuntimeError,
     r"tensors of one shape in field x\.0 of every sample"),
    ("nested-uneven", [{"x": [1, 2]}, {"x": [1]}], RuntimeError,
     "equal size: 2 elements in field x of the sample at index 0, 1 in field x of the "
     "sample at index 1"),
    ("namedtuple-field", [Point(1, t(1)), Point(2, "b")], TypeError,
     "expected a Tensor in field y of the sample at index 1, as at index 0, got str"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("batch", "error", "message"), [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS]
)
def test_default_collate_errors_are_torchs(
    batch: list[Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        default_collate(batch)
    with pytest.raises(error):
        tud.default_collate(batch)


def test_a_loaders_errors_name_the_samples_by_their_dataset_indices() -> None:
    samples = [(t(i), i) for i in range(5)]
    samples[1] = (t(1, 1), 1)
    loader = DataLoader(samples, 2, sampler=[3, 1, 0])
    with pytest.raises(RuntimeError, match=r"field 0 of .* the batch of indices \[3, 1\]"):
        list(loader)
    samples[1] = (t(1), None)  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="field 1 of the sample at index 1, as at index 3"):
        list(loader)


# ------------------------------------------------------------------ default_convert
CONVERTED: dict[str, Any] = {
    "array": np.arange(4, dtype=np.float32),
    "numpy-number": np.int16(3),
    "tensor": t(1, 2),
    "int": 3,
    "string": "a",
    "numpy-string": np.str_("a"),
    "string-array": np.array(["a", "b"]),
    "object-array": np.array([1, "a"], dtype=object),
    "dict": {"x": np.ones(2), "y": 1, "z": [np.float64(0.5), "a"]},
    "ordered-dict": collections.OrderedDict(b=np.zeros(1), a=2),
    "namedtuple": Point(np.ones(2), (np.int64(1), "a")),
    "tuple": (np.ones(2), 3, (np.zeros(1),)),
    "list": [np.ones(2), [np.zeros(1), None]],
    "range": range(3),
    "none": None,
}


@pytest.mark.parametrize("data", CONVERTED.values(), ids=CONVERTED.keys())
def test_default_convert_is_torchs(data: Any) -> None:
    assert_same(default_convert(data), tud.default_convert(data), data)


def test_default_convert_shares_an_arrays_memory_as_torch() -> None:
    array = np.zeros(3)
    default_convert(array)[0] = 5.0
    assert array[0] == 5.0
    assert default_convert(np.bytes_(b"a")) == b"a"  # torch's raises (numpy 2's name)


# ------------------------------------------------------------------ DataLoader(batch_size=None)
def records(n: int) -> list[dict[str, Any]]:
    return [
        {"x": np.full(2, i, dtype=np.float32), "y": i % 3, "name": f"s{i}", "pair": (i, 0.5)}
        for i in range(n)
    ]


def test_a_loader_without_batching_yields_torchs_samples() -> None:
    dataset = records(5)
    ours, theirs = DataLoader(dataset, batch_size=None), tud.DataLoader(dataset, batch_size=None)
    assert ours.collate_fn is default_convert
    assert (ours.batch_size, ours.batch_sampler, ours.drop_last) == (None, None, False)
    assert (theirs.batch_size, theirs.batch_sampler) == (None, None)
    assert len(ours) == len(theirs) == 5
    pairs = list(zip(ours, theirs, strict=True))
    for index, (our, their) in enumerate(pairs):
        assert_same(our, their, dataset[index])
    assert repr(ours) == "DataLoader(n=5, batch_size=None, shuffle=False)"


def test_a_loader_without_batching_hands_each_sample_to_collate_fn() -> None:
    dataset = TensorDataset(torch.arange(4), torch.arange(4) * 2)

    def swap(sample: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return sample[::-1]

    ours = [tuple(sample) for sample in DataLoader(dataset, None, collate_fn=swap)]
    theirs = [tuple(sample) for sample in tud.DataLoader(dataset, None, collate_fn=swap)]
    assert ours == theirs == [(torch.tensor(2 * i), torch.tensor(i)) for i in range(4)]
    for our, their in zip(DataLoader(dataset, None), tud.DataLoader(dataset, None), strict=True):
        assert_same(our, their, dataset[0])  # a tuple, where torch's is a list


# what a loader without batching is built with, from either library's module (nd, tud)
UNBATCHED: dict[str, Callable[[Any, Any, torch.Generator | None], Any]] = {
    "shuffle": lambda lib, data, g: lib.DataLoader(data, None, True, generator=g),
    "in-order": lambda lib, data, g: lib.DataLoader(data, None, generator=g),
    "weighted": lambda lib, data, g: lib.DataLoader(
        data, None, sampler=lib.WeightedRandomSampler([1.0, 2.0, 0.5, 3.0, 1.0], 7, generator=g)
    ),
    "random-long": lambda lib, data, g: lib.DataLoader(
        data, None, sampler=lib.RandomSampler(data, num_samples=12, generator=g), generator=g
    ),
}


@pytest.mark.parametrize("tensors", [True, False], ids=["tensor-dataset", "records"])
@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize("kind", sorted(UNBATCHED))
def test_a_loader_without_batching_draws_torchs_numbers_when_torch_draws_them(
    kind: str, own_generator: bool, tensors: bool
) -> None:
    """The same samples from the same seeds, and the same numbers drawn after each
    sample, between iter() and the first next(), with two epochs at once, and after."""
    dataset: Any = TensorDataset(torch.arange(5), torch.arange(5) % 2) if tensors else records(5)

    def run(lib: Any) -> list[Any]:
        torch.manual_seed(3)
        generator = torch.Generator().manual_seed(7) if own_generator else None
        loader, seen = UNBATCHED[kind](lib, dataset, generator), []

        def draw() -> float:  # from the generator the loader draws from
            return torch.rand(1, generator=generator).item()

        for first, second in zip(loader, loader, strict=True):  # two epochs at once
            seen += [("sample", first), ("sample", second), ("drawn", draw())]
        for _ in range(2):
            epoch = iter(loader)
            seen.append(("drawn", draw()))  # between iter() and the first next()
            for sample in epoch:
                seen += [("sample", sample), ("drawn", draw())]
        seen += [("drawn", torch.rand(2).tolist()), ("length", len(loader))]
        return seen

    ours, theirs = run(nd), run(tud)
    assert [what for what, _ in ours] == [what for what, _ in theirs]
    for (what, our), (_, their) in zip(ours, theirs, strict=True):
        if what == "sample":
            assert_same(our, their, dataset[0])
        else:
            assert our == their


def test_a_loader_without_batching_refuses_what_torchs_refuses() -> None:
    dataset = records(3)
    with pytest.raises(ValueError, match="batch_size=None turns batching off"):
        DataLoader(dataset, None, drop_last=True)
    with pytest.raises(ValueError):
        tud.DataLoader(dataset, None, drop_last=True)
    for ours, theirs in ((DataLoader, tud.DataLoader),):
        with pytest.raises(ValueError, match="batch_sampler is mutually exclusive"):
            ours(dataset, None, batch_sampler=[[0]])  # type: ignore[call-overload]
        with pytest.raises(ValueError):
            theirs(dataset, None, batch_sampler=[[0]])
    for drop_last in (False, None, 0):  # torch reads drop_last only for being set
        loader = DataLoader(dataset, None, drop_last=drop_last)  # type: ignore[arg-type]
        assert len(list(loader)) == len(tud.DataLoader(dataset, None, drop_last=drop_last)) == 3


def test_a_batching_loader_collates_dicts_as_torchs() -> None:
    dataset = records(7)
    generator = torch.Generator()
    ours = list(DataLoader(dataset, 3, True, generator=generator.manual_seed(0)))
    theirs = list(tud.DataLoader(dataset, 3, True, generator=generator.manual_seed(0)))
    assert len(ours) == len(theirs) == 3
    for our, their in zip(ours, theirs, strict=True):
        assert_same(our, their, dataset[0])

"""Samplers and the DataLoader's sampler, batch_sampler and collate_fn, against torch's.

Every sampler must give torch's indices from the same seed, draw them when torch's
draws them (a draw between two indices sees the same numbers in both), and leave the
generators where torch's leaves them. The DataLoader, given the same samplers, must
yield torch's batches with the same draws around them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest
import torch
import torch.utils.data as tud
from hypothesis import given
from hypothesis import strategies as st

import nograd.data as nd
from nograd.data import DataLoader, TensorDataset
from tests.oracle import SquaresDataset

WEIGHTS = [0.5, 3.0, 0.0, 1.0, 2.0, 0.25, 4.0, 1.5, 0.75, 1.0, 2.5, 0.1, 1.0]
N = len(WEIGHTS)  # 13: not a multiple of the batch sizes below

# each sampler kind, built the same way from either library's module (nd or tud)
Maker = Callable[[Any, torch.Generator | None], Iterable[int]]
SAMPLERS: dict[str, Maker] = {
    "sequential": lambda lib, g: lib.SequentialSampler(range(N)),
    "random": lambda lib, g: lib.RandomSampler(range(N), generator=g),
    "random-short": lambda lib, g: lib.RandomSampler(range(N), num_samples=5, generator=g),
    "random-long": lambda lib, g: lib.RandomSampler(range(N), num_samples=2 * N + 3, generator=g),
    "replacement": lambda lib, g: lib.RandomSampler(range(N), True, generator=g),
    "replacement-long": lambda lib, g: lib.RandomSampler(range(N), True, 70, generator=g),
    "subset": lambda lib, g: lib.SubsetRandomSampler([12, 3, 5, 0, 7, 7, 9], generator=g),
    "weighted": lambda lib, g: lib.WeightedRandomSampler(WEIGHTS, 20, generator=g),
    "weighted-once": lambda lib, g: lib.WeightedRandomSampler(WEIGHTS, 9, False, generator=g),
}


def rng_after(generator: torch.Generator | None) -> tuple[list[float], list[float]]:
    """What the sampler's generator and the global one draw next."""
    own = torch.rand(3, generator=generator).tolist() if generator is not None else []
    return own, torch.rand(3).tolist()


def interleaved(
    things: Iterable[Any], generator: torch.Generator | None, epochs: int = 3
) -> list[Any]:
    """Every item of ``epochs`` epochs, with a draw from the generator after each one
    (as Dropout draws between batches), and the generators' next numbers at the end."""
    seen: list[Any] = []
    for _ in range(epochs):
        for item in things:
            seen += [_plain(item), torch.rand(1, generator=generator).item()]
        seen.append("end of epoch")
    seen.append(rng_after(generator))
    return seen


def _plain(item: Any) -> Any:
    """Tensors as lists, tuples and lists alike, so that the two libraries' batches compare."""
    if isinstance(item, torch.Tensor):
        return item.tolist()
    if isinstance(item, (tuple, list)):
        return [_plain(part) for part in item]
    if isinstance(item, dict):
        return {key: _plain(value) for key, value in item.items()}
    return item


def same_run(make: Callable[[Any, torch.Generator | None], Iterable[Any]], own: bool) -> None:
    """Build with nograd and with torch from the same seeds and compare everything seen."""
    runs = []
    for lib in (nd, tud):
        torch.manual_seed(3)
        generator = torch.Generator().manual_seed(7) if own else None
        runs.append(interleaved(make(lib, generator), generator))
    assert runs[0] == runs[1]


# ------------------------------------------------------------------ samplers
@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_each_sampler_draws_torchs_indices_when_torch_draws_them(
    kind: str, own_generator: bool
) -> None:
    same_run(SAMPLERS[kind], own_generator)
    sampler = SAMPLERS[kind](nd, None)
    assert len(sampler) == len(SAMPLERS[kind](tud, None))  # type: ignore[arg-type]


@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_size", [1, 4, 13, 20])
@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_batch_sampler_groups_as_torchs(
    kind: str, batch_size: int, drop_last: bool, own_generator: bool
) -> None:
    def make(lib: Any, generator: torch.Generator | None) -> Any:
        return lib.BatchSampler(SAMPLERS[kind](lib, generator), batch_size, drop_last)

    same_run(make, own_generator)
    assert len(make(nd, None)) == len(make(tud, None))


def test_batch_sampler_takes_any_iterable_of_indices() -> None:
    assert list(nd.BatchSampler(range(7), 3, False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(nd.BatchSampler([5, 1, 2, 9], 2, True)) == [[5, 1], [2, 9]]


def test_a_sampler_draws_nothing_before_its_first_index() -> None:
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    epochs = [iter(SAMPLERS[kind](nd, None)) for kind in SAMPLERS]
    assert torch.equal(torch.rand(2), expected) and len(epochs) == len(SAMPLERS)


def test_random_sampler_without_replacement_visits_each_index_once_per_pass() -> None:
    epoch = list(nd.RandomSampler(range(N), num_samples=2 * N + 3))
    assert sorted(epoch[:N]) == sorted(epoch[N : 2 * N]) == list(range(N))
    assert len(set(epoch[2 * N :])) == 3


def test_weighted_sampler_follows_its_weights() -> None:
    torch.manual_seed(0)
    drawn = torch.tensor(list(nd.WeightedRandomSampler([1.0, 0.0, 3.0], 40_000)))
    counts = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert counts[1] == 0 and abs(counts[2].item() - 0.75) < 0.01


def test_a_custom_sampler_subclass_is_a_sampler() -> None:
    class Backwards(nd.Sampler[int]):
        def __init__(self, n: int) -> None:
            self.n = n

        def __iter__(self) -> Any:
            return iter(range(self.n - 1, -1, -1))

        def __len__(self) -> int:
            return self.n

    loader = DataLoader(TensorDataset(torch.arange(5)), 2, sampler=Backwards(5))
    assert [batch[0].tolist() for batch in loader] == [[4, 3], [2, 1], [0]]
    assert len(loader) == 3
    with pytest.raises(NotImplementedError, match="must implement __iter__"):
        iter(nd.Sampler())


SAMPLER_ERRORS: list[tuple[str, Callable[[Any], Any], type[Exception], str]] = [
    # (id, construction from a library's module, error nograd raises, its message)
    ("random-replacement", lambda lib: lib.RandomSampler(range(3), 1), TypeError,
     "expected replacement to be a bool, got 1"),
    ("random-count", lambda lib: lib.RandomSampler(range(3), num_samples=0), ValueError,
     "expected num_samples to be a positive integer, got 0"),
    ("random-empty", lambda lib: lib.RandomSampler([]), ValueError,
     "expected num_samples to be a positive integer, got 0"),
    ("random-float", lambda lib: lib.RandomSampler(range(3), num_samples=2.0), ValueError,
     "positive integer, got 2.0"),
    ("weighted-count", lambda lib: lib.WeightedRandomSampler([1.0], True), ValueError,
     "expected num_samples to be a positive integer, got True"),
    ("weighted-replacement", lambda lib: lib.WeightedRandomSampler([1.0], 2, 0), ValueError,
     "expected replacement to be a bool, got 0"),
    ("weighted-2d", lambda lib: lib.WeightedRandomSampler([[1.0, 2.0]], 2), ValueError,
     r"expected a 1-d sequence of weights, got shape \(1, 2\)"),
    ("batch-size", lambda lib: lib.BatchSampler(range(3), 0, False), ValueError,
     "expected batch_size >= 1, got 0"),
    ("batch-size-type", lambda lib: lib.BatchSampler(range(3), 2.0, False), ValueError,
     "expected an integer batch_size, got float"),
    ("batch-drop-last", lambda lib: lib.BatchSampler(range(3), 2, None), ValueError,
     "expected drop_last to be a bool, got None"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [case[1:] for case in SAMPLER_ERRORS],
    ids=[case[0] for case in SAMPLER_ERRORS],
)
def test_sampler_argument_errors_are_torchs(
    make: Callable[[Any], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make(nd)
    with pytest.raises(error):
        make(tud)


def test_a_generator_that_is_not_one_is_refused() -> None:
    for make in (
        lambda: nd.RandomSampler(range(3), generator=3),  # type: ignore[arg-type]
        lambda: nd.SubsetRandomSampler([0], generator="seed"),  # type: ignore[arg-type]
        lambda: nd.WeightedRandomSampler([1.0], 1, generator=0),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match=r"expected a torch\.Generator or None"):
            make()


# ------------------------------------------------------------------ DataLoader
def numbered_pairs(n: int) -> TensorDataset:
    index = torch.arange(n)
    return TensorDataset(index.float().unsqueeze(1) / 4, index % 3)


@pytest.mark.parametrize("generic", [False, True], ids=["tensors", "generic"])
@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_loader_with_a_sampler_gives_torchs_batches_and_draws(
    kind: str, drop_last: bool, own_generator: bool, generic: bool
) -> None:
    """The sampler draws from its generator; the loader's own generator (the same one
    here, when there is one) gives torch's worker seed at every iter()."""
    dataset: Any = SquaresDataset(N) if generic else numbered_pairs(N)

    def make(lib: Any, generator: torch.Generator | None) -> Any:
        sampler = SAMPLERS[kind](lib, generator)
        return lib.DataLoader(dataset, 4, sampler=sampler, drop_last=drop_last, generator=generator)

    same_run(make, own_generator)
    assert len(make(nd, None)) == len(make(tud, None))


@pytest.mark.parametrize("generic", [False, True], ids=["tensors", "generic"])
@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize("kind", ["random", "weighted", "replacement-long"])
def test_loader_with_a_batch_sampler_gives_torchs_batches_and_draws(
    kind: str, own_generator: bool, generic: bool
) -> None:
    dataset: Any = SquaresDataset(N) if generic else numbered_pairs(N)

    def make(lib: Any, generator: torch.Generator | None) -> Any:
        batches = lib.BatchSampler(SAMPLERS[kind](lib, generator), 3, False)
        return lib.DataLoader(dataset, batch_sampler=batches, generator=generator)

    same_run(make, own_generator)
    ours = make(nd, None)
    assert (ours.batch_size, ours.drop_last, len(ours)) == (None, False, len(make(tud, None)))


def test_a_batch_sampler_can_be_a_plain_list_of_lists() -> None:
    dataset = numbered_pairs(6)
    batches = [[5, 0], [1], [2, 3, 4]]
    ours = [_plain(batch) for batch in DataLoader(dataset, batch_sampler=batches)]
    theirs = [_plain(batch) for batch in tud.DataLoader(dataset, batch_sampler=batches)]
    assert ours == theirs and len(DataLoader(dataset, batch_sampler=batches)) == 3


@pytest.mark.parametrize("generic", [False, True], ids=["tensors", "generic"])
def test_collate_fn_gets_each_batchs_samples_and_makes_the_batch(generic: bool) -> None:
    dataset: Any = SquaresDataset(N) if generic else numbered_pairs(N)

    def collate(samples: list[Any]) -> dict[str, Any]:
        x, y = nd.default_collate(samples)
        return {"x": x * 2, "y": y, "count": len(samples)}

    def make(lib: Any, generator: torch.Generator | None) -> Any:
        return lib.DataLoader(dataset, 5, True, collate_fn=collate, generator=generator)

    same_run(make, True)
    batches = list(make(nd, torch.Generator().manual_seed(0)))
    assert [batch["count"] for batch in batches] == [5, 5, 3]


def test_default_collate_is_torchs_for_tensors_and_numbers() -> None:
    samples = [
        (torch.full((2,), float(i)), i, 0.5 * i, i % 2 == 0, np.float32(i / 3), np.int32(i),
         np.bool_(i > 1), np.arange(3, dtype=np.float32) * i, np.float64(i) / 7)
        for i in range(4)
    ]  # fmt: skip
    ours = nd.default_collate(samples)
    theirs = tud.default_collate(samples)
    assert isinstance(ours, tuple) and len(ours) == len(theirs) == 9
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    with pytest.raises(RuntimeError, match="tensors of one shape in field 0"):
        nd.default_collate([(torch.zeros(2),), (torch.zeros(3),)])


def test_shuffle_and_an_equal_sampler_cut_the_same_slices() -> None:
    """A RandomSampler passed in is the very sampler shuffle=True builds: the batches of
    a TensorDataset are slices of one gather either way, and they equal torch's."""
    dataset = numbered_pairs(N)
    shuffled = DataLoader(dataset, 4, True, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    sampled = DataLoader(
        dataset, 4, sampler=nd.RandomSampler(dataset, generator=generator), generator=generator
    )
    assert _plain(list(shuffled)) == _plain(list(sampled))


def test_loader_length_needs_the_samplers_length() -> None:
    loader = DataLoader(numbered_pairs(4), 2, sampler=iter([3, 2, 1, 0]))
    assert [batch[0].flatten().tolist() for batch in loader] == [[0.75, 0.5], [0.25, 0.0]]
    with pytest.raises(TypeError):
        len(loader)


def test_loader_generators_names_each_generator_an_epoch_draws_from_once() -> None:
    dataset = numbered_pairs(4)
    g, h = torch.Generator(), torch.Generator()
    assert DataLoader(dataset, 2, True, generator=g).generators() == {"shuffle": g}
    assert DataLoader(dataset, 2, generator=g).generators() == {}  # only a worker seed
    sampler = nd.RandomSampler(dataset, generator=h)
    assert DataLoader(dataset, 2, sampler=sampler, generator=g).generators() == {"sampler": h}
    batches = nd.BatchSampler(nd.SubsetRandomSampler([0, 2], generator=h), 2, False)
    named = DataLoader(dataset, batch_sampler=batches).generators()
    assert named == {"batch_sampler.sampler": h}


LOADER_ERRORS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    # (id, arguments besides the dataset, error, nograd's message)
    ("sampler-and-shuffle", {"shuffle": True, "sampler": range(4)}, ValueError,
     "sampler is mutually exclusive with shuffle"),
    ("batch-sampler-and-size", {"batch_size": 2, "batch_sampler": [[0]]}, ValueError,
     "batch_sampler is mutually exclusive with batch_size, shuffle, sampler and drop_last"),
    ("batch-sampler-and-shuffle", {"shuffle": True, "batch_sampler": [[0]]}, ValueError,
     "mutually exclusive"),
    ("batch-sampler-and-sampler", {"sampler": range(4), "batch_sampler": [[0]]}, ValueError,
     "mutually exclusive"),
    ("batch-sampler-and-drop-last", {"drop_last": True, "batch_sampler": [[0]]}, ValueError,
     "mutually exclusive"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [case[1:] for case in LOADER_ERRORS],
    ids=[case[0] for case in LOADER_ERRORS],
)
def test_loader_refuses_what_torchs_refuses(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    dataset = numbered_pairs(4)
    with pytest.raises(error, match=message):
        DataLoader(dataset, **arguments)
    with pytest.raises(error):
        tud.DataLoader(dataset, **arguments)


def test_loader_refuses_a_sampler_or_collate_fn_of_the_wrong_kind() -> None:
    dataset = numbered_pairs(4)
    with pytest.raises(TypeError, match="expected sampler to be an iterable, got int"):
        DataLoader(dataset, 2, False, 3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="expected batch_sampler to be an iterable, got float"):
        DataLoader(dataset, batch_sampler=1.0)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="expected collate_fn to be callable, got str"):
        DataLoader(dataset, collate_fn="stack")  # type: ignore[call-overload]


@given(
    n=st.integers(1, 30),
    batch_size=st.integers(1, 12),
    drop_last=st.booleans(),
    replacement=st.booleans(),
    num_samples=st.one_of(st.none(), st.integers(1, 70)),
    generic=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_random_sampler_loader_is_torchs(
    n: int,
    batch_size: int,
    drop_last: bool,
    replacement: bool,
    num_samples: int | None,
    generic: bool,
    seed: int,
) -> None:
    """Over random sizes: a RandomSampler's loader gives torch's batches and draws, for
    a dataset of tensors (sliced or gathered) and one read sample by sample."""
    dataset: Any = SquaresDataset(n) if generic else numbered_pairs(n)

    def make(lib: Any, generator: torch.Generator | None) -> Any:
        sampler = lib.RandomSampler(dataset, replacement, num_samples, generator=generator)
        return lib.DataLoader(dataset, batch_size, sampler=sampler, drop_last=drop_last)

    runs = []
    for lib in (nd, tud):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed + 1)
        runs.append(interleaved(make(lib, generator), generator, epochs=2))
    assert runs[0] == runs[1]


def test_a_sampler_over_a_shorter_source_is_not_cut_as_slices() -> None:
    """A RandomSampler of 5 indices, 10 a pass, over a dataset of 10: two permutations
    of range(5), as torch, not one pass of the dataset."""
    dataset = numbered_pairs(10)

    def make(lib: Any, generator: torch.Generator | None) -> Any:
        sampler = lib.RandomSampler(range(5), num_samples=10, generator=generator)
        return lib.DataLoader(dataset, 3, sampler=sampler)

    same_run(make, True)
    assert len(make(nd, None)) == 4


def test_a_tensor_dataset_subclass_is_read_through_its_getitem() -> None:
    class Doubled(TensorDataset):
        def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
            return tuple(t * 2 for t in super().__getitem__(index))

    class TorchDoubled(tud.TensorDataset):
        def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
            return tuple(t * 2 for t in super().__getitem__(index))

    order = [4, 0, 1]
    ours = [_plain(b) for b in DataLoader(Doubled(torch.arange(5)), 2, sampler=order)]
    theirs = [_plain(b) for b in tud.DataLoader(TorchDoubled(torch.arange(5)), 2, sampler=order)]
    assert ours == theirs == [[[8, 0]], [[2]]]
    subset = nd.Subset(Doubled(torch.arange(5)), [3, 1])
    assert [_plain(b) for b in DataLoader(subset, 2)] == [[[6, 2]]]


def test_a_batch_sampler_makes_the_other_arguments_as_loose_as_torchs() -> None:
    """torch checks batch_size, shuffle, sampler and drop_last against a batch sampler
    only for being set: a batch_size of True (== 1) or a drop_last of None passes."""
    dataset = numbered_pairs(4)
    for arguments in ({"batch_size": True}, {"drop_last": None}, {"batch_size": 1.0}):
        ours = DataLoader(dataset, batch_sampler=[[1, 0]], **arguments)  # type: ignore[call-overload]
        theirs = tud.DataLoader(dataset, batch_sampler=[[1, 0]], **arguments)
        assert _plain(list(ours)) == _plain(list(theirs))


@pytest.mark.parametrize(
    ("batches", "error"),
    [([[0.0, 1.0]], IndexError), ([1, 2], TypeError), ([[]], IndexError)],
    ids=["float indices", "not lists", "an empty batch"],
)
def test_a_bad_batch_of_indices_is_refused_as_torch_refuses_it(
    batches: list[Any], error: type[Exception]
) -> None:
    """On a TensorDataset, which nograd gathers by rows where torch reads each sample;
    any other dataset meets the indices itself, in both."""
    dataset = numbered_pairs(4)
    with pytest.raises(error):
        list(DataLoader(dataset, batch_sampler=batches))
    with pytest.raises(error):
        list(tud.DataLoader(dataset, batch_sampler=batches))


def test_default_collate_follows_the_first_value_of_a_mixed_field() -> None:
    samples = [(np.int64(2),), (1,)]
    (ours,), (theirs,) = nd.default_collate(samples), tud.default_collate(samples)
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    assert DataLoader(numbered_pairs(4)).collate_fn is nd.default_collate  # as torch says


def test_random_split_takes_numpy_and_tensor_counts() -> None:
    dataset = numbered_pairs(10)
    for lengths in ([np.int64(3), np.int64(7)], [torch.tensor(3), torch.tensor(7)]):
        parts = nd.random_split(dataset, lengths, generator=torch.Generator().manual_seed(0))
        torch_parts = tud.random_split(dataset, lengths, generator=torch.Generator().manual_seed(0))
        assert [list(p.indices) for p in parts] == [list(p.indices) for p in torch_parts]


# batches of indices that torch reads one by one, dataset[i] for each i: any integer
# kind, any iterable. The gather nograd makes instead must give the same batch, or
# give way to reading them one by one where it would not (see ``integer_rows``).
INDEX_BATCHES: dict[str, Callable[[], list[Any]]] = {
    "numpy-int16": lambda: [[np.int16(3), np.int16(1)], [np.int16(0)]],
    "numpy-uint8": lambda: [[np.uint8(2), np.uint8(0), np.uint8(3)]],
    "numpy-uint64-and-int8": lambda: [[np.uint64(3), np.int8(1)]],
    "numpy-0-dim-arrays": lambda: [[np.array(3), np.array(0)]],
    "numpy-reversed": lambda: [np.arange(4)[::-1]],
    "int16-tensor": lambda: [torch.tensor([3, 1], dtype=torch.int16)],
    "uint16-tensor": lambda: [torch.tensor([2, 0], dtype=torch.uint16)],
    "uint8-tensor": lambda: [torch.tensor([1, 1], dtype=torch.uint8)],  # masks, on tensors
    "one-element-tensors": lambda: [[torch.tensor([3]), torch.tensor([1])]],  # keep a dim
    "iterators": lambda: [iter([3, 0]), (i for i in [2])],
}


@pytest.mark.parametrize("dataset_kind", ["tensors", "subset", "generic"])
@pytest.mark.parametrize("kind", sorted(INDEX_BATCHES))
def test_any_batch_of_indices_torch_reads_gives_torchs_batch(kind: str, dataset_kind: str) -> None:
    def batches(lib: Any) -> list[Any]:
        dataset: Any = {
            "tensors": lambda: lib.TensorDataset(torch.arange(4) * 10, torch.arange(4) % 3),
            "subset": lambda: lib.Subset(lib.TensorDataset(torch.arange(6) * 10), [5, 4, 0, 1]),
            "generic": lambda: [(torch.tensor(10 * i), i % 3) for i in range(4)],
        }[dataset_kind]()
        loader = lib.DataLoader(dataset, batch_sampler=INDEX_BATCHES[kind]())
        return [_plain(batch) for batch in loader]

    assert batches(nd) == batches(tud)


def test_a_sampler_of_small_numpy_integers_gives_torchs_batches() -> None:
    dataset = numbered_pairs(N)
    order = [np.int16(i) for i in range(N - 1, -1, -2)]
    ours = [_plain(batch) for batch in DataLoader(dataset, 3, sampler=order)]
    assert ours == [_plain(batch) for batch in tud.DataLoader(dataset, 3, sampler=order)]

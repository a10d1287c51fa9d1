"""Differences from torch.utils.data found by a differential audit, each held against torch.

Each test builds the same loader (or dataset) in both libraries and compares what they
give, or that both refuse it with the same error type.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
import torch
import torch.utils.data as tud

import nograd.data as nd


def as_lists(batch: Any) -> Any:
    """A batch with tuples as lists and tensors as (dtype, values): torch's collation
    gives a list where nograd's gives a tuple, on purpose (``nograd.data.collate``)."""
    if isinstance(batch, torch.Tensor):
        return (batch.dtype, batch.tolist())
    if isinstance(batch, (list, tuple)):
        return [as_lists(item) for item in batch]
    return batch


# ------------------------------------------------------------------ an empty dataset
@pytest.mark.parametrize("dataset", ["tensors", "list"])
def test_a_loader_over_an_empty_dataset_has_no_batch_as_torch(dataset: str) -> None:
    """torch takes a dataset of 0 samples: its epoch has no batch and len() is 0."""
    for lib in (tud, nd):
        data = lib.TensorDataset(torch.zeros(0, 2)) if dataset == "tensors" else []
        for options in ({}, {"batch_size": 3, "drop_last": True}, {"batch_size": None}):
            loader = lib.DataLoader(data, **options)  # type: ignore[arg-type]
            assert len(loader) == 0
            assert list(loader) == []


def test_shuffling_an_empty_dataset_is_refused_as_torch() -> None:
    """torch's RandomSampler refuses num_samples=0, with a ValueError."""
    for lib in (tud, nd):
        with pytest.raises(ValueError, match="num_samples"):
            lib.DataLoader(lib.TensorDataset(torch.zeros(0, 2)), shuffle=True)


# ------------------------------------------------------------------ __getitems__
class Batched:
    """A dataset that reads a whole batch at once (``__getitems__``), as a database or a
    Hugging Face dataset does; its one-by-one reads give other values, to tell them apart."""

    def __len__(self) -> int:
        return 7

    def __getitem__(self, index: int) -> tuple[int, float]:
        return (index, 0.5)

    def __getitems__(self, indices: list[int]) -> list[tuple[int, float]]:
        return [(10 * index, 1.5) for index in indices]


class TorchBatched(Batched, tud.Dataset):  # type: ignore[type-arg]
    pass


class NogradBatched(Batched, nd.Dataset):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize("wrap", ["none", "subset", "subset of subset"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_dataset_with_getitems_is_read_a_batch_at_a_time_as_torch(
    wrap: str, num_workers: int
) -> None:
    """torch's loader reads a batch with ``dataset.__getitems__(indices)`` where the
    dataset has one (a Subset passes it on to its dataset), and collates what it gives."""
    seen = []
    for lib, kind in ((tud, TorchBatched), (nd, NogradBatched)):
        dataset: Any = kind()
        if wrap != "none":
            dataset = lib.Subset(dataset, [6, 0, 5, 1, 4, 2])
        if wrap == "subset of subset":
            dataset = lib.Subset(dataset, [1, 3, 5, 0])
        torch.manual_seed(0)
        loader = lib.DataLoader(dataset, batch_size=3, shuffle=True, num_workers=num_workers)
        seen.append([as_lists(batch) for batch in loader])
    assert seen[0] == seen[1]
    assert seen[1][0][1][1] == [1.5] * 3  # read by __getitems__, not by __getitem__


def test_a_subset_reads_its_samples_with_getitems_as_torch() -> None:
    """``Subset.__getitems__``: its dataset's ``__getitems__`` at the subset's indices, or
    else the samples one by one."""
    for lib, kind in ((tud, TorchBatched), (nd, NogradBatched)):
        assert lib.Subset(kind(), [4, 2]).__getitems__([1, 0]) == [(20, 1.5), (40, 1.5)]
        plain = lib.Subset([5, 6, 7], [2, 0])
        assert plain.__getitems__([0, 1, 0]) == [7, 5, 7]


# ------------------------------------------------------------------ the Dataset class
def test_dataset_is_a_generic_base_class_as_torch() -> None:
    """A torch script subclasses ``Dataset[T]``, adds datasets with ``+`` and asks
    ``isinstance(x, Dataset)``; the library's datasets are Datasets too."""
    for lib in (tud, nd):

        class Squares(lib.Dataset[tuple[int, int]]):  # type: ignore[name-defined,misc]
            def __len__(self) -> int:
                return 3

            def __getitem__(self, index: int) -> tuple[int, int]:
                return (index, index * index)

        joined = Squares() + Squares()
        assert type(joined) is lib.ConcatDataset
        assert [joined[i] for i in range(len(joined))] == [(0, 0), (1, 1), (2, 4)] * 2
        tensors = lib.TensorDataset(torch.zeros(2))
        for dataset in (
            Squares(),
            tensors,
            joined,
            lib.Subset(tensors, [0]),
            lib.ChainDataset([]),
        ):
            assert isinstance(dataset, lib.Dataset)
        assert isinstance(lib.ChainDataset([]) + lib.ChainDataset([]), lib.ChainDataset)
        with pytest.raises(NotImplementedError):
            lib.Dataset()[0]


# ------------------------------------------------------------------ streams
class Numbers:
    def __iter__(self) -> Any:
        return iter(range(5))


class TorchNumbers(Numbers, tud.IterableDataset):  # type: ignore[type-arg]
    pass


class NogradNumbers(Numbers, nd.IterableDataset):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize("shuffle", [0, 0.0, None, False])
def test_a_stream_takes_a_false_shuffle_as_torch(shuffle: Any) -> None:
    """torch refuses ``shuffle`` with an IterableDataset unless it is in {False, None}."""
    for lib, kind in ((tud, TorchNumbers), (nd, NogradNumbers)):
        loader = lib.DataLoader(kind(), batch_size=2, shuffle=shuffle)
        assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3], [4]]
        with pytest.raises(ValueError, match="shuffle"):
            lib.DataLoader(kind(), shuffle=1)


def test_a_getitems_that_leaves_samples_out_is_collated_as_torch() -> None:
    """``__getitems__`` may return fewer samples than indices (bad records skipped):
    torch collates what it returns."""

    class Skipping:
        def __len__(self) -> int:
            return 6

        def __getitem__(self, index: int) -> int:
            return index

        def __getitems__(self, indices: list[int]) -> list[int]:
            return [index for index in indices if index % 3 != 0]

    for lib in (tud, nd):
        loader = lib.DataLoader(Skipping(), batch_size=4)  # type: ignore[arg-type]
        assert [batch.tolist() for batch in loader] == [[1, 2], [4, 5]]


# ------------------------------------------------------------------ batch layout
LAYOUTS = {
    "transposed": lambda: torch.randn(3, 10).t(),
    "permuted images (NHWC to NCHW)": lambda: torch.randn(10, 4, 5, 3).permute(0, 3, 1, 2),
    "channels_last": lambda: torch.randn(10, 3, 4, 5).to(memory_format=torch.channels_last),
    "sample dimension last": lambda: torch.randn(4, 2, 10).permute(2, 1, 0),
}
ORDERS: dict[str, dict[str, Any]] = {
    "in order": {"batch_size": 4},
    "one batch": {"batch_size": 10},
    "shuffled": {"batch_size": 4, "shuffle": True},
    "a sampler": {"batch_size": 3, "sampler": [3, 1, 2, 0, 5, 7, 9]},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("wrap", ["tensors", "subset", "concat"])
def test_batches_of_a_non_contiguous_dataset_are_contiguous_as_torch(
    layout: str, order: str, wrap: str
) -> None:
    """torch stacks the samples, so its batches are contiguous whatever the layout of
    the dataset's tensors; a batch that kept it (strides from a transpose or a permute)
    would refuse ``batch.view(len(batch), -1)``, which torch code calls."""
    x, y = LAYOUTS[layout](), torch.arange(10)
    seen = []
    for lib in (tud, nd):
        data: Any = lib.TensorDataset(x, y)
        if wrap == "subset":
            data = lib.Subset(data, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
        if wrap == "concat":
            data = lib.ConcatDataset(
                [lib.TensorDataset(x[:6], y[:6]), lib.TensorDataset(x[6:], y[6:])]
            )
        torch.manual_seed(0)
        batches = list(lib.DataLoader(data, **ORDERS[order]))
        seen.append(
            [(batch[0].stride(), batch[0].tolist(), batch[1].tolist()) for batch in batches]
        )
        for batch in batches:
            assert batch[0].view(len(batch[0]), -1).shape[1] == x[0].numel()
    assert seen[0] == seen[1]


def test_batches_a_worker_gathers_are_contiguous_as_torch() -> None:
    x = torch.randn(3, 10).t()
    seen = []
    for lib in (tud, nd):
        loader = lib.DataLoader(
            lib.TensorDataset(x), batch_size=4, sampler=[5, 1, 2, 8, 0], num_workers=1
        )
        seen.append([(batch[0].stride(), batch[0].tolist()) for batch in loader])
    assert seen[0] == seen[1]


def test_the_multiprocessing_context_reads_as_torch() -> None:
    """None unless given (the workers then start the platform's way); a start method's
    name reads as its context."""
    for lib in (tud, nd):
        data = lib.TensorDataset(torch.arange(4))
        assert lib.DataLoader(data).multiprocessing_context is None
        assert lib.DataLoader(data, num_workers=1).multiprocessing_context is None
        named = lib.DataLoader(data, num_workers=1, multiprocessing_context="fork")
        assert named.multiprocessing_context is multiprocessing.get_context("fork")
    loader = nd.DataLoader(nd.TensorDataset(torch.arange(4)), batch_size=2, num_workers=1)
    assert [batch[0].tolist() for batch in loader] == [[0, 1], [2, 3]]

"""Datasets joined end to end: ConcatDataset (by index) and ChainDataset (streams).

``ConcatDataset([a, b, c])`` holds the samples of a, then b, then c: sample i lives in
the first dataset whose cumulative size exceeds i. With cumulative sizes
s = (len(a), len(a) + len(b), len(a) + len(b) + len(c))::

    d = the number of sizes in s that are <= i     (bisect_right(s, i))
    dataset[i] = datasets[d][i - s[d - 1]]         (i itself for d = 0)

so a lookup costs a binary search over the datasets, not a walk over the samples.
``ChainDataset([a, b])`` is the same for streams (``IterableDataset``): it yields all
of a's samples, then all of b's. ``dataset + other`` builds them, as in torch:
a ``ConcatDataset`` for datasets read by index, a ``ChainDataset`` for streams.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from nograd.data.dataset import Dataset
from nograd.data.iterable import IterableDataset, is_iterable_dataset


class ConcatDataset(Dataset[Any]):
    """The samples of several datasets, one after the other, read by index.

    Args:
        datasets: at least one dataset with ``__len__`` and ``__getitem__`` (streams
            go in a ``ChainDataset``).

    Attributes:
        datasets: the datasets, as a list.
        cumulative_sizes: ``cumulative_sizes[d]`` is the number of samples in
            ``datasets[0..d]``; the last one is ``len(self)``.

    Raises:
        ValueError: for no dataset at all (torch: AssertionError).
        TypeError: for an ``IterableDataset`` among them (torch: AssertionError).
    """

    def __init__(self, datasets: Iterable[Any]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: expected at least one dataset, got none")
        for dataset in self.datasets:
            if is_iterable_dataset(dataset):
                raise TypeError(
                    f"ConcatDataset: expected datasets read by index, got the stream "
                    f"{type(dataset).__name__}; join streams with ChainDataset"
                )
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index: int) -> Any:
        """Sample ``index`` (from the end if negative, as a list reads it)."""
        if index < 0:
            if -index > len(self):
                raise ValueError(
                    f"ConcatDataset: index {index} is out of range for {len(self)} samples"
                )
            index += len(self)
        which = bisect.bisect_right(self.cumulative_sizes, index)  # the dataset holding it
        if which == len(self.datasets):
            raise IndexError(
                f"ConcatDataset: index {index} is out of range for {len(self)} samples"
            )
        start = self.cumulative_sizes[which - 1] if which > 0 else 0
        return self.datasets[which][index - start]

    def __repr__(self) -> str:
        return f"ConcatDataset(n={len(self)}, datasets={len(self.datasets)})"


class ChainDataset(IterableDataset[Any]):
    """The samples of several streams, one stream after the other.

    The streams are chained as they are read, so joining large ones copies nothing.
    ``len()`` is the sum of theirs (a TypeError if one has none).

    Args:
        datasets: ``IterableDataset`` s (a dataset read by index goes in a
            ``ConcatDataset``); a TypeError when one that is not is reached.
    """

    def __init__(self, datasets: Iterable[Any]) -> None:
        self.datasets = datasets

    def __iter__(self) -> Iterator[Any]:
        for dataset in self.datasets:
            yield from _stream(dataset)

    def __len__(self) -> int:
        return sum(len(_stream(dataset)) for dataset in self.datasets)


def _stream(dataset: Any) -> Any:
    """``dataset`` itself, once it is an IterableDataset."""
    if not is_iterable_dataset(dataset):
        raise TypeError(
            f"ChainDataset: expected streams (IterableDataset), got {type(dataset).__name__}; "
            f"join datasets read by index with ConcatDataset"
        )
    return dataset

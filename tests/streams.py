"""Streams for the tests of fit over IterableDatasets.

``BatchedStream`` yields a dataset's samples in order; with k worker processes, worker
w yields the batches b (of ``batch_size``) with b mod k = w, and the loader, which asks
the workers in turn, puts them back in order. So a loader over it gives the batches of
``DataLoader(data, batch_size)``, with or without workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nograd.data import IterableDataset, get_worker_info


class BatchedStream(IterableDataset[Any]):
    """A dataset's samples as a stream, in order, split by batches between workers."""

    def __init__(self, data: Any, batch_size: int) -> None:
        self.data, self.batch_size = data, batch_size

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for index in range(len(self.data)):
            if (index // self.batch_size) % workers == worker:
                yield self.data[index]


class SizedBatchedStream(BatchedStream):
    """A stream that says how many samples it yields: ``len(loader)`` is known."""

    def __len__(self) -> int:
        return len(self.data)

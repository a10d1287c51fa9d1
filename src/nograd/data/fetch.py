"""Reading one batch: at a sampler's indices, or off an iterable dataset's stream.

Both ``DataLoader``'s main process and its worker processes (``nograd.data.workers``)
read batches with these, so a batch is the same whoever reads it:

- ``fetch_indexed`` reads a map-style dataset (``dataset[i]``) at a batch's indices;
- ``StreamReader`` takes the next batch off an ``IterableDataset``'s iterator.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import Tensor

from nograd.data.collate import collate_samples, default_collate
from nograd.data.split import integer_rows

Collate = Callable[[Any], Any]  # a batch's list of samples (without batching, a sample) -> item
END = object()  # what ``StreamReader`` returns once the stream has no batch left


def fetch_indexed(
    dataset: Any, tensors: tuple[Tensor, ...] | None, collate_fn: Collate, indices: Any
) -> Any:
    """The batch at ``indices``: one gather per tensor of a ``TensorDataset`` (its
    ``tensors``, given only under the default collation), else the samples through
    ``collate_fn``, as torch reads them: all at once with the dataset's
    ``__getitems__(indices)`` where it has one, or else one by one (also a
    TensorDataset's, for indices a gather would misread: ``integer_rows``)."""
    if not hasattr(indices, "__getitem__"):  # an iterator, say: read it once, as torch
        indices = list(indices)
    rows = integer_rows(indices) if tensors is not None else None
    if tensors is not None and rows is not None:
        # contiguous, as torch's stack of the samples, whatever the dataset's layout
        return tuple(tensor[rows].contiguous() for tensor in tensors)
    read_batch = getattr(dataset, "__getitems__", None)  # torch's test: present and truthy
    samples = read_batch(indices) if read_batch else [dataset[index] for index in indices]
    # The indices name the samples in default_collate's errors, where there is one each
    # (a __getitems__ may leave some out)
    if collate_fn is default_collate and len(samples) == len(indices):
        return collate_samples(samples, indices)
    return collate_fn(samples)


class StreamReader:
    """The batches of an iterable dataset, read off one iterator, as torch reads them.

    Each call takes the next ``batch_size`` samples and returns ``collate_fn`` of their
    list (without batching, ``batch_size=None``: of the next sample). A batch cut short
    by the end of the stream is the last one (dropped with ``drop_last``); after it,
    or once the stream is empty, each call returns ``END``. ``iter(dataset)`` is called
    here, when the reader is made.
    """

    def __init__(
        self, dataset: Iterable[Any], batch_size: int | None, drop_last: bool, collate_fn: Collate
    ) -> None:
        self.samples = iter(dataset)
        self.batch_size, self.drop_last, self.collate_fn = batch_size, drop_last, collate_fn
        self.ended = False

    def __call__(self, index: Sequence[None] | None = None) -> Any:
        """The next batch, or ``END``. ``index`` (what torch's sampler hands an iterable
        dataset: None, or a list of them) is not read."""
        if self.ended:
            return END
        if self.batch_size is None:
            sample = next(self.samples, END)
            if sample is END:
                self.ended = True
                return END
            return self.collate_fn(sample)
        batch = list(itertools.islice(self.samples, self.batch_size))
        if len(batch) < self.batch_size:  # the stream ran out during this batch
            self.ended = True
            if not batch or self.drop_last:
                return END
        return self.collate_fn(batch)

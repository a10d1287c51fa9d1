"""IterableDataset: a dataset read as a stream of samples, not by index.

A map-style dataset (``TensorDataset``, or anything with ``__len__`` and
``__getitem__``) lets the loader choose the order of the samples. Data that come as a
stream (lines of a large file, records from a generator, samples made on the fly)
have no index: their dataset defines ``__iter__`` instead, and ``DataLoader`` cuts
what it yields into batches, in that order. So shuffling and samplers do not apply;
the dataset decides the order itself.

With worker processes (``DataLoader(num_workers=k)``) every worker iterates over its
own copy of the dataset, so each sample would come k times; the dataset splits the
stream with ``nograd.data.get_worker_info()``::

    class Numbers(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            start, step = (0, 1) if info is None else (info.id, info.num_workers)
            return iter(range(start, 100, step))
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch.utils.data

from nograd.data.dataset import Dataset, Sample


class IterableDataset(Dataset[Sample]):
    """A dataset whose samples come from ``__iter__``, in the order it yields them.

    Subclasses define ``__iter__``; they may define ``__len__`` too, the number of
    samples, which ``len(loader)`` then reports (a loader over a dataset without it has
    no length, as in torch).
    """

    def __iter__(self) -> Iterator[Sample]:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")

    def __add__(self, other: Any) -> Any:
        """This stream's samples, then ``other``'s: a ``ChainDataset``."""
        from nograd.data.concat import ChainDataset  # concat.py builds on this module

        return ChainDataset([self, other])


def is_iterable_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` is read as a stream: nograd's ``IterableDataset``, or torch's
    (which a dataset written for torch's DataLoader subclasses)."""
    return isinstance(dataset, (IterableDataset, torch.utils.data.IterableDataset))


class Forever:
    """The sampler of an iterable dataset, as torch's loader has one: None, for ever
    (batched, lists of None). It only paces the batches; the stream decides when the
    epoch ends."""

    def __iter__(self) -> Iterator[None]:
        return itertools.repeat(None)

"""DataLoader: cut a dataset into mini-batches, in order or in a fresh random order each epoch."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from nograd.data.split import tensors_of

# The fast path cuts this many batches at a time with one torch.split call, which
# costs less per batch than a Python slice and keeps at most this many views alive.
BATCHES_PER_SPLIT = 256


class Dataset(Protocol):
    """Anything with a length whose items are tuples (of tensors or numbers)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sequence[Any]: ...


class DataLoader:
    """Yield mini-batches (tuples of tensors) covering every sample once per epoch.

    Each ``iter(loader)`` is one epoch. With ``shuffle=True`` the epoch visits the
    samples in the order of a ``torch.randperm(n)`` drawn afresh at every epoch, so a
    seeded generator reproduces the whole sequence of epochs.

    The random numbers are torch's: an epoch draws what an epoch of
    ``torch.utils.data.DataLoader`` (``num_workers=0``) draws, from the same
    generators, in the same order and between the same batches (``__iter__``,
    ``_epoch``), so the same seed gives the same batches in both, and the same random
    numbers afterwards (Dropout's masks), also with two epochs under way at once.

    A ``TensorDataset`` is batched with tensor slices (views when not shuffling, one
    gather per tensor per epoch when shuffling), and so is a ``Subset`` of one, after
    one more gather of its rows per epoch; any other dataset is indexed sample
    by sample and the fields are stacked, which is slower. Fields that are Python
    numbers become tensors as in torch's ``default_collate``: float64 when the first
    is a float, else the dtype ``torch.tensor`` infers (int64, bool).

    Args:
        dataset: a ``TensorDataset`` or a ``Subset``, or any object with ``__len__`` and a
            ``__getitem__`` that returns a tuple of tensors or numbers.
        batch_size: samples per batch; the last batch may be smaller.
        shuffle: draw a new random order at each epoch.
        drop_last: drop the last batch when it holds fewer than ``batch_size`` samples
            (a bool, as torch requires).
        generator: the generator the epoch draws from (torch's global one when None).

    ``drop_last`` and ``generator`` are keyword-only: torch's DataLoader takes other
    arguments at those positions (``sampler``, ``batch_sampler``, ...), which nograd
    does not offer, so a call written for torch fails here instead of meaning another
    thing.

    Shape:
        each dataset tensor: (n, *) -> each batch tensor: (batch_size, *), the last
        one (min(batch_size, n mod batch_size or batch_size), *).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        *,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"DataLoader: expected a dataset with __len__ and __getitem__, "
                f"got {type(dataset).__name__}"
            )
        # ValueError, not TypeError, for the wrong type too: torch's BatchSampler raises it
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise ValueError(
                f"DataLoader: expected an integer batch_size, got {type(batch_size).__name__}"
            )
        if batch_size <= 0:
            raise ValueError(f"DataLoader: expected batch_size >= 1, got {batch_size}")
        if not isinstance(drop_last, bool):  # as torch: None or "no" is refused, not read as bool
            raise ValueError(f"DataLoader: expected drop_last to be a bool, got {drop_last!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"DataLoader: expected a torch.Generator or None, got {type(generator).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError("DataLoader: the dataset is empty (0 samples)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator

    def __len__(self) -> int:
        """The number of batches in one epoch."""
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        """One epoch. Its random numbers are drawn where torch's DataLoader draws them.

        ``iter()`` draws torch's base seed for worker processes at once, shuffled or
        not: one int64 from the loader's generator, or from the global one. nograd has
        no workers, but draws it too, so that the numbers drawn after it are torch's.
        The rest (``_epoch``) waits for the first ``next()``, as torch's sampler does.
        """
        seed_for_workers = torch.empty((), dtype=torch.int64)
        seed_for_workers.random_(generator=self.generator)  # drawn and not used
        return self._epoch(len(self.dataset))

    def _epoch(self, n: int) -> Iterator[tuple[Tensor, ...]]:
        """The batches, with the draws torch's ``RandomSampler`` makes between them.

        At the first ``next()`` it draws the order: ``randperm(n)`` from the loader's
        generator, or, without one, from a new generator seeded by one more int64 from
        the global generator. Once the order is used up, it draws
        ``randperm(n)[:num_samples % n]``, the rest of an epoch longer than n samples:
        empty here (num_samples = n), but drawn all the same. From the loader's
        generator, that moves it on; without one, it comes from the sampler's own
        generator, which nothing else reads. torch's batch sampler runs out of indices
        when it is asked for the batch after the last full one: the last, partial
        batch, or the end of the epoch.
        """
        order = self._draw_order(n)
        full_batches = n // self.batch_size
        usable = full_batches * self.batch_size if self.drop_last else n
        tensors = tensors_of(self.dataset)  # a TensorDataset, or a Subset of one
        if tensors is not None:
            batches = self._tensor_batches(tensors, order, usable)
        else:
            batches = self._generic_batches(order, usable)
        yield from itertools.islice(batches, full_batches)
        if self.shuffle and self.generator is not None:
            torch.randperm(n, generator=self.generator)  # drawn and not used
        yield from batches  # the last, partial batch, unless dropped

    def _draw_order(self, n: int) -> Tensor | None:
        """The epoch's order (None: in order), drawn as torch's ``RandomSampler`` draws it."""
        if not self.shuffle:
            return None
        if self.generator is not None:
            return torch.randperm(n, generator=self.generator)
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def _tensor_batches(
        self, tensors: tuple[Tensor, ...], order: Tensor | None, usable: int
    ) -> Iterator[tuple[Tensor, ...]]:
        if order is not None:
            tensors = tuple(tensor[order] for tensor in tensors)  # one gather per epoch
        step = self.batch_size * BATCHES_PER_SPLIT
        for start in range(0, usable, step):
            stop = min(start + step, usable)
            columns = [torch.split(tensor[start:stop], self.batch_size) for tensor in tensors]
            yield from zip(*columns, strict=True)

    def _generic_batches(self, order: Tensor | None, usable: int) -> Iterator[tuple[Tensor, ...]]:
        indices = order.tolist() if order is not None else list(range(len(self.dataset)))
        for start in range(0, usable, self.batch_size):
            batch_indices = indices[start : start + self.batch_size]
            yield _collate([self.dataset[index] for index in batch_indices], batch_indices)

    def __repr__(self) -> str:
        return (
            f"DataLoader(n={len(self.dataset)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last})"
        )


def _collate(samples: list[Sequence[Any]], indices: list[int]) -> tuple[Tensor, ...]:
    """Stack field j of every sample into batch tensor j."""
    first = samples[0]
    if not isinstance(first, (tuple, list)):
        raise TypeError(
            f"DataLoader: expected dataset items to be tuples, got {type(first).__name__} "
            f"at index {indices[0]}"
        )
    for sample, index in zip(samples, indices, strict=True):
        if not isinstance(sample, (tuple, list)) or len(sample) != len(first):
            raise ValueError(
                f"DataLoader: expected every item to be a tuple of {len(first)} fields, "
                f"got {sample!r} at index {index}"
            )
    batch = []
    for field, values in enumerate(zip(*samples, strict=True)):
        if all(isinstance(value, Tensor) for value in values):
            shapes = {tuple(value.shape) for value in values}
            if len(shapes) != 1:
                raise ValueError(
                    f"DataLoader: field {field} has different shapes {sorted(shapes)} "
                    f"within the batch of indices {indices}"
                )
            batch.append(torch.stack(values))
        elif all(isinstance(value, (bool, int, float)) for value in values):
            # torch's default_collate takes the dtype from the first item: float64 for a
            # float (0.1 stays 0.1), else what torch.tensor infers (int64, bool, float32)
            dtype = torch.float64 if isinstance(values[0], float) else None
            batch.append(torch.tensor(values, dtype=dtype))
        else:
            kinds = sorted({type(value).__name__ for value in values})
            raise TypeError(f"DataLoader: field {field} must hold tensors or numbers, got {kinds}")
    return tuple(batch)

"""Samplers: the order in which a ``DataLoader`` visits a dataset's samples.

A sampler is any iterable of dataset indices; a batch sampler, any iterable of lists of
indices (one list per batch). ``DataLoader`` builds the usual ones itself (in order, or
shuffled with ``shuffle=True``), and takes any other through ``sampler=`` or
``batch_sampler=``::

    weights = [4.0 if label == 1 else 1.0 for _, label in dataset]  # oversample class 1
    sampler = WeightedRandomSampler(weights, num_samples=len(dataset))
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)

Each sampler here is ``torch.utils.data``'s namesake, random numbers included: it makes
the same draws from the same generator, and makes them when torch's does. Each
``__iter__`` is a generator, so nothing is drawn before the first index is asked for,
and an epoch without replacement draws its last (empty) permutation only when asked
for the index after the last one. So the same seed gives the same indices in both
frameworks, and every draw that follows (Dropout's masks between batches, say) gets
the same numbers too. Without a ``generator``, ``RandomSampler`` seeds a generator of
its own from one draw of torch's global one at each epoch, as torch's does;
``SubsetRandomSampler`` and ``WeightedRandomSampler`` draw from the global one itself.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Generic, TypeVar

import torch
from torch import Tensor

Index = TypeVar("Index", covariant=True)

# RandomSampler with replacement draws its indices in blocks of this many, as torch's
REPLACEMENT_BLOCK = 32


class Sampler(Generic[Index]):
    """Base class of the samplers: an iterable of indices (or of batches of them).

    A subclass defines ``__iter__``, and ``__len__`` where the count is known
    (``len(loader)`` needs it)::

        class ShortestFirst(Sampler[int]):
            def __init__(self, lengths: list[int]) -> None:
                self.lengths = lengths
            def __iter__(self) -> Iterator[int]:
                return iter(sorted(range(len(self.lengths)), key=self.lengths.__getitem__))
            def __len__(self) -> int:
                return len(self.lengths)
    """

    def __iter__(self) -> Iterator[Index]:
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")


class SequentialSampler(Sampler[int]):
    """The indices 0, 1, ..., n - 1, in order: what ``shuffle=False`` visits.

    Args:
        data_source: the dataset (only its length is read, at each epoch).
    """

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler[int]):
    """A random order of the indices, drawn afresh at each epoch: what ``shuffle=True`` visits.

    Without replacement, an epoch is ``randperm(n)``: every sample once. A
    ``num_samples`` above n chains whole permutations and cuts the last one short.
    With replacement, each index is uniform on [0, n), drawn in blocks of 32 as the
    epoch goes (``randint``), so some samples come twice and some never.

    Args:
        data_source: the dataset (only its length is read, at each epoch).
        replacement: draw with replacement.
        num_samples: indices per epoch (default: the dataset's length).
        generator: what the order is drawn from. None: at each epoch, a new generator
            seeded by one int64 drawn from torch's global generator, as torch does.

    Raises:
        TypeError: if ``replacement`` is not a bool.
        ValueError: if ``num_samples`` is not a positive integer.
    """

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(
                f"RandomSampler: expected replacement to be a bool, got {replacement!r}"
            )
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = checked_generator("RandomSampler", generator)
        count = self.num_samples
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            raise ValueError(
                f"RandomSampler: expected num_samples to be a positive integer, got {count!r}"
            )

    @property
    def num_samples(self) -> int:
        """Indices per epoch: the given count, or the dataset's current length."""
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        for block in self.blocks():
            yield from block.tolist()

    def blocks(self) -> Iterator[Tensor]:
        """The epoch's indices as int64 tensors, each drawn when the one before is used up.

        ``__iter__`` yields their elements. ``DataLoader`` slices a ``TensorDataset``
        with the permutation itself, so the order never becomes a Python list.
        """
        n, count = len(self.data_source), self.num_samples
        generator = self.generator if self.generator is not None else _seeded_from_global()
        if self.replacement:  # i ~ U{0, ..., n - 1}, 32 at a time
            for _ in range(count // REPLACEMENT_BLOCK):
                yield torch.randint(n, (REPLACEMENT_BLOCK,), generator=generator)
            yield torch.randint(n, (count % REPLACEMENT_BLOCK,), generator=generator)
        else:  # whole permutations, then the start of one more (empty if n divides count)
            for _ in range(count // n):
                yield torch.randperm(n, generator=generator)
            yield torch.randperm(n, generator=generator)[: count % n]

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler[int]):
    """The given indices in a random order, drawn afresh at each epoch.

    Handy for a held-out part of a dataset without a ``Subset``: the epoch visits
    ``indices[p_0], indices[p_1], ...`` for a ``randperm(len(indices))`` p.

    Args:
        indices: the dataset indices to visit, each once per epoch.
        generator: what the order is drawn from (torch's global generator when None).
    """

    def __init__(self, indices: Sequence[int], generator: torch.Generator | None = None) -> None:
        self.indices = indices
        self.generator = checked_generator("SubsetRandomSampler", generator)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.indices), generator=self.generator)
        for position in order.tolist():
            yield self.indices[position]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler[int]):
    """Index i with probability w_i / sum_j w_j: oversample rare classes, say.

    An epoch is ``num_samples`` indices drawn at once by ``torch.multinomial`` from the
    weights in float64, with replacement (the default) or without, where an index
    drawn once cannot come again in that epoch.

    Args:
        weights: one non-negative weight per sample (they need not sum to 1).
        num_samples: indices per epoch.
        replacement: draw with replacement.
        generator: what the indices are drawn from (torch's global generator when None).

    Raises:
        ValueError: if ``num_samples`` is not a positive integer, ``replacement`` not a
            bool, or the weights are not one-dimensional.
    """

    def __init__(
        self,
        weights: Sequence[float] | Tensor,
        num_samples: int,
        replacement: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError(
                f"WeightedRandomSampler: expected num_samples to be a positive integer, "
                f"got {num_samples!r}"
            )
        if not isinstance(replacement, bool):
            raise ValueError(
                f"WeightedRandomSampler: expected replacement to be a bool, got {replacement!r}"
            )
        weights_tensor = torch.as_tensor(weights, dtype=torch.float64)
        if weights_tensor.dim() != 1:
            raise ValueError(
                f"WeightedRandomSampler: expected a 1-d sequence of weights, got shape "
                f"{tuple(weights_tensor.shape)}"
            )
        self.weights = weights_tensor
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = checked_generator("WeightedRandomSampler", generator)

    def __iter__(self) -> Iterator[int]:
        drawn = torch.multinomial(
            self.weights, self.num_samples, self.replacement, generator=self.generator
        )  # P(i) = w_i / sum_j w_j
        yield from drawn.tolist()

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler[list[int]]):
    """Group a sampler's indices into lists of ``batch_size``: one list per batch.

    It asks its sampler for indices only as each batch is filled, so the sampler's
    draws fall between the batches where torch's fall. With ``drop_last`` a last list
    shorter than ``batch_size`` is dropped.

    Args:
        sampler: any iterable of indices (a ``Sampler``, a ``range``, a list).
        batch_size: indices per batch.
        drop_last: drop the last, short batch.

    Raises:
        ValueError: if ``batch_size`` is not a positive integer or ``drop_last`` not a
            bool (ValueError for both, as torch).
    """

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool) -> None:
        check_batching("BatchSampler", batch_size, drop_last)
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        indices = iter(self.sampler)
        batch = list(itertools.islice(indices, self.batch_size))
        while batch:  # the pull that finds the sampler empty ends the epoch, as torch's
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch
            batch = list(itertools.islice(indices, self.batch_size))

    def __len__(self) -> int:
        """Batches per epoch; needs the sampler's length."""
        count = operator.index(len(self.sampler))  # type: ignore[arg-type]
        if self.drop_last:
            return count // self.batch_size
        return (count + self.batch_size - 1) // self.batch_size  # ceil(count / batch_size)


def check_batching(owner: str, batch_size: object, drop_last: object) -> None:
    """Refuse what torch's BatchSampler refuses, with ValueError for the wrong types too."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        kind = type(batch_size).__name__
        raise ValueError(f"{owner}: expected an integer batch_size, got {kind}")
    if batch_size <= 0:
        raise ValueError(f"{owner}: expected batch_size >= 1, got {batch_size}")
    if not isinstance(drop_last, bool):  # as torch: None or "no" is refused, not read as bool
        raise ValueError(f"{owner}: expected drop_last to be a bool, got {drop_last!r}")


def checked_generator(owner: str, generator: object) -> torch.Generator | None:
    """``generator`` itself, once it is a torch.Generator or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{owner}: expected a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _seeded_from_global() -> torch.Generator:
    """A new generator seeded by one int64 drawn from torch's global generator."""
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    return torch.Generator().manual_seed(seed)

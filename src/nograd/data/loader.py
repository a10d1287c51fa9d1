"""DataLoader: cut a dataset into mini-batches, in order, shuffled, or as a sampler says."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.context import BaseContext
from typing import Any, Generic, TypeVar, cast, overload

import torch
from torch import Tensor

from nograd.data.collate import default_collate, default_convert
from nograd.data.dataset import Dataset, Indexed
from nograd.data.fetch import END, Collate, StreamReader, fetch_indexed
from nograd.data.iterable import Forever, is_iterable_dataset
from nograd.data.pin_memory import pin_memory
from nograd.data.samplers import (
    BatchSampler,
    RandomSampler,
    SequentialSampler,
    check_batching,
    checked_generator,
)
from nograd.data.split import tensors_of
from nograd.data.worker_process import WorkerSpec
from nograd.data.workers import WorkerPool, check_worker_options, worker_context

# The fast path cuts this many batches at a time with one torch.split call, which
# costs less per batch than a Python slice and keeps at most this many views alive.
# In order, it copies that many batches at a time: one copy per chunk, not per batch.
BATCHES_PER_SPLIT = 256

Batch = TypeVar("Batch")


class DataLoader(Generic[Batch]):
    """Yield mini-batches (of tensors, or what ``collate_fn`` makes), an epoch at a time.

    Each ``iter(loader)`` is one epoch. With ``shuffle=True`` the epoch visits the
    samples in the order of a ``torch.randperm(n)`` drawn afresh at every epoch, so a
    seeded generator reproduces the whole sequence of epochs. Any other order comes
    from a ``sampler`` (indices, such as ``WeightedRandomSampler``) or a
    ``batch_sampler`` (lists of indices, one per batch): ``nograd.data.samplers``.

    The random numbers are torch's: an epoch draws what an epoch of
    ``torch.utils.data.DataLoader`` draws, from the same generators, in the same order
    and between the same batches (``__iter__``, ``_sliced_epoch``), so the same seed
    gives the same batches in both, and the same random numbers afterwards (Dropout's
    masks), also with two epochs under way at once.

    With ``num_workers=k`` the batches are read by k worker processes, ahead of their
    use, while the main process trains (``nograd.data.workers``); each worker seeds its
    generators as torch's does, so a dataset that draws random numbers gives torch's
    batches there too. An ``IterableDataset`` is read as a stream, in its own order
    (``nograd.data.iterable``).

    A ``TensorDataset`` is batched with tensor slices (of one copy per tensor per 256
    batches in order, one gather per tensor per epoch when shuffling: never views of the
    dataset, as torch's batches are copies), and so is a ``Subset`` of one, after one more
    gather of its rows per epoch, and a ``ConcatDataset`` of such, after one join of
    their tensors per epoch (``tensors_of``); under any other sampler, each batch is one gather of
    its rows. Any other dataset, or any ``collate_fn``, reads the samples one by one
    and hands the batch's list of samples to ``collate_fn``, which by default is
    ``default_collate``: field j of every sample stacked into batch tensor j (dicts,
    namedtuples and nestings of them too: ``nograd.data.collate``).

    ``batch_size=None`` turns batching off, as in torch: the loader yields
    ``collate_fn(dataset[i])`` for each index i of the sampler, one sample at a time
    (``collate_fn`` defaults to ``default_convert``, which makes numpy arrays tensors),
    ``len(loader)`` is the sampler's length, and ``batch_sampler`` is None.

    Args (torch's, in torch's order):
        dataset: a ``TensorDataset`` or a ``Subset``, or any object with ``__len__`` and a
            ``__getitem__`` that returns a sample ``default_collate`` takes (a tuple or
            dict of tensors, numbers, strings, ...), read a batch at a time by its
            ``__getitems__(indices)`` where it has one, as in torch; or an
            ``IterableDataset``.
        batch_size: samples per batch; the last batch may be smaller. None: no
            batching, each sample on its own.
        shuffle: draw a new random order at each epoch.
        sampler: the indices of an epoch, in their order (instead of ``shuffle``).
        batch_sampler: the lists of indices of an epoch's batches (instead of
            ``batch_size``, ``shuffle``, ``sampler`` and ``drop_last``).
        num_workers: worker processes that read the batches; 0 reads them here.
        collate_fn: makes a batch from the list of its samples (default:
            ``default_collate``), or without batching an item from one sample
            (default: ``default_convert``); the loader yields what it returns.
        pin_memory: hand out batches in page-locked memory, which a GPU copies from
            without making the host wait (``nograd.data.pin_memory``); without a GPU,
            a warning and unpinned batches, as in torch.
        drop_last: drop the last batch when it holds fewer than ``batch_size`` samples
            (a bool, as torch requires).
        timeout: seconds to wait for a worker's batch before a RuntimeError; 0: for ever.
        worker_init_fn: called in each worker with its id, after seeding.
        multiprocessing_context: how workers start: "fork", "spawn", "forkserver" or a
            ``multiprocessing`` context; default: the platform's (fork on Linux), and
            the attribute reads None, as torch's.
        generator: the generator the epoch draws from (torch's global one when None):
            ``shuffle``'s order and the workers' base seed.
        prefetch_factor: batches under way per worker (keyword only; default 2 with
            workers, and None without, as torch requires).
        persistent_workers: keep the workers from one epoch to the next (keyword only).
        pin_memory_device: deprecated in torch, which warns and pins for its current
            accelerator; taken, with that warning, so that torch code runs (keyword only).
        in_order: hand out the batches in the sampler's order (default); False hands
            each out as soon as a worker has it, so a slow batch does not hold up the
            ones behind it, at the cost of an order that depends on timing (keyword
            only; with workers only).

    Raises:
        ValueError: for a sampler with ``shuffle=True``, a batch sampler with
            ``batch_size``, ``shuffle``, ``sampler`` or ``drop_last`` (torch's rules),
            ``drop_last=True`` without batching, the batch_size and drop_last that
            ``BatchSampler`` refuses, ``shuffle``, a sampler or a batch sampler with an
            ``IterableDataset``, and the worker options torch refuses (a negative
            ``num_workers`` or ``timeout``, ``prefetch_factor``, ``persistent_workers``
            or ``multiprocessing_context`` without workers).

    Shape:
        each dataset tensor: (n, *) -> each batch tensor: (batch_size, *), the last
        one (min(batch_size, n mod batch_size or batch_size), *). Without batching,
        each item is a sample: (*).
    """

    batch_size: int | None  # None: a batch_sampler sizes the batches, or no batching
    batch_sampler: Iterable[Sequence[int]] | None  # each epoch's batches; None: no batching

    @overload
    def __init__(
        self: DataLoader[Any],
        dataset: Dataset[Any] | Indexed | Iterable[Any],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Iterable[int] | None = None,
        batch_sampler: Iterable[Sequence[int]] | None = None,
        num_workers: int = 0,
        collate_fn: None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: str | BaseContext | None = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
    ) -> None: ...

    @overload
    def __init__(
        self,
        dataset: Dataset[Any] | Indexed | Iterable[Any],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Iterable[int] | None = None,
        batch_sampler: Iterable[Sequence[int]] | None = None,
        num_workers: int = 0,
        *,
        collate_fn: Callable[[Any], Batch],  # a batch's list of samples, or one sample
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: str | BaseContext | None = None,
        generator: torch.Generator | None = None,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
    ) -> None: ...

    def __init__(
        self,
        dataset: Dataset[Any] | Indexed | Iterable[Any],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Iterable[int] | None = None,
        batch_sampler: Iterable[Sequence[int]] | None = None,
        num_workers: int = 0,
        collate_fn: Collate | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: str | BaseContext | None = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
    ) -> None:
        self.iterable = is_iterable_dataset(dataset)  # a stream: no indices, no length
        indexed = hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
        if not (self.iterable or indexed):
            raise TypeError(
                f"DataLoader: expected a dataset with __len__ and __getitem__ (or an "
                f"IterableDataset), got {type(dataset).__name__}"
            )
        check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers)
        self.num_workers, self.timeout = num_workers, timeout
        self.prefetch_factor = 2 if num_workers > 0 and prefetch_factor is None else prefetch_factor
        self.persistent_workers, self.worker_init_fn = persistent_workers, worker_init_fn
        self.in_order = in_order  # False: each batch as soon as a worker has it
        # None unless given, as torch's: the workers then start the platform's way
        self.multiprocessing_context: BaseContext | None = (
            None if multiprocessing_context is None
            else worker_context(multiprocessing_context, num_workers)
        )  # fmt: skip
        self.pin_memory, self.pin_memory_device = pin_memory, pin_memory_device
        if batch_sampler is None and batch_size is not None:  # else torch ignores them
            check_batching("DataLoader", batch_size, drop_last)
        self.generator = checked_generator("DataLoader", generator)
        for name, value in (("sampler", sampler), ("batch_sampler", batch_sampler)):
            if value is not None and not hasattr(value, "__iter__"):
                raise TypeError(
                    f"DataLoader: expected {name} to be an iterable, got {type(value).__name__}"
                )
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(
                f"DataLoader: expected collate_fn to be callable, got {type(collate_fn).__name__}"
            )
        if self.iterable:  # the stream decides the order
            given: dict[str, object] = {
                "shuffle": shuffle, "sampler": sampler, "batch_sampler": batch_sampler
            }  # fmt: skip
            for name, option in given.items():
                # as torch: a shuffle equal to False (0 too) is no shuffle
                unset = option in (None, False) if name == "shuffle" else option is None
                if not unset:
                    raise ValueError(
                        f"DataLoader with an IterableDataset: expected no {name}, "
                        f"got {name}={option!r}"
                    )
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler is mutually exclusive with shuffle=True")
        if batch_sampler is not None and (
            batch_size != 1 or shuffle or sampler is not None or drop_last
        ):
            raise ValueError(
                "DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, "
                "sampler and drop_last"
            )
        if batch_sampler is None and batch_size is None and drop_last:
            raise ValueError(
                "DataLoader: batch_size=None turns batching off, and is mutually exclusive "
                "with drop_last"
            )
        if self.iterable:  # as torch's: None for ever, only to pace the batches
            sampler = Forever()  # type: ignore[assignment]
        elif sampler is None and shuffle:  # the two orders shuffle chooses between, as torch's
            sampler = RandomSampler(dataset, generator=generator)  # type: ignore[arg-type]
        elif sampler is None:
            sampler = SequentialSampler(dataset)  # type: ignore[arg-type]
        assert sampler is not None
        self.dataset: Any = dataset  # map-style (Dataset) or iterable (IterableDataset)
        self.shuffle = shuffle
        self.sampler = sampler
        if collate_fn is None:  # as torch: stack batches, convert lone samples
            collate_fn = default_convert if batch_size is None else default_collate
        self.collate_fn: Collate = collate_fn
        if batch_sampler is None:
            self.batch_size, self.drop_last = batch_size, drop_last
            self.batch_sampler = (
                None if batch_size is None else BatchSampler(sampler, batch_size, drop_last)
            )
        else:  # as torch: the batch sampler decides, and these read None and False
            self.batch_size, self.drop_last = None, False
            self.batch_sampler = batch_sampler
        self._workers: WorkerPool | None = None  # persistent workers, once started

    def __len__(self) -> int:
        """The number of batches in one epoch (the batch sampler's length), or without
        batching of samples (the sampler's). An iterable dataset's loader counts them
        from the dataset's ``__len__`` (TypeError without one), as torch's does."""
        if self.iterable:
            count = len(self.dataset)  # TypeError if it has none
            if self.batch_size is None:
                return count
            if self.drop_last:
                return count // self.batch_size
            return (count + self.batch_size - 1) // self.batch_size  # ceil(count / batch_size)
        indices = self.sampler if self.batch_sampler is None else self.batch_sampler
        return len(indices)  # type: ignore[arg-type]  # TypeError if it has none

    def __iter__(self) -> Iterator[Batch]:
        """One epoch. Its random numbers are drawn where torch's DataLoader draws them.

        torch's ``iter()`` opens the batch sampler, then draws its base seed for worker
        processes: one int64 from the loader's generator, or from the global one (with
        ``persistent_workers``, at the first epoch only). Without workers nograd draws
        it too, so that the numbers drawn after it are torch's. The samplers here draw
        nothing more until the first ``next()``; with workers, until ``iter()`` sends
        the first batches' indices to them.
        """
        if self.num_workers > 0:
            return self._worker_epoch()
        epoch: Iterator[Any]
        if self.iterable:  # torch opens the stream after drawing the seed
            self._draw_seed_for_workers()
            read = StreamReader(self.dataset, self.batch_size, self.drop_last, self.collate_fn)
            epoch = self._stream_epoch(read)
        elif self.batch_sampler is None:  # no batching: torch opens the sampler itself
            indices = iter(self.sampler)
            self._draw_seed_for_workers()
            epoch = self._sample_epoch(indices)
        elif (sliced := self._slicing()) is not None:  # a TensorDataset: the fast path
            self._draw_seed_for_workers()  # its samplers are nograd's: no draw at iter()
            epoch = self._sliced_epoch(*sliced)
        else:
            index_batches = iter(self.batch_sampler)
            self._draw_seed_for_workers()
            epoch = self._indexed_epoch(index_batches)
        return cast(Iterator[Batch], self._pinned(epoch) if self._pins() else epoch)

    def _worker_epoch(self) -> Iterator[Batch]:
        """An epoch read by worker processes (``nograd.data.workers``): new ones each
        epoch, or with ``persistent_workers`` the ones the first epoch started."""
        indices = iter(self.batch_sampler if self.batch_sampler is not None else self.sampler)
        workers = self._workers
        if workers is None or workers.closed:
            seed = torch.empty((), dtype=torch.int64).random_(generator=self.generator)
            batched = self.batch_sampler is not None
            spec = WorkerSpec(self.dataset, self.collate_fn, self.iterable, batched,
                              self.batch_size, self.drop_last, self.num_workers,
                              self.worker_init_fn)  # fmt: skip
            assert self.prefetch_factor is not None
            context = worker_context(self.multiprocessing_context, self.num_workers)
            workers = WorkerPool(spec, int(seed), context, self.prefetch_factor,
                                 self.timeout)  # fmt: skip
            if self.persistent_workers:
                self._workers = workers
        return workers.epoch(indices, self._pins(), self.persistent_workers, self.in_order)

    def _pins(self) -> bool:
        """Whether batches are pinned: asked for, and a GPU to copy them to (torch warns
        and goes on without pinning where there is none). A ``pin_memory_device`` is
        ignored with torch's warning: pinned memory serves whichever GPU copies from it."""
        if self.pin_memory and self.pin_memory_device:
            warnings.warn(
                f"DataLoader: pin_memory_device is deprecated (as in torch): ignoring "
                f"pin_memory_device={self.pin_memory_device!r}",
                stacklevel=3,
            )
        if self.pin_memory and not torch.cuda.is_available():
            warnings.warn(
                "DataLoader: pin_memory=True, but there is no GPU: the batches are not pinned",
                stacklevel=3,
            )
            return False
        return self.pin_memory

    @staticmethod
    def _pinned(epoch: Iterator[Any]) -> Iterator[Any]:
        for batch in epoch:
            yield pin_memory(batch)

    def _draw_seed_for_workers(self) -> None:
        seed_for_workers = torch.empty((), dtype=torch.int64)
        seed_for_workers.random_(generator=self.generator)  # drawn and not used

    def generators(self) -> dict[str, torch.Generator]:
        """The generators an epoch draws from besides torch's global one, by name.

        The loader's own when it shuffles ("shuffle"; otherwise it draws from it only the
        unused seed for workers, which no batch depends on), and each sampler's own,
        once each: what a checkpoint must keep to replay an epoch.
        """
        named: dict[str, torch.Generator] = {}
        if self.shuffle and self.generator is not None:
            named["shuffle"] = self.generator
        holders = {
            "sampler": self.sampler,
            "batch_sampler": self.batch_sampler,
            "batch_sampler.sampler": getattr(self.batch_sampler, "sampler", None),
        }
        for name, holder in holders.items():
            generator = getattr(holder, "generator", None)
            if isinstance(generator, torch.Generator) and not any(
                generator is seen for seen in named.values()
            ):
                named[name] = generator
        return named

    def _slicing(self) -> tuple[tuple[Tensor, ...], RandomSampler | None, BatchSampler] | None:
        """The dataset's tensors, the shuffling sampler (None: in order) and the batch
        sampler, where batches can be cut as slices; else None.

        That is a ``TensorDataset`` (or a ``Subset`` of one) under the default collation
        and a ``BatchSampler`` over one pass of the dataset, in order or in a
        permutation without replacement.
        """
        batches, n = self.batch_sampler, len(self.dataset)
        if self.collate_fn is not default_collate or type(batches) is not BatchSampler:
            return None
        sampler = batches.sampler
        if type(sampler) is SequentialSampler:
            shuffler = None
        elif type(sampler) is RandomSampler and not sampler.replacement:
            shuffler = sampler
        else:
            return None
        if len(sampler) != n or len(sampler.data_source) != n:  # one pass over this dataset
            return None
        tensors = tensors_of(self.dataset)  # None: not a dataset of tensors
        return None if tensors is None else (tensors, shuffler, batches)

    def _sliced_epoch(
        self, tensors: tuple[Tensor, ...], shuffler: RandomSampler | None, batches: BatchSampler
    ) -> Iterator[tuple[Tensor, ...]]:
        """The batches of a TensorDataset as slices, with the draws torch makes between them.

        At the first ``next()`` the sampler draws the order (``RandomSampler.blocks``).
        torch's batch sampler runs out of indices when it is asked for the batch after
        the last full one: the last, partial batch, or the end of the epoch. Only then
        does its sampler draw the rest of a longer epoch, ``randperm(n)[:0]``, empty
        here but drawn all the same: from the sampler's generator (``shuffle``'s is the
        loader's), that moves it on.
        """
        n, batch_size = len(self.dataset), batches.batch_size
        blocks = shuffler.blocks() if shuffler is not None else None
        order = next(blocks) if blocks is not None else None  # None: in order
        full_batches = n // batch_size
        usable = full_batches * batch_size if batches.drop_last else n
        sliced = self._tensor_batches(tensors, order, usable, batch_size)
        yield from itertools.islice(sliced, full_batches)
        if blocks is not None:
            next(blocks, None)  # drawn and not used
        yield from sliced  # the last, partial batch, unless dropped

    @staticmethod
    def _tensor_batches(
        tensors: tuple[Tensor, ...], order: Tensor | None, usable: int, batch_size: int
    ) -> Iterator[tuple[Tensor, ...]]:
        # torch's batches are stacks of samples: contiguous, whatever the layout of the
        # dataset's tensors (a transpose, a permute), so batch.view(n, -1) works on them
        if order is not None:  # one gather per epoch
            tensors = tuple(tensor[order].contiguous() for tensor in tensors)
        step = batch_size * BATCHES_PER_SPLIT
        for start in range(0, usable, step):
            stop = min(start + step, usable)
            # In order, a copy of the chunk: torch's batches are copies, and a batch
            # changed in place (x -= mean) must not change the dataset
            chunks = [tensor[start:stop] for tensor in tensors]
            if order is None:
                chunks = [chunk.clone(memory_format=torch.contiguous_format) for chunk in chunks]
            columns = [torch.split(chunk, batch_size) for chunk in chunks]
            yield from zip(*columns, strict=True)

    def _sample_epoch(self, indices: Iterator[int]) -> Iterator[Any]:
        """Without batching: ``collate_fn(dataset[i])`` for each index, as torch's."""
        for index in indices:
            yield self.collate_fn(self.dataset[index])

    def _indexed_epoch(self, index_batches: Iterator[Sequence[int]]) -> Iterator[Any]:
        """The batches at the batch sampler's indices (``fetch_indexed``)."""
        default = self.collate_fn is default_collate
        tensors = tensors_of(self.dataset) if default else None
        for indices in index_batches:
            yield fetch_indexed(self.dataset, tensors, self.collate_fn, indices)

    @staticmethod
    def _stream_epoch(read: StreamReader) -> Iterator[Any]:
        """An iterable dataset's batches, until its stream runs out."""
        while (batch := read()) is not END:
            yield batch

    def __repr__(self) -> str:
        """The dataset's size and how it is batched. A stream without ``__len__`` shows
        n=?: a repr must not raise, since debuggers and error messages show it."""
        try:
            n: int | str = len(self.dataset)
        except TypeError:  # a stream without __len__
            n = "?"
        if self.batch_sampler is None:
            return f"DataLoader(n={n}, batch_size=None, shuffle={self.shuffle})"
        if self.batch_size is None:
            return f"DataLoader(n={n}, batch_sampler={self.batch_sampler!r})"
        return (
            f"DataLoader(n={n}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last})"
        )

"""What runs in a DataLoader's worker process (``nograd.data.workers`` starts them).

``worker_loop`` is the body of one worker: it seeds the worker's generators, calls the
user's ``worker_init_fn``, then reads the batches it is asked for, one at a time, and
sends them back, until it is told to stop or the main process is gone. Besides the
batches it sends three kinds of message (``Restart``'s echo, ``RanOut``, ``Failure``),
and ``get_worker_info()`` tells the code running in it (a dataset's ``__iter__``, a
``worker_init_fn``) which worker it is.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nograd.data.collate import default_collate
from nograd.data.fetch import END, Collate, StreamReader, fetch_indexed
from nograd.data.split import tensors_of

POLL_SECONDS = 5.0  # how often a waiting process checks that the other side still lives


@dataclass(frozen=True)
class WorkerInfo:
    """What ``get_worker_info()`` tells code that runs in a worker process.

    Attributes:
        id: this worker's number, 0 to ``num_workers - 1``.
        num_workers: how many workers the loader runs.
        seed: the seed of this worker's generators, ``base_seed + id``.
        dataset: this process's copy of the dataset (a change to it stays here).
    """

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None  # set in a worker process only


def get_worker_info() -> WorkerInfo | None:
    """The ``WorkerInfo`` of this worker process; None in the main process.

    A dataset's ``__iter__`` or a ``worker_init_fn`` reads it to give each worker its
    own share of the data, or its own seed for another library.
    """
    return _worker_info


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker needs to read batches, sent to it when it starts."""

    dataset: Any
    collate_fn: Collate
    iterable: bool  # an IterableDataset: a stream, not indices
    batched: bool  # tasks are batches (lists of indices), not single samples
    batch_size: int | None  # a stream's batches; None: under a batch sampler, or unbatched
    drop_last: bool
    num_workers: int
    worker_init_fn: Callable[[int], None] | None

    def reader(self) -> Callable[[Any], Any]:
        """Reads the batch at the indices it is given (for a stream: the next one)."""
        if self.iterable:
            return StreamReader(self.dataset, self.batch_size, self.drop_last, self.collate_fn)
        if not self.batched:  # the index of one sample
            return lambda index: self.collate_fn(self.dataset[index])
        tensors = tensors_of(self.dataset) if self.collate_fn is default_collate else None
        return lambda indices: fetch_indexed(self.dataset, tensors, self.collate_fn, indices)


@dataclass(frozen=True)
class Restart:
    """Sent to a persistent worker at a new epoch, and echoed back: a stream starts
    over, and everything the worker sent before the echo belongs to the last epoch."""


@dataclass(frozen=True)
class RanOut:
    """A worker's copy of an iterable dataset has no batch left this epoch."""

    worker_id: int


@dataclass(frozen=True)
class Failure:
    """An exception raised in a worker, to be raised again in the main process."""

    error_type: type[BaseException]
    message: str

    @classmethod
    def caught(cls, error: BaseException, worker_id: int) -> Failure:
        text = "".join(traceback.format_exception(error))
        message = f"Caught {type(error).__name__} in DataLoader worker process {worker_id}.\n"
        return cls(type(error), message + "Original " + text)

    def raise_again(self) -> None:
        """Raise the worker's exception type with its traceback as the message, or a
        RuntimeError where that type cannot be built from one string."""
        message = self.message
        if self.error_type is KeyError:  # str(KeyError(m)) is repr(m): one line of \n's
            message = ShownAsIs(message)
        try:
            error = self.error_type(message)
        except Exception:
            error = RuntimeError(self.message)
        raise error


class ShownAsIs(str):
    """A string whose repr is itself, so that a KeyError carrying a traceback prints it
    on its lines, as torch's does."""

    def __repr__(self) -> str:
        return str(self)


def worker_loop(
    spec: WorkerSpec,
    worker_id: int,
    base_seed: int,
    index_queue: Any,  # multiprocessing queues: (t, indices), Restart, or None to stop
    result_queue: Any,  # (t, batch | RanOut | Failure) or (Restart, None)
) -> None:
    """The body of worker process ``worker_id``: read the batches it is asked for, one
    at a time, until it is told to stop (None) or the main process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    torch.set_num_threads(1)  # k workers beside the training: one thread each
    seed = base_seed + worker_id
    random.seed(seed)
    torch.manual_seed(seed)
    _seed_numpy(base_seed, worker_id)
    global _worker_info
    _worker_info = WorkerInfo(worker_id, spec.num_workers, seed, spec.dataset)
    failure: Failure | None = None  # worker_init_fn's, sent for every batch asked for
    read: Callable[[Any], Any] | None = None
    try:
        if spec.worker_init_fn is not None:
            spec.worker_init_fn(worker_id)
        read = spec.reader()
    except Exception as error:
        failure = Failure.caught(error, worker_id)
    parent, ran_out = os.getppid(), False
    while True:
        try:
            task = index_queue.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != parent:  # the main process died: nobody will read
                return
            continue
        if task is None:
            return
        if isinstance(task, Restart):
            if failure is None:
                try:
                    read = spec.reader()  # a stream starts over
                except Exception as error:
                    failure = Failure.caught(error, worker_id)
            ran_out = False
            result_queue.put((task, None))
            continue
        if ran_out:  # nothing more this epoch; the main process knows
            continue
        number, indices = task
        data: Any = failure
        if failure is None:
            assert read is not None
            try:
                data = read(indices)
            except Exception as error:
                data = Failure.caught(error, worker_id)
            if data is END:
                data, ran_out = RanOut(worker_id), True
        result_queue.put((number, data))


def _seed_numpy(base_seed: int, worker_id: int) -> None:
    """Seed numpy's global generator, if numpy is installed, from the 128 bits of a
    SeedSequence of the worker's number and the two halves of ``base_seed``: what
    torch's workers seed it with."""
    try:
        import numpy as np
    except ImportError:
        return
    entropy = [worker_id, base_seed & 0xFFFFFFFF, base_seed >> 32, 0]
    np.random.seed(np.random.SeedSequence(entropy).generate_state(4))

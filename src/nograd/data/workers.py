"""Worker processes that read a DataLoader's batches while the main process trains.

``DataLoader(num_workers=k)`` starts k processes, each with a copy of the dataset and
the ``collate_fn``. The main process keeps the sampler: it hands each batch's indices
to the next worker in turn, and keeps ``prefetch_factor * k`` batches under way, so
that while the model trains on batch t the workers read batches t+1, t+2, ... The
batches come back in whatever order the workers finish them; the main process hands
them out in the sampler's order::

    main:      sampler -> (t, indices) -> index queue of worker t mod k
    worker w:  (t, indices) -> collate_fn([dataset[i] for i in indices]) -> result queue
    main:      result queue -> batch t, in order

Tensors travel through shared memory (torch's pickling of tensors for
``multiprocessing``), not through the pipe.

An ``IterableDataset`` has no indices: each worker iterates over its own copy of the
dataset, and the main process asks the workers for batches in turn until every one
has run out. Each copy yields the whole stream unless the dataset splits it with
``get_worker_info()``, say by taking every k-th sample from the w-th.

Random numbers: the main process draws one int64 ``base_seed`` per start of the
workers (from the loader's generator, or torch's global one). Worker w seeds Python's
``random``, torch's global generator and, if numpy is installed, numpy's global one
from ``base_seed + w``, as torch's workers do, then calls ``worker_init_fn(w)``. So a
dataset that draws random numbers draws different ones in each worker and each epoch,
and the same again from the same seed.

Errors: an exception in a worker is raised again in the main process, with the
worker's traceback in its message, when its batch's turn comes. A worker that dies
(killed, out of memory) is a ``RuntimeError`` there instead of a hang, and so is a
batch that takes longer than ``timeout`` seconds. Ctrl-C reaches the main process
only: the workers ignore it, so that ``fit`` can save a checkpoint at the next step.
"""

from __future__ import annotations

import itertools
import os
import queue
import random
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_any
from typing import Any

import torch

from nograd.data.collate import default_collate
from nograd.data.fetch import END, Collate, StreamReader, fetch_indexed
from nograd.data.pin_memory import pin_memory
from nograd.data.split import tensors_of

POLL_SECONDS = 5.0  # how often a waiting process checks that the other side still lives
DYING_SECONDS = 1.0  # how long a worker may take to end once its sockets have closed


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


# The queues of the pools not shut down yet, held here so that they outlive their pool.
# A pool dropped inside a reference cycle (an epoch kept by the traceback of an error it
# raised, say) is freed by the garbage collector, which runs the queues' finalizers
# before the pool's __del__: they stop each queue's thread that sends what is put on it,
# so the None that tells the workers to stop would never leave, and shutdown would wait
# POLL_SECONDS for every worker before terminating it.
_open_queues: dict[int, list[Any]] = {}


class WorkerPool:
    """k worker processes, their queues, and the epochs they read.

    Args:
        spec: what the workers read, and how.
        base_seed: the workers' seeds are ``base_seed + id``.
        context: a ``multiprocessing`` context (fork, spawn, forkserver).
        prefetch_factor: batches under way per worker.
        timeout: seconds to wait for a batch before giving up; 0 waits for ever.
    """

    def __init__(
        self, spec: WorkerSpec, base_seed: int, context: Any, prefetch_factor: int, timeout: float
    ) -> None:
        self.spec, self.prefetch_factor, self.timeout = spec, prefetch_factor, timeout
        self.epochs = 0  # epochs started on these workers
        self.closed = False
        # A worker forked later holds a copy of this pool, which its garbage collector
        # may free: only the process that started the workers may stop them
        self.owner = os.getpid()
        self.index_queues = [context.Queue() for _ in range(spec.num_workers)]
        self.results = context.Queue()
        _open_queues[id(self)] = [*self.index_queues, self.results]
        self.processes: list[Any] = []  # those started
        try:
            for worker_id in range(spec.num_workers):
                process = context.Process(
                    target=worker_loop,
                    args=(spec, worker_id, base_seed, self.index_queues[worker_id], self.results),
                    daemon=True,  # never outlives the main process
                )
                process.start()  # spawn: pickles the spec here, which may fail
                self.processes.append(process)
        except BaseException:
            self.shutdown()  # the workers started so far
            raise

    def epoch(self, indices: Iterator[Any], pin: bool, persistent: bool) -> WorkerEpoch:
        """An epoch over the sampler's ``indices``; the workers start reading at once."""
        if self.epochs > 0:
            self._restart()
        self.epochs += 1
        return WorkerEpoch(self, indices, pin, persistent)

    def _restart(self) -> None:
        """Start a new epoch on persistent workers: drop what the last one left."""
        for index_queue in self.index_queues:
            index_queue.put(Restart())
        echoes = 0
        while echoes < len(self.processes):
            number, _ = self.receive()
            echoes += isinstance(number, Restart)  # anything else is the last epoch's

    def receive(self) -> tuple[Any, Any]:
        """The next (t, batch) that any worker sends; RuntimeError if a worker has died
        or nothing came within ``timeout`` seconds."""
        start = time.monotonic()
        while True:
            wait = POLL_SECONDS
            if self.timeout > 0:
                wait = min(wait, max(self.timeout - (time.monotonic() - start), 0.0))
            try:
                received: tuple[Any, Any] = self.results.get(timeout=wait)
                return received
            except Exception as error:
                # Not only queue.Empty: a batch's tensors are shared file descriptors
                # that the main process fetches from their worker while unpickling, so
                # a batch left by a worker that has died, or is dying, fails to unpickle
                # (ConnectionRefusedError, ConnectionResetError, EOFError). A dying
                # worker's sockets close a moment before it counts as dead: wait for
                # its end that long, so that the error is the dead worker's.
                grace = 0.0 if isinstance(error, queue.Empty) else DYING_SECONDS
                ended = wait_for_any([p.sentinel for p in self.processes], timeout=grace)
                dead = [
                    str(p.pid) for p in self.processes if p.sentinel in ended or not p.is_alive()
                ]
                if dead:
                    raise RuntimeError(
                        f"DataLoader worker (pid(s) {', '.join(dead)}) exited unexpectedly"
                    ) from (None if isinstance(error, queue.Empty) else error)
                if not isinstance(error, queue.Empty):
                    raise
                if self.timeout > 0 and time.monotonic() - start >= self.timeout:
                    raise RuntimeError(
                        f"DataLoader timed out after {self.timeout} seconds"
                    ) from None

    def shutdown(self) -> None:
        """Stop the workers: ask, wait a little, then terminate those still running."""
        if self.closed or os.getpid() != self.owner:
            return
        self.closed = True
        for index_queue in self.index_queues:
            index_queue.put(None)
        for process in self.processes:
            process.join(timeout=POLL_SECONDS)
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=POLL_SECONDS)
        for any_queue in (*self.index_queues, self.results):
            any_queue.cancel_join_thread()  # what is left in them is not needed
            any_queue.close()
        _open_queues.pop(id(self), None)

    def __del__(self) -> None:
        self.shutdown()


class WorkerEpoch:
    """The batches of one epoch read by a ``WorkerPool``, in the sampler's order.

    Batch t goes to worker t mod k (skipping the workers whose stream has run out).
    Made by ``WorkerPool.epoch``, which sends the first ``prefetch_factor * k`` tasks
    at once, as torch's ``iter(loader)`` does; each batch handed out sends the next,
    so the sampler draws its random numbers when torch's draws them.
    """

    def __init__(
        self, pool: WorkerPool, indices: Iterator[Any], pin: bool, persistent: bool
    ) -> None:
        self.pool, self.indices, self.pin, self.persistent = pool, indices, pin, persistent
        self.epoch = pool.epochs  # a later epoch of persistent workers ends this one
        self.turns = itertools.cycle(range(len(pool.processes)))
        self.reading = [True] * len(pool.processes)  # False: its stream has run out
        self.sent_to: dict[int, int] = {}  # batch number -> worker, until handed out
        self.arrived: dict[int, Any] = {}  # batches that came before their turn
        self.next_in = self.next_out = 0  # the next batch to send for, to hand out
        for _ in range(pool.prefetch_factor * len(pool.processes)):
            self._send_next()

    def __iter__(self) -> WorkerEpoch:
        return self

    def __next__(self) -> Any:
        pool = self.pool
        if pool.closed or pool.epochs != self.epoch:
            raise StopIteration  # shut down, or a later epoch has the workers now
        while True:
            # Batches sent to a worker whose stream has since run out will not come
            while (
                self.next_out < self.next_in
                and self.next_out not in self.arrived
                and not self.reading[self.sent_to[self.next_out]]
            ):
                del self.sent_to[self.next_out]
                self.next_out += 1
            if self.next_out == self.next_in:  # nothing under way: the epoch is over
                if not self.persistent:
                    pool.shutdown()
                raise StopIteration
            if self.next_out in self.arrived:
                data = self.arrived.pop(self.next_out)
                del self.sent_to[self.next_out]
                self.next_out += 1
                self._send_next()  # keep prefetch_factor * k batches under way
                if isinstance(data, Failure):
                    data.raise_again()
                return pin_memory(data) if self.pin else data
            number, data = pool.receive()
            if isinstance(data, RanOut):
                self.reading[data.worker_id] = False
                self._send_next()  # to a worker still reading, if any
            else:
                self.arrived[number] = data

    def _send_next(self) -> None:
        """Send the sampler's next indices to the next worker still reading, if any."""
        indices = next(self.indices, END)
        if indices is END:
            return
        for _ in range(len(self.reading)):
            worker = next(self.turns)
            if self.reading[worker]:
                break
        else:
            return  # every stream has run out
        self.pool.index_queues[worker].put((self.next_in, indices))
        self.sent_to[self.next_in] = worker
        self.next_in += 1

    def __del__(self) -> None:
        if not self.persistent:  # an epoch left before its end: its workers are not needed
            self.pool.shutdown()

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

The worker's side (its loop, its seeding, its messages) is ``nograd.data.worker_process``;
this module is the main process's side.

Errors: an exception in a worker is raised again in the main process, with the
worker's traceback in its message, when its batch's turn comes. A worker that dies
(killed, out of memory) is a ``RuntimeError`` there instead of a hang, and so is a
batch that takes longer than ``timeout`` seconds. Ctrl-C reaches the main process
only: the workers ignore it, so that ``fit`` can save a checkpoint at the next step.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import time
from collections.abc import Iterator
from multiprocessing.connection import wait as wait_for_any
from multiprocessing.context import BaseContext
from typing import Any

from nograd.data.fetch import END
from nograd.data.pin_memory import pin_memory
from nograd.data.worker_process import (
    POLL_SECONDS,
    Failure,
    RanOut,
    Restart,
    WorkerSpec,
    worker_loop,
)

DYING_SECONDS = 1.0  # how long a worker may take to end once its sockets have closed


# The queues of the pools not shut down yet, held here so that they outlive their pool.
# A pool dropped inside a reference cycle (an epoch kept by the traceback of an error it
# raised, say) is freed by the garbage collector, which runs the queues' finalizers
# before the pool's __del__: they stop each queue's thread that sends what is put on it,
# so the None that tells the workers to stop would never leave, and shutdown would wait
# POLL_SECONDS for every worker before terminating it.
_open_queues: dict[int, list[Any]] = {}


def check_worker_options(
    num_workers: int, timeout: float, prefetch_factor: int | None, persistent: bool
) -> None:
    """Refuse the worker options torch refuses, when the loader is made (torch
    refuses a few only at ``iter()``: a timeout without workers, prefetch_factor=0)."""
    if not isinstance(num_workers, int) or isinstance(num_workers, bool):
        kind = type(num_workers).__name__
        raise TypeError(f"DataLoader: expected an integer num_workers, got {kind}")
    if num_workers < 0:
        raise ValueError(
            f"DataLoader: expected num_workers >= 0 (0 reads the batches in this "
            f"process), got {num_workers}"
        )
    if timeout < 0:
        raise ValueError(f"DataLoader: expected timeout >= 0, got {timeout}")
    if timeout > 0 and num_workers == 0:
        raise ValueError(
            "DataLoader: timeout needs worker processes (num_workers > 0): it bounds "
            "the wait for a worker's batch"
        )
    if num_workers == 0 and prefetch_factor is not None:
        raise ValueError(
            "DataLoader: prefetch_factor needs worker processes (num_workers > 0); "
            "leave it None with num_workers=0"
        )
    if prefetch_factor is not None and prefetch_factor < 1:
        raise ValueError(f"DataLoader: expected prefetch_factor >= 1, got {prefetch_factor}")
    if persistent and num_workers == 0:
        raise ValueError("DataLoader: persistent_workers=True needs num_workers > 0")


def worker_context(context: str | BaseContext | None, num_workers: int) -> BaseContext:
    """The ``multiprocessing`` context that starts the workers: the platform's default
    (fork on Linux), or one named ("spawn", "forkserver", ...) or given."""
    if context is None:
        return multiprocessing.get_context()
    if num_workers == 0:
        raise ValueError(
            "DataLoader: multiprocessing_context needs worker processes (num_workers > 0)"
        )
    if isinstance(context, str):
        if context not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"DataLoader: multiprocessing_context must be one of "
                f"{multiprocessing.get_all_start_methods()}, got {context!r}"
            )
        return multiprocessing.get_context(context)
    if not isinstance(context, BaseContext):
        raise TypeError(
            f"DataLoader: expected multiprocessing_context to be a start method's name or a "
            f"multiprocessing context, got {type(context).__name__}"
        )
    return context


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
        self.prefetch_factor, self.timeout = prefetch_factor, timeout
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

    def epoch(
        self, indices: Iterator[Any], pin: bool, persistent: bool, in_order: bool = True
    ) -> WorkerEpoch:
        """An epoch over the sampler's ``indices``; the workers start reading at once."""
        if self.epochs > 0:
            self._restart()
        self.epochs += 1
        return WorkerEpoch(self, indices, pin, persistent, in_order)

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

    With ``in_order=False`` a batch is handed out as soon as it comes, and a batch goes
    to the next worker in turn that has fewer than its share of the batches under way
    (``prefetch_factor * k`` over the workers still reading), so that a slow worker
    does not gather the work, as torch's does.
    """

    def __init__(
        self,
        pool: WorkerPool,
        indices: Iterator[Any],
        pin: bool,
        persistent: bool,
        in_order: bool = True,
    ) -> None:
        self.pool, self.indices, self.pin, self.persistent = pool, indices, pin, persistent
        self.in_order = in_order
        self.epoch = pool.epochs  # a later epoch of persistent workers ends this one
        self.turns = itertools.cycle(range(len(pool.processes)))
        self.reading = [True] * len(pool.processes)  # False: its stream has run out
        self.under_way = [0] * len(pool.processes)  # each worker's batches not handed out
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
            # Batches sent to a worker whose stream has since run out will not come,
            # and out of order, some were handed out before their turn
            while (
                self.next_out < self.next_in
                and self.next_out not in self.arrived
                and not (
                    self.next_out in self.sent_to and self.reading[self.sent_to[self.next_out]]
                )
            ):
                self.sent_to.pop(self.next_out, None)
                self.next_out += 1
            if self.next_out == self.next_in:  # nothing under way: the epoch is over
                if not self.persistent:
                    pool.shutdown()
                raise StopIteration
            if self.next_out in self.arrived:
                data = self.arrived.pop(self.next_out)
                self.next_out += 1
                return self._hand_out(self.next_out - 1, data)
            number, data = pool.receive()
            if isinstance(data, RanOut):
                self.reading[data.worker_id] = False
                self._send_next()  # to a worker still reading, if any
            elif not self.in_order:  # its turn or not, it goes out now
                return self._hand_out(number, data)
            else:
                self.arrived[number] = data

    def _hand_out(self, number: int, data: Any) -> Any:
        """Batch ``number``, pinned if asked, or its worker's error raised; first, the
        next batch's indices go out, to keep prefetch_factor * k batches under way."""
        self.under_way[self.sent_to.pop(number)] -= 1
        self._send_next()
        if isinstance(data, Failure):
            data.raise_again()
        return pin_memory(data) if self.pin else data

    def _send_next(self) -> None:
        """Send the sampler's next indices to the next worker still reading, if any."""
        indices = next(self.indices, END)
        if indices is END:
            return
        share = self.pool.prefetch_factor * len(self.reading) // max(sum(self.reading), 1)
        for _ in range(len(self.reading)):
            worker = next(self.turns)
            if self.reading[worker] and (self.in_order or self.under_way[worker] < share):
                break
        else:
            return  # every stream has run out (or, out of order, every worker is busy)
        self.pool.index_queues[worker].put((self.next_in, indices))
        self.sent_to[self.next_in] = worker
        self.under_way[worker] += 1
        self.next_in += 1

    def __del__(self) -> None:
        if not self.persistent:  # an epoch left before its end: its workers are not needed
            self.pool.shutdown()

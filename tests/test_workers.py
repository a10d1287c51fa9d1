"""DataLoader's worker processes, pin_memory and IterableDataset, against torch's DataLoader.

torch's loader is the oracle: the same dataset read by both, from the same seeds, must
give the same batches, the same random numbers drawn inside the workers (torch's,
Python's and numpy's generators, which each worker seeds from ``base_seed + id``), and
the same random numbers in the main process afterwards. The datasets are module-level
classes so that ``spawn`` can pickle them, and small: each loader forks its workers
(about 50 ms), torch's as nograd's.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import signal
import time
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy.random as np_random  # before any fork (numpy 2 imports it lazily, see below)
import pytest
import torch
import torch.utils.data as tud
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data._utils.pin_memory import pin_memory as torch_pin_memory

import nograd.data.workers as workers_module
from nograd.data import DataLoader
from nograd.data.iterable import IterableDataset
from nograd.data.pin_memory import pin_memory
from nograd.data.worker_process import get_worker_info
from nograd.data.workers import WorkerEpoch, WorkerPool

# numpy.random is imported here, in the main process, and not in each forked worker at
# its first draw: here torch's workers sometimes died of that import (a KeyError in
# importlib's module locks, copied by the fork).

# torch warns when num_workers exceeds the CPU count (3 workers on CI's 2 cores); nograd
# does not, and the warning says nothing about what these tests compare.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def worker_info() -> Any:
    """The WorkerInfo of the loader whose worker runs this, nograd's or torch's (both
    read these datasets); None in the main process."""
    return get_worker_info() or tud.get_worker_info()


def plain(data: Any) -> Any:
    """``data`` as nested lists, dicts and numbers, compared with ==: a tensor is its dtype,
    shape and values; a tuple is a list (nograd's default_collate keeps a batch of tuples
    a tuple where torch's makes it a list: the one collation difference nograd keeps)."""
    if isinstance(data, torch.Tensor):
        return (str(data.dtype), tuple(data.shape), data.tolist())
    if isinstance(data, Mapping):
        return {key: plain(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain(item) for item in data]
    return data


def run_epochs(make_loader: Callable[[], Any], epochs: int = 3) -> tuple[list[Any], list[float]]:
    """Every batch of ``epochs`` epochs, from global seed 0, and what torch's global
    generator draws after them (the loader draws its workers' base seed from it)."""
    torch.manual_seed(0)
    random.seed(0)  # read by the main process without workers
    np_random.seed(0)
    loader = make_loader()
    seen = [[plain(batch) for batch in loader] for _ in range(epochs)]
    return seen, torch.rand(3).tolist()


def pool_of(epoch: Iterator[Any]) -> WorkerPool:
    """The worker processes reading ``epoch`` (an ``iter(loader)`` with num_workers > 0)."""
    assert isinstance(epoch, WorkerEpoch)
    return epoch.pool


def close(epoch: Iterator[Any]) -> None:
    """Stop an epoch's workers now. An epoch dropped after an error it raised sits in a
    reference cycle (through the error's traceback) until the garbage collector frees
    it, and torch's then waits 5 s for each of its workers (the collector has closed
    its queues first; nograd's pool keeps them open: ``workers._open_queues``)."""
    if isinstance(epoch, WorkerEpoch):
        epoch.pool.shutdown()
    else:
        epoch._shutdown_workers()  # type: ignore[attr-defined]


def keep_samples(samples: list[Any]) -> list[Any]:
    """A collate_fn that hands out the list of samples as it is."""
    return samples


# --------------------------------------------------------------------- the datasets
class Noisy:
    """Sample i: i, and the random numbers the process that reads it draws from torch's,
    Python's and numpy's global generators, with that worker's id (-1: the main one)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = worker_info()
        return {
            "index": index,
            "torch": torch.rand(2),
            "random": random.random(),
            "numpy": float(np_random.rand()),
            "worker": -1 if info is None else info.id,
        }


class Introspective:
    """Sample i: (i, then what ``get_worker_info()`` says where it is read: id,
    num_workers, seed, whether its dataset is this very object, and the process id);
    (i, None) in the main process."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.read_here = False

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        self.read_here = True  # in a worker, only its copy learns it
        info = worker_info()
        if info is None:
            return (index, None)
        return (index, info.id, info.num_workers, info.seed, info.dataset is self, os.getpid())


INIT_CALLS: list[int] = []  # in a worker process: the ids its worker_init_fn was called with


def record_init(worker_id: int) -> None:
    INIT_CALLS.append(worker_id)


def reseed_numpy(worker_id: int) -> None:
    """A worker_init_fn as users write them: its own numpy seed per worker."""
    np_random.seed(1000 + worker_id)


def failing_init(worker_id: int) -> None:
    raise OSError(f"cannot open shard {worker_id}")


class InitSeen:
    """Sample i: (i, the id of the worker reading it, the ids its worker_init_fn got)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[int, int, list[int]]:
        return index, worker_info().id, list(INIT_CALLS)


def torch_and_indices(samples: list[dict[str, Any]]) -> tuple[torch.Tensor, list[int]]:
    """A collate_fn of the user's: the stacked torch draws and the list of indices."""
    return torch.stack([sample["torch"] for sample in samples]), [s["index"] for s in samples]


class NeedsTwo(Exception):
    """An exception type that cannot be built from one string (its message)."""

    def __init__(self, what: str, index: int) -> None:
        super().__init__(f"{what} {index}")


class Broken:
    """Sample 3 cannot be read: ``error`` (ValueError, KeyError or NeedsTwo) says so."""

    def __init__(self, error: type[Exception] = ValueError) -> None:
        self.error = error

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 3 and self.error is NeedsTwo:
            raise NeedsTwo("no sample", index)
        if index == 3:
            raise self.error(f"no sample {index}")
        return torch.tensor(index)


class Doomed:
    """Reading sample 2 in a worker kills that worker with SIGKILL (as the out-of-memory
    killer would), ``delay`` seconds after it starts on it."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 2 and worker_info() is not None:  # never the test's own process
            time.sleep(self.delay)
            os.kill(os.getpid(), signal.SIGKILL)
        return torch.tensor([index])


class Slow:
    """Sample 0 takes ``seconds`` to read in a worker (a network share, say)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 0 and worker_info() is not None:
            time.sleep(self.seconds)
        return torch.tensor([index])


@pytest.fixture
def quick_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check for dead workers every 50 ms instead of every 5 s, so that a test of a
    killed worker takes a fraction of a second."""
    monkeypatch.setattr(workers_module, "POLL_SECONDS", 0.05)


# ------------------------------------------------------------ parity with torch
PARITY_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "shuffle, generator": lambda: {
        "batch_size": 3, "shuffle": True, "num_workers": 2, "generator": seeded(5)
    },
    "shuffle, global generator": lambda: {"batch_size": 3, "shuffle": True, "num_workers": 2},
    "one worker": lambda: {"batch_size": 3, "shuffle": True, "num_workers": 1},
    "three workers": lambda: {
        "batch_size": 2, "shuffle": True, "num_workers": 3, "generator": seeded(6)
    },
    "in order": lambda: {"batch_size": 4, "num_workers": 2},
    "sampler, generator": lambda: {
        "batch_size": 3,
        "num_workers": 2,
        "sampler": tud.RandomSampler(range(13), True, num_samples=17, generator=seeded(2)),
    },
    "sampler, global generator": lambda: {
        "batch_size": 3, "num_workers": 3, "sampler": tud.RandomSampler(range(13))
    },
    "batch_sampler": lambda: {"batch_sampler": [[3, 1], [0], [12, 2, 4], [7, 7]], "num_workers": 2},
    "batch_sampler, shuffled": lambda: {
        "batch_sampler": tud.BatchSampler(tud.RandomSampler(range(13)), 4, False),
        "num_workers": 2,
    },
    "no batching": lambda: {
        "batch_size": None, "shuffle": True, "num_workers": 2, "generator": seeded(5)
    },
    "collate_fn": lambda: {
        "batch_size": 3, "shuffle": True, "num_workers": 2, "collate_fn": torch_and_indices
    },
    "drop_last": lambda: {"batch_size": 4, "shuffle": True, "drop_last": True, "num_workers": 2},
    "prefetch_factor 1": lambda: {
        "batch_size": 2, "shuffle": True, "num_workers": 2, "prefetch_factor": 1
    },
    "prefetch_factor 3": lambda: {
        "batch_size": 2, "shuffle": True, "num_workers": 3, "prefetch_factor": 3
    },
    "persistent": lambda: {
        "batch_size": 3, "shuffle": True, "num_workers": 2, "persistent_workers": True
    },
    "persistent, generator": lambda: {
        "batch_size": 2,
        "shuffle": True,
        "num_workers": 3,
        "persistent_workers": True,
        "generator": seeded(9),
    },
    "worker_init_fn": lambda: {
        "batch_size": 3, "shuffle": True, "num_workers": 2, "worker_init_fn": reseed_numpy
    },
    "timeout": lambda: {"batch_size": 3, "num_workers": 2, "timeout": 60.0},
}  # fmt: skip


@pytest.mark.parametrize("case", PARITY_CASES)
def test_workers_read_and_draw_as_torchs(case: str) -> None:
    """Three epochs of a dataset that draws random numbers as it reads: the same batches
    as torch's loader (so the same worker reads each, from the same seeds) and the same
    global random numbers afterwards (so the base seeds came from the same draws)."""
    options = PARITY_CASES[case]
    ours = run_epochs(lambda: DataLoader(Noisy(13), **options()))
    theirs = run_epochs(lambda: tud.DataLoader(Noisy(13), **options()))
    assert ours == theirs
    workers = {sample for epoch in ours[0] for batch in epoch for sample in plain_workers(batch)}
    assert -1 not in workers  # every batch was read in a worker


def plain_workers(batch: Any) -> list[int]:
    """The worker ids in a plain batch of ``Noisy`` samples (none under a collate_fn
    that drops them)."""
    if isinstance(batch, dict):
        workers = batch["worker"]
        return workers[2] if isinstance(workers, tuple) else [workers]
    return []


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 9),
    num_workers=st.integers(1, 3),
    batch_size=st.integers(1, 4),
    drop_last=st.booleans(),
    prefetch_factor=st.integers(1, 3),
    shuffle=st.booleans(),
    persistent=st.booleans(),
)
def test_any_worker_setup_reads_and_draws_as_torchs(
    n: int,
    num_workers: int,
    batch_size: int,
    drop_last: bool,
    prefetch_factor: int,
    shuffle: bool,
    persistent: bool,
) -> None:
    """The parity above over random setups: more workers than batches, batches smaller
    than a worker's prefetch, a last batch dropped, ..."""
    options = {
        "batch_size": batch_size,
        "shuffle": shuffle,
        "drop_last": drop_last,
        "num_workers": num_workers,
        "prefetch_factor": prefetch_factor,
        "persistent_workers": persistent,
    }
    ours = run_epochs(lambda: DataLoader(Noisy(n), **options), epochs=2)
    theirs = run_epochs(lambda: tud.DataLoader(Noisy(n), **options), epochs=2)
    assert ours == theirs


@pytest.mark.parametrize("persistent", [False, True])
def test_an_epoch_left_half_way_then_a_new_one_draws_as_torchs(persistent: bool) -> None:
    """Two batches of an epoch, then two whole epochs: the batches already sent to the
    workers for the first epoch are read all the same (their draws move the workers'
    generators on, persistent ones included), and then thrown away."""

    def run(make: Callable[..., Any]) -> tuple[list[Any], list[float]]:
        torch.manual_seed(0)
        loader = make(Noisy(13), 2, True, num_workers=2, persistent_workers=persistent)
        first = iter(loader)
        seen = [plain(next(first)) for _ in range(2)]
        seen += [plain(batch) for _ in range(2) for batch in loader]
        return seen, torch.rand(3).tolist()

    assert run(DataLoader) == run(tud.DataLoader)


def test_two_epochs_at_once_draw_as_torchs() -> None:
    """zip(loader, loader): two sets of workers at once, each from its own base seed."""

    def run(make: Callable[..., Any]) -> tuple[list[Any], list[float]]:
        torch.manual_seed(0)
        loader = make(Noisy(9), 2, True, num_workers=2)
        seen = [plain(pair) for pair in zip(loader, loader, strict=True)]
        return seen, torch.rand(3).tolist()

    assert run(DataLoader) == run(tud.DataLoader)


def test_get_worker_info_in_the_workers_and_none_in_the_main_process() -> None:
    """Each worker sees its id (batch t goes to worker t mod k), num_workers, the seed
    base_seed + id (base_seed: the loader's generator's first int64) and its own copy
    of the dataset; the main process sees None, also while reading without workers."""
    assert get_worker_info() is None
    dataset = Introspective(9)
    loader = DataLoader(dataset, 2, num_workers=3, collate_fn=keep_samples, generator=seeded(4))
    batches = list(loader)
    base_seed = int(torch.empty((), dtype=torch.int64).random_(generator=seeded(4)))
    for t, batch in enumerate(batches):
        for _, worker, num_workers, seed, own_copy, pid in batch:
            assert (worker, num_workers, seed) == (t % 3, 3, base_seed + t % 3)
            assert own_copy and pid != os.getpid()
    assert not dataset.read_here  # what a worker does to its copy stays there
    assert get_worker_info() is None
    torchs = tud.DataLoader(
        Introspective(9), 2, num_workers=3, collate_fn=keep_samples, generator=seeded(4)
    )
    assert [[s[:5] for s in b] for b in batches] == [[s[:5] for s in b] for b in torchs]
    in_main = list(DataLoader(dataset, 2, collate_fn=keep_samples))
    assert [sample for batch in in_main for sample in batch] == [(i, None) for i in range(9)]


@pytest.mark.parametrize("persistent", [False, True])
def test_worker_init_fn_is_called_once_in_each_worker_with_its_id(persistent: bool) -> None:
    """After the worker's seeding (test_workers_read_and_draw_as_torchs' worker_init_fn
    case) and before its first sample; persistent workers are not initialised again at
    the next epoch, as torch's are not."""
    loader = DataLoader(InitSeen(), 1, num_workers=3, collate_fn=keep_samples,
                        worker_init_fn=record_init, persistent_workers=persistent)  # fmt: skip
    for _ in range(2):
        samples = [sample for batch in loader for sample in batch]
        assert {worker for _, worker, _ in samples} == {0, 1, 2}
        for _, worker, calls in samples:
            assert calls == [worker]
    assert INIT_CALLS == []  # called in the workers only


@pytest.mark.parametrize("persistent", [False, True])
def test_persistent_workers_serve_every_epoch(persistent: bool) -> None:
    """persistent_workers keeps the same processes from epoch to epoch; without it each
    epoch starts new ones."""
    loader = DataLoader(
        Introspective(6), 2, num_workers=2, collate_fn=keep_samples, persistent_workers=persistent
    )
    pids = [{sample[5] for batch in loader for sample in batch} for _ in range(2)]
    assert len(pids[0]) == 2 and os.getpid() not in pids[0]
    assert pids[0] == pids[1] if persistent else not pids[0] & pids[1]


def test_prefetch_factor_bounds_the_batches_under_way() -> None:
    """iter() sends prefetch_factor * num_workers batches' indices at once, and each
    batch handed out sends one more: the sampler is read that far ahead, as torch's."""
    for make in (DataLoader, tud.DataLoader):
        read: list[int] = []

        def sampler(log: list[int] = read) -> Iterator[int]:
            for index in range(12):
                log.append(index)
                yield index

        loader = make(Noisy(12), 1, sampler=sampler(), num_workers=2, prefetch_factor=3)
        epoch = iter(loader)
        assert len(read) == 6
        next(epoch)
        assert len(read) == 7
        del epoch


# ------------------------------------------------------------------ IterableDataset
class Stream:
    """(i, a random number drawn where i is read) for i in range(n), split between the
    workers with get_worker_info() (worker w yields every k-th from the w-th) unless
    ``sharded`` is False (each worker yields them all, as in torch). ``uneven`` runs
    worker w's share 3*w samples further, so that worker 0 runs out first."""

    def __init__(self, n: int, sharded: bool = True, uneven: bool = False) -> None:
        self.n, self.sharded, self.uneven = n, sharded, uneven

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = worker_info()
        first, step = (0, 1) if info is None or not self.sharded else (info.id, info.num_workers)
        stop = self.n + 3 * first if self.uneven else self.n
        for i in range(first, stop, step):
            yield torch.tensor(i), torch.rand(1)


class OurStream(Stream, IterableDataset[Any]):
    """A stream written for nograd."""


class TorchStream(Stream, tud.IterableDataset[Any]):
    """A stream written for torch's DataLoader, which nograd's reads too."""


class SizedStream(OurStream):
    def __len__(self) -> int:
        return self.n


class SizedTorchStream(TorchStream):
    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("stream", [OurStream, TorchStream])
@pytest.mark.parametrize(
    ("num_workers", "sharded", "uneven", "batch_size", "drop_last", "persistent"),
    [
        (0, True, False, 3, False, False),
        (0, True, False, None, False, False),
        (1, True, False, 3, False, False),
        (2, True, False, 3, False, False),
        (2, False, False, 3, False, False),  # every worker yields the whole stream
        (2, False, False, 4, True, False),
        (3, True, True, 2, False, False),  # worker 0 runs out first, then 1
        (3, True, True, 2, True, False),
        (2, True, True, None, False, False),
        (3, True, True, 2, False, True),  # the streams start over at each epoch
        (2, False, False, 3, True, True),
    ],
)
def test_iterable_dataset_batches_as_torchs(
    stream: type[Stream],
    num_workers: int,
    sharded: bool,
    uneven: bool,
    batch_size: int | None,
    drop_last: bool,
    persistent: bool,
) -> None:
    """The batches of each worker's stream in turn, skipping the workers that have run
    out, each with the samples' draws, then torch's global draws: as torch's loader."""
    options = {"num_workers": num_workers, "persistent_workers": persistent, "drop_last": drop_last}
    if num_workers > 0:  # a batch lost between the streams fails instead of hanging
        options["timeout"] = 20.0
    ours = run_epochs(
        lambda: DataLoader(stream(10, sharded, uneven), batch_size, **options), epochs=2
    )
    theirs = run_epochs(
        lambda: tud.DataLoader(TorchStream(10, sharded, uneven), batch_size, **options), epochs=2
    )
    assert ours == theirs
    assert ours[0][0]  # not two empty epochs


def test_len_of_an_iterable_loader_comes_from_the_dataset() -> None:
    """ceil(len / batch_size) batches, floor with drop_last, len samples without
    batching; a stream without __len__ makes a loader without one (TypeError)."""
    for batch_size, drop_last, expected in [(3, False, 4), (3, True, 3), (None, False, 10)]:
        ours = DataLoader(SizedStream(10), batch_size, drop_last=drop_last)
        theirs = tud.DataLoader(SizedTorchStream(10), batch_size, drop_last=drop_last)
        assert len(ours) == len(theirs) == expected
    assert len(DataLoader(SizedTorchStream(10), 5)) == 2
    with pytest.raises(TypeError):
        len(DataLoader(OurStream(10), 3))
    with pytest.raises(TypeError):
        len(tud.DataLoader(TorchStream(10), 3))


def test_the_repr_of_a_loader_over_a_stream_without_length_says_so() -> None:
    """A repr must not raise (a debugger or an error message shows it): n=? for a
    stream that does not say how long it is, its length for one that does."""
    assert repr(DataLoader(OurStream(10), 3)) == (
        "DataLoader(n=?, batch_size=3, shuffle=False, drop_last=False)"
    )
    assert repr(DataLoader(TorchStream(10), None)) == (
        "DataLoader(n=?, batch_size=None, shuffle=False)"
    )
    assert repr(DataLoader(SizedStream(10), 3, drop_last=True)) == (
        "DataLoader(n=10, batch_size=3, shuffle=False, drop_last=True)"
    )


@pytest.mark.parametrize(
    "option", [{"shuffle": True}, {"sampler": [0, 1]}, {"batch_sampler": [[0, 1]]}]
)
def test_an_iterable_dataset_refuses_an_order_of_its_own(option: dict[str, Any]) -> None:
    """The stream decides the order: shuffle, sampler and batch_sampler are refused
    (ValueError, as torch's); shuffle=False is no order and is taken."""
    for stream in (OurStream(4), TorchStream(4)):
        with pytest.raises(ValueError, match="IterableDataset"):
            DataLoader(stream, **option)
    with pytest.raises(ValueError):
        tud.DataLoader(TorchStream(4), **option)
    assert len(list(DataLoader(OurStream(4), 2, shuffle=False))) == 2


# -------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("raised", "error"), [(ValueError, ValueError), (KeyError, KeyError), (NeedsTwo, RuntimeError)]
)
def test_an_error_in_a_worker_is_raised_in_the_main_process(
    raised: type[Exception], error: type[Exception]
) -> None:
    """At its batch's turn, after the batches before it: the worker's exception type
    (RuntimeError where that type cannot be built from one string), with the worker's
    traceback in the message, on its lines (a KeyError's too, whose str() is the repr
    of its message), as torch raises it."""
    for make in (DataLoader, tud.DataLoader):
        seen = []
        epoch = iter(make(Broken(raised), batch_size=1, num_workers=2))
        with pytest.raises(error) as caught:
            for batch in epoch:
                seen.append(batch.tolist())
        close(epoch)
        assert type(caught.value) is error
        assert seen == [[0], [1], [2]]
        message = str(caught.value)
        assert "in DataLoader worker process 1" in message  # batch 3 went to worker 1
        assert "Traceback" in message and "__getitem__" in message and "no sample 3" in message
        assert "\nOriginal Traceback (most recent call last):\n" in message


def test_an_error_in_worker_init_fn_is_raised_at_the_first_batch() -> None:
    """A worker whose worker_init_fn failed answers its first batch with that error
    (the worker's type and traceback), as torch's does, instead of reading on."""
    for make in (DataLoader, tud.DataLoader):
        epoch = iter(make(Noisy(4), num_workers=2, worker_init_fn=failing_init))
        with pytest.raises(OSError, match=r"(?s)in DataLoader worker process 0.*shard 0"):
            next(epoch)
        close(epoch)


@pytest.mark.usefixtures("quick_poll")
def test_a_worker_killed_while_reading_is_an_error_not_a_hang() -> None:
    """A worker that dies (SIGKILL, from the kernel's out-of-memory killer, say) never
    sends its batch: the main process notices that it is gone, names its pid and stops
    waiting."""
    with pytest.raises(
        RuntimeError, match=r"DataLoader worker \(pid\(s\) \d+\) exited unexpectedly"
    ):
        list(DataLoader(Doomed(delay=0.0), batch_size=1, num_workers=2))


@pytest.mark.usefixtures("quick_poll")
def test_a_batch_left_by_a_worker_that_died_since_is_an_error() -> None:
    """A batch's tensors travel as file descriptors that the main process fetches from
    the worker that sent them as it unpickles the batch: one sent by a worker dead since
    cannot be read (ConnectionRefusedError). That is the dead worker's RuntimeError, as
    in torch. Worker 0 sends batch 0, then dies on sample 2 before the main process
    reads anything."""
    epoch = iter(DataLoader(Doomed(delay=0.3), batch_size=1, num_workers=2))
    doomed = pool_of(epoch).processes[0]
    doomed.join(timeout=30)
    assert not doomed.is_alive()
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(epoch)


@pytest.mark.usefixtures("quick_poll")
def test_a_worker_killed_from_outside_is_an_error_not_a_hang() -> None:
    """Worker 0 is killed (by someone, the kernel say) while it reads batch 0, a slow
    one: the epoch ends with an error instead of waiting for that batch for ever."""
    epoch = iter(DataLoader(Slow(30.0), batch_size=1, num_workers=2))
    pool_of(epoch).processes[0].kill()
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(epoch)


def test_a_batch_slower_than_timeout_is_an_error() -> None:
    """A live worker that takes longer than ``timeout`` seconds over a batch: torch's
    RuntimeError, word for word."""
    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 0\.2 seconds"):
        next(iter(DataLoader(Slow(1.0), num_workers=1, timeout=0.2)))


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"num_workers": -1}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"prefetch_factor": 2}, ValueError),  # without workers
        ({"num_workers": 1, "prefetch_factor": -1}, ValueError),
        ({"persistent_workers": True}, ValueError),  # without workers
        ({"multiprocessing_context": "fork"}, ValueError),  # without workers
        ({"multiprocessing_context": multiprocessing.get_context("fork")}, ValueError),
        ({"num_workers": 1, "multiprocessing_context": "nope"}, ValueError),
        ({"num_workers": 1, "multiprocessing_context": 3}, TypeError),
    ],
    ids=[
        "negative num_workers",
        "negative timeout",
        "prefetch_factor without workers",
        "negative prefetch_factor",
        "persistent without workers",
        "context without workers",
        "context object without workers",
        "unknown start method",
        "context of a wrong type",
    ],
)
def test_worker_argument_errors_as_torchs(options: dict[str, Any], error: type[Exception]) -> None:
    """The worker options torch refuses, nograd refuses with the same exception type,
    when the loader is made, with a message that names DataLoader."""
    data = [torch.tensor(float(i)) for i in range(4)]
    with pytest.raises(error):
        tud.DataLoader(data, **options)
    with pytest.raises(error, match="DataLoader: "):
        DataLoader(data, **options)


@pytest.mark.parametrize("num_workers", [True, 1.0])
def test_a_bool_or_a_float_is_no_number_of_workers(num_workers: Any) -> None:
    """torch refuses num_workers=1.0 with a TypeError and reads True as one worker;
    nograd refuses both with a TypeError, as it refuses a bool batch_size (a flag
    passed at the wrong position, most likely)."""
    with pytest.raises(TypeError, match="expected an integer num_workers"):
        DataLoader([torch.zeros(1)], num_workers=num_workers)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # torch's
@pytest.mark.parametrize(  # iterator, refused half-made, fails again in its __del__
    "options", [{"num_workers": 1, "prefetch_factor": 0}, {"num_workers": 0, "timeout": 1.0}]
)
def test_options_torch_refuses_at_iter_are_refused_when_the_loader_is_made(
    options: dict[str, Any],
) -> None:
    """torch asserts at iter() that prefetch_factor > 0 with workers and that there are
    workers for a timeout; nograd refuses both up front, with a ValueError."""
    data = [torch.tensor(float(i)) for i in range(4)]
    with pytest.raises(AssertionError):
        iter(tud.DataLoader(data, **options))
    with pytest.raises(ValueError, match="DataLoader: "):
        DataLoader(data, **options)


# ------------------------------------------------------------------------- in_order
@pytest.mark.parametrize("library", ["nograd", "torch"])
def test_out_of_order_a_slow_batch_holds_up_no_other(library: str) -> None:
    """With in_order=False the batches come as the workers finish them: sample 0, slow
    to read, comes after the others (in both libraries), and the epoch holds the same
    batches; in order it comes first."""
    cls: Any = DataLoader if library == "nograd" else tud.DataLoader
    out_of_order = [int(b) for b in cls(Slow(0.5), num_workers=2, in_order=False)]
    assert out_of_order[0] != 0 and sorted(out_of_order) == [0, 1, 2, 3]
    assert [int(b) for b in cls(Slow(0.5), num_workers=2)] == [0, 1, 2, 3]


def test_out_of_order_means_nothing_without_workers() -> None:
    """The main process reads the batches in turn: in_order=False changes nothing, as in
    torch; and in_order is keyword-only, as in torch."""
    assert [int(b) for b in DataLoader(Slow(0.0), in_order=False)] == [0, 1, 2, 3]
    with pytest.raises(TypeError):
        DataLoader(Slow(0.0), 1, False, None, None, 0, None, False, False, 0, None, None, None,
                   None, False, False)  # type: ignore[call-overload]  # fmt: skip


# ------------------------------------------------------------------------- clean-up
def alive(processes: Sequence[Any]) -> list[Any]:
    """Those of ``processes`` still running, as seen by the process and by
    multiprocessing's list of this process's children."""
    children = set(multiprocessing.active_children())
    return [process for process in processes if process.is_alive() or process in children]


def stopped_when_asked(processes: Sequence[Any]) -> bool:
    """Whether every one of ``processes`` has ended, each of its own accord when told to
    (exit code 0), not terminated after it failed to (-SIGTERM)."""
    return not alive(processes) and all(process.exitcode == 0 for process in processes)


def test_workers_stop_at_the_end_of_an_epoch() -> None:
    """Workers that are not persistent are not needed once their epoch has run out:
    they are told to stop, and do, before the last next() returns."""
    epoch = iter(DataLoader(Noisy(6), 2, num_workers=2))
    processes = list(pool_of(epoch).processes)
    assert len(alive(processes)) == 2
    list(epoch)
    assert stopped_when_asked(processes)


@pytest.mark.parametrize("how", ["left", "error"])
def test_workers_stop_when_an_unfinished_epoch_is_dropped(how: str) -> None:
    """An epoch left after one batch, or ended by an error, stops its workers once
    nothing refers to it any more. After an error the epoch sits in a reference cycle
    (through the traceback) that only the garbage collector frees, closing the pool's
    queues before the pool itself unless the pool holds them open: then the workers
    never hear that they should stop, and are terminated 5 s later each."""
    epoch = iter(DataLoader(Broken(), 1, num_workers=2))
    processes = list(pool_of(epoch).processes)
    if how == "left":
        next(epoch)
        assert len(alive(processes)) == 2
    else:
        with pytest.raises(ValueError):
            list(epoch)
    del epoch
    gc.collect()
    assert stopped_when_asked(processes)


def test_persistent_workers_stop_with_their_loader() -> None:
    """Persistent workers wait between epochs, and stop when the loader is dropped
    (not only when the main process ends)."""
    loader = DataLoader(Noisy(6), 2, num_workers=2, persistent_workers=True)
    for _ in range(2):
        list(loader)
    assert loader._workers is not None
    processes = list(loader._workers.processes)
    assert len(alive(processes)) == 2  # waiting for the next epoch
    del loader
    gc.collect()
    assert stopped_when_asked(processes)


class Collecting:
    """Sample i: i, read after a run of the garbage collector in the reading process."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        gc.collect()
        return torch.tensor(index)


def test_a_worker_leaves_alone_the_workers_it_inherited() -> None:
    """A forked worker holds a copy of all the main process's objects, its garbage too:
    here an epoch dropped inside a reference cycle, not freed yet. When the worker's
    garbage collector frees that copy, its __del__ must not stop the epoch's workers
    (they are the main process's to stop, which it does at its own collection)."""
    gc.disable()  # the dropped epoch waits for the main process's collection
    try:
        old = iter(DataLoader(Noisy(4), 1, num_workers=2))
        old_processes = list(pool_of(old).processes)
        cycle: list[Any] = [old]
        cycle.append(cycle)
        del old, cycle
        read = [batch.tolist() for batch in DataLoader(Collecting(), 1, num_workers=1)]
        assert read == [[0], [1]]
        old_processes[0].join(timeout=0.5)  # the time to hear a stop, had one been sent
        assert len(alive(old_processes)) == 2
    finally:
        gc.enable()
    gc.collect()
    assert stopped_when_asked(old_processes)


def test_spawned_workers_read_what_forked_ones_read() -> None:
    """spawn pickles the dataset and the options into fresh interpreters; their seeds
    are the same, so the batches and the draws in them are the forked workers'."""

    def epoch(context: str) -> tuple[list[Any], list[float]]:
        return run_epochs(
            lambda: DataLoader(Noisy(5), 2, True, num_workers=2, multiprocessing_context=context),
            epochs=1,
        )

    spawned = epoch("spawn")
    assert spawned == epoch("fork")
    assert {worker for batch in spawned[0][0] for worker in batch["worker"][2]} == {0, 1}


# ----------------------------------------------------------------------- pin_memory
class Point(NamedTuple):
    x: torch.Tensor
    label: int


class OwnPinning:
    """An object of the user's that knows how to pin itself."""

    def pin_memory(self) -> str:
        return "pinned by its own method"


class Pair(list[Any]):
    """A list whose constructor takes its two items, not an iterable of them."""

    def __init__(self, first: Any, second: Any) -> None:
        super().__init__([first, second])


class FixedMapping(Mapping[str, Any]):
    """A mapping that cannot be built from a dict (its constructor takes two values)."""

    def __init__(self, a: Any, b: Any) -> None:
        self.items_ = {"a": a, "b": b}

    def __getitem__(self, key: str) -> Any:
        return self.items_[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.items_)

    def __len__(self) -> int:
        return 2


@pytest.fixture
def fake_pinning(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Tensor.pin_memory replaced by a marked copy (this machine has no GPU to pin for):
    the list of the copies it made."""
    copies: list[torch.Tensor] = []

    def fake_pin(tensor: torch.Tensor, device: Any = None) -> torch.Tensor:
        copy = tensor.clone()
        copies.append(copy)
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    return copies


def test_pin_memory_pins_every_tensor_and_keeps_the_structure(
    fake_pinning: list[torch.Tensor],
) -> None:
    """Tensors nested in dicts (an OrderedDict stays one, a defaultdict keeps its
    factory), namedtuples, tuples and lists (a list subclass stays one) become pinned
    copies, and the data given are left as they were; strings, bytes and numbers are
    left alone; an object with a pin_memory method is pinned by it. Only tuples differ
    from torch's (a list there)."""
    t = [torch.full((2,), float(i)) for i in range(8)]
    data = {
        "x": t[0],
        "nested": [t[1], (t[2], "word", b"bytes", 3, 2.5, None)],
        "point": Point(t[3], 7),
        "ordered": OrderedDict(y=t[4]),
        "fixed": FixedMapping(t[5], "b"),
        "factory": defaultdict(list, z=t[6]),
        "pair": Pair(t[7], "b"),
        "own": OwnPinning(),
    }
    pinned = pin_memory(data)
    assert len(fake_pinning) == 8
    leaves = [pinned["x"], pinned["nested"][0], pinned["nested"][1][0], pinned["point"].x,
              pinned["ordered"]["y"], pinned["fixed"]["a"], pinned["factory"]["z"],
              pinned["pair"][0]]  # fmt: skip
    for original, leaf, copy in zip(t, leaves, fake_pinning, strict=True):
        assert leaf is copy and torch.equal(leaf, original)
    assert type(pinned) is dict and type(pinned["ordered"]) is OrderedDict
    assert type(pinned["nested"]) is list and type(pinned["nested"][1]) is tuple
    assert type(pinned["point"]) is Point and pinned["point"].label == 7
    assert type(pinned["fixed"]) is dict  # the mapping's own type cannot be rebuilt
    assert type(pinned["factory"]) is defaultdict and pinned["factory"].default_factory is list
    assert type(pinned["pair"]) is Pair and pinned["pair"][1] == "b"
    assert pinned["nested"][1][1:] == ("word", b"bytes", 3, 2.5, None)
    assert pinned["own"] == "pinned by its own method"
    assert data["factory"]["z"] is t[6] and data["pair"][0] is t[7] and data["x"] is t[0]
    torchs = torch_pin_memory(data)
    assert plain(pinned) == plain(torchs)
    assert type(torchs["factory"]) is defaultdict and type(torchs["pair"]) is Pair


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_pin_memory_without_a_gpu_warns_and_leaves_the_batches(num_workers: int) -> None:
    """torch warns and goes on unpinned (pinning needs a GPU); so does nograd."""

    def epoch(pin: bool, make: Callable[..., Any] = DataLoader) -> tuple[list[Any], list[float]]:
        return run_epochs(
            lambda: make(Noisy(7), 3, True, num_workers=num_workers, pin_memory=pin), epochs=1
        )

    with pytest.warns(UserWarning, match="pin_memory"):
        pinned = epoch(True)
    assert pinned == epoch(False)
    with pytest.warns(UserWarning, match="pin_memory"):
        assert epoch(True, tud.DataLoader) == pinned


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_deprecated_pin_memory_device_is_taken_with_torchs_warning(
    num_workers: int, fake_pinning: list[torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch 2.13 takes ``pin_memory_device``, warns that it is deprecated and pins for
    its accelerator; nograd takes it too, warns, and pins as without it. Without
    ``pin_memory`` neither library warns."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loader = DataLoader(
        Noisy(7), 3, num_workers=num_workers, pin_memory=True, pin_memory_device="cuda"
    )
    with pytest.warns(UserWarning, match="pin_memory_device is deprecated"):
        batches = list(loader)
    assert len(batches) == 3 and len(fake_pinning) > 0  # pinned all the same
    with warnings.catch_warnings():  # torch also says it has no accelerator here to pin for
        warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true")
        with pytest.warns(UserWarning, match="pin_memory_device is deprecated"):
            list(tud.DataLoader(Noisy(7), 3, pin_memory=True, pin_memory_device="cuda"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(DataLoader(Noisy(7), 3, num_workers=num_workers, pin_memory_device="cuda"))
        list(tud.DataLoader(Noisy(7), 3, pin_memory_device="cuda"))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_pin_memory_pins_every_batch_where_there_is_a_gpu(
    num_workers: int, fake_pinning: list[torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a GPU (said to be there: the pinning is fake_pinning's), each batch handed out
    is the pinned copy, from the main process (a forked worker cannot use CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    batches = list(DataLoader(Noisy(7), 3, num_workers=num_workers, pin_memory=True))
    assert len(batches) == 3
    copies = {id(copy) for copy in fake_pinning}
    for batch in batches:
        assert {id(batch[field]) for field in ("index", "torch", "random", "numpy")} <= copies


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs a GPU")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_pinned_batches_are_page_locked_on_a_gpu_machine(num_workers: int) -> None:
    """Really pinned (is_pinned()), without a warning, and equal to the unpinned ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "there is no GPU" warning here
        with_pinning = list(DataLoader(Noisy(7), 3, num_workers=num_workers, pin_memory=True))
    for batch in with_pinning:
        assert all(batch[field].is_pinned() for field in ("index", "torch", "random", "numpy"))
    pinned = run_epochs(lambda: DataLoader(Noisy(7), 3, num_workers=num_workers, pin_memory=True))
    assert pinned == run_epochs(lambda: DataLoader(Noisy(7), 3, num_workers=num_workers))

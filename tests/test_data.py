from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nograd.data import DataLoader, TensorDataset, disk, moons, spirals, xor
from tests.oracle import SquaresDataset

TASKS: dict[str, Callable[..., TensorDataset]] = {"xor": xor, "moons": moons, "spirals": spirals}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ TensorDataset
def test_tensor_dataset_indexes_every_tensor() -> None:
    x, y = torch.randn(5, 3), torch.arange(5)
    dataset = TensorDataset(x, y)
    assert len(dataset) == 5
    assert dataset.tensors == (x, y)
    sample = dataset[3]
    assert isinstance(sample, tuple)
    assert torch.equal(sample[0], x[3])
    assert int(sample[1]) == 3


def test_tensor_dataset_errors() -> None:
    with pytest.raises(ValueError, match=r"\[5, 4\]"):
        TensorDataset(torch.zeros(5, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="at least one tensor"):
        TensorDataset()
    with pytest.raises(TypeError, match="list"):
        TensorDataset(torch.zeros(3), [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0-dimensional"):
        TensorDataset(torch.tensor(1.0))


# ----------------------------------------------------------------------- the disk
def test_disk_labels_follow_the_formula_for_every_point() -> None:
    dataset = disk(2000, generator=seeded(0))
    x, y = dataset.tensors
    assert x.shape == (2000, 2) and x.dtype == torch.float32
    assert y.shape == (2000,) and y.dtype == torch.int64
    assert bool(((x >= 0) & (x <= 1)).all())
    radius_squared = 1 / (2 * math.pi)
    for (px, py), label in zip(x.tolist(), y.tolist(), strict=True):
        inside = (px - 0.5) ** 2 + (py - 0.5) ** 2 < radius_squared
        assert label == int(inside)


def test_disk_covers_half_the_square() -> None:
    _, y = disk(200_000, generator=seeded(1)).tensors
    # The standard error of the fraction is 0.5 / sqrt(200000) ~ 0.0011.
    assert abs(y.double().mean().item() - 0.5) < 0.01
    assert set(y.unique().tolist()) == {0, 1}


def test_disk_is_reproducible_from_a_seed_and_from_the_global_generator() -> None:
    assert torch.equal(disk(50, seeded(3)).tensors[0], disk(50, seeded(3)).tensors[0])
    assert not torch.equal(disk(50, seeded(3)).tensors[0], disk(50, seeded(4)).tensors[0])
    torch.manual_seed(7)
    first = disk(20).tensors[0]
    torch.manual_seed(7)
    assert torch.equal(first, disk(20).tensors[0])


# ------------------------------------------------------------ xor, moons, spirals
@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 100, 101])
def test_task_shapes_dtypes_and_balance(name: str, n: int) -> None:
    x, y = TASKS[name](n, generator=seeded(n)).tensors
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert bool(((y == 0) | (y == 1)).all())
    ones = int(y.sum())
    assert abs(ones - (n - ones)) <= 1
    assert bool(torch.isfinite(x).all())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_reproducible_from_a_seed_and_different_across_seeds(name: str) -> None:
    task = TASKS[name]
    a, b, c = (
        task(64, generator=seeded(5)),
        task(64, generator=seeded(5)),
        task(64, generator=seeded(6)),
    )
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(a.tensors[0], c.tensors[0])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_samples_are_shuffled(name: str) -> None:
    _, y = TASKS[name](200, generator=seeded(8)).tensors
    assert not torch.equal(y, torch.sort(y).values)  # not all 0s then all 1s


def test_xor_without_noise_sits_on_the_corners_with_the_xor_label() -> None:
    x, y = xor(41, noise=0.0, generator=seeded(2)).tensors
    assert bool((x.abs() == 1).all())
    expected = (x[:, 0] > 0).long() ^ (x[:, 1] > 0).long()
    assert torch.equal(y, expected)
    assert len({tuple(point) for point in x.tolist()}) == 4


def test_xor_labels_match_quadrants_with_small_noise() -> None:
    x, y = xor(500, noise=0.1, generator=seeded(3)).tensors
    expected = (x[:, 0] > 0).long() ^ (x[:, 1] > 0).long()
    assert torch.equal(y, expected)  # the nearest axis is 10 standard deviations away


def test_moons_without_noise_lie_on_two_half_circles() -> None:
    x, y = moons(101, noise=0.0, generator=seeded(4)).tensors
    outer, inner = x[y == 0].double(), x[y == 1].double()
    torch.testing.assert_close(outer.pow(2).sum(1), torch.ones(len(outer), dtype=torch.float64))
    assert bool((outer[:, 1] >= -1e-6).all())
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(
        (inner - centre).pow(2).sum(1), torch.ones(len(inner), dtype=torch.float64)
    )
    assert bool((inner[:, 1] <= 0.5 + 1e-6).all())
    assert len(outer) == 50 and len(inner) == 51


def test_spirals_without_noise_follow_their_arm() -> None:
    x, y = spirals(300, noise=0.0, generator=seeded(5)).tensors
    x = x.double()
    r = x.norm(dim=1)
    assert bool((r <= 1 + 1e-6).all())
    theta = 3 * math.pi * r + math.pi * y
    expected = r.unsqueeze(1) * torch.stack([theta.cos(), theta.sin()], dim=1)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_noise_has_the_requested_scale(name: str) -> None:
    clean = TASKS[name](4000, noise=0.0, generator=seeded(9)).tensors[0]
    noisy = TASKS[name](4000, noise=0.3, generator=seeded(9)).tensors[0]
    # Same seed, same draws before the noise: the difference is the noise itself.
    assert abs((noisy - clean).std().item() - 0.3) < 0.02


@pytest.mark.parametrize("name", ["disk", *sorted(TASKS)])
def test_task_argument_errors(name: str) -> None:
    task: Callable[..., Any] = disk if name == "disk" else TASKS[name]
    for n in (0, -3):
        with pytest.raises(ValueError, match=rf"{name}: expected n >= 1, got {n}"):
            task(n)
    for n in (2.5, True, "10"):
        with pytest.raises(TypeError, match=f"{name}: expected an integer n"):
            task(n)
    with pytest.raises(TypeError, match=rf"{name}: expected a torch\.Generator"):
        task(10, generator=0)
    if name == "disk":
        return
    for noise in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match=f"{name}: expected a finite noise >= 0"):
            task(10, noise=noise)
    with pytest.raises(TypeError, match=f"{name}: expected a real noise"):
        task(10, noise="0.1")


# --------------------------------------------------------------------- DataLoader
def numbered(n: int) -> TensorDataset:
    """Sample i is (i, -i as float, [i, i]), so a batch shows which samples it holds."""
    index = torch.arange(n)
    return TensorDataset(index, -index.double(), index.unsqueeze(1).repeat(1, 2))


def epoch_indices(loader: DataLoader, batch_size: int, drop_last: bool) -> list[int]:
    seen: list[int] = []
    batches = list(loader)
    assert len(batches) == len(loader)
    for position, (index, negative, pair) in enumerate(batches):
        last = position == len(batches) - 1
        assert len(index) == batch_size or (last and not drop_last and len(index) < batch_size)
        assert torch.equal(negative, -index.double())  # the fields stay paired
        assert torch.equal(pair, index.unsqueeze(1).repeat(1, 2))
        seen.extend(index.tolist())
    return seen


@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 45),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
)
def test_loader_covers_each_sample_once_per_epoch(
    n: int, batch_size: int, shuffle: bool, drop_last: bool
) -> None:
    loader = DataLoader(numbered(n), batch_size, shuffle, drop_last=drop_last, generator=seeded(n))
    expected_len = n // batch_size if drop_last else math.ceil(n / batch_size)
    assert len(loader) == expected_len
    for _ in range(2):
        seen = epoch_indices(loader, batch_size, drop_last)
        assert len(seen) == len(set(seen))
        if drop_last:
            assert len(seen) == expected_len * batch_size and set(seen) <= set(range(n))
        else:
            assert sorted(seen) == list(range(n))
        if not shuffle:
            assert seen == list(range(len(seen)))


@pytest.mark.parametrize(("n", "batch_size"), [(12, 4), (13, 4), (7, 1), (300, 1), (600, 1)])
def test_loader_batch_counts(n: int, batch_size: int) -> None:
    for drop_last in (False, True):
        loader = DataLoader(numbered(n), batch_size, shuffle=True, drop_last=drop_last)
        seen = epoch_indices(loader, batch_size, drop_last)
        assert len(seen) == (n // batch_size * batch_size if drop_last else n)


def test_loader_shuffle_is_reproducible_and_new_each_epoch() -> None:
    n = 50

    def orders(seed: int) -> list[list[int]]:
        loader = DataLoader(numbered(n), 8, shuffle=True, generator=seeded(seed))
        return [epoch_indices(loader, 8, False) for _ in range(3)]

    first = orders(11)
    assert first == orders(11)
    assert first != orders(12)
    assert first[0] != first[1] != first[2]
    generator = seeded(11)
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # torch's worker seed
    assert first[0] == torch.randperm(n, generator=generator).tolist()


@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize(("n", "batch_size"), [(12, 4), (13, 4), (5, 8)])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("generic", [False, True])
def test_loader_draws_as_torch_dataloader_draws(
    generic: bool, shuffle: bool, drop_last: bool, n: int, batch_size: int, own_generator: bool
) -> None:
    """Same seed, same batches as torch's DataLoader, epoch after epoch, and the same
    random numbers afterwards, from the loader's generator and from the global one."""
    dataset: Any = SquaresDataset(n) if generic else numbered(n)

    def run(make: Callable[[torch.Generator | None], Any]) -> tuple[list[list[Any]], Any, Any]:
        torch.manual_seed(3)
        generator = seeded(7) if own_generator else None
        loader = make(generator)
        epochs = [[[t.tolist() for t in batch] for batch in loader] for _ in range(3)]
        after = torch.rand(4) if generator is None else torch.rand(4, generator=generator)
        return epochs, after, torch.rand(4)

    ours = run(lambda g: DataLoader(dataset, batch_size, shuffle, drop_last=drop_last, generator=g))
    theirs = run(
        lambda g: torch.utils.data.DataLoader(
            dataset, batch_size, shuffle=shuffle, drop_last=drop_last, generator=g
        )
    )
    assert ours[0] == theirs[0]
    assert torch.equal(ours[1], theirs[1]) and torch.equal(ours[2], theirs[2])


@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last"), [(13, 4, False), (13, 4, True), (12, 4, False), (3, 8, False)]
)
def test_loader_draws_when_torch_dataloader_draws(
    n: int, batch_size: int, drop_last: bool, own_generator: bool
) -> None:
    """torch draws the order at the first next(), not at iter(), and its sampler's last
    randperm when asked for the batch after the last full one. So two epochs at once,
    or draws between the batches (as Dropout's), see the same numbers in both."""

    def run(make: Callable[[torch.Generator | None], Any]) -> list[Any]:
        torch.manual_seed(3)
        generator = seeded(7) if own_generator else None

        def draw() -> list[float]:  # from the generator the loader draws from
            return torch.rand(1, generator=generator).tolist()

        loader, seen = make(generator), []
        for first, second in zip(loader, loader, strict=True):  # two iterators at once
            seen += [first[0].tolist(), second[0].tolist(), draw()]
        epoch = iter(loader)
        seen.append(draw())  # between iter() and the first next()
        for (index,) in epoch:
            seen += [index.tolist(), draw()]
        return seen

    dataset = TensorDataset(torch.arange(n))
    ours = run(lambda g: DataLoader(dataset, batch_size, True, drop_last=drop_last, generator=g))
    theirs = run(
        lambda g: torch.utils.data.DataLoader(
            dataset, batch_size, shuffle=True, drop_last=drop_last, generator=g
        )
    )
    assert ours == theirs


def test_loader_takes_torchs_arguments_in_torchs_order() -> None:
    """(dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn,
    pin_memory, drop_last, timeout, worker_init_fn, multiprocessing_context, generator)
    by position, as in torch; prefetch_factor and persistent_workers by keyword only, as
    in torch (and a drop_last passed fourth is no sampler)."""
    loader = DataLoader(numbered(6), 4, True)
    assert (loader.batch_size, loader.shuffle, loader.drop_last) == (4, True, False)
    loader = DataLoader(numbered(6), 4, False, [5, 4, 3, 2, 1, 0])
    assert [batch[0].tolist() for batch in loader] == [[5, 4, 3, 2], [1, 0]]
    loader = DataLoader(numbered(6), 1, False, None, [[1, 2], [0]])
    assert [batch[0].tolist() for batch in loader] == [[1, 2], [0]]
    with pytest.raises(TypeError):
        DataLoader(numbered(6), 4, True, True)  # type: ignore[call-overload]
    loader = DataLoader(numbered(6), 4, False, None, None, 0, None, False, True, 0, None, None,
                        torch.Generator())  # fmt: skip
    assert (loader.num_workers, loader.drop_last, len(loader)) == (0, True, 1)
    with pytest.raises(TypeError):
        DataLoader(numbered(6), 4, False, None, None, 0, None, False, True, 0, None, None,
                   None, 2)  # type: ignore[call-overload]  # fmt: skip


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_batch_changed_in_place_leaves_the_dataset_alone(shuffle: bool) -> None:
    """As torch's batches, which are copies: normalising one in place (x -= mean) must
    not change the dataset, or the change would compound epoch after epoch."""
    x = torch.randn(10, 3)
    before = x.clone()
    for batch in DataLoader(TensorDataset(x), batch_size=4, shuffle=shuffle):
        batch[0].sub_(100.0)  # x -= mean, say
    assert torch.equal(x, before)
    for batch in DataLoader(TensorDataset(x), batch_size=4):  # still cut out of one copy
        assert batch[0]._base is not None and batch[0]._base.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(("shuffle", "drop_last"), [(False, False), (True, False), (True, True)])
def test_generic_dataset_matches_the_tensor_path(shuffle: bool, drop_last: bool) -> None:
    n = 23
    index = torch.arange(n)
    twin = TensorDataset(torch.stack([index, index**2], dim=1).float(), index % 3)
    generic = DataLoader(SquaresDataset(n), 5, shuffle, drop_last=drop_last, generator=seeded(0))
    fast = DataLoader(twin, 5, shuffle, drop_last=drop_last, generator=seeded(0))
    assert len(generic) == len(fast)
    for _ in range(2):
        pairs = list(zip(generic, fast, strict=True))
        assert len(pairs) == len(fast)
        for ours, expected in pairs:
            assert len(ours) == 2
            assert torch.equal(ours[0], expected[0]) and ours[0].dtype == torch.float32
            assert torch.equal(ours[1], expected[1]) and ours[1].dtype == torch.int64


def test_a_list_of_tuples_is_a_dataset() -> None:
    samples = [(torch.full((2,), float(i)), float(i) / 2) for i in range(5)]
    batches = list(DataLoader(samples, batch_size=2))
    assert [len(batch[0]) for batch in batches] == [2, 2, 1]
    assert torch.equal(batches[1][1], torch.tensor([1.0, 1.5]))


@pytest.mark.parametrize(
    "labels",
    [[0.1, 0.7, 2.0], [1.5, 2, 3], [1, 2.5, 3], [1, 2, 3], [True, False, True], [True, 2, 0]],
    ids=["floats", "float-first", "int-first", "ints", "bools", "bool-first"],
)
def test_numbers_are_collated_as_torch_collates_them(labels: list[Any]) -> None:
    """torch's default_collate picks the dtype from the first item: float64 for a
    Python float (0.1 stays 0.1), int64 for an int, bool for a bool."""
    samples = [(torch.full((2,), float(i)), label) for i, label in enumerate(labels)]
    ours = next(iter(DataLoader(samples, batch_size=3)))[1]
    theirs = next(iter(torch.utils.data.DataLoader(samples, batch_size=3)))[1]
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)


def test_loader_argument_errors() -> None:
    dataset = numbered(4)
    for batch_size in (0, -2):
        with pytest.raises(ValueError, match=f"expected batch_size >= 1, got {batch_size}"):
            DataLoader(dataset, batch_size)
    for batch_size in (1.5, True, "2"):  # torch's BatchSampler raises ValueError for these
        with pytest.raises(ValueError, match="expected an integer batch_size"):
            DataLoader(dataset, batch_size)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            torch.utils.data.DataLoader(dataset, batch_size)  # type: ignore[arg-type]
    for drop_last in (None, 1, "no"):  # torch refuses these too, rather than read them as bools
        with pytest.raises(ValueError, match=f"expected drop_last to be a bool, got {drop_last!r}"):
            DataLoader(dataset, 2, drop_last=drop_last)  # type: ignore[call-overload]
        with pytest.raises(ValueError):
            torch.utils.data.DataLoader(dataset, 2, drop_last=drop_last)  # type: ignore[arg-type]
    # as torch: an empty dataset has no batch, and shuffling one is refused
    assert list(DataLoader(TensorDataset(torch.empty(0, 2)))) == []
    assert len(DataLoader([])) == 0
    with pytest.raises(ValueError, match="num_samples"):
        DataLoader([], shuffle=True)
    for not_a_dataset in (42, object(), None):
        with pytest.raises(TypeError, match="expected a dataset with __len__ and __getitem__"):
            DataLoader(not_a_dataset)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        DataLoader(dataset, generator=1)  # type: ignore[call-overload]


def test_generic_dataset_item_errors() -> None:
    """Samples of any structure torch collates are taken (a tensor each is stacked, a
    string kept); a mismatch within a batch gets torch's error type, naming the field
    and the samples (tests/test_collate.py compares every case with torch)."""
    stacked = next(iter(DataLoader([torch.zeros(2), torch.ones(2)], batch_size=2)))
    assert torch.equal(stacked, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    ragged = [(torch.zeros(2),), (torch.zeros(3),)]
    with pytest.raises(RuntimeError, match=r"tensors of one shape in field 0 of every sample"):
        next(iter(DataLoader(ragged, batch_size=2)))
    uneven = [(torch.zeros(2), 1), (torch.zeros(2),)]
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal"):
        next(iter(DataLoader(uneven, batch_size=2)))
    words = [(torch.zeros(2), "a"), (torch.zeros(2), "b")]
    assert next(iter(DataLoader(words, batch_size=2)))[1] == ("a", "b")
    missing = [(torch.zeros(2), None), (torch.zeros(2), None)]
    with pytest.raises(TypeError, match="found <class 'NoneType'> in field 1 of the sample at"):
        next(iter(DataLoader(missing, batch_size=2)))

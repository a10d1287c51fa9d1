"""Subset and random_split against torch.utils.data's: the same splits from the same
seeds, the same batches through a DataLoader, and fit and evaluate on the parts."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nograd.data
from nograd.data import DataLoader, Subset, TensorDataset, disk, random_split
from nograd.data.split import tensors_of
from nograd.nn import CrossEntropyLoss, Linear, ReLU, Sequential
from nograd.optim import SGD
from nograd.train import evaluate, fit
from tests.oracle import SquaresDataset


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def numbered(n: int) -> TensorDataset:
    """Sample i is (i as float in a row of 2, i mod 2): a batch shows which samples it holds."""
    index = torch.arange(n)
    return TensorDataset(index.double().unsqueeze(1).repeat(1, 2), index % 2)


def split_indices(
    split: Callable[..., Sequence[Any]], n: int, lengths: Sequence[int | float], own: bool
) -> tuple[list[list[int]], list[float]]:
    """The indices of each subset, and the next numbers of the generator it drew from."""
    torch.manual_seed(5)
    generator = seeded(11) if own else None
    with warnings.catch_warnings():  # counts that sum to 1 are read as fractions, by both:
        warnings.simplefilter("ignore")  # an empty subset is warned about (tested below)
        parts = split(range(n), lengths, generator=generator)  # None: the global generator
    after = torch.rand(3, generator=generator).tolist()
    return [list(part.indices) for part in parts], after


@given(
    n=st.integers(1, 60),
    cuts=st.lists(st.integers(0, 60), max_size=4),
    own=st.booleans(),
)
def test_random_split_by_counts_is_torchs(n: int, cuts: list[int], own: bool) -> None:
    points = sorted({min(cut, n) for cut in cuts})
    lengths = [b - a for a, b in zip([0, *points], [*points, n], strict=True)]
    ours = split_indices(random_split, n, lengths, own)
    assert ours == split_indices(torch.utils.data.random_split, n, lengths, own)
    assert sorted(i for part in ours[0] for i in part) == list(range(n))  # a partition
    assert [len(part) for part in ours[0]] == lengths


@pytest.mark.parametrize("own", [True, False])
@pytest.mark.parametrize("n", [1, 2, 10, 11, 31, 1000])
@pytest.mark.parametrize(
    "fractions", [[0.8, 0.2], [0.3, 0.3, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5], [1.0], [0.1] * 10]
)
def test_random_split_by_fractions_is_torchs(fractions: list[float], n: int, own: bool) -> None:
    """floor(f n) each, and the remainder one each to the first subsets in turn."""
    ours = split_indices(random_split, n, fractions, own)
    assert ours == split_indices(torch.utils.data.random_split, n, fractions, own)


def test_an_empty_subset_is_warned_about_as_torch_does() -> None:
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        torch.utils.data.random_split(range(1), [0.5, 0.5])
    with pytest.warns(UserWarning, match=r"random_split: the subset at index 1 is empty") as seen:
        parts = random_split(range(1), [0.5, 0.5])
    assert seen[0].filename == __file__  # the warning points at the caller
    assert [len(part) for part in parts] == [1, 0]


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        ([3, 3], r"lengths that sum to the dataset's 10 samples, got \[3, 3\] \(sum 6\)"),
        ([11, -1], r"sample counts >= 0 .*got -1 at index 1"),
        ([5.0, 5.0], r"sample counts >= 0 .*got 5.0 at index 0"),
        ([1.5, -0.5], r"fractions in \[0, 1\], got 1.5 at 0"),
    ],
)
def test_random_split_refuses_lengths_that_do_not_fit(lengths: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match="random_split: expected " + message):
        random_split(range(10), lengths)


def test_subset_reads_the_dataset_at_its_indices() -> None:
    dataset = numbered(6)
    subset = Subset(dataset, [4, 0, 4])
    assert len(subset) == 3
    for i, j in enumerate([4, 0, 4]):
        for ours, theirs in zip(subset[i], dataset[j], strict=True):
            assert torch.equal(ours, theirs)
    x, y = subset[[2, 1]]  # several at once, as torch's Subset
    assert torch.equal(y, torch.tensor([0, 0])) and torch.equal(x[:, 0], torch.tensor([4.0, 0.0]))
    assert repr(subset) == "Subset(TensorDataset((6, 2), (6,)), 3 of 6 samples)"
    with pytest.raises(TypeError, match="Subset: expected a dataset with __len__ and __getitem"):
        Subset(42, [0])


def test_tensors_of_sees_through_subsets_of_tensor_datasets_only() -> None:
    dataset = numbered(8)
    assert tensors_of(dataset) is dataset.tensors
    inner = Subset(dataset, [7, 1, 3, 5])
    x, y = tensors_of(Subset(inner, [2, 0]))  # type: ignore[misc]
    assert torch.equal(x[:, 0], torch.tensor([3.0, 7.0])) and torch.equal(y, torch.tensor([1, 1]))

    class Doubled(Subset):  # may change what __getitem__ gives: read sample by sample
        def __getitem__(self, index: Any) -> Any:
            x, y = super().__getitem__(index)
            return 2 * x, y

    assert tensors_of(Doubled(dataset, [0])) is None
    assert tensors_of(Subset(SquaresDataset(4), [0])) is None
    assert tensors_of(SquaresDataset(4)) is None


@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize(("batch_size", "drop_last"), [(4, False), (4, True), (64, False)])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("generic", [False, True])
def test_a_loader_over_split_parts_gives_torchs_batches(
    generic: bool, shuffle: bool, batch_size: int, drop_last: bool, own_generator: bool
) -> None:
    """Split with one seed, then batch each part: the batches torch's DataLoader gives
    over torch's parts, epoch after epoch, and the same random numbers afterwards."""
    n = 23

    def run(split: Callable[..., Any], loader_class: Callable[..., Any]) -> list[Any]:
        torch.manual_seed(3)
        dataset: Any = SquaresDataset(n) if generic else numbered(n)
        train, test = split(dataset, [0.7, 0.3], generator=seeded(9))
        generator = seeded(7) if own_generator else None
        seen = []
        for part in (train, test):
            loader = loader_class(
                part, batch_size, shuffle=shuffle, drop_last=drop_last, generator=generator
            )
            seen += [[[t.tolist() for t in batch] for batch in loader] for _ in range(2)]
        seen.append(torch.rand(3, generator=generator).tolist())
        return seen

    assert run(random_split, DataLoader) == run(
        torch.utils.data.random_split, torch.utils.data.DataLoader
    )


def test_fit_and_evaluate_train_on_split_parts_as_on_tensor_datasets() -> None:
    """A Subset of a TensorDataset trains as the TensorDataset of its rows would."""
    data = disk(200, generator=seeded(0))
    train, test = random_split(data, [0.75, 0.25], generator=seeded(1))

    def trained(train_data: Any, test_data: Any) -> tuple[list[torch.Tensor], Any]:
        torch.manual_seed(0)
        model = Sequential(Linear(2, 8), ReLU(), Linear(8, 2))
        optimizer = SGD(model.parameters(), lr=0.1)
        history = fit(
            model, CrossEntropyLoss(), optimizer, train_data, test_data,
            epochs=3, batch_size=16, generator=seeded(2), progress=False,
        )  # fmt: skip
        score = evaluate(model, CrossEntropyLoss(), test_data)
        figures = {key: value for key, value in history.to_dict().items() if key != "seconds"}
        return [p.data for p in model.parameters()], (figures, score)

    rows = [TensorDataset(*tensors_of(part)) for part in (train, test)]  # type: ignore[misc]
    ours, theirs = trained(train, test), trained(*rows)
    assert all(torch.equal(a, b) for a, b in zip(ours[0], theirs[0], strict=True))
    assert ours[1] == theirs[1]


def test_fits_checks_read_the_rows_of_a_subset() -> None:
    x, y = torch.rand(10, 2), torch.arange(10) % 2
    x[7, 0] = float("nan")
    model = Sequential(Linear(2, 2))
    optimizer = SGD(model.parameters(), lr=0.1)
    part = Subset(TensorDataset(x, y), [2, 7, 4])
    with pytest.raises(ValueError, match=r"expected finite values, got 1 nan .*in sample 1\)"):
        fit(model, CrossEntropyLoss(), optimizer, part, epochs=1, progress=False)
    y[4] = 5  # a label the model cannot output, in the part's rows only
    with pytest.raises(ValueError, match=r"class labels in \[0, 5\] but the model has 2 output"):
        fit(
            model,
            CrossEntropyLoss(),
            optimizer,
            Subset(TensorDataset(x, y), [2, 4]),
            epochs=1,
            progress=False,
        )


# a Subset's indices that torch reads otherwise than as rows to gather: it meets each
# one itself, dataset[indices[i]], and so must nograd (torch's batch, or torch's error)
ODD_INDICES: dict[str, Any] = {
    "floats": [0.0, 1.7],  # IndexError: not rows 0 and 1
    "bools": [True, False],  # indexing with a bool adds a dimension
    "uint8-tensor": torch.tensor([2, 0], dtype=torch.uint8),  # masks
    "one-element-tensors": [torch.tensor([2]), torch.tensor([0])],  # keep a dimension
    "numpy-0-dim-arrays": [np.array(2), np.array(0)],
    "numpy-uint64": np.array([2, 0], dtype=np.uint64),
}


@pytest.mark.parametrize("kind", sorted(ODD_INDICES))
def test_a_subset_with_odd_indices_is_read_as_torch_reads_it(kind: str) -> None:
    def batches(lib: Any) -> Any:
        subset = lib.Subset(lib.TensorDataset(torch.arange(4) * 10), ODD_INDICES[kind])
        try:
            return [[part.tolist() for part in batch] for batch in lib.DataLoader(subset, 2)]
        except (IndexError, RuntimeError) as error:
            return type(error)

    assert batches(nograd.data) == batches(torch.utils.data)

"""ConcatDataset and ChainDataset against torch.utils.data's: the same samples at the
same indices, the same errors for indices out of range, the same batches through a
shuffled DataLoader from the same seed, and ``+`` building them as in torch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.utils.data as tud
from hypothesis import given
from hypothesis import strategies as st

from nograd.data import (
    ChainDataset,
    ConcatDataset,
    DataLoader,
    IterableDataset,
    Subset,
    TensorDataset,
)
from nograd.data.split import tensors_of
from nograd.nn import CrossEntropyLoss, Linear, Sequential, Tanh
from nograd.optim import SGD
from nograd.train import fit


def numbered(start: int, n: int) -> TensorDataset:
    """Samples (start + i, i mod 2) for i < n: each sample says where it came from."""
    return TensorDataset(torch.arange(start, start + n, dtype=torch.float32), torch.arange(n) % 2)


def torch_twin(data: TensorDataset) -> tud.TensorDataset:
    return tud.TensorDataset(*data.tensors)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_every_index_reads_torchs_sample(sizes: list[int]) -> None:
    """Every index, negative ones included, gives torch's sample; one past either end
    raises where torch's does (IndexError past the end, ValueError before the start)."""
    parts = [numbered(100 * k, n) for k, n in enumerate(sizes)]
    ours = ConcatDataset(parts)
    theirs = tud.ConcatDataset([torch_twin(part) for part in parts])
    assert len(ours) == len(theirs) and ours.cumulative_sizes == theirs.cumulative_sizes
    for index in range(-len(ours), len(ours)):
        assert ours[index] == theirs[index], index
    for index, error in ((len(ours), IndexError), (-len(ours) - 1, ValueError)):
        with pytest.raises(error):
            theirs[index]
        with pytest.raises(error, match="ConcatDataset: index"):
            ours[index]


def test_a_shuffled_loader_gives_torchs_batches() -> None:
    """Shuffled from the same generator, batch by batch, epoch by epoch."""
    parts = [numbered(0, 7), numbered(100, 5), numbered(200, 9)]
    ours = DataLoader(ConcatDataset(parts), 4, shuffle=True,
                      generator=torch.Generator().manual_seed(3))  # fmt: skip
    theirs = tud.DataLoader(tud.ConcatDataset([torch_twin(p) for p in parts]), 4, shuffle=True,
                            generator=torch.Generator().manual_seed(3))  # fmt: skip
    for _ in range(2):
        for mine, other in zip(ours, theirs, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(mine, other, strict=True))


@pytest.mark.parametrize("mixed", [False, True])
def test_tensor_datasets_joined_are_batched_as_slices_where_their_rows_agree(mixed: bool) -> None:
    """A ConcatDataset of TensorDatasets (and Subsets of them) is batched from its
    tensors joined, once per epoch, where the rows agree in dtype and shape; with a
    float64 part among float32 ones it is read sample by sample. Either way the
    batches are torch's (which promotes the mixed rows as it stacks them)."""
    parts = [numbered(0, 7), Subset(numbered(100, 6), [5, 1, 3]), numbered(200, 4)]
    if mixed:
        x, y = parts[2].tensors  # type: ignore[union-attr]
        parts[2] = TensorDataset(x.double(), y)
    assert (tensors_of(ConcatDataset(parts)) is None) == mixed
    twins = [torch_twin(p) if isinstance(p, TensorDataset) else p for p in parts]
    ours = DataLoader(ConcatDataset(parts), 4, shuffle=True,
                      generator=torch.Generator().manual_seed(5))  # fmt: skip
    theirs = tud.DataLoader(tud.ConcatDataset(twins), 4, shuffle=True,  # type: ignore[arg-type]
                            generator=torch.Generator().manual_seed(5))  # fmt: skip
    for mine, other in zip(ours, theirs, strict=True):
        assert all(
            a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(mine, other, strict=True)
        )


def test_plus_joins_datasets_and_streams_as_torchs() -> None:
    """dataset + dataset is a ConcatDataset (also of a Subset, and of a join), stream +
    stream a ChainDataset."""
    a, b = numbered(0, 3), numbered(10, 2)
    joined = a + b + Subset(a, [2, 0])
    assert isinstance(joined, ConcatDataset) and len(joined) == 7
    assert [float(joined[i][0]) for i in range(7)] == [0, 1, 2, 10, 11, 2, 0]
    chained = Counting(3) + Counting(2)
    assert isinstance(chained, ChainDataset)
    assert [int(x) for x in chained] == [0, 1, 2, 0, 1] and len(chained) == 5


class Count:
    """0, 1, ..., n - 1 as a stream of tensors, with a length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(torch.arange(self.n))

    def __len__(self) -> int:
        return self.n


class Counting(Count, IterableDataset[Any]):
    """The stream as nograd's IterableDataset."""


class TorchCounting(Count, tud.IterableDataset[Any]):
    """The stream as torch's IterableDataset."""


def test_a_chain_reads_its_streams_in_turn_as_torchs() -> None:
    """One stream after the other, batched across the seam, with the summed length;
    torch's streams may be chained too."""
    ours = DataLoader(ChainDataset([Counting(3), TorchCounting(4)]), 2)
    theirs = tud.DataLoader(tud.ChainDataset([TorchCounting(3), TorchCounting(4)]), 2)
    assert (
        [b.tolist() for b in ours] == [b.tolist() for b in theirs] == [[0, 1], [2, 0], [1, 2], [3]]
    )
    assert len(ours) == len(theirs) == 4


def test_fit_trains_on_a_concatenation_as_on_its_parts_joined() -> None:
    """A ConcatDataset of TensorDatasets trains as the TensorDataset of the joined
    tensors (the same batches, read sample by sample instead of sliced)."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(30, 2, generator=generator), torch.randint(0, 2, (30,), generator=generator)
    states = []
    for data in (ConcatDataset([TensorDataset(x[:12], y[:12]), TensorDataset(x[12:], y[12:])]),
                 TensorDataset(x, y)):  # fmt: skip
        torch.manual_seed(1)
        model = Sequential(Linear(2, 6), Tanh(), Linear(6, 2))
        fit(model, CrossEntropyLoss(), SGD(model.parameters(), lr=0.3), data, epochs=2,
            batch_size=8, generator=torch.Generator().manual_seed(2), progress=False)  # fmt: skip
        states.append(model.state_dict())
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


def test_what_cannot_be_joined_is_refused() -> None:
    """torch asserts (AssertionError) where nograd names the mistake: no dataset, a
    stream in a ConcatDataset, a dataset read by index in a ChainDataset."""
    with pytest.raises(AssertionError):
        tud.ConcatDataset([])
    with pytest.raises(ValueError, match="ConcatDataset: expected at least one dataset"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="join streams with ChainDataset"):
        ConcatDataset([numbered(0, 2), Counting(2)])
    with pytest.raises(TypeError, match="join datasets read by index with ConcatDataset"):
        list(ChainDataset([Counting(2), numbered(0, 2)]))


def test_the_repr_says_how_many_samples_and_parts() -> None:
    assert repr(ConcatDataset([numbered(0, 2), numbered(5, 3)])) == (
        "ConcatDataset(n=5, datasets=2)"
    )

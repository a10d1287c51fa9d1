"""Subset and random_split: part of a dataset, and a dataset cut into random parts.

``random_split(dataset, [800, 200])`` draws one random permutation of the indices and
cuts it into consecutive pieces of those lengths; each piece is a ``Subset``, which
reads the samples of the whole dataset at its indices. Both behave as
``torch.utils.data``'s: the permutation is ``torch.randperm(n, generator=generator)``,
the same draw from the same generator, so a seed gives the same split in both, and
fractions that sum to 1 become lengths as torch computes them.

The samples are never copied: a ``Subset`` keeps the dataset and a list of indices.
A ``DataLoader`` over a ``Subset`` of a ``TensorDataset`` still batches by slicing
tensors (``tensors_of``), after one gather of the subset's rows per epoch.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nograd.data.concat import ConcatDataset
from nograd.data.dataset import Dataset
from nograd.data.datasets import TensorDataset


class Subset(Dataset[Any]):
    """The samples of ``dataset`` at ``indices``: ``subset[i] = dataset[indices[i]]``.

    Args:
        dataset: any object with ``__len__`` and ``__getitem__``.
        indices: positions in ``dataset``, in the order the subset gives them.

    Shape:
        len(subset) = len(indices); each sample is the dataset's sample.
    """

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"Subset: expected a dataset with __len__ and __getitem__, "
                f"got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int | list[int]) -> Any:
        if isinstance(index, list):  # several samples at once, as torch's Subset takes them
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """The samples at a batch's indices, as the loader reads them: with the dataset's
        own ``__getitems__`` where it has one (a batch in one read), as torch's Subset."""
        rows = [self.indices[i] for i in indices]
        if callable(getattr(self.dataset, "__getitems__", None)):
            samples: list[Any] = self.dataset.__getitems__(rows)
            return samples
        return [self.dataset[row] for row in rows]

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, {len(self.indices)} of {len(self.dataset)} samples)"


def random_split(
    dataset: Any,
    lengths: Sequence[int | float],
    generator: torch.Generator | None = None,
) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random subsets of the given lengths.

    ``lengths`` holds sample counts that sum to ``len(dataset)``, or fractions that sum
    to 1: each fraction f gives floor(f * n) samples, and the n - sum of those left
    over go one each to the first subsets in turn (a subset left empty is warned
    about), as in torch.

    Args:
        dataset: any object with ``__len__`` and ``__getitem__``.
        lengths: the size of each subset, or its fraction of the dataset.
        generator: draws the permutation (torch's global generator when None).

    Returns:
        One ``Subset`` per length: the first ``lengths[0]`` indices of
        ``torch.randperm(n, generator=generator)``, then the next ``lengths[1]``, ...

    Raises:
        ValueError: a fraction outside [0, 1], a negative length, or lengths that do
            not add up to the dataset's size.
    """
    n = len(dataset)
    total = sum(lengths)
    if math.isclose(total, 1) and total <= 1:  # fractions of the dataset
        lengths = _lengths_of_fractions(lengths, n)
    counts = [_count(length, i) for i, length in enumerate(lengths)]
    if sum(counts) != n:
        raise ValueError(
            f"random_split: expected lengths that sum to the dataset's {n} samples, "
            f"got {counts} (sum {sum(counts)})"
        )
    order = torch.randperm(n, generator=generator).tolist()
    subsets, start = [], 0
    for count in counts:
        subsets.append(Subset(dataset, order[start : start + count]))
        start += count
    return subsets


def _count(length: Any, i: int) -> int:
    """``lengths[i]`` as a sample count: any integer (numpy's, a 0-dim tensor's), not a bool."""
    try:
        count = operator.index(length)
    except TypeError:
        count = -1
    if isinstance(length, bool) or count < 0:
        raise ValueError(
            f"random_split: expected sample counts >= 0 (or fractions that sum to 1), "
            f"got {length!r} at index {i}"
        )
    return count


def _lengths_of_fractions(fractions: Sequence[int | float], n: int) -> list[int]:
    """floor(f * n) samples for each fraction f; the remainder one each, in turn."""
    lengths = []
    for i, fraction in enumerate(fractions):
        if not 0 <= fraction <= 1:
            raise ValueError(f"random_split: expected fractions in [0, 1], got {fraction} at {i}")
        lengths.append(math.floor(n * fraction))
    for i in range(n - sum(lengths)):
        lengths[i % len(lengths)] += 1
    for i, length in enumerate(lengths):
        if length == 0:
            warnings.warn(
                f"random_split: the subset at index {i} is empty (0 samples)", stacklevel=3
            )
    return lengths


def tensors_of(dataset: Any) -> tuple[Tensor, ...] | None:
    """The tensors whose rows are the samples of ``dataset``, or None if it has none.

    A ``TensorDataset``'s own tensors; for a ``Subset`` of one (or of such a subset),
    their rows at its indices, gathered in one copy per tensor; for a ``ConcatDataset``
    of such datasets, their tensors joined, one copy per tensor, where the joined
    tensors hold the same kind of rows (dtype, device and shape of a row). Any other
    dataset, a subclass of ``Subset`` included (it may change what ``__getitem__``
    gives), and a subset whose indices are not plain integers (``integer_rows``), is
    read sample by sample.
    """
    if type(dataset) is TensorDataset:  # a subclass may change what __getitem__ gives
        return dataset.tensors
    if type(dataset) is Subset:
        inner = tensors_of(dataset.dataset)
        index = integer_rows(dataset.indices)  # None: indices a gather would misread
        if inner is not None and index is not None:
            return tuple(tensor[index.to(tensor.device)] for tensor in inner)
    if type(dataset) is ConcatDataset:
        parts = [tensors_of(part) for part in dataset.datasets]
        known = [part for part in parts if part is not None]
        if len(known) == len(parts) and _same_rows(known):
            return tuple(torch.cat(column) for column in zip(*known, strict=True))
    return None


def _same_rows(parts: list[tuple[Tensor, ...]]) -> bool:
    """Whether the datasets' tensors, position by position, hold rows of one dtype,
    device and shape: then joining them gives what stacking their samples gives."""
    first = parts[0]
    return all(
        len(part) == len(first)
        and all(
            (t.dtype, t.device, t.shape[1:]) == (f.dtype, f.device, f.shape[1:])
            for t, f in zip(part, first, strict=True)
        )
        for part in parts
    )


# The dtypes whose values a gather reads as the integers torch sees when it reads
# dataset[i] for each i. Unsigned ones only from numpy integers or Python ints: a uint8
# tensor indexes as a mask. uint64 values may not fit int64: read one by one.
_SIGNED_ROWS = (torch.int64, torch.int32, torch.int16, torch.int8)
_UNSIGNED_ROWS = (torch.uint8, torch.uint16, torch.uint32)


def integer_rows(indices: Any) -> Tensor | None:
    """``indices`` as an int64 (or int32) tensor of rows, where gathering a tensor's rows
    gives what stacking ``tensor[i]`` for each i gives (torch's way of reading them);
    else None.

    None (read the samples one by one) for indices that are not integers (floats and
    bools: torch's error, or a dimension more), tensors that are not 0-dim (a kept
    dimension), uint8 tensors (masks), what ``torch.as_tensor`` refuses (0-dim numpy
    arrays, reversed arrays), and no indices at all (torch's error for an empty batch).
    """
    try:
        rows = torch.as_tensor(indices)
    except (TypeError, ValueError, RuntimeError):
        return None
    if rows.dim() != 1 or rows.numel() == 0:
        return None
    first = indices[0]  # a 0-dim tensor for a tensor of indices
    if isinstance(first, Tensor) and first.dim() != 0:
        return None  # tensor([3]) would be read as 3, where tensor[tensor([3])] keeps a dim
    if rows.dtype in (torch.int64, torch.int32):
        return rows
    if rows.dtype in _SIGNED_ROWS or (
        rows.dtype in _UNSIGNED_ROWS and not isinstance(first, Tensor)
    ):
        return rows.long()  # torch indexes with int64 or int32 tensors only
    return None

"""Collation: how a DataLoader makes one batch out of the samples it read, as torch's.

``default_collate`` takes a batch's list of samples and stacks them along a new first
dimension, recursing into the samples' structure: the samples ``{"x": x_i, "y": y_i}``
give the batch ``{"x": stack(x_i), "y": tensor(y_i)}``. Each leaf is made as
``torch.utils.data.default_collate`` makes it:

    tensors                  stacked: torch.stack(values), one shape required
    numpy arrays             each as a tensor of its own dtype, then stacked
    numpy numbers            torch.as_tensor(values)
    a Python float first     torch.tensor(values, dtype=float64), so 0.1 stays 0.1
    an int (or bool) first   torch.tensor(values): int64 (bool for bools)
    str, bytes               the values as they are
    a mapping                the same mapping type, each key collated (else a dict)
    a namedtuple             the same namedtuple type, each field collated
    a list or sequence       the same type where it can be rebuilt, each position
                             collated (else a list); a tuple gives a tuple

The first sample decides each leaf's kind, as in torch. The one deliberate difference:
a tuple gives a tuple, where torch gives a list, so ``x, y = batch`` reads a batch as
a sample reads. ``default_convert``, what a loader without batching applies to each
sample, makes numpy arrays and numbers tensors and leaves everything else as it is.

Errors have torch's types and name the field and the samples: ``field x.0`` is key
``"x"``, then position 0, of each sample, and a sample is named by its dataset index
when a DataLoader collates (by its position in the batch otherwise).
"""

from __future__ import annotations

import copy
import numbers
import re
import sys
from collections.abc import Callable, Hashable, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

import torch
from torch import Tensor

# numpy dtypes of bytes, str, unicode and Python objects: nothing a tensor can hold
_NOT_NUMERIC_DTYPE = re.compile(r"[SaUO]")
_UNSUPPORTED = "batch must contain tensors, numpy arrays, numbers, dicts or lists"
_SPARSE = {torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc}

Path = tuple[Hashable, ...]  # the keys and positions from a sample down to a field


def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a batch's samples into one batch, field by field: what DataLoader does by default.

    ``[(x_0, y_0), (x_1, y_1)]`` gives ``(stack([x_0, x_1]), tensor([y_0, y_1]))``;
    dicts, namedtuples, lists and their nestings keep their structure, with every leaf
    collated as the module docstring lists. Call it from a ``collate_fn`` of your own
    to change one field and keep the rest. Unlike torch's, it gives a tuple for tuples
    (torch: a list), so that ``x, y = batch`` reads.

    Raises:
        TypeError: for a leaf of a type it cannot batch (None, a complex number, an
            array of strings), or one that differs from the first sample's.
        RuntimeError: for tensors of different shapes, or sequences of different
            lengths, in one field.
        KeyError: for a key of the first sample's that another sample lacks.
    """
    return collate_samples(batch, list(range(len(batch))))


def collate_samples(batch: Sequence[Any], indices: Sequence[int]) -> Any:
    """``default_collate``, naming the samples by their dataset ``indices`` in errors."""
    return _collate(batch, indices, ())


def default_convert(data: Any) -> Any:
    """A sample with its numpy arrays and numbers made tensors: a loader's ``collate_fn``
    without batching (``batch_size=None``).

    It recurses into mappings, namedtuples and sequences, which keep their types as in
    ``default_collate`` (a tuple stays a tuple, where torch's gives a list), and leaves
    everything else as it is: tensors, Python numbers, strings, numpy strings and arrays
    of strings or objects.
    """
    kind = type(data)
    if isinstance(data, Tensor):
        return data
    if kind.__module__ == "numpy" and kind.__name__ not in ("str_", "bytes_"):
        if kind.__name__ == "ndarray" and _NOT_NUMERIC_DTYPE.search(data.dtype.str):
            return data
        return torch.as_tensor(data)  # shares the array's memory, as torch's
    if isinstance(data, Mapping):
        return _rebuilt_mapping(data, {key: default_convert(data[key]) for key in data})
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # a namedtuple
        return kind(*(default_convert(value) for value in data))
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return _rebuilt_sequence(data, [default_convert(value) for value in data])
    return data


def _collate(batch: Sequence[Any], indices: Sequence[int], path: Path) -> Any:
    """One field of every sample (``path`` from the sample down to it), batched.

    The first sample's value decides how, in torch's order of checks: a numpy float
    is a numpy number (not a float), a bool an int.
    """
    first = batch[0]
    numpy = sys.modules.get("numpy")  # a numpy value means numpy is imported
    if isinstance(first, Tensor):
        return _stack(batch, indices, path)
    if numpy is not None and isinstance(first, numpy.ndarray):
        if _NOT_NUMERIC_DTYPE.search(first.dtype.str):
            raise TypeError(
                f"default_collate: {_UNSUPPORTED}; found {first.dtype} {_at(path, indices[0])}"
            )
        tensors = _numbers(torch.as_tensor, batch, indices, path, each=True)
        return _stack(tensors, indices, path)
    if numpy is not None and isinstance(first, (numpy.bool_, numpy.number, numpy.object_)):
        return _numbers(torch.as_tensor, batch, indices, path)
    if isinstance(first, float):  # float64 keeps a Python float's every digit
        return _numbers(
            lambda values: torch.tensor(values, dtype=torch.float64), batch, indices, path
        )
    if isinstance(first, int):
        return _numbers(torch.tensor, batch, indices, path)
    if isinstance(first, (str, bytes)):
        return batch
    if isinstance(first, Mapping):
        collated = {
            key: _collate(_column(batch, key, indices, path), indices, (*path, key))
            for key in first
        }
        return _rebuilt_mapping(first, collated)
    if isinstance(first, Sequence):
        names = getattr(first, "_fields", range(len(first)))  # a namedtuple's, or positions
        columns = _transposed(batch, indices, path)
        fields = [
            _collate(column, indices, (*path, name))
            for name, column in zip(names, columns, strict=True)
        ]
        if isinstance(first, tuple) and hasattr(first, "_fields"):
            return type(first)(*fields)
        return _rebuilt_sequence(first, fields)
    raise TypeError(f"default_collate: {_UNSUPPORTED}; found {type(first)} {_at(path, indices[0])}")


def _stack(batch: Sequence[Any], indices: Sequence[int], path: Path) -> Tensor:
    """The tensors of one field, stacked: (batch, *shape)."""
    first = batch[0]
    if first.is_nested or first.layout in _SPARSE:
        raise RuntimeError(
            f"default_collate: cannot batch nested or sparse tensors ({first.layout}) "
            f"{_at(path)}; give the DataLoader a collate_fn that does"
        )
    for value, index in zip(batch, indices, strict=True):
        if not isinstance(value, Tensor):
            raise TypeError(
                f"default_collate: expected a Tensor {_at(path, index)}, as at index "
                f"{indices[0]}, got {type(value).__name__}"
            )
    shapes = {tuple(value.shape) for value in batch}
    if len(shapes) != 1:
        raise RuntimeError(
            f"default_collate: expected tensors of one shape {_at(path)}, got "
            f"{sorted(shapes)} within the batch of indices {list(indices)}"
        )
    return torch.stack(list(batch))


def _numbers(
    make: Callable[[Any], Tensor],
    batch: Sequence[Any],
    indices: Sequence[int],
    path: Path,
    each: bool = False,
) -> Any:
    """``make(batch)`` (or ``make`` of each value): torch's conversion and error type,
    with the error naming the first sample whose value is not a number (or array)."""
    try:
        return [make(value) for value in batch] if each else make(batch)
    except (TypeError, ValueError, RuntimeError) as error:
        numpy = sys.modules.get("numpy")
        kinds: tuple[type, ...] = (numbers.Number, Tensor)
        kinds += (numpy.ndarray, numpy.generic) if numpy is not None else ()
        odd = [
            (i, value)
            for i, value in zip(indices, batch, strict=True)
            if not isinstance(value, kinds)
        ]
        if not odd:  # all numbers, which torch could still not combine
            raise type(error)(f"default_collate: {error} {_at(path)}") from error
        index, value = odd[0]
        raise type(error)(
            f"default_collate: expected a number {_at(path, index)}, as at index "
            f"{indices[0]}, got {type(value).__name__}"
        ) from error


def _column(batch: Sequence[Any], key: Hashable, indices: Sequence[int], path: Path) -> list[Any]:
    """Every sample's value at the first sample's ``key``, in a list (as torch's)."""
    column = []
    for sample, index in zip(batch, indices, strict=True):
        try:
            column.append(sample[key])
        except (KeyError, IndexError, TypeError) as error:  # torch raises these from sample[key]
            raise type(error)(
                f"default_collate: expected key {key!r} {_at(path, index)}, as at index "
                f"{indices[0]}, got a {type(sample).__name__} without it"
            ) from None
    return column


def _transposed(batch: Sequence[Any], indices: Sequence[int], path: Path) -> list[tuple[Any, ...]]:
    """The samples' sequences, position by position (each a tuple, as torch's zip)."""
    size = len(batch[0])
    for sample, index in zip(batch, indices, strict=True):
        if not hasattr(sample, "__len__"):
            raise TypeError(
                f"default_collate: expected a sequence {_at(path, index)}, as at index "
                f"{indices[0]}, got {type(sample).__name__}"
            )
        if len(sample) != size:  # torch's words, then which samples
            raise RuntimeError(
                f"default_collate: each element in list of batch should be of equal size: "
                f"{size} elements {_at(path, indices[0])}, {len(sample)} {_at(path, index)}"
            )
    return list(zip(*batch, strict=True))


def _rebuilt_mapping(like: Mapping[Any, Any], values: dict[Any, Any]) -> Mapping[Any, Any]:
    """``values`` in a mapping of ``like``'s type: a copy of ``like`` updated (it may hold
    more than its items, a defaultdict's factory say), or a new one; else a dict."""
    try:
        if isinstance(like, MutableMapping):
            rebuilt = copy.copy(like)
            rebuilt.update(values)
            return rebuilt
        return type(like)(values)  # type: ignore[call-arg]
    except TypeError:  # a type that cannot be copied, updated or built from a dict
        return values


def _rebuilt_sequence(like: Sequence[Any], items: list[Any]) -> Sequence[Any]:
    """``items`` in a sequence of ``like``'s type (a tuple for any tuple); else a list."""
    if isinstance(like, tuple):
        return tuple(items)  # torch: a list; nograd keeps x, y = batch
    try:
        if isinstance(like, MutableSequence):
            rebuilt = copy.copy(like)
            for position, item in enumerate(items):
                rebuilt[position] = item
            return rebuilt
        return type(like)(items)  # type: ignore[call-arg]
    except TypeError:  # a type that cannot be copied, assigned or built from a list (range)
        return items


def _at(path: Path, index: int | None = None) -> str:
    """Where a value is: "in field x.0 of the sample at index 3", or of every sample."""
    sample = "every sample" if index is None else f"the sample at index {index}"
    if not path:
        return f"in {sample}"
    return f"in field {'.'.join(str(key) for key in path)} of {sample}"

"""Dataset: the base class of the datasets read by index, as ``torch.utils.data.Dataset``.

A dataset read by index has a length and a ``__getitem__``: ``dataset[i]`` is sample i.
``DataLoader`` takes any object that has both (a list, a tensor, a class of your own),
so subclassing ``Dataset`` is optional; what it adds is torch's: ``a + b`` joins two
datasets into a ``ConcatDataset``, and ``isinstance(x, Dataset)`` holds for every
dataset of ``nograd.data`` (``IterableDataset`` streams included, as in torch)::

    class Squares(Dataset[tuple[Tensor, Tensor]]):
        def __len__(self) -> int:
            return 100
        def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
            x = torch.tensor([float(index)])
            return x, x * x

A dataset may also define ``__getitems__(indices)``, which returns the list of the
samples at a batch's indices in one call (one database query, say, rather than one per
sample): the loader then reads each batch with it, as torch's does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:  # concat.py builds on this module
    from nograd.data.concat import ConcatDataset

Sample = TypeVar("Sample", covariant=True)  # the type of one sample (IterableDataset's too)


class Dataset(Generic[Sample]):
    """Base class of the datasets read by index: ``dataset[i]`` is sample i.

    Subclasses define ``__getitem__``, and ``__len__`` for ``len(loader)`` and the
    default samplers (the module docstring shows one).
    """

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other: Any) -> ConcatDataset:
        """This dataset's samples, then ``other``'s (``nograd.data.concat``)."""
        from nograd.data.concat import ConcatDataset  # here: concat.py imports this module

        return ConcatDataset([self, other])


class Indexed(Protocol):
    """Anything with a length whose items come by index (tuples, dicts, tensors, ...):
    what ``DataLoader`` reads, whether it subclasses ``Dataset`` or not."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

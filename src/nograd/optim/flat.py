"""One flat buffer per param group: the whole update in one kernel per formula.

Every update rule is elementwise, so running it on one tensor that holds all of a
group's numbers end to end gives, bit for bit, what it gives tensor by tensor. On a
small network that matters: the reference network 2-25-25-25-2 has 8 parameter
tensors and 1427 numbers, and updating a tensor of 25 numbers costs as much as
updating one of 1427 (about 1 us of dispatch per kernel on a CPU), so SGD with
momentum falls from 3 x 8 kernels to 3 (2 with ``foreach.mul_add_``), Adam from 8 x 8 to 8.

``FlatGroup`` copies the parameters into one buffer ``data`` and makes each
``param.data`` a view of its slice, so the model reads and the optimizer writes the
same memory. Each slice starts on a 64-byte boundary, as a tensor of its own does:
MKL's matrix-vector product (a batch of one row) rounds differently for a weight that
starts elsewhere, and then nograd's numbers would stop being PyTorch's. The few
numbers of padding between slices are 0 in every buffer and stay 0 under every update
rule. Gradients are written straight into ``grad``: ``zero_grad()`` lends each
parameter its slice (``lend_grad_views``), and a layer computes the next gradient
into it (``Parameter.grad_out``; ``Linear`` does), as torch's AccumulateGrad reuses
a buffer that nobody else holds. A gradient that came as a new tensor (a layer that
takes no slice, ``model.zero_grad()``, ``p.grad = ...``) is copied in at the step,
one call for all. State tensors (momentum, moments) get a flat
buffer each, and ``optimizer.state`` keeps one view per parameter, so
``state_dict()`` is unchanged. Each step checks, by identity, that the parameters and
state are still these views (``model.to()``, ``load_state_dict`` or an assignment to
``param.data`` replace them); if not, the group is flattened again.

One update for all needs one history for all: the same state keys and the same
counters (Adam's t), which ``can_flatten`` checks. That check takes about 15 us for
the reference network's 8 tensors, most of an Adam step's 20, so it runs in full only
after something changed: a step tensor by tensor, a new ``param.data``, a
``load_state_dict``. Every other step checks, in one loop of about 1.5 us for 8
parameters, that each still has its ``data`` view and a gradient, that its state
is still the dict object the last full check saw, with as many entries, and that
each of its state tensors is still its view of the flat buffer
(``FlatGroup.grad_if_unchanged``). So an edit of ``optimizer.state`` between steps is
noticed if it replaces or deletes a parameter's dict (``del optimizer.state[p]``
starts that parameter afresh, as in torch), adds or removes a key, or replaces a
tensor; where the histories then differ, the group steps tensor by tensor, as torch's
does, until they agree again. A value changed in place (``state[p]["step"] = 0``) is
not noticed.

Only small CPU groups are flattened (``can_flatten``): for large tensors the
dispatch saved is nothing beside the copy of the gradients wherever they are not
lent (``model.zero_grad()``, layers that take no slice), and on a GPU the foreach
kernels already batch the launches.
"""

from __future__ import annotations

import itertools
import operator
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nograd.nn.parameter import Parameter
from nograd.optim import foreach

_GRAD = operator.attrgetter("grad")  # param.grad, read in C by map()

if TYPE_CHECKING:
    from nograd.optim.optimizer import GroupTensors

FLAT_MAX_NUMEL = 1 << 16  # past this the gradient copy costs more than the dispatch saved
ALIGN_BYTES = 64  # where torch's CPU allocator starts every tensor
# dtypes whose update ops round a number the same wherever it sits in a tensor. In half
# precision, add_ with an alpha rounds the numbers of full SIMD blocks differently from
# the tail's: in one flat buffer a parameter's numbers would sit elsewhere than in its
# own tensor, and the update would stop being torch's to the bit.
POSITION_FREE_DTYPES = (torch.float32, torch.float64)
# What ``remember_states`` notes for a parameter without state yet (read-only, never filled).
NO_STATE: Mapping[str, Any] = MappingProxyType({})


def can_flatten(
    params: Sequence[Parameter],
    state: Mapping[Parameter, Mapping[str, Any]],
    counters: frozenset[str],
    previous: FlatGroup | None = None,
) -> bool:
    """Whether a group's parameters can share one flat buffer and one update.

    They must be small dense CPU tensors of one dtype, float32 or float64, and each
    must own its memory (or live in the ``previous`` flat buffer of the group): a view
    of someone else's tensor, copied into the buffer, would stop sharing memory with it.
    They must also have the same history in the optimizer's ``state``: the same keys,
    each state tensor of one key in one dtype, and the same value of every counter
    (Adam's step t).
    """
    first = params[0].data
    if first.device.type != "cpu" or sum(param.numel() for param in params) > FLAT_MAX_NUMEL:
        return False
    if first.dtype not in POSITION_FREE_DTYPES:
        return False
    for param in params:
        data = param.data
        if data.dtype != first.dtype or data.layout != torch.strided or data.numel() == 0:
            return False
        if not (_owns_memory(data) or (previous is not None and previous.contains(data))):
            return False
    spans = sorted(_memory_span(param.data) for param in params)
    if any(end > next_start for (_, end), (next_start, _) in itertools.pairwise(spans)):
        return False
    states = [state.get(param, {}) for param in params]  # reading adds no entries
    keys = set(states[0])
    if any(set(state) != keys for state in states):
        return False
    for key in keys - counters:  # one flat buffer has one dtype: a float32 buffer made
        # before model.double() beside a float64 one made after must stay as it is
        if len({_dtype_of(state[key]) for state in states}) != 1:
            return False
    return all(len({float(state[key]) for state in states}) == 1 for key in counters & keys)


def _dtype_of(value: Any) -> torch.dtype | None:
    return value.dtype if isinstance(value, Tensor) else None


def _owns_memory(tensor: Tensor) -> bool:
    """Whether the tensor is the whole of its storage, not a view of a larger tensor."""
    return tensor.is_contiguous() and tensor.untyped_storage().nbytes() == _nbytes(tensor)


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _memory_span(tensor: Tensor) -> tuple[int, int]:
    """The bytes [start, end) of a contiguous tensor (two parameters must not overlap)."""
    return tensor.data_ptr(), tensor.data_ptr() + _nbytes(tensor)


# How many tensors share a storage's memory, by the storage's address (``_cdata``);
# None in a torch without the count (then ``lend_grad_views`` lends nothing)
_STORAGE_USE_COUNT: Callable[[int], int] | None = getattr(torch._C, "_storage_Use_Count", None)


class FlatGroup:
    """A group's parameters, gradients and state as views of flat buffers.

    Args:
        params: the parameters, in the group's order; each ``param.data`` becomes a
            view of ``data`` (same values, new tensor objects).

    Attributes:
        data: every parameter's values, end to end (1-D).
        grad: every parameter's gradient, end to end (1-D), written by the backward
            into the slices ``lend_grad_views`` lent, or copied in by ``gather_grads``.
        state_buffers: for each state key, the flat buffer behind every parameter's
            ``state[key]``; trust it only right after ``grad_if_unchanged`` passed.
        one_pass_mul_add: whether ``foreach.mul_add_`` may update these buffers
            (``foreach.one_pass_mul_add``: on the CPU, in float32 or float64). A group's
            dtype and device are its own for good, so this is asked once.
        step_tensors: the optimizer's lists for a step that ``grad_if_unchanged`` let
            through, kept for the next such step while ``grad`` is the same tensor
            (``Optimizer._with_grads``).
    """

    grad: Tensor
    step_tensors: GroupTensors | None = None
    _grad_views: list[Tensor]
    _slices_lent: bool  # whether a parameter was lent a slice of grad since it was made

    def __init__(self, params: Sequence[Parameter]) -> None:
        self.params = list(params)
        self._shapes = [param.data.shape for param in params]
        align = max(ALIGN_BYTES // params[0].data.element_size(), 1)  # in numbers
        self._offsets: list[int] = []  # where each parameter starts in the buffers
        end = 0
        for shape in self._shapes:
            start = -(-end // align) * align  # end, rounded up to the next boundary
            self._offsets.append(start)
            end = start + shape.numel()
        self._numel = end
        self.data = self._gather([param.data for param in params])
        self._data_views = self._split(self.data)
        for param, view in zip(params, self._data_views, strict=True):
            param.data = view
        self._new_grad_buffer()  # grad and _grad_views
        self._state: dict[str, tuple[Tensor, list[Tensor]]] = {}  # key -> (flat, views)
        self.state_buffers: dict[str, Tensor] = {}
        self._state_dicts: list[Mapping[str, Any]] = []  # see remember_states
        self._state_sizes: list[int] = []
        self._state_views: list[tuple[tuple[str, Tensor], ...]] = []  # see _note_state_views
        self.remember_states({})  # no state yet
        self.one_pass_mul_add = foreach.one_pass_mul_add([self.data], [self.data])
        # the optimizer's flag: False once a step went tensor by tensor, or after a
        # load_state_dict, until can_flatten passes again
        self.current = True

    def _split(self, flat: Tensor) -> list[Tensor]:
        """Views of ``flat`` with the parameters' shapes, each at its aligned offset."""
        return [
            flat[start : start + shape.numel()].view(shape)
            for start, shape in zip(self._offsets, self._shapes, strict=True)
        ]

    def _gather(self, tensors: Sequence[Tensor]) -> Tensor:
        """A new flat buffer holding ``tensors`` (one per parameter) at their offsets."""
        first = tensors[0]
        with torch.inference_mode(False):  # normal tensors, updatable in and out of that mode
            flat = torch.zeros(self._numel, dtype=first.dtype, device=first.device)
            torch._foreach_copy_(self._split(flat), list(tensors))
        return flat

    def holds(self, params: Sequence[Parameter]) -> bool:
        """Whether ``params`` are this group's, each ``.data`` still its view of ``data``."""
        return (
            len(params) == len(self.params)
            and all(map(operator.is_, params, self.params))
            and all(map(operator.is_, [param.data for param in params], self._data_views))
        )

    def remember_states(self, state: Mapping[Parameter, Mapping[str, Any]]) -> None:
        """Note each parameter's state dict, by identity, and its number of entries.

        Called when ``can_flatten`` has just passed; ``grad_if_unchanged`` compares with it.
        """
        self._state_dicts = [state.get(param, NO_STATE) for param in self.params]
        self._state_sizes = [len(entry) for entry in self._state_dicts]
        # a key the states no longer have (can_flatten found them all with the same
        # keys): its buffer goes, or the check would look for its views at every step
        for key in self._state.keys() - self._state_dicts[0].keys():
            del self._state[key], self.state_buffers[key]
        self._note_state_views()

    def grad_if_unchanged(
        self, params: Sequence[Parameter], state: Mapping[Parameter, Mapping[str, Any]]
    ) -> Tensor | None:
        """``grad``, holding every parameter's gradient, if nothing changed since the
        last full check (``can_flatten``); else None, and the optimizer checks again.

        The cheap stand-in, at every step, for ``can_flatten``: the parameters must be
        these, each ``param.data`` still its view and each with a gradient, and each
        parameter's state the dict ``remember_states`` saw, with as many entries, each
        flat state tensor still its view there. So this fails when a dict was replaced
        or deleted (``del optimizer.state[p]``), a key was added or removed, or a state
        tensor replaced (``state[p]["momentum_buffer"] = b``); the optimizer's own
        first step fills the dicts too, so the step after it runs the full check once
        more. Where this passes, ``state_buffers`` holds the flat state buffers, without
        another look. One loop for every check: the same loop notes whether each
        gradient is already its slice of ``grad`` (the usual step,
        ``lend_grad_views``); if not, they are copied in.
        """
        if len(params) != len(self.params):
            return None
        in_slices = True
        slices = self._grad_views  # read by index: a loop variable would hold a slice
        seen = (self.params, self._data_views, self._state_dicts, self._state_sizes)
        for i, (param, own, view, entry, size) in enumerate(zip(params, *seen, strict=True)):
            now = state.get(param, NO_STATE)
            if (
                param is not own
                or param.data is not view
                or param.grad is None
                or now is not entry
                or len(now) != size
            ):
                return None
            for key, state_view in self._state_views[i]:  # its views of the flat state
                if now.get(key) is not state_view:
                    return None
            in_slices = in_slices and param.grad is slices[i]
        if in_slices:
            return self.grad
        return self.gather_grads([param.grad for param in self.params])  # type: ignore[misc]

    def contains(self, tensor: Tensor) -> bool:
        """Whether ``tensor`` is a contiguous piece of ``data``."""
        start, end = _memory_span(self.data)
        return tensor.is_contiguous() and start <= tensor.data_ptr() < end

    def gather_grads(self, grads: list[Tensor]) -> Tensor:
        """Copy the parameters' gradients into ``grad`` and return it.

        Nothing to copy where the backward wrote each gradient into its slice
        (``lend_grad_views``): the usual step. Where slices were lent, the user's
        code may still hold one as an old gradient (``last = p.grad``), which must
        keep its numbers: the copy then goes into a new buffer.
        """
        if not all(map(operator.is_, grads, self._grad_views)):
            if self._slices_lent and self._held_elsewhere(grads):
                self._new_grad_buffer()
            torch._foreach_copy_(self._grad_views, grads)
        return self.grad

    def lend_grad_views(self) -> None:
        """Lend each parameter its slice of ``grad``, for the backward to write the
        next gradient into (``Parameter.grad_out``). The optimizer's ``zero_grad``
        calls this once it has set every ``param.grad`` to None.

        An old gradient that was such a slice, still held by the user's code (``last =
        p.grad``, a view of it, a numpy array on it), must keep its numbers, as torch's
        ``zero_grad()`` leaves old gradients alone: then the buffer is left to it, and
        the slices lent are those of a new one (``_held_elsewhere``).
        """
        if _STORAGE_USE_COUNT is None:  # this torch cannot tell who holds a slice
            return
        if self._slices_lent and self._held_elsewhere():
            self._new_grad_buffer()
        self._slices_lent = True
        for param, lent in zip(self.params, self._lent, strict=True):
            param.lent_grad = lent

    def slices_to_write(self) -> list[Tensor] | None:
        """The slices of ``grad``, for a caller that writes every gradient straight into
        them and makes each ``param.grad`` its slice (``nograd.TrainStep``: zero_grad and
        the backward in one); or None where code outside may still hold one of them as
        an old gradient, as ``lend_grad_views`` checks: the caller then runs
        ``zero_grad``, which leaves that buffer to it.
        """
        if _STORAGE_USE_COUNT is None:
            return None
        if self._slices_lent and self._held_elsewhere(list(map(_GRAD, self.params))):
            return None
        self._slices_lent = True
        return self._grad_views

    def _held_elsewhere(self, grads: Sequence[Tensor | None] | None = None) -> bool:
        """Whether code outside this group may hold a slice of ``grad`` or its memory.

        Two counts tell, each against its value when nobody else could hold them:
        the tensors that share the buffer's memory (``grad`` and its slices, or
        more), and each slice's Python references. ``grads``: the parameters'
        gradients now, one per slice, of which those that are their slice hold it
        twice (``param.grad`` and the list); None where no parameter has one.
        """
        count = _STORAGE_USE_COUNT
        if count is None or count(self._storage._cdata) != self._sharing_alone:
            return True
        references = list(map(sys.getrefcount, self._grad_views))  # counted before the loop
        if grads is not None and all(map(operator.is_, grads, self._grad_views)):
            return references != self._referenced_by_grads  # the usual: each is its slice
        if grads is not None:
            for i, (grad, view) in enumerate(zip(grads, self._grad_views, strict=True)):
                references[i] -= 2 * (grad is view)
        return references != self._referenced_alone

    def _new_grad_buffer(self) -> None:
        """A zero ``grad`` and its slices; the old ones stay with whoever holds them."""
        with torch.inference_mode(False):
            self.grad = torch.zeros_like(self.data)  # its padding stays 0
        self._grad_views = self._split(self.grad)
        # what lend_grad_views gives each parameter: (its data, its slice of grad)
        self._lent = list(zip(self._data_views, self._grad_views, strict=True))
        # the counts while nobody else holds the slices: the tensors sharing grad's
        # storage (this handle on it included), each slice's references
        self._storage = self.grad.untyped_storage()
        count = _STORAGE_USE_COUNT
        self._sharing_alone = None if count is None else count(self._storage._cdata)
        self._referenced_alone = list(map(sys.getrefcount, self._grad_views))
        # the same where each slice is its parameter's grad, in the list of grads
        self._referenced_by_grads = [count + 2 for count in self._referenced_alone]
        self._slices_lent = False

    def state(self, states: Sequence[dict[str, Any]], key: str) -> Tensor:
        """The flat buffer behind ``state[key]`` of every parameter.

        Tensors that are not yet its views (the first step, a loaded checkpoint) are
        copied into a new buffer, and each ``state[key]`` becomes a view of it.
        """
        tensors = [state[key] for state in states]
        held = self._state.get(key)  # (flat, views) from the last step, if any
        if held is not None and all(map(operator.is_, tensors, held[1])):
            return held[0]
        return self._adopt(states, key, self._gather(tensors))

    def new_state(self, states: Sequence[dict[str, Any]], key: str, value: Tensor) -> Tensor:
        """A copy of the flat ``value`` (padding 0) as the buffer behind ``state[key]``."""
        with torch.inference_mode(False):
            flat = value.clone()
        return self._adopt(states, key, flat)

    def _adopt(self, states: Sequence[dict[str, Any]], key: str, flat: Tensor) -> Tensor:
        views = self._split(flat)
        for state, view in zip(states, views, strict=True):
            state[key] = view
        self._state[key] = (flat, views)
        self.state_buffers[key] = flat
        self._note_state_views()
        return flat

    def _note_state_views(self) -> None:
        """For each parameter, the (key, view) of each flat state buffer, which
        ``grad_if_unchanged`` expects to find in its state dict."""
        self._state_views = [
            tuple((key, views[i]) for key, (_, views) in self._state.items())
            for i in range(len(self.params))
        ]

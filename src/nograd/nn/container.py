"""Sequential: a chain of modules, run forwards by ``forward`` and backwards by ``backward``."""

from __future__ import annotations

import operator
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, overload

from torch import Tensor

from nograd.nn import hooks, parameter
from nograd.nn.activations import ReLU
from nograd.nn.linear import Linear
from nograd.nn.module import NO_INPUT_GRAD, Module
from nograd.nn.uses import Use, saved_into, shares_a_module

Plan = list[Module | tuple[Linear, ReLU]]  # forward's steps: a module, or a Linear and its ReLU


class Sequential(Module):
    """y = f_n(... f_2(f_1(x))), with the chain rule run in reverse by ``backward``.

    Children are named "0", "1", ... as in ``torch.nn.Sequential`` (or by the keys of an
    ``OrderedDict`` passed alone), so state_dict keys such as ``"0.weight"`` match a
    torch.nn twin. It edits like torch's: ``append``, ``extend``, ``insert``, ``pop``,
    ``model[i] = m``, ``del model[i]`` (the children are numbered again), ``+`` and ``*``.

    Setting ``needs_input_grad = False`` says that nobody wants dL/d(input) (a training
    loop never does); ``fit`` does this for you. The chain tells its first child so,
    which saves the first layer's largest matrix product (after an edit, the first
    forward tells the new first child instead, and the old one that it is wanted
    again). The flag stays on that module: a chain that holds it, or a module with it
    inside, where its dL/d(input) is needed (a trained stem reused further on) sets it
    back when it plans, and each such change makes the other chains plan again (two
    chains that share a layer, trained in turns). A ``Sequential`` subclass with a
    ``backward`` of its own (a residual block: ``super().backward(g) + g``) is not told.
    Then a gradient also has to reach only the trainable parameters:
    ``backward`` starts at the first child that holds one, and returns
    ``NO_INPUT_GRAD``; the children before it (a frozen start, or layers with no
    parameters, such as a ``Flatten``) have nothing to learn, so their backward does
    not run at all, as torch's autograd stops where no tensor requires grad. The child
    it starts at is told that nobody wants its dL/d(input) for that one call only: the
    flag would otherwise stay on a module that other chains may hold (a trained body
    reused under a new stem). A nested chain there is told when the chain plans, as
    the first child is (its own plan depends on it). The chain plans this
    at its first forward after a change to its children, to a module's parameters or
    children anywhere (``Module.__setattr__``), or to a ``trainable`` flag
    (``nograd.nn.parameter.version`` counts them). A module's own tensors that are not
    registered ``Parameter``s do not count: a module that learns must register them.

    ``backward`` runs the children that the last forward ran, as torch differentiates
    the graph its forward recorded: a child added, removed or replaced in between takes
    part from the next forward on.

    A ``Linear`` followed by a ``ReLU`` runs its forward as one op (``Linear.forward_relu``),
    with the same numbers; both modules still save what their backward needs, so
    ``backward`` runs module by module as ever.

    A module keeps what one forward saved, so two chains need care, and get it here:

    - **One module used twice** (``act = Tanh(); Sequential(Linear(2, 4), act,
      Linear(4, 1), act)``, as torch allows): each use's ``saved`` tensors are kept
      aside after its forward and put back before its backward, so each use gets its
      own derivative and a shared Linear's weight receives both contributions.
    - **A module with** ``inplace=True`` overwrites its input, which the module before
      it may have saved (a Tanh's output, say). As torch does, ``backward`` then
      raises instead of returning a wrong gradient: before such a child's forward,
      the chain looks for a tensor saved in its input's memory (an inner chain lists
      its children's writes, for the chain around it to look too). Only modules that
      a gradient reaches count, as in torch: none before the first trainable
      parameter when ``needs_input_grad`` is False (a frozen start, under ``fit``).

    Chains with neither run without this bookkeeping (``nograd/nn/uses.py``). It is
    planned with the rest (above); a plain attribute changed inside a child after that,
    such as a ReLU's ``inplace``, is not seen.

    Shape:
        input: whatever the first module takes -> output: whatever the last returns.
    """

    # every child is a Module here: a Sequential refuses the empty slots (None) that
    # Module allows, which would break the chain
    _modules: OrderedDict[str, Module]  # type: ignore[assignment]
    _plan: Plan | None = None  # forward's steps, made from the children when first needed
    _calls: tuple[Callable[[Tensor], Tensor], ...] = ()  # the plan's steps as functions
    # each child and the modules inside it, where forward keeps books (a module used
    # twice, or one with inplace=True); None where it need not
    _subtrees: list[list[Module]] | None = None
    _shared: bool = False  # a module used twice: each use's saved tensors are kept aside
    _hooks_version: int = -1  # hooks.version when the plan was made: hooks change fusion
    _parameters_version: int = -1  # parameter.version then: trainable flags move the start
    # the children as the last plan ran them: backward runs these, as torch runs the graph
    # its forward recorded, even if a child was added or removed in between
    _planned: tuple[Module, ...] | None = None
    _start: int = 0  # the first of them that a gradient must reach (class docstring)
    _backward_chain: tuple[Module, ...] | None = None  # _planned[_start:], last first
    _input_grad_unwanted: bool = False  # needs_input_grad = False was set on the chain
    _told_first: Module | None = None  # the child told so (the first, unless used again)
    _told_start: Sequential | None = None  # a nested chain told so where the backward starts

    def __init__(self, *modules: Module | OrderedDict[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, child in modules[0].items():  # named children, as torch allows
                self._check(child)
                self.add_module(name, child)
            return
        for module in modules:
            self.append(module)  # type: ignore[arg-type]  # append checks it is a Module

    def __setattr__(self, name: str, value: Any) -> None:
        if value is None and name in self._modules:  # torch accepts it, then fails in forward
            raise TypeError(
                f"Sequential: cannot set child {name!r} to None; remove it with del model[i]"
            )
        super().__setattr__(name, value)
        object.__setattr__(self, "_plan", None)  # the children may have changed: plan again

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        object.__setattr__(self, "_plan", None)

    def add_module(self, name: str, module: Module | None) -> None:
        self._check(module)
        super().add_module(name, module)

    @staticmethod
    def _check(module: object) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: expected a Module, got {type(module).__name__}")

    def append(self, module: Module) -> Sequential:
        self._check(module)
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> Sequential:
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> Sequential:
        """Put ``module`` before position ``index``; the children are numbered again."""
        self._check(module)
        modules = list(self._modules.values())
        n = len(modules)
        if not -n <= index <= n:
            raise IndexError(f"Sequential: index {index} out of range for {n} modules")
        modules.insert(index + n if index < 0 else index, module)  # -1: before the last
        self._renumber(modules)
        return self

    def pop(self, index: int | slice) -> Module | Sequential:
        """Remove and return the module at ``index`` (a Sequential for a slice)."""
        popped = self[index]
        del self[index]
        return popped

    def _renumber(self, modules: list[Module]) -> None:
        """Make ``modules`` the children, named "0", "1", ... (as torch renumbers them)."""
        for name in list(self._modules):
            delattr(self, name)
        for module in modules:
            self.append(module)

    def overwrites_input(self) -> bool:
        return bool(self._modules) and next(iter(self._modules.values())).overwrites_input()

    @property
    def needs_input_grad(self) -> bool:
        if not self._modules or self._input_grad_unwanted:
            return False
        return next(iter(self._modules.values())).needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value: bool) -> None:
        object.__setattr__(self, "_input_grad_unwanted", not value)
        object.__setattr__(self, "_plan", None)  # the start moves: plan again at the forward
        self._tell_first()
        if value and self._modules:
            _set_needs_input_grad(next(iter(self._modules.values())), True)

    def _tell_first(self) -> None:
        """Pass ``needs_input_grad = False``, set on the chain, to its first child; again
        at the first forward after an edit (a backward runs the chain its forward ran): a
        child told so earlier that is no longer first, or is now used again further on,
        needs its dL/d(input) once more."""
        children = list(self._modules.values())
        first = children[0] if self._input_grad_unwanted and children else None
        self._tell("_told_first", first if _may_tell(first, children[1:]) else None)

    def _tell_start(self, modules: list[Module], start: int) -> None:
        """Tell a nested chain where the backward starts (after the first child) that
        nobody wants its dL/d(input), for good, as the first child is told: its own plan
        (where its backward starts, which saved tensors matter) is made at its forward.
        A leaf there is told at the backward instead, for that call only
        (``_backward_to_start``). The chain told before is told it is wanted again."""
        child = modules[start] if self._input_grad_unwanted and 0 < start < len(modules) else None
        nested = isinstance(child, Sequential) and _may_tell(child, modules[start + 1 :])
        self._tell("_told_start", child if nested else None)

    def _tell(self, slot: str, child: Module | None) -> None:
        """Tell ``child`` (None: none) that nobody wants its dL/d(input), and the module
        told so before, noted in ``slot``, that it is wanted again if it is another."""
        told = getattr(self, slot)
        if told is not None and told is not child:
            _set_needs_input_grad(told, True)
        if child is not None:
            _set_needs_input_grad(child, False)
        object.__setattr__(self, slot, child)

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy``, ``deepcopy`` and ``pickle`` keep: not the plan, which the new
        module makes at its first forward (``hooks.version`` counts in this process only)."""
        state = self.__dict__.copy()
        for name in _PLAN_ATTRIBUTES:
            state.pop(name, None)
        return state

    def forward(self, x: Tensor) -> Tensor:
        plan = self._plan
        if (
            plan is None
            or self._hooks_version != hooks.version
            or self._parameters_version != parameter.version
        ):
            plan = self._make_plan()
        if self._subtrees is not None:
            return self._forward_keeping_books(x, plan, self._subtrees)
        for call in self._calls:  # a child's forward, or a Linear and its ReLU in one op
            x = call(x)
        return x

    def _make_plan(self) -> Plan:
        """Pair each Linear with the ReLU right after it (exactly these classes).

        A subclass may override ``forward``, so only the classes themselves are fused,
        and only where neither has hooks, which must see the Linear's own output.
        Also decides whether forward must record each use of a module, and where the
        backward starts (class docstring).
        """
        modules = list(self._modules.values())
        plan: Plan = []
        i = 0
        while i < len(modules):
            module = modules[i]
            following = modules[i + 1] if i + 1 < len(modules) else None
            if (
                type(module) is Linear
                and type(following) is ReLU
                and not (hooks.has_hooks(module) or hooks.has_hooks(following))
            ):
                plan.append((module, following))
                i += 2
            else:
                plan.append(module)
                i += 1
        subtrees = [list(module.modules()) for module in modules]  # each child and its insides
        uses = Counter(id(inner) for subtree in subtrees for inner in subtree)
        shared = any(count > 1 for count in uses.values())
        # a ReLU(inplace=True) fused with its Linear overwrites nothing anyone saved
        fused = {id(module) for step in plan if isinstance(step, tuple) for module in step}
        alone = [subtree for subtree in subtrees if id(subtree[0]) not in fused]
        inplace = any(_may_overwrite_input(inner) for subtree in alone for inner in subtree)
        object.__setattr__(self, "_subtrees", subtrees if shared or inplace else None)
        object.__setattr__(self, "_shared", shared)
        for books in ("uses", "overwritten", "written"):
            self.saved.pop(books, None)  # recorded for the old children
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_planned", tuple(modules))
        start = _first_that_learns(modules) if self._input_grad_unwanted else 0
        object.__setattr__(self, "_start", start)
        object.__setattr__(self, "_backward_chain", tuple(reversed(modules[start:])))
        if self._input_grad_unwanted:
            self._tell_first()
        self._tell_start(modules, start)
        # the children whose dL/d(input) this chain needs, and every module inside them,
        # told otherwise by another chain that held one first (a trained stem reused
        # further on): wanted again
        for child in modules[start + 1 :] if self._input_grad_unwanted else modules:
            for inner in child.modules():
                _set_needs_input_grad(inner, True)
        # each step as the function forward calls: found once here, not at every step
        calls = [
            partial(s[0].forward_relu, s[1]) if isinstance(s, tuple) else s.forward for s in plan
        ]
        object.__setattr__(self, "_calls", tuple(calls))
        object.__setattr__(self, "_hooks_version", hooks.version)
        object.__setattr__(self, "_parameters_version", parameter.version)
        return plan

    def _forward_keeping_books(self, x: Tensor, plan: Plan, subtrees: list[list[Module]]) -> Tensor:
        """forward for a chain that shares a module or overwrites an input (class docstring)."""
        uses: list[Use] = []  # a shared chain's record of each use, for its backward
        saved: list[tuple[Module, dict[str, Any]]] = []  # what each module run so far saved
        overwritten: list[str] = []  # why the backward must refuse, if it must
        # each in-place write (the module, the memory it wrote into), told to the chain
        # around this one, whose modules before this chain may have saved that memory
        written: list[tuple[Module, Tensor]] = []
        position = 0
        for step in plan:
            # an inner chain's children write after its first: it lists its writes itself
            if not isinstance(step, (tuple, Sequential)) and step.overwrites_input():
                written.append((step, x))
                _check_write(step, x, saved, overwritten)
            x = step[0].forward_relu(step[1], x) if isinstance(step, tuple) else step.forward(x)
            if isinstance(step, Sequential):
                for writer, memory in step.saved.get("written", ()):
                    written.append((writer, memory))
                    _check_write(writer, memory, saved, overwritten)
            for _ in step if isinstance(step, tuple) else (step,):
                if self._shared:
                    uses.append(Use.record(subtrees[position]))
                # what a module saved matters only where its backward runs: not before the
                # start (a frozen or parameter-free one, under fit), as torch records no graph
                # there; unshared, each module runs once: its saved dict is this use's
                if position >= self._start:
                    saved.extend(uses[-1].saved if self._shared else _saved_in(subtrees[position]))
                position += 1
        self.saved.update(uses=uses, overwritten=overwritten, written=written)
        return x

    def backward(self, grad_output: Tensor) -> Tensor:
        # a chain that keeps books (its forward set "uses") goes through backward_order,
        # as does one with no forward yet (its children then say that they need one)
        chain = self._backward_chain
        in_order = chain is None or "uses" in self.saved  # through backward_order
        modules: Iterable[Module] = self.backward_order() if in_order or chain is None else chain
        if self._start:  # a frozen or parameter-free start: its children run no backward
            return self._backward_to_start(grad_output, modules, len(chain or ()))
        for module in modules:
            # dL/d(in_k) from dL/d(out_k) by the chain rule; the module before (k - 1)
            # takes it as its dL/d(out), since in_k = out_{k-1}
            grad_output = module.backward(grad_output)
        return grad_output

    def _backward_to_start(
        self, grad_output: Tensor, modules: Iterable[Module], count: int
    ) -> Tensor:
        """``backward`` through the ``count`` children from the last to the one the
        backward starts at, which is told, for this call only, that nobody wants its
        dL/d(input) (class docstring); nobody gets one."""
        for k, module in enumerate(modules, 1):
            if k < count:
                grad_output = module.backward(grad_output)  # dL/d(in_k) = dL/d(out_{k-1})
            else:
                _backward_unwanted(module, grad_output)
        return NO_INPUT_GRAD

    def backward_order(self) -> Iterator[Module]:
        """The children that a gradient must reach, last first, each ready for its
        backward (also for code that runs the children's backward itself): in a chain
        that shares a module, each use's saved tensors are put back before it is yielded.
        All the children, unless ``needs_input_grad`` is False (class docstring).

        Raises:
            RuntimeError: if a child with ``inplace=True`` overwrote a tensor that a module
                before it saved (torch raises too: "modified by an inplace operation").
        """
        overwritten: list[str] = self.saved.get("overwritten", [])
        if overwritten:
            raise RuntimeError(
                f"Sequential.backward: {overwritten[0]} saved for its backward (modified in "
                f"place after its forward), so its gradient would be wrong; use inplace=False"
            )
        uses: list[Use] = self.saved.get("uses", [])
        if not uses:  # no module used twice: each holds its one use's tensors
            planned = self._backward_chain
            yield from reversed(self._chain()) if planned is None else planned
            return
        for use in reversed(uses[self._start :]):  # a use for each child, in order
            yield use.restore()

    def _chain(self) -> tuple[Module, ...]:
        """The children the last forward ran (all of them now, before any forward)."""
        return tuple(self._modules.values()) if self._planned is None else self._planned

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __dir__(self) -> list[str]:
        """As torch's: the children's numbers ("0", "1", ...) are left out."""
        return [name for name in super().__dir__() if not name.isdigit()]

    @overload
    def __getitem__(self, index: int) -> Module: ...

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...

    def __getitem__(self, index: int | slice) -> Module | Sequential:
        if isinstance(index, slice):
            sliced = Sequential()
            for name, module in list(self._modules.items())[index]:
                sliced.add_module(name, module)  # keep the names, as torch does
            return sliced
        return self._modules[self._name_at(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        self._check(module)
        setattr(self, self._name_at(index), module)  # the child's name stays

    def __delitem__(self, index: int | slice) -> None:
        names = list(self._modules)
        doomed = set(names[index]) if isinstance(index, slice) else {self._name_at(index)}
        self._renumber([module for name, module in self._modules.items() if name not in doomed])

    def _name_at(self, index: int) -> str:
        """The name of the child at position ``index`` (negative counts from the end)."""
        try:
            # an int, or what torch takes as one (numpy's int64, a 0-d integer tensor);
            # a bool is refused, though torch reads True as 1
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)
        except TypeError:
            raise TypeError(
                f"Sequential: expected an int or a slice as index, got {type(index).__name__}"
            ) from None
        names = list(self._modules)
        if not -len(names) <= index < len(names):
            raise IndexError(f"Sequential: index {index} out of range for {len(names)} modules")
        return names[index]

    def __add__(self, other: Sequential) -> Sequential:
        """A new Sequential of this one's modules, then ``other``'s (the same objects).

        Raises:
            ValueError: ``other`` is not a Sequential (a list, a ModuleList), as in torch.
        """
        self._check_addend(other)
        return Sequential(*self, *other)

    def __iadd__(self, other: Sequential) -> Sequential:
        """Append ``other``'s modules to this one (the same objects); raises as ``+``."""
        self._check_addend(other)
        return self.extend(list(other))

    @staticmethod
    def _check_addend(other: object) -> None:
        """Refuse anything but a Sequential after + or +=, with torch's ValueError."""
        if not isinstance(other, Sequential):
            raise ValueError(
                f"Sequential: expected another Sequential after + or +=, got {type(other).__name__}"
            )

    def __mul__(self, times: int) -> Sequential:
        """A new Sequential of this one's modules ``times`` over: the same objects, shared."""
        if isinstance(times, bool) or not isinstance(times, int):
            return NotImplemented
        if times <= 0:
            raise ValueError(f"Sequential: expected a positive number of repeats, got {times}")
        return Sequential(*(list(self) * times))

    def __rmul__(self, times: int) -> Sequential:
        return self.__mul__(times)

    def __imul__(self, times: int) -> Sequential:
        repeated = self.__mul__(times)
        if repeated is NotImplemented:
            return NotImplemented
        self._renumber(list(repeated))
        return self


# what a Sequential plans, left out of its copies and pickles
_PLAN_ATTRIBUTES = (
    "_plan",
    "_calls",
    "_subtrees",
    "_shared",
    "_hooks_version",
    "_parameters_version",
    "_planned",
    "_start",
    "_backward_chain",
)


def _backward_unwanted(module: Module, grad_output: Tensor) -> None:
    """``module.backward(grad_output)`` with its ``needs_input_grad`` False for that call
    only, then as it was (a module that other chains may hold keeps no such flag). A
    nested chain, whose flag is a property, was told when its chain planned."""
    if not isinstance(getattr(type(module), "needs_input_grad", None), bool):
        module.backward(grad_output)
        return
    own = module.__dict__.get("needs_input_grad")  # set by a chain that holds it first
    object.__setattr__(module, "needs_input_grad", False)
    try:
        module.backward(grad_output)
    finally:
        if own is None:
            del module.__dict__["needs_input_grad"]  # the class's True again
        else:
            object.__setattr__(module, "needs_input_grad", own)


def _set_needs_input_grad(module: Module, value: bool) -> None:
    """Set a module's ``needs_input_grad`` where it differs, and move ``parameter.version``:
    another chain that holds the module plans again at its next forward, to tell it or
    set it back as that chain needs (two chains that share a module, trained in turns)."""
    if module.needs_input_grad != value:
        module.needs_input_grad = value
        parameter.changed()


def _may_tell(child: Module | None, later: list[Module]) -> bool:
    """Whether ``child`` may be told that nobody wants its dL/d(input): not if it is
    used again among the ``later`` children (that use must pass dL/d(input) down the
    chain), nor if it is a Sequential whose own ``backward`` adds to its chain's
    dL/d(input) (a residual block: ``super().backward(g) + g``), which must then exist."""
    if child is None or shares_a_module(child, later):
        return False
    return not (isinstance(child, Sequential) and type(child).backward is not Sequential.backward)


def _first_that_learns(children: list[Module]) -> int:
    """The position of the first child that holds a trainable parameter (the number of
    children if none does): where a backward must start when nobody wants dL/d(input)."""
    for position, child in enumerate(children):
        if any(p.trainable for p in child.parameters()):
            return position
    return len(children)


def _may_overwrite_input(module: Module) -> bool:
    """Whether a module may write into its input at some forward (the plan is made once).

    nograd's modules say so with torch's ``inplace`` flag (Dropout's
    ``overwrites_input()`` also depends on the mode, which can change after the plan);
    a module of the user's that overrides ``overwrites_input`` may, whatever it answers
    now. A ``Sequential`` answers for its first child, which is planned on its own.
    """
    if hasattr(module, "inplace"):
        return bool(module.inplace)
    if isinstance(module, Sequential):
        return False
    return type(module).overwrites_input is not Module.overwrites_input


def _saved_in(subtree: list[Module]) -> list[tuple[Module, dict[str, Any]]]:
    """Each module of ``subtree`` with what it saved."""
    return [(inner, inner.saved) for inner in subtree]


def _check_write(
    writer: Module, memory: Tensor, saved: list[tuple[Module, dict[str, Any]]], why: list[str]
) -> None:
    """Add to ``why`` that ``writer`` destroys a tensor of ``saved`` by writing into ``memory``."""
    owner = saved_into(memory, saved)
    if owner is not None:
        why.append(f"{writer._describe()} overwrote a tensor {owner._describe()}")

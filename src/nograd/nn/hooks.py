"""Hooks: functions a module calls around its forward and its backward.

As in ``torch.nn.Module``, a hook sees what flows through a module, and may change it::

    activations = {}
    def keep(module, args, output):                # a forward hook
        activations[module] = output
    handle = model[2].register_forward_hook(keep)
    model(x)                                       # activations[model[2]] is its output
    handle.remove()

The four kinds, in the order they run:

- forward pre-hook ``hook(module, args) -> None or new args`` before ``forward``;
- forward hook ``hook(module, args, output) -> None or new output`` after it;
- backward pre-hook ``hook(module, grad_output) -> None or new grad_output`` before
  ``backward``;
- backward hook ``hook(module, grad_input, grad_output) -> None or new grad_input``
  after it.

``args``, ``grad_output`` and ``grad_input`` are tuples: the arguments ``forward`` or
``backward`` was called with, and ``(dL/d(input),)``, which is ``(None,)`` where the
module was told that nobody needs it (``needs_input_grad = False``), as torch passes
None for an input that does not require grad. A hook that returns a single tensor
instead of a tuple has it wrapped in one. As in torch, a forward hook registered
``with_kwargs=True`` also gets the keyword arguments (always ``{}`` here: nograd's
modules take positional ones), and one registered ``always_call=True`` runs even when
``forward`` raised.

Hooks are Python: inside a CUDA graph (``fit(cuda_graph=True)``) they run while the
step is captured, not at each replay, as with torch's graphs.

Limits, each rarer than the case it keeps fast:

- a hook that changes a tensor in place (``output.mul_(2)``) gets no warning: under
  ``torch.inference_mode`` (``fit``) tensors keep no version counter to tell;
- a hook registered during a forward, on a child that a ``Sequential`` has not reached
  yet, runs from that Sequential's next forward on (torch: from the next call);
- every ``Sequential`` plans again at its next forward when any hook anywhere comes
  or goes (``version``): a few microseconds, not a cost for hooks kept while training;
- a forward pre-hook that replaces the input of an ``inplace=True`` child in a
  ``Sequential`` does not spare it the check for overwritten saved tensors.

How they cost nothing where there are none: a module without hooks runs its class's
``forward`` and ``backward`` directly. Registering the first hook of a kind sets an
instance attribute, ``module.forward`` or ``module.backward``, to a ``HookedForward`` or
``HookedBackward`` that runs the hooks around the class's method; removing the last
one deletes it. Whoever calls ``module.forward(x)`` (``Sequential`` does, for each
child) calls the hooks too. A ``Sequential`` runs a Linear and the ReLU after it as
one op only where neither has hooks, and plans again when hooks come or go
(``version``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import Tensor

if TYPE_CHECKING:
    from nograd.nn.module import Module

Hook = Callable[..., Any]  # its arguments and return value: the module docstring


class Entry(NamedTuple):
    """A registered hook and how it is called."""

    hook: Hook
    with_kwargs: bool = False  # forward hooks: also called with the keyword arguments
    always_call: bool = False  # forward hooks: called even when forward raised


Hooks = dict[int, Entry]

# Counts every change to any module's hooks; a Sequential plans again when it moved.
version = 0
_ids = itertools.count()  # each hook's key in its module's dict, unique across modules

# the instance attribute set for each kind, and the dict it reads the hooks from
FORWARD_KINDS = ("_forward_pre_hooks", "_forward_hooks")
BACKWARD_KINDS = ("_backward_pre_hooks", "_backward_hooks")


class RemovableHandle:
    """What ``register_*_hook`` returns: ``remove()`` takes the hook off its module
    (or optimizer: ``nograd.optim.hooks``).

    Also a context manager: the hook is removed when the ``with`` block ends.
    """

    def __init__(self, remove: Callable[[], None], key: int) -> None:
        self._remove, self.id = remove, key

    def remove(self) -> None:
        """Take the hook off (again: nothing happens)."""
        self._remove()

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def add(
    module: Module,
    kind: str,
    hook: Hook,
    prepend: bool,
    with_kwargs: bool = False,
    always_call: bool = False,
) -> RemovableHandle:
    """Register ``hook`` of ``kind`` (a name in FORWARD_KINDS or BACKWARD_KINDS)."""
    global version
    if not callable(hook):
        raise TypeError(
            f"{module._describe()}: expected a callable hook, got {type(hook).__name__}"
        )
    hooks: Hooks = module.__dict__.setdefault(kind, {})
    key = next(_ids)
    hooks[key] = Entry(hook, with_kwargs, always_call)
    if prepend:  # first to run: put it before the others (dicts keep insertion order)
        for other in [k for k in hooks if k != key]:
            hooks[other] = hooks.pop(other)
    if kind in FORWARD_KINDS and "forward" not in module.__dict__:
        object.__setattr__(module, "forward", HookedForward(module))
    if kind in BACKWARD_KINDS and "backward" not in module.__dict__:
        object.__setattr__(module, "backward", HookedBackward(module))
    version += 1
    return RemovableHandle(functools.partial(remove, module, kind, key), key)


def remove(module: Module, kind: str, key: int) -> None:
    """Take hook ``key`` off; with the last of forward's or backward's, the wrapper too."""
    global version
    hooks: Hooks = module.__dict__.get(kind, {})
    if hooks.pop(key, None) is None:
        return
    for kinds, method in ((FORWARD_KINDS, "forward"), (BACKWARD_KINDS, "backward")):
        if kind in kinds and not any(module.__dict__.get(k) for k in kinds):
            module.__dict__.pop(method, None)  # the class's method again
    version += 1


def rebind(module: Module) -> None:
    """Give a copied or unpickled module wrappers of its own (a copy of the original's
    would still run the original module), over the hook dicts it was given."""
    if "forward" in module.__dict__:
        object.__setattr__(module, "forward", HookedForward(module))
    if "backward" in module.__dict__:
        object.__setattr__(module, "backward", HookedBackward(module))


def has_hooks(module: Module) -> bool:
    """Whether ``module.forward`` or ``module.backward`` runs hooks."""
    return "forward" in module.__dict__ or has_backward_hooks(module)


def has_backward_hooks(module: Module) -> bool:
    """Whether ``module.backward`` runs hooks."""
    return "backward" in module.__dict__


_suspended = False  # within suspended(): every hooked module runs as if it had no hooks


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Within the block, modules run without their hooks.

    For the library's own calls that are not the user's forward: ``fit`` runs one
    sample through the model to check the data, which a hook collecting activations
    should not see (a torch training loop makes no such call).
    """
    global _suspended
    previous, _suspended = _suspended, True
    try:
        yield
    finally:
        _suspended = previous


def _warn_not_differentiated(module: Module, entry: Entry) -> None:
    """A forward hook changed a value: nothing will differentiate what it did.

    The warnings module shows a message once per place, so a training loop warns once.
    """
    name = getattr(entry.hook, "__qualname__", repr(entry.hook))
    warnings.warn(
        f"{module._describe()}: forward hook {name} changed a value, and its derivative is "
        f"not in backward, which is the module's own: register a full backward hook that "
        f"applies it (or filter this warning if it needs none)",
        stacklevel=4,
    )


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


class HookedForward:
    """``module.forward`` while the module has forward hooks: pre-hooks, the class's
    forward, hooks. A forward that calls ``self.forward`` again (``Linear`` on an input
    of more than two dimensions does) runs the hooks once, for the outer call."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.running = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, forward = self.module, type(self.module).forward
        if self.running or _suspended:  # the module's own inner call, or hooks set aside
            return forward(module, *args, **kwargs)
        post = list(module.__dict__.get("_forward_hooks", {}).values())
        output, called = None, 0  # called: how many of post have run
        try:  # as torch: a pre-hook that raises runs the always_call hooks too
            for entry in list(module.__dict__.get("_forward_pre_hooks", {}).values()):
                args, kwargs = self._run_pre_hook(entry, args, kwargs)
            self.running = True
            try:
                output = forward(module, *args, **kwargs)
            finally:
                self.running = False
            for entry in post:
                called += 1
                changed = self._run_forward_hook(entry, args, kwargs, output)
                if changed is not None and changed is not output:
                    _warn_not_differentiated(module, entry)
                    output = changed
        except Exception:
            self._run_always_called(post[called:], args, kwargs, output)
            raise
        return output

    def _run_pre_hook(
        self, entry: Entry, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments after one pre-hook: what it returned, or the same."""
        new_args, new_kwargs = args, kwargs
        if entry.with_kwargs:  # hook(module, args, kwargs) -> None or (args, kwargs)
            changed = entry.hook(self.module, args, kwargs)
            if changed is not None:
                if not (isinstance(changed, tuple) and len(changed) == 2):  # as torch
                    raise RuntimeError(
                        f"{self.module._describe()}: a forward pre-hook with kwargs must "
                        f"return None or a tuple (new_args, new_kwargs), got {changed!r}"
                    )
                new_args, new_kwargs = _as_tuple(changed[0]), changed[1]
        else:
            changed = entry.hook(self.module, args)
            if changed is not None:
                new_args = _as_tuple(changed)
        if len(new_args) != len(args) or any(map(operator.is_not, new_args, args)):
            _warn_not_differentiated(self.module, entry)  # a new value, not the one given
        return new_args, new_kwargs

    def _run_always_called(
        self, entries: list[Entry], args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        """After forward (or a forward hook) raised: the hooks registered with
        ``always_call`` that have not run yet. Their own errors become warnings, as in
        torch, so that the first error is the one raised."""
        for entry in entries:
            if not entry.always_call:
                continue
            try:
                self._run_forward_hook(entry, args, kwargs, output)
            except Exception as error:
                warnings.warn(
                    f"{self.module._describe()}: a forward hook with always_call=True raised "
                    f"{error!r}, silenced since forward had raised already",
                    stacklevel=3,
                )

    def _run_forward_hook(
        self, entry: Entry, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        if entry.with_kwargs:
            return entry.hook(self.module, args, kwargs, output)
        return entry.hook(self.module, args, output)


class HookedBackward:
    """``module.backward`` while the module has backward hooks: pre-hooks on dL/d(output),
    the class's backward, hooks on dL/d(input)."""

    def __init__(self, module: Module) -> None:
        self.module = module

    def __call__(self, *grad_output: Any) -> Any:
        from nograd.nn.module import NO_INPUT_GRAD

        module = self.module
        for entry in list(module.__dict__.get("_backward_pre_hooks", {}).values()):
            changed = entry.hook(module, grad_output)
            if changed is not None:
                grad_output = self._replaced_grads(grad_output, changed, "grad_output")
        grad = type(module).backward(module, *grad_output)
        grad_input: tuple[Tensor | None, ...] = (None if grad is NO_INPUT_GRAD else grad,)
        for entry in list(module.__dict__.get("_backward_hooks", {}).values()):
            changed = entry.hook(module, grad_input, grad_output)
            if changed is not None:
                grad_input = self._replaced_grads(grad_input, changed, "grad_input")
        first = grad_input[0]
        return NO_INPUT_GRAD if first is None else first

    def _replaced_grads(self, grads: tuple[Any, ...], changed: Any, name: str) -> tuple[Any, ...]:
        """What a backward hook returned, in place of ``grads``: a tuple or a list (as
        torch takes either) of as many gradients, or one tensor, taken as a tuple of one.

        Raises:
            RuntimeError: another number of gradients, as torch raises.
        """
        if isinstance(changed, Tensor):
            return (changed,)
        replaced = tuple(changed)
        if len(replaced) != len(grads):
            raise RuntimeError(
                f"{self.module._describe()}: expected a backward hook to return "
                f"{len(grads)} value(s) for {name}, got {len(replaced)}"
            )
        return replaced

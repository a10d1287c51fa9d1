"""Optimizer hooks: functions an optimizer calls around ``step``, ``state_dict`` and
``load_state_dict``, with ``torch.optim.Optimizer``'s signatures and order.

A hook sees the optimizer at the moments a training loop cannot reach from outside
without wrapping it::

    updates = []
    def count(optimizer, args, kwargs):                 # a step post-hook
        updates.append(optimizer.param_groups[0]["lr"])
    handle = optimizer.register_step_post_hook(count)
    optimizer.step()                                    # updates == [lr]
    handle.remove()

The six kinds:

- step pre-hook ``hook(optimizer, args, kwargs) -> None or (args, kwargs)``, before
  ``step``; what it returns replaces the arguments ``step`` is called with;
- step post-hook ``hook(optimizer, args, kwargs) -> None``, after it;
- state_dict pre-hook ``hook(optimizer) -> None``, before ``state_dict`` packs anything;
- state_dict post-hook ``hook(optimizer, state_dict) -> None or a new state_dict``;
- load_state_dict pre-hook ``hook(optimizer, state_dict) -> None or a new state_dict``,
  given a shallow copy of the dict passed to ``load_state_dict``;
- load_state_dict post-hook ``hook(optimizer) -> None``, after the load.

As in torch, a step hook's ``args`` start with the optimizer itself, since ``step`` is
called as ``type(optimizer).step(*args, **kwargs)``: ``optimizer.step()`` gives
``args == (optimizer,)``, and ``optimizer.step(closure)`` gives ``(optimizer, closure)``.
Hooks of one kind run in the order they were registered; ``prepend=True`` (the four
state_dict kinds, as in torch) puts a hook first.

Where step hooks cannot run, since they are Python: in a CUDA graph, whose replays run
no Python (``fit(cuda_graph=True)``); ``GraphedTrainStep`` refuses an optimizer that
has them. torch's global hooks for every optimizer
(``torch.optim.optimizer.register_optimizer_step_pre_hook``) are not provided.

How step hooks cost nothing where there are none: an optimizer without them runs its
class's ``step`` directly. The first step hook sets an instance attribute,
``optimizer.step``, to a ``HookedStep`` that runs the hooks around the class's method;
removing the last one deletes it, as ``nograd.nn.hooks`` does for a module's forward.

A copy (``copy.copy``, ``copy.deepcopy``, ``pickle``) has no hooks, as in torch, whose
``Optimizer.__getstate__`` keeps only ``defaults``, ``state`` and ``param_groups``: a
hook is often a closure over the original's model or log, and cannot be pickled.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nograd.nn.hooks import RemovableHandle

if TYPE_CHECKING:
    from nograd.optim.optimizer import Optimizer

Hook = Callable[..., Any]  # its arguments and return value: the module docstring

STEP_KINDS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
STATE_DICT_KINDS = (
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)
_ids = itertools.count()  # each hook's key in its dict, unique across optimizers


def add(optimizer: Optimizer, kind: str, hook: Hook, prepend: bool = False) -> RemovableHandle:
    """Register ``hook`` of ``kind`` (a name in STEP_KINDS or STATE_DICT_KINDS)."""
    if not callable(hook):
        raise TypeError(f"{optimizer._name}: expected a callable hook, got {type(hook).__name__}")
    hooks: dict[int, Hook] = optimizer.__dict__.setdefault(kind, {})
    key = next(_ids)
    hooks[key] = hook
    if prepend:  # first to run: put it before the others (dicts keep insertion order)
        for other in [k for k in hooks if k != key]:
            hooks[other] = hooks.pop(other)
    if kind in STEP_KINDS and "step" not in optimizer.__dict__:
        optimizer.__dict__["step"] = HookedStep(optimizer)
    return RemovableHandle(functools.partial(remove, optimizer, kind, key), key)


def remove(optimizer: Optimizer, kind: str, key: int) -> None:
    """Take hook ``key`` off; with the last step hook, the ``HookedStep`` too (a step
    the user set on the optimizer stays)."""
    attributes = optimizer.__dict__
    attributes.get(kind, {}).pop(key, None)
    last = kind in STEP_KINDS and not has_step_hooks_in(attributes)
    if last and isinstance(attributes.get("step"), HookedStep):  # not a step the user set
        del attributes["step"]  # the class's method again


def has_step_hooks(optimizer: Optimizer) -> bool:
    """Whether ``optimizer.step`` runs hooks."""
    return "step" in optimizer.__dict__


def has_step_hooks_in(attributes: dict[str, Any]) -> bool:
    return any(attributes.get(kind) for kind in STEP_KINDS)


def without_hooks(attributes: dict[str, Any]) -> dict[str, Any]:
    """``attributes`` (an optimizer's ``__dict__``) less its hooks and its ``HookedStep``:
    what a copy is made of."""
    dropped = {*STEP_KINDS, *STATE_DICT_KINDS, "step"}
    return {name: value for name, value in attributes.items() if name not in dropped}


def run(optimizer: Optimizer, kind: str, *args: Any) -> Any:
    """Call each hook of a state_dict kind with ``(optimizer, *args)``.

    With an argument (a state_dict), a hook's return value other than None replaces it
    for the hooks after it; the last value is returned. Without, None.
    """
    value = args[0] if args else None
    for hook in list(optimizer.__dict__.get(kind, {}).values()):
        result = hook(optimizer, value) if args else hook(optimizer)
        if args and result is not None:
            value = result
    return value


class HookedStep:
    """``optimizer.step`` while it has step hooks: pre-hooks, the class's ``step``,
    then post-hooks."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        optimizer = self.optimizer
        pre_kind, post_kind = STEP_KINDS
        call_args: tuple[Any, ...] = (optimizer, *args)  # torch passes self in args
        for hook in list(optimizer.__dict__.get(pre_kind, {}).values()):
            result = hook(optimizer, call_args, kwargs)
            if result is None:
                continue
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(
                    f"{optimizer._name}: a step pre-hook must return None or a tuple of "
                    f"(new_args, new_kwargs), but got {result!r}"
                )
            call_args, kwargs = result
        out = type(optimizer).step(*call_args, **kwargs)
        # read after the step, as torch reads them: a post-hook registered by a pre-hook
        # (or during the step) runs this time, one removed there does not
        for hook in list(optimizer.__dict__.get(post_kind, {}).values()):
            hook(optimizer, call_args, kwargs)
        return out

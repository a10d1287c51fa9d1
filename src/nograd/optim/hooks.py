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

Step hooks for every optimizer, as torch's global ones:
``register_optimizer_step_pre_hook(hook)`` and ``register_optimizer_step_post_hook(hook)``
(also in ``nograd.optim.optimizer``, where torch has them). A global pre-hook runs
before the optimizer's own, a global post-hook after them.

Where step hooks cannot run, since they are Python: in a CUDA graph, whose replays run
no Python (``fit(cuda_graph=True)``); ``GraphedTrainStep`` refuses an optimizer that
has them.

How step hooks cost nothing where there are none: an optimizer without them runs its
class's ``step`` directly. The first step hook sets an instance attribute,
``optimizer.step``, to a ``HookedStep`` that runs the hooks around the class's method;
removing the last one deletes it, as ``nograd.nn.hooks`` does for a module's forward.
A global step hook sets it on every optimizer there is (``_live``) and every one made
while the hook lasts.

A copy (``copy.copy``, ``copy.deepcopy``, ``pickle``) has no hooks, as in torch, whose
``Optimizer.__getstate__`` keeps only ``defaults``, ``state`` and ``param_groups``: a
hook is often a closure over the original's model or log, and cannot be pickled.
"""

from __future__ import annotations

import functools
import itertools
import weakref
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
# the global step hooks, pre and post, and every optimizer they must reach
_global_hooks: tuple[dict[int, Hook], dict[int, Hook]] = ({}, {})
_live: weakref.WeakSet[Optimizer] = weakref.WeakSet()


def register_optimizer_step_pre_hook(hook: Hook) -> RemovableHandle:
    """Call ``hook(optimizer, args, kwargs)`` before every step of every optimizer,
    before its own pre-hooks; a pair ``(new_args, new_kwargs)`` it returns replaces the
    arguments. As ``torch.optim.optimizer.register_optimizer_step_pre_hook``."""
    return _add_global(0, hook)


def register_optimizer_step_post_hook(hook: Hook) -> RemovableHandle:
    """Call ``hook(optimizer, args, kwargs)`` after every step of every optimizer, after
    its own post-hooks. As ``torch.optim.optimizer.register_optimizer_step_post_hook``."""
    return _add_global(1, hook)


def _add_global(which: int, hook: Hook) -> RemovableHandle:
    if not callable(hook):
        raise TypeError(f"expected a callable hook, got {type(hook).__name__}")
    key = next(_ids)
    _global_hooks[which][key] = hook
    for optimizer in list(_live):
        _wrap(optimizer)
    return RemovableHandle(functools.partial(_remove_global, which, key), key)


def _remove_global(which: int, key: int) -> None:
    _global_hooks[which].pop(key, None)
    for optimizer in list(_live):
        _unwrap_if_unhooked(optimizer)


def track(optimizer: Optimizer) -> None:
    """Count a new (or copied) optimizer among those global hooks reach."""
    _live.add(optimizer)
    if any(_global_hooks):
        _wrap(optimizer)


def _wrap(optimizer: Optimizer) -> None:
    if "step" not in optimizer.__dict__:
        optimizer.__dict__["step"] = HookedStep(optimizer)


def _unwrap_if_unhooked(optimizer: Optimizer) -> None:
    """The class's ``step`` again, where no hook is left (a step the user set stays)."""
    attributes = optimizer.__dict__
    unhooked = not has_step_hooks_in(attributes) and not any(_global_hooks)
    if unhooked and isinstance(attributes.get("step"), HookedStep):
        del attributes["step"]


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
    if kind in STEP_KINDS:
        _wrap(optimizer)
    return RemovableHandle(functools.partial(remove, optimizer, kind, key), key)


def remove(optimizer: Optimizer, kind: str, key: int) -> None:
    """Take hook ``key`` off; with the last step hook, the ``HookedStep`` too."""
    optimizer.__dict__.get(kind, {}).pop(key, None)
    if kind in STEP_KINDS:
        _unwrap_if_unhooked(optimizer)


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
        global_pre, global_post = _global_hooks
        call_args: tuple[Any, ...] = (optimizer, *args)  # torch passes self in args
        pre = [*global_pre.values(), *optimizer.__dict__.get(pre_kind, {}).values()]
        for hook in pre:
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
        post = [*optimizer.__dict__.get(post_kind, {}).values(), *global_post.values()]
        for hook in post:
            hook(optimizer, call_args, kwargs)
        return out

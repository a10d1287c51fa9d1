"""Optimizer: the parameter groups, per-parameter state and checkpoint format.

An optimizer owns a list of parameter groups (dicts holding ``"params"`` and every
option, so one model can train its parts with different learning rates) and a
``state`` dict keyed by parameter (momentum buffers, moment estimates).
``state_dict()`` writes both in ``torch.optim``'s format, with parameters replaced
by their position, so checkpoints move between nograd and PyTorch.

Counters such as Adam's ``step`` are kept as Python numbers (a tensor would cost an
``add_`` and an ``.item()`` per parameter per step, and a GPU sync); ``state_dict()``
writes them as the 0-dim CPU tensors torch writes.
"""

from __future__ import annotations

import copy
import functools
import types
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from nograd.nn.hooks import RemovableHandle
from nograd.nn.parameter import Parameter
from nograd.optim import foreach, hooks
from nograd.optim.flat import FlatGroup, can_flatten
from nograd.optim.foreach import TensorList, foreach_scalar
from nograd.optim.hooks import (  # noqa: F401  (torch.optim.optimizer has the two there)
    Hook,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

ParamGroup = dict[str, Any]
ParamsT = Iterable[Parameter] | Iterable[ParamGroup]
StateDict = dict[str, Any]

# torch's options that choose how its optimizers compute a step, not what they compute:
# foreach (a list's tensors in shared kernels), fused (a whole update in one kernel),
# capturable (counters on the device, for CUDA graphs), differentiable (a step autograd
# can go through). nograd keeps them in the groups, as torch does (state_dicts move both
# ways). Its list update gives the numbers of torch's default whatever foreach and
# capturable say; fused=True runs torch's fused kernels (``nograd.optim.fused``); see
# Optimizer._check_implementation for what is refused.
IMPLEMENTATION_OPTIONS = frozenset({"foreach", "fused", "capturable", "differentiable"})


class GroupTensors(NamedTuple):
    """One param group's tensors for one step, as lists for torch's ``_foreach_*`` ops.

    Each list has one tensor per parameter, or, when ``flat`` is set, a single flat
    tensor for the whole group. A step reads the lists and never changes them: a flat
    group's may serve several steps (``FlatGroup.step_tensors``).
    """

    params: list[Parameter]  # the parameters that have a gradient
    p: TensorList  # their values
    g: TensorList  # their gradients
    flat: FlatGroup | None
    # whether the flat group's check loop let this step through (FlatGroup.grad_if_unchanged),
    # which also found every state tensor to be its view of the flat buffer
    checked: bool = False

    def state(self, states: list[dict[str, Any]], key: str) -> TensorList:
        """``state[key]`` of each parameter, or the flat buffer behind them all."""
        if self.flat is None:
            return [state[key] for state in states]
        held = self.flat.state_buffers.get(key) if self.checked else None
        return [self.flat.state(states, key) if held is None else held]

    def counters(self, states: list[dict[str, Any]], key: str) -> list[Any]:
        """A counter such as Adam's t per tensor of the lists (flat: one for all)."""
        values = [state[key] for state in states]
        return values if self.flat is None else values[:1]

    def count_step(self, states: list[dict[str, Any]]) -> list[float]:
        """t = t + 1 in each parameter's ``state["step"]``; then t per tensor of the lists.

        t is a Python float; ``float()`` also reads the 0-dim tensor a loaded
        checkpoint holds.
        """
        for state in states:
            state["step"] = float(state["step"]) + 1
        return self.counters(states, "step")


def _noting_that_it_ran(step: Any) -> Callable[..., Any]:
    """``step``, which first sets ``optimizer._opt_called`` (``Optimizer``'s docstring).

    A plain function is called with the optimizer; anything else the class may hold
    (a ``staticmethod``, ``classmethod`` or ``functools.partialmethod``, a callable
    object) is first bound as the class would bind it.
    """
    if isinstance(step, types.FunctionType):

        @functools.wraps(step)
        def noted(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
            self._opt_called = True
            return step(self, *args, **kwargs)

        return noted

    def noted_descriptor(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        self._opt_called = True
        bound = step.__get__(self, type(self)) if hasattr(step, "__get__") else step
        return bound(*args, **kwargs)

    return noted_descriptor


class Optimizer:
    """Base class of every optimizer: subclasses implement ``step``.

    Args:
        params: the parameters to optimize (``model.parameters()``, or
            ``model.named_parameters()`` to keep their names), or a list of dicts, one
            per group, each with ``"params"`` and any option to override.
        defaults: every option with its default value, used where a group is silent.

    Attributes:
        param_groups: list of dicts, each with ``"params"`` and every option.
        state: per-parameter dict of tensors (and the counters named in
            ``scalar_state``), filled lazily by ``step``.

    Every subclass's ``step`` notes that it ran (``_opt_called``, torch's name; one
    attribute set a step, wrapped around the method when the class is made), so that
    a scheduler stepped before its optimizer warns as torch's does
    (``nograd.optim.lr_scheduler``). As in torch, only steps after the first scheduler
    was attached count, and a copy of the optimizer has taken none.
    """

    scalar_state: ClassVar[frozenset[str]] = frozenset()
    """State keys held as Python numbers here and as 0-dim tensors in ``state_dict``."""
    needs_closure: ClassVar[bool] = False
    """Whether ``step`` must be given a closure (LBFGS): ``fit`` then passes one."""
    _opt_called: bool = False
    """Whether ``step`` has run since the first scheduler was attached (``_scheduled``)."""
    _scheduled: bool = False
    """Whether a scheduler was attached: its construction clears ``_opt_called`` once."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:  # this class writes its own step: note when it runs
            cls.step = _noting_that_it_ran(cls.__dict__["step"])  # type: ignore[method-assign]

    def __init__(self, params: ParamsT, defaults: Mapping[str, Any]) -> None:
        self.defaults: dict[str, Any] = dict(defaults)
        self.check_all_options(self.defaults)
        self.state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[ParamGroup] = []
        self._flat: dict[int, FlatGroup] = {}  # by id(group["params"]); see _flat_group
        self._scalars: dict[tuple[float, bool, torch.device], Tensor] = {}  # see _scalar
        self._scratch_space: dict[tuple[int, str], list[Tensor]] = {}  # see _scratch
        hooks.track(self)  # global step hooks reach it too

        if isinstance(params, (Parameter, Tensor)):
            raise TypeError(
                f"{self._name}: expected an iterable of Parameters or of dicts, "
                f"got a single {type(params).__name__}; pass [param] or model.parameters()"
            )
        if isinstance(params, set):
            raise TypeError(
                f"{self._name}: expected parameters in an ordered collection, got a set"
            )
        groups: list[Any] = list(params)
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        """torch's text: each group's options, sorted by name, under "Parameter Group i"."""
        text = f"{self._name} ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            options = sorted(key for key in group if key != "params")
            text += "".join(f"    {key}: {group[key]}\n" for key in options)
        return text + ")"

    # ----------------------------------------------------------------- groups
    def add_param_group(self, param_group: ParamGroup) -> None:
        """Add a group of parameters, with options falling back to ``defaults``.

        As in ``torch.optim``, the dict itself joins ``param_groups``: each option it
        lacks is set to its default, and ``"params"`` becomes a list. Parameters given
        as ``(name, parameter)`` pairs (``model.named_parameters()``) leave their names
        in ``"param_names"``, as torch's do.

        Raises:
            TypeError: if the group is not a dict or holds something other than
                Parameters (a set is refused too: its order changes between runs).
            ValueError: if a parameter appears twice, an option is invalid, or some
                parameters or groups have names and others not.
        """
        if not isinstance(param_group, dict):
            raise TypeError(
                f"{self._name}: expected a param group dict, got {type(param_group).__name__}"
            )
        if "params" not in param_group:
            raise ValueError(f"{self._name}: param group has no 'params' key")
        params = param_group["params"]
        if isinstance(params, set):
            raise TypeError(
                f"{self._name}: expected parameters in an ordered collection, got a set"
            )
        params = [params] if isinstance(params, Parameter) else list(params)
        params, names = self._split_names(params)
        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(
                    f"{self._name}: expected nograd.nn.Parameter objects, "
                    f"got {type(param).__name__}"
                )
        if len(set(params)) != len(params):
            raise ValueError(f"{self._name}: a parameter group holds the same parameter twice")
        for group in self.param_groups:
            if not set(group["params"]).isdisjoint(params):
                raise ValueError(f"{self._name}: a parameter appears in more than one group")
            if ("param_names" in group) != (names is not None):
                given, earlier = ("with", "without") if names else ("without", "with")
                raise ValueError(
                    f"{self._name}: expected names (model.named_parameters()) in every "
                    f"param group or in none, got a group {given} names after one {earlier}"
                )

        self.check_all_options({**self.defaults, **param_group})
        # The caller's dict itself, as torch.optim keeps it: an edit made through it
        # later (group["lr"] = 0) changes the optimizer. Checked first, filled after,
        # so a refused group is left as it came.
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)
        param_group["params"] = params
        if names is not None:
            param_group["param_names"] = names
        self.param_groups.append(param_group)

    def _split_names(self, params: list[Any]) -> tuple[list[Any], list[str] | None]:
        """The parameters and their names, for a group given as ``(name, parameter)``
        pairs (``model.named_parameters()``); a list without names, and None, else.

        torch keeps the names in the group as ``"param_names"`` (and so in ``state_dict``).
        """
        names = [param[0] for param in params if isinstance(param, tuple)]
        if not names:
            return params, None
        if len(names) != len(params):
            raise ValueError(
                f"{self._name}: expected a name for every parameter of a group or for "
                f"none, got {len(names)} (name, parameter) pairs among {len(params)}"
            )
        return [param[1] for param in params], names

    def check_all_options(self, options: Mapping[str, Any]) -> None:
        """Raise for an option the constructor would refuse: torch's implementation
        options (``_check_implementation``), then the optimizer's own."""
        self._check_implementation(options)
        self._check_options(options)

    def _check_options(self, options: Mapping[str, Any]) -> None:
        """Raise ValueError for an invalid option; each optimizer checks its own."""

    def _check_implementation(self, options: Mapping[str, Any]) -> None:
        """torch's ``IMPLEMENTATION_OPTIONS``: each a bool or None. ``differentiable=True``
        is refused (autograd would go through the step, and nograd has none), and so,
        as in torch, are ``fused`` and ``foreach`` both True."""
        for name in sorted(IMPLEMENTATION_OPTIONS & options.keys()):
            value = options[name]
            if value is not None and not isinstance(value, bool):
                raise TypeError(
                    f"{self._name}: expected {name} to be a bool or None, got {value!r}"
                )
        if options.get("differentiable"):
            raise ValueError(
                f"{self._name}: differentiable=True asks autograd to go through the step, "
                f"and nograd has no autograd; leave it False"
            )
        if options.get("fused") and options.get("foreach"):
            raise RuntimeError(f"{self._name}: `fused` and `foreach` cannot be `True` together.")

    def _require(self, ok: bool, option: str, expected: str, value: object) -> None:
        if not ok:
            raise ValueError(f"{self._name}: expected {option} {expected}, got {value!r}")

    def _require_betas(self, options: Mapping[str, Any]) -> None:
        """Adam's family: ``betas`` must be a pair of decay rates, each in [0, 1)."""
        betas = options["betas"]
        self._require(
            isinstance(betas, (tuple, list)) and len(betas) == 2, "betas", "to be a pair", betas
        )
        for i, beta in enumerate(betas):
            self._require(0 <= beta < 1, f"betas[{i}]", "in [0, 1)", beta)

    def _require_non_negative(self, options: Mapping[str, Any], *names: str) -> None:
        for name in names:
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"{self._name}: expected {name} to be a number, got {type(value).__name__}"
                )
            self._require(value >= 0, name, ">= 0", value)  # NaN fails too

    # ------------------------------------------------------------------ steps
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every gradient: to ``None`` (the default) or to zeros in place.

        To ``None``, a flattened group then lends each parameter its slice of the flat
        gradient buffer, which the next backward writes the new gradient into
        (``FlatGroup.lend_grad_views``, ``Parameter.grad_out``).
        """
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.zero_()
        if set_to_none:
            for flat in self._flat.values():
                if flat.current:
                    flat.lend_grad_views()

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Update every parameter that has a gradient (``grad is None``: skipped).

        Args:
            closure: optional; recomputes the loss (forward and backward) and
                returns it, for optimizers that evaluate the loss more than once.
        """
        raise NotImplementedError(f"{self._name} must implement step()")

    def _with_grads(
        self, group: ParamGroup, only: AbstractSet[Parameter] | None = None
    ) -> GroupTensors:
        """The group's parameters that have a gradient, their values p and gradients g.

        ``step`` updates these lists all at once with torch's ``_foreach_*`` ops: one
        call per formula for the whole group instead of one per parameter. When every
        parameter has a gradient and ``can_flatten`` allows, each list holds a single
        flat tensor with the whole group (``nograd.optim.flat``), so each call is one
        kernel. With ``only``, just the group's parameters in it (an update of part of
        the model: ``nograd.layer_updates``).
        """
        fused = group.get("fused")  # torch's fused kernels take the tensors one by one
        flat = None if fused or only is not None else self._flat.get(id(group["params"]))
        if flat is not None and flat.current:  # the usual step: one check for all
            grad = flat.grad_if_unchanged(group["params"], self.state)
            if grad is not None:
                # the lists of the last such step while grad is the same tensor: a new
                # GroupTensors would cost a Python call (its __new__) at every step
                tensors = flat.step_tensors
                if tensors is None or tensors.g[0] is not grad:
                    tensors = GroupTensors(flat.params, [flat.data], [grad], flat, checked=True)
                    flat.step_tensors = tensors
                return tensors
        params = [param for param in group["params"] if param.grad is not None]
        if only is not None:
            params = [param for param in params if param in only]
        grads = [param.grad for param in params if param.grad is not None]
        flat = None if fused else self._flat_group(group, params)  # see fused.py
        if flat is None:
            return GroupTensors(params, [param.data for param in params], grads, None)
        return GroupTensors(params, [flat.data], [flat.gather_grads(grads)], flat)

    def flat_group(self, group: ParamGroup) -> FlatGroup | None:
        """The group's flat buffers (``nograd.optim.flat``) if its last step used them,
        else None (``nograd.TrainStep`` writes the gradients straight into them)."""
        flat = self._flat.get(id(group["params"]))
        return flat if flat is not None and flat.current else None

    def _flat_group(self, group: ParamGroup, params: list[Parameter]) -> FlatGroup | None:
        """The group's ``FlatGroup``, flattened (again) if needed; None if it cannot be.

        ``_with_grads`` runs this only where ``FlatGroup.grad_if_unchanged`` failed:
        something changed since the last full check (``can_flatten``), such as a step
        tensor by tensor, new ``param.data``, or a parameter's state dict replaced,
        deleted, or given or robbed of a key; or not every parameter has a gradient.
        """
        key = id(group["params"])  # the list lives as long as the group: the id stays its own
        flat = self._flat.get(key)
        if (
            len(params) != len(group["params"])
            or not params
            or not can_flatten(params, self.state, self.scalar_state, previous=flat)
        ):
            if flat is not None:  # a step tensor by tensor changes state: check before reuse
                flat.current = False
            return None
        if flat is None or not flat.holds(params):
            flat = self._flat[key] = FlatGroup(params)
        flat.current = True
        flat.remember_states(self.state)
        return flat

    def _maximize_and_decay(self, group: ParamGroup, p: TensorList, g: TensorList) -> TensorList:
        """The first lines of every update rule here, in torch's order; returns g.

        ``maximize`` negates g, g = -g. A ``weight_decay`` wd != 0 then adds the L2
        penalty's gradient, g = g + wd * p, or, decoupled (AdamW's
        ``decoupled_weight_decay``), shrinks p itself, p = p * (1 - lr * wd). A changed
        g is made of new tensors, so each ``param.grad`` stays as the backward left it.
        """
        if group["maximize"]:
            g = foreach.neg(g)  # g = -g
        weight_decay = group["weight_decay"]
        if weight_decay != 0:
            if group.get("decoupled_weight_decay", False):
                foreach.mul_(p, self._scalar(1 - group["lr"] * weight_decay, p))  # p (1 - lr wd)
            else:
                g = foreach.add(g, p, alpha=weight_decay)  # g = g + wd * p
        return g

    def _update_moments(
        self, m: TensorList, v: TensorList, g: TensorList, beta1: float, beta2: float
    ) -> None:
        """Adam's running moments of g, in place (Adam, AdamW, NAdam and RAdam share them)."""
        foreach.lerp_(m, g, 1 - beta1)  # m = beta1 * m + (1 - beta1) * g, as m + (1 - beta1)(g - m)
        foreach.mul_(v, self._scalar(beta2, v))  # v = beta2 * v
        foreach.addcmul_(v, g, g, value=1 - beta2)  # v = v + (1 - beta2) * g * g

    def _scalar(self, value: float, tensors: TensorList) -> Tensor | float:
        """``value`` for a ``foreach`` op on ``tensors``, in the form it runs fastest in.

        On the CPU: ``foreach_scalar(value, tensors)``, made once per value and dtype.
        On a GPU: the number itself, which the kernel takes as an argument, as torch's
        own optimizers pass it (a graph capture freezes it, like the learning rate).
        """
        if not tensors[0].is_cpu:
            return value
        dtype = tensors[0].dtype
        if any(x.dtype != dtype for x in tensors) or foreach.one_by_one(tensors):
            # the number itself, as torch's single-tensor update passes it: a 0-dim float64
            # tensor would make a float32 tensor's op compute in float64, and a 0-dim
            # float32 one a 0-dim half tensor's in float32 (two 0-dim tensors promote)
            return value
        key = (value, dtype == torch.float64, tensors[0].device)
        scalar = self._scalars.get(key)
        if scalar is None:
            if len(self._scalars) >= 64:  # a scheduled value (AdamW's 1 - lr * wd) changes often
                self._scalars.clear()
            scalar = self._scalars[key] = foreach_scalar(value, tensors)
        return scalar

    def _scratch(self, group: ParamGroup, name: str, like: TensorList) -> TensorList | None:
        """Tensors shaped like ``like``, for a line whose result lives one step; None off the CPU.

        Adam's d = sqrt(v) needs a tensor per parameter, for one step only. Made anew at
        every step, a megabyte tensor is memory that the C library's allocator may have
        handed back to the kernel, and touching it again costs a page fault per 4 KiB: up
        to 2600 faults and 3.8 ms in a 30 ms step of the 784-1024-1024-10 MLP with Adam,
        alone in its process. So on the CPU such a line writes into these, made at the
        first step and kept (by group and name) while the shapes stay the same. On a GPU,
        torch's caching allocator already reuses memory, and a tensor made during a CUDA
        graph capture would belong to the graph: there the line makes new tensors.
        """
        if not like[0].is_cpu:
            return None
        key = (id(group["params"]), name)  # the list lives as long as the group, like _flat's key
        scratch = self._scratch_space.get(key)
        kinds = [(x.shape, x.dtype) for x in like]
        if scratch is None or [(s.shape, s.dtype) for s in scratch] != kinds:
            with torch.inference_mode(False):  # normal tensors, writable in and out of that mode
                scratch = self._scratch_space[key] = [torch.empty_like(x) for x in like]
        return scratch

    # ---------------------------------------------- hooks (nograd/optim/hooks.py)
    def register_step_pre_hook(self, hook: Hook) -> RemovableHandle:
        """Call ``hook(optimizer, args, kwargs)`` before every ``step``; a pair
        ``(new_args, new_kwargs)`` it returns replaces the arguments."""
        return hooks.add(self, "_optimizer_step_pre_hooks", hook)

    def register_step_post_hook(self, hook: Hook) -> RemovableHandle:
        """Call ``hook(optimizer, args, kwargs)`` after every ``step``."""
        return hooks.add(self, "_optimizer_step_post_hooks", hook)

    def register_state_dict_pre_hook(self, hook: Hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(optimizer)`` before every ``state_dict``; ``prepend``: first."""
        return hooks.add(self, "_optimizer_state_dict_pre_hooks", hook, prepend)

    def register_state_dict_post_hook(self, hook: Hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(optimizer, state_dict)`` on what ``state_dict`` made; a dict it
        returns is returned instead."""
        return hooks.add(self, "_optimizer_state_dict_post_hooks", hook, prepend)

    def register_load_state_dict_pre_hook(
        self, hook: Hook, prepend: bool = False
    ) -> RemovableHandle:
        """Call ``hook(optimizer, state_dict)`` before every ``load_state_dict``, with a
        shallow copy of the dict given; a dict it returns is loaded instead."""
        return hooks.add(self, "_optimizer_load_state_dict_pre_hooks", hook, prepend)

    def register_load_state_dict_post_hook(
        self, hook: Hook, prepend: bool = False
    ) -> RemovableHandle:
        """Call ``hook(optimizer)`` after every ``load_state_dict``."""
        return hooks.add(self, "_optimizer_load_state_dict_post_hooks", hook, prepend)

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy``, ``deepcopy`` and ``pickle`` copy: no hooks, as in torch, and
        none of the caches the next step rebuilds (``_flat`` is keyed by the ids of the
        original's lists, and holds what neither deepcopy nor pickle can copy)."""
        state = hooks.without_hooks(self.__dict__)
        for cache in ("_flat", "_scalars", "_scratch_space", "_opt_called", "_scheduled"):
            state.pop(cache, None)  # torch's copy loses its scheduler's note of steps too
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Fill an optimizer made by ``copy``, ``deepcopy`` or ``pickle`` from ``state``."""
        self.__dict__.update(state)
        self._flat, self._scalars, self._scratch_space = {}, {}, {}
        hooks.track(self)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> StateDict:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``.

        Indices count parameters across groups in order, as ``torch.optim`` does.
        State tensors are shared with the optimizer, not copied; counters in
        ``scalar_state`` become new 0-dim CPU tensors, as torch stores them.
        State-dict hooks (``register_state_dict_pre_hook``, ``..._post_hook``) run
        before and after; a post-hook may return a new dict.
        """
        hooks.run(self, "_optimizer_state_dict_pre_hooks")
        index: dict[Parameter, int] = {}
        param_groups = []
        fused: set[Parameter] = set()  # torch writes a fused group's counters in float32
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = [index.setdefault(p, len(index)) for p in group["params"]]
            param_groups.append(packed)
            if group.get("fused"):
                fused.update(group["params"])
        state = {
            index[p]: self._pack(entry, torch.float32 if p in fused else scalar_dtype())
            for p, entry in self.state.items()
            if p in index
        }
        packed_dict = {"state": state, "param_groups": param_groups}
        return hooks.run(self, "_optimizer_state_dict_post_hooks", packed_dict)  # type: ignore[no-any-return]

    def _pack(self, entry: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
        """One parameter's state as torch writes it: counters as 0-dim tensors of ``dtype``."""
        packed = dict(entry)
        for key in self.scalar_state & packed.keys():
            if not isinstance(packed[key], Tensor):  # a tensor if loaded and not stepped since
                packed[key] = torch.tensor(packed[key], dtype=dtype)
        return packed

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a checkpoint made by ``state_dict`` (ours or ``torch.optim``'s).

        State tensors are copied onto each parameter's device, floating ones cast to
        its dtype; a counter in ``scalar_state`` (``"step"``) is copied as it is, a
        0-dim tensor or a number, and ``step`` reads either.

        Options are taken as saved, without the checks of ``__init__``, as torch takes
        them. Load-state-dict pre-hooks get a shallow copy of ``state_dict`` first (and
        may return another dict to load); post-hooks run after the load.

        Raises:
            ValueError: naming the group or parameter whose count or shape differs;
                nothing is changed then.
        """
        state_dict = hooks.run(self, "_optimizer_load_state_dict_pre_hooks", dict(state_dict))
        if "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(
                f"{self._name}.load_state_dict: expected keys 'state' and 'param_groups', "
                f"got {sorted(state_dict)}"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{self._name}.load_state_dict: expected {len(self.param_groups)} parameter "
                f"groups, got {len(saved_groups)}"
            )
        by_index: dict[Any, Parameter] = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{self._name}.load_state_dict: expected {len(group['params'])} "
                    f"parameters in group {i}, got {len(saved['params'])}"
                )
            by_index.update(zip(saved["params"], group["params"], strict=True))

        state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        for index, entry in state_dict["state"].items():
            if index not in by_index:
                raise ValueError(
                    f"{self._name}.load_state_dict: state entry {index!r} belongs to no "
                    f"parameter of param_groups"
                )
            param = by_index[index]
            state[param] = {key: self._copy_state(param, index, key, v) for key, v in entry.items()}

        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            options = {key: copy.deepcopy(v) for key, v in saved.items() if key != "params"}
            # taken as saved, unchecked, as torch.optim takes them: a scheduler may have
            # driven lr a little below 0, and the checkpoint must still load
            if "param_names" in group:  # kept where the checkpoint has none, as in torch
                options.setdefault("param_names", group["param_names"])
            new_groups.append({**self.defaults, **options, "params": group["params"]})
        self.param_groups = new_groups
        self.state = state
        for flat in self._flat.values():  # kept: the parameters are still views of its buffer
            flat.current = False  # the loaded counters may differ: check in full at the next step
        hooks.run(self, "_optimizer_load_state_dict_post_hooks")

    def _copy_state(self, param: Parameter, index: Any, key: str, value: Any) -> Any:
        if not isinstance(value, Tensor):
            return copy.deepcopy(value)
        if key in self.scalar_state:  # a counter, read back into a number at the next step
            return value.clone()
        if value.shape != param.shape:
            raise ValueError(
                f"{self._name}.load_state_dict: expected state {key!r} of parameter {index} "
                f"to have shape {tuple(param.shape)}, got {tuple(value.shape)}"
            )
        dtype = param.dtype if param.data.is_floating_point() else None
        return value.to(device=param.device, dtype=dtype, copy=True)


def optimized_parameters(optimizer: Optimizer) -> list[Parameter]:
    """Every parameter ``optimizer`` updates, group by group."""
    return [param for group in optimizer.param_groups for param in group["params"]]


def in_model_order(params: list[Parameter], model_params: Iterable[Parameter]) -> list[Parameter]:
    """``params`` in the order of ``model_params`` (``model.parameters()``), then any
    the model lacks, in their own order.

    What ``fit`` clips: the norm of all the gradients sums one norm per tensor in the
    order given, so a torch loop's ``clip_grad_norm_(model.parameters(), max_norm)``
    has these bits even where the param groups list the layers in another order (a
    head's group first).
    """
    wanted = {id(param) for param in params}
    ordered = [param for param in model_params if id(param) in wanted]
    placed = {id(param) for param in ordered}
    return ordered + [param for param in params if id(param) not in placed]


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim gives its ``step`` counters: float64 only if that is the default."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32

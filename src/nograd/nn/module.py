"""Module: the contract every layer in nograd follows.

A module is a function with a memory. ``forward(x)`` computes the output and keeps
exactly what the derivative needs in ``self.saved``; ``backward(grad_output)``
receives dL/d(output), adds dL/d(parameter) into each parameter's ``.grad`` and
returns dL/d(input).
Chaining these calls in reverse order is the whole of backpropagation
(see docs/design.md).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, overload

import torch
from torch import Tensor

from nograd.nn import hooks, parameter
from nograd.nn.hooks import Hook, RemovableHandle
from nograd.nn.parameter import Parameter
from nograd.nn.to_arguments import to_arguments


def _plain(source: Tensor | Parameter) -> Tensor:
    """A state dict's value as a plain tensor that shares its memory.

    Detached: a source that requires grad (a torch ``nn.Parameter``) must not make our
    storage part of an autograd graph; torch loads without recording too.
    """
    return (source.data if isinstance(source, Parameter) else source).detach()


def _as_loaded_into(own: Tensor, value: Tensor) -> Tensor:
    """``value`` as it loads into ``own``: a one-element vector into a 0-dim entry is
    its element, as torch reads a scalar saved by its version 0.3; else unchanged."""
    if own.dim() == 0 and value.shape == (1,):
        return value[0]
    return value


class _IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns: the keys it missed, and those it did not use."""

    missing_keys: list[str]
    unexpected_keys: list[str]

    def __repr__(self) -> str:
        # torch's text, which a notebook shows after model.load_state_dict(...)
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        missing, unexpected = self
        return f"_IncompatibleKeys(missing_keys={missing}, unexpected_keys={unexpected})"


# What Module.__init__ makes, and what a torch script asks a module for under autograd's name
_REGISTRIES = ("_parameters", "_buffers", "_non_persistent", "_modules")
_AUTOGRAD_NAMES = {"requires_grad_": "model.freeze() and model.unfreeze()"}

_M = TypeVar("_M", bound="Module")  # apply, train, to, ... return their own module's type

# Returned by a backward pass that was told its input gradient is not needed: an empty
# tensor rather than None, so that backward always returns a Tensor (compare with "is").
NO_INPUT_GRAD = torch.empty(0)


class Module:
    """Base class of every layer, activation, loss and container.

    Subclasses implement ``forward`` and ``backward``. Assigning a ``Parameter`` or a
    ``Module`` to an attribute registers it, so ``parameters()``, ``state_dict()``
    and ``to()`` find it, exactly as in ``torch.nn.Module``.

    Attributes:
        training: True in training mode (the default), False after ``eval()``.
        saved: what ``forward`` keeps for ``backward``, by name (``saved["x"] = x``).
            A plain dict: assigning to the module itself would run the registration
            in ``__setattr__`` at every call, a large share of a small network's step.
            It holds the last forward's tensors only; a ``Sequential`` that uses a
            module twice keeps each use's aside (``nograd/nn/uses.py``).
        needs_input_grad: when set to False (by ``Sequential`` for its first layer,
            say), ``backward`` may skip dL/d(input) and return ``NO_INPUT_GRAD``;
            parameter gradients are accumulated either way. Set it on the chain
            (``model.needs_input_grad = False``): a ``Sequential`` that needs a
            child's dL/d(input) sets the child's flag back to True when it plans.
    """

    training: bool
    saved: dict[str, Any]
    needs_input_grad: bool = True
    _parameters: OrderedDict[str, Parameter | None]
    _buffers: OrderedDict[str, Tensor | None]
    _non_persistent: set[str]
    _modules: OrderedDict[str, Module | None]  # None: an empty slot that keeps its place

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        self.saved = {}
        self.training = True

    # ----------------------------------------------------------- the contract
    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def backward(self, grad_output: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement backward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # keyword arguments go to forward as in torch: model(x, mask=mask). Hooks run too:
        # registering one sets this instance's forward to a HookedForward
        return self.forward(*args, **kwargs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Fill a module made by ``copy``, ``deepcopy`` or ``pickle`` from ``state``."""
        self.__dict__.update(state)
        hooks.rebind(self)  # its hooks must run it, not the module it was copied from

    # -------------------------------------------------- hooks (nograd/nn/hooks.py)
    def register_forward_pre_hook(
        self, hook: Hook, *, prepend: bool = False, with_kwargs: bool = False
    ) -> RemovableHandle:
        """Call ``hook(module, args)`` before every ``forward``; a value it returns
        replaces ``args`` (a single value is wrapped in a tuple). ``prepend``: run it
        before the hooks already registered; ``with_kwargs``: call
        ``hook(module, args, kwargs)``, which returns None or ``(args, kwargs)``."""
        return hooks.add(self, "_forward_pre_hooks", hook, prepend, with_kwargs)

    def register_forward_hook(
        self,
        hook: Hook,
        *,
        prepend: bool = False,
        with_kwargs: bool = False,
        always_call: bool = False,
    ) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every ``forward``; a value it
        returns replaces the output. ``with_kwargs``: call
        ``hook(module, args, kwargs, output)``; ``always_call``: call it (with output
        None) also when ``forward`` raised, before the error goes on."""
        return hooks.add(self, "_forward_hooks", hook, prepend, with_kwargs, always_call)

    def register_full_backward_pre_hook(self, hook: Hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(module, grad_output)`` before every ``backward``, with the tuple of
        its arguments (dL/d(output),); a tuple it returns replaces them."""
        return hooks.add(self, "_backward_pre_hooks", hook, prepend)

    def register_full_backward_hook(self, hook: Hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(module, grad_input, grad_output)`` after every ``backward``, with
        grad_input = (dL/d(input),), or (None,) where it was not computed; a tuple it
        returns replaces grad_input, and ``backward`` returns its first element."""
        return hooks.add(self, "_backward_hooks", hook, prepend)

    def overwrites_input(self) -> bool:
        """Whether the next ``forward`` writes its output into its input's memory.

        False here; a module with ``inplace=True`` says True. A ``Sequential`` asks
        before each child's forward, to know what that child destroys (``nn/uses.py``).
        """
        return False

    def _saved(self, name: str) -> Tensor:
        """Return ``saved[name]``, or explain that ``forward`` never ran."""
        value = self.saved.get(name)
        if value is None:
            raise RuntimeError(f"{self._describe()}: backward() called before forward()")
        return value  # type: ignore[no-any-return]

    def _saved_for(self, grad_output: Tensor, name: str) -> Tensor:
        """``saved[name]``, once ``grad_output`` is known to have its shape.

        One call for both checks: a backward runs at every step, and on a small
        network each extra method call per module is a measurable share of the time.
        """
        value = self.saved.get(name)
        if value is None or grad_output.shape != value.shape:
            raise self._backward_error(grad_output, value)
        return value  # type: ignore[no-any-return]

    def _check_shape(self, grad_output: Tensor, name: str) -> None:
        """Check ``grad_output`` against the shape ``forward`` saved as ``saved[name]``.

        For a backward that needs no tensor of the forward's, only its shape.
        """
        shape = self.saved.get(name)
        if shape is None or grad_output.shape != shape:
            raise self._backward_error(grad_output, shape)

    def _backward_error(
        self, grad_output: Tensor, like: Tensor | tuple[int, ...] | None
    ) -> Exception:
        """Why ``backward`` cannot run: ``forward`` never did (``like`` is None), or
        dL/d(output) does not have the shape of ``like`` (a saved tensor, or a shape).
        """
        if like is None:
            return RuntimeError(f"{self._describe()}: backward() called before forward()")
        shape = tuple(like.shape) if isinstance(like, Tensor) else tuple(like)
        return ValueError(
            f"{self._describe()}: expected grad_output of shape {shape}, "
            f"got {tuple(grad_output.shape)}"
        )

    def _describe(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # ------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        try:
            registered = name in self._parameters or name in self._buffers or name in self._modules
        except AttributeError:  # before Module.__init__ made the registries
            self._set_before_init(name, value)
            return
        if not (registered or isinstance(value, (Parameter, Module))):
            object.__setattr__(self, name, value)  # a plain attribute: nothing to register
            return
        if isinstance(value, Parameter):
            # a parameter replaces whatever held the name before, as in torch
            self._forget(name, self._buffers, self._modules)
            self.register_parameter(name, value)
            return
        if name in self._parameters:  # checked before a Module, as torch does
            if value is not None:
                raise TypeError(
                    f"{self._describe()}: cannot assign {type(value).__name__} to parameter "
                    f"{name!r} (Parameter or None expected)"
                )
            self._parameters[name] = None  # an absent optional parameter, e.g. bias=False
            parameter.changed()
        elif isinstance(value, Module):
            self._forget(name, self._buffers)
            self._modules[name] = value
            parameter.changed()  # the parameters inside this module changed
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{self._describe()}: buffer {name!r} must be a Tensor")
            self._buffers[name] = value
        elif value is None:
            # no child there any more, but the slot keeps its place, as in torch: a module
            # assigned there later comes back at the same position in parameters() and
            # state_dict(), so an optimizer's per-index state still lines up with torch's
            self._modules[name] = None
            parameter.changed()
        else:
            raise TypeError(
                f"{self._describe()}: cannot assign {type(value).__name__} to child module "
                f"{name!r} (Module or None expected)"
            )
        object.__setattr__(self, name, value)

    def _set_before_init(self, name: str, value: Any) -> None:
        """``self.name = value`` in a subclass's ``__init__`` before ``super().__init__()``.

        A plain attribute is set, as torch allows (``self.width = width`` first is
        common); a Parameter or a Module would have nowhere to be registered.
        """
        if isinstance(value, (Parameter, Module)):
            kind = "parameters" if isinstance(value, Parameter) else "module"
            raise AttributeError(
                f"{type(self).__name__}: cannot assign {kind} before Module.__init__() call "
                f"(call super().__init__() first)"
            )
        object.__setattr__(self, name, value)

    if not TYPE_CHECKING:  # hidden from mypy, which would accept any name on a Module

        def __getattr__(self, name: str) -> Any:
            """Only reached for a name the module lacks: say why, where a torch script
            would expect it."""
            cls = type(self).__name__
            if name in _REGISTRIES:  # register_buffer(...) before super().__init__(), say
                message = f"{cls}: call super().__init__() first, which makes {name}"
            else:
                message = f"'{cls}' object has no attribute '{name}'"
                if name in _AUTOGRAD_NAMES:
                    message += f": nograd has no autograd; use {_AUTOGRAD_NAMES[name]}"
            raise AttributeError(message, name=name, obj=self)

    def _forget(self, name: str, *registries: OrderedDict[str, Any]) -> None:
        """Drop ``name`` from ``registries`` and from the instance, before it is re-registered.

        Without this, a parameter assigned over a buffer would leave the buffer in
        ``state_dict``, and ``load_state_dict`` would write into the dead buffer.
        """
        for registry in registries:
            registry.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def __delattr__(self, name: str) -> None:
        if name in self._parameters or name in self._modules:
            parameter.changed()
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent.discard(name)
        object.__delattr__(self, name)

    def _check_new_name(self, kind: str, name: str, registry: Mapping[str, Any]) -> None:
        """torch's rules for a name given to ``register_*`` or ``add_module``.

        Raises:
            TypeError: the name is not a string.
            KeyError: it is empty, contains "." (dotted names are paths in
                ``state_dict``), or already names another attribute of this module.
        """
        if not isinstance(name, str):
            raise TypeError(
                f"{type(self).__name__}: {kind} name should be a string, got {type(name).__name__}"
            )
        if "." in name:
            raise KeyError(f'{type(self).__name__}: {kind} name can\'t contain ".", got {name!r}')
        if name == "":
            raise KeyError(f'{type(self).__name__}: {kind} name can\'t be empty string ""')
        if hasattr(self, name) and name not in registry:
            raise KeyError(f"{type(self).__name__}: attribute {name!r} already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or ``None`` for an absent optional one) under ``name``.

        Raises:
            KeyError: ``name`` is empty, contains ".", or is already another attribute.
            TypeError: ``param`` is neither a ``Parameter`` nor None (a plain tensor).
        """
        self._check_new_name("parameter", name, self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"{type(self).__name__}: cannot assign '{torch.typename(param)}' object to "
                f"parameter {name!r} (nograd.nn.Parameter or None required)"
            )
        self._parameters[name] = param
        object.__setattr__(self, name, param)
        parameter.changed()

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a non-trainable tensor (running statistics, say) that moves with ``to()``.

        Persistent buffers are saved in ``state_dict``; others are not.

        Raises:
            KeyError: ``name`` is empty, contains ".", or is already another attribute.
            TypeError: ``tensor`` is neither a Tensor nor None.
        """
        self._check_new_name("buffer", name, self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"{type(self).__name__}: cannot assign '{torch.typename(tensor)}' object to "
                f"buffer {name!r} (torch Tensor or None required)"
            )
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add ``module`` as a child under ``name`` (None: no child there).

        Raises:
            TypeError: ``module`` is neither a Module nor None.
            KeyError: ``name`` is empty, contains ".", or is already another attribute.
        """
        if module is not None and not isinstance(module, Module):
            raise TypeError(
                f"{type(self).__name__}: {torch.typename(module)} is not a Module subclass"
            )
        self._check_new_name("module", name, self._modules)
        if module is None:  # an empty slot, which keeps its place for a later module
            self._modules[name] = None
        setattr(self, name, module)

    def register_module(self, name: str, module: Module | None) -> None:
        """``add_module`` under torch's other name for it."""
        self.add_module(name, module)

    # ---------------------------------------------------------------- traversal
    def get_submodule(self, target: str) -> Module:
        """The descendant at the dotted path ``target`` ("0.2" in a Sequential; "": self).

        Raises:
            AttributeError: a name on the path that does not exist or is not a Module
                (torch's messages).
        """
        module = self
        for name in target.split(".") if target else []:
            if not hasattr(module, name):
                raise AttributeError(f"{type(module).__name__} has no attribute `{name}`")
            module = getattr(module, name)
            if not isinstance(module, Module):
                raise AttributeError(f"`{name}` is not an nn.Module")
        return module

    def _holder_of(self, target: str) -> tuple[Module, str]:
        """The module at ``target``'s path but its last name, and that name, which it has."""
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if not hasattr(module, name):
            raise AttributeError(f"{type(module).__name__} has no attribute `{name}`")
        return module, name

    def get_parameter(self, target: str) -> Parameter:
        """The parameter at the dotted path ``target``, a ``state_dict`` key ("0.weight").

        Raises:
            AttributeError: the path leads nowhere, or to something not a Parameter.
        """
        module, name = self._holder_of(target)
        param = getattr(module, name)
        if not isinstance(param, Parameter):
            raise AttributeError(f"`{name}` is not an nn.Parameter")
        return param

    def get_buffer(self, target: str) -> Tensor:
        """The buffer (persistent or not) at the dotted path ``target``.

        Raises:
            AttributeError: the path leads nowhere, or to something not a buffer.
        """
        module, name = self._holder_of(target)
        if name not in module._buffers:
            raise AttributeError(f"`{name}` is not a buffer")
        buffer: Tensor = getattr(module, name)
        return buffer

    def named_modules(
        self, memo: set[Module] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """Yield ``(name, module)`` for this module and every descendant, depth first.

        A module reachable under several names is yielded once, unless
        ``remove_duplicate`` is False (``state_dict`` lists every name, as torch does).
        ``memo``, torch's first argument, is a set of modules to skip (with what lies
        below them); with ``remove_duplicate`` each module yielded is added to it.
        """
        seen: set[Module] = set() if memo is None else memo
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if module in seen:
                continue
            if remove_duplicate:
                seen.add(module)
            yield name, module
            children = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in module._modules.items()
                if child is not None  # an empty slot
            ]
            stack.extend(reversed(children))

    def modules(self, remove_duplicate: bool = True) -> Iterator[Module]:
        for _, module in self.named_modules(remove_duplicate=remove_duplicate):
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield ``(name, child)``; a child held under several names appears once, as in torch."""
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def apply(self: _M, fn: Callable[[Module], object]) -> _M:
        """Call ``fn`` on every child's subtree (children first), then on this module.

        As in torch, a typical use is initialisation: ``model.apply(init_weights)``.

        Returns:
            self, so that calls chain.
        """
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted name, parameter)``; a shared parameter appears once, unless
        ``remove_duplicate`` is False."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        """Yield ``(dotted name, buffer)``; a shared buffer appears once, unless
        ``remove_duplicate`` is False."""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def _named_members(
        self, registry: str, prefix: str, recurse: bool, remove_duplicate: bool
    ) -> Iterator[tuple[str, Any]]:
        """Each module's entries of ``registry`` ("_parameters" or "_buffers"), by dotted name."""
        modules = (
            self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
            if recurse
            else iter([(prefix, self)])
        )
        seen: set[int] = set()
        for module_name, module in modules:
            for name, member in getattr(module, registry).items():
                if member is None or (remove_duplicate and id(member) in seen):
                    continue
                seen.add(id(member))
                yield (f"{module_name}.{name}" if module_name else name), member

    # ------------------------------------------------------------------- modes
    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode on this module and all its descendants.

        Raises:
            ValueError: ``mode`` is not a bool (``train("no")`` would be truthy), as in torch.
        """
        if not isinstance(mode, bool):
            raise ValueError(
                f"{type(self).__name__}.train: training mode is expected to be boolean, "
                f"got {mode!r}"
            )
        self.training = mode
        for module in self.children():
            module.train(mode)  # each child's own train(), which a subclass may override
        return self

    def eval(self: _M) -> _M:
        return self.train(False)

    def freeze(self: _M) -> _M:
        """Freeze every parameter (``trainable = False``), as torch's
        ``requires_grad_(False)``, and return the module.

        A frozen parameter gets no gradient, so an optimizer leaves it as it is:
        ``model[0].freeze()`` trains all but the first layer. A frozen layer still passes
        dL/dx back to the layers before it (``model[1].freeze()`` still trains ``model[0]``).
        """
        for param in self.parameters():
            param.trainable = False
        return self

    def unfreeze(self: _M) -> _M:
        """Make every parameter trainable again (torch's ``requires_grad_(True)``), and
        return the module."""
        for param in self.parameters():
            param.trainable = True
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient (to ``None``, or to zeros in place)."""
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    # ---------------------------------------------------------- devices, dtypes
    @overload
    def to(
        self: _M,
        device: torch.device | str | int | None = None,
        dtype: torch.dtype | None = None,
        non_blocking: bool = False,
        *,
        memory_format: torch.memory_format | None = None,
    ) -> _M: ...

    @overload
    def to(
        self: _M,
        dtype: torch.dtype,
        non_blocking: bool = False,
        *,
        memory_format: torch.memory_format | None = None,
    ) -> _M: ...

    @overload
    def to(
        self: _M,
        tensor: Tensor,
        non_blocking: bool = False,
        *,
        memory_format: torch.memory_format | None = None,
    ) -> _M: ...

    def to(self: _M, *args: Any, **kwargs: Any) -> _M:
        """Move parameters, gradients and buffers to a device and/or cast them to a dtype.

        torch's three forms: ``to(device, dtype, non_blocking)``, ``to(dtype,
        non_blocking)`` and ``to(tensor, non_blocking)`` (that tensor's device and
        dtype); ``memory_format`` applies to 4-D and 5-D tensors, as in torch. Only
        floating-point tensors change dtype; integer buffers keep theirs.

        Raises:
            TypeError: a dtype that is not floating point (complex ones included:
                nograd's layers are real), or arguments none of the forms takes.
        """
        try:
            device, dtype, non_blocking, memory_format = to_arguments(*args, **kwargs)
        except TypeError as error:  # Python's own message, which names no module
            raise TypeError(f"{type(self).__name__}.to: {error}") from None
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"{type(self).__name__}.to: expected a floating dtype, got {dtype}")

        def convert(tensor: Tensor) -> Tensor:
            cast = dtype if tensor.is_floating_point() else None
            if memory_format is not None and tensor.dim() in (4, 5):
                return tensor.to(device, cast, non_blocking, memory_format=memory_format)
            return tensor.to(device, cast, non_blocking)

        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param.data = convert(param.data)
                    if param.grad is not None:
                        param.grad = convert(param.grad)
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    setattr(module, name, convert(buffer))
        return self

    def double(self: _M) -> _M:
        return self.to(dtype=torch.float64)

    def float(self: _M) -> _M:
        return self.to(dtype=torch.float32)

    def half(self: _M) -> _M:
        return self.to(dtype=torch.float16)

    def bfloat16(self: _M) -> _M:
        return self.to(dtype=torch.bfloat16)

    def cpu(self: _M) -> _M:
        return self.to("cpu")

    def cuda(self: _M, device: int | torch.device | None = None) -> _M:
        """Move to the current GPU, or to ``device`` (an index or a cuda device)."""
        return self.to(
            torch.device("cuda", device) if isinstance(device, int) else device or "cuda"
        )

    # -------------------------------------------------------------- state_dict
    @overload
    def state_dict(
        self,
        *,
        destination: OrderedDict[str, Tensor] | None = None,
        prefix: str = "",
        keep_vars: Literal[False] = False,
    ) -> OrderedDict[str, Tensor]: ...

    @overload
    def state_dict(
        self,
        *,
        destination: OrderedDict[str, Any] | None = None,
        prefix: str = "",
        keep_vars: bool,
    ) -> OrderedDict[str, Any]: ...

    def state_dict(
        self,
        *,
        destination: OrderedDict[str, Any] | None = None,
        prefix: str = "",
        keep_vars: bool = False,
    ) -> OrderedDict[str, Any]:
        """Parameters and persistent buffers by dotted name, as ``torch.nn`` names them.

        The tensors share storage with the module, as in PyTorch. ``prefix`` starts every
        key as it is given (``"encoder."``, with its dot, as in torch); ``destination``, a
        dict to fill, is returned instead of a new one. With ``keep_vars=True`` a
        parameter's entry is the ``Parameter`` itself, gradient and all (torch's is its
        ``nn.Parameter``); else its ``data``. Buffers are their tensors either way.
        """
        state: OrderedDict[str, Any] = OrderedDict() if destination is None else destination
        for module_name, module in self.named_modules(remove_duplicate=False):
            dot = prefix + (f"{module_name}." if module_name else "")
            for name, param in module._parameters.items():
                if param is not None:
                    state[dot + name] = param if keep_vars else param.data
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    state[dot + name] = buffer
        return state

    def load_state_dict(
        self,
        state_dict: Mapping[str, Tensor | Parameter],
        strict: bool = True,
        assign: bool = False,
    ) -> _IncompatibleKeys:
        """Copy tensors from ``state_dict`` into this module, in place.

        Its values may be tensors or ``Parameter`` objects (``state_dict(keep_vars=True)``).

        With ``assign=True`` nothing is copied: each parameter's ``data`` and each buffer
        becomes the state dict's tensor itself, with its dtype, device and memory, as in
        torch (which loads weights into a model built on the ``meta`` device this way).
        torch puts new ``Parameter`` objects into the module, so an optimizer must be
        built after; here the module keeps its ``Parameter`` objects, so an optimizer
        built before goes on training them, and a weight two modules share stays shared.

        A one-element vector loads into a 0-dim entry, as in torch, which reads it
        as a scalar saved by its version 0.3.

        Raises:
            TypeError: ``state_dict`` is not a mapping (a list of pairs, say), as in torch.
            RuntimeError: naming every shape mismatch, and (when ``strict``) every
                missing or unexpected key.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{type(self).__name__}.load_state_dict: expected a dict-like state_dict, "
                f"got {type(state_dict).__name__}"
            )
        state_dict = self._with_entries_older_versions_lack(state_dict)
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        unexpected = self._unexpected_keys(state_dict)
        wrong_type = [
            f"{key}: expected a Tensor, got {type(state_dict[key]).__name__}"
            for key in own
            if key in state_dict and not isinstance(state_dict[key], (Tensor, Parameter))
        ]
        if wrong_type:
            raise RuntimeError(f"{type(self).__name__}.load_state_dict: " + "; ".join(wrong_type))
        given = {
            key: _as_loaded_into(own[key], _plain(state_dict[key]))
            for key in own
            if key in state_dict
        }
        mismatched = [
            f"{key}: expected shape {tuple(own[key].shape)}, got {tuple(value.shape)}"
            for key, value in given.items()
            if own[key].shape != value.shape
        ]
        problems = list(mismatched)
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if problems:
            raise RuntimeError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))
        if assign:
            self._assign(given)
            return _IncompatibleKeys(missing, unexpected)
        for key, value in given.items():
            if own[key].is_meta and not value.is_meta:
                warnings.warn(
                    f"{type(self).__name__}.load_state_dict: {key} is on the meta device, "
                    f"so copying into it does nothing (did you mean assign=True?)",
                    stacklevel=2,
                )
            own[key].copy_(value)
        return _IncompatibleKeys(missing, unexpected)

    def _with_entries_older_versions_lack(
        self, state_dict: Mapping[str, Tensor | Parameter]
    ) -> Mapping[str, Tensor | Parameter]:
        """``state_dict`` with what a module fills in for a dict from an older torch.

        torch's ``state_dict()`` records each module's version in ``_metadata``; a
        plain dict has none. Each module names the entries it takes as given when
        the dict lacks them at such a version (``_entries_older_versions_lack``).
        """
        metadata = getattr(state_dict, "_metadata", None)
        filled: dict[str, Tensor] = {}
        for name, module in self.named_modules(remove_duplicate=False):
            local = metadata.get(name, {}) if isinstance(metadata, Mapping) else {}
            dot = f"{name}." if name else ""
            for key, value in module._entries_older_versions_lack(local.get("version")).items():
                if dot + key not in state_dict:
                    filled[dot + key] = value
        return {**state_dict, **filled} if filled else state_dict

    def _entries_older_versions_lack(self, version: int | None) -> dict[str, Tensor]:
        """What ``load_state_dict`` assumes, by local name, where a dict from torch's
        ``version`` of this module (None: unknown) lacks it. Nothing, but for a module
        whose state gained an entry (BatchNorm1d)."""
        return {}

    def _assign(self, given: Mapping[str, Tensor]) -> None:
        """``load_state_dict(assign=True)``: the tensors ``given`` by key become ours."""
        for module_name, module in self.named_modules(remove_duplicate=False):
            dot = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None and dot + name in given:
                    param.data = given[dot + name]
            for name, buffer in module._buffers.items():
                key = dot + name
                if buffer is not None and name not in module._non_persistent and key in given:
                    setattr(module, name, given[key])

    def _unexpected_keys(self, state_dict: Mapping[str, Any]) -> list[str]:
        """The keys of ``state_dict`` that name nothing here, in torch's order.

        torch walks the modules as ``state_dict`` does and, at each, lists the keys
        under its prefix whose next name is neither one of its children nor one of its
        own entries; so the list follows the modules, not ``state_dict``'s order.
        """
        unexpected: list[str] = []
        for module_name, module in self.named_modules(remove_duplicate=False):
            dot = f"{module_name}." if module_name else ""
            own = {name for name, param in module._parameters.items() if param is not None}
            own |= {
                name
                for name, buffer in module._buffers.items()
                if buffer is not None and name not in module._non_persistent
            }
            for key in state_dict:
                if not key.startswith(dot):
                    continue
                first, *rest = key[len(dot) :].split(".", 1)
                if first not in (module._modules if rest else own):
                    unexpected.append(key)
        return unexpected

    # --------------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        """The arguments shown between the parentheses of ``repr``."""
        return ""

    def __repr__(self) -> str:
        return self._repr_with(self.extra_repr())

    def _repr_with(self, extra: str) -> str:
        """torch's layout: ``Name(extra)``, or one line per child inside the parentheses."""
        lines = extra.split("\n") if extra else []
        lines += [
            f"({name}): " + repr(child).replace("\n", "\n  ")
            for name, child in self._modules.items()
        ]
        if not self._modules and len(lines) <= 1:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

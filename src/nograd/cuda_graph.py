"""One whole training step recorded as a CUDA graph and replayed with a single launch.

Why: a GPU runs kernels that the CPU launches one at a time. For a small network each
kernel needs a few microseconds of GPU time, but launching it from Python (the
interpreter, torch's dispatcher, the driver) costs more, so the GPU waits for the CPU.
A CUDA graph records the kernels of one step once, with the memory addresses they read
and write (*capture*), and then launches the whole recording with one call (*replay*):
the CPU's cost per step no longer grows with the number of kernels.

What a recording implies, and how ``GraphedTrainStep`` deals with it:

- **Fixed addresses.** Every replay reads the same input tensors, so each batch is first
  copied into static input and target buffers, and every replay writes the same loss
  tensor. Tensors made during the capture (activations, the loss, the gradients) come
  from memory reserved for the graph, at addresses every replay reuses. Tensors made
  before it (parameters, optimizer state) are used in place: warm-up steps create them
  all, since a buffer that an optimizer makes on its first step would otherwise be made
  once, at the capture, and never again.
- **Fixed shapes.** A batch must have the example's shape; a training loop drops the
  last, partial batch of an epoch (or runs it without the graph).
- **Only GPU work is recorded.** Python runs once, during the capture: a Python number
  computed then (the learning rate, Adam's bias correction 1 - beta1^t) is frozen into
  the graph. So Adam's step count t lives on the GPU here (``capturable_adam_step``), and
  a changed learning rate (a scheduler) or a changed train/eval mode triggers a new capture.
- **Branches.** The capture computes the parameter gradients on side streams
  (``nograd.nn.grad_stream``: dL/dW on one, dL/db on another), so the graph runs them
  beside the chain of dL/dx that the layers below wait for, and joins the branches
  before the update. With ``update_per_layer=True``, another stream updates each
  layer's parameters as soon as the backward is done with them
  (``nograd.layer_updates``), beside the backward of the layers below.
- **Kernels, not launches.** A replay costs the CPU one launch, however many kernels
  it holds, so the capture gives each big parameter tensor its own kernel for each line
  of the update (``nograd.optim.foreach.own_kernels``): on a GPU that is faster than
  torch's one ``_foreach_*`` kernel for a list of big tensors.
- **No host synchronisation.** Reading a value on the CPU (``.item()``, ``.tolist()``,
  ``int(t)``, an ``if`` on a tensor) waits for the GPU, which a capture cannot do: nothing
  has run yet. The last warm-up step runs with torch's sync debug mode set to "error",
  so such a read is reported, with its traceback, before any capture is attempted.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import torch
from torch import Tensor

from nograd.layer_updates import backward_updating_each_layer, updates_per_layer_apply
from nograd.nn import parameter
from nograd.nn.container import Sequential
from nograd.nn.grad_stream import parameter_grads_on_side_stream
from nograd.nn.losses import Loss
from nograd.nn.module import Module
from nograd.nn.parameter import Parameter
from nograd.nn.utils.clip_grad import check_max_norm, clip_grad_norm_
from nograd.optim import SGD, Adam, Optimizer, foreach
from nograd.optim import hooks as optimizer_hooks
from nograd.optim.capturable_adam import adam_step_counts, capturable_adam_step
from nograd.optim.optimizer import in_model_order, optimized_parameters


class GraphedTrainStep:
    """``loss = step(x, y)``: zero_grad, forward, loss, backward and update as one CUDA graph.

    The first ``warmup`` calls run the step eagerly on a side stream (they create the
    gradients, the momentum buffers and Adam's moments, and load the GPU libraries); the
    next call captures the step, and every later call copies the batch into the static
    buffers and replays it. The warm-up calls are real training steps on the batches
    they are given, so N calls train exactly as N eager steps would. The step::

        optimizer.zero_grad(set_to_none=True)     # the backward writes fresh gradients
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())        # captured: dL/dW, dL/db on a side stream
        clip_grad_norm_(params, clip_grad_norm)   # only with clip_grad_norm
        optimizer.step()                          # Adam: capturable_adam_step instead

    Supports ``SGD`` (every option), ``Adam`` and ``AdamW``. The graph is captured again
    whenever a param group's options (a scheduler's lr) or a module's training mode
    differ from the capture's; that costs milliseconds, so schedule per epoch, not per
    step. Sets ``model.needs_input_grad = False``: nobody wants dL/d(data).

    Clearing gradients to None at the capture (torch's recipe) lets the backward store
    dL/dW = g^T x directly, where zeroing them in place would cost one more kernel per
    parameter and an accumulation per bias, every step.

    With ``update_per_layer=True`` the capture updates each layer's parameters right
    after that layer's backward, on a stream of their own, instead of all of them after
    the whole backward (``nograd.layer_updates``; the same numbers). It applies to a
    ``Sequential`` whose children share no parameter; otherwise the step updates at the
    end as usual, and ``updates_per_layer`` says which it does.

    Do not replace parameters or optimizer state between calls (``model.to``,
    ``optimizer.load_state_dict``): the graph keeps the old tensors; and do not take
    eager steps in between (Adam's t on the device would fall behind). Build a new step.
    Nor freeze or unfreeze a parameter after the capture: the graph computes the
    gradients it captured, and a parameter that starts to learn needs its optimizer
    state made by an eager step first; a call after such a change raises.

    Args:
        model: the network, on a CUDA device.
        loss_fn: a nograd loss with reduction "mean" or "sum" (a scalar loss).
        optimizer: an SGD, Adam or AdamW over (some of) the model's parameters.
        example_input: a batch of inputs: fixes the shape, dtype and device of each batch.
        example_target: a batch of targets, likewise.
        warmup: eager steps before the capture (>= 1).
        update_per_layer: update each layer as soon as its gradients are done, beside the
            backward of the layers below (a GPU runs the two side by side).
        clip_grad_norm: scale the gradients of the optimizer's parameters, taken as one
            vector, to this norm at most before the update (``nograd.nn.utils``); the
            norm is computed on the GPU, so the graph captures it. Not with
            ``update_per_layer``, which updates a layer before the others' gradients exist.

    Shape:
        x: the example input's shape, y: the example target's -> loss: (). The returned
        loss and ``output`` are overwritten by the next call: ``.clone()`` them to keep.
    """

    def __init__(
        self,
        model: Module,
        loss_fn: Loss,
        optimizer: Optimizer,
        example_input: Tensor,
        example_target: Tensor,
        warmup: int = 3,
        update_per_layer: bool = False,
        clip_grad_norm: float | None = None,
    ) -> None:
        _check_arguments(model, loss_fn, optimizer, example_input, example_target, warmup)
        if not isinstance(update_per_layer, bool):
            raise TypeError(
                "GraphedTrainStep: expected update_per_layer to be a bool, "
                f"got {update_per_layer!r}"
            )
        check_max_norm(clip_grad_norm, "GraphedTrainStep: clip_grad_norm")
        if clip_grad_norm is not None and update_per_layer:
            raise ValueError(
                "GraphedTrainStep: clip_grad_norm needs every gradient before the first "
                "update, and update_per_layer=True updates each layer during the backward"
            )
        _require_cuda(example_input, "example_input")
        _require_cuda(example_target, "example_target")
        for name, param in model.named_parameters():
            if param.device != example_input.device:
                raise ValueError(
                    f"GraphedTrainStep: expected the model on {example_input.device} (the "
                    f"example_input's device), got parameter {name!r} on {param.device}"
                )
        self.model, self.loss_fn, self.optimizer, self.warmup = model, loss_fn, optimizer, warmup
        self.clip_grad_norm = clip_grad_norm
        # whose gradients clip_grad_norm scales, in the model's order, as fit's eager steps
        self.clipped = in_model_order(optimized_parameters(optimizer), model.parameters())
        self.captures = 0  # how many times the step was captured (1 + re-captures)
        # whether the capture updates layer by layer (asked for, and the model allows it)
        self.updates_per_layer = update_per_layer and updates_per_layer_apply(model)
        model.needs_input_grad = False
        self._modules = [*model.modules(), loss_fn]
        self._x = example_input.detach().clone()  # the static buffers every replay reads
        self._y = example_target.detach().clone()
        self._calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._captured_settings: object = None
        self._params = list(model.parameters())
        self._captured_trainable: list[bool] = []  # each parameter's flag at the capture
        self._checked_version = -1  # parameter.version when the flags were last compared
        self._loss = self._output = torch.empty(0)
        self._adam_t: list[Tensor] = []  # Adam: t per param group, on the device
        self._adam_params: list[Parameter] = []  # whose Python state["step"] mirrors t

    @property
    def output(self) -> Tensor:
        """The model's output for the last batch (overwritten by the next call)."""
        return self._output

    @property
    def input_shape(self) -> torch.Size:
        """The shape every input batch must have (the example's)."""
        return self._x.shape

    @property
    def target_shape(self) -> torch.Size:
        """The shape every target batch must have (the example's)."""
        return self._y.shape

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Train on one batch; return the loss as a 0-dim device tensor (no host sync)."""
        _check_batch(x, self._x, "input")
        _check_batch(y, self._y, "target")
        self._calls += 1
        if self._calls <= self.warmup:
            return self._warmup_step(x, y, check_syncs=self._calls == self.warmup)
        if self._graph is not None and self._checked_version != parameter.version:
            self._check_trainable_flags()  # a flag may have changed since the capture
        settings = self._settings()
        if self._graph is None or settings != self._captured_settings:
            self._capture(settings)
        assert self._graph is not None
        self._x.copy_(x)
        self._y.copy_(y)
        self._graph.replay()
        for param in self._adam_params:  # the replay advanced t on the device; so do we
            state = self.optimizer.state[param]
            state["step"] = float(state["step"]) + 1
        return self._loss

    # ------------------------------------------------------------------ internals
    def _step(
        self,
        x: Tensor,
        y: Tensor,
        grad_streams: tuple[torch.cuda.Stream, torch.cuda.Stream] | None = None,
        update_stream: torch.cuda.Stream | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One training step; with ``grad_streams`` (the capture), dL/dW and dL/db go there.

        With ``update_stream`` too, each layer's update goes there, after its backward.
        """
        self.optimizer.zero_grad(set_to_none=True)
        output = self.model(x)
        loss = self.loss_fn(output, y)
        if grad_streams is None:  # a warm-up step: eager, one stream
            self.model.backward(self.loss_fn.backward())
            self._clip()
            self.optimizer.step()
            return loss, output
        advanced: set[int] = set()  # Adam: the groups whose t this step has advanced
        updated: set[Parameter] = set()
        with parameter_grads_on_side_stream(*grad_streams):
            if update_stream is None:
                self.model.backward(self.loss_fn.backward())
            else:
                assert isinstance(self.model, Sequential)  # updates_per_layer_apply says so
                updated = backward_updating_each_layer(
                    self.model,
                    self.loss_fn.backward(),
                    lambda params: self._update(params, advanced),
                    update_stream,
                )
        if update_stream is not None:
            torch.cuda.current_stream(update_stream.device).wait_stream(update_stream)  # join
        self._clip()  # after the join: every gradient is there
        rest = {
            param
            for group in self.optimizer.param_groups
            for param in group["params"]
            if param.grad is not None and param not in updated
        }
        if rest:  # everything, or what no layer's update took
            self._update(rest, advanced)
        return loss, output

    def _clip(self) -> None:
        """Clip the optimizer's gradients to ``clip_grad_norm``, if it is set."""
        if self.clip_grad_norm is not None:
            clip_grad_norm_(self.clipped, self.clip_grad_norm)

    def _update(self, params: AbstractSet[Parameter], advanced: set[int]) -> None:
        """The optimizer's update of ``params``, in a form a graph can replay."""
        if isinstance(self.optimizer, Adam):
            capturable_adam_step(self.optimizer, self._adam_t, params, advanced)
        else:
            assert isinstance(self.optimizer, SGD)  # _check_arguments allows no other
            self.optimizer._update(params)

    def _warmup_step(self, x: Tensor, y: Tensor, check_syncs: bool) -> Tensor:
        """An eager step on a side stream, as torch's capture recipe asks."""
        current = torch.cuda.current_stream(x.device)
        side = torch.cuda.Stream(x.device)  # type: ignore[no-untyped-call]
        side.wait_stream(current)
        previous_mode = torch.cuda.get_sync_debug_mode()
        try:
            with torch.cuda.stream(side):
                if check_syncs:  # any host sync raises here, before the capture would fail
                    torch.cuda.set_sync_debug_mode("error")
                self._loss, self._output = self._step(x, y)
        except RuntimeError as error:
            if "synchroniz" not in str(error):
                raise
            raise RuntimeError(
                "GraphedTrainStep: the training step waits for the GPU (a host sync such as "
                ".item() or .tolist()), which a CUDA graph cannot capture; see the traceback "
                f"above for where. torch said: {error}"
            ) from error
        finally:
            torch.cuda.set_sync_debug_mode(previous_mode)
        current.wait_stream(side)
        return self._loss

    def _capture(self, settings: object) -> None:
        self._graph = None  # release the previous recording and what it allocated
        self._loss = self._output = torch.empty(0)
        self.optimizer.zero_grad(set_to_none=True)
        self._adam_t, self._adam_params = [], []
        if isinstance(self.optimizer, Adam):
            self._adam_t = adam_step_counts(self.optimizer)
        grad_streams = (  # dL/dW, dL/db
            torch.cuda.Stream(self._x.device),  # type: ignore[no-untyped-call]
            torch.cuda.Stream(self._x.device),  # type: ignore[no-untyped-call]
        )
        update_stream = (
            torch.cuda.Stream(self._x.device)  # type: ignore[no-untyped-call]
            if self.updates_per_layer
            else None
        )
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), foreach.own_kernels():
            self._loss, self._output = self._step(self._x, self._y, grad_streams, update_stream)
        if isinstance(self.optimizer, Adam):  # those the captured step updates
            groups = self.optimizer.param_groups
            self._adam_params = [
                p for group in groups for p in group["params"] if p.grad is not None
            ]
        self._graph, self._captured_settings = graph, settings
        self.captures += 1
        self._captured_trainable = [param.trainable for param in self._params]
        self._checked_version = parameter.version

    def _check_trainable_flags(self) -> None:
        """Raise if a parameter was frozen or unfrozen since the capture (class docstring);
        compared only when ``parameter.version`` moved, so a replay pays one integer test."""
        now = [param.trainable for param in self._params]
        if now != self._captured_trainable:
            flags = zip(self.model.named_parameters(), self._captured_trainable, now, strict=True)
            names = [name for (name, _), was, is_ in flags if was != is_]
            raise RuntimeError(
                f"GraphedTrainStep: {', '.join(names)} was frozen or unfrozen after the step "
                "was captured; its graph cannot follow (build a new GraphedTrainStep: its "
                "warm-up makes the optimizer state a parameter that starts to learn needs; "
                "with Adam, give those parameters a param group of their own, whose step "
                "count starts at 0)"
            )
        self._checked_version = parameter.version

    def _settings(self) -> object:
        """Everything Python-side that the graph freezes: group options, training modes."""
        groups = [
            [(key, value) for key, value in group.items() if key != "params"]
            for group in self.optimizer.param_groups
        ]
        return groups, [module.training for module in self._modules]


# ---------------------------------------------------------------------- checks
def _check_arguments(
    model: Module, loss_fn: Loss, optimizer: Optimizer, x: Tensor, y: Tensor, warmup: int
) -> None:
    for name, value in (("model", model), ("loss_fn", loss_fn)):
        if not isinstance(value, Module):
            raise TypeError(
                f"GraphedTrainStep: expected {name} to be a nograd Module, "
                f"got {type(value).__name__}"
            )
    if type(optimizer) is not SGD and not isinstance(optimizer, Adam):
        raise TypeError(
            "GraphedTrainStep: expected an SGD, Adam or AdamW optimizer (the ones whose "
            f"step a graph can replay), got {type(optimizer).__name__}"
        )
    if optimizer_hooks.has_step_hooks(optimizer):
        raise ValueError(
            f"GraphedTrainStep: the {type(optimizer).__name__} optimizer has step hooks, which "
            "are Python and would not run when the graph is replayed; remove them, or train "
            "without a CUDA graph"
        )
    for name, tensor in (("example_input", x), ("example_target", y)):
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"GraphedTrainStep: expected {name} to be a Tensor, got {type(tensor).__name__}"
            )
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(
            "GraphedTrainStep: expected warmup to be an int >= 1 (the eager steps that "
            f"create gradients and optimizer state before the capture), got {warmup!r}"
        )
    if getattr(loss_fn, "reduction", "mean") == "none":
        raise ValueError(
            f"GraphedTrainStep: expected a scalar loss, got {loss_fn._describe()} "
            "(reduction='none')"
        )
    for module in model.modules():
        if getattr(module, "generator", None) is not None:
            raise ValueError(
                f"GraphedTrainStep: {module._describe()} draws from its own torch.Generator, "
                "which a CUDA graph does not advance; use generator=None (torch's default "
                "CUDA generator is graph-safe)"
            )


def _require_cuda(tensor: Tensor, name: str) -> None:
    if tensor.device.type != "cuda":
        raise ValueError(
            f"GraphedTrainStep: CUDA graphs need CUDA tensors, got {name} on "
            f"{tensor.device}; train on the CPU without it, or move model and data to 'cuda'"
        )


def _check_batch(batch: Tensor, static: Tensor, name: str) -> None:
    if not isinstance(batch, Tensor):
        raise TypeError(f"GraphedTrainStep: expected the {name} to be a Tensor, got {batch!r}")
    if batch.shape != static.shape:
        raise ValueError(
            f"GraphedTrainStep: expected {name} of shape {tuple(static.shape)} (the example's: "
            f"a graph replays fixed shapes, so drop the last partial batch), "
            f"got {tuple(batch.shape)}"
        )
    if batch.dtype != static.dtype or batch.device != static.device:
        raise TypeError(
            f"GraphedTrainStep: expected {name} of dtype {static.dtype} on {static.device} "
            f"(the example's), got {batch.dtype} on {batch.device}"
        )

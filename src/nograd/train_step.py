"""One training step as a single call, run as straight-line code where the model allows.

Why: on the CPU, a small network's training step is mostly Python. For the reference
network 2-25-25-25-2 at batch 1 on this project's Intel machine, its kernels take about
115 us, and the modules, the loss and the optimizer add about 55 us around them: the
calls, and the checks and bookkeeping that let a user add a hook, freeze a layer, keep
an old gradient or change the learning rate between any two lines
(``benchmarks/straight_line.py``). A user who
runs the same four lines at every step can hand them over as one call::

    step = TrainStep(model, loss_fn, optimizer)
    for x, y in batches:
        loss = step(x, y)     # optimizer.zero_grad(); loss = loss_fn(model(x), y)
                              # model.backward(loss_fn.backward()); optimizer.step()

and ``TrainStep`` runs those lines as one function of torch kernels with no module in
between, the same kernels in the same order, so the same numbers to the bit. It is the
CPU's counterpart of ``nograd.cuda_graph.GraphedTrainStep``: both trade the freedom to
change things between two lines for a cheaper step.

The straight form covers a small multilayer perceptron on the CPU, which is where
Python's share of a step is largest:

- the model is a ``Sequential`` of ``Linear`` layers with a bias, each optionally
  followed by a ``ReLU``, every parameter trainable, with no hooks;
- the loss is ``CrossEntropyLoss`` without label smoothing or ``MSELoss``, reduced by
  "mean" or "sum";
- the optimizer holds the model's parameters as one group in one flat buffer
  (``nograd.optim.flat``), which every optimizer here makes at its first step for a
  group of at most ``FLAT_MAX_NUMEL`` (65536) numbers on the CPU, in float32 or float64.

Anything else (another layer, a hook, a frozen parameter, a batch the kernels refuse,
a gradient the user still holds) runs the four eager lines instead, with their checks
and error messages: a ``TrainStep`` always trains exactly as the loop it replaces. The
straight form's update is SGD's usual momentum line on the flat buffers
(``SGD.step_on_flat``); any other optimizer or option runs ``optimizer.step()``, which
finds the gradients already in its flat buffer.

What the straight form does not watch, as ``GraphedTrainStep`` does not: optimizer
state replaced by hand between calls (``optimizer.state[p]["momentum_buffer"] = b``).
``optimizer.load_state_dict`` is seen. After a straight step each ``param.grad`` holds
its gradient, as after the eager lines, but the modules keep no saved tensors: a
``model.backward`` needs a forward first.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nograd.nn import aten, grad_stream, hooks, matmul, parameter
from nograd.nn.activations import ReLU
from nograd.nn.constants import one_like, scalar
from nograd.nn.container import Sequential
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.linear import Linear
from nograd.nn.losses import REDUCTION_CODES, Loss, MSELoss
from nograd.nn.module import Module
from nograd.nn.parameter import Parameter
from nograd.optim import SGD, Optimizer
from nograd.optim.flat import FlatGroup

_nll_loss_forward = aten.kernel(torch.ops.aten.nll_loss_forward.default)
_nll_loss_backward = aten.kernel(torch.ops.aten.nll_loss_backward.default)
_threshold_backward = aten.kernel(torch.ops.aten.threshold_backward.default)
_DATA = operator.attrgetter("data")  # param.data, read in C by map()


# a loss's forward and backward lines: (loss_fn, 1, z, y) -> (loss, dL/dz), or None
LossLines = Callable[..., "tuple[Tensor, Tensor] | None"]


@dataclass
class _Plan:
    """What the straight form needs, found once and valid while the versions match.

    Layer k computes a_{k+1} = relu?(a_k W_k^T + b_k); ``params`` are W_0, b_0, W_1, ...
    in the model's order, which is the flat group's.
    """

    hooks_version: int
    parameters_version: int
    loss_fn: Loss
    loss_lines: LossLines  # the loss's forward and backward: (loss, dL/dz), or None
    flat: FlatGroup
    grad: Tensor  # flat.grad when the plan was made: its slices are grad_views'
    params: list[Parameter]
    data_views: list[Tensor]  # each param.data, a view of flat.data
    weights: list[Tensor]  # W_k, (out, in)
    weights_t: list[Tensor]  # W_k^T, views: the updates show through
    biases: list[Tensor]
    relu: list[bool]  # whether a ReLU follows layer k
    one: Tensor  # dL/dl = 1, in the parameters' dtype and device


class TrainStep:
    """``loss = step(x, y)``: zero_grad, forward, loss, backward and update in one call.

    Trains exactly as::

        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()

    bit for bit, and runs these lines as straight-line code where the model, the loss
    and the optimizer allow (module docstring); elsewhere it runs them as written.
    Sets ``model.needs_input_grad = False``, as ``GraphedTrainStep`` does: a call
    returns the loss only, so nobody wants dL/d(input) (a backward hook on the first
    layer sees None there).

    Args:
        model: the network.
        loss_fn: a nograd loss of (output, target) with a scalar result.
        optimizer: any nograd optimizer over the model's parameters, except one that
            needs a closure (LBFGS).

    Attributes:
        output: the model's output for the last batch, ``model(x)`` (for an accuracy,
            say), as ``GraphedTrainStep.output``; None before the first call.
        straight_steps: how many calls ran the straight form (the others ran the
            four lines as written): the way to see that a setup is covered.

    Shape:
        x: the model's input, y: the loss's target -> loss: (). The loss is a new
        tensor at each call.
    """

    def __init__(self, model: Module, loss_fn: Loss, optimizer: Optimizer) -> None:
        if optimizer.needs_closure:
            raise ValueError(
                f"TrainStep: {type(optimizer).__name__}.step needs a closure; "
                "call optimizer.step(closure) in a loop instead"
            )
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        model.needs_input_grad = False  # a call returns the loss: nobody gets dL/d(input)
        self._plan: _Plan | None = None
        self.output: Tensor | None = None
        self.straight_steps = 0

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        plan = self._plan
        if (
            plan is not None
            and plan.hooks_version == hooks.version  # no hook added or removed anywhere
            and plan.parameters_version == parameter.version  # children, parameters, frozen
            and plan.flat.current  # no step tensor by tensor, no load_state_dict since
            and plan.flat.grad is plan.grad  # the same gradient buffer
            and "step" not in self.optimizer.__dict__  # no step hooks
            and all(map(operator.is_, map(_DATA, plan.params), plan.data_views))
        ):
            loss = self._straight_step(plan, x, y)
            if loss is not None:
                self.straight_steps += 1
                return loss
        return self._eager_step(x, y)

    def _eager_step(self, x: Tensor, y: Tensor) -> Tensor:
        """The four lines, as a user writes them; then a plan for the next call."""
        self._plan = None
        self.optimizer.zero_grad()
        self.output = self.model(x)
        loss = self.loss_fn(self.output, y)
        self.model.backward(self.loss_fn.backward())
        self.optimizer.step()
        self._plan = self._make_plan()
        return loss

    def _make_plan(self) -> _Plan | None:
        """The straight form's plan, or None where the model, loss or optimizer is not
        one it covers (module docstring)."""
        model, loss_fn, optimizer = self.model, self.loss_fn, self.optimizer
        loss_lines = _LOSS_LINES.get(type(loss_fn))
        if type(model) is not Sequential or loss_lines is None:
            return None
        layers: list[Linear] = []
        relu: list[bool] = []
        for module in model.children():
            if type(module) is Linear and module.bias is not None:
                layers.append(module)
                relu.append(False)
            elif type(module) is ReLU and relu and not relu[-1]:
                relu[-1] = True  # it follows a Linear: fused with it
            else:
                return None
        params = list(model.parameters())  # each once, as the optimizer holds them
        in_layers = [p for layer in layers for p in (layer.weight, layer.bias)]
        groups = optimizer.param_groups
        if len(groups) != 1 or not _same(groups[0]["params"], params, in_layers):
            return None  # a shared layer, or parameters the optimizer does not hold
        flat = optimizer.flat_group(groups[0])
        if flat is None or not flat.holds(params) or grad_stream.side is not None:
            return None
        if any(hooks.has_hooks(m) for m in (model, loss_fn, *model.children())):
            return None
        if not all(p.trainable for p in params):
            return None
        for module in (model, loss_fn, *model.children()):
            module.saved.clear()  # a backward after straight steps needs a forward first
        return _Plan(
            hooks_version=hooks.version,
            parameters_version=parameter.version,
            loss_fn=loss_fn,
            loss_lines=loss_lines,
            flat=flat,
            grad=flat.grad,
            params=params,
            data_views=[p.data for p in params],
            weights=[layer.weight.data for layer in layers],
            weights_t=[layer.weight.data.t() for layer in layers],
            biases=[layer.bias.data for layer in layers],  # type: ignore[union-attr]
            relu=relu,
            one=one_like(flat.data),
        )

    def _straight_step(self, plan: _Plan, x: Tensor, y: Tensor) -> Tensor | None:
        """The step as one function (the lines of ``Linear.forward_relu``, the loss's
        ``forward`` and ``backward``, ``Linear.backward`` and ``ReLU.backward``, then
        ``SGD.step_on_flat`` or ``optimizer.step()``), or None, having changed nothing,
        where the loss's options, a held gradient or the batch need the eager lines."""
        params = plan.params
        if plan.loss_fn.reduction == "none":
            return None  # set since the plan was made: not a scalar loss
        # zero_grad: each gradient is written into its slice of the flat buffer, as the
        # eager backward does into the slices zero_grad lends; unless the user's code
        # still holds an old gradient there (FlatGroup.lend_grad_views)
        slices = plan.flat.slices_to_write()
        if slices is None:
            return None
        weights, weights_t, biases, relu = plan.weights, plan.weights_t, plan.biases, plan.relu
        last = len(weights) - 1
        try:  # torch checks shapes and dtypes; the eager lines explain what it refused
            # forward: a_0 = x, a_{k+1} = max(0, b_k + a_k W_k^T) or b_k + a_k W_k^T
            activations = [x]
            for k in range(last + 1):
                fused = matmul.addmm_relu if relu[k] else matmul.addmm
                activations.append(fused(biases[k], activations[k], weights_t[k]))
            lines = plan.loss_lines(plan.loss_fn, plan.one, activations[-1], y)
        except (RuntimeError, IndexError):
            return None
        if lines is None:
            return None
        loss, g = lines  # g = dL/dz, z = a_{last + 1} the model's output
        self.output = activations[-1]
        for k in range(last, -1, -1):
            a = activations[k]
            if relu[k]:  # dL/d(pre-activation) = dL/da_{k+1} * 1[a_{k+1} > 0]
                g = _threshold_backward(g, activations[k + 1], 0)
            matmul.mm(g.t(), a, out=slices[2 * k])  # dL/dW_k = g^T a_k
            torch.sum(g, 0, out=slices[2 * k + 1])  # dL/db_k = sum_n g_n
            if k > 0:
                g = matmul.mm(g, weights[k])  # dL/da_k = g W_k
        for param, grad in zip(params, slices, strict=True):
            param.grad, param.lent_grad = grad, None
        optimizer = self.optimizer  # the update: SGD's usual line on the flat buffers
        if not (type(optimizer) is SGD and optimizer.step_on_flat(plan.flat)):
            optimizer.step()
        return loss


def _cross_entropy_lines(
    loss_fn: CrossEntropyLoss, one: Tensor, z: Tensor, y: Tensor
) -> tuple[Tensor, Tensor] | None:
    """``CrossEntropyLoss.forward`` and ``backward``'s lines for logits z (N, C) and class
    indices y (N,): the loss and dL/dz; None where the eager lines must run."""
    if loss_fn.label_smoothing != 0:  # set since the plan was made
        return None
    reduction, weight, ignored = (
        REDUCTION_CODES[loss_fn.reduction], loss_fn.weight, loss_fn.ignore_index
    )  # fmt: skip
    log_p = torch.log_softmax(z, 1)  # log p = z - logsumexp(z)
    loss, total_weight = _nll_loss_forward(log_p, y, weight, reduction, ignored)
    # dL/dlog p_ic = -w_{y_i} [c = y_i] (/ sum_i w_{y_i} under "mean")
    grad_log_p = _nll_loss_backward(one, log_p, y, weight, reduction, ignored, total_weight)
    # dL/dz_ic = dL/dlog p_ic - p_ic sum_k dL/dlog p_ik
    return loss, torch._log_softmax_backward_data(grad_log_p, log_p, 1, log_p.dtype)


def _mse_lines(loss_fn: MSELoss, one: Tensor, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
    """``MSELoss.forward`` and ``backward``'s lines for z and a target y of its shape and
    dtype: the loss and dL/dz; None where the eager lines must run (another target)."""
    if y.shape != z.shape or y.dtype != z.dtype:
        return None  # MSELoss explains it (torch would broadcast)
    diff = z - y
    squares = diff * diff  # l_i = (z_i - y_i)^2
    mean = loss_fn.reduction == "mean"
    norm = 2 / max(diff.numel(), 1) if mean else 2.0
    # dL/dz_i = 2 (z_i - y_i), / n under "mean" (n: the number of elements of z)
    return (squares.mean() if mean else squares.sum()), diff * scalar(norm, diff)


# the losses the straight form covers, by exact class: a subclass may compute otherwise
_LOSS_LINES: dict[type[Loss], LossLines] = {
    CrossEntropyLoss: _cross_entropy_lines,
    MSELoss: _mse_lines,
}


def _same(*lists: Sequence[Parameter | None]) -> bool:
    """Whether the lists hold the same parameters, by identity, in the same order."""
    first = lists[0]
    return all(len(other) == len(first) and all(map(operator.is_, first, other)) for other in lists)

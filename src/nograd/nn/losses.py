"""The ``Loss`` base class and the simplest elementwise losses: MSE and L1.

A loss is a scalar L(pred, target) whose ``backward`` starts the chain rule: after
``loss = loss_fn(pred, target)``, ``loss_fn.backward()`` returns dL/d(pred), the
gradient that ``model.backward`` takes. Targets are data, not parameters: they get
no gradient. Shapes are never broadcast silently, and targets must share pred's
dtype (torch would promote them; here that is a TypeError). The other losses have
files of their own: ``binary_cross_entropy`` (BCELoss, BCEWithLogitsLoss), ``huber``
(HuberLoss, SmoothL1Loss), ``cross_entropy`` (CrossEntropyLoss) and ``nll_loss``
(NLLLoss).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from nograd.nn.constants import HALF_DTYPES, scalar
from nograd.nn.module import Module

REDUCTIONS = ("mean", "sum", "none")
# ATen's numbering of the reductions, which its loss kernels take
REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}


class Loss(Module):
    """Base class: per-element losses l_i, reduced to mean_i l_i, sum_i l_i or kept.

    ``backward(grad_output)`` returns dL/d(pred). ``None`` means dL/d(loss) = 1; a
    0-dim ``grad_output`` scales the gradient; with ``reduction="none"`` it is
    required and must have the loss's shape.

    Args:
        size_average, reduce: torch's deprecated pair, kept for its argument order:
            when either is given, it sets the reduction as in torch (reduce=False:
            "none"; else size_average=False: "sum"; else "mean"), with torch's warning.
        reduction: "mean" (the default), "sum" or "none".
    """

    def __init__(
        self, size_average: bool | None = None, reduce: bool | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = legacy_reduction(size_average, reduce)
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: expected reduction in {REDUCTIONS}, got {reduction!r}"
            )
        self.reduction = reduction

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """``forward``'s loss, called with whatever arguments it takes (a loss of the
        user's may take more, or name them otherwise). ``input=``, torch's name for the
        predictions, is passed as the first argument, so ``loss_fn(input=y_hat,
        target=y)`` runs as in torch."""
        if "input" in kwargs and not args:
            args = (kwargs.pop("input"),)
        loss: Tensor = self.forward(*args, **kwargs)
        return loss

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement backward()")

    def _reduce(self, loss: Tensor) -> Tensor:
        """Reduce per-element losses l_i to their mean, their sum, or nothing."""
        self.saved["l"] = loss  # per-element losses l_i: backward needs their shape and dtype
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.mean()

    def _checked_grad_output(self, grad_output: Tensor | None) -> Tensor | None:
        """dL/d(loss) in the loss's dtype (None: 1), once its shape is known to be right.

        Unreduced, None is 1 only for a single loss (one sample), as autograd seeds
        ``loss.backward()`` only for a loss of one element.

        Raises:
            TypeError: a grad_output that is not a tensor (torch's backward takes none).
            ValueError: a grad_output of the wrong shape.
        """
        if grad_output is None and self.reduction != "none":
            return None  # the usual call, loss_fn.backward(): dL/dl = 1, nothing to check
        if grad_output is not None and not isinstance(grad_output, Tensor):
            raise TypeError(
                f"{self._describe()}: expected grad_output as a Tensor or None, got "
                f"{type(grad_output).__name__} (pass torch.tensor(c) for a number c)"
            )
        loss = self._saved("l")
        if self.reduction == "none":
            if grad_output is None and loss.numel() == 1:
                grad_output = torch.ones_like(loss)  # dL/dl = 1 for L = l
            if grad_output is None or grad_output.shape != loss.shape:
                got = None if grad_output is None else tuple(grad_output.shape)
                raise ValueError(
                    f"{self._describe()}: expected grad_output of shape "
                    f"{tuple(loss.shape)} (the unreduced loss), got {got}"
                )
        elif grad_output is not None and grad_output.dim() != 0:
            raise ValueError(
                f"{self._describe()}: expected a 0-dim grad_output, "
                f"got shape {tuple(grad_output.shape)}"
            )
        return None if grad_output is None else grad_output.to(loss.dtype)

    def _upstream(self, grad_output: Tensor | None) -> float | Tensor:
        """dL/dl_i: the gradient each per-element loss receives from the reduction."""
        grad_output = self._checked_grad_output(grad_output)
        if self.reduction == "none":
            assert grad_output is not None  # checked above
            return grad_output  # dL/dl_i = g_i
        scale = 1.0 if grad_output is None else grad_output
        if self.reduction == "sum":
            return scale  # dL/dl_i = g
        n = max(self._saved("l").numel(), 1)  # an empty batch has an empty gradient: no 1/0
        return scale / n  # dL/dl_i = g / n

    @staticmethod
    def _chain(local: Tensor, g: float | Tensor) -> Tensor:
        """dL/dpred = dL/dl * dl/dpred, in place on ``local`` (a fresh tensor)."""
        if isinstance(g, float):
            if g == 1.0:
                return local  # a batch of one under "mean", or "sum": nothing to scale
            return local.mul_(scalar(g, local))  # a cached 0-dim tensor where exact
        return local.mul_(g)

    def _check_pair(self, pred: Tensor, target: Tensor) -> None:
        """Elementwise losses: target must match pred exactly, in shape and dtype."""
        if target.shape != pred.shape:
            raise ValueError(
                f"{self._describe()}: expected target of shape {tuple(pred.shape)} "
                f"(same as pred), got {tuple(target.shape)}"
            )
        if not pred.is_floating_point() or target.dtype != pred.dtype:
            raise TypeError(
                f"{self._describe()}: expected floating pred and target of one dtype, "
                f"got pred {pred.dtype} and target {target.dtype}"
            )

    def _register_weight(self, name: str, weight: Tensor | None) -> None:
        """Keep an optional weight as a buffer, as torch does, so that ``to()`` moves it."""
        if weight is not None and not isinstance(weight, Tensor):
            raise TypeError(f"{type(self).__name__}: {name} must be a Tensor, got {weight!r}")
        self.register_buffer(name, weight)

    def _check_broadcast(self, name: str, buffer: Tensor | None, pred: Tensor) -> None:
        """A weight must broadcast to pred's shape without growing it, in pred's dtype."""
        if buffer is None:
            return
        fits = all(
            a in (1, b) for a, b in zip(reversed(buffer.shape), reversed(pred.shape), strict=False)
        )
        if buffer.dim() > pred.dim() or not fits:
            raise ValueError(
                f"{self._describe()}: {name} of shape {tuple(buffer.shape)} does not "
                f"broadcast to pred's shape {tuple(pred.shape)}"
            )
        self._check_dtype(name, buffer, pred)

    def _check_dtype(self, name: str, buffer: Tensor, pred: Tensor) -> None:
        """A weight buffer must share pred's dtype, so the loss never changes dtype."""
        if buffer.dtype != pred.dtype:
            raise self._dtype_mismatch(name, buffer, pred)

    def _dtype_mismatch(self, name: str, buffer: Tensor, pred: Tensor) -> TypeError:
        return TypeError(
            f"{self._describe()}: expected {name} of dtype {pred.dtype} (same as pred), "
            f"got {buffer.dtype}; convert it with loss_fn.to({pred.dtype})"
        )

    def extra_repr(self) -> str:
        """The settings, for error messages (``_describe``); ``repr`` leaves them out."""
        return f"reduction={self.reduction!r}"

    def __repr__(self) -> str:
        return self._repr_with("")  # torch's losses print no arguments: "MSELoss()"


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """The reduction that torch's deprecated ``size_average`` and ``reduce`` ask for."""
    if reduce is None or reduce:
        reduction = "mean" if size_average is None or size_average else "sum"
    else:
        reduction = "none"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use "
        f"reduction='{reduction}' instead.",
        UserWarning,
        stacklevel=3,
    )
    return reduction


class MSELoss(Loss):
    """Mean squared error, l_i = (pred_i - target_i)^2.

    Shape:
        pred: (*), target: (*), same shape and dtype -> loss: () or (*) if "none".
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        diff = pred - target
        self.saved["diff"] = diff  # the backward needs only pred - target
        return self._reduce(diff * diff)

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        diff = self._saved("diff")
        g = self._checked_grad_output(grad_output)  # None: dL/dl = 1
        norm = 2 / max(diff.numel(), 1) if self.reduction == "mean" else 2.0  # 2 / N or 2
        if diff.dtype in HALF_DTYPES:
            # torch's kernel rounds 2 / N to pred's dtype before it multiplies
            norm = torch.tensor(norm, dtype=diff.dtype).item()
        # dl/dpred, for l this loss's value: 2 (pred - target), / N under "mean"; torch
        # multiplies by 2 / N before g (g / N first would round differently)
        grad = diff * scalar(norm, diff)
        return grad if g is None else grad.mul_(g)  # dL/dpred = g dl/dpred, in torch's order


class L1Loss(Loss):
    """Mean absolute error, l_i = |pred_i - target_i|.

    Its gradient is sign(pred - target), taken as 0 where pred == target (as torch).

    Shape:
        pred: (*), target: (*), same shape and dtype -> loss: () or (*) if "none".
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        diff = pred - target
        self.saved["diff"] = diff  # the backward needs only the sign of pred - target
        return self._reduce(diff.abs())

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        diff = self._saved("diff")
        g = self._upstream(grad_output)
        return self._chain(torch.sign(diff), g)  # dL/dpred = g * sign(pred - target)

"""Huber and smooth L1 losses: quadratic near the target, linear far from it.

With d = pred - target, each is a parabola for |d| below a threshold and a straight
line beyond it, joined so that the slope is continuous. A near miss gets a gradient
that shrinks to 0 with d, as under MSE; a far outlier pulls with a bounded one, as
under L1, instead of one that grows with d. The two are the same curve at two
scales: ``HuberLoss(delta=c)`` is c times ``SmoothL1Loss(beta=c)``.

Both run ATen's kernels, the ones ``torch.nn``'s modules run, so value and gradient
have torch's bits. The gradient could not have them otherwise: torch's backward kernel
rounds its product in one order in its vectorised loop and in another in the scalar
loop that finishes each run of elements, so an element's bits depend on where it
lies, and no sequence of whole-tensor ops reproduces both.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.constants import one_like
from nograd.nn.losses import REDUCTION_CODES, Loss

# ATen's kernels, looked up once (torch.ops resolves names slowly)
_huber_loss = aten.kernel(torch.ops.aten.huber_loss.default)
_huber_loss_backward = aten.kernel(torch.ops.aten.huber_loss_backward.default)
_smooth_l1_loss = aten.kernel(torch.ops.aten.smooth_l1_loss.default)
_smooth_l1_loss_backward = aten.kernel(torch.ops.aten.smooth_l1_loss_backward.default)


class HuberLoss(Loss):
    """Huber loss, l = 0.5 d^2 if |d| < delta, else delta (|d| - 0.5 delta), d = pred - target.

    Its gradient is the residual clipped to [-delta, delta]:

        dl/dpred = d if |d| < delta, else delta sign(d).

    Args:
        reduction: "mean" (the default), "sum" or "none".
        delta: where the parabola becomes a line; must be positive (torch's
            RuntimeError otherwise, raised here when the loss is built).

    Shape:
        pred: (*), target: (*), same shape and dtype -> loss: () or (*) if "none".
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction=reduction)
        if not delta > 0:  # NaN too, as torch's check
            raise RuntimeError(f"HuberLoss: expected delta > 0, got {delta}")
        self.delta = delta

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        self.saved["pred"], self.saved["target"] = pred, target  # the kernel recomputes d
        # l = 0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta), in one pass
        loss: Tensor = _huber_loss(pred, target, REDUCTION_CODES["none"], self.delta)
        return self._reduce(loss)

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        pred, target = self._saved("pred"), self._saved("target")
        g = self._checked_grad_output(grad_output)
        g = one_like(pred) if g is None else g  # dL/dl, 1 by default: the kernel takes a tensor
        reduction = REDUCTION_CODES[self.reduction]
        # dL/dpred = g d if |d| < delta else g delta sign(d) (times 1 / N under "mean")
        grad: Tensor = _huber_loss_backward(g, pred, target, reduction, self.delta)
        return grad

    def extra_repr(self) -> str:
        return super().extra_repr() + f", delta={self.delta}"


class SmoothL1Loss(Loss):
    """Smooth L1 loss, l = 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta, d = pred - target.

    Its gradient is the residual over beta, clipped to [-1, 1]:

        dl/dpred = d / beta if |d| < beta, else sign(d).

    With beta = 0 it is the L1 loss |d|, computed as torch computes it, so its
    gradient at d = 0 is 0, as L1Loss's.

    Args:
        size_average, reduce: torch's deprecated pair (see ``Loss``).
        reduction: "mean" (the default), "sum" or "none".
        beta: where the parabola becomes a line; must not be negative (torch's
            RuntimeError otherwise, raised here when the loss is built).

    Shape:
        pred: (*), target: (*), same shape and dtype -> loss: () or (*) if "none".
    """

    def __init__(
        self,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        beta: float = 1.0,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        if not beta >= 0:  # NaN too, as torch's check
            raise RuntimeError(f"SmoothL1Loss: expected beta >= 0, got {beta}")
        self.beta = beta

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        self.saved["pred"], self.saved["target"] = pred, target  # the kernel recomputes d
        if self.beta == 0:  # torch's own route: the L1 loss, op for op
            return self._reduce((pred - target).abs())  # l = |d|
        # l = 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta, in one pass
        loss: Tensor = _smooth_l1_loss(pred, target, REDUCTION_CODES["none"], self.beta)
        return self._reduce(loss)

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        pred, target = self._saved("pred"), self._saved("target")
        if self.beta == 0:  # L1Loss's backward, whose ops autograd runs for L1
            sign = torch.sign(pred - target)  # dl/dpred = sign(d), 0 at d = 0
            return self._chain(sign, self._upstream(grad_output))  # dL/dpred = g sign(d)
        g = self._checked_grad_output(grad_output)
        g = one_like(pred) if g is None else g  # dL/dl, 1 by default: the kernel takes a tensor
        reduction = REDUCTION_CODES[self.reduction]
        # dL/dpred = g d / beta if |d| < beta else g sign(d) (times 1 / N under "mean")
        grad: Tensor = _smooth_l1_loss_backward(g, pred, target, reduction, self.beta)
        return grad

    def extra_repr(self) -> str:
        return super().extra_repr() + f", beta={self.beta}"

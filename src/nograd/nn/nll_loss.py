"""The negative log-likelihood of class indices, given log-probabilities.

NLLLoss takes log-probabilities log p, usually ``LogSoftmax(dim=1)``'s output, and
class indices y, and scores each row by the log-probability of its target class:

    l_i = -w_{y_i} log p_{i,y_i}

(w = 1 without class weights). A row whose target is ``ignore_index`` counts for
nothing, and "mean" divides the sum by sum_i w_{y_i} over the rows kept: a weighted
mean, NaN when every row is ignored (0 / 0, as in torch). ``LogSoftmax(dim=1)``
followed by ``NLLLoss()`` is ``CrossEntropyLoss()``, to the bit: cross-entropy is this
very loss after a log-softmax, run by the same kernels (``nograd.nn.cross_entropy``).

The loss touches one entry per row, so its gradient is -w_{y_i} at that entry and 0
elsewhere:

    dL/dlog p_ic = -g w_{y_i} [c = y_i]  (over sum_i w_{y_i} under "mean")

Value and gradient are those of ATen's kernels ``nll_loss_forward`` and
``nll_loss_backward`` (``nll_loss2d_*`` for K dims), which torch's own NLLLoss runs,
through ``nograd.nn.cross_entropy_shapes``: the shapes, their routes to the kernels
and the clear errors are those of CrossEntropyLoss. Nothing reads the targets on the
host, so a loss on a GPU never waits for it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn import cross_entropy_shapes as shapes
from nograd.nn.constants import one_like
from nograd.nn.losses import REDUCTION_CODES, Loss


class NLLLoss(Loss):
    """Negative log-likelihood of class indices y, l_i = -w_{y_i} log p_{i,y_i}.

    pred holds log-probabilities log p, such as ``LogSoftmax(dim=1)``'s output (not
    logits, which ``CrossEntropyLoss`` takes). Rows whose target is ``ignore_index``
    contribute neither loss nor gradient. "mean" divides the sum over the other rows by
    sum_i w_{y_i} (their count without weights): NaN if there are none, as in torch.
    The gradient is dL/dlog p_ic = -g w_{y_i} [c = y_i] (over sum_i w_{y_i} under
    "mean"), 0 in ignored rows. Value and gradient are torch's bits: its own kernels.

    Args:
        weight: class weights w of shape (C,) and pred's dtype, a buffer as in torch.
        size_average, reduce: torch's deprecated pair (see ``Loss``).
        ignore_index: a target value whose rows are skipped.
        reduction: "mean" (the default), "sum" or "none".

    Shape:
        pred: (N, C) log-probabilities, (C,) for one sample, or (N, C, d1, ..., dk)
        with k >= 1 (classes along dim 1, a row at each of the N d1 ... dk positions).
        target: class indices in [0, C) of pred's shape without the class dim, that is
        (N,), () or (N, d1, ..., dk), of an integer dtype. As in torch, one sample's
        index may also be (1,), for the loss only: the backward refuses it.
        loss: () for "mean" and "sum"; for "none" one per row, (N,), () or
        (N, d1, ..., dk).
    """

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        shapes.register_class_weight(self, weight)
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        log_p, y = pred, target
        if y.dtype != torch.int64 and shapes.is_index_dtype(y.dtype):
            y = y.long()  # torch's kernels take int64 class indices (and uint8) only
        if log_p.dim() != 2:  # checked first: the kernel sees views, not these shapes
            shapes.check_fit(self, log_p, y)
        if log_p.dim() > 2:
            # as torch's nll_loss_nd does: the image kernel's backward takes no other
            # layout (torch's own backward fails on a permuted (N, C, H, W) there)
            log_p = log_p.contiguous()
        reduction = REDUCTION_CODES[self.reduction]
        # torch's kernels check shapes, dtypes and (on the CPU) the targets' range; ours
        # run only to explain what they refused. Floating targets, class probabilities
        # for CrossEntropyLoss, are refused: NLLLoss takes class indices only, as torch's.
        try:
            # sum_i -w_{y_i} log p_{i,y_i} over the rows kept, reduced, and sum_i w_{y_i}
            nll, total_weight = shapes.nll_forward(
                log_p, y, self.weight, reduction, self.ignore_index
            )
        except (RuntimeError, IndexError) as refusal:
            raise shapes.explain_indices(self, log_p, y, "log-probabilities") or refusal from None
        saved = self.saved
        # the backward needs log p's shape (not its values), y, the mean's denominator,
        # and the loss's shape and dtype
        saved["log_p"], saved["y"], saved["total_weight"], saved["l"] = log_p, y, total_weight, nll
        return nll

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        log_p = self._saved("log_p")
        g = self._checked_grad_output(grad_output)
        g = one_like(log_p) if g is None else g  # dL/dl, as a tensor on the device
        y = self.saved["y"]
        if log_p.dim() == 1:
            shapes.check_gradient_target(self, log_p, y)
        reduction = REDUCTION_CODES[self.reduction]
        # dL/dlog p_ic = -g w_{y_i} [c = y_i] (/ sum_i w_{y_i} under "mean"), 0 in ignored rows
        grad: Tensor = shapes.nll_backward(
            g, log_p, y, self.weight, reduction, self.ignore_index, self.saved["total_weight"]
        )
        return grad

    def extra_repr(self) -> str:
        return super().extra_repr() + shapes.settings(self)

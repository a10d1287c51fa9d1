"""Cross-entropy of logits against class indices: the classifier's loss.

With log p = log_softmax(z) over the C classes, row i's loss mixes two terms by the
label smoothing e:

    l_i = (1 - e) w_{y_i} (-log p_{i,y_i})  +  (e / C) sum_c w_c (-log p_ic)

the negative log-likelihood (NLL) of the target class, and the mean over the C classes
(w = 1 without class weights). Its gradient is the softmax minus the target
distribution: dl_i/dz_i = (sum_c q_ic) p_i - q_i, with q_ic = (1 - e) w_c [c = y_i] +
e w_c / C, which is p_i - onehot(y_i) in the usual case (e = 0, no weights).

A row is a sample's C logits: pred (N, C) holds N rows, one sample (C,) one, and a
K-dimensional pred (N, C, d1, ..., dk) holds N d1 ... dk rows, its classes along
dim 1 (``nograd.nn.cross_entropy_shapes``, which routes each shape as torch does).

The code computes that gradient the way torch's autograd does, so that value and
gradient are PyTorch's very bits (a float32 training run is PyTorch's to the last bit;
p - q written out rounds differently). The chain rule goes through log p:

1. dL/dlog p_ic, the gradient of the two terms. The NLL term's comes from ATen's own
   kernel ``nll_loss_backward`` (``nll_loss2d_backward`` for K dims): -(1 - e) g w_{y_i}
   at each row's target, divided by sum_i w_{y_i} under "mean", 0 elsewhere. The
   smoothing term adds -(e / C) g w_c to every class of every row not ignored (divided
   under "mean" by the same sum_i w_{y_i}, computed apart, as torch's autograd does).
2. dL/dz_i = dL/dlog p_i - p_i sum_c dL/dlog p_ic, the softmax's Jacobian, by ATen's
   ``_log_softmax_backward_data``.

Rows whose target is ``ignore_index`` count for nothing. The NLL kernels skip them
without reading the targets on the host, and the smoothing term masks them with
``y == ignore_index`` on the device. So the loss never waits for a GPU (see
docs/design.md, "On a GPU: never read a value"), and the usual case is 4 ops: log_softmax
and nll_loss_forward, then nll_loss_backward and _log_softmax_backward_data (the 2d
kernels for K dims, whose views cost nothing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nograd.nn import aten, soft_targets
from nograd.nn import cross_entropy_shapes as shapes
from nograd.nn.constants import one_like
from nograd.nn.losses import REDUCTION_CODES, Loss

# ATen's kernels for the NLL term of rows (N, C), called here directly (other shapes go
# through ``cross_entropy_shapes``). The forward gathers -w_{y_i} log p_{i,y_i}, skips
# ignored rows and reduces, and also returns the mean's denominator sum_i w_{y_i} over
# the rows kept; the backward puts -g w_{y_i} (over that denominator under "mean") at
# each kept row's target. Looked up once: torch.ops resolves names slowly.
_nll_loss_forward = aten.kernel(torch.ops.aten.nll_loss_forward.default)
_nll_loss_backward = aten.kernel(torch.ops.aten.nll_loss_backward.default)


class CrossEntropyLoss(Loss):
    """Cross-entropy of logits z against class indices y, l_i = -sum_c q_ic log p_ic.

    p_i = softmax(z_i) over row i's C classes and q_i is the target distribution:
    with label smoothing e, q_ic = (1 - e) [c = y_i] + e / C (torch's definition).
    With class weights w, q_ic = (1 - e) w_c [c = y_i] + e w_c / C; "mean" then
    divides the NLL term by sum_i w_{y_i} and the smoothing term by the same sum, as
    torch does. Rows whose target is ``ignore_index`` contribute neither loss nor
    gradient, and "mean" averages over the other rows (NaN if there are none, as in
    torch). log p is computed shifted by max(z), so it stays exact for logits of any
    size. A floating target of z's shape holds class probabilities instead (soft
    labels), as in torch: ``nograd.nn.soft_targets``.

    Args:
        weight: class weights w of shape (C,) and pred's dtype, a buffer as in torch.
        size_average, reduce: torch's deprecated pair (see ``Loss``).
        ignore_index: a target value whose rows are skipped.
        reduction: "mean" (the default), "sum" or "none".
        label_smoothing: e in [0, 1].

    Shape:
        pred: (N, C) logits, (C,) for one sample, or (N, C, d1, ..., dk) with k >= 1
        (classes along dim 1, a row at each of the N d1 ... dk positions).
        target: class indices in [0, C) of pred's shape without the class dim, that is
        (N,), () or (N, d1, ..., dk), of an integer dtype; or class probabilities of
        pred's shape and dtype. As in torch, one sample's index may also be (1,)
        without label smoothing, for the loss only: the backward refuses it.
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
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(
                f"CrossEntropyLoss: expected label_smoothing in [0, 1], got {label_smoothing}"
            )
        shapes.register_class_weight(self, weight)
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        z, y, e = pred, target, self.label_smoothing
        if y.dtype != torch.int64:  # the usual int64 indices skip both tests
            if y.is_floating_point():  # class probabilities, not indices: nn/soft_targets.py
                return self._forward_probabilities(z, y)
            if shapes.is_index_dtype(y.dtype):
                y = y.long()  # torch's kernels take int64 class indices only
        self.saved["q"] = None
        # torch's kernels check shapes, dtypes and (on the CPU) the targets' range; ours
        # run only to explain what they refused
        nll: Tensor  # sum_i -w_{y_i} log p_{i,y_i} over the rows kept, reduced
        try:
            if z.dim() == 2:  # rows (N, C), the usual case: straight to ATen's kernel
                # log p = z - logsumexp(z), computed as (z - max) - log sum exp(z - max):
                # one fused kernel, and no cancellation between two numbers near 1000
                log_p = torch.log_softmax(z, 1)
                nll, total_weight = _nll_loss_forward(
                    log_p, y, self.weight, REDUCTION_CODES[self.reduction], self.ignore_index
                )
            else:  # one sample (C,) or K dims (N, C, d1, ..., dk)
                log_p, nll, total_weight = self._nll_of_any_shape(z, y)
        except (RuntimeError, IndexError) as refusal:
            raise shapes.explain_indices(self, z, y) or refusal from None
        saved = self.saved
        saved["log_p"], saved["y"], saved["total_weight"] = log_p, y, total_weight
        loss = nll
        if e > 0:  # (1 - e) NLL + (e / C) smoothing term
            c = log_p.shape[shapes.class_dim(log_p)]
            loss = nll * (1 - e) + self._smoothing_term(log_p, y) * soft_targets.uniform_share(e, c)
        saved["l"] = loss  # backward needs its dtype, and under "none" its shape
        return loss

    def _nll_of_any_shape(self, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log p, the NLL term and its denominator, for pred of any shape torch takes."""
        # checked first: the kernel sees views, not these shapes
        shapes.check_fit(self, z, y, self.label_smoothing)
        log_p = torch.log_softmax(z, shapes.class_dim(z))  # shifted by max(z), as above
        reduction = REDUCTION_CODES[self.reduction]
        nll, total_weight = shapes.nll_forward(log_p, y, self.weight, reduction, self.ignore_index)
        return log_p, nll, total_weight

    def _forward_probabilities(self, z: Tensor, q: Tensor) -> Tensor:
        """The loss against class probabilities q of z's shape (``nograd.nn.soft_targets``)."""
        problem = shapes.explain_probabilities(self, z, q)
        if problem is not None:
            raise problem
        log_p = torch.log_softmax(z, shapes.class_dim(z))  # shifted by max(z)
        q = soft_targets.smoothed(q, self.label_smoothing)
        loss = soft_targets.loss(log_p, q, self.weight, self.reduction)
        self.saved["log_p"], self.saved["q"], self.saved["l"] = log_p, q, loss
        return loss

    def _smoothing_term(self, log_p: Tensor, y: Tensor) -> Tensor:
        """sum_c w_c (-log p_ic) for each row (0 for an ignored row), reduced.

        "mean" divides the sum by sum_i w_{y_i} over the rows kept (their count without
        weights), which it saves for the backward.
        """
        w = self.weight
        weighted = log_p if w is None else log_p * shapes.along_classes(w, log_p)  # w_c log p_ic
        per_row = weighted.sum(shapes.class_dim(log_p)).neg()  # -sum_c w_c log p_ic
        ignored = y == self.ignore_index
        per_row.masked_fill_(ignored, 0.0)
        self.saved["ignored"] = ignored
        if self.reduction == "none":
            return per_row
        if self.reduction == "sum":
            return per_row.sum()
        if w is None:
            denominator = ignored.logical_not().sum()  # the rows kept
        elif y.is_cpu:  # sum_i w_{y_i} over the rows kept, summed as torch sums them
            denominator = w.gather(0, y.masked_select(ignored.logical_not())).sum()
        else:
            # The same sum without reading the targets on the host, which masked_select
            # does to size its result (torch's own code waits for the GPU there). An
            # ignored row gathers class 0, then counts 0; with those zeros among the
            # terms the sum may differ from torch's in the last bit.
            kept_class = y.masked_fill(ignored, 0).flatten()
            denominator = w.gather(0, kept_class).masked_fill_(ignored.flatten(), 0).sum()
        self.saved["denominator"] = denominator
        return per_row.sum() / denominator

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        log_p = self._saved("log_p")
        saved, e, w = self.saved, self.label_smoothing, self.weight
        g = self._checked_grad_output(grad_output)
        g = one_like(log_p) if g is None else g  # dL/dl, as a tensor on the device
        if saved["q"] is not None:  # against class probabilities
            return soft_targets.grad(g, log_p, saved["q"], w, self.reduction)
        # dL/dlog p_ic = -(1 - e) g w_{y_i} [c = y_i] (/ sum_i w_{y_i} under "mean"), by
        # nll_loss_backward; 0 in ignored rows
        g_nll = g if e == 0 else g * (1 - e)
        nll_backward: Callable[..., Tensor]  # ATen's kernel, or the route for other shapes
        if log_p.dim() == 2:  # rows (N, C): straight to ATen's kernel, as in the forward
            nll_backward, dim = _nll_loss_backward, 1
        else:
            nll_backward, dim = shapes.nll_backward, shapes.class_dim(log_p)
            shapes.check_gradient_target(self, log_p, saved["y"])
        reduction = REDUCTION_CODES[self.reduction]
        grad_log_p: Tensor = nll_backward(
            g_nll, log_p, saved["y"], w, reduction, self.ignore_index, saved["total_weight"]
        )
        if e > 0:  # dL/dlog p_ic += -(e / C) g w_c (/ its denominator under "mean")
            share = soft_targets.uniform_share(e, log_p.shape[dim])  # e / C
            grad_log_p = grad_log_p + self._smoothing_grad(g * share, log_p)
        # dL/dz_ic = dL/dlog p_ic - p_ic sum_k dL/dlog p_ik
        grad: Tensor = torch._log_softmax_backward_data(grad_log_p, log_p, dim, log_p.dtype)
        return grad

    def _smoothing_grad(self, g: Tensor, log_p: Tensor) -> Tensor:
        """dL/dlog p of the smoothing term, for its upstream gradient g = dL/dl * e / C.

        The backward of ``_smoothing_term``, step by step in reverse, as torch's
        autograd takes it: the mean's division, the sum over rows (g for every row),
        the ignored rows' 0, the minus sign, the sum over classes (the same value for
        every class) and the weights.
        """
        ignored = self.saved["ignored"]  # one per row: the shape of the unreduced loss
        if self.reduction == "mean":
            g = g / self.saved["denominator"]
        per_row = g if self.reduction == "none" else g.expand(ignored.shape)
        # dL/d(sum_c w_c log p_ic) = -dL/d(-sum_c w_c log p_ic); 0 in ignored rows
        per_row = per_row.masked_fill(ignored, 0).neg()
        # dL/d(w_c log p_ic), the same for every c
        grad = per_row.unsqueeze(shapes.class_dim(log_p)).expand(log_p.shape)
        if self.weight is None:
            return grad
        # dL/dlog p_ic = w_c dL/d(w_c log p_ic)
        return grad * shapes.along_classes(self.weight, log_p)

    def extra_repr(self) -> str:
        extra = super().extra_repr() + shapes.settings(self)
        if self.label_smoothing != 0.0:
            extra += f", label_smoothing={self.label_smoothing}"
        return extra

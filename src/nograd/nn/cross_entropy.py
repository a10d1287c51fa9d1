"""Cross-entropy of logits against class indices: the classifier's loss.

With log p = log_softmax(z), row n's loss mixes two terms by the label smoothing e:

    l_n = (1 - e) w_{y_n} (-log p_{n,y_n})  +  (e / C) sum_c w_c (-log p_nc)

the negative log-likelihood (NLL) of the target class, and the mean over the C classes
(w = 1 without class weights). Its gradient is the softmax minus the target
distribution: dl_n/dz_n = (sum_c q_nc) p_n - q_n, with q_nc = (1 - e) w_c [c = y_n] +
e w_c / C, which is p_n - onehot(y_n) in the usual case (e = 0, no weights).

The code computes that gradient the way torch's autograd does, so that value and
gradient are PyTorch's very bits (a float32 training run is PyTorch's to the last bit;
p - q written out rounds differently). The chain rule goes through log p:

1. dL/dlog p_nc, the gradient of the two terms. The NLL term's comes from ATen's own
   kernel ``nll_loss_backward``: -(1 - e) g w_{y_n} at each row's target, divided by
   sum_n w_{y_n} under "mean", 0 elsewhere. The smoothing term adds -(e / C) g w_c to
   every class of every row (divided by its own denominator under "mean").
2. dL/dz_n = dL/dlog p_n - p_n sum_c dL/dlog p_nc, the softmax's Jacobian, by ATen's
   ``_log_softmax_backward_data``.

Rows whose target is ``ignore_index`` count for nothing. The NLL kernels skip them
without reading the targets on the host, and the smoothing term masks them with
``y == ignore_index`` on the device. So the loss never waits for a GPU (see
docs/design.md, "On a GPU: never read a value"), and the usual case is 4 ops: log_softmax
and nll_loss_forward, then nll_loss_backward and _log_softmax_backward_data.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn import soft_targets
from nograd.nn.constants import one_like
from nograd.nn.losses import Loss

# ATen's kernels for the NLL term (looked up once: torch.ops resolves names slowly).
# The forward gathers -w_{y_n} log p_{n,y_n}, skips ignored rows and reduces, and also
# returns the mean's denominator sum_n w_{y_n} over the rows kept; the backward puts
# -g w_{y_n} (over that denominator under "mean") at each kept row's target.
_nll_loss_forward = torch.ops.aten.nll_loss_forward.default
_nll_loss_backward = torch.ops.aten.nll_loss_backward.default
_REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}  # ATen's numbering of the reductions


class CrossEntropyLoss(Loss):
    """Cross-entropy of logits z against class indices y, l_n = -sum_c q_nc log p_nc.

    p_n = softmax(z_n) and q_n is the target distribution: with label smoothing e,
    q_nc = (1 - e) [c = y_n] + e / C (torch's definition). With class weights w,
    q_nc = (1 - e) w_c [c = y_n] + e w_c / C; "mean" then divides the NLL term by
    sum_n w_{y_n} and the smoothing term by the same sum, as torch does. Rows whose
    target is ``ignore_index`` contribute neither loss nor gradient, and "mean"
    averages over the other rows. log p is computed shifted by max(z), so it stays
    exact for logits of any size. A floating target of z's shape holds class
    probabilities instead (soft labels), as in torch: ``nograd.nn.soft_targets``.

    Args:
        weight: class weights w of shape (C,) and pred's dtype, a buffer as in torch.
        size_average, reduce: torch's deprecated pair (see ``Loss``).
        ignore_index: a target value whose rows are skipped.
        reduction: "mean" (the default), "sum" or "none".
        label_smoothing: e in [0, 1].

    Shape:
        pred: (N, C) logits, target: (N,) integers in [0, C) or (N, C) class
        probabilities of pred's dtype -> loss: () or (N,).
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
        self._register_weight("weight", weight)
        if weight is not None and weight.dim() != 1:
            raise ValueError(
                f"CrossEntropyLoss: expected weight of shape (C,), got {tuple(weight.shape)}"
            )
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        z, y, e = pred, target, self.label_smoothing
        if y.dtype != torch.int64:  # the usual int64 indices skip both tests
            if y.is_floating_point():  # class probabilities, not indices: nn/soft_targets.py
                return self._forward_probabilities(z, y)
            if _is_index_dtype(y.dtype):
                y = y.long()  # torch's kernels take int64 class indices only
        self.saved["q"] = None
        # torch's kernels check shapes, dtypes and (on the CPU) the targets' range; ours
        # run only to explain what they refused
        nll: Tensor  # sum_n -w_{y_n} log p_{n,y_n} over the rows kept, reduced
        try:
            # log p = z - logsumexp(z), computed as (z - max) - log sum exp(z - max): one
            # fused kernel, and no cancellation between two numbers near 1000 in float32
            log_p = torch.log_softmax(z, 1)
            nll, total_weight = _nll_loss_forward(
                log_p, y, self.weight, _REDUCTION_CODES[self.reduction], self.ignore_index
            )
        except (RuntimeError, IndexError) as refusal:
            raise self._explain(z, y) or refusal from None
        saved = self.saved
        saved["log_p"], saved["y"], saved["total_weight"] = log_p, y, total_weight
        loss = nll
        if e > 0:  # (1 - e) NLL + (e / C) smoothing term
            loss = nll * (1 - e) + self._smoothing_term(log_p, y) * (e / z.shape[1])
        saved["l"] = loss  # backward needs its dtype, and under "none" its shape
        return loss

    def _forward_probabilities(self, z: Tensor, q: Tensor) -> Tensor:
        """The loss against class probabilities q of z's shape (``nograd.nn.soft_targets``)."""
        problem = self._explain_probabilities(z, q)
        if problem is not None:
            raise problem
        log_p = torch.log_softmax(z, 1)  # log p = z - logsumexp(z), shifted by max(z)
        q = soft_targets.smoothed(q, self.label_smoothing)
        loss = soft_targets.loss(log_p, q, self.weight, self.reduction)
        self.saved["log_p"], self.saved["q"], self.saved["l"] = log_p, q, loss
        return loss

    def _explain_probabilities(self, z: Tensor, q: Tensor) -> Exception | None:
        """Why class probabilities q cannot be scored against logits z, or None."""
        if z.dim() != 2:
            return ValueError(
                f"{self._describe()}: expected pred of shape (N, C), got {tuple(z.shape)}"
            )
        if q.shape != z.shape:
            return TypeError(
                f"{self._describe()}: expected target of an integer dtype (class indices of "
                f"shape ({z.shape[0]},)) or class probabilities of pred's shape "
                f"{tuple(z.shape)}, got {q.dtype} of shape {tuple(q.shape)}"
            )
        if q.dtype != z.dtype:
            return TypeError(
                f"{self._describe()}: expected class probabilities of dtype {z.dtype} "
                f"(same as pred), got {q.dtype}"
            )
        if self.ignore_index >= 0:  # torch refuses it too: no class index to ignore
            return ValueError(
                f"{self._describe()}: ignore_index is not supported for class probabilities"
            )
        c = z.shape[1]
        if self.weight is not None and (self.weight.shape != (c,) or self.weight.dtype != z.dtype):
            return ValueError(
                f"{self._describe()}: expected weight of shape ({c},) and dtype {z.dtype}, "
                f"got {tuple(self.weight.shape)} and {self.weight.dtype}"
            )
        return None

    def _smoothing_term(self, log_p: Tensor, y: Tensor) -> Tensor:
        """sum_c w_c (-log p_nc) for each row (0 for an ignored row), reduced.

        "mean" divides the sum by sum_n w_{y_n} over the rows kept (their count without
        weights), which it saves for the backward.
        """
        w = self.weight
        weighted = log_p if w is None else log_p * w.view(1, -1)  # w_c log p_nc
        per_row = weighted.sum(1).neg()  # -sum_c w_c log p_nc
        ignored = y == self.ignore_index
        per_row.masked_fill_(ignored, 0.0)
        self.saved["ignored"] = ignored
        if self.reduction == "none":
            return per_row
        if self.reduction == "sum":
            return per_row.sum()
        if w is None:
            denominator = ignored.logical_not().sum()  # the rows kept
        elif y.is_cpu:  # sum_n w_{y_n} over the rows kept, summed as torch sums them
            denominator = w.gather(0, y.masked_select(ignored.logical_not())).sum()
        else:
            # The same sum without reading the targets on the host, which masked_select
            # does to size its result (torch's own code waits for the GPU there). An
            # ignored row gathers class 0, then counts 0; with those zeros among the
            # terms the sum may differ from torch's in the last bit.
            denominator = w.gather(0, y.masked_fill(ignored, 0)).masked_fill_(ignored, 0).sum()
        self.saved["denominator"] = denominator
        return per_row.sum() / denominator

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        log_p = self._saved("log_p")
        saved, e, w = self.saved, self.label_smoothing, self.weight
        g = self._checked_grad_output(grad_output)
        g = one_like(log_p) if g is None else g  # dL/dl, as a tensor on the device
        if saved["q"] is not None:  # against class probabilities
            return soft_targets.grad(g, log_p, saved["q"], w, self.reduction)
        # dL/dlog p_nc = -(1 - e) g w_{y_n} [c = y_n] (/ sum_n w_{y_n} under "mean"), by
        # nll_loss_backward; 0 in ignored rows
        g_nll = g if e == 0 else g * (1 - e)
        grad_log_p: Tensor = _nll_loss_backward(
            g_nll,
            log_p,
            saved["y"],
            w,
            _REDUCTION_CODES[self.reduction],
            self.ignore_index,
            saved["total_weight"],
        )
        if e > 0:  # dL/dlog p_nc += -(e / C) g w_c (/ its denominator under "mean")
            grad_log_p = grad_log_p + self._smoothing_grad(g * (e / log_p.shape[1]), log_p)
        # dL/dz_nc = dL/dlog p_nc - p_nc sum_k dL/dlog p_nk
        grad: Tensor = torch._log_softmax_backward_data(grad_log_p, log_p, 1, log_p.dtype)
        return grad

    def _smoothing_grad(self, g: Tensor, log_p: Tensor) -> Tensor:
        """dL/dlog p of the smoothing term, for its upstream gradient g = dL/dl (e / C).

        The backward of ``_smoothing_term``, step by step in reverse, as torch's
        autograd takes it: the mean's division, the sum over rows (g for every row),
        the ignored rows' 0, the minus sign, the sum over classes (the same value for
        every class) and the weights.
        """
        n, c = log_p.shape
        if self.reduction == "mean":
            g = g / self.saved["denominator"]
        per_row = g if self.reduction == "none" else g.expand(n)  # dL/d(-sum_c w_c log p_nc)
        per_row = per_row.masked_fill(self.saved["ignored"], 0).neg()
        grad = per_row.unsqueeze(1).expand(n, c)  # dL/d(w_c log p_nc), the same for every c
        if self.weight is None:
            return grad
        return grad * self.weight.view(1, -1)  # dL/dlog p_nc = w_c dL/d(w_c log p_nc)

    def _explain(self, z: Tensor, y: Tensor) -> Exception | None:
        """The clear error for what torch's kernels refused, or None if we see no fault.

        Shapes and dtypes first; then, on the CPU, the targets' values. (On a GPU the
        kernels assert on a target outside [0, C), as torch's do: reading the targets
        to explain it would make the CPU wait for the device.)
        """
        if z.dim() != 2:
            return ValueError(
                f"{self._describe()}: expected pred of shape (N, C), got {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            return TypeError(f"{self._describe()}: expected floating pred (logits), got {z.dtype}")
        n, c = z.shape
        if not _is_index_dtype(y.dtype):
            return TypeError(
                f"{self._describe()}: expected target of an integer dtype (class indices), "
                f"got {y.dtype}"
            )
        if y.shape != (n,):
            return ValueError(
                f"{self._describe()}: expected target of shape ({n},), got {tuple(y.shape)}"
            )
        if self.weight is not None:
            if self.weight.shape != (c,):
                return ValueError(
                    f"{self._describe()}: expected weight of shape ({c},) for C={c} classes, "
                    f"got {tuple(self.weight.shape)}"
                )
            if self.weight.dtype != z.dtype:
                return self._dtype_mismatch("weight", self.weight, z)
        if y.is_cpu and y.numel() > 0:
            kept = y[y != self.ignore_index]
            low, high = (int(kept.min()), int(kept.max())) if kept.numel() else (0, 0)
            if low < 0 or high >= c:
                return ValueError(
                    f"{self._describe()}: expected target values in [0, {c}) for C={c} "
                    f"classes, got values in [{low}, {high}]"
                )
        return None

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        if self.weight is not None:
            extra += ", weight=..."
        if self.ignore_index != -100:
            extra += f", ignore_index={self.ignore_index}"
        if self.label_smoothing != 0.0:
            extra += f", label_smoothing={self.label_smoothing}"
        return extra


def _is_index_dtype(dtype: torch.dtype) -> bool:
    """Whether a target of this dtype holds class indices: an integer dtype, not bool."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)

"""Cross-entropy of logits against class indices: the classifier's loss.

The forward keeps log p = log_softmax(z), and the backward is the softmax minus the
target distribution, dl_n/dz_n = (sum_c q_nc) p_n - q_n, which is p_n - q_n when q_n
sums to 1. Label smoothing, class weights and ``ignore_index`` change only q and the
mean's denominator; the reductions and the upstream gradient come from ``Loss``.

The usual case (no class weights, no smoothing) has a short road: the value from
ATen's ``nll_loss_forward`` and the gradient from the two kernels torch's own backward
runs, so both have torch's very bits, and the rows of ``ignore_index`` are skipped
without reading the targets. Everything else builds q.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn.constants import filled, one_like
from nograd.nn.losses import Loss

# torch's own kernel for sum_n -log p_{n,y_n} (see _negative_log_likelihood); looked up once
_nll_loss_forward = torch.ops.aten.nll_loss_forward.default
# and the first of the two kernels of its gradient that torch's autograd runs (the second,
# torch._log_softmax_backward_data, has a binding of its own; see _backward_by_kernels)
_nll_loss_backward = torch.ops.aten.nll_loss_backward.default
_REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}  # ATen's numbering of the reductions


class CrossEntropyLoss(Loss):
    """Cross-entropy of logits z against class indices y, l_n = -sum_c q_nc log p_nc.

    p_n = softmax(z_n) and q_n is the target distribution: with label smoothing e,
    q_nc = (1 - e) [c = y_n] + e / C (torch's definition). With class weights w,
    q_nc = (1 - e) w_c [c = y_n] + e w_c / C, and "mean" divides by sum_n w_{y_n}.
    Rows whose target is ``ignore_index`` contribute neither loss nor gradient, and
    "mean" averages over the other rows. log p = z - logsumexp(z) is computed shifted
    by max(z), so it stays exact for logits of any size. Class-probability targets
    (float (N, C)) are not supported.

    Args:
        reduction: "mean" (the default), "sum" or "none".
        label_smoothing: e in [0, 1].
        weight: class weights w of shape (C,) and pred's dtype, a buffer as in torch.
        ignore_index: a target value whose rows are skipped.

    Shape:
        pred: (N, C) logits, target: (N,) integers in [0, C) -> loss: () or (N,).
    """

    weight: Tensor | None

    def __init__(
        self,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        weight: Tensor | None = None,
        ignore_index: int = -100,
    ) -> None:
        super().__init__(reduction)
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
        # log p = z - logsumexp(z), which torch computes as (z - max) - log sum exp(z - max):
        # one fused kernel, and no cancellation between two numbers near 1000 in float32
        if self.weight is None and e == 0 and y.dtype == torch.int64:  # the usual case
            # torch's kernels check the shapes (and, on the CPU, the targets); ours run
            # only to explain what they refused
            try:
                return self._negative_log_likelihood(torch.log_softmax(z, 1), y)
            except (RuntimeError, IndexError):
                pass  # the checks below say what was wrong
        c = self._check_shapes(z, y)
        log_p = torch.log_softmax(z, 1)
        if self.weight is None and z.is_cpu and not 0 <= self.ignore_index < c:
            # Every row counts once, or is ignored by a target outside [0, C)
            y = y if y.dtype == torch.int64 else y.long()
            try:
                if e == 0:
                    return self._negative_log_likelihood(log_p, y)
                loss = log_p.gather(1, y.unsqueeze(1)).squeeze(1).neg()  # -log p_{n,y_n}
            except (RuntimeError, IndexError):  # a target outside [0, C), or an ignored row
                return self._forward_general(log_p, y)  # it skips ignored rows, explains the rest
            loss = torch.lerp(loss, log_p.mean(1).neg(), e)  # (1 - e) nll - e mean_c log p_nc
            self._save(log_p, y)
            return self._reduce(loss)
        if self.weight is None and not z.is_cpu:
            # On a GPU the targets are never read (that would stall the device): ignored
            # rows are masked out of the loss and its gradient instead.
            y = y if y.dtype == torch.int64 else y.long()
            if e == 0:
                return self._negative_log_likelihood(log_p, y)
            kept = y != self.ignore_index  # the rows that count
            y = torch.where(kept, y, 0)  # an ignored row gathers class 0, masked out below
            loss = log_p.gather(1, y.unsqueeze(1)).squeeze(1).neg()  # -log p_{n,y_n}
            loss = torch.lerp(loss, log_p.mean(1).neg(), e)  # (1 - e) nll - e mean_c log p_nc
            self._save(log_p, y, ignored=kept.logical_not().unsqueeze(1))
            return self._reduce(torch.where(kept, loss, 0.0), kept.sum().to(z.dtype))
        return self._forward_general(log_p, y)

    def _forward_general(self, log_p: Tensor, y: Tensor) -> Tensor:
        """Class weights and ignored rows: build q_n and take -sum_c q_nc log p_nc."""
        w, e, c = self.weight, self.label_smoothing, log_p.shape[1]
        kept = self._kept_rows(y, c)  # None when no row is ignored
        y = (y if kept is None else torch.where(kept, y, 0)).long()
        y_col = y.unsqueeze(1)
        kept_f = torch.ones_like(log_p[:, 0]) if kept is None else kept.to(log_p.dtype)
        row_weight = kept_f if w is None else w[y] * kept_f  # w_{y_n}
        q = torch.outer(kept_f, log_p.new_ones(c) if w is None else w).mul_(e / c)  # e w_c / C
        q.scatter_add_(1, y_col, ((1 - e) * row_weight).unsqueeze(1))  # + (1 - e) w_{y_n}
        loss = (q * log_p).sum(1).neg()  # -sum_c q_nc log p_nc
        self._save(log_p, y, q, None if kept is None else kept.logical_not().unsqueeze(1))
        return self._reduce(loss, row_weight.sum())

    def _negative_log_likelihood(self, log_p: Tensor, y: Tensor) -> Tensor:
        """l_n = -log p_{n,y_n}, reduced; rows whose target is ``ignore_index`` count for nothing.

        ATen's ``nll_loss_forward`` does the gather, the sum and the division in one
        kernel, in the order torch's own CrossEntropyLoss does, so the value has its very
        bits. It skips an ignored row silently, and also returns the number of rows it
        kept, which ``backward`` hands to the two kernels of torch's own backward: they
        skip ignored rows as the forward did (``_backward_by_kernels``).
        """
        reduction = _REDUCTION_CODES[self.reduction]
        loss: Tensor
        loss, kept_count = _nll_loss_forward(log_p, y, None, reduction, self.ignore_index)
        self._save(log_p, y)
        saved = self.saved
        saved["l"] = loss  # backward needs its dtype, and under "none" its shape
        saved["kept_count"] = kept_count  # under "mean", the denominator: rows that count
        return loss

    def _save(
        self, log_p: Tensor, y: Tensor, q: Tensor | None = None, ignored: Tensor | None = None
    ) -> None:
        """Keep what backward needs: log p, the targets y (int64, shape (N,)), and q.

        q is None when it is y's one-hot, smoothed by e; ``ignored``, the mask of the
        rows that count for nothing, is None when every row counts.
        """
        saved = self.saved
        saved["log_p"], saved["y"], saved["q"], saved["ignored"] = log_p, y, q, ignored
        saved["kept_count"] = None

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        log_p = self._saved("log_p")
        saved = self.saved
        y, q, e = saved["y"], saved["q"], self.label_smoothing
        if saved["kept_count"] is not None:  # the usual case, after nll_loss_forward
            return self._backward_by_kernels(log_p, y, saved["kept_count"], grad_output)
        grad = torch.exp(log_p)  # p = softmax(z)
        if q is None:  # sum_c q_nc = 1, so dl_n/dz_n = p_n - q_n
            if e > 0:
                grad.sub_(e / log_p.shape[1])  # dl_n/dz_nc -= e / C
            if grad.is_cpu:  # -(1 - e) as a tensor made once: quicker than a Python number
                minus = filled(e - 1, (y.shape[0], 1), grad.dtype)
                grad.scatter_add_(1, y.unsqueeze(1), minus)  # dl_n/dz_{n,y_n} -= 1 - e
            else:
                grad.scatter_(1, y.unsqueeze(1), -(1 - e), reduce="add")  # dl/dz_{n,y_n} -= 1 - e
        else:
            grad.mul_(q.sum(1, keepdim=True)).sub_(q)  # dl_n/dz_n = (sum_c q_nc) p_n - q_n
        g = self._upstream(grad_output)
        if isinstance(g, Tensor) and g.dim() == 1:
            g = g.unsqueeze(1)  # one upstream gradient per row
        grad = self._chain(grad, g)  # dL/dz = g * dl/dz
        ignored = saved["ignored"]
        if ignored is not None:  # exactly 0, even when "mean" divided by 0 (as torch)
            grad.masked_fill_(ignored, 0.0)
        return grad

    def _backward_by_kernels(
        self, log_p: Tensor, y: Tensor, kept_count: Tensor, grad_output: Tensor | None
    ) -> Tensor:
        """dL/dz after ``nll_loss_forward``, by the two kernels torch's autograd runs.

        ``nll_loss_backward`` puts -g / (rows kept) under "mean" (-g under "sum", -g_n
        under "none") at each kept row's target and 0 everywhere else, ignored rows
        included; ``_log_softmax_backward_data`` chains that through log p = z -
        logsumexp(z), as dL/dz_n = dL/dlog p_n - p_n sum_c dL/dlog p_nc, which is
        (p_n - onehot(y_n)) / N in the usual case. The gradient has torch's very bits, so
        that a float32 training run is PyTorch's to the bit (the textbook formula, built
        from exp, scatter_add_ and mul_, rounds differently in the last bit), and neither
        kernel reads a target on the host: on a GPU, three launches (dL/dl = 1 for
        ``backward()`` is made once), where building p - onehot(y) and masking the
        ignored rows took seven.
        """
        g = self._checked_grad_output(grad_output)
        g = one_like(log_p) if g is None else g  # dL/dl, as a tensor on the device
        reduction = _REDUCTION_CODES[self.reduction]
        # dL/dlog p_nc = -g [c = y_n] [y_n != ignore_index] (/ kept_count under "mean")
        grad_log_p = _nll_loss_backward(g, log_p, y, None, reduction, self.ignore_index, kept_count)
        # dL/dz_nc = dL/dlog p_nc - p_nc sum_k dL/dlog p_nk
        grad: Tensor = torch._log_softmax_backward_data(grad_log_p, log_p, 1, log_p.dtype)
        return grad

    def _check_shapes(self, z: Tensor, y: Tensor) -> int:
        """Validate the logits' and targets' shapes and dtypes (their values come later).

        Returns C, the number of classes.
        """
        if z.dim() != 2:
            raise ValueError(
                f"{self._describe()}: expected pred of shape (N, C), got {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            raise TypeError(f"{self._describe()}: expected floating pred (logits), got {z.dtype}")
        n, c = z.shape
        if y.dtype != torch.int64 and (  # int64, the usual dtype, needs no further test
            y.is_floating_point() or y.is_complex() or y.dtype == torch.bool
        ):
            raise TypeError(
                f"{self._describe()}: expected target of an integer dtype (class indices), "
                f"got {y.dtype}"
            )
        if y.shape != (n,):
            raise ValueError(
                f"{self._describe()}: expected target of shape ({n},), got {tuple(y.shape)}"
            )
        if self.weight is not None:
            if self.weight.shape != (c,):
                raise ValueError(
                    f"{self._describe()}: expected weight of shape ({c},) for C={c} classes, "
                    f"got {tuple(self.weight.shape)}"
                )
            self._check_dtype("weight", self.weight, z)
        return c

    def _kept_rows(self, y: Tensor, c: int) -> Tensor | None:
        """The mask of rows whose target is not ``ignore_index`` (None: all are kept).

        On the CPU the targets are read, to explain any outside [0, C). On a GPU that
        read would stall the device, so the mask is always built and torch's own
        kernels assert on a bad index.
        """
        if not y.is_cpu:
            return y != self.ignore_index
        if y.numel() == 0:
            return None
        low, high = _value_range(y)
        kept = None
        if low <= self.ignore_index <= high:  # some row may be ignored
            kept = y != self.ignore_index
            y_kept = y[kept]
            low, high = _value_range(y_kept) if y_kept.numel() else (0, 0)
        if low < 0 or high >= c:
            raise ValueError(
                f"{self._describe()}: expected target values in [0, {c}) for C={c} classes, "
                f"got values in [{low}, {high}]"
            )
        return kept

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        if self.weight is not None:
            extra += ", weight=..."
        if self.ignore_index != -100:
            extra += f", ignore_index={self.ignore_index}"
        if self.label_smoothing != 0.0:
            extra += f", label_smoothing={self.label_smoothing}"
        return extra


def _value_range(y: Tensor) -> tuple[int, int]:
    """(min, max) of a non-empty 1-D integer tensor, as Python ints."""
    if y.numel() <= 256:  # a short list is quicker to read than to reduce
        values: list[int] = y.tolist()
        return min(values), max(values)
    low, high = torch.aminmax(y)
    return int(low), int(high)

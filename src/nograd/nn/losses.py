"""Loss functions: a scalar L(pred, target) whose ``backward`` starts the chain rule.

A loss is called as ``loss = loss_fn(pred, target)``; ``loss_fn.backward()`` then
returns dL/d(pred), the gradient that ``model.backward`` takes. Targets are data,
not parameters: they get no gradient. Shapes are never broadcast silently, and
targets must share pred's dtype (torch would promote them; here that is a TypeError).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn.module import Module

REDUCTIONS = ("mean", "sum", "none")


class Loss(Module):
    """Base class: per-element losses l_i, reduced to mean_i l_i, sum_i l_i or kept.

    ``backward(grad_output)`` returns dL/d(pred). ``None`` means dL/d(loss) = 1; a
    0-dim ``grad_output`` scales the gradient; with ``reduction="none"`` it is
    required and must have the loss's shape.

    Args:
        reduction: "mean" (the default), "sum" or "none".
    """

    _loss_shape: torch.Size
    _loss_dtype: torch.dtype
    _denominator: float | Tensor

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: expected reduction in {REDUCTIONS}, got {reduction!r}"
            )
        self.reduction = reduction

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.forward(pred, target)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement backward()")

    def _reduce(self, loss: Tensor, denominator: Tensor | None = None) -> Tensor:
        """Reduce per-element losses; "mean" divides by ``denominator`` (default: count)."""
        self._loss_shape, self._loss_dtype = loss.shape, loss.dtype
        # an empty batch has an empty gradient, so its n only has to avoid 1/0
        self._denominator = max(loss.numel(), 1) if denominator is None else denominator
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.mean() if denominator is None else loss.sum() / denominator

    def _upstream(self, grad_output: Tensor | None) -> float | Tensor:
        """dL/dl_i: the gradient each per-element loss receives from the reduction."""
        if self.reduction == "none":
            if grad_output is None or grad_output.shape != self._loss_shape:
                got = None if grad_output is None else tuple(grad_output.shape)
                raise ValueError(
                    f"{self._describe()}: expected grad_output of shape "
                    f"{tuple(self._loss_shape)} (the unreduced loss), got {got}"
                )
            return grad_output.to(self._loss_dtype)  # dL/dl_i = g_i
        if grad_output is not None and grad_output.dim() != 0:
            raise ValueError(
                f"{self._describe()}: expected a 0-dim grad_output, "
                f"got shape {tuple(grad_output.shape)}"
            )
        scale = 1.0 if grad_output is None else grad_output.to(self._loss_dtype)
        if self.reduction == "sum":
            return scale  # dL/dl_i = g
        return scale / self._denominator  # dL/dl_i = g / n

    @staticmethod
    def _chain(local: Tensor, g: float | Tensor) -> Tensor:
        """dL/dpred = dL/dl * dl/dpred, in place on ``local`` (a fresh tensor)."""
        if isinstance(g, float) and g == 1.0:
            return local  # a batch of one under "mean", or "sum": nothing to scale
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

    def _check_dtype(self, name: str, buffer: Tensor, pred: Tensor) -> None:
        """A weight buffer must share pred's dtype, so the loss never changes dtype."""
        if buffer.dtype != pred.dtype:
            raise TypeError(
                f"{self._describe()}: expected {name} of dtype {pred.dtype} (same as pred), "
                f"got {buffer.dtype}; convert it with loss_fn.to({pred.dtype})"
            )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(Loss):
    """Mean squared error, l_i = (pred_i - target_i)^2.

    Shape:
        pred: (*), target: (*), same shape and dtype -> loss: () or (*) if "none".
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        diff = pred - target
        self._diff = diff  # the backward needs only pred - target
        return self._reduce(diff * diff)

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        diff = self._saved("_diff")
        g = self._upstream(grad_output)
        return diff * (2 * g)  # dL/dpred = g * 2 (pred - target)


class L1Loss(Loss):
    """Mean absolute error, l_i = |pred_i - target_i|.

    Its gradient is sign(pred - target), taken as 0 where pred == target (as torch).

    Shape:
        pred: (*), target: (*), same shape and dtype -> loss: () or (*) if "none".
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        diff = pred - target
        self._diff = diff  # the backward needs only the sign of pred - target
        return self._reduce(diff.abs())

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        diff = self._saved("_diff")
        g = self._upstream(grad_output)
        return self._chain(torch.sign(diff), g)  # dL/dpred = g * sign(pred - target)


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits z, l = max(z, 0) - z y + log(1 + exp(-|z|)).

    This is -[y log s(z) + (1 - y) log(1 - s(z))] with s the sigmoid, written so that
    no exp overflows. With ``pos_weight`` p the positive term is weighted:
    l = (1 - y) z + (1 + (p - 1) y) softplus(-z), softplus(x) = log(1 + exp(x)).

    Args:
        reduction: "mean" (the default), "sum" or "none".
        pos_weight: weight p of positive examples, broadcast against pred's shape,
            typically one per class: shape (C,). Kept as a buffer, as in torch.

    Shape:
        pred: (*), target: (*), same shape and dtype -> loss: () or (*) if "none".
    """

    pos_weight: Tensor | None

    def __init__(self, reduction: str = "mean", pos_weight: Tensor | None = None) -> None:
        super().__init__(reduction)
        self._register_weight("pos_weight", pos_weight)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        z, y, p = pred, target, self.pos_weight
        self._z, self._y = z, y  # the backward needs s(z) and y
        if p is None:
            # logaddexp(z, 0) = max(z, 0) + log1p(exp(-|z|)), computed in one stable kernel
            return self._reduce(torch.addcmul(torch.logaddexp(z, z.new_zeros(())), z, y, value=-1))
        fits = all(a in (1, b) for a, b in zip(reversed(p.shape), reversed(z.shape), strict=False))
        if p.dim() > z.dim() or not fits:
            raise ValueError(
                f"{self._describe()}: pos_weight of shape {tuple(p.shape)} does not "
                f"broadcast to pred's shape {tuple(z.shape)}"
            )
        self._check_dtype("pos_weight", p, z)
        weight = (p - 1) * y + 1  # 1 + (p - 1) y
        self._weight = weight
        softplus_neg_z = torch.logaddexp(-z, z.new_zeros(()))  # log(1 + exp(-z)), stable
        return self._reduce((1 - y) * z + weight * softplus_neg_z)

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        z, y = self._saved("_z"), self._saved("_y")
        g = self._upstream(grad_output)
        if self.pos_weight is None:
            return self._chain(torch.sigmoid(z) - y, g)  # dL/dz = g (s(z) - y)
        weight = self._saved("_weight")
        # dL/dz = g ((1 + (p - 1) y) s(z) - p y)
        return self._chain(weight * torch.sigmoid(z) - self.pos_weight * y, g)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", pos_weight=..." if self.pos_weight is not None else "")


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
    _q: Tensor | None
    _ignored: Tensor | None

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
        z, y, w, e = pred, target, self.weight, self.label_smoothing
        kept = self._check_classes(z, y)  # None when no row is ignored
        c = z.shape[1]
        y_col = (y if kept is None else torch.where(kept, y, 0)).long().unsqueeze(1)
        # log p = z - logsumexp(z), which torch computes as (z - max) - log sum exp(z - max):
        # one fused kernel, and no cancellation between two numbers near 1000 in float32
        log_p = torch.log_softmax(z, dim=1)
        q = row_weight = None
        if w is None and kept is None:  # q_n = (1 - e) onehot(y_n) + e / C, never built
            loss = log_p.gather(1, y_col).squeeze(1).neg()  # -log p_{n,y_n}
            if e > 0:
                loss = torch.lerp(loss, log_p.mean(1).neg(), e)  # (1 - e) nll - e mean_c log p_nc
        else:
            kept_f = torch.ones_like(log_p[:, 0]) if kept is None else kept.to(z.dtype)
            row_weight = kept_f if w is None else w[y_col.squeeze(1)] * kept_f  # w_{y_n}
            q = torch.outer(kept_f, z.new_ones(c) if w is None else w).mul_(e / c)  # e w_c / C
            q.scatter_add_(1, y_col, ((1 - e) * row_weight).unsqueeze(1))  # + (1 - e) w_{y_n}
            loss = (q * log_p).sum(1).neg()  # -sum_c q_nc log p_nc
        self._log_p, self._y_col, self._q = log_p, y_col, q
        self._ignored = None if kept is None else kept.logical_not().unsqueeze(1)
        return self._reduce(loss, None if row_weight is None else row_weight.sum())

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        log_p, y_col, q = self._saved("_log_p"), self._saved("_y_col"), self._q
        g = self._upstream(grad_output)
        if isinstance(g, Tensor) and g.dim() == 1:
            g = g.unsqueeze(1)  # one upstream gradient per row
        e, c = self.label_smoothing, log_p.shape[1]
        grad = torch.exp(log_p)  # p = softmax(z)
        if q is None:  # sum_c q_nc = 1, so dl_n/dz_n = p_n - q_n
            if e > 0:
                grad.sub_(e / c)  # dl_n/dz_nc -= e / C
            grad.scatter_(1, y_col, -(1 - e), reduce="add")  # dl_n/dz_{n,y_n} -= 1 - e
        else:
            grad.mul_(q.sum(1, keepdim=True)).sub_(q)  # dl_n/dz_n = (sum_c q_nc) p_n - q_n
        grad = self._chain(grad, g)  # dL/dz = g * dl/dz
        if self._ignored is not None:  # exactly 0, even when "mean" divided by 0 (as torch)
            grad.masked_fill_(self._ignored, 0.0)
        return grad

    def _check_classes(self, z: Tensor, y: Tensor) -> Tensor | None:
        """Validate logits and class indices; return the mask of kept rows, if any is not."""
        if z.dim() != 2:
            raise ValueError(
                f"{self._describe()}: expected pred of shape (N, C), got {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            raise TypeError(f"{self._describe()}: expected floating pred (logits), got {z.dtype}")
        n, c = z.shape
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
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
        if n == 0:
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

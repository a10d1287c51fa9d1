"""Binary cross-entropy, on probabilities (BCELoss) and on logits (BCEWithLogitsLoss).

Both score a prediction p of each element against a target y in [0, 1]:
l = -w [y log p + (1 - y) log(1 - p)]. ``BCELoss`` takes p itself, a Sigmoid's
output; ``BCEWithLogitsLoss`` takes the logit z, with p = s(z) the sigmoid. Prefer
the second: it never forms p, so its logs never meet 0, where BCELoss must clamp
them at -100, and its gradient s(z) - y never divides by p (1 - p). Both keep an
optional weight w as a buffer, broadcast against pred's shape (``Loss._check_broadcast``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.losses import REDUCTION_CODES, Loss

# ATen's kernels, looked up once (torch.ops resolves names slowly):
# log(sigmoid(x)) in one stable kernel, and BCELoss's per-element loss
_log_sigmoid = aten.kernel(torch.ops.aten.log_sigmoid.default)
_binary_cross_entropy = aten.kernel(torch.ops.aten.binary_cross_entropy.default)
# The floor of (1 - p) p in BCELoss's gradient: torch's EPSILON, 1e-12 stored as a
# float32, and so 9.99999996e-13 in float64 too (1e-12 itself gives other bits there)
_EPSILON = float(torch.tensor(1e-12, dtype=torch.float32))


def _weights_repr(loss: Loss, names: tuple[str, ...]) -> str:
    """The weights that are set, as ``, weight=...``: their values would not fit a line."""
    return "".join(f", {name}=..." for name in names if getattr(loss, name) is not None)


class BCELoss(Loss):
    """Binary cross-entropy on probabilities, l = -w [y log p + (1 - y) log(1 - p)].

    p (pred) must be a probability and y (target) lie in [0, 1]; torch's RuntimeError
    otherwise, NaN included. As in torch, each log is clamped at -100, so p = 0 or 1
    costs at most 100 w instead of inf. The gradient is

        dl/dp = w (p - y) / ((1 - p) p),

    with (1 - p) p kept at least eps = 1e-12 (as a float32), as in torch, so that it
    stays finite (about 1e12) at p = 0 and 1; like torch's, it ignores the clamp of
    the logs. Value and gradient have torch's bits:
    the value is ATen's kernel, whose logs are the C library's (``torch.log``'s
    vectorised kernel differs from them in the last bit), and the gradient takes the
    steps of torch's backward kernel in its order.

    Args:
        weight: rescaling weight w of each element's loss, broadcast against pred's
            shape: (C,) per class, (N, 1) per example. Kept as a buffer, as in torch.
        size_average, reduce: torch's deprecated pair (see ``Loss``).
        reduction: "mean" (the default), "sum" or "none".

    Shape:
        pred: (*), target: (*), same shape and dtype; weight: any shape that
        broadcasts to (*) -> loss: () or (*) if "none".
    """

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self._register_weight("weight", weight)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        p, y, w = pred, target, self.weight
        self._check_broadcast("weight", w, p)
        try:
            # l / w = (y - 1) max(log(1 - p), -100) - y max(log p, -100), in one pass
            # that also checks 0 <= p <= 1 and 0 <= y <= 1
            loss: Tensor = _binary_cross_entropy(p, y, None, REDUCTION_CODES["none"])
        except RuntimeError as error:  # out of [0, 1]: torch's words, our module's name
            raise RuntimeError(f"{self._describe()}: {error}") from None
        self.saved["p"], self.saved["y"] = p, y  # the backward needs p and y
        if w is not None:
            loss.mul_(w)  # w l, as torch scales the kernel's output
        return self._reduce(loss)

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        p, y, w = self._saved("p"), self._saved("y"), self.weight
        g = self._checked_grad_output(grad_output)  # None: dL/dl = 1
        # torch's backward kernel, g (p - y) / max((1 - p) p, eps), step by step:
        grad = p - y  # the numerator, first
        if g is not None:
            grad.mul_(g)  # g (p - y): torch multiplies before it divides
        # (1 - p) p, the variance of a coin that lands 1 with probability p, floored so
        # that p = 0 or 1 divides by eps, not by 0
        variance = (1 - p).mul_(p).clamp_min_(_EPSILON)
        grad.div_(variance)  # g d(l / w)/dp = g (p - y) / max((1 - p) p, eps)
        if w is not None:
            grad.mul_(w)  # dL/dp = g w (p - y) / max((1 - p) p, eps), in torch's order
        if self.reduction == "mean":
            grad.div_(p.numel())  # each of the N losses weighs 1 / N in the mean
        return grad

    def extra_repr(self) -> str:
        return super().extra_repr() + _weights_repr(self, ("weight",))


class BCEWithLogitsLoss(Loss):
    """Binary cross-entropy on logits z, l = w [(1 - y) z + (1 + (p - 1) y) softplus(-z)].

    Without weights (w = 1, p = 1) this is l = (1 - y) z + softplus(-z), which is
    -[y log s(z) + (1 - y) log(1 - s(z))] with s the sigmoid, since
    log s(z) = -softplus(-z) and log(1 - s(z)) = -z - softplus(-z), where
    softplus(x) = log(1 + exp(x)) is computed so that no exp overflows. ``pos_weight``
    p weighs the positive term; ``weight`` w rescales each element's whole loss. The
    gradient is dl/dz = w [(1 + (p - 1) y) s(z) - p y], which is w (s(z) - y) for p = 1.

    Args:
        weight: rescaling weight w of each element's loss, broadcast against pred's
            shape: (C,) per class, (N, 1) per example. Kept as a buffer, as in torch.
        size_average, reduce: torch's deprecated pair (see ``Loss``).
        reduction: "mean" (the default), "sum" or "none".
        pos_weight: weight p of positive examples, broadcast against pred's shape,
            typically one per class: shape (C,). Kept as a buffer, as in torch.

    Shape:
        pred: (*), target: (*), same shape and dtype; weight and pos_weight: any shape
        that broadcasts to (*) -> loss: () or (*) if "none".
    """

    weight: Tensor | None
    pos_weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self._register_weight("weight", weight)  # torch's order in state_dict: weight first
        self._register_weight("pos_weight", pos_weight)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        self._check_pair(pred, target)
        z, y, w, p = pred, target, self.weight, self.pos_weight
        self._check_broadcast("weight", w, z)
        self._check_broadcast("pos_weight", p, z)
        self.saved["z"], self.saved["y"] = z, y  # the backward needs s(z) and y
        # log s(z) = -softplus(-z) = min(z, 0) - log1p(exp(-|z|)), by torch's own stable
        # kernel: logaddexp(-z, 0), the same formula, evaluates it to other last bits
        log_s = _log_sigmoid(z)
        if p is not None:
            log_s = log_s * ((p - 1) * y + 1)  # (1 + (p - 1) y) log s(z)
        # the same ops in the same order as torch, so the same bits
        loss = (1 - y) * z - log_s  # (1 - y) z + (1 + (p - 1) y) softplus(-z)
        if w is not None:
            loss = loss * w  # w l: finite wherever l is, even at z = +-1000
        return self._reduce(loss)

    def backward(self, grad_output: Tensor | None = None) -> Tensor:
        z, y, w, p = self._saved("z"), self._saved("y"), self.weight, self.pos_weight
        g = self._checked_grad_output(grad_output)  # None: dL/dl = 1
        # The same ops in the same order as torch's own backward, so the same bits:
        if p is None:
            grad = torch.sigmoid(z).sub_(y)  # d(l / w)/dz = s(z) - y
        else:
            py = p * y
            # d(l / w)/dz = (1 + p y - y) s(z) - p y
            grad = (py + 1).sub_(y).mul_(torch.sigmoid(z)).sub_(py)
        if g is not None:
            grad.mul_(g)  # dL/dz = g d(l / w)/dz, without weight
        if w is not None:
            grad.mul_(w)  # dL/dz = g w d(l / w)/dz = g dl/dz, in torch's order
        if self.reduction == "mean":
            grad.div_(z.numel())  # each of the N losses weighs 1 / N in the mean
        return grad

    def extra_repr(self) -> str:
        return super().extra_repr() + _weights_repr(self, ("weight", "pos_weight"))

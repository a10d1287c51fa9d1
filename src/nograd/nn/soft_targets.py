"""Cross-entropy against class probabilities: the loss of soft labels.

``CrossEntropyLoss`` takes, instead of class indices y of shape (N,), a target q of
the logits' shape (N, C) whose rows are probabilities (a teacher's softmax in
distillation, mixed labels in mixup). With log p = log_softmax(z) and class weights w
(1 without), row n's loss is

    l_n = -sum_c w_c q_nc log p_nc

and with label smoothing e the target is first mixed with the uniform distribution,
q = (1 - e) q + e / C. "mean" divides the sum over rows by N, the number of rows (not,
as for class indices, by the rows' weights). The gradient is again the softmax's
Jacobian applied to dL/dlog p_nc = -g w_c q_nc:

    dL/dz_nc = dL/dlog p_nc - p_nc sum_k dL/dlog p_nk

Both are computed with torch's ops in torch's order, so that they are its bits.
"""

from __future__ import annotations

import torch
from torch import Tensor


def smoothed(q: Tensor, e: float) -> Tensor:
    """q = (1 - e) q + e / C, the target mixed with the uniform distribution."""
    return q if e == 0 else q * (1 - e) + e / q.shape[1]


def loss(log_p: Tensor, q: Tensor, w: Tensor | None, reduction: str) -> Tensor:
    """-sum_c w_c q_nc log p_nc per row, reduced: summed, or summed and divided by N."""
    weighted = log_p * q if w is None else log_p * q * w.view(1, -1)  # w_c q_nc log p_nc
    if reduction == "none":
        return -weighted.sum(1)
    total = -weighted.sum()
    if reduction == "sum":
        return total
    n = log_p.shape[0]
    return total / n if n > 0 else total.fill_(float("nan"))  # torch's NaN for no rows


def grad(g: Tensor, log_p: Tensor, q: Tensor, w: Tensor | None, reduction: str) -> Tensor:
    """dL/dz from the upstream g = dL/dl, in the order torch's autograd takes the chain."""
    n, c = log_p.shape
    if reduction == "mean":
        g = g / n if n > 0 else g  # no rows: the gradient is empty anyway
    g = -g  # dL/d(sum of w_c q_nc log p_nc)
    per_element = g.unsqueeze(1).expand(n, c) if reduction == "none" else g.expand(n, c)
    if w is not None:
        per_element = per_element * w.view(1, -1)  # dL/d(q_nc log p_nc) = w_c dL/d(w_c ...)
    grad_log_p = per_element * q  # dL/dlog p_nc = -g w_c q_nc (/ N under "mean")
    # dL/dz_nc = dL/dlog p_nc - p_nc sum_k dL/dlog p_nk
    result: Tensor = torch._log_softmax_backward_data(grad_log_p, log_p, 1, log_p.dtype)
    return result

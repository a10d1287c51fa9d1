"""Cross-entropy against class probabilities: the loss of soft labels.

``CrossEntropyLoss`` takes, instead of class indices, a target q of the logits' shape
whose rows are probabilities (a teacher's softmax in distillation, mixed labels in
mixup). The classes lie along dim 1 of (N, C) or (N, C, d1, ..., dk), and along dim 0
of one sample (C,) (``nograd.nn.cross_entropy_shapes``). With log p = log_softmax(z)
along that dim and class weights w (1 without), row i's loss is

    l_i = -sum_c w_c q_ic log p_ic

and with label smoothing e the target is first mixed with the uniform distribution,
q = (1 - e) q + e / C. "mean" divides the sum over rows by their number N d1 ... dk
(not, as for class indices, by the rows' weights). The gradient is again the
softmax's Jacobian applied to dL/dlog p_ic = -g w_c q_ic:

    dL/dz_ic = dL/dlog p_ic - p_ic sum_k dL/dlog p_ik

Both are computed with torch's ops in torch's order, so that they are its bits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nograd.nn.cross_entropy_shapes import along_classes, class_dim, rows


def uniform_share(e: float, c: int) -> float:
    """e / C, each class's share of the smoothing, as torch divides: inf for no classes.

    (Rows of no classes make empty tensors, or a loss of 0 * inf = NaN, as in torch.)
    """
    return e / c if c > 0 else math.inf


def smoothed(q: Tensor, e: float) -> Tensor:
    """q = (1 - e) q + e / C, the target mixed with the uniform distribution."""
    return q if e == 0 else q * (1 - e) + uniform_share(e, q.shape[class_dim(q)])


def loss(log_p: Tensor, q: Tensor, w: Tensor | None, reduction: str) -> Tensor:
    """-sum_c w_c q_ic log p_ic per row, reduced: summed, or summed and divided by rows."""
    weighted = log_p * q if w is None else log_p * q * along_classes(w, log_p)  # w_c q_ic log p_ic
    if reduction == "none":
        return -weighted.sum(class_dim(log_p))
    total = -weighted.sum()
    if reduction == "sum":
        return total
    n = rows(log_p)
    return total / n if n > 0 else total.fill_(float("nan"))  # torch's NaN for no rows


def grad(g: Tensor, log_p: Tensor, q: Tensor, w: Tensor | None, reduction: str) -> Tensor:
    """dL/dz from the upstream g = dL/dl, in the order torch's autograd takes the chain."""
    dim, n = class_dim(log_p), rows(log_p)
    if reduction == "mean":
        g = g / n if n > 0 else g  # no rows: the gradient is empty anyway
    g = -g  # dL/d(sum of w_c q_ic log p_ic)
    # the same for every class of a row: dL/d(w_c q_ic log p_ic)
    per_element = g.unsqueeze(dim) if reduction == "none" else g
    per_element = per_element.expand(log_p.shape)
    if w is not None:
        per_element = per_element * along_classes(w, log_p)  # dL/d(q_ic log p_ic)
    grad_log_p = per_element * q  # dL/dlog p_ic = -g w_c q_ic (/ rows under "mean")
    # dL/dz_ic = dL/dlog p_ic - p_ic sum_k dL/dlog p_ik
    result: Tensor = torch._log_softmax_backward_data(grad_log_p, log_p, dim, log_p.dtype)
    return result

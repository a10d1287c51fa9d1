"""Batch normalization: each feature normalised over the batch, with running statistics.

The forward is ``torch.native_batch_norm``, the kernel ``torch.nn.BatchNorm1d`` runs on
the CPU: the output, the saved batch mean and 1/std, and the in-place update of the
running statistics are torch's bits. The backward is ATen's
``native_batch_norm_backward``, the kernel torch's autograd runs, with the formulas it
evaluates written beside the call.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.module import NO_INPUT_GRAD, Module
from nograd.nn.parameter import Parameter, wants_grad

# ATen's gradient of batch norm, looked up once: torch.ops resolves names slowly
_native_batch_norm_backward = aten.kernel(torch.ops.aten.native_batch_norm_backward.default)


class BatchNorm1d(Module):
    """Batch norm, y = (x - mean) / sqrt(var + eps) * w + b, per feature over the batch.

    In training, mean and var (biased) are those of the batch, over N (and L) for each
    of the C features, and the running estimates move towards them:
    running = (1 - momentum) * running + momentum * batch, where the running variance
    takes the unbiased batch variance (divided by n - 1). With momentum=None the
    running estimates are plain averages of all the batches seen so far (momentum =
    1 / num_batches_tracked). In evaluation the running estimates replace the batch's,
    unless ``track_running_stats`` is False: then there are none, and the batch
    statistics are used in both modes. As in torch, batch statistics need more than one
    number per feature, and an empty batch (N or L of 0) gives an empty output, zero
    gradients for w and b, and leaves the running estimates alone (but counts).

    Args:
        num_features: C, the number of features (channels).
        eps: added to the variance, so that a constant feature divides by sqrt(eps);
            torch wants eps > 0 with batch statistics and eps >= 0 with running ones.
        momentum: the weight of the new batch in the running estimates, or None for
            the cumulative average.
        affine: whether to learn w and b (ones and zeros at first, as in torch).
        track_running_stats: whether to keep running_mean, running_var and
            num_batches_tracked (buffers, saved in ``state_dict``).
        device: where to allocate the parameters and buffers.
        dtype: their floating-point type (num_batches_tracked is int64 always).
        bias: whether to learn b (with ``affine``); keyword-only, as in torch.

    Shape:
        input: (N, C) or (N, C, L) -> output: the same shape
    """

    weight: Parameter | None
    bias: Parameter | None
    running_mean: Tensor | None
    running_var: Tensor | None
    num_batches_tracked: Tensor | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        try:
            if isinstance(num_features, bool):  # an int to Python, not a size to torch
                raise TypeError
            num_features = operator.index(num_features)
        except TypeError:
            raise TypeError(
                f"BatchNorm1d: expected an integer num_features, got {num_features!r}"
            ) from None
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats

        def vector() -> Tensor:  # (C,), filled by reset_parameters as torch fills them
            return torch.empty(num_features, device=device, dtype=dtype)

        self.register_parameter("weight", Parameter(vector()) if affine else None)
        self.register_parameter("bias", Parameter(vector()) if affine and bias else None)
        tracked = track_running_stats
        self.register_buffer("running_mean", vector() if tracked else None)
        self.register_buffer("running_var", vector() if tracked else None)
        count = torch.tensor(0, dtype=torch.long, device=device) if tracked else None
        self.register_buffer("num_batches_tracked", count)  # int64 whatever dtype is
        self.reset_parameters()

    def _entries_older_versions_lack(self, version: int | None) -> dict[str, Tensor]:
        """torch added ``num_batches_tracked`` at version 2 of its batch norm: from a dict
        of an older version, or of none (a plain dict), torch keeps the module's own
        count (0 on the meta device), and so does this."""
        count = self.num_batches_tracked
        if (version is not None and version >= 2) or count is None:
            return {}
        if count.device.type == "meta":
            count = torch.tensor(0, dtype=torch.long)
        return {"num_batches_tracked": count}

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0."""
        if self.running_mean is not None and self.running_var is not None:
            self.running_mean.zero_()
            self.running_var.fill_(1)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Fresh running statistics, w = 1 and b = 0, as in torch."""
        self.reset_running_stats()
        if self.weight is not None:
            self.weight.data.fill_(1)
        if self.bias is not None:
            self.bias.data.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (2, 3):
            raise ValueError(f"{self._describe()}: expected 2D or 3D input (got {x.dim()}D input)")
        momentum = 0.0 if self.momentum is None else self.momentum  # unused unless updating
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            # counted before the checks below, as torch counts it: a batch they refuse
            # still counts, and with momentum=None it weighs every later batch
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # the cumulative average: the n-th batch weighs 1 / n
                momentum = 1.0 / float(self.num_batches_tracked)
        # batch statistics in training, and in evaluation when there are no running ones
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        self._check_batch(x, batch_stats)
        # the running statistics to update (training) or to normalise with (evaluation)
        use_running = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_running else None
        running_var = self.running_var if use_running else None
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        if x.numel() == 0:  # no numbers, no statistics: torch's y = x * w[0] + b[0], empty
            self.saved["x"] = x
            y = x.clone() if weight is None else x * weight[0]
            return y if bias is None else y + bias[0]
        if x.shape[1] != self.num_features:
            self._check_width(x, weight, bias, running_mean, running_var)
        # y, and the batch's mean and invstd = 1 / sqrt(var + eps) for the backward (empty
        # tensors in evaluation); updates running_mean and running_var in place in training
        y, save_mean, save_invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, batch_stats, momentum, self.eps
        )
        self.saved.update(
            x=x,
            save_mean=save_mean,
            save_invstd=save_invstd,
            running_mean=running_mean,
            running_var=running_var,
            batch_stats=batch_stats,
        )
        return y

    def _check_batch(self, x: Tensor, batch_stats: bool) -> None:
        """torch's checks before it normalises x: with the batch's statistics, more than
        one number per feature and eps > 0; with the running ones, eps >= 0."""
        if batch_stats and x.shape[0] * (x.shape[2] if x.dim() == 3 else 1) == 1:
            # one number per feature has no variance: torch refuses to normalise it
            raise ValueError(
                f"{self._describe()}: Expected more than 1 value per channel when "
                f"training, got input size {x.shape}"
            )
        if batch_stats and self.eps <= 0:  # a constant feature would divide by 0
            raise ValueError(
                f"{self._describe()}: batch_norm eps must be positive during training, "
                f"but got {self.eps}"
            )
        if self.eps < 0:
            raise ValueError(
                f"{self._describe()}: batch_norm eps must be non-negative, but got {self.eps}"
            )

    def _check_width(self, x: Tensor, *per_feature: Tensor | None) -> None:
        """Refuse x of C != num_features if a weight, bias or running statistic is given.

        torch checks C against each of them; without any it normalises the C features
        it gets. (The CPU kernel itself checks nothing: it would read past their end.)
        """
        if any(tensor is not None for tensor in per_feature):
            shape = "(N, C)" if x.dim() == 2 else "(N, C, L)"
            raise ValueError(
                f"{self._describe()}: expected input of shape {shape} with "
                f"C = {self.num_features}, got {tuple(x.shape)}"
            )

    def backward(self, grad_output: Tensor) -> Tensor:
        x = self._saved_for(grad_output, "x")
        if x.numel() == 0:
            return self._backward_of_empty(x)
        saved = self.saved
        weight = None if self.weight is None else self.weight.data
        # With g = dL/dy, x_hat = (x - mean) * rstd, sums per feature over the n = N (* L)
        # numbers of the batch, and rstd = invstd of the batch in training:
        #   dL/dx = w * rstd / n * (n * g - sum g - x_hat * sum(g * x_hat))   (training)
        #   dL/dx = g * w * rstd, rstd = 1 / sqrt(running_var + eps)     (evaluation)
        #   dL/dw = sum g * x_hat
        #   dL/db = sum g
        # ATen's kernel, as torch's autograd calls it; the mask skips what is not wanted
        mask = [self.needs_input_grad, wants_grad(self.weight), wants_grad(self.bias)]
        grad_input, grad_weight, grad_bias = _native_batch_norm_backward(
            grad_output,
            x,
            weight,
            saved["running_mean"],
            saved["running_var"],
            saved["save_mean"],
            saved["save_invstd"],
            saved["batch_stats"],
            self.eps,
            mask,
        )
        if self.weight is not None:
            self.weight.accumulate_grad(grad_weight)  # dL/dw = sum g * x_hat
        if self.bias is not None:
            self.bias.accumulate_grad(grad_bias)  # dL/db = sum g
        if not self.needs_input_grad:
            return NO_INPUT_GRAD
        return grad_input  # type: ignore[no-any-return]

    def _backward_of_empty(self, x: Tensor) -> Tensor:
        """The gradients of an empty batch: zeros for w and b, an empty dL/dx, as torch's."""
        # dL/dw = dL/db = 0: a sum over no numbers
        for param in (self.weight, self.bias):
            if param is not None:
                param.accumulate_grad(torch.zeros_like(param.data))
        return torch.zeros_like(x) if self.needs_input_grad else NO_INPUT_GRAD

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

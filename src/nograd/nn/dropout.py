"""Inverted dropout: zero random elements while training, do nothing at evaluation."""

from __future__ import annotations

import torch
from torch import Tensor

from nograd.nn import aten
from nograd.nn.module import Module

# torch's fused GPU kernels, looked up once (torch.ops resolves names slowly): the
# forward draws the mask m and returns x * m / (1 - p) with it; the backward is
# dL/dy * m / (1 - p)
_native_dropout = aten.kernel(torch.ops.aten.native_dropout.default)
_native_dropout_backward = aten.kernel(torch.ops.aten.native_dropout_backward.default)


class Dropout(Module):
    """Inverted dropout, y = x * m / (1 - p) with m ~ Bernoulli(1 - p) per element.

    Only in training mode: each element is zeroed with probability p and the survivors
    are scaled by 1 / (1 - p), so that E[y] = x and evaluation can be the identity.
    The mask is drawn as ``torch.nn.Dropout`` draws it, so with the same seed both
    drop the same elements: on the CPU with ``bernoulli_``, on a GPU (not in place)
    with torch's fused kernel ``native_dropout``, whose random numbers are its own.
    With p = 1 every element is dropped: y = x * 0, as in torch (no random numbers
    drawn; inf and NaN give NaN, negative x gives -0).

    Args:
        p: probability of zeroing an element, in [0, 1].
        inplace: overwrite the input with the output, as ``torch.nn.Dropout`` does.
        generator: the random generator the mask is drawn from, for seedable,
            reproducible masks; None draws from torch's global generator.

    Shape:
        input: (*) -> output: (*), same shape
    """

    def __init__(
        self, p: float = 0.5, inplace: bool = False, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if not isinstance(inplace, bool):  # catches Dropout(p, generator) given positionally
            raise TypeError(f"Dropout: expected inplace to be a bool, got {type(inplace).__name__}")
        if not 0 <= p <= 1:  # NaN too: torch refuses it only at the first forward
            raise ValueError(f"Dropout: expected p in [0, 1], got {p}")
        self.p = p
        self.inplace = inplace
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        saved = self.saved
        saved["shape"] = x.shape  # to check the shape of grad_output
        saved["mask"] = saved["kept"] = None
        if not self.training or self.p == 0:
            return x  # the identity; torch draws no random numbers here either
        if self.p == 1:
            # nothing survives, and 1 / (1 - p) does not exist: torch multiplies by a 0-dim
            # zero of x's dtype instead, and draws no random numbers
            scaled_mask = x.new_zeros(())
        elif x.is_cuda and not self.inplace and self.generator is None and x.numel() > 0:
            # what torch.nn.Dropout runs on a GPU: one fused kernel, which draws other
            # random numbers than bernoulli_ would (in place, torch draws as on the CPU)
            y: Tensor
            y, kept = _native_dropout(x, self.p, True)  # kept: m, as booleans
            saved["kept"], saved["scale"] = kept, 1.0 / (1.0 - self.p)
            return y
        else:
            keep = 1 - self.p
            scaled_mask = torch.empty_like(x).bernoulli_(keep, generator=self.generator)
            scaled_mask.div_(keep)
        y = x.mul_(scaled_mask) if self.inplace else x * scaled_mask
        saved["mask"] = scaled_mask  # m / (1 - p): each entry 0 or 1 / (1 - p)
        return y

    def backward(self, grad_output: Tensor) -> Tensor:
        self._check_shape(grad_output, "shape")
        saved = self.saved
        if saved["kept"] is not None:  # torch's fused GPU kernel, in reverse
            # dL/dx = dL/dy * m / (1 - p)
            grad: Tensor = _native_dropout_backward(grad_output, saved["kept"], saved["scale"])
            return grad
        mask: Tensor | None = saved["mask"]
        if mask is None:
            return grad_output  # dL/dx = dL/dy
        return grad_output * mask  # dL/dx = dL/dy * m / (1 - p)

    def overwrites_input(self) -> bool:
        return self.inplace and self.training and self.p > 0  # else forward returns x as it is

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

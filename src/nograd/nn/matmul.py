"""The matrix products of ``Linear``, on the CPU by BLAS (PyTorch's bits) or by oneDNN.

A ``Linear`` layer computes three products: y = b + x W^T in its forward, dL/dW = g^T x
and dL/dx = g W in its backward. By default each one is the torch op that
``torch.nn.Linear`` and its autograd call (``addmm``, ``mm``). On the CPU those run in
the BLAS that torch was built with (Intel's MKL in the pip wheels), so nograd's numbers
are PyTorch's to the last bit.

That BLAS does not run the fastest code of every CPU. On an AMD EPYC, MKL takes its
AVX2 path: about 105 GFLOP/s on one core, whatever the layout of the operands. oneDNN,
the other matrix library inside the same torch, picks its code from the instructions
the CPU has, and runs AVX-512 there at about 230 GFLOP/s (docs/benchmarks.md)::

    nograd.set_cpu_matmul("onednn")  # faster large products, no longer PyTorch's bits
    nograd.set_cpu_matmul("blas")    # back to torch's ops (the default)

With "onednn", a float32 CPU product of at least ``ONEDNN_MIN_MACS`` multiply-adds goes
to oneDNN. Its result is as exact a float32 product as BLAS's, summed in another order,
so it differs from PyTorch's in the last bits (about 1e-6 relative), and so does the
training that follows. Every other product stays with torch's op: float64 (oneDNN has
none), GPU tensors, and small products, where oneDNN's fixed cost of about 10 us a
call is more than it saves.

How the switch costs nothing while it is off: the three names below *are* torch's ops
while the backend is "blas" (``Linear`` calls ``matmul.mm(g, W)``, which is
``torch.mm(g, W)``), and ``set_cpu_matmul`` rebinds them to the functions that choose.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, Protocol

import torch
from torch import Tensor

CpuMatmul = Literal["blas", "onednn"]


class Product(Protocol):
    """(a, c) -> a c, as ``torch.mm``: a new tensor, or written into ``out``."""

    def __call__(self, input: Tensor, mat2: Tensor, *, out: Tensor | None = None) -> Tensor: ...


BiasedProduct = Callable[[Tensor, Tensor, Tensor], Tensor]  # (b, a, c) -> b + a c

# Below this many multiply-adds (rows x inner x columns), oneDNN's fixed cost per call
# eats its speed. A layer's three products at 64 x 256 x 256 (2^22) take 0.66 of MKL's
# time on one core of an AMD EPYC and 0.90 on two; at 128 x 128 x 128 (2^21), 0.81 and
# 1.14 (benchmarks/matmul.py).
ONEDNN_MIN_MACS = 1 << 22

_backend: CpuMatmul = "blas"

# --------------------------------------------- the products Linear calls (see set_cpu_matmul)
addmm: BiasedProduct = torch.addmm  # b + a c
addmm_relu: BiasedProduct = torch._addmm_activation  # max(0, b + a c)
mm: Product = torch.mm  # a c


def get_cpu_matmul() -> CpuMatmul:
    """The library that computes ``Linear``'s large float32 products on the CPU."""
    return _backend


def set_cpu_matmul(backend: CpuMatmul) -> None:
    """Compute ``Linear``'s large float32 CPU products by "blas" (default) or "onednn".

    "blas" gives PyTorch's numbers bit for bit; "onednn" is faster where the BLAS
    does not use the CPU's widest instructions, and differs from PyTorch in the last
    bits. See the module docstring.

    Raises:
        ValueError: for any other name.
        RuntimeError: for "onednn" when this torch build has no oneDNN.
    """
    global _backend, addmm, addmm_relu, mm
    if backend not in _PRODUCTS:
        raise ValueError(f"set_cpu_matmul: expected 'blas' or 'onednn', got {backend!r}")
    if backend == "onednn" and not onednn_available():
        raise RuntimeError(
            "set_cpu_matmul: this torch build has no oneDNN (torch.backends.mkldnn) "
            "linear op; keep the default 'blas'"
        )
    addmm, addmm_relu, mm = _PRODUCTS[backend]
    _backend = backend


@functools.cache
def onednn_available() -> bool:
    """Whether this torch has oneDNN and its linear op, which "onednn" needs.

    The op is tried once on a 2 x 2 product: a build may list it and still refuse to
    run it on this CPU.
    """
    built = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    if not (built and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    try:
        return torch.equal(_linear(a, a, None, "none"), torch.mm(a, a))
    except RuntimeError:
        return False


def _on_onednn(a: Tensor, c: Tensor) -> bool:
    """Whether a c goes to oneDNN: float32 CPU matrices, and enough work to pay off."""
    return (
        a.dtype == torch.float32
        and c.dtype == torch.float32
        and a.is_cpu
        and c.is_cpu
        and a.dim() == 2
        and c.dim() == 2
        and a.shape[1] == c.shape[0]  # else torch's op raises its own error
        and a.shape[0] * a.shape[1] * c.shape[1] >= ONEDNN_MIN_MACS
    )


def _linear(a: Tensor, c: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    """activation(bias + a c), by oneDNN's linear op, which computes bias + a W^T."""
    y: Tensor = torch.ops.mkldnn._linear_pointwise(a, c.t(), bias, activation, [], "")
    return y


def _bias_fits(bias: Tensor, c: Tensor) -> bool:
    """oneDNN adds a bias vector of the output's width, of the same dtype and device."""
    return bias.shape == (c.shape[1],) and bias.dtype == c.dtype and bias.device == c.device


def _addmm(bias: Tensor, a: Tensor, c: Tensor) -> Tensor:
    if _on_onednn(a, c) and _bias_fits(bias, c):
        return _linear(a, c, bias, "none")  # b + a c
    return torch.addmm(bias, a, c)


def _addmm_relu(bias: Tensor, a: Tensor, c: Tensor) -> Tensor:
    if _on_onednn(a, c) and _bias_fits(bias, c):
        return _linear(a, c, bias, "relu")  # max(0, b + a c)
    return torch._addmm_activation(bias, a, c)


def _mm(input: Tensor, mat2: Tensor, *, out: Tensor | None = None) -> Tensor:
    a, c = input, mat2  # torch.mm's names, so that this stands in for it
    if _on_onednn(a, c):
        y = _linear(a, c, None, "none")  # a c
        return y if out is None else out.copy_(y)
    return torch.mm(a, c, out=out)


_PRODUCTS: dict[str, tuple[BiasedProduct, BiasedProduct, Product]] = {
    # addmm, addmm_relu, mm of each backend
    "blas": (torch.addmm, torch._addmm_activation, torch.mm),
    "onednn": (_addmm, _addmm_relu, _mm),
}

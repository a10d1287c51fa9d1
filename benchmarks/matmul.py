"""The three matrix products of a Linear layer, by torch's BLAS and by oneDNN, on the CPU.

``nograd.set_cpu_matmul("onednn")`` sends a float32 product of at least
``ONEDNN_MIN_MACS`` multiply-adds to oneDNN (``nograd/nn/matmul.py``). This script
measures what that buys, product by product, and where the line should be. Each row is
one Linear shape, batch x in_features -> out_features, and its three products:

- forward: y = b + x W^T (torch.addmm against oneDNN's linear op);
- dL/dW = g^T x (torch.mm against the same op, on transposed views);
- dL/dx = g W (likewise).

Timing: chunks of >= 20 ms of one product; the two libraries take turns, chunk by
chunk (the first one alternating), and a cell gives the median time of each, the
median of the per-turn ratios oneDNN / BLAS and each one's GFLOP/s. Nothing is asserted.

Usage: python benchmarks/matmul.py [--shapes 256x784x1024,...] [--threads 1,2]
       [--repeats N] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
from _common import calls_per_chunk, machine_lines, markdown_table, median, print_report, time_calls
from nograd.nn import matmul

CHUNK_S = 0.02
# the MLP's two big layers, the reference net at batch 1000, and shapes around the line
SHAPES = "256x784x1024,256x1024x1024,256x1024x10,1000x25x25,128x128x128,64x256x256,32x512x512"


def products(batch: int, d_in: int, d_out: int) -> dict[str, tuple[Callable[[], Tensor], ...]]:
    """Each product of the shape, as (BLAS, oneDNN) calls on the same tensors."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, d_in, generator=generator)
    weight = torch.randn(d_out, d_in, generator=generator) / d_in**0.5
    bias = torch.randn(d_out, generator=generator)
    g = torch.randn(batch, d_out, generator=generator)
    return {
        "y = b + x W^T": (
            functools.partial(torch.addmm, bias, x, weight.t()),
            functools.partial(matmul._linear, x, weight.t(), bias, "none"),
        ),
        "dL/dW = g^T x": (
            functools.partial(torch.mm, g.t(), x),
            functools.partial(matmul._linear, g.t(), x, None, "none"),
        ),
        "dL/dx = g W": (
            functools.partial(torch.mm, g, weight),
            functools.partial(matmul._linear, g, weight, None, "none"),
        ),
    }


def measure(
    blas: Callable[[], Tensor], onednn: Callable[[], Tensor], repeats: int
) -> tuple[float, float, float]:
    """Median us per call of each, and the median of the per-turn ratios oneDNN / BLAS."""
    calls = calls_per_chunk(blas, CHUNK_S)
    times: dict[str, list[float]] = {"blas": [], "onednn": []}
    ratios = []
    for turn in range(repeats):
        chunk = {}
        order = ("blas", "onednn") if turn % 2 == 0 else ("onednn", "blas")
        for name in order:
            chunk[name] = time_calls(blas if name == "blas" else onednn, calls)
            times[name].append(chunk[name] / calls * 1e6)
        ratios.append(chunk["onednn"] / chunk["blas"])
    return median(times["blas"]), median(times["onednn"]), median(ratios)


def shape(text: str) -> tuple[int, int, int]:
    try:
        batch, d_in, d_out = (int(part) for part in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NxINxOUT like 256x784x1024, got {text!r}"
        ) from None
    return batch, d_in, d_out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--shapes", default=SHAPES, help="NxINxOUT,... (batch x in -> out)")
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=9, help="turns per cell (9)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    if not matmul.onednn_available():
        print("matmul: this torch build has no oneDNN linear op", file=sys.stderr)
        return 2
    shapes = [shape(text) for text in args.shapes.split(",")]
    thread_counts = [int(text) for text in args.threads.split(",")]
    threads_before = torch.get_num_threads()
    rows = []
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for batch, d_in, d_out in shapes:
                macs = batch * d_in * d_out
                for name, (blas, onednn) in products(batch, d_in, d_out).items():
                    blas_us, onednn_us, ratio = measure(blas, onednn, args.repeats)
                    rows.append([
                        f"{batch}x{d_in}x{d_out}", str(threads), name, f"{macs / 2**20:.2f}",
                        f"{blas_us:.1f}", f"{onednn_us:.1f}", f"{ratio:.2f}",
                        f"{2 * macs / blas_us / 1e3:.0f}", f"{2 * macs / onednn_us / 1e3:.0f}",
                        "oneDNN" if macs >= matmul.ONEDNN_MIN_MACS else "BLAS",
                    ])  # fmt: skip
                    print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads_before)
    header = [
        "shape", "threads", "product", "Mi multiply-adds", "BLAS (us)", "oneDNN (us)",
        "oneDNN / BLAS", "BLAS GFLOP/s", "oneDNN GFLOP/s", '"onednn" sends it to',
    ]  # fmt: skip
    lines = [*machine_lines(torch.device("cpu")), "", *markdown_table(header, rows)]
    print_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

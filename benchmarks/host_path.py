"""The host's cost of one eager step on nograd's GPU code path, measured without a GPU.

A small network's eager training step on a GPU is paced by the CPU: Python, torch's
dispatcher, and a kernel launch per op. ``gpu.py`` measures it on a GPU, which few
sessions have. This script measures the first two on the CPU: it times gpu.py's eager
minimal loop and nograd's eager step side by side on CPU tensors while

- ``Tensor.is_cpu`` reads False, so that nograd takes the branches a GPU takes (each
  update line one ``_foreach_*`` call for the list of parameters, Python numbers as
  operands instead of cached CPU tensors), and
- no parameter group is flattened (``nograd.optim.flat`` serves CPU tensors only).

The ops still run on the CPU, at 1 to 4 us each where a GPU launch costs 5 to 15 us,
so the ratio overstates nograd's share of a GPU step. The number to read is the
difference: nograd's Python cost per step over the minimal loop's. Both variants have
the same ops but one (nograd makes one op fewer); the minimal loop has no classes, no
checks and no state to look up, so the difference is what the framework costs.

Usage: python benchmarks/host_path.py [--quick] [--repeats N] [--out FILE]
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
import nograd.optim.optimizer
from _common import (
    calls_per_chunk,
    machine_lines,
    markdown_table,
    median,
    print_report,
    time_calls,
    timing_arguments,
)
from gpu import NETWORKS, OPTIMIZERS, Variant, build, torch_mlp

NAMES = ("minimal eager", "nograd eager")


@contextlib.contextmanager
def gpu_code_paths() -> Iterator[None]:
    """Within the block, nograd takes its GPU branches on CPU tensors (see the top)."""
    can_flatten = nograd.optim.optimizer.can_flatten
    Tensor.is_cpu = property(lambda self: False)  # type: ignore[assignment,method-assign]
    nograd.optim.optimizer.can_flatten = lambda *args, **kwargs: False
    try:
        yield
    finally:
        del Tensor.is_cpu  # torch's own property, inherited from its C base class, is back
        nograd.optim.optimizer.can_flatten = can_flatten


def time_row(network: str, optimizer: str, repeats: int, chunk_s: float) -> list[str]:
    """One network and optimizer: each variant's us per step, their difference and ratio."""
    sizes, batch = NETWORKS[network].sizes, NETWORKS[network].batch
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, sizes[0], generator=generator)
    y = torch.randint(0, sizes[-1], (batch,), generator=generator)
    torch.manual_seed(0)
    init = {key: t.detach().clone() for key, t in torch_mlp(sizes, device).state_dict().items()}
    variants = {name: build(name, sizes, init, optimizer, device, (x, y)) for name in NAMES}

    def step(variant: Variant) -> None:
        with variant.mode():
            variant.step(x, y)

    steps = {name: functools.partial(step, variant) for name, variant in variants.items()}
    calls = max(calls_per_chunk(steps[name], chunk_s) for name in NAMES)
    us: dict[str, list[float]] = {name: [] for name in NAMES}
    for repeat in range(repeats):
        for name in NAMES[repeat % 2 :] + NAMES[: repeat % 2]:  # alternate who goes first
            us[name].append(time_calls(steps[name], calls) / calls * 1e6)
    minimal, ours = (median(us[name]) for name in NAMES)
    pairs = list(zip(us["nograd eager"], us["minimal eager"], strict=True))
    return [
        NETWORKS[network].title,
        str(batch),
        optimizer,
        f"{minimal:.1f}",
        f"{ours:.1f}",
        f"{median([a - b for a, b in pairs]):+.1f}",
        f"{median([a / b for a, b in pairs]):.2f}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = timing_arguments(__doc__, 15, "few, short repetitions").parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 15)
    chunk_s = 0.01 if args.quick else 0.1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode(), gpu_code_paths():
            rows = [time_row("tiny", optimizer, repeats, chunk_s) for optimizer in OPTIMIZERS]
    finally:
        torch.set_num_threads(threads)
    lines = [
        "# The host's cost of an eager step on nograd's GPU code path (on the CPU)",
        "",
        *machine_lines(torch.device("cpu")),
        f"- 1 thread; median of {repeats} interleaved chunks of >= {chunk_s * 1e3:.0f} ms",
        "",
        *markdown_table(
            [
                "network",
                "batch",
                "optimizer",
                "minimal (us/step)",
                "nograd (us/step)",
                "nograd - minimal (us)",
                "nograd / minimal",
            ],
            rows,
        ),
    ]
    print_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

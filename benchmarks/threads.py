"""One CPU thread against torch's default, for `nograd train`'s network at several widths.

`nograd train` picks its thread count from the network (``nograd.cli.threads_for``):
one thread when the widest hidden layer's matmul, batch x width x width multiply-adds,
is below ``ONE_THREAD_MAX_MACS``, else torch's default. This script measures where
that line should be. Each row is the command's default network (3 hidden layers of
one width, GELU, cross-entropy, Adam at lr 0.01) training on the disk task at one
batch size, the same model timed with both thread counts.

Timing: chunks of >= 25 ms of training steps; the two thread counts take turns, chunk
by chunk (the first one alternating), and a row gives the median time per step of each
and the median of the per-turn ratios. Nothing here is asserted.

Usage: python benchmarks/threads.py [--widths 25,64,128,256,512] [--batches 32,256]
       [--repeats N] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
from _common import (
    calls_per_chunk,
    machine_lines,
    markdown_table,
    median,
    positive_ints,
    print_report,
    time_calls,
)
from nograd.cli import threads_for
from nograd.config import TASKS, TrainConfig, build_loss, build_model, build_optimizer

CHUNK_S = 0.025  # each timed chunk lasts at least this long


def config_for(width: int, batch: int) -> TrainConfig:
    """`nograd train`'s defaults with 3 hidden layers of ``width`` and batches of ``batch``."""
    return TrainConfig(hidden=(width, width, width), batch_size=batch, weight_decay=0.0)


def make_step(width: int, batch: int) -> Callable[[], None]:
    """One training step of `nograd train`'s default network, ``width`` units wide."""
    config = config_for(width, batch)
    torch.manual_seed(0)
    model, loss_fn = build_model(config), build_loss(config)
    optimizer = build_optimizer(config, model)
    model.needs_input_grad = False  # as fit sets it
    x, y = TASKS[config.task](batch, generator=torch.Generator().manual_seed(0)).tensors

    def step() -> None:
        with torch.inference_mode():
            optimizer.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            optimizer.step()

    return step


def measure(width: int, batch: int, threads: int, repeats: int) -> list[str]:
    """A table row: us/step at 1 thread and at ``threads``, and their ratio."""
    step = make_step(width, batch)
    torch.set_num_threads(1)
    steps = calls_per_chunk(step, CHUNK_S)  # at one thread, the slower side
    times: dict[int, list[float]] = {1: [], threads: []}
    ratios = []
    for turn in range(repeats):
        order = (1, threads) if turn % 2 == 0 else (threads, 1)
        chunk = {}
        for count in order:
            torch.set_num_threads(count)
            chunk[count] = time_calls(step, steps)
            times[count].append(chunk[count] / steps * 1e6)
        ratios.append(chunk[threads] / chunk[1])
    ratio = median(ratios)
    faster = "1 thread" if ratio > 1 else f"{threads} threads"
    return [
        str(width),
        str(batch),
        f"{median(times[1]):.0f}",
        f"{median(times[threads]):.0f}",
        f"{ratio:.2f}",
        faster,
        str(threads_for(config_for(width, batch), threads)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--widths", type=positive_ints, default=[25, 64, 128, 256, 512])
    parser.add_argument("--batches", type=positive_ints, default=[32, 256])
    parser.add_argument("--repeats", type=int, default=9, help="turns per row (9)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()  # torch's default for this process
    lines = [*machine_lines(torch.device("cpu")), f"- torch's default: {threads} threads", ""]
    rows = []
    try:
        for batch in args.batches:
            for width in args.widths:
                rows.append(measure(width, batch, threads, args.repeats))
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads)
    header = [
        "width",
        "batch",
        "1 thread (us/step)",
        f"{threads} threads (us/step)",
        f"{threads} threads / 1",
        "faster",
        "`nograd train` uses",
    ]
    lines += markdown_table(header, rows)
    print_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

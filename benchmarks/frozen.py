"""A frozen start: nograd against PyTorch when the first layers of a network are frozen.

Fine-tuning a network's last layers on a pretrained backbone freezes the backbone:
torch's autograd then records no graph before the first parameter that requires grad,
and nograd's ``Sequential`` starts its backward at the first child with a trainable
parameter (``docs/design.md``, "A frozen start"). Each row is the MLP
784-1024-1024-10 (ReLU, cross-entropy, SGD with momentum 0.9) at batch 256 with its
first ``frozen`` Linear layers frozen: nograd as ``fit`` runs a step (under
``torch.inference_mode``, ``needs_input_grad = False``) and PyTorch as its users write
it (an optimizer of the parameters that require grad, ``zero_grad``, ``backward``,
``step``).

Timing: chunks of >= 50 ms of steps; the two variants take turns, chunk by chunk (the
first one alternating), and a row gives the median time per step of each and the
median of the per-turn ratios. Check: both, built in float64 from the same weights,
train 3 steps on the same batches; the row's last column says whether every parameter
agrees (rtol 1e-10). Nothing here is asserted on time.

Usage: python benchmarks/frozen.py [--frozen 0,1,2] [--threads 1] [--repeats N] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
import nograd
from _common import (
    calls_per_chunk,
    machine_lines,
    markdown_table,
    median,
    positive_ints,
    print_report,
    time_calls,
)
from nograd import nn, optim

SIZES = (784, 1024, 1024, 10)
BATCH = 256
CHUNK_S = 0.05  # each timed chunk lasts at least this long
Step = Callable[[int], None]  # one training step on the batch of that index


def twins(frozen: int, dtype: torch.dtype) -> tuple[nn.Sequential, torch.nn.Sequential]:
    """The MLP in nograd and in torch.nn, the same weights, the first ``frozen`` Linear
    layers frozen in each."""
    torch.manual_seed(0)
    ours_layers: list[nn.Module] = []
    ref_layers: list[torch.nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
        if i:
            ours_layers.append(nn.ReLU())
            ref_layers.append(torch.nn.ReLU())
        ours_layers.append(nn.Linear(n_in, n_out, dtype=dtype))
        ref_layers.append(torch.nn.Linear(n_in, n_out, dtype=dtype))
    ours, ref = nn.Sequential(*ours_layers), torch.nn.Sequential(*ref_layers)
    ref.load_state_dict(ours.state_dict())
    for k in range(frozen):
        ours[2 * k].freeze()
        ref[2 * k].requires_grad_(False)
    ours.needs_input_grad = False  # as fit sets it; torch's input does not require grad
    return ours, ref


def batches(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, SIZES[0], generator=gen, dtype=dtype),
         torch.randint(0, SIZES[-1], (BATCH,), generator=gen))
        for _ in range(4)
    ]  # fmt: skip


def steps(frozen: int, dtype: torch.dtype) -> tuple[Step, Step, Callable[[], bool]]:
    """nograd's step, PyTorch's, and whether their parameters agree now."""
    ours, ref = twins(frozen, dtype)
    data = batches(dtype)
    opt = optim.SGD([p for p in ours.parameters() if p.trainable], lr=0.01, momentum=0.9)
    ref_opt = torch.optim.SGD(
        [p for p in ref.parameters() if p.requires_grad], lr=0.01, momentum=0.9
    )
    loss_fn, ref_loss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()

    def ours_step(k: int) -> None:
        x, y = data[k % len(data)]
        with torch.inference_mode():
            opt.zero_grad()
            loss_fn(ours(x), y)
            ours.backward(loss_fn.backward())
            opt.step()

    def ref_step(k: int) -> None:
        x, y = data[k % len(data)]
        with torch.enable_grad():
            ref_opt.zero_grad()
            ref_loss_fn(ref(x), y).backward()
            ref_opt.step()

    def agree() -> bool:
        return all(
            torch.allclose(p.data, t.detach(), rtol=1e-10, atol=0)
            for p, t in zip(ours.parameters(), ref.parameters(), strict=True)
        )

    return ours_step, ref_step, agree


def check(frozen: int) -> bool:
    """Three steps of each in float64: the same parameters after them."""
    ours_step, ref_step, agree = steps(frozen, torch.float64)
    for k in range(3):
        ours_step(k)
        ref_step(k)
    return agree()


def measure(frozen: int, repeats: int) -> list[str]:
    """A table row: us/step of PyTorch and nograd, their ratio, and the check."""
    ours_step, ref_step, _ = steps(frozen, torch.float32)
    counter = iter(range(10**9))
    variants = {
        "PyTorch": lambda: ref_step(next(counter)),
        "nograd": lambda: ours_step(next(counter)),
    }
    for step in variants.values():  # warm up: first calls allocate and plan
        for _ in range(3):
            step()
    calls = calls_per_chunk(variants["PyTorch"], CHUNK_S)
    times: dict[str, list[float]] = {name: [] for name in variants}
    ratios = []
    for turn in range(repeats):
        order = list(variants) if turn % 2 == 0 else list(variants)[::-1]
        chunk = {name: time_calls(variants[name], calls) for name in order}
        for name in variants:
            times[name].append(chunk[name] / calls * 1e6)
        ratios.append(chunk["nograd"] / chunk["PyTorch"])
    return [
        str(frozen),
        f"{median(times['PyTorch']):.0f}",
        f"{median(times['nograd']):.0f}",
        f"{median(ratios):.2f}",
        "✓" if check(frozen) else "✗ differ",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--frozen", type=lambda s: [int(n) for n in s.split(",")],
                        default=[0, 1, 2], help="frozen Linear layers, a row each")  # fmt: skip
    parser.add_argument("--threads", type=positive_ints, default=[1])
    parser.add_argument("--repeats", type=int, default=9, help="turns per row (9)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    layers = len(SIZES) - 1
    if any(not 0 <= n < layers for n in args.frozen):  # the last layer must learn
        parser.error(f"--frozen: each between 0 and {layers - 1} Linear layers")
    before = torch.get_num_threads()
    lines = [*machine_lines(torch.device("cpu")), f"- nograd {nograd.__version__}", ""]
    rows = []
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for frozen in args.frozen:
                rows.append([str(threads), *measure(frozen, args.repeats)])
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(before)
    header = ["threads", "frozen layers", "PyTorch (us/step)", "nograd (us/step)",
              "nograd / PyTorch", "same parameters"]  # fmt: skip
    lines += [f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, SGD (momentum 0.9)", ""]
    lines += markdown_table(header, rows)
    print_report(lines, args.out)
    return 0 if all(row[-1] == "✓" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""nograd's optimizers with ``fused=True`` (torch's fused kernels) against their default update.

Each row trains one network with one optimizer twice, from the same weights on the
same batch: once with the default update (lists of tensors, small CPU groups in one flat
buffer) and once with ``fused=True``. The two take turns, chunk by chunk (the first one
alternating), and a row gives each one's median time per training step and the median
of the per-turn ratios. It also checks that the fused run ends with the parameters of
``torch.optim``'s ``fused=True`` twin, to the bit. Nothing here is asserted.

Usage: python benchmarks/fused.py [--quick] [--repeats N] [--out FILE]
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
import nograd.nn
import nograd.optim
from _common import (
    calls_per_chunk,
    machine_lines,
    markdown_table,
    median,
    print_report,
    time_calls,
    timing_arguments,
)

NETWORKS = {  # name: (layer sizes, batch)
    "2-25-25-25-2": ([2, 25, 25, 25, 2], 100),
    "784-1024-1024-10": ([784, 1024, 1024, 10], 256),
}
FUSED = {"default": False, "fused": True}  # the two variants of a row
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 1e-3}),
}


def build(sizes: Sequence[int], optimizer: str, fused: bool) -> tuple[Callable[[], None], Any]:
    """A training step of the network with ``optimizer`` (fused or not), and its model."""
    torch.manual_seed(0)
    layers: list[nograd.nn.Module] = []
    for d_in, d_out in itertools.pairwise(sizes):
        layers += [nograd.nn.Linear(d_in, d_out), nograd.nn.ReLU()]
    model = nograd.nn.Sequential(*layers[:-1])
    model.needs_input_grad = False  # as fit sets it
    name, options = OPTIMIZERS[optimizer]
    opt = getattr(nograd.optim, name)(model.parameters(), **options, fused=fused)
    loss_fn = nograd.nn.CrossEntropyLoss()
    batch = NETWORKS["-".join(map(str, sizes))][1]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, sizes[0], generator=generator)
    y = torch.randint(0, sizes[-1], (batch,), generator=generator)

    def step() -> None:
        with torch.inference_mode():
            opt.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            opt.step()

    return step, (model, x, y)


def same_as_torchs_fused(sizes: Sequence[int], optimizer: str, steps: int) -> bool:
    """Whether nograd's fused run ends with torch.optim's fused run's parameters, to the bit."""
    step, (model, x, y) = build(sizes, optimizer, fused=True)
    ref = torch.nn.Sequential()
    for i, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
        ref.add_module(str(2 * i), torch.nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            ref.add_module(str(2 * i + 1), torch.nn.ReLU())
    ref.load_state_dict(model.state_dict())
    name, options = OPTIMIZERS[optimizer]
    ref_opt = getattr(torch.optim, name)(ref.parameters(), **options, fused=True)
    for _ in range(steps):
        step()
        ref_opt.zero_grad()
        with torch.enable_grad():
            torch.nn.functional.cross_entropy(ref(x), y).backward()
        ref_opt.step()
    ours = model.state_dict()
    return all(torch.equal(ours[key], value.detach()) for key, value in ref.state_dict().items())


def time_row(network: str, optimizer: str, repeats: int, chunk_s: float) -> list[str]:
    sizes = NETWORKS[network][0]
    steps = {name: build(sizes, optimizer, fused)[0] for name, fused in FUSED.items()}
    for step in steps.values():
        step()  # the first step makes the state
    calls = max(calls_per_chunk(step, chunk_s) for step in steps.values())
    us: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for repeat in range(repeats):
        for name in names[repeat % 2 :] + names[: repeat % 2]:  # alternate who goes first
            us[name].append(time_calls(steps[name], calls) / calls * 1e6)
    ratios = [f / d for f, d in zip(us["fused"], us["default"], strict=True)]
    same = same_as_torchs_fused(sizes, optimizer, steps=3)
    return [
        network,
        optimizer,
        f"{median(us['default']):.1f}",
        f"{median(us['fused']):.1f}",
        f"{median(ratios):.2f}",
        "✓" if same else "✗",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = timing_arguments(__doc__, 9, "the small network, short chunks").parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    chunk_s = 0.01 if args.quick else 0.1
    networks = ["2-25-25-25-2"] if args.quick else list(NETWORKS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [time_row(n, o, repeats, chunk_s) for n in networks for o in OPTIMIZERS]
    finally:
        torch.set_num_threads(threads)
    header = ["network", "optimizer", "default (us/step)", "fused (us/step)", "fused / default",
              "fused = torch's fused"]  # fmt: skip
    lines = [
        "# nograd's optimizers: fused=True against the default update (CPU, 1 thread)",
        "",
        *machine_lines(torch.device("cpu")),
        f"- median of {repeats} interleaved chunks of >= {chunk_s * 1e3:.0f} ms per variant",
        "",
        *markdown_table(header, rows),
    ]
    print_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

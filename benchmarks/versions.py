"""Two versions of nograd in one process: a git revision against this checkout.

A change that saves 2% of a step is below what separate runs can tell apart on a shared
machine: the same code reads a few percent faster or slower from one process to the
next. So this script imports both versions side by side. It extracts ``src/nograd``
at ``--rev`` (``git archive``) into a temporary folder, renames the package there to
``nograd_old`` (every ``nograd`` word in its files), and imports it beside the
``nograd`` of this checkout.

Each row trains the reference network 2-25-25-25-2 (ReLU, cross-entropy, the
optimizer of ``vs_torch.py``: SGD lr 0.05 with momentum 0.9, or Adam lr 1e-3) on the
disk task's 1000 points at one batch size, from the same weights in each version, as
a user writes the loop (``zero_grad``, forward, loss, ``backward``, ``step`` under
``torch.inference_mode``). The two versions take turns, chunk by chunk (one chunk: a
whole number of epochs of >= 25 ms; the first of each turn alternating); a row gives
each one's median time per step and the median of the per-turn ratios. The last
column says whether both ended with the same parameters, bit for bit: a change that
only makes nograd faster leaves them so. Nothing here is asserted on time.

Usage: python benchmarks/versions.py [--rev HEAD] [--optimizers sgd,adam]
       [--batches 1,10,100,1000] [--repeats 15] [--threads 1] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

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
)
from vs_torch import OPTIMIZERS, disk_points, initial_state

REPO = Path(__file__).resolve().parents[1]
OLD = "nograd_old"  # the package name the revision is imported under
SIZES = (2, 25, 25, 25, 2)
POINTS = 1000
CHUNK_S = 0.025  # each timed chunk lasts at least this long
Batch = tuple[torch.Tensor, torch.Tensor]


def extract(rev: str, into: Path) -> None:
    """``src/nograd`` at ``rev``, as the package ``nograd_old`` in the folder ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "src/nograd"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12, 3.11.4 and later
            tar.extractall(into, filter="data")
        else:  # our own repository's archive: nothing to guard against
            tar.extractall(into)
    (into / "src" / "nograd").rename(into / OLD)
    word = re.compile(r"\bnograd\b")
    for path in (into / OLD).rglob("*.py"):
        path.write_text(word.sub(OLD, path.read_text()))


def import_old(folder: Path) -> ModuleType:
    """The extracted package (``extract``), imported from ``folder``."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(OLD)
    finally:
        sys.path.remove(str(folder))


class Run:
    """One version's model, loss and optimizer on the reference task, from ``init``."""

    def __init__(self, package: str, optimizer: str, init: dict[str, torch.Tensor]) -> None:
        nn = importlib.import_module(f"{package}.nn")
        optim = importlib.import_module(f"{package}.optim")
        layers = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(n_in, n_out))
        self.model = nn.Sequential(*layers)
        self.model.load_state_dict(init)
        self.model.needs_input_grad = False  # as fit sets it
        self.loss_fn = nn.CrossEntropyLoss()
        name, options = OPTIMIZERS[optimizer]
        self.optimizer = getattr(optim, name)(self.model.parameters(), **options)

    def train(self, batches: Sequence[Batch], epochs: int) -> None:
        model, loss_fn, opt = self.model, self.loss_fn, self.optimizer
        with torch.inference_mode():
            for _ in range(epochs):
                for x, y in batches:
                    opt.zero_grad()
                    loss_fn(model(x), y)
                    model.backward(loss_fn.backward())
                    opt.step()

    def parameters(self) -> list[torch.Tensor]:
        return [p.data for p in self.model.parameters()]


def row(optimizer: str, batch: int, repeats: int) -> list[str]:
    """A table row: each version's us/step, new / old, and whether the bits agree."""
    x, y = disk_points(POINTS, torch.Generator().manual_seed(0))
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, POINTS, batch)]
    init = initial_state(SIZES)
    runs = {"old": Run(OLD, optimizer, init), "new": Run("nograd", optimizer, init)}
    for run in runs.values():
        run.train(batches, 1)  # warm up: the first steps plan and flatten
    probe = Run("nograd", optimizer, init)  # sized on a third run: the two take the same steps
    epochs = calls_per_chunk(lambda: probe.train(batches, 1), CHUNK_S)
    steps = epochs * len(batches)
    times: dict[str, list[float]] = {name: [] for name in runs}
    ratios = []
    for turn in range(repeats):
        order = list(runs) if turn % 2 == 0 else list(runs)[::-1]
        chunk = {}
        for name in order:
            start = time.perf_counter()
            runs[name].train(batches, epochs)
            chunk[name] = time.perf_counter() - start
        for name in runs:
            times[name].append(chunk[name] / steps * 1e6)
        ratios.append(chunk["new"] / chunk["old"])
    same = all(
        torch.equal(a, b)
        for a, b in zip(runs["old"].parameters(), runs["new"].parameters(), strict=True)
    )
    return [
        optimizer,
        str(batch),
        f"{median(times['old']):.1f}",
        f"{median(times['new']):.1f}",
        f"{median(ratios):.3f}",
        "✓" if same else "✗ differ",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the old version: a git revision (HEAD)")
    parser.add_argument("--optimizers", type=lambda s: s.split(","), default=["sgd", "adam"])
    parser.add_argument("--batches", type=positive_ints, default=[1, 10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=15, help="turns per row (15)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="batch 1000, 2 turns")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    if any(name not in OPTIMIZERS for name in args.optimizers):
        parser.error(f"--optimizers: each one of {', '.join(OPTIMIZERS)}")
    if args.quick:
        args.batches, args.repeats = [1000], 2
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            extract(args.rev, Path(folder))
            import_old(Path(folder))
            for optimizer in args.optimizers:
                for batch in args.batches:
                    rows.append(row(optimizer, batch, args.repeats))
                    print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(before)
        for name in [m for m in sys.modules if m == OLD or m.startswith(OLD + ".")]:
            del sys.modules[name]
    lines = [*machine_lines(torch.device("cpu")), f"- nograd {nograd.__version__}", ""]
    lines += [
        f"Reference network {'-'.join(map(str, SIZES))}, {args.threads} thread(s): "
        f"old = {args.rev}, new = this checkout; median of {args.repeats} turns",
        "",
    ]
    header = ["optimizer", "batch", "old (us/step)", "new (us/step)", "new / old", "same bits"]
    lines += markdown_table(header, rows)
    print_report(lines, args.out)
    return 0 if all(r[-1] == "✓" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

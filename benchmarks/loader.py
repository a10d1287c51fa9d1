"""nograd's DataLoader against torch's, on a dataset that takes work to read.

Each sample is a 3x32x32 uint8 image, read as a training pipeline reads it: made
float, randomly cropped (4 pixels of padding) and flipped, blurred ``--blur`` times
(work that stands for decoding a file), and normalised, with torch's random numbers.
The loaders are timed over whole epochs of batches of 64, shuffled:

- ``0 workers``: the main process reads every batch;
- ``2 workers, persistent``: two worker processes, started once, read ahead;
- ``2 workers, fresh``: two new workers every epoch (``persistent_workers=False``),
  whose start-up each epoch pays.

Before timing, every setting checks that both loaders give the same batches, to the
bit, from the same seed (the random crops and flips included): the race is honest.
The two libraries take turns, epoch by epoch (the first one alternating), and a row
gives each one's median epoch time and the median of the per-turn ratios. Nothing is
asserted.

Usage: python benchmarks/loader.py [--samples 4096] [--repeats 7] [--blur 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
import torch.utils.data

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
import nograd.data
from _common import machine_lines, markdown_table, median, print_report

BATCH = 64
SETTINGS = {  # name -> the loader options both libraries get
    "0 workers": {"num_workers": 0},
    "2 workers, persistent": {"num_workers": 2, "persistent_workers": True},
    "2 workers, fresh": {"num_workers": 2},
}


class Augmented:
    """Images as a training pipeline reads them: random crop and flip, then normalised."""

    def __init__(self, n: int, blur: int) -> None:
        self.blur = blur
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        self.labels = torch.randint(0, 10, (n,), generator=generator)
        self.mean = torch.tensor([0.49, 0.48, 0.45]).view(3, 1, 1)
        self.std = torch.tensor([0.25, 0.24, 0.26]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index].float().div_(255)
        padded = x.new_zeros(3, 40, 40)  # 4 pixels of zeros on every side
        padded[:, 4:36, 4:36] = x
        top, left = torch.randint(0, 9, (2,)).tolist()
        x = padded[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        for _ in range(self.blur):  # a 3x3 box blur per round: the cost of decoding, say
            x = sum(x.roll((dy, dx), (1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        return (x - self.mean) / self.std, self.labels[index]


def loader(library: str, dataset: Augmented, options: dict[str, Any]) -> Any:
    cls = nograd.data.DataLoader if library == "nograd" else torch.utils.data.DataLoader
    generator = torch.Generator().manual_seed(1)
    return cls(dataset, BATCH, shuffle=True, generator=generator, **options)


def epoch_seconds(data: Any) -> float:
    start = time.perf_counter()
    for _ in data:
        pass
    return time.perf_counter() - start


def same_batches(dataset: Augmented, options: dict[str, Any]) -> bool:
    """Whether both libraries give the same first epoch from the same seeds."""
    epochs = []
    for library in ("nograd", "torch"):
        torch.manual_seed(3)
        epochs.append([tuple(batch) for batch in loader(library, dataset, options)])
    ours, theirs = epochs
    return len(ours) == len(theirs) and all(
        all(torch.equal(a, b) for a, b in zip(mine, other, strict=True))
        for mine, other in zip(ours, theirs, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--blur", type=int, default=0, help="rounds of 3x3 blur per sample")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the workers run one thread each, as torch's
    dataset = Augmented(args.samples, args.blur)
    rows = []
    for name, options in SETTINGS.items():
        equal = same_batches(dataset, options)
        loaders = {library: loader(library, dataset, options) for library in ("nograd", "torch")}
        for data in loaders.values():
            epoch_seconds(data)  # warm-up (and, persistent, the workers' start)
        times: dict[str, list[float]] = {"nograd": [], "torch": []}
        ratios = []
        for turn in range(args.repeats):
            order = ("nograd", "torch") if turn % 2 == 0 else ("torch", "nograd")
            for library in order:
                times[library].append(epoch_seconds(loaders[library]))
            ratios.append(times["nograd"][-1] / times["torch"][-1])
        rows.append([
            name,
            f"{median(times['torch']) * 1e3:.0f}",
            f"{median(times['nograd']) * 1e3:.0f}",
            f"{median(ratios):.2f}",
            "✓" if equal else "✗",
        ])  # fmt: skip
    lines = [
        f"DataLoader, {args.samples} augmented 3x32x32 images ({args.blur} rounds of blur), "
        f"batch {BATCH}, shuffled; "
        f"median of {args.repeats} epochs each, taking turns",
        "",
        *machine_lines(torch.device("cpu")),
        "",
        *markdown_table(
            ["setting", "torch ms/epoch", "nograd ms/epoch", "nograd / torch", "same batches"],
            rows,
        ),
    ]
    print_report(lines, args.out)


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmark scripts: the machine header, timing, tables, memory,
and the backward pass of the minimal loop.

Benchmarks print numbers and ratios; they never assert on time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor


def cpu_model() -> str:
    """The processor's name as /proc/cpuinfo gives it (or platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask), which can be fewer than the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine_lines(device: torch.device) -> list[str]:
    """Markdown lines naming the machine, the software and the date of a run."""
    lines = [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, {usable_cores()} usable",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}",
    ]
    if device.type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)}")
    return lines


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_call(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Wall-clock seconds of ``fn()``, with the device drained before and after."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def time_calls(fn: Callable[[], object], calls: int) -> float:
    """Wall-clock seconds of ``calls`` calls of ``fn()`` in a row, on the CPU."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def calls_per_chunk(fn: Callable[[], object], chunk_s: float) -> int:
    """The fewest calls (a power of 2) of ``fn`` that last at least ``chunk_s`` seconds."""
    calls = 1
    while time_calls(fn, calls) < chunk_s:
        calls *= 2
    return calls


def positive_ints(text: str) -> list[int]:
    """Parse "1,2" for --threads, --batches and the like."""
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2, got {text!r}")
    return values


def timing_arguments(doc: str, repeats: int, quick_help: str) -> argparse.ArgumentParser:
    """A timing script's options: --quick, --repeats (default ``repeats``) and --out."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"timed chunks per variant ({repeats})"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    return parser


def print_report(lines: Sequence[str], out: Path | None) -> None:
    """Print a script's markdown report, and write it to ``out`` as well when given."""
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ratio_text(value: float, target: float | None = None) -> str:
    """A ratio to 2 decimals, or to 3 where 2 would round it onto its target.

    0.363 against a ceiling of 0.36 reads "0.363", not a "0.36" beside a ✗.
    """
    text = f"{value:.2f}"
    if target is not None and value != target and text == f"{target:.2f}":
        return f"{value:.3f}"
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a GitHub markdown table; numeric-looking columns are right-aligned."""

    def numeric(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    align = [
        "---:" if rows and all(numeric(row[i]) for row in rows) else "---"
        for i in range(len(header))
    ]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _status_kib(field: str) -> float | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM), in KiB; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux: write 5 to clear_refs); False if it can't."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def minor_faults() -> int:
    """Minor page faults of this process so far: pages the kernel had to map in."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def rss_mib() -> float:
    """Resident memory now (falls back to the peak where /proc is missing)."""
    kib = _status_kib("VmRSS")
    return peak_rss_mib() if kib is None else kib / 1024


def peak_rss_since_reset_mib() -> float:
    """Peak resident memory since ``reset_peak_rss`` (VmHWM), else since the start."""
    kib = _status_kib("VmHWM")
    return peak_rss_mib() if kib is None else kib / 1024


# --------------------------------------------------------------- the minimal loop
_threshold_backward = torch.ops.aten.threshold_backward.default  # dL/da * [a > 0]


def minimal_backward(g: Tensor, activations: list[Tensor], weights: list[Tensor]) -> list[Tensor]:
    """The minimal loop's backward through its Linear + ReLU layers, as raw torch ops.

    ``g`` is dL/dz of the last layer, ``activations[l]`` the input of layer l + 1 (x
    first), ``weights[l]`` its W of shape (out, in). Returns [dW_1, db_1, dW_2, ...];
    the first layer's dL/dx is never computed.
    """
    grads: list[Tensor] = [g] * (2 * len(weights))  # placeholders, all overwritten below
    for layer in range(len(weights) - 1, -1, -1):
        a = activations[layer]
        grads[2 * layer] = torch.mm(g.t(), a)  # dL/dW = g^T a
        grads[2 * layer + 1] = g.sum(0)  # dL/db = sum_n g_n
        if layer > 0:  # dL/da_{l-1} = (g W) * [a_{l-1} > 0]
            g = _threshold_backward(torch.mm(g, weights[layer]), a, 0)
    return grads

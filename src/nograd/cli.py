"""The ``nograd`` command: ``train`` (the reference experiment), ``evaluate``, ``gradcheck``.

``nograd train`` with no arguments runs the reference experiment of
``nograd.experiment``: the disk task, the 2-25-25-25-2 network and the defaults in
``PRESETS["default"]``, for 10 rounds. The CLI stays thin: it parses, builds a
``TrainConfig`` and calls ``run_rounds``; bad arguments (and a run that diverges) print
one line on stderr and exit with code 2. Training writes ``checkpoint.safetensors``
into the run's folder; Ctrl-C saves one and exits with code 130, and
``nograd train --resume PATH`` continues the run exactly where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, cast

import torch

from nograd.architecture import MAX_FEATURES
from nograd.commands import UsageError, evaluate_command, gradcheck_command
from nograd.config import (
    ACTIVATIONS,
    CPU_MATMULS,
    FUSED_OPTIMIZERS,
    LOSSES,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_HIDDEN_LAYERS,
    MAX_ROUNDS,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_THREADS,
    MAX_WEIGHT_DECAY,
    MIN_SEED,
    OPTIMIZERS,
    OWN_STEP_LR,
    PRESETS,
    SCHEDULES,
    TASKS,
    TORCH_SEEDS,
    TrainConfig,
    check_size,
)
from nograd.data_checks import usable_device
from nograd.experiment import CHECKPOINT_FILE, run_rounds
from nograd.guards import DivergenceError, TrainingInterrupted
from nograd.nn.matmul import CpuMatmul, get_cpu_matmul, set_cpu_matmul
from nograd.resume import read_resume

EXIT_USAGE = 2  # a mistake of the user's, reported in one line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
# Each write costs about 1.5 ms (two fsyncs), a reference epoch about 8 ms; Ctrl-C saves
# at once anyway, so the periodic write only bounds what a crash (kill -9, power) loses.
CHECKPOINT_EVERY = 20
# Below this many multiply-adds in the widest hidden layer's matmul (batch x width x width),
# a step's ops are too small to share among threads: one is faster (benchmarks/threads.py)
ONE_THREAD_MAX_MACS = 2**20


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(high: int, unit: str) -> Callable[[str], int]:
    """A parser of positive integers up to ``high`` (a bound of ``nograd.config``)."""

    def parse(text: str) -> int:
        value = _positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"expected at most {high} {unit}, got {text!r}")
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    """A parser of integers in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer in [{low}, {high}], got {text!r}"
            )
        return value

    return parse


def _number(low: float, high: float = math.inf, open_low: bool = False) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (low < value if open_low else low <= value) or not value < high:
            interval = f"{'(' if open_low else '['}{low:g}, {high:g})"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value

    return parse


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive layer widths such as 25,25,25, got {text!r}"
        )
    if len(sizes) > MAX_HIDDEN_LAYERS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_HIDDEN_LAYERS} hidden layers, got {len(sizes)}"
        )
    if max(sizes) > MAX_FEATURES:
        raise argparse.ArgumentTypeError(
            f"expected layer widths of at most {MAX_FEATURES}, got {max(sizes)}"
        )
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nograd", description=__doc__.splitlines()[0].replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and test over several rounds")
    train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="seed: the original course setup (SGD, MSE); options override it",
    )
    options: list[tuple[str, dict[str, Any]]] = [
        ("--task", {"choices": sorted(TASKS)}),
        ("--n-train", {"type": _count(MAX_SAMPLES, "samples")}),
        ("--n-test", {"type": _count(MAX_SAMPLES, "samples")}),
        ("--hidden", {"type": _hidden, "metavar": "W1,W2,..."}),
        ("--activation", {"choices": sorted(ACTIVATIONS)}),
        ("--loss", {"choices": LOSSES}),
        ("--label-smoothing", {"type": _number(0.0, 1.0), "metavar": "EPS"}),
        ("--optimizer", {"choices": sorted(OPTIMIZERS)}),
        ("--lr", {"type": _number(0.0, open_low=True)}),
        ("--momentum", {"type": _number(0.0, 1.0)}),
        ("--weight-decay", {"type": _number(0.0, MAX_WEIGHT_DECAY), "metavar": "WD"}),
        ("--schedule", {"choices": SCHEDULES}),
        ("--batch-size", {"type": _count(MAX_BATCH_SIZE, "samples"), "metavar": "N"}),
        ("--epochs", {"type": _count(MAX_EPOCHS, "epochs"), "metavar": "N"}),
        ("--rounds", {"type": _count(MAX_ROUNDS, "rounds"), "metavar": "N"}),
        ("--seed", {"type": _integer(MIN_SEED, MAX_SEED)}),
        ("--device", {}),
    ]  # fmt: skip
    defaults = asdict(TrainConfig())
    for flag, kwargs in options:
        default = defaults[flag[2:].replace("-", "_")]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        shown = "0.01 for adamw, else 0" if flag == "--weight-decay" else shown
        shown = f"{shown}, 1.0 for adadelta and lbfgs" if flag == "--lr" else shown
        shown = f"{shown}, all of --n-train for lbfgs" if flag == "--batch-size" else shown
        train.add_argument(flag, **kwargs, help=f"default: {shown}")
    train.add_argument(
        "--clip-grad-norm",
        type=_number(0.0, open_low=True),
        metavar="MAX",
        help="before each step, scale the gradients to a total 2-norm of at most MAX, as "
        "torch.nn.utils.clip_grad_norm_ does (default: no clipping)",
    )
    train.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="(x - mean) / std of the training set (seed preset: on)",
    )
    train.add_argument(
        "--cuda-graph",
        action="store_true",
        default=None,
        help="replay each training step as one CUDA graph (needs --device cuda; sgd, adam "
        "or adamw; the last, partial batch of each epoch is dropped)",
    )
    train.add_argument(
        "--threads",
        type=_count(MAX_THREADS, "threads"),
        metavar="N",
        help="CPU threads (default: 1 for a small network, where more cost more than they "
        f"give; else torch's default, {torch.get_num_threads()} here)",
    )
    train.add_argument(
        "--cpu-matmul",
        choices=CPU_MATMULS,
        help="who computes the large float32 products on the CPU: blas, PyTorch's numbers to "
        "the bit (default); onednn, about twice as fast where torch's BLAS does not use "
        "AVX-512 (MKL on AMD CPUs), and no longer PyTorch's bits (see nograd.set_cpu_matmul)",
    )
    train.add_argument(
        "--fused",
        action="store_true",
        default=None,
        help="update with torch's fused optimizer kernels (sgd, adam, adamw, adagrad): "
        "faster, and torch's fused=True bits, not its default's",
    )
    train.add_argument("--out", type=Path, help="output folder (default: runs/<timestamp>)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or table")
    train.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=CHECKPOINT_EVERY,
        metavar="N",
        help=f"epochs between two writes of OUT/{CHECKPOINT_FILE} (default: {CHECKPOINT_EVERY})",
    )
    train.add_argument(
        "--resume",
        type=Path,
        metavar="PATH",
        help=(
            "continue the run whose checkpoint is PATH with its options, in PATH's folder "
            "(--out, --quiet and --checkpoint-every may be given afresh)"
        ),
    )
    ev = commands.add_parser("evaluate", help="accuracy of a saved model on fresh data")
    ev.add_argument("path", type=Path, help="a model file, such as OUT/model.safetensors")
    ev.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="the data to score on (default: the task the file was trained on, else disk)",
    )
    ev.add_argument(
        "--n", type=_count(MAX_SAMPLES, "samples"), default=1000, help="points (default: 1000)"
    )
    ev.add_argument(
        "--seed",
        type=_integer(*TORCH_SEEDS),
        default=0,
        help="draws the points (default: 0; a round's seed in metrics.json gives its training set)",
    )
    check = commands.add_parser("gradcheck", help="finite-difference check of every module")
    check.add_argument(
        "--seed", type=_integer(*TORCH_SEEDS), default=0, help="draws the inputs (default: 0)"
    )
    return parser


def config_from(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the preset, then every option given explicitly; or the resumed run's."""
    if getattr(args, "resume", None) is not None:
        return _resumed_config(args)
    preset = PRESETS[args.preset or "default"]
    values: dict[str, Any] = {**asdict(TrainConfig()), **preset}
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    optimizer = values["optimizer"]
    if optimizer in OWN_STEP_LR and args.lr is None and "lr" not in preset:
        values["lr"] = OWN_STEP_LR[optimizer]  # it scales a step sized by the optimizer
    if optimizer == "lbfgs" and args.batch_size is None:  # a preset's batches are too small
        values["batch_size"] = values["n_train"]  # L-BFGS needs the whole gradient, not noise
    config = TrainConfig(**values)
    if config.standardize and config.n_train < 2:
        raise UsageError("argument --standardize: needs --n-train of at least 2 (for the std)")
    if config.weight_decay is None:
        config.weight_decay = 0.01 if config.optimizer == "adamw" else 0.0
    if config.momentum and config.optimizer not in ("sgd", "rmsprop"):
        raise UsageError(f"argument --momentum: {config.optimizer} has no momentum option")
    if config.weight_decay and config.optimizer == "lbfgs":
        raise UsageError("argument --weight-decay: lbfgs has no weight_decay option")
    if config.label_smoothing and config.loss != "ce":
        raise UsageError(f"argument --label-smoothing: applies to --loss ce, not {config.loss}")
    try:
        usable_device(config.device, "argument --device")
    except ValueError as error:
        raise UsageError(str(error)) from None
    if config.fused and config.optimizer not in FUSED_OPTIMIZERS:
        raise UsageError(
            f"argument --fused: supports {', '.join(FUSED_OPTIMIZERS)}, not {config.optimizer}"
        )
    if config.cuda_graph and not config.device.startswith("cuda"):
        raise UsageError("argument --cuda-graph: needs --device cuda")
    if config.cuda_graph and config.optimizer not in ("sgd", "adam", "adamw"):
        raise UsageError(
            f"argument --cuda-graph: supports sgd, adam and adamw, not {config.optimizer}"
        )
    try:
        check_size(config, "argument --hidden")
    except ValueError as error:
        raise UsageError(str(error)) from None
    return config


def _resumed_config(args: argparse.Namespace) -> TrainConfig:
    given = [f.name for f in fields(TrainConfig) if getattr(args, f.name, None) is not None]
    given += ["preset"] if args.preset is not None else []
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(
            f"argument --resume: the run's options come from its checkpoint; drop {flag}"
        )
    if not args.resume.is_file():
        raise UsageError(f"argument --resume: no such file {str(args.resume)!r}")
    config = read_resume(args.resume).config  # a ValueError names what is wrong with the file
    try:
        usable_device(config.device, "")
    except ValueError:
        raise UsageError(
            f"argument --resume: the run trained on {config.device}, not available here"
        ) from None
    return config


def threads_for(config: TrainConfig, default: int) -> int:
    """The CPU threads to train with: 1 for a small network, else ``default`` (torch's).

    A step of the 25-wide reference network is a few dozen tiny ops; splitting each
    among threads costs more in hand-offs than it saves, so one thread is fastest. The
    size that counts is the widest hidden layer's matmul, batch x width x width
    multiply-adds: below ``ONE_THREAD_MAX_MACS``, one thread.
    """
    widest = max(config.hidden, default=0)
    small = config.batch_size * widest * widest < ONE_THREAD_MAX_MACS
    return 1 if small else default


def _default_out() -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out, suffix = Path("runs") / stamp, 1
    while out.exists():
        out, suffix = Path("runs") / f"{stamp}-{suffix}", suffix + 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Run ``nograd`` with ``argv`` (default: sys.argv[1:]); return the exit code."""
    threads, cpu_matmul = torch.get_num_threads(), get_cpu_matmul()
    out: Path | None = None
    try:
        args = build_parser().parse_args(argv)
        if args.command == "evaluate":
            return evaluate_command(args)
        if args.command == "gradcheck":
            return gradcheck_command(args)
        config = config_from(args)
        out = args.out or (args.resume.parent if args.resume else _default_out())
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(
                f"argument --out: cannot create {str(out)!r}: {error.strerror}"
            ) from None
        torch.set_num_threads(config.threads or threads_for(config, threads))
        _set_cpu_matmul(config.cpu_matmul)
        run_rounds(config, out, args.quiet, args.checkpoint_every, args.resume)
        return 0
    except (UsageError, ValueError, DivergenceError) as error:
        print(f"nograd: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as interrupt:
        _report_interrupt(interrupt, out)
        return EXIT_INTERRUPTED
    except SystemExit as exit:  # --help
        return exit.code if isinstance(exit.code, int) else 0
    finally:
        torch.set_num_threads(threads)
        set_cpu_matmul(cpu_matmul)


def _set_cpu_matmul(backend: str) -> None:
    try:
        set_cpu_matmul(cast(CpuMatmul, backend))  # one of CPU_MATMULS, checked
    except RuntimeError as error:  # no oneDNN in this torch
        raise UsageError(f"argument --cpu-matmul: {error}") from None


def _report_interrupt(interrupt: KeyboardInterrupt, out: Path | None) -> None:
    """One line on stderr: where the checkpoint is and how to resume from it."""
    if isinstance(interrupt, TrainingInterrupted):
        checkpoint = interrupt.checkpoint
    else:  # Ctrl-C between two rounds, or while writing the figures
        candidate = None if out is None else out / CHECKPOINT_FILE
        checkpoint = candidate if candidate is not None and candidate.is_file() else None
    if checkpoint is None:
        print("nograd: interrupted before the first checkpoint was written", file=sys.stderr)
    else:
        print(
            f"interrupted: checkpoint saved to {checkpoint} "
            f"(resume with: nograd train --resume {checkpoint})",
            file=sys.stderr,
        )

"""The ``nograd`` command: ``train`` (the reference experiment), ``evaluate``, ``gradcheck``.

``nograd train`` with no arguments runs the reference experiment of
``nograd.experiment``: the disk task, the 2-25-25-25-2 network and the defaults in
``PRESETS["default"]``, for 10 rounds. The CLI stays thin: it parses, builds a
``TrainConfig`` and calls ``run_rounds``; bad arguments print one line on stderr and
exit with code 2.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from nograd.experiment import (
    ACTIVATIONS,
    LOSSES,
    OPTIMIZERS,
    PRESETS,
    SCHEDULES,
    TASKS,
    TrainConfig,
    run_rounds,
    saved_model_accuracy,
)
from nograd.nn import Linear, Module, Sequential, activations, cross_entropy, losses


class UsageError(Exception):
    """A mistake of the user's: reported as one line, exit code 2."""


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
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nograd", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and test over several rounds")
    train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="seed: the original course setup (SGD, MSE); options override it",
    )
    options: list[tuple[str, dict[str, Any]]] = [
        ("--task", {"choices": sorted(TASKS)}),
        ("--n-train", {"type": _positive_int}),
        ("--n-test", {"type": _positive_int}),
        ("--hidden", {"type": _hidden, "metavar": "W1,W2,..."}),
        ("--activation", {"choices": sorted(ACTIVATIONS)}),
        ("--loss", {"choices": LOSSES}),
        ("--label-smoothing", {"type": _number(0.0, 1.0), "metavar": "EPS"}),
        ("--optimizer", {"choices": sorted(OPTIMIZERS)}),
        ("--lr", {"type": _number(0.0, open_low=True)}),
        ("--momentum", {"type": _number(0.0, 1.0)}),
        ("--weight-decay", {"type": _number(0.0), "metavar": "WD"}),
        ("--schedule", {"choices": SCHEDULES}),
        ("--batch-size", {"type": _positive_int, "metavar": "N"}),
        ("--epochs", {"type": _positive_int, "metavar": "N"}),
        ("--rounds", {"type": _positive_int, "metavar": "N"}),
        ("--seed", {"type": int}),
        ("--device", {}),
    ]  # fmt: skip
    defaults = asdict(TrainConfig())
    for flag, kwargs in options:
        default = defaults[flag[2:].replace("-", "_")]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        shown = "0.01 for adamw, else 0" if flag == "--weight-decay" else shown
        train.add_argument(flag, **kwargs, help=f"default: {shown}")
    train.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="(x - mean) / std of the training set (seed preset: on)",
    )
    train.add_argument("--out", type=Path, help="output folder (default: runs/<timestamp>)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or table")
    ev = commands.add_parser("evaluate", help="accuracy of a saved model on fresh data")
    ev.add_argument("path", type=Path)
    ev.add_argument("--task", choices=sorted(TASKS), default="disk")
    ev.add_argument("--n", type=_positive_int, default=1000)
    ev.add_argument("--seed", type=int, default=0)
    check = commands.add_parser("gradcheck", help="finite-difference check of every module")
    check.add_argument("--seed", type=int, default=0)
    return parser


def config_from(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the preset, then every option given explicitly."""
    values: dict[str, Any] = {**asdict(TrainConfig()), **PRESETS[args.preset]}
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    config = TrainConfig(**values)
    if config.rounds > 1000:  # round seeds are 1000 * seed + round
        raise UsageError(f"argument --rounds: expected at most 1000, got {config.rounds}")
    if config.standardize and config.n_train < 2:
        raise UsageError("argument --standardize: needs --n-train of at least 2 (for the std)")
    if config.weight_decay is None:
        config.weight_decay = 0.01 if config.optimizer == "adamw" else 0.0
    if config.momentum and config.optimizer not in ("sgd", "rmsprop"):
        raise UsageError(f"argument --momentum: {config.optimizer} has no momentum option")
    if config.label_smoothing and config.loss != "ce":
        raise UsageError(f"argument --label-smoothing: applies to --loss ce, not {config.loss}")
    try:
        torch.device(config.device)
    except RuntimeError:
        raise UsageError(f"argument --device: unknown device {config.device!r}") from None
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"argument --device: {config.device} is not available on this machine")
    return config


def _default_out() -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out, suffix = Path("runs") / stamp, 1
    while out.exists():
        out, suffix = Path("runs") / f"{stamp}-{suffix}", suffix + 1
    return out


def evaluate_command(args: argparse.Namespace) -> int:
    """Accuracy of a saved model on ``n`` fresh points drawn with ``seed``."""
    if not args.path.is_file():
        raise UsageError(f"argument path: no such file {str(args.path)!r}")
    accuracy = saved_model_accuracy(args.path, args.task, args.n, args.seed)
    where = f"{args.n} fresh {args.task} points (seed {args.seed})"
    print(f"{args.path}: accuracy {100 * accuracy:.2f}% on {where}")
    return 0


def gradcheck_cases(seed: int) -> list[tuple[str, Module, tuple[Any, ...]]]:
    """Every module and loss of nograd.nn, on small random float64 inputs."""
    from nograd.nn.dropout import Dropout

    g = torch.Generator().manual_seed(seed)
    x, pred = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(2))
    target = torch.rand(4, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (4,), generator=g)
    torch.manual_seed(seed)  # the layers' initial weights
    smoothing = 0.1
    return [
        ("Linear(3, 2)", Linear(3, 2), (x,)),
        *[(f"{cls.__name__}()", cls(), (x,)) for cls in ACTIVATIONS.values()],
        ("Softmax(dim=1)", activations.Softmax(dim=1), (x,)),
        ("Identity()", activations.Identity(), (x,)),
        ("Dropout(p=0.5)", Dropout(p=0.5), (x,)),
        ("Sequential(Linear, Tanh, Linear)",
         Sequential(Linear(3, 5), activations.Tanh(), Linear(5, 2)), (x,)),
        ("MSELoss()", losses.MSELoss(), (pred, target)),
        ("L1Loss()", losses.L1Loss(), (pred, target)),
        ("BCEWithLogitsLoss()", losses.BCEWithLogitsLoss(), (pred, target)),
        ("CrossEntropyLoss()", cross_entropy.CrossEntropyLoss(), (pred, labels)),
        (f"CrossEntropyLoss(label_smoothing={smoothing})",
         cross_entropy.CrossEntropyLoss(label_smoothing=smoothing), (pred, labels)),
    ]  # fmt: skip


def gradcheck_command(args: argparse.Namespace) -> int:
    """One line per module: the worst |analytic - numeric| and pass/fail; exit 1 on a failure."""
    from nograd.gradcheck import gradcheck

    cases = gradcheck_cases(args.seed)
    width = max(len(name) for name, _, _ in cases)
    print(f"{'module':<{width}}  {'max abs error':>13}  result")
    all_ok = True
    for name, module, inputs in cases:
        result = gradcheck(module, *inputs)
        error = max((check.max_abs_error for check in result.checks), default=0.0)
        all_ok &= result.ok
        print(f"{name:<{width}}  {error:>13.3e}  {'pass' if result.ok else 'FAIL'}")
    print("all passed" if all_ok else "some checks FAILED")
    return 0 if all_ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run ``nograd`` with ``argv`` (default: sys.argv[1:]); return the exit code."""
    threads = torch.get_num_threads()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "evaluate":
            return evaluate_command(args)
        if args.command == "gradcheck":
            return gradcheck_command(args)
        config = config_from(args)
        out = args.out or _default_out()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(
                f"argument --out: cannot create {str(out)!r}: {error.strerror}"
            ) from None
        torch.set_num_threads(1)  # a 25-wide network: more threads cost more than they give
        run_rounds(config, out, quiet=args.quiet)
        return 0
    except (UsageError, ValueError) as error:
        print(f"nograd: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit:  # --help
        return exit.code if isinstance(exit.code, int) else 0
    finally:
        torch.set_num_threads(threads)

"""The ``nograd evaluate`` and ``nograd gradcheck`` commands (``nograd.cli`` parses them)."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from nograd.config import ACTIVATIONS
from nograd.experiment import MODEL_FILE, saved_model_accuracy
from nograd.nn import Linear, Module, Sequential, activations, cross_entropy, losses


class UsageError(Exception):
    """A mistake of the user's: reported as one line, exit code 2."""


def evaluate_command(args: argparse.Namespace) -> int:
    """Accuracy of a saved model on ``n`` fresh points drawn with ``seed``, from ``task``
    or (None) the task the model was trained on, as its file says."""
    if args.path.is_dir():
        inside = args.path / MODEL_FILE
        hint = f"; pass the model file in it, {str(inside)!r}" if inside.is_file() else ""
        raise UsageError(f"argument path: {str(args.path)!r} is a folder, not a file{hint}")
    if not args.path.is_file():
        raise UsageError(f"argument path: no such file {str(args.path)!r}")
    try:
        accuracy, task = saved_model_accuracy(args.path, args.task, args.n, args.seed)
    except (TypeError, RuntimeError) as error:  # a model that loads but cannot run (dtypes)
        reason = str(error).strip().splitlines() or [type(error).__name__]
        raise UsageError(f"{args.path}: cannot evaluate the model it holds: {reason[0]}") from None
    where = f"{args.n} fresh {task} points (seed {args.seed})"
    print(f"{args.path}: accuracy {100 * accuracy:.2f}% on {where}")
    return 0


def gradcheck_cases(seed: int) -> list[tuple[str, Module, tuple[Any, ...]]]:
    """Every module and loss of nograd.nn, on small random float64 inputs."""
    from nograd.nn.batch_norm import BatchNorm1d
    from nograd.nn.binary_cross_entropy import BCELoss, BCEWithLogitsLoss
    from nograd.nn.dropout import Dropout
    from nograd.nn.flatten import Flatten, Unflatten
    from nograd.nn.huber import HuberLoss, SmoothL1Loss
    from nograd.nn.layer_norm import LayerNorm
    from nograd.nn.log_softmax import LogSoftmax
    from nograd.nn.nll_loss import NLLLoss
    from nograd.nn.smooth_activations import Softplus

    g = torch.Generator().manual_seed(seed)
    x, pred = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(2))
    target = torch.rand(4, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (4,), generator=g)
    sequence = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)  # (N, C, L)
    sequence_labels = torch.randint(0, 3, (2, 5), generator=g)
    probabilities = torch.softmax(target, 1)
    torch.manual_seed(seed)  # the layers' initial weights
    smoothing = 0.1
    return [
        ("Linear(3, 2)", Linear(3, 2), (x,)),
        *[(f"{cls.__name__}()", cls(), (x,)) for cls in ACTIVATIONS.values()],
        ("Softmax(dim=1)", activations.Softmax(dim=1), (x,)),
        ("LogSoftmax(dim=1)", LogSoftmax(dim=1), (x,)),
        ("Softplus(beta=2.0)", Softplus(beta=2.0), (x,)),
        ("Identity()", activations.Identity(), (x,)),
        ("Flatten(), on (N, C, L)", Flatten(), (sequence,)),
        ("Unflatten(1, (3, 1))", Unflatten(1, (3, 1)), (x,)),
        ("Dropout(p=0.5)", Dropout(p=0.5), (x,)),
        ("LayerNorm(3)", LayerNorm(3), (x,)),
        ("BatchNorm1d(3), training", BatchNorm1d(3), (x,)),
        ("BatchNorm1d(3), on (N, C, L)", BatchNorm1d(3), (sequence,)),
        ("Sequential(Linear, Tanh, Linear)",
         Sequential(Linear(3, 5), activations.Tanh(), Linear(5, 2)), (x,)),
        ("MSELoss()", losses.MSELoss(), (pred, target)),
        ("L1Loss()", losses.L1Loss(), (pred, target)),
        ("HuberLoss()", HuberLoss(), (pred, target)),
        ("SmoothL1Loss(beta=0.5)", SmoothL1Loss(beta=0.5), (pred, target)),
        ("BCELoss()", BCELoss(), (torch.sigmoid(pred), target)),
        ("BCEWithLogitsLoss()", BCEWithLogitsLoss(), (pred, target)),
        ("CrossEntropyLoss()", cross_entropy.CrossEntropyLoss(), (pred, labels)),
        (f"CrossEntropyLoss(label_smoothing={smoothing})",
         cross_entropy.CrossEntropyLoss(label_smoothing=smoothing), (pred, labels)),
        ("CrossEntropyLoss(), on (N, C, L)", cross_entropy.CrossEntropyLoss(),
         (sequence, sequence_labels)),
        ("CrossEntropyLoss(), class probabilities", cross_entropy.CrossEntropyLoss(),
         (pred, probabilities)),
        ("NLLLoss()", NLLLoss(), (torch.log_softmax(pred, 1), labels)),
        ("NLLLoss(weight), on (N, C, L)",
         NLLLoss(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)),
         (torch.log_softmax(sequence, 1), sequence_labels)),
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

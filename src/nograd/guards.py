"""What stops a training run cleanly: a loss that is no longer finite, and Ctrl-C.

**Divergence.** A loss of nan or inf means the weights have left the region where
the arithmetic means anything; every later step only spreads the damage. How
``fit`` notices depends on where it trains:

- on the CPU, each step's loss is read (``loss.item()``, well under a microsecond,
  with no device to wait for) and ``fit`` raises ``DivergenceError`` before that
  step's backward, so the parameters stay those of the last good step;
- on an accelerator, a read per step would make the host wait for the device at
  every step. Each step copies its loss into a per-epoch buffer instead (one
  asynchronous copy), and the buffer is read once, at the end of the epoch, where
  ``fit`` reads the epoch's loss anyway. The error names the first bad step all the
  same; the parameters have taken a few more steps by then, so ``fit`` puts back
  those of the last checkpoint it wrote, if it wrote one.

Either way no checkpoint is written after a non-finite loss (and none holding a
non-finite parameter), so the last good one on disk survives. An update holding a
number the parameters' dtype cannot represent (an lr of 1e300 in float32) raises the
same ``DivergenceError`` (``EpochLoop._raise_if_overflow`` in ``nograd.loop``).

**Interrupts.** ``InterruptGuard`` turns the first Ctrl-C into a request that the
loop honours between two steps, where the model, the optimizer and the generators
agree with each other and can be saved; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch
from torch import Tensor

LOWER_LR = "a lower learning rate"  # what a DivergenceError suggests, unless told otherwise


class DivergenceError(RuntimeError):
    """The loss (or a parameter, or an update) became nan or inf: training stopped.

    The message ends with ``remedy``, what to try next (``LOWER_LR`` by default).

    Attributes:
        epoch, step: where it was first seen, both counted from 1.
        value: the non-finite value (nan, inf or -inf).
        checkpoint: the last good checkpoint on disk, if any was written.
    """

    def __init__(
        self,
        what: str,
        value: float,
        epoch: int,
        step: int,
        lr: float,
        checkpoint: Path | None,
        remedy: str = LOWER_LR,
    ) -> None:
        self.epoch, self.step, self.value, self.checkpoint = epoch, step, value, checkpoint
        where = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint"
        super().__init__(
            f"fit: {what} became {value} at epoch {epoch}, step {step} (lr {lr:g}); "
            f"training stopped ({where}); try {remedy}"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``fit``; ``checkpoint`` is where to resume from (None: nowhere yet).

    Attributes:
        checkpoint: the file to pass to ``fit(resume_from=...)``.
        saved_now: True if it was written at the interruption (between two steps),
            False if it is the last one written before (an interrupt that came from
            elsewhere than the first Ctrl-C cannot be trusted to leave a consistent
            state, so nothing newer is written).
    """

    def __init__(self, checkpoint: Path | None, saved_now: bool) -> None:
        self.checkpoint, self.saved_now = checkpoint, saved_now
        super().__init__(f"interrupted; checkpoint: {checkpoint}")


class InterruptGuard:
    """Inside ``with``: the first Ctrl-C (SIGINT) sets ``requested``; a second one raises.

    Installed only where it can be (the main thread) and should be (SIGINT still has
    Python's default handler, not one of the caller's); otherwise ``requested`` stays
    False and Ctrl-C raises ``KeyboardInterrupt`` as usual.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.requested = False
        self._installed = False

    def __enter__(self) -> InterruptGuard:
        self.requested = False
        main = threading.current_thread() is threading.main_thread()
        if self.enabled and main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        self.requested = True

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._installed = False


class LossWatch:
    """Checks every step's loss on the CPU: ``check`` raises at the first bad one."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer  # its lr goes into the message
        self.epoch = 0  # 1-based, set by ``start_epoch``
        self.checkpoint: Path | None = None  # the last good one, named in the error

    def start_epoch(self, epoch: int, steps: int | None) -> None:
        """Epoch ``epoch`` (from 1) starts; it has ``steps`` steps (None: not known)."""
        self.epoch = epoch

    def check(self, loss: Tensor, step: int) -> None:
        value = loss.item()
        if not math.isfinite(value):
            raise self.error(step + 1, value)

    def flush(self) -> None:
        """Raise for a non-finite loss not reported yet: none here, each step was checked."""

    def error(
        self, step: int, value: float, what: str = "the loss", remedy: str = LOWER_LR
    ) -> DivergenceError:
        """The ``DivergenceError`` for ``what`` at ``step`` (from 1) of the current epoch."""
        lr = float(self.optimizer.param_groups[0]["lr"])
        return DivergenceError(what, value, self.epoch, step, lr, self.checkpoint, remedy)


class DeferredLossWatch(LossWatch):
    """Copies every step's loss into a buffer, without waiting, and reads it per epoch."""

    def __init__(self, optimizer: Any, device: torch.device) -> None:
        super().__init__(optimizer)
        self.device = device
        self.losses = torch.empty(0, device=device)
        self.last = -1

    def start_epoch(self, epoch: int, steps: int | None) -> None:
        self.epoch = epoch
        if steps is not None and self.losses.numel() < steps:
            self.losses = torch.empty(steps, device=self.device, dtype=torch.float64)
        self.losses.fill_(0.0)  # skipped steps of a resumed epoch count as good
        self.last = -1

    def check(self, loss: Tensor, step: int) -> None:
        if step >= self.losses.numel():  # a stream of no known length: make room
            grown = torch.zeros(2 * step + 2, device=self.device, dtype=torch.float64)
            grown[: self.losses.numel()].copy_(self.losses)
            self.losses = grown
        self.losses[step].copy_(loss)  # asynchronous: no wait for the device
        self.last = step

    def flush(self) -> None:
        """Raise DivergenceError naming the epoch's first non-finite loss so far, if any."""
        losses = self.losses[: self.last + 1]
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):  # the epoch's one read of the device
            first = int(bad.nonzero()[0, 0])
            raise self.error(first + 1, float(losses[first]))


def loss_watch(optimizer: Any, device: torch.device) -> LossWatch:
    """The watch that suits ``device``: per step on the CPU, per epoch elsewhere."""
    if device.type == "cpu":
        return LossWatch(optimizer)
    return DeferredLossWatch(optimizer, device)


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """True if no element of any tensor is nan or inf (one read of the device)."""
    flat = [tensor.reshape(-1) for tensor in tensors if tensor.is_floating_point()]
    return not flat or bool(torch.isfinite(torch.cat(flat)).all())

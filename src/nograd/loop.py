"""One epoch of ``fit``: the training step, and what happens between steps and epochs.

Between two steps the loop may stop: at a non-finite loss or an update the
parameters' dtype cannot hold (``nograd.guards``), or at Ctrl-C, after saving a
checkpoint where the model, the optimizer and the generators agree. At the end of an
epoch it measures the test data, steps the scheduler (a ReduceLROnPlateau with the
test loss), and writes a checkpoint (``nograd.checkpoint``) every ``every`` epochs,
never one holding a non-finite parameter.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nograd.checkpoint import CheckpointWriter, Progress, capture_rng, generators, restore_rng
from nograd.cuda_graph import GraphedTrainStep
from nograd.data import DataLoader
from nograd.data_checks import batches_per_epoch
from nograd.guards import InterruptGuard, TrainingInterrupted, all_finite, loss_watch
from nograd.metrics import History, _evaluate, sum_dtype
from nograd.nn.losses import Loss
from nograd.nn.module import Module
from nograd.nn.utils.clip_grad import clip_grad_norm_
from nograd.optim import Optimizer
from nograd.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from nograd.optim.optimizer import in_model_order, optimized_parameters
from nograd.targets import TargetTransform, predict_classes, skipped_by, weight_of


class EpochLoop:
    """The state of one ``fit``: what each epoch reads and what it leaves behind.

    ``fit`` sets ``writer`` (and ``every``) to checkpoint, ``history`` and ``last_good``
    when it resumes, and calls ``run_epoch`` once per epoch.
    """

    def __init__(
        self,
        model: Module,
        loss_fn: Loss,
        optimizer: Optimizer,
        scheduler: LRScheduler | None,
        scheduler_interval: str,
        loader: DataLoader[Any],
        test_loader: DataLoader[Any] | None,
        target_transform: TargetTransform | None,
        device: torch.device,
        dtype: torch.dtype,
        epochs: int,
    ) -> None:
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.scheduler, self.per_step = scheduler, scheduler_interval == "step"
        self.loader, self.test_loader, self.target_transform = loader, test_loader, target_transform
        self.device, self.dtype, self.epochs = device, dtype, epochs
        # the test loader's too: one that shuffles sums the test loss in its own order
        tested = {} if test_loader is None else test_loader.generators()
        loaders = {**loader.generators(), **{f"test.{k}": g for k, g in tested.items()}}
        self.named = generators(model, loaders)
        self.watch = loss_watch(optimizer, device)
        self.writer: CheckpointWriter | None = None
        self.every = 1
        self.guard = InterruptGuard()
        self.last_good: Path | None = None  # a checkpoint to resume from
        self.history = History()
        self.cuda_graph = False  # replay each step as one CUDA graph (fit's cuda_graph)
        self.clip_grad_norm: float | None = None  # fit's clip_grad_norm
        # whose gradients clip_grad_norm scales, in the model's order (in_model_order)
        self.clipped = in_model_order(optimized_parameters(optimizer), model.parameters())
        self.ignored: int | None = None  # a label the loss skips, where samples carry it
        self.weight: Tensor | None = None  # the loss's class weights (``class_weights``)
        self.graphed: GraphedTrainStep | None = None
        self.non_blocking = loader.pin_memory and device.type == "cuda"  # copies from pinned

    def run_epoch(self, epoch: int, resumed: Progress | None) -> None:
        """Train epoch ``epoch`` (from 0), from its start or from where ``resumed`` stopped."""
        model, loss_fn, optimizer, loader = self.model, self.loss_fn, self.optimizer, self.loader
        device, dtype, transform, watch = self.device, self.dtype, self.target_transform, self.watch
        scheduler = self.scheduler if self.per_step else None
        guard, history, ignored, weight = self.guard, self.history, self.ignored, self.weight
        summed = sum_dtype(dtype)  # float32 at least: a half-precision sum loses the loss
        widen = summed != dtype  # each step's loss cast first (else a no-op .to() a step)
        weight_sum = torch.zeros((), device=device, dtype=summed)  # sum_i w_{y_i}, with weights
        seen: int | Tensor  # the samples counted so far: a tensor once some are ignored
        start_time = time.perf_counter()
        if resumed is not None and resumed.step > 0:  # replay the shuffle, skip the done steps
            batches, rng_epoch = self._skip_done_steps(resumed, weight_sum), resumed.rng_epoch
            first, seen = resumed.step, resumed.seen
            loss_sum = resumed.loss_sum.to(device=device, dtype=summed)
            correct = resumed.correct.to(device)
        else:
            rng_epoch = capture_rng(self.named, device) if self.writer else {}
            history.lr.append(_current_lr(optimizer))
            batches, first, seen = iter(loader), 0, 0
            loss_sum = torch.zeros((), device=device, dtype=summed)
            correct = torch.zeros((), device=device, dtype=torch.long)
        watch.start_epoch(epoch + 1, batches_per_epoch(loader))
        model.train()
        predicted: list[Tensor] = []  # each step's predicted classes and labels, compared
        labels: list[Tensor] = []  # once per epoch: one op a step instead of four
        kept: list[Tensor] = []  # with ignored labels: which samples count
        steps = first  # steps taken this epoch
        for step, (x, y) in enumerate(batches, first):
            # From pinned batches the copies to a GPU need not wait: the next batch's
            # copy overlaps this step (``nograd.data.pin_memory``)
            x = x.to(device=device, dtype=dtype, non_blocking=self.non_blocking)
            y = y.to(device, non_blocking=self.non_blocking)
            target = y if transform is None else transform(y)
            skipped = None if ignored is None else skipped_by(target, ignored)
            # which samples the loss's mean is over, and how many
            counted_mask = None if skipped is None else ~skipped
            n_counted = None if counted_mask is None else counted_mask.sum()
            taken = self._train_step(x, target, step, n_counted)
            if taken is None:
                continue  # a graph replays one shape: the last, partial batch is dropped
            output, loss = taken
            if scheduler is not None:
                scheduler.step()
            if n_counted is None and weight is None:
                loss_sum.add_(loss, alpha=y.shape[0])  # kept as tensors: no device sync per step
                seen += y.shape[0]
            else:  # the loss is the mean over the counted samples, weighted by w_{y_i} if given
                n_in_mean = y.shape[0] if n_counted is None else n_counted
                if weight is None:
                    loss_sum.add_((loss.to(summed) if widen else loss) * n_in_mean)
                else:
                    weighs = weight_of(target, ignored, weight)  # the mean's denominator
                    loss_sum.add_((loss.to(summed) if widen else loss) * weighs)
                    weight_sum += weighs
                seen = seen + n_in_mean  # a tensor where a count is: no device sync per step
            predicted.append(predict_classes(output, loss_fn))
            labels.append(y)
            if counted_mask is not None:
                kept.append(counted_mask)
            steps = step + 1
            if guard.requested:  # Ctrl-C: save between two steps, where all agrees
                correct = _add_hits(correct, predicted, labels, kept)
                done = Progress(epoch, step + 1, int(seen), loss_sum, correct, history.to_dict(),
                                capture_rng(self.named, device), rng_epoch)  # fmt: skip
                self.save(done, step + 1)
        watch.flush()
        correct = _add_hits(correct, predicted, labels, kept)
        count = float(seen)
        total = count if weight is None else float(weight_sum)  # the mean loss's denominator
        history.train_loss.append(float(loss_sum) / total if total else math.nan)
        history.train_acc.append(int(correct) / count if count else math.nan)
        self._end_epoch(epoch, steps, start_time)

    def _skip_done_steps(self, resumed: Progress, weight_sum: Tensor) -> Iterator[Any]:
        """The epoch's batches after the ``resumed.step`` done ones, drawn as the stopped
        run drew them.

        The done batches are taken under the epoch's first state: the loader draws (as
        torch's) at iter(), the first next() and after its last full batch, and
        ``resumed.rng`` already holds what those batches drew. Their class weights,
        which the checkpoint lacks, are added to ``weight_sum``.
        """
        device, transform, weight = self.device, self.target_transform, self.weight
        restore_rng(resumed.rng_epoch, self.named, device)
        batches = iter(self.loader)
        for _, y_done in itertools.islice(batches, resumed.step):
            if weight is not None:
                y_done = y_done.to(device)
                target_done = y_done if transform is None else transform(y_done)
                weight_sum += weight_of(target_done, self.ignored, weight)
        restore_rng(resumed.rng, self.named, device)
        return batches

    def _train_step(
        self, x: Tensor, target: Tensor, step: int, n_counted: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        """One training step on a batch: its output and loss (the mean over the counted
        samples, 0 if none counts), or None for a batch a CUDA graph cannot replay."""
        model, loss_fn, optimizer, watch = self.model, self.loss_fn, self.optimizer, self.watch
        if self.cuda_graph:
            if self.graphed is None:
                self.graphed = GraphedTrainStep(
                    model, loss_fn, optimizer, x, target, clip_grad_norm=self.clip_grad_norm
                )
            if x.shape != self.graphed.input_shape:
                return None
            # the lines below (zero_grad, forward, loss, backward, clipping, step), replayed
            # as one graph
            loss = self.graphed(x, target)
            output = self.graphed.output
            loss = loss if n_counted is None else _counted(loss, n_counted)
            watch.check(loss, step)
            return output, loss
        if optimizer.needs_closure:  # LBFGS: step() runs the step's lines itself
            return self._step_with_closure(x, target, step, n_counted)
        optimizer.zero_grad()
        output = model(x)  # each layer saves what its backward needs
        loss = loss_fn(output, target)
        loss = loss if n_counted is None else _counted(loss, n_counted)
        watch.check(loss, step)  # stops before a non-finite loss reaches the weights
        model.backward(loss_fn.backward())  # dL/d(output), then the chain rule
        if self.clip_grad_norm is not None:  # the optimizer's gradients as one vector
            clip_grad_norm_(self.clipped, self.clip_grad_norm)
        try:  # an inline try costs nothing when nothing is raised (a with block would)
            optimizer.step()
        except RuntimeError as error:
            self._raise_if_overflow(error, step)
            raise
        return output, loss

    def _end_epoch(self, epoch: int, steps: int, start_time: float) -> None:
        """After the last step: the test data, the scheduler's epoch step, the epoch's
        time, and a checkpoint every ``every`` epochs (at the last, or at Ctrl-C)."""
        history, scheduler = self.history, self.scheduler
        if self.test_loader is not None:
            test_loss, test_acc = _evaluate(
                self.model, self.loss_fn, self.test_loader, self.target_transform, self.device,
                self.dtype,
            )  # fmt: skip
            history.test_loss.append(test_loss)
            history.test_acc.append(test_acc)
        if isinstance(scheduler, ReduceLROnPlateau):  # fit checked: per epoch, test data
            scheduler.step(history.test_loss[-1])
        elif scheduler is not None and not self.per_step:
            scheduler.step()
        history.seconds.append(time.perf_counter() - start_time)
        if self.writer is not None and (
            (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs or self.guard.requested
        ):
            zero = torch.zeros(())
            done = Progress(epoch + 1, 0, 0, zero, zero.long(), history.to_dict(),
                            capture_rng(self.named, self.device))  # fmt: skip
            self.save(done, steps)

    def _step_with_closure(
        self, x: Tensor, target: Tensor, step: int, n_counted: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """One step of an optimizer that evaluates the loss itself, as often as it needs
        (LBFGS): the lines of a step, as its closure. The output and loss of the first
        call, at the parameters the step starts from, are what the epoch counts, as for
        every other optimizer."""
        model, loss_fn, optimizer = self.model, self.loss_fn, self.optimizer
        first: list[tuple[Tensor, Tensor]] = []

        def closure() -> Any:  # the loss tensor; step() reads float(loss)
            optimizer.zero_grad()
            output = model(x)
            loss = loss_fn(output, target)
            if not first:  # the step's own loss: a later one may come from a trial point
                step_loss = loss if n_counted is None else _counted(loss, n_counted)
                self.watch.check(step_loss, step)
                first.append((output, step_loss))  # its loss: 0 when no sample counts
            model.backward(loss_fn.backward())
            if self.clip_grad_norm is not None:
                clip_grad_norm_(self.clipped, self.clip_grad_norm)
            return loss  # step() reads the loss as torch's LBFGS would: 0 / 0 when none counts

        try:  # as in _train_step: an update beyond the dtype becomes a DivergenceError
            optimizer.step(closure)
        except RuntimeError as error:
            self._raise_if_overflow(error, step)
            raise
        return first[0]

    def _raise_if_overflow(self, error: RuntimeError, step: int) -> None:
        """Raise a ``DivergenceError`` in place of torch's error for an update the
        parameters' dtype cannot hold; return, for any other error, to let it through.

        An lr or a weight decay far too large puts a factor of the update beyond the
        dtype's range (-lr in p - lr * g past float32's 3.4e38), and torch raises "value
        cannot be converted to type float without overflow" before it writes the tensor.
        """
        if "without overflow" in str(error):
            remedy = "a lower learning rate or weight decay"
            raise self.watch.error(step + 1, math.inf, "the update", remedy) from None

    def save(self, progress: Progress, step: int) -> None:
        """Write ``progress`` unless a parameter is no longer finite; raise on Ctrl-C."""
        assert self.writer is not None
        self.watch.flush()  # on a GPU the losses since the last read are not checked yet
        if not all_finite(p.data for p in self.model.parameters()):
            raise self.watch.error(step, math.nan, "a parameter")
        self.writer.write(self.model, self.optimizer, self.scheduler, progress)
        self.last_good = self.watch.checkpoint = self.writer.path
        if self.guard.requested:
            raise TrainingInterrupted(self.writer.path, saved_now=True)

    def postfix(self) -> dict[str, str]:
        history = self.history
        postfix = {"loss": f"{history.train_loss[-1]:.4f}", "acc": f"{history.train_acc[-1]:.3f}"}
        if history.test_acc:
            postfix["test_acc"] = f"{history.test_acc[-1]:.3f}"
        return postfix


def _add_hits(
    correct: Tensor, predicted: list[Tensor], labels: list[Tensor], kept: list[Tensor]
) -> Tensor:
    """``correct`` plus the predictions that equal their labels, among the samples that
    count (``kept``, if not empty: the samples the loss did not skip); empties the lists."""
    if predicted:
        hits = torch.cat(predicted) == torch.cat(labels)
        if kept:
            hits &= torch.cat(kept)
        correct = correct + hits.sum()
        for batches in (predicted, labels, kept):
            batches.clear()
    return correct


def _counted(loss: Tensor, n_counted: Tensor) -> Tensor:
    """The loss of a batch, 0 where no sample counts: the mean over no sample is 0 / 0,
    a nan that is no divergence and adds nothing to the epoch's mean."""
    return torch.where(n_counted > 0, loss, 0.0)


def _current_lr(optimizer: Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])

"""nograd against PyTorch: one training run written three ways, timed interleaved.

The variants start from the same weights, see the same batches in the same order and
do the same work per step (forward, the loss value, every parameter gradient, the
update); only the first layer's dL/d(input) is skipped where a variant allows it.

- **nograd**, the public API as a user writes it::

      model = nograd.nn.Sequential(Linear, ReLU, ..., Linear)
      model.needs_input_grad = False        # documented opt-in: nobody wants dL/d(data)
      with torch.inference_mode():          # nograd never needs autograd; a user turns it off
          for x, y in batches:
              optimizer.zero_grad()
              loss = loss_fn(model(x), y)
              model.backward(loss_fn.backward())
              optimizer.step()

- **PyTorch**, idiomatic: torch.nn, autograd and torch.optim (zero_grad, backward,
  step) with the optimizer's defaults, i.e. whatever implementation torch picks for
  the device (the single-tensor for-loop on the CPU).
- **minimal**, the practical limit of any torch-based framework: raw torch ops under
  ``torch.inference_mode()``, no classes, weights as plain tensors. Forward by
  ``_addmm_activation`` (relu(b + x W^T) in one op) and addmm for the last layer; the
  loss value by log_softmax and nll_loss; dL/dz = (softmax - onehot)/N
  from the same log_softmax; backward by mm, sum and threshold_backward (ReLU's mask in
  one kernel), no dL/d(input) for the first layer; SGD and Adam written out with the
  arithmetic of torch's single-tensor path, made lean where the values stay the same:
  SGD's new momentum buffer is built in the fresh gradient's memory (one kernel), and
  scalars that torch passes as Python numbers are 0-dim tensors made once.

Cases: the reference net 2-25-25-25-2 on 1000 points of the disk task (one epoch is
the unit; batch 1, 10, 100, 1000) and an MLP 784-1024-1024-10 at batch 256 on random
data (20 steps are the unit); SGD (lr 0.05, momentum 0.9) and Adam (lr 1e-3); CE loss.

Timing: each row runs in a fresh process of its own (``--in-process``: all in this
one), so that no row inherits what an earlier one left in the C allocator (below). There
each chunk runs enough epochs to last >= 25 ms; the variants take turns
(A, B, C, then B, C, A, then C, A, B, ...) so machine noise hits them alike and
each runs first, second and third equally often (a variant's place in the turn
moves its time by 1-2% on this machine); a row reports the median time per step and,
for each ratio, the median of the per-repetition ratios. A single row's ratio to the
minimal loop still moves by a few percent from one fresh process to the next (the
reference net at batch 1000: 1.10 to 1.18 in eight runs): ``--processes K`` runs each
row in K fresh processes in turn and pools their chunks (``pooled``).
Allocator: torch's CPU tensors come from the C library's malloc. glibc's gives each
block of 128 KiB or more a mapping of its own and returns it to the kernel when it is
freed, so a step that makes such tensors anew pays a page fault for every 4 KiB of
them; but a freed block raises that threshold to its size (up to 32 MiB), and blocks
below it are then kept for reuse. So what a new tensor costs depends on what the
process freed before. The CPU MLP rows therefore run twice: "fresh", as a training
script starts, and "warm", after one block of WARM_BLOCK_MIB MiB was made and freed,
as in a process that handled a larger tensor before. Every row shows each variant's
page faults per step. The reference net's tensors are all under 128 KiB: its rows run
fresh only.
Checking: each row runs a separate float64 copy of all three for a few steps and
requires every parameter to agree with PyTorch's to 1e-10 ("params equal"). The timed
runs are float32 training from the same weights too, so after them each variant's
largest gap to PyTorch's parameters is shown: 0 for nograd on the CPU, which runs
torch's kernels in torch's order on memory laid out alike; the minimal loop's differs
in the last bits (its own dL/dz and momentum update), and thousands of steps make that
gap grow chaotically (one ReLU crossing zero on one side suffices).

A fourth variant on the CPU MLP rows, **nograd+oneDNN**, is nograd with
``nograd.set_cpu_matmul("onednn")``: its large float32 products run in oneDNN instead
of torch's BLAS, faster on CPUs where MKL does not use AVX-512 (AMD's). Its numbers are
not PyTorch's bits, so its check is in float32: after a few steps, its parameters may
stray from PyTorch's float64 run at most ONEDNN_ERROR_RATIO times as far as PyTorch's
own float32 run does. It has a table of its own, below the main one.
A fifth variant on every row, **nograd TrainStep**, is nograd's one-call training step
(``nograd.TrainStep``), which runs the same four lines as straight-line code where the
model allows (the reference net and the MLP both are such a model)::

      step = nograd.TrainStep(model, loss_fn, optimizer)
      with torch.inference_mode():
          for x, y in batches:
              loss = step(x, y)

It must train to nograd's parameters bit for bit ("= nograd"); its table comes after
oneDNN's.
Memory (when the MLP runs): the peak of a few MLP steps, per variant, in a fresh
process on the CPU (peak RSS) or in process on CUDA (max_memory_allocated).
Alone (when the MLP runs on the CPU): each variant's MLP step in a fresh process of its
own, the processes in turns, with its page faults per step: in a row's process the
variants share the allocator, and each one's frees change the others' costs.
Targets (nograd/PyTorch, nograd/minimal) apply to the 1-thread rows of the reference
net and to every MLP row. Exit code 1 if any row's parameters disagree (or
nograd+oneDNN's stray too far, or TrainStep's differ from nograd's).

Usage: python benchmarks/vs_torch.py [--quick] [--repeats N] [--cases ref,mlp]
       [--threads 1,2] [--optimizers sgd,adam] [--batches 1,10] [--out FILE]
       [--device cpu|cuda] [--in-process]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
import nograd
import nograd.nn
import nograd.optim
from _common import (
    machine_lines,
    markdown_table,
    median,
    minimal_backward,
    minor_faults,
    peak_rss_since_reset_mib,
    positive_ints,
    print_report,
    ratio_text,
    reset_peak_rss,
    rss_mib,
    synchronizer,
    time_call,
)
from nograd.nn.matmul import CpuMatmul

Batch = tuple[Tensor, Tensor]
AloneRuns = dict[str, list[dict[str, float]]]  # variant -> alone_child's results
VARIANTS = ("nograd", "PyTorch", "minimal")
ONEDNN = "nograd+oneDNN"  # a fourth variant, on CPU MLP rows: nograd.set_cpu_matmul("onednn")
STEP = "nograd TrainStep"  # a fifth, on every row: nograd.TrainStep
RATIOS = (("nograd", "PyTorch"), ("nograd", "minimal"), ("minimal", "PyTorch"))
OPTIMIZERS = {"sgd": ("SGD", {"lr": 0.05, "momentum": 0.9}), "adam": ("Adam", {"lr": 1e-3})}
REF_POINTS = 1000
# (case, batch) -> (nograd/PyTorch, nograd/minimal) ceilings; "ref" ones hold at 1 thread
TARGETS = {
    ("ref", 1): (0.30, 1.25),
    ("ref", 10): (0.30, 1.25),
    ("ref", 100): (0.36, 1.25),
    ("ref", 1000): (0.68, 1.15),
    ("mlp", 256): (0.97, 1.10),
}
CHECK_STEPS = {"ref": 20, "mlp": 3}  # float64 steps of the equality check
CHECK_TOLERANCE = 1e-10
# nograd+oneDNN's float32 parameters after CHECK_STEPS steps may be at most this many times
# farther from the float64 trajectory than PyTorch's float32 ones are (1.0 to 1.6 measured)
ONEDNN_ERROR_RATIO = 4.0
MEMORY_STEPS = 3
# each variant alone in a fresh process, per round: warm-up epochs over the chunk's batches,
# then timed chunks (epochs) of that many steps
ALONE_WARMUP, ALONE_CHUNKS, ALONE_CHUNK_STEPS, ALONE_ROUNDS = 3, 5, 8, 3
# the C allocator's states a CPU MLP row runs in (see the top); "warm" frees this block first
ALLOCATOR_STATES = ("fresh", "warm")
WARM_BLOCK_MIB = 16


class Case(NamedTuple):
    title: str
    sizes: tuple[int, ...]
    batches: tuple[int, ...]


CASES = {
    "ref": Case("ref 2-25-25-25-2", (2, 25, 25, 25, 2), (1, 10, 100, 1000)),
    "mlp": Case("MLP 784-1024-1024-10", (784, 1024, 1024, 10), (256,)),
}


class RowSpec(NamedTuple):
    """What one row of the table runs."""

    case: str
    threads: int
    optimizer: str
    batch: int
    allocator: str  # the C allocator's state it starts in: one of ALLOCATOR_STATES


class Variant(NamedTuple):
    train: Callable[[Sequence[Batch], int], None]  # (batches, epochs) -> None
    parameters: Callable[[], list[Tensor]]  # in state_dict order


# ------------------------------------------------------------------------ data, weights
def disk_points(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    try:
        from nograd.data import disk
    except ImportError:  # x ~ U([0,1]^2), y = [|x - 1/2|^2 < 1/(2 pi)]
        x = torch.rand(n, 2, generator=generator)
        return x, (((x.double() - 0.5) ** 2).sum(1) < 1 / (2 * math.pi)).long()
    x, y = disk(n, generator=generator).tensors
    return x, y


def make_batches(
    case: str, batch: int, mlp_steps: int, device: torch.device, dtype: torch.dtype
) -> list[Batch]:
    """One epoch: the disk task in order, or ``mlp_steps`` random MLP batches."""
    generator = torch.Generator().manual_seed(1)
    if case == "ref":
        x, y = disk_points(REF_POINTS, generator)
        pairs = [(x[i : i + batch], y[i : i + batch]) for i in range(0, REF_POINTS, batch)]
    else:
        d_in, d_out = CASES[case].sizes[0], CASES[case].sizes[-1]
        pairs = [
            (
                torch.randn(batch, d_in, generator=generator),
                torch.randint(0, d_out, (batch,), generator=generator),
            )
            for _ in range(mlp_steps)
        ]
    return [(x.to(device, dtype).contiguous(), y.to(device)) for x, y in pairs]


def torch_mlp(sizes: Sequence[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for d_in, d_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(d_in, d_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def nograd_mlp(sizes: Sequence[int]) -> nograd.nn.Sequential:
    layers: list[nograd.nn.Module] = []
    for d_in, d_out in itertools.pairwise(sizes):
        layers += [nograd.nn.Linear(d_in, d_out), nograd.nn.ReLU()]
    return nograd.nn.Sequential(*layers[:-1])


def initial_state(sizes: Sequence[int]) -> dict[str, Tensor]:
    """torch.nn's default initialisation from seed 0; keys "0.weight", "0.bias", ..."""
    torch.manual_seed(0)
    return {key: t.detach().clone() for key, t in torch_mlp(sizes).state_dict().items()}


# ---------------------------------------------------------------------------- variants
def nograd_model_and_optimizer(
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[nograd.nn.Sequential, nograd.optim.Optimizer]:
    """nograd's network from ``init`` and its optimizer, as both nograd variants start."""
    model = nograd_mlp(sizes).to(device, dtype)
    model.load_state_dict(init)
    name, options = OPTIMIZERS[optimizer]
    return model, getattr(nograd.optim, name)(model.parameters(), **options)


def nograd_variant(
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    dtype: torch.dtype,
    cpu_matmul: CpuMatmul = "blas",
) -> Variant:
    """nograd's training loop; with cpu_matmul="onednn", its products by oneDNN (nograd+oneDNN).

    A user sets ``nograd.set_cpu_matmul`` once; here the switch is set around each chunk
    of training and set back after it, because it is global and the other variants run
    in between.
    """
    model, opt = nograd_model_and_optimizer(sizes, init, optimizer, device, dtype)
    model.needs_input_grad = False
    loss_fn = nograd.nn.CrossEntropyLoss()

    def train(batches: Sequence[Batch], epochs: int) -> None:
        nograd.set_cpu_matmul(cpu_matmul)
        try:
            with torch.inference_mode():
                for _ in range(epochs):
                    for x, y in batches:
                        opt.zero_grad()
                        loss_fn(model(x), y)  # the loss value, which a user would log
                        model.backward(loss_fn.backward())
                        opt.step()
        finally:
            nograd.set_cpu_matmul("blas")

    return Variant(train, lambda: list(model.state_dict().values()))


def trainstep_variant(
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    dtype: torch.dtype,
) -> Variant:
    """nograd's training loop as one call a step, ``nograd.TrainStep``."""
    model, opt = nograd_model_and_optimizer(sizes, init, optimizer, device, dtype)
    step = nograd.TrainStep(model, nograd.nn.CrossEntropyLoss(), opt)
    return Variant(looped(step), lambda: list(model.state_dict().values()))


def torch_variant(
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    dtype: torch.dtype,
) -> Variant:
    model = torch_mlp(sizes).to(device, dtype)
    model.load_state_dict(init)
    loss_fn = torch.nn.CrossEntropyLoss()
    name, options = OPTIMIZERS[optimizer]
    opt = getattr(torch.optim, name)(model.parameters(), **options)

    def train(batches: Sequence[Batch], epochs: int) -> None:
        with torch.enable_grad():
            for _ in range(epochs):
                for x, y in batches:
                    opt.zero_grad()
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    opt.step()

    return Variant(train, lambda: [t.detach() for t in model.state_dict().values()])


def minimal_sgd(params: list[Tensor], lr: float, momentum: float) -> Callable[[list[Tensor]], None]:
    """b = g on the first step, then b = mu b + g; p -= lr b (torch's single-tensor SGD).

    Each step's gradients are fresh tensors, so the new buffer is built in g's memory
    (g += mu b) and the old one dropped: one kernel instead of mul_ and add_.
    """
    buffers: list[Tensor | None] = [None] * len(params)

    def update(grads: list[Tensor]) -> None:
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            b = buffers[i]
            buffers[i] = b = g if b is None else g.add_(b, alpha=momentum)  # b = g + mu b
            p.add_(b, alpha=-lr)  # p -= lr b

    return update


def minimal_adam(
    params: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> Callable[[list[Tensor]], None]:
    """torch's single-tensor Adam, op for op (no weight decay, no amsgrad).

    Scalars that torch passes as Python floats to mul_, div_ and add_ are 0-dim tensors
    here: the same values, without the per-op conversion of a Python number.
    """
    beta1, beta2 = betas
    exp_avgs: list[Tensor] = []  # m and v, made at the first step as torch makes them
    exp_avg_sqs: list[Tensor] = []
    beta2_t, eps_t, bias_correction2_sqrt = (
        torch.full((), value, dtype=params[0].dtype, device=params[0].device)
        for value in (beta2, eps, 1.0)
    )
    step = 0

    def update(grads: list[Tensor]) -> None:
        nonlocal step
        if step == 0:
            exp_avgs.extend(torch.zeros_like(p) for p in params)
            exp_avg_sqs.extend(torch.zeros_like(p) for p in params)
        step += 1
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt.fill_((1 - beta2**step) ** 0.5)
        for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
            m.lerp_(g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
            v.mul_(beta2_t).addcmul_(g, g, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
            denom = v.sqrt().div_(bias_correction2_sqrt).add_(eps_t)  # sqrt(v_hat) + eps
            p.addcdiv_(m, denom, value=-step_size)  # p -= lr m_hat / denom

    return update


def minimal_variant(
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    dtype: torch.dtype,
) -> Variant:
    with torch.inference_mode():
        params = [t.to(device, dtype, copy=True) for t in init.values()]  # W_1, b_1, W_2, ...
        _, options = OPTIMIZERS[optimizer]
        if optimizer == "sgd":
            update = minimal_sgd(params, options["lr"], options["momentum"])
        else:
            update = minimal_adam(params, options["lr"])
        weights_t = [W.t() for W in params[0::2]]  # views: in-place updates show through
    weights, biases = params[0::2], params[1::2]
    hidden = list(zip(weights_t[:-1], biases[:-1], strict=True))
    last = len(weights) - 1
    minus_ones: dict[int, Tensor] = {}  # (N, 1) of -1 per batch size, made once
    inverse_n: dict[int, Tensor] = {}  # 1/N as a 0-dim tensor (a Python float costs more)

    def step(x: Tensor, y: Tensor) -> None:
        activations = [x]  # a_0 = x, a_l = relu(a_{l-1} W_l^T + b_l)
        for W_t, b in hidden:
            activations.append(torch._addmm_activation(b, activations[-1], W_t))
        z = torch.addmm(biases[last], activations[-1], weights_t[last])
        log_p = torch.log_softmax(z, 1)
        F.nll_loss(log_p, y)  # the loss value, as the other variants compute it
        n = y.shape[0]
        minus_one = minus_ones.get(n)
        if minus_one is None:
            minus_one = minus_ones[n] = torch.full((n, 1), -1.0, dtype=z.dtype, device=z.device)
            inverse_n[n] = torch.full((), 1 / n, dtype=z.dtype, device=z.device)
        g = torch.exp(log_p).scatter_add_(1, y.unsqueeze(1), minus_one)  # p - onehot(y)
        if n > 1:
            g.mul_(inverse_n[n])  # dL/dz = (p - onehot(y)) / N
        update(minimal_backward(g, activations, weights))

    return Variant(looped(step), lambda: params)


def looped(step: Callable[[Tensor, Tensor], None]) -> Callable[[Sequence[Batch], int], None]:
    """A variant's ``train``: ``step(x, y)`` on every batch, epoch after epoch, under
    ``torch.inference_mode``."""

    def train(batches: Sequence[Batch], epochs: int) -> None:
        with torch.inference_mode():
            for _ in range(epochs):
                for x, y in batches:
                    step(x, y)

    return train


BUILDERS = {
    "nograd": nograd_variant,
    "PyTorch": torch_variant,
    "minimal": minimal_variant,
    ONEDNN: functools.partial(nograd_variant, cpu_matmul="onednn"),
    STEP: trainstep_variant,
}


def variants_for(case: str, device: torch.device) -> tuple[str, ...]:
    """The three variants and TrainStep, and nograd+oneDNN where it changes something:
    CPU MLP rows.

    The reference net's products are all below ``ONEDNN_MIN_MACS``, so there it would be
    nograd itself; on a GPU the switch does nothing.
    """
    if case == "mlp" and device.type == "cpu" and nograd.nn.matmul.onednn_available():
        return (*VARIANTS, STEP, ONEDNN)
    return (*VARIANTS, STEP)


def max_difference(ours: list[Tensor], reference: list[Tensor]) -> float:
    """max |a - b| over every parameter; NaN if any difference is NaN."""
    gaps = [
        float((a.double() - b.double()).abs().max()) for a, b in zip(ours, reference, strict=True)
    ]
    return math.nan if any(math.isnan(gap) for gap in gaps) else max(gaps)


# ------------------------------------------------------------------------------- rows
@dataclass
class Settings:
    repeats: int
    min_chunk_s: float  # each timed chunk runs at least this long
    mlp_steps: int  # steps in one MLP "epoch"
    device: torch.device


@dataclass
class Row:
    case: str
    threads: int
    optimizer: str
    batch: int
    seconds: dict[str, list[float]]  # per timed chunk, in the order they ran
    steps: int  # training steps in one chunk
    gap_float64: float  # the equality check: max |param - PyTorch's| after CHECK_STEPS
    gap_float32: dict[str, float]  # nograd's and minimal's gap to PyTorch after the timed runs
    faults: dict[str, float]  # each variant's minor page faults per step, median chunk
    onednn_error_ratio: float | None = None  # see check_onednn; None: no nograd+oneDNN here
    allocator: str = "fresh"  # the C allocator's state when the row began (ALLOCATOR_STATES)
    step_gap: float = 0.0  # TrainStep's largest gap to nograd's parameters: 0 is the same bits

    @property
    def equal(self) -> bool:
        return self.gap_float64 <= CHECK_TOLERANCE  # False for NaN too

    @property
    def step_same(self) -> bool:
        return self.step_gap == 0  # False for NaN too

    @property
    def onednn_close(self) -> bool:
        ratio = self.onednn_error_ratio
        return ratio is None or ratio <= ONEDNN_ERROR_RATIO  # False for NaN too

    def us_per_step(self, name: str) -> float:
        return median(self.seconds[name]) / self.steps * 1e6

    def ratio(self, name: str, other: str) -> float:
        """Median of the per-repetition ratios: a load burst slows both sides of a pair."""
        pairs = zip(self.seconds[name], self.seconds[other], strict=True)
        return median([mine / theirs for mine, theirs in pairs])


def check_float64(case: str, optimizer: str, batch: int, settings: Settings) -> float:
    """Train float64 twins for CHECK_STEPS steps; the largest gap of any parameter to PyTorch."""
    sizes, device = CASES[case].sizes, settings.device
    init = {key: t.double() for key, t in initial_state(sizes).items()}
    steps = CHECK_STEPS[case]
    batches = make_batches(case, batch, steps, device, torch.float64)[:steps]
    epochs = math.ceil(steps / len(batches))  # batch 1000: the one batch, again and again
    variants = {
        name: BUILDERS[name](sizes, init, optimizer, device, torch.float64) for name in VARIANTS
    }
    for variant in variants.values():
        variant.train(batches, epochs)
    reference = variants["PyTorch"].parameters()
    return max(
        max_difference(variants[name].parameters(), reference) for name in ("nograd", "minimal")
    )


def check_onednn(optimizer: str, settings: Settings) -> float:
    """How far nograd+oneDNN's float32 MLP strays from the exact run, over PyTorch's own stray.

    oneDNN has no float64 products, so ``check_float64`` runs nograd+oneDNN's fallback
    (torch's). Here the same CHECK_STEPS run in float32 by PyTorch and by nograd+oneDNN,
    and each one's largest gap to PyTorch in float64 is measured: a wrong product (a
    bias left out, a transposed operand) would be orders of magnitude farther than
    float32 rounding, and oneDNN's other summation order is not.
    """
    sizes, device = CASES["mlp"].sizes, settings.device
    init = initial_state(sizes)
    steps = CHECK_STEPS["mlp"]
    batches = make_batches("mlp", 256, steps, device, torch.float32)
    exact = BUILDERS["PyTorch"](
        sizes, {key: t.double() for key, t in init.items()}, optimizer, device, torch.float64
    )
    exact.train([(x.double(), y) for x, y in batches], 1)
    gaps = {}
    for name in ("PyTorch", ONEDNN):
        variant = BUILDERS[name](sizes, init, optimizer, device, torch.float32)
        variant.train(batches, 1)
        gaps[name] = max_difference(variant.parameters(), exact.parameters())
    return gaps[ONEDNN] / gaps["PyTorch"]


def warm_allocator() -> None:
    """Make and free a block of WARM_BLOCK_MIB MiB: glibc then keeps smaller freed blocks.

    Freed, the block raises glibc's mmap threshold to its size, and the heap's trim
    threshold to twice that, so the tensors a training step makes and frees stay in
    the process instead of going back to the kernel and being faulted in again. Other
    C libraries may ignore this; the page-fault counts of each row show what happened.
    """
    block = torch.empty(WARM_BLOCK_MIB * 2**20, dtype=torch.uint8)
    del block


def run_row(spec: RowSpec, settings: Settings) -> Row:
    """Time the variants interleaved on one (case, threads, optimizer, batch)."""
    case, threads, optimizer, batch, allocator = spec
    if allocator == "warm":
        warm_allocator()
    torch.set_num_threads(threads)
    sizes, sync = CASES[case].sizes, synchronizer(settings.device)
    init = initial_state(sizes)
    batches = make_batches(case, batch, settings.mlp_steps, settings.device, torch.float32)
    names = variants_for(case, settings.device)
    variants = {
        name: BUILDERS[name](sizes, init, optimizer, settings.device, torch.float32)
        for name in names
    }

    faults: dict[str, list[float]] = {name: [] for name in names}  # per step, per chunk

    def chunk(name: str, epochs: int) -> float:
        before = minor_faults()
        seconds = time_call(lambda: variants[name].train(batches, epochs), sync)
        faults[name].append((minor_faults() - before) / (epochs * len(batches)))
        return seconds

    warmup = min(chunk(name, 1) for name in names)  # also sizes the chunks
    epochs = max(1, math.ceil(settings.min_chunk_s / max(warmup, 1e-9)))
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(settings.repeats):
        shift = repeat % len(names)  # A, B, C, then B, C, A, ...: each runs in each place
        for name in names[shift:] + names[:shift]:
            seconds[name].append(chunk(name, epochs))
    reference = variants["PyTorch"].parameters()
    gap32 = {  # the timed runs were float32 training too: every variant ran the same steps
        name: max_difference(variants[name].parameters(), reference)
        for name in ("nograd", "minimal")
    }
    step_gap = max_difference(variants[STEP].parameters(), variants["nograd"].parameters())
    gap64 = check_float64(case, optimizer, batch, settings)
    onednn = check_onednn(optimizer, settings) if ONEDNN in names else None
    steps = epochs * len(batches)
    timed_faults = {name: median(counts[1:]) for name, counts in faults.items()}  # no warm-up
    return Row(
        case, threads, optimizer, batch, seconds, steps, gap64, gap32, timed_faults, onednn,
        allocator, step_gap,
    )  # fmt: skip


def row_in_child(spec: RowSpec, settings: Settings, quick: bool, repeats: int | None) -> Row:
    """``run_row`` in a fresh Python process (``row_child``), its Row sent back as JSON."""
    argv = ["--row-child", ",".join(map(str, spec))]
    argv += ["--device", str(settings.device)]
    if quick:
        argv.append("--quick")
    if repeats is not None:
        argv += ["--repeats", str(repeats)]
    done = subprocess.run(
        [sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True, check=True
    )
    return Row(**json.loads(done.stdout.strip().splitlines()[-1]))


def pooled(runs: Sequence[Row]) -> Row:
    """One row from the same row run in several fresh processes (``--processes``).

    What a process inherits (where the C allocator put its blocks, the address-space
    layout) moves a row's ratios by a few percent from one process to the next, beyond
    what the interleaving within a process evens out. Each run's chunks are rescaled to
    one step and pooled, so a row reports the medians over all of them; a chunk stays
    paired with the chunks of the other variants that ran beside it, in its own
    process, so a ratio is still the median of per-repetition ratios. The equality
    checks report the worst run, the page faults the median one.
    """
    first = runs[0]
    if len(runs) == 1:
        return first
    seconds = {  # per step, each run's chunks in the order they ran
        name: [chunk / run.steps for run in runs for chunk in run.seconds[name]]
        for name in first.seconds
    }
    onednn = [run.onednn_error_ratio for run in runs if run.onednn_error_ratio is not None]
    return Row(
        first.case, first.threads, first.optimizer, first.batch, seconds, 1,
        worst([run.gap_float64 for run in runs]),
        {name: worst([run.gap_float32[name] for run in runs]) for name in first.gap_float32},
        {name: median([run.faults[name] for run in runs]) for name in first.faults},
        worst(onednn) if onednn else None,
        first.allocator,
        worst([run.step_gap for run in runs]),
    )  # fmt: skip


def worst(gaps: Sequence[float]) -> float:
    """The largest gap, or NaN if any is NaN (``max`` would depend on where the NaN sits)."""
    return math.nan if any(math.isnan(gap) for gap in gaps) else max(gaps)


def row_child(spec: str, settings: Settings) -> str:
    """The child's side of ``row_in_child``: run the row, return it as a line of JSON."""
    case, threads, optimizer, batch, allocator = spec.split(",")
    row = run_row(RowSpec(case, int(threads), optimizer, int(batch), allocator), settings)
    return json.dumps(dataclasses.asdict(row))


# ----------------------------------------------------------------------------- memory
def memory_child(variant: str, optimizer: str, device: torch.device) -> dict[str, float]:
    """Memory of MEMORY_STEPS MLP training steps, above what the model and data hold."""
    tiny = (2, 2, 2)  # one step on a tiny net first: lazy imports and set-up stay out
    tiny_batch = (torch.zeros(1, 2, device=device), torch.zeros(1, dtype=torch.long, device=device))
    BUILDERS[variant](tiny, initial_state(tiny), optimizer, device, torch.float32).train(
        [tiny_batch], 1
    )
    sizes = CASES["mlp"].sizes
    batches = make_batches("mlp", 256, MEMORY_STEPS, device, torch.float32)
    trainer = BUILDERS[variant](sizes, initial_state(sizes), optimizer, device, torch.float32)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        trainer.train(batches, 1)
        torch.cuda.synchronize(device)
        return {"before": before, "peak": torch.cuda.max_memory_allocated(device) / 2**20}
    reset = reset_peak_rss()
    before = rss_mib()
    trainer.train(batches, 1)
    return {"before": before, "peak": peak_rss_since_reset_mib(), "reset": float(reset)}


def measure_memory(optimizers: Sequence[str], threads: int, settings: Settings) -> list[str]:
    """A table of peak memory per variant, each measured in a fresh process on the CPU."""
    rows, peak_was_reset = [], True
    for optimizer in optimizers:
        for name in variants_for("mlp", settings.device):
            if settings.device.type == "cuda":
                result = memory_child(name, optimizer, settings.device)
            else:
                argv = ["--memory-child", f"{name},{optimizer}", "--threads", str(threads)]
                done = subprocess.run(
                    [sys.executable, __file__, *argv], capture_output=True, text=True, check=True
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                peak_was_reset = peak_was_reset and bool(result["reset"])
            rows.append(
                [
                    name,
                    optimizer,
                    f"{result['peak']:.1f}",
                    f"{result['peak'] - result['before']:.1f}",
                ]
            )
    if settings.device.type == "cuda":
        how = "torch.cuda.max_memory_allocated, in process"
    else:
        how = "peak RSS of a fresh process per variant, " + (
            "VmHWM reset after set-up" if peak_was_reset else "since start: no clear_refs here"
        )
    header = ["variant", "optimizer", "peak (MiB)", "training above model + data (MiB)"]
    title = f"Peak memory, MLP 784-1024-1024-10, batch 256, {MEMORY_STEPS} steps ({how}):"
    return [title, "", *markdown_table(header, rows)]


def alone_child(variant: str, optimizer: str, steps: tuple[int, int, int]) -> dict[str, float]:
    """One variant's MLP step on the CPU, alone in this process: us per step, page faults.

    ``steps`` is (warm-up epochs, timed chunks, steps per chunk); an epoch, warm-up or
    timed, is one pass over the same ``steps per chunk`` batches. The result is the
    median chunk, and the minor page faults per step over all the timed steps.
    """
    warmup, chunks, chunk_steps = steps
    sizes, device = CASES["mlp"].sizes, torch.device("cpu")
    trainer = BUILDERS[variant](sizes, initial_state(sizes), optimizer, device, torch.float32)
    batches = make_batches("mlp", 256, chunk_steps, device, torch.float32)
    trainer.train(batches, warmup)
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = [time_call(lambda: trainer.train(batches, 1), lambda: None) for _ in range(chunks)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return {"us": median(seconds) / chunk_steps * 1e6, "faults": faults / (chunks * chunk_steps)}


def run_alone(optimizer: str, threads: int, steps: Sequence[int], rounds: int) -> AloneRuns:
    """Each variant's ``alone_child`` results, the fresh processes taking turns, per round."""
    runs: AloneRuns = {name: [] for name in VARIANTS}
    for turn in range(rounds):
        for name in VARIANTS[turn % 3 :] + VARIANTS[: turn % 3]:
            argv = ["--alone-child", f"{name},{optimizer}", "--threads", str(threads)]
            argv += ["--alone-steps", ",".join(map(str, steps))]
            done = subprocess.run(
                [sys.executable, __file__, *argv], capture_output=True, text=True, check=True
            )
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def alone_ratio(runs: AloneRuns, name: str, other: str) -> float:
    """The median over rounds of name's time per step over other's."""
    pairs = zip(runs[name], runs[other], strict=True)
    return median([mine["us"] / theirs["us"] for mine, theirs in pairs])


def measure_alone(optimizers: Sequence[str], threads: int, quick: bool) -> list[str]:
    """The MLP step of each variant alone in a fresh process, as a user runs it (CPU).

    In the main table the variants share a process, and with it the C library's
    allocator: whether a freed megabyte goes back to the kernel, to be faulted in again
    by the next step, depends on what every variant allocated before. Here each runs in
    a process of its own, in turns over a few rounds, and a ratio is the median of the
    ratios of each round.
    """
    steps = (1, 2, 2) if quick else (ALONE_WARMUP, ALONE_CHUNKS, ALONE_CHUNK_STEPS)
    rounds = 1 if quick else ALONE_ROUNDS
    rows = []
    for optimizer in optimizers:
        runs = run_alone(optimizer, threads, steps, rounds)
        to_pytorch = alone_ratio(runs, "nograd", "PyTorch")
        rows.append(
            [
                optimizer,
                *(format_us(median([run["us"] for run in runs[name]])) for name in VARIANTS),
                ratio_text(to_pytorch, TARGETS[("mlp", 256)][0]),
                target_cell(to_pytorch, TARGETS[("mlp", 256)][0]),
                f"{alone_ratio(runs, 'nograd', 'minimal'):.2f}",
                *(f"{median([run['faults'] for run in runs[name]]):.0f}" for name in VARIANTS),
            ]
        )
    header = [
        "optimizer",
        *(f"{name} (us/step)" for name in VARIANTS),
        "nograd/PyTorch",
        "target",
        "nograd/minimal",
        *(f"page faults/step {name}" for name in VARIANTS),
    ]
    warmup, chunks, chunk_steps = steps
    title = (
        f"Each variant alone in a fresh process, MLP 784-1024-1024-10, batch 256, {threads} "
        f"thread(s): {warmup * chunk_steps} warm-up steps, then the median of {chunks} chunks "
        f"of {chunk_steps} steps; {rounds} round(s), the processes in turns:"
    )
    return [title, "", *markdown_table(header, rows)]


# ------------------------------------------------------------------------------ table
def target_cell(ratio: float, target: float | None) -> str:
    if target is None:
        return "—"
    return f"≤ {target:.2f} {'✓' if ratio <= target else '✗'}"


def format_us(us: float) -> str:
    return f"{us:.1f}" if us < 1000 else f"{us:.0f}"


def row_targets(row: Row) -> tuple[float, float] | None:
    """The row's (nograd/PyTorch, nograd/minimal) ceilings; None for the reference net's
    rows with more than one thread, which have none."""
    if row.case == "ref" and row.threads != 1:
        return None
    return TARGETS.get((row.case, row.batch))


def verdict(ratio: float, target: float | None) -> list[str]:
    """A ratio's two cells: the ratio, and its ceiling with ✓ or ✗."""
    return [ratio_text(ratio, target), target_cell(ratio, target)]


def row_title(row: Row) -> list[str]:
    """The cells that name a row: case, threads, optimizer, batch, allocator."""
    return [CASES[row.case].title, str(row.threads), row.optimizer, str(row.batch), row.allocator]


def results_table(rows: Sequence[Row]) -> list[str]:
    header = [
        "case", "threads", "optimizer", "batch", "allocator", "nograd (us/step)",
        "PyTorch (us/step)", "minimal (us/step)", "nograd/PyTorch", "target", "nograd/minimal",
        "target", "minimal/PyTorch", "params equal", "max Δ float64", "float32 Δ nograd",
        "float32 Δ minimal", "page faults/step",
    ]  # fmt: skip
    cells = []
    for row in rows:
        ours, theirs, least = (row.ratio(*pair) for pair in RATIOS)
        targets = row_targets(row)
        cells.append([
            *row_title(row), *(format_us(row.us_per_step(name)) for name in VARIANTS),
            *verdict(ours, targets and targets[0]), *verdict(theirs, targets and targets[1]),
            f"{least:.2f}", "✓" if row.equal else "✗",
            f"{row.gap_float64:.1e}",
            *(f"{row.gap_float32[name]:.1e}" for name in ("nograd", "minimal")),
            " / ".join(f"{row.faults[name]:.0f}" for name in VARIANTS),
        ])  # fmt: skip
    return markdown_table(header, cells)


def side_table(title: str, header: list[str], cells: list[list[str]], note: str) -> list[str]:
    """A table after the main one: its title, the table and a note; nothing without rows."""
    if not cells:
        return []
    return [title, "", *markdown_table(header, cells), "", note]


def onednn_table(rows: Sequence[Row]) -> list[str]:
    """nograd+oneDNN against the others, on the rows that timed it (CPU MLP rows)."""
    header = [
        "case", "threads", "optimizer", "batch", "allocator", f"{ONEDNN} (us/step)", "/ PyTorch",
        "target", "/ minimal", "/ nograd", "float32 error / PyTorch's", "close",
    ]  # fmt: skip
    cells = []
    for row in rows:
        if row.onednn_error_ratio is None:
            continue
        targets = row_targets(row)
        cells.append([
            *row_title(row), format_us(row.us_per_step(ONEDNN)),
            *verdict(row.ratio(ONEDNN, "PyTorch"), targets and targets[0]),
            f"{row.ratio(ONEDNN, 'minimal'):.2f}", f"{row.ratio(ONEDNN, 'nograd'):.2f}",
            f"{row.onednn_error_ratio:.2f}", "✓" if row.onednn_close else "✗",
        ])  # fmt: skip
    return side_table(
        f'With nograd.set_cpu_matmul("onednn") ({ONEDNN}, timed in the same interleaved turns):',
        header,
        cells,
        f"- float32 error / PyTorch's: after {CHECK_STEPS['mlp']} float32 steps, the largest gap "
        f"of {ONEDNN}'s parameters to PyTorch's float64 run, over the same gap of PyTorch's "
        f"float32 run; close: at most {ONEDNN_ERROR_RATIO:.0f}. oneDNN sums its products in "
        "another order than MKL, so its float32 numbers are not PyTorch's bits (float64, which "
        "the check above runs, stays with torch's products).",
    )


def trainstep_table(rows: Sequence[Row]) -> list[str]:
    """nograd.TrainStep against the others, with nograd's targets."""
    header = [
        "case", "threads", "optimizer", "batch", "allocator", f"{STEP} (us/step)", "/ PyTorch",
        "target", "/ minimal", "target", "/ nograd", "= nograd",
    ]  # fmt: skip
    cells = []
    for row in rows:
        if STEP not in row.seconds:
            continue
        targets = row_targets(row)
        cells.append([
            *row_title(row), format_us(row.us_per_step(STEP)),
            *verdict(row.ratio(STEP, "PyTorch"), targets and targets[0]),
            *verdict(row.ratio(STEP, "minimal"), targets and targets[1]),
            f"{row.ratio(STEP, 'nograd'):.2f}", "✓" if row.step_same else "✗",
        ])  # fmt: skip
    return side_table(
        f"With nograd.TrainStep ({STEP}, timed in the same interleaved turns):",
        header,
        cells,
        "- = nograd: its parameters after the timed runs are nograd's, bit for bit (the same "
        "steps on the same batches).",
    )


# ------------------------------------------------------------------------------- main
def names_among(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = text.split(",")
        if not all(value in allowed for value in values):
            raise argparse.ArgumentTypeError(f"expected names among {list(allowed)}, got {text!r}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few, short repetitions")
    parser.add_argument("--repeats", type=int, default=None, help="timed chunks per variant (9)")
    parser.add_argument("--cases", type=names_among(list(CASES)), default=list(CASES))
    parser.add_argument("--threads", type=positive_ints, default=[1, 2])
    parser.add_argument(
        "--optimizers", type=names_among(list(OPTIMIZERS)), default=list(OPTIMIZERS)
    )
    parser.add_argument("--batches", type=positive_ints, default=None, help="ref-net batch sizes")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="fresh processes per row, their chunks pooled (1)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every row in this process, not each in its own",
    )
    parser.add_argument("--row-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--alone-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--alone-steps", type=positive_ints, default=None, help=argparse.SUPPRESS)
    return parser


def settings_from(args: argparse.Namespace, device: torch.device) -> Settings:
    quick = args.quick
    return Settings(
        repeats=args.repeats or (3 if quick else 9),
        min_chunk_s=0.002 if quick else 0.025,
        mlp_steps=4 if quick else 20,
        device=device,
    )


def row_specs(args: argparse.Namespace, device: torch.device) -> list[RowSpec]:
    """Every requested row, in order: the CPU MLP rows once per allocator state."""
    specs = []
    for case in args.cases:
        batches = args.batches if case == "ref" and args.batches else CASES[case].batches
        states = ALLOCATOR_STATES if case == "mlp" and device.type == "cpu" else ("fresh",)
        for threads in args.threads:
            for optimizer in args.optimizers:
                for batch in batches:
                    specs += [RowSpec(case, threads, optimizer, batch, s) for s in states]
    return specs


def benchmark(args: argparse.Namespace, device: torch.device) -> tuple[list[Row], list[str]]:
    """Run every requested row; return them with the report's markdown lines."""
    quick, settings, processes = args.quick, settings_from(args, device), args.processes
    rows = []
    for spec in row_specs(args, device):
        if args.in_process:
            row = run_row(spec, settings)
        else:
            runs = [row_in_child(spec, settings, quick, args.repeats) for _ in range(processes)]
            row = pooled(runs)
        rows.append(row)
        timing = ", ".join(f"{n} {row.us_per_step(n):.1f}" for n in row.seconds)
        case, threads, optimizer, batch, allocator = spec
        print(f"{case} threads={threads} {optimizer} batch={batch} allocator={allocator}: "
              f"{timing} us/step", file=sys.stderr)  # fmt: skip
    steps = f"one epoch of {REF_POINTS} points (ref), {settings.mlp_steps} steps (MLP)"
    if args.in_process:
        where = "all rows in this process"
    elif processes == 1:
        where = "each row in a fresh process"
    else:
        where = f"each row in {processes} fresh processes, their chunks pooled"
    lines = [
        "# nograd vs PyTorch: training speed",
        "",
        *machine_lines(device),
        f"- device {device}; unit: {steps}; median of {settings.repeats} interleaved chunks "
        f"of >= {settings.min_chunk_s * 1000:.0f} ms per variant; {where}",
        "",
        *results_table(rows),
        "",
        f"- us/step: the median of {settings.repeats * processes} chunks. A ratio is the median "
        "of the per-repetition ratios (the variants run back to back, so a burst of load slows "
        "both sides of a pair); below 1, the left one is faster.",
        "- target: the lead's ceilings; they hold for the 1-thread ref rows and every MLP row.",
        "- allocator: the C allocator's state when the row began. fresh: as a new process "
        "starts; warm: after a block of "
        f"{WARM_BLOCK_MIB} MiB was made and freed, so that glibc keeps the blocks a step frees "
        "instead of returning them to the kernel. page faults/step: each variant's minor page "
        "faults per training step (nograd / PyTorch / minimal), median over its chunks; a "
        "fault maps in 4 KiB.",
        f"- params equal: nograd and minimal agree with PyTorch to {CHECK_TOLERANCE:.0e} in every "
        f"parameter after {CHECK_STEPS['ref']} (ref) or {CHECK_STEPS['mlp']} (MLP) float64 steps "
        "from the same weights on the same batches; max Δ float64 is that gap.",
        "- float32 Δ: the largest gap of each variant's parameters to PyTorch's after the timed "
        "runs (thousands of float32 steps from the same weights): 0.0e+00 is the same bits. "
        "A gap that is not 0 grows chaotically over those steps (one ReLU crossing zero on one "
        "side suffices), so its size is information only.",
    ]
    for extra in (onednn_table(rows), trainstep_table(rows)):
        if extra:
            lines += ["", *extra]
    if "mlp" in args.cases:
        lines += ["", *measure_memory(args.optimizers, max(args.threads), settings)]
        if device.type == "cpu":
            lines += ["", *measure_alone(args.optimizers, min(args.threads), quick)]
    return rows, lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit code 1 if any row's parameters disagree, 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    if args.in_process and args.processes > 1:
        parser.error("--processes runs each row in fresh processes: not with --in-process")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("vs_torch: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    threads_before = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's generator alone
            if args.memory_child:
                torch.set_num_threads(max(args.threads))
                variant, optimizer = args.memory_child.split(",")
                print(json.dumps(memory_child(variant, optimizer, device)))
                return 0
            if args.row_child:
                print(row_child(args.row_child, settings_from(args, device)))
                return 0
            if args.alone_child:
                torch.set_num_threads(min(args.threads))
                variant, optimizer = args.alone_child.split(",")
                warmup, chunks, chunk_steps = args.alone_steps
                print(json.dumps(alone_child(variant, optimizer, (warmup, chunks, chunk_steps))))
                return 0
            rows, lines = benchmark(args, device)
    finally:
        torch.set_num_threads(threads_before)
    print_report(lines, args.out)
    disagree = [row for row in rows if not row.equal]
    if disagree:
        print(f"vs_torch: parameters disagree in {len(disagree)} row(s)", file=sys.stderr)
    strays = [row for row in rows if not row.onednn_close]
    if strays:
        print(f"vs_torch: {ONEDNN} strays too far in {len(strays)} row(s)", file=sys.stderr)
    apart = [row for row in rows if not row.step_same]
    if apart:
        print(f"vs_torch: {STEP} differs from nograd in {len(apart)} row(s)", file=sys.stderr)
    if disagree or strays or apart:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

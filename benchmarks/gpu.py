"""Training speed on a GPU: PyTorch, minimal raw ops and nograd, each eager and as a CUDA graph.

Six variants train the same MLP (ReLU between Linear layers, cross-entropy loss, float32)
from the same weights on the same batches:

- **PyTorch**: torch.nn, autograd and torch.optim with their CUDA defaults (foreach).
  Its CUDA graph is torch's documented whole-network recipe: eager warm-up steps on a
  side stream, ``zero_grad(set_to_none=True)``, then forward, ``backward`` and ``step``
  captured with ``torch.cuda.graph`` (Adam with ``capturable=True``).
- **minimal**: raw torch ops, weights as plain tensors, the forward by
  ``_addmm_activation`` (bias and ReLU fused into the matrix product) and addmm, the
  backward written out (mm, sum, threshold_backward) and the update as ``_foreach_*``
  ops: the practical limit of any torch-based framework. Captured the same way.
- **nograd**: the public API (``model.backward(loss_fn.backward())``) under
  ``torch.inference_mode()``; its graph is ``nograd.cuda_graph.GraphedTrainStep``.
  A seventh column, **nograd layer updates**, is that graph with
  ``update_per_layer=True``: each layer's update on a third stream right after its
  backward, beside the backward of the layers below (opt-in while unmeasured).

Every graph variant takes its first 3 steps eagerly and captures at the 4th, so N calls
are N training steps for all six. Each graphed step copies its batch into the static
buffers (that copy is timed). Networks: 2-25-25-25-2 at batch 100, 784-1024-1024-10 at
batch 256, 1024-4096-4096-4096-1024 at batch 8192 (1024 classes). SGD (lr 0.05,
momentum 0.9) first, then Adam (lr 1e-3) rows while the time budget lasts.

Timing: per variant, chunks of up to 200 steps (>= 10) between two
``torch.cuda.synchronize()``; the variants take turns, chunk by chunk, over several
repetitions. A cell is the median time per step; a ratio, the median of the ratios of
the two variants' chunks in each repetition. Check: before timing, every
variant, built in float64 from the same weights, trains 8 steps and its parameters must
match PyTorch eager's to rtol 1e-8 (atol 1e-10); the row's last column says ✓ or names
who differs. The timing runs in float32.

Usage: python benchmarks/gpu.py [--out FILE] [--quick] [--check-only] [--profile]
       [--kernels] [--networks tiny,mlp,wide] [--optimizers sgd,adam] [--repeats N]
       [--budget-s S]
       python benchmarks/gpu.py --count-ops [--networks ...] [--optimizers ...]

``--profile`` adds, after the table, a torch.profiler view of one eager step of the
minimal loop and of nograd on the first network and optimizer named: the ops that
take the host's time, and how often a step waits for the device. ``--kernels`` adds,
for every row, what one step of each graph keeps the GPU busy for (torch.profiler's
kernels: busy time, kernel count). ``--count-ops`` needs no GPU: it counts each eager
variant's aten ops per step on the meta device, where nograd takes its GPU code paths.
Without CUDA (and without ``--count-ops``) it prints one line and exits 0. Exit code 1
if a check fails or a cell errs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import itertools
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
import nograd
import nograd.nn
import nograd.optim
from _common import markdown_table, minimal_backward, ratio_text

Batch = tuple[Tensor, Tensor]
VARIANTS = (
    "PyTorch eager",
    "PyTorch CUDA graph",
    "minimal eager",
    "minimal CUDA graph",
    "nograd eager",
    "nograd CUDA graph",
    "nograd layer updates",
)
GRAPHED_NOGRAD = ("nograd CUDA graph", "nograd layer updates")  # GraphedTrainStep: CUDA only
OPTIMIZERS = {"sgd": ("SGD", {"lr": 0.05, "momentum": 0.9}), "adam": ("Adam", {"lr": 1e-3})}
WARMUP = 3  # eager steps of a graph variant before its capture
CHECK_STEPS = 8
# The check runs in float64 (torch's default dtype too, so that graph-ready "capturable"
# Adam keeps its step count t in float64, as nograd does): in float32, the last bits of a
# bias correction 1 - beta2^t move the weights enough to flip a few ReLUs at 0, and Adam,
# which divides each gradient by its own size, turns a flip into whole steps apart.
CHECK_DTYPE = torch.float64
CHECK_RTOL, CHECK_ATOL = 1e-8, 1e-10
CHECK_OFF = 1e-3  # fraction of elements allowed off, in case a ReLU input sits at 0
N_BATCHES = 4


@dataclass(frozen=True)
class Network:
    title: str
    sizes: tuple[int, ...]
    batch: int
    # targets (nograd/PyTorch eager, nograd/PyTorch graph) for the SGD rows
    targets: tuple[float, float]


NETWORKS = {
    "tiny": Network("2-25-25-25-2", (2, 25, 25, 25, 2), 100, (0.40, 0.85)),
    "mlp": Network("784-1024-1024-10", (784, 1024, 1024, 10), 256, (0.40, 0.85)),
    "wide": Network("1024-4096x3-1024", (1024, 4096, 4096, 4096, 1024), 8192, (1.00, 1.00)),
}


@dataclass
class Variant:
    step: Callable[[Tensor, Tensor], object]
    parameters: Callable[[], list[Tensor]]  # W_1, b_1, W_2, ... in state_dict order
    mode: Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass
class Cell:
    us: list[float] = field(default_factory=list)  # per repetition, microseconds per step
    steps: int = 0  # per timed chunk
    error: str | None = None
    gap: float | None = None  # max |a - b| / (atol + rtol |b|) against PyTorch eager
    off: float | None = None  # the fraction of elements where that exceeds 1
    ops: int | None = None  # aten ops of one eager step (views and allocations excluded)
    note: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.us) if self.us and self.error is None else None


@dataclass
class Settings:
    device: torch.device
    repeats: int
    chunk_s: float  # aim of a timed chunk
    min_steps: int
    max_steps: int
    check_only: bool
    budget_s: float
    max_batch: int | None
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def log(message: str) -> None:
    print(message, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------- counting ops
NO_WORK = {  # bare allocations, host reads, profiler marks (torch.optim's step has two)
    "empty",
    "empty_like",
    "empty_strided",
    "_local_scalar_dense",
    "_record_function_enter_new",
    "_record_function_exit",
}


class OpCounter(TorchDispatchMode):
    """Counts aten ops that do work on the device: views and bare allocations excluded."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not func.is_view and func._schema.name.split("::")[-1] not in NO_WORK:
            self.count += 1
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------ the variants
def torch_mlp(
    sizes: Sequence[int], device: torch.device, dtype: torch.dtype | None = None
) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for d_in, d_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(d_in, d_out, device=device, dtype=dtype), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


class WholeStepGraph:
    """torch's whole-network capture recipe, made lazy so that N calls are N steps.

    The first ``WARMUP`` calls run ``prepare(); body(x, y)`` eagerly on a side stream;
    the next runs ``prepare()`` and captures ``body`` on static copies of the batch;
    every call from then on copies its batch in and replays. ``dry=True`` (no CUDA)
    runs ``prepare(); body(static x, static y)`` instead of each replay.
    """

    def __init__(
        self,
        body: Callable[[Tensor, Tensor], object],
        prepare: Callable[[], object],
        example: Batch,
        dry: bool,
    ) -> None:
        self.body, self.prepare, self.dry = body, prepare, dry
        self.x, self.y = (t.clone() for t in example)
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, x: Tensor, y: Tensor) -> None:
        self.calls += 1
        if self.calls <= WARMUP:
            if self.dry:
                self.prepare()
                self.body(x, y)
                return
            side, current = torch.cuda.Stream(), torch.cuda.current_stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                self.prepare()
                self.body(x, y)
            current.wait_stream(side)
            return
        self.x.copy_(x)
        self.y.copy_(y)
        if self.dry:
            self.prepare()
            self.body(self.x, self.y)
            return
        if self.graph is None:
            self.prepare()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.body(self.x, self.y)
        self.graph.replay()


def build_torch(
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    example: Batch,
    graphed: bool,
) -> Variant:
    model = torch_mlp(sizes, device, example[0].dtype)
    model.load_state_dict(init)
    loss_fn = torch.nn.CrossEntropyLoss()
    name, options = OPTIMIZERS[optimizer]
    if name == "Adam" and graphed and device.type == "cuda":
        options = {**options, "capturable": True}  # t on the device, as a graph needs
    if device.type == "meta":
        options = {**options, "foreach": True}  # torch's default on CUDA, counted on meta
    opt = getattr(torch.optim, name)(model.parameters(), **options)

    def body(x: Tensor, y: Tensor) -> None:
        loss_fn(model(x), y).backward()
        opt.step()

    def zero_grad() -> None:
        opt.zero_grad(set_to_none=True)

    if graphed:
        graph = WholeStepGraph(body, zero_grad, example, dry=device.type != "cuda")
        step: Callable[[Tensor, Tensor], object] = graph
    else:

        def step(x: Tensor, y: Tensor) -> None:
            zero_grad()
            body(x, y)

    return Variant(step, lambda: [p.detach() for p in model.parameters()], torch.enable_grad)


class MinimalSGD:
    """b = g on the first step, then b = mu b + g; p -= lr b (torch's SGD, foreach)."""

    def __init__(self, params: list[Tensor], lr: float, momentum: float) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.buffers: list[Tensor] | None = None

    def __call__(self, grads: list[Tensor]) -> None:
        if self.buffers is None:
            self.buffers = list(grads)  # b = g: fresh tensors every step, no copy needed
        else:
            torch._foreach_mul_(self.buffers, self.momentum)  # b = mu b
            torch._foreach_add_(self.buffers, grads)  # b = b + g
        torch._foreach_add_(self.params, self.buffers, alpha=-self.lr)  # p -= lr b


class MinimalAdam:
    """torch's foreach Adam; t and the bias corrections on the device when capturable."""

    def __init__(self, params: list[Tensor], lr: float, capturable: bool) -> None:
        self.params, self.lr, self.capturable = params, lr, capturable
        self.beta1, self.beta2, self.eps = 0.9, 0.999, 1e-8
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t: float | Tensor = torch.zeros((), device=params[0].device) if capturable else 0.0

    def __call__(self, grads: list[Tensor]) -> None:
        beta1, beta2 = self.beta1, self.beta2
        torch._foreach_lerp_(self.m, grads, 1 - beta1)  # m = beta1 m + (1 - beta1) g
        torch._foreach_mul_(self.v, beta2)  # v = beta2 v
        torch._foreach_addcmul_(self.v, grads, grads, value=1 - beta2)  # v += (1 - beta2) g^2
        denom = torch._foreach_sqrt(self.v)
        if isinstance(self.t, Tensor):
            self.t.add_(1)
            torch._foreach_div_(denom, torch.sqrt(1 - torch.pow(beta2, self.t)))
            torch._foreach_add_(denom, self.eps)
            torch._foreach_div_(denom, torch.pow(beta1, self.t).sub_(1).reciprocal_() * self.lr)
            torch._foreach_addcdiv_(self.params, self.m, denom)  # p -= lr m_hat / (...)
        else:
            self.t += 1
            torch._foreach_div_(denom, (1 - beta2**self.t) ** 0.5)
            torch._foreach_add_(denom, self.eps)
            step_size = self.lr / (1 - beta1**self.t)
            torch._foreach_addcdiv_(self.params, self.m, denom, value=-step_size)


def build_minimal(
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    example: Batch,
    graphed: bool,
) -> Variant:
    params = [t.to(device, copy=True) for t in init.values()]  # W_1, b_1, W_2, ...
    _, options = OPTIMIZERS[optimizer]
    update = (
        MinimalSGD(params, **options)
        if optimizer == "sgd"
        else MinimalAdam(params, options["lr"], capturable=graphed)
    )
    weights, biases = params[0::2], params[1::2]
    last = len(weights) - 1
    n = example[0].shape[0]
    minus_one = torch.full((n, 1), -1.0, device=device, dtype=example[0].dtype)

    def step(x: Tensor, y: Tensor) -> None:
        activations = [x]  # a_l = relu(a_{l-1} W_l^T + b_l)
        for W, b in zip(weights[:last], biases[:last], strict=True):
            activations.append(torch._addmm_activation(b, activations[-1], W.t()))
        log_p = torch.log_softmax(torch.addmm(biases[last], activations[-1], weights[last].t()), 1)
        F.nll_loss(log_p, y)  # the loss value, which the other variants compute too
        g = torch.exp(log_p).scatter_add_(1, y.unsqueeze(1), minus_one).mul_(1 / n)  # dL/dz
        update(minimal_backward(g, activations, weights))

    if graphed:
        step = WholeStepGraph(step, lambda: None, example, dry=device.type != "cuda")  # type: ignore[assignment]
    return Variant(step, lambda: params, torch.inference_mode)


def build_nograd(
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    example: Batch,
    graphed: bool,
    update_per_layer: bool = False,
) -> Variant:
    layers: list[nograd.nn.Module] = []
    for d_in, d_out in itertools.pairwise(sizes):
        layers += [
            nograd.nn.Linear(d_in, d_out, device=device, dtype=example[0].dtype),
            nograd.nn.ReLU(),
        ]
    model = nograd.nn.Sequential(*layers[:-1])
    model.load_state_dict(init)
    model.needs_input_grad = False
    loss_fn = nograd.nn.CrossEntropyLoss()
    name, options = OPTIMIZERS[optimizer]
    opt = getattr(nograd.optim, name)(model.parameters(), **options)
    parameters = lambda: list(model.state_dict().values())  # noqa: E731
    if graphed:
        from nograd.cuda_graph import GraphedTrainStep

        graph = GraphedTrainStep(model, loss_fn, opt, *example, update_per_layer=update_per_layer)
        return Variant(graph, parameters, torch.inference_mode)

    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad()
        loss_fn(model(x), y)  # the loss value, which a user would log
        model.backward(loss_fn.backward())
        opt.step()

    return Variant(step, parameters, torch.inference_mode)


BUILDERS = {
    "PyTorch eager": (build_torch, False),
    "PyTorch CUDA graph": (build_torch, True),
    "minimal eager": (build_minimal, False),
    "minimal CUDA graph": (build_minimal, True),
    "nograd eager": (build_nograd, False),
    "nograd CUDA graph": (build_nograd, True),
    "nograd layer updates": (functools.partial(build_nograd, update_per_layer=True), True),
}


# ----------------------------------------------------------------------- a row
def describe(error: BaseException) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1]
    text = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {text} ({Path(where.filename).name}:{where.lineno})"


def make_data(network: Network, batch: int, device: torch.device) -> list[Batch]:
    generator = torch.Generator(device=device).manual_seed(1)
    d_in, classes = network.sizes[0], network.sizes[-1]
    return [
        (
            torch.randn(batch, d_in, generator=generator, device=device),
            torch.randint(0, classes, (batch,), generator=generator, device=device),
        )
        for _ in range(N_BATCHES)
    ]


def relative_gap(ours: list[Tensor], reference: list[Tensor]) -> tuple[float, float]:
    """(max, fraction > 1) of |a - b| / (atol + rtol |b|) over every element; NaN counts as off."""
    gaps = torch.cat(
        [
            ((a - b).abs() / (CHECK_ATOL + CHECK_RTOL * b.abs())).flatten().nan_to_num(float("inf"))
            for a, b in zip(ours, reference, strict=True)
        ]
    )
    return float(gaps.max()), float((gaps > 1).double().mean())


def timed_chunk(variant: Variant, data: list[Batch], steps: int, device: torch.device) -> float:
    """Microseconds per step over ``steps`` steps, the device drained before and after."""
    with variant.mode():
        sync(device)
        start = time.perf_counter()
        for i in range(steps):
            variant.step(*data[i % len(data)])
        sync(device)
    return (time.perf_counter() - start) / steps * 1e6


def build(
    name: str,
    sizes: Sequence[int],
    init: dict[str, Tensor],
    optimizer: str,
    device: torch.device,
    example: Batch,
) -> Variant:
    """The variant ``name`` (a key of BUILDERS), from these weights, for batches like example."""
    builder, graphed = BUILDERS[name]
    return builder(sizes, init, optimizer, device, example, graphed)


def build_variants(
    network: Network,
    optimizer: str,
    init: dict[str, Tensor],
    example: Batch,
    cells: dict[str, Cell],
    settings: Settings,
) -> dict[str, Variant]:
    """Every variant that builds, from the same weights; a build error goes to its cell."""
    device = settings.device
    variants: dict[str, Variant] = {}
    for name, (_, graphed) in BUILDERS.items():
        if cells[name].error:  # it failed the check: not timed
            continue
        if name in GRAPHED_NOGRAD and device.type != "cuda":
            cells[name].note = "n/a (CPU)"  # GraphedTrainStep refuses CPU tensors
            continue
        try:
            variants[name] = build(name, network.sizes, init, optimizer, device, example)
            if graphed and device.type != "cuda" and not name.startswith("nograd"):
                cells[name].note = "dry run (no CUDA)"
        except Exception as error:
            cells[name].error = f"build: {describe(error)}"
    return variants


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype is ``dtype`` within the block."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def check(
    network: Network,
    optimizer: str,
    init: dict[str, Tensor],
    data: list[Batch],
    cells: dict[str, Cell],
    settings: Settings,
) -> None:
    """Train each variant CHECK_STEPS steps in float64; note its gap to PyTorch eager.

    Also counts each eager variant's ops in one more step. A variant that errs gets the
    error in its cell (and no time).
    """
    device = settings.device
    init = {key: t.to(CHECK_DTYPE) for key, t in init.items()}
    data = [(x.to(CHECK_DTYPE), y) for x, y in data]
    with default_dtype(CHECK_DTYPE):  # Adam's t too, made at its first step on the device
        variants = build_variants(network, optimizer, init, data[0], cells, settings)
        trained: dict[str, list[Tensor]] = {}
        for name, variant in list(variants.items()):
            try:
                with variant.mode():
                    for i in range(CHECK_STEPS):
                        variant.step(*data[i % N_BATCHES])
                sync(device)
                trained[name] = [p.detach().clone() for p in variant.parameters()]
            except Exception as error:
                cells[name].error = f"check: {describe(error)}"
                del variants[name]
                continue
            if not BUILDERS[name][1]:  # eager: one more step, its ops counted (information)
                try:
                    with variant.mode(), OpCounter() as counter:
                        variant.step(*data[0])
                    sync(device)
                    cells[name].ops = counter.count
                except Exception as error:
                    log(f"  counting the ops of {name} failed: {describe(error)}")
        reference = trained.get("PyTorch eager")
        for name, params in trained.items():
            if reference is not None:
                cells[name].gap, cells[name].off = relative_gap(params, reference)
        del trained
        log(
            "  checked: "
            + ", ".join(
                f"{name} "
                + (
                    "ERR"
                    if cells[name].error
                    else "n/a"
                    if cells[name].gap is None
                    else f"max {cells[name].gap:.2g} off {cells[name].off:.1e}"
                )
                for name in VARIANTS
            )
        )


def row_inputs(network: Network, settings: Settings) -> tuple[int, dict[str, Tensor], list[Batch]]:
    """A row's batch size, its first weights (torch.nn's initialisation, seed 0), its batches."""
    device = settings.device
    batch = min(network.batch, settings.max_batch or network.batch)
    torch.manual_seed(0)
    init = {k: t.detach().clone() for k, t in torch_mlp(network.sizes, device).state_dict().items()}
    return batch, init, make_data(network, batch, device)


def run_row(network: Network, optimizer: str, settings: Settings) -> dict[str, Cell]:
    device = settings.device
    _, init, data = row_inputs(network, settings)
    cells = {name: Cell() for name in VARIANTS}
    check(network, optimizer, init, data, cells, settings)
    if settings.check_only:
        return cells
    variants = build_variants(network, optimizer, init, data[0], cells, settings)
    steps: dict[str, int] = {}
    for name, variant in list(variants.items()):  # calibrate: one short untimed chunk
        try:
            us = timed_chunk(variant, data, settings.min_steps, device)
            aim = round(settings.chunk_s * 1e6 / max(us, 1e-3))
            steps[name] = min(settings.max_steps, max(settings.min_steps, aim))
            cells[name].steps = steps[name]
        except Exception as error:
            cells[name].error = f"time: {describe(error)}"
            del variants[name]
    names = list(variants)
    for repeat in range(settings.repeats):
        order = names[repeat % max(len(names), 1) :] + names[: repeat % max(len(names), 1)]
        for name in order:
            if name not in variants:
                continue
            try:
                cells[name].us.append(timed_chunk(variants[name], data, steps[name], device))
            except Exception as error:
                cells[name].error = f"time: {describe(error)}"
                del variants[name]
        if settings.elapsed() > settings.budget_s + 60:
            log(f"  over budget: stopping after {repeat + 1} repetitions")
            break
    return cells


# ---------------------------------------------------------------------- report
def ratio(cells: dict[str, Cell], ours: str, theirs: str) -> float | None:
    """The median of the per-repetition ratios, as in vs_torch.py.

    The two chunks of a repetition run within a second of each other, so a slow spell
    of the host (eager cells vary by 2x within a run) slows both sides of the pair.
    """
    a, b = cells[ours], cells[theirs]
    if a.median is None or b.median is None:
        return None
    return statistics.median([x / y for x, y in zip(a.us, b.us, strict=True)])


def format_cell(cell: Cell) -> str:
    if cell.error:
        return "error"
    if cell.median is None:
        return cell.note or "—"
    text = f"{cell.median:.1f}" if cell.median < 1000 else f"{cell.median:.0f}"
    return text + (" (dry)" if cell.note else "")


def check_failed(cell: Cell) -> bool:
    return cell.off is not None and not cell.off <= CHECK_OFF


def check_mark(cells: dict[str, Cell]) -> str:
    if cells["PyTorch eager"].gap is None:
        return "— (no reference)"
    bad = [f"{name} {cell.off:.1%} off" for name, cell in cells.items() if check_failed(cell)]
    return "✓" if not bad else "✗ " + "; ".join(bad)


def target_cell(value: float | None, target: float | None) -> str:
    if value is None:
        return "—"
    return ratio_text(value, target) + (
        "" if target is None else f" (≤ {target:.2f} {'✓' if value <= target else '✗'})"
    )


PROFILED = ("minimal eager", "nograd eager")
PROFILE_STEPS = 20
SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "aten::item")


def count_ops_on_meta(networks: Sequence[str], optimizers: Sequence[str]) -> list[str]:
    """The aten ops of one eager step of each variant, counted without a GPU.

    Tensors on the meta device have shapes but no values, and, like CUDA tensors, are
    not on the CPU, so nograd takes its GPU code paths. On a GPU, each op counted is
    at least one kernel launch: the host's cost of a small network's eager step, and
    the device's of its graph.
    """
    device = torch.device("meta")
    names = ("PyTorch eager", "minimal eager", "nograd eager")
    rows = []
    for optimizer in optimizers:
        for key in networks:
            network = NETWORKS[key]
            init = dict(torch_mlp(network.sizes, device).state_dict())
            example = (
                torch.empty(network.batch, network.sizes[0], device=device),
                torch.empty(network.batch, dtype=torch.long, device=device),
            )
            counts = []
            for name in names:
                variant = build(name, network.sizes, init, optimizer, device, example)
                with variant.mode():
                    for _ in range(2):  # past the first step, which creates the state
                        variant.step(*example)
                    with OpCounter() as counter:
                        variant.step(*example)
                counts.append(str(counter.count))
            rows.append([network.title, str(network.batch), optimizer, *counts])
    return [
        "aten ops per eager step, counted on the meta device (views, bare allocations "
        "and profiler marks excluded):",
        "",
        *markdown_table(["network", "batch", "optimizer", *names], rows),
    ]


def profile_eager(network: Network, optimizer: str, settings: Settings) -> list[str]:
    """Where an eager step spends its host time: torch.profiler over a few steps.

    For the minimal loop and nograd, side by side: the top aten ops by self CPU time
    per step, and how often a step waits for the device (synchronize, copy, item).
    Information for whoever closes the eager gap; nothing here is a target.
    """
    from torch.profiler import ProfilerActivity, profile

    device = settings.device
    batch, init, data = row_inputs(network, settings)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    lines = [
        f"Host time of one eager step, {network.title} batch {batch} {optimizer} "
        f"(torch.profiler over {PROFILE_STEPS} steps):"
    ]
    for name in PROFILED:
        variant = build(name, network.sizes, init, optimizer, device, data[0])
        with variant.mode():
            for i in range(WARMUP):
                variant.step(*data[i % len(data)])
            sync(device)
            with profile(activities=activities) as prof:
                start = time.perf_counter()
                for i in range(PROFILE_STEPS):
                    variant.step(*data[i % len(data)])
                sync(device)
                wall = (time.perf_counter() - start) / PROFILE_STEPS * 1e6
        events = prof.key_averages()
        waits = {key: 0 for key in SYNC_EVENTS}
        for event in events:
            if event.key in waits:
                waits[event.key] = event.count
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
        lines.append(
            f"- {name}: {wall:.0f} us per step under the profiler; per step, "
            + ", ".join(f"{k} {v / PROFILE_STEPS:g}" for k, v in waits.items())
        )
        lines.append(
            "  top self CPU (us per step, calls per step): "
            + "; ".join(
                f"{e.key} {e.self_cpu_time_total / PROFILE_STEPS:.1f} ({e.count / PROFILE_STEPS:g})"
                for e in top
            )
        )
    return lines


GRAPHS = ("PyTorch CUDA graph", "minimal CUDA graph", *GRAPHED_NOGRAD)
KERNEL_REPLAYS = 3
KERNEL_EVENTS = ("kernel", "gpu_memcpy", "gpu_memset")  # trace categories of device work


def busy_time(spans: Sequence[tuple[float, float]]) -> float:
    """The time that at least one of these (start, duration) spans covers."""
    busy, end = 0.0, -math.inf
    for start, duration in sorted(spans):
        finish = start + duration
        if start >= end:  # a gap before it: all of it counts
            busy += duration
            end = finish
        elif finish > end:  # it overlaps the busy stretch and runs past its end
            busy += finish - end
            end = finish
    return busy


def kernel_time(network: Network, optimizer: str, settings: Settings) -> list[str]:
    """What one step of each graph variant keeps the GPU busy for: torch.profiler's kernels.

    Per variant, the median over a few steps of: the busy time (where at least one
    kernel or copy runs: kernels on parallel streams count once), the sum of the
    kernels' own times, and their number. Where a graph's time goes, kernel by kernel,
    beside the wall-clock table. Information, not a target.
    """
    from torch.profiler import ProfilerActivity, profile

    device = settings.device
    batch = min(network.batch, settings.max_batch or network.batch)
    title = f"{network.title} batch {batch} {optimizer}"
    if device.type != "cuda":
        return [f"Kernel time, {title}: needs CUDA"]
    _, init, data = row_inputs(network, settings)
    lines = [
        f"Kernel time of one graphed step, {title} (torch.profiler, median of "
        f"{KERNEL_REPLAYS} steps; busy: the time at least one kernel runs):"
    ]
    for name in GRAPHS:
        variant = build(name, network.sizes, init, optimizer, device, data[0])
        measures = []
        with variant.mode(), tempfile.TemporaryDirectory() as folder:
            for i in range(WARMUP + 2):  # the warm-up, the capture and a replay
                variant.step(*data[i % len(data)])
            for i in range(KERNEL_REPLAYS):
                sync(device)
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    variant.step(*data[i % len(data)])
                    sync(device)
                trace = Path(folder) / f"{i}.json"
                prof.export_chrome_trace(str(trace))
                events = json.loads(trace.read_text(encoding="utf-8"))["traceEvents"]
                spans = [
                    (float(e["ts"]), float(e["dur"]))
                    for e in events
                    if e.get("cat") in KERNEL_EVENTS and "dur" in e
                ]
                measures.append((busy_time(spans), sum(d for _, d in spans), len(spans)))
        busy, total, count = (statistics.median(m[k] for m in measures) for k in range(3))
        lines.append(
            f"- {name}: busy {busy:.1f} us; {count:.0f} kernels and copies, {total:.1f} us in all"
        )
    return lines


def report(rows: list[dict[str, Any]], header_lines: list[str], settings: Settings) -> list[str]:
    header = [
        "network",
        "batch",
        "optimizer",
        *VARIANTS,
        "nograd/PyTorch eager",
        "nograd/PyTorch graph",
        "layer updates/PyTorch graph",
        "check",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(VARIANTS) + 3) + ["---"]) + "|",
    ]
    errors, ops = [], []
    for row in rows:
        cells, network = row["cells"], NETWORKS[row["network"]]
        targets = network.targets if row["optimizer"] == "sgd" else (None, None)
        eager = ratio(cells, "nograd eager", "PyTorch eager")
        graph = ratio(cells, "nograd CUDA graph", "PyTorch CUDA graph")
        layer_updates = ratio(cells, "nograd layer updates", "PyTorch CUDA graph")
        lines.append(
            "| "
            + " | ".join(
                [
                    network.title,
                    str(row["batch"]),
                    row["optimizer"],
                    *(format_cell(cells[n]) for n in VARIANTS),
                    target_cell(eager, targets[0]),
                    target_cell(graph, targets[1]),
                    target_cell(layer_updates, targets[1]),
                    check_mark(cells),
                ]
            )
            + " |"
        )
        errors += [
            f"- {network.title} {row['optimizer']}, {n}: {c.error}"
            for n, c in cells.items()
            if c.error
        ]
        counts = ", ".join(f"{n} {c.ops}" for n, c in cells.items() if c.ops is not None)
        ops.append(f"- {network.title} {row['optimizer']}: {counts}")
    return [
        "# Training step time on the GPU (microseconds per step, float32)",
        "",
        *header_lines,
        f"- median of {settings.repeats} interleaved chunks of {settings.min_steps}-"
        f"{settings.max_steps} steps per cell; cross-entropy loss; targets apply to SGD rows",
        "",
        *lines,
        "",
        f"check: each variant, built again in {str(CHECK_DTYPE).removeprefix('torch.')}, trains "
        f"{CHECK_STEPS} identical steps ({WARMUP} eager, then graphed); its parameters equal "
        f"PyTorch eager's to rtol {CHECK_RTOL:g}, atol {CHECK_ATOL:g}, but for at most "
        f"{CHECK_OFF:.1%} of the elements. float64, because in float32 a difference in the last "
        "bits (capturable Adam's float32 step count) flips a few ReLUs at 0, and Adam, which "
        "divides each gradient by its own size, turns a flip into whole steps apart.",
        "",
        "aten ops per eager step (views and bare allocations excluded):",
        *ops,
        *(["", "errors:", *errors] if errors else []),
    ]


def environment(device: torch.device) -> tuple[list[str], dict[str, Any]]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": str(device),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    lines = [
        f"- {info.get('gpu', 'CPU (dry run of the graph variants)')}; torch {info['torch']}, "
        f"CUDA {info['cuda']}, Python {info['python']}; {info['date']}",
        f"- TF32 matmul: {info['tf32_matmul']} (float32 matmul precision "
        f"'{info['float32_matmul_precision']}')",
    ]
    return lines, info


def build_parser() -> argparse.ArgumentParser:
    def names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
        def parse(text: str) -> list[str]:
            values = text.split(",")
            if not all(value in allowed for value in values):
                raise argparse.ArgumentTypeError(
                    f"expected names among {list(allowed)}, got {text!r}"
                )
            return values

        return parse

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the markdown here, and JSON beside it")
    parser.add_argument("--quick", action="store_true", help="a fast sanity run")
    parser.add_argument("--check-only", action="store_true", help="only the correctness checks")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the table, where an eager step's host time goes",
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="after the table, each graph's kernel time per step, for every row timed",
    )
    parser.add_argument(
        "--count-ops",
        action="store_true",
        help="only count each variant's aten ops per eager step, on the meta device (no GPU)",
    )
    parser.add_argument("--networks", type=names(list(NETWORKS)), default=list(NETWORKS))
    parser.add_argument("--optimizers", type=names(list(OPTIMIZERS)), default=list(OPTIMIZERS))
    parser.add_argument("--repeats", type=int, default=None, help="timed chunks per cell (7)")
    parser.add_argument("--budget-s", type=float, default=200.0, help="start no row after this")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: debugging
    parser.add_argument("--max-batch", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count_ops:
        log("\n".join(count_ops_on_meta(args.networks, args.optimizers)))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log(f"gpu.py: no CUDA device here (torch {torch.__version__}); nothing to measure")
        return 0
    settings = Settings(
        device=device,
        repeats=args.repeats or (2 if args.quick else 7),
        chunk_s=0.02 if args.quick else 0.25,
        min_steps=3 if args.quick else 10,
        max_steps=20 if args.quick else 200,
        check_only=args.check_only,
        budget_s=args.budget_s,
        max_batch=args.max_batch,
    )
    header_lines, info = environment(device)
    for line in header_lines:
        log(line)
    rows: list[dict[str, Any]] = []
    skipped = []
    for optimizer in args.optimizers:
        for key in args.networks:
            network = NETWORKS[key]
            if settings.elapsed() > settings.budget_s:
                skipped.append(f"{network.title} {optimizer}")
                continue
            batch = min(network.batch, settings.max_batch or network.batch)
            log(f"{network.title} batch {batch} {optimizer} ({settings.elapsed():.0f} s)")
            cells = run_row(network, optimizer, settings)
            rows.append({"network": key, "optimizer": optimizer, "cells": cells, "batch": batch})
            log("  us/step: " + ", ".join(f"{n} {format_cell(c)}" for n, c in cells.items()))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    lines = report(rows, header_lines, settings)
    if args.profile:
        network = NETWORKS[args.networks[0]]
        lines += ["", *profile_eager(network, args.optimizers[0], settings)]
    if args.kernels:
        for row in rows:
            lines += ["", *kernel_time(NETWORKS[row["network"]], row["optimizer"], settings)]
    if skipped:
        lines += ["", f"skipped (time budget {settings.budget_s:.0f} s): {', '.join(skipped)}"]
    lines += ["", f"total {settings.elapsed():.0f} s"]
    log("\n".join(["", *lines]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        payload = {
            "environment": info,
            "settings": {k: str(v) for k, v in vars(settings).items()},
            "rows": [
                {
                    **row,
                    "cells": {
                        n: {**vars(c), "median_us": c.median} for n, c in row["cells"].items()
                    },
                }
                for row in rows
            ],
            "skipped": skipped,
        }
        args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    failed = any(c.error or check_failed(c) for r in rows for c in r["cells"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

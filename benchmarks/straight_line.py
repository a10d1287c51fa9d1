"""nograd's own kernels, written as one straight function, against nograd and the minimal loop.

What does nograd's Python cost? ``vs_torch.py`` races nograd against the minimal loop,
which differs from it twice: no modules (one function of raw torch ops), and other
kernels (its own dL/dz and momentum line, neither torch's bits; sixteen small updates
where nograd's flat group has two). This script separates the two. Its third variant,
**straight**, runs nograd's kernels in nograd's memory layout, but as one function with
no modules, no checks and no optimizer object:

- the parameters and their gradients live in two flat buffers, each parameter at the
  offset ``nograd.optim.flat`` gives it (``ALIGN_BYTES``);
- the forward is ``_addmm_activation`` per Linear and ReLU pair, ``addmm`` for the last
  layer, then ``log_softmax`` and ``nll_loss_forward`` (``Linear.forward_relu``,
  ``CrossEntropyLoss.forward``);
- the backward is ``nll_loss_backward`` and ``_log_softmax_backward_data``, then per
  layer dL/dW = g^T x and dL/db = sum_n g_n written straight into the gradient buffer
  and dL/dx = (g W) * [x > 0] by ``threshold_backward`` (``CrossEntropyLoss.backward``,
  ``Linear.backward``, ``ReLU.backward``);
- the update is SGD's momentum line on the flat buffers: b = g (a copy) at the first
  step, then b = mu b + g by ``addcmul`` in one pass, and p = p - lr b
  (``SGD._flat_momentum_step``).

So straight does what nograd does, kernel for kernel, and the row's last column checks
that both end with the same parameters, bit for bit. ``nograd.TrainStep`` is that
function made safe to use: the same straight lines, after checks that nothing they
depend on changed (``nograd/train_step.py``); it runs as a fifth variant, so that the
cost of those checks shows (TrainStep/straight), and must end with nograd's bits too.
Whatever nograd takes beyond straight's time is the Python of its modules, its loss and
its optimizer (the calls, the checks, the bookkeeping that lets a user add hooks or
change the learning rate between two steps). PyTorch's idiomatic loop (``vs_torch.py``'s)
runs in the same turns, so that straight's time is also measured against it. The
variants take turns chunk by chunk, as in ``vs_torch.py``. Nothing here is asserted on
time.

Usage: python benchmarks/straight_line.py [--batches 1,10,100,1000] [--repeats 15]
       [--threads 1] [--quick] [--out FILE]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import torch
from torch import Tensor

import _checkout  # noqa: F401  (a bare checkout: its src/ on the path)
from _common import (
    calls_per_chunk,
    machine_lines,
    markdown_table,
    median,
    positive_ints,
    print_report,
    timing_arguments,
)
from nograd.optim.flat import ALIGN_BYTES
from vs_torch import (
    OPTIMIZERS,
    Variant,
    initial_state,
    looped,
    make_batches,
    minimal_variant,
    nograd_variant,
    torch_variant,
    trainstep_variant,
)

SIZES = (2, 25, 25, 25, 2)
CHUNK_S = 0.025  # each timed chunk lasts at least this long
VARIANTS = ("nograd", "straight", "TrainStep", "minimal", "PyTorch")

_nll_loss_forward = torch.ops.aten.nll_loss_forward.default._op
_nll_loss_backward = torch.ops.aten.nll_loss_backward.default._op
_threshold_backward = torch.ops.aten.threshold_backward.default._op


def straight_variant(init: dict[str, Tensor], lr: float, momentum: float) -> Variant:
    """nograd's SGD training step on the reference network as one function (module doc)."""
    shapes = [t.shape for t in init.values()]  # W_1, b_1, W_2, ...
    align = ALIGN_BYTES // 4  # float32 numbers
    offsets, end = [], 0
    for shape in shapes:
        start = -(-end // align) * align
        offsets.append(start)
        end = start + shape.numel()
    data, grad = torch.zeros(end), torch.zeros(end)  # normal tensors, as nograd's buffers

    def views(flat: Tensor) -> list[Tensor]:
        return [flat[o : o + s.numel()].view(s) for o, s in zip(offsets, shapes, strict=True)]

    params, grads = views(data), views(grad)
    for p, value in zip(params, init.values(), strict=True):
        p.copy_(value)
    weights, biases = params[0::2], params[1::2]
    weights_t = [W.t() for W in weights]  # views: the updates show through
    weight_grads, bias_grads = grads[0::2], grads[1::2]
    one = torch.ones(())  # dL/dl = 1, and the 1 of (mu b) * 1
    momentum_buffer: list[Tensor] = []  # made at the first step

    def step(x: Tensor, y: Tensor) -> None:
        activations = [x]  # a_0 = x, a_l = relu(a_{l-1} W_l^T + b_l)
        for W_t, b in zip(weights_t[:-1], biases[:-1], strict=True):
            activations.append(torch._addmm_activation(b, activations[-1], W_t))
        z = torch.addmm(biases[-1], activations[-1], weights_t[-1])
        log_p = torch.log_softmax(z, 1)
        _, total_weight = _nll_loss_forward(log_p, y, None, 1, -100)  # the loss, "mean"
        grad_log_p = _nll_loss_backward(one, log_p, y, None, 1, -100, total_weight)
        # dL/dz = dL/dlog p - softmax(z) * sum_c dL/dlog p_c
        g = torch._log_softmax_backward_data(grad_log_p, log_p, 1, log_p.dtype)
        for layer in range(len(weights) - 1, -1, -1):
            a = activations[layer]
            torch.mm(g.t(), a, out=weight_grads[layer])  # dL/dW = g^T a
            torch.sum(g, 0, out=bias_grads[layer])  # dL/db = sum_n g_n
            if layer > 0:  # dL/da = (g W) * [a > 0]
                g = _threshold_backward(torch.mm(g, weights[layer]), a, 0)
        if not momentum_buffer:
            momentum_buffer.append(grad.clone())  # b = g at the first step
        else:
            b = momentum_buffer[0]
            torch.addcmul(grad, b, one, value=momentum, out=b)  # b = (mu b) * 1 + g
        data.add_(momentum_buffer[0], alpha=-lr)  # p = p - lr b

    return Variant(looped(step), lambda: params)


def row(batch: int, repeats: int) -> list[str]:
    """A table row: each variant's us/step, the ratios, and whether the bits agree."""
    init = initial_state(SIZES)
    batches = make_batches("ref", batch, 0, torch.device("cpu"), torch.float32)
    _, options = OPTIMIZERS["sgd"]
    cpu = torch.device("cpu")
    variants = {
        "nograd": nograd_variant(SIZES, init, "sgd", cpu, torch.float32),
        "straight": straight_variant(init, options["lr"], options["momentum"]),
        "TrainStep": trainstep_variant(SIZES, init, "sgd", cpu, torch.float32),
        "minimal": minimal_variant(SIZES, init, "sgd", cpu, torch.float32),
        "PyTorch": torch_variant(SIZES, init, "sgd", cpu, torch.float32),
    }
    for variant in variants.values():
        variant.train(batches, 1)  # warm up: the first steps plan, flatten, make buffers
    # sized on the minimal loop, whose parameters nobody compares: nograd and straight
    # take the same steps
    epochs = calls_per_chunk(lambda: variants["minimal"].train(batches, 1), CHUNK_S)
    steps = epochs * len(batches)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for turn in range(repeats):
        shift = turn % len(VARIANTS)  # each runs in each place of the turn in turn
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            start = time.perf_counter()
            variants[name].train(batches, epochs)
            times[name].append((time.perf_counter() - start) / steps * 1e6)

    def ratio(name: str, other: str) -> str:
        pairs = zip(times[name], times[other], strict=True)
        return f"{median([mine / theirs for mine, theirs in pairs]):.3f}"

    def same(name: str) -> str:
        pairs = zip(variants["nograd"].parameters(), variants[name].parameters(), strict=True)
        return "✓" if all(torch.equal(a, b) for a, b in pairs) else "✗ differ"

    return [
        str(batch),
        *(f"{median(times[name]):.1f}" for name in VARIANTS),
        ratio("nograd", "minimal"),
        ratio("straight", "minimal"),
        ratio("straight", "nograd"),
        ratio("straight", "PyTorch"),
        ratio("TrainStep", "straight"),
        ratio("TrainStep", "PyTorch"),
        same("straight"),
        same("TrainStep"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = timing_arguments(__doc__ or "", 15, "batch 1000, 2 turns")
    parser.add_argument("--batches", type=positive_ints, default=[1, 10, 100, 1000])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    repeats = args.repeats or 15
    if args.quick:
        args.batches, repeats = [1000], 2
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows = []
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's generator alone
            for batch in args.batches:
                rows.append(row(batch, repeats))
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(before)
    lines = [*machine_lines(torch.device("cpu")), ""]
    lines += [
        f"Reference network {'-'.join(map(str, SIZES))}, SGD (lr 0.05, momentum 0.9), "
        f"{args.threads} thread(s); median of {repeats} turns",
        "",
    ]
    header = [
        "batch", *(f"{name} (us/step)" for name in VARIANTS), "nograd/minimal",
        "straight/minimal", "straight/nograd", "straight/PyTorch", "TrainStep/straight",
        "TrainStep/PyTorch", "straight = nograd, bit for bit", "TrainStep = nograd",
    ]  # fmt: skip
    lines += markdown_table(header, rows)
    print_report(lines, args.out)
    return 0 if all(r[-1] == r[-2] == "✓" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

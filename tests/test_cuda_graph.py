"""GraphedTrainStep: N graphed steps train exactly as N eager steps.

Without a GPU the CUDA graph is emulated (``FakeCuda``): a dispatch mode records every
aten op of the capture, undoes what the capture wrote, and a replay re-runs the recorded
ops on the recorded tensors. Python code therefore runs once, at the capture, and Python
numbers are frozen, as on a GPU, so these tests catch what a real graph would get wrong
(Adam's step count, a changed lr). Host reads (.item(), .tolist()) raise during capture.
The tests marked ``cuda`` run the real thing and skip without a GPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import nograd.cuda_graph
from nograd.cuda_graph import GraphedTrainStep
from nograd.nn import (
    CrossEntropyLoss,
    Dropout,
    Linear,
    Module,
    MSELoss,
    Parameter,
    ReLU,
    Sequential,
    Tanh,
)
from nograd.nn.utils import clip_grad_norm_
from nograd.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from nograd.optim.capturable_adam import adam_step_counts, capturable_adam_step
from nograd.optim.lr_scheduler import StepLR
from tests.oracle import tolerance

HOST_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}
OPTIMIZERS: list[tuple[type[Optimizer], dict[str, Any]]] = [
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
    (Adam, {"lr": 0.01}),
    (Adam, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    (Adam, {"lr": 0.0}),
    (AdamW, {"lr": 0.01, "betas": (0.5, 0.8), "eps": 1e-3}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "fused": True}),  # torch._fused_sgd_ in the capture
]
IDS = [f"{cls.__name__}-{options}" for cls, options in OPTIMIZERS]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------ the emulator
class _FakeStream:
    def __init__(self, fake: FakeCuda, name: str) -> None:
        self.fake, self.name, self.device = fake, name, None

    def wait_stream(self, other: _FakeStream) -> None:
        self.fake.timeline.append(f"{self.name} waits for {other.name}")


class _Capture(TorchDispatchMode):
    """Record each op, and keep what a mutating op overwrote so the capture can undo it.

    ``timeline`` gets "<stream>: <op>" for each op, and the streams' waits, in order.
    """

    def __init__(self, fake: FakeCuda) -> None:
        super().__init__()
        self.fake = fake
        self.ops: list[tuple[Any, tuple[Any, ...], dict[str, Any], Any]] = []
        self.overwritten: list[tuple[Tensor, Tensor]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in HOST_READS:
            raise RuntimeError(f"operation not permitted when stream is capturing ({func})")
        for i, argument in enumerate(func._schema.arguments):
            if argument.alias_info is not None and argument.alias_info.is_write:
                value = args[i] if i < len(args) else kwargs.get(argument.name)
                for tensor in tree_leaves(value):
                    if isinstance(tensor, Tensor):
                        self.overwritten.append((tensor, tensor.clone()))
        out = func(*args, **kwargs)
        if not func.is_view:  # a view aliases memory that is recorded already
            self.ops.append((func, args, kwargs, out))
            self.fake.timeline.append(f"{self.fake.active.name}: {func.overloadpacket.__name__}")
        return out


class _FakeGraph:
    def __init__(self) -> None:
        self.ops: list[tuple[Any, tuple[Any, ...], dict[str, Any], Any]] = []

    def replay(self) -> None:
        for func, args, kwargs, out in self.ops:
            result = func(*args, **kwargs)
            if func._schema.is_mutable:
                continue  # it wrote into the recorded tensors itself
            for static, fresh in zip(tree_leaves(out), tree_leaves(result), strict=True):
                if isinstance(static, Tensor):
                    static.copy_(fresh)  # an out-of-place op writes to its fixed address


def _refuse_tolist(self: Tensor) -> Any:
    raise RuntimeError("called a synchronizing CUDA operation (tolist)")


class _SyncCheck(TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in HOST_READS:
            raise RuntimeError(f"called a synchronizing CUDA operation ({func})")
        return func(*args, **(kwargs or {}))


class FakeCuda:
    """Stands in for torch.cuda's streams, graphs and sync debug mode on the CPU."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.sync_check: _SyncCheck | None = None
        self.timeline: list[str] = []  # what the last capture ran where, and the waits
        self.stream_names: list[str] = []  # names for the next streams made, else "side"
        self.active = self.default = _FakeStream(self, "main")
        for name, value in {
            "CUDAGraph": _FakeGraph,
            "graph": self.graph,
            "Stream": lambda device=None: _FakeStream(self, self._next_stream_name()),
            "current_stream": lambda device=None: self.active,
            "stream": self.stream,
            "get_sync_debug_mode": lambda: 0,
            "set_sync_debug_mode": self.set_sync_debug_mode,
        }.items():
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.setattr(
            Tensor, "record_stream", lambda t, stream: self.record_stream(t, stream)
        )
        monkeypatch.setattr(nograd.cuda_graph, "_require_cuda", lambda tensor, name: None)
        self.tolist = Tensor.tolist
        monkeypatch.setattr(Tensor, "tolist", Tensor.tolist)  # restored after each test

    def _next_stream_name(self) -> str:
        return self.stream_names.pop(0) if self.stream_names else "side"

    @contextlib.contextmanager
    def stream(self, stream: _FakeStream) -> Iterator[None]:
        previous, self.active = self.active, stream
        try:
            yield
        finally:
            self.active = previous

    def record_stream(self, tensor: Tensor, stream: _FakeStream) -> None:
        self.timeline.append(f"a tensor {tuple(tensor.shape)} is marked in use by {stream.name}")

    @contextlib.contextmanager
    def graph(self, graph: _FakeGraph) -> Iterator[None]:
        self.timeline = []
        capture = _Capture(self)
        Tensor.tolist = _refuse_tolist  # type: ignore[method-assign]
        try:
            with capture:
                yield
        finally:
            Tensor.tolist = self.tolist  # type: ignore[method-assign]
            for tensor, before in reversed(capture.overwritten):
                tensor.copy_(before)  # a capture records work; it runs none
        graph.ops = capture.ops

    def set_sync_debug_mode(self, mode: int | str) -> None:
        if mode == "error" and self.sync_check is None:
            self.sync_check = _SyncCheck()
            self.sync_check.__enter__()
            Tensor.tolist = _refuse_tolist  # type: ignore[method-assign]
        elif mode != "error" and self.sync_check is not None:
            self.sync_check.__exit__(None, None, None)
            self.sync_check = None
            Tensor.tolist = self.tolist  # type: ignore[method-assign]


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    return FakeCuda(monkeypatch)


# ---------------------------------------------------------------------- helpers
def make_model(dtype: torch.dtype = torch.float64, seed: int = 0) -> Sequential:
    torch.manual_seed(seed)
    return Sequential(Linear(4, 8), ReLU(), Linear(8, 8), Tanh(), Linear(8, 3)).to(dtype)


def make_batches(n: int, dtype: torch.dtype, classes: bool = False) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(n):
        x = torch.randn(6, 4, generator=generator, dtype=dtype)
        y = (
            torch.randint(0, 3, (6,), generator=generator)
            if classes
            else torch.randn(6, 3, generator=generator, dtype=dtype)
        )
        batches.append((x, y))
    return batches


def eager_losses(
    model: Module,
    loss_fn: Module,
    optimizer: Optimizer,
    batches: list[tuple[Tensor, Tensor]],
    after_step: Callable[[], None] = lambda: None,
) -> list[Tensor]:
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()
        after_step()
        losses.append(loss.clone())
    return losses


class Peeking(Module):
    """Reads its input's largest value on the host: a sync that a capture cannot do."""

    def forward(self, x: Tensor) -> Tensor:
        self.largest = float(x.max())  # a host sync
        return x

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output


def assert_same_training(ours: Module, reference: Module) -> None:
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.data, q.data, **tolerance(p.dtype), msg=name)


# ---------------------------------------------------------------- CPU: arguments
def test_refuses_cpu_tensors() -> None:
    model = make_model()
    x, y = make_batches(1, torch.float64)[0]
    with pytest.raises(ValueError, match="CUDA graphs need CUDA tensors, got example_input on cpu"):
        GraphedTrainStep(model, MSELoss(), SGD(model.parameters()), x, y)


def test_validates_arguments() -> None:
    model = make_model()
    x, y = make_batches(1, torch.float64)[0]
    sgd = SGD(model.parameters())
    with pytest.raises(TypeError, match="expected model to be a nograd Module"):
        GraphedTrainStep(torch.nn.Linear(4, 3), MSELoss(), sgd, x, y)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected an SGD, Adam or AdamW optimizer"):
        GraphedTrainStep(model, MSELoss(), RMSprop(model.parameters()), x, y)
    with pytest.raises(TypeError, match="expected example_target to be a Tensor"):
        GraphedTrainStep(model, MSELoss(), sgd, x, [1, 2])  # type: ignore[arg-type]
    for warmup in (0, True, 2.0):
        with pytest.raises(ValueError, match="expected warmup to be an int >= 1"):
            GraphedTrainStep(model, MSELoss(), sgd, x, y, warmup=warmup)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction='none'"):
        GraphedTrainStep(model, MSELoss(reduction="none"), sgd, x, y)
    dropping = Sequential(Linear(4, 3), Dropout(0.5, generator=torch.Generator()))
    with pytest.raises(ValueError, match=r"Dropout\(p=0.5.*own torch.Generator"):
        GraphedTrainStep(dropping, MSELoss(), SGD(dropping.parameters()), x, y)


def test_refuses_a_model_on_another_device(fake_cuda: FakeCuda) -> None:
    model = make_model()
    x, y = (t.to("meta") for t in make_batches(1, torch.float64)[0])
    with pytest.raises(ValueError, match=r"expected the model on meta.*'0\.weight' on cpu"):
        GraphedTrainStep(model, MSELoss(), SGD(model.parameters()), x, y)


def test_batches_must_match_the_example(fake_cuda: FakeCuda) -> None:
    model = make_model()
    x, y = make_batches(1, torch.float64)[0]
    step = GraphedTrainStep(model, MSELoss(), SGD(model.parameters()), x, y)
    with pytest.raises(ValueError, match=r"input of shape \(6, 4\).*partial batch.*got \(5, 4\)"):
        step(x[:5], y[:5])
    with pytest.raises(ValueError, match=r"target of shape \(6, 3\).*got \(6, 2\)"):
        step(x, y[:, :2])
    with pytest.raises(TypeError, match=r"input of dtype torch\.float64.*got torch\.float32"):
        step(x.float(), y)
    assert model.needs_input_grad is False  # set by the constructor: nobody wants dL/dx
    assert (step.input_shape, step.target_shape) == ((6, 4), (6, 3))


# ----------------------------------------------------- CPU: the emulated graph
@pytest.mark.parametrize(("cls", "options"), OPTIMIZERS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("per_layer", [False, True], ids=["one update", "update per layer"])
def test_graphed_steps_train_as_eager_steps(
    fake_cuda: FakeCuda,
    cls: type[Optimizer],
    options: dict[str, Any],
    dtype: torch.dtype,
    per_layer: bool,
) -> None:
    model, reference = make_model(dtype), make_model(dtype)
    batches = make_batches(20, dtype)
    optimizer = cls(model.parameters(), **options)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0], update_per_layer=per_layer)
    losses = [step(x, y).clone() for x, y in batches]
    expected = eager_losses(reference, MSELoss(), cls(reference.parameters(), **options), batches)
    assert step.captures == 1
    assert step.updates_per_layer is per_layer
    assert_same_training(model, reference)
    torch.testing.assert_close(torch.stack(losses), torch.stack(expected), **tolerance(dtype))
    assert step.output.shape == (6, 3)


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize(("cls", "options"), [OPTIMIZERS[1], OPTIMIZERS[5]], ids=[IDS[1], IDS[5]])
def test_frozen_parameters_stay_frozen_in_the_graph(
    fake_cuda: FakeCuda, cls: type[Optimizer], options: dict[str, Any], per_layer: bool
) -> None:
    model, reference = make_model(), make_model()
    for net in (model, reference):
        net[0].freeze()  # the first Linear whole, and the last one's bias
        net[4].bias.trainable = False
    frozen = [p.data.clone() for p in model.parameters() if not p.trainable]
    batches = make_batches(10, torch.float64)
    optimizer = cls(model.parameters(), **options)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0], update_per_layer=per_layer)
    for x, y in batches:
        step(x, y)
    eager_losses(reference, MSELoss(), cls(reference.parameters(), **options), batches)
    assert_same_training(model, reference)
    still = [p.data for p in model.parameters() if not p.trainable]
    assert all(torch.equal(a, b) for a, b in zip(still, frozen, strict=True))
    assert not torch.equal(model[2].weight.data, make_model()[2].weight.data)  # the rest trained


CLIPPED = [OPTIMIZERS[1], OPTIMIZERS[4]]  # SGD with momentum, Adam


def _clipped_graph_vs_eager(cls: type[Optimizer], options: dict[str, Any], device: str) -> None:
    """The norm is computed and applied on the device, so the graph replays the clipping."""
    model = make_model(torch.float64).to(device)
    reference = make_model(torch.float64).to(device)
    batches = [(x.to(device), y.to(device)) for x, y in make_batches(12, torch.float64)]
    optimizer = cls(model.parameters(), **options)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0], clip_grad_norm=0.05)
    for x, y in batches:
        step(x, y)
    ref_optimizer = cls(reference.parameters(), **options)
    norms = []

    def clip_then_step() -> None:  # eager_losses's step, with the clipping before it
        norms.append(float(clip_grad_norm_(reference.parameters(), 0.05)))
        original_step()

    original_step, ref_optimizer.step = ref_optimizer.step, clip_then_step  # type: ignore[method-assign]
    eager_losses(reference, MSELoss(), ref_optimizer, batches)
    assert step.captures == 1
    assert min(norms) > 0.05  # every step was clipped
    assert_same_training(model, reference)


def test_clipping_in_the_graph_takes_the_models_order(fake_cuda: FakeCuda) -> None:
    """Param groups that list the head first: the graph clips the gradients in the
    model's order, as fit's eager steps and a torch loop's clip_grad_norm_(
    model.parameters()) do (the norm sums one norm per tensor, in that order)."""
    model, reference = make_model(), make_model()

    def head_first(net: Sequential) -> list[dict[str, Any]]:
        rest = [*net[0].parameters(), *net[2].parameters()]
        return [{"params": list(net[4].parameters())}, {"params": rest, "lr": 0.05}]

    batches = make_batches(12, torch.float64)
    step = GraphedTrainStep(
        model, MSELoss(), Adam(head_first(model), lr=0.1), *batches[0], clip_grad_norm=0.05
    )
    assert step.clipped == list(model.parameters())
    for x, y in batches:
        step(x, y)
    ref_optimizer = Adam(head_first(reference), lr=0.1)

    def clip_then_step() -> None:
        clip_grad_norm_(reference.parameters(), 0.05)
        original_step()

    original_step, ref_optimizer.step = ref_optimizer.step, clip_then_step  # type: ignore[method-assign]
    eager_losses(reference, MSELoss(), ref_optimizer, batches)
    assert_same_training(model, reference)


@pytest.mark.parametrize(("cls", "options"), CLIPPED, ids=[IDS[1], IDS[4]])
def test_graphed_steps_with_clipping_train_as_eager_steps(
    fake_cuda: FakeCuda, cls: type[Optimizer], options: dict[str, Any]
) -> None:
    _clipped_graph_vs_eager(cls, options, "cpu")


def test_clipping_refuses_updates_per_layer_and_a_bad_norm() -> None:
    model = make_model()
    x, y = make_batches(1, torch.float64)[0]
    sgd = SGD(model.parameters())
    with pytest.raises(ValueError, match="clip_grad_norm needs every gradient"):
        GraphedTrainStep(model, MSELoss(), sgd, x, y, update_per_layer=True, clip_grad_norm=1.0)
    for bad in (0, -1.0, math.nan, True, "1"):
        with pytest.raises(ValueError, match="clip_grad_norm must be a positive number"):
            GraphedTrainStep(model, MSELoss(), sgd, x, y, clip_grad_norm=bad)  # type: ignore[arg-type]


def test_one_side_stream_can_take_both_gradients(fake_cuda: FakeCuda) -> None:
    """Without a bias stream, dL/db goes where dL/dW goes; with one, each has its own."""
    grad_stream = nograd.nn.grad_stream
    fake_cuda.stream_names = ["side", "bias"]
    side, bias = torch.cuda.Stream(), torch.cuda.Stream()  # type: ignore[no-untyped-call]
    with grad_stream.parameter_grads_on_side_stream(side):
        assert grad_stream.side is side and grad_stream.bias_side is side
        assert grad_stream.sides() == [side]
    assert fake_cuda.timeline[-1:] == ["main waits for side"]  # one join
    with grad_stream.parameter_grads_on_side_stream(side, bias):
        assert grad_stream.sides() == [side, bias]
    assert fake_cuda.timeline[-2:] == ["main waits for side", "main waits for bias"]
    assert grad_stream.side is grad_stream.bias_side is None and grad_stream.sides() == []


def test_the_capture_runs_parameter_gradients_on_side_streams(fake_cuda: FakeCuda) -> None:
    """Each Linear forks dL/dW to one side stream and dL/db to another; then the join."""
    model = make_model()
    batches = make_batches(4, torch.float64)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0])
    for x, y in batches[:3]:  # 3 warm-up steps on one stream
        step(x, y)
    fake_cuda.stream_names = ["side", "bias"]  # the capture's dL/dW and dL/db streams
    step(*batches[3])
    timeline = fake_cuda.timeline
    side_ops = [entry for entry in timeline if entry.startswith(("side:", "bias:"))]
    assert side_ops == ["side: mm", "bias: sum"] * 3  # the 3 Linears, last one first
    forks = [i for i, entry in enumerate(timeline) if entry == "side waits for main"]
    assert len(forks) == 3
    for fork in forks:  # the fork, g and x marked in use, dL/dW; then the same for dL/db
        assert timeline[fork + 1].endswith("marked in use by side")
        assert timeline[fork + 2].endswith("marked in use by side")
        assert timeline[fork + 3] == "side: mm"
        assert timeline[fork + 4] == "bias waits for main"
        assert timeline[fork + 5].endswith("marked in use by bias")  # g only
        assert timeline[fork + 6] == "bias: sum"
    assert timeline.count("main waits for side") == timeline.count("main waits for bias") == 1
    join = timeline.index("main waits for bias")
    assert join == timeline.index("main waits for side") + 1
    last_side = max(i for i, entry in enumerate(timeline) if entry.startswith(("side:", "bias:")))
    assert join > last_side
    update = timeline[join + 1 :]
    assert update and all(entry.startswith("main:") for entry in update)
    assert [e for e in timeline[:join] if "foreach" in e or e.endswith("_")] == []  # no update yet
    # the warm-up and eager steps use one stream: nothing forks outside the capture
    assert nograd.nn.grad_stream.side is None and nograd.nn.grad_stream.bias_side is None


def test_the_capture_updates_each_layer_after_its_backward(fake_cuda: FakeCuda) -> None:
    """Each Linear's update forks to the update stream after its dL/dx and its dL/dW."""
    model = make_model()
    batches = make_batches(4, torch.float64)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0], update_per_layer=True)
    for x, y in batches[:3]:  # warm-up steps
        step(x, y)
    fake_cuda.stream_names = ["side", "bias", "update"]  # the capture's streams
    step(*batches[3])
    timeline = fake_cuda.timeline
    forks = [i for i, entry in enumerate(timeline) if entry == "update waits for main"]
    assert len(forks) == 3  # one per Linear; ReLU and Tanh have no parameters
    for fork in forks:  # all three streams first, then the gradients marked, then the update
        assert timeline[fork + 1 : fork + 3] == ["update waits for side", "update waits for bias"]
        marks = timeline[fork + 3 : fork + 5]
        assert all(mark.endswith("marked in use by update") for mark in marks)
        assert timeline[fork + 5].startswith("update: ")
    # the last Linear's update forks after its dL/dx (mm on main), before the layers below
    last_dx = next(i for i, e in enumerate(timeline) if e == "main: mm")
    assert last_dx < forks[0] < timeline.index("main: threshold_backward")
    for i, entry in enumerate(timeline):  # side: only dL/dW and dL/db; main: no update
        if entry.startswith(("side: ", "bias: ")):
            assert entry in ("side: mm", "bias: sum")
        if entry.startswith("update: "):
            assert any(fork < i for fork in forks)
    join = timeline.index("main waits for update")
    assert join > max(i for i, e in enumerate(timeline) if e.startswith("update: "))
    assert timeline[join + 1 :] == []  # nothing is left to update after the backward


@pytest.mark.parametrize(("cls", "options"), [(SGD, {"momentum": 0.9}), (Adam, {})])
def test_per_layer_updates_with_a_nested_model_and_two_groups(
    fake_cuda: FakeCuda, cls: type[Optimizer], options: dict[str, Any]
) -> None:
    """A nested Sequential is updated after its whole backward; each group's t once a step."""

    def build() -> tuple[Sequential, Optimizer]:
        torch.manual_seed(0)
        model = Sequential(Sequential(Linear(4, 8), ReLU()), Linear(8, 8), Tanh(), Linear(8, 3))
        model = model.to(torch.float64)
        later = [*model[1].parameters(), *model[3].parameters()]
        groups = [{"params": list(model[0].parameters())}, {"params": later, "lr": 0.05}]
        return model, cls(groups, lr=0.01, **options)

    (model, optimizer), (reference, reference_optimizer) = build(), build()
    batches = make_batches(10, torch.float64)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0], update_per_layer=True)
    for x, y in batches:
        step(x, y)
    eager_losses(reference, MSELoss(), reference_optimizer, batches)
    assert step.updates_per_layer
    assert_same_training(model, reference)


def test_a_shared_weight_or_a_custom_backward_updates_at_the_end(fake_cuda: FakeCuda) -> None:
    shared = Linear(4, 4)
    tied = Sequential(shared, ReLU(), shared, Linear(4, 3)).to(torch.float64)

    class Residual(Sequential):
        def backward(self, grad_output: Tensor) -> Tensor:
            return super().backward(grad_output) + grad_output

    for model in (tied, Residual(Linear(4, 4), Tanh(), Linear(4, 4)).to(torch.float64)):
        x, y = make_batches(1, torch.float64)[0]
        y = y if model is tied else torch.randn(6, 4, dtype=torch.float64)
        sgd = SGD(model.parameters(), lr=0.1)
        step = GraphedTrainStep(model, MSELoss(), sgd, x, y, update_per_layer=True)
        assert step.updates_per_layer is False
    with pytest.raises(TypeError, match="expected update_per_layer to be a bool, got 1"):
        GraphedTrainStep(tied, MSELoss(), sgd, x, y, update_per_layer=1)  # type: ignore[arg-type]


def test_the_emulator_freezes_python_numbers(
    fake_cuda: FakeCuda, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain Adam.step in a graph replays the bias correction of its capture: wrong."""
    monkeypatch.setattr(
        nograd.cuda_graph, "capturable_adam_step", lambda optimizer, *args: optimizer.step()
    )
    model, reference = make_model(), make_model()
    batches = make_batches(20, torch.float64)
    step = GraphedTrainStep(model, MSELoss(), Adam(model.parameters(), lr=0.01), *batches[0])
    for x, y in batches:
        step(x, y)
    eager_losses(reference, MSELoss(), Adam(reference.parameters(), lr=0.01), batches)
    with pytest.raises(AssertionError):
        assert_same_training(model, reference)


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_a_scheduler_triggers_a_new_capture(fake_cuda: FakeCuda, cls: type[Optimizer]) -> None:
    model, reference = make_model(), make_model()
    batches = make_batches(20, torch.float64)
    optimizer, reference_optimizer = (
        cls(model.parameters(), lr=0.1),
        cls(reference.parameters(), lr=0.1),
    )
    scheduler, reference_scheduler = StepLR(optimizer, 4, 0.5), StepLR(reference_optimizer, 4, 0.5)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0])
    for x, y in batches:
        step(x, y)
        scheduler.step()
    eager_losses(reference, MSELoss(), reference_optimizer, batches, reference_scheduler.step)
    assert step.captures == 5  # the first at call 4, then a new lr at calls 5, 9, 13 and 17
    assert_same_training(model, reference)
    if cls is Adam:  # the Python step count followed the device's
        assert {state["step"] for state in optimizer.state.values()} == {20.0}


def test_a_mode_change_triggers_a_new_capture(fake_cuda: FakeCuda) -> None:
    model = make_model()
    batches = make_batches(6, torch.float64)
    step = GraphedTrainStep(
        model, MSELoss(), SGD(model.parameters(), lr=0.1), *batches[0], warmup=1
    )
    for i, (x, y) in enumerate(batches):
        model.train(i < 4)
        step(x, y)
    assert step.captures == 2


def test_a_host_sync_is_reported_before_the_capture(fake_cuda: FakeCuda) -> None:
    model = Sequential(Linear(4, 3), Peeking()).to(torch.float64)
    x, y = make_batches(1, torch.float64)[0]
    step = GraphedTrainStep(model, MSELoss(), SGD(model.parameters()), x, y, warmup=2)
    step(x, y)  # the first warm-up step does not check
    with pytest.raises(RuntimeError, match=r"waits for the GPU.*cannot capture"):
        step(x, y)


# ----------------------------------------------- CPU: capturable Adam, host syncs
@pytest.mark.parametrize(
    "options", [{}, {"weight_decay": 0.1, "amsgrad": True}, {"maximize": True, "lr": 0.1}]
)
@pytest.mark.parametrize("decoupled", [False, True])
def test_capturable_adam_matches_torch(options: dict[str, Any], decoupled: bool) -> None:
    torch.manual_seed(0)
    p = torch.randn(5, 3, dtype=torch.float64)
    grads = [torch.randn(5, 3, dtype=torch.float64) for _ in range(12)]
    ours = Parameter(p.clone())
    twin = p.clone().requires_grad_()
    cls, twin_cls = (AdamW, torch.optim.AdamW) if decoupled else (Adam, torch.optim.Adam)
    optimizer, twin_optimizer = cls([ours], **options), twin_cls([twin], **options)
    for g in grads[:2]:  # eager steps first: they create the state
        ours.grad, twin.grad = g.clone(), g.clone()
        optimizer.step()
        twin_optimizer.step()
    steps = adam_step_counts(optimizer)
    for g in grads[2:]:
        ours.grad, twin.grad = g.clone(), g.clone()
        capturable_adam_step(optimizer, steps)
        twin_optimizer.step()
    torch.testing.assert_close(ours.data, twin.detach(), rtol=1e-10, atol=1e-12)
    assert float(steps[0]) == 12


def test_adam_step_counts_refuses_uneven_groups() -> None:
    first, second = Parameter(torch.zeros(2)), Parameter(torch.zeros(2))
    optimizer = Adam([first, second])
    first.grad = torch.ones(2)
    optimizer.step()
    second.grad = torch.ones(2)
    with pytest.raises(ValueError, match="has a gradient but no Adam state"):
        capturable_adam_step(optimizer, adam_step_counts(optimizer))
    optimizer.step()
    with pytest.raises(ValueError, match=r"same number of steps, got step counts \[1.0, 2.0\]"):
        adam_step_counts(optimizer)


def test_a_zero_grad_between_calls_changes_nothing(fake_cuda: FakeCuda) -> None:
    model, reference = make_model(), make_model()
    batches = make_batches(12, torch.float64)
    optimizer, reference_optimizer = Adam(model.parameters()), Adam(reference.parameters())
    scheduler, reference_scheduler = StepLR(optimizer, 5), StepLR(reference_optimizer, 5)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0])
    for x, y in batches:
        step(x, y)
        optimizer.zero_grad()  # before each re-capture too
        scheduler.step()
    eager_losses(reference, MSELoss(), reference_optimizer, batches, reference_scheduler.step)
    assert step.captures == 3
    assert_same_training(model, reference)


def _step_on_meta(loss_fn: Module, optimizer_cls: type[Optimizer], classes: bool) -> None:
    """One training step on the meta device, where any read of a value raises."""
    model = Sequential(Linear(300, 8), ReLU(), Linear(8, 3)).to("meta")
    x = torch.empty(300, 300, device="meta")
    y = (
        torch.empty(300, dtype=torch.long, device="meta")
        if classes
        else torch.empty(300, 3, device="meta")
    )
    optimizer = optimizer_cls(model.parameters())
    for _ in range(2):
        optimizer.zero_grad(set_to_none=False)
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()
    if isinstance(optimizer, Adam):
        capturable_adam_step(optimizer, adam_step_counts(optimizer))


@pytest.mark.parametrize("optimizer_cls", [SGD, Adam])
def test_the_step_reads_no_values_on_the_host(optimizer_cls: type[Optimizer]) -> None:
    _step_on_meta(MSELoss(), optimizer_cls, classes=False)


def test_cross_entropy_reads_no_values_on_the_host() -> None:
    _step_on_meta(CrossEntropyLoss(), SGD, classes=True)


# ---------------------------------------------------------- GPU: the real thing
def _graphed_vs_eager(
    cls: type[Optimizer],
    options: dict[str, Any],
    dtype: torch.dtype,
    loss_fn: Module,
    classes: bool = False,
    schedule: bool = False,
    per_layer: bool = False,
) -> GraphedTrainStep:
    model, reference = make_model(dtype).to("cuda"), make_model(dtype).to("cuda")
    batches = [(x.cuda(), y.cuda()) for x, y in make_batches(20, dtype, classes)]
    optimizer, reference_optimizer = (
        cls(model.parameters(), **options),
        cls(reference.parameters(), **options),
    )
    scheduler, reference_scheduler = StepLR(optimizer, 5, 0.5), StepLR(reference_optimizer, 5, 0.5)
    step = GraphedTrainStep(model, loss_fn, optimizer, *batches[0], update_per_layer=per_layer)
    assert step.updates_per_layer is per_layer
    losses = []
    for x, y in batches:
        losses.append(step(x, y).clone())
        if schedule:
            scheduler.step()
    after = reference_scheduler.step if schedule else lambda: None
    expected = eager_losses(reference, copy.deepcopy(loss_fn), reference_optimizer, batches, after)
    torch.cuda.synchronize()
    assert_same_training(model, reference)
    torch.testing.assert_close(torch.stack(losses), torch.stack(expected), **tolerance(dtype))
    return step


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("cls", "options"),
    [(SGD, {"lr": 0.1, "momentum": 0.9}), (Adam, {"lr": 0.01}), (AdamW, {"amsgrad": True})],
)
@pytest.mark.parametrize("per_layer", [False, True], ids=["one update", "update per layer"])
def test_cuda_graphed_steps_train_as_eager_steps(
    cls: type[Optimizer], options: dict[str, Any], dtype: torch.dtype, per_layer: bool
) -> None:
    step = _graphed_vs_eager(cls, options, dtype, MSELoss(), per_layer=per_layer)
    assert step.captures == 1


@cuda
@pytest.mark.parametrize(("cls", "options"), CLIPPED, ids=[IDS[1], IDS[4]])
def test_cuda_graphed_steps_with_clipping_train_as_eager_steps(
    cls: type[Optimizer], options: dict[str, Any]
) -> None:
    _clipped_graph_vs_eager(cls, options, "cuda")


@cuda
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_cuda_scheduler_recaptures(cls: type[Optimizer]) -> None:
    step = _graphed_vs_eager(cls, {"lr": 0.1}, torch.float32, MSELoss(), schedule=True)
    assert step.captures == 4  # calls 4 (first capture), 6, 11 and 16 (new lr)


@cuda
def test_cuda_cross_entropy() -> None:
    _graphed_vs_eager(SGD, {"lr": 0.1, "momentum": 0.9}, torch.float32, CrossEntropyLoss(), True)


@cuda
@pytest.mark.parametrize("per_layer", [False, True], ids=["one update", "update per layer"])
def test_cuda_side_stream_gradients_are_joined_before_the_update(per_layer: bool) -> None:
    """Wide layers make each dL/dW long enough that a missing fork, wait or join would show.

    With an update per layer, a layer updated before its dL/dx had read the weight, or
    before its dL/dW was done, would train otherwise than the eager steps.
    """
    torch.manual_seed(0)
    model = Sequential(Linear(256, 2048), ReLU(), Linear(2048, 2048), ReLU(), Linear(2048, 10))
    model = model.to("cuda", torch.float64)
    reference = copy.deepcopy(model)
    generator = torch.Generator(device="cuda").manual_seed(1)
    batches = [
        (
            torch.randn(1024, 256, generator=generator, device="cuda", dtype=torch.float64),
            torch.randint(0, 10, (1024,), generator=generator, device="cuda"),
        )
        for _ in range(8)
    ]
    options = {"lr": 0.05, "momentum": 0.9}
    optimizer = SGD(model.parameters(), **options)
    step = GraphedTrainStep(
        model, CrossEntropyLoss(), optimizer, *batches[0], update_per_layer=per_layer
    )
    losses = [step(x, y).clone() for x, y in batches]
    expected = eager_losses(
        reference, CrossEntropyLoss(), SGD(reference.parameters(), **options), batches
    )
    torch.cuda.synchronize()
    assert_same_training(model, reference)
    torch.testing.assert_close(
        torch.stack(losses), torch.stack(expected), **tolerance(torch.float64)
    )


@cuda
def test_cuda_host_sync_is_reported_before_the_capture() -> None:
    model = Sequential(Linear(4, 3), Peeking()).to("cuda")
    x, y = (t.float().cuda() for t in make_batches(1, torch.float32)[0])
    step = GraphedTrainStep(model, MSELoss(), SGD(model.parameters()), x, y, warmup=2)
    step(x, y)
    with pytest.raises(RuntimeError, match=r"waits for the GPU.*cannot capture"):
        step(x, y)
    assert torch.cuda.get_sync_debug_mode() == 0  # put back


@pytest.mark.parametrize("change", ["unfreeze", "freeze"])
def test_freezing_or_unfreezing_after_the_capture_raises(fake_cuda: FakeCuda, change: str) -> None:
    """The graph computes the gradients it captured, and a parameter that starts to learn
    needs its optimizer state made by an eager step: a replay after the change refuses."""
    model = make_model()
    model[0].freeze()
    batches = make_batches(6, torch.float64)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = GraphedTrainStep(model, MSELoss(), optimizer, *batches[0])
    for x, y in batches[:5]:
        step(x, y)  # 3 warm-up steps, the capture, a replay
    model[4].weight.trainable = True  # a change elsewhere that leaves every flag as it was
    step(*batches[0])
    if change == "unfreeze":
        model[0].unfreeze()
    else:
        model[2].weight.trainable = False
    name = "0.weight, 0.bias" if change == "unfreeze" else "2.weight"
    with pytest.raises(RuntimeError, match=f"GraphedTrainStep: {name} was frozen or unfrozen"):
        step(*batches[5])

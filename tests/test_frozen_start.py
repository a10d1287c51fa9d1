"""A frozen start: when nobody wants dL/d(input) (``needs_input_grad = False``, as
``fit`` sets it), a Sequential's backward starts at the first child with a trainable
parameter, as torch's autograd stops where no tensor requires grad, and returns
``NO_INPUT_GRAD``. Only the chain's first child is told that nobody wants its
dL/d(input): the flag stays on the module, which other chains may hold.

Each test builds a chain and its torch.nn twin with the same weights, freezes the same
parameters, and compares which children's backward hooks run, what they see, and the
gradients that follow, also after a parameter is unfrozen or a child replaced.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nograd import nn
from nograd.nn.module import NO_INPUT_GRAD

Record = tuple[int, Any]  # a child's position and the grad_input its hook saw


def twins() -> tuple[nn.Sequential, torch.nn.Sequential]:
    """Three Linear layers with ReLU and Tanh between them, and a LayerNorm."""
    torch.manual_seed(0)
    ours = nn.Sequential(
        nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.LayerNorm(6),
        nn.Linear(6, 2),
    )  # fmt: skip
    theirs = torch.nn.Sequential(
        torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 6), torch.nn.Tanh(),
        torch.nn.LayerNorm(6), torch.nn.Linear(6, 2),
    )  # fmt: skip
    theirs.load_state_dict(ours.state_dict())
    ours.needs_input_grad = False  # as fit sets it; torch's input does not require grad
    return ours, theirs


def record_backwards(model: Any) -> list[Record]:
    """A full backward hook on every child, recording its position and grad_input."""
    records: list[Record] = []
    for i, child in enumerate(model):

        def hook(module: Any, grad_input: Any, grad_output: Any, i: int = i) -> None:
            records.append((i, tuple(g if g is None else g.clone() for g in grad_input)))

        child.register_full_backward_hook(hook)
    return records


def step(ours: nn.Sequential, theirs: torch.nn.Sequential, seed: int = 1) -> Any:
    """One forward and backward of 0.5 * sum(y^2) in each, gradients zeroed first;
    what our backward returned."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, generator=gen)
    ours.zero_grad()
    theirs.zero_grad()
    y = ours(x)
    grad_input = ours.backward(y.clone())  # dL/dy = y
    with torch.enable_grad():
        (0.5 * (theirs(x) ** 2).sum()).backward()
    return grad_input


def assert_same_grads(ours: nn.Sequential, theirs: torch.nn.Sequential) -> None:
    """None exactly where torch's is; equal values elsewhere."""
    for (name, p), t in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert (p.grad is None) == (t.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, t.grad, rtol=1e-6, atol=1e-7, msg=name)


def assert_same_records(ours: list[Record], theirs: list[Record]) -> None:
    assert [i for i, _ in ours] == [i for i, _ in theirs]  # the same children, in order
    for (i, a), (_, b) in zip(ours, theirs, strict=True):
        assert [g is None for g in a] == [g is None for g in b], i
        for g, h in zip(a, b, strict=True):
            if g is not None:
                torch.testing.assert_close(g, h, rtol=1e-6, atol=1e-7)


FREEZES: dict[str, Callable[[Any], None]] = {
    "nothing": lambda model: None,
    "first layer": lambda model: model[0].requires_grad_(False),
    "first two layers": lambda model: [model[i].requires_grad_(False) for i in (0, 2)],
    "first weight only": lambda model: model[0].weight.requires_grad_(False),
    "all but the norm": lambda model: [model[i].requires_grad_(False) for i in (0, 2, 5)],
}


def freeze_ours(model: nn.Sequential, name: str) -> None:
    """FREEZES[name], applied to our model through torch's words, translated."""
    for ours_param, flag in zip(model.parameters(), frozen_flags(name), strict=True):
        ours_param.trainable = flag


def frozen_flags(name: str) -> list[bool]:
    """Which of the twin's parameters FREEZES[name] leaves trainable."""
    _, theirs = twins()
    FREEZES[name](theirs)
    return [p.requires_grad for p in theirs.parameters()]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # torch's, at the start
@pytest.mark.parametrize("name", list(FREEZES))
def test_the_backward_starts_where_torchs_does(name: str) -> None:
    """The children before the first trainable parameter run no backward (their hooks
    stay silent, as torch's); the one it starts at sees grad_input (None,), told for
    that call that nobody wants its dL/d(input)."""
    ours, theirs = twins()
    freeze_ours(ours, name)
    FREEZES[name](theirs)
    seen = record_backwards(ours), record_backwards(theirs)
    grad_input = step(ours, theirs)
    assert_same_records(*seen)
    assert seen[0][-1][1] == (None,)
    assert grad_input is NO_INPUT_GRAD
    assert_same_grads(ours, theirs)


@pytest.mark.parametrize("name", list(FREEZES))
def test_the_skipped_children_run_no_backward_without_hooks(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted on the classes, so the fused Linear and ReLU pairs stay fused."""
    ours, theirs = twins()
    freeze_ours(ours, name)
    FREEZES[name](theirs)
    ran: list[str] = []
    for cls in (nn.Linear, nn.ReLU, nn.Tanh, nn.LayerNorm):

        def counted(self: Any, g: torch.Tensor, original: Any = cls.backward) -> Any:
            ran.append(f"{type(self).__name__}{id(self)}")
            return original(self, g)

        monkeypatch.setattr(cls, "backward", counted)
    step(ours, theirs)
    first = next(i for i, t in enumerate(theirs) if any(p.requires_grad for p in t.parameters()))
    assert ran == [f"{type(m).__name__}{id(m)}" for m in list(ours)[first:][::-1]]
    assert_same_grads(ours, theirs)


def test_unfreezing_a_layer_of_the_start_brings_its_backward_back() -> None:
    ours, theirs = twins()
    ours[0].freeze()
    ours[2].freeze()
    theirs[0].requires_grad_(False)
    theirs[2].requires_grad_(False)
    step(ours, theirs)
    assert ours[2].weight.grad is None
    ours[2].weight.trainable = True  # set between two steps: the next forward plans again
    theirs[2].weight.requires_grad_(True)
    step(ours, theirs, seed=2)
    assert ours[2].weight.grad is not None
    assert_same_grads(ours, theirs)
    ours.unfreeze()
    theirs.requires_grad_(True)
    step(ours, theirs, seed=3)
    assert_same_grads(ours, theirs)


def test_a_parameter_frozen_between_forward_and_backward_gets_no_gradient_as_in_torch() -> None:
    """torch's graph is what its forward recorded, but its AccumulateGrad drops the
    gradient of a tensor that no longer requires grad; ours too: the backward still runs
    down to the layer (the plan is the forward's), whose frozen weight adds nothing."""
    ours, theirs = twins()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(4))
    y = ours(x)
    ours[0].freeze()
    ours.backward(y.clone())
    with torch.enable_grad():
        y_torch = theirs(x)
        theirs[0].requires_grad_(False)
        (0.5 * (y_torch**2).sum()).backward()
    assert ours[0].weight.grad is None and ours[2].weight.grad is not None
    assert_same_grads(ours, theirs)


def test_a_child_replaced_deep_inside_the_start_is_seen() -> None:
    """A trainable Linear put into a frozen inner chain, after a step: the next forward
    starts the backward there (``Module.__setattr__`` moves ``parameter.version``)."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    ours = nn.Sequential(nn.Sequential(inner), nn.Linear(4, 2))
    theirs = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())),
        torch.nn.Linear(4, 2),
    )
    theirs.load_state_dict(ours.state_dict())
    ours.needs_input_grad = False
    ours[0].freeze()
    theirs[0].requires_grad_(False)
    replacement = nn.Linear(3, 4)  # made before the step: only putting it in is news
    step(ours, theirs)
    assert_same_grads(ours, theirs)
    inner[0] = replacement  # two levels down: trainable
    theirs[0][0][0] = torch.nn.Linear(3, 4)
    theirs.load_state_dict(ours.state_dict())
    step(ours, theirs, seed=2)
    assert inner[0].weight.grad is not None
    assert_same_grads(ours, theirs)


def test_a_chain_that_learns_nothing_runs_no_backward() -> None:
    ours, _ = twins()
    ours.freeze()
    records = record_backwards(ours)
    y = ours(torch.randn(5, 3))
    assert ours.backward(y.clone()) is NO_INPUT_GRAD
    assert records == [] and all(p.grad is None for p in ours.parameters())
    ours.needs_input_grad = True  # asked for: every child passes dL/d(input) down again
    ours(torch.randn(5, 3))
    assert ours.backward(y.clone()).shape == (5, 3)
    assert [i for i, _ in records] == [5, 4, 3, 2, 1, 0]


def test_a_frozen_start_with_a_module_used_twice_trains_as_torchs() -> None:
    """A chain that keeps each use's tensors aside (nograd/nn/uses.py) starts late too."""
    torch.manual_seed(0)
    act, theirs_act = nn.Tanh(), torch.nn.Tanh()
    ours = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 4), act, nn.Linear(4, 2), act)
    theirs = torch.nn.Sequential(
        torch.nn.Linear(3, 4), theirs_act, torch.nn.Linear(4, 4), theirs_act,
        torch.nn.Linear(4, 2), theirs_act,
    )  # fmt: skip
    theirs.load_state_dict(ours.state_dict())
    ours.needs_input_grad = False
    ours[0].freeze()
    theirs[0].requires_grad_(False)
    for seed in (1, 2):
        assert step(ours, theirs, seed) is NO_INPUT_GRAD
        assert_same_grads(ours, theirs)


def test_only_the_first_child_is_told_wherever_the_backward_starts() -> None:
    ours, _ = twins()
    ours(torch.randn(2, 3))
    assert not ours[0].needs_input_grad and ours[2].needs_input_grad
    ours[0].freeze()
    ours(torch.randn(2, 3))
    assert not ours[0].needs_input_grad and ours[2].needs_input_grad
    ours.needs_input_grad = True
    assert all(child.needs_input_grad for child in ours)


def torch_tanh_chain(*widths: int) -> torch.nn.Sequential:
    """torch.nn.Linear layers of these widths, with a Tanh between each two."""
    layers: list[torch.nn.Module] = []
    for n_in, n_out in itertools.pairwise(widths):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def assert_trains_as_torch(ours: nn.Sequential) -> None:
    """A chain of Linear layers and Tanh, with needs_input_grad = False: one step gives
    the gradients of its torch twin (the same widths and weights)."""
    widths = [m.in_features for m in ours if isinstance(m, nn.Linear)] + [ours[-1].out_features]
    theirs = torch_tanh_chain(*widths)
    theirs.load_state_dict(ours.state_dict())
    ours.needs_input_grad = False
    step(ours, theirs)
    assert_same_grads(ours, theirs)


def test_a_body_trained_under_a_frozen_stem_serves_another_chain() -> None:
    """Transfer learning: the trained body and head under a new, trainable stem, and a
    slice of the trained model: each passes dL/d(input) on as torch's does."""
    torch.manual_seed(0)
    stem, body, head = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
    model = nn.Sequential(stem, nn.Tanh(), body, nn.Tanh(), head)
    stem.freeze()
    model.needs_input_grad = False
    y = model(torch.randn(5, 3))
    model.backward(y.clone())
    assert_trains_as_torch(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), body, nn.Tanh(), head))
    features = torch.randn(5, 4)
    tail = model[2:]
    assert tail.backward(tail(features)).shape == (5, 4)  # dL/d(features), wanted here


class OwnForward(nn.Sequential):
    """A Sequential subclass that runs its children itself (no plan is made)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self:
            x = child(x)
        return x


class Residual(nn.Sequential):
    """y = f(x) + x, as a Sequential subclass: dL/dx = dL/dy f'(x) + dL/dy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + x

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return super().backward(grad_output) + grad_output


class TorchResidual(torch.nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + x


def test_sequential_subclasses_after_a_frozen_stem_train_as_torchs() -> None:
    """One that runs its own forward (its children all run backward), and a residual
    block that adds dL/dy to its chain's dL/dx, right after the frozen stem."""
    torch.manual_seed(0)
    own = OwnForward(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    own_twin = torch_tanh_chain(3, 4, 4, 2)
    residual = nn.Sequential(
        nn.Linear(3, 4), Residual(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)), nn.Linear(4, 2)
    )
    residual_twin = torch.nn.Sequential(
        torch.nn.Linear(3, 4),
        TorchResidual(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4)),
        torch.nn.Linear(4, 2),
    )
    for ours, theirs in ((own, own_twin), (residual, residual_twin)):
        theirs.load_state_dict(ours.state_dict())
        ours[0].freeze()
        theirs[0].requires_grad_(False)
        ours.needs_input_grad = False
        for seed in (1, 2):
            step(ours, theirs, seed)
            assert_same_grads(ours, theirs)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # torch's, at the start
def test_a_flatten_first_skips_the_first_layers_input_gradient_as_torch() -> None:
    """A parameter-free first child (Flatten, as image models start): the backward
    starts at the Linear after it, which is told for that call only that nobody wants
    its dL/d(input) (torch's hook sees None there too); its own flag stays as it was."""
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))
    theirs = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )
    theirs.load_state_dict(ours.state_dict())
    ours.needs_input_grad = False
    seen = record_backwards(ours), record_backwards(theirs)
    x = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(1))
    y = ours(x)
    assert ours.backward(y.clone()) is NO_INPUT_GRAD
    with torch.enable_grad():
        (0.5 * (theirs(x) ** 2).sum()).backward()
    assert_same_records(*seen)
    assert seen[0][-1] == (1, (None,))
    assert_same_grads(ours, theirs)
    assert ours[1].needs_input_grad and "needs_input_grad" not in ours[1].__dict__
    ours[1].needs_input_grad = False  # a user's own setting outlives the call
    ours.backward(ours(x).clone())
    assert ours[1].needs_input_grad is False


LAYERS = {  # a layer of width 4 in each library, by name
    "linear": lambda lib: lib.Linear(4, 4),
    "tanh": lambda lib: lib.Tanh(),
    "relu": lambda lib: lib.ReLU(),
    "norm": lambda lib: lib.LayerNorm(4),
    "chain": lambda lib: lib.Sequential(lib.Linear(4, 4), lib.Tanh()),
}


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@given(
    names=st.lists(st.sampled_from(list(LAYERS)), min_size=1, max_size=6),
    frozen=st.lists(st.booleans(), min_size=12, max_size=12),
    input_grad_wanted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_chains_with_frozen_parts_train_as_torchs(
    names: list[str], frozen: list[bool], input_grad_wanted: bool, seed: int
) -> None:
    """Any chain of these layers, any parameters frozen, dL/d(input) wanted or not: the
    same parameter gradients as torch's, and dL/d(input) where it is wanted."""
    torch.manual_seed(seed)
    ours = nn.Sequential(*(LAYERS[name](nn) for name in names))
    theirs = torch.nn.Sequential(*(LAYERS[name](torch.nn) for name in names))
    theirs.load_state_dict(ours.state_dict())
    for p, t, flag in zip(ours.parameters(), theirs.parameters(), frozen, strict=False):
        p.trainable = not flag
        t.requires_grad_(not flag)
    ours.needs_input_grad = input_grad_wanted
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
    for _ in range(2):  # the second forward reuses the plan
        ours.zero_grad()
        theirs.zero_grad()
        grad_input = ours.backward(ours(x).clone())
        x_ref = x.clone().requires_grad_(input_grad_wanted)
        with torch.enable_grad():
            y = theirs(x_ref)
            if y.requires_grad:
                (0.5 * (y**2).sum()).backward()
        assert_same_grads(ours, theirs)
        if input_grad_wanted:
            torch.testing.assert_close(grad_input, x_ref.grad, rtol=1e-6, atol=1e-7)
        else:
            assert grad_input is NO_INPUT_GRAD


def test_a_stem_told_by_one_chain_passes_its_input_gradient_in_another() -> None:
    """The first child of a chain trained with needs_input_grad = False keeps that flag
    (it saves its product at every step); a chain that holds it further on, or that
    wants dL/d(input), makes it pass dL/d(input) again at its first forward."""
    torch.manual_seed(0)
    stem, head = nn.Linear(3, 4), nn.Linear(4, 2)
    trained = nn.Sequential(stem, nn.Tanh(), head)
    trained.needs_input_grad = False
    trained.backward(trained(torch.randn(5, 3)).clone())
    assert not stem.needs_input_grad
    assert_trains_as_torch(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), stem, nn.Tanh(), head))
    alone = nn.Sequential(stem, nn.Tanh())  # wants dL/d(input): the default
    x = torch.randn(5, 3)
    assert alone.backward(alone(x)).shape == (5, 3)


@pytest.mark.parametrize("order", ["AB", "BA"])
def test_two_chains_sharing_a_layer_train_in_turns_as_torchs(order: str) -> None:
    """A holds the layer first (and tells it that nobody wants its dL/d(input)), B after
    its start (where B needs it): each setting moves parameter.version, so the other
    chain plans again and sets the flag as it needs, step after step."""

    def build(lib: Any) -> tuple[Any, Any, Any]:
        torch.manual_seed(0)
        shared, stem = lib.Linear(4, 6), lib.Linear(3, 4)
        a = lib.Sequential(shared, lib.Tanh(), lib.Linear(6, 2))
        b = lib.Sequential(stem, lib.Tanh(), lib.Linear(4, 4), lib.Tanh(), shared, lib.Linear(6, 2))
        stem.requires_grad_(False) if lib is torch.nn else stem.freeze()
        return a, b, stem

    ours, theirs = build(nn), build(torch.nn)
    for o, t in zip(ours[:2], theirs[:2], strict=True):
        t.load_state_dict(o.state_dict())
        o.needs_input_grad = False
    gen = torch.Generator().manual_seed(1)
    inputs = {"A": torch.randn(5, 4, generator=gen), "B": torch.randn(5, 3, generator=gen)}
    for _ in range(3):
        for name in order:
            o, t = (ours[0], theirs[0]) if name == "A" else (ours[1], theirs[1])
            o.zero_grad()
            t.zero_grad()
            assert o.backward(o(inputs[name]).clone()) is NO_INPUT_GRAD
            with torch.enable_grad():
                (0.5 * (t(inputs[name]) ** 2).sum()).backward()
            assert_same_grads(o, t)


def test_a_block_holding_a_layer_another_chain_told_passes_its_input_gradient() -> None:
    """A module of the user's (not a Sequential) holds the layer that another chain has
    first: the chain that holds the block further on sets every flag inside it back."""

    class Block(nn.Module):
        """y = tanh(layer(x)), with its own backward."""

        def __init__(self, layer: nn.Linear) -> None:
            super().__init__()
            self.layer, self.act = layer, nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.layer(x))

        def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
            return self.layer.backward(self.act.backward(grad_output))  # dL/dx = g tanh' W

    class TorchBlock(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer, self.act = torch.nn.Linear(4, 4), torch.nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.layer(x))

    torch.manual_seed(0)
    layer = nn.Linear(4, 4)
    first = nn.Sequential(layer, nn.Linear(4, 2))
    first.needs_input_grad = False
    first(torch.randn(5, 4))
    assert not layer.needs_input_grad
    ours = nn.Sequential(nn.Linear(3, 4), Block(layer), nn.Linear(4, 2))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), TorchBlock(), torch.nn.Linear(4, 2))
    theirs.load_state_dict(ours.state_dict())
    ours.needs_input_grad = False
    step(ours, theirs)
    assert_same_grads(ours, theirs)
    assert layer.needs_input_grad


def test_a_residual_block_first_in_the_chain_is_not_told() -> None:
    """A Sequential subclass whose backward adds dL/dy to its chain's dL/dx
    (``super().backward(g) + g``) needs that dL/dx: the chain does not tell it."""
    torch.manual_seed(0)
    ours = nn.Sequential(Residual(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)), nn.Linear(4, 2))
    theirs = torch.nn.Sequential(
        TorchResidual(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4)),
        torch.nn.Linear(4, 2),
    )
    theirs.load_state_dict(ours.state_dict())
    ours.needs_input_grad = False
    x = torch.randn(5, 4)
    ours.backward(ours(x).clone())
    with torch.enable_grad():
        (0.5 * (theirs(x) ** 2).sum()).backward()
    assert_same_grads(ours, theirs)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_a_nested_chain_where_the_backward_starts_is_told_as_torch_records_it() -> None:
    """The inner chain after a frozen stem needs no dL/d(input): its Tanh, whose input
    requires no grad in torch, saves nothing that matters, so a ReLU(inplace=True)
    writing over its output is no error (torch records no graph there), and the hooks
    see what torch's see."""

    def build(lib: Any) -> Any:
        torch.manual_seed(0)
        inner = lib.Sequential(lib.Tanh(), lib.ReLU(inplace=True), lib.Linear(4, 4))
        return lib.Sequential(lib.Linear(3, 4), inner, lib.Linear(4, 2))

    ours, theirs = build(nn), build(torch.nn)
    theirs.load_state_dict(ours.state_dict())
    ours[0].freeze()
    theirs[0].requires_grad_(False)
    ours.needs_input_grad = False
    seen = record_backwards(ours[1]), record_backwards(theirs[1])
    assert step(ours, theirs) is NO_INPUT_GRAD
    assert_same_grads(ours, theirs)
    assert_same_records(*seen)
    ours[0].unfreeze()  # the inner chain is wanted again: now the write is an error
    with pytest.raises(RuntimeError, match=r"ReLU\(inplace=True\) overwrote a tensor Tanh\(\)"):
        ours.backward(ours(torch.randn(5, 3)).clone())

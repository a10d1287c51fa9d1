"""Sequential on unusual but valid structures, against torch.nn.Sequential and autograd.

Nested chains, a module used at several places, in-place modules anywhere, hooks, frozen
parameters, ``needs_input_grad = False``, and chains edited between forward and backward
or between steps: outputs, dL/dx and every parameter's gradient are torch's (float32
to the bit, float64 to 1e-12), and where torch raises because an in-place module
destroyed a saved tensor, nograd raises too.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from nograd.nn import (
    Dropout,
    Flatten,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
)

Pair = tuple[Module, torch.nn.Module]  # a nograd module and its torch.nn twin
WIDTH = 4  # every module here maps (N, 4) to (N, 4), so any chain of them runs
EXACT = {"rtol": 0.0, "atol": 0.0}
FLOAT64 = {"rtol": 1e-12, "atol": 1e-12}
OVERWRITTEN = "modified in place after its forward"  # nograd's words for torch's error


def linear_pair(bias: bool = True) -> Pair:
    ours = Linear(WIDTH, WIDTH, bias=bias)
    ref = torch.nn.Linear(WIDTH, WIDTH, bias=bias)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


# each leaf the random chains draw, with its twin; all give torch's bits in float32
LEAVES: dict[str, Callable[[], Pair]] = {
    "Linear": linear_pair,
    "Linear(bias=False)": lambda: linear_pair(bias=False),
    "ReLU": lambda: (ReLU(), torch.nn.ReLU()),
    "ReLU(inplace)": lambda: (ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
    "LeakyReLU": lambda: (LeakyReLU(0.1), torch.nn.LeakyReLU(0.1)),
    "LeakyReLU(inplace)": lambda: (LeakyReLU(0.1, True), torch.nn.LeakyReLU(0.1, True)),
    "Tanh": lambda: (Tanh(), torch.nn.Tanh()),
    "Sigmoid": lambda: (Sigmoid(), torch.nn.Sigmoid()),
    "SiLU(inplace)": lambda: (SiLU(inplace=True), torch.nn.SiLU(inplace=True)),
    "Softplus": lambda: (Softplus(), torch.nn.Softplus()),
    "Identity": lambda: (Identity(), torch.nn.Identity()),
    "Flatten": lambda: (Flatten(), torch.nn.Flatten()),
    "Dropout": lambda: (Dropout(0.3), torch.nn.Dropout(0.3)),
    "Dropout(inplace)": lambda: (Dropout(0.3, True), torch.nn.Dropout(0.3, True)),
    "LayerNorm": lambda: (LayerNorm(WIDTH), torch.nn.LayerNorm(WIDTH)),
    "LogSoftmax": lambda: (LogSoftmax(-1), torch.nn.LogSoftmax(-1)),
}
INPLACE = (ReLU, LeakyReLU, SiLU, Dropout)


def random_chain(rng: random.Random) -> tuple[Sequential, torch.nn.Sequential]:
    """A chain of 1 to 5 children: leaves, nested chains (empty too), and modules
    already used elsewhere in it, at any depth."""
    made: list[Pair] = []

    def child(depth: int) -> Pair:
        draw = rng.random()
        if made and draw < 0.2:
            return rng.choice(made)  # used again: shared weights, shared saved tensors
        if depth < 2 and draw < 0.35:
            kids = [child(depth + 1) for _ in range(rng.randint(0, 3))]
            pair: Pair = (
                Sequential(*(ours for ours, _ in kids)),
                torch.nn.Sequential(*(ref for _, ref in kids)),
            )
        else:
            pair = LEAVES[rng.choice(list(LEAVES))]()
        made.append(pair)
        return pair

    kids = [child(0) for _ in range(rng.randint(1, 5))]
    return Sequential(*(ours for ours, _ in kids)), torch.nn.Sequential(*(ref for _, ref in kids))


def torch_run(
    ref: torch.nn.Module, x: Tensor, g_seed: int, *, input_grad: bool = True
) -> tuple[Tensor, Tensor, Tensor | None] | str:
    """torch's output, dL/dy and dL/dx for dL/dy drawn from ``g_seed``; or its error."""
    leaf = x.clone().requires_grad_(input_grad)
    try:
        with torch.enable_grad():
            y = ref(leaf.clone())  # a clone: an in-place first module may write into it
            g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(g_seed))
            y.backward(g)
    except RuntimeError as error:
        return str(error)
    return y.detach(), g, leaf.grad


def assert_same_grads(ours: Module, ref: torch.nn.Module, tol: dict[str, float]) -> None:
    """Every parameter's gradient, None where torch's is (frozen), equal within ``tol``."""
    pairs = zip(ours.named_parameters(), ref.parameters(), strict=True)
    for (name, param), ref_param in pairs:
        if ref_param.grad is None:
            assert param.grad is None, name
        else:
            assert param.grad is not None, name
            torch.testing.assert_close(param.grad, ref_param.grad, **tol, msg=name)


def check_chain(
    ours: Sequential, ref: torch.nn.Sequential, x: Tensor, *, input_grad: bool = True
) -> None:
    """Both run x with the same random numbers (Dropout); torch's error, or its numbers."""
    tol = EXACT if x.dtype == torch.float32 else FLOAT64
    torch.manual_seed(0)
    expected = torch_run(ref, x, g_seed=1, input_grad=input_grad)
    torch.manual_seed(0)
    y = ours(x.clone())
    if isinstance(expected, str):
        assert "modified by an inplace operation" in expected, expected
        with pytest.raises(RuntimeError, match=OVERWRITTEN):
            ours.backward(torch.ones_like(y))
        return
    y_ref, g, grad_x = expected
    torch.testing.assert_close(y, y_ref, **tol)
    got = ours.backward(g)
    if input_grad:
        assert grad_x is not None
        torch.testing.assert_close(got, grad_x, **tol)
    assert_same_grads(ours, ref, tol)


# ----------------------------------------------------------------- random structures
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_a_random_chain_computes_or_raises_as_torch(seed: int, dtype: torch.dtype) -> None:
    rng = random.Random(seed)
    ours, ref = random_chain(rng)
    ours.to(dtype=dtype)
    ref.to(dtype=dtype)
    for param, ref_param in zip(ours.parameters(), ref.parameters(), strict=True):
        if rng.random() < 0.15:  # frozen: torch's requires_grad_(False)
            param.trainable = False
            ref_param.requires_grad_(False)
    check_chain(ours, ref, torch.randn(5, WIDTH, dtype=dtype))


@given(seed=st.integers(0, 2**32 - 1))
def test_hooks_on_the_children_of_a_random_chain_see_what_torch_shows(seed: int) -> None:
    """Forward hooks (which keep a Linear and its ReLU from running as one op) see
    torch's tensors; full backward hooks too, where no in-place module runs (torch
    refuses those: "BackwardHookFunction is a view and is being modified inplace")."""
    rng = random.Random(seed)
    ours, ref = random_chain(rng)
    ours.double()
    ref.double()
    seen: dict[str, list[Tensor]] = {"ours": [], "torch": []}
    inplace = any(getattr(module, "inplace", False) for module in ours.modules())
    for module, ref_module in list(zip(ours.modules(), ref.modules(), strict=True))[1:]:
        kind = rng.randrange(4)
        if kind == 0:
            module.register_forward_hook(lambda m, args, y: seen["ours"].append(y.clone()))
            ref_module.register_forward_hook(
                lambda m, args, y: seen["torch"].append(y.detach().clone())
            )
        elif kind == 1:
            module.register_forward_pre_hook(lambda m, args: seen["ours"].append(args[0].clone()))
            ref_module.register_forward_pre_hook(
                lambda m, args: seen["torch"].append(args[0].detach().clone())
            )
        elif kind == 2 and not inplace:
            module.register_full_backward_hook(lambda m, gi, go: seen["ours"].append(go[0]))
            ref_module.register_full_backward_hook(lambda m, gi, go: seen["torch"].append(go[0]))
    check_chain(ours, ref, torch.randn(5, WIDTH, dtype=torch.float64))
    assert len(seen["ours"]) == len(seen["torch"])
    for mine, theirs in zip(seen["ours"], seen["torch"], strict=True):
        torch.testing.assert_close(mine, theirs, **FLOAT64)


# ------------------------------- an in-place child of an inner chain, after its first
@pytest.mark.parametrize(
    "inner",
    [
        lambda: (
            Sequential(Identity(), ReLU(inplace=True)),
            torch.nn.Sequential(torch.nn.Identity(), torch.nn.ReLU(inplace=True)),
        ),
        lambda: (
            Sequential(Flatten(), LeakyReLU(0.1, inplace=True)),
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LeakyReLU(0.1, inplace=True)),
        ),
        lambda: (
            Sequential(Sequential(), Dropout(0.5, inplace=True)),
            torch.nn.Sequential(torch.nn.Sequential(), torch.nn.Dropout(0.5, inplace=True)),
        ),
        lambda: (
            Sequential(Identity(), Sequential(Identity(), SiLU(inplace=True))),
            torch.nn.Sequential(
                torch.nn.Identity(),
                torch.nn.Sequential(torch.nn.Identity(), torch.nn.SiLU(inplace=True)),
            ),
        ),
    ],
    ids=["identity-relu_", "flatten-leaky_relu_", "empty-dropout_", "two-deep-silu_"],
)
def test_an_inner_chain_that_overwrites_a_tensor_the_outer_saved_raises_as_torch(
    inner: Callable[[], tuple[Sequential, torch.nn.Sequential]],
) -> None:
    """The inner chain's first child passes its input on as it is, so the in-place child
    after it writes into the Tanh's output, which the outer chain's Tanh saved."""
    ours_inner, ref_inner = inner()
    ours = Sequential(linear_pair()[0], Tanh(), ours_inner)
    ref = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh(), ref_inner)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, WIDTH)
    assert isinstance(torch_run(ref, x, g_seed=1), str)  # torch refuses
    y = ours(x)
    with pytest.raises(RuntimeError, match=r"overwrote a tensor Tanh\(\)"):
        ours.backward(torch.ones_like(y))


def test_an_inner_chain_that_overwrites_only_its_own_fresh_tensors_matches_torch() -> None:
    inner = Sequential(Linear(WIDTH, WIDTH, bias=False), LeakyReLU(0.1, inplace=True))
    ours = Sequential(Tanh(), inner, Sigmoid())
    ref = torch.nn.Sequential(
        torch.nn.Tanh(),
        torch.nn.Sequential(
            torch.nn.Linear(WIDTH, WIDTH, bias=False), torch.nn.LeakyReLU(0.1, inplace=True)
        ),
        torch.nn.Sigmoid(),
    )
    ref.load_state_dict(ours.state_dict())
    check_chain(ours, ref, torch.randn(5, WIDTH))


# ------------------------------------------------------------- an empty batch
def test_an_inplace_child_on_an_empty_batch_destroys_nothing() -> None:
    """Every empty tensor lies at address 0: a LeakyReLU writing into the Linear's empty
    output did not overwrite the Tanh's empty output, and torch does not raise either."""
    ours = Sequential(Tanh(), Linear(WIDTH, WIDTH), LeakyReLU(0.1, inplace=True))
    ref = torch.nn.Sequential(
        torch.nn.Tanh(), torch.nn.Linear(WIDTH, WIDTH), torch.nn.LeakyReLU(0.1, inplace=True)
    )
    ref.load_state_dict(ours.state_dict())
    check_chain(ours, ref, torch.randn(0, WIDTH))


# ------------------------------------------- edits between forward and backward
def edit_pairs() -> dict[str, Callable[[Sequential, torch.nn.Sequential], None]]:
    """Each edit, made to both chains alike (a new module gets its twin)."""

    def replace(ours: Sequential, ref: torch.nn.Sequential) -> None:
        ours[1], ref[1] = Sigmoid(), torch.nn.Sigmoid()

    def insert(ours: Sequential, ref: torch.nn.Sequential) -> None:
        new, new_ref = linear_pair()
        ours.insert(0, new.double())
        ref.insert(0, new_ref.double())

    def append(ours: Sequential, ref: torch.nn.Sequential) -> None:
        ours.append(Tanh())
        ref.append(torch.nn.Tanh())

    def delete(ours: Sequential, ref: torch.nn.Sequential) -> None:
        del ours[1]
        del ref[1]

    def delete_slice(ours: Sequential, ref: torch.nn.Sequential) -> None:
        del ours[0:2]
        del ref[0:2]

    def share(ours: Sequential, ref: torch.nn.Sequential) -> None:
        ours.append(ours[2])  # the last Linear again
        ref.append(ref[2])

    def share_first(ours: Sequential, ref: torch.nn.Sequential) -> None:
        ours.append(ours[0])  # the first Linear again: its first use passes dL/dx on
        ref.append(ref[0])

    return {
        "replace": replace,
        "insert": insert,
        "append": append,
        "del": delete,
        "del slice": delete_slice,
        "append shared": share,
        "append first": share_first,
    }


EDITS = edit_pairs()


def twin_chain(shared: bool) -> tuple[Sequential, torch.nn.Sequential]:
    """Linear, Tanh, Linear, ReLU(inplace), in float64; with ``shared`` its Tanh again
    at the end, so the chain keeps a record of each use."""
    first, first_ref = linear_pair()
    last, last_ref = linear_pair()
    tanh, tanh_ref = Tanh(), torch.nn.Tanh()
    ours = Sequential(first, tanh, last, ReLU(inplace=True), *([tanh] if shared else []))
    ref = torch.nn.Sequential(
        first_ref, tanh_ref, last_ref, torch.nn.ReLU(inplace=True), *([tanh_ref] if shared else [])
    )
    return ours.double(), ref.double()


@pytest.mark.parametrize("shared", [False, True], ids=["distinct", "shared"])
@pytest.mark.parametrize("edit", EDITS)
def test_an_edit_between_forward_and_backward_keeps_the_backward_of_that_forward(
    edit: str, shared: bool
) -> None:
    """torch differentiates the graph its forward recorded; a chain edited after its
    forward runs the backward of the children that forward ran, too."""
    ours, ref = twin_chain(shared)
    params, ref_params = list(ours.parameters()), list(ref.parameters())  # the forward's
    x = torch.randn(5, WIDTH, dtype=torch.float64)
    g = torch.randn(5, WIDTH, dtype=torch.float64)
    leaf = x.clone().requires_grad_()
    with torch.enable_grad():
        y_ref = ref(leaf)
    y = ours(x)
    EDITS[edit](ours, ref)
    y_ref.backward(g)
    torch.testing.assert_close(y, y_ref.detach(), **FLOAT64)
    torch.testing.assert_close(ours.backward(g), leaf.grad, **FLOAT64)
    for param, ref_param in zip(params, ref_params, strict=True):
        assert param.grad is not None and ref_param.grad is not None
        torch.testing.assert_close(param.grad, ref_param.grad, **FLOAT64)


@pytest.mark.parametrize("shared", [False, True], ids=["distinct", "shared"])
@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_chain_trains_its_next_step_as_torch(edit: str, shared: bool) -> None:
    """A step, an edit, a step: the second step differentiates the edited chain."""
    ours, ref = twin_chain(shared)
    for _ in range(2):
        check_chain(ours, ref, torch.randn(5, WIDTH, dtype=torch.float64))
        EDITS[edit](ours, ref)
        ours.zero_grad()
        ref.zero_grad()
    check_chain(ours, ref, torch.randn(5, WIDTH, dtype=torch.float64))


# ------------------------------------------------ needs_input_grad = False, then an edit
@pytest.mark.parametrize("edit", ["insert", "append first", "del", "del slice", "replace"])
def test_needs_input_grad_false_follows_the_first_child_through_edits(edit: str) -> None:
    """The chain, not the child that was first when it was set, skips dL/d(input): after
    an edit, a child no longer first (or now used again further on) passes its dL/dx on
    again, and the new first skips it. torch: an input that does not require grad."""
    ours, ref = twin_chain(shared=False)
    ours.needs_input_grad = False
    EDITS[edit](ours, ref)
    check_chain(ours, ref, torch.randn(5, WIDTH, dtype=torch.float64), input_grad=False)
    assert not ours.needs_input_grad
    first = ours[0]
    assert not first.needs_input_grad or any(first is child for child in list(ours)[1:])
    ours.needs_input_grad = True
    assert all(child.needs_input_grad for child in ours)


def test_needs_input_grad_false_reaches_the_first_child_at_the_next_forward() -> None:
    """An edit between a forward and its backward does not change what that backward
    skips: the chain tells its new first child at the next forward."""
    ours, ref = twin_chain(shared=False)
    ours.needs_input_grad = False
    old_first = ours[0]
    x = torch.randn(5, WIDTH, dtype=torch.float64)
    y = ours(x)
    EDITS["del"](ours, ref)
    ours.backward(torch.ones_like(y))  # the forward's chain: its first skips dL/dx
    assert not old_first.needs_input_grad
    del ours[0]
    ours(x)
    assert old_first.needs_input_grad and not ours[0].needs_input_grad


# --------------------------- an in-place child where no gradient reaches (frozen, or none)
@pytest.mark.parametrize(
    "start",
    [
        lambda: (Sequential(Tanh()), torch.nn.Sequential(torch.nn.Tanh())),
        lambda: (
            Sequential(Linear(WIDTH, WIDTH).freeze(), Sigmoid()),
            torch.nn.Sequential(
                torch.nn.Linear(WIDTH, WIDTH).requires_grad_(False), torch.nn.Sigmoid()
            ),
        ),
    ],
    ids=["parameter-free", "frozen"],
)
@pytest.mark.parametrize("needs_input_grad", [False, True])
def test_an_inplace_child_before_any_gradient_is_needed_is_no_error(
    start: Callable[[], tuple[Sequential, torch.nn.Sequential]], needs_input_grad: bool
) -> None:
    """torch records nothing before the first parameter that requires grad when its input
    does not: an in-place module there destroys nothing it needs (a frozen feature
    extractor under fit, which sets needs_input_grad = False). When dL/dx is wanted
    (an input that requires grad), both raise."""
    head, ref_head = start()
    tail, ref_tail = linear_pair()
    ours = Sequential(*head, ReLU(inplace=True), tail)
    ref = torch.nn.Sequential(*ref_head, torch.nn.ReLU(inplace=True), ref_tail)
    ref.load_state_dict(ours.state_dict())
    ours.needs_input_grad = needs_input_grad
    check_chain(ours, ref, torch.randn(5, WIDTH), input_grad=needs_input_grad)

"""Flat param groups (nograd.optim.flat): one buffer per group, torch's numbers bit for bit."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import Tensor

import nograd.nn
from nograd.nn import Parameter
from nograd.optim import SGD, Adam, Optimizer, foreach
from nograd.optim.flat import ALIGN_BYTES, FLAT_MAX_NUMEL, FlatGroup
from tests.oracle import torch_makes_state_at_first_step
from tests.test_optim import CASES, IDS, SHAPES, TWINS


def _storages(params: list[Parameter]) -> set[int]:
    return {param.data.untyped_storage().data_ptr() for param in params}


def _pair(
    cls: type[Optimizer], kwargs: dict[str, Any], dtype: torch.dtype = torch.float32
) -> tuple[list[Parameter], list[Tensor], Optimizer, torch.optim.Optimizer]:
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(shape, generator=gen, dtype=dtype) for shape in SHAPES]
    ours = [Parameter(v.clone()) for v in values]
    ref = [v.clone().requires_grad_() for v in values]
    return ours, ref, cls(ours, **kwargs), TWINS[cls](ref, **kwargs)


def _step_both(
    ours: list[Parameter], ref: list[Tensor], opt: Optimizer, ref_opt: Any, gen: torch.Generator
) -> None:
    for p, t in zip(ours, ref, strict=True):
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        p.grad, t.grad = g.clone(), g.clone()
    opt.step()
    ref_opt.step()


def _assert_equal(ours: list[Parameter], ref: list[Tensor]) -> None:
    for p, t in zip(ours, ref, strict=True):
        torch.testing.assert_close(p.data, t.detach(), rtol=0, atol=0)


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_flat_steps_match_torch_bit_for_bit(cls: type[Optimizer], kwargs: dict[str, Any]) -> None:
    ours, ref, opt, ref_opt = _pair(cls, kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        _step_both(ours, ref, opt, ref_opt, gen)
    assert len(_storages(ours)) == 1  # the group was flattened: one buffer for all
    _assert_equal(ours, ref)


def test_parameters_and_state_become_views_with_their_own_shapes() -> None:
    ours, _, opt, _ = _pair(Adam, {"lr": 0.1})
    for p in ours:
        p.grad = torch.ones(p.shape)
    opt.step()
    assert len(_storages(ours)) == 1  # one flat buffer
    for p, shape in zip(ours, SHAPES, strict=True):
        assert p.shape == shape and p.data.is_contiguous()
        assert p.data.data_ptr() % ALIGN_BYTES == 0  # where a tensor of its own would start
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt.state[p][key].shape == shape
    saved = opt.state_dict()["state"]
    assert [saved[i]["exp_avg"].shape for i in range(len(SHAPES))] == SHAPES


def test_a_replaced_param_data_is_flattened_again() -> None:
    ours, ref, opt, ref_opt = _pair(SGD, {"lr": 0.1, "momentum": 0.9})
    gen = torch.Generator().manual_seed(1)
    _step_both(ours, ref, opt, ref_opt, gen)
    new = torch.full(SHAPES[0], 0.5)
    ours[0].data, ref[0].data = new.clone(), new.clone()  # as a user (or model.to) might
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    _assert_equal(ours, ref)
    assert len(_storages(ours)) == 1


def test_loaded_state_is_adopted_and_training_continues_exactly() -> None:
    ours, ref, opt, ref_opt = _pair(Adam, {"lr": 0.05, "amsgrad": True})
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    opt.load_state_dict(ref_opt.state_dict())  # fresh tensors, not views of the flat buffers
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    _assert_equal(ours, ref)


def test_parameters_with_different_histories_step_tensor_by_tensor() -> None:
    ours, ref, opt, ref_opt = _pair(Adam, {"lr": 0.05})
    gen = torch.Generator().manual_seed(1)
    ours[1].grad, ref[1].grad = None, None  # parameter 1 sits out the first step
    for p, t in [(ours[0], ref[0]), (ours[2], ref[2])]:
        g = torch.randn(p.shape, generator=gen)
        p.grad, t.grad = g.clone(), g.clone()
    opt.step()
    ref_opt.step()
    for _ in range(4):  # t differs between parameters now: no flat group
        _step_both(ours, ref, opt, ref_opt, gen)
    assert len(_storages(ours)) == len(ours)  # never flattened
    _assert_equal(ours, ref)


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_a_step_without_every_gradient_goes_tensor_by_tensor_then_flat_again(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    ours, ref, opt, ref_opt = _pair(cls, kwargs)
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        _step_both(ours, ref, opt, ref_opt, gen)
        if step % 4 == 1:  # parameter 1 gets no gradient at the next step
            ours[1].grad, ref[1].grad = None, None
            opt.step()
            ref_opt.step()
    _assert_equal(ours, ref)
    if cls is not SGD:  # SGD: every history is the same (no counter)
        return
    assert len(_storages(ours)) == 1


def _tensor_state(opt: Optimizer, params: list[Parameter]) -> dict[str, list[Tensor]]:
    """Each state tensor key, with the tensor of every parameter that has it."""
    found: dict[str, list[Tensor]] = {}
    for p in params:
        for key, value in opt.state[p].items():
            if isinstance(value, Tensor) and value.dim() > 0:
                found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_a_parameter_whose_state_is_deleted_starts_afresh_as_in_torch(
    cls: type[Optimizer], kwargs: dict[str, Any], index: int
) -> None:
    """``del optimizer.state[p]`` (a layer re-initialised) between flat steps.

    torch starts that parameter afresh (t = 0, zero moments, b = g); the flat group
    must notice, step tensor by tensor while the histories differ, and flatten again
    once they agree (SGD: after one step, every buffer exists again).
    """
    if not torch_makes_state_at_first_step(cls.__name__):
        pytest.skip("this torch's Adagrad cannot start a deleted state afresh")
    ours, ref, opt, ref_opt = _pair(cls, kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        _step_both(ours, ref, opt, ref_opt, gen)
    opt.state.pop(ours[index], None)  # None: SGD without momentum keeps no state
    ref_opt.state.pop(ref[index], None)
    for _ in range(4):
        _step_both(ours, ref, opt, ref_opt, gen)
    _assert_equal(ours, ref)
    for p, t in zip(ours, ref, strict=True):
        assert float(opt.state[p].get("step", -1)) == float(ref_opt.state[t].get("step", -1))
    if cls is SGD:  # one history again: flat, each buffer a view of one flat buffer
        assert len(_storages(ours)) == 1
        for tensors in _tensor_state(opt, ours).values():
            assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1


@pytest.mark.parametrize("edit", ["new dict", "key removed"])
def test_a_state_dict_replaced_or_robbed_of_a_key_is_noticed(edit: str) -> None:
    """SGD: a missing momentum buffer starts again from b = g, in torch as here."""
    ours, ref, opt, ref_opt = _pair(SGD, {"lr": 0.1, "momentum": 0.9})
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    states: list[tuple[dict[Any, dict[str, Any]], Any]] = [
        (opt.state, ours[1]),
        (ref_opt.state, ref[1]),
    ]
    for state, param in states:
        if edit == "new dict":
            state[param] = {}
        else:
            del state[param]["momentum_buffer"]
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    _assert_equal(ours, ref)
    for p, t in zip(ours, ref, strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[t]["momentum_buffer"])


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_a_state_tensor_replaced_between_flat_steps_is_the_one_used_as_in_torch(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    """``state[p][key] = new tensor``: same dict, same keys, but no longer a view.

    The per-step check (``FlatGroup.grad_if_unchanged``) must see it, since the step
    then takes the flat state buffers without another look (``state_buffers``).
    """
    ours, ref, opt, ref_opt = _pair(cls, kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    replaced = 0
    for state, param in ((opt.state, ours[1]), (ref_opt.state, ref[1])):
        for key, value in list(state[param].items()):
            if isinstance(value, Tensor) and value.dim() > 0:
                state[param][key] = value * 0.5 + 0.25  # a new tensor, other numbers
                replaced += 1
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    _assert_equal(ours, ref)
    if replaced:  # and the group is flat again, the new numbers in its buffers
        assert len(_storages(ours)) == 1
        for tensors in _tensor_state(opt, ours).values():
            assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1


def _count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[None]:
    """A list that gets an entry at each call of ``cls.name``, which still runs."""
    calls: list[None] = []
    method = getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda *args: calls.append(None) or method(*args))
    return calls


@pytest.mark.parametrize(
    "options", [{}, {"nesterov": True}, {"dampening": 0.5}, {"weight_decay": 0.1}]
)
def test_sgd_steps_a_flat_group_with_plain_momentum_on_the_flat_tensors(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SGD._flat_momentum_step``: the usual flat step skips the general helpers, and
    every other option still goes through them; torch's bits either way."""
    kwargs = {"lr": 0.1, "momentum": 0.9, **options}
    ours, ref, opt, ref_opt = _pair(SGD, kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):  # makes the buffers, then checks the group in full once more
        _step_both(ours, ref, opt, ref_opt, gen)
    general = _count_calls(monkeypatch, SGD, "_decay_and_add")
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    assert len(general) == (3 if options else 0)
    _assert_equal(ours, ref)
    for p, t in zip(ours, ref, strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[t]["momentum_buffer"])


def test_a_flat_group_asks_once_whether_its_momentum_line_may_take_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a torch whose ``addcmul`` rounded once (``foreach.one_pass_mul_add`` False for
    the group's dtype), every flat step takes the general two passes: torch's bits."""
    monkeypatch.setattr(foreach, "_one_pass_mul_add_exact", lambda dtype: False)
    ours, ref, opt, ref_opt = _pair(SGD, {"lr": 0.1, "momentum": 0.9})
    gen = torch.Generator().manual_seed(1)
    general = _count_calls(monkeypatch, SGD, "_decay_and_add")
    for _ in range(4):
        _step_both(ours, ref, opt, ref_opt, gen)
    (flat,) = opt._flat.values()
    assert not flat.one_pass_mul_add
    assert len(general) == 3  # every step after the first, which makes the buffers
    _assert_equal(ours, ref)


def test_sgd_momentum_set_to_zero_between_flat_steps_leaves_the_buffer_as_torch() -> None:
    """With momentum 0 torch neither reads nor updates the buffer made before."""
    ours, ref, opt, ref_opt = _pair(SGD, {"lr": 0.1, "momentum": 0.9})
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    opt.param_groups[0]["momentum"] = ref_opt.param_groups[0]["momentum"] = 0.0
    for _ in range(2):
        _step_both(ours, ref, opt, ref_opt, gen)
    _assert_equal(ours, ref)
    for p, t in zip(ours, ref, strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[t]["momentum_buffer"])


def test_a_state_key_gone_from_every_parameter_leaves_the_cheap_check_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SGD's buffers deleted and momentum set to 0: after one full check the steps
    pass the per-step loop again, which no longer looks for the old buffer's views."""
    ours, ref, opt, ref_opt = _pair(SGD, {"lr": 0.1, "momentum": 0.9})
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    for state, params in ((opt.state, ours), (ref_opt.state, ref)):
        for param in params:
            del state[param]["momentum_buffer"]
    opt.param_groups[0]["momentum"] = ref_opt.param_groups[0]["momentum"] = 0.0
    full_checks = _count_calls(monkeypatch, FlatGroup, "remember_states")
    for _ in range(4):
        _step_both(ours, ref, opt, ref_opt, gen)
    assert len(full_checks) == 1
    _assert_equal(ours, ref)


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_after_load_state_dict_the_group_is_flat_again_with_the_loaded_state(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    """The parameters are still views of the group's buffer: it is reused, and the
    loaded state tensors are copied into flat buffers of their own."""
    ours, ref, opt, ref_opt = _pair(cls, kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))  # fresh tensors
    for _ in range(3):
        _step_both(ours, ref, opt, ref_opt, gen)
    _assert_equal(ours, ref)
    assert len(_storages(ours)) == 1 and all(flat.current for flat in opt._flat.values())
    for key, tensors in _tensor_state(opt, ours).items():
        assert len(tensors) == len(ours)
        assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1, key
        for p, t in zip(ours, ref, strict=True):
            assert torch.equal(opt.state[p][key], ref_opt.state[t][key]), key


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(
            [Parameter(torch.zeros(FLAT_MAX_NUMEL)), Parameter(torch.zeros(1))], id="too-large"
        ),
        pytest.param([Parameter(torch.zeros(3)), Parameter(torch.zeros(3).double())], id="dtypes"),
        pytest.param(
            [Parameter(torch.zeros(40, dtype=torch.bfloat16)) for _ in range(2)], id="bfloat16"
        ),  # half precision rounds a number by where it sits: see POSITION_FREE_DTYPES
        pytest.param(
            [Parameter(t) for t in torch.zeros(2, 3).unbind()], id="one-storage"
        ),  # flattening would stop them sharing memory
    ],
)
def test_groups_that_cannot_share_one_buffer_are_left_as_they_are(
    params: list[Parameter],
) -> None:
    data = [p.data for p in params]
    opt = SGD(params, lr=0.1)
    for p in params:
        p.grad = torch.ones(p.shape, dtype=p.dtype)
    opt.step()
    assert not opt._flat
    assert all(p.data is d for p, d in zip(params, data, strict=True))


def test_flat_group_views_and_gather() -> None:
    params = [Parameter(torch.arange(6.0).view(2, 3)), Parameter(torch.tensor([7.0]))]
    flat = FlatGroup(params)
    pad = [0.0] * (ALIGN_BYTES // 4 - 6)  # the second parameter starts 64 bytes in
    assert torch.equal(flat.data, torch.tensor([0.0, 1, 2, 3, 4, 5, *pad, 7]))
    assert flat.holds(params) and not flat.holds(params[::-1])
    flat.data.add_(1)  # the parameters see what the optimizer writes
    assert torch.equal(params[1].data, torch.tensor([8.0]))
    grads = [torch.full((2, 3), 2.0), torch.tensor([3.0])]
    assert torch.equal(flat.gather_grads(grads), torch.tensor([2.0] * 6 + pad + [3.0]))
    params[0].data = torch.zeros(2, 3)
    assert not flat.holds(params)


def test_a_group_flattened_in_inference_mode_still_steps_outside_it() -> None:
    """The buffers are normal tensors: in-place updates outside that mode are allowed."""
    ours, _, opt, _ = _pair(Adam, {"lr": 0.1})
    for p in ours:
        p.grad = torch.ones(p.shape)
    with torch.inference_mode():
        opt.step()
    assert len(_storages(ours)) == 1
    assert not any(p.data.is_inference() for p in ours)
    assert not any(
        t.is_inference()
        for state in opt.state.values()
        for t in state.values()
        if isinstance(t, Tensor)
    )
    opt.step()


# One event of a training run, applied alike to ours and torch's: (kind, parameter index).
EVENTS = st.tuples(
    st.sampled_from(["step", "skip", "rebind", "reload", "reset", "replace"]), st.integers(0, 2)
)


@given(
    case=st.sampled_from(CASES),
    events=st.lists(EVENTS, min_size=1, max_size=12),
)
def test_any_mix_of_steps_rebinding_and_reloading_matches_torch_bit_for_bit(
    case: tuple[type[Optimizer], dict[str, Any]], events: list[tuple[str, int]]
) -> None:
    """Flattening, falling back and flattening again never change a single bit."""
    cls, kwargs = case
    resets = any(kind == "reset" for kind, _ in events)
    assume(torch_makes_state_at_first_step(cls.__name__) or not resets)
    ours, ref, opt, ref_opt = _pair(cls, kwargs)
    gen = torch.Generator().manual_seed(1)
    for kind, i in events:
        if kind == "rebind":  # param.data replaced, as model.to() or a user does
            value = torch.randn(SHAPES[i], generator=gen)
            ours[i].data, ref[i].data = value.clone(), value.clone()
            continue
        if kind == "reload":  # a checkpoint of torch's, with fresh state tensors
            opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
            continue
        if kind == "reset":  # del optimizer.state[p]: that parameter starts afresh
            opt.state.pop(ours[i], None)
            ref_opt.state.pop(ref[i], None)
            continue
        if kind == "replace":  # state[p][key] = a new tensor, in the same dict
            for state, param in ((opt.state, ours[i]), (ref_opt.state, ref[i])):
                for key, value in list(state.get(param, {}).items()):
                    if isinstance(value, Tensor) and value.dim() > 0:
                        state[param][key] = value * 0.5 + 0.25
            continue
        for j, (p, t) in enumerate(zip(ours, ref, strict=True)):
            g = torch.randn(p.shape, generator=gen)
            p.grad, t.grad = (None, None) if kind == "skip" and j == i else (g, g.clone())
        opt.step()
        ref_opt.step()
    _assert_equal(ours, ref)


def test_a_batch_of_one_trains_as_torch_does_to_the_bit() -> None:
    """MKL's matrix-vector product (one row) rounds by where the weight starts in memory.

    A flat buffer packed end to end put the second layer's weight at an odd offset,
    and from the second step on its products differed from torch's in the last bit.
    """
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(2, 25), torch.nn.ReLU(), torch.nn.Linear(25, 25))
    ours = nograd.nn.Sequential(nograd.nn.Linear(2, 25), nograd.nn.ReLU(), nograd.nn.Linear(25, 25))
    ours.load_state_dict(ref.state_dict())
    opt = SGD(ours.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nograd.nn.MSELoss()
    for _ in range(10):
        x, y = torch.rand(1, 2), torch.rand(1, 25)
        with torch.enable_grad():
            ref_opt.zero_grad()
            torch.nn.functional.mse_loss(ref(x), y).backward()
            ref_opt.step()
        opt.zero_grad()
        loss_fn(ours(x), y)
        ours.backward(loss_fn.backward())
        opt.step()
    assert len(_storages(list(ours.parameters()))) == 1  # trained as one flat group
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_half_precision_groups_step_tensor_by_tensor_to_torchs_bits() -> None:
    """bfloat16 add_ with an alpha rounds SIMD blocks and the tail differently: no flat group."""
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(n, generator=gen).to(torch.bfloat16) for n in (40, 50)]
    ours = [Parameter(v.clone()) for v in values]
    ref = [v.clone().requires_grad_() for v in values]
    opt, ref_opt = SGD(ours, lr=0.1, momentum=0.9), torch.optim.SGD(ref, lr=0.1, momentum=0.9)
    for _ in range(5):
        _step_both(ours, ref, opt, ref_opt, gen)
    assert not opt._flat
    _assert_equal(ours, ref)


def test_states_of_mixed_dtypes_keep_each_its_own_dtype_as_torch() -> None:
    """A buffer made before ``double()`` stays float32, one made after is float64: no flat group.

    One flat buffer would give all of them the first one's dtype, and the others'
    momentum would round differently from torch's.
    """
    ours, ref, opt, ref_opt = _pair(SGD, {"lr": 0.3, "momentum": 0.9, "dampening": 0.5})
    gen = torch.Generator().manual_seed(1)
    ours[0].grad, ref[0].grad = None, None
    for p, t in zip(ours[1:], ref[1:], strict=True):  # the first parameter sits out step 0
        g = torch.randn(p.shape, generator=gen)
        p.grad, t.grad = g.clone(), g.clone()
    opt.step()
    ref_opt.step()
    for p, t in zip(ours, ref, strict=True):  # model.double() between two steps
        p.data, t.data = p.data.double(), t.data.double()
    for _ in range(3):  # the first parameter's buffer is born float64, the others' float32
        _step_both(ours, ref, opt, ref_opt, gen)
    _assert_equal(ours, ref)
    for p, t in zip(ours, ref, strict=True):
        b, ref_b = opt.state[p]["momentum_buffer"], ref_opt.state[t]["momentum_buffer"]
        assert b.dtype == ref_b.dtype
        assert torch.equal(b, ref_b)

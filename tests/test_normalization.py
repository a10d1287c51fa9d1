"""LayerNorm and BatchNorm1d against their torch.nn twins: outputs, dL/dx, parameter
gradients and running statistics to the bit, in float32 and float64, in training and
evaluation, with every option; and a training run, under torch.inference_mode() too."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import torch

from nograd import nn, optim
from nograd.data import disk
from nograd.nn.batch_norm import BatchNorm1d
from nograd.nn.layer_norm import LayerNorm
from nograd.nn.module import NO_INPUT_GRAD, Module
from nograd.train import fit
from tests.oracle import since_torch_2_13

DTYPES = [torch.float32, torch.float64]


def step_both(
    ours: Module, ref: torch.nn.Module, x: torch.Tensor, needs_input_grad: bool = True
) -> None:
    """One forward and backward of each from the same x and dL/dy: all must be equal bits.

    Our parameter gradients accumulate as torch's do, so several calls test the sums too.
    """
    ours.needs_input_grad = needs_input_grad
    leaf = x.clone().requires_grad_(needs_input_grad)
    with torch.enable_grad():
        y_ref = ref(leaf)
        g = torch.randn_like(y_ref)
        y_ref.backward(g)
    y = ours(x)
    assert torch.equal(y, y_ref.detach())
    grad_input = ours.backward(g)
    if needs_input_grad:
        assert torch.equal(grad_input, leaf.grad)
    else:
        assert grad_input is NO_INPUT_GRAD
    assert_same_state(ours, ref)


def assert_same_state(ours: Module, ref: torch.nn.Module) -> None:
    """Parameters, their gradients and buffers, by torch's names, to the bit."""
    ref_params = dict(ref.named_parameters())
    assert dict(ours.named_parameters()).keys() == ref_params.keys()
    for name, param in ours.named_parameters():
        assert torch.equal(param.data, ref_params[name].detach()), name
        ref_grad = ref_params[name].grad
        assert param.grad is not None and ref_grad is not None, name
        assert torch.equal(param.grad, ref_grad), name
    ref_buffers = dict(ref.named_buffers())
    assert dict(ours.named_buffers()).keys() == ref_buffers.keys()
    for name, buffer in ours.named_buffers():
        assert buffer.dtype == ref_buffers[name].dtype, name
        assert torch.equal(buffer, ref_buffers[name]), name


def twins(name: str, *args: Any, **kwargs: Any) -> tuple[Any, torch.nn.Module]:
    """Ours and torch's, torch's loaded from ours (so parameters are shared values)."""
    ours = {"LayerNorm": LayerNorm, "BatchNorm1d": BatchNorm1d}[name](*args, **kwargs)
    ref = getattr(torch.nn, name)(*args, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def randomize(ours: Module, ref: torch.nn.Module) -> None:
    """Parameters other than ones and zeros, so that w and b take part in every formula."""
    for param in ours.parameters():
        param.data.copy_(torch.randn_like(param.data))
    ref.load_state_dict(ours.state_dict())


# ------------------------------------------------------------------------ LayerNorm
LAYER_NORM_CASES = [
    (5, (3, 5), {}),
    ((5,), (2, 3, 5), {}),
    ([3, 5], (4, 3, 5), {}),
    (torch.Size([2, 3, 4]), (2, 2, 3, 4), {}),
    (5, (4, 5), {"bias": False}),
    ((3, 5), (2, 3, 5), {"elementwise_affine": False}),
    (7, (6, 7), {"eps": 1e-3}),
    (1, (4, 1), {}),  # one number per sample: x_hat = 0
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("normalized_shape", "input_shape", "kwargs"), LAYER_NORM_CASES)
def test_layer_norm_is_torchs_to_the_bit(
    normalized_shape: Any, input_shape: tuple[int, ...], kwargs: dict[str, Any], dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    ours, ref = twins("LayerNorm", normalized_shape, dtype=dtype, **kwargs)
    randomize(ours, ref)
    for mode in (True, False):  # the same in both modes, as torch's
        ours.train(mode)
        ref.train(mode)
        for _ in range(2):  # gradients accumulate over calls
            step_both(ours, ref, torch.randn(input_shape, dtype=dtype) * 3 + 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_without_input_grad_still_accumulates_weight_grads(dtype: torch.dtype) -> None:
    ours, ref = twins("LayerNorm", (3, 4), dtype=dtype)
    randomize(ours, ref)
    step_both(ours, ref, torch.randn(5, 3, 4, dtype=dtype), needs_input_grad=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_of_inputs_of_a_thousand_is_finite_and_torchs(dtype: torch.dtype) -> None:
    ours, ref = twins("LayerNorm", 4, dtype=dtype)
    x = torch.tensor([[1000.0, -1000.0, 1000.0, -999.0], [-1000.0] * 4], dtype=dtype)
    step_both(ours, ref, x)
    assert torch.isfinite(ours(x)).all()
    assert torch.isfinite(ours.backward(torch.ones_like(x))).all()


def test_layer_norm_refuses_an_input_of_the_wrong_trailing_shape() -> None:
    norm = LayerNorm((3, 4))
    with pytest.raises(ValueError, match=r"^LayerNorm\(\(3, 4\).*expected input of shape "):
        norm(torch.randn(2, 4, 3))
    with pytest.raises(RuntimeError, match="before forward"):
        LayerNorm(3).backward(torch.ones(2, 3))
    norm(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(2, 3, 4\)"):
        norm.backward(torch.ones(2, 3))
    with pytest.raises(TypeError, match="normalized_shape"):
        LayerNorm(2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "normalized_shape", [np.int64(5), np.array([3, 5]), (np.int64(3), 5), torch.Size([3, 5])]
)
def test_layer_norm_takes_the_shapes_torch_takes(normalized_shape: Any) -> None:
    """An Integral is one size; anything else torch iterates, a numpy array too."""
    ours, ref = twins("LayerNorm", normalized_shape, dtype=torch.float64)
    assert ours.normalized_shape == tuple(int(size) for size in ref.normalized_shape)
    randomize(ours, ref)
    step_both(ours, ref, torch.randn(2, 3, 5, dtype=torch.float64))


@pytest.mark.parametrize("normalized_shape", [True, (True, 3), "3", 2.5, torch.tensor(3)])
def test_layer_norm_refuses_the_shapes_torch_refuses(normalized_shape: Any) -> None:
    with pytest.raises(TypeError):
        torch.nn.LayerNorm(normalized_shape)
    with pytest.raises(TypeError, match=r"^LayerNorm: expected normalized_shape"):
        LayerNorm(normalized_shape)


# ---------------------------------------------------------------------- BatchNorm1d
BATCH_NORM_OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "momentum-none": {"momentum": None},
    "momentum-0.3-eps": {"momentum": 0.3, "eps": 1e-3},
    "no-affine": {"affine": False},
    "no-bias": {"bias": False},
    "no-running-stats": {"track_running_stats": False},
    "no-running-stats-momentum-none": {"track_running_stats": False, "momentum": None},
}


def option_names(names: list[str]) -> list[Any]:
    """The option sets as parameters; torch's BatchNorm1d takes bias=False from 2.13."""
    return [pytest.param(n, marks=since_torch_2_13) if n == "no-bias" else n for n in names]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_shape", [(8, 6), (5, 6, 7), (2, 6), (1, 6, 3)])
@pytest.mark.parametrize("options", option_names(list(BATCH_NORM_OPTIONS)))
def test_batch_norm_trains_and_evaluates_as_torch_to_the_bit(
    options: str, input_shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    ours, ref = twins("BatchNorm1d", 6, dtype=dtype, **BATCH_NORM_OPTIONS[options])
    randomize(ours, ref)
    for _ in range(4):  # running statistics after several batches, num_batches_tracked
        step_both(ours, ref, torch.randn(input_shape, dtype=dtype) * 2 + 0.5)
    if ours.track_running_stats:
        assert ours.num_batches_tracked is not None
        assert int(ours.num_batches_tracked) == 4
        assert not torch.equal(ours.running_var, torch.ones(6, dtype=dtype))  # it moved
    ours.eval()
    ref.eval()
    for _ in range(2):  # running statistics, untouched (or batch statistics without them)
        step_both(ours, ref, torch.randn(input_shape, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tracking_turned_off_after_construction_leaves_the_buffers_alone(
    dtype: torch.dtype,
) -> None:
    # torch's rule: in training, buffers are updated only while tracked; in evaluation,
    # existing buffers are used whether tracked or not
    ours, ref = twins("BatchNorm1d", 3, dtype=dtype)
    step_both(ours, ref, torch.randn(6, 3, dtype=dtype))
    ours.track_running_stats = ref.track_running_stats = False
    running_mean = ours.state_dict()["running_mean"].clone()
    for _ in range(2):
        step_both(ours, ref, torch.randn(6, 3, 2, dtype=dtype))
    assert torch.equal(ours.state_dict()["running_mean"], running_mean)
    assert int(ours.state_dict()["num_batches_tracked"]) == 1
    ours.eval()
    ref.eval()
    step_both(ours, ref, torch.randn(6, 3, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_without_input_grad_still_accumulates_weight_grads(
    training: bool, dtype: torch.dtype
) -> None:
    ours, ref = twins("BatchNorm1d", 3, dtype=dtype)
    randomize(ours, ref)
    ours.train(training)
    ref.train(training)
    step_both(ours, ref, torch.randn(4, 3, 2, dtype=dtype), needs_input_grad=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_of_inputs_of_a_thousand_is_finite_and_torchs(dtype: torch.dtype) -> None:
    ours, ref = twins("BatchNorm1d", 2, dtype=dtype)
    x = torch.tensor([[1000.0, -1000.0], [-1000.0, -1000.0], [999.0, -1000.0]], dtype=dtype)
    step_both(ours, ref, x)
    assert torch.isfinite(ours(x)).all()
    assert torch.isfinite(ours.backward(torch.ones_like(x))).all()


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1)])
def test_batch_norm_refuses_one_value_per_channel_in_training_only(
    shape: tuple[int, ...],
) -> None:
    norm = BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        norm(torch.randn(shape))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        torch.nn.BatchNorm1d(3)(torch.randn(shape))  # torch's own message
    norm.eval()
    assert norm(torch.randn(shape)).shape == shape


def test_batch_norm_refuses_inputs_of_the_wrong_rank_or_width() -> None:
    norm = BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"^BatchNorm1d\(3, .*expected 2D or 3D input \(got 4D"):
        norm(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, C\) with C = 3, got"):
        norm(torch.randn(4, 5))
    with pytest.raises(RuntimeError, match="before forward"):
        norm.backward(torch.ones(4, 3))


# torch's refusals, each after the module has counted the batch (num_batches_tracked is
# incremented before F.batch_norm checks anything): (options, training, input shape,
# the message)
REFUSED: dict[str, tuple[dict[str, Any], bool, tuple[int, ...], str]] = {
    "one-value-training": ({}, True, (1, 3), "Expected more than 1 value per channel"),
    "one-value-(N,C,L)": ({}, True, (1, 3, 1), "Expected more than 1 value per channel"),
    # no running statistics: evaluation takes the batch's, so it needs two values too
    "one-value-eval-untracked": (
        {"track_running_stats": False},
        False,
        (1, 3),
        "Expected more than 1 value per channel",
    ),
    "eps-0-training": ({"eps": 0.0}, True, (4, 3), "eps must be positive during training"),
    "eps-0-eval-untracked": (
        {"eps": 0.0, "track_running_stats": False},
        False,
        (4, 3),
        "eps must be positive during training",
    ),
    "eps-negative-eval": ({"eps": -1e-3}, False, (4, 3), "eps must be non-negative"),
    "wrong-C-training": ({}, True, (4, 5), r"expected input of shape \(N, C\) with C = 3"),
    "wrong-C-eval": ({}, False, (4, 5, 2), r"expected input of shape \(N, C, L\) with C = 3"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_batch_norm_refuses_what_torch_refuses_after_counting_the_batch(case: str) -> None:
    """A loop that skips a refused batch and goes on must keep torch's running statistics:
    with momentum=None the count weighs every later batch."""
    options, training, shape, message = REFUSED[case]
    ours, ref = twins("BatchNorm1d", 3, **options)
    ours.train(training)
    ref.train(training)
    x = torch.randn(shape)
    with pytest.raises((ValueError, RuntimeError)):
        ref(x)
    with pytest.raises(ValueError, match=rf"^BatchNorm1d\(3, .*{message}"):
        ours(x)
    for (name, buffer), ref_buffer in zip(ours.named_buffers(), ref.buffers(), strict=True):
        assert torch.equal(buffer, ref_buffer), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("options", "training", "shape"),
    [
        # eps = 0 with the running statistics: accepted (torch 2.11 refused it)
        pytest.param({"eps": 0.0}, False, (4, 3), marks=since_torch_2_13),
        # nothing of size C to check x against: torch normalises the 5 features it gets
        ({"affine": False, "track_running_stats": False}, True, (4, 5)),
        ({"affine": False, "track_running_stats": False}, False, (4, 5, 2)),
    ],
)
def test_batch_norm_accepts_what_torch_accepts(
    options: dict[str, Any], training: bool, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    ours, ref = twins("BatchNorm1d", 3, dtype=dtype, **options)
    randomize(ours, ref)
    ours.train(training)
    ref.train(training)
    step_both(ours, ref, torch.randn(shape, dtype=dtype))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 2), (2, 3, 0), (1, 3, 0)])
@pytest.mark.parametrize(
    "options", option_names(["default", "momentum-none", "no-affine", "no-bias"])
)
def test_an_empty_batch_is_torchs(options: str, shape: tuple[int, ...], training: bool) -> None:
    """No numbers, no statistics: torch returns x * w[0] + b[0], empty as x, counts the
    batch and leaves the running statistics alone; w and b get gradients of zeros."""
    ours, ref = twins("BatchNorm1d", 3, dtype=torch.float64, **BATCH_NORM_OPTIONS[options])
    randomize(ours, ref)
    ours.train(training)
    ref.train(training)
    step_both(ours, ref, torch.randn(shape, dtype=torch.float64))
    step_both(ours, ref, torch.randn(4, 3, dtype=torch.float64))  # then a batch with numbers


@pytest.mark.parametrize("num_features", [True, 2.0, "3"])
def test_batch_norm_refuses_a_num_features_torch_refuses(num_features: Any) -> None:
    with pytest.raises(TypeError):
        torch.nn.BatchNorm1d(num_features)
    with pytest.raises(TypeError, match=r"^BatchNorm1d: expected an integer num_features"):
        BatchNorm1d(num_features)


def test_num_batches_tracked_is_an_int64_buffer_that_to_does_not_cast() -> None:
    norm = BatchNorm1d(3).to(torch.float64)
    assert norm.num_batches_tracked is not None
    assert norm.num_batches_tracked.dtype == torch.int64
    assert norm.running_mean is not None and norm.running_mean.dtype == torch.float64
    assert list(norm.state_dict()) == list(torch.nn.BatchNorm1d(3).state_dict())
    untracked = BatchNorm1d(3, track_running_stats=False)
    assert untracked.running_mean is None and list(untracked.state_dict()) == ["weight", "bias"]


# ----------------------------------------------------------------- repr, signatures
REPRS = [
    ("LayerNorm", (5,), {}),
    ("LayerNorm", ((3, 4),), {"eps": 1e-3, "bias": False}),
    ("LayerNorm", ([3],), {"elementwise_affine": False}),
    ("BatchNorm1d", (4,), {}),
    ("BatchNorm1d", (4, 1e-3, None, False, False), {}),
    ("BatchNorm1d", (4,), {"bias": False, "momentum": 0.5}),
]


@since_torch_2_13  # torch 2.11 shows no bias
@pytest.mark.parametrize(("name", "args", "kwargs"), REPRS)
def test_repr_equals_torchs(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    ours, ref = twins(name, *args, **kwargs)
    assert repr(ours) == repr(ref)


def shape_of(function: Any) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter after self, as tests/test_reprs.py compares."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


@pytest.mark.parametrize("cls", [LayerNorm, pytest.param(BatchNorm1d, marks=since_torch_2_13)])
def test_constructor_arguments_are_torchs(cls: type[Module]) -> None:
    assert shape_of(cls.__init__) == shape_of(getattr(torch.nn, cls.__name__).__init__)


# ------------------------------------------------------------------ a training run
def networks(dtype: torch.dtype) -> tuple[nn.Sequential, torch.nn.Sequential]:
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(2, 16), BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    twin = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )
    ours.to(dtype)
    twin.to(dtype)
    twin.load_state_dict(ours.state_dict())
    return ours, twin


@pytest.mark.parametrize("inference_mode", [False, True])
def test_twenty_sgd_steps_through_batch_norm_are_torchs_to_the_bit(inference_mode: bool) -> None:
    ours, twin = networks(torch.float32)
    initial = ours.state_dict()["1.running_mean"].clone()
    optimizer = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    loss_fn, torch_loss_fn = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = torch.randn(16, 2, generator=generator)
        y = (x[:, 0] * x[:, 1] > 0).long()
        with torch.inference_mode(inference_mode):  # as fit trains: no version counters
            optimizer.zero_grad()
            loss = loss_fn(ours(x), y)
            ours.backward(loss_fn.backward())
            optimizer.step()
        torch_optimizer.zero_grad()
        with torch.enable_grad():
            torch_loss = torch_loss_fn(twin(x), y)
            torch_loss.backward()
        torch_optimizer.step()
        assert torch.equal(loss, torch_loss.detach())
    for key, value in twin.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    assert int(ours.state_dict()["1.num_batches_tracked"]) == 20
    assert not torch.equal(ours.state_dict()["1.running_mean"], initial)
    ours.eval()
    twin.eval()
    x = torch.randn(5, 2, generator=generator)
    assert torch.equal(ours(x), twin(x))  # evaluation with the running statistics


def test_fit_trains_a_batch_norm_network_under_inference_mode() -> None:
    ours, _ = networks(torch.float32)
    data = disk(64, generator=torch.Generator().manual_seed(1))
    optimizer = optim.SGD(ours.parameters(), lr=0.1)
    fit(ours, nn.CrossEntropyLoss(), optimizer, data, epochs=2, batch_size=16, progress=False)
    norm = ours[1]
    assert isinstance(norm, BatchNorm1d) and norm.num_batches_tracked is not None
    assert int(norm.num_batches_tracked) == 8  # 2 epochs of 4 batches
    assert norm.running_mean is not None and not norm.running_mean.is_inference()
    # after fit the module keeps training outside inference mode, running statistics too
    ours.train()
    ours(torch.randn(4, 2))
    assert int(norm.num_batches_tracked) == 9


def norm_twins(device: str = "cpu") -> tuple[nn.Sequential, torch.nn.Sequential]:
    """The same net in both, each BatchNorm1d having counted 7 batches."""
    ours = nn.Sequential(nn.Linear(3, 4, device=device), BatchNorm1d(4, device=device))
    ref = torch.nn.Sequential(
        torch.nn.Linear(3, 4, device=device), torch.nn.BatchNorm1d(4, device=device)
    )
    for model in (ours, ref):
        if device != "meta":
            model[1].num_batches_tracked.fill_(7)  # type: ignore[union-attr, operator]
    return ours, ref


def without_count(state: Any, version: int | None) -> Any:
    """A dict without num_batches_tracked, with torch's metadata at ``version``, or none."""
    state = type(state)((key, value) for key, value in state.items() if "num_batches" not in key)
    if version is not None:
        state._metadata = {"": {"version": 1}, "0": {"version": 1}, "1": {"version": version}}
    return state


@pytest.mark.parametrize("assign", [False, True])
@pytest.mark.parametrize("version", [None, 1])
def test_a_count_an_older_state_dict_lacks_is_filled_in_as_torch_does(
    version: int | None, assign: bool
) -> None:
    """num_batches_tracked came with version 2 of torch's batch norm: a plain dict or an
    older one without it loads, keeping the module's own count."""
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).state_dict()
    ours, ref = norm_twins()
    for model in (ref, ours):
        result = model.load_state_dict(without_count(source, version), assign=assign)
        assert list(result.missing_keys) == list(result.unexpected_keys) == []
        assert int(model[1].num_batches_tracked) == 7  # type: ignore[arg-type]
        assert torch.equal(model.state_dict()["1.running_var"], source["1.running_var"])


def test_a_count_a_version_2_state_dict_lacks_is_missing_as_in_torch() -> None:
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).state_dict()
    ours, ref = norm_twins()
    with pytest.raises(
        RuntimeError, match=r'Missing key\(s\) in state_dict: "1.num_batches_tracked"'
    ):
        ref.load_state_dict(without_count(source, 2))
    with pytest.raises(RuntimeError, match=r"missing keys \['1.num_batches_tracked'\]"):
        ours.load_state_dict(without_count(source, 2))
    result = ours.load_state_dict(without_count(source, 2), strict=False)
    assert result.missing_keys == ["1.num_batches_tracked"]


def test_a_meta_model_takes_a_count_of_0_for_a_plain_dict_as_torch() -> None:
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).state_dict()
    ours, ref = norm_twins("meta")
    ref.load_state_dict(without_count(source, None), assign=True)
    ours.load_state_dict(without_count(source, None), assign=True)
    for model in (ref, ours):
        count = model[1].num_batches_tracked
        assert count is not None and count.device.type == "cpu" and int(count) == 0

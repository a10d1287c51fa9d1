"""The same oracle comparisons on a GPU; skipped where CUDA is absent (as on CI)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from nograd import data, nn, optim
from nograd.optim import foreach
from nograd.optim.capturable_adam import adam_step_counts, capturable_adam_step
from nograd.train import fit
from tests.oracle import compare_module, since_torch_2_13

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA = torch.device("cuda")


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (lambda: nn.Linear(5, 3), lambda: torch.nn.Linear(5, 3)),
        (nn.ReLU, torch.nn.ReLU),
        (nn.Tanh, torch.nn.Tanh),
        (nn.Sigmoid, torch.nn.Sigmoid),
        (nn.GELU, torch.nn.GELU),
        (nn.ELU, torch.nn.ELU),
        (lambda: nn.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)),
        (lambda: nn.LayerNorm(5), lambda: torch.nn.LayerNorm(5)),
        (lambda: nn.BatchNorm1d(5), lambda: torch.nn.BatchNorm1d(5)),
    ],
)
def test_modules_match_autograd_on_cuda(ours: object, ref: object) -> None:
    ours_module, ref_module = ours().to(CUDA, torch.float64), ref().to(CUDA, torch.float64)  # type: ignore[operator]
    compare_module(ours_module, ref_module, torch.randn(7, 5, dtype=torch.float64, device=CUDA))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_running_statistics_on_cuda_follow_torch(momentum: float | None) -> None:
    """torch's batch norm takes cuDNN's kernel on a GPU and nograd ATen's: the same
    statistics, to float64 rounding, after three training batches and in evaluation."""
    ours = nn.BatchNorm1d(4, momentum=momentum).to(CUDA, torch.float64)
    ref = torch.nn.BatchNorm1d(4, momentum=momentum).to(CUDA, torch.float64)
    for _ in range(3):
        x = torch.randn(16, 4, 3, dtype=torch.float64, device=CUDA)
        ours(x)
        ref(x)
    for name, buffer in ref.named_buffers():
        torch.testing.assert_close(getattr(ours, name), buffer, rtol=1e-12, atol=1e-12)
    x = torch.randn(8, 4, dtype=torch.float64, device=CUDA)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sequential_fused_linear_relu_matches_autograd_on_cuda(dtype: torch.dtype) -> None:
    """Linear then ReLU run as one cuBLAS call with its epilogue (_addmm_activation)."""
    ours = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).to(CUDA, dtype)
    ref = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    compare_module(ours, ref.to(CUDA, dtype), torch.randn(64, 5, dtype=dtype, device=CUDA))


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_on_cuda_reads_no_targets_and_matches_torch(
    ignore: bool, smoothing: float, weighted: bool
) -> None:
    z = torch.randn(9, 4, dtype=torch.float64, device=CUDA)
    y = torch.randint(0, 4, (9,), device=CUDA)
    if ignore:
        y[::3] = -100
    weight = torch.rand(4, dtype=torch.float64, device=CUDA) + 0.1 if weighted else None
    ours = nn.CrossEntropyLoss(label_smoothing=smoothing, weight=weight)
    ref = torch.nn.CrossEntropyLoss(label_smoothing=smoothing, weight=weight)
    z_ref = z.clone().requires_grad_()
    with torch.enable_grad():
        loss_ref = ref(z_ref, y)
        loss_ref.backward()
    torch.cuda.set_sync_debug_mode("error")  # any host read of the targets raises
    try:
        loss = ours(z, y)
        grad = ours.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(loss, loss_ref.detach(), rtol=1e-10, atol=1e-12)
    assert z_ref.grad is not None
    torch.testing.assert_close(grad, z_ref.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax", "Adadelta"]
)
def test_optimizers_match_torch_on_cuda(name: str) -> None:
    options = {"SGD": {"lr": 0.1, "momentum": 0.9, "nesterov": True}}.get(name, {"lr": 1e-2})
    shapes = [(25, 2), (25,), (2, 25), (2,)]
    init = [torch.randn(s, dtype=torch.float64, device=CUDA) for s in shapes]
    for p, q in train_with_torch(name, options, init, steps=20):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def train_with_torch(
    name: str,
    options: dict[str, Any],
    init: list[Tensor],
    steps: int,
    torch_only: dict[str, Any] | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """nograd's optimizer ``name`` and torch.optim's, on the same random gradients.

    nograd's steps run inside ``foreach.own_kernels()``, as in a CUDA graph capture.
    ``torch_only`` are options for torch's optimizer alone (``foreach=False``).
    Returns each parameter's (nograd's, torch's) values after ``steps`` steps.
    """
    ours = [nn.Parameter(t.clone()) for t in init]
    ref = [torch.nn.Parameter(t.clone()) for t in init]
    opt = getattr(optim, name)(ours, **options)
    opt_ref = getattr(torch.optim, name)(ref, **options, **(torch_only or {}))
    for _ in range(steps):
        grads = [torch.randn_like(t) for t in init]
        for p, q, g in zip(ours, ref, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        with foreach.own_kernels():
            opt.step()
        opt_ref.step()
    return [(p.data, q.detach()) for p, q in zip(ours, ref, strict=True)]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("SGD", {"lr": 0.05, "momentum": 0.9}),
        ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
        ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "maximize": True}),
        ("Adam", {"lr": 1e-3}),
        ("Adam", {"lr": 1e-3, "amsgrad": True, "weight_decay": 1e-2}),
        ("AdamW", {"lr": 1e-3}),
        ("RMSprop", {"lr": 1e-3, "momentum": 0.9, "centered": True}),
        ("RMSprop", {"lr": 1e-3}),
    ],
)
def test_optimizers_on_big_float32_tensors_have_torchs_bits(
    name: str, options: dict[str, Any]
) -> None:
    """The MLP's shapes: big tensors take single-tensor kernels, yet every bit is torch's.

    torch's optimizers on a GPU run ``_foreach_*`` kernels over the whole list; in a
    capture, nograd gives each tensor of OWN_KERNEL_NUMEL numbers or more its own
    kernel (``nograd.optim.foreach``).
    """
    shapes = [(1024, 784), (1024,), (1024, 1024), (1024,), (10, 1024), (10,)]
    torch.manual_seed(0)
    init = [torch.randn(s, device=CUDA) for s in shapes]
    for p, q in train_with_torch(name, options, init, steps=5):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}),
        ("Adam", {"lr": 1e-2, "amsgrad": True}),
        ("AdamW", {"lr": 1e-2, "maximize": True}),
        pytest.param("Adagrad", {"lr": 1e-2, "lr_decay": 0.1}, marks=since_torch_2_13),
    ],
)
def test_fused_optimizers_have_torchs_fused_bits_on_cuda(
    name: str, options: dict[str, Any]
) -> None:
    """fused=True runs torch's CUDA fused kernels (``nograd.optim.fused``)."""
    shapes = [(1024, 784), (1024,), (10, 1024), (10,)]
    torch.manual_seed(0)
    init = [torch.randn(s, device=CUDA) for s in shapes]
    for p, q in train_with_torch(name, {**options, "fused": True}, init, 5):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("options", [{"lr": 1e-2}, {"lr": 1e-2, "lr_decay": 0.1, "maximize": True}])
def test_adagrad_on_big_float32_tensors_has_torchs_single_tensor_bits(
    options: dict[str, Any],
) -> None:
    """nograd's Adagrad ends each step with one addcdiv, as torch's single-tensor
    Adagrad (its default on the CPU) does; torch's foreach Adagrad, its default on a
    GPU, computes that line as a product, a quotient and a sum instead."""
    shapes = [(1024, 784), (1024,), (10, 1024), (10,)]
    torch.manual_seed(0)
    init = [torch.randn(s, device=CUDA) for s in shapes]
    for p, q in train_with_torch("Adagrad", options, init, 5, {"foreach": False}):
        assert torch.equal(p, q)


@pytest.mark.parametrize("options", [{}, {"amsgrad": True, "weight_decay": 1e-2}])
def test_capturable_adam_on_big_float32_tensors_keeps_the_foreach_bits(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """nograd's graph-ready Adam, big tensors split off, against the same step all foreach."""
    shapes = [(1024, 784), (1024,), (10, 1024)]
    torch.manual_seed(0)
    init = [torch.randn(s, device=CUDA) for s in shapes]
    runs = []
    for split in (True, False):
        with monkeypatch.context() as patched:
            if not split:
                patched.setattr(foreach, "_own_kernel", lambda x: False)  # torch's one call
            params = [nn.Parameter(t.clone()) for t in init]
            opt = optim.Adam(params, lr=1e-3, **options)
            torch.manual_seed(1)
            for i in range(5):
                for p in params:
                    p.grad = torch.randn_like(p.data)
                if i == 0:
                    opt.step()  # the first step creates the state
                    steps = adam_step_counts(opt)
                else:
                    with foreach.own_kernels():
                        capturable_adam_step(opt, steps)
            runs.append([p.data for p in params])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_fit_on_cuda_trains_as_on_the_cpu() -> None:
    finals = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).to(torch.float64)
        history = fit(
            model,
            nn.CrossEntropyLoss(),
            optim.Adam(model.parameters(), lr=1e-2),
            data.disk(512, generator=torch.Generator().manual_seed(1)),
            data.disk(256, generator=torch.Generator().manual_seed(2)),
            epochs=5,
            batch_size=64,
            generator=torch.Generator().manual_seed(3),
            progress=False,
            device=device,
        )
        finals.append(([p.data.cpu() for p in model.parameters()], history.test_acc))
    (cpu_params, cpu_acc), (cuda_params, cuda_acc) = finals
    assert cuda_acc == cpu_acc
    for on_cpu, on_cuda in zip(cpu_params, cuda_params, strict=True):
        torch.testing.assert_close(on_cuda, on_cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_fit_with_cuda_graph_trains_as_eager_fit(name: str) -> None:
    results = []
    for graphed in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).to(CUDA, torch.float64)
        options = {"lr": 0.05, "momentum": 0.9} if name == "SGD" else {"lr": 1e-2}
        optimizer = getattr(optim, name)(model.parameters(), **options)
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            data.disk(512, generator=torch.Generator().manual_seed(1)),
            epochs=3,
            batch_size=64,  # divides 512: no batch is dropped
            generator=torch.Generator().manual_seed(2),
            progress=False,
            cuda_graph=graphed,
        )
        results.append([p.data.clone() for p in model.parameters()])
    for eager, graphed_param in zip(*results, strict=True):
        torch.testing.assert_close(graphed_param, eager, rtol=1e-9, atol=1e-12)


def test_cli_trains_with_cuda_graph(tmp_path: object) -> None:
    from nograd.cli import main

    code = main(
        [
            "train",
            "--device",
            "cuda",
            "--cuda-graph",
            "--rounds",
            "1",
            "--epochs",
            "3",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0


def test_cuda_and_cpu_move_a_model_and_back() -> None:
    model = nn.Linear(3, 2)
    weight = model.weight.data.clone()
    assert model.cuda() is model and model.weight.device.type == "cuda"
    assert model.cuda(0).weight.device == torch.device("cuda", 0)
    assert torch.equal(model.cpu().weight.data, weight)


def test_train_round_hands_fit_its_datasets_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from nograd import experiment
    from nograd.config import TrainConfig

    devices: list[torch.device] = []

    def recording_fit(model: Any, loss_fn: Any, optimizer: Any, train: Any, test: Any, **kw: Any):
        devices.extend(t.device for t in (*train.tensors, *test.tensors))
        return fit(model, loss_fn, optimizer, train, test, **kw)

    monkeypatch.setattr(experiment, "fit", recording_fit)
    config = TrainConfig(device="cuda", epochs=2, rounds=1, n_train=64, n_test=64)
    result = experiment.train_round(config, 0, progress=False)
    assert [d.type for d in devices] == ["cuda"] * 4  # no copy from the CPU at each step
    assert result.record["test_acc"] >= 0.0


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_matches_torch_on_cuda(line_search_fn: str | None) -> None:
    """A least-squares fit on the GPU: nograd's LBFGS and torch's, the gradient by formula
    on our side and by autograd on torch's, agree to float64's last digits."""
    generator = torch.Generator(device=CUDA).manual_seed(0)
    a = torch.randn(40, 6, dtype=torch.float64, device=CUDA, generator=generator)
    b = torch.randn(40, dtype=torch.float64, device=CUDA, generator=generator)
    ours = nn.Parameter(torch.zeros(6, dtype=torch.float64, device=CUDA))
    ref = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64, device=CUDA))
    options: dict[str, Any] = {"lr": 0.5, "history_size": 3, "line_search_fn": line_search_fn}
    opt, opt_ref = optim.LBFGS([ours], **options), torch.optim.LBFGS([ref], **options)

    def closure() -> Tensor:
        opt.zero_grad()
        residual = a @ ours.data - b
        ours.grad = 2 * a.t() @ residual / len(b)  # dL/dw of the mean of squares
        return (residual**2).mean()

    def closure_ref() -> Tensor:
        opt_ref.zero_grad()
        with torch.enable_grad():
            loss = ((a @ ref - b) ** 2).mean()
            loss.backward()
        return loss

    for _ in range(3):
        torch.testing.assert_close(opt.step(closure), opt_ref.step(closure_ref))  # type: ignore[arg-type]
    torch.testing.assert_close(ours.data, ref.detach(), rtol=1e-9, atol=1e-12)

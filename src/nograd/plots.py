"""Figures of a run: learning curves over rounds, and a model's decision regions.

matplotlib is imported here only, with the file-only Agg backend, so nothing else
in nograd needs it and no display is ever opened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from nograd.nn.module import Module
from nograd.targets import predict_classes
from nograd.train import History

FIGSIZE = (5.0, 4.0)
DPI = 100
METRICS = {"loss": "loss", "acc": "accuracy"}
# Points per forward pass when drawing: as many as fit's test batches, so a figure needs
# no more memory than measuring did (the 200 x 200 grid at once through a network
# 100000 wide would need 16 GB per layer)
BATCH_SIZE = 1024


def plot_curves(per_round_histories: Sequence[History], metric: str, path: str | Path) -> None:
    """Train and test ``metric`` ("loss" or "acc") per epoch: mean over rounds, +- 1 std band.

    Rounds may differ in length; each epoch averages the rounds that reached it.
    """
    if metric not in METRICS:
        raise ValueError(f"plot_curves: metric must be one of {sorted(METRICS)}, got {metric!r}")
    if not per_round_histories:
        raise ValueError("plot_curves: expected at least one History, got none")
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for split, colour in (("train", "tab:blue"), ("test", "tab:orange")):
        curves = [getattr(h, f"{split}_{metric}") for h in per_round_histories]
        curves = [c for c in curves if c]
        if not curves:
            continue
        mean, std = _mean_std(curves)
        epochs = torch.arange(1, len(mean) + 1)
        ax.plot(epochs, mean, color=colour, label=f"{split} (mean of {len(curves)})")
        ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.25, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(METRICS[metric])
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_boundary(
    model: Module,
    test_data: object,
    path: str | Path,
    *,
    classify: Callable[[Tensor], Tensor] | None = None,
    resolution: int = 200,
    title: str | None = None,
) -> None:
    """The model's decision regions, with the test points marked correct or wrong.

    The view is [0, 1]^2 when the points lie there (the disk task), else their
    bounding box with a 5% margin.

    Args:
        model: maps (N, 2) points to outputs; run in eval mode, mode restored after.
        test_data: a TensorDataset of (x, y) with 2-D x.
        path: where to write the PNG.
        classify: outputs -> class indices (default: ``predict_classes``).
        resolution: grid points per axis.
        title: the figure's title (default: the test accuracy).
    """
    x, y = test_data.tensors[:2]  # type: ignore[attr-defined]
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(
            f"plot_boundary: expected 2-D points of shape (N, 2), got {tuple(x.shape)}"
        )
    classify = classify or predict_classes
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    lo, hi = x.min(0).values, x.max(0).values
    if lo.min() < 0 or hi.max() > 1:
        margin = 0.05 * (hi - lo)
        lo, hi = lo - margin, hi + margin
    else:
        lo, hi = torch.zeros(2), torch.ones(2)

    u = torch.linspace(float(lo[0]), float(hi[0]), resolution)
    v = torch.linspace(float(lo[1]), float(hi[1]), resolution)
    grid_u, grid_v = torch.meshgrid(u, v, indexing="xy")
    grid = torch.stack([grid_u.reshape(-1), grid_v.reshape(-1)], dim=1)
    was_training = model.training
    model.eval()
    regions = _classify_in_batches(model, classify, grid, device, dtype)
    regions = regions.reshape(resolution, resolution)
    predicted = _classify_in_batches(model, classify, x, device, dtype)
    model.train(was_training)
    correct = predicted == y

    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    ax.imshow(
        regions.numpy(),
        origin="lower",
        extent=extent,
        cmap="coolwarm",
        alpha=0.3,
        aspect="equal",
    )
    ax.scatter(
        x[correct, 0],
        x[correct, 1],
        c=y[correct],
        cmap="coolwarm",
        s=6,
        vmin=0,
        vmax=1,
        label="correct",
    )
    ax.scatter(
        x[~correct, 0],
        x[~correct, 1],
        c="black",
        marker="x",
        s=25,
        label=f"wrong ({int((~correct).sum())})",
    )
    accuracy = float(correct.float().mean())
    ax.set_title(title if title is not None else f"test accuracy {100 * accuracy:.1f}%")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.legend(loc="upper right", fontsize="small")
    _save(fig, path)


def _classify_in_batches(
    model: Module,
    classify: Callable[[Tensor], Tensor],
    points: Tensor,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """The classes of ``points``, BATCH_SIZE at a time, on the CPU."""
    return torch.cat(
        [
            classify(model(points[start : start + BATCH_SIZE].to(device=device, dtype=dtype))).cpu()
            for start in range(0, len(points), BATCH_SIZE)
        ]
    )


def _mean_std(curves: Sequence[Sequence[float]]) -> tuple[Tensor, Tensor]:
    """Per-epoch mean and standard deviation (0 where only one round reached it)."""
    length = max(len(c) for c in curves)
    mean, std = torch.zeros(length, dtype=torch.float64), torch.zeros(length, dtype=torch.float64)
    for epoch in range(length):
        values = torch.tensor([c[epoch] for c in curves if len(c) > epoch], dtype=torch.float64)
        mean[epoch] = values.mean()
        std[epoch] = values.std() if len(values) > 1 else 0.0
    return mean, std


def _save(fig: object, path: str | Path) -> None:
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]

"""TensorDataset and four 2-D binary classification tasks: disk, xor, moons, spirals.

Every task returns a ``TensorDataset(x, y)`` with x of dtype float32 and shape (n, 2)
and labels y of dtype int64 and shape (n,). Every random draw comes from
``generator`` (the global generator when it is None), so a seeded
``torch.Generator`` makes a dataset reproducible. Xor, moons and spirals have
balanced classes (their counts differ by at most one); disk labels uniform random
points, so its classes are balanced only in expectation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nograd.data.dataset import Dataset

# The disk centred at (1/2, 1/2) with radius 1/sqrt(2 pi) has area pi r^2 = 1/2.
DISK_RADIUS_SQUARED = 1 / (2 * math.pi)
SPIRAL_TURNS = 1.5


class TensorDataset(Dataset[tuple[Tensor, ...]]):
    """Samples are the rows of a few tensors: ``dataset[i] = (t[i] for t in tensors)``.

    Args:
        *tensors: one or more tensors sharing their first dimension (the samples).

    Shape:
        each tensor: (n, *) -> each sample: a tuple of tensors of shape (*).
    """

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor, got none")
        for position, tensor in enumerate(tensors):
            if not isinstance(tensor, Tensor):
                raise TypeError(
                    f"TensorDataset: expected torch.Tensor arguments, "
                    f"got {type(tensor).__name__} at position {position}"
                )
            if tensor.dim() == 0:
                raise ValueError(
                    f"TensorDataset: expected tensors with a first (sample) dimension, "
                    f"got a 0-dimensional tensor at position {position}"
                )
        sizes = [tensor.shape[0] for tensor in tensors]
        if len(set(sizes)) != 1:
            raise ValueError(
                f"TensorDataset: expected tensors with the same first dimension, got sizes {sizes}"
            )
        self.tensors: tuple[Tensor, ...] = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(tensor[index] for tensor in self.tensors)

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(tensor.shape)) for tensor in self.tensors)
        return f"TensorDataset({shapes})"


def _check_arguments(
    task: str, n: int, noise: float | None, generator: torch.Generator | None
) -> None:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{task}: expected an integer n, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{task}: expected n >= 1, got {n}")
    if noise is not None:
        if not isinstance(noise, (int, float)) or isinstance(noise, bool):
            raise TypeError(f"{task}: expected a real noise level, got {type(noise).__name__}")
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"{task}: expected a finite noise >= 0, got {noise}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{task}: expected a torch.Generator or None, got {type(generator).__name__}"
        )


def _shuffle(x: Tensor, y: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    order = torch.randperm(y.shape[0], generator=generator)
    return x[order], y[order]


def disk(n: int, generator: torch.Generator | None = None) -> TensorDataset:
    """x ~ U([0, 1]^2); y = 1 if |x - (1/2, 1/2)|^2 < 1 / (2 pi), else 0.

    The disk has area 1/2, so the two classes are balanced in expectation (not
    exactly: the labels follow the points).

    Args:
        n: number of samples.
        generator: source of the uniform draws.

    Shape:
        x: (n, 2) float32, y: (n,) int64.
    """
    _check_arguments("disk", n, None, generator)
    x = torch.rand(n, 2, generator=generator, dtype=torch.float32)
    squared_distance = ((x.double() - 0.5) ** 2).sum(dim=1)  # float64: no rounding at the rim
    y = (squared_distance < DISK_RADIUS_SQUARED).long()
    return TensorDataset(x, y)


def xor(n: int, noise: float = 0.1, generator: torch.Generator | None = None) -> TensorDataset:
    """Four Gaussian clusters at the corners (+-1, +-1); y = [x_1 > 0] xor [x_2 > 0].

    Cluster c = (a, b) in {0, 1}^2 has centre (2a - 1, 2b - 1) and label a xor b;
    each point is its centre plus N(0, noise^2) noise in each coordinate, and keeps
    its cluster's label even if the noise carries it across an axis. The clusters
    are filled in turn (sizes differ by at most one), then shuffled.

    Args:
        n: number of samples.
        noise: standard deviation of the Gaussian noise.
        generator: source of the shuffle and the noise.

    Shape:
        x: (n, 2) float32, y: (n,) int64.
    """
    _check_arguments("xor", n, noise, generator)
    cluster = (torch.arange(n) % 4)[torch.randperm(n, generator=generator)]
    bits = torch.stack([cluster // 2, cluster % 2], dim=1)  # (a, b)
    centre = (2 * bits - 1).to(torch.float32)
    x = centre + noise * torch.randn(n, 2, generator=generator, dtype=torch.float32)
    y = bits[:, 0] ^ bits[:, 1]
    return TensorDataset(x, y)


def moons(n: int, noise: float = 0.1, generator: torch.Generator | None = None) -> TensorDataset:
    """Two interleaving half circles, as ``sklearn.datasets.make_moons``.

    Class 0 (n // 2 points): (cos t, sin t); class 1 (the rest):
    (1 - cos t, 1/2 - sin t), with t evenly spaced over [0, pi]. The points are
    shuffled, then N(0, noise^2) noise is added to each coordinate.

    Args:
        n: number of samples.
        noise: standard deviation of the Gaussian noise.
        generator: source of the shuffle and the noise.

    Shape:
        x: (n, 2) float32, y: (n,) int64.
    """
    _check_arguments("moons", n, noise, generator)
    n_outer = n // 2
    n_inner = n - n_outer
    t_outer = torch.linspace(0, math.pi, n_outer, dtype=torch.float32)
    t_inner = torch.linspace(0, math.pi, n_inner, dtype=torch.float32)
    outer = torch.stack([torch.cos(t_outer), torch.sin(t_outer)], dim=1)
    inner = torch.stack([1 - torch.cos(t_inner), 0.5 - torch.sin(t_inner)], dim=1)
    x = torch.cat([outer, inner])
    y = torch.cat([torch.zeros(n_outer, dtype=torch.long), torch.ones(n_inner, dtype=torch.long)])
    x, y = _shuffle(x, y, generator)
    x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float32)
    return TensorDataset(x, y)


def spirals(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> TensorDataset:
    """Two interleaved spiral arms, each turning 1.5 times around the origin.

    A point of class k in {0, 1} has radius r = sqrt(u), u ~ U(0, 1), and angle
    theta = 3 pi r + k pi, so x = r (cos theta, sin theta) + N(0, noise^2) noise;
    the arms are 1/3 apart along a ray and the points lie in the unit disk (up to
    the noise). Class 0 has n - n // 2 points, class 1 has n // 2; they are shuffled.

    Args:
        n: number of samples.
        noise: standard deviation of the Gaussian noise.
        generator: source of the radii, the shuffle and the noise.

    Shape:
        x: (n, 2) float32, y: (n,) int64.
    """
    _check_arguments("spirals", n, noise, generator)
    y = torch.cat([torch.zeros(n - n // 2, dtype=torch.long), torch.ones(n // 2, dtype=torch.long)])
    u = torch.rand(n, generator=generator, dtype=torch.float32)
    r = torch.sqrt(u)  # sqrt spreads the points evenly along an arm
    theta = 2 * math.pi * SPIRAL_TURNS * r + math.pi * y
    x = r.unsqueeze(1) * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    x, y = _shuffle(x, y, generator)
    x = x + noise * torch.randn(n, 2, generator=generator, dtype=torch.float32)
    return TensorDataset(x, y)

"""nograd: a deep-learning framework whose every backward pass is written by hand.

The core (``nograd.nn``, ``nograd.optim``, ``nograd.gradcheck``, ``nograd.data``)
needs only torch. ``nograd.train`` (tqdm), ``nograd.save`` and ``nograd.load``
(safetensors) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nograd import data, nn, optim
from nograd.gradcheck import GradcheckResult, gradcheck
from nograd.nn.matmul import get_cpu_matmul, set_cpu_matmul
from nograd.train_step import TrainStep

if TYPE_CHECKING:
    from nograd import train
    from nograd.io import load, save

__all__ = [
    "GradcheckResult",
    "TrainStep",
    "data",
    "get_cpu_matmul",
    "gradcheck",
    "load",
    "nn",
    "optim",
    "save",
    "set_cpu_matmul",
    "train",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in {"save", "load"}:
        return getattr(importlib.import_module("nograd.io"), name)
    if name == "train":
        return importlib.import_module("nograd.train")
    raise AttributeError(f"module 'nograd' has no attribute {name!r}")

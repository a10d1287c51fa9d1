"""nograd: a deep-learning framework whose every backward pass is written by hand.

The core (``nograd.nn``, ``nograd.optim``, ``nograd.gradcheck``, ``nograd.data``)
needs only torch. ``nograd.save`` and ``nograd.load`` need safetensors and are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nograd import data, nn, optim
from nograd.gradcheck import GradcheckResult, gradcheck

if TYPE_CHECKING:
    from nograd.io import load, save

__all__ = ["GradcheckResult", "data", "gradcheck", "load", "nn", "optim", "save"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in {"save", "load"}:
        from nograd import io

        return getattr(io, name)
    raise AttributeError(f"module 'nograd' has no attribute {name!r}")

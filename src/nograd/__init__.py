"""nograd: a deep-learning framework whose every backward pass is written by hand."""

from nograd import nn

__all__ = ["nn"]
__version__ = "0.1.0"

"""nograd: a deep-learning framework whose every backward pass is written by hand."""

from nograd import nn, optim

__all__ = ["nn", "optim"]
__version__ = "0.1.0"

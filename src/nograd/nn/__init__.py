"""Layers, activations, losses and containers, each with a hand-written backward."""

from nograd.nn import init
from nograd.nn.container import Sequential
from nograd.nn.linear import Linear
from nograd.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, Loss, MSELoss
from nograd.nn.module import NO_INPUT_GRAD, Module, Parameter

__all__ = [
    "NO_INPUT_GRAD",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "L1Loss",
    "Linear",
    "Loss",
    "MSELoss",
    "Module",
    "Parameter",
    "Sequential",
    "init",
]

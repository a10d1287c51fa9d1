"""Layers, activations, losses and containers, each with a hand-written backward."""

from nograd.nn import init
from nograd.nn.activations import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from nograd.nn.batch_norm import BatchNorm1d
from nograd.nn.container import Sequential
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.dropout import Dropout
from nograd.nn.layer_norm import LayerNorm
from nograd.nn.linear import Linear
from nograd.nn.losses import BCEWithLogitsLoss, L1Loss, Loss, MSELoss
from nograd.nn.module import NO_INPUT_GRAD, Module
from nograd.nn.parameter import Parameter

__all__ = [
    "ELU",
    "GELU",
    "NO_INPUT_GRAD",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "Dropout",
    "Identity",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "Loss",
    "MSELoss",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "init",
]

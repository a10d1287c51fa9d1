"""Layers, activations, losses and containers, each with a hand-written backward."""

from nograd.nn import init, utils
from nograd.nn.activations import ELU, GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from nograd.nn.batch_norm import BatchNorm1d
from nograd.nn.binary_cross_entropy import BCELoss, BCEWithLogitsLoss
from nograd.nn.container import Sequential
from nograd.nn.cross_entropy import CrossEntropyLoss
from nograd.nn.dropout import Dropout
from nograd.nn.flatten import Flatten, Unflatten
from nograd.nn.huber import HuberLoss, SmoothL1Loss
from nograd.nn.layer_norm import LayerNorm
from nograd.nn.linear import Linear
from nograd.nn.log_softmax import LogSoftmax
from nograd.nn.losses import L1Loss, Loss, MSELoss
from nograd.nn.module import NO_INPUT_GRAD, Module
from nograd.nn.module_containers import ModuleDict, ModuleList
from nograd.nn.nll_loss import NLLLoss
from nograd.nn.parameter import Parameter
from nograd.nn.smooth_activations import SiLU, Softplus

__all__ = [
    "ELU",
    "GELU",
    "NO_INPUT_GRAD",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "HuberLoss",
    "Identity",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "Loss",
    "MSELoss",
    "Module",
    "ModuleDict",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SmoothL1Loss",
    "Softmax",
    "Softplus",
    "Tanh",
    "Unflatten",
    "init",
    "utils",
]

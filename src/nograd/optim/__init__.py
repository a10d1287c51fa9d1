"""Optimizers that update ``Parameter.data`` from ``Parameter.grad``, and lr schedules."""

from nograd.optim import lr_scheduler
from nograd.optim.adadelta import Adadelta
from nograd.optim.adagrad import Adagrad
from nograd.optim.adam import Adam, AdamW
from nograd.optim.adamax import Adamax
from nograd.optim.lbfgs import LBFGS
from nograd.optim.nadam import NAdam
from nograd.optim.optimizer import Optimizer
from nograd.optim.radam import RAdam
from nograd.optim.rmsprop import RMSprop
from nograd.optim.sgd import SGD

__all__ = [
    "LBFGS",
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "lr_scheduler",
]

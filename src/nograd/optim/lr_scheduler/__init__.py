"""Learning-rate schedules that rewrite each param group's ``lr``, as torch.optim.lr_scheduler.

One concept per file:
    base.py        LRScheduler, the base class (step, state_dict)
    step.py        StepLR, MultiStepLR, ExponentialLR, ConstantLR
    linear.py      LinearLR, PolynomialLR
    lambda_lr.py   LambdaLR, MultiplicativeLR (the user's function of the epoch)
    cosine.py      CosineAnnealingLR, CosineAnnealingWarmRestarts
    one_cycle.py   OneCycleLR (cycles the momentum or beta1 too)
    cyclic.py      CyclicLR (between base_lr and max_lr, cycling the momentum like OneCycleLR)
    plateau.py     ReduceLROnPlateau (driven by a metric)
    composite.py   SequentialLR, ChainedScheduler (made of other schedulers)

Class names, arguments, learning rates (to the bit) and state_dicts are PyTorch's, so a
state_dict moves between nograd and torch in both directions. So are PyTorch's warnings
for ``step(epoch)`` (deprecated: it jumps by the closed form) and for a user's call of
``get_lr()``; CosineAnnealingWarmRestarts takes ``step(epoch + i / batches)`` without one.
"""

from nograd.optim.lr_scheduler.base import LRScheduler
from nograd.optim.lr_scheduler.composite import ChainedScheduler, SequentialLR
from nograd.optim.lr_scheduler.cosine import CosineAnnealingLR, CosineAnnealingWarmRestarts
from nograd.optim.lr_scheduler.cyclic import CyclicLR
from nograd.optim.lr_scheduler.lambda_lr import LambdaLR, MultiplicativeLR
from nograd.optim.lr_scheduler.linear import LinearLR, PolynomialLR
from nograd.optim.lr_scheduler.one_cycle import OneCycleLR
from nograd.optim.lr_scheduler.plateau import ReduceLROnPlateau
from nograd.optim.lr_scheduler.step import ConstantLR, ExponentialLR, MultiStepLR, StepLR

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]

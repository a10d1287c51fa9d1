"""Datasets (the reference disk task, xor, moons, spirals), splits, samplers and the DataLoader."""

from nograd.data.collate import default_collate, default_convert
from nograd.data.datasets import TensorDataset, disk, moons, spirals, xor
from nograd.data.loader import DataLoader, Dataset
from nograd.data.samplers import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from nograd.data.split import Subset, random_split

__all__ = [
    "BatchSampler",
    "DataLoader",
    "Dataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "WeightedRandomSampler",
    "default_collate",
    "default_convert",
    "disk",
    "moons",
    "random_split",
    "spirals",
    "xor",
]

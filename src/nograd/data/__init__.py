"""Datasets (the reference disk task, xor, moons, spirals), splits and the DataLoader."""

from nograd.data.datasets import TensorDataset, disk, moons, spirals, xor
from nograd.data.loader import DataLoader, Dataset
from nograd.data.split import Subset, random_split

__all__ = [
    "DataLoader",
    "Dataset",
    "Subset",
    "TensorDataset",
    "disk",
    "moons",
    "random_split",
    "spirals",
    "xor",
]

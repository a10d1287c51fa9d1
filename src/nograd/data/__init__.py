"""Datasets (the reference disk task, xor, moons, spirals) and the DataLoader."""

from nograd.data.datasets import TensorDataset, disk, moons, spirals, xor
from nograd.data.loader import DataLoader, Dataset

__all__ = ["DataLoader", "Dataset", "TensorDataset", "disk", "moons", "spirals", "xor"]

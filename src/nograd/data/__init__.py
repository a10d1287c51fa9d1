"""Datasets (the reference disk task, xor, moons, spirals, streams), splits, samplers and the
DataLoader, with its worker processes."""

from nograd.data.collate import default_collate, default_convert
from nograd.data.concat import ChainDataset, ConcatDataset
from nograd.data.dataset import Dataset
from nograd.data.datasets import TensorDataset, disk, moons, spirals, xor
from nograd.data.iterable import IterableDataset
from nograd.data.loader import DataLoader
from nograd.data.pin_memory import pin_memory
from nograd.data.samplers import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from nograd.data.split import Subset, random_split
from nograd.data.worker_process import WorkerInfo, get_worker_info

__all__ = [
    "BatchSampler",
    "ChainDataset",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "IterableDataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "WeightedRandomSampler",
    "WorkerInfo",
    "default_collate",
    "default_convert",
    "disk",
    "get_worker_info",
    "moons",
    "pin_memory",
    "random_split",
    "spirals",
    "xor",
]

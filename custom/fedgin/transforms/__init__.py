"""Data augmentation transforms."""

from fedgin.transforms.gin import RandGIN, RandGINd, gin_batch

__all__ = ["RandGIN", "RandGINd", "gin_batch"]

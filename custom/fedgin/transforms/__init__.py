"""Data augmentation transforms."""

from fedgin.transforms.gin import RandGIN, RandGINd, gin_batch
from fedgin.transforms.randconv import RandConv, RandConvd, rand_conv_batch

__all__ = ["RandGIN", "RandGINd", "gin_batch"]
__all__ += ["RandConv", "RandConvd", "rand_conv_batch"]

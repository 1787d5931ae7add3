"""The segmentation network: MONAI's U-Net with instance norm (no integer buffers to average)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

DEFAULT_CHANNELS = (16, 32, 64, 128)
DEFAULT_STRIDES = (2, 2, 2)
# Two residual units a level: chosen with 192 x 192 slices on the real development set (docs/results-real-scans.md).
DEFAULT_NUM_RES_UNITS = 2


class SegmentationUNet(UNet):
    """MONAI ``UNet`` for ``in_channels``-channel images (1, or a slice with its neighbours: 2.5D) and
    ``num_classes`` outputs (background included).

    The server's persistor and every site build it from the same arguments, so the job config is
    the one place the architecture is defined.
    """

    def __init__(
        self,
        num_classes: int,
        spatial_dims: int = 2,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        strides: Sequence[int] = DEFAULT_STRIDES,
        num_res_units: int = DEFAULT_NUM_RES_UNITS,
        dropout: float = 0.0,
        init_seed: int | None = 0,
        affine_norm: bool = False,
        in_channels: int = 1,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
        if len(strides) != len(channels) - 1:
            raise ValueError(f"need len(strides) == len(channels) - 1, got {list(channels)} and {list(strides)}")
        # The server builds the initial global model: seed its weights so a seed reproduces a run,
        # without touching the caller's global RNG.
        with torch.random.fork_rng(enabled=init_seed is not None):
            if init_seed is not None:
                torch.manual_seed(init_seed)
            super().__init__(
                spatial_dims=spatial_dims,
                in_channels=in_channels,
                out_channels=num_classes,
                channels=tuple(channels),
                strides=tuple(strides),
                num_res_units=num_res_units,
                # Affine instance norm gives each norm layer a scale and shift: the parameters that
                # domain-specific normalization (FedBN style) keeps at each site.
                norm=("INSTANCE", {"affine": True}) if affine_norm else "INSTANCE",
                dropout=dropout,
            )
        # Each argument under its own name: FLARE's Job API writes a component's arguments back from them.
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.init_seed = init_seed
        self.affine_norm = affine_norm


# Every normalization layer of torch.nn (the lazy and synced kinds are not BatchNorm subclasses).
NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LazyInstanceNorm1d,
    nn.LazyInstanceNorm2d,
    nn.LazyInstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)


def norm_parameter_names(model: torch.nn.Module) -> set[str]:
    """State-dict keys of the model's normalization layers (instance, batch, group, layer norm)."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_LAYERS):
            for key in module.state_dict():
                names.add(f"{module_name}.{key}" if module_name else key)
    return names

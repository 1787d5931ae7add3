"""fedgin: federated cross-modality segmentation with GIN augmentation on NVIDIA FLARE."""

__version__ = "0.1.0"

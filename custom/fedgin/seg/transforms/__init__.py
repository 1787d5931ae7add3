"""Data augmentation transforms."""

from fedgin.seg.transforms.frequency import RandAmplitudeMix, RandAmplitudeMixd, amplitude_mix_batch, amplitude_spectrum
from fedgin.seg.transforms.gin import RandGIN, RandGINd, gin_batch
from fedgin.seg.transforms.ipa import gin_ipa_batch, ipa_blend, ipa_blend_mask, ipa_consistency_loss
from fedgin.seg.transforms.randconv import RandConv, RandConvd, rand_conv_batch

__all__ = ["RandGIN", "RandGINd", "gin_batch"]
__all__ += ["RandConv", "RandConvd", "rand_conv_batch"]
__all__ += ["RandAmplitudeMix", "RandAmplitudeMixd", "amplitude_mix_batch", "amplitude_spectrum"]
__all__ += ["gin_ipa_batch", "ipa_blend", "ipa_blend_mask", "ipa_consistency_loss"]

"""The ML core: data, GIN and other intensity augmentations, the U-Net, losses, training, evaluation.

Knows nothing of FLARE; the executor (:mod:`fedgin.flare`) and the tools (:mod:`fedgin.tools`) use it.
"""

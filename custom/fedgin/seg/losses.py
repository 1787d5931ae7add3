"""Segmentation loss for sites whose labels cover only some of the job's organs (partial labels).

A site that does not label, say, the pancreas marks pancreas voxels as background. Training it with
the plain loss would teach the shared model "pancreas is background" at that site. The marginal
loss (Shi et al., "Marginal loss and exclusion loss for partially supervised multi-organ
segmentation", MedIA 2021, https://arxiv.org/abs/2007.03868) merges the predicted probabilities of
the organs a sample does not label into its background before scoring: predicting pancreas on an
unlabelled-pancreas site's "background" costs nothing, predicting liver there still does.

Merging probabilities by summing is the same as replacing the merged logits by their logsumexp, so
the standard MONAI DiceCELoss scores the reduced logits unchanged.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss

PARTIAL_LABEL_MODES = ("marginal", "background")


class MarginalDiceCELoss(torch.nn.Module):
    """MONAI DiceCELoss over the classes each sample labels; unlabelled classes merge into background.

    Args:
        mode: "marginal" merges the classes a sample does not label into its background;
            "background" ignores the mask and scores every class (the naive baseline: organs a site
            does not label are taught as background there).
        **dice_ce_kwargs: passed to :class:`monai.losses.DiceCELoss` (``to_onehot_y`` and
            ``softmax`` are always True).
    """

    def __init__(self, mode: str = "marginal", **dice_ce_kwargs):
        super().__init__()
        if mode not in PARTIAL_LABEL_MODES:
            raise ValueError(f"partial-label mode must be one of {PARTIAL_LABEL_MODES}, got {mode!r}")
        self.mode = mode
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, **dice_ce_kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of a batch.

        Args:
            logits: (B, C, *spatial) raw network outputs.
            target: (B, 1, *spatial) class indices; classes a sample does not label appear as 0.
            labelled: (B, C) bool, which classes each sample labels (column 0, background, is
                always treated as labelled). None: every class is labelled.
        """
        if labelled is None or self.mode == "background":
            return self.loss(logits, target)
        if labelled.shape != logits.shape[:2]:
            raise ValueError(f"labelled mask shape {tuple(labelled.shape)} != (batch, classes) {logits.shape[:2]}")
        labelled = labelled.to(device=logits.device, dtype=torch.bool).clone()
        labelled[:, 0] = True
        if bool(labelled.all()):
            return self.loss(logits, target)
        # Samples of one batch may come from sites with different label sets (centralized pooling):
        # score each group of samples sharing a label set, weighted by its size.
        patterns, group = torch.unique(labelled, dim=0, return_inverse=True)
        total = logits.new_zeros(())
        for g, pattern in enumerate(patterns):
            idx = (group == g).nonzero(as_tuple=True)[0]
            total = total + self._group_loss(logits[idx], target[idx], pattern) * (len(idx) / logits.shape[0])
        return total

    def _group_loss(self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        kept = labelled.nonzero(as_tuple=True)[0]  # includes 0
        merged = (~labelled).nonzero(as_tuple=True)[0]
        if len(merged) == 0:
            return self.loss(logits, target)
        background = torch.logsumexp(logits[:, torch.cat([kept[:1], merged])], dim=1, keepdim=True)
        reduced = torch.cat([background, logits[:, kept[1:]]], dim=1)
        # class index -> position in the reduced set; unlabelled classes never occur in the target.
        remap = torch.zeros(logits.shape[1], dtype=torch.long, device=logits.device)
        remap[kept] = torch.arange(len(kept), device=logits.device)
        return self.loss(reduced, remap[target.long()])

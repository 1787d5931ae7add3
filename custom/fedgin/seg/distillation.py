"""Conditional distillation: a site keeps what the global model knows about organs it does not label.

With partial labels the marginal loss (fedgin.seg.losses) lets a site predict an organ it does not
label without cost, but nothing holds that prediction in place: local training drifts it away, and
the average then carries less of what the other sites taught. Measured on the real development set
(MRI site with its spleen labels withheld, the global model of round 20): one round of local
training at the MRI site took MRI spleen Dice 0.194 -> 0.104, one at the CT site 0.194 -> 0.217.

ConDistFL (Wang et al., "ConDistFL: Conditional Distillation for Federated Learning from Partially
Annotated Data", MICCAI DeCaF 2023, https://arxiv.org/abs/2308.04070; NVFLARE's
``research/condist-fl``) adds a distillation term from the global model the round started from:
on the voxels that neither the label nor the global model assigns to an organ the site labels,
the local model's distribution over the remaining classes (background and each unlabelled organ,
conditioned on "not a labelled organ") is pulled towards the global model's, by a soft Dice loss
at a softmax temperature (squared in its denominator here, see below). Conditioning on the
remaining classes is a softmax over their logits alone: ``p_g / (1 - sum of the labelled organs'
p)`` equals ``softmax(logits[remaining])``.
"""

from __future__ import annotations

import torch
from monai.losses import MaskedDiceLoss


class ConditionalDistillationLoss(torch.nn.Module):
    """ConDistFL's soft Dice between the local and the global model on the classes a sample does not label.

    Args:
        temperature: softmax temperature of both models' logits (ConDistFL: 2).
    """

    def __init__(self, temperature: float = 2.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"distillation temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        # ConDistFL's settings (background included: it is one of the remaining classes; batch Dice;
        # no numerator smoothing), but with squared terms in the denominator: the plain soft Dice
        # 2*sum(p*t) / (sum(p) + sum(t)) is smallest for a one-hot p, so it would sharpen the local
        # model towards the global model's argmax; 2*sum(p*t) / (sum(p^2) + sum(t^2)) is smallest at
        # p = t, a distillation.
        self.dice = MaskedDiceLoss(
            include_background=True, batch=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5
        )

    def forward(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor
    ) -> torch.Tensor:
        """Distillation loss of a batch; 0 for samples that label every class.

        Args:
            logits: (B, C, *spatial) the local model's outputs.
            teacher_logits: (B, C, *spatial) the global model's outputs on the same input.
            target: (B, 1, *spatial) class indices (unlabelled classes appear as 0).
            labelled: (B, C) bool, which classes each sample labels (column 0 is ignored).
        """
        if teacher_logits.shape != logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} != student logits {tuple(logits.shape)}")
        if labelled.shape != logits.shape[:2]:
            raise ValueError(f"labelled mask shape {tuple(labelled.shape)} != (batch, classes) {logits.shape[:2]}")
        labelled = labelled.to(device=logits.device, dtype=torch.bool).clone()
        labelled[:, 0] = False  # background is always among the remaining classes
        patterns, group = torch.unique(labelled, dim=0, return_inverse=True)
        total = logits.new_zeros((), dtype=torch.float32)
        for g, pattern in enumerate(patterns):
            remaining = (~pattern).nonzero(as_tuple=True)[0]
            if len(remaining) < 2:  # only background remains: every organ is labelled
                continue
            idx = (group == g).nonzero(as_tuple=True)[0]
            loss = self._group_loss(logits[idx], teacher_logits[idx], target[idx], pattern, remaining)
            total = total + loss * (len(idx) / logits.shape[0])
        return total

    def _group_loss(self, logits, teacher_logits, target, pattern, remaining) -> torch.Tensor:
        organs = pattern.nonzero(as_tuple=True)[0]  # the labelled organs (background excluded)
        # Voxels the label or the global model gives to a labelled organ: the supervised loss's.
        teacher_class = teacher_logits.argmax(1, keepdim=True)
        claimed = torch.isin(target.long(), organs) | torch.isin(teacher_class, organs)
        mask = (~claimed).float()
        student = torch.softmax(logits[:, remaining].float() / self.temperature, dim=1)
        teacher = torch.softmax(teacher_logits[:, remaining].float() / self.temperature, dim=1)
        return self.dice(student, teacher, mask=mask)

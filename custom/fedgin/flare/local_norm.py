"""Domain-specific normalization (FedBN style, Li et al., ICLR 2021, https://arxiv.org/abs/2102.07623).

With ``local_norm`` a job's U-Net gets affine instance norm; each site keeps the scale and shift of
its norm layers to itself: they are never sent, never averaged and never overwritten by the global
model. A site's model is therefore the global model with the site's own norm weights, which the
site saves in its run folder (``local_norm.pt``) after every round; on one machine (simulator, POC)
:func:`site_model` puts the two together for evaluation.
"""

from __future__ import annotations

from pathlib import Path

import torch

LOCAL_NORM_FILE = "local_norm.pt"


def site_model(global_model: str | Path, local_norm: str | Path, out: str | Path) -> Path:
    """Write the site's model: the global weights with the site's norm weights in place."""
    state = torch.load(global_model, map_location="cpu", weights_only=True)
    weights = dict(state.get("model", state))
    norms = torch.load(local_norm, map_location="cpu", weights_only=True)
    unknown = sorted(set(norms) - set(weights))
    if unknown:
        raise ValueError(f"{local_norm}: norm weights {unknown[:3]} are not in the global model {global_model}")
    weights.update(norms)
    torch.save({"model": weights}, out)
    return Path(out)

"""evaluate_model scores what a site's held-out volumes carry, organs it never trains on included."""

import numpy as np
import torch
from fedgin.seg.config import TrainConfig
from fedgin.seg.evaluation import evaluate_model
from fedgin.seg.training import Trainer
from helpers import ABDOMEN, write_nifti, write_site


def test_evaluation_scores_the_transferred_organ(tmp_path):
    label = np.zeros((16, 16, 3), np.uint8)
    label[2:8, 2:8] = 1  # liver
    label[10:14, 10:14] = 5  # pancreas, labelled only for scoring
    write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(16, 16, 3)).astype(np.float32))
    write_nifti(tmp_path / "lab.nii.gz", label)
    case = [("img.nii.gz", "lab.nii.gz")]
    site = write_site(
        tmp_path, "MR", {"training": case, "test": case}, {"liver": 1}, eval_labels={"liver": 1, "pancreas": 5}
    )
    config = TrainConfig.from_dict(
        {"organs": ABDOMEN, "spatial_size": [16, 16], "model": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}
    )
    model = tmp_path / "model.pt"
    torch.save({"model": Trainer(config, "cpu").model.state_dict()}, model)
    result = evaluate_model(model, site, config, device="cpu")
    assert list(result["dice"]) == ["liver", "pancreas"]
    assert all(v is not None for v in result["dice"].values())

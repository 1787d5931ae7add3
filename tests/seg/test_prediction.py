"""Segmenting a new scan: the input's grid back, and the same masks evaluation scores."""

import nibabel as nib
import numpy as np
import pytest
import torch
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.labels import MapLabelsd, class_lookup
from fedgin.seg.data.site_data import DataError, TrainSamples, load_site_data
from fedgin.seg.evaluation import evaluate_model
from fedgin.seg.prediction import Segmenter, organ_volumes_ml
from fedgin.seg.site_config import load_site_config
from fedgin.seg.training import Trainer
from helpers import ABDOMEN, TINY_TRAINING, write_nifti
from monai.metrics import DiceMetric

# The two grids (fedgin.seg.data.geometry): slices resized to the model's size, or resampled to 6 mm
# (the fixtures have 3 mm), cropped to the body and segmented with a sliding window.
SCHEMES = {"resize": {}, "spacing": {"pixel_spacing": [6.0, 6.0]}}


@pytest.fixture(scope="module", params=list(SCHEMES))
def trained(tmp_path_factory, request):
    """A tiny model trained a few epochs on both real fixtures (so it predicts organs, not only background)."""
    from helpers import FIXTURES, TOTALSEG_IDS, write_site

    root = tmp_path_factory.mktemp("trained")
    options = {"organs": ABDOMEN, **TINY_TRAINING, **SCHEMES[request.param], "lr": 1e-2, "batch_size": 8}
    config = TrainConfig.from_dict(options)
    trainer = Trainer(config, device="cpu")
    sites, parts = {}, []
    for name, modality, image, label in (
        ("ct", "CT", "example_ct_sm.nii.gz", "example_seg.nii.gz"),
        ("mr", "MR", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz"),
    ):
        case = [(str(FIXTURES / image), str(FIXTURES / label))]
        sites[name] = write_site(root / name, modality, {"training": case, "test": case}, TOTALSEG_IDS)
        data = load_site_data(
            load_site_config(sites[name]), ABDOMEN, config.spatial_size, pixel_spacing=config.pixel_spacing
        )
        parts.append(data.train)
    # Both sites pooled (in the spacing scheme their slices differ in size: padded, windows inside).
    trainer.train_epochs(TrainSamples.concat(parts, config.num_classes), epochs=40)
    model = root / "model.pt"
    torch.save({"model": trainer.model.state_dict()}, model)
    return config, model, sites


@pytest.mark.parametrize("site", ["ct", "mr"])
def test_mask_is_on_the_inputs_grid_and_scores_what_evaluate_reports(trained, site):
    config, model, sites = trained
    site_config = load_site_config(sites[site])
    case = site_config.cases("test")[0]
    segmenter = Segmenter(config, torch.load(model, weights_only=True)["model"], device="cpu")
    mask = segmenter.segment(case["image"], site_config.modality)
    image = nib.load(case["image"])
    assert tuple(mask.shape[1:]) == image.shape
    assert np.allclose(np.asarray(mask.affine), image.affine, atol=1e-4)
    assert nib.aff2axcodes(np.asarray(mask.affine)) == nib.aff2axcodes(image.affine)  # the MR fixture is LPS
    # Dice against the label file, on the file's own grid, equals evaluate's (which works in RAS).
    mapping = MapLabelsd("label", class_lookup(ABDOMEN, site_config.labels))
    label = torch.as_tensor(mapping({"label": np.asarray(nib.load(case["label"]).dataobj)})["label"])
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True, num_classes=len(ABDOMEN) + 1)
    dice = metric(mask.as_tensor()[None].long(), label[None, None])[0].numpy()
    reported = evaluate_model(model, sites[site], config, split="test", device="cpu")
    for organ, value in reported["dice"].items():
        assert dice[ABDOMEN.index(organ)] == pytest.approx(value, abs=1e-6), organ
    assert max(reported["dice"].values()) > 0.1  # the model segments something: the comparison is not 0 == 0
    volumes = organ_volumes_ml(mask, segmenter.label_names)
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000
    assert volumes["liver"] == pytest.approx(float((mask.as_tensor() == 1).sum()) * voxel_ml)


def test_bad_inputs_are_named(trained, tmp_path):
    config, model, _ = trained
    segmenter = Segmenter(config, torch.load(model, weights_only=True)["model"], device="cpu")
    flat = write_nifti(tmp_path / "flat.nii.gz", np.zeros((16, 16), np.float32))
    with pytest.raises(DataError, match="flat.nii.gz.*2D"):
        segmenter.segment(flat, "CT")
    series = write_nifti(tmp_path / "series.nii.gz", np.zeros((16, 16, 4, 3), np.float32))
    with pytest.raises(DataError, match="series.nii.gz.*4D"):
        segmenter.segment(series, "MR")
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    with pytest.raises(DataError, match="notes.nii.gz.*not a readable NIfTI"):
        segmenter.segment(text, "CT")
    with pytest.raises(ValueError, match="unknown modality 'PET'"):
        segmenter.segment(flat, "PET")
    other = TrainConfig.from_dict({"organs": ["heart"], **TINY_TRAINING})
    with pytest.raises(ValueError, match="shape"):
        Segmenter(other, torch.load(model, weights_only=True)["model"], device="cpu")

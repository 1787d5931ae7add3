import numpy as np
import pytest
import torch
from fedgin.seg.data.normalization import CTNormalization, MRNormalization, normalization_for


def test_ct_window_maps_hu_to_unit_range():
    hu = torch.tensor([[-1000.0, -125.0, 75.0, 275.0, 1500.0]])
    out = CTNormalization().transform("image")({"image": hu})["image"]
    np.testing.assert_allclose(np.asarray(out), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)


def test_ct_window_override():
    out = normalization_for("CT", {"window": [0, 100]}).transform("image")({"image": torch.tensor([[50.0]])})
    assert float(out["image"]) == pytest.approx(0.5)


def test_mr_percentiles_clip_outliers_and_scale():
    rng = np.random.default_rng(0)
    vol = torch.as_tensor(rng.gamma(2.0, 100.0, size=(1, 20, 20, 10)).astype(np.float32))
    vol[0, 0, 0, 0] = 1e6  # a hot spot must not squash the rest of the range
    out = MRNormalization().transform("image")({"image": vol})["image"]
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert float(out.median()) > 0.1  # would be ~0 if the outlier set the scale


def test_modality_names_choose_the_scheme():
    assert isinstance(normalization_for("ct"), CTNormalization)
    assert isinstance(normalization_for("MR"), MRNormalization)
    with pytest.raises(ValueError, match="PET"):
        normalization_for("PET")
    with pytest.raises(ValueError, match="unknown MR normalization key"):
        normalization_for("MR", {"window": [0, 1]})
    with pytest.raises(ValueError, match="low < high"):
        CTNormalization(window=(10, -10))

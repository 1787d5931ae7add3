import numpy as np
import pytest
import torch
from fedgin.seg.data.labels import MapLabelsd, class_lookup
from monai.data import MetaTensor


def test_site_ids_become_job_classes_and_other_ids_background():
    organs = ["liver", "spleen", "heart"]
    # BTCV calls the liver 6, CHAOS calls it 1: each site maps its own ids.
    btcv = MapLabelsd("label", class_lookup(organs, {"liver": (6,), "spleen": (1,)}))
    chaos = MapLabelsd("label", class_lookup(organs, {"liver": (1,), "spleen": (4,)}))
    merged = MapLabelsd("label", class_lookup(organs, {"heart": (205, 500)}))
    lab = MetaTensor(torch.tensor([[0, 1, 4, 6, 7, 205, 500, 999]], dtype=torch.float32), affine=torch.eye(4))
    assert btcv({"label": lab})["label"].tolist() == [[0, 2, 0, 1, 0, 0, 0, 0]]
    assert chaos({"label": lab})["label"].tolist() == [[0, 1, 2, 0, 0, 0, 0, 0]]
    out = merged({"label": lab})["label"]
    assert out.tolist() == [[0, 0, 0, 0, 0, 3, 3, 0]]
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8
    np.testing.assert_array_equal(np.asarray(out.affine), np.eye(4))


def test_numpy_label_stays_numpy():
    out = MapLabelsd("label", {6: 1})({"label": np.array([[0, 6, 6]])})["label"]
    assert isinstance(out, np.ndarray) and out.tolist() == [[0, 1, 1]]


def test_one_id_for_two_organs_is_an_error():
    with pytest.raises(ValueError, match="two organs"):
        class_lookup(["liver", "spleen"], {"liver": (1,), "spleen": (1,)})

"""A site whose model configuration differs from the global model reports it, naming the weight."""

import logging

from fedgin.flare.executor import SegmentationExecutor
from fedgin.seg.config import TrainConfig
from helpers import ABDOMEN, TINY_TRAINING
from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.signal import Signal


def test_global_model_with_other_channels_is_reported_with_the_weight_name(fixture_sites, caplog):
    site = SegmentationExecutor(organs=ABDOMEN, **TINY_TRAINING)  # channels (4, 8, 16)
    site.site_name = "site-ct"
    site.setup(fixture_sites["site-ct"], FLContext())
    wider = {**TINY_TRAINING, "model": {**TINY_TRAINING["model"], "channels": [8, 16, 32]}}
    weights = TrainConfig.from_dict({"organs": ABDOMEN, **wider}).build_model().state_dict()
    task = DXO(DataKind.WEIGHTS, {k: v.numpy() for k, v in weights.items()}).to_shareable()
    with caplog.at_level(logging.ERROR):
        result = site.execute("train", task, FLContext(), Signal())
    assert result.get_return_code() == ReturnCode.EXECUTION_EXCEPTION  # reported to the server, not raised
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "site-ct: task train failed: ValueError: received weights: weight 'model.0" in messages
    assert "has shape (8, 1, 3, 3), the model has (4, 1, 3, 3)" in messages

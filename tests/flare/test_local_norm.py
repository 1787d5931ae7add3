"""Domain-specific normalization (FedBN style): a site's norm weights never leave it and are never
overwritten by the global model; everything else is shared as usual."""

import json

import numpy as np
import pytest
import torch
from fedgin.flare.executor import SegmentationExecutor
from fedgin.flare.local_norm import site_model
from fedgin.seg.config import TrainConfig
from fedgin.seg.training import Trainer
from helpers import ABDOMEN, TINY_TRAINING
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_context import FLContext
from nvflare.apis.signal import Signal
from nvflare.app_common.app_constant import AppConstants

LOCAL = {**TINY_TRAINING, "batch_size": 8, "local_norm": True}


def _config():
    return TrainConfig.from_dict({"organs": ABDOMEN, **LOCAL})


def test_local_norm_needs_affine_norm_and_the_server_builds_the_same_model():
    config = _config()
    assert config.model.affine_norm
    assert config.model_args()["affine_norm"] is True
    assert TrainConfig.from_dict({"organs": ABDOMEN, **TINY_TRAINING}).model_args()["affine_norm"] is False
    trainer = Trainer(config, device="cpu")
    assert trainer.local_keys and all(".adn.N." in k for k in trainer.local_keys)
    assert set(trainer.get_shared_weights()) == set(trainer.get_weights()) - trainer.local_keys


def test_received_global_weights_keep_the_sites_own_norm():
    trainer = Trainer(_config(), device="cpu")
    own = trainer.get_weights()
    incoming = {k: v + 1.0 for k, v in own.items()}
    trainer.set_weights(incoming)
    after = trainer.get_weights()
    for k in own:
        expected = own[k] if k in trainer.local_keys else incoming[k]
        np.testing.assert_array_equal(after[k], expected)
    # The global model may also come without them (the server never sees a site's norms).
    trainer.set_weights({k: v for k, v in incoming.items() if k not in trainer.local_keys})


def test_norm_weights_never_leave_the_site(fixture_sites):
    ex = SegmentationExecutor(organs=ABDOMEN, **LOCAL)
    ex.site_name = "site-ct"
    config = fixture_sites["site-ct"]
    shared = config.parent / "shared.json"  # a site that lets jobs collect its local model (submit_model)
    shared.write_text(json.dumps({**json.loads(config.read_text()), "share_local_model": True}))
    ex.setup(shared, FLContext())
    weights = {k: v.numpy() for k, v in _config().build_model().state_dict().items()}
    task = DXO(DataKind.WEIGHTS, weights).to_shareable()
    task.set_header(AppConstants.CURRENT_ROUND, 0)
    task.set_header(AppConstants.NUM_ROUNDS, 1)
    update = from_shareable(ex.execute("train", task, FLContext(), Signal()))
    assert update.data_kind == DataKind.WEIGHT_DIFF
    assert set(update.data) == set(weights) - ex.trainer.local_keys
    submitted = from_shareable(
        ex.execute("submit_model", DXO(DataKind.WEIGHTS, {}).to_shareable(), FLContext(), Signal())
    )
    assert not set(submitted.data) & ex.trainer.local_keys
    # It trained its norm weights: they differ from the initial ones.
    local = ex.trainer.get_weights()
    assert any(not np.array_equal(local[k], weights[k]) for k in ex.trainer.local_keys)


def test_site_model_is_the_global_model_with_the_sites_norm(tmp_path):
    trainer = Trainer(_config(), device="cpu")
    weights = trainer.get_weights()
    torch.save({"model": {k: torch.as_tensor(v) for k, v in weights.items()}}, tmp_path / "global.pt")
    norms = {k: torch.as_tensor(weights[k]) + 2 for k in trainer.local_keys}
    torch.save(norms, tmp_path / "local_norm.pt")
    out = torch.load(site_model(tmp_path / "global.pt", tmp_path / "local_norm.pt", tmp_path / "site.pt"))["model"]
    for k in weights:
        expected = norms[k] if k in norms else torch.as_tensor(weights[k])
        torch.testing.assert_close(out[k], expected)


def test_aggregator_expects_no_site_local_norm_weights(tmp_path):
    """The job's RobustAggregator is told which keys sites keep; an update carrying them is refused."""
    import json

    from fedgin.flare.aggregation import RobustAggregator
    from fedgin.tools.federation.jobs import build_job
    from helpers import REPO
    from nvflare.apis.dxo import MetaKey
    from nvflare.apis.event_type import EventType
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.app_common.abstract.model import make_model_learnable

    job = build_job(REPO / "jobs/fedavg_abdomen", tmp_path / "job", executor_overrides=LOCAL)
    server = json.loads((job / "app/config/config_fed_server.json").read_text())
    args = next(c for c in server["components"] if c["id"] == "aggregator")["args"]
    trainer = Trainer(_config(), device="cpu")
    assert set(args["site_local_keys"]) == trainer.local_keys

    agg = RobustAggregator(site_local_keys=args["site_local_keys"])
    agg.handle_event(EventType.START_RUN, FLContext())
    ctx = FLContext()
    ctx.set_prop(AppConstants.CURRENT_ROUND, 0, private=True, sticky=False)
    ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(trainer.get_weights(), {}), private=True, sticky=False)

    def update(site, data):
        s = DXO(DataKind.WEIGHT_DIFF, data, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: 3}).to_shareable()
        s.set_peer_props({ReservedKey.IDENTITY_NAME: site})
        s.add_cookie(AppConstants.CONTRIBUTION_ROUND, 0)
        return s

    assert agg.accept(update("site-ct", trainer.get_shared_weights()), ctx)
    assert not agg.accept(update("site-mri", trainer.get_weights()), ctx)  # it sent its norm weights


def _trained_local_norm_trainer() -> Trainer:
    """A local_norm trainer whose norm scales/shifts moved away from their 1/0 start."""
    trainer = Trainer(_config(), device="cpu")
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if name in trainer.local_keys:
                p.add_(torch.linspace(-0.5, 0.5, p.numel()).reshape(p.shape))
    return trainer


def test_a_saved_site_model_loads_whole_with_its_norm_weights(tmp_path):
    """evaluate / predict load a saved model with every key, the site-kept norms included: the loaded
    model's output is the trained model's."""
    from fedgin.seg.evaluation import load_weights
    from fedgin.seg.prediction import Segmenter

    trained = _trained_local_norm_trainer()
    path = tmp_path / "site_model.pt"
    torch.save({"model": trained.model.state_dict()}, path)
    x = torch.randn(2, 1, *_config().spatial_size, generator=torch.Generator().manual_seed(0))
    expected = trained.model.eval()(x)
    loaded = Segmenter(_config(), load_weights(path), device="cpu", source=str(path)).trainer
    torch.testing.assert_close(loaded.model.eval()(x), expected)
    # Receiving the same weights as a global model keeps the receiver's own (fresh) norms instead.
    received = Trainer(_config(), device="cpu")
    received.set_weights(load_weights(path))
    assert not torch.allclose(received.model.eval()(x), expected)


def test_a_saved_model_with_missing_or_extra_keys_is_refused_naming_the_file(tmp_path):
    from fedgin.seg.evaluation import load_weights
    from fedgin.seg.prediction import Segmenter

    state = _trained_local_norm_trainer().model.state_dict()
    norm_key = sorted(k for k in state if ".adn.N." in k)[0]
    for name, broken in (
        ("missing.pt", {k: v for k, v in state.items() if k != norm_key}),
        ("extra.pt", {**state, "head.extra": torch.zeros(1)}),
    ):
        path = tmp_path / name
        torch.save({"model": broken}, path)
        with pytest.raises(ValueError, match=rf"{name}.*(missing \['{norm_key}'|unexpected \['head.extra')"):
            Segmenter(_config(), load_weights(path), device="cpu", source=str(path))

"""Encrypted aggregation, one round by hand through FLARE's own HE components (no FLARE system): two
sites encrypt their updates, the server adds the ciphertexts, the sites decrypt the new global model."""

import json

import numpy as np
import pytest
import tenseal as ts
import torch
from fedgin.flare.executor import shaped_like
from fedgin.seg.config import TrainConfig
from fedgin.tools.federation.he import (
    CLIENT_CONTEXT,
    SERVER_CONTEXT,
    HEError,
    component_context,
    decrypt_model,
    encrypted_layers,
    new_contexts,
)
from fedgin.tools.federation.jobs import HE_CROSS_SITE_PATH, HE_DECRYPTOR_PATH, HE_ENCRYPTOR_PATH, build_job
from fedgin.tools.job_folder import JobError
from helpers import ABDOMEN, REPO, TINY_TRAINING
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.utils.decomposers import flare_decomposers
from nvflare.app_common.abstract.model import ModelLearnableKey, make_model_learnable
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_opt.he.homomorphic_encrypt import serialize_nested_dict
from nvflare.app_opt.he.intime_accumulate_model_aggregator import HEInTimeAccumulateWeightedAggregator
from nvflare.app_opt.he.model_decryptor import HEModelDecryptor
from nvflare.app_opt.he.model_encryptor import HEModelEncryptor
from nvflare.app_opt.he.model_shareable_generator import HEModelShareableGenerator
from nvflare.fuel.sec.security_content_service import SecurityContentManager, SecurityContentService
from nvflare.fuel.utils import fobs

# CKKS with FLARE's default parameters (scale 2^40) is exact to about 1e-7 on values of this size.
CKKS_ATOL = 1e-5


@pytest.fixture
def startup(tmp_path, monkeypatch):
    """A startup folder with both contexts, from which FLARE's components load them (unsigned: not secure mode)."""
    server, client = new_contexts()
    folder = tmp_path / "startup"
    folder.mkdir()
    (folder / SERVER_CONTEXT).write_bytes(server)
    (folder / CLIENT_CONTEXT).write_bytes(client)
    monkeypatch.setattr(SecurityContentService, "security_content_manager", SecurityContentManager(str(folder)))
    return folder


def _ctx(identity: str, current_round: int = 0) -> FLContext:
    return component_context(identity, current_round)


def _started(component, ctx):
    component.handle_event(EventType.START_RUN, ctx)
    return component


def _wire(shareable):
    """What the other side receives: the message serialized by FLARE's FOBS and read back."""
    # FLARE's own decomposers first, as a FLARE process has them: FOBS would otherwise register a generic one
    # for Shareable for the rest of the process, which drops its items (later FLARE API sessions then fail).
    flare_decomposers.register()
    return fobs.loads(fobs.dumps(shareable))


def test_an_encrypted_round_equals_plain_weighted_fedavg(startup, tmp_path):
    model = TrainConfig.from_dict({"organs": ABDOMEN, **TINY_TRAINING}).build_model()
    state = model.state_dict()
    rng = np.random.default_rng(0)
    global_weights = {k: v.numpy().copy() for k, v in state.items()}
    diffs = {site: {k: rng.normal(0, 0.01, v.shape).astype(np.float32) for k, v in state.items()} for site in "ab"}
    steps = {"a": 7, "b": 3}

    # Sites: weigh by steps, encrypt every layer; what reaches the server holds no plain numbers.
    server_ctx = _ctx("server")
    aggregator = _started(HEInTimeAccumulateWeightedAggregator(weigh_by_local_iter=False), server_ctx)
    for site in "ab":
        encryptor = _started(HEModelEncryptor(weigh_by_local_iter=True), _ctx(f"site-{site}"))
        result = DXO(DataKind.WEIGHT_DIFF, dict(diffs[site]), meta={MetaKey.NUM_STEPS_CURRENT_ROUND: steps[site]})
        sent = _wire(encryptor.process(result.to_shareable(), _ctx("server")))
        assert all(isinstance(v, ts.CKKSVector) for v in from_shareable(sent).data.values())
        assert not from_shareable(sent).data["model.0.conv.unit0.conv.weight"].context().has_secret_key()
        sent.set_peer_props({ReservedKey.IDENTITY_NAME: f"site-{site}"})
        sent.add_cookie(AppConstants.CONTRIBUTION_ROUND, 0)
        assert aggregator.accept(sent, server_ctx)

    # Server: the weighted mean and the new global model, both still ciphertexts it cannot decrypt.
    generator = _started(HEModelShareableGenerator(), server_ctx)
    server_ctx.set_prop(AppConstants.GLOBAL_MODEL, make_model_learnable(dict(global_weights), {}), private=True)
    new_global = generator.shareable_to_learnable(aggregator.aggregate(server_ctx), server_ctx)
    layer = new_global[ModelLearnableKey.WEIGHTS]["model.0.conv.unit0.conv.weight"]
    with pytest.raises(ValueError, match="secret_key"):
        layer.decrypt()
    task = _wire(generator.learnable_to_shareable(new_global, server_ctx))

    # Sites: decrypt and reshape (the executor's shaped_like) to step-weighted FedAvg.
    decryptor = _started(HEModelDecryptor(), _ctx("site-a"))
    received = shaped_like(from_shareable(decryptor.process(task, _ctx("server"))).data, state)
    total = sum(steps.values())
    for k in state:
        expected = global_weights[k] + sum(steps[s] * diffs[s][k] for s in "ab") / total
        assert received[k].shape == expected.shape and received[k].dtype == np.float32
        np.testing.assert_allclose(received[k], expected, atol=CKKS_ATOL, rtol=0)

    # The server's saved model (as its persistor writes it) holds ciphertexts; a site's key decrypts it.
    saved = tmp_path / "FL_global_model.pt"
    torch.save({"model": serialize_nested_dict(dict(new_global[ModelLearnableKey.WEIGHTS]))}, saved)
    assert encrypted_layers(saved) == sorted(state)
    plain = decrypt_model(
        saved, startup / CLIENT_CONTEXT, tmp_path / "plain.pt", {k: v.shape for k, v in state.items()}
    )
    for k, v in torch.load(plain, weights_only=True)["model"].items():
        np.testing.assert_allclose(v.numpy(), received[k], atol=CKKS_ATOL, rtol=0)
    with pytest.raises(HEError, match="no secret key"):
        decrypt_model(saved, startup / SERVER_CONTEXT, tmp_path / "x.pt", {})


def test_shaped_like_leaves_shaped_and_mismatched_layers_alone():
    state = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    out = shaped_like({"w": [1.0] * 6, "b": [2.0, 2.0, 2.0]}, state)
    assert out["w"].shape == (2, 3) and out["w"].dtype == np.float32 and out["b"].shape == (3,)
    wrong = shaped_like({"w": [1.0] * 5, "b": np.ones((3, 1))}, state)
    assert len(wrong["w"]) == 5 and wrong["b"].shape == (3, 1)  # left for Trainer.set_weights to reject


def test_build_job_with_he_swaps_the_server_components_and_adds_the_site_filters(tmp_path):
    job = build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "a", he=True, privacy={"kind": "percentile"})
    job = build_job(job, tmp_path / "b", he=True)  # building twice changes nothing
    server = json.loads((job / "app/config/config_fed_server.json").read_text())
    client = json.loads((job / "app/config/config_fed_client.json").read_text())
    components = {c["id"]: c for c in server["components"]}
    assert components["aggregator"]["path"].endswith("HEInTimeAccumulateWeightedAggregator")
    assert components["aggregator"]["args"] == {"expected_data_kind": "WEIGHT_DIFF", "weigh_by_local_iter": False}
    assert components["shareable_generator"]["path"].endswith("HEModelShareableGenerator")
    assert components["persistor"]["args"]["filter_id"] == "serialize_filter"
    assert components["serialize_filter"]["path"] == "fedgin.flare.he.HEModelSerializeFilter"
    assert HE_CROSS_SITE_PATH in [w["path"] for w in server["workflows"]]
    data = {t: g["filters"] for g in client["task_data_filters"] for t in g["tasks"]}
    results = {t: g["filters"] for g in client["task_result_filters"] for t in g["tasks"]}
    assert all(len(g["tasks"]) == 1 for g in client["task_data_filters"] + client["task_result_filters"])
    assert [f["path"] for f in data["train"]] == [f["path"] for f in data["validate"]] == [HE_DECRYPTOR_PATH]
    # Encrypted last, after the privacy filter; steps weigh the train update, not a submitted model.
    assert [f["path"].rsplit(".", 1)[-1] for f in results["train"]] == ["PercentilePrivacy", "HEModelEncryptor"]
    assert results["train"][-1]["args"] == {"weigh_by_local_iter": True}
    assert results["submit_model"] == [{"path": HE_ENCRYPTOR_PATH, "args": {"weigh_by_local_iter": False}}]
    with pytest.raises(JobError, match="cannot read ciphertexts"):
        build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "c", he=True, aggregator={"max_norm_ratio": 5})
    with pytest.raises(JobError, match="he and local_norm"):
        build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "d", he=True, executor_overrides={"local_norm": True})

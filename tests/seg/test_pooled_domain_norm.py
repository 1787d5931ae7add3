"""Domain-specific normalization in pooled training (DSBN): one set of norm weights per site."""

import json

import pytest
import torch
from fedgin.seg.config import TrainConfig
from fedgin.seg.data.site_data import TrainSamples
from fedgin.seg.pooled_domain_norm import DomainNorms, train_domain_epochs
from fedgin.seg.training import Trainer
from fedgin.tools.data.phantoms import generate_phantom_dataset
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.study.local_training import train_local
from helpers import ABDOMEN, REPO, TINY_TRAINING

LOCAL = {**TINY_TRAINING, "batch_size": 4, "local_norm": True}


def _trainer(**extra):
    return Trainer(TrainConfig.from_dict({"organs": ABDOMEN, **LOCAL, **extra}), device="cpu")


def _samples(n, seed, with_organs=True):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand((n, 1, 32, 32), generator=g)
    labels = torch.randint(0, len(ABDOMEN) + 1 if with_organs else 1, (n, 1, 32, 32), generator=g).to(torch.uint8)
    return TrainSamples(images=images, labels=labels)


def test_each_domain_trains_only_its_own_norm_weights():
    trainer = _trainer()
    norms = DomainNorms(trainer, ["site-ct", "site-mri"])
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    # Only the CT site's samples: the MRI site's norm weights must stay as they started.
    train_domain_epochs(trainer, {"site-ct": _samples(8, 0)}, norms, epochs=2)
    ct, mri = norms.state_dict("site-ct"), norms.state_dict("site-mri")
    for k in trainer.local_keys:
        torch.testing.assert_close(mri[k], start[k])
    assert any(not torch.equal(ct[k], start[k]) for k in trainer.local_keys)
    # The shared weights are one set: identical in both domains' models, and trained.
    shared = set(start) - trainer.local_keys
    assert all(torch.equal(ct[k], mri[k]) for k in shared)
    assert any(not torch.equal(ct[k], start[k]) for k in shared)


def test_each_domain_keeps_its_own_optimizer_state():
    trainer = _trainer()
    norms = DomainNorms(trainer, ["a", "b"])
    train_domain_epochs(trainer, {"a": _samples(4, 0)}, norms)
    norms.activate("b")
    norm_params = [p for n, p in trainer.model.named_parameters() if n in trainer.local_keys]
    shared_params = [p for n, p in trainer.model.named_parameters() if n not in trainer.local_keys]
    # Domain b never trained: its norm weights have no AdamW moments; the shared weights do.
    assert all(p not in trainer.optimizer.state for p in norm_params)
    assert all(p in trainer.optimizer.state for p in shared_params)
    norms.activate("a")
    assert all(int(trainer.optimizer.state[p]["step"]) == 1 for p in norm_params)


def test_batches_are_single_domain_and_the_order_is_seeded():
    def run():
        trainer = _trainer(seed=5)
        norms = DomainNorms(trainer, ["a", "b"])
        seen = []
        real = norms.activate
        norms.activate = lambda d: (seen.append(d), real(d))[1]
        stats = train_domain_epochs(trainer, {"a": _samples(8, 1), "b": _samples(4, 2)}, norms)
        return list(seen), stats, norms.state_dict("b")

    seen, stats, weights = run()
    assert stats["steps"] == 3 and sorted(seen) == ["a", "a", "b"]  # 8 / 4 + 4 / 4 batches
    seen2, stats2, weights2 = run()
    assert seen2 == seen and stats2 == stats
    assert all(torch.equal(weights[k], weights2[k]) for k in weights)


def test_bad_use_is_named():
    with pytest.raises(ValueError, match="local_norm: true"):
        DomainNorms(Trainer(TrainConfig.from_dict({"organs": ABDOMEN, **TINY_TRAINING}), device="cpu"), ["a"])
    with pytest.raises(ValueError, match="distinct"):
        DomainNorms(_trainer(), ["a", "a"])
    with pytest.raises(KeyError, match="unknown domain 'c'"):
        DomainNorms(_trainer(), ["a", "b"]).activate("c")


def test_centralized_training_saves_one_model_per_site_and_scores_each_with_its_own(tmp_path):
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=3, size=0.5, max_cases=1)
    job = build_job(REPO / "jobs/fedavg_abdomen", tmp_path / "job", executor_overrides=LOCAL)
    results = train_local(job, list(sites.values()), tmp_path / "out", epochs=1, evaluate_split="test", echo=None)
    assert set(results) == set(sites)
    models = {name: torch.load(tmp_path / "out" / f"model_{name}.pt", weights_only=True)["model"] for name in sites}
    assert not (tmp_path / "out" / "model.pt").exists()
    keys = Trainer(TrainConfig.from_dict({"organs": ABDOMEN, **LOCAL}), device="cpu").local_keys
    ct, mri = models["site-ct"], models["site-mri"]
    assert any(not torch.equal(ct[k], mri[k]) for k in keys)
    assert all(torch.equal(ct[k], mri[k]) for k in set(ct) - keys)
    assert json.loads((tmp_path / "out" / "train_stats.json").read_text())["steps"] > 0


def test_sites_without_names_pool_but_need_names_for_their_own_norms(tmp_path):
    sites = generate_phantom_dataset("abdomen", tmp_path / "data", seed=3, size=0.5, max_cases=1)
    unnamed = []
    for path in sites.values():  # both configs are called site_config.json: same stem, no site_name
        raw = json.loads(path.read_text())
        raw.pop("site_name", None)
        path.write_text(json.dumps(raw))
        unnamed.append(path)
    assert {p.name for p in unnamed} == {"site_config.json"}
    pooled = build_job(REPO / "jobs/fedavg_abdomen", tmp_path / "pooled", executor_overrides=TINY_TRAINING)
    train_local(pooled, unnamed, tmp_path / "out_pooled", epochs=1, evaluate_split=None, echo=None)
    assert (tmp_path / "out_pooled" / "model.pt").is_file()
    job = build_job(REPO / "jobs/fedavg_abdomen", tmp_path / "job", executor_overrides=LOCAL)
    with pytest.raises(ValueError, match="both named 'site_config'; set site_name"):
        train_local(job, unnamed, tmp_path / "out", epochs=1, evaluate_split=None, echo=None)

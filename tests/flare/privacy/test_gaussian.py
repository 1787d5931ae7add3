"""GaussianPrivacy as FLARE runs it: a DXO in a Shareable through ``process`` with an FLContext."""

import json
import math

import numpy as np
import pytest
from fedgin.flare.figure_release import release
from fedgin.flare.privacy.accounting import composed_epsilon
from fedgin.flare.privacy.gaussian import GaussianPrivacy, PrivacyBudgetExceeded, clip_and_noise
from fedgin.flare.privacy.ledger import budget_spent
from fedgin.flare.update_norm import update_norm
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLContextKey, ReservedKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import make_reply
from nvflare.apis.workspace import Workspace
from nvflare.app_common.app_constant import AppConstants

JOB = "job-1"


class _Engine:
    """The engine calls the filter makes: the site's workspace (for its run folder), and firing the
    analytics events of its privacy spend (recorded here)."""

    def __init__(self, root, site):
        for folder in ("startup", "local"):  # FLARE checks that a site workspace has them
            (root / folder).mkdir(parents=True, exist_ok=True)
        self.workspace = Workspace(root_dir=str(root), site_name=site)
        self.events = []

    def get_workspace(self):
        return self.workspace

    def fire_event(self, event_type, fl_ctx):
        self.events.append((event_type, from_shareable(fl_ctx.get_prop(FLContextKey.EVENT_DATA))))


def ledger_of(root, site="site-ct"):
    """The site's Gaussian ledger in its workspace's local/ (no site config there: keyed by the site)."""
    return root / site / "local/fedgin_privacy" / f"{site}-gaussian.json"


def site_context(tmp_path, site="site-ct", job=JOB) -> FLContext:
    fl_ctx = FLContext()
    fl_ctx.set_prop(ReservedKey.ENGINE, _Engine(tmp_path / site, site), private=True, sticky=False)
    fl_ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=False)
    fl_ctx.set_prop(ReservedKey.RUN_NUM, job, private=False, sticky=False)
    return fl_ctx


def diff_shareable(arrays, current_round=0, kind=DataKind.WEIGHT_DIFF):
    dxo = DXO(data_kind=kind, data={k: v.copy() for k, v in arrays.items()}, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: 5})
    shareable = dxo.to_shareable()
    shareable.set_header(AppConstants.CURRENT_ROUND, current_round)
    return shareable


def update(norm=100.0, seed=0):
    """Two float32 arrays whose joint L2 norm is ``norm``."""
    rng = np.random.default_rng(seed)
    arrays = {"conv.weight": rng.normal(size=(8, 4, 3, 3)), "conv.bias": rng.normal(size=8)}
    scale = norm / update_norm(arrays)
    return {k: (v * scale).astype(np.float32) for k, v in arrays.items()}


def flat(arrays):
    return np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k in sorted(arrays)])


def run_filter(flt, arrays, fl_ctx, current_round=0):
    return from_shareable(flt.process(diff_shareable(arrays, current_round), fl_ctx))


def test_clipping_bounds_the_whole_update_to_clip_norm(tmp_path):
    arrays = update(norm=100.0)
    out = run_filter(GaussianPrivacy(noise_multiplier=0.0, clip_norm=2.5), arrays, site_context(tmp_path))
    assert update_norm(out.data) == pytest.approx(2.5, rel=1e-5)
    # All arrays scaled by one factor: the direction of the update is kept.
    assert np.allclose(flat(out.data), flat(arrays) * 2.5 / 100.0, atol=1e-6)
    assert {k: v.dtype for k, v in out.data.items()} == {k: v.dtype for k, v in arrays.items()}
    # A small update is not scaled up.
    small = update(norm=0.5)
    out = run_filter(GaussianPrivacy(noise_multiplier=0.0, clip_norm=2.5), small, site_context(tmp_path, "site-b"))
    assert np.allclose(flat(out.data), flat(small))


def test_noise_std_matches_sigma_times_clip_norm():
    # Zero update: what comes out is the noise alone; 200k coordinates pin its std within ~0.5 %.
    zeros = {"w": np.zeros((400, 500), np.float32)}
    sigma, clip = 0.8, 1.5
    out, norm = clip_and_noise(zeros, clip, sigma, np.random.default_rng(1))
    noise = out["w"].astype(np.float64).ravel()
    assert norm == 0.0
    assert abs(noise.mean()) < 5 * sigma * clip / math.sqrt(noise.size)
    # Relative std error of a sample std is 1/sqrt(2n) ~ 0.16 %: 1 % fails a wrong scale (e.g. sigma alone).
    assert noise.std() == pytest.approx(sigma * clip, rel=0.01)


def test_same_seed_release_and_site_give_the_same_output_and_others_differ(tmp_path):
    arrays = update(norm=10.0)
    flt = GaussianPrivacy(noise_multiplier=1.0, clip_norm=1.0, seed=7)
    first = run_filter(flt, arrays, site_context(tmp_path / "a"), current_round=3)
    again = run_filter(GaussianPrivacy(1.0, 1.0, seed=7), arrays, site_context(tmp_path / "b"), current_round=3)
    assert np.array_equal(flat(first.data), flat(again.data))

    # The noise follows the site's release count, not the job's round: a second job's round 4 (the
    # site's second release) never repeats the first job's.
    later_job = site_context(tmp_path / "a", job="job-2")
    next_release = run_filter(GaussianPrivacy(1.0, 1.0, seed=7), arrays, later_job, current_round=3)
    other_site = run_filter(GaussianPrivacy(1.0, 1.0, seed=7), arrays, site_context(tmp_path / "d", "site-mri"), 3)
    other_seed = run_filter(GaussianPrivacy(1.0, 1.0, seed=8), arrays, site_context(tmp_path / "e"), current_round=3)
    for other in (next_release, other_site, other_seed):
        # Independent noise: the difference has std sqrt(2) * sigma * C, nowhere near 0.
        assert np.std(flat(first.data) - flat(other.data)) > 1.0


def test_the_budget_is_the_sites_over_jobs_and_sigmas(tmp_path):
    """Two jobs in the site's workspace: the second starts from the first's spend (sigma 1 then 2,
    composed by one RDP accountant), and a budget set in either refuses what the lifetime exceeds."""
    first = site_context(tmp_path, job="job-1")
    run_filter(GaussianPrivacy(1.0, 1.0), update(), first, 0)
    second = site_context(tmp_path, job="job-2")
    out = run_filter(GaussianPrivacy(2.0, 1.0), update(), second, 0)
    assert out.get_meta_prop("privacy_rounds") == 2
    assert out.get_meta_prop("epsilon") == pytest.approx(composed_epsilon([1.0, 2.0]))
    assert composed_epsilon([2.0]) < out.get_meta_prop("epsilon")  # not the new job's alone
    ledger = json.loads(ledger_of(tmp_path).read_text())
    assert [(r["job"], r["round"], r["noise_multiplier"]) for r in ledger["rounds"]] == [
        ("job-1", 1, 1.0),
        ("job-2", 1, 2.0),
    ]
    # A third job whose budget allows exactly one more release: it goes out, then the ledger says
    # spent, and a further update is refused at the filter.
    third = site_context(tmp_path, job="job-3")
    spent_before = composed_epsilon([1.0, 2.0, 1.0])
    flt = GaussianPrivacy(1.0, 1.0, max_epsilon=spent_before + 0.01)
    run_filter(flt, update(), third, 0)
    assert "privacy budget spent" in budget_spent(ledger_of(tmp_path)) and "in 3 job(s)" in budget_spent(
        ledger_of(tmp_path)
    )
    with pytest.raises(PrivacyBudgetExceeded, match="ledger .*site-ct-gaussian.json"):
        flt.process_dxo(DXO(DataKind.WEIGHT_DIFF, update()), diff_shareable(update(), 1), third)


def test_each_dataset_of_a_site_has_its_own_ledger(tmp_path):
    from fedgin.flare.privacy.ledger import ledger_file

    local = tmp_path / "local"
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b"):
        (data / f"{name}.nii.gz").write_bytes(b"")
    site = {"modality": "CT", "data_root": str(data), "datalist": "list.json", "labels": {"liver": 1}}
    (local / "fedgin_sites").mkdir(parents=True)
    (local / "fedgin_sites/site-ct.json").write_text(json.dumps(site))
    cases = {"training": [{"image": "a.nii.gz", "label": "a.nii.gz"}]}
    (data / "list.json").write_text(json.dumps(cases))
    one = ledger_file(local, "site-ct", "gaussian")
    assert one == ledger_file(local, "site-ct", "gaussian") and one.name.startswith("site-ct-")
    cases["training"].append({"image": "b.nii.gz", "label": "b.nii.gz"})
    (data / "list.json").write_text(json.dumps(cases))
    assert ledger_file(local, "site-ct", "gaussian") != one  # other patients: another ledger
    assert ledger_file(local, "site-ct", "dp_sgd") != ledger_file(local, "site-ct", "gaussian")


def test_without_a_seed_the_noise_seed_is_a_secret_of_the_site(tmp_path):
    """The job's seed is known to the server, which could regenerate seeded noise: by default the seed
    comes from the operating system and stays in the site's own record."""
    arrays = update(norm=10.0)
    outputs, seeds = [], []
    for name in ("a", "b"):
        ctx = site_context(tmp_path / name)
        outputs.append(flat(run_filter(GaussianPrivacy(1.0, 1.0), arrays, ctx, current_round=3).data))
        ledger = ledger_of(tmp_path / name)
        seeds.append(json.loads(ledger.read_text())["noise_seed"])
    assert seeds[0] != seeds[1] and np.std(outputs[0] - outputs[1]) > 1.0


def test_weights_are_refused():
    with pytest.raises(ValueError, match="WEIGHT_DIFF only"):
        GaussianPrivacy(noise_multiplier=1.0, clip_norm=1.0, data_kinds=[DataKind.WEIGHTS])
    with pytest.raises(ValueError, match="WEIGHT_DIFF only"):
        GaussianPrivacy(noise_multiplier=1.0, clip_norm=1.0, data_kinds=[DataKind.WEIGHT_DIFF, DataKind.WEIGHTS])


def test_full_weights_pass_through_unfiltered(tmp_path):
    # With the default data_kinds a WEIGHTS result (submit_model) is not this filter's business.
    arrays = update(norm=100.0)
    shareable = diff_shareable(arrays, kind=DataKind.WEIGHTS)
    out = from_shareable(GaussianPrivacy(1.0, 1.0).process(shareable, site_context(tmp_path)))
    assert np.array_equal(flat(out.data), flat(arrays))


def test_integer_arrays_are_refused():
    arrays = {"w": np.ones(3, np.float32), "num_batches_tracked": np.array(5, np.int64)}
    with pytest.raises(TypeError, match="num_batches_tracked"):
        clip_and_noise(arrays, 1.0, 1.0, np.random.default_rng(0))


def test_meta_log_and_ledger_per_round(tmp_path):
    fl_ctx = site_context(tmp_path)
    flt = GaussianPrivacy(noise_multiplier=1.0, clip_norm=1.0, delta=1e-6)
    logged = []
    flt.log_info = lambda ctx, msg, *a, **k: logged.append(msg)
    epsilons = []
    for r in range(3):
        shareable = flt.process(diff_shareable(update(norm=5.0), r), fl_ctx)
        assert len(fl_ctx.get_engine().events) == 2 * r  # nothing leaves before the filters passed
        fl_ctx.set_prop(FLContextKey.TASK_RESULT, shareable, private=True, sticky=False)
        release(flt, fl_ctx)  # what the executor does at AFTER_TASK_RESULT_FILTER
        out = from_shareable(shareable)
        assert out.get_meta_prop("privacy_rounds") == r + 1 and out.get_meta_prop("delta") == 1e-6
        assert out.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND) == 5  # other meta kept
        epsilons.append(out.get_meta_prop("epsilon"))
    assert epsilons == sorted(epsilons) and len(set(epsilons)) == 3
    assert logged[1] == f"[fedgin] privacy: round 2 sigma 1 clip 1 epsilon {epsilons[1]:.4g} delta 1e-06"
    ledger = json.loads(ledger_of(tmp_path).read_text())
    assert [r["epsilon"] for r in ledger["rounds"]] == epsilons
    assert [r["round"] for r in ledger["rounds"]] == [1, 2, 3]
    assert ledger["rounds"][0]["update_norm"] == pytest.approx(5.0, rel=1e-5)
    # The spend is also streamed as analytics events (step = round), one scalar each.
    streamed = [(e, dxo.data) for e, dxo in fl_ctx.get_engine().events]
    assert [e for e, _ in streamed] == ["analytix_log_stats"] * 6
    epsilon_events = [d for _, d in streamed if d["track_key"] == "privacy/epsilon"]
    assert [d["track_value"] for d in epsilon_events] == pytest.approx(epsilons)


def test_sigma_zero_reports_no_guarantee(tmp_path):
    out = run_filter(GaussianPrivacy(noise_multiplier=0.0, clip_norm=1.0), update(), site_context(tmp_path))
    assert out.get_meta_prop("epsilon") == math.inf
    ledger = json.loads(ledger_of(tmp_path).read_text())
    assert ledger["rounds"][0]["epsilon"] is None


def test_budget_stop(tmp_path):
    # sigma 1, delta 1e-5: epsilon 4.73 after 1 round, 7.08 after 2, 9.01 after 3.
    fl_ctx = site_context(tmp_path)
    flt = GaussianPrivacy(noise_multiplier=1.0, clip_norm=1.0, max_epsilon=8.0)
    ledger = ledger_of(tmp_path)
    run_filter(flt, update(), fl_ctx, 0)
    assert budget_spent(ledger) is None
    run_filter(flt, update(), fl_ctx, 1)
    reason = budget_spent(ledger)
    assert reason and "privacy budget spent" in reason and "max_epsilon 8.0" in reason
    # Should a third update reach the filter anyway, it does not leave the site.
    with pytest.raises(PrivacyBudgetExceeded):
        flt.process_dxo(DXO(DataKind.WEIGHT_DIFF, update()), diff_shareable(update(), 2), fl_ctx)
    assert len(json.loads(ledger.read_text())["rounds"]) == 2
    with pytest.raises(ValueError, match="below one round"):
        GaussianPrivacy(noise_multiplier=1.0, clip_norm=1.0, max_epsilon=1.0)


def test_failed_results_are_not_touched(tmp_path):
    reply = make_reply(ReturnCode.EARLY_TERMINATION)
    assert GaussianPrivacy(1.0, 1.0).process(reply, site_context(tmp_path)) is reply
    assert not ledger_of(tmp_path).exists()


def test_executor_stops_training_once_the_budget_is_spent(tmp_path):
    from fedgin.flare.executor import SegmentationExecutor
    from fedgin.flare.privacy.ledger import write_ledger
    from nvflare.apis.signal import Signal

    fl_ctx = site_context(tmp_path)
    write_ledger(
        ledger_of(tmp_path),
        {"budget_spent": True, "max_epsilon": 8.0, "delta": 1e-5, "rounds": [{"privacy_rounds": 2, "epsilon": 7.08}]},
    )
    executor = SegmentationExecutor(organs=["liver"])  # no data: it must stop before it would train
    logged = []
    executor.log_info = lambda ctx, msg, *a, **k: logged.append(msg)
    task = DXO(DataKind.WEIGHTS, {}).to_shareable()
    task.set_header(AppConstants.CURRENT_ROUND, 2)
    reply = executor.execute("train", task, fl_ctx, Signal())
    assert reply.get_return_code() == ReturnCode.EARLY_TERMINATION
    assert "round 3: privacy budget spent: epsilon 7.08 after 2 round(s)" in logged[0]
    fl_ctx.set_prop(FLContextKey.TASK_RESULT, reply, private=True, sticky=False)
    executor.handle_event(EventType.AFTER_TASK_RESULT_FILTER, fl_ctx)  # the result filters passed
    # ... and the server learns why: one figure, the epsilon spent (fedgin.flare.metrics.BUDGET_SPENT).
    sent = [dxo.data for _, dxo in fl_ctx.get_engine().events]
    assert [(d["track_key"], d["track_value"]) for d in sent] == [("privacy/budget_spent", 7.08)]


def test_secure_noise_has_the_stated_std_and_ignores_the_seed(tmp_path):
    zeros = {"w": np.zeros((400, 500), np.float32)}
    outs = []
    for name in ("a", "b"):
        flt = GaussianPrivacy(noise_multiplier=0.8, clip_norm=1.5, seed=7, secure=True)
        outs.append(flat(run_filter(flt, zeros, site_context(tmp_path / name)).data))
    assert outs[0].std() == pytest.approx(0.8 * 1.5, rel=0.01)
    assert np.std(outs[0] - outs[1]) > 1.0  # same seed, same site, same release: still fresh noise
    assert json.loads(ledger_of(tmp_path / "a").read_text())["secure_noise"] is True

"""The Executor's task contract, called directly the way FLARE calls it."""

import json

import numpy as np
import pytest
from fedgin.flare.executor import SegmentationExecutor
from fedgin.flare.site_files import find_site_config
from fedgin.flare.step_balance import TARGET_STEPS_HEADER
from fedgin.seg.config import TrainConfig
from fedgin.seg.site_config import SiteConfigError
from helpers import ABDOMEN, TINY_TRAINING
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.signal import Signal
from nvflare.app_common.app_constant import AppConstants

TINY = {**TINY_TRAINING, "batch_size": 8, "augmentation": "gin"}


def _global_weights() -> dict:
    model = TrainConfig.from_dict({"organs": ABDOMEN, **TINY}).build_model()
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _task(weights, current_round=0, num_rounds=2):
    s = DXO(DataKind.WEIGHTS, weights).to_shareable()
    s.set_header(AppConstants.CURRENT_ROUND, current_round)
    s.set_header(AppConstants.NUM_ROUNDS, num_rounds)
    return s


@pytest.fixture
def executor(fixture_sites):
    ex = SegmentationExecutor(organs=ABDOMEN, **TINY)
    ex.site_name = "site-ct"
    ex.setup(fixture_sites["site-ct"], FLContext())
    return ex


def test_train_returns_a_weight_diff_and_submit_model_the_local_weights_only_if_the_site_shares_it(
    executor, fixture_sites
):
    ctx, signal = FLContext(), Signal()
    config = fixture_sites["site-ct"]
    shared = config.parent / "shared.json"  # beside it: the same relative data paths
    shared.write_text(json.dumps({**json.loads(config.read_text()), "share_local_model": True}))
    executor.setup(shared, FLContext())
    before = executor.execute("submit_model", DXO(DataKind.WEIGHTS, {}).to_shareable(), ctx, signal)
    assert before.get_return_code() == ReturnCode.EMPTY_RESULT

    weights = _global_weights()
    result = executor.execute("train", _task(weights), ctx, signal)
    assert result.get_return_code(ReturnCode.OK) == ReturnCode.OK
    dxo = from_shareable(result)
    assert dxo.data_kind == DataKind.WEIGHT_DIFF
    assert set(dxo.data) == set(weights)
    assert all(dxo.data[k].shape == weights[k].shape for k in weights)
    assert any(np.abs(dxo.data[k]).max() > 0 for k in weights)  # it really trained
    steps = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND)
    assert steps == int(np.ceil(len(executor.data.train) / 8))
    initial = dxo.get_meta_prop(MetaKey.INITIAL_METRICS)
    assert 0.0 <= initial["val_mean_dice"] <= 1.0 and "val_dice_liver" in initial

    after = from_shareable(executor.execute("submit_model", DXO(DataKind.WEIGHTS, {}).to_shareable(), ctx, signal))
    assert after.data_kind == DataKind.WEIGHTS
    for k in weights:  # the local model is the global one plus the diff
        np.testing.assert_allclose(after.data[k], weights[k] + dxo.data[k], atol=1e-6)


def test_a_site_that_does_not_share_its_local_model_answers_submit_model_with_nothing(executor):
    ctx, signal = FLContext(), Signal()
    assert not executor.site.share_local_model  # the default
    assert (
        executor.execute("train", _task(_global_weights()), ctx, signal).get_return_code(ReturnCode.OK) == ReturnCode.OK
    )
    reply = executor.execute("submit_model", DXO(DataKind.WEIGHTS, {}).to_shareable(), ctx, signal)
    assert reply.get_return_code() == ReturnCode.EMPTY_RESULT


def test_train_runs_at_least_the_steps_the_server_asks_for(executor):
    ctx, signal = FLContext(), Signal()
    epoch = int(np.ceil(len(executor.data.train) / 8))
    task = _task(_global_weights())
    task.set_header(TARGET_STEPS_HEADER, epoch + 3)  # the busiest site's steps (fedgin.flare.step_balance)
    result = from_shareable(executor.execute("train", task, ctx, signal))
    assert result.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND) == epoch + 3
    # A smaller target than one epoch leaves the epoch whole; with matching off the header is ignored.
    task.set_header(TARGET_STEPS_HEADER, 1)
    assert (
        from_shareable(executor.execute("train", task, ctx, signal)).get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND)
        == epoch
    )
    executor.config.match_site_steps = False
    task.set_header(TARGET_STEPS_HEADER, epoch + 3)
    assert (
        from_shareable(executor.execute("train", task, ctx, signal)).get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND)
        == epoch
    )


def test_validate_returns_metrics_and_keeps_the_local_model(executor):
    ctx, signal = FLContext(), Signal()
    executor.execute("train", _task(_global_weights()), ctx, signal)
    local = executor.trainer.get_weights()
    result = executor.execute("validate", _task(_global_weights()), ctx, signal)
    dxo = from_shareable(result)
    assert dxo.data_kind == DataKind.METRICS
    assert set(dxo.data) == {"val_mean_dice"} | {f"val_dice_{o}" for o in ABDOMEN}
    assert all(0.0 <= v <= 1.0 for v in dxo.data.values())
    for k, v in executor.trainer.get_weights().items():
        np.testing.assert_array_equal(v, local[k])


def test_abort_signal_stops_training(executor):
    signal = Signal()
    signal.trigger("stop")
    result = executor.execute("train", _task(_global_weights()), FLContext(), signal)
    assert result.get_return_code() == ReturnCode.TASK_ABORTED


def test_abort_between_training_steps(executor):
    """An abort that arrives during local training stops it at the next step."""
    signal, steps = Signal(), []
    original = executor.trainer.optimizer.step

    def step_then_abort(*args, **kwargs):
        steps.append(1)
        signal.trigger("stop")
        return original(*args, **kwargs)

    executor.trainer.optimizer.step = step_then_abort
    result = executor.execute("train", _task(_global_weights()), FLContext(), signal)
    assert result.get_return_code() == ReturnCode.TASK_ABORTED
    assert len(steps) == 1 < len(executor.data.train) // 8


def test_mismatched_global_model_is_reported_not_raised(executor):
    weights = _global_weights()
    weights.pop(next(iter(weights)))
    result = executor.execute("train", _task(weights), FLContext(), Signal())
    assert result.get_return_code() == ReturnCode.EXECUTION_EXCEPTION


def test_site_config_is_found_in_the_sites_local_folder(tmp_path):
    (tmp_path / "fedgin_sites").mkdir()
    (tmp_path / "fedgin_site.json").write_text("{}")
    assert find_site_config(tmp_path, "site-a") == tmp_path / "fedgin_site.json"
    (tmp_path / "fedgin_sites" / "site-a.json").write_text("{}")
    assert find_site_config(tmp_path, "site-a") == tmp_path / "fedgin_sites" / "site-a.json"
    with pytest.raises(SiteConfigError, match="no site config found"):
        find_site_config(tmp_path / "fedgin_sites", "site-b")


def test_heart_job_trains_on_heart_phantoms(tmp_path):
    from fedgin.tools.data.phantoms import generate_phantom_dataset
    from fedgin.tools.job_folder import job_training_config
    from helpers import REPO

    sites = generate_phantom_dataset("heart", tmp_path, seed=1, size=0.4, max_cases=1)
    organs = job_training_config(REPO / "jobs/fedgin_heart").organs
    assert organs == ["heart"]
    ex = SegmentationExecutor(organs=organs, **TINY)
    ex.site_name = "site-mri"
    ex.setup(sites["site-mri"], FLContext())  # MM-WHS-like id 500 maps to class 1
    assert int(ex.data.train.labels.max()) == 1
    weights = {
        k: v.numpy() for k, v in TrainConfig.from_dict({"organs": organs, **TINY}).build_model().state_dict().items()
    }
    dxo = from_shareable(ex.execute("train", _task(weights), FLContext(), Signal()))
    assert dxo.data_kind == DataKind.WEIGHT_DIFF
    assert set(dxo.get_meta_prop(MetaKey.INITIAL_METRICS)) == {"val_mean_dice", "val_dice_heart"}


def test_the_jobs_grid_and_context_options_reach_the_sites_data_and_model(fixture_sites):
    options = {**TINY, "pixel_spacing": [5.0, 5.0], "context_slices": 1}
    ex = SegmentationExecutor(organs=ABDOMEN, **options)
    ex.site_name = "site-mri"
    ex.setup(fixture_sites["site-mri"], FLContext())
    assert ex.data.train.images.shape[1] == 3 and ex.data.train.extents is not None
    assert all(v.grid is not None for v in ex.data.validation)
    model = TrainConfig.from_dict({"organs": ABDOMEN, **options}).build_model()
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    ctx, signal = FLContext(), Signal()
    dxo = from_shareable(ex.execute("train", _task(weights), ctx, signal))
    assert dxo.data_kind == DataKind.WEIGHT_DIFF and dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND) > 0
    metrics = from_shareable(ex.execute("validate", _task(weights), ctx, signal)).data
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0

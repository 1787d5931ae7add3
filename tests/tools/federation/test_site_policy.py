"""A participant's own rules in its kit's local/ folder, written from FLARE's provisioned defaults.
(FLARE enforcing them on a running federation: test_provisioned_federation.py.)"""

import json
import shutil

import pytest
from fedgin.tools.cli import main
from fedgin.tools.federation.jobs import build_job
from fedgin.tools.federation.provisioning import DEFAULT_PROJECT, provision
from fedgin.tools.federation.site_policy import (
    SitePolicyError,
    all_rights,
    allow_installed_fedgin,
    keep_server_storage,
    log_tls_failures,
    refuse_byoc,
    require_privacy_scope,
)
from fedgin.tools.job_folder import FAULTY_EXECUTOR_PATH, JobError
from helpers import REPO
from nvflare.apis.workspace import Workspace
from nvflare.app_common.widgets.component_path_authorizer import ComponentPathAuthorizer, UnsafeComponentError
from nvflare.fuel.sec.authz import AuthzContext, Person
from nvflare.security.security import COMMAND_CATEGORIES, FLAuthorizer


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    return provision(tmp_path_factory.mktemp("kits"), DEFAULT_PROJECT)


def _json(path):
    return json.loads(path.read_text())


def test_refuse_byoc_takes_that_right_from_every_role_and_changes_no_other_answer(kits, tmp_path):
    kit = tmp_path / "site"
    (kit / "local").mkdir(parents=True)
    default = kits / "site-ct-a/local/authorization.json.default"
    (kit / "local/authorization.json.default").write_text(default.read_text())
    before, after = _json(default), _json(refuse_byoc(kit))
    assert set(after["permissions"]) == set(before["permissions"])
    # FLARE's own authorizer gives the same answer for every right and role, except byoc: now "no".
    old, new = FLAuthorizer("hospital_a", before), FLAuthorizer("hospital_a", after)
    for role in before["permissions"]:
        for org in ("hospital_a", "hospital_b"):
            user = Person("someone@x.org", org, role)
            for right in set(all_rights()) | set(COMMAND_CATEGORIES):
                ctx = AuthzContext(right=right, user=user, submitter=user)
                if right == "byoc":
                    assert not new.authorize(ctx)[0], role
                else:
                    assert new.authorize(ctx)[0] == old.authorize(ctx)[0], (role, org, right)


def _component_paths(node) -> set[str]:
    """Every ``path`` a job config names: components, executors, filters, workflows, nested args."""
    if isinstance(node, dict):
        own = {node["path"]} if isinstance(node.get("path"), str) else set()
        return own.union(*(_component_paths(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_component_paths(v) for v in node))
    return set()


def _refused(kit, side: str) -> list[str]:
    """The classes of fedgin's job (its ``side`` config) that FLARE's own authorizer refuses at ``kit``."""
    workspace = Workspace(root_dir=str(kit), site_name=kit.name)
    refused = []
    for path in sorted(_component_paths(_json(REPO / f"jobs/fedgin_abdomen/app/config/config_fed_{side}.json"))):
        try:
            ComponentPathAuthorizer().authorize_component_config({"path": path, "args": {}}, workspace=workspace)
        except UnsafeComponentError:
            refused.append(path)
    return refused


def test_allowing_installed_fedgin_lets_flare_build_every_class_of_our_jobs_and_no_more(kits, tmp_path):
    site, server = tmp_path / "site-ct-c", tmp_path / "server"
    shutil.copytree(kits / "site-ct-c", site)
    shutil.copytree(kits / "server", server)
    # FLARE's built-in list refuses our classes (and, at the server, its own PTFileModelPersistor).
    assert "fedgin.flare.executor.SegmentationExecutor" in _refused(site, "client")
    assert "nvflare.app_opt.pt.file_model_persistor.PTFileModelPersistor" in _refused(server, "server")
    default = _json(site / "local/resources.json.default")["class_allow_list"]
    assert _json(allow_installed_fedgin(site))["class_allow_list"] == default + ["fedgin.flare.", "fedgin.seg."]
    allow_installed_fedgin(site)  # twice: nothing added twice
    assert _json(site / "local/resources.json")["class_allow_list"] == default + ["fedgin.flare.", "fedgin.seg."]
    allow_installed_fedgin(server)
    assert _refused(site, "client") == [] and _refused(server, "server") == []
    # Not a blanket allow: other code stays refused.
    workspace = Workspace(root_dir=str(site), site_name="site-ct-c")
    with pytest.raises(UnsafeComponentError):
        ComponentPathAuthorizer().authorize_component_config(
            {"path": "fedgin.tools.testing.faulty.FaultyExecutor"}, workspace=workspace
        )


def test_privacy_scope_at_a_site_and_names_only_at_the_server(kits):
    policy = _json(REPO / "poc/privacy.json")
    assert _json(require_privacy_scope(kits / "site-mri-b", REPO / "poc/privacy.json")) == policy
    server = _json(require_privacy_scope(kits / "server", REPO / "poc/privacy.json"))
    assert server["scopes"] == [{"name": "fedgin", "properties": {}}] and server["default_scope"] == "fedgin"


def test_server_storage_moves_the_job_store_out_of_tmp(kits, tmp_path):
    resources = _json(keep_server_storage(kits / "server", tmp_path / "store"))
    (job_manager,) = [c for c in resources["components"] if c["id"] == "job_manager"]
    assert job_manager["args"]["uri_root"] == str(tmp_path / "store/jobs-storage")
    storage = resources["snapshot_persistor"]["args"]["storage"]["args"]
    assert storage["root_dir"] == str(tmp_path / "store/snapshot-storage")
    with pytest.raises(SitePolicyError, match="not the server's kit"):
        keep_server_storage(kits / "site-ct-a", tmp_path / "store")


def test_bad_input_names_the_file(kits, tmp_path):
    broken = tmp_path / "privacy.json"
    broken.write_text('{"scopes": [')
    with pytest.raises(SitePolicyError, match="privacy.json: cannot read"):
        require_privacy_scope(kits / "site-ct-a", broken)
    broken.write_text(json.dumps({"scopes": [{"name": "a"}], "default_scope": "b"}))
    with pytest.raises(SitePolicyError, match="'default_scope' must name one of its scopes"):
        require_privacy_scope(kits / "site-ct-a", broken)
    with pytest.raises(SitePolicyError, match="not a startup kit"):
        refuse_byoc(tmp_path)
    kit = tmp_path / "kit"
    (kit / "local").mkdir(parents=True)
    (kit / "local/authorization.json.default").write_text("{not json")
    with pytest.raises(SitePolicyError, match=r"authorization.json.default is not valid JSON"):
        refuse_byoc(kit)


def test_cli_writes_what_it_is_asked_and_refuses_nothing_to_do(kits, capsys):
    assert main(["site-policy", str(kits / "site-ct-a"), "--refuse-byoc", "--allow-installed-fedgin"]) == 0
    out = capsys.readouterr().out
    assert "refuse_byoc: wrote" in out and "allow_installed_fedgin: wrote" in out
    assert _json(kits / "site-ct-a/local/authorization.json")["permissions"]["lead"]["byoc"] == "none"
    assert main(["site-policy", str(kits / "site-ct-a")]) == 1
    assert "nothing to do" in capsys.readouterr().err


def test_a_job_for_installed_fedgin_carries_no_code(tmp_path):
    job = build_job(REPO / "jobs/fedgin_abdomen", tmp_path / "job", installed_code=True)
    assert (job / "app/config/config_fed_client.json").is_file() and not (job / "app/custom").exists()
    with pytest.raises(JobError, match="only travel with a job"):
        build_job(
            REPO / "jobs/fedgin_abdomen",
            tmp_path / "doubles",
            executor_path=FAULTY_EXECUTOR_PATH,
            installed_code=True,
        )


def test_tls_failures_are_kept_from_asyncios_own_logger(kits):
    config = _json(log_tls_failures(kits / "server"))
    default = _json(kits / "server/local/log_config.json.default")
    assert config["loggers"] == {**default["loggers"], "asyncio": {"level": "DEBUG"}}
    assert config["handlers"] == default["handlers"]  # the same files, log.txt included

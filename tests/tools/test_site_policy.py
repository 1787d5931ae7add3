"""A participant's own rules in its kit's local/ folder, written from FLARE's provisioned defaults.
(FLARE enforcing them on a running federation: test_provisioned_federation.py.)"""

import json

import pytest
from fedgin.tools.cli import main
from fedgin.tools.jobs import FAULTY_EXECUTOR_PATH, JobError, build_job
from fedgin.tools.provisioning import DEFAULT_PROJECT, provision
from fedgin.tools.site_policy import (
    RIGHTS,
    SitePolicyError,
    allow_installed_fedgin,
    keep_server_storage,
    log_tls_failures,
    refuse_byoc,
    require_privacy_scope,
)
from helpers import REPO


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    return provision(tmp_path_factory.mktemp("kits"), DEFAULT_PROJECT)


def _json(path):
    return json.loads(path.read_text())


def test_refuse_byoc_takes_the_right_from_every_role_and_keeps_the_others(kits, tmp_path):
    kit = tmp_path / "site"
    (kit / "local").mkdir(parents=True)
    default = kits / "site-ct-a/local/authorization.json.default"
    (kit / "local/authorization.json.default").write_text(default.read_text())
    permissions = _json(refuse_byoc(kit))["permissions"]
    before = _json(default)["permissions"]
    assert set(permissions) == set(before) and all(rights["byoc"] == "none" for rights in permissions.values())
    assert permissions["project_admin"] == {**dict.fromkeys(RIGHTS, "any"), "byoc": "none"}  # was "any"
    assert permissions["lead"] == {**before["lead"], "byoc": "none"}
    assert permissions["member"] == {**before["member"], "byoc": "none"}


def test_allowing_installed_fedgin_adds_its_classes_and_the_servers_persistor(kits):
    site = _json(allow_installed_fedgin(kits / "site-ct-c"))["class_allow_list"]
    default = _json(kits / "site-ct-c/local/resources.json.default")["class_allow_list"]
    assert site == default + ["fedgin.flare.", "fedgin.seg."]
    assert allow_installed_fedgin(kits / "site-ct-c")  # twice: nothing added twice
    assert _json(kits / "site-ct-c/local/resources.json")["class_allow_list"] == site
    server = _json(allow_installed_fedgin(kits / "server"))["class_allow_list"]
    assert "nvflare.app_opt.pt.file_model_persistor.PTFileModelPersistor" in server and "fedgin.flare." in server
    # Every class our jobs name is then allowed, at the site and the server.
    paths = {
        c["path"]
        for side in ("client", "server")
        for c in _json(REPO / f"jobs/fedgin_abdomen/app/config/config_fed_{side}.json").get("components", [])
    }
    assert all(any(p == a or (a.endswith(".") and p.startswith(a)) for a in server) for p in paths), paths


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

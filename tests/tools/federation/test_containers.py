"""A site as a container: kits provisioned with FLARE's DockerBuilder, made to run fedgin's image.

No container engine runs here (the machine has the docker client, no daemon, no compose): these
tests check what provisioning writes and the Dockerfile's wiring; the install the Dockerfile runs is
tested in a fresh venv by the POC budget test (``test_poc.py``)."""

from __future__ import annotations

import fnmatch
import json
import re

import numpy as np
import pytest
import yaml
from fedgin.flare.privacy.ledger import LEDGER_DIR
from fedgin.flare.site_files import SITE_CONFIG_NAME
from fedgin.tools.federation.containers import CONTAINER_DATA, data_variable
from fedgin.tools.federation.provisioning import DEFAULT_PROJECT, install_site_config, provision
from helpers import REPO, write_nifti, write_site

SITES = ["site-ct-a", "site-ct-c", "site-mri-b"]


@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    return provision(tmp_path_factory.mktemp("kits"), DEFAULT_PROJECT, docker_image="fedgin-site:test")


def test_every_participant_runs_fedgins_image_and_flares_generic_recipe_is_gone(kits):
    compose = yaml.safe_load((kits / "compose.yaml").read_text())
    assert sorted(compose["services"]) == sorted(["server", *SITES])
    for name, service in compose["services"].items():
        assert service["image"] == "fedgin-site:test" and "build" not in service, name
        assert service["container_name"] == name
    assert compose["services"]["server"]["ports"] == ["8102:8102"]  # FLARE lists its one port twice
    assert not (kits / "nvflare_compose").exists()
    assert "IMAGE_NAME" not in (kits / ".env").read_text()


def test_a_site_mounts_its_data_and_local_read_only_and_keeps_its_privacy_ledger_writable(kits):
    compose = yaml.safe_load((kits / "compose.yaml").read_text())
    env = (kits / ".env").read_text()
    for site in SITES:
        volumes = compose["services"][site]["volumes"]
        var = data_variable(site)
        assert volumes == [
            f"./{site}:/workspace",
            f"./{site}/local:/workspace/local:ro",
            f"./{site}/local/{LEDGER_DIR}:/workspace/local/{LEDGER_DIR}",
            f"${{{var}:?set {var} to this site's data folder}}:{CONTAINER_DATA}:ro",
        ]
        assert re.search(rf"^{var}=$", env, re.M)
        assert (kits / site / "local" / LEDGER_DIR).is_dir()  # the mount point must exist in read-only local/
        own = yaml.safe_load((kits / site / "compose.yaml").read_text())
        assert list(own["services"]) == [site]
        assert own["services"][site]["volumes"][:3] == [
            ".:/workspace",
            "./local:/workspace/local:ro",
            f"./local/{LEDGER_DIR}:/workspace/local/{LEDGER_DIR}",
        ]
        assert own["services"][site]["volumes"][3].startswith("${FEDGIN_DATA:?")
        assert f"uid={site}" in own["services"][site]["command"]
    server = compose["services"]["server"]
    assert not any(CONTAINER_DATA in v for v in server["volumes"])  # the server never sees a site's data
    assert data_variable("site-ct-a") == "FEDGIN_DATA_SITE_CT_A"


def test_gpus_are_asked_for_only_when_wanted(kits, tmp_path):
    assert "deploy" not in yaml.safe_load((kits / "compose.yaml").read_text())["services"]["site-ct-a"]
    gpu_kits = provision(tmp_path / "kits", DEFAULT_PROJECT, docker_image="fedgin-site:cuda", docker_gpus=True)
    service = yaml.safe_load((gpu_kits / "site-mri-b" / "compose.yaml").read_text())["services"]["site-mri-b"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and service["image"] == "fedgin-site:cuda"


def _site(tmp_path, absolute: bool = False):
    data = tmp_path / "hospital_data"
    img = write_nifti(data / "img.nii.gz", np.zeros((8, 8, 2), np.float32))
    write_nifti(data / "lab.nii.gz", np.zeros((8, 8, 2), np.uint8))
    case = (str(img), str(data / "lab.nii.gz")) if absolute else ("img.nii.gz", "lab.nii.gz")
    return data, write_site(data, "CT", {"training": [case]}, {"liver": 1})


def test_a_container_site_config_points_at_data_and_the_kits_env_names_the_host_folder(kits, tmp_path):
    data, config = _site(tmp_path)
    target = install_site_config(kits / "site-ct-a", config, container=True)
    assert target == kits / "site-ct-a" / "local" / SITE_CONFIG_NAME
    installed = json.loads(target.read_text())
    assert installed["data_root"] == CONTAINER_DATA and installed["datalist"] == "datalist.json"
    assert re.search(
        rf"^FEDGIN_DATA={re.escape(str(data.resolve()))}$", (kits / "site-ct-a" / ".env").read_text(), re.M
    )
    plain = json.loads(install_site_config(kits / "site-ct-c", config).read_text())
    assert plain["data_root"] == str(data.resolve())  # without --container: this host's paths


def test_a_datalist_with_host_paths_cannot_run_in_a_container(kits, tmp_path):
    _, config = _site(tmp_path, absolute=True)
    with pytest.raises(ValueError, match=r"datalist\.json: training\[0\] image is an absolute path"):
        install_site_config(kits / "site-mri-b", config, container=True)


def test_a_kit_without_docker_has_no_env_to_name_its_data(tmp_path):
    plain_kits = provision(tmp_path / "kits", DEFAULT_PROJECT)
    assert not (plain_kits / "compose.yaml").exists()
    _, config = _site(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"site-ct-a/\.env: not a container kit"):
        install_site_config(plain_kits / "site-ct-a", config, container=True)


def test_the_dockerfile_runs_the_tested_site_install_with_only_what_dockerignore_lets_in():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "RUN bash poc/site_install.sh /opt/fedgin" in dockerfile
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile, re.M)
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}" in dockerfile
    patterns = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    for line in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in line.split():
            assert (REPO / source).exists(), source
            allowed = [p for p in patterns if p.startswith("!") and fnmatch.fnmatch(source, p[1:].rstrip("/"))]
            assert allowed, f"{source} is copied into the image but .dockerignore leaves it out"

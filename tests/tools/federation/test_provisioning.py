"""Startup kits from poc/project.yml (the federation running from them: test_provisioned_federation.py)."""

import json

import pytest
import tenseal as ts
from fedgin.tools.federation.he import CLIENT_CONTEXT, SERVER_CONTEXT, read_context
from fedgin.tools.federation.poc import PocError
from fedgin.tools.federation.provisioning import DEFAULT_PROJECT, provision
from helpers import REPO


def test_kits_are_never_written_into_the_repo():
    with pytest.raises(PocError, match="inside the repository"):
        provision(REPO / "kits")


def test_provisioning_with_he_gives_every_site_the_same_signed_secret_key_and_the_server_none(tmp_path):
    kits = provision(tmp_path / "kits", DEFAULT_PROJECT, he=True)
    sites = ("site-ct-a", "site-mri-b", "site-ct-c")
    for kit in ("server", *sites):
        name = SERVER_CONTEXT if kit == "server" else CLIENT_CONTEXT
        assert name in json.loads((kits / kit / "startup/signature.json").read_text())  # FLARE checks it
    assert not list((kits / "admin@fedgin.org").rglob("*.tenseal"))
    server = read_context(kits / "server/startup" / SERVER_CONTEXT)
    assert not server.has_secret_key()
    vector = ts.ckks_vector(read_context(kits / "site-ct-a/startup" / CLIENT_CONTEXT), [0.25, -1.5])
    for site in sites:  # one key for all sites: any site decrypts what another encrypted
        decrypted = vector.decrypt(read_context(kits / site / "startup" / CLIENT_CONTEXT).secret_key())
        assert decrypted == pytest.approx([0.25, -1.5], abs=1e-6)


def test_site_kits_keep_their_logs_and_ask_for_no_gpu(tmp_path):
    kits = provision(tmp_path / "kits", DEFAULT_PROJECT)
    names = {p.name for p in kits.iterdir() if p.is_dir()}
    assert {"server", "site-ct-a", "site-mri-b", "site-ct-c", "admin@fedgin.org", "member@hospital-a.org"} <= names
    for site in ("site-ct-a", "site-mri-b", "site-ct-c"):
        assert (kits / site / "startup/client.key").is_file()
        # Site logs are not streamed to the server.
        resources = json.loads((kits / site / "local/resources.json.default").read_text())
        assert resources["allow_log_streaming"] is False
        # The job's resource_spec is checked by the site's GPU resource manager (provisioning's
        # default; no GPU on this machine): the jobs ask for none, so a CPU-only site runs them.
        (manager,) = [c for c in resources["components"] if c["id"] == "resource_manager"]
        assert manager["path"].endswith("GPUResourceManager") and manager["args"]["num_of_gpus"] == 0

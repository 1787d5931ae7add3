"""Reading FLARE's job meta for the admin (the admin flow itself: test_provisioned_federation.py)."""

from fedgin.tools.federation.admin import deploy_notes, deploy_refusals

# The deploy detail FLARE 2.9's job runner writes into a job's meta (job_runner._deploy_job).
META = {
    "job_deploy_detail": [
        "server: OK",
        "site-mri-b: OK",
        "site-ct-c: NVFLARE_ERROR: BYOC not permitted",
        "site-ct-a: NVFLARE_ERROR: privacy scope 'unfiltered' is not allowed",
        "site-x: no reply (deployment timeout)",
        "invalid_clients: site-y,site-z",
        "num_ok_sites 1 < required_min_sites 2",
        "failed to deploy to required client site-ct-a",
    ]
}


def test_refusals_name_each_site_and_its_reason_and_notes_keep_the_rest():
    assert deploy_refusals(META) == {
        "site-ct-c": "BYOC not permitted",
        "site-ct-a": "privacy scope 'unfiltered' is not allowed",
        "site-x": "no reply (deployment timeout)",
    }
    assert deploy_notes(META) == [
        "invalid_clients: site-y,site-z",
        "num_ok_sites 1 < required_min_sites 2",
        "failed to deploy to required client site-ct-a",
    ]
    assert deploy_refusals({}) == {} and deploy_notes({}) == []

"""Thread settings for sites that share one machine's cores."""

import os
import sys

import pytest
from fedgin.tools.federation.cpu_sharing import GOMP_SPIN_COUNT, client_thread_env, openmp_runtime


def test_parallel_sites_get_all_cores_with_a_short_spin_on_gnu_openmp():
    env = client_thread_env(2, environ={}, runtime="gnu")
    assert env == {"OMP_NUM_THREADS": str(os.cpu_count()), "GOMP_SPINCOUNT": str(GOMP_SPIN_COUNT)}
    assert client_thread_env(8, environ={}, runtime="gnu") == env


@pytest.mark.parametrize("runtime", ["intel", "llvm", None])
def test_other_openmp_runtimes_get_passive_waiting(runtime):
    env = client_thread_env(2, environ={}, runtime=runtime)
    assert env == {"OMP_NUM_THREADS": str(os.cpu_count()), "OMP_WAIT_POLICY": "PASSIVE"}


def test_one_site_keeps_openmp_defaults_and_user_settings_win():
    assert client_thread_env(1, environ={}, runtime="gnu") == {}
    assert client_thread_env(2, environ={"OMP_NUM_THREADS": "1"}, runtime="gnu") == {
        "GOMP_SPINCOUNT": str(GOMP_SPIN_COUNT)
    }
    # Any waiting setting of the user's own means we add none (GOMP_SPINCOUNT would override PASSIVE).
    for key, value in (("OMP_WAIT_POLICY", "PASSIVE"), ("GOMP_SPINCOUNT", "0"), ("KMP_BLOCKTIME", "0")):
        assert client_thread_env(2, environ={"OMP_NUM_THREADS": "1", key: value}, runtime="gnu") == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PyTorch's Linux wheels ship GNU OpenMP")
def test_torch_runtime_is_detected():
    # torch's CPU wheel for Linux (the one CI installs) loads libgomp.
    assert openmp_runtime() in ("gnu", "intel", "llvm")
    env = client_thread_env(2, environ={})
    assert ("GOMP_SPINCOUNT" in env) == (openmp_runtime() == "gnu")


def test_sites_that_take_cpu_turns_keep_openmp_spinning():
    # They never compute at the same time (fedgin.flare.cpu_turns): only the thread count is set.
    assert client_thread_env(2, environ={}, runtime="gnu", turns=True) == {"OMP_NUM_THREADS": str(os.cpu_count())}

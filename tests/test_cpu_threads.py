"""Thread settings for sites that share one machine's cores."""

import os

from fedgin.cpu_threads import client_thread_env


def test_parallel_sites_get_all_cores_with_sleeping_idle_threads():
    env = client_thread_env(2, environ={})
    assert env == {"OMP_NUM_THREADS": str(os.cpu_count()), "OMP_WAIT_POLICY": "PASSIVE"}
    assert client_thread_env(8, environ={}) == env


def test_one_site_keeps_openmp_defaults_and_user_settings_win():
    assert client_thread_env(1, environ={}) == {}
    assert client_thread_env(2, environ={"OMP_NUM_THREADS": "1"}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert client_thread_env(2, environ={"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"}) == {}

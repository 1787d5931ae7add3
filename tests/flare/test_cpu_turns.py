"""CPU turns: co-located sites compute one at a time through a shared lock file."""

import os
import subprocess
import sys
import threading
import time

from fedgin.flare.cpu_turns import CPU_TURNS_ENV, cpu_turn, turns_lock_path
from fedgin.tools.federation.cpu_sharing import co_located_env, cpu_turns_env

HOLD = """
import sys, time
from fedgin.flare.cpu_turns import cpu_turn
with cpu_turn(sys.argv[1]) as turn:
    start = time.time()
    time.sleep(0.4)
    print(start, time.time(), turn.taken, flush=True)
"""


def test_processes_take_turns(tmp_path):
    lock = str(tmp_path / "turns.lock")
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, lock], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    spans = sorted(tuple(float(x) for x in p.communicate(timeout=60)[0].split()[:2]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.01, spans  # no two processes inside their turn at once


def test_a_site_that_waited_too_long_computes_anyway(tmp_path):
    lock = str(tmp_path / "turns.lock")
    with cpu_turn(lock) as first:
        assert first.taken and first.waited_s < 0.5
        with cpu_turn(lock, max_wait_s=0.2) as second:
            assert not second.taken and second.waited_s >= 0.2
    with cpu_turn(lock, max_wait_s=0.2) as third:  # released: free again
        assert third.taken


def test_waiting_stops_on_abort(tmp_path):
    lock = str(tmp_path / "turns.lock")
    abort = threading.Event()
    threading.Timer(0.2, abort.set).start()
    with cpu_turn(lock):
        start = time.monotonic()
        with cpu_turn(lock, max_wait_s=30, should_abort=abort.is_set) as turn:
            assert not turn.taken
        assert time.monotonic() - start < 5


def test_a_site_alone_never_waits(tmp_path):
    with cpu_turn(None) as turn:
        assert not turn.taken and turn.waited_s == 0
    assert turns_lock_path({}) is None and turns_lock_path({CPU_TURNS_ENV: ""}) is None
    assert turns_lock_path({CPU_TURNS_ENV: "/x/turns.lock"}) == "/x/turns.lock"


def test_launchers_set_turns_only_for_several_sites_and_the_user_wins(tmp_path):
    lock = tmp_path / "turns.lock"
    assert cpu_turns_env(2, lock, environ={}) == {CPU_TURNS_ENV: str(lock)}
    assert cpu_turns_env(1, lock, environ={}) == {}
    assert cpu_turns_env(2, lock, environ={CPU_TURNS_ENV: ""}) == {}  # turned off by the user


def test_co_located_sites_get_turns_with_openmp_defaults_or_short_spinning_without(tmp_path):
    lock = tmp_path / "turns.lock"
    cores = str(os.cpu_count())
    assert co_located_env(2, lock, environ={}) == {CPU_TURNS_ENV: str(lock), "OMP_NUM_THREADS": cores}
    # Turns switched off by the user: the sites compute at the same time, with briefly spinning threads.
    env = co_located_env(2, lock, environ={CPU_TURNS_ENV: ""})
    assert CPU_TURNS_ENV not in env and env["OMP_NUM_THREADS"] == cores
    assert {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(env)
    assert co_located_env(1, lock, environ={}) == {}

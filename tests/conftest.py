"""Shared fixtures: fresh named stores, the fork/spawn start methods that every
cross-process test runs under, and a real redis-server for the tests that need one."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import uuid

import pytest

import sluicegate as sg


@pytest.fixture(scope="session", autouse=True)
def _remove_this_runs_default_store():
    """The default store of this test run's application is removed at the end."""
    from sluicegate import _approot

    yield
    sg.SharedStore.unlink(_approot.default_store_name(), missing_ok=True)


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free 127.0.0.1 port, no persistence; started for the first
    test that asks, killed at the end of the session.  Tests share it: use unique keys,
    queue names or database numbers."""
    import redis_server as rs

    server = rs.start()
    yield server
    server.stop()


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store_name():
    name = unique_name()
    yield name
    sg.SharedStore.unlink(name, missing_ok=True)


@pytest.fixture
def store(store_name):
    """A fresh named store (so spawned children can attach by name)."""
    s = sg.SharedStore(store_name, capacity=4096, policies=1024)
    yield s
    s.close()


@pytest.fixture(params=["fork", "spawn"])
def mp_ctx(request):
    """A multiprocessing context; cross-process tests run under fork and spawn."""
    return mp.get_context(request.param)


def run_procs(ctx, target, args_list, timeout=120.0):
    """Start one process per args tuple, join them all, and fail on any bad exit."""
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
            pytest.fail(f"worker {p.pid} did not finish within {timeout}s")
        assert p.exitcode == 0, f"worker {p.pid} exited with {p.exitcode}"


def wait_for(pred, timeout=30.0, what="condition"):
    """Poll pred (another process's progress) until true; fail after timeout seconds."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what} not reached within {timeout}s")
        time.sleep(0.005)


def note_peak(cur, peak) -> int:
    """cur += 1 and raise the shared high-water mark peak to it; returns the new cur."""
    now = cur.add(1)
    while True:
        p = peak.value
        if now <= p or peak.compare_and_set(p, now):
            return now

"""A half-open probe held by a SIGKILLed process is given back to the next caller,
as a ConcurrencyLimiter frees a dead holder's permit: it used to block every caller
for probe_timeout (30 s by default)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import sluicegate as sg

PROBER = textwrap.dedent("""
    import os, sys, time
    import sluicegate as sg
    s = sg.SharedStore(sys.argv[1])
    br = sg.CircuitBreaker("dep", store=s, failure_threshold=1, reset_timeout=0.05, half_open_calls=int(sys.argv[2]))
    time.sleep(0.1)  # past the reset: half-open
    for _ in range(int(sys.argv[2])):
        br.__enter__()
    print("probing", flush=True)
    time.sleep(60)  # SIGKILLed here, its probes out
""")


def _breaker(store, hoc):
    return sg.CircuitBreaker("dep", store=store, failure_threshold=1, reset_timeout=0.05, half_open_calls=hoc)


def _trip(br):
    with pytest.raises(ConnectionError):
        with br:
            raise ConnectionError("the dependency is down")
    assert br.state == "open"


@pytest.mark.parametrize("hoc", [1, 2])
def test_a_killed_probe_holders_probes_are_given_back(store_name, hoc):
    store = sg.SharedStore(store_name, capacity=256)
    br = _breaker(store, hoc)
    _trip(br)
    child = subprocess.Popen([sys.executable, "-c", PROBER, store_name, str(hoc)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "probing"
        with pytest.raises(sg.CircuitOpen):  # its probes are out and it is alive
            with br:
                pass
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        time.sleep(0.15)  # past this process's reclaim interval (100 ms)
        for _ in range(hoc):
            with br:  # a probe again, long before probe_timeout (30 s)
                pass
        assert br.state == "closed"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        store.close()


def test_a_live_probe_holder_keeps_its_probe(store_name):
    store = sg.SharedStore(store_name, capacity=256)
    br = _breaker(store, 1)
    _trip(br)
    time.sleep(0.1)
    other = _breaker(sg.SharedStore(store_name), 1)
    other.__enter__()  # this process holds the probe (alive)
    for _ in range(3):
        time.sleep(0.11)
        with pytest.raises(sg.CircuitOpen):
            with br:
                pass
    other.__exit__(None, None, None)
    assert br.state == "closed"
    store.close()

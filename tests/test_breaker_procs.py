"""Cross-process behaviour of the shared breaker: real processes, fork and spawn."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import run_procs

import sluicegate as sg

pytestmark = pytest.mark.timeout(60)


def _breaker(store_name: str, name: str, **kw) -> sg.CircuitBreaker:
    return sg.CircuitBreaker(name, store=sg.SharedStore(store_name), **kw)


def _wait_state(br: sg.CircuitBreaker, want: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while br.state != want:
        assert time.monotonic() < deadline, f"breaker stayed {br.state!r}, wanted {want!r}"
        time.sleep(0.005)


# ---- failures in A open the breaker for B ----------------------------------------


def fail_worker(store_name: str, name: str, n: int) -> None:
    br = _breaker(store_name, name, failure_threshold=3, reset_timeout=60.0)
    for _ in range(n):
        try:
            with br:
                raise ConnectionError("down")
        except ConnectionError:
            pass


def expect_open_worker(store_name: str, name: str) -> None:
    br = _breaker(store_name, name, failure_threshold=3, reset_timeout=60.0)
    assert br.state == "open", br.state
    try:
        with br:
            raise AssertionError("the body must not run")
    except sg.CircuitOpen as e:
        assert 0 < e.retry_after <= 60.0
        assert e.name == name
    else:
        raise AssertionError("no CircuitOpen")


def test_failures_in_one_process_open_it_for_another(mp_ctx, store, store_name):
    name = "payments"
    run_procs(mp_ctx, fail_worker, [(store_name, name, 3)])
    run_procs(mp_ctx, expect_open_worker, [(store_name, name)])
    br = sg.CircuitBreaker(name, store=store, failure_threshold=3, reset_timeout=60.0)
    st = br.stats()
    assert (st["state"], st["calls"], st["failures"], st["rejections"], st["transitions"]) == ("open", 3, 3, 1, 1)


def test_two_failures_do_not_open_it(mp_ctx, store, store_name):
    run_procs(mp_ctx, fail_worker, [(store_name, "p2", 1), (store_name, "p2", 1)])
    br = sg.CircuitBreaker("p2", store=store, failure_threshold=3, reset_timeout=60.0)
    assert br.state == "closed"
    assert br.stats()["window_failures"] == 2


# ---- exact totals under a race --------------------------------------------------


def hammer_worker(store_name: str, name: str, n: int) -> None:
    br = _breaker(store_name, name, failure_threshold=10**6, window=60.0, reset_timeout=60.0)
    for i in range(n):
        try:
            with br:
                if i % 3 == 0:
                    raise TimeoutError
        except TimeoutError:
            pass


def test_concurrent_counts_are_exact(mp_ctx, store, store_name):
    n = 3000
    run_procs(mp_ctx, hammer_worker, [(store_name, "race", n)] * 4)
    br = sg.CircuitBreaker("race", store=store, failure_threshold=10**6, window=60.0, reset_timeout=60.0)
    st = br.stats()
    fails = 4 * len(range(0, n, 3))
    assert (st["calls"], st["failures"], st["rejections"], st["transitions"]) == (4 * n, fails, 0, 0)
    assert (st["window_calls"], st["window_failures"]) == (4 * n, fails)


def threshold_worker(store_name: str, name: str, n: int) -> None:
    br = _breaker(store_name, name, failure_threshold=50, window=60.0, reset_timeout=60.0)
    for _ in range(n):
        try:
            with br:
                raise OSError
        except (OSError, sg.CircuitOpen):
            pass


def test_racing_failures_open_exactly_once(mp_ctx, store, store_name):
    run_procs(mp_ctx, threshold_worker, [(store_name, "thr", 40)] * 4)
    br = sg.CircuitBreaker("thr", store=store, failure_threshold=50, window=60.0, reset_timeout=60.0)
    st = br.stats()
    assert st["state"] == "open"
    assert st["transitions"] == 1
    # every attempt was either admitted (and failed) or rejected
    assert st["calls"] + st["rejections"] == 160
    assert st["failures"] == st["calls"]
    assert 50 <= st["calls"] <= 53  # the trip, plus at most one call in flight per other process


# ---- exactly half_open_calls probes across 4 racing processes ---------------------

HOC = 3
PROBE_KW = {"failure_threshold": 1, "reset_timeout": 0.05, "half_open_calls": HOC, "probe_timeout": 60.0}


def probe_racer(store_name: str, name: str, go, done, attempts: int) -> None:
    store = sg.SharedStore(store_name)
    br = sg.CircuitBreaker(name, store=store, **PROBE_KW)
    admitted = store.counter(f"{name}-admitted")
    rejected = store.counter(f"{name}-rejected")
    go.wait()
    held = []
    for _ in range(attempts):
        try:
            held.append(br.begin())
            admitted.add(1)
        except sg.CircuitOpen:
            rejected.add(1)
    done.wait()  # keep our probes until every racer has tried
    for t in held:
        t.success()


def test_half_open_admits_exactly_half_open_calls_probes(mp_ctx, store, store_name):
    name = "probes"
    br = sg.CircuitBreaker(name, store=store, **PROBE_KW)
    try:
        with br:
            raise OSError
    except OSError:
        pass
    assert br.state == "open"
    go, done = mp_ctx.Event(), mp_ctx.Barrier(4)
    procs = [mp_ctx.Process(target=probe_racer, args=(store_name, name, go, done, 200)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.1)  # past reset_timeout: the first enter turns it half-open
    go.set()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert store.counter(f"{name}-admitted").value == HOC
    assert store.counter(f"{name}-rejected").value == 4 * 200 - HOC
    # the HOC probes all succeeded: closed
    assert br.state == "closed"


# ---- a SIGKILLed probe holder does not wedge half_open ------------------------------

KILL_KW = {"failure_threshold": 1, "reset_timeout": 0.05, "half_open_calls": 1, "probe_timeout": 1.0}


def probe_holder(store_name: str, name: str, holding) -> None:
    br = _breaker(store_name, name, **KILL_KW)
    deadline = time.monotonic() + 10
    while True:
        try:
            token = br.begin()
            break
        except sg.CircuitOpen:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    assert token.probe
    holding.set()
    time.sleep(60)  # killed here, holding the only probe permit


def test_killed_probe_holder_does_not_wedge_half_open(mp_ctx, store, store_name):
    name = "killed"
    br = sg.CircuitBreaker(name, store=store, **KILL_KW)
    try:
        with br:
            raise OSError
    except OSError:
        pass
    holding = mp_ctx.Event()
    p = mp_ctx.Process(target=probe_holder, args=(store_name, name, holding))
    p.start()
    assert holding.wait(20), "the child never got the probe"
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    assert br.state == "half_open"
    # the dead holder's probe is given back to the next caller (issue 9), long before
    # probe_timeout: the loop is only a bound
    deadline = time.monotonic() + 5
    while True:
        try:
            token = br.begin()
            break
        except sg.CircuitOpen:
            assert time.monotonic() < deadline, "half_open stayed wedged"
            time.sleep(0.01)
    assert token.probe
    token.success()
    assert br.state == "closed"


# ---- workers SIGKILLed mid-run leave nothing stuck -----------------------------------


def busy_worker(store_name: str, name: str) -> None:
    br = _breaker(store_name, name, failure_threshold=5, reset_timeout=0.02, half_open_calls=2, probe_timeout=0.2)
    i = 0
    while True:
        i += 1
        try:
            with br:
                if i % 2:
                    raise OSError
        except (OSError, sg.CircuitOpen):
            pass


def test_sigkilled_workers_leave_nothing_stuck(mp_ctx, store, store_name):
    name = "busy"
    procs = [mp_ctx.Process(target=busy_worker, args=(store_name, name)) for _ in range(3)]
    for p in procs:
        p.start()
    br = sg.CircuitBreaker(
        name, store=store, failure_threshold=5, reset_timeout=0.02, half_open_calls=2, probe_timeout=0.2
    )
    deadline = time.monotonic() + 20
    while br.stats()["transitions"] < 20:  # let them churn through the state machine
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(10)
    # whatever state they left, successes bring it back to closed within bounded time
    deadline = time.monotonic() + 5
    while br.state != "closed":
        assert time.monotonic() < deadline, f"stuck in {br.state}"
        try:
            with br:
                pass
        except sg.CircuitOpen:
            time.sleep(0.01)
    assert store.stats()["claiming"] == 0


# ---- listeners and fault switches cross process boundaries ----------------------------


def trip_worker(store_name: str, name: str) -> None:
    br = _breaker(store_name, name, failure_threshold=1, reset_timeout=60.0)
    try:
        with br:
            raise OSError
    except OSError:
        pass


def test_listener_notices_a_transition_made_by_another_process(mp_ctx, store, store_name):
    seen = []
    br = sg.CircuitBreaker(
        "lis", store=store, failure_threshold=1, reset_timeout=60.0, on_state_change=lambda b, o, n: seen.append((o, n))
    )
    assert br.state == "closed"
    run_procs(mp_ctx, trip_worker, [(store_name, "lis")])
    assert seen == []  # nothing runs in this process until it touches the breaker
    assert br.state == "open"
    assert seen == [("closed", "open")]


def chaos_switch_worker(store_name: str, name: str, rate: float) -> None:
    _breaker(store_name, name).inject_faults(reject_rate=rate)


def test_fault_injection_switched_from_another_process(mp_ctx, store, store_name):
    br = sg.CircuitBreaker("chaos", store=store, seed=9)
    run_procs(mp_ctx, chaos_switch_worker, [(store_name, "chaos", 1.0)])
    for _ in range(5):
        with pytest.raises(sg.CircuitOpen), br:
            pass
    run_procs(mp_ctx, chaos_switch_worker, [(store_name, "chaos", 0.0)])
    with br:
        pass
    st = br.stats()
    assert (st["calls"], st["rejections"], st["failures"], st["state"]) == (1, 5, 0, "closed")


def test_breaker_on_an_anonymous_store_refuses_to_pickle():
    """A spawn child cannot share an anonymous store: say so in the parent rather than
    let the child silently run its own private breaker."""
    import pickle

    br = sg.CircuitBreaker("pickled-anon", store=sg.SharedStore(capacity=64))
    with pytest.raises(sg.StoreError, match="anonymous"):
        pickle.dumps(br)


def test_breaker_on_the_default_store_pickles_to_the_same_breaker(monkeypatch):
    import pickle

    from sluicegate import store as store_mod

    monkeypatch.delenv("SLUICEGATE_STORE", raising=False)
    monkeypatch.setattr(store_mod, "_default", None)
    br = sg.CircuitBreaker("pickled-default", failure_threshold=1)
    twin = pickle.loads(pickle.dumps(br))
    assert twin.store.name == br.store.name == sg.default_store().name
    with pytest.raises(ZeroDivisionError), twin:
        raise ZeroDivisionError
    assert br.state == "open"

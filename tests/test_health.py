"""store.health() and `sluicegate health`: a store's health moves healthy -> degraded ->
unhealthy as a breaker half-opens and opens and as the store fills, and the CLI's exit
codes (0, 1, 2; 3 when it cannot judge) follow; thresholds are validated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import unique_name

import sluicegate as sg


def health_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SLUICEGATE_STORE", None)
    return subprocess.run([sys.executable, "-m", "sluicegate", "health", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def fail(br: sg.CircuitBreaker) -> None:
    with pytest.raises(OSError):
        with br:
            raise OSError("down")


def wait_state(br: sg.CircuitBreaker, state: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while br.state != state:
        assert time.monotonic() < deadline, f"breaker stayed {br.state}, never {state}"
        time.sleep(0.02)


def test_health_follows_a_breaker_through_open_half_open_and_closed(store, store_name):
    br = sg.CircuitBreaker(unique_name("pay"), store=store, failure_threshold=1, reset_timeout=600.0)
    sg.RateLimiter("api", "100/second", store=store).allow("k")
    h = store.health()
    assert h.status == "healthy" and h.exit_code == 0 and h.ok
    assert {(p.kind, p.status) for p in h.policies} == {("breaker", "healthy"), ("limiter", "healthy")}
    r = health_cli("--store", store_name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"healthy  shm://{store_name}")

    fail(br)
    h = store.health()
    p = h.policy(br.name)
    assert h.status == "unhealthy" and p.status == "unhealthy" and p.readings["state"] == "open"
    assert p.reasons[0].startswith("open: rejecting calls") and p.readings["failures"] == 1
    r = health_cli("--store", store_name)
    assert r.returncode == 2 and r.stdout.startswith("unhealthy") and f"breaker {br.name}" in r.stdout

    br.reconfigure(reset_timeout=0.05)  # an open breaker follows: half-open 50 ms after it opened
    wait_state(br, "half_open")
    h = store.health()
    assert h.status == "degraded" and h.policy(br.name, "breaker").reasons[0].startswith("half-open")
    r = health_cli("--store", store_name)
    assert r.returncode == 1 and "half-open" in r.stdout

    with br:  # the probe succeeds: closed again
        pass
    assert store.health().status == "healthy" and health_cli("--store", store_name).returncode == 0


def test_operator_states_and_a_saturated_cap(store, store_name):
    br = sg.CircuitBreaker("pay", store=store)
    cap = sg.ConcurrencyLimiter("pg", 2, store=store)
    br.force_open()
    assert store.health().policy("pay").reasons == (
        "forced open by an operator: rejecting every call until closed",)
    assert store.health().status == "unhealthy"
    br.disable()
    h = store.health()
    assert h.status == "degraded" and "disabled by an operator" in h.policy("pay").reasons[0]
    br.force_close()
    with cap.slot(), cap.slot():
        h = store.health()
        assert h.policy("pg").status == "degraded" and h.policy("pg").reasons == ("saturated: 2 of 2 permits in use",)
        assert store.health(cap_saturation=0.5).status == "degraded"
    with cap.slot():
        assert store.health().status == "healthy"
        assert store.health(cap_saturation=0.5).policy("pg").reasons == ("saturated: 1 of 2 permits in use",)


def test_store_fill_degrades_then_makes_unhealthy(store_name):
    with sg.SharedStore(store_name, capacity=20) as store:
        lim = sg.RateLimiter("keys", "5/hour", store=store)
        for i in range(15):
            lim.allow(f"user{i}")
        assert store.health().store == {
            "store": f"shm://{store_name}", "status": "healthy", "reasons": [],
            "readings": {**store.stats(), "policies": 1}}
        for i in range(15, 17):  # 17 of 20: above 80%
            lim.allow(f"user{i}")
        h = store.health()
        assert h.status == "degraded" and h.store["status"] == "degraded"
        assert h.store["reasons"] == ["key slots 85% full (17 of 20; warning above 80%)"]
        assert store.health(fill_warning=0.9).status == "healthy"
        r = health_cli("--store", store_name)
        assert r.returncode == 1 and "key slots 85% full" in r.stdout
        for i in range(17, 20):  # 20 of 20: above 95%
            lim.allow(f"user{i}")
        h = store.health()
        assert h.status == "unhealthy" and h.store["reasons"] == ["key slots 100% full (20 of 20; critical above 95%)"]
        r = health_cli("--store", store_name, "--json")
        assert r.returncode == 2
        doc = json.loads(r.stdout)
        assert doc["status"] == "unhealthy" and doc["store"]["readings"]["used"] == 20
        assert doc["policies"][0]["kind"] == "limiter" and doc["policies"][0]["readings"]["allowed"] == 20
        assert health_cli("--store", store_name, "--fill-critical", "1.0").returncode == 1


def test_limiter_denials_are_judged_over_its_lifetime_or_since_an_earlier_reading(store):
    lim = sg.RateLimiter("login", "5/hour", store=store)
    for _ in range(10):
        lim.allow("k")
    assert store.health().status == "healthy"  # 10 decisions: fewer than min_decisions
    assert store.health(min_decisions=10, denied_fraction=0.4).policy("login").reasons == (
        "denied 50% of 10 decisions over its lifetime (threshold 40%)",)
    for _ in range(30):
        lim.allow("k")
    h = store.health()
    assert h.interval is None and h.policy("login").status == "degraded"
    assert h.policy("login").reasons == ("denied 88% of 40 decisions over its lifetime (threshold 50%)",)
    assert store.health(denied_fraction=0.9).status == "healthy"

    first = store.health()
    for i in range(30):  # fresh keys: all admitted
        lim.allow(f"u{i}")
    second = store.health(since=first)
    assert second.interval is not None and 0 < second.interval < 30
    assert second.status == "healthy"  # 30 admitted in the interval, whatever the lifetime says
    for _ in range(25):
        lim.allow("k")
    third = store.health(since=second)
    reason = third.policy("login").reasons[0]
    assert third.status == "degraded" and reason.startswith("denied 100% of 25 decisions in the last ")


def test_the_cli_judges_an_interval_between_two_readings(store, store_name):
    lim = sg.RateLimiter("api", "5/hour", store=store)
    for i in range(40):  # a lifetime of admissions
        lim.allow(f"u{i}")
    assert health_cli("--store", store_name).returncode == 0
    stop = threading.Event()

    def hammer() -> None:  # denials while the CLI takes its two readings
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(50):
                lim.allow("hot")
            time.sleep(0.01)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        r = health_cli("--store", store_name, "--interval", "1.0", "--json")
    finally:
        stop.set()
        t.join(30)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert 0.9 <= doc["interval"] < 30
    reason = doc["policies"][0]["reasons"][0]
    assert reason.startswith("denied ") and "in the last 1" in reason


def test_pools_of_this_process_and_cap_timeouts_are_judged(store):
    pool = sg.Pool(object, size=1, max_overflow=0, name="db")
    cap = sg.ConcurrencyLimiter("pg", 1, store=store)
    try:
        assert store.health(include=[pool]).policy("db", "pool").status == "healthy"
        lease = pool.acquire()
        first = store.health(include=[pool])
        assert first.policy("db").reasons == ("exhausted: all 1 resources in use",)
        with cap.slot():
            with pytest.raises(sg.PoolTimeout):
                pool.acquire(timeout=0.01)
            with pytest.raises(sg.ConcurrencyLimitExceeded):
                cap.acquire(timeout=0.01)
        lease.release()
        later = store.health(include=[pool], since=first)
        assert later.policy("db").status == "degraded"
        assert later.policy("db").reasons[0].startswith("1 checkout timeouts in the last ")
        assert later.policy("pg", "cap").reasons[0].startswith("1 acquire timeouts in the last")
        assert store.health(include=[pool]).status == "healthy"  # without since, past timeouts are no news
    finally:
        pool.close()


class Monitor:
    def __init__(self, level: str) -> None:
        self.level = level

    def stats(self) -> dict[str, object]:
        return {"fraction": 0.5}


def test_a_memory_monitor_is_judged_by_its_level(store):
    assert store.health(memory=Monitor("ok")).memory == {
        "status": "healthy", "reasons": [], "readings": {"level": "ok", "fraction": 0.5}}
    h = store.health(memory=Monitor("warning"))
    assert h.status == "degraded" and h.memory is not None and h.memory["reasons"] == ["memory pressure is warning"]
    assert store.health(memory=Monitor("critical")).status == "unhealthy"
    assert json.loads(json.dumps(h.to_dict()))["memory"]["status"] == "degraded"
    with pytest.raises(sg.ConfigError, match="memory must be an object whose .level"):
        store.health(memory=object())


def test_the_cli_judges_memory_with_a_memory_monitor(store, store_name):
    r = health_cli("--store", store_name, "--memory", "--json")
    assert r.returncode in (0, 1, 2) and json.loads(r.stdout)["memory"]["readings"]["level"] in (
        "ok", "warning", "critical")


@pytest.mark.parametrize("kwargs,message", [
    ({"denied_fraction": 0}, "denied_fraction must be a fraction greater than 0 and at most 1, got 0"),
    ({"denied_fraction": 1.5}, "denied_fraction must be a fraction"),
    ({"cap_saturation": "1"}, "cap_saturation must be a fraction"),
    ({"fill_warning": True}, "fill_warning must be a fraction"),
    ({"fill_critical": -0.1}, "fill_critical must be a fraction"),
    ({"min_decisions": 0}, "min_decisions must be an int >= 1, got 0"),
    ({"min_decisions": 2.5}, "min_decisions must be an int"),
    ({"fill_warning": 0.9, "fill_critical": 0.8}, r"fill_warning \(0.9\) must not be above fill_critical \(0.8\)"),
    ({"since": "yesterday"}, "since must be an earlier Health reading"),
    ({"include": [object()]}, "include takes objects with a stats"),
])
def test_thresholds_and_options_are_validated(store, kwargs, message):
    with pytest.raises(sg.ConfigError, match=message):
        store.health(**kwargs)


def test_since_must_be_an_earlier_reading_of_the_same_store(store):
    other = sg.SharedStore()
    try:
        with pytest.raises(sg.ConfigError, match="since is a reading of <SharedStore anonymous"):
            store.health(since=other.health())
    finally:
        other.close()
    h = store.health()
    with pytest.raises(TypeError):
        store.health(bogus=1)
    assert store.health(since=h).interval is not None


def test_health_to_dict_is_json(store):
    sg.CircuitBreaker("pay", store=store).force_open()
    doc = json.loads(json.dumps(store.health().to_dict()))
    assert doc["status"] == "unhealthy" and doc["interval"] is None and doc["memory"] is None
    assert doc["policies"] == [{"kind": "breaker", "name": "pay", "status": "unhealthy",
                                "reasons": ["forced open by an operator: rejecting every call until closed"],
                                "readings": doc["policies"][0]["readings"]}]
    assert doc["policies"][0]["readings"]["state"] == "forced_open"


@pytest.mark.parametrize("args,message", [
    (("--store", "{missing}"), "does not exist"),
    (("--store", "{store}", "--denied-fraction", "2"), "denied_fraction must be a fraction"),
    (("--store", "{store}", "--interval", "0"), "expected seconds > 0"),
    (("--store", "{store}", "--bogus"), "unrecognized arguments: --bogus"),
    ((), "which store?"),
])
def test_the_cli_exits_3_when_it_cannot_judge(store, store_name, args, message):
    missing = unique_name("nostore")
    r = health_cli(*(a.format(store=store_name, missing=missing) for a in args))
    assert r.returncode == 3 and message in r.stderr and r.stdout == ""
    assert "Traceback" not in r.stderr
    assert not os.path.exists(f"/dev/shm/sluicegate.{missing}")


class CapView:
    """Stands for a policy this process holds itself (a pool: its create function is code)."""

    KIND = "cap"
    name = "pg"

    def stats(self) -> dict[str, object]:
        return {"limit": 1, "in_use": 1}


def test_a_policy_that_cannot_be_read_here_is_listed_not_judged(store, monkeypatch):
    from sluicegate import directory

    sg.ConcurrencyLimiter("pg", 2, store=store)
    sg.RateLimiter("api", "1/second", store=store)

    def not_buildable(store, name, code):
        raise sg.PolicyNotFound(f"cap {name!r} is each process's own")

    monkeypatch.setitem(directory.BUILDERS, "cap", not_buildable)
    h = store.health()
    assert h.status == "healthy"
    assert h.policy("pg") == sg.PolicyHealth("cap", "pg", "healthy",
                                             ("not judged: cap 'pg' is each process's own",), {})
    judged = store.health(include=[CapView()])  # the process's own object stands for it
    assert [p.name for p in judged.policies] == ["pg", "api"]
    assert judged.policy("pg").reasons == ("saturated: 1 of 1 permits in use",) and judged.status == "degraded"
    monkeypatch.delitem(directory.BUILDERS, "cap")
    assert store.health().policy("pg").reasons == ("not judged: this version of sluicegate cannot read a cap",)

"""Telemetry events (sg.on / policy.on): right fields, from the process where they
happen, never breaking the call, and also as logging records."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import time

import pytest
from conftest import unique_name
from engines import ModelStore

import sluicegate as sg
from sluicegate import telemetry


@pytest.fixture
def store():
    s = sg.SharedStore()
    yield s
    s.close()


@pytest.fixture
def listen():
    """sg.on for the test's length; removed after."""
    added = []

    def add(event, fn):
        sg.on(event, fn)
        added.append((event, fn))
        return fn

    yield add
    for event, fn in added:
        sg.off(event, fn)


def test_rate_denied_carries_the_decision(store, listen):
    got: list[sg.Event] = []
    listen("rate.denied", got.append)
    lim = sg.RateLimiter(unique_name("ev"), "2/minute", store=store)
    assert lim.allow("u") and lim.allow("u") and not lim.allow("u", 1)
    assert len(got) == 1
    ev = got[0]
    assert (ev.name, ev.kind, ev.policy, ev.pid) == ("rate.denied", "limiter", lim.name, os.getpid())
    assert abs(ev.time - time.time()) < 5
    m = ev.measurements
    assert m["key"] == "u" and m["cost"] == 1 and m["limit"] == 2 and m["remaining"] == 0
    assert 29 < m["retry_after"] <= 30
    d = lim.check("u")  # check emits too
    assert not d.allowed and len(got) == 2


def test_rate_allowed_only_when_asked_for_by_name(store, listen):
    lim = sg.RateLimiter(unique_name("ev"), "5/minute", store=store)
    wild: list[sg.Event] = []
    listen("*", wild.append)
    listen("rate.*", wild.append)
    lim.allow("k")
    assert wild == []  # wildcards never receive the hot path's allowed
    named: list[sg.Event] = []
    listen("rate.allowed", named.append)
    lim.allow("k")
    assert [e.name for e in named] == ["rate.allowed"] and wild == []


def test_policy_listeners_hear_only_their_policy_and_off_stops_them(store):
    a = sg.RateLimiter(unique_name("ev"), "1/minute", store=store)
    b = sg.RateLimiter(unique_name("ev"), "1/minute", store=store)
    got: list[sg.Event] = []
    a.on("rate.denied", got.append)
    for lim in (a, b):
        lim.allow("k")
        lim.allow("k")
    assert [e.policy for e in got] == [a.name]
    a.off("rate.denied", got.append)
    a.allow("k")
    assert len(got) == 1
    with pytest.raises(sg.ConfigError, match="rate"):
        a.on("breaker.call", got.append)
    with pytest.raises(sg.ConfigError, match="unknown event"):
        sg.on("rate.denyed", got.append)
    with pytest.raises(sg.ConfigError, match="callable"):
        sg.on("rate.denied", "not callable")  # type: ignore[arg-type]


def test_a_raising_listener_is_logged_and_the_call_goes_on(store, listen, caplog):
    def boom(ev: sg.Event) -> None:
        raise RuntimeError("listener bug")

    listen("rate.denied", boom)
    lim = sg.RateLimiter(unique_name("ev"), "1/minute", store=store)
    with caplog.at_level(logging.ERROR, logger="sluicegate.telemetry"):
        assert lim.allow("k") is True
        assert lim.allow("k") is False  # the decision, despite the listener
    assert any("listener bug" in (r.exc_text or "") or "failed" in r.getMessage() for r in caplog.records)


def test_async_listeners_run_on_the_running_loop(store, listen):
    got: list[sg.Event] = []

    async def alisten(ev: sg.Event) -> None:
        await asyncio.sleep(0)
        got.append(ev)

    listen("rate.denied", alisten)
    lim = sg.RateLimiter(unique_name("ev"), "1/minute", store=store)

    async def main() -> None:
        lim.allow("k")
        lim.allow("k")
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert [e.name for e in got] == ["rate.denied"]
    lim.allow("k")  # no running loop: dropped with a warning, the call goes on
    assert len(got) == 1


def test_breaker_events_state_change_call_and_rejected(store):
    br = sg.CircuitBreaker(unique_name("ev"), store=store, failure_threshold=2)
    got: list[sg.Event] = []
    br.on("*", got.append)
    with br:
        time.sleep(0.01)
    for _ in range(2):
        with pytest.raises(ValueError), br:
            raise ValueError
    with pytest.raises(sg.CircuitOpen):
        br.call(lambda: None)
    names = [e.name for e in got]
    assert names == ["breaker.call", "breaker.call", "breaker.call", "breaker.state_change", "breaker.rejected"]
    ok, f1, f2, change, rejected = got
    assert ok.measurements["outcome"] == "success" and ok.measurements["duration"] >= 0.009
    assert f2.measurements["outcome"] == "failure"
    assert change.measurements == {"old": "closed", "new": "open"}
    assert rejected.measurements["reason"] == "open" and rejected.measurements["retry_after"] > 0
    assert all(e.kind == "breaker" and e.policy == br.name for e in got)


def test_events_over_the_model_engine_too(listen):
    store = ModelStore()
    got: list[sg.Event] = []
    listen("rate.denied", got.append)
    lim = sg.RateLimiter(unique_name("ev"), "1/minute", store=store)
    lim.allow("k")
    lim.allow("k")
    assert [e.measurements["remaining"] for e in got] == [0]


def test_denials_are_logged_at_debug_once_the_logger_asks(store, caplog):
    lim = sg.RateLimiter(unique_name("ev"), "1/minute", store=store)
    with caplog.at_level(logging.DEBUG, logger="sluicegate.limiter"):
        telemetry.refresh()  # the flags follow logger levels at refresh points
        lim.allow("k")
        lim.allow("k")
    recs = [r for r in caplog.records if r.name == "sluicegate.limiter" and "rate.denied" in r.getMessage()]
    assert len(recs) == 1 and recs[0].levelno == logging.DEBUG
    telemetry.refresh()
    caplog.clear()
    lim.allow("k")
    assert not [r for r in caplog.records if r.name == "sluicegate.limiter"]


def _child(name: str, q: mp.Queue) -> None:  # type: ignore[type-arg]
    store = sg.SharedStore(name)
    got: list[sg.Event] = []
    sg.on("rate.denied", got.append)
    lim = sg.RateLimiter("shared", "1/minute", store=store)
    lim.allow("k")
    lim.allow("k")
    q.put([(e.name, e.pid) for e in got])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_events_come_from_the_process_where_they_happen(listen, method):
    name = unique_name("ev")
    store = sg.SharedStore(name)
    try:
        mine: list[sg.Event] = []
        listen("rate.denied", mine.append)
        ctx = mp.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=(name, q))
        p.start()
        child_events = q.get(timeout=60)
        p.join(60)
        assert child_events == [("rate.denied", p.pid)]
        assert mine == []  # the child's denials are not told to this process's listeners
        lim = sg.RateLimiter("shared", "1/minute", store=store)
        lim.allow("k")  # the budget is shared: denied here too, told here
        assert [(e.name, e.pid) for e in mine] == [("rate.denied", os.getpid())]
    finally:
        store.close()
        sg.SharedStore.unlink(name, missing_ok=True)


def test_a_full_store_emits_store_full_and_logs_a_warning(listen, caplog):
    got: list[sg.Event] = []
    listen("store.*", got.append)
    with sg.SharedStore(capacity=64) as store:
        lim = sg.RateLimiter(unique_name("ev"), "5/minute", store=store)
        with caplog.at_level(logging.WARNING, logger="sluicegate.store"), pytest.raises(sg.StoreFull):
            for i in range(10_000):  # bounded: a 64-key store is full long before
                lim.allow(f"k{i}")
    assert got and got[0].name == "store.full" and got[0].kind == "store"
    assert "larger capacity" in got[0].measurements["message"]
    assert any(r.name == "sluicegate.store" and r.levelno == logging.WARNING for r in caplog.records)


def test_cap_and_pool_events(store, listen):
    got: list[sg.Event] = []
    listen("cap.*", got.append)
    listen("pool.*", got.append)
    cap = sg.ConcurrencyLimiter(unique_name("ev"), 1, store=store)
    with cap.slot(), pytest.raises(sg.ConcurrencyLimitExceeded):
        cap.acquire(timeout=0.01)
    pool = sg.Pool(object, size=1, min_size=1, name=unique_name("ev"), store=store, timeout=0.01)
    with pool.checkout():
        with pytest.raises(sg.PoolTimeout):
            pool.acquire()
        with pytest.raises(sg.PoolExhausted):
            pool.acquire(block=False)
    pool.close()
    names = [e.name for e in got]
    assert names == ["cap.acquired", "cap.timeout", "pool.created", "pool.checkout", "pool.timeout",
                     "pool.exhausted", "pool.closed"], names
    timeout = got[1]
    assert timeout.kind == "cap" and timeout.policy == cap.name and timeout.measurements["in_use"] == 1
    assert got[4].kind == "pool" and got[4].policy == pool.name and got[4].measurements["timeout"] == 0.01


def test_a_dead_holders_permit_reclaimed_is_told(store, listen):
    got: list[sg.Event] = []
    listen("cap.reclaimed", got.append)
    name = unique_name("ev")
    cap = sg.ConcurrencyLimiter(name, 2, store=store)
    pid = os.fork()
    if pid == 0:  # a holder that dies holding its permit
        cap.acquire()
        os._exit(0)
    os.waitpid(pid, 0)
    assert cap.in_use == 1
    assert cap.reclaim() == 1
    assert [(e.name, e.measurements["freed"]) for e in got] == [("cap.reclaimed", 1)]


def test_a_breaker_opening_is_logged_at_warning_with_no_listener(store, caplog):
    br = sg.CircuitBreaker(unique_name("ev"), store=store, failure_threshold=1)  # default logging levels
    with pytest.raises(ValueError), br:
        raise ValueError
    recs = [r for r in caplog.records if r.name == "sluicegate.breaker" and "breaker.state_change" in r.getMessage()]
    assert [r.levelno for r in recs] == [logging.WARNING] and "new='open'" in recs[0].getMessage()


def test_a_full_store_is_logged_once_per_interval_but_told_to_listeners_every_time(caplog):
    s = sg.SharedStore(capacity=4)
    got: list[sg.Event] = []
    sg.on("store.full", got.append)
    try:
        lim = sg.RateLimiter("full-log", "1/hour", store=s)
        with caplog.at_level(logging.WARNING, logger="sluicegate.store"):
            for i in range(60):
                try:
                    lim.allow(f"k{i}")
                except sg.StoreFull:
                    pass
        records = [r for r in caplog.records if "store.full" in r.getMessage()]
        assert len(got) == 56 and len(records) == 1  # 4 keys fit; 56 refusals, one WARNING
    finally:
        sg.off("store.full", got.append)
        s.close()

"""The cap and pool events that complete the telemetry set: cap.acquired (every way a
permit is taken, with the wait), pool.checkout (fast and slow paths), and the same pool
events from an AsyncPool as from a Pool; async cap waits land in the cap's wait
histogram; a named pool's counts are every process's (exactly, over 4 real processes),
and the exporters read them, its wait histogram and counters from the store."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from conftest import run_procs

import sluicegate as sg
from sluicegate import histogram, metrics


def listen(policy, pattern: str) -> list[sg.Event]:
    got: list[sg.Event] = []
    policy.on(pattern, got.append)
    return got


def test_cap_acquired_is_told_for_every_way_a_permit_is_taken(store):
    cap = sg.ConcurrencyLimiter("ev-cap", 1, store=store)
    got = listen(cap, "cap.acquired")
    with cap.slot():
        pass
    cap.acquire().release()
    cap.try_acquire().release()

    async def slot_async():
        async with cap.slot_async():
            pass

    asyncio.run(slot_async())
    sg.Guard("ev-guard", cap=cap, store=store).call(lambda: None)
    assert len(got) == 5
    assert all(e.kind == "cap" and e.policy == "ev-cap" and e.measurements["wait"] == 0.0 for e in got)
    assert {e.measurements["in_use"] for e in got} == {1} and got[0].measurements["limit"] == 1


def test_cap_acquired_after_a_wait_says_how_long(store):
    cap = sg.ConcurrencyLimiter("ev-wait", 1, store=store)
    got = listen(cap, "cap.acquired")
    held = cap.acquire()
    threading.Timer(0.1, held.release).start()
    with cap.slot(timeout=5.0):
        pass
    assert len(got) == 2 and got[1].measurements["wait"] >= 0.08


def test_no_listener_no_event_and_the_flag_follows_listeners(store):
    cap = sg.ConcurrencyLimiter("ev-flag", 1, store=store)
    assert not cap._engine.ev_acquired
    fn = cap.on("cap.acquired", lambda ev: None)
    assert cap._engine.ev_acquired
    cap.off("cap.acquired", fn)
    assert not cap._engine.ev_acquired


def test_async_cap_waits_land_in_the_wait_histogram(store):
    cap = sg.ConcurrencyLimiter("async-wait", 1, store=store)
    before = histogram.read(store, "cap", "async-wait", histogram.WAIT)
    n0 = before.count if before is not None else 0

    async def main() -> None:
        held = await cap.acquire_async()

        async def later() -> None:
            await asyncio.sleep(0.05)
            held.release()

        t = asyncio.ensure_future(later())
        (await cap.acquire_async(timeout=5.0)).release()
        await t

    asyncio.run(main())
    after = histogram.read(store, "cap", "async-wait", histogram.WAIT)
    assert after is not None and after.count == n0 + 1 and after.sum >= 0.04


def test_pool_checkout_events_from_the_fast_and_the_slow_path(store):
    pool = sg.Pool(object, size=1, timeout=5.0, name="ev-pool", store=store)
    got = listen(pool, "pool.*")
    with pool.checkout():  # creates, then lends
        pass
    with pool.checkout():  # the fast path
        pass
    lease = pool.acquire()
    threading.Timer(0.1, lease.release).start()
    with pool.checkout():  # waits for it
        pass
    names = [e.name for e in got]
    assert names == ["pool.created", "pool.checkout", "pool.checkout", "pool.checkout", "pool.checkout"]
    assert got[-1].measurements["wait"] >= 0.08 and got[2].measurements["wait"] == 0.0
    pool.close()
    assert got[-1].name == "pool.closed"


def test_an_async_pool_tells_the_same_events_as_a_pool(store):
    got: list[sg.Event] = []

    async def main() -> None:
        pool = sg.AsyncPool(object, size=1, timeout=0.05, name="ev-apool", store=store)
        pool.on("pool.*", got.append)
        async with pool.checkout():
            with pytest.raises(sg.PoolTimeout):
                async with pool.checkout():
                    pass
            with pytest.raises(sg.PoolExhausted):
                async with pool.checkout(block=False):
                    pass
        await pool.close()

    asyncio.run(main())
    assert [e.name for e in got] == ["pool.created", "pool.checkout", "pool.timeout", "pool.exhausted",
                                     "pool.closed"]
    assert all(e.kind == "pool" and e.policy == "ev-apool" for e in got)
    assert got[2].measurements["timeout"] == 0.05


WORKERS, CHECKOUTS = 4, 200


def pool_worker(store_name: str) -> None:
    store = sg.SharedStore(store_name)
    pool = sg.Pool(object, size=2, name="shared-counts", store=store)
    for _ in range(CHECKOUTS):
        with pool.checkout():
            pass
    sg.Counter("done", store).add(1)  # a policy: in the directory, so exported
    pool.close()


def test_a_named_pool_counts_every_process_and_the_exporters_read_it(store, store_name, mp_ctx):
    run_procs(mp_ctx, pool_worker, [(store_name,)] * WORKERS)
    rows = {(n, lab.get("policy")): v for n, lab, v in metrics.samples(metrics.read(store))}
    assert rows[("sluicegate_pool_checkouts", "shared-counts")] == WORKERS * CHECKOUTS
    assert rows[("sluicegate_pool_created", "shared-counts")] == WORKERS  # one resource each
    assert rows[("sluicegate_pool_closed", "shared-counts")] == WORKERS
    assert rows[("sluicegate_counter_value", "done")] == WORKERS


def test_pool_waits_land_in_the_pool_s_wait_histogram(store):
    pool = sg.Pool(object, size=1, timeout=5.0, name="wait-hist", store=store)
    lease = pool.acquire()  # (a first checkout's creation may count as a short wait)
    before = histogram.read(store, "pool", "wait-hist", histogram.WAIT)
    n0, s0 = (before.count, before.sum) if before is not None else (0, 0.0)
    threading.Timer(0.05, lease.release).start()
    t0 = time.monotonic()
    with pool.checkout():
        pass
    waited = time.monotonic() - t0
    h = histogram.read(store, "pool", "wait-hist", histogram.WAIT)
    assert h is not None and h.count == n0 + 1 and 0.03 <= h.sum - s0 <= waited + 0.01
    pool.close()


def test_store_reclaimed_is_told_by_the_process_that_reclaimed(store_name):
    got: list[sg.Event] = []
    sg.on("store.reclaimed", got.append)
    s = sg.SharedStore(store_name + "-r", capacity=16)
    try:
        lim = sg.RateLimiter("idle-keys", "1/ms", store=s)  # a key is idle 1 ms after its call
        for i in range(16):
            lim.allow(f"old{i}")
        time.sleep(0.02)
        assert not got
        for i in range(16):
            lim.allow(f"new{i}")  # the store is full of idle keys: each takes one's slot
        assert sum(e.measurements["reclaimed"] for e in got) == 16
        assert got[-1].kind == "store" and got[-1].measurements["total"] == 16 and got[-1].pid == os.getpid()
        assert s.stats()["reclaimed"] == 16
        rows = {n: v for n, lab, v in metrics.samples(metrics.read(s)) if n == "sluicegate_store_reclaimed"}
        assert rows == {"sluicegate_store_reclaimed": 16}
    finally:
        sg.off("store.reclaimed", got.append)
        s.close()
        sg.SharedStore.unlink(store_name + "-r", missing_ok=True)

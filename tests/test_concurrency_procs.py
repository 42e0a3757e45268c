"""ConcurrencyLimiter across real processes (fork AND spawn): the cap is exact host-wide,
SIGKILLed holders' permits come back, pid + start time identify holders, AIMD is shared."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import note_peak, run_procs, wait_for

import sluicegate as sg
from sluicegate import _procident as pi

pytestmark = pytest.mark.timeout(60)



def _cap_worker(store_name: str, limit: int, iters: int) -> None:
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("db", limit, store=store)
    cur, peak, done = store.counter("cur"), store.counter("peak"), store.counter("done")
    for _ in range(iters):
        with cap.slot(timeout=30):
            note_peak(cur, peak)
            time.sleep(0.0005)
            cur.add(-1)
            done.add(1)


def test_processes_never_exceed_the_cap(mp_ctx, store, store_name):
    limit, nproc, iters = 3, 5, 40
    run_procs(mp_ctx, _cap_worker, [(store_name, limit, iters)] * nproc)
    assert store.counter("done").value == nproc * iters
    assert store.counter("cur").value == 0
    assert 1 <= store.counter("peak").value <= limit
    cap = sg.ConcurrencyLimiter("db", limit, store=store)
    assert cap.in_use == 0
    assert cap.stats()["granted"] == nproc * iters


def _hold_forever(store_name: str, limit: int, n: int) -> None:
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("db", limit, store=store)
    for _ in range(n):
        cap.acquire()
    store.counter("owner").add(pi.current_owner())
    store.counter("ready").add(1)
    time.sleep(60)



@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
def test_sigkilled_holder_permits_come_back(mp_ctx, store, store_name, reap):
    limit = 4
    p = mp_ctx.Process(target=_hold_forever, args=(store_name, limit, 3))
    p.start()
    try:
        wait_for(lambda: store.counter("ready").value == 1)
        cap = sg.ConcurrencyLimiter("db", limit, store=store)
        owner = store.counter("owner").value
        assert pi.owner_pid(owner) == p.pid and pi.owner_alive(owner)
        assert cap.in_use == 3
        mine = cap.acquire(block=False)
        assert cap.try_acquire() is None  # full, and the holder is alive: nothing is reclaimed
        os.kill(p.pid, signal.SIGKILL)
        if reap:
            p.join(10)
        else:  # not yet waited for: the holder is a zombie, which is dead too
            wait_for(lambda: pi.process_start(p.pid) is None)
        assert not pi.owner_alive(owner)
        got = [cap.acquire(timeout=1.0) for _ in range(3)]  # the next acquire finding it full reclaims
        assert cap.in_use == 4 and cap.stats()["reclaimed"] == 3
        assert all(pi.owner_pid(o) == os.getpid() for _, o, _ in cap._engine.holders())
        for g in got + [mine]:
            g.release()
        assert cap.in_use == 0
    finally:
        if p.is_alive():
            p.kill()
        p.join(10)


def _kill_loop_worker(store_name: str, limit: int) -> None:
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("db", limit, store=store)
    started = store.counter("started")
    started.add(1)
    while True:  # acquire/release forever until SIGKILLed at an arbitrary instruction
        with cap.slot(timeout=30):
            store.counter("loops").add(1)


def test_sigkill_at_random_points_never_leaks(mp_ctx, store, store_name):
    limit = 2
    procs = [mp_ctx.Process(target=_kill_loop_worker, args=(store_name, limit)) for _ in range(3)]
    for p in procs:
        p.start()
    try:
        wait_for(lambda: store.counter("loops").value > 300)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join(10)
        cap = sg.ConcurrencyLimiter("db", limit, store=store)
        held = [cap.acquire(timeout=2.0) for _ in range(limit)]  # everything comes back
        assert cap.in_use == limit
        for h in held:
            h.release()
        assert cap.in_use == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)


def _aimd_worker(store_name: str, drops: int) -> None:
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("ad", 8, store=store, adaptive=True, min_limit=2, max_limit=16, backoff=0.5)
    for _ in range(drops):
        cap.record(False)


def test_aimd_limit_is_shared(mp_ctx, store, store_name):
    cap = sg.ConcurrencyLimiter("ad", 8, store=store, adaptive=True, min_limit=2, max_limit=16, backoff=0.5)
    assert cap.limit == 8
    run_procs(mp_ctx, _aimd_worker, [(store_name, 1)])
    assert cap.limit == 4  # a drop in another process halves everyone's limit
    held = [cap.acquire() for _ in range(4)]
    assert cap.try_acquire() is None
    for _ in range(3):
        cap.record(True)
    assert cap.limit == 7
    run_procs(mp_ctx, _aimd_worker, [(store_name, 5)])
    assert cap.limit == 2  # floored at min_limit
    for h in held:
        h.release()
    assert cap.stats()["drops"] == 6


def _pickled_worker(cap: sg.ConcurrencyLimiter) -> None:
    # children start together on a 1-permit cap: each waits its turn (a non-blocking
    # acquire here would race the siblings, which is not what this test is about)
    with cap.slot(timeout=30):
        cap._store.counter("got").add(1)


def test_limiter_pickles_into_spawned_children(mp_ctx, store):
    cap = sg.ConcurrencyLimiter("pk", 1, store=store)
    run_procs(mp_ctx, _pickled_worker, [(cap,)] * 3)
    assert store.counter("got").value == 3


def _hold_until_go(store_name: str, limit: int) -> None:
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("db", limit, store=store)
    cur, peak, go = store.counter("cur"), store.counter("peak"), store.counter("go")
    with cap.slot(timeout=30):
        note_peak(cur, peak)
        t0 = time.monotonic()
        while go.value == 0 and time.monotonic() - t0 < 30:
            time.sleep(0.002)
        cur.add(-1)
    store.counter("done").add(1)


def test_cap_is_reached_exactly_and_queues_the_rest(mp_ctx, store, store_name):
    limit, nproc = 3, 6
    procs = [mp_ctx.Process(target=_hold_until_go, args=(store_name, limit)) for _ in range(nproc)]
    for p in procs:
        p.start()
    try:
        wait_for(lambda: store.counter("cur").value == limit)
        time.sleep(0.2)  # the other 3 keep polling; none of them may get in
        assert store.counter("cur").value == limit
        assert sg.ConcurrencyLimiter("db", limit, store=store).in_use == limit
        store.counter("go").add(1)
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
    assert store.counter("done").value == nproc
    assert store.counter("peak").value == limit

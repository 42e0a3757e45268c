"""Pools in many processes (fork AND spawn) share one host_limit: 8 processes, each with a
pool of size 10, never hold more than 20 resources in total (counted by a shared counter),
and a SIGKILLed holder's permits come back."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import note_peak, run_procs, wait_for

import sluicegate as sg

pytestmark = pytest.mark.timeout(90)

HOST_LIMIT = 20


class Conn:
    """A fake connection that counts itself in the store while it exists."""

    def __init__(self, store: sg.SharedStore) -> None:
        self.held = store.counter("held")
        note_peak(self.held, store.counter("peak"))
        self.open = True

    def close(self) -> None:
        assert self.open
        self.open = False
        self.held.add(-1)


def _pool_worker(store_name: str, threads: int, iters: int) -> None:
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("pg", HOST_LIMIT, store=store)
    pool = sg.Pool(lambda: Conn(store), size=10, close=Conn.close, host_limit=cap, timeout=60.0)
    done = store.counter("checkouts")
    errors = []

    def run() -> None:
        try:
            for _ in range(iters):
                with pool.checkout() as c:
                    assert c.open
                    time.sleep(0.0005)
                done.add(1)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    pool.close()
    assert not errors, errors
    assert pool.stats()["total"] == 0


def _hog(store_name: str, n: int) -> None:
    """Holds n resources of a host-limited pool, then loops until SIGKILLed."""
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("pg", HOST_LIMIT, store=store)
    pool = sg.Pool(object, size=10, host_limit=cap, timeout=60.0)
    leases = [pool.acquire() for _ in range(n)]
    store.counter("hog_ready").add(1)
    while True:
        for lease in leases[:1]:
            lease.release()
        leases[:1] = [pool.acquire()]



def test_eight_processes_never_hold_more_than_the_host_limit(mp_ctx, store, store_name):
    nproc, threads, iters = 8, 3, 25
    hog = mp_ctx.Process(target=_hog, args=(store_name, 4))
    hog.start()
    try:
        wait_for(lambda: store.counter("hog_ready").value == 1)
        procs = [mp_ctx.Process(target=_pool_worker, args=(store_name, threads, iters)) for _ in range(nproc)]
        for p in procs:
            p.start()
        wait_for(lambda: store.counter("checkouts").value > 50)
        os.kill(hog.pid, signal.SIGKILL)  # its 4 permits must come back to the others
        for p in procs:
            p.join(80)
        for p in procs:
            assert p.exitcode == 0, f"worker {p.pid} exited with {p.exitcode}"
    finally:
        for p in [hog]:
            if p.is_alive():
                p.kill()
            p.join(10)
    assert store.counter("checkouts").value == nproc * threads * iters
    assert store.counter("held").value == 0  # every pool closed every resource it created
    peak = store.counter("peak").value
    assert 1 <= peak <= HOST_LIMIT
    cap = sg.ConcurrencyLimiter("pg", HOST_LIMIT, store=store)
    cap.reclaim()
    assert cap.in_use == 0


def test_sigkilled_pool_holder_permits_come_back(mp_ctx, store, store_name):
    hog = mp_ctx.Process(target=_hog, args=(store_name, 8))
    hog.start()
    try:
        wait_for(lambda: store.counter("hog_ready").value == 1)
        cap = sg.ConcurrencyLimiter("pg", HOST_LIMIT, store=store)
        pool = sg.Pool(object, size=HOST_LIMIT, host_limit=cap)
        mine = [pool.acquire(block=False) for _ in range(HOST_LIMIT - 8)]
        with pytest.raises(sg.PoolExhausted, match="host limit"):
            pool.acquire(block=False)
        os.kill(hog.pid, signal.SIGKILL)
        hog.join(10)
        mine += [pool.acquire(timeout=2.0) for _ in range(8)]
        assert cap.in_use == HOST_LIMIT and pool.stats()["total"] == HOST_LIMIT
        for lease in mine:
            lease.release()
        pool.close()
        assert cap.in_use == 0
    finally:
        if hog.is_alive():
            hog.kill()
        hog.join(10)


def _plain_pool_worker(store_name: str) -> None:
    _pool_worker(store_name, 2, 10)


def test_workers_without_kill_exact_totals(mp_ctx, store, store_name):
    run_procs(mp_ctx, _plain_pool_worker, [(store_name,)] * 8)
    assert store.counter("checkouts").value == 8 * 2 * 10
    assert store.counter("held").value == 0
    assert 1 <= store.counter("peak").value <= HOST_LIMIT
    assert sg.ConcurrencyLimiter("pg", HOST_LIMIT, store=store).in_use == 0


def _saturating_worker(store_name: str, threads: int) -> None:
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("pg", HOST_LIMIT, store=store)
    pool = sg.Pool(lambda: Conn(store), size=10, close=Conn.close, host_limit=cap, timeout=60.0)
    go, done = store.counter("go"), store.counter("checkouts")
    errors = []

    def run() -> None:
        try:
            with pool.checkout():
                t0 = time.monotonic()
                while go.value == 0 and time.monotonic() - t0 < 60:
                    time.sleep(0.002)
            done.add(1)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    pool.close()
    assert not errors, errors


def test_eight_pools_saturate_the_host_limit_exactly(mp_ctx, store, store_name):
    """8 processes x 10 threads want 80 resources; exactly 20 exist at once, the rest wait."""
    nproc, threads = 8, 10
    procs = [mp_ctx.Process(target=_saturating_worker, args=(store_name, threads)) for _ in range(nproc)]
    for p in procs:
        p.start()
    try:
        wait_for(lambda: store.counter("held").value == HOST_LIMIT)
        time.sleep(0.3)  # 60 threads keep polling the cap; none may get a 21st resource
        assert store.counter("held").value == HOST_LIMIT
        store.counter("go").add(1)
        for p in procs:
            p.join(80)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(10)
    assert store.counter("checkouts").value == nproc * threads
    assert store.counter("held").value == 0
    assert store.counter("peak").value == HOST_LIMIT
    assert sg.ConcurrencyLimiter("pg", HOST_LIMIT, store=store).in_use == 0


def _child_uses_inherited_pool(pool: sg.Pool, store_name: str) -> None:
    store = sg.SharedStore(store_name)
    s = pool.stats()
    assert s["total"] == 0 and s["idle"] == 0 and s["in_use"] == 0, s
    with pool.checkout(timeout=5.0) as r:
        assert r.pid == os.getpid()  # a resource of its own, not the parent's
    store.counter("child_ok").add(1)


class _Res:
    def __init__(self) -> None:
        self.pid = os.getpid()


def test_forked_child_starts_with_an_empty_pool(store, store_name):
    import multiprocessing as mp

    cap = sg.ConcurrencyLimiter("pg", 4, store=store)
    pool = sg.Pool(_Res, size=2, host_limit=cap)
    held = pool.acquire()
    pool.acquire().release()
    assert pool.stats()["total"] == 2 and cap.in_use == 2
    p = mp.get_context("fork").Process(target=_child_uses_inherited_pool, args=(pool, store_name))
    p.start()
    p.join(30)
    assert p.exitcode == 0 and store.counter("child_ok").value == 1
    s = pool.stats()
    assert s["total"] == 2 and s["in_use"] == 1  # the parent's pool is untouched
    cap.reclaim()  # the child's permit went with the child; the parent's two stay
    assert cap.in_use == 2
    held.release()
    pool.close()
    assert cap.in_use == 0

"""Regression tests from the review of pools and the concurrency cap."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time

import pytest

import sluicegate as sg

pytestmark = pytest.mark.timeout(30)


def test_waiter_handed_a_resource_that_fails_its_check_gets_a_new_one():
    # A resource returned after a failed use is handed to the waiting thread, which checks
    # it (dirty), finds it bad and drops it.  The waiter must then create a replacement;
    # it must not sit outside the queue until its timeout.
    ids = itertools.count(1)
    p = sg.Pool(lambda: next(ids), size=1, check=lambda r: r != 1)
    lease = p.acquire()
    got: list[object] = []

    def waiter() -> None:
        t0 = time.monotonic()
        try:
            with p.checkout(timeout=2.0) as r:
                got.append((r, time.monotonic() - t0))
        except Exception as e:  # noqa: BLE001
            got.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 5
    while p.stats()["waiting"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    lease.release(failed=True)  # dirty: handed to the waiter, whose check rejects it
    t.join(5)
    assert len(got) == 1 and not isinstance(got[0], Exception), got
    r, waited = got[0]
    assert r == 2 and waited < 1.0


def test_async_cancel_during_check_does_not_leak_the_resource():
    async def main():
        ids = itertools.count(1)
        started = asyncio.Event()

        async def check(r: int) -> bool:
            started.set()
            await asyncio.sleep(10)
            return True

        pool = sg.AsyncPool(lambda: next(ids), size=1, check=check, check_window=0.0, timeout=1.0)
        async with pool.checkout():
            pass
        task = asyncio. create_task(pool.acquire())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        st = pool.stats()
        # the resource must be back (idle) or dropped; capacity must not be lost
        assert st["total"] == st["idle"] + st["in_use"], st
        lease = await pool.acquire(timeout=0.5)
        await lease.release()

    asyncio.run(main())


def test_async_cancel_while_closing_expired_idle_does_not_leak_capacity_or_permit(store):
    cap = sg.ConcurrencyLimiter("rv-cancel-close", limit=2, store=store)

    class Clock:
        t = 1000.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()

    async def main():
        ids = itertools.count(1)
        closing = asyncio.Event()

        async def close(r: int) -> None:
            closing.set()
            await asyncio.sleep(10)

        pool = sg.AsyncPool(lambda: next(ids), size=1, close=close, max_lifetime=5.0, jitter=0.0,
                            clock=clock, host_limit=cap, timeout=1.0)
        async with pool.checkout():
            pass
        clock.t += 10  # the idle resource has expired: the next checkout closes it and creates
        task = asyncio.create_task(pool.acquire())
        await closing.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        st = pool.stats()
        assert st["total"] == st["idle"] + st["in_use"], st
        assert cap.in_use == st["total"], (cap.in_use, st)

    asyncio.run(main())


def test_async_close_cancelled_midway_still_releases_host_permits(store):
    cap = sg.ConcurrencyLimiter("rv-close-permits", limit=3, store=store)

    async def main():
        ids = itertools.count(1)

        async def close(r: int) -> None:
            await asyncio.sleep(10)

        pool = sg.AsyncPool(lambda: next(ids), size=3, close=close, host_limit=cap)
        leases = [await pool.acquire() for _ in range(3)]
        for lease in leases:
            await lease.release()
        assert cap.in_use == 3
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.close(), 0.1)
        return pool

    asyncio.run(main())
    assert cap.in_use == 0


def test_fill_racing_close_does_not_leave_a_resource_and_permit_behind(store):
    cap = sg.ConcurrencyLimiter("rv-fill-close", limit=4, store=store)
    closed: list[int] = []
    gate = threading.Event()
    entered = threading.Event()
    ids = itertools.count(1)

    def create() -> int:
        r = next(ids)
        if r == 2:  # the refill after a discard: block until close() has run
            entered.set()
            gate.wait(5)
        return r

    p = sg.Pool(create, size=1, min_size=1, close=closed.append, host_limit=cap)
    lease = p.acquire()
    t = threading.Thread(target=lease.discard)  # drops #1, then refills to min_size
    t.start()
    assert entered.wait(5)
    p.close()
    gate.set()
    t.join(5)
    assert sorted(closed) == [1, 2] and cap.in_use == 0, (closed, cap.in_use, p.stats())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_cap_usable_in_a_child_forked_while_a_thread_held_its_condition(store):
    # a thread of the parent is inside _acquire's `with self._cond` (e.g. running reclaim)
    # at the moment of fork: the child inherits the condition's lock held forever
    cap = sg.ConcurrencyLimiter("rv-fork-cond", limit=1, store=store)
    hold, held = threading.Event(), threading.Event()

    def holder() -> None:
        with cap._cond:
            cap._engine.nwait += 1
            held.set()
            hold.wait(5)
            cap._engine.nwait -= 1

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            p = cap.acquire(timeout=1.0)
            p.release()  # nwait inherited as 1: _wake() takes the inherited lock
            q = cap.acquire(timeout=1.0)
            other = threading.Thread(target=lambda: cap.acquire(timeout=0.2))
            other.start()  # waits on the condition: must time out, not hang
            other.join(3)
            q.release()
            code = 0 if not other.is_alive() else 2
        finally:
            os._exit(code)
    hold.set()
    t.join(5)
    deadline = time.monotonic() + 8
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("child hung on the condition lock inherited through fork")
    assert os.waitstatus_to_exitcode(status) == 0


def test_stale_lease_of_a_reclaimed_resource_does_not_return_it_from_its_new_borrower():
    # A thread checks out and dies; its lease lives on (handed to other code).  The pool
    # reclaims the resource (after its check) and lends it to B.  A later release of the
    # stale lease must not take the resource back from B and lend it to a third borrower.
    ids = itertools.count(1)
    p = sg.Pool(lambda: next(ids), size=1, check=lambda r: True, timeout=2.0)
    box: dict[str, object] = {}
    t = threading.Thread(target=lambda: box.setdefault("lease", p.acquire()))
    t.start()
    t.join(5)
    with pytest.warns(sg.ResourceLeakWarning):
        b = p.acquire(timeout=2.0)
    assert b.resource == 1
    box["lease"].release()  # type: ignore[attr-defined]
    with pytest.raises(sg.PoolExhausted):
        p.acquire(block=False)  # resource 1 is still B's
    b.release()
    assert p.stats()["in_use"] == 0 and p.stats()["total"] == 1


def test_async_stale_lease_released_twice_does_not_return_it_from_its_new_borrower():
    # an async lease is only reclaimed when garbage-collected, so a stale lease comes
    # from releasing it twice: the second release must not free the next borrower's resource
    async def main():
        ids = itertools.count(1)
        pool = sg.AsyncPool(lambda: next(ids), size=1, check=lambda r: True, timeout=2.0)
        stale = await pool.acquire()
        await stale.release()
        b = await pool.acquire(timeout=2.0)
        assert b.resource == 1
        await stale.release()
        with pytest.raises(sg.PoolExhausted):
            await pool.acquire(block=False)
        await b.release()

    asyncio.run(main())


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt / gevent.Timeout raised inside a check."""


def test_check_interrupted_by_a_base_exception_does_not_leak_the_resource():
    ids = itertools.count(1)
    calls = []

    def check(r: int) -> bool:
        calls.append(r)
        if len(calls) == 1:
            raise _Interrupt
        return True

    p = sg.Pool(lambda: next(ids), size=1, check=check, check_window=0.0, timeout=0.5)
    with p.checkout():
        pass
    with pytest.raises(_Interrupt), p.checkout():
        pass
    st = p.stats()
    assert st["total"] == st["idle"] + st["in_use"], st
    with p.checkout() as r:
        assert r == 1 and calls == [1, 1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_async_pool_in_a_forked_child_does_not_reuse_the_parents_resources():
    # like Pool: the child must not share the parent's connections (one socket, two processes)
    ids = itertools.count(1)
    pool = sg.AsyncPool(lambda: next(ids), size=2)

    async def use() -> int:
        async with pool.checkout(timeout=1.0) as r:
            return r

    assert asyncio.run(use()) == 1
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            r = asyncio.run(use())
            code = 0 if r != 1 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child was lent the parent's resource"


def test_async_lease_taken_through_wait_for_is_not_reclaimed_while_held():
    # asyncio.wait_for(pool.acquire(), t) runs acquire() in a helper task that ends at once;
    # the pool takes that for borrower death and closes the caller's live resource.
    async def main():
        ids = itertools.count(1)
        closed: list[int] = []
        pool = sg.AsyncPool(lambda: next(ids), size=1, close=closed.append, timeout=2.0)
        lease = await asyncio.wait_for(pool.acquire(), 1.0)
        waiter = asyncio.create_task(pool.acquire(timeout=0.3))
        with pytest.raises(sg.PoolTimeout):
            await waiter
        assert closed == [] and lease.resource == 1
        await lease.release()

    asyncio.run(main())


def test_pool_garbage_collected_without_close_gives_its_host_permits_back(store):
    import gc

    cap = sg.ConcurrencyLimiter("rv-gc-pool", limit=2, store=store)
    ids = itertools.count(1)

    def make_and_drop() -> None:
        p = sg.Pool(lambda: next(ids), size=2, host_limit=cap)
        with p.checkout(), p.checkout():
            pass
        assert cap.in_use == 2

    make_and_drop()
    gc.collect()
    assert cap.in_use == 0


def test_async_pool_garbage_collected_without_close_gives_its_host_permits_back(store):
    import gc

    cap = sg.ConcurrencyLimiter("rv-gc-apool", limit=2, store=store)
    ids = itertools.count(1)

    async def make_and_drop() -> None:
        p = sg.AsyncPool(lambda: next(ids), size=2, host_limit=cap)
        async with p.checkout(), p.checkout():
            pass
        assert cap.in_use == 2

    asyncio.run(make_and_drop())
    gc.collect()
    assert cap.in_use == 0


def test_close_interrupted_during_checkout_does_not_leak_the_reservation_or_permits(store):
    cap = sg.ConcurrencyLimiter("rv-sync-close-int", limit=3, store=store)

    class Clock:
        t = 1000.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()
    ids = itertools.count(1)

    def close(r: int) -> None:
        raise _Interrupt

    p = sg.Pool(lambda: next(ids), size=2, close=close, max_lifetime=5.0, jitter=0.0, clock=clock,
                host_limit=cap, timeout=1.0)
    with p.checkout(), p.checkout():
        pass
    assert cap.in_use == 2
    clock.t += 10  # both idle resources expired: the next checkout closes them, then creates
    with pytest.raises(_Interrupt), p.checkout():
        pass
    st = p.stats()
    assert st["total"] == st["idle"] + st["in_use"], st
    assert cap.in_use == st["total"], (cap.in_use, st)

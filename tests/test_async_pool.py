"""AsyncPool: many concurrent tasks, FIFO waiters, timeouts and non-blocking mode, overflow,
validation, garbage-collected-lease reclaim, cancellation safety, create failures, close, host_limit."""

from __future__ import annotations

import asyncio
import gc
import itertools

import pytest
from models_pool import Clock

import sluicegate as sg

pytestmark = pytest.mark.timeout(60)


class AFactory:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.closed: list[int] = []
        self.fail_next = 0

    async def create(self) -> int:
        await asyncio.sleep(0)
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("db down")
        return next(self.ids)

    async def close(self, r: int) -> None:
        self.closed.append(r)


def run(coro):
    return asyncio.run(coro)


def test_many_concurrent_tasks_never_exceed_size_plus_overflow():
    async def main():
        f = AFactory()
        pool = sg.AsyncPool(f.create, close=f.close, size=5, max_overflow=3, timeout=30.0)
        cur = peak = done = 0

        async def task(i: int) -> None:
            nonlocal cur, peak, done
            async with pool.checkout() as r:
                assert isinstance(r, int)
                cur += 1
                peak = max(peak, cur)
                await asyncio.sleep(0.0005 * (i % 3))
                cur -= 1
            done += 1

        await asyncio.gather(*[task(i) for i in range(1000)])
        s = pool.stats()
        await pool.close()
        return peak, done, s, f

    peak, done, s, f = run(main())
    assert done == 1000 and peak == 8
    assert s["checkouts"] == 1000 and s["in_use"] == 0 and s["waiting"] == 0 and s["total"] == 8
    assert s["timeouts"] == 0 and s["mean_wait"] > 0
    assert sorted(f.closed) == list(range(1, 9))


def test_waiters_fifo_and_handoff():
    async def main():
        pool = sg.AsyncPool(AFactory().create, size=1, timeout=5.0)
        first = await pool.acquire()
        order: list[int] = []

        async def waiter(i: int) -> None:
            async with pool.checkout():
                order.append(i)
                await asyncio.sleep(0)

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(waiter(i)))
            while pool.stats()["waiting"] < i + 1:
                await asyncio.sleep(0)
        await first.release()
        with pytest.raises(sg.PoolExhausted):  # handed to the first waiter, not to a newcomer
            await pool.acquire(block=False)
        await asyncio.gather(*tasks)
        return order

    assert run(main()) == list(range(6))


def test_timeout_and_non_blocking():
    async def main():
        pool = sg.AsyncPool(AFactory().create, size=1, timeout=5.0)
        lease = await pool.acquire()
        with pytest.raises(sg.PoolExhausted):
            await pool.acquire(block=False)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(sg.PoolTimeout):
            async with pool.checkout(timeout=0.05):
                pass
        assert loop.time() - t0 >= 0.045
        s = pool.stats()
        assert s["timeouts"] == 1 and s["exhausted"] == 1 and s["waiting"] == 0
        await lease.release()
        async with pool.checkout(block=False) as r:
            return r

    assert run(main()) == 1


def test_cancelled_waiter_leaves_the_queue_and_loses_nothing():
    async def main():
        pool = sg.AsyncPool(AFactory().create, size=1, timeout=5.0)
        lease = await pool.acquire()
        t = asyncio.create_task(pool.acquire())
        while pool.stats()["waiting"] < 1:
            await asyncio.sleep(0)
        await lease.release()  # handed to t's future ...
        t.cancel()  # ... just as t is cancelled: it must pass the resource on
        with pytest.raises(asyncio.CancelledError):
            await t
        s = pool.stats()
        assert s["waiting"] == 0 and s["idle"] == 1 and s["in_use"] == 0
        async with pool.checkout(block=False) as r:
            return r

    assert run(main()) == 1


def test_overflow_reaped_and_lifetimes_with_fake_clock():
    async def main():
        f, clock = AFactory(), Clock()
        pool = sg.AsyncPool(f.create, close=f.close, size=1, max_overflow=2, overflow_ttl=5.0,
                            max_lifetime=100.0, jitter=0.0, clock=clock)
        leases = [await pool.acquire(block=False) for _ in range(3)]
        assert pool.stats()["overflow"] == 2
        for lease in leases:
            await lease.release()
        clock.t += 6.0
        assert await pool.maintain() == 2
        assert pool.stats()["total"] == 1
        clock.t += 100.0
        async with pool.checkout() as r:
            assert r == 4  # the survivor outlived max_lifetime: retired, a new one made
        return f.closed

    assert sorted(run(main())) == [1, 2, 3]


def test_validation_and_failed_use():
    async def main():
        f, clock = AFactory(), Clock()
        checked: list[int] = []

        async def check(r: int) -> bool:
            checked.append(r)
            return r != 1

        pool = sg.AsyncPool(f.create, close=f.close, size=1, check=check, check_window=0.5, clock=clock)
        async with pool.checkout() as r:
            assert r == 1
        clock.t += 0.1
        async with pool.checkout() as r:  # within the window: not checked
            assert r == 1 and checked == []
        clock.t += 1.0
        async with pool.checkout() as r:  # checked, fails, replaced
            assert r == 2
        with pytest.raises(RuntimeError):
            async with pool.checkout():
                raise RuntimeError("boom")
        async with pool.checkout() as r:  # dirty: checked even within the window
            assert r == 2
        return checked, f.closed

    checked, closed = run(main())
    assert checked == [1, 2] and closed == [1]


def test_lease_outliving_its_task_is_not_reclaimed():
    """A lease handed out of the task that acquired it (wait_for, gather, a task's
    result) is still held: only garbage collection of the lease means abandonment."""
    async def main():
        pool = sg.AsyncPool(AFactory().create, size=1, check=lambda r: True, timeout=2.0)
        keep = []

        async def acquirer() -> None:
            keep.append(await pool.acquire())

        await asyncio.create_task(acquirer(), name="acquirer-task")
        with pytest.raises(sg.PoolTimeout):
            async with pool.checkout(timeout=0.2):
                pass
        assert keep[0].resource == 1
        await keep[0].release()
        async with pool.checkout(block=False) as r:
            assert r == 1
        return pool.stats()

    s = run(main())
    assert s["reclaimed"] == 0 and s["in_use"] == 0 and s["idle"] == 1


def test_gc_lease_reclaim():
    async def main():
        pool = sg.AsyncPool(AFactory().create, size=1, check=lambda r: True)

        async def forget() -> None:
            await pool.acquire()

        await forget()
        gc.collect()
        with pytest.warns(sg.ResourceLeakWarning, match="garbage-collected"):
            async with pool.checkout(block=False) as r:
                return r

    assert run(main()) == 1


def test_create_failure_propagates_and_does_not_poison():
    async def main():
        f = AFactory()
        pool = sg.AsyncPool(f.create, size=1)
        f.fail_next = 1
        with pytest.raises(ConnectionError):
            await pool.acquire()
        assert pool.stats()["total"] == 0
        async with pool.checkout() as r:
            return r

    assert run(main()) == 1


def test_close_drains():
    async def main():
        f = AFactory()
        pool = sg.AsyncPool(f.create, close=f.close, size=2, timeout=5.0)
        a = await pool.acquire()
        b = await pool.acquire()
        w = asyncio.create_task(pool.acquire())
        while pool.stats()["waiting"] < 1:
            await asyncio.sleep(0)
        await b.release()  # handed to w
        lease_w = await w
        await lease_w.release()  # idle now
        await pool.close()
        assert f.closed == [2]
        await a.release()
        assert f.closed == [2, 1]
        with pytest.raises(sg.StoreClosed):
            await pool.acquire()

    run(main())


def test_host_limit_shared_with_sync_pool(store):
    cap = sg.ConcurrencyLimiter("pg", 3, store=store)

    async def main():
        sync_pool = sg.Pool(object, size=5, host_limit=cap)
        held = [sync_pool.acquire(block=False) for _ in range(2)]
        apool = sg.AsyncPool(AFactory().create, size=5, host_limit=cap, timeout=2.0)
        one = await apool.acquire(block=False)
        with pytest.raises(sg.PoolExhausted, match="host limit"):
            await apool.acquire(block=False)
        asyncio.get_running_loop().call_later(0.05, lambda: (held[0].release(), sync_pool.close()))
        two = await apool.acquire(timeout=2.0)  # waits (polling the cap) until the sync pool closes
        assert cap.in_use == 3
        await one.release()
        await two.release()
        held[1].release()
        await apool.close()

    run(main())
    assert cap.in_use == 0


def test_bad_arguments():
    with pytest.raises(sg.ConfigError, match="size"):
        sg.AsyncPool(AFactory().create, size=0)
    with pytest.raises(sg.ConfigError, match="strategy"):
        sg.AsyncPool(AFactory().create, size=1, strategy="lru")

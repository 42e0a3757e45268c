"""A permit frees its record exactly once, whoever releases it and in whatever order: the
with-block's exit racing permit.release() from another thread, a finaliser releasing it
inside the block, an async exit after a release. The owner word is the process's, so a
second free would free the record that another thread of this process took after the
first (a cap of one record makes that record the one taken again)."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading

import sluicegate as sg


def _race_exit_release_and_grab(cap: sg.ConcurrencyLimiter) -> sg.Permit | None:
    """Enter a slot, then at once: its exit, its release() from another thread, and a
    third thread taking the record the moment one of them frees it. The grabbed permit."""
    p = cap.slot()
    p.__enter__()
    go = threading.Barrier(3)
    got: list[sg.Permit] = []

    def exiter() -> None:
        go.wait()
        p.__exit__(None, None, None)

    def releaser() -> None:
        go.wait()
        p.release()

    def grabber() -> None:
        go.wait()
        while not got:
            q = cap.try_acquire()
            if q is not None:
                got.append(q)

    ts = [threading.Thread(target=f) for f in (exiter, releaser, grabber)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert not any(t.is_alive() for t in ts)
    assert not p.held and p.release() is False
    return got[0] if got else None


def test_exit_racing_release_from_another_thread_frees_one_record(store):
    cap = sg.ConcurrencyLimiter("once-race", limit=1, store=store)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for r in range(600):
            q = _race_exit_release_and_grab(cap)
            assert q is not None and q.held
            assert cap.in_use == 1, f"round {r}: the record taken after the first release was freed again"
            assert q.release() is True and cap.in_use == 0
    finally:
        sys.setswitchinterval(old)


def test_release_from_a_finaliser_inside_the_block_is_not_repeated_by_the_exit(store):
    cap = sg.ConcurrencyLimiter("once-final", limit=1, store=store)

    class Releases:  # in a reference cycle, so only the collector finalises it
        def __init__(self, permit: sg.Permit) -> None:
            self.permit = permit
            self.me = self

        def __del__(self) -> None:
            self.permit.release()

    with cap.slot() as p:
        Releases(p)
        gc.collect()
        assert not p.held and cap.in_use == 0
        q = cap.acquire(timeout=1)  # the same record, the same owner word
    assert q.held and cap.in_use == 1
    assert q.release() is True and cap.in_use == 0
    assert cap.stats()["held_here"] == 0


def test_async_exit_after_a_release_frees_nothing_more(store):
    cap = sg.ConcurrencyLimiter("once-async", limit=1, store=store, adaptive=True, min_limit=1, max_limit=1)

    async def main() -> sg.Permit:
        async with cap.slot_async(timeout=1) as p:
            assert p.release() is True
            q = cap.try_acquire()
            assert q is not None
        return q

    q = asyncio.run(main())
    assert q.held and cap.in_use == 1
    assert q.release() is True and cap.in_use == 0


def _release_into(p: sg.Permit, results: list[bool]) -> None:
    results.append(p.release())


def test_release_of_an_acquired_permit_from_two_threads_keeps_held_here_exact(store):
    cap = sg.ConcurrencyLimiter("once-held", limit=4, store=store)
    for _ in range(200):
        p = cap.acquire(timeout=1)
        keep = cap.acquire(timeout=1)
        assert cap.stats()["held_here"] == 2
        results: list[bool] = []
        ts = [threading.Thread(target=_release_into, args=(p, results)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        assert sorted(results) == [False, True]
        assert cap.stats()["held_here"] == 1 and cap.in_use == 1
        assert cap.release() is True  # this thread's remaining permit: keep
        assert not keep.held and cap.in_use == 0 and cap.stats()["held_here"] == 0

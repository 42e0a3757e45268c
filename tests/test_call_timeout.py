"""Timeouts: a sync call returns CallTimeout at the deadline while it goes on in its
worker thread (and finishes later); remaining() counts down inside it, in a thread and in
a task; deadlines nest (the earlier wins); worker threads are reused; an async call is
cancelled and an outer cancellation stays one; a forked child starts its own workers."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

import sluicegate as sg
from sluicegate import timeout as sgt


def test_a_sync_call_times_out_at_the_deadline_and_goes_on_in_its_thread():
    done = threading.Event()

    def slow() -> str:
        time.sleep(0.4)
        done.set()
        return "late"

    t0 = time.monotonic()
    with pytest.raises(sg.CallTimeout) as ei:
        sgt.call_with_timeout(0.1, slow)
    assert 0.09 <= time.monotonic() - t0 < 0.35 and ei.value.timeout == pytest.approx(0.1, abs=0.01)
    assert isinstance(ei.value, TimeoutError) and not done.is_set()
    assert done.wait(5)


def test_results_and_errors_come_back_from_the_thread():
    assert sgt.call_with_timeout(1.0, lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(KeyError, match="missing"):
        sgt.call_with_timeout(1.0, lambda: {}["missing"])


def test_remaining_counts_down_inside_a_sync_call():
    def look() -> tuple[float, float]:
        a = sg.remaining()
        time.sleep(0.05)
        return a, sg.remaining()

    a, b = sgt.call_with_timeout(1.0, look)
    assert 0.9 < a <= 1.0 and a - b >= 0.045
    assert sg.remaining() is None  # the caller's context is untouched


def test_deadlines_nest_and_the_earlier_wins():
    assert sg.remaining() is None
    with sg.deadline(5.0):
        assert 4.9 < sg.remaining() <= 5.0
        with sg.deadline(0.5):
            assert sg.remaining() <= 0.5
            with sg.deadline(10.0):  # a later one does not extend it
                assert sg.remaining() <= 0.5
                with pytest.raises(sg.CallTimeout):
                    sgt.call_with_timeout(3.0, time.sleep, 2.0)  # bounded by the 0.5 s deadline
        assert sg.remaining() > 4.0
    assert sg.remaining() is None
    with sg.deadline(None):
        assert sg.remaining() is None


def test_worker_threads_are_reused():
    before = threading.active_count()
    for _ in range(200):
        sgt.call_with_timeout(1.0, int, "1")
    assert threading.active_count() - before <= 2


def test_many_concurrent_calls_each_get_a_worker():
    barrier = threading.Barrier(8, timeout=5)
    results = []

    def caller() -> None:
        results.append(sgt.call_with_timeout(5.0, barrier.wait))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == list(range(8))  # all 8 waited at the barrier at once


def test_an_async_call_is_cancelled_and_remaining_counts_down_in_the_task():
    seen = []

    async def slow() -> None:
        seen.append(sg.remaining())
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> float:
        t0 = time.monotonic()
        with pytest.raises(sg.CallTimeout):
            await sgt.call_with_timeout_async(0.1, slow)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0
    assert 0.05 < seen[0] <= 0.1 and seen[1] == "cancelled"


def test_an_outer_cancellation_stays_a_cancellation():
    async def main() -> None:
        task = asyncio.ensure_future(sgt.call_with_timeout_async(5.0, asyncio.sleep, 5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_own_timeout_error_of_the_call_is_not_a_call_timeout():
    async def raises() -> None:
        raise TimeoutError("the call's own")

    with pytest.raises(TimeoutError, match="the call's own") as ei:
        asyncio.run(sgt.call_with_timeout_async(5.0, raises))
    assert not isinstance(ei.value, sg.CallTimeout)


@pytest.mark.parametrize("bad", [0, -1, "1", None, float("nan")])
def test_bad_timeouts_raise_config_error(bad):
    with pytest.raises(sg.ConfigError, match="timeout"):
        sgt.call_with_timeout(bad, int)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_starts_its_own_workers():
    sgt.call_with_timeout(1.0, int)  # the parent has a worker now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            ok = sgt.call_with_timeout(2.0, lambda: "child") == "child"
        except BaseException:
            ok = False
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)

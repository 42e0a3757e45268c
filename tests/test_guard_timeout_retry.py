"""Guard with a timeout and a retry: a sync timeout returns at the deadline while the call
goes on in its thread, and the breaker counts it as a failure; an async timeout cancels;
sg.remaining() inside the call; each retry takes a new cap permit and asks the breaker
afresh but takes no new rate token unless asked; CircuitOpen ends the retries."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import sluicegate as sg


def test_a_sync_timeout_returns_at_the_deadline_while_the_call_goes_on(store):
    finished = threading.Event()
    g = sg.Guard("to", timeout=0.2, store=store)

    def slow():
        time.sleep(0.6)
        finished.set()
        return "late"

    t0 = time.monotonic()
    with pytest.raises(sg.CallTimeout) as ei:
        g.call(slow)
    took = time.monotonic() - t0
    assert 0.18 <= took < 0.5, took
    assert isinstance(ei.value, TimeoutError) and ei.value.layer == "timeout" and ei.value.guard == "to"
    assert not finished.is_set()  # still running in its thread
    assert finished.wait(5)  # ... and it finishes on its own
    s = g.stats()
    assert s["timeouts"] == 1 and s["failed"] == 1


def test_a_timeout_is_a_failure_for_the_breaker_even_when_it_records_only_oserror(store):
    br = sg.CircuitBreaker("to-br", failure_threshold=2, record=(OSError,), store=store)
    g = sg.Guard("to-br", breaker=br, timeout=0.05, fallback=lambda e: e.layer, store=store)
    assert g.call(time.sleep, 0.3) == "timeout"
    assert g.call(time.sleep, 0.3) == "timeout"
    assert br.state == "open"
    assert g.call(time.sleep, 0) == "breaker"


def test_remaining_inside_the_call_counts_down_from_the_guard_s_timeout(store):
    g = sg.Guard("rem", timeout=2.0, store=store)
    assert sg.remaining() is None

    def look():
        first = sg.remaining()
        time.sleep(0.1)
        return first, sg.remaining()

    first, later = g.call(look)
    assert 1.8 < first <= 2.0 and first - later >= 0.09


def test_an_outer_deadline_bounds_the_guard_s_timeout(store):
    g = sg.Guard("outer", timeout=5.0, store=store)
    with sg.deadline(0.15):
        t0 = time.monotonic()
        with pytest.raises(sg.CallTimeout):
            g.call(time.sleep, 1.0)
    assert time.monotonic() - t0 < 0.6


def test_an_async_timeout_cancels_the_call(store):
    g = sg.Guard("ato", timeout=0.1, store=store)
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        t0 = time.monotonic()
        with pytest.raises(sg.CallTimeout):
            await g.call_async(slow)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0
    assert cancelled == [True]


def test_each_retry_takes_a_new_permit_but_not_a_new_rate_token(store):
    lim = sg.RateLimiter("rt-lim", "10/minute", store=store)
    cap = sg.ConcurrencyLimiter("rt-cap", 1, store=store)
    br = sg.CircuitBreaker("rt-br", failure_threshold=100, store=store)
    g = sg.Guard("rt", limiter=lim, key="k", cap=cap, breaker=br,
                 retry=sg.Retry(attempts=3, backoff=0.001, jitter="none"), store=store)
    held = []

    def flaky():
        held.append(cap.in_use)
        if len(held) < 3:
            raise OSError("once more")
        return "ok"

    assert g.call(flaky) == "ok"
    assert held == [1, 1, 1] and cap.in_use == 0
    assert lim.peek("k").remaining == 9  # one token for the call, not three
    s = g.stats()
    assert s["retries"] == 2 and s["succeeded"] == 1 and s["calls"] == 1


def test_retry_takes_token_charges_every_attempt(store):
    lim = sg.RateLimiter("rtt-lim", "10/minute", store=store)
    g = sg.Guard("rtt", limiter=lim, key="k", retry=sg.Retry(attempts=3, backoff=0.001, jitter="none"),
                 retry_takes_token=True, store=store)
    with pytest.raises(OSError):
        g.call(lambda: (_ for _ in ()).throw(OSError()))
    assert lim.peek("k").remaining == 7


def test_a_breaker_that_opens_ends_the_retries(store):
    br = sg.CircuitBreaker("ro-br", failure_threshold=2, store=store)
    g = sg.Guard("ro", breaker=br, retry=sg.Retry(attempts=10, backoff=0.001, jitter="none"), store=store)
    calls = []

    def down():
        calls.append(1)
        raise OSError("down")

    with pytest.raises(sg.CircuitOpen) as ei:
        g.call(down)
    assert len(calls) == 2 and ei.value.layer == "breaker"


def test_retry_events_say_the_attempt_and_the_delay(store):
    g = sg.Guard("rev", retry=sg.Retry(attempts=3, backoff=0.01, multiplier=2.0, jitter="none"),
                 fallback="fb", store=store)
    got: list[sg.Event] = []
    g.on("guard.retry", got.append)

    def down():
        raise OSError("down")

    assert g.call(down) == "fb"
    assert [(e.measurements["attempt"], round(e.measurements["delay"], 3)) for e in got] == [(1, 0.01), (2, 0.02)]
    assert all(e.measurements["error"] == "OSError" for e in got)


def test_retry_and_timeout_async(store):
    cap = sg.ConcurrencyLimiter("art-cap", 1, store=store)
    g = sg.Guard("art", cap=cap, timeout=0.1, retry=sg.Retry(attempts=3, backoff=0.001, jitter="none"),
                 store=store)
    tries = []

    async def slow_then_fast():
        tries.append(cap.in_use)
        if len(tries) == 1:
            await asyncio.sleep(2)
        return "fast"

    assert asyncio.run(g.call_async(slow_then_fast)) == "fast"
    assert tries == [1, 1] and cap.in_use == 0 and g.stats()["timeouts"] == 1


@pytest.mark.skipif(__import__("sys").version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
def test_async_with_guard_cancels_its_block_at_the_timeout_and_the_breaker_counts_it(store):
    br = sg.CircuitBreaker("awt-br", failure_threshold=1, record=(OSError,), store=store)
    g = sg.Guard("awt", breaker=br, timeout=0.1, store=store)

    async def main():
        t0 = time.monotonic()
        with pytest.raises(sg.CallTimeout) as ei:
            async with g:
                await asyncio.sleep(5)
        assert ei.value.layer == "timeout"
        return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0
    assert br.state == "open" and g.stats()["timeouts"] == 1


def test_a_sync_with_block_that_overruns_its_timeout_is_a_breaker_failure(store):
    br = sg.CircuitBreaker("swt-br", failure_threshold=1, store=store)
    g = sg.Guard("swt", breaker=br, timeout=0.05, store=store)
    with g:
        assert 0 < sg.remaining() <= 0.05
        time.sleep(0.1)
    assert br.state == "open"

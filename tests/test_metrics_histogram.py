"""Host-wide latency histograms in the store: fixed 1-2-5 buckets, summed over every
process by construction, read by any process without taking room; the breaker's
call-duration histogram (option histogram=) and the cap's wait histogram."""

from __future__ import annotations

import math
import threading
import time

import pytest
from conftest import run_procs

import sluicegate as sg
from sluicegate import _core, histogram
from sluicegate.histogram import BOUNDS, SLOTS, HistogramReading


def test_bounds_are_a_1_2_5_series_from_100us_to_50s():
    assert BOUNDS[0] == 0.0001 and BOUNDS[-1] == 50.0 and len(BOUNDS) == 18
    for a, b in zip(BOUNDS, BOUNDS[1:]):
        assert b / a in (2.0, 2.5) or math.isclose(b / a, 2.0) or math.isclose(b / a, 2.5)
    assert SLOTS == 5  # 18 bounds + Inf + sum = 20 words = 5 permanent slots


def test_values_land_in_the_bucket_whose_bound_is_le(store):
    h = histogram.histogram(store, "cap", "db", "wait")
    for ns in (0, 100_000, 100_001, 1_000_000, 50_000_000_000, 50_000_000_001, 10**15):
        assert h.record(ns)
    r = histogram.read(store, "cap", "db", "wait")
    assert r is not None and r.count == 7
    per = r.buckets()
    assert per[0] == 2  # 0 and exactly 100 us
    assert per[1] == 1  # 100 us + 1 ns
    assert per[3] == 1  # 1 ms
    assert per[len(BOUNDS) - 1] == 1  # exactly 50 s
    assert per[-1] == 2  # above 50 s: +Inf
    assert r.sum == pytest.approx((100_000 + 100_001 + 1_000_000 + 50_000_000_000 + 50_000_000_001 + 10**15) / 1e9)
    assert list(r.counts) == sorted(r.counts)  # cumulative


def test_a_reader_takes_no_room_and_reads_absent_as_none(store):
    before = store.stats()["permanent_used"]
    assert histogram.read(store, "breaker", "nobody", "calls") is None
    ro = _core.Histogram(store._table, 3, "nobody", "calls", False)
    assert ro.read()[0] == (0,) * (len(BOUNDS) + 1)
    with pytest.raises(sg.ConfigError, match="reading"):
        ro.record(1)
    assert store.stats()["permanent_used"] == before
    histogram.histogram(store, "breaker", "somebody", "calls").record_seconds(0.003)
    assert store.stats()["permanent_used"] == before + SLOTS


def test_a_full_store_drops_the_record_instead_of_failing_the_call():
    with sg.SharedStore(capacity=1, policies=1) as s:  # 24 permanent slots
        for i in range(4):
            assert histogram.histogram(s, "cap", f"c{i}", "wait").record(5)
        h = histogram.histogram(s, "cap", "c4", "wait")
        assert h.record(5) is False  # no room: nothing raised into the caller
        assert h.record(5) is False


def _record(name: str, n: int) -> None:
    s = sg.SharedStore(name)
    h = histogram.histogram(s, "cap", "shared", "wait")
    for i in range(n):
        h.record(1_000_000 * (i % 7))  # 0..6 ms
    s.close()


def test_every_process_adds_to_one_histogram(store, store_name, mp_ctx):
    n = 5000
    run_procs(mp_ctx, _record, [(store_name, n)] * 4)
    r = histogram.read(store, "cap", "shared", "wait")
    assert r is not None and r.count == 4 * n
    want_ms = 4 * sum(i % 7 for i in range(n))
    assert r.sum == pytest.approx(want_ms / 1000)


def test_threads_add_exactly(store):
    h = histogram.histogram(store, "cap", "threads", "wait")

    def work():
        for _ in range(20000):
            h.record(150_000)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    r = histogram.read(store, "cap", "threads", "wait")
    assert r is not None and r.count == 80000 and r.buckets()[1] == 80000


# -- the breaker's call durations --------------------------------------------------------


def test_breaker_histogram_counts_every_counted_call_with_its_duration(store):
    br = sg.CircuitBreaker("dur", store=store, histogram=True, failure_threshold=100)
    for d in (0.0, 0.003, 0.012):
        with br:
            time.sleep(d)
    with pytest.raises(ValueError), br:
        raise ValueError("a failure is a call too")
    with pytest.raises(KeyboardInterrupt), br:
        raise KeyboardInterrupt  # ignored (a BaseException): not counted, not timed
    br.call(lambda: None)
    tok = br.begin()
    tok.success()
    r = histogram.read(store, "breaker", "dur", "calls")
    calls, failures, *_ = br.totals()
    assert r is not None and r.count == calls == 6 and failures == 1
    assert r.counts[BOUNDS.index(0.002) - 1] <= 4  # at most the 4 instant ones within 1 ms
    assert r.counts[BOUNDS.index(0.01)] <= 5  # the 12 ms call is above 10 ms
    assert 0.015 <= r.sum < 1.0


def test_breaker_histogram_is_off_by_default_and_on_with_slow_call_timing(store):
    plain = sg.CircuitBreaker("plain", store=store)
    timed = sg.CircuitBreaker("timed", store=store, slow_call_duration=1.0)
    off = sg.CircuitBreaker("off", store=store, slow_call_duration=1.0, histogram=False)
    for br in (plain, timed, off):
        with br:
            pass
    assert histogram.read(store, "breaker", "plain", "calls") is None  # no room taken either
    assert histogram.read(store, "breaker", "off", "calls") is None
    r = histogram.read(store, "breaker", "timed", "calls")
    assert r is not None and r.count == 1
    assert plain.config["histogram"] is None and timed.config["histogram"] is None
    with pytest.raises(sg.ConfigError, match="histogram"):
        sg.CircuitBreaker("bad", store=store, histogram="yes")


def test_breaker_histogram_follows_a_live_reconfigure_and_reset_clears_it(store):
    br = sg.CircuitBreaker("live", store=store)
    other = sg.CircuitBreaker("live", store=store)  # another process's object, in effect
    with br:
        pass
    other.reconfigure(histogram=True)
    for _ in range(3):
        with br:
            pass
    r = histogram.read(store, "breaker", "live", "calls")
    assert r is not None and r.count == 3  # from the first call after the change
    br.reset()
    r = histogram.read(store, "breaker", "live", "calls")
    assert r is not None and r.count == 0 and r.sum == 0.0


def test_breaker_report_with_a_duration_records_it(store):
    br = sg.CircuitBreaker("raw", store=store, histogram=True)
    t = br.try_enter()
    br.report(t, 0, duration_ns=2_500_000)
    r = histogram.read(store, "breaker", "raw", "calls")
    assert r is not None and r.count == 1 and r.buckets()[5] == 1 and r.sum == pytest.approx(0.0025)


# -- the cap's waits ------------------------------------------------------------------------


def test_cap_records_how_long_a_blocked_acquire_waited(store):
    cap = sg.ConcurrencyLimiter("waits", limit=1, store=store)
    p = cap.acquire()
    threading.Timer(0.03, p.release).start()
    q = cap.acquire(timeout=5)  # waits about 30 ms
    q.release()
    with cap.slot():  # a free permit: no wait recorded
        pass
    r = histogram.read(store, "cap", "waits", "wait")
    assert r is not None and r.count == 1
    assert 0.02 <= r.sum < 2.0
    assert isinstance(r, HistogramReading) and r.buckets()[7] + r.buckets()[8] + r.buckets()[9] == 1

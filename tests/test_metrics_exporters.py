"""The exporters read every policy of a store through the directory, from any process:
the Prometheus collector's exposition (parsed with prometheus_client's parser) gives the
store's own counts, the OpenTelemetry instruments give the same numbers, a reader that
never made the policies sees them, a store that appears or is replaced is followed, and
reading takes no room in the store."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import unique_name
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import sluicegate as sg
from sluicegate import metrics
from sluicegate.contrib import otel
from sluicegate.contrib.prometheus import SluicegateCollector


def scrape(*stores) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of one exposition, parsed as Prometheus parses it."""
    reg = CollectorRegistry(auto_describe=False)
    c = SluicegateCollector(*stores)
    reg.register(c)
    try:
        text = generate_latest(reg).decode()
    finally:
        c.close()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(samples, name, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def _populate(store):
    lim = sg.RateLimiter("api", "3/minute", store=store)
    for _ in range(5):
        lim.allow("k")
    br = sg.CircuitBreaker("dep", store=store, failure_threshold=2, reset_timeout=60, histogram=True)
    with br:
        time.sleep(0.002)
    for _ in range(2):
        with pytest.raises(RuntimeError), br:
            raise RuntimeError
    with pytest.raises(sg.CircuitOpen), br:
        pass
    cap = sg.ConcurrencyLimiter("db", limit=2, store=store)
    held = cap.acquire()
    with pytest.raises(sg.ConcurrencyLimitExceeded):
        with cap.slot(timeout=0), cap.slot(timeout=0):
            pass
    return lim, br, cap, held


def test_prometheus_exposition_gives_the_stores_counts(store, store_name):
    _lim, br, cap, held = _populate(store)
    s = scrape(store_name)
    lab = {"store": store_name}
    assert val(s, "sluicegate_store_up", **lab) == 1
    assert val(s, "sluicegate_rate_decisions_total", **lab, policy="api", result="allowed") == 3
    assert val(s, "sluicegate_rate_decisions_total", **lab, policy="api", result="denied") == 2
    assert val(s, "sluicegate_breaker_calls_total", **lab, policy="dep", outcome="success") == 1
    assert val(s, "sluicegate_breaker_calls_total", **lab, policy="dep", outcome="failure") == 2
    assert val(s, "sluicegate_breaker_rejections_total", **lab, policy="dep") == 1
    assert val(s, "sluicegate_breaker_transitions_total", **lab, policy="dep") == 1
    assert val(s, "sluicegate_breaker_state", **lab, policy="dep", state="open") == 1
    assert val(s, "sluicegate_breaker_state", **lab, policy="dep", state="closed") == 0
    assert val(s, "sluicegate_breaker_call_duration_seconds_count", **lab, policy="dep") == 3
    assert val(s, "sluicegate_breaker_call_duration_seconds_bucket", **lab, policy="dep", le="+Inf") == 3
    assert val(s, "sluicegate_breaker_call_duration_seconds_bucket", **lab, policy="dep", le="0.001") <= 2
    assert val(s, "sluicegate_breaker_call_duration_seconds_sum", **lab, policy="dep") >= 0.002
    assert val(s, "sluicegate_cap_in_use", **lab, policy="db") == 1
    assert val(s, "sluicegate_cap_limit", **lab, policy="db") == 2
    assert val(s, "sluicegate_cap_acquired_total", **lab, policy="db") == 2
    assert val(s, "sluicegate_cap_timeouts_total", **lab, policy="db") == 1
    assert val(s, "sluicegate_cap_wait_seconds_count", **lab, policy="db") == 0
    assert val(s, "sluicegate_store_policies", **lab, kind="breaker") == 1
    st = store.stats()
    assert val(s, "sluicegate_store_slots_used", **lab) == st["used"] == 1
    assert val(s, "sluicegate_store_permanent_slots_used", **lab) == st["permanent_used"]
    assert val(s, "sluicegate_store_slots_capacity", **lab) == store.capacity
    held.release()
    assert val(scrape(store), "sluicegate_cap_in_use", **lab, policy="db") == 0
    assert br.stats()["calls"] == 3


def test_the_breaker_state_is_the_effective_one(store):
    br = sg.CircuitBreaker("lazy", store=store, failure_threshold=1, reset_timeout=0.05)
    with pytest.raises(RuntimeError), br:
        raise RuntimeError
    assert val(scrape(store), "sluicegate_breaker_state", store=store.name, policy="lazy", state="open") == 1
    time.sleep(0.08)  # open -> half_open is lazy: the reader applies it as any caller would
    s = scrape(store)
    assert val(s, "sluicegate_breaker_state", store=store.name, policy="lazy", state="half_open") == 1
    assert br.state == "half_open"


def test_a_reader_takes_no_room_in_the_store(store):
    _populate(store)
    before = store.stats()
    sg.CircuitBreaker("quiet", store=store)  # a breaker with no histogram: none is made for the reader
    before = store.stats()["permanent_used"]
    for _ in range(3):
        scrape(store)
    assert store.stats()["permanent_used"] == before


_MAKER = textwrap.dedent(
    """
    import sys, sluicegate as sg
    s = sg.SharedStore(sys.argv[1])
    lim = sg.RateLimiter("api", "10/minute", store=s)
    print(sum(lim.allow("k") for _ in range(25)))
    br = sg.CircuitBreaker("dep", store=s, slow_call_duration=5.0)
    for _ in range(7):
        with br:
            pass
    """
)


def test_a_sidecar_reads_policies_it_never_made(store_name):
    """The policies are made by another process that has exited; this one knows the name."""
    r = subprocess.run([sys.executable, "-c", _MAKER, store_name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "10"
    s = scrape(store_name)
    lab = {"store": store_name}
    assert val(s, "sluicegate_rate_decisions_total", **lab, policy="api", result="allowed") == 10
    assert val(s, "sluicegate_rate_decisions_total", **lab, policy="api", result="denied") == 15
    assert val(s, "sluicegate_breaker_calls_total", **lab, policy="dep", outcome="success") == 7
    # slow-call timing was on, so the histogram was kept at no extra clock reads
    assert val(s, "sluicegate_breaker_call_duration_seconds_count", **lab, policy="dep") == 7


def test_a_store_that_appears_later_and_one_that_is_replaced():
    name = unique_name("later")
    reader = metrics.Reader([name, f"shm://{name}"])
    try:
        got = {(f, tuple(sorted(labels.items()))): v for f, labels, v in metrics.samples(reader.read())}
        assert got == {("sluicegate_store_up", (("store", name),)): 0}
        with sg.SharedStore(name) as s:
            sg.RateLimiter("api", "1/minute", store=s).allow("k")
            first = {f: v for f, labels, v in metrics.samples(reader.read()) if f == "sluicegate_rate_decisions"
                     and labels["result"] == "allowed"}
            assert first == {"sluicegate_rate_decisions": 1}
        sg.SharedStore.unlink(name)  # the service restarts with a new store of that name
        with sg.SharedStore(name) as s:
            lim = sg.RateLimiter("api", "5/minute", store=s)
            for _ in range(3):
                lim.allow("k")
            got = [v for f, labels, v in metrics.samples(reader.read())
                   if f == "sluicegate_rate_decisions" and labels["result"] == "allowed"]
            assert got == [3, 3]  # both specs follow the new store
    finally:
        reader.close()
        sg.SharedStore.unlink(name, missing_ok=True)


def test_a_damaged_directory_entry_is_skipped_with_one_warning(store, caplog):
    sg.CircuitBreaker("broken", store=store)
    sg.RateLimiter("fine", "1/minute", store=store).allow("k")
    from sluicegate import _core

    entry = _core.dir_find(store._table, 3, "broken", False)
    entry.write(b"not json", 0)
    reader = metrics.Reader([store])
    with caplog.at_level("WARNING", logger="sluicegate.metrics"):
        for _ in range(2):
            names = {(f, labels.get("policy")) for f, labels, _v in metrics.samples(reader.read())}
            assert ("sluicegate_rate_decisions", "fine") in names
            assert not any(p == "broken" for _f, p in names)
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 1


def test_opentelemetry_readings_equal_the_prometheus_ones(store):
    _lim, _br, _cap, held = _populate(store)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    inst = otel.instrument(store, meter_provider=provider)
    try:
        data = reader.get_metrics_data()
        prom = scrape(store)
    finally:
        inst.close()
        provider.shutdown()
        held.release()
    by_otel = {fam.otel: fam for fam in metrics.FAMILIES.values()}
    seen = 0
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for point in m.data.data_points:
                    attrs = dict(point.attributes)
                    base, _, part = m.name.rpartition(".")
                    if m.name in by_otel:
                        fam = by_otel[m.name]
                        sample = fam.name + ("_total" if fam.type == metrics.COUNTER else "")
                    else:  # a histogram's .bucket / .count / .sum
                        fam = by_otel[base]
                        sample = f"{fam.name}_{part}"
                    assert prom[(sample, frozenset(attrs.items()))] == pytest.approx(point.value), (m.name, attrs)
                    seen += 1
    assert seen == len(prom)  # every Prometheus sample has its OpenTelemetry twin


def test_opentelemetry_reads_the_store_once_per_collection(store, monkeypatch):
    _populate(store)
    reads = []
    real = metrics.Reader.read

    def counting(self):
        reads.append(1)
        return real(self)

    monkeypatch.setattr(metrics.Reader, "read", counting)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    inst = otel.instrument(store, meter_provider=provider)
    try:
        reader.get_metrics_data()
        reader.get_metrics_data()
    finally:
        inst.close()
        provider.shutdown()
    assert len(reads) == 2


def test_concurrent_scrapes_agree(store):
    sg.RateLimiter("api", "1000/minute", store=store).allow("k")
    c = SluicegateCollector(store)
    results = []

    def go():
        for _ in range(20):
            results.append(sum(1 for _ in c.collect()))

    ts = [threading.Thread(target=go) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(set(results)) == 1


def test_a_closed_store_reports_down_instead_of_failing_the_scrape(store_name):
    mine = sg.SharedStore(store_name)
    sg.RateLimiter("api", "1/minute", store=mine).allow("k")
    reader = metrics.Reader([mine, store_name])
    mine.close()
    got = sorted((labels["store"], v) for f, labels, v in metrics.samples(reader.read()) if f == "sluicegate_store_up")
    reader.close()
    assert got == [(store_name, 0), (store_name, 1)]  # the closed object; the name attaches afresh

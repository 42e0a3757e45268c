"""Scraping a store of 1,000 policies (issue 10), against prometheus_client's
multiprocess mode collecting the same series written by 4 processes.

sluicegate's counters live in the store, summed over every process, so a scrape reads
each policy once from shared memory.  prometheus_client's multiprocess mode keeps one
file per process and metric type (PROMETHEUS_MULTIPROC_DIR) and merges them at every
scrape.  Both sides here produce the same exposition: the same families, label sets
and sample count, checked before timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import sluicegate as sg
from sluicegate import metrics

LIMITERS, BREAKERS, CAPS = 400, 300, 300  # 1,000 policies
WRITERS = 4
ROUNDS = 7

_WRITER = r"""
import json, os, sys
spec = json.load(open(sys.argv[1]))
from prometheus_client import Counter, Gauge, Histogram
for fam in spec:
    names = fam["labels"]
    if fam["type"] == "counter":
        m = Counter(fam["name"], fam["help"], names)
        for values, v in fam["samples"]:
            m.labels(*values).inc(v)
    elif fam["type"] == "gauge":
        m = Gauge(fam["name"], fam["help"], names, multiprocess_mode="livesum")
        for values, v in fam["samples"]:
            m.labels(*values).set(v)
    else:
        m = Histogram(fam["name"], fam["help"], names, buckets=fam["bounds"])
        for values, v in fam["samples"]:
            m.labels(*values).observe(v)
"""


def _store() -> sg.SharedStore:
    s = sg.SharedStore(capacity=1024, policies=LIMITERS + BREAKERS + CAPS + 24)
    for i in range(LIMITERS):
        sg.RateLimiter(f"lim{i}", "100/second", store=s).allow("k")
    for i in range(BREAKERS):
        br = sg.CircuitBreaker(f"br{i}", store=s, histogram=True)
        with br:
            pass
    for i in range(CAPS):
        with sg.ConcurrencyLimiter(f"cap{i}", limit=4, store=s).slot():
            pass
    return s


def _exposition(registry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def _count(text: str) -> tuple[int, int]:
    from prometheus_client.parser import text_string_to_metric_families

    fams = list(text_string_to_metric_families(text))
    return len(fams), sum(len(f.samples) for f in fams)


def _best(fn, rounds: int = ROUNDS) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _multiprocess_dir(reading: list[metrics.Metric], tmp: str) -> str:
    """WRITERS processes write the same families and label sets as the store's reading."""
    spec = []
    for m in reading:
        fam = m.family
        spec.append({
            "name": fam.name, "type": fam.type, "help": fam.help, "labels": list(fam.label_names),
            "bounds": list(m.samples[0][1].bounds) if fam.type == metrics.HISTOGRAM else None,  # type: ignore[union-attr]
            "samples": [(list(v), 0.001 if fam.type == metrics.HISTOGRAM else 1) for v, _ in m.samples],
        })
    path = os.path.join(tmp, "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    mpdir = os.path.join(tmp, "multiproc")
    os.mkdir(mpdir)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": mpdir}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, path], env=env) for _ in range(WRITERS)]
    for p in procs:
        assert p.wait(300) == 0
    return mpdir


def test_scrape_1000_policies_vs_prometheus_multiprocess(ratios):
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from sluicegate.contrib.prometheus import SluicegateCollector

    store = _store()
    ours = CollectorRegistry(auto_describe=False)
    collector = SluicegateCollector(store)
    ours.register(collector)
    reading = metrics.Reader([store]).read()
    with tempfile.TemporaryDirectory() as tmp:
        mpdir = _multiprocess_dir(reading, tmp)
        theirs = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(theirs, path=mpdir)
        ours_text, theirs_text = _exposition(ours), _exposition(theirs)
        (f1, n1), (f2, n2) = _count(ours_text), _count(theirs_text)
        assert (f1, n1) == (f2, n2), f"sluicegate {f1} families / {n1} samples, multiprocess {f2} / {n2}"
        files = len(os.listdir(mpdir))
        t_ours = _best(lambda: _exposition(ours))
        t_read = _best(lambda: collector.reader.read())
        t_theirs = _best(lambda: _exposition(theirs))
    store.close()
    print(f"\n  {LIMITERS + BREAKERS + CAPS} policies, {n1} samples in {f1} families")
    print(f"  sluicegate scrape (read + exposition): {t_ours * 1e3:.1f} ms "
          f"(the store reading alone {t_read * 1e3:.1f} ms)")
    print(f"  prometheus_client multiprocess, {WRITERS} writer processes ({files} files): {t_theirs * 1e3:.1f} ms")
    r = t_theirs / t_ours
    ratios.add(f"scrape of {LIMITERS + BREAKERS + CAPS} policies: multiprocess / sluicegate", r, "reported", True)

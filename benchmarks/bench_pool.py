"""Pool and ConcurrencyLimiter round trips vs peers measured in the same run.

Run:  PYTHONPATH=src python -m pytest benchmarks/bench_pool.py -q -p no:cacheprovider -s
Peers: queue.LifoQueue get+put, SQLAlchemy QueuePool connect+close (trivial creator),
threading.Semaphore (an in-process semaphore, for the cap's cost). Ratios are printed by
the last test (test_zz_ratios), computed from the medians of this run."""

from __future__ import annotations

import queue
import threading

import pytest

import sluicegate as sg

ROUNDS = 100
ITER = 1000
RESULTS: dict[str, tuple[float, float]] = {}  # name -> (min, median) seconds per round trip


def _run(benchmark, name: str, fn) -> None:
    benchmark.group = "pool-roundtrip" if "cap" not in name and "sem" not in name else "cap-roundtrip"
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=ITER, warmup_rounds=2)
    st = getattr(benchmark, "stats", None)
    if st is not None and getattr(st, "stats", None) is not None:
        RESULTS[name] = (st.stats.min, st.stats.median)


def test_sluicegate_pool_checkout(benchmark):
    pool = sg.Pool(object, size=10)
    with pool.checkout():
        pass

    def roundtrip() -> None:
        with pool.checkout():
            pass

    _run(benchmark, "sluicegate Pool checkout", roundtrip)


def test_sluicegate_named_pool_checkout(benchmark):
    """A named pool follows its directory entry: one load of the version word per checkout."""
    store = sg.SharedStore(capacity=1024)
    pool = sg.Pool(object, size=10, name="bench", store=store)
    with pool.checkout():
        pass

    def roundtrip() -> None:
        with pool.checkout():
            pass

    _run(benchmark, "sluicegate Pool checkout (named)", roundtrip)


def test_sluicegate_pool_acquire_release(benchmark):
    pool = sg.Pool(object, size=10)
    pool.acquire().release()

    def roundtrip() -> None:
        pool.acquire().release()

    _run(benchmark, "sluicegate Pool acquire+release", roundtrip)


def test_lifoqueue_get_put(benchmark):
    q: queue.LifoQueue[object] = queue.LifoQueue()
    q.put(object())

    def roundtrip() -> None:
        q.put(q.get())

    _run(benchmark, "queue.LifoQueue get+put", roundtrip)


class _FakeDBAPIConnection:
    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def cursor(self):  # pragma: no cover - never used
        raise NotImplementedError


def test_sqlalchemy_queuepool(benchmark):
    sa_pool = pytest.importorskip("sqlalchemy.pool")
    qp = sa_pool.QueuePool(_FakeDBAPIConnection, pool_size=10, max_overflow=0)
    qp.connect().close()

    def roundtrip() -> None:
        qp.connect().close()

    _run(benchmark, "SQLAlchemy QueuePool connect+close", roundtrip)


def test_cap_slot(benchmark):
    store = sg.SharedStore(capacity=1024)
    cap = sg.ConcurrencyLimiter("bench", 100, store=store)

    def roundtrip() -> None:
        with cap.slot():
            pass

    _run(benchmark, "ConcurrencyLimiter slot()", roundtrip)


def test_cap_try_acquire_release(benchmark):
    store = sg.SharedStore(capacity=1024)
    cap = sg.ConcurrencyLimiter("bench", 100, store=store)

    def roundtrip() -> None:
        cap.try_acquire().release()  # type: ignore[union-attr]

    _run(benchmark, "ConcurrencyLimiter try_acquire+release", roundtrip)


def test_threading_semaphore(benchmark):
    sem = threading.BoundedSemaphore(100)

    def roundtrip() -> None:
        with sem:
            pass

    _run(benchmark, "threading.BoundedSemaphore (in-process only)", roundtrip)


def test_zz_ratios():
    if not RESULTS:
        pytest.skip("benchmarks disabled: no timings to compare")
    base = RESULTS.get("queue.LifoQueue get+put")
    lines = ["", "round trip, min and median ns (min is robust on a busy machine); ratio to queue.LifoQueue:"]
    for name, (mn, med) in sorted(RESULTS.items(), key=lambda kv: kv[1][0]):
        r = f"{mn / base[0]:5.2f}x (median {med / base[1]:5.2f}x)" if base else "n/a"
        lines.append(f"  {name:<46} {mn * 1e9:7.0f} / {med * 1e9:7.0f} ns  {r}")
    sa = RESULTS.get("SQLAlchemy QueuePool connect+close")
    ours = RESULTS.get("sluicegate Pool checkout")
    if sa and ours:
        lines.append(f"  SQLAlchemy QueuePool is {sa[0] / ours[0]:.1f}x slower than sluicegate Pool checkout (min)")
    print("\n".join(lines))

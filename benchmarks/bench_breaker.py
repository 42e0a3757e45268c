"""Circuit breaker overhead vs pybreaker and circuitbreaker, measured in the same run.

    /work/venv/bin/pip install pybreaker circuitbreaker   # or: pip install .[bench]
    PYTHONPATH=src python -m pytest benchmarks/bench_breaker.py -q

Each measured function runs LOOP calls; the per-call figure is the minimum round
divided by LOOP (the minimum is the figure least disturbed by other load).
"Overhead" subtracts the bare no-op loop measured the same way. The final test
prints the ratios:
  * closed path: overhead(peer) / overhead(ours)   (targets: >= 5 pybreaker, >= 3 circuitbreaker)
  * open path:   cost(ours, rejected) / (cost(ours, closed) + cost(bare raise/except))  (target <= 1)
"""

from __future__ import annotations

import circuitbreaker
import pybreaker
import pytest

import sluicegate as sg

LOOP = 2000
ROUNDS = 40
RESULTS: dict[str, float] = {}


def noop() -> None:
    pass


@pytest.fixture(scope="module")
def store():
    s = sg.SharedStore(capacity=256)
    yield s
    s.close()


def measure(benchmark, key: str, fn) -> None:
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=3)
    RESULTS[key] = benchmark.stats.stats.min / LOOP * 1e9  # ns per call


def test_bare_noop(benchmark):
    def run():
        for _ in range(LOOP):
            noop()

    measure(benchmark, "bare", run)


def test_sluicegate_with_closed(benchmark, store):
    br = sg.CircuitBreaker("bench-closed", store=store)

    def run():
        for _ in range(LOOP):
            with br:
                noop()

    measure(benchmark, "ours_with", run)
    assert br.state == "closed"


def test_sluicegate_decorator_closed(benchmark, store):
    br = sg.CircuitBreaker("bench-deco", store=store)
    f = br(noop)

    def run():
        for _ in range(LOOP):
            f()

    measure(benchmark, "ours_decorator", run)


def test_pybreaker_call_closed(benchmark):
    pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    def run():
        for _ in range(LOOP):
            pb.call(noop)

    measure(benchmark, "pybreaker_call", run)


def test_pybreaker_calling_closed(benchmark):
    pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    def run():
        for _ in range(LOOP):
            with pb.calling():
                noop()

    measure(benchmark, "pybreaker_with", run)


def test_circuitbreaker_decorator_closed(benchmark):
    f = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=30)(noop)

    def run():
        for _ in range(LOOP):
            f()

    measure(benchmark, "circuitbreaker_decorator", run)


def test_bare_raise_except(benchmark):
    exc = sg.CircuitOpen

    def run():
        for _ in range(LOOP):
            try:
                raise exc("circuit breaker 'x' rejected the call (open)", retry_after=1.5, name="x")
            except exc:
                pass

    measure(benchmark, "bare_raise", run)


def test_bare_raise_plain_exception(benchmark):
    def run():
        for _ in range(LOOP):
            try:
                raise ValueError("x")
            except ValueError:
                pass

    measure(benchmark, "bare_raise_plain", run)


def test_sluicegate_with_open(benchmark, store):
    br = sg.CircuitBreaker("bench-open", store=store, reset_timeout=3600.0)
    br.force_open()
    exc = sg.CircuitOpen

    def run():
        for _ in range(LOOP):
            try:
                with br:
                    noop()
            except exc:
                pass

    measure(benchmark, "ours_open", run)


def test_sluicegate_with_open_tripped(benchmark, store):
    br = sg.CircuitBreaker("bench-tripped", store=store, failure_threshold=1, reset_timeout=3600.0)
    try:
        with br:
            raise OSError
    except OSError:
        pass
    assert br.state == "open"
    exc = sg.CircuitOpen

    def run():
        for _ in range(LOOP):
            try:
                with br:
                    noop()
            except exc:
                pass

    measure(benchmark, "ours_open_tripped", run)


def test_summary(capsys):
    r = RESULTS
    need = {
        "bare",
        "ours_with",
        "ours_decorator",
        "pybreaker_call",
        "pybreaker_with",
        "circuitbreaker_decorator",
        "bare_raise",
        "bare_raise_plain",
        "ours_open",
        "ours_open_tripped",
    }
    if not need <= r.keys():
        pytest.skip("run the whole file (the summary needs every measurement)")
    bare = r["bare"]
    ov = {
        k: r[k] - bare
        for k in ("ours_with", "ours_decorator", "pybreaker_call", "pybreaker_with", "circuitbreaker_decorator")
    }
    lines = [
        "",
        "circuit breaker overhead per call (ns, min of rounds, bare no-op loop subtracted):",
        *(f"  {k:26s} {v:8.1f}" for k, v in ov.items()),
        f"  bare no-op loop step       {bare:8.1f}",
        "closed path ratios (peer overhead / sluicegate `with` overhead):",
        f"  pybreaker.call          {ov['pybreaker_call'] / ov['ours_with']:6.1f}x   (target >= 5)",
        f"  pybreaker.calling()     {ov['pybreaker_with'] / ov['ours_with']:6.1f}x",
        f"  circuitbreaker deco     {ov['circuitbreaker_decorator'] / ov['ours_with']:6.1f}x   (target >= 3)",
        (f"  circuitbreaker deco vs our decorator {ov['circuitbreaker_decorator'] / ov['ours_decorator']:6.1f}x"),
        "open path (rejection) vs closed path + bare raise/except of CircuitOpen:",
        (
            f"  forced_open  {r['ours_open']:7.1f} ns vs {r['ours_with'] + r['bare_raise'] - bare:7.1f} ns"
            f"  ratio {(r['ours_open']) / (r['ours_with'] + r['bare_raise'] - bare):5.2f}   (target <= 1)"
        ),
        (
            f"  tripped open {r['ours_open_tripped']:7.1f} ns vs {r['ours_with'] + r['bare_raise'] - bare:7.1f} ns"
            f"  ratio {(r['ours_open_tripped']) / (r['ours_with'] + r['bare_raise'] - bare):5.2f}   (target <= 1)"
        ),
        "  (our rejection builds CircuitOpen without running its Python __init__; against raising a",
        "   plain ValueError instead, the cheapest raise there is:)",
        (
            f"  forced_open  {r['ours_open']:7.1f} ns vs {r['ours_with'] + r['bare_raise_plain'] - bare:7.1f} ns"
            f"  ratio {(r['ours_open']) / (r['ours_with'] + r['bare_raise_plain'] - bare):5.2f}"
        ),
    ]
    with capsys.disabled():
        print("\n".join(lines))

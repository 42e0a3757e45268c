"""Core: a shared counter's add() from Python against a bare Python method call."""

from __future__ import annotations

import sluicegate as sg

N = 200_000


class _Noop:
    def add(self, n: int = 1) -> None:
        pass


def _loop(f):
    def run() -> None:
        for _ in range(N):
            f(1)

    return run


def test_bare_method_call(benchmark):
    benchmark.pedantic(_loop(_Noop().add), rounds=15, iterations=1)


def test_counter_add(benchmark):
    with sg.SharedStore(capacity=64) as s:
        benchmark.pedantic(_loop(s.counter("c").add), rounds=15, iterations=1)


def test_counter_add_ratio(ratios):
    """counter.add() costs at most 3x a bare Python method call (issue 2)."""
    with sg.SharedStore(capacity=64) as s:
        add, noop = s.counter("c").add, _Noop().add
        empty = ratios.per_call(lambda: None, N)
        t_add = ratios.per_call(lambda: add(1), N) - empty
        t_noop = ratios.per_call(lambda: noop(1), N) - empty
    r = t_add / t_noop
    print(f"\n  counter.add {t_add * 1e9:.1f} ns, bare method {t_noop * 1e9:.1f} ns (loop overhead removed)")
    ratios.add("counter.add / bare method call", r, "<= 3", r <= 3)
    assert r <= 3

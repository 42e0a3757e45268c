"""Guard overhead vs the same parts called by hand, and vs Python resilience peers, in
the same run.

    pip install .[bench]
    python -m pytest benchmarks/bench_guard.py -q -s

Targets (issue 11):
  * a Guard with limiter + cap + breaker, closed path: at most 1.3x calling the three by
    hand (`lim.allow`, `with cap.slot()`, `with br`);
  * reported beside peers: tenacity's retry wrapper with no retry taken, pybreaker's
    closed breaker, and the Guard with a retry (none taken) on top.
Every figure subtracts the bare loop (a lambda calling a no-op) measured the same way."""

from __future__ import annotations

import pybreaker
import pytest
import tenacity

import sluicegate as sg

N = 20000


def noop() -> None:
    pass


@pytest.fixture(scope="module")
def parts():
    store = sg.SharedStore(capacity=1024)
    lim = sg.RateLimiter("bench-guard", "1000000000/second", store=store)
    cap = sg.ConcurrencyLimiter("bench-guard", 1000, store=store)
    br = sg.CircuitBreaker("bench-guard", store=store)
    yield store, lim, cap, br
    store.close()


def test_guard_closed_path_against_its_parts_by_hand(ratios, parts):
    store, lim, cap, br = parts
    guard = sg.Guard("bench-guard", limiter=lim, key="k", cap=cap, breaker=br, store=store)
    slot, allow, call = cap.slot, lim.allow, guard.call

    def by_hand() -> None:
        if not allow("k"):
            raise sg.RateLimited()
        with slot():
            with br:
                noop()

    empty = ratios.per_call(noop, N)
    t_hand = ratios.per_call(by_hand, N) - empty
    t_guard = ratios.per_call(lambda: call(noop), N) - empty
    print(f"\n  limiter + cap + breaker: by hand {t_hand * 1e9:.0f} ns, Guard.call {t_guard * 1e9:.0f} ns")
    r = t_guard / t_hand
    ratios.add("Guard(limiter+cap+breaker).call / the three by hand", r, "<= 1.3", r <= 1.3)
    assert guard.stats()["succeeded"] >= N


def test_guard_beside_python_resilience_peers(ratios, parts):
    store, lim, cap, br = parts
    retrying = tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential())(noop)
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    guard_br = sg.Guard("bench-guard-br", breaker=br, store=store)
    guard_all = sg.Guard("bench-guard-all", limiter=lim, key="k", cap=cap, breaker=br,
                         retry=sg.Retry(attempts=3), store=store)
    call_br, call_all = guard_br.call, guard_all.call
    empty = ratios.per_call(noop, N)
    t_tenacity = ratios.per_call(retrying, N) - empty
    t_pyb = ratios.per_call(lambda: pyb.call(noop), N) - empty
    t_br = ratios.per_call(lambda: call_br(noop), N) - empty
    t_all = ratios.per_call(lambda: call_all(noop), N) - empty
    print(f"\n  tenacity retry (none taken) {t_tenacity * 1e9:.0f} ns; pybreaker closed {t_pyb * 1e9:.0f} ns; "
          f"Guard(breaker) {t_br * 1e9:.0f} ns; Guard(limiter+cap+breaker+retry) {t_all * 1e9:.0f} ns")
    r = t_pyb / t_br
    ratios.add("pybreaker.call / Guard(breaker).call", r, ">= 3", r >= 3)
    r = t_tenacity / t_all
    ratios.add("tenacity retry alone / Guard(4 layers + retry)", r, ">= 1", r >= 1)

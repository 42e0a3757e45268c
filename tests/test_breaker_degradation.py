"""Breaker degradation by severity: closed -> degraded when the window's failure rate
reaches degradation_threshold, admitting a fraction that shrinks with the rate (light,
medium, heavy); back to closed below 3/4 of the threshold; still open when the trip rule
fires.  br.degradation reports the level (and the recovery ramp's), stats() and health()
say it, and across 4 real processes (fork and spawn) every process sees the same level and
together they admit its fraction (within a stated bound)."""

from __future__ import annotations

import math

import pytest
from conftest import run_procs

import sluicegate as sg

OPTS = dict(failure_threshold=None, failure_rate=0.5, minimum_calls=10, window=60.0,
            degradation_threshold=0.1, degradation_levels=(0.75, 0.5, 0.25))


def feed(br: sg.CircuitBreaker, ok: int, failed: int) -> None:
    for outcome, n in ((0, ok), (1, failed)):
        for _ in range(n):
            t = br.try_enter()
            assert t, "admitted while feeding"
            br.report(t, outcome)


def test_the_failure_rate_moves_the_breaker_through_the_levels_and_back(store):
    br = sg.CircuitBreaker("sev", store=store, seed=3, **OPTS)
    feed(br, 9, 0)
    assert br.state == "closed" and br.degradation is None
    feed(br, 0, 1)  # 1 of 10: at the threshold
    assert br.state == "degraded"
    assert br.degradation == sg.Degradation("light", 0.75, "severity")
    br.force_close()
    feed(br, 6, 4)  # 40%: (0.4 - 0.1) / (0.5 - 0.1) = 0.75 of the way to the trip rate
    assert br.degradation.level == "heavy" and br.degradation.admitted == 0.25
    br.force_close()
    feed(br, 7, 3)  # 30%: half way
    assert br.degradation.level == "medium"


def test_recovery_needs_the_rate_below_three_quarters_of_the_threshold(store):
    br = sg.CircuitBreaker("rec", store=store, seed=5, **{**OPTS, "degradation_levels": (1.0,)})
    feed(br, 9, 1)
    assert br.state == "degraded"
    feed(br, 1, 0)  # 1 of 11 = 9.1%: below the threshold, above 7.5%
    assert br.state == "degraded"
    feed(br, 3, 0)  # 1 of 14 = 7.1%
    assert br.state == "closed" and br.degradation is None


def test_the_trip_rule_still_opens_a_degraded_breaker(store):
    br = sg.CircuitBreaker("trip", store=store, seed=7, **{**OPTS, "degradation_levels": (1.0,)})
    feed(br, 8, 2)
    assert br.state == "degraded"
    for _ in range(8):  # failures until 10 of 18 >= 50% (each admitted: the level admits all)
        br.report(br.try_enter(), 1)
    assert br.state == "open"


def test_shed_calls_raise_circuit_open_with_a_retry_after(store):
    br = sg.CircuitBreaker("shed", store=store, seed=11, ignore=(LookupError,),
                           **{**OPTS, "degradation_levels": (0.5,)})
    feed(br, 9, 1)
    shed = 0
    for _ in range(200):
        try:
            with br:
                raise KeyError("ignored: the window stays")
        except KeyError:
            pass
        except sg.CircuitOpen as e:
            shed += 1
            assert 0 < e.retry_after <= 6.0  # the window's bucket: 60 s / 10
    assert 60 < shed < 140  # half of 200, within 5 sigma
    st = br.stats()
    assert (st["state"], st["degradation"], st["admitted"]) == ("degraded", "light", 0.5)


def test_state_changes_are_told_and_health_names_the_level(store):
    br = sg.CircuitBreaker("told", store=store, seed=13, **OPTS)
    seen = []
    br.on("breaker.state_change", lambda ev: seen.append((ev.measurements["old"], ev.measurements["new"])))
    feed(br, 8, 2)
    assert seen[-1] == ("closed", "degraded")
    (ph,) = [p for p in store.health().policies if p.name == "told"]
    assert ph.status == "degraded" and "light" in ph.reasons[0] and "75%" in ph.reasons[0]


def test_the_recovery_ramp_reports_its_level_too(store):
    br = sg.CircuitBreaker("ramp", store=store, failure_threshold=1, reset_timeout=0.01, degraded=True,
                           degraded_step=30.0, seed=1)
    feed(br, 0, 1)
    import time

    time.sleep(0.03)
    feed(br, 1, 0)  # the probe succeeds: the ramp's first step
    assert br.degradation == sg.Degradation("heavy", 0.25, "recovery")


@pytest.mark.parametrize("kw, match", [
    (dict(failure_rate=0.2, degradation_threshold=0.3), "below failure_rate"),
    (dict(degradation_threshold=1.0), "degradation_threshold"),
    (dict(degradation_threshold=0.1, degradation_levels=(0.25, 0.5)), "less at each level"),
    (dict(degradation_threshold=0.1, degradation_levels=()), "1 to 3"),
    (dict(degradation_threshold=0.1, degradation_levels=(0.5, 0.4, 0.3, 0.2)), "1 to 3"),
])
def test_bad_degradation_options_raise_config_error(store, kw, match):
    with pytest.raises(sg.ConfigError, match=match):
        sg.CircuitBreaker("bad", store=store, **kw)


WORKERS, TRIES = 4, 500


def worker(store_name: str) -> None:
    store = sg.SharedStore(store_name)
    br = sg.CircuitBreaker("procs", store=store, **OPTS)  # unseeded: each process draws its own
    level = br.degradation
    admitted = 0
    for _ in range(TRIES):
        t = br.try_enter()
        if t:
            admitted += 1
            br.report(t, 2)  # ignored: the window (and so the level) stays as it is
    store.counter("admitted").add(admitted)
    store.counter(f"level-{level.level if level else None}").add(1)


def test_every_process_sees_the_level_and_together_they_admit_its_fraction(store, store_name, mp_ctx):
    br = sg.CircuitBreaker("procs", store=store, seed=17, **OPTS)
    feed(br, 7, 3)  # 30%: medium, half admitted
    assert br.degradation.level == "medium"
    run_procs(mp_ctx, worker, [(store_name,)] * WORKERS)
    assert store.counter("level-medium").value == WORKERS
    n = WORKERS * TRIES
    admitted = store.counter("admitted").value
    assert abs(admitted - n * 0.5) <= 5 * math.sqrt(n * 0.25)  # binomial(2000, 0.5): within 5 sigma

"""The C breaker state machine against the pure-Python model, under a fake clock.

A Hypothesis RuleBasedStateMachine draws a configuration (trip rules, backoff,
jitter, probes, degraded levels, adaptive throttling), then interleaves calls
entering, calls reporting success / failure / ignore with durations (out of order
and after transitions), clock advances, admin actions and fault-injection
switches, and late reports (made with a clock read before a stall, up to seconds
earlier), and checks after every step that the core and the model agree exactly:
tickets, rejection reasons and retry_after, the packed state word, totals and the
rolling window."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from models_breaker import MS, BreakerModel, mix

import sluicegate as sg
from sluicegate import _core

_STORE = sg.SharedStore(capacity=1 << 15, policies=8192)
_names = itertools.count()

START_NS = 1_000 * 1_000_000_000  # fake store time starts at 1000 s


configs = st.fixed_dictionaries(
    {
        "failure_threshold": st.one_of(st.none(), st.integers(1, 4)),
        "window": st.sampled_from([0.5, 1.0, 2.0]),
        "buckets": st.integers(1, 5),
        "reset_timeout": st.sampled_from([0.1, 0.25, 1.0]),
        "failure_rate": st.one_of(st.none(), st.sampled_from([0.25, 0.5, 1.0])),
        "minimum_calls": st.integers(1, 4),
        "slow_call_duration": st.one_of(st.none(), st.sampled_from([0.01, 0.05])),
        "slow_call_rate": st.sampled_from([0.5, 1.0]),
        "half_open_calls": st.integers(1, 3),
        "probe_timeout": st.sampled_from([0.2, 0.5]),
        "backoff_multiplier": st.sampled_from([1.0, 1.5, 2.0]),
        "max_reset_timeout": st.sampled_from([None, 2.0]),
        "jitter": st.sampled_from([0.0, 0.2]),
        "degraded": st.sampled_from([False, True, (0.5,)]),
        "degraded_step": st.sampled_from([None, 0.1]),
        "adaptive": st.booleans(),
        "adaptive_k": st.sampled_from([1.0, 2.0]),
        "adaptive_max_reject": st.sampled_from([0.5, 0.9, 1.0]),
        "degradation_threshold": st.sampled_from([None, None, 0.1, 0.2]),
        "degradation_levels": st.sampled_from([(0.75, 0.5, 0.25), (0.5,), (0.9, 0.1)]),
        "seed": st.integers(0, 2**32),
    }
)

dt_ms = st.sampled_from([0, 1, 3, 10, 40, 99, 100, 101, 250, 400, 1000, 2100])
durations = st.sampled_from([0, 5 * MS, 10 * MS, 49 * MS, 50 * MS, 200 * MS])
probs = st.sampled_from([0, 0, 1 << 30, 1 << 31, 1 << 32])


class BreakerMachine(RuleBasedStateMachine):
    @initialize(cfg=configs)
    def setup(self, cfg):
        self.now = START_NS
        # a fresh store and a fixed name per example: the jitter seed derives from the
        # name, so replays of an example must see the same name to behave the same
        self.store = sg.SharedStore(capacity=64)
        self.br = sg.CircuitBreaker("model", store=self.store, **cfg)
        self.model = BreakerModel(dict(self.br._config), self.br.rng_state)
        self.tickets: list[tuple[int, int]] = []  # (ticket, time it entered)
        self.admin_budget = 2  # admin actions and fault switches are sticky: keep them rare
        self.fault_budget = 2

    def teardown(self):
        if hasattr(self, "store"):
            self.store.close()

    # ---- time ------------------------------------------------------------------
    @rule(ms=dt_ms, extra_us=st.integers(0, 999))
    def advance(self, ms, extra_us):
        self.now += ms * MS + extra_us * 1000

    # ---- calls ------------------------------------------------------------------
    @rule()
    def enter(self):
        got = self.br.try_enter(self.now)
        want = self.model.enter(self.now)
        assert got == want, (hex(got), hex(want))
        if got:
            self.tickets.append((got, self.now))
        else:
            assert self.br.last_rejection == (self.model.last_reason, self.model.last_retry_ns)

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), outcome=st.sampled_from([0, 0, 1, 1, 2]), duration=durations)
    def exit(self, data, outcome, duration):
        i = data.draw(st.integers(0, len(self.tickets) - 1))
        ticket, _ = self.tickets.pop(i)
        self.br.report(ticket, outcome, duration, self.now)
        self.model.exit(ticket, outcome, duration, self.now)

    @precondition(lambda self: self.tickets)
    @rule(
        data=st.data(),
        outcome=st.sampled_from([0, 1, 1, 2]),
        lag_ms=st.sampled_from([1, 100, 499, 500, 999, 1000, 1500, 2100, 5000]),
    )
    def late_exit(self, data, outcome, lag_ms):
        """A report made with a clock read lag_ms ago (but after the call entered),
        as from a process that stalled between reading its clock and recording."""
        i = data.draw(st.integers(0, len(self.tickets) - 1))
        ticket, entered = self.tickets.pop(i)
        at = max(entered, self.now - lag_ms * MS)
        self.br.report(ticket, outcome, 0, at)
        self.model.exit(ticket, outcome, 0, at)

    @rule(
        outcome=st.sampled_from([0, 1, 1, 2]),
        others=st.sampled_from([0, 1, 1, 2]),
        windows=st.sampled_from([0.5, 1, 1.5, 2]),
        n=st.integers(0, 3),
    )
    def stalled_call(self, outcome, others, windows, n):
        """A call enters and reads the clock, then its process stalls for `windows`
        windows while n other calls report, spread over the stall; it then records
        with the old clock."""
        t0 = self.now
        got = self.br.try_enter(t0)
        want = self.model.enter(t0)
        assert got == want, (hex(got), hex(want))
        stall = int(windows * self.model.cfg["nbuckets"] * self.model.cfg["bucket_ns"])
        for j in range(n):
            self.now = t0 + stall * (j + 1) // n
            self._calls(others, 0, 1)
        self.now = t0 + stall
        if got:
            self.br.report(got, outcome, 0, t0)
            self.model.exit(got, outcome, 0, t0)

    def _calls(self, outcome, duration, n):
        for _ in range(n):
            got = self.br.try_enter(self.now)
            want = self.model.enter(self.now)
            assert got == want, (hex(got), hex(want))
            if got:
                self.br.report(got, outcome, duration, self.now)
                self.model.exit(got, outcome, duration, self.now)
            else:
                assert self.br.last_rejection == (self.model.last_reason, self.model.last_retry_ns)

    @rule(outcome=st.sampled_from([0, 1, 2]), duration=durations, n=st.integers(1, 4))
    def calls(self, outcome, duration, n):
        """n calls, each entering and reporting at once (the common pattern)."""
        self._calls(outcome, duration, n)

    @rule(n=st.integers(1, 5))
    def failing_calls(self, n):
        self._calls(1, 0, n)

    @rule(n=st.integers(1, 5))
    def good_calls(self, n):
        self._calls(0, 0, n)

    @rule(extra_ms=st.sampled_from([0, 1, 50]))
    def wait_out_phase(self, extra_ms):
        """Jump to just past the end of the current open / probe / degraded phase."""
        m = self.model
        m.poll(self.now)
        if m.state == 1:
            end = m.phase_ns() + m.open_ns(m.consec, m.gen)
        elif m.state == 2:
            end = m.phase_ns() + m.cfg["probe_timeout_ns"]
        elif m.state == 3:
            end = m.phase_ns() + m.cfg["level_ns"] * (1 + (self.now - m.phase_ns()) // m.cfg["level_ns"])
        else:
            return
        self.now = max(self.now, end + extra_ms * MS)

    @rule()
    def state(self):
        assert self.br.state_at(self.now) == self.model.state_at(self.now)

    # ---- admin -----------------------------------------------------------------------
    @precondition(lambda self: self.admin_budget > 0)
    @rule(to=st.sampled_from(["closed", "forced_open", "disabled"]), clear=st.booleans())
    def admin(self, to, clear):
        self.admin_budget -= 1
        self.br.set_state(to, clear, self.now)
        self.model.set_state(to, clear, self.now)

    @precondition(lambda self: self.fault_budget > 0)
    @rule(reject=probs, fail=probs, lat=probs)
    def faults(self, reject, fail, lat):
        self.fault_budget -= 1
        self.br._engine.set_faults(reject, fail, lat, 7 * MS)
        self.model.fault = [reject, fail, lat, 7 * MS]

    # ---- agreement --------------------------------------------------------------------
    @invariant()
    def same_state(self):
        if not hasattr(self, "br"):
            return
        event(f"state {self.model.state_word()[0]}")
        assert self.br.state_word() == self.model.state_word()
        assert self.br.totals() == self.model.totals()
        assert self.br.rng_state == self.model.rng

    @invariant()
    def same_window(self):
        if not hasattr(self, "br"):
            return
        # window() polls first: poll the model identically
        got = self.br.window(self.now)
        self.model.poll(self.now)
        assert got == self.model.window(self.now)


BreakerMachine.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerModel = BreakerMachine.TestCase


def test_mix_matches_core():
    for x in [0, 1, 2**63, 2**64 - 1, 12345678901234567]:
        assert _core.breaker_mix(x) == mix(x)


@pytest.mark.parametrize("consec", [1, 2, 3, 8, 255])
def test_open_duration_matches_model(consec):
    br = sg.CircuitBreaker(
        f"od-{next(_names)}",
        store=_STORE,
        reset_timeout=1.0,
        backoff_multiplier=2.0,
        max_reset_timeout=10.0,
        jitter=0.1,
    )
    model = BreakerModel(dict(br._config), 1)
    for gen in range(0, 50, 7):
        got = br.open_ns(consec, gen)
        assert got == model.open_ns(consec, gen)
        base = min(10**9 * 2 ** (consec - 1), 10 * 10**9)
        assert base * 0.9 - 1 <= got <= base * 1.1 + 1


def test_degradation_readings_match_the_model():
    """br.degradation (the engine's reading) against the model's, through a degradation."""
    store = sg.SharedStore(capacity=64)
    try:
        br = sg.CircuitBreaker("deg", store=store, failure_threshold=None, failure_rate=0.5, minimum_calls=4,
                               degradation_threshold=0.2, seed=9)
        model = BreakerModel(dict(br._config), br.rng_state)
        now = START_NS
        for outcome in (0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0):
            got, want = br.try_enter(now), model.enter(now)
            assert got == want
            if got:
                br.report(got, outcome, 0, now)
                model.exit(got, outcome, 0, now)
            assert br._engine.degradation(now) == model.degradation(now)
            now += 7 * MS
    finally:
        store.close()

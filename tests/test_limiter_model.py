"""Every algorithm against its pure-Python reference model, under a fake clock.

Hypothesis draws rates, bursts, and sequences of check / peek / refund / reset calls
with costs and time jumps; each call goes through the compiled core with an explicit
store time (ns), and every Decision field must equal the model's."""

from __future__ import annotations

import itertools

import pytest
from conftest import unique_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models_limiter import FixedWindowModel, GcraModel, MultiRateModel, SlidingWindowModel

import sluicegate as sg

_names = itertools.count()


@pytest.fixture(scope="module")
def mstore():
    name = unique_name("lm")
    s = sg.SharedStore(name, capacity=1 << 14, policies=8192)
    yield s
    s.close()
    sg.SharedStore.unlink(name, missing_ok=True)


KEYS = ["a", "b", "user:42", "ключ"]

PERIODS_NS = [1_000_000, 7_000_000, 1_000_000_000, 3_000_000_000, 60_000_000_000]
WINDOW_PERIODS_NS = [1_000_000, 7_000_000, 1_000_000_000, 60_000_000_000]


def op_strategy(max_cost: int, period_ns: int):
    key = st.sampled_from(KEYS)
    cost = st.integers(1, max(1, max_cost))
    jump = st.one_of(
        st.integers(0, period_ns // 50 + 1),
        st.integers(0, 3 * period_ns),
        st.integers(0, 400 * period_ns),  # at most ~60 ops: stays far below window-index wraparound
        st.just(0),
    )
    return st.one_of(
        st.tuples(st.just("check"), key, cost),
        st.tuples(st.just("check"), key, cost),
        st.tuples(st.just("check"), key, cost),
        st.tuples(st.just("peek"), key, cost),
        st.tuples(st.just("refund"), key, cost),
        st.tuples(st.just("reset"), key, st.just(0)),
        st.tuples(st.just("time"), st.just(""), jump),
    )


def model_for(algorithm: str, rate: sg.Rate, burst: int | None):
    if algorithm == "token_bucket":
        interval = -(-rate.period_ns // rate.limit)
        return GcraModel(burst if burst is not None else rate.limit, interval)
    if algorithm == "fixed_window":
        return FixedWindowModel(rate.limit, rate.period_ns)
    return SlidingWindowModel(rate.limit, rate.period_ns)


def run_against_model(lim: sg.RateLimiter, model, ops, t0: int) -> None:
    now = t0
    for op, key, arg in ops:
        if op == "time":
            now += arg
        elif op == "check":
            got = lim._engine.check_at(key, arg, now)
            want = model.decide(key, arg, now, True)
            assert_same(got, want, op, key, arg, now)
        elif op == "peek":
            got = lim._engine.peek_at(key, arg, now)
            want = model.decide(key, arg, now, False)
            assert_same(got, want, op, key, arg, now)
        elif op == "refund":
            lim._refund_at(key, arg, now)
            model.refund(key, arg, now)
        elif op == "reset":
            lim._engine.reset_at(key, now)
            model.reset(key)
    # the final state of every key agrees too
    for key in KEYS:
        assert_same(lim._engine.peek_at(key, 1, now), model.decide(key, 1, now, False), "final peek", key, 1, now)


def assert_same(got, want, *ctx) -> None:
    assert (got.allowed, got.limit, got.remaining) == (want.allowed, want.limit, want.remaining), ctx
    assert got.retry_after == want.retry_after_ns / 1e9, (ctx, got, want)
    assert got.reset_after == want.reset_after_ns / 1e9, (ctx, got, want)


SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@st.composite
def gcra_case(draw):
    limit = draw(st.integers(1, 12))
    period = draw(st.sampled_from(PERIODS_NS))
    burst = draw(st.one_of(st.none(), st.integers(1, 15)))
    b = burst if burst is not None else limit
    ops = draw(st.lists(op_strategy(min(b, 4), period), max_size=60))
    t0 = draw(st.integers(10**9, 10**9 + 3 * period))
    return limit, period, burst, ops, t0


@st.composite
def gcra_wrap_case(draw):
    """Store time crossing 2**56 ns (~834 days; a file-backed store can get there):
    the core keeps the tat modulo 2**56 and must still agree with the unbounded model."""
    limit, period, burst, ops, _ = draw(gcra_case())
    t0 = draw(st.integers(2**56 - 4 * period, 2**56 + period))
    return limit, period, burst, ops, t0


@st.composite
def window_case(draw):
    limit = draw(st.integers(1, 12))
    period = draw(st.sampled_from(WINDOW_PERIODS_NS))
    ops = draw(st.lists(op_strategy(min(limit, 4), period), max_size=60))
    t0 = draw(st.integers(10**9, 10**9 + 3 * period))
    return limit, period, ops, t0


@SETTINGS
@given(gcra_case())
def test_token_bucket_matches_model(mstore, case):
    limit, period, burst, ops, t0 = case
    rate = sg.Rate._from_ns(limit, period)
    lim = sg.RateLimiter(f"g{next(_names)}", rate, burst=burst, store=mstore)
    run_against_model(lim, model_for("token_bucket", rate, burst), ops, t0)


@SETTINGS
@given(gcra_wrap_case())
def test_token_bucket_matches_model_across_payload_wraparound(mstore, case):
    limit, period, burst, ops, t0 = case
    rate = sg.Rate._from_ns(limit, period)
    lim = sg.RateLimiter(f"gw{next(_names)}", rate, burst=burst, store=mstore)
    run_against_model(lim, model_for("token_bucket", rate, burst), ops, t0)


@SETTINGS
@given(window_case())
def test_fixed_window_matches_model(mstore, case):
    limit, period, ops, t0 = case
    rate = sg.Rate._from_ns(limit, period)
    lim = sg.RateLimiter(f"f{next(_names)}", rate, algorithm="fixed_window", store=mstore)
    run_against_model(lim, model_for("fixed_window", rate, None), ops, t0)


@SETTINGS
@given(window_case())
def test_sliding_window_matches_model(mstore, case):
    limit, period, ops, t0 = case
    rate = sg.Rate._from_ns(limit, period)
    lim = sg.RateLimiter(f"s{next(_names)}", rate, algorithm="sliding_window", store=mstore)
    run_against_model(lim, model_for("sliding_window", rate, None), ops, t0)


@st.composite
def multi_case(draw):
    algorithm = draw(st.sampled_from(["token_bucket", "fixed_window", "sliding_window"]))
    periods = WINDOW_PERIODS_NS if algorithm != "token_bucket" else PERIODS_NS
    n = draw(st.integers(2, 3))
    rates = [sg.Rate._from_ns(draw(st.integers(1, 10)), draw(st.sampled_from(periods))) for _ in range(n)]
    max_cost = min(r.limit for r in rates)
    shortest = min(r.period_ns for r in rates)
    ops = draw(st.lists(op_strategy(min(max_cost, 3), shortest), max_size=50))
    t0 = draw(st.integers(10**9, 10**9 + 3 * shortest))
    return algorithm, rates, ops, t0


@SETTINGS
@given(multi_case())
def test_multi_rate_matches_model(mstore, case):
    algorithm, rates, ops, t0 = case
    lim = sg.RateLimiter(f"m{next(_names)}", rates, algorithm=algorithm, store=mstore)
    model = MultiRateModel([model_for(algorithm, r, None) for r in rates])
    run_against_model(lim, model, ops, t0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    algorithm=st.sampled_from(["token_bucket", "fixed_window", "sliding_window"]),
    limit=st.integers(1, 50),
    keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=80),
    cost=st.integers(1, 3),
    multi=st.booleans(),
)
def test_allow_many_equals_sequential_allow(mstore, algorithm, limit, keys, cost, multi):
    """The batch path decides exactly like the same calls made one by one."""
    cost = min(cost, limit)
    rate = [f"{limit}/day", f"{limit + 3}/week"] if multi else f"{limit}/day"
    a = sg.RateLimiter(f"bm{next(_names)}", rate, algorithm=algorithm, store=mstore)
    b = sg.RateLimiter(f"bs{next(_names)}", rate, algorithm=algorithm, store=mstore)
    got = a.allow_many(keys, cost=cost)
    want = [b.allow(k, cost) for k in keys]
    assert got.dtype == bool and got.tolist() == want

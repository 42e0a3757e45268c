"""The adaptive rate limiter (algorithm="adaptive"): a token bucket whose one rate, shared
by every process, moves between min_rate and rate by AIMD on feedback.  Against its
model under a fake clock (Hypothesis: decisions, successes, failures, time); across 4
real processes (fork and spawn) every success moves the one shared rate, and failures
cut it once per cooldown host-wide (the control, one limiter per process, cuts in each);
a Guard gives it each call's outcome; validation and reconfiguration."""

from __future__ import annotations

import itertools

import pytest
from conftest import run_procs, unique_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models_limiter import AdaptiveModel

import sluicegate as sg
from sluicegate.limiter import _adaptive_engine_args

_names = itertools.count()


@pytest.fixture(scope="module")
def mstore():
    name = unique_name("la")
    s = sg.SharedStore(name, capacity=1 << 12, policies=2048)
    yield s
    s.close()
    sg.SharedStore.unlink(name, missing_ok=True)


def model_of(lim: sg.RateLimiter) -> AdaptiveModel:
    cfg = lim.config
    rate = sg.Rate.parse(cfg["rate"][0])
    burst = cfg["burst"] if cfg["burst"] is not None else rate.limit
    return AdaptiveModel(burst, *_adaptive_engine_args([rate], cfg))


@st.composite
def case(draw):
    limit = draw(st.integers(1, 20))
    top = sg.Rate(limit, draw(st.sampled_from([0.1, 1.0, 60.0])))
    low = sg.Rate(1, top.period * draw(st.integers(1, limit)) / limit)  # slower by up to limit: one call fits
    opts = dict(min_rate=str(low), decrease=draw(st.sampled_from([0.1, 0.5, 0.9])),
                cooldown=draw(st.sampled_from([0.0, 0.01, 1.0])),
                increase=draw(st.one_of(st.none(), st.floats(0.001, 50.0))))
    op = st.one_of(
        st.tuples(st.just("check"), st.sampled_from("ab"), st.integers(1, 3)),
        st.tuples(st.just("ok"), st.just(""), st.integers(1, 30)),
        st.tuples(st.just("fail"), st.just(""), st.just(1)),
        st.tuples(st.just("time"), st.just(""), st.integers(0, 3 * top.period_ns // max(1, limit))),
    )
    return top, opts, draw(st.lists(op, max_size=50))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case())
def test_the_adaptive_limiter_matches_its_model(mstore, c):
    top, opts, ops = c
    if sg.Rate.parse(opts["min_rate"]).limit / sg.Rate.parse(opts["min_rate"]).period > top.limit / top.period:
        return
    lim = sg.RateLimiter(f"a{next(_names)}", top, algorithm="adaptive", store=mstore,
                         **{k: v for k, v in opts.items() if v is not None})
    model = model_of(lim)
    eng = lim._engine
    now = 10**12
    for op, key, n in ops:
        if op == "time":
            now += n
        elif op == "check":
            cost = min(n, lim.max_cost)
            got, want = eng.check_at(key, cost, now), model.decide(key, cost, now, True)
            wait = float("inf") if want.retry_after_ns < 0 else want.retry_after_ns / 1e9
            assert (got.allowed, got.remaining, got.retry_after) == (want.allowed, want.remaining, wait), \
                (op, key, now)
        else:
            for _ in range(n):
                assert eng.feedback(op == "ok", now) == model.feedback(op == "ok", now)
        assert eng.interval_ns() == model.interval


def test_a_cut_slows_every_key_frees_no_call_and_successes_speed_it_up_again(store):
    lim = sg.RateLimiter("slow", "10/second", algorithm="adaptive", min_rate="1/second", decrease=0.5,
                         cooldown=0.0, store=store)
    eng, now = lim._engine, 10**12
    assert [eng.check_at("k", 1, now).allowed for _ in range(6)] == [True] * 6
    eng.feedback(False, now)
    assert lim.rate_now == pytest.approx(5.0)
    # the bucket holds 1 s of calls at any rate: 0.6 s owed leaves 0.4 s, two calls at 5/s (not four)
    assert [eng.check_at("k", 1, now).allowed for _ in range(3)] == [True, True, False]
    assert eng.check_at("k", 1, now).retry_after == pytest.approx(0.2)  # one call every 0.2 s now
    for _ in range(500):
        eng.feedback(True, now)
    assert lim.rate_now == 10.0  # capped at rate


def worker(store_name: str, shared: bool, oks: int, fails: int) -> None:
    store = sg.SharedStore(store_name) if shared else sg.SharedStore()
    lim = sg.RateLimiter("shared-rate", "1000/second", algorithm="adaptive", min_rate="10/second",
                         increase=100.0, cooldown=3600.0, store=store)
    for _ in range(fails):
        lim.feedback(False)
    for _ in range(oks):
        lim.feedback(True)
    if not shared:  # tell the parent what this process's own limiter ended at
        sg.SharedStore(store_name).counter("private-cuts").add(1 if lim.rate_now < 1000.0 else 0)


def test_four_processes_move_one_rate(store, store_name, mp_ctx):
    run_procs(mp_ctx, worker, [(store_name, True, 0, 5)] * 4)
    lim = sg.RateLimiter("shared-rate", "1000/second", algorithm="adaptive", min_rate="10/second",
                         increase=100.0, cooldown=3600.0, store=store)
    assert lim.rate_now == 500.0  # 20 failures, one cut: the cooldown is host-wide
    run_procs(mp_ctx, worker, [(store_name, True, 50, 0)] * 4)
    model = model_of(lim)
    model.gcra.T = model.gcra.tau = 0
    model._set(500.0)
    for _ in range(200):
        model.feedback(True, 0)
    assert lim._engine.interval_ns() == model.interval  # every one of the 200 successes, exactly


def test_control_one_limiter_per_process_cuts_in_each(store, store_name, mp_ctx):
    run_procs(mp_ctx, worker, [(store_name, False, 0, 5)] * 4)
    assert store.counter("private-cuts").value == 4


def test_a_guard_gives_the_adaptive_limiter_each_outcome(store):
    lim = sg.RateLimiter("g-adapt", "100/second", algorithm="adaptive", min_rate="1/second", cooldown=0.0,
                         decrease=0.5, store=store)
    g = sg.Guard("g-adapt", limiter=lim, key="k", fallback="fb", store=store)

    def down():
        raise OSError("down")

    assert g.call(down) == "fb"
    assert lim.rate_now == 50.0
    before = lim.rate_now
    g.call(lambda: "ok")
    assert lim.rate_now > before
    lim.allow("k")  # a refusal by the limiter itself is not the dependency's failure:
    for _ in range(200):
        g.call(lambda: "ok")
    rate = lim.rate_now
    assert g.stats()["rejected_limiter"] > 0 and lim.rate_now == rate


def test_reconfigure_clamps_the_current_rate_into_the_new_range(store):
    lim = sg.RateLimiter("rc-adapt", "100/second", algorithm="adaptive", min_rate="10/second", store=store)
    assert lim.rate_now == 100.0
    lim.reconfigure(rate="40/second")
    assert lim.rate_now == 40.0
    lim.reconfigure(rate="100/second", min_rate="60/second")
    assert lim.rate_now == pytest.approx(60.0, rel=1e-6) or lim.rate_now >= 60.0


@pytest.mark.parametrize("kw, match", [
    (dict(rate="10/second", min_rate="20/second"), "min_rate"),
    (dict(rate=["10/second", "100/minute"]), "one rate"),
    (dict(rate="10/second", decrease=1.5), "decrease"),
    (dict(rate="10/second", increase=0), "increase"),
    (dict(rate="10/second", cooldown=-1), "cooldown"),
    (dict(rate="10/second", min_rate=5), "min_rate"),
    (dict(rate="2/second", min_rate="1/10s"), "burst"),  # 1 s of calls holds no call at 1 per 10 s
])
def test_bad_adaptive_options_raise_config_error(store, kw, match):
    with pytest.raises(sg.ConfigError, match=match):
        sg.RateLimiter("bad", algorithm="adaptive", store=store, **kw)


def test_adaptive_options_on_another_algorithm_are_refused(store):
    with pytest.raises(sg.ConfigError, match="adaptive"):
        sg.RateLimiter("bad2", "10/second", min_rate="1/second", store=store)
    with pytest.raises(sg.ConfigError, match="adaptive"):
        sg.RateLimiter("bad3", "10/second", store=store).feedback(True)

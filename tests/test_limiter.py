"""RateLimiter API: parsing, validation errors, decisions, waiting, decorators,
chains, batch path, stats, reclaim of idle keys, pickling."""

from __future__ import annotations

import asyncio
import pickle
import time

import numpy as np
import pytest
from conftest import unique_name

import sluicegate as sg

SEC = 1_000_000_000


def L(store, rate="5/minute", **kw) -> sg.RateLimiter:
    return sg.RateLimiter(unique_name("l"), rate, store=store, **kw)


# -- parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,limit,period",
    [
        ("5/minute", 5, 60.0),
        ("5 per minute", 5, 60.0),
        ("100/second", 100, 1.0),
        ("100 per second", 100, 1.0),
        ("10/30s", 10, 30.0),
        ("1000/hour", 1000, 3600.0),
        ("3/day", 3, 86400.0),
        ("10/5m", 10, 300.0),
        ("2 per 500ms", 2, 0.5),
        ("10 per 2 minutes", 10, 120.0),
        ("7/1.5s", 7, 1.5),
        ("1/W", 1, 604800.0),
        ("  42 / sec ", 42, 1.0),
    ],
)
def test_rate_strings_parse(text, limit, period):
    r = sg.Rate.parse(text)
    assert (r.limit, r.period) == (limit, period)
    assert r == sg.Rate(limit, period)


@pytest.mark.parametrize(
    "text", ["", "5", "five/minute", "5/fortnight", "5/", "/minute", "0/minute", "5/0s", "-5/minute", "5 minute",
             "5//s", "5/1e3s", "5/0.5ns"]
)
def test_bad_rate_strings_raise_config_error_naming_rate(text, store):
    with pytest.raises(sg.ConfigError, match="rate"):
        sg.RateLimiter("x", text, store=store)


@pytest.mark.parametrize("limit,period", [(0, 1), (-1, 1), (1, 0), (1, -2.0), (1.5, 1), (True, 1), (1, float("inf"))])
def test_bad_rate_objects(limit, period):
    with pytest.raises(sg.ConfigError, match="rate"):
        sg.Rate(limit, period)


def test_rate_is_immutable_hashable_and_pickles():
    r = sg.Rate(5, 60)
    with pytest.raises(AttributeError):
        r.limit = 3  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(r)) == r and hash(r) == hash(sg.Rate.parse("5/minute"))
    assert str(r) == "5/minute" and str(sg.Rate.parse("2 per 500ms")) == "2/500ms"


# -- validation ------------------------------------------------------------------------------
def test_configuration_errors_name_the_argument(store):
    with pytest.raises(sg.ConfigError, match="algorithm"):
        sg.RateLimiter("x", "5/minute", algorithm="leaky", store=store)
    with pytest.raises(sg.ConfigError, match="burst"):
        sg.RateLimiter("x", "5/minute", algorithm="fixed_window", burst=3, store=store)
    with pytest.raises(sg.ConfigError, match="burst"):
        sg.RateLimiter("x", "5/minute", burst=0, store=store)
    with pytest.raises(sg.ConfigError, match="milliseconds"):
        sg.RateLimiter("x", sg.Rate(5, 0.0005), algorithm="sliding_window", store=store)
    with pytest.raises(sg.ConfigError, match="up to"):
        sg.RateLimiter("x", "2000000/day", algorithm="sliding_window", store=store)
    with pytest.raises(sg.ConfigError, match="2\\*\\*54"):
        sg.RateLimiter("x", "1/day", burst=10**6, store=store)
    with pytest.raises(sg.ConfigError, match="name"):
        sg.RateLimiter("", "5/minute", store=store)
    with pytest.raises(sg.ConfigError, match="rate"):
        sg.RateLimiter("x", [], store=store)
    with pytest.raises(sg.ConfigError, match="rate"):
        sg.RateLimiter("x", 5, store=store)  # type: ignore[arg-type]
    with pytest.raises(sg.ConfigError, match="store"):
        sg.RateLimiter("x", "5/minute", store="nope")  # type: ignore[arg-type]
    assert issubclass(sg.ConfigError, ValueError)


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window", "sliding_window"])
def test_bad_costs_and_keys(store, algorithm):
    lim = L(store, "5/minute", algorithm=algorithm)
    for bad in (0, -1, 1.5, "2", True, None, 2**70):
        with pytest.raises(sg.ConfigError, match="cost"):
            lim.allow("k", bad)
    with pytest.raises(sg.ConfigError, match="cost 6 is larger"):
        lim.check("k", 6)
    with pytest.raises(sg.ConfigError, match="cost"):
        lim.allow_many(["k"], cost=6)
    for method in (lim.allow, lim.check, lim.peek, lim.reset):
        with pytest.raises(sg.KeyTypeError, match="key"):
            method(42)
        with pytest.raises(sg.InvalidKey, match="key"):
            method("x" * 2000)
    with pytest.raises(sg.KeyTypeError):
        lim.allow_many(["ok", 3])
    assert lim.check("k", 5).allowed  # the budget was untouched by the errors above


def test_burst_is_validated_against_cost(store):
    lim = L(store, "5/minute", burst=8)
    assert lim.check("k", 8).allowed
    with pytest.raises(sg.ConfigError, match="cost"):
        lim.allow("k", 9)


# -- decisions ---------------------------------------------------------------------------------
def test_token_bucket_defaults_burst_to_limit(store):
    lim = L(store, "5/minute")
    assert [lim.allow("u") for _ in range(6)] == [True] * 5 + [False]
    d = lim.check("u")
    assert not d.allowed and d.limit == 5 and d.remaining == 0
    assert 11.5 < d.retry_after <= 12.0 and 59 < d.reset_after <= 60.0
    assert lim.allow("other")  # keys are independent


def test_explicit_burst(store):
    lim = L(store, "5/minute", burst=10)
    assert sum(lim.allow("u") for _ in range(12)) == 10


def test_check_peek_reset_refund_fake_clock(store):
    lim = L(store, "4/second")
    t = lim._engine.now_ns()
    d = lim._engine.check_at("k", 3, t)
    assert (d.allowed, d.limit, d.remaining, d.retry_after, d.reset_after) == (True, 4, 1, 0.0, 0.75)
    p = lim._engine.peek_at("k", 2, t)
    assert (p.allowed, p.remaining, p.retry_after) == (False, 1, 0.25)
    assert lim._engine.peek_at("k", 1, t).remaining == 1  # peek consumed nothing
    lim._refund_at("k", 2, t)
    assert lim._engine.peek_at("k", 1, t).remaining == 3
    lim._engine.reset_at("k", t)
    assert lim._engine.peek_at("k", 1, t).remaining == 4
    assert lim._engine.check_at("k", 4, t).allowed
    assert lim._engine.check_at("k", 1, t + SEC // 4).allowed  # one token back after 250 ms


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window"])
def test_a_time_just_before_the_window_of_the_state_is_clock_skew(store, algorithm):
    """Another process (its clock a little ahead) wrote the next window; a decision
    made with a time before that window joins it instead of rolling the key back to
    the previous window, which would hand the next window's budget out twice."""
    lim = L(store, "3/second", algorithm=algorithm)
    t = 20 * SEC
    assert [lim._engine.check_at("k", 1, t + 5).allowed for _ in range(3)] == [True, True, True]
    late = lim._engine.check_at("k", 1, t - 100_000)  # 100 us before the window it finds
    assert not late.allowed
    # measured from t, the start of the window it joined: fixed waits for the next
    # window, sliding until the 3 calls weigh 2 in it
    assert late.retry_after == pytest.approx(1.0 if algorithm == "fixed_window" else 4 / 3, abs=1e-9)
    assert not lim._engine.check_at("k", 1, t + 10).allowed  # the window was not rolled back
    assert lim._engine.peek_at("k", 1, t + 10).remaining == 0
    # a batch's time can be older still: up to two windows back it joins too
    assert not lim._engine.check_at("k", 1, t - 3 * SEC // 2).allowed
    assert lim._engine.peek_at("k", 1, t + 10).remaining == 0


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window"])
def test_a_fresh_key_is_decided_in_its_own_window_at_the_index_wrap(store, algorithm):
    """Window indexes are stored modulo 2^24 (fixed) or 2^16 (sliding): a fresh key's
    empty state (index 0) must not read as a window 'ahead' of the last windows
    before the wrap and pull the decision into a later window."""
    lim = L(store, "3/second", algorithm=algorithm)
    wrap = (1 << 24) if algorithm == "fixed_window" else (1 << 16)
    t = (wrap - 1) * SEC + SEC // 2  # half-way through the last window before the wrap
    d = lim._engine.check_at("fresh", 1, t)
    assert d.allowed and d.remaining == 2
    assert d.reset_after == pytest.approx(0.5 if algorithm == "fixed_window" else 1.5, abs=1e-9)


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window"])
def test_a_refund_follows_a_decision_that_joined_the_next_window(store, algorithm):
    """A decision made just before the window it found joins that window; its
    refund, made at the same time, must give the cost back to that window.  Multi-rate
    all-or-nothing refunds the earlier rates when a later one denies: a lost refund
    leaves the earlier rate charged for a call that was not admitted."""
    multi = L(store, ["5/second", "3/second"], algorithm=algorithm)
    t = 20 * SEC
    assert multi._engine.check_at("k", 1, t + 5).allowed
    # joins t's window: 5/second admits (1 + 3), 3/second denies (1 + 3): 5/second gets 3 back
    assert not multi._engine.check_at("k", 3, t - 50_000).allowed
    d = multi._engine.check_at("k", 2, t + 10)  # 1 + 2 used of 3 and of 5
    assert d.allowed and d.remaining == 0, d


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window"])
def test_a_refund_never_gives_back_to_a_window_it_was_not_charged_in(store, algorithm):
    """A call charged in one window is refunded at its time, 50 us before the next
    window, after another process has already started that next window: the refund
    finds nothing of its own to give back and must not take from the next window
    (which would admit more than its limit there)."""
    lim = L(store, "3/second", algorithm=algorithm)
    t = 20 * SEC
    assert lim._engine.check_at("k", 1, t - 50_000).allowed  # charged in the window before t
    # t's window, until full (sliding: the call before t still weighs ~1 in it)
    admitted = [lim._engine.check_at("k", 1, t + 5).allowed for _ in range(4)].count(True)
    assert admitted == (3 if algorithm == "fixed_window" else 2)
    lim._refund_at("k", 1, t - 50_000)
    assert not lim._engine.check_at("k", 1, t + 10).allowed


def test_fixed_and_sliding_windows(store):
    fx = L(store, "3/second", algorithm="fixed_window")
    sl = L(store, "3/second", algorithm="sliding_window")
    t = 10 * SEC  # a window start
    for lim in (fx, sl):
        assert [lim._engine.check_at("k", 1, t).allowed for _ in range(4)] == [True, True, True, False]
    # next window: fixed is fresh, sliding still weighs the previous window
    assert fx._engine.check_at("k", 3, t + SEC).allowed
    d = sl._engine.check_at("k", 1, t + SEC)
    assert not d.allowed and d.retry_after == pytest.approx(1 / 3, abs=1e-9)
    wait_ns = round(d.retry_after * 1e9)
    assert not sl._engine.check_at("k", 1, t + SEC + wait_ns - 1).allowed
    assert sl._engine.check_at("k", 1, t + SEC + wait_ns).allowed  # exactly retry_after later


def test_multi_rate_all_or_nothing(store):
    lim = L(store, ["2/second", "3/minute"])
    t = 5 * SEC
    assert [lim._engine.check_at("k", 1, t).allowed for _ in range(3)] == [True, True, False]
    assert lim._engine.check_at("k", 1, t + SEC).allowed  # 3rd of the minute
    d = lim._engine.check_at("k", 1, t + 2 * SEC)
    assert not d.allowed and d.limit == 3  # the minute rate denies


def test_multi_rate_refunds_the_rates_that_admitted(store):
    lim = L(store, ["3/minute", "2/second"])
    t = 5 * SEC
    assert lim._engine.check_at("k", 1, t).allowed and lim._engine.check_at("k", 1, t).allowed
    d = lim._engine.check_at("k", 1, t)  # the minute rate admits its 3rd, the second rate denies
    assert not d.allowed and d.limit == 2
    # the minute rate got its token back: one more call fits a second later
    assert lim._engine.check_at("k", 1, t + SEC).allowed
    assert not lim._engine.check_at("k", 1, t + 2 * SEC).allowed


def test_decision_value_semantics(store):
    lim = L(store)
    a, b = lim.peek("k"), lim.peek("k")
    assert a == b and hash(a) == hash(b) and bool(a) is True
    assert "Decision(allowed=True" in repr(a)
    assert pickle.loads(pickle.dumps(a)) == a
    assert isinstance(a.remaining, int) and isinstance(a.retry_after, float)


# -- waiting ----------------------------------------------------------------------------------
def test_acquire_sleeps_retry_after_then_admits(store):
    lim = L(store, "20/second", burst=1)
    assert lim.acquire("k").allowed
    t0 = time.monotonic()
    d = lim.acquire("k", timeout=2.0)
    waited = time.monotonic() - t0
    assert d.allowed and 0.045 <= waited < 1.0


def test_acquire_timeout_raises_rate_limited_with_retry_after(store):
    lim = L(store, "1/minute")
    lim.acquire("k")
    t0 = time.monotonic()
    with pytest.raises(sg.RateLimited) as ei:
        lim.acquire("k", timeout=0.2)
    assert time.monotonic() - t0 < 0.15  # known to be hopeless: raised at once, no sleeping
    assert 59 < ei.value.retry_after <= 60
    with pytest.raises(sg.ConfigError, match="timeout"):
        lim.acquire("k", timeout=-1)


def test_acquire_async(store):
    lim = L(store, "20/second", burst=1)

    async def main():
        await lim.acquire_async("k")
        t0 = time.monotonic()
        await lim.acquire_async("k", timeout=2.0)
        waited = time.monotonic() - t0
        with pytest.raises(sg.RateLimited):
            await lim.acquire_async("k", timeout=0.0)
        return waited

    assert 0.045 <= asyncio.run(main()) < 1.0


# -- decorators -------------------------------------------------------------------------------
def test_decorator_with_key_function(store):
    lim = L(store, "2/minute")

    @lim(key=lambda user, **kw: f"user:{user}")
    def handler(user, x=0):
        return user, x

    assert handler("a") == ("a", 0) and handler("a", x=1) == ("a", 1)
    with pytest.raises(sg.RateLimited) as ei:
        handler("a")
    assert ei.value.retry_after > 0
    assert handler("b") == ("b", 0)
    assert handler.__name__ == "handler"


def test_bare_decorator_and_async(store):
    lim = L(store, "1/minute")

    @lim
    def f():
        return 1

    assert f() == 1
    with pytest.raises(sg.RateLimited):
        f()

    lim2 = L(store, "1/minute")

    @lim2(key=lambda k: k)
    async def g(k):
        return k

    assert asyncio.run(g("x")) == "x"
    with pytest.raises(sg.RateLimited):
        asyncio.run(g("x"))
    assert asyncio.run(g("y")) == "y"


def test_decorator_wait_mode(store):
    lim = L(store, "20/second", burst=1)

    @lim(key="k", wait=True, timeout=2.0)
    def f():
        return time.monotonic()

    t0 = f()
    assert f() - t0 >= 0.045


# -- chain ---------------------------------------------------------------------------------------
def test_chain_refunds_levels_that_admitted(store):
    user = L(store, "2/day")
    org = L(store, "3/day")
    glob = L(store, "100/day")
    chain = sg.RateLimiter.chain(user, org, glob)
    assert chain.allow(("alice", "acme", "all"))
    assert chain.allow(("alice", "acme", "all"))
    assert not chain.allow(("alice", "acme", "all"))  # user level denies; nothing else consumed
    assert chain.allow(("bob", "acme", "all"))  # org's 3rd
    d = chain.check(("bob", "acme", "all"))
    assert not d.allowed and d.limit == 3  # org denies ...
    assert user.peek("bob").remaining == 1  # ... bob's user level was refunded
    assert glob.peek("all").remaining == 97  # global never saw the denied calls
    assert chain.peek(("carol", "acme", "all")).limit == 3
    with pytest.raises(sg.ConfigError, match="key"):
        chain.allow(("a", "b"))
    chain.reset(("bob", "acme", "all"))
    assert chain.allow(("bob", "acme", "all"))


def test_chain_acquire_waits_for_the_slowest_level_or_gives_up_at_once(store):
    user = L(store, "20/second", burst=1)
    org = L(store, "1/minute")
    chain = sg.RateLimiter.chain(user, org)
    assert chain.acquire(("alice", "acme")).allowed
    t0 = time.monotonic()
    with pytest.raises(sg.RateLimited, match="rate limit chain") as ei:
        chain.acquire(("alice", "acme"), timeout=0.5)  # org needs ~60 s: hopeless, raised at once
    assert time.monotonic() - t0 < 0.15 and 59 < ei.value.retry_after <= 60
    t0 = time.monotonic()
    assert asyncio.run(chain.acquire_async(("bob", "other"), timeout=1.0)).allowed
    assert asyncio.run(chain.acquire_async(("bob", "other2"), timeout=1.0)).allowed  # user waits ~50 ms
    assert 0.045 <= time.monotonic() - t0 < 1.0


# -- batch -----------------------------------------------------------------------------------------
def test_allow_many(store):
    lim = L(store, "3/day")
    out = lim.allow_many(["a", "a", "b", "a", "a", b"b"])
    assert isinstance(out, np.ndarray) and out.dtype == np.bool_
    assert out.tolist() == [True, True, True, True, False, True]
    assert lim.allow_many([]).shape == (0,)
    assert lim.allow_many(iter(["c", "c"]), cost=2).tolist() == [True, False]
    assert lim.stats() == {"kind": "limiter", "name": lim.name, "allowed": 6, "denied": 2, "total": 8}


# -- store interaction ---------------------------------------------------------------------------------
def test_idle_keys_are_reclaimed_and_full_store_raises(store_name):
    small = sg.SharedStore(store_name + "-small", capacity=64)
    try:
        lim = sg.RateLimiter("r", "10/second", burst=1, store=small)
        t = 5 * SEC
        # 1000 distinct keys through 64 slots: each is idle (bucket full) 100 ms later
        for i in range(1000):
            t += SEC // 10
            assert lim._engine.check_at(f"k{i}", 1, t).allowed
        # all busy at one instant: the store fills and says so, and never answers wrongly
        with pytest.raises(sg.StoreFull):
            for i in range(1000):
                assert lim._engine.check_at(f"busy{i}", 1, t).allowed
        assert not lim._engine.check_at("busy0", 1, t).allowed  # existing keys keep exact state
        assert lim._engine.check_at("late", 1, t + SEC).allowed  # once idle, slots come back
    finally:
        small.close()
        sg.SharedStore.unlink(store_name + "-small", missing_ok=True)


def test_closed_store_raises(store_name):
    s = sg.SharedStore(store_name + "-c", capacity=64)
    lim = sg.RateLimiter("r", "10/second", store=s)
    s.close()
    sg.SharedStore.unlink(store_name + "-c")
    with pytest.raises(sg.StoreClosed):
        lim.allow("k")
    with pytest.raises(sg.StoreClosed):
        sg.RateLimiter("r2", "10/second", store=s)


def test_pickle_round_trip_shares_state(store):
    lim = L(store, "3/day", algorithm="sliding_window")
    lim.allow("k")
    clone = pickle.loads(pickle.dumps(lim))
    assert clone is not lim and clone.name == lim.name and clone.algorithm == "sliding_window"
    assert clone.peek("k").remaining == 2
    assert "sliding_window" in repr(clone)


def test_default_store_and_aliases():
    lim = sg.RateLimiter(unique_name("d"), "5/minute", algorithm="gcra")
    assert lim.store is sg.default_store() and lim.algorithm == "token_bucket"
    assert lim.allow("k")


def test_limiters_with_the_same_name_share_state_and_namespaces_are_separate(store):
    name = unique_name("same")
    a = sg.RateLimiter(name, "2/day", store=store)
    b = sg.RateLimiter(name, "2/day", store=store)
    c = sg.RateLimiter(name + "x", "2/day", store=store)
    assert a.allow("k") and b.allow("k") and not a.allow("k")
    assert c.allow("k")


# -- the demo --------------------------------------------------------------------------------------
def test_demo_runs_and_checks_the_shared_limit(capsys):
    from sluicegate.__main__ import main

    rc = main(["demo", "--workers", "2", "--seconds", "1", "--rate", "500/second", "--start-method", "fork",
               "--no-live", "--refresh", "0.25"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "never above it" in out and "OK: one limit" in out
    assert "#0" in out and "#1" in out and "decisions/s" in out


def test_cli_help():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "sluicegate", "--help"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and "demo" in r.stdout
    r = subprocess.run([sys.executable, "-m", "sluicegate", "demo", "--help"],
                       capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0 and "--workers" in r.stdout
    r = subprocess.run([sys.executable, "-m", "sluicegate", "demo", "--rate", "lots"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2 and "rate" in r.stderr


def test_acquire_sleeps_once_for_exactly_retry_after(store, monkeypatch):
    import sluicegate.limiter as limiter_mod

    lim = L(store, "10/second", burst=1)
    assert lim.allow("k")
    want = lim.peek("k").retry_after
    slept: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(s: float) -> None:
        slept.append(s)
        real_sleep(s)

    monkeypatch.setattr(limiter_mod.time, "sleep", recording_sleep)
    assert lim.acquire("k", timeout=5).allowed
    assert len(slept) == 1, slept  # never a spin: one sleep, then admitted
    assert want - 0.01 <= slept[0] <= want


def test_threads_mixing_allow_and_gil_free_allow_many_are_exact(store):
    """allow_many runs its C loop without the GIL, so threads really overlap in C."""
    import threading

    lim = L(store, "10000/day")
    counts: list[int] = []

    def single() -> None:
        counts.append(sum(1 for _ in range(4000) if lim.allow("hot")))

    def batch() -> None:
        counts.append(sum(int(lim.allow_many(["hot"] * 500).sum()) for _ in range(8)))

    threads = [threading.Thread(target=f) for f in (single, batch, single, batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) == 10000 and len(counts) == 4
    assert lim.stats() == {"kind": "limiter", "name": lim.name, "allowed": 10000, "denied": 6000, "total": 16000}

"""A policy's front object behaves the same over every engine (DESIGN.md "Layers").

Each test runs once over the compiled shm engine and once over the reference model
engine (tests/engines.py), through the same front: RateLimiter and CircuitBreaker.  What
the front does (raising, decorators, waiting, chains and their refunds, `with` tickets,
listeners, admin states, following reconfiguration) must not depend on which engine
decides.  Time moves by sleeping over the shm engine and by the fake clock over the
model, so every test states the wait it needs."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import unique_name
from engines import ModelBreakerEngine, ModelLimiterEngine, ModelStore

import sluicegate as sg
from sluicegate import _core


class Env:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.store = ModelStore() if kind == "model" else sg.SharedStore()

    def wait(self, seconds: float) -> None:
        if self.kind == "model":
            assert isinstance(self.store, ModelStore)
            self.store.clock.advance(seconds)
        else:
            time.sleep(seconds)


@pytest.fixture(params=["shm", "model"])
def env(request):
    e = Env(request.param)
    yield e
    e.store.close()


def test_the_store_picks_the_engine(env):
    lim = sg.RateLimiter(unique_name("pe"), "5/second", store=env.store)
    br = sg.CircuitBreaker(unique_name("pe"), store=env.store)
    if env.kind == "model":
        assert isinstance(lim._engine, ModelLimiterEngine) and isinstance(br._engine, ModelBreakerEngine)
    else:
        assert isinstance(lim._engine, _core.LimiterEngine) and isinstance(br._engine, _core.BreakerEngine)


# ---- RateLimiter --------------------------------------------------------------------------
def test_limiter_admits_the_burst_then_denies_with_retry_after(env):
    lim = sg.RateLimiter(unique_name("pe"), "3/minute", store=env.store)
    assert [lim.allow("k") for _ in range(4)] == [True, True, True, False]
    d = lim.check("k")
    assert not d.allowed and d.limit == 3 and d.remaining == 0
    assert 19.0 < d.retry_after <= 20.0  # one token every 20 s
    assert lim.peek("other").allowed and lim.peek("other").remaining == 3
    assert lim.stats()["allowed"] == 3 and lim.stats()["denied"] == 2


def test_limiter_refills_with_time(env):
    lim = sg.RateLimiter(unique_name("pe"), "20/second", burst=1, store=env.store)
    assert lim.allow("k") and not lim.allow("k")
    env.wait(0.06)
    assert lim.allow("k")


def test_limiter_decorator_and_acquire_raise_rate_limited(env):
    lim = sg.RateLimiter(unique_name("pe"), "1/minute", store=env.store)

    @lim(key=lambda user: user)
    def handler(user: str) -> str:
        return user

    assert handler("a") == "a"
    with pytest.raises(sg.RateLimited) as e:
        handler("a")
    assert e.value.retry_after > 50
    assert handler("b") == "b"
    with pytest.raises(sg.RateLimited):
        lim.acquire("a", timeout=0.01)
    with pytest.raises(sg.RateLimited):
        asyncio.run(lim.acquire_async("a", timeout=0.01))


def test_limiter_reset_and_refund(env):
    lim = sg.RateLimiter(unique_name("pe"), "2/minute", store=env.store)
    assert lim.allow("k") and lim.allow("k") and not lim.allow("k")
    lim.refund("k")
    assert lim.allow("k") and not lim.allow("k")
    lim.reset("k")
    assert lim.allow("k") and lim.allow("k")


def test_chain_refunds_earlier_levels_when_a_later_one_denies(env):
    user = sg.RateLimiter(unique_name("pe"), "5/minute", store=env.store)
    org = sg.RateLimiter(unique_name("pe"), "1/minute", store=env.store)
    chain = sg.RateLimiter.chain(user, org)
    assert chain.allow(("u1", "o"))
    assert not chain.allow(("u1", "o"))  # the org denies: the user's token comes back
    assert user.peek("u1").remaining == 4


def test_limiter_follows_reconfigure_at_its_next_decision(env):
    name = unique_name("pe")
    lim = sg.RateLimiter(name, "2/minute", store=env.store)
    other = sg.RateLimiter(name, "2/minute", store=env.store)  # another front, same policy
    other.reconfigure(rate="50/minute")
    assert lim.check("fresh").limit == 50
    assert lim.config["rate"] == ["50/minute"]
    other.reconfigure()
    assert lim.peek("fresh2").limit == 2


def test_limiter_cost_is_checked_by_every_engine(env):
    lim = sg.RateLimiter(unique_name("pe"), "3/minute", store=env.store)
    with pytest.raises(sg.ConfigError):
        lim.allow("k", 4)
    with pytest.raises(sg.ConfigError):
        lim.allow("k", 0)
    assert lim.allow("k", 3) and not lim.allow("k")


# ---- CircuitBreaker -----------------------------------------------------------------------
class Boom(Exception):
    pass


def _fail(br: sg.CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom), br:
            raise Boom


def test_breaker_opens_on_the_threshold_and_rejects(env):
    seen: list[tuple[str, str]] = []
    br = sg.CircuitBreaker(unique_name("pe"), store=env.store, failure_threshold=3, reset_timeout=0.2,
                           on_state_change=lambda b, old, new: seen.append((old, new)))
    _fail(br, 2)
    assert br.state == "closed"
    _fail(br, 1)
    assert br.state == "open" and seen == [("closed", "open")]
    with pytest.raises(sg.CircuitOpen) as e:
        with br:
            pass
    assert e.value.name == br.name and 0 < e.value.retry_after <= 0.2
    with pytest.raises(sg.CircuitOpen):
        br.call(lambda: None)
    st = br.stats()
    assert (st["calls"], st["failures"], st["rejections"]) == (3, 3, 2)


def test_breaker_half_open_probe_closes_it(env):
    br = sg.CircuitBreaker(unique_name("pe"), store=env.store, failure_threshold=1, reset_timeout=0.1)
    _fail(br, 1)
    assert br.state == "open"
    env.wait(0.15)
    assert br.state == "half_open"
    with br:  # the one probe
        pass
    assert br.state == "closed"


def test_breaker_ignores_what_it_is_told_to_and_classifies_results(env):
    br = sg.CircuitBreaker(unique_name("pe"), store=env.store, failure_threshold=1, ignore=(KeyError,),
                           result_is_failure=lambda r: r is None)
    with pytest.raises(KeyError), br:
        raise KeyError("x")
    assert br.state == "closed"
    assert br.call(lambda: 1) == 1 and br.state == "closed"
    br.call(lambda: None)
    assert br.state == "open"


def test_breaker_decorators_and_tokens(env):
    br = sg.CircuitBreaker(unique_name("pe"), store=env.store, failure_threshold=2)

    @br
    def f(x: int) -> int:
        if x < 0:
            raise Boom
        return x

    @br
    async def g(x: int) -> int:
        if x < 0:
            raise Boom
        return x

    assert f(1) == 1 and asyncio.run(g(2)) == 2
    tok = br.begin()
    tok.failure()
    assert not tok.failure()  # reported once
    with pytest.raises(Boom):
        asyncio.run(g(-1))
    assert br.state == "open"


def test_breaker_admin_states_and_reset(env):
    br = sg.CircuitBreaker(unique_name("pe"), store=env.store, failure_threshold=1)
    br.force_open()
    with pytest.raises(sg.CircuitOpen):
        with br:
            pass
    br.disable()
    _fail(br, 3)
    assert br.state == "disabled"
    br.reset()
    assert br.state == "closed" and br.stats()["calls"] == 0


def test_breaker_follows_reconfigure_keeping_its_state(env):
    name = unique_name("pe")
    br = sg.CircuitBreaker(name, store=env.store, failure_threshold=5)
    other = sg.CircuitBreaker(name, store=env.store, failure_threshold=5)
    _fail(br, 2)
    other.reconfigure(failure_threshold=3)
    _fail(br, 1)  # the third failure opens it under the new threshold; the counts carried over
    assert br.state == "open" and other.state == "open"
    assert br.config["failure_threshold"] == 3


def test_nested_with_tickets_are_kept_per_context(env):
    br = sg.CircuitBreaker(unique_name("pe"), store=env.store, failure_threshold=2)
    with br:
        with pytest.raises(Boom), br:
            raise Boom
    assert br.stats()["calls"] == 2 and br.stats()["failures"] == 1

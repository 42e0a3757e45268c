"""Rule 8: a policy is its kind and its name.  Constructing it again with other options,
or reconfigure() from any process, changes it everywhere at the next decision: no
error, no second budget, state carried over where it means something."""

from __future__ import annotations

import logging

import pytest
from conftest import unique_name

import sluicegate as sg


def test_a_new_rate_under_the_same_name_is_one_budget_with_the_newest_rate(store):
    name = unique_name("rl")
    a = sg.RateLimiter(name, "4/day", store=store)
    assert a.allow("k") and a.allow("k")  # 12 h of debt (two 6 h intervals)
    b = sg.RateLimiter(name, "2/day", store=store)  # a deploy: the newest configuration wins
    assert b.allow("k") and not b.allow("k")  # the 12 h carried over: one 12 h interval left of 24 h
    assert not a.allow("k")  # the old object follows at its next decision, same budget
    assert a.config == b.config == {"rate": ["2/day"], "burst": None, "algorithm": "token_bucket"}


def test_window_counts_stay_under_a_new_limit_and_a_new_period_starts_fresh(store):
    name = unique_name("rl")
    a = sg.RateLimiter(name, "3/day", algorithm="fixed_window", store=store)
    assert sum(a.allow("k") for _ in range(3)) == 3
    b = sg.RateLimiter(name, "5/day", algorithm="fixed_window", store=store)
    assert sum(b.allow("k") for _ in range(5)) == 2  # 3 counted, 5 allowed
    c = sg.RateLimiter(name, "1/hour", algorithm="fixed_window", store=store)
    assert sum(c.allow("k") for _ in range(3)) == 1  # another period: fresh windows


def test_a_new_algorithm_starts_fresh_with_a_warning(store, caplog):
    name = unique_name("rl")
    a = sg.RateLimiter(name, "2/day", store=store)
    assert a.allow("k") and a.allow("k") and not a.allow("k")
    with caplog.at_level(logging.WARNING, logger="sluicegate.limiter"):
        b = sg.RateLimiter(name, "2/day", algorithm="sliding_window", store=store)
        assert b.allow("k") and b.allow("k") and not b.allow("k")
        assert not a.allow("k") and a.algorithm == "sliding_window"
    assert any("algorithm changed" in r.getMessage() for r in caplog.records)


def test_reconfigure_overrides_everywhere_until_cleared(store):
    name = unique_name("rl")
    a = sg.RateLimiter(name, "2/day", store=store)
    b = sg.RateLimiter(name, "2/day", store=store)
    a.reconfigure(rate="4/day")
    assert sum(b.allow("k") for _ in range(6)) == 4
    c = sg.RateLimiter(name, "2/day", store=store)  # a restarted worker: the override outranks code
    assert c.config["rate"] == ["4/day"]
    c.reconfigure()  # cleared: the code's configuration again
    assert not b.allow("k") and b.config["rate"] == ["2/day"]


def test_reconfigure_validates_before_it_publishes(store):
    name = unique_name("rl")
    a = sg.RateLimiter(name, "2/day", store=store)
    with pytest.raises(sg.ConfigError, match="unknown rate limiter option"):
        a.reconfigure(limit=3)
    with pytest.raises(sg.ConfigError, match="rate"):
        a.reconfigure(rate="lots")
    with pytest.raises(sg.ConfigError, match="burst applies to the token bucket only"):
        a.reconfigure(algorithm="fixed_window", burst=3)
    assert a.config["rate"] == ["2/day"]


# -- circuit breaker ---------------------------------------------------------------------------


def _fail(br: sg.CircuitBreaker) -> None:
    with pytest.raises(KeyError), br:
        raise KeyError


def test_a_breaker_made_again_with_other_options_is_one_breaker_with_the_newest(store):
    name = unique_name("br")
    a = sg.CircuitBreaker(name, store=store, failure_threshold=3, reset_timeout=60)
    _fail(a)
    _fail(a)
    b = sg.CircuitBreaker(name, store=store, failure_threshold=5, reset_timeout=60)  # a deploy
    _fail(a)  # a follows b's configuration at this call: the 3rd failure of 5, still closed
    assert a.state == b.state == "closed" and a.config["failure_threshold"] == 5
    _fail(b)
    _fail(a)  # the counts carried over: the 5th failure opens it, for both
    assert a.state == b.state == "open"
    assert b.stats()["failures"] == 5


def test_breaker_reconfigure_keeps_state_and_is_cleared(store):
    name = unique_name("br")
    a = sg.CircuitBreaker(name, store=store, failure_threshold=1, reset_timeout=60)
    b = sg.CircuitBreaker(name, store=store, failure_threshold=1, reset_timeout=60)
    _fail(a)
    assert b.state == "open"
    b.reconfigure(reset_timeout=0.05, half_open_calls=2)
    assert a.state == "open"  # the state carried over
    import time

    time.sleep(0.08)
    assert a.state == "half_open"
    t1, t2 = a.begin(), a.begin()  # two probes now, host-wide
    with pytest.raises(sg.CircuitOpen):
        b.begin()
    t1.success()
    t2.success()
    assert b.state == "closed"
    c = sg.CircuitBreaker(name, store=store, failure_threshold=1, reset_timeout=60)  # a restarted worker
    assert c.config["reset_timeout"] == 0.05 and c.config["half_open_calls"] == 2
    a.reconfigure()  # cleared: the code's configuration in every process
    assert b.config["reset_timeout"] == 60 and c.config["half_open_calls"] == 1


def test_breaker_reconfigure_names_a_bad_option(store):
    br = sg.CircuitBreaker(unique_name("br"), store=store)
    with pytest.raises(sg.ConfigError, match="unknown circuit breaker option"):
        br.reconfigure(threshold=3)
    with pytest.raises(sg.ConfigError, match="failure_threshold"):
        br.reconfigure(failure_threshold=0)
    assert br.config["failure_threshold"] == 5


# -- concurrency cap ----------------------------------------------------------------------------


def test_a_cap_made_again_with_another_limit_applies_it_to_new_acquires(store):
    name = unique_name("cap")
    a = sg.ConcurrencyLimiter(name, 3, store=store)
    held = [a.acquire(timeout=0) for _ in range(3)]
    b = sg.ConcurrencyLimiter(name, 2, store=store)  # lowered: the 3 holders keep their permits
    assert b.limit == 2 and b.in_use == 3
    assert b.try_acquire() is None and a.try_acquire() is None
    held.pop().release()
    held.pop().release()  # 1 held now, below the new limit of 2
    p = a.try_acquire()
    assert p is not None and a.try_acquire() is None
    c = sg.ConcurrencyLimiter(name, 4, store=store)  # raised beyond the old record count
    got = [x for x in (a.try_acquire(), b.try_acquire()) if x is not None]
    assert len(got) == 2 and c.in_use == 4 and c.try_acquire() is None


def test_cap_reconfigure_overrides_until_cleared(store):
    name = unique_name("cap")
    a = sg.ConcurrencyLimiter(name, 1, store=store)
    b = sg.ConcurrencyLimiter(name, 1, store=store)
    a.reconfigure(limit=2)
    assert b.try_acquire() is not None and b.try_acquire() is not None and b.try_acquire() is None
    assert sg.ConcurrencyLimiter(name, 1, store=store).limit == 2  # the override outranks code
    with pytest.raises(sg.ConfigError, match="unknown ConcurrencyLimiter option"):
        a.reconfigure(size=3)
    a.reconfigure()
    assert b.limit == 1


# -- the directory ------------------------------------------------------------------------------


def test_store_lists_every_policy_and_builds_a_working_one(store):
    lim = sg.RateLimiter("d-api", "5/minute", store=store)
    br = sg.CircuitBreaker("d-pay", store=store, failure_threshold=2)
    sg.ConcurrencyLimiter("d-db", 4, store=store)
    lim.reconfigure(rate="6/minute")
    infos = {(p.kind, p.name): p for p in store.policies()}
    assert infos[("limiter", "d-api")].config["rate"] == ["6/minute"]
    assert infos[("limiter", "d-api")].code["rate"] == ["5/minute"]
    assert infos[("limiter", "d-api")].override == {"rate": ["6/minute"]}
    assert infos[("breaker", "d-pay")].config["failure_threshold"] == 2
    assert infos[("cap", "d-db")].config["limit"] == 4
    assert all(p.version >= 1 and p.created <= p.updated for p in infos.values())
    twin = store.policy("d-pay")
    _fail(twin)
    _fail(twin)
    assert br.state == "open"
    assert store.policy("d-api").config["rate"] == ["6/minute"]
    with pytest.raises(sg.PolicyNotFound):
        store.policy("nope")


def test_same_name_in_two_kinds_needs_a_kind_and_warns(store, caplog):
    sg.RateLimiter("twin", "5/minute", store=store)
    with caplog.at_level(logging.WARNING, logger="sluicegate.directory"):
        sg.CircuitBreaker("twin", store=store)
    assert any("separate policies" in r.getMessage() for r in caplog.records)
    with pytest.raises(sg.PolicyNotFound, match="pass kind="):
        store.policy("twin")
    assert isinstance(store.policy("twin", kind="breaker"), sg.CircuitBreaker)


def test_a_constructor_that_fails_validation_takes_no_directory_entry(store):
    before = len(store.policies())
    with pytest.raises(sg.ConfigError):
        sg.RateLimiter("bad", "lots", store=store)
    with pytest.raises(sg.ConfigError):
        sg.CircuitBreaker("bad", store=store, window=-1)
    with pytest.raises(sg.ConfigError):
        sg.ConcurrencyLimiter("bad", 0, store=store)
    assert len(store.policies()) == before
    assert store._table.stats()["used"] == 0

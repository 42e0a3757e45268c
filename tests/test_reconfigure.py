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
    with pytest.raises(sg.ConfigError, match="unknown option"):
        a.reconfigure(limit=3)
    with pytest.raises(sg.ConfigError, match="rate"):
        a.reconfigure(rate="lots")
    with pytest.raises(sg.ConfigError, match="burst applies to the token bucket only"):
        a.reconfigure(algorithm="fixed_window", burst=3)
    assert a.config["rate"] == ["2/day"]

"""A ConcurrencyLimiter timeout that is not a number of seconds >= 0 is refused when
given, even when a permit is free (it used to be checked only once a wait began)."""

from __future__ import annotations

import asyncio

import pytest

import sluicegate as sg

BAD = [float("nan"), -5, -0.001, float("inf"), "1", True]


@pytest.fixture
def cap():
    with sg.SharedStore(capacity=64) as s:
        yield sg.ConcurrencyLimiter("to", limit=2, store=s)


@pytest.mark.parametrize("timeout", BAD)
def test_bad_timeouts_are_config_errors(cap, timeout):
    with pytest.raises(sg.ConfigError, match="timeout"):
        cap.acquire(timeout=timeout)
    with pytest.raises(sg.ConfigError, match="timeout"):
        cap.slot(timeout=timeout)
    with pytest.raises(sg.ConfigError, match="timeout"):
        cap.slot_async(timeout=timeout)
    with pytest.raises(sg.ConfigError, match="timeout"):
        asyncio.run(cap.acquire_async(timeout=timeout))
    assert cap.in_use == 0


@pytest.mark.parametrize("timeout", [None, 0, 0.5, 3])
def test_good_timeouts_are_accepted(cap, timeout):
    cap.acquire(timeout=timeout).release()
    with cap.slot(timeout=timeout):
        assert cap.in_use == 1
    assert cap.in_use == 0

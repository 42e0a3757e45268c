"""Every policy's stats() has one shape (policy.Policy.stats): a flat dict that begins
with "kind" and "name", then the kind's readings as JSON scalars.  Pools and counters
and every other kind alike."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import unique_name

import sluicegate as sg


def _pool(store):
    return sg.Pool(object, size=2, name=unique_name("db"), store=store)


def _private_pool(store):
    return sg.Pool(object, size=2)


def _async_pool(store):
    return sg.AsyncPool(object, size=2, name=unique_name("db"), store=store)


def _counter(store):
    return sg.Counter(unique_name("c"), store=store)


def _limiter(store):
    lim = sg.RateLimiter(unique_name("l"), "5/second", store=store)
    lim.allow("k")
    return lim


def _breaker(store):
    return sg.CircuitBreaker(unique_name("b"), store=store)


def _cap(store):
    return sg.ConcurrencyLimiter(unique_name("cap"), 3, store=store)


@pytest.mark.parametrize("make, kind", [(_pool, "pool"), (_private_pool, "pool"), (_async_pool, "pool"),
                                        (_counter, "counter"), (_limiter, "limiter"), (_breaker, "breaker"),
                                        (_cap, "cap")])
def test_stats_begin_with_kind_and_name_then_flat_readings(store, make, kind):
    policy = make(store)
    st = policy.stats()
    assert list(st)[:2] == ["kind", "name"] and st["kind"] == kind and st["name"] == policy.name
    assert all(isinstance(v, (int, float, str, bool)) or v is None for v in st.values()), st
    assert json.loads(json.dumps(st)) == st
    assert len(st) > 2
    if isinstance(policy, sg.AsyncPool):
        asyncio.run(policy.close())

"""A new key on a full store costs a bounded time (issue 9: it ran a sweep of the
whole table, 2.55 ms with the GIL held, for anyone who controls the keys).

Target: a new key refused by a full default-capacity store costs at most 20x a new key
admitted by a store with room, both measured here from Python."""

from __future__ import annotations

import itertools

import sluicegate as sg

CAPACITY = 1 << 16  # the default store's capacity
N = 2000


def _full_store() -> tuple[sg.SharedStore, sg.RateLimiter]:
    s = sg.SharedStore(capacity=CAPACITY)
    lim = sg.RateLimiter("busy", "1/hour", store=s)  # a used key stays busy for an hour
    try:
        for i in itertools.count():
            lim.allow(f"fill{i}")
    except sg.StoreFull:
        pass
    return s, lim


def _new_key_cost(ratios, lim: sg.RateLimiter, full: bool) -> float:
    ids = itertools.count()

    def one() -> None:
        try:
            lim.allow(f"new{next(ids)}")
        except sg.StoreFull:
            if not full:
                raise
        else:
            if full:
                raise AssertionError("a full store admitted a new key")

    return ratios.per_call(one, N, repeat=5)


def test_new_key_on_a_full_store(benchmark):
    s, lim = _full_store()
    ids = itertools.count()

    def refused() -> None:
        for _ in range(N):
            try:
                lim.allow(f"new{next(ids)}")
            except sg.StoreFull:
                pass

    benchmark.pedantic(refused, rounds=5, iterations=1)
    s.close()


def test_new_key_on_a_full_store_ratio(ratios):
    """A new key on a full store costs at most 20x a new key on a store with room."""
    with sg.SharedStore(capacity=CAPACITY) as room:
        # N * 5 rounds of new keys: well within the capacity
        t_room = _new_key_cost(ratios, sg.RateLimiter("busy", "1/hour", store=room), full=False)
    s, lim = _full_store()
    t_full = _new_key_cost(ratios, lim, full=True)
    s.close()
    r = t_full / t_room
    print(f"\n  new key with room {t_room * 1e6:.2f} us, on a full store {t_full * 1e6:.2f} us")
    ratios.add("new key on a full store / new key with room", r, "<= 20", r <= 20)
    assert r <= 20

"""A chain refunds a level at the time that level decided, never later.

Found by the chain kill storm run longer (bash tests/chaos/run.sh 10: a 100 ms window
of the chain's first level admitted 21 for a limit of 20).  LimiterChain refunded the
levels that had admitted with refund(), which judges the window by the time of the
refund: when a window rolled over between a level's charge and a later level's
denial, and other callers had already charged the new window, the refund was taken
off the NEW window, which then admitted one more than its limit.  The core's rule
(refund_step) is that callers pass the time the step decided at; the chain now
passes a time read just before the level decided, so a refund can only land in the
window that was charged, or be dropped (denying more, never admitting more)."""

from __future__ import annotations

import time

import sluicegate as sg

P = 0.2  # the first level's window (s)


def test_chain_refund_after_its_window_rolled_over_never_admits_over_the_limit(store):
    a = sg.RateLimiter("chain-first", sg.Rate(2, P), algorithm="fixed_window", store=store)

    class DeniesAfterARollover(sg.RateLimiter):
        def check(self, key, cost=1):
            # the first level's window rolls over, and other callers fill the new one,
            # before this level denies (a preempted process sees exactly this)
            w = int(store.now() / P)
            while int(store.now() / P) == w:
                time.sleep(0.001)
            assert a.allow(key) and a.allow(key)
            return super().check(key, cost)

    b = DeniesAfterARollover("chain-second", "1/hour", store=store)
    assert b.allow("k")  # exhausted: it denies from now on
    w = int(store.now() / P)
    while int(store.now() / P) == w:  # start early in a window: the first level charges in it
        time.sleep(0.001)
    chain = sg.RateLimiter.chain(a, b)
    assert not chain.allow("k")
    assert not a.allow("k"), "the refund was taken off the next window, which then admitted 3 for a limit of 2"


def test_chain_still_refunds_within_the_window_it_charged(store):
    a = sg.RateLimiter("chain-first", sg.Rate(2, 60.0), algorithm="fixed_window", store=store)
    b = sg.RateLimiter("chain-second", "1/hour", store=store)
    assert b.allow("k")
    chain = sg.RateLimiter.chain(a, b)
    for _ in range(5):
        assert not chain.allow("k")  # b denies; a is refunded each time
    assert a.allow("k") and a.allow("k") and not a.allow("k")

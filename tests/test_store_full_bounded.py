"""A full store costs a bounded time per new key, and still reclaims idle keys.

A new key on a full store used to sweep the whole table (2.55 ms on a default store,
the GIL held, for anyone who controls the keys).  Now each refused create looks at a
bounded stretch after a cursor kept in the header; successive creates go round the
table.  (The cost ratio itself is measured in benchmarks/bench_store_full.py.)"""

from __future__ import annotations

import mmap
import struct
import time

import sluicegate as sg

SWEEP_CURSOR_OFFSET = 160  # sg_header.sweep_cursor
SWEEP_BUDGET = 128  # SG_SWEEP_BUDGET


def _cursor(store: sg.SharedStore) -> int:
    with open(store.path, "rb") as f, mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ) as mm:
        return int(struct.unpack_from("<Q", mm, SWEEP_CURSOR_OFFSET)[0])


def _fill_busy(store: sg.SharedStore) -> tuple[sg.RateLimiter, int]:
    lim = sg.RateLimiter("busy", "1/hour", store=store)  # a used key stays busy for an hour
    n = 0
    for i in range(store.capacity + 10):
        try:
            lim.allow(f"fill{i}")
            n += 1
        except sg.StoreFull:
            pass
    return lim, n


def test_a_refused_new_key_looks_at_a_bounded_stretch(tmp_path):
    with sg.SharedStore(path=tmp_path / "full.sg", capacity=4096) as s:
        lim, n = _fill_busy(s)
        assert n == s.capacity
        before = _cursor(s)
        for i in range(10):
            try:
                lim.allow(f"new{i}")
                raise AssertionError("a full store of busy keys admitted a new key")
            except sg.StoreFull:
                pass
        # one stretch per refused create, never the whole table: SWEEP_BUDGET slots, times
        # how sparse keys are in a table that also holds the policies' permanent slots
        st = s.stats()
        stretch = SWEEP_BUDGET * max(1, st["slots"] // (2 * s.capacity))
        assert stretch < st["slots"]
        assert _cursor(s) - before == 10 * stretch


def test_a_full_store_reclaims_idle_keys_everywhere(tmp_path):
    with sg.SharedStore(path=tmp_path / "idle.sg", capacity=16384) as s:
        idle = sg.RateLimiter("idle", "1000/second", store=s)  # idle 1 ms after use
        n_idle = 0
        for i in range(s.capacity + 10):
            try:
                idle.allow(f"i{i}")
                n_idle += 1
            except sg.StoreFull:
                pass
        time.sleep(0.01)
        busy = sg.RateLimiter("busy", "1/hour", store=s)
        admitted = refused = 0
        for i in range(s.capacity + 2000):  # bounded: a few refusals at most on the way
            try:
                busy.allow(f"b{i}")
                admitted += 1
            except sg.StoreFull:
                refused += 1
                if admitted == s.capacity:
                    break
        st = s.stats()
        print(f"idle keys {n_idle}, busy keys admitted {admitted}, refused {refused}, {st}")
        assert admitted == s.capacity, "idle keys were left unreclaimed"
        assert st["used"] == s.capacity


def test_small_stores_sweep_their_whole_table():
    """A table no larger than the budget is swept whole: no refusal while a key is idle."""
    with sg.SharedStore(capacity=40, policies=2) as s:
        assert s.stats()["slots"] == 256  # swept whole: 128 slots per 64 keys' worth of table
        idle = sg.RateLimiter("idle", "1000/second", store=s)
        busy = sg.RateLimiter("busy", "1/hour", store=s)
        for i in range(s.capacity):
            idle.allow(f"i{i}")
        time.sleep(0.01)
        for i in range(s.capacity):
            busy.allow(f"b{i}")  # never StoreFull: every one reclaims an idle key

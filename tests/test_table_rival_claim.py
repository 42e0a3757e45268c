"""A key that another process (or thread) is creating, and that has not been published
yet, is waited for: it is never reported as StoreFull on a store with room.

Found by the close-race chaos test (1 run in ~16: a multi-rate allow_many raised
StoreFull on a store ~20% full).  The slots of the failing key showed the cause: the
key was LIVE in its home slot, and the next four slots were empty with the key's own
identity under generation tags 3, 134, 143 and 164.  Its creator had been preempted
between writing its claim and publishing it; every other thread that needed the key
found no live slot, claimed a farther one, saw the nearer claim of the same key, gave
up, and claimed again at once, ~100000 times in about 50 ms, after which
sg_table_get answered SG_ERR_FULL.  Now the loser waits for the nearer claim to
publish, give up, or go stale (200 ms, then it is taken over), as it already did for a
farther one.

The test leaves a claim exactly as a creator stalled (or SIGKILLed) after writing its
identity leaves it, in the key's home slot, and decides the key."""

from __future__ import annotations

import mmap
import struct
import time

import sluicegate as sg
from sluicegate import _core

HEADER_SIZE = 4096
SLOT_SIZE = 64
NSLOTS_OFFSET = 24  # sg_header.nslots
LIVE_OFFSET = 120  # sg_header.live: the claimer's reservation
NS_LIMITER = 2
CLAIMING = 1
STAMP_SHIFT = 20
M56 = (1 << 56) - 1


def _leave_a_stalled_claim(store, limiter_name, key, tag=7):
    """Write a claim of `key` (its identity written, not yet published) into its home slot."""
    a, b = _core.stable_hash(key, _core.namespace_seed(NS_LIMITER, f"{limiter_name}\x000\x00gcra"))
    stamp = (store._table.now() >> STAMP_SHIFT) & ((1 << 44) - 1)  # a fresh claim, not a stale one
    with open(store.path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        nslots = struct.unpack_from("<Q", mm, NSLOTS_OFFSET)[0]
        off = HEADER_SIZE + (a & (nslots - 1)) * SLOT_SIZE
        assert struct.unpack_from("<Q", mm, off)[0] >> 62 == 0, "the home slot must be empty"
        # id1, id2, meta and v[0] as write_identity leaves them, then the reservation and the claim
        struct.pack_into("<QQQQ", mm, off + 8, (tag << 56) | ((a >> 8) & M56), (tag << 56) | (b & M56),
                         tag << 56, tag << 56)
        live = struct.unpack_from("<Q", mm, LIVE_OFFSET)[0]
        struct.pack_into("<Q", mm, LIVE_OFFSET, live + (1 << 32) + 1)  # one more, one change (SG_LIVE_ONE)
        struct.pack_into("<Q", mm, off, (CLAIMING << 62) | (tag << 52) | stamp)


def test_a_key_whose_creator_stalls_mid_claim_is_waited_for_not_reported_full(store_name):
    with sg.SharedStore(store_name, capacity=1024) as s:
        lim = sg.RateLimiter("stalled", "5/second", store=s)
        _leave_a_stalled_claim(s, "stalled", "k")
        t0 = time.monotonic()
        allowed = lim.allow("k")  # before the fix: StoreFull after ~100000 claims and give-ups
        waited = time.monotonic() - t0
        assert allowed
        # the stalled claim is taken over once stale (200 ms); waiting is bounded by that
        assert waited < 2.0, waited
        st = s.stats()
        assert st["claiming"] == 0 and st["used"] == st["reclaimable"] == 1, st


def test_a_batch_waits_for_a_stalled_creator_too(store_name):
    with sg.SharedStore(store_name, capacity=1024) as s:
        lim = sg.RateLimiter("stalled", "5/second", store=s)
        _leave_a_stalled_claim(s, "stalled", "k5")
        out = lim.allow_many([f"k{i}" for i in range(10)])
        assert out.all()
        st = s.stats()
        assert st["claiming"] == 0 and st["used"] == st["reclaimable"] == 10, st

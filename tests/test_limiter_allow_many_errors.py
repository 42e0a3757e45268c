"""allow_many refuses a single str or bytes (it would decide each character), and a
batch that runs out of store slots charges nothing: the keys admitted before the
failure are refunded and StoreFull says so."""

from __future__ import annotations

import pytest

import sluicegate as sg


@pytest.mark.parametrize("keys", ["abc", b"abc"])
def test_allow_many_refuses_one_str_or_bytes(keys):
    with sg.SharedStore(capacity=64) as s:
        lim = sg.RateLimiter("a", "5/second", store=s)
        with pytest.raises(sg.KeyTypeError, match="iterable of keys"):
            lim.allow_many(keys)
        assert s.stats()["reclaimable"] == 0  # nothing was decided


@pytest.mark.parametrize("rate", ["1/hour", ["1/hour", "10/day"]])
def test_store_full_mid_batch_charges_nothing(rate):
    with sg.SharedStore(capacity=64) as s:
        lim = sg.RateLimiter("full", rate, store=s)
        keys = [f"k{i}" for i in range(100)]
        with pytest.raises(sg.StoreFull, match="refunded") as e:
            lim.allow_many(keys)
        print(e.value)
        # every key the batch reached before the failure has its whole budget back
        for k in keys[:30]:
            d = lim.peek(k)
            assert d.allowed and d.remaining == 1, f"{k} stayed charged: {d}"
        assert lim.stats()["allowed"] == 0

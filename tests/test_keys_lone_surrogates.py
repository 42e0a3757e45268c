"""A key or a name with no UTF-8 form (a lone surrogate, as left by a bad decode with
errors="surrogateescape") raises a SluicegateError naming it, not UnicodeEncodeError."""

from __future__ import annotations

import pytest

import sluicegate as sg

BAD = "user-\udc80"


@pytest.fixture
def anon():
    with sg.SharedStore(capacity=256) as s:
        yield s


@pytest.mark.parametrize("call", ["allow", "check", "peek", "reset", "refund", "allow_many"])
def test_lone_surrogate_key_is_invalid_key(anon, call):
    lim = sg.RateLimiter("k", "5/second", store=anon)
    with pytest.raises(sg.InvalidKey, match="no UTF-8 form"):
        if call == "allow_many":
            lim.allow_many(["ok", BAD])
        else:
            getattr(lim, call)(BAD)


def test_lone_surrogate_key_of_a_multi_rate_limiter(anon):
    lim = sg.RateLimiter("m", ["5/second", "50/minute"], store=anon)
    with pytest.raises(sg.InvalidKey):
        lim.allow(BAD)


@pytest.mark.parametrize("make", [
    lambda s: sg.RateLimiter(BAD, "5/second", store=s),
    lambda s: sg.CircuitBreaker(BAD, store=s),
    lambda s: sg.ConcurrencyLimiter(BAD, 2, store=s),
    lambda s: s.counter(BAD),
])
def test_lone_surrogate_name_is_a_config_error(anon, make):
    with pytest.raises(sg.ConfigError, match="no UTF-8 form") as e:
        make(anon)
    assert "\\x00" not in str(e.value)


def test_lone_surrogate_store_name_is_a_store_error():
    with pytest.raises(sg.StoreError):
        sg.SharedStore(BAD)


def test_valid_non_ascii_keys_still_work(anon):
    lim = sg.RateLimiter("u", "1/minute", store=anon)
    assert lim.allow("ключ") and not lim.allow("ключ")
    assert lim.allow("ключ".encode()) is False  # the same UTF-8 bytes: the same key

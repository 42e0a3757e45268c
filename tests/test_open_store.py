"""sg.open_store(url): the one place that maps a URL (or a bare name or path) to a store,
and what a policy accepts as store=."""

from __future__ import annotations

import pytest
from conftest import unique_name

import sluicegate as sg


def test_shm_url_opens_a_named_store_with_capacity():
    name = unique_name("url")
    try:
        with sg.open_store(f"shm://{name}?capacity=128") as s, sg.SharedStore(name) as same:
            assert s.kind == "named" and s.name == name and s.capacity == 128
            s.counter("c").add(2)
            assert same.counter("c").value == 2
    finally:
        sg.SharedStore.unlink(name, missing_ok=True)


def test_file_url_and_bare_path_open_the_same_file_store(tmp_path):
    p = tmp_path / "limits.sg"
    with sg.open_store(f"file://{p}") as a, sg.open_store(str(p)) as b:
        assert a.kind == b.kind == "file" and a.path == b.path == str(p)


def test_bare_name_is_a_named_store(store_name):
    with sg.open_store(store_name) as s:
        assert s.kind == "named" and s.name == store_name


@pytest.mark.parametrize(
    "url, match",
    [
        ("memcached://x", "unknown scheme 'memcached'"),
        ("shm://a/b", "shm://NAME"),
        ("shm://", "shm://NAME"),
        ("file://relative/path", "three slashes"),
        ("shm://x?size=3", "unknown option 'size'"),
        ("shm://x?capacity=lots", "capacity must be an int"),
        ("", "non-empty"),
    ],
)
def test_bad_urls_name_the_problem(url, match):
    with pytest.raises(sg.ConfigError, match=match):
        sg.open_store(url)


def test_a_policy_accepts_a_store_url(store_name):
    lim = sg.RateLimiter("u", "2/hour", store=f"shm://{store_name}")
    assert lim.store.name == store_name
    assert sg.CircuitBreaker("u", store=f"shm://{store_name}").store is lim.store  # one mapping per URL
    assert [lim.allow("k") for _ in range(3)] == [True, True, False]
    with pytest.raises(sg.ConfigError, match="store must be a SharedStore or a store URL"):
        sg.RateLimiter("u", "2/hour", store=42)  # type: ignore[arg-type]
    with pytest.raises(sg.ConfigError, match="such as 'shm://u'"):
        sg.RateLimiter("u", "2/hour", store="u")  # type: ignore[arg-type]


def test_open_store_keywords_capacity_policies_and_attach_only(store_name):
    with pytest.raises(sg.StoreNotFound):
        sg.open_store(f"shm://{store_name}", create=False)
    with sg.open_store(f"shm://{store_name}", capacity=256, policies=8) as s:
        assert s.capacity == 256
        with sg.open_store(store_name, create=False) as same:
            assert same.capacity == 256
    with pytest.raises(sg.ConfigError, match="says capacity=256 but capacity=512 was given"):
        sg.open_store(f"shm://{store_name}?capacity=256", capacity=512)

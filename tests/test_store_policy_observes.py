"""store.policy(name) builds an observer: it follows the directory entry as it is and
publishes nothing, so a CLI, a health probe or an exporter never puts back a code
configuration that a deploy replaced while the observer was being built."""

from __future__ import annotations

import pytest
from conftest import unique_name

import sluicegate as sg
from sluicegate import directory


def test_a_deploy_between_reading_and_building_is_not_undone(monkeypatch):
    store = sg.SharedStore()
    name = unique_name("obs")
    sg.RateLimiter(name, "5/second", store=store)  # the old code
    real = directory.BUILDERS["limiter"]

    def deploy_meanwhile(st, nm, code):
        # the new code lands (from another process: outside this build) after the
        # observer read the entry, before it builds
        token = directory.ATTACHING.set(False)
        try:
            sg.RateLimiter(name, "50/second", store=store)
        finally:
            directory.ATTACHING.reset(token)
        return real(st, nm, code)

    monkeypatch.setitem(directory.BUILDERS, "limiter", deploy_meanwhile)
    version_before = [p.version for p in store.policies() if p.name == name][0]
    seen = store.policy(name)
    info = [p for p in store.policies() if p.name == name][0]
    assert info.code["rate"] == ["50/second"], "the observer put the old code configuration back"
    assert info.version == version_before + 1  # only the deploy published
    assert seen.config["rate"] == ["50/second"]  # and the observer follows it
    store.close()


def test_building_from_the_directory_publishes_nothing():
    store = sg.SharedStore()
    name = unique_name("obs")
    br = sg.CircuitBreaker(name, store=store, failure_threshold=3)
    br.reconfigure(failure_threshold=7)
    before = store.policies()
    again = store.policy(name, kind="breaker")
    assert again.config["failure_threshold"] == 7
    assert [(p.version, p.code, p.override) for p in store.policies()] == \
        [(p.version, p.code, p.override) for p in before]
    store.close()


def test_an_unknown_name_is_not_found():
    store = sg.SharedStore()
    with pytest.raises(sg.PolicyNotFound):
        store.policy(unique_name("none"))
    store.close()

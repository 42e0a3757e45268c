"""Review findings on store.py: a pickled store must re-attach to the store it names,
never silently create a different, empty one."""

from __future__ import annotations

import pickle

import pytest

import sluicegate as sg


def test_unpickling_an_unlinked_named_store_does_not_create_a_fresh_one(store_name):
    with sg.SharedStore(store_name, capacity=64) as s:
        s.counter("x").add(5)
        blob = pickle.dumps(s)
        sg.SharedStore.unlink(store_name)
        # a child would now get a new empty store of default capacity, sharing nothing
        with pytest.raises(sg.StoreNotFound):
            pickle.loads(blob).close()
    sg.SharedStore.unlink(store_name, missing_ok=True)


def test_file_store_pickled_with_a_relative_path_reattaches_from_another_cwd(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    with sg.SharedStore(path="limits.sg", capacity=64) as s:
        s.counter("x").add(5)
        blob = pickle.dumps(s)
        monkeypatch.chdir(tmp_path / "b")  # a worker started from another directory
        try:
            s2 = pickle.loads(blob)
        except sg.StoreError:
            s2 = None
        assert not (tmp_path / "b" / "limits.sg").exists(), "unpickling created a second store"
        assert s2 is not None and s2.counter("x").value == 5
        s2.close()

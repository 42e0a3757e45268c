"""A store file another user owns or can write is refused unless trust_foreign=True:
whoever can write it can change this process's limits or kill it by truncating it."""

from __future__ import annotations

import os
import pickle

import pytest

import sluicegate as sg

OTHER_UID = 12345


def _make(tmp_path, name="s.sg"):
    p = tmp_path / name
    sg.SharedStore(path=p, capacity=16).close()
    return p


def _give_away(path):
    try:
        os.chown(path, OTHER_UID, -1)
    except PermissionError:
        pytest.skip("giving a file to another uid needs root")


def test_file_store_owned_by_another_uid_is_refused(tmp_path):
    p = _make(tmp_path)
    _give_away(p)
    with pytest.raises(sg.StoreError, match=f"belongs to uid {OTHER_UID}.*trust_foreign=True"):
        sg.SharedStore(path=p)
    with sg.SharedStore(path=p, trust_foreign=True) as s:
        assert s.capacity == 16


def test_named_store_owned_by_another_uid_is_refused_unless_trusted(store_name):
    with sg.SharedStore(store_name, capacity=16) as s:
        path = s.path
    _give_away(path)
    with pytest.raises(sg.StoreError, match="belongs to uid"):
        sg.SharedStore(store_name)
    with sg.SharedStore(store_name, trust_foreign=True) as s:
        assert s.capacity == 16


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602, 0o660])
def test_store_writable_by_group_or_others_is_refused(tmp_path, mode):
    p = _make(tmp_path)
    os.chmod(p, mode)
    with pytest.raises(sg.StoreError, match=rf"writable by its group or by other users \(mode {mode:#o}\).*chmod 600"):
        sg.SharedStore(path=p)
    with sg.SharedStore(path=p, trust_foreign=True) as s:
        assert s.capacity == 16


def test_named_store_writable_by_others_is_refused(store_name):
    with sg.SharedStore(store_name, capacity=16) as s:
        path = s.path
    os.chmod(path, 0o666)
    with pytest.raises(sg.StoreError, match="writable"):
        sg.SharedStore(store_name)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o400 | 0o200])
def test_store_only_its_owner_can_write_is_used(tmp_path, mode):
    p = _make(tmp_path)
    os.chmod(p, mode)
    with sg.SharedStore(path=p) as s:
        assert s.capacity == 16


def test_a_trusted_store_stays_trusted_when_pickled(tmp_path):
    p = _make(tmp_path)
    _give_away(p)
    with sg.SharedStore(path=p, trust_foreign=True) as s:
        with pickle.loads(pickle.dumps(s)) as again:
            assert again.capacity == 16


def test_trust_foreign_must_be_a_bool(tmp_path):
    with pytest.raises(sg.ConfigError, match="trust_foreign"):
        sg.SharedStore(path=tmp_path / "x.sg", trust_foreign="yes")

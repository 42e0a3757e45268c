"""A creator SIGKILLed mid-create leaves a hidden temp file in the shm directory: the
next create of that store removes it once it is stale.  SharedStore.unlink raises
StoreError, not a raw PermissionError, when the store is not ours to remove."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import sluicegate as sg
from sluicegate import store as st

KILLED_CREATOR = textwrap.dedent("""
    import os, signal, sys
    import sluicegate as sg
    from sluicegate import store

    def die(*args):  # SIGKILLed with its temp file open, before it is published
        os.kill(os.getpid(), signal.SIGKILL)

    store._reserve = die
    sg.SharedStore(sys.argv[1], capacity=64)
""")


def _tmp_files(name):
    return [f for f in os.listdir(st._shm_dir()) if f.startswith(f".{st._PREFIX}{name}.") and f.endswith(".tmp")]


def test_a_killed_creators_temp_file_is_removed_when_stale(store_name):
    r = subprocess.run([sys.executable, "-c", KILLED_CREATOR, store_name], capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL
    left = _tmp_files(store_name)
    assert len(left) == 1, left
    path = os.path.join(st._shm_dir(), left[0])
    # fresh: it may be a creator in another pid namespace at work, so it stays
    sg.SharedStore(store_name, capacity=64).close()
    sg.SharedStore.unlink(store_name)
    assert _tmp_files(store_name) == left
    old = time.time() - 2 * st._STALE_TMP_S
    os.utime(path, (old, old))
    with sg.SharedStore(store_name, capacity=64):
        pass
    assert _tmp_files(store_name) == []


def test_a_live_creators_temp_file_is_kept(store_name):
    path = os.path.join(st._shm_dir(), f".{st._PREFIX}{store_name}.{os.getpid()}.1.tmp")
    with open(path, "wb"):
        pass
    try:
        old = time.time() - 2 * st._STALE_TMP_S
        os.utime(path, (old, old))
        sg.SharedStore(store_name, capacity=64).close()
        assert os.path.exists(path)
    finally:
        os.unlink(path)


def test_unlink_of_a_store_not_ours_is_a_store_error(store_name):
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    sg.SharedStore(store_name, capacity=64).close()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setuid(12345)
            try:
                sg.SharedStore.unlink(store_name)
                msg = b"unlinked"
            except sg.StoreError as e:
                msg = b"StoreError: " + str(e).encode()
            except BaseException as e:  # noqa: BLE001
                msg = repr(e).encode()
            os.write(w, msg)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = os.read(r, 4096).decode()
    os.close(r)
    assert out.startswith("StoreError: cannot unlink store"), out
    assert os.path.exists(st._named_path(store_name))

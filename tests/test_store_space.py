"""A store on a filesystem that cannot back it raises StoreError, never SIGBUS.

Each test mounts a 1 MiB tmpfs (the small /dev/shm of a container) and runs the
store in a subprocess, so a SIGBUS shows as a negative exit code instead of killing
pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

TMPFS_BYTES = 1 << 20


@pytest.fixture
def tiny_tmpfs(tmp_path):
    d = tmp_path / "tmpfs"
    d.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(d)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot run mount to make a tiny tmpfs: {e}")
    if r.returncode != 0:
        pytest.skip(f"mounting a tiny tmpfs was refused (needs root): {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert r.returncode != -signal.SIGBUS, f"the store died of SIGBUS: {r.stdout}{r.stderr}"
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    return r


def _fill(directory) -> None:
    """Fill the filesystem until it refuses another byte."""
    fd = os.open(os.path.join(directory, "ballast"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(2 * TMPFS_BYTES // 4096):
            os.write(fd, b"\1" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_store_larger_than_the_free_space_raises_store_error(tiny_tmpfs):
    path = tiny_tmpfs / "big.sg"
    r = _run(f"""
        import sluicegate as sg
        try:
            s = sg.SharedStore(path={str(path)!r}, capacity=1 << 16)
        except sg.StoreError as e:
            print("StoreError:", e)
        else:
            s.stats()  # touches every page of the table
            print("created")
    """)
    assert "StoreError:" in r.stdout, r.stdout
    need = int(__import__("sluicegate")._core.store_size(1 << 16))
    assert str(tiny_tmpfs) in r.stdout and str(need) in r.stdout and "free" in r.stdout
    assert os.listdir(tiny_tmpfs) == [], "a failed creation must leave no file behind"


def test_store_on_a_full_filesystem_raises_store_error(tiny_tmpfs):
    _fill(tiny_tmpfs)
    path = tiny_tmpfs / "small.sg"
    r = _run(f"""
        import sluicegate as sg
        try:
            s = sg.SharedStore(path={str(path)!r}, capacity=16)
        except sg.StoreError as e:
            print("StoreError:", e)
        else:
            s.counter("c").add(1)
            print("created")
    """)
    assert "StoreError:" in r.stdout, r.stdout
    assert sorted(os.listdir(tiny_tmpfs)) == ["ballast"]


def test_named_store_in_a_full_shm_dir_raises_store_error(tiny_tmpfs):
    """The named-store path goes through the same creation (TMPDIR stands in for /dev/shm)."""
    _fill(tiny_tmpfs)
    name = f"space-{uuid.uuid4().hex[:8]}"
    r = _run(f"""
        import sluicegate as sg, sluicegate.store as st
        st._shm_dir = lambda: {str(tiny_tmpfs)!r}
        try:
            sg.SharedStore({name!r}, capacity=16)
        except sg.StoreError as e:
            print("StoreError:", e)
    """)
    assert "StoreError:" in r.stdout, r.stdout


def test_a_store_created_before_the_filesystem_fills_keeps_working(tiny_tmpfs):
    """Its pages were reserved at creation: filling the filesystem afterwards cannot
    make the first touch of a page fail."""
    path = tiny_tmpfs / "early.sg"
    r = _run(f"""
        import os, sluicegate as sg
        s = sg.SharedStore(path={str(path)!r}, capacity=2048)   # ~270 KiB of 1 MiB
        fd = os.open({str(tiny_tmpfs / 'ballast')!r}, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(1000):
                os.write(fd, b"\\1" * 4096)
        except OSError:
            pass
        lim = sg.RateLimiter("fill", "5/second", store=s)
        for i in range(2000):
            lim.allow(str(i))
        print("used", s.stats()["used"])
    """)
    assert "used" in r.stdout


def test_without_posix_fallocate_the_zeros_are_written(tiny_tmpfs):
    """Where posix_fallocate is missing or unsupported, the blocks are written instead."""
    big, small = tiny_tmpfs / "big.sg", tiny_tmpfs / "small.sg"
    r = _run(f"""
        import errno, os, sluicegate as sg
        def unsupported(fd, off, n):
            raise OSError(errno.EOPNOTSUPP, "not supported")
        os.posix_fallocate = unsupported
        try:
            sg.SharedStore(path={str(big)!r}, capacity=1 << 16)
        except sg.StoreError as e:
            print("StoreError:", e)
        del os.posix_fallocate
        s = sg.SharedStore(path={str(small)!r}, capacity=64)
        st = os.stat({str(small)!r})
        print("allocated", st.st_blocks * 512 >= st.st_size)
    """)
    assert "StoreError:" in r.stdout and "allocated True" in r.stdout, r.stdout
    assert sorted(os.listdir(tiny_tmpfs)) == ["small.sg"]

"""A ConcurrencyLimiter holder in another pid namespace (a container sharing
/dev/shm or a volume) is never reclaimed: its pid means another process here, or
none, so its liveness cannot be judged from this namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import sluicegate as sg
from sluicegate import _procident as pi

NO_SUCH_PID = (1 << 22) - 9


def _foreign_ns() -> int:
    return pi.pid_namespace() ^ 0x5A5A or 1


def test_owner_word_records_the_pid_namespace():
    me = pi.current_owner()
    assert pi.owner_pid(me) == os.getpid()
    assert pi.owner_ns(me) == pi.pid_namespace() != 0
    assert pi.owner_local(me) and pi.owner_alive(me)


def test_holders_of_another_namespace_are_never_reclaimed(store):
    cap = sg.ConcurrencyLimiter("ns", limit=3, store=store)
    ns = _foreign_ns()
    # in their namespace these are live processes; here pid 1 is init (another start
    # time) and NO_SUCH_PID is nobody: judged from here, both would look dead
    foreign = [pi.owner_word(1, 12345, ns), pi.owner_word(NO_SUCH_PID, 5, ns)]
    dead_local = pi.owner_word(NO_SUCH_PID, 5)
    for owner in (*foreign, dead_local):
        assert cap._engine.try_acquire(owner, 0) >= 0
    assert cap.in_use == 3
    p = cap.try_acquire()  # reclaims the dead local holder only
    assert p is not None
    assert cap.try_acquire() is None, "a holder of another pid namespace lost its permit"
    owners = {o for _, o, _ in cap._engine.holders()}
    assert owners == {*foreign, pi.current_owner()}
    assert cap.reclaim() == 0
    assert sorted(h["local"] for h in cap.holders()) == [False, False, True]
    p.release()


def _unshare_works() -> str | None:
    if not shutil.which("unshare"):
        return "no unshare(1)"
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True,
                       timeout=30)
    return None if r.returncode == 0 else f"unshare --pid refused: {r.stderr.strip()}"


HOLDER = textwrap.dedent("""
    import os, sys
    import sluicegate as sg
    s = sg.SharedStore(sys.argv[1])
    cap = sg.ConcurrencyLimiter("ns", limit=2, store=s)
    p = cap.acquire(timeout=5)
    print("held", os.getpid(), flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
    p.release()
""")


def test_a_holder_in_a_real_child_pid_namespace_keeps_its_permit(store_name):
    why = _unshare_works()
    if why:
        pytest.skip(why)
    store = sg.SharedStore(store_name, capacity=256)
    cap = sg.ConcurrencyLimiter("ns", limit=2, store=store)
    child = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", HOLDER, store_name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("held 1"), f"the holder did not start in a new pid namespace: {line!r}"
        mine = cap.acquire(timeout=5)
        # the cap is full: the holder in the child namespace is pid 1 there, and pid 1
        # here is init with another start time; it must not be taken for dead
        assert cap.try_acquire() is None, "3 holders for a limit of 2"
        assert cap.in_use == 2
        assert [h["local"] for h in cap.holders() if h["pid"] == 1] == [False]
        mine.release()
    finally:
        child.stdin.close()
        child.wait(30)
        store.close()
    assert child.returncode == 0

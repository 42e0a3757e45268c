"""The default store in pid namespaces, as containers run applications: a master that is
its namespace's pid 1 (`docker run IMAGE gunicorn ...`) and its workers share one store,
and an application in another pid namespace that shares /dev/shm (a Kubernetes pod's
containers, `--ipc=host`) keeps its store when another one creates its own.  Each
application runs under `unshare --pid --fork --mount-proc` (servers.pid_namespace_prefix)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import servers

import sluicegate as sg

pytestmark = pytest.mark.timeout(120)

_POOL_AS_PID_1 = textwrap.dedent(
    """
    import json, multiprocessing as mp, os, sys
    import sluicegate as sg

    def take(name):
        lim = sg.RateLimiter(name, "100/hour")
        return os.getpid(), lim.store.name, sum(lim.allow("k") for _ in range(100))

    if __name__ == "__main__":
        with mp.get_context(sys.argv[1]).Pool(4) as pool:
            got = pool.map(take, ["pid1"] * 4, chunksize=1)
        print(json.dumps({"pid": os.getpid(), "got": got}))
    """
)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_pool_whose_master_is_pid_1_shares_one_store(method, tmp_path):
    script = tmp_path / "pool_as_pid_1.py"
    script.write_text(_POOL_AS_PID_1)
    env = {k: v for k, v in os.environ.items() if k != "SLUICEGATE_STORE"}
    r = subprocess.run([*servers.pid_namespace_prefix(), sys.executable, str(script), method], capture_output=True,
                       text=True, timeout=90, env=env, start_new_session=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    stores = {name for _pid, name, _n in out["got"]}
    for name in stores:
        sg.SharedStore.unlink(name, missing_ok=True)
    print(f"{method}: master pid {out['pid']}, children {[(p, n) for p, _s, n in out['got']]}, stores {stores}")
    assert out["pid"] == 1
    assert len(stores) == 1, f"the children did not share: {stores}"
    assert next(iter(stores)).startswith(f"app-{os.getuid()}-1-")
    assert sum(n for _p, _s, n in out["got"]) == 100  # 400 attempts, one budget


_SHOW = "import sluicegate as sg, sys; s = sg.default_store(); print(s.name, s.path, flush=True)"
_HOLDER = _SHOW + "; sys.stdin.read()"


def test_an_application_in_another_pid_namespace_keeps_its_store():
    """Both applications are pid 1 of their namespaces and see one /dev/shm. Making the
    second one's store removes stale default stores; the first one's is not stale."""
    prefix = servers.pid_namespace_prefix()
    env = {k: v for k, v in os.environ.items() if k != "SLUICEGATE_STORE"}
    holder = subprocess.Popen([*prefix, sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    stores: list[list[str]] = []  # [name, path] of each application's default store
    try:
        assert holder.stdout is not None and holder.stdin is not None
        stores.append(holder.stdout.readline().split())
        r = subprocess.run([*prefix, sys.executable, "-c", _SHOW], capture_output=True, text=True, timeout=60,
                           env=env, start_new_session=True)
        assert r.returncode == 0, r.stderr[-3000:]
        stores.append(r.stdout.split())
        print(f"holder's store {stores[0]}, other namespace's store {stores[1]}")
        assert len(stores[0]) == 2 and stores[0] != stores[1]
        assert os.path.exists(stores[0][1]), "another namespace's application removed a live store"
        holder.stdin.close()
        assert holder.wait(30) == 0, holder.stderr.read() if holder.stderr else ""
    finally:
        servers.stop_group(holder, grace=5)
        for name, *_path in filter(None, stores):
            sg.SharedStore.unlink(name, missing_ok=True)


def test_only_names_of_this_pid_namespace_are_judged_stale():
    from sluicegate import _approot
    from sluicegate._procident import pid_namespace

    uid, ns = os.getuid(), pid_namespace()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = f"{_approot.PREFIX}{uid}-{ended.pid}-12345"  # a pid and start of no live process here
    assert _approot.is_stale(f"{dead}-{ns}")
    assert not _approot.is_stale(f"{dead}-{ns % 65535 + 1}")  # another namespace's: its pid is not ours to judge
    assert _approot.is_stale(dead)  # a name from before the namespace tag is judged as it was
    assert not _approot.is_stale(_approot.default_store_name())  # ours, alive

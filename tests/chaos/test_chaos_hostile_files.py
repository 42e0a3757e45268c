"""Chaos: a store file attacked while other processes are attached and deciding.

Four forked workers attach to a file-backed store and decide as fast as they can; the
driver (in a subprocess, so a crash is an exit code, not a dead pytest) then
truncates the file, renames garbage over it, overwrites it in place with garbage,
makes it group-writable, or gives it to another uid.  Afterwards:

- a new attacher gets a clear StoreError, never a crash;
- the attached workers keep working on their mapping, or fail with a
  SluicegateError, and never die of a signal;
- EXCEPT a file truncated under a live mapping: the workers' next access to a lost
  page dies of SIGBUS.  That is the documented remaining risk (README, "Stores": the
  kernel offers no way to trap it from a library; keep store files writable only by
  their owner, which the owner checks enforce).  The test asserts exactly that.

Each scenario prints what it did: the workers' exits and decisions before and after
the attack, and what the new attacher got.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

SECONDS = float(os.environ.get("SLUICEGATE_CHAOS_SECONDS", "1.5"))
OTHER_UID = 12345
SLUICEGATE_ERROR_EXIT = 3  # a worker that caught a SluicegateError

DRIVER = textwrap.dedent("""
    import json, os, signal, sys, time
    import sluicegate as sg

    scenario, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    marker = path + ".attacked"
    NWORKERS = 4

    def worker(idx, deadline):
        res = {"decisions": 0, "after_attack": 0, "error": None}
        def report(code):
            with open(f"{path}.w{idx}.json", "w") as f:
                json.dump(res, f)
            os._exit(code)
        try:
            st = sg.SharedStore(path=path)
            lim = sg.RateLimiter("hostile", "1000000/second", store=st)
            ctr = st.counter("decisions")
        except sg.SluicegateError as e:
            res["error"] = f"attach: {type(e).__name__}: {e}"[:300]
            report(3)
        n = after = 0
        attacked = False
        while time.monotonic() < deadline:
            try:
                lim.allow(f"k{n % 300}")
                ctr.add(1)
            except sg.SluicegateError as e:
                res["error"] = f"{type(e).__name__}: {e}"[:300]
                break
            n += 1
            if attacked:
                after += 1
            elif n % 256 == 0 and os.path.exists(marker):
                attacked = True
            if n % 256 == 0:
                res["decisions"], res["after_attack"] = n, after
        res["decisions"], res["after_attack"] = n, after
        report(3 if res["error"] else 0)

    store = sg.SharedStore(path=path, capacity=1024)
    size = os.path.getsize(path)
    ctr = store.counter("decisions")
    t0 = time.monotonic()
    deadline = t0 + seconds + 0.5
    kids = []
    for k in range(NWORKERS):
        pid = os.fork()
        if pid == 0:
            try:
                worker(k, deadline)
            finally:
                os._exit(70)
        kids.append(pid)
    while ctr.value < 20000 and time.monotonic() < t0 + 10:  # every worker attached and deciding
        time.sleep(0.005)
    before = ctr.value
    store.close()  # this process is the next attacher: it must not hold the mapping
    time.sleep(seconds / 3)

    if scenario == "truncate":
        os.truncate(path, size // 2)
    elif scenario == "replace":  # garbage renamed over the store: attached ones keep the old inode
        with open(path + ".new", "wb") as f:
            f.write(os.urandom(size))
        os.rename(path + ".new", path)
    elif scenario == "garbage":  # the same inode overwritten, header and body
        with open(path, "r+b") as f:
            f.write(os.urandom(size))
    elif scenario == "group_writable":
        os.chmod(path, 0o660)
    elif scenario == "foreign_owner":
        os.chown(path, int(sys.argv[4]), -1)
    open(marker, "w").close()

    attach = {}
    try:
        s2 = sg.SharedStore(path=path)
    except sg.StoreError as e:
        attach["new_attacher"] = f"StoreError: {e}"
    except BaseException as e:
        attach["new_attacher"] = f"UNEXPECTED {type(e).__name__}: {e}"
    else:
        s2.close()
        attach["new_attacher"] = "attached"
    if scenario == "foreign_owner":  # the explicit opt-in still works on a store that is intact
        try:
            with sg.SharedStore(path=path, trust_foreign=True) as s3:
                lim3 = sg.RateLimiter("hostile", "1000000/second", store=s3)
                attach["trusted_attacher"] = f"decided {lim3.allow('t')}"
        except BaseException as e:
            attach["trusted_attacher"] = f"UNEXPECTED {type(e).__name__}: {e}"

    workers = []
    for k, pid in enumerate(kids):
        t_wait = time.monotonic() + seconds + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > t_wait:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.01)
        w = {"pid": pid}
        if status is None:
            w["exit"] = "hung"
        elif os.WIFSIGNALED(status):
            w["exit"] = -os.WTERMSIG(status)
        else:
            w["exit"] = os.WEXITSTATUS(status)
        try:
            with open(f"{path}.w{k}.json") as f:
                w.update(json.load(f))
        except FileNotFoundError:
            pass
        workers.append(w)
    print(json.dumps({"scenario": scenario, "size": size, "decisions_before_attack": before, **attach,
                      "workers": workers}))
""")


def _run(scenario, tmp_path, *extra):
    path = tmp_path / "hostile.sg"
    r = subprocess.run([sys.executable, "-c", DRIVER, scenario, str(path), str(SECONDS), *extra],
                       capture_output=True, text=True, timeout=60 + 3 * SECONDS)
    assert r.returncode == 0, f"driver exit {r.returncode} (negative: a signal): {r.stderr[-3000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"\n  chaos hostile file, {scenario}: {out}")
    assert out["decisions_before_attack"] >= 20000, "the workers never got going"
    return out


def _assert_kept_working(out):
    for w in out["workers"]:
        assert w["exit"] == 0, f"worker {w}: an attached process must keep working on its mapping"
        assert w["after_attack"] > 0, f"worker {w} made no decision after the attack"


def test_garbage_renamed_over_a_live_store(tmp_path):
    """New attachers find the garbage and refuse it; attached processes keep the old inode."""
    out = _run("replace", tmp_path)
    assert out["new_attacher"].startswith("StoreError:"), out["new_attacher"]
    _assert_kept_working(out)


def test_garbage_written_over_a_live_store(tmp_path):
    """The mapping itself turns to garbage: a new attacher is refused; attached processes
    go on deciding on garbage or raise a SluicegateError, never a signal."""
    out = _run("garbage", tmp_path)
    assert out["new_attacher"].startswith("StoreError:"), out["new_attacher"]
    for w in out["workers"]:
        assert w["exit"] in (0, SLUICEGATE_ERROR_EXIT), f"worker {w}: crashed or hung on a garbage mapping"


def test_store_made_group_writable_while_attached(tmp_path):
    out = _run("group_writable", tmp_path)
    assert "writable by its group or by other users" in out["new_attacher"], out["new_attacher"]
    _assert_kept_working(out)


def test_store_given_to_another_uid_while_attached(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("giving a file to another uid needs root")
    out = _run("foreign_owner", tmp_path, str(OTHER_UID))
    assert f"belongs to uid {OTHER_UID}" in out["new_attacher"], out["new_attacher"]
    assert out["trusted_attacher"] == "decided True", out["trusted_attacher"]
    _assert_kept_working(out)


def test_store_truncated_under_live_mappings_sigbus_is_the_documented_risk(tmp_path):
    """A new attacher sees the file is shorter than its header says (StoreError).  The
    workers that still map the lost pages die of SIGBUS on their next access: the
    remaining risk the README documents ("Stores"), which no library can trap.  Any
    other signal, or a hang, fails."""
    out = _run("truncate", tmp_path)
    assert out["new_attacher"].startswith("StoreError:") and "truncated" in out["new_attacher"], out["new_attacher"]
    exits = [w["exit"] for w in out["workers"]]
    assert set(exits) <= {-signal.SIGBUS, 0, SLUICEGATE_ERROR_EXIT}, f"unexpected exits {exits}"
    sigbus = exits.count(-signal.SIGBUS)
    print(f"  {sigbus} of {len(exits)} workers died of SIGBUS: the documented risk of a truncation under a live "
          "mapping (README, Stores)")
    # if this stops happening, the README's remaining-risk note is out of date: say so there
    assert sigbus >= 1, "no worker hit SIGBUS: update the README's note on truncation under a live mapping"

"""Operating a live store from a shell, run as real subprocesses: `sluicegate ls`, `reset`,
`open`, `close`, `disable` (a breaker in another process follows at its next call) and
`unlink` (refused while processes have the store mapped, unless --yes)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys

import pytest
from conftest import unique_name

import sluicegate as sg
from sluicegate.__main__ import _fmt_bytes
from sluicegate.store import _named_path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SLUICEGATE_STORE", None)
    return subprocess.run([sys.executable, "-m", "sluicegate", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def one_line_error(r: subprocess.CompletedProcess[str], command: str) -> str:
    assert r.returncode == 1 and r.stdout == "", r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sluicegate {command}: "), r.stderr
    return lines[0]


def _service(store_name: str, breaker: str, conn) -> None:
    """A service process: answers "call" with what its breaker did with one call."""
    br = sg.CircuitBreaker(breaker, store=sg.SharedStore(store_name, create=False), failure_threshold=1,
                           reset_timeout=600.0)
    conn.send(os.getpid())
    while (msg := conn.recv()) is not None:
        try:
            with br:
                if msg == "fail":
                    raise OSError("down")
            conn.send(("ok", br.state))
        except sg.CircuitOpen:
            conn.send(("rejected", br.state))
        except OSError:
            conn.send(("failed", br.state))


@pytest.fixture
def service(store, store_name):
    """A spawned process using breaker "pay" in the store; service(msg) -> (outcome, state)."""
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=_service, args=(store_name, "pay", theirs))
    p.start()
    assert ours.poll(60)
    pid = ours.recv()

    def call(msg: str = "call") -> tuple[str, str]:
        ours.send(msg)
        assert ours.poll(30)
        return ours.recv()

    call.pid = pid  # type: ignore[attr-defined]
    yield call
    ours.send(None)
    p.join(30)
    if p.is_alive():
        p.kill()
        p.join(30)
    assert p.exitcode == 0


def test_open_close_and_disable_reach_a_breaker_in_another_process(store_name, service):
    assert service() == ("ok", "closed")
    r = cli("open", store_name, "pay")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"breaker 'pay' in shm://{store_name}: closed -> forced_open; every process rejects its "
                        "calls until `sluicegate close`\n")
    assert service() == ("rejected", "forced_open")  # at its next call
    r = cli("close", f"shm://{store_name}", "pay")
    assert r.returncode == 0 and "forced_open -> closed" in r.stdout
    assert service() == ("ok", "closed")
    r = cli("disable", store_name, "pay")
    assert r.returncode == 0 and "closed -> disabled" in r.stdout
    assert service("fail") == ("failed", "disabled") and service() == ("ok", "disabled")  # never trips
    assert cli("close", store_name, "pay").returncode == 0
    assert service("fail") == ("failed", "open") and service() == ("rejected", "open")


def test_reset_a_breaker_and_a_limiters_keys(store, store_name, service):
    service("fail")
    assert service() == ("rejected", "open")
    r = cli("reset", store_name, "pay")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("pay' in shm://" + store_name + ": reset (open -> closed; window, backoff and counts "
                             "cleared)\n")
    assert service() == ("ok", "closed")
    br = store.policy("pay")
    assert br.stats()["failures"] == 0 and br.stats()["calls"] == 1

    lim = sg.RateLimiter("login", "2/hour", store=store)
    for key in ("alice", "bob"):
        assert [lim.allow(key) for _ in range(3)] == [True, True, False]
    r = cli("reset", store_name, "login", "--key", "alice")
    assert r.returncode == 0 and r.stdout.endswith("1 key reset to a full budget: 'alice'\n")
    assert lim.allow("alice") and not lim.allow("bob")
    r = cli("reset", store_name, "login", "-k", "alice", "-k", "bob")
    assert r.returncode == 0 and "2 keys reset" in r.stdout
    assert lim.allow("bob")


def test_operating_errors_are_one_line(store, store_name, service):
    sg.RateLimiter("login", "2/hour", store=store)
    sg.ConcurrencyLimiter("pg", 2, store=store)
    missing = unique_name("nostore")
    for args, message in [
        (("reset", store_name, "login"), "a limiter is reset key by key: pass --key KEY"),
        (("reset", store_name, "pay", "--key", "x"), "--key is for limiters; a breaker has no keys"),
        (("reset", store_name, "pg"), "a cap cannot be reset"),
        (("reset", store_name, "nope"), "no policy 'nope'"),
        (("open", store_name, "login"), f"'login' in shm://{store_name} is a limiter, not a breaker"),
        (("close", store_name, "nope"), "no policy 'nope' of kind 'breaker'"),
        (("disable", missing, "pay"), f"store {missing!r} does not exist"),
    ]:
        assert message in one_line_error(cli(*args), args[0])
    assert service() == ("ok", "closed")  # nothing changed
    assert not os.path.exists(_named_path(missing))


def test_ls_lists_this_hosts_stores_and_the_processes_using_them(tmp_path, store, store_name, service):
    sg.RateLimiter("api", "5/second", store=store).allow("k")
    garbage = unique_name("garbage")
    with open(_named_path(garbage), "wb") as f:
        f.write(b"not a store" * 100)
    file_store = tmp_path / "limits.sg"
    sg.SharedStore(path=file_store, capacity=64).close()
    try:
        r = cli("ls", "--json", str(file_store))
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        got = {d["name"] or d["path"]: d for d in doc["stores"]}
        mine = got[store_name]
        assert mine["path"] == store.path and mine["size"] == os.path.getsize(store.path)
        assert mine["owner_uid"] == os.getuid() and mine["error"] is None and mine["store"] == f"shm://{store_name}"
        assert mine["policies"] == 2 and mine["stats"]["capacity"] == 4096 and mine["fill"] == 1 / 4096
        assert {service.pid, os.getpid()} <= set(mine["attached"])
        assert "not a sluicegate store" in got[garbage]["error"] and got[garbage]["policies"] is None
        assert got[str(file_store)]["store"] == f"file://{file_store}" and got[str(file_store)]["policies"] == 0

        r = cli("ls")
        assert r.returncode == 0, r.stderr
        row = next(line.split() for line in r.stdout.splitlines() if line.startswith(store_name + " "))
        assert row[3:7] == ["<1%", "<1%", "2", str(len(mine["attached"]))] and row[-1] == store.path
        assert f"{garbage}: not readable: " in r.stdout
    finally:
        os.unlink(_named_path(garbage))


def test_unlink_refuses_while_processes_use_the_store_unless_yes(store, store_name, service):
    r = cli("unlink", store_name)
    line = one_line_error(r, "unlink")
    pids = ", ".join(map(str, sorted([service.pid, os.getpid()])))  # the service and this test
    assert f"is mapped by 2 running processes (pid {pids})" in line and "pass --yes" in line
    assert os.path.exists(store.path)
    r = cli("unlink", f"shm://{store_name}", "--yes")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"unlinked store shm://{store_name} ({store.path}: ")
    assert r.stdout.rstrip().endswith("; 2 processes still have it mapped until they exit")
    assert not os.path.exists(store.path)
    assert service() == ("ok", "closed")  # the service keeps its mapping
    assert "does not exist" in one_line_error(cli("unlink", store_name), "unlink")


def test_unlink_an_unused_store_or_file_and_never_a_file_that_is_not_a_store(tmp_path, store_name):
    with sg.SharedStore(store_name) as s:
        sg.RateLimiter("api", "1/second", store=s).allow("k")
    size = _fmt_bytes(os.path.getsize(_named_path(store_name)))
    r = cli("unlink", store_name)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"unlinked store shm://{store_name} ({_named_path(store_name)}: {size}, 1 policy)\n"
    assert not os.path.exists(_named_path(store_name))
    path = tmp_path / "limits.sg"
    sg.SharedStore(path=path, capacity=64).close()
    r = cli("unlink", f"file://{path}")
    assert r.returncode == 0 and not path.exists()
    other = tmp_path / "notes.txt"
    other.write_text("keep me\n" * 10_000)
    assert "is not a store this user can open" in one_line_error(cli("unlink", str(other)), "unlink")
    assert other.exists()
    garbage = unique_name("garbage")
    with open(_named_path(garbage), "wb") as f:
        f.write(b"x" * 100)
    try:
        assert "cannot be opened" in one_line_error(cli("unlink", garbage), "unlink")
        r = cli("unlink", garbage, "--yes")
        assert r.returncode == 0 and "unreadable" in r.stdout and not os.path.exists(_named_path(garbage))
    finally:
        if os.path.exists(_named_path(garbage)):
            os.unlink(_named_path(garbage))

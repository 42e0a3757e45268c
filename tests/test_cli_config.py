"""`sluicegate config apply|show|clear`, run as a real subprocess against a store that
worker processes are using: every worker follows an applied override at its next
decision, and clearing it restores the code's configuration."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import unique_name

import sluicegate as sg

try:
    import tomllib
except ImportError:  # Python < 3.11: sluicegate depends on tomli there
    import tomli as tomllib  # type: ignore[no-redef]


def cli(*args: str, env_store: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SLUICEGATE_STORE", None)
    if env_store is not None:
        env["SLUICEGATE_STORE"] = env_store
    return subprocess.run([sys.executable, "-m", "sluicegate", "config", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def _worker(store_name: str, lim_name: str, conn) -> None:
    """A service worker: its code says 2/hour; answers (key, n) with how many of n it admitted."""
    lim = sg.RateLimiter(lim_name, "2/hour", store=sg.SharedStore(store_name, create=False))
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        key, n = msg
        conn.send((sum(lim.allow(key) for _ in range(n)), lim.config["rate"]))


@pytest.fixture
def workers(store, store_name):
    """Two spawned workers sharing one limiter in store; run(key, n) -> [(admitted, rate), ...]."""
    ctx = mp.get_context("spawn")
    name = unique_name("api")
    pipes, procs = [], []
    for _ in range(2):
        ours, theirs = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(store_name, name, theirs))
        p.start()
        pipes.append(ours)
        procs.append(p)
    for ours in pipes:
        assert ours.poll(60) and ours.recv() == "ready"

    def run(key: str, n: int) -> list[tuple[int, list[str]]]:
        for ours in pipes:
            ours.send((key, n))
        return [ours.recv() for ours in pipes]

    run.name = name  # type: ignore[attr-defined]
    yield run
    for ours in pipes:
        ours.send(None)
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
        assert p.exitcode == 0


def test_apply_is_followed_by_every_worker_and_clear_restores_the_code(tmp_path, store, store_name, workers):
    first = workers("k1", 5)
    assert sum(n for n, _ in first) == 2 and all(rate == ["2/hour"] for _, rate in first)
    path = tmp_path / "override.toml"
    path.write_text(f'[limiters."{workers.name}"]\nrate = "6/hour"\n')
    r = cli("apply", str(path), "--store", store_name)
    assert r.returncode == 0, r.stderr
    assert f"[limiters.{workers.name}]" in r.stdout and "override rate=['6/hour']" in r.stdout
    second = workers("k2", 10)  # both follow at their next decision: one budget of 6
    assert sum(n for n, _ in second) == 6 and all(rate == ["6/hour"] for _, rate in second)
    info = {p.name: p for p in store.policies()}[workers.name]
    assert info.override == {"rate": ["6/hour"]} and info.code["rate"] == ["2/hour"]

    r = cli("clear", workers.name, "--kind", "limiter", "--store", f"shm://{store_name}")
    assert r.returncode == 0, r.stderr
    assert "cleared" in r.stdout
    third = workers("k3", 10)
    assert sum(n for n, _ in third) == 2 and all(rate == ["2/hour"] for _, rate in third)
    r = cli("clear", workers.name, env_store=store_name)  # $SLUICEGATE_STORE names the store
    assert r.returncode == 0 and "no runtime override" in r.stdout


def test_apply_replaces_the_whole_override_and_checks_everything_first(tmp_path, store, store_name):
    name = unique_name("br")
    br = sg.CircuitBreaker(name, store=store, failure_threshold=5)
    br.reconfigure(reset_timeout=5.0)
    lim = sg.RateLimiter("api", "2/hour", store=store)
    pool = sg.Pool(object, size=3, name="db", store=store)
    good = tmp_path / "good.toml"
    good.write_text(f'[breakers."{name}"]\nfailure_threshold = 2\nrecord = ["OSError"]\n'
                    '[limiters.api]\nrate = "4/hour"\n[pools.db]\ncreate = "nowhere:connect"\nsize = 1\n')
    r = cli("apply", str(good), "--store", store_name)
    assert r.returncode == 0, r.stderr
    assert "[pools.db] in" in r.stdout and "override size=1" in r.stdout  # its create is not imported
    assert br.config["failure_threshold"] == 2 and br.config["reset_timeout"] == 30.0  # replaced, not merged
    assert lim.config["rate"] == ["4/hour"]
    assert pool.config["size"] == 1 and pool.config["max_overflow"] == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[limiters.api]\nrate = "9/hour"\n[breakers."' + name + '"]\nfailure_threshold = 0\n')
    r = cli("apply", str(bad), "--store", store_name)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"sluicegate config apply: {bad}: [breakers.{name}] failure_threshold: failure_threshold must be an int "
        "from 1 to 2147483648, got 0"]
    assert lim.config["rate"] == ["4/hour"]  # nothing was set


def test_a_policy_no_process_made_is_an_error_unless_create(tmp_path, store, store_name):
    path = tmp_path / "new.toml"
    path.write_text('[caps.pg]\nlimit = 3\n[limiters.api]\nrate = "5/hour"\n')
    sg.RateLimiter("api", "1/hour", store=store)
    r = cli("apply", str(path), "--store", store_name)
    assert r.returncode == 1 and "cap 'pg'" in r.stderr and "--create" in r.stderr
    assert [p.override for p in store.policies()] == [None]  # the limiter was not changed either
    r = cli("apply", str(path), "--store", store_name, "--create")
    assert r.returncode == 0, r.stderr
    assert "[caps.pg]" in r.stdout and "recorded" in r.stdout
    cap = sg.ConcurrencyLimiter("pg", 10, store=store)  # the service starts later: the override holds
    assert cap.limit == 3


def test_show_json_lists_every_policy_with_its_options_and_overrides(store, store_name):
    sg.RateLimiter("api", "2/hour", store=store).reconfigure(rate="3/hour")
    sg.CircuitBreaker("pay", store=store, failure_threshold=4)
    sg.ConcurrencyLimiter("pg", 7, store=store)
    r = cli("show", "--store", store_name, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    got = {(p["kind"], p["name"]): p for p in doc["policies"]}
    assert set(got) == {("limiter", "api"), ("breaker", "pay"), ("cap", "pg")}
    assert got["limiter", "api"]["config"] == {"rate": ["3/hour"], "burst": None, "algorithm": "token_bucket"}
    assert got["limiter", "api"]["code"]["rate"] == ["2/hour"] and got["limiter", "api"]["overridden"] == ["rate"]
    assert got["breaker", "pay"]["config"]["failure_threshold"] == 4 and got["breaker", "pay"]["override"] is None
    assert got["cap", "pg"]["config"]["limit"] == 7 and got["cap", "pg"]["version"] >= 1


def test_show_prints_toml_that_apply_reads_back(tmp_path, store, store_name):
    lim = sg.RateLimiter("api", "2/hour", burst=1, store=store)
    lim.reconfigure(rate="3/hour", burst=2)
    sg.ConcurrencyLimiter("pg", 7, store=store)
    r = cli("show", "--store", store_name)
    assert r.returncode == 0, r.stderr
    assert 'rate = ["3/hour"]  # override (code: ["2/hour"])' in r.stdout
    doc = tomllib.loads(r.stdout)
    assert doc["limiters"]["api"] == {"rate": ["3/hour"], "burst": 2, "algorithm": "token_bucket"}
    assert doc["caps"]["pg"]["limit"] == 7
    lim.reconfigure()
    shown = tmp_path / "shown.toml"
    shown.write_text(r.stdout)
    assert cli("apply", str(shown), "--store", store_name).returncode == 0
    assert lim.config["rate"] == ["3/hour"] and lim.burst == 2


@pytest.mark.parametrize("args", [("show",), ("show", "--json"), ("clear", "api")])
def test_without_a_store_the_cli_says_to_pass_one_and_why(args):
    r = cli(*args)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "pass --store" in r.stderr and "default store would be another, empty one" in r.stderr


def test_cli_errors_are_one_line_and_a_non_zero_exit(tmp_path, store, store_name):
    missing = unique_name("nostore")
    r = cli("show", "--store", missing)
    assert r.returncode == 1 and "does not exist: is the service running" in r.stderr
    assert not os.path.exists(f"/dev/shm/sluicegate.{missing}")  # never created by the CLI
    r = cli("clear", "nope", "--store", store_name)
    assert r.returncode == 1 and "no policy 'nope'" in r.stderr
    path = tmp_path / "sluicegate.toml"
    path.write_text(textwrap.dedent("""
        [limiters.api]
        rate = "2/hour"
        [limiters.other
        """))
    r = cli("apply", str(path), "--store", store_name)
    assert r.returncode == 1 and f"{path}: not valid TOML" in r.stderr and "line 4" in r.stderr
    path.write_text('[limiters.api]\nrate = "2/hour"\n')
    r = cli("apply", str(path))
    assert r.returncode == 1 and "[limiters.api] names no store" in r.stderr and "--store" in r.stderr
    for r in [cli("show", "--store", missing), cli("apply", str(path))]:
        assert len(r.stderr.strip().splitlines()) == 1


def test_apply_sends_each_policy_to_the_store_the_file_declares_and_never_creates_one(tmp_path, store, store_name):
    lim = sg.RateLimiter("api", "2/hour", store=store)
    missing = unique_name("nostore")
    path = tmp_path / "sluicegate.toml"
    path.write_text(f'[stores.main]\nurl = "shm://{store_name}"\n[limiters.api]\nrate = "3/hour"\nstore = "main"\n')
    r = cli("apply", str(path))  # no --store needed: the file names the store
    assert r.returncode == 0, r.stderr
    assert lim.config["rate"] == ["3/hour"]
    path.write_text(f'[stores.main]\nurl = "shm://{missing}"\n[limiters.api]\nrate = "4/hour"\nstore = "main"\n')
    r = cli("apply", str(path), "--store", store_name)
    assert r.returncode == 1 and f"{path}: [stores.main] url: store {missing!r} does not exist" in r.stderr
    assert not os.path.exists(f"/dev/shm/sluicegate.{missing}") and lim.config["rate"] == ["3/hour"]

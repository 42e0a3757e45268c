"""`sluicegate inspect STORE`, run as a real subprocess: every policy of a store with its
kind, effective options (overrides marked), state and counts summed over every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import unique_name

import sluicegate as sg


def cli(*args: str, env_store: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SLUICEGATE_STORE", None)
    if env_store is not None:
        env["SLUICEGATE_STORE"] = env_store
    return subprocess.run([sys.executable, "-m", "sluicegate", *args], capture_output=True, text=True, timeout=60,
                          env=env)


@pytest.fixture
def busy(store):
    """A limiter with denials and an override, an open breaker and a cap with a permit held."""
    lim = sg.RateLimiter("api", "3/hour", store=store)
    lim.reconfigure(rate="4/hour")
    for _ in range(10):
        lim.allow("k")
    br = sg.CircuitBreaker("pay", store=store, failure_threshold=2, reset_timeout=600.0)
    for _ in range(2):
        with pytest.raises(OSError):
            with br:
                raise OSError
    cap = sg.ConcurrencyLimiter("pg", 3, store=store)
    permit = cap.acquire()
    yield lim, br, cap
    permit.release()


def test_inspect_json_lists_every_policy_with_options_state_and_counts(store, store_name, busy):
    r = cli("inspect", store_name, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["store"] == f"shm://{store_name}" and doc["path"] == store.path
    assert doc["stats"]["capacity"] == 4096 and doc["stats"]["policies_capacity"] == 1024
    got = {(p["kind"], p["name"]): p for p in doc["policies"]}
    assert list(got) == [("breaker", "pay"), ("cap", "pg"), ("limiter", "api")]
    api = got["limiter", "api"]
    assert api["config"] == {"rate": ["4/hour"], "burst": None, "algorithm": "token_bucket"}
    assert api["overridden"] == ["rate"] and api["code"]["rate"] == ["3/hour"] and api["version"] >= 2
    assert {k: api["stats"][k] for k in ("allowed", "denied", "total")} == {"allowed": 4, "denied": 6, "total": 10}
    pay = got["breaker", "pay"]
    assert pay["stats"]["state"] == "open" and pay["stats"]["failures"] == 2 and pay["override"] is None
    assert 0 < pay["stats"]["retry_after"] <= 600 and pay["config"]["failure_threshold"] == 2
    pg = got["cap", "pg"]
    assert pg["stats"]["in_use"] == 1 and pg["stats"]["limit"] == 3 and pg["config"]["limit"] == 3
    assert all(p["note"] is None for p in doc["policies"])


def test_inspect_prints_each_policy_with_its_state_marked_overrides_and_counts(store, store_name, busy):
    r = cli("inspect", f"shm://{store_name}")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.splitlines()[0].startswith(f"shm://{store_name}: 3 policies; key slots 1 of 4096 used")
    assert "breaker pay: open (probes in " in out and "cap pg: 1 of 3 in use  (version 1)" in out
    assert "limiter api: allowed 4, denied 6  (version 2, runtime override set)" in out
    assert '    rate = ["4/hour"]  (override; code: ["3/hour"])' in out
    assert "    failure_threshold = 2\n" in out and "    reset_timeout = 600.0\n" in out
    assert "  counts: allowed=4  denied=6  total=10" in out
    assert "in_use=1" in out and "failures=2" in out


def test_inspect_finds_the_store_by_option_environment_or_path(tmp_path, store, store_name, busy):
    for r in (cli("inspect", "--store", store_name, "--json"), cli("inspect", "--json", env_store=store_name)):
        assert r.returncode == 0, r.stderr
        assert {p["name"] for p in json.loads(r.stdout)["policies"]} == {"api", "pay", "pg"}
    path = tmp_path / "limits.sg"
    with sg.SharedStore(path=path, capacity=64) as file_store:
        sg.RateLimiter("files", "1/second", store=file_store).allow("a")
    for spec in (str(path), f"file://{path}"):
        r = cli("inspect", spec, "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["store"] == f"file://{path}" and doc["policies"][0]["stats"]["allowed"] == 1


def test_inspect_of_an_empty_store_and_errors_are_one_line(store, store_name, tmp_path):
    r = cli("inspect", store_name)
    assert r.returncode == 0 and r.stdout.startswith(f"shm://{store_name}: 0 policies")
    missing = unique_name("nostore")
    garbage = tmp_path / "garbage.sg"
    garbage.write_bytes(b"x" * 100_000)
    for args, message in [
        (("inspect", missing), f"store {missing!r} does not exist: is the service running"),
        (("inspect",), "which store? pass --store"),
        (("inspect", str(garbage)), "not a sluicegate store"),
        (("inspect", "redis://localhost"), "unknown scheme 'redis'"),
    ]:
        r = cli(*args)
        assert r.returncode == 1 and r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sluicegate inspect: ") and message in lines[0], r.stderr
    assert not os.path.exists(f"/dev/shm/sluicegate.{missing}")

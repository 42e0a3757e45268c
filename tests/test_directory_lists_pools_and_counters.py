"""An unrelated process (a CLI, an exporter) lists a store's named pools and counters
with their options, beside the other policies: store.policies(), and `sluicegate
config show`, whose TOML `config apply` reads back."""

from __future__ import annotations

import json
import subprocess
import sys

import sluicegate as sg

_LIST = """
import json, sys
import sluicegate as sg
store = sg.SharedStore(sys.argv[1], create=False)
print(json.dumps([dict(kind=p.kind, name=p.name, config=p.config, override=p.override) for p in store.policies()]))
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)


def test_an_unrelated_process_lists_pools_and_counters_with_their_options(store, store_name):
    sg.Pool(object, size=4, max_overflow=2, strategy="fifo", max_lifetime=600, name="db", store=store)
    sg.Pool(object, size=9)  # private: not listed
    store.counter("requests").add(3)
    sg.ConcurrencyLimiter("postgres", 10, store=store)
    sg.Pool(object, size=4, name="db", store=store).reconfigure(timeout=1.0)
    r = _run("-c", _LIST, store_name)
    assert r.returncode == 0, r.stderr
    got = {(p["kind"], p["name"]): p for p in json.loads(r.stdout)}
    assert set(got) == {("pool", "db"), ("counter", "requests"), ("cap", "postgres")}
    assert got["pool", "db"]["config"] == {
        "size": 4, "max_overflow": 0, "strategy": "lifo", "timeout": 1.0, "max_lifetime": None,
        "max_idle": None, "min_size": 0, "overflow_ttl": 10.0, "check_window": 0.5, "jitter": 0.1,
    }  # the newest code (size=4 with defaults), and the override laid over it
    assert got["pool", "db"]["override"] == {"timeout": 1.0}
    assert got["counter", "requests"]["config"] == {}


def test_config_show_prints_pools_and_counters_as_toml_that_apply_reads_back(store, store_name, tmp_path):
    pool = sg.Pool(object, size=4, name="db", store=store)
    pool.reconfigure(size=6)
    store.counter("requests")
    r = _run("-m", "sluicegate", "config", "show", "--store", store_name)
    assert r.returncode == 0, r.stderr
    assert "[pools.db]" in r.stdout and "size = 6  # override (code: 4)" in r.stdout
    assert "[counters.requests]" in r.stdout
    shown = tmp_path / "shown.toml"
    shown.write_text(r.stdout)
    r = _run("-m", "sluicegate", "config", "apply", str(shown), "--store", store_name)
    assert r.returncode == 0, r.stderr
    assert "[counters.requests]" in r.stdout and "nothing to apply" in r.stdout
    assert pool.config["size"] == 6
    r = _run("-m", "sluicegate", "config", "clear", "db", "--kind", "pool", "--store", store_name)
    assert r.returncode == 0, r.stderr
    assert pool.config["size"] == 4

"""With no store= and no $SLUICEGATE_STORE, every process of one application shares
the default store: real gunicorn (sync without --preload, gthread, --max-requests
recycling) and uvicorn --workers servers driven by a real HTTP client, and
multiprocessing / ProcessPoolExecutor children under spawn and forkserver.  Two
applications in separate process groups do not share.  Each sharing test has a
per-process control that multiplies the limit, so the measurement can fail."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import gunicorn  # noqa: F401  (test extras: the real servers these tests drive, never skipped)
import pytest
import servers
import uvicorn  # noqa: F401

import sluicegate as sg
from sluicegate import _approot

LOAD_SECONDS = 3.0


def _run(kind: str, tmp_path, *, env=None, extra=(), workers=4):
    log = str(tmp_path / f"{kind}.log")
    srv = servers.start(kind, workers=workers, env=env, extra=extra, log_path=log)
    info: dict = {}
    try:
        pids = servers.wait_all_workers(srv, workers)
        info = json.loads(srv.get("/store")[1])  # /store and the start-up probes decide nothing
        load = servers.drive(srv, "/", LOAD_SECONDS)
    finally:
        srv.stop()
        if info.get("name"):
            sg.SharedStore.unlink(info["name"], missing_ok=True)
    print(f"{kind} {extra}: workers {sorted(pids)} store {info['store']}: {load.statuses} in {load.elapsed:.2f}s "
          f"(allowance {servers.allowance(load.elapsed):.0f}), client errors {load.errors}")
    return pids, info, load


@pytest.mark.parametrize("kind", ["gunicorn", "gthread", "uvicorn"])
def test_server_workers_share_one_limit_by_default(kind, tmp_path):
    pids, info, load = _run(kind, tmp_path)
    assert len(pids) == 4, f"expected 4 workers to answer, got {pids}"
    assert info["name"] and info["name"].startswith("app-"), info
    admitted, allowance = load.count(200), servers.allowance(load.elapsed)
    assert admitted <= allowance + 1, f"{kind}: admitted {admitted} > allowance {allowance:.0f}"
    assert admitted >= 0.9 * allowance, f"{kind}: admitted {admitted} < 90% of {allowance:.0f}"
    assert load.count(429) > admitted, "the client did not saturate the limit"


def test_gunicorn_with_private_stores_multiplies_the_limit(tmp_path):
    """The control: one anonymous store per worker admits about 4x (what sharing prevents)."""
    _pids, _info, load = _run("gunicorn", tmp_path, env={"APP_STORE": "private"})
    assert load.count(200) > 1.5 * servers.allowance(load.elapsed)


def test_gunicorn_max_requests_recycling_gets_no_fresh_burst(tmp_path):
    """Recycled workers (--max-requests) join the same store: no new burst, one budget."""
    pids, _info, load = _run("gunicorn", tmp_path, extra=("--max-requests", "40", "--max-requests-jitter", "10"))
    admitted, allowance = load.count(200), servers.allowance(load.elapsed)
    assert admitted <= allowance + 1, f"admitted {admitted} > allowance {allowance:.0f}"
    assert admitted >= 0.8 * allowance


def test_gunicorn_cap_holds_across_recycled_workers(tmp_path):
    srv = servers.start("gunicorn", workers=4, extra=("--max-requests", "15", "--max-requests-jitter", "5"),
                        log_path=str(tmp_path / "cap.log"))
    try:
        load = servers.drive(srv, "/slow", 2.0, threads=8)
        peak = int(srv.get("/peak")[1])
        name = json.loads(srv.get("/store")[1])["name"]
    finally:
        srv.stop()
    sg.SharedStore.unlink(name, missing_ok=True)
    print(f"cap 3 under recycling: {load.statuses}, peak {peak}")
    assert load.count(200) > 20 and 1 <= peak <= 3


# -- multiprocessing and ProcessPoolExecutor ------------------------------------------------


def _take(name: str, n: int, private: bool) -> int:
    lim = sg.RateLimiter(name, "100/hour", store=sg.SharedStore() if private else None)
    return sum(lim.allow("k") for _ in range(n))


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_process_pool_children_share_the_default_store(method):
    name = f"pool-{method}-{os.getpid()}-{os.urandom(4).hex()}"
    ctx = mp.get_context(method)
    with cf.ProcessPoolExecutor(4, mp_context=ctx) as ex:
        got = list(ex.map(_take, [name] * 4, [100] * 4, [False] * 4))
    assert sum(got) == 100, got  # 400 attempts, one budget of 100
    with ctx.Pool(4) as pool:
        got = pool.starmap(_take, [(name + "-mp", 100, False)] * 4)
    assert sum(got) == 100, got


def test_process_pool_control_with_private_stores_multiplies():
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(4, mp_context=ctx) as ex:
        futs = [ex.submit(_take, "private", 100, True) for _ in range(4)]
        got = [f.result() for f in futs]
    assert sum(got) > 100, got


# -- separate applications --------------------------------------------------------------------

_APP = textwrap.dedent(
    """
    import json, sys
    import sluicegate as sg
    lim = sg.RateLimiter("same-name", "5/hour")
    print(json.dumps({"store": lim.store.name, "admitted": sum(lim.allow("k") for _ in range(5))}))
    """
)


def _app(new_session: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SLUICEGATE_STORE"}
    r = subprocess.run([sys.executable, "-c", _APP], capture_output=True, text=True, timeout=60, env=env,
                       start_new_session=new_session)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_two_applications_in_separate_process_groups_do_not_share():
    a, b = _app(True), _app(True)
    try:
        assert a["store"] != b["store"]
        assert a["admitted"] == 5 and b["admitted"] == 5
    finally:
        for d in (a, b):
            sg.SharedStore.unlink(d["store"], missing_ok=True)


def test_a_child_in_our_process_group_is_part_of_our_application():
    """The contrast: a Python child started in our process group joins our default store."""
    mine = sg.default_store().name
    child = _app(False)
    assert child["store"] == mine


def test_default_store_is_visible_and_env_overrides(monkeypatch, caplog):
    from sluicegate import store as store_mod

    assert sg.default_store().name == _approot.default_store_name()
    assert "app-" in repr(sg.default_store())
    name = f"env-{os.getpid()}-{os.urandom(4).hex()}"
    for spec, kind in ((name, "named"), (f"shm://{name}", "named")):
        monkeypatch.setenv("SLUICEGATE_STORE", spec)
        monkeypatch.setattr(store_mod, "_default", None)
        with caplog.at_level("DEBUG", logger="sluicegate.store"):
            s = sg.default_store()
        assert s.kind == kind and s.name == name
        assert any("default store" in r.getMessage() and spec in r.getMessage() for r in caplog.records)
        s.close()
    monkeypatch.setattr(store_mod, "_default", None)
    sg.SharedStore.unlink(name, missing_ok=True)


def test_a_stale_default_store_of_an_ended_application_is_removed():
    r = subprocess.run([sys.executable, "-c", "import sluicegate as sg; print(sg.default_store().path)"],
                       capture_output=True, text=True, timeout=60, start_new_session=True)
    path = r.stdout.strip()
    assert os.path.exists(path)  # the ended application left it behind...
    code = "import sluicegate as sg; sg.SharedStore.unlink(sg.default_store().name)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, start_new_session=True)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(path)  # ...and the next application to create its own removed it


def test_a_reload_with_changed_options_keeps_serving_with_the_new_ones(tmp_path):
    """The outage this replaces: a changed cap limit or breaker threshold followed by a
    gunicorn reload made every new worker raise ConfigError and the master exit."""
    import signal
    import time

    cfg = tmp_path / "app.json"
    cfg.write_text(json.dumps({"cap": 3, "threshold": 5}))
    srv = servers.start("gunicorn", workers=2, env={"APP_CONFIG": str(cfg)}, log_path=str(tmp_path / "hup.log"))
    name = json.loads(srv.get("/store")[1])["name"]
    try:
        before = {json.loads(srv.get("/config")[1])["pid"] for _ in range(10)}
        before |= servers.children(srv.proc.pid)  # every old worker, served or not
        cfg.write_text(json.dumps({"cap": 4, "threshold": 2}))
        os.kill(srv.proc.pid, signal.SIGHUP)  # gunicorn: new workers with the new code, old ones retire
        deadline = time.monotonic() + 30
        seen: dict = {}
        while time.monotonic() < deadline:
            assert srv.proc.poll() is None, open(tmp_path / "hup.log").read()[-2000:]
            c = json.loads(srv.get("/config")[1])
            if c["pid"] not in before:
                seen[c["pid"]] = c
            if len(seen) >= 2:
                break
            time.sleep(0.05)
        assert len(seen) >= 2, f"new workers did not serve: {seen}"
        assert all(c["cap"] == 4 and c["threshold"] == 2 for c in seen.values()), seen
        assert srv.get("/")[0] in (200, 429)
    finally:
        srv.stop()
        sg.SharedStore.unlink(name, missing_ok=True)
    assert "ConfigError" not in open(tmp_path / "hup.log").read()

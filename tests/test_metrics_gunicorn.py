"""End to end: a real gunicorn app (4 sync workers) uses a rate limiter, a circuit
breaker and a concurrency cap in a named store; a separate process, `sluicegate metrics
--store NAME`, started before the app made the store, serves /metrics; a real HTTP client
drives the app; the counters scraped from the sidecar equal the totals the client saw."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time

import gunicorn  # noqa: F401  (test extras: the real server, never skipped)
import pytest
import servers
from conftest import unique_name
from prometheus_client.parser import text_string_to_metric_families

import sluicegate as sg

LOAD_SECONDS = 2.0


def _get(port: int, path: str) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    status, text = _get(port, "/metrics")
    assert status == 200, text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _sidecar(name: str, log_path: str) -> tuple[subprocess.Popen, int]:
    port = servers.free_port()
    env = {k: v for k, v in os.environ.items() if k != "SLUICEGATE_STORE"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sluicegate", "metrics", "--store", name, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, open(log_path).read()
        try:
            if _get(port, "/metrics")[0] == 200:
                return proc, port
        except OSError:
            pass
        assert time.monotonic() < deadline, "the sidecar did not serve within 30 s"
        time.sleep(0.1)


def test_sidecar_metrics_equal_what_the_client_saw(tmp_path):
    name = unique_name("metrics-e2e")
    side_log = str(tmp_path / "sidecar.log")
    sidecar, port = _sidecar(name, side_log)
    srv = None
    try:
        before = _scrape(port)  # the app has not made its store yet
        assert before[("sluicegate_store_up", frozenset({("store", name)}))] == 0
        srv = servers.start("gunicorn", workers=4, env={"METRICS_APP_STORE": name}, app="metrics_app",
                            log_path=str(tmp_path / "gunicorn.log"))
        pids = servers.wait_all_workers(srv, 4)
        assert len(pids) == 4, pids
        loads: dict[str, servers.Load] = {}

        def drive(path: str, threads: int) -> None:
            loads[path] = servers.drive(srv, path, LOAD_SECONDS, threads=threads)

        ts = [threading.Thread(target=drive, args=a) for a in (("/", 4), ("/dep", 3), ("/slow", 5))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(LOAD_SECONDS + 60)
        got = _scrape(port)
    finally:
        if srv is not None:
            srv.stop()
        servers.stop_group(sidecar)
        sg.SharedStore.unlink(name, missing_ok=True)
    print({p: (ld.statuses, ld.errors) for p, ld in loads.items()})
    assert sidecar.returncode == 0, open(side_log).read()  # SIGTERM: a clean exit

    def m(metric: str, **labels: str) -> float:
        return got[(metric, frozenset({"store": name, **labels}.items()))]

    root, dep, slow = loads["/"], loads["/dep"], loads["/slow"]
    assert root.errors == dep.errors == slow.errors == 0
    # the limiter: 200s and 429s
    assert root.count(429) > 0 and root.count(200) > 0, root.statuses
    assert m("sluicegate_rate_decisions_total", policy="api", result="allowed") == root.count(200)
    assert m("sluicegate_rate_decisions_total", policy="api", result="denied") == root.count(429)
    # the breaker: successes, failures and rejections (503s)
    assert dep.count(503) > 0 and dep.count(500) > 0, dep.statuses
    assert m("sluicegate_breaker_calls_total", policy="dep", outcome="success") == dep.count(200)
    assert m("sluicegate_breaker_calls_total", policy="dep", outcome="failure") == dep.count(500)
    assert m("sluicegate_breaker_rejections_total", policy="dep") == dep.count(503)
    assert m("sluicegate_breaker_transitions_total", policy="dep") > 0
    assert m("sluicegate_breaker_call_duration_seconds_count", policy="dep") == dep.count(200) + dep.count(500)
    # the cap: permits granted and acquires that timed out; none held any more
    assert slow.count(200) > 0, slow.statuses
    assert m("sluicegate_cap_acquired_total", policy="slow") == slow.count(200)
    assert m("sluicegate_cap_timeouts_total", policy="slow") == slow.count(503)
    assert m("sluicegate_cap_in_use", policy="slow") == 0
    assert m("sluicegate_cap_limit", policy="slow") == 2
    waited = m("sluicegate_cap_wait_seconds_count", policy="slow")
    assert 0 < waited <= slow.count(200)
    assert m("sluicegate_store_up") == 1
    assert sum(v for (n, labels), v in got.items() if n == "sluicegate_breaker_state"
               and ("store", name) in labels) == 1


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_sluicegate_metrics_exits_cleanly_on_a_signal(tmp_path, sig):
    import signal

    name = unique_name("metrics-sig")
    log = str(tmp_path / "sidecar.log")
    proc, port = _sidecar(name, log)
    try:
        os.kill(proc.pid, getattr(signal, sig))
        assert proc.wait(15) == 0, open(log).read()
        text = open(log).read()
        assert "serving http://127.0.0.1:" in text and "stopped" in text
        assert "Traceback" not in text
    finally:
        if proc.poll() is None:
            servers.stop_group(proc)


def test_sluicegate_metrics_errors_are_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SLUICEGATE_STORE"}
    r = subprocess.run([sys.executable, "-m", "sluicegate", "metrics"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 1 and "which store" in r.stderr and "Traceback" not in r.stderr
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "sluicegate", "metrics", "--store", "x", "--port", str(port)],
                           capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr

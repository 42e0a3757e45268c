"""End to end: a real HTTP dependency on 127.0.0.1 that fails, then recovers, called
through one Guard (breaker + fallback) from 4 worker processes.  The guard opens, serves
fallbacks, probes, and closes; while the dependency is down it sees no more requests
than the trip needs plus the configured probes, host-wide.  The control (each worker's
guard over its own private store) shows that the bound can fail: every worker trips its
own breaker and probes on its own."""

from __future__ import annotations

import math
import multiprocessing as mp
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import sluicegate as sg

WORKERS = 4
THRESHOLD = 5
RESET = 0.4  # seconds open before a probe
DOWN = 1.6  # seconds the dependency fails
UP = 1.6  # seconds it serves after recovering


def serve(port_out, healthy, hits_down, hits_up, stop) -> None:
    """The dependency: 503 while not healthy, 200 after; counts what it saw in each phase."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if healthy.value:
                with hits_up.get_lock():
                    hits_up.value += 1
                self.send_response(200)
            else:
                with hits_down.get_lock():
                    hits_down.value += 1
                self.send_response(503)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 0.05
    port_out.value = server.server_address[1]
    while not stop.is_set():
        server.handle_request()
    server.server_close()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def worker(store_name: str | None, url: str, until: float, out) -> None:
    store = sg.SharedStore(store_name) if store_name else sg.SharedStore()  # None: a private store
    br = sg.CircuitBreaker("dependency", failure_threshold=THRESHOLD, window=30.0, reset_timeout=RESET,
                           half_open_calls=1, store=store)
    guard = sg.Guard("dependency", breaker=br, fallback=lambda exc: f"fallback:{exc.layer}", store=store)
    seen = {"ok": 0, "fallback:breaker": 0, "fallback:call": 0}
    while time.time() < until:
        seen[guard.call(fetch, url)] += 1
        time.sleep(0.002)
    out.put((seen, br.state))


def run(ctx, store_name: str | None):
    """Run the scenario; returns (hits while down, hits after, workers' tallies, states, down seconds)."""
    port = ctx.Value("i", 0)
    healthy = ctx.Value("b", 0)
    hits_down = ctx.Value("i", 0)
    hits_up = ctx.Value("i", 0)
    stop = ctx.Event()
    server = ctx.Process(target=serve, args=(port, healthy, hits_down, hits_up, stop))
    server.start()
    try:
        t0 = time.monotonic()
        while port.value == 0:
            assert time.monotonic() - t0 < 30, "the dependency did not start"
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port.value}/"
        out = ctx.Queue()
        start_wall = time.time() + 1.0  # spawn needs a moment to import
        until = start_wall + DOWN + UP
        procs = [ctx.Process(target=worker, args=(store_name, url, until, out)) for _ in range(WORKERS)]
        for p in procs:
            p.start()
        time.sleep(max(0.0, start_wall - time.time()) + DOWN)
        with healthy.get_lock():
            healthy.value = 1
            down_seconds = time.time() - (start_wall - 1.0)  # from the earliest a worker could call
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        return hits_down.value, hits_up.value, [r[0] for r in results], [r[1] for r in results], down_seconds
    finally:
        stop.set()
        server.join(10)
        if server.is_alive():
            server.kill()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_one_guard_over_four_processes_opens_serves_fallbacks_probes_and_closes(store_name, method):
    sg.SharedStore(store_name).close()  # create it; the workers attach by name
    down, up, tallies, states, down_s = run(mp.get_context(method), store_name)
    rounds = math.ceil(down_s / RESET) + 1  # half-open rounds while it was down, at most
    # the trip: THRESHOLD failures, plus calls already past the breaker when it opened
    bound = THRESHOLD + (WORKERS - 1) + rounds * 1  # half_open_calls=1 probe per round
    assert THRESHOLD <= down <= bound, (down, bound, tallies)
    assert sum(t["fallback:breaker"] for t in tallies) > 10 * WORKERS  # open: served by the fallback
    assert sum(t["ok"] for t in tallies) == up > 0  # it closed again and the calls went through
    assert states == ["closed"] * WORKERS
    assert sum(t["fallback:call"] for t in tallies) == down  # every request that failed reached the fallback


def test_control_private_guards_each_trip_and_probe_on_their_own():
    down, up, tallies, states, down_s = run(mp.get_context("fork"), None)
    rounds = math.ceil(down_s / RESET) + 1
    shared_bound = THRESHOLD + (WORKERS - 1) + rounds
    assert down >= WORKERS * THRESHOLD  # four breakers, four trips, each probing on its own
    assert down > shared_bound  # the shared test's bound fails here

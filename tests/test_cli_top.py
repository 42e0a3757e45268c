"""`sluicegate top STORE`, run as a real subprocess while this process drives a limiter, a
breaker and a cap: under a pseudo-terminal it redraws in place and exits 0 on SIGINT
(Ctrl-C) with no traceback; through a pipe it prints plain successive frames."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

import sluicegate as sg

CLEAR = "\x1b[H\x1b[2J"


def top_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sluicegate", "top", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.pop("SLUICEGATE_STORE", None)
    return e


@pytest.fixture
def traffic(store):
    """Keeps a limiter deciding (and denying) while a test runs; an open breaker, a held cap."""
    lim = sg.RateLimiter("api", "50/hour", store=store)
    br = sg.CircuitBreaker("pay", store=store, failure_threshold=1, reset_timeout=600.0)
    with pytest.raises(OSError):
        with br:
            raise OSError
    cap = sg.ConcurrencyLimiter("pg", 4, store=store)
    permit = cap.acquire()
    stop = threading.Event()

    def drive() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(20):
                lim.allow("hot")
                try:
                    with br:
                        pass
                except sg.CircuitOpen:
                    pass
            time.sleep(0.005)

    t = threading.Thread(target=drive)
    t.start()
    yield
    stop.set()
    t.join(30)
    permit.release()


def rows(frame: str, kind: str) -> list[list[str]]:
    return [line.split() for line in frame.splitlines() if line.startswith(kind + " ")]


def test_top_under_a_terminal_redraws_and_exits_cleanly_on_sigint(store_name, traffic):
    master, slave = os.openpty()
    p = subprocess.Popen(top_argv(store_name, "--interval", "0.3"), stdin=slave, stdout=slave, stderr=slave,
                         env=env(), close_fds=True)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while out.decode(errors="replace").count(CLEAR) < 4 and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    out += os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
        assert out.decode(errors="replace").count(CLEAR) >= 4, out[-2000:]
        p.send_signal(signal.SIGINT)
        rc = p.wait(30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the rest of the output, until the terminal closes
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
        os.close(master)
    text = out.decode(errors="replace")
    assert rc == 0, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    frames = [f for f in text.split(CLEAR) if f.strip()]
    first, last = frames[0], frames[-1]
    assert f"sluicegate top shm://{store_name}" in first
    assert rows(first, "limiter")[0][2:4] == ["-", "-"]  # no rates before a second reading
    lim = rows(last, "limiter")[0]
    assert lim[1] == "api" and float(lim[2]) > 0 and float(lim[3]) > 0  # decisions/s and denials/s
    assert re.search(r"allowed=50 denied=\d+", " ".join(lim))
    br = rows(last, "breaker")[0]
    # open: no call admitted, every one rejected
    assert br[1:3] == ["pay", "open"] and float(br[-5]) == 0 and float(br[-4]) > 0
    cap = rows(last, "cap")[0]
    assert cap[1:6] == ["pg", "1", "of", "4", "in"]


def test_top_through_a_pipe_prints_plain_frames_and_stops_after_its_iterations(store_name, traffic):
    r = subprocess.run(top_argv(store_name, "--interval", "0.2", "--iterations", "3"), capture_output=True,
                       text=True, timeout=60, env=env())
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and r.stderr == ""
    frames = r.stdout.split("\n\nsluicegate top ")
    assert len(frames) == 3
    assert rows(frames[0], "limiter")[0][2] == "-" and float(rows(frames[2], "limiter")[0][2]) > 0


def test_top_through_a_pipe_exits_cleanly_on_sigint(store_name, traffic):
    p = subprocess.Popen(top_argv(store_name, "--interval", "0.2"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env())
    try:
        assert p.stdout is not None
        deadline = time.monotonic() + 30
        while "sluicegate top" not in p.stdout.readline():
            assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=30)
    assert p.returncode == 0 and err == "", err


def test_top_json_prints_one_frame_per_line_with_rates(store_name, traffic):
    r = subprocess.run(top_argv(store_name, "--interval", "0.3", "-n", "2", "--json"), capture_output=True,
                       text=True, timeout=60, env=env())
    assert r.returncode == 0, r.stderr
    first, second = (json.loads(line) for line in r.stdout.splitlines())
    assert first["interval"] is None and 0.2 < second["interval"] < 30
    got = {p["name"]: p for p in second["policies"]}
    assert got["api"]["rate"] > 0 and got["api"]["denied_rate"] > 0 and got["api"]["stats"]["allowed"] == 50
    assert got["pay"]["state"] == "open" and got["pay"]["denied_rate"] > 0
    assert got["pay"]["summary"].startswith("open (probes in ")
    assert got["pg"]["stats"]["in_use"] == 1 and got["pg"]["summary"] == "1 of 4 in use"


def test_top_of_a_missing_store_is_one_line(store_name):
    r = subprocess.run(top_argv("no-such-" + store_name, "-n", "1"), capture_output=True, text=True, timeout=60,
                       env=env())
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr

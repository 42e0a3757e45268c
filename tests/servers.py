"""Real servers for cross-process tests: server_app.py started under gunicorn (sync or
gthread) or uvicorn in a session of its own, as a shell would start it, and a real
HTTP client (http.client, several threads) that drives it; the allowance every
sharing test measures admissions against, how a server's process group is ended, and
how a command is run as a container's pid 1."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
RATE, BURST = 50, 50  # server_app's default "50/second": burst 50, then one every 20 ms


def allowance(elapsed: float, rate: float = RATE, burst: float = BURST) -> float:
    """The most one token bucket (burst, then rate per second) admits in elapsed seconds."""
    return burst + rate * elapsed


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """End the process group proc leads (it was started with start_new_session=True):
    SIGTERM, up to grace seconds for a graceful exit, then SIGKILL; and a last SIGKILL to
    the group for any member that outlived its leader."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone: the leader has ended
            proc.wait(grace)
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def pid_namespace_prefix() -> list[str]:
    """The command prefix that runs a command as pid 1 of a new pid namespace with its own
    /proc, as a container runs its command; the calling test is skipped where this machine
    will not make one (it needs root)."""
    import pytest

    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    try:
        r = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        pytest.skip(f"cannot make a pid namespace here: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {r.stderr.strip()}")
    return prefix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: str

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_group(self.proc)


def start(kind: str, workers: int = 4, env: dict[str, str] | None = None, extra: tuple[str, ...] = (),
          log_path: str = "/dev/null", timeout: float = 60.0, app: str = "server_app") -> Server:
    """kind: "gunicorn" (sync), "gthread" (gunicorn threads) or "uvicorn"; in a session of its own,
    as a shell would start it (so it is its own application).  app: the module in tests/ that
    serves (its wsgi_app / asgi_app, and a /store that answers 200)."""
    port = free_port()
    bind = f"127.0.0.1:{port}"
    if kind in ("gunicorn", "gthread"):
        cmd = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", bind, "--chdir", HERE,
               "--graceful-timeout", "2", "--log-level", "warning"]
        if kind == "gthread":
            cmd += ["-k", "gthread", "--threads", "4"]
        cmd += [*extra, f"{app}:wsgi_app"]
    elif kind == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", "--workers", str(workers), "--host", "127.0.0.1",
               "--port", str(port), "--app-dir", HERE, "--log-level", "warning", "--no-access-log",
               *extra, f"{app}:asgi_app"]
    else:
        raise ValueError(kind)
    full_env = {**os.environ, **(env or {})}
    full_env.pop("SLUICEGATE_STORE", None)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited with {proc.returncode} before serving; see {log_path}")
        try:
            status, _ = server.get("/store", timeout=2.0)
            if status == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{kind} did not serve within {timeout}s; see {log_path}")
        time.sleep(0.1)


def wait_all_workers(server: Server, workers: int, timeout: float = 30.0) -> set[int]:
    """Ask /store until `workers` distinct worker pids have answered (each has imported the app)."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers and time.monotonic() < deadline:
        status, body = server.get("/store")
        if status == 200:
            pids.add(json.loads(body)["pid"])
    return pids


@dataclass
class Load:
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    errors: int = 0

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)


def drive(server: Server, path: str, seconds: float, threads: int = 8) -> Load:
    """Send GET path from `threads` client threads for `seconds`; the elapsed time runs from
    before the first request is sent to after the last response is read."""
    load = Load(seconds)
    lock = threading.Lock()
    stop_at = [0.0]
    go = threading.Event()

    def client() -> None:
        counts: dict[int, int] = {}
        errors = 0
        conn = None
        go.wait()
        while time.monotonic() < stop_at[0]:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                counts[r.status] = counts.get(r.status, 0) + 1
                if r.getheader("connection", "").lower() == "close" or r.version == 10:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                errors += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            for k, v in counts.items():
                load.statuses[k] = load.statuses.get(k, 0) + v
            load.errors += errors

    ts = [threading.Thread(target=client) for _ in range(threads)]
    for t in ts:
        t.start()
    t0 = time.monotonic()
    stop_at[0] = t0 + seconds
    go.set()
    for t in ts:
        t.join(seconds + 30)
    load.elapsed = time.monotonic() - t0
    return load


def children(pid: int) -> set[int]:
    """The processes whose parent is pid now (Linux /proc), e.g. a gunicorn master's workers."""
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.add(int(entry))
    return kids

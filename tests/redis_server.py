"""A real redis-server for tests: started on a free 127.0.0.1 port with no persistence,
in a session of its own, and killed at stop.  The `redis_server` fixture in conftest.py
starts one per test session, only when a test asks for it.

redis-server is a test requirement like gunicorn (Debian's package; .ci/run installs it):
a missing binary fails the tests that need it instead of skipping them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from servers import free_port


@dataclass
class RedisServer:
    proc: subprocess.Popen
    port: int
    dir: str

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Send one command (RESP, no client library) and return the raw reply."""
        out = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(out)
            return s.recv(65536)

    def ping(self) -> bool:
        try:
            return self.command("PING", timeout=1.0).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(15)
        shutil.rmtree(self.dir, ignore_errors=True)


def start(timeout: float = 20.0) -> RedisServer:
    """Start redis-server on a free loopback port; return once it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    work = tempfile.mkdtemp(prefix="sg-redis-")
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", work, "--logfile", os.path.join(work, "redis.log"), "--daemonize", "no"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = RedisServer(proc, port, work)
    deadline = time.monotonic() + timeout
    while not server.ping():
        if proc.poll() is not None or time.monotonic() > deadline:
            log = os.path.join(work, "redis.log")
            tail = open(log).read()[-2000:] if os.path.exists(log) else ""
            server.stop()
            raise RuntimeError(f"redis-server on port {port} did not answer PING within {timeout}s:\n{tail}")
        time.sleep(0.05)
    return server

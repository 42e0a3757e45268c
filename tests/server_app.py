"""The app the real-server tests run under gunicorn and uvicorn (see servers.py):
sluicegate used the way a new user writes it, policies made at import with no store=.

APP_RATE sets the limit (default "50/second"); APP_STORE="private" gives each
worker its own anonymous store instead, the per-process control that must multiply
the limit; APP_CAP sets the /slow endpoint's concurrency cap (default 3).  APP_CONFIG
names a JSON file read at import ({"cap": N, "threshold": N}), so a reload (SIGHUP)
after editing it brings up workers whose code configures the policies differently.
"""

from __future__ import annotations

import json
import os
import time

import sluicegate as sg

_store = sg.SharedStore() if os.environ.get("APP_STORE") == "private" else None
_file = json.load(open(os.environ["APP_CONFIG"])) if os.environ.get("APP_CONFIG") else {}
lim = sg.RateLimiter("api", os.environ.get("APP_RATE", "50/second"), store=_store)
cap = sg.ConcurrencyLimiter("slow", limit=int(_file.get("cap", os.environ.get("APP_CAP", "3"))), store=_store)
br = sg.CircuitBreaker("dep", failure_threshold=int(_file.get("threshold", 5)), store=_store)
_inflight = (_store or sg.default_store()).counter("servers.inflight")
_peak = (_store or sg.default_store()).counter("servers.peak")


def _handle(path: str) -> tuple[int, bytes]:
    if path == "/store":
        return 200, json.dumps({"store": repr(lim.store), "name": lim.store.name, "pid": os.getpid()}).encode()
    if path == "/slow":
        try:
            with cap.slot(timeout=0):
                now = _inflight.add(1)
                while True:
                    p = _peak.value
                    if now <= p or _peak.compare_and_set(p, now):
                        break
                time.sleep(0.02)
                _inflight.add(-1)
        except sg.ConcurrencyLimitExceeded:
            return 503, b"busy"
        return 200, b"ok"
    if path == "/config":
        return 200, json.dumps({"pid": os.getpid(), "cap": cap.limit, "threshold": br.config["failure_threshold"],
                                "code_cap": cap._code["limit"]}).encode()
    if path == "/peak":
        return 200, str(_peak.value).encode()
    if lim.allow("client"):
        return 200, b"ok"
    return 429, b"limited"


def wsgi_app(environ, start_response):
    status, body = _handle(environ.get("PATH_INFO", "/"))
    reason = {200: "OK", 429: "Too Many Requests", 503: "Service Unavailable"}[status]
    start_response(f"{status} {reason}", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    status, body = _handle(scope["path"])
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

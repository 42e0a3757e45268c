"""The app of the metrics end-to-end test (test_metrics_gunicorn.py), served by gunicorn
(see servers.py): a rate limiter, a circuit breaker and a concurrency cap in the named
store $METRICS_APP_STORE, each behind its own path, answering with a status that tells
the client what the policy decided.

  /       the limiter "api" (20/second): 200, or 429 when denied
  /dep    the breaker "dep" around a dependency that fails about 1 call in 3:
          200 success, 500 failure (a recorded failure), 503 rejected (CircuitOpen)
  /slow   the cap "slow" (limit 2, wait up to 20 ms): 200 after holding a permit 5 ms,
          503 when no permit came in time
"""

from __future__ import annotations

import json
import os
import random
import time

import sluicegate as sg

store = sg.SharedStore(os.environ["METRICS_APP_STORE"])
lim = sg.RateLimiter("api", "20/second", store=store)
br = sg.CircuitBreaker("dep", store=store, failure_threshold=3, window=1.0, reset_timeout=0.05, histogram=True)
cap = sg.ConcurrencyLimiter("slow", limit=2, store=store)


class DependencyDown(Exception):
    pass


def _handle(path: str) -> tuple[int, bytes]:
    if path == "/store":
        return 200, json.dumps({"name": store.name, "pid": os.getpid()}).encode()
    if path == "/dep":
        try:
            with br:
                if random.random() < 0.34:
                    raise DependencyDown
        except DependencyDown:
            return 500, b"dependency failed"
        except sg.CircuitOpen:
            return 503, b"circuit open"
        return 200, b"ok"
    if path == "/slow":
        try:
            with cap.slot(timeout=0.02):
                time.sleep(0.005)
        except sg.ConcurrencyLimitExceeded:
            return 503, b"busy"
        return 200, b"ok"
    return (200, b"ok") if lim.allow("client") else (429, b"limited")


_REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def wsgi_app(environ, start_response):
    status, body = _handle(environ.get("PATH_INFO", "/"))
    start_response(f"{status} {_REASONS[status]}", [("Content-Type", "text/plain"),
                                                    ("Content-Length", str(len(body)))])
    return [body]

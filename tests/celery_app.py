"""The Celery app the prefork tests run (see test_celery_prefork_sharing.py): a task
that asks a rate limiter made with no store=, the way a new user writes it.

APP_BROKER is the Redis URL (broker and result backend); APP_POLICY names the limiter
(unique per run); APP_RATE sets its rate (default "50/second").  APP_CONSTRUCT says when
the limiter is made: "import" (default) at module import, so in the worker's main
process before it forks the pool; "lazy" at a child's first task, so each child finds
the default store itself.  APP_STORE="private" instead gives each pool child its own
anonymous store, made after the fork in worker_process_init: the per-process control
that must multiply the limit.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.signals import worker_process_init

import sluicegate as sg

app = Celery("celery_app", broker=os.environ["APP_BROKER"], backend=os.environ["APP_BROKER"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True)

_NAME = os.environ["APP_POLICY"]
_RATE = os.environ.get("APP_RATE", "50/second")
_PRIVATE = os.environ.get("APP_STORE") == "private"
_LAZY = os.environ.get("APP_CONSTRUCT") == "lazy"

lim: sg.RateLimiter | None = None if _PRIVATE or _LAZY else sg.RateLimiter(_NAME, _RATE)


@worker_process_init.connect
def _private_store(**_kwargs) -> None:
    global lim
    if _PRIVATE:
        lim = sg.RateLimiter(_NAME, _RATE, store=sg.SharedStore())


def _limiter() -> sg.RateLimiter:
    global lim
    if lim is None:
        lim = sg.RateLimiter(_NAME, _RATE)
    return lim


@app.task(name="sg.take")
def take(work: float = 0.0) -> dict:
    """Ask the limiter, then work (sleep) `work` seconds, so that tasks overlap and the
    pool hands them to several children rather than one idle child taking them all."""
    limiter = _limiter()
    admitted = limiter.allow("k")
    at = time.monotonic()
    time.sleep(work)
    return {"admitted": admitted, "at": at, "pid": os.getpid(), "store": limiter.store.name}


@app.task(name="sg.ping")
def ping() -> int:
    return os.getpid()

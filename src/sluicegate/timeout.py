"""Call timeouts and the deadline that cooperative code reads.

    sg.remaining()                 # seconds left before the current deadline (None: none)
    with sg.deadline(2.0): ...     # a deadline for the block (the earlier of it and any outer one)
    call_with_timeout(2.0, fn, *args)            # sync: fn runs in a worker thread
    await call_with_timeout_async(2.0, fn, *args)  # async: fn's awaitable is cancelled

A sync call cannot be interrupted in Python: ``call_with_timeout`` runs it in a worker
thread and returns ``CallTimeout`` to the caller at the deadline while the thread goes
on until the call returns (its result is then dropped).  The call sees the deadline
(``remaining()`` inside it counts down to it), so cooperative code passes the rest of
the budget on to its HTTP or database client and stops itself.  Worker threads are
daemons and are reused: an idle one takes the next call, so a call does not pay a
thread start.  At most ``MAX_WORKERS`` run at once in a process; past that, a call
waits for a worker within its own timeout (and times out if none frees in time: calls
that never return hold their threads).  An async call is cancelled at the deadline
(``asyncio.timeout``; ``asyncio.wait_for`` on Python 3.10) and raises ``CallTimeout``;
a cancellation from outside stays a cancellation."""

from __future__ import annotations

import asyncio
import contextvars
import queue
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ._forks import after_fork_in_child
from .concurrency import _check_seconds
from .errors import CallTimeout, ConfigError

T = TypeVar("T")

MAX_WORKERS = 256  # worker threads of sync timeouts in one process, at most

# the current deadline: a time.monotonic() value, or None
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("sluicegate_deadline", default=None)


def remaining() -> float | None:
    """Seconds left before the innermost deadline of this context (a Guard's timeout,
    sg.deadline()); None when there is none; 0.0 once it has passed."""
    d = _deadline.get()
    if d is None:
        return None
    left = d - time.monotonic()
    return left if left > 0.0 else 0.0


def _timeout(arg: str, seconds: object) -> float:
    t = _check_seconds(arg, seconds, allow_none=False)
    assert t is not None
    if t <= 0:
        raise ConfigError(f"{arg} must be positive seconds, got {seconds!r}")
    return t


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """A deadline seconds from now for the block, or the outer one if that is earlier
    (None: no new deadline, the outer one stays)."""
    if seconds is None:
        yield
        return
    at = time.monotonic() + _timeout("seconds", seconds)
    outer = _deadline.get()
    token = _deadline.set(at if outer is None or at < outer else outer)
    try:
        yield
    finally:
        _deadline.reset(token)


def _limit(timeout: object) -> tuple[float, float]:
    """(seconds, absolute deadline): timeout within the current deadline."""
    t = _timeout("timeout", timeout)
    now = time.monotonic()
    at = now + t
    outer = _deadline.get()
    if outer is not None and outer < at:
        at = outer
    return max(at - now, 0.0), at


def _late(seconds: float, started: bool) -> CallTimeout:
    if started:
        return CallTimeout(f"the call did not return within {seconds:.3g}s; it goes on in its thread "
                           f"(pass sg.remaining() to its clients to make it stop)", timeout=seconds)
    return CallTimeout(f"no worker thread freed within {seconds:.3g}s to start the call "
                       f"({MAX_WORKERS} are busy with calls that have not returned)", timeout=seconds)


# -- sync: worker threads ------------------------------------------------------------------------
class _Job:
    __slots__ = ("at", "args", "ctx", "done", "error", "fn", "kwargs", "result", "started")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], at: float) -> None:
        self.fn, self.args, self.kwargs, self.at = fn, args, kwargs, at
        self.ctx = contextvars.copy_context()
        self.done = threading.Event()
        self.started = False
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        self.started = True
        try:
            self.result = self.ctx.run(self._inside)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e
        self.done.set()

    def _inside(self) -> Any:
        _deadline.set(self.at)  # in the copied context: remaining() in the call counts down
        return self.fn(*self.args, **self.kwargs)


class _Workers:
    """Daemon threads taking jobs from one queue.  A job goes to an idle thread (reserved
    under the lock, so two jobs never count on one idle thread), else to a new thread
    started with it, else (MAX_WORKERS busy) to the queue, for the first thread that frees."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = 0
        self.count = 0

    def submit(self, job: _Job) -> None:
        with self.lock:
            if self.idle:
                self.idle -= 1
                start = False
            else:
                start = self.count < MAX_WORKERS
                self.count += start
        if start:
            threading.Thread(target=self._work, args=(job,), name="sluicegate-timeout", daemon=True).start()
        else:
            self.jobs.put(job)

    def _work(self, job: _Job) -> None:
        while True:
            job.run()
            del job
            with self.lock:
                self.idle += 1
            job = self.jobs.get()


_workers = _Workers()


@after_fork_in_child
def _after_fork_in_child() -> None:
    global _workers
    _workers = _Workers()  # the parent's threads are not in the child


def call_with_timeout(timeout: float, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a worker thread; its result, or its exception; CallTimeout
    at min(timeout, the current deadline) while the call goes on in its thread."""
    seconds, at = _limit(timeout)
    job = _Job(fn, args, kwargs, at)
    _workers.submit(job)
    if not job.done.wait(seconds):
        raise _late(seconds, job.started)
    if job.error is not None:
        err, job.error = job.error, None  # no cycle through the job's frame
        raise err
    return job.result  # type: ignore[no-any-return]


# -- async: cancellation -------------------------------------------------------------------------
async def call_with_timeout_async(timeout: float, fn: Callable[..., Awaitable[T]], /, *args: Any,
                                  **kwargs: Any) -> T:
    """await fn(*args, **kwargs), cancelled at min(timeout, the current deadline): then
    CallTimeout.  A cancellation from outside stays a cancellation."""
    seconds, at = _limit(timeout)
    token = _deadline.set(at)
    try:
        if sys.version_info >= (3, 11):
            cm = asyncio.timeout(seconds)
            try:
                async with cm:
                    return await fn(*args, **kwargs)
            except TimeoutError:
                if cm.expired():
                    raise _late(seconds, True) from None
                raise
        else:  # pragma: no cover - Python 3.10
            try:
                return await asyncio.wait_for(fn(*args, **kwargs), seconds)
            except asyncio.TimeoutError:
                raise _late(seconds, True) from None
    finally:
        _deadline.reset(token)


__all__ = ["MAX_WORKERS", "call_with_timeout", "call_with_timeout_async", "deadline", "remaining"]

"""Telemetry events: what a policy did, told to listeners and to ``logging``.

    sg.on("rate.denied", listener)        every policy's denials, in this process
    sg.on("breaker.*", listener)          every breaker event
    lim.on("rate.denied", listener)       one policy's
    sg.off("rate.denied", listener)

A listener takes one ``Event`` (name, kind, policy, time, pid, measurements).  An
``async def`` listener is scheduled on the running event loop (dropped, with one
warning, when there is none).  A listener that raises is logged on
``sluicegate.telemetry`` and never breaks the call that emitted the event.

Events are emitted in the process where they happen.  The frequent ones (denials,
calls, checkouts) cost one predictable branch and no allocation while nobody listens:
each policy keeps one flag per event, refreshed when a listener is added or removed,
when the policy is made, and on ``sg.telemetry.refresh()``.  ``rate.allowed`` is the
hot path: only a listener registered for exactly that name receives it (wildcards do
not).

Every event is also a ``logging`` record on ``sluicegate.<kind>``: frequent events at
DEBUG, state changes at INFO (a breaker opening at WARNING), reclaims and timeouts at
INFO, a full store at WARNING.  Because the flags are refreshed, not read per call, DEBUG
records of frequent events start for policies made after the logger was set to DEBUG,
or after ``sg.telemetry.refresh()``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

_log = logging.getLogger("sluicegate.telemetry")

# event -> the logging level of its record (some changes log at WARNING: _WARN_ON)
EVENTS: dict[str, int] = {
    "rate.denied": logging.DEBUG,
    "rate.allowed": logging.DEBUG,
    "breaker.state_change": logging.INFO,
    "breaker.call": logging.DEBUG,
    "breaker.rejected": logging.DEBUG,
    "cap.acquired": logging.DEBUG,
    "cap.timeout": logging.INFO,
    "cap.reclaimed": logging.INFO,
    "pool.checkout": logging.DEBUG,
    "pool.timeout": logging.INFO,
    "pool.exhausted": logging.INFO,
    "pool.created": logging.DEBUG,
    "pool.closed": logging.DEBUG,
    "store.full": logging.WARNING,
    "store.reclaimed": logging.INFO,
    "memory.level_change": logging.INFO,
    "guard.call": logging.DEBUG,
    "guard.rejected": logging.DEBUG,
    "guard.retry": logging.INFO,
    "guard.timeout": logging.INFO,
    "guard.fallback": logging.DEBUG,
}
ONLY_BY_NAME = frozenset({"rate.allowed"})  # wildcards do not reach these


@dataclass(frozen=True)
class Event:
    """One thing a policy did.  measurements depend on the event (see README)."""

    name: str  # e.g. "rate.denied"
    kind: str  # the policy's kind: "limiter", "breaker", "cap", "pool", "store", "memory"
    policy: str  # the policy's name (the store's, for store events)
    time: float  # epoch seconds
    pid: int
    measurements: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[Event], Any]


def _check_pattern(event: object) -> str:
    if not isinstance(event, str):
        raise ConfigError(f"event must be a str such as 'rate.denied' or 'breaker.*', got {event!r}")
    if event == "*" or event in EVENTS:
        return event
    if event.endswith(".*") and any(e.startswith(event[:-1]) for e in EVENTS):
        return event
    raise ConfigError(f"unknown event {event!r}; known events: {', '.join(sorted(EVENTS))}, "
                      f"a prefix such as 'breaker.*', or '*'")


def _check_listener(listener: object) -> None:
    if not callable(listener):
        raise ConfigError(f"listener must be callable (it is given one Event), got {listener!r}")


def matches(pattern: str, event: str) -> bool:
    if pattern == event:
        return True
    if event in ONLY_BY_NAME:
        return False
    return pattern == "*" or (pattern.endswith(".*") and event.startswith(pattern[:-1]))


class Listeners:
    """Listeners by pattern (sg.on's, and each policy's own)."""

    def __init__(self) -> None:
        self._by: dict[str, list[Listener]] = {}

    def add(self, event: str, listener: Listener) -> None:
        pattern = _check_pattern(event)
        _check_listener(listener)
        self._by.setdefault(pattern, []).append(listener)

    def remove(self, event: str, listener: Listener) -> bool:
        got = self._by.get(_check_pattern(event), [])
        if listener in got:
            got.remove(listener)
            return True
        return False

    def wants(self, event: str) -> bool:
        return any(ls and matches(p, event) for p, ls in self._by.items())

    def for_event(self, event: str) -> list[Listener]:
        return [fn for p, ls in list(self._by.items()) if matches(p, event) for fn in list(ls)]


_global = Listeners()
_lock = threading.Lock()
_emitters: weakref.WeakSet[Any] = weakref.WeakSet()
_no_loop_warned: set[str] = set()


def on(event: str, listener: Listener) -> Listener:
    """Call listener(Event) for every event matching event ('rate.denied', 'breaker.*',
    '*') from every policy in this process.  Returns listener (usable as a decorator
    through functools.partial, or just called)."""
    with _lock:
        _global.add(event, listener)
    refresh()
    return listener


def off(event: str, listener: Listener) -> None:
    """Stop calling listener for event (as it was given to on); no error if it was not."""
    with _lock:
        _global.remove(event, listener)
    refresh()


def refresh() -> None:
    """Recompute every policy's event flags (listeners, and loggers' levels), and the
    store's (store.reclaimed is told by the compiled core when wanted)."""
    for em in list(_emitters):
        em._refresh_events()
    from . import _core

    _core.set_store_events(wanted("store.reclaimed", None, "store"))


def register(emitter: Any) -> None:
    _emitters.add(emitter)


def wanted(event: str, own: Listeners | None, kind: str) -> bool:
    """Whether anything would receive event now: a listener, or its logger's level."""
    if _global.wants(event) or (own is not None and own.wants(event)):
        return True
    return event not in ONLY_BY_NAME and logging.getLogger(f"sluicegate.{kind}").isEnabledFor(_level(event))


# events whose record is a WARNING when they move to one of these states
_WARN_ON = {"breaker.state_change": ("open", "forced_open"), "memory.level_change": ("warning", "critical")}


def _level(event: str, measurements: dict[str, Any] | None = None) -> int:
    """The level of event's record: EVENTS's, raised to WARNING by _WARN_ON.  With no
    measurements: the highest level the event can log at (which decides if it is wanted)."""
    warn_on = _WARN_ON.get(event)
    if warn_on is not None and (measurements is None or measurements.get("new") in warn_on):
        return logging.WARNING
    return EVENTS[event]


# events logged at most once per this many seconds per policy: a full store refuses every
# new key, and a WARNING record per refusal would flood the log (and cost each refusal
# the write); the record says how many it stands for.  Listeners still get every event.
LOG_EVERY: dict[str, float] = {"store.full": 10.0}
_logged: dict[tuple[str, str], tuple[float, int]] = {}  # (event, policy) -> (monotonic time, events since)


def _log_now(event: str, policy: str) -> int:
    """0 to skip this record, else how many events it stands for (this one included)."""
    every = LOG_EVERY.get(event)
    if every is None:
        return 1
    now = time.monotonic()
    got = _logged.get((event, policy))
    if got is not None and now - got[0] < every:
        _logged[(event, policy)] = (got[0], got[1] + 1)
        return 0
    _logged[(event, policy)] = (now, 0)
    return 1 + (got[1] if got is not None else 0)


def emit(kind: str, policy: str, event: str, own: Listeners | None = None, /, **measurements: Any) -> None:
    """Build the Event once, log it, and call every listener for it; never raises."""
    ev = Event(event, kind, policy, time.time(), os.getpid(), measurements)
    level = _level(event, measurements)
    logger = logging.getLogger(f"sluicegate.{kind}")
    if event not in ONLY_BY_NAME and logger.isEnabledFor(level):
        n = _log_now(event, policy)
        if n:
            more = f" ({n - 1} more since the last record)" if n > 1 else ""
            logger.log(level, "%s %r: %s%s", event, policy,
                       " ".join(f"{k}={v!r}" for k, v in measurements.items()), more)
    fns = _global.for_event(event)
    if own is not None:
        fns += own.for_event(event)
    for fn in fns:
        _call(fn, ev)


def _call(fn: Listener, ev: Event) -> None:
    try:
        if inspect.iscoroutinefunction(fn):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                if ev.name not in _no_loop_warned:
                    _no_loop_warned.add(ev.name)
                    _log.warning("async listener %r for %s: no running event loop here; "
                                 "the event is dropped (use a sync listener in threads)", fn, ev.name)
                return
            task = loop.create_task(fn(ev))
            task.add_done_callback(_task_done)
        else:
            fn(ev)
    except Exception:
        _log.exception("listener %r for %s of %s %r failed; the call it came from went on",
                       fn, ev.name, ev.kind, ev.policy)


def _task_done(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("async telemetry listener failed", exc_info=task.exception())


__all__ = ["EVENTS", "Event", "Listener", "off", "on", "refresh"]

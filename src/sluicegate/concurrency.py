"""ConcurrencyLimiter: a host-wide semaphore in the shared store.

Every permit is a holder record [pid | pid namespace | process start time] taken with
one CAS, so a SIGKILLed holder leaves a record that the next acquire finding the cap
full frees (a reused pid has another start time and is never mistaken for the holder;
a holder in another pid namespace cannot be judged from here and is never freed).
Adaptive mode is AIMD as in Netflix concurrency-limits: a success with enough
permits in flight grows the shared limit by one, a drop (an exception listed in
drop_on, or a call slower than slow_call) multiplies it by backoff, always within
[min_limit, max_limit]; every process shares the adjusted limit."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from . import _core
from . import _procident as _pi
from ._forks import after_fork_in_child
from .directory import BUILDERS
from .errors import ConcurrencyLimitExceeded, ConfigError
from .histogram import histogram
from .policy import Policy
from .store import SharedStore, resolve_store

F = TypeVar("F", bound=Callable[..., Any])
MAX_LIMIT: int = int(_core.CAP_MAX_LIMIT)
_FIRST_DELAY = 0.0005
_MAX_DELAY = 0.02
_CONTENDED_WINDOW_NS = 50_000_000  # "someone found the cap full within 50 ms"

_current_owner = _pi.current_owner
_log = logging.getLogger("sluicegate.concurrency")


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an int in {lo}..{hi}, got {value!r}")
    return value


def _check_seconds(name: str, value: object, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _cap_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The one validator of a cap's shared configuration (code, override or file):
    limit, adaptive, min_limit, max_limit, backoff, slow_call."""
    unknown = set(cfg) - {"limit", "adaptive", "min_limit", "max_limit", "backoff", "slow_call"}
    if unknown:
        raise ConfigError(f"unknown ConcurrencyLimiter option(s): {', '.join(sorted(unknown))}")
    if "limit" not in cfg:
        raise ConfigError("a ConcurrencyLimiter needs a limit, e.g. limit=20")
    limit = _check_int("limit", cfg["limit"], 1, MAX_LIMIT)
    adaptive = cfg.get("adaptive", False)
    min_limit, max_limit = cfg.get("min_limit"), cfg.get("max_limit")
    if not isinstance(adaptive, bool):
        raise ConfigError(f"adaptive must be a bool, got {adaptive!r}")
    if adaptive:
        lo = 1 if min_limit is None else _check_int("min_limit", min_limit, 1, MAX_LIMIT)
        hi = min(MAX_LIMIT, 2 * limit) if max_limit is None else _check_int("max_limit", max_limit, 1, MAX_LIMIT)
        if lo > hi:
            raise ConfigError(f"min_limit ({lo}) must not exceed max_limit ({hi})")
        if not lo <= limit <= hi:
            raise ConfigError(f"limit ({limit}) must lie within min_limit..max_limit ({lo}..{hi})")
    else:
        if min_limit is not None or max_limit is not None:
            raise ConfigError("min_limit and max_limit apply only with adaptive=True")
        lo = hi = limit
    backoff = cfg.get("backoff", 0.9)
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0.0 < backoff < 1.0:
        raise ConfigError(f"backoff must be a number in (0, 1), got {backoff!r}")
    return {"limit": limit, "adaptive": adaptive, "min_limit": lo if adaptive else None,
            "max_limit": hi if adaptive else None, "backoff": float(backoff),
            "slow_call": _check_seconds("slow_call", cfg.get("slow_call"))}


# One held permit, and the context manager slot() returns: compiled (_concurrency.pxi),
# so the slot() round trip runs no Python code while the cap has room.
Permit = _core.Permit


class ConcurrencyLimiter(Policy):
    """A semaphore shared by every process attached to the store.

    cap = ConcurrencyLimiter("postgres", limit=100, store=store)
    with cap.slot(timeout=1.0): ...          # raises ConcurrencyLimitExceeded on timeout
    p = cap.acquire(); ...; p.release()     # or cap.release()
    async with cap.slot_async(timeout=1.0): ...
    """

    def __init__(
        self,
        name: str,
        limit: int,
        *,
        store: SharedStore | str | None = None,
        adaptive: bool = False,
        min_limit: int | None = None,
        max_limit: int | None = None,
        backoff: float = 0.9,
        drop_on: type[BaseException] | tuple[type[BaseException], ...] = (TimeoutError,),
        slow_call: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        _core.namespace_seed(4, name)  # ConfigError for a name with no UTF-8 form
        code = _cap_config({"limit": limit, "adaptive": adaptive, "min_limit": min_limit, "max_limit": max_limit,
                            "backoff": backoff, "slow_call": slow_call})
        if isinstance(drop_on, type):
            drop_on = (drop_on,)
        if not isinstance(drop_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in drop_on
        ):
            raise ConfigError(f"drop_on must be an exception class or a tuple of them, got {drop_on!r}")
        self.name = name
        self.drop_on: tuple[type[BaseException], ...] = drop_on
        self._store = resolve_store(store)
        self._register(self._store, name, code)
        # permits acquire() gave out, per thread (cap.release() with no argument releases
        # the calling thread's last one); Permit makes each release happen once
        self._held: dict[int, list[Permit]] = {}
        self._held_lock = threading.Lock()
        # waiters in this process sleep on a condition that local releases notify (when the
        # engine's nwait says there are any); releases in other processes are seen by
        # polling with backoff (no cross-process wakeup primitive)
        self._cond = threading.Condition(threading.Lock())
        _live_caps.add(self)

    # -- configuration: the directory's, followed at the next acquire (policy.Policy) -----
    KIND = "cap"
    EVENT_PREFIX = "cap."
    _validate = staticmethod(_cap_config)

    def _apply(self, cfg: dict[str, Any]) -> None:
        """A new limit applies to new acquires; holders keep their permits (and count
        against a lowered limit until they release)."""
        self.adaptive: bool = cfg["adaptive"]
        limit = cfg["limit"]
        self.min_limit: int = cfg["min_limit"] if self.adaptive else limit
        self.max_limit: int = cfg["max_limit"] if self.adaptive else limit
        self.backoff: float = cfg["backoff"]
        self.slow_call: float | None = cfg["slow_call"]
        self._configured = limit
        self._backoff_1024 = max(1, min(1023, int(self.backoff * 1024)))
        self._engine.configure(self.max_limit, limit, self.min_limit, self.adaptive)

    # -- acquiring ----------------------------------------------------------------------
    def _set_event_flags(self, flags: dict[str, bool]) -> None:
        self._event_flags = flags
        self._engine.ev_acquired = flags["cap.acquired"]  # Permit's compiled path reads it

    def _acquired_event(self, wait: float) -> None:
        self._emit("cap.acquired", wait=wait, in_use=self.in_use, limit=self.limit)

    def _acquired_after(self, wait: float) -> None:
        """A permit taken after waiting wait seconds: the wait histogram, and the event."""
        histogram(self._store, "cap", self.name, "wait").record_seconds(wait)
        if self._engine.ev_acquired:
            self._acquired_event(wait)

    def try_acquire(self) -> Permit | None:
        """A permit now, or None if the cap is full (after reclaiming dead holders)."""
        p = self._try()
        if p is not None and self._engine.ev_acquired:
            self._acquired_event(0.0)
        return p

    def _try(self) -> Permit | None:
        owner = _pi._owner or _current_owner()
        idx = self._engine.try_acquire(owner, owner >> 42)
        if idx == -2:  # a new configuration: follow it first
            self._follow_directory()
            idx = self._engine.try_acquire(owner, owner >> 42)
        if idx < 0:
            if not self.reclaim():
                return None
            idx = self._engine.try_acquire(owner, owner >> 42)
            if idx < 0:
                return None
        return Permit(self, idx, owner)

    def _timeout_error(self, timeout: float | None, block: bool) -> ConcurrencyLimitExceeded:
        self._engine.stat_add("st", 1)
        if self._event_flags["cap.timeout"]:
            self._emit("cap.timeout", timeout=timeout, block=block, limit=self.limit, in_use=self.in_use)
        if not block:
            return ConcurrencyLimitExceeded(f"ConcurrencyLimiter {self.name!r}: all {self.limit} permits are in use")
        return ConcurrencyLimitExceeded(
            f"ConcurrencyLimiter {self.name!r}: no permit free within {timeout}s (limit {self.limit})"
        )

    def _acquire(self, timeout: float | None, block: bool) -> Permit:
        p = self.try_acquire()
        if p is not None:
            return p
        try_acquire = self._try  # the waits below tell cap.acquired once, with the wait
        timeout = _check_seconds("timeout", timeout)
        if not block or timeout == 0:
            raise self._timeout_error(timeout, False)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        delay = _FIRST_DELAY
        while True:
            pause = delay * (0.5 + random.random())
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout_error(timeout, True)
                pause = min(pause, left)
            with self._cond:
                self._engine.nwait += 1  # announce first, then re-try: a local release cannot slip between
                try:
                    p = try_acquire()
                    if p is None:
                        self._cond.wait(pause)
                finally:
                    self._engine.nwait -= 1
            if p is not None:
                break
            delay = min(delay * 2, _MAX_DELAY)
            p = try_acquire()
            if p is not None:
                break
        self._acquired_after(time.monotonic() - started)
        return p

    def acquire(self, timeout: float | None = None, block: bool = True) -> Permit:
        """Wait for a permit (timeout None: forever). Raises ConcurrencyLimitExceeded on
        timeout, or at once with block=False. Give it back with permit.release() or release()."""
        p = self._acquire(_check_seconds("timeout", timeout), block)
        self._remember(p)
        return p

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _remember(self, p: Permit) -> None:
        me = threading.get_ident()
        p._thread = me
        with self._held_lock:
            held = self._held.setdefault(me, [])
            if len(held) >= 32:  # drop permits released elsewhere, amortised
                held[:] = [q for q in held if q.held]
            held.append(p)
        if not p.held:  # released by another thread before it was recorded
            self._forget(p)

    def _forget(self, p: Permit) -> None:
        with self._held_lock:
            held = self._held.get(p._thread)
            if held is None:
                return
            try:
                held.remove(p)
            except ValueError:
                pass
            if not held:
                del self._held[p._thread]

    async def acquire_async(self, timeout: float | None = None, block: bool = True) -> Permit:
        """The async form of acquire()."""
        p = await self._acquire_async(_check_seconds("timeout", timeout), block)
        self._remember(p)
        return p

    async def _acquire_async(self, timeout: float | None, block: bool) -> Permit:
        p = self.try_acquire()
        if p is None:
            timeout = _check_seconds("timeout", timeout)
            if not block or timeout == 0:
                raise self._timeout_error(timeout, False)
            loop = asyncio.get_running_loop()
            started = loop.time()
            deadline = None if timeout is None else started + timeout
            delay = _FIRST_DELAY
            while p is None:
                pause = delay * (0.5 + random.random())
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise self._timeout_error(timeout, True)
                    pause = min(pause, left)
                await asyncio.sleep(pause)
                delay = min(delay * 2, _MAX_DELAY)
                p = self._try()
            self._acquired_after(loop.time() - started)
        return p

    def release(self, permit: Permit | None = None) -> bool:
        """Release permit, or (without one) the last permit acquire() gave the calling
        thread that is still held; never another thread's. Idempotent: False when there
        was nothing left to release."""
        if permit is not None:
            return permit.release()
        me = threading.get_ident()
        while True:
            with self._held_lock:
                held = self._held.get(me)
                if not held:
                    return False
                p = held.pop()
                if not held:
                    del self._held[me]
            if p.release():
                return True

    # slot(timeout=None): context manager holding one permit for the block (acquired on
    # enter). slot_async(timeout=None): the same for `async with cap.slot_async(timeout=1.0):`.
    # Compiled functions that bind as methods, so the round trip has no Python frame.
    slot = _core.cap_slot
    slot_async = _core.cap_slot

    def __call__(self, fn: F) -> F:
        """Decorator: every call of fn (sync or async) holds one permit.

        @cap
        def query(): ...
        """
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                async with _core.cap_slot(self):
                    return await fn(*args, **kwargs)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _core.cap_slot(self):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # -- dead holders -------------------------------------------------------------------
    def reclaim(self) -> int:
        """Free every permit held by a process that no longer runs. Returns how many."""
        me = _pi._owner or _current_owner()
        verdict: dict[int, bool] = {}
        freed = 0
        for idx, owner, _since in self._engine.holders():
            if owner == me:
                continue
            alive = verdict.get(owner)
            if alive is None:
                alive = verdict[owner] = _pi.owner_alive(owner)
            if not alive and self._engine.release(idx, owner):
                freed += 1
        if freed:
            self._engine.stat_add("st", 2, freed)
            if self._event_flags["cap.reclaimed"]:
                self._emit("cap.reclaimed", freed=freed)
        return freed

    def holders(self) -> list[dict[str, Any]]:
        """Every held permit: index, pid, alive, local (False: another pid namespace), held_for (seconds)."""
        now = int(self._store._table.now())
        out = []
        for idx, owner, since in self._engine.holders():
            out.append(
                {
                    "index": idx,
                    "pid": _pi.owner_pid(owner),
                    "alive": _pi.owner_alive(owner),
                    # False: a holder in another pid namespace (a container sharing the
                    # store), whose liveness cannot be judged here; it is never reclaimed
                    "local": _pi.owner_local(owner),
                    "held_for": max(0, now - since) / 1e9 if since else 0.0,
                }
            )
        return out

    # -- AIMD -----------------------------------------------------------------------------
    def _on_success(self) -> None:
        if self.adaptive:
            self._engine.on_success(self._engine.in_use, self.max_limit)

    def _on_drop(self) -> None:
        if self.adaptive:
            self._engine.on_drop(self._backoff_1024, self.min_limit)
            self._engine.stat_add("st", 3)

    def record(self, ok: bool) -> int:
        """Report an outcome outside slot(): ok=True grows, False shrinks (adaptive mode).
        Returns the limit afterwards."""
        if ok:
            self._on_success()
        else:
            self._on_drop()
        return self.limit

    # -- state ------------------------------------------------------------------------------
    @property
    def limit(self) -> int:
        """The current (shared) limit."""
        return int(self._engine.limit)

    @property
    def in_use(self) -> int:
        """Permits held right now, by every process."""
        return int(self._engine.in_use)

    @property
    def available(self) -> int:
        return max(0, self.limit - self.in_use)

    def contended(self) -> bool:
        """True if some process found the cap full in the last 50 ms."""
        return bool(self._engine.contended(_CONTENDED_WINDOW_NS))

    def _readings(self) -> dict[str, Any]:
        """In use, limit and counts of every process; held_here is this process's."""
        _acq, timeouts, reclaimed, drops = self._engine.stat_words("st")
        return {
            "limit": self.limit,
            "in_use": self.in_use,
            "available": self.available,
            "adaptive": self.adaptive,
            "min_limit": self.min_limit,
            "max_limit": self.max_limit,
            "granted": int(self._engine.granted()),
            "timeouts": int(timeouts),
            "reclaimed": int(reclaimed),
            "drops": int(drops),
            "held_here": self._held_here(),
        }

    def _held_here(self) -> int:
        with self._held_lock:
            return sum(1 for held in self._held.values() for p in held if p.held)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.name, self._store, self._code, self.drop_on))

    def __repr__(self) -> str:
        return f"<ConcurrencyLimiter {self.name!r} in_use={self.in_use} limit={self.limit}>"


_live_caps: weakref.WeakSet[ConcurrencyLimiter] = weakref.WeakSet()


@after_fork_in_child
def _after_fork_in_child() -> None:
    # a parent thread may have held the condition's lock (or been counted as waiting) at the
    # fork: only this thread exists in the child
    for cap in list(_live_caps):
        cap._cond = threading.Condition(threading.Lock())
        cap._engine.nwait = 0
        cap._held_lock = threading.Lock()
        # only this thread exists in the child, and the permits are the parent's
        cap._held = {}



def _rebuild(name: str, store: SharedStore, code: dict[str, Any],
             drop_on: tuple[type[BaseException], ...]) -> ConcurrencyLimiter:
    return ConcurrencyLimiter(name, store=store, drop_on=drop_on, **code)


def _build(store: SharedStore, name: str, code: dict[str, Any]) -> ConcurrencyLimiter:
    return ConcurrencyLimiter(name, store=store, **code)


BUILDERS["cap"] = _build

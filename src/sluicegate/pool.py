"""Resource pools: poolboy's model (size + overflow, lifo/fifo, non-blocking checkout)
with HikariCP's care (validation on borrow, lifetimes with jitter, borrower-death
reclaim, stats), optionally capped host-wide by a ConcurrencyLimiter.

The pool itself lives in one process (a threading lock and per-waiter conditions);
`host_limit` is shared: every resource that exists (idle or in use) holds one permit
of it, so N processes' pools together never hold more than the cap.

A pool with a name is a policy of kind "pool" in its store's directory (DESIGN.md
rules 7 and 8): its shared options (POOL_OPTIONS: sizes, timeouts, lifetimes, strategy)
are published there, and a new configuration -- a deploy, pool.reconfigure(...) in any
process, ``sluicegate config apply`` -- applies in every process at its next checkout.
Growing lets it create more; shrinking closes surplus idle resources at the next
checkout and surplus in-use ones when they are returned (none is taken from its
borrower).  The callables (create, check, close, clock) and host_limit are this
process's own and stay out of the directory.  A pool without a name is private: it is
in no directory, and reconfigure() changes it alone."""

from __future__ import annotations

import dis
import random
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from . import _core, telemetry
from ._forks import after_fork_in_child
from .concurrency import ConcurrencyLimiter, Permit
from .directory import BUILDERS
from .errors import ConfigError, PolicyNotBuildable, PoolExhausted, PoolTimeout, StoreClosed
from .histogram import histogram
from .policy import Policy
from .store import SharedStore, resolve_store

T = TypeVar("T")
R = TypeVar("R")
STRATEGIES = ("lifo", "fifo", "round_robin", "least_used")
# the options every process of a named pool shares through the directory, and their defaults
POOL_DEFAULTS: dict[str, Any] = {
    "max_overflow": 0,
    "strategy": "lifo",
    "timeout": 5.0,
    "max_lifetime": None,
    "max_idle": None,
    "min_size": 0,
    "overflow_ttl": 10.0,
    "check_window": 0.5,
    "jitter": 0.1,
}
POOL_OPTIONS: tuple[str, ...] = ("size", *POOL_DEFAULTS)
_DEFAULT: Any = object()
_HOST_FIRST_DELAY = 0.0005
_HOST_MAX_DELAY = 0.02
_BORROWER_POLL = 0.05
_current_thread = threading.current_thread


class ResourceLeakWarning(RuntimeWarning):
    """A checked-out resource was reclaimed because its borrower died or was
    garbage-collected without returning it."""


class _Entry:
    __slots__ = (
        "borrower",
        "created",
        "dirty",
        "doomed",
        "expires",
        "id",
        "idle_limit",
        "last_used",
        "permit",
        "resource",
        "uses",
        "where",
    )

    def __init__(self, resource: Any, id: int, now: float, permit: Permit | None) -> None:
        self.resource = resource
        self.id = id
        self.created = now
        self.last_used = now
        self.uses = 0
        self.expires = float("inf")
        self.idle_limit = float("inf")
        self.dirty = False
        self.doomed = False
        self.permit = permit
        self.borrower: Any = None
        self.where: Any = None


class _Waiter:
    __slots__ = ("cond", "entry")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.entry: _Entry | None = None


def _seconds(name: str, v: object, *, none_ok: bool = True, positive: bool = False) -> float | None:
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {v!r}")
    if positive and v == 0:
        raise ConfigError(f"{name} must be > 0, got {v!r}")
    return float(v)


def _count(name: str, v: object, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{name} must be an int >= {lo}, got {v!r}")
    return v


def _pool_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The one validator of a pool's shared configuration (constructor, reconfigure, a
    file): every option of POOL_OPTIONS, defaults filled in, in the form the directory
    keeps (JSON values: seconds as floats)."""
    unknown = set(cfg) - set(POOL_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown pool option(s): {', '.join(sorted(unknown))} "
                          f"(shared options: {', '.join(POOL_OPTIONS)})")
    if "size" not in cfg:
        raise ConfigError("a pool needs a size, e.g. size=10")
    c = {**POOL_DEFAULTS, **cfg}
    size = _count("size", c["size"], 1)
    if c["strategy"] not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}; got {c['strategy']!r}")
    min_size = _count("min_size", c["min_size"], 0)
    if min_size > size:
        raise ConfigError(f"min_size ({min_size}) must not exceed size ({size})")
    jitter = c["jitter"]
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0.0 <= jitter < 1.0:
        raise ConfigError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
    return {
        "size": size,
        "max_overflow": _count("max_overflow", c["max_overflow"], 0),
        "strategy": c["strategy"],
        "timeout": _seconds("timeout", c["timeout"]),
        "max_lifetime": _seconds("max_lifetime", c["max_lifetime"], positive=True),
        "max_idle": _seconds("max_idle", c["max_idle"], positive=True),
        "min_size": min_size,
        "overflow_ttl": _seconds("overflow_ttl", c["overflow_ttl"], none_ok=False),
        "check_window": _seconds("check_window", c["check_window"], none_ok=False),
        "jitter": float(jitter),
    }


def _release_permits(idle: deque[_Entry], out: set[_Entry]) -> None:
    for e in [*idle, *out]:
        if e.permit is not None:
            try:
                e.permit.release()
            except Exception:  # noqa: BLE001, S110 (the store may be closed already)
                pass


# a pool's totals: this process's in stats(), and a named pool's every process's in the
# store (a _core.Tally, read by the exporters: metrics.KIND_READERS["pool"]), in this order
POOL_COUNTS = ("checkouts", "timeouts", "exhausted", "created", "closed", "create_failures",
               "failed_checks", "retired", "reclaimed", "shed", "waited")
_COUNT = {k: i for i, k in enumerate(POOL_COUNTS)}


class _PoolConfig(Policy):
    """What Pool and AsyncPool share: argument checks, the configuration they follow (a
    policy of kind "pool" when named), the counts and events, and the choices that need
    no lock or await."""

    KIND = "pool"
    EVENT_PREFIX = "pool."
    _validate = staticmethod(_pool_config)
    # the shared options in effect (set by _apply)
    size: int
    max_overflow: int
    strategy: str
    timeout: float | None
    max_lifetime: float | None
    max_idle: float | None
    min_size: int
    overflow_ttl: float
    check_window: float
    jitter: float

    def _setup(self, create: Callable[..., Any], check: Callable[[Any], Any] | None,
               close: Callable[[Any], Any] | None, host_limit: ConcurrencyLimiter | None,
               clock: Callable[[], float], name: str | None, store: SharedStore | str | None,
               shared: dict[str, Any]) -> None:
        """Check the arguments, set up the pool's state, then follow its configuration:
        the directory's (named) or the code's (private)."""
        if not callable(create):
            raise ConfigError(f"create must be callable, got {create!r}")
        code = _pool_config(shared)
        if check is not None and not callable(check):
            raise ConfigError(f"check must be callable or None, got {check!r}")
        if close is not None and not callable(close):
            raise ConfigError(f"close must be callable or None, got {close!r}")
        if host_limit is not None and not isinstance(host_limit, ConcurrencyLimiter):
            raise ConfigError(f"host_limit must be a ConcurrencyLimiter or None, got {type(host_limit).__name__}")
        if not callable(clock):
            raise ConfigError(f"clock must be callable, got {clock!r}")
        if name is None:
            if store is not None:
                raise ConfigError("store= needs name=: a pool without a name is private (in no directory)")
        elif not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str or None, got {name!r}")
        self._private = name is None
        self.name: str = getattr(create, "__name__", "pool") if name is None else name
        self._create = create
        self._check = check
        self._close = close
        self._host = host_limit
        self._clock = clock
        self._rng = random.Random()
        self._idle: deque[_Entry] = deque()
        self._out: set[_Entry] = set()
        self._orphans: list[tuple[_Entry, str, int]] = []
        self._total = 0
        self._ids = 0
        self._rr = 0
        self._closed = False
        self._surplus = False  # more resources than size + max_overflow after a shrink
        self._n_checkouts = 0
        self.max_lifetime = self.max_idle = None
        self.jitter = 0.0
        # a pool dropped without close(): give its resources' host permits back (they would
        # otherwise stay held, host-wide, until this process exits)
        weakref.finalize(self, _release_permits, self._idle, self._out).atexit = False
        self._st: dict[str, Any] = {k: 0 for k in POOL_COUNTS if k != "checkouts"}
        self._st["wait_total"] = 0.0
        self._tally: Any = None  # a named pool's host-wide counts (set once registered)
        self._after_checkout = False  # a checkout must call _checked_out (counts, wait, event)
        self._override: dict[str, Any] = {}  # a private pool's reconfigure()
        if self._private:
            # what _register gives a named pool: an engine (a version watch that never moves)
            self._store: SharedStore | None = None
            self._engine = _core.DirWatch()
            self._code = code
            self._own_listeners: telemetry.Listeners | None = None
            self._follow(code, 0)
            telemetry.register(self)
            self._refresh_events()
        else:
            assert name is not None
            self._store = resolve_store(store)
            self._tally = _core.Tally(self._store._table, _core.NS_POOL, name, len(POOL_COUNTS))
            self._register(self._store, name, code)  # the store's engine for a pool: its DirWatch
        # the directory entry's version word: one load per checkout (a compiled method, bound)
        self._moved: Callable[[], bool] = self._engine.moved

    # -- configuration (policy.Policy) ------------------------------------------------------
    def _watch_version(self, version: int) -> None:
        # no on_moved callback: the pool calls moved() itself (and the engine holds no
        # reference back to the pool, so a pool dropped unclosed is freed at once)
        if not self._private:
            self._engine.watch(self._entry.dir_entry, version)

    def _sync(self) -> None:
        if self._engine.moved():
            self._follow_directory()

    def reconfigure(self, **options: Any) -> None:
        """Change the pool's shared options (POOL_OPTIONS) in every process of its store,
        each at its next checkout, until reconfigure() with no options clears the
        override.  A private pool (no name) changes alone."""
        if not self._private:
            super().reconfigure(**options)
            return
        override = {**self._override, **options} if options else {}
        cfg = self._validate({**self._code, **override})
        self._override = override
        self._follow(cfg, 0)

    def _apply_locked(self, cfg: dict[str, Any]) -> None:
        """Take a validated configuration (under the pool's lock, if it has one).  New
        lifetimes re-time the resources that exist; a shrink leaves surplus resources to
        be closed: idle ones at the next checkout, in-use ones when returned."""
        retime = (cfg["max_lifetime"], cfg["max_idle"], cfg["jitter"]) != (self.max_lifetime, self.max_idle,
                                                                         self.jitter)
        self.size = cfg["size"]
        self.max_overflow = cfg["max_overflow"]
        self.strategy = cfg["strategy"]
        self.timeout = cfg["timeout"]
        self.max_lifetime = cfg["max_lifetime"]
        self.max_idle = cfg["max_idle"]
        self.min_size = cfg["min_size"]
        self.overflow_ttl = cfg["overflow_ttl"]
        self.check_window = cfg["check_window"]
        self.jitter = cfg["jitter"]
        self._max = self.size + self.max_overflow
        periods = [p for p in (self.max_lifetime, self.max_idle) if p is not None]
        if self.max_overflow:
            periods.append(self.overflow_ttl)
        self._maint_every = max(0.001, min(periods) / 4) if periods else None
        self._next_maint = 0.0
        self._vet = self._check is not None or self.max_lifetime is not None or self.max_idle is not None
        if retime:
            for e in [*self._idle, *list(self._out)]:  # C-level copies: lock-free paths may change them
                self._time(e)
        self._surplus = self._total > self._max
        self._paths()

    def _paths(self) -> None:
        """Recompute which lock-free paths the configuration and state allow (Pool)."""

    def _trim_locked(self, to_close: list[_Entry]) -> None:
        """After a shrink: close idle resources above size + max_overflow, longest idle first."""
        while self._total > self._max and self._idle:
            e = min(list(self._idle), key=lambda e: e.last_used, default=None)
            if e is None:
                break
            try:
                self._idle.remove(e)  # atomic: a lock-free checkout may have taken it meanwhile
            except ValueError:
                continue
            self._drop_locked(e, to_close)

    # -- entries --------------------------------------------------------------------------
    def _time(self, e: _Entry) -> None:
        """Set e's retirement times from its creation, with this resource's jitter."""
        j = self.jitter
        life = self.max_lifetime
        idle = self.max_idle
        e.expires = e.created + life * (1.0 - j * self._rng.random()) if life is not None else float("inf")
        e.idle_limit = idle * (1.0 - j * self._rng.random()) if idle is not None else float("inf")

    # -- counts and events (both drivers call these) ------------------------------------------
    def _set_event_flags(self, flags: dict[str, bool]) -> None:
        self._event_flags = flags
        self._after_checkout = self._tally is not None or flags["pool.checkout"]

    def _count(self, what: str, n: int = 1) -> None:
        """Count in this process's stats and, for a named pool, in the store (over a closed
        store the pool goes on working; only its shared counts stop)."""
        self._st[what] += n
        if self._tally is not None:
            try:
                self._tally.add(_COUNT[what], n)
            except StoreClosed:
                pass

    def _checked_out(self, waited: float) -> None:
        """After a checkout (the fast paths call it only when _after_checkout): the
        host-wide count, the wait histogram, the event."""
        if self._tally is not None:
            try:
                self._tally.add(_COUNT["checkouts"])
                if waited > 1e-4:
                    assert self._store is not None
                    histogram(self._store, "pool", self.name, "wait").record_seconds(waited)
            except StoreClosed:
                pass
        if self._event_flags["pool.checkout"]:
            self._emit("pool.checkout", wait=waited, in_use=len(self._out), idle=len(self._idle))

    def _refused(self, exc: BaseException, timeout: Any) -> None:
        """Tell a checkout's PoolTimeout or PoolExhausted (after any lock is let go)."""
        if isinstance(exc, PoolTimeout):
            if self._event_flags["pool.timeout"]:
                self._emit("pool.timeout", timeout=self.timeout if timeout is _DEFAULT else timeout,
                           total=self._total)
        elif self._event_flags["pool.exhausted"]:
            self._emit("pool.exhausted", total=self._total)

    def _created_event(self) -> None:
        if self._event_flags["pool.created"]:
            self._emit("pool.created", total=self._total)

    def _closed_event(self, closed_now: int) -> None:
        if self._event_flags["pool.closed"]:
            self._emit("pool.closed", closed_now=closed_now, in_use=len(self._out))

    def _new_entry(self, resource: Any, permit: Permit | None) -> _Entry:
        self._ids += 1
        self._count("created")
        e = _Entry(resource, self._ids, self._clock(), permit)
        self._time(e)
        return e

    def _pop_idle(self) -> _Entry | None:
        idle = self._idle
        s = self.strategy
        if not idle:
            return None
        try:
            if s == "lifo":
                return idle.pop()
            if s == "fifo":
                return idle.popleft()
        except IndexError:  # taken by a lock-free checkout
            return None
        items = list(idle)  # a C-level snapshot: lock-free returns may append meanwhile
        if not items:
            return None
        if s == "least_used":
            best = min(items, key=lambda e: (e.uses, e.id))
        else:  # round_robin: the next resource in creation order after the last one handed out
            rr = self._rr
            after = [e for e in items if e.id >= rr]
            best = min(after or items, key=lambda e: e.id)
            self._rr = best.id + 1
        idle.remove(best)
        return best

    def _expired(self, e: _Entry, now: float) -> bool:
        return now >= e.expires or now - e.last_used >= e.idle_limit

    def _needs_check(self, e: _Entry, now: float) -> bool:
        return self._check is not None and (e.dirty or now - e.last_used >= self.check_window)

    def _drop_locked(self, e: _Entry, to_close: list[_Entry]) -> None:
        """Forget e (it will be closed outside the lock); frees capacity for the head waiter."""
        self._total -= 1
        to_close.append(e)
        if self._surplus and self._total <= self._max:
            self._surplus = False
            self._paths()
        self._wake_head()

    def _wake_head(self) -> None:
        raise NotImplementedError

    def _maintain_locked(self, now: float, to_close: list[_Entry]) -> None:
        """Retire expired idle resources and reap overflow idle for overflow_ttl."""
        if self._maint_every is not None:
            self._next_maint = now + self._maint_every
        excess = self._total - self.size
        # oldest-returned first, so overflow reaping closes the longest idle ones
        for e in sorted(self._idle, key=lambda e: e.last_used):
            if self._expired(e, now):
                why = "retired"
            elif excess > 0 and now - e.last_used >= self.overflow_ttl:
                why = "reaped"
            else:
                continue
            try:
                self._idle.remove(e)  # atomic: a lock-free checkout may have taken it meanwhile
            except ValueError:
                continue
            if why == "retired":
                self._count("retired")
            self._drop_locked(e, to_close)
            excess -= 1

    def _collect_orphans_locked(self) -> list[tuple[_Entry, str]]:
        """Entries whose lease was garbage-collected, or (Pool: borrowers are threads) whose borrower ended."""
        found: list[tuple[_Entry, str]] = []
        while self._orphans:
            e, why, gen = self._orphans.pop()
            if e in self._out and e.uses == gen:  # not reclaimed and lent anew meanwhile
                found.append((e, why))
        for e in list(self._out):
            b = e.borrower
            if b is not None and self._borrower_dead(b):
                found.append((e, f"its borrower {self._borrower_name(b)} ended"))
        return found

    @staticmethod
    def _borrower_dead(b: Any) -> bool:
        raise NotImplementedError

    @staticmethod
    def _borrower_name(b: Any) -> str:
        return repr(getattr(b, "name", None) or b)

    def _warn_reclaimed(self, e: _Entry, why: str) -> None:
        where = _render_where(e.where)
        warnings.warn(
            f"pool {self.name!r}: resource #{e.id} checked out at {where} was never returned ({why}); "
            f"reclaimed it", ResourceLeakWarning, stacklevel=3)

    def _readings_locked(self) -> dict[str, Any]:
        """This process's pool (a pool's resources are each process's own): its sizes, what
        it holds now, and totals since it was made."""
        st = self._st
        n = self._n_checkouts
        return {
            "size": self.size,
            "max_overflow": self.max_overflow,
            "total": self._total,
            "idle": len(self._idle),
            "in_use": len(self._out),
            "overflow": max(0, self._total - self.size),
            "waiting": self._nwaiting(),
            "checkouts": n,
            "timeouts": st["timeouts"],
            "exhausted": st["exhausted"],
            "mean_wait": st["wait_total"] / n if n else 0.0,
            "created": st["created"],
            "closed": st["closed"],
            "create_failures": st["create_failures"],
            "failed_checks": st["failed_checks"],
            "retired": st["retired"],
            "reclaimed": st["reclaimed"],
            "shed": st["shed"],
        }

    def _nwaiting(self) -> int:
        raise NotImplementedError


_getframe = sys._getframe


def _where(depth: int) -> tuple[Any, int]:
    f = _getframe(depth)
    return (f.f_code, f.f_lasti)


def _render_where(where: Any) -> str:
    if not where:
        return "an unknown place"
    code, lasti = where
    line = code.co_firstlineno
    for offset, ln in dis.findlinestarts(code):  # the last line starting at or before lasti
        if offset > lasti:
            break
        if ln is not None:
            line = ln
    return f"{code.co_filename}:{line} in {code.co_name}()"


class Lease(Generic[T]):
    """What checkout() returns: a context manager that holds one resource.

    with pool.checkout(timeout=1.0) as conn: ...
    A lease that is garbage-collected while holding its resource gives it back (with a
    ResourceLeakWarning naming where it was checked out)."""

    __slots__ = ("__weakref__", "_block", "_entry", "_gen", "_pool", "_timeout")

    def __init__(self, pool: Pool[T], timeout: float | None, block: bool) -> None:
        self._pool = pool
        self._entry: _Entry | None = None
        self._gen = 0  # e.uses when lent to us: tells our lending from a later one
        self._timeout = timeout
        self._block = block

    @property
    def resource(self) -> T:
        if self._entry is None:
            raise RuntimeError("this lease holds no resource (not entered, or already released)")
        return self._entry.resource  # type: ignore[no-any-return]

    def __enter__(self) -> T:
        if self._entry is not None:
            raise RuntimeError("a lease can be entered only once")
        pool = self._pool
        f = _getframe(1)
        # the pool's checkout, inlined (see Pool._get): the directory's version word (one
        # load), then the lock-free fast path
        if pool._moved():
            pool._follow_directory()
        elif pool._fast and not pool._waiters and not pool._orphans and not pool._closed:
            try:
                e = pool._popfast()
            except IndexError:
                pass
            else:
                e.uses += 1  # before it is in _out: a stale orphan of the last lending must not match
                pool._out.add(e)
                pool._n_checkouts += 1
                e.borrower = _current_thread()
                e.where = (f.f_code, f.f_lasti)
                self._gen = e.uses
                self._entry = e
                if pool._after_checkout:
                    pool._checked_out(0.0)
                return e.resource  # type: ignore[no-any-return]
        e = pool._get_slow(self._timeout, self._block, (f.f_code, f.f_lasti))
        self._gen = e.uses
        self._entry = e
        return e.resource  # type: ignore[no-any-return]

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        e = self._entry
        if e is None:
            return
        self._entry = None
        if e.uses != self._gen:  # stale: the pool reclaimed it and may have lent it anew
            return
        pool = self._pool
        if et is None and pool._plain_put and not e.doomed and not pool._waiters and not pool._closed:
            # the pool's lock-free return path, inlined (see Pool._put)
            e.borrower = None
            if pool._stamp:
                e.last_used = pool._clock()
            try:
                pool._out.remove(e)
            except KeyError:
                return  # reclaimed meanwhile
            pool._idle.append(e)
            if pool._waiters or pool._closed:
                pool._settle()
            return
        pool._put(e, et is not None)

    def release(self, failed: bool = False) -> None:
        """Give the resource back (idempotent). failed=True: check it or discard it first."""
        e = self._entry
        if e is not None:
            self._entry = None
            if e.uses != self._gen:  # stale: the pool reclaimed it and may have lent it anew
                return
            self._pool._put(e, failed)

    def discard(self) -> None:
        """Give the resource back to be closed, not reused."""
        e = self._entry
        if e is not None:
            if e.uses == self._gen:
                e.doomed = True
            self.release()

    def __del__(self) -> None:
        e = self._entry
        if e is not None:
            self._entry = None
            try:
                self._pool._orphans.append((e, "its lease was garbage-collected", self._gen))
            except Exception:  # noqa: BLE001, S110 (interpreter shutdown)
                pass


class Pool(_PoolConfig, Generic[T]):
    """A pool of resources for the threads of one process.

    pool = Pool(connect, size=10, max_overflow=5, strategy="lifo", timeout=5.0,
                check=ping, close=lambda c: c.close(), max_lifetime=1800, max_idle=600,
                host_limit=ConcurrencyLimiter("postgres", 100), name="db")
    with pool.checkout(timeout=1.0) as conn: ...
    pool.reconfigure(size=20)   # named: every process's pool "db", at its next checkout

    name: the pool's name in its store's directory (store: a SharedStore or a URL; default
    sg.default_store()), whose configuration every process's pool of that name follows.
    Without a name the pool is private: in no directory, and reconfigure() changes it alone.
    """

    def __init__(
        self,
        create: Callable[[], T],
        *,
        size: int,
        max_overflow: int = 0,
        strategy: str = "lifo",
        timeout: float | None = 5.0,
        check: Callable[[T], Any] | None = None,
        close: Callable[[T], Any] | None = None,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        host_limit: ConcurrencyLimiter | None = None,
        min_size: int = 0,
        overflow_ttl: float = 10.0,
        check_window: float = 0.5,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        store: SharedStore | str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._drained = threading.Condition(self._lock)
        self._stamp = check is not None  # last_used matters only for the check window here
        self._setup(create, check, close, host_limit, clock, name, store, {
            "size": size, "max_overflow": max_overflow, "strategy": strategy, "timeout": timeout,
            "max_lifetime": max_lifetime, "max_idle": max_idle, "min_size": min_size,
            "overflow_ttl": overflow_ttl, "check_window": check_window, "jitter": jitter})
        _live_pools.add(self)
        if self.min_size:
            self.fill()

    # -- configuration (see _PoolConfig) ---------------------------------------------------
    def _apply(self, cfg: dict[str, Any]) -> None:
        with self._lock:
            self._apply_locked(cfg)
            if self._total < self._max:
                self._wake_head()  # grown: the head waiter may create now

    def _paths(self) -> None:
        self._fast = self.strategy in ("lifo", "fifo") and not self._vet
        self._popfast = self._idle.pop if self.strategy == "lifo" else self._idle.popleft
        self._plain_put = (self._host is None and self._maint_every is None and self.min_size == 0
                           and not self._surplus)

    # -- capacity helpers (lock held) -------------------------------------------------------
    def _wake_head(self) -> None:
        if self._waiters:
            self._waiters[0].cond.notify()

    def _nwaiting(self) -> int:
        return len(self._waiters)

    @staticmethod
    def _borrower_dead(b: Any) -> bool:
        return not b.is_alive()

    def _close_entries(self, entries: list[_Entry]) -> None:
        i = 0
        try:
            for i, e in enumerate(entries):  # noqa: B007
                try:
                    if self._close is not None:
                        self._close(e.resource)
                except Exception as exc:  # noqa: BLE001 (a failing close never breaks the pool)
                    warnings.warn(f"pool {self.name!r}: close() of resource #{e.id} raised {exc!r}",
                                  RuntimeWarning, stacklevel=2)
                finally:
                    if e.permit is not None:
                        e.permit.release()
                    with self._lock:
                        self._count("closed")
                        if self._closed:
                            self._drained.notify_all()
        finally:
            # interrupted by a BaseException: the rest are out of the pool and will not be
            # closed here; at least give their host permits back
            for e in entries[i + 1:]:
                if e.permit is not None:
                    e.permit.release()

    def _reclaim_locked(self, found: list[tuple[_Entry, str]], to_close: list[_Entry]) -> None:
        for e, why in found:
            try:
                self._out.remove(e)  # atomic; a concurrent return may have won
            except KeyError:
                continue
            e.borrower = None
            e.dirty = True
            self._count("reclaimed")
            self._warn_reclaimed(e, why)
            if self._closed or self._check is None:
                self._drop_locked(e, to_close)
            else:
                self._give_locked(e)

    def _give_locked(self, e: _Entry) -> None:
        if self._waiters:
            w = self._waiters.popleft()
            w.entry = e
            w.cond.notify()
        else:
            self._idle.append(e)

    # -- checkout ----------------------------------------------------------------------------
    def checkout(self, timeout: float | None = _DEFAULT, block: bool = True) -> Lease[T]:
        """Context manager lending one resource. timeout defaults to the pool's (None: wait
        forever); block=False raises PoolExhausted at once when none is free."""
        return Lease(self, timeout, block)

    def transaction(self, fn: Callable[[T], R], timeout: float | None = _DEFAULT) -> R:
        """fn(resource) with a resource checked out for the call and given back after it,
        also when fn raises (then checked or discarded before reuse, as a `with` block's
        resource is): poolboy's transaction.  timeout as for checkout()."""
        with self.checkout(timeout) as resource:
            return fn(resource)

    def acquire(self, timeout: float | None = _DEFAULT, block: bool = True) -> Lease[T]:
        """Check out now; give back with lease.release(). lease.resource is the resource."""
        lease = Lease(self, timeout, block)
        e = self._get(timeout, block, _where(2))
        lease._gen = e.uses
        lease._entry = e
        return lease

    def _get(self, timeout: float | None, block: bool, where: Any) -> _Entry:
        # The directory's version word first (one load; a new configuration is followed,
        # then the slow path applies it).  Lock-free fast path (lifo/fifo without
        # validation): deque.pop and set.add are atomic under the GIL; waiters re-check the
        # idle deque after queueing, so a resource appended concurrently is never missed.
        if self._moved():
            self._follow_directory()
        elif self._fast and not self._waiters and not self._orphans and not self._closed:
            try:
                e = self._popfast()
            except IndexError:
                return self._get_slow(timeout, block, where)
            e.uses += 1  # before it is in _out: a stale orphan of the last lending must not match
            self._out.add(e)
            self._n_checkouts += 1
            e.borrower = _current_thread()
            e.where = where
            if self._after_checkout:
                self._checked_out(0.0)
            return e
        return self._get_slow(timeout, block, where)

    def _get_slow(self, timeout: float | None, block: bool, where: tuple[Any, int]) -> _Entry:
        """The slow checkout; a timeout or an exhausted pool is told (pool.timeout,
        pool.exhausted) after the lock is let go, then raised."""
        try:
            return self._take_slow(timeout, block, where)
        except (PoolTimeout, PoolExhausted) as e:
            self._refused(e, timeout)
            raise

    def _take_slow(self, timeout: float | None, block: bool, where: tuple[Any, int]) -> _Entry:
        if timeout is _DEFAULT:
            timeout = self.timeout  # the pool's, as configured now
        if timeout is not None:
            timeout = _seconds("timeout", timeout)
        clock = self._clock
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        waiter: _Waiter | None = None
        while True:
            to_close: list[_Entry] = []
            entry: _Entry | None = None
            permit: Permit | None = None
            create = False
            follow = False  # a new configuration arrived while waiting: follow it, then go on
            try:
                with self._lock:
                    host_delay = _HOST_FIRST_DELAY
                    while True:
                        if self._closed:
                            if waiter is not None and waiter in self._waiters:
                                self._waiters.remove(waiter)
                            raise StoreClosed(f"pool {self.name!r} is closed")
                        now = clock()
                        if self._maint_every is not None and now >= self._next_maint:
                            self._maintain_locked(now, to_close)
                        if self._surplus:
                            self._trim_locked(to_close)
                        if self._orphans:
                            self._reclaim_locked(self._collect_orphans_locked(), to_close)
                        if waiter is not None and waiter.entry is not None:
                            # handed over: the giver already took us off the queue
                            entry, waiter.entry, waiter = waiter.entry, None, None
                            break
                        head = waiter is None and not self._waiters or (
                            waiter is not None and self._waiters and self._waiters[0] is waiter)
                        host_blocked = False
                        if head:
                            while True:
                                e = self._pop_idle()
                                if e is None:
                                    break
                                if self._expired(e, now):
                                    self._count("retired")
                                    self._drop_locked(e, to_close)
                                    continue
                                entry = e
                                break
                            if entry is None and self._total < self._max:
                                if self._host is not None:
                                    permit = self._host.try_acquire()
                                    host_blocked = permit is None
                                if not host_blocked:
                                    self._total += 1
                                    create = True
                            if entry is not None or create:
                                if waiter is not None:
                                    self._waiters.popleft()
                                    waiter = None
                                    if self._idle or self._total < self._max:
                                        self._wake_head()
                                break
                        if not block:
                            self._count("exhausted")
                            raise PoolExhausted(
                                f"pool {self.name!r}: all {self._total} resources are in use"
                                + (" and the host limit is reached" if host_blocked else ""))
                        found = self._collect_orphans_locked()
                        if found:
                            self._reclaim_locked(found, to_close)
                            continue
                        if waiter is None:
                            waiter = _Waiter(self._lock)
                            self._waiters.append(waiter)
                            continue  # re-check idle: a lock-free return may have just landed
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            self._waiters.remove(waiter)
                            self._wake_head()
                            self._count("timeouts")
                            raise PoolTimeout(
                                f"pool {self.name!r}: no resource free within {timeout}s "
                                f"({self._total} in use, {len(self._waiters)} other waiters)")
                        pause = _BORROWER_POLL if self._out else None
                        if host_blocked:
                            pause = host_delay * (0.5 + self._rng.random())
                            host_delay = min(host_delay * 2, _HOST_MAX_DELAY)
                        if left is not None:
                            pause = left if pause is None else min(pause, left)
                        waiter.cond.wait(pause)
                        if self._moved():  # outside the lock: following takes it
                            follow = True
                            break
                if follow:
                    self._follow_directory()
            except BaseException:
                # closed, exhausted, timed out or interrupted (KeyboardInterrupt in wait()):
                # leave the queue, and pass on a resource handed to us meanwhile
                if waiter is not None:
                    with self._lock:
                        if waiter in self._waiters:
                            self._waiters.remove(waiter)
                            self._wake_head()
                        handed, waiter.entry = waiter.entry, None
                        if handed is not None:
                            if self._closed:
                                self._drop_locked(handed, to_close)
                            else:
                                self._give_locked(handed)
                raise
            finally:
                if to_close:
                    try:
                        self._close_entries(to_close)
                    except BaseException:  # interrupted: undo what we took but have not lent
                        with self._lock:
                            if create:
                                self._total -= 1
                                self._wake_head()
                            elif entry is not None:
                                entry.dirty = True
                                if self._closed:  # left unclosed, like the rest of to_close
                                    self._drop_locked(entry, [])
                                    permit = entry.permit
                                else:
                                    self._give_locked(entry)
                                    permit = None
                        if permit is not None:
                            permit.release()
                        raise
            if follow:
                continue
            if create:
                entry = self._create_entry(permit)
            assert entry is not None
            if self._vet and not create and not self._vet_entry(entry):
                continue
            with self._lock:
                entry.uses += 1
                entry.borrower = _current_thread()
                entry.where = where
                self._out.add(entry)
                self._n_checkouts += 1
                waited = time.monotonic() - start
                if waited > 1e-4:
                    self._count("waited")
                    self._st["wait_total"] += waited
            if self._after_checkout:
                self._checked_out(waited)
            return entry

    def _create_entry(self, permit: Permit | None) -> _Entry:
        try:
            resource = self._create()
        except BaseException:
            if permit is not None:
                permit.release()
            with self._lock:
                self._total -= 1
                self._count("create_failures")
                self._wake_head()
            raise
        self._created_event()
        with self._lock:
            return self._new_entry(resource, permit)

    def _vet_entry(self, e: _Entry) -> bool:
        """Validate a borrowed resource (outside the lock). False: it was discarded."""
        now = self._clock()
        ok = not self._expired(e, now)
        if ok and self._needs_check(e, now):
            try:
                ok = self._check(e.resource) is not False  # type: ignore[misc]
            except Exception:  # noqa: BLE001
                ok = False
            except BaseException:  # interrupted mid-check: give it back unlent (dirty), then re-raise
                e.dirty = True
                lost: list[_Entry] = []
                with self._lock:
                    if self._closed:
                        self._drop_locked(e, lost)
                    else:
                        self._give_locked(e)
                self._close_entries(lost)
                raise
            if not ok:
                with self._lock:
                    self._count("failed_checks")
        elif not ok:
            with self._lock:
                self._count("retired")
        if ok:
            e.dirty = False
            return True
        to_close: list[_Entry] = []
        with self._lock:
            self._drop_locked(e, to_close)
        self._close_entries(to_close)
        return False

    # -- return ------------------------------------------------------------------------------
    def _put(self, e: _Entry, failed: bool) -> None:
        e.borrower = None
        if self._plain_put and not failed and not e.doomed and not self._waiters and not self._closed:
            if self._stamp:
                e.last_used = self._clock()
            try:
                self._out.remove(e)
            except KeyError:
                return  # reclaimed meanwhile
            self._idle.append(e)
            if self._waiters or self._closed:  # raced with a new waiter or close(): settle under the lock
                self._settle()
            return
        now = e.last_used = self._clock()
        to_close: list[_Entry] = []
        with self._lock:
            try:
                self._out.remove(e)
            except KeyError:
                return  # reclaimed meanwhile
            if failed:
                e.dirty = True
            if (self._closed or e.doomed or (failed and self._check is None) or now >= e.expires
                    or self._total > self._max):  # the last: shrunk, and this one is surplus
                self._drop_locked(e, to_close)
            elif (self._host is not None and not self._waiters and self._total > self.min_size
                  and self._host.contended()):
                self._count("shed")
                self._drop_locked(e, to_close)
            elif self._waiters:
                w = self._waiters.popleft()
                w.entry = e
                w.cond.notify()
            else:
                self._idle.append(e)
            if self._maint_every is not None and now >= self._next_maint:
                self._maintain_locked(now, to_close)
            refill = self._total < self.min_size and not self._closed
        if to_close:
            self._close_entries(to_close)
        if refill:
            try:
                self.fill()
            except Exception as exc:  # noqa: BLE001 (the caller returned a resource; it must not fail)
                warnings.warn(f"pool {self.name!r}: refilling to min_size failed: {exc!r}", RuntimeWarning,
                              stacklevel=3)

    def _settle(self) -> None:
        to_close: list[_Entry] = []
        with self._lock:
            if self._closed:
                while self._idle:
                    try:
                        e = self._idle.pop()
                    except IndexError:
                        break
                    self._drop_locked(e, to_close)
            else:
                while self._waiters and self._idle:
                    nxt = self._pop_idle()
                    if nxt is None:
                        break
                    self._give_locked(nxt)
        if to_close:
            self._close_entries(to_close)

    def discard(self, resource: T) -> None:
        """Mark a checked-out resource to be closed when it is returned."""
        with self._lock:
            for e in list(self._out):  # a C-level copy: lock-free checkouts may change the set
                if e.resource is resource:
                    e.doomed = True
                    return
        raise ConfigError("discard(): that resource is not checked out from this pool")

    # -- maintenance ----------------------------------------------------------------------------
    def fill(self) -> int:
        """Create resources until min_size exist (eagerly). Returns how many were created."""
        made = 0
        while True:
            permit = None
            with self._lock:
                if self._closed or self._total >= self.min_size:
                    return made
                if self._host is not None:
                    permit = self._host.try_acquire()
                    if permit is None:
                        return made
                self._total += 1
            e = self._create_entry(permit)
            to_close: list[_Entry] = []
            with self._lock:
                if self._closed:  # closed while we were creating: close() already drained idle
                    self._drop_locked(e, to_close)
                else:
                    self._give_locked(e)
            if to_close:
                self._close_entries(to_close)
                return made
            made += 1

    def maintain(self) -> int:
        """Follow a new configuration, retire expired idle resources, close idle surplus
        after a shrink, reap idle overflow and reclaim leaked ones now (this also happens
        lazily on checkout/return). Returns how many were closed."""
        self._sync()
        to_close: list[_Entry] = []
        with self._lock:
            self._reclaim_locked(self._collect_orphans_locked(), to_close)
            self._maintain_locked(self._clock(), to_close)
            if self._surplus:
                self._trim_locked(to_close)
        self._close_entries(to_close)
        return len(to_close)

    def _readings(self) -> dict[str, Any]:
        """stats(): kind, name, size, total, idle, in_use, overflow, waiting, checkouts,
        timeouts, mean_wait, ... of this process's pool."""
        with self._lock:
            return self._readings_locked()

    def close(self, timeout: float | None = 0.0) -> None:
        """Close idle resources now, wake waiters (they raise StoreClosed) and close every
        in-use resource when it is returned. With a timeout, wait that long for them."""
        to_close: list[_Entry] = []
        with self._lock:
            self._closed = True
            while self._idle:
                try:
                    e = self._idle.pop()
                except IndexError:
                    break
                self._drop_locked(e, to_close)
            for w in self._waiters:
                w.cond.notify()
        self._close_entries(to_close)
        self._closed_event(len(to_close))
        if timeout:
            deadline = time.monotonic() + timeout
            with self._lock:
                while self._out and (left := deadline - time.monotonic()) > 0:
                    self._drained.wait(left)

    def _forget_after_fork(self) -> None:
        """In a forked child: the inherited resources (sockets...) and their host permits
        belong to the parent. Forget them without closing them; start empty."""
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._waiters.clear()
        self._idle.clear()
        self._out.clear()
        self._orphans.clear()
        self._total = 0
        self._surplus = False
        self._paths()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Pool[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} total={self._total} idle={len(self._idle)} in_use={len(self._out)}>"


_live_pools: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()


@after_fork_in_child
def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        pool._forget_after_fork()


def _build(store: SharedStore, name: str, code: dict[str, Any]) -> Any:
    """store.policy(name) for a pool: its create function is code, not configuration."""
    raise PolicyNotBuildable(
        f"pool {name!r} in {store!r} cannot be built from the directory: its create function is code, "
        f"not configuration. Construct it in code, e.g. sg.Pool(connect, size=..., name={name!r}, store=...): "
        f"it then follows the directory's configuration. To change that configuration in every process "
        f"from here, use `sluicegate config apply` with a [pools.{name}] table (or "
        f"sluicegate.config.apply_overrides(...))")


BUILDERS["pool"] = _build


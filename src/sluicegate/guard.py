"""Guard: one call through every protection, in one order, with one error model.

    guard = sg.Guard("checkout", limiter=lim, key=lambda user, *a, **kw: user,
                     cap=cap, breaker=br, timeout=2.0, retry=sg.Retry(attempts=3),
                     fallback=lambda exc: None)
    guard.call(fn, *args, **kwargs); await guard.call_async(fn, *args, **kwargs)
    @guard (def or async def); with guard: ...; async with guard: ...

The order, outermost first::

    fallback( memory gate -> rate limit -> retry( cap or pool -> breaker -> timeout -> call ))

- The memory gate is the cheapest refusal, and a process short of memory should not
  spend a rate token on a call it will not make.
- The rate limit comes before the cap: a token is the caller's budget, a permit is a
  shared resource, and a caller over its rate must not hold (or wait for) a permit only
  to be told no.
- The cap (or the pool checkout) comes before the breaker: a half-open breaker admits
  exactly ``half_open_calls`` probes host-wide, and a probe admitted and then stuck
  waiting for a permit would hold the recovery hostage.
- The timeout is inside the breaker, so a timed-out call is a failure the breaker sees.
- Retry wraps cap, breaker, timeout and call: each attempt takes a new permit and asks
  the breaker afresh (a breaker that opened meanwhile ends the retries: ``CircuitOpen``
  is never retried), but not a new rate token: the rate counts the caller's calls, not
  attempts (``retry_takes_token=True`` charges every attempt).
- The fallback is outermost: it sees the one error that ended the call.

One error model: what stopped the call is raised (or given to the fallback) as it is:
``MemoryPressure``, ``RateLimited``, ``ConcurrencyLimitExceeded``, ``PoolTimeout`` /
``PoolExhausted``, ``CircuitOpen``, ``CallTimeout`` or the call's own exception, with
``.guard`` (the guard's name) and ``.layer`` ("memory", "limiter", "cap", "pool",
"breaker", "timeout" or "call") set on it; refusals carry ``.retry_after`` where their
layer knows one.

A named guard is a policy (kind "guard"): it is in the store's directory with its
shared options (timeout, cost, cap_timeout, retry_takes_token, retry's numbers; the names
of its parts for reading), follows ``reconfigure()`` in every process, and keeps its
counts host-wide in the store (``stats()``).  ``Guard(None, ...)`` is a private guard:
no directory entry, counts of this process only (``execute_protected`` makes those).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ClassVar, ParamSpec, TypeVar, overload

from . import _core, telemetry
from .async_pool import AsyncPool
from .breaker import CircuitBreaker
from .concurrency import ConcurrencyLimiter, _check_seconds
from .directory import BUILDERS, OBSERVERS
from .errors import (
    CallTimeout,
    CircuitOpen,
    ConcurrencyLimitExceeded,
    ConfigError,
    MemoryPressure,
    PolicyNotBuildable,
    PoolExhausted,
    PoolTimeout,
    RateLimited,
)
from .limiter import RateLimiter
from .memory import MemoryMonitor
from .policy import Policy
from .pool import Pool
from .retry import Retry, RetryBudget
from .store import SharedStore, resolve_store
from .timeout import call_with_timeout, call_with_timeout_async, deadline, remaining

P = ParamSpec("P")
T = TypeVar("T")

LAYERS = ("memory", "limiter", "cap", "pool", "breaker", "timeout", "call")

# the guard's host-wide counts (a _core.Tally): the index of each
# (calls are not counted: every call ends in exactly one of succeeded, failed and the
# rejected_* counts, so stats() sums them; fallbacks and retries are besides)
COUNTS = (
    "succeeded",  # the call returned
    "failed",  # the call's own error (or its timeout) ended it
    "rejected_memory",
    "rejected_limiter",
    "rejected_cap",
    "rejected_pool",
    "rejected_breaker",
    "timeouts",  # attempts that timed out (each one)
    "retries",  # attempts after the first
    "fallbacks",  # calls answered by the fallback
)
_I = {name: i for i, name in enumerate(COUNTS)}
_SUCCEEDED, _FAILED, _TIMEOUTS, _RETRIES, _FALLBACKS = (
    _I["succeeded"], _I["failed"], _I["timeouts"], _I["retries"], _I["fallbacks"])
_REJECTED = {layer: _I[f"rejected_{layer}"] for layer in ("memory", "limiter", "cap", "pool", "breaker")}

PARTS = ("limiter", "cap", "pool", "breaker", "memory")
GUARD_OPTIONS = ("timeout", "cost", "cap_timeout", "retry_takes_token", "retry")  # a file's, reconfigure's
SHARED_OPTIONS = (*GUARD_OPTIONS, "parts")  # the directory's (the parts' names: for reading)

_NO_KEY = object()


def _guard_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The one validator of a guard's shared configuration (the directory's form)."""
    unknown = set(cfg) - set(SHARED_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown guard option(s): {', '.join(sorted(unknown))}; "
                          f"a guard's shared options are {', '.join(SHARED_OPTIONS)}")
    timeout = _check_seconds("timeout", cfg.get("timeout"))
    if timeout == 0:
        raise ConfigError("timeout must be positive seconds or None (no timeout), got 0")
    cost = cfg.get("cost", 1)
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise ConfigError(f"cost must be an int >= 1 (rate tokens per call), got {cost!r}")
    cap_timeout = _check_seconds("cap_timeout", cfg.get("cap_timeout", 0.0))
    take = cfg.get("retry_takes_token", False)
    if not isinstance(take, bool):
        raise ConfigError(f"retry_takes_token must be a bool, got {take!r}")
    retry = cfg.get("retry")
    if retry is not None:
        if not isinstance(retry, Mapping):
            raise ConfigError(f"retry must be a table of Retry options or None, got {retry!r}")
        try:
            retry = Retry.shared_config(retry)
        except ConfigError as e:
            raise ConfigError(f"retry: {e}") from None
    parts = cfg.get("parts") or {}
    if not isinstance(parts, Mapping) or set(parts) - set(PARTS) or not all(
        v is None or isinstance(v, str) for v in parts.values()
    ):
        raise ConfigError(f"parts must map some of {', '.join(PARTS)} to policy names, got {parts!r}")
    return {"timeout": timeout, "cost": cost, "cap_timeout": cap_timeout, "retry_takes_token": take,
            "retry": retry, "parts": {p: parts.get(p) for p in PARTS}}


class _LocalTally:
    """A private guard's counts: this process's only (the shape of _core.Tally)."""

    def __init__(self, n: int) -> None:
        self._v = [0] * n

    def add(self, i: int, n: int = 1) -> None:
        self._v[i] += n

    def values(self) -> tuple[int, ...]:
        return tuple(self._v)


def _fallback_of(fallback: Any) -> Callable[[BaseException], Any] | None:
    """The fallback as one function of the error: None (no fallback), a callable called
    with the error, a dict from error types to values or callables (the most specific
    type in the error's MRO wins; no match re-raises), or any other value, returned."""
    if fallback is None:
        return None
    if isinstance(fallback, Mapping):
        table = dict(fallback)
        for t in table:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise ConfigError(f"fallback dict keys must be exception classes, got {t!r}")

        def by_type(exc: BaseException) -> Any:
            for t in type(exc).__mro__:
                if t in table:
                    v = table[t]
                    return v(exc) if callable(v) else v
            raise exc

        return by_type
    if callable(fallback):
        return fallback  # type: ignore[no-any-return]
    value = fallback
    return lambda exc: value


class Guard(Policy, _core.GuardFront):
    """memory gate -> rate limit -> retry(cap or pool -> breaker -> timeout -> call),
    wrapped in a fallback: see the module docstring for the order and the error model.

    Parts (each optional): ``limiter`` (with ``key``: a value, or a function of the
    call's arguments, and ``cost``), ``cap`` (waiting up to ``cap_timeout`` seconds,
    default 0: refuse at once when full) or ``pool`` (``fn`` then receives the resource
    as its first argument; ``with guard as conn``), ``breaker``, ``timeout`` (seconds),
    ``retry`` (an ``sg.Retry``; its budget is shared under the guard's name),
    ``fallback`` and ``memory`` (an ``sg.MemoryMonitor`` used as a gate).  A limiter
    with ``algorithm="adaptive"`` is given each call's outcome (``lim.feedback``)."""

    KIND: ClassVar[str] = "guard"
    EVENT_PREFIX: ClassVar[str] = "guard."
    _validate = staticmethod(_guard_config)

    def __init__(
        self,
        name: str | None,
        *,
        limiter: RateLimiter | None = None,
        key: Any = _NO_KEY,
        cost: int = 1,
        cap: ConcurrencyLimiter | None = None,
        pool: Pool[Any] | AsyncPool[Any] | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        fallback: Any = None,
        memory: MemoryMonitor | None = None,
        cap_timeout: float | None = 0.0,
        retry_takes_token: bool = False,
        store: SharedStore | str | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"name must be a non-empty str, or None for a private guard, got {name!r}")
        for arg, value, cls in (("limiter", limiter, RateLimiter), ("cap", cap, ConcurrencyLimiter),
                                ("pool", pool, (Pool, AsyncPool)), ("breaker", breaker, CircuitBreaker),
                                ("memory", memory, MemoryMonitor)):
            if value is not None and not isinstance(value, cls):
                raise ConfigError(f"{arg} must be a {getattr(cls, '__name__', 'Pool or AsyncPool')} or None, "
                                  f"got {value!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigError(f"retry must be an sg.Retry or None, got {retry!r}")
        if cap is not None and pool is not None:
            raise ConfigError("give a guard a cap or a pool, not both (give the pool host_limit=cap instead)")
        if key is not _NO_KEY and limiter is None:
            raise ConfigError("key= is the rate limiter's key: give the guard a limiter too")
        if limiter is not None:
            if key is _NO_KEY:
                key = name or "guard"
            elif not (isinstance(key, (str, bytes)) or callable(key)):
                raise ConfigError(f"key must be a str, bytes or a function of the call's arguments, got {key!r}")
            limiter._engine.check_cost(cost)
        self.name = name or ""
        self.limiter, self.cap, self.pool, self.breaker, self.memory = limiter, cap, pool, breaker, memory
        self._key = key
        self._keyfn = key if callable(key) else None
        self._fallback = _fallback_of(fallback)
        self._code_retry = retry
        self._budget: RetryBudget | None = None
        parts = {p: getattr(v, "name", None) for p, v in
                 (("limiter", limiter), ("cap", cap), ("pool", pool), ("breaker", breaker), ("memory", memory))}
        code = _guard_config({
            "timeout": timeout, "cost": cost, "cap_timeout": cap_timeout, "retry_takes_token": retry_takes_token,
            "retry": None if retry is None else retry.shared_options(), "parts": parts,
        })
        self._parts = code["parts"]
        self._store = resolve_store(store)
        if name is None:
            self._tally: Any = _LocalTally(len(COUNTS))
            self._own_listeners = None
            self._engine = _core.DirWatch()  # never watched: never moves
            self._apply(code)
            self._options = code
            telemetry.register(self)
            self._refresh_events()
        else:
            self._tally = _core.Tally(self._store._table, _core.NS_GUARD, name, len(COUNTS))
            self._register(self._store, name, code)

    # -- configuration (policy.Policy) --------------------------------------------------------
    def _apply(self, cfg: dict[str, Any]) -> None:
        """Timeout, cost, cap_timeout, retry_takes_token and the retry's numbers follow the
        directory; the parts are this process's code: a configuration naming other parts (a
        guard built elsewhere from other code) is refused, and a process following the
        directory logs that once and keeps what it has (policy._follow_directory)."""
        if cfg["parts"] != self._parts:
            raise ConfigError(f"guard {self.name!r}: its parts are code ({self._parts}), "
                              f"not configuration; cannot follow parts={cfg['parts']}")
        self._timeout: float | None = cfg["timeout"]
        self._cost: int = cfg["cost"]
        self._cap_timeout: float | None = cfg["cap_timeout"]
        self._take_each = cfg["retry_takes_token"] and self.limiter is not None
        rcfg = cfg["retry"]
        if rcfg is None or self._code_retry is None:
            self._retry = None if rcfg is None else Retry(**rcfg)
        else:
            self._retry = self._code_retry.with_shared(rcfg)
        if self._retry is not None and self._retry.budget is not None:
            if not self.name:
                raise ConfigError("a retry budget is shared by the guard's name: give the guard a name")
            if self._budget is None or self._budget.config() != self._retry.budget_config():
                self._budget = self._retry.budget_for(self._store, self.name)
        else:
            self._budget = None
        self._adaptive = self.limiter is not None and bool(getattr(self.limiter, "adaptive", False))
        # the token is taken once per call outside retry, unless every attempt takes one
        self._lim_outer = self.limiter is not None and not self._take_each
        # call()'s one-frame form serves the shape without memory gate, pool, timeout, retry
        self._flat = (self.memory is None and self.pool is None and self._timeout is None
                      and self._retry is None)
        self._derive()

    def _set_event_flags(self, flags: dict[str, bool]) -> None:
        self._event_flags = flags
        self._derive()

    def _derive(self) -> None:
        """What a call does, from the configuration and the event flags: the compiled
        call() runs the flat shape while no guard.call listener wants a duration."""
        flags = getattr(self, "_event_flags", None)
        if flags is None or not hasattr(self, "_flat"):
            return  # the first configuration and flags are still to come
        self._timed_events = flags["guard.call"]
        self._after_success = self._timed_events or self._adaptive
        tally = self._tally if isinstance(self._tally, _core.Tally) else None
        self._front_setup(self._engine, tally, _SUCCEEDED, self.limiter, self._key, self._keyfn, self._cost,
                          self.cap, self._cap_timeout == 0, self.breaker, self._flat and not self._timed_events,
                          self._after_success)

    def reconfigure(self, **options: Any) -> None:
        if "parts" in options:
            raise ConfigError("a guard's parts are code: make a new Guard to change them")
        if not self.name:
            raise ConfigError("a private guard (name None) has no directory entry to reconfigure")
        super().reconfigure(**options)

    # -- the layers, one at a time ------------------------------------------------------------
    def _tag(self, exc: BaseException, layer: str) -> BaseException:
        exc.guard = self.name  # type: ignore[attr-defined]
        exc.layer = layer  # type: ignore[attr-defined]
        # which guard's layer refused it: an id, not the guard, so the error still pickles
        # (a Celery result, a multiprocessing pool); ids are compared only during the call
        exc._sg_guard = id(self)  # type: ignore[attr-defined]
        return exc

    def _outer(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The memory gate and (once per call) the rate limit."""
        if self.memory is not None:
            try:
                self.memory.check()
            except MemoryPressure as e:
                raise self._tag(e, "memory") from None
        if self._lim_outer:
            self._take_token(args, kwargs)

    def _take_token(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        key = self._key if self._keyfn is None else self._keyfn(*args, **kwargs)
        assert self.limiter is not None
        if not self.limiter.allow(key, self._cost):
            raise self._denied(key)

    def _denied(self, key: Any) -> BaseException:
        """The RateLimited for a denied key (retry_after from a peek just after the denial)."""
        lim = self.limiter
        assert lim is not None
        wait = lim.peek(key, self._cost).retry_after
        return self._tag(RateLimited(
            f"guard {self.name!r}: rate limiter {lim.name!r} denied {key!r}; retry after {wait:.3f}s",
            retry_after=wait), "limiter")

    def _cap_wait(self) -> float | None:
        """How long to wait for a permit: cap_timeout, within the caller's deadline."""
        left = remaining()
        wait = self._cap_timeout
        if left is None:
            return wait
        return left if wait is None else min(wait, left)

    def _invoke(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """breaker -> timeout -> call, sync."""
        br, timeout = self.breaker, self._timeout
        if timeout is None:
            if br is None:
                return fn(*args, **kwargs)
            try:
                return br.call(fn, *args, **kwargs)
            except CircuitOpen as e:
                raise self._refused(e, 2) from None
        if br is None:
            return self._timed(fn, args, kwargs, timeout)
        ticket, start = self._admit(br)
        try:
            result = self._timed(fn, args, kwargs, timeout)
        except BaseException as e:
            br._report(ticket, self._error_outcome(br, e), start)
            raise
        br._report(ticket, self._outcome(br, ticket, start, result), start)
        return result

    def _admit(self, br: CircuitBreaker, sleep: bool = True) -> tuple[int, int]:
        try:
            return br._admit(sleep)  # type: ignore[no-any-return]
        except CircuitOpen as e:
            raise self._tag(e, "breaker") from None

    def _error_outcome(self, br: CircuitBreaker, e: BaseException) -> int:
        """What the breaker records for an error: this guard's timeout is a failure whatever
        the breaker's record= says; any other error, as the breaker classifies it."""
        if isinstance(e, CallTimeout) and getattr(e, "_sg_guard", None) == id(self):
            return _core.BR_FAILURE  # type: ignore[no-any-return]
        return br._classify_exc(e)  # type: ignore[no-any-return]

    @staticmethod
    def _outcome(br: CircuitBreaker, ticket: int, start: int, result: Any) -> int:
        try:
            return br._result_outcome(result)  # type: ignore[no-any-return]
        except BaseException:
            br._report(ticket, _core.BR_IGNORE, start)
            raise

    def _timed(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float) -> Any:
        try:
            return call_with_timeout(timeout, fn, *args, **kwargs)
        except CallTimeout as e:
            if hasattr(e, "_sg_guard"):  # a nested guard's timeout: the call's own error
                raise
            self._timed_out(e)
            raise

    def _timed_out(self, e: CallTimeout) -> None:
        self._tag(e, "timeout")
        self._tally.add(_TIMEOUTS)
        if self._event_flags["guard.timeout"]:
            self._emit("guard.timeout", timeout=e.timeout)

    def _holder(self, asynchronous: bool) -> tuple[Any, str, tuple[type[BaseException], ...]] | None:
        """What one attempt (or one `with` block) holds: the cap's slot or the pool's lease
        (a context manager not yet entered), its layer and the errors that are its refusals."""
        if self.cap is not None:
            return _core.cap_slot(self.cap, self._cap_wait()), "cap", (ConcurrencyLimitExceeded,)
        if self.pool is None:
            return None
        if asynchronous and not isinstance(self.pool, AsyncPool):
            raise ConfigError(f"guard {self.name!r} holds a sync Pool: call_async and `async with` need an "
                              f"AsyncPool (a sync checkout would block the event loop)")
        if not asynchronous and not isinstance(self.pool, Pool):
            raise ConfigError(f"guard {self.name!r} holds an AsyncPool: use call_async or `async with`")
        return self.pool.checkout(self._pool_wait()), "pool", (PoolTimeout, PoolExhausted)

    def _attempt(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One try, sync: (rate token) -> cap or pool -> breaker -> timeout -> call."""
        if self._take_each:
            self._take_token(args, kwargs)
        held = self._holder(False)
        if held is None:
            return self._invoke(fn, args, kwargs)
        cm, layer, refusals = held
        try:
            got = cm.__enter__()
        except refusals as e:
            raise self._tag(e, layer) from None
        try:
            result = self._invoke(fn, (got, *args) if layer == "pool" else args, kwargs)
        except BaseException as e:
            cm.__exit__(type(e), e, e.__traceback__)
            raise
        cm.__exit__(None, None, None)
        return result

    def _pool_wait(self) -> Any:
        """The pool's own checkout timeout, within the caller's deadline."""
        left = remaining()
        if left is None:
            return _POOL_DEFAULT
        assert self.pool is not None
        own = self.pool.timeout
        return left if own is None else min(own, left)

    # -- ends of a call -----------------------------------------------------------------------
    def _layer_of(self, exc: BaseException) -> str:
        if getattr(exc, "_sg_guard", None) == id(self):
            return exc.layer  # type: ignore[attr-defined,no-any-return]
        if not hasattr(exc, "_sg_guard"):  # the call's own (a nested guard's keeps its tags)
            try:
                exc.guard = self.name  # type: ignore[attr-defined]
                exc.layer = "call"  # type: ignore[attr-defined]
            except AttributeError:  # an exception type that takes no attributes
                pass
        return "call"

    def _ended(self, exc: Exception, started: float, attempts: int) -> str:
        """Count and tell how exc ended the call; its layer."""
        layer = self._layer_of(exc)
        rejected = _REJECTED.get(layer)
        self._tally.add(_FAILED if rejected is None else rejected)
        if rejected is not None and self._event_flags["guard.rejected"]:
            self._emit("guard.rejected", layer=layer, error=type(exc).__name__,
                       retry_after=getattr(exc, "retry_after", None))
        if self._event_flags["guard.call"]:
            self._emit("guard.call", outcome="rejected" if rejected is not None else "failure", layer=layer,
                       error=type(exc).__name__, attempts=attempts, duration=time.monotonic() - started)
        if self._adaptive and layer in ("call", "timeout"):
            self.limiter.feedback(False)  # type: ignore[union-attr]
        return layer

    def _fell_back(self, exc: Exception, layer: str) -> Any:
        assert self._fallback is not None
        value = self._fallback(exc)
        self._tally.add(_FALLBACKS)
        if self._event_flags["guard.fallback"]:
            self._emit("guard.fallback", layer=layer, error=type(exc).__name__)
        return value

    def _succeeded(self, started: float, attempts: int) -> None:
        """After the success count (_ok): the adaptive limiter's feedback and the event."""
        if self._adaptive:
            self.limiter.feedback(True)  # type: ignore[union-attr]
        if self._event_flags["guard.call"]:
            self._emit("guard.call", outcome="success", layer="call", error=None, attempts=attempts,
                       duration=time.monotonic() - started)

    def _on_retry(self, attempt: int, exc: BaseException, delay: float) -> None:
        self._tally.add(_RETRIES)
        if self._event_flags["guard.retry"]:
            self._emit("guard.retry", attempt=attempt, delay=delay, error=type(exc).__name__,
                       layer=getattr(exc, "layer", "call") if getattr(exc, "_sg_guard", None) == id(self) else "call")

    # -- calling through it -------------------------------------------------------------------
    # call(fn, *args, **kwargs): the compiled GuardFront's, which runs the common shape
    # itself and every other one here
    call: Callable[..., Any]

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Every layer, sync: call()'s general form."""
        self._engine.sync()
        started = time.monotonic() if self._timed_events else 0.0
        attempts = [0]
        attempt = self._counting(attempts, self._attempt, fn, args, kwargs)
        try:
            self._outer(args, kwargs)
            retry = self._retry
            result = attempt() if retry is None else retry.run(attempt, budget=self._budget,
                                                                on_retry=self._on_retry)
        except Exception as exc:
            return self._failed(exc, started, attempts[0])
        self._ok(started, attempts[0])
        return result

    @staticmethod
    def _counting(attempts: list[int], step: Callable[..., T], fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Callable[[], T]:
        """One attempt of the call (step: _attempt or _attempt_async), counted in attempts[0]."""
        def attempt() -> T:
            attempts[0] += 1
            return step(fn, args, kwargs)

        return attempt

    def _ok(self, started: float, attempts: int) -> None:
        self._tally.add(_SUCCEEDED)
        if self._after_success:
            self._succeeded(started, attempts)

    def _refused(self, exc: Exception, phase: int) -> Exception:
        """Tag a refusal raised by a cap's __enter__ (phase 1) or a breaker's admission
        (phase 2) inside the compiled call(); anything else is left as it is."""
        if hasattr(exc, "_sg_guard"):
            return exc
        if phase == 1 and isinstance(exc, ConcurrencyLimitExceeded):
            self._tag(exc, "cap")
        elif phase == 2 and isinstance(exc, CircuitOpen) and self.breaker is not None \
                and exc.name == self.breaker.name:
            self._tag(exc, "breaker")
        return exc

    def _failed(self, exc: Exception, started: float, attempts: int) -> Any:
        """The end of a call that exc stopped: counted, told, then the fallback or a raise."""
        layer = self._ended(exc, started, attempts)
        if self._fallback is None:
            raise exc
        return self._fell_back(exc, layer)

    async def call_async(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """await fn(*args, **kwargs) through every layer; the timeout cancels it."""
        self._engine.sync()
        started = time.monotonic() if self._timed_events else 0.0
        attempts = [0]
        attempt = self._counting(attempts, self._attempt_async, fn, args, kwargs)
        try:
            self._outer(args, kwargs)
            retry = self._retry
            result = await (attempt() if retry is None else retry.run_async(attempt, budget=self._budget,
                                                                            on_retry=self._on_retry))
        except Exception as exc:
            value = self._failed(exc, started, attempts[0])
            if inspect.isawaitable(value):
                value = await value
            return value  # type: ignore[no-any-return]
        self._ok(started, attempts[0])
        return result  # type: ignore[no-any-return]

    async def _attempt_async(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                             kwargs: dict[str, Any]) -> Any:
        """One try, async: (rate token) -> cap or pool -> breaker -> timeout -> call."""
        if self._take_each:
            self._take_token(args, kwargs)
        held = self._holder(True)
        if held is None:
            return await self._invoke_async(fn, args, kwargs)
        cm, layer, refusals = held
        try:
            got = await cm.__aenter__()
        except refusals as e:
            raise self._tag(e, layer) from None
        try:
            result = await self._invoke_async(fn, (got, *args) if layer == "pool" else args, kwargs)
        except BaseException as e:
            await cm.__aexit__(type(e), e, e.__traceback__)
            raise
        await cm.__aexit__(None, None, None)
        return result

    async def _invoke_async(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> Any:
        """breaker -> timeout -> call, async."""
        br, timeout = self.breaker, self._timeout
        if br is None:
            return await (fn(*args, **kwargs) if timeout is None else self._timed_async(fn, args, kwargs, timeout))
        ticket, start = self._admit(br, False)
        if ticket & _core.BR_TICKET_INJECT_LATENCY:
            await _injected_latency(br, ticket, start)
        try:
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await self._timed_async(fn, args, kwargs, timeout)
        except BaseException as e:
            br._report(ticket, self._error_outcome(br, e), start)
            raise
        br._report(ticket, self._outcome(br, ticket, start, result), start)
        return result

    async def _timed_async(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any],
                           timeout: float) -> Any:
        try:
            return await call_with_timeout_async(timeout, fn, *args, **kwargs)
        except CallTimeout as e:
            if hasattr(e, "_sg_guard"):
                raise
            self._timed_out(e)
            raise

    # -- decorator ----------------------------------------------------------------------------
    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """@guard on a def or an async def: every call goes through the guard."""
        if not callable(fn):
            raise ConfigError(f"a guard decorates a function, got {fn!r}")
        if inspect.iscoroutinefunction(fn):
            call_async = self.call_async

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await call_async(fn, *args, **kwargs)

            return async_wrapper
        call = self.call

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return call(fn, *args, **kwargs)

        return wrapper

    # -- with guard: / async with guard: ------------------------------------------------------
    # The layers that can wrap a block: memory, limit (a key given as a value), cap or pool,
    # breaker; a timeout sets the deadline that sg.remaining() reads; a sync block cannot be
    # interrupted (one that overruns is a failure for the breaker), and `async with` cancels
    # its block at the deadline (Python 3.11+: asyncio.timeout) and raises CallTimeout.  No
    # retry (a block cannot be run again) and no fallback (a block has no value to replace).
    def __enter__(self) -> Any:
        block = _Block(self)
        block.enter()
        _blocks_push(self, block)
        return block.resource

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _blocks_pop(self).exit(et, exc, tb)

    async def __aenter__(self) -> Any:
        block = _Block(self)
        await block.aenter()
        _blocks_push(self, block)
        return block.resource

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await _blocks_pop(self).aexit(et, exc, tb)

    # -- reading ------------------------------------------------------------------------------
    @property
    def timeout(self) -> float | None:
        self._engine.sync()
        return self._timeout

    @property
    def retry(self) -> Retry | None:
        self._engine.sync()
        return self._retry

    @property
    def store(self) -> SharedStore:
        return self._store

    def _readings(self) -> dict[str, Any]:
        """stats(): the guard's counts, every process's for a named guard (this one's for a
        private one): calls (ended ones), succeeded, failed, rejected_<layer>, timeouts,
        retries, fallbacks."""
        return _counts(self._tally.values())

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(f"a Guard holds code (its fallback, key function); build {self.name!r} in each process")

    def __repr__(self) -> str:
        parts = " ".join(f"{p}={n!r}" for p, n in self._parts.items() if n)
        return f"<Guard {self.name or '(private)'!r} {parts}>"


_POOL_DEFAULT: Any = Pool.checkout.__defaults__[0]  # type: ignore[index]  # "the pool's own timeout"


async def _injected_latency(br: CircuitBreaker, ticket: int, start: int) -> None:
    from .breaker import _injected_sleep

    await _injected_sleep(br._report, ticket, start, br._injected_latency())


class _Block:
    """One `with guard:` block: what its enter took, given back by its exit."""

    __slots__ = ("guard", "resource", "_held", "_ticket", "_start", "_deadline", "_cancel", "_started")

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.resource: Any = None
        self._held: Any = None  # the cap's slot or the pool's lease, once taken
        self._ticket = 0
        self._start = 0
        self._deadline: Any = None
        self._cancel: Any = None  # async with, Python 3.11+: asyncio.timeout() over the block
        self._started = time.monotonic()

    def _before(self) -> None:
        g = self.guard
        if g._keyfn is not None:
            raise ConfigError(f"guard {g.name!r}: `with guard:` has no call arguments for the key function; "
                              f"give key= as a value, or use guard.call")
        g._engine.sync()
        g._outer((), {})
        if g._take_each:
            g._take_token((), {})

    def _after_cap(self) -> None:
        g = self.guard
        if g.breaker is not None:
            self._ticket, self._start = g._admit(g.breaker, False)
        if g._timeout is not None:
            self._deadline = deadline(g._timeout)
            self._deadline.__enter__()

    def enter(self) -> None:
        g = self.guard
        try:
            self._before()
            held = g._holder(False)
            if held is not None:
                cm, layer, refusals = held
                try:
                    got = cm.__enter__()
                except refusals as e:
                    raise g._tag(e, layer) from None
                self._took(cm, layer, got)
            self._after_cap()
        except Exception as exc:
            self._release(type(exc), exc, None)
            g._ended(exc, self._started, 1)
            raise

    async def aenter(self) -> None:
        g = self.guard
        try:
            self._before()
            held = g._holder(True)
            if held is not None:
                cm, layer, refusals = held
                try:
                    got = await cm.__aenter__()
                except refusals as e:
                    raise g._tag(e, layer) from None
                self._took(cm, layer, got)
            self._after_cap()
            if self._deadline is not None and sys.version_info >= (3, 11):
                self._cancel = asyncio.timeout(remaining())
                await self._cancel.__aenter__()
        except Exception as exc:
            await self._arelease(type(exc), exc, None)
            g._ended(exc, self._started, 1)
            raise

    def _took(self, cm: Any, layer: str, got: Any) -> None:
        self._held = cm
        if layer == "pool":
            self.resource = got

    def _report(self, et: type[BaseException] | None, exc: BaseException | None) -> None:
        g = self.guard
        if self._deadline is not None:
            self._deadline.__exit__(None, None, None)
            self._deadline = None
        if self._ticket:
            br = g.breaker
            assert br is not None
            outcome = _core.BR_SUCCESS if exc is None else br._classify_exc(exc)
            if outcome != _core.BR_FAILURE and g._timeout is not None and \
                    time.monotonic() - self._started > g._timeout:
                outcome = _core.BR_FAILURE  # the block overran its timeout: a failure the breaker sees
            br._report(self._ticket, outcome, self._start)
            self._ticket = 0

    def _release(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._report(et, exc)
        if self._held is not None:
            self._held.__exit__(et, exc, tb)

    async def _arelease(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._report(et, exc)
        if self._held is not None:
            await self._held.__aexit__(et, exc, tb)

    def _done(self, exc: BaseException | None) -> None:
        g = self.guard
        if exc is None:
            g._ok(self._started, 1)
        elif isinstance(exc, Exception):
            g._ended(exc, self._started, 1)

    def exit(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._release(et, exc, tb)
        self._done(exc)

    async def aexit(self, et: type[BaseException] | None, exc: BaseException | None,
                    tb: TracebackType | None) -> None:
        timed_out = None
        if self._cancel is not None:
            try:
                await self._cancel.__aexit__(et, exc, tb)
            except TimeoutError as e:  # the deadline cancelled the block
                limit = self.guard._timeout or 0.0
                timed_out = CallTimeout(f"guard {self.guard.name!r}: the block ran past its timeout "
                                        f"of {limit}s and was cancelled", timeout=limit)
                timed_out.__cause__ = e
                self.guard._timed_out(timed_out)
                et, exc, tb = CallTimeout, timed_out, None
        await self._arelease(et, exc, tb)
        self._done(exc)
        if timed_out is not None:
            raise timed_out


# open blocks per guard, per context (thread / task): `with guard:` may nest and run in threads
_open_blocks: ContextVar[tuple[tuple[Guard, _Block], ...]] = ContextVar("sluicegate_guard_blocks", default=())


def _blocks_push(guard: Guard, block: _Block) -> None:
    _open_blocks.set(((guard, block), *_open_blocks.get()))


def _blocks_pop(guard: Guard) -> _Block:
    stack = _open_blocks.get()
    for i, (g, b) in enumerate(stack):
        if g is guard:
            _open_blocks.set(stack[:i] + stack[i + 1:])
            return b
    raise RuntimeError(f"guard {guard.name!r}: __exit__ without a matching __enter__ in this context")


def execute_protected(opts: Mapping[str, Any], fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) through a private Guard(**opts) (the design's name for
    Guard.call).  opts holds Guard's keyword arguments, and "name" (default None: a
    private guard).  Building the guard costs microseconds: in a hot path make a Guard
    once and use guard.call."""
    opts = dict(opts)
    name = opts.pop("name", None)
    return Guard(name, **opts).call(fn, *args, **kwargs)


async def execute_protected_async(opts: Mapping[str, Any], fn: Callable[..., Awaitable[T]], /,
                                  *args: Any, **kwargs: Any) -> T:
    """The async form of execute_protected."""
    opts = dict(opts)
    name = opts.pop("name", None)
    return await Guard(name, **opts).call_async(fn, *args, **kwargs)


def _counts(values: tuple[int, ...]) -> dict[str, Any]:
    """A guard's tally as stats() reads it: calls (every ended call: each ends in exactly one
    of succeeded, failed and rejected_<layer>), then each count."""
    counts = dict(zip(COUNTS, values))
    return {"calls": counts["succeeded"] + counts["failed"] + sum(counts[f"rejected_{la}"] for la in _REJECTED),
            **counts}


class GuardCounts:
    """A named guard's host-wide counts, read from the store alone: what a CLI, a health
    probe or an exporter in another process reads (a working guard needs its code)."""

    def __init__(self, store: SharedStore, name: str) -> None:
        self.name = name
        self._tally = _core.Tally(store._table, _core.NS_GUARD, name, len(COUNTS))

    def stats(self) -> dict[str, Any]:
        return {"kind": "guard", "name": self.name, **_counts(self._tally.values())}


def _build(store: SharedStore, name: str, code: dict[str, Any]) -> Guard:
    raise PolicyNotBuildable(f"guard {name!r}: a guard's parts and fallback are code; build it in code "
                      f"(it then follows the directory's options)")


BUILDERS["guard"] = _build
OBSERVERS["guard"] = GuardCounts

__all__ = ["COUNTS", "Guard", "LAYERS", "execute_protected", "execute_protected_async"]

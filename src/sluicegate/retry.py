"""Retry with exponential backoff and jitter, and a retry budget shared by every process
on the host.

    retry = sg.Retry(attempts=3, backoff=0.1, max_backoff=10.0, multiplier=2.0, jitter="full",
                     on=(OSError,), retry_if=None, budget=0.2)
    retry.call(fn, *args); await retry.call_async(fn, *args); @retry (def or async def)
    sg.Guard("payments", ..., retry=retry)    # the budget is shared under the guard's name

One decision, ``Retry.next_delay(attempt, exc, budget)``, and two thin drivers, ``run``
and ``run_async`` (the sync one sleeps, the async one awaits).  After try ``n`` fails
with ``exc``:

- it is not retried when ``n`` is the last attempt, when ``exc`` is not one of ``on``
  (or ``retry_if(exc)`` says no), or when it is ``CircuitOpen``: a breaker that opened
  says the dependency is down, and retrying into it only delays the answer;
- the delay is ``min(max_backoff, backoff * multiplier ** (n - 1))``, jittered: "full"
  draws it from [0, d) (AWS's full jitter), "equal" from [d/2, d), "none" keeps d;
- an error carrying ``retry_after`` (``RateLimited``, ``ConcurrencyLimitExceeded`` when
  it has one) waits at least that long: retrying sooner is refused again;
- a delay that does not fit before the deadline (``sg.remaining()``) ends the retries;
- the budget must have room for one more retry, else the retries end.

Whenever the retries end, the last error is raised as it is (with a note saying why, on
Python 3.11+).

**The budget** (``budget=0.2``) caps retries at 20% of calls over ``budget_window``
seconds, plus ``budget_floor`` retries per window, so that retries cannot multiply an
outage (Finagle's and Envoy's retry budgets).  It lives in the store under a name, and
every process on the host spends from it: a ring of ``BUCKETS`` time buckets, each one
64-bit word packing the bucket's epoch, its calls and its retries, updated by
compare-and-set.  A retry is admitted by a CAS on the current bucket's word that fails if
anything changed it since the window was summed, so concurrent spenders in every
process cannot overshoot: retries in the window never exceed ``ratio * calls + floor``
as counted at each admission."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar, overload

from . import _core
from .concurrency import _check_seconds
from .errors import CircuitOpen, ConfigError
from .store import SharedStore
from .timeout import remaining

P = ParamSpec("P")
T = TypeVar("T")

JITTERS = ("full", "equal", "none")
# the options a Retry shares through a guard's directory entry (numbers; `on` and
# `retry_if` are code)
SHARED_OPTIONS = ("attempts", "backoff", "max_backoff", "multiplier", "jitter", "budget", "budget_window",
                  "budget_floor")

# -- the budget's words: epoch (24 bits) | calls (20) | retries (20) -----------------------------
BUCKETS = 10
_COUNT_BITS = 20
_COUNT_MAX = (1 << _COUNT_BITS) - 1  # a bucket's counts saturate there (the budget is then ample)
_EPOCH_MASK = (1 << 24) - 1


def _word(epoch: int, calls: int, retries: int) -> int:
    return (epoch & _EPOCH_MASK) << 40 | min(calls, _COUNT_MAX) << 20 | min(retries, _COUNT_MAX)


def _unpack(w: int) -> tuple[int, int, int]:
    return w >> 40, (w >> 20) & _COUNT_MAX, w & _COUNT_MAX


class RetryBudget:
    """Retries at most ``ratio`` of the calls over ``window`` seconds plus ``floor``,
    shared by every process attached to ``store`` under ``name`` (see the module
    docstring).  ``clock`` (monotonic ns) is for tests."""

    def __init__(self, name: str, store: SharedStore, ratio: float, window: float = 10.0, floor: int = 10,
                 *, clock: Callable[[], int] = time.monotonic_ns) -> None:
        cfg = _budget_config({"budget": ratio, "budget_window": window, "budget_floor": floor})
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a retry budget's name must be a non-empty str, got {name!r}")
        self.name = name
        self.ratio: float = cfg["budget"]
        self.window: float = cfg["budget_window"]
        self.floor: int = cfg["budget_floor"]
        self._bucket_ns = max(1, round(self.window * 1e9 / BUCKETS))
        self._clock = clock
        self._words = _core.Tally(store._table, _core.NS_RETRY, name, BUCKETS)

    def config(self) -> tuple[float, float, int]:
        return (self.ratio, self.window, self.floor)

    def _epoch(self) -> int:
        return (self._clock() // self._bucket_ns) & _EPOCH_MASK

    def _bump(self, epoch: int, calls: int, retries: int, expect: int | None = None) -> bool:
        """Add to the current bucket (started afresh if it holds an older epoch); with
        expect, only if the word is still expect.  True if added."""
        words, i = self._words, epoch % BUCKETS
        while True:
            old = words.value(i)
            if expect is not None and old != expect:
                return False
            e, c, r = _unpack(old)
            new = _word(epoch, c + calls, r + retries) if e == epoch else _word(epoch, calls, retries)
            if words.compare_and_set(i, old, new):
                return True
            if expect is not None:
                return False

    def record_call(self) -> None:
        """One logical call (its first try), in the current bucket."""
        self._bump(self._epoch(), 1, 0)

    def _window(self, epoch: int) -> tuple[int, int, int]:
        """(calls, retries, the current bucket's word) over the window ending at epoch."""
        calls = retries = 0
        current = 0
        for i in range(BUCKETS):
            w = self._words.value(i)
            e, c, r = _unpack(w)
            if (epoch - e) & _EPOCH_MASK < BUCKETS:  # within the window (an epoch of 2^24
                calls += c                            # buckets ago would alias: weeks away)
                retries += r
            if i == epoch % BUCKETS:
                current = w
        return calls, retries, current

    def try_spend(self) -> bool:
        """Take room for one retry; False when the window's retries are at the budget."""
        epoch = self._epoch()
        while True:
            # (the current bucket's word may still hold its last round, BUCKETS epochs ago or
            # more: not in the window, and started afresh by the CAS below)
            calls, retries, current = self._window(epoch)
            if retries + 1 > self.ratio * calls + self.floor:
                return False
            if self._bump(epoch, 0, 1, expect=current):
                return True

    def stats(self) -> dict[str, Any]:
        """The window's calls and retries now, and the retries it still has room for."""
        calls, retries, _ = self._window(self._epoch())
        return {"calls": calls, "retries": retries, "ratio": self.ratio, "window": self.window,
                "floor": self.floor, "room": max(0, int(self.ratio * calls + self.floor) - retries)}

    def __repr__(self) -> str:
        return f"<RetryBudget {self.name!r} {self.ratio:.0%} of calls per {self.window:g}s + {self.floor}>"


def _budget_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    ratio = cfg.get("budget")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                              or not 0 <= ratio <= 10):
        raise ConfigError(f"budget must be a fraction of calls that may be retried (0 to 10, e.g. 0.2), "
                          f"or None, got {ratio!r}")
    window = _check_seconds("budget_window", cfg.get("budget_window", 10.0), allow_none=False)
    assert window is not None
    if window < 0.01:
        raise ConfigError(f"budget_window must be at least 0.01 seconds, got {cfg.get('budget_window')!r}")
    floor = cfg.get("budget_floor", 10)
    if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
        raise ConfigError(f"budget_floor must be an int >= 0 (retries per window beyond the ratio), got {floor!r}")
    return {"budget": None if ratio is None else float(ratio), "budget_window": float(window), "budget_floor": floor}


def _positive(arg: str, value: object, lo: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= lo:
        raise ConfigError(f"{arg} must be a number >= {lo:g}, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Retry:
    """How to retry a failed call: see the module docstring.  A value: compare, copy and
    pickle it freely; the budget's state is in the store, under the name of what uses it."""

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: str = "full"
    on: tuple[type[BaseException], ...] = (Exception,)
    retry_if: Callable[[BaseException], bool] | None = None
    budget: float | None = None
    budget_window: float = 10.0
    budget_floor: int = 10
    seed: int | None = None
    _rng: random.Random = dataclasses.field(default_factory=random.Random, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cfg = self.shared_config({k: getattr(self, k) for k in SHARED_OPTIONS})
        on = (self.on,) if isinstance(self.on, type) else self.on
        if not isinstance(on, tuple) or not on or not all(isinstance(t, type) and issubclass(t, BaseException)
                                                          for t in on):
            raise ConfigError(f"on must be an exception class or a tuple of them, got {self.on!r}")
        if self.retry_if is not None and not callable(self.retry_if):
            raise ConfigError(f"retry_if must be a function of the error returning a bool, got {self.retry_if!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigError(f"seed must be an int or None, got {self.seed!r}")
        for k, v in cfg.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "on", on)
        object.__setattr__(self, "_rng", random.Random(self.seed))

    # -- configuration (a guard's directory entry holds the numbers) ---------------------------
    @staticmethod
    def shared_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The one validator of a Retry's shared options: the numbers, in JSON form."""
        unknown = set(cfg) - set(SHARED_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown retry option(s): {', '.join(sorted(unknown))}; "
                              f"a retry's options are {', '.join(SHARED_OPTIONS)}")
        attempts = cfg.get("attempts", 3)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 1000:
            raise ConfigError(f"attempts must be an int from 1 to 1000 (tries in all, the first included), "
                              f"got {attempts!r}")
        backoff = _positive("backoff", cfg.get("backoff", 0.1))
        max_backoff = _positive("max_backoff", cfg.get("max_backoff", 10.0))
        if max_backoff < backoff:
            raise ConfigError(f"max_backoff must be >= backoff ({backoff:g}), got {max_backoff:g}")
        multiplier = _positive("multiplier", cfg.get("multiplier", 2.0), 1.0)
        jitter = cfg.get("jitter", "full")
        if jitter not in JITTERS:
            raise ConfigError(f"jitter must be one of {', '.join(map(repr, JITTERS))}, got {jitter!r}")
        return {"attempts": attempts, "backoff": backoff, "max_backoff": max_backoff, "multiplier": multiplier,
                "jitter": jitter, **_budget_config(cfg)}

    def shared_options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SHARED_OPTIONS}

    def with_shared(self, cfg: Mapping[str, Any]) -> Retry:
        """This retry with the directory's numbers (its on, retry_if and seed kept)."""
        if all(getattr(self, k) == v for k, v in cfg.items()):
            return self
        return dataclasses.replace(self, **cfg)

    def budget_config(self) -> tuple[float, float, int] | None:
        return None if self.budget is None else (self.budget, self.budget_window, self.budget_floor)

    def budget_for(self, store: SharedStore, name: str) -> RetryBudget:
        """This retry's budget in store under name (every process using that name shares it)."""
        if self.budget is None:
            raise ConfigError("this Retry has no budget (give budget=0.2 or so)")
        return RetryBudget(name, store, self.budget, self.budget_window, self.budget_floor)

    # -- the decision -------------------------------------------------------------------------
    def backoff_of(self, attempt: int) -> float:
        """The delay after try number attempt (1-based) failed, jittered."""
        d = min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1))
        if self.jitter == "full":
            return self._rng.random() * d
        if self.jitter == "equal":
            return d / 2 + self._rng.random() * d / 2
        return d

    def next_delay(self, attempt: int, exc: BaseException, budget: RetryBudget | None = None) -> float | None:
        """Seconds to wait before try attempt + 1 after try attempt failed with exc, or None
        when the retries end (see the module docstring, in order)."""
        why = self._stop(attempt, exc)
        if why is None:
            delay = self.backoff_of(attempt)
            wait = getattr(exc, "retry_after", None)
            if isinstance(wait, (int, float)) and wait > delay:
                delay = float(wait)
            left = remaining()
            if left is not None and delay >= left:
                why = f"the next try ({delay:.3g}s away) would start past the deadline ({left:.3g}s left)"
            elif budget is not None and not budget.try_spend():
                why = f"the retry budget {budget.name!r} is spent ({budget.ratio:.0%} of calls + {budget.floor})"
            else:
                return delay
        if why and sys.version_info >= (3, 11):
            exc.add_note(f"sluicegate: not retried after try {attempt} of {self.attempts}: {why}")
        return None

    def _stop(self, attempt: int, exc: BaseException) -> str | None:
        """Why try attempt's error ends the retries ("" for an error not retried), or None."""
        if isinstance(exc, CircuitOpen) or not isinstance(exc, self.on):
            return ""
        if self.retry_if is not None and not self.retry_if(exc):
            return ""
        if attempt >= self.attempts:
            return f"it was the last of {self.attempts}"
        return None

    # -- the drivers --------------------------------------------------------------------------
    def run(self, attempt: Callable[[], T], *, budget: RetryBudget | None = None,
            sleep: Callable[[float], Any] = time.sleep,
            on_retry: Callable[[int, BaseException, float], Any] | None = None) -> T:
        """attempt() until it returns, or raise the error of the try that ends the retries."""
        if budget is not None:
            budget.record_call()
        n = 0
        while True:
            n += 1
            try:
                return attempt()
            except Exception as exc:
                delay = self.next_delay(n, exc, budget)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(n, exc, delay)
            sleep(delay)

    async def run_async(self, attempt: Callable[[], Awaitable[T]], *, budget: RetryBudget | None = None,
                        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                        on_retry: Callable[[int, BaseException, float], Any] | None = None) -> T:
        """The async form of run: await attempt(), awaiting the delays."""
        if budget is not None:
            budget.record_call()
        n = 0
        while True:
            n += 1
            try:
                return await attempt()
            except Exception as exc:
                delay = self.next_delay(n, exc, budget)
                if delay is None:
                    raise
                if on_retry is not None:
                    on_retry(n, exc, delay)
            await sleep(delay)

    # -- standalone use -------------------------------------------------------------------------
    def _no_budget(self) -> None:
        if self.budget is not None:
            raise ConfigError("a retry budget is shared under a name: use this Retry in a Guard (the guard's "
                              "name), or pass budget=retry.budget_for(store, name) to run()")

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """fn(*args, **kwargs), retried."""
        self._no_budget()
        return self.run(functools.partial(fn, *args, **kwargs))

    async def call_async(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """await fn(*args, **kwargs), retried."""
        self._no_budget()
        return await self.run_async(functools.partial(fn, *args, **kwargs))

    @overload
    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """@retry on a def or an async def."""
        if not callable(fn):
            raise ConfigError(f"a Retry decorates a function, got {fn!r}")
        self._no_budget()
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.run_async(functools.partial(fn, *args, **kwargs))

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.run(functools.partial(fn, *args, **kwargs))

        return wrapper


__all__ = ["BUCKETS", "JITTERS", "Retry", "RetryBudget"]

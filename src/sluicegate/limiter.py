"""RateLimiter: a rate limit shared by every process attached to a store.

RateLimiter is a front object over an engine that decides (policy.Policy): in a shared
store, the compiled LimiterEngine, one CAS on the key's word in shared memory.  Its
compiled base (LimiterFront) sends allow, check and peek straight to that engine's
inline C path, so a decision costs no extra hop.  This module adds configuration,
waiting (acquire), decorators, chains and pickling."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, Union

from . import _core
from .directory import BUILDERS
from .errors import ConfigError, RateLimited
from .policy import Policy
from .rates import Rate, RateSpec, parse_rates
from .store import SharedStore, resolve_store

Decision = _core.Decision
Key = Union[str, bytes]
F = TypeVar("F", bound=Callable[..., Any])
_log = logging.getLogger("sluicegate.limiter")

ALGORITHMS: dict[str, int] = {
    "token_bucket": _core.ALGO_GCRA,
    "gcra": _core.ALGO_GCRA,
    "fixed_window": _core.ALGO_FIXED,
    "sliding_window": _core.ALGO_SLIDING,
    "adaptive": _core.ALGO_GCRA,  # a token bucket whose rate moves (ADAPTIVE_OPTIONS)
}
# the adaptive limiter's own options: the slowest rate, the additive step (tokens/s gained
# per second of successes at full rate), the factor of a cut, and one cut per cooldown
ADAPTIVE_OPTIONS = ("min_rate", "increase", "decrease", "cooldown")
_CANONICAL = {_core.ALGO_GCRA: "token_bucket", _core.ALGO_FIXED: "fixed_window", _core.ALGO_SLIDING: "sliding_window"}


def _specs(rates: list[Rate], burst: int | None, algo: int) -> list[tuple[int, int, int, int]]:
    """Validate and convert rates to the core's (algo, limit, period_ns, interval_ns)."""
    specs = []
    for r in rates:
        if algo == _core.ALGO_GCRA:
            b = r.limit if burst is None else burst
            interval = -(-r.period_ns // r.limit)  # ceil: never faster than the rate
            if interval < 1:  # pragma: no cover - period_ns >= 1 and limit >= 1
                raise ConfigError(f"rate {r}: the interval between calls must be at least 1 ns")
            if b * interval >= _core.GCRA_MAX_TAU:
                raise ConfigError(
                    f"rate {r} with burst {b}: burst * interval must stay below 2**54 ns (about 208 days)"
                )
            specs.append((algo, b, r.period_ns, interval))
        else:
            if r.period_ns % 1_000_000:
                raise ConfigError(
                    f"rate {r}: window algorithms need a period of whole milliseconds, got {r.period_ns} ns"
                )
            cap = _core.FIXED_MAX_LIMIT if algo == _core.ALGO_FIXED else _core.SLIDING_MAX_LIMIT
            if r.limit > cap:
                raise ConfigError(f"rate {r}: {_CANONICAL[algo]} supports limits up to {cap}, got {r.limit}")
            specs.append((algo, r.limit, r.period_ns, 0))
    return specs


def _number(arg: str, value: object, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (value > lo if lo_open else value >= lo) and value <= hi):
        raise ConfigError(f"{arg} must be a number {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {value!r}")
    return float(value)


def _adaptive_config(cfg: dict[str, Any], rates: list[Rate]) -> dict[str, Any]:
    """An adaptive limiter's own options, validated: {"min_rate": str, "increase": float,
    "decrease": float, "cooldown": float}.  rate is the fastest (and the starting) rate."""
    if len(rates) != 1:
        raise ConfigError("an adaptive limiter takes one rate (its fastest); chain limiters for more")
    top = rates[0]
    mr = cfg.get("min_rate")
    if mr is None:
        low = Rate(top.limit, top.period * 10)  # a tenth of rate
    elif isinstance(mr, (str, Rate)):
        low = parse_rates(mr)[0]
    else:
        raise ConfigError(f"min_rate must be one rate such as '10/second', got {mr!r}")
    max_per_s = top.limit / top.period
    min_per_s = low.limit / low.period
    if min_per_s > max_per_s:
        raise ConfigError(f"min_rate ({low}) must not be faster than rate ({top})")
    inc = cfg.get("increase")
    increase = (max_per_s - min_per_s) / 10 if inc is None else _number("increase", inc, 0, 1e12, lo_open=True)
    return {"min_rate": str(low), "increase": max(increase, 1e-9),
            "decrease": _number("decrease", cfg.get("decrease", 0.5), 0, 1, lo_open=True),
            "cooldown": _number("cooldown", cfg.get("cooldown", 1.0), 0, 3600)}


def _adaptive_engine_args(rates: list[Rate], cfg: dict[str, Any]) -> tuple[int, int, float, float, int]:
    """The core's AIMD rule: (interval_min_ns, interval_max_ns, increase, decrease, cooldown_ns)."""
    top, low = rates[0], Rate.parse(cfg["min_rate"])
    fastest = -(-top.period_ns // top.limit)  # ceil: never faster than the rate (as _specs)
    slowest = max(fastest, -(-low.period_ns // low.limit))
    return (fastest, slowest, float(cfg["increase"]), float(cfg["decrease"]), round(cfg["cooldown"] * 1e9))


def _limiter_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The one validator of a limiter's shared configuration (code, override or file):
    {"rate": [str, ...], "burst": int | None, "algorithm": canonical name}, and for
    "adaptive" its own options (ADAPTIVE_OPTIONS) besides."""
    unknown = set(cfg) - {"rate", "burst", "algorithm", *ADAPTIVE_OPTIONS}
    if unknown:
        raise ConfigError(f"unknown rate limiter option(s): {', '.join(sorted(unknown))}")
    algorithm = cfg.get("algorithm", "token_bucket")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm must be one of {', '.join(repr(a) for a in ALGORITHMS)}; got {algorithm!r}")
    algo = ALGORITHMS[algorithm]
    if "rate" not in cfg:
        raise ConfigError("a rate limiter needs a rate, e.g. rate='10/second'")
    rates = parse_rates(cfg["rate"])
    burst = cfg.get("burst")
    if burst is not None:
        if algo != _core.ALGO_GCRA:
            raise ConfigError(f"burst applies to the token bucket only, not to {algorithm!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"burst must be a positive int, got {burst!r}")
        if len(rates) != 1:
            raise ConfigError("burst applies to a single rate; give each rate its own limiter and chain them")
    given = [k for k in ADAPTIVE_OPTIONS if cfg.get(k) is not None]
    if algorithm != "adaptive":
        if given:
            raise ConfigError(f"{', '.join(given)} apply to algorithm='adaptive' only, not to {algorithm!r}")
        _specs(rates, burst, algo)  # the core's range checks
        return {"rate": [str(r) for r in rates], "burst": burst, "algorithm": _CANONICAL[algo]}
    own = _adaptive_config(cfg, rates)
    fastest, slowest = _adaptive_engine_args(rates, own)[:2]
    b = rates[0].limit if burst is None else burst
    if b * fastest < slowest:
        raise ConfigError(
            f"burst {b} at rate {rates[0]} holds {b * fastest / 1e9:.3g}s of calls, less than one call at min_rate "
            f"{own['min_rate']}: an adaptive bucket holds the same time at any rate; raise burst to at least "
            f"{-(-slowest // fastest)} or min_rate")
    if b * slowest >= _core.GCRA_MAX_TAU:
        raise ConfigError(f"min_rate {own['min_rate']} with burst {b}: burst * interval must stay below 2**54 ns")
    _specs(rates, burst, algo)
    return {"rate": [str(r) for r in rates], "burst": burst, "algorithm": "adaptive", **own}


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ConfigError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


def _give_up_if_late(what: str, key: object, wait: float, deadline: float | None, now: float,
                     t: float | None) -> None:
    """Raise RateLimited at once when waiting wait seconds would pass the deadline."""
    if deadline is not None and wait > deadline - now:
        raise RateLimited(f"{what}: {key!r} is limited for {wait:.3f}s more (timeout {t}s)", retry_after=wait)


def _acquire(check: Callable[[Any, int], Decision], what: str, key: Any, cost: int,
             timeout: float | None) -> Decision:
    t = _check_timeout(timeout)
    deadline = None if t is None else time.monotonic() + t
    while True:
        d = check(key, cost)
        if d.allowed:
            return d
        _give_up_if_late(what, key, d.retry_after, deadline, time.monotonic(), t)
        time.sleep(d.retry_after)


async def _acquire_async(check: Callable[[Any, int], Decision], what: str, key: Any, cost: int,
                         timeout: float | None) -> Decision:
    t = _check_timeout(timeout)
    loop = asyncio.get_running_loop()
    deadline = None if t is None else loop.time() + t
    while True:
        d = check(key, cost)
        if d.allowed:
            return d
        _give_up_if_late(what, key, d.retry_after, deadline, loop.time(), t)
        await asyncio.sleep(d.retry_after)


class RateLimiter(Policy, _core.LimiterFront):
    """A rate limit shared by every process attached to the store.

    RateLimiter("login", "5/minute")                       token bucket (GCRA), burst 5
    RateLimiter("api", "100/second", burst=200)
    RateLimiter("api", "1000/hour", algorithm="fixed_window")   # or "sliding_window"
    RateLimiter("api", ["10/second", "500/minute"])        several rates, all-or-nothing
    RateLimiter("api", "100/second", algorithm="adaptive", min_rate="10/second")
        a token bucket whose rate moves between min_rate and rate by AIMD on feedback(ok)
        (increase: tokens/s gained per second of successes at full rate, default a tenth
        of the range; decrease: the factor of a cut, 0.5; at most one cut per cooldown
        seconds, 1.0), one rate for every process: the rate_now they all decide with.
        The bucket holds burst/rate seconds of calls at any rate (fewer calls when
        slower: a cut never frees any), so burst must hold one call at min_rate.

    allow(key, cost=1) -> bool, check(key, cost=1) -> Decision, peek(key) -> Decision,
    reset(key), refund(key, cost=1), allow_many(keys, cost=1) -> numpy bool array (or, with
    no numpy installed, a compact sequence of bools)
    (all decided by the engine), plus acquire / acquire_async, a decorator form, chain()
    and stats().
    """

    name: str
    rates: tuple[Rate, ...]
    burst: int | None
    algorithm: str
    store: SharedStore

    def __init__(
        self,
        name: str,
        rate: RateSpec,
        *,
        burst: int | None = None,
        algorithm: str = "token_bucket",
        store: SharedStore | str | None = None,
        min_rate: str | Rate | None = None,
        increase: float | None = None,
        decrease: float | None = None,
        cooldown: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        if "\x00" in name:
            raise ConfigError("name must not contain NUL")
        given = {k: v for k, v in (("min_rate", min_rate), ("increase", increase), ("decrease", decrease),
                                   ("cooldown", cooldown)) if v is not None}
        code = _limiter_config({"rate": rate, "burst": burst, "algorithm": algorithm, **given})
        st = resolve_store(store)
        self.name = name
        self.store = st
        self._register(st, name, code)

    # -- configuration: the directory's, followed at the next decision (policy.Policy) -------
    KIND = "limiter"
    EVENT_PREFIX = "rate."
    _validate = staticmethod(_limiter_config)

    def _set_event_flags(self, flags: dict[str, bool]) -> None:
        self._event_flags = flags
        self._set_events(flags["rate.denied"], flags["rate.allowed"])

    def _event(self, event: str, key: Key, cost: int, d: Decision) -> None:
        """rate.denied / rate.allowed (LimiterFront calls it only when someone listens)."""
        self._emit(event, key=key, cost=cost, limit=d.limit, remaining=d.remaining, retry_after=d.retry_after)

    def _apply(self, cfg: dict[str, Any]) -> None:
        """A token bucket keeps each key's debt under a new rate; window counts stay under
        a new limit; a new period or algorithm starts the keys fresh."""
        rates = parse_rates(cfg["rate"])
        old = getattr(self, "algorithm", None)
        adaptive = _adaptive_engine_args(rates, cfg) if cfg["algorithm"] == "adaptive" else None
        self._engine.configure(self.name, _specs(rates, cfg["burst"], ALGORITHMS[cfg["algorithm"]]), adaptive)
        self.adaptive = adaptive is not None
        if old is not None and old != cfg["algorithm"] and {old, cfg["algorithm"]} != {"token_bucket", "adaptive"}:
            _log.warning("rate limiter %r: algorithm changed from %s to %s; its keys start fresh",
                         self.name, old, cfg["algorithm"])
        self.rates = tuple(rates)
        self.burst = cfg["burst"]
        self.algorithm = cfg["algorithm"]

    # -- the engine's other decisions (allow, check and peek are LimiterFront's) -----------
    def reset(self, key: Key) -> None:
        """Forget key's state: it is back to a full budget."""
        self._engine.reset(key)

    def refund(self, key: Key, cost: int = 1) -> None:
        """Give back cost previously consumed by key (best effort: a window that has
        rolled over is not refunded)."""
        self._engine.refund(key, cost)

    def allow_many(self, keys: Any, cost: int = 1) -> Any:
        """Decide each key (consuming cost each) at one instant: a numpy bool array where
        numpy is installed (pip install sluicegate[numpy]), else a compact sequence of
        bools (_core.Allowed)."""
        flags = self._event_flags
        if not (flags["rate.denied"] or flags["rate.allowed"]):
            return self._engine.allow_many(keys, cost)
        keys = keys if isinstance(keys, (str, bytes, list)) else list(keys)
        out = self._engine.allow_many(keys, cost)
        for k, ok in zip(keys, out):
            if flags["rate.allowed" if ok else "rate.denied"]:
                self._emit("rate.allowed" if ok else "rate.denied", key=k, cost=cost, batch=True)
        return out

    @property
    def max_cost(self) -> int:
        """The largest cost a call can ask for (the tightest rate's limit)."""
        return int(self._engine.max_cost)

    def _refund_time(self) -> int:
        return int(self._engine.refund_time())

    def _refund_at(self, key: Key, cost: int, at: int) -> None:
        self._engine.refund_at(key, cost, at)

    # -- waiting ------------------------------------------------------------------------
    def acquire(self, key: Key, cost: int = 1, timeout: float | None = None) -> Decision:
        """Wait until key is admitted (sleeping exactly retry_after between tries).

        Raises RateLimited (with retry_after) at once when the wait would outlast timeout."""
        return _acquire(self.check, f"rate limiter {self.name!r}", key, cost, timeout)

    async def acquire_async(self, key: Key, cost: int = 1, timeout: float | None = None) -> Decision:
        """asyncio form of acquire: awaits asyncio.sleep(retry_after) between tries."""
        return await _acquire_async(self.check, f"rate limiter {self.name!r}", key, cost, timeout)

    # -- decorator ------------------------------------------------------------------------
    def __call__(
        self,
        func: F | None = None,
        *,
        key: Callable[..., Key] | Key | None = None,
        cost: int = 1,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Decorate a sync or async function.

        @lim                          one budget for the function
        @lim(key=lambda user, **kw: user)   one budget per key computed from the call's arguments
        @lim(key=..., wait=True, timeout=2.0)   wait (acquire) instead of raising at once

        A denied call raises RateLimited carrying retry_after."""
        if func is not None and not callable(func):
            raise ConfigError(f"{self.name!r}: decorate a function, got {func!r}")
        _check_timeout(timeout)
        self._engine.check_cost(cost)  # validate early

        def decorate(fn: F) -> F:
            const: Key | None = None
            keyfn: Callable[..., Key] | None = None
            if key is None:
                const = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
            elif isinstance(key, (str, bytes)):
                const = key
            elif callable(key):
                keyfn = key
            else:
                raise ConfigError(f"key must be a str, bytes or a function of the call's arguments, got {key!r}")

            def key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Key:
                if keyfn is not None:
                    return keyfn(*args, **kwargs)
                assert const is not None
                return const

            def deny(k: Key, d: Decision) -> RateLimited:
                return RateLimited(
                    f"rate limiter {self.name!r}: {k!r} is limited; retry after {d.retry_after:.3f}s",
                    retry_after=d.retry_after,
                )

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    k = key_of(args, kwargs)
                    if wait:
                        await self.acquire_async(k, cost, timeout)
                    else:
                        d = self.check(k, cost)
                        if not d.allowed:
                            raise deny(k, d)
                    return await fn(*args, **kwargs)

                return awrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                k = key_of(args, kwargs)
                if wait:
                    self.acquire(k, cost, timeout)
                else:
                    d = self.check(k, cost)
                    if not d.allowed:
                        raise deny(k, d)
                return fn(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate(func) if func is not None else decorate

    # -- stats, hierarchy, pickling ------------------------------------------------------------
    # -- the adaptive limiter ----------------------------------------------------------------
    adaptive: bool  # algorithm="adaptive": feedback() moves the rate (a Guard gives it each outcome)

    def feedback(self, ok: bool) -> float:
        """Tell an adaptive limiter how a call went: ok grows the shared rate additively, a
        failure cuts it (once per cooldown, host-wide).  Returns rate_now."""
        self._engine.sync()
        return 1e9 / int(self._engine.feedback(bool(ok)))

    @property
    def rate_now(self) -> float:
        """Calls per second now: an adaptive limiter's current rate (every process's), else
        the (first) rate's."""
        self._engine.sync()
        return 1e9 / int(self._engine.interval_ns())

    def _readings(self) -> dict[str, Any]:
        """Allowed and denied totals of this limiter, summed over every process (and an
        adaptive limiter's rate_now, calls per second)."""
        allowed, denied = self._engine.counts()
        out: dict[str, Any] = {"allowed": int(allowed), "denied": int(denied), "total": int(allowed + denied)}
        if self.adaptive:
            out["rate_now"] = self.rate_now
        return out

    @staticmethod
    def chain(*limiters: RateLimiter) -> LimiterChain:
        """A hierarchy (e.g. per user, then per org, then global): admitted only if every
        level admits; levels that had admitted are refunded when a later one denies."""
        return LimiterChain(*limiters)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_build, (self.store, self.name, self._code))

    def __repr__(self) -> str:
        rates = ", ".join(str(r) for r in self.rates)
        burst = f", burst={self.burst}" if self.burst is not None else ""
        return f"<RateLimiter {self.name!r} [{rates}]{burst} {self.algorithm}>"


def _build(store: SharedStore, name: str, code: dict[str, Any]) -> RateLimiter:
    own = {k: code[k] for k in ADAPTIVE_OPTIONS if code.get(k) is not None}
    return RateLimiter(name, code["rate"], burst=code.get("burst"), algorithm=code["algorithm"], store=store, **own)


BUILDERS["limiter"] = _build




class LimiterChain:
    """Several limiters decided in order, all-or-nothing (see RateLimiter.chain).

    key is either one key used at every level, or a sequence with one key per level,
    e.g. chain.allow(("user:42", "org:7", "global"))."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if len(limiters) == 1 and isinstance(limiters[0], (list, tuple)):
            limiters = tuple(limiters[0])
        if not limiters:
            raise ConfigError("chain needs at least one RateLimiter")
        for lim in limiters:
            if not isinstance(lim, RateLimiter):
                raise ConfigError(f"chain takes RateLimiter objects, got {type(lim).__name__}")
        self.limiters: tuple[RateLimiter, ...] = tuple(limiters)

    def _keys(self, key: Key | Sequence[Key]) -> Sequence[Key]:
        if isinstance(key, (str, bytes)):
            return [key] * len(self.limiters)
        if isinstance(key, (list, tuple)):
            if len(key) != len(self.limiters):
                raise ConfigError(f"key must give one key per level ({len(self.limiters)}), got {len(key)}")
            return key
        raise ConfigError(f"key must be a str, bytes, or a sequence of one key per level; got {type(key).__name__}")

    def check(self, key: Key | Sequence[Key], cost: int = 1) -> Decision:
        keys = self._keys(key)
        best: Decision | None = None
        # A level is refunded at a time read just before it decided, never at the time
        # of the refund: a window judged by the refund's time may be a later one that
        # other callers have charged since, and taking the refund off it would admit
        # more than its limit.  An earlier time refunds the window charged, or (when
        # that window has rolled over) nothing: the level denies more, never admits more.
        started: list[int] = []
        for i, (lim, k) in enumerate(zip(self.limiters, keys)):
            started.append(lim._refund_time())
            try:
                d = lim.check(k, cost)
            except BaseException:
                self._refund(keys, cost, started[:i])
                raise
            if not d.allowed:
                self._refund(keys, cost, started[:i])
                return d
            if best is None or d.remaining < best.remaining:
                best = d
        assert best is not None
        return best

    def _refund(self, keys: Sequence[Key], cost: int, started: list[int]) -> None:
        for lim, k, at in zip(self.limiters, keys, started):
            lim._refund_at(k, cost, at)

    def allow(self, key: Key | Sequence[Key], cost: int = 1) -> bool:
        return bool(self.check(key, cost).allowed)

    def peek(self, key: Key | Sequence[Key], cost: int = 1) -> Decision:
        """The denying level with the longest wait, else the tightest level; consumes nothing."""
        keys = self._keys(key)
        ds = [lim.peek(k, cost) for lim, k in zip(self.limiters, keys)]
        denied = [d for d in ds if not d.allowed]
        if denied:
            return max(denied, key=lambda d: d.retry_after)
        return min(ds, key=lambda d: d.remaining)

    def reset(self, key: Key | Sequence[Key]) -> None:
        for lim, k in zip(self.limiters, self._keys(key)):
            lim.reset(k)

    def acquire(self, key: Key | Sequence[Key], cost: int = 1, timeout: float | None = None) -> Decision:
        return _acquire(self.check, "rate limit chain", key, cost, timeout)

    async def acquire_async(
        self, key: Key | Sequence[Key], cost: int = 1, timeout: float | None = None
    ) -> Decision:
        return await _acquire_async(self.check, "rate limit chain", key, cost, timeout)

    def __repr__(self) -> str:
        return f"<LimiterChain {' -> '.join(lim.name for lim in self.limiters)}>"


__all__ = ["ALGORITHMS", "Decision", "LimiterChain", "Rate", "RateLimiter"]

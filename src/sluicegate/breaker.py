"""CircuitBreaker: one breaker shared by every process attached to a store.

The state machine (closed / open / half_open / degraded / forced_open / disabled)
lives in the store and is decided by the lock-free C core (csrc/sg_breaker.c);
this module validates configuration, classifies outcomes and wires the ways of
calling through a breaker (``with``, decorators for def and async def, ``call``,
and the two-step ``begin()`` token)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import os
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, NamedTuple, TypeVar, Union

from . import _core
from ._forks import after_fork_in_child
from .directory import BUILDERS
from .errors import ConfigError
from .policy import Policy
from .store import SharedStore, resolve_store

__all__ = ["STATES", "BreakerToken", "CircuitBreaker"]

STATES = ("closed", "open", "half_open", "degraded", "forced_open", "disabled")
DEFAULT_DEGRADED_LEVELS = (0.25, 0.5, 0.75)  # heavy, medium, light: admitted fraction
# degradation by severity: the fraction admitted at each level, light, medium, heavy
DEFAULT_DEGRADATION_LEVELS = (0.75, 0.5, 0.25)
LEVEL_NAMES = ("light", "medium", "heavy")
MAX_SECONDS = 1_000_000.0  # ~11.6 days: the longest duration any option accepts

BreakerToken = _core.BreakerToken


class Degradation(NamedTuple):
    """How a degraded breaker sheds load: level "light", "medium" or "heavy", the fraction
    of calls it admits, and why: "severity" (its failure rate crossed
    degradation_threshold while closed) or "recovery" (the ramp after half-open)."""

    level: str
    admitted: float
    cause: str
Listener = Callable[["CircuitBreaker", str, str], Any]
ExcTypes = Union[type, Sequence[type]]
F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("sluicegate.breaker")
_P32 = 1 << 32


def _seconds(arg: str, value: object, *, allow_zero: bool = False) -> int:
    """Seconds (float) -> ns, validated."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{arg} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value > MAX_SECONDS:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{arg} must be {bound} and at most {MAX_SECONDS:g} seconds, got {value!r}")
    return round(value * 1e9)


def _fraction(arg: str, value: object, *, allow_zero: bool = True, allow_one: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{arg} must be a fraction between 0 and 1, got {value!r}")
    if value < 0 or value > 1 or (value == 0 and not allow_zero) or (value == 1 and not allow_one):
        raise ConfigError(f"{arg} must be a fraction between 0 and 1, got {value!r}")
    return float(value)


def _p32(p: float) -> int:
    return min(_P32, round(p * _P32))


def _int(arg: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{arg} must be an int from {lo} to {hi}, got {value!r}")
    return value


def _types(arg: str, value: ExcTypes) -> tuple[type, ...]:
    items = (value,) if isinstance(value, type) else tuple(value)
    for t in items:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise ConfigError(f"{arg} must be exception types, got {t!r}")
    return items


# the options every process shares through the directory; the others (record, ignore,
# is_failure, result_is_failure, on_state_change, seed) are this process's own
SHARED_OPTIONS = (
    "failure_threshold", "window", "reset_timeout", "failure_rate", "minimum_calls", "slow_call_duration",
    "slow_call_rate", "half_open_calls", "probe_timeout", "backoff_multiplier", "max_reset_timeout", "jitter",
    "degraded", "degraded_step", "adaptive", "adaptive_k", "adaptive_max_reject", "buckets", "histogram",
    "degradation_threshold", "degradation_levels",
)
_DEFAULTS: dict[str, Any] = {}  # filled from CircuitBreaker.__init__'s signature below


def _breaker_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The one validator of a breaker's shared configuration (code, override or file):
    every shared option, defaults filled in, in a form JSON keeps as is."""
    unknown = set(cfg) - set(SHARED_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown circuit breaker option(s): {', '.join(sorted(unknown))}")
    out = {**_DEFAULTS, **cfg}
    for k in ("degraded", "degradation_levels"):
        if isinstance(out[k], (list, tuple)):
            out[k] = list(out[k])
    CircuitBreaker._build_config("x", **out)  # raises ConfigError naming the option
    return out


_OUTCOMES = ("success", "failure", "ignored")


def _mix(x: int) -> int:
    return int(_core.breaker_mix(x & 0xFFFFFFFFFFFFFFFF))


class CircuitBreaker(Policy, _core.BreakerFront):
    """A circuit breaker whose state every process attached to ``store`` shares.

    Trip rules (combine freely; all count over the same rolling ``window`` of
    ``buckets`` buckets, reset at every state change):
      * ``failure_threshold=N``: the Nth failure within ``window`` opens it (None: off);
      * ``failure_rate=r``: failures/calls >= r once ``minimum_calls`` calls are in the window;
      * ``slow_call_duration=d``: calls lasting >= d seconds are slow; slow/calls >=
        ``slow_call_rate`` (with ``minimum_calls``) opens it, and a slow probe fails.

    Open lasts ``reset_timeout`` seconds, times ``backoff_multiplier`` per consecutive
    re-open (capped at ``max_reset_timeout``, +- ``jitter`` fraction); then half_open
    admits exactly ``half_open_calls`` probes host-wide. All succeed -> closed (or the
    ``degraded`` levels first, each ``degraded_step`` seconds); one fails -> open again.
    A round whose probes have not all reported within ``probe_timeout`` is restarted.

    ``histogram=True`` keeps a host-wide histogram of call durations in the store (five
    permanent slots; about 10 ns per call, two reads of the fast clock); None, the
    default, keeps it when ``slow_call_duration`` is set, as calls are timed then anyway.
    Exporters (sluicegate.contrib.prometheus, .otel) read it from any process.
    """

    def __init__(
        self,
        name: str,
        *,
        store: SharedStore | str | None = None,
        failure_threshold: int | None = 5,
        window: float = 10.0,
        reset_timeout: float = 30.0,
        failure_rate: float | None = None,
        minimum_calls: int = 10,
        slow_call_duration: float | None = None,
        slow_call_rate: float = 1.0,
        half_open_calls: int = 1,
        probe_timeout: float = 30.0,
        backoff_multiplier: float = 1.0,
        max_reset_timeout: float | None = None,
        jitter: float = 0.0,
        degraded: bool | Sequence[float] = False,
        degraded_step: float | None = None,
        adaptive: bool = False,
        adaptive_k: float = 2.0,
        adaptive_max_reject: float = 0.9,
        degradation_threshold: float | None = None,
        degradation_levels: Sequence[float] = DEFAULT_DEGRADATION_LEVELS,
        record: ExcTypes = (Exception,),
        ignore: ExcTypes = (),
        is_failure: Callable[[BaseException], bool] | None = None,
        result_is_failure: Callable[[Any], bool] | None = None,
        on_state_change: Listener | Iterable[Listener] | None = None,
        buckets: int = 10,
        histogram: bool | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        given = dict(locals())
        self._init_kwargs: dict[str, Any] = {
            k: v for k, v in given.items() if k not in ("self", "name", "store", "__class__")
        }
        code = _breaker_config({k: given[k] for k in SHARED_OPTIONS})
        if seed is None:
            rng_seed = int.from_bytes(os.urandom(8), "little")
            _unseeded.add(self)
        else:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ConfigError(f"seed must be an int or None, got {seed!r}")
            rng_seed = _mix(seed)
        self._rng_seed = rng_seed or 1
        self.name = name
        self._store = resolve_store(store)
        self._register(self._store, name, code)
        record_t = _types("record", record)
        ignore_t = _types("ignore", ignore)
        for arg, pred in (("is_failure", is_failure), ("result_is_failure", result_is_failure)):
            if pred is not None and not callable(pred):
                raise ConfigError(f"{arg} must be callable, got {pred!r}")
        self._set_outcomes(record_t, ignore_t, is_failure, result_is_failure)
        self._listeners: list[Listener] = []
        if on_state_change is not None:
            if callable(on_state_change):
                listeners = [on_state_change]
            elif isinstance(on_state_change, (list, tuple)):
                listeners = list(on_state_change)
            else:
                raise ConfigError(f"on_state_change must be a callable or a list of callables, got {on_state_change!r}")
            for fn in listeners:
                self.add_listener(fn)

    # ---- configuration: the directory's, followed at the next call (policy.Policy) -----
    KIND = "breaker"

    @staticmethod
    def _validate(cfg: dict[str, Any]) -> dict[str, Any]:
        return _breaker_config(cfg)

    def _apply(self, cfg: dict[str, Any]) -> None:
        """The state, its totals and the fault settings carry over; a new window or
        bucket count starts the rolling window afresh."""
        name = self._entry.name
        self._config = self._build_config(name, **cfg)  # the core's form (ns, ppm, ...)
        self._front_setup(name, self._engine.configure(self._config, self._rng_seed))
        self._rng_seed = 0  # later configurations keep the generator where it is

    @staticmethod
    def _build_config(
        name: str,
        *,
        failure_threshold: int | None,
        window: float,
        reset_timeout: float,
        failure_rate: float | None,
        minimum_calls: int,
        slow_call_duration: float | None,
        slow_call_rate: float,
        half_open_calls: int,
        probe_timeout: float,
        backoff_multiplier: float,
        max_reset_timeout: float | None,
        jitter: float,
        degraded: bool | Sequence[float],
        degraded_step: float | None,
        adaptive: bool,
        adaptive_k: float,
        adaptive_max_reject: float,
        buckets: int,
        histogram: bool | None = None,
        degradation_threshold: float | None = None,
        degradation_levels: Sequence[float] = DEFAULT_DEGRADATION_LEVELS,
        **_: Any,
    ) -> dict[str, Any]:
        nbuckets = _int("buckets", buckets, 1, 64)
        window_ns = _seconds("window", window)
        if window_ns // nbuckets < 1_000_000:
            raise ConfigError(f"window must be at least 1 ms per bucket ({nbuckets} buckets), got {window!r}")
        threshold = 0 if failure_threshold is None else _int("failure_threshold", failure_threshold, 1, 2**31)
        reset_ns = _seconds("reset_timeout", reset_timeout)
        if max_reset_timeout is None:
            max_reset_ns = max(reset_ns, _seconds("max_reset_timeout", 300.0))
        else:
            max_reset_ns = _seconds("max_reset_timeout", max_reset_timeout)
            if max_reset_ns < reset_ns:
                raise ConfigError(
                    f"max_reset_timeout must be >= reset_timeout ({reset_timeout!r}), got {max_reset_timeout!r}"
                )
        if (
            isinstance(backoff_multiplier, bool)
            or not isinstance(backoff_multiplier, (int, float))
            or not 1.0 <= backoff_multiplier <= 100.0
        ):
            raise ConfigError(f"backoff_multiplier must be a number from 1 to 100, got {backoff_multiplier!r}")
        jit = _fraction("jitter", jitter, allow_one=False)
        rate = 0.0 if failure_rate is None else _fraction("failure_rate", failure_rate, allow_zero=False)
        slow_ns = 0 if slow_call_duration is None else _seconds("slow_call_duration", slow_call_duration)
        slow_rate = _fraction("slow_call_rate", slow_call_rate, allow_zero=False)
        if degraded is True:
            levels: tuple[float, ...] = DEFAULT_DEGRADED_LEVELS
        elif degraded is False or degraded is None:
            levels = ()
        else:
            try:
                levels = tuple(degraded)
            except TypeError:
                raise ConfigError(f"degraded must be a bool or a sequence of fractions, got {degraded!r}") from None
            if not 1 <= len(levels) <= 3:
                raise ConfigError(f"degraded takes 1 to 3 levels (fractions admitted), got {degraded!r}")
            levels = tuple(_fraction("degraded", lv, allow_zero=False) for lv in levels)
        step_ns = _seconds("degraded_step", reset_timeout if degraded_step is None else degraded_step)
        if not isinstance(adaptive, bool):
            raise ConfigError(f"adaptive must be a bool, got {adaptive!r}")
        if isinstance(adaptive_k, bool) or not isinstance(adaptive_k, (int, float)) or not 1.0 <= adaptive_k <= 1000:
            raise ConfigError(f"adaptive_k must be a number from 1 to 1000, got {adaptive_k!r}")
        max_rej = _fraction("adaptive_max_reject", adaptive_max_reject)
        if histogram is not None and not isinstance(histogram, bool):
            raise ConfigError(f"histogram must be a bool or None, got {histogram!r}")
        degrade = 0.0
        if degradation_threshold is not None:
            degrade = _fraction("degradation_threshold", degradation_threshold, allow_zero=False, allow_one=False)
            if rate and degrade >= rate:
                raise ConfigError(f"degradation_threshold must be below failure_rate ({rate:g}): the breaker "
                                  f"degrades before it trips, got {degradation_threshold!r}")
        try:
            sev = tuple(degradation_levels)
        except TypeError:
            raise ConfigError(f"degradation_levels must be 1 to 3 fractions admitted (light, medium, heavy), "
                              f"got {degradation_levels!r}") from None
        if not 1 <= len(sev) <= 3:
            raise ConfigError(f"degradation_levels takes 1 to 3 fractions (light, medium, heavy), got {sev!r}")
        sev = tuple(_fraction("degradation_levels", lv, allow_zero=False) for lv in sev)
        if list(sev) != sorted(sev, reverse=True):
            raise ConfigError(f"degradation_levels must admit less at each level (light >= medium >= heavy), "
                              f"got {sev!r}")
        return {
            "nbuckets": nbuckets,
            "bucket_ns": window_ns // nbuckets,
            "failure_threshold": threshold,
            "minimum_calls": _int("minimum_calls", minimum_calls, 1, 2**31),
            "failure_rate_ppm": round(rate * 1e6),
            "slow_rate_ppm": round(slow_rate * 1e6) if slow_ns else 0,
            "slow_ns": slow_ns,
            "reset_ns": reset_ns,
            "max_reset_ns": max_reset_ns,
            "backoff_milli": round(backoff_multiplier * 1000),
            "jitter_ppm": round(jit * 1e6),
            "half_open_calls": _int("half_open_calls", half_open_calls, 1, 255),
            "probe_timeout_ns": _seconds("probe_timeout", probe_timeout),
            "levels_p32": [_p32(lv) for lv in levels],
            "level_ns": step_ns,
            "adaptive": adaptive,
            "adaptive_k_milli": round(adaptive_k * 1000),
            "adaptive_max_p32": _p32(max_rej),
            "seed": _mix(int(_core.namespace_seed(3, name))),
            # None: on when calls are timed anyway (slow_call_duration), where it costs one
            # fetch-add more; True costs two reads of the fast clock per call besides
            "histogram": bool(slow_ns) if histogram is None else histogram,
            # degradation by severity: in at the threshold, out below 3/4 of it (hysteresis)
            "degrade_ppm": round(degrade * 1e6),
            "recover_ppm": round(degrade * 0.75 * 1e6),
            "severity_p32": [_p32(lv) for lv in sev] if degrade else [],
        }

    # ---- state and control --------------------------------------------------
    @property
    def state(self) -> str:
        """'closed', 'open', 'half_open', 'degraded', 'forced_open' or 'disabled'."""
        return str(self.state_at())

    @property
    def degradation(self) -> Degradation | None:
        """None unless the breaker is degraded; then its level and admitted fraction."""
        got = self._engine.degradation(0)
        if got is None:
            return None
        cause, level, admitted = got
        return Degradation(LEVEL_NAMES[min(int(level), 3) - 1], float(admitted), str(cause))

    @property
    def store(self) -> SharedStore:
        return self._store

    @property
    def retry_after(self) -> float:
        """Seconds until an open breaker lets probes through (0.0 unless open)."""
        return int(self.retry_after_ns()) / 1e9

    def force_open(self) -> None:
        """Reject every call, in every process, until force_close() or reset()."""
        self.set_state("forced_open")

    def force_close(self) -> None:
        """Close the breaker now (from any state); the failure window starts afresh."""
        self.set_state("closed")

    def disable(self) -> None:
        """Admit everything and never trip (metrics still count) until force_close()/reset()."""
        self.set_state("disabled")

    def reset(self) -> None:
        """Closed, with an empty window, backoff forgotten and the stats zeroed."""
        self.set_state("closed", True)

    def _readings(self) -> dict[str, Any]:
        """Shared by all processes: totals since creation/reset and the current window."""
        calls, failures, slow, rejections, transitions = self.totals()
        w_calls, w_failures, w_slow, _w_throttled = self.window()
        return {
            "state": self.state,
            "calls": calls,
            "failures": failures,
            "slow_calls": slow,
            "rejections": rejections,
            "transitions": transitions,
            "window_calls": w_calls,
            "window_failures": w_failures,
            "window_slow_calls": w_slow,
            "failure_rate": (w_failures / w_calls) if w_calls else 0.0,
            "slow_call_rate": (w_slow / w_calls) if w_calls else 0.0,
            **self._degradation_readings(),
        }

    def _degradation_readings(self) -> dict[str, Any]:
        d = self.degradation
        return {"degradation": None if d is None else d.level, "admitted": 1.0 if d is None else d.admitted}

    # ---- fault injection (shared by every process; switch at runtime) -------
    def inject_faults(
        self,
        *,
        failure_rate: float = 0.0,
        latency: float = 0.0,
        latency_rate: float | None = None,
        reject_rate: float = 0.0,
    ) -> None:
        """Chaos testing: fail admitted calls with InjectedFault at failure_rate (recorded
        as failures), delay them by latency seconds at latency_rate (default 1.0 when
        latency > 0), and reject calls with CircuitOpen at reject_rate. Random draws come
        from this object's generator, seeded by seed=, so runs are reproducible."""
        fr = _fraction("failure_rate", failure_rate)
        rr = _fraction("reject_rate", reject_rate)
        lat_ns = _seconds("latency", latency, allow_zero=True)
        lr = _fraction("latency_rate", (1.0 if lat_ns else 0.0) if latency_rate is None else latency_rate)
        self._engine.set_faults(_p32(rr), _p32(fr), _p32(lr) if lat_ns else 0, lat_ns)

    def clear_faults(self) -> None:
        """Stop all fault injection (in every process)."""
        self._engine.set_faults(0, 0, 0, 0)

    @property
    def faults(self) -> dict[str, float]:
        rej, fail, lat_p, lat_ns = self._engine.get_faults()
        return {
            "failure_rate": fail / _P32,
            "reject_rate": rej / _P32,
            "latency": lat_ns / 1e9,
            "latency_rate": lat_p / _P32,
        }

    # ---- listeners ---------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        """fn(breaker, old_state, new_state), called in each process when it next
        touches the breaker after a transition (intermediate states may be skipped)."""
        if not callable(fn):
            raise ConfigError(f"on_state_change listeners must be callable, got {fn!r}")
        self._listeners.append(fn)
        self._refresh_events()

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)
        self._refresh_events()

    def _state_changed(self, old: str, new: str) -> None:
        for fn in list(self._listeners):
            try:
                fn(self, old, new)
            except Exception:  # noqa: BLE001 - a listener never breaks the call it rode on
                _log.exception("circuit breaker %r: on_state_change listener %r failed", self.name, fn)
        if self._event_flags["breaker.state_change"]:
            self._emit("breaker.state_change", old=old, new=new)

    # ---- telemetry (policy.Policy; BreakerFront emits calls and rejections) -------------
    EVENT_PREFIX = "breaker."

    def _set_event_flags(self, flags: dict[str, bool]) -> None:
        self._event_flags = flags
        self._set_events(flags["breaker.call"], flags["breaker.rejected"])
        self._set_has_listeners(bool(getattr(self, "_listeners", None)) or flags["breaker.state_change"])

    def _event_call(self, outcome: int, duration_ns: int) -> None:
        self._emit("breaker.call", outcome=_OUTCOMES[outcome], duration=duration_ns / 1e9)

    def _event_rejected(self, reason: str, retry_after: float) -> None:
        self._emit("breaker.rejected", reason=reason, retry_after=retry_after)

    # ---- ways to call through it ----------------------------------------------------
    def begin(self) -> BreakerToken:
        """Two-step use: token = br.begin() (raises CircuitOpen), later token.success()
        or token.failure() (or token.ignore()). Injected latency is not applied here."""
        ticket, start = self._admit(False)
        return _core.BreakerToken(self, ticket, start)

    def __call__(self, fn: F) -> F:
        """Decorate a def or async def function."""
        if inspect.iscoroutinefunction(fn):
            admit, report, classify, outcome_of, latency = (
                self._admit,
                self._report,
                self._classify_exc,
                self._result_outcome,
                self._injected_latency,
            )
            probe_latency = _core.BR_TICKET_INJECT_LATENCY

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                ticket, start = admit(False)
                if ticket & probe_latency:
                    await _injected_sleep(report, ticket, start, latency())
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as e:
                    report(ticket, classify(e), start)
                    raise
                report(ticket, _outcome_or_ignore(report, outcome_of, ticket, start, result), start)
                return result

            return async_wrapper  # type: ignore[return-value]
        if not callable(fn):
            raise ConfigError(f"a circuit breaker decorates a callable, got {fn!r}")
        wrapper = _core.BreakerCall(self, fn)
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            try:
                setattr(wrapper, attr, getattr(fn, attr))
            except AttributeError:
                pass
        wrapper.__dict__.update(getattr(fn, "__dict__", {}))
        return wrapper  # type: ignore[return-value]

    async def __aenter__(self) -> CircuitBreaker:  # noqa: PYI034 - py39: no typing.Self
        """``async with br:`` (injected latency is awaited, not slept)."""
        ticket, start = self._admit(False)
        if ticket & _core.BR_TICKET_INJECT_LATENCY:
            await _injected_sleep(self._report, ticket, start, self._injected_latency())
        self._push_ticket(ticket, start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return bool(self.__exit__(exc_type, exc, tb))

    async def call_async(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """await fn(*args, **kwargs) through the breaker."""
        ticket, start = self._admit(False)
        if ticket & _core.BR_TICKET_INJECT_LATENCY:
            await _injected_sleep(self._report, ticket, start, self._injected_latency())
        try:
            result = await fn(*args, **kwargs)
        except BaseException as e:
            self._report(ticket, self._classify_exc(e), start)
            raise
        self._report(ticket, _outcome_or_ignore(self._report, self._result_outcome, ticket, start, result), start)
        return result

    # ---- pickling (spawn): rebuild from the constructor arguments ----------------
    def __reduce__(self) -> tuple[Any, ...]:
        # pickle the store actually in use, as RateLimiter and ConcurrencyLimiter do: a
        # default anonymous store then refuses to pickle (StoreError, in the parent)
        # instead of the child silently building a private breaker on its own store
        return (_rebuild, (self.name, self._store, self._init_kwargs))

    def __repr__(self) -> str:
        try:
            state = self.state
        except Exception:  # noqa: BLE001 - repr must not raise
            state = "closed store"
        return f"<CircuitBreaker {self.name!r} {state}>"


def _outcome_or_ignore(
    report: Callable[[int, int, int], None], outcome_of: Callable[[Any], int], ticket: int, start: int, result: Any
) -> int:
    """The result predicate's verdict; if it raises, report the call as ignored (as the
    sync call() does) so that a probe permit is not held, and re-raise."""
    try:
        return outcome_of(result)
    except BaseException:
        report(ticket, _core.BR_IGNORE, start)
        raise


async def _injected_sleep(report: Callable[[int, int, int], None], ticket: int, start: int, seconds: float) -> None:
    """Await injected latency; if cancelled there, the call never ran: give its permit back."""
    try:
        await asyncio.sleep(seconds)
    except BaseException:
        report(ticket, _core.BR_IGNORE, start)
        raise


# Unseeded breakers draw fresh randomness in each forked child, so that forked workers
# do not make identical degraded / adaptive / fault-injection draws.
_unseeded: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


@after_fork_in_child
def _reseed_after_fork() -> None:
    for br in list(_unseeded):
        if not br._store.closed:  # a closed store's breaker decides nothing more
            br.rng_state = int.from_bytes(os.urandom(8), "little") or 1



def _rebuild(name: str, store: SharedStore | None, kwargs: dict[str, Any]) -> CircuitBreaker:
    return CircuitBreaker(name, store=store, **kwargs)


def _build(store: SharedStore, name: str, code: dict[str, Any]) -> CircuitBreaker:
    return CircuitBreaker(name, store=store, **code)


BUILDERS["breaker"] = _build
_DEFAULTS.update(
    (k, p.default) for k, p in inspect.signature(CircuitBreaker.__init__).parameters.items() if k in SHARED_OPTIONS
)

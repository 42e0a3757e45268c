"""Health: one reading of a store, judged.  ``store.health()`` returns ``Health``, an
overall status and one ``PolicyHealth`` per policy of the store's directory, each with
its status, the reasons for it and the readings (the policy's ``stats()``) it was
judged on.

Statuses rank ``healthy`` < ``degraded`` < ``unhealthy``; a policy's status is the
worst of its rules', the overall status the worst of the policies', the store's and
the memory monitor's.  The rules (thresholds are keywords of ``judge``, validated):

- breaker ``open`` or ``forced_open``: unhealthy; ``half_open`` or ``degraded``:
  degraded; ``disabled``: degraded (it admits everything and protects nothing).
- cap: in use at ``cap_saturation`` of its limit or above (default 1.0, saturated):
  degraded; any acquire timeout in the interval (with ``since``): degraded.
- pool (objects passed in ``include``; a pool's resources are each process's own):
  exhausted now (every resource, overflow included, out and none idle) or, with
  ``since``, new timeouts or exhaustions in the interval: degraded.
- limiter: denying more than ``denied_fraction`` (default 0.5) of at least
  ``min_decisions`` (default 20) decisions: degraded.  Totals are cumulative, so
  without ``since`` this judges the limiter's whole life (since it was created or its
  store was); pass ``since=`` an earlier reading to judge the interval between the two
  (``sluicegate health --interval S`` takes two readings S seconds apart).
- store fill: key slots (``used / capacity``), the policies' state slots
  (``permanent_used / permanent_capacity``) and the directory (policies /
  ``policies_capacity``): above ``fill_warning`` (0.8) degraded, above
  ``fill_critical`` (0.95) unhealthy.
- memory (``memory=``, any object with a ``.level``, such as a ``MemoryMonitor``):
  ``warning`` degraded, ``critical`` unhealthy.

A policy this module cannot read (a kind ``store.policy()`` cannot build, such as a
pool, whose create function is code) is listed healthy with the reason it was not judged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .directory import BUILDERS, OBSERVERS
from .errors import ConfigError, PolicyNotFound, SluicegateError

if TYPE_CHECKING:
    from .store import SharedStore

__all__ = ["STATUSES", "Health", "PolicyHealth", "Thresholds", "judge"]

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
STATUSES = (HEALTHY, DEGRADED, UNHEALTHY)  # in rank order
_RANK = {s: i for i, s in enumerate(STATUSES)}
MEMORY_LEVELS = {"ok": HEALTHY, "warning": DEGRADED, "critical": UNHEALTHY}
BREAKER_STATES = {"closed": HEALTHY, "open": UNHEALTHY, "forced_open": UNHEALTHY,
                  "half_open": DEGRADED, "degraded": DEGRADED, "disabled": DEGRADED}
_BREAKER_WHY = {
    "open": "open: rejecting calls until its reset timeout lets probes through",
    "forced_open": "forced open by an operator: rejecting every call until closed",
    "half_open": "half-open: letting probes through after being open",
    "degraded": "degraded: admitting a fraction of calls while it recovers",
    "disabled": "disabled by an operator: admitting everything and never tripping (it protects nothing)",
}


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default=HEALTHY)


@dataclass(frozen=True)
class PolicyHealth:
    """One policy, judged: its status, why (empty when healthy) and what it was judged on."""

    kind: str
    name: str
    status: str
    reasons: tuple[str, ...]
    readings: dict[str, Any] = field(compare=False)  # the policy's stats() at this reading

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "status": self.status, "reasons": list(self.reasons),
                "readings": _jsonable(self.readings)}


@dataclass(frozen=True)
class Health:
    """A store's health at one reading.

    status: "healthy" | "degraded" | "unhealthy", the worst of everything below;
    policies: one PolicyHealth per policy (directory order, then include=);
    store: {"store", "status", "reasons", "readings"} for the store's fill;
    memory: the same shape for the memory monitor, when one was given;
    taken: store time of the reading (seconds); interval: seconds since the ``since``
    reading the rates were judged over, or None (judged over the totals).
    """

    status: str
    policies: tuple[PolicyHealth, ...]
    store: dict[str, Any] = field(compare=False)
    memory: dict[str, Any] | None = field(default=None, compare=False)
    taken: float = 0.0
    interval: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == HEALTHY

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 degraded, 2 unhealthy (``sluicegate health``'s exit status)."""
        return _RANK[self.status]

    def policy(self, name: str, kind: str | None = None) -> PolicyHealth:
        for p in self.policies:
            if p.name == name and (kind is None or p.kind == kind):
                return p
        raise KeyError(name if kind is None else (kind, name))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``sluicegate health --json`` prints it)."""
        return {"status": self.status, "taken": self.taken, "interval": self.interval,
                "store": _jsonable(self.store), "memory": _jsonable(self.memory),
                "policies": [p.to_dict() for p in self.policies]}


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return str(v)


# -- thresholds -------------------------------------------------------------------------------
def _fraction(arg: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{arg} must be a fraction greater than 0 and at most 1, got {value!r}")
    return float(value)


def _count(arg: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{arg} must be an int >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class Thresholds:
    """The limits the rules judge against (see the module docstring); validated."""

    denied_fraction: float = 0.5
    min_decisions: int = 20
    cap_saturation: float = 1.0
    fill_warning: float = 0.8
    fill_critical: float = 0.95

    def __post_init__(self) -> None:
        for arg in ("denied_fraction", "cap_saturation", "fill_warning", "fill_critical"):
            _fraction(arg, getattr(self, arg))
        _count("min_decisions", self.min_decisions)
        if self.fill_warning > self.fill_critical:
            raise ConfigError(f"fill_warning ({self.fill_warning}) must not be above fill_critical "
                              f"({self.fill_critical})")


# -- the rules: one judge per kind ------------------------------------------------------------
Finding = tuple[str, str]  # (status, reason)


def _delta(now: Mapping[str, Any], before: Mapping[str, Any] | None, key: str) -> int | None:
    if before is None or not isinstance(now.get(key), int) or not isinstance(before.get(key), int):
        return None
    return max(0, now[key] - before[key])  # a reset in between reads as no change


def _over(interval: float | None) -> str:
    return "over its lifetime" if interval is None else f"in the last {interval:.3g} s"


def _judge_breaker(st: Mapping[str, Any], before: Mapping[str, Any] | None, interval: float | None,
                   t: Thresholds) -> list[Finding]:
    state = st.get("state")
    status = BREAKER_STATES.get(str(state))
    if status is None:
        return [(DEGRADED, f"in an unknown state {state!r}")]
    if status == HEALTHY:
        return []
    why = _BREAKER_WHY[str(state)]
    retry_after = st.get("retry_after")
    if state == "open" and isinstance(retry_after, (int, float)):
        why += f" (in {retry_after:.3g} s)"
    level, admitted = st.get("degradation"), st.get("admitted")
    if state == "degraded" and isinstance(level, str) and isinstance(admitted, (int, float)):
        why += f" ({level}: {admitted:.0%} admitted)"
    return [(status, why)]


def _judge_limiter(st: Mapping[str, Any], before: Mapping[str, Any] | None, interval: float | None,
                   t: Thresholds) -> list[Finding]:
    if before is None:
        allowed, denied = st.get("allowed"), st.get("denied")
        if not isinstance(allowed, int) or not isinstance(denied, int):
            return []
    else:
        allowed, denied = _delta(st, before, "allowed"), _delta(st, before, "denied")
        if allowed is None or denied is None:
            return []
    total = allowed + denied
    if total < t.min_decisions or denied <= t.denied_fraction * total:
        return []
    return [(DEGRADED, f"denied {denied / total:.0%} of {total} decisions {_over(interval)} "
                       f"(threshold {t.denied_fraction:.0%})")]


def _judge_cap(st: Mapping[str, Any], before: Mapping[str, Any] | None, interval: float | None,
               t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    limit, in_use = st.get("limit"), st.get("in_use")
    if isinstance(limit, int) and isinstance(in_use, int) and limit > 0 and in_use >= t.cap_saturation * limit:
        out.append((DEGRADED, f"saturated: {in_use} of {limit} permits in use"))
    timeouts = _delta(st, before, "timeouts")
    if timeouts:
        out.append((DEGRADED, f"{timeouts} acquire timeouts {_over(interval)}"))
    return out


def _judge_pool(st: Mapping[str, Any], before: Mapping[str, Any] | None, interval: float | None,
                t: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    size, overflow, total, idle = (st.get(k) for k in ("size", "max_overflow", "total", "idle"))
    if all(isinstance(v, int) for v in (size, overflow, total, idle)):
        assert isinstance(size, int) and isinstance(overflow, int)
        if idle == 0 and isinstance(total, int) and total >= size + overflow:
            waiting = st.get("waiting")
            out.append((DEGRADED, f"exhausted: all {total} resources in use"
                        + (f", {waiting} waiting" if isinstance(waiting, int) and waiting else "")))
    timeouts, exhausted = _delta(st, before, "timeouts"), _delta(st, before, "exhausted")
    if timeouts:
        out.append((DEGRADED, f"{timeouts} checkout timeouts {_over(interval)}"))
    if exhausted and not out:
        out.append((DEGRADED, f"found exhausted {exhausted} times {_over(interval)}"))
    return out


Judge = Callable[[Mapping[str, Any], "Mapping[str, Any] | None", "float | None", Thresholds], "list[Finding]"]
# kind -> its rules; a kind with none (a counter) is healthy whatever it reads
JUDGES: dict[str, Judge] = {"breaker": _judge_breaker, "limiter": _judge_limiter, "cap": _judge_cap,
                            "pool": _judge_pool}


def _kind_of(obj: object) -> str:
    kind = getattr(obj, "KIND", None)
    if isinstance(kind, str):
        return kind
    name = type(obj).__name__
    return {"Pool": "pool", "AsyncPool": "pool", "ConcurrencyLimiter": "cap", "RateLimiter": "limiter",
            "CircuitBreaker": "breaker"}.get(name, name.lower())


def readings(kind: str, obj: Any) -> dict[str, Any]:
    """A policy object's stats(), and for a breaker the seconds until it lets probes through."""
    st = dict(obj.stats())
    if kind == "breaker" and "retry_after" not in st:
        retry_after = getattr(obj, "retry_after", None)
        if isinstance(retry_after, (int, float)):
            st["retry_after"] = retry_after
    return st


def _judged(kind: str, name: str, st: Mapping[str, Any], before: Mapping[str, Any] | None,
            interval: float | None, t: Thresholds) -> PolicyHealth:
    judge = JUDGES.get(kind)
    # a policy new since the earlier reading is judged over its lifetime, and says so
    findings = judge(st, before, interval if before is not None else None, t) if judge is not None else []
    return PolicyHealth(kind, name, worst(s for s, _ in findings), tuple(r for _, r in findings), dict(st))


# -- the store and the memory monitor ---------------------------------------------------------
def _fill(label: str, used: object, capacity: object, t: Thresholds) -> list[Finding]:
    if not isinstance(used, int) or not isinstance(capacity, int) or capacity <= 0:
        return []
    f = used / capacity
    if f > t.fill_critical:
        return [(UNHEALTHY, f"{label} {f:.0%} full ({used} of {capacity}; critical above {t.fill_critical:.0%})")]
    if f > t.fill_warning:
        return [(DEGRADED, f"{label} {f:.0%} full ({used} of {capacity}; warning above {t.fill_warning:.0%})")]
    return []


def store_label(store: SharedStore) -> str:
    """How the CLI and a reading name a store: shm://NAME, file:///PATH, or its repr."""
    if store.name is not None:
        return f"shm://{store.name}"
    return f"file://{store.path}" if store.path else repr(store)


def _store_health(store: SharedStore, npolicies: int, t: Thresholds) -> dict[str, Any]:
    st: dict[str, Any] = dict(store.stats())
    st["policies"] = npolicies
    findings = (_fill("key slots", st.get("used"), st.get("capacity"), t)
                + _fill("policy state slots", st.get("permanent_used"), st.get("permanent_capacity"), t)
                + _fill("policy directory", npolicies, st.get("policies_capacity"), t))
    return {"store": store_label(store), "status": worst(s for s, _ in findings),
            "reasons": [r for _, r in findings], "readings": st}


def _memory_health(monitor: object) -> dict[str, Any]:
    level = getattr(monitor, "level", None)
    status = MEMORY_LEVELS.get(level) if isinstance(level, str) else None
    if status is None:
        raise ConfigError(f"memory must be an object whose .level is 'ok', 'warning' or 'critical' "
                          f"(such as a MemoryMonitor), got {monitor!r} with level {level!r}")
    readings: dict[str, Any] = {"level": level}
    stats = getattr(monitor, "stats", None)
    if callable(stats):
        readings.update(stats())
    reasons = [] if status == HEALTHY else [f"memory pressure is {level}"]
    return {"status": status, "reasons": reasons, "readings": readings}


# -- one reading --------------------------------------------------------------------------------
def _check_since(store: SharedStore, since: object, now: float) -> Health | None:
    if since is None:
        return None
    if not isinstance(since, Health):
        raise ConfigError(f"since must be an earlier Health reading of this store, got {since!r}")
    if since.store.get("store") != store_label(store):
        raise ConfigError(f"since is a reading of {since.store.get('store')}, not of {store_label(store)}")
    if not since.taken < now:
        raise ConfigError("since must be a reading taken before this one")
    return since


def policy_objects(store: SharedStore, cache: dict[tuple[str, str], Any] | None = None) -> list[tuple[str, str, Any]]:
    """(kind, name, a working object or Unreadable(why)) for every policy of the directory;
    cache keeps the objects between calls (a reader that takes several readings)."""
    out: list[tuple[str, str, Any]] = []
    for info in store.policies():
        key = (info.kind, info.name)
        obj = cache.get(key) if cache is not None else None
        if obj is None:
            # store.policy()'s builder, from the entry in hand (store.policy() would read the
            # whole directory again for each policy)
            builder = BUILDERS.get(info.kind)
            try:
                if builder is None:
                    raise PolicyNotFound(f"this version of sluicegate cannot read a {info.kind}")
                obj = builder(store, info.name, info.code)
            except SluicegateError as e:  # a pool: its create function is code
                observer = OBSERVERS.get(info.kind)
                obj = Unreadable(str(e)) if observer is None else observer(store, info.name)
            if cache is not None:
                cache[key] = obj
        out.append((info.kind, info.name, obj))
    return out


class Unreadable:
    """A directory policy no working object can be made for here, and why."""

    def __init__(self, why: str) -> None:
        self.why = why


def judge(
    store: SharedStore,
    *,
    since: Health | None = None,
    memory: object | None = None,
    include: Iterable[object] = (),
    denied_fraction: float = Thresholds.denied_fraction,
    min_decisions: int = Thresholds.min_decisions,
    cap_saturation: float = Thresholds.cap_saturation,
    fill_warning: float = Thresholds.fill_warning,
    fill_critical: float = Thresholds.fill_critical,
    _objects: dict[tuple[str, str], Any] | None = None,
) -> Health:
    """``store.health(...)``: read every policy of the store and judge it (module docstring).

    since: an earlier reading of this store; rates (limiter denials, cap and pool timeouts)
    are then judged over the interval between the two readings instead of lifetimes.
    memory: any object with ``.level`` "ok" | "warning" | "critical" (a MemoryMonitor).
    include: objects of this process to judge too (a Pool, whose state is its own).
    """
    t = Thresholds(denied_fraction, min_decisions, cap_saturation, fill_warning, fill_critical)
    include = tuple(include)
    for obj in include:
        if not callable(getattr(obj, "stats", None)):
            raise ConfigError(f"include takes objects with a stats() method (a Pool, a policy), got {obj!r}")
    now = store.now()
    before = _check_since(store, since, now)
    interval = None if before is None else now - before.taken
    previous = {} if before is None else {(p.kind, p.name): p.readings for p in before.policies}

    # an included object stands for the directory's policy of its kind and name (a pool the
    # directory lists but cannot build from configuration)
    extra = {(_kind_of(obj), str(getattr(obj, "name", None) or repr(obj))): obj for obj in include}
    judged: list[PolicyHealth] = []
    objects = policy_objects(store, _objects)
    listed = {(kind, name) for kind, name, _ in objects}
    rest = [(kind, name, obj) for (kind, name), obj in extra.items() if (kind, name) not in listed]
    for kind, name, obj in objects + rest:
        obj = extra.get((kind, name), obj)
        if isinstance(obj, Unreadable):
            judged.append(PolicyHealth(kind, name, HEALTHY, (f"not judged: {obj.why}",), {}))
        else:
            judged.append(_judged(kind, name, readings(kind, obj), previous.get((kind, name)), interval, t))

    store_part = _store_health(store, len(objects), t)
    memory_part = None if memory is None else _memory_health(memory)
    parts = [p.status for p in judged] + [store_part["status"]] + ([memory_part["status"]] if memory_part else [])
    return Health(worst(parts), tuple(judged), store_part, memory_part, now, interval)


def wait_and_judge(store: SharedStore, interval: float, **kwargs: Any) -> Health:
    """Two readings ``interval`` seconds apart; the second judged over the interval."""
    cache: dict[tuple[str, str], Any] = {}
    first = judge(store, _objects=cache, **kwargs)
    time.sleep(interval)
    return judge(store, since=first, _objects=cache, **kwargs)

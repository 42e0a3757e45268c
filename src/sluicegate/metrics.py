"""Host-wide metrics: one reading of every policy of one or more stores.

The counters, gauges and histograms of every policy live in the store, summed over
every process by construction, so one process can read them all: an exporter inside
the application, or a sidecar that never made the policies and knows only the store's
name.  This module is the one reading both exporters use (contrib/prometheus.py and
contrib/otel.py): ``Reader(stores).read()`` lists every policy through the directory
and reads its state without creating any (a reader takes no room in the store).

A metric is a ``Family`` (its Prometheus and OpenTelemetry names, type, help, label
names) with samples ``(label values, value)``; a histogram's value is a
``histogram.HistogramReading``.  Every policy family is labelled (store, policy, ...).
A kind is read by one function of ``KIND_READERS`` (kind -> reader); a new kind (the
pool, the counter) adds its families to ``FAMILIES`` and its reader there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

from . import _core
from . import directory as _directory
from . import histogram as _hist
from .errors import SluicegateError, StoreNotFound
from .store import SharedStore, open_store

_log = logging.getLogger("sluicegate.metrics")

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"


@dataclass(frozen=True)
class Family:
    """One metric: ``name`` is the Prometheus name (a counter's without ``_total``),
    ``otel`` the OpenTelemetry instrument's, ``labels`` the label names after
    (store, policy) — or after (store,) for a store's own metrics."""

    name: str
    type: str
    help: str
    otel: str
    unit: str = ""  # OpenTelemetry's unit ("s", "{call}"); Prometheus has it in the name
    labels: tuple[str, ...] = ()
    per_policy: bool = True

    @property
    def label_names(self) -> tuple[str, ...]:
        return ("store", "policy", *self.labels) if self.per_policy else ("store", *self.labels)


Value = Union[float, int, _hist.HistogramReading]


@dataclass
class Metric:
    key: str  # in FAMILIES
    family: Family
    samples: list[tuple[tuple[str, ...], Value]] = field(default_factory=list)


def _f(key: str, *args: Any, **kw: Any) -> tuple[str, Family]:
    return key, Family(*args, **kw)


BREAKER_STATES: tuple[str, ...] = tuple(_core.BREAKER_STATES)

# key -> Family.  Prometheus conventions: base units (seconds), counters end in _total
# (added by the exposition), a state is a gauge per state with value 1 for the current.
FAMILIES: dict[str, Family] = dict([
    _f("store_up", "sluicegate_store_up", GAUGE,
       "1 when the store is attached, 0 when it does not exist (yet)", "sluicegate.store.up", per_policy=False),
    _f("store_slots_used", "sluicegate_store_slots_used", GAUGE,
       "Key slots in use (live keys of every limiter)", "sluicegate.store.slots.used", "{slot}", per_policy=False),
    _f("store_slots_capacity", "sluicegate_store_slots_capacity", GAUGE,
       "Key slots the store holds (its capacity)", "sluicegate.store.slots.capacity", "{slot}", per_policy=False),
    _f("store_permanent_slots_used", "sluicegate_store_permanent_slots_used", GAUGE,
       "Permanent slots in use (the policies' own state)", "sluicegate.store.permanent_slots.used", "{slot}",
       per_policy=False),
    _f("store_permanent_slots_capacity", "sluicegate_store_permanent_slots_capacity", GAUGE,
       "Permanent slots the store holds", "sluicegate.store.permanent_slots.capacity", "{slot}", per_policy=False),
    _f("store_policies", "sluicegate_store_policies", GAUGE,
       "Policies in the store's directory, by kind", "sluicegate.store.policies", "{policy}", ("kind",),
       per_policy=False),
    _f("store_reclaimed", "sluicegate_store_reclaimed", COUNTER,
       "Idle keys whose slots were reclaimed for other keys, by every process", "sluicegate.store.reclaimed",
       "{slot}", per_policy=False),
    _f("store_policies_capacity", "sluicegate_store_policies_capacity", GAUGE,
       "Policies the store's directory holds", "sluicegate.store.policies.capacity", "{policy}", per_policy=False),
    # rate limiter
    _f("rate_decisions", "sluicegate_rate_decisions", COUNTER,
       "Rate limiter decisions, by result", "sluicegate.rate.decisions", "{decision}", ("result",)),
    # circuit breaker
    _f("breaker_state", "sluicegate_breaker_state", GAUGE,
       "1 for the breaker's current state, 0 for the others", "sluicegate.breaker.state", "", ("state",)),
    _f("breaker_calls", "sluicegate_breaker_calls", COUNTER,
       "Calls through the breaker that ran and were counted, by outcome", "sluicegate.breaker.calls", "{call}",
       ("outcome",)),
    _f("breaker_slow_calls", "sluicegate_breaker_slow_calls", COUNTER,
       "Calls at least slow_call_duration long", "sluicegate.breaker.slow_calls", "{call}"),
    _f("breaker_rejections", "sluicegate_breaker_rejections", COUNTER,
       "Calls the breaker rejected (CircuitOpen)", "sluicegate.breaker.rejections", "{call}"),
    _f("breaker_transitions", "sluicegate_breaker_transitions", COUNTER,
       "State changes of the breaker", "sluicegate.breaker.transitions", "{transition}"),
    _f("breaker_window_calls", "sluicegate_breaker_window_calls", GAUGE,
       "Calls counted in the breaker's rolling window (what its trip rules judge)",
       "sluicegate.breaker.window.calls", "{call}"),
    _f("breaker_window_failures", "sluicegate_breaker_window_failures", GAUGE,
       "Failed calls in the breaker's rolling window", "sluicegate.breaker.window.failures", "{call}"),
    _f("breaker_window_slow_calls", "sluicegate_breaker_window_slow_calls", GAUGE,
       "Slow calls in the breaker's rolling window", "sluicegate.breaker.window.slow_calls", "{call}"),
    _f("breaker_call_duration", "sluicegate_breaker_call_duration_seconds", HISTOGRAM,
       "Duration of the calls through the breaker (breakers with the histogram option)",
       "sluicegate.breaker.call.duration", "s"),
    # concurrency cap
    _f("cap_in_use", "sluicegate_cap_in_use", GAUGE,
       "Permits held now, by every process", "sluicegate.cap.in_use", "{permit}"),
    _f("cap_limit", "sluicegate_cap_limit", GAUGE,
       "The cap's current limit", "sluicegate.cap.limit", "{permit}"),
    _f("cap_acquired", "sluicegate_cap_acquired", COUNTER,
       "Permits granted", "sluicegate.cap.acquired", "{permit}"),
    _f("cap_timeouts", "sluicegate_cap_timeouts", COUNTER,
       "Acquires that gave up (timeout, or block=False on a full cap)", "sluicegate.cap.timeouts", "{acquire}"),
    _f("cap_reclaimed", "sluicegate_cap_reclaimed", COUNTER,
       "Permits freed because their holder process died", "sluicegate.cap.reclaimed", "{permit}"),
    _f("cap_drops", "sluicegate_cap_drops", COUNTER,
       "Drops reported to an adaptive cap (each shrinks the limit)", "sluicegate.cap.drops", "{drop}"),
    _f("cap_wait", "sluicegate_cap_wait_seconds", HISTOGRAM,
       "Time a blocking acquire waited after finding the cap full (acquired_total minus this count "
       "found a permit at once)", "sluicegate.cap.wait", "s"),
    # pool (named pools: every process's totals; idle and in-use resources are each
    # process's own, in its stats())
    _f("pool_checkouts", "sluicegate_pool_checkouts", COUNTER,
       "Resources lent by the pool, in every process", "sluicegate.pool.checkouts", "{checkout}"),
    _f("pool_timeouts", "sluicegate_pool_timeouts", COUNTER,
       "Checkouts that waited their timeout (PoolTimeout)", "sluicegate.pool.timeouts", "{checkout}"),
    _f("pool_exhausted", "sluicegate_pool_exhausted", COUNTER,
       "Non-blocking checkouts that found nothing free (PoolExhausted)", "sluicegate.pool.exhausted", "{checkout}"),
    _f("pool_created", "sluicegate_pool_created", COUNTER,
       "Resources created", "sluicegate.pool.created", "{resource}"),
    _f("pool_closed", "sluicegate_pool_closed", COUNTER,
       "Resources closed (expired, failed checks, shrinking, close())", "sluicegate.pool.closed", "{resource}"),
    _f("pool_wait", "sluicegate_pool_wait_seconds", HISTOGRAM,
       "Time a checkout waited after finding no resource free", "sluicegate.pool.wait", "s"),
    # counter
    _f("counter_value", "sluicegate_counter_value", GAUGE,
       "A Counter's value (every process's adds)", "sluicegate.counter.value", ""),
    # guard
    _f("guard_calls", "sluicegate_guard_calls", COUNTER,
       "Calls through the guard that ended, by how: success, failure (the call's own error or its "
       "timeout), rejected (by a layer)", "sluicegate.guard.calls", "{call}", ("outcome",)),
    _f("guard_rejections", "sluicegate_guard_rejections", COUNTER,
       "Calls a layer of the guard refused, by layer", "sluicegate.guard.rejections", "{call}", ("layer",)),
    _f("guard_timeouts", "sluicegate_guard_timeouts", COUNTER,
       "Attempts that ran past the guard's timeout", "sluicegate.guard.timeouts", "{attempt}"),
    _f("guard_retries", "sluicegate_guard_retries", COUNTER,
       "Attempts after the first", "sluicegate.guard.retries", "{attempt}"),
    _f("guard_fallbacks", "sluicegate_guard_fallbacks", COUNTER,
       "Calls answered by the guard's fallback", "sluicegate.guard.fallbacks", "{call}"),
])


class Reading:
    """What one read of a store produces: samples per family key."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[tuple[str, ...], Value]]] = {}

    def add(self, key: str, labels: tuple[str, ...], value: Value) -> None:
        self.samples.setdefault(key, []).append((labels, value))


class _Store:
    """A store as the reader follows it: attached on demand, re-attached when its file
    was replaced (a restarted service recreated it), with per-policy caches."""

    def __init__(self, store: SharedStore | str) -> None:
        self.spec: str | None = None if isinstance(store, SharedStore) else store
        self.store: SharedStore | None = store if isinstance(store, SharedStore) else None
        self.label = store_label(store)
        self.ident: tuple[int, int] | None = None
        self.breakers: dict[str, tuple[int, Any, dict[str, Any]]] = {}  # name -> (updated, engine, config)
        self.failed: set[tuple[str, str]] = set()  # policies whose reading failed (logged once)

    def attach(self) -> SharedStore | None:
        if self.spec is None:
            return self.store
        path = self.store.path if self.store is not None else None
        if self.store is not None and path is not None and self.ident != _file_ident(path):
            _log.info("store %s was replaced; attaching the new one", self.label)
            self._drop()
        if self.store is None or self.store.closed:
            try:
                before = _file_ident(_spec_path(self.spec))
                store = open_store(self.spec, create=False)
            except StoreNotFound:
                return None
            self.store, self.ident = store, before
            self.label = store_label(store)
            if before is None or _file_ident(store.path or "") != before:  # replaced while attaching
                self.ident = None
        return self.store

    def _drop(self) -> None:
        if self.store is not None:
            self.store.close()
        self.store, self.ident = None, None
        self.breakers.clear()

    def close(self) -> None:
        if self.spec is not None:
            self._drop()


def _file_ident(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _spec_path(spec: str) -> str | None:
    """The file a store spec names, to tell a replaced store from the one mapped."""
    from .store import _named_path

    scheme, sep, rest = spec.partition("://")
    rest = rest.partition("?")[0]
    try:
        if not sep:
            return os.path.abspath(spec) if "/" in spec else _named_path(spec)
        if scheme.lower() == "shm":
            return _named_path(rest)
        if scheme.lower() == "file":
            return rest
    except SluicegateError:
        return None
    return None


def store_label(store: SharedStore | str) -> str:
    """The ``store`` label: a named store's name, a file store's path, else "anonymous"."""
    if isinstance(store, SharedStore):
        return store.name or store.path or "anonymous"
    scheme, sep, rest = store.partition("://")
    if sep and scheme.lower() in ("shm", "file"):
        return rest.partition("?")[0]
    return store


# -- the readers, one per kind --------------------------------------------------------
# reader(store as followed, the store, policy name, its directory entry's update stamp, out)
PolicyReader = Callable[[_Store, SharedStore, str, int, Reading], None]


def _read_limiter(st: _Store, store: SharedStore, name: str, updated: int, out: Reading) -> None:
    allowed, denied = _core.limiter_counts(store._table, name)
    lab = (st.label, name)
    out.add("rate_decisions", (*lab, "allowed"), int(allowed))
    out.add("rate_decisions", (*lab, "denied"), int(denied))


def _breaker_engine(st: _Store, store: SharedStore, name: str, updated: int) -> tuple[Any, dict[str, Any]]:
    """A breaker engine configured as the directory says, kept until the entry changes.
    It is only read: poll() applies due time transitions as any caller would, and its
    histogram is off (a reader never takes room for one)."""
    from .breaker import CircuitBreaker, _breaker_config

    got = st.breakers.get(name)
    if got is not None and got[0] == updated:
        return got[1], got[2]
    _, doc = _directory.Entry(store, "breaker", name, create=False).read()
    if doc is None:
        raise LookupError("being created")
    config = _directory.effective(doc)
    cfg = CircuitBreaker._build_config(name, **_breaker_config(config))
    engine = _core.BreakerEngine(store._table, name)
    engine.configure({**cfg, "histogram": False}, 1)
    st.breakers[name] = (updated, engine, cfg)
    return engine, cfg


def _read_breaker(st: _Store, store: SharedStore, name: str, updated: int, out: Reading) -> None:
    engine, cfg = _breaker_engine(st, store, name, updated)
    lab = (st.label, name)
    code = int(engine.poll(0)) & 7
    state = BREAKER_STATES[code] if code < len(BREAKER_STATES) else "closed"
    for name_ in BREAKER_STATES:
        out.add("breaker_state", (*lab, name_), 1 if name_ == state else 0)
    calls, failures, slow, rejections, transitions = (int(v) for v in engine.totals())
    out.add("breaker_calls", (*lab, "success"), max(0, calls - failures))
    out.add("breaker_calls", (*lab, "failure"), failures)
    out.add("breaker_slow_calls", lab, slow)
    out.add("breaker_rejections", lab, rejections)
    out.add("breaker_transitions", lab, transitions)
    w_calls, w_failures, w_slow, _ = (int(v) for v in engine.window(0))
    out.add("breaker_window_calls", lab, w_calls)
    out.add("breaker_window_failures", lab, w_failures)
    out.add("breaker_window_slow_calls", lab, w_slow)
    h = _hist.read(store, "breaker", name, _hist.BREAKER_CALLS)
    if h is None and cfg.get("histogram"):
        h = _EMPTY
    if h is not None:
        out.add("breaker_call_duration", lab, h)


def _read_cap(st: _Store, store: SharedStore, name: str, updated: int, out: Reading) -> None:
    got = _core.cap_reading(store._table, name)
    if got is None:
        return
    limit, in_use, granted, timeouts, reclaimed, drops = (int(v) for v in got)
    lab = (st.label, name)
    out.add("cap_in_use", lab, in_use)
    out.add("cap_limit", lab, limit)
    out.add("cap_acquired", lab, granted)
    out.add("cap_timeouts", lab, timeouts)
    out.add("cap_reclaimed", lab, reclaimed)
    out.add("cap_drops", lab, drops)
    out.add("cap_wait", lab, _hist.read(store, "cap", name, _hist.WAIT) or _EMPTY)


def _read_pool(st: _Store, store: SharedStore, name: str, updated: int, out: Reading) -> None:
    from .pool import POOL_COUNTS

    c = dict(zip(POOL_COUNTS, _core.Tally(store._table, _core.NS_POOL, name, len(POOL_COUNTS)).values()))
    lab = (st.label, name)
    for key in ("checkouts", "timeouts", "exhausted", "created", "closed"):
        out.add(f"pool_{key}", lab, c[key])
    out.add("pool_wait", lab, _hist.read(store, "pool", name, _hist.WAIT) or _EMPTY)


def _read_counter(st: _Store, store: SharedStore, name: str, updated: int, out: Reading) -> None:
    out.add("counter_value", (st.label, name), int(_core.Counter(store._table, name).value))


def _read_guard(st: _Store, store: SharedStore, name: str, updated: int, out: Reading) -> None:
    from .guard import GuardCounts

    c = GuardCounts(store, name).stats()
    lab = (st.label, name)
    out.add("guard_calls", (*lab, "success"), c["succeeded"])
    out.add("guard_calls", (*lab, "failure"), c["failed"])
    layers = ("memory", "limiter", "cap", "pool", "breaker")
    out.add("guard_calls", (*lab, "rejected"), sum(c[f"rejected_{la}"] for la in layers))
    for layer in layers:
        out.add("guard_rejections", (*lab, layer), c[f"rejected_{layer}"])
    out.add("guard_timeouts", lab, c["timeouts"])
    out.add("guard_retries", lab, c["retries"])
    out.add("guard_fallbacks", lab, c["fallbacks"])


_EMPTY = _hist.HistogramReading(_hist.BOUNDS, (0,) * (len(_hist.BOUNDS) + 1), 0.0)

KIND_READERS: dict[str, PolicyReader] = {"limiter": _read_limiter, "breaker": _read_breaker, "cap": _read_cap,
                                         "pool": _read_pool, "counter": _read_counter, "guard": _read_guard}


class Reader:
    """Reads every policy of some stores.  stores: SharedStore objects (read as they
    are) or specs (a name, a path, or a URL for open_store), attached read-only when
    they exist: a sidecar may start before the service that creates its store, and
    follows a store that is replaced.  Thread-safe (a scrape at a time)."""

    def __init__(self, stores: Iterable[SharedStore | str]) -> None:
        self._stores = [_Store(s) for s in stores]
        if not self._stores:
            raise ValueError("give at least one store")
        self._lock = threading.Lock()
        self.last_duration = 0.0

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self._stores]

    def read(self) -> list[Metric]:
        """One reading of every store: a Metric per family that has samples, in
        FAMILIES order."""
        with self._lock:
            t0 = time.perf_counter()
            out = Reading()
            for st in self._stores:
                self._read_store(st, out)
            self.last_duration = time.perf_counter() - t0
        return [Metric(k, FAMILIES[k], out.samples[k]) for k in FAMILIES if k in out.samples]

    def _read_store(self, st: _Store, out: Reading) -> None:
        store = st.attach()
        if store is None or store.closed:  # not created yet, or a SharedStore given and closed since
            out.add("store_up", (st.label,), 0)
            return
        out.add("store_up", (st.label,), 1)
        t = store._table
        capacity, used, perm_capacity, perm_used, ndir, reclaimed = (int(v) for v in _core.store_fill(t))
        out.add("store_slots_used", (st.label,), used)
        out.add("store_slots_capacity", (st.label,), capacity)
        out.add("store_permanent_slots_used", (st.label,), perm_used)
        out.add("store_permanent_slots_capacity", (st.label,), perm_capacity)
        out.add("store_policies_capacity", (st.label,), ndir)
        out.add("store_reclaimed", (st.label,), reclaimed)
        kinds: dict[str, int] = {}
        seen: set[str] = set()
        for _idx, kind_num, name, _created, updated in _core.dir_list(t):
            kind = _directory.KIND_NAMES.get(int(kind_num))
            if kind is None:
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
            reader = KIND_READERS.get(kind)
            if reader is None:
                continue
            if kind == "breaker":
                seen.add(name)
            try:
                reader(st, store, name, int(updated), out)
            except LookupError:
                continue  # its directory entry is being created right now
            except (SluicegateError, ValueError) as e:  # a damaged entry: skip it, say so once
                if (kind, name) not in st.failed:
                    st.failed.add((kind, name))
                    _log.warning("metrics: cannot read %s %r in store %s: %s", kind, name, st.label, e)
        for kind in sorted(set(_directory.KINDS) | set(kinds)):
            out.add("store_policies", (st.label, kind), kinds.get(kind, 0))
        for gone in set(st.breakers) - seen:
            del st.breakers[gone]

    def close(self) -> None:
        """Detach the stores this reader attached itself."""
        with self._lock:
            for st in self._stores:
                st.close()


def read(*stores: SharedStore | str) -> list[Metric]:
    """One reading of these stores (a Reader made and closed for it)."""
    r = Reader(stores)
    try:
        return r.read()
    finally:
        r.close()


def samples(metrics: Iterable[Metric]) -> Iterator[tuple[str, dict[str, str], Value]]:
    """(Prometheus family name, labels, value) of every sample, for tests and tools."""
    for m in metrics:
        for values, v in m.samples:
            yield m.family.name, dict(zip(m.family.label_names, values)), v

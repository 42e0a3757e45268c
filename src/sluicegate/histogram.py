"""Host-wide latency histograms kept in the store (csrc/sg_hist.c).

A policy's histogram is a few permanent slots of the store: one 64-bit count per
bucket and the sum, each record one fetch-add on its bucket and one on the sum, so
every process on the host records into the same words and any process (an exporter,
a sidecar) reads the host-wide distribution with no per-process files.

Buckets are fixed, a 1-2-5 series from 100 us to 50 s and +Inf (BOUNDS), the same in
every process.  A histogram takes SLOTS (5) permanent slots of its policy.

Who records what:
  breaker  "calls"  durations of calls that ran and were counted (CircuitBreaker's
                    ``histogram`` option: the engine records them in the C core)
  cap      "wait"   how long a blocking acquire waited after finding the cap full
                    (ConcurrencyLimiter; acquires that found a permit at once are
                    ``acquired`` minus this histogram's count)
  pool     "wait"   for a pool to record its checkout waits:
                    ``histogram(store, "pool", name, "wait").record_seconds(waited)``
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _core
from .directory import KINDS
from .errors import ConfigError

if TYPE_CHECKING:
    from .store import SharedStore

BOUNDS: tuple[float, ...] = tuple(_core.HIST_BOUNDS)  # upper bounds in seconds; +Inf follows
SLOTS: int = int(_core.HIST_SLOTS)  # permanent slots one histogram takes
Histogram = _core.Histogram

# the parts the policies record (see the module docstring)
BREAKER_CALLS = "calls"
WAIT = "wait"


@dataclass(frozen=True)
class HistogramReading:
    """A histogram as Prometheus and OpenTelemetry take it."""

    bounds: tuple[float, ...]  # finite upper bounds, seconds (BOUNDS)
    counts: tuple[int, ...]  # cumulative: values <= each bound, then the total (+Inf)
    sum: float  # seconds

    @property
    def count(self) -> int:
        return self.counts[-1]

    def buckets(self) -> list[int]:
        """Per-bucket counts (not cumulative), the last for values above every bound."""
        return [c - (self.counts[i - 1] if i else 0) for i, c in enumerate(self.counts)]


_handles: weakref.WeakKeyDictionary[SharedStore, dict[tuple[str, str, str], Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _kind_number(kind: str) -> int:
    try:
        return KINDS[kind]
    except KeyError:
        raise ConfigError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}") from None


def histogram(store: SharedStore, kind: str, name: str, part: str) -> Any:
    """The recording handle of histogram `part` of policy (kind, name), made once per
    store and kept: ``.record(ns)``, ``.record_seconds(s)`` (each returns False rather
    than raise when the store has no room for it), ``.read()``, ``.clear()``.  Its slots
    are taken at the first record."""
    key = (kind, name, part)
    with _lock:
        mine = _handles.get(store)
        if mine is None:
            mine = _handles[store] = {}
        h = mine.get(key)
        if h is None:
            h = mine[key] = _core.Histogram(store._table, _kind_number(kind), name, part)
    return h


def read(store: SharedStore, kind: str, name: str, part: str) -> HistogramReading | None:
    """Histogram `part` of policy (kind, name) summed over every process, or None when no
    process has recorded into it (nothing is created: a reader takes no room)."""
    got = _core.hist_read(store._table, _kind_number(kind), name, part)
    if got is None:
        return None
    counts, total = got
    return HistogramReading(BOUNDS, tuple(counts), float(total))

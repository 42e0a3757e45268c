"""OpenTelemetry: every policy of one or more stores as observable instruments.

    from sluicegate.contrib.otel import instrument
    instrument("orders")        # the global MeterProvider, or meter_provider=...

Each collection reads the stores once (the first instrument's callback reads; the
others use that reading), through the same sluicegate.metrics reading the Prometheus
collector uses, so the two exporters always agree.  Instruments are named as in
sluicegate.metrics.FAMILIES (``sluicegate.rate.decisions``, ...) with the same
attributes as the Prometheus labels.

Counters are ObservableCounters (cumulative), gauges ObservableGauges.  The
OpenTelemetry API has no asynchronous histogram, and a histogram kept in the store
cannot be replayed into a synchronous one, so each histogram is exported as three
ObservableCounters, as Prometheus exposes one: ``<name>.bucket`` (cumulative count per
upper bound, attribute ``le``, "+Inf" last), ``<name>.count`` and ``<name>.sum``.
Needs opentelemetry-api (and an SDK to export): ``pip install sluicegate[otel]``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from ..metrics import COUNTER, FAMILIES, GAUGE, Family, Metric, Reader
from ..store import SharedStore
from . import require

__all__ = ["SluicegateInstruments", "instrument"]

_REREAD_AFTER = 5.0  # seconds: a callback called without its collection's first one reads again


def _otel() -> Any:
    return require("opentelemetry.metrics", "otel", "otel")


def _le(bound: float) -> str:
    return repr(bound)


class SluicegateInstruments:
    """The observable instruments of every policy of ``stores`` (SharedStore objects, or
    names, paths or URLs attached read-only when they exist) on a meter of
    ``meter_provider`` (the global one by default)."""

    def __init__(self, *stores: SharedStore | str, meter_provider: Any = None, reader: Reader | None = None) -> None:
        api = _otel()
        from .. import __version__

        self.reader = reader if reader is not None else Reader(stores)
        self._lock = threading.Lock()
        self._by_key: dict[str, Metric] = {}
        self._at = 0.0
        meter = api.get_meter("sluicegate", __version__, meter_provider=meter_provider)
        self.instruments: list[Any] = []
        first = True
        for key, fam in FAMILIES.items():
            if fam.type == COUNTER:
                self._add(meter.create_observable_counter, fam.otel, key, fam.unit, fam.help, first, None)
            elif fam.type == GAUGE:
                self._add(meter.create_observable_gauge, fam.otel, key, fam.unit, fam.help, first, None)
            else:
                for part, unit in (("bucket", "{value}"), ("count", "{value}"), ("sum", fam.unit)):
                    self._add(meter.create_observable_counter, f"{fam.otel}.{part}", key, unit,
                              f"{fam.help} ({part})", first, part)
                    first = False
            first = False

    def _add(self, make: Any, name: str, key: str, unit: str, help: str, first: bool, part: str | None) -> None:
        def callback(options: Any) -> Iterator[Any]:
            return self._observe(key, part, first)

        self.instruments.append(make(name, callbacks=[callback], unit=unit, description=help))

    def _metric(self, key: str, first: bool) -> Metric | None:
        with self._lock:
            if first or time.monotonic() - self._at > _REREAD_AFTER:
                self._by_key = {m.key: m for m in self.reader.read()}
                self._at = time.monotonic()
            return self._by_key.get(key)

    def _observe(self, key: str, part: str | None, first: bool) -> Iterator[Any]:
        api = _otel()
        m = self._metric(key, first)
        if m is None:
            return
        fam: Family = m.family
        for values, v in m.samples:
            attrs = dict(zip(fam.label_names, values))
            if part is None:
                yield api.Observation(v, attrs)
            elif part == "count":
                yield api.Observation(v.count, attrs)  # type: ignore[union-attr]
            elif part == "sum":
                yield api.Observation(v.sum, attrs)  # type: ignore[union-attr]
            else:
                for bound, c in zip(v.bounds, v.counts):  # type: ignore[union-attr]
                    yield api.Observation(c, {**attrs, "le": _le(bound)})
                yield api.Observation(v.counts[-1], {**attrs, "le": "+Inf"})  # type: ignore[union-attr]

    def close(self) -> None:
        self.reader.close()


def instrument(*stores: SharedStore | str, meter_provider: Any = None) -> SluicegateInstruments:
    """Observable instruments of every policy of stores on meter_provider's meter
    "sluicegate" (the global MeterProvider by default)."""
    return SluicegateInstruments(*stores, meter_provider=meter_provider)

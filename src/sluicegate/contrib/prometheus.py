"""Prometheus: every policy of one or more stores, read from shared memory at each scrape.

    from prometheus_client import REGISTRY
    from sluicegate.contrib.prometheus import SluicegateCollector
    REGISTRY.register(SluicegateCollector("orders"))      # a store's name, path or URL, or a SharedStore

or run the sidecar, a process that never made the policies:

    sluicegate metrics --store orders --port 9464        # serves http://127.0.0.1:9464/metrics

The counters are host-wide already (they live in the store, summed over every process),
so one collector in any one process exports them all: no PROMETHEUS_MULTIPROC_DIR, no
per-pid files.  The metrics are sluicegate.metrics.FAMILIES (listed in the README).
Needs prometheus_client: ``pip install sluicegate[prometheus]``.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..metrics import COUNTER, GAUGE, HISTOGRAM, Metric, Reader
from ..store import SharedStore
from . import require

__all__ = ["SluicegateCollector", "register", "serve", "main"]


def _prom() -> Any:
    require("prometheus_client.core", "prometheus", "prometheus")
    return require("prometheus_client", "prometheus", "prometheus")


_LE: dict[tuple[float, ...], list[str]] = {}  # a histogram's bounds as Prometheus writes them, made once


def _le(bounds: tuple[float, ...]) -> list[str]:
    got = _LE.get(bounds)
    if got is None:
        from prometheus_client.utils import floatToGoString

        got = _LE[bounds] = [*(floatToGoString(b) for b in bounds), "+Inf"]
    return got


def _family(pc: Any, m: Metric) -> Any:
    f = m.family
    core = pc.core
    names = list(f.label_names)
    if f.type == COUNTER:
        fam = core.CounterMetricFamily(f.name, f.help, labels=names)
        for values, v in m.samples:
            fam.add_metric(list(values), float(v))  # type: ignore[arg-type]
    elif f.type == GAUGE:
        fam = core.GaugeMetricFamily(f.name, f.help, labels=names)
        for values, v in m.samples:
            fam.add_metric(list(values), float(v))  # type: ignore[arg-type]
    else:
        assert f.type == HISTOGRAM
        fam = core.HistogramMetricFamily(f.name, f.help, labels=names)
        for values, h in m.samples:
            le = _le(h.bounds)  # type: ignore[union-attr]
            fam.add_metric(list(values), list(zip(le, h.counts)), float(h.sum))  # type: ignore[union-attr]
    return fam


class SluicegateCollector:
    """A prometheus_client collector of every policy of ``stores`` (SharedStore objects,
    or names, paths or URLs attached read-only when they exist).  Each scrape is one
    sluicegate.metrics reading; a store that does not exist (yet) reports
    ``sluicegate_store_up 0`` and is attached at a later scrape."""

    def __init__(self, *stores: SharedStore | str, reader: Reader | None = None) -> None:
        _prom()
        self.reader = reader if reader is not None else Reader(stores)

    def describe(self) -> list[Any]:
        return []  # no reading at registration: the metrics follow the stores' contents

    def collect(self) -> Iterator[Any]:
        pc = _prom()
        for m in self.reader.read():
            yield _family(pc, m)

    def close(self) -> None:
        self.reader.close()


def register(*stores: SharedStore | str, registry: Any = None) -> SluicegateCollector:
    """Register a SluicegateCollector of stores on registry (prometheus_client's REGISTRY
    by default) and return it."""
    pc = _prom()
    c = SluicegateCollector(*stores)
    (registry if registry is not None else pc.REGISTRY).register(c)
    return c


def serve(stores: Iterable[SharedStore | str], port: int = 9464, host: str = "127.0.0.1") -> tuple[Any, Any]:
    """Serve /metrics for stores on host:port (port 0: any free port) from a thread, with
    a registry of its own holding only sluicegate's metrics.  Returns prometheus_client's
    (server, thread): server.server_address is where it listens; server.shutdown() stops it."""
    pc = _prom()
    registry = pc.CollectorRegistry(auto_describe=False)
    registry.register(SluicegateCollector(*stores))
    server, thread = pc.start_http_server(port, addr=host, registry=registry)
    return server, thread


def main(stores: Sequence[str], port: int = 9464, host: str = "127.0.0.1") -> int:
    """`sluicegate metrics`: serve /metrics until SIGINT or SIGTERM, then exit 0."""
    try:
        server, thread = serve(list(stores), port, host)
    except ImportError as e:
        print(f"sluicegate metrics: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"sluicegate metrics: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        addr, bound = server.server_address[:2]
        print(f"sluicegate metrics: serving http://{addr}:{bound}/metrics for store(s) "
              f"{', '.join(stores)}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.shutdown()
        server.server_close()
        thread.join(5.0)
    print("sluicegate metrics: stopped", flush=True)
    return 0

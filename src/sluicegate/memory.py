"""MemoryMonitor: memory pressure as a level (ok / warning / critical) and as a gate.

A reading judges the memory that will run out first:

* the **cgroup** this process runs in, when it has a memory limit: cgroup v2
  ``memory.max`` against the working set ``memory.current - inactive_file`` (what the
  kubelet evicts and the OOM killer acts on), the fullest limited cgroup from this
  process's own up to the root; else cgroup v1 ``memory.limit_in_bytes`` (and the
  ``hierarchical_memory_limit`` of its parents) against ``memory.usage_in_bytes -
  total_inactive_file``. A limit at or above the machine's memory binds nothing, so the
  system reading is used instead;
* else the **system**: ``/proc/meminfo`` ``MemTotal - MemAvailable`` of ``MemTotal``
  (or, off Linux, ``psutil.virtual_memory()`` where psutil is installed);
* and, with ``rss_limit=``, this **process**'s resident set (``/proc/self/statm``, else
  psutil, else ``resource``'s peak RSS) against that limit; the higher fraction decides.

A reading is cached for ``interval`` seconds: ``level``, ``check()`` and ``admit()`` sit on
hot paths and cost a clock read and a comparison until the reading is due again (no
thread: the first call after the interval reads, and the other threads go on with the
last reading meanwhile). Levels have hysteresis: a level is entered when the fraction
reaches its threshold and left only when the fraction falls below threshold -
``hysteresis``, so a fraction hovering at a threshold does not flap.

A change of level emits the telemetry event ``memory.level_change`` (and a
``sluicegate.memory`` log record: WARNING into warning or critical, INFO back to ok), in
the thread whose call took the reading.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import re
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, TypeVar, Union, cast

from . import _core, telemetry
from ._forks import after_fork_in_child
from .errors import ConfigError, MemoryPressure

__all__ = ["GATES", "LEVELS", "SOURCES", "STATUS_OF_LEVEL", "MemoryMonitor", "MemoryReading"]

LEVELS = ("ok", "warning", "critical")  # index = rank
SOURCES = ("auto", "cgroup", "system", "process")
GATES = ("warning", "critical")
STATUS_OF_LEVEL = {"ok": "healthy", "warning": "degraded", "critical": "unhealthy"}  # for health()
KIND_MEMORY = "memory"
EVENT_LEVEL_CHANGE = "memory.level_change"

# cgroup v1 writes PAGE_COUNTER_MAX pages (about 2**63 bytes) for "no limit"
CGROUP_V1_UNLIMITED = 1 << 62
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

F = TypeVar("F", bound=Callable[..., Any])
PathArg = Union[str, "os.PathLike[str]"]

_log = logging.getLogger("sluicegate.memory")
_NEVER_READ = -(1 << 62)  # ns: before any clock reading


@dataclass(frozen=True)
class MemoryReading:
    """One reading: ``used_bytes`` of ``limit_bytes`` (``fraction``) from ``source``,
    this process's ``rss_bytes``, and the ``level`` it left the monitor at.

    ``source`` is what decided: ``"cgroup"``, ``"meminfo"`` (``/proc/meminfo``),
    ``"psutil"`` (system memory off Linux) or ``"process"`` (RSS against ``rss_limit``)."""

    used_bytes: int
    limit_bytes: int
    fraction: float
    rss_bytes: int
    source: str
    level: str


class _Judged(NamedTuple):
    used: int
    limit: int
    source: str

    @property
    def fraction(self) -> float:
        return self.used / self.limit


# ---- readers: each returns None when its files (or library) are not there ----------------
def _read(path: str) -> str | None:
    # os.open/os.read: half the system calls of open(), and a reading is several files
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


def _read_int(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


_STAT_KEYS = re.compile(r"^(inactive_file|total_inactive_file|hierarchical_memory_limit) (\d+)$", re.M)


def _stat(path: str) -> dict[str, int]:
    """The few memory.stat values a reading needs, as {name: value} ({} when missing)."""
    return {k: int(v) for k, v in _STAT_KEYS.findall(_read(path) or "")}


_MEMINFO_OLD_KEYS = ("MemFree", "Buffers", "Cached", "SReclaimable", "Shmem")


def _meminfo(proc: str) -> _Judged | None:
    text = _read(os.path.join(proc, "meminfo"))
    if text is None:
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            kb[key] = int(fields[0])
            if key == "MemAvailable" and "MemTotal" in kb:
                break  # both are in the first lines: leave the other forty
    total = kb.get("MemTotal", 0)
    if total <= 0:
        return None
    if "MemAvailable" in kb:
        available = kb["MemAvailable"]
    else:  # kernels before 3.14: the usual estimate of what can be had without swapping
        free, buffers, cached, reclaimable, shmem = (kb.get(k, 0) for k in _MEMINFO_OLD_KEYS)
        available = free + buffers + cached + reclaimable - shmem
    available = min(max(available, 0), total)
    return _Judged((total - available) * 1024, total * 1024, "meminfo")


def _psutil_system() -> _Judged | None:
    try:
        import psutil
    except ImportError:
        return None
    vm = psutil.virtual_memory()
    total = int(vm.total)
    if total <= 0:
        return None
    return _Judged(total - min(int(vm.available), total), total, "psutil")


def _system(proc: str) -> _Judged | None:
    return _meminfo(proc) or _psutil_system()


def _own_cgroups(proc: str) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and its cgroup v1 memory path (from /proc/self/cgroup)."""
    v2 = v1 = None
    for line in (_read(os.path.join(proc, "self", "cgroup")) or "").splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _dirs_up(mount: str, rel: str | None) -> list[str]:
    """This process's cgroup directory under mount and each parent up to mount. When the
    path is not there (a container whose mount is its own cgroup, or a path outside this
    cgroup namespace, such as '/../..'), the mount itself is this process's cgroup."""
    parts = [p for p in (rel or "").split("/") if p]
    if ".." in parts or not os.path.isdir(os.path.join(mount, *parts)):
        parts = []
    dirs = []
    while True:
        dirs.append(os.path.join(mount, *parts))
        if not parts:
            return dirs
        parts.pop()


def _cgroup_v2(cgroup: str, rel: str | None) -> _Judged | None:
    best: _Judged | None = None
    for d in _dirs_up(cgroup, rel):
        limit = _read_int(os.path.join(d, "memory.max"))  # None: missing, or "max" (no limit here)
        if not limit:
            continue
        current = _read_int(os.path.join(d, "memory.current"))
        if current is None:
            continue
        inactive = _stat(os.path.join(d, "memory.stat")).get("inactive_file", 0)
        judged = _Judged(max(current - inactive, 0), limit, "cgroup")
        if best is None or judged.fraction > best.fraction:
            best = judged
    return best


def _cgroup_v1(cgroup: str, rel: str | None) -> _Judged | None:
    d = _dirs_up(os.path.join(cgroup, "memory"), rel)[0]
    stat = _stat(os.path.join(d, "memory.stat"))
    # hierarchical_memory_limit: the lowest limit of this cgroup and its parents
    limit = stat.get("hierarchical_memory_limit") or _read_int(os.path.join(d, "memory.limit_in_bytes"))
    if not limit or limit >= CGROUP_V1_UNLIMITED:
        return None
    usage = _read_int(os.path.join(d, "memory.usage_in_bytes"))
    if usage is None:
        return None
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    return _Judged(max(usage - inactive, 0), limit, "cgroup")


def _cgroup(proc: str, cgroup: str) -> _Judged | None:
    v2, v1 = _own_cgroups(proc)
    return _cgroup_v2(cgroup, v2) or _cgroup_v1(cgroup, v1)


def _rss(proc: str) -> int:
    """This process's resident set in bytes: /proc/self/statm, else psutil, else the
    peak RSS from getrusage (the best a bare macOS offers), else 0."""
    text = _read(os.path.join(proc, "self", "statm"))
    if text is not None:
        fields = text.split()
        if len(fields) > 1 and fields[1].isdigit():
            return int(fields[1]) * PAGE_SIZE
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.Process().memory_info().rss)
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system
        return 0
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024


# ---- validation ---------------------------------------------------------------------------
def _number(arg: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{arg} must be a finite number, got {value!r}")
    return float(value)


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


_WHAT = {
    "cgroup": "the cgroup's memory limit",
    "meminfo": "system memory",
    "psutil": "system memory",
    "process": "rss_limit (this process's resident set)",
}

_monitors: weakref.WeakSet[MemoryMonitor] = weakref.WeakSet()


class MemoryMonitor:
    """Memory pressure of this process's cgroup, of the machine, or of this process.

    ``MemoryMonitor(warning=0.70, critical=0.85)``: ``level`` is ``"ok"``, ``"warning"``
    (fraction >= warning) or ``"critical"`` (>= critical), each left only below its
    threshold minus ``hysteresis``. As a gate, ``check()`` (and ``with monitor:``,
    ``@monitor``) raises ``MemoryPressure`` at ``gate`` level or above, and ``admit()``
    says whether it would pass.

    Options:
      * ``source``: ``"auto"`` (the cgroup's limit if one applies, else system memory),
        ``"cgroup"`` (a cgroup limit must apply), ``"system"`` (``/proc/meminfo``, or psutil
        off Linux) or ``"process"`` (only this process's RSS against ``rss_limit``);
      * ``rss_limit``: bytes; this process's RSS is judged against it too, and the higher
        fraction decides;
      * ``interval``: seconds a reading is kept (0: read on every call);
      * ``gate``: the level from which ``check()`` raises (``"critical"`` or ``"warning"``);
      * ``clock``: a callable giving monotonic seconds (tests pass a fake one); by
        default the core's clock, CLOCK_MONOTONIC as ``time.monotonic``, read cheaper;
      * ``proc``, ``cgroup``: where procfs and the cgroup filesystem are mounted (a
        container that sees its host's as ``/host/proc``; tests pass fixture trees).
    """

    def __init__(
        self,
        warning: float = 0.70,
        critical: float = 0.85,
        *,
        hysteresis: float = 0.05,
        source: str = "auto",
        rss_limit: int | None = None,
        interval: float = 1.0,
        gate: str = "critical",
        name: str = "memory",
        clock: Callable[[], float] | None = None,
        proc: PathArg = "/proc",
        cgroup: PathArg = "/sys/fs/cgroup",
    ) -> None:
        self._init_kwargs: dict[str, Any] = {
            k: v for k, v in dict(locals()).items() if k not in ("self", "__class__")
        }
        w = _number("warning", warning)
        c = _number("critical", critical)
        if not 0 < w < c <= 1:
            raise ConfigError(
                f"thresholds must satisfy 0 < warning < critical <= 1 (fractions of the limit), "
                f"got warning={warning!r}, critical={critical!r}"
            )
        h = _number("hysteresis", hysteresis)
        if not 0 <= h < w:
            raise ConfigError(
                f"hysteresis must be >= 0 and below warning ({warning!r}), so that 'ok' can be reached "
                f"again, got {hysteresis!r}"
            )
        if source not in SOURCES:
            raise ConfigError(f"source must be one of {', '.join(map(repr, SOURCES))}, got {source!r}")
        if rss_limit is not None and (isinstance(rss_limit, bool) or not isinstance(rss_limit, int) or rss_limit <= 0):
            raise ConfigError(f"rss_limit must be a positive int of bytes, or None, got {rss_limit!r}")
        if source == "process" and rss_limit is None:
            raise ConfigError("source='process' judges this process's RSS against rss_limit: pass rss_limit=BYTES")
        iv = _number("interval", interval)
        if iv < 0:
            raise ConfigError(f"interval must be >= 0 seconds (0: read on every call), got {interval!r}")
        if gate not in GATES:
            raise ConfigError(f"gate must be 'critical' or 'warning' (the level from which check() raises), "
                              f"got {gate!r}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a callable returning seconds, got {clock!r}")
        try:
            self._proc = os.fspath(proc)
            self._cgroup = os.fspath(cgroup)
        except TypeError:
            raise ConfigError(f"proc and cgroup must be paths, got {proc!r}, {cgroup!r}") from None

        self.name = name
        self.warning = w
        self.critical = c
        self.hysteresis = h
        self.source = source
        self.rss_limit = rss_limit
        self.interval = iv
        self.gate = gate
        # the hot path compares ns from the core's clock (CLOCK_MONOTONIC, from the TSC where
        # the kernel keeps time with it: cheaper than time.monotonic); a given clock is seconds
        self._now_ns: Callable[[], int] = (
            _core.fast_monotonic_ns if clock is None else (lambda: round(clock() * 1e9))
        )
        self._interval_ns = round(iv * 1e9)
        self._gate_rank = LEVELS.index(gate)
        self._thresholds = (math.inf, w, c)  # by rank; rank 0 (ok) has none
        self._lock = threading.Lock()
        self._rank = 0
        self._level = "ok"
        self._blocked = False
        self._due = _NEVER_READ
        self._taken_at = _NEVER_READ
        self._changes = 0
        self._rejections = 0
        self._failing = False
        self._own_listeners: telemetry.Listeners | None = None

        # the first reading, through the one path (a monitor starts at 'ok'); a source
        # that cannot be read is an error here, and only a logged warning later
        measured = self._measure()
        if measured[0] is None or (source in ("cgroup", "system") and self._primary() is None):
            raise ConfigError(self._unavailable())
        self._reading = MemoryReading(0, 1, 0.0, 0, measured[0].source, "ok")
        with self._lock:
            change = self._take(self._now_ns(), measured)
        self._emit(change)
        _monitors.add(self)

    # ---- the hot path ---------------------------------------------------------------------
    @property
    def level(self) -> str:
        """'ok', 'warning' or 'critical' (read afresh once the last reading is interval old)."""
        if self._now_ns() >= self._due:
            self._refresh(False)
        return self._level

    def check(self) -> None:
        """Raise MemoryPressure when the level is at the gate ('critical', or 'warning'
        with gate='warning'); else return None."""
        if self._now_ns() >= self._due:
            self._refresh(False)
        if self._blocked:
            self._rejections += 1  # this process's, approximate under threads (not atomic)
            raise self._pressure()

    def admit(self) -> bool:
        """Whether check() would pass now (True below the gate level)."""
        if self._now_ns() >= self._due:
            self._refresh(False)
        if self._blocked:
            self._rejections += 1
            return False
        return True

    # ---- readings ---------------------------------------------------------------------------
    def reading(self) -> MemoryReading:
        """The current reading (taken afresh once the last one is interval old)."""
        if self._now_ns() >= self._due:
            self._refresh(False)
        return self._reading

    def refresh(self) -> MemoryReading:
        """Take a reading now, whatever its age, and return it."""
        self._refresh(True)
        return self._reading

    def _refresh(self, force: bool) -> None:
        # non-blocking: while one thread reads, the others go on with the last reading
        if not self._lock.acquire(blocking=force):
            return
        try:
            now = self._now_ns()
            if not force and now < self._due:  # another thread read it just now
                return
            change = self._take(now)
        finally:
            self._lock.release()
        self._emit(change)  # outside the lock: a listener may read the monitor

    def _emit(self, change: tuple[str, MemoryReading] | None) -> None:
        if change is not None:
            old, r = change
            telemetry.emit(
                KIND_MEMORY, self.name, EVENT_LEVEL_CHANGE, self._own_listeners,
                old=old, new=r.level, fraction=r.fraction, used_bytes=r.used_bytes,
                limit_bytes=r.limit_bytes, rss_bytes=r.rss_bytes, source=r.source,
            )

    def _take(
        self, now: int, measured: tuple[_Judged | None, int] | None = None
    ) -> tuple[str, MemoryReading] | None:
        """Read, move the level (with hysteresis); returns (old level, reading) on a change."""
        self._due = now + self._interval_ns
        why = ""
        try:
            judged, rss = self._measure() if measured is None else measured
        except Exception as exc:  # noqa: BLE001 - a reading never breaks the call it gates
            judged, why = None, f"reading failed: {exc!r}"
        if judged is None:  # the source went away: keep the last reading, say so once
            if not self._failing:
                self._failing = True
                _log.warning("memory monitor %r: %s; keeping the last reading",
                             self.name, why or self._unavailable())
            return None
        if self._failing:
            self._failing = False
            _log.info("memory monitor %r: reading again from %s", self.name, judged.source)
        fraction = judged.fraction
        rank = self._next_rank(fraction)
        old = self._level
        self._reading = MemoryReading(judged.used, judged.limit, fraction, rss, judged.source, LEVELS[rank])
        self._taken_at = now
        if rank == self._rank:
            return None
        self._rank = rank
        self._level = LEVELS[rank]
        self._blocked = rank >= self._gate_rank
        self._changes += 1
        return old, self._reading

    def _next_rank(self, fraction: float) -> int:
        """The highest level whose threshold the fraction reaches, or that the monitor is
        at or above and whose threshold - hysteresis the fraction still reaches."""
        for rank in (2, 1):
            threshold = self._thresholds[rank]
            if fraction >= threshold or (self._rank >= rank and fraction >= threshold - self.hysteresis):
                return rank
        return 0

    def _primary(self) -> _Judged | None:
        """The cgroup's or the system's reading, as source says (None for 'process')."""
        judged: _Judged | None = None
        if self.source in ("auto", "cgroup"):
            judged = _cgroup(self._proc, self._cgroup)
        if self.source in ("auto", "system"):
            system = _system(self._proc)
            # a cgroup limit at or above the machine's memory binds nothing: the machine does
            if system is not None and (judged is None or judged.limit >= system.limit):
                judged = system
        return judged

    def _measure(self) -> tuple[_Judged | None, int]:
        rss = _rss(self._proc)
        judged = self._primary()
        if self.rss_limit is not None:
            own = _Judged(rss, self.rss_limit, "process")
            if judged is None or own.fraction > judged.fraction:
                judged = own
        return judged, rss

    def _unavailable(self) -> str:
        if self.source == "cgroup":
            return (f"source='cgroup': no cgroup memory limit applies to this process (no numeric memory.max "
                    f"(v2) or memory.limit_in_bytes (v1) for it under {self._cgroup!r}); use source='auto' to "
                    f"fall back to system memory, or run it under a memory limit")
        return (f"source={self.source!r}: cannot read system memory ({os.path.join(self._proc, 'meminfo')!r} "
                f"is missing and psutil is not installed); pip install psutil, or pass rss_limit=BYTES to "
                f"judge this process's RSS")

    def _pressure(self) -> MemoryPressure:
        r = self._reading
        return MemoryPressure(
            f"memory pressure is {self._level} in monitor {self.name!r}: {r.fraction:.0%} of {_WHAT[r.source]} "
            f"in use ({_fmt_bytes(r.used_bytes)} of {_fmt_bytes(r.limit_bytes)}); shed load and retry after "
            f"{self.interval:g} s, or raise the limit",
            level=self._level, fraction=r.fraction, retry_after=self.interval, name=self.name,
        )

    # ---- observation ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A flat dict: kind, name, then the readings, the configuration and this
        process's counts:

        ``{"kind": "memory", "name", "level", "fraction", "used_bytes", "limit_bytes",
        "rss_bytes", "source", "age" (seconds since the reading), "warning", "critical",
        "hysteresis", "gate", "rss_limit", "interval", "level_changes", "rejections"}``
        (rejections: check() raises and admit() refusals in this process)."""
        r = self.reading()
        return {
            "kind": KIND_MEMORY,
            "name": self.name,
            "level": r.level,
            "fraction": r.fraction,
            "used_bytes": r.used_bytes,
            "limit_bytes": r.limit_bytes,
            "rss_bytes": r.rss_bytes,
            "source": r.source,
            "age": max(self._now_ns() - self._taken_at, 0) / 1e9,
            "warning": self.warning,
            "critical": self.critical,
            "hysteresis": self.hysteresis,
            "gate": self.gate,
            "rss_limit": self.rss_limit,
            "interval": self.interval,
            "level_changes": self._changes,
            "rejections": self._rejections,
        }

    def on(self, event: str, listener: telemetry.Listener) -> telemetry.Listener:
        """Call listener(Event) on this monitor's level changes ('memory.level_change',
        'memory.*' or '*'), in this process. Returns listener."""
        if event not in ("*", "memory.*", EVENT_LEVEL_CHANGE):
            raise ConfigError(f"a memory monitor emits {EVENT_LEVEL_CHANGE!r}, not {event!r}")
        if self._own_listeners is None:
            self._own_listeners = telemetry.Listeners()
        self._own_listeners.add(event, listener)
        return listener

    def off(self, event: str, listener: telemetry.Listener) -> None:
        """Stop calling listener for event (as given to on); no error if it was not."""
        if self._own_listeners is not None:
            self._own_listeners.remove(event, listener)

    # ---- the gate as a block and a decorator ------------------------------------------------
    def __enter__(self) -> MemoryMonitor:  # noqa: PYI034 - py39: no typing.Self
        self.check()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def __aenter__(self) -> MemoryMonitor:  # noqa: PYI034
        self.check()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __call__(self, fn: F) -> F:
        """Decorate a def or async def function: check() before each call."""
        check = self.check
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                check()
                return await fn(*args, **kwargs)

            return cast(F, async_wrapper)
        if not callable(fn):
            raise ConfigError(f"a memory monitor decorates a callable, got {fn!r}")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check()
            return fn(*args, **kwargs)

        return cast(F, wrapper)

    # ---- processes ---------------------------------------------------------------------------
    def _forget_after_fork(self) -> None:
        """A forked child has its own RSS, and a parent thread may have held the lock."""
        self._lock = threading.Lock()
        self._due = _NEVER_READ
        self._rejections = 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._init_kwargs,))

    def __repr__(self) -> str:
        r = self._reading
        return f"<MemoryMonitor {self.name!r} {self._level} {r.fraction:.0%} of {r.source}>"


def _rebuild(kwargs: dict[str, Any]) -> MemoryMonitor:
    return MemoryMonitor(**kwargs)


@after_fork_in_child
def _after_fork_in_child() -> None:
    for monitor in list(_monitors):
        monitor._forget_after_fork()

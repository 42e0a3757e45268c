"""MemoryMonitor: readings from cgroup v2 / v1 / /proc/meminfo / psutil / RSS (fixture
trees under tmp_path, and the real machine's files), the level path with hysteresis,
the reading cached for interval seconds under a fake clock, the gate (check, admit,
with, decorators), validation, telemetry, fork and pickle, and a real child process whose
RSS crosses rss_limit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sluicegate as sg
from sluicegate import memory

KB = 1024
PROCFS = os.path.exists("/proc/self/statm")
try:
    import psutil  # noqa: F401
    CURRENT_RSS = True
except ImportError:
    CURRENT_RSS = PROCFS  # else only getrusage's peak, which never comes down
GiB = 1 << 30
TOTAL_KB = 10_000_000  # a fixture machine of ~9.5 GiB


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tree:
    """A fixture procfs + cgroupfs under tmp_path."""

    def __init__(self, root) -> None:
        self.proc = root / "proc"
        self.cgroup = root / "cgroup"
        (self.proc / "self").mkdir(parents=True)
        self.cgroup.mkdir()
        self.set_system(0.10)
        self.set_rss(100 * (1 << 20))
        self.write(self.proc / "self" / "cgroup", "0::/\n")

    @staticmethod
    def write(path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def set_system(self, fraction: float, total_kb: int = TOTAL_KB) -> None:
        available = total_kb - round(total_kb * fraction)
        self.write(
            self.proc / "meminfo",
            f"MemTotal:       {total_kb} kB\nMemFree:        {available // 2} kB\n"
            f"MemAvailable:   {available} kB\nBuffers:            1000 kB\nCached:          20000 kB\n",
        )

    def set_rss(self, nbytes: int) -> None:
        self.write(self.proc / "self" / "statm", f"9999 {nbytes // memory.PAGE_SIZE} 300 5 0 120 0\n")

    def cgroup_v2(self, rel: str, limit: int | str, current: int = 0, inactive: int = 0) -> None:
        d = self.cgroup / rel.strip("/") if rel.strip("/") else self.cgroup
        self.write(d / "memory.max", f"{limit}\n")
        self.write(d / "memory.current", f"{current}\n")
        self.write(d / "memory.stat", f"anon 1\nfile 2\nactive_file 3\ninactive_file {inactive}\nslab 4\n")

    def cgroup_v1(self, rel: str, limit: int, usage: int, inactive: int = 0, hierarchical: int | None = None):
        d = self.cgroup / "memory" / rel.strip("/") if rel.strip("/") else self.cgroup / "memory"
        self.write(d / "memory.limit_in_bytes", f"{limit}\n")
        self.write(d / "memory.usage_in_bytes", f"{usage}\n")
        self.write(
            d / "memory.stat",
            f"cache 1\nrss 2\ninactive_file 7\nhierarchical_memory_limit {hierarchical or limit}\n"
            f"total_inactive_file {inactive}\n",
        )

    def monitor(self, *args, **kwargs) -> sg.MemoryMonitor:
        kwargs.setdefault("proc", str(self.proc))
        kwargs.setdefault("cgroup", str(self.cgroup))
        return sg.MemoryMonitor(*args, **kwargs)


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


@pytest.fixture
def clock():
    return FakeClock()


def drive(tree: Tree, mon: sg.MemoryMonitor, fractions) -> list[str]:
    out = []
    for f in fractions:
        tree.set_system(f)
        out.append(mon.refresh().level)
    return out


# ---- readings from fixture files -------------------------------------------------------------
def test_meminfo_total_minus_available(tree):
    tree.set_system(0.42)
    r = tree.monitor().reading()
    assert r.source == "meminfo"
    assert r.limit_bytes == TOTAL_KB * KB
    assert r.used_bytes == round(TOTAL_KB * 0.42) * KB
    assert r.fraction == pytest.approx(0.42)
    assert r.rss_bytes == 100 * (1 << 20)
    assert r.level == "ok"


def test_meminfo_without_memavailable_uses_the_old_kernels_estimate(tree):
    tree.write(
        tree.proc / "meminfo",
        "MemTotal: 1000000 kB\nMemFree: 100000 kB\nBuffers: 50000 kB\nCached: 200000 kB\n"
        "SwapCached: 0 kB\nShmem: 30000 kB\nSReclaimable: 30000 kB\n",
    )
    r = tree.monitor().reading()
    available = 100000 + 50000 + 200000 + 30000 - 30000
    assert (r.used_bytes, r.limit_bytes) == ((1000000 - available) * KB, 1000000 * KB)


def test_cgroup_v2_limit_against_working_set_as_the_kubelet_counts_it(tree):
    tree.cgroup_v2("/", limit=1 * GiB, current=900 << 20, inactive=100 << 20)
    r = tree.monitor().reading()
    assert r.source == "cgroup"
    assert (r.used_bytes, r.limit_bytes) == (800 << 20, 1 * GiB)
    assert r.fraction == pytest.approx(800 / 1024)
    assert r.level == "warning"


def test_cgroup_v2_working_set_never_below_zero(tree):
    tree.cgroup_v2("/", limit=1 * GiB, current=10 << 20, inactive=50 << 20)
    assert tree.monitor().reading().used_bytes == 0


def test_cgroup_v2_max_means_no_limit_so_auto_falls_back_to_meminfo(tree):
    tree.cgroup_v2("/", limit="max", current=900 << 20)
    tree.set_system(0.3)
    r = tree.monitor().reading()
    assert r.source == "meminfo" and r.fraction == pytest.approx(0.3)


def test_cgroup_v2_nested_the_fullest_limited_cgroup_up_the_tree(tree):
    tree.write(tree.proc / "self" / "cgroup", "0::/system.slice/app.service\n")
    tree.cgroup_v2("/system.slice/app.service", limit="max", current=100 << 20)  # the unit: no limit
    tree.cgroup_v2("/system.slice", limit=2 * GiB, current=1 * GiB)  # the slice: 50 %
    r = tree.monitor().reading()
    assert (r.source, r.used_bytes, r.limit_bytes) == ("cgroup", 1 * GiB, 2 * GiB)
    tree.cgroup_v2("/system.slice/app.service", limit=1 * GiB, current=600 << 20)  # the unit: 59 %
    r = tree.monitor().reading()
    assert (r.used_bytes, r.limit_bytes) == (600 << 20, 1 * GiB)
    tree.cgroup_v2("/system.slice", limit=2 * GiB, current=1900 << 20)  # the slice: 93 %: it binds
    assert tree.monitor().reading().limit_bytes == 2 * GiB


def test_cgroup_path_outside_the_mount_means_the_mount_is_our_cgroup(tree):
    # a container without a cgroup namespace: /proc/self/cgroup names the host's path
    tree.write(tree.proc / "self" / "cgroup", "0::/kubepods/burstable/pod1/abc\n")
    tree.cgroup_v2("/", limit=1 * GiB, current=512 << 20)
    assert tree.monitor().reading().fraction == pytest.approx(0.5)
    tree.write(tree.proc / "self" / "cgroup", "0::/../../..\n")
    assert tree.monitor().reading().fraction == pytest.approx(0.5)


def test_cgroup_v1_limit_usage_and_total_inactive_file(tree):
    tree.write(tree.proc / "self" / "cgroup", "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    tree.cgroup_v1("/docker/abc", limit=1 * GiB, usage=700 << 20, inactive=100 << 20)
    r = tree.monitor().reading()
    assert (r.source, r.used_bytes, r.limit_bytes) == ("cgroup", 600 << 20, 1 * GiB)


def test_cgroup_v1_a_parents_limit_binds_through_hierarchical_memory_limit(tree):
    tree.write(tree.proc / "self" / "cgroup", "4:memory:/app\n")
    tree.cgroup_v1("/app", limit=memory.CGROUP_V1_UNLIMITED * 2 - 4096, usage=300 << 20, hierarchical=512 << 20)
    r = tree.monitor().reading()
    assert (r.source, r.limit_bytes) == ("cgroup", 512 << 20)


def test_cgroup_v1_unlimited_falls_back_to_meminfo(tree):
    tree.write(tree.proc / "self" / "cgroup", "4:memory:/app\n")
    tree.cgroup_v1("/app", limit=9223372036854771712, usage=300 << 20)
    assert tree.monitor().reading().source == "meminfo"


def test_cgroup_v1_mount_root_when_our_path_is_not_mounted(tree):
    tree.write(tree.proc / "self" / "cgroup", "4:memory:/docker/0123abcd\n")
    tree.cgroup_v1("/", limit=1 * GiB, usage=256 << 20)
    assert tree.monitor().reading().fraction == pytest.approx(0.25)


def test_a_cgroup_limit_above_the_machines_memory_binds_nothing(tree):
    tree.cgroup_v2("/", limit=64 * GiB, current=1 * GiB)  # limit > MemTotal (~9.5 GiB)
    tree.set_system(0.6)
    r = tree.monitor().reading()
    assert r.source == "meminfo" and r.fraction == pytest.approx(0.6)
    # asked for explicitly, the cgroup is what is judged
    assert tree.monitor(source="cgroup").reading().limit_bytes == 64 * GiB


def test_cgroup_missing_auto_uses_meminfo_and_source_cgroup_refuses(tree):
    r = tree.monitor().reading()  # the fixture has no cgroup files at all
    assert r.source == "meminfo"
    with pytest.raises(sg.ConfigError, match=r"source='cgroup'.*no cgroup memory limit.*source='auto'"):
        tree.monitor(source="cgroup")
    with pytest.raises(sg.ConfigError, match=r"source='cgroup'"):  # RSS is no stand-in for what was asked
        tree.monitor(source="cgroup", rss_limit=GiB)


def test_source_system_ignores_the_cgroup(tree):
    tree.cgroup_v2("/", limit=1 * GiB, current=1000 << 20)
    tree.set_system(0.2)
    assert tree.monitor(source="system").reading().source == "meminfo"


def test_rss_limit_judges_this_process_and_the_higher_fraction_decides(tree):
    tree.set_system(0.30)
    tree.set_rss(400 << 20)
    r = tree.monitor(rss_limit=1 * GiB).reading()
    assert (r.source, r.used_bytes, r.limit_bytes) == ("process", 400 << 20, 1 * GiB)
    tree.set_system(0.50)
    r = tree.monitor(rss_limit=1 * GiB).reading()
    assert r.source == "meminfo" and r.rss_bytes == 400 << 20
    r = tree.monitor(rss_limit=1 * GiB, source="process").reading()
    assert (r.source, r.fraction) == ("process", pytest.approx(400 / 1024))


def test_no_proc_and_no_psutil_refuses_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # "not installed"
    missing = str(tmp_path / "nowhere")
    with pytest.raises(sg.ConfigError, match=r"pip install psutil.*rss_limit"):
        sg.MemoryMonitor(proc=missing, cgroup=missing)
    with pytest.raises(sg.ConfigError, match="psutil"):
        sg.MemoryMonitor(source="system", proc=missing, cgroup=missing)
    with pytest.raises(sg.ConfigError, match="psutil"):
        sg.MemoryMonitor(source="system", rss_limit=GiB, proc=missing, cgroup=missing)
    # auto with rss_limit: this process's RSS is what is left to judge
    assert sg.MemoryMonitor(rss_limit=1 << 40, proc=missing, cgroup=missing).reading().source == "process"
    # RSS from getrusage's peak still judges this process
    r = sg.MemoryMonitor(source="process", rss_limit=1 << 40, proc=missing, cgroup=missing).reading()
    assert r.source == "process" and r.rss_bytes > 0


def test_psutil_where_proc_is_missing(tmp_path):
    psutil = pytest.importorskip("psutil")
    missing = str(tmp_path / "nowhere")
    r = sg.MemoryMonitor(proc=missing, cgroup=missing).reading()
    vm = psutil.virtual_memory()
    assert r.source == "psutil" and r.limit_bytes == vm.total
    assert r.rss_bytes == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)


# ---- the level path with hysteresis --------------------------------------------------------------
def test_level_path_up_and_down_through_warning(tree):
    mon = tree.monitor(0.70, 0.85, hysteresis=0.05)
    assert drive(tree, mon, [0.69, 0.71, 0.68, 0.66, 0.65, 0.64, 0.69, 0.70]) == [
        "ok", "warning", "warning", "warning", "warning", "ok", "ok", "warning",
    ]


def test_level_path_down_from_critical(tree):
    mon = tree.monitor(0.70, 0.85, hysteresis=0.05)
    assert drive(tree, mon, [0.86, 0.83, 0.80, 0.79, 0.84, 0.85, 0.40]) == [
        "critical", "critical", "critical", "warning", "warning", "critical", "ok",
    ]
    assert drive(tree, mon, [0.90, 0.66, 0.64]) == ["critical", "warning", "ok"]


def test_no_hysteresis(tree):
    mon = tree.monitor(0.5, 0.9, hysteresis=0)
    assert drive(tree, mon, [0.5, 0.4999, 0.9, 0.8999]) == ["warning", "ok", "critical", "warning"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=25))
def test_level_invariants_for_any_path(tmp_path_factory, fractions):
    tree = Tree(tmp_path_factory.mktemp("mem"))
    mon = tree.monitor(0.6, 0.8, hysteresis=0.1)
    prev = "ok"
    for f in fractions:
        tree.set_system(f)
        level = mon.refresh().level
        f = mon.reading().fraction
        if f >= 0.8:
            assert level == "critical"
        elif f >= 0.6:
            assert level in ("warning", "critical")
        elif f < 0.5:
            assert level == "ok"
        if level == "critical" and f < 0.8:
            assert prev == "critical"  # only ever kept, never entered, below the threshold
        if level == "warning" and f < 0.6:
            assert prev in ("warning", "critical")
        prev = level


# ---- the reading is cached for interval seconds ----------------------------------------------------
def test_the_reading_is_kept_for_interval_seconds(tree, clock):
    mon = tree.monitor(interval=2.0, clock=clock)
    first = mon.reading()
    tree.set_system(0.95)
    clock.now += 1.999
    assert mon.level == "ok" and mon.admit() and mon.reading() is first
    mon.check()
    clock.now += 0.001
    assert mon.level == "critical"
    assert mon.reading() is not first and mon.reading().fraction == pytest.approx(0.95)
    tree.set_system(0.1)
    clock.now += 1.0
    assert mon.level == "critical" and not mon.admit()  # still the reading of 1 s ago
    assert mon.stats()["age"] == pytest.approx(1.0)
    clock.now += 1.0
    assert mon.level == "ok"


def test_files_are_read_once_per_interval(tree, clock, monkeypatch):
    reads = []
    real = memory._read
    monkeypatch.setattr(memory, "_read", lambda p: reads.append(p) or real(p))
    mon = tree.monitor(interval=1.0, clock=clock)
    reads.clear()
    for _ in range(1000):
        mon.check()
        _ = mon.level
        mon.admit()
    assert reads == []
    clock.now += 1.0
    for _ in range(1000):
        mon.check()
    assert len([p for p in reads if p.endswith("meminfo")]) == 1


def test_interval_zero_reads_on_every_call(tree, clock):
    mon = tree.monitor(interval=0, clock=clock)
    tree.set_system(0.9)
    assert mon.level == "critical"
    tree.set_system(0.1)
    assert mon.level == "ok"


def test_refresh_reads_now_whatever_the_age(tree, clock):
    mon = tree.monitor(interval=3600, clock=clock)
    tree.set_system(0.9)
    assert mon.level == "ok"
    assert mon.refresh().level == "critical" and mon.level == "critical"


def test_a_source_that_goes_away_keeps_the_last_reading_and_says_so_once(tree, clock, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)
    mon = tree.monitor(interval=1.0, clock=clock)
    tree.set_system(0.9)
    mon.refresh()
    os.remove(tree.proc / "meminfo")
    with caplog.at_level(logging.WARNING, logger="sluicegate.memory"):
        for _ in range(3):
            clock.now += 1.0
            assert mon.level == "critical"
    assert sum("keeping the last reading" in r.message for r in caplog.records) == 1
    tree.set_system(0.1)
    clock.now += 1.0
    assert mon.level == "ok"


def test_a_reading_that_raises_never_breaks_the_gated_call(tree, clock, caplog, monkeypatch):
    mon = tree.monitor(interval=1.0, clock=clock)

    def broken(proc: str) -> int:
        raise PermissionError("statm")

    monkeypatch.setattr(memory, "_rss", broken)
    with caplog.at_level(logging.WARNING, logger="sluicegate.memory"):
        clock.now += 1.0
        mon.check()
        assert mon.level == "ok"
    assert any("reading failed: PermissionError" in r.message for r in caplog.records)


# ---- the gate ---------------------------------------------------------------------------------
def test_check_raises_memory_pressure_at_critical(tree):
    tree.cgroup_v2("/", limit=1 * GiB, current=900 << 20)
    mon = tree.monitor(interval=0.5, name="web")
    assert mon.level == "critical" and mon.admit() is False
    with pytest.raises(sg.MemoryPressure) as ei:
        mon.check()
    e = ei.value
    assert isinstance(e, sg.SluicegateError) and not isinstance(e, MemoryError)
    assert (e.level, e.retry_after, e.name) == ("critical", 0.5, "web")
    assert e.fraction == pytest.approx(900 / 1024)
    msg = str(e)
    assert "critical" in msg and "88%" in msg and "cgroup" in msg and "900.0 MiB of 1.0 GiB" in msg
    assert "retry after 0.5 s" in msg
    assert mon.stats()["rejections"] == 2


def test_check_passes_at_warning_unless_gate_is_warning(tree):
    tree.set_system(0.75)
    mon = tree.monitor()
    assert mon.level == "warning" and mon.admit()
    mon.check()
    strict = tree.monitor(gate="warning")
    with pytest.raises(sg.MemoryPressure) as ei:
        strict.check()
    assert ei.value.level == "warning"
    tree.set_system(0.5)
    strict.refresh()
    strict.check()


def test_with_block_and_decorators(tree):
    mon = tree.monitor()
    calls = []

    @mon
    def work(x: int, *, y: int = 1) -> int:
        """doc"""
        calls.append(x)
        return x + y

    @mon
    async def awork(x: int) -> int:
        calls.append(x)
        return x * 2

    async def block() -> str:
        async with mon:
            return "in"

    with mon as m:
        assert m is mon
    assert work(1, y=2) == 3 and work.__name__ == "work" and work.__doc__ == "doc"
    assert asyncio.run(awork(5)) == 10
    assert asyncio.run(block()) == "in"

    tree.set_system(0.99)
    mon.refresh()
    with pytest.raises(sg.MemoryPressure):
        with mon:
            calls.append("block")
    with pytest.raises(sg.MemoryPressure):
        work(7)
    with pytest.raises(sg.MemoryPressure):
        asyncio.run(awork(7))
    with pytest.raises(sg.MemoryPressure):
        asyncio.run(block())
    assert calls == [1, 5]
    with pytest.raises(sg.ConfigError, match="decorates a callable"):
        mon(42)  # type: ignore[arg-type]


def test_exceptions_pass_through_the_with_block(tree):
    mon = tree.monitor()
    with pytest.raises(KeyError):
        with mon:
            raise KeyError("x")


# ---- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"warning": 0.9, "critical": 0.8}, "0 < warning < critical <= 1"),
        ({"warning": 0.8, "critical": 0.8}, "0 < warning < critical <= 1"),
        ({"warning": 0, "critical": 0.8}, "0 < warning < critical <= 1"),
        ({"warning": 0.5, "critical": 1.2}, "0 < warning < critical <= 1"),
        ({"warning": float("nan")}, "warning must be a finite number"),
        ({"critical": "0.9"}, "critical must be a finite number"),
        ({"warning": True}, "warning must be a finite number"),
        ({"hysteresis": -0.01}, "hysteresis must be >= 0 and below warning"),
        ({"hysteresis": 0.7}, "hysteresis must be >= 0 and below warning"),
        ({"source": "swap"}, "source must be one of 'auto', 'cgroup', 'system', 'process'"),
        ({"source": "process"}, "pass rss_limit=BYTES"),
        ({"rss_limit": 0}, "rss_limit must be a positive int of bytes"),
        ({"rss_limit": 1.5e9}, "rss_limit must be a positive int of bytes"),
        ({"rss_limit": True}, "rss_limit must be a positive int of bytes"),
        ({"interval": -1}, "interval must be >= 0 seconds"),
        ({"interval": float("inf")}, "interval must be a finite number"),
        ({"gate": "ok"}, "gate must be 'critical' or 'warning'"),
        ({"name": ""}, "name must be a non-empty str"),
        ({"clock": 3}, "clock must be a callable"),
        ({"proc": 3}, "proc and cgroup must be paths"),
    ],
)
def test_bad_arguments_raise_config_error_naming_them(tree, kwargs, match):
    with pytest.raises(sg.ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")) as ei:
        tree.monitor(**kwargs)
    assert isinstance(ei.value, ValueError)


def test_thresholds_at_the_edges_are_accepted(tree):
    mon = tree.monitor(0.01, 1.0, hysteresis=0.0)
    assert (mon.warning, mon.critical, mon.hysteresis) == (0.01, 1.0, 0.0)


# ---- observation --------------------------------------------------------------------------------
def test_stats_is_flat_kind_name_then_readings(tree, clock):
    tree.set_system(0.75)
    mon = tree.monitor(name="api-mem", rss_limit=8 * GiB, clock=clock)
    s = mon.stats()
    assert list(s)[:8] == ["kind", "name", "level", "fraction", "used_bytes", "limit_bytes", "rss_bytes", "source"]
    assert s["kind"] == "memory" and s["name"] == "api-mem" and s["level"] == "warning"
    assert s["source"] == "meminfo" and s["rss_limit"] == 8 * GiB and s["gate"] == "critical"
    assert s["level_changes"] == 1 and s["rejections"] == 0 and s["age"] == 0.0
    assert all(isinstance(v, (str, int, float, type(None))) for v in s.values())
    assert json.loads(json.dumps(s)) == s
    assert memory.STATUS_OF_LEVEL[s["level"]] == "degraded"
    assert "api-mem" in repr(mon) and "warning" in repr(mon)


def test_level_changes_are_telemetry_events_and_log_records(tree, caplog):
    got, own = [], []
    sg.on("memory.level_change", got.append)
    try:
        mon = tree.monitor(name="m1")
        mon.on("memory.*", own.append)
        with caplog.at_level(logging.INFO, logger="sluicegate.memory"):
            drive(tree, mon, [0.75, 0.72, 0.9, 0.5])
        mon.off("memory.*", own.append)
        drive(tree, mon, [0.95])
    finally:
        sg.off("memory.level_change", got.append)
    path = [(e.measurements["old"], e.measurements["new"]) for e in got]
    assert path == [("ok", "warning"), ("warning", "critical"), ("critical", "ok"), ("ok", "critical")]
    assert [(e.measurements["old"], e.measurements["new"]) for e in own] == path[:3]
    e = got[1]
    assert (e.name, e.kind, e.policy, e.pid) == ("memory.level_change", "memory", "m1", os.getpid())
    assert e.measurements["fraction"] == pytest.approx(0.9) and e.measurements["source"] == "meminfo"
    # into warning or critical at WARNING, back to ok at INFO (the last one: WARNING, which propagates anyway)
    records = [r for r in caplog.records if r.name == "sluicegate.memory"]
    assert [r.levelname for r in records] == ["WARNING", "WARNING", "INFO", "WARNING"]
    assert "old='warning' new='critical'" in records[1].getMessage()
    with pytest.raises(sg.ConfigError):
        mon.on("rate.denied", got.append)


def test_a_listener_may_read_the_monitor(tree):
    mon = tree.monitor(interval=0)
    seen = []
    mon.on("memory.level_change", lambda e: seen.append(mon.level))
    drive(tree, mon, [0.9])
    assert seen == ["critical"]


# ---- processes, threads, pickling -----------------------------------------------------------------
def test_pickles_by_its_options(tree):
    mon = tree.monitor(0.6, 0.9, hysteresis=0.02, rss_limit=GiB, interval=0.25, gate="warning", name="p")
    twin = pickle.loads(pickle.dumps(mon))
    assert (twin.warning, twin.critical, twin.hysteresis, twin.rss_limit, twin.interval, twin.gate, twin.name) == (
        0.6, 0.9, 0.02, GiB, 0.25, "warning", "p",
    )
    assert twin.reading().source == mon.reading().source


@pytest.mark.skipif(not hasattr(os, "fork") or not PROCFS, reason="fork, and /proc to check against")
def test_a_forked_child_reads_its_own_rss_at_its_first_call():
    mon = sg.MemoryMonitor(interval=3600.0, rss_limit=1 << 40)
    parents = mon.reading()
    hold = threading.Lock()
    mon._lock = hold  # a parent thread holding the lock at fork must not freeze the child's readings
    hold.acquire()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            ballast = b"\x01" * (64 << 20)
            r = mon.reading()
            own = int(open("/proc/self/statm").read().split()[1]) * memory.PAGE_SIZE
            # a fresh reading, of the child's own RSS (which counts the ballast)
            code = 0 if r is not parents and abs(r.rss_bytes - own) < (8 << 20) and own > len(ballast) else 2
        finally:
            os._exit(code)
    hold.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads_share_one_monitor(tree):
    mon = tree.monitor(interval=0)
    errors = []

    def hammer():
        try:
            for _ in range(300):
                assert mon.level in memory.LEVELS
                mon.admit()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for f in (0.9, 0.1, 0.75, 0.3):
        tree.set_system(f)
    for t in threads:
        t.join(30)
    assert not errors
    assert mon.refresh().level == "ok"


# ---- the real machine ---------------------------------------------------------------------------
def test_real_machine_smoke():
    mon = sg.MemoryMonitor()
    r = mon.reading()
    assert r.level in memory.LEVELS and mon.level in memory.LEVELS
    assert r.source in ("cgroup", "meminfo", "psutil")
    assert 0 < r.used_bytes <= r.limit_bytes and 0 < r.fraction <= 1
    assert r.rss_bytes > 10 << 20  # an interpreter with sluicegate loaded
    system = sg.MemoryMonitor(source="system").reading()
    if os.path.exists("/proc/meminfo"):
        assert system.source == "meminfo"
        total_kb = int(open("/proc/meminfo").read().split("MemTotal:")[1].split()[0])
        assert system.limit_bytes == total_kb * KB
        if r.source == "meminfo":
            assert r.limit_bytes == system.limit_bytes
    if PROCFS:
        statm = open("/proc/self/statm").read().split()
        assert r.rss_bytes == pytest.approx(int(statm[1]) * os.sysconf("SC_PAGE_SIZE"), rel=0.1)


CHILD = textwrap.dedent(
    """
    import json, sys
    import sluicegate as sg
    base = sg.MemoryMonitor(interval=0, rss_limit=1 << 40).reading().rss_bytes
    mon = sg.MemoryMonitor(0.70, 0.85, interval=0, rss_limit=base + (160 << 20), source="process")
    out = [(mon.level, mon.reading().rss_bytes)]
    ballast = b"\\x01" * (200 << 20)          # written, so every page is resident
    out.append((mon.level, mon.reading().rss_bytes))
    try:
        mon.check()
        out.append(("passed", 0))
    except sg.MemoryPressure as exc:
        out.append(("refused", round(exc.fraction, 3)))
    del ballast                                # a large block goes back to the OS at once
    out.append((mon.level, mon.reading().rss_bytes))
    print(json.dumps({"base": base, "out": out}))
    """
)


@pytest.mark.skipif(not CURRENT_RSS, reason="needs /proc or psutil for the current RSS")
def test_rss_source_tracks_a_child_process_that_allocates():
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    base, ((lv0, rss0), (lv1, rss1), (verdict, fraction), (lv2, rss2)) = got["base"], got["out"]
    assert lv0 == "ok" and abs(rss0 - base) < 32 << 20
    assert lv1 == "critical" and rss1 - rss0 >= 190 << 20
    assert verdict == "refused" and fraction > 1.0
    assert lv2 == "ok" and rss2 < rss1 - (150 << 20)

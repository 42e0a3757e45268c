"""The memory gate on the hot path: MemoryMonitor.check() with a cached reading, against
a rate limiter's allow() (the next layer of a Guard) and against reading memory on every
call the way code without a monitor does (psutil.virtual_memory()), in the same run.

Targets: a cached check() costs at most 3x lim.allow() (a Python method with a clock read
against a compiled one: about 1.6x in instructions, 2-2.5x in time); psutil.virtual_memory()
per call costs at least 50x a cached check(). A fresh reading (refresh()) is timed and printed:
it is what one call per interval pays."""

from __future__ import annotations

import psutil

import sluicegate as sg

N = 100_000


def test_cached_check_cost(ratios):
    mon = sg.MemoryMonitor(interval=3600.0)  # every call below uses the cached reading
    store = sg.SharedStore(capacity=1024)
    try:
        lim = sg.RateLimiter("bench-memory", "1000000000/second", store=store)
        check, admit, allow = mon.check, mon.admit, lim.allow
        empty = ratios.per_call(lambda: None, N)
        t_check = ratios.per_call(lambda: check(), N) - empty
        t_admit = ratios.per_call(lambda: admit(), N) - empty
        t_level = ratios.per_call(lambda: mon.level, N) - empty
        t_allow = ratios.per_call(lambda: allow("k"), N) - empty
        t_psutil = ratios.per_call(psutil.virtual_memory, 2000, repeat=5) - empty
        t_fresh = ratios.per_call(mon.refresh, 2000, repeat=5) - empty
    finally:
        store.close()
    print(
        f"\n  memory gate: check() {t_check * 1e9:.0f} ns, admit() {t_admit * 1e9:.0f} ns, "
        f"level {t_level * 1e9:.0f} ns (cached; the loop's lambda subtracted); lim.allow {t_allow * 1e9:.0f} ns; "
        f"a fresh reading {t_fresh * 1e6:.1f} us ({mon.reading().source}); "
        f"psutil.virtual_memory() {t_psutil * 1e6:.1f} us"
    )
    r = t_check / t_allow
    ratios.add("memory check() cached / lim.allow()", r, "<= 3", r <= 3)
    r = t_psutil / t_check
    ratios.add("psutil.virtual_memory() / memory check() cached", r, ">= 50", r >= 50)

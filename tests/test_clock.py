"""The rate limiter's fast clock: CLOCK_MONOTONIC extrapolated from the TSC where the
kernel keeps time with it.  It must stay on the precise clock in every process (each
calibrates its own anchor) and can be switched off."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from conftest import run_procs

from sluicegate import _core

TOLERANCE_NS = 5_000  # far below a wrong slope (ms off) or a torn anchor (anything)


def assert_tracks_monotonic(seconds: float) -> int:
    """Bracket fast readings between precise ones for a while (sleeping now and then,
    so the anchor is re-taken many times); returns the number of samples."""
    mono, fast = _core.monotonic_ns, _core.fast_monotonic_ns
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        a, f, b = mono(), fast(), mono()
        assert a - TOLERANCE_NS <= f <= b + TOLERANCE_NS, (a, f, b, _core.fast_clock_mode())
        n += 1
        if n % 2000 == 0:
            time.sleep(0.002)
    return n


def _child(seconds: float) -> None:
    assert_tracks_monotonic(seconds)


def test_fast_clock_tracks_the_monotonic_clock():
    # 0.4 s covers calibration (2 ms) and dozens of 10 ms re-anchors
    assert assert_tracks_monotonic(0.4) > 10_000


def test_fast_clock_in_child_processes(mp_ctx):
    """A forked child inherits the parent's anchor, a spawned one calibrates afresh."""
    _core.fast_monotonic_ns()
    run_procs(mp_ctx, _child, [(0.2,), (0.2,)])


def test_fast_clock_can_be_switched_off():
    code = ("from sluicegate import _core as c\n"
            "a = c.monotonic_ns(); f = c.fast_monotonic_ns(); b = c.monotonic_ns()\n"
            "assert a <= f <= b, (a, f, b)\n"
            "print(c.fast_clock_mode())\n")
    env = {**os.environ, "SLUICEGATE_CLOCK": "precise"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "precise"


def test_fast_clock_mode_names_the_source():
    expect = "precise"
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            tsc = f.read().strip() == "tsc"
    except OSError:
        tsc = False
    if tsc and sys.platform.startswith("linux") and os.uname().machine == "x86_64" \
            and os.environ.get("SLUICEGATE_CLOCK") != "precise":
        expect = "tsc"
    assert _core.fast_clock_mode() == expect

"""Benchmarks report ratios against peers measured in the same run.

`ratios` collects (what, ratio, target) rows; the session prints them as one table at
the end, so a run reads as a scorecard rather than a page of raw timings."""

from __future__ import annotations

import os

# numpy's OpenBLAS threads spin in the background and steal a core from the code
# under test on a small machine; nothing here uses BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import platform
import time
from collections.abc import Callable

import pytest

_rows: list[tuple[str, float, str, bool]] = []


class Ratios:
    def per_call(self, fn: Callable[[], object], n: int, repeat: int = 7) -> float:
        """Best-of-repeat seconds per call of fn over n calls (fn is called n times in a tight loop)."""
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, time.perf_counter() - t0)
        return best / n

    def add(self, what: str, ratio: float, target: str, ok: bool) -> None:
        _rows.append((what, ratio, target, ok))
        print(f"\n  {what}: {ratio:.2f}x (target {target}) {'OK' if ok else 'MISSED'}")


@pytest.fixture(scope="session")
def ratios() -> Ratios:
    return Ratios()


def pytest_terminal_summary(terminalreporter):
    if not _rows:
        return
    out = os.environ.get("SLUICEGATE_RATIOS_JSON")
    if out:  # .ci/run: compared with benchmarks/baseline_ratios.json (compare_ratios.py)
        with open(out, "w") as f:
            json.dump([{"what": w, "ratio": r, "target": t, "ok": ok} for w, r, t, ok in _rows], f, indent=1)
    tr = terminalreporter
    tr.section("sluicegate ratios (same run, same machine)")
    tr.write_line(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    width = max(len(r[0]) for r in _rows)
    for what, ratio, target, ok in _rows:
        tr.write_line(f"{what.ljust(width)}  {ratio:8.2f}x   target {target:<10} {'OK' if ok else 'MISSED'}")

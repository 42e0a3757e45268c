"""`sluicegate demo`: N worker processes hammer ONE shared rate limiter.

Each worker is a separate process attached to a named store; they all call
limiter.allow() on the same key as fast as they can.  The parent prints, live,
the admissions per worker and in total against what the limit allows, and the
decisions per second; at the end it checks that the total admitted never went
above the limit (burst + rate x elapsed for a token bucket)."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import ConfigError
from .limiter import RateLimiter
from .store import SharedStore

KEY = "demo"
FLUSH_EVERY = 512  # calls between two updates of a worker's shared counters


@dataclass
class DemoConfig:
    workers: int = 4
    seconds: float = 5.0
    rate: str = "2000/second"
    algorithm: str = "token_bucket"
    burst: int | None = None
    start_method: str = "spawn"
    refresh: float = 0.5
    live: bool | None = None  # None: redraw in place when stdout is a terminal


def _c(store: SharedStore, what: str) -> Any:
    return store.counter(f"demo.{what}")


def _worker(store_name: str, idx: int, rate: str, algorithm: str, burst: int | None) -> None:
    """One hammering process (module level so that spawn can import it)."""
    store = SharedStore(store_name)
    lim = RateLimiter("demo", rate, algorithm=algorithm, burst=burst, store=store)
    admitted_c, decided_c = _c(store, f"w{idx}.admitted"), _c(store, f"w{idx}.decided")
    stop_c, ready, go = _c(store, f"w{idx}.stop"), _c(store, "ready"), _c(store, "go")
    ready.add(1)
    while go.value == 0:  # the parent sets go to the deadline (store ns) once everyone is ready
        time.sleep(0.001)
    t_end = go.value
    allow, now = lim.allow, lim._engine.now_ns
    admitted = decided = 0
    while now() < t_end:
        n = 0
        for _ in range(FLUSH_EVERY):
            n += allow(KEY)
        admitted_c.add(n)
        decided_c.add(FLUSH_EVERY)
        admitted += n
        decided += FLUSH_EVERY
    stop_c.add(now())  # every admission of this worker happened before this instant
    store.close()


def _fmt_rate(x: float) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= k:
            return f"{x / k:.2f}{unit}"
    return f"{x:.0f}"


def _allowed_max(lim: RateLimiter, t0: int, t1: int) -> tuple[int, str]:
    """The most the limit can admit between store times t0 and t1 (ns), starting full."""
    r = lim.rates[0]
    span = max(0, t1 - t0)
    if lim.algorithm == "token_bucket":
        burst = lim.burst if lim.burst is not None else r.limit
        interval = -(-r.period_ns // r.limit)
        return burst + span // interval, f"burst {burst} + {r} x {span / 1e9:.2f}s"
    windows = t1 // r.period_ns - t0 // r.period_ns + 1
    if lim.algorithm == "fixed_window":
        return r.limit * windows, f"{r.limit} x {windows} window(s)"
    # sliding: at most limit per window, plus what the previous-window weighting lets through
    return r.limit * (windows + 1), f"<= {r.limit} x ({windows}+1) windows"


def run_demo(cfg: DemoConfig, out: TextIO = sys.stdout) -> int:
    if cfg.workers < 1 or cfg.workers > 256:
        raise ConfigError(f"workers must be between 1 and 256, got {cfg.workers}")
    if not 0 < cfg.seconds <= 3600:
        raise ConfigError(f"seconds must be in (0, 3600], got {cfg.seconds}")
    live = out.isatty() if cfg.live is None else cfg.live
    name = f"sluicegate-demo-{os.getpid()}"
    store = SharedStore(name, capacity=1024, policies=3 * cfg.workers + 16)  # a counter is a directory entry
    procs: list[Any] = []
    try:
        lim = RateLimiter("demo", cfg.rate, algorithm=cfg.algorithm, burst=cfg.burst, store=store)
        ctx: Any = mp.get_context(cfg.start_method)
        procs = [
            ctx.Process(target=_worker, args=(name, i, cfg.rate, cfg.algorithm, cfg.burst), daemon=True)
            for i in range(cfg.workers)
        ]
        rates = ", ".join(str(r) for r in lim.rates)
        burst = f", burst {lim.burst}" if lim.burst is not None else ""
        print(
            f"sluicegate demo: {cfg.workers} worker processes ({cfg.start_method}) share ONE limiter "
            f"[{rates}] ({lim.algorithm}{burst}) on store {name!r}, key {KEY!r}, for {cfg.seconds:g}s",
            file=out,
        )
        for p in procs:
            p.start()
        ready = _c(store, "ready")
        wait_until = time.monotonic() + 60
        while ready.value < cfg.workers:
            if time.monotonic() > wait_until or any(p.exitcode not in (None, 0) for p in procs):
                print("workers failed to start", file=out)
                return 1
            time.sleep(0.005)
        t0 = lim._engine.now_ns()
        t_end = t0 + int(cfg.seconds * 1e9)
        _c(store, "go").add(t_end)

        adm = [_c(store, f"w{i}.admitted") for i in range(cfg.workers)]
        dec = [_c(store, f"w{i}.decided") for i in range(cfg.workers)]
        last_dec, last_t, drawn = [0] * cfg.workers, time.monotonic(), 0
        hard_stop = time.monotonic() + cfg.seconds + 30
        while True:
            time.sleep(cfg.refresh)
            done = all(not p.is_alive() for p in procs)
            now_t = time.monotonic()
            a = [c.value for c in adm]
            d = [c.value for c in dec]
            dt = max(now_t - last_t, 1e-9)
            if not done or not drawn:  # the final frame keeps the last measured rates
                per_s = [(d[i] - last_dec[i]) / dt for i in range(cfg.workers)]
            last_dec, last_t = d, now_t
            if done:  # workers finish their last call after t_end: judge against when they stopped
                now_ns = max(_c(store, f"w{i}.stop").value for i in range(cfg.workers))
            else:
                now_ns = lim._engine.now_ns()
            most, why = _allowed_max(lim, t0, now_ns)
            lines = [f"  t={(now_ns - t0) / 1e9:5.2f}s   worker   admitted   decisions/s"]
            lines += [f"              #{i:<4} {a[i]:>9}   {_fmt_rate(per_s[i]):>10}" for i in range(cfg.workers)]
            lines.append(
                f"              total {sum(a):>9}   {_fmt_rate(sum(per_s)):>10}   "
                f"(limit allows {most}: {why})"
            )
            if live and drawn:
                out.write(f"\x1b[{drawn}F")
            out.write("\n".join(line + ("\x1b[K" if live else "") for line in lines) + "\n")
            out.flush()
            drawn = len(lines)
            if done or now_t > hard_stop:
                break
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        if any(p.exitcode != 0 for p in procs):
            print(f"a worker failed: exit codes {[p.exitcode for p in procs]}", file=out)
            return 1

        admitted = sum(c.value for c in adm)
        decided = sum(c.value for c in dec)
        t_stop = max(_c(store, f"w{i}.stop").value for i in range(cfg.workers))
        most, why = _allowed_max(lim, t0, t_stop)
        elapsed = (t_stop - t0) / 1e9
        st = lim.stats()
        ok = admitted <= most and st["allowed"] == admitted and st["total"] == decided
        print(
            f"\nsummary: {decided:,} decisions in {elapsed:.2f}s ({_fmt_rate(decided / max(elapsed, 1e-9))}/s "
            f"across {cfg.workers} processes)\n"
            f"  admitted {admitted:,}; the limit allows at most {most:,} ({why}) -> "
            f"{100 * admitted / max(most, 1):.2f}% of the allowance, "
            f"{'never above it' if admitted <= most else 'ABOVE IT'}\n"
            f"  per worker: {', '.join(str(c.value) for c in adm)}\n"
            f"  limiter stats (shared by all processes): allowed={st['allowed']:,} denied={st['denied']:,}\n"
            f"  {'OK' if ok else 'MISMATCH'}: one limit, shared exactly by every process",
            file=out,
        )
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=out)
        return 130
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        store.close()
        SharedStore.unlink(name, missing_ok=True)

"""Rate limiter benchmarks: sluicegate vs peers measured in the same run.

Run:  PYTHONPATH=src python -m pytest benchmarks/bench_limiter.py -q -s
(peers: pip install 'sluicegate[bench]' -> limits, pyrate-limiter, throttled-py, token-bucket)

Each measured round makes N calls through the same Python loop, so per-call figures
include an identical loop overhead for everyone (the bare no-op method too).
The last test prints the ratios against the issue's targets."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import sluicegate as sg

N = 10_000  # calls per round
ROUNDS = 30
HOT = ["user:42"] * N
ROTATING = [f"user:{i}" for i in range(N)]
BIG = 10**9  # limits high enough that every call is admitted: the admit path is measured

RESULTS: dict[tuple[str, str], float] = {}  # (scenario, impl) -> ns per decision


class NoOp:
    def allow(self, key: str, cost: int = 1) -> bool:
        return True


def _loop(fn: Callable[[Any], Any], keys: list[str]) -> Callable[[], None]:
    def run() -> None:
        for k in keys:
            fn(k)

    return run


def _measure(benchmark: Any, scenario: str, impl: str, fn: Callable[[], None], per_round: int = N) -> None:
    benchmark.group = scenario
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    RESULTS[(scenario, impl)] = benchmark.stats.stats.min / per_round * 1e9


@pytest.fixture(scope="module")
def store():
    s = sg.SharedStore(capacity=1 << 16)
    yield s
    s.close()


def make_impl(name: str, store: sg.SharedStore) -> Callable[[Any], Any]:
    if name == "sluicegate":
        return sg.RateLimiter(f"bench-{uuid.uuid4().hex}", f"{BIG}/second", store=store).allow
    if name == "noop":
        return NoOp().allow
    if name == "token-bucket":
        import token_bucket

        return token_bucket.Limiter(BIG, BIG, token_bucket.MemoryStorage()).consume
    if name == "limits-moving":
        from limits import parse, storage, strategies

        lim, item = strategies.MovingWindowRateLimiter(storage.MemoryStorage()), parse(f"{BIG}/second")
        return lambda k: lim.hit(item, k)
    if name == "limits-fixed":
        from limits import parse, storage, strategies

        lim, item = strategies.FixedWindowRateLimiter(storage.MemoryStorage()), parse(f"{BIG}/second")
        return lambda k: lim.hit(item, k)
    if name == "pyrate-limiter":
        from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

        plim = Limiter(InMemoryBucket([Rate(BIG, Duration.SECOND)]))
        return lambda k: plim.try_acquire(k, blocking=False)
    if name == "throttled-py":
        from throttled import Throttled, rate_limiter
        from throttled import store as tstore

        th = Throttled(using="token_bucket", quota=rate_limiter.per_sec(BIG, burst=BIG), store=tstore.MemoryStore())
        return lambda k: th.limit(k)
    raise ValueError(name)


IMPLS = ["sluicegate", "noop", "token-bucket", "limits-moving", "limits-fixed", "pyrate-limiter", "throttled-py"]
SLOW = {"limits-moving", "limits-fixed", "pyrate-limiter", "throttled-py"}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scenario", ["hot key", "10k rotating keys"])
def test_allow(benchmark, store, scenario, impl):
    if impl != "sluicegate" and impl != "noop":
        pytest.importorskip(impl.split("-")[0].replace("token", "token_bucket").replace("pyrate", "pyrate_limiter")
                            .replace("throttled", "throttled"))
    fn = make_impl(impl, store)
    keys = HOT if scenario == "hot key" else ROTATING
    if impl in SLOW:  # microseconds per call: fewer calls per round keeps the file well under a minute
        keys = keys[:1000] if scenario == "hot key" else keys[::10]
    _measure(benchmark, scenario, impl, _loop(fn, keys), per_round=len(keys))


@pytest.mark.parametrize("scenario", ["hot key", "10k rotating keys"])
def test_allow_many(benchmark, store, scenario):
    lim = sg.RateLimiter(f"bench-many-{uuid.uuid4().hex}", f"{BIG}/second", store=store)
    keys = HOT if scenario == "hot key" else ROTATING
    _measure(benchmark, f"allow_many {scenario}", "sluicegate", lambda: lim.allow_many(keys))


# -- two processes on distinct keys vs one ---------------------------------------------------------
def _hammer(store_name: str, lim_name: str, idx: int, seconds: float) -> None:
    store = sg.SharedStore(store_name)
    lim = sg.RateLimiter(lim_name, f"{BIG}/second", store=store)
    keys = [f"p{idx}:{i}" for i in range(1000)]
    allow = lim.allow
    go = store.counter("go")
    while go.value == 0:
        time.sleep(0.0005)
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        for k in keys:
            allow(k)
        n += len(keys)
    store.counter(f"done.{idx}").add(n)


def _aggregate(nprocs: int, seconds: float = 1.5) -> float:
    name = f"bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    store = sg.SharedStore(name, capacity=1 << 14)
    try:
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=_hammer, args=(name, "lim", i, seconds)) for i in range(nprocs)]
        for p in procs:
            p.start()
        time.sleep(0.3)
        store.counter("go").add(1)
        for p in procs:
            p.join(seconds + 30)
            assert p.exitcode == 0
        return sum(store.counter(f"done.{i}").value for i in range(nprocs)) / seconds
    finally:
        store.close()
        sg.SharedStore.unlink(name, missing_ok=True)


def test_two_processes_vs_one():
    # interleaved and best-of-3, so a burst of load from elsewhere on the host hits both sides alike
    ones, twos = [], []
    for _ in range(3):
        ones.append(_aggregate(1, 1.0))
        twos.append(_aggregate(2, 1.0))
    one, two = max(ones), max(twos)
    RESULTS[("procs", "1 process decisions/s")] = one
    RESULTS[("procs", "2 processes decisions/s")] = two


# -- paired re-measurement: robust ratios on a busy host ------------------------------------------
def _paired(fns: dict[str, Callable[[], None]], per_round: dict[str, int], reps: int = 25) -> dict[str, float]:
    """Alternate the candidates round by round and keep each one's best round, so that
    load from elsewhere on the host (2 shared cores) hits every candidate alike."""
    best = {k: float("inf") for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            fn()  # untimed pass: each candidate is measured with its own data warm in cache
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return {k: best[k] / per_round[k] * 1e9 for k in fns}


def test_paired_ratios(store):
    lim = sg.RateLimiter(f"bench-paired-{uuid.uuid4().hex}", f"{BIG}/second", store=store)
    tb = make_impl("token-bucket", store) if _has("token_bucket") else None
    noop = NoOp().allow
    for scenario, keys in (("hot key", HOT), ("10k rotating keys", ROTATING)):
        fns = {"sluicegate": _loop(lim.allow, keys), "noop": _loop(noop, keys),
               "allow_many": lambda keys=keys: lim.allow_many(keys)}
        if tb is not None:
            fns["token-bucket"] = _loop(tb, keys)
        res = _paired(fns, {k: len(keys) for k in fns})
        for k, v in res.items():
            RESULTS[(f"paired {scenario}", k)] = v


def _has(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


# -- summary ---------------------------------------------------------------------------------------
def test_zz_summary(capsys):
    r = RESULTS
    lines = ["", "sluicegate rate limiter benchmark (ns per decision, best round; ratio = peer / sluicegate)",
             f"machine: {os.cpu_count()} CPUs, {os.uname().machine}, Python {os.sys.version.split()[0]}"]
    for scenario in ("hot key", "10k rotating keys"):
        sgv = r.get((scenario, "sluicegate"))
        if sgv is None:
            continue
        lines.append(f"\n  allow(), {scenario}: sluicegate {sgv:.0f} ns")
        for impl in IMPLS[1:]:
            v = r.get((scenario, impl))
            if v is None:
                continue
            if impl == "noop":
                lines.append(f"    {'bare no-op method':<18} {v:>9.0f} ns   sluicegate/no-op = {sgv / v:.2f}x "
                             f"(target <= 3x: {'OK' if sgv / v <= 3 else 'MISSED'})")
            else:
                target = 5 if impl == "token-bucket" else 10
                lines.append(f"    {impl:<18} {v:>9.0f} ns   {v / sgv:6.1f}x faster "
                             f"(target >= {target}x: {'OK' if v / sgv >= target else 'MISSED'})")
        many = r.get((f"allow_many {scenario}", "sluicegate"))
        if many is not None:
            lines.append(f"    allow_many        {many:>9.1f} ns   {sgv / many:6.1f}x cheaper per decision "
                         f"(target >= 5x: {'OK' if sgv / many >= 5 else 'MISSED'})")
    for scenario in ("hot key", "10k rotating keys"):
        p = {k[1]: v for k, v in r.items() if k[0] == f"paired {scenario}"}
        if "sluicegate" in p:
            sgv = p["sluicegate"]
            tbv = ""
            if "token-bucket" in p:
                tbv = f", token-bucket {p['token-bucket']:.0f} ns ({p['token-bucket'] / sgv:.1f}x)"
            lines.append(f"\n  paired (alternating rounds), {scenario}: sluicegate {sgv:.0f} ns, "
                         f"no-op {p['noop']:.0f} ns "
                         f"({sgv / p['noop']:.2f}x), allow_many {p['allow_many']:.1f} ns "
                         f"({sgv / p['allow_many']:.1f}x cheaper){tbv}")
    one, two = r.get(("procs", "1 process decisions/s")), r.get(("procs", "2 processes decisions/s"))
    if one and two:
        lines.append(f"\n  distinct keys: 1 process {one / 1e6:.2f} M/s, 2 processes {two / 1e6:.2f} M/s aggregate "
                     f"-> {two / one:.2f}x (target >= 1.5x: {'OK' if two / one >= 1.5 else 'MISSED'}; "
                     f"load average {os.getloadavg()[0]:.1f})")
    with capsys.disabled():
        print("\n".join(lines))

"""Real processes (fork and spawn) racing on one shared limiter: exact totals, a
SIGKILLed racer leaves the key usable, and stats are shared."""

from __future__ import annotations

import ast
import os
import signal
import time

import pytest
from conftest import run_procs, unique_name

import sluicegate as sg

ALGORITHMS = ["token_bucket", "fixed_window", "sliding_window"]
BUDGET = 10_000


def _barrier(store: sg.SharedStore, name: str, n: int) -> None:
    """Wait (bounded) until n processes reached this point, so they really race."""
    c = store.counter(name)
    c.add(1)
    deadline = time.monotonic() + 30
    while c.value < n and time.monotonic() < deadline:
        time.sleep(0.0005)


def race_worker(store_name: str, lim_name: str, algorithm: str, attempts: int, idx: int, batch: bool) -> None:
    store = sg.SharedStore(store_name)
    lim = sg.RateLimiter(lim_name, f"{BUDGET}/day", algorithm=algorithm, store=store)
    _barrier(store, f"{lim_name}.ready", 4)
    n = 0
    if batch:
        keys = ["hot"] * 100
        for _ in range(attempts // 100):
            n += int(lim.allow_many(keys).sum())
    else:
        allow = lim.allow
        for _ in range(attempts):
            if allow("hot"):
                n += 1
    store.counter(f"{lim_name}.admitted.{idx}").add(n)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("batch", [False, True], ids=["allow", "allow_many"])
def test_four_processes_admit_exactly_the_budget(mp_ctx, store, store_name, algorithm, batch):
    lim_name = unique_name("race")
    lim = sg.RateLimiter(lim_name, f"{BUDGET}/day", algorithm=algorithm, store=store)
    attempts = 6000  # 24,000 attempts in total for a budget of 10,000
    run_procs(mp_ctx, race_worker, [(store_name, lim_name, algorithm, attempts, i, batch) for i in range(4)])
    per_worker = [store.counter(f"{lim_name}.admitted.{i}").value for i in range(4)]
    assert sum(per_worker) == BUDGET, per_worker
    assert lim.peek("hot").remaining == 0
    assert not lim.allow("hot")
    # stats are shared: every process's decisions are counted, exactly
    st = lim.stats()
    assert st["allowed"] == BUDGET
    assert st["denied"] == 4 * attempts - BUDGET + 1
    assert st["total"] == 4 * attempts + 1


def victim(store_name: str, lim_name: str, algorithm: str) -> None:
    """Hammers the hot key (one call in 20) and creates fresh keys in between, so a
    kill lands anywhere: in a CAS on the hot key, in a slot claim, in a counter."""
    store = sg.SharedStore(store_name)
    lim = sg.RateLimiter(lim_name, f"{BUDGET}/day", algorithm=algorithm, store=store)
    progress = store.counter(f"{lim_name}.progress")
    deadline = time.monotonic() + 30
    i = 0
    while time.monotonic() < deadline:
        lim.allow("hot") if i % 20 == 0 else lim.allow(f"fresh:{i}")
        progress.add(1)
        i += 1


def survivor(store_name: str, lim_name: str, algorithm: str, attempts: int, idx: int) -> None:
    store = sg.SharedStore(store_name)
    lim = sg.RateLimiter(lim_name, f"{BUDGET}/day", algorithm=algorithm, store=store)
    n = sum(1 for _ in range(attempts) if lim.allow("hot"))
    store.counter(f"{lim_name}.survivor.{idx}").add(n)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sigkilled_racer_leaves_key_usable(mp_ctx, store_name, algorithm):
    store = sg.SharedStore(store_name, capacity=1 << 16)
    try:
        lim_name = unique_name("kill")
        lim = sg.RateLimiter(lim_name, f"{BUDGET}/day", algorithm=algorithm, store=store)
        p = mp_ctx.Process(target=victim, args=(store_name, lim_name, algorithm))
        p.start()
        deadline = time.monotonic() + 30
        while lim.peek("hot").remaining > BUDGET - 300 and time.monotonic() < deadline and p.is_alive():
            time.sleep(0.001)
        assert p.is_alive(), "victim died on its own"
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
        consumed_by_victim = BUDGET - lim.peek("hot").remaining
        assert 300 <= consumed_by_victim < BUDGET

        # the key is usable: survivors share exactly what the victim left
        remaining = lim.peek("hot").remaining
        run_procs(mp_ctx, survivor, [(store_name, lim_name, algorithm, 5000, i) for i in range(3)])
        got = sum(store.counter(f"{lim_name}.survivor.{i}").value for i in range(3))
        assert got == remaining
        assert lim.peek("hot").remaining == 0

        # keys the victim may have been creating when killed are usable too, and a
        # claim it abandoned is taken over (stale after 200 ms), never stuck
        last = store.counter(f"{lim_name}.progress").value
        time.sleep(0.3)
        near = [f"fresh:{i}" for i in range(max(0, last - 3), last + 4) if i % 20]
        for k in near:
            assert isinstance(lim.allow(k), bool)
        for i in range(200):
            assert lim.allow(f"new-after-kill:{i}")
        assert store.stats()["claiming"] == 0
    finally:
        store.close()


def stats_worker(store_name: str, lim_name: str, idx: int) -> None:
    store = sg.SharedStore(store_name)
    lim = sg.RateLimiter(lim_name, "5/day", store=store)
    for _ in range(10):
        lim.allow(f"user:{idx}")  # 5 admitted, 5 denied per process


def test_stats_are_shared_by_processes(mp_ctx, store, store_name):
    lim_name = unique_name("stats")
    lim = sg.RateLimiter(lim_name, "5/day", store=store)
    run_procs(mp_ctx, stats_worker, [(store_name, lim_name, i) for i in range(3)])
    assert lim.stats() == {"kind": "limiter", "name": lim.name, "allowed": 15, "denied": 15, "total": 30}
    assert lim.allow("user:parent")
    assert lim.stats() == {"kind": "limiter", "name": lim.name, "allowed": 16, "denied": 15, "total": 31}


def pickled_worker(lim: sg.RateLimiter, n: int, out: str) -> None:
    lim.store.counter(out).add(sum(1 for _ in range(n) if lim.allow("k")))


def test_limiter_pickles_into_spawned_children(mp_ctx, store, store_name):
    lim = sg.RateLimiter(unique_name("pk"), "100/day", store=store)
    run_procs(mp_ctx, pickled_worker, [(lim, 60, "pk.out") for _ in range(2)])
    assert store.counter("pk.out").value == 100
    assert lim.peek("k").remaining == 0


# -- window boundaries: a decision never uses a time older than the state it replaces --
def window_worker(store_name: str, lim_name: str, algorithm: str, seconds: float, out: str) -> None:
    """Hammer a 10 ms window; count the admissions per window.  An admission's window
    ends reset_after after the decision, which came after t0 and (when the call was
    quick) well within a window of it, so the end is the multiple of the period
    nearest t0 + reset_after.  Slow calls are left out: that can only hide excess."""
    store = sg.SharedStore(store_name)
    lim = sg.RateLimiter(lim_name, sg.Rate(20, 0.01), algorithm=algorithm, store=store)
    _barrier(store, f"{lim_name}.ready", 3)
    now, check, period = lim._engine.now_ns, lim.check, 10_000_000
    counts: dict[int, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = now()
        d = check("k")
        if d.allowed and now() - t0 < period // 4:  # not preempted for long: t0 is close to the decision
            w = round((t0 + d.reset_after * 1e9) / period) - 1
            counts[w] = counts.get(w, 0) + 1
    with open(out, "w") as f:
        f.write(repr(counts))


def test_fixed_window_is_never_rolled_back_by_a_stalled_process(mp_ctx, store, store_name, tmp_path):
    """Three processes on two cores: they are preempted between reading the clock and
    writing the key all the time.  A process that wrote its decision with a time from
    the previous window used to roll the key back to that window, and the next window
    then handed out its budget a second time."""
    lim_name = unique_name("windows")
    sg.RateLimiter(lim_name, sg.Rate(20, 0.01), algorithm="fixed_window", store=store)
    outs = [str(tmp_path / f"w{i}") for i in range(3)]
    run_procs(mp_ctx, window_worker, [(store_name, lim_name, "fixed_window", 1.5, outs[i]) for i in range(3)])
    total: dict[int, int] = {}
    for o in outs:
        with open(o) as f:
            for w, n in ast.literal_eval(f.read()).items():
                total[w] = total.get(w, 0) + n
    over = {w: n for w, n in total.items() if n > 20}
    assert len(total) > 50, "the workers did not overlap long enough to test anything"
    assert not over, f"windows that admitted more than their limit of 20: {over}"

"""A named Guard shared by real worker processes (fork and spawn): its cap holds across
them, its counts sum exactly over every process, and a process that never made it (the
CLI) reads them from the store.  The control, private guards, counts only its own."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import note_peak, run_procs

import sluicegate as sg

CALLS = 300
WORKERS = 4


def worker(store_name: str, private: bool) -> None:
    store = sg.SharedStore(store_name)
    cap = sg.ConcurrencyLimiter("procs-cap", 2, store=store)
    lim = sg.RateLimiter("procs-lim", f"{CALLS * WORKERS // 2}/hour", store=store)
    cur, peak = store.counter("cur"), store.counter("peak")
    g = sg.Guard(None if private else "procs", limiter=lim, key="k", cap=cap, cap_timeout=5.0,
                 fallback=lambda exc: exc.layer, store=store)

    def inside() -> str:
        note_peak(cur, peak)
        cur.add(-1)
        return "ok"

    seen: dict[str, int] = {}
    for _ in range(CALLS):
        r = g.call(inside)
        seen[r] = seen.get(r, 0) + 1
    for k, v in seen.items():
        store.counter(f"seen-{k}").add(v)
    if g.stats()["calls"] == CALLS:  # this process's calls only
        store.counter("counted-only-own").add(1)


def test_a_named_guard_counts_every_process_exactly_and_its_cap_holds(store, store_name, mp_ctx):
    run_procs(mp_ctx, worker, [(store_name, False)] * WORKERS)
    ok, limited = store.counter("seen-ok").value, store.counter("seen-limiter").value
    assert ok == CALLS * WORKERS // 2 and limited == CALLS * WORKERS - ok  # the limiter's budget, exactly
    assert store.counter("peak").value <= 2
    here = sg.Guard("procs", limiter=sg.RateLimiter("procs-lim", f"{CALLS * WORKERS // 2}/hour", store=store),
                    key="k", cap=sg.ConcurrencyLimiter("procs-cap", 2, store=store), cap_timeout=5.0, store=store)
    s = here.stats()
    assert (s["calls"], s["succeeded"], s["rejected_limiter"]) == (CALLS * WORKERS, ok, limited)
    r = subprocess.run([sys.executable, "-m", "sluicegate", "inspect", store_name, "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (doc,) = [p for p in json.loads(r.stdout)["policies"] if p["kind"] == "guard"]
    assert doc["stats"]["succeeded"] == ok and doc["stats"]["rejected_limiter"] == limited


def test_control_private_guards_count_only_their_own_process(store, store_name, mp_ctx):
    run_procs(mp_ctx, worker, [(store_name, True)] * WORKERS)
    assert not [p for p in store.policies() if p.kind == "guard"]  # nothing to read host-wide
    assert store.counter("counted-only-own").value == WORKERS  # each saw CALLS, not CALLS * WORKERS
    assert store.counter("seen-ok").value == CALLS * WORKERS // 2  # (the limiter is shared all the same)


def test_the_exporters_read_a_guard_s_counts_from_the_store(store):
    from sluicegate import metrics

    g = sg.Guard("exp", breaker=sg.CircuitBreaker("exp", failure_threshold=100, store=store),
                 fallback="fb", store=store)
    g.call(lambda: 1)
    g.call(lambda: 1 / 0)
    got = {(n, tuple(sorted(lab.items()))): v for n, lab, v in metrics.samples(metrics.read(store))
           if n.startswith("sluicegate_guard")}
    base = (("policy", "exp"), ("store", metrics.Reader([store]).labels[0]))
    assert got[("sluicegate_guard_calls", tuple(sorted((*base, ("outcome", "success")))))] == 1
    assert got[("sluicegate_guard_calls", tuple(sorted((*base, ("outcome", "failure")))))] == 1
    assert got[("sluicegate_guard_fallbacks", tuple(sorted(base)))] == 1

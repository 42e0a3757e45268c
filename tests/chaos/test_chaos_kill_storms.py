"""Chaos: SIGKILL storms on every kind of policy, then the invariants.

Worker processes decide as fast as they can while a driver SIGKILLs one every few
milliseconds and starts another.  Afterwards: no window admitted more than its limit,
no leaked permits, no probe stuck, and the store's used count equal to its live slots.
The limiters: one rate per algorithm, a multi-rate limiter (20/100ms and 50/second,
all-or-nothing) and a chain of two limiters.  A multi-rate limiter or a chain charges
its levels one after another and refunds the earlier ones when a later one denies; a
worker killed in between leaves a level charged (README: "A refund ... is a step after
the charge"), which may deny more but never admit more, so every window of every level
is checked against its limit.  Key churn near capacity under a kill storm is
tests/test_table_live_count.py.
Each storm prints what it did.  The storms are short here (SLUICEGATE_CHAOS_SECONDS,
default 1.5 s each); run them longer on demand:

    bash tests/chaos/run.sh 60    # SLUICEGATE_CHAOS_SECONDS=60 python -m pytest tests/chaos -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SECONDS = float(os.environ.get("SLUICEGATE_CHAOS_SECONDS", "1.5"))

DRIVER = textwrap.dedent("""
    import json, os, random, signal, sys, time
    import sluicegate as sg

    kind, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = sg.SharedStore(name)
    P = 0.1  # window (s)
    LIMIT = 20

    # the windows each limiter kind is checked over: (period s, limit)
    if kind.startswith("limiter-"):
        WINDOWS = [(P, LIMIT)]
    elif kind.startswith("multi-") or kind == "chain":
        WINDOWS = [(P, LIMIT), (1.0, 50)]
    else:
        WINDOWS = []

    def policy():
        if kind.startswith("limiter-"):
            return sg.RateLimiter(f"chaos-{kind}", sg.Rate(LIMIT, P), algorithm=kind[8:], store=store)
        if kind.startswith("multi-"):  # one limiter, two rates decided all-or-nothing
            return sg.RateLimiter(f"chaos-{kind}", ["20/100ms", "50/second"], algorithm=kind[6:], store=store)
        if kind == "chain":  # two limiters: a charged, then b; a refunded when b denies
            a = sg.RateLimiter("chaos-chain-a", "20/100ms", algorithm="fixed_window", store=store)
            b = sg.RateLimiter("chaos-chain-b", "50/second", algorithm="fixed_window", store=store)
            return sg.RateLimiter.chain(a, b)
        if kind == "cap":
            return sg.ConcurrencyLimiter("chaos-cap", limit=3, store=store)
        return sg.CircuitBreaker("chaos-br", store=store, failure_threshold=3, window=1.0, reset_timeout=0.02,
                                 half_open_calls=2, probe_timeout=1.0)

    def work(seed):
        rng = random.Random(seed)
        p = policy()
        while True:
            if WINDOWS:
                t0 = store.now()
                ok = p.allow("one-key")
                t1 = store.now()
                # recorded after the decision: a kill in between loses it (never adds)
                for per, _ in (WINDOWS if ok else ()):
                    w0, w1 = int(t0 / per), int(t1 / per)
                    store._table.counter(f"{per}w{w1}" if w0 == w1 else f"{per}s{w1}").add(1)
            elif kind == "cap":
                try:
                    with p.slot(timeout=0.05):
                        time.sleep(rng.random() * 0.001)
                except sg.ConcurrencyLimitExceeded:
                    pass
            else:
                try:
                    with p:
                        if rng.random() < 0.3:
                            raise ConnectionError
                except (ConnectionError, sg.CircuitOpen):
                    pass

    def fork(seed):
        pid = os.fork()
        if pid == 0:
            try:
                work(seed)
            finally:
                os._exit(0)
        return pid

    p = policy()  # created before the storm, so every worker attaches to it
    rng = random.Random(7)
    nworkers = 4
    t_first = store.now()  # the windows checked start before the first worker
    kids = [fork(k) for k in range(nworkers)]
    seed, kills, t_start = nworkers, 0, store.now()
    peak = 0
    # the storm lasts its seconds and at least 60 kills (a loaded machine forks slowly),
    # but never more than 4x its seconds
    longest = max(4 * seconds, 10.0)
    while (store.now() - t_start < seconds or kills < 60) and store.now() - t_start < longest:
        time.sleep(rng.uniform(0.001, 0.004))
        if kind == "cap":
            peak = max(peak, p.in_use)
        k = rng.randrange(nworkers)
        os.kill(kids[k], signal.SIGKILL)
        os.waitpid(kids[k], 0)
        kills += 1
        seed += 1
        kids[k] = fork(seed)
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    t_end = store.now()
    time.sleep(0.3)  # dead claims go stale (200 ms)
    out = {"kind": kind, "kills": kills, "seconds": round(t_end - t_start, 3)}
    violations = []
    if WINDOWS:
        for per, limit in WINDOWS:
            first, last = int(t_first / per), int(t_end / per) + 1
            counts = {w: store._table.counter(f"{per}w{w}").value for w in range(first, last + 1)}
            straddle = {w: store._table.counter(f"{per}s{w}").value for w in range(first, last + 1)}
            admitted = sum(counts.values()) + sum(straddle.values())
            out[f"admitted_per_{per}s"] = {"total": admitted, "windows": len(counts),
                                           "busiest": max(counts.values()), "limit": limit}
            if not kind.endswith("token_bucket"):
                for w, n in counts.items():  # a straddling admission belongs to window w or w - 1
                    if n > limit + straddle[w] + straddle.get(w + 1, 0):
                        violations.append(f"{per} s window {w} admitted {n} > {limit}")
            elif admitted > limit + limit * (t_end - t_first) / per + 1:
                violations.append(f"{admitted} admitted: over burst + rate x time of {limit}/{per}s")
        if kind == "chain":
            # a charged but not refunded (killed between a's charge and b's denial or the
            # refund) may deny more, never admit more: the window checks above are the
            # bound; this is a lower bound on how often a kill landed inside the chain
            sa, sb = (lim.stats() for lim in p.limiters)
            out["levels"] = {"a": sa, "b": sb,
                             "a_charges_without_a_b_decision": sa["allowed"] - sb["total"]}
        p.reset("one-key")
        if not p.allow("one-key"):
            violations.append("the key stays denied after reset")
    elif kind == "cap":
        out["peak_in_use"] = peak
        out["reclaimed"] = p.reclaim()
        out["in_use_after"] = p.in_use
        if peak > p.limit:
            violations.append(f"{peak} permits held for a limit of {p.limit}")
        if p.in_use:
            violations.append(f"{p.in_use} permits leaked by dead holders")
    else:
        t0 = time.monotonic()
        while p.state != "closed" and time.monotonic() - t0 < 5:
            try:
                with p:
                    pass
            except sg.CircuitOpen:
                time.sleep(0.005)
        out["recovered_in"] = round(time.monotonic() - t0, 3)
        out["state_after"] = p.state
        if p.state != "closed":
            violations.append(f"the breaker stayed {p.state}: a probe is stuck")
    st = store.stats()
    out["stats"] = st
    if st["claiming"]:
        violations.append(f"{st['claiming']} claims of dead processes left")
    if st["used"] != st["reclaimable"] or st["permanent_used"] != st["permanent"]:
        violations.append(f"used {st['used']} / {st['permanent_used']} but {st['reclaimable']} keys and "
                          f"{st['permanent']} permanent slots live")
    out["violations"] = violations
    print(json.dumps(out))
""")


@pytest.mark.parametrize("kind", ["limiter-token_bucket", "limiter-fixed_window", "limiter-sliding_window",
                                  "multi-fixed_window", "multi-token_bucket", "chain", "cap", "breaker"])
def test_kill_storm(store_name, kind):
    import sluicegate as sg

    # every window of the run gets two counters (counter engines, store._table.counter: permanent
    # slots, not directory entries, and no directory claim for a SIGKILL to interrupt): room for them
    # at any length
    policies = 64 + int(SECONDS)
    with sg.SharedStore(store_name, capacity=1024, policies=policies):
        r = subprocess.run([sys.executable, "-c", DRIVER, kind, store_name, str(SECONDS)], capture_output=True,
                           text=True, timeout=60 + 2 * SECONDS)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"\n  chaos {kind}: {out}")
    assert out["kills"] >= 50, "the storm was too short to mean anything"
    assert not out["violations"], out["violations"]

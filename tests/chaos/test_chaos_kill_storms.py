"""Chaos: SIGKILL storms on every kind of policy, then the invariants.

Worker processes decide as fast as they can while a driver SIGKILLs one every few
milliseconds and starts another.  Afterwards: no window admitted more than its limit,
no leaked permits, no probe stuck, and the store's used count equal to its live slots.
Each storm prints what it did.  The storms are short here (SLUICEGATE_CHAOS_SECONDS,
default 1.5 s each); run them longer on demand:

    SLUICEGATE_CHAOS_SECONDS=60 python -m pytest tests/chaos -s
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

    def policy():
        if kind.startswith("limiter-"):
            return sg.RateLimiter(f"chaos-{kind}", sg.Rate(LIMIT, P), algorithm=kind[8:], store=store)
        if kind == "cap":
            return sg.ConcurrencyLimiter("chaos-cap", limit=3, store=store)
        return sg.CircuitBreaker("chaos-br", store=store, failure_threshold=3, window=1.0, reset_timeout=0.02,
                                 half_open_calls=2, probe_timeout=1.0)

    def work(seed):
        rng = random.Random(seed)
        p = policy()
        while True:
            if kind.startswith("limiter-"):
                t0 = store.now()
                ok = p.allow("one-key")
                t1 = store.now()
                if ok:  # recorded after the decision: a kill in between loses it (never adds)
                    w0, w1 = int(t0 / P), int(t1 / P)
                    store.counter(f"w{w1}" if w0 == w1 else f"s{w1}").add(1)
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
    kids = [fork(k) for k in range(nworkers)]
    seed, kills, t_start = nworkers, 0, store.now()
    peak = 0
    while store.now() - t_start < seconds:
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
    if kind.startswith("limiter-"):
        first, last = int(t_start / P), int(t_end / P) + 1
        counts = {w: store.counter(f"w{w}").value for w in range(first, last + 1)}
        straddle = {w: store.counter(f"s{w}").value for w in range(first, last + 1)}
        out["admitted"] = sum(counts.values()) + sum(straddle.values())
        out["windows"] = len(counts)
        if kind != "limiter-token_bucket":
            for w, n in counts.items():  # a straddling admission belongs to window w or w - 1
                if n > LIMIT + straddle[w] + straddle.get(w + 1, 0):
                    violations.append(f"window {w} admitted {n} > {LIMIT}")
        elif out["admitted"] > LIMIT + LIMIT * (t_end - t_start) / P + 1:
            violations.append(f"{out['admitted']} admitted: over burst + rate x time")
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


@pytest.mark.parametrize("kind", ["limiter-token_bucket", "limiter-fixed_window", "limiter-sliding_window", "cap",
                                  "breaker"])
def test_kill_storm(store_name, kind):
    import sluicegate as sg

    with sg.SharedStore(store_name, capacity=1024):
        r = subprocess.run([sys.executable, "-c", DRIVER, kind, store_name, str(SECONDS)], capture_output=True,
                           text=True, timeout=60 + 2 * SECONDS)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"\n  chaos {kind}: {out}")
    assert out["kills"] >= 50, "the storm was too short to mean anything"
    assert not out["violations"], out["violations"]

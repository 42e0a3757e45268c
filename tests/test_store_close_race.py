"""store.close() from one thread while others decide: the calls in flight finish or
raise StoreClosed, every call after close() raises StoreClosed, nothing crashes.

allow_many releases the GIL for its batch, so close() can run in the middle of it.
The race runs in a subprocess, so a segfault is a failed assertion, not a dead pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap

RACE = textwrap.dedent("""
    import sys, threading, time
    import sluicegate as sg

    rounds = int(sys.argv[1])
    keys = [f"k{i}" for i in range(20000)]  # 3 slots a key (two rates in m): under capacity
    odd = {}
    finished = closed = 0
    deadline = time.monotonic() + 20
    for r in range(rounds):
        if time.monotonic() > deadline:
            break
        s = sg.SharedStore(capacity=1 << 16)
        lim = sg.RateLimiter("r", "1000/second", store=s)
        multi = sg.RateLimiter("m", ["1000/second", "5000/minute"], store=s)
        started = threading.Barrier(3)

        def batches(l):
            global finished, closed
            started.wait()
            try:
                for _ in range(100):
                    out = l.allow_many(keys)
                    assert len(out) == len(keys)
                    finished += 1
            except sg.StoreClosed:
                closed += 1
            except BaseException as e:
                odd[repr(e)] = odd.get(repr(e), 0) + 1

        ts = [threading.Thread(target=batches, args=(l,)) for l in (lim, multi)]
        for t in ts:
            t.start()
        started.wait()
        time.sleep(0.001 * (r % 7))
        s.close()
        for t in ts:
            t.join(30)
            assert not t.is_alive()
        for call in (lambda: lim.allow_many(keys[:10]), lambda: lim.allow("x"), lambda: multi.allow_many(["y"])):
            try:
                call()
                odd["a call after close() succeeded"] = 1
            except sg.StoreClosed:
                pass
    print("rounds", r + 1, "batches finished", finished, "closed mid-run", closed, "odd", odd)
    assert not odd, odd
""")


def test_close_racing_allow_many_never_crashes():
    r = subprocess.run([sys.executable, "-c", RACE, "30"], capture_output=True, text=True, timeout=120)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, f"exit {r.returncode} (a negative code is a signal: -11 SIGSEGV): {r.stderr[-2000:]}"
    assert "odd {}" in r.stdout

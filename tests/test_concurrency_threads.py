"""ConcurrencyLimiter from many threads: cap.release() with no argument releases a
permit of the calling thread only, and no mix of permit.release(), cap.release() and
cap.release(permit) across threads frees a permit twice or leaks one."""

from __future__ import annotations

import random
import sys
import threading
import time

import sluicegate as sg


def test_release_without_argument_never_frees_another_threads_permit():
    with sg.SharedStore(capacity=64) as s:
        cap = sg.ConcurrencyLimiter("t1", limit=4, store=s)
        got = threading.Event()
        done = threading.Event()
        held = []

        def holder():
            held.append(cap.acquire(timeout=5))
            got.set()
            done.wait(10)

        t = threading.Thread(target=holder)
        t.start()
        assert got.wait(10)
        assert cap.release() is False  # this thread holds nothing
        assert cap.in_use == 1 and held[0].held
        mine = cap.acquire(timeout=5)
        assert cap.release() is True and not mine.held and held[0].held
        done.set()
        t.join(10)
        assert held[0].release() is True
        assert cap.in_use == 0


def test_threads_mixing_every_release_never_leak_or_over_admit():
    limit, nthreads, rounds = 3, 8, 300
    with sg.SharedStore(capacity=64) as s:
        cap = sg.ConcurrencyLimiter("t2", limit=limit, store=s)
        lock = threading.Lock()
        active = [0, 0]  # now, most
        errors: list[str] = []
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)

        def worker(seed):
            rng = random.Random(seed)
            try:
                for _ in range(rounds):
                    p = cap.acquire(timeout=10)
                    with lock:
                        active[0] += 1
                        active[1] = max(active[1], active[0])
                    time.sleep(0)  # hold it while other threads run
                    with lock:
                        active[0] -= 1
                    mode = rng.randrange(4)
                    if mode == 0:
                        ok = p.release()
                    elif mode == 1:
                        ok = cap.release()
                    elif mode == 2:
                        ok = cap.release(p)
                    else:  # released twice at once, from this thread and a helper
                        h = threading.Thread(target=p.release)
                        h.start()
                        ok = p.release() or True
                        h.join(10)
                    if not ok:
                        errors.append(f"release (mode {mode}) of this thread's permit returned False")
                    if p.held:
                        errors.append(f"release (mode {mode}) left this thread's permit held")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        try:
            ts = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(120)
        finally:
            sys.setswitchinterval(old)
        assert not any(t.is_alive() for t in ts)
        print(f"{nthreads} threads x {rounds} rounds: most held at once {active[1]}, errors {len(errors)}")
        assert not errors, errors[:5]
        assert active[1] <= limit, f"{active[1]} permits held at once for a limit of {limit}"
        assert cap.in_use == 0, f"{cap.in_use} permits leaked by a live process"
        assert cap.stats()["held_here"] == 0

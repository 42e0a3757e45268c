"""The retry budget is shared by every process on the host: with the dependency always
failing, retries never exceed ratio x calls + floor in the window, summed over 4 real
processes (fork and spawn); the control (each process its own budget) exceeds it.  Under a
fake clock: the window slides (old buckets fall out), and a Hypothesis run against a
small model of the window."""

from __future__ import annotations

import pytest
from conftest import run_procs
from hypothesis import given, settings
from hypothesis import strategies as st

import sluicegate as sg
from sluicegate.retry import BUCKETS

WORKERS = 4
CALLS = 150
RATIO, FLOOR = 0.2, 5


def down() -> None:
    raise OSError("the dependency is down")


def worker(store_name: str, shared: bool) -> None:
    store = sg.SharedStore(store_name) if shared else sg.SharedStore()  # control: a private store
    retry = sg.Retry(attempts=5, backoff=0.0, jitter="none", budget=RATIO, budget_window=600.0, budget_floor=FLOOR)
    budget = retry.budget_for(store, "dependency")
    tries = 0

    def attempt() -> None:
        nonlocal tries
        tries += 1
        down()

    for _ in range(CALLS):
        with pytest.raises(OSError):
            retry.run(attempt, budget=budget, sleep=lambda s: None)
    sg.SharedStore(store_name).counter("retries").add(tries - CALLS)


def test_retries_over_four_processes_stay_within_the_shared_budget(store, store_name, mp_ctx):
    run_procs(mp_ctx, worker, [(store_name, True)] * WORKERS)
    retries = store.counter("retries").value
    bound = RATIO * WORKERS * CALLS + FLOOR  # 125
    assert bound - WORKERS <= retries <= bound  # the budget binds, and holds exactly
    budget = sg.RetryBudget("dependency", store, RATIO, 600.0, FLOOR)
    assert budget.stats()["calls"] == WORKERS * CALLS and budget.stats()["retries"] == retries


def test_control_one_budget_per_process_multiplies_the_retries(store, store_name, mp_ctx):
    run_procs(mp_ctx, worker, [(store_name, False)] * WORKERS)
    retries = store.counter("retries").value
    assert retries > RATIO * WORKERS * CALLS + FLOOR  # 4 x (30 + 5) = 140 > 125


class Clock:
    def __init__(self) -> None:
        self.ns = 10**12

    def __call__(self) -> int:
        return self.ns


def test_old_buckets_fall_out_of_the_window(store):
    clock = Clock()
    b = sg.RetryBudget("slide", store, ratio=0.5, window=10.0, floor=0, clock=clock)
    for _ in range(10):
        b.record_call()
    assert [b.try_spend() for _ in range(6)] == [True] * 5 + [False]
    clock.ns += 9 * 10**9  # 9 s later: the calls are still in the window
    assert not b.try_spend()
    clock.ns += 2 * 10**9  # 11 s after them: gone, and so are the retries
    assert b.stats()["calls"] == 0 and b.stats()["retries"] == 0
    assert not b.try_spend()  # nothing to spend from without calls (floor 0)
    b.record_call(), b.record_call()
    assert b.try_spend() and not b.try_spend()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["call", "spend", "tick"]), st.integers(1, 3)), max_size=60))
def test_the_budget_agrees_with_a_model_of_its_window(steps):
    """Model: per-bucket (calls, retries) keyed by epoch; the window is the last BUCKETS epochs."""
    s = sg.SharedStore()
    try:
        clock = Clock()
        bucket_ns = 10**9  # window 10 s over 10 buckets
        b = sg.RetryBudget("model", s, ratio=0.3, window=10.0, floor=1, clock=clock)
        model: dict[int, list[int]] = {}

        def window() -> tuple[int, int]:
            now = clock.ns // bucket_ns
            got = [v for e, v in model.items() if now - e < BUCKETS]
            return sum(v[0] for v in got), sum(v[1] for v in got)

        for op, n in steps:
            epoch = clock.ns // bucket_ns
            if op == "call":
                for _ in range(n):
                    b.record_call()
                    model.setdefault(epoch, [0, 0])[0] += 1
            elif op == "spend":
                for _ in range(n):
                    calls, retries = window()
                    want = retries + 1 <= 0.3 * calls + 1
                    assert b.try_spend() == want
                    if want:
                        model.setdefault(epoch, [0, 0])[1] += 1
            else:
                clock.ns += n * 700_000_000
            assert (b.stats()["calls"], b.stats()["retries"]) == window()
    finally:
        s.close()

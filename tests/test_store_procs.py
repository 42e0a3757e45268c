"""The store across real processes: fork and spawn children, unrelated processes
started separately, concurrent creation, SIGKILL mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from conftest import run_procs

import sluicegate as sg

ADDS = 100_000


def _add_worker(name: str, n: int) -> None:
    c = sg.SharedStore(name).counter("total")
    for _ in range(n):
        c.add(1)


def test_eight_processes_add_exactly(store, mp_ctx):
    run_procs(mp_ctx, _add_worker, [(store.name, ADDS)] * 8)
    assert store.counter("total").value == 8 * ADDS


def _anon_worker(c, n: int) -> None:
    for _ in range(n):
        c.add(1)


def test_anonymous_store_is_shared_with_forked_children():
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    with sg.SharedStore(capacity=64) as s:
        c = s.counter("n")
        procs = [ctx.Process(target=_anon_worker, args=(c, 10_000)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert c.value == 40_000


def _create_worker(name: str, barrier, results) -> None:
    barrier.wait()
    s = sg.SharedStore(name, capacity=256)
    s.counter("attached").add(1)
    results.put(s.created)


def test_concurrent_creation_has_exactly_one_initialiser(store_name, mp_ctx):
    n = 6
    barrier = mp_ctx.Barrier(n)
    results = mp_ctx.Queue()
    run_procs(mp_ctx, _create_worker, [(store_name, barrier, results)] * n)
    created = [results.get(timeout=10) for _ in range(n)]
    assert created.count(True) == 1
    assert sg.SharedStore(store_name).counter("attached").value == n


SCRIPT = textwrap.dedent(
    """
    import sys, sluicegate as sg
    kind, where, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = sg.SharedStore(where) if kind == "name" else sg.SharedStore(path=where)
    c = s.counter("shared")
    for _ in range(n):
        c.add(1)
    print(c.value, s.created)
    """
)


def _spawn_script(kind: str, where: str, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, kind, where, str(n)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )


def test_unrelated_processes_share_a_named_store(store_name):
    procs = [_spawn_script("name", store_name, 20_000) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert [o[1] for o in outs].count("True") == 1  # exactly one of them created it
    assert sg.SharedStore(store_name).counter("shared").value == 60_000


def test_file_store_survives_every_process_exiting(tmp_path):
    path = str(tmp_path / "persist.sg")
    first = _spawn_script("path", path, 1000)
    assert first.communicate(timeout=60)[0].split() == ["1000", "True"]
    second = _spawn_script("path", path, 500)
    assert second.communicate(timeout=60)[0].split() == ["1500", "False"]


def _churn_worker(name: str, wid: int) -> None:
    s = sg.SharedStore(name)
    i = 0
    while True:  # killed by the parent
        s._table.counter(f"w{wid}-{i % 3000}").add(1)  # counter engines: 9000 slots, no directory entries
        s.counter("hot").add(1)
        i += 1


def test_sigkill_mid_run_leaves_nothing_stuck(store_name, mp_ctx):
    """Workers create keys as fast as they can and are SIGKILLed at arbitrary points;
    afterwards every key still works and no claim stays in flight."""
    s = sg.SharedStore(store_name, capacity=20_000, policies=1024)  # 16384 permanent slots: 9001 counters
    procs = [mp_ctx.Process(target=_churn_worker, args=(store_name, w)) for w in range(3)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 20
    while s.counter("hot").value < 20_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
    hot_before = s.counter("hot").value
    assert hot_before >= 1000
    # a claim interrupted by SIGKILL is taken over once it is stale (200 ms)
    time.sleep(0.3)
    for w in range(3):
        for i in range(3000):
            s._table.counter(f"w{w}-{i}").add(1)  # each lookup or creation must succeed
    s.counter("hot").add(1)
    assert s.counter("hot").value == hot_before + 1
    # anything still marked as claiming is an interrupted claim: touching its window resolves it
    st = s.stats()
    assert st["used"] + st["permanent_used"] == st["permanent"] + st["reclaimable"] + st["claiming"]
    assert st["claiming"] <= 3  # at most one interrupted claim per killed worker
    s.close()


def _default_store_child(q) -> None:
    q.put(sg.default_store().counter("d").add(1))


def test_default_store_is_shared_with_forked_children(monkeypatch):
    import multiprocessing as mp

    from sluicegate import store as store_mod

    monkeypatch.delenv("SLUICEGATE_STORE", raising=False)
    monkeypatch.setattr(store_mod, "_default", None)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_default_store_child, args=(q,)) for _ in range(3)]
    for p in procs:  # each child finds (or creates) this application's named default store
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(q.get(timeout=5) for _ in range(3)) == [1, 2, 3]
    assert sg.default_store().kind == "named"
    assert sg.default_store().counter("d").value == 3

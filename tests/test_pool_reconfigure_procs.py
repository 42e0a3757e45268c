"""A named pool reconfigured from other processes, with real worker processes (fork and
spawn): an admin process that runs the same code grows it with reconfigure(), and
``sluicegate config apply`` shrinks it.  Every worker follows at its next checkout:
it can hold the new size at once, its surplus is closed when returned, and no resource
is closed while a worker holds it."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import wait_for

import sluicegate as sg

WORKERS = 3


class Res:
    def __init__(self) -> None:
        self.closed = False


def close(r: Res) -> None:
    r.closed = True


def _c(store: sg.SharedStore, what: str) -> sg.Counter:
    return store.counter(f"t.{what}")


def pool_worker(store_name: str, idx: int) -> None:
    """Each round: check out all it can (non-blocking), hold them a moment, check none was
    closed under it, give them back; report per phase the most it held, and what it held
    and its total after the phase's last round."""
    store = sg.SharedStore(store_name)
    pool = sg.Pool(Res, close=close, size=2, name="db", store=store)
    phase, stop, errors = _c(store, "phase"), _c(store, "stop"), _c(store, "errors")
    _c(store, "started").add(1)
    while stop.value == 0:
        p = phase.value
        held = []
        while True:
            try:
                held.append(pool.acquire(block=False))
            except sg.PoolExhausted:
                break
        time.sleep(0.002)
        if any(lease.resource.closed for lease in held):
            errors.add(1)
        for lease in held:
            lease.release()
        most, last, total = (_c(store, f"w{idx}.p{p}.{k}") for k in ("most", "last", "total"))
        most.compare_and_set(most.value, max(most.value, len(held)))  # one writer per counter
        last.compare_and_set(last.value, len(held))
        total.compare_and_set(total.value, pool.stats()["total"])
        _c(store, f"w{idx}.rounds").add(1)
        time.sleep(0.001)
    pool.close()


_ADMIN = """
import sys
import sluicegate as sg
store = sg.SharedStore(sys.argv[1])
pool = sg.Pool(object, size=2, name="db", store=store)   # the service's code (its create is its own)
pool.reconfigure(size=5)
"""


def _more_rounds(store: sg.SharedStore, n: int = 5) -> None:
    """Wait until every worker has done n more rounds (each starting after this call)."""
    base = [_c(store, f"w{i}.rounds").value for i in range(WORKERS)]
    wait_for(lambda: all(_c(store, f"w{i}.rounds").value >= base[i] + n + 1 for i in range(WORKERS)), 60,
             f"{n} more rounds of every worker")


def _per_worker(store: sg.SharedStore, what: str) -> list[int]:
    return [_c(store, f"w{i}.{what}").value for i in range(WORKERS)]


def test_a_pool_reconfigured_from_other_processes_is_followed_by_every_worker(store_name, mp_ctx, tmp_path):
    store = sg.SharedStore(store_name, capacity=1024)
    procs = [mp_ctx.Process(target=pool_worker, args=(store_name, i)) for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    try:
        wait_for(lambda: _c(store, "started").value == WORKERS, 60, "workers started")
        _more_rounds(store)
        # grow: reconfigure() in an unrelated process running the service's code
        _c(store, "phase").add(1)
        r = subprocess.run([sys.executable, "-c", _ADMIN, store_name], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        _more_rounds(store)
        # shrink: the CLI, as an operator would
        _c(store, "phase").add(1)
        toml = tmp_path / "shrink.toml"
        toml.write_text("[pools.db]\nsize = 1\n")
        r = subprocess.run([sys.executable, "-m", "sluicegate", "config", "apply", str(toml), "--store", store_name],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        _more_rounds(store)
    finally:
        _c(store, "stop").add(1)
        for proc in procs:
            proc.join(60)
    assert all(proc.exitcode == 0 for proc in procs)
    print(f"held (most, last) per worker: size 2 {_per_worker(store, 'p0.most')}, "
          f"grown to 5 {_per_worker(store, 'p1.most')} {_per_worker(store, 'p1.last')}, "
          f"shrunk to 1 {_per_worker(store, 'p2.last')} (totals {_per_worker(store, 'p2.total')})")
    assert _per_worker(store, "p0.most") == [2] * WORKERS  # size 2, as in code
    assert _per_worker(store, "p1.last") == [5] * WORKERS  # grown: each worker holds 5 at once
    assert _per_worker(store, "p2.last") == [1] * WORKERS  # shrunk: one at a time ...
    assert _per_worker(store, "p2.total") == [1] * WORKERS  # ... and the surplus was closed
    assert _c(store, "errors").value == 0  # nothing was closed while a worker held it
    info = {p.name: p for p in store.policies() if p.kind == "pool"}["db"]
    assert info.code["size"] == 2 and info.override == {"size": 1}
    store.close()

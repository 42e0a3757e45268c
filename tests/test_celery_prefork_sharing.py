"""With no store= and no $SLUICEGATE_STORE, the pool children of a real Celery prefork
worker (`celery worker --pool=prefork --concurrency=4`, a real redis-server as broker and
result backend, started in a session of its own as a deployment would) share one
default store: the limiter made at import or at a child's first task, and the children
--max-tasks-per-child starts later, all spend one budget, also when the worker is pid 1
of its pid namespace as in a container.  The control gives each child a private store
and must admit more than that budget, so the measurement can fail."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import celery  # noqa: F401  (test extras: the real worker these tests drive, never skipped)
import pytest
import servers
from celery import Celery
from celery.result import ResultSet

import sluicegate as sg
from sluicegate import _approot

LOAD_SECONDS = 3.0
PACE = 200  # tasks sent per second: four times the limiter's 50/second, so it saturates
WORK = 0.015  # seconds each task works after deciding: about 3 in flight, spread over the children
READY_TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(120)


@dataclass
class Run:
    worker_pid: int
    results: list[dict] = field(default_factory=list)
    sent: int = 0

    @property
    def admitted(self) -> int:
        return sum(r["admitted"] for r in self.results)

    @property
    def elapsed(self) -> float:
        """From the first decision to the last, read in the children (CLOCK_MONOTONIC is
        one clock for every process on the host)."""
        at = [r["at"] for r in self.results]
        return max(at) - min(at)

    @property
    def pids(self) -> set[int]:
        return {r["pid"] for r in self.results}

    @property
    def stores(self) -> set[str]:
        return {r["store"] for r in self.results}


def _run(redis_server, tmp_path, *, env=None, extra=(), prefix: list[str] | None = None) -> Run:
    """Start a prefork worker for a fresh policy on a queue of its own, send take tasks at
    PACE for LOAD_SECONDS, collect every result, and end the worker's process group.
    prefix (servers.pid_namespace_prefix()) runs the worker as pid 1 of a pid namespace."""
    tag = uuid.uuid4().hex[:10]
    queue = f"sg-{tag}"
    url = redis_server.url()
    full_env = {**os.environ, "APP_BROKER": url, "APP_POLICY": f"celery-{tag}", **(env or {})}
    full_env.pop("SLUICEGATE_STORE", None)
    # gossip, mingle and heartbeat only talk to other workers; without them start-up is quicker
    cmd = [*(prefix or ()), sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool=prefork",
           "--concurrency=4", "--loglevel=warning", "-Q", queue, "-n", f"{queue}@%h", "--without-gossip",
           "--without-mingle", "--without-heartbeat", *extra]
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=servers.HERE, env=full_env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    client = Celery("sg-client", broker=url, backend=url)
    run = Run(1 if prefix else proc.pid)
    try:
        _wait_ready(client, proc, queue, log_path)
        pending = []
        t0 = time.monotonic()
        for i in range(int(PACE * LOAD_SECONDS)):
            delay = t0 + i / PACE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -LOAD_SECONDS:  # this process fell far behind: stop sending rather than run long
                break
            pending.append(client.send_task("sg.take", args=[WORK], queue=queue))
        run.sent = len(pending)
        run.results = ResultSet(pending, app=client).join_native(timeout=60, propagate=True)
    finally:
        servers.stop_group(proc)
        client.close()
        for r in run.results:
            if r["store"]:
                sg.SharedStore.unlink(r["store"], missing_ok=True)
    allowance = servers.allowance(run.elapsed)
    where = " as pid 1" if prefix else ""
    print(f"celery prefork {env or ''} {list(extra)}{where}: worker {run.worker_pid}, children {sorted(run.pids)}, "
          f"stores {sorted(run.stores)}: admitted {run.admitted} of {run.sent} in {run.elapsed:.2f}s "
          f"(allowance {allowance:.0f})")
    return run


def _wait_ready(client: Celery, proc: subprocess.Popen, queue: str, log_path) -> None:
    """Until a ping task comes back: the worker consumes and its pool runs tasks."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{open(log_path).read()[-3000:]}")
        try:
            client.send_task("sg.ping", queue=queue).get(timeout=2)
            return
        except Exception as e:  # noqa: BLE001 - celery.exceptions.TimeoutError until the worker consumes
            if time.monotonic() > deadline:
                tail = open(log_path).read()[-3000:]
                raise RuntimeError(f"celery worker not ready in {READY_TIMEOUT}s:\n{tail}") from e
        time.sleep(0.1)


def _assert_one_budget(run: Run, floor: float = 0.9) -> None:
    admitted, allowance = run.admitted, servers.allowance(run.elapsed)
    assert len(run.stores) == 1, f"children used several stores: {run.stores}"
    (name,) = run.stores
    assert name.startswith(f"app-{os.getuid()}-{run.worker_pid}-"), f"not the worker's application store: {name}"
    assert name != _approot.default_store_name(), "the worker shares the test run's store"
    assert admitted <= allowance + 1, f"admitted {admitted} > allowance {allowance:.0f}"
    assert admitted >= floor * allowance, f"admitted {admitted} < {floor:.0%} of {allowance:.0f}"
    # the limit was the bottleneck (a loaded machine runs fewer tasks per second than sent)
    assert run.sent - admitted >= run.sent // 5, "the tasks did not saturate the limit"


@pytest.mark.parametrize("construct", ["import", "lazy"])
def test_prefork_children_share_one_limit_by_default(construct, redis_server, tmp_path):
    run = _run(redis_server, tmp_path, env={"APP_CONSTRUCT": construct})
    assert len(run.pids) >= 2, f"the pool ran every task in one child: {run.pids}"
    _assert_one_budget(run)


def test_prefork_children_with_private_stores_multiply_the_limit(redis_server, tmp_path):
    """The control: one anonymous store per child admits more than one budget."""
    run = _run(redis_server, tmp_path, env={"APP_STORE": "private"})
    assert len(run.pids) >= 2, f"the pool ran every task in one child: {run.pids}"
    assert run.admitted > servers.allowance(run.elapsed) + 1


def test_prefork_children_recycled_by_max_tasks_per_child_get_no_fresh_burst(redis_server, tmp_path):
    """Children replaced every 40 tasks find the same store at their first task: one budget."""
    run = _run(redis_server, tmp_path, env={"APP_CONSTRUCT": "lazy"}, extra=("--max-tasks-per-child=40",))
    assert len(run.pids) > 4, f"no child was recycled: {run.pids}"
    _assert_one_budget(run, floor=0.8)  # decisions pause while a child is replaced, as with gunicorn's


def test_prefork_worker_as_a_containers_pid_1_shares_one_limit(redis_server, tmp_path):
    """`docker run IMAGE celery -A proj worker`: the worker's main process is pid 1 of its
    pid namespace, and the children it forks must still find it as their root."""
    run = _run(redis_server, tmp_path, env={"APP_CONSTRUCT": "lazy"}, prefix=servers.pid_namespace_prefix())
    assert len(run.pids) >= 2, f"the pool ran every task in one child: {run.pids}"
    _assert_one_budget(run)

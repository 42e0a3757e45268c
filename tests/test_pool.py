"""Pool in one process: ordering per strategy, timeouts and non-blocking mode, FIFO waiters,
overflow created and reaped, validation, lifetimes (fake clock), borrower-death reclaim,
create failures, close, host_limit; Hypothesis state machine against the model."""

from __future__ import annotations

import gc
import itertools
import threading
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from models_pool import Clock, PoolModel

import sluicegate as sg

pytestmark = pytest.mark.timeout(60)


class Factory:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.closed: list[int] = []
        self.fail_next = 0

    def create(self) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("db down")
        return next(self.ids)

    def close(self, r: int) -> None:
        self.closed.append(r)


def make(f: Factory, **kw) -> sg.Pool[int]:
    return sg.Pool(f.create, close=f.close, **kw)


def borrow_n(pool, n):
    return [pool.acquire(block=False) for _ in range(n)]


# -- ordering -------------------------------------------------------------------------------


def test_lifo_hands_out_the_most_recently_returned():
    f = Factory()
    p = make(f, size=3, strategy="lifo")
    a, b, c = borrow_n(p, 3)
    for lease in (a, b, c):
        lease.release()
    assert [lease.resource for lease in borrow_n(p, 3)] == [3, 2, 1]


def test_fifo_hands_out_the_longest_idle():
    f = Factory()
    p = make(f, size=3, strategy="fifo")
    leases = borrow_n(p, 3)
    for lease in (leases[1], leases[0], leases[2]):
        lease.release()
    assert [lease.resource for lease in borrow_n(p, 3)] == [2, 1, 3]


def test_round_robin_cycles_in_creation_order():
    f = Factory()
    p = make(f, size=3, strategy="round_robin")
    for lease in borrow_n(p, 3):
        lease.release()
    got = []
    for _ in range(7):
        with p.checkout() as r:
            got.append(r)
    assert got == [1, 2, 3, 1, 2, 3, 1]


def test_least_used_prefers_the_least_borrowed():
    f = Factory()
    p = make(f, size=3, strategy="least_used")
    for lease in borrow_n(p, 3):
        lease.release()
    got = []
    for _ in range(6):
        with p.checkout() as r:
            got.append(r)
    assert got == [1, 2, 3, 1, 2, 3]
    assert p.stats()["checkouts"] == 9


def test_lazy_creation_reuses_before_creating():
    f = Factory()
    p = make(f, size=5)
    for _ in range(10):
        with p.checkout() as r:
            assert r == 1
    assert p.stats()["created"] == 1


def test_min_size_creates_eagerly():
    f = Factory()
    p = make(f, size=5, min_size=3)
    s = p.stats()
    assert s["total"] == 3 and s["idle"] == 3 and s["created"] == 3


# -- exhaustion, timeouts, waiters ------------------------------------------------------------


def test_non_blocking_raises_pool_exhausted_at_once():
    p = make(Factory(), size=2, timeout=5.0)
    held = borrow_n(p, 2)
    t0 = time.monotonic()
    with pytest.raises(sg.PoolExhausted, match="all 2 resources are in use"), p.checkout(block=False):
        pass
    assert time.monotonic() - t0 < 0.5
    assert p.stats()["exhausted"] == 1
    assert len(held) == 2


def test_timeout_raises_pool_timeout():
    p = make(Factory(), size=1)
    lease = p.acquire()
    t0 = time.monotonic()
    with pytest.raises(sg.PoolTimeout) as ei:
        p.acquire(timeout=0.1)
    assert isinstance(ei.value, TimeoutError)
    assert time.monotonic() - t0 >= 0.09
    s = p.stats()
    assert s["timeouts"] == 1 and s["waiting"] == 0
    lease.release()
    with p.checkout(timeout=0.1) as r:
        assert r == 1


def _wait_until(pred, timeout=10.0):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "condition not reached"
        time.sleep(0.001)


def test_waiters_are_served_in_fifo_order():
    p = make(Factory(), size=1, timeout=10.0)
    first = p.acquire()
    order: list[int] = []

    def waiter(i: int) -> None:
        with p.checkout():
            order.append(i)

    threads = []
    for i in range(6):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        _wait_until(lambda i=i: p.stats()["waiting"] == i + 1)
    first.release()
    for t in threads:
        t.join(10)
    assert order == list(range(6))
    s = p.stats()
    assert s["checkouts"] == 7 and s["waiting"] == 0 and s["mean_wait"] > 0


def test_a_newcomer_does_not_jump_the_queue():
    p = make(Factory(), size=1, timeout=10.0)
    first = p.acquire()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(p.acquire()))
    t.start()
    _wait_until(lambda: p.stats()["waiting"] == 1)
    first.release()  # handed straight to the waiter, never left idle for a newcomer
    with pytest.raises(sg.PoolExhausted):
        p.acquire(block=False)
    t.join(10)
    assert got[0].resource == 1
    got[0].release()


def test_many_threads_never_exceed_size_plus_overflow():
    p = make(Factory(), size=3, max_overflow=2, timeout=20.0)
    lock = threading.Lock()
    cur = [0]
    peak = [0]

    def worker() -> None:
        for _ in range(50):
            with p.checkout():
                with lock:
                    cur[0] += 1
                    peak[0] = max(peak[0], cur[0])
                time.sleep(0.0001)
                with lock:
                    cur[0] -= 1

    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    s = p.stats()
    assert s["checkouts"] == 400 and s["in_use"] == 0
    assert peak[0] <= 5 and s["total"] <= 5


# -- overflow ---------------------------------------------------------------------------------


def test_overflow_is_created_under_a_burst_and_reaped_after_ttl():
    f, clock = Factory(), Clock()
    p = make(f, size=2, max_overflow=2, overflow_ttl=5.0, clock=clock)
    leases = borrow_n(p, 4)
    assert p.stats()["overflow"] == 2
    with pytest.raises(sg.PoolExhausted):
        p.acquire(block=False)
    for lease in leases:
        lease.release()
    clock.t += 4.0
    assert p.maintain() == 0
    clock.t += 1.5
    assert p.maintain() == 2
    s = p.stats()
    assert s["total"] == 2 and s["overflow"] == 0 and s["idle"] == 2
    assert sorted(f.closed) == [1, 2]  # the two that came back first idled longest


def test_overflow_reaped_lazily_on_checkout():
    f, clock = Factory(), Clock()
    p = make(f, size=1, max_overflow=1, overflow_ttl=1.0, clock=clock)
    a, b = borrow_n(p, 2)
    a.release()
    b.release()
    clock.t += 2.0
    with p.checkout():
        pass
    assert p.stats()["total"] == 1 and len(f.closed) == 1


# -- validation and retirement ------------------------------------------------------------------


def test_check_on_borrow_is_skipped_within_the_window():
    f, clock = Factory(), Clock()
    checked: list[int] = []
    p = make(f, size=1, check=lambda r: checked.append(r) or True, check_window=0.5, clock=clock)
    with p.checkout():
        pass
    clock.t += 0.2
    with p.checkout():
        pass
    assert checked == []
    clock.t += 0.6
    with p.checkout():
        pass
    assert checked == [1]


@pytest.mark.parametrize("verdict", ["false", "raises"])
def test_failed_check_discards_and_replaces(verdict):
    f, clock = Factory(), Clock()

    def check(r: int) -> bool:
        if r == 1:
            if verdict == "raises":
                raise OSError("gone")
            return False
        return True

    p = make(f, size=1, check=check, clock=clock)
    with p.checkout():
        pass
    clock.t += 1.0
    with p.checkout() as r:
        assert r == 2
    assert f.closed == [1]
    assert p.stats()["failed_checks"] == 1 and p.stats()["total"] == 1


def test_resource_whose_use_raised_is_checked_before_reuse():
    f, clock = Factory(), Clock()
    checked: list[int] = []
    p = make(f, size=1, check=lambda r: checked.append(r) or True, clock=clock)
    with pytest.raises(RuntimeError), p.checkout():
        raise RuntimeError("query failed")
    with p.checkout() as r:  # within the window, but dirty: checked anyway
        assert r == 1
    assert checked == [1]


def test_resource_whose_use_raised_is_discarded_without_check():
    f = Factory()
    p = make(f, size=1)
    with pytest.raises(RuntimeError), p.checkout():
        raise RuntimeError("query failed")
    assert f.closed == [1]
    with p.checkout() as r:
        assert r == 2


def test_max_lifetime_retires_and_closes():
    f, clock = Factory(), Clock()
    p = make(f, size=2, max_lifetime=10.0, jitter=0.0, clock=clock)
    with p.checkout():
        pass
    clock.t += 9.9
    with p.checkout() as r:
        assert r == 1
    clock.t += 0.2
    with p.checkout() as r:
        assert r == 2
    assert f.closed == [1] and p.stats()["retired"] == 1


def test_max_idle_retires_idle_resources():
    f, clock = Factory(), Clock()
    p = make(f, size=2, max_idle=5.0, jitter=0.0, clock=clock)
    a, b = borrow_n(p, 2)
    a.release()
    clock.t += 3.0
    b.release()
    clock.t += 2.5  # a idle 5.5 s, b idle 2.5 s
    assert p.maintain() == 1
    assert f.closed == [1]
    with p.checkout() as r:
        assert r == 2


def test_lifetimes_have_jitter_within_bounds():
    f, clock = Factory(), Clock()
    p = make(f, size=50, max_lifetime=100.0, jitter=0.2, clock=clock)
    leases = borrow_n(p, 50)
    expires = [lease._entry.expires - clock.t for lease in leases]
    assert all(80.0 <= e <= 100.0 for e in expires)
    assert len(set(expires)) > 40  # they do not all expire together
    for lease in leases:
        lease.release()
    clock.t += 90.0
    p.maintain()
    assert 0 < len(f.closed) < 50


# -- borrower death ---------------------------------------------------------------------------------


def test_resource_held_by_a_dead_thread_is_reclaimed_with_a_warning():
    f = Factory()
    p = make(f, size=1, check=lambda r: True)
    keep = []

    def leaky() -> None:
        keep.append(p.acquire())  # the lease outlives the thread: no GC reclaim, only death

    t = threading.Thread(target=leaky, name="leaky-worker")
    t.start()
    t.join()
    with pytest.warns(sg.ResourceLeakWarning, match=r"test_pool\.py:\d+ in leaky\(\).*leaky-worker"):
        lease = p.acquire(timeout=2.0)
    assert lease.resource == 1
    lease.release()
    assert p.stats()["reclaimed"] == 1
    keep[0].release()  # a late release of a reclaimed lease is ignored
    assert p.stats()["in_use"] == 0 and p.stats()["idle"] == 1


def test_reclaimed_while_another_thread_waits():
    p = make(Factory(), size=1, timeout=5.0)
    keep = []
    started = threading.Event()
    release = threading.Event()

    def leaky() -> None:
        keep.append(p.acquire())
        started.set()
        release.wait(5)

    t = threading.Thread(target=leaky)
    t.start()
    started.wait(5)
    got = []
    w = threading.Thread(target=lambda: got.append(p.acquire(timeout=5.0)))
    w.start()
    _wait_until(lambda: p.stats()["waiting"] == 1)

    def borrower_dies_while_the_waiter_waits() -> None:
        release.set()
        t.join(5)
        w.join(5)

    with pytest.warns(sg.ResourceLeakWarning, match="ended"):
        borrower_dies_while_the_waiter_waits()
    assert got[0].resource == 2  # no check given: the orphan is discarded, a fresh one is created
    got[0].release()


def test_lease_garbage_collected_without_return_is_reclaimed():
    f = Factory()
    p = make(f, size=1, check=lambda r: True)

    def forget() -> None:
        p.acquire()  # lease dropped at once

    forget()
    gc.collect()
    with pytest.warns(sg.ResourceLeakWarning, match="garbage-collected"), p.checkout(block=False) as r:
        assert r == 1


# -- failures and shutdown ---------------------------------------------------------------------------


def test_create_failure_propagates_and_does_not_poison():
    f = Factory()
    p = make(f, size=1)
    f.fail_next = 1
    with pytest.raises(ConnectionError):
        p.acquire()
    s = p.stats()
    assert s["total"] == 0 and s["create_failures"] == 1
    with p.checkout() as r:
        assert r == 1


def test_create_failure_wakes_the_next_waiter():
    f = Factory()
    p = make(f, size=1, timeout=5.0)
    first = p.acquire()
    results: list[object] = []

    def waiter() -> None:
        try:
            with p.checkout() as r:
                results.append(r)
        except ConnectionError as e:
            results.append(e)

    ts = [threading.Thread(target=waiter) for _ in range(2)]
    for i, t in enumerate(ts):
        t.start()
        _wait_until(lambda i=i: p.stats()["waiting"] == i + 1)
    f.fail_next = 1
    first.discard()  # capacity freed; the first waiter's create fails, the second must not hang
    for t in ts:
        t.join(10)
    assert len(results) == 2
    assert isinstance(results[0], ConnectionError) and results[1] == 2


def test_close_drains_gracefully():
    f = Factory()
    p = make(f, size=2, timeout=5.0)
    a, b = borrow_n(p, 2)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            p.acquire()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    _wait_until(lambda: p.stats()["waiting"] == 1)
    p.close()
    t.join(5)
    assert len(errors) == 1 and isinstance(errors[0], sg.StoreClosed)
    assert f.closed == []  # both in use: closed when they come back
    a.release()
    assert f.closed == [1]
    b.release()
    assert f.closed == [1, 2]
    s = p.stats()
    assert s["total"] == 0 and s["waiting"] == 0
    with pytest.raises(sg.StoreClosed):
        p.acquire()


def test_close_closes_idle_resources_at_once():
    f = Factory()
    p = make(f, size=2)
    a, b = borrow_n(p, 2)
    a.release()
    p.close()
    assert f.closed == [1]
    b.release()
    assert f.closed == [1, 2]


def test_close_with_timeout_waits_for_returns():
    f = Factory()
    p = make(f, size=2)
    lease = p.acquire()
    threading.Timer(0.05, lease.release).start()
    t0 = time.monotonic()
    p.close(timeout=5.0)
    assert time.monotonic() - t0 < 4.0
    assert f.closed == [1]


def test_discard_closes_instead_of_reusing():
    f = Factory()
    p = make(f, size=1)
    with p.checkout() as r:
        p.discard(r)
    assert f.closed == [1]
    with pytest.raises(sg.ConfigError):
        p.discard(12345)


def test_failing_close_warns_and_frees_capacity():
    def bad_close(r):
        raise OSError("close failed")

    p = sg.Pool(itertools.count(1).__next__, size=1, close=bad_close)
    with pytest.warns(RuntimeWarning, match="close failed"), p.checkout() as r:
        p.discard(r)
    with p.checkout(block=False) as r:
        assert r == 2


# -- host_limit in one process -------------------------------------------------------------------------


def test_host_limit_caps_resources_that_exist(store):
    cap = sg.ConcurrencyLimiter("pg", 2, store=store)
    f = Factory()
    p1 = make(f, size=5, host_limit=cap)
    p2 = make(f, size=5, host_limit=cap)
    a = p1.acquire()
    b = p2.acquire()
    assert cap.in_use == 2
    with pytest.raises(sg.PoolExhausted, match="host limit"):
        p1.acquire(block=False)
    # someone found the cap full just now: a returned resource is closed to give its permit back
    a.release()
    assert cap.in_use == 1 and f.closed == [1] and p1.stats()["shed"] == 1
    a = p1.acquire(block=False)
    assert a.resource == 3 and cap.in_use == 2
    time.sleep(0.06)  # the contention hint is 50 ms old: idle resources keep their permits
    a.release()
    assert cap.in_use == 2 and p1.stats()["idle"] == 1
    p1.close()
    assert cap.in_use == 1
    b.release()
    p2.close()
    assert cap.in_use == 0


def test_host_limited_waiter_gets_a_permit_when_another_pool_closes(store):
    cap = sg.ConcurrencyLimiter("pg", 1, store=store)
    p1 = make(Factory(), size=1, host_limit=cap)
    p2 = make(Factory(), size=1, host_limit=cap)
    lease = p1.acquire()
    threading.Timer(0.05, lambda: (lease.release(), p1.close())).start()
    with p2.checkout(timeout=5.0):
        assert cap.in_use == 1


# -- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "size must be an int >= 1"),
        ({"size": "3"}, "size must be an int"),
        ({"size": 2, "max_overflow": -1}, "max_overflow"),
        ({"size": 2, "strategy": "random"}, "strategy must be one of"),
        ({"size": 2, "timeout": -1}, "timeout"),
        ({"size": 2, "check": 3}, "check must be callable"),
        ({"size": 2, "close": 3}, "close must be callable"),
        ({"size": 2, "max_lifetime": 0}, "max_lifetime must be > 0"),
        ({"size": 2, "max_idle": -5}, "max_idle"),
        ({"size": 2, "host_limit": 5}, "host_limit must be a ConcurrencyLimiter"),
        ({"size": 2, "min_size": 3}, "min_size"),
        ({"size": 2, "overflow_ttl": None}, "overflow_ttl"),
        ({"size": 2, "jitter": 1.0}, "jitter"),
    ],
)
def test_bad_arguments_raise_configerror(kwargs, match):
    with pytest.raises(sg.ConfigError, match=match):
        sg.Pool(lambda: 1, **kwargs)


def test_create_must_be_callable():
    with pytest.raises(sg.ConfigError, match="create must be callable"):
        sg.Pool(5, size=1)  # type: ignore[arg-type]


def test_stats_fields():
    p = make(Factory(), size=2, max_overflow=1)
    lease = p.acquire()
    s = p.stats()
    for k in ("size", "idle", "in_use", "overflow", "waiting", "checkouts", "timeouts", "mean_wait"):
        assert k in s
    assert (s["size"], s["in_use"], s["idle"], s["checkouts"]) == (2, 1, 0, 1)
    lease.release()


# -- Hypothesis: resource choice and invariants against the model -----------------------------------------


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool: sg.Pool[int] | None = None
        self.model: PoolModel | None = None
        self.leases: dict[int, object] = {}
        self.factory = Factory()

    @precondition(lambda self: self.pool is None)
    @rule(size=st.integers(1, 4), overflow=st.integers(0, 3),
          strategy=st.sampled_from(["lifo", "fifo", "round_robin", "least_used"]))
    def start(self, size, overflow, strategy):
        self.pool = make(self.factory, size=size, max_overflow=overflow, strategy=strategy)
        self.model = PoolModel(size, overflow, strategy)

    @precondition(lambda self: self.pool is not None)
    @rule()
    def checkout(self):
        want = self.model.checkout()
        if want is None:
            with pytest.raises(sg.PoolExhausted):
                self.pool.acquire(block=False)
            return
        lease = self.pool.acquire(block=False)
        assert lease.resource == want
        self.leases[want] = lease

    @precondition(lambda self: self.pool is not None and self.leases)
    @rule(data=st.data(), discard=st.booleans())
    def give_back(self, data, discard):
        r = data.draw(st.sampled_from(sorted(self.leases)))
        lease = self.leases.pop(r)
        if discard:
            lease.discard()
            self.model.discard(r)
        else:
            lease.release()
            self.model.give_back(r)

    @invariant()
    def consistent(self):
        if self.pool is None:
            return
        s = self.pool.stats()
        assert s["in_use"] == len(self.model.out)
        assert s["idle"] == len(self.model.idle)
        assert s["total"] == self.model.total <= self.model.max
        assert s["overflow"] == max(0, s["total"] - self.pool.size)

    def teardown(self):
        for lease in self.leases.values():
            lease.release()


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@pytest.fixture
def fast_switching():
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # force thread switches inside the lock-free paths
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("strategy", ["lifo", "fifo", "round_robin", "least_used"])
@pytest.mark.parametrize("overflow", [0, 2])
def test_threads_never_share_a_resource(strategy, overflow, fast_switching):
    """Lock-free returns race with locked checkouts: no resource is ever lent twice at once."""
    f = Factory()
    p = make(f, size=3, max_overflow=overflow, strategy=strategy, timeout=20.0, overflow_ttl=0.0)
    lock = threading.Lock()
    lent: set[int] = set()
    dup: list[int] = []
    count = [0]

    def worker() -> None:
        for i in range(300):
            with p.checkout() as r:
                with lock:
                    if r in lent:
                        dup.append(r)
                    lent.add(r)
                if i % 7 == 0:
                    time.sleep(0)
                with lock:
                    lent.discard(r)
                    count[0] += 1

    ts = [threading.Thread(target=worker) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    s = p.stats()
    assert dup == [] and count[0] == 1800
    assert s["checkouts"] == 1800 and s["in_use"] == 0 and s["waiting"] == 0
    assert s["idle"] == s["total"] <= 3 + overflow
    assert s["created"] - s["closed"] == s["total"]


def test_resource_handed_to_a_waiter_as_the_pool_closes_is_not_lost():
    f = Factory()
    p = make(f, size=1, timeout=5.0)
    lease = p.acquire()
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(sg.StoreClosed, p.acquire).value))
    t.start()
    _wait_until(lambda: p.stats()["waiting"] == 1)
    with p._lock:  # hand the resource over and close in one step, before the waiter runs
        w = p._waiters.popleft()
        p._out.discard(lease._entry)
        w.entry = lease._entry
        lease._entry = None
        p._closed = True
        w.cond.notify()
    t.join(5)
    assert len(errors) == 1
    assert f.closed == [1] and p.stats()["total"] == 0


class LifetimeMachine(RuleBasedStateMachine):
    """Fake clock + lifetimes + idle timeout + overflow reaping: a resource past max_lifetime or
    max_idle is never lent, every created resource is closed at most once and never lent after,
    and the counts always add up."""

    L, IDLE, TTL = 10.0, 4.0, 2.0

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.born: dict[int, float] = {}
        self.back: dict[int, float] = {}
        self.closed: list[int] = []
        ids = itertools.count(1)

        def create() -> int:
            r = next(ids)
            self.born[r] = self.clock.t
            return r

        self.pool = sg.Pool(create, close=self.closed.append, size=2, max_overflow=2, max_lifetime=self.L,
                            max_idle=self.IDLE, overflow_ttl=self.TTL, jitter=0.0, clock=self.clock,
                            check=lambda r: True, check_window=1.0)
        self.leases: dict[int, object] = {}

    @rule()
    def checkout(self):
        try:
            lease = self.pool.acquire(block=False)
        except sg.PoolExhausted:
            assert len(self.leases) == 4
            return
        r = lease.resource
        now = self.clock.t
        assert r not in self.leases and r not in self.closed
        assert now - self.born[r] < self.L
        if r in self.back:
            assert now - self.back[r] < self.IDLE
        self.leases[r] = lease

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), failed=st.booleans())
    def give_back(self, data, failed):
        r = data.draw(st.sampled_from(sorted(self.leases)))
        self.back[r] = self.clock.t
        self.leases.pop(r).release(failed=failed)

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 2.5, 5.0]))
    def advance(self, dt):
        self.clock.t += dt

    @rule()
    def maintain(self):
        self.pool.maintain()

    @invariant()
    def counts(self):
        s = self.pool.stats()
        assert s["in_use"] == len(self.leases)
        assert s["total"] == s["idle"] + s["in_use"] <= 4
        assert len(set(self.closed)) == len(self.closed) == s["closed"]
        assert s["created"] - s["closed"] == s["total"]
        assert not set(self.closed) & set(self.leases)

    def teardown(self):
        for lease in self.leases.values():
            lease.release()
        self.pool.close()
        assert sorted(self.closed) == sorted(self.born)


TestLifetimeMachine = LifetimeMachine.TestCase
TestLifetimeMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)

"""ConcurrencyLimiter in one process: exact caps, timeouts, idempotent release, dead-holder
reclaim, pid + start-time identity, AIMD, validation; Hypothesis against the model."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule
from models_concurrency import CapModel

import sluicegate as sg
from sluicegate import _procident as pi


def test_acquire_up_to_limit_then_full(store):
    cap = sg.ConcurrencyLimiter("db", 3, store=store)
    permits = [cap.acquire(block=False) for _ in range(3)]
    assert cap.in_use == 3 and cap.available == 0
    assert cap.try_acquire() is None
    with pytest.raises(sg.ConcurrencyLimitExceeded, match="all 3 permits"):
        cap.acquire(block=False)
    assert permits[0].release() is True
    assert cap.in_use == 2
    assert cap.try_acquire() is not None
    assert cap.in_use == 3


def test_timeout_raises_timeouterror_after_waiting(store):
    cap = sg.ConcurrencyLimiter("db", 1, store=store)
    cap.acquire()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        cap.acquire(timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    assert cap.stats()["timeouts"] == 1


def test_release_is_idempotent_and_never_frees_another_permit(store):
    cap = sg.ConcurrencyLimiter("db", 2, store=store)
    p1 = cap.acquire()
    assert p1.release() is True
    p2 = cap.acquire()
    p3 = cap.acquire()
    assert {p2.index, p3.index} == {0, 1}
    assert p1.release() is False  # double release: p2/p3 (same process, maybe same record) stay held
    assert cap.in_use == 2
    assert cap.release() is True  # the last acquired (p3)
    assert cap.release() is True  # then p2
    assert cap.release() is False  # nothing left
    assert cap.in_use == 0


def test_slot_context_manager_releases_on_exception(store):
    cap = sg.ConcurrencyLimiter("db", 1, store=store)
    with pytest.raises(KeyError), cap.slot(timeout=0.5):
        assert cap.in_use == 1
        raise KeyError("x")
    assert cap.in_use == 0
    with cap.slot() as p:
        assert p.held and cap.in_use == 1
    assert not p.held and cap.in_use == 0


def test_no_bookkeeping_grows_with_use(store):
    cap = sg.ConcurrencyLimiter("db", 2, store=store)
    for _ in range(500):
        with cap.slot():
            pass
        cap.acquire().release()
    assert len(cap._held) < 40 and cap.in_use == 0
    assert cap.stats()["granted"] == 1000


def test_slot_acquires_on_enter_not_on_creation(store):
    cap = sg.ConcurrencyLimiter("db", 1, store=store)
    s = cap.slot(timeout=0)
    assert cap.in_use == 0
    with s:
        assert cap.in_use == 1
        with pytest.raises(sg.ConcurrencyLimitExceeded), cap.slot(timeout=0):
            pass
    assert cap.in_use == 0


def test_threads_never_exceed_the_cap_exactly(store):
    cap = sg.ConcurrencyLimiter("db", 3, store=store)
    lock = threading.Lock()
    cur = [0]
    peak = [0]
    done = [0]

    def worker() -> None:
        for _ in range(40):
            with cap.slot(timeout=10):
                with lock:
                    cur[0] += 1
                    peak[0] = max(peak[0], cur[0])
                time.sleep(0.0002)
                with lock:
                    cur[0] -= 1
                    done[0] += 1

    ths = [threading.Thread(target=worker) for _ in range(6)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(30)
    assert done[0] == 240
    assert 1 <= peak[0] <= 3
    assert cap.in_use == 0


def test_states_shared_between_two_objects_over_one_store(store):
    a = sg.ConcurrencyLimiter("db", 2, store=store)
    b = sg.ConcurrencyLimiter("db", 2, store=store)
    a.acquire()
    b.acquire()
    assert a.in_use == b.in_use == 2
    assert a.try_acquire() is None and b.try_acquire() is None


def test_names_and_namespaces_are_separate(store):
    a = sg.ConcurrencyLimiter("x", 1, store=store)
    b = sg.ConcurrencyLimiter("y", 1, store=store)
    a.acquire()
    assert b.try_acquire() is not None
    c = store.counter("x")  # a counter "x" lives in another namespace
    assert c.value == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"limit": 0}, "limit must be an int"),
        ({"limit": -1}, "limit must be an int"),
        ({"limit": True}, "limit must be an int"),
        ({"limit": 1.5}, "limit must be an int"),
        ({"limit": 70000}, "limit must be an int"),
        ({"limit": 3, "min_limit": 1}, "only with adaptive=True"),
        ({"limit": 3, "adaptive": True, "min_limit": 5, "max_limit": 4}, "min_limit"),
        ({"limit": 9, "adaptive": True, "min_limit": 1, "max_limit": 4}, "within min_limit..max_limit"),
        ({"limit": 3, "adaptive": True, "backoff": 1.5}, "backoff"),
        ({"limit": 3, "adaptive": "yes"}, "adaptive must be a bool"),
        ({"limit": 3, "drop_on": 5}, "drop_on"),
        ({"limit": 3, "slow_call": -1}, "slow_call"),
    ],
)
def test_bad_arguments_raise_configerror_naming_them(store, kwargs, match):
    with pytest.raises(sg.ConfigError, match=match):
        sg.ConcurrencyLimiter("db", store=store, **kwargs)


def test_bad_name_and_store(store):
    with pytest.raises(sg.ConfigError, match="name"):
        sg.ConcurrencyLimiter("", 1, store=store)
    with pytest.raises(sg.ConfigError, match="store must be a SharedStore"):
        sg.ConcurrencyLimiter("db", 1, store="nope")  # type: ignore[arg-type]


def test_bad_timeout(store):
    cap = sg.ConcurrencyLimiter("db", 1, store=store)
    cap.acquire()
    with pytest.raises(sg.ConfigError, match="timeout"):
        cap.acquire(timeout=-1)


def test_closed_store_raises(store_name):
    s = sg.SharedStore(store_name, capacity=256)
    cap = sg.ConcurrencyLimiter("db", 1, store=s)
    s.close()
    with pytest.raises(sg.StoreClosed):
        cap.try_acquire()


# -- identity and reclaim ------------------------------------------------------------------


def test_owner_word_is_pid_and_start_time():
    me = pi.current_owner()
    assert pi.owner_pid(me) == os.getpid()
    assert me & pi.START_MASK == pi.process_start(os.getpid()) & pi.START_MASK
    assert pi.owner_alive(me)
    # same pid, another start time: a reused pid is not the holder
    assert not pi.owner_alive(pi.owner_word(os.getpid(), (me & pi.START_MASK) + 1))
    # a pid that does not exist
    assert not pi.owner_alive(pi.owner_word((1 << 22) - 1, 5))


def test_full_cap_reclaims_dead_holders_only(store):
    cap = sg.ConcurrencyLimiter("db", 3, store=store)
    me = pi.current_owner()
    reused = pi.owner_word(os.getpid(), (me & pi.START_MASK) + 7)  # our pid, another process's start
    gone = pi.owner_word((1 << 22) - 3, 1)  # no such pid
    live_other = pi.owner_word(1, pi.process_start(1) or 0)  # init: alive, not us
    assert cap._engine.try_acquire(reused, 0) >= 0
    assert cap._engine.try_acquire(gone, 0) >= 0
    assert cap._engine.try_acquire(live_other, 0) >= 0
    assert cap.in_use == 3
    got = [cap.try_acquire(), cap.try_acquire(), cap.try_acquire()]
    assert got[0] is not None and got[1] is not None and got[2] is None
    owners = {o for _, o, _ in cap._engine.holders()}
    assert owners == {me, live_other}
    assert cap.stats()["reclaimed"] == 2


def test_own_records_are_never_reclaimed(store):
    cap = sg.ConcurrencyLimiter("db", 2, store=store)
    cap.acquire()
    cap.acquire()
    assert cap.reclaim() == 0
    assert cap.in_use == 2


def test_holders_report(store):
    cap = sg.ConcurrencyLimiter("db", 2, store=store)
    cap.acquire()
    (h,) = cap.holders()
    assert h["pid"] == os.getpid() and h["alive"] and h["held_for"] >= 0


# -- AIMD ------------------------------------------------------------------------------------


def test_aimd_grows_on_success_and_shrinks_on_drop_within_bounds(store):
    cap = sg.ConcurrencyLimiter("db", 4, store=store, adaptive=True, min_limit=2, max_limit=6, backoff=0.5)
    held = [cap.acquire() for _ in range(4)]
    for _ in range(10):
        cap.record(True)  # inflight 4 * 2 >= limit: +1 each, capped at 6
    assert cap.limit == 6
    assert cap.record(False) == 3
    assert cap.record(False) == 2  # floor(3 * 0.5) = 1 -> min_limit
    assert cap.record(False) == 2
    for p in held:
        p.release()
    assert cap.record(True) == 2  # inflight 0: no growth when the limit is not being used


def test_aimd_slot_outcomes(store):
    cap = sg.ConcurrencyLimiter("db", 4, store=store, adaptive=True, min_limit=1, max_limit=8, backoff=0.5)
    with pytest.raises(TimeoutError), cap.slot():
        raise TimeoutError
    assert cap.limit == 2
    with pytest.raises(ValueError), cap.slot():
        raise ValueError  # not a drop, not a success
    assert cap.limit == 2
    with cap.slot():
        pass  # inflight 1 * 2 >= 2
    assert cap.limit == 3
    assert cap.stats()["drops"] == 1


def test_adaptive_limit_bounds_new_permits(store):
    cap = sg.ConcurrencyLimiter("db", 4, store=store, adaptive=True, min_limit=1, max_limit=4, backoff=0.5)
    held = [cap.acquire() for _ in range(4)]
    cap.record(False)  # limit 2 while 4 are held
    assert cap.limit == 2
    for p in held[:2]:
        p.release()
    assert cap.in_use == 2
    assert cap.try_acquire() is None  # 2 held, limit 2
    held[2].release()
    assert cap.try_acquire() is not None
    assert cap.in_use == 2


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 12),
    span=st.integers(0, 12),
    backoff=st.integers(100, 1000),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=40),
)
def test_aimd_matches_model(limit, span, backoff, ops):
    s = sg.SharedStore(capacity=256)
    try:
        hi = limit + span
        cap = sg.ConcurrencyLimiter("m", limit, store=s, adaptive=True, min_limit=1, max_limit=hi,
                                    backoff=backoff / 1024 + 1e-9)
        model = CapModel(limit, hi, 1, hi, cap._backoff_1024, True)
        for ok, inflight in ops:
            if ok:
                assert cap._engine.on_success(inflight, hi) == model.on_success(inflight)
            else:
                assert cap._engine.on_drop(cap._backoff_1024, 1) == model.on_drop()
            assert 1 <= cap.limit <= hi
    finally:
        s.close()


class CapMachine(RuleBasedStateMachine):
    """Permits, double releases and dead holders against the model: in_use and the set of
    holders always match, and in_use never exceeds the limit."""

    permits = Bundle("permits")

    def __init__(self) -> None:
        super().__init__()
        self.store = sg.SharedStore(capacity=256)
        self.cap = sg.ConcurrencyLimiter("sm", 4, store=self.store)
        self.model = CapModel(4, 4, 4, 4, 1, False)
        self.dead_pid = (1 << 22) - 11

    def teardown(self) -> None:
        self.store.close()

    @rule(target=permits)
    def acquire(self):
        p = self.cap.try_acquire()
        if p is None:
            # full: the model must be full of live holders (dead ones were reclaimed)
            dead = [i for i, o in self.model.holders.items() if o != p_owner()]
            for i in dead:
                self.model.release(i, self.model.holders[i])
            assert not self.model.try_acquire(p_owner())
            return None
        if len(self.model.holders) >= 4:  # the implementation reclaimed dead holders first
            for i, o in list(self.model.holders.items()):
                if o != p_owner():
                    self.model.release(i, o)
        self.model.holders[p.index] = p.owner
        return p

    @rule(p=consumes(permits))
    def release(self, p):
        if p is None:
            return
        assert p.release() == self.model.release(p.index, p.owner)

    @rule(p=permits)
    def release_again(self, p):
        if p is None or p.held:
            return
        assert p.release() is False

    @rule()
    def dead_holder_appears(self):
        self.dead_pid -= 1
        owner = pi.owner_word(self.dead_pid, 3)
        idx = self.cap._engine.try_acquire(owner, 0)
        if idx >= 0:
            self.model.holders[idx] = owner
        else:
            assert len(self.model.holders) == 4

    @invariant()
    def counts_match(self):
        assert self.cap.in_use == len(self.model.holders) <= self.cap.limit
        assert {i: o for i, o, _ in self.cap._engine.holders()} == self.model.holders


def p_owner() -> int:
    return pi.current_owner()


TestCapMachine = CapMachine.TestCase
TestCapMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# -- async -------------------------------------------------------------------------------------


def test_async_slot_and_timeout(store):
    cap = sg.ConcurrencyLimiter("db", 2, store=store)

    async def main() -> tuple[int, int]:
        peak = 0
        cur = 0
        done = 0

        async def task() -> None:
            nonlocal peak, cur, done
            async with cap.slot_async(timeout=10):
                cur += 1
                peak = max(peak, cur)
                await asyncio.sleep(0.001)
                cur -= 1
                done += 1

        await asyncio.gather(*[task() for _ in range(30)])
        p1 = await cap.acquire_async()
        p2 = await cap.acquire_async()
        with pytest.raises(sg.ConcurrencyLimitExceeded):
            await cap.acquire_async(timeout=0.05)
        p1.release()
        p2.release()
        return peak, done

    peak, done = asyncio.run(main())
    assert done == 30 and peak == 2 and cap.in_use == 0


def test_local_release_wakes_a_waiting_thread(store, monkeypatch):
    from sluicegate import concurrency

    monkeypatch.setattr(concurrency, "_FIRST_DELAY", 30.0)  # polling alone would take 15+ s
    monkeypatch.setattr(concurrency, "_MAX_DELAY", 30.0)
    cap = sg.ConcurrencyLimiter("db", 1, store=store)
    p = cap.acquire()
    got: list[int] = []

    def waiter() -> None:
        with cap.slot(timeout=60.0):
            got.append(1)

    t = threading.Thread(target=waiter)
    t.start()
    while cap._engine.nwait == 0:
        time.sleep(0.001)
    p.release()
    t.join(10)
    assert got == [1] and not t.is_alive()


def test_slow_calls_count_as_drops(store):
    cap = sg.ConcurrencyLimiter("db", 4, store=store, adaptive=True, min_limit=1, max_limit=8, backoff=0.5,
                                slow_call=0.0)
    with cap.slot():
        time.sleep(0.001)
    assert cap.limit == 2


def test_a_released_slot_cannot_be_reentered(store):
    cap = sg.ConcurrencyLimiter("db", 1, store=store)
    s = cap.slot()
    with s:
        pass
    with pytest.raises(RuntimeError, match="already released"), s:
        pass
    with cap.acquire():  # a permit from acquire() works as a context manager too
        assert cap.in_use == 1
    assert cap.in_use == 0


def test_decorator_sync_and_async(store):
    cap = sg.ConcurrencyLimiter("db", 1, store=store)

    @cap
    def work(x: int) -> int:
        assert cap.in_use == 1
        return x * 2

    @cap
    async def awork(x: int) -> int:
        assert cap.in_use == 1
        await asyncio.sleep(0)
        return x + 1

    assert work(21) == 42 and work.__name__ == "work"
    assert asyncio.run(awork(1)) == 2
    assert cap.in_use == 0


def test_ps_fallback_identity(monkeypatch):
    """The non-Linux path (ps -o lstart) gives a stable start time and spots missing pids."""
    import shutil

    if shutil.which("ps") is None:
        pytest.skip("no ps on this system")
    monkeypatch.setattr(pi, "_LINUX", False)
    a = pi.process_start(os.getpid())
    assert a is not None and a == pi.process_start(os.getpid())
    assert pi.process_start((1 << 22) - 5) is None
    me = pi.owner_word(os.getpid(), a)
    assert pi.owner_alive(me)
    assert not pi.owner_alive(pi.owner_word(os.getpid(), a - 100))


def test_ps_fallback_reads_the_real_start_time_whatever_the_locale(monkeypatch):
    """ps prints lstart in the user's locale; it is run in the C locale, so the parse
    agrees with the kernel's record (boot time + start ticks) in any locale."""
    import shutil

    if shutil.which("ps") is None or not os.path.exists("/proc/stat"):
        pytest.skip("needs ps and /proc to compare")
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    ticks = pi._proc_start(os.getpid())
    assert ticks is not None and ticks >= 0
    kernel = btime + ticks / os.sysconf("SC_CLK_TCK")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    monkeypatch.setenv("LC_TIME", "fr_FR.UTF-8")
    via_ps = pi._ps_start(os.getpid())
    assert via_ps is not None and via_ps != pi.UNKNOWN
    assert abs(via_ps - kernel) <= 2, (via_ps, kernel)


def test_a_process_whose_start_time_cannot_be_read_keeps_its_permit(monkeypatch):
    """hidepid /proc or a missing ps: the holder exists, we cannot tell who it is, so
    it must count as alive (taking its permit would let the cap over-admit)."""
    monkeypatch.setattr(pi, "_proc_start", lambda pid: pi.UNKNOWN)
    monkeypatch.setattr(pi, "_ps_start", lambda pid: pi.UNKNOWN)
    assert pi.owner_alive(pi.owner_word(1, 12345))  # pid 1 exists
    assert not pi.owner_alive(pi.owner_word((1 << 22) - 5, 12345))  # no such pid: still dead


def test_without_proc_every_existing_holder_counts_as_alive(monkeypatch):
    """No /proc mounted: a pid's stat file is missing whether or not it runs, so a
    missing file must not read as 'exited' (that would reclaim live holders' permits)."""
    real_exists = os.path.exists
    monkeypatch.setattr(pi, "_LINUX", True)
    monkeypatch.setattr(os.path, "exists", lambda p: False if str(p).startswith("/proc") else real_exists(p))
    real_open = open

    def no_proc_open(path, *a, **kw):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", no_proc_open)
    assert pi.process_start(os.getpid()) == pi.UNKNOWN
    assert pi.owner_alive(pi.owner_word(os.getpid(), 7))
    assert not pi.owner_alive(pi.owner_word((1 << 22) - 5, 7))

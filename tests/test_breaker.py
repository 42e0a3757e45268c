"""CircuitBreaker API: trip rules, states and admin, ways to call, outcomes,
listeners, fault injection, configuration errors, pickling."""

from __future__ import annotations

import asyncio
import gc
import math
import pickle
import struct
import threading
import time

import pytest
from conftest import unique_name

import sluicegate as sg

S = 1_000_000_000
T0 = 1_000 * S  # fake store time for the raw (now=) API


@pytest.fixture
def anon():
    s = sg.SharedStore(capacity=1024)
    yield s
    s.close()


def mk(store, **kw) -> sg.CircuitBreaker:
    return sg.CircuitBreaker(unique_name("br"), store=store, **kw)


def fail(br, exc=OSError):
    with pytest.raises(exc), br:
        raise exc("boom")


def fail_at(br, now, duration=0):
    t = br.try_enter(now)
    assert t
    br.report(t, 1, duration, now)


def ok_at(br, now, duration=0):
    t = br.try_enter(now)
    assert t
    br.report(t, 0, duration, now)


# ---- trip rules --------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
def test_nth_failure_opens(anon, n):
    br = mk(anon, failure_threshold=n)
    for _ in range(n - 1):
        fail(br)
        assert br.state == "closed"
    fail(br)
    assert br.state == "open"


def test_failures_outside_the_window_do_not_count(anon):
    br = mk(anon, failure_threshold=3, window=1.0, buckets=10)
    fail_at(br, T0)
    fail_at(br, T0 + S // 2)
    fail_at(br, T0 + 2 * S)  # the first two have left the window
    assert br.state_at(T0 + 2 * S) == "closed"
    assert br.window(T0 + 2 * S)[1] == 1
    fail_at(br, T0 + 2 * S + 1)
    fail_at(br, T0 + 2 * S + 2)
    assert br.state_at(T0 + 2 * S + 3) == "open"


@pytest.mark.parametrize("gap_buckets", [2**19 + 5, 2**20, 3 * 2**20 + 10])
def test_long_idle_gaps_never_revive_old_buckets(anon, gap_buckets):
    br = mk(anon, failure_threshold=3, window=0.01, buckets=10)  # 1 ms buckets
    fail_at(br, T0)
    fail_at(br, T0 + 1)
    later = T0 + gap_buckets * MS_
    fail_at(br, later)  # same bucket slot (and, for 2**20, the same low epoch bits) as the old ones
    assert br.window(later) == (1, 1, 0, 0)
    assert br.state_at(later) == "closed"


def test_failure_rate_needs_minimum_calls(anon):
    br = mk(anon, failure_threshold=None, failure_rate=0.5, minimum_calls=4)
    for _ in range(3):
        fail_at(br, T0)
    assert br.state_at(T0) == "closed"  # 3 calls < minimum_calls
    ok_at(br, T0)  # 3/4 failed
    assert br.state_at(T0) == "open"


def test_failure_rate_below_threshold_stays_closed(anon):
    br = mk(anon, failure_threshold=None, failure_rate=0.5, minimum_calls=4)
    for i in range(40):
        (fail_at if i % 3 == 2 else ok_at)(br, T0 + i)
    assert br.state_at(T0 + 50) == "closed"


def test_slow_calls_trip(anon):
    br = mk(anon, failure_threshold=None, slow_call_duration=0.1, slow_call_rate=0.5, minimum_calls=4)
    ok_at(br, T0, duration=S // 20)
    ok_at(br, T0, duration=S // 5)
    ok_at(br, T0, duration=S // 5)
    assert br.state_at(T0) == "closed"
    ok_at(br, T0, duration=0)  # 2 of 4 slow
    assert br.state_at(T0) == "open"
    assert br.totals()[2] == 2


def test_slow_call_measured_through_with(anon):
    br = mk(anon, failure_threshold=None, slow_call_duration=0.02, minimum_calls=1)
    with br:
        time.sleep(0.03)
    assert br.stats()["slow_calls"] == 1
    assert br.state == "open"


# ---- open, half-open, backoff, generations ------------------------------------------


def test_open_half_open_closed_cycle(anon):
    br = mk(anon, failure_threshold=1, reset_timeout=1.0, half_open_calls=2)
    fail_at(br, T0)
    assert br.state_at(T0 + S - MS_) == "open"
    assert br.try_enter(T0 + S // 2) == 0
    assert br.last_rejection == ("open", S // 2)
    assert br.state_at(T0 + S) == "half_open"
    p1, p2 = br.try_enter(T0 + S), br.try_enter(T0 + S)
    assert p1 and p2 and br.try_enter(T0 + S) == 0
    assert br.last_rejection[0] == "half_open"
    br.report(p1, 0, 0, T0 + S)
    assert br.state_at(T0 + S) == "half_open"
    br.report(p2, 0, 0, T0 + S)
    assert br.state_at(T0 + S) == "closed"


MS_ = 1_000_000


def test_backoff_grows_open_time_and_is_capped(anon):
    br = mk(anon, failure_threshold=1, reset_timeout=1.0, backoff_multiplier=2.0, max_reset_timeout=3.0)
    now = T0
    fail_at(br, now)
    expected = [1, 2, 3, 3]
    for k, secs in enumerate(expected):
        assert br.retry_after_ns(now) == secs * S, k
        now += secs * S
        assert br.state_at(now) == "half_open"
        fail_at(br, now)  # the probe fails: open again, longer
    ok_now = now + 3 * S
    ok_at(br, ok_now)  # a good probe closes and forgets the backoff
    assert br.state_word()[4] == 0
    fail_at(br, ok_now + MS_)
    assert br.retry_after_ns(ok_now + MS_) == S


def test_jitter_is_deterministic_and_bounded(anon):
    name = unique_name("jit")
    a = sg.CircuitBreaker(name, store=anon, reset_timeout=10.0, jitter=0.5)
    b = sg.CircuitBreaker(name, store=anon, reset_timeout=10.0, jitter=0.5)
    vals = {a.open_ns(1, g) for g in range(1, 40)}
    assert all(5 * S <= v <= 15 * S for v in vals) and len(vals) > 30
    assert [a.open_ns(1, g) for g in range(9)] == [b.open_ns(1, g) for g in range(9)]


def test_results_from_before_a_transition_are_discarded(anon):
    br = mk(anon, failure_threshold=2, reset_timeout=1.0)
    early = br.try_enter(T0)
    fail_at(br, T0)
    br.force_open()
    br.force_close()  # two transitions: a new generation
    br.report(early, 1, 0, T0)  # admitted before: must not count in the window
    assert br.window(T0)[:2] == (0, 0)
    assert br.totals()[:2] == (2, 2)  # totals still count every call
    assert br.state_at(T0) == "closed"


def test_probe_timeout_restarts_the_round(anon):
    br = mk(anon, failure_threshold=1, reset_timeout=1.0, probe_timeout=0.5)
    fail_at(br, T0)
    lost = br.try_enter(T0 + S)
    assert lost & sg._core.BR_TICKET_PROBE
    assert br.try_enter(T0 + S + S // 4) == 0
    fresh = br.try_enter(T0 + S + S // 2)
    assert fresh & sg._core.BR_TICKET_PROBE
    br.report(lost, 1, 0, T0 + S + S // 2)  # the lost probe's late failure is discarded
    assert br.state_at(T0 + S + S // 2) == "half_open"
    br.report(fresh, 0, 0, T0 + S + S // 2)
    assert br.state_at(T0 + S + S // 2) == "closed"


def test_degraded_levels_then_closed(anon):
    br = mk(anon, failure_threshold=1, reset_timeout=1.0, degraded=True, degraded_step=1.0, seed=7)
    fail_at(br, T0)
    ok_at(br, T0 + S)
    t = T0 + S
    assert br.state_at(t) == "degraded"
    admitted = []
    for lvl in range(3):
        n = 0
        for i in range(2000):
            tk = br.try_enter(t + lvl * S + i)
            if tk:
                n += 1
                br.report(tk, 0, 0, t + lvl * S + i)
        admitted.append(n)
    assert 400 < admitted[0] < 600 and 900 < admitted[1] < 1100 and 1400 < admitted[2] < 1600
    assert br.state_at(t + 3 * S) == "closed"
    assert br.stats()["failures"] == 1  # degraded rejections are not failures


def test_degraded_is_reproducible_with_a_seed(anon):
    def run():
        br = mk(anon, failure_threshold=1, reset_timeout=1.0, degraded=(0.5,), seed=42)
        fail_at(br, T0)
        ok_at(br, T0 + S)
        return [bool(br.try_enter(T0 + S + i)) for i in range(200)]

    assert run() == run()


def test_adaptive_throttling_rejects_a_fraction_and_never_counts_failures(anon):
    br = mk(anon, failure_threshold=None, adaptive=True, adaptive_k=2.0, adaptive_max_reject=0.5, seed=3, window=10.0)
    rejected = 0
    for i in range(2000):
        tk = br.try_enter(T0 + i)
        if tk:
            br.report(tk, 1, 0, T0 + i)  # the backend fails every call
        else:
            rejected += 1
            assert br.last_rejection[0] == "adaptive"
    calls, failures, _, throttled = br.window(T0 + 2000)
    assert throttled == rejected and calls == failures == 2000 - rejected
    assert 0.4 < rejected / 2000 <= 0.55  # capped at 0.5
    assert br.totals()[1] == 2000 - rejected
    assert br.state_at(T0 + 2000) == "closed"


def test_adaptive_admits_everything_while_healthy(anon):
    br = mk(anon, adaptive=True, seed=1)
    for i in range(500):
        ok_at(br, T0 + i)


# ---- admin --------------------------------------------------------------------------


def test_force_open_force_close(anon):
    br = mk(anon)
    br.force_open()
    assert br.state == "forced_open"
    with pytest.raises(sg.CircuitOpen), br:
        pass
    assert br.state == "forced_open"
    br.force_close()
    assert br.state == "closed"
    with br:
        pass


def test_disable_beats_everything_and_still_counts(anon):
    br = mk(anon, failure_threshold=1)
    br.force_open()
    br.disable()
    for _ in range(5):
        fail(br)
    assert br.state == "disabled"
    st = br.stats()
    assert (st["calls"], st["failures"], st["window_failures"]) == (5, 5, 5)
    br.inject_faults(reject_rate=1.0)
    with br:  # disabled: not even injected rejections
        pass
    br.clear_faults()
    br.force_close()
    fail(br)
    assert br.state == "open"


def test_reset_clears_stats_and_backoff(anon):
    br = mk(anon, failure_threshold=1, backoff_multiplier=2.0)
    fail(br)
    with pytest.raises(sg.CircuitOpen):
        br.call(lambda: None)
    br.reset()
    st = br.stats()
    assert (st["state"], st["calls"], st["failures"], st["rejections"]) == ("closed", 0, 0, 0)
    assert br.state_word()[4] == 0


def test_rejections_never_count_as_failures(anon):
    br = mk(anon, failure_threshold=2)
    fail(br)
    fail(br)
    for _ in range(10):
        with pytest.raises(sg.CircuitOpen) as info, br:
            pass
        assert info.value.retry_after > 0 and info.value.name == br.name
    st = br.stats()
    assert (st["calls"], st["failures"], st["rejections"]) == (2, 2, 10)


# ---- ways to call ---------------------------------------------------------------------


def test_call_and_decorator(anon):
    br = mk(anon, failure_threshold=2)

    @br
    def add(a, b=0):
        return a + b

    assert add(1, b=2) == 3 and add.__name__ == "add"
    assert br.call(add, 5) == 5
    assert br.call(int, "7") == 7
    with pytest.raises(ValueError):
        br.call(int, "x")
    assert br.stats()["calls"] == 5  # decorated calls go through twice here (add via call)


_MODULE_BR = sg.CircuitBreaker(unique_name("mod"), failure_threshold=3)


@_MODULE_BR
def decorated_at_module_level(x: int) -> int:
    """Doubles x."""
    return 2 * x


class Client:
    @_MODULE_BR
    def get(self, x):
        return (self, x)


def test_decorated_function_keeps_metadata_binds_and_pickles():
    f = decorated_at_module_level
    assert (f.__name__, f.__doc__, f.__module__) == ("decorated_at_module_level", "Doubles x.", __name__)
    assert f.__wrapped__(2) == 4 and f(3) == 6
    assert pickle.loads(pickle.dumps(f)) is f
    c = Client()
    assert c.get(1) == (c, 1) and Client.get(c, 2) == (c, 2)
    assert _MODULE_BR.stats()["calls"] == 3


def test_async_decorator(anon):
    br = mk(anon, failure_threshold=2)

    @br
    async def fetch(x):
        await asyncio.sleep(0)
        if x < 0:
            raise ConnectionError
        return x * 2

    async def main():
        assert await fetch(2) == 4
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await fetch(-1)
        with pytest.raises(sg.CircuitOpen):
            await fetch(1)

    asyncio.run(main())
    st = br.stats()
    assert (st["calls"], st["failures"], st["rejections"], st["state"]) == (3, 2, 1, "open")


def test_call_async(anon):
    br = mk(anon, failure_threshold=1)

    async def main():
        assert await br.call_async(asyncio.sleep, 0, "r") == "r"
        with pytest.raises(OSError):
            await br.call_async(asyncio.open_connection, "127.0.0.1", 1)
        with pytest.raises(sg.CircuitOpen):
            await br.call_async(asyncio.sleep, 0)

    asyncio.run(main())
    assert br.stats()["failures"] == 1


def test_async_with(anon):
    br = mk(anon, failure_threshold=2, slow_call_duration=0.05, minimum_calls=10**6)

    async def slow():
        async with br:
            await asyncio.sleep(0.08)

    async def failing():
        async with br:
            await asyncio.sleep(0)
            raise OSError

    async def main():
        await asyncio.gather(slow(), asyncio.gather(failing(), return_exceptions=True), slow())
        br.inject_faults(latency=0.01)
        async with br:
            pass
        br.clear_faults()
        with pytest.raises(OSError):
            await failing()
        with pytest.raises(sg.CircuitOpen):
            async with br:
                pass

    asyncio.run(main())
    st = br.stats()
    assert (st["calls"], st["failures"], st["slow_calls"], st["rejections"]) == (5, 2, 2, 1)


def test_begin_token(anon):
    br = mk(anon, failure_threshold=1, reset_timeout=60.0)
    tok = br.begin()
    assert not tok.probe
    assert tok.success() is True
    assert tok.failure() is False  # already reported
    tok = br.begin()
    tok.failure()
    assert br.state == "open"
    with pytest.raises(sg.CircuitOpen):
        br.begin()
    assert br.stats()["failures"] == 1


def test_token_as_context_manager_and_gc_release(anon):
    br = mk(anon, failure_threshold=1, reset_timeout=0.01, half_open_calls=1, probe_timeout=60.0)
    fail(br)
    time.sleep(0.02)
    tok = br.begin()
    assert tok.probe
    del tok
    gc.collect()  # an unreported token gives its probe permit back
    with br.begin() as tok:
        assert tok.probe
    assert br.state == "closed"


# ---- outcome classification --------------------------------------------------------------


def test_record_ignore_and_predicates(anon):
    br = mk(
        anon,
        failure_threshold=1,
        record=(OSError,),
        ignore=(FileNotFoundError,),
        is_failure=lambda e: "transient" not in str(e),
    )
    with pytest.raises(FileNotFoundError), br:
        raise FileNotFoundError  # ignored: not counted at all
    with pytest.raises(ValueError), br:
        raise ValueError  # not recorded: a success
    with pytest.raises(OSError), br:
        raise OSError("transient")  # predicate says not a failure
    st = br.stats()
    assert (st["calls"], st["failures"], st["state"]) == (2, 0, "closed")
    with pytest.raises(KeyboardInterrupt), br:
        raise KeyboardInterrupt  # BaseException outside record: ignored
    assert br.stats()["calls"] == 2
    fail(br, OSError)
    assert br.state == "open"


def test_broken_predicate_counts_a_failure(anon, caplog):
    br = mk(anon, failure_threshold=1, is_failure=lambda e: 1 / 0)
    fail(br)
    assert br.state == "open"
    assert "predicate failed" in caplog.text


def test_result_predicate(anon):
    br = mk(anon, failure_threshold=2, result_is_failure=lambda r: r is None or r.get("error"))
    assert br.call(dict, error=False) == {"error": False}
    br.call(lambda: None)
    br.call(dict, error=True)
    assert br.state == "open"
    assert br.stats()["failures"] == 2


# ---- `with` tickets under threads and tasks ------------------------------------------------------


def test_interleaved_threads_keep_their_own_tickets(anon):
    br = mk(anon, failure_threshold=None, slow_call_duration=0.05, minimum_calls=10**6)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        try:
            with br:
                a_in.set()
                b_in.wait(5)
                raise OSError
        except OSError:
            pass
        a_out.set()

    def b():
        a_in.wait(5)
        with br:
            b_in.set()
            a_out.wait(5)  # A exits first, while B is still inside
            time.sleep(0.06)  # only B is slow

    ts = [threading.Thread(target=f) for f in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    st = br.stats()
    assert (st["calls"], st["failures"], st["slow_calls"]) == (2, 1, 1)


def test_interleaved_async_tasks_keep_their_own_tickets(anon):
    br = mk(anon, failure_threshold=None, slow_call_duration=0.05, minimum_calls=10**6)

    async def slow_ok():
        with br:
            await asyncio.sleep(0.08)

    async def quick_fail():
        await asyncio.sleep(0.01)
        try:
            with br:
                await asyncio.sleep(0)
                raise OSError
        except OSError:
            pass

    async def main():
        await asyncio.gather(slow_ok(), quick_fail(), quick_fail())
        with br:  # noqa: SIM117 - nested use in one task
            with br:
                pass

    asyncio.run(main())
    st = br.stats()
    assert (st["calls"], st["failures"], st["slow_calls"]) == (5, 2, 1)


# ---- listeners ---------------------------------------------------------------------------


def test_listeners_see_transitions_from_other_objects(anon):
    name = unique_name("lis")
    seen = []
    mine = sg.CircuitBreaker(
        name, store=anon, failure_threshold=1, reset_timeout=0.01, on_state_change=lambda b, o, n: seen.append((o, n))
    )
    other = sg.CircuitBreaker(name, store=anon, failure_threshold=1, reset_timeout=0.01)
    fail(other)  # another "process" trips it
    assert seen == []  # noticed lazily ...
    with pytest.raises(sg.CircuitOpen), mine:
        pass
    assert seen == [("closed", "open")]  # ... on the next touch
    time.sleep(0.02)
    with mine:  # probe: half_open then closed
        pass
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_listener_errors_do_not_break_calls(anon, caplog):
    def bad(b, o, n):
        raise RuntimeError("listener bug")

    br = mk(anon, failure_threshold=1, on_state_change=[bad])
    fail(br)
    assert br.state == "open"
    assert "listener bug" in caplog.text


# ---- fault injection ------------------------------------------------------------------------


def _fault_run(store, name, seed):
    br = sg.CircuitBreaker(name, store=store, failure_threshold=None, seed=seed)
    br.inject_faults(failure_rate=0.3)
    out = []
    for _ in range(100):
        try:
            with br:
                out.append(1)
        except sg.InjectedFault:
            out.append(0)
    br.clear_faults()
    return out


def test_injected_failures_are_seeded_and_recorded(anon):
    a = _fault_run(anon, unique_name("f"), 11)
    b = _fault_run(anon, unique_name("f"), 11)
    c = _fault_run(anon, unique_name("f"), 12)
    assert a == b and a != c
    assert 15 < a.count(0) < 45


def test_injected_failures_open_the_breaker(anon):
    br = mk(anon, failure_threshold=3, seed=1)
    br.inject_faults(failure_rate=1.0)
    for _ in range(3):
        with pytest.raises(sg.InjectedFault):
            br.call(lambda: pytest.fail("body ran"))
    assert br.state == "open"
    assert br.stats()["failures"] == 3


def test_injected_rejections_and_latency_switch_at_runtime(anon):
    name = unique_name("f")
    br = sg.CircuitBreaker(name, store=anon, seed=5)
    other = sg.CircuitBreaker(name, store=anon, seed=5)
    other.inject_faults(reject_rate=1.0)  # switched by another object (process): shared
    with pytest.raises(sg.CircuitOpen) as info, br:
        pass
    assert info.value.retry_after == 0.0
    assert br.stats()["failures"] == 0
    other.inject_faults(latency=0.02)
    assert br.faults["latency"] == pytest.approx(0.02)
    t = time.monotonic()
    with br:
        pass
    assert time.monotonic() - t >= 0.02
    other.clear_faults()
    assert br.faults == {"failure_rate": 0.0, "reject_rate": 0.0, "latency": 0.0, "latency_rate": 0.0}


# ---- configuration and lifecycle ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, arg",
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 1.5}, "failure_threshold"),
        ({"window": 0}, "window"),
        ({"window": -1.0}, "window"),
        ({"window": float("nan")}, "window"),
        ({"reset_timeout": 0}, "reset_timeout"),
        ({"reset_timeout": "5"}, "reset_timeout"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"failure_rate": 0}, "failure_rate"),
        ({"minimum_calls": 0}, "minimum_calls"),
        ({"slow_call_duration": -1}, "slow_call_duration"),
        ({"slow_call_rate": 0}, "slow_call_rate"),
        ({"half_open_calls": 0}, "half_open_calls"),
        ({"half_open_calls": 256}, "half_open_calls"),
        ({"probe_timeout": 0}, "probe_timeout"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier"),
        ({"max_reset_timeout": 1.0, "reset_timeout": 2.0}, "max_reset_timeout"),
        ({"jitter": 1.0}, "jitter"),
        ({"degraded": (0.5, 0.5, 0.5, 0.5)}, "degraded"),
        ({"degraded": (0.0,)}, "degraded"),
        ({"degraded": 3}, "degraded"),
        ({"adaptive": 1}, "adaptive"),
        ({"adaptive_k": 0.5}, "adaptive_k"),
        ({"adaptive_max_reject": 2}, "adaptive_max_reject"),
        ({"record": (int,)}, "record"),
        ({"ignore": "x"}, "ignore"),
        ({"is_failure": 3}, "is_failure"),
        ({"result_is_failure": "x"}, "result_is_failure"),
        ({"on_state_change": 3}, "on_state_change"),
        ({"buckets": 0}, "buckets"),
        ({"buckets": 65}, "buckets"),
        ({"seed": "s"}, "seed"),
        ({"window": 0.001, "buckets": 10}, "window"),
    ],
)
def test_bad_config_names_the_argument(anon, kw, arg):
    with pytest.raises(sg.ConfigError, match=arg):
        mk(anon, **kw)


def test_bad_name_and_store(anon):
    with pytest.raises(sg.ConfigError, match="name"):
        sg.CircuitBreaker("", store=anon)
    with pytest.raises(sg.ConfigError, match="store"):
        sg.CircuitBreaker("x", store="nope")
    br = mk(anon)
    with pytest.raises(sg.ConfigError, match="state"):
        br.set_state("open")
    with pytest.raises(sg.ConfigError, match="failure_rate"):
        br.inject_faults(failure_rate=2)


def test_names_are_namespaced_per_store(anon):
    a = sg.CircuitBreaker("same", store=anon, failure_threshold=1)
    b = sg.CircuitBreaker("other", store=anon, failure_threshold=1)
    fail(a)
    assert (a.state, b.state) == ("open", "closed")
    lim_counter = anon.counter("same")  # another namespace entirely
    assert lim_counter.value == 0


def test_pickle_round_trip(store):
    br = sg.CircuitBreaker("pk", store=store, failure_threshold=2, half_open_calls=3, degraded=True)
    fail(br)
    again = pickle.loads(pickle.dumps(br))
    assert again.name == "pk" and again._config == br._config
    fail(again)
    assert br.state == "open"


def test_anonymous_store_does_not_pickle(anon):
    with pytest.raises(sg.StoreError):
        pickle.dumps(mk(anon))


def test_closed_store_raises(store_name):
    s = sg.SharedStore(store_name)
    br = sg.CircuitBreaker("c", store=s)
    s.close()
    with pytest.raises(sg.StoreClosed), br:
        pass
    with pytest.raises(sg.StoreClosed):
        _ = br.state
    with pytest.raises(sg.StoreClosed):
        sg.CircuitBreaker("c2", store=s)


def test_default_store():
    br = sg.CircuitBreaker(unique_name("dflt"))
    assert br.store is sg.default_store()
    with br:
        pass
    assert br.stats()["calls"] == 1


# ---- found in review ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["state_read", "ignored_probe"])
def test_probe_timeout_counts_from_the_probe_not_from_the_round(anon, how):
    """A half-open round entered long before its first probe (state read by a health
    check, or a probe that gave its permit back) must not treat a probe admitted a
    moment ago as lost: that admitted a second probe with half_open_calls=1."""
    br = mk(anon, failure_threshold=1, reset_timeout=1.0, probe_timeout=1.0)
    fail_at(br, T0)
    t = T0 + S
    if how == "state_read":
        assert br.state_at(t) == "half_open"
    else:
        p = br.try_enter(t)
        assert p & sg._core.BR_TICKET_PROBE
        br.report(p, 2, 0, t)  # ignored: the permit goes back
    t += 5 * S  # quiet traffic: the first real probe comes much later
    probe = br.try_enter(t)
    assert probe & sg._core.BR_TICKET_PROBE
    assert br.try_enter(t + MS_) == 0  # the probe is 1 ms old: not lost
    assert br.last_rejection[0] == "half_open"
    br.report(probe, 0, 0, t + 2 * MS_)  # and its result still counts
    assert br.state_at(t + 2 * MS_) == "closed"


def _half_open(br):
    fail(br)
    time.sleep(0.06)
    assert br.state == "half_open"


@pytest.mark.parametrize("way", ["decorator", "call_async", "async_with"])
def test_cancelled_during_injected_latency_gives_the_probe_back(anon, way):
    """A task cancelled while it awaits injected latency never ran the call: its
    half-open probe permit must come back, not wait out probe_timeout (30 s)."""
    br = mk(anon, failure_threshold=1, reset_timeout=0.05)
    _half_open(br)

    async def body():
        return 1

    decorated = br(body)

    async def run():
        if way == "decorator":
            await decorated()
        elif way == "call_async":
            await br.call_async(body)
        else:
            async with br:
                pass

    async def main():
        br.inject_faults(latency=5.0)
        task = asyncio.ensure_future(run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        br.clear_faults()
        await run()  # the permit is back: this probe is admitted and closes the breaker

    asyncio.run(main())
    assert br.state == "closed"


def test_own_rejection_inside_a_call_is_not_a_failure(anon):
    """A function through the breaker that calls another function through the same
    breaker: in half_open the inner call is rejected (the outer holds the only probe).
    That CircuitOpen is the breaker's own rejection and must not fail the probe."""
    br = mk(anon, failure_threshold=1, reset_timeout=0.05)

    @br
    def inner():
        return 1

    @br
    def outer():
        return inner()

    _half_open(br)
    failures = br.stats()["failures"]
    with pytest.raises(sg.CircuitOpen):
        outer()
    assert br.stats()["failures"] == failures
    assert br.state == "half_open"


def test_probe_timeout_late_second_permit(anon):
    """half_open_calls=2: the first probe is lost, the second comes long after the
    round's deadline.  The next call must not discard that fresh probe's result."""
    br = mk(anon, failure_threshold=1, reset_timeout=1.0, probe_timeout=1.0, half_open_calls=2)
    fail_at(br, T0)
    t = T0 + S
    assert br.try_enter(t) & sg._core.BR_TICKET_PROBE  # lost: never reports
    t += 5 * S
    p2 = br.try_enter(t)
    assert p2 & sg._core.BR_TICKET_PROBE
    p3 = br.try_enter(t + MS_)
    assert p3 & sg._core.BR_TICKET_PROBE
    assert br.try_enter(t + MS_) == 0  # two fresh probes out: no third
    br.report(p2, 0, 0, t + 2 * MS_)
    br.report(p3, 0, 0, t + 2 * MS_)
    assert br.state_at(t + 2 * MS_) == "closed"


def test_force_close_when_closed_starts_the_window_afresh(anon):
    """force_close() promises a fresh failure window from any state, closed included."""
    br = mk(anon, failure_threshold=3)
    fail(br)
    fail(br)
    br.force_close()
    assert br.stats()["window_failures"] == 0
    fail(br)
    assert br.state == "closed"  # the 1st failure of a fresh window, not the 3rd


def test_reset_zeroes_the_transition_count_too(anon):
    """totals() / stats() count transitions "since creation or reset()"."""
    br = mk(anon, failure_threshold=1)
    fail(br)
    assert br.stats()["transitions"] == 1
    br.reset()
    assert br.stats()["transitions"] == 0


@pytest.mark.parametrize("way", ["decorator", "call_async"])
def test_async_result_predicate_error_gives_the_probe_back(anon, way):
    """As the sync call() does: a result_is_failure that raises reports the call as
    ignored, so a half-open probe permit is not held until probe_timeout."""

    def pred(result):
        if result == "bad":
            raise ValueError("predicate broke")
        return False

    br = mk(anon, failure_threshold=1, reset_timeout=0.05, result_is_failure=pred)

    async def body(x):
        return x

    decorated = br(body)

    async def run(x):
        return await (decorated(x) if way == "decorator" else br.call_async(body, x))

    _half_open(br)

    async def main():
        with pytest.raises(ValueError):
            await run("bad")
        assert await run("good") == "good"  # the permit came back: admitted, closes

    asyncio.run(main())
    assert br.state == "closed"


def test_idle_gap_of_exactly_2_24_buckets_does_not_revive_old_failures(anon):
    """Bucket words keep 24 bits of their epoch: 2**24 buckets later they alias."""
    br = mk(anon, failure_threshold=3, window=0.01, buckets=10)  # 1 ms buckets: 2**24 ms ~ 4.7 h
    fail_at(br, T0)
    fail_at(br, T0 + 1)
    later = T0 + 2**24 * MS_
    fail_at(br, later)  # the 1st failure in 4.7 hours, not the 3rd
    assert br.state_at(later) == "closed"
    assert br.window(later)[1] == 1


def test_writer_stalled_for_a_window_does_not_wipe_newer_failures(anon):
    """exit() reads the clock, then CASes the bucket.  A process stalled in between for
    a whole window finds the slot rolled to a newer epoch and rolls it back to its own
    epoch, wiping the newer counts.  Modelled with the fake clock: the stalled writer
    reports with the `now` it read before the stall."""
    br = mk(anon, failure_threshold=3, window=1.0, buckets=10)
    stalled = br.try_enter(T0)
    t = T0 + S  # same bucket slot, one window later
    fail_at(br, t)
    fail_at(br, t)
    br.report(stalled, 1, 0, T0)  # the stalled writer's failure lands now
    assert br.window(t)[1] >= 2


@pytest.mark.parametrize("buckets", [1, 8, 10])
def test_idle_gap_aliasing_the_same_bucket_and_epoch_bits(anon, buckets):
    """After a gap of lcm(buckets, 2**24) buckets the same bucket comes round with the
    same 24-bit epoch.  A success there must not revive the old failures word (the
    new epoch writes calls only), nor may a later failure add to it."""
    br = mk(anon, failure_threshold=3, window=0.001 * buckets, buckets=buckets)  # 1 ms buckets
    fail_at(br, T0)
    fail_at(br, T0 + 1)
    later = T0 + math.lcm(buckets, 2**24) * MS_
    ok_at(br, later)
    assert br.window(later) == (1, 0, 0, 0)
    fail_at(br, later + 1)
    assert br.window(later + 1) == (2, 1, 0, 0)
    assert br.state_at(later + 1) == "closed"


def test_stalled_writer_counts_only_the_newest_window(anon):
    """A late result (not a whole window late) is recorded; deciding whether to trip,
    the window ends at the newest result recorded, not at the late one's clock: so a
    failure older than a window before the newest one is no longer counted."""
    br = mk(anon, failure_threshold=4, window=1.0, buckets=10)  # 100 ms buckets
    fail_at(br, T0)
    fail_at(br, T0 + 900 * MS_)
    stalled = br.try_enter(T0 + 500 * MS_)  # reads its clock, then stalls
    fail_at(br, T0 + 1400 * MS_)
    br.report(stalled, 1, 0, T0 + 500 * MS_)  # 0.5 s, 0.9 s, 1.4 s: 3 in the window
    assert br.state_at(T0 + 1400 * MS_) == "closed"
    assert br.window(T0 + 1400 * MS_)[1] == 3
    fail_at(br, T0 + 1450 * MS_)
    assert br.state_at(T0 + 1450 * MS_) == "open"


def test_late_failure_counts_with_the_newer_ones_in_its_window(anon):
    """A failure reported late (clock read before a stall of less than a window) lands
    in a window that ends at the newest epoch recorded, not at its own clock: with
    the newer failure less than a window after it, it is the 2nd failure of that
    window and opens the breaker (a window ending at the late clock would see one)."""
    br = mk(anon, failure_threshold=2, window=1.0, buckets=10)  # 100 ms buckets
    stalled = br.try_enter(T0 + 500 * MS_)  # reads its clock, then stalls
    fail_at(br, T0 + 1400 * MS_)
    assert br.state_at(T0 + 1400 * MS_) == "closed"
    br.report(stalled, 1, 0, T0 + 500 * MS_)  # 0.5 s and 1.4 s: 2 within 1 s
    assert br.state_at(T0 + 1400 * MS_) == "open"


def test_writer_stalled_for_a_window_in_an_idle_bucket_does_not_trip_on_an_expired_window(anon):
    """exit() reads its clock, stalls more than a window, then records in a bucket
    nobody wrote since (so the bucket does not tell it that it is late).  Newer
    results a window and more after its clock, at times the store clock has reached,
    show that its result is in no window now: it must not judge the window that
    ended at its own clock (here: that failure and an older one, 1.9 s before the
    current window, which holds only successes)."""
    br = mk(anon, failure_threshold=2, window=0.1, buckets=10)  # 10 ms buckets
    base = 100 * MS_  # fake times behind the store clock (a store starts at 1 s)
    assert anon.now() >= 1.0
    fail_at(br, base + 60 * MS_)  # bucket 6
    stalled = br.try_enter(base + 70 * MS_)  # bucket 7: reads its clock, then stalls
    for k in range(8):  # 180 .. 250 ms: buckets 8, 9, 0 .. 5 (6 and 7 left idle)
        ok_at(br, base + (180 + 10 * k) * MS_)
    now = base + 250 * MS_
    br.report(stalled, 1, 0, base + 70 * MS_)
    assert br.state_at(now) == "closed"
    assert br.window(now) == (8, 0, 0, 0)
    fail_at(br, now)  # a current failure still counts from here on
    fail_at(br, now)
    assert br.state_at(now) == "open"


def test_a_result_from_a_bogus_future_clock_does_not_blind_the_breaker(anon):
    """One report with a `now` far ahead of the store clock (a caller passing another
    clock) takes one bucket; the other buckets keep counting and tripping."""
    br = mk(anon, failure_threshold=3, window=1.0, buckets=10)
    ok_at(br, T0 + 10**6 * S)  # bucket 0, 11.6 days ahead of T0 and of the store clock
    for k in range(1, 4):
        fail_at(br, T0 + k * 100 * MS_)
    assert br.state_at(T0 + 300 * MS_) == "open"


# ---- the store clock going back --------------------------------------------------

BASE_MONO_OFFSET = 128  # sg_header.base_mono: store time = CLOCK_MONOTONIC - base_mono
HIGH_WATER_OFFSET = 152  # sg_header.high_water (sg_store_mark)


def _header_q(path, offset, value=None):
    """Read (or write) one signed 64-bit header word of a file-backed store."""
    with open(path, "r+b") as f:
        f.seek(offset)
        if value is None:
            return struct.unpack("<q", f.read(8))[0]
        f.write(struct.pack("<q", value))
        return value


@pytest.mark.parametrize("slow_call_duration", [None, 60.0])
def test_failures_open_the_breaker_again_after_the_store_clock_went_back(tmp_path, slow_call_duration):
    """Store time can go back (time namespaces; a reboot with the wall clock behind,
    for a store from before the high-water mark).  Every bucket then holds an epoch
    newer than any result: dropping them all as late left the breaker blind (closed
    through 100 failures) until the clock caught up.  Results read with the store
    clock take the buckets back, counted afresh.  slow_call_duration: the exit path
    that passes its own store-clock reading down (it times the call)."""
    path = tmp_path / "s.sg"
    sg.SharedStore(path=path, capacity=64).close()
    _header_q(path, BASE_MONO_OFFSET, _header_q(path, BASE_MONO_OFFSET) - 3600 * S)  # an hour old
    kw = dict(failure_threshold=5, window=0.5, buckets=5, slow_call_duration=slow_call_duration)  # 100 ms buckets
    name = unique_name("br")
    with sg.SharedStore(path=path) as store:
        assert store.now() >= 3600
        br = sg.CircuitBreaker(name, store=store, **kw)
        end = time.monotonic() + 0.6
        while time.monotonic() < end:  # a result in every bucket
            with br:
                pass
            time.sleep(0.005)
        for _ in range(4):
            fail(br)
        assert br.state == "closed" and br.window()[1] == 4
    _header_q(path, BASE_MONO_OFFSET, _header_q(path, BASE_MONO_OFFSET) + 3600 * S)  # back an hour
    with sg.SharedStore(path=path) as store:
        assert store.now() < 3600
        br = sg.CircuitBreaker(name, store=store, **kw)
        for _ in range(4):
            fail(br)
        assert br.state == "closed"
        assert br.window()[1] == 4  # these four, not the four an hour "ahead"
        fail(br)
        assert br.state == "open"


def test_a_breaker_keeps_the_store_high_water_mark_fresh(tmp_path):
    """After a reboot, store time resumes no lower than the high-water mark, which
    attaching and claiming slots record.  A store only breakers use claims no slot
    after their first calls: the first result of each bucket records it too."""
    path = tmp_path / "s.sg"
    with sg.SharedStore(path=path, capacity=64) as store:
        br = mk(store, failure_threshold=5, window=1.0, buckets=10)  # 100 ms buckets
        with br:
            pass
        _header_q(path, HIGH_WATER_OFFSET, 0)  # as if recorded long ago (the file is the mapping)
        time.sleep(0.15)  # a new bucket
        before = store.now()
        with br:
            pass
        assert before - 0.05 <= _header_q(path, HIGH_WATER_OFFSET) / 1e9 <= store.now()
        mark = _header_q(path, HIGH_WATER_OFFSET)
        for k in range(3):  # results with the caller's own clock, far ahead: never recorded
            ok_at(br, T0 + k * S)
        assert _header_q(path, HIGH_WATER_OFFSET) == mark

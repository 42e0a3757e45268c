"""Guard: each layer alone and combined, sync and async; the order of the layers (a
refusal stops every layer inside it from being asked); the error model (.guard,
.layer, .retry_after) and every fallback form; key functions; decorators, `with` and
`async with`; pools; counts and events."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time

import pytest

import sluicegate as sg
from sluicegate import _core


def ok(x: int = 1) -> int:
    return x + 1


def boom() -> None:
    raise OSError("dependency down")


async def aok(x: int = 1) -> int:
    await asyncio.sleep(0)
    return x + 1


async def aboom() -> None:
    await asyncio.sleep(0)
    raise OSError("dependency down")


def full_memory() -> sg.MemoryMonitor:
    """A gate that refuses: this process's RSS against a 1-byte limit is critical."""
    return sg.MemoryMonitor(source="process", rss_limit=1, interval=0)


def roomy_memory() -> sg.MemoryMonitor:
    return sg.MemoryMonitor(source="process", rss_limit=1 << 50, interval=0)


@pytest.fixture
def parts(store):
    lim = sg.RateLimiter("g-lim", "2/minute", store=store)
    cap = sg.ConcurrencyLimiter("g-cap", 1, store=store)
    br = sg.CircuitBreaker("g-br", failure_threshold=2, reset_timeout=60, store=store)
    return lim, cap, br


def caught(g: sg.Guard, fn=ok, *args):
    """The error the guard raised (the test fails if it returned)."""
    with pytest.raises(sg.SluicegateError) as ei:
        g.call(fn, *args)
    return ei.value


# ---- each layer alone ------------------------------------------------------------------------
def test_a_limiter_alone_admits_its_rate_then_raises_rate_limited_with_retry_after(store, parts):
    lim, _, _ = parts
    g = sg.Guard("g", limiter=lim, store=store)
    assert g.call(ok, 1) == 2 and g.call(ok, 2) == 3
    e = caught(g)
    assert isinstance(e, sg.RateLimited) and e.layer == "limiter" and e.guard == "g"
    assert 25 < e.retry_after <= 30  # one token every 30 s


def test_a_cap_alone_refuses_at_once_when_full_and_frees_its_permit_after_the_call(store, parts):
    _, cap, _ = parts
    g = sg.Guard("g", cap=cap, store=store)
    seen = []
    assert g.call(lambda: seen.append(cap.in_use) or 7) == 7
    assert seen == [1] and cap.in_use == 0
    held = cap.acquire()
    e = caught(g)
    assert isinstance(e, sg.ConcurrencyLimitExceeded) and e.layer == "cap"
    held.release()
    assert g.call(ok) == 2


def test_a_cap_waits_up_to_cap_timeout(store, parts):
    _, cap, _ = parts
    g = sg.Guard("g", cap=cap, cap_timeout=0.2, store=store)
    held = cap.acquire()
    t = threading.Timer(0.05, held.release)
    t.start()
    assert g.call(ok) == 2  # the permit came back within cap_timeout
    held = cap.acquire()
    t0 = time.monotonic()
    assert caught(g).layer == "cap"
    assert 0.15 < time.monotonic() - t0 < 2.0
    held.release()


def test_a_breaker_alone_counts_the_calls_failures_and_then_rejects(store, parts):
    _, _, br = parts
    g = sg.Guard("g", breaker=br, store=store)
    for _ in range(2):
        with pytest.raises(OSError) as ei:
            g.call(boom)
        assert ei.value.layer == "call" and ei.value.guard == "g"
    assert br.state == "open"
    ran = []
    e = caught(g, lambda: ran.append(1))
    assert isinstance(e, sg.CircuitOpen) and e.layer == "breaker" and e.retry_after > 50
    assert ran == []


def test_a_memory_gate_alone_refuses_with_memory_pressure(store):
    assert sg.Guard("g", memory=roomy_memory(), store=store).call(ok) == 2
    e = caught(sg.Guard("g2", memory=full_memory(), store=store))
    assert isinstance(e, sg.MemoryPressure) and e.layer == "memory" and e.level == "critical"


def test_a_pool_alone_gives_the_call_its_resource_and_takes_it_back(store):
    made = []
    pool = sg.Pool(create=lambda: made.append(object()) or made[-1], size=1, timeout=0.1, name="g-pool",
                   store=store)
    g = sg.Guard("g", pool=pool, store=store)
    assert g.call(lambda conn, x: (conn, x), 5) == (made[0], 5)
    assert g.call(lambda conn: conn) is made[0]  # the same resource, given back after the call
    with pool.checkout():
        e = caught(g, lambda conn: conn)
    assert isinstance(e, sg.PoolTimeout) and e.layer == "pool"
    with g as conn:
        assert conn is made[0]
    pool.close()


# ---- the order -------------------------------------------------------------------------------
def test_a_memory_refusal_spends_no_rate_token(store, parts):
    lim, _, _ = parts
    g = sg.Guard("g", limiter=lim, key="k", memory=full_memory(), store=store)
    for _ in range(5):
        assert caught(g).layer == "memory"
    assert lim.peek("k").remaining == 2  # both tokens are still there


def test_a_rate_denial_takes_no_permit_and_asks_no_breaker(store, parts):
    lim, cap, br = parts
    g = sg.Guard("g", limiter=lim, cap=cap, breaker=br, store=store)
    g.call(ok), g.call(ok)
    before = br.stats()
    cap_taken = []
    cap.on("cap.acquired", cap_taken.append) if "cap.acquired" in sg.telemetry.EVENTS else None
    e = caught(g)
    assert e.layer == "limiter"
    after = br.stats()
    assert {k: after[k] for k in after if k in ("calls", "successes", "failures", "rejected")} == \
        {k: before[k] for k in before if k in ("calls", "successes", "failures", "rejected")}
    assert cap.in_use == 0


def test_a_full_cap_asks_no_breaker_so_a_half_open_probe_is_not_held_hostage(store):
    cap = sg.ConcurrencyLimiter("g-cap1", 1, store=store)
    br = sg.CircuitBreaker("g-br1", failure_threshold=1, reset_timeout=0.05, half_open_calls=1, store=store)
    g = sg.Guard("g", cap=cap, breaker=br, store=store)
    with pytest.raises(OSError):
        g.call(boom)
    time.sleep(0.1)
    assert br.state == "half_open"
    held = cap.acquire()
    assert caught(g).layer == "cap"
    held.release()
    # the probe permit was never taken: the next call is the probe, and closes the breaker
    assert g.call(ok) == 2 and br.state == "closed"


def test_an_open_breaker_returns_its_cap_permit(store, parts):
    _, cap, br = parts
    br.force_open()
    g = sg.Guard("g", cap=cap, breaker=br, store=store)
    assert caught(g).layer == "breaker"
    assert cap.in_use == 0


def test_the_call_holds_its_cap_permit_inside_the_breaker(store, parts):
    _, cap, br = parts
    g = sg.Guard("g", cap=cap, breaker=br, store=store)
    seen = []

    def probe():
        seen.append((cap.in_use, br.state))

    g.call(probe)
    assert seen == [(1, "closed")]


# ---- the error model and fallbacks ----------------------------------------------------------
@pytest.mark.parametrize("layer", ["memory", "limiter", "cap", "breaker", "call"])
def test_a_refusal_at_each_layer_reaches_the_fallback_with_its_error(store, layer):
    lim = sg.RateLimiter("fl-lim", "1/minute", store=store)
    cap = sg.ConcurrencyLimiter("fl-cap", 1, store=store)
    br = sg.CircuitBreaker("fl-br", failure_threshold=1, store=store)
    seen: list[BaseException] = []

    def fallback(exc: BaseException) -> str:
        seen.append(exc)
        return "fallback"

    kw = dict(limiter=lim, cap=cap, breaker=br, fallback=fallback, store=store)
    fn = ok
    held = None
    if layer == "memory":
        kw["memory"] = full_memory()
    elif layer == "limiter":
        lim.allow("fl")
    elif layer == "cap":
        held = cap.acquire()
    elif layer == "breaker":
        br.force_open()
    else:
        fn = boom
    g = sg.Guard("fl", key="fl", **kw)
    assert g.call(fn) == "fallback"
    (exc,) = seen
    expected = {"memory": sg.MemoryPressure, "limiter": sg.RateLimited, "cap": sg.ConcurrencyLimitExceeded,
                "breaker": sg.CircuitOpen, "call": OSError}[layer]
    assert type(exc) is expected and exc.layer == layer and exc.guard == "fl"
    if layer in ("limiter", "breaker"):
        assert exc.retry_after > 0
    if layer == "memory":
        assert exc.retry_after == 0.0  # the monitor's interval: it reads afresh on every call
    assert g.stats()["fallbacks"] == 1
    if held is not None:
        held.release()


def test_fallback_forms_value_callable_and_dict_by_the_most_specific_type(store):
    br = sg.CircuitBreaker("fb-br", failure_threshold=100, store=store)
    assert sg.Guard("a", breaker=br, fallback=0, store=store).call(boom) == 0
    assert sg.Guard("b", breaker=br, fallback=lambda e: str(e), store=store).call(boom) == "dependency down"
    table = {OSError: "os", Exception: lambda e: type(e).__name__, ConnectionError: "conn"}
    g = sg.Guard("c", breaker=br, fallback=table, store=store)
    assert g.call(boom) == "os"
    assert g.call(lambda: 1 / 0) == "ZeroDivisionError"

    def conn():
        raise ConnectionResetError()

    assert g.call(conn) == "conn"  # ConnectionResetError -> ConnectionError, not OSError
    only_os = sg.Guard("d", breaker=br, fallback={OSError: None}, store=store)
    assert only_os.call(boom) is None
    with pytest.raises(ZeroDivisionError):
        only_os.call(lambda: 1 / 0)  # no entry for it: raised


def test_keyboard_interrupt_is_never_given_to_the_fallback(store):
    g = sg.Guard("ki", fallback="nope", store=store)

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        g.call(interrupt)


def test_the_call_s_own_error_is_raised_unchanged_with_guard_and_layer(store):
    g = sg.Guard("own", store=store)
    with pytest.raises(ValueError, match="bad") as ei:
        g.call(lambda: (_ for _ in ()).throw(ValueError("bad")))
    assert ei.value.guard == "own" and ei.value.layer == "call"


def test_a_nested_guard_s_refusal_keeps_its_own_tags(store, parts):
    _, _, br = parts
    br.force_open()
    inner = sg.Guard("inner", breaker=br, store=store)
    outer = sg.Guard("outer", store=store)
    with pytest.raises(sg.CircuitOpen) as ei:
        outer.call(inner.call, ok)
    assert ei.value.guard == "inner" and ei.value.layer == "breaker"
    assert outer.stats()["failed"] == 1 and outer.stats()["rejected_breaker"] == 0


# ---- keys --------------------------------------------------------------------------------------
def test_key_as_a_function_of_the_call_s_arguments_gives_each_key_its_own_budget(store):
    lim = sg.RateLimiter("key-lim", "1/minute", store=store)
    g = sg.Guard("k", limiter=lim, key=lambda user, **kw: f"user:{user}", store=store)

    def fetch(user, page=0):
        return (user, page)

    assert g.call(fetch, "ann", page=2) == ("ann", 2)
    assert g.call(fetch, "bob") == ("bob", 0)
    assert caught(g, fetch, "ann").layer == "limiter"
    assert lim.peek("user:bob").remaining == 0 and lim.peek("user:cat").remaining == 1


def test_cost_takes_that_many_tokens(store):
    lim = sg.RateLimiter("cost-lim", "10/minute", store=store)
    g = sg.Guard("c", limiter=lim, key="k", cost=4, store=store)
    g.call(ok), g.call(ok)
    assert lim.peek("k").remaining == 2
    assert caught(g).layer == "limiter"


# ---- decorators, with, async ---------------------------------------------------------------------
def test_the_decorator_keeps_the_function_s_name_signature_and_kind(store, parts):
    lim, cap, br = parts
    g = sg.Guard("dec", limiter=lim, cap=cap, breaker=br, store=store)

    @g
    def add(a: int, b: int = 2) -> int:
        """Add."""
        return a + b

    @g
    async def aadd(a: int, b: int = 2) -> int:
        return a + b

    assert add.__name__ == "add" and add.__doc__ == "Add."
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)
    assert list(inspect.signature(add).parameters) == ["a", "b"]
    assert inspect.iscoroutinefunction(aadd)
    assert add(1) == 3
    assert asyncio.run(aadd(1, b=5)) == 6
    with pytest.raises(sg.RateLimited):
        add(1)


def test_call_async_runs_every_layer(store, parts):
    lim, cap, br = parts
    g = sg.Guard("as", limiter=lim, cap=cap, breaker=br, fallback=lambda e: e.layer, store=store)

    async def main():
        seen = []

        async def probe():
            seen.append(cap.in_use)
            return "ran"

        assert await g.call_async(probe) == "ran" and seen == [1] and cap.in_use == 0
        assert await g.call_async(aboom) == "call"
        assert await g.call_async(aok) == "limiter"  # 2/minute spent
        return True

    assert asyncio.run(main())
    assert br.stats()["failures"] == 1 if "failures" in br.stats() else True


def test_an_async_fallback_is_awaited(store):
    async def fb(exc):
        await asyncio.sleep(0)
        return f"fb:{type(exc).__name__}"

    g = sg.Guard("afb", fallback=fb, store=store)
    assert asyncio.run(g.call_async(aboom)) == "fb:OSError"


def test_with_guard_holds_the_permit_for_the_block_and_reports_to_the_breaker(store, parts):
    lim, cap, br = parts
    g = sg.Guard("w", limiter=lim, cap=cap, breaker=br, store=store)
    with g:
        assert cap.in_use == 1
    assert cap.in_use == 0
    with pytest.raises(OSError):
        with g:
            boom()
    assert cap.in_use == 0 and br.stats()["failures"] == 1
    with pytest.raises(sg.RateLimited) as ei:
        with g:
            pytest.fail("the block must not run")
    assert ei.value.layer == "limiter"
    assert g.stats() == {**g.stats(), "succeeded": 1, "failed": 1, "rejected_limiter": 1}


def test_async_with_guard(store, parts):
    _, cap, br = parts
    g = sg.Guard("aw", cap=cap, breaker=br, store=store)

    async def main():
        async with g:
            assert cap.in_use == 1
            async with sg.Guard("aw2", store=store):  # nested guards of one task
                assert cap.in_use == 1
        assert cap.in_use == 0
        held = cap.acquire()
        with pytest.raises(sg.ConcurrencyLimitExceeded):
            async with g:
                pass
        held.release()

    asyncio.run(main())


def test_with_guard_refuses_a_key_function(store, parts):
    lim, _, _ = parts
    g = sg.Guard("wk", limiter=lim, key=lambda x: x, store=store)
    with pytest.raises(sg.ConfigError, match="key"):
        with g:
            pass


def test_with_guards_in_threads_keep_their_own_permits(store):
    cap = sg.ConcurrencyLimiter("thr-cap", 8, store=store)
    g = sg.Guard("thr", cap=cap, store=store)
    barrier = threading.Barrier(4)
    peaks = []

    def work():
        for _ in range(50):
            with g:
                peaks.append(cap.in_use)
        barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert cap.in_use == 0 and max(peaks) <= 4 and g.stats()["succeeded"] == 200


# ---- counts, events, directory ---------------------------------------------------------------------
def test_stats_count_each_end_once(store, parts):
    lim, cap, br = parts
    g = sg.Guard("st", limiter=lim, breaker=br, fallback=None, store=store)
    g.call(ok)
    with pytest.raises(OSError):
        g.call(boom)
    with pytest.raises(sg.RateLimited):
        g.call(ok)
    s = g.stats()
    assert (s["kind"], s["name"], s["calls"], s["succeeded"], s["failed"], s["rejected_limiter"]) == \
        ("guard", "st", 3, 1, 1, 1)


def test_events_carry_their_fields_and_a_raising_listener_breaks_nothing(store, parts, caplog):
    lim, cap, br = parts
    g = sg.Guard("ev", limiter=lim, cap=cap, breaker=br, fallback="fb", store=store)
    got: list[sg.Event] = []
    g.on("guard.*", got.append)

    def bad(ev):
        raise RuntimeError("listener bug")

    sg.on("guard.call", bad)
    try:
        with caplog.at_level(logging.ERROR, logger="sluicegate.telemetry"):
            assert g.call(ok) == 2
            assert g.call(boom) == "fb"
            assert g.call(ok) == "fb"  # rate limited
    finally:
        sg.off("guard.call", bad)
    assert "listener bug" in caplog.text
    names = [e.name for e in got]
    assert names == ["guard.call", "guard.call", "guard.fallback", "guard.rejected", "guard.call",
                     "guard.fallback"]
    first, second = got[0], got[1]
    assert first.kind == "guard" and first.policy == "ev" and first.measurements["outcome"] == "success"
    assert first.measurements["duration"] >= 0 and first.measurements["attempts"] == 1
    assert second.measurements["outcome"] == "failure" and second.measurements["error"] == "OSError"
    assert got[3].measurements["layer"] == "limiter" and got[3].measurements["retry_after"] > 0


def test_a_named_guard_is_in_the_directory_with_its_parts(store, parts):
    lim, cap, br = parts
    sg.Guard("dir", limiter=lim, cap=cap, breaker=br, timeout=1.5, store=store)
    (info,) = [p for p in store.policies() if p.kind == "guard"]
    assert info.name == "dir" and info.config["timeout"] == 1.5
    assert info.config["parts"] == {"limiter": "g-lim", "cap": "g-cap", "pool": None, "breaker": "g-br",
                                    "memory": None}
    with pytest.raises(sg.PolicyNotBuildable):
        store.policy("dir", "guard")


def test_reconfigure_changes_the_timeout_live_and_refuses_parts(store):
    g = sg.Guard("rc", timeout=5.0, store=store)
    other = sg.Guard("rc", timeout=5.0, store=store)
    g.reconfigure(timeout=0.25)
    assert other.timeout == 0.25
    with pytest.raises(sg.ConfigError, match="parts"):
        g.reconfigure(parts={"limiter": "x"})
    with pytest.raises(sg.ConfigError, match="timeout"):
        g.reconfigure(timeout=-1)
    g.reconfigure()
    assert other.timeout == 5.0


@pytest.mark.parametrize("bad, match", [
    (dict(cap=object()), "cap"),
    (dict(key="k"), "limiter"),
    (dict(timeout=0), "timeout"),
    (dict(cost=0), "cost"),
    (dict(retry=3), "retry"),
    (dict(fallback={"OSError": 1}), "exception classes"),
])
def test_bad_arguments_raise_config_error_naming_them(store, bad, match):
    with pytest.raises(sg.ConfigError, match=match):
        sg.Guard("bad", store=store, **bad)


def test_a_cap_and_a_pool_together_are_refused(store, parts):
    _, cap, _ = parts
    pool = sg.Pool(create=object, size=1)
    with pytest.raises(sg.ConfigError, match="host_limit"):
        sg.Guard("cp", cap=cap, pool=pool, store=store)
    pool.close()


def test_execute_protected_is_a_private_guard(store, parts):
    lim, cap, br = parts
    opts = {"limiter": lim, "key": "ep", "cap": cap, "breaker": br, "fallback": lambda e: e.layer}
    assert sg.execute_protected(opts, ok, 4) == 5
    assert sg.execute_protected(opts, boom) == "call"
    assert sg.execute_protected(opts, ok) == "limiter"
    assert asyncio.run(sg.execute_protected_async({"cap": cap}, aok, 1)) == 2
    assert not [p for p in store.policies() if p.kind == "guard"]


def test_the_compiled_call_and_the_general_form_agree(store):
    """call() runs the flat shape in C; a listener for guard.call sends it to Python."""
    br = sg.CircuitBreaker("agree-br", failure_threshold=100, store=store)
    cap = sg.ConcurrencyLimiter("agree-cap", 1, store=store)
    g = sg.Guard("agree", cap=cap, breaker=br, fallback=lambda e: e.layer, store=store)
    results = []
    for listening in (False, True):
        events: list[sg.Event] = []
        if listening:
            g.on("guard.call", events.append)
        held = cap.acquire()
        results.append((g.call(ok), g.call(boom)))
        held.release()
        results.append((g.call(ok), g.call(boom)))
        if listening:
            assert len(events) == 4
    assert results == [("cap", "cap"), (2, "call")] * 2
    assert _core.GuardFront in type(g).__mro__


def test_a_tagged_refusal_still_pickles(store, parts):
    import pickle

    _, _, br = parts
    br.force_open()
    e = caught(sg.Guard("pk", breaker=br, store=store))
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is sg.CircuitOpen and back.guard == "pk" and back.layer == "breaker"


def test_an_adaptive_cap_hears_the_call_s_outcome_through_the_guard(store):
    cap = sg.ConcurrencyLimiter("adapt-cap", 8, adaptive=True, min_limit=1, max_limit=8, backoff=0.5, store=store)
    g = sg.Guard("adapt", cap=cap, fallback=None, store=store)

    def dropped():
        raise TimeoutError("the dependency took too long")  # drop_on: (TimeoutError,)

    assert cap.limit == 8
    with pytest.raises(TimeoutError):
        g.call(dropped)
    assert cap.limit == 4  # halved by the drop
    assert cap.in_use == 0

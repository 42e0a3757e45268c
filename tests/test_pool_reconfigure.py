"""A named pool is a policy of kind "pool" (DESIGN.md rules 7 and 8): its shared options
are in the store's directory, and a new configuration (reconfigure() from any object of
the name, a deploy, a file) is followed by every pool of that name at its next checkout.
Growing lets it create more; shrinking closes surplus idle resources at the next
checkout and in-use ones when returned, never while borrowed.  A pool without a name is
private.  (Two objects of one name in one process stand for two processes here; the
cross-process runs are in test_pool_reconfigure_procs.py.)"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest
from conftest import unique_name
from models_pool import Clock

import sluicegate as sg

pytestmark = pytest.mark.timeout(60)


class Res:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False


class Factory:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.closed: list[int] = []

    def create(self) -> Res:
        return Res(next(self.ids))

    def close(self, r: Res) -> None:
        r.closed = True
        self.closed.append(r.n)


def grab_all(pool: sg.Pool[Res]) -> list[sg.Lease[Res]]:
    leases = []
    while True:
        try:
            leases.append(pool.acquire(block=False))
        except sg.PoolExhausted:
            return leases


def test_a_named_pool_is_in_the_directory_and_a_private_one_is_not(store):
    name = unique_name("db")
    sg.Pool(object, size=3, max_overflow=2, timeout=1.5, name=name, store=store)
    sg.Pool(object, size=7)  # private: no name, in no directory
    infos = [p for p in store.policies() if p.kind == "pool"]
    assert [p.name for p in infos] == [name]
    assert infos[0].config == {"size": 3, "max_overflow": 2, "strategy": "lifo", "timeout": 1.5,
                               "max_lifetime": None, "max_idle": None, "min_size": 0, "overflow_ttl": 10.0,
                               "check_window": 0.5, "jitter": 0.1}


def test_store_needs_a_name(store):
    with pytest.raises(sg.ConfigError, match="store= needs name="):
        sg.Pool(object, size=1, store=store)
    with pytest.raises(sg.ConfigError, match="name must be a non-empty str"):
        sg.Pool(object, size=1, name="", store=store)


def test_growing_is_followed_at_the_next_checkout_of_every_pool_of_the_name(store):
    name = unique_name("db")
    f = Factory()
    a = sg.Pool(f.create, close=f.close, size=2, name=name, store=store)
    b = sg.Pool(f.create, close=f.close, size=2, name=name, store=store)
    assert len(held := grab_all(b)) == 2
    a.reconfigure(size=5)
    assert b.size == 2  # not yet: b follows at its next checkout
    more = grab_all(b)
    assert len(more) == 3 and b.size == 5 and b.stats()["total"] == 5
    for lease in held + more:
        lease.release()
    assert f.closed == []


def test_shrinking_closes_surplus_idle_at_the_next_checkout_and_in_use_on_return(store):
    name = unique_name("db")
    f = Factory()
    a = sg.Pool(f.create, close=f.close, size=4, name=name, store=store)
    leases = grab_all(a)
    assert len(leases) == 4
    for lease in leases[:2]:
        lease.release()  # 2 idle, 2 in use
    sg.Pool(f.create, close=f.close, size=4, name=name, store=store).reconfigure(size=1)
    # the next checkout follows: the idle surplus is closed, and the 2 in use already fill size 1
    with pytest.raises(sg.PoolExhausted), a.checkout(block=False):
        pass
    assert a.size == 1 and len(f.closed) == 2 and a.stats()["total"] == 2
    # what the borrowers hold is theirs until they return it
    assert not any(lease.resource.closed for lease in leases[2:])
    leases[2].release()  # surplus: closed on return
    assert len(f.closed) == 3 and a.stats()["total"] == 1
    leases[3].release()  # fits the new size: kept idle
    assert len(f.closed) == 3 and a.stats()["idle"] == 1
    with a.checkout() as r:  # back on the lock-free paths
        assert not r.closed
        assert a._fast and a._plain_put


def test_a_waiter_gets_a_resource_when_the_pool_grows_elsewhere(store):
    name = unique_name("db")
    a = sg.Pool(object, size=1, name=name, store=store)
    other = sg.Pool(object, size=1, name=name, store=store)
    held = a.acquire()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(a.acquire(timeout=10.0)))
    t.start()
    deadline = time.monotonic() + 5
    while a.stats()["waiting"] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    t0 = time.monotonic()
    other.reconfigure(size=2)  # no checkout in a's process will wake the waiter: it looks itself
    t.join(10)
    assert got and time.monotonic() - t0 < 1.0
    held.release()
    got[0].release()  # type: ignore[attr-defined]


def test_reconfigure_validates_first_and_clearing_restores_the_code(store):
    name = unique_name("db")
    a = sg.Pool(object, size=2, name=name, store=store)
    for bad, match in [({"size": 0}, "size must be an int >= 1"), ({"min_size": 3}, r"min_size \(3\) must not"),
                       ({"strategy": "random"}, "strategy must be one of"), ({"create": object}, "unknown pool")]:
        with pytest.raises(sg.ConfigError, match=match):
            a.reconfigure(**bad)
    assert [p.override for p in store.policies() if p.name == name] == [None]
    a.reconfigure(size=4)
    a.reconfigure(max_overflow=1)  # laid over the earlier override
    b = sg.Pool(object, size=2, name=name, store=store)  # a restarted worker: the override outranks code
    assert b.config["size"] == 4 and b.config["max_overflow"] == 1
    b.reconfigure()
    assert a.config["size"] == 2 and a.config["max_overflow"] == 0


def test_a_deploy_with_other_options_is_followed_by_the_old_pool(store):
    name = unique_name("db")
    old = sg.Pool(object, size=2, timeout=5.0, name=name, store=store)
    sg.Pool(object, size=3, timeout=0.0, strategy="fifo", name=name, store=store)  # the newest wins
    held = grab_all(old)
    assert len(held) == 3 and old.strategy == "fifo" and old._popfast == old._idle.popleft
    t0 = time.monotonic()
    with pytest.raises(sg.PoolTimeout), old.checkout():  # the default timeout is the new one (0)
        pass
    assert time.monotonic() - t0 < 0.5
    for lease in held:
        lease.release()


def test_new_lifetimes_retime_the_resources_that_exist(store):
    name = unique_name("db")
    clock, f = Clock(), Factory()
    a = sg.Pool(f.create, close=f.close, size=2, name=name, store=store, clock=clock, jitter=0.0)
    a.acquire().release()
    clock.t += 100
    a.reconfigure(max_lifetime=50.0)
    with a.checkout() as r:  # the old resource is past its new lifetime: retired, a new one made
        assert r.n == 2
    assert f.closed == [1] and a.stats()["retired"] == 1


def test_a_private_pool_reconfigures_alone(store):
    a = sg.Pool(object, size=1)
    b = sg.Pool(object, size=1)
    a.reconfigure(size=3)
    assert len(grab_all(a)) == 3 and a.config["size"] == 3
    assert b.size == 1 and not [p for p in store.policies() if p.kind == "pool"]
    a.reconfigure()
    assert a.size == 1


def test_store_policy_names_the_fix_for_a_pool(store):
    name = unique_name("db")
    sg.Pool(object, size=2, name=name, store=store)
    with pytest.raises(sg.PolicyNotBuildable, match=r"create function is code.*sg\.Pool\(connect.*config apply"):
        store.policy(name)
    assert isinstance(sg.PolicyNotBuildable("x"), sg.SluicegateError)


def test_an_async_pool_of_the_name_follows_too(store):
    name = unique_name("db")

    async def main() -> None:
        f = Factory()
        pool = sg.AsyncPool(f.create, close=f.close, size=1, name=name, store=store)
        sg.Pool(f.create, size=1, name=name, store=store).reconfigure(size=3)
        leases = [await pool.acquire(block=False) for _ in range(3)]
        assert pool.size == 3
        with pytest.raises(sg.PoolExhausted):
            await pool.acquire(block=False)
        pool.reconfigure(size=1)  # in its own loop: applies now, closes as they come back
        for lease in leases:
            await lease.release()
        assert pool.stats()["total"] == 1 and len(f.closed) == 2
        await pool.close()

    asyncio.run(main())


def test_a_closed_store_leaves_the_pool_working_on_its_last_configuration(store_name):
    s = sg.SharedStore(store_name, capacity=1024)
    pool = sg.Pool(object, size=2, name="db", store=s)
    s.close()
    with pool.checkout():
        pass
    assert pool.size == 2
    with pytest.raises(sg.StoreClosed):
        pool.reconfigure(size=3)

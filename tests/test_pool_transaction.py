"""pool.transaction(fn, timeout=...): fn gets a checked-out resource, which goes back after
the call, also when fn raises (then it is checked before reuse); a full pool times out as
a checkout does; the async form takes a def or an async def."""

from __future__ import annotations

import asyncio

import pytest

import sluicegate as sg


class Conn:
    made = 0

    def __init__(self) -> None:
        Conn.made += 1
        self.ok = True


def test_transaction_lends_one_resource_for_the_call_and_takes_it_back():
    pool = sg.Pool(Conn, size=1, timeout=0.05)
    got = pool.transaction(lambda c: c)
    assert isinstance(got, Conn) and pool.stats()["in_use"] == 0
    assert pool.transaction(lambda c: c) is got  # the same one, given back


def test_a_raising_transaction_gives_its_resource_back_as_failed():
    checked = []
    pool = sg.Pool(Conn, size=1, timeout=0.05, check=lambda c: checked.append(c) or c.ok)

    def bad(c: Conn) -> None:
        c.ok = False
        raise OSError("broken")

    with pytest.raises(OSError):
        pool.transaction(bad)
    assert pool.stats()["in_use"] == 0
    fresh = pool.transaction(lambda c: c)
    assert fresh.ok and checked  # the broken one was checked and replaced


def test_a_full_pool_times_out():
    pool = sg.Pool(Conn, size=1, timeout=5.0)
    with pool.checkout():
        with pytest.raises(sg.PoolTimeout):
            pool.transaction(lambda c: c, timeout=0.05)


def test_the_async_form_takes_a_def_or_an_async_def():
    async def main() -> tuple[object, object]:
        pool = sg.AsyncPool(Conn, size=1)

        async def use(c: Conn) -> Conn:
            await asyncio.sleep(0)
            return c

        a = await pool.transaction(use)
        b = await pool.transaction(lambda c: c)
        await pool.close()
        return a, b

    a, b = asyncio.run(main())
    assert a is b

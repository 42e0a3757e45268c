"""AsyncPool: the asyncio twin of Pool (same options, same semantics).

Waiters are futures served in FIFO order.  Borrower death means the lease was
garbage-collected without being returned.  The task that checked a resource out
ending is not enough: in asyncio a lease routinely outlives the task that acquired
it (asyncio.wait_for, gather, a task's result).  create, check and close may be
plain functions or coroutine functions."""

from __future__ import annotations

import asyncio
import inspect
import time
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, Union

from ._forks import after_fork_in_child
from .concurrency import ConcurrencyLimiter, Permit
from .errors import ConfigError, PoolExhausted, PoolTimeout, StoreClosed
from .pool import _BORROWER_POLL, _DEFAULT, _HOST_FIRST_DELAY, _HOST_MAX_DELAY, _Entry, _getframe, _PoolConfig, _seconds
from .store import SharedStore

T = TypeVar("T")
R = TypeVar("R")
MaybeAwaitable = Union[T, Awaitable[T]]


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r


class AsyncLease(Generic[T]):
    """What AsyncPool.checkout() returns: `async with pool.checkout() as conn: ...`."""

    __slots__ = ("__weakref__", "_block", "_entry", "_gen", "_pool", "_timeout")

    def __init__(self, pool: AsyncPool[T], timeout: float | None, block: bool) -> None:
        self._pool = pool
        self._entry: _Entry | None = None
        self._gen = 0  # e.uses when lent to us: tells our lending from a later one
        self._timeout = timeout
        self._block = block

    @property
    def resource(self) -> T:
        if self._entry is None:
            raise RuntimeError("this lease holds no resource (not entered, or already released)")
        return self._entry.resource  # type: ignore[no-any-return]

    async def __aenter__(self) -> T:
        if self._entry is not None:
            raise RuntimeError("a lease can be entered only once")
        f = _getframe(1)
        e = await self._pool._get(self._timeout, self._block, (f.f_code, f.f_lasti))
        self._gen = e.uses
        self._entry = e
        return e.resource  # type: ignore[no-any-return]

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        e = self._entry
        if e is not None:
            self._entry = None
            if e.uses != self._gen:  # stale: the pool reclaimed it and may have lent it anew
                return
            await self._pool._put(e, et is not None)

    async def release(self, failed: bool = False) -> None:
        e = self._entry
        if e is not None:
            self._entry = None
            if e.uses != self._gen:  # stale: the pool reclaimed it and may have lent it anew
                return
            await self._pool._put(e, failed)

    async def discard(self) -> None:
        e = self._entry
        if e is not None:
            if e.uses == self._gen:
                e.doomed = True
            await self.release()

    def __del__(self) -> None:
        e = self._entry
        if e is not None:
            self._entry = None
            try:
                self._pool._orphans.append((e, "its lease was garbage-collected", self._gen))
            except Exception:  # noqa: BLE001, S110 (interpreter shutdown)
                pass


class AsyncPool(_PoolConfig, Generic[T]):
    """An asyncio pool (one event loop). Options as Pool; create/check/close may be async.

    pool = AsyncPool(connect, size=10, host_limit=cap, name="db")
    async with pool.checkout(timeout=1.0) as conn: ...

    A named AsyncPool is the directory's pool of that name, as a Pool is (the same kind:
    a Pool and an AsyncPool of one name share one configuration).  Call reconfigure()
    from the pool's event loop, like its other methods.
    """

    def __init__(
        self,
        create: Callable[[], MaybeAwaitable[T]],
        *,
        size: int,
        max_overflow: int = 0,
        strategy: str = "lifo",
        timeout: float | None = 5.0,
        check: Callable[[T], Any] | None = None,
        close: Callable[[T], Any] | None = None,
        max_lifetime: float | None = None,
        max_idle: float | None = None,
        host_limit: ConcurrencyLimiter | None = None,
        min_size: int = 0,
        overflow_ttl: float = 10.0,
        check_window: float = 0.5,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        store: SharedStore | str | None = None,
    ) -> None:
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._bg: set[asyncio.Task[None]] = set()
        self._setup(create, check, close, host_limit, clock, name, store, {
            "size": size, "max_overflow": max_overflow, "strategy": strategy, "timeout": timeout,
            "max_lifetime": max_lifetime, "max_idle": max_idle, "min_size": min_size,
            "overflow_ttl": overflow_ttl, "check_window": check_window, "jitter": jitter})
        _live_async_pools.add(self)

    def _apply(self, cfg: dict[str, Any]) -> None:
        # no lock (one event loop); a waiter sees a grown pool at its next look (it polls)
        self._apply_locked(cfg)

    def _forget_after_fork(self) -> None:
        """In a forked child (as Pool): the inherited resources and their host permits belong
        to the parent, and the waiters to the parent's event loop. Forget them; start empty."""
        self._waiters.clear()
        self._idle.clear()
        self._out.clear()
        self._orphans.clear()
        self._bg = set()
        self._total = 0
        self._surplus = False

    def _wake_head(self) -> None:
        if self._waiters:
            f = self._waiters[0]
            if not f.done():
                f.set_result(None)

    def _nwaiting(self) -> int:
        return len(self._waiters)

    def _give(self, e: _Entry) -> None:
        w = self._waiters
        if w and not w[0].done():
            w.popleft().set_result(e)
        else:
            self._idle.append(e)

    def _reclaim(self, found: list[tuple[_Entry, str]], to_close: list[_Entry]) -> None:
        for e, why in found:
            if e not in self._out:
                continue
            self._out.discard(e)
            e.borrower = None
            e.dirty = True
            self._count("reclaimed")
            self._warn_reclaimed(e, why)
            if self._closed or self._check is None:
                self._drop_locked(e, to_close)
            else:
                self._give(e)

    async def _close_entries(self, entries: list[_Entry]) -> None:
        i = 0
        try:
            for i, e in enumerate(entries):  # noqa: B007
                try:
                    if self._close is not None:
                        await _call(self._close, e.resource)
                except Exception as exc:  # noqa: BLE001
                    warnings.warn(f"pool {self.name!r}: close() of resource #{e.id} raised {exc!r}",
                                  RuntimeWarning, stacklevel=2)
                finally:
                    if e.permit is not None:
                        e.permit.release()
                    self._count("closed")
        finally:
            # cancelled midway: the remaining resources are already out of the pool and will
            # not be closed here; at least give their host permits back
            for e in entries[i + 1:]:
                if e.permit is not None:
                    e.permit.release()

    # -- checkout ----------------------------------------------------------------------------
    def checkout(self, timeout: float | None = _DEFAULT, block: bool = True) -> AsyncLease[T]:
        return AsyncLease(self, timeout, block)

    async def transaction(self, fn: Callable[[T], MaybeAwaitable[R]], timeout: float | None = _DEFAULT) -> R:
        """await fn(resource) (fn a def or an async def) with a resource checked out for
        the call and given back after it, also when fn raises: Pool.transaction's async form."""
        async with self.checkout(timeout) as resource:
            return await _call(fn, resource)  # type: ignore[no-any-return]

    async def acquire(self, timeout: float | None = _DEFAULT, block: bool = True) -> AsyncLease[T]:
        lease = AsyncLease(self, timeout, block)
        f = _getframe(1)
        e = await self._get(timeout, block, (f.f_code, f.f_lasti))
        lease._gen = e.uses
        lease._entry = e
        return lease

    async def _get(self, timeout: float | None, block: bool, where: Any) -> _Entry:
        if self._moved():  # the directory's version word: one load (and once per wait after)
            self._follow_directory()
        if timeout is _DEFAULT:
            timeout = self.timeout  # the pool's, as configured now
        if timeout is not None:
            timeout = _seconds("timeout", timeout)
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = None if timeout is None else start + timeout
        fut: asyncio.Future[Any] | None = None
        host_delay = _HOST_FIRST_DELAY
        # held but not yet lent (undone if we are cancelled): an entry, or a create reservation
        entry: _Entry | None = None
        create = False
        permit: Permit | None = None
        try:
            while True:
                if self._closed:
                    raise StoreClosed(f"pool {self.name!r} is closed")
                to_close: list[_Entry] = []
                now = self._clock()
                if self._maint_every is not None and now >= self._next_maint:
                    self._maintain_locked(now, to_close)
                if self._surplus:
                    self._trim_locked(to_close)
                if self._orphans:
                    self._reclaim(self._collect_orphans_locked(), to_close)
                entry = None
                create = False
                permit = None
                host_blocked = False
                if fut is not None and fut.done():
                    r = fut.result()
                    if r is not None:  # handed over (already removed from the queue)
                        entry, fut = r, None
                    else:  # woken at the head to retry: take a fresh future in the same place
                        nf = loop.create_future()
                        self._waiters[self._waiters.index(fut)] = nf
                        fut = nf
                head = fut is None and not self._waiters or (
                    fut is not None and bool(self._waiters) and self._waiters[0] is fut)
                if entry is None and head:
                    while True:
                        e = self._pop_idle()
                        if e is None:
                            break
                        if self._expired(e, now):
                            self._count("retired")
                            self._drop_locked(e, to_close)
                            continue
                        entry = e
                        break
                    if entry is None and self._total < self._max:
                        if self._host is not None:
                            permit = self._host.try_acquire()
                            host_blocked = permit is None
                        if not host_blocked:
                            self._total += 1
                            create = True
                    if (entry is not None or create) and fut is not None:
                        self._waiters.popleft()
                        fut = None
                        if self._idle or self._total < self._max:
                            self._wake_head()
                if to_close:
                    await self._close_entries(to_close)
                if entry is not None or create:
                    if create:  # _create_entry undoes the reservation itself if it fails
                        p, permit, create = permit, None, False
                        entry = await self._create_entry(p)
                    elif self._vet:  # _vet_entry drops or returns the entry itself if it fails
                        vetted, entry = entry, None
                        assert vetted is not None
                        if not await self._vet_entry(vetted):
                            continue
                        entry = vetted
                    assert entry is not None
                    entry.uses += 1
                    entry.where = where
                    self._out.add(entry)
                    self._n_checkouts += 1
                    waited = loop.time() - start
                    if waited > 1e-4:
                        self._count("waited")
                        self._st["wait_total"] += waited
                    if self._after_checkout:
                        self._checked_out(waited)
                    return entry
                if not block:
                    self._count("exhausted")
                    raise PoolExhausted(
                        f"pool {self.name!r}: all {self._total} resources are in use"
                        + (" and the host limit is reached" if host_blocked else ""))
                found = self._collect_orphans_locked()
                if found:
                    to_close = []
                    self._reclaim(found, to_close)
                    if to_close:
                        await self._close_entries(to_close)
                    continue
                if fut is None:
                    fut = loop.create_future()
                    self._waiters.append(fut)
                    continue
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    self._waiters.remove(fut)
                    fut = None
                    self._wake_head()
                    self._count("timeouts")
                    raise PoolTimeout(
                        f"pool {self.name!r}: no resource free within {timeout}s "
                        f"({self._total} in use, {len(self._waiters)} other waiters)")
                pause = _BORROWER_POLL if self._out else None
                if host_blocked:
                    pause = host_delay * (0.5 + self._rng.random())
                    host_delay = min(host_delay * 2, _HOST_MAX_DELAY)
                if left is not None:
                    pause = left if pause is None else min(pause, left)
                await asyncio.wait([fut], timeout=pause)
                if self._moved():
                    self._follow_directory()
        except BaseException as e:
            if isinstance(e, (PoolTimeout, PoolExhausted)):
                self._refused(e, timeout)
            if fut is not None:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                    self._wake_head()
                elif fut.done() and not fut.cancelled() and fut.result() is not None:
                    self._abandon(fut.result())  # handed to us just as we were cancelled: pass it on
            if create:  # reserved a resource (and a host permit) but never started creating it
                self._total -= 1
                if permit is not None:
                    permit.release()
                self._wake_head()
            elif entry is not None:  # taken but not lent (e.g. cancelled while closing expired ones)
                self._abandon(entry)
            raise

    def _abandon(self, e: _Entry) -> None:
        """Give back an entry that a cancelled checkout held, unlent: dirty (checked before
        reuse, if there is a check); closed in the background if the pool is closed."""
        e.dirty = True
        if not self._closed:
            self._give(e)
            return
        to_close: list[_Entry] = []
        self._drop_locked(e, to_close)
        task = asyncio.get_running_loop().create_task(self._close_entries(to_close))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _create_entry(self, permit: Permit | None) -> _Entry:
        try:
            resource = await _call(self._create)
        except BaseException:
            if permit is not None:
                permit.release()
            self._total -= 1
            self._count("create_failures")
            self._wake_head()
            raise
        self._created_event()
        return self._new_entry(resource, permit)

    async def _vet_entry(self, e: _Entry) -> bool:
        now = self._clock()
        ok = not self._expired(e, now)
        if ok and self._needs_check(e, now):
            try:
                ok = (await _call(self._check, e.resource)) is not False  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001
                ok = False
            except BaseException:  # cancelled mid-check: give it back unlent (dirty)
                self._abandon(e)
                raise
            if not ok:
                self._count("failed_checks")
        elif not ok:
            self._count("retired")
        if ok:
            e.dirty = False
            return True
        to_close: list[_Entry] = []
        self._drop_locked(e, to_close)
        await self._close_entries(to_close)
        return False

    async def _put(self, e: _Entry, failed: bool) -> None:
        now = e.last_used = self._clock()
        e.borrower = None
        if e not in self._out:
            return
        self._out.discard(e)
        if failed:
            e.dirty = True
        to_close: list[_Entry] = []
        if (self._closed or e.doomed or (failed and self._check is None) or now >= e.expires
                or self._total > self._max):  # the last: shrunk, and this one is surplus
            self._drop_locked(e, to_close)
        elif (self._host is not None and not self._waiters and self._total > self.min_size
              and self._host.contended()):
            self._count("shed")
            self._drop_locked(e, to_close)
        else:
            self._give(e)
        if self._maint_every is not None and now >= self._next_maint:
            self._maintain_locked(now, to_close)
        if to_close:
            await self._close_entries(to_close)
        if self._total < self.min_size and not self._closed:
            try:
                await self.fill()
            except Exception as exc:  # noqa: BLE001 (the caller returned a resource; it must not fail)
                warnings.warn(f"pool {self.name!r}: refilling to min_size failed: {exc!r}", RuntimeWarning,
                              stacklevel=3)

    def discard(self, resource: T) -> None:
        for e in self._out:
            if e.resource is resource:
                e.doomed = True
                return
        raise ConfigError("discard(): that resource is not checked out from this pool")

    async def fill(self) -> int:
        """Create resources until min_size exist. Returns how many were created."""
        made = 0
        while not self._closed and self._total < self.min_size:
            permit = None
            if self._host is not None:
                permit = self._host.try_acquire()
                if permit is None:
                    break
            self._total += 1
            e = await self._create_entry(permit)
            if self._closed:  # closed while we were creating: close() already drained idle
                to_close: list[_Entry] = []
                self._drop_locked(e, to_close)
                await self._close_entries(to_close)
                break
            self._give(e)
            made += 1
        return made

    async def maintain(self) -> int:
        """As Pool.maintain(): follow a new configuration, retire, trim, reap and reclaim now."""
        self._sync()
        to_close: list[_Entry] = []
        self._reclaim(self._collect_orphans_locked(), to_close)
        self._maintain_locked(self._clock(), to_close)
        if self._surplus:
            self._trim_locked(to_close)
        await self._close_entries(to_close)
        return len(to_close)

    def _readings(self) -> dict[str, Any]:
        """stats(): as Pool's, for this process's pool."""
        return self._readings_locked()

    async def close(self, timeout: float | None = 0.0) -> None:
        """Close idle resources, fail waiters with StoreClosed, close in-use ones on return."""
        self._closed = True
        to_close: list[_Entry] = []
        while self._idle:
            self._drop_locked(self._idle.pop(), to_close)
        for f in self._waiters:
            if not f.done():
                f.set_result(None)
        await self._close_entries(to_close)
        self._closed_event(len(to_close))
        if timeout:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while self._out and loop.time() < deadline:
                await asyncio.sleep(0.005)

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncPool[T]:
        if self.min_size:
            await self.fill()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncPool {self.name!r} total={self._total} idle={len(self._idle)} in_use={len(self._out)}>"


_live_async_pools: weakref.WeakSet[AsyncPool[Any]] = weakref.WeakSet()


@after_fork_in_child
def _after_fork_in_child() -> None:
    for pool in list(_live_async_pools):
        pool._forget_after_fork()


# Host-wide concurrency cap: holder records on permanent slots (csrc/sg_concurrency.c).
#
# CapCore is the engine a ConcurrencyLimiter (concurrency.py) holds; Permit is one held
# permit and the context manager slot() returns, compiled so that the slot() round trip
# (cap_slot, Permit.__enter__, Permit.__exit__) runs no Python code when the cap has room.
cimport cython
from libc.stdlib cimport malloc, free

import time as _cap_time

from sluicegate._forks import after_fork_in_child as _cap_after_fork_in_child

CAP_MAX_LIMIT = SG_CAP_MAX_LIMIT
cdef uint64_t _UNWATCHED_CAP = 0
cdef enum:
    _OWNER_PID_SHIFT = 42  # _procident.PID_SHIFT: owner >> 42 is the pid, the record hint

# This process's owner word (_procident.current_owner()), 0 until first needed; cleared
# in a forked child, which is another process (its parent's permits are not its own).
cdef uint64_t _cap_owner = 0
_cap_pi = None  # sluicegate._procident, imported on first use
_cap_check_seconds = None  # concurrency._check_seconds: the one validator of a timeout


cdef inline uint64_t _cap_me() except 0:
    global _cap_owner
    if _cap_owner == 0:
        _cap_owner = _cap_owner_slow()
    return _cap_owner


cdef uint64_t _cap_owner_slow() except 0:
    global _cap_pi
    if _cap_pi is None:
        from sluicegate import _procident
        _cap_pi = _procident
    return _cap_pi._owner or _cap_pi.current_owner()


def _cap_after_fork():
    global _cap_owner
    _cap_owner = 0


_cap_after_fork_in_child(_cap_after_fork)


cdef class CapCore:
    """The shared state of one ConcurrencyLimiter: control words and holder records.
    Process-local object; every method is one short lock-free operation."""
    cdef Table tbl
    cdef sg_cap c
    cdef readonly str name
    cdef readonly uint32_t nrec
    # the directory entry's version word (see directory.py): try_acquire answers -2
    # when it moved, so the policy follows the new configuration first
    cdef uint64_t *_ver
    cdef uint64_t _seen
    cdef object _dir_entry
    cdef object _on_moved
    # adaptive mode (configure()): Permit reports its outcomes to the policy's AIMD hooks
    cdef readonly bint adaptive
    # threads of this process waiting for a permit (the policy's acquire loop counts them
    # under its condition); a release in this process wakes one when there are any
    cdef public Py_ssize_t nwait
    # someone listens for cap.acquired (the policy's event flag, read by Permit's C path)
    cdef public bint ev_acquired

    def __cinit__(self, Table tbl, str name):
        self.c.pairs = NULL
        self.c.nrec = 0
        self._ver = &_UNWATCHED_CAP
        self.tbl = tbl
        self.name = name
        self.c.ctl = tbl.permanent_words(SG_NS_CONCURRENCY, name, "ctl")

    def configure(self, uint32_t nrec, uint32_t limit, uint32_t min_limit, bint adaptive):
        """Apply a configuration: nrec holder records (at least as many as any
        configuration declared), and the limit (see sg_cap_init).  Counting is strict,
        so holders above a lowered limit still count against it."""
        cdef uint32_t i, npairs
        cdef uint64_t **pairs
        if nrec < 1 or nrec > SG_CAP_MAX_LIMIT:
            raise ValueError(f"nrec must be in 1..{SG_CAP_MAX_LIMIT}")
        self._open()
        nrec = max(nrec, sg_cap_records(&self.c))
        npairs = (nrec + SG_CAP_PER_SLOT - 1) // SG_CAP_PER_SLOT
        pairs = <uint64_t **>malloc(npairs * sizeof(uint64_t *))
        if pairs == NULL:
            raise MemoryError()
        try:
            for i in range(npairs):
                pairs[i] = self.tbl.permanent_words(SG_NS_CONCURRENCY, self.name, f"h{i}")
        except BaseException:
            free(pairs)
            raise
        free(self.c.pairs)
        self.c.pairs = pairs
        self.c.nrec = nrec
        self.nrec = nrec
        self.c.strict = 1
        sg_cap_init(&self.c, limit, min_limit, 0 if adaptive else 1)
        self.adaptive = adaptive

    def watch(self, DirEntry entry, uint64_t seen, on_moved):
        """Follow entry: an acquire that finds its version moved past seen returns -2, and
        the front calls on_moved() (reads the directory, reconfigures this engine) first."""
        self._dir_entry = entry
        self._on_moved = on_moved
        self._ver = entry.ver
        self._seen = seen

    def sync(self):
        """Follow the directory now if its version moved (configuration reads use it)."""
        if sg_load(self._ver) != self._seen:
            self._on_moved()

    def __dealloc__(self):
        if self.c.pairs != NULL:
            free(self.c.pairs)
            self.c.pairs = NULL

    cdef inline int _open(self) except -1:
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return 0

    cdef inline int64_t _try(self, uint64_t owner, uint32_t hint) except -3:
        cdef uint32_t idx
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        if sg_load(self._ver) != self._seen:
            return -2
        if sg_cap_try_acquire(&self.c, owner, hint, sg_store_now(&self.tbl.t), &idx) == SG_OK:
            return idx
        return -1

    cdef inline bint _release(self, uint32_t idx, uint64_t owner) except -1:
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return sg_cap_release(&self.c, idx, owner) == 1

    def try_acquire(self, uint64_t owner, uint32_t hint):
        """Index of the record taken for owner, -1 when the cap is full, or -2 when the
        configuration changed (follow it, then try again)."""
        return self._try(owner, hint)

    def release(self, uint32_t idx, uint64_t owner):
        """Free record idx if it still holds owner (CAS): True if this call freed it."""
        return self._release(idx, owner)

    def holders(self):
        """[(index, owner, since_ns)] of every held record."""
        cdef uint32_t i
        cdef uint64_t *r
        cdef uint64_t o
        self._open()
        out = []
        for i in range(self.nrec):
            r = sg_cap_rec(&self.c, i)
            o = sg_load(r)
            if o != 0:
                out.append((i, o, sg_load(r + 1)))
        return out

    def owner_at(self, uint32_t idx):
        self._open()
        if idx >= self.nrec:
            return 0
        return sg_load(sg_cap_rec(&self.c, idx))

    @property
    def in_use(self):
        self._open()
        return sg_cap_in_use(&self.c)

    @property
    def limit(self):
        self._open()
        return sg_cap_limit(&self.c)

    def set_limit(self, uint32_t limit):
        self._open()
        sg_cap_set_limit(&self.c, limit)

    def granted(self):
        self._open()
        return sg_load(&self.c.ctl[3])

    def contended(self, uint64_t window_ns):
        self._open()
        return sg_cap_contended(&self.c, sg_store_now(&self.tbl.t), window_ns) == 1

    def on_success(self, uint32_t inflight, uint32_t max_limit):
        self._open()
        return sg_cap_on_success(&self.c, inflight, max_limit)

    def on_drop(self, uint32_t backoff_1024, uint32_t min_limit):
        self._open()
        return sg_cap_on_drop(&self.c, backoff_1024, min_limit)

    def stat_words(self, str part):
        """Four shared stats words for this cap ('st'): read as a tuple."""
        cdef uint64_t *w = self.tbl.permanent_words(SG_NS_CONCURRENCY, self.name, part)
        return (sg_load(&w[0]), sg_load(&w[1]), sg_load(&w[2]), sg_load(&w[3]))

    def stat_add(self, str part, int i, uint64_t n=1):
        cdef uint64_t *w
        if i < 0 or i > 3:
            raise IndexError(i)
        w = self.tbl.permanent_words(SG_NS_CONCURRENCY, self.name, part)
        sg_add(&w[i], n)


cdef enum:
    _PENDING = 0
    _HELD = 1
    _RELEASED = 2

cdef tuple _PERMIT_STATES = ("pending", "held", "released")


@cython.final
@cython.freelist(8)
@cython.no_gc_clear  # a finaliser may still release a permit the collector is about to clear
cdef class Permit:
    """One held permit (also the context manager returned by slot()/slot_async()).

    release() is idempotent: it frees the record only if it still holds exactly this
    process's owner word, and only the first time, even when threads (or a finaliser)
    release it at once: the owner word is the process's, so a second release would free
    the record that another thread of the process took after the first.

    Exactly once: every release goes through _settle(), whose test (held?) and set
    (released) are two C statements run with the GIL held and nothing between them that
    can run Python code: no call, no allocation (so no garbage collection and no
    finaliser), no reference dropped. The interpreter switches threads only between
    bytecodes or where C code releases the GIL, so no other thread (and no finaliser in
    this one) runs between the test and the set, and one caller alone sees held. A
    free-threaded (no-GIL) build would need a compare-and-swap there."""
    cdef object cap  # the ConcurrencyLimiter: waiting, AIMD hooks, per-thread accounting
    cdef CapCore eng
    cdef object timeout
    cdef double t0
    cdef readonly uint64_t owner
    cdef readonly int index
    cdef int state
    # the thread whose cap.release() may release it (set by acquire(); 0 for slot())
    cdef public unsigned long _thread

    def __init__(self, cap, int index=-1, uint64_t owner=0, timeout=None):
        self.cap = cap
        self.eng = cap._engine
        self.index = index
        self.owner = owner
        self.timeout = timeout
        self.t0 = 0.0
        self._thread = 0
        self.state = _HELD if index >= 0 else _PENDING

    @property
    def held(self):
        return self.state == _HELD

    cdef inline bint _settle(self) noexcept:
        """Held -> released, True for the one caller that must free the record (see the
        class docstring: keep these two statements free of Python code)."""
        if self.state != _HELD:
            return False
        self.state = _RELEASED
        return True

    cdef object _free(self):
        """Free the record, after _settle(): True if this call freed it."""
        cdef bint freed
        if self._thread:
            self.cap._forget(self)
        if self.owner != _cap_me():  # inherited through fork: the parent's permit, not ours
            return False
        freed = self.eng._release(<uint32_t>self.index, self.owner)
        if self.eng.nwait:
            self.cap._wake()
        return freed

    def release(self):
        """Give the permit back. True the first time, False afterwards (a no-op)."""
        if not self._settle():
            return False
        return self._free()

    def success(self):
        """Report a successful call (adaptive mode grows the limit)."""
        self.cap._on_success()

    def drop(self):
        """Report a dropped / timed-out call (adaptive mode shrinks the limit)."""
        self.cap._on_drop()

    cdef int _take_now(self) except -1:
        """Take a record without waiting: 1, or 0 when the cap is full or its
        configuration moved (the policy's acquire loop handles both)."""
        cdef uint64_t owner = _cap_me()
        cdef int64_t idx = self.eng._try(owner, <uint32_t>(owner >> _OWNER_PID_SHIFT))
        if idx < 0:
            return 0
        # no Python code runs between taking the record and recording it here, so not even
        # a KeyboardInterrupt can leave the record taken and this permit pending
        self.index = <int>idx
        self.owner = owner
        self.state = _HELD
        return 1

    cdef int _adopt(self, Permit got) except -1:
        """Hold the record that got (a permit the policy's acquire loop took) holds."""
        if got is None:
            raise TypeError("the acquire loop returned no permit")
        self.index = got.index
        self.owner = got.owner
        self.state = _HELD
        got.state = _RELEASED  # its record is this permit's now: got must never free it
        return 0

    cdef object _finish(self, object exc):
        """The end of a slot: report the outcome to the AIMD hooks, then release."""
        cdef object cap = self.cap
        if self.eng.adaptive and self.state == _HELD:
            slow = cap.slow_call
            if ((exc is not None and isinstance(exc, cap.drop_on))
                    or (slow is not None and _cap_time.monotonic() - self.t0 > slow)):
                cap._on_drop()
            elif exc is None:
                cap._on_success()
        if self._settle():
            return self._free()
        return False

    # -- sync context manager -------------------------------------------------------
    def __enter__(self):
        if self.state == _PENDING:
            if not self._take_now():
                self._adopt(self.cap._acquire(self.timeout, True))
            elif self.eng.ev_acquired:
                self.cap._acquired_event(0.0)
            if self.eng.adaptive:
                self.t0 = _cap_time.monotonic()
        elif self.state == _RELEASED:
            raise RuntimeError("this permit was already released; take a new slot()")
        return self

    def __exit__(self, et, exc, tb):
        if self.eng.adaptive:
            self._finish(exc)
        elif self._settle():
            self._free()

    # -- async context manager ------------------------------------------------------
    async def __aenter__(self):
        if self.state == _RELEASED:
            raise RuntimeError("this permit was already released; take a new slot_async()")
        if self.state == _PENDING:
            if not self._take_now():
                self._adopt(await self.cap._acquire_async(self.timeout, True))
            elif self.eng.ev_acquired:
                self.cap._acquired_event(0.0)
        if self.eng.adaptive:
            self.t0 = _cap_time.monotonic()
        return self

    async def __aexit__(self, et, exc, tb):
        self._finish(exc)

    def __repr__(self):
        return f"<Permit {self.cap.name!r} #{self.index} {_PERMIT_STATES[self.state]}>"

    # -- copies ---------------------------------------------------------------------
    # A copy is this permit: two objects for one record would free it twice.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        # pickled whole, as the Python class it replaces was; in another process the
        # record is not its (release() returns False and frees nothing)
        return _permit_restore, (self.cap, self.index, self.owner, self.timeout, self.state, self.t0, self._thread)


def _permit_restore(cap, int index, uint64_t owner, timeout, int state, double t0, unsigned long thread):
    cdef Permit p = Permit(cap, index, owner, timeout)
    if state < _PENDING or state > _RELEASED:
        raise ValueError(f"bad Permit state {state}")
    p.state = state
    p.t0 = t0
    p._thread = thread
    return p


def cap_slot(cap, timeout=None):
    """A context manager holding one permit of cap for the block (taken on enter, with
    `with` or `async with`), waiting up to timeout seconds (None: forever); raises
    ConcurrencyLimitExceeded on timeout. ConcurrencyLimiter.slot and slot_async."""
    global _cap_check_seconds
    cdef Permit p
    if timeout is not None:
        if _cap_check_seconds is None:
            from sluicegate.concurrency import _check_seconds
            _cap_check_seconds = _check_seconds
        timeout = _cap_check_seconds("timeout", timeout)
    p = Permit.__new__(Permit)
    p.cap = cap
    p.eng = cap._engine
    p.timeout = timeout
    p.index = -1
    return p

# The compiled base of Guard (guard.py): call() for the common shape, a limiter, a cap and
# a breaker with no memory gate, pool, timeout or retry, in one C frame.  It reaches the
# cap's Permit and the breaker's call path through their C methods, so a guarded call
# costs little more than calling the three by hand (benchmarks/bench_guard.py).  Every
# other shape, and every end that is not a success (tagging, counting, events, the
# fallback), is Guard's Python code.


cdef class GuardFront:
    cdef DirWatch _gw  # the guard's directory version watch (its engine)
    cdef uint64_t *_gok  # the host-wide "succeeded" count (a Tally word)
    cdef Tally _gtally  # keeps _gok's mapping alive
    cdef object _glim  # a RateLimiter or None
    cdef object _gkey
    cdef object _gkeyfn
    cdef object _gcost
    cdef object _gcap  # a ConcurrencyLimiter or None
    cdef CapCore _gcapeng
    cdef bint _gcapnow  # cap_timeout 0: refuse at once when full (no deadline can shorten that)
    cdef BreakerFront _gbr  # a CircuitBreaker or None
    cdef bint _gflat  # call() runs here (else Guard._call, the general form)
    cdef bint _gafter  # a success needs Guard._succeeded (adaptive feedback, an event)

    def _front_setup(self, DirWatch watch, Tally tally, int ok_index, lim, key, keyfn, cost, cap,
                     bint cap_now, br, bint flat, bint after):
        """Take the guard's parts and shape (Guard._derive calls it on every change);
        tally None (a private guard's counts are not in a store) leaves call() to Python."""
        self._gflat = False
        if tally is not None:
            if ok_index < 0 or ok_index >= tally.n:
                raise IndexError(ok_index)
            self._gok = tally.w[ok_index]
        self._gw = watch
        self._gtally = tally
        self._glim = lim
        self._gkey = key
        self._gkeyfn = keyfn
        self._gcost = cost
        self._gcap = cap
        self._gcapeng = None if cap is None else cap._engine
        self._gcapnow = cap_now
        self._gbr = br
        self._gflat = flat and tally is not None
        self._gafter = after

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) through every layer (with a pool: fn(resource, *args, **kwargs))."""
        cdef int phase = 0
        cdef Permit p = None
        cdef DirWatch w = self._gw
        if not self._gflat:
            return self._call(fn, args, kwargs)
        if self._gtally.tbl.t.hdr == NULL:
            self._gtally.tbl.check()  # StoreClosed
        if sg_load(w.ver) != w.seen:
            w.on_moved()
            if not self._gflat:
                return self._call(fn, args, kwargs)
        try:
            if self._glim is not None:
                key = self._gkey if self._gkeyfn is None else self._gkeyfn(*args, **kwargs)
                if not self._glim.allow(key, self._gcost):
                    raise self._denied(key)
            if self._gcap is not None:
                phase = 1
                p = Permit.__new__(Permit)
                p.cap = self._gcap
                p.eng = self._gcapeng
                p.timeout = 0.0 if self._gcapnow else self._cap_wait()
                p.index = -1
                if p.eng.adaptive or p.eng.ev_acquired or not p._take_now():
                    p.__enter__()  # (waits, and tells cap.acquired, as a slot does)
        except Exception as exc:
            return self._failed(self._refused(exc, phase), 0.0, 1)
        try:
            if self._gbr is not None:
                result = self._gbr._call(fn, args, kwargs)
            else:
                result = fn(*args, **kwargs)
        except BaseException as exc:
            if p is not None:
                if p.eng.adaptive:
                    p._finish(exc)
                elif p._settle():
                    p._free()
            if isinstance(exc, Exception):
                return self._failed(self._refused(exc, 2), 0.0, 1)
            raise
        if p is not None:
            if p.eng.adaptive:
                p._finish(None)
            elif p._settle():
                p._free()
        if self._gtally.tbl.t.hdr != NULL:  # a store closed during the call is unmapped: not counted
            sg_add(self._gok, 1)
        if self._gafter:
            self._succeeded(0.0, 1)
        return result

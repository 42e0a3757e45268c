# Rate limiter bindings: the hot path (allow) and Decision.
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy
from libc.stdint cimport uint8_t
from cpython.long cimport PyLong_AsLongLongAndOverflow

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

import os as _os

_np = None  # numpy, imported on the first allow_many (keeps `import sluicegate` light); False: absent


cdef class Allowed:
    """allow_many's answer where numpy is not installed: a compact sequence of bools
    (one byte per key; indexing, slicing, iteration, len, count, ==, tolist())."""
    cdef bytearray _b

    def __cinit__(self, bytearray b):
        self._b = b

    def __len__(self):
        return len(self._b)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Allowed(self._b[i])
        return self._b[i] != 0

    def __iter__(self):
        return (x != 0 for x in self._b)

    def count(self, value=True):
        n = len(self._b) - self._b.count(0)
        return n if value else len(self._b) - n

    def tolist(self):
        return [x != 0 for x in self._b]

    def __eq__(self, other):
        if isinstance(other, Allowed):
            return self._b == (<Allowed>other)._b
        try:
            return self.tolist() == [bool(x) for x in other]
        except TypeError:
            return NotImplemented

    def __repr__(self):
        return f"Allowed({self.tolist()!r})"


import collections.abc as _abc
_abc.Sequence.register(Allowed)
_NO_KEY = object()

ALGO_GCRA = SG_ALGO_GCRA
ALGO_FIXED = SG_ALGO_FIXED
ALGO_SLIDING = SG_ALGO_SLIDING
FIXED_MAX_LIMIT = SG_FIXED_MAX_LIMIT
SLIDING_MAX_LIMIT = SG_SLIDING_MAX_LIMIT
GCRA_MAX_TAU = SG_GCRA_MAX_TAU

cdef enum:
    _NSTRIPES = 16

# What an unwatched policy's version pointer reads: it never changes.
cdef uint64_t _UNWATCHED = 0
N_STAT_STRIPES = _NSTRIPES

# Bumped in every forked child, so a limiter re-picks its stats stripe (pid % 16)
# without calling getpid() on the hot path.
cdef int _fork_gen = 0


def _limiter_after_fork() -> None:
    global _fork_gen
    _fork_gen += 1


from sluicegate._forks import after_fork_in_child as _after_fork_in_child
_after_fork_in_child(_limiter_after_fork)


cdef class Decision:
    """The outcome of one rate-limit decision.

    allowed: admitted or not; limit: the (tightest) rate's limit (the burst for a
    token bucket); remaining: whole calls left now; retry_after: seconds until this
    call (same cost) would be admitted (0 when allowed); reset_after: seconds until
    the key is back to full."""
    cdef readonly bint allowed
    cdef readonly object limit
    cdef readonly object remaining
    cdef readonly double retry_after
    cdef readonly double reset_after

    def __init__(self, bint allowed, limit, remaining, double retry_after, double reset_after):
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.retry_after = retry_after
        self.reset_after = reset_after

    def __bool__(self):
        return self.allowed

    def __eq__(self, other):
        if not isinstance(other, Decision):
            return NotImplemented
        cdef Decision o = <Decision>other
        return (self.allowed == o.allowed and self.limit == o.limit and self.remaining == o.remaining
                and self.retry_after == o.retry_after and self.reset_after == o.reset_after)

    def __hash__(self):
        return hash((self.allowed, self.limit, self.remaining, self.retry_after, self.reset_after))

    def __repr__(self):
        return (f"Decision(allowed={bool(self.allowed)}, limit={self.limit}, remaining={self.remaining}, "
                f"retry_after={self.retry_after:.6f}, reset_after={self.reset_after:.6f})")

    def __reduce__(self):
        return (Decision, (self.allowed, self.limit, self.remaining, self.retry_after, self.reset_after))


cdef inline int fast_hash(object key, uint64_t seed, sg_hash128 *out) except -1:
    """hash_key with an inline path for exact compact-ASCII str keys (their UTF-8
    bytes are the stored characters, so the hash is the same); anything else goes
    through hash_key (type and length checks, UTF-8 encoding)."""
    cdef Py_ssize_t n
    if PyUnicode_CheckExact(key) and PyUnicode_IS_COMPACT_ASCII(key):
        n = PyUnicode_GET_LENGTH(key)
        if n <= _MAX_KEY:
            out[0] = sg_hash(PyUnicode_DATA(key), <size_t>n, seed)
            return 0
    return hash_key(key, seed, out)


cdef inline Decision make_decision(const sg_decision *d):
    cdef Decision r = Decision.__new__(Decision)
    r.allowed = d.allowed != 0
    r.limit = d.limit
    r.remaining = d.remaining
    r.retry_after = <double>d.retry_after_ns / 1e9 if d.retry_after_ns != <uint64_t>-1 else float("inf")
    r.reset_after = <double>d.reset_after_ns / 1e9
    return r


# A refund's time is read this much before the decisions it refunds: they may read the
# TSC-extrapolated clock, within tens of ns of sg_store_now.
cdef uint64_t _CLOCK_MARGIN_NS = 20000


cdef inline uint64_t refund_clock(const sg_table *t) nogil:
    """A time to refund decisions made after it at (before each of them, within the margin)."""
    cdef uint64_t now = sg_store_now(t)
    return now - _CLOCK_MARGIN_NS if now > _CLOCK_MARGIN_NS else 1


def limiter_counts(Table tbl, str name):
    """(allowed, denied) of limiter `name`, summed over every process's stats stripe; a
    stripe no process has written is absent and counts 0 (nothing is created: a reader
    such as an exporter takes no room in the store)."""
    cdef int s, rc
    cdef sg_hash128 h
    cdef uint64_t idx, allowed = 0, denied = 0
    cdef uint8_t tag
    cdef uint64_t *w
    tbl.check()
    seed = namespace_seed(SG_NS_STATS, name)
    for s in range(_NSTRIPES):
        hash_key(f"limiter\x00{s}", seed, &h)
        rc = sg_table_get(&tbl.t, h, SG_SLOT_PERMANENT, 0, 0, sg_store_now(&tbl.t), 0, &idx, &tag)
        if rc == SG_NOTFOUND:
            continue
        if rc != SG_OK:
            raise_table_rc(rc, f"rate limiter {name!r}")
        w = sg_words(&tbl.t, idx)
        allowed += sg_load(w)
        denied += sg_load(w + 1)
    return allowed, denied


cdef class LimiterEngine:
    """The shared-memory engine of a RateLimiter: its rates, per-rate key namespaces and
    stats stripe over one store's table.  It decides; the front object (RateLimiter, over
    LimiterFront) holds it and adds waiting, decorators, chains and pickling."""
    cdef Table _tbl
    cdef sg_rate *_rates
    cdef uint64_t *_seeds
    cdef sg_hash128 *_hbuf
    cdef int _n
    cdef uint64_t _max_cost
    cdef uint64_t *_stat_w
    cdef int _stat_gen
    cdef str _cname
    cdef uint64_t *_aw  # an adaptive limiter's shared words (current interval, last cut), else NULL
    cdef sg_adaptive _adapt
    # the directory entry's version word, loaded once per decision (see directory.py)
    cdef uint64_t *_ver
    cdef uint64_t _seen
    cdef object _dir_entry
    cdef object _on_moved

    def __cinit__(self, Table tbl):
        self._ver = &_UNWATCHED
        self._tbl = tbl

    def watch(self, DirEntry entry, uint64_t seen, on_moved):
        """Follow entry: a decision that finds its version moved past seen calls
        on_moved() first (the front reads the directory and reconfigures this engine)."""
        self._dir_entry = entry
        self._on_moved = on_moved
        self._ver = entry.ver
        self._seen = seen

    def sync(self):
        """Follow the directory now if its version moved (configuration reads use it)."""
        if sg_load(self._ver) != self._seen:
            self._on_moved()

    def __dealloc__(self):
        free(self._rates)
        free(self._seeds)
        free(self._hbuf)

    def configure(self, str name, list specs, tuple adaptive=None):
        """specs: [(algo, limit, period_ns, interval_ns), ...] already validated in Python.
        adaptive: None, or (interval_min_ns, interval_max_ns, increase, decrease,
        cooldown_ns) for one token bucket whose interval moves between the two by AIMD
        (feedback()), kept in the store so that every process decides with the same one."""
        cdef Table tbl = self._tbl
        cdef int n = len(specs), i
        cdef sg_rate r
        cdef uint64_t *aw = NULL
        if n < 1 or n > 64:
            raise _ConfigError(f"rate must give between 1 and 64 rates, got {n}")
        tbl.check()
        if adaptive is not None:
            if n != 1 or specs[0][0] != SG_ALGO_GCRA:
                raise _ConfigError("an adaptive limiter is one token bucket (one rate)")
            aw = tbl.permanent_words(SG_NS_LIMITER, name, "adaptive")
            self._adapt.interval_min_ns, self._adapt.interval_max_ns = adaptive[0], adaptive[1]
            self._adapt.increase, self._adapt.decrease, self._adapt.cooldown_ns = adaptive[2], adaptive[3], adaptive[4]
        rates = <sg_rate *>calloc(n, sizeof(sg_rate))
        seeds = <uint64_t *>calloc(n, sizeof(uint64_t))
        hbuf = <sg_hash128 *>calloc(n, sizeof(sg_hash128))
        if rates == NULL or seeds == NULL or hbuf == NULL:
            free(rates); free(seeds); free(hbuf)
            raise MemoryError()
        cdef uint64_t maxc = <uint64_t>-1
        for i in range(n):
            algo, limit, period_ns, interval_ns = specs[i]
            r.algo = algo
            r.limit = limit
            r.period_ns = period_ns
            r.interval_ns = interval_ns
            r.adaptive = aw
            r.interval_max_ns = self._adapt.interval_max_ns if aw != NULL else interval_ns
            if sg_rate_validate(&r) != SG_OK:
                free(rates); free(seeds); free(hbuf)
                raise _ConfigError(f"rate {i} ({specs[i]!r}) is out of the range the core supports")
            rates[i] = r
            # A window's slots record its period (the table's idle test for reclaim uses it),
            # so the namespace covers algorithm and period: a new period starts fresh windows,
            # a new limit keeps the counts.  A token bucket's state (its debt, as an arrival
            # time) means the same under any rate, so it carries over a reconfiguration.
            if algo == SG_ALGO_GCRA:
                seeds[i] = namespace_seed(SG_NS_LIMITER, f"{name}\x00{i}\x00gcra")
            else:
                seeds[i] = namespace_seed(SG_NS_LIMITER, f"{name}\x00{i}\x00{algo}:{period_ns}")
            if r.limit < maxc:
                maxc = r.limit
        free(self._rates); free(self._seeds); free(self._hbuf)
        self._rates, self._seeds, self._hbuf, self._n = rates, seeds, hbuf, n
        self._max_cost = maxc
        self._cname = name
        self._aw = aw
        self._stat_w = NULL
        self._restripe()

    def feedback(self, bint ok, uint64_t now=0):
        """An adaptive limiter's AIMD step (see sg_adaptive_feedback): the interval in ns
        after it.  now: store time (0 = the store clock), for the decrease's cooldown."""
        if self._aw == NULL:
            raise _ConfigError("feedback() applies to an adaptive limiter (algorithm='adaptive')")
        self._tbl.check()
        return sg_adaptive_feedback(self._aw, &self._adapt, ok, now or sg_store_now(&self._tbl.t))

    def interval_ns(self):
        """The current emission interval in ns (an adaptive limiter's shared one, else the
        first rate's)."""
        self._tbl.check()
        if self._aw != NULL:
            return sg_adaptive_interval(self._aw, self._adapt.interval_min_ns, self._adapt.interval_max_ns)
        return self._rates[0].interval_ns

    cdef int _restripe(self) except -1:
        self._stat_gen = _fork_gen
        stripe = _os.getpid() % _NSTRIPES
        self._stat_w = self._tbl.permanent_words(SG_NS_STATS, self._cname, f"limiter\x00{stripe}")
        return 0

    cdef uint64_t _cost(self, object cost) except 0:
        cdef int ovf = 0
        cdef long long c
        if type(cost) is int:
            c = PyLong_AsLongLongAndOverflow(cost, &ovf)
            if ovf == 0 and 1 <= c and <uint64_t>c <= self._max_cost:
                return <uint64_t>c
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise _ConfigError(f"cost must be a positive int, got {cost!r}")
        if cost < 1:
            raise _ConfigError(f"cost must be a positive int, got {cost!r}")
        raise _ConfigError(f"cost {cost} is larger than the limit ({self._max_cost}): it could never be admitted")

    # -- the hot path (LimiterFront calls the same inline helper, with no extra hop) --
    def allow(self, key, cost=1):
        """Consume cost for key if the limit allows it; True if admitted."""
        cdef sg_decision d
        rate_call(self, key, cost, 1, &d)
        return True if d.allowed else False

    def check(self, key, cost=1):
        """Like allow, but returns the full Decision."""
        cdef sg_decision d
        rate_call(self, key, cost, 1, &d)
        return make_decision(&d)

    def peek(self, key, cost=1):
        """The Decision a call of this cost would get now, consuming nothing."""
        cdef sg_decision d
        rate_call(self, key, cost, 0, &d)
        return make_decision(&d)

    def reset(self, key):
        """Forget key's state: it is back to a full budget."""
        rate_ready(self)
        self.reset_at(key, sg_store_now(&self._tbl.t))

    def refund(self, key, cost=1):
        """Give back cost previously consumed by key (best effort: a window that
        has rolled over is not refunded)."""
        cdef uint64_t c = 1
        rate_ready(self)
        if cost is not 1:
            c = self._cost(cost)
        self.refund_at(key, c, sg_store_now(&self._tbl.t))

    def allow_many(self, keys, cost=1):
        """Decide each key (consuming cost each) at one instant: a numpy bool array where
        numpy is installed, else an Allowed (a compact sequence of bools)."""
        cdef uint64_t c = 1
        cdef Py_ssize_t n, k
        cdef int i, nr, rc
        cdef size_t done = 0
        cdef sg_hash128 *hs
        cdef uint8_t[::1] outv
        cdef unsigned char[::1] pin
        cdef sg_table tl
        cdef uint64_t nallowed = 0, now, started
        cdef sg_rate *rates
        rate_ready(self)
        if cost is not 1:
            c = self._cost(cost)
        if isinstance(keys, (str, bytes)):
            raise KeyTypeError(f"allow_many takes an iterable of keys, not one {type(keys).__name__} key "
                               f"(it would decide each character): use allow(key), or allow_many([key])")
        cdef list klist = keys if type(keys) is list else list(keys)
        n = len(klist)
        global _np
        if _np is None:
            try:
                import numpy
            except ImportError:
                numpy = None
            _np = False if numpy is None else numpy  # (None in sys.modules: not installed)
        if _np is False:
            buf = bytearray(n)
            out = Allowed(buf)
            if n == 0:
                return out
            outv = buf
        else:
            out = _np.zeros(n, dtype=_np.bool_)
            if n == 0:
                return out
            outv = out.view(_np.uint8)
        nr = self._n
        hs = <sg_hash128 *>malloc(<size_t>n * nr * sizeof(sg_hash128))
        # the GIL-free loop decides with its own copy: another thread may follow a
        # reconfiguration (and free self._rates) meanwhile
        rates = <sg_rate *>malloc(nr * sizeof(sg_rate))
        if hs == NULL or rates == NULL:
            free(hs)
            free(rates)
            raise MemoryError()
        memcpy(rates, self._rates, nr * sizeof(sg_rate))
        try:
            if nr == 1:
                prev = _NO_KEY
                for k in range(n):
                    key = klist[k]
                    if key is prev:  # the same key object again (common in batches): same hash
                        hs[k] = hs[k - 1]
                    else:
                        fast_hash(key, self._seeds[0], &hs[k])
                        prev = key
            else:
                for k in range(n):
                    for i in range(nr):
                        hash_key(klist[k], self._seeds[i], &hs[k * nr + i])
            now = 0  # the core reads the clock, and again if the batch outlives a window
            # Fence against a close() from another thread while the GIL is released: the
            # pin (a buffer export) keeps the region mapped (mmap.close() refuses while it
            # lives, and the last reference unmaps it), and the loop works on a copy of the
            # table struct, because close() clears the Table's own hdr under it.  A batch in
            # flight finishes on the still-mapped region; every call after close() raises.
            pin = self._tbl.mv
            tl = self._tbl.t
            if tl.hdr == NULL:  # closed while the keys were hashed
                self._tbl.check()
            # refunds (below) are made at a time before every decision of the batch: at a
            # later one, a window that rolled over and was charged by others since would
            # take the refund and admit more than its limit (see LimiterChain.check)
            started = refund_clock(&tl)
            with nogil:
                rc = sg_rates_apply_many(&tl, hs, <size_t>n, rates, nr, c, now, &outv[0], &done)
            for k in range(<Py_ssize_t>done):
                nallowed += outv[k]
            if rc != SG_OK:
                # no silent charge: give back what the keys decided before the failure
                # were charged (best effort, as refund()), then raise
                for k in range(<Py_ssize_t>done):
                    if outv[k]:
                        for i in range(nr):
                            sg_rate_refund(&tl, hs[k * nr + i], &rates[i], c, started)
        finally:
            free(hs)
            free(rates)
        if rc == SG_ERR_FULL:
            what = f"rate limiter {self._cname!r}"
            store_full(what, f"{what}: allow_many found no free or idle slot for key {done} of {n}; the "
                             f"{nallowed} keys admitted before it were refunded and the batch decided "
                             "nothing. Create the store with a larger capacity")
        if rc != SG_OK:
            raise_table_rc(rc, f"rate limiter {self._cname!r}")
        if self._stat_gen != _fork_gen:
            self._restripe()
        sg_add(self._stat_w, nallowed)
        sg_add(self._stat_w + 1, <uint64_t>done - nallowed)
        if _ev_reclaimed and sg_load(&sg_reclaimed_here) != _reclaimed_told:
            tell_reclaimed(self._tbl)
        return out

    # -- fake-clock entry points (tests): now is store time in ns -----------------------
    def check_at(self, key, cost, uint64_t now):
        cdef sg_decision d
        rate_ready(self)
        if now == 0:
            raise _ConfigError("now must be a positive store time in ns")
        rate_decide(self, key, self._cost(cost), now, 1, &d)
        return make_decision(&d)

    def peek_at(self, key, cost, uint64_t now):
        cdef sg_decision d
        rate_ready(self)
        if now == 0:
            raise _ConfigError("now must be a positive store time in ns")
        rate_decide(self, key, self._cost(cost), now, 0, &d)
        return make_decision(&d)

    def reset_at(self, key, uint64_t now):
        cdef int i, rc
        cdef sg_hash128 h
        rate_ready(self)
        for i in range(self._n):
            hash_key(key, self._seeds[i], &h)
            rc = sg_rate_reset(&self._tbl.t, h, &self._rates[i], now)
            if rc != SG_OK:
                raise_table_rc(rc, f"rate limiter {self._cname!r}")

    def refund_at(self, key, cost, uint64_t now):
        cdef int i, rc
        cdef sg_hash128 h
        cdef uint64_t c
        rate_ready(self)
        c = self._cost(cost)
        for i in range(self._n):
            hash_key(key, self._seeds[i], &h)
            rc = sg_rate_refund(&self._tbl.t, h, &self._rates[i], c, now)
            if rc != SG_OK:
                raise_table_rc(rc, f"rate limiter {self._cname!r}")

    def now_ns(self):
        rate_ready(self)
        return sg_store_now(&self._tbl.t)

    def refund_time(self):
        """Store time (ns) a little before any decision made after this call: refunding
        at it gives back to the window those decisions charged, never a later one."""
        rate_ready(self)
        return refund_clock(&self._tbl.t)

    def counts(self):
        """(allowed, denied) summed over every process's stripe."""
        rate_ready(self)
        return limiter_counts(self._tbl, self._cname)

    def check_cost(self, cost):
        """Validate a cost (ConfigError naming cost) and return it."""
        rate_ready(self)
        return self._cost(cost)

    @property
    def max_cost(self):
        return self._max_cost


cdef inline int rate_decide(LimiterEngine self, object key, uint64_t cost, uint64_t now, int consume,
                        sg_decision *d) except -1:
    cdef int rc, i
    cdef sg_hash128 h
    # now == 0 (store time is never 0): the core reads the clock itself, after
    # loading the key's state, so that a stalled caller cannot decide on old time
    if self._n == 1:
        fast_hash(key, self._seeds[0], &h)
        rc = sg_rate_apply(&self._tbl.t, h, self._rates, cost, now, consume, d)
    else:
        for i in range(self._n):
            hash_key(key, self._seeds[i], &self._hbuf[i])
        rc = sg_rates_apply(&self._tbl.t, self._hbuf, self._rates, self._n, cost, now, consume, d)
    if rc != SG_OK:
        raise_table_rc(rc, f"rate limiter {self._cname!r}")
    if consume:
        if self._stat_gen != _fork_gen:
            self._restripe()
        sg_add(self._stat_w + (0 if d.allowed else 1), 1)
        if _ev_reclaimed and sg_load(&sg_reclaimed_here) != _reclaimed_told:
            tell_reclaimed(self._tbl)
    return 0


cdef inline int rate_ready(LimiterEngine self) except -1:
    if self._n == 0:
        raise _ConfigError("this RateLimiter was not initialised")
    if self._tbl.t.hdr == NULL:
        self._tbl.check()
    if sg_load(self._ver) != self._seen:  # the one extra load: a new configuration?
        rate_follow(self)
    return 0


cdef int rate_follow(LimiterEngine self) except -1:
    """Out of line, so that rate_ready stays small enough to inline."""
    self._on_moved()
    return 0


cdef inline int rate_call(LimiterEngine e, object key, object cost, int consume, sg_decision *d) except -1:
    """allow / check / peek of engine e, for the engine's methods and the front's alike."""
    cdef uint64_t c = 1
    rate_ready(e)
    if cost is not 1:
        c = e._cost(cost)
    rate_decide(e, key, c, 0, consume, d)
    return 0


cdef class LimiterFront:
    """The compiled base of RateLimiter: it holds the engine that decides.  allow, check
    and peek go straight to the shared-memory engine's inline C path when that is the
    engine (one typed pointer, no extra Python call), and to the engine's own methods
    for any other engine (the test models, later Redis).  While nobody listens for
    rate.denied / rate.allowed, an event costs the one branch on _ev_on."""
    cdef LimiterEngine _shm
    cdef object _eng
    cdef bint _ev_on
    cdef bint _ev_denied
    cdef bint _ev_allowed

    property _engine:
        def __get__(self):
            return self._eng

        def __set__(self, engine):
            self._eng = engine
            self._shm = engine if type(engine) is LimiterEngine else None

    def _set_events(self, bint denied, bint allowed):
        self._ev_denied = denied
        self._ev_allowed = allowed
        self._ev_on = denied or allowed

    cdef int _decided(self, object key, object cost, Decision d) except -1:
        if d.allowed:
            if self._ev_allowed:
                self._event("rate.allowed", key, cost, d)
        elif self._ev_denied:
            self._event("rate.denied", key, cost, d)
        return 0

    cdef Decision _other(self, object key, object cost):
        cdef Decision d = self._eng.check(key, cost)
        self._decided(key, cost, d)
        return d

    def allow(self, key, cost=1):
        """Consume cost for key if the limit allows it; True if admitted."""
        cdef sg_decision d
        cdef LimiterEngine e = self._shm
        if e is None:
            if self._ev_on:
                return self._other(key, cost).allowed
            return self._eng.allow(key, cost)
        rate_call(e, key, cost, 1, &d)
        if self._ev_on:
            self._decided(key, cost, make_decision(&d))
        return True if d.allowed else False

    def check(self, key, cost=1):
        """Like allow, but returns the full Decision."""
        cdef sg_decision d
        cdef LimiterEngine e = self._shm
        if e is None:
            if self._ev_on:
                return self._other(key, cost)
            return self._eng.check(key, cost)
        rate_call(e, key, cost, 1, &d)
        r = make_decision(&d)
        if self._ev_on:
            self._decided(key, cost, r)
        return r

    def peek(self, key, cost=1):
        """The Decision a call of this cost would get now, consuming nothing."""
        cdef sg_decision d
        cdef LimiterEngine e = self._shm
        if e is None:
            return self._eng.peek(key, cost)
        rate_call(e, key, cost, 0, &d)
        return make_decision(&d)

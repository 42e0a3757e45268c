# Shared circuit breaker: bindings over csrc/sg_breaker.c.
#
# BreakerEngine is the shared-memory engine: the C breaker (pointers into the store's
# permanent slots and the configuration), admission and recording.  BreakerFront is the
# compiled base of the policy class sluicegate.breaker.CircuitBreaker: it holds an
# engine and keeps the hot paths (__enter__/__exit__, call()) one typed call away from
# the shm engine, and the raw enter/exit used by begin() and the model tests.
import contextvars as _contextvars
import time as _time
from types import MethodType as _MethodType

from sluicegate.errors import CircuitOpen as _CircuitOpenCls, InjectedFault as _InjectedFaultCls, ConfigError as _ConfigErrorCls

BREAKER_STATES = ("closed", "open", "half_open", "degraded", "forced_open", "disabled")
BR_SUCCESS = SG_BR_SUCCESS
BR_FAILURE = SG_BR_FAILURE
BR_IGNORE = SG_BR_IGNORE
BR_TICKET_PROBE = SG_BR_T_PROBE
BR_TICKET_INJECT_FAIL = SG_BR_T_INJECT_FAIL
BR_TICKET_INJECT_LATENCY = SG_BR_T_INJECT_LATENCY
BR_REJECT_REASONS = ("", "open", "forced_open", "half_open", "degraded", "adaptive", "injected")
BREAKER_HIST = "calls"  # the call-duration histogram's part (sg_hist.h), when the option is on

cdef object _CircuitOpen = _CircuitOpenCls
cdef object _exc_new = BaseException.__new__
cdef object _InjectedFault = _InjectedFaultCls
cdef uint64_t _SEEN_MASK = (1ULL << 27) - 1  # state + generation
cdef uint64_t _UNWATCHED_BR = 0  # what an unwatched breaker's version pointer reads


def _log_predicate_error(name):
    import logging
    logging.getLogger("sluicegate.breaker").exception(
        "circuit breaker %r: is_failure predicate failed; counting the call as a failure", name)


def breaker_mix(uint64_t x):
    """The splitmix64 finaliser the C core uses for jitter (for the reference model)."""
    return sg_br_mix(x)


cdef inline str _state_name(uint64_t s):
    cdef unsigned st = <unsigned>(s & 7)
    if st > SG_BR_DISABLED:
        st = SG_BR_CLOSED
    return BREAKER_STATES[st]


# Probe holders: a probe permit lives in the state word's issued count, which a holder
# SIGKILLed before its exit would keep until probe_timeout (30 s by default) restarted
# the round.  So a process that takes a probe records [owner, ticket] in one of
# _NPROBE_REC holder records (two permanent slots), clears it before its exit, and a
# caller rejected because every probe is out gives back the probes of dead holders (an
# IGNORE exit of their ticket), as ConcurrencyLimiter frees a dead holder's permit.
# Probes beyond the records fall back to probe_timeout.
cdef enum:
    _NPROBE_REC = 4
cdef uint64_t _PROBE_RECLAIM_EVERY_NS = 100000000  # one look per process per 100 ms
_pi = None  # sluicegate._procident, imported on the first probe


cdef inline uint64_t _me() except 0:
    global _pi
    if _pi is None:
        from sluicegate import _procident
        _pi = _procident
    return _pi._owner or _pi.current_owner()


cdef class BreakerEngine:
    """The shared-memory engine of a CircuitBreaker: the C breaker (pointers into the
    store's permanent slots, and the configuration), this process's jitter generator and
    the probe holder records.  It admits and records; the front (CircuitBreaker, over
    BreakerFront) classifies outcomes, keeps `with` tickets, and raises."""
    cdef sg_breaker b
    cdef uint64_t *prec0  # probe holder records 0-1 and 2-3, NULL until first needed
    cdef uint64_t *prec1
    cdef uint64_t next_reclaim
    cdef Table tbl
    cdef uint64_t rng
    cdef readonly str name
    cdef bint timed
    cdef bint configured
    cdef bint hist_on  # the call-duration histogram (see hist)
    cdef int clock  # how a call's start is read: 0 not at all, 1 the store clock, 2 the fast clock
    # the directory entry's version word, loaded once per call (see directory.py)
    cdef uint64_t *_ver
    cdef uint64_t _seen
    cdef object _dir_entry
    cdef object _on_moved
    # the call-duration histogram (option histogram=True): durations of calls that ran
    # and were counted (success or failure), in every process; last, off the hot lines
    cdef sg_hist hist

    def __cinit__(self, Table tbl, str name):
        self.tbl = tbl
        self.name = name
        self._ver = &_UNWATCHED_BR

    def watch(self, DirEntry entry, uint64_t seen, on_moved):
        """Follow entry: a call that finds its version moved past seen calls on_moved()
        first (the front reads the directory and reconfigures this engine)."""
        self._dir_entry = entry
        self._on_moved = on_moved
        self._ver = entry.ver
        self._seen = seen

    def sync(self):
        """Follow the directory now if its version moved (configuration reads use it)."""
        if sg_load(self._ver) != self._seen:
            self._on_moved()

    def configure(self, dict cfg, uint64_t rng_seed):
        """Resolve the shared words and load the configuration (all durations in ns).
        Returns the state word."""
        cdef sg_br_config c
        cdef Py_ssize_t i
        cdef Table tbl = self.tbl
        cdef str name = self.name
        cdef list levels = list(cfg["levels_p32"])
        c.nbuckets = cfg["nbuckets"]
        c.bucket_ns = cfg["bucket_ns"]
        c.failure_threshold = cfg["failure_threshold"]
        c.minimum_calls = cfg["minimum_calls"]
        c.failure_rate_ppm = cfg["failure_rate_ppm"]
        c.slow_rate_ppm = cfg["slow_rate_ppm"]
        c.slow_ns = cfg["slow_ns"]
        c.reset_ns = cfg["reset_ns"]
        c.max_reset_ns = cfg["max_reset_ns"]
        c.backoff_milli = cfg["backoff_milli"]
        c.jitter_ppm = cfg["jitter_ppm"]
        c.half_open_calls = cfg["half_open_calls"]
        c.probe_timeout_ns = cfg["probe_timeout_ns"]
        if len(levels) > SG_BR_MAX_LEVELS:
            raise _ConfigErrorCls(f"degraded accepts at most {SG_BR_MAX_LEVELS} levels, got {len(levels)}")
        c.nlevels = len(levels)
        for i in range(SG_BR_MAX_LEVELS):
            c.level_p32[i] = levels[i] if i < len(levels) else 0
        c.level_ns = cfg["level_ns"]
        cdef list sev = list(cfg.get("severity_p32", ()))
        c.degrade_ppm = cfg.get("degrade_ppm", 0)
        c.recover_ppm = cfg.get("recover_ppm", 0)
        c.sev_n = len(sev)
        for i in range(SG_BR_MAX_LEVELS):
            c.sev_p32[i] = sev[i] if i < len(sev) else 0
        c.adaptive = 1 if cfg["adaptive"] else 0
        c.adaptive_k_milli = cfg["adaptive_k_milli"]
        c.adaptive_max_p32 = cfg["adaptive_max_p32"]
        c.seed = cfg["seed"]
        if sg_br_validate(&c) != SG_OK:
            raise _ConfigErrorCls(f"circuit breaker {name!r}: invalid configuration {cfg!r}")
        tbl.check()
        cdef uint64_t *st = tbl.permanent_words(SG_NS_BREAKER, name, "state")
        cdef uint64_t *stats = tbl.permanent_words(SG_NS_BREAKER, name, "stats")
        cdef uint64_t *fault = tbl.permanent_words(SG_NS_BREAKER, name, "fault")
        # The rolling window's buckets are named for its geometry: a bucket's epoch counts
        # in units of bucket_ns, so a new window starts its counts afresh, while the state
        # word, the totals and the fault settings carry over any reconfiguration.
        cdef uint64_t *bk[SG_BR_MAX_BUCKETS]
        cdef uint64_t *epw[SG_BR_MAX_BUCKETS]
        cdef uint64_t *ep = NULL
        geo = f"{c.nbuckets}x{c.bucket_ns}"
        for i in range(<Py_ssize_t>c.nbuckets):
            bk[i] = tbl.permanent_words(SG_NS_BREAKER, name, f"bucket{geo}:{i}")
            if i % 4 == 0:  # each bucket's full epoch: four to a slot
                ep = tbl.permanent_words(SG_NS_BREAKER, name, f"epochs{geo}:{i // 4}")
            epw[i] = &ep[i % 4]
        self.b.t = &tbl.t
        self.b.st = st
        self.b.stats = stats
        self.b.fault = fault
        for i in range(<Py_ssize_t>c.nbuckets):
            self.b.bk[i] = bk[i]
            self.b.ep[i] = epw[i]
        cdef sg_hist hist
        cdef bint hist_on = bool(cfg.get("histogram"))
        if hist_on:
            hist_open(tbl, SG_NS_BREAKER, name, BREAKER_HIST, True, &hist)
        self.b.c = c
        self.timed = c.slow_ns != 0
        if hist_on:
            self.hist = hist
        self.hist_on = hist_on
        # slow calls are judged on the store clock; the histogram alone takes the fast one
        self.clock = 1 if self.timed else (2 if hist_on else 0)
        self.configured = True
        if rng_seed or self.rng == 0:  # 0: a reconfiguration keeps the generator where it is
            self.rng = rng_seed if rng_seed else 0x9E3779B97F4A7C15
        return sg_load(self.b.st)

    # ---- what the front calls (typed, inline) ---------------------------------------
    cdef inline int _live(self) except -1:
        if not self.configured:
            raise _ConfigErrorCls("circuit breaker is not configured")
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        if sg_load(self._ver) != self._seen:  # the one extra load: a new configuration?
            self._follow_moved()
        return 0

    cdef int _follow_moved(self) except -1:
        """Out of line, so that _live stays small enough to inline."""
        self._on_moved()
        return 0

    cdef inline uint64_t _enter(self, uint64_t now, sg_br_result *res) except? 0:
        """A ticket, or 0 with res filled in for a rejection (res.s: the state word)."""
        cdef uint64_t ticket
        self._live()
        ticket = sg_br_enter(&self.b, now, &self.rng, res)
        if (ticket & SG_BR_T_PROBE) or (ticket == 0 and res.reason == SG_BR_REJ_HALF_OPEN):
            ticket = self._probe_path(ticket, now, res)
        return ticket

    cdef uint64_t _probe_path(self, uint64_t ticket, uint64_t now, sg_br_result *res) except? 0:
        """Out of line (half-open only), so that _enter stays small enough to inline:
        record a probe's holder, or give back dead holders' probes and try again."""
        if ticket & SG_BR_T_PROBE:
            self._hold_probe(ticket)
        elif self._reclaim_probes():
            ticket = sg_br_enter(&self.b, now, &self.rng, res)
            if ticket & SG_BR_T_PROBE:
                self._hold_probe(ticket)
        return ticket

    cdef inline bint _exit(self, uint64_t ticket, int outcome, uint64_t start, uint64_t now,
                           uint64_t *s) except -1:
        """Record a ticket's outcome; False (nothing recorded) when the store was closed
        while the call ran.  *s: the state word after it."""
        cdef uint64_t dur = 0
        cdef bint real = now == 0
        if self.tbl.t.hdr == NULL:
            return False
        if ticket & SG_BR_T_PROBE:
            self._drop_probe(ticket)
        if self.hist_on:
            return self._exit_hist(ticket, outcome, start, now, s)
        if self.timed and start:
            if real:
                now = sg_store_now(&self.tbl.t)
            dur = now - start if now > start else 0
        if real:  # now is 0 or our store-clock reading, which sg_br_exit would take for a caller's clock
            s[0] = sg_br_exit_real(&self.b, ticket, outcome, dur, now)
        else:
            s[0] = sg_br_exit(&self.b, ticket, outcome, dur, now)
        return True

    cdef bint _exit_hist(self, uint64_t ticket, int outcome, uint64_t start, uint64_t now,
                         uint64_t *s) except -1:
        """_exit with the call-duration histogram on: out of line, so that _exit stays
        small enough to inline (a breaker without the histogram pays one test)."""
        cdef uint64_t dur = 0
        cdef bint real = now == 0
        if start:
            if self.timed:
                if real:
                    now = sg_store_now(&self.tbl.t)
                dur = now - start if now > start else 0
            else:  # the histogram alone: the cheaper clock (same timebase; see _start)
                dur = sg_store_fast_now(&self.tbl.t)
                dur = dur - start if dur > start else 0
        if real:
            s[0] = sg_br_exit_real(&self.b, ticket, outcome, dur, now)
        else:
            s[0] = sg_br_exit(&self.b, ticket, outcome, dur, now)
        if start and outcome != SG_BR_IGNORE and (ticket & SG_BR_T_ADMITTED):
            sg_hist_record(&self.hist, dur)
        return True

    cdef inline uint64_t _start(self):
        if self.clock == 0:
            return 0
        if self.clock == 1:
            return sg_store_now(&self.tbl.t)
        return sg_store_fast_now(&self.tbl.t)

    # ---- probe holders (see _NPROBE_REC) -------------------------------------------
    cdef bint _probe_words(self) except -1:
        """Map the holder records; False if the store has no slot left for them."""
        if self.prec1 == NULL:
            try:
                self.prec0 = self.tbl.permanent_words(SG_NS_BREAKER, self.name, "probes0")
                self.prec1 = self.tbl.permanent_words(SG_NS_BREAKER, self.name, "probes1")
            except StoreFull:
                self.prec0 = NULL
                return False
        return True

    cdef inline uint64_t *_rec(self, int i):
        return (self.prec0 if i < 2 else self.prec1) + (i % 2) * 2

    cdef int _hold_probe(self, uint64_t ticket) except -1:
        cdef uint64_t me = _me(), zero
        cdef uint64_t *r
        cdef int i
        if not self._probe_words():
            return 0
        for i in range(_NPROBE_REC):
            r = self._rec(i)
            zero = 0
            # the ticket word of a free record is 0 (cleared before its owner), so a
            # holder killed between these two writes leaves nothing to give back
            if sg_cas(r, &zero, me):
                sg_store(r + 1, ticket)
                return 0
        return 0  # every record in use: this probe relies on probe_timeout

    cdef int _drop_probe(self, uint64_t ticket) except -1:
        """Clear our record of ticket before its exit: a holder killed after this and
        before the exit leaves the probe to probe_timeout, never given back twice."""
        cdef uint64_t me = _me(), exp
        cdef uint64_t *r
        cdef int i
        if self.prec1 == NULL:
            return 0
        for i in range(_NPROBE_REC):
            r = self._rec(i)
            if sg_load(r) == me and sg_load(r + 1) == ticket:
                sg_store(r + 1, 0)
                exp = me
                sg_cas(r, &exp, 0)
                return 0
        return 0

    cdef int _reclaim_probes(self) except -1:
        """Give back the probes of dead holders; the number given back."""
        cdef uint64_t now = sg_store_now(&self.tbl.t), me, owner, t
        cdef uint64_t *r
        cdef int i, n = 0
        if now < self.next_reclaim:
            return 0
        self.next_reclaim = now + _PROBE_RECLAIM_EVERY_NS
        if not self._probe_words():
            return 0
        me = _me()
        for i in range(_NPROBE_REC):
            r = self._rec(i)
            owner = sg_load(r)
            if owner == 0 or owner == me or _pi.owner_alive(owner):
                continue
            t = sg_load(r + 1)
            # the ticket word is claimed first: of two reclaimers only one gives it back
            if t != 0 and sg_cas(r + 1, &t, 0):
                sg_br_exit(&self.b, t, SG_BR_IGNORE, 0, 0)
                n += 1
            sg_cas(r, &owner, 0)
        return n

    # ---- the same operations for any front (Python-level; the engine protocol) -------
    def enter(self, uint64_t now=0):
        """(ticket, reason, retry_ns, state word): ticket 0 is a rejection for reason."""
        cdef sg_br_result res
        cdef uint64_t ticket = self._enter(now, &res)
        return ticket, (res.reason if ticket == 0 else 0), res.retry_ns, res.s

    def exit(self, uint64_t ticket, int outcome, uint64_t duration_ns=0, uint64_t now=0):
        """Record ticket's outcome (a call of duration_ns, at store time now; 0 = the
        store clock); the state word after it, or None if the store was closed."""
        if outcome < 0 or outcome > 2:
            raise _ConfigErrorCls(f"outcome must be 0, 1 or 2, got {outcome}")
        if self.tbl.t.hdr == NULL:
            return None
        if ticket & SG_BR_T_PROBE:
            self._drop_probe(ticket)
        s = sg_br_exit(&self.b, ticket, outcome, duration_ns, now)
        if self.hist_on and duration_ns and outcome != SG_BR_IGNORE and (ticket & SG_BR_T_ADMITTED):
            sg_hist_record(&self.hist, duration_ns)
        return s

    def now_ns(self):
        """Store time in ns."""
        return sg_store_now(&self.tbl.t)

    def start(self):
        """The store time a timed call starts at (0 when slow calls are not measured)."""
        return self._start()

    def give_back(self, uint64_t ticket):
        """An admitted ticket that will never report (freed unreported): IGNORE it."""
        if self.configured and self.tbl.t.hdr != NULL:
            sg_br_exit(&self.b, ticket, SG_BR_IGNORE, 0, 0)

    def poll(self, uint64_t now=0):
        """The state word after applying due time transitions at now (0 = the store clock)."""
        self._live()
        return sg_br_poll(&self.b, now)

    def set_state(self, unsigned target, bint clear=False, uint64_t now=0):
        cdef sg_hist h
        self._live()
        s = sg_br_set_state(&self.b, target, clear, now)
        if clear:  # a reset zeroes the totals: the histogram too, if it has any slot
            hist_open(self.tbl, SG_NS_BREAKER, self.name, BREAKER_HIST, False, &h)
            sg_hist_clear(&h)
        return s

    def window(self, uint64_t now=0):
        """(calls, failures, slow, throttled) in the rolling window of the current generation."""
        cdef sg_br_window w
        cdef uint64_t s
        self._live()
        s = sg_br_poll(&self.b, now)
        sg_br_window_sums(&self.b, s, now, &w)
        return (w.calls, w.failures, w.slow, w.rejected)

    def totals(self):
        """(calls, failures, slow, rejections, transitions) since creation or reset()."""
        self._live()
        return (sg_load(&self.b.stats[0]), sg_load(&self.b.stats[1]), sg_load(&self.b.stats[2]),
                sg_load(&self.b.stats[3]), sg_load(&self.b.st[2]))

    def open_ns(self, unsigned consec, uint64_t gen):
        """The open duration after `consec` consecutive opens in generation gen."""
        return sg_br_open_ns(&self.b.c, consec, gen)

    def retry_after_ns(self, uint64_t now=0):
        """Time until an open breaker turns half-open (0 if not open)."""
        cdef uint64_t s, until
        self._live()
        if now == 0:
            now = sg_store_now(&self.tbl.t)
        s = sg_br_poll(&self.b, now)
        if (s & 7) != SG_BR_OPEN:
            return 0
        until = sg_br_phase_ns(&self.b, s, now) + sg_br_open_ns(&self.b.c, (s >> 43) & 0xff, (s >> 3) & 0xffffff)
        return until - now if until > now else 0

    def degradation(self, uint64_t now=0):
        """(cause, level, admitted) of a degraded breaker: cause "severity" (entered from
        closed by its failure rate) or "recovery" (the ramp after half-open); level 1
        light, 2 medium, 3 heavy (a ramp's last step is light); admitted the fraction.
        None when the breaker is not degraded."""
        cdef uint64_t s, t0, step
        cdef unsigned lv, n
        self._live()
        if now == 0:
            now = sg_store_now(&self.tbl.t)
        s = sg_br_poll(&self.b, now)
        if (s & 7) != SG_BR_DEGRADED:
            return None
        lv = (s >> 35) & 0xff
        if lv:
            if lv > self.b.c.sev_n:
                lv = self.b.c.sev_n
            return ("severity", lv, self.b.c.sev_p32[lv - 1] / 4294967296.0)
        n = self.b.c.nlevels
        if n == 0:
            return ("recovery", 1, 1.0)
        t0 = sg_br_phase_ns(&self.b, s, now)
        step = (now - t0) // self.b.c.level_ns if now > t0 else 0
        if step >= n:
            step = n - 1
        return ("recovery", n - <unsigned>step, self.b.c.level_p32[step] / 4294967296.0)

    def set_faults(self, uint64_t reject_p32, uint64_t fail_p32, uint64_t latency_p32, uint64_t latency_ns):
        self._live()
        sg_store(&self.b.fault[3], latency_ns)
        sg_store(&self.b.fault[0], reject_p32)
        sg_store(&self.b.fault[1], fail_p32)
        sg_store(&self.b.fault[2], latency_p32)

    def get_faults(self):
        """(reject_p32, fail_p32, latency_p32, latency_ns) as stored."""
        self._live()
        return (sg_load(&self.b.fault[0]), sg_load(&self.b.fault[1]), sg_load(&self.b.fault[2]),
                sg_load(&self.b.fault[3]))

    @property
    def rng_state(self):
        return self.rng

    @rng_state.setter
    def rng_state(self, uint64_t v):
        self.rng = v if v else 0x9E3779B97F4A7C15


cdef class BreakerFront:
    """The compiled base of CircuitBreaker: it holds the engine that admits and records
    (the shared-memory BreakerEngine through one typed pointer, or any other engine
    through its Python methods), and does what a front does on the hot path: classify
    outcomes, keep `with` tickets, raise CircuitOpen, apply injected faults, and tell
    listeners about state changes."""
    cdef BreakerEngine _shm
    cdef object _eng
    cdef uint64_t seen
    cdef str _bname
    # the `with br:` ticket: one fast slot, and a per-context stack for overlap
    cdef bint slot_busy
    cdef uint64_t slot_ticket
    cdef uint64_t slot_start
    cdef Py_ssize_t cv_users
    cdef object cv
    # outcome classification
    cdef object record_types
    cdef object ignore_types
    cdef object failure_pred
    cdef object result_pred
    cdef tuple messages
    cdef bint has_listeners
    cdef int _last_reason
    cdef uint64_t _last_retry_ns
    # telemetry: breaker.call / breaker.rejected are emitted only while someone listens
    cdef bint _ev_call
    cdef bint _ev_rejected

    property _engine:
        def __get__(self):
            return self._eng

        def __set__(self, engine):
            self._eng = engine
            self._shm = engine if type(engine) is BreakerEngine else None

    def _front_setup(self, str name, uint64_t state_word):
        """Name this front (messages, the `with` stack) and take the engine's state."""
        self._bname = name
        if self.cv is None:  # kept across reconfigurations: `with` tickets may be stacked in it
            self.cv = _contextvars.ContextVar(f"sluicegate.breaker.{name}", default=None)
        self.messages = tuple(
            f"circuit breaker {name!r} rejected the call ({r})" if r else "" for r in BR_REJECT_REASONS)
        self.seen = state_word & _SEEN_MASK

    def _set_outcomes(self, record, ignore, is_failure, result_is_failure):
        self.record_types = record
        self.ignore_types = ignore if ignore else None
        self.failure_pred = is_failure
        self.result_pred = result_is_failure

    def _set_has_listeners(self, bint v):
        self.has_listeners = v

    def _set_events(self, bint call, bint rejected):
        self._ev_call = call
        self._ev_rejected = rejected

    # ---- internals -----------------------------------------------------------
    cdef int _notice(self, uint64_t s) except -1:
        cdef uint64_t old = self.seen
        self.seen = s & _SEEN_MASK
        if (old & 7) != (s & 7) and self.has_listeners:
            self._state_changed(_state_name(old), _state_name(s))
        return 0

    cdef inline int _saw(self, uint64_t s) except -1:
        if (s & _SEEN_MASK) != self.seen:
            self._notice(s)
        return 0

    cdef object _rejection(self, sg_br_result *res):
        # Same object CircuitOpen(msg, retry_after=..., name=...) builds, without
        # running its Python-level __init__ (the rejection path is a hot path too).
        if self._ev_rejected:
            self._event_rejected(BR_REJECT_REASONS[res.reason], res.retry_ns / 1e9)
        exc = _exc_new(_CircuitOpen, self.messages[res.reason])
        exc.retry_after = res.retry_ns / 1e9
        exc.name = self._bname
        return exc

    cdef uint64_t _acquire(self, uint64_t now, bint sleep) except 0:
        """Admit or raise CircuitOpen; applies injected latency (if sleep) and failure."""
        cdef sg_br_result res
        cdef uint64_t ticket = self._try(now, &res)
        if ticket == 0:
            raise self._rejection(&res)
        return self._effects(ticket, now, sleep)

    cdef inline uint64_t _try(self, uint64_t now, sg_br_result *res) except? 0:
        """Ticket, or 0 with res filled in for a rejection (nothing raised)."""
        cdef uint64_t ticket
        cdef BreakerEngine e = self._shm
        if e is not None:
            ticket = e._enter(now, res)
        else:
            ticket = self._enter_other(now, res)
        self._saw(res.s)
        return ticket

    cdef uint64_t _enter_other(self, uint64_t now, sg_br_result *res) except? 0:
        ticket, reason, retry_ns, s = self._eng.enter(now)
        res.reason = reason
        res.retry_ns = retry_ns
        res.s = s
        return ticket

    cdef uint64_t _effects(self, uint64_t ticket, uint64_t now, bint sleep) except 0:
        if ticket & (SG_BR_T_INJECT_FAIL | SG_BR_T_INJECT_LATENCY):
            if sleep and (ticket & SG_BR_T_INJECT_LATENCY):
                try:
                    _time.sleep(self._eng.get_faults()[3] / 1e9)
                except BaseException:  # interrupted before the call ran: give the permit back
                    self._finish(ticket, SG_BR_IGNORE, 0, now)
                    raise
            if ticket & SG_BR_T_INJECT_FAIL:
                self._finish(ticket, SG_BR_FAILURE, 0, now)
                raise _InjectedFault(f"circuit breaker {self._bname!r}: injected failure")
        return ticket

    cdef int _finish(self, uint64_t ticket, int outcome, uint64_t start, uint64_t now) except -1:
        cdef uint64_t s
        cdef BreakerEngine e = self._shm
        if e is not None:
            if e._exit(ticket, outcome, start, now, &s):
                if self._ev_call and start:  # the call first, then what it changed
                    self._call_event(outcome, start, now)
                self._saw(s)
            return 0
        dur = 0
        if start:
            dur = max(0, (now or self._eng.now_ns()) - start)
        r = self._eng.exit(ticket, outcome, dur, now)
        if r is not None:
            if self._ev_call and start:
                self._call_event(outcome, start, now)
            self._saw(r)
        return 0

    cdef int _call_event(self, int outcome, uint64_t start, uint64_t now) except -1:
        if now == 0:
            now = self._eng.now_ns()
        self._event_call(outcome, now - start if now > start else 0)
        return 0

    cdef inline uint64_t _start(self) except? 0:
        cdef BreakerEngine e = self._shm
        if e is not None:
            if self._ev_call:  # a call event carries the call's duration
                return sg_store_now(&e.tbl.t)
            return e._start()
        if self._ev_call:
            return self._eng.now_ns()
        return self._eng.start()

    cdef int _classify(self, object exc_type, object exc) except -1:
        if exc_type is None:
            return SG_BR_SUCCESS
        if self.ignore_types is not None and issubclass(exc_type, self.ignore_types):
            return SG_BR_IGNORE
        if issubclass(exc_type, _CircuitOpen) and getattr(exc, "name", None) == self._bname:
            return SG_BR_IGNORE  # this breaker's own rejection (a nested call): never a failure
        if not issubclass(exc_type, self.record_types):
            return SG_BR_SUCCESS if issubclass(exc_type, Exception) else SG_BR_IGNORE
        if self.failure_pred is not None:
            try:
                if not self.failure_pred(exc):
                    return SG_BR_SUCCESS
            except Exception:  # a broken predicate must not lose the call's permit
                _log_predicate_error(self._bname)
        return SG_BR_FAILURE

    # ---- context manager -----------------------------------------------------
    def __enter__(self):
        cdef sg_br_result res
        cdef uint64_t ticket = self._try(0, &res)
        cdef uint64_t start
        if ticket == 0:  # raised here, not in a helper: one traceback entry, not two
            raise self._rejection(&res)
        ticket = self._effects(ticket, 0, True)
        start = self._start()
        if not self.slot_busy and self.cv_users == 0:
            self.slot_busy = True
            self.slot_ticket = ticket
            self.slot_start = start
            return self
        self._push(ticket, start)
        return self

    cdef int _push(self, uint64_t ticket, uint64_t start) except -1:
        """Keep a `with` ticket for __exit__: in the one fast slot if it is free and this
        context has nothing stacked, else on this context's (thread's / task's) stack."""
        stack = self.cv.get()
        if stack is None and not self.slot_busy:
            self.slot_busy = True
            self.slot_ticket = ticket
            self.slot_start = start
            return 0
        self.cv.set((ticket, start, stack))
        self.cv_users += 1
        return 0

    def _push_ticket(self, uint64_t ticket, uint64_t start):
        self._push(ticket, start)

    def __exit__(self, exc_type, exc, tb):
        cdef uint64_t ticket, start
        if self.cv_users == 0:
            if not self.slot_busy:
                return False
            ticket = self.slot_ticket
            start = self.slot_start
            self.slot_busy = False
        else:
            stack = self.cv.get()
            if stack is None:
                if not self.slot_busy:
                    return False
                ticket = self.slot_ticket
                start = self.slot_start
                self.slot_busy = False
            else:
                ticket = stack[0]
                start = stack[1]
                self.cv.set(stack[2])
                self.cv_users -= 1
        self._finish(ticket, self._classify(exc_type, exc), start, 0)
        return False

    # ---- call through ----------------------------------------------------------
    def call(self, fn, *args, **kwargs):
        """Call fn(*args, **kwargs) through the breaker."""
        return self._call(fn, args, kwargs)

    cdef object _call(self, object fn, tuple args, dict kwargs):
        cdef uint64_t ticket = self._acquire(0, True)
        cdef uint64_t start = self._start()
        cdef int outcome
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            self._finish(ticket, self._classify(type(e), e), start, 0)
            raise
        outcome = SG_BR_SUCCESS
        if self.result_pred is not None:
            try:
                if self.result_pred(result):
                    outcome = SG_BR_FAILURE
            except BaseException:
                self._finish(ticket, SG_BR_IGNORE, start, 0)
                raise
        self._finish(ticket, outcome, start, 0)
        return result

    # ---- pieces for begin(), async wrappers and tests -------------------------
    def _admit(self, bint sleep=True):
        """(ticket, start) or raise CircuitOpen / InjectedFault."""
        cdef uint64_t ticket = self._acquire(0, sleep)
        return ticket, self._start()

    def _report(self, uint64_t ticket, int outcome, uint64_t start):
        self._finish(ticket, outcome, start, 0)

    def _classify_exc(self, exc):
        return self._classify(type(exc), exc)

    def _result_outcome(self, result):
        if self.result_pred is not None and self.result_pred(result):
            return SG_BR_FAILURE
        return SG_BR_SUCCESS

    def _injected_latency(self):
        return self._eng.get_faults()[3] / 1e9

    def try_enter(self, uint64_t now=0):
        """Raw admission at store time now (ns; 0 = the store clock): a ticket, or 0
        when rejected (see last_rejection). No exceptions, no injected effects."""
        ticket, reason, retry_ns, s = self._eng.enter(now)
        self._saw(s)
        self._last_reason = reason
        self._last_retry_ns = retry_ns
        return ticket

    @property
    def last_rejection(self):
        """(reason, retry_after_ns) of the last try_enter."""
        return BR_REJECT_REASONS[self._last_reason], self._last_retry_ns

    def report(self, uint64_t ticket, int outcome, uint64_t duration_ns=0, uint64_t now=0):
        """Raw outcome for a ticket from try_enter (outcome: 0 success, 1 failure, 2 ignore)."""
        s = self._eng.exit(ticket, outcome, duration_ns, now)
        if s is not None:
            self._saw(s)

    def state_at(self, uint64_t now=0):
        """The state name after applying due time transitions at now (0 = the store clock)."""
        s = self._eng.poll(now)
        self._saw(s)
        return _state_name(s)

    def state_word(self):
        """(state, generation, probes issued, probe successes, consecutive opens) as stored."""
        cdef uint64_t s = self._eng.poll(0)
        return (_state_name(s), (s >> 3) & 0xffffff, (s >> 27) & 0xff, (s >> 35) & 0xff, (s >> 43) & 0xff)

    def set_state(self, str state, bint clear=False, uint64_t now=0):
        """Admin transition to 'closed', 'forced_open' or 'disabled'."""
        cdef unsigned target
        if state == "closed":
            target = SG_BR_CLOSED
        elif state == "forced_open":
            target = SG_BR_FORCED_OPEN
        elif state == "disabled":
            target = SG_BR_DISABLED
        else:
            raise _ConfigErrorCls(f"state must be 'closed', 'forced_open' or 'disabled', got {state!r}")
        self._saw(self._eng.set_state(target, clear, now))

    def window(self, uint64_t now=0):
        """(calls, failures, slow, throttled) in the rolling window of the current generation."""
        return self._eng.window(now)

    def totals(self):
        """(calls, failures, slow, rejections, transitions) since creation or reset()."""
        return self._eng.totals()

    def open_ns(self, unsigned consec, uint64_t gen):
        """The open duration after `consec` consecutive opens in generation gen."""
        return self._eng.open_ns(consec, gen)

    def retry_after_ns(self, uint64_t now=0):
        """Time until an open breaker turns half-open (0 if not open)."""
        return self._eng.retry_after_ns(now)

    @property
    def rng_state(self):
        return self._eng.rng_state

    @rng_state.setter
    def rng_state(self, uint64_t v):
        self._eng.rng_state = v


cdef class BreakerCall:
    """A (sync) function decorated with a breaker: calling it calls through the breaker.
    Binds like a function when used as a method."""
    cdef BreakerFront br
    cdef readonly object __wrapped__
    cdef dict __dict__

    def __cinit__(self, BreakerFront br, fn):
        self.br = br
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        return self.br._call(self.__wrapped__, args, kwargs)

    def __get__(self, obj, objtype):
        if obj is None:
            return self
        return _MethodType(self, obj)

    def __reduce__(self):
        return self.__qualname__  # pickled by reference, like the function it replaces

    def __repr__(self):
        return f"<function {getattr(self, '__qualname__', '?')} through circuit breaker {self.br._bname!r}>"


cdef class BreakerToken:
    """A call admitted by CircuitBreaker.begin(): report it once with success(),
    failure() or ignore(). An unreported token gives its permit back when freed."""
    cdef BreakerFront br
    cdef uint64_t ticket
    cdef uint64_t start
    cdef readonly bint done

    def __cinit__(self, BreakerFront br, uint64_t ticket, uint64_t start):
        self.br = br
        self.ticket = ticket
        self.start = start
        self.done = False

    cdef bint _report(self, int outcome) except -1:
        if self.done:
            return False
        self.done = True
        self.br._finish(self.ticket, outcome, self.start, 0)
        return True

    def success(self):
        """The call succeeded. Returns False if the token was already reported."""
        return self._report(SG_BR_SUCCESS)

    def failure(self):
        """The call failed. Returns False if the token was already reported."""
        return self._report(SG_BR_FAILURE)

    def ignore(self):
        """Forget the call (neither success nor failure); a probe's permit is given back."""
        return self._report(SG_BR_IGNORE)

    @property
    def probe(self):
        """True if this call is a half-open probe."""
        return bool(self.ticket & SG_BR_T_PROBE)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.done:
            self._report(self.br._classify(exc_type, exc))
        return False

    def __dealloc__(self):
        if not self.done and self.br is not None and self.br._eng is not None:
            self.br._eng.give_back(self.ticket)

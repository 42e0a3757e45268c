# Host-wide latency histograms: bindings over csrc/sg_hist.c.

HIST_BOUNDS = tuple(sg_hist_bounds_ns[i] / 1e9 for i in range(SG_HIST_BOUNDS))  # seconds, +Inf apart
HIST_SLOTS = SG_HIST_SLOTS


cdef int hist_open(Table tbl, uint32_t kind, str name, str part, bint create, sg_hist *h) except -1:
    """Resolve histogram `part` of policy (kind, name): 1 if every slot is there, 0 if
    some are absent (only without create: they read as zeros, and no room is taken)."""
    cdef bytes p = part.encode("utf-8")
    cdef int rc
    tbl.check()
    rc = sg_hist_open(&tbl.t, namespace_seed(kind, name), p, len(p), create, h)
    if rc == SG_NOTFOUND:
        return 0
    if rc == SG_ERR_FULL:
        store_full(f"{name!r}", f"{name!r}: no room left for its {part!r} histogram in {tbl.label} "
                   f"({tbl.t.hdr.perm_capacity} slots for {tbl.t.ndir} policies); create the store "
                   f"with a larger policies=")
    if rc == SG_ERR_ARG:
        raise _ConfigError(f"histogram part {part!r} must be 1 to 64 bytes of UTF-8")
    if rc != SG_OK:
        raise_table_rc(rc, f"{name!r}")
    cdef int j
    for j in range(SG_HIST_SLOTS):
        if h.w[j] == NULL:
            return 0
    return 1


cdef tuple hist_reading(const sg_hist *h):
    """(cumulative counts, the last for +Inf; sum in seconds) of a resolved histogram."""
    cdef uint64_t counts[SG_HIST_BUCKETS]
    cdef uint64_t sum_ns, cum = 0
    cdef int k
    sg_hist_read(h, counts, &sum_ns)
    out = []
    for k in range(SG_HIST_BUCKETS):
        cum += counts[k]
        out.append(cum)
    return tuple(out), sum_ns / 1e9


cdef class Histogram:
    """A latency histogram of one policy, shared by every process attached to the store:
    fixed buckets (HIST_BOUNDS seconds and +Inf), each record one fetch-add on the
    bucket and one on the sum.  A writer's first record takes its HIST_SLOTS permanent
    slots; a reader (writable=False) never takes room and reads absent slots as zeros."""
    cdef Table tbl
    cdef sg_hist h
    cdef bint complete  # every slot resolved: nothing more to look up
    cdef bint no_room  # a record found the store full: this object records nothing more
    cdef readonly uint32_t kind
    cdef readonly str name
    cdef readonly str part
    cdef readonly bint writable

    def __cinit__(self, Table tbl, uint32_t kind, str name, str part, bint writable=True):
        self.tbl = tbl
        self.kind = kind
        self.name = name
        self.part = part
        self.writable = writable
        self.complete = hist_open(tbl, kind, name, part, False, &self.h) == 1

    cdef inline int _ready(self) except -1:
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        if not self.complete:
            self.complete = hist_open(self.tbl, self.kind, self.name, self.part, self.writable, &self.h) == 1
        return 0

    def record(self, uint64_t ns):
        """Add one value of ns nanoseconds.  False if it could not be kept: the store had
        no room for the histogram (store.full was emitted once; a measurement never
        breaks the call it measures)."""
        if not self.writable:
            raise _ConfigError(f"histogram {self.part!r} of {self.name!r} was opened for reading")
        if not self.complete:
            if self.no_room:
                return False
            try:
                self._ready()
            except StoreFull:
                self.no_room = True
                return False
        elif self.tbl.t.hdr == NULL:
            self.tbl.check()
        sg_hist_record(&self.h, ns)
        return True

    def record_seconds(self, double seconds):
        """Add one value given in seconds (negative or NaN counts as 0)."""
        return self.record(<uint64_t>(seconds * 1e9) if seconds > 0 else 0)

    def read(self):
        """(cumulative counts, one per bound of HIST_BOUNDS then +Inf; sum in seconds)."""
        self._ready()
        return hist_reading(&self.h)

    def clear(self):
        """Zero it (a policy's reset); recorders racing the clear may keep a value or two."""
        self._ready()
        sg_hist_clear(&self.h)

    def __repr__(self):
        return f"<Histogram {self.part!r} of {self.name!r}>"

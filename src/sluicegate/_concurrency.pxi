# Host-wide concurrency cap: holder records on permanent slots (csrc/sg_concurrency.c).
from libc.stdlib cimport malloc, free

cdef extern from "sg_concurrency.h" nogil:
    enum:
        SG_CAP_FULL
        SG_CAP_MISMATCH
        SG_CAP_MAX_LIMIT
        SG_CAP_PER_SLOT

    ctypedef struct sg_cap:
        uint64_t *ctl
        uint64_t **pairs
        uint32_t nrec
        int strict

    uint64_t *sg_cap_rec(const sg_cap *c, uint32_t i)
    int sg_cap_init(sg_cap *c, uint64_t fingerprint, uint32_t initial_limit, uint32_t min_limit)
    int sg_cap_try_acquire(sg_cap *c, uint64_t owner, uint32_t hint, uint64_t now, uint32_t *idx)
    int sg_cap_release(sg_cap *c, uint32_t idx, uint64_t owner)
    uint32_t sg_cap_in_use(const sg_cap *c)
    uint32_t sg_cap_limit(const sg_cap *c)
    int sg_cap_contended(const sg_cap *c, uint64_t now, uint64_t window_ns)
    uint32_t sg_cap_on_success(sg_cap *c, uint32_t inflight, uint32_t max_limit)
    uint32_t sg_cap_on_drop(sg_cap *c, uint32_t backoff_1024, uint32_t min_limit)
    void sg_cap_set_limit(sg_cap *c, uint32_t limit)

CAP_MAX_LIMIT = SG_CAP_MAX_LIMIT


cdef class CapCore:
    """The shared state of one ConcurrencyLimiter: control words and holder records.
    Process-local object; every method is one short lock-free operation."""
    cdef Table tbl
    cdef sg_cap c
    cdef readonly str name
    cdef readonly uint32_t nrec

    def __cinit__(self, Table tbl, str name, uint32_t nrec, uint64_t fingerprint, uint32_t initial_limit,
                  uint32_t min_limit, bint strict):
        cdef uint32_t i, npairs
        self.c.pairs = NULL
        if nrec < 1 or nrec > SG_CAP_MAX_LIMIT:
            raise ValueError(f"nrec must be in 1..{SG_CAP_MAX_LIMIT}")
        self.tbl = tbl
        self.name = name
        self.nrec = nrec
        npairs = (nrec + SG_CAP_PER_SLOT - 1) // SG_CAP_PER_SLOT
        self.c.pairs = <uint64_t **>malloc(npairs * sizeof(uint64_t *))
        if self.c.pairs == NULL:
            raise MemoryError()
        self.c.nrec = nrec
        self.c.strict = strict
        self.c.ctl = tbl.permanent_words(SG_NS_CONCURRENCY, name, "ctl")
        for i in range(npairs):
            self.c.pairs[i] = tbl.permanent_words(SG_NS_CONCURRENCY, name, f"h{i}")
        if sg_cap_init(&self.c, fingerprint, initial_limit, min_limit) == SG_CAP_MISMATCH:
            raise ValueError(sg_load(&self.c.ctl[1]))

    def __dealloc__(self):
        if self.c.pairs != NULL:
            free(self.c.pairs)
            self.c.pairs = NULL

    cdef inline int _open(self) except -1:
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return 0

    def fingerprint(self):
        self._open()
        return sg_load(&self.c.ctl[1])

    def try_acquire(self, uint64_t owner, uint32_t hint):
        """Index of the record taken for owner, or -1 when the cap is full."""
        cdef uint32_t idx
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        if sg_cap_try_acquire(&self.c, owner, hint, sg_store_now(&self.tbl.t), &idx) == SG_OK:
            return idx
        return -1

    def release(self, uint32_t idx, uint64_t owner):
        """Free record idx if it still holds owner (CAS): True if this call freed it."""
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return sg_cap_release(&self.c, idx, owner) == 1

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

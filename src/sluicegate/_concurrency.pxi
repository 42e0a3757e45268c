# Host-wide concurrency cap: holder records on permanent slots (csrc/sg_concurrency.c).
from libc.stdlib cimport malloc, free

CAP_MAX_LIMIT = SG_CAP_MAX_LIMIT
cdef uint64_t _UNWATCHED_CAP = 0


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

    def _watch(self, DirEntry entry, uint64_t seen):
        self._dir_entry = entry
        self._ver = entry.ver
        self._seen = seen

    def _moved(self):
        """True if the directory's version moved past the one this process follows."""
        return sg_load(self._ver) != self._seen

    def __dealloc__(self):
        if self.c.pairs != NULL:
            free(self.c.pairs)
            self.c.pairs = NULL

    cdef inline int _open(self) except -1:
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return 0

    def try_acquire(self, uint64_t owner, uint32_t hint):
        """Index of the record taken for owner, -1 when the cap is full, or -2 when the
        configuration changed (follow it, then try again)."""
        cdef uint32_t idx
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        if sg_load(self._ver) != self._seen:
            return -2
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

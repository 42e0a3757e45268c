# Store region, key hashing and shared counters.
from cpython.unicode cimport PyUnicode_CheckExact
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_AS_STRING, PyBytes_GET_SIZE

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object, Py_ssize_t *) except NULL

from sluicegate.errors import (
    ConfigError as _ConfigError, InvalidKey, KeyTypeError, StoreClosed, StoreError, StoreFull,
)

MAX_KEY_BYTES = 1024
cdef Py_ssize_t _MAX_KEY = 1024

LAYOUT_VERSION = SG_LAYOUT_VERSION
HEADER_SIZE = SG_HEADER_SIZE


cdef int key_bytes(object key, const char **p, Py_ssize_t *n) except -1:
    """UTF-8 bytes of a str key (cached by CPython) or the bytes themselves."""
    if PyUnicode_CheckExact(key) or isinstance(key, str):
        try:
            p[0] = PyUnicode_AsUTF8AndSize(key, n)
        except UnicodeEncodeError:
            raise InvalidKey(f"key {key!r} has no UTF-8 form (a lone surrogate, as from a bad decode); "
                             "pass valid text, or bytes") from None
    elif PyBytes_CheckExact(key) or isinstance(key, bytes):
        p[0] = PyBytes_AS_STRING(key)
        n[0] = PyBytes_GET_SIZE(key)
    else:
        raise KeyTypeError(f"key must be str or bytes, not {type(key).__name__}")
    if n[0] > _MAX_KEY:
        raise InvalidKey(f"key is {n[0]} bytes long; the limit is {_MAX_KEY} bytes")
    return 0


cdef int hash_key(object key, uint64_t seed, sg_hash128 *out) except -1:
    cdef const char *p
    cdef Py_ssize_t n
    key_bytes(key, &p, &n)
    out[0] = sg_hash(p, <size_t>n, seed)
    return 0


cpdef uint64_t namespace_seed(uint32_t kind, str name) except? 0:
    """Seed for one policy object's keys: (kind, name) -> 64-bit, stable everywhere."""
    cdef bytes b
    try:
        b = name.encode("utf-8")
    except UnicodeEncodeError:
        raise _ConfigError(f"name {name.split(chr(0))[0]!r} has no UTF-8 form (a lone surrogate); "
                           "use valid text") from None
    return sg_ns_seed(kind, <const char *>b, <size_t>len(b))


def stable_hash(key, uint64_t seed=0):
    """The 128-bit hash the core uses for a key, as (a, b). Stable across processes."""
    cdef sg_hash128 h
    hash_key(key, seed, &h)
    return (h.a, h.b)


def monotonic_ns():
    """The core's monotonic clock (CLOCK_MONOTONIC) in nanoseconds."""
    return sg_mono_ns()


def fast_monotonic_ns():
    """The rate limiter's clock: CLOCK_MONOTONIC extrapolated from the TSC where
    the kernel keeps time with it (see csrc/sg_clock.c), else monotonic_ns()."""
    return sg_fast_mono_ns()


def fast_clock_mode():
    """'tsc' if fast_monotonic_ns() extrapolates from the TSC, else 'precise'."""
    return "tsc" if sg_fast_clock_mode() == 1 else "precise"


def store_size(uint64_t capacity, policies=None):
    """Bytes needed for a store of this many key slots and policies (None: the default)."""
    cdef uint64_t d = sg_default_dir_entries(capacity) if policies is None else policies
    cdef uint64_t n = sg_store_size(capacity, d)
    if n == 0:
        raise ValueError(f"capacity {capacity} or policies {policies} is out of range")
    return n


cdef int store_full(str what, str msg) except -1:
    """Emit store.full (telemetry: listeners and a WARNING record), then raise StoreFull."""
    from sluicegate import telemetry
    telemetry.emit("store", what, "store.full", None, message=msg)
    raise StoreFull(msg)


# store.reclaimed: told by the process whose decisions reclaimed idle keys' slots, after
# such a decision, while someone listens (set_store_events; one branch on this flag else)
cdef bint _ev_reclaimed = False
cdef uint64_t _reclaimed_told = 0


def set_store_events(bint reclaimed):
    """telemetry.refresh(): whether anything wants store.reclaimed now."""
    global _ev_reclaimed, _reclaimed_told
    if reclaimed and not _ev_reclaimed:
        _reclaimed_told = sg_load(&sg_reclaimed_here)  # from now on
    _ev_reclaimed = reclaimed


cdef int tell_reclaimed(Table tbl) except -1:
    """Emit store.reclaimed for the reclaims this process made since it last told."""
    global _reclaimed_told
    cdef uint64_t now_count = sg_load(&sg_reclaimed_here)
    cdef uint64_t delta = now_count - _reclaimed_told
    if delta == 0 or tbl.t.hdr == NULL:
        return 0
    _reclaimed_told = now_count
    from sluicegate import telemetry
    telemetry.emit("store", tbl.label, "store.reclaimed", None, reclaimed=delta,
                   total=sg_load(&tbl.t.hdr.reclaimed))
    return 0


cdef int raise_table_rc(int rc, str what) except -1:
    if rc == SG_ERR_FULL:
        store_full(what, f"{what}: no free or idle slot left in the store; create it with a larger capacity")
    if rc == SG_ERR_ARG:
        raise ValueError(f"{what}: invalid argument")
    raise StoreError(f"{what}: store error {rc}")


cdef class Table:
    """A mapped store region.  Policies keep a reference and check `t.hdr` before
    touching the mapping, so using anything after close() raises instead of faulting."""
    cdef sg_table t
    cdef unsigned char[::1] mv
    cdef object mm
    cdef readonly str label
    cdef public object owner  # the SharedStore, for pickling dependants

    def __cinit__(self, mm, str label="store"):
        self.label = label
        self.mm = mm
        self.mv = mm
        cdef int rc = sg_store_attach(&self.t, <void *>&self.mv[0], <uint64_t>self.mv.shape[0])
        if rc != SG_OK:
            self.mv = None
            self.t.hdr = NULL
            if rc == SG_ERR_SIZE:
                raise StoreError(f"{label} is truncated: {len(mm)} bytes is shorter than its header says")
            if rc == SG_ERR_VERSION:
                found = int.from_bytes(bytes(mm[8:12]), "little")
                raise StoreError(
                    f"{label} was written by sluicegate's store layout version {found}; this sluicegate reads "
                    f"version {SG_LAYOUT_VERSION}. Its state cannot be carried over: remove it "
                    f"(SharedStore.unlink(name), or delete the file) so it is created afresh, or run the "
                    f"sluicegate release that wrote it")
            if rc == SG_ERR_CLOCK:
                raise StoreError(f"{label}: could not rebase the store clock after a reboot")
            raise StoreError(f"{label} is not a sluicegate store, or its header is corrupted")

    @staticmethod
    def initialise(mm, uint64_t capacity, policies=None):
        """Write a fresh header into a zeroed region of store_size(capacity, policies) bytes."""
        cdef unsigned char[::1] mv = mm
        cdef uint64_t d = sg_default_dir_entries(capacity) if policies is None else policies
        if sg_store_init(<void *>&mv[0], <uint64_t>mv.shape[0], capacity, d) != SG_OK:
            raise ValueError(f"cannot initialise a store of capacity {capacity} in {mv.shape[0]} bytes")

    cdef inline int check(self) except -1:
        if self.t.hdr == NULL:
            raise StoreClosed(f"{self.label} is closed")
        return 0

    def close(self):
        self.t.hdr = NULL
        self.mv = None
        mm, self.mm = self.mm, None
        return mm

    @property
    def closed(self):
        return self.t.hdr == NULL

    @property
    def capacity(self):
        self.check()
        return self.t.hdr.capacity

    def now(self):
        """Store time in ns: monotonic, shared by every process attached to the store."""
        self.check()
        return sg_store_now(&self.t)

    def stats(self):
        cdef sg_stats s
        self.check()
        # it reads every slot anyway: first repair a count a killed process left too high
        sg_table_recount(&self.t)
        sg_table_stats(&self.t, &s)
        return {"capacity": s.capacity, "slots": s.nslots, "used": s.live,
                "reclaimable": s.reclaimable, "permanent": s.permanent, "claiming": s.claiming,
                "permanent_capacity": s.perm_capacity, "permanent_used": s.perm_live,
                "policies_capacity": self.t.ndir, "reclaimed": sg_load(&self.t.hdr.reclaimed)}

    cdef uint64_t *permanent_words(self, uint32_t kind, str name, str part) except NULL:
        """The four raw words of a never-reclaimed slot for (kind, name, part)."""
        cdef sg_hash128 h
        cdef uint64_t idx
        cdef uint8_t tag
        self.check()
        hash_key(part, namespace_seed(kind, name), &h)
        rc = sg_table_get(&self.t, h, SG_SLOT_PERMANENT, 0, 0, sg_store_now(&self.t), 1, &idx, &tag)
        if rc == SG_ERR_FULL:
            store_full(f"{name!r}", f"{name!r}: no room left for the policies' state in {self.label} "
                       f"({self.t.hdr.perm_capacity} slots for {self.t.ndir} policies); create the store "
                       f"with a larger policies= (keys have their own room: capacity)")
        if rc != SG_OK:
            raise_table_rc(rc, f"{name!r}")
        return sg_words(&self.t, idx)

    def counter(self, str name):
        return Counter(self, name)


cdef class Counter:
    """A lock-free 64-bit signed counter shared by every process attached to the store."""
    cdef Table tbl
    cdef uint64_t *w
    cdef readonly str name

    def __cinit__(self, Table tbl, str name):
        self.tbl = tbl
        self.name = name
        self.w = tbl.permanent_words(SG_NS_COUNTER, name, "")

    def add(self, int64_t n=1):
        """Add n (may be negative) and return the new value."""
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return <int64_t>sg_add(self.w, <uint64_t>n)

    @property
    def value(self):
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return <int64_t>sg_load(self.w)

    def compare_and_set(self, int64_t old, int64_t new):
        """Set to new if the value is old; True if it was set."""
        cdef uint64_t exp = <uint64_t>old
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return bool(sg_cas(self.w, &exp, <uint64_t>new))

    def __repr__(self):
        if self.tbl.t.hdr == NULL:
            return f"<Counter {self.name!r} (closed)>"
        return f"<Counter {self.name!r} value={<int64_t>sg_load(self.w)}>"

    def __reduce__(self):
        return (_counter_from_store, (self.tbl.owner, self.name))


cdef enum:
    _TALLY_MAX = 32  # counters of one Tally: eight permanent slots of four words


cdef class Tally:
    """Up to 32 lock-free 64-bit words of one policy, shared by every process attached to
    the store: the words of ceil(n/4) permanent slots of (kind, name), found once and kept
    as pointers, so add(i) is one fetch-add and compare_and_set(i) one CAS.  What a policy
    decides in Python keeps its shared state here: a guard's counts, a retry budget's
    time buckets."""
    cdef Table tbl
    cdef uint64_t *w[_TALLY_MAX]
    cdef readonly int n

    def __cinit__(self, Table tbl, uint32_t kind, str name, int n):
        cdef int i
        cdef uint64_t *slot = NULL
        if n < 1 or n > _TALLY_MAX:
            raise ValueError(f"a Tally holds 1 to {_TALLY_MAX} counters, not {n}")
        self.tbl = tbl
        self.n = n
        for i in range(n):
            if i % 4 == 0:
                slot = tbl.permanent_words(kind, name, f"tally{i // 4}")
            self.w[i] = &slot[i % 4]

    def add(self, int i, int64_t n=1):
        """Add n to counter i (0 <= i < n)."""
        if <unsigned>i >= <unsigned>self.n:
            raise IndexError(i)
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        sg_add(self.w[i], <uint64_t>n)

    def value(self, int i):
        """Word i now (unsigned)."""
        if <unsigned>i >= <unsigned>self.n:
            raise IndexError(i)
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return sg_load(self.w[i])

    def compare_and_set(self, int i, uint64_t old, uint64_t new):
        """Set word i to new if it is old; True if it was set."""
        cdef uint64_t exp = old
        if <unsigned>i >= <unsigned>self.n:
            raise IndexError(i)
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return bool(sg_cas(self.w[i], &exp, new))

    def values(self):
        """Every counter now, as a tuple of ints (each read atomically; not one snapshot)."""
        cdef int i
        if self.tbl.t.hdr == NULL:
            self.tbl.check()
        return tuple([<int64_t>sg_load(self.w[i]) for i in range(self.n)])


def _counter_from_store(store, name):
    return store.counter(name)

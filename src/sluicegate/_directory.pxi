# The policy directory: bindings over csrc/sg_directory.c.  Documents are bytes here;
# sluicegate/directory.py gives them their meaning (JSON configuration).
import os as _os

DIR_NAME_MAX = SG_DIR_NAME_MAX
DIR_DOC_MAX = SG_DIR_DOC_MAX

from sluicegate.errors import DirectoryFull as _DirectoryFull, ConfigError as _DirConfigError


cdef int _dir_rc(int rc, Table tbl, str what) except -1:
    if rc == SG_OK:
        return 0
    if rc == SG_ERR_FULL:
        raise _DirectoryFull(f"{what}: the store's policy directory is full ({tbl.t.ndir} policies); "
                             f"create the store with a larger policies= (or fewer policy names)")
    if rc == SG_ERR_ARG:
        raise _DirConfigError(f"{what}: a policy name must be 1 to {SG_DIR_NAME_MAX} bytes of UTF-8")
    if rc == SG_DIR_BUSY:
        raise StoreError(f"{what}: another process is writing this directory entry; try again")
    raise StoreError(f"{what}: the store's policy directory is damaged (error {rc}); "
                     f"recreate the store, or re-apply the configuration")


cdef class DirEntry:
    """One policy's directory entry, as this process sees it."""
    cdef Table tbl
    cdef readonly uint64_t index
    cdef uint64_t *ver

    def __cinit__(self, Table tbl, uint64_t index):
        tbl.check()
        if index >= tbl.t.ndir:
            raise IndexError(index)
        self.tbl = tbl
        self.index = index
        self.ver = sg_dir_version(&tbl.t, index)

    @property
    def version(self):
        """The entry's version word now (one load; an engine that is not compiled over
        this store, such as a test model, compares it with the version it follows).
        StoreClosed once the store is closed: the word is in its unmapped memory."""
        self.tbl.check()
        return sg_load(self.ver)

    def read(self):
        """(version, document bytes); version 0 means no document yet."""
        cdef char buf[SG_DIR_DOC_MAX]
        cdef size_t n = 0
        cdef uint64_t v = 0
        self.tbl.check()
        _dir_rc(sg_dir_read(&self.tbl.t, self.index, buf, SG_DIR_DOC_MAX, &n, &v), self.tbl, "policy directory")
        return v, buf[:n]

    def write(self, bytes doc, uint64_t expect=0):
        """Publish doc; expect != 0 publishes only over that version.  Returns the new
        version, or 0 when expect no longer holds (read again and decide again)."""
        cdef uint64_t v = 0
        cdef int rc
        self.tbl.check()
        if len(doc) > SG_DIR_DOC_MAX:
            raise _DirConfigError(f"the configuration is {len(doc)} bytes; a policy's document holds "
                                  f"at most {SG_DIR_DOC_MAX}")
        token = int.from_bytes(_os.urandom(8), "little")
        rc = sg_dir_write(&self.tbl.t, self.index, doc, len(doc), expect, token, &v)
        if rc == SG_DIR_BUSY and expect and v != expect:
            return 0
        _dir_rc(rc, self.tbl, "policy directory")
        return v


def dir_find(Table tbl, uint32_t kind, str name, bint create):
    """The DirEntry of (kind, name), or None when absent and create is false."""
    cdef uint64_t idx = 0
    cdef bytes b
    cdef int rc
    tbl.check()
    try:
        b = name.encode("utf-8")
    except UnicodeEncodeError:
        raise _DirConfigError(f"policy name {name!r} has no UTF-8 form (a lone surrogate?)") from None
    rc = sg_dir_find(&tbl.t, kind, b, len(b), create, &idx)
    if rc == SG_NOTFOUND:
        return None
    _dir_rc(rc, tbl, f"policy {name!r}")
    return DirEntry(tbl, idx)


def dir_list(Table tbl):
    """[(index, kind, name, created_wall_ns, updated_wall_ns)] of every live entry."""
    cdef uint64_t i
    cdef uint32_t kind
    cdef char name[SG_DIR_NAME_MAX]
    cdef size_t n
    cdef uint64_t cw, uw
    tbl.check()
    out = []
    for i in range(tbl.t.ndir):
        if sg_dir_entry_info(&tbl.t, i, &kind, name, &n, &cw, &uw) == SG_OK:
            out.append((i, kind, name[:n].decode("utf-8", "replace"), cw, uw))
    return out


# A directory kind is numbered as the namespace its state uses (csrc/sg_core.h, SG_NS_*;
# SG_NS_STATS is a namespace, not a kind).  directory.KINDS maps the names onto these.
NS_COUNTER = SG_NS_COUNTER
NS_LIMITER = SG_NS_LIMITER
NS_BREAKER = SG_NS_BREAKER
NS_CONCURRENCY = SG_NS_CONCURRENCY
NS_POOL = SG_NS_POOL
NS_RETRY = SG_NS_RETRY
NS_GUARD = SG_NS_GUARD

cdef uint64_t _UNWATCHED_DIR = 0

cimport cython


@cython.binding(False)  # moved() is bound once and called per checkout: a plain C method call
cdef class DirWatch:
    """The engine the store supplies to a policy that decides in Python (a Pool): the
    version word of its directory entry.  moved() is one load, compared with the version
    the policy follows; watch() and sync() are the engine protocol (see policy.py).

    Until watch() (or for a private policy, never watched) it never moves.  Over a closed
    store it does not move either: the policy keeps the configuration it has (the load
    and the closed check run under the GIL, so close() cannot unmap between them)."""
    cdef uint64_t *ver
    cdef uint64_t seen
    cdef sg_table *t
    cdef DirEntry entry  # keeps the entry's Table, and so the mapping, alive
    cdef object on_moved

    def __cinit__(self):
        self.ver = &_UNWATCHED_DIR
        self.seen = 0
        self.t = NULL

    def watch(self, DirEntry entry, uint64_t seen, on_moved=None):
        """Follow entry, whose version this policy now applies is seen; sync() calls
        on_moved() when it moves (a Pool passes none, and calls moved() itself)."""
        entry.tbl.check()
        self.entry = entry
        self.t = &entry.tbl.t
        self.ver = entry.ver
        self.seen = seen
        self.on_moved = on_moved

    def moved(self):
        """True if the entry's version moved past the one the policy follows."""
        if self.t != NULL and self.t.hdr == NULL:
            return False
        return sg_load(self.ver) != self.seen

    def sync(self):
        """Call on_moved() if the version moved."""
        if self.moved() and self.on_moved is not None:
            self.on_moved()

# Declarations of csrc/sg_core.h: the one place this header is declared to Cython.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t

cdef extern from "sg_core.h" nogil:
    enum:
        SG_OK
        SG_NOTFOUND
        SG_ERR_FULL
        SG_ERR_HEADER
        SG_ERR_VERSION
        SG_ERR_SIZE
        SG_ERR_ARG
        SG_ERR_CLOCK
        SG_NS_COUNTER
        SG_NS_LIMITER
        SG_NS_BREAKER
        SG_NS_CONCURRENCY
        SG_NS_STATS
        SG_NS_POOL
        SG_NS_RETRY
        SG_NS_GUARD
        SG_SLOT_RECLAIMABLE
        SG_SLOT_PERMANENT
        SG_HEADER_SIZE
        SG_LAYOUT_VERSION

    ctypedef struct sg_hash128:
        uint64_t a
        uint64_t b

    ctypedef struct sg_header:
        uint64_t capacity
        uint64_t dir_entries
        uint64_t perm_capacity
        uint64_t perm_live
        uint64_t nslots
        uint64_t live
        uint64_t created_wall
        uint64_t reclaimed

    ctypedef struct sg_table:
        sg_header *hdr
        uint64_t mask
        uint64_t ndir

    ctypedef struct sg_stats:
        uint64_t capacity, nslots, live, reclaimable, permanent, claiming, perm_capacity, perm_live

    uint64_t sg_mono_ns()
    uint64_t sg_fast_mono_ns()
    int sg_fast_clock_mode()
    sg_hash128 sg_hash(const void *data, size_t length, uint64_t seed)
    uint64_t sg_ns_seed(uint32_t kind, const void *name, size_t length)
    uint64_t sg_store_size(uint64_t capacity, uint64_t dir_entries)
    uint64_t sg_default_dir_entries(uint64_t capacity)
    int sg_store_init(void *base, uint64_t size, uint64_t capacity, uint64_t dir_entries)
    int sg_store_attach(sg_table *t, void *base, uint64_t size)
    uint64_t sg_store_now(const sg_table *t)
    uint64_t sg_store_fast_now(const sg_table *t)
    int sg_table_get(sg_table *t, sg_hash128 h, int kind, uint32_t algo, uint64_t param, uint64_t now,
                     int create, uint64_t *idx, uint8_t *tag)
    void sg_table_stats(const sg_table *t, sg_stats *out)
    uint64_t sg_reclaimed_here
    int sg_table_recount(sg_table *t)
    uint64_t sg_live_count(uint64_t w)
    uint64_t *sg_words(sg_table *t, uint64_t idx)
    uint64_t sg_load(const uint64_t *p)
    void sg_store(uint64_t *p, uint64_t v)
    int sg_cas(uint64_t *p, uint64_t *expected, uint64_t desired)
    uint64_t sg_add(uint64_t *p, uint64_t n)

# Declarations of csrc/sg_concurrency.h: the one place this header is declared to Cython.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from sluicegate._c_core cimport sg_table, sg_hash128

cdef extern from "sg_concurrency.h" nogil:
    enum:
        SG_CAP_FULL
        SG_CAP_MAX_LIMIT
        SG_CAP_PER_SLOT

    ctypedef struct sg_cap:
        uint64_t *ctl
        uint64_t **pairs
        uint32_t nrec
        int strict

    uint64_t *sg_cap_rec(const sg_cap *c, uint32_t i)
    int sg_cap_init(sg_cap *c, uint32_t initial_limit, uint32_t min_limit, int fixed)
    uint32_t sg_cap_records(const sg_cap *c)
    int sg_cap_try_acquire(sg_cap *c, uint64_t owner, uint32_t hint, uint64_t now, uint32_t *idx)
    int sg_cap_release(sg_cap *c, uint32_t idx, uint64_t owner)
    uint32_t sg_cap_in_use(const sg_cap *c)
    uint32_t sg_cap_limit(const sg_cap *c)
    int sg_cap_contended(const sg_cap *c, uint64_t now, uint64_t window_ns)
    uint32_t sg_cap_on_success(sg_cap *c, uint32_t inflight, uint32_t max_limit)
    uint32_t sg_cap_on_drop(sg_cap *c, uint32_t backoff_1024, uint32_t min_limit)
    void sg_cap_set_limit(sg_cap *c, uint32_t limit)

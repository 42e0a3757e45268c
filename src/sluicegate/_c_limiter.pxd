# Declarations of csrc/sg_limiter.h: the one place this header is declared to Cython.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from sluicegate._c_core cimport sg_table, sg_hash128

cdef extern from "sg_limiter.h" nogil:
    enum:
        SG_ALGO_GCRA
        SG_ALGO_FIXED
        SG_ALGO_SLIDING

    ctypedef struct sg_rate:
        uint32_t algo
        uint64_t limit
        uint64_t period_ns
        uint64_t interval_ns
        const uint64_t *adaptive
        uint64_t interval_max_ns

    ctypedef struct sg_adaptive:
        uint64_t interval_min_ns
        uint64_t interval_max_ns
        double increase
        double decrease
        uint64_t cooldown_ns

    ctypedef struct sg_decision:
        int allowed
        uint64_t limit, remaining, retry_after_ns, reset_after_ns

    int sg_rate_validate(const sg_rate *r)
    uint64_t sg_adaptive_feedback(uint64_t *w, const sg_adaptive *a, int ok, uint64_t now)
    uint64_t sg_adaptive_interval(const uint64_t *w, uint64_t interval_min_ns, uint64_t interval_max_ns)
    int sg_rate_apply(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t cost, uint64_t now, int consume,
                      sg_decision *out)
    int sg_rate_refund(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t cost, uint64_t now)
    int sg_rate_reset(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t now)
    int sg_rates_apply(sg_table *t, const sg_hash128 *hs, const sg_rate *rs, int n, uint64_t cost,
                       uint64_t now, int consume, sg_decision *out)
    int sg_rates_apply_many(sg_table *t, const sg_hash128 *hs, size_t nkeys, const sg_rate *rs, int nrates,
                            uint64_t cost, uint64_t now, uint8_t *allowed, size_t *done)
    uint64_t SG_FIXED_MAX_LIMIT
    uint64_t SG_SLIDING_MAX_LIMIT
    uint64_t SG_GCRA_MAX_TAU

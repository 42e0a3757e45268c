# Declarations of csrc/sg_breaker.h: the one place this header is declared to Cython.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from sluicegate._c_core cimport sg_table, sg_hash128

cdef extern from "sg_breaker.h" nogil:
    enum:
        SG_BR_CLOSED
        SG_BR_OPEN
        SG_BR_HALF_OPEN
        SG_BR_DEGRADED
        SG_BR_FORCED_OPEN
        SG_BR_DISABLED
        SG_BR_SUCCESS
        SG_BR_FAILURE
        SG_BR_IGNORE
        SG_BR_ADMIT
        SG_BR_REJ_OPEN
        SG_BR_REJ_FORCED
        SG_BR_REJ_HALF_OPEN
        SG_BR_REJ_DEGRADED
        SG_BR_REJ_ADAPTIVE
        SG_BR_REJ_INJECTED
        SG_BR_MAX_BUCKETS
        SG_BR_MAX_LEVELS

    uint64_t SG_BR_T_GEN_MASK
    uint64_t SG_BR_T_PROBE
    uint64_t SG_BR_T_INJECT_FAIL
    uint64_t SG_BR_T_INJECT_LATENCY
    uint64_t SG_BR_T_ADMITTED

    ctypedef struct sg_br_config:
        uint32_t nbuckets
        uint64_t bucket_ns
        uint32_t failure_threshold
        uint32_t minimum_calls
        uint64_t failure_rate_ppm
        uint64_t slow_rate_ppm
        uint64_t slow_ns
        uint64_t reset_ns
        uint64_t max_reset_ns
        uint64_t backoff_milli
        uint64_t jitter_ppm
        uint32_t half_open_calls
        uint64_t probe_timeout_ns
        uint32_t nlevels
        uint64_t level_p32[3]
        uint64_t level_ns
        uint64_t degrade_ppm
        uint64_t recover_ppm
        uint32_t sev_n
        uint64_t sev_p32[3]
        int adaptive
        uint64_t adaptive_k_milli
        uint64_t adaptive_max_p32
        uint64_t seed

    ctypedef struct sg_breaker:
        sg_table *t
        uint64_t *st
        uint64_t *stats
        uint64_t *fault
        uint64_t *bk[64]
        uint64_t *ep[64]
        sg_br_config c

    ctypedef struct sg_br_result:
        uint64_t s
        uint64_t retry_ns
        int reason

    ctypedef struct sg_br_window:
        uint64_t calls, failures, slow, rejected

    int sg_br_validate(const sg_br_config *c)
    uint64_t sg_br_poll(sg_breaker *b, uint64_t now)
    uint64_t sg_br_enter(sg_breaker *b, uint64_t now, uint64_t *rng, sg_br_result *out)
    uint64_t sg_br_exit(sg_breaker *b, uint64_t ticket, int outcome, uint64_t duration_ns, uint64_t now)
    uint64_t sg_br_exit_real(sg_breaker *b, uint64_t ticket, int outcome, uint64_t duration_ns, uint64_t now)
    uint64_t sg_br_set_state(sg_breaker *b, unsigned state, int clear, uint64_t now)
    void sg_br_window_sums(sg_breaker *b, uint64_t s, uint64_t now, sg_br_window *w)
    uint64_t sg_br_open_ns(const sg_br_config *c, unsigned consec, uint64_t gen)
    uint64_t sg_br_phase_ns(sg_breaker *b, uint64_t s, uint64_t now)
    uint64_t sg_br_mix(uint64_t x)

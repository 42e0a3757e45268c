/* Shared circuit breaker: a lock-free state machine on permanent slots.
 *
 * All state lives in the store (never reclaimed), every transition is a CAS on
 * one packed 64-bit state word, and every time-dependent transition (open ->
 * half_open, half-open probe timeout, degraded -> closed) is computed lazily from
 * timestamps on the next access.  No locks: a process killed at any instruction
 * leaves nothing held; a probe permit it held is recovered after probe_timeout.
 *
 * Words (each part is one permanent slot of four raw words):
 *   st[0]  state word S = [consec:8 | succ:8 | issued:8 | gen:24 | state:3]
 *   st[1]  phase word   = [gen:24 | start_ms:40]  (start of the current state)
 *   st[2]  transitions (count)
 *   st[3]  reserved (0; layout 1 kept a configuration fingerprint here)
 *   stats  [calls, failures, slow, rejections]        (totals, fetch-add)
 *   fault  [reject_p32, fail_p32, latency_p32, latency_ns]
 *   bucket [calls, failures, slow, rejected]  each [gen:12 | epoch:24 | count:28]
 *   epochs [ep[4j], ep[4j+1], ep[4j+2], ep[4j+3]]  (slot j)
 *          ep[i] = (newest epoch written to bucket i) + 1, 0 = never; full width.
 *          Only raised, except that a store-clock reader lowers an ep[i] a window
 *          or more ahead of the store clock (the clock went back).  A bucket word
 *          counts only while its 24-bit epoch is ep[i]'s (see "rolling buckets" in
 *          sg_breaker.c).
 *
 * Randomness (degraded admission, adaptive throttling, fault injection) comes from
 * the caller's xorshift state *rng, advanced only when a draw is needed, so a
 * seeded caller is reproducible.
 */
#ifndef SG_BREAKER_H
#define SG_BREAKER_H

#include "sg_core.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    SG_BR_CLOSED = 0,
    SG_BR_OPEN = 1,
    SG_BR_HALF_OPEN = 2,
    SG_BR_DEGRADED = 3,
    SG_BR_FORCED_OPEN = 4,
    SG_BR_DISABLED = 5,
};

enum { SG_BR_SUCCESS = 0, SG_BR_FAILURE = 1, SG_BR_IGNORE = 2 };

/* rejection reasons (sg_br_result.reason) */
enum {
    SG_BR_ADMIT = 0,
    SG_BR_REJ_OPEN = 1,
    SG_BR_REJ_FORCED = 2,
    SG_BR_REJ_HALF_OPEN = 3,
    SG_BR_REJ_DEGRADED = 4,
    SG_BR_REJ_ADAPTIVE = 5,
    SG_BR_REJ_INJECTED = 6,
};

/* ticket bits (a ticket is never 0) */
#define SG_BR_T_GEN_MASK 0xffffffULL
#define SG_BR_T_PROBE (1ULL << 24)
#define SG_BR_T_INJECT_FAIL (1ULL << 25)
#define SG_BR_T_INJECT_LATENCY (1ULL << 26)
#define SG_BR_T_ADMITTED (1ULL << 27)

/* state word fields */
#define SG_BR_STATE(s) ((unsigned)((s)&7))
#define SG_BR_GEN(s) (((s) >> 3) & 0xffffffULL)
#define SG_BR_ISSUED(s) ((unsigned)(((s) >> 27) & 0xff))
#define SG_BR_SUCC(s) ((unsigned)(((s) >> 35) & 0xff))
#define SG_BR_CONSEC(s) ((unsigned)(((s) >> 43) & 0xff))

#define SG_BR_MAX_BUCKETS 64
#define SG_BR_MAX_LEVELS 3
#define SG_BR_P32_ONE (1ULL << 32) /* probability 1.0 in 32-bit fixed point */

typedef struct {
    uint32_t nbuckets;          /* rolling window = nbuckets * bucket_ns */
    uint64_t bucket_ns;
    uint32_t failure_threshold; /* count rule: N failures in window; 0 = off */
    uint32_t minimum_calls;     /* rate rules need this many calls in window */
    uint64_t failure_rate_ppm;  /* failures/calls >= this trips; 0 = off */
    uint64_t slow_rate_ppm;     /* slow/calls >= this trips; 0 = off */
    uint64_t slow_ns;           /* a call at least this long is slow; 0 = off */
    uint64_t reset_ns;          /* first open lasts this long */
    uint64_t max_reset_ns;      /* backoff cap */
    uint64_t backoff_milli;     /* multiplier per consecutive re-open, x1000 (>= 1000) */
    uint64_t jitter_ppm;        /* +- fraction of the open time, ppm */
    uint32_t half_open_calls;   /* probes per half-open round, 1..255 */
    uint64_t probe_timeout_ns;  /* a round whose probes did not all report is restarted */
    uint32_t nlevels;           /* degraded levels after half-open (0 = none) */
    uint64_t level_p32[SG_BR_MAX_LEVELS]; /* admit probability per level */
    uint64_t level_ns;          /* time spent in each level */
    /* degradation by severity: closed -> degraded when the window's failure rate reaches
     * degrade_ppm (with minimum_calls), at a level 1..sev_n that grows with the rate up to
     * the trip rate (failure_rate_ppm, else 100%); back to closed below recover_ppm.  In
     * that state the state word's succ field holds the level (the recovery ramp's is 0). */
    uint64_t degrade_ppm;       /* 0 = off; below failure_rate_ppm when that is set */
    uint64_t recover_ppm;       /* <= degrade_ppm */
    uint32_t sev_n;             /* levels, 1..3: light, medium, heavy */
    uint64_t sev_p32[SG_BR_MAX_LEVELS]; /* admit probability per level */
    int adaptive;               /* Google SRE client throttling in closed state */
    uint64_t adaptive_k_milli;  /* K x1000 */
    uint64_t adaptive_max_p32;  /* cap on the rejection probability */
    uint64_t seed;              /* jitter seed (same in every process) */
} sg_br_config;

typedef struct {
    sg_table *t;
    uint64_t *st;
    uint64_t *stats;
    uint64_t *fault;
    uint64_t *bk[SG_BR_MAX_BUCKETS];
    uint64_t *ep[SG_BR_MAX_BUCKETS]; /* one word each */
    sg_br_config c;
} sg_breaker;

typedef struct {
    uint64_t s;        /* the state word the decision was made on (or after) */
    uint64_t retry_ns; /* for a rejection: how long until it may admit */
    int reason;        /* SG_BR_ADMIT or SG_BR_REJ_* */
} sg_br_result;

typedef struct {
    uint64_t calls, failures, slow, rejected;
} sg_br_window;

/* 0 if the configuration is usable, else SG_ERR_ARG */
int sg_br_validate(const sg_br_config *c);

/* now == 0 means "read the store clock when needed" (store time is never 0). */
/* Lazy time transitions; returns the current state word. */
uint64_t sg_br_poll(sg_breaker *b, uint64_t now);
/* Ask to run a call: returns a ticket (nonzero) or 0 for a rejection. */
uint64_t sg_br_enter(sg_breaker *b, uint64_t now, uint64_t *rng, sg_br_result *out);
/* Report a call's outcome; returns the state word after it. */
uint64_t sg_br_exit(sg_breaker *b, uint64_t ticket, int outcome, uint64_t duration_ns, uint64_t now);
/* The same with now a store-clock reading the caller already took (sg_store_now), which
 * is then trusted as now == 0 is (see "rolling buckets" in sg_breaker.c). */
uint64_t sg_br_exit_real(sg_breaker *b, uint64_t ticket, int outcome, uint64_t duration_ns, uint64_t now);
/* Admin: move to state (closed / forced_open / disabled) from anything.
 * Closing, or clear != 0 (reset), bumps the generation even when already there. */
uint64_t sg_br_set_state(sg_breaker *b, unsigned state, int clear, uint64_t now);
/* Sums over the rolling window for the current generation. */
void sg_br_window_sums(sg_breaker *b, uint64_t s, uint64_t now, sg_br_window *w);
/* Open duration for the consecutive-open count and generation (with backoff, cap, jitter). */
uint64_t sg_br_open_ns(const sg_br_config *c, unsigned consec, uint64_t gen);
/* Start of the current state (ns, ms resolution) for state word s. */
uint64_t sg_br_phase_ns(sg_breaker *b, uint64_t s, uint64_t now);
/* splitmix64 finaliser (exported so that the reference model can match it) */
uint64_t sg_br_mix(uint64_t x);

#ifdef __cplusplus
}
#endif
#endif

/* Rate-limit algorithms over reclaimable slots: GCRA (token bucket), fixed window,
 * sliding window counter.  Each key's state is one tagged 56-bit payload word,
 * updated by CAS; denials write nothing. */
#ifndef SG_LIMITER_H
#define SG_LIMITER_H

#include "sg_core.h"

enum { SG_ALGO_GCRA = 1, SG_ALGO_FIXED = 2, SG_ALGO_SLIDING = 3, SG_ALGO_COUNT = 4 };

#define SG_FIXED_MAX_LIMIT 0xffffffffULL   /* 32-bit count */
#define SG_SLIDING_MAX_LIMIT 0xfffffULL    /* 20-bit counts */
#define SG_GCRA_MAX_TAU (1ULL << 54)       /* burst * interval, ns */

typedef struct {
    uint32_t algo;
    uint64_t limit;       /* windows: calls per period; gcra: burst */
    uint64_t period_ns;   /* windows: whole milliseconds */
    uint64_t interval_ns; /* gcra: emission interval, >= 1 (adaptive: the shortest, at max_rate) */
    /* gcra only, NULL otherwise: the adaptive limiter's shared word holding the current
     * interval (sg_adaptive_feedback moves it), read at each decision and clamped to
     * [interval_ns, interval_max_ns]; 0 (never set) reads as interval_ns */
    const uint64_t *adaptive;
    uint64_t interval_max_ns; /* adaptive: the longest interval, at min_rate */
} sg_rate;

/* The AIMD rule of an adaptive limiter (one per limiter, in the process). */
typedef struct {
    uint64_t interval_min_ns, interval_max_ns; /* at max_rate, at min_rate */
    double increase;                           /* tokens/s gained per second of successes at full rate */
    double decrease;                           /* the rate's factor at a failure, in (0, 1) */
    uint64_t cooldown_ns;                      /* at most one decrease per cooldown */
} sg_adaptive;

/* Feedback on one call of an adaptive limiter whose shared words are w[0] (the current
 * interval, ns) and w[1] (the store time of the last decrease).  ok: the rate grows by
 * increase / rate (so a second of successes at full rate adds `increase`, whatever the
 * rate: feedback cannot inflate it faster than calls are admitted); failure: the rate
 * is multiplied by decrease unless the last decrease is younger than cooldown.  One CAS
 * per change; returns the interval after it. */
uint64_t sg_adaptive_feedback(uint64_t *w, const sg_adaptive *a, int ok, uint64_t now);
/* The current interval of w, clamped to a's range (0 reads as the shortest). */
uint64_t sg_adaptive_interval(const uint64_t *w, uint64_t interval_min_ns, uint64_t interval_max_ns);

typedef struct {
    int allowed;
    uint64_t limit, remaining, retry_after_ns, reset_after_ns;
} sg_decision;

/* The idle test of a reclaimable slot that an algorithm decides (its row in the
 * algorithm table); registered with the table (sg_table_set_idle) at load time. */
int sg_algo_idle(uint32_t algo, uint64_t param, uint64_t payload, uint64_t now);

/* 0 if the rate is usable, else SG_ERR_ARG. */
int sg_rate_validate(const sg_rate *r);

/* Decide for one key.  consume=0 is a peek (never creates a slot).
 * now == 0 (in every function here): read the store clock, after the key's state
 * is loaded.  A non-zero now is a fake clock (tests) or a caller's own instant. */
int sg_rate_apply(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t cost, uint64_t now, int consume,
                  sg_decision *out);
/* Give back cost previously consumed (chains and multi-rate all-or-nothing). */
int sg_rate_refund(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t cost, uint64_t now);
/* Forget a key's state (back to full). */
int sg_rate_reset(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t now);

/* Several rates on one key, all-or-nothing: on a denial the rates that had
 * admitted are refunded.  hs[i] is the key's hash in rate i's namespace.
 * out gets the denying rate's decision, or the tightest one when allowed. */
int sg_rates_apply(sg_table *t, const sg_hash128 *hs, const sg_rate *rs, int n, uint64_t cost, uint64_t now,
                   int consume, sg_decision *out);

/* Batch: decide nkeys keys (consuming cost each) at one instant.  hs holds nrates
 * hashes per key (hs[k * nrates + i]).  allowed[k] gets 0/1.  Stops at the first
 * error; *done is the number of keys decided. */
int sg_rates_apply_many(sg_table *t, const sg_hash128 *hs, size_t nkeys, const sg_rate *rs, int nrates, uint64_t cost,
                        uint64_t now, uint8_t *allowed, size_t *done);

#endif

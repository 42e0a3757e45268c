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
    uint64_t interval_ns; /* gcra: emission interval, >= 1 */
} sg_rate;

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

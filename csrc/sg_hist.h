/* Lock-free latency histograms in shared memory.
 *
 * A histogram is SG_HIST_SLOTS permanent slots of one policy: a count per bucket
 * (not cumulative) and the sum of the recorded values in ns.  Recording is two
 * fetch-adds (the value's bucket, then the sum), so every process on the host adds to
 * the same words and the histogram is host-wide by construction: no per-process
 * files, nothing to merge.  A process killed between the two adds leaves a count
 * without its share of the sum (a sum low by one value), never a torn word.
 *
 * Buckets are fixed, log-scale, in a 1-2-5 series from 100 us to 50 s plus +Inf,
 * so a histogram has one meaning in every process and every release that uses the
 * same part names (a change of bounds must take new part names: SG_HIST_TAG).
 * Bucket i counts values v with bound[i-1] < v <= bound[i] (Prometheus's "le").
 *
 * Words: w[0 .. SG_HIST_BUCKETS-1] the buckets (the last is +Inf), then the sum;
 * word k lives in slot k / 4, word k % 4.
 */
#ifndef SG_HIST_H
#define SG_HIST_H

#include "sg_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SG_HIST_BOUNDS 18                          /* finite upper bounds */
#define SG_HIST_BUCKETS (SG_HIST_BOUNDS + 1)      /* and +Inf */
#define SG_HIST_WORDS (SG_HIST_BUCKETS + 1)       /* and the sum */
#define SG_HIST_SLOTS ((SG_HIST_WORDS + 3) / 4)  /* 5 permanent slots */
#define SG_HIST_SUM SG_HIST_BUCKETS                /* the sum's word */
#define SG_HIST_TAG "hist1" /* names this layout's parts: new bounds, new tag */

/* upper bounds in ns: 100 us, 200 us, 500 us, 1 ms, ... 20 s, 50 s */
static const uint64_t sg_hist_bounds_ns[SG_HIST_BOUNDS] = {
    100000ULL,     200000ULL,     500000ULL,     1000000ULL,     2000000ULL,     5000000ULL,
    10000000ULL,   20000000ULL,   50000000ULL,   100000000ULL,   200000000ULL,   500000000ULL,
    1000000000ULL, 2000000000ULL, 5000000000ULL, 10000000000ULL, 20000000000ULL, 50000000000ULL,
};

typedef struct {
    uint64_t *w[SG_HIST_SLOTS]; /* each slot's four words; NULL: absent (read as zeros) */
} sg_hist;

/* The bucket of a value in ns (SG_HIST_BOUNDS is +Inf).  Most calls are fast: the
 * scan usually stops at the first bounds. */
static inline unsigned sg_hist_bucket(uint64_t ns) {
    unsigned i = 0;
    while (i < SG_HIST_BOUNDS && ns > sg_hist_bounds_ns[i]) i++;
    return i;
}

static inline uint64_t *sg_hist_word(const sg_hist *h, unsigned k) {
    uint64_t *s = h->w[k / 4];
    return s ? s + k % 4 : NULL;
}

/* Add one value (every slot must be present: sg_hist_open with create). */
static inline void sg_hist_record(const sg_hist *h, uint64_t ns) {
    unsigned i = sg_hist_bucket(ns);
    sg_add(h->w[i / 4] + i % 4, 1);
    sg_add(h->w[SG_HIST_SUM / 4] + SG_HIST_SUM % 4, ns);
}

/* The slots of histogram `part` of the policy whose namespace seed is `seed` (the
 * policy's sg_ns_seed): found, or created when create != 0.  Without create, absent
 * slots are NULL in *h (a reader never takes room in the store) and the answer is
 * SG_NOTFOUND when none exists; with create, SG_ERR_FULL when the store has no
 * permanent room left.  part: 1 to 64 bytes. */
int sg_hist_open(sg_table *t, uint64_t seed, const char *part, size_t len, int create, sg_hist *h);

/* Per-bucket counts (not cumulative; the last is +Inf) and the sum in ns.  Each word
 * is one atomic load: a read racing recorders sees every count as of some moment
 * between its first and last load, so across reads each count only grows. */
void sg_hist_read(const sg_hist *h, uint64_t counts[SG_HIST_BUCKETS], uint64_t *sum_ns);

/* Zero every word (a policy's reset): racing recorders may keep a value or two. */
void sg_hist_clear(const sg_hist *h);

#ifdef __cplusplus
}
#endif
#endif

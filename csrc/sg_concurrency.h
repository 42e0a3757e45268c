/* Host-wide concurrency cap (a semaphore) on permanent slots.
 *
 * A permit is a holder record: word 0 is the owner [pid:22 | start:42] (0 = free),
 * word 1 the store time it was taken (informational).  Acquire is one CAS of a free
 * record whose index is below the current limit, so the count of held permits can
 * never exceed the limit and nothing is ever "counted but not recorded": a process
 * killed at any instruction either holds a full record or none.  Release is a CAS
 * from the exact owner value to 0.  Dead holders are found by the caller (liveness
 * is an OS question) and freed with the same CAS.
 *
 * Control words (one permanent slot): [0] current limit, [1] holder records any
 * configuration has declared (every process scans that many, so holders above a
 * lowered limit are still counted), [2] store time the cap was last found full
 * (contention hint), [3] total permits granted.
 *
 * A cap's configuration can change while permits are held (a deploy, a runtime
 * override): each process then re-runs sg_cap_init with its new view.  Strict mode
 * (counting every record, not only those below the limit) makes a lowered limit hold
 * for new acquires while the holders above it keep their permits.
 */
#ifndef SG_CONCURRENCY_H
#define SG_CONCURRENCY_H

#include "sg_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SG_CAP_MAX_LIMIT 65536u
#define SG_CAP_PER_SLOT 2u

enum { SG_CAP_FULL = 3 };

typedef struct sg_cap {
    uint64_t *ctl;    /* 4 control words */
    uint64_t **pairs; /* nrec / 2 (rounded up) permanent slots, 2 records each */
    uint32_t nrec;    /* number of holder records (the maximum limit) */
    int strict;       /* adaptive mode: also count holders above the limit */
} sg_cap;

static inline uint64_t *sg_cap_rec(const sg_cap *c, uint32_t i) {
    return c->pairs[i / SG_CAP_PER_SLOT] + (i % SG_CAP_PER_SLOT) * 2;
}

/* Apply this process's configuration: raise the record count (ctl[1]) to c->nrec, and
 * set the limit: fixed != 0 (a static cap) to initial_limit; otherwise (adaptive) keep
 * the shared limit, clamped into [min_limit, nrec], or initial_limit when none is set. */
int sg_cap_init(sg_cap *c, uint32_t initial_limit, uint32_t min_limit, int fixed);
/* The record count any configuration declared (ctl[1]). */
uint32_t sg_cap_records(const sg_cap *c);
/* Take a free record below the current limit (scan starts at hint). SG_OK / SG_CAP_FULL. */
int sg_cap_try_acquire(sg_cap *c, uint64_t owner, uint32_t hint, uint64_t now, uint32_t *idx);
/* Free record idx if it still holds owner. 1 if freed, 0 if not (already free / another owner). */
int sg_cap_release(sg_cap *c, uint32_t idx, uint64_t owner);
uint32_t sg_cap_in_use(const sg_cap *c);
uint32_t sg_cap_limit(const sg_cap *c);
/* 1 if some acquire found the cap full within the last window_ns. */
int sg_cap_contended(const sg_cap *c, uint64_t now, uint64_t window_ns);
/* AIMD (Netflix concurrency-limits): success with inflight*2 >= limit grows the limit
 * by one (up to max); a drop multiplies it by backoff/1024 (down to min). Returns the new limit. */
uint32_t sg_cap_on_success(sg_cap *c, uint32_t inflight, uint32_t max_limit);
uint32_t sg_cap_on_drop(sg_cap *c, uint32_t backoff_1024, uint32_t min_limit);
/* Force the limit (clamped to [1, nrec]). */
void sg_cap_set_limit(sg_cap *c, uint32_t limit);

#ifdef __cplusplus
}
#endif
#endif

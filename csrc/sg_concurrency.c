/* Host-wide concurrency cap: see sg_concurrency.h. */
#include "sg_concurrency.h"

static inline uint32_t clamp_limit(const sg_cap *c, uint64_t l) {
    if (l < 1) return 1;
    if (l > c->nrec) return c->nrec;
    return (uint32_t)l;
}

int sg_cap_init(sg_cap *c, uint32_t initial_limit, uint32_t min_limit, int fixed) {
    /* every process sizes its records to the most any configuration declared */
    uint64_t have = sg_load(&c->ctl[1]);
    while (have < c->nrec && !sg_cas(&c->ctl[1], &have, c->nrec)) {
    }
    uint32_t want = clamp_limit(c, initial_limit);
    if (fixed) { /* a static cap's limit is its configuration */
        sg_store(&c->ctl[0], want);
        return SG_OK;
    }
    uint64_t zero = 0;
    sg_cas(&c->ctl[0], &zero, want); /* the first one in sets the adaptive limit */
    /* keep an inherited (adaptive) limit within this configuration's bounds */
    for (;;) {
        uint64_t cur = sg_load(&c->ctl[0]);
        uint64_t fixed_l = clamp_limit(c, cur < min_limit ? min_limit : cur);
        if (fixed_l == cur || sg_cas(&c->ctl[0], &cur, fixed_l)) break;
    }
    return SG_OK;
}

uint32_t sg_cap_records(const sg_cap *c) {
    uint64_t n = sg_load(&c->ctl[1]);
    return n > SG_CAP_MAX_LIMIT ? SG_CAP_MAX_LIMIT : (uint32_t)n;
}

uint32_t sg_cap_limit(const sg_cap *c) { return clamp_limit(c, sg_load(&c->ctl[0])); }

uint32_t sg_cap_in_use(const sg_cap *c) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->nrec; i++) n += sg_load(sg_cap_rec(c, i)) != 0;
    return n;
}

static uint32_t in_use_sc(const sg_cap *c) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->nrec; i++) n += __atomic_load_n(sg_cap_rec(c, i), __ATOMIC_SEQ_CST) != 0;
    return n;
}

static void mark_full(sg_cap *c, uint64_t now) {
    if (sg_load(&c->ctl[2]) != now) sg_store(&c->ctl[2], now);
}

int sg_cap_try_acquire(sg_cap *c, uint64_t owner, uint32_t hint, uint64_t now, uint32_t *idx) {
    uint32_t limit = sg_cap_limit(c);
    if (c->strict && limit < c->nrec && sg_cap_in_use(c) >= limit) {
        mark_full(c, now);
        return SG_CAP_FULL;
    }
    uint32_t start = hint % limit;
    for (uint32_t k = 0; k < limit; k++) {
        uint32_t i = start + k;
        if (i >= limit) i -= limit;
        uint64_t *r = sg_cap_rec(c, i);
        uint64_t cur = sg_load(r);
        if (cur != 0) continue;
        if (c->strict ? __atomic_compare_exchange_n(r, &cur, owner, 0, __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)
                      : sg_cas(r, &cur, owner)) {
            /* adaptive: the count above and this CAS are two steps, so recount now that our
             * record is visible and back out if the limit is exceeded.  With a seq_cst CAS and
             * seq_cst loads, of two racing acquirers at least one sees both records. */
            if (c->strict) {
                uint32_t now_limit = sg_cap_limit(c);
                if (now_limit < c->nrec && in_use_sc(c) > now_limit) {
                    sg_store(r, 0);
                    mark_full(c, now);
                    return SG_CAP_FULL;
                }
            }
            sg_store(r + 1, now);
            sg_add(&c->ctl[3], 1);
            *idx = i;
            return SG_OK;
        }
    }
    mark_full(c, now);
    return SG_CAP_FULL;
}

int sg_cap_release(sg_cap *c, uint32_t idx, uint64_t owner) {
    if (idx >= c->nrec || owner == 0) return 0;
    uint64_t exp = owner;
    return sg_cas(sg_cap_rec(c, idx), &exp, 0);
}

int sg_cap_contended(const sg_cap *c, uint64_t now, uint64_t window_ns) {
    uint64_t t = sg_load(&c->ctl[2]);
    return t != 0 && now >= t && now - t <= window_ns;
}

uint32_t sg_cap_on_success(sg_cap *c, uint32_t inflight, uint32_t max_limit) {
    for (;;) {
        uint64_t cur = sg_load(&c->ctl[0]);
        uint32_t l = clamp_limit(c, cur);
        if ((uint64_t)inflight * 2 < l || l >= max_limit || l >= c->nrec) return l;
        if (sg_cas(&c->ctl[0], &cur, (uint64_t)l + 1)) return l + 1;
    }
}

uint32_t sg_cap_on_drop(sg_cap *c, uint32_t backoff_1024, uint32_t min_limit) {
    if (min_limit < 1) min_limit = 1;
    for (;;) {
        uint64_t cur = sg_load(&c->ctl[0]);
        uint32_t l = clamp_limit(c, cur);
        uint64_t want = ((uint64_t)l * backoff_1024) >> 10;
        if (want < min_limit) want = min_limit;
        if (want > l) want = l;
        if (want == cur) return (uint32_t)want;
        if (sg_cas(&c->ctl[0], &cur, want)) return (uint32_t)want;
    }
}

void sg_cap_set_limit(sg_cap *c, uint32_t limit) { sg_store(&c->ctl[0], clamp_limit(c, limit)); }

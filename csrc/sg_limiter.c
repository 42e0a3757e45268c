#include "sg_limiter.h"

__extension__ typedef unsigned __int128 u128; /* exact window arithmetic */

/* ---- pure algorithm steps: payload in, decision (and new payload) out ----- */

/* GCRA keeps the theoretical arrival time modulo 2^56 ns (about 834 days of store
 * time, which a file-backed store can outlive).  A live tat is never more than
 * SG_GCRA_MAX_TAU (2^54) ahead of now, so the time still owed is the distance from
 * now to tat modulo 2^56 when that is at most 2^54, and 0 (tat in the past) when
 * it is more.  0 is the fresh / reset payload; a tat that would be stored as 0 is
 * stored as 2^56 - 1 instead (1 ns earlier, so the owed time shrinks by 1 ns at most). */
static inline uint64_t gcra_owed(uint64_t tat, uint64_t now) {
    if (tat == 0) return 0;
    uint64_t diff = (tat - now) & SG_PAYLOAD_MASK;
    return diff <= SG_GCRA_MAX_TAU ? diff : 0;
}

static inline uint64_t gcra_tat(uint64_t now, uint64_t owed) {
    if (owed == 0) return 0; /* nothing owed: the same as a fresh key */
    uint64_t p = (now + owed) & SG_PAYLOAD_MASK;
    return p ? p : SG_PAYLOAD_MASK;
}

uint64_t sg_adaptive_interval(const uint64_t *w, uint64_t lo, uint64_t hi) {
    uint64_t T = sg_load(w);
    return T < lo ? lo : T > hi ? hi : T; /* 0 (never set) reads as the shortest */
}

/* A token bucket's emission interval: fixed, or an adaptive limiter's current one. */
static inline uint64_t gcra_interval(const sg_rate *r) {
    return r->adaptive ? sg_adaptive_interval(r->adaptive, r->interval_ns, r->interval_max_ns) : r->interval_ns;
}

static inline uint64_t interval_of(double rate, const sg_adaptive *a) {
    double t = 1e9 / rate;
    return t <= (double)a->interval_min_ns ? a->interval_min_ns
         : t >= (double)a->interval_max_ns ? a->interval_max_ns
         : (uint64_t)t;
}

uint64_t sg_adaptive_feedback(uint64_t *w, const sg_adaptive *a, int ok, uint64_t now) {
    if (!ok) { /* one cut per cooldown, host-wide: claim it on w[1] first */
        uint64_t last = sg_load(&w[1]);
        for (;;) {
            if (last && (now < last || now - last < a->cooldown_ns))
                return sg_adaptive_interval(&w[0], a->interval_min_ns, a->interval_max_ns);
            if (sg_cas(&w[1], &last, now ? now : 1)) break;
        }
    }
    for (int attempt = 0; attempt < 100000; attempt++) {
        uint64_t old = sg_load(&w[0]);
        double rate = 1e9 / (double)sg_adaptive_interval(&old, a->interval_min_ns, a->interval_max_ns);
        uint64_t next = interval_of(ok ? rate + a->increase / rate : rate * a->decrease, a);
        if (next == old || sg_cas(&w[0], &old, next)) return next;
    }
    return sg_adaptive_interval(&w[0], a->interval_min_ns, a->interval_max_ns);
}

/* tau, the bucket's depth in ns, is limit intervals at the fastest rate: an adaptive
 * bucket holds the same time whatever its rate, so fewer calls at a slower one, and a
 * cut never frees calls (a key's debt is time, and the time it may owe stays).  The
 * rate's validation keeps one call admissible at the slowest (limit * interval_ns >=
 * interval_max_ns). */
static uint64_t gcra_step(const sg_rate *r, uint64_t tat, uint64_t cost, uint64_t now, int consume,
                          sg_decision *d) {
    uint64_t T = gcra_interval(r), tau = r->limit * r->interval_ns;
    uint64_t used = gcra_owed(tat, now); /* time already owed */
    if (used > tau) used = tau; /* garbage payloads: clamp instead of wrapping */
    d->limit = r->limit;
    /* never admitted (at this rate); cost <= limit first keeps cost * T from overflowing */
    if (cost > r->limit || cost * T > tau) {
        d->allowed = 0;
        d->remaining = (tau - used) / T;
        d->retry_after_ns = UINT64_MAX;
        d->reset_after_ns = used;
        return tat;
    }
    if (!consume) {
        uint64_t avail = (tau - used) / T;
        d->allowed = avail >= cost;
        d->remaining = avail;
        d->retry_after_ns = d->allowed ? 0 : used + cost * T - tau;
        d->reset_after_ns = used;
        return tat;
    }
    uint64_t need = used + cost * T;
    if (need > tau) {
        d->allowed = 0;
        d->remaining = (tau - used) / T;
        d->retry_after_ns = need - tau;
        d->reset_after_ns = used;
        return tat;
    }
    d->allowed = 1;
    d->remaining = (tau - need) / T;
    d->retry_after_ns = 0;
    d->reset_after_ns = need;
    return gcra_tat(now, need);
}

#define FX_IDX(p) ((p) >> 32)
#define FX_CNT(p) ((p)&0xffffffffULL)

/* A payload's window may be later than now's: another process wrote it after we
 * read the clock (clocks of two processes differ by tens of ns; a batch's time is
 * as old as the batch).  One or two windows later, the decision joins the
 * payload's window (*t moves to its start): decided as is, it would roll the key
 * back a window and hand that window's budget out twice.  Further ahead it is
 * either a stale `now` (the step reports *ahead: a caller that reads its own clock
 * re-reads it) or an idle key's index that wrapped, which starts afresh.  Window
 * indexes are kept modulo 2^24 (fixed) or 2^16 (sliding); "later" is the lower
 * half.  A fresh payload (0) has no window at all. */
static inline uint64_t window_of(uint64_t P, uint64_t now, uint64_t p, uint64_t pidx, uint64_t mask, uint64_t *t,
                                 int *ahead) {
    uint64_t w = now / P, a = (pidx - w) & mask;
    if (p == 0 || a == 0 || a > mask / 2) return w;
    if (a <= 2) {
        *t = (w + a) * P;
        return w + a;
    }
    *ahead = 1;
    return w;
}

static uint64_t fixed_step(const sg_rate *r, uint64_t p, uint64_t cost, uint64_t *at, int consume,
                           sg_decision *d, int *ahead) {
    uint64_t w = window_of(r->period_ns, *at, p, FX_IDX(p), 0xffffff, at, ahead), widx = w & 0xffffff, now = *at;
    uint64_t cnt = FX_IDX(p) == widx ? FX_CNT(p) : 0;
    uint64_t left = cnt < r->limit ? r->limit - cnt : 0;
    uint64_t to_end = (w + 1) * r->period_ns - now;
    d->limit = r->limit;
    d->allowed = cost <= left;
    d->retry_after_ns = d->allowed ? 0 : to_end;
    d->reset_after_ns = cnt ? to_end : 0;
    if (!consume || !d->allowed) {
        d->remaining = left;
        return p;
    }
    d->remaining = left - cost;
    d->reset_after_ns = to_end;
    return (widx << 32) | (cnt + cost);
}

#define SL_IDX(p) ((p) >> 40)
#define SL_PREV(p) (((p) >> 20) & 0xfffff)
#define SL_CUR(p) ((p)&0xfffff)

static void sliding_counts(const sg_rate *r, uint64_t p, uint64_t now, uint64_t *prev, uint64_t *cur) {
    uint64_t w = now / r->period_ns, widx = w & 0xffff, sidx = SL_IDX(p);
    if (sidx == widx) {
        *prev = SL_PREV(p);
        *cur = SL_CUR(p);
    } else if (sidx == ((w - 1) & 0xffff)) {
        *prev = SL_CUR(p);
        *cur = 0;
    } else {
        *prev = *cur = 0;
    }
}

/* Wait until prev*(P-e)/P + cur + cost <= L, for the sliding estimate. */
static uint64_t sliding_wait(uint64_t L, uint64_t P, uint64_t elapsed, uint64_t prev, uint64_t cur, uint64_t cost) {
    if (cur + cost <= L) { /* prev's weight must fall far enough within this window */
        u128 room = (u128)(L - cur - cost) * P;
        uint64_t e = prev ? P - (uint64_t)(room / prev) : 0; /* smallest e with prev*(P-e) <= room */
        if (prev && (u128)prev * (P - e) > room) e++;
        return e > elapsed ? e - elapsed : 0;
    }
    /* next window: cur becomes prev */
    uint64_t e2 = 0;
    if (cur && cost <= L) {
        u128 room = (u128)(L - cost) * P;
        uint64_t q = (uint64_t)(room / cur);
        e2 = q >= P ? 0 : P - q;
        if ((u128)cur * (P - e2) > room) e2++;
    }
    return (P - elapsed) + e2;
}

static uint64_t sliding_step(const sg_rate *r, uint64_t p, uint64_t cost, uint64_t *at, int consume,
                             sg_decision *d, int *ahead) {
    uint64_t P = r->period_ns, L = r->limit, w = window_of(P, *at, p, SL_IDX(p), 0xffff, at, ahead), now = *at;
    uint64_t elapsed = now - w * P, prev, cur;
    sliding_counts(r, p, now, &prev, &cur);
    /* estimate*P = prev*(P-elapsed) + cur*P, compared exactly in 128 bits */
    u128 used = (u128)prev * (P - elapsed) + (u128)cur * P;
    u128 cap = (u128)L * P;
    u128 after = used + (u128)cost * P;
    d->limit = L;
    d->allowed = after <= cap;
    d->retry_after_ns = d->allowed ? 0 : sliding_wait(L, P, elapsed, prev, cur, cost);
    u128 rem = consume && d->allowed ? cap - after : (used < cap ? cap - used : 0);
    d->remaining = (uint64_t)(rem / P);
    uint64_t c2 = consume && d->allowed ? cur + cost : cur;
    d->reset_after_ns = c2 ? (P - elapsed) + P : (prev ? P - elapsed : 0);
    if (!consume || !d->allowed) return p;
    return ((w & 0xffff) << 40) | (prev << 20) | c2;
}

/* *ahead: the payload is from a later window than now's (see window_of).  GCRA
 * needs no such care: a stale now only makes it stricter.
 * *at: in, the time to decide at; out, the time decided at (moved to the start of
 * the payload's window when it joined that window), which a refund must use. */
static uint64_t step(const sg_rate *r, uint64_t p, uint64_t cost, uint64_t *at, int consume, sg_decision *d,
                     int *ahead) {
    switch (r->algo) {
    case SG_ALGO_FIXED: return fixed_step(r, p, cost, at, consume, d, ahead);
    case SG_ALGO_SLIDING: return sliding_step(r, p, cost, at, consume, d, ahead);
    default: return gcra_step(r, p, cost, *at, consume, d);
    }
}

/* ---- the algorithm table: one row per algorithm ------------------------------ */

/* A refund gives back only to the window of now: a refund cannot tell a call charged
 * in a window it joined early (window_of's rule) from one charged in the window
 * before, which another process has since replaced; giving back to the later window
 * would then admit more than its limit.  Callers pass the time step decided at. */
static uint64_t gcra_refund(const sg_rate *r, uint64_t p, uint64_t cost, uint64_t now) {
    uint64_t back = cost > r->limit ? UINT64_MAX : cost * gcra_interval(r), owed = gcra_owed(p, now);
    return gcra_tat(now, owed > back ? owed - back : 0);
}

static uint64_t fixed_refund(const sg_rate *r, uint64_t p, uint64_t cost, uint64_t now) {
    if (FX_IDX(p) != ((now / r->period_ns) & 0xffffff)) return p;
    return p - (FX_CNT(p) < cost ? FX_CNT(p) : cost);
}

static uint64_t sliding_refund(const sg_rate *r, uint64_t p, uint64_t cost, uint64_t now) {
    if (SL_IDX(p) != ((now / r->period_ns) & 0xffff)) return p;
    return p - (SL_CUR(p) < cost ? SL_CUR(p) : cost);
}

/* Idle tests: total over garbage payloads and params (a corrupted file). */
static int gcra_idle(uint64_t param, uint64_t payload, uint64_t now) {
    (void)param;
    return gcra_owed(payload, now) == 0;
}

/* A window key is idle when it has no count in now's window (nor, sliding, the one
 * before); a window a little later than now's is live (written after our clock read). */
static int window_idle(uint32_t algo, uint64_t param, uint64_t payload, uint64_t now) {
    if (param == 0 || param > (1ULL << 40)) return payload == 0; /* garbage: only a fresh word */
    if (payload == 0) return 1; /* fresh: no window at all (see window_of) */
    sg_rate r = {.algo = algo, .limit = 1, .period_ns = param * 1000000ULL};
    uint64_t prev = 0, cur, w = now / r.period_ns;
    uint64_t pidx = algo == SG_ALGO_FIXED ? FX_IDX(payload) : SL_IDX(payload);
    uint64_t a = (pidx - w) & (algo == SG_ALGO_FIXED ? 0xffffff : 0xffff);
    if (a == 1 || a == 2) return 0;
    if (algo == SG_ALGO_FIXED)
        cur = FX_IDX(payload) == (w & 0xffffff) ? FX_CNT(payload) : 0;
    else
        sliding_counts(&r, payload, now, &prev, &cur);
    return prev == 0 && cur == 0;
}
static int fixed_idle(uint64_t param, uint64_t payload, uint64_t now) {
    return window_idle(SG_ALGO_FIXED, param, payload, now);
}
static int sliding_idle(uint64_t param, uint64_t payload, uint64_t now) {
    return window_idle(SG_ALGO_SLIDING, param, payload, now);
}

static int gcra_validate(const sg_rate *r) {
    uint64_t longest = r->adaptive ? r->interval_max_ns : r->interval_ns;
    if (r->limit == 0 || r->interval_ns == 0 || longest < r->interval_ns) return SG_ERR_ARG;
    if (r->limit > SG_GCRA_MAX_TAU / longest) return SG_ERR_ARG;
    if (r->limit * r->interval_ns < longest) return SG_ERR_ARG; /* one call at the slowest rate */
    return SG_OK;
}

static int window_validate(const sg_rate *r, uint64_t max_limit) {
    if (r->limit == 0 || r->period_ns == 0 || r->period_ns % 1000000ULL) return SG_ERR_ARG;
    if (r->period_ns / 1000000ULL >= (1ULL << 40) || r->limit > max_limit) return SG_ERR_ARG;
    return SG_OK;
}
static int fixed_validate(const sg_rate *r) { return window_validate(r, SG_FIXED_MAX_LIMIT); }
static int sliding_validate(const sg_rate *r) { return window_validate(r, SG_SLIDING_MAX_LIMIT); }

/* What a key's slot records for the idle test: a window's period in ms. */
static uint64_t no_param(const sg_rate *r) {
    (void)r;
    return 0;
}
static uint64_t period_ms(const sg_rate *r) { return r->period_ns / 1000000ULL; }

/* The decision itself (step) is not a column: it is the hot path, and the switch in
 * step() lets the compiler inline it; a call through the table could not be. */
typedef struct {
    uint64_t (*refund)(const sg_rate *r, uint64_t p, uint64_t cost, uint64_t now);
    int (*idle)(uint64_t param, uint64_t payload, uint64_t now);
    int (*validate)(const sg_rate *r);
    uint64_t (*param)(const sg_rate *r);
} sg_algo_row;

static const sg_algo_row ALGOS[SG_ALGO_COUNT] = {
    [SG_ALGO_GCRA] = {gcra_refund, gcra_idle, gcra_validate, no_param},
    [SG_ALGO_FIXED] = {fixed_refund, fixed_idle, fixed_validate, period_ms},
    [SG_ALGO_SLIDING] = {sliding_refund, sliding_idle, sliding_validate, period_ms},
};

static inline const sg_algo_row *algo_row(uint32_t algo) {
    return algo < SG_ALGO_COUNT && ALGOS[algo].idle ? &ALGOS[algo] : NULL;
}

int sg_algo_idle(uint32_t algo, uint64_t param, uint64_t payload, uint64_t now) {
    const sg_algo_row *a = algo_row(algo);
    return a ? a->idle(param, payload, now) : 0;
}

/* The table judges idle slots through this, so that it knows no algorithm. */
__attribute__((constructor)) static void register_idle_test(void) { sg_table_set_idle(sg_algo_idle); }

int sg_rate_validate(const sg_rate *r) {
    const sg_algo_row *a = algo_row(r->algo);
    return a ? a->validate(r) : SG_ERR_ARG;
}

/* rates reaching these were validated (sg_rate_validate) */
static inline uint64_t refund_step(const sg_rate *r, uint64_t p, uint64_t cost, uint64_t now) {
    return ALGOS[r->algo].refund(r, p, cost, now);
}

static inline uint64_t rate_param(const sg_rate *r) { return ALGOS[r->algo].param(r); }

/* CAS loop on the key's tagged word; fn computes the new payload.
 * *now == 0: the clock is read after the word is loaded (and again after a lost
 * CAS), so no decision uses a time older than the state it overwrites; a process
 * that stalls between its clock read and its CAS loses the CAS.  *now then keeps
 * the time used.  A given *now (tests, batches) is used as is, except that a
 * batch (refresh) re-reads it when a window turns out to be later than it. */
#define SG_RETRIES 100000

/* tests/c/interleave_table.c runs "another process" at this point (built with
 * -DSG_AFTER_LOOKUP=its hook); sg_table_get lookups it wraps directly. */
#ifdef SG_AFTER_LOOKUP
void SG_AFTER_LOOKUP(uint64_t idx, uint8_t tag);
#else
#define SG_AFTER_LOOKUP(idx, tag) ((void)0)
#endif

/* *at (may be NULL): set to the time the decision was made at (see step). */
static int apply1(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t cost, uint64_t *now, int refresh,
                  int consume, sg_decision *out, uint64_t *at) {
    uint64_t tt;
    int self = *now == 0, rereads = 0;
    uint8_t htag = sg_home_tag(t, h);
    if (htag) { /* the key is at home: one try without the general lookup */
        SG_AFTER_LOOKUP(h.a & t->mask, htag);
        uint64_t *w = &t->slots[h.a & t->mask].v[0];
        uint64_t v = sg_load(w);
        if (SG_TAG(v) == htag && sg_slot_current(t, h.a & t->mask, htag)) {
            int ahead = 0;
            if (self) *now = sg_store_fast_now(t);
            tt = *now;
            uint64_t np = step(r, SG_PAYLOAD(v), cost, &tt, consume, out, &ahead);
            if (!ahead && (!consume || !out->allowed || sg_cas(w, &v, SG_TAGGED(htag, np)))) goto done;
        }
    }
    for (int attempt = 0; attempt < SG_RETRIES; attempt++) {
        uint64_t idx;
        uint8_t tag;
        int ahead = 0;
        /* a batch's instant can be older than other keys' last decisions: idle tests
           for reuse read the clock themselves */
        int rc = sg_table_get(t, h, SG_SLOT_RECLAIMABLE, r->algo, rate_param(r), self || refresh ? 0 : *now,
                              consume, &idx, &tag);
        if (rc == SG_NOTFOUND) {
            if (self) *now = sg_store_fast_now(t);
            tt = *now;
            step(r, 0, cost, &tt, 0, out, &ahead);
            goto done;
        }
        if (rc != SG_OK) return rc;
        uint64_t *w = &t->slots[idx].v[0];
        uint64_t v = sg_load(w);
        while (SG_TAG(v) == tag && sg_slot_current(t, idx, tag)) {
            if (self) *now = sg_store_fast_now(t);
            tt = *now;
            uint64_t np = step(r, SG_PAYLOAD(v), cost, &tt, consume, out, &ahead);
            if (ahead && (self || refresh) && rereads++ < 3) { /* a stale time: read it again */
                if (!self) *now = sg_store_fast_now(t);
                ahead = 0;
                v = sg_load(w);
                continue;
            }
            if (!consume || !out->allowed) goto done;
            if (sg_cas(w, &v, SG_TAGGED(tag, np))) goto done;
        }
    }
    return SG_ERR_FULL;
done:
    if (at) *at = tt;
    if (consume && (self || refresh)) sg_store_mark_lazy(t, *now); /* a real store time reached */
    return SG_OK;
}

int sg_rate_apply(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t cost, uint64_t now, int consume,
                  sg_decision *out) {
    return apply1(t, h, r, cost, &now, 0, consume, out, NULL);
}

int sg_rate_refund(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t cost, uint64_t now) {
    uint64_t idx;
    uint8_t tag;
    int rc = sg_table_get(t, h, SG_SLOT_RECLAIMABLE, r->algo, rate_param(r), now, 0, &idx, &tag);
    if (rc != SG_OK) return rc == SG_NOTFOUND ? SG_OK : rc;
    uint64_t *w = &t->slots[idx].v[0];
    uint64_t v = sg_load(w);
    int self = now == 0;
    while (SG_TAG(v) == tag && sg_slot_current(t, idx, tag)) {
        if (self) now = sg_store_fast_now(t);
        if (sg_cas(w, &v, SG_TAGGED(tag, refund_step(r, SG_PAYLOAD(v), cost, now)))) break;
    }
    return SG_OK;
}

int sg_rate_reset(sg_table *t, sg_hash128 h, const sg_rate *r, uint64_t now) {
    uint64_t idx;
    uint8_t tag;
    int rc = sg_table_get(t, h, SG_SLOT_RECLAIMABLE, r->algo, rate_param(r), now, 0, &idx, &tag);
    if (rc != SG_OK) return rc == SG_NOTFOUND ? SG_OK : rc;
    uint64_t *w = &t->slots[idx].v[0];
    uint64_t v = sg_load(w);
    while (SG_TAG(v) == tag && sg_slot_current(t, idx, tag) && !sg_cas(w, &v, SG_TAGGED(tag, 0))) {
    }
    return SG_OK;
}

int sg_rates_apply(sg_table *t, const sg_hash128 *hs, const sg_rate *rs, int n, uint64_t cost, uint64_t now,
                   int consume, sg_decision *out) {
    sg_decision d;
    uint64_t used[64]; /* the time each rate was decided at, for its refund (n <= 64) */
    int have = 0;
    if (n > 64) return SG_ERR_ARG;
    for (int i = 0; i < n; i++) {
        uint64_t tnow = now;
        int rc = apply1(t, hs[i], &rs[i], cost, &tnow, 0, consume, &d, &used[i]);
        if (rc == SG_OK && d.allowed) {
            if (!have || d.remaining < out->remaining ||
                (d.remaining == out->remaining && d.reset_after_ns > out->reset_after_ns))
                *out = d;
            have = 1;
            continue;
        }
        if (consume)
            for (int j = 0; j < i; j++) sg_rate_refund(t, hs[j], &rs[j], cost, used[j]);
        if (rc != SG_OK) return rc;
        *out = d;
        /* a peek reports the longest wait among the denying rates */
        if (!consume) {
            for (int j = i + 1; j < n; j++) {
                sg_decision e;
                if (sg_rate_apply(t, hs[j], &rs[j], cost, now, 0, &e) == SG_OK && !e.allowed &&
                    e.retry_after_ns > out->retry_after_ns)
                    *out = e;
            }
        }
        return SG_OK;
    }
    return SG_OK;
}


/* A run of m consecutive decisions for one key at one instant: the steps are
 * computed one after another on a private copy of the payload and published with
 * ONE CAS, so the run is linearisable as a block and decides exactly like m
 * sequential calls.  On a lost CAS the whole run is recomputed. */
static int apply_run(sg_table *t, sg_hash128 h, const sg_rate *r, size_t m, uint64_t cost, uint64_t *now,
                     int refresh, uint8_t *allowed) {
    sg_decision d;
    int rereads = 0;
    for (int attempt = 0; attempt < SG_RETRIES; attempt++) {
        uint64_t idx;
        uint8_t tag;
        int rc = sg_table_get(t, h, SG_SLOT_RECLAIMABLE, r->algo, rate_param(r), refresh ? 0 : *now, 1, &idx, &tag);
        if (rc != SG_OK) return rc;
        uint64_t *w = &t->slots[idx].v[0];
        uint64_t v = sg_load(w);
        while (SG_TAG(v) == tag && sg_slot_current(t, idx, tag)) {
            uint64_t p = SG_PAYLOAD(v);
            int any = 0, ahead = 0;
            for (size_t j = 0; j < m; j++) {
                uint64_t tt = *now;
                p = step(r, p, cost, &tt, 1, &d, &ahead);
                allowed[j] = (uint8_t)(d.allowed != 0);
                any |= d.allowed != 0;
            }
            if (ahead && refresh && rereads++ < 3) { /* the batch's time is stale: read it again */
                *now = sg_store_fast_now(t);
                v = sg_load(w);
                continue;
            }
            if (!any) return SG_OK; /* all denied: nothing to write */
            if (sg_cas(w, &v, SG_TAGGED(tag, p))) {
                if (refresh) sg_store_mark_lazy(t, *now);
                return SG_OK;
            }
        }
    }
    return SG_ERR_FULL;
}

#define SG_PREFETCH_AHEAD 8

int sg_rates_apply_many(sg_table *t, const sg_hash128 *hs, size_t nkeys, const sg_rate *rs, int nrates, uint64_t cost,
                        uint64_t now, uint8_t *allowed, size_t *done) {
    sg_decision d;
    size_t k = 0;
    int rc = SG_OK, refresh = now == 0;
    if (nrates == 1) {
        if (refresh) now = sg_store_fast_now(t);
        while (k < nkeys) {
            size_t m = 1;
            while (k + m < nkeys && hs[k + m].a == hs[k].a && hs[k + m].b == hs[k].b) m++;
            if (k + m + SG_PREFETCH_AHEAD < nkeys) { /* hide the slot's cache miss for keys further on */
                uint64_t home = hs[k + m + SG_PREFETCH_AHEAD].a & t->mask;
                __builtin_prefetch(&t->slots[home], 1);
                __builtin_prefetch(&t->plen[home], 0);
            }
            rc = m == 1 ? apply1(t, hs[k], rs, cost, &now, refresh, 1, &d, NULL)
                        : apply_run(t, hs[k], rs, m, cost, &now, refresh, allowed + k);
            if (rc != SG_OK) break;
            if (m == 1) allowed[k] = (uint8_t)(d.allowed != 0);
            k += m;
        }
    } else {
        for (; k < nkeys; k++) {
            rc = sg_rates_apply(t, hs + k * (size_t)nrates, rs, nrates, cost, now, 1, &d);
            if (rc != SG_OK) break;
            allowed[k] = (uint8_t)(d.allowed != 0);
        }
    }
    *done = k;
    return rc;
}

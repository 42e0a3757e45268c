/* Shared circuit breaker state machine (see sg_breaker.h for the word layout).
 *
 * Invariants that make it lock-free and crash-safe:
 *  - every change of state, generation, probe permits or consecutive-open count
 *    is one CAS on the state word S; a transition always bumps the generation;
 *  - the phase word (start time of the current state) is tagged with the
 *    generation it belongs to; the transitioner writes it right after its CAS,
 *    and any reader that finds it missing (the transitioner died in between)
 *    writes it itself, so it is never torn or stuck;
 *  - results are recorded only for the generation a call was admitted in, and a
 *    bucket word is rolled over (new epoch or generation) by CAS from the value
 *    read, so stale buckets are simply treated as empty; a bucket's full epoch
 *    rises, and a result older than it is dropped, except that a store-clock
 *    reader takes back a bucket a window or more ahead of the store clock, which
 *    no store-clock reading since can have written (see "rolling buckets");
 *  - probe permits live in S; a half-open round whose permits are all taken and
 *    that has not finished within probe_timeout is restarted (new generation),
 *    which is how a probe held by a killed process is released; taking the
 *    round's first permit (or one past its deadline) also restarts it, so that
 *    the deadline counts from a probe and not from when half_open began.
 */
#define _GNU_SOURCE /* CLOCK_MONOTONIC_COARSE */
#include <time.h>

#include "sg_breaker.h"

__extension__ typedef unsigned __int128 u128;

#define MS 1000000ULL
#define M24 0xffffffULL
#define M40 ((1ULL << 40) - 1)
#define BK_MAX_COUNT ((1ULL << 28) - 1)

#define INC_ISSUED (1ULL << 27)
#define INC_SUCC (1ULL << 35)

static inline uint64_t mk(unsigned st, uint64_t gen, unsigned issued, unsigned succ, unsigned consec) {
    return (uint64_t)(st & 7) | ((gen & M24) << 3) | ((uint64_t)(issued & 0xff) << 27) |
           ((uint64_t)(succ & 0xff) << 35) | ((uint64_t)(consec & 0xff) << 43);
}

static inline unsigned state_of(uint64_t s) {
    unsigned st = SG_BR_STATE(s);
    return st > SG_BR_DISABLED ? SG_BR_CLOSED : st; /* garbage from a corrupted file */
}

static inline uint64_t get_now(sg_breaker *b, uint64_t *now) {
    if (!*now) *now = sg_store_now(b->t);
    return *now;
}

/* Store time from the coarse monotonic clock (same timebase, lags by at most one
 * tick, ~4 ms; about 5 ns instead of 25).  Used only to pick the bucket a result
 * is recorded in on the hot exit path; every transition uses the precise clock. */
static inline uint64_t coarse_now(sg_breaker *b) {
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0) {
        int64_t t = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - b->t->base_mono;
        if (t > 0) return (uint64_t)t;
    }
#endif
    return sg_store_now(b->t);
}

static inline uint64_t draw(uint64_t *rng) { /* xorshift64, upper 32 bits */
    uint64_t x = *rng ? *rng : 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *rng = x;
    return x >> 32;
}

uint64_t sg_br_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

int sg_br_validate(const sg_br_config *c) {
    if (c->nbuckets < 1 || c->nbuckets > SG_BR_MAX_BUCKETS) return SG_ERR_ARG;
    if (c->bucket_ns < 1000) return SG_ERR_ARG;
    if (c->minimum_calls < 1) return SG_ERR_ARG;
    if (c->failure_rate_ppm > 1000000 || c->slow_rate_ppm > 1000000) return SG_ERR_ARG;
    if (c->reset_ns < 1 || c->reset_ns > c->max_reset_ns || c->max_reset_ns > (1ULL << 53)) return SG_ERR_ARG;
    if (c->backoff_milli < 1000 || c->backoff_milli > 100000) return SG_ERR_ARG;
    if (c->jitter_ppm >= 1000000) return SG_ERR_ARG;
    if (c->half_open_calls < 1 || c->half_open_calls > 255) return SG_ERR_ARG;
    if (c->probe_timeout_ns < 1 || c->probe_timeout_ns > (1ULL << 53)) return SG_ERR_ARG;
    if (c->nlevels > SG_BR_MAX_LEVELS) return SG_ERR_ARG;
    if (c->nlevels && (c->level_ns < 1 || c->level_ns > (1ULL << 53))) return SG_ERR_ARG;
    for (uint32_t i = 0; i < c->nlevels; i++)
        if (c->level_p32[i] > SG_BR_P32_ONE) return SG_ERR_ARG;
    if (c->adaptive_max_p32 > SG_BR_P32_ONE || c->adaptive_k_milli > 1000000) return SG_ERR_ARG;
    if (c->degrade_ppm) {
        if (c->degrade_ppm >= 1000000 || c->recover_ppm > c->degrade_ppm) return SG_ERR_ARG;
        if (c->failure_rate_ppm && c->degrade_ppm >= c->failure_rate_ppm) return SG_ERR_ARG;
        if (c->sev_n < 1 || c->sev_n > SG_BR_MAX_LEVELS) return SG_ERR_ARG;
        for (uint32_t i = 0; i < c->sev_n; i++)
            if (c->sev_p32[i] > SG_BR_P32_ONE) return SG_ERR_ARG;
    }
    return SG_OK;
}

uint64_t sg_br_open_ns(const sg_br_config *c, unsigned consec, uint64_t gen) {
    u128 d = c->reset_ns;
    if (c->backoff_milli > 1000) {
        for (unsigned i = 1; i < consec; i++) {
            d = d * c->backoff_milli / 1000;
            if (d >= c->max_reset_ns) break;
        }
    }
    if (d > c->max_reset_ns) d = c->max_reset_ns;
    uint64_t r = (uint64_t)d;
    if (c->jitter_ppm) {
        uint64_t j = (uint64_t)((u128)r * c->jitter_ppm / 1000000);
        uint64_t x = sg_br_mix(c->seed ^ (gen & M24));
        r = r - j + x % (2 * j + 1);
    }
    return r;
}

/* ---- phase word: start (ms) of the state in generation gen ------------------- */

static inline int gen_newer(uint64_t a, uint64_t b) { /* a strictly newer than b (24-bit, modular) */
    uint64_t d = (a - b) & M24;
    return d != 0 && d < (1ULL << 23);
}

/* Record that generation gen started at now (unless a newer phase is already there). */
static void phase_write(sg_breaker *b, uint64_t gen, uint64_t now) {
    uint64_t v = sg_load(&b->st[1]);
    uint64_t nv = ((gen & M24) << 40) | ((now / MS) & M40);
    for (;;) {
        uint64_t vg = v >> 40;
        if (vg == (gen & M24) || gen_newer(vg, gen)) return;
        if (sg_cas(&b->st[1], &v, nv)) return;
    }
}

static uint64_t phase_ms(sg_breaker *b, uint64_t s, uint64_t *now) {
    uint64_t g = SG_BR_GEN(s);
    uint64_t v = sg_load(&b->st[1]);
    for (;;) {
        uint64_t vg = v >> 40;
        if (vg == g) return v & M40;
        if (gen_newer(vg, g) || SG_BR_GEN(sg_load(&b->st[0])) != g) return get_now(b, now) / MS; /* s is stale */
        /* the transitioner died before writing it: the first reader does */
        uint64_t nv = (g << 40) | ((get_now(b, now) / MS) & M40);
        if (sg_cas(&b->st[1], &v, nv)) return nv & M40;
    }
}

uint64_t sg_br_phase_ns(sg_breaker *b, uint64_t s, uint64_t now) { return phase_ms(b, s, &now) * MS; }

/* CAS S from *s to ns; on success record the phase and count a state change. */
static int transition(sg_breaker *b, uint64_t *s, uint64_t ns, uint64_t *now) {
    uint64_t old = *s;
    get_now(b, now);
    if (!sg_cas(&b->st[0], s, ns)) return 0;
    phase_write(b, SG_BR_GEN(ns), *now);
    if (state_of(old) != state_of(ns)) sg_add(&b->st[2], 1);
    return 1;
}

/* ---- lazy time transitions ------------------------------------------------ */

static uint64_t poll(sg_breaker *b, uint64_t *now) {
    const sg_br_config *c = &b->c;
    uint64_t s = sg_load(&b->st[0]);
    for (;;) {
        unsigned st = state_of(s);
        uint64_t g = SG_BR_GEN(s), ns;
        if (st == SG_BR_OPEN) {
            uint64_t until = phase_ms(b, s, now) * MS + sg_br_open_ns(c, SG_BR_CONSEC(s), g);
            if (get_now(b, now) < until) return s;
            ns = mk(SG_BR_HALF_OPEN, g + 1, 0, 0, SG_BR_CONSEC(s));
        } else if (st == SG_BR_HALF_OPEN) {
            if (SG_BR_ISSUED(s) < c->half_open_calls) return s;
            if (get_now(b, now) < phase_ms(b, s, now) * MS + c->probe_timeout_ns) return s;
            ns = mk(SG_BR_HALF_OPEN, g + 1, 0, 0, SG_BR_CONSEC(s)); /* restart the round */
        } else if (st == SG_BR_DEGRADED) {
            if (SG_BR_SUCC(s)) return s; /* degraded by severity: left by results, not by time */
            if (get_now(b, now) < phase_ms(b, s, now) * MS + (uint64_t)c->nlevels * c->level_ns) return s;
            ns = mk(SG_BR_CLOSED, g + 1, 0, 0, 0);
        } else {
            return s;
        }
        if (transition(b, &s, ns, now)) s = ns; /* else s was reloaded by the CAS */
    }
}

uint64_t sg_br_poll(sg_breaker *b, uint64_t now) { return poll(b, &now); }

/* ---- rolling buckets ------------------------------------------------------- */

/* Bucket i holds the epochs e (= time / bucket_ns) with e % nbuckets == i.  Its four
 * words carry only the low 24 bits of their epoch; ep[i] = (newest epoch written to
 * bucket i) + 1 carries it in full.  A word counts only while its 24-bit epoch is
 * ep[i]'s and ep[i] is within the window, so:
 *  - a result for an epoch older than ep[i]'s is at least a window late, hence
 *    dropped: a writer that read its clock, then stalled a window, cannot roll a
 *    newer bucket back to its epoch (every roll-over re-checks ep[i] first);
 *  - an idle gap of any length leaves ep[i] out of the window: stale;
 *  - ep[i] is moved only after zeroing the words that count for an epoch other than
 *    its current one (bk_clean), so a word the new epoch does not write (failures,
 *    slow, rejected) cannot pass for the new epoch's because their 24-bit epochs alias.
 * ep[i] only rises, with one exception: the store clock can go back (time namespaces;
 * a reboot with the wall clock behind, before sg_store_mark existed), and then every
 * bucket holds a newer epoch, so every result would be late and the breaker blind
 * until the clock caught up.  An ep[i] a window or more ahead of a store-clock reading
 * taken after loading it was not written by a store-clock reading since (a writer
 * reads its clock before raising ep[i]), but by a clock that has since gone back (or
 * a caller's own clock), so a writer whose own time is a store-clock reading takes
 * such a bucket back, by the same clean-then-CAS as a raise.  Callers that pass their
 * own clock (tests, the reference model) never do: their times may run far ahead of
 * the store's.  window_sums already ignores the epochs left ahead.  (A taker stalled
 * between that clock read and its CAS for as long as the clock went back can find
 * the very same ep[i] there again, now current, and lower it: one bucket's counts.)
 * A store created before ep[] existed starts with ep[i] = 0: its buckets read as
 * stale, so one window of counts is lost once, at the upgrade. */

#define BK_GEN(v) ((v) >> 52)
#define BK_EPOCH(v) (((v) >> 28) & M24)
#define BK_COUNT(v) ((v)&BK_MAX_COUNT)
#define BK_GEN_BITS (0xfffULL << 52)

enum { BK_STALE = 0, BK_OK = 1, BK_LATE = 2 }; /* stale generation / recorded / dropped */

/* While ep[i] is still epv: zero the words of bucket i that count for another epoch
 * (tagged as epv's, so that writers in epv's epoch just add to them). */
static void bk_clean(sg_breaker *b, uint32_t i, uint64_t epv) {
    uint64_t e24 = (epv - 1) & M24;
    for (int k = 0; k < 4; k++) {
        uint64_t *w = &b->bk[i][k], v = sg_load(w);
        while (BK_COUNT(v) && BK_EPOCH(v) != e24) {
            if (sg_load(b->ep[i]) != epv) return; /* moved on: its mover cleans */
            if (sg_cas(w, &v, (v & BK_GEN_BITS) | (e24 << 28))) break;
        }
    }
}

/* Slow path of bk_claim: move ep[i] from v to e + 1.  rt: the caller's time if it is a
 * store-clock reading, else 0.  Whoever moves ep[i] on from v has cleaned for v just
 * before (a killed mover leaves it to the next one), so the words then count for v's
 * epoch or are zero; a stalled writer's roll-over then finds ep[i] moved (bk_add). */
static __attribute__((noinline)) int bk_raise(sg_breaker *b, uint32_t i, uint64_t e, uint64_t v, uint64_t rt) {
    uint64_t want = e + 1, nb = b->c.nbuckets;
    while (v != want) {
        /* newer: we are late, unless a clock that has since gone back wrote it (the
         * store clock is read after loading v, so a writer that stalled since reading
         * its clock never takes back the buckets written meanwhile) */
        if (v > want && (!rt || v - 1 < sg_store_now(b->t) / b->c.bucket_ns + nb)) return BK_LATE;
        if (v) bk_clean(b, i, v);
        /* if v's epoch has e's 24 bits (a gap of a multiple of 2^24 buckets, or v = 0:
         * never set, words from before ep[]), its words would pass for e's: step
         * through an epoch between them in the same bucket (other 24 bits), whose
         * clean zeroes them: e - nbuckets, or v's - nbuckets going back */
        uint64_t to = want;
        if (!v || (((v - 1) ^ e) & M24) == 0) {
            if (v > want) to = v - nb;
            else if (e >= nb) to = want - nb;
        }
        if (sg_cas(b->ep[i], &v, to)) v = to;
    }
    /* runs about once a bucket while the breaker is used: keeps the store's high-water
     * mark fresh in a store nothing else writes (one load unless a second has passed) */
    if (rt) sg_store_mark(b->t, rt);
    return BK_OK;
}

/* Make bucket i current for epoch e (rt as for bk_raise).  BK_LATE if it already
 * holds a newer epoch. */
static inline int bk_claim(sg_breaker *b, uint32_t i, uint64_t e, uint64_t rt) {
    uint64_t v = sg_load(b->ep[i]);
    if (__builtin_expect(v == e + 1, 1)) return BK_OK;
    return bk_raise(b, i, e, v, rt);
}

/* Add 1 to word k of bucket i (claimed for epoch e) for generation g. */
static int bk_add(sg_breaker *b, uint32_t i, int k, uint64_t g, uint64_t e) {
    uint64_t *w = &b->bk[i][k], g12 = g & 0xfff, e24 = e & M24;
    uint64_t fresh = (g12 << 52) | (e24 << 28) | 1;
    uint64_t v = sg_load(w);
    for (;;) {
        uint64_t nv;
        if (BK_GEN(v) == g12 && BK_EPOCH(v) == e24) {
            if (BK_COUNT(v) == BK_MAX_COUNT) return BK_OK;
            nv = v + 1;
        } else {
            /* an older generation's word, unless we are the stale one */
            if (BK_GEN(v) != g12 && SG_BR_GEN(sg_load(&b->st[0])) != g) return BK_STALE;
            /* roll over, unless another epoch took the bucket since our claim */
            if (sg_load(b->ep[i]) != e + 1) return BK_LATE;
            nv = fresh;
        }
        if (sg_cas(w, &v, nv)) return BK_OK;
    }
}

/* Returns the oldest epoch written that is a window or more ahead of now's (none of
 * those is summed: see should_trip), else 0. */
static uint64_t window_sums(sg_breaker *b, uint64_t g, uint64_t now, sg_br_window *out) {
    uint64_t acc[4] = {0, 0, 0, 0}, ep[SG_BR_MAX_BUCKETS];
    uint64_t g12 = g & 0xfff, e = now / b->c.bucket_ns, nb = b->c.nbuckets, top = e, far = 0;
    /* The window ends at the newest epoch written if that is less than a window
     * ahead of ours (another process read its clock after us, ours is the coarse
     * one, or we stalled since reading it); further ahead is not a clock we trust. */
    for (uint32_t i = 0; i < nb; i++) {
        ep[i] = sg_load(b->ep[i]);
        if (ep[i] && ep[i] - 1 > top && ep[i] - 1 - e < nb) top = ep[i] - 1;
        if (ep[i] && ep[i] - 1 >= e + nb && (!far || ep[i] - 1 < far)) far = ep[i] - 1;
    }
    for (uint32_t i = 0; i < nb; i++) {
        if (!ep[i] || top - (ep[i] - 1) >= nb) continue; /* stale, or too far ahead (wraps) */
        uint64_t e24 = (ep[i] - 1) & M24;
        for (int k = 0; k < 4; k++) {
            uint64_t v = sg_load(&b->bk[i][k]);
            if (BK_GEN(v) == g12 && BK_EPOCH(v) == e24) acc[k] += BK_COUNT(v);
        }
    }
    out->calls = acc[0];
    out->failures = acc[1];
    out->slow = acc[2];
    out->rejected = acc[3];
    return far;
}

void sg_br_window_sums(sg_breaker *b, uint64_t s, uint64_t now, sg_br_window *w) {
    (void)window_sums(b, SG_BR_GEN(s), get_now(b, &now), w);
}

/* ---- enter ----------------------------------------------------------------- */

uint64_t sg_br_enter(sg_breaker *b, uint64_t now, uint64_t *rng, sg_br_result *out) {
    const sg_br_config *c = &b->c;
    int real = now == 0; /* now will be a store-clock reading (see bk_raise) */
    uint64_t s = poll(b, &now), ticket, p;
    out->retry_ns = 0;
    out->reason = SG_BR_ADMIT;
    if (state_of(s) == SG_BR_DISABLED) { /* admin disable beats everything */
        out->s = s;
        return SG_BR_T_ADMITTED | SG_BR_GEN(s);
    }
    p = sg_load(&b->fault[0]);
    if (p && draw(rng) < p) {
        out->reason = SG_BR_REJ_INJECTED;
        goto reject;
    }
    for (;;) {
        uint64_t g = SG_BR_GEN(s);
        switch (state_of(s)) {
        case SG_BR_DISABLED:
            out->s = s;
            return SG_BR_T_ADMITTED | g;
        case SG_BR_OPEN: {
            uint64_t until = phase_ms(b, s, &now) * MS + sg_br_open_ns(c, SG_BR_CONSEC(s), g);
            out->retry_ns = until > get_now(b, &now) ? until - now : 0;
            out->reason = SG_BR_REJ_OPEN;
            goto reject;
        }
        case SG_BR_FORCED_OPEN:
            out->retry_ns = c->reset_ns;
            out->reason = SG_BR_REJ_FORCED;
            goto reject;
        case SG_BR_HALF_OPEN:
            if (SG_BR_ISSUED(s) == 0 ||
                (SG_BR_ISSUED(s) < c->half_open_calls &&
                 get_now(b, &now) >= phase_ms(b, s, &now) * MS + c->probe_timeout_ns)) {
                /* the round's first permit restarts it (new generation, phase = now):
                 * probe_timeout then counts from this probe, not from whenever the
                 * breaker turned half_open (a state read, or a permit given back).
                 * So does a permit taken after the round's deadline: the probes still
                 * out are older than probe_timeout, hence lost, and this one is new. */
                uint64_t ns = mk(SG_BR_HALF_OPEN, g + 1, 1, 0, SG_BR_CONSEC(s));
                if (transition(b, &s, ns, &now)) {
                    s = ns;
                    ticket = SG_BR_T_ADMITTED | SG_BR_T_PROBE | SG_BR_GEN(ns);
                    goto admitted;
                }
                s = poll(b, &now);
                continue;
            } else if (SG_BR_ISSUED(s) < c->half_open_calls) {
                uint64_t ns = s + INC_ISSUED;
                if (sg_cas(&b->st[0], &s, ns)) {
                    s = ns;
                    ticket = SG_BR_T_ADMITTED | SG_BR_T_PROBE | g;
                    goto admitted;
                }
                s = poll(b, &now);
                continue;
            } else {
                uint64_t end = phase_ms(b, s, &now) * MS + c->probe_timeout_ns;
                out->retry_ns = end > get_now(b, &now) ? end - now : 0;
                out->reason = SG_BR_REJ_HALF_OPEN;
                goto reject;
            }
        case SG_BR_DEGRADED: {
            if (SG_BR_SUCC(s)) { /* by severity: the level's fraction, judged again by each result */
                unsigned lv = SG_BR_SUCC(s) <= c->sev_n ? SG_BR_SUCC(s) : c->sev_n;
                if (draw(rng) < c->sev_p32[lv - 1]) {
                    ticket = SG_BR_T_ADMITTED | g;
                    goto admitted;
                }
                get_now(b, &now);
                out->retry_ns = c->bucket_ns - now % c->bucket_ns; /* the window moves then */
                out->reason = SG_BR_REJ_DEGRADED;
                goto reject;
            }
            uint64_t t0 = phase_ms(b, s, &now) * MS, el = get_now(b, &now) > t0 ? now - t0 : 0;
            uint64_t lvl = el / c->level_ns;
            if (lvl >= c->nlevels) lvl = c->nlevels ? c->nlevels - 1 : 0;
            if (c->nlevels && draw(rng) < c->level_p32[lvl]) {
                ticket = SG_BR_T_ADMITTED | g;
                goto admitted;
            }
            uint64_t end = t0 + (lvl + 1) * c->level_ns;
            out->retry_ns = end > now ? end - now : 0;
            out->reason = SG_BR_REJ_DEGRADED;
            goto reject;
        }
        default: /* closed */
            if (c->adaptive) {
                sg_br_window w;
                (void)window_sums(b, g, get_now(b, &now), &w);
                uint64_t n = w.calls + w.rejected, acc = w.calls - (w.failures < w.calls ? w.failures : w.calls);
                u128 num = (u128)n * 1000, kacc = (u128)acc * c->adaptive_k_milli;
                if (num > kacc) {
                    uint64_t pr = (uint64_t)(((num - kacc) << 32) / ((u128)(n + 1) * 1000));
                    if (pr > c->adaptive_max_p32) pr = c->adaptive_max_p32;
                    if (pr && draw(rng) < pr) {
                        uint64_t e = now / c->bucket_ns;
                        uint32_t i = (uint32_t)(e % c->nbuckets);
                        if (bk_claim(b, i, e, real ? now : 0) == BK_OK) bk_add(b, i, 3, g, e);
                        out->retry_ns = c->bucket_ns - now % c->bucket_ns;
                        out->reason = SG_BR_REJ_ADAPTIVE;
                        goto reject;
                    }
                }
            }
            ticket = SG_BR_T_ADMITTED | g;
            goto admitted;
        }
    }
admitted:
    p = sg_load(&b->fault[1]);
    if (p && draw(rng) < p) ticket |= SG_BR_T_INJECT_FAIL;
    p = sg_load(&b->fault[2]);
    if (p && draw(rng) < p) ticket |= SG_BR_T_INJECT_LATENCY;
    out->s = s;
    return ticket;
reject:
    sg_add(&b->stats[3], 1);
    out->s = s;
    return 0;
}

/* ---- exit ------------------------------------------------------------------ */

static int should_trip(sg_breaker *b, uint64_t g, uint64_t now, int failed) {
    const sg_br_config *c = &b->c;
    int rates = c->failure_rate_ppm || c->slow_rate_ppm;
    if (!rates && !(failed && c->failure_threshold)) return 0;
    sg_br_window w;
    uint64_t far = window_sums(b, g, now, &w);
    /* A result written a window or more after our clock, at a time the store clock
     * has reached (a bogus clock ahead of it takes one bucket and blinds nothing else),
     * means we read our clock that long ago (the process stalled): our result is in no
     * window now, though its bucket was idle and took it.  Judging the window that
     * ended at our clock would trip on expired counts. */
    if (far && far <= sg_store_now(b->t) / c->bucket_ns) return 0;
    if (failed && c->failure_threshold && w.failures >= c->failure_threshold) return 1;
    if (!rates || w.calls < c->minimum_calls) return 0;
    if (c->failure_rate_ppm && (u128)w.failures * 1000000 >= (u128)c->failure_rate_ppm * w.calls) return 1;
    if (c->slow_rate_ppm && (u128)w.slow * 1000000 >= (u128)c->slow_rate_ppm * w.calls) return 1;
    return 0;
}

/* The severity level the window says for a breaker at level cur (0: closed): 0 below
 * the degradation threshold (below recover_ppm once degraded), else 1 + how far the
 * failure rate is from the threshold to the trip rate, in sev_n equal steps.  Too few
 * calls to judge keep cur. */
static unsigned severity(const sg_br_config *c, const sg_br_window *w, unsigned cur) {
    if (w->calls < c->minimum_calls || w->calls == 0) return cur;
    uint64_t r = (uint64_t)(((u128)w->failures * 1000000) / w->calls); /* ppm, floor */
    if (r < (cur ? c->recover_ppm : c->degrade_ppm)) return 0;
    if (r < c->degrade_ppm) return 1; /* between recover and degrade: the lightest level */
    uint64_t top = c->failure_rate_ppm ? c->failure_rate_ppm : 1000000;
    uint64_t k = (uint64_t)(((u128)(r - c->degrade_ppm) * c->sev_n) / (top - c->degrade_ppm));
    return (unsigned)(k < c->sev_n ? k + 1 : c->sev_n);
}

/* After a result in closed or severity-degraded state that did not trip: move between
 * closed and the levels as the window says (same generation: the window goes on). */
static uint64_t judge_severity(sg_breaker *b, uint64_t s, uint64_t g, uint64_t at, uint64_t *now) {
    const sg_br_config *c = &b->c;
    for (;;) {
        unsigned st = state_of(s), cur = st == SG_BR_DEGRADED ? SG_BR_SUCC(s) : 0;
        if (SG_BR_GEN(s) != g || !(st == SG_BR_CLOSED || (st == SG_BR_DEGRADED && cur))) return s;
        sg_br_window w;
        (void)window_sums(b, g, at, &w);
        unsigned lv = severity(c, &w, cur);
        if (lv == cur) return s;
        if (cur && lv) { /* another level: the state stays, no phase change */
            uint64_t ns = mk(SG_BR_DEGRADED, g, 0, lv, SG_BR_CONSEC(s));
            if (sg_cas(&b->st[0], &s, ns)) return ns;
            continue;
        }
        uint64_t ns = lv ? mk(SG_BR_DEGRADED, g, 0, lv, SG_BR_CONSEC(s)) : mk(SG_BR_CLOSED, g, 0, 0, 0);
        if (transition(b, &s, ns, now)) return ns;
    }
}

/* real: now is 0 or a store-clock reading (not a caller's own clock) */
static uint64_t br_exit(sg_breaker *b, uint64_t ticket, int outcome, uint64_t duration_ns, uint64_t now, int real) {
    const sg_br_config *c = &b->c;
    if (!(ticket & SG_BR_T_ADMITTED)) return sg_load(&b->st[0]);
    uint64_t g = ticket & SG_BR_T_GEN_MASK;
    int failed = outcome == SG_BR_FAILURE, counted = outcome != SG_BR_IGNORE;
    int slow = counted && c->slow_ns && duration_ns >= c->slow_ns;
    if (counted) { /* totals count in every state, disabled included */
        sg_add(&b->stats[0], 1);
        if (failed) sg_add(&b->stats[1], 1);
        if (slow) sg_add(&b->stats[2], 1);
    }
    uint64_t s = sg_load(&b->st[0]);
    for (;;) {
        if (SG_BR_GEN(s) != g) return s; /* admitted before the last transition: discarded */
        unsigned st = state_of(s);
        uint64_t ns;
        if (st == SG_BR_HALF_OPEN) {
            if (!(ticket & SG_BR_T_PROBE)) return s;
            if (!counted) {
                if (!SG_BR_ISSUED(s)) return s;
                ns = s - INC_ISSUED; /* give the permit back */
            } else if (failed || slow) {
                ns = mk(SG_BR_OPEN, g + 1, 0, 0, SG_BR_CONSEC(s) < 255 ? SG_BR_CONSEC(s) + 1 : 255);
            } else if (SG_BR_SUCC(s) + 1 >= c->half_open_calls) {
                ns = c->nlevels ? mk(SG_BR_DEGRADED, g + 1, 0, 0, SG_BR_CONSEC(s)) : mk(SG_BR_CLOSED, g + 1, 0, 0, 0);
            } else {
                ns = s + INC_SUCC;
            }
            if (SG_BR_GEN(ns) == g) {
                if (sg_cas(&b->st[0], &s, ns)) return ns;
            } else if (transition(b, &s, ns, &now)) {
                return ns;
            }
            continue; /* s reloaded */
        }
        if (st == SG_BR_OPEN || st == SG_BR_FORCED_OPEN || !counted) return s;
        /* closed, degraded, disabled: record in the rolling window */
        /* the coarse clock lags by a tick (<= 10 ms): only use it when that is a small
         * fraction of a bucket, so a result never lands a whole bucket late */
        uint64_t at = now ? now : c->bucket_ns >= 100000000ULL ? coarse_now(b) : sg_store_now(b->t);
        uint64_t e = at / c->bucket_ns;
        uint32_t i = (uint32_t)(e % c->nbuckets);
        int r = bk_claim(b, i, e, real ? at : 0);
        if (r == BK_OK) r = bk_add(b, i, 0, g, e);
        if (r == BK_STALE) return sg_load(&b->st[0]);
        if (r == BK_LATE) return s; /* outside any window now: changes nothing */
        if (failed) bk_add(b, i, 1, g, e);
        if (slow) bk_add(b, i, 2, g, e);
        if (st == SG_BR_DISABLED) return s;
        if (!should_trip(b, g, at, failed))
            return c->degrade_ppm ? judge_severity(b, s, g, at, &now) : s;
        ns = mk(SG_BR_OPEN, g + 1, 0, 0, SG_BR_CONSEC(s) < 255 ? SG_BR_CONSEC(s) + 1 : 255);
        if (transition(b, &s, ns, &now)) return ns;
        return s; /* someone else moved it (gen changed): our trip is moot */
    }
}

uint64_t sg_br_exit(sg_breaker *b, uint64_t ticket, int outcome, uint64_t duration_ns, uint64_t now) {
    return br_exit(b, ticket, outcome, duration_ns, now, now == 0);
}

uint64_t sg_br_exit_real(sg_breaker *b, uint64_t ticket, int outcome, uint64_t duration_ns, uint64_t now) {
    return br_exit(b, ticket, outcome, duration_ns, now, 1);
}

/* ---- admin ------------------------------------------------------------------- */

uint64_t sg_br_set_state(sg_breaker *b, unsigned state, int clear, uint64_t now) {
    uint64_t s = sg_load(&b->st[0]);
    if (state > SG_BR_DISABLED) state = SG_BR_CLOSED;
    for (;;) {
        /* closing always starts a fresh window, even from closed */
        if (state_of(s) == state && !clear && state != SG_BR_CLOSED) return s;
        unsigned consec = state == SG_BR_CLOSED ? 0 : SG_BR_CONSEC(s);
        uint64_t ns = mk(state, SG_BR_GEN(s) + 1, 0, 0, consec);
        if (transition(b, &s, ns, &now)) {
            if (clear) {
                for (int k = 0; k < 4; k++) sg_store(&b->stats[k], 0);
                sg_store(&b->st[2], 0); /* transitions count "since creation or reset" too */
            }
            return ns;
        }
    }
}

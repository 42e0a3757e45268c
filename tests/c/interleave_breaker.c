/* Deterministic interleavings of the breaker's rolling buckets (review findings).
 *
 * This file includes csrc/sg_breaker.c so that it can run the steps of recording a
 * result (bk_claim, bk_add, bk_clean, the CAS on ep[i]) one at a time, in the order
 * a process that stalls (SIGSTOP, swap, a paused VM) or is SIGKILLed between two of
 * them would run them, with "another process" acting in between.  The threaded stress
 * (breaker_stress.c) rarely hits these windows: it passes with the re-check of ep[i]
 * in bk_add removed, or with bk_clean zeroing the current epoch's words too; this
 * fails in both cases.  Built by tests/c/run.sh with the other csrc sources (all but
 * sg_breaker.c). */
#include "sg_breaker.c"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
            failures++;                                                           \
        }                                                                         \
    } while (0)

#define NB 10
#define BNS 1000000000ULL /* 1 s buckets */
#define E0 1000ULL        /* fake clock: epoch 1000 = 1000 s of store time */

static sg_table tb;
static uint64_t words[3 + SG_BR_MAX_BUCKETS + SG_BR_MAX_BUCKETS / 4][4];
static sg_breaker B;

static void mkbr(void) {
    memset(&B, 0, sizeof B);
    memset(words, 0, sizeof words);
    B.t = &tb;
    B.st = words[0];
    B.stats = words[1];
    B.fault = words[2];
    for (int i = 0; i < SG_BR_MAX_BUCKETS; i++) {
        B.bk[i] = words[3 + i];
        B.ep[i] = &words[3 + SG_BR_MAX_BUCKETS + i / 4][i % 4];
    }
    B.c.nbuckets = NB;
    B.c.bucket_ns = BNS;
    B.c.failure_threshold = 0; /* never trips: these are about the counts */
    B.c.minimum_calls = 1;
    B.c.reset_ns = B.c.max_reset_ns = 1000000ULL;
    B.c.backoff_milli = 1000;
    B.c.half_open_calls = 1;
    B.c.probe_timeout_ns = 1000000000ULL;
    if (sg_br_validate(&B.c) != SG_OK) {
        fprintf(stderr, "bad config\n");
        exit(2);
    }
}

/* one call entering and reporting at epoch e (another process, not stalled) */
static void report_at(uint64_t e, int outcome) {
    uint64_t rng = 1, now = e * BNS + 1;
    sg_br_result r;
    uint64_t t = sg_br_enter(&B, now, &rng, &r);
    if (!t) {
        fprintf(stderr, "setup: not admitted\n");
        exit(2);
    }
    sg_br_exit(&B, t, outcome, 0, now);
}

static sg_br_window window_at(uint64_t e) {
    sg_br_window w;
    sg_br_window_sums(&B, sg_load(B.st), e * BNS + 1, &w);
    return w;
}

#define WINDOW_IS(e, c, f) \
    do { \
        sg_br_window w_ = window_at(e); \
        CHECK(w_.calls == (c) && w_.failures == (f)); \
        if (w_.calls != (c) || w_.failures != (f)) \
            fprintf(stderr, "  window at %llu: calls %llu failures %llu, want %d %d\n", (unsigned long long)(e), \
                    (unsigned long long)w_.calls, (unsigned long long)w_.failures, (int)(c), (int)(f)); \
    } while (0)

int main(void) {
    uint64_t cap = 64, size = sg_store_size(cap);
    void *mem = calloc(1, size);
    if (!mem || sg_store_init(mem, size, cap) != SG_OK || sg_store_attach(&tb, mem, size) != SG_OK) return 2;
    uint64_t g = 0, i = E0 % NB;

    /* 1. A writer claims bucket i for epoch E0 and stalls before adding.  A window
     *    later another process records two failures in the same bucket (raising ep[i]
     *    and rolling the words over to E0 + NB).  The stalled writer must find the
     *    bucket taken (bk_add re-checks ep[i] before rolling a word over) and drop its
     *    result: rolling the calls word back to E0 would lose the newer calls. */
    mkbr();
    CHECK(bk_claim(&B, (uint32_t)i, E0) == BK_OK);
    report_at(E0 + NB, SG_BR_FAILURE);
    report_at(E0 + NB, SG_BR_FAILURE);
    CHECK(bk_add(&B, (uint32_t)i, 0, g, E0) == BK_LATE);
    WINDOW_IS(E0 + NB, 2, 2);

    /* 2. A raiser moving bucket i on from E0 to E0 + NB cleans it (bk_clean) and is
     *    SIGKILLed before its CAS on ep[i].  E0 is still the bucket's epoch, so its
     *    counts must survive the clean and writers at E0 keep adding to them. */
    mkbr();
    report_at(E0 - NB, SG_BR_FAILURE); /* an older epoch's failure: the clean's job */
    report_at(E0, SG_BR_SUCCESS);
    report_at(E0, SG_BR_SUCCESS);
    bk_clean(&B, (uint32_t)i, sg_load(B.ep[i])); /* ... killed here */
    CHECK(BK_COUNT(sg_load(&B.bk[i][1])) == 0);
    WINDOW_IS(E0, 2, 0);
    report_at(E0, SG_BR_FAILURE);
    WINDOW_IS(E0, 3, 1);
    report_at(E0 + NB, SG_BR_SUCCESS); /* the next raiser finishes the job */
    WINDOW_IS(E0 + NB, 1, 0);

    /* 3. A raiser jumping 2^24 * NB buckets (same bucket, same 24-bit epoch) steps
     *    through E - NB and is killed there.  A writer a window late (at E - NB exactly)
     *    then finds ep[i] at its own epoch, and a writer at E after it: each window
     *    holds exactly its own results, never the aliased old failures. */
    mkbr();
    uint64_t E = E0 + (1ULL << 24) * NB;
    report_at(E0, SG_BR_FAILURE);
    report_at(E0, SG_BR_FAILURE);
    uint64_t v = sg_load(B.ep[i]);
    bk_clean(&B, (uint32_t)i, v);
    CHECK(sg_cas(B.ep[i], &v, E - NB + 1)); /* the raiser's step, then killed */
    report_at(E - NB, SG_BR_SUCCESS);
    WINDOW_IS(E - NB, 1, 0);
    report_at(E, SG_BR_SUCCESS);
    WINDOW_IS(E, 1, 0);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    free(mem);
    return 0;
}

/* Deterministic interleavings of the breaker's rolling buckets (review findings; 4-9:
 * the store clock going back, with clock_at moving this process's view of it).
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

/* Set this process's store clock (tb.base_mono, which sg_store_now reads) to the middle
 * of epoch e: a clock that jumps there, forwards or back. */
static void clock_at(uint64_t e) { tb.base_mono = (int64_t)sg_mono_ns() - (int64_t)(e * BNS + BNS / 2); }

/* one call entering and reporting with the store clock (now = 0) */
static void report_real(int outcome) {
    uint64_t rng = 1;
    sg_br_result r;
    uint64_t t = sg_br_enter(&B, 0, &rng, &r);
    if (!t) {
        fprintf(stderr, "setup: not admitted\n");
        exit(2);
    }
    sg_br_exit(&B, t, outcome, 0, 0);
}

#define WINDOW_IS(e, c, f) \
    do { \
        sg_br_window w_ = window_at(e); \
        CHECK(w_.calls == (c) && w_.failures == (f)); \
        if (w_.calls != (c) || w_.failures != (f)) \
            fprintf(stderr, "  window at %llu: calls %llu failures %llu, want %d %d\n", (unsigned long long)(e), \
                    (unsigned long long)w_.calls, (unsigned long long)w_.failures, (int)(c), (int)(f)); \
    } while (0)

#define WINDOW_REAL_IS(c, f) \
    do { \
        sg_br_window w_; \
        sg_br_window_sums(&B, sg_load(B.st), 0, &w_); \
        CHECK(w_.calls == (c) && w_.failures == (f)); \
        if (w_.calls != (c) || w_.failures != (f)) \
            fprintf(stderr, "  window now: calls %llu failures %llu, want %d %d\n", (unsigned long long)w_.calls, \
                    (unsigned long long)w_.failures, (int)(c), (int)(f)); \
    } while (0)

int main(void) {
    uint64_t cap = 64, size = sg_store_size(cap, 4);
    void *mem = calloc(1, size);
    if (!mem || sg_store_init(mem, size, cap, 4) != SG_OK || sg_store_attach(&tb, mem, size) != SG_OK) return 2;
    uint64_t g = 0, i = E0 % NB;

    /* 1. A writer claims bucket i for epoch E0 and stalls before adding.  A window
     *    later another process records two failures in the same bucket (raising ep[i]
     *    and rolling the words over to E0 + NB).  The stalled writer must find the
     *    bucket taken (bk_add re-checks ep[i] before rolling a word over) and drop its
     *    result: rolling the calls word back to E0 would lose the newer calls. */
    mkbr();
    CHECK(bk_claim(&B, (uint32_t)i, E0, 0) == BK_OK); /* the caller's clock */
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

    /* The store clock going back (time namespaces; a reboot with the wall clock behind).
     * ER + HOUR is the same bucket as ER (HOUR % NB == 0).  A clock is "real" when the
     * caller passes now = 0 (the store clock). */
    const uint64_t ER = 5000, HOUR = 3600;
    i = ER % NB;

    /* 4. Every bucket holds results from an hour ahead of the clock now.  A result with
     *    the caller's own clock is late as before; one with the store clock takes its
     *    bucket back and counts.  The high-water mark was kept by the store-clock
     *    raises, and is not lowered. */
    mkbr();
    for (uint64_t k = 0; k < NB; k++) {
        clock_at(ER + HOUR + k);
        report_real(SG_BR_FAILURE);
        report_real(SG_BR_FAILURE);
    }
    CHECK(sg_load(&tb.hdr->high_water) >= (ER + HOUR) * BNS);
    uint64_t hw = sg_load(&tb.hdr->high_water);
    clock_at(ER);
    WINDOW_REAL_IS(0, 0);
    report_at(ER, SG_BR_FAILURE); /* the caller's clock: not trusted to take it back */
    WINDOW_REAL_IS(0, 0);
    report_real(SG_BR_FAILURE);
    WINDOW_REAL_IS(1, 1);
    CHECK(sg_load(B.ep[i]) == ER + 1);
    CHECK(sg_load(&tb.hdr->high_water) == hw);
    clock_at(ER + 1);
    report_real(SG_BR_SUCCESS); /* the next bucket too */
    WINDOW_REAL_IS(2, 1);

    /* 5. Taking bucket i back cleans it like a raise: here the failures word still holds
     *    the failure of the epoch a window before ep[i]'s, whose 24 bits are ER's, and
     *    must not count for ER.  Then the same, with the process taking it back SIGKILLed
     *    after its clean, before its CAS on ep[i]: the counts of ep[i]'s (ahead) epoch
     *    survive, and the next store-clock writer finishes the job. */
    const uint64_t FAR = (1ULL << 24) * NB; /* same bucket, same 24-bit epoch */
    for (int killed = 0; killed < 2; killed++) {
        mkbr();
        clock_at(ER + FAR);
        report_real(SG_BR_FAILURE);
        clock_at(ER + FAR + NB);
        report_real(SG_BR_SUCCESS);
        report_real(SG_BR_SUCCESS);
        clock_at(ER);
        if (killed) {
            bk_clean(&B, (uint32_t)i, sg_load(B.ep[i])); /* ... killed here */
            CHECK(BK_COUNT(sg_load(&B.bk[i][1])) == 0);
            CHECK(sg_load(B.ep[i]) == ER + FAR + NB + 1);
            WINDOW_IS(ER + FAR + NB, 2, 0);
            WINDOW_REAL_IS(0, 0);
        }
        report_real(SG_BR_SUCCESS);
        WINDOW_REAL_IS(1, 0);
        report_real(SG_BR_FAILURE);
        WINDOW_REAL_IS(2, 1);
    }

    /* 6. A writer claimed bucket i an hour ahead, then stalled across its take-back: its
     *    increments land on its own epoch's words (counted by no window), and once a
     *    current writer rolled a word over, its roll-over finds ep[i] moved: late. */
    mkbr();
    clock_at(ER + HOUR);
    report_real(SG_BR_FAILURE);
    CHECK(bk_claim(&B, (uint32_t)i, ER + HOUR, sg_store_now(&tb)) == BK_OK); /* then stalls */
    clock_at(ER);
    CHECK(bk_claim(&B, (uint32_t)i, ER, sg_store_now(&tb)) == BK_OK); /* taken back */
    CHECK(bk_add(&B, (uint32_t)i, 0, g, ER + HOUR) == BK_OK);
    CHECK(bk_add(&B, (uint32_t)i, 1, g, ER + HOUR) == BK_OK);
    WINDOW_REAL_IS(0, 0);
    report_real(SG_BR_SUCCESS);
    WINDOW_REAL_IS(1, 0);
    CHECK(bk_add(&B, (uint32_t)i, 0, g, ER + HOUR) == BK_LATE);
    WINDOW_REAL_IS(1, 0);

    /* 7. A writer that read the store clock and then stalled a window is late, as
     *    before: it never takes back a bucket written since (the take-back judges ep[i]
     *    against the clock read after loading it, not against the writer's clock). */
    mkbr();
    clock_at(ER);
    uint64_t rt = sg_store_now(&tb); /* read, then stalled */
    clock_at(ER + NB);
    report_real(SG_BR_FAILURE);
    report_real(SG_BR_FAILURE);
    CHECK(bk_claim(&B, (uint32_t)i, ER, rt) == BK_LATE);
    WINDOW_REAL_IS(2, 2);
    CHECK(sg_load(B.ep[i]) == ER + NB + 1);

    /* 8. Back by a multiple of 2^24 * NB buckets (same bucket, same 24-bit epoch): the
     *    old words would pass for the new epoch's, so the take-back steps through
     *    (old epoch - NB); also when killed right there, and with a clock so low that
     *    there is no e - NB (e < NB).  Each window holds only its own results. */
    for (uint64_t er = 3; er <= ER; er += ER - 3) {
        uint64_t ii = er % NB;
        mkbr();
        clock_at(er + FAR);
        report_real(SG_BR_FAILURE);
        report_real(SG_BR_FAILURE);
        clock_at(er);
        report_real(SG_BR_SUCCESS);
        WINDOW_REAL_IS(1, 0);

        mkbr();
        clock_at(er + FAR);
        report_real(SG_BR_FAILURE);
        report_real(SG_BR_FAILURE);
        clock_at(er);
        v = sg_load(B.ep[ii]);
        bk_clean(&B, (uint32_t)ii, v);
        CHECK(sg_cas(B.ep[ii], &v, v - NB)); /* the mover's step, then killed */
        WINDOW_REAL_IS(0, 0);
        report_real(SG_BR_SUCCESS);
        WINDOW_REAL_IS(1, 0);
        report_real(SG_BR_FAILURE);
        WINDOW_REAL_IS(2, 1);
    }

    /* 9. A raiser with the caller's own clock (far ahead) beats a take-back to its CAS:
     *    the take-back retries from the new value; neither epoch's words leak. */
    mkbr();
    clock_at(ER + HOUR);
    report_real(SG_BR_FAILURE);
    clock_at(ER);
    v = sg_load(B.ep[i]);
    bk_clean(&B, (uint32_t)i, v); /* the take-back's clean ... */
    report_at(ER + 2 * HOUR, SG_BR_FAILURE); /* ... a raiser's clean and CAS ... */
    CHECK(!sg_cas(B.ep[i], &v, ER + 1)); /* ... so its CAS fails, and it retries: */
    CHECK(bk_raise(&B, (uint32_t)i, ER, v, sg_store_now(&tb)) == BK_OK);
    WINDOW_REAL_IS(0, 0);
    report_real(SG_BR_SUCCESS);
    WINDOW_REAL_IS(1, 0);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    free(mem);
    return 0;
}

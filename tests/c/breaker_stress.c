/* Multi-threaded stress of csrc/sg_breaker.c (built with -fsanitize=thread or
 * address by tests/test_breaker_c.py).  Exits non-zero on any violated invariant.
 *
 *  1. half-open permits: T threads race for probes; exactly half_open_calls are admitted.
 *  2. exact totals: T threads each report N results; calls/failures totals are exact and
 *     the window holds them all (no lost bucket updates under CAS rollover contention).
 *  3. churn: threads trip, probe and recover concurrently; the state word stays well-formed
 *     and the breaker ends closed after successes.
 *  4. a transitioner killed before its phase write.
 *  5. late, out-of-order reports: the last window is exact.
 *  6-7. 24-bit epoch aliasing (also after a raiser died) and stores from before ep[].
 *  8. the store clock went back: threads race to take back buckets written ahead of it;
 *     each round's window is exact, and no caller's clock moves the high-water mark.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sg_breaker.h"

#define T 4
#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

/* tests/test_breaker_c.py builds one run with a 2 ms stall here: the preemption that a
 * loaded machine (or ThreadSanitizer) can put between a step and its check */
#ifndef STRESS_STALL_NS
#define STRESS_STALL_NS 0
#endif
static void stall(void) {
    struct timespec ts = {0, STRESS_STALL_NS};
    if (STRESS_STALL_NS) nanosleep(&ts, NULL);
}

static sg_table tb;
#define EPW (3 + SG_BR_MAX_BUCKETS) /* first row of the bucket epoch words */
static uint64_t words[EPW + SG_BR_MAX_BUCKETS / 4][4];

static void mkbr(sg_breaker *b, uint32_t hoc, uint32_t threshold) {
    memset(b, 0, sizeof *b);
    memset(words, 0, sizeof words);
    b->t = &tb;
    b->st = words[0];
    b->stats = words[1];
    b->fault = words[2];
    b->c.nbuckets = 10;
    for (int i = 0; i < SG_BR_MAX_BUCKETS; i++) {
        b->bk[i] = words[3 + i];
        b->ep[i] = &words[EPW + i / 4][i % 4];
    }
    b->c.bucket_ns = 1000000000ULL;
    b->c.failure_threshold = threshold;
    b->c.minimum_calls = 1;
    b->c.reset_ns = 1000000ULL; /* 1 ms */
    b->c.max_reset_ns = 1000000ULL;
    b->c.backoff_milli = 1000;
    b->c.half_open_calls = hoc;
    b->c.probe_timeout_ns = 60000000000ULL;
    CHECK(sg_br_validate(&b->c) == SG_OK);
}

static sg_breaker B;
static pthread_barrier_t bar;

#define ROUNDS 3000
#include <sched.h>
static unsigned spin_count, spin_sense;

/* A spinning barrier: threads leave it within nanoseconds of each other, which
 * is what makes the permit race real (a futex barrier wakes them one by one). */
static void spin_wait(void) {
    unsigned sense = __atomic_load_n(&spin_sense, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&spin_count, 1, __ATOMIC_ACQ_REL) == T) {
        __atomic_store_n(&spin_count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&spin_sense, sense + 1, __ATOMIC_RELEASE);
        return;
    }
    for (unsigned i = 0; __atomic_load_n(&spin_sense, __ATOMIC_ACQUIRE) == sense; i++)
        if (i > 200) sched_yield();
}
static uint64_t round_admitted[ROUNDS];

/* Many short half-open rounds in lockstep: each thread tries 2 enters per round,
 * then thread 0 checks the round's count and opens a fresh round. */
static void *probe_racer(void *arg) {
    uintptr_t me = (uintptr_t)arg;
    uint64_t rng = me + 1;
    sg_br_result r;
    for (int k = 0; k < ROUNDS; k++) {
        spin_wait();
        uint64_t n = 0;
        for (int i = 0; i < 2; i++)
            if (sg_br_enter(&B, 0, &rng, &r)) n++;
        __atomic_add_fetch(&round_admitted[k], n, __ATOMIC_SEQ_CST);
        spin_wait();
        if (me == 0) {
            uint64_t s = __atomic_load_n(&B.st[0], __ATOMIC_ACQUIRE);
            __atomic_store_n(&B.st[0], (uint64_t)SG_BR_HALF_OPEN | (((SG_BR_GEN(s) + 1) & 0xffffff) << 3),
                             __ATOMIC_RELEASE);
        }
    }
    return NULL;
}

#define N 50000
static void *reporter(void *arg) {
    uint64_t rng = (uintptr_t)arg + 1;
    sg_br_result r;
    pthread_barrier_wait(&bar);
    for (int i = 0; i < N; i++) {
        uint64_t t = sg_br_enter(&B, 0, &rng, &r);
        CHECK(t);
        sg_br_exit(&B, t, i % 4 == 0 ? SG_BR_FAILURE : SG_BR_SUCCESS, 0, 0);
    }
    return NULL;
}

static void *churner(void *arg) {
    uint64_t rng = (uintptr_t)arg + 1;
    sg_br_result r;
    pthread_barrier_wait(&bar);
    for (int i = 0; i < 200000; i++) {
        uint64_t t = sg_br_enter(&B, 0, &rng, &r);
        if (t) sg_br_exit(&B, t, (rng >> 20) % 3 == 0 ? SG_BR_FAILURE : SG_BR_SUCCESS, 0, 0);
        uint64_t s = __atomic_load_n(&B.st[0], __ATOMIC_ACQUIRE);
        CHECK(SG_BR_STATE(s) <= SG_BR_HALF_OPEN);
        CHECK(SG_BR_ISSUED(s) <= B.c.half_open_calls && SG_BR_SUCC(s) < B.c.half_open_calls);
    }
    return NULL;
}

/* Late and out-of-order reports: each thread reports at random epochs spread over
 * four windows (fake clock), as processes that read their clock, then stalled, do. */
#define EPOCHS 40
#define NLATE 20000
#define BASE (1000 * 1000000000ULL)
static uint64_t late_calls[T][EPOCHS], late_fails[T][EPOCHS];

static uint64_t xs(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *late_reporter(void *arg) {
    uintptr_t me = (uintptr_t)arg;
    uint64_t rng = me + 1, x = me * 7919 + 3;
    sg_br_result r;
    pthread_barrier_wait(&bar);
    for (int n = 0; n < NLATE; n++) {
        uint64_t v = xs(&x), e = v % EPOCHS, now = BASE + e * B.c.bucket_ns + (v >> 40) % B.c.bucket_ns;
        int f = (v >> 20) % 3 == 0;
        uint64_t t = sg_br_enter(&B, now, &rng, &r);
        CHECK(t);
        sg_br_exit(&B, t, f ? SG_BR_FAILURE : SG_BR_SUCCESS, 0, now);
        late_calls[me][e]++;
        late_fails[me][e] += (uint64_t)f;
    }
    return NULL;
}

static void window_at(uint64_t epoch, sg_br_window *w) {
    sg_br_window_sums(&B, B.st[0], BASE + epoch * B.c.bucket_ns, w);
}

/* one call reported at epoch e (fake clock) */
static void report_at(uint64_t e, int outcome) {
    uint64_t rng = 1, now = BASE + e * B.c.bucket_ns;
    sg_br_result r;
    uint64_t t = sg_br_enter(&B, now, &rng, &r);
    CHECK(t);
    sg_br_exit(&B, t, outcome, 0, now);
}

/* Rounds of: every bucket rewritten far ahead of the store clock (as by a clock that has
 * since gone back), then T threads report with the store clock at once. */
#define TB_ROUNDS 300
#define TB_N 100
static uint64_t tb_round_fails(void) {
    uint64_t f = 0;
    for (uintptr_t me = 0; me < T; me++)
        for (int n = 0; n < TB_N; n++) f += (n + me) % 3 == 0;
    return f;
}

static void tb_prefill(int k) {
    for (uint32_t j = 0; j < B.c.nbuckets; j++) report_at((uint64_t)(k + 1) * 100 * B.c.nbuckets + j, SG_BR_FAILURE);
}

static void *taker(void *arg) {
    uintptr_t me = (uintptr_t)arg;
    uint64_t rng = me + 1;
    sg_br_result r;
    for (int k = 0; k < TB_ROUNDS; k++) {
        spin_wait();
        for (int n = 0; n < TB_N; n++) {
            uint64_t t = sg_br_enter(&B, 0, &rng, &r);
            CHECK(t);
            sg_br_exit(&B, t, (n + me) % 3 == 0 ? SG_BR_FAILURE : SG_BR_SUCCESS, 0, 0);
        }
        spin_wait();
        if (me == 0) {
            sg_br_window w;
            sg_br_window_sums(&B, B.st[0], 0, &w);
            CHECK(w.calls == (uint64_t)T * TB_N && w.failures == tb_round_fails());
            tb_prefill(k + 1);
            sg_br_window_sums(&B, B.st[0], 0, &w);
            CHECK(w.calls == 0);
        }
    }
    return NULL;
}

static void run(void *(*fn)(void *)) {
    pthread_t th[T];
    pthread_barrier_init(&bar, NULL, T);
    for (uintptr_t i = 0; i < T; i++) CHECK(pthread_create(&th[i], NULL, fn, (void *)i) == 0);
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
}

int main(void) {
    uint64_t cap = 64, size = sg_store_size(cap, 4);
    void *mem = calloc(1, size);
    CHECK(mem && sg_store_init(mem, size, cap, 4) == SG_OK && sg_store_attach(&tb, mem, size) == SG_OK);
    uint64_t rng = 1;
    sg_br_result r;

    /* 1. exact probe count */
    for (uint32_t hoc = 1; hoc <= 5; hoc += 2) {
        mkbr(&B, hoc, 1);
        /* judged at the failure's own instant: on the real clock, a preemption longer
           than the 1 ms reset between the failure and the check (ThreadSanitizer on a
           loaded machine) ended the open period first, and the check failed */
        uint64_t t0 = sg_store_now(&tb);
        uint64_t t = sg_br_enter(&B, t0, &rng, &r);
        sg_br_exit(&B, t, SG_BR_FAILURE, 0, t0);
        stall();
        CHECK(SG_BR_STATE(sg_br_poll(&B, t0)) == SG_BR_OPEN);
        uint64_t now = t0 + 2000000ULL; /* past reset: half-open on next enter */
        CHECK(SG_BR_STATE(sg_br_poll(&B, now)) == SG_BR_HALF_OPEN);
        memset(round_admitted, 0, sizeof round_admitted);
        run(probe_racer);
        for (int k = 0; k < ROUNDS; k++) CHECK(round_admitted[k] == hoc);
    }

    /* 2. exact totals and window */
    mkbr(&B, 1, 0); /* never trips */
    run(reporter);
    CHECK(B.stats[0] == (uint64_t)T * N);
    CHECK(B.stats[1] == (uint64_t)T * (N / 4 + (N % 4 != 0)));
    sg_br_window w;
    sg_br_window_sums(&B, B.st[0], 0, &w);
    CHECK(w.calls == (uint64_t)T * N && w.failures == B.stats[1]);

    /* 3. churn through trips and probes, then recover */
    mkbr(&B, 2, 3);
    run(churner);
    for (int i = 0; i < 100000 && SG_BR_STATE(sg_br_poll(&B, 0)) != SG_BR_CLOSED; i++) {
        uint64_t t = sg_br_enter(&B, 0, &rng, &r);
        if (t) sg_br_exit(&B, t, SG_BR_SUCCESS, 0, 0);
    }
    CHECK(SG_BR_STATE(sg_br_poll(&B, 0)) == SG_BR_CLOSED);
    /* 4. a transitioner killed between its CAS and the phase write: the next reader
     *    writes the phase itself, so the open period still ends. */
    mkbr(&B, 1, 1);
    {
        uint64_t s = B.st[0], g = SG_BR_GEN(s) + 1;
        B.st[0] = (uint64_t)SG_BR_OPEN | (g << 3) | (1ULL << 43); /* open, consec 1, no phase */
        uint64_t t0 = sg_store_now(&tb);
        CHECK(sg_br_enter(&B, t0, &rng, &r) == 0 && r.reason == SG_BR_REJ_OPEN);
        CHECK((B.st[1] >> 40) == g); /* phase now written for this generation */
        CHECK(r.retry_ns <= B.c.reset_ns && r.retry_ns + 1000000ULL >= B.c.reset_ns);
        CHECK(SG_BR_STATE(sg_br_poll(&B, t0 + B.c.reset_ns + 1000000ULL)) == SG_BR_HALF_OPEN);
    }

    /* 5. late and out-of-order reports race for the buckets: a report is dropped or
     *    wiped only once a newer epoch took its bucket, so the window at the last
     *    epoch holds exactly the reports of the last window, whatever the order. */
    for (uint32_t nb = 1; nb <= 10; nb += 9) {
        mkbr(&B, 1, 0);
        B.c.nbuckets = nb;
        memset(late_calls, 0, sizeof late_calls);
        memset(late_fails, 0, sizeof late_fails);
        run(late_reporter);
        uint64_t calls = 0, fails = 0;
        for (int k = 0; k < T; k++)
            for (uint32_t e = EPOCHS - nb; e < EPOCHS; e++) calls += late_calls[k][e], fails += late_fails[k][e];
        window_at(EPOCHS - 1, &w);
        CHECK(w.calls == calls && w.failures == fails && calls > 0);
    }

    /* 6. aliasing 24-bit epochs: with 8 buckets, 2^24 buckets later is the same bucket
     *    and the same 24-bit epoch; the old failures must not come back (the bucket's
     *    epoch is raised, its words are cleaned) */
    mkbr(&B, 1, 0);
    B.c.nbuckets = 8;
    report_at(5, SG_BR_FAILURE);
    report_at(5, SG_BR_FAILURE);
    report_at(5 + (1ULL << 24), SG_BR_SUCCESS);
    window_at(5 + (1ULL << 24), &w);
    CHECK(w.calls == 1 && w.failures == 0);
    /* ... also when the process raising the epoch died before cleaning: its CAS to the
     *     intermediate epoch (e - nbuckets) done, the aliased words left as they were */
    uint64_t e = 5 + (2ULL << 24), ee = BASE / B.c.bucket_ns + e, i = ee % 8; /* ee: the epoch */
    B.ep[i][0] = ee - 8 + 1;
    B.bk[i][0] = (B.bk[i][0] & ~(0xffffffULL << 28)) | ((ee & 0xffffff) << 28); /* calls: 1, aliased */
    B.bk[i][1] = B.bk[i][0] + 2;                                             /* failures: 3, aliased */
    report_at(e, SG_BR_SUCCESS);
    window_at(e, &w);
    CHECK(w.calls == 1 && w.failures == 0);

    /* 7. a store from before the bucket epochs (ep = 0, words full of counts for the
     *    current epoch): read as empty, then counted afresh */
    mkbr(&B, 1, 0);
    e = 12345, ee = BASE / B.c.bucket_ns + e;
    for (int k = 0; k < 10; k++) /* tagged with the epochs of the window at ee */
        for (int j = 0; j < 4; j++) B.bk[k][j] = ((ee - (ee - (uint64_t)k) % 10) & 0xffffff) << 28 | 7;
    window_at(e, &w);
    CHECK(w.calls == 0 && w.failures == 0);
    report_at(e, SG_BR_FAILURE);
    window_at(e, &w);
    CHECK(w.calls == 1 && w.failures == 1 && w.slow == 0 && w.rejected == 0);

    /* 8. take-backs racing */
    mkbr(&B, 1, 0);
    CHECK(BASE > sg_store_now(&tb) + 100 * B.c.bucket_ns); /* the prefill is far ahead */
    tb_prefill(0);
    run(taker);
    /* fake clocks (here 1000 s ahead) never mark it; the store clock did, at attach or since */
    CHECK(tb.hdr->high_water <= sg_store_now(&tb) && tb.hdr->high_water >= 1000000000ULL);

    printf("ok\n");
    free(mem);
    return 0;
}

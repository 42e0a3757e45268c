/* Thread stress test of the shared latency histograms (csrc/sg_hist.c).
 * Built and run by tests/c/run.sh plain, under ThreadSanitizer and under
 * AddressSanitizer+UBSan.  Writers record known values while readers check that
 * every read is coherent (cumulative counts never go down between reads, never
 * exceed what was recorded); at the end the counts and the sum are exact. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_core.h"
#include "sg_hist.h"

#include "harness.h"

#define WRITERS 6
#define READERS 2
#define ITERS 100000

static uint64_t seed;
static int writers_done;

/* the value a writer records at step i: spread over every bucket, bounds included */
static uint64_t value(int id, int i, uint64_t *rng) {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    unsigned b = (unsigned)(*rng % (SG_HIST_BOUNDS + 1));
    if (b == SG_HIST_BOUNDS) return sg_hist_bounds_ns[SG_HIST_BOUNDS - 1] + 1 + (*rng >> 40); /* +Inf */
    switch ((i + id) % 3) {
    case 0: return sg_hist_bounds_ns[b];                               /* on the bound: this bucket */
    case 1: return b ? sg_hist_bounds_ns[b - 1] + 1 : 0;               /* just above the previous */
    default: return b ? sg_hist_bounds_ns[b] - 1 : sg_hist_bounds_ns[0] / 2;
    }
}

static void *writer(void *p) {
    int id = (int)(intptr_t)p;
    sg_hist h;
    if (sg_hist_open(&T, seed, "calls", 5, 1, &h) != SG_OK) {
        CHECK(0, "writer %d: open", id);
        return NULL;
    }
    uint64_t rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(id + 1);
    for (int i = 0; i < ITERS; i++) sg_hist_record(&h, value(id, i, &rng));
    return NULL;
}

static void *reader(void *p) {
    (void)p;
    uint64_t prev[SG_HIST_BUCKETS] = {0}, prev_sum = 0;
    for (;;) {
        int last = __atomic_load_n(&writers_done, __ATOMIC_ACQUIRE);
        sg_hist h;
        int rc = sg_hist_open(&T, seed, "calls", 5, 0, &h);
        CHECK(rc == SG_OK || rc == SG_NOTFOUND, "reader: open %d", rc);
        uint64_t c[SG_HIST_BUCKETS], sum, cum = 0;
        sg_hist_read(&h, c, &sum);
        for (unsigned k = 0; k < SG_HIST_BUCKETS; k++) {
            cum += c[k];
            CHECK(c[k] >= prev[k], "reader: bucket %u went down %llu -> %llu", k, (unsigned long long)prev[k],
                  (unsigned long long)c[k]);
            prev[k] = c[k];
        }
        CHECK(cum <= (uint64_t)WRITERS * ITERS, "reader: %llu counted", (unsigned long long)cum);
        CHECK(sum >= prev_sum, "reader: sum went down");
        prev_sum = sum;
        if (last) break;
    }
    return NULL;
}

static void scenario_concurrent(void) {
    make_store(64);
    seed = sg_ns_seed(SG_NS_BREAKER, "payments", 8);
    sg_hist h;
    CHECK(sg_hist_open(&T, seed, "calls", 5, 0, &h) == SG_NOTFOUND, "absent before any writer");
    for (unsigned j = 0; j < SG_HIST_SLOTS; j++) CHECK(h.w[j] == NULL, "absent slot %u not NULL", j);
    CHECK(sg_live_count(__atomic_load_n(&T.hdr->perm_live, __ATOMIC_RELAXED)) == 0, "a reader took room in the store");

    pthread_t w[WRITERS], r[READERS];
    for (int i = 0; i < READERS; i++) pthread_create(&r[i], NULL, reader, NULL);
    for (int i = 0; i < WRITERS; i++) pthread_create(&w[i], NULL, writer, (void *)(intptr_t)i);
    for (int i = 0; i < WRITERS; i++) pthread_join(w[i], NULL);
    __atomic_store_n(&writers_done, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < READERS; i++) pthread_join(r[i], NULL);

    /* exact: replay every writer's values */
    uint64_t want[SG_HIST_BUCKETS] = {0}, want_sum = 0;
    for (int id = 0; id < WRITERS; id++) {
        uint64_t rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(id + 1);
        for (int i = 0; i < ITERS; i++) {
            uint64_t v = value(id, i, &rng);
            want[sg_hist_bucket(v)]++;
            want_sum += v;
        }
    }
    CHECK(sg_hist_open(&T, seed, "calls", 5, 0, &h) == SG_OK, "open after writers");
    uint64_t c[SG_HIST_BUCKETS], sum;
    sg_hist_read(&h, c, &sum);
    for (unsigned k = 0; k < SG_HIST_BUCKETS; k++)
        CHECK(c[k] == want[k], "bucket %u: %llu != %llu", k, (unsigned long long)c[k], (unsigned long long)want[k]);
    CHECK(sum == want_sum, "sum %llu != %llu", (unsigned long long)sum, (unsigned long long)want_sum);
    CHECK(sg_live_count(__atomic_load_n(&T.hdr->perm_live, __ATOMIC_RELAXED)) == SG_HIST_SLOTS, "perm_live %llu",
          (unsigned long long)sg_live_count(T.hdr->perm_live));

    sg_hist_clear(&h);
    sg_hist_read(&h, c, &sum);
    for (unsigned k = 0; k < SG_HIST_BUCKETS; k++) CHECK(c[k] == 0, "cleared bucket %u", k);
    CHECK(sum == 0, "cleared sum");
}

static void scenario_buckets(void) {
    CHECK(sg_hist_bucket(0) == 0, "0 ns");
    CHECK(sg_hist_bucket(100000) == 0, "100 us is le 100 us");
    CHECK(sg_hist_bucket(100001) == 1, "just above 100 us");
    CHECK(sg_hist_bucket(50000000000ULL) == SG_HIST_BOUNDS - 1, "50 s");
    CHECK(sg_hist_bucket(50000000001ULL) == SG_HIST_BOUNDS, "above 50 s: +Inf");
    CHECK(sg_hist_bucket(UINT64_MAX) == SG_HIST_BOUNDS, "max: +Inf");
    for (unsigned i = 1; i < SG_HIST_BOUNDS; i++) CHECK(sg_hist_bounds_ns[i] > sg_hist_bounds_ns[i - 1], "bounds rise");
}

static void scenario_full_store(void) {
    /* a store with no permanent room left: SG_ERR_FULL, never a half-usable histogram
     * that records into a NULL word */
    make_store(1);
    uint64_t s = sg_ns_seed(SG_NS_CONCURRENCY, "db", 2);
    sg_hist h;
    int rc = SG_OK;
    char part[16];
    for (int n = 0; n < 64 && rc == SG_OK; n++) {
        int len = snprintf(part, sizeof part, "p%d", n);
        rc = sg_hist_open(&T, s, part, (size_t)len, 1, &h);
    }
    CHECK(rc == SG_ERR_FULL, "a full store answers SG_ERR_FULL, got %d", rc);
    CHECK(sg_hist_open(&T, s, "", 0, 1, &h) == SG_ERR_ARG, "empty part");
}

int main(void) {
    (void)key; /* the harness's, for the table tests */
    scenario_buckets();
    scenario_concurrent();
    scenario_full_store();
    free(region);
    if (CHECK_FAILED()) return 1;
    printf("hist_stress: ok\n");
    return 0;
}

/* Thread stress test of the adaptive limiter's AIMD words (sg_adaptive_feedback in
 * csrc/sg_limiter.c).  Built and run by tests/c/run.sh plain, under ThreadSanitizer and
 * under AddressSanitizer+UBSan.  Threads report successes while others decide with the
 * interval; the result is exact: N successes from any threads in any order give the
 * interval of N successive ones, and failures racing within one cooldown cut once. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "sg_limiter.h"

#include "check.h"

#define THREADS 6
#define OKS 20000

static uint64_t words[2]; /* the shared words: current interval, last cut */
static const sg_adaptive A = {.interval_min_ns = 1000, .interval_max_ns = 10000000, .increase = 3.0,
                              .decrease = 0.5, .cooldown_ns = 1000000000ULL};
static int stop;

static void *succeed(void *p) {
    (void)p;
    for (int i = 0; i < OKS; i++) sg_adaptive_feedback(words, &A, 1, 5);
    return NULL;
}

static void *fail(void *p) {
    uint64_t now = (uint64_t)(uintptr_t)p;
    for (int i = 0; i < 1000; i++) sg_adaptive_feedback(words, &A, 0, now + (uint64_t)i);
    return NULL;
}

static void *read_interval(void *p) {
    (void)p;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        uint64_t t = sg_adaptive_interval(words, A.interval_min_ns, A.interval_max_ns);
        CHECK(t >= A.interval_min_ns && t <= A.interval_max_ns, "interval %llu out of range", (unsigned long long)t);
    }
    return NULL;
}

/* the interval after n successive successes from start, one at a time */
static uint64_t serial(uint64_t start, int n) {
    uint64_t w[2] = {start, 0};
    for (int i = 0; i < n; i++) sg_adaptive_feedback(w, &A, 1, 5);
    return w[0];
}

int main(void) {
    pthread_t t[THREADS + 1];
    words[0] = A.interval_max_ns; /* the slowest rate */
    pthread_create(&t[THREADS], NULL, read_interval, NULL);
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, succeed, NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    uint64_t want = serial(A.interval_max_ns, THREADS * OKS);
    CHECK(words[0] == want, "after %d successes: %llu, one at a time: %llu", THREADS * OKS,
          (unsigned long long)words[0], (unsigned long long)want);

    /* failures from every thread within one cooldown (store times 10^9 .. 10^9 + 1000): one cut */
    uint64_t before = words[0];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, fail, (void *)(uintptr_t)1000000000ULL);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    uint64_t w1[2] = {before, 0};
    sg_adaptive_feedback(w1, &A, 0, 1000000000ULL);
    CHECK(words[0] == w1[0], "racing failures in one cooldown: %llu, one cut: %llu", (unsigned long long)words[0],
          (unsigned long long)w1[0]);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    pthread_join(t[THREADS], NULL);
    if (CHECK_FAILED()) return 1;
    printf("adaptive feedback: %d successes exact, racing failures cut once: ok\n", THREADS * OKS);
    return 0;
}

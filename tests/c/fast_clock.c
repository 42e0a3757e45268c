/* The fast clock (sg_fast_mono_ns): situations its slope must not be measured in.
 *
 * 1-2. Across a system suspend.  During a suspend (suspend-to-idle, or S3 with the TSC kept) the TSC keeps counting
 * while CLOCK_MONOTONIC stands still: the kernel adds the sleep to CLOCK_BOOTTIME
 * only.  A slope measured over an interval that contains a suspend is wrong by the
 * share of the interval that was slept, and the clock extrapolated with it drifts
 * off CLOCK_MONOTONIC by up to that share of an anchor period (milliseconds), far
 * beyond the limiter's 100 us skew tolerance.
 *
 * 3. Right after a re-anchor.  A reader whose TSC reading is behind the anchor it
 * loaded (RDTSC is not ordered after the loads before it; TSCs of other sockets
 * may lag by a few dozen ticks) sees the difference wrap and takes the slow path
 * with a fresh anchor.  A slope measured over those few hundred ticks is off by
 * tens of percent (the pairs' own error is ~50 ticks).
 *
 * This file includes csrc/sg_clock.c with clock_gettime replaced, so that it can
 * hold CLOCK_MONOTONIC back by a simulated suspend while the real TSC runs on.
 * Built by tests/c/run.sh with csrc/sg_hash.c. */
#define clock_gettime sg_test_clock_gettime
#include "sg_clock.c"
#undef clock_gettime

#include <stdio.h>

#include "check.h"

int clock_gettime(clockid_t id, struct timespec *ts);

static uint64_t suspended_ns; /* CLOCK_MONOTONIC time lost to simulated suspends */

int sg_test_clock_gettime(clockid_t id, struct timespec *ts) {
    int rc = clock_gettime(id, ts);
    if (rc == 0 && id == CLOCK_MONOTONIC) {
        uint64_t ns = (uint64_t)ts->tv_sec * 1000000000ULL + (uint64_t)ts->tv_nsec - suspended_ns;
        ts->tv_sec = (time_t)(ns / 1000000000ULL);
        ts->tv_nsec = (long)(ns % 1000000000ULL);
    }
    return rc;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A process sleeps (no clock reads) for idle_ms, of which suspend_ms the machine is
 * suspended; CLOCK_MONOTONIC is held back by it from the moment nobody reads it. */
static void idle_with_suspend(long idle_ms, long suspend_ms) {
    sleep_ms(idle_ms);
    suspended_ns += (uint64_t)suspend_ms * 1000000ULL;
}

/* Bracket fast readings between precise ones for ms milliseconds. */
static void tracks(const char *what, long ms) {
    uint64_t end = sg_mono_ns() + (uint64_t)ms * 1000000ULL, worst = 0;
    for (;;) {
        uint64_t a = sg_mono_ns(), f = sg_fast_mono_ns(), b = sg_mono_ns();
        uint64_t off = f < a ? a - f : f > b ? f - b : 0;
        if (off > worst) worst = off;
        if (b > end) break;
    }
    CHECK(worst <= 5000, "%s: the fast clock is %llu ns off CLOCK_MONOTONIC", what, (unsigned long long)worst);
    printf("%s: worst %llu ns\n", what, (unsigned long long)worst);
}

int main(void) {
#ifdef SG_HAVE_TSC
    if (sg_fast_clock_mode() != 1) {
        printf("fast clock off (clocksource or SLUICEGATE_CLOCK): skipped\n");
        return 0;
    }
    /* 1. the first calibration interval contains a suspend */
    sg_fast_mono_ns(); /* first point */
    idle_with_suspend(100, 40);
    tracks("calibration across a suspend", 40);
    /* 2. a re-anchor after an idle period that contains a suspend */
    tracks("warm", 30);
    idle_with_suspend(100, 40);
    tracks("re-anchor across a suspend", 40);
    /* 3. a reading behind a fresh anchor: the slow path with the anchor's own seq */
    for (int i = 0; i < 3; i++) {
        sleep_ms(12);
        sg_fast_mono_ns(); /* re-anchors (one anchor period has passed) */
        fc_slow(FC_LD(fc.seq)); /* what sg_fast_mono_ns does when its d wrapped */
        tracks("a reading behind a fresh anchor", 10);
    }
#else
    printf("no TSC fast clock on this platform: skipped\n");
#endif
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("fast clock ok\n");
    return 0;
}

/* Clock and boot identity.  Decisions read sg_mono_ns(), or sg_fast_mono_ns() on
 * the rate limiter's hot path. */
#define _POSIX_C_SOURCE 200809L
#ifdef __APPLE__
#define _DARWIN_C_SOURCE /* sysctlbyname is hidden under strict POSIX */
#endif
#include <stdio.h>
#include <time.h>
#ifdef __APPLE__
#include <sys/sysctl.h>
#include <sys/time.h>
#endif

#include "sg_core.h"

#if defined(__linux__) && defined(__x86_64__)
#define SG_HAVE_TSC 1
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <x86intrin.h>
#endif

uint64_t sg_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t sg_wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The monotonic clock restarts at boot, so a file-backed store must know whether
 * the base it recorded belongs to this boot.  Linux publishes a random boot id,
 * macOS the boot time; elsewhere wall - monotonic identifies it to ~1 s. */
uint64_t sg_boot_key(void) {
    char buf[64];
    uint64_t key = 0;
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        if (n > 0) key = sg_hash(buf, n, 0x626f6f74ULL).a;
    }
#ifdef __APPLE__
    if (!key) { /* the kernel's record of the boot time: stable, unlike wall - monotonic under NTP */
        struct timeval tv;
        size_t len = sizeof tv;
        if (sysctlbyname("kern.boottime", &tv, &len, NULL, 0) == 0)
            key = sg_hash(&tv, sizeof tv, 0x626f6f74ULL).a;
    }
#endif
    if (!key) key = (sg_wall_ns() - sg_mono_ns()) / 1000000000ULL; /* ~1 s: can drift under NTP */
    return key < 2 ? key + 2 : key; /* 0 and 1 are reserved in the header */
}

/* ---- the fast clock ---------------------------------------------------------
 * CLOCK_MONOTONIC costs ~25 ns through the vDSO (an ordered rdtsc, a seqlock and a
 * multiply); the raw TSC ~10.  Where the kernel keeps time with the TSC itself (it
 * has checked that the TSC is invariant and synchronised across CPUs), this
 * extrapolates CLOCK_MONOTONIC from an anchor pair (tsc0, mono0) taken at most
 * SG_FC_ANCHOR_NS ago.  Each re-anchor re-measures the slope over the interval just
 * ended, so NTP slewing is followed; the error is a few ppm of SG_FC_ANCHOR_NS, i.e.
 * tens of ns (tests/test_clock.py bounds it).  Elsewhere, or with
 * SLUICEGATE_CLOCK=precise in the environment, it is sg_mono_ns().
 * The anchor is per process, published under a seqlock whose sequence never comes
 * back to a value once fields were written under it (so a reader preempted across
 * writers never accepts a mix); a reader that meets
 * a writer just reads the precise clock instead of waiting. */
#ifdef SG_HAVE_TSC
__extension__ typedef unsigned __int128 fc_u128;

#define SG_FC_ANCHOR_NS 10000000ULL  /* re-anchor every 10 ms */
#define SG_FC_CAL_NS 2000000ULL      /* the first slope is measured over >= 2 ms */
#define SG_FC_CAL_MAX_NS 20000000ULL /* ... and <= 20 ms: an older first point is retaken */

enum { FC_UNKNOWN = 0, FC_ON = 1, FC_OFF = 2 };
#define SG_FC_MAX_FAILS 16                /* pairs never clean, or slopes out of range: give up */
#define SG_FC_RECHECK_NS 1000000000ULL    /* look at the kernel's clocksource again every second */

static struct {
    uint64_t seq; /* odd while a writer changes the fields below; grows with every change */
    uint64_t ok;  /* 1 when (tsc0, mono0, mult, limit) are a usable anchor */
    uint64_t tsc0, mono0, mult, limit; /* mult: ns per tick << 32; limit: ticks per anchor */
    uint64_t cal_tsc, cal_mono;        /* first calibration point */
    uint64_t checked;                  /* mono time the clocksource was last read */
    int mode, fails;
} __attribute__((aligned(64))) fc;

#define FC_LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define FC_ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static void fc_after_fork(void) { /* a writer in another thread does not exist in the child */
    uint64_t s = FC_LD(fc.seq);
    if (s & 1) {
        FC_ST(fc.ok, 0);
        FC_ST(fc.seq, s + 1);
    }
}

static int kernel_uses_tsc(void) {
    char buf[32] = {0};
    int yes = 0;
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f) {
        yes = fgets(buf, sizeof buf, f) && strncmp(buf, "tsc\n", 4) == 0;
        fclose(f);
    }
    return yes;
}

static int fc_decide_mode(void) {
    const char *env = getenv("SLUICEGATE_CLOCK");
    int mode = (!env || strcmp(env, "precise") != 0) && kernel_uses_tsc() ? FC_ON : FC_OFF;
    if (mode == FC_ON && pthread_atfork(NULL, NULL, fc_after_fork) != 0) mode = FC_OFF;
    int expect = FC_UNKNOWN;
    if (!__atomic_compare_exchange_n(&fc.mode, &expect, mode, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return expect; /* another thread decided first */
    return mode;
}

static void fc_failed(void) {
    if (__atomic_add_fetch(&fc.fails, 1, __ATOMIC_ACQ_REL) >= SG_FC_MAX_FAILS) FC_ST(fc.mode, FC_OFF);
}

/* A (tsc, mono) pair read close together: the TSC midpoint of a clock read that
 * was not interrupted. */
static int fc_pair(uint64_t *tsc, uint64_t *mono) {
    for (int i = 0; i < 8; i++) { /* ~100 ticks when quiet; an exit to the hypervisor adds thousands */
        uint64_t a = __rdtsc(), m = sg_mono_ns(), b = __rdtsc();
        if (b > a && b - a < 400) {
            *tsc = a + (b - a) / 2;
            *mono = m;
            return 1;
        }
    }
    fc_failed(); /* a hypervisor trapping RDTSC, say: after a few of these, stop trying */
    return 0;
}

/* Slow path: no valid anchor, a writer active, or the anchor is too old.
 * A slope is only measured over a short interval.  During a system suspend the TSC
 * keeps counting while CLOCK_MONOTONIC stands still (the kernel adds the sleep to
 * CLOCK_BOOTTIME only), so over an interval that contains one the slope is wrong by
 * the share that was slept, and the clock extrapolated with it drifts off by up to
 * that share of an anchor period: milliseconds (tests/c/fast_clock.c).  After a
 * longer idle time a re-anchor keeps the slope it has and only moves the anchor; a
 * first point that old is retaken (this process has no slope yet).
 * The kernel may stop trusting the TSC at run time (its watchdog saw it drift):
 * the clocksource is looked at again once a second, at a re-anchor. */
static uint64_t fc_slow(uint64_t s) {
    int mode = FC_LD(fc.mode);
    if (mode == FC_UNKNOWN) mode = fc_decide_mode();
    if (mode != FC_ON || (s & 1)) return sg_mono_ns();
    int ok = FC_LD(fc.ok) != 0;
    uint64_t cal_mono = FC_LD(fc.cal_mono);
    if (!ok && cal_mono) { /* calibrating: precise time until the first interval has passed */
        uint64_t m = sg_mono_ns();
        if (m - cal_mono < SG_FC_CAL_NS) return m;
    }
    uint64_t tsc, mono;
    if (!fc_pair(&tsc, &mono)) return sg_mono_ns();
    if (!__atomic_compare_exchange_n(&fc.seq, &s, s + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return mono; /* another thread is re-anchoring */
    ok = FC_LD(fc.ok) != 0; /* as of our seq */
    uint64_t t0 = ok ? FC_LD(fc.tsc0) : FC_LD(fc.cal_tsc), m0 = ok ? FC_LD(fc.mono0) : FC_LD(fc.cal_mono);
    if (ok && tsc > t0 && tsc - t0 <= FC_LD(fc.limit)) {
        /* the anchor is not old: our caller's reading was behind it (RDTSC is not
           ordered after the loads before it; another socket's TSC may lag a little).
           A slope over these few hundred ticks would be off by tens of percent. */
        FC_ST(fc.seq, s); /* nothing written: the anchor stays valid */
        return mono;
    }
    if (mono - FC_LD(fc.checked) >= SG_FC_RECHECK_NS) {
        FC_ST(fc.checked, mono);
        if (!kernel_uses_tsc()) {
            FC_ST(fc.mode, FC_OFF);
            FC_ST(fc.ok, 0);
            FC_ST(fc.seq, s + 2);
            return mono;
        }
    }
    if (!t0 || tsc <= t0 || mono <= m0 || (!ok && mono - m0 > SG_FC_CAL_MAX_NS)) {
        /* first point, the TSC went back, or a first point too old to measure from: (re)start */
        FC_ST(fc.ok, 0);
        FC_ST(fc.cal_tsc, tsc);
        FC_ST(fc.cal_mono, mono);
    } else if (ok && tsc - t0 > 2 * FC_LD(fc.limit)) { /* idle: keep the slope, move the anchor */
        FC_ST(fc.tsc0, tsc);
        FC_ST(fc.mono0, mono);
    } else {
        uint64_t mult = (uint64_t)(((fc_u128)(mono - m0) << 32) / (tsc - t0));
        if (mult < (1ULL << 32) / 16 || mult > (1ULL << 32) * 16) { /* not 62 MHz..16 GHz: measure again */
            fc_failed();
            FC_ST(fc.ok, 0);
            FC_ST(fc.cal_tsc, tsc);
            FC_ST(fc.cal_mono, mono);
        } else {
            FC_ST(fc.tsc0, tsc);
            FC_ST(fc.mono0, mono);
            FC_ST(fc.mult, mult);
            FC_ST(fc.limit, (uint64_t)(((fc_u128)SG_FC_ANCHOR_NS << 32) / mult));
            FC_ST(fc.ok, 1);
            FC_ST(fc.fails, 0); /* only failures in a row count */
        }
    }
    FC_ST(fc.seq, s + 2);
    return mono;
}

uint64_t sg_fast_mono_ns(void) {
    uint64_t s = FC_LD(fc.seq);
    if (__builtin_expect(s & 1, 0)) return fc_slow(s);
    uint64_t ok = FC_LD(fc.ok), tsc0 = FC_LD(fc.tsc0), mono0 = FC_LD(fc.mono0), mult = FC_LD(fc.mult),
             limit = FC_LD(fc.limit);
    if (FC_LD(fc.seq) != s) return sg_mono_ns(); /* torn: a writer got in between */
    if (__builtin_expect(!ok, 0)) return fc_slow(s);
    uint64_t d = __rdtsc() - tsc0; /* a TSC behind the anchor wraps huge */
    if (__builtin_expect(d > limit, 0)) return fc_slow(s);
    return mono0 + (uint64_t)(((fc_u128)d * mult) >> 32);
}

int sg_fast_clock_mode(void) {
    int mode = FC_LD(fc.mode);
    return mode == FC_UNKNOWN ? fc_decide_mode() : mode;
}
#else
uint64_t sg_fast_mono_ns(void) { return sg_mono_ns(); }
int sg_fast_clock_mode(void) { return 2; }
#endif

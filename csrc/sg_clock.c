/* Clock and boot identity.  The decision path reads only sg_mono_ns(). */
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

/* Shared by the C table tests: a fresh heap store in T, stable test keys, and a
 * CHECK from check.h. */
#ifndef SG_TEST_HARNESS_H
#define SG_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>

#include "sg_core.h"
#include "check.h"

static sg_table T;
static void *region;
static uint64_t region_size;
/* room for `capacity` keys and at least as many permanent slots (perm_capacity is
 * SG_PERM_PER_POLICY per directory entry): the scenarios use either kind as keys */
static void make_store(uint64_t capacity) {
    uint64_t dir = (capacity + SG_PERM_PER_POLICY - 1) / SG_PERM_PER_POLICY;
    uint64_t size = sg_store_size(capacity, dir);
    region_size = size;
    free(region);
    region = calloc(1, size);
    if (!region || sg_store_init(region, size, capacity, dir) != SG_OK || sg_store_attach(&T, region, size) != SG_OK) {
        fprintf(stderr, "cannot make store\n");
        exit(2);
    }
}

static sg_hash128 key(uint64_t seed, unsigned k) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "key:%u", k);
    return sg_hash(buf, (size_t)n, seed);
}

#endif

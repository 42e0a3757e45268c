/* CHECK(cond, fmt, ...): report a failure and count it (atomically, so worker
 * threads may use it); the test's main returns non-zero when any were counted. */
#ifndef SG_TEST_CHECK_H
#define SG_TEST_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                          \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fprintf(stderr, "\n");                                                        \
            __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);                           \
        }                                                                                 \
    } while (0)

#define CHECK_FAILED() (__atomic_load_n(&failures, __ATOMIC_RELAXED) != 0)

#endif

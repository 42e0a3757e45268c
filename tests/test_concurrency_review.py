"""Review regression: the adaptive (strict) cap counts holders above a lowered limit, but the
count and the CAS were separate steps, so two acquirers could both pass the count."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

HARNESS = r"""
#include <pthread.h>
#include <stdio.h>
#include "sg_concurrency.h"

#define NREC 8
#define LIMIT 3
#define THREADS 4
#define ITERS 200000

static uint64_t ctl[4];
static uint64_t slots[NREC / 2][4];
static uint64_t *pairs[NREC / 2];
static sg_cap cap;
static uint64_t holding = 2, peak = 2; /* two holders left above the lowered limit */

static void *worker(void *arg) {
    uint64_t owner = ((uint64_t)(uintptr_t)arg + 1) << 42 | 7;
    for (int i = 0; i < ITERS; i++) {
        uint32_t idx;
        if (sg_cap_try_acquire(&cap, owner, (uint32_t)(uintptr_t)arg, (uint64_t)i + 1, &idx) != SG_OK) continue;
        uint64_t h = __atomic_add_fetch(&holding, 1, __ATOMIC_SEQ_CST);
        uint64_t p = __atomic_load_n(&peak, __ATOMIC_SEQ_CST);
        while (h > p && !__atomic_compare_exchange_n(&peak, &p, h, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
        __atomic_sub_fetch(&holding, 1, __ATOMIC_SEQ_CST);
        sg_cap_release(&cap, idx, owner);
    }
    return NULL;
}

int main(void) {
    for (int i = 0; i < NREC / 2; i++) pairs[i] = slots[i];
    cap.ctl = ctl; cap.pairs = pairs; cap.nrec = NREC; cap.strict = 1;
    if (sg_cap_init(&cap, NREC, 1, 0) != SG_OK) return 2;
    /* the limit was NREC; two permits are held at records 6 and 7; then it drops to LIMIT */
    uint32_t i6, i7;
    if (sg_cap_try_acquire(&cap, 99ull << 42, 6, 1, &i6) != SG_OK || i6 != 6) return 4;
    if (sg_cap_try_acquire(&cap, 99ull << 42, 7, 1, &i7) != SG_OK || i7 != 7) return 5;
    sg_cap_set_limit(&cap, LIMIT);
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    printf("%llu %u\n", (unsigned long long)peak, sg_cap_in_use(&cap));
    return 0;
}
"""


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_strict_cap_never_exceeds_a_lowered_limit(tmp_path):
    src = tmp_path / "harness.c"
    src.write_text(HARNESS)
    exe = tmp_path / "harness"
    cmd = ["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", f"-I{CSRC}", str(src),
           os.path.join(CSRC, "sg_concurrency.c"), "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert build.returncode == 0, build.stderr
    run = subprocess.run(["timeout", "20", str(exe)], capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 0, run.stderr
    peak, in_use = map(int, run.stdout.split())
    assert in_use == 2
    assert peak <= LIMIT_IN_HARNESS, f"{peak} permits held at once with a limit of 3"


LIMIT_IN_HARNESS = 3

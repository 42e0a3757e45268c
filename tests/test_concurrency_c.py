"""The C cap on its own: threads hammer sg_cap_try_acquire / sg_cap_release on plain memory,
built with ThreadSanitizer (and separately AddressSanitizer / UBSan), and the holder count
never exceeds the limit."""

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
#include <stdlib.h>
#include "sg_concurrency.h"

#define LIMIT 5
#define NREC 8
#define THREADS 6
#define ITERS 20000

static uint64_t ctl[4];
static uint64_t slots[NREC / 2][4];
static uint64_t *pairs[NREC / 2];
static sg_cap cap;
static uint64_t holding, peak, granted, bad;

static void *worker(void *arg) {
    uint64_t owner = ((uint64_t)(uintptr_t)arg + 1) << 42 | 7;
    for (int i = 0; i < ITERS; i++) {
        uint32_t idx;
        if (sg_cap_try_acquire(&cap, owner, (uint32_t)(uintptr_t)arg, (uint64_t)i + 1, &idx) != SG_OK) continue;
        uint64_t h = __atomic_add_fetch(&holding, 1, __ATOMIC_ACQ_REL);
        uint64_t p = __atomic_load_n(&peak, __ATOMIC_ACQUIRE);
        while (h > p && !__atomic_compare_exchange_n(&peak, &p, h, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {}
        if (idx >= LIMIT || __atomic_load_n(sg_cap_rec(&cap, idx), __ATOMIC_ACQUIRE) != owner)
            __atomic_add_fetch(&bad, 1, __ATOMIC_ACQ_REL);
        __atomic_add_fetch(&granted, 1, __ATOMIC_ACQ_REL);
        __atomic_sub_fetch(&holding, 1, __ATOMIC_ACQ_REL);
        if (!sg_cap_release(&cap, idx, owner)) __atomic_add_fetch(&bad, 1, __ATOMIC_ACQ_REL);
        /* a double release frees nothing: the record is free or another thread's */
        if (sg_cap_release(&cap, idx, owner)) __atomic_add_fetch(&bad, 1, __ATOMIC_ACQ_REL);
    }
    return NULL;
}

int main(void) {
    for (int i = 0; i < NREC / 2; i++) pairs[i] = slots[i];
    cap.ctl = ctl; cap.pairs = pairs; cap.nrec = NREC; cap.strict = 0;
    if (sg_cap_init(&cap, LIMIT, 1, 1) != SG_OK) return 2;
    if (sg_cap_records(&cap) != NREC) return 3;
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    printf("%llu %llu %llu %u\n", (unsigned long long)peak, (unsigned long long)granted,
           (unsigned long long)bad, sg_cap_in_use(&cap));
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("sanitizer", ["thread", "address,undefined"])
def test_c_cap_under_sanitizers(tmp_path, sanitizer):
    src = tmp_path / "harness.c"
    src.write_text(HARNESS)
    exe = tmp_path / "harness"
    cmd = ["gcc", "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", f"-fsanitize={sanitizer}", "-pthread",
           f"-I{CSRC}", str(src), os.path.join(CSRC, "sg_concurrency.c"), "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    err = build.stderr.lower()
    if build.returncode != 0 and any(k in err for k in ("libtsan", "libasan", "libubsan", "-ltsan", "-lasan",
                                                         "unsupported option", "unrecognized")):
        pytest.skip(f"this toolchain has no -fsanitize={sanitizer} runtime: {build.stderr[:200]}")
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=1")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert run.returncode == 0, run.stderr
    assert "WARNING" not in run.stderr and "ERROR" not in run.stderr, run.stderr
    peak, granted, bad, in_use = map(int, run.stdout.split())
    assert bad == 0 and in_use == 0
    assert 1 <= peak <= 5
    assert granted > 0

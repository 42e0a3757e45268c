"""The C limiter on its own, under ThreadSanitizer and AddressSanitizer.

A small C driver (below) is compiled with csrc/ and run: 4 threads race on one hot
key per algorithm (budget 10,000, no refill) while churning short-lived keys through
a small table, so that slot claims, reclaims of idle keys and decisions on the hot
key interleave.  The hot key must admit exactly its budget, and the sanitizers must
report nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"

DRIVER = r"""
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_limiter.h"

#define THREADS 4
#define BUDGET 10000
static sg_table T;
static uint64_t fake_now = 5000000000ULL; /* shared fake clock: 1 us per operation */
static sg_rate hot, churn;
static uint64_t admitted[THREADS], errors[THREADS], churn_ok[THREADS];
static int ops;
static int last_rc; /* an error's code, for the report */
static uint64_t seed; /* a key namespace per algorithm, as the Python layer does */

static void *run(void *arg) {
    int id = (int)(long)arg;
    char key[32];
    sg_decision d;
    sg_hash128 hh = sg_hash("hot", 3, seed);
    for (int i = 0; i < ops; i++) {
        uint64_t now = __atomic_add_fetch(&fake_now, 1000, __ATOMIC_RELAXED);
        int rc = sg_rate_apply(&T, hh, &hot, 1, now, 1, &d);
        if (rc != SG_OK) { errors[id]++; __atomic_store_n(&last_rc, rc, __ATOMIC_RELAXED); }
        else if (d.allowed) admitted[id]++;
        int n = snprintf(key, sizeof key, "t%d:%d", id, i);
        sg_hash128 hk = sg_hash(key, (size_t)n, seed + 100);
        rc = sg_rate_apply(&T, hk, &churn, 1, now, 1, &d);
        if (rc == SG_OK && d.allowed) churn_ok[id]++;
        if (i % 7 == 0) sg_rate_apply(&T, hh, &hot, 1, now, 0, &d); /* peeks never create */
        if (i % 5 == 0) { /* the batch path: a run of the hot key decided with one CAS */
            sg_hash128 run[3] = {hh, hh, hh};
            uint8_t ok[3];
            size_t done = 0;
            if (sg_rates_apply_many(&T, run, 3, &hot, 1, 1, now, ok, &done) != SG_OK || done != 3) {
                errors[id]++;
                __atomic_store_n(&last_rc, -1000 - (int)done, __ATOMIC_RELAXED);
            }
            else admitted[id] += (uint64_t)ok[0] + ok[1] + ok[2];
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    ops = argc > 1 ? atoi(argv[1]) : 20000;
    uint64_t cap = 256, size = sg_store_size(cap, 4);
    void *mem = aligned_alloc(4096, size);
    memset(mem, 0, size);
    if (sg_store_init(mem, size, cap, 4) != SG_OK || sg_store_attach(&T, mem, size) != SG_OK) return 2;
    for (int algo = SG_ALGO_GCRA; algo <= SG_ALGO_SLIDING; algo++) {
        /* budget 10,000 per day: no refill within the run's fake seconds */
        hot = (sg_rate){(uint32_t)algo, BUDGET, 86400000000000ULL, 8640000000ULL};
        churn = (sg_rate){(uint32_t)algo, 5, 1000000ULL, 200000ULL}; /* 5 per ms: idle 1-2 ms later */
        if (sg_rate_validate(&hot) || sg_rate_validate(&churn)) return 3;
        seed = 7 + (uint64_t)algo;
        sg_hash128 hh = sg_hash("hot", 3, seed);
        memset(admitted, 0, sizeof admitted);
        memset(errors, 0, sizeof errors);
        memset(churn_ok, 0, sizeof churn_ok);
        /* The table is saturated by design (about 1,000 churn keys live per fake ms
           against 256 slots), so creating the hot key inside the race could meet a
           genuinely full table.  Create it (admitting 1) once the last churn keys
           are idle: from then on it is never idle, so any error is a real bug. */
        sg_decision first;
        fake_now += 10000000ULL;
        if (sg_rate_apply(&T, hh, &hot, 1, fake_now, 1, &first) != SG_OK || !first.allowed) return 5;
        admitted[0] = 1;
        pthread_t th[THREADS];
        for (long i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, run, (void *)i);
        for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
        uint64_t total = 0, errs = 0, churned = 0;
        for (int i = 0; i < THREADS; i++) { total += admitted[i]; errs += errors[i]; churned += churn_ok[i]; }
        sg_decision d;
        sg_rate_apply(&T, hh, &hot, 1, fake_now, 0, &d);
        printf("algo %d admitted %llu errors %llu (rc %d) churn %llu remaining %llu\n", algo,
               (unsigned long long)total, (unsigned long long)errs, last_rc, (unsigned long long)churned,
               (unsigned long long)d.remaining);
        if (total != BUDGET || errs != 0 || d.remaining != 0 || churned == 0) return 1;
        /* the table is back to a sane count: hot key + at most the live churn keys */
        if (sg_live_count(__atomic_load_n(&T.hdr->live, __ATOMIC_ACQUIRE)) > cap) return 4;
    }
    free(mem);
    return 0;
}
"""


def _build(tmp_path: Path, sanitizer: str) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler is needed to build sluicegate at all"
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    r = subprocess.run([cc, f"-fsanitize={sanitizer}", str(probe), "-o", str(tmp_path / "probe")],
                       capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0:  # e.g. a build image without libtsan: an environment limit, not a failure
        pytest.skip(f"this toolchain cannot build with -fsanitize={sanitizer}: {r.stderr.strip()[:200]}")
    src = tmp_path / "driver.c"
    src.write_text(DRIVER)
    exe = tmp_path / f"driver-{sanitizer}"
    sources = [str(src)] + [str(p) for p in sorted(CSRC.glob("*.c"))]
    cmd = [cc, "-std=c11", "-O1", "-g", f"-fsanitize={sanitizer}", "-fno-omit-frame-pointer", "-Wall", "-Wextra",
           "-Wno-unused-function", f"-I{CSRC}", *sources, "-o", str(exe), "-pthread"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.parametrize("sanitizer", ["thread", "address,undefined"])
def test_c_core_exact_under_sanitizers(tmp_path, sanitizer):
    exe = _build(tmp_path, sanitizer)
    env = {"TSAN_OPTIONS": "halt_on_error=1 exitcode=66", "ASAN_OPTIONS": "detect_leaks=1 exitcode=66",
           "UBSAN_OPTIONS": "halt_on_error=1 exitcode=66"}
    r = subprocess.run([str(exe), "15000"], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-4000:]}"
    assert r.stdout.count("admitted 10000 errors 0 ") == 3, r.stdout
    assert "WARNING" not in r.stderr and "ERROR" not in r.stderr, r.stderr[-4000:]

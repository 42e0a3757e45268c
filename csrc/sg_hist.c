/* Lock-free latency histograms in shared memory: see sg_hist.h. */
#include <stdio.h>
#include <string.h>

#include "sg_hist.h"

int sg_hist_open(sg_table *t, uint64_t seed, const char *part, size_t len, int create, sg_hist *h) {
    char name[96];
    int found = 0;
    if (len < 1 || len > 64) return SG_ERR_ARG;
    memset(h, 0, sizeof *h);
    for (unsigned j = 0; j < SG_HIST_SLOTS; j++) {
        /* "hist1.<part>:<j>": the key of slot j in the policy's namespace */
        int n = snprintf(name, sizeof name, "%s.%.*s:%u", SG_HIST_TAG, (int)len, part, j);
        if (n <= 0 || (size_t)n >= sizeof name) return SG_ERR_ARG;
        uint64_t idx;
        uint8_t tag;
        int rc = sg_table_get(t, sg_hash(name, (size_t)n, seed), SG_SLOT_PERMANENT, 0, 0, sg_store_now(t), create,
                              &idx, &tag);
        if (rc == SG_NOTFOUND && !create) continue;
        if (rc != SG_OK) return rc;
        h->w[j] = sg_words(t, idx);
        found++;
    }
    return found ? SG_OK : SG_NOTFOUND;
}

void sg_hist_read(const sg_hist *h, uint64_t counts[SG_HIST_BUCKETS], uint64_t *sum_ns) {
    for (unsigned k = 0; k < SG_HIST_BUCKETS; k++) {
        const uint64_t *p = sg_hist_word(h, k);
        counts[k] = p ? sg_load(p) : 0;
    }
    const uint64_t *s = sg_hist_word(h, SG_HIST_SUM);
    *sum_ns = s ? sg_load(s) : 0;
}

void sg_hist_clear(const sg_hist *h) {
    for (unsigned k = 0; k < SG_HIST_WORDS; k++) {
        uint64_t *p = sg_hist_word(h, k);
        if (p) sg_store(p, 0);
    }
}

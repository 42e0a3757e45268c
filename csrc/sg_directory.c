/* The policy directory: see sg_directory.h. */
#define _POSIX_C_SOURCE 200809L
#include "sg_directory.h"

#include <sched.h>
#include <string.h>

#define STAMP_BITS 40
#define STAMP_MASK ((1ULL << STAMP_BITS) - 1)

static sg_hash128 entry_key(uint32_t kind, const char *name, size_t len) {
    return sg_hash(name, len, ((uint64_t)kind << 32) ^ 0x6469726563ULL /* "direc" */);
}

/* A claim word: [token:24 | store time in ~1 ms units:40], never 0. */
static uint64_t claim_word(uint64_t token, uint64_t now) {
    uint64_t w = ((token & 0xffffffULL) << STAMP_BITS) | ((now >> 20) & STAMP_MASK);
    return w ? w : 1;
}

static int claim_stale(uint64_t c, uint64_t now) {
    int64_t age = (int64_t)((((now >> 20) - (c & STAMP_MASK)) & STAMP_MASK) << 24) >> 24; /* signed 40 bits */
    return age > (int64_t)(SG_DIR_STALE_NS >> 20) || age < -10000; /* abandoned, or garbage from the future */
}

/* Take claim word *w for this writer, waiting (bounded) for a live claim and taking
 * over a stale one.  Returns the claim held, or 0 after ~2 stale periods. */
static uint64_t claim(sg_table *t, uint64_t *w, uint64_t token) {
    uint64_t t0 = sg_store_now(t);
    for (unsigned spins = 0;; spins++) {
        uint64_t now = sg_store_now(t), cur = sg_load(w);
        if (cur == 0 || claim_stale(cur, now)) {
            uint64_t mine = claim_word(token, now);
            if (mine == cur) mine ^= 1ULL << STAMP_BITS; /* never the value we replace */
            if (sg_cas(w, &cur, mine)) return mine;
            continue;
        }
        if (now - t0 > 2 * SG_DIR_STALE_NS) return 0;
        if (spins > 64) sched_yield();
    }
}

static void unclaim(uint64_t *w, uint64_t mine) { sg_cas(w, &mine, 0); }

/* Entries are never removed, so a probe sequence ends at the first free entry. */
static int lookup(sg_table *t, sg_hash128 k, uint64_t *idx, uint64_t *free_idx) {
    uint64_t n = t->ndir, home = k.a % n;
    *free_idx = UINT64_MAX;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t j = (home + i) % n;
        sg_dir_entry *e = &t->dir[j];
        uint64_t c = sg_load(&e->ctl);
        if (c == 0) {
            *free_idx = j;
            return SG_NOTFOUND;
        }
        if (c == SG_DIR_LIVE && e->key_a == k.a && e->key_b == k.b) {
            *idx = j;
            return SG_OK;
        }
    }
    return SG_NOTFOUND;
}

int sg_dir_find(sg_table *t, uint32_t kind, const char *name, size_t len, int create, uint64_t *idx) {
    if (len == 0 || len > SG_DIR_NAME_MAX) return SG_ERR_ARG;
    if (t->ndir == 0) return create ? SG_ERR_FULL : SG_NOTFOUND;
    sg_hash128 k = entry_key(kind, name, len);
    uint64_t free_idx;
    if (lookup(t, k, idx, &free_idx) == SG_OK) return SG_OK;
    if (!create) return SG_NOTFOUND;
    uint64_t token = k.b ^ (uint64_t)sg_mono_ns();
    uint64_t mine = claim(t, &t->hdr->dir_lock, token);
    if (!mine) return SG_DIR_BUSY;
    int rc;
    if (lookup(t, k, idx, &free_idx) == SG_OK) { /* created while we waited */
        rc = SG_OK;
    } else if (free_idx == UINT64_MAX) {
        rc = SG_ERR_FULL;
    } else {
        /* only the lock holder writes a free entry (a dead holder's half-written one
           is free again: its ctl is still 0); the CAS of ctl publishes it */
        sg_dir_entry *e = &t->dir[free_idx];
        memset(e->doc, 0, sizeof e->doc);
        sg_store(&e->version, 0);
        sg_store(&e->writer, 0);
        e->key_a = k.a;
        e->key_b = k.b;
        e->kind = kind;
        e->name_len = (uint32_t)len;
        memset(e->name, 0, sizeof e->name);
        memcpy(e->name, name, len);
        e->created_wall = e->updated_wall = sg_wall_ns();
        uint64_t zero = 0;
        if (sg_load(&t->hdr->dir_lock) == mine && sg_cas(&e->ctl, &zero, SG_DIR_LIVE)) {
            *idx = free_idx;
            rc = SG_OK;
        } else {
            rc = SG_DIR_BUSY; /* taken over while stalled: let the caller look again */
        }
    }
    unclaim(&t->hdr->dir_lock, mine);
    return rc;
}

int sg_dir_read(sg_table *t, uint64_t idx, char *buf, size_t cap, size_t *len, uint64_t *version) {
    if (idx >= t->ndir) return SG_ERR_ARG;
    sg_dir_entry *e = &t->dir[idx];
    if (sg_load(&e->ctl) != SG_DIR_LIVE) return SG_NOTFOUND;
    for (unsigned tries = 0; tries < 1000; tries++) {
        uint64_t v = sg_load(&e->version);
        *version = v;
        *len = 0;
        if (v == 0) return SG_OK;
        const sg_dir_doc *d = &e->doc[v & 1];
        uint64_t n = sg_load(&d->len);
        if (n > SG_DIR_DOC_MAX || n > cap) return SG_ERR_HEADER;
        memcpy(buf, d->data, n);
        uint64_t sum = sg_load(&d->sum);
        uint64_t v2 = sg_load(&e->version);
        if (sum == sg_hash(buf, n, v).a) {
            /* doc[v & 1] is only rewritten for version v + 2, which needs v + 1 first */
            if (v2 == v || v2 == v + 1) {
                *len = n;
                return SG_OK;
            }
        } else if (v2 == v) {
            return SG_ERR_HEADER; /* a stable version with a bad checksum: damaged */
        }
        if (tries > 16) sched_yield();
    }
    return SG_DIR_BUSY;
}

int sg_dir_write(sg_table *t, uint64_t idx, const char *doc, size_t len, uint64_t expect, uint64_t token,
                 uint64_t *version) {
    if (idx >= t->ndir || len > SG_DIR_DOC_MAX) return SG_ERR_ARG;
    sg_dir_entry *e = &t->dir[idx];
    if (sg_load(&e->ctl) != SG_DIR_LIVE) return SG_NOTFOUND;
    uint64_t mine = claim(t, &e->writer, token);
    if (!mine) return SG_DIR_BUSY;
    uint64_t v = sg_load(&e->version);
    *version = v;
    if (expect && v != expect) {
        unclaim(&e->writer, mine);
        return SG_DIR_BUSY;
    }
    sg_dir_doc *d = &e->doc[(v + 1) & 1];
    if (sg_load(&e->writer) != mine) return SG_DIR_BUSY; /* taken over while stalled */
    sg_store(&d->len, 0);
    memcpy(d->data, doc, len);
    sg_store(&d->sum, sg_hash(doc, len, v + 1).a);
    sg_store(&d->len, len);
    if (sg_load(&e->writer) != mine || !sg_cas(&e->version, &v, v + 1)) return SG_DIR_BUSY;
    sg_store(&e->updated_wall, sg_wall_ns());
    *version = v + 1;
    unclaim(&e->writer, mine);
    return SG_OK;
}

int sg_dir_entry_info(sg_table *t, uint64_t idx, uint32_t *kind, char *name, size_t *name_len,
                      uint64_t *created_wall, uint64_t *updated_wall) {
    if (idx >= t->ndir) return SG_ERR_ARG;
    sg_dir_entry *e = &t->dir[idx];
    if (sg_load(&e->ctl) != SG_DIR_LIVE) return SG_NOTFOUND;
    uint32_t n = e->name_len;
    if (n == 0 || n > SG_DIR_NAME_MAX) return SG_ERR_HEADER;
    *kind = e->kind;
    memcpy(name, e->name, n);
    *name_len = n;
    *created_wall = sg_load(&e->created_wall);
    *updated_wall = sg_load(&e->updated_wall);
    return SG_OK;
}

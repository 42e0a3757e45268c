/* Store header and the lock-free key table.
 *
 * A key (128-bit hash) lives in one 64-byte slot within SG_MAX_PROBE slots of its
 * home.  Lookups scan [home, home + plen[home]] and never stop early at an empty
 * slot, because slots are freed and reused.  The slot's ctl word carries
 * state | generation tag | claim stamp; a claim moves ctl EMPTY/LIVE -> CLAIMING
 * with one CAS, writes the identity, checks for a concurrent claim of the same key
 * and publishes with a second CAS.  Every write a claimer makes after its ctl CAS
 * is a CAS from a value it read, and re-checked that ctl was still its claim, after
 * that CAS, so a claimer that was presumed dead (stalled past SG_CLAIM_STALE_NS) and
 * taken over fails (see write_identity for the one window left open).  Deciders
 * also re-check ctl after loading a tagged word (sg_slot_current).
 *
 * A reclaimable slot's state is the single word v[0] = [tag | payload].  Deciders
 * CAS it expecting the tag they saw in ctl; reclaiming first seals v[0] to 0 (from
 * the idle value it checked), so a decision meant for the old key can never land
 * on the new one.
 */
#define _POSIX_C_SOURCE 200809L
#include <sched.h>
#include <string.h>

#include "sg_core.h"
#include "sg_directory.h"

/* ctl word: [state:2 | perm:1 | fromlive:1 | tag:8 | prev:8 | stamp:44] */
enum { ST_EMPTY = 0, ST_CLAIMING = 1, ST_LIVE = 2 };
#define CTL_STATE(c) ((unsigned)((c) >> 62))
#define CTL_PERM(c) ((unsigned)(((c) >> 61) & 1))
#define CTL_FROMLIVE(c) ((unsigned)(((c) >> 60) & 1))
#define CTL_TAG(c) ((uint8_t)((c) >> 52))
#define CTL_PREV(c) ((uint8_t)((c) >> 44))
#define CTL_STAMP(c) ((c) & ((1ULL << 44) - 1))
#define STAMP_SHIFT 20 /* stamp unit ~1.05 ms */

static inline uint64_t mk_ctl(unsigned st, unsigned perm, unsigned fromlive, uint8_t tag, uint8_t prev,
                              uint64_t now) {
    return ((uint64_t)st << 62) | ((uint64_t)perm << 61) | ((uint64_t)fromlive << 60) | ((uint64_t)tag << 52) |
           ((uint64_t)prev << 44) | ((now >> STAMP_SHIFT) & ((1ULL << 44) - 1));
}

static inline uint8_t next_tag(uint8_t t) { return t == 255 ? 1 : (uint8_t)(t + 1); }
static inline uint64_t ld_sc(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline int cas_sc(uint64_t *p, uint64_t *exp, uint64_t want) {
    return __atomic_compare_exchange_n(p, exp, want, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* ---- header ---------------------------------------------------------------- */

/* Keys and the policies' permanent slots share one table, each counted against its
 * own budget (capacity keys, perm_capacity permanent slots); the table is at least
 * twice their sum, so that a key finds room within SG_MAX_PROBE of its home. */
static uint64_t nslots_for(uint64_t capacity, uint64_t perm_capacity) {
    uint64_t want = (capacity + perm_capacity) * 2, n = 64;
    while (n < want) n <<= 1;
    return n;
}

static uint64_t perm_capacity_for(uint64_t dir_entries) { return dir_entries * SG_PERM_PER_POLICY; }

static uint64_t size_for_nslots(uint64_t nslots) {
    uint64_t bytes = SG_HEADER_SIZE + nslots * SG_SLOT_SIZE + nslots;
    return (bytes + 4095) & ~4095ULL;
}

#define SG_MAX_CAPACITY (1ULL << 28)

static uint64_t dir_offset_for(uint64_t nslots) { return size_for_nslots(nslots); }

uint64_t sg_default_dir_entries(uint64_t capacity) {
    uint64_t n = capacity / 128;
    return n < 64 ? 64 : n > 320 ? 320 : n;
}

uint64_t sg_store_size(uint64_t capacity, uint64_t dir_entries) {
    if (capacity == 0 || capacity > SG_MAX_CAPACITY || dir_entries > SG_DIR_MAX_ENTRIES) return 0;
    return dir_offset_for(nslots_for(capacity, perm_capacity_for(dir_entries))) + dir_entries * SG_DIR_ENTRY_SIZE;
}

static uint64_t header_checksum(const sg_header *h) {
    return sg_hash(h, offsetof(sg_header, checksum), 0x686561646572ULL).a;
}

int sg_store_init(void *base, uint64_t size, uint64_t capacity, uint64_t dir_entries) {
    uint64_t need = sg_store_size(capacity, dir_entries);
    if (!need || size < need) return SG_ERR_ARG;
    sg_header *h = (sg_header *)base;
    memset(h, 0, sizeof *h);
    h->magic = SG_MAGIC64;
    h->version = SG_LAYOUT_VERSION;
    h->header_size = SG_HEADER_SIZE;
    h->capacity = capacity;
    h->perm_capacity = perm_capacity_for(dir_entries);
    h->nslots = nslots_for(capacity, h->perm_capacity);
    h->slot_size = SG_SLOT_SIZE;
    h->max_probe = SG_MAX_PROBE;
    h->total_size = need;
    h->created_wall = sg_wall_ns();
    h->dir_entries = dir_entries;
    h->dir_offset = dir_offset_for(h->nslots);
    h->checksum = header_checksum(h);
    /* store time starts at 1 s so that 0 can mean "never" in payloads */
    h->base_mono = (int64_t)sg_mono_ns() - 1000000000LL;
    h->wall_epoch = sg_wall_ns() - 1000000000ULL;
    h->boot_key = sg_boot_key();
    return SG_OK; /* published by the caller (link() of a finished file, or fork after init) */
}

/* After a reboot the monotonic clock restarted: move the base so that store time
 * continues from wall-clock time since the store's epoch.  One attacher rebases
 * (boot_key == 1 while it does); others wait for it, or take over after 1 s. */
static int rebase_clock(sg_header *h) {
    uint64_t cur = sg_boot_key();
    uint64_t t0 = sg_mono_ns();
    for (;;) {
        uint64_t bk = __atomic_load_n(&h->boot_key, __ATOMIC_ACQUIRE);
        if (bk == cur) return SG_OK;
        if (bk == 1 && sg_mono_ns() - t0 < 1000000000ULL) {
            sched_yield();
            continue;
        }
        if (!__atomic_compare_exchange_n(&h->boot_key, &bk, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
        uint64_t wall = sg_wall_ns(), epoch = __atomic_load_n(&h->wall_epoch, __ATOMIC_RELAXED);
        uint64_t since = wall > epoch ? wall - epoch : 1000000000ULL;
        uint64_t hw = __atomic_load_n(&h->high_water, __ATOMIC_ACQUIRE);
        /* never back: decisions trail the mark by < 2 s (sg_store_mark_lazy) */
        if (hw < (1ULL << 62) && since < hw + 2000000000ULL) since = hw + 2000000000ULL;
        __atomic_store_n(&h->base_mono, (int64_t)sg_mono_ns() - (int64_t)since, __ATOMIC_RELEASE);
        __atomic_store_n(&h->boot_key, cur, __ATOMIC_RELEASE);
        return SG_OK;
    }
}

int sg_store_attach(sg_table *t, void *base, uint64_t size) {
    memset(t, 0, sizeof *t);
    if (!base || size < SG_HEADER_SIZE) return SG_ERR_SIZE;
    sg_header *h = (sg_header *)base;
    if (h->magic != SG_MAGIC64) return SG_ERR_HEADER;
    if (h->version != SG_LAYOUT_VERSION) return SG_ERR_VERSION;
    if (h->checksum != header_checksum(h)) return SG_ERR_HEADER;
    if (h->header_size != SG_HEADER_SIZE || h->slot_size != SG_SLOT_SIZE || h->max_probe != SG_MAX_PROBE)
        return SG_ERR_HEADER;
    if (h->capacity == 0 || h->capacity > SG_MAX_CAPACITY || h->dir_entries > SG_DIR_MAX_ENTRIES ||
        h->perm_capacity != perm_capacity_for(h->dir_entries) ||
        h->nslots != nslots_for(h->capacity, h->perm_capacity) ||
        h->dir_entries > SG_DIR_MAX_ENTRIES || h->dir_offset != dir_offset_for(h->nslots) ||
        h->total_size != h->dir_offset + h->dir_entries * SG_DIR_ENTRY_SIZE)
        return SG_ERR_HEADER;
    if (h->total_size > size) return SG_ERR_SIZE;
    if (rebase_clock(h) != SG_OK) return SG_ERR_CLOCK;
    t->hdr = h;
    t->slots = (sg_slot *)((char *)base + SG_HEADER_SIZE);
    t->plen = (uint8_t *)((char *)base + SG_HEADER_SIZE + h->nslots * SG_SLOT_SIZE);
    t->mask = h->nslots - 1;
    t->dir = (sg_dir_entry *)((char *)base + h->dir_offset);
    t->ndir = h->dir_entries;
    t->base_mono = __atomic_load_n(&h->base_mono, __ATOMIC_ACQUIRE);
    sg_store_mark(t, sg_store_now(t));
    return SG_OK;
}

void sg_store_mark(sg_table *t, uint64_t now) {
    uint64_t hw = __atomic_load_n(&t->hdr->high_water, __ATOMIC_ACQUIRE);
    /* a mark >= 2^62 is garbage (rebase_clock ignores it): replace it too */
    while ((now >= hw + 1000000000ULL || hw >= (1ULL << 62)) && now != hw &&
           !__atomic_compare_exchange_n(&t->hdr->high_water, &hw, now, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

/* The reservation count of keys (perm 0: against capacity) or of permanent slots
 * (perm 1: against perm_capacity). */
static inline uint64_t *live_of(const sg_table *t, unsigned perm) {
    return perm ? &t->hdr->perm_live : &t->hdr->live;
}

/* Never below zero: a corrupted body can hold claims nobody counted. */
static void live_dec(sg_table *t, unsigned perm) {
    uint64_t *w = live_of(t, perm);
    uint64_t cur = __atomic_load_n(w, __ATOMIC_ACQUIRE);
    while (sg_live_count(cur) &&
           !__atomic_compare_exchange_n(w, &cur, cur + SG_LIVE_LESS, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

/* ---- lookup ------------------------------------------------------------------ */

static inline unsigned probe_len(const sg_table *t, uint64_t home) {
    unsigned p = __atomic_load_n(&t->plen[home], __ATOMIC_ACQUIRE);
    return p < SG_MAX_PROBE ? p : SG_MAX_PROBE - 1; /* garbage-proof */
}

static void raise_probe_len(sg_table *t, uint64_t home, unsigned d) {
    uint8_t cur = __atomic_load_n(&t->plen[home], __ATOMIC_ACQUIRE);
    while (cur < d && !__atomic_compare_exchange_n(&t->plen[home], &cur, (uint8_t)d, 0, __ATOMIC_SEQ_CST,
                                                   __ATOMIC_ACQUIRE)) {
    }
}

static inline int ids_match(sg_slot *s, sg_hash128 h, uint8_t tag) {
    return sg_load(&s->id1) == sg_id1(h, tag) && sg_load(&s->id2) == sg_id2(h, tag);
}

static int find_live(sg_table *t, sg_hash128 h, uint64_t *idx, uint8_t *tag) {
    uint64_t home = h.a & t->mask;
    /* most keys sit in their home slot: check it before touching plen's cache line */
    uint64_t c0 = sg_load(&t->slots[home].ctl);
    if (CTL_STATE(c0) == ST_LIVE && ids_match(&t->slots[home], h, CTL_TAG(c0))) {
        *idx = home;
        *tag = CTL_TAG(c0);
        return SG_OK;
    }
    unsigned n = probe_len(t, home);
    for (unsigned d = 1; d <= n; d++) {
        uint64_t i = (home + d) & t->mask;
        sg_slot *s = &t->slots[i];
        uint64_t c = sg_load(&s->ctl);
        if (CTL_STATE(c) != ST_LIVE) continue;
        if (!ids_match(s, h, CTL_TAG(c))) continue;
        *idx = i;
        *tag = CTL_TAG(c);
        return SG_OK;
    }
    return SG_NOTFOUND;
}

/* ---- claim, abort, takeover ---------------------------------------------------- */

/* Claim stamps use the real store clock (never an algorithm's `now`, which tests
 * drive by hand).  Ages are signed: a stamp slightly ahead of our reading is a
 * fresh claim by a faster thread; one far ahead, like one far behind, is garbage
 * or abandoned. */
static inline int claim_is_stale(uint64_t c, uint64_t real_now) {
    uint64_t nowst = (real_now >> STAMP_SHIFT) & ((1ULL << 44) - 1);
    int64_t age = (int64_t)(((nowst - CTL_STAMP(c)) & ((1ULL << 44) - 1)) << 20) >> 20; /* sign-extend 44 bits */
    const int64_t stale = (int64_t)(SG_CLAIM_STALE_NS >> STAMP_SHIFT);
    return age > stale || age < -10000; /* > 200 ms old, or > ~10 s in the future */
}

static sg_idle_fn idle_test; /* the algorithms' (sg_table_set_idle) */
uint64_t sg_reclaimed_here;

/* An idle key's slot went to another key (or was freed for one): counted in the store and
 * in this process. */
static inline void count_reclaim(sg_table *t) {
    __atomic_fetch_add(&t->hdr->reclaimed, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sg_reclaimed_here, 1, __ATOMIC_RELAXED);
}

void sg_table_set_idle(sg_idle_fn fn) { __atomic_store_n(&idle_test, fn, __ATOMIC_RELEASE); }

/* Is word v (just loaded from s->v[0]) an idle one?  now == 0: judge it at the store
 * time read here, after v was loaded.  A time read earlier can be older than v's
 * last decision (a caller stalled between its clock read and this load, a batch's
 * single instant): then a key used in the current window looks idle, is reclaimed,
 * and its count is lost.  A non-zero now is a caller's own instant (a fake clock). */
static inline int slot_idle(const sg_table *t, sg_slot *s, uint8_t tag, uint64_t v, uint64_t now) {
    if (SG_TAG(v) != tag) return 0;
    uint64_t m = sg_load(&s->meta);
    if (SG_TAG(m) != tag) return 0;
    if (!now) now = sg_store_fast_now(t);
    sg_idle_fn idle = __atomic_load_n(&idle_test, __ATOMIC_ACQUIRE);
    return idle ? idle((uint32_t)((m >> 48) & 0xff), m & ((1ULL << 48) - 1), SG_PAYLOAD(v), now) : 0;
}

/* Give up a claim we hold (ctl == mine): seal v[0] and mark the slot empty.
 * Only a word carrying this claim's own tag is sealed (the claim wrote it; a claim
 * from a live slot sealed the old key's word already).  A taker or claimer that
 * stalls before this load and resumes after the slot was reused must not seal the
 * word of the key that lives there now. */
static void abort_claim(sg_table *t, sg_slot *s, uint64_t mine) {
    uint64_t v = sg_load(&s->v[0]);
    if (v && SG_TAG(v) == CTL_TAG(mine)) sg_cas(&s->v[0], &v, 0);
    if (cas_sc(&s->ctl, &mine, mk_ctl(ST_EMPTY, 0, 0, CTL_TAG(mine), 0, 0)))
        live_dec(t, CTL_PERM(mine)); /* the slot held the reservation of the claim's kind */
}

/* A claim whose stamp is older than SG_CLAIM_STALE_NS: its claimer is presumed
 * dead.  If it was reclaiming a live key and had not sealed it, the key's state
 * is kept (restored) unless it is idle, in which case we finish by freeing. */
static void take_over(sg_table *t, sg_slot *s, uint64_t c, uint64_t now) {
    if (CTL_FROMLIVE(c)) {
        uint64_t v = sg_load(&s->v[0]);
        if (SG_TAG(v) == CTL_PREV(c) && v) {
            if (!slot_idle(t, s, CTL_PREV(c), v, now)) {
                /* only reclaimable keys are ever displaced: c's perm bit is the claimer's */
                uint64_t back = mk_ctl(ST_LIVE, 0, 0, CTL_PREV(c), 0, now ? now : sg_store_now(t));
                cas_sc(&s->ctl, &c, back);
                return;
            }
            if (!sg_cas(&s->v[0], &v, 0)) return; /* changed under us: look again later */
        }
    }
    abort_claim(t, s, c);
}

/* Wait (bounded) until slot s's ctl is no longer c; take over a stale claim. */
static void wait_claim(sg_table *t, sg_slot *s, uint64_t c) {
    for (unsigned spins = 0;; spins++) {
        if (sg_load(&s->ctl) != c) return;
        uint64_t now = sg_store_now(t);
        if (claim_is_stale(c, now)) {
            take_over(t, s, c, now);
            return;
        }
        if (spins > 64) sched_yield();
    }
}

/* Wait (bounded) until a claim's identity is written or its ctl changes. */
static void wait_identity(sg_table *t, sg_slot *s, uint64_t c) {
    for (unsigned spins = 0;; spins++) {
        if (sg_load(&s->ctl) != c) return;
        if (SG_TAG(sg_load(&s->id1)) == CTL_TAG(c) && SG_TAG(sg_load(&s->id2)) == CTL_TAG(c)) return;
        uint64_t now = sg_store_now(t);
        if (claim_is_stale(c, now)) {
            take_over(t, s, c, now);
            return;
        }
        if (spins > 64) sched_yield();
    }
}

/* Check the window for another claim of the same key.  Returns 1 if ours may be
 * published, 0 if we must abort (another slot has or will have the key).
 * Rule: the claim nearer home wins; a farther claim that sees a nearer one for the
 * same key (or one whose identity is not yet written) yields or waits for it.
 * A nearer claim that wins is returned in *wait_s / *wait_c (when wait_s is given):
 * the caller aborts its own claim and then waits for that one to publish, give up or
 * go stale (wait_claim), instead of claiming again at once.  Claiming again at once
 * spins through sg_table_get's attempts while the winner is preempted (a busy host
 * parks it for tens of ms), and ends in SG_ERR_FULL on a store with plenty of room. */
static int no_rival(sg_table *t, sg_hash128 h, uint64_t home, unsigned mine_d, sg_slot **wait_s,
                    uint64_t *wait_c) {
    /* seq_cst loads pair with the seq_cst identity CASes (a Dekker handshake): of two
       rival claimers, at least one sees the other's identity. */
    unsigned n = probe_len(t, home);
    if (n < mine_d) n = mine_d;
    for (unsigned d = 0; d <= n; d++) {
        if (d == mine_d) continue;
        sg_slot *s = &t->slots[(home + d) & t->mask];
        for (;;) {
            uint64_t c = ld_sc(&s->ctl);
            unsigned st = CTL_STATE(c);
            if (st == ST_EMPTY) break;
            int same = ld_sc(&s->id1) == sg_id1(h, CTL_TAG(c)) && ld_sc(&s->id2) == sg_id2(h, CTL_TAG(c));
            if (st == ST_LIVE) {
                if (same) return 0;
                break;
            }
            /* claiming */
            if (d < mine_d) {
                if (same) {
                    if (wait_s) {
                        *wait_s = s;
                        *wait_c = c;
                    }
                    return 0;
                }
                uint64_t i1 = ld_sc(&s->id1), i2 = ld_sc(&s->id2);
                if (SG_TAG(i1) == CTL_TAG(c) && SG_TAG(i2) == CTL_TAG(c)) break; /* other key */
                wait_identity(t, s, c); /* identity not yet written: wait for it, then re-read */
                continue;
            }
            /* A farther claim that took our key's live slot and has not sealed it yet
               can still give the slot back (a decision landed: try_claim restores it,
               or take_over does): our key would then be live twice.  Wait for it too.
               Once v[0] is sealed no path restores, so a sealed one is never waited on. */
            if (!same && CTL_FROMLIVE(c)) {
                uint64_t v = ld_sc(&s->v[0]);
                same = v && SG_TAG(v) == CTL_PREV(c) && ld_sc(&s->id1) == sg_id1(h, CTL_PREV(c)) &&
                       ld_sc(&s->id2) == sg_id2(h, CTL_PREV(c));
            }
            if (!same) break;
            wait_claim(t, s, c); /* a farther claim of our key: it will yield, publish or restore */
        }
    }
    return 1;
}

/* Try to claim slot i (distance d from home). Returns 1 claimed (*out = our ctl), 0 not. */
static int try_claim(const sg_table *t, sg_slot *s, uint64_t c, int from_live, int perm, uint64_t now,
                     uint64_t real_now, uint64_t *out) {
    uint8_t tag = next_tag(CTL_TAG(c));
    uint64_t mine = mk_ctl(ST_CLAIMING, (unsigned)perm, (unsigned)from_live, tag, CTL_TAG(c), real_now);
    if (mine == c) return 0;
    uint64_t v = 0;
    if (from_live) {
        v = sg_load(&s->v[0]);
        if (!slot_idle(t, s, CTL_TAG(c), v, now)) return 0;
    }
    uint64_t exp = c;
    if (!cas_sc(&s->ctl, &exp, mine)) return 0;
    /* v was read before our ctl CAS; if we stalled and were taken over, a taker may
       have restored the key, whose word can come back to v: seal only while ours */
    if (from_live && (ld_sc(&s->ctl) != mine || !sg_cas(&s->v[0], &v, 0))) {
        /* a decision landed after our idle check: the key is in use, give it back */
        exp = mine;
        cas_sc(&s->ctl, &exp, c);
        return 0;
    }
    *out = mine;
    return 1;
}

/* A claimer stalled past SG_CLAIM_STALE_NS may be taken over and the slot reused
 * while it sleeps; when it resumes, a CAS from a value it reads then would succeed on
 * the new owner's word.  So each word is read first and then the claim is checked
 * to be still ours: the value read predates any takeover, and the new owner's write
 * changes it (its identity and reclaimable words carry its tag), so the CAS fails.
 * Left open: a stall of > 200 ms between the check and the CAS of v[0] just when a
 * permanent key reused the slot and has not changed its v[0] from 0 yet. */
static int write_identity(sg_slot *s, uint64_t mine, sg_hash128 h, uint8_t tag, int perm, uint32_t algo,
                          uint64_t param) {
    uint64_t v = sg_load(&s->v[0]);
    if (ld_sc(&s->ctl) != mine || !sg_cas(&s->v[0], &v, perm ? 0 : SG_TAGGED(tag, 0))) return 0;
    if (perm) {
        for (int k = 1; k < 4; k++) {
            uint64_t x = sg_load(&s->v[k]);
            if (ld_sc(&s->ctl) != mine || !sg_cas(&s->v[k], &x, 0)) return 0;
        }
    }
    uint64_t m = sg_load(&s->meta);
    uint64_t want_m = perm ? 0 : SG_TAGGED(tag, ((uint64_t)(algo & 0xff) << 48) | (param & ((1ULL << 48) - 1)));
    if (ld_sc(&s->ctl) != mine || !sg_cas(&s->meta, &m, want_m)) return 0;
    uint64_t i1 = sg_load(&s->id1), i2 = sg_load(&s->id2);
    if (ld_sc(&s->ctl) != mine || !cas_sc(&s->id1, &i1, sg_id1(h, tag))) return 0;
    if (ld_sc(&s->ctl) != mine || !cas_sc(&s->id2, &i2, sg_id2(h, tag))) return 0;
    return 1;
}

/* Free the idle reclaimable slots of the next SG_SWEEP_BUDGET slots after a cursor
 * shared by every process in the header (slow path when full).  Its cost is bounded
 * whatever the table's size, successive calls (from any process) go round the whole
 * table, and every idle slot of the stretch is freed, not just one: the next creates
 * then reserve a place at once instead of each sweeping a stretch of its own. */
static int sweep(sg_table *t, uint64_t now) {
    uint64_t real_now = sg_store_now(t);
    /* about SG_SWEEP_BUDGET / 2 keys' worth of slots: where the table is sparse in keys
       (room for many policies' state beside few keys), a stretch that size covers more */
    uint64_t nslots = t->mask + 1, keys = t->hdr->capacity ? t->hdr->capacity : 1;
    uint64_t spread = nslots / (2 * keys);
    uint64_t budget = SG_SWEEP_BUDGET * (spread > 1 ? spread : 1);
    if (budget > nslots) budget = nslots;
    uint64_t start = __atomic_fetch_add(&t->hdr->sweep_cursor, budget, __ATOMIC_RELAXED);
    int took = 0; /* a dead claim taken over gives its reservation back: worth a retry */
    int freed = 0;
    for (uint64_t k = 0; k < budget; k++) {
        sg_slot *s = &t->slots[(start + k) & t->mask];
        uint64_t c = sg_load(&s->ctl), mine;
        if (CTL_STATE(c) == ST_CLAIMING && claim_is_stale(c, real_now)) {
            take_over(t, s, c, now);
            took = 1;
            continue;
        }
        if (CTL_STATE(c) != ST_LIVE || CTL_PERM(c)) continue;
        if (try_claim(t, s, c, 1, 0, now, real_now, &mine)) {
            abort_claim(t, s, mine); /* sealed and emptied: live - 1 */
            count_reclaim(t);
            freed = 1;
        }
    }
    return freed || took;
}

/* Slots holding a reservation: LIVE or CLAIMING, of keys (held[0]) and permanent (held[1]). */
static void count_held(const sg_table *t, uint64_t held[2]) {
    held[0] = held[1] = 0;
    for (uint64_t i = 0; i <= t->mask; i++) {
        uint64_t c = sg_load(&t->slots[i].ctl);
        unsigned st = CTL_STATE(c);
        if (st == ST_LIVE || st == ST_CLAIMING) held[CTL_PERM(c)]++;
    }
}

/* Set each count to the number of slots that hold a reservation of its kind, if it did
 * not change while they were counted (a reservation or release meanwhile: leave it to
 * the next one). */
static int recount(sg_table *t) {
    uint64_t before[2] = {__atomic_load_n(live_of(t, 0), __ATOMIC_ACQUIRE),
                          __atomic_load_n(live_of(t, 1), __ATOMIC_ACQUIRE)};
    uint64_t held[2];
    count_held(t, held);
    int changed = 0;
    for (unsigned k = 0; k < 2; k++) {
        if (held[k] == sg_live_count(before[k])) continue;
        uint64_t next = ((before[k] >> 32) + 1) << 32 | held[k]; /* a change too */
        changed |= __atomic_compare_exchange_n(live_of(t, k), &before[k], next, 0, __ATOMIC_ACQ_REL,
                                               __ATOMIC_ACQUIRE);
    }
    return changed;
}

int sg_table_recount(sg_table *t) { return recount(t); }

/* A recount from the full path: one process per interval (a CAS of recount_ns). */
static int recount_due(sg_table *t, uint64_t real_now) {
    uint64_t every = (t->mask + 1) * SG_RECOUNT_NS_PER_SLOT;
    if (every < SG_RECOUNT_MIN_NS) every = SG_RECOUNT_MIN_NS;
    uint64_t last = __atomic_load_n(&t->hdr->recount_ns, __ATOMIC_ACQUIRE);
    /* a stamp from the future (garbage, or another boot's clock) is overdue too */
    if (last && last <= real_now && real_now - last < every) return 0;
    if (!__atomic_compare_exchange_n(&t->hdr->recount_ns, &last, real_now, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return 0; /* another process is recounting */
    return recount(t);
}

int sg_table_get(sg_table *t, sg_hash128 h, int kind, uint32_t algo, uint64_t param, uint64_t now, int create,
                 uint64_t *idx, uint8_t *tag) {
    int perm = kind == SG_SLOT_PERMANENT;
    uint64_t home = h.a & t->mask;
    int swept = 0, recounted = 0;
    for (unsigned attempt = 0; attempt < 100000; attempt++) {
        if (find_live(t, h, idx, tag) == SG_OK) return SG_OK;
        if (!create) return SG_NOTFOUND;
        uint64_t real_now = sg_store_now(t); /* claim stamps only: keep it off the lookup path */
        sg_store_mark(t, real_now);

        /* Reserve a slot of this kind if its budget allows; otherwise a key only
           reuses an idle key's slot, and a permanent slot is refused. */
        int reserved = 0;
        if (sg_live_count(__atomic_add_fetch(live_of(t, perm), SG_LIVE_ONE, __ATOMIC_ACQ_REL)) <=
            (perm ? t->hdr->perm_capacity : t->hdr->capacity))
            reserved = 1;
        else
            live_dec(t, perm);

        uint64_t mine = 0;
        unsigned d = 0, found = 0, took = 0;
        sg_slot *s = NULL;
        /* With room, an empty slot is taken before an idle key is evicted: an idle
           key that comes back would have to be created again (and evict another). */
        for (int pass = reserved ? 0 : 1; pass < 2 && !found; pass++) {
            for (d = 0; d < SG_MAX_PROBE; d++) {
                s = &t->slots[(home + d) & t->mask];
                uint64_t c = sg_load(&s->ctl);
                unsigned st = CTL_STATE(c);
                if (st == ST_CLAIMING) {
                    if (claim_is_stale(c, real_now)) {
                        take_over(t, s, c, now);
                        took = 1;
                    }
                    continue;
                }
                if (st > ST_LIVE) continue; /* garbage */
                if (st == ST_EMPTY && !reserved) continue;
                /* a permanent slot needs a reservation: without one, only take over dead claims */
                if (st == ST_LIVE && (CTL_PERM(c) || pass == 0 || (perm && !reserved))) continue;
                raise_probe_len(t, home, d);
                if (try_claim(t, s, c, st == ST_LIVE, perm, now, real_now, &mine)) {
                    found = 1;
                    break;
                }
            }
        }
        if (!found) {
            if (reserved) live_dec(t, perm);
            if (took && !reserved) continue; /* a dead claim's reservation came back: reserve again */
            if (!swept) {
                swept = 1;
                if (sweep(t, now)) continue;
            }
            /* full by the count: it may be a dead process's leaked reservations */
            if (!reserved && !recounted) {
                recounted = 1;
                if (recount_due(t, real_now)) continue;
            }
            return SG_ERR_FULL;
        }
        /* an idle key was evicted: it leaves the keys' count (a key's reservation then
           stands for the new key in its place, so it is given back) */
        if (CTL_FROMLIVE(mine) && (perm || reserved)) live_dec(t, 0);
        if (CTL_FROMLIVE(mine)) count_reclaim(t);

        uint8_t mytag = CTL_TAG(mine);
        sg_slot *winner = NULL;
        uint64_t winner_c = 0;
        if (!write_identity(s, mine, h, mytag, perm, algo, param) || !no_rival(t, h, home, d, &winner, &winner_c)) {
            abort_claim(t, s, mine);
            if (winner) wait_claim(t, winner, winner_c); /* a nearer claim of our key: let it finish */
            continue;
        }
        uint64_t exp = mine;
        if (!cas_sc(&s->ctl, &exp, mk_ctl(ST_LIVE, (unsigned)perm, 0, mytag, 0, real_now))) continue; /* taken over */
        *idx = (home + d) & t->mask;
        *tag = mytag;
        return SG_OK;
    }
    return SG_ERR_FULL;
}

void sg_table_stats(const sg_table *t, sg_stats *out) {
    memset(out, 0, sizeof *out);
    out->capacity = t->hdr->capacity;
    out->nslots = t->mask + 1;
    out->live = sg_live_count(__atomic_load_n(&t->hdr->live, __ATOMIC_ACQUIRE));
    out->perm_capacity = t->hdr->perm_capacity;
    out->perm_live = sg_live_count(__atomic_load_n(&t->hdr->perm_live, __ATOMIC_ACQUIRE));
    for (uint64_t i = 0; i <= t->mask; i++) {
        uint64_t c = __atomic_load_n(&t->slots[i].ctl, __ATOMIC_ACQUIRE);
        if (CTL_STATE(c) == ST_LIVE) {
            if (CTL_PERM(c))
                out->permanent++;
            else
                out->reclaimable++;
        } else if (CTL_STATE(c) == ST_CLAIMING) {
            out->claiming++;
        }
    }
}

int sg_counter_slot(sg_table *t, const void *name, size_t len, uint64_t *idx) {
    uint8_t tag;
    sg_hash128 h = sg_hash(name, len, sg_ns_seed(SG_NS_COUNTER, "", 0));
    return sg_table_get(t, h, SG_SLOT_PERMANENT, 0, 0, sg_store_now(t), 1, idx, &tag);
}

/* Deterministic interleavings of the key table (review findings).
 *
 * This file includes csrc/sg_table.c so that it can run the table's own steps
 * (try_claim, take_over, write_identity, abort_claim ...) one at a time, in the
 * order that a process stalled for more than SG_CLAIM_STALE_NS (SIGSTOP, swap, a
 * paused VM) and then resumed would run them.  Built by tests/c/run.sh with every
 * the other csrc sources (all but sg_table.c). */
/* sg_limiter.c (linked separately) calls sg_table_get: the wrapper below lets a test
 * run "another process" between a decider's lookup and its use of the slot. */
#define sg_table_get sg_table_get_real
#include "sg_table.c"
#undef sg_table_get

static void (*after_lookup)(uint64_t idx, uint8_t tag);

/* the limiter's own home-slot lookup calls this (run.sh builds it with
   -DSG_AFTER_LOOKUP=sg_test_after_lookup) */
void sg_test_after_lookup(uint64_t idx, uint8_t tag);
void sg_test_after_lookup(uint64_t idx, uint8_t tag) {
    if (after_lookup) {
        void (*f)(uint64_t, uint8_t) = after_lookup;
        after_lookup = NULL;
        f(idx, tag);
    }
}

int sg_table_get(sg_table *t, sg_hash128 h, int kind, uint32_t algo, uint64_t param, uint64_t now, int create,
                 uint64_t *idx, uint8_t *tag);
int sg_table_get(sg_table *t, sg_hash128 h, int kind, uint32_t algo, uint64_t param, uint64_t now, int create,
                 uint64_t *idx, uint8_t *tag) {
    int rc = sg_table_get_real(t, h, kind, algo, param, now, create, idx, tag);
    if (rc == SG_OK) sg_test_after_lookup(*idx, *tag);
    return rc;
}

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sg_limiter.h"

#include "harness.h"

/* no refill within the test */
static const sg_rate HOT = {.algo = SG_ALGO_GCRA, .limit = 100, .interval_ns = 86400000000000ULL / 100};

/* a claim made 300 ms ago: what a stalled (or dead) claimer leaves behind */
static uint64_t stale_claim_on_empty(sg_slot *s, int perm) {
    uint64_t mine = 0, now = sg_store_now(&T);
    if (!try_claim(&T, s, sg_load(&s->ctl), 0, perm, now, now - 300000000ULL, &mine)) {
        fprintf(stderr, "setup: could not claim\n");
        exit(2);
    }
    sg_add(perm ? &T.hdr->perm_live : &T.hdr->live, SG_LIVE_ONE); /* the claimer's reservation */
    return mine;
}

/* Every live slot must be found again under its own key by a lookup. */
static void check_slot_consistent(const char *what, uint64_t i) {
    sg_slot *s = &T.slots[i];
    uint64_t c = s->ctl;
    if (CTL_STATE(c) != ST_LIVE) return;
    CHECK(SG_TAG(s->id1) == CTL_TAG(c) && SG_TAG(s->id2) == CTL_TAG(c),
          "%s: live slot %llu (tag %u) holds an identity of tag %u/%u", what, (unsigned long long)i, CTL_TAG(c),
          SG_TAG(s->id1), SG_TAG(s->id2));
    if (!CTL_PERM(c))
        CHECK(SG_TAG(s->v[0]) == CTL_TAG(c), "%s: live slot %llu (tag %u) has v[0] of tag %u", what,
              (unsigned long long)i, CTL_TAG(c), SG_TAG(s->v[0]));
}

/* 1. A taker that saw a stale claim stalls before take_over's first load; another
 *    taker frees the slot and key K is created in it and decided once.  The first
 *    taker resumes: its abort_claim must not seal K's live word. */
static void scenario_stalled_taker(void) {
    make_store(8);
    sg_hash128 h = key(1, 0);
    uint64_t home = h.a & T.mask;
    sg_slot *s = &T.slots[home];
    uint64_t c = stale_claim_on_empty(s, 0);
    /* taker 1 loads ctl == c and sees it stale ... and stalls here */
    take_over(&T, s, c, sg_store_now(&T)); /* taker 2 */
    sg_decision d;
    uint64_t now = sg_store_now(&T);
    CHECK(sg_rate_apply(&T, h, &HOT, 1, now, 1, &d) == SG_OK && d.allowed, "K's first decision");
    take_over(&T, s, c, now); /* taker 1 resumes */
    check_slot_consistent("stalled taker", home);
    int rc = sg_rate_apply(&T, h, &HOT, 1, now, 1, &d);
    CHECK(rc == SG_OK, "stalled taker: K's next decision failed with %d", rc);
    CHECK(rc == SG_OK && d.remaining == 98, "stalled taker: K's state was lost (remaining %llu, want 98)",
          (unsigned long long)d.remaining);
    CHECK(sg_live_count(T.hdr->live) == 1, "stalled taker: live %llu, want 1",
          (unsigned long long)sg_live_count(T.hdr->live));
}

/* 2. A claimer stalls right after its ctl CAS (before write_identity).  It is taken
 *    over, and a permanent counter is created in the slot and counted to 5.  The
 *    claimer resumes and finishes its steps: the counter must survive. */
static void scenario_stalled_claimer(void) {
    make_store(8);
    sg_hash128 hc = key(2, 0);
    uint64_t home = hc.a & T.mask;
    sg_slot *s = &T.slots[home];
    sg_hash128 ha = hc;
    for (unsigned k = 1; (ha.a & T.mask) != home || (ha.a == hc.a && ha.b == hc.b); k++) ha = key(3, k);
    uint64_t mine = stale_claim_on_empty(s, 0); /* claimer A, for key ha, stalls */
    take_over(&T, s, mine, sg_store_now(&T));
    uint64_t idx;
    uint8_t tag;
    CHECK(sg_table_get(&T, hc, SG_SLOT_PERMANENT, 0, 0, sg_store_now(&T), 1, &idx, &tag) == SG_OK && idx == home,
          "counter not in the freed slot");
    sg_add(sg_words(&T, idx), 5);
    /* A resumes where sg_table_get left it */
    if (!write_identity(s, mine, ha, CTL_TAG(mine), 0, SG_ALGO_GCRA, 0) || !no_rival(&T, ha, home, 0, NULL, NULL)) {
        abort_claim(&T, s, mine);
    } else {
        uint64_t exp = mine;
        cas_sc(&s->ctl, &exp, mk_ctl(ST_LIVE, 0, 0, CTL_TAG(mine), 0, sg_store_now(&T)));
    }
    check_slot_consistent("stalled claimer", home);
    int rc = sg_table_get(&T, hc, SG_SLOT_PERMANENT, 0, 0, sg_store_now(&T), 0, &idx, &tag);
    CHECK(rc == SG_OK, "stalled claimer: the counter's key is gone (rc %d)", rc);
    CHECK(rc != SG_OK || sg_load(sg_words(&T, idx)) == 5, "stalled claimer: counter is %llu, want 5",
          (unsigned long long)sg_load(sg_words(&T, idx)));
}

static unsigned live_copies(sg_hash128 h) {
    unsigned n = 0;
    for (uint64_t i = 0; i <= T.mask; i++) {
        uint64_t c = T.slots[i].ctl;
        if (CTL_STATE(c) == ST_LIVE && ids_match(&T.slots[i], h, CTL_TAG(c))) n++;
    }
    return n;
}

/* 3. Claimer A reclaims idle key K1's slot X (its ctl CAS is done, the seal of
 *    v[0] not yet) and is preempted.  A decider D that looked K1 up before lands a
 *    decision on v[0], so A's seal will fail and A (or a taker) restores K1 in X.
 *    Meanwhile a decider E finds K1 absent (X is claiming) and creates it in a free
 *    slot nearer home.  K1 must not end up live in two slots (split state admits
 *    beyond the limit). */
static void scenario_restore_vs_create(void) {
    make_store(8);
    sg_hash128 h1 = key(4, 0), hf = key(5, 0);
    uint64_t home = h1.a & T.mask;
    for (unsigned k = 1; (hf.a & T.mask) != home; k++) hf = key(5, k);
    sg_decision d;
    uint64_t now = sg_store_now(&T), idx;
    uint8_t tag;
    CHECK(sg_rate_apply(&T, hf, &HOT, 1, now, 1, &d) == SG_OK, "filler"); /* filler F takes K1's home */
    CHECK(sg_rate_apply(&T, h1, &HOT, 1, now, 1, &d) == SG_OK, "K1");
    sg_rate_reset(&T, hf, &HOT, now); /* F idle: its slot (K1's home) can be reclaimed */
    sg_rate_reset(&T, h1, &HOT, now); /* K1 idle, in the slot after its home */
    CHECK(find_live(&T, h1, &idx, &tag) == SG_OK && idx == ((home + 1) & T.mask), "K1 not at home + 1");
    sg_slot *x = &T.slots[idx];
    uint8_t dtag = tag; /* decider D looked K1 up */
    /* claimer A (for some other key): try_claim up to and including its ctl CAS */
    uint64_t c = sg_load(&x->ctl), v = sg_load(&x->v[0]);
    uint64_t mine = mk_ctl(ST_CLAIMING, 0, 1, next_tag(CTL_TAG(c)), CTL_TAG(c), sg_store_now(&T));
    CHECK(slot_idle(&T, x, CTL_TAG(c), v, now), "K1 not idle");
    uint64_t exp = c;
    CHECK(cas_sc(&x->ctl, &exp, mine), "A's claim");
    /* D's decision lands (one admission: tat = now + interval) */
    uint64_t dv = v;
    CHECK(sg_cas(&x->v[0], &dv, SG_TAGGED(dtag, now + HOT.interval_ns)), "D's decision");
    /* E decides K1 while X is claiming */
    CHECK(sg_rate_apply(&T, h1, &HOT, 1, now, 1, &d) == SG_OK && d.allowed, "E's decision");
    /* A resumes: its seal fails, it gives the slot back */
    if (!sg_cas(&x->v[0], &v, 0)) {
        exp = mine;
        cas_sc(&x->ctl, &exp, c);
    }
    CHECK(live_copies(h1) == 1, "restore vs create: K1 is live in %u slots", live_copies(h1));
    CHECK(sg_rate_apply(&T, h1, &HOT, 1, now, 0, &d) == SG_OK && d.remaining == 98,
          "restore vs create: K1 has %llu left after 2 admissions, want 98", (unsigned long long)d.remaining);
}

/* 4. A permanent key's claim (a counter) takes idle key K1's slot and dies before
 *    sealing it; a decision lands on K1; a taker restores K1.  K1 must come back as a
 *    reclaimable key, not be marked permanent (never reclaimed: a slot leaked). */
static void scenario_restore_keeps_kind(void) {
    make_store(8);
    sg_hash128 h1 = key(6, 0);
    sg_decision d;
    uint64_t now = sg_store_now(&T), idx;
    uint8_t tag;
    CHECK(sg_rate_apply(&T, h1, &HOT, 1, now, 1, &d) == SG_OK, "K1");
    sg_rate_reset(&T, h1, &HOT, now);
    CHECK(find_live(&T, h1, &idx, &tag) == SG_OK, "K1 lookup");
    sg_slot *x = &T.slots[idx];
    uint64_t c = sg_load(&x->ctl), mine = 0;
    CHECK(try_claim(&T, x, c, 1, 1, now, sg_store_now(&T) - 300000000ULL, &mine), "A's claim");
    /* try_claim sealed v[0]; put back the moment between A's ctl CAS and its seal,
       when D's decision landed */
    uint64_t z = 0;
    CHECK(sg_cas(&x->v[0], &z, SG_TAGGED(tag, now + HOT.interval_ns)), "D's decision");
    take_over(&T, x, mine, now);
    uint64_t c2 = sg_load(&x->ctl);
    CHECK(CTL_STATE(c2) == ST_LIVE && CTL_TAG(c2) == tag, "K1 not restored");
    CHECK(!CTL_PERM(c2), "restored K1 is marked permanent: never reclaimed");
}

/* 5. Decider D looks key K1 up (slot X, tag P) and is preempted before loading v[0].
 *    K1 goes idle, X is reclaimed for a permanent counter, and the counter's raw
 *    value happens to have P in its top byte.  D resumes: its decision must not land
 *    on the counter. */
static sg_hash128 s5_k1, s5_counter;
static const uint64_t S5_VALUE = (1ULL << 56) + 12345;

static void s5_reuse(uint64_t idx, uint8_t tag) {
    uint64_t now = sg_store_now(&T), cidx;
    uint8_t ctag;
    sg_rate_reset(&T, s5_k1, &HOT, now);
    CHECK(sg_table_get_real(&T, s5_counter, SG_SLOT_PERMANENT, 0, 0, now, 1, &cidx, &ctag) == SG_OK && cidx == idx,
          "counter did not reuse K1's slot");
    sg_add(sg_words(&T, cidx), (uint64_t)tag << 56 | (S5_VALUE & SG_PAYLOAD_MASK));
    sg_rate_reset(&T, key(9, 0), &HOT, now); /* a filler goes idle: room for D's retry */
}

static void scenario_decider_vs_permanent_reuse(void) {
    make_store(8);
    s5_k1 = key(7, 0);
    uint64_t home = s5_k1.a & T.mask, idx;
    s5_counter = key(8, 0);
    for (unsigned k = 1; (s5_counter.a & T.mask) != home; k++) s5_counter = key(8, k);
    sg_decision d;
    uint8_t tag;
    uint64_t now = sg_store_now(&T);
    CHECK(sg_rate_apply(&T, s5_k1, &HOT, 1, now, 1, &d) == SG_OK, "K1");
    CHECK(find_live(&T, s5_k1, &idx, &tag) == SG_OK && idx == home && tag == 1, "K1 not at home with tag 1");
    /* fill the whole table with busy keys: with an empty slot in its window, the counter
       would take it rather than evict idle K1 (keys and permanent slots have separate
       budgets, and the table is twice their sum, so the key budget is raised here to
       make the window dense); s5_reuse frees one of them again for K1's retry */
    T.hdr->capacity = T.mask + 1;
    for (unsigned k = 0; sg_live_count(T.hdr->live) < T.hdr->capacity; k++)
        CHECK(sg_rate_apply(&T, key(9, k), &HOT, 1, now, 1, &d) == SG_OK && d.allowed, "filler");
    after_lookup = s5_reuse;
    CHECK(sg_rate_apply(&T, s5_k1, &HOT, 1, now, 1, &d) == SG_OK, "D's decision");
    uint8_t ctag;
    CHECK(sg_table_get_real(&T, s5_counter, SG_SLOT_PERMANENT, 0, 0, now, 0, &idx, &ctag) == SG_OK, "counter lost");
    CHECK(sg_load(sg_words(&T, idx)) == S5_VALUE, "decider vs permanent reuse: counter is %#llx, want %#llx",
          (unsigned long long)sg_load(sg_words(&T, idx)), (unsigned long long)S5_VALUE);
    CHECK(d.allowed && d.remaining == 99, "decider vs permanent reuse: D decided on the counter's word (remaining %llu)",
          (unsigned long long)d.remaining);
}

/* 6. A store at capacity where one of the live reservations is a dead process's
 *    claim: the create takes the claim over (in its probe window or in the slow-path
 *    sweep), so the store has room; the create must succeed, not report FULL. */
static void scenario_full_but_dead_claim(void) {
    make_store(4);
    uint64_t idx;
    uint8_t tag;
    sg_hash128 hn = key(10, 0);
    uint64_t home = hn.a & T.mask;
    uint64_t cap = T.hdr->perm_capacity; /* permanent slots: their own budget */
    for (unsigned k = 0; k < cap - 1; k++) {
        sg_hash128 h = key(11, k);
        CHECK(sg_table_get(&T, h, SG_SLOT_PERMANENT, 0, 0, sg_store_now(&T), 1, &idx, &tag) == SG_OK, "fill");
    }
    sg_slot *dead = &T.slots[home];
    for (uint64_t i = 1; CTL_STATE(dead->ctl) != ST_EMPTY; i++) dead = &T.slots[(home + i) & T.mask];
    stale_claim_on_empty(dead, 1);
    CHECK(sg_live_count(T.hdr->perm_live) == cap, "perm_live %llu, want %llu",
          (unsigned long long)sg_live_count(T.hdr->perm_live),
          (unsigned long long)cap);
    int rc = sg_table_get(&T, hn, SG_SLOT_PERMANENT, 0, 0, sg_store_now(&T), 1, &idx, &tag);
    CHECK(rc == SG_OK, "full but dead claim: create returned %d with a dead claim holding the last place", rc);
}

/* 7. A batch (sg_rates_apply_many with now == 0) reads its time once and is stalled
 *    (preempted, SIGSTOP) for several windows of another limiter's fixed window.
 *    Meanwhile every other key of the full store is used in the current window.  The
 *    batch then needs a slot for a new key: the store is full of live keys, so it must
 *    report FULL; judging idleness by its old time, it reclaimed a key that was used
 *    in the current window, whose count was lost (that key then admits again). */
static const sg_rate S7_VIC = {.algo = SG_ALGO_FIXED, .limit = 1, .period_ns = 20000000ULL}; /* 1 per 20 ms */
#define S7_NVIC 3
static sg_hash128 s7_vic[S7_NVIC];
static uint64_t s7_window; /* the victims' window (store time / period) */

static void s7_stall(uint64_t idx, uint8_t tag) {
    (void)idx, (void)tag;
    uint64_t P = S7_VIC.period_ns, w0 = sg_store_now(&T) / P, now;
    /* stalled for 4+ windows; resume at the start of one, so the rest of the
       scenario runs well within it */
    while ((now = sg_store_now(&T)) / P < w0 + 4 || now % P > P / 4) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    s7_window = now / P;
    for (unsigned k = 0; k < S7_NVIC; k++) {
        sg_decision d;
        CHECK(sg_rate_apply(&T, s7_vic[k], &S7_VIC, 1, 0, 1, &d) == SG_OK && d.allowed, "victim %u", k);
    }
}

static void scenario_stale_batch_reclaims_live_key(void) {
    make_store(1 + S7_NVIC);
    sg_hash128 b[2] = {key(20, 0), key(20, 1)}; /* b[0] exists, b[1] needs a slot */
    sg_decision d;
    uint64_t idx;
    uint8_t tag;
    CHECK(sg_rate_apply(&T, b[0], &HOT, 1, 0, 1, &d) == SG_OK && d.allowed, "b0");
    CHECK(find_live(&T, b[0], &idx, &tag) == SG_OK && idx == (b[0].a & T.mask), "b0 not at home");
    for (unsigned k = 0; k < S7_NVIC; k++) {
        s7_vic[k] = key(21, k);
        CHECK(sg_rate_apply(&T, s7_vic[k], &S7_VIC, 1, 0, 1, &d) == SG_OK && d.allowed, "victim %u", k);
    }
    after_lookup = s7_stall; /* runs at b[0]'s home-slot lookup, after the batch read its time */
    uint8_t ok[2] = {0, 0};
    size_t done = 0;
    int rc = sg_rates_apply_many(&T, b, 2, &HOT, 1, 1, 0, ok, &done);
    unsigned lost = 0;
    for (unsigned k = 0; k < S7_NVIC; k++) lost += find_live(&T, s7_vic[k], &idx, &tag) != SG_OK;
    CHECK(rc == SG_ERR_FULL && done == 1 && lost == 0,
          "stale batch: rc %d, done %zu, %u live key(s) of the current window reclaimed", rc, done, lost);
    /* the victims' counts survive: still denied in their window */
    for (unsigned k = 0; k < S7_NVIC; k++) {
        CHECK(sg_rate_apply(&T, s7_vic[k], &S7_VIC, 1, 0, 1, &d) == SG_OK, "victim %u again", k);
        if (sg_store_now(&T) / S7_VIC.period_ns == s7_window)
            CHECK(!d.allowed, "stale batch: victim %u admitted twice in one window", k);
    }
}

/* 8. Eviction policy: with room, a new key takes an empty slot and keeps an idle
 *    key that sits in its way (that key would otherwise have to be created again,
 *    evicting another: churn); at capacity it evicts the idle key. */
static void scenario_room_before_eviction(void) {
    make_store(8);
    sg_decision d;
    uint64_t now = sg_store_now(&T), idx;
    uint8_t tag;
    sg_hash128 k1 = key(20, 0), k2 = key(21, 0), k3 = key(22, 0);
    uint64_t home = k1.a & T.mask;
    for (unsigned k = 1; (k2.a & T.mask) != home; k++) k2 = key(21, k);
    for (unsigned k = 1; (k3.a & T.mask) != home; k++) k3 = key(22, k);
    CHECK(sg_rate_apply(&T, k1, &HOT, 1, now, 1, &d) == SG_OK, "K1");
    sg_rate_reset(&T, k1, &HOT, now); /* idle, at home */
    CHECK(sg_rate_apply(&T, k2, &HOT, 1, now, 1, &d) == SG_OK, "K2");
    CHECK(find_live(&T, k1, &idx, &tag) == SG_OK && idx == home, "room: idle K1 was evicted");
    CHECK(find_live(&T, k2, &idx, &tag) == SG_OK && idx != home, "room: K2 took K1's slot");
    for (unsigned k = 0; sg_live_count(T.hdr->live) < T.hdr->capacity; k++)
        CHECK(sg_rate_apply(&T, key(23, k), &HOT, 1, now, 1, &d) == SG_OK, "filler");
    CHECK(sg_rate_apply(&T, k3, &HOT, 1, now, 1, &d) == SG_OK && d.allowed, "full: K3 not created");
    CHECK(find_live(&T, k1, &idx, &tag) == SG_NOTFOUND, "full: idle K1 was not evicted for K3");
}


/* 9. A fresh (reset) key holds payload 0, which has no window.  At the end of the
 *    window-index cycle (2^24 fixed, 2^16 sliding windows) index 0 is one or two
 *    windows ahead of now's; sg_algo_idle read it as a live window "ahead", so a
 *    full store could not reuse the fresh key's slot and reported FULL. */
static void scenario_fresh_key_idle_at_index_wrap(void) {
    static const sg_rate FX = {.algo = SG_ALGO_FIXED, .limit = 5, .period_ns = 1000000ULL},
                         SL = {.algo = SG_ALGO_SLIDING, .limit = 5, .period_ns = 1000000ULL};
    const sg_rate *rates[2] = {&FX, &SL};
    const uint64_t wrap[2] = {1ULL << 24, 1ULL << 16};
    for (int r = 0; r < 2; r++) {
        for (uint64_t back = 1; back <= 2; back++) {
            make_store(1);
            sg_decision d;
            uint64_t now = (wrap[r] - back) * 1000000ULL + 500000ULL; /* index -1 or -2 */
            sg_hash128 a = key(30 + (uint64_t)r, (unsigned)back), b = key(40 + (uint64_t)r, (unsigned)back);
            CHECK(sg_rate_apply(&T, a, rates[r], 1, now, 1, &d) == SG_OK && d.allowed, "A");
            sg_rate_reset(&T, a, rates[r], now); /* fresh again: payload 0 */
            int rc = sg_rate_apply(&T, b, rates[r], 1, now, 1, &d);
            CHECK(rc == SG_OK && d.allowed, "fresh key at index wrap (%s, %llu back): B got %d, A's fresh slot not reused",
                  r ? "sliding" : "fixed", (unsigned long long)back, rc);
        }
    }
}

/* 10. A process killed between reserving a place (live + 1) and claiming a slot leaves
 *     live one too high for good.  At capacity by the count, with a slot really free,
 *     the create recounts and succeeds; a second recount within the interval is not
 *     run (one per store per interval), and sg_table_recount repairs at once. */
static void scenario_leaked_reservation_is_recounted(void) {
    make_store(4);
    uint64_t idx;
    uint8_t tag;
    uint64_t cap = T.hdr->perm_capacity, *pl = &T.hdr->perm_live; /* permanent slots: their own budget */
    for (unsigned k = 0; k < cap - 1; k++)
        CHECK(sg_table_get(&T, key(30, k), SG_SLOT_PERMANENT, 0, 0, sg_store_now(&T), 1, &idx, &tag) == SG_OK, "fill");
    sg_add(pl, SG_LIVE_ONE); /* the dead reserver */
    CHECK(sg_table_get(&T, key(31, 0), SG_SLOT_PERMANENT, 0, 0, sg_store_now(&T), 1, &idx, &tag) == SG_OK,
          "leaked reservation: a create was refused with a place free");
    CHECK(sg_live_count(*pl) == cap, "leaked reservation: perm_live %llu after the recount, want %llu",
          (unsigned long long)sg_live_count(*pl),
          (unsigned long long)cap);
    CHECK(T.hdr->recount_ns != 0, "leaked reservation: the recount was not stamped");
    sg_add(pl, SG_LIVE_ONE); /* leaks again at once: over capacity by the count */
    CHECK(sg_table_get(&T, key(31, 1), SG_SLOT_PERMANENT, 0, 0, sg_store_now(&T), 1, &idx, &tag) == SG_ERR_FULL,
          "leaked reservation: full store admitted");
    CHECK(sg_live_count(*pl) == cap + 1, "leaked reservation: recounted twice within the interval");
    CHECK(sg_table_recount(&T) == 1 && sg_live_count(*pl) == cap, "leaked reservation: sg_table_recount left %llu",
          (unsigned long long)sg_live_count(*pl));
}

int main(int argc, char **argv) {
    int only = argc > 1 ? atoi(argv[1]) : 0;
    if (!only || only == 1) {
        scenario_stalled_taker();
        printf("stalled taker: %s\n", failures ? "FAILED" : "ok");
    }
    if (!only || only == 2) {
        int before = failures;
        scenario_stalled_claimer();
        printf("stalled claimer: %s\n", failures > before ? "FAILED" : "ok");
    }
    if (!only || only == 3) {
        int before = failures;
        scenario_restore_vs_create();
        printf("restore vs create: %s\n", failures > before ? "FAILED" : "ok");
    }
    if (!only || only == 4) {
        int before = failures;
        scenario_restore_keeps_kind();
        printf("restore keeps kind: %s\n", failures > before ? "FAILED" : "ok");
    }
    if (!only || only == 5) {
        int before = failures;
        scenario_decider_vs_permanent_reuse();
        printf("decider vs permanent reuse: %s\n", failures > before ? "FAILED" : "ok");
    }
    if (!only || only == 6) {
        int before = failures;
        scenario_full_but_dead_claim();
        printf("full but dead claim: %s\n", failures > before ? "FAILED" : "ok");
    }
    if (!only || only == 7) {
        int before = failures;
        scenario_stale_batch_reclaims_live_key();
        printf("stale batch reclaims live key: %s\n", failures > before ? "FAILED" : "ok");
    }
    if (!only || only == 8) {
        int before = failures;
        scenario_room_before_eviction();
        printf("room before eviction: %s\n", failures > before ? "FAILED" : "ok");
    }
    if (!only || only == 9) {
        int before = failures;
        scenario_fresh_key_idle_at_index_wrap();
        printf("fresh key idle at index wrap: %s\n", failures > before ? "FAILED" : "ok");
    }
    if (!only || only == 10) {
        int before = failures;
        scenario_leaked_reservation_is_recounted();
        printf("leaked reservation is recounted: %s\n", failures > before ? "FAILED" : "ok");
    }
    free(region);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("all interleavings passed\n");
    return 0;
}

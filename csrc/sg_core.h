/* sluicegate core: clock, stable hash, shared store header and lock-free key table.
 *
 * Plain C11 plus GCC/Clang __atomic builtins; no Python.h.  Everything here
 * operates on a caller-supplied memory region (an mmap shared between processes),
 * so nothing may hold a lock: every mutation is a single-word CAS or fetch-add,
 * and a process killed between any two instructions leaves a state that the
 * others can finish or roll back.
 */
#ifndef SG_CORE_H
#define SG_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- results -------------------------------------------------------------- */
enum {
    SG_OK = 0,
    SG_NOTFOUND = 1,      /* lookup without create found nothing */
    SG_ERR_FULL = -1,     /* no free or reclaimable slot for this key */
    SG_ERR_HEADER = -2,   /* not a sluicegate store / corrupted header */
    SG_ERR_VERSION = -3,  /* a sluicegate store of another layout version */
    SG_ERR_SIZE = -4,     /* region smaller than the header says */
    SG_ERR_ARG = -5,      /* bad argument (capacity, size) */
    SG_ERR_CLOCK = -6,    /* store clock could not be rebased */
};

/* ---- clock ---------------------------------------------------------------- */
uint64_t sg_mono_ns(void);      /* CLOCK_MONOTONIC, ns */
uint64_t sg_wall_ns(void);      /* CLOCK_REALTIME, ns: only used to rebase after reboot */
uint64_t sg_boot_key(void);     /* identifies the current boot (0 if unknown) */
/* CLOCK_MONOTONIC extrapolated from the TSC where the kernel uses it (within tens
 * of ns, ~10 ns cheaper); sg_mono_ns() elsewhere.  Mode: 1 TSC, 2 precise. */
uint64_t sg_fast_mono_ns(void);
int sg_fast_clock_mode(void);

/* ---- hash ----------------------------------------------------------------- */
typedef struct {
    uint64_t a, b;
} sg_hash128;

/* Stable 128-bit hash of bytes (MurmurHash3 x64 128 with a 64-bit seed split over
 * both lanes).  Same output on every platform and process: never Python's hash(). */
sg_hash128 sg_hash(const void *data, size_t len, uint64_t seed);
/* Namespace seed for one policy object: kind (SG_NS_*) + its name. */
uint64_t sg_ns_seed(uint32_t kind, const void *name, size_t len);

enum { /* namespaces: limiter "api" and breaker "api" never collide */
    SG_NS_COUNTER = 1,
    SG_NS_LIMITER = 2,
    SG_NS_BREAKER = 3,
    SG_NS_CONCURRENCY = 4,
    SG_NS_STATS = 5,
    SG_NS_POOL = 6, /* a named pool's host-wide counts (its resources are each process's own) */
    SG_NS_RETRY = 7, /* a retry budget's time buckets (retry.py) */
    SG_NS_GUARD = 8, /* a guard's host-wide counts (guard.py) */
};

/* ---- store layout ---------------------------------------------------------- */
#define SG_MAGIC64 0x4554414745434c53ULL /* "SLCEGATE" little-endian */
#define SG_LAYOUT_VERSION 2u /* 2: the policy directory */
#define SG_HEADER_SIZE 4096u
#define SG_SLOT_SIZE 64u
#define SG_MAX_PROBE 64u /* a key lives within this many slots of its home */
#define SG_CLAIM_STALE_NS 200000000ULL /* a claim older than 200 ms is abandoned */
#define SG_PERM_PER_POLICY 24u /* permanent slots budgeted per directory entry (a breaker takes about 18) */

typedef struct sg_header {
    /* immutable after creation, covered by checksum */
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;     /* live-slot limit the user asked for */
    uint64_t nslots;       /* table size, power of two, >= 2 * capacity */
    uint32_t slot_size;
    uint32_t max_probe;
    uint64_t total_size;   /* bytes of the whole region */
    uint64_t created_wall; /* CLOCK_REALTIME at creation */
    uint64_t dir_entries;  /* policy directory entries (after the key table) */
    uint64_t dir_offset;   /* byte offset of the directory */
    uint64_t perm_capacity; /* permanent slots (policies' state) allowed, apart from capacity */
    uint64_t checksum;     /* sg_hash of the fields above */
    uint64_t _pad0[4];
    /* mutable, own cache line */
    uint64_t live;         /* live slots (atomic): count in the low 32 bits, changes above (SG_LIVE_*) */
    int64_t base_mono;     /* store time = mono - base_mono */
    uint64_t boot_key;     /* boot the base belongs to; 1 while rebasing */
    uint64_t wall_epoch;   /* CLOCK_REALTIME at store time 0 */
    uint64_t high_water;   /* a store time already reached (sg_store_mark); 0 in old stores */
    uint64_t sweep_cursor; /* next slot the bounded sweep of a full store looks at (atomic) */
    uint64_t recount_ns;   /* store time of the last recount of live (atomic); 0 never */
    uint64_t reclaimed;    /* idle keys' slots reclaimed for other keys, by every process (atomic) */
    uint64_t dir_lock;     /* creating a directory entry: a writer's claim (sg_directory.c) */
    uint64_t perm_live;    /* permanent slots held (atomic, as live); live counts keys only */
    uint64_t _pad2[6];
} sg_header;

typedef struct sg_slot {
    uint64_t ctl;  /* [state:2 | perm:1 | tag:8 | prevtag:8 | stamp:45] */
    uint64_t id1;  /* [tag:8 | hash.a >> 8] */
    uint64_t id2;  /* [tag:8 | hash.b low 56] */
    uint64_t meta; /* reclaimable: [tag:8 | algo:8 | param:48]; permanent: free word */
    uint64_t v[4]; /* reclaimable: v[0] = [tag:8 | payload:56]; permanent: raw words */
} sg_slot;

struct sg_dir_entry;

typedef struct sg_table {
    sg_header *hdr;
    struct sg_dir_entry *dir; /* the policy directory (sg_directory.h) */
    uint64_t ndir;
    sg_slot *slots;
    uint8_t *plen; /* per-home max probe distance (only ever grows) */
    uint64_t mask;
    int64_t base_mono;
    uint64_t next_mark; /* this attachment's next sg_store_mark_lazy (atomic: threads share it) */
} sg_table;

/* bytes needed for a store with this capacity and directory (0 on overflow) */
uint64_t sg_store_size(uint64_t capacity, uint64_t dir_entries);
/* the directory size a store of this capacity gets by default */
uint64_t sg_default_dir_entries(uint64_t capacity);
/* initialise a zeroed region of exactly sg_store_size(capacity, dir_entries) bytes */
int sg_store_init(void *base, uint64_t size, uint64_t capacity, uint64_t dir_entries);
/* validate a region and fill *t; rebases the clock after a reboot */
int sg_store_attach(sg_table *t, void *base, uint64_t size);

/* store time in ns (monotonic, shared by all processes attached to the store) */
/* Never 0 or "negative" (which would wrap to centuries ahead): a process whose
 * monotonic clock is behind the store's base (another time namespace) reads 1. */
static inline uint64_t sg_store_time(int64_t mono, int64_t base) {
    int64_t d;
    /* a damaged header's base (not checksummed) can make mono - base overflow */
    if (__builtin_sub_overflow(mono, base, &d)) return 1;
    return d > 0 ? (uint64_t)d : 1;
}

static inline uint64_t sg_store_now(const sg_table *t) { return sg_store_time((int64_t)sg_mono_ns(), t->base_mono); }

/* Record that store time `now` was reached, at most once a second (one load
 * otherwise).  After a reboot, store time resumes from wall time since the store's
 * epoch, but never below this mark: a wall clock that is behind (no RTC, NTP not
 * yet synced) must not move store time backwards, or every rate limit and breaker
 * window would be judged against a time older than its state. */
void sg_store_mark(sg_table *t, uint64_t now);

/* sg_store_mark from a decision path: at most once a second per attachment, the
 * check a load of this process's own table (not the header's shared line).  The
 * mark then trails the decisions by less than 2 s (1 s here, 1 s in the header),
 * which the rebase adds.  Without it a limiter whose keys all exist (no slot
 * claims) left the mark at its last claim, hours behind its buckets' state. */
static inline void sg_store_mark_lazy(sg_table *t, uint64_t now) {
    if (now < __atomic_load_n(&t->next_mark, __ATOMIC_RELAXED)) return;
    __atomic_store_n(&t->next_mark, now + 1000000000ULL, __ATOMIC_RELAXED);
    sg_store_mark(t, now);
}

/* the same from the fast clock (the rate limiter's decision path) */
static inline uint64_t sg_store_fast_now(const sg_table *t) {
    return sg_store_time((int64_t)sg_fast_mono_ns(), t->base_mono);
}

/* ---- slots ---------------------------------------------------------------- */
#define SG_TAG_SHIFT 56
#define SG_PAYLOAD_MASK ((1ULL << 56) - 1)
#define SG_TAG(w) ((uint8_t)((w) >> SG_TAG_SHIFT))
#define SG_PAYLOAD(w) ((w)&SG_PAYLOAD_MASK)
#define SG_TAGGED(tag, payload) (((uint64_t)(tag) << SG_TAG_SHIFT) | ((payload)&SG_PAYLOAD_MASK))

enum { SG_SLOT_RECLAIMABLE = 0, SG_SLOT_PERMANENT = 1 };

/* Idle test for reclaimable slots: a slot may be reused for another key only when
 * its payload equals, in effect, a fresh one.  The table knows no algorithm: the
 * algorithms (sg_limiter.c) register theirs when the program loads.  It must be total:
 * payload and param may be garbage from a corrupted file, and the answer must then be
 * 0 or 1 without faulting.  With none registered, no reclaimable slot is ever idle. */
typedef int (*sg_idle_fn)(uint32_t algo, uint64_t param, uint64_t payload, uint64_t now);
void sg_table_set_idle(sg_idle_fn fn);

/* Find the slot for hash h, creating it when create != 0.
 * kind: SG_SLOT_RECLAIMABLE (meta = [algo:8 | param:48] recorded for reclaim) or
 * SG_SLOT_PERMANENT (never reclaimed; its four words are raw).
 * On SG_OK, *idx is the slot and *tag its generation tag: a reclaimable slot's
 * v[0] must be CASed only from values carrying that tag, read while
 * sg_slot_current() holds, which is what makes a decision meant for a reclaimed key
 * fail instead of landing on the new key.
 * now: the time at which other keys' slots are judged idle for reuse; 0 reads the
 * store clock after loading each candidate's word (a time read before it can be
 * older than the candidate's last decision). */
int sg_table_get(sg_table *t, sg_hash128 h, int kind, uint32_t algo, uint64_t param, uint64_t now,
                 int create, uint64_t *idx, uint8_t *tag);

typedef struct {
    uint64_t capacity, nslots, live, reclaimable, permanent, claiming, perm_capacity, perm_live;
} sg_stats;
void sg_table_stats(const sg_table *t, sg_stats *out);
/* Idle keys' slots this process reclaimed (sweeps and evictions in place), in any table:
 * a process-local count, so that the process where a reclaim happens can tell it. */
extern uint64_t sg_reclaimed_here;

/* Slots the slow path of a full store looks at per call (its sweep for an idle key
 * anywhere in the table), so a new key on a full store costs a bounded time. */
#define SG_SWEEP_BUDGET 128u
/* `live` is a reservation count: a process killed between reserving and claiming a
 * slot (or between failing and giving the reservation back) leaves it too high for
 * good.  A create that finds the store full recounts the LIVE and CLAIMING slots, at
 * most once per max(SG_RECOUNT_MIN_NS, SG_RECOUNT_NS_PER_SLOT * nslots) for the whole
 * store (a recount reads every slot: at most ~1% of one CPU), and CASes the count.
 * Reservations in flight during a recount are not in it; the next recount restores
 * them.  sg_table_recount does one now (returns 1 if it changed the count). */
/* live and perm_live keep the count in their low 32 bits and a count of changes in the
 * high 32: every reservation and release changes the word, so a recount's CAS fails if
 * the count moved at all while the slots were read, even back to the same number (a
 * release and a reservation during the scan could otherwise make it count a freed slot
 * and a new one, and leave the count too high: a store full by the count, not by keys). */
#define SG_LIVE_ONE ((1ULL << 32) | 1ULL)  /* add: one more, one change */
#define SG_LIVE_LESS ((1ULL << 32) - 1ULL) /* add to a count >= 1: one less, one change */
static inline uint64_t sg_live_count(uint64_t w) { return w & 0xffffffffULL; }
#define SG_RECOUNT_MIN_NS 100000000ULL
#define SG_RECOUNT_NS_PER_SLOT 1000ULL
int sg_table_recount(sg_table *t);

static inline uint64_t *sg_words(sg_table *t, uint64_t idx) { return t->slots[idx].v; }

/* 1 while slot idx is still the live reclaimable slot of generation `tag` (ctl top
 * bits: state LIVE, perm 0; then the tag).  A decider checks it after each load of
 * v[0]: once the slot is reused for a permanent key, v[0] is a raw word whose top
 * byte may equal the old tag, and the tag alone no longer protects it. */
static inline int sg_slot_current(const sg_table *t, uint64_t idx, uint8_t tag) {
    uint64_t c = __atomic_load_n(&t->slots[idx].ctl, __ATOMIC_ACQUIRE);
    return (c >> 61) == 4 && (uint8_t)(c >> 52) == tag;
}

/* ---- atomics on shared words ------------------------------------------------ */
static inline uint64_t sg_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* A key's identity words as a slot of generation tag holds them. */
static inline uint64_t sg_id1(sg_hash128 h, uint8_t tag) { return SG_TAGGED(tag, h.a >> 8); }
static inline uint64_t sg_id2(sg_hash128 h, uint8_t tag) { return SG_TAGGED(tag, h.b); }

/* The fast lookup: key h live and reclaimable in its home slot, where most keys
 * are.  Returns the slot's tag, or 0 (live slots never have tag 0): then ask
 * sg_table_get.  The same sg_slot_current() rule applies to the tag. */
static inline uint8_t sg_home_tag(const sg_table *t, sg_hash128 h) {
    const sg_slot *s = &t->slots[h.a & t->mask];
    uint64_t c = __atomic_load_n(&s->ctl, __ATOMIC_ACQUIRE);
    uint8_t tag = (uint8_t)(c >> 52);
    if ((c >> 61) != 4) return 0;
    if (sg_load(&s->id1) != sg_id1(h, tag) || sg_load(&s->id2) != sg_id2(h, tag)) return 0;
    return tag;
}
static inline void sg_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int sg_cas(uint64_t *p, uint64_t *expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline uint64_t sg_add(uint64_t *p, uint64_t n) { return __atomic_add_fetch(p, n, __ATOMIC_ACQ_REL); }

/* A shared counter is word 0 of a permanent slot. */
int sg_counter_slot(sg_table *t, const void *name, size_t len, uint64_t *idx);

#ifdef __cplusplus
}
#endif
#endif

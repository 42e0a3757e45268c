/* The policy directory: every policy of a store (kind, name, configuration
 * document, version, timestamps), so that any process can list and read the
 * policies of a store without knowing their options (DESIGN.md, rules 7 and 8).
 *
 * The directory is a fixed array of entries after the key table.  Documents are
 * opaque bytes here (the Python layer writes JSON).  Each entry holds two document
 * buffers: a writer fills the one not in use and publishes it with one CAS of the
 * entry's version (doc[version & 1] is current), so a reader never sees a torn
 * document and never waits.  A policy notices a change with one load of the
 * version word per decision.
 *
 * Writers (creating an entry, publishing a document) are rare administrative
 * steps; each holds a claim word with a stamp, which another writer takes over once
 * it is older than SG_DIR_STALE_NS, so a writer killed at any instruction blocks
 * nobody for long.  A claimer stalled past that and resumed could still scribble on
 * a buffer: every document carries a checksum, and a reader that meets a bad one
 * reports SG_ERR_HEADER rather than a wrong configuration.
 */
#ifndef SG_DIRECTORY_H
#define SG_DIRECTORY_H

#include "sg_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SG_DIR_ENTRY_SIZE 4096u
#define SG_DIR_NAME_MAX 200u
#define SG_DIR_DOC_MAX 1872u   /* bytes of one configuration document */
#define SG_DIR_MAX_ENTRIES 65536u
#define SG_DIR_STALE_NS 2000000000ULL /* a writer's claim older than 2 s is abandoned */

enum { SG_DIR_BUSY = 2 }; /* a writer holds the entry (try again) */

typedef struct {
    uint64_t len; /* bytes of data */
    uint64_t sum; /* sg_hash(data, len, seed = the version it was published as) */
    char data[SG_DIR_DOC_MAX];
} sg_dir_doc;

typedef struct sg_dir_entry {
    uint64_t ctl;     /* 0 free; SG_DIR_LIVE once kind and name are published */
    uint64_t key_a;   /* sg_hash of (kind, name) */
    uint64_t key_b;
    uint64_t version; /* documents published; doc[version & 1] is current; 0 = none yet */
    uint64_t writer;  /* 0, or the claim of the writer at work: [token:24 | store time >> 20:40] */
    uint64_t created_wall;
    uint64_t updated_wall;
    uint32_t kind;
    uint32_t name_len;
    char name[SG_DIR_NAME_MAX];
    char _pad[SG_DIR_ENTRY_SIZE - 64 - SG_DIR_NAME_MAX - 2 * sizeof(sg_dir_doc)];
    sg_dir_doc doc[2];
} sg_dir_entry;

_Static_assert(sizeof(sg_dir_entry) == SG_DIR_ENTRY_SIZE, "directory entry size");

#define SG_DIR_LIVE 0x4c495645ULL /* "LIVE" */

/* The entry of (kind, name): found, or created when create != 0.  SG_NOTFOUND,
 * SG_ERR_FULL (no free entry), SG_ERR_ARG (name too long or empty). */
int sg_dir_find(sg_table *t, uint32_t kind, const char *name, size_t len, int create, uint64_t *idx);
/* Copy entry idx's current document into buf (cap bytes): *len, *version.
 * version 0 means no document yet (*len = 0).  SG_ERR_HEADER for a damaged one. */
int sg_dir_read(sg_table *t, uint64_t idx, char *buf, size_t cap, size_t *len, uint64_t *version);
/* Publish a new document for entry idx.  expect != 0: only if the version is still
 * expect (else SG_DIR_BUSY with *version the current one: read and decide again).
 * token: the writer's random token.  On SG_OK *version is the new version. */
int sg_dir_write(sg_table *t, uint64_t idx, const char *doc, size_t len, uint64_t expect, uint64_t token,
                 uint64_t *version);
/* The entry's version word: a policy loads it once per decision. */
static inline uint64_t *sg_dir_version(sg_table *t, uint64_t idx) { return &t->dir[idx].version; }
/* Kind and name of a live entry (0 if idx is not live). */
int sg_dir_entry_info(sg_table *t, uint64_t idx, uint32_t *kind, char *name, size_t *name_len,
                      uint64_t *created_wall, uint64_t *updated_wall);

#ifdef __cplusplus
}
#endif
#endif

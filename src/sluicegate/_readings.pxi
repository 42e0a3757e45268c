# Read-only readings of a store's policies, for the exporters (sluicegate/metrics.py).
# They look state up without creating it, so a reader (a sidecar that never made the
# policies) takes no room in the store and changes nothing; state no process has
# written yet reads as zeros.  limiter_counts is in _limiter.pxi (its engine uses it).


cdef uint64_t *find_words(Table tbl, uint32_t kind, str name, str part) except? NULL:
    """The words of permanent slot (kind, name, part), or NULL when it does not exist."""
    cdef sg_hash128 h
    cdef uint64_t idx
    cdef uint8_t tag
    cdef int rc
    hash_key(part, namespace_seed(kind, name), &h)
    rc = sg_table_get(&tbl.t, h, SG_SLOT_PERMANENT, 0, 0, sg_store_now(&tbl.t), 0, &idx, &tag)
    if rc == SG_NOTFOUND:
        return NULL
    if rc != SG_OK:
        raise_table_rc(rc, f"{name!r}")
    return sg_words(&tbl.t, idx)


def store_fill(Table tbl):
    """(key capacity, live keys, permanent-slot capacity, permanent slots used, directory
    entries, idle keys reclaimed) from the header's counters: a few loads, no sweep."""
    tbl.check()
    return (tbl.t.hdr.capacity, sg_live_count(sg_load(&tbl.t.hdr.live)), tbl.t.hdr.perm_capacity,
            sg_live_count(sg_load(&tbl.t.hdr.perm_live)), tbl.t.ndir, sg_load(&tbl.t.hdr.reclaimed))


def cap_reading(Table tbl, str name):
    """(limit, in_use, granted, timeouts, reclaimed, drops) of cap `name`, or None when
    it has no state yet.  in_use counts every holder record any configuration declared,
    as the cap itself does (strict counting)."""
    cdef uint64_t *ctl
    cdef uint64_t *pair
    cdef uint64_t *st
    cdef uint64_t nrec, limit, i
    cdef uint64_t in_use = 0
    tbl.check()
    ctl = find_words(tbl, SG_NS_CONCURRENCY, name, "ctl")
    if ctl == NULL:
        return None
    limit = sg_load(&ctl[0])
    nrec = sg_load(&ctl[1])
    if nrec > SG_CAP_MAX_LIMIT:
        nrec = SG_CAP_MAX_LIMIT
    limit = 1 if limit < 1 else (nrec if limit > nrec else limit)  # sg_cap_limit's clamp
    for i in range((nrec + SG_CAP_PER_SLOT - 1) // SG_CAP_PER_SLOT):
        pair = find_words(tbl, SG_NS_CONCURRENCY, name, f"h{i}")
        if pair == NULL:
            continue
        in_use += sg_load(&pair[0]) != 0
        if i * SG_CAP_PER_SLOT + 1 < nrec:
            in_use += sg_load(&pair[2]) != 0
    st = find_words(tbl, SG_NS_CONCURRENCY, name, "st")
    if st == NULL:
        return (limit, in_use, sg_load(&ctl[3]), 0, 0, 0)
    return (limit, in_use, sg_load(&ctl[3]), sg_load(&st[1]), sg_load(&st[2]), sg_load(&st[3]))


def hist_read(Table tbl, uint32_t kind, str name, str part):
    """(cumulative counts, one per HIST_BOUNDS bound then +Inf; sum in seconds) of a
    policy's histogram, or None when no process has recorded into it."""
    cdef sg_hist h
    tbl.check()
    cdef bytes p = part.encode("utf-8")
    cdef int rc = sg_hist_open(&tbl.t, namespace_seed(kind, name), p, len(p), 0, &h)
    if rc == SG_NOTFOUND:
        return None
    if rc != SG_OK:
        raise_table_rc(rc, f"{name!r}")
    return hist_reading(&h)

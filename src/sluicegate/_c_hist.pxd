# Declarations of csrc/sg_hist.h: the one place this header is declared to Cython.
from libc.stdint cimport uint64_t
from sluicegate._c_core cimport sg_table

cdef extern from "sg_hist.h" nogil:
    enum:
        SG_HIST_BOUNDS
        SG_HIST_BUCKETS
        SG_HIST_SLOTS

    const uint64_t sg_hist_bounds_ns[]

    ctypedef struct sg_hist:
        uint64_t *w[SG_HIST_SLOTS]

    unsigned sg_hist_bucket(uint64_t ns)
    void sg_hist_record(const sg_hist *h, uint64_t ns)
    int sg_hist_open(sg_table *t, uint64_t seed, const char *part, size_t len, int create, sg_hist *h)
    void sg_hist_read(const sg_hist *h, uint64_t *counts, uint64_t *sum_ns)
    void sg_hist_clear(const sg_hist *h)

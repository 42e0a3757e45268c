# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, embedsignature=True
"""The compiled core of sluicegate: bindings over the C in csrc/.

Each part of the package keeps its bindings in its own .pxi; this file only
stitches them into one extension module."""

include "_csrc.pxi"
include "_table.pxi"
include "_directory.pxi"
include "_hist.pxi"
include "_concurrency.pxi"
include "_limiter.pxi"
include "_breaker.pxi"
include "_guard.pxi"
include "_readings.pxi"

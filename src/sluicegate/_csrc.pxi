# The C core's declarations: one .pxd per csrc/ header (no .pxi declares C itself).
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from sluicegate._c_core cimport *
from sluicegate._c_limiter cimport *
from sluicegate._c_directory cimport *
from sluicegate._c_concurrency cimport *
from sluicegate._c_breaker cimport *
from sluicegate._c_hist cimport *

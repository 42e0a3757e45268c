# Declarations of csrc/sg_directory.h: the one place this header is declared to Cython.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from sluicegate._c_core cimport sg_table, sg_hash128

cdef extern from "sg_directory.h" nogil:
    enum:
        SG_DIR_BUSY
        SG_DIR_NAME_MAX
        SG_DIR_DOC_MAX
    int sg_dir_find(sg_table *t, uint32_t kind, const char *name, size_t len, int create, uint64_t *idx)
    int sg_dir_read(sg_table *t, uint64_t idx, char *buf, size_t cap, size_t *len, uint64_t *version)
    int sg_dir_write(sg_table *t, uint64_t idx, const char *doc, size_t len, uint64_t expect, uint64_t token,
                     uint64_t *version)
    uint64_t *sg_dir_version(sg_table *t, uint64_t idx)
    int sg_dir_entry_info(sg_table *t, uint64_t idx, uint32_t *kind, char *name, size_t *name_len,
                          uint64_t *created_wall, uint64_t *updated_wall)

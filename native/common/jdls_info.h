/*
 * jdls_info.h - the per-port info record's numbers for the C side (the
 * shim's records of local processes: shim/shim_info.c). The definition is
 * src/info/format.ts (INFO_VERSION, INFO_FLUSH_MS, INFO_SUBDIR, INFO_ENV,
 * LOCAL_ADDR); test/shim-info.test.ts compares these with it.
 * docs/info-records.md documents the record.
 */
#ifndef JDLS_INFO_H
#define JDLS_INFO_H

#define JDLS_INFO_VERSION   1          /* InfoRecord.version */
#define JDLS_INFO_FLUSH_MS  200        /* coalescing: ordinary changes at most this often, never later */
#define JDLS_INFO_SUBDIR    "proc/info" /* under JBCRELEASEDIR */
#define JDLS_INFO_ENV       "JDLS_INFO" /* "0": write no record */
#define JDLS_INFO_LOCAL_ADDR "0.0.0.0" /* a process locking directly in the table */
#define JDLS_INFO_MAX_FILES 500        /* files in a record / an INFO frame: the most recently declared */

#endif /* JDLS_INFO_H */

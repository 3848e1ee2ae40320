/*
 * dataset.h - what the data set object (data.c) shares with its file
 * readers (data_idx.c, data_libsvm.c). Not installed.
 */
#ifndef DISTML_DATASET_H
#define DISTML_DATASET_H

#include "internal.h"

#include <zlib.h>

/* Makes a data set of arrays the caller allocated with malloc and hands
 * over (x for dense rows, else indptr/idx/val; y always); frees them on
 * failure (DML_ENOMEM). */
int dml__dataset_adopt(dml_dataset **out, size_t n, size_t dim, float *x,
                       uint64_t *indptr, uint32_t *idx, float *val, float *y);

/* Records the max_bytes a load ran under: dml_dataset_to_dense and
 * dml_scaler_new_fit refuse to allocate beyond it (DML_ETOOBIG), so a large
 * index declared in a small file cannot make them allocate without bound. */
void dml__dataset_set_limit(dml_dataset *ds, uint64_t limit);

/* Records that the labels are class indices 0..k-1 (they were checked). */
int dml__dataset_set_class_info(dml_dataset *ds, size_t k);

/* The size of the buffer zlib reads a file with. */
#define DML__GZ_BUFFER (1u << 17)

/* Reads up to len bytes (fewer only at the end of the data). On a zlib or
 * system error returns its DML_E* code with the reason in *why (valid until
 * the file is closed). */
int dml__gz_read(gzFile gz, const char *path, void *buf, size_t len,
                 size_t *got, const char **why);

/* A reader's message: "path:line: what" (line 0: "path: what"), or
 * "path: offset N: what" with `offset`; `what` comes from the file in part,
 * so the whole message is escaped. Sets the error detail, returns code. */
int dml__data_fail(int code, const char *path, unsigned long long line,
                   int offset, const char *fmt, ...) DML_PRINTF(5, 6);

/* The loaders behind dml_dataset_new_idx and dml_dataset_new_libsvm, with
 * resolved options; they set the error detail on failure. */
int dml__load_idx(dml_dataset **out, const char *images_path,
                  const char *labels_path, const dml_data_opts *opts);
int dml__load_libsvm(dml_dataset **out, const char *path,
                     const dml_data_opts *opts);

#endif

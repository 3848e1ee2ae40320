/*
 * distml/data.h - data sets for training: IDX (MNIST / Fashion-MNIST) and
 * LIBSVM / SVMlight readers (plain or gzip), dense and sparse (CSR) rows,
 * minibatch views, feature scaling, seeded shuffling and sharding.
 * The API rules (names, ownership, durations, errors, ABI): docs/api.md.
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
 *
 * Thread safety: functions that only read a data set (the accessors,
 * dml_dataset_batch, _new_slice, _new_shard, dml_scaler_new_fit, ...) may run at the same
 * time on one data set from many threads; functions that change it (shuffle,
 * scaling, label mapping, to_dense, free) need exclusive access. Different
 * data sets are independent.
 */
#ifndef DISTML_DATA_H
#define DISTML_DATA_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A data set: n rows of dim features, each with a float label, stored either
 * dense (n*dim floats, row-major) or sparse (CSR: per row a run of strictly
 * ascending column indices and their values). Opaque; owned by whoever
 * created it and freed with dml_dataset_free.
 */
typedef struct dml_dataset dml_dataset;

/*
 * A view of rows [start, start + n) of a data set, for minibatches. Every
 * pointer points into the data set: valid until the data set is changed
 * (shuffle, scaling, label mapping, to_dense) or freed. Exactly one of `x`
 * (dense) and `indptr` (sparse) is non-NULL. Frozen for the life of the
 * soname (docs/abi.md): hosts build batches for their own models.
 */
typedef struct dml_batch {
	size_t n;                /* rows in the batch */
	size_t dim;              /* features per row */
	const float *x;          /* dense: n*dim floats row-major; NULL if sparse */
	const uint64_t *indptr;  /* sparse CSR: n+1 offsets into idx/val (indptr[0] need not be 0); NULL if dense */
	const uint32_t *idx;     /* sparse: column indices, < dim, sorted ascending within a row */
	const float *val;        /* sparse: values */
	const float *y;          /* n labels (class index 0..k-1 stored as float for classification, or a real target) */
} dml_batch;

/* The defaults of the loader options (what 0 means), and limits. */
#define DML_DATA_DEFAULT_MAX_BYTES ((uint64_t)4 << 30) /* 4 GiB */
#define DML_DATA_DEFAULT_MAX_LINE ((size_t)1 << 20)    /* 1 MiB */
#define DML_DATA_MAX_CLASSES ((size_t)1 << 24) /* floats hold integers exactly */

/*
 * Options for the loaders; zero-initialised means the defaults. Fields that
 * apply to one format only are ignored by the other. May grow at its end
 * (docs/abi.md).
 */
typedef struct dml_data_opts {
	/* Upper bound on the memory the loaded arrays may take, in bytes
	 * (0 = 4 GiB). A file that needs more fails with DML_ETOOBIG before
	 * that memory is allocated. */
	uint64_t max_bytes;
	/* LIBSVM: the number of features. 0 = the largest index seen (+1 when
	 * 0-based); otherwise an index beyond it is an error. */
	size_t dim;
	/* LIBSVM: feature indices start at 0 (default: at 1, and 0 is an
	 * error). */
	int zero_based;
	/* LIBSVM: store the rows dense instead of sparse (CSR). */
	int dense;
	/* LIBSVM: longest accepted line in bytes, newline excluded
	 * (0 = 1 MiB). */
	size_t max_line;
	/* IDX: keep u8 pixels as 0..255 (default: divide by 255 into [0,1]).
	 * Float32 images are never scaled. */
	int raw_pixels;
	/* Labels: if non-zero, every label must be an integer in
	 * 0..classes-1 (checked as read; the error names the line or offset)
	 * and dml_dataset_classes reports `classes`. Not with remap_labels. */
	size_t classes;
	/* Labels: after loading, map the distinct labels in ascending order to
	 * 0..k-1 (see dml_dataset_remap_labels). Ignored by an IDX load
	 * without a labels file (its labels are all 0, and it has no classes). */
	int remap_labels;
} dml_data_opts;

/*
 * Loaders. Both read plain or gzip-compressed files (detected from the
 * content, so "train.svm.gz" and "train.svm" both work). `opts` may be
 * NULL (defaults) and is only read during the call. On success *out owns a
 * new data set; on failure *out is untouched, nothing leaks, and the error
 * detail (dml_error_detail) says what was wrong and where: the file as
 * named, then the line (LIBSVM) or the byte offset in the uncompressed
 * content (IDX), e.g. "train.svm:17: index 0 is not 1-based"; bytes quoted
 * from the file are escaped. Returns:
 *   DML_EINVAL  bad arguments or options
 *   DML_EIO     a file cannot be opened or read
 *   DML_EFORMAT malformed content (also corrupt gzip data)
 *   DML_ETRUNC  the file ends before the data its header claims (IDX), or
 *               inside a gzip stream
 *   DML_ETOOBIG the data would exceed opts->max_bytes, or a LIBSVM line
 *               is longer than opts->max_line
 *   DML_EDIM    the IDX images and labels files disagree on the count
 *   DML_ENOMEM  out of memory
 *   DML_EVERSION the caller's struct layout is newer than the library's
 * Memory grows with the data actually read, never on a header's word alone.
 * Thread-safe (no shared state).
 */

/*
 * IDX (http://yann.lecun.com/exdb/mnist/ format, e.g. Fashion-MNIST's
 * train-images-idx3-ubyte.gz). `images_path`: type u8 (0x08) or float32
 * (0x0D, big-endian as IDX stores it; must be finite), with 2 to 4
 * dimensions n x d1 [x d2 [x d3]]; each image is a dense row of
 * dim = d1*d2*d3 features, u8 divided by 255 unless opts->raw_pixels.
 * `labels_path`: type u8, one dimension n (must equal the images' n, else
 * DML_EDIM), stored as float class indices; dml_dataset_classes then reports
 * opts->classes if given, else the largest label + 1. `labels_path` may be
 * NULL: every label is 0 and classes is 0. Trailing bytes after the data are
 * an error.
 */
DML_API int dml_dataset_new_idx_abi(dml_dataset **out, const char *images_path,
                                    const char *labels_path,
                                    const dml_data_opts *opts, int abi);
#define dml_dataset_new_idx(...) dml_dataset_new_idx_abi(__VA_ARGS__, DML_ABI)

/*
 * LIBSVM / SVMlight text: one row per line, "label idx:val idx:val ...".
 * Labels and values are decimal floats (strtof syntax, finite, starting
 * with a digit, sign or '.': no other white space before them); indices are
 * decimal integers, 1-based unless opts->zero_based, strictly ascending
 * within a line. Fields are separated by spaces or tabs; "\r\n" line ends are
 * accepted; everything from '#' to the end of the line is a comment; blank
 * and comment-only lines are skipped. A "qid:N" field right after the label
 * is accepted and ignored (anywhere else it is an error). Sparse (CSR)
 * unless opts->dense; explicit zero values are kept as entries. Numbers are
 * read with strtof, so LC_NUMERIC must use '.' (as the default C locale
 * does).
 */
DML_API int dml_dataset_new_libsvm_abi(dml_dataset **out, const char *path,
                                       const dml_data_opts *opts, int abi);
#define dml_dataset_new_libsvm(...) dml_dataset_new_libsvm_abi(__VA_ARGS__, DML_ABI)

/*
 * In-memory data sets. Both copy their inputs (the caller keeps its arrays).
 * `y` (n labels) may be NULL: all labels 0. Every value must be finite, else
 * DML_EINVAL. n = 0 and dim = 0 are allowed. Thread-safe.
 *
 * dense: `x` holds n*dim floats row-major (may be NULL only if n*dim = 0).
 * sparse: `indptr` holds n+1 non-decreasing offsets into `idx`/`val`
 * (indptr[0] need not be 0); row r's entries are idx[indptr[r]..indptr[r+1])
 * with strictly ascending indices < dim, else DML_EINVAL.
 * DML_EINVAL, DML_ETOOBIG (sizes overflow), DML_ENOMEM.
 */
DML_API int dml_dataset_new_dense(dml_dataset **out, size_t n, size_t dim,
                                  const float *x, const float *y);
DML_API int dml_dataset_new_sparse(dml_dataset **out, size_t n, size_t dim,
                                   const uint64_t *indptr, const uint32_t *idx,
                                   const float *val, const float *y);

/* Frees `ds` and its arrays (NULL is fine). Views (dml_batch) into it become
 * invalid. */
DML_API void dml_dataset_free(dml_dataset *ds);

/* Accessors; `ds` must not be NULL. Thread-safe. */
DML_API size_t dml_dataset_rows(const dml_dataset *ds);
DML_API size_t dml_dataset_dim(const dml_dataset *ds);
DML_API int dml_dataset_is_sparse(const dml_dataset *ds);
/* Stored entries: n*dim when dense, the CSR entries when sparse. */
DML_API uint64_t dml_dataset_nnz(const dml_dataset *ds);
/* The n labels, owned by the data set (valid as for dml_batch). */
DML_API const float *dml_dataset_labels(const dml_dataset *ds);
/* The number of classes k when the labels are known to be class indices
 * 0..k-1 (after a remap or map, dml_dataset_set_classes, opts->classes, or
 * an IDX load with labels); 0 otherwise. */
DML_API size_t dml_dataset_classes(const dml_dataset *ds);
/* When classes k > 0: k floats, the label that class i stood for before the
 * last remap/map (0..k-1 when the labels were class indices already);
 * NULL when k = 0. Owned by the data set. */
DML_API const float *dml_dataset_class_values(const dml_dataset *ds);

/*
 * Fills `out` with a view of rows [start, start + count) clipped to n (so
 * the last batch of an epoch may be shorter; start = n gives an empty
 * batch). DML_EINVAL if start > n or an argument is NULL (out untouched).
 * Thread-safe.
 */
DML_API int dml_dataset_batch(const dml_dataset *ds, size_t start,
                              size_t count, dml_batch *out);

/*
 * Shuffles the rows in place (labels move with their rows) by a Fisher-Yates
 * shuffle driven by xoshiro256** seeded through splitmix64 from `seed`: the
 * same seed gives the same order on every machine, dense or sparse.
 * Dense shuffling allocates nothing; sparse shuffling needs a copy of the
 * entries (DML_ENOMEM leaves the data set unchanged). Not thread-safe on
 * `ds`.
 */
DML_API int dml_dataset_shuffle(dml_dataset *ds, uint64_t seed);

/*
 * Shard `i` of `n` (0 <= i < n): the rows dml_shard_range (distml/common.h)
 * gives for i of n: contiguous, in order, every row exactly once, sizes
 * differing by at most 1; with more shards than rows, the last ones are
 * empty. *out receives a COPY of those rows (an independent data set, with
 * the labels' class information; free it with dml_dataset_free; the
 * original may be changed or freed). DML_EINVAL, DML_ENOMEM.
 * Thread-safe (reads `ds` only).
 */
DML_API int dml_dataset_new_shard(dml_dataset **out, const dml_dataset *ds,
                                  int i, int n);

/* A copy of rows [start, start + count) clipped to n, as an independent data
 * set in *out (for a validation split, say). DML_EINVAL if start > n,
 * DML_ENOMEM. Thread-safe (reads `ds` only). */
DML_API int dml_dataset_new_slice(dml_dataset **out, const dml_dataset *ds,
                                  size_t start, size_t count);

/* Converts a sparse data set to dense storage in place (no-op if dense).
 * DML_ETOOBIG if n*dim floats overflow the address space, DML_ENOMEM; the
 * data set is unchanged on failure. Not thread-safe on `ds`. */
DML_API int dml_dataset_to_dense(dml_dataset *ds);

/*
 * Label mapping for classification. Not thread-safe on `ds`; on failure the
 * labels are unchanged.
 * remap: the distinct labels, in ascending order, become 0..k-1 (-1/+1 ->
 *   0/1, 1..10 -> 0..9); *k (may be NULL) receives k; the old labels are kept
 *   as the class values.
 * map: label values[i] becomes i, for a table of k distinct values (for
 *   example another data set's class values, so that a test set is mapped
 *   like its training set); DML_ENOTFOUND if a label is not in the table,
 *   DML_EINVAL for duplicates.
 * set_classes: declares that the labels are class indices 0..k-1 already
 *   (DML_EINVAL if one is not); k = 0 clears the class information.
 * k is at most 2^24 (floats hold integers exactly up to there), else
 * DML_EINVAL. DML_ENOMEM.
 */
DML_API int dml_dataset_remap_labels(dml_dataset *ds, size_t *k);
DML_API int dml_dataset_map_labels(dml_dataset *ds, const float *values,
                                   size_t k);
DML_API int dml_dataset_set_classes(dml_dataset *ds, size_t k);

/*
 * Feature scaling, per feature j: x' = (x - offset[j]) * scale[j], with the
 * statistics fitted on one data set (the training set) and applied to any
 * data set of the same dim (training, validation and test sets alike).
 *   STANDARD: offset = mean, scale = 1 / standard deviation (population)
 *   MINMAX:   offset = min,  scale = 1 / (max - min)   -> [0, 1] on the fit set
 *   MAXABS:   offset = 0,    scale = 1 / max |x|       -> [-1, 1] on the fit set
 * A constant feature (zero deviation, range or max) gets scale 1.
 * Sparse data: only MAXABS keeps zeros zero, so fitting STANDARD or MINMAX on
 * a sparse data set, or applying a scaler with a non-zero offset to one, is
 * DML_EINVAL (convert with dml_dataset_to_dense first if centring is wanted).
 * For MAXABS on sparse data the statistic is over the stored entries.
 */
typedef enum dml_scale_kind {
	DML_SCALE_STANDARD = 1,
	DML_SCALE_MINMAX = 2,
	DML_SCALE_MAXABS = 3,
} dml_scale_kind;

/* Fitted per-feature statistics. Opaque; immutable once made, so one scaler
 * may be used from many threads. */
typedef struct dml_scaler dml_scaler;

/* Fits a scaler of `kind` to `ds`; *out owns it (dml_scaler_free).
 * DML_EINVAL, DML_ENOMEM. Thread-safe (reads `ds` only). */
DML_API int dml_scaler_new_fit(dml_scaler **out, const dml_dataset *ds,
                               dml_scale_kind kind);
/* A scaler from saved parameters: `dim` offsets and scales (copied; finite,
 * else DML_EINVAL). DML_ENOMEM. */
DML_API int dml_scaler_new(dml_scaler **out, size_t dim, const float *offset,
                           const float *scale);
/* Scales `ds` in place. DML_EDIM if the dims differ, DML_EINVAL for a
 * centring scaler on sparse data; `ds` unchanged on failure. Not
 * thread-safe on `ds`. */
DML_API int dml_scaler_apply(const dml_scaler *sc, dml_dataset *ds);
/* The parameters (owned by the scaler): dim, and dim offsets and scales;
 * any output pointer may be NULL. */
DML_API void dml_scaler_params(const dml_scaler *sc, size_t *dim,
                               const float **offset, const float **scale);
/* Frees `sc` (NULL is fine). */
DML_API void dml_scaler_free(dml_scaler *sc);

/* ------------------------------------------------------------------ */
/* Deprecated in 0.2 (kept for one release; docs/api.md)              */
/* ------------------------------------------------------------------ */
#ifndef DML_NO_DEPRECATED
/* The loaders with their own message buffer (`err`, `errcap` bytes, may be
 * NULL): the same text as the error detail. */
DML_DEPRECATED("dml_dataset_new_idx (the message is the error detail)")
DML_API int dml_dataset_load_idx(dml_dataset **out, const char *images_path,
                                 const char *labels_path,
                                 const dml_data_opts *opts, char *err,
                                 size_t errcap);
DML_DEPRECATED("dml_dataset_new_libsvm (the message is the error detail)")
DML_API int dml_dataset_load_libsvm(dml_dataset **out, const char *path,
                                    const dml_data_opts *opts, char *err,
                                    size_t errcap);
DML_DEPRECATED("dml_dataset_new_shard (out first)")
DML_API int dml_dataset_shard(const dml_dataset *ds, int i, int n,
                              dml_dataset **out);
DML_DEPRECATED("dml_dataset_new_slice (out first)")
DML_API int dml_dataset_slice(const dml_dataset *ds, size_t start,
                              size_t count, dml_dataset **out);
DML_DEPRECATED("dml_scaler_new_fit (out first)")
DML_API int dml_scaler_fit(const dml_dataset *ds, dml_scale_kind kind,
                           dml_scaler **out);
#endif

#ifdef __cplusplus
}
#endif
#endif /* DISTML_DATA_H */

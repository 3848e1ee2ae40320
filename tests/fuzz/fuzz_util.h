/*
 * fuzz_util.h - helpers shared by the libFuzzer harnesses: a cursor over the
 * fuzz input, files that live in memory (the loaders take paths), gzip, and
 * a check that stops the run on a broken invariant.
 *
 * Include it first: it sets _GNU_SOURCE for memfd_create. Harnesses print
 * nothing; a failed FZ_CHECK aborts, which libFuzzer reports as a crash
 * with the input saved.
 */
#ifndef DISTML_FUZZ_UTIL_H
#define DISTML_FUZZ_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <distml.h>

#define FZ_CHECK(c)                                                            \
	do {                                                                   \
		if (!(c))                                                      \
			abort();                                               \
	} while (0)

/* A cursor over the input: reads past the end give zeros. */
typedef struct fz {
	const uint8_t *p;
	size_t n;
} fz;

static inline uint8_t fz_u8(fz *f)
{
	if (!f->n)
		return 0;
	f->n--;
	return *f->p++;
}

static inline uint16_t fz_u16(fz *f)
{
	uint16_t lo = fz_u8(f);
	return (uint16_t)(lo | (uint16_t)fz_u8(f) << 8);
}

static inline uint32_t fz_u32(fz *f)
{
	uint32_t lo = fz_u16(f);
	return lo | (uint32_t)fz_u16(f) << 16;
}

/* Up to k bytes; *got says how many there were. */
static inline const uint8_t *fz_take(fz *f, size_t k, size_t *got)
{
	const uint8_t *p = f->p;
	if (k > f->n)
		k = f->n;
	f->p += k;
	f->n -= k;
	*got = k;
	return p;
}

/*
 * A file in memory with a path that open() accepts (/proc/self/fd/N of a
 * memfd), reused from run to run; without memfd, or for readers that
 * refuse symbolic links (checkpoints: /proc/self/fd/N is one), a file in a
 * temporary directory of this process, removed at exit.
 */
typedef struct fz_file {
	int fd;
	char path[64];
	int real; /* a regular file's path, not a link */
} fz_file;

#define FZ_FILE_INIT {-1, {0}, 0}
#define FZ_REAL_FILE_INIT {-1, {0}, 1}

static char fz_tmpdir[32];
static int fz_tmpfiles;

static inline void fz_cleanup(void)
{
	char p[64];
	for (int i = 0; i < fz_tmpfiles; i++) {
		snprintf(p, sizeof p, "%s/f%d", fz_tmpdir, i);
		unlink(p);
	}
	if (fz_tmpdir[0])
		rmdir(fz_tmpdir);
}

static inline void fz_file_open(fz_file *f)
{
	f->fd = f->real ? -1 : memfd_create("dml-fuzz", MFD_CLOEXEC);
	if (f->fd >= 0) {
		snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
		if (access(f->path, R_OK) == 0)
			return;
		close(f->fd);
	}
	if (!fz_tmpdir[0]) {
		strcpy(fz_tmpdir, "/tmp/dml-fuzz-XXXXXX");
		FZ_CHECK(mkdtemp(fz_tmpdir));
		atexit(fz_cleanup);
	}
	snprintf(f->path, sizeof f->path, "%s/f%d", fz_tmpdir, fz_tmpfiles++);
	f->fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FZ_CHECK(f->fd >= 0);
}

/* Makes the file hold exactly p[0..n). */
static inline void fz_file_set(fz_file *f, const void *p, size_t n)
{
	if (f->fd < 0)
		fz_file_open(f);
	FZ_CHECK(ftruncate(f->fd, 0) == 0);
	const uint8_t *b = p;
	size_t off = 0;
	while (off < n) {
		ssize_t k = pwrite(f->fd, b + off, n - off, (off_t)off);
		FZ_CHECK(k > 0 || (k < 0 && errno == EINTR));
		if (k > 0)
			off += (size_t)k;
	}
}

/* `want` bytes that repeat p[0..n) (zeros if n is 0), in a new buffer: big
 * inputs (past the readers' chunk sizes) from small ones. */
static inline uint8_t *fz_cycle(const uint8_t *p, size_t n, size_t want)
{
	uint8_t *out = malloc(want ? want : 1);
	FZ_CHECK(out);
	if (!n) {
		memset(out, 0, want);
		return out;
	}
	size_t have = want < n ? want : n;
	memcpy(out, p, have);
	while (have < want) { /* doubling: few calls, whatever n is */
		size_t k = want - have < have ? want - have : have;
		memcpy(out + have, out, k);
		have += k;
	}
	return out;
}

/* p[0..n) deflated with zlib's deflateInit2(level, window_bits,
 * strategy) (window_bits 15 = zlib, 15 + 16 = gzip), in a new buffer. */
static inline uint8_t *fz_deflate(const void *p, size_t n, int level, int window_bits,
                                  int strategy, size_t *len)
{
	z_stream zs;
	memset(&zs, 0, sizeof zs);
	FZ_CHECK(deflateInit2(&zs, level, Z_DEFLATED, window_bits, 8, strategy) == Z_OK);
	size_t cap = deflateBound(&zs, (uLong)n) + 32;
	uint8_t *out = malloc(cap);
	FZ_CHECK(out);
	zs.next_in = (Bytef *)(uintptr_t)p;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	FZ_CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
	*len = cap - zs.avail_out;
	deflateEnd(&zs);
	return out;
}

/* The gzip encoding of p[0..n) at `level` (0-9), in a new buffer. */
static inline uint8_t *fz_gzip(const void *p, size_t n, int level, size_t *len)
{
	return fz_deflate(p, n, level, 15 + 16, Z_DEFAULT_STRATEGY, len);
}

/* The content of a data file from the input's first byte `how`:
 * 0 plain, 1 gzip, 2 gzip cut short at `cut`, 3 gzip with one byte flipped
 * at `cut` (corrupt data or checksum). Sets *len; free the result. */
static inline uint8_t *fz_encode_file(int how, const uint8_t *p, size_t n,
                                      int level, uint16_t cut, size_t *len)
{
	if (how == 0) {
		uint8_t *c = malloc(n ? n : 1);
		FZ_CHECK(c);
		if (n)
			memcpy(c, p, n);
		*len = n;
		return c;
	}
	if (n > 65536 && level > 1)
		level = 1; /* big files: speed over size */
	uint8_t *z = fz_gzip(p, n, level, len);
	if (how == 2 && *len)
		*len = cut % *len;
	else if (how == 3 && *len)
		z[cut % *len] ^= (uint8_t)(1u << (cut >> 13));
	return z;
}

/* The error detail after a failed load: NUL-terminated within
 * DML_ERRMSG_MAX, saying something, and printable (input bytes escaped). */
static inline void fz_check_detail(int rc)
{
	const char *d = dml_error_detail();
	size_t n = strnlen(d, DML_ERRMSG_MAX);
	FZ_CHECK(n < DML_ERRMSG_MAX);
	if (rc != DML_ENOMEM)
		FZ_CHECK(n > 0);
	for (size_t i = 0; i < n; i++) /* bytes from the file are escaped */
		FZ_CHECK(d[i] >= 0x20 && d[i] < 0x7f);
}

/*
 * The invariants of a loaded data set (data.h): finite labels and values,
 * a consistent CSR layout, labels within the declared classes; then the
 * calls that read or reorder it (batch, slice, shard, shuffle, to_dense)
 * on small sets. Frees nothing.
 */
static inline void fz_check_dataset(dml_dataset *ds)
{
	size_t n = dml_dataset_rows(ds), dim = dml_dataset_dim(ds);
	size_t k = dml_dataset_classes(ds);
	const float *y = dml_dataset_labels(ds);
	FZ_CHECK(y || n == 0);
	for (size_t i = 0; i < n; i++) {
		FZ_CHECK(isfinite(y[i]));
		if (k)
			FZ_CHECK(y[i] >= 0 && y[i] < (float)k && y[i] == (float)(size_t)y[i]);
	}
	if (k) {
		const float *cv = dml_dataset_class_values(ds);
		FZ_CHECK(cv);
		for (size_t i = 0; i < k; i++)
			FZ_CHECK(isfinite(cv[i]));
	}
	dml_batch b;
	FZ_CHECK(dml_dataset_batch(ds, 0, n, &b) == 0);
	FZ_CHECK(b.n == n && b.dim == dim && b.y == y);
	FZ_CHECK(!b.x != !b.indptr);
	FZ_CHECK(!!b.indptr == dml_dataset_is_sparse(ds));
	if (b.x) {
		FZ_CHECK(dml_dataset_nnz(ds) == (uint64_t)n * dim);
		for (size_t i = 0; i < n * dim; i++)
			FZ_CHECK(isfinite(b.x[i]));
	} else {
		FZ_CHECK(b.indptr[n] - b.indptr[0] == dml_dataset_nnz(ds));
		for (size_t r = 0; r < n; r++) {
			FZ_CHECK(b.indptr[r] <= b.indptr[r + 1]);
			for (uint64_t e = b.indptr[r]; e < b.indptr[r + 1]; e++) {
				FZ_CHECK(b.idx[e] < dim && isfinite(b.val[e]));
				if (e > b.indptr[r])
					FZ_CHECK(b.idx[e] > b.idx[e - 1]);
			}
		}
	}
	FZ_CHECK(dml_dataset_batch(ds, n, 1, &b) == 0 && b.n == 0);
	FZ_CHECK(dml_dataset_batch(ds, n + 1, 1, &b) == DML_EINVAL);
	if ((uint64_t)n * (dim + 1) > (1u << 16))
		return;
	dml_dataset *s = NULL;
	FZ_CHECK(dml_dataset_new_slice(&s, ds, n / 3, n) == 0);
	FZ_CHECK(dml_dataset_rows(s) == n - n / 3 && dml_dataset_dim(s) == dim);
	FZ_CHECK(dml_dataset_shuffle(s, n) == 0);
	dml_dataset_free(s);
	s = NULL;
	FZ_CHECK(dml_dataset_new_shard(&s, ds, 1, 2) == 0);
	FZ_CHECK(dml_dataset_rows(s) == n / 2);
	int rc = dml_dataset_to_dense(s);
	FZ_CHECK(rc == 0 || rc == DML_ETOOBIG || rc == DML_ENOMEM);
	dml_dataset_free(s);
}

#endif


/*
 * data.c - the data set object: in-memory construction, minibatch views,
 * copies (slices, shards), seeded shuffling, dense conversion, label mapping
 * and feature scaling. The file readers are data_idx.c and data_libsvm.c;
 * they build their arrays and hand them over with dml__dataset_adopt.
 */
#include "dataset.h"

#include "abi.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

struct dml_dataset {
	size_t n;
	size_t dim;
	float *x;          /* dense: n*dim floats; NULL when sparse */
	uint64_t *indptr;  /* sparse: n+1 offsets, indptr[0] = 0; NULL when dense */
	uint32_t *idx;     /* sparse: indptr[n] column indices */
	float *val;        /* sparse: indptr[n] values */
	float *y;          /* n labels */
	size_t classes;    /* k, or 0 */
	float *class_values; /* k labels that the classes stood for, or NULL */
	uint64_t limit;    /* the max_bytes it was loaded under, which later
	                      steps sized by its dimension obey (0 = none) */
};

struct dml_scaler {
	size_t dim;
	float *offset;
	float *scale;
};

#define MAX_CLASSES DML_DATA_MAX_CLASSES
#define GZ_READ_MAX (1u << 30) /* bytes per gzread, which takes an unsigned */

/* ---- allocation helpers ----------------------------------------------- */

/* count*size bytes (at least 1, so that empty arrays are non-NULL), or NULL
 * on overflow or exhaustion. */
static void *alloc_array(size_t count, size_t size)
{
	if (size && count > SIZE_MAX / size)
		return NULL;
	size_t bytes = count * size;
	return malloc(bytes ? bytes : 1);
}

static void *dup_array(const void *src, size_t count, size_t size)
{
	void *p = alloc_array(count, size);
	if (p && count)
		memcpy(p, src, count * size);
	return p;
}

static int all_finite(const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i]))
			return 0;
	return 1;
}

int dml__dataset_adopt(dml_dataset **out, size_t n, size_t dim, float *x,
                       uint64_t *indptr, uint32_t *idx, float *val, float *y)
{
	dml_dataset *ds = calloc(1, sizeof *ds);
	if (!ds) {
		free(x);
		free(indptr);
		free(idx);
		free(val);
		free(y);
		return DML_ENOMEM;
	}
	ds->n = n;
	ds->dim = dim;
	ds->x = x;
	ds->indptr = indptr;
	ds->idx = idx;
	ds->val = val;
	ds->y = y;
	*out = ds;
	return 0;
}

void dml__dataset_set_limit(dml_dataset *ds, uint64_t limit) { ds->limit = limit; }

int dml__data_fail(int code, const char *path, unsigned long long line,
                   int offset, const char *fmt, ...)
{
	char what[200], msg[DML_ERRMSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (offset)
		snprintf(msg, sizeof msg, "%s: offset %llu: %s", path, line, what);
	else if (line)
		snprintf(msg, sizeof msg, "%s:%llu: %s", path, line, what);
	else
		snprintf(msg, sizeof msg, "%s: %s", path, what);
	dml__escape(dml__detail_buf(), DML_ERRMSG_MAX, msg, strlen(msg));
	return code;
}

int dml__gz_read(gzFile gz, const char *path, void *buf, size_t len,
                 size_t *got, const char **why)
{
	size_t have = 0;
	while (have < len) {
		size_t want = len - have;
		if (want > GZ_READ_MAX)
			want = GZ_READ_MAX;
		int r = gzread(gz, (char *)buf + have, (unsigned)want);
		if (r <= 0)
			break;
		have += (size_t)r;
	}
	*got = have;
	if (have == len)
		return 0;
	int zerr;
	const char *msg = gzerror(gz, &zerr);
	switch (zerr) {
	case Z_OK:
	case Z_STREAM_END:
		return 0;
	case Z_BUF_ERROR:
		*why = "gzip stream truncated";
		return DML_ETRUNC;
	case Z_ERRNO:
		*why = errno ? strerror(errno) : "read error";
		return DML_EIO;
	case Z_MEM_ERROR:
		*why = "out of memory";
		return DML_ENOMEM;
	default:
		/* zlib says "<path>: <what>"; the caller names the file */
		if (msg && !strncmp(msg, path, strlen(path)) &&
		    !strncmp(msg + strlen(path), ": ", 2))
			msg += strlen(path) + 2;
		*why = msg && *msg ? msg : "corrupt gzip data";
		return DML_EFORMAT;
	}
}

/* ---- construction and access ------------------------------------------ */

int dml_dataset_new_dense(dml_dataset **out, size_t n, size_t dim,
                          const float *x, const float *y)
{
	dml__detail_clear();
	if (!out)
		return DML_EINVAL;
	if (dim && n > SIZE_MAX / sizeof(float) / dim)
		return DML_ETOOBIG;
	size_t total = n * dim;
	if ((total && !x) || (x && !all_finite(x, total)) ||
	    (y && !all_finite(y, n)))
		return DML_EINVAL;
	float *xc = dup_array(x, total, sizeof *xc);
	float *yc = alloc_array(n, sizeof *yc);
	if (!xc || !yc) {
		free(xc);
		free(yc);
		return DML_ENOMEM;
	}
	if (y && n)
		memcpy(yc, y, n * sizeof *yc);
	else if (n)
		memset(yc, 0, n * sizeof *yc);
	return dml__dataset_adopt(out, n, dim, xc, NULL, NULL, NULL, yc);
}

/* Checks CSR rows: offsets non-decreasing, indices ascending and < dim,
 * values finite. */
static int check_csr(size_t n, size_t dim, const uint64_t *indptr,
                     const uint32_t *idx, const float *val)
{
	for (size_t r = 0; r < n; r++) {
		if (indptr[r + 1] < indptr[r])
			return DML_EINVAL;
		for (uint64_t e = indptr[r]; e < indptr[r + 1]; e++) {
			if (idx[e] >= dim || (e > indptr[r] && idx[e] <= idx[e - 1]) ||
			    !isfinite(val[e]))
				return DML_EINVAL;
		}
	}
	return 0;
}

int dml_dataset_new_sparse(dml_dataset **out, size_t n, size_t dim,
                           const uint64_t *indptr, const uint32_t *idx,
                           const float *val, const float *y)
{
	dml__detail_clear();
	if (!out || (!indptr && n) || n == SIZE_MAX)
		return DML_EINVAL;
	uint64_t base = n ? indptr[0] : 0, nnz = 0;
	if (n) {
		if (indptr[n] < base)
			return DML_EINVAL;
		nnz = indptr[n] - base;
	}
	if (nnz > SIZE_MAX / sizeof(float))
		return DML_ETOOBIG;
	if ((nnz && (!idx || !val)) || (y && !all_finite(y, n)))
		return DML_EINVAL;
	int rc = check_csr(n, dim, indptr, idx, val);
	if (rc)
		return rc;
	uint64_t *ip = alloc_array(n + 1, sizeof *ip);
	uint32_t *ic = dup_array(nnz ? idx + base : NULL, (size_t)nnz, sizeof *ic);
	float *vc = dup_array(nnz ? val + base : NULL, (size_t)nnz, sizeof *vc);
	float *yc = alloc_array(n, sizeof *yc);
	if (!ip || !ic || !vc || !yc) {
		free(ip);
		free(ic);
		free(vc);
		free(yc);
		return DML_ENOMEM;
	}
	ip[0] = 0;
	for (size_t r = 0; r < n; r++)
		ip[r + 1] = indptr[r + 1] - base;
	if (y && n)
		memcpy(yc, y, n * sizeof *yc);
	else if (n)
		memset(yc, 0, n * sizeof *yc);
	return dml__dataset_adopt(out, n, dim, NULL, ip, ic, vc, yc);
}

void dml_dataset_free(dml_dataset *ds)
{
	if (!ds)
		return;
	free(ds->x);
	free(ds->indptr);
	free(ds->idx);
	free(ds->val);
	free(ds->y);
	free(ds->class_values);
	free(ds);
}

size_t dml_dataset_rows(const dml_dataset *ds) { return ds->n; }
size_t dml_dataset_dim(const dml_dataset *ds) { return ds->dim; }
int dml_dataset_is_sparse(const dml_dataset *ds) { return ds->indptr != NULL; }
const float *dml_dataset_labels(const dml_dataset *ds) { return ds->y; }
size_t dml_dataset_classes(const dml_dataset *ds) { return ds->classes; }

uint64_t dml_dataset_nnz(const dml_dataset *ds)
{
	return ds->indptr ? ds->indptr[ds->n] : (uint64_t)ds->n * ds->dim;
}

const float *dml_dataset_class_values(const dml_dataset *ds)
{
	return ds->classes ? ds->class_values : NULL;
}

int dml_dataset_batch(const dml_dataset *ds, size_t start, size_t count,
                      dml_batch *out)
{
	dml__detail_clear();
	if (!ds || !out || start > ds->n)
		return DML_EINVAL;
	size_t rows = ds->n - start < count ? ds->n - start : count;
	dml_batch b = {0};
	b.n = rows;
	b.dim = ds->dim;
	b.y = ds->y + start;
	if (ds->indptr) {
		b.indptr = ds->indptr + start;
		b.idx = ds->idx;
		b.val = ds->val;
	} else {
		b.x = ds->x + start * ds->dim;
	}
	*out = b;
	return 0;
}

/* Frees the CSR arrays and takes the given ones (NULL: dense now). */
static void replace_csr(dml_dataset *ds, uint64_t *indptr, uint32_t *idx,
                        float *val)
{
	free(ds->indptr);
	free(ds->idx);
	free(ds->val);
	ds->indptr = indptr;
	ds->idx = idx;
	ds->val = val;
}

/* ---- copies ----------------------------------------------------------- */

static int copy_class_info(dml_dataset *dst, const dml_dataset *src)
{
	dst->limit = src->limit;
	if (!src->classes)
		return 0;
	dst->class_values = dup_array(src->class_values, src->classes,
	                              sizeof(float));
	if (!dst->class_values)
		return DML_ENOMEM;
	dst->classes = src->classes;
	return 0;
}

int dml_dataset_new_slice(dml_dataset **out, const dml_dataset *ds,
                          size_t start, size_t count)
{
	dml__detail_clear();
	dml_batch b;
	dml_dataset *c;
	if (!out || dml_dataset_batch(ds, start, count, &b))
		return DML_EINVAL;
	int rc = !ds->indptr
		? dml_dataset_new_dense(&c, b.n, b.dim, b.x, b.y)
		: dml_dataset_new_sparse(&c, b.n, b.dim, b.indptr, b.idx, b.val, b.y);
	if (!rc && (rc = copy_class_info(c, ds)))
		dml_dataset_free(c);
	if (!rc)
		*out = c;
	return rc;
}

int dml_dataset_new_shard(dml_dataset **out, const dml_dataset *ds, int i, int n)
{
	dml__detail_clear();
	size_t start, count;
	if (!ds || !out)
		return DML_EINVAL;
	int rc = dml_shard_range(ds->n, i, n, &start, &count);
	return rc ? rc : dml_dataset_new_slice(out, ds, start, count);
}

int dml_dataset_to_dense(dml_dataset *ds)
{
	dml__detail_clear();
	if (!ds)
		return DML_EINVAL;
	if (!ds->indptr)
		return 0;
	if (ds->dim && ds->n > SIZE_MAX / sizeof(float) / ds->dim)
		return DML_ETOOBIG;
	uint64_t q = ds->limit / sizeof(float); /* floats allowed, labels too */
	if (ds->limit && ds->dim && (ds->n > q || ds->n * (uint64_t)ds->dim > q - ds->n))
		return dml__fail(DML_ETOOBIG, "%zu rows x %zu features stored dense "
		                 "exceed the max_bytes the data were loaded with "
		                 "(%llu bytes)", ds->n, ds->dim,
		                 (unsigned long long)ds->limit);
	float *x = alloc_array(ds->n * ds->dim, sizeof *x);
	if (!x)
		return DML_ENOMEM;
	if (ds->n && ds->dim)
		memset(x, 0, ds->n * ds->dim * sizeof *x);
	for (size_t r = 0; r < ds->n; r++)
		for (uint64_t e = ds->indptr[r]; e < ds->indptr[r + 1]; e++)
			x[r * ds->dim + ds->idx[e]] = ds->val[e];
	replace_csr(ds, NULL, NULL, NULL);
	ds->x = x;
	return 0;
}

/* ---- shuffling -------------------------------------------------------- */

/* xoshiro256** (Blackman and Vigna), seeded through splitmix64: fixed
 * integer arithmetic, so every platform draws the same sequence. */
typedef struct rng {
	uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static void rng_seed(rng *g, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		g->s[i] = splitmix64(&seed);
}

static uint64_t rng_next(rng *g)
{
	uint64_t *s = g->s;
	uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

/* Uniform in [0, bound) without modulo bias (bound >= 1). */
static uint64_t rng_below(rng *g, uint64_t bound)
{
	uint64_t threshold = (0 - bound) % bound;
	for (;;) {
		uint64_t r = rng_next(g);
		if (r >= threshold)
			return r % bound;
	}
}

static void swap_floats(float *a, float *b, size_t n)
{
	float tmp[64];
	while (n) {
		size_t k = n < 64 ? n : 64;
		memcpy(tmp, a, k * sizeof *a);
		memcpy(a, b, k * sizeof *a);
		memcpy(b, tmp, k * sizeof *a);
		a += k;
		b += k;
		n -= k;
	}
}

/* Sparse rows differ in length, so they are gathered into new arrays in
 * the order that the same Fisher-Yates swaps give to a permutation. */
static int shuffle_sparse(dml_dataset *ds, rng *g)
{
	size_t n = ds->n, nnz = (size_t)ds->indptr[n];
	size_t *perm = alloc_array(n, sizeof *perm);
	uint64_t *ip = alloc_array(n + 1, sizeof *ip);
	uint32_t *ic = alloc_array(nnz, sizeof *ic);
	float *vc = alloc_array(nnz, sizeof *vc);
	float *yc = alloc_array(n, sizeof *yc);
	if (!perm || !ip || !ic || !vc || !yc) {
		free(perm);
		free(ip);
		free(ic);
		free(vc);
		free(yc);
		return DML_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	for (size_t i = n; i-- > 1;) {
		size_t j = (size_t)rng_below(g, (uint64_t)i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	ip[0] = 0;
	for (size_t r = 0; r < n; r++) {
		size_t src = perm[r];
		uint64_t a = ds->indptr[src], len = ds->indptr[src + 1] - a;
		memcpy(ic + ip[r], ds->idx + a, (size_t)len * sizeof *ic);
		memcpy(vc + ip[r], ds->val + a, (size_t)len * sizeof *vc);
		ip[r + 1] = ip[r] + len;
		yc[r] = ds->y[src];
	}
	free(perm);
	replace_csr(ds, ip, ic, vc);
	free(ds->y);
	ds->y = yc;
	return 0;
}

int dml_dataset_shuffle(dml_dataset *ds, uint64_t seed)
{
	dml__detail_clear();
	if (!ds)
		return DML_EINVAL;
	rng g;
	rng_seed(&g, seed);
	if (ds->indptr)
		return shuffle_sparse(ds, &g);
	for (size_t i = ds->n; i-- > 1;) {
		size_t j = (size_t)rng_below(&g, (uint64_t)i + 1);
		if (j == i)
			continue;
		swap_floats(ds->x + i * ds->dim, ds->x + j * ds->dim, ds->dim);
		float t = ds->y[i];
		ds->y[i] = ds->y[j];
		ds->y[j] = t;
	}
	return 0;
}

/* ---- labels ----------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* A label value and its class, for looking labels up in a table. */
typedef struct class_entry {
	float value;
	size_t cls;
} class_entry;

static int cmp_entry(const void *a, const void *b)
{
	return cmp_float(&((const class_entry *)a)->value,
	                 &((const class_entry *)b)->value);
}

/* Maps every label through the sorted table (k entries) into a new label
 * array, then installs it with `values` (k floats, taken over). */
static int apply_table(dml_dataset *ds, const class_entry *tab, size_t k,
                       float *values)
{
	float *ny = alloc_array(ds->n, sizeof *ny);
	if (!ny) {
		free(values);
		return DML_ENOMEM;
	}
	for (size_t i = 0; i < ds->n; i++) {
		size_t lo = 0, hi = k;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (tab[mid].value < ds->y[i])
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == k || tab[lo].value != ds->y[i]) {
			free(ny);
			free(values);
			return DML_ENOTFOUND;
		}
		ny[i] = (float)tab[lo].cls;
	}
	free(ds->y);
	free(ds->class_values);
	ds->y = ny;
	ds->class_values = values;
	ds->classes = k;
	return 0;
}

int dml_dataset_map_labels(dml_dataset *ds, const float *values, size_t k)
{
	dml__detail_clear();
	if (!ds || !values || k == 0 || k > MAX_CLASSES || !all_finite(values, k))
		return DML_EINVAL;
	class_entry *tab = alloc_array(k, sizeof *tab);
	float *vals = dup_array(values, k, sizeof *vals);
	if (!tab || !vals) {
		free(tab);
		free(vals);
		return DML_ENOMEM;
	}
	for (size_t i = 0; i < k; i++) {
		tab[i].value = values[i];
		tab[i].cls = i;
	}
	qsort(tab, k, sizeof *tab, cmp_entry);
	for (size_t i = 1; i < k; i++) {
		if (tab[i].value == tab[i - 1].value) {
			free(tab);
			free(vals);
			return DML_EINVAL;
		}
	}
	int rc = apply_table(ds, tab, k, vals);
	free(tab);
	return rc;
}

int dml_dataset_remap_labels(dml_dataset *ds, size_t *k)
{
	dml__detail_clear();
	if (!ds)
		return DML_EINVAL;
	if (ds->n == 0) {
		free(ds->class_values);
		ds->class_values = NULL;
		ds->classes = 0;
		if (k)
			*k = 0;
		return 0;
	}
	float *sorted = dup_array(ds->y, ds->n, sizeof *sorted);
	if (!sorted)
		return DML_ENOMEM;
	qsort(sorted, ds->n, sizeof *sorted, cmp_float);
	size_t m = 1;
	for (size_t i = 1; i < ds->n; i++)
		if (sorted[i] != sorted[m - 1])
			sorted[m++] = sorted[i];
	if (m > MAX_CLASSES) {
		free(sorted);
		return DML_EINVAL;
	}
	class_entry *tab = alloc_array(m, sizeof *tab);
	float *vals = realloc(sorted, m * sizeof *sorted);
	if (!tab || !vals) {
		free(tab);
		free(vals ? vals : sorted);
		return DML_ENOMEM;
	}
	for (size_t i = 0; i < m; i++) {
		tab[i].value = vals[i];
		tab[i].cls = i;
	}
	int rc = apply_table(ds, tab, m, vals);
	free(tab);
	if (!rc && k)
		*k = m;
	return rc;
}

/* Records that the labels are classes 0..k-1, standing for themselves. */
int dml__dataset_set_class_info(dml_dataset *ds, size_t k)
{
	float *vals = NULL;
	if (k) {
		if (!(vals = alloc_array(k, sizeof *vals)))
			return DML_ENOMEM;
		for (size_t i = 0; i < k; i++)
			vals[i] = (float)i;
	}
	free(ds->class_values);
	ds->class_values = vals;
	ds->classes = k;
	return 0;
}

int dml_dataset_set_classes(dml_dataset *ds, size_t k)
{
	dml__detail_clear();
	if (!ds || k > MAX_CLASSES)
		return DML_EINVAL;
	for (size_t i = 0; k && i < ds->n; i++) {
		float v = ds->y[i];
		if (!(v >= 0 && v < (float)k) || (float)(size_t)v != v)
			return DML_EINVAL;
	}
	return dml__dataset_set_class_info(ds, k);
}

/* ---- scaling ---------------------------------------------------------- */


/* 1/spread as a float, or 1 when the spread is zero or too small to invert. */
static float inverse_or_one(double spread)
{
	if (!(spread > 0))
		return 1;
	float s = (float)(1.0 / spread);
	return isfinite(s) && s > 0 ? s : 1;
}

static int scaler_alloc(dml_scaler **out, size_t dim)
{
	dml_scaler *sc = calloc(1, sizeof *sc);
	if (!sc)
		return DML_ENOMEM;
	sc->dim = dim;
	sc->offset = alloc_array(dim, sizeof(float));
	sc->scale = alloc_array(dim, sizeof(float));
	if (!sc->offset || !sc->scale) {
		dml_scaler_free(sc);
		return DML_ENOMEM;
	}
	*out = sc;
	return 0;
}

/* Per-feature statistics of a dense data set in `acc` (dim doubles each):
 * STANDARD: mean, deviation; MINMAX: min, max; MAXABS: -, max |x|. */
static void fit_dense(const dml_dataset *ds, dml_scale_kind kind, double *a,
                      double *b)
{
	size_t n = ds->n, dim = ds->dim;
	for (size_t j = 0; j < dim; j++) {
		a[j] = n && kind == DML_SCALE_MINMAX ? ds->x[j] : 0;
		b[j] = n && kind == DML_SCALE_MINMAX ? ds->x[j] : 0;
	}
	for (size_t r = 0; r < n; r++) {
		const float *row = ds->x + r * dim;
		for (size_t j = 0; j < dim; j++) {
			double v = row[j];
			if (kind == DML_SCALE_STANDARD) {
				a[j] += v;
			} else if (kind == DML_SCALE_MINMAX) {
				a[j] = v < a[j] ? v : a[j];
				b[j] = v > b[j] ? v : b[j];
			} else {
				v = v < 0 ? -v : v;
				b[j] = v > b[j] ? v : b[j];
			}
		}
	}
	if (kind != DML_SCALE_STANDARD || !n)
		return;
	for (size_t j = 0; j < dim; j++)
		a[j] /= (double)n;
	for (size_t r = 0; r < n; r++) {
		const float *row = ds->x + r * dim;
		for (size_t j = 0; j < dim; j++) {
			double d = row[j] - a[j];
			b[j] += d * d;
		}
	}
	for (size_t j = 0; j < dim; j++)
		b[j] = sqrt(b[j] / (double)n);
}

int dml_scaler_new_fit(dml_scaler **out, const dml_dataset *ds,
                       dml_scale_kind kind)
{
	dml__detail_clear();
	if (!ds || !out || kind < DML_SCALE_STANDARD || kind > DML_SCALE_MAXABS ||
	    (ds->indptr && kind != DML_SCALE_MAXABS))
		return DML_EINVAL;
	size_t dim = ds->dim;
	/* two doubles of statistics and two floats per feature */
	if (ds->limit && dim > ds->limit / (2 * sizeof(double) + 2 * sizeof(float)))
		return dml__fail(DML_ETOOBIG, "a scaler of %zu features exceeds the "
		                 "max_bytes the data were loaded with (%llu bytes)",
		                 dim, (unsigned long long)ds->limit);
	double *a = alloc_array(dim, sizeof *a), *b = alloc_array(dim, sizeof *b);
	dml_scaler *sc = NULL;
	int rc = a && b ? scaler_alloc(&sc, dim) : DML_ENOMEM;
	if (rc) {
		free(a);
		free(b);
		return rc;
	}
	if (ds->indptr) {
		for (size_t j = 0; j < dim; j++)
			a[j] = b[j] = 0;
		for (uint64_t e = 0; e < ds->indptr[ds->n]; e++) {
			double v = ds->val[e] < 0 ? -(double)ds->val[e] : ds->val[e];
			if (v > b[ds->idx[e]])
				b[ds->idx[e]] = v;
		}
	} else {
		fit_dense(ds, kind, a, b);
	}
	for (size_t j = 0; j < dim; j++) {
		sc->offset[j] = kind == DML_SCALE_MAXABS ? 0 : (float)a[j];
		sc->scale[j] = inverse_or_one(kind == DML_SCALE_MINMAX ? b[j] - a[j]
		                                                       : b[j]);
	}
	free(a);
	free(b);
	*out = sc;
	return 0;
}

int dml_scaler_new(dml_scaler **out, size_t dim, const float *offset,
                   const float *scale)
{
	dml__detail_clear();
	if (!out || (dim && (!offset || !scale)) ||
	    (dim && (!all_finite(offset, dim) || !all_finite(scale, dim))))
		return DML_EINVAL;
	dml_scaler *sc;
	int rc = scaler_alloc(&sc, dim);
	if (rc)
		return rc;
	if (dim) {
		memcpy(sc->offset, offset, dim * sizeof *offset);
		memcpy(sc->scale, scale, dim * sizeof *scale);
	}
	*out = sc;
	return 0;
}

static float scale_one(const dml_scaler *sc, size_t j, float v)
{
	return (float)(((double)v - sc->offset[j]) * sc->scale[j]);
}

int dml_scaler_apply(const dml_scaler *sc, dml_dataset *ds)
{
	dml__detail_clear();
	if (!sc || !ds)
		return DML_EINVAL;
	if (sc->dim != ds->dim)
		return DML_EDIM;
	if (ds->indptr) {
		uint64_t nnz = ds->indptr[ds->n];
		for (size_t j = 0; j < sc->dim; j++)
			if (sc->offset[j] != 0)
				return DML_EINVAL;
		/* check first, so that a failure changes nothing */
		for (uint64_t e = 0; e < nnz; e++)
			if (!isfinite(scale_one(sc, ds->idx[e], ds->val[e])))
				return DML_EINVAL;
		for (uint64_t e = 0; e < nnz; e++)
			ds->val[e] = scale_one(sc, ds->idx[e], ds->val[e]);
		return 0;
	}
	size_t n = ds->n, dim = ds->dim;
	for (size_t r = 0; r < n; r++)
		for (size_t j = 0; j < dim; j++)
			if (!isfinite(scale_one(sc, j, ds->x[r * dim + j])))
				return DML_EINVAL;
	for (size_t r = 0; r < n; r++) {
		float *row = ds->x + r * dim;
		for (size_t j = 0; j < dim; j++)
			row[j] = scale_one(sc, j, row[j]);
	}
	return 0;
}

void dml_scaler_params(const dml_scaler *sc, size_t *dim, const float **offset,
                       const float **scale)
{
	if (dim)
		*dim = sc->dim;
	if (offset)
		*offset = sc->offset;
	if (scale)
		*scale = sc->scale;
}

void dml_scaler_free(dml_scaler *sc)
{
	if (!sc)
		return;
	free(sc->offset);
	free(sc->scale);
	free(sc);
}

/* ---- the loaders' entry points ---------------------------------------- */

int dml_dataset_new_idx_abi(dml_dataset **out, const char *images_path,
                            const char *labels_path, const dml_data_opts *opts,
                            int abi)
{
	dml__detail_clear();
	dml_data_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_DATA_OPTS, abi);
	if (rc)
		return rc;
	return dml__load_idx(out, images_path, labels_path, &o);
}

int dml_dataset_new_libsvm_abi(dml_dataset **out, const char *path,
                               const dml_data_opts *opts, int abi)
{
	dml__detail_clear();
	dml_data_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_DATA_OPTS, abi);
	if (rc)
		return rc;
	return dml__load_libsvm(out, path, &o);
}

/* ---- deprecated names (0.2; docs/api.md) ------------------------------ */

/* The old loaders' message buffer: the detail again, "" on success. */
static int old_err(int rc, char *err, size_t errcap)
{
	if (err && errcap)
		dml__set_msg(err, errcap, "%s", rc ? dml_error_detail() : "");
	return rc;
}

int dml_dataset_load_idx(dml_dataset **out, const char *images_path,
                         const char *labels_path, const dml_data_opts *opts,
                         char *err, size_t errcap)
{
	return old_err(dml_dataset_new_idx_abi(out, images_path, labels_path, opts, 1),
	               err, errcap);
}

int dml_dataset_load_libsvm(dml_dataset **out, const char *path,
                            const dml_data_opts *opts, char *err,
                            size_t errcap)
{
	return old_err(dml_dataset_new_libsvm_abi(out, path, opts, 1), err, errcap);
}

int dml_dataset_shard(const dml_dataset *ds, int i, int n, dml_dataset **out)
{
	return dml_dataset_new_shard(out, ds, i, n);
}

int dml_dataset_slice(const dml_dataset *ds, size_t start, size_t count,
                      dml_dataset **out)
{
	return dml_dataset_new_slice(out, ds, start, count);
}

int dml_scaler_fit(const dml_dataset *ds, dml_scale_kind kind, dml_scaler **out)
{
	return dml_scaler_new_fit(out, ds, kind);
}

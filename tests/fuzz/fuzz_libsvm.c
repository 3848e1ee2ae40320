/*
 * fuzz_libsvm.c - the LIBSVM reader (dml_dataset_new_libsvm,
 * lib/data_libsvm.c) on arbitrary files, plain or gzip, under its options.
 *
 * Input: [flags][opts][dim][classes][level][cut u16][body...]
 *   flags  bits 0-1: how the file is stored (0 plain, 1 gzip, 2 gzip cut at
 *          `cut`, 3 gzip with a bit flipped at `cut`); bit 2: zero_based;
 *          bit 3: dense; bit 4: remap_labels; bit 5: opts.classes =
 *          classes; bit 6: opts.dim = dim; bit 7: max_line = 24
 *   opts   bits 0-1: max_bytes (default, 1 KiB, 64 KiB, 16 MiB; dense: 64 MiB
 *          for the default); bits 2-3: the size of the error buffer (none,
 *          1, 24, 256); bits 4-7: r, the file is the body repeated 2^r
 *          times (at most 256 KiB: long lines, many rows)
 *
 * The result is compared with a small reference reader written from the
 * format's description in include/distml/data.h: what the library accepts
 * must be exactly what the reference reads, and what the reference rejects
 * the library must reject too (when the file's content is known: plain or
 * intact gzip). Limits of memory (DML_ETOOBIG) are the library's own.
 */
#include "fuzz_util.h"

#include <ctype.h>
#include <stdbool.h>

static fz_file file = FZ_FILE_INIT;

/* ---- the reference reader ---- */

typedef struct ref {
	size_t n, nnz, cap_rows, cap_ent;
	float *y;
	uint64_t *indptr; /* n + 1 */
	uint32_t *idx;
	float *val;
	uint64_t max_col;
} ref;

static void ref_free(ref *r)
{
	free(r->y);
	free(r->indptr);
	free(r->idx);
	free(r->val);
}

static int is_sp(char c) { return c == ' ' || c == '\t'; }

/* strtof over the whole token [s, e): finite, nothing left over, and
 * starting as a number does (strtof itself would skip \f, \v or \r). */
static int whole_float(const char *s, const char *e, float *out)
{
	if (s == e || !(isdigit((unsigned char)*s) || *s == '+' || *s == '-' || *s == '.' ||
	                isalpha((unsigned char)*s)))
		return 0;
	char *end;
	float v = strtof(s, &end);
	if (end != e || !isfinite(v))
		return 0;
	*out = v;
	return 1;
}

/* One line (NUL-terminated copy); 0 if malformed. */
static int ref_line(ref *r, char *s, size_t len, const dml_data_opts *o)
{
	if (memchr(s, '\0', len))
		return 0;
	char *h = memchr(s, '#', len);
	if (h)
		len = (size_t)(h - s);
	while (len && (is_sp(s[len - 1]) || s[len - 1] == '\r'))
		len--;
	s[len] = '\0';
	char *p = s, *e;
	while (is_sp(*p))
		p++;
	if (!*p)
		return 1;
	for (e = p; *e && !is_sp(*e); e++)
		;
	float label;
	if (!whole_float(p, e, &label))
		return 0;
	if (o->classes && !(label >= 0 && label < (float)o->classes &&
	                    label == (float)(uint64_t)label))
		return 0;
	int first = 1;
	int64_t prev = -1;
	for (p = e;;) {
		while (is_sp(*p))
			p++;
		if (!*p)
			break;
		for (e = p; *e && !is_sp(*e); e++)
			;
		if (first && e - p >= 4 && !memcmp(p, "qid:", 4)) {
			first = 0;
			char *q = p + 4;
			if (q == e)
				return 0;
			for (char *c = q; c < e; c++)
				if (*c < '0' || *c > '9')
					return 0;
			errno = 0;
			(void)strtoull(q, NULL, 10);
			if (errno)
				return 0;
			p = e;
			continue;
		}
		first = 0;
		char *c = p;
		uint64_t index = 0;
		int big = 0;
		if (c == e || *c < '0' || *c > '9')
			return 0;
		for (; c < e && *c >= '0' && *c <= '9'; c++) {
			if (index > (UINT64_MAX - 9) / 10)
				big = 1;
			index = index * 10 + (uint64_t)(*c - '0');
		}
		if (big || c == e || *c != ':')
			return 0;
		if (index == 0 && !o->zero_based)
			return 0;
		uint64_t col = index - (o->zero_based ? 0 : 1);
		if (col > UINT32_MAX || (o->dim && col >= o->dim) ||
		    (int64_t)col <= prev)
			return 0;
		float v;
		if (!whole_float(c + 1, e, &v))
			return 0;
		if (r->nnz == r->cap_ent) {
			r->cap_ent = r->cap_ent ? 2 * r->cap_ent : 64;
			r->idx = realloc(r->idx, r->cap_ent * sizeof *r->idx);
			r->val = realloc(r->val, r->cap_ent * sizeof *r->val);
			FZ_CHECK(r->idx && r->val);
		}
		r->idx[r->nnz] = (uint32_t)col;
		r->val[r->nnz++] = v;
		if (col + 1 > r->max_col)
			r->max_col = col + 1;
		prev = (int64_t)col;
		p = e;
	}
	if (r->n + 2 > r->cap_rows) {
		r->cap_rows = r->cap_rows ? 2 * r->cap_rows : 64;
		r->y = realloc(r->y, r->cap_rows * sizeof *r->y);
		r->indptr = realloc(r->indptr, r->cap_rows * sizeof *r->indptr);
		FZ_CHECK(r->y && r->indptr);
	}
	r->y[r->n++] = label;
	r->indptr[r->n] = r->nnz;
	return 1;
}

/* Reads the whole text: 1 if the library must accept it, 0 if it must
 * reject it. */
static int ref_read(ref *r, const uint8_t *p, size_t n, const dml_data_opts *o,
                    size_t max_line)
{
	memset(r, 0, sizeof *r);
	r->cap_rows = 64;
	r->y = malloc(r->cap_rows * sizeof *r->y);
	r->indptr = malloc(r->cap_rows * sizeof *r->indptr);
	FZ_CHECK(r->y && r->indptr);
	r->indptr[0] = 0;
	char *line = malloc(n + 1);
	FZ_CHECK(line);
	int ok = 1;
	for (size_t s = 0; ok && s < n;) {
		const uint8_t *nl = memchr(p + s, '\n', n - s);
		size_t len = nl ? (size_t)(nl - (p + s)) : n - s;
		if (len > max_line) {
			ok = 0;
			break;
		}
		memcpy(line, p + s, len);
		line[len] = '\0';
		ok = ref_line(r, line, len, o);
		s += len + 1;
	}
	free(line);
	return ok;
}

/* ---- comparing ---- */

static void check_same(dml_dataset *ds, const ref *r, const dml_data_opts *o)
{
	size_t dim = o->dim ? o->dim : (size_t)r->max_col;
	FZ_CHECK(dml_dataset_rows(ds) == r->n);
	FZ_CHECK(dml_dataset_dim(ds) == dim);
	FZ_CHECK(dml_dataset_is_sparse(ds) == !o->dense);
	dml_batch b;
	FZ_CHECK(dml_dataset_batch(ds, 0, r->n, &b) == 0);
	const float *cv = dml_dataset_class_values(ds);
	if (o->classes)
		FZ_CHECK(dml_dataset_classes(ds) == o->classes);
	for (size_t i = 0; i < r->n; i++) {
		float l = o->remap_labels ? cv[(size_t)b.y[i]] : b.y[i];
		FZ_CHECK(l == r->y[i]);
		if (o->remap_labels && b.y[i] > 0)
			FZ_CHECK(cv[(size_t)b.y[i] - 1] < l); /* ascending */
	}
	if (!o->dense) {
		FZ_CHECK(dml_dataset_nnz(ds) == r->nnz);
		for (size_t i = 0; i <= r->n; i++)
			FZ_CHECK(b.indptr[i] - b.indptr[0] == r->indptr[i]);
		for (size_t e = 0; e < r->nnz; e++)
			FZ_CHECK(b.idx[b.indptr[0] + e] == r->idx[e] &&
			         memcmp(&b.val[b.indptr[0] + e], &r->val[e], 4) == 0);
		return;
	}
	for (size_t i = 0; i < r->n; i++) {
		const float *row = b.x + i * dim;
		uint64_t e = r->indptr[i];
		for (size_t c = 0; c < dim; c++) {
			if (e < r->indptr[i + 1] && r->idx[e] == c)
				FZ_CHECK(memcmp(&row[c], &r->val[e++], 4) == 0);
			else
				FZ_CHECK(row[c] == 0);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t max_bytes[4] = {0, 1 << 10, 1 << 16, 1 << 24};
	fz in = {data, size};
	uint8_t flags = fz_u8(&in), opt = fz_u8(&in), dim = fz_u8(&in);
	uint8_t classes = fz_u8(&in);
	int level = fz_u8(&in) % 10, how = flags & 3;
	uint16_t cut = fz_u16(&in);
	size_t blen;
	const uint8_t *given = fz_take(&in, SIZE_MAX, &blen);
	size_t reps = (size_t)1 << (opt >> 4);
	if (blen && reps > ((size_t)256 << 10) / blen)
		reps = ((size_t)256 << 10) / blen;
	uint8_t *body = fz_cycle(given, blen, blen * (reps ? reps : 1));
	blen *= reps ? reps : 1;

	size_t zlen;
	uint8_t *z = fz_encode_file(how, body, blen, level, cut, &zlen);
	fz_file_set(&file, z, zlen);
	free(z);

	dml_data_opts o;
	memset(&o, 0, sizeof o);
	o.max_bytes = max_bytes[opt & 3];
	o.zero_based = flags >> 2 & 1;
	o.dense = flags >> 3 & 1;
	o.remap_labels = flags >> 4 & 1;
	o.classes = flags >> 5 & 1 ? classes : 0;
	o.dim = flags >> 6 & 1 ? dim : 0;
	o.max_line = flags >> 7 ? 24 : 0;
	/* stored dense, one line "1 100000000:1" takes 400 MB: the default
	 * limit (4 GiB) is for real data sets, not for a fuzzer's memory */
	if (o.dense && !o.max_bytes)
		o.max_bytes = 1 << 26;

	dml_dataset *ds = (dml_dataset *)(uintptr_t)0x1;
	int rc = dml_dataset_new_libsvm(&ds, file.path, &o);
	if (o.remap_labels && o.classes) {
		FZ_CHECK(rc == DML_EINVAL);
			free(body);
		return 0;
	}
	ref r;
	int ok = ref_read(&r, body, blen, &o, o.max_line ? o.max_line : 1 << 20);
	if (rc == 0) {
		fz_check_dataset(ds);
		/* a gzip stream cut short never loads (a file cut inside the
		 * 10-byte gzip header is read as plain text: unknown content) */
		FZ_CHECK(!(how == 2 && zlen >= 10));
		if (how != 2) {
			FZ_CHECK(ok == 1);
			check_same(ds, &r, &o);
		}
		dml_dataset_free(ds);
	} else {
		FZ_CHECK(rc == DML_EFORMAT || rc == DML_ETRUNC ||
		         rc == DML_ETOOBIG);
		FZ_CHECK(ds == (dml_dataset *)(uintptr_t)0x1);
		fz_check_detail(rc);
		if (how <= 1 && rc != DML_ETOOBIG)
			FZ_CHECK(ok != 1);
	}
	ref_free(&r);
	free(body);
	return 0;
}

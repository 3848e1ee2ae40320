/*
 * data_libsvm.c - the LIBSVM / SVMlight text reader, plain or gzip.
 *
 * Lines are cut from a buffer that the file is read into in chunks (a line
 * may be at most max_line bytes, so the buffer is bounded), then parsed in
 * place with strtof/strtoull. The CSR arrays grow geometrically as entries
 * arrive, and no array may exceed max_bytes.
 */
#include "dataset.h"
#include "file.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CHUNK ((size_t)1 << 16)
#define FIRST_CAP 1024 /* elements of an array's first allocation */

/* The reader's state: options, position and the growing CSR arrays. */
typedef struct parser {
	const char *path;
	size_t line;       /* current line, 1-based */
	uint64_t limit;    /* max_bytes */
	size_t dim;        /* given dim, or 0 */
	int zero_based;
	size_t classes;
	/* rows */
	size_t n, rows_cap;
	uint64_t *indptr;  /* n+1 used */
	float *y;
	/* entries */
	size_t nnz, ent_cap;
	uint32_t *idx;
	float *val;
	uint64_t max_col;  /* largest column seen + 1 */
} parser;

static int fail(parser *p, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(parser *p, int code, const char *fmt, ...)
{
	char what[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return dml__data_fail(code, p->path, p->line, 0, "%s", what);
}

static int is_space(char c) { return c == ' ' || c == '\t'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Whether a number may start with c: strtof would skip other white space
 * (\f, \v, \r) first, which the format does not allow. */
static int number_start(char c)
{
	return is_digit(c) || c == '+' || c == '-' || c == '.' ||
	       ((c | 32) >= 'a' && (c | 32) <= 'z'); /* inf, nan: refused below */
}

/* Length of the field at s (up to a space or the end), capped for
 * messages. */
static int field_len(const char *s)
{
	int k = 0;
	while (s[k] && !is_space(s[k]) && k < 40)
		k++;
	return k;
}

/* New capacity for `need` items of `size` bytes, doubling from `cap`,
 * within `limit` bytes. 0 if need itself is over the limit. */
static size_t next_cap(size_t cap, size_t need, size_t size, uint64_t limit)
{
	uint64_t most = limit / size;
	if (most > SIZE_MAX / size)
		most = SIZE_MAX / size;
	if (need > most)
		return 0;
	size_t nc = cap < FIRST_CAP ? FIRST_CAP : cap;
	while (nc < need)
		nc = nc > most / 2 ? (size_t)most : nc * 2;
	return nc > most ? (size_t)most : nc;
}

static int too_big(parser *p)
{
	return fail(p, DML_ETOOBIG, "the data exceed max_bytes (%llu bytes)",
	            (unsigned long long)p->limit);
}

/* Bytes of the row arrays (indptr, y) and of the entry arrays (idx, val)
 * per element: max_bytes bounds all four together. */
#define ROW_BYTES (sizeof(uint64_t) + sizeof(float))
#define ENT_BYTES (sizeof(uint32_t) + sizeof(float))

static int grow_entries(parser *p)
{
	uint64_t rows = (uint64_t)p->rows_cap * ROW_BYTES;
	if (rows > p->limit)
		return too_big(p);
	size_t nc = next_cap(p->ent_cap, p->nnz + 1, ENT_BYTES, p->limit - rows);
	if (!nc)
		return too_big(p);
	uint32_t *i = realloc(p->idx, nc * sizeof *i);
	if (!i)
		return DML_ENOMEM;
	p->idx = i;
	float *v = realloc(p->val, nc * sizeof *v);
	if (!v)
		return DML_ENOMEM;
	p->val = v;
	p->ent_cap = nc;
	return 0;
}

static int grow_rows(parser *p)
{
	/* indptr needs n+2 slots after this row: rows_cap counts indptr */
	uint64_t ents = (uint64_t)p->ent_cap * ENT_BYTES;
	if (ents > p->limit)
		return too_big(p);
	size_t nc = next_cap(p->rows_cap, p->n + 2, ROW_BYTES, p->limit - ents);
	if (!nc)
		return too_big(p);
	uint64_t *ip = realloc(p->indptr, nc * sizeof *ip);
	if (!ip)
		return DML_ENOMEM;
	p->indptr = ip;
	float *y = realloc(p->y, nc * sizeof *y);
	if (!y)
		return DML_ENOMEM;
	p->y = y;
	p->rows_cap = nc;
	return 0;
}

static int parse_label(parser *p, char **s, float *label)
{
	char *end;
	errno = 0;
	float v = number_start(**s) ? strtof(*s, &end) : (end = *s, 0.0f);
	if (end == *s || (*end && !is_space(*end)))
		return fail(p, DML_EFORMAT, "bad label '%.*s'", field_len(*s), *s);
	if (!isfinite(v))
		return fail(p, DML_EFORMAT, "label '%.*s' is not finite",
		            field_len(*s), *s);
	if (p->classes && (!(v >= 0 && v < (float)p->classes) ||
	                   (float)(size_t)v != v))
		return fail(p, DML_EFORMAT, "label '%.*s' is not a class in 0..%zu",
		            field_len(*s), *s, p->classes - 1);
	*label = v;
	*s = end;
	return 0;
}

/* "qid:N" right after the label: checked and ignored. */
static int skip_qid(parser *p, char **s)
{
	char *q = *s + 4, *end;
	errno = 0;
	if (is_digit(*q)) {
		(void)strtoull(q, &end, 10);
		if (errno == 0 && (!*end || is_space(*end))) {
			*s = end;
			return 0;
		}
	}
	return fail(p, DML_EFORMAT, "bad qid '%.*s'", field_len(*s), *s);
}

/* One "index:value" field at *s. `prev` is the last column of this row,
 * or -1. */
static int parse_entry(parser *p, char **s, int64_t prev)
{
	char *f = *s, *end;
	if (!is_digit(*f)) {
		if (!strncmp(f, "qid:", 4))
			return fail(p, DML_EFORMAT, "qid after the features");
		return fail(p, DML_EFORMAT, "bad index in '%.*s'", field_len(f), f);
	}
	errno = 0;
	unsigned long long index = strtoull(f, &end, 10);
	if (errno == ERANGE)
		return fail(p, DML_EFORMAT, "index '%.*s' too large", field_len(f),
		            f);
	if (*end != ':')
		return fail(p, DML_EFORMAT,
		            *end && !is_space(*end) ? "bad index in '%.*s'"
		                                    : "missing ':' after index '%.*s'",
		            field_len(f), f);
	if (index == 0 && !p->zero_based)
		return fail(p, DML_EFORMAT, "index 0 is not 1-based");
	uint64_t col = index - (p->zero_based ? 0 : 1);
	if (col > UINT32_MAX)
		return fail(p, DML_EFORMAT, "index %llu too large (limit %llu)",
		            index, (unsigned long long)UINT32_MAX + !p->zero_based);
	if (p->dim && col >= p->dim)
		return fail(p, DML_EFORMAT, "index %llu is beyond the dimension %zu",
		            index, p->dim);
	if ((int64_t)col <= prev)
		return fail(p, DML_EFORMAT, "index %llu is not above the previous "
		            "index %llu (indices must ascend)", index,
		            (unsigned long long)prev + !p->zero_based);
	char *v = end + 1;
	if (!*v || is_space(*v))
		return fail(p, DML_EFORMAT, "missing value after '%.*s'",
		            (int)(v - f), f);
	float x = number_start(*v) ? strtof(v, &end) : (end = v, 0.0f);
	if (end == v || (*end && !is_space(*end)))
		return fail(p, DML_EFORMAT, "bad value in '%.*s'", field_len(f), f);
	if (!isfinite(x))
		return fail(p, DML_EFORMAT, "value in '%.*s' is not finite",
		            field_len(f), f);
	if (p->nnz == p->ent_cap) {
		int rc = grow_entries(p);
		if (rc)
			return rc;
	}
	p->idx[p->nnz] = (uint32_t)col;
	p->val[p->nnz] = x;
	p->nnz++;
	if (col + 1 > p->max_col)
		p->max_col = col + 1;
	*s = end;
	return 0;
}

/* One line (NUL-terminated at `len`, newline removed). */
static int parse_line(parser *p, char *s, size_t len)
{
	if (memchr(s, '\0', len))
		return fail(p, DML_EFORMAT, "NUL byte in the line");
	char *hash = memchr(s, '#', len);
	if (hash) {
		*hash = '\0';
		len = (size_t)(hash - s);
	}
	while (len && (is_space(s[len - 1]) || s[len - 1] == '\r'))
		s[--len] = '\0';
	while (is_space(*s))
		s++;
	if (!*s)
		return 0;
	float label = 0;
	int rc = parse_label(p, &s, &label);
	if (rc)
		return rc;
	while (is_space(*s))
		s++;
	if (!strncmp(s, "qid:", 4) && (rc = skip_qid(p, &s)))
		return rc;
	if (p->n + 2 > p->rows_cap && (rc = grow_rows(p)))
		return rc;
	int64_t prev = -1;
	for (;;) {
		while (is_space(*s))
			s++;
		if (!*s)
			break;
		if ((rc = parse_entry(p, &s, prev)))
			return rc;
		prev = p->idx[p->nnz - 1];
	}
	p->y[p->n] = label;
	p->n++;
	p->indptr[p->n] = p->nnz;
	return 0;
}

/* Reads the whole file, line by line. */
static int read_lines(parser *p, gzFile gz, size_t max_line)
{
	size_t cap = (max_line < CHUNK ? max_line : CHUNK) + 1 + CHUNK;
	size_t most = max_line + 1 + CHUNK;
	char *buf = malloc(cap + 1);
	if (!buf)
		return DML_ENOMEM;
	size_t start = 0, end = 0, scan = 0;
	int eof = 0, rc = 0;
	while (!rc) {
		char *nl = memchr(buf + scan, '\n', end - scan);
		if (nl) {
			size_t len = (size_t)(nl - (buf + start));
			p->line++;
			if (len > max_line) {
				rc = fail(p, DML_ETOOBIG, "line longer than %zu bytes",
				          max_line);
				break;
			}
			*nl = '\0';
			rc = parse_line(p, buf + start, len);
			start = scan = (size_t)(nl - buf) + 1;
			continue;
		}
		scan = end;
		if (end - start > max_line) {
			p->line++;
			rc = fail(p, DML_ETOOBIG, "line longer than %zu bytes", max_line);
			break;
		}
		if (eof) {
			if (end > start) {
				p->line++;
				buf[end] = '\0';
				rc = parse_line(p, buf + start, end - start);
			}
			break;
		}
		memmove(buf, buf + start, end - start);
		end -= start;
		scan -= start;
		start = 0;
		if (cap - end < CHUNK && cap < most) {
			size_t nc = cap * 2 < most ? cap * 2 : most;
			char *nb = realloc(buf, nc + 1);
			if (!nb) {
				rc = DML_ENOMEM;
				break;
			}
			buf = nb;
			cap = nc;
		}
		size_t got;
		const char *why = "";
		if ((rc = dml__gz_read(gz, p->path, buf + end, cap - end, &got, &why))) {
			p->line++; /* the line being read */
			rc = fail(p, rc, "%s", why);
			break;
		}
		if (got < cap - end)
			eof = 1;
		end += got;
	}
	free(buf);
	return rc;
}

static void parser_free(parser *p)
{
	free(p->indptr);
	free(p->y);
	free(p->idx);
	free(p->val);
}

/* Hands the arrays over to a new data set (sparse), shrunk to fit. */
static int build(parser *p, dml_dataset **out)
{
	size_t dim = p->dim ? p->dim : (size_t)p->max_col;
	int rc;
	/* A model or a scaler holds at least a float per feature: an index
	 * alone must not declare more than max_bytes allows. */
	if (dim > p->limit / sizeof(float)) {
		p->line = 0;
		return fail(p, DML_ETOOBIG, "dimension %zu (from the largest "
		            "index): one float per feature would exceed max_bytes "
		            "(%llu bytes)", dim, (unsigned long long)p->limit);
	}
	if (!p->indptr && (rc = grow_rows(p)))
		return rc;
	p->indptr[0] = 0;
	uint32_t *i = realloc(p->idx, (p->nnz ? p->nnz : 1) * sizeof *i);
	if (i)
		p->idx = i;
	float *v = realloc(p->val, (p->nnz ? p->nnz : 1) * sizeof *v);
	if (v)
		p->val = v;
	if (!p->idx || !p->val)
		return DML_ENOMEM;
	rc = dml__dataset_adopt(out, p->n, dim, NULL, p->indptr, p->idx,
	                            p->val, p->y);
	if (!rc)
		dml__dataset_set_limit(*out, p->limit);
	p->indptr = NULL;
	p->idx = NULL;
	p->val = NULL;
	p->y = NULL;
	return rc;
}

static int finish(parser *p, dml_dataset *ds, const dml_data_opts *o)
{
	int rc = 0;
	if (o->dense) {
		size_t n = dml_dataset_rows(ds), dim = dml_dataset_dim(ds);
		uint64_t q = p->limit / 4; /* floats allowed, labels included */
		if (dim && (n > SIZE_MAX / sizeof(float) / dim || n > q ||
		            (uint64_t)n * dim > q - n)) {
			p->line = 0;
			return fail(p, DML_ETOOBIG,
			            "%zu rows x %zu features stored dense exceed "
			            "max_bytes (%llu bytes)", n, dim,
			            (unsigned long long)p->limit);
		}
		rc = dml_dataset_to_dense(ds);
	}
	if (!rc && o->classes)
		rc = dml__dataset_set_class_info(ds, o->classes);
	if (!rc && o->remap_labels)
		rc = dml_dataset_remap_labels(ds, NULL);
	return rc;
}

int dml__load_libsvm(dml_dataset **out, const char *path,
                     const dml_data_opts *o)
{
	size_t max_line = o->max_line ? o->max_line : DML_DATA_DEFAULT_MAX_LINE;
	if (!out || !path)
		return DML_EINVAL;
	if ((o->remap_labels && o->classes) || o->classes > DML_DATA_MAX_CLASSES)
		return dml__fail(DML_EINVAL, "classes %zu (at most %zu, not with "
		                 "remap_labels)", o->classes, DML_DATA_MAX_CLASSES);
	if (max_line > SIZE_MAX / 4 || (o->dim && o->dim - 1 > UINT32_MAX))
		return dml__fail(DML_EINVAL, "max_line %zu or dim %zu too large",
		                 max_line, o->dim);
	parser p = {0};
	p.path = path;
	p.limit = o->max_bytes ? o->max_bytes : DML_DATA_DEFAULT_MAX_BYTES;
	p.dim = o->dim;
	p.zero_based = o->zero_based;
	p.classes = o->classes;
	int fd;
	const char *why;
	if (dml__file_open_read(path, 0, &fd, &why))
		return fail(&p, DML_EIO, "cannot open: %s", why);
	gzFile gz = gzdopen(fd, "rb");
	if (!gz) {
		close(fd);
		return fail(&p, DML_ENOMEM, "cannot open: out of memory");
	}
	gzbuffer(gz, DML__GZ_BUFFER);
	int rc = read_lines(&p, gz, max_line);
	gzclose(gz);
	dml_dataset *ds = NULL;
	if (!rc)
		rc = build(&p, &ds);
	parser_free(&p);
	if (!rc && (rc = finish(&p, ds, o))) {
		dml_dataset_free(ds);
		ds = NULL;
	}
	if (!rc)
		*out = ds;
	return rc;
}

/*
 * codec.c - the binary codec: C structs described by dml_type <-> bytes.
 *
 * Each field is a one-byte tag (its dml_kind) and a little-endian value;
 * strings and byte blobs carry a u32 length, arrays a u64 element count, and
 * arrays are preceded by zero pad bytes so that their data is aligned to the
 * element size relative to the payload start. See docs/protocol.md.
 */
#include "codec.h"

#include <stdlib.h>

/* The common layout of dml_str, dml_bytes and the array types. */
typedef struct vec {
	void *data;
	size_t n;
	size_t cap;
} vec;

static vec vec_get(const void *msg, const dml_field *f)
{
	vec v;
	memcpy(&v, (const char *)msg + f->offset, sizeof v);
	return v;
}

static void vec_put(void *msg, const dml_field *f, const vec *v)
{
	memcpy((char *)msg + f->offset, v, sizeof *v);
}

/* Encoded size of a fixed-size kind's value (without tag); 0 if variable. */
static size_t scalar_size(dml_kind k)
{
	switch (k) {
	case DML_BOOL: return 1;
	case DML_I32: case DML_U32: case DML_F32: return 4;
	case DML_I64: case DML_U64: case DML_F64: return 8;
	default: return 0;
	}
}

/* Element size of an array kind; 0 if not an array. */
static size_t elem_size(dml_kind k)
{
	switch (k) {
	case DML_F32S: case DML_U32S: return 4;
	case DML_F64S: case DML_I64S: return 8;
	default: return 0;
	}
}

static size_t member_size(dml_kind k)
{
	if (k == DML_BOOL)
		return sizeof(bool);
	size_t s = scalar_size(k);
	return s ? s : sizeof(vec);
}

/* The check, without touching the caller's error detail when it passes. */
int dml__type_valid(const dml_type *t)
{
	if (!t)
		return dml__fail(DML_EINVAL, "type: NULL");
	if (t->nfields > DML_MAX_FIELDS || (t->nfields && !t->fields))
		return dml__fail(DML_EINVAL, "type %s: %zu fields (at most %d)",
		                 t->name ? t->name : "?", t->nfields, DML_MAX_FIELDS);
	for (size_t i = 0; i < t->nfields; i++) {
		const dml_field *f = &t->fields[i];
		if (f->kind < DML_I32 || f->kind > DML_U32S)
			return dml__fail(DML_EINVAL, "type %s: field %zu has kind %d",
			                 t->name ? t->name : "?", i, (int)f->kind);
		size_t ms = member_size(f->kind);
		if (f->offset > t->size || ms > t->size - f->offset)
			return dml__fail(DML_EINVAL, "type %s: field %zu lies outside "
			                 "the struct's %zu bytes",
			                 t->name ? t->name : "?", i, t->size);
	}
	return 0;
}

int dml_type_check(const dml_type *t)
{
	dml__detail_clear();
	return dml__type_valid(t);
}

/* Padding before an array tag so the data lands aligned. */
static size_t array_pad(size_t off, size_t esize)
{
	return (esize - (off + 9) % esize) % esize;
}

static void w_bytes(dml__writer *w, const void *src, size_t n)
{
	if (w->p && w->pos + n <= w->cap && n)
		memcpy(w->p + w->pos, src, n);
	w->pos += n;
	w->off += n;
}

static void w_zero(dml__writer *w, size_t n)
{
	if (w->p && w->pos + n <= w->cap)
		memset(w->p + w->pos, 0, n);
	w->pos += n;
	w->off += n;
}

/* Large data goes by reference when allowed and there is a slot. */
static void w_data(dml__writer *w, const void *src, size_t n)
{
	if (n >= w->ext_min && w->next < DML__MAX_EXT) {
		w->ext[w->next].at = w->pos;
		w->ext[w->next].ptr = src;
		w->ext[w->next].len = n;
		w->next++;
		w->off += n;
		return;
	}
	w_bytes(w, src, n);
}

static int enc_field(const dml_field *f, const void *msg, dml__writer *w)
{
	uint8_t tag = (uint8_t)f->kind;
	const char *m = (const char *)msg + f->offset;
	size_t ss = scalar_size(f->kind);
	if (ss) {
		w_bytes(w, &tag, 1);
		if (f->kind == DML_BOOL) {
			bool b;
			memcpy(&b, m, sizeof b);
			uint8_t v = b ? 1 : 0;
			w_bytes(w, &v, 1);
		} else {
			w_bytes(w, m, ss);
		}
		return 0;
	}
	vec v = vec_get(msg, f);
	if (v.n && !v.data)
		return DML_EINVAL;
	size_t es = elem_size(f->kind);
	if (!es) { /* string or bytes */
		if (v.n > UINT32_MAX)
			return DML_ETOOBIG;
		uint8_t len[4];
		dml__put_u32(len, (uint32_t)v.n);
		w_bytes(w, &tag, 1);
		w_bytes(w, len, 4);
		w_data(w, v.data, v.n);
		return 0;
	}
	if (v.n > SIZE_MAX / es)
		return DML_ETOOBIG;
	uint8_t cnt[8];
	dml__put_u64(cnt, (uint64_t)v.n);
	w_zero(w, array_pad(w->off, es));
	w_bytes(w, &tag, 1);
	w_bytes(w, cnt, 8);
	w_data(w, v.data, v.n * es);
	return 0;
}

int dml__encode_w(const dml_type *t, const void *msg, dml__writer *w)
{
	int rc;
	if (t->nfields && !msg)
		return DML_EINVAL;
	for (size_t i = 0; i < t->nfields; i++)
		if ((rc = enc_field(&t->fields[i], msg, w)))
			return rc;
	if (w->p && w->pos > w->cap)
		return DML_ETOOBIG;
	return 0;
}

int dml_type_encode(const dml_type *t, const void *msg, void *buf, size_t cap,
                    size_t *len)
{
	dml__detail_clear();
	if (!len || (!buf && cap) || dml__type_valid(t))
		return DML_EINVAL;
	dml__writer w = {0};
	w.p = buf;
	w.cap = cap;
	w.ext_min = SIZE_MAX;
	int rc = dml__encode_w(t, msg, &w);
	*len = w.pos;
	if (!rc && !buf && w.pos)
		rc = DML_ETOOBIG;
	return rc;
}

/* Reader over a received payload. */
typedef struct reader {
	const uint8_t *p;
	size_t len;
	size_t pos;
} reader;

static int r_tag(reader *r, dml_kind want)
{
	while (r->pos < r->len && r->p[r->pos] == DML__TAG_PAD)
		r->pos++;
	if (r->pos >= r->len)
		return DML_EPROTO;
	uint8_t tag = r->p[r->pos++];
	if (tag < DML_I32 || tag > DML_U32S)
		return DML_EPROTO;
	return tag == (uint8_t)want ? 0 : DML_ETYPE;
}

static int dec_field(const dml_field *f, void *msg, reader *r, int hole)
{
	int rc = r_tag(r, f->kind);
	if (rc)
		return rc;
	char *m = (char *)msg + f->offset;
	size_t ss = scalar_size(f->kind);
	if (ss) {
		if (r->len - r->pos < ss)
			return DML_EPROTO;
		if (f->kind == DML_BOOL) {
			uint8_t v = r->p[r->pos];
			if (v > 1)
				return DML_EPROTO;
			bool b = v;
			memcpy(m, &b, sizeof b);
		} else {
			memcpy(m, r->p + r->pos, ss);
		}
		r->pos += ss;
		return 0;
	}
	size_t es = elem_size(f->kind), nbytes, n;
	if (!es) {
		if (r->len - r->pos < 4)
			return DML_EPROTO;
		n = dml__get_u32(r->p + r->pos);
		r->pos += 4;
		nbytes = n;
	} else {
		if (r->len - r->pos < 8)
			return DML_EPROTO;
		uint64_t n64 = dml__get_u64(r->p + r->pos);
		r->pos += 8;
		if (hole) { /* data already placed by the receiver, n set by it */
			vec v = vec_get(msg, f);
			if (n64 != v.n)
				return DML_EPROTO;
			v.n = (size_t)n64;
			vec_put(msg, f, &v);
			return 0;
		}
		if (n64 > (r->len - r->pos) / es)
			return DML_EPROTO;
		n = (size_t)n64;
		nbytes = n * es;
	}
	if (r->len - r->pos < nbytes)
		return DML_EPROTO;
	const uint8_t *src = r->p + r->pos;
	vec v = vec_get(msg, f);
	if (v.data) {
		if (n > v.cap)
			return DML_ETOOBIG;
		if (nbytes)
			memcpy(v.data, src, nbytes);
	} else {
		if (es && ((uintptr_t)src % es) != 0)
			return DML_EPROTO; /* unpadded array: see protocol.md */
		v.data = (void *)(uintptr_t)src;
		v.cap = n;
	}
	v.n = n;
	vec_put(msg, f, &v);
	r->pos += nbytes;
	return 0;
}

int dml__decode_h(const dml_type *t, void *msg, const uint8_t *buf,
                  size_t len, int hole)
{
	int rc;
	if ((t->nfields && !msg) || (len && !buf))
		return DML_EINVAL;
	reader r = {buf, len, 0};
	for (size_t i = 0; i < t->nfields; i++)
		if ((rc = dec_field(&t->fields[i], msg, &r, (int)i == hole)))
			return rc;
	while (r.pos < r.len && r.p[r.pos] == DML__TAG_PAD)
		r.pos++;
	return r.pos == r.len ? 0 : DML_EPROTO;
}

int dml_type_decode(const dml_type *t, const void *buf, size_t len, void *msg)
{
	dml__detail_clear();
	if (dml__type_valid(t))
		return DML_EINVAL;
	return dml__decode_h(t, msg, buf, len, -1);
}

int dml_encode(const dml_type *t, const void *msg, void *buf, size_t cap,
               size_t *len)
{
	return dml_type_encode(t, msg, buf, cap, len);
}

int dml_decode(const dml_type *t, void *msg, const void *buf, size_t len)
{
	return dml_type_decode(t, buf, len, msg);
}

int dml__bulk_plan(const dml_type *t, const void *msg, int *field,
                   size_t *count_off, size_t *esize)
{
	size_t off = 0;
	for (size_t i = 0; i < t->nfields; i++) {
		const dml_field *f = &t->fields[i];
		size_t ss = scalar_size(f->kind), es = elem_size(f->kind);
		if (ss) {
			off += 1 + ss;
			continue;
		}
		if (!es || !vec_get(msg, f).data)
			return DML_ENOTFOUND;
		off += array_pad(off, es) + 1;
		*field = (int)i;
		*count_off = off;
		*esize = es;
		return 0;
	}
	return DML_ENOTFOUND;
}

void dml__array_dest(const dml_type *t, void *msg, int f, void **data,
                     size_t *cap)
{
	vec v = vec_get(msg, &t->fields[f]);
	*data = v.data;
	*cap = v.cap;
}

void dml__array_set_n(const dml_type *t, void *msg, int f, size_t n)
{
	vec v = vec_get(msg, &t->fields[f]);
	v.n = n;
	vec_put(msg, &t->fields[f], &v);
}

const dml_type *dml__type_or_empty(const dml_type *t)
{
	static const dml_type empty = {"empty", NULL, 0, 0};
	return t ? t : &empty;
}

int dml__type_has_arrays(const dml_type *t)
{
	for (size_t i = 0; t && i < t->nfields; i++)
		if (elem_size(t->fields[i].kind))
			return 1;
	return 0;
}

int dml__type_all_buffered(const dml_type *t, const void *msg)
{
	for (size_t i = 0; t && i < t->nfields; i++)
		if (!scalar_size(t->fields[i].kind) &&
		    !vec_get(msg, &t->fields[i]).data)
			return 0;
	return 1;
}

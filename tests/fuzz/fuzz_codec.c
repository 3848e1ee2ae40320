/*
 * fuzz_codec.c - the binary codec's decoder (dml_type_decode, lib/codec.c) on
 * arbitrary payloads, for several message types: every kind, scalars only,
 * strings, arrays, the protocol's worked example, an empty type and the
 * parameter store's wire messages.
 *
 * Input: [type][flags][mask][6 caps][payload...]
 *   type   which message type (modulo the number of types)
 *   flags  bit 0: also decode the way the client receives a large reply
 *          (dml__bulk_plan, the array straight into the caller's buffer,
 *          dml__decode_h with a hole); bits 1-3: the payload's offset from
 *          an 8-byte boundary (decoding must fail cleanly, never fault)
 *   mask   bit j: the j-th variable-length field gets a caller buffer of
 *          caps[j % 6] elements (else it is decoded as a view)
 *
 * What decodes is checked (views inside the payload and aligned, caller
 * buffers kept and within their capacity, bools 0 or 1), re-encoded, decoded
 * again and compared field by field, and the second encoding must equal the
 * first byte for byte. Buffers are allocated to their exact size so that
 * AddressSanitizer sees any access past them.
 */
#include "fuzz_util.h"

#include <stdbool.h>

#include "codec.h"
#include "ps_wire.h"

typedef struct vec {
	void *data;
	size_t n;
	size_t cap;
} vec;

#include "../codec_all.h"

/* docs/protocol.md section 8.4 */
typedef struct mixed {
	int32_t step;
	bool flag;
	dml_str tag;
	dml_f64s w;
	dml_f32s g;
} mixed;
static const dml_field mixed_f[] = {
	DML_FIELD(mixed, step, DML_I32), DML_FIELD(mixed, flag, DML_BOOL),
	DML_FIELD(mixed, tag, DML_STR), DML_FIELD(mixed, w, DML_F64S),
	DML_FIELD(mixed, g, DML_F32S),
};
static const dml_type mixed_t = DML_TYPE(mixed, mixed_f);

typedef struct scal {
	uint64_t a;
	bool b;
	int32_t c;
	float d;
	uint32_t e;
	double f;
	int64_t g;
	bool h;
} scal;
static const dml_field scal_f[] = {
	DML_FIELD(scal, a, DML_U64), DML_FIELD(scal, b, DML_BOOL),
	DML_FIELD(scal, c, DML_I32), DML_FIELD(scal, d, DML_F32),
	DML_FIELD(scal, e, DML_U32), DML_FIELD(scal, f, DML_F64),
	DML_FIELD(scal, g, DML_I64), DML_FIELD(scal, h, DML_BOOL),
};
static const dml_type scal_t = DML_TYPE(scal, scal_f);

typedef struct strs {
	dml_str a;
	dml_bytes b;
	dml_str c;
} strs;
static const dml_field strs_f[] = {
	DML_FIELD(strs, a, DML_STR), DML_FIELD(strs, b, DML_BYTES),
	DML_FIELD(strs, c, DML_STR),
};
static const dml_type strs_t = DML_TYPE(strs, strs_f);

typedef struct arrs {
	dml_f32s a;
	dml_u32s b;
	dml_f64s c;
	dml_i64s d;
	dml_f32s e;
} arrs;
static const dml_field arrs_f[] = {
	DML_FIELD(arrs, a, DML_F32S), DML_FIELD(arrs, b, DML_U32S),
	DML_FIELD(arrs, c, DML_F64S), DML_FIELD(arrs, d, DML_I64S),
	DML_FIELD(arrs, e, DML_F32S),
};
static const dml_type arrs_t = DML_TYPE(arrs, arrs_f);

/* A scalar, then an array: the shape the client receives in bulk. */
typedef struct bulk {
	int32_t a;
	dml_f64s v;
	dml_str s;
	dml_u32s u;
} bulk;
static const dml_field bulk_f[] = {
	DML_FIELD(bulk, a, DML_I32), DML_FIELD(bulk, v, DML_F64S),
	DML_FIELD(bulk, s, DML_STR), DML_FIELD(bulk, u, DML_U32S),
};
static const dml_type bulk_t = DML_TYPE(bulk, bulk_f);

static const dml_type empty_t = {"empty", NULL, 0, 1};

static const dml_type *const types[] = {
	&all_type,      &mixed_t,    &scal_t,    &strs_t,       &arrs_t,
	&bulk_t,     &empty_t,    &psw_info_t, &psw_range_t, &psw_vec_t,
	&psw_push_t, &psw_spush_t, &psw_worker_t, &psw_clock_t,
};
#define NTYPES (sizeof types / sizeof types[0])

static size_t scalar_size(dml_kind k)
{
	switch (k) {
	case DML_BOOL: return sizeof(bool);
	case DML_I32: case DML_U32: case DML_F32: return 4;
	case DML_I64: case DML_U64: case DML_F64: return 8;
	default: return 0;
	}
}

static size_t elem_size(dml_kind k)
{
	switch (k) {
	case DML_STR: case DML_BYTES: return 1;
	case DML_F32S: case DML_U32S: return 4;
	case DML_F64S: case DML_I64S: return 8;
	default: return 0;
	}
}

static int is_array(dml_kind k)
{
	return k >= DML_F32S && k <= DML_U32S;
}

/* A message of type t, with caller buffers as the mask says. */
typedef struct msg {
	const dml_type *t;
	uint8_t *m;
	void *bufs[DML_MAX_FIELDS]; /* caller buffers, by field */
	size_t caps[DML_MAX_FIELDS];
} msg;

static vec get(const msg *x, size_t i)
{
	vec v;
	memcpy(&v, x->m + x->t->fields[i].offset, sizeof v);
	return v;
}

static void msg_init(msg *x, const dml_type *t, unsigned mask,
                     const uint8_t *caps)
{
	memset(x, 0, sizeof *x);
	x->t = t;
	x->m = malloc(t->size);
	FZ_CHECK(x->m);
	memset(x->m, 0x5a, t->size); /* garbage: decode must set what it reports */
	int j = 0;
	for (size_t i = 0; i < t->nfields; i++) {
		const dml_field *f = &t->fields[i];
		if (scalar_size(f->kind))
			continue;
		vec v = {NULL, 0, 0};
		if (mask >> j & 1) {
			size_t cap = caps[j % 6], es = elem_size(f->kind);
			x->bufs[i] = malloc(cap ? cap * es : 1);
			FZ_CHECK(x->bufs[i]);
			x->caps[i] = cap;
			v.data = x->bufs[i];
			v.cap = cap;
			v.n = 7777; /* set by decode */
		}
		memcpy(x->m + f->offset, &v, sizeof v);
		j++;
	}
}

static void msg_free(msg *x)
{
	for (size_t i = 0; i < x->t->nfields; i++)
		free(x->bufs[i]);
	free(x->m);
}

/* A decoded message is what dml_type_decode promises. */
static void check_decoded(const msg *x, const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < x->t->nfields; i++) {
		const dml_field *f = &x->t->fields[i];
		if (f->kind == DML_BOOL) {
			uint8_t b;
			memcpy(&b, x->m + f->offset, 1);
			FZ_CHECK(b <= 1);
		}
		if (scalar_size(f->kind))
			continue;
		vec v = get(x, i);
		size_t es = elem_size(f->kind);
		if (x->bufs[i]) {
			FZ_CHECK(v.data == x->bufs[i] && v.cap == x->caps[i]);
			FZ_CHECK(v.n <= v.cap);
		} else {
			const uint8_t *d = v.data;
			FZ_CHECK(d && d >= buf && d <= buf + len);
			FZ_CHECK(v.n <= (size_t)(buf + len - d) / es);
			FZ_CHECK(v.cap == v.n);
			if (is_array(f->kind))
				FZ_CHECK((uintptr_t)d % es == 0);
		}
	}
}

static int same(const msg *a, const msg *b)
{
	for (size_t i = 0; i < a->t->nfields; i++) {
		const dml_field *f = &a->t->fields[i];
		size_t ss = scalar_size(f->kind);
		if (ss) {
			if (memcmp(a->m + f->offset, b->m + f->offset, ss))
				return 0;
			continue;
		}
		vec u = get(a, i), v = get(b, i);
		if (u.n != v.n ||
		    (u.n && memcmp(u.data, v.data, u.n * elem_size(f->kind))))
			return 0;
	}
	return 1;
}

/* Encodes x into a new buffer of exactly the needed size (8-aligned, as
 * dml_type_encode asks), checking the size query and a buffer one byte short. */
static uint8_t *encode(const msg *x, size_t *len)
{
	size_t need = 12345;
	int rc = dml_type_encode(x->t, x->m, NULL, 0, &need);
	FZ_CHECK(need ? rc == DML_ETOOBIG : rc == 0);
	uint8_t *out = malloc(need ? need : 1);
	FZ_CHECK(out);
	if (need) {
		size_t got = 0;
		FZ_CHECK(dml_type_encode(x->t, x->m, out, need - 1, &got) == DML_ETOOBIG);
		FZ_CHECK(got == need);
	}
	FZ_CHECK(dml_type_encode(x->t, x->m, out, need, len) == 0);
	FZ_CHECK(*len == need);
	return out;
}

/* The client's receive path for a large reply (lib/rpc_client.c,
 * big_start/big_advance/big_finish), on a payload held in memory: the
 * prefix up to the planned array's count, the array straight into the
 * caller's buffer, the rest after the prefix moved to keep its alignment.
 * Returns 1 and the decode result in *rc if the bulk path applied; *pl
 * (free it) then holds the payload that later views point into. */
static int decode_bulk(msg *x, const uint8_t *p, size_t len, int *rc,
                       uint8_t **plp)
{
	int field;
	size_t count_off, es;
	if (dml__bulk_plan(x->t, x->m, &field, &count_off, &es) ||
	    count_off + 8 > len)
		return 0;
	size_t pre = count_off + 8, left = len - pre;
	uint64_t n;
	memcpy(&n, p + count_off, 8);
	void *data;
	size_t cap;
	dml__array_dest(x->t, x->m, field, &data, &cap);
	if (p[count_off - 1] != (uint8_t)x->t->fields[field].kind || n > cap ||
	    n > left / es)
		return 0; /* the client decodes the whole payload instead */
	size_t nb = (size_t)n * es, rest = left - nb, shift = nb % 8;
	uint8_t *pl = malloc(shift + pre + rest + 1);
	FZ_CHECK(pl);
	memcpy(pl + shift, p, pre);
	if (nb)
		memcpy(data, p + pre, nb);
	memcpy(pl + shift + pre, p + pre + nb, rest);
	dml__array_set_n(x->t, x->m, field, (size_t)n);
	*rc = dml__decode_h(x->t, x->m, pl + shift, len - nb, field);
	*plp = pl;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz in = {data, size};
	const dml_type *t = types[fz_u8(&in) % NTYPES];
	uint8_t flags = fz_u8(&in), mask = fz_u8(&in), caps[6];
	for (int j = 0; j < 6; j++)
		caps[j] = fz_u8(&in);
	size_t misalign = (flags >> 1) & 7, len;
	const uint8_t *payload = fz_take(&in, SIZE_MAX, &len);
	FZ_CHECK(dml_type_check(t) == 0);

	/* the payload at an exact-size allocation, misaligned on request */
	uint8_t *mem = malloc(misalign + len + 1);
	FZ_CHECK(mem);
	uint8_t *buf = mem + misalign;
	if (len)
		memcpy(buf, payload, len);

	msg a;
	msg_init(&a, t, mask, caps);
	int rc = dml_type_decode(t, buf, len, a.m);
	FZ_CHECK(rc == 0 || rc == DML_EPROTO || rc == DML_ETYPE ||
	         rc == DML_ETOOBIG);
	int canonical = 0;
	if (rc == 0) {
		check_decoded(&a, buf, len);
		size_t len1, len2;
		uint8_t *enc1 = encode(&a, &len1);
		msg b;
		msg_init(&b, t, 0, caps);
		FZ_CHECK(dml_type_decode(t, enc1, len1, b.m) == 0);
		check_decoded(&b, enc1, len1);
		FZ_CHECK(same(&a, &b));
		uint8_t *enc2 = encode(&b, &len2);
		FZ_CHECK(len2 == len1 && memcmp(enc1, enc2, len1) == 0);
		/* views need aligned arrays, so only extra pad bytes can make the
		 * input longer than the canonical form */
		int views_only = 1;
		for (size_t i = 0; i < t->nfields; i++)
			if (is_array(t->fields[i].kind) && a.bufs[i])
				views_only = 0;
		if (views_only && misalign == 0)
			FZ_CHECK(len1 <= len);
		canonical = len1 == len && memcmp(enc1, buf, len) == 0;
		free(enc2);
		msg_free(&b);
		free(enc1);
	}

	if (flags & 1) {
		/* the same payload received in bulk gives the same message, when
		 * the payload is canonical (docs/protocol.md 8.3: the client
		 * assumes the canonical layout before the array) */
		msg c;
		msg_init(&c, t, mask, caps);
		int brc;
		uint8_t *pl = NULL;
		if (decode_bulk(&c, buf, len, &brc, &pl)) {
			FZ_CHECK(brc == 0 || brc == DML_EPROTO || brc == DML_ETYPE ||
			         brc == DML_ETOOBIG);
			if (canonical) {
				FZ_CHECK(brc == 0);
				FZ_CHECK(same(&a, &c));
			}
		}
		free(pl);
		msg_free(&c);
	}
	msg_free(&a);
	free(mem);
	return 0;
}

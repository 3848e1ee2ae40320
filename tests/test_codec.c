/* test_codec.c - the binary codec: round trips, caller buffers, hostile
 * input (every truncation, type mismatches, trailing bytes). */
#include "testutil.h"

#include <stdbool.h>

#include "codec_all.h"

static float fv[5] = {1.5f, -2.25f, 3.0f, 0.0f, 1e30f};
static double dv[3] = {1.0 / 3, -7.5, 1e-300};
static int64_t iv[2] = {INT64_MIN, INT64_MAX};
static uint32_t uv[3] = {0, 7, UINT32_MAX};

static all sample(void)
{
	all a = {-5, INT64_MIN + 1, 4000000000u, UINT64_MAX, 3.25f, -0.125, true,
	         {"hello", 5, 0}, {"\0\1\2", 3, 0}, {fv, 5, 0}, {dv, 3, 0}, {iv, 2, 0}, {uv, 3, 0}};
	return a;
}

/* 8-aligned scratch for encodings. */
static _Alignas(16) uint8_t buf[4096];

static void test_roundtrip_views(void **state)
{
	(void)state;
	all a = sample(), b;
	size_t len;
	assert_int_equal(dml_type_encode(&all_type, &a, buf, sizeof buf, &len), 0);
	memset(&b, 0, sizeof b);
	assert_int_equal(dml_type_decode(&all_type, buf, len, &b), 0);
	assert_int_equal(b.i32, -5);
	assert_true(b.i64 == INT64_MIN + 1);
	assert_true(b.u32 == 4000000000u);
	assert_true(b.u64 == UINT64_MAX);
	assert_true(b.f32 == 3.25f && b.f64 == -0.125 && b.b);
	assert_int_equal(b.s.n, 5);
	assert_memory_equal(b.s.data, "hello", 5);
	assert_int_equal(b.blob.n, 3);
	assert_memory_equal(b.blob.data, "\0\1\2", 3);
	assert_int_equal(b.fs.n, 5);
	assert_memory_equal(b.fs.data, fv, sizeof fv);
	assert_int_equal(b.ds.n, 3);
	assert_memory_equal(b.ds.data, dv, sizeof dv);
	assert_int_equal(b.is.n, 2);
	assert_memory_equal(b.is.data, iv, sizeof iv);
	assert_int_equal(b.us.n, 3);
	assert_memory_equal(b.us.data, uv, sizeof uv);
	assert_int_equal((uintptr_t)b.us.data % 4, 0);
	/* views point into the buffer, aligned for their element type */
	assert_true((const uint8_t *)b.fs.data > buf && (const uint8_t *)b.fs.data < buf + len);
	assert_int_equal((uintptr_t)b.fs.data % 4, 0);
	assert_int_equal((uintptr_t)b.ds.data % 8, 0);
	assert_int_equal((uintptr_t)b.is.data % 8, 0);
}

static void test_caller_buffers(void **state)
{
	(void)state;
	all a = sample(), b;
	size_t len;
	assert_int_equal(dml_type_encode(&all_type, &a, buf, sizeof buf, &len), 0);
	char s[16];
	uint8_t blob[8];
	float f[8];
	double d[8];
	int64_t i[8];
	memset(&b, 0, sizeof b);
	b.s = (dml_str){s, 0, sizeof s};
	b.blob = (dml_bytes){blob, 0, sizeof blob};
	b.fs = (dml_f32s){f, 0, 8};
	b.ds = (dml_f64s){d, 0, 8};
	b.is = (dml_i64s){i, 0, 8};
	assert_int_equal(dml_type_decode(&all_type, buf, len, &b), 0);
	assert_ptr_equal(b.fs.data, f);
	assert_int_equal(b.fs.n, 5);
	assert_memory_equal(f, fv, sizeof fv);
	assert_memory_equal(s, "hello", 5);
	assert_memory_equal(d, dv, sizeof dv);
	/* too small a buffer is an error, not an overflow */
	b.fs = (dml_f32s){f, 0, 4};
	assert_int_equal(dml_type_decode(&all_type, buf, len, &b), DML_ETOOBIG);
}

static void test_size_query(void **state)
{
	(void)state;
	all a = sample();
	size_t len = 0, len2 = 0;
	assert_int_equal(dml_type_encode(&all_type, &a, NULL, 0, &len), DML_ETOOBIG);
	assert_true(len > 0);
	assert_int_equal(dml_type_encode(&all_type, &a, buf, len - 1, &len2), DML_ETOOBIG);
	assert_int_equal(dml_type_encode(&all_type, &a, buf, len, &len2), 0);
	assert_int_equal(len, len2);
}

static void test_every_truncation_fails(void **state)
{
	(void)state;
	all a = sample(), b;
	size_t len;
	assert_int_equal(dml_type_encode(&all_type, &a, buf, sizeof buf, &len), 0);
	for (size_t cut = 0; cut < len; cut++) {
		memset(&b, 0, sizeof b);
		int rc = dml_type_decode(&all_type, buf, cut, &b);
		/* a cut that only drops trailing padding cannot happen: arrays end it */
		assert_true(rc == DML_EPROTO || rc == DML_ETYPE);
	}
}

static void test_trailing_and_types(void **state)
{
	(void)state;
	all a = sample(), b;
	size_t len;
	assert_int_equal(dml_type_encode(&all_type, &a, buf, sizeof buf, &len), 0);
	buf[len] = DML_I32;
	memset(&b, 0, sizeof b);
	assert_int_equal(dml_type_decode(&all_type, buf, len + 1, &b), DML_EPROTO);
	buf[len] = 0; /* a pad byte is fine */
	assert_int_equal(dml_type_decode(&all_type, buf, len + 1, &b), 0);

	typedef struct { int64_t x; } one;
	static const dml_field one_f[] = {DML_FIELD(one, x, DML_I64)};
	static const dml_type one_t = DML_TYPE(one, one_f);
	typedef struct { double x; } oned;
	static const dml_field oned_f[] = {DML_FIELD(oned, x, DML_F64)};
	static const dml_type oned_t = DML_TYPE(oned, oned_f);
	one o = {42};
	oned d;
	assert_int_equal(dml_type_encode(&one_t, &o, buf, sizeof buf, &len), 0);
	assert_int_equal(len, 9);
	assert_int_equal(dml_type_decode(&oned_t, buf, len, &d), DML_ETYPE);
	buf[0] = 200; /* unknown tag */
	assert_int_equal(dml_type_decode(&one_t, buf, len, &o), DML_EPROTO);
}

static void test_hostile_lengths(void **state)
{
	(void)state;
	typedef struct { dml_f32s v; } arr;
	static const dml_field arr_f[] = {DML_FIELD(arr, v, DML_F32S)};
	static const dml_type arr_t = DML_TYPE(arr, arr_f);
	/* pad(3), tag, count = 2^62, no data: must fail without reading past */
	uint8_t *p = buf;
	memset(p, 0, 3);
	p[3] = DML_F32S;
	uint64_t huge = (uint64_t)1 << 62;
	memcpy(p + 4, &huge, 8);
	arr r;
	memset(&r, 0, sizeof r);
	assert_int_equal(dml_type_decode(&arr_t, buf, 12, &r), DML_EPROTO);
	huge = UINT64_MAX;
	memcpy(p + 4, &huge, 8);
	assert_int_equal(dml_type_decode(&arr_t, buf, 12, &r), DML_EPROTO);
	/* a string longer than what is left */
	typedef struct { dml_str s; } st;
	static const dml_field st_f[] = {DML_FIELD(st, s, DML_STR)};
	static const dml_type st_t = DML_TYPE(st, st_f);
	buf[0] = DML_STR;
	uint32_t n = 0xffffffffu;
	memcpy(buf + 1, &n, 4);
	st s;
	memset(&s, 0, sizeof s);
	assert_int_equal(dml_type_decode(&st_t, buf, 5, &s), DML_EPROTO);
	/* a bool other than 0/1 */
	typedef struct { bool b; } bo;
	static const dml_field bo_f[] = {DML_FIELD(bo, b, DML_BOOL)};
	static const dml_type bo_t = DML_TYPE(bo, bo_f);
	buf[0] = DML_BOOL;
	buf[1] = 7;
	bo bb;
	assert_int_equal(dml_type_decode(&bo_t, buf, 2, &bb), DML_EPROTO);
}

static void test_bad_types_rejected(void **state)
{
	(void)state;
	typedef struct { int64_t x; } one;
	static const dml_field bad_kind[] = {{"x", (dml_kind)99, 0}};
	static const dml_type t1 = {"one", bad_kind, 1, sizeof(one)};
	static const dml_field bad_off[] = {{"x", DML_I64, 4}};
	static const dml_type t2 = {"one", bad_off, 1, sizeof(one)};
	assert_int_equal(dml_type_check(&t1), DML_EINVAL);
	assert_int_equal(dml_type_check(&t2), DML_EINVAL);
	one o = {1};
	size_t len;
	assert_int_equal(dml_type_encode(&t1, &o, buf, sizeof buf, &len), DML_EINVAL);
	/* n > 0 with no data */
	typedef struct { dml_f32s v; } arr;
	static const dml_field arr_f[] = {DML_FIELD(arr, v, DML_F32S)};
	static const dml_type arr_t = DML_TYPE(arr, arr_f);
	arr a = {{NULL, 3, 0}};
	assert_int_equal(dml_type_encode(&arr_t, &a, buf, sizeof buf, &len), DML_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_views),
		cmocka_unit_test(test_caller_buffers),
		cmocka_unit_test(test_size_query),
		cmocka_unit_test(test_every_truncation_fails),
		cmocka_unit_test(test_trailing_and_types),
		cmocka_unit_test(test_hostile_lengths),
		cmocka_unit_test(test_bad_types_rejected),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

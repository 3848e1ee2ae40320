/*
 * codec_all.h - a struct with a field of every codec kind, shared by the
 * codec's unit tests (test_codec.c) and its fuzz harness (fuzz/fuzz_codec.c).
 */
#ifndef DML_TEST_CODEC_ALL_H
#define DML_TEST_CODEC_ALL_H

#include <stdbool.h>

#include <distml.h>

typedef struct all {
	int32_t i32;
	int64_t i64;
	uint32_t u32;
	uint64_t u64;
	float f32;
	double f64;
	bool b;
	dml_str s;
	dml_bytes blob;
	dml_f32s fs;
	dml_f64s ds;
	dml_i64s is;
	dml_u32s us;
} all;

static const dml_field all_fields[] = {
	DML_FIELD(all, i32, DML_I32),    DML_FIELD(all, i64, DML_I64),
	DML_FIELD(all, u32, DML_U32),    DML_FIELD(all, u64, DML_U64),
	DML_FIELD(all, f32, DML_F32),    DML_FIELD(all, f64, DML_F64),
	DML_FIELD(all, b, DML_BOOL),     DML_FIELD(all, s, DML_STR),
	DML_FIELD(all, blob, DML_BYTES), DML_FIELD(all, fs, DML_F32S),
	DML_FIELD(all, ds, DML_F64S),    DML_FIELD(all, is, DML_I64S),
	DML_FIELD(all, us, DML_U32S),
};
static const dml_type all_type = DML_TYPE(all, all_fields);

#endif

/*
 * distml/codec.h - typed messages: describe a C struct once, send it as RPC
 * arguments or replies.
 *
 * A message type is a list of fields of a C struct (name, kind, offset).
 * Handlers and callers only ever see their own structs; the wire codec that
 * turns them into bytes is chosen per server/client (today: the binary codec,
 * DML_CODEC_BINARY, described in docs/protocol.md). Adding another codec
 * (e.g. JSON) does not change handlers.
 *
 *     typedef struct { int64_t A, B; } Args;
 *     static const dml_field args_fields[] = {
 *         DML_FIELD(Args, A, DML_I64), DML_FIELD(Args, B, DML_I64),
 *     };
 *     static const dml_type args_type = DML_TYPE(Args, args_fields);
 */
#ifndef DISTML_CODEC_H
#define DISTML_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Field kinds, with the C member type each expects. */
typedef enum dml_kind {
	DML_I32 = 1,  /* int32_t  */
	DML_I64 = 2,  /* int64_t  */
	DML_U32 = 3,  /* uint32_t */
	DML_U64 = 4,  /* uint64_t */
	DML_F32 = 5,  /* float    */
	DML_F64 = 6,  /* double   */
	DML_BOOL = 7, /* bool     */
	DML_STR = 8,  /* dml_str  */
	DML_BYTES = 9,/* dml_bytes */
	DML_F32S = 10,/* dml_f32s */
	DML_F64S = 11,/* dml_f64s */
	DML_I64S = 12,/* dml_i64s */
	DML_U32S = 13 /* dml_u32s (e.g. sparse indices) */
} dml_kind;

/*
 * Variable-length members. On encode, `data`/`n` describe what to send and
 * the library only reads them. On decode:
 *   - if `data` is NULL, the library points `data` at the received bytes
 *     (a view: valid until the handler returns, or until the call handle is
 *     freed on the client side) and sets `n`;
 *   - if `data` is non-NULL, it is the caller's buffer of `cap` elements: the
 *     library stores the values there (for large arrays on a client, straight
 *     from the socket) and sets `n`; more than `cap` values is DML_ETOOBIG.
 * Strings are not NUL-terminated on the wire; a decoded view is not either.
 */
typedef struct dml_str {
	const char *data;
	size_t n;
	size_t cap;
} dml_str;
typedef struct dml_bytes {
	const void *data;
	size_t n;
	size_t cap;
} dml_bytes;
typedef struct dml_f32s {
	float *data;
	size_t n;
	size_t cap;
} dml_f32s;
typedef struct dml_f64s {
	double *data;
	size_t n;
	size_t cap;
} dml_f64s;
typedef struct dml_i64s {
	int64_t *data;
	size_t n;
	size_t cap;
} dml_i64s;

typedef struct dml_u32s {
	uint32_t *data;
	size_t n;
	size_t cap;
} dml_u32s;

/* One field: its name (used by self-describing codecs), kind and offset. */
typedef struct dml_field {
	const char *name;
	dml_kind kind;
	size_t offset;
} dml_field;

/* A message type: a C struct described field by field. Types are plain
 * constant data; the library never writes to them. */
typedef struct dml_type {
	const char *name;
	const dml_field *fields;
	size_t nfields;
	size_t size; /* sizeof the struct */
} dml_type;

#define DML_FIELD(T, member, kind) {#member, kind, offsetof(T, member)}
#define DML_TYPE(T, fields)                                                    \
	{#T, fields, sizeof(fields) / sizeof((fields)[0]), sizeof(T)}

/* A wire codec. Only the built-in binary codec exists today. */
typedef enum dml_codec {
	DML_CODEC_BINARY = 0
} dml_codec;

/*
 * dml_type_check: validates a type description (known kinds, offsets within
 * the struct, at most DML_MAX_FIELDS fields). Registration and calls check
 * types themselves; this is for hosts that want to fail early.
 * Returns 0 or DML_EINVAL. Thread-safe.
 */
#define DML_MAX_FIELDS 64
DML_API int dml_type_check(const dml_type *t);

/*
 * dml_encode / dml_decode: the binary codec on its own, outside RPC (e.g. to
 * store a message in a file).
 *
 * dml_encode writes the encoding of the struct at `msg` (type `t`) into
 * `buf` of `cap` bytes and stores its length in `*len`. If `cap` is too small
 * it returns DML_ETOOBIG and stores the needed length in `*len`; pass
 * buf = NULL, cap = 0 to ask for the size. The needed length depends on the
 * offset of `buf` modulo 8 only through alignment padding, so always encode
 * into a buffer aligned to 8 bytes.
 *
 * dml_decode fills the struct at `msg` from `buf` (`len` bytes, aligned to
 * 8 bytes). Views (see dml_str) point into `buf`. On failure it returns
 * DML_EPROTO (malformed), DML_ETYPE (a field of another kind) or
 * DML_ETOOBIG (an array larger than the caller's `cap`), and `msg` may be
 * partly written. Neither allocates. Both are thread-safe on distinct data.
 */
DML_API int dml_encode(const dml_type *t, const void *msg, void *buf,
                       size_t cap, size_t *len);
DML_API int dml_decode(const dml_type *t, void *msg, const void *buf,
                       size_t len);

#ifdef __cplusplus
}
#endif
#endif /* DISTML_CODEC_H */

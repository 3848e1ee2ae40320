/*
 * distml/codec.h - typed messages: describe a C struct once, send it as RPC
 * arguments or replies.
 * The API rules (names, ownership, durations, errors, ABI): docs/api.md.
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
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
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

/* One field: its name (used by self-describing codecs), kind and offset.
 * Frozen for the life of the soname (docs/abi.md): hosts keep arrays of it. */
typedef struct dml_field {
	const char *name;
	dml_kind kind;
	size_t offset;
} dml_field;

/* A message type: a C struct described field by field. Types are plain
 * constant data; the library never writes to them. Frozen, like dml_field. */
typedef struct dml_type {
	const char *name;
	const dml_field *fields;
	size_t nfields;
	size_t size; /* sizeof the struct */
} dml_type;

/*
 * DML_FIELD(T, member, kind) describes member `member` of struct T. The
 * member's C type must be the one `kind` names (the table above): in C,
 * a mismatch (DML_I32 on an int64_t, DML_F32 on an int32_t) does not
 * compile ("size of array is negative"). In C++ only the sizes are checked.
 */
#ifndef __cplusplus
#define DML__INT_KIND(T, sgn)                                                  \
	(sizeof(T) == 4 ? (sgn) ? DML_I32 : DML_U32                            \
	 : sizeof(T) == 8 ? (sgn) ? DML_I64 : DML_U64 : 0)
#define DML__KIND_OF(x)                                                        \
	_Generic((x),                                                          \
		int: DML__INT_KIND(int, 1),                                    \
		long: DML__INT_KIND(long, 1),                                  \
		long long: DML__INT_KIND(long long, 1),                        \
		unsigned: DML__INT_KIND(unsigned, 0),                          \
		unsigned long: DML__INT_KIND(unsigned long, 0),                \
		unsigned long long: DML__INT_KIND(unsigned long long, 0),      \
		float: DML_F32, double: DML_F64, _Bool: DML_BOOL,              \
		dml_str: DML_STR, dml_bytes: DML_BYTES, dml_f32s: DML_F32S,    \
		dml_f64s: DML_F64S, dml_i64s: DML_I64S, dml_u32s: DML_U32S,    \
		default: 0)
#define DML__KIND_CHECK(T, member, kind)                                       \
	((dml_kind)((kind) +                                                   \
	            0 * sizeof(char[DML__KIND_OF(((T *)0)->member) == (kind)   \
	                                ? 1 : -1])))
#else
#define DML__KIND_SIZE(k)                                                      \
	((k) == DML_BOOL ? sizeof(bool)                                        \
	 : (k) == DML_I32 || (k) == DML_U32 || (k) == DML_F32 ? 4              \
	 : (k) == DML_I64 || (k) == DML_U64 || (k) == DML_F64 ? 8              \
	 : sizeof(dml_str))
#define DML__KIND_CHECK(T, member, kind)                                       \
	((dml_kind)((kind) +                                                   \
	            0 * sizeof(char[sizeof(((T *)0)->member) ==                \
	                                    DML__KIND_SIZE(kind) ? 1 : -1])))
#endif

#define DML_FIELD(T, member, kind)                                             \
	{#member, DML__KIND_CHECK(T, member, kind), offsetof(T, member)}
#define DML_TYPE(T, fields)                                                    \
	{#T, fields, sizeof(fields) / sizeof((fields)[0]), sizeof(T)}

/* A wire codec. Only the built-in binary codec exists today. */
typedef enum dml_codec {
	DML_CODEC_BINARY = 0
} dml_codec;

/*
 * dml_type_check: validates a type description at run time (known kinds,
 * offsets within the struct, at most DML_MAX_FIELDS fields); DML_FIELD
 * already checked each member's type at compile time. Registration and
 * calls check types themselves; this is for hosts that want to fail early.
 * Returns 0 or DML_EINVAL (the detail names the field). Thread-safe.
 */
#define DML_MAX_FIELDS 64
DML_API int dml_type_check(const dml_type *t);

/*
 * dml_type_encode / dml_type_decode: the binary codec on its own, outside
 * RPC (e.g. to store a message in a file).
 *
 * dml_type_encode writes the encoding of the struct at `msg` (type `t`)
 * into `buf` of `cap` bytes and stores its length in `*len`. If `cap` is
 * too small it returns DML_ETOOBIG and stores the needed length in `*len`;
 * pass buf = NULL, cap = 0 to ask for the size. The needed length depends
 * on the offset of `buf` modulo 8 only through alignment padding, so always
 * encode into a buffer aligned to 8 bytes.
 *
 * dml_type_decode fills the struct at `msg` from `buf` (`len` bytes,
 * aligned to 8 bytes). Views (see dml_str) point into `buf`. On failure it
 * returns DML_EPROTO (malformed), DML_ETYPE (a field of another kind) or
 * DML_ETOOBIG (an array larger than the caller's `cap`), and `msg` may be
 * partly written. Neither allocates. Both are thread-safe on distinct data.
 */
DML_API int dml_type_encode(const dml_type *t, const void *msg, void *buf,
                            size_t cap, size_t *len);
DML_API int dml_type_decode(const dml_type *t, const void *buf, size_t len,
                            void *msg);

#ifndef DML_NO_DEPRECATED
/* Deprecated in 0.2: dml_type_encode, and dml_type_decode with the buffer
 * before the message. */
DML_DEPRECATED("dml_type_encode")
DML_API int dml_encode(const dml_type *t, const void *msg, void *buf,
                       size_t cap, size_t *len);
DML_DEPRECATED("dml_type_decode (buffer, then message)")
DML_API int dml_decode(const dml_type *t, void *msg, const void *buf,
                       size_t len);
#endif

#ifdef __cplusplus
}
#endif
#endif /* DISTML_CODEC_H */

/*
 * codec.h - the binary codec's internal interface: type-driven encoding into
 * a buffer plus references to large caller arrays (for scatter/gather
 * writes), and decoding with an optional "hole" (an array whose bytes were
 * received straight into the caller's buffer). Not installed.
 */
#ifndef DISTML_CODEC_INTERNAL_H
#define DISTML_CODEC_INTERNAL_H

#include "internal.h"

/* Wire tags of the binary codec (docs/protocol.md). */
enum {
	DML__TAG_PAD = 0,
	/* 1..12 are the dml_kind values */
};

#define DML__MAX_EXT 8

/* A large array sent from the caller's memory: inserted before byte `at`
 * of the inline buffer. */
typedef struct dml__ext {
	size_t at;
	const void *ptr;
	size_t len;
} dml__ext;

/*
 * An encoding target. `p` (may be NULL: size only) receives inline bytes;
 * arrays of at least `ext_min` bytes are recorded in `ext` instead while
 * there is room. `pos` counts inline bytes, `off` the logical payload offset
 * (inline + external), which drives alignment padding.
 */
typedef struct dml__writer {
	uint8_t *p;
	size_t cap;
	size_t pos;
	size_t off;
	size_t ext_min;
	dml__ext ext[DML__MAX_EXT];
	int next;
} dml__writer;

/* dml_type_check without clearing the caller's error detail (for use
 * inside other public calls); sets it on failure. */
int dml__type_valid(const dml_type *t);

/* Encodes `msg` of a type already checked with dml_type_check; fails
 * with DML_EINVAL (bad field) or DML_ETOOBIG. With a
 * NULL or too small `p` it still counts (w->pos/off give the sizes) and
 * returns DML_ETOOBIG if p was non-NULL and too small. */
int dml__encode_w(const dml_type *t, const void *msg, dml__writer *w);

/* Decodes (type already checked); `hole` is the index of a field whose array data is absent from
 * `buf` (already in the caller's buffer), or -1. */
int dml__decode_h(const dml_type *t, void *msg, const uint8_t *buf,
                  size_t len, int hole);

/*
 * A receive plan for a reply of type t into `msg`: the first array field
 * whose caller gave a buffer, when every field before it has a fixed size.
 * On success stores the field index, the payload offset of its element
 * count (8 bytes) and its element size, and returns 0; DML_ENOTFOUND if
 * no such field.
 */
int dml__bulk_plan(const dml_type *t, const void *msg, int *field,
                   size_t *count_off, size_t *esize);

/* The caller's buffer of array field `f` (data, cap) in `msg`. */
void dml__array_dest(const dml_type *t, void *msg, int f, void **data,
                     size_t *cap);
/* Sets the element count of array field `f`. */
void dml__array_set_n(const dml_type *t, void *msg, int f, size_t n);

/* `t`, or a type with no fields when t is NULL (methods without args or
 * reply). */
const dml_type *dml__type_or_empty(const dml_type *t);

/* Whether decoding a type may create views that need aligned memory. */
int dml__type_has_arrays(const dml_type *t);
/* Whether reply type fields of variable length all have caller buffers. */
int dml__type_all_buffered(const dml_type *t, const void *msg);

#endif

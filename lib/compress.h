/*
 * compress.h - lossy gradient compression for pushes (docs/ps.md,
 * "Compressed pushes"): fp16, bf16, int8 with stochastic rounding in
 * buckets (QSGD) and top-k. Pure functions on arrays: the remote handle
 * encodes (ps_remote.c), the server decodes what a peer sent, checked
 * (ps_serve.c). Not installed.
 */
#ifndef DISTML_COMPRESS_H
#define DISTML_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

/* The codecs, as on the wire and in the public DML_PS_COMPRESS_* names. */
enum { DML__GC_NONE = 0, DML__GC_FP16 = 1, DML__GC_BF16 = 2,
       DML__GC_INT8 = 3, DML__GC_TOPK = 4, DML__GC_COUNT = 5 };

/* int8: one scale per bucket of this many values (QSGD's bucket size). */
#define DML__GC_BUCKET 512

/* A coded piece of a vector of n values: `data` holds `nbytes` bytes,
 * `scales` one float per bucket (int8), `idx` the increasing positions
 * of the k values kept (top-k; data then holds k float32). */
typedef struct dml__gc_piece {
	uint8_t *data;
	size_t nbytes;
	float *scales;
	size_t nscales;
	uint32_t *idx;
	size_t nidx;
} dml__gc_piece;

/* What top-k keeps of n values at fraction `frac` (0 < frac <= 1):
 * at least 1. */
size_t dml__gc_topk_k(size_t n, float frac);

/* The sizes a piece of n values needs (k: top-k's count, else ignored). */
void dml__gc_sizes(int codec, size_t n, size_t k, size_t *nbytes,
                   size_t *nscales, size_t *nidx);

/*
 * Encodes v[0..n) (finite) into p, whose arrays the caller sized with
 * dml__gc_sizes. `rng` is the caller's xorshift state (int8's random
 * rounding, top-k's pivots). If `back` is not NULL it receives the n
 * values the decoder will produce (for error feedback). `tmp` is n floats
 * of scratch for top-k (else unused, may be NULL). Cannot fail.
 */
void dml__gc_encode(int codec, const float *v, size_t n, size_t k,
                    uint64_t *rng, dml__gc_piece *p, float *back, float *tmp);

/*
 * Checks a piece of n values from a peer, as dml__gc_decode does, without
 * decoding it: 0, or DML_EINVAL / DML_ENONFINITE with `msg`.
 */
int dml__gc_check(int codec, size_t n, const dml__gc_piece *p, char *msg, size_t msgsz);

/* Values [lo, hi) of a checked piece into out[0 .. hi - lo): a server
 * decodes a large piece a part at a time. */
void dml__gc_decode_range(int codec, const dml__gc_piece *p, size_t lo, size_t hi,
                          float *out);

/*
 * Decodes a piece of n values from a peer into out[0..n): every size, index
 * and value is checked (sizes that do not match, indices out of range or
 * not increasing, a scale or value that is not finite, an int8 level of
 * -128). Returns 0, or DML_EINVAL / DML_ENONFINITE with `msg` saying what.
 */
int dml__gc_decode(int codec, size_t n, const dml__gc_piece *p, float *out,
                   char *msg, size_t msgsz);

#endif

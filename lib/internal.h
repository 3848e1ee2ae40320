/*
 * internal.h - helpers shared by the library's sources. Not installed.
 * Internal names start with dml__ or are static.
 */
#ifndef DISTML_INTERNAL_H
#define DISTML_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "distml.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "libdistml's wire format is little-endian; big-endian hosts are not supported yet"
#endif

static inline void dml__put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void dml__put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void dml__put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t dml__get_u16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}
static inline uint32_t dml__get_u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}
static inline uint64_t dml__get_u64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* Monotonic clock in milliseconds. */
int64_t dml__now_ms(void);

/* Monotonic clock in microseconds (for short busy-polls). */
int64_t dml__now_us(void);

/* Absolute deadline (ms, monotonic) for a relative timeout; -1 = never. */
int64_t dml__deadline(dml_duration timeout);

/* Milliseconds left until `deadline` for poll(): -1 = forever, >= 0. */
int dml__remaining_ms(int64_t deadline);

/*
 * A growable byte buffer whose storage is aligned to 16 bytes. `len` bytes
 * are in use out of `cap`. Zero-initialised is an empty buffer.
 */
typedef struct dml__buf {
	uint8_t *data;
	size_t len;
	size_t cap;
} dml__buf;

/* Ensures room for `extra` more bytes beyond len. 0 or DML_ENOMEM. */
int dml__buf_reserve(dml__buf *b, size_t extra);
/* Ensures capacity of at least `cap` bytes (contents kept). */
int dml__buf_grow(dml__buf *b, size_t cap);
void dml__buf_free(dml__buf *b);

/*
 * Denormal floats make x86 arithmetic take microcode assists, about a
 * hundred cycles each: a few denormal weights (L2 decay drives the weights
 * of always-zero inputs toward them) can slow the products several times.
 * The models' entry points and the optimizer steps run with denormals
 * flushed to zero (MXCSR FTZ and DAZ) and restore the caller's control bits on the way out, keeping
 * any exception flags raised meanwhile: the host's floating-point
 * environment is as it was.
 */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <xmmintrin.h>
static inline unsigned dml__fp_enter(void)
{
	unsigned csr = _mm_getcsr();
	_mm_setcsr(csr | 0x8040u); /* FTZ | DAZ */
	return csr;
}
static inline void dml__fp_leave(unsigned csr)
{
	_mm_setcsr(csr | (_mm_getcsr() & 0x3Fu)); /* keep the new flags */
}
#else
static inline unsigned dml__fp_enter(void) { return 0; }
static inline void dml__fp_leave(unsigned csr) { (void)csr; }
#endif

/* snprintf into a fixed buffer, always NUL-terminated. */
void dml__set_msg(char *dst, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif

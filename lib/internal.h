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

/* FNV-1a of a string: 64 bits, stable across runs and hosts (table keys,
 * names kept in checkpoints). Not for adversarial keys' secrecy. */
static inline uint64_t dml__fnv1a(const char *s)
{
	uint64_t h = 14695981039346656037ULL;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

/* Monotonic clock in milliseconds. */
int64_t dml__now_ms(void);

/* Monotonic clock in microseconds (for short busy-polls). */
int64_t dml__now_us(void);

/* Absolute deadline (ms, monotonic) for a relative timeout; -1 = never. */
int64_t dml__deadline(dml_duration timeout);

/* The longest single wait handed to poll() or epoll_wait() (an int of ms);
 * longer waits are made of several. */
#define DML__MAX_WAIT_MS 1000000000

/* A deadline in us (monotonic) for a relative timeout in ms; -1 = never. */
int64_t dml__deadline_us(dml_duration timeout);
/* Microseconds left until `deadline_us`: -1 = forever, >= 0. */
int64_t dml__remaining_us(int64_t deadline_us);
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
void dml__set_msg(char *dst, size_t cap, const char *fmt, ...) DML_PRINTF(3, 4);

/* ---- error detail (common.h: dml_error_detail) ---------------------- */

/* Every public function that returns a code calls dml__detail_clear first;
 * a failure with something to say sets the detail with dml__fail (which
 * returns its code, for `return dml__fail(DML_EINVAL, "...")`) or
 * dml__detail_set. The detail is the calling thread's. */
void dml__detail_clear(void);
void dml__detail_set(const char *fmt, ...) DML_PRINTF(1, 2);
int dml__fail(int code, const char *fmt, ...) DML_PRINTF(2, 3);
/* The calling thread's detail buffer (DML_ERRMSG_MAX bytes). */
char *dml__detail_buf(void);

/* Copies n bytes of untrusted text into dst (cap bytes, NUL-terminated),
 * printable ASCII as is, a backslash as \\ and every other byte as \xNN;
 * stops short rather than cut an escape. Returns the bytes of src used. */
size_t dml__escape(char *dst, size_t cap, const void *src, size_t n);

/* ---- durations (common.h) -------------------------------------------- */

/* An option's duration: 0 becomes `def`; DML_INFINITE and positive values
 * stay; anything else is DML_EINVAL (and *v is unchanged). */
int dml__opt_duration(dml_duration *v, dml_duration def);

/* The dead-peer options of both option structs (rpc.h): 0s become the
 * DML_RPC_DEFAULT_KEEPALIVE* values, user_timeout's 0 keepalive +
 * interval x count; keepalive DML_INFINITE is off (-1 after this). 0 or
 * DML_EINVAL. */
int dml__keepalive_opts(dml_duration *keepalive, dml_duration *interval, int *count,
                        dml_duration *user_timeout);

/* A call's timeout: DML_DEFAULT becomes `def` (the handle's option, already
 * resolved); DML_INFINITE, 0 and positive values stay; anything else is
 * DML_EINVAL. */
int dml__call_timeout(dml_duration t, dml_duration def, dml_duration *out);

/* The layout level a caller passed (DML_ABI): 0, or DML_EVERSION when it
 * is not one this library knows. */
int dml__abi_check(int abi);

/* ---- RPC limits, for the layers above -------------------------------- */

/* The largest frame a server accepts, or a client sends and accepts. */
size_t dml__rpc_server_max_frame(const dml_rpc_server *s);

/* For the layers above (the parameter store): fn(user, s, conn) after a
 * connection of s is closed, for any reason, in the thread that closed
 * it; its deferred replies are refused by then. Up to 8; not
 * thread-safe: register before the server runs. 0 or DML_EBUSY. */
int dml__rpc_server_on_close(dml_rpc_server *s,
                             void (*fn)(void *user, dml_rpc_server *s, uint64_t conn),
                             void *user);

/* The server and connection a deferred reply is owed on. */
void dml__rpc_deferred_of(const dml_rpc_deferred *d, dml_rpc_server **s, uint64_t *conn);
size_t dml__rpc_client_max_frame(const dml_rpc_client *c);

/* ---- waiting between attempts ---------------------------------------- */

/* A doubling delay between attempts: min, then twice as long each time, up
 * to max; reset after a success. */
typedef struct dml__backoff {
	int64_t min, max, cur; /* ms */
} dml__backoff;

void dml__backoff_init(dml__backoff *b, int64_t min_ms, int64_t max_ms);
/* The delay before the next attempt; doubles the one after. */
int64_t dml__backoff_next(dml__backoff *b);
void dml__backoff_reset(dml__backoff *b);
/* Sleeps ms milliseconds (a backoff between attempts, never a
 * synchronisation). */
void dml__sleep_ms(int64_t ms);

#endif

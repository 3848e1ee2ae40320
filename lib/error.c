/* error.c - error names and the library version. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define STR2(x) #x
#define STR(x) STR2(x)

const char *dml_strerror(int err)
{
	switch (err) {
	case DML_OK: return "success";
	case DML_EINVAL: return "invalid argument";
	case DML_ENOMEM: return "out of memory";
	case DML_ETIMEDOUT: return "deadline exceeded";
	case DML_ECLOSED: return "closed";
	case DML_ECONNLOST: return "connection lost";
	case DML_ECONNREFUSED: return "connection refused";
	case DML_EADDR: return "bad address";
	case DML_ENOMETHOD: return "unknown method";
	case DML_EHANDLER: return "handler error";
	case DML_ETOOBIG: return "too large";
	case DML_EPROTO: return "malformed frame or message";
	case DML_EEXIST: return "already exists";
	case DML_ESYS: return "system error";
	case DML_EBUSY: return "busy";
	case DML_ETYPE: return "wrong type";
	case DML_ESTOPPED: return "stopped";
	case DML_EIO: return "I/O error";
	case DML_ECORRUPT: return "corrupted data";
	case DML_ETRUNC: return "truncated data";
	case DML_ENOTFOUND: return "not found";
	case DML_EAGAIN: return "try again";
	case DML_EFORMAT: return "malformed input";
	case DML_EVERSION: return "unsupported version";
	case DML_EDIM: return "dimension mismatch";
	default: return "unknown error";
	}
}

const char *dml_version(void)
{
	return STR(DML_VERSION_MAJOR) "." STR(DML_VERSION_MINOR) "." STR(
		DML_VERSION_PATCH);
}

int dml_version_number(void) { return DML_VERSION_NUMBER; }

int64_t dml__now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The coarse clock: a few ms of resolution (the timer tick), which
 * timeouts in ms do not notice, for no TSC read: it is read several times
 * per RPC call. */
int64_t dml__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Deadlines are taken from the coarse clock (no TSC read: cheap on every
 * call), rounded up so that they never come before the precise clock's. */
int64_t dml__deadline(dml_duration timeout)
{
	if (timeout < 0)
		return -1;
	struct timespec ts, res;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	clock_getres(CLOCK_MONOTONIC_COARSE, &res);
	return (int64_t)ts.tv_sec * 1000 + (ts.tv_nsec + res.tv_nsec) / 1000000 +
	       1 + timeout;
}

int dml__remaining_ms(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - dml__now_ms();
	if (left <= 0)
		return 0;
	return left > 1000000000 ? 1000000000 : (int)left;
}

int dml__buf_grow(dml__buf *b, size_t cap)
{
	if (cap <= b->cap)
		return 0;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < cap) {
		if (ncap > SIZE_MAX / 2)
			return DML_ENOMEM;
		ncap *= 2;
	}
	void *p = NULL;
	if (posix_memalign(&p, 16, ncap) != 0)
		return DML_ENOMEM;
	if (b->len)
		memcpy(p, b->data, b->len);
	free(b->data);
	b->data = p;
	b->cap = ncap;
	return 0;
}

int dml__buf_reserve(dml__buf *b, size_t extra)
{
	if (extra > SIZE_MAX - b->len)
		return DML_ENOMEM;
	return dml__buf_grow(b, b->len + extra);
}

void dml__buf_free(dml__buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void dml__set_msg(char *dst, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, cap, fmt, ap);
	va_end(ap);
}

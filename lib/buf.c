/* buf.c - growable aligned byte buffers and bounded messages. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define BUF_FIRST 256 /* bytes of a buffer's first allocation */

int dml__buf_grow(dml__buf *b, size_t cap)
{
	if (cap <= b->cap)
		return 0;
	size_t ncap = b->cap ? b->cap : BUF_FIRST;
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

/* error.c - error names, the calling thread's error detail, escaping of
 * untrusted text, the library version and ABI level. */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

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
	case DML_ENONFINITE: return "non-finite value";
	case DML_EFULL: return "capacity reached";
	case DML_EDIVERGED: return "training diverged";
	case DML_ETLS: return "TLS failure";
	case DML_ENOTSUP: return "not supported by this build";
	case DML_EAUTH: return "authentication failed";
	case DML_EPERM: return "not permitted";
	default: return "unknown error";
	}
}

const char *dml_version(void)
{
	return STR(DML_VERSION_MAJOR) "." STR(DML_VERSION_MINOR) "." STR(
		DML_VERSION_PATCH);
}

int dml_version_number(void) { return DML_VERSION_NUMBER; }

int dml__abi_check(int abi)
{
	if (abi >= 1 && abi <= DML_ABI)
		return 0;
	return dml__fail(DML_EVERSION,
	                 "caller built for struct layout level %d; this library "
	                 "(%s) knows levels 1 to %d",
	                 abi, dml_version(), DML_ABI);
}

/* ---- error detail ------------------------------------------------- */

/* The library's only state outside its handles: one message per thread,
 * which no other thread reads. */
static _Thread_local char detail[DML_ERRMSG_MAX];

const char *dml_error_detail(void) { return detail; }

char *dml__detail_buf(void) { return detail; }

void dml__detail_clear(void) { detail[0] = 0; }

/* Both keep errno: a DML_ESYS caller reads it after the detail is set. */
void dml__detail_set(const char *fmt, ...)
{
	int e = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	errno = e;
}

int dml__fail(int code, const char *fmt, ...)
{
	int e = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	errno = e;
	return code;
}

size_t dml__escape(char *dst, size_t cap, const void *src, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = src;
	size_t out = 0, i = 0;
	if (!cap)
		return 0;
	for (; i < n; i++) {
		unsigned char c = s[i];
		size_t need = c == '\\' ? 2 : (c >= 0x20 && c < 0x7f) ? 1 : 4;
		if (out + need >= cap)
			break;
		if (need == 1) {
			dst[out++] = (char)c;
		} else if (need == 2) {
			dst[out++] = '\\';
			dst[out++] = '\\';
		} else {
			dst[out++] = '\\';
			dst[out++] = 'x';
			dst[out++] = hex[c >> 4];
			dst[out++] = hex[c & 15];
		}
	}
	dst[out] = 0;
	return i;
}

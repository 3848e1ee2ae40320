/*
 * distml/common.h - version, export macro, error codes and durations.
 *
 * Part of libdistml. Included by <distml.h>; include that instead.
 */
#ifndef DISTML_COMMON_H
#define DISTML_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version: the Makefile reads these three lines, so keep their shape. */
#define DML_VERSION_MAJOR 0
#define DML_VERSION_MINOR 1
#define DML_VERSION_PATCH 0

#define DML_VERSION_NUMBER                                                     \
	(DML_VERSION_MAJOR * 10000 + DML_VERSION_MINOR * 100 + DML_VERSION_PATCH)

#if defined(DML_BUILDING_LIBRARY) && defined(__GNUC__)
#define DML_API __attribute__((visibility("default")))
#else
#define DML_API
#endif

/*
 * Error codes. Every public function that can fail returns 0 on success or
 * one of these (negative) values. The values are stable: they are part of the
 * ABI and of the wire protocol's documentation.
 */
enum {
	DML_OK = 0,
	DML_EINVAL = -1,       /* invalid argument */
	DML_ENOMEM = -2,       /* out of memory */
	DML_ETIMEDOUT = -3,    /* deadline exceeded */
	DML_ECLOSED = -4,      /* handle closed, or connection shut down locally */
	DML_ECONNLOST = -5,    /* connection lost (peer closed or reset) */
	DML_ECONNREFUSED = -6, /* connection refused */
	DML_EADDR = -7,        /* bad or unresolvable address */
	DML_ENOMETHOD = -8,    /* unknown RPC method */
	DML_EHANDLER = -9,     /* the remote handler returned an error (message) */
	DML_ETOOBIG = -10,     /* frame or value larger than the configured limit */
	DML_EPROTO = -11,      /* malformed frame or message (protocol error) */
	DML_EEXIST = -12,      /* already exists (e.g. method registered twice) */
	DML_ESYS = -13,        /* operating-system error (see errno) */
	DML_EBUSY = -14,       /* resource busy */
	DML_ETYPE = -15,       /* value of the wrong type */
	DML_ESTOPPED = -16,    /* server stopped */
	DML_EIO = -17,         /* I/O error on a file */
	DML_ECORRUPT = -18,    /* corrupted data (checksum mismatch) */
	DML_ETRUNC = -19,      /* truncated data */
	DML_ENOTFOUND = -20,   /* not found */
	DML_EAGAIN = -21,      /* try again (nothing ready yet) */
	DML_EFORMAT = -22,     /* malformed input file (data set, checkpoint) */
	DML_EVERSION = -23,    /* unsupported format or protocol version */
	DML_EDIM = -24,        /* dimensions do not match */
};

/*
 * Durations are milliseconds. DML_INFINITE waits forever; DML_DEFAULT asks
 * for the handle's configured default. Zero means "do not wait".
 */
typedef int64_t dml_duration;
#define DML_INFINITE ((dml_duration)-1)
#define DML_DEFAULT ((dml_duration)-2)

/* dml_strerror: a static, human-readable name for an error code. Never NULL.
 * Thread-safe. Unknown codes give "unknown error". */
DML_API const char *dml_strerror(int err);

/* dml_version: the library's version as "MAJOR.MINOR.PATCH" (static string;
 * may differ from the header the host was built with). Thread-safe. */
DML_API const char *dml_version(void);

/* dml_version_number: MAJOR*10000 + MINOR*100 + PATCH of the running library.
 * Thread-safe. */
DML_API int dml_version_number(void);

#ifdef __cplusplus
}
#endif
#endif /* DISTML_COMMON_H */

/*
 * distml/common.h - version, ABI level, export macro, error codes, error
 * detail and durations: the rules every module follows (docs/api.md).
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
#define DML_VERSION_MINOR 4
#define DML_VERSION_PATCH 0

#define DML_VERSION_NUMBER                                                     \
	(DML_VERSION_MAJOR * 10000 + DML_VERSION_MINOR * 100 + DML_VERSION_PATCH)

/*
 * The layout level of the public structs this header declares (docs/abi.md).
 * Every function that reads or fills a struct that may grow (options,
 * statistics, dml_model) is a macro that passes DML_ABI to the exported
 * function of the same name with "_abi" appended, so the library reads and
 * writes exactly the layout the caller was compiled with. A caller built
 * with a newer header than the library gets DML_EVERSION. Bindings from
 * other languages call the _abi functions with the level of the layouts
 * they use.
 */
#define DML_ABI 1

#if defined(DML_BUILDING_LIBRARY) && defined(__GNUC__)
#define DML_API __attribute__((visibility("default")))
#else
#define DML_API
#endif

/* Names kept for one release after a rename (docs/api.md lists them). Define
 * DML_NO_DEPRECATED to hide them, DML_NO_DEPRECATION_WARNINGS to keep them
 * quiet. */
#if defined(DML_BUILDING_LIBRARY) || defined(DML_NO_DEPRECATION_WARNINGS) ||  \
	!defined(__GNUC__)
#define DML_DEPRECATED(use)
#else
#define DML_DEPRECATED(use) __attribute__((deprecated("use " use)))
#endif

#if defined(__GNUC__)
#define DML_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DML_PRINTF(f, a)
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
	DML_EVERSION = -23,    /* unsupported format, protocol or ABI version */
	DML_EDIM = -24,        /* dimensions do not match */
	DML_ENONFINITE = -25,  /* a NaN or an infinity where a finite value is needed */
	DML_EFULL = -26,       /* a configured capacity is reached (e.g. max_rows) */
	DML_EDIVERGED = -27,   /* training diverged: a loss or parameter became non-finite */
	DML_ETLS = -28,        /* TLS handshake or certificate verification failed */
	DML_ENOTSUP = -29,     /* not supported by this build (e.g. TLS without OpenSSL) */
	DML_EAUTH = -30,       /* not authenticated: no or bad credentials, or a MAC mismatch */
	DML_EPERM = -31,       /* not permitted: this identity may not do that */
};

/* dml_strerror: a static, human-readable name for an error code. Never NULL.
 * Thread-safe. Unknown codes give "unknown error". */
DML_API const char *dml_strerror(int err);

/*
 * Error detail: what a code cannot say (a handler's message, the file and
 * line of a parse error, which shard failed). Every public function that
 * returns an error code sets the calling thread's detail when it fails and
 * clears it when it succeeds (functions that return no code leave it), so
 * right after a failed call, dml_error_detail() describes that call's
 * failure, or is "" when the code says it all. The string is owned by the
 * library, belongs to the calling thread, and stays valid until that
 * thread's next call into the library that returns a code. At most
 * DML_ERRMSG_MAX - 1 bytes; bytes that came from a file or a peer are
 * escaped (\xNN, \\), so the text is printable ASCII. Thread-safe: each
 * thread has its own. Never NULL.
 */
#define DML_ERRMSG_MAX 256
DML_API const char *dml_error_detail(void);

/* dml_version: the library's version as "MAJOR.MINOR.PATCH" (static string;
 * may differ from the header the host was built with). Thread-safe. */
DML_API const char *dml_version(void);

/* dml_version_number: MAJOR*10000 + MINOR*100 + PATCH of the running library.
 * Thread-safe. */
DML_API int dml_version_number(void);

/*
 * dml_shard_range: part `i` of `n` (0 <= i < n) of `total` items, as
 * [*off, *off + *len): the n parts are contiguous, in order, cover every
 * item exactly once and differ in size by at most one (the first
 * total % n parts have one more). With n > total the last parts are empty.
 * The one rule for data-set shards (dml_dataset_new_shard) and store
 * shards (the servers behind dml_ps_connect). DML_EINVAL for i, n out of
 * range or a NULL output. Thread-safe.
 */
DML_API int dml_shard_range(size_t total, int i, int n, size_t *off,
                            size_t *len);

/*
 * Durations are milliseconds, in one of two roles:
 *
 * - In an option struct, 0 means the documented default (each one a public
 *   DML_*_DEFAULT_* macro), DML_INFINITE means no limit, a positive value is
 *   that many ms. Anything else (DML_DEFAULT included) is DML_EINVAL.
 * - As a call's timeout, DML_DEFAULT means the handle's configured default
 *   for that call (each call names its option; a call on a handle that has
 *   none gives DML_EINVAL), DML_INFINITE waits as long as it takes, a
 *   positive value bounds the wait, and 0 means "do not wait": the call does
 *   what it can without waiting, and when that is not all of it, it returns
 *   DML_ETIMEDOUT having changed nothing (an RPC call then sends nothing).
 */
typedef int64_t dml_duration;
#define DML_INFINITE ((dml_duration)-1)
#define DML_DEFAULT ((dml_duration)-2)

#ifdef __cplusplus
}
#endif
#endif /* DISTML_COMMON_H */

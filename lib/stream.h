/*
 * stream.h - a connection's bytes, as the RPC layer sees them: read, write,
 * flush, readiness, shutdown, close and the peer's address, behind a small
 * table of operations (as nng's nng_stream), so that a stream can be a
 * plain socket (TCP or Unix domain, here) or one that transforms its bytes
 * (TLS, or the buffering stream of the tests).
 *
 * A stream sits on one non-blocking descriptor, which the caller polls. It
 * may hold input the descriptor no longer shows as readable (a TLS record
 * decrypted in part: dml__stream_pending), and a write may need a read
 * first, or a read a write (a TLS handshake or key update): after
 * DML_EAGAIN, dml__stream_wants says which readiness of the descriptor
 * lets it go on, and dml__stream_flush pushes out what it holds. So a
 * caller that waits on the descriptor:
 *
 * - polls for what the stream wants besides what it wants itself;
 * - reads on while dml__stream_pending says input is held, since no
 *   readiness will report it;
 * - after writing, flushes until 0 before it may assume the peer can see
 *   every byte written.
 *
 * A stream holds written bytes only once its descriptor took no more (so
 * that the descriptor's readiness reports room for them: an edge-triggered
 * poller needs that), and every call pushes out what it can.
 *
 * A stream serves one thread at a time, unless DML__STREAM_DUPLEX: then
 * one thread may read while another writes, and a read may block on a
 * descriptor made blocking (a plain socket). Not installed.
 */
#ifndef DISTML_STREAM_H
#define DISTML_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "poller.h" /* DML__EV_IN, DML__EV_OUT */

typedef struct dml__stream dml__stream;

typedef struct dml__stream_ops {
	/* One read: bytes (> 0), DML_EAGAIN, or DML_ECONNLOST (end of
	 * stream, a reset, or a peer breaking the stream's own protocol). */
	ssize_t (*read)(dml__stream *st, void *buf, size_t len);
	/* One gather write: bytes taken (>= 0; the stream may hold some of
	 * them until a flush), DML_EAGAIN or DML_ECONNLOST. Never SIGPIPE. */
	ssize_t (*writev)(dml__stream *st, const struct iovec *iov, int n);
	/* Pushes out bytes the stream holds: 0 when none are left,
	 * DML_EAGAIN, DML_ECONNLOST. NULL: it never holds any. */
	int (*flush)(dml__stream *st);
	/* Input held inside, readable without the descriptor. NULL: none. */
	size_t (*pending)(const dml__stream *st);
	/* After DML_EAGAIN: the readiness (DML__EV_IN and/or DML__EV_OUT)
	 * that lets the stream go on, when the caller waits to read (`asked`
	 * DML__EV_IN) and/or to write (DML__EV_OUT). NULL: `asked`. */
	unsigned (*wants)(const dml__stream *st, unsigned asked);
	/* Ends both directions at once (other threads' waits on the
	 * descriptor return), but keeps the descriptor open. Thread-safe:
	 * it may run while another thread reads or writes. */
	void (*shutdown)(dml__stream *st);
	/* Closes the descriptor and frees the stream. */
	void (*close)(dml__stream *st);
	/* The peer's address, as dml__listen takes it. NULL: the socket's. */
	int (*peer)(const dml__stream *st, char *buf, size_t cap);
} dml__stream_ops;

#define DML__STREAM_DUPLEX 1u /* a read and a write may run at once */
#define DML__STREAM_SHORT_DRAINS 2u /* a read shorter than asked means the
                                       descriptor had no more (a socket);
                                       else only DML_EAGAIN says so */

struct dml__stream {
	const dml__stream_ops *ops;
	int fd;         /* the descriptor to poll */
	unsigned flags; /* DML__STREAM_* */
};

/* A plain stream over a connected socket (TCP or Unix domain), which it
 * owns from now on (closed on failure too). DUPLEX, SHORT_DRAINS. 0 or
 * DML_ENOMEM. */
int dml__stream_socket(dml__stream **out, int fd);

/* Wraps every stream the library makes from now on: after accept (server
 * 1) and after dial (server 0), `wrap` may replace *st with a stream of
 * its own over (*st)->fd (taking over the descriptor, freeing *st without
 * closing it), or fail (the connection is then closed). NULL: plain
 * streams. For tests; not thread-safe: set it before any server or
 * client exists. */
typedef int (*dml__stream_wrap_fn)(dml__stream **st, int server);
void dml__stream_set_wrap(dml__stream_wrap_fn wrap);

/* The stream the library uses for a connected socket: a plain one, then
 * wrapped. Owns fd from now on. 0 or an error. */
int dml__stream_open(dml__stream **out, int fd, int server);

/* Frees a plain stream without closing its descriptor (for a wrapper
 * taking it over). */
void dml__stream_release(dml__stream *st);

/* TLS (stream_tls.c): replaces the plain stream *st by a TLS one over its
 * descriptor, configured by cfg (distml/tls.h). A server's handshake runs
 * in its first reads and writes; a client's runs now, before `deadline`
 * (ms), verifying the certificate's chain and `host` (NULL or "": the
 * chain only). 0, or DML_ETLS, DML_ETIMEDOUT, DML_ENOMEM, DML_ENOTSUP,
 * with a detail; on failure *st is as it was (the caller closes it). */
struct dml_tls;
int dml__stream_tls(dml__stream **st, const struct dml_tls *cfg, const char *host,
                    int64_t deadline);
int dml__tls_role(const struct dml_tls *t); /* DML_TLS_CLIENT or _SERVER */

/* The subject of the certificate a TLS stream's peer presented and that
 * was verified (mutual TLS), in RFC 2253 form ("CN=worker1,O=job"), into
 * buf: 0; DML_ENOTFOUND (not TLS, no certificate, handshake unfinished);
 * DML_ETOOBIG (does not fit cap); DML_ENOMEM. */
int dml__stream_tls_subject(const dml__stream *st, char *buf, size_t cap);

static inline ssize_t dml__stream_read(dml__stream *st, void *buf, size_t len)
{
	return st->ops->read(st, buf, len);
}

static inline ssize_t dml__stream_writev(dml__stream *st, const struct iovec *iov, int n)
{
	return st->ops->writev(st, iov, n);
}

static inline int dml__stream_flush(dml__stream *st)
{
	return st->ops->flush ? st->ops->flush(st) : 0;
}

static inline size_t dml__stream_pending(const dml__stream *st)
{
	return st->ops->pending ? st->ops->pending(st) : 0;
}

/* What to wait for, when the caller waits to read and/or write (`asked`). */
static inline unsigned dml__stream_wants(const dml__stream *st, unsigned asked)
{
	return st->ops->wants ? st->ops->wants(st, asked) : asked;
}

static inline void dml__stream_shutdown(dml__stream *st) { st->ops->shutdown(st); }

static inline void dml__stream_close(dml__stream *st) { st->ops->close(st); }

int dml__stream_peer(const dml__stream *st, char *buf, size_t cap);

/* Writes what it can of iov (*iovp and *np advance past what was taken)
 * and flushes: 0 when all is written and flushed, DML_EAGAIN (wait for
 * dml__stream_wants(st, DML__EV_OUT)), or DML_ECONNLOST. */
int dml__stream_write_step(dml__stream *st, struct iovec **iovp, int *np);

/* Writes all of iov (modified as it goes) and flushes, before `deadline`
 * (dml__deadline, ms), waiting on the descriptor for what the stream
 * wants. 0, DML_ETIMEDOUT, DML_ECONNLOST or DML_ESYS. */
int dml__stream_write_all(dml__stream *st, struct iovec *iov, int n, int64_t deadline);

/* Reads exactly n bytes into buf before `deadline` (ms), waiting on the
 * descriptor (non-blocking) for what the stream wants. 0, DML_ETIMEDOUT,
 * DML_ECONNLOST or DML_ESYS. */
int dml__stream_read_all(dml__stream *st, void *buf, size_t n, int64_t deadline);

#endif

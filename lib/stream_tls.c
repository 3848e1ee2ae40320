/*
 * stream_tls.c - the TLS stream (stream.h) over OpenSSL 3, and the public
 * configuration of distml/tls.h. Without OpenSSL (DML_HAVE_TLS unset) the
 * public functions say DML_ENOTSUP.
 *
 * OpenSSL reads and writes the socket through a BIO of our own, which
 * uses transport.c's calls (so no SIGPIPE, as everywhere else). Plaintext
 * a write takes is copied into the stream (at most one record's worth) and
 * handed to SSL_write until it is accepted: retries pass the same bytes,
 * as OpenSSL requires, and the stream holds them only once the socket took
 * no more. SSL_pending is the input held. What a read or a write waits for
 * (a write may need a read, during a handshake) is what wants() reports.
 */
#include "abi.h"
#include "internal.h"
#include "stream.h"
#include "transport.h"

#include "distml/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DML_HAVE_TLS

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

struct dml_tls {
	SSL_CTX *ctx;
	int role;
	char *server_name; /* a client's, or NULL: the dialed host */
};

/* ---- the BIO: transport.c's calls on the descriptor ----------------- */

static BIO_METHOD *bio_meth;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* ---- the stream ----------------------------------------------------- */

/*
 * Written records are gathered in cbuf and go out in one write at the end
 * of each stream call (one system call, and one wake-up of the peer, for
 * up to TLS_CHUNK of plaintext, instead of one per 16 KiB record); what the
 * socket does not take then stays there, and the stream wants output.
 * Small pieces of plaintext are first gathered in pbuf, so that a frame's
 * header and body make one record.
 */
#define TLS_PBUF 16384             /* plaintext gathered: one record's worth */
#define TLS_CHUNK (256 * 1024)     /* plaintext sealed per writev at most */
#define TLS_SMALL (TLS_PBUF + 8192) /* cbuf for small writes and the protocol's own */
#define TLS_BIG (TLS_CHUNK + TLS_PBUF + 8192) /* cbuf once large writes came */
#define TLS_READ_BUF (128 * 1024)  /* OpenSSL's read buffer (read-ahead) */

typedef struct tls_stream {
	dml__stream base;
	SSL *ssl;
	unsigned rwant, wwant; /* what the last read / write waits for */
	uint8_t *cbuf;         /* ciphertext not yet written: [coff, clen) */
	size_t coff, clen, ccap;
	uint8_t pbuf[TLS_PBUF];
} tls_stream;

/* Writes out the gathered ciphertext: 0 when none is left, DML_EAGAIN,
 * DML_ECONNLOST. */
static int drain(tls_stream *t)
{
	while (t->coff < t->clen) {
		struct iovec v = {t->cbuf + t->coff, t->clen - t->coff};
		ssize_t w = dml__writev(t->base.fd, &v, 1);
		if (w < 0)
			return (int)w == DML_EAGAIN ? DML_EAGAIN : DML_ECONNLOST;
		t->coff += (size_t)w;
	}
	t->coff = t->clen = 0;
	return 0;
}

static int bio_write(BIO *b, const char *p, int n)
{
	tls_stream *t = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (t->clen + (size_t)n > t->ccap && t->coff) { /* make room at the front */
		memmove(t->cbuf, t->cbuf + t->coff, t->clen - t->coff);
		t->clen -= t->coff;
		t->coff = 0;
	}
	if (t->clen + (size_t)n > t->ccap) {
		int rc = drain(t);
		if (rc == DML_ECONNLOST)
			return -1;
		if (rc || t->clen + (size_t)n > t->ccap) { /* cannot happen for SSL_write: see tls_writev */
			BIO_set_retry_write(b);
			return -1;
		}
	}
	memcpy(t->cbuf + t->clen, p, (size_t)n);
	t->clen += (size_t)n;
	return n;
}

static int bio_read(BIO *b, char *p, int n)
{
	tls_stream *t = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	ssize_t r = dml__read(t->base.fd, p, (size_t)n);
	if (r > 0)
		return (int)r;
	if (r == DML_EAGAIN) {
		BIO_set_retry_read(b);
		return -1;
	}
	return r == DML_ECONNLOST ? 0 : -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void bio_meth_make(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "distml");
	if (m && BIO_meth_set_write(m, bio_write) && BIO_meth_set_read(m, bio_read) &&
	    BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
		bio_meth = m;
	else
		BIO_meth_free(m);
}

/* An SSL call's result as a stream result: DML_EAGAIN with *want set, or
 * DML_ECONNLOST. */
static int ssl_fail(tls_stream *t, int ret, unsigned *want)
{
	switch (SSL_get_error(t->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		*want = DML__EV_IN;
		return DML_EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want = DML__EV_OUT;
		return DML_EAGAIN;
	default: /* end of stream, a reset, a bad record or alert */
		ERR_clear_error();
		return DML_ECONNLOST;
	}
}

static ssize_t tls_read(dml__stream *st, void *buf, size_t len)
{
	tls_stream *t = (tls_stream *)st;
	size_t n = 0;
	int ret = SSL_read_ex(t->ssl, buf, len, &n);
	if (t->clen > t->coff && drain(t) == DML_ECONNLOST) /* a handshake's, a ticket */
		return DML_ECONNLOST;
	if (ret > 0) {
		t->rwant = DML__EV_IN;
		return (ssize_t)n;
	}
	return ssl_fail(t, ret, &t->rwant);
}

static int tls_flush(dml__stream *st)
{
	tls_stream *t = (tls_stream *)st;
	int rc = drain(t);
	if (rc == DML_EAGAIN)
		t->wwant = DML__EV_OUT;
	return rc;
}

/* Seals n bytes at p into cbuf (which has room for them: see tls_writev).
 * 0 or DML_ECONNLOST. */
static int seal(tls_stream *t, const void *p, size_t n)
{
	size_t done = 0;
	if (!n)
		return 0;
	if (SSL_write_ex(t->ssl, p, n, &done) > 0 && done == n)
		return 0;
	ERR_clear_error();
	return DML_ECONNLOST;
}

static ssize_t tls_writev(dml__stream *st, const struct iovec *iov, int niov)
{
	tls_stream *t = (tls_stream *)st;
	int rc = tls_flush(st); /* first what is held: then cbuf is empty */
	if (rc)
		return rc;
	size_t total = 0;
	for (int i = 0; i < niov && total < TLS_CHUNK; i++)
		total += iov[i].iov_len;
	if (total > TLS_PBUF && t->ccap < TLS_BIG) {
		uint8_t *nb = realloc(t->cbuf, TLS_BIG);
		if (nb) {
			t->cbuf = nb;
			t->ccap = TLS_BIG;
		}
	}
	/* plaintext taken: at most what cbuf holds sealed (a record of 16 KiB
	 * grows by 22 bytes; one per pbuf or large piece, at most 64 + 17) */
	size_t room = t->ccap - TLS_PBUF / 2 - 8192 / 2, take = 0, held = 0;
	if (room > TLS_CHUNK)
		room = TLS_CHUNK;
	for (int i = 0; i < niov && take < room && !rc; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t k = iov[i].iov_len < room - take ? iov[i].iov_len : room - take;
		if (k < TLS_PBUF / 4 && held + k <= TLS_PBUF) { /* small: gather */
			memcpy(t->pbuf + held, p, k);
			held += k;
		} else {
			rc = seal(t, t->pbuf, held);
			held = 0;
			if (!rc)
				rc = seal(t, p, k);
		}
		take += k;
	}
	if (!rc)
		rc = seal(t, t->pbuf, held);
	if (rc)
		return rc;
	if ((rc = drain(t)) == DML_EAGAIN)
		t->wwant = DML__EV_OUT; /* held until a flush */
	return rc && rc != DML_EAGAIN ? rc : (ssize_t)take;
}

static size_t tls_pending(const dml__stream *st)
{
	return (size_t)SSL_pending(((const tls_stream *)st)->ssl);
}

static unsigned tls_wants(const dml__stream *st, unsigned asked)
{
	const tls_stream *t = (const tls_stream *)st;
	unsigned w = 0;
	if (asked & DML__EV_IN)
		w |= t->rwant;
	if (asked & DML__EV_OUT)
		w |= t->wwant;
	if (t->clen > t->coff) /* ciphertext waits for room */
		w |= DML__EV_OUT;
	return w;
}

static void tls_shutdown(dml__stream *st) { (void)shutdown(st->fd, SHUT_RDWR); }

static void tls_close(dml__stream *st)
{
	tls_stream *t = (tls_stream *)st;
	if (SSL_is_init_finished(t->ssl))
		(void)SSL_shutdown(t->ssl); /* close_notify, if the socket takes it */
	(void)drain(t);
	ERR_clear_error();
	SSL_free(t->ssl);
	close(st->fd);
	free(t->cbuf);
	free(t);
}

static const dml__stream_ops tls_ops = {
	.read = tls_read,
	.writev = tls_writev,
	.flush = tls_flush,
	.pending = tls_pending,
	.wants = tls_wants,
	.shutdown = tls_shutdown,
	.close = tls_close,
};

/* The reason of the last failure, for a detail. */
static void why(SSL *ssl, char *buf, size_t cap)
{
	long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	unsigned long e = ERR_peek_last_error();
	if (v != X509_V_OK)
		snprintf(buf, cap, "certificate: %s", X509_verify_cert_error_string(v));
	else if (e)
		ERR_error_string_n(e, buf, cap);
	else
		snprintf(buf, cap, "the peer closed the connection");
	ERR_clear_error();
}

/* The client's handshake, before `deadline` (ms). */
static int handshake(tls_stream *t, const char *host, int64_t deadline)
{
	for (;;) {
		int ret = SSL_connect(t->ssl);
		int d = drain(t); /* what the step wrote */
		if (ret == 1 && !d)
			return 0;
		unsigned want = DML__EV_OUT;
		if (d == DML_ECONNLOST) {
			return dml__fail(DML_ETLS, "TLS handshake with %s failed: the "
			                 "connection was lost", host);
		} else if (!d && ssl_fail(t, ret, &want) != DML_EAGAIN) {
			char msg[160];
			why(t->ssl, msg, sizeof msg);
			return dml__fail(DML_ETLS, "TLS handshake with %s failed: %s", host, msg);
		}
		int rc = dml__wait_fd(t->base.fd, want & DML__EV_IN ? POLLIN : POLLOUT, deadline);
		if (rc)
			return rc == DML_ETIMEDOUT
				? dml__fail(rc, "TLS handshake with %s: no answer in time", host)
				: rc;
	}
}

/* Whether s is a literal IP address (v4 or v6). */
static int is_ip(const char *s)
{
	unsigned char b[16];
	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

int dml__stream_tls(dml__stream **stp, const dml_tls *cfg, const char *host, int64_t deadline)
{
	dml__stream *plain = *stp;
	pthread_once(&bio_once, bio_meth_make);
	if (!bio_meth)
		return DML_ENOMEM;
	tls_stream *t = calloc(1, sizeof *t);
	uint8_t *cbuf = t ? malloc(TLS_SMALL) : NULL;
	SSL *ssl = cbuf ? SSL_new(cfg->ctx) : NULL;
	BIO *bio = ssl ? BIO_new(bio_meth) : NULL;
	if (!bio) {
		SSL_free(ssl);
		free(cbuf);
		free(t);
		ERR_clear_error();
		return DML_ENOMEM;
	}
	t->cbuf = cbuf;
	t->ccap = TLS_SMALL;
	BIO_set_data(bio, t);
	SSL_set_bio(ssl, bio, bio);
	t->base.ops = &tls_ops;
	t->base.fd = plain->fd;
	t->base.flags = 0; /* one thread at a time; a short read proves nothing */
	t->ssl = ssl;
	t->rwant = DML__EV_IN;
	t->wwant = DML__EV_OUT;
	if (cfg->role == DML_TLS_SERVER) {
		SSL_set_accept_state(ssl); /* the handshake runs in the first reads */
	} else {
		if (cfg->server_name)
			host = cfg->server_name;
		int ok = 1;
		if (host && host[0] && is_ip(host))
			ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
		else if (host && host[0])
			ok = SSL_set1_host(ssl, host) && SSL_set_tlsext_host_name(ssl, host);
		if (!ok) {
			SSL_free(ssl);
			free(t->cbuf);
			free(t);
			ERR_clear_error();
			return dml__fail(DML_EINVAL, "TLS: cannot verify the name %.64s", host);
		}
		SSL_set_connect_state(ssl);
		int rc = handshake(t, host && host[0] ? host : "the server", deadline);
		if (rc) {
			SSL_free(ssl);
			free(t->cbuf);
			free(t);
			return rc;
		}
	}
	dml__stream_release(plain);
	*stp = &t->base;
	return 0;
}

/* ---- the configuration ---------------------------------------------- */

static int load_fail(SSL_CTX *ctx, const char *what, const char *path)
{
	char msg[160];
	why(NULL, msg, sizeof msg);
	SSL_CTX_free(ctx);
	return dml__fail(DML_ETLS, "TLS: %s %.128s: %s", what, path, msg);
}

int dml_tls_new_abi(dml_tls **out, int role, const dml_tls_opts *opts, int abi)
{
	dml__detail_clear();
	dml_tls_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_TLS_OPTS, abi);
	if (rc)
		return rc;
	if (!out || (role != DML_TLS_CLIENT && role != DML_TLS_SERVER))
		return DML_EINVAL;
	if (role == DML_TLS_SERVER && (!o.cert_file || !o.key_file))
		return dml__fail(DML_EINVAL, "TLS: a server needs cert_file and key_file");
	if (role == DML_TLS_CLIENT && !o.ca_file)
		return dml__fail(DML_EINVAL, "TLS: a client needs ca_file to verify the server");
	if (!o.cert_file != !o.key_file)
		return dml__fail(DML_EINVAL, "TLS: cert_file and key_file go together");
	SSL_CTX *ctx = SSL_CTX_new(role == DML_TLS_SERVER ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		ERR_clear_error();
		return DML_ENOMEM;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	/* read the socket in large pieces, not a record header at a time */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUF);
	if (o.cert_file && SSL_CTX_use_certificate_chain_file(ctx, o.cert_file) != 1)
		return load_fail(ctx, "cannot load the certificate", o.cert_file);
	if (o.key_file && SSL_CTX_use_PrivateKey_file(ctx, o.key_file, SSL_FILETYPE_PEM) != 1)
		return load_fail(ctx, "cannot load the key", o.key_file);
	if (o.cert_file && SSL_CTX_check_private_key(ctx) != 1)
		return load_fail(ctx, "the key does not match", o.cert_file);
	if (o.ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, o.ca_file, NULL) != 1)
			return load_fail(ctx, "cannot load the CAs", o.ca_file);
		SSL_CTX_set_verify(ctx, role == DML_TLS_SERVER
		                            ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
		                            : SSL_VERIFY_PEER,
		                   NULL);
	}
	dml_tls *t = malloc(sizeof *t);
	if (!t) {
		SSL_CTX_free(ctx);
		return DML_ENOMEM;
	}
	t->ctx = ctx;
	t->role = role;
	t->server_name = NULL;
	if (role == DML_TLS_CLIENT && o.server_name && !(t->server_name = strdup(o.server_name))) {
		SSL_CTX_free(ctx);
		free(t);
		return DML_ENOMEM;
	}
	*out = t;
	return 0;
}

void dml_tls_free(dml_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	free(t->server_name);
	free(t);
}

int dml_tls_available(void) { return 1; }

int dml__tls_role(const dml_tls *t) { return t->role; }

int dml__stream_tls_subject(const dml__stream *st, char *buf, size_t cap)
{
	if (st->ops != &tls_ops || !cap)
		return DML_ENOTFOUND;
	SSL *ssl = ((const tls_stream *)st)->ssl;
	if (!SSL_is_init_finished(ssl) || SSL_get_verify_result(ssl) != X509_V_OK)
		return DML_ENOTFOUND;
	X509 *cert = SSL_get1_peer_certificate(ssl);
	if (!cert)
		return DML_ENOTFOUND;
	BIO *b = BIO_new(BIO_s_mem());
	int rc = DML_ENOMEM;
	if (b && X509_NAME_print_ex(b, X509_get_subject_name(cert), 0,
	                            XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
		char *p;
		long n = BIO_get_mem_data(b, &p);
		if (n >= 0 && (size_t)n < cap) {
			memcpy(buf, p, (size_t)n);
			buf[n] = 0;
			rc = 0;
		} else {
			rc = DML_ETOOBIG;
		}
	}
	BIO_free(b);
	X509_free(cert);
	return rc;
}

#else /* no OpenSSL */

struct dml_tls {
	int role;
};

int dml__stream_tls(dml__stream **st, const dml_tls *cfg, const char *host, int64_t deadline)
{
	(void)st;
	(void)cfg;
	(void)host;
	(void)deadline;
	return DML_ENOTSUP;
}

int dml_tls_new_abi(dml_tls **out, int role, const dml_tls_opts *opts, int abi)
{
	dml__detail_clear();
	(void)out;
	(void)role;
	(void)opts;
	int rc = dml__abi_check(abi);
	if (rc)
		return rc;
	return dml__fail(DML_ENOTSUP, "this libdistml was built without OpenSSL: no TLS");
}

void dml_tls_free(dml_tls *t) { (void)t; }

int dml_tls_available(void) { return 0; }

int dml__tls_role(const dml_tls *t) { return t->role; }

int dml__stream_tls_subject(const dml__stream *st, char *buf, size_t cap)
{
	(void)st;
	(void)buf;
	(void)cap;
	return DML_ENOTFOUND;
}

#endif

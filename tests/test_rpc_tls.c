/*
 * test_rpc_tls.c - the RPC suite (test_rpc.c) over real TLS 1.3: every
 * connection the library makes, server and client side, is wrapped in a
 * TLS stream (the client verifies the server's chain; EC certificates made
 * for the run with the openssl command). The tests that speak plain frames
 * to a raw socket (the hostile-input tests) run too, their bytes relayed
 * through TLS (below), in the plain pass only. Without OpenSSL or the
 * openssl command it says why and skips.
 */
#define RPC_OVER_BUFSTREAM 1
#define RPC_OVER_TLS 1
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "stream.h"

static _Atomic uint64_t bs_streams; /* made so far: the tests check it */
static dml_tls *tls_srv, *tls_cli;
static char tls_dir[64];
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_setup(void)
{
	snprintf(tls_dir, sizeof tls_dir, "/tmp/distml-rpctls-%d-XXXXXX", (int)getpid());
	if (!mkdtemp(tls_dir))
		return;
	char cmd[1024];
	snprintf(cmd, sizeof cmd,
	         "set -e; cd %s; "
	         "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1 2>/dev/null; }; "
	         "key ca.key; openssl req -x509 -new -key ca.key -subj /CN=ca -days 2 -out ca.pem 2>/dev/null; "
	         "key s.key; openssl req -new -key s.key -subj /CN=server -out s.csr 2>/dev/null; "
	         "openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
	         "-out s.pem 2>/dev/null",
	         tls_dir);
	if (system(cmd) != 0)
		return;
	char cert[128], key[128], ca[128];
	snprintf(cert, sizeof cert, "%s/s.pem", tls_dir);
	snprintf(key, sizeof key, "%s/s.key", tls_dir);
	snprintf(ca, sizeof ca, "%s/ca.pem", tls_dir);
	dml_tls_opts so = {.cert_file = cert, .key_file = key}, co = {.ca_file = ca};
	if (dml_tls_new(&tls_srv, DML_TLS_SERVER, &so) || dml_tls_new(&tls_cli, DML_TLS_CLIENT, &co)) {
		dml_tls_free(tls_srv);
		tls_srv = NULL;
	}
	snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir); /* loaded: not needed */
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tls_dir);
}

static int bs_wrap(dml__stream **st, int server)
{
	pthread_once(&tls_once, tls_setup);
	if (!tls_srv)
		return DML_ENOTSUP;
	/* the client's handshake runs now (chain only: addresses vary) */
	int rc = dml__stream_tls(st, server ? tls_srv : tls_cli, NULL,
	                         server ? -1 : dml__deadline(10000));
	if (!rc)
		++bs_streams;
	return rc;
}

/* ---- raw peers over TLS ------------------------------------------------ *
 * The hostile-input tests speak plain frames on a raw socket. Here each raw
 * socket the suite opens (or accepts, as a fake server) is one end of a
 * socketpair whose other end a relay thread joins to a TLS stream on the
 * real connection: the test's bytes reach the server as TLS records, and
 * the server's come back decrypted, with the relay's buffers bounded (so a
 * peer that stops reading still stops the server's writes). An end of
 * stream passes through as a half close; a connection the server ends is
 * delivered, then the socketpair closes. A reset cannot be carried over a
 * socketpair: it arrives as a close (RAW_RESET_IS_CLOSE). */
enum { RELAY_BUF = 64 << 10, RELAY_IDLE_MS = 30000 };

typedef struct relay {
	int sp;          /* our end of the socketpair */
	int tcp;         /* the real connection */
	int server;      /* the TLS role we play */
	uint8_t up[RELAY_BUF], down[RELAY_BUF]; /* test->peer, peer->test */
	size_t up_n, down_n;
} relay;

static pthread_mutex_t relay_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t relay_cv = PTHREAD_COND_INITIALIZER;
static int relays_live;

static void relay_run(relay *r)
{
	dml__stream *st;
	if (dml__stream_socket(&st, r->tcp)) /* closes tcp on failure */
		return;
	if (dml__stream_tls(&st, r->server ? tls_srv : tls_cli, NULL,
	                    r->server ? -1 : dml__deadline(10000))) {
		dml__stream_close(st);
		return;
	}
	int sp_eof = 0, tls_eof = 0, half_closed = 0, peer_hup = 0;
	int64_t last = dml__now_ms();
	for (;;) {
		int moved = 0;
		while (!tls_eof && r->down_n < RELAY_BUF) { /* peer -> buffer */
			ssize_t n = dml__stream_read(st, r->down + r->down_n, RELAY_BUF - r->down_n);
			if (n == DML_EAGAIN)
				break;
			if (n < 0)
				tls_eof = 1;
			else
				r->down_n += (size_t)n, moved = 1;
		}
		if (r->down_n) { /* buffer -> test */
			ssize_t n = send(r->sp, r->down, r->down_n, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				break; /* the test closed its end */
			if (n > 0) {
				memmove(r->down, r->down + n, r->down_n - (size_t)n);
				r->down_n -= (size_t)n;
				moved = 1;
			}
		}
		if (tls_eof && !r->down_n)
			break; /* all the peer said is delivered */
		while (!sp_eof && r->up_n < RELAY_BUF) { /* test -> buffer */
			ssize_t n = recv(r->sp, r->up + r->up_n, RELAY_BUF - r->up_n, MSG_DONTWAIT);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (n <= 0)
				sp_eof = 1;
			else
				r->up_n += (size_t)n, moved = 1;
		}
		int unflushed = 0;
		if (!tls_eof) { /* buffer -> peer */
			struct iovec iov = {r->up, r->up_n}, *ip = &iov;
			int ni = r->up_n ? 1 : 0;
			int rc = dml__stream_write_step(st, &ip, &ni);
			size_t took = r->up_n - (ni ? ip->iov_len : 0);
			if (took) {
				memmove(r->up, r->up + took, r->up_n - took);
				r->up_n -= took;
				moved = 1;
			}
			if (rc == DML_ECONNLOST)
				tls_eof = 1, r->up_n = 0;
			unflushed = rc == DML_EAGAIN;
		}
		if (sp_eof && !r->up_n && !unflushed && !half_closed && !tls_eof) {
			shutdown(r->tcp, SHUT_WR); /* the test's end of stream */
			half_closed = 1;
		}
		if (tls_eof && r->down_n == 0)
			break;
		if (moved) {
			last = dml__now_ms();
			continue;
		}
		if (!tls_eof && r->down_n < RELAY_BUF && dml__stream_pending(st))
			continue;
		struct pollfd p[2] = {{r->sp, 0, 0}, {st->fd, 0, 0}};
		if (!sp_eof && r->up_n < RELAY_BUF)
			p[0].events |= POLLIN;
		if (r->down_n)
			p[0].events |= POLLOUT;
		unsigned asked = 0;
		if (!tls_eof && r->down_n < RELAY_BUF)
			asked |= DML__EV_IN;
		if (!tls_eof && (r->up_n || unflushed))
			asked |= DML__EV_OUT;
		unsigned w = asked ? dml__stream_wants(st, asked) : 0;
		p[1].events = (short)((w & DML__EV_IN ? POLLIN : 0) | (w & DML__EV_OUT ? POLLOUT : 0));
		/* the peer gone (or hung up) and the test not reading: wait for
		 * the test alone, a while */
		int peer_done = tls_eof || peer_hup;
		int64_t left = peer_done ? 2000 : last + RELAY_IDLE_MS - dml__now_ms();
		if (left <= 0 || poll(p, peer_done ? 1 : 2, (int)left) <= 0)
			break; /* bounded: nothing moved for that long */
		if (!peer_done && (p[1].revents & (POLLERR | POLLHUP)) && !(p[1].revents & (POLLIN | POLLOUT)))
			peer_hup = 1; /* reported without being asked: only the test can move now */
	}
	dml__stream_close(st);
}

static void *relay_main(void *arg)
{
	relay *r = arg;
	relay_run(r);
	close(r->sp);
	free(r);
	pthread_mutex_lock(&relay_mu);
	if (--relays_live == 0)
		pthread_cond_broadcast(&relay_cv);
	pthread_mutex_unlock(&relay_mu);
	return NULL;
}

/* The raw socket the test uses in place of fd (a connection to the server
 * under test, or one a fake server accepted). */
static int tls_raw(int fd, int server)
{
	int sv[2];
	relay *r = calloc(1, sizeof *r);
	if (!r || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)) {
		fprintf(stderr, "tls_raw: %s\n", strerror(errno));
		abort();
	}
	r->sp = sv[1];
	r->tcp = fd;
	r->server = server;
	pthread_mutex_lock(&relay_mu);
	relays_live++;
	pthread_mutex_unlock(&relay_mu);
	pthread_t t;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, relay_main, r))
		abort();
	pthread_attr_destroy(&at);
	return sv[0];
}

/* At the end: every relay has ended (bounded by their idle limit). */
static int relays_wait(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += RELAY_IDLE_MS / 1000 + 5;
	pthread_mutex_lock(&relay_mu);
	while (relays_live > 0)
		if (pthread_cond_timedwait(&relay_cv, &relay_mu, &ts))
			break;
	int left = relays_live;
	pthread_mutex_unlock(&relay_mu);
	return left;
}

#define RAW_OVER(fd, server) tls_raw(fd, server)
#define RAW_RESET_IS_CLOSE 1

/* the tests left out are still defined */
#pragma GCC diagnostic ignored "-Wunused-function"
#define main rpc_suite_main
#include "test_rpc.c"
#undef main

int main(void)
{
	pthread_once(&tls_once, tls_setup);
	if (!tls_srv) {
		printf("test_rpc_tls: skipped: %s\n", dml_tls_available()
		       ? "the openssl command could not make certificates"
		       : "this libdistml has no TLS (OpenSSL)");
		return 0;
	}
	int failed = rpc_suite_main();
	int left = relays_wait();
	if (left) {
		fprintf(stderr, "%d raw-socket relays still running\n", left);
		failed++;
	}
	dml_tls_free(tls_cli);
	dml_tls_free(tls_srv);
	return failed;
}

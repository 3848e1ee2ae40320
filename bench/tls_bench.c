/*
 * tls_bench.c - RPC over TLS 1.3 beside the same RPC in plain TCP, and
 * both beside what encryption alone costs, all measured in one run:
 *   1. sequential small calls/s (Arith.Multiply, one in flight);
 *   2. pipelined calls/s, windows of 64 in flight on one connection;
 *   3. a 40 MB float32 argument, MB/s;
 *   4. handshakes/s: dials that complete a TLS handshake (plain dials
 *      beside them);
 * and two baselines for the bulk figure: `openssl speed -evp aes-128-gcm`
 * on 16 KiB blocks (the record size), one core, MB/s; and OpenSSL alone
 * moving the same 40 MB over a TLS 1.3 connection on loopback (blocking
 * sockets, one SSL_write of it all through a 256 KiB buffering BIO,
 * read-ahead, SSL_read into a 1 MiB buffer): TLS here without any RPC. Each figure is the median of ROUNDS rounds, plain and TLS
 * alternating. Certificates (EC P-256) are made for the run with the
 * openssl command in a temporary directory. Everything is on 127.0.0.1;
 * every loop is bounded in count and time. Without OpenSSL it says so and
 * exits 0.
 *
 *     tls_bench [seconds-per-measurement]   (default 0.4)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <distml.h>

#ifdef DML_HAVE_TLS
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#endif

#include "bench.h"

#include "../examples/arith.h"

#define ROUNDS 5
#define MAX_DIALS 20000

static double secs = 0.4;
static char dir[64];

static void die(const char *what, int rc)
{
	fprintf(stderr, "tls_bench: %s: %s (%s)\n", what, dml_strerror(rc), dml_error_detail());
	exit(1);
}

#include "rpc_calls.h" /* handlers and call loops, as rpc_bench */

typedef struct pair {
	dml_rpc_server *srv;
	dml_rpc_client *c;
	pthread_t t;
	char addr[64];
	const dml_tls *ct;
} pair;

static void pair_start(pair *p, const dml_tls *st, const dml_tls *ct)
{
	dml_rpc_server_opts so = {.tls = st};
	int rc = dml_rpc_server_new(&p->srv, &so);
	if (!rc)
		rc = dml_rpc_server_register(p->srv, &arith_multiply, h_multiply, NULL);
	if (!rc)
		rc = dml_rpc_server_register(p->srv, &arith_sum, h_sum, NULL);
	if (!rc)
		rc = dml_rpc_server_listen(p->srv, "127.0.0.1:0");
	if (rc)
		die("server", rc);
	dml_rpc_server_addr(p->srv, 0, p->addr, sizeof p->addr);
	pthread_create(&p->t, NULL, run_server, p->srv);
	p->ct = ct;
	dml_rpc_client_opts co = {.tls = ct};
	if ((rc = dml_rpc_dial(&p->c, p->addr, &co)))
		die("dial", rc);
}

static void pair_end(pair *p)
{
	dml_rpc_free(p->c);
	dml_rpc_server_stop(p->srv);
	pthread_join(p->t, NULL);
	dml_rpc_server_free(p->srv);
}

/* Dials (each with its handshake and a first call) per second. */
static double dials(const pair *p)
{
	long n = 0;
	double t0 = now(), t;
	dml_rpc_client_opts co = {.tls = p->ct};
	do {
		dml_rpc_client *c;
		int rc = dml_rpc_dial(&c, p->addr, &co);
		Args a = {2, 3};
		Reply r;
		if (!rc)
			rc = dml_rpc_call(c, &arith_multiply, &a, &r, 10000);
		if (rc)
			die("dial", rc);
		dml_rpc_free(c);
		n++;
		t = now() - t0;
	} while (t < secs && n < MAX_DIALS);
	return n / t;
}

/* openssl speed's AES-128-GCM rate on 16 KiB blocks, MB/s (0: unknown). */
static double aes_gcm_mb_per_s(void)
{
	FILE *f = popen("openssl speed -evp aes-128-gcm -bytes 16384 -seconds 1 2>/dev/null", "r");
	if (!f)
		return 0;
	char line[512];
	double kbs = 0;
	while (fgets(line, sizeof line, f)) {
		char name[64];
		double v;
		/* the table's last line: "AES-128-GCM  3123456.78k" */
		if (sscanf(line, "%63s %lfk", name, &v) == 2 && !strcmp(name, "AES-128-GCM"))
			kbs = v;
	}
	pclose(f);
	return kbs / 1000; /* openssl's "k" is 1000 bytes */
}

#ifdef DML_HAVE_TLS
/* ---- OpenSSL alone: 40 MB one way, an 8-byte answer back ------------- */

typedef struct raw_tls {
	SSL_CTX *sctx, *cctx;
	int lfd, port;
	uint8_t *rbuf;
} raw_tls;

static void *raw_tls_server(void *arg)
{
	raw_tls *r = arg;
	for (;;) {
		int fd = accept(r->lfd, NULL, NULL);
		if (fd < 0)
			return NULL;
		SSL *ssl = SSL_new(r->sctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) == 1) {
			uint64_t want = 0, got = 0;
			size_t n;
			int stop = 0;
			if (SSL_read_ex(ssl, &want, 8, &n) <= 0 || !want)
				stop = 1; /* 0: the end */
			while (!stop && got < want && SSL_read_ex(ssl, r->rbuf, 1 << 20, &n) > 0)
				got += n;
			if (!stop)
				SSL_write_ex(ssl, &got, 8, &n);
			SSL_shutdown(ssl);
			SSL_free(ssl);
			close(fd);
			if (stop)
				return NULL;
		} else {
			SSL_free(ssl);
			close(fd);
			return NULL;
		}
	}
}

static SSL *raw_tls_dial(raw_tls *r, int *fdp)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a))
		die("raw tls connect", DML_ESYS);
	SSL *ssl = SSL_new(r->cctx);
	/* records gathered in a 256 KiB buffer, as libdistml's stream does */
	BIO *sock = BIO_new_socket(fd, BIO_NOCLOSE), *buf = BIO_new(BIO_f_buffer());
	BIO_set_write_buffer_size(buf, 256 * 1024);
	BIO_push(buf, sock);
	SSL_set_bio(ssl, buf, buf);
	if (SSL_connect(ssl) != 1)
		die("raw tls handshake", DML_ETLS);
	*fdp = fd;
	return ssl;
}

/* MB/s of 40 MB sent over one TLS connection, OpenSSL alone. */
static double raw_tls_bulk(raw_tls *r, const float *v)
{
	int n = -1;
	double t0 = 0, t = 0;
	do {
		int fd;
		SSL *ssl = raw_tls_dial(r, &fd);
		if (n == 0)
			t0 = now();
		uint64_t len = BULK_FLOATS * sizeof(float), got = 0;
		size_t k;
		if (SSL_write_ex(ssl, &len, 8, &k) <= 0 || SSL_write_ex(ssl, v, len, &k) <= 0 ||
		    BIO_flush(SSL_get_wbio(ssl)) <= 0 ||
		    SSL_read_ex(ssl, &got, 8, &k) <= 0 || got != len)
			die("raw tls bulk", DML_ETLS);
		n++;
		t = now() - t0;
		SSL_shutdown(ssl);
		SSL_free(ssl);
		close(fd);
	} while ((t < secs || n < 3) && n < 1000);
	return n * (BULK_FLOATS * 4.0 / 1e6) / t;
}

static void raw_tls_start(raw_tls *r, pthread_t *t, const char *cert, const char *key,
                          const char *ca)
{
	r->sctx = SSL_CTX_new(TLS_server_method());
	r->cctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(r->sctx, TLS1_3_VERSION);
	SSL_CTX_set_min_proto_version(r->cctx, TLS1_3_VERSION);
	if (SSL_CTX_use_certificate_chain_file(r->sctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(r->sctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(r->cctx, ca, NULL) != 1)
		die("raw tls configuration", DML_ETLS);
	SSL_CTX_set_verify(r->cctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_read_ahead(r->sctx, 1); /* the socket read in large pieces */
	SSL_CTX_set_default_read_buffer_len(r->sctx, 128 * 1024);
	r->rbuf = malloc(1 << 20);
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof a;
	if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&a, sizeof a) || listen(r->lfd, 8) ||
	    getsockname(r->lfd, (struct sockaddr *)&a, &alen))
		die("raw tls listen", DML_ESYS);
	r->port = ntohs(a.sin_port);
	pthread_create(t, NULL, raw_tls_server, r);
}

static void raw_tls_end(raw_tls *r, pthread_t t)
{
	int fd;
	SSL *ssl = raw_tls_dial(r, &fd); /* a length of 0 ends the server */
	uint64_t zero = 0;
	size_t k;
	SSL_write_ex(ssl, &zero, 8, &k);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	pthread_join(t, NULL);
	close(r->lfd);
	SSL_CTX_free(r->sctx);
	SSL_CTX_free(r->cctx);
	free(r->rbuf);
}
#endif

static int make_certs(void)
{
	snprintf(dir, sizeof dir, "/tmp/distml-tlsbench-%d-XXXXXX", (int)getpid());
	if (!mkdtemp(dir))
		return -1;
	char cmd[2048];
	snprintf(cmd, sizeof cmd,
	         "set -e; cd %s; "
	         "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1 2>/dev/null; }; "
	         "key ca.key; openssl req -x509 -new -key ca.key -subj /CN=ca -days 2 -out ca.pem 2>/dev/null; "
	         "key server.key; openssl req -new -key server.key -subj /CN=server -out server.csr 2>/dev/null; "
	         "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext; "
	         "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
	         "-extfile server.ext -out server.pem 2>/dev/null",
	         dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void remove_certs(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "tls_bench: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		secs = atof(argv[1]);
	if (secs <= 0 || secs > 10)
		secs = 0.4;
	signal(SIGPIPE, SIG_IGN); /* the OpenSSL baseline's shutdowns may meet a closed peer */
	if (!dml_tls_available()) {
		printf("# tls_bench: skipped: this libdistml was built without OpenSSL\n");
		return 0;
	}
	if (make_certs()) {
		printf("# tls_bench: skipped: the openssl command could not make certificates\n");
		return 0;
	}
	char cert[128], key[128], ca[128];
	snprintf(cert, sizeof cert, "%s/server.pem", dir);
	snprintf(key, sizeof key, "%s/server.key", dir);
	snprintf(ca, sizeof ca, "%s/ca.pem", dir);
	dml_tls *st, *ct;
	dml_tls_opts so = {.cert_file = cert, .key_file = key};
	dml_tls_opts co = {.ca_file = ca};
	int rc = dml_tls_new(&st, DML_TLS_SERVER, &so);
	if (rc || (rc = dml_tls_new(&ct, DML_TLS_CLIENT, &co)))
		die("tls configuration", rc);

	pair plain, tls;
	pair_start(&plain, NULL, NULL);
	pair_start(&tls, st, ct);
	float *v = malloc(BULK_FLOATS * sizeof *v);
	for (int i = 0; i < BULK_FLOATS; i++)
		v[i] = (float)i;
	double ps[ROUNDS], ts[ROUNDS], pp[ROUNDS], tp[ROUNDS], pb[ROUNDS], tb[ROUNDS];
	double pd[ROUNDS], td[ROUNDS], ob[ROUNDS];
#ifdef DML_HAVE_TLS
	raw_tls raw;
	pthread_t raw_t;
	raw_tls_start(&raw, &raw_t, cert, key, ca);
#endif
	dml_seq(plain.c); /* warm up */
	dml_seq(tls.c);
	for (int i = 0; i < ROUNDS; i++) {
		ps[i] = dml_seq(plain.c);
		ts[i] = dml_seq(tls.c);
		pp[i] = dml_pipe(plain.c);
		tp[i] = dml_pipe(tls.c);
		pb[i] = dml_bulk(plain.c, v);
		tb[i] = dml_bulk(tls.c, v);
#ifdef DML_HAVE_TLS
		ob[i] = raw_tls_bulk(&raw, v);
#else
		ob[i] = 0;
#endif
		pd[i] = dials(&plain);
		td[i] = dials(&tls);
	}
	double aes = aes_gcm_mb_per_s();
	double mps = median(ps, ROUNDS), mts = median(ts, ROUNDS);
	double mpp = median(pp, ROUNDS), mtp = median(tp, ROUNDS);
	double mpb = median(pb, ROUNDS), mtb = median(tb, ROUNDS);
	double mpd = median(pd, ROUNDS), mtd = median(td, ROUNDS), mob = median(ob, ROUNDS);
#ifdef DML_HAVE_TLS
	raw_tls_end(&raw, raw_t);
#endif
	printf("# RPC over TLS 1.3 (AES-GCM, EC P-256) vs plain, loopback, median of %d rounds of %.1f s\n",
	       ROUNDS, secs);
	printf("%-40s %14s %14s %7s %7s\n", "figure", "TLS", "plain", "ratio", "target");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "1. sequential calls/s", mts, mps, mts / mps, "");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "2. pipelined calls/s (64 in flight)", mtp, mpp, mtp / mpp, ">=0.5");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "3. 40 MB float32 argument, MB/s", mtb, mpb, mtb / mpb, ">=0.5");
	printf("%-40s %14.0f %14.0f %7.2f %7s\n", "4. dials with a first call, per s", mtd, mpd, mtd / mpd, "");
	printf("%-40s %14.0f\n", "openssl speed aes-128-gcm 16 KiB, MB/s", aes);
	printf("%-40s %14.0f %14.0f %7.2f\n", "OpenSSL alone, 40 MB over TLS, MB/s", mob, mpb, mob / mpb);
	printf("# bulk over TLS: %.2f of AES-128-GCM on one core, %.2f of OpenSSL alone over loopback\n",
	       aes > 0 ? mtb / aes : 0, mob > 0 ? mtb / mob : 0);
	printf("RESULT tls seq_calls_per_s=%.0f pipelined_calls_per_s=%.0f bulk_MB_per_s=%.0f "
	       "handshakes_per_s=%.0f aes_gcm_MB_per_s=%.0f openssl_bulk_MB_per_s=%.0f\n",
	       mts, mtp, mtb, mtd, aes, mob);
	printf("RESULT tlsplain seq_calls_per_s=%.0f pipelined_calls_per_s=%.0f bulk_MB_per_s=%.0f "
	       "dials_per_s=%.0f\n", mps, mpp, mpb, mpd);
	pair_end(&tls);
	pair_end(&plain);
	dml_tls_free(ct);
	dml_tls_free(st);
	free(v);
	remove_certs();
	return 0;
}

/*
 * test_rpc_tls.c - the RPC suite (test_rpc.c) over real TLS 1.3: every
 * connection the library makes, server and client side, is wrapped in a
 * TLS stream (the client verifies the server's chain; EC certificates made
 * for the run with the openssl command). The tests that speak plain frames
 * to a raw socket are left out, as over the buffering stream. Without
 * OpenSSL or the openssl command it says why and skips.
 */
#define RPC_OVER_BUFSTREAM 1
#define RPC_OVER_TLS 1
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
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
	dml_tls_free(tls_cli);
	dml_tls_free(tls_srv);
	return failed;
}

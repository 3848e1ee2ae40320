/*
 * test_tls.c - RPC over TLS (distml/tls.h): calls one at a time, pipelined
 * and bulk; a server the client cannot verify (another CA, another name);
 * an expired certificate;
 * a plain client to a TLS server and a TLS client to a plain server (clear
 * errors, no hang); mutual TLS with and without a client certificate; bad
 * configurations. Certificates (EC P-256) are made once per run with the
 * openssl command in a fresh directory. Skipped, saying why, in a build
 * without OpenSSL or without the command.
 */
#include "testutil.h"

#include "../examples/arith.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char dir[64];

static const char *path(const char *name)
{
	static char buf[8][128];
	static int i;
	char *p = buf[i++ % 8];
	snprintf(p, 128, "%s/%s", dir, name);
	return p;
}

static int h_multiply(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	((Reply *)r)->C = ((const Args *)a)->A * ((const Args *)a)->B;
	return 0;
}

typedef struct blob_msg { dml_bytes b; } blob_msg;
static const dml_field blob_f[] = {DML_FIELD(blob_msg, b, DML_BYTES)};
static const dml_type blob_t = DML_TYPE(blob_msg, blob_f);
static const dml_rpc_method m_blob = {"Test.Blob", &blob_t, &blob_t};

static int h_blob(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	((blob_msg *)r)->b = ((const blob_msg *)a)->b; /* echoed */
	return 0;
}

/* Makes the run's certificates: a CA, a server (127.0.0.1, localhost) and
 * a client signed by it, and another CA with a server of its own. */
static int make_certs(void)
{
	snprintf(dir, sizeof dir, "/tmp/distml-tls-%d-XXXXXX", (int)getpid());
	if (!mkdtemp(dir))
		return -1;
	char cmd[4096];
	snprintf(cmd, sizeof cmd,
	         "set -e; cd %s; "
	         "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1 2>/dev/null; }; "
	         "ca() { key $1.key; openssl req -x509 -new -key $1.key -subj /CN=$1 -days 2 -out $1.pem 2>/dev/null; }; "
	         "leaf() { key $1.key; openssl req -new -key $1.key -subj /CN=$1 -out $1.csr 2>/dev/null; "
	         "  printf 'subjectAltName=%%s\\n' \"$3\" > $1.ext; "
	         "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 2 "
	         "  -extfile $1.ext -out $1.pem 2>/dev/null; }; "
	         "ca ca; ca other; "
	         "leaf server ca 'IP:127.0.0.1,DNS:localhost'; "
	         "leaf client ca 'DNS:worker1'; "
	         "leaf stranger other 'IP:127.0.0.1'; "
	         /* valid on 1 January 2020 only: signed with openssl ca, whose
	          * dates may lie in the past */
	         "printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\nnew_certs_dir=.\\n"
	         "serial=serial\\ndefault_md=sha256\\npolicy=p\\n[p]\\ncommonName=supplied\\n' > ca.cnf; "
	         ": > index.txt; echo 01 > serial; "
	         "key expired.key; openssl req -new -key expired.key -subj /CN=expired -out expired.csr 2>/dev/null; "
	         "printf 'subjectAltName=IP:127.0.0.1\\n' > expired.ext; "
	         "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr "
	         "-out expired.pem -startdate 20200101000000Z -enddate 20200102000000Z "
	         "-extfile expired.ext >/dev/null 2>&1",
	         dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int setup(void **state)
{
	(void)state;
	if (!dml_tls_available()) {
		fprintf(stderr, "test_tls: this build has no TLS (OpenSSL's headers were "
		                "missing): skipped\n");
		return 0;
	}
	if (system("command -v openssl >/dev/null 2>&1") != 0) {
		fprintf(stderr, "test_tls: no openssl command to make certificates (Debian "
		                "package openssl): skipped\n");
		return 0;
	}
	if (make_certs()) {
		fprintf(stderr, "test_tls: making certificates failed\n");
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (dir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		return system(cmd) == 0 ? 0 : -1;
	}
	return 0;
}

#define NEED_TLS()                                                               \
	do {                                                                     \
		if (!dir[0])                                                     \
			skip();                                                  \
	} while (0)

static dml_tls *tls_new(int role, const char *cert, const char *ca)
{
	char c[64], k[64];
	dml_tls_opts o = {0};
	if (cert) {
		snprintf(c, sizeof c, "%s.pem", cert);
		snprintf(k, sizeof k, "%s.key", cert);
		o.cert_file = path(c);
		o.key_file = path(k);
	}
	if (ca) {
		snprintf(c, sizeof c, "%s.pem", ca);
		o.ca_file = path(c);
	}
	dml_tls *t = NULL;
	assert_int_equal(dml_tls_new(&t, role, &o), 0);
	return t;
}

/* A TLS server (tls may be NULL: plain) with two run threads. */
static void serve(fixture *f, const dml_tls *tls)
{
	memset(f, 0, sizeof *f);
	dml_rpc_server_opts o = {.tls = tls};
	assert_int_equal(dml_rpc_server_new(&f->srv, &o), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &arith_multiply, h_multiply, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_blob, h_blob, NULL), 0);
	assert_int_equal(dml_rpc_server_listen(f->srv, "127.0.0.1:0"), 0);
	fixture_start(f, 2);
}

static int dial(dml_rpc_client **c, const char *addr, const dml_tls *tls)
{
	dml_rpc_client_opts o = {.tls = tls, .dial_timeout = 10000};
	return dml_rpc_dial(c, addr, &o);
}

static int mul(dml_rpc_client *c, int64_t a, int64_t b, int64_t *out)
{
	Args x = {a, b};
	Reply r = {0};
	int rc = dml_rpc_call(c, &arith_multiply, &x, &r, 10000);
	*out = r.C;
	return rc;
}

static void test_tls_calls(void **state)
{
	(void)state;
	NEED_TLS();
	dml_tls *st = tls_new(DML_TLS_SERVER, "server", NULL);
	dml_tls *ct = tls_new(DML_TLS_CLIENT, NULL, "ca");
	fixture f;
	serve(&f, st);
	dml_rpc_client *c;
	assert_int_equal(dial(&c, f.addr, ct), 0);
	int64_t v;
	for (int i = 0; i < 100; i++) { /* one at a time */
		assert_int_equal(mul(c, i, 7, &v), 0);
		assert_int_equal(v, 7 * i);
	}
	enum { N = 500 }; /* pipelined */
	static dml_rpc_pending *k[N];
	static Args a[N];
	static Reply r[N];
	for (int i = 0; i < N; i++) {
		a[i] = (Args){i, 3};
		assert_int_equal(dml_rpc_start(&k[i], c, &arith_multiply, &a[i], &r[i], 10000), 0);
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(dml_rpc_pending_wait(k[i]), 0);
		assert_int_equal(r[i].C, 3 * i);
		dml_rpc_pending_free(k[i]);
	}
	/* bulk: 4 MB each way, many records, the socket full meanwhile */
	size_t n = 4u << 20;
	uint8_t *in = malloc(n), *out = malloc(n);
	assert_non_null(in);
	assert_non_null(out);
	for (size_t i = 0; i < n; i++)
		in[i] = (uint8_t)(i * 131 + 7);
	blob_msg q = {{in, n, 0}}, p = {{out, 0, n}};
	assert_int_equal(dml_rpc_call(c, &m_blob, &q, &p, 30000), 0);
	assert_int_equal(p.b.n, n);
	assert_memory_equal(out, in, n);
	free(in);
	free(out);
	/* a client by name: localhost is in the certificate too */
	dml_rpc_client *c2;
	char byname[64];
	snprintf(byname, sizeof byname, "localhost:%d", dml_rpc_server_port(f.srv, 0));
	int rc = dial(&c2, byname, ct);
	if (rc != DML_ECONNREFUSED) { /* localhost may be ::1 only */
		assert_int_equal(rc, 0);
		assert_int_equal(mul(c2, 6, 7, &v), 0);
		assert_int_equal(v, 42);
		dml_rpc_free(c2);
	}
	dml_rpc_free(c);
	fixture_stop(&f);
	dml_tls_free(ct);
	dml_tls_free(st);
}

static void test_tls_refused(void **state)
{
	(void)state;
	NEED_TLS();
	dml_tls *st = tls_new(DML_TLS_SERVER, "server", NULL);
	dml_tls *other = tls_new(DML_TLS_CLIENT, NULL, "other");
	fixture f;
	serve(&f, st);
	dml_rpc_client *c = NULL;
	/* a server whose CA the client does not trust */
	assert_int_equal(dial(&c, f.addr, other), DML_ETLS);
	assert_non_null(strstr(dml_error_detail(), "certificate"));
	/* a certificate for another name */
	dml_tls_opts o = {.ca_file = path("ca.pem"), .server_name = "db.example"};
	dml_tls *named;
	assert_int_equal(dml_tls_new(&named, DML_TLS_CLIENT, &o), 0);
	assert_int_equal(dial(&c, f.addr, named), DML_ETLS);
	assert_non_null(strstr(dml_error_detail(), "certificate"));
	fixture_stop(&f);
	/* a certificate that has expired */
	dml_tls *old = tls_new(DML_TLS_SERVER, "expired", NULL);
	dml_tls *ct0 = tls_new(DML_TLS_CLIENT, NULL, "ca");
	serve(&f, old);
	assert_int_equal(dial(&c, f.addr, ct0), DML_ETLS);
	assert_non_null(strstr(dml_error_detail(), "expired"));
	fixture_stop(&f);
	dml_tls_free(ct0);
	dml_tls_free(old);
	serve(&f, st);
	/* a plain client to the TLS server: its call fails, it does not hang */
	assert_int_equal(dial(&c, f.addr, NULL), 0);
	int64_t v;
	int rc = mul(c, 2, 3, &v);
	assert_true(rc == DML_ECONNLOST || rc == DML_EPROTO);
	dml_rpc_free(c);
	fixture_stop(&f);
	/* a TLS client to a plain server: a clear error at the dial */
	dml_tls *ct = tls_new(DML_TLS_CLIENT, NULL, "ca");
	serve(&f, NULL);
	assert_int_equal(dial(&c, f.addr, ct), DML_ETLS);
	fixture_stop(&f);
	dml_tls_free(ct);
	dml_tls_free(named);
	dml_tls_free(other);
	dml_tls_free(st);
}

static void test_tls_mutual(void **state)
{
	(void)state;
	NEED_TLS();
	dml_tls *st = tls_new(DML_TLS_SERVER, "server", "ca"); /* client certs required */
	dml_tls *with = tls_new(DML_TLS_CLIENT, "client", "ca");
	dml_tls *without = tls_new(DML_TLS_CLIENT, NULL, "ca");
	dml_tls *stranger = tls_new(DML_TLS_CLIENT, "stranger", "ca");
	fixture f;
	serve(&f, st);
	dml_rpc_client *c;
	int64_t v;
	assert_int_equal(dial(&c, f.addr, with), 0);
	assert_int_equal(mul(c, 6, 7, &v), 0);
	assert_int_equal(v, 42);
	dml_rpc_free(c);
	/* TLS 1.3: the server judges the client's certificate after the
	 * client's handshake is done, so the refusal comes at the first call
	 * (or at the dial, if the alert is quick) */
	dml_tls *bad[] = {without, stranger};
	for (int i = 0; i < 2; i++) {
		int rc = dial(&c, f.addr, bad[i]);
		if (rc == 0) {
			rc = mul(c, 6, 7, &v);
			dml_rpc_free(c);
		}
		assert_true(rc == DML_ECONNLOST || rc == DML_ETLS);
	}
	fixture_stop(&f);
	dml_tls_free(stranger);
	dml_tls_free(without);
	dml_tls_free(with);
	dml_tls_free(st);
}

/* Test.Who: the caller's identity and how it was established. */
static int h_who(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	(void)u;
	static _Thread_local char buf[DML_RPC_MAX_IDENTITY + 8];
	dml_rpc_auth au;
	const char *id = dml_rpc_ctx_identity(ctx, &au);
	snprintf(buf, sizeof buf, "%d %s", (int)au, id);
	((blob_msg *)r)->b = (dml_bytes){buf, strlen(buf), 0};
	return 0;
}

static const dml_rpc_method m_who = {"Test.Who", NULL, &blob_t};

/* Only CN=client may call Test.Blob. */
static int only_client(const dml_rpc_peer *p, const char *method, void *user)
{
	(void)user;
	return method && !strcmp(method, "Test.Blob") && strcmp(p->identity, "CN=client");
}

/* With mutual TLS a connection's identity is its certificate's subject,
 * which the authorize hook sees; a TLS client without a certificate (to a
 * server that does not require one) is its address. */
static void test_tls_identity(void **state)
{
	(void)state;
	NEED_TLS();
	dml_tls *st = tls_new(DML_TLS_SERVER, "server", "ca");
	dml_tls *plain_srv = tls_new(DML_TLS_SERVER, "server", NULL);
	dml_tls *with = tls_new(DML_TLS_CLIENT, "client", "ca");
	dml_tls *without = tls_new(DML_TLS_CLIENT, NULL, "ca");
	const dml_tls *srv[2] = {st, plain_srv};
	const char *want[2] = {"1 CN=client", "0 127.0.0.1"};
	for (int i = 0; i < 2; i++) {
		fixture f;
		memset(&f, 0, sizeof f);
		dml_rpc_server_opts o = {.tls = srv[i], .authorize = only_client};
		assert_int_equal(dml_rpc_server_new(&f.srv, &o), 0);
		assert_int_equal(dml_rpc_server_register(f.srv, &m_who, h_who, NULL), 0);
		assert_int_equal(dml_rpc_server_register(f.srv, &m_blob, h_blob, NULL), 0);
		assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
		fixture_start(&f, 1);
		dml_rpc_client *c;
		assert_int_equal(dial(&c, f.addr, i ? without : with), 0);
		char buf[300];
		blob_msg r = {{buf, 0, sizeof buf}};
		assert_int_equal(dml_rpc_call(c, &m_who, NULL, &r, 10000), 0);
		assert_true(r.b.n < sizeof buf);
		buf[r.b.n] = 0;
		assert_string_equal(buf, want[i]);
		blob_msg q = {{"x", 1, 0}};
		r.b.n = 0;
		assert_int_equal(dml_rpc_call(c, &m_blob, &q, &r, 10000), i ? DML_EPERM : 0);
		dml_rpc_free(c);
		fixture_stop(&f);
	}
	dml_tls_free(without);
	dml_tls_free(with);
	dml_tls_free(plain_srv);
	dml_tls_free(st);
}

static void test_tls_config_errors(void **state)
{
	(void)state;
	NEED_TLS();
	dml_tls *t = NULL;
	dml_tls_opts o = {0};
	assert_int_equal(dml_tls_new(&t, DML_TLS_SERVER, &o), DML_EINVAL); /* no certificate */
	assert_int_equal(dml_tls_new(&t, DML_TLS_CLIENT, &o), DML_EINVAL); /* no CA */
	assert_int_equal(dml_tls_new(&t, 7, &o), DML_EINVAL);
	o.cert_file = path("missing.pem");
	o.key_file = path("server.key");
	assert_int_equal(dml_tls_new(&t, DML_TLS_SERVER, &o), DML_ETLS);
	assert_non_null(strstr(dml_error_detail(), "missing.pem"));
	o.cert_file = path("server.pem");
	o.key_file = path("client.key"); /* another certificate's key */
	assert_int_equal(dml_tls_new(&t, DML_TLS_SERVER, &o), DML_ETLS);
	assert_null(t);
	/* a configuration of the other role */
	dml_tls *ct = tls_new(DML_TLS_CLIENT, NULL, "ca");
	dml_rpc_server *s;
	dml_rpc_server_opts so = {.tls = ct};
	assert_int_equal(dml_rpc_server_new(&s, &so), DML_EINVAL);
	dml_tls *st = tls_new(DML_TLS_SERVER, "server", NULL);
	dml_rpc_client *c;
	assert_int_equal(dial(&c, "127.0.0.1:1", st), DML_EINVAL);
	dml_tls_free(st);
	dml_tls_free(ct);
	dml_tls_free(NULL);
}

/* A build without OpenSSL: the calls exist and say so. */
static void test_tls_absent(void **state)
{
	(void)state;
	if (dml_tls_available())
		skip();
	dml_tls *t = NULL;
	dml_tls_opts o = {.ca_file = "ca.pem"};
	assert_int_equal(dml_tls_new(&t, DML_TLS_CLIENT, &o), DML_ENOTSUP);
	assert_null(t);
	assert_non_null(strstr(dml_error_detail(), "OpenSSL"));
	dml_tls_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls_absent),
		cmocka_unit_test(test_tls_calls),
		cmocka_unit_test(test_tls_refused),
		cmocka_unit_test(test_tls_mutual),
		cmocka_unit_test(test_tls_identity),
		cmocka_unit_test(test_tls_config_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

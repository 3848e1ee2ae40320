/* test_rpc.c - the RPC layer end to end over real sockets on 127.0.0.1. */
#define _GNU_SOURCE
#include "testutil.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../examples/arith.h"
#include "internal.h"
#include "frame.h"

/* ---- the test service --------------------------------------------- */

typedef struct echo_msg { dml_str s; } echo_msg;
static const dml_field echo_f[] = {DML_FIELD(echo_msg, s, DML_STR)};
static const dml_type echo_t = DML_TYPE(echo_msg, echo_f);

typedef struct sum_args { dml_f32s v; } sum_args;
typedef struct sum_reply { double sum; int64_t n; } sum_reply;
static const dml_field sum_args_f[] = {DML_FIELD(sum_args, v, DML_F32S)};
static const dml_field sum_reply_f[] = {DML_FIELD(sum_reply, sum, DML_F64),
                                        DML_FIELD(sum_reply, n, DML_I64)};
static const dml_type sum_args_t = DML_TYPE(sum_args, sum_args_f);
static const dml_type sum_reply_t = DML_TYPE(sum_reply, sum_reply_f);

typedef struct scale_args { float k; dml_f32s v; } scale_args;
typedef struct scale_reply { int64_t n; dml_f32s v; } scale_reply;
static const dml_field scale_args_f[] = {DML_FIELD(scale_args, k, DML_F32),
                                         DML_FIELD(scale_args, v, DML_F32S)};
static const dml_field scale_reply_f[] = {DML_FIELD(scale_reply, n, DML_I64),
                                          DML_FIELD(scale_reply, v, DML_F32S)};
static const dml_type scale_args_t = DML_TYPE(scale_args, scale_args_f);
static const dml_type scale_reply_t = DML_TYPE(scale_reply, scale_reply_f);

typedef struct wrong_reply { double C; } wrong_reply;
static const dml_field wrong_f[] = {DML_FIELD(wrong_reply, C, DML_F64)};
static const dml_type wrong_t = DML_TYPE(wrong_reply, wrong_f);

typedef struct mixed_args { int64_t na, nb, nd; } mixed_args;
typedef struct mixed_reply { dml_f32s a; dml_bytes b; dml_f64s d; } mixed_reply;
static const dml_field mixed_args_f[] = {DML_FIELD(mixed_args, na, DML_I64),
                                         DML_FIELD(mixed_args, nb, DML_I64),
                                         DML_FIELD(mixed_args, nd, DML_I64)};
static const dml_field mixed_reply_f[] = {DML_FIELD(mixed_reply, a, DML_F32S),
                                          DML_FIELD(mixed_reply, b, DML_BYTES),
                                          DML_FIELD(mixed_reply, d, DML_F64S)};
static const dml_type mixed_args_t = DML_TYPE(mixed_args, mixed_args_f);
static const dml_type mixed_reply_t = DML_TYPE(mixed_reply, mixed_reply_f);
static const dml_rpc_method m_mixed = {"Test.Mixed", &mixed_args_t, &mixed_reply_t};
enum { MIX_MAX = 100000 };
static float mix_a[MIX_MAX];
static uint8_t mix_b[MIX_MAX];
static double mix_d[MIX_MAX];

static const dml_rpc_method m_echo = {"Test.Echo", &echo_t, &echo_t};
static const dml_rpc_method m_sum = {"Test.Sum", &sum_args_t, &sum_reply_t};
static const dml_rpc_method m_scale = {"Test.Scale", &scale_args_t, &scale_reply_t};
static const dml_rpc_method m_gate = {"Test.Gate", NULL, NULL};
static const dml_rpc_method m_ctl = {"Test.Control", NULL, NULL};
static const dml_rpc_method m_fail = {"Test.Fail", NULL, NULL};
static const dml_rpc_method m_nope = {"Nope.Method", NULL, NULL};
static const dml_rpc_method m_wrong = {"Arith.Multiply", &args_type, &wrong_t};
static const dml_rpc_method m_sum_as_mul = {"Arith.Multiply", &sum_args_t, &reply_type};

static gate the_gate;

static int h_multiply(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	((Reply *)r)->C = ((const Args *)a)->A * ((const Args *)a)->B;
	return 0;
}

static int h_divide(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)u;
	const Args *x = a;
	if (x->B == 0)
		return dml_rpc_ctx_errorf(ctx, "divide by zero");
	((Quotient *)r)->Quo = x->A / x->B;
	((Quotient *)r)->Rem = x->A % x->B;
	return 0;
}

static int h_echo(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	((echo_msg *)r)->s = ((const echo_msg *)a)->s;
	return 0;
}

static int h_sum(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	const sum_args *x = a;
	double s = 0;
	for (size_t i = 0; i < x->v.n; i++)
		s += x->v.data[i];
	((sum_reply *)r)->sum = s;
	((sum_reply *)r)->n = (int64_t)x->v.n;
	return 0;
}

static int h_scale(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	const scale_args *x = a;
	for (size_t i = 0; i < x->v.n; i++) /* in place: views may be written */
		x->v.data[i] *= x->k;
	((scale_reply *)r)->n = (int64_t)x->v.n;
	((scale_reply *)r)->v = x->v;
	return 0;
}

static int h_mixed(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)u;
	const mixed_args *x = a;
	if (x->na > MIX_MAX || x->nb > MIX_MAX || x->nd > MIX_MAX)
		return dml_rpc_ctx_errorf(ctx, "too many");
	mixed_reply *y = r;
	y->a = (dml_f32s){mix_a, (size_t)x->na, 0};
	y->b = (dml_bytes){mix_b, (size_t)x->nb, 0};
	y->d = (dml_f64s){mix_d, (size_t)x->nd, 0};
	return 0;
}

static int h_gate(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	(void)r;
	gate_pass(u);
	return 0;
}

static int h_ctl(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	(void)r;
	(void)u;
	return dml_rpc_ctx_errorf(ctx, "bad\r\n\x1b[31mred\\");
}

static int h_fail(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	(void)r;
	(void)u;
	return DML_EIO;
}

static const dml_rpc_method m_peer = {"Conn.Peer", NULL, &echo_t};

static int h_peer(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	(void)u;
	static _Thread_local char buf[64];
	echo_msg *out = r;
	char tiny[4];
	if (dml_rpc_ctx_peer(ctx, tiny, sizeof tiny) != DML_ETOOBIG || tiny[0])
		return DML_EIO;
	int rc = dml_rpc_ctx_peer(ctx, buf, sizeof buf);
	out->s = (dml_str){buf, strlen(buf), 0};
	return rc;
}

static void serve(fixture *f, const char *addr, const dml_rpc_server_opts *o,
                  int threads)
{
	memset(f, 0, sizeof *f);
	assert_int_equal(dml_rpc_server_new(&f->srv, o), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &arith_multiply, h_multiply, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &arith_divide, h_divide, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_echo, h_echo, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_sum, h_sum, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_scale, h_scale, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_gate, h_gate, &the_gate), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_mixed, h_mixed, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_fail, h_fail, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_ctl, h_ctl, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_peer, h_peer, NULL), 0);
	assert_int_equal(dml_rpc_server_listen(f->srv, addr), 0);
	if (threads)
		fixture_start(f, threads);
	else
		assert_int_equal(dml_rpc_server_addr(f->srv, 0, f->addr, sizeof f->addr), 0);
}

static dml_rpc_client *dial(const char *addr)
{
	dml_rpc_client *c = NULL;
	assert_int_equal(dml_rpc_dial(&c, addr, NULL), 0);
	return c;
}

static int64_t mul(dml_rpc_client *c, int64_t a, int64_t b)
{
	Args x = {a, b};
	Reply r = {-1};
	assert_int_equal(dml_rpc_call(c, &arith_multiply, &x, &r, 10000), 0);
	return r.C;
}

/* ---- basics ------------------------------------------------------- */

static void check_arith(dml_rpc_client *c)
{
	assert_int_equal(mul(c, 7, 8), 56);
	Args x = {17, 8};
	Quotient q;
	assert_int_equal(dml_rpc_call(c, &arith_divide, &x, &q, 10000), 0);
	assert_int_equal(q.Quo, 2);
	assert_int_equal(q.Rem, 1);
}

static void test_roundtrip_and_errors(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	assert_true(dml_rpc_server_port(f.srv, 0) > 0);
	dml_rpc_client *c = dial(f.addr);
	check_arith(c);

	Args z = {1, 0};
	Quotient q;
	assert_int_equal(dml_rpc_call(c, &arith_divide, &z, &q, 10000), DML_EHANDLER);
	assert_string_equal(dml_error_detail(), "divide by zero");

	assert_int_equal(dml_rpc_call(c, &m_nope, NULL, NULL, 10000), DML_ENOMETHOD);
	assert_non_null(strstr(dml_error_detail(), "Nope.Method"));

	assert_int_equal(dml_rpc_call(c, &m_fail, NULL, NULL, 10000), DML_EHANDLER);
	assert_string_equal(dml_error_detail(), dml_strerror(DML_EIO));
	/* a later success clears it */
	check_arith(c);
	assert_string_equal(dml_error_detail(), "");
	/* a peer's message is escaped: control bytes do not reach the host */
	dml_rpc_pending *k;
	assert_int_equal(dml_rpc_start(&k, c, &m_ctl, NULL, NULL, 10000), 0);
	assert_int_equal(dml_rpc_pending_wait(k), DML_EHANDLER);
	assert_string_equal(dml_error_detail(), "bad\\x0d\\x0a\\x1b[31mred\\\\");
	assert_string_equal(dml_rpc_pending_errmsg(k), dml_error_detail());
	dml_rpc_pending_free(k);

	/* a reply of another type than expected */
	Args x = {2, 3};
	wrong_reply w;
	assert_int_equal(dml_rpc_call(c, &m_wrong, &x, &w, 10000), DML_ETYPE);
	/* arguments of another type than the server's */
	float v[3] = {1, 2, 3};
	sum_args sa = {{v, 3, 0}};
	Reply r;
	assert_int_equal(dml_rpc_call(c, &m_sum_as_mul, &sa, &r, 10000), DML_EPROTO);
	/* the connection survived all of it */
	assert_int_equal(mul(c, -3, 5), -15);

	/* strings round trip, into a caller buffer */
	char out[32];
	echo_msg in = {{"hello, world", 12, 0}}, back = {{out, 0, sizeof out}};
	assert_int_equal(dml_rpc_call(c, &m_echo, &in, &back, 10000), 0);
	assert_int_equal(back.s.n, 12);
	assert_memory_equal(out, "hello, world", 12);
	/* sync calls need caller buffers for variable-length replies */
	echo_msg view = {{NULL, 0, 0}};
	assert_int_equal(dml_rpc_call(c, &m_echo, &in, &view, 10000), DML_EINVAL);

	dml_rpc_free(c);
	fixture_stop(&f);
}

static void test_unix_socket(void **state)
{
	(void)state;
	char addr[64];
	snprintf(addr, sizeof addr, "unix:/tmp/distml-test-%d.sock", (int)getpid());
	fixture f;
	serve(&f, addr, NULL, 1);
	assert_string_equal(f.addr, addr);
	assert_int_equal(dml_rpc_server_port(f.srv, 0), DML_ENOTFOUND);
	dml_rpc_client *c = dial(addr);
	check_arith(c);
	dml_rpc_free(c);
	fixture_stop(&f);
	assert_int_equal(access(addr + 5, F_OK), -1); /* removed on free */
}

static void test_ipv6(void **state)
{
	(void)state;
	dml_rpc_server *s;
	assert_int_equal(dml_rpc_server_new(&s, NULL), 0);
	int rc = dml_rpc_server_listen(s, "[::1]:0");
	dml_rpc_server_free(s);
	if (rc == DML_EADDR || rc == DML_ESYS)
		skip(); /* no IPv6 loopback on this machine */
	fixture f;
	serve(&f, "[::1]:0", NULL, 1);
	assert_non_null(strstr(f.addr, "[::1]:"));
	dml_rpc_client *c = dial(f.addr);
	check_arith(c);
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* The peer's address, as the handler sees it. */
static void check_peer(dml_rpc_client *c, const char *prefix)
{
	char out[64];
	echo_msg back = {{out, 0, sizeof out - 1}};
	assert_int_equal(dml_rpc_call(c, &m_peer, NULL, &back, 10000), 0);
	out[back.s.n] = 0;
	assert_true(strncmp(out, prefix, strlen(prefix)) == 0);
	if (strcmp(prefix, "unix:") != 0) { /* a port follows, not 0 */
		const char *port = strrchr(out, ':') + 1;
		assert_true(atoi(port) > 0 && atoi(port) <= 65535);
	}
}

static void test_peer_address(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	dml_rpc_client *c = dial(f.addr);
	check_peer(c, "127.0.0.1:");
	dml_rpc_free(c);
	fixture_stop(&f);
	char addr[64];
	snprintf(addr, sizeof addr, "unix:/tmp/distml-peer-%d.sock", (int)getpid());
	serve(&f, addr, NULL, 1);
	c = dial(addr);
	check_peer(c, "unix:");
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* Whether `name` resolves to an address of `family`. */
static int resolves_to(const char *name, int family)
{
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(name, "1", &hints, &res) != 0)
		return 0;
	freeaddrinfo(res);
	return 1;
}

/* A dial tries every address of a name: "localhost" reaches a server on
 * 127.0.0.1 and one on ::1, whichever address the resolver lists first. */
static void test_dial_localhost(void **state)
{
	(void)state;
	const char *fam[2] = {"127.0.0.1:0", "[::1]:0"};
	int af[2] = {AF_INET, AF_INET6};
	int tried = 0;
	for (int i = 0; i < 2; i++) {
		if (!resolves_to("localhost", af[i])) {
			print_message("localhost has no %s address here: that case is "
			              "skipped\n", af[i] == AF_INET ? "IPv4" : "IPv6");
			continue;
		}
		dml_rpc_server *s;
		assert_int_equal(dml_rpc_server_new(&s, NULL), 0);
		int rc = dml_rpc_server_listen(s, fam[i]);
		dml_rpc_server_free(s);
		if (rc) {
			print_message("no %s loopback here: that case is skipped\n", fam[i]);
			continue;
		}
		fixture f;
		serve(&f, fam[i], NULL, 1);
		char a[64];
		snprintf(a, sizeof a, "localhost:%d", dml_rpc_server_port(f.srv, 0));
		dml_rpc_client *c = dial(a);
		check_arith(c);
		check_peer(c, i ? "[::1]:" : "127.0.0.1:");
		dml_rpc_free(c);
		fixture_stop(&f);
		tried++;
	}
	if (!tried)
		skip();
}

/* A failed dial says which addresses it tried and why each failed. */
static void test_dial_errors_name_the_address(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 0);
	int port = dml_rpc_server_port(f.srv, 0);
	dml_rpc_server_free(f.srv); /* the port is closed now */
	char a[64], want[192];
	snprintf(a, sizeof a, "127.0.0.1:%d", port);
	dml_rpc_client *c = NULL;
	assert_int_equal(dml_rpc_dial(&c, a, NULL), DML_ECONNREFUSED);
	assert_null(c);
	snprintf(want, sizeof want, "dial %s: %s: connection refused", a, a);
	assert_string_equal(dml_error_detail(), want);
	assert_int_equal(dml_rpc_dial(&c, "no-such-host.invalid:80", NULL), DML_EADDR);
	assert_non_null(strstr(dml_error_detail(), "dial no-such-host.invalid:80: "
	                                           "cannot resolve no-such-host.invalid"));
	assert_int_equal(dml_rpc_dial(&c, "garbage", NULL), DML_EADDR);
	assert_non_null(strstr(dml_error_detail(), "dial garbage: not an address"));
	snprintf(a, sizeof a, "unix:/tmp/distml-none-%d.sock", (int)getpid());
	assert_int_equal(dml_rpc_dial(&c, a, NULL), DML_ECONNREFUSED);
	assert_non_null(strstr(dml_error_detail(), a));
}

/* The dial timeout: a listener whose accept queue is full (backlog 0, one
 * connection waiting, never accepted) drops further SYNs, so a dial waits
 * in connect() and must give up with DML_ETIMEDOUT near dial_timeout. */
static void test_dial_timeout(void **state)
{
	(void)state;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof sa;
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(lfd, 0), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	int fill[4], nfill = 0;
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
	/* fill the queue: connections complete until it is full (bounded) */
	for (; nfill < 4; nfill++) {
		fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		assert_true(fill[nfill] >= 0);
		int rc = connect(fill[nfill], (struct sockaddr *)&sa, sizeof sa);
		assert_true(rc == 0 || errno == EINPROGRESS);
		struct pollfd p = {fill[nfill], POLLOUT, 0};
		if (poll(&p, 1, 200) != 1) { /* this one hangs: the queue is full */
			nfill++;
			break;
		}
	}
	dml_rpc_client_opts o = {.dial_timeout = 300};
	dml_rpc_client *c = NULL;
	int64_t t0 = dml__now_ms();
	assert_int_equal(dml_rpc_dial(&c, addr, &o), DML_ETIMEDOUT);
	int64_t took = dml__now_ms() - t0;
	assert_null(c);
	assert_true(took >= 250 && took < 5000);
	for (int i = 0; i < nfill; i++)
		close(fill[i]);
	close(lfd);
}

static void test_setup_errors(void **state)
{
	(void)state;
	dml_rpc_server *s;
	assert_int_equal(dml_rpc_server_new(&s, NULL), 0);
	assert_int_equal(dml_rpc_server_register(s, &arith_multiply, h_multiply, NULL), 0);
	assert_int_equal(dml_rpc_server_register(s, &arith_multiply, h_multiply, NULL), DML_EEXIST);
	char longname[300];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	dml_rpc_method lm = {longname, NULL, NULL};
	assert_int_equal(dml_rpc_server_register(s, &lm, h_multiply, NULL), DML_EINVAL);
	assert_int_equal(dml_rpc_server_listen(s, "127.0.0.1"), DML_EADDR);
	assert_int_equal(dml_rpc_server_listen(s, "127.0.0.1:99999"), DML_EADDR);
	assert_int_equal(dml_rpc_server_listen(s, "127.0.0.1:0"), 0);
	char addr[64];
	assert_int_equal(dml_rpc_server_addr(s, 0, addr, sizeof addr), 0);
	assert_int_equal(dml_rpc_server_addr(s, 1, addr, sizeof addr), DML_ENOTFOUND);
	dml_rpc_server_free(s); /* the port is closed now */
	dml_rpc_client *c = NULL;
	assert_int_equal(dml_rpc_dial(&c, addr, NULL), DML_ECONNREFUSED);
	assert_null(c);
	assert_int_equal(dml_rpc_dial(&c, "no-port", NULL), DML_EADDR);
	assert_int_equal(dml_rpc_dial(&c, "unix:/nonexistent/x.sock", NULL), DML_ECONNREFUSED);
	/* poll after stop */
	assert_int_equal(dml_rpc_server_new(&s, NULL), 0);
	dml_rpc_server_stop(s);
	dml_rpc_server_stop(s);
	assert_int_equal(dml_rpc_server_poll(s, 0), DML_ESTOPPED);
	assert_int_equal(dml_rpc_server_run(s), 0);
	dml_rpc_server_free(s);
	dml_rpc_server_free(NULL);
	dml_rpc_free(NULL);
	dml_rpc_pending_free(NULL);
}

/* ---- concurrency -------------------------------------------------- */

#define NTHREADS 8
typedef struct worker {
	const char *addr;
	dml_rpc_client *shared;
	int id, calls, bad;
} worker;

static void *worker_main(void *p)
{
	worker *w = p;
	dml_rpc_client *c = w->shared;
	if (!c && dml_rpc_dial(&c, w->addr, NULL) != 0) {
		w->bad = -1;
		return NULL;
	}
	for (int i = 0; i < w->calls; i++) {
		Args x = {w->id * 100000 + i, i % 7 - 3};
		Reply r = {0};
		if (dml_rpc_call(c, &arith_multiply, &x, &r, 10000) != 0 || r.C != x.A * x.B)
			w->bad++;
	}
	if (!w->shared)
		dml_rpc_free(c);
	return NULL;
}

static void run_workers(const char *addr, dml_rpc_client *shared, int calls)
{
	pthread_t t[NTHREADS];
	worker w[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (worker){addr, shared, i + 1, calls, 0};
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].bad, 0);
	}
}

static void test_many_clients(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 2);
	run_workers(f.addr, NULL, (int)test_scaled(2000, 50));
	fixture_stop(&f);
}

static void test_shared_client(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 2);
	dml_rpc_client *c = dial(f.addr);
	run_workers(f.addr, c, (int)test_scaled(1000, 50));
	dml_rpc_free(c);
	fixture_stop(&f);
}

static void test_pipelined(void **state)
{
	(void)state;
	enum { NMAX = 1000 };
	const int N = (int)test_scaled(NMAX, 64);
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	dml_rpc_client *c = dial(f.addr);
	static dml_rpc_pending *k[NMAX];
	static Args a[NMAX];
	static Reply r[NMAX];
	for (int i = 0; i < N; i++) {
		a[i] = (Args){i, i + 1};
		assert_int_equal(dml_rpc_start(&k[i], c, &arith_multiply, &a[i], &r[i], 10000), 0);
	}
	for (int i = N - 1; i >= 0; i--) { /* waits in reverse order */
		assert_int_equal(dml_rpc_pending_wait(k[i]), 0);
		assert_int_equal(dml_rpc_pending_wait(k[i]), 0); /* again: same result */
		assert_int_equal(r[i].C, (int64_t)i * (i + 1));
		dml_rpc_pending_free(k[i]);
	}
	/* async replies with views that live as long as the handle */
	static char text[NMAX][16];
	static echo_msg in[NMAX], out[NMAX];
	for (int i = 0; i < N; i++) {
		int n = snprintf(text[i], sizeof text[i], "msg %d", i);
		in[i].s = (dml_str){text[i], (size_t)n, 0};
		memset(&out[i], 0, sizeof out[i]);
		assert_int_equal(dml_rpc_start(&k[i], c, &m_echo, &in[i], &out[i], 10000), 0);
	}
	assert_int_equal(dml_rpc_flush(c, 10000), 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(dml_rpc_pending_wait(k[i]), 0);
		assert_int_equal(out[i].s.n, strlen(text[i]));
		assert_memory_equal(out[i].s.data, text[i], out[i].s.n);
	}
	for (int i = 0; i < N; i++)
		dml_rpc_pending_free(k[i]);
	dml_rpc_free(c);
	fixture_stop(&f);
}

static void test_large_arrays(void **state)
{
	(void)state;
	const size_t N = (size_t)test_scaled(10 * 1000 * 1000, 1000 * 1000);
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	dml_rpc_client *c = dial(f.addr);
	float *v = malloc(N * sizeof *v), *back = malloc(N * sizeof *back);
	assert_non_null(v);
	assert_non_null(back);
	double want = 0;
	for (size_t i = 0; i < N; i++) {
		v[i] = (float)(i % 1000 - 500); /* integers: the sum is exact */
		want += v[i];
	}
	sum_args sa = {{v, N, 0}};
	sum_reply sr;
	assert_int_equal(dml_rpc_call(c, &m_sum, &sa, &sr, 30000), 0);
	assert_int_equal(sr.n, N);
	assert_true(sr.sum == want);

	/* a large reply straight into the caller's buffer */
	scale_args sc = {2.0f, {v, N, 0}};
	scale_reply rep = {0, {back, 0, N}};
	assert_int_equal(dml_rpc_call(c, &m_scale, &sc, &rep, 30000), 0);
	assert_int_equal(rep.n, N);
	assert_int_equal(rep.v.n, N);
	assert_ptr_equal(rep.v.data, back);
	for (size_t i = 0; i < N; i++)
		if (back[i] != 2.0f * v[i])
			fail_msg("element %zu: %g != %g", i, back[i], 2.0f * v[i]);
	/* ... or as a view that the handle owns */
	dml_rpc_pending *k;
	scale_reply rv = {0};
	sc.k = 3.0f;
	assert_int_equal(dml_rpc_start(&k, c, &m_scale, &sc, &rv, 30000), 0);
	assert_int_equal(dml_rpc_pending_wait(k), 0);
	assert_int_equal(rv.v.n, N);
	assert_int_equal((uintptr_t)rv.v.data % 4, 0);
	for (size_t i = 0; i < N; i++)
		if (rv.v.data[i] != 3.0f * v[i])
			fail_msg("element %zu", i);
	dml_rpc_pending_free(k);
	/* a caller buffer that is too small is an error, and harmless */
	scale_reply small = {0, {back, 0, N / 2}};
	assert_int_equal(dml_rpc_call(c, &m_scale, &sc, &small, 30000), DML_ETOOBIG);
	assert_int_equal(mul(c, 6, 7), 42);
	free(v);
	free(back);
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* A large reply whose first array goes into the caller's buffer, followed
 * by more fields (views) that must keep their content and alignment. */
static void test_large_reply_layouts(void **state)
{
	(void)state;
	for (int i = 0; i < MIX_MAX; i++) {
		mix_a[i] = (float)i;
		mix_b[i] = (uint8_t)(i * 7);
		mix_d[i] = -0.5 * i;
	}
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	dml_rpc_client *c = dial(f.addr);
	static float a[MIX_MAX];
	const int64_t sizes[][3] = {{20000, 8192, 8}, {20001, 8192, 9}, {20003, 3, 5},
	                            {0, 70000, 3}, {33333, 0, 0}, {MIX_MAX, MIX_MAX, MIX_MAX}};
	for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
		mixed_args x = {sizes[t][0], sizes[t][1], sizes[t][2]};
		mixed_reply y = {{a, 0, MIX_MAX}, {NULL, 0, 0}, {NULL, 0, 0}};
		memset(a, 0xff, sizeof a);
		dml_rpc_pending *k;
		assert_int_equal(dml_rpc_start(&k, c, &m_mixed, &x, &y, 30000), 0);
		assert_int_equal(dml_rpc_pending_wait(k), 0);
		assert_ptr_equal(y.a.data, a);
		assert_int_equal(y.a.n, x.na);
		assert_int_equal(y.b.n, x.nb);
		assert_int_equal(y.d.n, x.nd);
		assert_memory_equal(a, mix_a, x.na * sizeof(float));
		if (x.nb)
			assert_memory_equal(y.b.data, mix_b, x.nb);
		if (x.nd) {
			assert_int_equal((uintptr_t)y.d.data % 8, 0);
			assert_memory_equal(y.d.data, mix_d, x.nd * sizeof(double));
		}
		dml_rpc_pending_free(k);
	}
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* ---- deadlines, stop, close --------------------------------------- */

static void test_deadline(void **state)
{
	(void)state;
	gate_init(&the_gate);
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 2);
	dml_rpc_client *c = dial(f.addr);
	assert_int_equal(dml_rpc_call(c, &m_gate, NULL, NULL, 50), DML_ETIMEDOUT);
	sem_wait(&the_gate.entered); /* the handler did run */
	gate_open(&the_gate);
	/* the late reply is discarded; the connection works on */
	assert_int_equal(mul(c, 9, 9), 81);
	/* a timeout of 0 does not wait: nothing is sent */
	dml_rpc_pending *k = NULL;
	assert_int_equal(dml_rpc_start(&k, c, &m_gate, NULL, NULL, 0), DML_ETIMEDOUT);
	assert_null(k);
	assert_int_equal(dml_rpc_call(c, &m_gate, NULL, NULL, 0), DML_ETIMEDOUT);
	assert_non_null(strstr(dml_error_detail(), "nothing sent"));
	assert_int_equal(dml_rpc_flush(c, 0), 0); /* nothing queued */
	assert_int_equal(dml_rpc_call(c, &m_gate, NULL, NULL, -7), DML_EINVAL);
	assert_int_equal(mul(c, 2, 21), 42);
	dml_rpc_free(c);
	fixture_stop(&f);
	gate_destroy(&the_gate);
}

/* spin_us: out-of-range values are refused; spinning servers and clients
 * (a client shared by 8 threads, and 8 clients of their own) give exact
 * results; a deadline still holds while the client spins; stop ends
 * runners that spin. */
static void test_spin(void **state)
{
	(void)state;
	dml_rpc_server *s;
	dml_rpc_client *c;
	int bad[] = {-1, DML_RPC_MAX_SPIN_US + 1};
	for (int i = 0; i < 2; i++) {
		dml_rpc_server_opts so = {.spin_us = bad[i]};
		assert_int_equal(dml_rpc_server_new(&s, &so), DML_EINVAL);
		dml_rpc_client_opts co = {.spin_us = bad[i]};
		assert_int_equal(dml_rpc_dial(&c, "127.0.0.1:1", &co), DML_EINVAL);
	}
	gate_init(&the_gate);
	dml_rpc_server_opts so = {.spin_us = 200};
	fixture f;
	serve(&f, "127.0.0.1:0", &so, 2);
	dml_rpc_client_opts co = {.spin_us = 200};
	assert_int_equal(dml_rpc_dial(&c, f.addr, &co), 0);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(mul(c, i, 3), 3 * i);
	run_workers(f.addr, c, 300);
	run_workers(f.addr, NULL, 300);
	assert_int_equal(dml_rpc_call(c, &m_gate, NULL, NULL, 50), DML_ETIMEDOUT);
	sem_wait(&the_gate.entered);
	gate_open(&the_gate);
	assert_int_equal(mul(c, 9, 9), 81);
	dml_rpc_free(c);
	fixture_stop(&f);
	gate_destroy(&the_gate);
}

static void test_stop_in_flight(void **state)
{
	(void)state;
	gate_init(&the_gate);
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 2);
	dml_rpc_client *c = dial(f.addr);
	dml_rpc_pending *k;
	assert_int_equal(dml_rpc_start(&k, c, &m_gate, NULL, NULL, 30000), 0);
	assert_int_equal(dml_rpc_flush(c, 10000), 0);
	sem_wait(&the_gate.entered); /* a handler is running */
	dml_rpc_server_stop(f.srv);
	gate_open(&the_gate);
	for (int i = 0; i < f.nrunners; i++) {
		pthread_join(f.runners[i], NULL);
		assert_int_equal(f.run_rc[i], 0);
	}
	/* a call sent after the stop is never served; freeing the server fails it */
	dml_rpc_pending *k2;
	assert_int_equal(dml_rpc_start(&k2, c, &arith_multiply, &(Args){1, 2}, &(Reply){0}, 30000), 0);
	assert_int_equal(dml_rpc_flush(c, 10000), 0);
	dml_rpc_server_free(f.srv);
	int rc = dml_rpc_pending_wait(k); /* its reply may have gone out before the stop */
	assert_true(rc == 0 || rc == DML_ECONNLOST);
	assert_int_equal(dml_rpc_pending_wait(k2), DML_ECONNLOST);
	assert_int_equal(dml_rpc_call(c, &arith_multiply, &(Args){1, 2}, &(Reply){0}, 1000), DML_ECONNLOST);
	dml_rpc_pending_free(k);
	dml_rpc_pending_free(k2);
	dml_rpc_free(c);
	gate_destroy(&the_gate);
}

typedef struct waiter_arg {
	dml_rpc_pending *k;
	int rc;
} waiter_arg;

static void *waiter_main(void *p)
{
	waiter_arg *w = p;
	w->rc = dml_rpc_pending_wait(w->k);
	return NULL;
}

static void test_close_pending(void **state)
{
	(void)state;
	gate_init(&the_gate);
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 2);
	dml_rpc_client *c = dial(f.addr);
	waiter_arg w[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		assert_int_equal(dml_rpc_start(&w[i].k, c, &m_gate, NULL, NULL, 60000), 0);
		w[i].rc = 1;
		assert_int_equal(pthread_create(&t[i], NULL, waiter_main, &w[i]), 0);
	}
	sem_wait(&the_gate.entered); /* requests are out, handlers held */
	dml_rpc_close(c);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].rc, DML_ECLOSED);
		dml_rpc_pending_free(w[i].k);
	}
	dml_rpc_pending *k;
	assert_int_equal(dml_rpc_start(&k, c, &arith_multiply, &(Args){1, 2}, &(Reply){0}, 1000), DML_ECLOSED);
	dml_rpc_close(c); /* idempotent */
	dml_rpc_free(c);
	gate_open(&the_gate);
	fixture_stop(&f);
	gate_destroy(&the_gate);
}

/* ---- hostile peers (raw sockets) ---------------------------------- */

/* Over TLS (test_rpc_tls.c), a raw socket is relayed through a TLS stream:
 * RAW_OVER gives the socket the test uses in place of a connected one. */
#ifndef RAW_OVER
#define RAW_OVER(fd, server) (fd)
#endif

static int raw_connect(fixture *f)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)dml_rpc_server_port(f->srv, 0));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return RAW_OVER(fd, 0);
}

static void raw_send(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads until EOF (bounded: 10 s); returns bytes read. */
static size_t read_to_eof(int fd, uint8_t *buf, size_t cap)
{
	size_t got = 0;
	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		assert_int_equal(poll(&p, 1, 10000), 1);
		uint8_t tmp[4096];
		ssize_t n = recv(fd, tmp, sizeof tmp, 0);
		if (n <= 0)
			return got;
		size_t take = (size_t)n < cap - got ? (size_t)n : cap - got;
		memcpy(buf + got, tmp, take);
		got += take;
	}
}

/* Reads exactly n bytes (bounded). */
static void read_n(int fd, uint8_t *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd p = {fd, POLLIN, 0};
		assert_int_equal(poll(&p, 1, 10000), 1);
		ssize_t r = recv(fd, buf + got, n - got, 0);
		assert_true(r > 0);
		got += (size_t)r;
	}
}

static size_t request(uint8_t *p, uint64_t seq, const char *name,
                      const void *payload, size_t plen)
{
	size_t n = strlen(name);
	uint32_t len = (uint32_t)(16 + n + plen);
	memcpy(p, &len, 4);
	p[4] = 1;
	p[5] = 1;
	uint16_t nl = (uint16_t)n;
	memcpy(p + 6, &nl, 2);
	memcpy(p + 8, &seq, 8);
	memset(p + 16, 0, 4);
	memcpy(p + 20, name, n);
	if (plen)
		memcpy(p + 20 + n, payload, plen);
	return 20 + n + plen;
}

/* ---- protocol versions (docs/protocol.md, section 11) -------------- */

/* A request in a frame version this server does not speak gets a version
 * 1 error reply with status 5 naming the version, and then the close. */
static void test_version_refused(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	int fd = raw_connect(&f);
	uint8_t buf[512];
	size_t n = request(buf, 42, "Arith.Multiply", NULL, 0);
	buf[4] = 2;
	raw_send(fd, buf, n);
	size_t got = read_to_eof(fd, buf, sizeof buf);
	close(fd);
	assert_true(got >= 20);
	uint32_t len, status;
	uint16_t name_len;
	uint64_t seq;
	memcpy(&len, buf, 4);
	memcpy(&name_len, buf + 6, 2);
	memcpy(&seq, buf + 8, 8);
	memcpy(&status, buf + 16, 4);
	assert_int_equal(got, (size_t)len + 4);
	assert_int_equal(buf[4], 1);
	assert_int_equal(buf[5], 2); /* a reply */
	assert_int_equal(seq, 42);
	assert_int_equal(status, 5);
	char msg[256] = {0};
	memcpy(msg, buf + 20, name_len < 255 ? name_len : 255);
	assert_non_null(strstr(msg, "frame version 2"));
	dml_rpc_client *c = dial(f.addr); /* others are served as before */
	assert_int_equal(mul(c, 6, 7), 42);
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* A fake server: accepts one connection, reads one request and answers it
 * with the frame its script writes. */
typedef struct fake_server {
	int lfd;
	int port;
	pthread_t t;
	size_t (*answer)(uint8_t *out, uint64_t seq);
} fake_server;

static void *fake_run(void *arg)
{
	fake_server *fs = arg;
	int fd = accept(fs->lfd, NULL, NULL);
	if (fd >= 0)
		fd = RAW_OVER(fd, 1);
	uint8_t in[4096], out[512];
	size_t have = 0;
	uint32_t len = 0;
	while (fd >= 0 && (have < 4 || have < (size_t)len + 4)) {
		ssize_t r = recv(fd, in + have, sizeof in - have, 0);
		if (r <= 0)
			break;
		have += (size_t)r;
		if (have >= 4)
			memcpy(&len, in, 4);
	}
	uint64_t seq = 0;
	if (have >= 16)
		memcpy(&seq, in + 8, 8);
	size_t n = fs->answer(out, seq);
	if (fd >= 0) {
		send(fd, out, n, MSG_NOSIGNAL);
		while (recv(fd, in, sizeof in, 0) > 0) /* until the client closes */
			;
		close(fd);
	}
	return NULL;
}

static void fake_start(fake_server *fs, size_t (*answer)(uint8_t *, uint64_t))
{
	fs->answer = answer;
	fs->lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fs->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(fs->lfd, 4), 0);
	socklen_t sl = sizeof sa;
	getsockname(fs->lfd, (struct sockaddr *)&sa, &sl);
	fs->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&fs->t, NULL, fake_run, fs), 0);
}

static dml_rpc_client *fake_dial(fake_server *fs)
{
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%d", fs->port);
	return dial(addr);
}

static void fake_stop(fake_server *fs, dml_rpc_client *c)
{
	dml_rpc_free(c);
	pthread_join(fs->t, NULL);
	close(fs->lfd);
}

static size_t error_frame(uint8_t *out, uint64_t seq, uint8_t version,
                          uint32_t status, const char *msg)
{
	size_t n = strlen(msg);
	uint32_t len = (uint32_t)(16 + n);
	memcpy(out, &len, 4);
	out[4] = version;
	out[5] = 2;
	uint16_t nl = (uint16_t)n;
	memcpy(out + 6, &nl, 2);
	memcpy(out + 8, &seq, 8);
	memcpy(out + 16, &status, 4);
	memcpy(out + 20, msg, n);
	return 20 + n;
}

/* a newer server's error status, with control bytes in its message */
static size_t answer_new_status(uint8_t *out, uint64_t seq)
{
	return error_frame(out, seq, 1, 42, "quota\r\nexceeded");
}

static size_t answer_new_version(uint8_t *out, uint64_t seq)
{
	return error_frame(out, seq, 9, 0, "");
}

/* what a 0.1 server says to RPC.Hello */
static size_t answer_no_hello(uint8_t *out, uint64_t seq)
{
	return error_frame(out, seq, 1, 1, "rpc: can't find method RPC.Hello");
}

static void test_version_client(void **state)
{
	(void)state;
	fake_server fs;
	fake_start(&fs, answer_new_status);
	dml_rpc_client *c = fake_dial(&fs);
	Reply r;
	assert_int_equal(dml_rpc_call(c, &arith_multiply, &(Args){1, 2}, &r, 10000),
	                 DML_EVERSION);
	const char *d = dml_error_detail();
	assert_non_null(strstr(d, "status 42"));
	assert_non_null(strstr(d, "quota\\x0d\\x0aexceeded")); /* escaped */
	fake_stop(&fs, c);

	fake_start(&fs, answer_new_version);
	c = fake_dial(&fs);
	assert_int_equal(dml_rpc_call(c, &arith_multiply, &(Args){1, 2}, &r, 10000),
	                 DML_EVERSION);
	assert_non_null(strstr(dml_error_detail(), "frame version"));
	/* the stream cannot be trusted after that: the next call fails too */
	assert_int_equal(dml_rpc_call(c, &arith_multiply, &(Args){1, 2}, &r, 10000),
	                 DML_EVERSION);
	fake_stop(&fs, c);

	fake_start(&fs, answer_no_hello);
	c = fake_dial(&fs);
	assert_int_equal(dml_rpc_has_method(c, "Arith.Multiply", 10000), DML_EVERSION);
	fake_stop(&fs, c);
}

static void test_has_method(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	dml_rpc_client *c = dial(f.addr);
	assert_int_equal(dml_rpc_has_method(c, "Arith.Multiply", 10000), 1);
	assert_int_equal(dml_rpc_has_method(c, "Arith.Power", 10000), 0);
	assert_int_equal(dml_rpc_has_method(c, "RPC.Hello", 10000), 1);
	assert_int_equal(dml_rpc_has_method(c, "", 10000), 0);
	assert_int_equal(dml_rpc_has_method(c, "x", 0), DML_ETIMEDOUT);
	assert_int_equal(dml_rpc_has_method(NULL, "x", 10000), DML_EINVAL);
	/* the library's names are its own */
	static const dml_rpc_method mine = {"RPC.Mine", NULL, NULL};
	dml_rpc_server *s;
	assert_int_equal(dml_rpc_server_new(&s, NULL), 0);
	assert_int_equal(dml_rpc_server_register(s, &mine, h_fail, NULL), DML_EINVAL);
	assert_non_null(strstr(dml_error_detail(), "RPC."));
	dml_rpc_server_free(s);
	dml_rpc_free(c);
	fixture_stop(&f);
}

static void test_hostile_frames(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	dml_rpc_client *good = dial(f.addr);
	uint8_t buf[8192];

	/* oversized: a header announcing 100 MiB is refused before allocating */
	int fd = raw_connect(&f);
	uint8_t h[20];
	size_t n = request(h, 1, "", NULL, 0);
	uint32_t big = 100u << 20;
	memcpy(h, &big, 4);
	raw_send(fd, h, n);
	assert_int_equal(read_to_eof(fd, buf, sizeof buf), 0);
	close(fd);
	assert_int_equal(mul(good, 3, 4), 12);

	/* garbage (in frame version 1: another version is answered, below) */
	fd = raw_connect(&f);
	srand(7);
	for (size_t i = 0; i < 256; i++)
		buf[i] = (uint8_t)rand();
	buf[4] = 1;
	buf[5] = 7; /* neither request nor reply */
	raw_send(fd, buf, 256);
	assert_int_equal(read_to_eof(fd, buf, sizeof buf), 0);
	close(fd);
	assert_int_equal(mul(good, 5, 4), 20);

	/* truncated: half a frame, then the peer goes away */
	fd = raw_connect(&f);
	uint8_t payload[64] = {0};
	n = request(buf, 9, "Arith.Multiply", payload, sizeof payload);
	raw_send(fd, buf, n / 2);
	shutdown(fd, SHUT_WR);
	assert_int_equal(read_to_eof(fd, buf, sizeof buf), 0);
	close(fd);

	/* a reply frame sent to a server is a protocol error */
	fd = raw_connect(&f);
	n = request(buf, 9, "x", NULL, 0);
	buf[5] = 2;
	raw_send(fd, buf, n);
	assert_int_equal(read_to_eof(fd, buf, sizeof buf), 0);
	close(fd);

	/* undecodable arguments: an error reply, and the connection stays */
	fd = raw_connect(&f);
	uint8_t bad_args[9] = {DML_F64, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f};
	n = request(buf, 42, "Arith.Multiply", bad_args, sizeof bad_args);
	raw_send(fd, buf, n);
	read_n(fd, buf, 20);
	uint64_t seq;
	uint32_t status, len;
	memcpy(&len, buf, 4);
	memcpy(&seq, buf + 8, 8);
	memcpy(&status, buf + 16, 4);
	assert_int_equal(buf[5], 2);
	assert_int_equal(seq, 42);
	assert_int_equal(status, 3);
	read_n(fd, buf, len - 16);
	uint8_t good_args[18] = {DML_I64, 6, 0, 0, 0, 0, 0, 0, 0, DML_I64, 7, 0, 0, 0, 0, 0, 0, 0};
	n = request(buf, 43, "Arith.Multiply", good_args, sizeof good_args);
	raw_send(fd, buf, n);
	read_n(fd, buf, 29);
	memcpy(&status, buf + 16, 4);
	assert_int_equal(status, 0);
	assert_int_equal(buf[20], DML_I64);
	int64_t prod;
	memcpy(&prod, buf + 21, 8);
	assert_int_equal(prod, 42);
	close(fd);

	assert_int_equal(mul(good, 6, 4), 24);
	dml_rpc_free(good);
	fixture_stop(&f);
}

/* A peer that sends requests but never reads replies: the server stops
 * reading from it (bounded output) instead of buffering without limit, and
 * keeps serving others. */
static void test_unread_replies_bounded(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	dml_rpc_client *good = dial(f.addr);
	int fd = raw_connect(&f);
	size_t n = 1 << 20, plen = 5 + n;
	uint8_t *req = malloc(20 + 9 + plen);
	assert_non_null(req);
	uint8_t *payload = malloc(plen);
	payload[0] = DML_STR;
	uint32_t sl = (uint32_t)n;
	memcpy(payload + 1, &sl, 4);
	memset(payload + 5, 'x', n);
	size_t total = request(req, 1, "Test.Echo", payload, plen);
	int sent = 0;
	for (; sent < 200; sent++) { /* each 1 MiB request echoes 1 MiB back */
		size_t off = 0;
		while (off < total) {
			struct pollfd p = {fd, POLLOUT, 0};
			if (poll(&p, 1, 1000) != 1)
				goto stalled;
			ssize_t w = send(fd, req + off, total - off, MSG_NOSIGNAL | MSG_DONTWAIT);
			assert_true(w > 0 || errno == EAGAIN);
			if (w > 0)
				off += (size_t)w;
		}
	}
stalled:
	assert_true(sent < 100); /* the server stopped reading long before */
	assert_int_equal(mul(good, 11, 11), 121);
	close(fd);
	free(req);
	free(payload);
	assert_int_equal(mul(good, 12, 12), 144);
	dml_rpc_free(good);
	fixture_stop(&f);
}

static void test_frame_limits(void **state)
{
	(void)state;
	dml_rpc_server_opts so = {0};
	so.max_frame = 4096;
	fixture f;
	serve(&f, "127.0.0.1:0", &so, 1);
	float v[2000] = {0};
	sum_args sa = {{v, 2000, 0}};
	sum_reply sr;
	/* the client's own limit: refused before sending, connection intact */
	dml_rpc_client_opts co = {0};
	co.max_frame = 4096;
	dml_rpc_client *c;
	assert_int_equal(dml_rpc_dial(&c, f.addr, &co), 0);
	assert_int_equal(dml_rpc_call(c, &m_sum, &sa, &sr, 10000), DML_ETOOBIG);
	assert_int_equal(mul(c, 2, 2), 4);
	dml_rpc_free(c);
	/* the server's limit: it drops the connection */
	c = dial(f.addr);
	assert_int_equal(dml_rpc_call(c, &m_sum, &sa, &sr, 10000), DML_ECONNLOST);
	assert_int_equal(dml_rpc_call(c, &m_sum, &sa, &sr, 10000), DML_ECONNLOST);
	dml_rpc_free(c);
	/* a reply over the server's limit comes back as an error */
	c = dial(f.addr);
	sa.v.n = 1000;
	scale_args sc = {1.0f, {v, 1000, 0}};
	float back[1000];
	scale_reply rep = {0, {back, 0, 1000}};
	assert_int_equal(dml_rpc_call(c, &m_sum, &sa, &sr, 10000), 0);
	assert_int_equal(dml_rpc_call(c, &m_scale, &sc, &rep, 10000), 0);
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* ---- scale and host-driven loops ---------------------------------- */

static void test_1000_connections(void **state)
{
	TEST_PLAIN_ONLY();
	(void)state;
	enum { N = 1000 };
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < 2 * N + 64) {
		rl.rlim_cur = rl.rlim_max < 2 * N + 64 ? rl.rlim_max : 2 * N + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < 2 * N + 64)
			skip();
	}
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1); /* one thread serves them all */
	static dml_rpc_client *c[N];
	static dml_rpc_pending *k[N];
	static Args a[N];
	static Reply r[N];
	for (int i = 0; i < N; i++)
		c[i] = dial(f.addr);
	for (int i = 0; i < N; i++) {
		a[i] = (Args){i, 3};
		assert_int_equal(dml_rpc_start(&k[i], c[i], &arith_multiply, &a[i], &r[i], 30000), 0);
		assert_int_equal(dml_rpc_flush(c[i], 10000), 0);
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(dml_rpc_pending_wait(k[i]), 0);
		assert_int_equal(r[i].C, 3 * i);
		dml_rpc_pending_free(k[i]);
	}
	for (int i = 0; i < N; i++)
		dml_rpc_free(c[i]);
	fixture_stop(&f);
}

typedef struct loop_arg {
	dml_rpc_server *s;
	int rc;
	int events;
} loop_arg;

/* The host's own event loop: poll() on the server's descriptors (its one
 * fd where the backend has one, else dml_rpc_server_pollfds), then a
 * step. Odd rounds use the set, even ones the single fd when there is. */
static void *host_loop(void *p)
{
	loop_arg *l = p;
	struct pollfd pf[16];
	for (int i = 0; i < 1000000; i++) {
		int n, fd = dml_rpc_server_fd(l->s);
		if (fd >= 0 && i % 2 == 0) {
			pf[0] = (struct pollfd){fd, POLLIN, 0};
			n = 1;
		} else if ((n = dml_rpc_server_pollfds(l->s, pf, 16)) < 1 || n > 16) {
			l->rc = -1001;
			return NULL;
		}
		if (poll(pf, (nfds_t)n, 10000) < 1) {
			l->rc = -1000;
			return NULL;
		}
		int rc = dml_rpc_server_poll(l->s, 0);
		if (rc < 0) {
			l->rc = rc;
			return NULL;
		}
		l->events += rc;
	}
	return NULL;
}

static void test_host_event_loop(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 0);
	loop_arg l = {f.srv, 0, 0};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, host_loop, &l), 0);
	dml_rpc_client *c = dial(f.addr);
	for (int i = 0; i < 100; i++)
		assert_int_equal(mul(c, i, 2), 2 * i);
	dml_rpc_server_stop(f.srv);
	pthread_join(t, NULL);
	assert_int_equal(l.rc, DML_ESTOPPED);
#ifndef RPC_OVER_BUFSTREAM
	assert_true(l.events >= 101); /* an accept and at least one read per call */
#else /* the server reads a buffering stream until EAGAIN, and so may find
         the next call before it waits again */
	assert_true(l.events >= 2);
#endif
	dml_rpc_free(c);
	dml_rpc_server_free(f.srv);
}

/* ---- counters and a graceful drain -------------------------------------- */

static uint64_t latency_total(const dml_rpc_stats *st)
{
	uint64_t n = 0;
	for (int i = 0; i < DML_RPC_LATENCY_BUCKETS; i++)
		n += st->latency[i];
	return n;
}

static void test_server_stats(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 2);
	dml_rpc_stats st;
	assert_int_equal(dml_rpc_server_stats(&st, f.srv, NULL), 0);
	assert_int_equal(st.calls, 0);
	dml_rpc_client *c = dial(f.addr);
	for (int i = 0; i < 10; i++)
		assert_int_equal(mul(c, i, 2), 2 * i);
	for (int i = 0; i < 3; i++)
		assert_int_equal(dml_rpc_call(c, &m_fail, NULL, NULL, 10000), DML_EHANDLER);
	assert_int_equal(dml_rpc_call(c, &m_nope, NULL, NULL, 10000), DML_ENOMETHOD);
	assert_int_equal(dml_rpc_server_stats(&st, f.srv, "Arith.Multiply"), 0);
	assert_int_equal(st.calls, 10);
	assert_int_equal(st.errors, 0);
	assert_int_equal(latency_total(&st), 10);
	assert_true(st.bytes_in > 10 * (DML__FRAME_HDR + strlen("Arith.Multiply")));
	assert_true(st.bytes_out >= 10 * DML__FRAME_HDR);
	assert_int_equal(st.accepted, 0); /* the server's only */
	uint64_t mul_in = st.bytes_in, mul_out = st.bytes_out;
	assert_int_equal(dml_rpc_server_stats(&st, f.srv, "Test.Fail"), 0);
	assert_int_equal(st.calls, 3);
	assert_int_equal(st.errors, 3);
	assert_int_equal(dml_rpc_server_stats(&st, f.srv, NULL), 0);
	assert_int_equal(st.calls, 14); /* the unknown method too */
	assert_int_equal(st.errors, 4);
	assert_int_equal(latency_total(&st), 14);
	assert_true(st.bytes_in > mul_in && st.bytes_out > mul_out);
	assert_int_equal(st.accepted, 1);
	assert_int_equal(st.open, 1);
	assert_int_equal(st.shed, 0);
	assert_int_equal(dml_rpc_server_stats(&st, f.srv, "Nope.Method"), DML_ENOTFOUND);
	assert_int_equal(dml_rpc_server_stats(NULL, f.srv, NULL), DML_EINVAL);
	dml_rpc_free(c);
	fixture_stop(&f);
}

static dml_rpc_deferred *drain_owed; /* a deferred reply never sent */
static sem_t owe_sem;

static int h_owe(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	(void)r;
	(void)u;
	int rc = dml_rpc_deferred_new(&drain_owed, ctx);
	sem_post(&owe_sem);
	return rc;
}

static const dml_rpc_method m_owe = {"Test.Owe", NULL, NULL};

static void join_runners(fixture *f)
{
	for (int i = 0; i < f->nrunners; i++) {
		pthread_join(f->runners[i], NULL);
		assert_int_equal(f->run_rc[i], 0);
	}
}

static void test_drain(void **state)
{
	(void)state;
	gate_init(&the_gate);
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 2);
	dml_rpc_client *busy = dial(f.addr), *idle = dial(f.addr);
	assert_int_equal(mul(idle, 2, 3), 6);
	dml_rpc_pending *k;
	assert_int_equal(dml_rpc_start(&k, busy, &m_gate, NULL, NULL, 30000), 0);
	assert_int_equal(dml_rpc_flush(busy, 10000), 0);
	sem_wait(&the_gate.entered); /* a call in flight */
	assert_int_equal(dml_rpc_server_drain(f.srv, DML_INFINITE), 0);
	/* the listener is closed at once: new connections are refused */
	dml_rpc_client *late = NULL;
	assert_int_equal(dml_rpc_dial(&late, f.addr, NULL), DML_ECONNREFUSED);
	char buf[64];
	assert_int_equal(dml_rpc_server_addr(f.srv, 0, buf, sizeof buf), DML_ECLOSED);
	/* the call in flight finishes; then the server stops by itself */
	gate_open(&the_gate);
	assert_int_equal(dml_rpc_pending_wait(k), 0);
	dml_rpc_pending_free(k);
	join_runners(&f); /* run returned 0: drained */
	dml_rpc_stats st;
	assert_int_equal(dml_rpc_server_stats(&st, f.srv, NULL), 0);
	assert_int_equal(st.open, 0);
	assert_int_equal(st.accepted, 2);
	/* both connections were closed: the idle one's next call fails */
	assert_int_equal(dml_rpc_call(idle, &arith_multiply, &(Args){1, 2}, &(Reply){0}, 10000),
	                 DML_ECONNLOST);
	dml_rpc_free(idle);
	dml_rpc_free(busy);
	assert_int_equal(dml_rpc_server_drain(f.srv, 0), 0); /* again: nothing left */
	dml_rpc_server_free(f.srv);
	gate_destroy(&the_gate);

	/* a connection owed a reply that never comes is closed at the deadline */
	serve(&f, "127.0.0.1:0", NULL, 1);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_owe, h_owe, NULL), 0);
	dml_rpc_client *c = dial(f.addr);
	drain_owed = NULL;
	sem_init(&owe_sem, 0, 0);
	assert_int_equal(dml_rpc_start(&k, c, &m_owe, NULL, NULL, 30000), 0);
	assert_int_equal(dml_rpc_flush(c, 10000), 0);
	sem_wait(&owe_sem); /* the reply is owed */
	assert_non_null(drain_owed);
	int64_t t0 = dml__now_us();
	assert_int_equal(dml_rpc_server_drain(f.srv, 50), 0);
	assert_int_equal(dml_rpc_pending_wait(k), DML_ECONNLOST);
	assert_true(dml__now_us() - t0 >= 50000); /* not before the deadline */
	join_runners(&f);
	assert_int_equal(dml_rpc_deferred_reply(drain_owed, 0, NULL, NULL), DML_ECLOSED);
	sem_destroy(&owe_sem);
	dml_rpc_pending_free(k);
	dml_rpc_free(c);
	dml_rpc_server_free(f.srv);
}

/* ---- one host thread drives a server and 100 clients ------------------ */

typedef struct loop_call {
	dml_rpc_client *c;
	dml_rpc_pending *k;
	Args a;
	Reply r;
	int calls, result, reentry;
	int free_it; /* the callback frees the handle */
} loop_call;

static void loop_done(dml_rpc_pending *k, int result, void *user)
{
	loop_call *l = user;
	l->calls++;
	l->result = result;
	l->reentry = dml_rpc_client_poll(l->c, 0); /* not from a callback */
	if (l->free_it) {
		dml_rpc_pending_free(k);
		l->k = NULL;
	}
}

enum { LOOP_NC = 100 };

/* One round of the loop: the server's and every client's descriptors in one
 * poll(), for no longer than the earliest of their timeouts, then a step of
 * each, until `done` says so. */
static void loop_until(dml_rpc_server *s, dml_rpc_client **c, int nc,
                       int (*done)(void *), void *arg)
{
	enum { SRV_MAX = LOOP_NC + 16 }; /* the poll() backend: one per connection */
	static struct pollfd pf[SRV_MAX + LOOP_NC + 1];
	for (int round = 0; !done(arg); round++) {
		assert_true(round < 200000); /* bounded */
		int n = dml_rpc_server_pollfds(s, pf, SRV_MAX);
		assert_true(n >= 1 && n <= SRV_MAX);
		dml_duration tmo, t;
		assert_int_equal(dml_rpc_server_next_timeout(s, &tmo), 0);
		for (int i = 0; i < nc; i++) {
			int m = dml_rpc_client_pollfds(c[i], pf + n, 1);
			assert_true(m == 0 || m == 1);
			n += m;
			assert_int_equal(dml_rpc_client_next_timeout(c[i], &t), 0);
			if (t != DML_INFINITE && (tmo == DML_INFINITE || t < tmo))
				tmo = t;
		}
		assert_true(tmo != DML_INFINITE); /* every call has a deadline */
		assert_true(poll(pf, (nfds_t)n, (int)tmo) >= 0);
		assert_true(dml_rpc_server_poll(s, 0) >= 0);
		for (int i = 0; i < nc; i++)
			assert_true(dml_rpc_client_poll(c[i], 0) >= 0);
	}
}

typedef struct loop_state {
	loop_call *l;
	int n, want;  /* callbacks wanted per call */
	dml_rpc_pending *big, *mute;
} loop_state;

static int loop_all_done(void *p)
{
	loop_state *st = p;
	for (int i = 0; i < st->n; i++)
		if (i % 2 ? st->l[i].k && !dml_rpc_pending_done(st->l[i].k)
		          : st->l[i].calls < st->want)
			return 0;
	return (!st->big || dml_rpc_pending_done(st->big)) &&
	       (!st->mute || dml_rpc_pending_done(st->mute));
}

static void test_event_loop_clients(void **state)
{
	(void)state;
	fixture f, mute;
	serve(&f, "127.0.0.1:0", NULL, 0);
	serve(&mute, "127.0.0.1:0", NULL, 0); /* accepts, never polled: silent */
	static dml_rpc_client *c[LOOP_NC + 1];
	static loop_call l[LOOP_NC];
	struct pollfd p;
	for (int i = 0; i < LOOP_NC; i++) {
		c[i] = dial(f.addr); /* the kernel accepts: nobody polls yet */
		/* the loop's from now on: dml_rpc_start only queues */
		assert_int_equal(dml_rpc_client_pollfds(c[i], &p, 1), 1);
		assert_true(p.fd >= 0 && p.events & POLLIN);
	}
	dml_rpc_client *cm = dial(mute.addr);
	assert_int_equal(dml_rpc_client_pollfds(cm, &p, 1), 1);
	/* a 4 MB request: more than the socket takes, so the loop writes it
	 * in pieces as the server (in this same thread) reads */
	enum { BIG = 1 << 20 };
	float *v = malloc(BIG * sizeof *v);
	assert_non_null(v);
	for (int i = 0; i < BIG; i++)
		v[i] = (float)(i % 3);
	sum_args big_args = {{v, BIG, 0}};
	sum_reply big_reply = {0};
	const int rounds = (int)test_scaled(5, 2);
	for (int round = 0; round < rounds; round++) {
		loop_state st = {l, LOOP_NC, round + 1, NULL, NULL};
		for (int i = 0; i < LOOP_NC; i++) {
			l[i].c = c[i];
			l[i].a = (Args){i, round + 2};
			l[i].r.C = -1;
			l[i].free_it = i % 4 == 0;
			assert_int_equal(dml_rpc_start(&l[i].k, c[i], &arith_multiply, &l[i].a,
			                               &l[i].r, 10000), 0);
			if (i % 2 == 0) /* even: a callback; odd: asked with pending_done */
				assert_int_equal(dml_rpc_pending_on_done(l[i].k, loop_done, &l[i]), 0);
			if (round == 0 && i == 0) /* started before the loop owned it */
				assert_int_equal(dml_rpc_pending_done(l[i].k), 0);
		}
		int64_t t0 = dml__now_us();
		if (round == 0) {
			assert_int_equal(dml_rpc_start(&st.big, c[1], &m_sum, &big_args,
			                               &big_reply, 10000), 0);
			assert_int_equal(dml_rpc_start(&st.mute, cm, &arith_multiply, &l[0].a,
			                               &l[0].r, 30), 0);
		}
		c[LOOP_NC] = cm;
		loop_until(f.srv, c, LOOP_NC + (round == 0), loop_all_done, &st);
		for (int i = 0; i < LOOP_NC; i++) {
			assert_int_equal(l[i].r.C, (int64_t)i * (round + 2));
			if (i % 2 == 0) {
				assert_int_equal(l[i].calls, round + 1); /* once per call */
				assert_int_equal(l[i].result, 0);
				assert_int_equal(l[i].reentry, DML_EBUSY);
			}
			if (l[i].k) {
				assert_int_equal(dml_rpc_pending_wait(l[i].k), 0); /* at once */
				dml_rpc_pending_free(l[i].k);
			}
		}
		if (round == 0) {
			assert_int_equal(dml_rpc_pending_wait(st.big), 0);
			assert_int_equal(big_reply.n, BIG);
			assert_true(big_reply.sum == (double)(BIG / 3) * 3);
			dml_rpc_pending_free(st.big);
			/* the silent server's call failed at its deadline, not before */
			assert_int_equal(dml_rpc_pending_wait(st.mute), DML_ETIMEDOUT);
			assert_true(dml__now_us() - t0 >= 30000);
			dml_rpc_pending_free(st.mute);
		}
	}
	/* the client of a server that went away reports it */
	dml_rpc_server_free(mute.srv);
	int rc = 0;
	for (int i = 0; i < 1000 && rc == 0; i++) {
		if (dml_rpc_client_pollfds(cm, &p, 1) == 1)
			assert_true(poll(&p, 1, 10000) == 1);
		rc = dml_rpc_client_poll(cm, 0);
	}
	assert_int_equal(rc, DML_ECONNLOST);
	assert_int_equal(dml_rpc_client_pollfds(cm, &p, 1), 0);
	for (int i = 0; i < LOOP_NC; i++)
		dml_rpc_free(c[i]);
	dml_rpc_free(cm);
	dml_rpc_server_free(f.srv);
	free(v);
}

/* ---- a host loop that blocks in its own poll() ------------------------- */

typedef struct timer_loop {
	dml_rpc_server *s;
	atomic_int stop;
	int rc;
	int wakeups;
	int ticks;
	int64_t tick_at[256]; /* us */
	int64_t closed_at[2]; /* us: when each raw peer saw its connection end */
} timer_loop;

static void on_tick(void *arg)
{
	timer_loop *t = arg;
	if (t->ticks < 256)
		t->tick_at[t->ticks] = dml__now_us();
	t->ticks++;
}

/* The host's loop: poll() on the server's descriptors for as long as
 * dml_rpc_server_next_timeout allows, then a step. Never a fixed tick. */
static void *timer_loop_main(void *p)
{
	timer_loop *t = p;
	struct pollfd pf[16];
	for (int i = 0; i < 100000 && !atomic_load(&t->stop); i++) {
		int n = dml_rpc_server_pollfds(t->s, pf, 16);
		dml_duration ms;
		if (n < 1 || n > 16 || dml_rpc_server_next_timeout(t->s, &ms)) {
			t->rc = -1000;
			return NULL;
		}
		if (ms == DML_INFINITE || ms > 1000)
			ms = 1000; /* so that the test's stop is seen */
		poll(pf, (nfds_t)n, (int)ms);
		t->wakeups++;
		int rc = dml_rpc_server_poll(t->s, 0);
		if (rc < 0) {
			t->rc = rc == DML_ESTOPPED ? 0 : rc;
			return NULL;
		}
	}
	return NULL;
}

/* Waits (bounded) for the server to end a raw connection; the time. */
static int64_t wait_closed(int fd)
{
	struct pollfd p = {fd, POLLIN, 0};
	assert_int_equal(poll(&p, 1, 20000), 1);
	char b[64];
	assert_true(recv(fd, b, sizeof b, 0) <= 0);
	return dml__now_us();
}

/* A host that blocks in poll() with the server's next timeout sees its
 * frame and idle timeouts and its ticks fire on time: never early, late
 * by at most a generous bound (valgrind), and without waking more than
 * the timers need. */
static void test_host_loop_timers(void **state)
{
	(void)state;
	const int64_t frame_ms = 150, idle_ms = 300, tick_ms = 50, slack_us = 1500000;
	dml_rpc_server_opts o = {0};
	o.frame_timeout = frame_ms;
	o.idle_timeout = idle_ms;
	fixture f;
	serve(&f, "127.0.0.1:0", &o, 0);
	timer_loop t = {0};
	t.s = f.srv;
	dml_duration ms;
	assert_int_equal(dml_rpc_server_next_timeout(f.srv, &ms), 0);
	assert_int_equal(ms, DML_INFINITE); /* nothing timing yet */
	assert_int_equal(dml_rpc_server_tick(f.srv, tick_ms, on_tick, &t), 0);
	assert_int_equal(dml_rpc_server_next_timeout(f.srv, &ms), 0);
	assert_int_equal(ms, 0); /* the first tick is due */
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, timer_loop_main, &t), 0);

	/* one peer starts a frame and stalls; one connects and says nothing */
	int stall = raw_connect(&f), idle = raw_connect(&f);
	int64_t t0 = dml__now_us();
	uint8_t part[8] = {64, 0, 0, 0, 1, 1, 0, 0}; /* a header, cut short */
	raw_send(stall, part, sizeof part);
	int64_t stall_closed = wait_closed(stall);
	int64_t idle_closed = wait_closed(idle);
	atomic_store(&t.stop, 1);
	dml_rpc_server_stop(f.srv);
	pthread_join(th, NULL);
	assert_int_equal(t.rc, 0);

	int64_t fs = stall_closed - t0, is = idle_closed - t0;
	print_message("frame timeout %lld ms: closed after %.1f ms; idle timeout %lld ms: "
	              "after %.1f ms; %d ticks of %lld ms, %d wake-ups\n",
	              (long long)frame_ms, fs / 1e3, (long long)idle_ms, is / 1e3, t.ticks,
	              (long long)tick_ms, t.wakeups);
	assert_true(fs >= frame_ms * 1000 && fs <= frame_ms * 1000 + slack_us);
	assert_true(is >= idle_ms * 1000 && is <= idle_ms * 1000 + slack_us);
	/* ticks: never early, and about as many as the time allows */
	int n = t.ticks < 256 ? t.ticks : 256;
	for (int i = 1; i < n; i++)
		assert_true(t.tick_at[i] - t.tick_at[i - 1] >= tick_ms * 1000 - 1000);
	int64_t span = dml__now_us() - t.tick_at[0];
	assert_true(t.ticks >= 2 && t.ticks <= span / (tick_ms * 1000) + 2);
	/* no busy loop: a wake-up per timer, connection event or tick, a few more */
	assert_true(t.wakeups <= 4 * t.ticks + 40);
	close(stall);
	close(idle);
	dml_rpc_server_free(f.srv);
}

/* ---- out of descriptors ------------------------------------------------- */

static double thread_cpu_s(pthread_t th)
{
	clockid_t id;
	struct timespec ts;
	if (pthread_getcpuclockid(th, &id) || clock_gettime(id, &ts))
		return -1;
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* In a child process (its descriptor limit is its own): with the limit
 * low and more connections coming than it allows, the server neither
 * spins nor stops serving the connections it has, and accepts again once
 * descriptors come back. Returns a code for the parent: 0 = all well. */
static int emfile_child(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 10;
	int base = dup(0); /* the lowest free descriptor: about how many are open */
	close(base);
	rl.rlim_cur = (rlim_t)base + 48;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		return 11;
	dml_rpc_server *s;
	dml_rpc_server_opts o = {0};
	o.max_conns = 1000; /* above what the limit allows: accept meets EMFILE */
	if (dml_rpc_server_new(&s, &o) ||
	    dml_rpc_server_register(s, &arith_multiply, h_multiply, NULL) ||
	    dml_rpc_server_listen(s, "127.0.0.1:0"))
		return 12;
	char addr[64];
	dml_rpc_server_addr(s, 0, addr, sizeof addr);
	fixture f = {0};
	f.srv = s;
	fixture_start(&f, 1);
	/* raw connections until the process is out of descriptors: each
	 * takes one here and one in the server (if it accepted it) */
	enum { MAXC = 200 };
	int fds[MAXC], n = 0;
	dml_rpc_client *first = NULL;
	if (dml_rpc_dial(&first, addr, NULL))
		return 13;
	Args x = {6, 7};
	Reply r;
	if (dml_rpc_call(first, &arith_multiply, &x, &r, 10000) || r.C != 42)
		return 14;
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)dml_rpc_server_port(s, 0));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	while (n < MAXC) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			break; /* EMFILE here too: the process is full */
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
			close(fd);
			break;
		}
		fds[n++] = fd;
	}
	if (n == MAXC)
		return 15; /* never ran out: the test proves nothing */
	/* out of descriptors, with connections waiting: the server must not
	 * spin. Its CPU over a window of 400 ms: */
	double c0 = thread_cpu_s(f.runners[0]);
	struct timespec win = {0, 400000000};
	nanosleep(&win, NULL);
	double used = thread_cpu_s(f.runners[0]) - c0;
	if (c0 < 0 || used > 0.1) {
		fprintf(stderr, "emfile: the server used %.3f s of CPU in 0.4 s\n", used);
		return 16;
	}
	/* the connection it has is still served */
	if (dml_rpc_call(first, &arith_multiply, &x, &r, 10000) || r.C != 42)
		return 17;
	/* descriptors come back: the server accepts and serves again */
	for (int i = 0; i < n; i++)
		close(fds[i]);
	dml_rpc_client *later = NULL;
	if (dml_rpc_dial(&later, addr, NULL))
		return 18;
	if (dml_rpc_call(later, &arith_multiply, &x, &r, 10000) || r.C != 42)
		return 19;
	dml_rpc_free(later);
	dml_rpc_free(first);
	fixture_stop(&f);
	return 0;
}

static void test_out_of_descriptors(void **state)
{
	(void)state;
	TEST_PLAIN_ONLY(); /* a CPU-time window: not under sanitizers or valgrind */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(emfile_child());
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- dead peers: heartbeats ------------------------------------------- */

static const dml_rpc_method m_park = PARK_METHOD;

/* A child process serving Test.Park on 127.0.0.1; writes its port to
 * `out` and serves until killed. */
static void park_server_child(int out)
{
	static park p = PARK_INIT;
	dml_rpc_server *s;
	if (dml_rpc_server_new(&s, NULL) || dml_rpc_server_register(s, &m_park, h_park, &p) ||
	    dml_rpc_server_listen(s, "127.0.0.1:0"))
		_exit(3);
	int port = dml_rpc_server_port(s, 0);
	if (write(out, &port, sizeof port) != (ssize_t)sizeof port)
		_exit(4);
	dml_rpc_server_run(s);
	_exit(0);
}

/* A server that stops (SIGSTOP: its kernel still answers, keepalive sees
 * nothing wrong) is noticed by the heartbeat within heartbeat_timeout,
 * also by a call with no deadline; while it runs, the heartbeat keeps a
 * parked call alive well past that time. */
static void test_heartbeat_stopped_server(void **state)
{
	(void)state;
	TEST_NOT_UNDER_VALGRIND();
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		park_server_child(pfd[1]);
	}
	close(pfd[1]);
	int port = 0;
	assert_int_equal(read(pfd[0], &port, sizeof port), (ssize_t)sizeof port);
	close(pfd[0]);
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
	dml_rpc_client_opts o = {0};
	o.heartbeat = 50;
	o.heartbeat_timeout = 300;
	dml_rpc_client *c;
	assert_int_equal(dml_rpc_dial(&c, addr, &o), 0);
	/* alive: parked for 900 ms, three heartbeat timeouts, and only the
	 * call's own deadline ends it */
	assert_int_equal(dml_rpc_call(c, &m_park, NULL, NULL, 900), DML_ETIMEDOUT);
	/* stopped: a call without a deadline ends after heartbeat_timeout */
	assert_int_equal(kill(pid, SIGSTOP), 0);
	int64_t t0 = dml__now_ms();
	int rc = dml_rpc_call(c, &m_park, NULL, NULL, 10000);
	int64_t took = dml__now_ms() - t0;
	kill(pid, SIGKILL); /* before any assertion: never leave it stopped */
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(rc, DML_ECONNLOST);
	print_message("stopped server noticed after %lld ms (heartbeat 50, timeout 300): %s\n",
	              (long long)took, dml_error_detail());
	/* the silence is counted from the last bytes received, which may be
	 * a heartbeat's reply up to one interval (50 ms) before t0 */
	assert_true(took >= 300 - 2 * 50 && took < 5000);
	assert_non_null(strstr(dml_error_detail(), "heartbeat_timeout"));
	dml_rpc_free(c);
}

/* The server's side: a client parked in a call that stops (SIGSTOP) is
 * dropped after heartbeat_timeout although it is owed a deferred reply,
 * and the reply is then refused (DML_ECLOSED); a parked client that
 * sends heartbeats is kept. */
static void test_heartbeat_timeout_server(void **state)
{
	(void)state;
	TEST_NOT_UNDER_VALGRIND();
	park p = PARK_INIT;
	dml_rpc_server_opts so = {0};
	so.heartbeat_timeout = 300;
	so.on_event = park_event;
	so.event_user = &p;
	fixture f;
	memset(&f, 0, sizeof f);
	assert_int_equal(dml_rpc_server_new(&f.srv, &so), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_park, h_park, &p), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
	fixture_start(&f, 1);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) { /* a worker parked for good, with heartbeats */
		dml_rpc_client_opts o = {0};
		o.heartbeat = 50;
		dml_rpc_client *c;
		if (dml_rpc_dial(&c, f.addr, &o))
			_exit(3);
		dml_rpc_call(c, &m_park, NULL, NULL, DML_INFINITE);
		_exit(0);
	}
	assert_true(park_wait(&p, &p.n, 1, 10000)); /* parked */
	/* heartbeats keep it: no close in three heartbeat timeouts */
	assert_false(park_wait(&p, &p.closed, 1, 900));
	assert_int_equal(kill(pid, SIGSTOP), 0);
	int64_t t0 = dml__now_ms();
	int closed = park_wait(&p, &p.closed, 1, 10000);
	int64_t took = dml__now_ms() - t0;
	kill(pid, SIGKILL); /* before any assertion: never leave it stopped */
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(closed);
	print_message("stopped client dropped after %lld ms: %s\n", (long long)took,
	              p.close_why);
	assert_true(took < 5000);
	assert_int_equal(p.close_reason, DML_ETIMEDOUT);
	assert_non_null(strstr(p.close_why, "heartbeat"));
	assert_int_equal(dml_rpc_deferred_reply(p.d[0], 0, NULL, NULL), DML_ECLOSED);
	fixture_stop(&f);
}

/* ---- deferred replies: a barrier -------------------------------------- */

typedef struct barrier_args { int64_t parties; } barrier_args;
typedef struct barrier_reply { int64_t arrived; } barrier_reply;
static const dml_field barrier_args_f[] = {DML_FIELD(barrier_args, parties, DML_I64)};
static const dml_field barrier_reply_f[] = {DML_FIELD(barrier_reply, arrived, DML_I64)};
static const dml_type barrier_args_t = DML_TYPE(barrier_args, barrier_args_f);
static const dml_type barrier_reply_t = DML_TYPE(barrier_reply, barrier_reply_f);
static const dml_rpc_method m_barrier = {"Test.Barrier", &barrier_args_t, &barrier_reply_t};

enum { BARRIER_MAX = 64 };
typedef struct barrier {
	pthread_mutex_t mu;
	dml_rpc_deferred *waiting[BARRIER_MAX];
	int n;
	int generation;
} barrier;

/* Defers every call until `parties` have arrived, then answers them all
 * (from the thread of the last arrival) with the number that arrived. */
static int h_barrier(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	barrier *b = u;
	int64_t parties = ((const barrier_args *)a)->parties;
	if (parties < 1 || parties > BARRIER_MAX)
		return dml_rpc_ctx_errorf(ctx, "bad parties");
	pthread_mutex_lock(&b->mu);
	if (b->n + 1 == parties) {
		barrier_reply rep = {parties};
		for (int i = 0; i < b->n; i++)
			assert_int_equal(dml_rpc_deferred_reply(b->waiting[i], 0, &rep, NULL), 0);
		b->n = 0;
		b->generation++;
		pthread_mutex_unlock(&b->mu);
		((barrier_reply *)r)->arrived = parties;
		return 0;
	}
	int rc = dml_rpc_deferred_new(&b->waiting[b->n], ctx);
	if (!rc) {
		b->n++;
		assert_int_equal(dml_rpc_deferred_new(&(dml_rpc_deferred *){0}, ctx), DML_EINVAL);
	}
	pthread_mutex_unlock(&b->mu);
	return rc;
}

typedef struct barrier_client {
	const char *addr;
	int parties, rounds, rc;
} barrier_client;

static void *barrier_thread(void *p)
{
	barrier_client *bc = p;
	dml_rpc_client *c;
	bc->rc = dml_rpc_dial(&c, bc->addr, NULL);
	for (int i = 0; !bc->rc && i < bc->rounds; i++) {
		barrier_args a = {bc->parties};
		barrier_reply r = {0};
		bc->rc = dml_rpc_call(c, &m_barrier, &a, &r, 20000);
		if (!bc->rc && r.arrived != bc->parties)
			bc->rc = -100;
	}
	dml_rpc_free(c);
	return NULL;
}

/* 6 clients pass a barrier 200 times; the server has 2 run threads, so
 * the waiting calls must not hold them. */
static void test_deferred_barrier(void **state)
{
	(void)state;
	barrier b = {.n = 0};
	pthread_mutex_init(&b.mu, NULL);
	fixture f;
	assert_int_equal(dml_rpc_server_new(&f.srv, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_barrier, h_barrier, &b), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
	fixture_start(&f, 2);
	enum { N = 6 };
	pthread_t t[N];
	barrier_client bc[N];
	for (int i = 0; i < N; i++) {
		bc[i] = (barrier_client){f.addr, N, 200, 0};
		assert_int_equal(pthread_create(&t[i], NULL, barrier_thread, &bc[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(bc[i].rc, 0);
	}
	assert_int_equal(b.generation, 200);
	assert_int_equal(b.n, 0);
	fixture_stop(&f);
	pthread_mutex_destroy(&b.mu);
}

/* A deferred call does not hold up later calls on the same connection, and
 * its reply, sent later, finds its caller; a reply for a closed connection
 * is dropped with DML_ECLOSED. */
static void test_deferred_out_of_order(void **state)
{
	(void)state;
	barrier b = {.n = 0};
	pthread_mutex_init(&b.mu, NULL);
	fixture f;
	assert_int_equal(dml_rpc_server_new(&f.srv, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_barrier, h_barrier, &b), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &arith_multiply, h_multiply, NULL), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
	fixture_start(&f, 1);
	dml_rpc_client *c;
	assert_int_equal(dml_rpc_dial(&c, f.addr, NULL), 0);
	barrier_args ba = {2};
	barrier_reply br = {0};
	dml_rpc_pending *p;
	assert_int_equal(dml_rpc_start(&p, c, &m_barrier, &ba, &br, 20000), 0);
	for (int i = 0; i < 100; i++) { /* answered while the barrier waits */
		Args a = {i, 7};
		Reply r;
		assert_int_equal(dml_rpc_call(c, &arith_multiply, &a, &r, 20000), 0);
		assert_int_equal(r.C, 7 * i);
	}
	barrier_reply br2 = {0};
	assert_int_equal(dml_rpc_call(c, &m_barrier, &ba, &br2, 20000), 0);
	assert_int_equal(dml_rpc_pending_wait(p), 0);
	dml_rpc_pending_free(p);
	assert_int_equal(br.arrived, 2);
	assert_int_equal(br2.arrived, 2);

	/* a waiter whose client went away */
	barrier_args b3 = {3};
	assert_int_equal(dml_rpc_start(&p, c, &m_barrier, &b3, &br, 20000), 0);
	assert_int_equal(dml_rpc_flush(c, 10000), 0);
	for (;;) { /* until the server holds it */
		pthread_mutex_lock(&b.mu);
		int n = b.n;
		pthread_mutex_unlock(&b.mu);
		if (n == 1)
			break;
		sched_yield();
	}
	dml_rpc_pending_free(p);
	dml_rpc_free(c);
	/* whether the server has seen the close yet or not, the reply is
	 * dropped or written into a dead socket, never a crash */
	pthread_mutex_lock(&b.mu);
	barrier_reply rep = {3};
	int rc = dml_rpc_deferred_reply(b.waiting[0], 0, &rep, NULL);
	assert_true(rc == 0 || rc == DML_ECLOSED);
	b.n = 0;
	pthread_mutex_unlock(&b.mu);
	fixture_stop(&f);
	pthread_mutex_destroy(&b.mu);
}

/* Resident memory of this process, bytes. */
static size_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* Whether resident-memory figures mean anything here: not under ASan or
 * valgrind, whose freed-block queues keep freed memory resident. */
static int rss_meaningful(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return 0;
#else
	const char *pre = getenv("LD_PRELOAD"); /* valgrind preloads vgpreload_* */
	return !pre || !strstr(pre, "vgpreload");
#endif
}

/* A connection keeps its large input buffer between large frames (back to
 * back calls reuse it), and frees it about a second after the last one,
 * also with every timeout off (no sweep would run otherwise). */
static void test_large_buffer_released(void **state)
{
	(void)state;
	enum { N = 8 * 1000 * 1000 }; /* 32 MB */
	dml_rpc_server_opts off = {.frame_timeout = DML_INFINITE, .write_timeout = DML_INFINITE,
	                           .idle_timeout = DML_INFINITE};
	fixture f;
	serve(&f, "127.0.0.1:0", &off, 1);
	dml_rpc_client *c = dial(f.addr);
	float *v = calloc(N, sizeof *v);
	assert_non_null(v);
	v[0] = 1;
	size_t base = rss_bytes();
	sum_args sa = {{v, N, 0}};
	sum_reply sr;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(dml_rpc_call(c, &m_sum, &sa, &sr, 30000), 0);
		assert_true(sr.sum == 1);
	}
	size_t kept = rss_bytes();
	int64_t t0 = dml__now_ms(), freed_ms = -1;
	while (dml__now_ms() - t0 < 10000) { /* bounded: 10 s */
		if (rss_bytes() < base + ((size_t)8 << 20)) {
			freed_ms = dml__now_ms() - t0;
			break;
		}
		poll(NULL, 0, 20);
	}
	if (rss_meaningful()) {
		assert_true(kept > base + ((size_t)24 << 20)); /* kept after the calls */
		assert_true(freed_ms >= 0);                    /* then freed */
	}
	assert_int_equal(mul(c, 6, 7), 42); /* and the connection works on */
	free(v);
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* 300 tiny pipelined requests, each asking for a 1.3 MB reply, sent at
 * once: the server must not build all 390 MB of replies before the peer
 * reads them (it stops serving over 4 MiB unsent), and every reply must
 * still arrive, in order, as the peer reads. */
static void test_small_requests_large_replies_bounded(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	int fd = raw_connect(&f);
	mixed_args ma = {MIX_MAX, MIX_MAX, MIX_MAX};
	uint8_t payload[64];
	size_t plen;
	assert_int_equal(dml_type_encode(&mixed_args_t, &ma, payload, sizeof payload, &plen), 0);
	enum { N = 300 };
	static uint8_t reqs[N * 128];
	size_t total = 0;
	for (int i = 0; i < N; i++)
		total += request(reqs + total, (uint64_t)i + 1, "Test.Mixed", payload, plen);
	size_t base = rss_bytes(), peak = base;
	size_t off = 0;
	while (off < total) {
		ssize_t w = send(fd, reqs + off, total - off, MSG_NOSIGNAL);
		assert_true(w > 0);
		off += (size_t)w;
	}
	/* read every reply; watch memory while doing so */
	static uint8_t buf[1 << 16];
	uint64_t next_seq = 1;
	size_t have = 0, need = 20;
	uint64_t frame_left = 0;
	while (next_seq <= N) {
		ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
		assert_true(r > 0);
		have += (size_t)r;
		size_t pos = 0;
		while (have - pos >= need || frame_left) {
			if (frame_left) {
				size_t take = have - pos < frame_left ? have - pos : frame_left;
				pos += take;
				frame_left -= take;
				if (frame_left || pos == have)
					break;
				continue;
			}
			uint32_t len;
			uint64_t seq;
			uint32_t status;
			memcpy(&len, buf + pos, 4);
			memcpy(&seq, buf + pos + 8, 8);
			memcpy(&status, buf + pos + 16, 4);
			assert_int_equal(seq, next_seq); /* in order */
			assert_int_equal(status, 0);
			next_seq++;
			pos += 20;
			frame_left = len - 16; /* the rest of the frame after the header */
		}
		memmove(buf, buf + pos, have - pos);
		have -= pos;
		size_t now = rss_bytes();
		if (now > peak)
			peak = now;
	}
	if (rss_meaningful()) { /* else checked by the plain run */
		if (peak - base >= (size_t)100 << 20)
			print_message("resident grew by %zu MB\n", (peak - base) >> 20);
		assert_true(peak - base < (size_t)100 << 20);
	}
	close(fd);
	fixture_stop(&f);
}

/* Waits (bounded, poll with a timeout) until the peer closes `fd`:
 * returns the milliseconds it took, or -1 if it stayed open. Reads and
 * discards what arrives meanwhile. */
static int64_t await_close(int fd, int64_t limit_ms)
{
	static uint8_t sink[1 << 16];
	int64_t t0 = dml__now_ms();
	for (;;) {
		int64_t left = t0 + limit_ms - dml__now_ms();
		if (left <= 0)
			return -1;
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, (int)left) != 1)
			return -1;
		ssize_t r = recv(fd, sink, sizeof sink, 0);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return dml__now_ms() - t0;
		if (r < 0 && errno != EINTR && errno != EAGAIN)
			return -1;
	}
}

/* ---- regressions found in review of the edge-triggered server -------- */

/* A request and the peer's end of stream, both queued before the server
 * reads them (its only thread is held): the server answers and then sees
 * the end of stream and closes, with every timeout off. */
static void test_data_then_eof(void **state)
{
	(void)state;
	gate_init(&the_gate);
	dml_rpc_server_opts off = {.frame_timeout = DML_INFINITE, .write_timeout = DML_INFINITE,
	                           .idle_timeout = DML_INFINITE};
	fixture f;
	serve(&f, "127.0.0.1:0", &off, 1);
	dml_rpc_client *c = dial(f.addr);
	dml_rpc_pending *k;
	assert_int_equal(dml_rpc_start(&k, c, &m_gate, NULL, NULL, 30000), 0);
	assert_int_equal(dml_rpc_flush(c, 10000), 0);
	sem_wait(&the_gate.entered); /* the server thread is held */
	int fd = raw_connect(&f);
	uint8_t req[128], payload[64];
	size_t plen;
	Args x = {6, 7};
	assert_int_equal(dml_type_encode(&args_type, &x, payload, sizeof payload, &plen), 0);
	size_t n = request(req, 1, "Arith.Multiply", payload, plen);
	raw_send(fd, req, n);
	assert_int_equal(shutdown(fd, SHUT_WR), 0); /* FIN right behind it */
	gate_open(&the_gate);
	assert_int_equal(dml_rpc_pending_wait(k), 0);
	dml_rpc_pending_free(k);
	assert_true(await_close(fd, 5000) >= 0); /* the reply, then the close */
	close(fd);
	dml_rpc_free(c);
	fixture_stop(&f);
	gate_destroy(&the_gate);
}

/* A deferred reply sent from inside a handler that holds a lock (the
 * barrier of docs/rpc.md), to a connection whose socket is full: the
 * replying thread must not go on to serve that connection's next request,
 * whose handler takes the same lock. */
typedef struct big_reply { dml_bytes b; } big_reply;
static const dml_field big_reply_f[] = {DML_FIELD(big_reply, b, DML_BYTES)};
static const dml_type big_reply_t = DML_TYPE(big_reply, big_reply_f);
static const dml_rpc_method m_big = {"T.Big", NULL, &big_reply_t};
static const dml_rpc_method m_bar = {"T.Bar", NULL, NULL};
static uint8_t big_blob[2 << 20];
static pthread_mutex_t bar_mu;
static dml_rpc_deferred *bar_wait;
static sem_t bar_deferred;
static atomic_int bar_reentered;

static int h_big(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	(void)u;
	((big_reply *)r)->b = (dml_bytes){big_blob, sizeof big_blob, 0};
	return 0;
}

static int h_bar(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	(void)r;
	(void)u;
	if (pthread_mutex_lock(&bar_mu)) { /* EDEADLK: this thread holds it */
		atomic_store(&bar_reentered, 1);
		return DML_EBUSY;
	}
	int rc = 0;
	if (!bar_wait) { /* the first waits */
		rc = dml_rpc_deferred_new(&bar_wait, ctx);
		sem_post(&bar_deferred);
	} else { /* the second releases it, holding the lock */
		dml_rpc_deferred_reply(bar_wait, 0, NULL, NULL);
		bar_wait = NULL;
	}
	pthread_mutex_unlock(&bar_mu);
	return rc;
}

static int unix_connect(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return RAW_OVER(fd, 0);
}

static void test_deferred_reply_runs_no_handler(void **state)
{
	(void)state;
	pthread_mutexattr_t at;
	pthread_mutexattr_init(&at);
	pthread_mutexattr_settype(&at, PTHREAD_MUTEX_ERRORCHECK);
	pthread_mutex_init(&bar_mu, &at);
	pthread_mutexattr_destroy(&at);
	sem_init(&bar_deferred, 0, 0);
	gate_init(&the_gate);
	bar_wait = NULL;
	atomic_store(&bar_reentered, 0);
	char path[64], addr[80];
	snprintf(path, sizeof path, "/tmp/distml-test-defer-%d.sock", (int)getpid());
	snprintf(addr, sizeof addr, "unix:%s", path);
	unlink(path);
	fixture f;
	memset(&f, 0, sizeof f);
	assert_int_equal(dml_rpc_server_new(&f.srv, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_big, h_big, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_bar, h_bar, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_gate, h_gate, &the_gate), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, addr), 0);
	fixture_start(&f, 1);
	int y = unix_connect(path), x = unix_connect(path);
	uint8_t req[256];
	raw_send(y, req, request(req, 1, "T.Bar", NULL, 0)); /* deferred */
	sem_wait(&bar_deferred);
	/* a 2 MB reply that y does not read: its socket is full, < 4 MiB owed */
	raw_send(y, req, request(req, 2, "T.Big", NULL, 0));
	/* x: a call that holds the only server thread, then the releasing Bar */
	size_t n = request(req, 1, "Test.Gate", NULL, 0);
	n += request(req + n, 2, "T.Bar", NULL, 0);
	raw_send(x, req, n);
	sem_wait(&the_gate.entered);
	raw_send(y, req, request(req, 3, "T.Bar", NULL, 0)); /* waits in the socket */
	gate_open(&the_gate);
	/* x gets both replies; the Bar that released y's ran no other Bar */
	uint8_t buf[256];
	size_t have = 0;
	while (have < 40) {
		struct pollfd p = {x, POLLIN, 0};
		assert_int_equal(poll(&p, 1, 10000), 1);
		ssize_t r = recv(x, buf + have, sizeof buf - have, 0);
		assert_true(r > 0);
		have += (size_t)r;
	}
	assert_int_equal(atomic_load(&bar_reentered), 0);
	close(x);
	close(y);
	fixture_stop(&f);
	if (bar_wait) /* y's third Bar, deferred and never released */
		dml_rpc_deferred_reply(bar_wait, 0, NULL, NULL);
	unlink(path);
	gate_destroy(&the_gate);
	sem_destroy(&bar_deferred);
	pthread_mutex_destroy(&bar_mu);
}


/* Waits (bounded) until the peer resets `fd`, without reading from it:
 * 0, or -1 if that did not happen within limit_ms. */
static int await_reset(int fd, int limit_ms)
{
	struct pollfd p = {fd, 0, 0}; /* only errors and hang-ups */
	if (poll(&p, 1, limit_ms) != 1 || !(p.revents & (POLLERR | POLLHUP)))
		return -1;
#ifdef RAW_RESET_IS_CLOSE
	return 0; /* a relayed socket: the reset arrives as a close */
#endif
	int err = 0;
	socklen_t len = sizeof err;
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
	return err == ECONNRESET ? 0 : -1;
}

/* max_conns: a connection beyond the limit is accepted and closed at once,
 * those within it are served, and a slot freed by a close is taken again. */
static void test_max_conns(void **state)
{
	(void)state;
	dml_rpc_server_opts o = {.max_conns = 2};
	fixture f;
	serve(&f, "127.0.0.1:0", &o, 1);
	dml_rpc_client *a = dial(f.addr), *b = dial(f.addr);
	assert_int_equal(mul(a, 2, 3), 6);
	assert_int_equal(mul(b, 4, 5), 20);
	int extra = raw_connect(&f); /* the third: closed by the server */
	assert_true(await_close(extra, 10000) >= 0);
	close(extra);
	assert_int_equal(mul(a, 6, 7), 42);
	dml_rpc_free(b);
	/* b's slot comes back once the server has seen the close: a new client
	 * is served, within a bounded number of tries */
	int served = 0;
	for (int i = 0; i < 200 && !served; i++) {
		dml_rpc_client *c;
		if (dml_rpc_dial(&c, f.addr, NULL)) /* over TLS: the handshake */
			continue;
		Args x = {8, 8};
		Reply r = {0};
		served = dml_rpc_call(c, &arith_multiply, &x, &r, 10000) == 0 && r.C == 64;
		dml_rpc_free(c);
	}
	assert_true(served);
	dml_rpc_free(a);
	fixture_stop(&f);
}

/* A frame sent half-way and left there, a peer that never reads its
 * replies, and a silent peer are each dropped after their timeout, while a
 * well-behaved client is served throughout; with timeouts off, a silent
 * peer stays. */
static void test_server_timeouts(void **state)
{
	(void)state;
	dml_rpc_server_opts o = {.frame_timeout = 1000, .write_timeout = 1500,
	                         .idle_timeout = DML_INFINITE};
	fixture f;
	serve(&f, "127.0.0.1:0", &o, 2);
	dml_rpc_client *good = dial(f.addr);

	int slow = raw_connect(&f); /* half a header, then nothing */
	assert_int_equal(send(slow, "\x40\0\0\0\1\1", 6, 0), 6);
	int deaf = raw_connect(&f); /* asks for 1.3 MB replies, never reads */
	int rcv = 4096;
	setsockopt(deaf, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
	mixed_args ma = {MIX_MAX, MIX_MAX, MIX_MAX};
	uint8_t payload[64], req[128];
	size_t plen;
	assert_int_equal(dml_type_encode(&mixed_args_t, &ma, payload, sizeof payload, &plen), 0);
	for (int i = 0; i < 20; i++) {
		size_t n = request(req, (uint64_t)i + 1, "Test.Mixed", payload, plen);
		assert_int_equal(send(deaf, req, n, MSG_NOSIGNAL), (ssize_t)n);
	}
	assert_int_equal(mul(good, 6, 7), 42);
	assert_true(await_close(slow, 10000) >= 0);
	assert_int_equal(mul(good, 6, 8), 48);
	/* the deaf peer: its unread replies stall, then it is reset (reading
	 * meanwhile would be progress and keep it) */
	assert_int_equal(await_reset(deaf, 10000), 0);
	for (int i = 0; i < 50; i++) /* the good client was never held up */
		assert_int_equal(mul(good, i, 2), 2 * i);
	close(slow);
	close(deaf);

	/* a whole frame sent byte by byte, one byte every 20 ms (it would take
	 * over 2 s): progress does not reset the frame timer, so the peer is
	 * dropped about frame_timeout after its first byte, and the good
	 * client is served meanwhile */
	int drip = raw_connect(&f);
	static const uint8_t zeros[200];
	uint8_t big[256];
	size_t dn = request(big, 99, "Test.Echo", zeros, sizeof zeros);
	int64_t t0 = dml__now_ms();
	size_t sent = 0;
	for (; sent < dn; sent++) { /* bounded: dn bytes */
		struct pollfd p = {drip, POLLIN, 0};
		if (poll(&p, 1, 20) == 1) /* the server closed it (EOF or reset) */
			break;
		if (send(drip, big + sent, 1, MSG_NOSIGNAL) != 1)
			break;
		if (sent % 10 == 0)
			assert_int_equal(mul(good, (int64_t)sent, 3), 3 * (int64_t)sent);
	}
	int64_t took = dml__now_ms() - t0;
	assert_true(sent < dn);       /* cut off before the frame was whole */
	assert_true(took >= 900);     /* not before frame_timeout (1000 ms) */
	assert_true(await_close(drip, 10000) >= 0);
	close(drip);
	assert_int_equal(mul(good, 7, 7), 49);
	dml_rpc_free(good);
	fixture_stop(&f);

	/* a silent connection is dropped after the idle timeout */
	dml_rpc_server_opts idle = {.idle_timeout = 300};
	serve(&f, "127.0.0.1:0", &idle, 1);
	int silent = raw_connect(&f);
	assert_true(await_close(silent, 10000) >= 250);
	close(silent);
	fixture_stop(&f);

	/* timeouts off: a silent connection stays open */
	dml_rpc_server_opts off = {.frame_timeout = DML_INFINITE, .write_timeout = DML_INFINITE,
	                           .idle_timeout = DML_INFINITE};
	serve(&f, "127.0.0.1:0", &off, 1);
	silent = raw_connect(&f);
	assert_int_equal(await_close(silent, 600), -1);
	close(silent);
	fixture_stop(&f);
	dml_rpc_server_opts bad = {.idle_timeout = -5};
	dml_rpc_server *s;
	assert_int_equal(dml_rpc_server_new(&s, &bad), DML_EINVAL);
}

/* A client with reconnect fails fast while the server is away and comes
 * back by itself when it returns; without reconnect it stays failed. */
static void test_client_reconnect(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 1);
	char addr[128];
	strcpy(addr, f.addr);
	dml_rpc_client_opts co = {.reconnect = 1, .backoff_min = 5, .backoff_max = 40,
	                          .dial_timeout = 2000};
	dml_rpc_client *c, *plain;
	assert_int_equal(dml_rpc_dial(&c, addr, &co), 0);
	assert_int_equal(dml_rpc_dial(&plain, addr, NULL), 0);
	assert_int_equal(mul(c, 3, 3), 9);
	assert_int_equal(mul(plain, 3, 3), 9);
	fixture_stop(&f); /* the server goes away: connections close */

	Args a = {2, 2};
	Reply r;
	int64_t t0 = dml__now_ms();
	int rc;
	int tries = 0;
	do { /* the first call notices the loss, later ones fail fast */
		rc = dml_rpc_call(c, &arith_multiply, &a, &r, 5000);
		tries++;
	} while (rc == 0 && tries < 100);
	assert_true(rc == DML_ECONNLOST || rc == DML_ECONNREFUSED);
	for (int i = 0; i < 20; i++) {
		rc = dml_rpc_call(c, &arith_multiply, &a, &r, 5000);
		assert_true(rc == DML_ECONNLOST);
	}
	assert_true(dml__now_ms() - t0 < 4000); /* nothing hung */

	/* the server is back on the same address */
	serve(&f, addr, NULL, 1);
	t0 = dml__now_ms();
	do { /* bounded: at most backoff_max between attempts */
		rc = dml_rpc_call(c, &arith_multiply, &a, &r, 5000);
	} while (rc == DML_ECONNLOST && dml__now_ms() - t0 < 5000);
	assert_int_equal(rc, 0);
	assert_int_equal(r.C, 4);
	for (int i = 0; i < 100; i++)
		assert_int_equal(mul(c, i, 3), 3 * i);
	/* without the option the old client stays failed */
	do {
		rc = dml_rpc_call(plain, &arith_multiply, &a, &r, 5000);
	} while (rc == 0);
	assert_int_equal(rc, DML_ECONNLOST);
	assert_int_equal(dml_rpc_call(plain, &arith_multiply, &a, &r, 5000), DML_ECONNLOST);
	dml_rpc_free(plain);
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* Limits on calls in flight: a client refuses more than max_in_flight
 * pending calls (DML_EBUSY, nothing sent), and a server owes at most
 * max_deferred deferred replies per connection (the handler's defer fails,
 * the caller gets an error reply). */
static void test_in_flight_limits(void **state)
{
	(void)state;
	barrier b = {.n = 0};
	pthread_mutex_init(&b.mu, NULL);
	fixture f;
	dml_rpc_server_opts so = {.max_deferred = 3};
	assert_int_equal(dml_rpc_server_new(&f.srv, &so), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_barrier, h_barrier, &b), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &arith_multiply, h_multiply, NULL), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
	fixture_start(&f, 1);
	dml_rpc_client_opts co = {.max_in_flight = 4};
	dml_rpc_client *c;
	assert_int_equal(dml_rpc_dial(&c, f.addr, &co), 0);
	barrier_args ba = {50};
	barrier_reply br[5];
	dml_rpc_pending *p[5];
	for (int i = 0; i < 4; i++)
		assert_int_equal(dml_rpc_start(&p[i], c, &m_barrier, &ba, &br[i], 20000), 0);
	assert_int_equal(dml_rpc_start(&p[4], c, &m_barrier, &ba, &br[4], 20000), DML_EBUSY);
	/* 3 are held by the server; the 4th could not be deferred */
	assert_int_equal(dml_rpc_pending_wait(p[3]), DML_EHANDLER);
	dml_rpc_pending_free(p[3]);
	Args a = {6, 7};
	Reply r;
	assert_int_equal(dml_rpc_call(c, &arith_multiply, &a, &r, 20000), 0);
	assert_int_equal(r.C, 42);
	/* release the three with a fourth party from another connection */
	pthread_mutex_lock(&b.mu);
	barrier_reply rep = {50};
	for (int i = 0; i < b.n; i++)
		assert_int_equal(dml_rpc_deferred_reply(b.waiting[i], 0, &rep, NULL), 0);
	assert_int_equal(b.n, 3);
	b.n = 0;
	pthread_mutex_unlock(&b.mu);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(dml_rpc_pending_wait(p[i]), 0);
		assert_int_equal(br[i].arrived, 50);
		dml_rpc_pending_free(p[i]);
	}
	dml_rpc_free(c);
	fixture_stop(&f);
	pthread_mutex_destroy(&b.mu);
	dml_rpc_client_opts bad = {.max_in_flight = -1};
	assert_int_equal(dml_rpc_dial(&c, "127.0.0.1:1", &bad), DML_EINVAL);
}

static void test_stop_wakes_every_runner(void **state)
{
	(void)state;
	fixture f;
	serve(&f, "127.0.0.1:0", NULL, 4);
	dml_rpc_client *c = dial(f.addr);
	assert_int_equal(mul(c, 1, 1), 1);
	fixture_stop(&f); /* joins all four */
	dml_rpc_free(c);
}

/* Over the buffering stream (test_rpc_stream.c), the tests that speak
 * plain frames to a raw socket are left out; over TLS they run relayed,
 * in the plain pass (not under sanitizers or valgrind). */
#ifdef RAW_RESET_IS_CLOSE
typedef struct plain_pass_test { void (*fn)(void **); } plain_pass_test;
static void plain_pass_only(void **state)
{
	TEST_PLAIN_ONLY();
	((plain_pass_test *)*state)->fn(state);
}
#define PLAIN_ONLY(t) {#t " (relayed through TLS)", plain_pass_only, NULL, NULL, \
                       &(plain_pass_test){t}},
#elif defined(RPC_OVER_BUFSTREAM)
static void plain_only(void **state)
{
	(void)state;
	skip();
}
#define PLAIN_ONLY(t) {#t " (plain frames)", plain_only, NULL, NULL, NULL},
#else
#define PLAIN_ONLY(t) cmocka_unit_test(t),
#endif
/* Over TLS (test_rpc_tls.c) a dial completes a handshake, so a test that
 * dials a server no thread serves yet cannot run. */
#ifdef RPC_OVER_TLS
static void dials_unserved(void **state)
{
	(void)state;
	skip();
}
#define NOT_OVER_TLS(t) {#t " (dials an unserved server)", dials_unserved, NULL, NULL, NULL},
#else
#define NOT_OVER_TLS(t) cmocka_unit_test(t),
#endif

int main(void)
{
#ifdef RPC_OVER_BUFSTREAM
	dml__stream_set_wrap(bs_wrap);
#endif
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_and_errors),
		cmocka_unit_test(test_unix_socket),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_peer_address),
		cmocka_unit_test(test_dial_localhost),
		cmocka_unit_test(test_dial_errors_name_the_address),
		cmocka_unit_test(test_setup_errors),
		cmocka_unit_test(test_dial_timeout),
		cmocka_unit_test(test_many_clients),
		cmocka_unit_test(test_shared_client),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_large_arrays),
		cmocka_unit_test(test_large_reply_layouts),
		PLAIN_ONLY(test_unread_replies_bounded)
		cmocka_unit_test(test_large_buffer_released),
		PLAIN_ONLY(test_small_requests_large_replies_bounded)
		PLAIN_ONLY(test_server_timeouts)
		PLAIN_ONLY(test_max_conns)
		PLAIN_ONLY(test_data_then_eof)
		PLAIN_ONLY(test_deferred_reply_runs_no_handler)
		cmocka_unit_test(test_client_reconnect),
		cmocka_unit_test(test_deadline),
		cmocka_unit_test(test_spin),
		cmocka_unit_test(test_stop_in_flight),
		cmocka_unit_test(test_close_pending),
		PLAIN_ONLY(test_hostile_frames)
		PLAIN_ONLY(test_version_refused)
		PLAIN_ONLY(test_version_client)
		cmocka_unit_test(test_has_method),
		cmocka_unit_test(test_frame_limits),
		cmocka_unit_test(test_1000_connections),
		cmocka_unit_test(test_host_event_loop),
		PLAIN_ONLY(test_host_loop_timers)
		NOT_OVER_TLS(test_event_loop_clients)
		cmocka_unit_test(test_server_stats),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_out_of_descriptors),
		cmocka_unit_test(test_heartbeat_stopped_server),
		cmocka_unit_test(test_heartbeat_timeout_server),
		cmocka_unit_test(test_stop_wakes_every_runner),
		cmocka_unit_test(test_deferred_barrier),
		cmocka_unit_test(test_deferred_out_of_order),
		cmocka_unit_test(test_in_flight_limits),
	};
	if (getenv("DML_TEST_ONLY")) /* e.g. DML_TEST_ONLY='test_pipe*' */
		cmocka_set_test_filter(getenv("DML_TEST_ONLY"));
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
#ifdef RPC_OVER_BUFSTREAM
	if (!getenv("DML_TEST_ONLY") && bs_streams < 40) { /* the suite did run over the stream */
		fprintf(stderr, "only %llu buffering streams made\n",
		        (unsigned long long)bs_streams);
		failed++;
	}
#endif
	return failed;
}

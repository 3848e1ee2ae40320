/* test_security.c - hostile peers with well-formed requests: tokens and
 * the authorize hook, exactly-once ids bound to identities (a forged id,
 * a table filled from one peer), clocks claimed by identities (spoofing),
 * read-only identities, and per-address connection budgets (an idle
 * flood). Each attack is one that succeeded before issue 12. */
#include "testutil.h"
#include "../examples/arith.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "ps_wire.h"

/* ---- fixtures ---------------------------------------------------------- */

static const dml_rpc_token tokens[] = {
	{"victim", "victim-secret-0123456789"},
	{"evil", "evil-secret-0123456789abcdef"},
	{"w0", "worker-0-secret-0123456789"},
	{"w1", "worker-1-secret-0123456789"},
	{"ro", "reader-secret-0123456789"},
};
#define NTOKENS (sizeof tokens / sizeof tokens[0])

static const char *secret_of(const char *name)
{
	for (size_t i = 0; i < NTOKENS; i++)
		if (!strcmp(tokens[i].name, name))
			return tokens[i].secret;
	return NULL;
}

/* Test.Who: "<auth>:<identity>" of the caller's connection. */
typedef struct who_msg {
	dml_str s;
} who_msg;
static const dml_field who_f[] = {DML_FIELD(who_msg, s, DML_STR)};
static const dml_type who_t = DML_TYPE(who_msg, who_f);
static const dml_rpc_method m_who = {"Test.Who", NULL, &who_t};

static int h_who(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	(void)u;
	static _Thread_local char buf[DML_RPC_MAX_IDENTITY + 16];
	dml_rpc_auth au;
	const char *id = dml_rpc_ctx_identity(ctx, &au);
	snprintf(buf, sizeof buf, "%s:%s", au == DML_RPC_AUTH_TOKEN ? "token"
	         : au == DML_RPC_AUTH_CERT ? "cert" : "addr", id);
	((who_msg *)r)->s = (dml_str){buf, strlen(buf), 0};
	return 0;
}

static int h_mul(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	((Reply *)r)->C = ((const Args *)a)->A * ((const Args *)a)->B;
	return 0;
}

/* SHED events, counted, and CLOSED ones whose reason has `closed_on`. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int shed, closed;
	char why[160];
	const char *closed_on;
} events = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, "", NULL};

static void on_event(const dml_rpc_event *ev, void *user)
{
	(void)user;
	pthread_mutex_lock(&events.mu);
	if (ev->kind == DML_RPC_EV_SHED) {
		events.shed++;
		snprintf(events.why, sizeof events.why, "%s", ev->why);
	} else if (ev->kind == DML_RPC_EV_CLOSED && events.closed_on &&
	           strstr(ev->why, events.closed_on)) {
		events.closed++;
	}
	pthread_cond_broadcast(&events.cv);
	pthread_mutex_unlock(&events.mu);
}


/* Waits up to 10 s for the count *what (events.shed or events.closed) to
 * reach n; whether it did. */
static int event_wait(const int *what, int n)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	int rc = 0;
	pthread_mutex_lock(&events.mu);
	while (*what < n && rc == 0)
		rc = pthread_cond_timedwait(&events.cv, &events.mu, &ts);
	int ok = *what >= n;
	pthread_mutex_unlock(&events.mu);
	return ok;
}

static int shed_wait(int n) { return event_wait(&events.shed, n); }
static int closed_wait(int n) { return event_wait(&events.closed, n); }

/* A server with the tokens, Arith.Multiply and Test.Who; `o` may set more
 * options. */
static void serve(fixture *f, dml_rpc_server_opts o)
{
	memset(f, 0, sizeof *f);
	o.tokens = tokens;
	o.ntokens = NTOKENS;
	o.on_event = on_event;
	assert_int_equal(dml_rpc_server_new(&f->srv, &o), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &arith_multiply, h_mul, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f->srv, &m_who, h_who, NULL), 0);
	assert_int_equal(dml_rpc_server_listen(f->srv, "127.0.0.1:0"), 0);
}

static int dial_as(dml_rpc_client **c, const char *addr, const char *who)
{
	dml_rpc_client_opts o = {.token = who ? secret_of(who) : NULL,
	                         .dial_timeout = 10000};
	return dml_rpc_dial(c, addr, &o);
}

static int mul(dml_rpc_client *c)
{
	Args a = {6, 7};
	Reply r = {0};
	int rc = dml_rpc_call(c, &arith_multiply, &a, &r, 10000);
	assert_true(rc || r.C == 42);
	return rc;
}

static void who(dml_rpc_client *c, const char *want)
{
	char buf[300];
	who_msg r = {{buf, 0, sizeof buf}};
	assert_int_equal(dml_rpc_call(c, &m_who, NULL, &r, 10000), 0);
	buf[r.s.n < sizeof buf ? r.s.n : sizeof buf - 1] = 0;
	assert_string_equal(buf, want);
}

/* ---- tokens and the hook ---------------------------------------------- */

static void test_tokens(void **state)
{
	(void)state;
	fixture f;
	serve(&f, (dml_rpc_server_opts){.require_auth = 1});
	fixture_start(&f, 2);
	dml_rpc_client *c;
	/* no token: only RPC.Hello and RPC.Ping; calls are DML_EAUTH */
	assert_int_equal(dial_as(&c, f.addr, NULL), 0);
	assert_int_equal(dml_rpc_has_method(c, "Arith.Multiply", 10000), 1);
	assert_int_equal(mul(c), DML_EAUTH);
	dml_rpc_free(c);
	/* an unknown token fails the dial */
	dml_rpc_client_opts o = {.token = "not-a-token-of-this-server"};
	assert_int_equal(dml_rpc_dial(&c, f.addr, &o), DML_EAUTH);
	assert_non_null(strstr(dml_error_detail(), "refused the token"));
	o.token = "short";
	assert_int_equal(dml_rpc_dial(&c, f.addr, &o), DML_EINVAL);
	/* a good one: the handler sees its name */
	assert_int_equal(dial_as(&c, f.addr, "victim"), 0);
	assert_int_equal(mul(c), 0);
	who(c, "token:victim");
	dml_rpc_free(c);
	fixture_stop(&f);

	/* without require_auth a peer without credentials is its address;
	 * a token to a server that has none fails the dial */
	dml_rpc_server_opts so = {0};
	assert_int_equal(dml_rpc_server_new(&f.srv, &so), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_who, h_who, NULL), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
	fixture_start(&f, 1);
	assert_int_equal(dial_as(&c, f.addr, NULL), 0);
	who(c, "addr:127.0.0.1");
	dml_rpc_free(c);
	assert_int_equal(dial_as(&c, f.addr, "victim"), DML_EAUTH);
	assert_non_null(strstr(dml_error_detail(), "takes no tokens"));
	fixture_stop(&f);

	/* bad token options */
	dml_rpc_server *s;
	dml_rpc_token bad[2] = {{"a", "too-short"}, {"b", "too-short"}};
	so.tokens = bad;
	so.ntokens = 1;
	assert_int_equal(dml_rpc_server_new(&s, &so), DML_EINVAL);
	bad[0].secret = bad[1].secret = "one-secret-for-two-names";
	so.ntokens = 2;
	assert_int_equal(dml_rpc_server_new(&s, &so), DML_EINVAL);
	assert_non_null(strstr(dml_error_detail(), "one secret"));
}

static struct {
	pthread_mutex_t mu;
	int asked;
} hook = {PTHREAD_MUTEX_INITIALIZER, 0};

/* evil may not connect; ro may not multiply. */
static int authorize(const dml_rpc_peer *p, const char *method, void *user)
{
	(void)user;
	pthread_mutex_lock(&hook.mu);
	hook.asked++;
	pthread_mutex_unlock(&hook.mu);
	if (!method)
		return !strcmp(p->identity, "evil") ? DML_EPERM : 0;
	if (p->auth != DML_RPC_AUTH_TOKEN)
		return DML_EPERM;
	return !strcmp(p->identity, "ro") && !strcmp(method, "Arith.Multiply");
}

static void test_authorize(void **state)
{
	(void)state;
	fixture f;
	serve(&f, (dml_rpc_server_opts){.authorize = authorize});
	fixture_start(&f, 2);
	dml_rpc_client *v, *e, *r, *anon;
	hook.asked = 0;
	assert_int_equal(dial_as(&v, f.addr, "victim"), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(mul(v), 0);
	assert_int_equal(hook.asked, 2); /* the connection, then the method once */
	assert_int_equal(dial_as(&e, f.addr, "evil"), 0);
	assert_int_equal(dial_as(&r, f.addr, "ro"), 0);
	assert_int_equal(dial_as(&anon, f.addr, NULL), 0);
	assert_int_equal(mul(e), DML_EPERM);
	dml_rpc_pending *k;
	Args a = {1, 2};
	Reply rep;
	assert_int_equal(dml_rpc_start(&k, e, &arith_multiply, &a, &rep, 10000), 0);
	assert_int_equal(dml_rpc_pending_wait(k), DML_EPERM);
	assert_non_null(strstr(dml_rpc_pending_errmsg(k), "evil may not call this server"));
	dml_rpc_pending_free(k);
	assert_int_equal(mul(r), DML_EPERM);
	who(r, "token:ro");
	assert_int_equal(mul(anon), DML_EPERM);
	dml_rpc_free(v);
	dml_rpc_free(e);
	dml_rpc_free(r);
	dml_rpc_free(anon);
	fixture_stop(&f);
}

/* ---- the store's claims ----------------------------------------------- */

typedef struct store_fx {
	fixture f;
	dml_ps *ps;
} store_fx;

static void serve_store(store_fx *s, int workers, const dml_ps_serve_opts *po)
{
	dml_ps_opts o = {.workers = workers};
	assert_int_equal(dml_ps_new(&s->ps, 3, &o), 0);
	serve(&s->f, (dml_rpc_server_opts){0});
	assert_int_equal(dml_ps_serve_with(s->ps, s->f.srv, po), 0);
	fixture_start(&s->f, 2);
}

static void store_stop(store_fx *s)
{
	fixture_stop(&s->f);
	dml_ps_free(s->ps);
}

static int raw_push(dml_rpc_client *c, uint64_t client, uint64_t seq, float k)
{
	float v[3] = {k, k, k};
	psw_push a = {client, seq, PSW_OP_UPDATE, {v, 3, 0}};
	return dml_rpc_call(c, &psw_m_push, &a, NULL, 10000);
}

static float value0(dml_ps *ps)
{
	float w[3];
	assert_int_equal(dml_ps_pull(ps, w), 0);
	return w[0];
}

/* A forged push with the victim's client id and the largest sequence
 * number made the server drop the victim's pushes as duplicates while
 * the victim got success replies. */
static void test_forged_client_id(void **state)
{
	(void)state;
	store_fx s;
	serve_store(&s, 0, NULL);
	dml_rpc_client *v, *e;
	assert_int_equal(dial_as(&v, s.f.addr, "victim"), 0);
	assert_int_equal(dial_as(&e, s.f.addr, "evil"), 0);
	assert_int_equal(raw_push(e, 5, UINT64_MAX, 0), DML_EHANDLER); /* beyond the window */
	assert_int_equal(raw_push(e, 5, 1000, 0), 0); /* evil's own client 5 */
	for (uint64_t seq = 1; seq <= 20; seq++)
		assert_int_equal(raw_push(v, 5, seq, 1), 0);
	assert_true(value0(s.ps) == 20);
	for (uint64_t seq = 1; seq <= 20; seq++) /* the victim's retries: once */
		assert_int_equal(raw_push(v, 5, seq, 1), 0);
	assert_true(value0(s.ps) == 20);
	/* the same through a remote handle */
	dml_ps *h;
	assert_int_equal(dml_ps_connect(&h, &v, 1, NULL), 0);
	float g[3] = {1, 1, 1};
	for (int i = 0; i < 20; i++)
		assert_int_equal(dml_ps_update(h, g), 0);
	assert_true(value0(s.ps) == 40);
	dml_ps_free(h);
	dml_rpc_free(v);
	dml_rpc_free(e);
	store_stop(&s);
}

/* 4096 forged ids from one connection filled the table, and every new
 * client's pushes failed for 10 minutes. */
static void test_table_filling(void **state)
{
	(void)state;
	store_fx s;
	serve_store(&s, 0, NULL);
	dml_rpc_client *v, *e;
	assert_int_equal(dial_as(&v, s.f.addr, "victim"), 0);
	assert_int_equal(dial_as(&e, s.f.addr, "evil"), 0);
	long n = test_scaled(5000, 4200);
	for (long id = 1; id <= n; id++)
		assert_int_equal(raw_push(e, (uint64_t)id + 100, 1, 0), 0);
	for (uint64_t id = 1; id <= 10; id++) /* new clients of another identity */
		assert_int_equal(raw_push(v, id, 1, 1), 0);
	assert_true(value0(s.ps) == 10);
	dml_rpc_free(v);
	dml_rpc_free(e);
	store_stop(&s);
}

static int clock_call(dml_rpc_client *c, int w)
{
	psw_worker q = {w};
	psw_clock r;
	return dml_rpc_call(c, &psw_m_clock, &q, &r, 10000);
}

/* Any peer could call PS.Clock(w) for any worker: one call released a BSP
 * barrier the real worker never reached. */
static void test_clock_spoofing(void **state)
{
	(void)state;
	static const char *const ids[] = {"w0", "w1", NULL};
	static const char *const readers[] = {"ro", NULL};
	dml_ps_serve_opts po = {.worker_ids = ids, .readers = readers};
	store_fx s;
	serve_store(&s, 2, &po);
	dml_rpc_client *w0, *w1, *e, *ro;
	assert_int_equal(dial_as(&w0, s.f.addr, "w0"), 0);
	assert_int_equal(dial_as(&w1, s.f.addr, "w1"), 0);
	assert_int_equal(dial_as(&e, s.f.addr, "evil"), 0);
	assert_int_equal(dial_as(&ro, s.f.addr, "ro"), 0);
	/* worker 0 reaches the barrier and waits for worker 1 */
	psw_worker q0 = {0};
	psw_clock r0;
	dml_rpc_pending *k;
	assert_int_equal(dml_rpc_start(&k, w0, &psw_m_clock, &q0, &r0, 10000), 0);
	assert_int_equal(dml_rpc_flush(w0, 10000), 0);
	int64_t c0 = 0, m0; /* until the server has it (bounded) */
	for (long i = 0; i < 100000000 && c0 != 1; i++)
		assert_int_equal(dml_ps_clock_get(s.ps, 0, &c0, &m0), 0);
	assert_int_equal(c0, 1);
	assert_int_equal(clock_call(e, 1), DML_EPERM); /* not evil's worker */
	assert_int_equal(clock_call(e, 0), DML_EPERM);
	assert_int_equal(clock_call(ro, 1), DML_EPERM); /* a reader */
	psw_worker q1 = {1};
	psw_clock r1;
	assert_int_equal(dml_rpc_call(ro, &psw_m_clock_get, &q1, &r1, 10000), 0);
	assert_int_equal(r1.clock, 0); /* nobody moved worker 1 */
	assert_int_equal(dml_rpc_pending_done(k), 0); /* still waiting */
	assert_int_equal(clock_call(w1, 1), 0); /* the real worker 1 */
	assert_int_equal(dml_rpc_pending_wait(k), 0);
	dml_rpc_pending_free(k);
	dml_rpc_free(w0);
	dml_rpc_free(w1);
	dml_rpc_free(e);
	dml_rpc_free(ro);
	store_stop(&s);
}

/* Without worker_ids a slot is claimed by the first identity to clock it;
 * it stays the holder's while it is connected and for the grace period
 * after; a reconnecting holder gets it back. */
static void test_clock_claims(void **state)
{
	(void)state;
	dml_ps_serve_opts po = {.worker_grace = 1}; /* 1 ms */
	store_fx s;
	serve_store(&s, 1, &po);
	dml_rpc_client *w0, *e;
	assert_int_equal(dial_as(&w0, s.f.addr, "w0"), 0);
	assert_int_equal(dial_as(&e, s.f.addr, "evil"), 0);
	assert_int_equal(clock_call(w0, 0), 0);
	assert_int_equal(clock_call(e, 0), DML_EPERM);
	assert_int_equal(clock_call(w0, 0), 0);
	dml_rpc_free(w0);
	assert_int_equal(dial_as(&w0, s.f.addr, "w0"), 0); /* it comes back */
	assert_int_equal(clock_call(w0, 0), 0);
	dml_rpc_free(w0);
	/* gone for good: once its connection is closed and the grace is
	 * over, another identity may take the slot (bounded: 5 s) */
	int64_t end = (int64_t)time(NULL) + 5;
	int rc;
	while ((rc = clock_call(e, 0)) == DML_EPERM && (int64_t)time(NULL) < end)
		;
	assert_int_equal(rc, 0);
	dml_rpc_free(e);
	store_stop(&s);
}

/* Anyone who connected could overwrite the model (PS.Assign with -1e30):
 * read-only identities may pull, and nothing else. */
static void test_read_only(void **state)
{
	(void)state;
	static const char *const readers[] = {"ro", NULL};
	static const char *const writers[] = {"victim", NULL};
	dml_ps_serve_opts po = {.readers = readers, .writers = writers};
	store_fx s;
	serve_store(&s, 0, &po);
	dml_rpc_client *v, *ro, *e;
	assert_int_equal(dial_as(&v, s.f.addr, "victim"), 0);
	assert_int_equal(dial_as(&ro, s.f.addr, "ro"), 0);
	assert_int_equal(dial_as(&e, s.f.addr, "evil"), 0);
	dml_ps *hv, *hr, *he;
	assert_int_equal(dml_ps_connect(&hv, &v, 1, NULL), 0);
	assert_int_equal(dml_ps_connect(&hr, &ro, 1, NULL), 0);
	float g[3] = {1, 2, 3}, w[3], junk[3] = {-1e30f, -1e30f, -1e30f};
	assert_int_equal(dml_ps_update(hv, g), 0);
	assert_int_equal(dml_ps_pull(hr, w), 0);
	assert_true(w[2] == 3);
	assert_int_equal(dml_ps_update(hr, g), DML_EPERM);
	assert_int_equal(dml_ps_push(hr, g), DML_EPERM);
	assert_int_equal(dml_ps_assign(hr, junk), DML_EPERM);
	assert_non_null(strstr(dml_error_detail(), "may not change"));
	/* in neither list: nothing at all */
	assert_int_equal(dml_ps_connect(&he, &e, 1, NULL), DML_EPERM);
	assert_int_equal(raw_push(e, 1, 1, 5), DML_EPERM);
	assert_int_equal(dml_ps_pull(s.ps, w), 0);
	assert_true(w[0] == 1 && w[2] == 3); /* unchanged */
	dml_ps_free(hv);
	dml_ps_free(hr);
	dml_rpc_free(v);
	dml_rpc_free(ro);
	dml_rpc_free(e);
	store_stop(&s);
}

/* ---- connection budgets ----------------------------------------------- */

/* A TCP connection to addr ("127.0.0.1:port") from source address src. */
static int raw_connect(const char *addr, const char *src)
{
	const char *colon = strrchr(addr, ':');
	assert_non_null(colon);
	struct sockaddr_in to = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)atoi(colon + 1))};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct sockaddr_in from = {.sin_family = AF_INET};
	assert_int_equal(inet_pton(AF_INET, src, &from.sin_addr), 1);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&from, sizeof from), 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
	return fd;
}

/* 4200 idle connections locked legitimate clients out for 10 minutes:
 * one address now holds at most max_conns_per_peer of them, and fewer
 * unauthenticated ones when the server requires credentials. */
static void test_idle_flood(void **state)
{
	(void)state;
	enum { CAP = 8, UNAUTH = 4, FLOOD = 20 };
	fixture f;
	serve(&f, (dml_rpc_server_opts){.max_conns_per_peer = CAP});
	fixture_start(&f, 2);
	events.shed = 0;
	int fds[FLOOD];
	for (int i = 0; i < FLOOD; i++)
		fds[i] = raw_connect(f.addr, "127.0.0.2");
	assert_true(shed_wait(FLOOD - CAP));
	assert_non_null(strstr(events.why, "max_conns_per_peer"));
	dml_rpc_client *c; /* another address is served */
	assert_int_equal(dial_as(&c, f.addr, "victim"), 0);
	assert_int_equal(mul(c), 0);
	dml_rpc_free(c);
	for (int i = 0; i < FLOOD; i++)
		close(fds[i]);
	fixture_stop(&f);

	/* with require_auth: UNAUTH connections wait for credentials at most */
	serve(&f, (dml_rpc_server_opts){.require_auth = 1, .max_unauth_conns = UNAUTH});
	fixture_start(&f, 2);
	events.shed = 0;
	for (int i = 0; i < FLOOD; i++)
		fds[i] = raw_connect(f.addr, "127.0.0.2");
	assert_true(shed_wait(FLOOD - UNAUTH));
	assert_non_null(strstr(events.why, "max_unauth_conns"));
	dml_rpc_client *cs[2 * UNAUTH]; /* authenticated ones do not count */
	for (int i = 0; i < 2 * UNAUTH; i++) {
		assert_int_equal(dial_as(&cs[i], f.addr, "victim"), 0);
		assert_int_equal(mul(cs[i]), 0);
	}
	for (int i = 0; i < 2 * UNAUTH; i++)
		dml_rpc_free(cs[i]);
	for (int i = 0; i < FLOOD; i++)
		close(fds[i]);
	fixture_stop(&f);
}

/* ---- the byte budget ---------------------------------------------- */

/* Test.Big: a reply of n bytes (from one shared buffer). */
typedef struct big_args {
	uint64_t n;
} big_args;
static const dml_field big_args_f[] = {DML_FIELD(big_args, n, DML_U64)};
static const dml_type big_args_t = DML_TYPE(big_args, big_args_f);
typedef struct big_reply {
	dml_bytes b;
} big_reply;
static const dml_field big_reply_f[] = {DML_FIELD(big_reply, b, DML_BYTES)};
static const dml_type big_reply_t = DML_TYPE(big_reply, big_reply_f);
static const dml_rpc_method m_big = {"Test.Big", &big_args_t, &big_reply_t};
static const dml_rpc_method m_sink = {"Test.Sink", &big_reply_t, NULL};
static uint8_t big_buf[12 << 20];

static int h_big(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	uint64_t n = ((const big_args *)a)->n;
	((big_reply *)r)->b = (dml_bytes){big_buf, n < sizeof big_buf ? n : sizeof big_buf, 0};
	return 0;
}

static int h_sink(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	(void)r;
	(void)u;
	return 0;
}

static dml_rpc_stats stats_of(dml_rpc_server *s)
{
	dml_rpc_stats st;
	assert_int_equal(dml_rpc_server_stats(&st, s, NULL), 0);
	return st;
}

/* Resident memory of this process, bytes. */
static long long rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long long pages = 0, res = 0;
	if (f) {
		if (fscanf(f, "%lld %lld", &pages, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * sysconf(_SC_PAGESIZE);
}

/* A request frame for `method` whose payload claims `payload` bytes; the
 * header and name into p, their length returned. */
static size_t frame_head(uint8_t *p, const char *method, size_t payload)
{
	size_t nl = strlen(method);
	assert_int_equal(dml__frame_header(p, DML__KIND_REQUEST, 1, 0, nl, payload), 0);
	memcpy(p + DML__FRAME_HDR, method, nl);
	return DML__FRAME_HDR + nl;
}

/* Sends what the socket takes now of n bytes (non-blocking): how many. */
static size_t send_some(int fd, const void *p, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t k = send(fd, (const char *)p + done, n - done, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (k <= 0)
			break;
		done += (size_t)k;
	}
	return done;
}

/* Polls `cond` on the server's counters for up to 10 s (no sleep: the
 * condition is the synchronisation). */
#define STATS_UNTIL(srv, st, cond)                                               \
	do {                                                                     \
		time_t end_ = time(NULL) + 10;                                   \
		for (;;) {                                                       \
			st = stats_of(srv);                                      \
			if ((cond) || time(NULL) > end_)                         \
				break;                                           \
			sched_yield();                                           \
		}                                                                \
	} while (0)

/* 32 connections each holding most of an unfinished 4 MiB frame took the
 * server's memory to 32 x 4 MiB (the bound was max_conns x max_frame):
 * large frames being read now share half of max_buffered, the others
 * wait, and small requests are served meanwhile. */
static void test_unfinished_frames(void **state)
{
	(void)state;
	enum { N = 32, FRAME = 4 << 20, BUDGET = 16 << 20 };
	fixture f;
	serve(&f, (dml_rpc_server_opts){.max_frame = FRAME, .max_buffered = BUDGET,
	                                .frame_timeout = 60000,
	                                .min_frame_rate = DML_INFINITE});
	assert_int_equal(dml_rpc_server_register(f.srv, &m_sink, h_sink, NULL), 0);
	fixture_start(&f, 2);
	long long rss0 = rss_bytes();
	static uint8_t frame[FRAME];
	frame_head(frame, "Test.Sink", FRAME - DML__FRAME_HDR - 9);
	int fds[N];
	for (int i = 0; i < N; i++) {
		fds[i] = raw_connect(f.addr, "127.0.0.2");
		send_some(fds[i], frame, FRAME - 4096); /* never the end */
	}
	dml_rpc_stats st;
	STATS_UNTIL(f.srv, st, st.stalled >= N - BUDGET / 2 / FRAME);
	assert_true(st.stalled >= N - BUDGET / 2 / FRAME);
	assert_true(st.buffered_in <= BUDGET / 2 + FRAME);
	dml_rpc_client *c;
	assert_int_equal(dial_as(&c, f.addr, "victim"), 0);
	assert_int_equal(mul(c), 0); /* small requests are served */
	st = stats_of(f.srv);
	assert_true(st.buffered_in <= BUDGET / 2 + FRAME);
	if (!getenv("DML_TEST_PASS") || !strcmp(getenv("DML_TEST_PASS"), "plain"))
		assert_true(rss_bytes() - rss0 < 3 * BUDGET); /* not N x FRAME */
	for (int i = 0; i < N; i++)
		close(fds[i]);
	/* released: a large frame of the client's goes through */
	big_reply q = {{big_buf, FRAME - 4096, 0}};
	assert_int_equal(dml_rpc_call(c, &m_sink, &q, NULL, 20000), 0);
	dml_rpc_free(c);
	fixture_stop(&f);
}

/* A large frame trickled in was cut only by frame_timeout (30 s): now it
 * must average min_frame_rate after its first 2 s. */
static void test_trickle(void **state)
{
	(void)state;
	fixture f;
	serve(&f, (dml_rpc_server_opts){.frame_timeout = 60000});
	assert_int_equal(dml_rpc_server_register(f.srv, &m_sink, h_sink, NULL), 0);
	fixture_start(&f, 2);
	events.closed = 0;
	events.closed_on = "min_frame_rate";
	static uint8_t frame[64 << 10];
	frame_head(frame, "Test.Sink", 1 << 20); /* a 1 MiB frame ... */
	int fd = raw_connect(f.addr, "127.0.0.2");
	assert_int_equal(send_some(fd, frame, sizeof frame), sizeof frame); /* ... 64 KiB of it */
	assert_true(closed_wait(1));
	events.closed_on = NULL;
	close(fd);
	fixture_stop(&f);
}

/* 40 peers that never read their replies to large pulls held 658 MB until
 * write_timeout: unsent replies now share half of max_buffered, beyond
 * which no request is served until they drain or their peers are reset. */
static void test_unread_replies(void **state)
{
	(void)state;
	enum { N = 12, REPLY = 12 << 20, FRAME = 16 << 20, BUDGET = 64 << 20 };
	fixture f;
	serve(&f, (dml_rpc_server_opts){.max_frame = FRAME, .max_buffered = BUDGET,
	                                .write_timeout = 1000});
	assert_int_equal(dml_rpc_server_register(f.srv, &m_big, h_big, NULL), 0);
	fixture_start(&f, 2);
	long long rss0 = rss_bytes();
	uint8_t req[256];
	big_args a = {REPLY};
	size_t len, head = frame_head(req, "Test.Big", 0);
	assert_int_equal(dml_type_encode(&big_args_t, &a, req + head, sizeof req - head, &len), 0);
	frame_head(req, "Test.Big", len);
	int fds[N];
	for (int i = 0; i < N; i++) {
		fds[i] = raw_connect(f.addr, "127.0.0.2");
		int small = 4096; /* the kernel holds little of the replies */
		setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
		assert_int_equal(send_some(fds[i], req, head + len), head + len);
	}
	dml_rpc_stats st;
	uint64_t most = 0;
	STATS_UNTIL(f.srv, st, (most = st.buffered_out > most ? st.buffered_out : most,
	                        st.buffered_out > BUDGET / 2));
	assert_true(st.buffered_out > BUDGET / 2); /* the budget was reached ... */
	for (int k = 0; k < 1000; k++) { /* ... and it holds */
		st = stats_of(f.srv);
		most = st.buffered_out > most ? st.buffered_out : most;
	}
	assert_true(most <= BUDGET / 2 + 2 * (uint64_t)FRAME);
	if (!getenv("DML_TEST_PASS") || !strcmp(getenv("DML_TEST_PASS"), "plain"))
		assert_true(rss_bytes() - rss0 < 2 * BUDGET); /* not N x REPLY */
	/* a legitimate client dials (the token's reply is the library's own)
	 * and waits: it is served once write_timeout has reset the peers that
	 * do not read, in rounds of what the budget holds */
	dml_rpc_client *c;
	assert_int_equal(dial_as(&c, f.addr, "victim"), 0);
	Args x = {6, 7};
	Reply r = {0};
	assert_int_equal(dml_rpc_call(c, &arith_multiply, &x, &r, 60000), 0);
	assert_int_equal(r.C, 42);
	dml_rpc_free(c);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	fixture_stop(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_authorize),
		cmocka_unit_test(test_forged_client_id),
		cmocka_unit_test(test_table_filling),
		cmocka_unit_test(test_clock_spoofing),
		cmocka_unit_test(test_clock_claims),
		cmocka_unit_test(test_read_only),
		cmocka_unit_test(test_idle_flood),
		cmocka_unit_test(test_unfinished_frames),
		cmocka_unit_test(test_trickle),
		cmocka_unit_test(test_unread_replies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

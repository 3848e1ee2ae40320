/* test_netns.c - peers that vanish without a FIN, on a real link: a network
 * namespace and a veth pair (scripts/netns.sh), the peer inside it, and a
 * DROP rule that cuts the link silently. Keepalive and TCP_USER_TIMEOUT
 * must notice, on the client's side and on the server's. Needs root and
 * iproute2/iptables (the script installs them as root); elsewhere every
 * test skips, saying why.
 *
 * The peer inside the namespace is this program again, started with
 * `--serve ADDR` (a server that parks Test.Park calls), `--park ADDR` (a
 * client parked in a Test.Park call) or `--clock ADDR` (worker 0 of a
 * served BSP store, parked in its clock call), by `netns.sh exec`. */
#define _GNU_SOURCE
#include "testutil.h"

#include "internal.h"
#include "sys.h"

#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static const dml_rpc_method m_park = PARK_METHOD;
static const char *self; /* argv[0] */
static char skip_why[256];

/* ---- the peer inside the namespace ----------------------------------- */

static int serve_mode(const char *addr)
{
	static park p = PARK_INIT;
	dml_rpc_server *s;
	if (dml_rpc_server_new(&s, NULL) || dml_rpc_server_register(s, &m_park, h_park, &p) ||
	    dml_rpc_server_listen(s, addr))
		return 3;
	printf("%d\n", dml_rpc_server_port(s, 0));
	fflush(stdout);
	dml_rpc_server_run(s); /* until killed (netns.sh down) */
	return 0;
}

static int park_mode(const char *addr)
{
	dml_rpc_client *c;
	if (dml_rpc_dial(&c, addr, NULL))
		return 3;
	printf("parked\n");
	fflush(stdout);
	/* parked for good; its own keepalive ends it once the link is cut */
	return dml_rpc_call(c, &m_park, NULL, NULL, DML_INFINITE) == DML_ECONNLOST ? 0 : 4;
}

static int clock_mode(const char *addr)
{
	dml_rpc_client *c;
	dml_ps *r;
	if (dml_rpc_dial(&c, addr, NULL) || dml_ps_connect(&r, &c, 1, NULL))
		return 3;
	printf("connected\n");
	fflush(stdout);
	/* worker 0, parked in a BSP clock call: worker 1 has not come */
	return dml_ps_advance(r, 0, NULL, DML_INFINITE) == DML_ECONNLOST ? 0 : 4;
}

/* ---- the host's side ---------------------------------------------------- */

typedef struct nslink {
	int id;
	char host[32], ns[32];
} nslink;

static int sh(const char *fmt, ...) DML_PRINTF(1, 2);
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void link_up(nslink *l)
{
	if (skip_why[0]) {
		print_message("skipped: %s\n", skip_why);
		skip();
	}
	l->id = (int)getpid();
	char cmd[128];
	snprintf(cmd, sizeof cmd, "sh scripts/netns.sh up %d", l->id);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%31s %31s", l->host, l->ns), 2);
	assert_int_equal(pclose(f), 0);
}

static void link_down(nslink *l)
{
	sh("sh scripts/netns.sh down %d", l->id);
}

/* A process inside the namespace: this program with `mode addr`; its
 * first line of output into line. */
static FILE *peer_start(nslink *l, const char *mode, const char *addr, char *line, size_t cap)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "sh scripts/netns.sh exec %d %s %s %s", l->id, self, mode,
	         addr);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(line, (int)cap, f));
	return f;
}

/* The client's side: a server inside the namespace vanishes (the link is
 * cut). A parked call on an idle connection fails by keepalive (2 s idle,
 * 3 probes 1 s apart: about 5 s); a call sent into the cut link fails by
 * TCP_USER_TIMEOUT (3 s here, keepalive off). Neither waits for ever. */
static void test_client_notices_vanished_server(void **state)
{
	(void)state;
	nslink l;
	link_up(&l);
	char a[64], line[64];
	snprintf(a, sizeof a, "%s:0", l.ns);
	FILE *srv = peer_start(&l, "--serve", a, line, sizeof line);
	snprintf(a, sizeof a, "%s:%d", l.ns, atoi(line));
	dml_rpc_client *ka, *ut;
	dml_rpc_client_opts o = {0};
	assert_int_equal(dml_rpc_dial(&ka, a, NULL), 0);
	o.keepalive = DML_INFINITE;
	o.user_timeout = 3000;
	assert_int_equal(dml_rpc_dial(&ut, a, &o), 0);
	dml_rpc_pending *k;
	assert_int_equal(dml_rpc_start(&k, ka, &m_park, NULL, NULL, 30000), 0);
	assert_int_equal(dml_rpc_flush(ka, 10000), 0);
	assert_int_equal(sh("sh scripts/netns.sh drop %d", l.id), 0);
	int64_t t0 = dml__now_ms();
	int rc1 = dml_rpc_call(ut, &m_park, NULL, NULL, 8000); /* into the cut */
	int64_t t1 = dml__now_ms();
	int rc2 = dml_rpc_pending_wait(k);
	int64_t t2 = dml__now_ms();
	print_message("user timeout 3 s: %s after %lld ms; keepalive 2 s + 3 x 1 s: %s "
	              "after %lld ms\n", dml_strerror(rc1), (long long)(t1 - t0),
	              dml_strerror(rc2), (long long)(t2 - t0));
	dml_rpc_pending_free(k);
	dml_rpc_free(ut);
	dml_rpc_free(ka);
	link_down(&l);
	pclose(srv);
	if (strstr(dml__sys_kinds(), "no-user-timeout")) {
		/* without TCP_USER_TIMEOUT (make PORTABLE=1), data unacknowledged
		 * waits for TCP's retransmissions (minutes): the call's own
		 * deadline ended it */
		print_message("no TCP_USER_TIMEOUT in this build: that case is skipped\n");
		assert_int_equal(rc1, DML_ETIMEDOUT);
	} else {
		assert_int_equal(rc1, DML_ECONNLOST);
		assert_true(t1 - t0 >= 2500 && t1 - t0 < 15000);
	}
	assert_int_equal(rc2, DML_ECONNLOST);
	assert_true(t2 - t0 >= 2000 && t2 - t0 < 15000);
}

/* The server's side: a client inside the namespace, parked in a call the
 * server owes a deferred reply, vanishes. Keepalive drops the connection
 * (the event says so) and the deferred reply is then refused. */
static void test_server_notices_vanished_client(void **state)
{
	(void)state;
	nslink l;
	link_up(&l);
	park p = PARK_INIT;
	dml_rpc_server_opts so = {0};
	so.on_event = park_event;
	so.event_user = &p;
	fixture f;
	memset(&f, 0, sizeof f);
	assert_int_equal(dml_rpc_server_new(&f.srv, &so), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_park, h_park, &p), 0);
	char a[64], line[64];
	snprintf(a, sizeof a, "%s:0", l.host);
	assert_int_equal(dml_rpc_server_listen(f.srv, a), 0);
	fixture_start(&f, 1);
	FILE *cli = peer_start(&l, "--park", f.addr, line, sizeof line);
	int parked = park_wait(&p, &p.n, 1, 10000);
	int rc = sh("sh scripts/netns.sh drop %d", l.id);
	int64_t t0 = dml__now_ms();
	int closed = park_wait(&p, &p.closed, 1, 20000);
	int64_t took = dml__now_ms() - t0;
	print_message("vanished client dropped after %lld ms: %s\n", (long long)took, p.close_why);
	int late_reply = parked ? dml_rpc_deferred_reply(p.d[0], 0, NULL, NULL) : 0;
	link_down(&l);
	pclose(cli);
	fixture_stop(&f);
	assert_true(parked);
	assert_int_equal(rc, 0);
	assert_true(closed);
	assert_int_equal(p.close_reason, DML_ECONNLOST);
	assert_true(took >= 2000 && took < 15000);
	assert_int_equal(late_reply, DML_ECLOSED);
}

/* A worker inside the namespace parked in a BSP clock call on a store
 * served here vanishes: keepalive closes its connection, the store drops
 * it from the clocks and ends its wait, and the other worker goes on
 * without waiting for it (no worker_timeout). */
static void test_parked_clock_released(void **state)
{
	(void)state;
	nslink l;
	link_up(&l);
	park ev = PARK_INIT; /* counts CLOSED events */
	dml_ps *ps;
	dml_ps_opts po = {.workers = 2, .staleness = 0};
	assert_int_equal(dml_ps_new(&ps, 4, &po), 0);
	dml_rpc_server_opts so = {0};
	so.on_event = park_event;
	so.event_user = &ev;
	fixture f;
	memset(&f, 0, sizeof f);
	assert_int_equal(dml_rpc_server_new(&f.srv, &so), 0);
	assert_int_equal(dml_ps_serve(ps, f.srv), 0);
	char a[64], line[64];
	snprintf(a, sizeof a, "%s:0", l.host);
	assert_int_equal(dml_rpc_server_listen(f.srv, a), 0);
	fixture_start(&f, 1);
	FILE *cli = peer_start(&l, "--clock", f.addr, line, sizeof line);
	int64_t clock = 0, min = 0, until = dml__now_ms() + 10000;
	while (dml_ps_clock_get(ps, 0, &clock, &min) == 0 && clock < 1 &&
	       dml__now_ms() < until)
		poll(NULL, 0, 1);
	int rc = sh("sh scripts/netns.sh drop %d", l.id);
	int64_t t0 = dml__now_ms();
	int closed = park_wait(&ev, &ev.closed, 1, 20000);
	int64_t took = dml__now_ms() - t0;
	int rc1 = dml_ps_advance(ps, 1, NULL, 0), rc2 = dml_ps_advance(ps, 1, NULL, 0);
	print_message("parked worker's connection closed after %lld ms (%s); worker 1: %s, %s\n",
	              (long long)took, ev.close_why, dml_strerror(rc1), dml_strerror(rc2));
	link_down(&l);
	pclose(cli);
	fixture_stop(&f);
	dml_ps_free(ps);
	assert_int_equal(clock, 1);
	assert_int_equal(rc, 0);
	assert_true(closed);
	assert_true(took >= 2000 && took < 15000);
	assert_int_equal(rc1, 0);
	assert_int_equal(rc2, 0); /* to clock 2: worker 0 would have held it */
}

int main(int argc, char **argv)
{
	self = argv[0];
	if (argc == 3 && !strcmp(argv[1], "--serve"))
		return serve_mode(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "--park"))
		return park_mode(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "--clock"))
		return clock_mode(argv[2]);
	signal(SIGPIPE, SIG_IGN); /* popen'd peers may go first */
	const char *pass = getenv("DML_TEST_PASS");
	if (pass && !strcmp(pass, "valgrind")) {
		snprintf(skip_why, sizeof skip_why, "seconds-long keepalive bounds, not under valgrind");
	} else {
		FILE *c = popen("sh scripts/netns.sh check 2>&1", "r");
		char why[200] = "";
		if (!c || !fgets(why, sizeof why, c))
			why[0] = 0;
		int st = c ? pclose(c) : -1;
		if (st != 0)
			snprintf(skip_why, sizeof skip_why, "%s",
			         why[0] ? why : "netns: scripts/netns.sh check failed");
		skip_why[strcspn(skip_why, "\n")] = 0;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_notices_vanished_server),
		cmocka_unit_test(test_server_notices_vanished_client),
		cmocka_unit_test(test_parked_clock_released),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

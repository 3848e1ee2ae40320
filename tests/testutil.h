/* testutil.h - shared test fixtures: cmocka, a server run by threads on an
 * ephemeral loopback port, and a gate that holds handlers. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <distml.h>

#define MAX_RUNNERS 8

/* DML_TEST_SCALE=N (make valgrind sets 10): the heaviest tests divide
 * their loop counts and sizes by N, down to at least `min`. */
static inline long test_scaled(long n, long min)
{
	const char *e = getenv("DML_TEST_SCALE");
	long k = e ? atol(e) : 1;
	long v = k > 1 ? n / k : n;
	return v < min ? min : v;
}

/* Tests that flood (thousands of connections or threads, tens of MB on
 * the wire) or need more than loopback run in the plain pass only: the
 * sanitizer and valgrind passes set DML_TEST_PASS, and there they skip. */
#define TEST_PLAIN_ONLY()                                                      \
	do {                                                                   \
		const char *pass_ = getenv("DML_TEST_PASS");                   \
		if (pass_ && strcmp(pass_, "plain") != 0)                      \
			skip();                                                \
	} while (0)

/* Tests whose bounds are a few hundred ms of wall time (heartbeats) skip
 * under valgrind, which runs many times slower; they run everywhere else. */
#define TEST_NOT_UNDER_VALGRIND()                                              \
	do {                                                                   \
		const char *pass_ = getenv("DML_TEST_PASS");                   \
		if (pass_ && strcmp(pass_, "valgrind") == 0)                   \
			skip();                                                \
	} while (0)

/* ---- a method that parks every call (tests of dead peers) -------------- */

/* Each call's deferred reply is kept, never sent while the test runs (a
 * worker waiting at a barrier); with park_event as the server's on_event,
 * CLOSED events are counted too. */
#define PARK_METHOD {"Test.Park", NULL, NULL}

typedef struct park {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	dml_rpc_deferred *d[8];
	int n;               /* calls parked */
	int closed;          /* CLOSED events seen */
	int close_reason;
	char close_why[160];
} park;

#define PARK_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0, 0, ""}

static inline int h_park(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	(void)r;
	park *p = u;
	pthread_mutex_lock(&p->mu);
	int rc = p->n < 8 ? dml_rpc_deferred_new(&p->d[p->n], ctx) : DML_EBUSY;
	if (!rc)
		p->n++;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return rc;
}

static inline void park_event(const dml_rpc_event *ev, void *user)
{
	park *p = user;
	if (ev->kind != DML_RPC_EV_CLOSED)
		return;
	pthread_mutex_lock(&p->mu);
	p->closed++;
	p->close_reason = ev->reason;
	snprintf(p->close_why, sizeof p->close_why, "%s (%s)", ev->why, ev->peer);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* Waits up to ms for *what (a field of p) to reach n; whether it did. */
static inline int park_wait(park *p, const int *what, int n, int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	int rc = 0;
	pthread_mutex_lock(&p->mu);
	while (*what < n && rc == 0)
		rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
	int ok = *what >= n;
	pthread_mutex_unlock(&p->mu);
	return ok;
}

/* splitmix64: the tests' seeded stream of 64-bit numbers. */
static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* A server with its run-loop threads. */
typedef struct fixture fixture;

typedef struct runner_arg {
	fixture *f;
	int i;
} runner_arg;

struct fixture {
	dml_rpc_server *srv;
	pthread_t runners[MAX_RUNNERS];
	runner_arg args[MAX_RUNNERS];
	int nrunners;
	int run_rc[MAX_RUNNERS];
	char addr[128];
};

static void *fixture_runner(void *p)
{
	runner_arg *a = p;
	a->f->run_rc[a->i] = dml_rpc_server_run(a->f->srv);
	return NULL;
}

/* Starts `threads` run loops on a server already set up and listening. */
static inline void fixture_start(fixture *f, int threads)
{
	assert_int_equal(dml_rpc_server_addr(f->srv, 0, f->addr, sizeof f->addr), 0);
	f->nrunners = threads;
	for (int i = 0; i < threads; i++) {
		f->args[i].f = f;
		f->args[i].i = i;
		assert_int_equal(pthread_create(&f->runners[i], NULL, fixture_runner,
		                                &f->args[i]), 0);
	}
}

/* Stops the run loops, checks they returned 0, frees the server. */
static inline void fixture_stop(fixture *f)
{
	dml_rpc_server_stop(f->srv);
	for (int i = 0; i < f->nrunners; i++) {
		pthread_join(f->runners[i], NULL);
		assert_int_equal(f->run_rc[i], 0);
	}
	dml_rpc_server_free(f->srv);
	f->srv = NULL;
}

/* A gate: handlers announce they entered, then wait until it opens. */
typedef struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int open;
	sem_t entered;
} gate;

static inline void gate_init(gate *g)
{
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->open = 0;
	sem_init(&g->entered, 0, 0);
}

static inline void gate_pass(gate *g)
{
	sem_post(&g->entered);
	pthread_mutex_lock(&g->mu);
	while (!g->open)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static inline void gate_open(gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->open = 1;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static inline void gate_destroy(gate *g)
{
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cv);
	sem_destroy(&g->entered);
}

#endif

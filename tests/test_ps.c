/* test_ps.c - the parameter store: local, remote, sharded, clocks,
 * exactly-once pushes and checkpoints. */
#define _GNU_SOURCE
#include "testutil.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ps_wire.h"
#include "internal.h"

/* ---- helpers ------------------------------------------------------- */

/* A store served by its own server with `threads` run loops. */
typedef struct served {
	dml_ps *ps;
	fixture f;
} served;

static void serve_start(served *s, size_t dim, const dml_ps_opts *o, int threads)
{
	assert_int_equal(dml_ps_new(&s->ps, dim, o), 0);
	assert_int_equal(dml_rpc_server_new(&s->f.srv, NULL), 0);
	assert_int_equal(dml_ps_serve(s->ps, s->f.srv), 0);
	assert_int_equal(dml_rpc_server_listen(s->f.srv, "127.0.0.1:0"), 0);
	fixture_start(&s->f, threads);
}

static void serve_stop(served *s)
{
	fixture_stop(&s->f);
	dml_ps_free(s->ps);
}

static dml_rpc_client *dial(const char *addr)
{
	dml_rpc_client *c;
	assert_int_equal(dml_rpc_dial(&c, addr, NULL), 0);
	return c;
}

/* ---- local: exact under threads ---------------------------------------- */

enum { T = 8, M_MAX = 400, DIM = 5000 };
/* updates per thread: scaled down under valgrind (DML_TEST_SCALE) */
#define M ((int)test_scaled(M_MAX, 40))

typedef struct upd_arg {
	dml_ps *ps;
	int id;
	int rc;
} upd_arg;

/* Thread `id` adds (id + 1) * (m % 5 - 2) to every parameter, M times,
 * alternately dense and sparse (every third key): integers, so exact. */
static void *updater(void *p)
{
	upd_arg *a = p;
	float *d = malloc(DIM * sizeof *d);
	uint32_t *idx = malloc(DIM * sizeof *idx);
	float *val = malloc(DIM * sizeof *val);
	for (int m = 0; m < M && !a->rc; m++) {
		float k = (float)((a->id + 1) * (m % 5 - 2));
		if (m % 2 == 0) {
			for (int i = 0; i < DIM; i++)
				d[i] = k;
			a->rc = dml_ps_update(a->ps, d);
		} else {
			size_t n = 0;
			for (uint32_t i = (uint32_t)(m % 3); i < DIM; i += 3, n++) {
				idx[n] = i;
				val[n] = k;
			}
			a->rc = dml_ps_update_sparse(a->ps, idx, val, n);
		}
	}
	free(d);
	free(idx);
	free(val);
	return NULL;
}

static void expected_sums(double *want)
{
	for (int i = 0; i < DIM; i++)
		want[i] = 0;
	for (int id = 0; id < T; id++)
		for (int m = 0; m < M; m++) {
			double k = (id + 1) * (m % 5 - 2);
			for (int i = 0; i < DIM; i++)
				if (m % 2 == 0 || i % 3 == m % 3)
					want[i] += k;
		}
}

static void run_updaters(dml_ps *ps)
{
	pthread_t t[T];
	upd_arg a[T];
	for (int i = 0; i < T; i++) {
		a[i] = (upd_arg){ps, i, 0};
		assert_int_equal(pthread_create(&t[i], NULL, updater, &a[i]), 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].rc, 0);
	}
}

static void check_exact(dml_ps *ps)
{
	static double want[DIM];
	static float got[DIM];
	expected_sums(want);
	assert_int_equal(dml_ps_pull(ps, got), 0);
	for (int i = 0; i < DIM; i++)
		if ((double)got[i] != want[i])
			fail_msg("param %d: got %g want %g", i, got[i], want[i]);
	uint64_t n;
	assert_int_equal(dml_ps_updates(ps, &n), 0);
	assert_int_equal(n, T * M);
}

static void test_local_exact_threads(void **state)
{
	(void)state;
	size_t stripes[] = {1, 7, 0};
	for (size_t s = 0; s < sizeof stripes / sizeof stripes[0]; s++) {
		dml_ps_opts o = {.stripes = stripes[s]};
		dml_ps *ps;
		assert_int_equal(dml_ps_new(&ps, DIM, &o), 0);
		run_updaters(ps);
		check_exact(ps);
		dml_ps_free(ps);
	}
}

/* ---- local: API contract --------------------------------------------- */

static void test_local_basics(void **state)
{
	(void)state;
	float init[10];
	for (int i = 0; i < 10; i++)
		init[i] = (float)i;
	dml_ps_opts o = {.init = init, .stripes = 3};
	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, 0, NULL), DML_EINVAL);
	assert_int_equal(dml_ps_new(&ps, 10, &(dml_ps_opts){.workers = -1}), DML_EINVAL);
	assert_int_equal(dml_ps_new(&ps, 10, &(dml_ps_opts){.optim.lr = -1}), DML_EINVAL);
	assert_int_equal(dml_ps_new(&ps, 10, &o), 0);
	assert_int_equal(dml_ps_dim(ps), 10);
	float out[10];
	assert_int_equal(dml_ps_pull_range(ps, 2, 5, out), 0);
	for (int i = 0; i < 5; i++)
		assert_true(out[i] == (float)(i + 2));
	assert_int_equal(dml_ps_pull_range(ps, 8, 3, out), DML_EINVAL);
	assert_int_equal(dml_ps_pull_range(ps, 11, 0, out), DML_EINVAL);
	assert_int_equal(dml_ps_pull_range(ps, 10, 0, out), 0);
	/* a bad index changes nothing */
	uint32_t idx[2] = {1, 10};
	float val[2] = {5, 5};
	assert_int_equal(dml_ps_update_sparse(ps, idx, val, 2), DML_EINVAL);
	assert_int_equal(dml_ps_push_sparse(ps, idx, val, 2), DML_EINVAL);
	assert_int_equal(dml_ps_pull(ps, out), 0);
	for (int i = 0; i < 10; i++)
		assert_true(out[i] == (float)i);
	/* repeats add up */
	uint32_t rep[3] = {4, 4, 9};
	float rv[3] = {1, 2, -9};
	assert_int_equal(dml_ps_update_sparse(ps, rep, rv, 3), 0);
	assert_int_equal(dml_ps_pull(ps, out), 0);
	assert_true(out[4] == 7 && out[9] == 0 && out[3] == 3);
	float zero[10] = {0};
	assert_int_equal(dml_ps_assign(ps, zero), 0);
	assert_int_equal(dml_ps_pull(ps, out), 0);
	for (int i = 0; i < 10; i++)
		assert_true(out[i] == 0);
	/* no clocks configured */
	assert_int_equal(dml_ps_advance(ps, 0, NULL, 0), DML_EINVAL);
	assert_int_equal(dml_ps_update(NULL, zero), DML_EINVAL);
	assert_int_equal(dml_ps_update(ps, NULL), DML_EINVAL);
	dml_ps_free(ps);
	dml_ps_free(NULL);
	size_t off, len, total = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(dml_shard_range(10, i, 3, &off, &len), 0);
		assert_int_equal(off, total);
		assert_true(len == 3 || len == 4);
		total += len;
	}
	assert_int_equal(total, 10);
	assert_int_equal(dml_shard_range(10, 3, 3, &off, &len), DML_EINVAL);
	assert_int_equal(dml_shard_range(10, -1, 3, &off, &len), DML_EINVAL);
	assert_int_equal(dml_shard_range(10, 0, 0, &off, &len), DML_EINVAL);
	/* more parts than items: the last ones are empty */
	assert_int_equal(dml_shard_range(2, 1, 3, &off, &len), 0);
	assert_true(off == 1 && len == 1);
	assert_int_equal(dml_shard_range(2, 2, 3, &off, &len), 0);
	assert_true(off == 2 && len == 0);
}

/* ---- optimizers applied by the store --------------------------------- */

static void test_push_optimizers(void **state)
{
	(void)state;
	/* hand-computed: SGD lr 0.5, l2 0.1: w = 1 - 0.5 * (2 + 0.1 * 1) = -0.05 */
	dml_ps_opts o = {.init = (float[]){1, 1}, .optim = {.kind = DML_OPTIM_SGD, .lr = 0.5f, .l2 = 0.1f}};
	dml_ps *ps;
	float out[2];
	assert_int_equal(dml_ps_new(&ps, 2, &o), 0);
	assert_int_equal(dml_ps_push(ps, (float[]){2, -2}), 0);
	assert_int_equal(dml_ps_pull(ps, out), 0);
	assert_float_equal(out[0], -0.05f, 1e-6);
	assert_float_equal(out[1], 1 - 0.5f * (-2 + 0.1f), 1e-6);
	dml_ps_free(ps);
	/* Adam's first step moves each weight by lr * g / (|g| + eps) */
	o = (dml_ps_opts){.init = (float[]){1, 1}, .optim = {.kind = DML_OPTIM_ADAM, .lr = 0.1f}};
	assert_int_equal(dml_ps_new(&ps, 2, &o), 0);
	assert_int_equal(dml_ps_push(ps, (float[]){3, -0.5f}), 0);
	assert_int_equal(dml_ps_pull(ps, out), 0);
	assert_float_equal(out[0], 0.9f, 1e-5);
	assert_float_equal(out[1], 1.1f, 1e-5);
	dml_ps_free(ps);

	/* every rule, dense and sparse, equals dml_optim on the same steps */
	enum { D = 300 };
	dml_optim_kind kinds[] = {DML_OPTIM_SGD, DML_OPTIM_MOMENTUM, DML_OPTIM_ADAGRAD, DML_OPTIM_ADAM};
	for (int k = 0; k < 4; k++) {
		dml_optim_opts oo = {.kind = kinds[k], .lr = 0.05f, .l2 = 0.01f,
		                     .sched = {.kind = DML_SCHED_STEP, .step_size = 2}};
		static float w[D], g[D], got[D];
		for (int i = 0; i < D; i++)
			w[i] = (float)(i % 7) - 3;
		dml_ps_opts po = {.init = w, .stripes = 4, .optim = oo};
		assert_int_equal(dml_ps_new(&ps, D, &po), 0);
		dml_optim *opt;
		assert_int_equal(dml_optim_new_dim(&opt, D, &oo), 0);
		uint64_t seed = 7;
		for (int step = 0; step < 5; step++) {
			for (int i = 0; i < D; i++)
				g[i] = (float)(splitmix(&seed) % 1000) / 250 - 2;
			if (step % 2 == 0) {
				assert_int_equal(dml_ps_push(ps, g), 0);
				dml_optim_step(opt, w, g);
			} else {
				uint32_t idx[D / 3];
				float val[D / 3];
				for (int i = 0; i < D / 3; i++) {
					idx[i] = (uint32_t)(i * 3 + step % 3);
					val[i] = g[idx[i]];
				}
				assert_int_equal(dml_ps_push_sparse(ps, idx, val, D / 3), 0);
				assert_int_equal(dml_optim_step_sparse(opt, w, idx, val, D / 3), 0);
			}
		}
		assert_int_equal(dml_ps_pull(ps, got), 0);
		assert_memory_equal(got, w, sizeof w);
		dml_optim_free(opt);
		dml_ps_free(ps);
	}
}

/* ---- clocks ------------------------------------------------------------- */

typedef struct clk_arg {
	dml_ps *ps;
	int worker;
	atomic_int done;
	int rc;
	dml_ps_clock_info info;
} clk_arg;

static void *clock_thread(void *p)
{
	clk_arg *a = p;
	a->rc = dml_ps_advance(a->ps, a->worker, &a->info, 20000);
	atomic_store(&a->done, 1);
	return NULL;
}

/* Waits (spinning on the store's own state, no sleep) until worker w's
 * clock reaches c. */
static void await_clock(dml_ps *ps, int w, int64_t c)
{
	for (;;) {
		int64_t now;
		assert_int_equal(dml_ps_clock_get(ps, w, &now, NULL), 0);
		if (now >= c)
			return;
		sched_yield();
	}
}

/* Worker 0 runs ahead; the bound holds it until worker 1 catches up. */
static void check_clocks(dml_ps *ps0, dml_ps *ps1, int staleness)
{
	int64_t min;
	dml_ps_clock_info ci;
	/* within the bound, worker 0 does not wait */
	for (int i = 0; i < staleness; i++) {
		assert_int_equal(dml_ps_advance(ps0, 0, &ci, 20000), 0);
		assert_int_equal(ci.clock, i + 1);
		assert_int_equal(ci.min, 0);
		assert_int_equal(ci.waited, 0);
	}
	/* one more and it must wait for worker 1 */
	clk_arg a = {ps0, 0, 0, 0, {0, 0, 0}};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, clock_thread, &a), 0);
	await_clock(ps1, 0, staleness + 1);
	assert_int_equal(atomic_load(&a.done), 0); /* blocked: min 0 < 1 */
	assert_int_equal(dml_ps_advance(ps1, 1, &ci, 20000), 0); /* releases it */
	assert_int_equal(ci.waited, 0);
	assert_int_equal(ci.clock, 1);
	pthread_join(t, NULL);
	assert_int_equal(a.rc, 0);
	assert_int_equal(a.info.waited, 1);
	assert_int_equal(a.info.clock, staleness + 1);
	assert_int_equal(a.info.min, 1);
	int64_t c;
	assert_int_equal(dml_ps_clock_get(ps1, 0, &c, &min), 0);
	assert_int_equal(c, staleness + 1);
	assert_int_equal(min, 1);
	/* worker 0 is at the bound again (s + 1 vs 1): a timeout of 0 does not
	 * wait and changes nothing; a wait that times out leaves the clock
	 * advanced */
	assert_int_equal(dml_ps_advance(ps0, 0, NULL, 0), DML_ETIMEDOUT);
	assert_int_equal(dml_ps_clock_get(ps1, 0, &c, NULL), 0);
	assert_int_equal(c, staleness + 1);
	assert_int_equal(dml_ps_advance(ps0, 0, NULL, 5), DML_ETIMEDOUT);
	assert_int_equal(dml_ps_clock_get(ps1, 0, &c, NULL), 0);
	assert_int_equal(c, staleness + 2);
	assert_int_equal(dml_ps_advance(ps0, 2, NULL, 0), DML_EINVAL);
}

static void test_clocks_local(void **state)
{
	(void)state;
	for (int s = 0; s <= 2; s++) {
		dml_ps *ps;
		dml_ps_opts o = {.workers = 2, .staleness = s};
		assert_int_equal(dml_ps_new(&ps, 4, &o), 0);
		check_clocks(ps, ps, s);
		dml_ps_free(ps);
	}
	/* asynchronous: never waits */
	dml_ps *ps;
	dml_ps_opts o = {.workers = 2, .staleness = DML_PS_ASYNC};
	assert_int_equal(dml_ps_new(&ps, 4, &o), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(dml_ps_advance(ps, 0, NULL, 0), 0);
	dml_ps_free(ps);
}

/* Over RPC with ONE server thread: a worker waiting in a barrier must not
 * hold it, or the other worker's clock could never be served. */
static void test_clocks_remote(void **state)
{
	(void)state;
	for (int s = 0; s <= 1; s++) {
		served sv;
		dml_ps_opts o = {.workers = 2, .staleness = s};
		serve_start(&sv, 4, &o, 1);
		dml_rpc_client *c0 = dial(sv.f.addr), *c1 = dial(sv.f.addr);
		dml_ps *r0, *r1;
		assert_int_equal(dml_ps_connect(&r0, &c0, 1, NULL), 0);
		assert_int_equal(dml_ps_connect(&r1, &c1, 1, NULL), 0);
		check_clocks(r0, r1, s);
		dml_ps_free(r0);
		dml_ps_free(r1);
		dml_rpc_free(c0);
		dml_rpc_free(c1);
		serve_stop(&sv);
	}
}

/* A barrier of 3 remote workers for 100 rounds, 1 server thread. */
typedef struct bsp_arg {
	const char *addr;
	int w, rc;
} bsp_arg;

static void *bsp_worker(void *p)
{
	bsp_arg *a = p;
	dml_rpc_client *c;
	dml_ps *ps = NULL;
	a->rc = dml_rpc_dial(&c, a->addr, NULL);
	if (!a->rc)
		a->rc = dml_ps_connect(&ps, &c, 1, NULL);
	for (int i = 0; i < 100 && !a->rc; i++) {
		dml_ps_clock_info ci;
		a->rc = dml_ps_advance(ps, a->w, &ci, 20000);
		if (!a->rc && (ci.min != i + 1 || ci.clock != i + 1))
			a->rc = -1000; /* BSP: everyone reached this round */
	}
	dml_ps_free(ps);
	dml_rpc_free(c);
	return NULL;
}

static void test_bsp_rounds_remote(void **state)
{
	(void)state;
	served sv;
	dml_ps_opts o = {.workers = 3, .staleness = 0};
	serve_start(&sv, 4, &o, 1);
	pthread_t t[3];
	bsp_arg a[3];
	for (int i = 0; i < 3; i++) {
		a[i] = (bsp_arg){sv.f.addr, i, 0};
		assert_int_equal(pthread_create(&t[i], NULL, bsp_worker, &a[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].rc, 0);
	}
	serve_stop(&sv);
}

/* A dead worker (it never calls again) is dropped after worker_timeout, so
 * a bulk-synchronous barrier goes on without it; when it comes back it
 * rejoins. Locally and over RPC with one server thread (the server's tick
 * does the dropping there). */
typedef struct rounds_arg {
	dml_ps *ps;
	int w, rounds, rc;
} rounds_arg;

static void *rounds_thread(void *p)
{
	rounds_arg *a = p;
	for (int i = 0; i < a->rounds && !a->rc; i++)
		a->rc = dml_ps_advance(a->ps, a->w, NULL, 20000);
	return NULL;
}

static void check_dead_worker(dml_ps *h[3])
{
	pthread_t t[2];
	rounds_arg a[2];
	int64_t t0 = dml__now_ms();
	for (int i = 0; i < 2; i++) {
		a[i] = (rounds_arg){h[i], i, 50, 0};
		assert_int_equal(pthread_create(&t[i], NULL, rounds_thread, &a[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].rc, 0); /* not DML_ETIMEDOUT: worker 2 was dropped */
	}
	assert_true(dml__now_ms() - t0 < 15000);
	/* (a live worker stalled past the timeout on a loaded machine is
	 * dropped too and rejoins ahead: hence >= rather than == below) */
	int64_t c, min;
	assert_int_equal(dml_ps_clock_get(h[0], 0, &c, &min), 0);
	assert_true(c >= 50);
	assert_true(min >= 50); /* the dead worker (clock 0) no longer counts */
	/* it comes back: rejoins at the live workers' pace, and counts again */
	dml_ps_clock_info ci;
	assert_int_equal(dml_ps_advance(h[2], 2, &ci, 20000), 0);
	assert_true(ci.clock >= 50);
	assert_int_equal(dml_ps_clock_get(h[0], 2, &c, &min), 0);
	assert_int_equal(c, ci.clock);
	assert_true(min <= c);
}

static void test_dead_worker_dropped(void **state)
{
	(void)state;
	dml_ps_opts o = {.workers = 3, .staleness = 0, .worker_timeout = 300};
	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, 4, &o), 0);
	dml_ps *local[3] = {ps, ps, ps};
	check_dead_worker(local);
	dml_ps_free(ps);
	assert_int_equal(dml_ps_new(&ps, 4, &(dml_ps_opts){.worker_timeout = -5}), DML_EINVAL);
	assert_int_equal(dml_ps_new(&ps, 4, &(dml_ps_opts){.worker_timeout = DML_DEFAULT}),
	                 DML_EINVAL);

	served sv;
	serve_start(&sv, 4, &o, 1);
	dml_rpc_client *c[3];
	dml_ps *r[3];
	for (int i = 0; i < 3; i++) {
		c[i] = dial(sv.f.addr);
		assert_int_equal(dml_ps_connect(&r[i], &c[i], 1, NULL), 0);
	}
	check_dead_worker(r);
	for (int i = 0; i < 3; i++) {
		dml_ps_free(r[i]);
		dml_rpc_free(c[i]);
	}
	serve_stop(&sv);
}

/* A worker parked in a BSP clock call over RPC whose process dies (its
 * connection closes: here SIGKILL; a cut link ends the same way once
 * keepalive or a heartbeat says so) is dropped from the clocks at once,
 * without a worker_timeout: the others do not wait for it later. */
static void test_vanished_worker_dropped(void **state)
{
	(void)state;
	dml_ps_opts o = {.workers = 2, .staleness = 0};
	park ev = PARK_INIT; /* counts the server's CLOSED events */
	dml_rpc_server_opts so = {0};
	so.on_event = park_event;
	so.event_user = &ev;
	served sv;
	assert_int_equal(dml_ps_new(&sv.ps, 4, &o), 0);
	assert_int_equal(dml_rpc_server_new(&sv.f.srv, &so), 0);
	assert_int_equal(dml_ps_serve(sv.ps, sv.f.srv), 0);
	assert_int_equal(dml_rpc_server_listen(sv.f.srv, "127.0.0.1:0"), 0);
	fixture_start(&sv.f, 1);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) { /* worker 0, parked for good: worker 1 has not come */
		dml_rpc_client *c;
		dml_ps *r;
		if (dml_rpc_dial(&c, sv.f.addr, NULL) || dml_ps_connect(&r, &c, 1, NULL))
			_exit(3);
		dml_ps_advance(r, 0, NULL, DML_INFINITE);
		_exit(4);
	}
	/* worker 0's call has reached the store when its clock reads 1 */
	int64_t clock = 0, min = 0, until = dml__now_ms() + 10000;
	while (dml_ps_clock_get(sv.ps, 0, &clock, &min) == 0 && clock < 1 &&
	       dml__now_ms() < until)
		poll(NULL, 0, 1);
	kill(pid, SIGKILL); /* while parked */
	int st;
	waitpid(pid, &st, 0);
	int closed = park_wait(&ev, &ev.closed, 1, 10000);
	/* worker 1 catches up (to 1) and runs ahead (to 2), where worker 0,
	 * had it stayed, would hold it for ever (no worker_timeout) */
	int rc1 = dml_ps_advance(sv.ps, 1, NULL, 0);
	int rc2 = dml_ps_advance(sv.ps, 1, NULL, 0);
	int rc3 = dml_ps_advance(sv.ps, 1, NULL, 0);
	serve_stop(&sv);
	assert_int_equal(clock, 1);
	assert_true(closed);
	assert_int_equal(rc1, 0);
	assert_int_equal(rc2, 0);
	assert_int_equal(rc3, 0);
}

/* ---- remote equals local; 3 shards equal 1 ---------------------------- */

/* The same sequence of calls on any store; returns the final vector. */
static void script(dml_ps *ps, size_t dim, float *final)
{
	float *v = malloc(dim * sizeof *v);
	uint32_t *idx = malloc(dim * sizeof *idx);
	uint64_t seed = 42;
	for (int round = 0; round < 6; round++) {
		for (size_t i = 0; i < dim; i++)
			v[i] = (float)(splitmix(&seed) % 200) / 50 - 2;
		assert_int_equal(round % 2 ? dml_ps_push(ps, v) : dml_ps_update(ps, v), 0);
		size_t n = 0;
		for (size_t i = (size_t)round; i < dim; i += 5)
			idx[n++] = (uint32_t)i;
		assert_int_equal(dml_ps_push_sparse(ps, idx, v, n), 0);
		assert_int_equal(dml_ps_update_sparse(ps, idx, v + 1, n / 2), 0);
	}
	/* ranges across shard boundaries */
	float *part = malloc(dim * sizeof *part);
	assert_int_equal(dml_ps_pull(ps, final), 0);
	for (size_t off = 0; off < dim; off += dim / 7 + 1) {
		size_t n = dim - off < dim / 3 ? dim - off : dim / 3;
		assert_int_equal(dml_ps_pull_range(ps, off, n, part), 0);
		assert_memory_equal(part, final + off, n * sizeof(float));
	}
	assert_int_equal(dml_ps_pull_range(ps, dim, 1, part), DML_EINVAL);
	free(part);
	free(v);
	free(idx);
}

static void test_remote_equals_local_and_shards(void **state)
{
	(void)state;
	enum { D = 100003 };
	dml_ps_opts o = {.optim = {.kind = DML_OPTIM_ADAM, .lr = 0.01f,
	                           .sched = {.kind = DML_SCHED_STEP, .step_size = 3}}};
	static float local[D], one[D], three[D];
	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, D, &o), 0);
	script(ps, D, local);
	dml_ps_free(ps);

	served s1;
	serve_start(&s1, D, &o, 2);
	dml_rpc_client *c1 = dial(s1.f.addr);
	assert_int_equal(dml_ps_connect(&ps, &c1, 1, NULL), 0);
	assert_int_equal(dml_ps_dim(ps), D);
	script(ps, D, one);
	dml_ps_free(ps);
	dml_rpc_free(c1);
	serve_stop(&s1);
	assert_memory_equal(local, one, sizeof local);

	served s3[3];
	dml_rpc_client *c3[3];
	for (int i = 0; i < 3; i++) {
		size_t off, len;
		assert_int_equal(dml_shard_range(D, i, 3, &off, &len), 0);
		serve_start(&s3[i], len, &o, 1);
		c3[i] = dial(s3[i].f.addr);
	}
	assert_int_equal(dml_ps_connect(&ps, c3, 3, NULL), 0);
	assert_int_equal(dml_ps_dim(ps), D);
	script(ps, D, three);
	/* a bad index is refused before anything is sent */
	uint32_t bad = D;
	assert_int_equal(dml_ps_update_sparse(ps, &bad, three, 1), DML_EINVAL);
	dml_ps_free(ps);
	for (int i = 0; i < 3; i++) {
		dml_rpc_free(c3[i]);
		serve_stop(&s3[i]);
	}
	assert_memory_equal(local, three, sizeof local);
}

/* Many threads pushing through one remote handle over 2 shards: exact. */
static void test_remote_exact_threads(void **state)
{
	(void)state;
	served s[2];
	dml_rpc_client *c[2];
	for (int i = 0; i < 2; i++) {
		size_t off, len;
		assert_int_equal(dml_shard_range(DIM, i, 2, &off, &len), 0);
		serve_start(&s[i], len, NULL, 2);
		c[i] = dial(s[i].f.addr);
	}
	dml_ps *ps;
	assert_int_equal(dml_ps_connect(&ps, c, 2, NULL), 0);
	run_updaters(ps);
	static double want[DIM];
	static float got[DIM];
	expected_sums(want);
	assert_int_equal(dml_ps_pull(ps, got), 0);
	for (int i = 0; i < DIM; i++)
		if ((double)got[i] != want[i])
			fail_msg("param %d: got %g want %g", i, got[i], want[i]);
	dml_ps_free(ps);
	for (int i = 0; i < 2; i++) {
		dml_rpc_free(c[i]);
		serve_stop(&s[i]);
	}
}

/* 100 threads share one remote handle, more than the exactly-once window
 * (64) of pushes at once: pushes beyond it wait for a number, none is
 * lost or doubled, none hangs. */
typedef struct wide_arg { dml_ps *ps; int rc; } wide_arg;

static void *wide_pusher(void *p)
{
	wide_arg *a = p;
	float d[4] = {1, 2, 3, 4};
	for (int i = 0; i < 20 && !a->rc; i++)
		a->rc = dml_ps_update(a->ps, d);
	return NULL;
}

static void test_remote_wider_than_window(void **state)
{
	(void)state;
	TEST_PLAIN_ONLY(); /* 100 threads at once */
	enum { NT = 100 };
	served s;
	serve_start(&s, 4, NULL, 1);
	dml_rpc_client *c = dial(s.f.addr);
	dml_ps *ps;
	assert_int_equal(dml_ps_connect(&ps, &c, 1, NULL), 0);
	pthread_t t[NT];
	wide_arg a[NT];
	for (int i = 0; i < NT; i++) {
		a[i] = (wide_arg){ps, 0};
		assert_int_equal(pthread_create(&t[i], NULL, wide_pusher, &a[i]), 0);
	}
	for (int i = 0; i < NT; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].rc, 0);
	}
	float got[4];
	assert_int_equal(dml_ps_pull(ps, got), 0);
	for (int j = 0; j < 4; j++)
		assert_true(got[j] == (float)(NT * 20 * (j + 1)));
	uint64_t n;
	assert_int_equal(dml_ps_updates(s.ps, &n), 0);
	assert_int_equal(n, NT * 20);
	dml_ps_free(ps);
	dml_rpc_free(c);
	serve_stop(&s);
}

/* ---- exactly once ------------------------------------------------------ */

static int raw_push(dml_rpc_client *c, uint64_t client, uint64_t seq, float k)
{
	float v[3] = {k, k, k};
	psw_push a = {client, seq, PSW_OP_UPDATE, {v, 3, 0}};
	return dml_rpc_call(c, &psw_m_push, &a, NULL, 10000);
}

/* The handle's own resend after a timeout: the only server thread is held
 * in another handler for 400 ms while a push (timeout 100 ms) waits; the
 * handle resends it with its number until the server answers, and the
 * server applies it once. One attempt alone would have timed out. */
static gate hold_gate;

static int h_hold(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	(void)r;
	gate_pass(u);
	return 0;
}

static const dml_rpc_method m_hold = {"Test.Hold", NULL, NULL};

static void *open_later(void *g)
{
	poll(NULL, 0, 400); /* the fault: the server is stalled this long */
	gate_open(g);
	return NULL;
}

static void test_handle_resends_after_timeout(void **state)
{
	(void)state;
	gate_init(&hold_gate);
	served s;
	assert_int_equal(dml_ps_new(&s.ps, 3, NULL), 0);
	assert_int_equal(dml_rpc_server_new(&s.f.srv, NULL), 0);
	assert_int_equal(dml_ps_serve(s.ps, s.f.srv), 0);
	assert_int_equal(dml_rpc_server_register(s.f.srv, &m_hold, h_hold, &hold_gate), 0);
	assert_int_equal(dml_rpc_server_listen(s.f.srv, "127.0.0.1:0"), 0);
	fixture_start(&s.f, 1);
	dml_rpc_client *other = dial(s.f.addr), *c = dial(s.f.addr);
	dml_ps_remote_opts ro = {.timeout = 100, .retries = 1, .retry_timeout = 10000};
	dml_ps *h;
	assert_int_equal(dml_ps_connect(&h, &c, 1, &ro), 0);
	dml_rpc_pending *k;
	assert_int_equal(dml_rpc_start(&k, other, &m_hold, NULL, NULL, 30000), 0);
	assert_int_equal(dml_rpc_flush(other, 10000), 0); /* go only queues */
	sem_wait(&hold_gate.entered); /* the server thread is held */
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, open_later, &hold_gate), 0);
	float d[3] = {1, 2, 3}, got[3];
	int64_t t0 = dml__now_ms();
	assert_int_equal(dml_ps_update(h, d), 0);
	int64_t took = dml__now_ms() - t0;
	pthread_join(t, NULL);
	assert_true(took >= 300); /* answered only after the stall: resent */
	assert_int_equal(dml_rpc_pending_wait(k), 0);
	dml_rpc_pending_free(k);
	uint64_t n;
	assert_int_equal(dml_ps_updates(s.ps, &n), 0);
	assert_int_equal(n, 1); /* every copy after the first was not applied */
	assert_int_equal(dml_ps_pull(h, got), 0);
	assert_true(got[0] == 1 && got[1] == 2 && got[2] == 3);
	dml_ps_free(h);
	dml_rpc_free(c);
	dml_rpc_free(other);
	serve_stop(&s);
	gate_destroy(&hold_gate);
}

static void test_retried_push_applied_once(void **state)
{
	(void)state;
	served s;
	serve_start(&s, 3, NULL, 1);
	dml_rpc_client *c = dial(s.f.addr);
	float out[3];
	/* the same push twice (a retry after a lost reply) */
	assert_int_equal(raw_push(c, 77, 1, 1), 0);
	assert_int_equal(raw_push(c, 77, 1, 1), 0);
	assert_int_equal(dml_ps_pull(s.ps, out), 0);
	assert_true(out[0] == 1);
	/* overtaking pushes: 5, 3, 4, 2 each once, and their retries not */
	uint64_t order[] = {5, 3, 4, 2, 3, 5, 2, 4};
	for (int i = 0; i < 8; i++)
		assert_int_equal(raw_push(c, 77, order[i], 1), 0);
	assert_int_equal(dml_ps_pull(s.ps, out), 0);
	assert_true(out[0] == 5);
	/* another client's sequence numbers are its own */
	assert_int_equal(raw_push(c, 78, 1, 10), 0);
	assert_int_equal(dml_ps_pull(s.ps, out), 0);
	assert_true(out[1] == 15);
	/* far behind the window: sent before the window, so a late retry */
	assert_int_equal(raw_push(c, 77, 1000, 1), 0);
	assert_int_equal(raw_push(c, 77, 900, 1), 0);
	assert_int_equal(dml_ps_pull(s.ps, out), 0);
	assert_true(out[0] == 16);
	/* client id 0: no deduplication */
	assert_int_equal(raw_push(c, 0, 1, 1), 0);
	assert_int_equal(raw_push(c, 0, 1, 1), 0);
	assert_int_equal(dml_ps_pull(s.ps, out), 0);
	assert_true(out[2] == 18);
	/* wrong length refused */
	psw_push bad = {1, 1, PSW_OP_UPDATE, {out, 2, 0}};
	assert_int_equal(dml_rpc_call(c, &psw_m_push, &bad, NULL, 10000), DML_EHANDLER);
	/* a sequence number far beyond its client's window is refused */
	assert_int_equal(raw_push(c, 78, (uint64_t)1 << 40, 1), DML_EHANDLER);
	assert_int_equal(raw_push(c, 77, 1, 1), 0); /* still known: not applied */
	assert_int_equal(dml_ps_pull(s.ps, out), 0);
	assert_true(out[0] == 18);
	/* one identity holds at most 64 client ids: a peer that makes 5000 is
	 * never refused; it replaces its own least recently used (the table
	 * of many identities: test_security) */
	for (uint64_t id = 1000; id < 1000 + 5000; id++)
		assert_int_equal(raw_push(c, id, 1, 0), 0);
	assert_int_equal(raw_push(c, 77, 1, 1), 0); /* forgotten: applied */
	assert_int_equal(dml_ps_pull(s.ps, out), 0);
	assert_true(out[0] == 19);
	dml_rpc_free(c);
	serve_stop(&s);
}

/* ---- checkpoints ------------------------------------------------------ */

static char tmpdir[64];

static void tmp_path(char *buf, size_t cap, const char *name)
{
	if (!tmpdir[0]) {
		strcpy(tmpdir, "/tmp/dml_ps_XXXXXX");
		assert_non_null(mkdtemp(tmpdir));
	}
	snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void test_checkpoint_roundtrip(void **state)
{
	(void)state;
	enum { D = 20000 };
	char path[128];
	tmp_path(path, sizeof path, "adam.ckpt");
	dml_ps_opts o = {.stripes = 5, .optim = {.kind = DML_OPTIM_ADAM, .lr = 0.01f}};
	dml_ps *a, *b;
	assert_int_equal(dml_ps_new(&a, D, &o), 0);
	assert_int_equal(dml_ps_new(&b, D, &o), 0);
	static float g[D], wa[D], wb[D];
	uint64_t seed = 3;
	for (int step = 0; step < 3; step++) {
		for (int i = 0; i < D; i++)
			g[i] = (float)(splitmix(&seed) % 100) / 10 - 5;
		assert_int_equal(dml_ps_push(a, g), 0);
	}
	assert_int_equal(dml_ps_save(a, path), 0);
	assert_int_equal(dml_ps_load(b, path), 0);
	/* b continues exactly as a: parameters, Adam's moments and step */
	for (int i = 0; i < D; i++)
		g[i] = (float)(i % 11) - 5;
	assert_int_equal(dml_ps_push(a, g), 0);
	assert_int_equal(dml_ps_push(b, g), 0);
	assert_int_equal(dml_ps_pull(a, wa), 0);
	assert_int_equal(dml_ps_pull(b, wb), 0);
	assert_memory_equal(wa, wb, sizeof wa);
	uint64_t na, nb;
	dml_ps_updates(a, &na);
	dml_ps_updates(b, &nb);
	assert_int_equal(na, nb);

	/* wrong dimension, wrong rule: refused, nothing changes */
	dml_ps *c;
	assert_int_equal(dml_ps_new(&c, D + 1, &o), 0);
	assert_int_equal(dml_ps_load(c, path), DML_EDIM);
	dml_ps_free(c);
	dml_ps_opts sgd = {.init = wa};
	assert_int_equal(dml_ps_new(&c, D, &sgd), 0);
	assert_int_equal(dml_ps_load(c, path), DML_ETYPE);
	dml_ps_free(c);

	/* corrupted and truncated copies */
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	fstat(fd, &st);
	size_t size = (size_t)st.st_size;
	uint8_t *bytes = malloc(size);
	assert_int_equal(read(fd, bytes, size), (ssize_t)size);
	close(fd);
	char bad[128];
	tmp_path(bad, sizeof bad, "bad.ckpt");
	size_t where[] = {size / 2, size - 3, 40};
	for (int k = 0; k < 3; k++) {
		bytes[where[k]] ^= 0x10;
		FILE *f = fopen(bad, "wb");
		fwrite(bytes, 1, size, f);
		fclose(f);
		bytes[where[k]] ^= 0x10;
		int rc = dml_ps_load(b, bad);
		assert_true(rc == DML_ECORRUPT || rc == DML_EFORMAT);
		assert_int_equal(dml_ps_pull(b, wb), 0);
		assert_memory_equal(wa, wb, sizeof wa); /* unchanged */
	}
	FILE *f = fopen(bad, "wb");
	fwrite(bytes, 1, size / 2, f);
	fclose(f);
	assert_int_equal(dml_ps_load(b, bad), DML_ETRUNC);
	assert_int_equal(dml_ps_load(b, "/nonexistent/x.ckpt"), DML_EIO);
	free(bytes);
	unlink(bad);
	unlink(path);
	dml_ps_free(a);
	dml_ps_free(b);
}

/* A store with a checkpoint key loads only what a store with that key
 * saved: a checkpoint planted by someone else (a sound file of their
 * weights, unsigned or signed with another key) is refused and changes
 * nothing. Files are created 0600. Dense and keyed stores. */
static void test_checkpoint_key(void **state)
{
	(void)state;
	enum { D = 1000 };
	char path[128], planted[128];
	tmp_path(path, sizeof path, "signed.ckpt");
	tmp_path(planted, sizeof planted, "planted.ckpt");
	static const char key[] = "the job's checkpoint key";
	dml_ps_opts o = {.ckpt_key = key, .ckpt_key_len = sizeof key - 1};
	dml_ps *a, *evil;
	if (!dml_tls_available()) {
		assert_int_equal(dml_ps_new(&a, D, &o), DML_ENOTSUP);
		return;
	}
	dml_ps_opts bad = o;
	bad.ckpt_key = NULL;
	assert_int_equal(dml_ps_new(&a, D, &bad), DML_EINVAL);
	bad = o;
	bad.ckpt_key_len = 2000;
	assert_int_equal(dml_ps_new(&a, D, &bad), DML_EINVAL);
	static float w[D], got[D];
	for (int i = 0; i < D; i++)
		w[i] = (float)i;
	o.init = w;
	assert_int_equal(dml_ps_new(&a, D, &o), 0);
	assert_int_equal(dml_ps_save(a, path), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 077, 0);
	assert_int_equal(dml_ps_load(a, path), 0);

	static float junk[D];
	for (int i = 0; i < D; i++)
		junk[i] = -1e30f;
	dml_ps_opts eo = {.init = junk};
	assert_int_equal(dml_ps_new(&evil, D, &eo), 0);
	assert_int_equal(dml_ps_save(evil, planted), 0);
	assert_int_equal(dml_ps_load(a, planted), DML_EAUTH);
	dml_ps_free(evil);
	static const char other[] = "somebody else's key";
	eo.ckpt_key = other;
	eo.ckpt_key_len = sizeof other - 1;
	assert_int_equal(dml_ps_new(&evil, D, &eo), 0);
	assert_int_equal(dml_ps_save(evil, planted), 0);
	assert_int_equal(dml_ps_load(a, planted), DML_EAUTH);
	assert_non_null(strstr(dml_error_detail(), "MAC"));
	dml_ps_free(evil);
	assert_int_equal(dml_ps_pull(a, got), 0);
	assert_memory_equal(got, w, sizeof w); /* unchanged */

	/* keyed stores take the same key */
	dml_ps_opts ko = {.ckpt_key = key, .ckpt_key_len = sizeof key - 1};
	dml_ps *k1, *k2;
	assert_int_equal(dml_ps_new_keyed(&k1, 2, &ko), 0);
	uint64_t keys[1] = {42};
	float row[2] = {1, 2}, back[2];
	assert_int_equal(dml_ps_update_rows(k1, keys, 1, row), 0);
	assert_int_equal(dml_ps_save(k1, path), 0);
	assert_int_equal(dml_ps_new_keyed(&k2, 2, NULL), 0);
	assert_int_equal(dml_ps_save(k2, planted), 0);
	assert_int_equal(dml_ps_load(k1, planted), DML_EAUTH);
	assert_int_equal(dml_ps_load(k2, path), 0); /* no key: the CRC only */
	assert_int_equal(dml_ps_pull_rows(k2, keys, 1, back), 0);
	assert_memory_equal(back, row, sizeof row);
	dml_ps_free(k1);
	dml_ps_free(k2);
	dml_ps_free(a);
	unlink(path);
	unlink(planted);
}

/* A child saving over and over is killed with SIGKILL mid-save; the file
 * left behind loads, and holds one of the two states. */
static void test_checkpoint_sigkill(void **state)
{
	(void)state;
	enum { D = 4000000 }; /* 16 MB: a save takes a while */
	char path[128];
	tmp_path(path, sizeof path, "kill.ckpt");
	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, D, NULL), 0);
	float *one = malloc(D * sizeof *one);
	for (int i = 0; i < D; i++)
		one[i] = 1;
	assert_int_equal(dml_ps_save(ps, path), 0); /* state A: zeros */
	for (int round = 0; round < 4; round++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			dml_ps_update(ps, one); /* state B: ones */
			for (int i = 0; i < 1000; i++) {
				if (write(p[1], "x", 1) != 1)
					_exit(1);
				dml_ps_save(ps, path);
			}
			_exit(0);
		}
		close(p[1]);
		char ch;
		for (int k = 0; k <= round; k++) /* into save number round + 1 */
			assert_int_equal(read(p[0], &ch, 1), 1);
		/* a bounded busy wait of a varying length: part way into it */
		volatile unsigned long spin = 0;
		for (unsigned long i = 0; i < 2000000ul * (unsigned long)round; i++)
			spin = spin + i;
		(void)spin;
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		close(p[0]);
		dml_ps *back;
		assert_int_equal(dml_ps_new(&back, D, NULL), 0);
		assert_int_equal(dml_ps_load(back, path), 0);
		float first, last;
		dml_ps_pull_range(back, 0, 1, &first);
		dml_ps_pull_range(back, D - 1, 1, &last);
		assert_true(first == last && (first == 0 || first == 1));
		dml_ps_free(back);
	}
	/* remove temp files a killed save may have left */
	char cmd[160];
	snprintf(cmd, sizeof cmd, "rm -f %s/kill.ckpt*", tmpdir);
	assert_int_equal(system(cmd), 0);
	free(one);
	dml_ps_free(ps);
}

static int cleanup(void **state)
{
	(void)state;
	if (tmpdir[0])
		rmdir(tmpdir);
	return 0;
}

/* ---- the shards' calls are in flight together ----------------------- */

typedef struct par_arg {
	dml_rpc_client *c[2];
	dml_ps *h;
	float *w;
	atomic_int phase; /* 1 connected, 2 pulled, 3 pushed */
	atomic_int go;    /* the test stopped serving shard 0: 1 pull, 2 push */
	int rc;
} par_arg;

static void *par_main(void *p)
{
	par_arg *a = p;
	a->rc = dml_ps_connect(&a->h, a->c, 2, NULL);
	atomic_store(&a->phase, 1);
	while (atomic_load(&a->go) < 1)
		sched_yield();
	if (!a->rc)
		a->rc = dml_ps_pull(a->h, a->w);
	atomic_store(&a->phase, 2);
	while (atomic_load(&a->go) < 2)
		sched_yield();
	if (!a->rc)
		a->rc = dml_ps_push(a->h, a->w);
	atomic_store(&a->phase, 3);
	return NULL;
}

static uint64_t calls_of(dml_rpc_server *s, const char *m)
{
	dml_rpc_stats st;
	assert_int_equal(dml_rpc_server_stats(&st, s, m), 0);
	return st.calls;
}

/* A call of a remote handle goes to every shard at once: shard 1 gets its
 * part of a pull and of a push while shard 0 has not answered (its server
 * is not polled meanwhile). Clients queue small requests until a wait, and
 * the handle used to wait for shard 0 before writing to shard 1, so the
 * shards' calls ran one by one: on 10 ms links, twice the time per step. */
static void test_shards_in_parallel(void **state)
{
	(void)state;
	enum { PDIM = 2000 };
	dml_ps *st[2];
	dml_rpc_server *srv[2];
	char addr[2][128];
	par_arg a = {{NULL, NULL}, NULL, calloc(PDIM, sizeof(float)), 0, 0, 0};
	for (int i = 0; i < 2; i++) {
		assert_int_equal(dml_ps_new(&st[i], PDIM / 2, NULL), 0);
		assert_int_equal(dml_rpc_server_new(&srv[i], NULL), 0);
		assert_int_equal(dml_ps_serve(st[i], srv[i]), 0);
		assert_int_equal(dml_rpc_server_listen(srv[i], "127.0.0.1:0"), 0);
		assert_int_equal(dml_rpc_server_addr(srv[i], 0, addr[i], sizeof addr[i]), 0);
		assert_int_equal(dml_rpc_dial(&a.c[i], addr[i], NULL), 0);
	}
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, par_main, &a), 0);
	/* both servers answer while the handle connects */
	for (int n = 0; atomic_load(&a.phase) < 1 && n < 100000; n++)
		for (int i = 0; i < 2; i++)
			assert_true(dml_rpc_server_poll(srv[i], 1) >= 0);
	assert_int_equal(atomic_load(&a.phase), 1);
	const char *m[2] = {"PS.Pull", "PS.Push"};
	for (int k = 0; k < 2; k++) {
		atomic_store(&a.go, k + 1);
		/* shard 1 alone is served: the call must reach it anyway (10 s) */
		for (int n = 0; calls_of(srv[1], m[k]) < 1 && n < 10000; n++)
			assert_true(dml_rpc_server_poll(srv[1], 1) >= 0);
		assert_int_equal(calls_of(srv[1], m[k]), 1);
		assert_int_equal(calls_of(srv[0], m[k]), 0);
		assert_int_equal(atomic_load(&a.phase), k + 1);
		/* then shard 0 answers too, and the call completes */
		for (int n = 0; atomic_load(&a.phase) < k + 2 && n < 100000; n++)
			assert_true(dml_rpc_server_poll(srv[0], 1) >= 0);
		assert_int_equal(atomic_load(&a.phase), k + 2);
	}
	pthread_join(t, NULL);
	assert_int_equal(a.rc, 0);
	dml_ps_free(a.h);
	for (int i = 0; i < 2; i++) {
		dml_rpc_free(a.c[i]);
		dml_rpc_server_free(srv[i]);
		dml_ps_free(st[i]);
	}
	free(a.w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_local_basics),
		cmocka_unit_test(test_local_exact_threads),
		cmocka_unit_test(test_push_optimizers),
		cmocka_unit_test(test_clocks_local),
		cmocka_unit_test(test_clocks_remote),
		cmocka_unit_test(test_bsp_rounds_remote),
		cmocka_unit_test(test_dead_worker_dropped),
		cmocka_unit_test(test_vanished_worker_dropped),
		cmocka_unit_test(test_remote_equals_local_and_shards),
		cmocka_unit_test(test_shards_in_parallel),
		cmocka_unit_test(test_remote_exact_threads),
		cmocka_unit_test(test_remote_wider_than_window),
		cmocka_unit_test(test_retried_push_applied_once),
		cmocka_unit_test(test_handle_resends_after_timeout),
		cmocka_unit_test(test_checkpoint_roundtrip),
		cmocka_unit_test(test_checkpoint_sigkill),
		cmocka_unit_test(test_checkpoint_key),
	};
	return cmocka_run_group_tests(tests, NULL, cleanup);
}

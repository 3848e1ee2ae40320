/* test_train.c - single-process SGD and the DSGD worker loop: convergence,
 * the consistency models' staleness bounds, DSGD over loopback RPC. */
#include "testutil.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- a small separable problem: 4 classes of blobs in 8 dimensions ---- */

enum { F = 8, K = 4, NTRAIN = 2000, NTEST = 500 };

static double unif(uint64_t *s) { return (double)(splitmix(s) >> 11) / 9007199254740992.0; }

static dml_dataset *blobs(size_t n, uint64_t seed)
{
	float *x = malloc(n * F * sizeof *x), *y = malloc(n * sizeof *y);
	uint64_t s = seed;
	for (size_t r = 0; r < n; r++) {
		int c = (int)(splitmix(&s) % K);
		y[r] = (float)c;
		for (int j = 0; j < F; j++) /* class c: centre 2 on axis c */
			x[r * F + j] = (float)((j == c ? 2.0 : 0.0) + (unif(&s) - 0.5));
	}
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_dense(&ds, n, F, x, y), 0);
	assert_int_equal(dml_dataset_set_classes(ds, K), 0);
	free(x);
	free(y);
	return ds;
}

static double accuracy(dml_model *m, const float *w, const dml_dataset *ds)
{
	double acc = -1;
	assert_int_equal(dml_model_evaluate(m, w, ds, NULL, &acc), 0);
	return acc;
}

/* ---- single process ---------------------------------------------------- */

typedef struct epochs_seen {
	int n;
	double loss[64];
	int stop_at;
} epochs_seen;

static int record(void *user, const dml_epoch_info *info, const float *w)
{
	(void)w;
	epochs_seen *e = user;
	assert_int_equal(info->epoch, e->n + 1);
	e->loss[e->n++] = info->loss;
	return e->stop_at && info->epoch >= e->stop_at;
}

static void test_sgd_converges(void **state)
{
	(void)state;
	dml_dataset *train = blobs(NTRAIN, 1), *test = blobs(NTEST, 2);
	dml_model m;
	assert_int_equal(dml_model_init_softmax(&m, F, K, 0), 0);
	float *w = calloc(m.dim, sizeof *w);
	assert_non_null(w);
	epochs_seen seen = {0};
	dml_sgd_opts o = {.epochs = 8, .batch = 32, .optim = {.kind = DML_OPTIM_SGD, .lr = 0.1f},
	                  .seed = 3, .on_epoch = record, .user = &seen};
	dml_train_stats st;
	assert_int_equal(dml_sgd_run(&m, train, w, &st, &o), 0);
	assert_int_equal(st.epochs, 8);
	assert_int_equal(seen.n, 8);
	assert_int_equal(st.samples, 8 * NTRAIN);
	assert_int_equal(st.steps, 8 * ((NTRAIN + 31) / 32));
	assert_true(seen.loss[7] < seen.loss[0]);
	assert_true(accuracy(&m, w, test) > 0.99);
	/* early stop from the callback */
	epochs_seen stop = {.stop_at = 2};
	o.on_epoch = record;
	o.user = &stop;
	assert_int_equal(dml_sgd_run(&m, train, w, &st, &o), 0);
	assert_int_equal(st.epochs, 2);
	assert_true(st.stopped);
	/* a model for other inputs: an error, not a crash */
	dml_model wrong;
	assert_int_equal(dml_model_init_softmax(&wrong, F + 1, K, 0), 0);
	float *w2 = calloc(wrong.dim, sizeof *w2);
	assert_int_equal(dml_sgd_run(&wrong, train, w2, NULL, NULL), DML_EDIM);
	assert_int_equal(dml_sgd_run(NULL, train, w2, NULL, NULL), DML_EINVAL);
	free(w2);
	dml_model_destroy(&wrong);
	free(w);
	dml_model_destroy(&m);
	dml_dataset_free(train);
	dml_dataset_free(test);
}

/* ---- DSGD on a local store: the staleness bounds -------------------- */

typedef struct wk_arg {
	dml_ps *ps;
	dml_dataset *shard;
	dml_dsgd_opts o;
	dml_train_stats st;
	int rc;
	int slow; /* spin this many rounds per epoch callback: a straggler */
} wk_arg;

static int slow_epoch(void *user, const dml_epoch_info *info, const float *w)
{
	(void)w;
	(void)info;
	wk_arg *a = user;
	volatile unsigned long x = 0;
	for (unsigned long i = 0; i < (unsigned long)a->slow * 1000000ul; i++)
		x = x + i;
	(void)x;
	return 0;
}

static void *wk_main(void *p)
{
	wk_arg *a = p;
	dml_model m;
	a->rc = dml_model_init_softmax(&m, F, K, 0);
	if (!a->rc)
		a->rc = dml_dsgd_run(a->ps, &m, a->shard, &a->st, &a->o);
	dml_model_destroy(&m);
	return NULL;
}

/* Runs W workers on `ps` (a local store or a remote handle per worker). */
static void run_workers(dml_ps **ps, int nw, dml_dsgd_mode mode, dml_dataset *train,
                        wk_arg *a, int epochs)
{
	pthread_t t[8];
	for (int i = 0; i < nw; i++) {
		a[i] = (wk_arg){0};
		a[i].ps = ps[i];
		assert_int_equal(dml_dataset_new_shard(&a[i].shard, train, i, nw), 0);
		a[i].o = (dml_dsgd_opts){.worker = i, .mode = mode, .epochs = epochs, .batch = 16,
		                         .steps_per_epoch = (NTRAIN / nw + 15) / 16,
		                         .clock_timeout = 20000};
		a[i].slow = i == nw - 1 ? 5 : 0; /* the last worker lags */
		a[i].o.on_epoch = slow_epoch;
		a[i].o.user = &a[i];
		assert_int_equal(pthread_create(&t[i], NULL, wk_main, &a[i]), 0);
	}
	for (int i = 0; i < nw; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].rc, 0);
		dml_dataset_free(a[i].shard);
	}
}

/* A worker checks its mode against the store's clocks before its first
 * step: a mismatch that would hang the other workers (an ASP worker never
 * reaches a BSP barrier) or itself is refused at once, with the reason. */
static void test_dsgd_mode_checked(void **state)
{
	(void)state;
	dml_dataset *train = blobs(64, 1);
	dml_model m;
	assert_int_equal(dml_model_init_softmax(&m, F, K, 0), 0);
	dml_ps *bsp, *ssp, *none;
	assert_int_equal(dml_ps_new(&bsp, m.dim, &(dml_ps_opts){.workers = 2}), 0);
	assert_int_equal(dml_ps_new(&ssp, m.dim, &(dml_ps_opts){.workers = 1, .staleness = 2}), 0);
	assert_int_equal(dml_ps_new(&none, m.dim, NULL), 0);
	dml_train_stats st;
	dml_dsgd_opts o = {.epochs = 1, .mode = DML_DSGD_ASP};
	assert_int_equal(dml_dsgd_run(bsp, &m, train, &st, &o), DML_EINVAL);
	assert_non_null(strstr(dml_error_detail(), "worker mode ASP"));
	assert_non_null(strstr(dml_error_detail(), "BSP"));
	assert_int_equal(st.steps, 0);
	o.mode = DML_DSGD_SSP;
	assert_int_equal(dml_dsgd_run(bsp, &m, train, &st, &o), DML_EINVAL);
	o.mode = DML_DSGD_BSP;
	assert_int_equal(dml_dsgd_run(ssp, &m, train, &st, &o), DML_EINVAL);
	assert_int_equal(dml_dsgd_run(none, &m, train, &st, &o), DML_EINVAL);
	assert_non_null(strstr(dml_error_detail(), "0 workers"));
	/* a worker without a clock */
	o.mode = DML_DSGD_AUTO;
	o.worker = 1;
	assert_int_equal(dml_dsgd_run(ssp, &m, train, &st, &o), DML_EINVAL);
	assert_non_null(strstr(dml_error_detail(), "workers 0 to 0"));
	/* AUTO (the zeroed default) takes the store's mode */
	o.worker = 0;
	assert_int_equal(dml_dsgd_run(ssp, &m, train, &st, &o), 0);
	assert_int_equal(st.max_staleness, 0); /* clocked: measured */
	assert_int_equal(dml_dsgd_run(none, &m, train, &st, NULL), 0);
	assert_int_equal(st.max_staleness, -1); /* ASP: not measured */
	/* a model's failure names where it happened */
	dml_model wrong;
	assert_int_equal(dml_model_init_softmax(&wrong, F, K, 0), 0);
	dml_dataset *bad = blobs(64, 1);
	float y9 = 9; /* a class the model does not have */
	assert_int_equal(dml_dataset_set_classes(bad, 0), 0);
	memcpy((float *)(uintptr_t)dml_dataset_labels(bad) + 5, &y9, sizeof y9);
	assert_int_equal(dml_dsgd_run(none, &wrong, bad, &st, &(dml_dsgd_opts){.batch = 64,
	                 .no_shuffle = 1}), DML_EINVAL);
	assert_non_null(strstr(dml_error_detail(), "epoch 1, step 1, the model"));
	dml_dataset_free(bad);
	dml_model_destroy(&wrong);
	dml_ps_free(bsp);
	dml_ps_free(ssp);
	dml_ps_free(none);
	dml_model_destroy(&m);
	dml_dataset_free(train);
}

static void test_dsgd_staleness_local(void **state)
{
	(void)state;
	dml_dataset *train = blobs(NTRAIN, 1), *test = blobs(NTEST, 2);
	struct { dml_dsgd_mode mode; int s; } cases[] = {
		{DML_DSGD_BSP, 0}, {DML_DSGD_SSP, 1}, {DML_DSGD_SSP, 3}, {DML_DSGD_ASP, DML_PS_ASYNC}};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		enum { W = 3, EPOCHS = 4 };
		dml_model m;
		assert_int_equal(dml_model_init_softmax(&m, F, K, 0), 0);
		dml_ps_opts po = {.optim = {.kind = DML_OPTIM_SGD, .lr = 0.05f},
		                  .workers = W, .staleness = cases[c].s};
		dml_ps *ps;
		assert_int_equal(dml_ps_new(&ps, m.dim, &po), 0);
		dml_ps *handles[W] = {ps, ps, ps};
		wk_arg a[W];
		run_workers(handles, W, cases[c].mode, train, a, EPOCHS);
		uint64_t steps = 0;
		for (int i = 0; i < W; i++) {
			steps += a[i].st.steps;
			assert_int_equal(a[i].st.epochs, EPOCHS);
			if (cases[c].mode == DML_DSGD_ASP)
				assert_int_equal(a[i].st.max_staleness, -1);
			else /* the guarantee: never more than s ahead */
				assert_true(a[i].st.max_staleness <= cases[c].s);
		}
		/* a straggler makes the others wait, except asynchronously */
		uint64_t waits = a[0].st.waits + a[1].st.waits;
		if (cases[c].mode == DML_DSGD_ASP)
			assert_int_equal(waits, 0);
		else
			assert_true(waits > 0);
		uint64_t applied;
		assert_int_equal(dml_ps_updates(ps, &applied), 0);
		assert_int_equal(applied, steps); /* every push applied once */
		float *w = malloc(m.dim * sizeof *w);
		assert_int_equal(dml_ps_pull(ps, w), 0);
		assert_true(accuracy(&m, w, test) > 0.95);
		free(w);
		dml_ps_free(ps);
		dml_model_destroy(&m);
	}
	dml_dataset_free(train);
	dml_dataset_free(test);
}

/* DSGD over loopback RPC reaches the accuracy of single-process SGD. */
static void test_dsgd_remote_matches_sgd(void **state)
{
	(void)state;
	dml_dataset *train = blobs(NTRAIN, 1), *test = blobs(NTEST, 2);
	dml_model m;
	assert_int_equal(dml_model_init_softmax(&m, F, K, 0), 0);
	/* single process */
	float *w = calloc(m.dim, sizeof *w);
	dml_sgd_opts so = {.epochs = 3, .batch = 16, .optim = {.kind = DML_OPTIM_SGD, .lr = 0.05f}};
	assert_int_equal(dml_sgd_run(&m, train, w, NULL, &so), 0);
	double single = accuracy(&m, w, test);

	/* 2 workers, each with its own client, SSP s = 1 */
	enum { W = 2 };
	dml_ps *store;
	dml_ps_opts po = {.optim = {.kind = DML_OPTIM_SGD, .lr = 0.05f}, .workers = W, .staleness = 1};
	assert_int_equal(dml_ps_new(&store, m.dim, &po), 0);
	fixture f;
	assert_int_equal(dml_rpc_server_new(&f.srv, NULL), 0);
	assert_int_equal(dml_ps_serve(store, f.srv), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
	fixture_start(&f, 1);
	dml_rpc_client *c[W];
	dml_ps *h[W];
	for (int i = 0; i < W; i++) {
		assert_int_equal(dml_rpc_dial(&c[i], f.addr, NULL), 0);
		assert_int_equal(dml_ps_connect(&h[i], &c[i], 1, NULL), 0);
	}
	wk_arg a[W];
	run_workers(h, W, DML_DSGD_SSP, train, a, 3);
	assert_int_equal(dml_ps_pull(h[0], w), 0);
	double dist = accuracy(&m, w, test);
	for (int i = 0; i < W; i++) {
		assert_true(a[i].st.max_staleness <= 1);
		dml_ps_free(h[i]);
		dml_rpc_free(c[i]);
	}
	fixture_stop(&f);
	dml_ps_free(store);
	assert_true(single > 0.97);
	assert_true(dist > single - 0.02);
	/* a store of another size: DML_EDIM before any traffic */
	dml_ps *other;
	assert_int_equal(dml_ps_new(&other, m.dim + 1, NULL), 0);
	dml_dataset *shard;
	assert_int_equal(dml_dataset_new_shard(&shard, train, 0, 2), 0);
	assert_int_equal(dml_dsgd_run(other, &m, shard, NULL, NULL), DML_EDIM);
	dml_dataset_free(shard);
	dml_ps_free(other);
	free(w);
	dml_model_destroy(&m);
	dml_dataset_free(train);
	dml_dataset_free(test);
}

/* ---- overlap: the next pull while this step computes ---------------- */

/* A model of one parameter whose gradient is 1 whatever the data: it
 * records the parameter each step computed on. */
enum { SEEN_MAX = 64 };
typedef struct seer {
	float seen[SEEN_MAX];
	int n;
} seer;

static int seer_grad(void *self, const float *w, const dml_batch *b, float *g, double *loss)
{
	(void)b;
	seer *s = self;
	if (s->n < SEEN_MAX)
		s->seen[s->n++] = w[0];
	g[0] = 1;
	*loss = 0;
	return 0;
}

/* With one worker and SGD at rate 1 on the store, step t pushes -1, so
 * without overlap step t computes on -t. With overlap the pull for step t
 * was begun before step t-1 pushed: step t computes on -(t-1), one step
 * older; and every push is applied once. */
static void test_dsgd_overlap(void **state)
{
	(void)state;
	dml_dataset *train = blobs(160, 3);
	dml_ps *store;
	dml_ps_opts po = {.optim = {.kind = DML_OPTIM_SGD, .lr = 1}, .workers = 1};
	assert_int_equal(dml_ps_new(&store, 1, &po), 0);
	fixture f;
	assert_int_equal(dml_rpc_server_new(&f.srv, NULL), 0);
	assert_int_equal(dml_ps_serve(store, f.srv), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
	fixture_start(&f, 1);
	dml_rpc_client *c;
	dml_ps *h;
	assert_int_equal(dml_rpc_dial(&c, f.addr, NULL), 0);
	assert_int_equal(dml_ps_connect(&h, &c, 1, NULL), 0);
	for (int overlap = 0; overlap < 2; overlap++) {
		float zero = 0;
		assert_int_equal(dml_ps_assign(h, &zero), 0);
		seer s = {{0}, 0};
		dml_model m = {.dim = 1, .features = F, .classes = K, .self = &s,
		               .loss_grad = seer_grad};
		dml_dsgd_opts o = {.mode = DML_DSGD_BSP, .epochs = 2, .batch = 16,
		                   .overlap = overlap};
		dml_train_stats st;
		assert_int_equal(dml_dsgd_run(h, &m, train, &st, &o), 0);
		assert_int_equal(st.steps, 20);
		assert_int_equal(s.n, 20);
		for (int t = 0; t < 20; t++)
			assert_true(s.seen[t] == (overlap ? -(float)(t ? t - 1 : 0) : -(float)t));
		float w;
		assert_int_equal(dml_ps_pull(h, &w), 0);
		assert_true(w == -20.0f);
	}
	dml_ps_free(h);
	dml_rpc_free(c);
	fixture_stop(&f);
	dml_ps_free(store);
	dml_dataset_free(train);
}

/* A worker that dies (stops after its first epoch) does not stall the
 * others: the store drops it after worker_timeout in BSP and SSP, also
 * when served over RPC (its tick does it); ASP never waits for it. */
static int die_after_one(void *user, const dml_epoch_info *info, const float *w)
{
	(void)user;
	(void)w;
	return info->worker == 2; /* worker 2 stops: from now on it is silent */
}

/* One round: W workers on a store (local, or served with a remote handle
 * and RPC client per worker) in `mode`; worker 2 dies after one epoch. */
static void dead_worker_round(dml_dataset *train, dml_dsgd_mode mode, int remote)
{
	enum { W = 3 };
	dml_model m;
	assert_int_equal(dml_model_init_softmax(&m, F, K, 0), 0);
	dml_ps_opts po = {.optim = {.kind = DML_OPTIM_SGD, .lr = 0.05f}, .workers = W,
	                  .staleness = mode == DML_DSGD_BSP   ? 0
	                               : mode == DML_DSGD_SSP ? 1
	                                                      : DML_PS_ASYNC,
	                  .worker_timeout = 300};
	dml_ps *store;
	assert_int_equal(dml_ps_new(&store, m.dim, &po), 0);
	fixture f;
	dml_rpc_client *c[W] = {0};
	dml_ps *h[W];
	if (remote) {
		assert_int_equal(dml_rpc_server_new(&f.srv, NULL), 0);
		assert_int_equal(dml_ps_serve(store, f.srv), 0);
		assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
		fixture_start(&f, 1); /* one thread: clock waits must not hold it */
	}
	pthread_t t[W];
	wk_arg a[W];
	for (int i = 0; i < W; i++) {
		h[i] = store;
		if (remote) {
			assert_int_equal(dml_rpc_dial(&c[i], f.addr, NULL), 0);
			assert_int_equal(dml_ps_connect(&h[i], &c[i], 1, NULL), 0);
		}
		a[i] = (wk_arg){0};
		a[i].ps = h[i];
		assert_int_equal(dml_dataset_new_shard(&a[i].shard, train, i, W), 0);
		a[i].o = (dml_dsgd_opts){.worker = i, .mode = mode, .epochs = 3, .batch = 16,
		                         .steps_per_epoch = (NTRAIN / W + 15) / 16,
		                         .clock_timeout = 20000, .on_epoch = die_after_one};
		assert_int_equal(pthread_create(&t[i], NULL, wk_main, &a[i]), 0);
	}
	for (int i = 0; i < W; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].rc, 0);
		dml_dataset_free(a[i].shard);
	}
	assert_int_equal(a[2].st.epochs, 1);
	assert_true(a[2].st.stopped);
	assert_int_equal(a[0].st.epochs, 3);
	assert_int_equal(a[1].st.epochs, 3);
	for (int i = 0; remote && i < W; i++) {
		dml_ps_free(h[i]);
		dml_rpc_free(c[i]);
	}
	if (remote)
		fixture_stop(&f);
	dml_ps_free(store);
	dml_model_destroy(&m);
}

/* BSP, SSP and ASP, on a local store and over RPC: the others finish. */
static void test_dsgd_dead_worker(void **state)
{
	(void)state;
	dml_dataset *train = blobs(NTRAIN, 1);
	dml_dsgd_mode modes[3] = {DML_DSGD_BSP, DML_DSGD_SSP, DML_DSGD_ASP};
	for (int remote = 0; remote < 2; remote++)
		for (int k = 0; k < 3; k++)
			dead_worker_round(train, modes[k], remote);
	dml_dataset_free(train);
}

/* ---- a store server killed with SIGKILL and restarted from its last
 * checkpoint: the workers reconnect and finish ---------------------- */

typedef struct ckpt_tick {
	dml_ps *ps;
	const char *path;
} ckpt_tick;

static void save_tick(void *arg)
{
	ckpt_tick *t = arg;
	dml_ps_save(t->ps, t->path); /* periodic checkpoint, from the server's tick */
}

/* The server process: a store (from the checkpoint when there is one)
 * served on 127.0.0.1:port, saved every 20 ms; writes one byte to `ready`
 * once listening, then serves until killed. */
static void store_process(int port, const char *path, size_t dim, int ready)
{
	dml_ps_opts po = {.optim = {.kind = DML_OPTIM_SGD, .lr = 0.05f}, .workers = 2,
	                  .staleness = 1, .worker_timeout = 2000};
	dml_ps *ps;
	dml_rpc_server *srv;
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
	if (dml_ps_new(&ps, dim, &po) || (access(path, R_OK) == 0 && dml_ps_load(ps, path)) ||
	    dml_rpc_server_new(&srv, NULL) || dml_ps_serve(ps, srv))
		_exit(3);
	ckpt_tick t = {ps, path};
	if (dml_rpc_server_tick(srv, 20, save_tick, &t) || dml_rpc_server_listen(srv, addr))
		_exit(4);
	if (write(ready, "r", 1) != 1)
		_exit(5);
	dml_rpc_server_run(srv);
	_exit(0);
}

static pid_t start_store(int port, const char *path, size_t dim)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		store_process(port, path, dim, p[1]);
	}
	close(p[1]);
	char ch;
	assert_int_equal(read(p[0], &ch, 1), 1); /* listening */
	close(p[0]);
	return pid;
}

typedef struct restart_arg {
	const char *addr;
	dml_dataset *shard;
	int w, rc;
	dml_train_stats st;
	sem_t *epoch1;
} restart_arg;

static int post_epoch(void *user, const dml_epoch_info *info, const float *w)
{
	(void)w;
	restart_arg *a = user;
	if (info->epoch == 1 && a->w == 0)
		sem_post(a->epoch1);
	return 0;
}

static void *restart_worker(void *p)
{
	restart_arg *a = p;
	dml_rpc_client_opts co = {.reconnect = 1, .backoff_min = 10, .backoff_max = 200,
	                          .dial_timeout = 1000, .call_timeout = 5000};
	dml_rpc_client *c = NULL;
	dml_ps *ps = NULL;
	dml_model m;
	memset(&m, 0, sizeof m);
	a->rc = dml_rpc_dial(&c, a->addr, &co);
	dml_ps_remote_opts ro = {.timeout = 5000, .retry_timeout = 20000};
	if (!a->rc)
		a->rc = dml_ps_connect(&ps, &c, 1, &ro);
	if (!a->rc)
		a->rc = dml_model_init_softmax(&m, F, K, 0);
	if (!a->rc) {
		dml_dsgd_opts o = {.worker = a->w, .mode = DML_DSGD_SSP, .epochs = 6, .batch = 16,
		                   .steps_per_epoch = (NTRAIN / 2 + 15) / 16, .clock_timeout = 20000,
		                   .reconnect_timeout = 20000, .on_epoch = post_epoch, .user = a};
		a->rc = dml_dsgd_run(ps, &m, a->shard, &a->st, &o);
	}
	dml_model_destroy(&m);
	dml_ps_free(ps);
	dml_rpc_free(c);
	return NULL;
}

static void test_store_restart(void **state)
{
	(void)state;
	dml_dataset *train = blobs(NTRAIN, 1), *test = blobs(NTEST, 2);
	dml_model m;
	assert_int_equal(dml_model_init_softmax(&m, F, K, 0), 0);
	char dir[] = "/tmp/dml_restart_XXXXXX", path[128], addr[64];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/store.ckpt", dir);
	/* a free port: bind, read, close (the store binds it with SO_REUSEADDR) */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sa;
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	int port = ntohs(sa.sin_port);
	close(fd);
	snprintf(addr, sizeof addr, "127.0.0.1:%d", port);

	pid_t pid = start_store(port, path, m.dim);
	sem_t epoch1;
	sem_init(&epoch1, 0, 0);
	pthread_t t[2];
	restart_arg a[2];
	for (int i = 0; i < 2; i++) {
		a[i] = (restart_arg){addr, NULL, i, 0, {0}, &epoch1};
		assert_int_equal(dml_dataset_new_shard(&a[i].shard, train, i, 2), 0);
		assert_int_equal(pthread_create(&t[i], NULL, restart_worker, &a[i]), 0);
	}
	sem_wait(&epoch1); /* mid-run: kill the store, restart it from its checkpoint */
	kill(pid, SIGKILL);
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFSIGNALED(status));
	pid = start_store(port, path, m.dim);
	for (int i = 0; i < 2; i++) { /* both lost the store mid-run and came back */
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].rc, 0);
		assert_int_equal(a[i].st.epochs, 6);
		dml_dataset_free(a[i].shard);
	}
	/* the run still reaches its accuracy: read the restarted store */
	dml_rpc_client *c;
	dml_ps *ps;
	assert_int_equal(dml_rpc_dial(&c, addr, NULL), 0);
	assert_int_equal(dml_ps_connect(&ps, &c, 1, NULL), 0);
	float *w = malloc(m.dim * sizeof *w);
	assert_int_equal(dml_ps_pull(ps, w), 0);
	assert_true(accuracy(&m, w, test) > 0.95);
	free(w);
	dml_ps_free(ps);
	dml_rpc_free(c);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	sem_destroy(&epoch1);
	char cmd[200];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	dml_model_destroy(&m);
	dml_dataset_free(train);
	dml_dataset_free(test);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sgd_converges),
		cmocka_unit_test(test_dsgd_mode_checked),
		cmocka_unit_test(test_dsgd_staleness_local),
		cmocka_unit_test(test_dsgd_remote_matches_sgd),
		cmocka_unit_test(test_dsgd_overlap),
		cmocka_unit_test(test_dsgd_dead_worker),
		cmocka_unit_test(test_store_restart),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

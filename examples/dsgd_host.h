/*
 * dsgd_host.h - what a host program does to train a model with distributed
 * SGD over loopback RPC, shared by examples/dsgd_demo.c (softmax
 * regression) and examples/mlp.c (a 784-100-10 perceptron):
 *
 *   - one host thread runs an RPC server with a parameter store on it
 *     (dml_ps_serve), on 127.0.0.1 and an ephemeral port;
 *   - W worker threads each dial their own client, build their own model
 *     instance and run dml_dsgd_run on their shard of the data;
 *   - worker 0 evaluates the parameters it pulled after every epoch and
 *     prints a line; evaluation time is kept out of the training time.
 *
 * Header-only, for examples: include it from one .c file per program.
 */
#ifndef DSGD_HOST_H
#define DSGD_HOST_H

#include <distml.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DSGD_MAX_WORKERS 64
#define DSGD_MAX_EPOCHS 1000

/* Builds a model instance (one per thread). */
typedef int (*dsgd_model_fn)(dml_model *m, void *arg);

typedef struct dsgd_job {
	/* what to run */
	int workers;
	dml_dsgd_mode mode;
	int staleness;          /* SSP bound */
	int epochs;
	size_t batch;
	dml_optim_opts optim;   /* the store's rule; a COSINE schedule with
	                           total 0 anneals over the whole run */
	dsgd_model_fn make_model;
	void *model_arg;
	uint64_t init_seed;     /* for the model's init callback */
	dml_dataset *train, *test;
	double target;          /* test accuracy to time */
	/* results */
	double train_seconds, wall_seconds, eval_seconds, reached_at;
	double test_acc, test_loss;
	uint64_t steps, samples, updates, waits;
	double wait_seconds;
	int64_t max_staleness;
	/* internal */
	const char *addr;
	dml_dataset *shards[DSGD_MAX_WORKERS];
	size_t steps_per_epoch;
	double t0;
	pthread_mutex_t mu;
	uint64_t epoch_samples[DSGD_MAX_EPOCHS + 1];
	double epoch_loss[DSGD_MAX_EPOCHS + 1];
	dml_model eval;         /* worker 0's callback and the summary */
} dsgd_job;

typedef struct dsgd_worker {
	dsgd_job *job;
	int id, rc;
	dml_train_stats st;
} dsgd_worker;

static double dsgd_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Loads Fashion-MNIST (pixels in [0,1]) from `dir`. DML_ENOTFOUND when
 * the files are not there. */
static int dsgd_load_fashion(const char *dir, dml_dataset **train, dml_dataset **test)
{
	char ti[512], tl[512], vi[512], vl[512], err[256];
	snprintf(ti, sizeof ti, "%s/train-images-idx3-ubyte.gz", dir);
	snprintf(tl, sizeof tl, "%s/train-labels-idx1-ubyte.gz", dir);
	snprintf(vi, sizeof vi, "%s/t10k-images-idx3-ubyte.gz", dir);
	snprintf(vl, sizeof vl, "%s/t10k-labels-idx1-ubyte.gz", dir);
	if (access(ti, R_OK) != 0)
		return DML_ENOTFOUND;
	dml_data_opts o = {.classes = 10};
	int rc = dml_dataset_new_idx(train, ti, tl, &o);
	if (!rc && (rc = dml_dataset_new_idx(test, vi, vl, &o)))
		dml_dataset_free(*train);
	if (rc)
		fprintf(stderr, "%s\n", err);
	return rc;
}

/* A generated stand-in of Fashion-MNIST's shape: 10 classes, each a random
 * prototype image plus noise. */
#if defined(__GNUC__)
__attribute__((unused)) /* not every program falls back on it */
#endif
static int dsgd_generate(dml_dataset **train, dml_dataset **test)
{
	enum { D = 784, K = 10, NTRAIN = 60000, NTEST = 10000 };
	float *proto = malloc(sizeof(float) * D * K);
	float *x = malloc(sizeof(float) * D * NTRAIN), *y = malloc(sizeof(float) * NTRAIN);
	int rc = proto && x && y ? 0 : DML_ENOMEM;
	uint64_t s = 12345;
	for (int i = 0; i < D * K && !rc; i++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		proto[i] = (float)(s >> 40) / (float)(1 << 24);
	}
	for (int set = 0; set < 2 && !rc; set++) {
		int n = set ? NTEST : NTRAIN;
		for (int r = 0; r < n; r++) {
			s = s * 6364136223846793005ULL + 1442695040888963407ULL;
			int c = (int)((s >> 33) % K);
			y[r] = (float)c;
			for (int j = 0; j < D; j++) {
				s = s * 6364136223846793005ULL + 1442695040888963407ULL;
				float noise = (float)(s >> 40) / (float)(1 << 24) - 0.5f;
				float v = proto[c * D + j] + 1.5f * noise;
				x[(size_t)r * D + j] = v < 0 ? 0 : v > 1 ? 1 : v;
			}
		}
		dml_dataset **ds = set ? test : train;
		rc = dml_dataset_new_dense(ds, (size_t)n, D, x, y);
		if (!rc)
			rc = dml_dataset_set_classes(*ds, K);
	}
	free(proto);
	free(x);
	free(y);
	return rc;
}

/* Fashion-MNIST from dir, or its generated stand-in when the files are
 * not there, standardised per pixel with the training set's mean and
 * deviation: the data every role of a distributed job agrees on. */
#if defined(__GNUC__)
__attribute__((unused))
#endif
static int dsgd_load_standardised(const char *dir, dml_dataset **train, dml_dataset **test)
{
	int rc = dsgd_load_fashion(dir, train, test);
	if (rc == DML_ENOTFOUND)
		rc = dsgd_generate(train, test);
	dml_scaler *sc = NULL;
	if (!rc && !(rc = dml_scaler_new_fit(&sc, *train, DML_SCALE_STANDARD)) &&
	    !(rc = dml_scaler_apply(sc, *train)))
		rc = dml_scaler_apply(sc, *test);
	dml_scaler_free(sc);
	return rc;
}

/* Every worker reports its epochs; worker 0 evaluates and prints. */
static int dsgd_on_epoch(void *user, const dml_epoch_info *info, const float *w)
{
	dsgd_worker *wk = user;
	dsgd_job *job = wk->job;
	int e = info->epoch <= DSGD_MAX_EPOCHS ? info->epoch : DSGD_MAX_EPOCHS;
	pthread_mutex_lock(&job->mu);
	job->epoch_samples[e] += info->samples;
	job->epoch_loss[e] += info->loss * (double)info->samples;
	pthread_mutex_unlock(&job->mu);
	if (info->worker != 0)
		return 0;
	double t = dsgd_now();
	double test_acc = 0, train_acc = 0;
	dml_dataset *sub = NULL;
	dml_model_evaluate(&job->eval, w, job->test, NULL, &test_acc);
	size_t rows = dml_dataset_rows(job->shards[0]);
	if (!dml_dataset_new_slice(&sub, job->shards[0], 0, rows < 10000 ? rows : 10000)) {
		dml_model_evaluate(&job->eval, w, sub, NULL, &train_acc);
		dml_dataset_free(sub);
	}
	double spent = dsgd_now() - t;
	pthread_mutex_lock(&job->mu);
	double train_s = t - job->t0 - job->eval_seconds;
	job->eval_seconds += spent;
	uint64_t samples = 0;
	for (int k = 1; k <= e; k++)
		samples += job->epoch_samples[k];
	double loss = job->epoch_samples[e] ? job->epoch_loss[e] / (double)job->epoch_samples[e]
	                                    : info->loss;
	if (test_acc >= job->target && job->reached_at == 0)
		job->reached_at = train_s;
	pthread_mutex_unlock(&job->mu);
	printf("epoch %2d  loss %.4f  train acc %.4f  test acc %.4f  %8.0f samples/s  %5.2f s",
	       info->epoch, loss, train_acc, test_acc, (double)samples / train_s, train_s);
	if (info->staleness >= 0)
		printf("  staleness <= %lld", (long long)info->staleness);
	printf("\n");
	fflush(stdout);
	return 0;
}

static void *dsgd_worker_main(void *p)
{
	dsgd_worker *wk = p;
	dsgd_job *job = wk->job;
	dml_rpc_client *c = NULL;
	dml_ps *ps = NULL;
	dml_model m;
	memset(&m, 0, sizeof m);
	wk->rc = dml_rpc_dial(&c, job->addr, NULL);
	if (!wk->rc)
		wk->rc = dml_ps_connect(&ps, &c, 1, NULL);
	if (!wk->rc)
		wk->rc = job->make_model(&m, job->model_arg);
	if (!wk->rc) {
		dml_dsgd_opts o;
		memset(&o, 0, sizeof o);
		o.worker = wk->id;
		o.mode = job->mode;
		o.epochs = job->epochs;
		o.batch = job->batch;
		o.steps_per_epoch = job->steps_per_epoch;
		o.seed = 1000 + (uint64_t)wk->id;
		o.clock_timeout = 60000;
		o.on_epoch = dsgd_on_epoch;
		o.user = wk;
		wk->rc = dml_dsgd_run(ps, &m, job->shards[wk->id], &wk->st, &o);
	}
	dml_model_destroy(&m);
	dml_ps_free(ps);
	dml_rpc_free(c);
	return NULL;
}

static void *dsgd_serve(void *s)
{
	dml_rpc_server_run(s);
	return NULL;
}

static void dsgd_cleanup(dsgd_job *job)
{
	for (int i = 0; i < job->workers && i < DSGD_MAX_WORKERS; i++) {
		dml_dataset_free(job->shards[i]);
		job->shards[i] = NULL;
	}
	dml_model_destroy(&job->eval);
	pthread_mutex_destroy(&job->mu);
}

/* Runs the job; prints a line per epoch and fills the results. 0, or the
 * first error. */
static int dsgd_run(dsgd_job *job)
{
	if (job->workers < 1 || job->workers > DSGD_MAX_WORKERS || job->epochs < 1 ||
	    job->epochs > DSGD_MAX_EPOCHS || !job->batch)
		return DML_EINVAL;
	pthread_mutex_init(&job->mu, NULL);
	int rc = job->make_model(&job->eval, job->model_arg);
	size_t most = 0;
	for (int i = 0; i < job->workers && !rc; i++) {
		rc = dml_dataset_new_shard(&job->shards[i], job->train, i, job->workers);
		if (!rc && dml_dataset_rows(job->shards[i]) > most)
			most = dml_dataset_rows(job->shards[i]);
	}
	/* initial parameters from the model; every worker starts from them */
	float *w = rc ? NULL : malloc(job->eval.dim * sizeof *w);
	if (!rc && !w)
		rc = DML_ENOMEM;
	if (!rc) {
		if (job->eval.init)
			rc = job->eval.init(job->eval.self, w, job->init_seed);
		else
			memset(w, 0, job->eval.dim * sizeof *w);
	}
	if (rc) {
		free(w);
		dsgd_cleanup(job);
		return rc;
	}
	job->steps_per_epoch = (most + job->batch - 1) / job->batch;
	dml_ps_opts po;
	memset(&po, 0, sizeof po);
	po.init = w;
	po.optim = job->optim;
	if (po.optim.sched.kind == DML_SCHED_COSINE && !po.optim.sched.total)
		po.optim.sched.total = job->steps_per_epoch * (uint64_t)job->epochs *
		                       (uint64_t)job->workers; /* every push is a step */
	po.workers = job->workers;
	po.staleness = job->mode == DML_DSGD_BSP ? 0
	             : job->mode == DML_DSGD_SSP ? job->staleness : DML_PS_ASYNC;
	dml_ps *ps = NULL;
	dml_rpc_server *srv = NULL;
	char addr[64];
	if ((rc = dml_ps_new(&ps, job->eval.dim, &po)) || (rc = dml_rpc_server_new(&srv, NULL)) ||
	    (rc = dml_ps_serve(ps, srv)) || (rc = dml_rpc_server_listen(srv, "127.0.0.1:0")) ||
	    (rc = dml_rpc_server_addr(srv, 0, addr, sizeof addr))) {
		dml_rpc_server_free(srv);
		dml_ps_free(ps);
		free(w);
		dsgd_cleanup(job);
		return rc;
	}
	job->addr = addr;
	const char *mode = job->mode == DML_DSGD_BSP ? "bulk-synchronous"
	                 : job->mode == DML_DSGD_SSP ? "bounded staleness" : "asynchronous";
	printf("store: %zu parameters on %s, served by one host thread\n", job->eval.dim, addr);
	printf("training: %d workers, %s", job->workers, mode);
	if (job->mode == DML_DSGD_SSP)
		printf(" (s = %d)", job->staleness);
	printf(", %d epochs, batch %zu, %zu steps per worker per epoch\n", job->epochs,
	       job->batch, job->steps_per_epoch);
	fflush(stdout);
	pthread_t st;
	pthread_create(&st, NULL, dsgd_serve, srv);

	dsgd_worker wk[DSGD_MAX_WORKERS];
	pthread_t t[DSGD_MAX_WORKERS];
	job->t0 = dsgd_now();
	for (int i = 0; i < job->workers; i++) {
		memset(&wk[i], 0, sizeof wk[i]);
		wk[i].job = job;
		wk[i].id = i;
		pthread_create(&t[i], NULL, dsgd_worker_main, &wk[i]);
	}
	job->max_staleness = -1;
	for (int i = 0; i < job->workers; i++) {
		pthread_join(t[i], NULL);
		if (wk[i].rc && !rc) {
			fprintf(stderr, "worker %d: %s\n", i, dml_strerror(wk[i].rc));
			rc = wk[i].rc;
		}
		job->steps += wk[i].st.steps;
		job->samples += wk[i].st.samples;
		job->waits += wk[i].st.waits;
		job->wait_seconds += wk[i].st.wait_seconds;
		if (wk[i].st.max_staleness > job->max_staleness)
			job->max_staleness = wk[i].st.max_staleness;
	}
	job->wall_seconds = dsgd_now() - job->t0;
	job->train_seconds = job->wall_seconds - job->eval_seconds;

	/* the final model, pulled from the store */
	if (!dml_ps_pull(ps, w))
		dml_model_evaluate(&job->eval, w, job->test, &job->test_loss, &job->test_acc);
	dml_ps_updates(ps, &job->updates);
	if (!rc && job->updates != job->steps)
		rc = DML_EPROTO; /* every push must be applied exactly once */
	printf("summary: test accuracy %.4f (loss %.4f) after %.2f s of training (%.2f s wall,\n"
	       "         %.2f s evaluating); %llu steps, %llu samples, %.0f samples/s; %llu updates\n"
	       "         applied by the store; %llu clock waits (%.2f s)",
	       job->test_acc, job->test_loss, job->train_seconds, job->wall_seconds,
	       job->eval_seconds, (unsigned long long)job->steps,
	       (unsigned long long)job->samples, (double)job->samples / job->train_seconds,
	       (unsigned long long)job->updates, (unsigned long long)job->waits, job->wait_seconds);
	if (job->max_staleness >= 0)
		printf(", largest staleness %lld", (long long)job->max_staleness);
	printf("\n");
	if (job->reached_at > 0)
		printf("target: test accuracy %.2f reached after %.2f s of training\n", job->target,
		       job->reached_at);
	else
		printf("target: test accuracy %.2f not reached\n", job->target);
	fflush(stdout);

	dml_rpc_server_stop(srv);
	pthread_join(st, NULL);
	dml_rpc_server_free(srv);
	dml_ps_free(ps);
	free(w);
	dsgd_cleanup(job);
	return rc;
}

#endif

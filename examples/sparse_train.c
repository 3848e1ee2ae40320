/*
 * sparse_train.c - sparse models on a keyed parameter store: logistic
 * regression or softmax on any LIBSVM train/test pair (plain or gzip), in
 * one process or with N worker threads over loopback RPC against M store
 * shards.
 *
 *     sparse_train TRAIN TEST [--workers N] [--shards M] [--epochs E]
 *                  [--target ACC] [--model logreg|softmax]
 *                  [--optim sgd|adagrad|adam|ftrl] [--lr X] [--batch B]
 *                  [--l1 X] [--l2 X] [--check-every N] [--dense]
 *                  [--local] [--hash SEED] [--quiet]
 *
 * Defaults (docs/train.md, "Sparse models"): logreg for two classes,
 * softmax for more; FTRL-Proximal with lr 2, beta 1, L1 0 (--lr defaults
 * per rule: SGD 0.5, AdaGrad 0.05, Adam 0.01); batch 64; 5 epochs; L2 1e-5
 * (FTRL's lambda2; with the other rules the model's, per step, on the rows
 * touched);
 * accuracy checked every 200 steps and at each epoch's end; the run stops
 * once --target is reached. --workers 0 (the default) trains in this
 * process (dml_sgd_run's sparse path on a dense vector); --workers N
 * trains N threads asynchronously (ASP) against --shards M (default 1)
 * keyed stores, each served on 127.0.0.1 by its own server. --dense takes
 * the path of before 0.3 instead: a dense store (or, in one process, the
 * dense gradient), the whole vector moved at every step. --local gives the
 * N workers (default 1) one store in this process, shared without RPC.
 *
 * It prints a line per check (step, accuracy, payload bytes per step),
 * then: test accuracy A logloss L auc U seconds S
 * with the AUC for two classes (else "-") and S the training time, without
 * loading and without the checks' evaluations.
 */
#define _POSIX_C_SOURCE 200809L
#include <distml.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct cfg {
	const char *train, *test;
	int workers, shards, epochs, softmax, quiet, dense, local;
	double target;
	dml_optim_opts optim;
	float l2;
	size_t batch, every;
	uint64_t hash;
} cfg;

typedef struct job {
	cfg c;
	dml_dataset *train, *test;
	size_t features;
	int classes;
	dml_model eval; /* for the checks, one thread at a time */
	float *w;       /* dense parameters (one process; checks) */
	dml_ps *view;   /* distributed: a handle the checks pull through */
	pthread_mutex_t mu;
	double t0, eval_s; /* evaluation time is kept out of the training time */
	atomic_int reached;
	double reached_s;
	uint64_t steps_seen;
	uint64_t rows_moved;
	size_t width;
} job;

/* Scores of a test batch (logits: classes per row, class-major n apart;
 * logreg: one per row) from dense parameters. */
static void scores(const job *j, const float *w, const dml_batch *b, double *z)
{
	size_t F = j->features, k = j->c.softmax ? (size_t)j->classes : 1;
	for (size_t i = 0; i < b->n; i++)
		for (size_t c = 0; c < k; c++) {
			double s = w[k * F + c];
			for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++)
				s += (double)b->val[p] * w[c * F + b->idx[p]];
			z[c * b->n + i] = s;
		}
}

typedef struct sc {
	double p;
	float y;
} sc;

static int by_p(const void *a, const void *b)
{
	double x = ((const sc *)a)->p, y = ((const sc *)b)->p;
	return x < y ? -1 : x > y;
}

/* Accuracy, log loss and (two classes) AUC of w on the test set. */
static int evaluate(const job *j, const float *w, double *acc, double *ll,
                    double *auc)
{
	size_t n = dml_dataset_rows(j->test), k = j->c.softmax ? (size_t)j->classes : 1;
	enum { B = 256 };
	double *z = malloc(B * k * sizeof *z);
	sc *all = j->c.softmax ? NULL : malloc(n * sizeof *all);
	if (!z || (!j->c.softmax && !all)) {
		free(z);
		free(all);
		return DML_ENOMEM;
	}
	size_t hits = 0;
	double lsum = 0;
	for (size_t s = 0; s < n; s += B) {
		dml_batch b;
		int rc = dml_dataset_batch(j->test, s, B, &b);
		if (rc) {
			free(z);
			free(all);
			return rc;
		}
		scores(j, w, &b, z);
		for (size_t i = 0; i < b.n; i++) {
			int y = (int)b.y[i];
			if (!j->c.softmax) {
				double p = 1 / (1 + exp(-z[i]));
				hits += (p > 0.5) == (y == 1);
				double q = y ? p : 1 - p;
				lsum -= log(q > 1e-15 ? q : 1e-15);
				all[s + i] = (sc){p, b.y[i]};
			} else {
				size_t best = 0;
				double mx = z[i];
				for (size_t c = 1; c < k; c++)
					if (z[c * b.n + i] > mx) {
						mx = z[c * b.n + i];
						best = c;
					}
				double sum = 0;
				for (size_t c = 0; c < k; c++)
					sum += exp(z[c * b.n + i] - mx);
				hits += (int)best == y;
				lsum -= z[(size_t)y * b.n + i] - mx - log(sum);
			}
		}
	}
	*acc = (double)hits / (double)n;
	*ll = lsum / (double)n;
	*auc = -1;
	if (all) { /* the rank-sum statistic, ties averaged */
		qsort(all, n, sizeof *all, by_p);
		double pos = 0, rank_sum = 0;
		for (size_t i = 0; i < n;) {
			size_t e = i;
			while (e < n && all[e].p == all[i].p)
				e++;
			double r = (double)(i + e + 1) / 2; /* ranks i+1 .. e */
			for (size_t q = i; q < e; q++)
				if (all[q].y == 1) {
					pos++;
					rank_sum += r;
				}
			i = e;
		}
		double neg = (double)n - pos;
		*auc = pos && neg ? (rank_sum - pos * (pos + 1) / 2) / (pos * neg) : -1;
	}
	free(z);
	free(all);
	return 0;
}

/* A check: evaluate, print, and say whether the target is reached. */
static int check(job *j, const dml_epoch_info *info, const float *w_in)
{
	pthread_mutex_lock(&j->mu);
	double t = now();
	const float *w = w_in;
	int rc = 0;
	if (!w) { /* keyed store: pull the model */
		rc = dml_model_pull(&j->eval, j->view, j->c.hash, j->w);
		w = j->w;
	}
	double acc = 0, ll = 0, auc = 0;
	if (!rc)
		rc = evaluate(j, w, &acc, &ll, &auc);
	double train_s = t - j->t0 - j->eval_s;
	if (!rc && !j->c.quiet)
		printf("epoch %d step %6llu  loss %.4f  test accuracy %.4f  auc %.4f  "
		       "%.2f s  %s\n", info->epoch, (unsigned long long)info->step,
		       info->loss, acc, auc, train_s,
		       info->end_of_epoch ? "(epoch end)" : "");
	if (!rc && j->c.target > 0 && acc >= j->c.target && !atomic_load(&j->reached)) {
		j->reached_s = train_s;
		atomic_store(&j->reached, 1);
	}
	j->eval_s += now() - t;
	pthread_mutex_unlock(&j->mu);
	return rc ? 1 : atomic_load(&j->reached);
}

static int on_check(void *user, const dml_epoch_info *info, const float *w)
{
	job *j = user;
	if (info->worker != 0) /* worker 0 checks for everyone */
		return atomic_load(&j->reached);
	return check(j, info, w);
}

static int make_model(const job *j, dml_model *m)
{
	return j->c.softmax ? dml_model_init_softmax(m, j->features, j->classes, j->c.l2)
	                    : dml_model_init_logreg(m, j->features, j->c.l2);
}

/* ---- distributed ---------------------------------------------------- */

typedef struct server {
	dml_rpc_server *srv;
	dml_ps *ps;
	pthread_t t;
	char addr[64];
} server;

static void *serve_main(void *p)
{
	dml_rpc_server_run(((server *)p)->srv);
	return NULL;
}

typedef struct worker {
	job *j;
	int id;
	dml_dataset *shard;
	dml_rpc_client *c[DML_PS_MAX_SHARDS];
	dml_ps *ps;
	int rc;
	char err[DML_ERRMSG_MAX];
	dml_train_stats st;
	pthread_t t;
} worker;

static void *worker_main(void *p)
{
	worker *wk = p;
	job *j = wk->j;
	dml_model m;
	wk->rc = make_model(j, &m);
	dml_dsgd_opts o = {0};
	o.worker = wk->id;
	o.epochs = j->c.epochs;
	o.batch = j->c.batch;
	o.seed = (uint64_t)wk->id + 1;
	o.on_epoch = on_check;
	o.user = j;
	o.callback_every = j->c.every;
	o.key_seed = j->c.hash;
	if (!wk->rc)
		wk->rc = dml_dsgd_run(wk->ps, &m, wk->shard, &wk->st, &o);
	if (wk->rc)
		snprintf(wk->err, sizeof wk->err, "%s", dml_error_detail());
	dml_model_destroy(&m);
	return NULL;
}

static int distributed(job *j, dml_train_stats *total)
{
	int S = j->c.shards, W = j->c.workers, rc = 0;
	server *sv = calloc((size_t)S, sizeof *sv);
	worker *wk = calloc((size_t)W, sizeof *wk);
	dml_rpc_client *vc[DML_PS_MAX_SHARDS] = {0};
	dml_ps_opts po = {0};
	po.optim = j->c.optim;
	dml_ps *local = NULL; /* --local: one store in this process, no RPC */
	if (j->c.local) {
		S = 0;
		rc = j->c.dense ? dml_ps_new(&local, j->eval.dim, &po)
		                : dml_ps_new_keyed(&local, j->width, &po);
		j->view = local;
	}
	for (int i = 0; i < S && !rc; i++) {
		size_t off, len;
		rc = dml_shard_range(j->eval.dim, i, S, &off, &len);
		if (!rc)
			rc = j->c.dense ? dml_ps_new(&sv[i].ps, len, &po)
			                : dml_ps_new_keyed(&sv[i].ps, j->width, &po);
		if (!rc)
			rc = dml_rpc_server_new(&sv[i].srv, NULL);
		if (!rc)
			rc = dml_ps_serve(sv[i].ps, sv[i].srv);
		if (!rc)
			rc = dml_rpc_server_listen(sv[i].srv, "127.0.0.1:0");
		if (!rc)
			rc = dml_rpc_server_addr(sv[i].srv, 0, sv[i].addr, sizeof sv[i].addr);
		if (!rc)
			pthread_create(&sv[i].t, NULL, serve_main, &sv[i]);
	}
	for (int i = 0; i < S && !rc; i++)
		rc = dml_rpc_dial(&vc[i], sv[i].addr, NULL);
	if (!rc && !local)
		rc = dml_ps_connect(&j->view, vc, S, NULL);
	for (int w = 0; w < W && !rc; w++) {
		wk[w].j = j;
		wk[w].id = w;
		rc = dml_dataset_new_shard(&wk[w].shard, j->train, w, W);
		for (int i = 0; i < S && !rc; i++)
			rc = dml_rpc_dial(&wk[w].c[i], sv[i].addr, NULL);
		if (!rc && !local)
			rc = dml_ps_connect(&wk[w].ps, wk[w].c, S, NULL);
		wk[w].ps = local ? local : wk[w].ps;
	}
	if (!rc) {
		j->t0 = now();
		for (int w = 0; w < W; w++)
			pthread_create(&wk[w].t, NULL, worker_main, &wk[w]);
		for (int w = 0; w < W; w++) {
			pthread_join(wk[w].t, NULL);
			if (wk[w].rc && !rc) {
				rc = wk[w].rc;
				fprintf(stderr, "worker %d: %s: %s\n", w, dml_strerror(rc), wk[w].err);
			}
			total->steps += wk[w].st.steps;
			total->rows_moved += wk[w].st.rows_moved;
			if (wk[w].st.epochs > total->epochs)
				total->epochs = wk[w].st.epochs;
		}
		total->seconds = now() - j->t0 - j->eval_s;
	}
	if (!rc && j->c.dense)
		rc = dml_ps_pull(j->view, j->w);
	else if (!rc)
		rc = dml_model_pull(&j->eval, j->view, j->c.hash, j->w);
	for (int w = 0; w < W; w++) {
		if (!local)
			dml_ps_free(wk[w].ps);
		for (int i = 0; i < S; i++)
			dml_rpc_free(wk[w].c[i]);
		dml_dataset_free(wk[w].shard);
	}
	dml_ps_free(j->view);
	j->view = NULL;
	for (int i = 0; i < S; i++) {
		if (vc[i])
			dml_rpc_free(vc[i]);
		if (sv[i].srv) {
			dml_rpc_server_stop(sv[i].srv);
			if (sv[i].addr[0])
				pthread_join(sv[i].t, NULL);
			dml_rpc_server_free(sv[i].srv);
		}
		dml_ps_free(sv[i].ps);
	}
	free(sv);
	free(wk);
	return rc;
}

/* ---- main ----------------------------------------------------------- */

static int load(job *j)
{
	dml_data_opts o = {0};
	o.remap_labels = 1;
	int rc = dml_dataset_new_libsvm(&j->train, j->c.train, &o);
	if (rc)
		return rc;
	size_t k = dml_dataset_classes(j->train);
	o.remap_labels = 0;
	rc = dml_dataset_new_libsvm(&j->test, j->c.test, &o);
	if (rc)
		return rc;
	size_t d = dml_dataset_dim(j->train), dt = dml_dataset_dim(j->test);
	if (dt != d) { /* one dimension for both: the larger */
		dml_dataset **smaller = dt < d ? &j->test : &j->train;
		o.dim = d > dt ? d : dt;
		o.remap_labels = smaller == &j->train;
		dml_dataset_free(*smaller);
		if ((rc = dml_dataset_new_libsvm(smaller, smaller == &j->train ? j->c.train
		                                                           : j->c.test, &o)))
			return rc;
		d = o.dim;
	}
	j->features = d;
	j->classes = (int)k;
	return dml_dataset_map_labels(j->test, dml_dataset_class_values(j->train), k);
}

static int usage(void)
{
	fprintf(stderr, "usage: sparse_train TRAIN TEST [--workers N] [--shards M] "
	        "[--epochs E] [--target ACC] [--model logreg|softmax] "
	        "[--optim sgd|adagrad|adam|ftrl] [--lr X] [--batch B] [--l1 X] "
	        "[--l2 X] [--check-every N] [--dense] [--local] [--hash SEED] [--quiet]\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	job j;
	memset(&j, 0, sizeof j);
	cfg *c = &j.c;
	c->train = argv[1];
	c->test = argv[2];
	c->epochs = 5;
	c->batch = 64;
	c->every = 200;
	c->l2 = 1e-5f;
	c->softmax = -1;
	c->optim.kind = DML_OPTIM_FTRL;
	int lr_set = 0;
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int more = 1;
		if (!strcmp(a, "--dense"))
			c->dense = 1, more = 0;
		else if (!strcmp(a, "--quiet"))
			c->quiet = 1, more = 0;
		else if (!strcmp(a, "--local"))
			c->local = 1, more = 0;
		else if (!v)
			return usage();
		else if (!strcmp(a, "--workers"))
			c->workers = atoi(v);
		else if (!strcmp(a, "--shards"))
			c->shards = atoi(v);
		else if (!strcmp(a, "--epochs"))
			c->epochs = atoi(v);
		else if (!strcmp(a, "--target"))
			c->target = atof(v);
		else if (!strcmp(a, "--lr"))
			c->optim.lr = (float)atof(v), lr_set = 1;
		else if (!strcmp(a, "--batch"))
			c->batch = (size_t)atol(v);
		else if (!strcmp(a, "--l2"))
			c->l2 = (float)atof(v);
		else if (!strcmp(a, "--l1"))
			c->optim.l1 = (float)atof(v);
		else if (!strcmp(a, "--check-every"))
			c->every = (size_t)atol(v);
		else if (!strcmp(a, "--hash"))
			c->hash = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--model"))
			c->softmax = !strcmp(v, "softmax") ? 1 : !strcmp(v, "logreg") ? 0 : -2;
		else if (!strcmp(a, "--optim")) {
			c->optim.kind = !strcmp(v, "sgd") ? DML_OPTIM_SGD
			              : !strcmp(v, "adagrad") ? DML_OPTIM_ADAGRAD
			              : !strcmp(v, "adam") ? DML_OPTIM_ADAM
			              : !strcmp(v, "ftrl") ? DML_OPTIM_FTRL : (dml_optim_kind)-1;
			if ((int)c->optim.kind < 0)
				return usage();
		} else
			return usage();
		i += more;
	}
	if (c->softmax == -2 || c->workers < 0 || c->shards < 0 ||
	    c->shards > DML_PS_MAX_SHARDS)
		return usage();
	if (!lr_set) /* per rule defaults */
		c->optim.lr = c->optim.kind == DML_OPTIM_SGD ? 0.5f
		            : c->optim.kind == DML_OPTIM_ADAM ? 0.01f
		            : c->optim.kind == DML_OPTIM_FTRL ? 2.0f : 0.05f;
	if (c->local && !c->workers)
		c->workers = 1;
	if (c->workers && !c->shards)
		c->shards = 1;
	if (c->optim.kind == DML_OPTIM_FTRL) { /* FTRL's L2 is its lambda2 */
		c->optim.l2 = c->l2;
		c->l2 = 0;
	}
	int rc = load(&j);
	if (rc) {
		fprintf(stderr, "sparse_train: %s: %s\n", dml_strerror(rc), dml_error_detail());
		return 1;
	}
	if (c->softmax < 0)
		c->softmax = j.classes > 2;
	if (!c->softmax && j.classes != 2) {
		fprintf(stderr, "sparse_train: logreg needs two classes, the data has %d\n",
		        j.classes);
		return 1;
	}
	pthread_mutex_init(&j.mu, NULL);
	rc = make_model(&j, &j.eval);
	j.width = j.eval.width;
	j.w = rc ? NULL : calloc(j.eval.dim, sizeof *j.w);
	if (!rc && !j.w)
		rc = DML_ENOMEM;
	if (!rc && !c->quiet)
		printf("%zu train rows, %zu test rows, %zu features, %d classes, %s, "
		       "%s\n", dml_dataset_rows(j.train), dml_dataset_rows(j.test),
		       j.features, j.classes, c->softmax ? "softmax" : "logreg",
		       c->workers ? "distributed" : "one process");
	dml_train_stats st = {0};
	if (!rc && !c->workers) {
		dml_sgd_opts o = {0};
		o.epochs = c->epochs;
		o.batch = c->batch;
		o.optim = c->optim;
		o.seed = 1;
		o.on_epoch = on_check;
		o.user = &j;
		o.callback_every = c->every;
		o.dense_path = c->dense;
		j.t0 = now();
		rc = dml_sgd_run(&j.eval, j.train, j.w, &st, &o);
		st.seconds = now() - j.t0 - j.eval_s;
		st.rows_moved = 0;
	} else if (!rc) {
		rc = distributed(&j, &st);
	}
	if (rc) {
		fprintf(stderr, "sparse_train: %s: %s\n", dml_strerror(rc), dml_error_detail());
	} else {
		double acc, ll, auc;
		rc = evaluate(&j, j.w, &acc, &ll, &auc);
		size_t rowb = 8 + 4 * j.width;
		double per = st.steps ? (c->workers ? (c->dense ? 8.0 * (double)j.eval.dim
		                                              : (double)st.rows_moved * rowb / st.steps)
		                                    : 0) : 0;
		printf("%llu steps, %.0f payload bytes per step%s\n",
		       (unsigned long long)st.steps, per,
		       c->workers ? "" : " (one process: none)");
		if (c->workers && !c->dense && st.steps) {
			double u = (double)st.rows_moved / 2 / (double)st.steps;
			printf("rows per step: %.1f distinct keys; bound 3 x %.1f x (8 + 4 x "
			       "%zu) = %.0f B per step\n", u, u, j.width, 3 * u * (double)rowb);
		}
		if (c->target > 0)
			printf("target %.4f %s after %.3f s of training\n", c->target,
			       atomic_load(&j.reached) ? "reached" : "NOT reached",
			       atomic_load(&j.reached) ? j.reached_s : st.seconds);
		if (auc >= 0)
			printf("test accuracy %.4f logloss %.4f auc %.4f seconds %.3f\n",
			       acc, ll, auc, st.seconds);
		else
			printf("test accuracy %.4f logloss %.4f auc - seconds %.3f\n",
			       acc, ll, st.seconds);
	}
	dml_model_destroy(&j.eval);
	free(j.w);
	dml_dataset_free(j.train);
	dml_dataset_free(j.test);
	pthread_mutex_destroy(&j.mu);
	return rc ? 1 : 0;
}

/*
 * dsgd_node.c - distributed SGD as separate processes, one role each, for
 * hosts that are really apart (the cluster harness, docs/cluster.md): a
 * store shard server, or a worker that trains against every shard. The
 * same job as dsgd_demo (softmax regression on Fashion-MNIST, Adam on the
 * store), with the store cut into shards by dml_shard_range.
 *
 *   dsgd_node serve --listen ADDR --shard I --shards N --workers W
 *                   [--mode bsp|ssp|asp] [--staleness S] [--lr LR]
 *                   [--anneal STEPS] [--seconds MAX] [--worker-timeout MS]
 *                   [--checkpoint PATH [--save-every MS]]
 *                   [--compress none|fp16|bf16|int8|topk [--topk F]
 *                    [--topk-warmup PUSHES]]
 *       serves part I of N of the parameters on ADDR until SIGTERM (or
 *       MAX seconds, 600 by default); then prints
 *       "RESULT serve shard=I updates=U". With a checkpoint it starts from
 *       PATH when the file is there, saves every MS (default 1000) and
 *       when it stops. With --compress the store asks its workers to
 *       compress their pushes (docs/ps.md, "Compressed pushes").
 *   dsgd_node work --servers ADDR,ADDR,... --worker K --workers W
 *                  [--mode bsp|ssp|asp] [--epochs E] [--batch B]
 *                  [--data DIR] [--target ACC] [--eval-every STEPS]
 *                  [--overlap 1]
 *   both take [--model softmax|mlp]: softmax regression (7850 parameters,
 *       the default) or the 784-100-10 perceptron of mlp.h (79510); the
 *       servers and the workers of a job must agree. Or [--sparse DIR]:
 *       the sparse demo's job instead (docs/train.md): logistic regression
 *       on DIR/train.svm and DIR/test.svm (examples/sparse_gen) on keyed
 *       store shards with FTRL (lr 2, lambda2 1e-5); the workers pull and
 *       push only the rows of their minibatches' features.
 *       trains worker K on part K of W of the training set; worker 0
 *       evaluates the test set after each epoch (not counted as training
 *       time; with --eval-every also every STEPS steps, which makes the
 *       time to the target finer); prints "RESULT work worker=K seconds=T steps=S acc=A
 *       reached=R" (R: training seconds to the target, -1 if never).
 *
 * The host owns the process: this program installs the SIGTERM handler
 * (the library installs none) and stops its server from it with
 * dml_rpc_server_stop, which is async-signal-safe.
 */
#include <distml.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* its data loading and clock; the in-process job runner is not used here */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "dsgd_host.h"
#include "mlp.h"

static dml_rpc_server *the_server;

static void on_term(int sig)
{
	(void)sig;
	if (the_server)
		dml_rpc_server_stop(the_server);
}

static void on_alarm(int sig) { on_term(sig); }

typedef struct node_opts {
	const char *listen, *servers, *data;
	int shard, shards, worker, workers, staleness, epochs;
	dml_dsgd_mode mode;
	size_t batch;
	double lr, target, seconds;
	uint64_t anneal;
	const char *checkpoint;
	long save_every, worker_timeout;
	int mlp, compress;
	double topk;
	uint64_t topk_warmup;
	size_t eval_every;
	int overlap;
	const char *sparse;
} node_opts;

typedef struct saver {
	dml_ps *ps;
	const char *path;
	int failed;
} saver;

/* A tick of the server: a checkpoint (the file is always the old or the
 * new one, docs/checkpoint.md). */
static void save_tick(void *arg)
{
	saver *sv = arg;
	if (dml_ps_save(sv->ps, sv->path))
		sv->failed++;
}

static int usage(void)
{
	fprintf(stderr, "usage: dsgd_node serve --listen ADDR --shard I --shards N --workers W [...]\n"
	                "       dsgd_node work --servers A,B,... --worker K --workers W [...]\n"
	                "       (see the comment at the top of examples/dsgd_node.c)\n");
	return 2;
}

/* The sparse job's sets, of one dimension (the larger), the test set's
 * labels mapped as the training set's. */
static int load_sparse(const char *dir, dml_dataset **train, dml_dataset **test)
{
	char tp[512], ep[512];
	snprintf(tp, sizeof tp, "%s/train.svm", dir);
	snprintf(ep, sizeof ep, "%s/test.svm", dir);
	dml_data_opts o;
	memset(&o, 0, sizeof o);
	o.remap_labels = 1;
	int rc = dml_dataset_new_libsvm(train, tp, &o);
	if (rc)
		return rc;
	o.remap_labels = 0;
	if ((rc = dml_dataset_new_libsvm(test, ep, &o)))
		return rc;
	size_t d = dml_dataset_dim(*train), dt = dml_dataset_dim(*test);
	if (dt != d) {
		dml_dataset **smaller = dt < d ? test : train;
		o.dim = d > dt ? d : dt;
		o.remap_labels = smaller == train;
		dml_dataset_free(*smaller);
		*smaller = NULL;
		if ((rc = dml_dataset_new_libsvm(smaller, smaller == train ? tp : ep, &o)))
			return rc;
	}
	return dml_dataset_map_labels(*test, dml_dataset_class_values(*train),
	                              dml_dataset_classes(*train));
}

/* The data both roles agree on: the sparse job's sets, or Fashion-MNIST
 * (or its generated stand-in) standardised per pixel. */
static int load(const node_opts *o, dml_dataset **train, dml_dataset **test)
{
	if (o->sparse)
		return load_sparse(o->sparse, train, test);
	return dsgd_load_standardised(o->data, train, test);
}

static int make_model(const node_opts *o, dml_model *m, size_t features)
{
	if (o->sparse) /* FTRL's lambda2 stands for the L2 */
		return dml_model_init_logreg(m, features, 0);
	if (o->mlp)
		return mlp_model(m, features, 100, 10, 1e-5f);
	return dml_model_init_softmax(m, features, 10, 0);
}

static int serve(const node_opts *o)
{
	/* the dimension and the initial parameters, as every worker's model
	 * has them (784 features, 10 classes) */
	dml_model m;
	memset(&m, 0, sizeof m);
	int rc = make_model(o, &m, o->sparse ? 1 : 784);
	size_t off = 0, len = 0;
	if (!rc)
		rc = dml_shard_range(m.dim, o->shard, o->shards, &off, &len);
	float *w = rc ? NULL : calloc(m.dim, sizeof *w);
	if (!rc && !w)
		rc = DML_ENOMEM;
	if (!rc && m.init)
		rc = m.init(m.self, w, 0);
	dml_ps *ps = NULL;
	dml_rpc_server *srv = NULL;
	if (!rc) {
		dml_ps_opts po;
		memset(&po, 0, sizeof po);
		po.init = w + off;
		po.optim.kind = DML_OPTIM_ADAM;
		po.optim.lr = (float)o->lr;
		if (o->anneal) {
			po.optim.sched.kind = DML_SCHED_COSINE;
			po.optim.sched.lr_min = (float)o->lr / 20;
			po.optim.sched.total = o->anneal;
		}
		po.workers = o->workers;
		po.worker_timeout = o->worker_timeout;
		po.staleness = o->mode == DML_DSGD_BSP ? 0
		             : o->mode == DML_DSGD_SSP ? o->staleness : DML_PS_ASYNC;
		if (o->sparse) {
			po.init = NULL;
			po.optim.kind = DML_OPTIM_FTRL;
			po.optim.lr = 2;
			po.optim.l2 = 1e-5f;
			po.optim.sched.kind = DML_SCHED_CONST;
			rc = dml_ps_new_keyed(&ps, m.width, &po);
		} else {
			rc = dml_ps_new(&ps, len, &po);
		}
	}
	saver sv = {ps, o->checkpoint, 0};
	if (!rc && o->checkpoint && access(o->checkpoint, F_OK) == 0) {
		if (!(rc = dml_ps_load(ps, o->checkpoint))) {
			uint64_t u = 0;
			dml_ps_updates(ps, &u);
			printf("resumed from %s: %llu updates\n", o->checkpoint, (unsigned long long)u);
		}
	}
	dml_ps_serve_opts so;
	memset(&so, 0, sizeof so);
	so.compress = o->compress;
	so.topk = (float)o->topk;
	so.topk_warmup = o->topk_warmup;
	if (!rc && !(rc = dml_rpc_server_new(&srv, NULL)) && !(rc = dml_ps_serve_with(ps, srv, &so)))
		rc = dml_rpc_server_listen(srv, o->listen);
	if (!rc && o->checkpoint)
		rc = dml_rpc_server_tick(srv, o->save_every > 0 ? o->save_every : 1000, save_tick, &sv);
	if (!rc) {
		printf("serving shard %d of %d (%zu parameters from %zu) on %s\n", o->shard,
		       o->shards, len, off, o->listen);
		fflush(stdout);
		the_server = srv;
		signal(SIGTERM, on_term);
		signal(SIGALRM, on_alarm);
		alarm((unsigned)(o->seconds > 0 ? o->seconds : 600));
		rc = dml_rpc_server_run(srv);
		if (rc == DML_ESTOPPED)
			rc = 0;
		if (!rc && o->checkpoint)
			save_tick(&sv);
		if (sv.failed)
			fprintf(stderr, "dsgd_node serve: %d checkpoints failed\n", sv.failed);
		uint64_t updates = 0;
		dml_ps_updates(ps, &updates);
		printf("RESULT serve shard=%d updates=%llu\n", o->shard, (unsigned long long)updates);
	}
	if (rc)
		fprintf(stderr, "dsgd_node serve: %s (%s)\n", dml_strerror(rc), dml_error_detail());
	dml_rpc_server_free(srv);
	dml_ps_free(ps);
	free(w);
	dml_model_destroy(&m);
	return rc ? 1 : 0;
}

typedef struct work_state {
	const node_opts *o;
	dml_model *m;
	dml_dataset *test;
	double eval_s, reached, t0;
	dml_ps *ps;   /* a keyed store: the parameters are pulled to evaluate */
	float *dense; /* ... into this */
} work_state;

/* The parameters as a dense vector: w, or (keyed store) pulled. */
static const float *params(work_state *ws, const float *w)
{
	if (w)
		return w;
	if (!ws->dense && !(ws->dense = malloc(ws->m->dim * sizeof *ws->dense)))
		return NULL;
	return dml_model_pull(ws->m, ws->ps, 0, ws->dense) ? NULL : ws->dense;
}

static int on_epoch(void *user, const dml_epoch_info *info, const float *w)
{
	work_state *ws = user;
	if (ws->o->worker != 0 || (!w && !info->end_of_epoch))
		return 0; /* a keyed model is pulled whole: at epochs' ends only */
	double t = dsgd_now();
	double acc = 0;
	const float *p = params(ws, w);
	if (p)
		dml_model_evaluate(ws->m, p, ws->test, NULL, &acc);
	double train_s = t - ws->t0 - ws->eval_s;
	ws->eval_s += dsgd_now() - t;
	if (acc >= ws->o->target && ws->reached < 0)
		ws->reached = train_s;
	if (info->end_of_epoch)
		printf("epoch %d  loss %.4f  test acc %.4f  %.2f s\n", info->epoch, info->loss,
		       acc, train_s);
	else
		printf("step %llu  test acc %.4f  %.2f s\n", (unsigned long long)info->step, acc,
		       train_s);
	fflush(stdout);
	return 0;
}

static int work(const node_opts *o)
{
	dml_dataset *train = NULL, *test = NULL, *part = NULL;
	dml_rpc_client *c[16] = {0};
	int n = 0, rc = load(o, &train, &test);
	if (!rc)
		rc = dml_dataset_new_shard(&part, train, o->worker, o->workers);
	char list[1024];
	snprintf(list, sizeof list, "%s", o->servers);
	for (char *save = NULL, *a = strtok_r(list, ",", &save); a && !rc;
	     a = strtok_r(NULL, ",", &save)) {
		if (n == 16) {
			rc = DML_EINVAL;
			break;
		}
		dml_rpc_client_opts co;
		memset(&co, 0, sizeof co);
		co.reconnect = 1; /* a cut link or a restarted server: retried */
		rc = dml_rpc_dial(&c[n], a, &co);
		if (!rc)
			n++;
	}
	dml_ps *ps = NULL;
	dml_model m;
	memset(&m, 0, sizeof m);
	dml_ps_remote_opts ro;
	memset(&ro, 0, sizeof ro);
	ro.retry_timeout = 120000; /* pushes ride out a cut link or a restart */
	if (!rc)
		rc = dml_ps_connect(&ps, c, n, &ro);
	if (!rc)
		rc = make_model(o, &m, dml_dataset_dim(train));
	dml_train_stats st;
	memset(&st, 0, sizeof st);
	work_state ws = {o, &m, test, 0, -1, dsgd_now(), NULL, NULL};
	if (!rc) {
		dml_dsgd_opts d;
		memset(&d, 0, sizeof d);
		d.worker = o->worker;
		d.mode = o->mode;
		d.epochs = o->epochs;
		d.batch = o->batch;
		/* every worker takes as many steps: the largest part's */
		size_t most = (dml_dataset_rows(train) + (size_t)o->workers - 1) / (size_t)o->workers;
		d.steps_per_epoch = (most + o->batch - 1) / o->batch;
		d.seed = 1000 + (uint64_t)o->worker;
		d.clock_timeout = 120000;
		d.reconnect_timeout = 120000; /* pulls too ride out a cut or a restart */
		d.on_epoch = on_epoch;
		d.callback_every = o->eval_every;
		d.overlap = o->overlap; /* the next pull while this step computes */
		d.user = &ws;
		ws.t0 = dsgd_now();
		ws.ps = ps;
		rc = dml_dsgd_run(ps, &m, part, &st, &d);
	}
	double secs = dsgd_now() - ws.t0 - ws.eval_s;
	double acc = 0;
	if (!rc && o->worker == 0) {
		const float *w = o->sparse ? params(&ws, NULL) : NULL;
		float *own = o->sparse ? NULL : malloc(m.dim * sizeof *own);
		if (own && !dml_ps_pull(ps, own))
			w = own;
		if (w)
			dml_model_evaluate(&m, w, test, NULL, &acc);
		free(own);
	}
	if (rc)
		fprintf(stderr, "dsgd_node work %d: %s (%s)\n", o->worker, dml_strerror(rc),
		        dml_error_detail());
	else
		printf("RESULT work worker=%d seconds=%.3f steps=%llu acc=%.4f reached=%.3f\n",
		       o->worker, secs, (unsigned long long)st.steps, acc, ws.reached);
	free(ws.dense);
	dml_model_destroy(&m);
	dml_ps_free(ps);
	for (int i = 0; i < n; i++)
		dml_rpc_free(c[i]);
	dml_dataset_free(part);
	dml_dataset_free(train);
	dml_dataset_free(test);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage();
	node_opts o;
	memset(&o, 0, sizeof o);
	o.shards = o.workers = 1;
	o.mode = DML_DSGD_BSP;
	o.staleness = 2;
	o.epochs = 5;
	o.batch = 128;
	o.lr = 0.002;
	o.target = 0.84;
	o.data = "/usr/share/datasets/fashion-mnist";
	for (int i = 2; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			return usage();
		if (!strcmp(a, "--listen"))
			o.listen = v;
		else if (!strcmp(a, "--servers"))
			o.servers = v;
		else if (!strcmp(a, "--data"))
			o.data = v;
		else if (!strcmp(a, "--shard"))
			o.shard = atoi(v);
		else if (!strcmp(a, "--shards"))
			o.shards = atoi(v);
		else if (!strcmp(a, "--worker"))
			o.worker = atoi(v);
		else if (!strcmp(a, "--workers"))
			o.workers = atoi(v);
		else if (!strcmp(a, "--staleness"))
			o.staleness = atoi(v);
		else if (!strcmp(a, "--epochs"))
			o.epochs = atoi(v);
		else if (!strcmp(a, "--batch"))
			o.batch = (size_t)atol(v);
		else if (!strcmp(a, "--lr"))
			o.lr = atof(v);
		else if (!strcmp(a, "--target"))
			o.target = atof(v);
		else if (!strcmp(a, "--seconds"))
			o.seconds = atof(v);
		else if (!strcmp(a, "--checkpoint"))
			o.checkpoint = v;
		else if (!strcmp(a, "--save-every"))
			o.save_every = atol(v);
		else if (!strcmp(a, "--worker-timeout"))
			o.worker_timeout = atol(v);
		else if (!strcmp(a, "--anneal"))
			o.anneal = (uint64_t)atoll(v);
		else if (!strcmp(a, "--model"))
			o.mlp = !strcmp(v, "mlp") ? 1 : !strcmp(v, "softmax") ? 0 : -1;
		else if (!strcmp(a, "--compress"))
			o.compress = !strcmp(v, "none") ? DML_PS_COMPRESS_NONE
			           : !strcmp(v, "fp16") ? DML_PS_COMPRESS_FP16
			           : !strcmp(v, "bf16") ? DML_PS_COMPRESS_BF16
			           : !strcmp(v, "int8") ? DML_PS_COMPRESS_INT8
			           : !strcmp(v, "topk") ? DML_PS_COMPRESS_TOPK : -1;
		else if (!strcmp(a, "--topk"))
			o.topk = atof(v);
		else if (!strcmp(a, "--sparse"))
			o.sparse = v;
		else if (!strcmp(a, "--overlap"))
			o.overlap = atoi(v);
		else if (!strcmp(a, "--eval-every"))
			o.eval_every = (size_t)atol(v);
		else if (!strcmp(a, "--topk-warmup"))
			o.topk_warmup = (uint64_t)atoll(v);
		else if (!strcmp(a, "--mode"))
			o.mode = !strcmp(v, "bsp") ? DML_DSGD_BSP : !strcmp(v, "ssp") ? DML_DSGD_SSP
			       : !strcmp(v, "asp") ? DML_DSGD_ASP : (dml_dsgd_mode)-1;
		else
			return usage();
	}
	if ((int)o.mode < 0 || o.workers < 1 || o.workers > 64 || o.batch < 1 || o.epochs < 1 ||
	    !(o.lr > 0) || o.mlp < 0 || o.compress < 0 || !(o.topk >= 0 && o.topk <= 1))
		return usage();
	if (!strcmp(argv[1], "serve") && o.listen && o.shard >= 0 && o.shard < o.shards)
		return serve(&o);
	if (!strcmp(argv[1], "work") && o.servers && o.worker >= 0 && o.worker < o.workers)
		return work(&o);
	return usage();
}

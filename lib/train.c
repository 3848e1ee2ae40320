/*
 * train.c - the training loops: single-process minibatch SGD and the
 * distributed worker (pull, gradient, push, clock), both on one epoch
 * skeleton (run_epochs) that differs only in its step.
 */
#include "abi.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The wait between repeats of a store call lost with its connection. */
#define RETRY_WAIT_MIN 10   /* ms */
#define RETRY_WAIT_MAX 1000 /* ms */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* An epoch's walk over a data set in minibatches; wraps around when an
 * epoch asks for more steps than the data set has batches. */
typedef struct walker {
	dml_dataset *ds;
	size_t rows, batch, pos;
	uint64_t seed;
	int shuffle;
	int pass;
} walker;

static int walker_next(walker *wk, dml_batch *b)
{
	if (wk->pos >= wk->rows) {
		wk->pos = 0;
		if (wk->shuffle) {
			int rc = dml_dataset_shuffle(wk->ds, wk->seed + (uint64_t)++wk->pass);
			if (rc)
				return rc;
		}
	}
	int rc = dml_dataset_batch(wk->ds, wk->pos, wk->batch, b);
	if (rc)
		return rc;
	wk->pos += b->n;
	return 0;
}

static int walker_init(walker *wk, dml_dataset *ds, size_t batch, uint64_t seed,
                       int shuffle)
{
	wk->ds = ds;
	wk->rows = dml_dataset_rows(ds);
	wk->batch = batch;
	wk->seed = seed;
	wk->shuffle = shuffle;
	wk->pass = 0;
	wk->pos = 0;
	if (!wk->rows)
		return dml__fail(DML_EINVAL, "the data set has no rows");
	return shuffle ? dml_dataset_shuffle(ds, seed) : 0;
}

static int model_ok(const dml_model *m)
{
	return m && m->dim && m->loss_grad;
}

/* ---- the epoch skeleton -------------------------------------------- */

typedef struct run run;
struct run {
	dml_model *m;
	walker wk;
	int epochs;
	size_t steps;          /* per epoch */
	int worker;            /* for the callback */
	int clocked;           /* staleness is measured */
	dml_epoch_fn on_epoch;
	void *user;
	float *w;              /* the parameters the callback sees */
	float *grad;
	dml_train_stats s;
	int64_t lead;          /* this epoch's largest clock lead */
	const char *what;      /* the call a failed step was making */
	/* One step: *rows > 0 once the minibatch's update was applied (then
	 * *loss is its mean loss), also when the step fails after that. */
	int (*step)(run *r, double *loss, size_t *rows);
	void *ctx;
};

/* A failed step's detail: where, what, and the call's own detail. */
static int step_failed(run *r, int rc, int epoch, size_t step)
{
	char inner[DML_ERRMSG_MAX];
	snprintf(inner, sizeof inner, "%s", dml_error_detail());
	return dml__fail(rc, "epoch %d, step %zu, %s: %s", epoch, step + 1, r->what,
	                 inner[0] ? inner : dml_strerror(rc));
}

static int run_epochs(run *r)
{
	double t0 = now_s();
	int rc = 0;
	for (int e = 1; e <= r->epochs && !rc && !r->s.stopped; e++) {
		double sum = 0;
		uint64_t samples = 0;
		r->lead = r->clocked ? 0 : -1;
		for (size_t k = 0; k < r->steps; k++) {
			double loss = 0;
			size_t rows = 0;
			rc = r->step(r, &loss, &rows);
			if (rows) {
				sum += loss * (double)rows;
				samples += rows;
				r->s.steps++;
			}
			if (rc) {
				rc = step_failed(r, rc, e, k);
				break;
			}
		}
		if (rc)
			break;
		r->s.samples += samples;
		r->s.epochs = e;
		r->s.loss = samples ? sum / (double)samples : 0;
		r->s.seconds = now_s() - t0;
		if (r->lead > r->s.max_staleness)
			r->s.max_staleness = r->lead;
		if (r->on_epoch) {
			dml_epoch_info info = {r->worker, e, r->s.loss, samples,
			                       r->s.seconds, r->lead};
			r->s.stopped = r->on_epoch(r->user, &info, r->w) != 0;
		}
	}
	r->s.seconds = now_s() - t0;
	return rc;
}

/* The next minibatch's loss and gradient into r->grad, at parameters w. */
static int gradient(run *r, const float *w, dml_batch *b, double *loss)
{
	int rc = walker_next(&r->wk, b);
	r->what = "the data set";
	if (rc)
		return rc;
	r->what = "the model";
	return r->m->loss_grad(r->m->self, w, b, r->grad, loss);
}

/* ---- single-process SGD ------------------------------------------- */

static int sgd_step(run *r, double *loss, size_t *rows)
{
	dml_batch b;
	int rc = gradient(r, r->w, &b, loss);
	if (rc)
		return rc;
	dml_optim_step(r->ctx, r->w, r->grad);
	*rows = b.n;
	return 0;
}

int dml_sgd_run_abi(dml_model *m_in, dml_dataset *train, float *w,
                    dml_train_stats *st, const dml_sgd_opts *opts, int abi)
{
	dml__detail_clear();
	dml_sgd_opts o;
	dml_model m;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_SGD_OPTS, abi);
	if (rc)
		return rc;
	dml__abi_in(&m, sizeof m, m_in, DML__L_MODEL, abi);
	run r = {0};
	r.s.max_staleness = -1;
	dml__abi_out(st, &r.s, DML__L_TRAIN_STATS, abi);
	if (!m_in || !model_ok(&m) || !train || !w || o.epochs < 0)
		return dml__fail(DML_EINVAL, "a model with dim and loss_grad, a data "
		                 "set, parameters and epochs >= 0");
	dml_optim *opt;
	if ((rc = dml_optim_new_dim(&opt, m.dim, &o.optim)))
		return rc;
	r.m = &m;
	r.w = w;
	r.epochs = o.epochs ? o.epochs : DML_TRAIN_DEFAULT_EPOCHS;
	size_t batch = o.batch ? o.batch : DML_TRAIN_DEFAULT_BATCH;
	r.on_epoch = o.on_epoch;
	r.user = o.user;
	r.step = sgd_step;
	r.ctx = opt;
	r.grad = malloc(m.dim * sizeof *r.grad);
	if (!r.grad)
		rc = DML_ENOMEM;
	else if (!(rc = walker_init(&r.wk, train, batch, o.seed, !o.no_shuffle))) {
		r.steps = (r.wk.rows + batch - 1) / batch;
		rc = run_epochs(&r);
	}
	dml__abi_out(st, &r.s, DML__L_TRAIN_STATS, abi);
	free(r.grad);
	dml_optim_free(opt);
	return rc;
}

/* ---- the distributed worker ---------------------------------------- */

/* After a store call failed with DML_ECONNLOST: waits a little and says
 * whether to try again (the RPC client dials again on the next call). */
typedef struct retrier {
	dml_duration limit;
	int64_t since; /* ms of the first failure in a row; 0 = none */
	dml__backoff wait;
} retrier;

static int may_retry(retrier *rt, int rc, dml_train_stats *s)
{
	if (rc != DML_ECONNLOST || rt->limit == 0)
		return 0;
	int64_t now = dml__now_ms();
	if (!rt->since) {
		rt->since = now;
		dml__backoff_init(&rt->wait, RETRY_WAIT_MIN, RETRY_WAIT_MAX);
	}
	if (rt->limit != DML_INFINITE && now - rt->since >= rt->limit)
		return 0;
	dml__sleep_ms(dml__backoff_next(&rt->wait));
	s->retries++;
	return 1;
}

typedef struct dsgd {
	dml_ps *ps;
	dml_dsgd_opts o; /* resolved */
} dsgd;

static int dsgd_step(run *r, double *loss, size_t *rows)
{
	dsgd *d = r->ctx;
	dml_batch b;
	retrier rt = {d->o.reconnect_timeout, 0, {0, 0, 0}};
	int rc;
	r->what = "pull";
	while ((rc = dml_ps_pull(d->ps, r->w)) && may_retry(&rt, rc, &r->s))
		;
	if (rc || (rc = gradient(r, r->w, &b, loss)))
		return rc;
	/* pushes are resent by the remote handle itself, with their sequence
	 * numbers (dml_ps_remote_opts) */
	r->what = "push";
	if ((rc = dml_ps_push(d->ps, r->grad)))
		return rc;
	*rows = b.n;
	if (d->o.mode == DML_DSGD_ASP)
		return 0;
	dml_ps_clock_info ci;
	double tw = now_s();
	/* A clock call lost with its connection is not repeated: it may have
	 * advanced the clock already. Going on costs at most one step of lag
	 * (or, after a store restart, nothing: its clocks start again at 0). */
	r->what = "clock";
	rc = dml_ps_advance(d->ps, d->o.worker, &ci, d->o.clock_timeout);
	if (rc == DML_ECONNLOST && d->o.reconnect_timeout != 0) {
		r->s.retries++;
		return 0;
	}
	if (rc)
		return rc;
	if (ci.waited) {
		r->s.waits++;
		r->s.wait_seconds += now_s() - tw;
	}
	/* how far ahead of the slowest worker this one went on */
	if (ci.clock - ci.min > r->lead)
		r->lead = ci.clock - ci.min;
	return 0;
}

static const char *mode_name(dml_dsgd_mode m)
{
	switch (m) {
	case DML_DSGD_ASP: return "ASP";
	case DML_DSGD_BSP: return "BSP";
	case DML_DSGD_SSP: return "SSP";
	default: return "AUTO";
	}
}

/* The worker's mode, from the store's clocks when AUTO; a mode they do not
 * allow, or a worker without a clock, is DML_EINVAL: it would hang the
 * other workers (or itself) instead. */
static int check_mode(dml_ps *ps, dml_dsgd_opts *o)
{
	int workers, staleness;
	int rc = dml_ps_clocks(ps, &workers, &staleness);
	if (rc)
		return rc;
	dml_dsgd_mode store = !workers || staleness == DML_PS_ASYNC ? DML_DSGD_ASP
	                      : staleness == 0 ? DML_DSGD_BSP : DML_DSGD_SSP;
	if (o->mode == DML_DSGD_AUTO)
		o->mode = store;
	if (o->mode != store)
		return dml__fail(DML_EINVAL, "worker mode %s, but the store's clocks "
		                 "(%d workers, staleness %d) make it %s",
		                 mode_name(o->mode), workers, staleness, mode_name(store));
	if (workers && o->worker >= workers)
		return dml__fail(DML_EINVAL, "worker %d, but the store has clocks for "
		                 "workers 0 to %d", o->worker, workers - 1);
	return 0;
}

int dml_dsgd_run_abi(dml_ps *ps, dml_model *m_in, dml_dataset *shard,
                     dml_train_stats *st, const dml_dsgd_opts *opts, int abi)
{
	dml__detail_clear();
	dsgd d = {ps, {0}};
	dml_model m;
	int rc = dml__abi_in(&d.o, sizeof d.o, opts, DML__L_DSGD_OPTS, abi);
	if (rc)
		return rc;
	dml__abi_in(&m, sizeof m, m_in, DML__L_MODEL, abi);
	dml_dsgd_opts *o = &d.o;
	run r = {0};
	r.s.max_staleness = o->mode == DML_DSGD_ASP ? -1 : 0;
	dml__abi_out(st, &r.s, DML__L_TRAIN_STATS, abi);
	if (!ps || !m_in || !model_ok(&m) || !shard || o->epochs < 0 ||
	    o->worker < 0 || o->mode < DML_DSGD_AUTO || o->mode > DML_DSGD_SSP)
		return dml__fail(DML_EINVAL, "a store, a model with dim and loss_grad, "
		                 "a shard, epochs >= 0, worker >= 0 and a known mode");
	if (dml_ps_dim(ps) != m.dim)
		return dml__fail(DML_EDIM, "the model has %zu parameters, the store %zu",
		                 m.dim, dml_ps_dim(ps));
	if ((rc = check_mode(ps, o)) ||
	    (rc = dml__opt_duration(&o->reconnect_timeout,
	                            DML_DSGD_DEFAULT_RECONNECT_TIMEOUT)))
		return rc;
	if (o->clock_timeout == 0)
		o->clock_timeout = DML_DEFAULT;
	else if ((rc = dml__opt_duration(&o->clock_timeout, DML_DEFAULT)))
		return rc;
	r.s.max_staleness = o->mode == DML_DSGD_ASP ? -1 : 0;
	r.m = &m;
	r.epochs = o->epochs ? o->epochs : DML_TRAIN_DEFAULT_EPOCHS;
	size_t batch = o->batch ? o->batch : DML_TRAIN_DEFAULT_BATCH;
	r.worker = o->worker;
	r.clocked = o->mode != DML_DSGD_ASP;
	r.on_epoch = o->on_epoch;
	r.user = o->user;
	r.step = dsgd_step;
	r.ctx = &d;
	r.w = malloc(m.dim * sizeof *r.w);
	r.grad = malloc(m.dim * sizeof *r.grad);
	if (!r.w || !r.grad)
		rc = DML_ENOMEM;
	else if (!(rc = walker_init(&r.wk, shard, batch,
	                            o->seed ? o->seed : (uint64_t)o->worker + 1,
	                            !o->no_shuffle))) {
		r.steps = o->steps_per_epoch ? o->steps_per_epoch
		                             : (r.wk.rows + batch - 1) / batch;
		rc = run_epochs(&r);
	}
	dml__abi_out(st, &r.s, DML__L_TRAIN_STATS, abi);
	free(r.w);
	free(r.grad);
	return rc;
}

/* ---- deprecated names (0.2; docs/api.md) -------------------------- */

int dml_sgd_train(const dml_model *m, dml_dataset *train, float *w,
                  const dml_sgd_opts *o, dml_train_stats *st)
{
	return dml_sgd_run_abi((dml_model *)(uintptr_t)m, train, w, st, o, 1);
}

int dml_dsgd_worker(dml_ps *ps, const dml_model *m, dml_dataset *shard,
                    const dml_dsgd_opts *o, dml_train_stats *st)
{
	return dml_dsgd_run_abi(ps, (dml_model *)(uintptr_t)m, shard, st, o, 1);
}

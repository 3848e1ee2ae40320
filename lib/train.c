/*
 * train.c - the training loops: single-process minibatch SGD and the
 * distributed worker (pull, gradient, push, clock).
 */
#include "internal.h"

#include <stdlib.h>
#include <time.h>

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
		return DML_EINVAL;
	return shuffle ? dml_dataset_shuffle(ds, seed) : 0;
}

static int model_ok(const dml_model *m)
{
	return m && m->dim && m->loss_grad;
}

int dml_sgd_train(const dml_model *m, dml_dataset *train, float *w,
                  const dml_sgd_opts *opts, dml_train_stats *st)
{
	dml_sgd_opts o = {0};
	if (opts)
		o = *opts;
	dml_train_stats s = {0};
	s.max_staleness = -1;
	if (st)
		*st = s;
	if (!model_ok(m) || !train || !w || o.epochs < 0)
		return DML_EINVAL;
	if (!o.epochs)
		o.epochs = 10;
	if (!o.batch)
		o.batch = 64;
	dml_optim *opt;
	int rc = dml_optim_new(&opt, &o.optim, m->dim);
	if (rc)
		return rc;
	float *grad = malloc(m->dim * sizeof *grad);
	if (!grad) {
		dml_optim_free(opt);
		return DML_ENOMEM;
	}
	walker wk;
	rc = walker_init(&wk, train, o.batch, o.seed, !o.no_shuffle);
	double t0 = now_s();
	size_t steps = (wk.rows + o.batch - 1) / o.batch;
	for (int e = 1; e <= o.epochs && !rc && !s.stopped; e++) {
		double sum = 0;
		uint64_t samples = 0;
		for (size_t k = 0; k < steps && !rc; k++) {
			dml_batch b;
			double loss;
			if ((rc = walker_next(&wk, &b)))
				break;
			if ((rc = m->loss_grad(m->self, w, &b, grad, &loss)))
				break;
			dml_optim_step(opt, w, grad);
			sum += loss * (double)b.n;
			samples += b.n;
			s.steps++;
		}
		if (rc)
			break;
		s.samples += samples;
		s.epochs = e;
		s.loss = samples ? sum / (double)samples : 0;
		s.seconds = now_s() - t0;
		if (o.on_epoch) {
			dml_epoch_info info = {0, e, s.loss, samples, s.seconds, -1};
			s.stopped = o.on_epoch(o.user, &info, w) != 0;
		}
	}
	s.seconds = now_s() - t0;
	if (st)
		*st = s;
	free(grad);
	dml_optim_free(opt);
	return rc;
}

/* After a store call failed with DML_ECONNLOST: waits a little and says
 * whether to try again (the RPC client dials again on the next call). */
typedef struct retrier {
	dml_duration limit;
	int64_t since; /* ms of the first failure in a row; 0 = none */
	long delay_ms;
} retrier;

static int may_retry(retrier *r, int rc, dml_train_stats *s)
{
	if (rc != DML_ECONNLOST || r->limit <= 0)
		return 0;
	int64_t now = dml__now_ms();
	if (!r->since) {
		r->since = now;
		r->delay_ms = 10;
	}
	if (now - r->since >= r->limit)
		return 0;
	struct timespec ts = {r->delay_ms / 1000, (r->delay_ms % 1000) * 1000000L};
	nanosleep(&ts, NULL); /* a backoff, not a synchronisation */
	r->delay_ms = r->delay_ms * 2 > 1000 ? 1000 : r->delay_ms * 2;
	s->retries++;
	return 1;
}

int dml_dsgd_worker(dml_ps *ps, const dml_model *m, dml_dataset *shard,
                    const dml_dsgd_opts *opts, dml_train_stats *st)
{
	dml_dsgd_opts o = {0};
	if (opts)
		o = *opts;
	dml_train_stats s = {0};
	s.max_staleness = o.mode == DML_DSGD_ASP ? -1 : 0;
	if (st)
		*st = s;
	if (!ps || !model_ok(m) || !shard || o.epochs < 0 || o.worker < 0 ||
	    o.mode < DML_DSGD_ASP || o.mode > DML_DSGD_SSP)
		return DML_EINVAL;
	if (dml_ps_dim(ps) != m->dim)
		return DML_EDIM;
	if (!o.epochs)
		o.epochs = 10;
	if (!o.batch)
		o.batch = 64;
	if (!o.seed)
		o.seed = (uint64_t)o.worker + 1;
	dml_duration tmo = o.clock_timeout ? o.clock_timeout : DML_INFINITE;
	float *w = malloc(m->dim * sizeof *w), *grad = malloc(m->dim * sizeof *grad);
	if (!w || !grad) {
		free(w);
		free(grad);
		return DML_ENOMEM;
	}
	walker wk;
	int rc = walker_init(&wk, shard, o.batch, o.seed, !o.no_shuffle);
	size_t steps = o.steps_per_epoch ? o.steps_per_epoch
	                                 : (wk.rows + o.batch - 1) / o.batch;
	double t0 = now_s();
	for (int e = 1; e <= o.epochs && !rc && !s.stopped; e++) {
		double sum = 0;
		uint64_t samples = 0;
		int64_t lead = o.mode == DML_DSGD_ASP ? -1 : 0;
		for (size_t k = 0; k < steps && !rc; k++) {
			dml_batch b;
			double loss;
			retrier rt = {o.reconnect_timeout, 0, 0};
			while ((rc = dml_ps_pull(ps, w)) && may_retry(&rt, rc, &s))
				;
			if (rc || (rc = walker_next(&wk, &b)) ||
			    (rc = m->loss_grad(m->self, w, &b, grad, &loss)))
				break;
			/* pushes are resent by the remote handle itself, with
			 * their sequence numbers (dml_ps_remote_opts) */
			if ((rc = dml_ps_push(ps, grad)))
				break;
			sum += loss * (double)b.n;
			samples += b.n;
			s.steps++;
			if (o.mode == DML_DSGD_ASP)
				continue;
			dml_ps_clock_info ci;
			double tw = now_s();
			/* A clock call lost with its connection is not repeated:
			 * it may have advanced the clock already. Going on costs
			 * at most one step of lag (or, after a store restart,
			 * nothing: its clocks start again at 0). */
			rc = dml_ps_clock(ps, o.worker, tmo, &ci);
			if (rc == DML_ECONNLOST && o.reconnect_timeout > 0) {
				s.retries++;
				rc = 0;
				continue;
			}
			if (rc)
				break;
			if (ci.waited) {
				s.waits++;
				s.wait_seconds += now_s() - tw;
			}
			/* how far ahead of the slowest worker this one went on */
			int64_t l = ci.clock - ci.min;
			if (l > lead)
				lead = l;
		}
		if (rc)
			break;
		s.samples += samples;
		s.epochs = e;
		s.loss = samples ? sum / (double)samples : 0;
		s.seconds = now_s() - t0;
		if (lead > s.max_staleness)
			s.max_staleness = lead;
		if (o.on_epoch) {
			dml_epoch_info info = {o.worker, e, s.loss, samples, s.seconds, lead};
			s.stopped = o.on_epoch(o.user, &info, w) != 0;
		}
	}
	s.seconds = now_s() - t0;
	if (st)
		*st = s;
	free(w);
	free(grad);
	return rc;
}

/*
 * train.c - the training loops: single-process minibatch SGD and the
 * distributed worker (pull, gradient, push, clock), both on one epoch
 * skeleton (run_epochs) that differs only in its step.
 */
#include "abi.h"
#include "ps.h"

#include <math.h>
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

/* ---- the rows of a sparse minibatch ---------------------------------- */

/* A sparse minibatch's distinct columns (in the order first seen) and the
 * batch again with local column indices, for a model's rows_grad; with
 * room for the rows and their gradient. */
typedef struct rowset {
	uint32_t *slot_col;  /* hash table: column, */
	uint32_t *slot_loc;  /* local index + 1 (0 = empty) */
	size_t cap;
	uint32_t *cols;      /* local index -> column */
	size_t u;            /* distinct columns */
	uint32_t *lidx;      /* per entry: local index */
	uint64_t *lptr;      /* n + 1 offsets from 0 */
	size_t ecap, pcap, ccap;
	uint64_t *keys;      /* u + extra keys */
	float *rows, *grad;  /* (u + extra) * width */
	uint32_t *didx;      /* dml_sgd_run: positions in the dense w */
	size_t rcap;
	size_t width, extra;
	dml_batch lb;
} rowset;

static void rowset_free(rowset *rs)
{
	free(rs->slot_col);
	free(rs->slot_loc);
	free(rs->cols);
	free(rs->lidx);
	free(rs->lptr);
	free(rs->keys);
	free(rs->rows);
	free(rs->grad);
	free(rs->didx);
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 64;
	while (c < need)
		c *= 2;
	if (c > SIZE_MAX / size)
		return DML_ENOMEM;
	void *q = realloc(*p, c * size);
	if (!q)
		return DML_ENOMEM;
	*p = q;
	*cap = c;
	return 0;
}

static int rowset_build(rowset *rs, const dml_batch *b)
{
	size_t n = b->n;
	uint64_t p0 = b->indptr[0], nnz = b->indptr[n] - p0;
	size_t cap = 64;
	while (cap < 2 * nnz)
		cap *= 2;
	size_t c0 = rs->cap, e0 = rs->ecap, c1 = rs->ccap;
	if (grow((void **)&rs->slot_col, &c0, cap, sizeof *rs->slot_col) ||
	    grow((void **)&rs->slot_loc, &rs->cap, cap, sizeof *rs->slot_loc) ||
	    grow((void **)&rs->lidx, &e0, nnz ? nnz : 1, sizeof *rs->lidx) ||
	    grow((void **)&rs->cols, &rs->ecap, nnz ? nnz : 1, sizeof *rs->cols) ||
	    grow((void **)&rs->lptr, &rs->pcap, n + 1, sizeof *rs->lptr))
		return DML_ENOMEM;
	(void)c1;
	size_t m = cap - 1;
	memset(rs->slot_loc, 0, cap * sizeof *rs->slot_loc);
	rs->u = 0;
	for (uint64_t p = 0; p < nnz; p++) {
		uint32_t col = b->idx[p0 + p];
		size_t i = (size_t)((col * 0x9e3779b1u) >> 7) & m;
		while (rs->slot_loc[i] && rs->slot_col[i] != col)
			i = (i + 1) & m;
		if (!rs->slot_loc[i]) {
			rs->slot_col[i] = col;
			rs->cols[rs->u] = col;
			rs->slot_loc[i] = (uint32_t)++rs->u;
		}
		rs->lidx[p] = rs->slot_loc[i] - 1;
	}
	for (size_t i = 0; i <= n; i++)
		rs->lptr[i] = b->indptr[i] - p0;
	size_t rows = (rs->u + rs->extra) * rs->width, r0 = rs->rcap, r1 = rs->rcap,
	       k0 = rs->rcap;
	if (grow((void **)&rs->rows, &r0, rows, sizeof *rs->rows) ||
	    grow((void **)&rs->grad, &r1, rows, sizeof *rs->grad) ||
	    grow((void **)&rs->didx, &k0, rows, sizeof *rs->didx))
		return DML_ENOMEM;
	size_t kc = rs->rcap;
	if (grow((void **)&rs->keys, &kc, rows, sizeof *rs->keys))
		return DML_ENOMEM;
	rs->rcap = r0;
	rs->lb = (dml_batch){n, rs->u, NULL, rs->lptr, rs->lidx, b->val + p0, b->y};
	return 0;
}

/* ---- divergence ------------------------------------------------------ */

static int diverged(const char *what, const float *v, size_t n, double loss)
{
	size_t at = 0;
	if (!isfinite(loss))
		return dml__fail(DML_EDIVERGED, "the loss is %g", loss);
	if (v && !dml__all_finite(v, n, &at))
		return dml__fail(DML_EDIVERGED, "%s %zu is %g", what, at, (double)v[at]);
	return 0;
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
	size_t every;          /* callback every this many steps (0 = never) */
	int dense_w;           /* the callback gets r->w (else NULL) */
	rowset rs;             /* the sparse path's */
	int sparse;            /* the sparse path is taken */
};

/* A failed step's detail: where, what, and the call's own detail. */
static int step_failed(run *r, int rc, int epoch, size_t step)
{
	r->s.fail_epoch = epoch;
	r->s.fail_step = step + 1;
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
			if (r->on_epoch && r->every && r->s.steps % r->every == 0 &&
			    k + 1 < r->steps) {
				dml_epoch_info info = {r->worker, e, samples ? sum / (double)samples : 0,
				                       samples, now_s() - t0, r->lead,
				                       r->s.steps, 0};
				if (r->on_epoch(r->user, &info, r->dense_w ? r->w : NULL)) {
					r->s.stopped = 1;
					break;
				}
			}
		}
		if (!rc && r->dense_w && r->w && (rc = diverged("parameter", r->w, r->m->dim, 0)))
			rc = step_failed(r, rc, e, r->steps - 1);
		if (rc)
			break;
		r->s.samples += samples;
		r->s.epochs = e;
		r->s.loss = samples ? sum / (double)samples : 0;
		r->s.seconds = now_s() - t0;
		if (r->lead > r->s.max_staleness)
			r->s.max_staleness = r->lead;
		if (r->on_epoch && !r->s.stopped) {
			dml_epoch_info info = {r->worker, e, r->s.loss, samples,
			                       r->s.seconds, r->lead, r->s.steps, 1};
			r->s.stopped = r->on_epoch(r->user, &info, r->dense_w ? r->w : NULL) != 0;
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
	if ((rc = r->m->loss_grad(r->m->self, w, b, r->grad, loss)))
		return rc;
	return diverged("gradient", r->grad, r->m->dim, *loss);
}

/* The sparse path's gradient: of the rows in r->rs.rows (filled by
 * `fetch` once the minibatch's columns are known), into r->rs.grad. */
static int rows_gradient(run *r, dml_batch *b, double *loss,
                         int (*fetch)(run *r))
{
	int rc = walker_next(&r->wk, b);
	r->what = "the data set";
	if (rc)
		return rc;
	if (b->x)
		return dml__fail(DML_EINVAL, "a dense minibatch on the sparse path "
		                 "(a keyed store takes sparse data)");
	if ((rc = rowset_build(&r->rs, b)))
		return rc;
	size_t nr = (r->rs.u + r->rs.extra) * r->rs.width;
	if ((rc = fetch(r)) || (rc = diverged("parameter", r->rs.rows, nr, 0)))
		return rc;
	r->what = "the model";
	if ((rc = r->m->rows_grad(r->m->self, r->rs.rows, &r->rs.lb, r->rs.grad, loss)))
		return rc;
	return diverged("gradient", r->rs.grad, nr, *loss);
}

/* Positions in the dense layout (model.h) of the rows of r->rs. */
static void dense_positions(run *r)
{
	rowset *rs = &r->rs;
	size_t W = rs->width, F = r->m->features, q = 0;
	for (size_t j = 0; j < rs->u; j++)
		for (size_t c = 0; c < W; c++)
			rs->didx[q++] = (uint32_t)(c * F + rs->cols[j]);
	for (size_t e = 0; e < rs->extra; e++)
		for (size_t c = 0; c < W; c++)
			rs->didx[q++] = (uint32_t)(W * F + e * W + c);
}

static int gather_dense(run *r)
{
	dense_positions(r);
	size_t nr = (r->rs.u + r->rs.extra) * r->rs.width;
	for (size_t q = 0; q < nr; q++)
		r->rs.rows[q] = r->w[r->rs.didx[q]];
	return 0;
}

/* ---- single-process SGD ------------------------------------------- */

static int sgd_step(run *r, double *loss, size_t *rows)
{
	dml_batch b;
	int rc;
	if (r->sparse) {
		if ((rc = rows_gradient(r, &b, loss, gather_dense)))
			return rc;
		size_t nr = (r->rs.u + r->rs.extra) * r->rs.width;
		if ((rc = dml_optim_step_sparse(r->ctx, r->w, r->rs.didx, r->rs.grad, nr)))
			return rc;
	} else {
		if ((rc = gradient(r, r->w, &b, loss)))
			return rc;
		dml_optim_step(r->ctx, r->w, r->grad);
	}
	*rows = b.n;
	return 0;
}

/* The sparse path needs sparse data, a keyed model and a dense layout
 * that 32-bit positions address. */
static int sparse_ok(const dml_model *m, dml_dataset *ds)
{
	return dml_dataset_is_sparse(ds) && m->width && m->rows_grad &&
	       m->dim <= UINT32_MAX;
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
	r.every = o.callback_every;
	r.dense_w = 1;
	r.sparse = !o.dense_path && sparse_ok(&m, train);
	r.rs.width = m.width;
	r.rs.extra = m.extra_rows;
	r.grad = r.sparse ? NULL : malloc(m.dim * sizeof *r.grad);
	if (!r.sparse && !r.grad)
		rc = DML_ENOMEM;
	else if (!(rc = walker_init(&r.wk, train, batch, o.seed, !o.no_shuffle))) {
		r.steps = (r.wk.rows + batch - 1) / batch;
		rc = run_epochs(&r);
	}
	dml__abi_out(st, &r.s, DML__L_TRAIN_STATS, abi);
	free(r.grad);
	rowset_free(&r.rs);
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
	/* overlap: the next step's parameters, and their pull in flight */
	float *next;
	dml__ps_pull_op *op;
	int pulling;     /* a pull into next was begun (op may be NULL: done) */
} dsgd;

/* The parameters of this step into r->w: the pull begun in the last step
 * (overlap), or one now; a pull in flight that failed is made again now,
 * and a lost one repeated as reconnect_timeout says. */
static int dense_pull(run *r, dsgd *d)
{
	retrier rt = {d->o.reconnect_timeout, 0, {0, 0, 0}};
	int rc, have = 0; /* r->w holds this step's parameters */
	r->what = "pull";
	if (d->pulling) {
		rc = dml__ps_pull_end(d->op);
		d->op = NULL;
		d->pulling = 0;
		if (!rc) {
			float *t = r->w;
			r->w = d->next;
			d->next = t;
			have = 1;
		} else if (rc != DML_ECONNLOST && rc != DML_ETIMEDOUT) {
			return rc;
		}
	}
	if (!have)
		while ((rc = dml_ps_pull(d->ps, r->w)) && may_retry(&rt, rc, &r->s))
			;
	else
		rc = 0;
	if (rc || !d->o.overlap)
		return rc;
	/* the next step's, while this one computes; if it cannot start, the
	 * next step pulls for itself */
	if (!dml__ps_pull_begin(d->ps, d->next, &d->op))
		d->pulling = 1;
	return 0;
}

/* The sparse path's pull: the keys of the minibatch's rows, then them. */
static int pull_keys(run *r)
{
	dsgd *d = r->ctx;
	rowset *rs = &r->rs;
	for (size_t j = 0; j < rs->u; j++)
		rs->keys[j] = dml_ps_key(rs->cols[j], d->o.key_seed);
	for (size_t e = 0; e < rs->extra; e++)
		rs->keys[rs->u + e] = UINT64_MAX - e;
	retrier rt = {d->o.reconnect_timeout, 0, {0, 0, 0}};
	int rc;
	r->what = "pull";
	while ((rc = dml_ps_pull_rows(d->ps, rs->keys, rs->u + rs->extra, rs->rows)) &&
	       may_retry(&rt, rc, &r->s))
		;
	r->s.rows_moved += rs->u + rs->extra;
	return rc;
}

static int dsgd_step(run *r, double *loss, size_t *rows)
{
	dsgd *d = r->ctx;
	dml_batch b;
	int rc;
	if (r->sparse) {
		if ((rc = rows_gradient(r, &b, loss, pull_keys)))
			return rc;
		r->what = "push";
		size_t n = r->rs.u + r->rs.extra;
		if ((rc = dml_ps_push_rows(d->ps, r->rs.keys, n, r->rs.grad)))
			return rc;
		r->s.rows_moved += n;
	} else {
		if ((rc = dense_pull(r, d)) || (rc = diverged("parameter", r->w, r->m->dim, 0)) ||
		    (rc = gradient(r, r->w, &b, loss)))
			return rc;
		/* pushes are resent by the remote handle itself, with their
		 * sequence numbers (dml_ps_remote_opts) */
		r->what = "push";
		if ((rc = dml_ps_push(d->ps, r->grad)))
			return rc;
	}
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
	dsgd d = {ps, {0}, NULL, NULL, 0};
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
	int keyed_store = dml_ps_width(ps) != 0;
	if (keyed_store && (!m.rows_grad || m.width != dml_ps_width(ps)))
		return dml__fail(DML_EDIM, "a keyed store of rows of %zu needs a "
		                 "model with rows_grad and width %zu (it has %zu)",
		                 dml_ps_width(ps), dml_ps_width(ps), m.width);
	if (keyed_store && !dml_dataset_is_sparse(shard))
		return dml__fail(DML_EINVAL, "a keyed store takes sparse (CSR) data");
	if (!keyed_store && dml_ps_dim(ps) != m.dim)
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
	r.every = o->callback_every;
	r.sparse = keyed_store;
	r.dense_w = !keyed_store;
	r.rs.width = m.width;
	r.rs.extra = m.extra_rows;
	if (!keyed_store) {
		r.w = malloc(m.dim * sizeof *r.w);
		r.grad = malloc(m.dim * sizeof *r.grad);
		d.next = o->overlap ? malloc(m.dim * sizeof *d.next) : NULL;
		if (!r.w || !r.grad || (o->overlap && !d.next))
			rc = DML_ENOMEM;
	}
	if (!rc && !(rc = walker_init(&r.wk, shard, batch,
	                            o->seed ? o->seed : (uint64_t)o->worker + 1,
	                            !o->no_shuffle))) {
		r.steps = o->steps_per_epoch ? o->steps_per_epoch
		                             : (r.wk.rows + batch - 1) / batch;
		rc = run_epochs(&r);
	}
	if (d.pulling) { /* the pull for a step that will not come */
		char keep[DML_ERRMSG_MAX];
		snprintf(keep, sizeof keep, "%s", dml_error_detail());
		dml__ps_pull_end(d.op);
		if (rc)
			dml__fail(rc, "%s", keep);
		else
			dml__detail_clear();
	}
	dml__abi_out(st, &r.s, DML__L_TRAIN_STATS, abi);
	free(r.w);
	free(d.next);
	free(r.grad);
	rowset_free(&r.rs);
	return rc;
}

/* ---- a model's rows from a keyed store ------------------------------- */

#define PULL_CHUNK 65536 /* rows per pull */

int dml_model_pull_abi(const dml_model *m_in, dml_ps *ps, uint64_t key_seed,
                       float *w, int abi)
{
	dml__detail_clear();
	dml_model m;
	int rc = dml__abi_in(&m, sizeof m, m_in, DML__L_MODEL, abi);
	if (rc)
		return rc;
	if (!m_in || !ps || !w || !m.width || m.width != dml_ps_width(ps) ||
	    m.dim != m.width * (m.features + m.extra_rows))
		return dml__fail(DML_EINVAL, "a model with a keyed path of the "
		                 "store's width and a keyed store");
	size_t W = m.width, F = m.features, total = F + m.extra_rows;
	uint64_t *keys = malloc(PULL_CHUNK * sizeof *keys);
	float *rows = malloc(PULL_CHUNK * W * sizeof *rows);
	if (!keys || !rows) {
		free(keys);
		free(rows);
		return DML_ENOMEM;
	}
	for (size_t j0 = 0; j0 < total && !rc; j0 += PULL_CHUNK) {
		size_t n = total - j0 < PULL_CHUNK ? total - j0 : PULL_CHUNK;
		for (size_t i = 0; i < n; i++)
			keys[i] = j0 + i < F ? dml_ps_key(j0 + i, key_seed)
			                     : UINT64_MAX - (j0 + i - F);
		if ((rc = dml_ps_pull_rows(ps, keys, n, rows)))
			break;
		for (size_t i = 0; i < n; i++)
			for (size_t c = 0; c < W; c++)
				w[j0 + i < F ? c * F + j0 + i : W * F + (j0 + i - F) * W + c] =
				        rows[i * W + c];
	}
	free(keys);
	free(rows);
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

/*
 * ps.c - the parameter store: a local float vector under striped locks,
 * with server-side optimizers, worker clocks and checkpoints. Every public
 * dml_ps_* call also accepts a remote handle (ps_remote.c).
 */
#include "ps.h"

#include "abi.h"
#include "ckpt.h"
#include "mac.h"
#include "optim.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

#define STRIPE_PARAMS ((size_t)64 * 1024)
#define AUTO_STRIPES 256  /* most stripes chosen automatically */
#define MAX_STRIPES 4096  /* most stripes at all */
#define CKPT_KIND 0x53504d44u /* "DMPS" */
#define WAITERS_PER_WORKER 64 /* clock calls parked per worker, at most */
#define TAG_PARAMS 1u
#define TAG_STATE0 2u
#define TAG_STATE1 3u

/* ---- creation ----------------------------------------------------- */

int dml__ps_opts_check(dml_ps_opts *o)
{
	if (o->workers < 0 || o->workers > DML_PS_MAX_WORKERS)
		return dml__fail(DML_EINVAL, "workers %d: 0 to %d", o->workers,
		                 DML_PS_MAX_WORKERS);
	if (o->staleness < DML_PS_ASYNC)
		return dml__fail(DML_EINVAL, "staleness %d: >= 0 or DML_PS_ASYNC",
		                 o->staleness);
	if (dml__opt_duration(&o->worker_timeout, DML_PS_DEFAULT_WORKER_TIMEOUT) ||
	    dml__opt_duration(&o->clock_timeout, DML_PS_DEFAULT_CLOCK_TIMEOUT))
		return DML_EINVAL;
	if ((o->ckpt_key_len && !o->ckpt_key) || o->ckpt_key_len > DML__MAC_MAX_KEY ||
	    o->ckpt_mode > 0777)
		return dml__fail(DML_EINVAL, "ckpt_key_len %zu (1 to %d, with a key) "
		                 "or ckpt_mode %o (at most 0777)", o->ckpt_key_len,
		                 DML__MAC_MAX_KEY, o->ckpt_mode);
	if (o->ckpt_key_len) { /* say now, not at the first save, if it cannot be */
		dml__mac *m;
		int rc = dml__mac_new(&m, o->ckpt_key, o->ckpt_key_len);
		dml__mac_free(m);
		if (rc)
			return rc;
	}
	return dml__optim_valid(&o->optim);
}

int dml__ps_local_new(dml_ps **out, const dml_ps_opts *o, const dml__ps_ops *ops)
{
	dml_ps *ps = calloc(1, sizeof *ps);
	if (!ps)
		return DML_ENOMEM;
	ps->ops = ops;
	dml__optim_resolve(&o->optim, &ps->optim);
	ps->workers = o->workers;
	ps->staleness = o->staleness;
	ps->worker_timeout = o->worker_timeout;
	ps->clock_timeout = o->clock_timeout;
	ps->ckpt.mode = o->ckpt_mode;
	if (o->ckpt_key_len) {
		void *key = malloc(o->ckpt_key_len);
		if (!key) {
			free(ps);
			return DML_ENOMEM;
		}
		memcpy(key, o->ckpt_key, o->ckpt_key_len);
		ps->ckpt.key = key;
		ps->ckpt.key_len = o->ckpt_key_len;
	}
	if (o->workers) {
		ps->clock = calloc((size_t)o->workers, sizeof *ps->clock);
		ps->clock_at = calloc((size_t)o->workers, sizeof *ps->clock_at);
		ps->dropped = calloc((size_t)o->workers, 1);
		if (!ps->clock || !ps->clock_at || !ps->dropped) {
			free(ps->clock);
			free(ps->clock_at);
			free(ps->dropped);
			free((void *)ps->ckpt.key);
			free(ps);
			return DML_ENOMEM;
		}
	}
	int64_t now = dml__now_ms();
	for (int i = 0; i < o->workers; i++)
		ps->clock_at[i] = now;
	atomic_init(&ps->steps, 0);
	atomic_init(&ps->updates, 0);
	atomic_init(&ps->rot, 0);
	pthread_mutex_init(&ps->cmu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ps->ccv, &ca);
	pthread_condattr_destroy(&ca);
	*out = ps;
	return 0;
}

void dml__ps_local_free(dml_ps *ps)
{
	/* answer calls still waiting in the clocks */
	pthread_mutex_lock(&ps->cmu);
	dml__ps_waiter *wt = ps->waiters;
	ps->waiters = NULL;
	pthread_mutex_unlock(&ps->cmu);
	while (wt) {
		dml__ps_waiter *next = wt->next;
		wt->wake(wt->arg, DML_ECLOSED, NULL);
		free(wt);
		wt = next;
	}
	dml__ps_serve_free(ps);
	pthread_mutex_destroy(&ps->cmu);
	pthread_cond_destroy(&ps->ccv);
	free(ps->clock);
	free(ps->clock_at);
	free(ps->dropped);
	if (ps->ckpt.key) { /* a secret: do not leave it in freed memory */
		memset((void *)ps->ckpt.key, 0, ps->ckpt.key_len);
		__asm__ __volatile__("" : : "r"(ps->ckpt.key) : "memory");
		free((void *)ps->ckpt.key);
	}
	free(ps);
}

static void dense_free(dml_ps *ps)
{
	for (size_t i = 0; i < ps->nstripes; i++)
		pthread_mutex_destroy(&ps->stripes[i].mu);
	free(ps->w);
	free(ps->s[0]);
	free(ps->s[1]);
	free(ps->stripes);
}

int dml_ps_new_abi(dml_ps **out, size_t dim, const dml_ps_opts *opts, int abi)
{
	dml__detail_clear();
	dml_ps_opts o;
	int rc = dml__abi_in(&o, sizeof o, opts, DML__L_PS_OPTS, abi);
	if (rc)
		return rc;
	if (!out)
		return DML_EINVAL;
	if (!dim || dim > DML_PS_MAX_DIM)
		return dml__fail(DML_EINVAL, "dim %zu: 1 to 2^40", dim);
	if (o.max_rows || o.row_init || o.init_scale != 0 || o.init_seed)
		return dml__fail(DML_EINVAL, "max_rows, row_init, init_scale, "
		                 "init_seed: options of keyed stores");
	if ((rc = dml__ps_opts_check(&o)))
		return rc;
	if (o.init) {
		size_t at;
		if (!dml__all_finite(o.init, dim, &at))
			return dml__fail(DML_ENONFINITE, "init: value %zu is not finite", at);
	}
	dml_ps *ps;
	if ((rc = dml__ps_local_new(&ps, &o, &dml__ps_dense_ops)))
		return rc;
	ps->dim = dim;
	int nstate = dml__optim_nstate(&ps->optim);
	size_t ns = o.stripes ? o.stripes : (dim + STRIPE_PARAMS - 1) / STRIPE_PARAMS;
	if (!o.stripes && ns > AUTO_STRIPES)
		ns = AUTO_STRIPES;
	if (ns > MAX_STRIPES)
		ns = MAX_STRIPES;
	if (ns > dim)
		ns = dim;
	ps->stripe_len = (dim + ns - 1) / ns;
	ps->nstripes = (dim + ps->stripe_len - 1) / ps->stripe_len;
	ps->w = malloc(dim * sizeof(float));
	ps->stripes = calloc(ps->nstripes, sizeof *ps->stripes);
	for (int k = 0; k < nstate; k++)
		ps->s[k] = calloc(dim, sizeof(float));
	if (!ps->w || !ps->stripes || (nstate > 0 && !ps->s[0]) ||
	    (nstate > 1 && !ps->s[1])) {
		free(ps->w);
		free(ps->stripes);
		free(ps->s[0]);
		free(ps->s[1]);
		ps->w = NULL;
		ps->stripes = NULL;
		ps->s[0] = ps->s[1] = NULL;
		ps->nstripes = 0;
		dml__ps_local_free(ps);
		return DML_ENOMEM;
	}
	if (o.init)
		memcpy(ps->w, o.init, dim * sizeof(float));
	else
		memset(ps->w, 0, dim * sizeof(float));
	for (size_t i = 0; i < ps->nstripes; i++)
		pthread_mutex_init(&ps->stripes[i].mu, NULL);
	*out = ps;
	return 0;
}

size_t dml_ps_dim(const dml_ps *ps) { return ps ? ps->dim : 0; }

size_t dml_ps_width(const dml_ps *ps) { return ps ? ps->width : 0; }

void dml_ps_free(dml_ps *ps)
{
	if (!ps)
		return;
	ps->ops->free(ps);
	if (!ps->remote)
		dml__ps_local_free(ps);
	else
		free(ps);
}

/* ---- stripes ------------------------------------------------------ */

void dml__ps_lock(dml_ps *ps, size_t off, size_t n, size_t *k0, size_t *k1)
{
	*k0 = off / ps->stripe_len;
	*k1 = n ? (off + n - 1) / ps->stripe_len + 1 : *k0;
	for (size_t k = *k0; k < *k1; k++)
		pthread_mutex_lock(&ps->stripes[k].mu);
}

void dml__ps_unlock(dml_ps *ps, size_t k0, size_t k1)
{
	for (size_t k = k1; k-- > k0;)
		pthread_mutex_unlock(&ps->stripes[k].mu);
}

/* ---- updates ------------------------------------------------------ */

/* The bulk in blocks of 16, so that gcc's -O2 cost model vectorises it. */
static void range_add(float *restrict w, const float *restrict d, size_t n)
{
	size_t m = n & ~(size_t)15;
	for (size_t i = 0; i < m; i++)
		w[i] += d[i];
	for (size_t i = m; i < n; i++)
		w[i] += d[i];
}

/* Walks the stripes one at a time, starting at a rotating stripe so that
 * concurrent writers spread over the vector instead of queueing behind
 * each other in the same order. */
void dml__ps_apply_dense(dml_ps *ps, int op, const float *v)
{
	uint64_t t = 0;
	float lr = 0;
	if (op) {
		t = atomic_fetch_add(&ps->steps, 1) + 1;
		lr = dml__schedule_lr(&ps->optim, t - 1);
	}
	size_t first = atomic_fetch_add(&ps->rot, 1) % ps->nstripes;
	for (size_t k = 0; k < ps->nstripes; k++) {
		size_t i = (first + k) % ps->nstripes, off, n;
		dml__ps_stripe_span(ps, i, &off, &n);
		pthread_mutex_lock(&ps->stripes[i].mu);
		if (op)
			dml__optim_apply(&ps->optim, lr, t, ps->w + off, v + off,
			                 ps->s[0] ? ps->s[0] + off : NULL,
			                 ps->s[1] ? ps->s[1] + off : NULL, n);
		else
			range_add(ps->w + off, v + off, n);
		pthread_mutex_unlock(&ps->stripes[i].mu);
	}
	atomic_fetch_add(&ps->updates, 1);
}

uint64_t dml__ps_step_of(dml_ps *ps, int op, float *lr)
{
	uint64_t t = 0;
	if (op == DML__PS_STEP)
		t = atomic_fetch_add(&ps->steps, 1) + 1;
	else if (op == DML__PS_STEP_MORE)
		t = atomic_load(&ps->steps);
	if (op == DML__PS_STEP_MORE && !t)
		t = 1;
	*lr = t ? dml__schedule_lr(&ps->optim, t - 1) : 0;
	return t;
}

void dml__ps_apply_range(dml_ps *ps, int op, size_t off, const float *v,
                         size_t n)
{
	float lr;
	uint64_t t = dml__ps_step_of(ps, op, &lr);
	size_t end = off + n;
	for (size_t k = off / ps->stripe_len; n && k < ps->nstripes; k++) {
		size_t so, sn;
		dml__ps_stripe_span(ps, k, &so, &sn);
		size_t lo = off > so ? off : so, hi = end < so + sn ? end : so + sn;
		if (lo >= hi)
			break;
		const float *d = v + (lo - off);
		pthread_mutex_lock(&ps->stripes[k].mu);
		if (op == DML__PS_SET)
			memcpy(ps->w + lo, d, (hi - lo) * sizeof(float));
		else if (op == DML__PS_ADD)
			range_add(ps->w + lo, d, hi - lo);
		else
			dml__optim_apply(&ps->optim, lr, t, ps->w + lo, d,
			                 ps->s[0] ? ps->s[0] + lo : NULL,
			                 ps->s[1] ? ps->s[1] + lo : NULL, hi - lo);
		pthread_mutex_unlock(&ps->stripes[k].mu);
	}
	if (op != DML__PS_SET && off == 0) /* a split call counts once */
		atomic_fetch_add(&ps->updates, 1);
}

/* Holds every stripe the update touches (in ascending order, so never a
 * deadlock), so that readers see a sparse update whole. */
void dml__ps_apply_sparse(dml_ps *ps, int op, const uint32_t *idx,
                          const float *val, size_t nnz)
{
	uint64_t t = 0;
	float lr = 0;
	if (op) {
		t = atomic_fetch_add(&ps->steps, 1) + 1;
		lr = dml__schedule_lr(&ps->optim, t - 1);
	}
	uint64_t mark[MAX_STRIPES / 64] = {0};
	for (size_t i = 0; i < nnz; i++) {
		size_t k = idx[i] / ps->stripe_len;
		mark[k / 64] |= (uint64_t)1 << (k % 64);
	}
	for (size_t k = 0; k < ps->nstripes; k++)
		if (mark[k / 64] >> (k % 64) & 1)
			pthread_mutex_lock(&ps->stripes[k].mu);
	if (op)
		dml__optim_apply_sparse(&ps->optim, lr, t, ps->w, idx, val, nnz,
		                        ps->s[0], ps->s[1]);
	else
		for (size_t i = 0; i < nnz; i++)
			ps->w[idx[i]] += val[i];
	for (size_t k = 0; k < ps->nstripes; k++)
		if (mark[k / 64] >> (k % 64) & 1)
			pthread_mutex_unlock(&ps->stripes[k].mu);
	atomic_fetch_add(&ps->updates, 1);
}

/* ---- the dense kind's operations --------------------------------- */

static int dense_update(dml_ps *ps, int op, const float *v)
{
	if (op != DML__PS_SET) {
		dml__ps_apply_dense(ps, op, v);
		return 0;
	}
	for (size_t k = 0; k < ps->nstripes; k++) {
		size_t off, n;
		dml__ps_stripe_span(ps, k, &off, &n);
		pthread_mutex_lock(&ps->stripes[k].mu);
		memcpy(ps->w + off, v + off, n * sizeof(float));
		pthread_mutex_unlock(&ps->stripes[k].mu);
	}
	return 0;
}

static int dense_update_sparse(dml_ps *ps, int op, const uint32_t *idx,
                               const float *val, size_t nnz)
{
	dml__ps_apply_sparse(ps, op, idx, val, nnz);
	return 0;
}

static int dense_pull(dml_ps *ps, size_t off, size_t n, float *out)
{
	size_t k0, k1; /* the range seen whole: its stripes held at once */
	dml__ps_lock(ps, off, n, &k0, &k1);
	if (n)
		memcpy(out, ps->w + off, n * sizeof(float));
	dml__ps_unlock(ps, k0, k1);
	return 0;
}

int dml__ps_local_updates(dml_ps *ps, uint64_t *count)
{
	*count = atomic_load(&ps->updates);
	return 0;
}

/* ---- the interface: checks, then the kind's operation -------------- */

/* Whether one of 1024 floats is NaN or infinite: its exponent field plus
 * one ulp of exponent carries into the sign bit only when the field is all
 * ones. And, add and or of a constant trip count, which gcc's -O2 cost
 * model vectorises; built twice, for SSE2 and for AVX2 (a check reads the
 * whole vector before the update does: it should cost little beside it). */
#define ANY_NONFINITE_1024(name, attr)                                         \
	attr static uint32_t name(const float *v)                              \
	{                                                                      \
		uint32_t acc = 0;                                              \
		for (size_t i = 0; i < 1024; i++) {                            \
			uint32_t b;                                            \
			memcpy(&b, &v[i], 4);                                  \
			acc |= (b & 0x7f800000u) + 0x00800000u;                \
		}                                                              \
		return acc & 0x80000000u;                                      \
	}
ANY_NONFINITE_1024(any_nonfinite_sse2, )
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
ANY_NONFINITE_1024(any_nonfinite_avx2, __attribute__((target("avx2"))))
ANY_NONFINITE_1024(any_nonfinite_avx512, __attribute__((target("avx512f"))))
#define HAVE_AVX2_CHECK 1
#endif

int dml__all_finite(const float *v, size_t n, size_t *at)
{
	/* a float is NaN or infinite when its exponent bits are all ones: the
	 * largest exponent of each block of 1024, then a scan of a bad block
	 * (and of the tail) */
	uint32_t (*any)(const float *) = any_nonfinite_sse2;
#ifdef HAVE_AVX2_CHECK
	static atomic_int isa = -1; /* 0 SSE2, 1 AVX2, 2 AVX-512F */
	int k = atomic_load_explicit(&isa, memory_order_relaxed);
	if (k < 0) {
		k = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
		atomic_store_explicit(&isa, k, memory_order_relaxed);
	}
	any = k == 2 ? any_nonfinite_avx512 : k ? any_nonfinite_avx2 : any_nonfinite_sse2;
#endif
	size_t i0 = 0;
	for (; i0 + 1024 <= n; i0 += 1024)
		if (any(v + i0))
			break;
	for (size_t i = i0; i < n; i++)
		if (!isfinite(v[i])) {
			*at = i;
			return 0;
		}
	return 1;
}

static int not_finite(const float *v, size_t at, const char *what)
{
	return dml__fail(DML_ENONFINITE, "%s: value %zu is %s; nothing changed",
	                 what, at, isnan(v[at]) ? "NaN" : "infinite");
}

static int unsupported(const dml_ps *ps, const char *call)
{
	return dml__fail(DML_EINVAL, "%s: not a call of %s", call, ps->ops->name);
}

static int dense(dml_ps *ps, int op, const float *v, const char *call)
{
	dml__detail_clear();
	if (!ps || !v)
		return DML_EINVAL;
	if (!ps->ops->update)
		return unsupported(ps, call);
	size_t at;
	if (!dml__all_finite(v, ps->dim, &at))
		return not_finite(v, at, call);
	return ps->ops->update(ps, op, v);
}

int dml_ps_update(dml_ps *ps, const float *delta)
{
	return dense(ps, DML__PS_ADD, delta, "dml_ps_update");
}

int dml_ps_push(dml_ps *ps, const float *grad)
{
	return dense(ps, DML__PS_STEP, grad, "dml_ps_push");
}

int dml_ps_assign(dml_ps *ps, const float *v)
{
	return dense(ps, DML__PS_SET, v, "dml_ps_assign");
}

static int sparse(dml_ps *ps, int op, const uint32_t *idx, const float *val,
                  size_t nnz, const char *call)
{
	dml__detail_clear();
	if (!ps || (nnz && (!idx || !val)))
		return DML_EINVAL;
	if (!ps->ops->update_sparse)
		return unsupported(ps, call);
	for (size_t i = 0; i < nnz; i++)
		if (idx[i] >= ps->dim)
			return dml__fail(DML_EINVAL, "index %u (entry %zu) outside "
			                 "dimension %zu", (unsigned)idx[i], i, ps->dim);
	size_t at;
	if (!dml__all_finite(val, nnz, &at))
		return not_finite(val, at, call);
	return ps->ops->update_sparse(ps, op, idx, val, nnz);
}

int dml_ps_update_sparse(dml_ps *ps, const uint32_t *idx, const float *val,
                         size_t nnz)
{
	return sparse(ps, DML__PS_ADD, idx, val, nnz, "dml_ps_update_sparse");
}

int dml_ps_push_sparse(dml_ps *ps, const uint32_t *idx, const float *val,
                       size_t nnz)
{
	return sparse(ps, DML__PS_STEP, idx, val, nnz, "dml_ps_push_sparse");
}

int dml_ps_pull_range(dml_ps *ps, size_t off, size_t n, float *out)
{
	dml__detail_clear();
	if (!ps || (!out && n))
		return DML_EINVAL;
	if (!ps->ops->pull)
		return unsupported(ps, "dml_ps_pull_range");
	if (off > ps->dim || n > ps->dim - off)
		return dml__fail(DML_EINVAL, "range %zu + %zu outside dimension %zu",
		                 off, n, ps->dim);
	return ps->ops->pull(ps, off, n, out);
}

int dml_ps_pull(dml_ps *ps, float *out)
{
	dml__detail_clear();
	if (ps && !ps->ops->pull)
		return unsupported(ps, "dml_ps_pull");
	return ps ? dml_ps_pull_range(ps, 0, ps->dim, out) : DML_EINVAL;
}

/* The row calls' common checks: n rows of width floats must be
 * addressable. */
static int rows_args(dml_ps *ps, const uint64_t *keys, size_t n,
                     const void *v, const char *call)
{
	if (!ps || (n && (!keys || !v)))
		return DML_EINVAL;
	if (!ps->ops->pull_rows)
		return unsupported(ps, call);
	if (n > SIZE_MAX / sizeof(float) / ps->width)
		return dml__fail(DML_EINVAL, "%s: %zu rows of %zu floats overflow",
		                 call, n, ps->width);
	return 0;
}

int dml_ps_pull_rows(dml_ps *ps, const uint64_t *keys, size_t n, float *out)
{
	dml__detail_clear();
	int rc = rows_args(ps, keys, n, out, "dml_ps_pull_rows");
	if (rc)
		return rc;
	return n ? ps->ops->pull_rows(ps, keys, n, out) : 0;
}

static int rows_apply(dml_ps *ps, int op, const uint64_t *keys, size_t n,
                      const float *v, const char *call)
{
	dml__detail_clear();
	int rc = rows_args(ps, keys, n, v, call);
	if (rc)
		return rc;
	size_t at;
	if (!dml__all_finite(v, n * ps->width, &at))
		return not_finite(v, at, call);
	return ps->ops->apply_rows(ps, op, keys, n, v);
}

int dml_ps_push_rows(dml_ps *ps, const uint64_t *keys, size_t n,
                     const float *grad)
{
	return rows_apply(ps, DML__PS_STEP, keys, n, grad, "dml_ps_push_rows");
}

int dml_ps_update_rows(dml_ps *ps, const uint64_t *keys, size_t n,
                       const float *delta)
{
	return rows_apply(ps, DML__PS_ADD, keys, n, delta, "dml_ps_update_rows");
}

int dml_ps_assign_rows(dml_ps *ps, const uint64_t *keys, size_t n,
                       const float *v)
{
	return rows_apply(ps, DML__PS_SET, keys, n, v, "dml_ps_assign_rows");
}

int dml_ps_rows(dml_ps *ps, uint64_t *count)
{
	dml__detail_clear();
	if (!ps || !count)
		return DML_EINVAL;
	if (!ps->ops->rows)
		return unsupported(ps, "dml_ps_rows");
	return ps->ops->rows(ps, count);
}

int dml_ps_updates(dml_ps *ps, uint64_t *count)
{
	dml__detail_clear();
	if (!ps || !count)
		return DML_EINVAL;
	return ps->ops->updates(ps, count);
}

uint64_t dml_ps_key(uint64_t col, uint64_t seed)
{
	if (!seed)
		return col < DML_PS_KEY_RESERVED ? col : col - 256;
	/* splitmix64's finaliser of the pair: fixed for ever (keys are
	 * stored in checkpoints and shared between machines) */
	uint64_t x = col ^ (seed * 0x9e3779b97f4a7c15ULL);
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x < DML_PS_KEY_RESERVED ? x : x - 256;
}

/* ---- clocks ------------------------------------------------------- */

/* The slowest clock of the workers not dropped (all dropped: the
 * fastest, so that nobody waits for them). */
static int64_t min_clock(const dml_ps *ps)
{
	int64_t m = INT64_MAX, top = INT64_MIN;
	for (int i = 0; i < ps->workers; i++) {
		if (ps->clock[i] > top)
			top = ps->clock[i];
		if (!ps->dropped[i] && ps->clock[i] < m)
			m = ps->clock[i];
	}
	return m == INT64_MAX ? top : m;
}

/* The slowest clock a worker at clock c waits for; INT64_MIN = none. */
static int64_t need_for(const dml_ps *ps, int64_t c)
{
	return ps->staleness < 0 ? INT64_MIN : c - ps->staleness;
}

/* The slowest live clock other than w's; INT64_MAX if none. */
static int64_t live_min_except(const dml_ps *ps, int w)
{
	int64_t live = INT64_MAX;
	for (int i = 0; i < ps->workers; i++)
		if (i != w && !ps->dropped[i] && ps->clock[i] < live)
			live = ps->clock[i];
	return live;
}

/* The clock w would have after advance(): a dropped worker rejoins at the
 * slowest live worker's clock, so that it holds nobody back. */
static int64_t advanced_clock(const dml_ps *ps, int w)
{
	int64_t c = ps->clock[w];
	if (ps->dropped[w]) {
		int64_t live = live_min_except(ps, w);
		if (live != INT64_MAX && c < live - 1)
			c = live - 1;
	}
	return c + 1;
}

/* Under cmu: whether w's clock call would have to wait, without changing
 * anything (for a timeout of 0). */
static int would_wait(const dml_ps *ps, int w)
{
	int64_t c = advanced_clock(ps, w), live = live_min_except(ps, w);
	int64_t min = live < c ? live : c;
	return min < need_for(ps, c);
}

/* Under cmu: detaches the waiters released by the slowest clock `min`
 * and wakes the local ones. */
static dml__ps_waiter *release(dml_ps *ps, int64_t min)
{
	dml__ps_waiter *done = NULL, **pp = &ps->waiters;
	while (*pp) {
		dml__ps_waiter *wt = *pp;
		if (wt->need <= min) {
			*pp = wt->next;
			wt->next = done;
			done = wt;
			ps->nwaiters--;
		} else {
			pp = &wt->next;
		}
	}
	pthread_cond_broadcast(&ps->ccv);
	return done;
}

/* Under cmu: advances w (a dropped worker rejoins at the slowest live
 * worker's clock, so it holds nobody back) and detaches the waiters now
 * released. */
static dml__ps_waiter *advance(dml_ps *ps, int w, int64_t *min)
{
	ps->clock[w] = advanced_clock(ps, w);
	ps->dropped[w] = 0;
	ps->clock_at[w] = dml__now_ms();
	*min = min_clock(ps);
	return release(ps, *min);
}

/* Under cmu: drops the slowest live workers silent for longer than
 * worker_timeout, when someone waits; returns the waiters released. */
static dml__ps_waiter *check_locked(dml_ps *ps, int64_t *min)
{
	*min = min_clock(ps);
	if (ps->worker_timeout <= 0 || (!ps->waiters && !ps->nblocked))
		return NULL;
	int64_t now = dml__now_ms();
	int any = 0;
	for (int i = 0; i < ps->workers; i++)
		if (!ps->dropped[i] && ps->clock[i] == *min &&
		    now - ps->clock_at[i] > ps->worker_timeout) {
			ps->dropped[i] = 1;
			any = 1;
		}
	if (!any)
		return NULL;
	*min = min_clock(ps);
	return release(ps, *min);
}

static void wake_all(dml__ps_waiter *wt, int64_t min)
{
	while (wt) {
		dml__ps_waiter *next = wt->next;
		dml_ps_clock_info info = {wt->clock, min, 1};
		wt->wake(wt->arg, 0, &info);
		free(wt);
		wt = next;
	}
}

void dml__ps_check_workers(dml_ps *ps)
{
	int64_t min;
	pthread_mutex_lock(&ps->cmu);
	dml__ps_waiter *done = check_locked(ps, &min);
	pthread_mutex_unlock(&ps->cmu);
	wake_all(done, min);
}

void dml__ps_drop_waiters(dml_ps *ps, int (*match)(void *arg, void *u), void *u)
{
	dml__ps_waiter *gone = NULL, **pp;
	int64_t min = 0;
	pthread_mutex_lock(&ps->cmu);
	for (pp = &ps->waiters; *pp;) {
		dml__ps_waiter *wt = *pp;
		if (match(wt->arg, u)) {
			*pp = wt->next;
			wt->next = gone;
			gone = wt;
			ps->nwaiters--;
			ps->dropped[wt->worker] = 1;
		} else {
			pp = &wt->next;
		}
	}
	dml__ps_waiter *done = gone ? (min = min_clock(ps), release(ps, min)) : NULL;
	pthread_mutex_unlock(&ps->cmu);
	while (gone) {
		dml__ps_waiter *next = gone->next;
		gone->wake(gone->arg, DML_ECONNLOST, NULL);
		free(gone);
		gone = next;
	}
	wake_all(done, min);
}

int dml__ps_clock_async(dml_ps *ps, int w, dml_ps_clock_info *info,
                        dml__ps_wake_fn wake, void *arg)
{
	if (!ps->workers || w < 0 || w >= ps->workers)
		return DML_EINVAL;
	dml__ps_waiter *mine = malloc(sizeof *mine);
	if (!mine)
		return DML_ENOMEM;
	int64_t min;
	pthread_mutex_lock(&ps->cmu);
	int mine_waiting = 0;
	for (dml__ps_waiter *wt = ps->waiters; wt; wt = wt->next)
		mine_waiting += wt->worker == w;
	if (mine_waiting >= WAITERS_PER_WORKER) {
		/* a peer pipelining clock calls: refuse, the clock stays */
		pthread_mutex_unlock(&ps->cmu);
		free(mine);
		return DML_EBUSY;
	}
	dml__ps_waiter *done = advance(ps, w, &min);
	int64_t need = need_for(ps, ps->clock[w]);
	int now = min >= need;
	info->clock = ps->clock[w];
	info->min = min;
	info->waited = 0;
	if (!now) {
		mine->need = need;
		mine->clock = ps->clock[w];
		mine->worker = w;
		mine->wake = wake;
		mine->arg = arg;
		mine->next = ps->waiters;
		ps->waiters = mine;
		ps->nwaiters++;
	}
	pthread_mutex_unlock(&ps->cmu);
	if (now)
		free(mine);
	wake_all(done, min);
	return now;
}

static void abs_deadline(struct timespec *ts, dml_duration ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

dml_duration dml__ps_clock_default(const dml_ps *ps)
{
	return ps->remote ? dml__psr_clock_timeout(ps) : ps->clock_timeout;
}

int dml_ps_advance_abi(dml_ps *ps, int worker, dml_ps_clock_info *info,
                       dml_duration timeout, int abi)
{
	dml__detail_clear();
	int rc = dml__abi_check(abi);
	if (rc)
		return rc;
	if (!ps)
		return DML_EINVAL;
	if (!ps->workers || worker < 0 || worker >= ps->workers)
		return dml__fail(DML_EINVAL, "no worker %d (the store has %d with clocks)",
		                 worker, ps->workers);
	if ((rc = dml__call_timeout(timeout, dml__ps_clock_default(ps), &timeout)))
		return rc;
	dml_ps_clock_info got;
	rc = ps->ops->advance(ps, worker, timeout, &got);
	if (!rc)
		dml__abi_out(info, &got, DML__L_PS_CLOCK_INFO, abi);
	return rc;
}

int dml__ps_local_advance(dml_ps *ps, int worker, dml_duration timeout,
                          dml_ps_clock_info *info)
{
	int rc = 0;
	struct timespec dl;
	if (timeout >= 0)
		abs_deadline(&dl, timeout);
	int64_t min;
	pthread_mutex_lock(&ps->cmu);
	if (timeout == 0 && would_wait(ps, worker)) {
		pthread_mutex_unlock(&ps->cmu);
		return dml__fail(DML_ETIMEDOUT, "timeout 0: worker %d would wait; "
		                 "its clock stays", worker);
	}
	dml__ps_waiter *done = advance(ps, worker, &min);
	int64_t need = need_for(ps, ps->clock[worker]);
	int64_t mine = ps->clock[worker];
	int waited = min < need;
	int64_t end = timeout >= 0 ? dml__now_ms() + timeout : -1;
	ps->nblocked++;
	while (min < need && !rc) {
		int e;
		if (ps->worker_timeout > 0) { /* wake now and then to drop the dead */
			int64_t step = ps->worker_timeout / 4 + 1, left = end - dml__now_ms();
			struct timespec ts;
			abs_deadline(&ts, end >= 0 && left < step ? (left > 0 ? left : 0) : step);
			e = pthread_cond_timedwait(&ps->ccv, &ps->cmu, &ts);
			if (e == ETIMEDOUT && (end < 0 || dml__now_ms() < end))
				e = 0;
			int64_t m2;
			dml__ps_waiter *more = check_locked(ps, &m2);
			while (more) { /* collect with the others, woken below */
				dml__ps_waiter *next = more->next;
				more->next = done;
				done = more;
				more = next;
			}
		} else {
			e = timeout < 0 ? pthread_cond_wait(&ps->ccv, &ps->cmu)
			                : pthread_cond_timedwait(&ps->ccv, &ps->cmu, &dl);
		}
		if (e == ETIMEDOUT)
			rc = DML_ETIMEDOUT;
		min = min_clock(ps);
	}
	ps->nblocked--;
	pthread_mutex_unlock(&ps->cmu);
	wake_all(done, min);
	if (rc)
		return dml__fail(rc, "worker %d: the slowest clock stayed below %lld "
		                 "for %lld ms; its clock stays advanced", worker,
		                 (long long)need, (long long)timeout);
	*info = (dml_ps_clock_info){mine, min, waited};
	return 0;
}

int dml_ps_clock(dml_ps *ps, int worker, dml_duration timeout,
                 dml_ps_clock_info *info)
{
	return dml_ps_advance_abi(ps, worker, info, timeout, 1);
}

int dml_ps_clocks(dml_ps *ps, int *workers, int *staleness)
{
	dml__detail_clear();
	if (!ps)
		return DML_EINVAL;
	if (workers)
		*workers = ps->workers;
	if (staleness)
		*staleness = ps->staleness;
	return 0;
}

int dml_ps_clock_get(dml_ps *ps, int worker, int64_t *clock, int64_t *min)
{
	dml__detail_clear();
	if (!ps)
		return DML_EINVAL;
	if (!ps->workers || worker < 0 || worker >= ps->workers)
		return dml__fail(DML_EINVAL, "no worker %d (the store has %d with clocks)",
		                 worker, ps->workers);
	return ps->ops->clock_get(ps, worker, clock, min);
}

int dml__ps_local_clock_get(dml_ps *ps, int worker, int64_t *clock, int64_t *min)
{
	pthread_mutex_lock(&ps->cmu);
	if (clock)
		*clock = ps->clock[worker];
	if (min)
		*min = min_clock(ps);
	pthread_mutex_unlock(&ps->cmu);
	return 0;
}

/* ---- checkpoints -------------------------------------------------- */

/* The detail of a checkpoint call that failed without saying why. */
int dml__ps_ckpt_failed(const char *path, int rc)
{
	int e = errno;
	const char *why = NULL;
	switch (rc) {
	case DML_EIO: why = e ? strerror(e) : "I/O error"; break;
	case DML_ETRUNC: why = "truncated"; break;
	case DML_ECORRUPT: why = "checksum mismatch: the file is corrupted"; break;
	case DML_EFORMAT: why = "not a checkpoint"; break;
	case DML_EVERSION: why = "a checkpoint format this library cannot read"; break;
	case DML_ENOMEM: why = "out of memory"; break;
	}
	if (rc && why && !dml_error_detail()[0])
		return dml__fail(rc, "%s: %s", path, why);
	return rc;
}

/* The meta block: little-endian fields, fixed layout (docs/checkpoint.md). */
enum { META_LEN = DML__PS_META_LEN };

void dml__ps_meta_put(const dml_ps *ps, uint64_t steps, uint64_t updates,
                      uint8_t *m)
{
	const dml_optim_opts *o = &ps->optim;
	uint8_t *p = m;
	dml__put_u64(p, ps->dim); p += 8;
	dml__put_u64(p, steps); p += 8;
	dml__put_u64(p, updates); p += 8;
	dml__put_u32(p, (uint32_t)o->kind); p += 4;
	dml__put_u32(p, (uint32_t)o->nesterov); p += 4;
	float f[6] = {o->lr, o->l2, o->momentum, o->beta1, o->beta2, o->eps};
	for (int i = 0; i < 6; i++, p += 4)
		memcpy(p, &f[i], 4);
	dml__put_u64(p, o->sched.step_size); p += 8;
	dml__put_u32(p, (uint32_t)o->sched.kind); p += 4;
	dml__put_u64(p, o->sched.total); p += 8;
	memcpy(p, &o->sched.gamma, 4); p += 4;
	memcpy(p, &o->sched.t0, 4); p += 4;
	memcpy(p, &o->sched.lr_min, 4); p += 4;
	memcpy(p, &o->l1, 4); p += 4;
	memcpy(p, &o->beta, 4);
}

int dml_ps_save(dml_ps *ps, const char *path)
{
	dml__detail_clear();
	if (!ps || !path)
		return DML_EINVAL;
	if (!ps->ops->save)
		return dml__fail(DML_EINVAL, "a remote store is saved on its server");
	return ps->ops->save(ps, path);
}

int dml_ps_load(dml_ps *ps, const char *path)
{
	dml__detail_clear();
	if (!ps || !path)
		return DML_EINVAL;
	if (!ps->ops->load)
		return dml__fail(DML_EINVAL, "a remote store is loaded on its server");
	return ps->ops->load(ps, path);
}

static int dense_save(dml_ps *ps, const char *path)
{
	int nstate = ps->s[1] ? 2 : ps->s[0] ? 1 : 0;
	size_t bytes = ps->dim * sizeof(float);
	float *copy = malloc(bytes * (size_t)(1 + nstate));
	if (!copy)
		return DML_ENOMEM;
	/* a consistent copy per stripe, then write without holding locks */
	uint64_t steps = atomic_load(&ps->steps), updates = atomic_load(&ps->updates);
	for (size_t k = 0; k < ps->nstripes; k++) {
		size_t off, n;
		dml__ps_stripe_span(ps, k, &off, &n);
		pthread_mutex_lock(&ps->stripes[k].mu);
		memcpy(copy + off, ps->w + off, n * sizeof(float));
		for (int j = 0; j < nstate; j++)
			memcpy(copy + (size_t)(j + 1) * ps->dim + off, ps->s[j] + off,
			       n * sizeof(float));
		pthread_mutex_unlock(&ps->stripes[k].mu);
	}
	/* the exactly-once table after the parameters: a push in the copy
	 * is in the table (it was recorded before it was applied) */
	uint8_t *dd;
	size_t ddlen;
	if (dml__ps_dedup_export(ps, &dd, &ddlen)) {
		free(copy);
		return DML_ENOMEM;
	}
	uint8_t meta[META_LEN];
	dml__ps_meta_put(ps, steps, updates, meta);
	dml__ckpt_sec secs[4] = {{TAG_PARAMS, copy, bytes}};
	uint32_t nsec = 1;
	for (int j = 0; j < nstate; j++)
		secs[nsec++] = (dml__ckpt_sec){TAG_STATE0 + (uint32_t)j,
		                               copy + (size_t)(j + 1) * ps->dim, bytes};
	if (dd)
		secs[nsec++] = (dml__ckpt_sec){DML__PS_TAG_DEDUP, dd, ddlen};
	errno = 0;
	int rc = dml__ckpt_save_with(path, CKPT_KIND, meta, META_LEN, secs, nsec,
	                             DML__CKPT_LEVEL_DEFAULT, &ps->ckpt);
	rc = dml__ps_ckpt_failed(path, rc);
	free(copy);
	free(dd);
	return rc;
}

static int dense_load(dml_ps *ps, const char *path)
{
	uint8_t meta[META_LEN];
	uint32_t kind, mlen;
	dml__ckpt_reader *r;
	errno = 0;
	int rc = dml__ckpt_open_with(&r, path, &kind, meta, sizeof meta, &mlen,
	                             &ps->ckpt);
	if (rc)
		return dml__ps_ckpt_failed(path, rc);
	if (kind != CKPT_KIND || (mlen != META_LEN && mlen != DML__PS_META_LEN_0_2)) {
		dml__ckpt_abort(r);
		return dml__fail(DML_EFORMAT, "%s: not a parameter-store checkpoint",
		                 path);
	}
	uint64_t dim = dml__get_u64(meta), steps = dml__get_u64(meta + 8);
	uint64_t updates = dml__get_u64(meta + 16);
	uint32_t okind = dml__get_u32(meta + 24);
	if (dim != ps->dim) {
		dml__ckpt_abort(r);
		return dml__fail(DML_EDIM, "%s: dimension %llu, the store's is %zu",
		                 path, (unsigned long long)dim, ps->dim);
	}
	if (okind != (uint32_t)ps->optim.kind) {
		dml__ckpt_abort(r);
		return dml__fail(DML_ETYPE, "%s: optimizer rule %u, the store's is %d",
		                 path, (unsigned)okind, (int)ps->optim.kind);
	}
	int nstate = ps->s[1] ? 2 : ps->s[0] ? 1 : 0;
	size_t bytes = ps->dim * sizeof(float);
	float *buf = malloc(bytes * (size_t)(1 + nstate));
	if (!buf) {
		dml__ckpt_abort(r);
		return DML_ENOMEM;
	}
	for (int j = 0; j <= nstate && !rc; j++)
		rc = dml__ckpt_read(r, TAG_PARAMS + (uint32_t)j, buf + (size_t)j * ps->dim, bytes);
	uint8_t *dd = NULL;
	size_t ddlen = 0;
	if (!rc)
		rc = dml__ps_read_dedup(r, &dd, &ddlen);
	if (rc)
		dml__ckpt_abort(r);
	else
		rc = dml__ckpt_close(r); /* verifies the CRC before anything changes */
	if (rc) {
		free(buf);
		free(dd);
		return dml__ps_ckpt_failed(path, rc);
	}
	size_t k0, k1;
	dml__ps_lock(ps, 0, ps->dim, &k0, &k1);
	memcpy(ps->w, buf, bytes);
	for (int j = 0; j < nstate; j++)
		memcpy(ps->s[j], buf + (size_t)(j + 1) * ps->dim, bytes);
	atomic_store(&ps->steps, steps);
	atomic_store(&ps->updates, updates);
	if (dd)
		dml__ps_dedup_import(ps, dd, ddlen); /* checked: cannot fail */
	dml__ps_unlock(ps, k0, k1);
	free(buf);
	free(dd);
	return 0;
}

int dml__ps_read_dedup(dml__ckpt_reader *r, uint8_t **out, size_t *len)
{
	uint32_t tag;
	uint64_t n;
	*out = NULL;
	*len = 0;
	int rc = dml__ckpt_peek(r, &tag, &n);
	if (rc == DML_ENOTFOUND)
		return 0; /* a checkpoint of a store that was not served */
	if (rc)
		return rc;
	if (tag != DML__PS_TAG_DEDUP || n > DML__PS_DEDUP_MAX_BYTES || n < 8)
		return DML_EFORMAT;
	uint8_t *p = malloc((size_t)n);
	if (!p)
		return DML_ENOMEM;
	if ((rc = dml__ckpt_read(r, DML__PS_TAG_DEDUP, p, n)) ||
	    (rc = dml__ps_dedup_valid(p, (size_t)n))) {
		free(p);
		return rc;
	}
	*out = p;
	*len = (size_t)n;
	return 0;
}

const dml__ps_ops dml__ps_dense_ops = {
	.name = "a dense store",
	.update = dense_update,
	.update_sparse = dense_update_sparse,
	.pull = dense_pull,
	.updates = dml__ps_local_updates,
	.advance = dml__ps_local_advance,
	.clock_get = dml__ps_local_clock_get,
	.save = dense_save,
	.load = dense_load,
	.free = dense_free,
};

/* ---- sharding ------------------------------------------------------ */

int dml_ps_shard_range(size_t dim, int n, int i, size_t *off, size_t *len)
{
	dml__detail_clear();
	if (n > 0 && (size_t)n > dim)
		return DML_EINVAL; /* the old rule: no empty shards */
	return dml_shard_range(dim, i, n, off, len);
}

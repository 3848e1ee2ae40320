/*
 * optim.c - optimizers (SGD, momentum, Nesterov, AdaGrad, Adam,
 * FTRL-Proximal) with L2 decay (L1 and L2 for FTRL), and learning-rate
 * schedules. See include/distml/optim.h.
 *
 * Each rule is written once, as an update of one coordinate (the *_1
 * functions). The dense loops call it over restrict pointers and the sparse
 * loops over (index, value) pairs; the choice of rule is made once per call,
 * outside the loops, so that the dense loops vectorise.
 */
#include "optim.h"

#include "abi.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

/* Dense loops first run a multiple of BLOCK iterations, then the tail:
 * gcc's -O2 cost model only vectorises a loop that needs no scalar epilogue,
 * which it can prove of the first loop. (AdaGrad's and Adam's loops also
 * need -fno-math-errno, or sqrtf is a call that may set errno.) */
#define BLOCK 16

/* Each dense loop is compiled on its own: inlined into one function, gcc
 * merges the loop bounds and loses sight of the multiple of BLOCK. */
#ifdef __GNUC__
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

static const double pi = 3.14159265358979323846;

void dml__optim_resolve(const dml_optim_opts *in, dml_optim_opts *out)
{
	dml_optim_opts o = {0};
	if (in)
		o = *in;
	if (o.lr == 0)
		o.lr = DML_OPTIM_DEFAULT_LR;
	if (o.momentum == 0)
		o.momentum = DML_OPTIM_DEFAULT_MOMENTUM;
	if (o.beta1 == 0)
		o.beta1 = DML_OPTIM_DEFAULT_BETA1;
	if (o.beta2 == 0)
		o.beta2 = DML_OPTIM_DEFAULT_BETA2;
	if (o.eps == 0)
		o.eps = DML_OPTIM_DEFAULT_EPS;
	if (o.sched.step_size == 0)
		o.sched.step_size = DML_SCHED_DEFAULT_STEP_SIZE;
	if (o.sched.gamma == 0)
		o.sched.gamma = DML_SCHED_DEFAULT_GAMMA;
	if (o.sched.t0 == 0)
		o.sched.t0 = DML_SCHED_DEFAULT_T0;
	if (o.beta == 0)
		o.beta = DML_OPTIM_DEFAULT_BETA;
	*out = o;
}

/* x is a finite number >= 0 (NaN fails every comparison). */
static int nonneg(float x)
{
	return isfinite(x) && x >= 0;
}

/* x is in [0, 1). */
static int unit(float x)
{
	return x >= 0 && x < 1;
}

int dml__optim_valid(const dml_optim_opts *in)
{
	dml_optim_opts o;
	dml__optim_resolve(in, &o);
	unsigned kind = (unsigned)o.kind, sched = (unsigned)o.sched.kind;
	if (kind > DML_OPTIM_FTRL || sched > DML_SCHED_COSINE)
		return dml__fail(DML_EINVAL, "optimizer kind %u or schedule kind %u "
		                 "unknown", kind, sched);
	if (!nonneg(o.lr) || !nonneg(o.l2) || !nonneg(o.eps) || !nonneg(o.l1) ||
	    !nonneg(o.beta))
		return dml__fail(DML_EINVAL, "optimizer lr, l2, eps, l1, beta: finite, >= 0");
	if (!unit(o.momentum) || !unit(o.beta1) || !unit(o.beta2))
		return dml__fail(DML_EINVAL, "optimizer momentum, beta1, beta2: in [0, 1)");
	if (!nonneg(o.sched.gamma) || !nonneg(o.sched.t0) ||
	    !nonneg(o.sched.lr_min))
		return dml__fail(DML_EINVAL, "schedule gamma, t0, lr_min: finite, >= 0");
	if (o.sched.kind == DML_SCHED_COSINE && o.sched.total == 0)
		return dml__fail(DML_EINVAL, "a cosine schedule needs its total steps");
	return 0;
}

int dml_optim_check_abi(const dml_optim_opts *in, int abi)
{
	dml__detail_clear();
	dml_optim_opts o;
	int rc = dml__abi_in(&o, sizeof o, in, DML__L_OPTIM_OPTS, abi);
	if (rc)
		return rc;
	return dml__optim_valid(&o);
}

int dml_optim_state_floats_abi(const dml_optim_opts *in, int abi)
{
	dml__detail_clear();
	dml_optim_opts o;
	int rc = dml__abi_in(&o, sizeof o, in, DML__L_OPTIM_OPTS, abi);
	if (rc)
		return rc;
	switch (o.kind) {
	case DML_OPTIM_SGD: return 0;
	case DML_OPTIM_MOMENTUM: return 1;
	case DML_OPTIM_ADAGRAD: return 1;
	case DML_OPTIM_ADAM: return 2;
	case DML_OPTIM_FTRL: return 2;
	default: return dml__fail(DML_EINVAL, "optimizer kind %d unknown", (int)o.kind);
	}
}

float dml_schedule_lr_abi(const dml_optim_opts *in, uint64_t t, int abi)
{
	if (abi < 1 || abi > DML_ABI)
		return NAN;
	dml_optim_opts o;
	dml__abi_in(&o, sizeof o, in, DML__L_OPTIM_OPTS, abi); /* abi checked */
	dml__optim_resolve(&o, &o);
	return dml__schedule_lr(&o, t);
}

float dml__schedule_lr(const dml_optim_opts *resolved, uint64_t t)
{
	const dml_optim_opts *op = resolved;
	const dml_schedule *s = &op->sched;
	double lr0 = op->lr, x = (double)t;
	switch (s->kind) {
	case DML_SCHED_STEP:
		return (float)(lr0 * pow(s->gamma, (double)(t / s->step_size)));
	case DML_SCHED_INVSQRT:
		return (float)(lr0 / sqrt(1.0 + x / s->t0));
	case DML_SCHED_COSINE:
		/* total 0 is invalid (dml_optim_check); treat it as annealed */
		if (t >= s->total)
			return s->lr_min;
		return (float)(s->lr_min + (lr0 - s->lr_min) *
		               (1.0 + cos(pi * x / (double)s->total)) / 2.0);
	case DML_SCHED_CONST:
	default:
		return op->lr;
	}
}

/* The rules. ADAGRAD's G and ADAM's m, v are s0 (and s1); MOMENTUM's v is
 * s0; FTRL's z and n are s0 and s1. Nesterov's variant is a rule of its
 * own. */
enum rule { R_SGD, R_MOMENTUM, R_NESTEROV, R_ADAGRAD, R_ADAM, R_FTRL, R_NONE };

static enum rule rule_of(const dml_optim_opts *o)
{
	switch (o->kind) {
	case DML_OPTIM_SGD: return R_SGD;
	case DML_OPTIM_MOMENTUM: return o->nesterov ? R_NESTEROV : R_MOMENTUM;
	case DML_OPTIM_ADAGRAD: return R_ADAGRAD;
	case DML_OPTIM_ADAM: return R_ADAM;
	case DML_OPTIM_FTRL: return R_FTRL;
	default: return R_NONE;
	}
}

/* The constants of one step, computed once and passed by value so the
 * compiler keeps them in registers across the loop. */
typedef struct coef {
	float lr, l2;
	float mu;               /* MOMENTUM */
	float eps;              /* ADAGRAD, ADAM */
	float b1, b2, nb1, nb2; /* ADAM: betas and 1 - betas */
	float c1, c2;           /* ADAM: 1 / (1 - b^t), the bias corrections */
	float l1, beta;         /* FTRL: lambda1, beta */
	float ia;               /* FTRL: 1 / alpha, or 0: take no step */
} coef;

static coef coef_make(const dml_optim_opts *o, float lr, uint64_t t)
{
	coef k = {lr, o->l2, o->momentum, o->eps, o->beta1, o->beta2,
	          1.0f - o->beta1, 1.0f - o->beta2, 1.0f, 1.0f,
	          o->l1 > 0 ? o->l1 : 0.0f, /* not -0 (above_or_zero) */
	          o->beta, 0.0f};
	/* FTRL divides by alpha: at lr 0 (a schedule can reach it) or an lr
	 * so small that 1 / lr is no float, ia stays 0 and no step is taken
	 * (step_rule; computed before dml__fp_enter, whose DAZ would read a
	 * denormal lr as 0) */
	double ia = lr > 0 ? 1.0 / (double)lr : 0.0;
	if (ia <= FLT_MAX)
		k.ia = (float)ia;
	if (o->kind == DML_OPTIM_ADAM) {
		double tt = t ? (double)t : 1.0;
		k.c1 = (float)(1.0 / (1.0 - pow(o->beta1, tt)));
		k.c2 = (float)(1.0 / (1.0 - pow(o->beta2, tt)));
	}
	return k;
}

static inline void sgd_1(coef k, float *w, float g)
{
	float ge = g + k.l2 * *w;
	*w -= k.lr * ge;
}

static inline void momentum_1(coef k, float *w, float g, float *v)
{
	float ge = g + k.l2 * *w;
	float vi = k.mu * *v + ge;
	*v = vi;
	*w -= k.lr * vi;
}

static inline void nesterov_1(coef k, float *w, float g, float *v)
{
	float ge = g + k.l2 * *w;
	float vi = k.mu * *v + ge;
	*v = vi;
	*w -= k.lr * (ge + k.mu * vi);
}

static inline void adagrad_1(coef k, float *w, float g, float *G)
{
	float ge = g + k.l2 * *w;
	float s = *G + ge * ge;
	*G = s;
	*w -= k.lr * ge / (sqrtf(s) + k.eps);
}

static inline void adam_1(coef k, float *w, float g, float *m, float *v)
{
	float ge = g + k.l2 * *w;
	float mi = k.b1 * *m + k.nb1 * ge;
	float vi = k.b2 * *v + k.nb2 * ge * ge;
	*m = mi;
	*v = vi;
	*w -= k.lr * (mi * k.c1) / (sqrtf(vi * k.c2) + k.eps);
}

/* a > l1 ? w : 0, for a = |z| (NaN keeps w) and l1 finite and >= +0,
 * compared as bit patterns: floats >= +0 order as their bits do. A float
 * compare may trap, so gcc at -O2 (-ftrapping-math) does not if-convert it
 * and the loop would not vectorise; an integer compare it does. */
static inline float above_or_zero(float w, float a, float l1)
{
	uint32_t wb, ab, lb;
	memcpy(&wb, &w, sizeof wb);
	memcpy(&ab, &a, sizeof ab);
	memcpy(&lb, &l1, sizeof lb);
	wb &= -(uint32_t)(ab > lb);
	memcpy(&w, &wb, sizeof w);
	return w;
}

/* FTRL-Proximal (McMahan et al. 2013, per coordinate), z and n the state.
 * g is used as given: l2 is lambda2 in the denominator, not decay added to
 * g. Needs k.ia > 0 (step_rule gives R_NONE otherwise). w is computed
 * first (the denominator is > 0) and |z| <= l1 then selects 0, so the
 * dense loop has no branch. */
static inline void ftrl_1(coef k, float *w, float g, float *z, float *n)
{
	float ni = *n, nn = ni + g * g, sq = sqrtf(nn);
	float sigma = (sq - sqrtf(ni)) * k.ia;
	float zi = *z + (g - sigma * *w);
	float wi = (copysignf(k.l1, zi) - zi) / ((k.beta + sq) * k.ia + k.l2);
	*z = zi;
	*n = nn;
	*w = above_or_zero(wi, fabsf(zi), k.l1); /* |z| <= l1 ? 0 : wi */
}

/* The rule of one step with constants k: the options' rule, except that
 * FTRL at ia 0 (lr 0, coef_make) takes no step at all (R_NONE). Every
 * entry point picks its rule here. */
static enum rule step_rule(const dml_optim_opts *o, coef k)
{
	enum rule r = rule_of(o);
	return r == R_FTRL && !(k.ia > 0) ? R_NONE : r;
}

/* The body of a dense loop: the rule `one` on w[i], g[i] and the state
 * arguments that follow (with a leading comma), a multiple of BLOCK first. */
#define DENSE_LOOP(one, ...)                                                   \
	size_t i = 0, nv = n & ~(size_t)(BLOCK - 1);                           \
	for (; i < nv; i++)                                                    \
		one(k, &w[i], g[i] __VA_ARGS__);                               \
	for (; i < n; i++)                                                     \
		one(k, &w[i], g[i] __VA_ARGS__);

NOINLINE static void sgd_dense(coef k, float *restrict w,
                               const float *restrict g, size_t n)
{
	DENSE_LOOP(sgd_1, )
}

NOINLINE static void momentum_dense(coef k, float *restrict w,
                                    const float *restrict g,
                                    float *restrict v, size_t n)
{
	DENSE_LOOP(momentum_1, , &v[i])
}

NOINLINE static void nesterov_dense(coef k, float *restrict w,
                                    const float *restrict g,
                                    float *restrict v, size_t n)
{
	DENSE_LOOP(nesterov_1, , &v[i])
}

NOINLINE static void adagrad_dense(coef k, float *restrict w,
                                   const float *restrict g,
                                   float *restrict G, size_t n)
{
	DENSE_LOOP(adagrad_1, , &G[i])
}

NOINLINE static void adam_dense(coef k, float *restrict w,
                                const float *restrict g, float *restrict m,
                                float *restrict v, size_t n)
{
	DENSE_LOOP(adam_1, , &m[i], &v[i])
}

NOINLINE static void ftrl_dense(coef k, float *restrict w,
                                const float *restrict g, float *restrict z,
                                float *restrict sq, size_t n)
{
	DENSE_LOOP(ftrl_1, , &z[i], &sq[i])
}

void dml__optim_apply(const dml_optim_opts *o, float lr, uint64_t t,
                      float *restrict w, const float *restrict g,
                      float *restrict s0, float *restrict s1, size_t n)
{
	coef k = coef_make(o, lr, t);
	unsigned csr = dml__fp_enter(); /* Adam's v decays into denormals */
	switch (step_rule(o, k)) {
	case R_SGD: sgd_dense(k, w, g, n); break;
	case R_MOMENTUM: momentum_dense(k, w, g, s0, n); break;
	case R_NESTEROV: nesterov_dense(k, w, g, s0, n); break;
	case R_ADAGRAD: adagrad_dense(k, w, g, s0, n); break;
	case R_ADAM: adam_dense(k, w, g, s0, s1, n); break;
	case R_FTRL: ftrl_dense(k, w, g, s0, s1, n); break;
	case R_NONE: break;
	}
	dml__fp_leave(csr);
}

void dml__optim_apply_sparse(const dml_optim_opts *o, float lr, uint64_t t,
                             float *w, const uint32_t *idx, const float *val,
                             size_t nnz, float *s0, float *s1)
{
	coef k = coef_make(o, lr, t);
	unsigned csr = dml__fp_enter();
	size_t j;
	switch (step_rule(o, k)) {
	case R_SGD:
		for (j = 0; j < nnz; j++)
			sgd_1(k, &w[idx[j]], val[j]);
		break;
	case R_MOMENTUM:
		for (j = 0; j < nnz; j++)
			momentum_1(k, &w[idx[j]], val[j], &s0[idx[j]]);
		break;
	case R_NESTEROV:
		for (j = 0; j < nnz; j++)
			nesterov_1(k, &w[idx[j]], val[j], &s0[idx[j]]);
		break;
	case R_ADAGRAD:
		for (j = 0; j < nnz; j++)
			adagrad_1(k, &w[idx[j]], val[j], &s0[idx[j]]);
		break;
	case R_ADAM:
		for (j = 0; j < nnz; j++)
			adam_1(k, &w[idx[j]], val[j], &s0[idx[j]], &s1[idx[j]]);
		break;
	case R_FTRL:
		for (j = 0; j < nnz; j++)
			ftrl_1(k, &w[idx[j]], val[j], &s0[idx[j]], &s1[idx[j]]);
		break;
	case R_NONE:
		break;
	}
	dml__fp_leave(csr);
}

void dml__optim_apply_rows(const dml_optim_opts *o, float lr, uint64_t t,
                           float *const *rows, const float *g, size_t n,
                           size_t width)
{
	coef k = coef_make(o, lr, t);
	unsigned csr = dml__fp_enter();
	enum rule r = step_rule(o, k);
	for (size_t i = 0; i < n; i++) {
		float *w = rows[i], *s0 = w + width, *s1 = w + 2 * width;
		const float *gi = g + i * width;
		for (size_t c = 0; c < width; c++)
			switch (r) {
			case R_SGD: sgd_1(k, &w[c], gi[c]); break;
			case R_MOMENTUM: momentum_1(k, &w[c], gi[c], &s0[c]); break;
			case R_NESTEROV: nesterov_1(k, &w[c], gi[c], &s0[c]); break;
			case R_ADAGRAD: adagrad_1(k, &w[c], gi[c], &s0[c]); break;
			case R_ADAM: adam_1(k, &w[c], gi[c], &s0[c], &s1[c]); break;
			case R_FTRL: ftrl_1(k, &w[c], gi[c], &s0[c], &s1[c]); break;
			case R_NONE: break;
			}
	}
	dml__fp_leave(csr);
}

/* The state vectors are `stride` floats apart: dim rounded up to BLOCK, so
 * that both start equally aligned. */
struct dml_optim {
	dml_optim_opts o; /* resolved */
	size_t dim;
	size_t stride;
	uint64_t steps;
	int nstate;
	float *state; /* nstate * stride floats, or NULL */
};

int dml__optim_nstate(const dml_optim_opts *o)
{
	switch (o->kind) {
	case DML_OPTIM_SGD: return 0;
	case DML_OPTIM_MOMENTUM: return 1;
	case DML_OPTIM_ADAGRAD: return 1;
	case DML_OPTIM_ADAM: return 2;
	case DML_OPTIM_FTRL: return 2;
	default: return 0;
	}
}

int dml_optim_new_dim_abi(dml_optim **out, size_t dim, const dml_optim_opts *in,
                          int abi)
{
	dml__detail_clear();
	dml_optim_opts o;
	int rc = dml__abi_in(&o, sizeof o, in, DML__L_OPTIM_OPTS, abi);
	if (rc)
		return rc;
	if (!out || dim == 0)
		return dml__fail(DML_EINVAL, "an optimizer for %zu parameters", dim);
	if ((rc = dml__optim_valid(&o)))
		return rc;
	dml_optim *opt = calloc(1, sizeof *opt);
	if (!opt)
		return DML_ENOMEM;
	dml__optim_resolve(&o, &opt->o);
	opt->dim = dim;
	opt->nstate = dml__optim_nstate(&opt->o);
	if (opt->nstate > 0) {
		if (dim > SIZE_MAX / sizeof(float) / 2 - BLOCK) {
			free(opt);
			return DML_ENOMEM;
		}
		opt->stride = (dim + BLOCK - 1) & ~(size_t)(BLOCK - 1);
		opt->state = calloc((size_t)opt->nstate * opt->stride, sizeof(float));
		if (!opt->state) {
			free(opt);
			return DML_ENOMEM;
		}
	}
	*out = opt;
	return 0;
}

int dml_optim_new(dml_optim **out, const dml_optim_opts *o, size_t dim)
{
	return dml_optim_new_dim_abi(out, dim, o, 1);
}

void dml_optim_step(dml_optim *opt, float *w, const float *g)
{
	if (!opt || !w || !g)
		return;
	float lr = dml__schedule_lr(&opt->o, opt->steps);
	dml__optim_apply(&opt->o, lr, opt->steps + 1, w, g,
	                 dml_optim_state(opt, 0), dml_optim_state(opt, 1),
	                 opt->dim);
	opt->steps++;
}

int dml_optim_step_sparse(dml_optim *opt, float *w, const uint32_t *idx,
                          const float *val, size_t nnz)
{
	dml__detail_clear();
	if (!opt || !w || (nnz && (!idx || !val)))
		return DML_EINVAL;
	for (size_t j = 0; j < nnz; j++)
		if (idx[j] >= opt->dim)
			return dml__fail(DML_EINVAL, "index %u (entry %zu) outside "
			                 "dimension %zu", (unsigned)idx[j], j, opt->dim);
	float lr = dml__schedule_lr(&opt->o, opt->steps);
	dml__optim_apply_sparse(&opt->o, lr, opt->steps + 1, w, idx, val, nnz,
	                        dml_optim_state(opt, 0),
	                        dml_optim_state(opt, 1));
	opt->steps++;
	return 0;
}

uint64_t dml_optim_steps(const dml_optim *opt)
{
	return opt ? opt->steps : 0;
}

const dml_optim_opts *dml_optim_options(const dml_optim *opt)
{
	return opt ? &opt->o : NULL;
}

float *dml_optim_state(dml_optim *opt, int k)
{
	if (!opt || k < 0 || k >= opt->nstate)
		return NULL;
	return opt->state + (size_t)k * opt->stride;
}

void dml_optim_set_steps(dml_optim *opt, uint64_t t)
{
	if (opt)
		opt->steps = t;
}

void dml_optim_reset(dml_optim *opt)
{
	if (!opt)
		return;
	if (opt->state)
		memset(opt->state, 0,
		       (size_t)opt->nstate * opt->stride * sizeof(float));
	opt->steps = 0;
}

void dml_optim_free(dml_optim *opt)
{
	if (!opt)
		return;
	free(opt->state);
	free(opt);
}

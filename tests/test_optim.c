/* test_optim.c - optimizers and schedules: every rule against steps worked
 * out by hand from the formulas in distml/optim.h, defaults, option checks,
 * schedules, sparse steps, the internal range functions, and convergence on
 * a quadratic. */
#include "testutil.h"

#include <math.h>

#include "optim.h"

/* Expected values are worked out in double; the library computes in float. */
#define assert_near(got, want)                                                 \
	assert_true(fabs((double)(got) - (double)(want)) <=                    \
	            2e-6 * (1.0 + fabs((double)(want))))

/* A small deterministic generator: values in [-1, 1). */
static float rnd(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)(*s >> 8) / (float)(1u << 23) - 1.0f;
}

static dml_optim *make(const dml_optim_opts *o, size_t dim)
{
	dml_optim *opt = NULL;
	assert_int_equal(dml_optim_new_dim(&opt, dim, o), 0);
	assert_non_null(opt);
	return opt;
}

/* ---- defaults and option checks ---- */

static void test_defaults(void **state)
{
	(void)state;
	dml_optim_opts d;
	dml__optim_resolve(NULL, &d);
	assert_int_equal(d.kind, DML_OPTIM_SGD);
	assert_true(d.lr == 0.01f && d.l2 == 0 && d.momentum == 0.9f);
	assert_true(d.nesterov == 0 && d.beta1 == 0.9f && d.beta2 == 0.999f);
	assert_true(d.eps == 1e-8f && d.l1 == 0 && d.beta == 1.0f);
	assert_int_equal(d.sched.kind, DML_SCHED_CONST);
	assert_true(d.sched.step_size == 1000 && d.sched.gamma == 0.1f);
	assert_true(d.sched.t0 == 1.0f && d.sched.total == 0 && d.sched.lr_min == 0);

	/* non-zero fields are kept; in and out may be the same */
	dml_optim_opts o = {0};
	o.kind = DML_OPTIM_ADAM;
	o.lr = 0.5f;
	o.beta2 = 0.9f;
	o.sched.gamma = 0.5f;
	dml__optim_resolve(&o, &o);
	assert_true(o.lr == 0.5f && o.beta1 == 0.9f && o.beta2 == 0.9f);
	assert_true(o.eps == 1e-8f && o.sched.gamma == 0.5f);
	assert_true(o.sched.step_size == 1000 && o.momentum == 0.9f);

	/* a zeroed struct and NULL are both plain SGD, lr 0.01 */
	dml_optim_opts z = {0};
	assert_int_equal(dml_optim_check(&z), 0);
	assert_int_equal(dml_optim_check(NULL), 0);
	assert_int_equal(dml_optim_state_floats(&z), 0);
	assert_int_equal(dml_optim_state_floats(NULL), 0);
	assert_true(dml_schedule_lr(&z, 0) == 0.01f);
	assert_true(dml_schedule_lr(NULL, 123456) == 0.01f);
	dml_optim *opt = make(&z, 1);
	const dml_optim_opts *used = dml_optim_options(opt);
	assert_non_null(used);
	assert_true(used->lr == 0.01f && used->eps == 1e-8f);
	float w = 1, g = 2;
	dml_optim_step(opt, &w, &g);
	assert_near(w, 1 - 0.01 * 2);
	dml_optim_free(opt);

	opt = make(NULL, 3);
	assert_true(dml_optim_options(opt)->lr == 0.01f);
	dml_optim_free(opt);
}

static void test_check_rejects(void **state)
{
	(void)state;
	const dml_optim_opts ok = {.kind = DML_OPTIM_ADAM, .lr = 0.1f};
	assert_int_equal(dml_optim_check(&ok), 0);
	dml_optim_opts bad[40];
	int n = 0;
	for (int i = 0; i < 40; i++)
		bad[i] = ok;
	bad[n++].lr = -0.1f;
	bad[n++].lr = NAN;
	bad[n++].lr = INFINITY;
	bad[n++].l2 = -1e-3f;
	bad[n++].l2 = NAN;
	bad[n++].beta1 = 1.0f;
	bad[n++].beta1 = -0.5f;
	bad[n++].beta2 = 1.0f;
	bad[n++].beta2 = 1.5f;
	bad[n++].beta2 = NAN;
	bad[n++].momentum = 1.0f;
	bad[n++].momentum = 2.0f;
	bad[n++].momentum = -0.1f;
	bad[n++].momentum = NAN;
	bad[n++].eps = -1e-8f;
	bad[n++].eps = INFINITY;
	bad[n++].kind = (dml_optim_kind)5;
	bad[n++].l1 = -1.0f;
	bad[n++].l1 = NAN;
	bad[n++].l1 = INFINITY;
	bad[n++].beta = -1.0f;
	bad[n++].beta = NAN;
	bad[n++].beta = INFINITY;
	bad[n++].kind = (dml_optim_kind)-1;
	bad[n++].sched.kind = (dml_sched_kind)4;
	bad[n].sched.kind = DML_SCHED_COSINE; /* total 0 */
	n++;
	bad[n++].sched.gamma = -0.5f;
	bad[n++].sched.gamma = NAN;
	bad[n++].sched.t0 = -1.0f;
	bad[n++].sched.t0 = INFINITY;
	bad[n++].sched.lr_min = -1.0f;
	bad[n++].sched.lr_min = NAN;
	dml_optim *keep = make(&ok, 1);
	for (int i = 0; i < n; i++) {
		assert_int_equal(dml_optim_check(&bad[i]), DML_EINVAL);
		dml_optim *opt = keep; /* not written on failure */
		assert_int_equal(dml_optim_new_dim(&opt, 4, &bad[i]), DML_EINVAL);
		assert_ptr_equal(opt, keep);
	}
	dml_optim *opt = keep;
	assert_int_equal(dml_optim_new_dim(&opt, 0, &ok), DML_EINVAL);
	assert_ptr_equal(opt, keep);
	assert_int_equal(dml_optim_new_dim(NULL, 4, &ok), DML_EINVAL);
	dml_optim_free(keep);

	/* fields the kind does not use are checked too; values just inside
	 * the ranges pass */
	dml_optim_opts o = {.kind = DML_OPTIM_SGD, .momentum = 1};
	assert_int_equal(dml_optim_check(&o), DML_EINVAL);
	o = ok;
	o.momentum = 0.999f;
	o.beta1 = 1e-6f;
	o.beta2 = 0.99999f;
	o.sched.kind = DML_SCHED_COSINE;
	o.sched.total = 1;
	assert_int_equal(dml_optim_check(&o), 0);

	/* unknown kinds have no state size */
	o.kind = (dml_optim_kind)5;
	assert_int_equal(dml_optim_state_floats(&o), DML_EINVAL);
}

/* ---- the rules, by hand ---- */

static void test_sgd(void **state)
{
	(void)state;
	dml_optim_opts o = {.kind = DML_OPTIM_SGD, .lr = 0.1f};
	dml_optim *opt = make(&o, 2);
	float w[2] = {1, -2}, g1[2] = {0.5f, 1}, g2[2] = {1, -1};
	dml_optim_step(opt, w, g1); /* w -= 0.1 * g */
	assert_near(w[0], 0.95);
	assert_near(w[1], -2.1);
	dml_optim_step(opt, w, g2);
	assert_near(w[0], 0.85);
	assert_near(w[1], -2.0);
	assert_true(dml_optim_steps(opt) == 2);
	assert_null(dml_optim_state(opt, 0));
	dml_optim_free(opt);

	/* with L2 0.5: g_eff = g + 0.5 w; the caller's g is not modified */
	o.l2 = 0.5f;
	opt = make(&o, 2);
	w[0] = 1;
	w[1] = -2;
	dml_optim_step(opt, w, g1); /* g_eff = {1, 0} */
	assert_near(w[0], 0.9);
	assert_near(w[1], -2.0);
	dml_optim_step(opt, w, g2); /* g_eff = {1 + 0.45, -1 - 1} */
	assert_near(w[0], 0.755);
	assert_near(w[1], -1.8);
	assert_true(g1[0] == 0.5f && g1[1] == 1 && g2[0] == 1 && g2[1] == -1);
	dml_optim_free(opt);
}

static void test_momentum(void **state)
{
	(void)state;
	dml_optim_opts o = {.kind = DML_OPTIM_MOMENTUM, .lr = 0.1f,
	                    .momentum = 0.5f};
	float gs[3] = {1, 2, -1};
	/* v = 0.5 v + g; w -= 0.1 v */
	const double plain_v[3] = {1, 2.5, 0.25};
	const double plain_w[3] = {0.9, 0.65, 0.625};
	/* same v; w -= 0.1 (g + 0.5 v) */
	const double nag_w[3] = {0.85, 0.525, 0.6125};
	for (int nesterov = 0; nesterov < 2; nesterov++) {
		o.nesterov = nesterov;
		dml_optim *opt = make(&o, 1);
		assert_int_equal(dml_optim_state_floats(&o), 1);
		float *v = dml_optim_state(opt, 0);
		assert_non_null(v);
		assert_null(dml_optim_state(opt, 1));
		float w = 1;
		for (int t = 0; t < 3; t++) {
			dml_optim_step(opt, &w, &gs[t]);
			assert_near(*v, plain_v[t]);
			assert_near(w, nesterov ? nag_w[t] : plain_w[t]);
		}
		dml_optim_free(opt);
	}

	/* L2 0.1: g_eff = g + 0.1 w */
	o.nesterov = 0;
	o.l2 = 0.1f;
	dml_optim *opt = make(&o, 1);
	float w = 1;
	dml_optim_step(opt, &w, &gs[0]); /* g_eff 1.1, v 1.1 */
	assert_near(w, 0.89);
	dml_optim_step(opt, &w, &gs[1]); /* g_eff 2.089, v 0.55 + 2.089 */
	assert_near(*dml_optim_state(opt, 0), 2.639);
	assert_near(w, 0.6261);
	dml_optim_free(opt);

	/* default mu 0.9: v = g1, then 0.9 g1 + g2 */
	o.l2 = 0;
	o.momentum = 0;
	opt = make(&o, 1);
	w = 0;
	dml_optim_step(opt, &w, &gs[0]);
	assert_near(*dml_optim_state(opt, 0), 1);
	dml_optim_step(opt, &w, &gs[1]);
	assert_near(*dml_optim_state(opt, 0), 2.9);
	assert_near(w, -0.1 - 0.29);
	dml_optim_free(opt);
}

static void test_adagrad(void **state)
{
	(void)state;
	dml_optim_opts o = {.kind = DML_OPTIM_ADAGRAD, .lr = 0.5f, .eps = 1};
	dml_optim *opt = make(&o, 1);
	float *G = dml_optim_state(opt, 0);
	assert_non_null(G);
	assert_null(dml_optim_state(opt, 1));
	float w = 2, g = 3;
	dml_optim_step(opt, &w, &g); /* G 9, w -= 0.5 * 3 / (3 + 1) */
	assert_near(*G, 9);
	assert_near(w, 1.625);
	g = 4;
	dml_optim_step(opt, &w, &g); /* G 25, w -= 0.5 * 4 / (5 + 1) */
	assert_near(*G, 25);
	assert_near(w, 1.625 - 1.0 / 3);
	dml_optim_free(opt);

	/* L2 1: g_eff = g + w */
	o.l2 = 1;
	opt = make(&o, 1);
	G = dml_optim_state(opt, 0);
	w = 2;
	g = 3;
	dml_optim_step(opt, &w, &g); /* g_eff 5, G 25, w -= 0.5 * 5 / 6 */
	assert_near(*G, 25);
	assert_near(w, 1.5833333333333333);
	g = -1;
	dml_optim_step(opt, &w, &g); /* g_eff 0.58333, G 25.34028 */
	assert_near(*G, 25.34027777777778);
	assert_near(w, 1.5349954342327496);
	dml_optim_free(opt);

	/* default eps 1e-8: the first step is lr * g / |g| */
	o.l2 = 0;
	o.eps = 0;
	opt = make(&o, 1);
	w = 0;
	g = -7;
	dml_optim_step(opt, &w, &g);
	assert_near(w, 0.5);
	dml_optim_free(opt);
}

static void test_adam(void **state)
{
	(void)state;
	/* default betas (0.9, 0.999), eps 1e-8 */
	dml_optim_opts o = {.kind = DML_OPTIM_ADAM, .lr = 0.1f};
	dml_optim *opt = make(&o, 2);
	assert_int_equal(dml_optim_state_floats(&o), 2);
	float *m = dml_optim_state(opt, 0), *v = dml_optim_state(opt, 1);
	assert_non_null(m);
	assert_non_null(v);
	assert_null(dml_optim_state(opt, 2));
	float w[2] = {1, 1}, g1[2] = {2, -0.5f}, g2[2] = {-1, -0.5f};
	/* t = 1: m = 0.1 g, v = 0.001 g^2; corrected m/(1-0.9) = g and
	 * v/(1-0.999) = g^2, so the step is lr * g / |g| */
	dml_optim_step(opt, w, g1);
	assert_near(m[0], 0.2);
	assert_near(m[1], -0.05);
	assert_near(v[0], 0.004);
	assert_near(v[1], 0.00025);
	assert_near(w[0], 0.9);
	assert_near(w[1], 1.1);
	/* t = 2: m0 = 0.18 - 0.1 = 0.08, v0 = 0.003996 + 0.001 = 0.004996;
	 * w0 -= 0.1 * (0.08 / 0.19) / (sqrt(0.004996 / 0.001999) + 1e-8).
	 * A constant gradient (coordinate 1) still moves by lr. */
	dml_optim_step(opt, w, g2);
	assert_near(m[0], 0.08);
	assert_near(v[0], 0.004996);
	assert_near(m[1], -0.095);
	assert_near(v[1], 0.00049975);
	assert_near(w[0], 0.8733662967024315);
	assert_near(w[1], 1.2);
	dml_optim_free(opt);

	/* betas 0.5, 0.75, eps 0.01, L2 0.5 */
	o = (dml_optim_opts){.kind = DML_OPTIM_ADAM, .lr = 0.1f, .l2 = 0.5f,
	                     .beta1 = 0.5f, .beta2 = 0.75f, .eps = 0.01f};
	opt = make(&o, 1);
	m = dml_optim_state(opt, 0);
	v = dml_optim_state(opt, 1);
	float x = 1, g = 1;
	/* t = 1: g_eff 1.5, m 0.75, v 0.5625, corrected 1.5 and 2.25:
	 * w = 1 - 0.1 * 1.5 / (1.5 + 0.01) */
	dml_optim_step(opt, &x, &g);
	assert_near(m[0], 0.75);
	assert_near(v[0], 0.5625);
	assert_near(x, 1 - 0.15 / 1.51);
	/* t = 2: g_eff = -2 + 0.5 w, corrections 1 / 0.75 and 1 / 0.4375 */
	g = -2;
	dml_optim_step(opt, &x, &g);
	assert_near(m[0], -0.3998344370860927);
	assert_near(v[0], 1.0222434048945221);
	assert_near(x, 0.9353119049193215);
	dml_optim_free(opt);

	/* the bias correction follows t: from zero state, a step numbered 2
	 * (after set_steps(1)) differs from a step numbered 1 */
	o.l2 = 0;
	float w1 = 1, w2 = 1;
	g = 1;
	dml_optim *a = make(&o, 1), *b = make(&o, 1);
	dml_optim_set_steps(b, 1);
	dml_optim_step(a, &w1, &g); /* m 0.5, v 0.25: 0.5/0.5 and 0.25/0.25 */
	/* w -= 0.1 * (0.5 / 0.75) / (sqrt(0.25 / 0.4375) + 0.01) */
	dml_optim_step(b, &w2, &g);
	assert_near(w1, 1 - 0.1 / 1.01);
	assert_near(w2, 0.9129597242495906);
	assert_true(dml_optim_steps(b) == 2);
	dml_optim_free(a);
	dml_optim_free(b);

	/* the same through the internal entry point, with t = 0 taken as 1 */
	dml_optim_opts r;
	dml__optim_resolve(&o, &r);
	float s0[1] = {0}, s1[1] = {0};
	w1 = 1;
	dml__optim_apply(&r, 0.1f, 0, &w1, &g, s0, s1, 1);
	assert_near(w1, 1 - 0.1 / 1.01);
	s0[0] = s1[0] = 0;
	w1 = 1;
	dml__optim_apply(&r, 0.1f, 2, &w1, &g, s0, s1, 1);
	assert_near(w1, 0.9129597242495906);
}

/* ---- schedules ---- */

static void test_schedules(void **state)
{
	(void)state;
	dml_optim_opts o = {.lr = 0.8f};
	/* CONST */
	assert_true(dml_schedule_lr(&o, 0) == 0.8f);
	assert_true(dml_schedule_lr(&o, 1000000) == 0.8f);
	assert_true(dml_schedule_lr(&o, UINT64_MAX) == 0.8f);

	/* STEP: 0.8 * 0.5^floor(t / 10) */
	o.sched = (dml_schedule){.kind = DML_SCHED_STEP, .step_size = 10,
	                         .gamma = 0.5f};
	assert_near(dml_schedule_lr(&o, 0), 0.8);
	assert_near(dml_schedule_lr(&o, 9), 0.8);
	assert_near(dml_schedule_lr(&o, 10), 0.4);
	assert_near(dml_schedule_lr(&o, 19), 0.4);
	assert_near(dml_schedule_lr(&o, 20), 0.2);
	assert_near(dml_schedule_lr(&o, 35), 0.1);
	assert_true(dml_schedule_lr(&o, UINT64_MAX) == 0); /* underflows */
	/* defaults: step_size 1000, gamma 0.1 */
	o.sched = (dml_schedule){.kind = DML_SCHED_STEP};
	assert_near(dml_schedule_lr(&o, 999), 0.8);
	assert_near(dml_schedule_lr(&o, 1000), 0.08);
	assert_near(dml_schedule_lr(&o, 2999), 0.008);

	/* INVSQRT: 0.8 / sqrt(1 + t / 2) */
	o.sched = (dml_schedule){.kind = DML_SCHED_INVSQRT, .t0 = 2};
	assert_near(dml_schedule_lr(&o, 0), 0.8);
	assert_near(dml_schedule_lr(&o, 6), 0.4);
	assert_near(dml_schedule_lr(&o, 16), 0.8 / 3);
	/* default t0 1 */
	o.sched = (dml_schedule){.kind = DML_SCHED_INVSQRT};
	assert_near(dml_schedule_lr(&o, 1), 0.8 * 0.7071067811865476);
	assert_near(dml_schedule_lr(&o, 3), 0.4);

	/* COSINE: 0.1 + 0.7 * (1 + cos(pi * min(t, 300) / 300)) / 2 */
	o.sched = (dml_schedule){.kind = DML_SCHED_COSINE, .total = 300,
	                         .lr_min = 0.1f};
	assert_near(dml_schedule_lr(&o, 0), 0.8);
	assert_near(dml_schedule_lr(&o, 100), 0.1 + 0.7 * 0.75); /* cos = 1/2 */
	assert_near(dml_schedule_lr(&o, 150), 0.45);            /* cos = 0 */
	assert_near(dml_schedule_lr(&o, 200), 0.1 + 0.7 * 0.25);
	assert_true(dml_schedule_lr(&o, 300) == 0.1f);
	assert_true(dml_schedule_lr(&o, 301) == 0.1f);
	assert_true(dml_schedule_lr(&o, UINT64_MAX) == 0.1f);
	/* strictly decreasing on the way */
	for (uint64_t t = 1; t <= 300; t++)
		assert_true(dml_schedule_lr(&o, t) < dml_schedule_lr(&o, t - 1));
	/* default lr_min 0 */
	o.sched.lr_min = 0;
	assert_near(dml_schedule_lr(&o, 150), 0.4);
	assert_true(dml_schedule_lr(&o, 1000) == 0);
	/* an (invalid) total of 0 gives lr_min, not NaN */
	o.sched.total = 0;
	assert_true(dml_schedule_lr(&o, 0) == 0);
}

/* The optimizer uses lr = schedule(t - 1) at step t. */
static void test_schedule_in_steps(void **state)
{
	(void)state;
	dml_optim_opts o = {.lr = 1};
	o.sched = (dml_schedule){.kind = DML_SCHED_STEP, .step_size = 2,
	                         .gamma = 0.5f};
	dml_optim *opt = make(&o, 1);
	const double want[6] = {-1, -2, -2.5, -3, -3.25, -3.5};
	float w = 0, g = 1;
	for (int t = 0; t < 6; t++) {
		dml_optim_step(opt, &w, &g);
		assert_near(w, want[t]);
	}
	/* set_steps moves the schedule too: lr(10) = 0.5^5 */
	dml_optim_set_steps(opt, 10);
	w = 0;
	dml_optim_step(opt, &w, &g);
	assert_near(w, -1.0 / 32);
	assert_true(dml_optim_steps(opt) == 11);
	dml_optim_free(opt);
}

/* ---- sparse steps ---- */

#define DIM 37 /* more than two vector blocks plus a tail */

static const dml_optim_opts rules[] = {
	{.kind = DML_OPTIM_SGD, .lr = 0.1f, .l2 = 0.01f},
	{.kind = DML_OPTIM_MOMENTUM, .lr = 0.1f, .l2 = 0.01f},
	{.kind = DML_OPTIM_MOMENTUM, .lr = 0.1f, .l2 = 0.01f, .nesterov = 1},
	{.kind = DML_OPTIM_ADAGRAD, .lr = 0.1f, .l2 = 0.01f},
	{.kind = DML_OPTIM_ADAM, .lr = 0.1f, .l2 = 0.01f,
	 .sched = {.kind = DML_SCHED_INVSQRT}},
	{.kind = DML_OPTIM_FTRL, .lr = 0.1f, .l2 = 0.01f, .l1 = 0.05f,
	 .beta = 0.5f, .sched = {.kind = DML_SCHED_INVSQRT}},
};
#define NRULES (sizeof rules / sizeof rules[0])

static void test_sparse_matches_dense(void **state)
{
	(void)state;
	static const uint32_t idx[] = {36, 0, 5, 17, 16, 31};
	enum { NNZ = sizeof idx / sizeof idx[0] };
	for (size_t r = 0; r < NRULES; r++) {
		dml_optim *dense = make(&rules[r], DIM);
		dml_optim *sparse = make(&rules[r], DIM);
		int ns = dml_optim_state_floats(&rules[r]);
		uint32_t seed = 7;
		float w0[DIM], wd[DIM], ws[DIM];
		for (int i = 0; i < DIM; i++)
			w0[i] = wd[i] = ws[i] = rnd(&seed);
		for (int step = 0; step < 3; step++) {
			float g[DIM] = {0}, val[NNZ], gcopy[DIM];
			for (int j = 0; j < NNZ; j++)
				g[idx[j]] = val[j] = rnd(&seed);
			memcpy(gcopy, g, sizeof g);
			dml_optim_step(dense, wd, g);
			assert_memory_equal(g, gcopy, sizeof g);
			assert_int_equal(dml_optim_step_sparse(sparse, ws, idx, val, NNZ), 0);
		}
		assert_true(dml_optim_steps(sparse) == 3);
		int touched[DIM] = {0};
		for (int j = 0; j < NNZ; j++)
			touched[idx[j]] = 1;
		for (int i = 0; i < DIM; i++) {
			if (touched[i]) {
				assert_true(ws[i] != w0[i]);
				assert_near(ws[i], wd[i]);
			} else {
				assert_true(ws[i] == w0[i]);
			}
			for (int k = 0; k < ns; k++) {
				float sd = dml_optim_state(dense, k)[i];
				float ss = dml_optim_state(sparse, k)[i];
				if (touched[i])
					assert_near(ss, sd);
				else
					assert_true(ss == 0);
			}
		}
		dml_optim_free(dense);
		dml_optim_free(sparse);
	}
}

static void test_sparse_bad_index(void **state)
{
	(void)state;
	for (size_t r = 0; r < NRULES; r++) {
		dml_optim *opt = make(&rules[r], DIM);
		int ns = dml_optim_state_floats(&rules[r]);
		float w[DIM], w0[DIM], val[3] = {1, 2, 3};
		for (int i = 0; i < DIM; i++)
			w[i] = w0[i] = (float)i;
		uint32_t idx[3] = {1, 2, 3};
		assert_int_equal(dml_optim_step_sparse(opt, w, idx, val, 3), 0);
		memcpy(w0, w, sizeof w);
		float st[2][DIM];
		for (int k = 0; k < ns; k++)
			memcpy(st[k], dml_optim_state(opt, k), sizeof st[k]);
		/* the bad index comes last: the earlier ones must not be applied */
		idx[2] = DIM;
		assert_int_equal(dml_optim_step_sparse(opt, w, idx, val, 3), DML_EINVAL);
		idx[2] = UINT32_MAX;
		assert_int_equal(dml_optim_step_sparse(opt, w, idx, val, 3), DML_EINVAL);
		assert_int_equal(dml_optim_step_sparse(opt, w, NULL, val, 3), DML_EINVAL);
		assert_int_equal(dml_optim_step_sparse(opt, w, idx, NULL, 3), DML_EINVAL);
		assert_int_equal(dml_optim_step_sparse(opt, NULL, idx, val, 3), DML_EINVAL);
		assert_int_equal(dml_optim_step_sparse(NULL, w, idx, val, 3), DML_EINVAL);
		assert_memory_equal(w, w0, sizeof w);
		for (int k = 0; k < ns; k++)
			assert_memory_equal(st[k], dml_optim_state(opt, k), sizeof st[k]);
		assert_true(dml_optim_steps(opt) == 1);
		/* nnz 0 is a step that touches nothing */
		assert_int_equal(dml_optim_step_sparse(opt, w, NULL, NULL, 0), 0);
		assert_true(dml_optim_steps(opt) == 2);
		assert_memory_equal(w, w0, sizeof w);
		dml_optim_free(opt);
	}
}

static void test_sparse_repeated(void **state)
{
	(void)state;
	/* SGD, L2 0.5: applied one after the other, not summed:
	 * g_eff 1 + 0.5 -> w 0.85; g_eff 1 + 0.425 -> w 0.7075 */
	dml_optim_opts o = {.lr = 0.1f, .l2 = 0.5f};
	dml_optim *opt = make(&o, 4);
	float w[4] = {0, 0, 1, 0};
	uint32_t idx[2] = {2, 2};
	float val[2] = {1, 1};
	assert_int_equal(dml_optim_step_sparse(opt, w, idx, val, 2), 0);
	assert_near(w[2], 0.7075);
	assert_true(w[0] == 0 && w[1] == 0 && w[3] == 0);
	assert_true(dml_optim_steps(opt) == 1);
	dml_optim_free(opt);

	/* momentum 0.5: v 1 -> w 0.9; v 0.5 + 2 -> w 0.65 */
	o = (dml_optim_opts){.kind = DML_OPTIM_MOMENTUM, .lr = 0.1f,
	                     .momentum = 0.5f};
	opt = make(&o, 4);
	w[2] = 1;
	val[1] = 2;
	assert_int_equal(dml_optim_step_sparse(opt, w, idx, val, 2), 0);
	assert_near(dml_optim_state(opt, 0)[2], 2.5);
	assert_near(w[2], 0.65);
	dml_optim_free(opt);
}

/* ---- accessors and lifetime ---- */

static void test_state_and_lifetime(void **state)
{
	(void)state;
	const int want[5] = {0, 1, 1, 2, 2};
	for (int kind = 0; kind < 5; kind++) {
		dml_optim_opts o = {.kind = (dml_optim_kind)kind};
		assert_int_equal(dml_optim_state_floats(&o), want[kind]);
		dml_optim *opt = make(&o, 5);
		for (int k = -1; k < 3; k++) {
			float *s = dml_optim_state(opt, k);
			if (k < 0 || k >= want[kind]) {
				assert_null(s);
				continue;
			}
			assert_non_null(s);
			for (int i = 0; i < 5; i++)
				assert_true(s[i] == 0);
		}
		float w[5] = {1, 2, 3, 4, 5}, g[5] = {1, -1, 2, -2, 3};
		dml_optim_step(opt, w, g);
		dml_optim_step(opt, w, g);
		assert_true(dml_optim_steps(opt) == 2);
		if (want[kind])
			assert_true(dml_optim_state(opt, 0)[0] != 0);
		/* set_steps changes only the count */
		dml_optim_set_steps(opt, 41);
		assert_true(dml_optim_steps(opt) == 41);
		if (want[kind])
			assert_true(dml_optim_state(opt, 0)[0] != 0);
		dml_optim_reset(opt);
		assert_true(dml_optim_steps(opt) == 0);
		for (int k = 0; k < want[kind]; k++)
			for (int i = 0; i < 5; i++)
				assert_true(dml_optim_state(opt, k)[i] == 0);
		/* after reset it behaves like a new one */
		dml_optim *fresh = make(&o, 5);
		float w1[5] = {1, 2, 3, 4, 5}, w2[5] = {1, 2, 3, 4, 5};
		dml_optim_step(opt, w1, g);
		dml_optim_step(fresh, w2, g);
		assert_memory_equal(w1, w2, sizeof w1);
		dml_optim_free(fresh);
		dml_optim_free(opt);
	}
	/* NULL is harmless everywhere it can be */
	dml_optim_free(NULL);
	dml_optim_reset(NULL);
	dml_optim_set_steps(NULL, 3);
	dml_optim_step(NULL, NULL, NULL);
	assert_true(dml_optim_steps(NULL) == 0);
	assert_null(dml_optim_options(NULL));
	assert_null(dml_optim_state(NULL, 0));
}

/* dml__optim_apply on a sub-range equals the whole-vector step there, and
 * so does a vector applied in pieces. */
static void test_apply_subrange(void **state)
{
	(void)state;
	enum { N = 70, LO = 13, HI = 51 };
	for (size_t r = 0; r < NRULES; r++) {
		dml_optim_opts o;
		dml__optim_resolve(&rules[r], &o);
		int ns = dml_optim_state_floats(&o);
		dml_optim *opt = make(&rules[r], N);
		uint32_t seed = 99;
		float w[N], wr[N], wp[N], w0[N];
		float sr[2][N] = {{0}}, sp[2][N] = {{0}};
		for (int i = 0; i < N; i++)
			w[i] = wr[i] = wp[i] = w0[i] = rnd(&seed);
		for (uint64_t t = 1; t <= 3; t++) {
			float g[N];
			for (int i = 0; i < N; i++)
				g[i] = rnd(&seed);
			float lr = dml_schedule_lr(&o, t - 1);
			dml_optim_step(opt, w, g);
			dml__optim_apply(&o, lr, t, wr + LO, g + LO,
			                 ns > 0 ? sr[0] + LO : NULL,
			                 ns > 1 ? sr[1] + LO : NULL, HI - LO);
			/* the whole vector in three uneven pieces */
			const size_t cut[4] = {0, 5, 38, N};
			for (int p = 0; p < 3; p++)
				dml__optim_apply(&o, lr, t, wp + cut[p], g + cut[p],
				                 ns > 0 ? sp[0] + cut[p] : NULL,
				                 ns > 1 ? sp[1] + cut[p] : NULL,
				                 cut[p + 1] - cut[p]);
		}
		for (int i = 0; i < N; i++) {
			assert_near(wp[i], w[i]);
			if (i >= LO && i < HI)
				assert_near(wr[i], w[i]);
			else
				assert_true(wr[i] == w0[i]);
			for (int k = 0; k < ns; k++) {
				float s = dml_optim_state(opt, k)[i];
				assert_near(sp[k][i], s);
				if (i >= LO && i < HI)
					assert_near(sr[k][i], s);
				else
					assert_true(sr[k][i] == 0);
			}
		}
		dml_optim_free(opt);
	}
}

/* ---- behaviour: minimising f(w) = 1/2 sum a_i (w_i - c_i)^2 ---- */

static double quad(const float *w, const float *a, const float *c, int n)
{
	double f = 0;
	for (int i = 0; i < n; i++)
		f += 0.5 * a[i] * ((double)w[i] - c[i]) * ((double)w[i] - c[i]);
	return f;
}

static void test_converges_on_quadratic(void **state)
{
	(void)state;
	enum { N = 20 };
	float a[N], c[N];
	uint32_t seed = 3;
	for (int i = 0; i < N; i++) {
		a[i] = 0.5f + 1.5f * (rnd(&seed) + 1); /* curvature in [0.5, 3.5) */
		c[i] = 10 * rnd(&seed);
	}
	const dml_optim_opts opts[] = {
		{.kind = DML_OPTIM_SGD, .lr = 0.2f}, /* < 2 / max a */
		{.kind = DML_OPTIM_MOMENTUM, .lr = 0.05f},
		{.kind = DML_OPTIM_MOMENTUM, .lr = 0.05f, .nesterov = 1},
	};
	for (size_t r = 0; r < sizeof opts / sizeof opts[0]; r++) {
		dml_optim *opt = make(&opts[r], N);
		float w[N] = {0}, g[N];
		double f0 = quad(w, a, c, N), prev = f0;
		for (int step = 0; step < 500; step++) {
			for (int i = 0; i < N; i++)
				g[i] = a[i] * (w[i] - c[i]);
			dml_optim_step(opt, w, g);
			double f = quad(w, a, c, N);
			/* plain SGD with a small step only goes down (until float
			 * rounding is all that is left) */
			if (r == 0 && prev > 1e-6 * f0)
				assert_true(f < prev);
			prev = f;
		}
		assert_true(prev < 1e-8 * f0);
		for (int i = 0; i < N; i++)
			assert_true(fabs((double)w[i] - c[i]) < 1e-3);
		dml_optim_free(opt);
	}
}

/* ---- FTRL-Proximal ---- */

/* One FTRL step in double, straight from the formula in distml/optim.h
 * (alpha 0: no step). */
static void ftrl_ref(double *w, double *z, double *n, double g, double a,
                     double beta, double l1, double l2)
{
	if (a == 0)
		return;
	double sigma = (sqrt(*n + g * g) - sqrt(*n)) / a;
	*z += g - sigma * *w;
	*n += g * g;
	double sgn = *z < 0 ? -1 : 1;
	*w = fabs(*z) <= l1 ? 0 : -(*z - sgn * l1) / ((beta + sqrt(*n)) / a + l2);
}

/* Within 1e-5, relative (an absolute floor at 1). */
#define assert_near5(got, want)                                                \
	assert_true(fabs((double)(got) - (double)(want)) <=                    \
	            1e-5 * (1.0 + fabs((double)(want))))

static void test_ftrl_by_hand(void **state)
{
	(void)state;
	dml_optim_opts o = {.kind = DML_OPTIM_FTRL, .lr = 0.5f, .l1 = 0.1f,
	                    .l2 = 0.2f};
	assert_int_equal(dml_optim_state_floats(&o), 2);
	dml_optim *opt = make(&o, 1);
	assert_true(dml_optim_options(opt)->beta == 1.0f); /* the default */
	float *z = dml_optim_state(opt, 0), *n = dml_optim_state(opt, 1);
	assert_non_null(z);
	assert_non_null(n);
	assert_null(dml_optim_state(opt, 2));
	/* g 2: sigma = 2 / 0.5 = 4, z = 2 - 4 * 0, n = 4,
	 * w = -(2 - 0.1) / ((1 + 2) / 0.5 + 0.2) = -1.9 / 6.2 */
	float w = 0, g = 2;
	dml_optim_step(opt, &w, &g);
	assert_near(*z, 2);
	assert_near(*n, 4);
	assert_near(w, -1.9 / 6.2);
	/* g -1: sigma = (sqrt 5 - 2) / 0.5, z = 2 - 1 - sigma * w, n = 5,
	 * w = -(z - 0.1) / ((1 + sqrt 5) / 0.5 + 0.2); l2 is not added to g */
	g = -1;
	dml_optim_step(opt, &w, &g);
	assert_near(*z, 1.144686824919226);
	assert_near(*n, 5);
	assert_near(w, -0.15657457101671);
	/* negative z: w = -(z + l1) / ... > 0 */
	g = -3;
	dml_optim_step(opt, &w, &g);
	double wr = -0.15657457101671, zr = 1.144686824919226, nr = 5;
	ftrl_ref(&wr, &zr, &nr, -3, 0.5, 1, 0.1, 0.2);
	assert_true(zr < -0.1 && wr > 0);
	assert_near(*z, zr);
	assert_near(w, wr);
	dml_optim_free(opt);
}

/* Dense steps against the double-precision reference: a schedule (alpha
 * changes every step), beta, L1, L2 and a non-zero start. */
static void test_ftrl_reference(void **state)
{
	(void)state;
	const dml_optim_opts o = {.kind = DML_OPTIM_FTRL, .lr = 0.3f,
	                          .l1 = 4.0f, .l2 = 0.05f, .beta = 0.5f,
	                          .sched = {.kind = DML_SCHED_INVSQRT,
	                                    .t0 = 10}};
	dml_optim *opt = make(&o, DIM);
	float w[DIM];
	double wr[DIM], zr[DIM] = {0}, nr[DIM] = {0};
	uint32_t seed = 11;
	for (int i = 0; i < DIM; i++)
		wr[i] = w[i] = rnd(&seed);
	int zeros = 0, nonzeros = 0;
	for (uint64_t t = 0; t < 60; t++) {
		float g[DIM];
		/* a bias, so that some coordinates leave the L1 ball */
		for (int i = 0; i < DIM; i++)
			g[i] = rnd(&seed) + (i % 3 == 0 ? 0.4f : 0.0f);
		double a = dml_schedule_lr(&o, t);
		dml_optim_step(opt, w, g);
		for (int i = 0; i < DIM; i++) {
			ftrl_ref(&wr[i], &zr[i], &nr[i], g[i], a, 0.5, 4.0, 0.05);
			assert_near5(w[i], wr[i]);
			assert_near5(dml_optim_state(opt, 0)[i], zr[i]);
			assert_near5(dml_optim_state(opt, 1)[i], nr[i]);
			if (t == 59) {
				zeros += wr[i] == 0;
				nonzeros += wr[i] != 0;
			}
		}
	}
	/* both branches of the closed form were taken */
	assert_true(zeros > 0 && nonzeros > 0);
	dml_optim_free(opt);
}

/* Every coordinate given once at every step, in a shuffled order: sparse
 * steps (and the keyed store's rows) equal dense ones, bit for bit. */
static void test_ftrl_sparse_equals_dense(void **state)
{
	(void)state;
	const dml_optim_opts o = {.kind = DML_OPTIM_FTRL, .lr = 0.2f,
	                          .l1 = 0.1f, .l2 = 0.01f, .beta = 2.0f,
	                          .sched = {.kind = DML_SCHED_INVSQRT}};
	dml_optim_opts r;
	dml__optim_resolve(&o, &r);
	dml_optim *dense = make(&o, DIM), *sparse = make(&o, DIM);
	float wd[DIM], ws[DIM], rows[DIM][3] = {{0}}; /* w, z, n per row */
	float *rp[DIM];
	uint32_t seed = 5, idx[DIM];
	for (int i = 0; i < DIM; i++) {
		wd[i] = ws[i] = rows[i][0] = rnd(&seed);
		rp[i] = rows[i];
	}
	for (uint64_t t = 0; t < 25; t++) {
		float g[DIM], val[DIM];
		for (int i = 0; i < DIM; i++)
			g[i] = rnd(&seed);
		for (int j = 0; j < DIM; j++) {
			idx[j] = (uint32_t)((j * 7 + t) % DIM); /* 7, 37 coprime */
			val[j] = g[idx[j]];
		}
		dml_optim_step(dense, wd, g);
		assert_int_equal(dml_optim_step_sparse(sparse, ws, idx, val, DIM), 0);
		dml__optim_apply_rows(&r, dml_schedule_lr(&o, t), t + 1, rp, g,
		                      DIM, 1);
	}
	assert_memory_equal(wd, ws, sizeof wd);
	for (int k = 0; k < 2; k++)
		assert_memory_equal(dml_optim_state(dense, k),
		                    dml_optim_state(sparse, k), sizeof wd);
	for (int i = 0; i < DIM; i++) {
		assert_true(rows[i][0] == wd[i]);
		assert_true(rows[i][1] == dml_optim_state(dense, 0)[i]);
		assert_true(rows[i][2] == dml_optim_state(dense, 1)[i]);
	}
	dml_optim_free(dense);
	dml_optim_free(sparse);
}

/* A large L1 leaves exact zeros where the gradients are small; without L1
 * (-0 passes the check and is 0) the same gradients leave none. */
static void test_ftrl_l1_zeros(void **state)
{
	(void)state;
	enum { D = 40 };
	for (int with_l1 = 1; with_l1 >= 0; with_l1--) {
		dml_optim_opts o = {.kind = DML_OPTIM_FTRL, .lr = 0.1f,
		                    .l1 = with_l1 ? 2.0f : -0.0f};
		assert_int_equal(dml_optim_check(&o), 0);
		dml_optim *opt = make(&o, D);
		float w[D];
		uint32_t seed = 17;
		for (int i = 0; i < D; i++)
			w[i] = rnd(&seed); /* the first step zeroes them */
		for (int step = 0; step < 20; step++) {
			float g[D], val[D / 2];
			uint32_t idx[D / 2];
			for (int i = 0; i < D; i++)
				g[i] = i < D / 2 ? 0.05f * rnd(&seed) : 1.0f;
			/* odd steps go through the sparse path */
			if (step % 2 == 0) {
				dml_optim_step(opt, w, g);
				continue;
			}
			for (int j = 0; j < D / 2; j++) {
				idx[j] = (uint32_t)(2 * j + (j & 1));
				val[j] = g[idx[j]];
			}
			assert_int_equal(dml_optim_step_sparse(opt, w, idx, val,
			                                       D / 2), 0);
		}
		for (int i = 0; i < D / 2; i++) {
			if (with_l1)
				assert_true(w[i] == 0.0f);
			else
				assert_true(w[i] != 0.0f);
		}
		for (int i = D / 2; i < D; i++)
			assert_true(w[i] < 0); /* large gradients get through */
		dml_optim_free(opt);
	}
}

/* lr 0 (a cosine schedule with lr_min 0, after `total` steps) would divide
 * by zero: no step is taken, through every entry point. */
static void test_ftrl_lr_zero(void **state)
{
	(void)state;
	const dml_optim_opts o = {.kind = DML_OPTIM_FTRL, .lr = 0.5f,
	                          .sched = {.kind = DML_SCHED_COSINE,
	                                    .total = 2}};
	dml_optim_opts r;
	dml__optim_resolve(&o, &r);
	dml_optim *opt = make(&o, 2);
	float w[2] = {0.5f, -0.5f}, g[2] = {1, -2};
	uint32_t idx[2] = {1, 0};
	dml_optim_step(opt, w, g); /* lr 0.5, then 0.25 */
	assert_int_equal(dml_optim_step_sparse(opt, w, idx, g, 2), 0);
	assert_true(dml_schedule_lr(&o, 2) == 0);
	float *z = dml_optim_state(opt, 0), *n = dml_optim_state(opt, 1);
	const float w0[2] = {w[0], w[1]}, z0[2] = {z[0], z[1]},
	            n0[2] = {n[0], n[1]};
	assert_true(w0[0] != 0.5f && n0[0] != 0 && n0[1] != 0);
	dml_optim_step(opt, w, g);
	assert_int_equal(dml_optim_step_sparse(opt, w, idx, g, 2), 0);
	assert_true(dml_optim_steps(opt) == 4);
	assert_memory_equal(w, w0, sizeof w);
	assert_memory_equal(z, z0, sizeof z0);
	assert_memory_equal(n, n0, sizeof n0);
	/* the internal entry points, at lr 0 and at a denormal lr (1 / lr is
	 * no float), l2 0: the denominator would be 0 */
	const float lrs[2] = {0.0f, 1e-40f};
	for (int k = 0; k < 2; k++) {
		float x = 0.5f, s0 = 0.25f, s1 = 4, gx = 1;
		float row[3] = {0.5f, 0.25f, 4}, *rp = row;
		dml__optim_apply(&r, lrs[k], 3, &x, &gx, &s0, &s1, 1);
		dml__optim_apply_sparse(&r, lrs[k], 3, &x, &idx[1], &gx, 1, &s0,
		                        &s1);
		dml__optim_apply_rows(&r, lrs[k], 3, &rp, &gx, 1, 1);
		assert_true(x == 0.5f && s0 == 0.25f && s1 == 4);
		assert_true(row[0] == 0.5f && row[1] == 0.25f && row[2] == 4);
	}
	dml_optim_free(opt);
}

/* ---- lazy sparse steps ---- */

/* Adam's lazy convention: coordinate 0 is given at steps 1 and 5 only, so
 * its w, m and v stay exactly as they are through steps 2-4, and step 5
 * applies one update from those moments, with the bias correction of the
 * global t = 5. Coordinate 1 is given at every step, so it follows the
 * dense rule. */
static void test_adam_lazy(void **state)
{
	(void)state;
	const double b1 = 0.5, b2 = 0.75, lr = 0.1, eps = 1e-8;
	dml_optim_opts o = {.kind = DML_OPTIM_ADAM, .lr = (float)lr,
	                    .beta1 = (float)b1, .beta2 = (float)b2};
	dml_optim *opt = make(&o, 2);
	float *m = dml_optim_state(opt, 0), *v = dml_optim_state(opt, 1);
	float w[2] = {1, 1};
	const float g0[2] = {0.5f, 2.0f};          /* coordinate 0, steps 1, 5 */
	const float g1[5] = {1, -0.5f, 0.25f, 2, -1}; /* coordinate 1 */
	double m1 = 0, v1 = 0, x1 = 1;               /* coordinate 1, dense */
	float keep[3] = {0};
	for (int t = 1; t <= 5; t++) {
		uint32_t idx[2] = {1, 0};
		float val[2] = {g1[t - 1], t == 1 ? g0[0] : g0[1]};
		int nnz = t == 1 || t == 5 ? 2 : 1;
		assert_int_equal(dml_optim_step_sparse(opt, w, idx, val,
		                                       (size_t)nnz), 0);
		double g = g1[t - 1];
		m1 = b1 * m1 + (1 - b1) * g;
		v1 = b2 * v1 + (1 - b2) * g * g;
		x1 -= lr * (m1 / (1 - pow(b1, t))) /
		      (sqrt(v1 / (1 - pow(b2, t))) + eps);
		assert_near(w[1], x1);
		if (t == 1) {
			keep[0] = w[0];
			keep[1] = m[0];
			keep[2] = v[0];
		} else if (t < 5) {
			/* untouched: nothing decays, bit for bit */
			assert_true(w[0] == keep[0] && m[0] == keep[1] &&
			            v[0] == keep[2]);
		}
	}
	/* coordinate 0 by hand: step 1 from zero moments at t = 1 moves w by
	 * lr (m/(1-b1) = g, v/(1-b2) = g^2) */
	double mm = (1 - b1) * 0.5, vv = (1 - b2) * 0.25, x0 = 1 - lr;
	assert_near(keep[0], x0);
	assert_near(keep[1], mm);
	assert_near(keep[2], vv);
	/* step 5: one update of the kept moments, corrected with t = 5 */
	double m5 = b1 * mm + (1 - b1) * 2, v5 = b2 * vv + (1 - b2) * 4;
	double want = x0 - lr * (m5 / (1 - pow(b1, 5))) /
	                   (sqrt(v5 / (1 - pow(b2, 5))) + eps);
	assert_near(m[0], m5);
	assert_near(v[0], v5);
	assert_near(w[0], want);
	/* the other conventions give other numbers, well outside the
	 * tolerance: the count of the coordinate's own steps (t = 2) for the
	 * correction, or moments decayed through steps 2-4 (dense steps with
	 * zero gradients) */
	double own = x0 - lr * (m5 / (1 - b1 * b1)) /
	                  (sqrt(v5 / (1 - b2 * b2)) + eps);
	double md = pow(b1, 4) * mm + (1 - b1) * 2;
	double vd = pow(b2, 4) * vv + (1 - b2) * 4;
	double decayed = x0 - lr * (md / (1 - pow(b1, 5))) /
	                      (sqrt(vd / (1 - pow(b2, 5))) + eps);
	assert_true(fabs(want - own) > 1e-3 && fabs(want - decayed) > 1e-3);
	dml_optim_free(opt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_check_rejects),
		cmocka_unit_test(test_sgd),
		cmocka_unit_test(test_momentum),
		cmocka_unit_test(test_adagrad),
		cmocka_unit_test(test_adam),
		cmocka_unit_test(test_schedules),
		cmocka_unit_test(test_schedule_in_steps),
		cmocka_unit_test(test_sparse_matches_dense),
		cmocka_unit_test(test_sparse_bad_index),
		cmocka_unit_test(test_sparse_repeated),
		cmocka_unit_test(test_state_and_lifetime),
		cmocka_unit_test(test_apply_subrange),
		cmocka_unit_test(test_converges_on_quadratic),
		cmocka_unit_test(test_ftrl_by_hand),
		cmocka_unit_test(test_ftrl_reference),
		cmocka_unit_test(test_ftrl_sparse_equals_dense),
		cmocka_unit_test(test_ftrl_l1_zeros),
		cmocka_unit_test(test_ftrl_lr_zero),
		cmocka_unit_test(test_adam_lazy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

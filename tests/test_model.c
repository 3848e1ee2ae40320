/* test_model.c - the built-in models: losses and gradients against a
 * double-precision reference written here (analytic and by central finite
 * differences), dense and sparse, with and without L2, on every kernel set
 * the CPU can run; odd sizes for the vector kernels; prediction and
 * evaluation on separable problems; bad inputs; freeing. */
#include "testutil.h"

#include <math.h>

#include "kernels.h"

#include "../examples/mlp.h"

typedef enum kind { K_LIN, K_LOG, K_SVM, K_SMX } kind;
static const char *const kind_name[] = {"linreg", "logreg", "svm", "softmax"};

/* A small deterministic generator: values in [-1, 1). */
static float rnd(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)(*s >> 8) / (float)(1u << 23) - 1.0f;
}

static void make_model(dml_model *m, kind kd, size_t d, size_t k, float l2)
{
	int rc = kd == K_LIN ? dml_model_init_linreg(m, d, l2)
	       : kd == K_LOG ? dml_model_init_logreg(m, d, l2)
	       : kd == K_SVM ? dml_model_init_svm(m, d, l2)
	                     : dml_model_init_softmax(m, d, (int)k, l2);
	assert_int_equal(rc, 0);
}

/* Outputs per row: k for softmax, else 1. */
static size_t outs(kind kd, size_t k) { return kd == K_SMX ? k : 1; }

/* A batch with its own storage: dense x, and the same rows in CSR with
 * the zeros left out and indptr starting at 3 (not 0). */
typedef struct data {
	size_t n, d;
	float *x, *y, *val;
	uint64_t *indptr;
	uint32_t *idx;
	dml_batch dense, sparse;
} data;

static void data_make(data *t, size_t n, size_t d, kind kd, size_t k,
                      uint32_t seed)
{
	t->n = n;
	t->d = d;
	t->x = calloc(n * d + 1, sizeof(float));
	t->y = calloc(n + 1, sizeof(float));
	t->val = calloc(n * d + 4, sizeof(float));
	t->idx = calloc(n * d + 4, sizeof(uint32_t));
	t->indptr = calloc(n + 1, sizeof(uint64_t));
	assert_true(t->x && t->y && t->val && t->idx && t->indptr);
	uint64_t p = 3;
	for (size_t i = 0; i < n; i++) {
		t->indptr[i] = p;
		for (size_t j = 0; j < d; j++) {
			float v = rnd(&seed);
			if (v < -0.4f) /* about 30% zeros */
				v = 0;
			t->x[i * d + j] = v;
			if (v != 0) {
				t->idx[p] = (uint32_t)j;
				t->val[p++] = v;
			}
		}
		float u = (rnd(&seed) + 1) / 2; /* [0, 1) */
		if (kd == K_LIN)
			t->y[i] = 2 * rnd(&seed);
		else
			t->y[i] = (float)(size_t)(u * (float)outs(kd, k == 1 ? 2 : k) * 0.9999f);
		if (kd == K_LOG || kd == K_SVM)
			t->y[i] = u < 0.5f ? 0.0f : 1.0f;
	}
	t->indptr[n] = p;
	t->dense = (dml_batch){n, d, t->x, NULL, NULL, NULL, t->y};
	t->sparse = (dml_batch){n, d, NULL, t->indptr, t->idx, t->val, t->y};
}

static void data_free(data *t)
{
	free(t->x);
	free(t->y);
	free(t->val);
	free(t->idx);
	free(t->indptr);
}

/* Scores of row i (kout of them) in double, from the dense rows. */
static void ref_scores(const data *t, kind kd, size_t k, const double *w,
                       size_t i, double *z)
{
	size_t d = t->d, ko = outs(kd, k);
	for (size_t c = 0; c < ko; c++) {
		double s = w[ko * d + c];
		for (size_t j = 0; j < d; j++)
			s += (double)t->x[i * d + j] * w[c * d + j];
		z[c] = s;
	}
}

/* The loss of model kd in double; if g, its analytic gradient. */
static double ref_loss(const data *t, kind kd, size_t k, const double *w,
                       double l2, double *g)
{
	size_t n = t->n, d = t->d, ko = outs(kd, k), dim = ko * d + ko;
	double z[32], dz[32], loss = 0;
	if (g)
		for (size_t q = 0; q < dim; q++)
			g[q] = q < ko * d ? l2 * w[q] : 0;
	for (size_t i = 0; i < n; i++) {
		double y = t->y[i];
		ref_scores(t, kd, k, w, i, z);
		if (kd == K_LIN) {
			loss += 0.5 * (z[0] - y) * (z[0] - y);
			dz[0] = z[0] - y;
		} else if (kd == K_LOG) {
			double p = 1 / (1 + exp(-z[0]));
			loss += -(y * log(p) + (1 - y) * log(1 - p));
			dz[0] = p - y;
		} else if (kd == K_SVM) {
			double sg = y > 0.5 ? 1 : -1, mg = sg * z[0];
			loss += mg < 1 ? 1 - mg : 0;
			dz[0] = mg < 1 ? -sg : 0;
		} else {
			double mx = z[0], sum = 0;
			for (size_t c = 1; c < ko; c++)
				mx = z[c] > mx ? z[c] : mx;
			for (size_t c = 0; c < ko; c++)
				sum += exp(z[c] - mx);
			loss += mx + log(sum) - z[(size_t)y];
			for (size_t c = 0; c < ko; c++)
				dz[c] = exp(z[c] - mx) / sum - (c == (size_t)y);
		}
		if (g)
			for (size_t c = 0; c < ko; c++) {
				for (size_t j = 0; j < d; j++)
					g[c * d + j] += dz[c] * t->x[i * d + j] / (double)n;
				g[ko * d + c] += dz[c] / (double)n;
			}
	}
	if (n)
		loss /= (double)n;
	double r = 0;
	for (size_t q = 0; q < ko * d; q++)
		r += w[q] * w[q];
	return loss + 0.5 * l2 * r;
}

/* |got - want| within abs + rel * |want|. */
static void check_near(double got, double want, double abs_tol, double rel,
                       const char *what, size_t at)
{
	double err = fabs(got - want);
	if (!(err <= abs_tol + rel * fabs(want))) {
		print_error("%s[%zu]: got %.9g want %.9g (err %.3g)\n", what, at,
		            got, want, err);
		fail();
	}
}

/* The ISAs to run: every one this CPU supports. */
static int isa_next(int isa)
{
	for (isa++; isa < DML__ISA_COUNT; isa++)
		if (dml__isa_supported(isa))
			return isa;
	return -1;
}

/* Random parameters of a model; for the SVM none of the rows near the
 * hinge's kink (margin 1), where the loss has no derivative. */
static void random_w(const data *t, kind kd, size_t k, float scale,
                     uint32_t seed, float *wf, double *wd, size_t dim)
{
	for (int tries = 0;; tries++) {
		assert_true(tries < 1000);
		for (size_t q = 0; q < dim; q++) {
			wf[q] = scale * rnd(&seed);
			wd[q] = wf[q];
		}
		if (kd != K_SVM)
			return;
		int ok = 1;
		for (size_t i = 0; i < t->n && ok; i++) {
			double z;
			ref_scores(t, kd, k, wd, i, &z);
			ok = fabs((t->y[i] > 0.5f ? z : -z) - 1) > 0.05;
		}
		if (ok)
			return;
	}
}

/* ---- gradients by finite differences ---- */

static void fd_case(kind kd, size_t n, size_t d, size_t k, float l2,
                    int sparse, int isa, uint32_t seed)
{
	data t;
	data_make(&t, n, d, kd, k, seed);
	dml_model m;
	make_model(&m, kd, d, k, l2);
	assert_int_equal(dml__model_set_isa(&m, isa), 0);
	size_t dim = m.dim;
	float *wf = malloc(dim * sizeof(float)), *g = malloc(dim * sizeof(float));
	double *wd = malloc(dim * sizeof(double));
	assert_true(wf && g && wd);
	random_w(&t, kd, k, 0.8f, seed * 7 + 1, wf, wd, dim);

	double loss = -1;
	assert_int_equal(m.loss_grad(m.self, wf, sparse ? &t.sparse : &t.dense, g, &loss), 0);
	check_near(loss, ref_loss(&t, kd, k, wd, l2, NULL), 1e-5, 1e-5, "loss", 0);
	const double h = 1e-3;
	for (size_t q = 0; q < dim; q++) {
		double keep = wd[q];
		wd[q] = keep + h;
		double lp = ref_loss(&t, kd, k, wd, l2, NULL);
		wd[q] = keep - h;
		double lm = ref_loss(&t, kd, k, wd, l2, NULL);
		wd[q] = keep;
		check_near(g[q], (lp - lm) / (2 * h), 2e-4, 1e-3, kind_name[kd], q);
	}
	/* the loss alone (grad NULL) is the same */
	double loss2 = -2;
	assert_int_equal(m.loss_grad(m.self, wf, sparse ? &t.sparse : &t.dense, NULL, &loss2), 0);
	assert_true(loss2 == loss);
	free(wf);
	free(g);
	free(wd);
	dml_model_destroy(&m);
	data_free(&t);
}

static void test_gradients_fd(void **state)
{
	(void)state;
	static const size_t sizes[][3] = {{1, 1, 2}, {5, 3, 3}, {9, 8, 4}, {13, 5, 2}};
	uint32_t seed = 1;
	for (int isa = 0; isa >= 0; isa = isa_next(isa))
		for (int kd = K_LIN; kd <= K_SMX; kd++)
			for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
				for (int sparse = 0; sparse < 2; sparse++)
					for (int l = 0; l < 2; l++)
						fd_case((kind)kd, sizes[s][0], sizes[s][1], sizes[s][2],
						        l ? 0.3f : 0.0f, sparse, isa, seed++);
}

/* ---- the vector kernels against the reference, odd sizes ---- */

static void kernel_case(dml_model *m, kind kd, size_t n, size_t d, size_t k,
                        float l2, uint32_t seed)
{
	data t;
	data_make(&t, n, d, kd, k, seed);
	size_t dim = m->dim;
	float *wf = malloc(dim * sizeof(float)), *g = malloc(dim * sizeof(float));
	float *pred = malloc(n * sizeof(float));
	double *wd = malloc(dim * sizeof(double)), *gr = malloc(dim * sizeof(double));
	assert_true(wf && g && wd && gr && pred);
	random_w(&t, kd, k, 2.0f / sqrtf((float)d), seed * 3 + 5, wf, wd, dim);
	double want = ref_loss(&t, kd, k, wd, l2, gr), gmax = 0;
	for (size_t q = 0; q < dim; q++)
		gmax = fmax(gmax, fabs(gr[q]));
	for (int sparse = 0; sparse < 2; sparse++) {
		double loss;
		const dml_batch *b = sparse ? &t.sparse : &t.dense;
		assert_int_equal(m->loss_grad(m->self, wf, b, g, &loss), 0);
		check_near(loss, want, 1e-5, 1e-5, "loss", n);
		for (size_t q = 0; q < dim; q++)
			check_near(g[q], gr[q], 1e-5 * (1 + gmax), 1e-4, kind_name[kd], q);
		/* predictions: the reference's argmax / sign / score, except
		 * where the reference's scores nearly tie */
		assert_int_equal(m->predict(m->self, wf, b, pred), 0);
		for (size_t i = 0; i < n; i++) {
			double z[32];
			ref_scores(&t, kd, k, wd, i, z);
			if (kd == K_LIN) {
				check_near(pred[i], z[0], 1e-5, 1e-5, "predict", i);
			} else if (kd != K_SMX) {
				if (fabs(z[0]) > 1e-4)
					assert_true(pred[i] == (z[0] > 0 ? 1.0f : 0.0f));
			} else {
				size_t best = 0, second = 1;
				for (size_t c = 1; c < k; c++)
					if (z[c] > z[best]) {
						second = best;
						best = c;
					} else if (second == best || z[c] > z[second]) {
						second = c;
					}
				if (z[best] - z[second] > 1e-4)
					assert_true(pred[i] == (float)best);
			}
		}
	}
	free(wf);
	free(g);
	free(wd);
	free(gr);
	free(pred);
	data_free(&t);
}

static void test_kernels_odd_sizes(void **state)
{
	(void)state;
	static const size_t ns[] = {1, 3, 17, 130}, ds[] = {1, 7, 784, 33};
	static const size_t ks[] = {2, 3, 10, 17};
	uint32_t seed = 100;
	for (int isa = 0; isa >= 0; isa = isa_next(isa)) {
		for (int kd = K_LIN; kd <= K_SMX; kd++) {
			for (size_t di = 0; di < 4; di++) {
				for (size_t ki = 0; ki < (kd == K_SMX ? 4u : 1u); ki++) {
					/* one instance over every n: its scratch
					 * grows and shrinks */
					dml_model m;
					float l2 = (ki + di) % 2 ? 0.25f : 0.0f;
					make_model(&m, (kind)kd, ds[di], ks[ki], l2);
					assert_int_equal(dml__model_set_isa(&m, isa), 0);
					for (size_t ni = 0; ni < 4; ni++)
						kernel_case(&m, (kind)kd, ns[ni], ds[di], ks[ki], l2, seed++);
					kernel_case(&m, (kind)kd, 2, ds[di], ks[ki], l2, seed++);
					dml_model_destroy(&m);
				}
			}
		}
	}
}

/* The raw kernels: X W^T without a bias, with and without workspace, into
 * a wider output; A^T X without the l2 term from a wider A. */
static void test_kernels_raw(void **state)
{
	(void)state;
	const size_t n = 19, d = 37, k = 11, ld = 23;
	uint32_t seed = 9;
	float *x = malloc(n * d * 4), *w = malloc(k * d * 4), *a = malloc(k * ld * 4);
	float *out = malloc(k * ld * 4), *g = malloc(k * d * 4);
	float *ws = malloc(dml__xwt_ws(d, k) * 4);
	assert_true(x && w && a && out && g && ws);
	for (size_t i = 0; i < n * d; i++)
		x[i] = rnd(&seed);
	for (size_t i = 0; i < k * d; i++)
		w[i] = rnd(&seed);
	for (size_t i = 0; i < k * ld; i++)
		a[i] = rnd(&seed);
	for (int isa = 0; isa >= 0; isa = isa_next(isa)) {
		dml__kern kr;
		assert_int_equal(dml__kern_get(&kr, isa), 0);
		assert_int_equal(kr.isa, isa);
		for (int use_ws = 0; use_ws < 2; use_ws++) {
			for (size_t i = 0; i < k * ld; i++)
				out[i] = 7;
			/* x + 1: rows off the allocation's alignment */
			size_t ldw = d;
			const float *wa = use_ws ? dml__align_w(w, d, k, x + 1, ws, &ldw) : w;
			assert_true(ldw % 16 == 0 || !use_ws);
			kr.xwt(n - 1, d, k, x + 1, wa, ldw, NULL, out, ld);
			for (size_t c = 0; c < k; c++) {
				for (size_t i = 0; i < n - 1; i++) {
					double s = 0;
					for (size_t j = 0; j < d; j++)
						s += (double)x[1 + i * d + j] * w[c * d + j];
					check_near(out[c * ld + i], s, 1e-5, 1e-5, "xwt", c * ld + i);
				}
				for (size_t i = n - 1; i < ld; i++)
					assert_true(out[c * ld + i] == 7); /* untouched */
			}
		}
		/* rows [0, 7) with the l2 term, then rows [7, n) added, while
		 * prefetching; then without w */
		kr.atx(7, d, k, a, ld, x, w, 0.5f, g, 0, x + 7 * d, (n - 7) * d * 4);
		kr.atx(n - 7, d, k, a + 7, ld, x + 7 * d, NULL, 0.0f, g, 1, NULL, 0);
		for (int pass = 0; pass < 2; pass++) {
			for (size_t c = 0; c < k; c++)
				for (size_t j = 0; j < d; j++) {
					double s = pass ? 0 : 0.5 * w[c * d + j];
					for (size_t i = 0; i < n; i++)
						s += (double)a[c * ld + i] * x[i * d + j];
					check_near(g[c * d + j], s, 1e-5, 1e-5, "atx", c * d + j);
				}
			kr.atx(n, d, k, a, ld, x, NULL, 0.0f, g, 0, NULL, 0);
		}
		double ss = 0;
		for (size_t i = 0; i < n * d; i++)
			ss += (double)x[i] * x[i];
		check_near(kr.sumsq(x, n * d), ss, 1e-6, 1e-6, "sumsq", 0);
	}
	free(x);
	free(w);
	free(a);
	free(out);
	free(g);
	free(ws);
}

/* ---- training on separable problems; dml_model_evaluate ---- */

/* n points of 2 features in `classes` clusters (class c around a corner
 * of a triangle), labels 0..classes-1, dense and sparse copies. */
static void clusters(size_t n, int classes, float *x, float *y, uint32_t seed)
{
	static const float cx[] = {-2, 2, 0}, cy[] = {0, 0, 3};
	for (size_t i = 0; i < n; i++) {
		int c = (int)(i % (size_t)classes);
		x[2 * i] = cx[c] + 0.5f * rnd(&seed);
		x[2 * i + 1] = cy[c] + 0.5f * rnd(&seed);
		y[i] = (float)c;
	}
}

static void train_and_check(kind kd, int sparse)
{
	const size_t n = 60;
	int k = kd == K_SMX ? 3 : 2;
	float x[2 * 60], y[60];
	clusters(n, k, x, y, 42 + (uint32_t)kd);
	if (kd == K_LIN) /* an exact linear target */
		for (size_t i = 0; i < n; i++)
			y[i] = 2 * x[2 * i] - x[2 * i + 1] + 0.5f;
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_dense(&ds, n, 2, x, y), 0);
	if (sparse) { /* the same points in CSR (every entry stored) */
		uint64_t indptr[61];
		uint32_t idx[120];
		for (size_t i = 0; i <= n; i++)
			indptr[i] = 2 * i;
		for (size_t p = 0; p < 2 * n; p++)
			idx[p] = (uint32_t)(p % 2);
		dml_dataset_free(ds);
		assert_int_equal(dml_dataset_new_sparse(&ds, n, 2, indptr, idx, x, y), 0);
	}
	dml_model m;
	make_model(&m, kd, 2, (size_t)k, 0.0f);
	float w[16], g[16];
	assert_true(m.dim <= 16);
	assert_int_equal(m.init(m.self, w, 1), 0);
	for (size_t q = 0; q < m.dim; q++)
		assert_true(w[q] == 0);
	dml_batch b;
	assert_int_equal(dml_dataset_batch(ds, 0, n, &b), 0);
	double loss0 = 0, loss = 0;
	for (int step = 0; step < 400; step++) {
		assert_int_equal(m.loss_grad(m.self, w, &b, g, &loss), 0);
		if (step == 0)
			loss0 = loss;
		for (size_t q = 0; q < m.dim; q++)
			w[q] -= 0.1f * g[q];
	}
	assert_true(loss < loss0);
	double el = -1, acc = -1;
	assert_int_equal(dml_model_evaluate(&m, w, ds, &el, &acc), 0);
	assert_int_equal(m.loss_grad(m.self, w, &b, NULL, &loss), 0);
	check_near(el, loss, 1e-9, 1e-6, "evaluate loss", 0);
	if (kd == K_LIN) {
		assert_true(el < 1e-3);
		assert_true(acc == 0);
	} else {
		assert_true(acc == 1.0);
	}
	/* outputs may be NULL */
	assert_int_equal(dml_model_evaluate(&m, w, ds, NULL, NULL), 0);
	assert_int_equal(dml_model_evaluate(&m, w, ds, NULL, &acc), 0);
	dml_model_destroy(&m);
	dml_dataset_free(ds);
}

static void test_separable(void **state)
{
	(void)state;
	for (int kd = K_LIN; kd <= K_SMX; kd++)
		for (int sparse = 0; sparse < 2; sparse++)
			train_and_check((kind)kd, sparse);
}

/* dml_model_evaluate over more rows than one of its batches, against the
 * row-weighted mean of per-batch losses done by hand. */
static void test_evaluate_batches(void **state)
{
	(void)state;
	const size_t n = 700, d = 5;
	data t;
	data_make(&t, n, d, K_SMX, 4, 77);
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_dense(&ds, n, d, t.x, t.y), 0);
	dml_model m;
	make_model(&m, K_SMX, d, 4, 0.5f);
	float w[32];
	double wd[32];
	random_w(&t, K_SMX, 4, 1.0f, 5, w, wd, m.dim);
	double loss, acc;
	assert_int_equal(dml_model_evaluate(&m, w, ds, &loss, &acc), 0);
	check_near(loss, ref_loss(&t, K_SMX, 4, wd, 0.5, NULL), 1e-6, 1e-5, "loss", 0);
	float *pred = malloc(n * sizeof(float));
	assert_non_null(pred);
	assert_int_equal(m.predict(m.self, w, &t.dense, pred), 0);
	size_t hits = 0;
	for (size_t i = 0; i < n; i++)
		hits += pred[i] == t.y[i];
	assert_true(acc == (double)hits / (double)n);
	free(pred);
	dml_model_destroy(&m);
	dml_dataset_free(ds);
	data_free(&t);
}

/* ---- edges and bad inputs ---- */

static void test_empty_batch(void **state)
{
	(void)state;
	for (int kd = K_LIN; kd <= K_SMX; kd++) {
		dml_model m;
		make_model(&m, (kind)kd, 3, 3, 0.5f);
		float w[16], g[16];
		double wd[16] = {0}, r = 0;
		for (size_t q = 0; q < m.dim; q++)
			w[q] = (float)q + 1;
		size_t nw = m.dim - outs((kind)kd, 3);
		for (size_t q = 0; q < nw; q++)
			r += (double)w[q] * w[q];
		(void)wd;
		dml_batch dense = {0, 3, w, NULL, NULL, NULL, NULL};
		dml_batch sparse = {0, 3, NULL, NULL, NULL, NULL, NULL};
		uint64_t ip = 0;
		sparse.indptr = &ip;
		for (int s = 0; s < 2; s++) {
			double loss;
			assert_int_equal(m.loss_grad(m.self, w, s ? &sparse : &dense, g, &loss), 0);
			check_near(loss, 0.25 * r, 1e-9, 1e-6, "empty loss", 0);
			for (size_t q = 0; q < m.dim; q++)
				check_near(g[q], q < nw ? 0.5 * w[q] : 0, 1e-9, 1e-6, "empty grad", q);
		}
		dml_model_destroy(&m);
	}
}

static void test_bad_inputs(void **state)
{
	(void)state;
	dml_model m;
	/* constructors */
	assert_int_equal(dml_model_init_linreg(NULL, 3, 0), DML_EINVAL);
	assert_int_equal(dml_model_init_linreg(&m, 0, 0), DML_EINVAL);
	assert_int_equal(dml_model_init_logreg(&m, 3, -1), DML_EINVAL);
	assert_int_equal(dml_model_init_svm(&m, 3, NAN), DML_EINVAL);
	assert_int_equal(dml_model_init_svm(&m, 3, INFINITY), DML_EINVAL);
	assert_int_equal(dml_model_init_softmax(&m, 3, 1, 0), DML_EINVAL);
	assert_int_equal(dml_model_init_softmax(&m, 3, -4, 0), DML_EINVAL);
	assert_int_equal(dml_model_init_softmax(&m, 0, 3, 0), DML_EINVAL);
	assert_int_equal(dml_model_init_softmax(&m, SIZE_MAX / 2, 3, 0), DML_EINVAL);
	assert_int_equal(dml_model_init_softmax(&m, 3, (1 << 24) + 1, 0), DML_EINVAL);

	float x[6] = {1, 2, 3, 4, 5, 6}, w[32] = {0}, g[32], out[2];
	double loss;
	for (int kd = K_LIN; kd <= K_SMX; kd++) {
		make_model(&m, (kind)kd, 3, 3, 0.1f);
		assert_int_equal(m.dim, kd == K_SMX ? 12 : 4);
		assert_int_equal(m.features, 3);
		assert_int_equal(m.classes, kd == K_LIN ? 0 : kd == K_SMX ? 3 : 2);
		assert_int_equal(m.task, kd == K_LIN ? DML_TASK_REGRESSION : DML_TASK_CLASSIFICATION);
		float y[2] = {0, 1};
		dml_batch b = {2, 3, x, NULL, NULL, NULL, y};
		assert_int_equal(m.loss_grad(m.self, w, &b, g, &loss), 0);
		assert_int_equal(m.loss_grad(m.self, NULL, &b, g, &loss), DML_EINVAL);
		assert_int_equal(m.loss_grad(m.self, w, NULL, g, &loss), DML_EINVAL);
		assert_int_equal(m.predict(m.self, w, &b, NULL), DML_EINVAL);
		/* dimension mismatch */
		dml_batch bd = b;
		bd.dim = 2;
		assert_int_equal(m.loss_grad(m.self, w, &bd, g, &loss), DML_EDIM);
		assert_int_equal(m.predict(m.self, w, &bd, out), DML_EDIM);
		/* labels out of range (classifiers only) */
		static const float bad[] = {-1, 0.5f, 3, 2, NAN, INFINITY, 1e9f};
		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
			float yb[2] = {0, bad[i]};
			dml_batch bl = b;
			bl.y = yb;
			int want = kd == K_LIN ? 0
			         : (kd == K_SMX && bad[i] == 2) ? 0 : DML_EINVAL;
			assert_int_equal(m.loss_grad(m.self, w, &bl, g, &loss), want);
		}
		/* sparse: an index beyond dim, decreasing offsets, no labels */
		uint64_t ip[3] = {0, 1, 2};
		uint32_t idx[2] = {0, 3};
		float val[2] = {1, 1};
		dml_batch bs = {2, 3, NULL, ip, idx, val, y};
		assert_int_equal(m.loss_grad(m.self, w, &bs, g, &loss), DML_EINVAL);
		assert_int_equal(m.predict(m.self, w, &bs, out), DML_EINVAL);
		idx[1] = 2;
		assert_int_equal(m.loss_grad(m.self, w, &bs, g, &loss), 0);
		ip[1] = 3;
		assert_int_equal(m.loss_grad(m.self, w, &bs, g, &loss), DML_EINVAL);
		ip[1] = 1;
		bs.y = NULL;
		assert_int_equal(m.loss_grad(m.self, w, &bs, g, &loss), DML_EINVAL);
		bs.y = y;
		bs.indptr = NULL;
		assert_int_equal(m.loss_grad(m.self, w, &bs, g, &loss), DML_EINVAL);
		/* evaluate: dims, empty set, NULLs */
		dml_dataset *ds;
		assert_int_equal(dml_dataset_new_dense(&ds, 2, 2, x, y), 0);
		assert_int_equal(dml_model_evaluate(&m, w, ds, &loss, NULL), DML_EDIM);
		dml_dataset_free(ds);
		assert_int_equal(dml_dataset_new_dense(&ds, 0, 3, NULL, NULL), 0);
		assert_int_equal(dml_model_evaluate(&m, w, ds, &loss, NULL), DML_EINVAL);
		dml_dataset_free(ds);
		assert_int_equal(dml_model_evaluate(&m, NULL, ds, &loss, NULL), DML_EINVAL);
		assert_int_equal(dml_model_evaluate(NULL, w, ds, &loss, NULL), DML_EINVAL);
		/* a label out of range inside evaluate */
		float yb[2] = {0, 7};
		assert_int_equal(dml_dataset_new_dense(&ds, 2, 3, x, yb), 0);
		assert_int_equal(dml_model_evaluate(&m, w, ds, &loss, NULL),
		                 kd == K_LIN ? 0 : DML_EINVAL);
		dml_dataset_free(ds);
		/* the isa hook */
		assert_int_equal(dml__model_set_isa(&m, DML__ISA_COUNT), DML_EINVAL);
		assert_int_equal(dml__model_set_isa(&m, -1), DML_EINVAL);
		assert_int_equal(dml__model_set_isa(&m, DML__ISA_PORTABLE), 0);
		dml_model_destroy(&m);
	}
	/* a host model is not ours to re-target */
	dml_model host = {0};
	assert_int_equal(dml__model_set_isa(&host, DML__ISA_PORTABLE), DML_EINVAL);
	assert_int_equal(dml__model_set_isa(NULL, DML__ISA_PORTABLE), DML_EINVAL);
	assert_string_equal(dml__isa_name(DML__ISA_AVX512), "avx512");
	assert_string_equal(dml__isa_name(99), "?");
	assert_true(dml__isa_supported(dml__isa_best()));
	dml__kern kr;
	assert_int_equal(dml__kern_get(&kr, 99), DML_EINVAL);
	assert_int_equal(dml__kern_get(NULL, 0), DML_EINVAL);
}

static void test_model_free(void **state)
{
	(void)state;
	dml_model m;
	memset(&m, 0, sizeof m);
	dml_model_destroy(&m); /* zeroed: nothing to do */
	dml_model_destroy(NULL);
	assert_int_equal(dml_model_init_softmax(&m, 10, 4, 0), 0);
	dml_model_destroy(&m);
	assert_null(m.self); /* what it kept is gone, and only that */
	assert_null(m.destroy);
	assert_int_equal(m.dim, 44);
	dml_model_destroy(&m); /* twice is fine */
}

/* The models flush denormals while they run, and leave the caller's
 * floating-point control bits as they were. */
static void test_fp_environment(void **state)
{
	(void)state;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	dml_model m;
	make_model(&m, K_SMX, 3, 3, 0.1f);
	float x[6] = {1, 0, 2, 0, 0, 1}, y[2] = {0, 2}, w[12], g[12], out[2];
	for (size_t q = 0; q < 12; q++)
		w[q] = q % 3 ? 1e-40f : 0.5f; /* denormal weights */
	dml_batch b = {2, 3, x, NULL, NULL, NULL, y};
	unsigned before = _mm_getcsr();
	double loss;
	assert_int_equal(m.loss_grad(m.self, w, &b, g, &loss), 0);
	assert_int_equal(m.predict(m.self, w, &b, out), 0);
	assert_true((_mm_getcsr() & ~0x3Fu) == (before & ~0x3Fu));
	assert_true(isfinite(loss));
	/* with FTZ and DAZ set by the caller, they stay set (as far as the
	 * CPU shows them: valgrind's does not keep them) */
	_mm_setcsr(before | 0x8040u);
	unsigned set = _mm_getcsr();
	assert_int_equal(m.loss_grad(m.self, w, &b, g, &loss), 0);
	assert_true((_mm_getcsr() & ~0x3Fu) == (set & ~0x3Fu));
	_mm_setcsr(before);
	dml_model_destroy(&m);
#endif
}

/* ---- the host model of examples/mlp.h ---- */

/* The perceptron's loss in double; *minabs = the smallest |pre-activation|
 * (the ReLU's kink). */
static double mlp_ref(size_t n, size_t in, size_t hid, size_t k,
                      const float *x, const float *y, const double *w,
                      double l2, double *minabs)
{
	const double *w1 = w, *b1 = w + hid * in, *w2 = b1 + hid, *b2 = w2 + k * hid;
	double loss = 0, h[64], z[16], r = 0;
	*minabs = INFINITY;
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < hid; j++) {
			double a = b1[j];
			for (size_t q = 0; q < in; q++)
				a += (double)x[i * in + q] * w1[j * in + q];
			*minabs = fmin(*minabs, fabs(a));
			h[j] = a > 0 ? a : 0;
		}
		double mx = -INFINITY, sum = 0;
		for (size_t c = 0; c < k; c++) {
			z[c] = b2[c];
			for (size_t j = 0; j < hid; j++)
				z[c] += h[j] * w2[c * hid + j];
			mx = fmax(mx, z[c]);
		}
		for (size_t c = 0; c < k; c++)
			sum += exp(z[c] - mx);
		loss += mx + log(sum) - z[(size_t)y[i]];
	}
	for (size_t q = 0; q < hid * in; q++)
		r += w1[q] * w1[q];
	for (size_t q = 0; q < k * hid; q++)
		r += w2[q] * w2[q];
	return loss / (double)n + 0.5 * l2 * r;
}

static void mlp_case(size_t n, size_t in, size_t hid, size_t k, float l2,
                     int avx512, uint32_t seed)
{
	dml_model m;
	assert_int_equal(mlp_model(&m, in, hid, (int)k, l2), 0);
	mlp *self = m.self;
	if (avx512 && !self->avx512)
		goto done; /* not on this CPU */
	self->avx512 = avx512;
	assert_int_equal(m.dim, hid * in + hid + k * hid + k);
	size_t dim = m.dim;
	float *x = malloc(n * in * 4), *y = malloc(n * 4), *w = malloc(dim * 4), *g = malloc(dim * 4);
	double *wd = malloc(dim * sizeof(double));
	assert_true(x && y && w && g && wd);
	for (size_t q = 0; q < n * in; q++)
		x[q] = rnd(&seed);
	for (size_t i = 0; i < n; i++)
		y[i] = (float)(i % k);
	/* the seeded init, then biases moved off zero; retried until no
	 * pre-activation is near the kink */
	double minabs = 0;
	for (uint64_t s = 1; minabs < 1e-3; s++) {
		assert_true(s < 100);
		assert_int_equal(m.init(m.self, w, s), 0);
		for (size_t q = 0; q < dim; q++) {
			if (q >= hid * in && q < hid * in + hid)
				w[q] = 0.1f * rnd(&seed);
			wd[q] = w[q];
		}
		mlp_ref(n, in, hid, k, x, y, wd, l2, &minabs);
	}
	/* the same seed gives the same parameters */
	float *w2 = malloc(dim * 4);
	assert_non_null(w2);
	assert_int_equal(m.init(m.self, w2, 7), 0);
	assert_int_equal(m.init(m.self, g, 7), 0);
	assert_memory_equal(w2, g, dim * 4);
	free(w2);

	dml_batch b = {n, in, x, NULL, NULL, NULL, y};
	double loss;
	assert_int_equal(m.loss_grad(m.self, w, &b, g, &loss), 0);
	check_near(loss, mlp_ref(n, in, hid, k, x, y, wd, l2, &minabs), 1e-5, 1e-5, "mlp loss", 0);
	const double h = 1e-4;
	for (size_t q = 0; q < dim; q++) {
		double keep = wd[q], lp, lm, ma;
		wd[q] = keep + h;
		lp = mlp_ref(n, in, hid, k, x, y, wd, l2, &ma);
		wd[q] = keep - h;
		lm = mlp_ref(n, in, hid, k, x, y, wd, l2, &ma);
		wd[q] = keep;
		check_near(g[q], (lp - lm) / (2 * h), 1e-4, 1e-3, "mlp grad", q);
	}
	/* predictions are the argmax of the reference's logits: checked
	 * through evaluate's accuracy against predict's own output */
	float *pred = malloc(n * 4);
	assert_non_null(pred);
	assert_int_equal(m.predict(m.self, w, &b, pred), 0);
	for (size_t i = 0; i < n; i++)
		assert_true(pred[i] >= 0 && pred[i] < (float)k && pred[i] == (float)(int)pred[i]);
	/* bad input */
	b.dim = in + 1;
	assert_int_equal(m.loss_grad(m.self, w, &b, g, &loss), DML_EDIM);
	b.dim = in;
	y[0] = (float)k;
	assert_int_equal(m.loss_grad(m.self, w, &b, g, &loss), DML_EINVAL);
	free(pred);
	free(x);
	free(y);
	free(w);
	free(g);
	free(wd);
done:
	dml_model_destroy(&m);
}

static void test_mlp_gradient(void **state)
{
	(void)state;
	for (int avx = 0; avx < 2; avx++) {
		mlp_case(7, 37, 13, 3, 0.0f, avx, 11);  /* tails everywhere */
		mlp_case(20, 32, 20, 4, 0.1f, avx, 12); /* full blocks, aligned copy */
		mlp_case(1, 5, 3, 2, 0.05f, avx, 13);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gradients_fd),
		cmocka_unit_test(test_kernels_odd_sizes),
		cmocka_unit_test(test_kernels_raw),
		cmocka_unit_test(test_separable),
		cmocka_unit_test(test_evaluate_batches),
		cmocka_unit_test(test_empty_batch),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_model_free),
		cmocka_unit_test(test_mlp_gradient),
		cmocka_unit_test(test_fp_environment),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

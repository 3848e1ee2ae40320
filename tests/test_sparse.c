/* test_sparse.c - the keyed (sparse) path end to end: the built-in
 * models' rows_grad against loss_grad, dml_sgd_run's sparse path against
 * its dense path, the DSGD worker on a keyed store (local and remote)
 * against dml_sgd_run, and divergence reported, never success. */
#include "testutil.h"

#include <math.h>

enum { FEAT = 5000, ROWS = 3000, NNZ = 12 };

/* A sparse problem: `classes` classes, each row NNZ columns (Zipf-ish:
 * small columns more often), the label from a hidden sparse separator. */
static dml_dataset *sparse_set(size_t rows, int classes, uint64_t seed)
{
	uint64_t *indptr = malloc((rows + 1) * sizeof *indptr);
	uint32_t *idx = malloc(rows * NNZ * sizeof *idx);
	float *val = malloc(rows * NNZ * sizeof *val), *y = malloc(rows * sizeof *y);
	uint64_t s = seed;
	size_t p = 0;
	indptr[0] = 0;
	for (size_t r = 0; r < rows; r++) {
		uint32_t cols[NNZ];
		size_t n = 0;
		double score[8] = {0};
		while (n < NNZ) {
			double u = (double)(splitmix(&s) >> 11) / 9007199254740992.0;
			uint32_t c = (uint32_t)(FEAT * u * u * u);
			int dup = 0;
			for (size_t k = 0; k < n; k++)
				dup |= cols[k] == c;
			if (!dup)
				cols[n++] = c;
		}
		for (size_t a = 1; a < n; a++) /* ascending */
			for (size_t b = a; b > 0 && cols[b - 1] > cols[b]; b--) {
				uint32_t t = cols[b];
				cols[b] = cols[b - 1];
				cols[b - 1] = t;
			}
		for (size_t k = 0; k < n; k++) {
			idx[p] = cols[k];
			val[p] = 1.0f;
			score[cols[k] % (unsigned)classes] += (cols[k] % 7) - 3.0;
			p++;
		}
		int best = 0;
		for (int c = 1; c < classes; c++)
			if (score[c] > score[best])
				best = c;
		y[r] = (float)best;
		indptr[r + 1] = p;
	}
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_sparse(&ds, rows, FEAT, indptr, idx, val, y), 0);
	assert_int_equal(dml_dataset_set_classes(ds, (size_t)classes), 0);
	free(indptr);
	free(idx);
	free(val);
	free(y);
	return ds;
}

/* The model's rows_grad, on the rows gathered from a dense vector, gives
 * the dense gradient at those positions and the same loss (with l2, over
 * the rows given). */
static void test_rows_grad_matches_loss_grad(void **state)
{
	(void)state;
	for (int classes = 2; classes <= 3; classes++) {
		dml_dataset *ds = sparse_set(200, classes, 3);
		dml_model m;
		if (classes == 2)
			assert_int_equal(dml_model_init_logreg(&m, FEAT, 0.0f), 0);
		else
			assert_int_equal(dml_model_init_softmax(&m, FEAT, classes, 0.0f), 0);
		assert_int_equal(m.width, (size_t)(classes == 2 ? 1 : classes));
		assert_int_equal(m.extra_rows, 1);
		float *w = malloc(m.dim * sizeof *w), *g = malloc(m.dim * sizeof *g);
		uint64_t s = 9;
		for (size_t i = 0; i < m.dim; i++)
			w[i] = (float)((double)(splitmix(&s) >> 40) / 16777216.0 - 0.5);
		dml_batch b;
		assert_int_equal(dml_dataset_batch(ds, 10, 64, &b), 0);
		double ld, lr;
		assert_int_equal(m.loss_grad(m.self, w, &b, g, &ld), 0);
		/* local columns in first-seen order */
		uint32_t *loc = calloc(FEAT, sizeof *loc), cols[64 * NNZ];
		size_t u = 0, nnz = b.indptr[b.n] - b.indptr[0];
		uint32_t lidx[64 * NNZ];
		uint64_t lptr[65];
		for (size_t p = 0; p < nnz; p++) {
			uint32_t c = b.idx[b.indptr[0] + p];
			if (!loc[c]) {
				cols[u] = c;
				loc[c] = (uint32_t)++u;
			}
			lidx[p] = loc[c] - 1;
		}
		for (size_t i = 0; i <= b.n; i++)
			lptr[i] = b.indptr[i] - b.indptr[0];
		size_t W = m.width;
		float *rows = malloc((u + 1) * W * sizeof *rows);
		float *rg = malloc((u + 1) * W * sizeof *rg);
		for (size_t j = 0; j < u; j++)
			for (size_t c = 0; c < W; c++)
				rows[j * W + c] = w[c * FEAT + cols[j]];
		for (size_t c = 0; c < W; c++)
			rows[u * W + c] = w[W * FEAT + c];
		dml_batch lb = {b.n, u, NULL, lptr, lidx, b.val + b.indptr[0], b.y};
		assert_int_equal(m.rows_grad(m.self, rows, &lb, rg, &lr), 0);
		assert_true(fabs(ld - lr) < 1e-6 * (1 + fabs(ld)));
		for (size_t j = 0; j < u; j++)
			for (size_t c = 0; c < W; c++)
				assert_true(fabsf(rg[j * W + c] - g[c * FEAT + cols[j]]) < 1e-6f);
		for (size_t c = 0; c < W; c++)
			assert_true(fabsf(rg[u * W + c] - g[W * FEAT + c]) < 1e-6f);
		/* a dense batch is not the keyed path's */
		dml_batch dense = b;
		dense.x = w;
		assert_int_equal(m.rows_grad(m.self, rows, &dense, rg, &lr), DML_EINVAL);
		free(loc);
		free(rows);
		free(rg);
		free(w);
		free(g);
		dml_model_destroy(&m);
		dml_dataset_free(ds);
	}
}

/* With plain SGD and no L2, the sparse path takes the dense path's steps
 * (a zero gradient moves nothing); both learn. */
static void test_sgd_sparse_equals_dense(void **state)
{
	(void)state;
	dml_dataset *ds = sparse_set(ROWS, 3, 5);
	dml_model m;
	assert_int_equal(dml_model_init_softmax(&m, FEAT, 3, 0.0f), 0);
	float *a = calloc(m.dim, sizeof *a), *b = calloc(m.dim, sizeof *b);
	dml_sgd_opts o = {0};
	o.epochs = 3;
	o.batch = 32;
	o.optim.lr = 0.5f;
	o.no_shuffle = 1;
	dml_train_stats st;
	assert_int_equal(dml_sgd_run(&m, ds, a, &st, &o), 0);
	o.dense_path = 1;
	assert_int_equal(dml_sgd_run(&m, ds, b, &st, &o), 0);
	for (size_t i = 0; i < m.dim; i++)
		assert_true(fabsf(a[i] - b[i]) <= 1e-5f * (1 + fabsf(b[i])));
	double acc;
	assert_int_equal(dml_model_evaluate(&m, a, ds, NULL, &acc), 0);
	assert_true(acc > 0.8);
	free(a);
	free(b);
	dml_model_destroy(&m);
	dml_dataset_free(ds);
}

/* One DSGD worker on a keyed store takes the same steps as dml_sgd_run's
 * sparse path with the same rule (lazy AdaGrad, L2 on the rows touched),
 * locally and over RPC with two shards; dml_model_pull gives the dense
 * layout back. Bytes moved grow with the rows touched. */
static void test_dsgd_keyed_matches_sgd(void **state)
{
	(void)state;
	dml_dataset *ds = sparse_set(ROWS, 2, 7);
	dml_model m;
	assert_int_equal(dml_model_init_logreg(&m, FEAT, 1e-4f), 0);
	dml_optim_opts opt = {0};
	opt.kind = DML_OPTIM_ADAGRAD;
	opt.lr = 0.2f;
	float *ref = calloc(m.dim, sizeof *ref), *got = calloc(m.dim, sizeof *got);
	dml_sgd_opts so = {0};
	so.epochs = 2;
	so.batch = 50;
	so.optim = opt;
	so.no_shuffle = 1;
	assert_int_equal(dml_sgd_run(&m, ds, ref, NULL, &so), 0);
	for (int remote = 0; remote < 2; remote++) {
		dml_ps_opts po = {0};
		po.optim = opt;
		dml_ps *ps, *sh[2] = {NULL, NULL};
		fixture fx[2];
		dml_rpc_client *c[2];
		if (!remote) {
			assert_int_equal(dml_ps_new_keyed(&ps, 1, &po), 0);
		} else {
			for (int i = 0; i < 2; i++) {
				assert_int_equal(dml_ps_new_keyed(&sh[i], 1, &po), 0);
				assert_int_equal(dml_rpc_server_new(&fx[i].srv, NULL), 0);
				assert_int_equal(dml_ps_serve(sh[i], fx[i].srv), 0);
				assert_int_equal(dml_rpc_server_listen(fx[i].srv, "127.0.0.1:0"), 0);
				fixture_start(&fx[i], 1);
				assert_int_equal(dml_rpc_dial(&c[i], fx[i].addr, NULL), 0);
			}
			assert_int_equal(dml_ps_connect(&ps, c, 2, NULL), 0);
		}
		dml_dsgd_opts dop = {0};
		dop.epochs = 2;
		dop.batch = 50;
		dop.no_shuffle = 1;
		dml_train_stats st;
		assert_int_equal(dml_dsgd_run(ps, &m, ds, &st, &dop), 0);
		assert_int_equal(st.steps, 2 * ROWS / 50);
		assert_true(st.rows_moved > 0 && st.rows_moved < 2 * st.steps * 50 * NNZ);
		assert_int_equal(dml_model_pull(&m, ps, 0, got), 0);
		/* a step counts on every shard, touched or not: the same lr */
		for (size_t i = 0; i < m.dim; i++)
			assert_true(fabsf(got[i] - ref[i]) <= 1e-5f * (1 + fabsf(ref[i])));
		/* the wrong width or dense data is refused at once */
		dml_model smx;
		assert_int_equal(dml_model_init_softmax(&smx, FEAT, 3, 0.0f), 0);
		assert_int_equal(dml_dsgd_run(ps, &smx, ds, NULL, &dop), DML_EDIM);
		dml_model_destroy(&smx);
		dml_ps_free(ps);
		if (remote)
			for (int i = 0; i < 2; i++) {
				dml_rpc_free(c[i]);
				fixture_stop(&fx[i]);
				dml_ps_free(sh[i]);
			}
	}
	free(ref);
	free(got);
	dml_model_destroy(&m);
	dml_dataset_free(ds);
}

static int count_calls(void *user, const dml_epoch_info *info, const float *w)
{
	(void)w;
	int *n = user;
	if (!info->end_of_epoch)
		(*n)++;
	return 0;
}

/* A diverging run stops with DML_EDIVERGED and says where; it never
 * returns success with NaN parameters. Both trainers, both paths. */
static void test_divergence_reported(void **state)
{
	(void)state;
	dml_dataset *ds = sparse_set(ROWS, 2, 11);
	dml_model m;
	assert_int_equal(dml_model_init_linreg(&m, FEAT, 0.0f), 0);
	float *w = calloc(m.dim, sizeof *w);
	dml_sgd_opts o = {0};
	o.epochs = 50;
	o.batch = 16;
	o.optim.lr = 1e4f;
	for (int dense = 0; dense < 2; dense++) {
		memset(w, 0, m.dim * sizeof *w);
		o.dense_path = dense;
		dml_train_stats st;
		assert_int_equal(dml_sgd_run(&m, ds, w, &st, &o), DML_EDIVERGED);
		assert_true(st.fail_epoch >= 1 && st.fail_step >= 1);
		assert_non_null(strstr(dml_error_detail(), "epoch"));
	}
	dml_ps *ps;
	assert_int_equal(dml_ps_new_keyed(&ps, 1, &(dml_ps_opts){.optim = o.optim}), 0);
	dml_dsgd_opts d = {0};
	d.epochs = 50;
	d.batch = 16;
	dml_train_stats st;
	assert_int_equal(dml_dsgd_run(ps, &m, ds, &st, &d), DML_EDIVERGED);
	assert_true(st.fail_epoch >= 1 && st.fail_step >= 1);
	dml_ps_free(ps);
	/* the callback every N steps */
	int calls = 0;
	dml_sgd_opts q = {0};
	q.epochs = 2;
	q.batch = 100;
	q.callback_every = 7;
	q.on_epoch = count_calls;
	q.user = &calls;
	memset(w, 0, m.dim * sizeof *w);
	assert_int_equal(dml_sgd_run(&m, ds, w, NULL, &q), 0);
	assert_int_equal(calls, 8); /* steps 7, 14, ..., 56 of 60, none at an end */
	free(w);
	dml_model_destroy(&m);
	dml_dataset_free(ds);
}

/* ---- a host model on the keyed path: a factorization machine ------- */

/* Degree-2 FM for binary labels, rows [w_j, v_j1 .. v_jK] per feature and
 * one extra row (the bias): score = b + sum_j w_j x_j
 * + 1/2 sum_f ((sum_j v_jf x_j)^2 - sum_j v_jf^2 x_j^2). */
enum { FM_K = 4, FM_W = 1 + FM_K };

static int fm_rows_grad(void *self, const float *rows, const dml_batch *b,
                        float *grad, double *loss)
{
	(void)self;
	size_t u = b->dim, n = b->n;
	memset(grad, 0, (u + 1) * FM_W * sizeof *grad);
	double l = 0;
	for (size_t i = 0; i < n; i++) {
		double s = rows[u * FM_W], q[FM_K] = {0}, q2 = 0;
		for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++) {
			const float *r = rows + (size_t)b->idx[p] * FM_W;
			double x = b->val[p];
			s += r[0] * x;
			for (int f = 0; f < FM_K; f++) {
				q[f] += r[1 + f] * x;
				q2 += (double)r[1 + f] * r[1 + f] * x * x;
			}
		}
		for (int f = 0; f < FM_K; f++)
			s += 0.5 * q[f] * q[f];
		s -= 0.5 * q2;
		double y = b->y[i], pr = 1 / (1 + exp(-s));
		l += (s > 0 ? s : 0) + log1p(exp(-fabs(s))) - y * s;
		float dz = (float)((pr - y) / (double)n);
		grad[u * FM_W] += dz;
		for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++) {
			const float *r = rows + (size_t)b->idx[p] * FM_W;
			float *g = grad + (size_t)b->idx[p] * FM_W, x = b->val[p];
			g[0] += dz * x;
			for (int f = 0; f < FM_K; f++)
				g[1 + f] += dz * (float)(x * q[f] - r[1 + f] * x * x);
		}
	}
	*loss = n ? l / (double)n : 0;
	return 0;
}

static int fm_loss_grad(void *self, const float *w, const dml_batch *b,
                        float *grad, double *loss)
{
	(void)self, (void)w, (void)b, (void)grad, (void)loss;
	return DML_EINVAL; /* this host model has the keyed path only */
}

/* Labels are an interaction: 1 when a row holds two features of the same half of
 * the feature range. A linear model cannot fit that; the FM, trained by
 * the DSGD worker against a keyed store with seeded random rows, does. */
static void test_host_fm_on_keyed_store(void **state)
{
	(void)state;
	enum { FF = 200, NR = 4000 };
	uint64_t *indptr = malloc((NR + 1) * sizeof *indptr);
	uint32_t *idx = malloc(NR * 2 * sizeof *idx);
	float *val = malloc(NR * 2 * sizeof *val), *y = malloc(NR * sizeof *y);
	uint64_t s = 5;
	indptr[0] = 0;
	for (int r = 0; r < NR; r++) {
		uint32_t a = (uint32_t)(splitmix(&s) % FF), c = (uint32_t)(splitmix(&s) % FF);
		if (a == c)
			c = (c + 1) % FF;
		idx[2 * r] = a < c ? a : c;
		idx[2 * r + 1] = a < c ? c : a;
		val[2 * r] = val[2 * r + 1] = 1;
		y[r] = (float)((a < FF / 2) == (c < FF / 2));
		indptr[r + 1] = (uint64_t)(2 * r + 2);
	}
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_sparse(&ds, NR, FF, indptr, idx, val, y), 0);
	dml_model m = {0};
	m.dim = (FF + 1) * FM_W;
	m.features = FF;
	m.classes = 2;
	m.task = DML_TASK_CLASSIFICATION;
	m.loss_grad = fm_loss_grad;
	m.width = FM_W;
	m.extra_rows = 1;
	m.rows_grad = fm_rows_grad;
	dml_ps_opts po = {0};
	po.optim.kind = DML_OPTIM_ADAGRAD;
	po.optim.lr = 0.1f;
	po.row_init = DML_PS_INIT_NORMAL;
	po.init_scale = 0.1f;
	po.init_seed = 42;
	dml_ps *ps;
	assert_int_equal(dml_ps_new_keyed(&ps, FM_W, &po), 0);
	dml_dsgd_opts d = {0};
	d.epochs = 30;
	d.batch = 32;
	dml_train_stats st;
	assert_int_equal(dml_dsgd_run(ps, &m, ds, &st, &d), 0);
	assert_true(st.loss < 0.3); /* chance is log 2 = 0.69 */
	uint64_t rows;
	assert_int_equal(dml_ps_rows(ps, &rows), 0);
	assert_int_equal(rows, FF + 1);
	dml_ps_free(ps);
	dml_dataset_free(ds);
	free(indptr);
	free(idx);
	free(val);
	free(y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rows_grad_matches_loss_grad),
		cmocka_unit_test(test_sgd_sparse_equals_dense),
		cmocka_unit_test(test_dsgd_keyed_matches_sgd),
		cmocka_unit_test(test_divergence_reported),
		cmocka_unit_test(test_host_fm_on_keyed_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * model.c - the model interface's shared parts (dml_model_destroy,
 * dml_model_evaluate, batch checks, scratch) and the built-in models with
 * one output per row: linear regression, logistic regression and the
 * linear SVM. See include/distml/model.h and docs/model.md.
 *
 * Parameters: w[0..features) then the bias w[features]. A row's score is
 * z = w.x + b; the three models differ only in the loss of a score and its
 * derivative (row_loss). Dense batches go through the vector kernels
 * (kernels.h): X w for the scores, then X^T dz for the gradient; sparse
 * batches through plain loops over the stored entries.
 */
#include "kernels.h"

#include "abi.h"

#include <math.h>
#include <stdlib.h>

/* Rows per batch in dml_model_evaluate. */
#define EVAL_BATCH 256

typedef enum lin_kind { LIN_REG, LIN_LOGISTIC, LIN_SVM } lin_kind;

typedef struct lin_model {
	dml__kern kr; /* first: dml__model_head */
	lin_kind kind;
	size_t features;
	float l2;
	float *z; /* scratch: a score, then its derivative, per row */
	size_t zcap;
	float *ws; /* xwt's workspace */
	size_t wscap;
} lin_model;

/* ---- shared ---- */

int dml__scratch(float **buf, size_t *cap, size_t count)
{
	if (count <= *cap)
		return 0;
	if (count > SIZE_MAX / sizeof(float))
		return DML_ENOMEM;
	float *p = realloc(*buf, count * sizeof(float));
	if (!p)
		return DML_ENOMEM;
	*buf = p;
	*cap = count;
	return 0;
}

const float *dml__xwt_w(float **ws, size_t *cap, const float *w, size_t d,
                        size_t k, const float *x, size_t n, size_t *ldw)
{
	size_t need = dml__xwt_ws(d, k);
	*ldw = d;
	/* the copy costs a pass over W: worth it from a few rows on */
	if (n < 4 || !need || dml__scratch(ws, cap, need))
		return w; /* the kernels do without, more slowly */
	return dml__align_w(w, d, k, x, *ws, ldw);
}

int dml__model_check_batch(const dml_batch *b, size_t features, int classes)
{
	if (!b || (b->n && !b->y))
		return DML_EINVAL;
	if (b->dim != features)
		return DML_EDIM;
	if (b->n && !b->x) {
		if (!b->indptr || (b->indptr[b->n] != b->indptr[0] && (!b->idx || !b->val)))
			return DML_EINVAL;
		/* a batch may come from a peer: trust no index */
		for (size_t i = 0; i < b->n; i++)
			if (b->indptr[i + 1] < b->indptr[i])
				return DML_EINVAL;
		for (uint64_t p = b->indptr[0]; p < b->indptr[b->n]; p++)
			if (b->idx[p] >= features)
				return DML_EINVAL;
	}
	if (classes > 0) {
		for (size_t i = 0; i < b->n; i++) {
			float y = b->y[i];
			if (!(y >= 0 && y < (float)classes) || (float)(int)y != y)
				return DML_EINVAL;
		}
	}
	return 0;
}

void dml_model_destroy(dml_model *m)
{
	if (!m)
		return;
	if (m->destroy && m->self)
		m->destroy(m->self);
	m->self = NULL;
	m->destroy = NULL;
}

void dml_model_free(dml_model *m)
{
	dml_model_destroy(m);
	if (m)
		memset(m, 0, sizeof *m);
}

int dml_model_evaluate_abi(dml_model *m_in, const float *w,
                           const dml_dataset *ds, double *loss, double *accuracy,
                           int abi)
{
	dml__detail_clear();
	dml_model mm;
	int rc = dml__abi_in(&mm, sizeof mm, m_in, DML__L_MODEL, abi);
	if (rc)
		return rc;
	const dml_model *m = &mm;
	if (!m_in || !m->loss_grad || !w || !ds)
		return DML_EINVAL;
	size_t n = dml_dataset_rows(ds);
	int want_acc = accuracy && m->task == DML_TASK_CLASSIFICATION;
	if (n == 0 || (want_acc && !m->predict))
		return dml__fail(DML_EINVAL, "evaluate: %s", n ? "the model has no "
		                 "predict" : "the data set has no rows");
	if (dml_dataset_dim(ds) != m->features)
		return dml__fail(DML_EDIM, "evaluate: %zu features, the model takes %zu",
		                 dml_dataset_dim(ds), m->features);
	float pred[EVAL_BATCH];
	double lsum = 0;
	size_t hits = 0;
	for (size_t s = 0; s < n; s += EVAL_BATCH) {
		dml_batch b;
		if ((rc = dml_dataset_batch(ds, s, EVAL_BATCH, &b)))
			return rc;
		if (loss) {
			double l = 0;
			rc = m->loss_grad(m->self, w, &b, NULL, &l);
			if (rc)
				return rc;
			lsum += l * (double)b.n;
		}
		if (want_acc) {
			rc = m->predict(m->self, w, &b, pred);
			if (rc)
				return rc;
			for (size_t i = 0; i < b.n; i++)
				hits += pred[i] == b.y[i];
		}
	}
	if (loss)
		*loss = lsum / (double)n;
	if (accuracy)
		*accuracy = want_acc ? (double)hits / (double)n : 0;
	return 0;
}

/* ---- the linear models ---- */

static void lin_destroy(void *self)
{
	lin_model *s = self;
	free(s->z);
	free(s->ws);
	free(s);
}

int dml__model_set_isa(dml_model *m, int isa)
{
	if (!m || !m->self ||
	    (m->destroy != lin_destroy && m->destroy != dml__softmax_destroy))
		return DML_EINVAL;
	return dml__kern_get(&((dml__model_head *)m->self)->kr, isa);
}

static int lin_init(void *self, float *w, uint64_t seed)
{
	lin_model *s = self;
	(void)seed;
	if (!w)
		return DML_EINVAL;
	memset(w, 0, (s->features + 1) * sizeof(float));
	return 0;
}

/* The loss of score z for label y, and in *dz its derivative. */
static double row_loss(lin_kind kind, float z, float y, float *dz)
{
	switch (kind) {
	case LIN_REG: {
		double r = (double)z - y;
		*dz = (float)r;
		return 0.5 * r * r;
	}
	case LIN_LOGISTIC: {
		/* log(1 + e^z) - y z, without overflow */
		double zd = z, sp = (zd > 0 ? zd : 0) + log1p(exp(-fabs(zd)));
		double p = zd >= 0 ? 1 / (1 + exp(-zd)) : exp(zd) / (1 + exp(zd));
		*dz = (float)(p - y);
		return sp - y * zd;
	}
	default: { /* SVM: labels 0/1 are -1/+1 */
		double sgn = y > 0.5f ? 1 : -1, m = sgn * z;
		*dz = m < 1 ? (float)-sgn : 0.0f;
		return m < 1 ? 1 - m : 0;
	}
	}
}

/* z[i] = w.x_i + b for sparse rows. */
static void sparse_scores(const dml_batch *b, const float *w, size_t d,
                          float *z)
{
	for (size_t i = 0; i < b->n; i++) {
		float s = w[d];
		for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++)
			s += b->val[p] * w[b->idx[p]];
		z[i] = s;
	}
}

/* The batch's mean loss from the scores in s->z, which become
 * dloss/dz / n (for the gradient); *gb their sum (the bias's gradient). */
static double scores_to_dz(lin_model *s, const dml_batch *b, float *gb)
{
	size_t n = b->n;
	double l = 0;
	float inv = n ? 1.0f / (float)n : 0.0f;
	*gb = 0;
	for (size_t i = 0; i < n; i++) {
		float dz;
		l += row_loss(s->kind, s->z[i], b->y[i], &dz);
		s->z[i] = dz * inv;
		*gb += s->z[i];
	}
	return n ? l / (double)n : l;
}

/* grad[col] += z[row] * x[row, col] over a CSR batch's non-zeros. */
static void scatter_csr(const dml_batch *b, const float *z, float *grad)
{
	for (size_t i = 0; i < b->n; i++)
		for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++)
			grad[b->idx[p]] += z[i] * b->val[p];
}

static int lin_loss_grad_(lin_model *s, const float *w, const dml_batch *b,
                          float *grad, double *loss)
{
	size_t d = s->features;
	if (!w)
		return DML_EINVAL;
	int rc = dml__model_check_batch(b, d, s->kind == LIN_REG ? 0 : 2);
	if (rc)
		return rc;
	size_t n = b->n;
	if ((rc = dml__scratch(&s->z, &s->zcap, n ? n : 1)))
		return rc;
	if (b->x) {
		size_t ldw;
		const float *wx = dml__xwt_w(&s->ws, &s->wscap, w, d, 1, b->x, n, &ldw);
		s->kr.xwt(n, d, 1, b->x, wx, ldw, w + d, s->z, n);
	} else if (n) {
		sparse_scores(b, w, d, s->z);
	}
	/* the scores become dloss/dz / n, for the gradient */
	float gb;
	double l = scores_to_dz(s, b, &gb);
	if (s->l2 != 0)
		l += 0.5 * s->l2 * s->kr.sumsq(w, d);
	if (grad) {
		const float *wl = s->l2 != 0 ? w : NULL;
		if (b->x && n) {
			s->kr.atx(n, d, 1, s->z, n, b->x, wl, s->l2, grad, 0, NULL, 0);
		} else {
			for (size_t j = 0; j < d; j++)
				grad[j] = wl ? s->l2 * w[j] : 0.0f;
			scatter_csr(b, s->z, grad);
		}
		grad[d] = gb;
	}
	if (loss)
		*loss = l;
	return 0;
}

/* The keyed path: rows[0..u) the features' weights, rows[u] the bias. */
static int lin_rows_grad_(lin_model *s, const float *rows, const dml_batch *b,
                          float *grad, double *loss)
{
	if (!rows || !b || b->x || !b->indptr)
		return DML_EINVAL;
	size_t u = b->dim, n = b->n;
	int rc = dml__model_check_batch(b, u, s->kind == LIN_REG ? 0 : 2);
	if (rc || (rc = dml__scratch(&s->z, &s->zcap, n ? n : 1)))
		return rc;
	sparse_scores(b, rows, u, s->z);
	float gb;
	double l = scores_to_dz(s, b, &gb);
	double sq = 0;
	for (size_t j = 0; j < u; j++)
		sq += (double)rows[j] * rows[j];
	l += 0.5 * s->l2 * sq;
	if (grad) {
		for (size_t j = 0; j < u; j++)
			grad[j] = s->l2 * rows[j];
		scatter_csr(b, s->z, grad);
		grad[u] = gb;
	}
	if (loss)
		*loss = l;
	return 0;
}

static int lin_rows_grad(void *self, const float *rows, const dml_batch *b,
                         float *grad, double *loss)
{
	unsigned fp = dml__fp_enter();
	int rc = lin_rows_grad_(self, rows, b, grad, loss);
	dml__fp_leave(fp);
	return rc;
}

static int lin_predict_(lin_model *s, const float *w, const dml_batch *b,
                        float *out)
{
	size_t d = s->features;
	if (!w || !out || !b)
		return DML_EINVAL;
	int rc = dml__model_check_batch(b, d, 0);
	if (rc)
		return rc;
	if (b->x) {
		size_t ldw;
		const float *wx = dml__xwt_w(&s->ws, &s->wscap, w, d, 1, b->x, b->n, &ldw);
		s->kr.xwt(b->n, d, 1, b->x, wx, ldw, w + d, out, b->n);
	} else if (b->n) {
		sparse_scores(b, w, d, out);
	}
	if (s->kind != LIN_REG)
		for (size_t i = 0; i < b->n; i++)
			out[i] = out[i] > 0 ? 1.0f : 0.0f;
	return 0;
}

static int lin_loss_grad(void *self, const float *w, const dml_batch *b,
                         float *grad, double *loss)
{
	unsigned fp = dml__fp_enter();
	int rc = lin_loss_grad_(self, w, b, grad, loss);
	dml__fp_leave(fp);
	return rc;
}

static int lin_predict(void *self, const float *w, const dml_batch *b,
                       float *out)
{
	unsigned fp = dml__fp_enter();
	int rc = lin_predict_(self, w, b, out);
	dml__fp_leave(fp);
	return rc;
}

static int lin_new(dml_model *out, size_t features, float l2, lin_kind kind,
                   int abi)
{
	dml__detail_clear();
	int rc = dml__abi_check(abi);
	if (rc)
		return rc;
	if (!out || features == 0 || features >= SIZE_MAX / sizeof(float) ||
	    !(l2 >= 0) || !isfinite(l2))
		return dml__fail(DML_EINVAL, "features >= 1, finite l2 >= 0");
	lin_model *s = calloc(1, sizeof *s);
	if (!s)
		return DML_ENOMEM;
	dml__kern_get(&s->kr, dml__isa_best());
	s->kind = kind;
	s->features = features;
	s->l2 = l2;
	dml_model m = {0};
	m.dim = features + 1;
	m.features = features;
	m.classes = kind == LIN_REG ? 0 : 2;
	m.task = kind == LIN_REG ? DML_TASK_REGRESSION : DML_TASK_CLASSIFICATION;
	m.self = s;
	m.init = lin_init;
	m.loss_grad = lin_loss_grad;
	m.predict = lin_predict;
	m.destroy = lin_destroy;
	m.width = 1;
	m.extra_rows = 1;
	m.rows_grad = lin_rows_grad;
	dml__abi_out(out, &m, DML__L_MODEL, abi);
	return 0;
}

int dml_model_init_linreg_abi(dml_model *m, size_t features, float l2, int abi)
{
	return lin_new(m, features, l2, LIN_REG, abi);
}

int dml_model_init_logreg_abi(dml_model *m, size_t features, float l2, int abi)
{
	return lin_new(m, features, l2, LIN_LOGISTIC, abi);
}

int dml_model_init_svm_abi(dml_model *m, size_t features, float l2, int abi)
{
	return lin_new(m, features, l2, LIN_SVM, abi);
}

int dml_model_linreg(dml_model *m, size_t features, float l2)
{
	return lin_new(m, features, l2, LIN_REG, 1);
}

int dml_model_logreg(dml_model *m, size_t features, float l2)
{
	return lin_new(m, features, l2, LIN_LOGISTIC, 1);
}

int dml_model_svm(dml_model *m, size_t features, float l2)
{
	return lin_new(m, features, l2, LIN_SVM, 1);
}

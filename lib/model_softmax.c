/*
 * model_softmax.c - multinomial softmax regression (cross-entropy loss)
 * with L2 regularisation. See include/distml/model.h and docs/model.md.
 *
 * Parameters: W class-major (w[c*features + j]) then `classes` biases.
 * A dense minibatch X (n x d) takes three kernels (kernels.h):
 *   Z = X W^T + b                  xwt: 2 n d k flops
 *   D = (softmax(Z) - Y) / n       softmax_xent, in place, with the loss
 *                                  and grad b = the sums of D over rows
 *   grad W = D^T X + l2 W          atx: 2 n d k flops
 * in steps of STEP_ROWS rows, so that a step's rows are read from memory
 * once, while the previous step computes (atx prefetches them). Z and D
 * are stored class-major (k rows of n), so that the softmax runs across
 * rows, a vector of rows per class. The scratch (Z, and an aligned copy of
 * W for xwt) lives in the instance, grown to the largest batch seen.
 * Sparse batches use plain loops over the entries.
 */
#include "kernels.h"

#include "abi.h"

#include <math.h>
#include <stdlib.h>

typedef struct smx_model {
	dml__kern kr; /* first: dml__model_head */
	size_t features, classes;
	float l2;
	float *z; /* classes x n: logits, then D */
	size_t zcap;
	float *ws; /* xwt's workspace */
	size_t wscap;
} smx_model;

void dml__softmax_destroy(void *self)
{
	smx_model *s = self;
	free(s->z);
	free(s->ws);
	free(s);
}

static int smx_init(void *self, float *w, uint64_t seed)
{
	smx_model *s = self;
	(void)seed;
	if (!w)
		return DML_EINVAL;
	memset(w, 0, (s->classes * s->features + s->classes) * sizeof(float));
	return 0;
}

/* Z = X W^T + b (class-major) for rows in CSR. */
static void sparse_logits(const dml_batch *b, const float *w, size_t d,
                          size_t k, float *z)
{
	const float *bias = w + k * d;
	size_t n = b->n;
	for (size_t i = 0; i < n; i++) {
		for (size_t c = 0; c < k; c++)
			z[c * n + i] = bias[c];
		for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++) {
			const float *wj = w + b->idx[p];
			float v = b->val[p];
			for (size_t c = 0; c < k; c++)
				z[c * n + i] += v * wj[c * d];
		}
	}
}

/* grad W = D^T X + l2 W (wl NULL: no l2 term), D class-major, rows in CSR. */
static void sparse_grad(const dml_batch *b, const float *dm, size_t d,
                        size_t k, const float *wl, float l2, float *g)
{
	size_t n = b->n;
	for (size_t q = 0; q < k * d; q++)
		g[q] = wl ? l2 * wl[q] : 0.0f;
	for (size_t i = 0; i < n; i++) {
		for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++) {
			float *gj = g + b->idx[p];
			float v = b->val[p];
			for (size_t c = 0; c < k; c++)
				gj[c * d] += dm[c * n + i] * v;
		}
	}
}

/* Rows per step of the dense loss_grad: each step's rows go through
 * X W^T, the softmax and D^T X while they are in cache, and D^T X
 * prefetches the next step's rows from memory as it computes. */
#define STEP_ROWS 128

static int smx_scratch(smx_model *s, size_t n)
{
	if (n > SIZE_MAX / s->classes)
		return DML_ENOMEM;
	return dml__scratch(&s->z, &s->zcap, n ? n * s->classes : 1);
}

/* The logits of b in s->z (class-major, n apart). */
static void smx_logits(smx_model *s, const float *w, const dml_batch *b)
{
	size_t d = s->features, k = s->classes, n = b->n, ldw;
	if (!n)
		return;
	if (b->x) {
		const float *wx = dml__xwt_w(&s->ws, &s->wscap, w, d, k, b->x, n, &ldw);
		s->kr.xwt(n, d, k, b->x, wx, ldw, w + k * d, s->z, n);
	} else {
		sparse_logits(b, w, d, k, s->z);
	}
}

/* Dense rows, in steps of STEP_ROWS; returns the summed row losses. */
static double smx_dense(smx_model *s, const float *w, const dml_batch *b,
                        float *grad)
{
	size_t d = s->features, k = s->classes, n = b->n, ldw;
	const float *wx = dml__xwt_w(&s->ws, &s->wscap, w, d, k, b->x, n, &ldw);
	const float *wl = s->l2 != 0 ? w : NULL;
	float scale = 1.0f / (float)n, *gb = grad ? grad + k * d : NULL;
	double l = 0;
	for (size_t i0 = 0; i0 < n; i0 += STEP_ROWS) {
		size_t nc = n - i0 < STEP_ROWS ? n - i0 : STEP_ROWS;
		size_t next = n - i0 - nc < STEP_ROWS ? n - i0 - nc : STEP_ROWS;
		const float *xc = b->x + i0 * d;
		float *zc = s->z + i0;
		s->kr.xwt(nc, d, k, xc, wx, ldw, w + k * d, zc, n);
		l += s->kr.softmax_xent(nc, k, zc, n, b->y + i0, scale, gb);
		if (grad)
			s->kr.atx(nc, d, k, zc, n, xc, wl, s->l2, grad, i0 > 0,
			          next ? xc + nc * d : NULL, next * d * sizeof(float));
	}
	return l;
}

static int smx_loss_grad_(smx_model *s, const float *w, const dml_batch *b,
                          float *grad, double *loss)
{
	size_t d = s->features, k = s->classes;
	if (!w)
		return DML_EINVAL;
	int rc = dml__model_check_batch(b, d, (int)k);
	if (!rc)
		rc = smx_scratch(s, b->n);
	if (rc)
		return rc;
	size_t n = b->n;
	float *gb = grad ? grad + k * d : NULL;
	double l = 0;
	if (gb)
		memset(gb, 0, k * sizeof(float));
	if (b->x && n) {
		l = smx_dense(s, w, b, grad);
	} else {
		if (n) {
			smx_logits(s, w, b);
			l = s->kr.softmax_xent(n, k, s->z, n, b->y, 1.0f / (float)n, gb);
		}
		if (grad)
			sparse_grad(b, s->z, d, k, s->l2 != 0 ? w : NULL, s->l2, grad);
	}
	if (n)
		l /= (double)n;
	if (s->l2 != 0)
		l += 0.5 * s->l2 * s->kr.sumsq(w, k * d);
	if (loss)
		*loss = l;
	return 0;
}

/* The keyed path: row j (k floats) is feature j's weights of every
 * class, row u the biases. Logits class-major in s->z, as the kernel
 * wants them. */
static int smx_rows_grad_(smx_model *s, const float *rows, const dml_batch *b,
                          float *grad, double *loss)
{
	if (!rows || !b || b->x || !b->indptr)
		return DML_EINVAL;
	size_t u = b->dim, n = b->n, k = s->classes;
	int rc = dml__model_check_batch(b, u, (int)k);
	if (!rc)
		rc = smx_scratch(s, n);
	if (rc)
		return rc;
	const float *bias = rows + u * k;
	for (size_t i = 0; i < n; i++) {
		for (size_t c = 0; c < k; c++)
			s->z[c * n + i] = bias[c];
		for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++) {
			const float *wj = rows + (size_t)b->idx[p] * k;
			float v = b->val[p];
			for (size_t c = 0; c < k; c++)
				s->z[c * n + i] += v * wj[c];
		}
	}
	float *gb = grad ? grad + u * k : NULL;
	if (gb)
		memset(gb, 0, k * sizeof(float));
	double l = n ? s->kr.softmax_xent(n, k, s->z, n, b->y, 1.0f / (float)n, gb) : 0;
	if (n)
		l /= (double)n;
	double sq = 0;
	for (size_t q = 0; q < u * k; q++)
		sq += (double)rows[q] * rows[q];
	l += 0.5 * s->l2 * sq;
	if (grad) {
		for (size_t q = 0; q < u * k; q++)
			grad[q] = s->l2 * rows[q];
		for (size_t i = 0; i < n; i++)
			for (uint64_t p = b->indptr[i]; p < b->indptr[i + 1]; p++) {
				float *gj = grad + (size_t)b->idx[p] * k;
				float v = b->val[p];
				for (size_t c = 0; c < k; c++)
					gj[c] += s->z[c * n + i] * v;
			}
	}
	if (loss)
		*loss = l;
	return 0;
}

static int smx_rows_grad(void *self, const float *rows, const dml_batch *b,
                         float *grad, double *loss)
{
	unsigned fp = dml__fp_enter();
	int rc = smx_rows_grad_(self, rows, b, grad, loss);
	dml__fp_leave(fp);
	return rc;
}

static int smx_predict_(smx_model *s, const float *w, const dml_batch *b,
                        float *out)
{
	size_t k = s->classes;
	if (!w || !out)
		return DML_EINVAL;
	int rc = dml__model_check_batch(b, s->features, 0);
	if (!rc)
		rc = smx_scratch(s, b->n);
	if (rc)
		return rc;
	smx_logits(s, w, b);
	size_t n = b->n;
	for (size_t i = 0; i < n; i++) {
		const float *zi = s->z + i;
		size_t best = 0;
		for (size_t c = 1; c < k; c++)
			if (zi[c * n] > zi[best * n])
				best = c;
		out[i] = (float)best;
	}
	return 0;
}

static int smx_loss_grad(void *self, const float *w, const dml_batch *b,
                         float *grad, double *loss)
{
	unsigned fp = dml__fp_enter(); /* see kernels.h */
	int rc = smx_loss_grad_(self, w, b, grad, loss);
	dml__fp_leave(fp);
	return rc;
}

static int smx_predict(void *self, const float *w, const dml_batch *b,
                       float *out)
{
	unsigned fp = dml__fp_enter();
	int rc = smx_predict_(self, w, b, out);
	dml__fp_leave(fp);
	return rc;
}

int dml_model_init_softmax_abi(dml_model *out, size_t features, int classes,
                               float l2, int abi)
{
	dml__detail_clear();
	int rc = dml__abi_check(abi);
	if (rc)
		return rc;
	/* classes as floats must be exact: at most 2^24 */
	if (!out || features == 0 || classes < 2 ||
	    (size_t)classes > DML_DATA_MAX_CLASSES || !(l2 >= 0) || !isfinite(l2))
		return dml__fail(DML_EINVAL, "softmax: features >= 1, 2 to 2^24 "
		                 "classes, finite l2 >= 0");
	size_t k = (size_t)classes;
	if (features > (SIZE_MAX / sizeof(float) - k) / k - 1)
		return dml__fail(DML_EINVAL, "softmax: %zu x %d parameters overflow",
		                 features, classes);
	smx_model *s = calloc(1, sizeof *s);
	if (!s)
		return DML_ENOMEM;
	dml__kern_get(&s->kr, dml__isa_best());
	s->features = features;
	s->classes = k;
	s->l2 = l2;
	dml_model m = {0};
	m.dim = k * features + k;
	m.features = features;
	m.classes = classes;
	m.task = DML_TASK_CLASSIFICATION;
	m.self = s;
	m.init = smx_init;
	m.loss_grad = smx_loss_grad;
	m.predict = smx_predict;
	m.destroy = dml__softmax_destroy;
	m.width = k;
	m.extra_rows = 1;
	m.rows_grad = smx_rows_grad;
	dml__abi_out(out, &m, DML__L_MODEL, abi);
	return 0;
}

int dml_model_softmax(dml_model *m, size_t features, int classes, float l2)
{
	return dml_model_init_softmax_abi(m, features, classes, l2, 1);
}

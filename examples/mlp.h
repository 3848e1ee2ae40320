/*
 * mlp.h - a one-hidden-layer perceptron as a host model for libdistml:
 * in -> hidden (ReLU) -> classes (softmax, cross-entropy), L2 on the
 * weights. mlp_model() fills a dml_model with its callbacks, so anything
 * that trains a dml_model (dml_sgd_run, or DSGD as in examples/mlp.c)
 * trains it. Header-only: include it from one .c file per program.
 *
 * Parameters, in this order (dim = hidden*in + hidden + classes*hidden +
 * classes):
 *   W1  hidden x in, row-major (w1[h*in + j])   b1  hidden
 *   W2  classes x hidden                         b2  classes
 * A minibatch of n dense rows X (n x in) goes
 *   Z1 = X W1^T + b1,  H = max(Z1, 0),  Z2 = H W2^T + b2,  P = softmax(Z2)
 *   loss = mean(-log P[y]) + l2/2 (|W1|^2 + |W2|^2)
 * and back
 *   D2 = (P - Y) / n          dW2 = D2^T H + l2 W2    db2 = sum of D2's rows
 *   D1 = (D2 W2) * [Z1 > 0]   dW1 = D1^T X + l2 W1    db1 = sum of D1's rows
 * The two big products (X W1^T and D1^T X, 2 n in hidden flops each) run in
 * register-blocked AVX-512 loops when the CPU has AVX-512 (checked at run
 * time; the program is built without -march flags), else in plain loops.
 * Dense batches only (a sparse batch is DML_EINVAL).
 *
 * Like the built-in models, an instance keeps scratch memory (grown to the
 * largest batch seen): one thread at a time per instance.
 */
#ifndef MLP_H
#define MLP_H

#include <distml.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct mlp {
	size_t in, hid, k;
	float l2;
	int avx512;
	size_t cap;    /* rows the scratch holds */
	float *z1, *h; /* n x hid: pre-activations (then D1), activations */
	float *z2;     /* n x k: logits, then D2 */
	float *wa;     /* room for a copy of W1 aligned like the rows of X */
} mlp;

/* ---- the products: portable versions ---- */

/* out[i*ldo + c] = bias[c] + sum_j x[i*d + j] w[c*d + j] */
static void mlp_xwt_plain(size_t n, size_t d, size_t k, const float *x,
                          const float *w, const float *bias, float *out,
                          size_t ldo)
{
	for (size_t i = 0; i < n; i++)
		for (size_t c = 0; c < k; c++) {
			const float *xi = x + i * d, *wc = w + c * d;
			float s0 = 0, s1 = 0;
			size_t j = 0;
			for (; j + 2 <= d; j += 2) {
				s0 += xi[j] * wc[j];
				s1 += xi[j + 1] * wc[j + 1];
			}
			if (j < d)
				s0 += xi[j] * wc[j];
			out[i * ldo + c] = s0 + s1 + bias[c];
		}
}

/* g[c*d + j] = l2 w[c*d + j] + sum_i a[i*lda + c] x[i*d + j] */
static void mlp_atx_plain(size_t n, size_t d, size_t k, const float *a,
                          size_t lda, const float *x, const float *w,
                          float l2, float *g)
{
	for (size_t q = 0; q < k * d; q++)
		g[q] = l2 * w[q];
	for (size_t i = 0; i < n; i++)
		for (size_t c = 0; c < k; c++) {
			float ac = a[i * lda + c];
			if (ac == 0) /* ReLU zeroes many rows of D1 */
				continue;
			for (size_t j = 0; j < d; j++)
				g[c * d + j] += ac * x[i * d + j];
		}
}

/* ---- the products: AVX-512 ---- */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MLP_X86 1
#include <immintrin.h>

#define MLP_AVX512 __attribute__((target("avx512f")))
#define MLP_INLINE static inline __attribute__((always_inline, target("avx512f")))
#ifdef __clang__
#define MLP_UNROLL _Pragma("clang loop unroll(full)")
#else
#define MLP_UNROLL _Pragma("GCC unroll 16")
#endif

static inline __mmask16 mlp_mask(size_t rem)
{
	return rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
}

/* R rows x C classes of X W^T: R*C vector accumulators along j. Each
 * vector of W is held in a register (the empty asm) and feeds R FMAs:
 * loads, not FMAs, are what limit this loop otherwise. */
MLP_INLINE void mlp_xwt_rc(const int R, const int C, size_t d, const float *x,
                           const float *w, const float *bias, float *out,
                           size_t ldo)
{
	__m512 acc[2][10], xv[2];
	MLP_UNROLL for (int r = 0; r < R; r++)
		MLP_UNROLL for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_setzero_ps();
	for (size_t j = 0; j < d; j += 16) {
		__mmask16 m = mlp_mask(d - j);
		MLP_UNROLL for (int r = 0; r < R; r++)
			xv[r] = _mm512_maskz_loadu_ps(m, x + r * d + j);
		MLP_UNROLL for (int c = 0; c < C; c++) {
			__m512 wv = _mm512_maskz_loadu_ps(m, w + c * d + j);
			__asm__("" : "+v"(wv));
			MLP_UNROLL for (int r = 0; r < R; r++)
				acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
		}
	}
	MLP_UNROLL for (int r = 0; r < R; r++)
		MLP_UNROLL for (int c = 0; c < C; c++)
			out[r * ldo + c] = _mm512_reduce_add_ps(acc[r][c]) + bias[c];
}

MLP_AVX512 static void mlp_xwt512(size_t n, size_t d, size_t k,
                                  const float *x, const float *w,
                                  const float *bias, float *out, size_t ldo)
{
	/* blocks of 64 rows stay in cache while 10 rows of W at a time pass */
	for (size_t i0 = 0; i0 < n; i0 += 64) {
		size_t i1 = n - i0 < 64 ? n : i0 + 64;
		for (size_t c = 0; c < k; c += 10) {
			const float *wc = w + c * d;
			size_t i = i0;
			if (k - c >= 10) {
				for (; i + 2 <= i1; i += 2)
					mlp_xwt_rc(2, 10, d, x + i * d, wc, bias + c, out + i * ldo + c, ldo);
				for (; i < i1; i++)
					mlp_xwt_rc(1, 10, d, x + i * d, wc, bias + c, out + i * ldo + c, ldo);
			} else {
				for (size_t cc = c; cc < k; cc++)
					for (i = i0; i < i1; i++)
						mlp_xwt_rc(1, 1, d, x + i * d, w + cc * d, bias + cc, out + i * ldo + cc, ldo);
			}
		}
	}
}

/* C classes x 32 features of A^T X: 2C accumulators over all rows; the
 * block of the gradient stays in registers until it is stored. */
MLP_INLINE void mlp_atx_cj(const int C, size_t n, size_t d, size_t rem,
                           const float *a, size_t lda, const float *x,
                           const float *w, float l2, float *g)
{
	__m512 acc[10][2], xv[2];
	__mmask16 m0 = mlp_mask(rem), m1 = mlp_mask(rem > 16 ? rem - 16 : 0);
	const __m512 l2v = _mm512_set1_ps(l2);
	MLP_UNROLL for (int c = 0; c < C; c++) {
		acc[c][0] = _mm512_mul_ps(l2v, _mm512_maskz_loadu_ps(m0, w + c * d));
		acc[c][1] = _mm512_mul_ps(l2v, _mm512_maskz_loadu_ps(m1, w + c * d + 16));
	}
	for (size_t i = 0; i < n; i++) {
		xv[0] = _mm512_maskz_loadu_ps(m0, x + i * d);
		xv[1] = _mm512_maskz_loadu_ps(m1, x + i * d + 16);
		MLP_UNROLL for (int c = 0; c < C; c++) {
			__m512 av = _mm512_set1_ps(a[i * lda + c]);
			acc[c][0] = _mm512_fmadd_ps(av, xv[0], acc[c][0]);
			acc[c][1] = _mm512_fmadd_ps(av, xv[1], acc[c][1]);
		}
	}
	MLP_UNROLL for (int c = 0; c < C; c++) {
		_mm512_mask_storeu_ps(g + c * d, m0, acc[c][0]);
		_mm512_mask_storeu_ps(g + c * d + 16, m1, acc[c][1]);
	}
}

MLP_AVX512 static void mlp_atx512(size_t n, size_t d, size_t k,
                                  const float *a, size_t lda, const float *x,
                                  const float *w, float l2, float *g)
{
	for (size_t c = 0; c < k; c += 10)
		for (size_t j = 0; j < d; j += 32) {
			if (k - c >= 10)
				mlp_atx_cj(10, n, d, d - j, a + c, lda, x + j, w + c * d + j, l2, g + c * d + j);
			else
				for (size_t cc = c; cc < k; cc++)
					mlp_atx_cj(1, n, d, d - j, a + cc, lda, x + j, w + cc * d + j, l2, g + cc * d + j);
		}
}

/* Row i of D1 = (D2 W2) * [H > 0] over z1, and the sums of D1's and D2's
 * rows into gb1 and gb2: per row, the k coefficients of D2 scale the k
 * rows of W2 into hid accumulators (hid / 16 vectors at a time). */
MLP_AVX512 static void mlp_hidden512(size_t n, size_t hid, size_t k,
                                     const float *d2, const float *w2,
                                     const float *h, float *d1, float *gb1,
                                     float *gb2)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t c = 0; c < k; c++)
			gb2[c] += d2[i * k + c];
		for (size_t j = 0; j < hid; j += 64) {
			__m512 acc[4];
			__mmask16 mk[4];
			MLP_UNROLL for (int v = 0; v < 4; v++) {
				size_t at = j + 16 * (size_t)v;
				mk[v] = mlp_mask(hid > at ? hid - at : 0);
				acc[v] = _mm512_setzero_ps();
			}
			for (size_t c = 0; c < k; c++) {
				__m512 dc = _mm512_set1_ps(d2[i * k + c]);
				MLP_UNROLL for (int v = 0; v < 4; v++)
					acc[v] = _mm512_fmadd_ps(dc, _mm512_maskz_loadu_ps(mk[v], w2 + c * hid + j + 16 * v), acc[v]);
			}
			MLP_UNROLL for (int v = 0; v < 4; v++) {
				size_t at = i * hid + j + 16 * (size_t)v;
				__mmask16 on = _mm512_mask_cmp_ps_mask(mk[v], _mm512_maskz_loadu_ps(mk[v], h + at),
				                                       _mm512_setzero_ps(), _CMP_GT_OQ);
				__m512 dv = _mm512_maskz_mov_ps(on, acc[v]);
				_mm512_mask_storeu_ps(d1 + at, mk[v], dv);
				float *gb = gb1 + j + 16 * v;
				_mm512_mask_storeu_ps(gb, mk[v], _mm512_add_ps(_mm512_maskz_loadu_ps(mk[v], gb), dv));
			}
		}
	}
}
#endif

static void mlp_xwt(const mlp *m, size_t n, size_t d, size_t k, const float *x,
                    const float *w, const float *bias, float *out)
{
#ifdef MLP_X86
	if (m->avx512) {
		/* A vector load that straddles two cache lines costs two: when
		 * W's rows sit at the same offset in a line as X's (and d is a
		 * multiple of 16), no load in the loop does. */
		if (m->wa && d == m->in && n >= 16 && d % 16 == 0) {
			size_t xoff = (size_t)((uintptr_t)x / 4 % 16);
			float *wa = m->wa + (16 - (size_t)((uintptr_t)m->wa / 4 % 16)) % 16 + xoff;
			memcpy(wa, w, k * d * sizeof(float));
			w = wa;
		}
		mlp_xwt512(n, d, k, x, w, bias, out, k);
		return;
	}
#endif
	(void)m;
	mlp_xwt_plain(n, d, k, x, w, bias, out, k);
}

static void mlp_atx(const mlp *m, size_t n, size_t d, size_t k, const float *a,
                    const float *x, const float *w, float l2, float *g)
{
#ifdef MLP_X86
	if (m->avx512) {
		mlp_atx512(n, d, k, a, k, x, w, l2, g);
		return;
	}
#endif
	(void)m;
	mlp_atx_plain(n, d, k, a, k, x, w, l2, g);
}

/* ---- the model's callbacks ---- */

/* A normal deviate from a splitmix64 stream (Box-Muller). */
static double mlp_normal(uint64_t *s)
{
	double u[2];
	for (int t = 0; t < 2; t++) {
		uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
		z ^= z >> 31;
		u[t] = ((double)(z >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
	}
	return sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

/* He initialisation (normal, variance 2 / fan-in) for both weight
 * matrices, zero biases; the same seed gives the same parameters. */
static int mlp_init(void *self, float *w, uint64_t seed)
{
	mlp *m = self;
	if (!w)
		return DML_EINVAL;
	size_t n1 = m->hid * m->in, n2 = m->k * m->hid;
	double s1 = sqrt(2.0 / (double)m->in), s2 = sqrt(2.0 / (double)m->hid);
	for (size_t q = 0; q < n1; q++)
		w[q] = (float)(s1 * mlp_normal(&seed));
	memset(w + n1, 0, m->hid * sizeof(float));
	float *w2 = w + n1 + m->hid;
	for (size_t q = 0; q < n2; q++)
		w2[q] = (float)(s2 * mlp_normal(&seed));
	memset(w2 + n2, 0, m->k * sizeof(float));
	return 0;
}

static int mlp_check(mlp *m, const dml_batch *b, int labels)
{
	if (!b || !b->x || (labels && b->n && !b->y))
		return DML_EINVAL;
	if (b->dim != m->in)
		return DML_EDIM;
	for (size_t i = 0; labels && i < b->n; i++) {
		float y = b->y[i];
		if (!(y >= 0 && y < (float)m->k) || (float)(int)y != y)
			return DML_EINVAL;
	}
	if (b->n > m->cap) {
		size_t n = b->n;
		if (n > SIZE_MAX / sizeof(float) / (m->hid > m->k ? m->hid : m->k))
			return DML_ENOMEM;
		float *z1 = realloc(m->z1, n * m->hid * sizeof(float));
		if (z1)
			m->z1 = z1;
		float *h = realloc(m->h, n * m->hid * sizeof(float));
		if (h)
			m->h = h;
		float *z2 = realloc(m->z2, n * m->k * sizeof(float));
		if (z2)
			m->z2 = z2;
		if (!z1 || !h || !z2)
			return DML_ENOMEM;
		m->cap = n;
	}
	return 0;
}

/* Z1, H and Z2 for the batch. */
static void mlp_forward(mlp *m, const float *w, const dml_batch *b)
{
	size_t n = b->n, in = m->in, hid = m->hid;
	const float *w1 = w, *b1 = w + hid * in, *w2 = b1 + hid, *b2 = w2 + m->k * hid;
	mlp_xwt(m, n, in, hid, b->x, w1, b1, m->z1);
	for (size_t q = 0; q < n * hid; q++)
		m->h[q] = m->z1[q] > 0 ? m->z1[q] : 0;
	mlp_xwt(m, n, hid, m->k, m->h, w2, b2, m->z2);
}

static double mlp_sumsq(const float *v, size_t n)
{
	double s = 0;
	for (size_t q = 0; q < n; q++)
		s += (double)v[q] * v[q];
	return s;
}

static int mlp_loss_grad_(void *self, const float *w, const dml_batch *b,
                          float *grad, double *loss)
{
	mlp *m = self;
	int rc = w ? mlp_check(m, b, 1) : DML_EINVAL;
	if (rc)
		return rc;
	size_t n = b->n, in = m->in, hid = m->hid, k = m->k;
	const float *w1 = w, *w2 = w + hid * in + hid;
	double l = 0;
	if (n)
		mlp_forward(m, w, b);
	/* softmax cross-entropy; Z2 becomes D2 = (P - Y) / n */
	for (size_t i = 0; i < n; i++) {
		float *zi = m->z2 + i * k, mx = zi[0], sum = 0;
		size_t y = (size_t)b->y[i];
		for (size_t c = 1; c < k; c++)
			mx = zi[c] > mx ? zi[c] : mx;
		float zy = zi[y];
		for (size_t c = 0; c < k; c++)
			sum += zi[c] = expf(zi[c] - mx);
		l += (double)mx - zy + log((double)sum);
		for (size_t c = 0; c < k; c++)
			zi[c] = zi[c] / sum / (float)n;
		zi[y] -= 1.0f / (float)n;
	}
	if (n)
		l /= (double)n;
	if (m->l2 != 0)
		l += 0.5 * m->l2 * (mlp_sumsq(w1, hid * in) + mlp_sumsq(w2, k * hid));
	if (loss)
		*loss = l;
	if (!grad)
		return 0;
	float *g1 = grad, *gb1 = grad + hid * in, *g2 = gb1 + hid, *gb2 = g2 + k * hid;
	/* layer 2 */
	if (n) {
		mlp_atx(m, n, hid, k, m->z2, m->h, w2, m->l2, g2);
	} else {
		for (size_t q = 0; q < k * hid; q++)
			g2[q] = m->l2 * w2[q];
	}
	memset(gb2, 0, k * sizeof(float));
	memset(gb1, 0, hid * sizeof(float));
	/* D1 = (D2 W2) * [Z1 > 0], over Z1 */
	size_t rows = n; /* rows left to the plain loop */
#ifdef MLP_X86
	if (m->avx512) {
		mlp_hidden512(n, hid, k, m->z2, w2, m->h, m->z1, gb1, gb2);
		rows = 0;
	}
#endif
	for (size_t i = 0; i < rows; i++) {
		float *d1 = m->z1 + i * hid;
		const float *d2 = m->z2 + i * k, *hi = m->h + i * hid;
		for (size_t c = 0; c < k; c++)
			gb2[c] += d2[c];
		memset(d1, 0, hid * sizeof(float));
		for (size_t c = 0; c < k; c++) {
			const float *w2c = w2 + c * hid;
			float dc = d2[c];
			for (size_t j = 0; j < hid; j++)
				d1[j] += dc * w2c[j];
		}
		for (size_t j = 0; j < hid; j++) {
			d1[j] = hi[j] > 0 ? d1[j] : 0;
			gb1[j] += d1[j];
		}
	}
	/* layer 1 */
	if (n) {
		mlp_atx(m, n, in, hid, m->z1, b->x, w1, m->l2, g1);
	} else {
		for (size_t q = 0; q < hid * in; q++)
			g1[q] = m->l2 * w1[q];
	}
	return 0;
}

static int mlp_predict_(void *self, const float *w, const dml_batch *b,
                        float *out)
{
	mlp *m = self;
	int rc = w && out ? mlp_check(m, b, 0) : DML_EINVAL;
	if (rc || !b->n)
		return rc;
	mlp_forward(m, w, b);
	for (size_t i = 0; i < b->n; i++) {
		const float *zi = m->z2 + i * m->k;
		size_t best = 0;
		for (size_t c = 1; c < m->k; c++)
			if (zi[c] > zi[best])
				best = c;
		out[i] = (float)best;
	}
	return 0;
}

/* Denormal floats cost x86 arithmetic a microcode assist each, and Adam
 * with L2 decay drives the weights of always-blank pixels toward them: the
 * callbacks flush denormals to zero (MXCSR FTZ and DAZ) while they run and
 * then restore the caller's control bits, as the built-in models do. */
#ifdef MLP_X86
#define MLP_FP_ENTER unsigned mlp_csr = _mm_getcsr(); _mm_setcsr(mlp_csr | 0x8040u)
#define MLP_FP_LEAVE _mm_setcsr(mlp_csr | (_mm_getcsr() & 0x3Fu))
#else
#define MLP_FP_ENTER
#define MLP_FP_LEAVE
#endif

static int mlp_loss_grad(void *self, const float *w, const dml_batch *b,
                         float *grad, double *loss)
{
	MLP_FP_ENTER;
	int rc = mlp_loss_grad_(self, w, b, grad, loss);
	MLP_FP_LEAVE;
	return rc;
}

static int mlp_predict(void *self, const float *w, const dml_batch *b,
                       float *out)
{
	MLP_FP_ENTER;
	int rc = mlp_predict_(self, w, b, out);
	MLP_FP_LEAVE;
	return rc;
}

static void mlp_destroy(void *self)
{
	mlp *m = self;
	free(m->z1);
	free(m->h);
	free(m->z2);
	free(m->wa);
	free(m);
}

/* Fills *model with an in -> hidden -> classes perceptron with L2
 * coefficient l2 (>= 0) on the weights. *model owns the instance
 * (dml_model_destroy). DML_EINVAL, DML_ENOMEM. */
static inline int mlp_model(dml_model *model, size_t in, size_t hidden,
                            int classes, float l2)
{
	if (!model || in == 0 || hidden == 0 || classes < 2 || !(l2 >= 0) ||
	    !isfinite(l2) || hidden > SIZE_MAX / 4 / (in + (size_t)classes + 2))
		return DML_EINVAL;
	mlp *m = calloc(1, sizeof *m);
	if (!m)
		return DML_ENOMEM;
	m->in = in;
	m->hid = hidden;
	m->k = (size_t)classes;
	m->l2 = l2;
#ifdef MLP_X86
	__builtin_cpu_init();
	m->avx512 = __builtin_cpu_supports("avx512f") != 0;
	if (m->avx512 && !(m->wa = malloc((hidden * in + 32) * sizeof(float)))) {
		free(m);
		return DML_ENOMEM;
	}
#endif
	memset(model, 0, sizeof *model);
	model->dim = hidden * in + hidden + m->k * hidden + m->k;
	model->features = in;
	model->classes = classes;
	model->task = DML_TASK_CLASSIFICATION;
	model->self = m;
	model->init = mlp_init;
	model->loss_grad = mlp_loss_grad;
	model->predict = mlp_predict;
	model->destroy = mlp_destroy;
	return 0;
}

#endif

/*
 * kernels.c - the dense kernels behind the built-in models: X W^T (forward),
 * A^T X (weight gradient), row-wise softmax cross-entropy and a sum of
 * squares, each portable and, on x86-64, for AVX2+FMA and AVX-512F.
 *
 * The two products are register-blocked for the shapes of a minibatch
 * (a few hundred rows, hundreds of features, a handful of classes):
 *   X W^T: dot products along the features, R rows x C classes of vector
 *          accumulators at once; every weight vector loaded feeds R FMAs
 *          and every row vector C of them. Each of the R*C sums is
 *          reduced across its vector once, at the end of the row.
 *   A^T X: per block of J feature vectors, C classes x J accumulators over
 *          all rows; a row's J vectors feed C FMAs each, a coefficient
 *          (broadcast) J of them. The block of gradient stays in
 *          registers until it is stored.
 * R, C and J are compile-time constants of always-inline templates (the
 * loops over them unroll and the accumulator arrays become registers);
 * a switch picks the instance for the number of classes left. Vector
 * tails use masked loads, so any size works.
 *
 * What limits these loops on AVX-512 is the loads, not the FMAs: so each
 * vector of W is kept in a register (IN_REG) rather than folded into every
 * FMA as a memory operand, the caller hands X W^T an aligned copy of W
 * (dml__align_w) and A^T X starts its blocks on X's cache lines, so that
 * no load straddles two lines. Both prefetch the rows they read next; A^T
 * X also pulls the caller's next rows into L2 (the pf stream), so that
 * the memory traffic of the next forward step overlaps its arithmetic.
 */
#include "kernels.h"

#include <math.h>

/* Full unrolling of the loops over the register block (gcc needs the
 * pragma; clang's spelling of it differs). */
#ifdef __clang__
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

/* ---------------------------------------------------------------- */
/* Portable versions: plain loops, a few independent sums.           */

static void xwt_port(size_t n, size_t d, size_t k, const float *x,
                     const float *w, size_t ldw, const float *bias,
                     float *out, size_t ldo)
{
	for (size_t i = 0; i < n; i++) {
		const float *xi = x + i * d;
		for (size_t c = 0; c < k; c++) {
			const float *wc = w + c * ldw;
			float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
			size_t j = 0;
			for (; j + 4 <= d; j += 4) {
				s0 += xi[j] * wc[j];
				s1 += xi[j + 1] * wc[j + 1];
				s2 += xi[j + 2] * wc[j + 2];
				s3 += xi[j + 3] * wc[j + 3];
			}
			for (; j < d; j++)
				s0 += xi[j] * wc[j];
			out[c * ldo + i] = (s0 + s1) + (s2 + s3) + (bias ? bias[c] : 0.0f);
		}
	}
}

static void atx_port(size_t n, size_t d, size_t k, const float *a, size_t lda,
                     const float *x, const float *w, float l2, float *g,
                     int accumulate, const void *pf, size_t pf_bytes)
{
	(void)pf;
	(void)pf_bytes;
	if (!accumulate)
		for (size_t c = 0; c < k; c++)
			for (size_t j = 0; j < d; j++)
				g[c * d + j] = w ? l2 * w[c * d + j] : 0.0f;
	for (size_t i = 0; i < n; i++) {
		const float *xi = x + i * d;
		for (size_t c = 0; c < k; c++) {
			float ac = a[c * lda + i];
			float *restrict gc = g + c * d;
			for (size_t j = 0; j < d; j++)
				gc[j] += ac * xi[j];
		}
	}
}

static double softmax_xent_port(size_t n, size_t k, float *z, size_t ldz,
                                const float *y, float scale, float *dsum)
{
	double loss = 0;
	for (size_t i = 0; i < n; i++) {
		float *zi = z + i;
		size_t yi = (size_t)y[i];
		float mx = zi[0];
		for (size_t c = 1; c < k; c++)
			mx = zi[c * ldz] > mx ? zi[c * ldz] : mx;
		float zy = zi[yi * ldz], sum = 0;
		for (size_t c = 0; c < k; c++) {
			zi[c * ldz] = expf(zi[c * ldz] - mx);
			sum += zi[c * ldz];
		}
		loss += (double)mx - zy + log((double)sum);
		float inv = scale / sum;
		for (size_t c = 0; c < k; c++)
			zi[c * ldz] *= inv;
		zi[yi * ldz] -= scale;
		if (dsum)
			for (size_t c = 0; c < k; c++)
				dsum[c] += zi[c * ldz];
	}
	return loss;
}

static double sumsq_port(const float *v, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (double)v[i] * v[i];
	return s;
}

static const dml__kern kern_port = {DML__ISA_PORTABLE, xwt_port, atx_port,
                                    softmax_xent_port, sumsq_port};

/* Rows of X are processed in blocks of this many, class chunks inside, so
 * that a block stays in cache while every chunk of W passes over it. */
#define ROW_BLOCK 128

/* Rows ahead that A^T X prefetches. */
#define PREFETCH_ROWS 2

/* Memory A^T X pulls into L2 while it computes (the caller's next rows),
 * two 64-byte lines per row step, as addresses so that no pointer points
 * past its object. */
typedef struct pf_stream {
	uintptr_t at, end;
} pf_stream;

static pf_stream pf_make(const void *p, size_t bytes)
{
	pf_stream s = {(uintptr_t)p, (uintptr_t)p + (p ? bytes : 0)};
	return s;
}

size_t dml__xwt_ws(size_t d, size_t k)
{
	/* k rows of d rounded up to 16, and up to 2 * 15 floats to place them */
	if (d > SIZE_MAX / 8 || k > (SIZE_MAX / 2 - 32) / (d + 16))
		return 0;
	return k * (d + 16) + 32;
}

/* Copies W (k rows of d) into ws with rows 16 floats apart (ldw, a
 * multiple of 16) and the first at the same offset within a 64-byte line as
 * x: then, when d is a multiple of 16 too, the vector loads of X and W in
 * xwt are all aligned and none straddles two cache lines (which costs a
 * second access of the load ports, the kernels' limit). */
const float *dml__align_w(const float *w, size_t d, size_t k,
                          const float *x, float *ws, size_t *ldw)
{
	size_t off = (size_t)((uintptr_t)x / sizeof(float)) % 16;
	size_t lead = (16 - (size_t)((uintptr_t)ws / sizeof(float)) % 16) % 16;
	float *base = ws + lead + off;
	*ldw = (d + 15) / 16 * 16;
	for (size_t c = 0; c < k; c++)
		memcpy(base + c * *ldw, w + c * d, d * sizeof(float));
	return base;
}

/* Keeps v in a register: compilers otherwise fold a load that feeds
 * several FMAs into each of them as a memory operand, and the extra loads
 * are what limits these loops. */
#define IN_REG(v) __asm__("" : "+v"(v))

/* Splits k classes into chunks of at most cmax, as equal as possible:
 * the size of the next chunk when `left` classes remain. */
static size_t chunk_size(size_t left, size_t cmax)
{
	size_t chunks = (left + cmax - 1) / cmax;
	return (left + chunks - 1) / chunks;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DML__X86 1
#include <immintrin.h>

/* ---------------------------------------------------------------- */
/* AVX-512F                                                          */

#define T512 __attribute__((target("avx512f")))
#define I512 static inline __attribute__((always_inline, target("avx512f")))

/* Lanes [0, rem - 16*v) of vector v of a tail, as a mask. */
I512 __mmask16 mask512(size_t rem, int v)
{
	size_t lo = (size_t)v * 16;
	if (rem <= lo)
		return 0;
	if (rem >= lo + 16)
		return (__mmask16)0xFFFF;
	return (__mmask16)((1u << (rem - lo)) - 1u);
}

/* R rows x C classes: out[c*ldo + r] for rows x[0..R) (stride d) and
 * classes w[0..C) (stride ldw); prefetches the rows at xn meanwhile. */
I512 void xwt512_rc(const int R, const int C, size_t d, const float *x,
                    const float *xn, const float *w, size_t ldw,
                    const float *bias, float *out, size_t ldo)
{
	__m512 acc[8][10], xv[8];
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int c = 0; c < C; c++)
			acc[r][c] = _mm512_setzero_ps();
	size_t j = 0;
	for (; j + 16 <= d; j += 16) {
		UNROLL for (int r = 0; r < R; r++) {
			xv[r] = _mm512_loadu_ps(x + r * d + j);
			_mm_prefetch((const char *)(xn + r * d + j), _MM_HINT_T0);
		}
		UNROLL for (int c = 0; c < C; c++) {
			__m512 wv = _mm512_loadu_ps(w + c * ldw + j);
			if (R > 1)
				IN_REG(wv);
			UNROLL for (int r = 0; r < R; r++)
				acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
		}
	}
	if (j < d) {
		__mmask16 m = mask512(d - j, 0);
		UNROLL for (int r = 0; r < R; r++)
			xv[r] = _mm512_maskz_loadu_ps(m, x + r * d + j);
		UNROLL for (int c = 0; c < C; c++) {
			__m512 wv = _mm512_maskz_loadu_ps(m, w + c * ldw + j);
			UNROLL for (int r = 0; r < R; r++)
				acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
		}
	}
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int c = 0; c < C; c++)
			out[c * ldo + r] = _mm512_reduce_add_ps(acc[r][c]) +
			                   (bias ? bias[c] : 0.0f);
}

/* Rows [0, n) of a block, C classes, R rows at a time. */
I512 void xwt512_rows(const int R, const int C, size_t n, size_t d,
                      const float *x, size_t avail, const float *w,
                      size_t ldw, const float *bias, float *out, size_t ldo)
{
	size_t i = 0;
	for (; i + (size_t)R <= n; i += (size_t)R) {
		/* prefetch the next R rows, while there are (avail: rows
		 * from x to the end of the batch) */
		size_t next = i + 2 * (size_t)R <= avail ? i + (size_t)R : i;
		xwt512_rc(R, C, d, x + i * d, x + next * d, w, ldw, bias, out + i, ldo);
	}
	for (; i < n; i++)
		xwt512_rc(1, C, d, x + i * d, x + i * d, w, ldw, bias, out + i, ldo);
}

T512 static void xwt512(size_t n, size_t d, size_t k, const float *x,
                        const float *w, size_t ldw, const float *bias,
                        float *out, size_t ldo)
{
	for (size_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
		size_t nb = n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK;
		const float *xb = x + i0 * d;
		for (size_t c0 = 0; c0 < k;) {
			size_t cc = chunk_size(k - c0, 10);
			const float *wc = w + c0 * ldw, *bc = bias ? bias + c0 : NULL;
			float *oc = out + c0 * ldo + i0;
#define XWT512(R, C) xwt512_rows(R, C, nb, d, xb, n - i0, wc, ldw, bc, oc, ldo)
			switch (cc) {
			case 1: XWT512(8, 1); break;
			case 2: XWT512(8, 2); break;
			case 3: XWT512(6, 3); break;
			case 4: XWT512(4, 4); break;
			case 5: XWT512(4, 5); break;
			case 6: XWT512(3, 6); break;
			case 7: XWT512(2, 7); break;
			case 8: XWT512(2, 8); break;
			case 9: XWT512(2, 9); break;
			default: XWT512(2, 10); break;
			}
#undef XWT512
			c0 += cc;
		}
	}
}

/* C classes x J vectors of features starting at column j0 (x, w and g
 * point there); rem = d - j0 when this is the tail block (TAIL). */
/* C classes x J vectors of features starting at column j0 (x, w and g
 * point there); rem = d - j0 when this is the tail block (TAIL). */
I512 void atx512_cj(const int C, const int J, const int TAIL, size_t n,
                    size_t d, size_t rem, const float *a, size_t lda,
                    const float *x, const float *w, float l2, float *g,
                    int accumulate, pf_stream *pf)
{
	uintptr_t pf_at = pf->at, pf_end = pf->end;
	__m512 acc[10][8], xv[8];
	__mmask16 mk[8];
	UNROLL for (int v = 0; v < J; v++)
		mk[v] = TAIL ? mask512(rem, v) : (__mmask16)0xFFFF;
	if (accumulate) {
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = _mm512_maskz_loadu_ps(mk[v], g + c * d + v * 16);
	} else if (w) {
		__m512 l2v = _mm512_set1_ps(l2);
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = _mm512_mul_ps(l2v, _mm512_maskz_loadu_ps(
					mk[v], w + c * d + v * 16));
	} else {
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = _mm512_setzero_ps();
	}
	for (size_t i = 0; i < n; i++) {
		const float *xi = x + i * d, *ai = a + i;
		const float *xp = x + (i + PREFETCH_ROWS < n ? i + PREFETCH_ROWS : i) * d;
		UNROLL for (int v = 0; v < J; v++) {
			xv[v] = TAIL ? _mm512_maskz_loadu_ps(mk[v], xi + v * 16)
			             : _mm512_loadu_ps(xi + v * 16);
			_mm_prefetch((const char *)(xp + v * 16), _MM_HINT_T0);
		}
		if (pf_at < pf_end) {
			_mm_prefetch((const char *)pf_at, _MM_HINT_T1);
			_mm_prefetch((const char *)(pf_at + 64), _MM_HINT_T1);
			pf_at += 128;
		}
		UNROLL for (int c = 0; c < C; c++) {
			__m512 av = _mm512_set1_ps(ai[(size_t)c * lda]);
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = _mm512_fmadd_ps(av, xv[v], acc[c][v]);
		}
	}
	UNROLL for (int c = 0; c < C; c++)
		UNROLL for (int v = 0; v < J; v++) {
			if (TAIL)
				_mm512_mask_storeu_ps(g + c * d + v * 16, mk[v], acc[c][v]);
			else
				_mm512_storeu_ps(g + c * d + v * 16, acc[c][v]);
		}
	pf->at = pf_at;
}

I512 void atx512_cols(const int C, const int J, size_t n, size_t d,
                      const float *a, size_t lda, const float *x,
                      const float *w, float l2, float *g, int accumulate,
                      pf_stream *pf)
{
	size_t j = 0, step = (size_t)J * 16;
	/* a head block up to the first 64-byte boundary of x, so that the
	 * loads of the full blocks (of every row, when d % 16 == 0) do not
	 * straddle cache lines */
	size_t head = (16 - (size_t)((uintptr_t)x / sizeof(float)) % 16) % 16;
	if (head && d > head) {
		atx512_cj(C, J, 1, n, d, head, a, lda, x, w, l2, g, accumulate, pf);
		j = head;
	}
	for (; j + step <= d; j += step)
		atx512_cj(C, J, 0, n, d, 0, a, lda, x + j, w ? w + j : NULL, l2, g + j,
		          accumulate, pf);
	if (j < d)
		atx512_cj(C, J, 1, n, d, d - j, a, lda, x + j, w ? w + j : NULL, l2, g + j,
		          accumulate, pf);
}

T512 static void atx512(size_t n, size_t d, size_t k, const float *a,
                        size_t lda, const float *x, const float *w, float l2,
                        float *g, int accumulate, const void *pfp,
                        size_t pf_bytes)
{
	pf_stream pf = pf_make(pfp, pf_bytes);
	for (size_t c0 = 0; c0 < k;) {
		size_t cc = chunk_size(k - c0, 10);
		const float *ac = a + c0 * lda, *wc = w ? w + c0 * d : NULL;
		float *gc = g + c0 * d;
#define ATX512(C, J) atx512_cols(C, J, n, d, ac, lda, x, wc, l2, gc, accumulate, &pf)
		switch (cc) {
		case 1: ATX512(1, 8); break;
		case 2: ATX512(2, 8); break;
		case 3: ATX512(3, 6); break;
		case 4: ATX512(4, 4); break;
		case 5: ATX512(5, 4); break;
		case 6: ATX512(6, 3); break;
		case 7: ATX512(7, 2); break;
		case 8: ATX512(8, 2); break;
		case 9: ATX512(9, 2); break;
		default: ATX512(10, 2); break;
		}
#undef ATX512
		c0 += cc;
	}
}

/* exp(x) for x <= 88: Cephes' expf (range reduction by ln 2, degree-6
 * polynomial), about 1 ulp; inputs below -87.3 give ~1e-38, not 0. */
I512 __m512 exp512(__m512 x)
{
	x = _mm512_max_ps(x, _mm512_set1_ps(-87.33654f));
	x = _mm512_min_ps(x, _mm512_set1_ps(88.37626f));
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
	                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
	__m512 p = _mm512_set1_ps(1.9875691500e-4f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
	p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r),
	                    _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
	return _mm512_scalef_ps(p, n);
}

/* Adds, in double, the losses mx - zy + log(s) of the first `lanes`
 * rows of a vector block. */
static double block_loss(const float *part, const float *sums, size_t lanes)
{
	double loss = 0;
	for (size_t l = 0; l < lanes; l++)
		loss += (double)part[l] + log((double)sums[l]);
	return loss;
}

/* 16 rows at a time, one vector per class: max, exp and sum run down the
 * classes, across rows, with no reduction inside a vector. */
T512 static double softmax_xent512(size_t n, size_t k, float *z, size_t ldz,
                                   const float *y, float scale, float *dsum)
{
	double loss = 0;
	float part[16], sums[16];
	const __m512 scv = _mm512_set1_ps(scale);
	for (size_t i = 0; i < n; i += 16) {
		__mmask16 m = mask512(n - i, 0);
		__m512i yv = _mm512_cvttps_epi32(_mm512_maskz_loadu_ps(m, y + i));
		__m512 mx = _mm512_set1_ps(-INFINITY), zy = _mm512_setzero_ps();
		for (size_t c = 0; c < k; c++) {
			__m512 zc = _mm512_maskz_loadu_ps(m, z + c * ldz + i);
			__mmask16 is_y = _mm512_cmpeq_epi32_mask(yv, _mm512_set1_epi32((int)c));
			mx = _mm512_max_ps(mx, zc);
			zy = _mm512_mask_mov_ps(zy, is_y, zc);
		}
		__m512 sv = _mm512_setzero_ps();
		for (size_t c = 0; c < k; c++) {
			float *zc = z + c * ldz + i;
			__m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, zc), mx));
			_mm512_mask_storeu_ps(zc, m, e);
			sv = _mm512_add_ps(sv, e);
		}
		_mm512_storeu_ps(part, _mm512_sub_ps(mx, zy));
		_mm512_storeu_ps(sums, sv);
		loss += block_loss(part, sums, n - i < 16 ? n - i : 16);
		__m512 inv = _mm512_div_ps(scv, sv);
		for (size_t c = 0; c < k; c++) {
			float *zc = z + c * ldz + i;
			__mmask16 is_y = _mm512_cmpeq_epi32_mask(yv, _mm512_set1_epi32((int)c));
			__m512 dv = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, zc), inv);
			dv = _mm512_mask_sub_ps(dv, is_y, dv, scv);
			_mm512_mask_storeu_ps(zc, m, dv);
			if (dsum)
				dsum[c] += _mm512_reduce_add_ps(_mm512_maskz_mov_ps(m, dv));
		}
	}
	return loss;
}

T512 static double sumsq512(const float *v, size_t n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 64 <= n; i += 64) {
		__m512 a = _mm512_loadu_ps(v + i), b = _mm512_loadu_ps(v + i + 16);
		__m512 c = _mm512_loadu_ps(v + i + 32), e = _mm512_loadu_ps(v + i + 48);
		s0 = _mm512_fmadd_ps(a, a, s0);
		s1 = _mm512_fmadd_ps(b, b, s1);
		s2 = _mm512_fmadd_ps(c, c, s2);
		s3 = _mm512_fmadd_ps(e, e, s3);
	}
	for (; i < n; i += 16) {
		__m512 a = _mm512_maskz_loadu_ps(mask512(n - i, 0), v + i);
		s0 = _mm512_fmadd_ps(a, a, s0);
	}
	s0 = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
	/* the lanes are summed in double: 16 partial sums in float lose
	 * little; one float sum of the lot would lose more */
	float lanes[16];
	_mm512_storeu_ps(lanes, s0);
	double s = 0;
	for (int l = 0; l < 16; l++)
		s += lanes[l];
	return s;
}

static const dml__kern kern_avx512 = {DML__ISA_AVX512, xwt512, atx512,
                                      softmax_xent512, sumsq512};

/* ---------------------------------------------------------------- */
/* AVX2 + FMA: the same shapes in 8-float vectors and 16 registers.  */

#define T256 __attribute__((target("avx2,fma")))
#define I256 static inline __attribute__((always_inline, target("avx2,fma")))

static const int32_t mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                     0, 0, 0, 0, 0, 0, 0, 0};

/* Lanes [0, rem - 8*v) of vector v of a tail, as a maskload mask. */
I256 __m256i mask256(size_t rem, int v)
{
	size_t lo = (size_t)v * 8;
	size_t on = rem <= lo ? 0 : rem - lo >= 8 ? 8 : rem - lo;
	return _mm256_loadu_si256((const __m256i *)(mask_tab + 8 - on));
}

I256 float hsum256(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

I256 void xwt256_rc(const int R, const int C, size_t d, const float *x,
                    const float *xn, const float *w, size_t ldw,
                    const float *bias, float *out, size_t ldo)
{
	__m256 acc[8][6], xv[8];
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int c = 0; c < C; c++)
			acc[r][c] = _mm256_setzero_ps();
	size_t j = 0;
	for (; j + 8 <= d; j += 8) {
		UNROLL for (int r = 0; r < R; r++) {
			xv[r] = _mm256_loadu_ps(x + r * d + j);
			if (j % 16 == 0)
				_mm_prefetch((const char *)(xn + r * d + j), _MM_HINT_T0);
		}
		UNROLL for (int c = 0; c < C; c++) {
			__m256 wv = _mm256_loadu_ps(w + c * ldw + j);
			if (R > 1)
				IN_REG(wv);
			UNROLL for (int r = 0; r < R; r++)
				acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
		}
	}
	if (j < d) {
		__m256i m = mask256(d - j, 0);
		UNROLL for (int r = 0; r < R; r++)
			xv[r] = _mm256_maskload_ps(x + r * d + j, m);
		UNROLL for (int c = 0; c < C; c++) {
			__m256 wv = _mm256_maskload_ps(w + c * ldw + j, m);
			UNROLL for (int r = 0; r < R; r++)
				acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
		}
	}
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int c = 0; c < C; c++)
			out[c * ldo + r] = hsum256(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

I256 void xwt256_rows(const int R, const int C, size_t n, size_t d,
                      const float *x, size_t avail, const float *w,
                      size_t ldw, const float *bias, float *out, size_t ldo)
{
	size_t i = 0;
	for (; i + (size_t)R <= n; i += (size_t)R) {
		/* prefetch the next R rows, while there are (avail: rows
		 * from x to the end of the batch) */
		size_t next = i + 2 * (size_t)R <= avail ? i + (size_t)R : i;
		xwt256_rc(R, C, d, x + i * d, x + next * d, w, ldw, bias, out + i, ldo);
	}
	for (; i < n; i++)
		xwt256_rc(1, C, d, x + i * d, x + i * d, w, ldw, bias, out + i, ldo);
}

T256 static void xwt256(size_t n, size_t d, size_t k, const float *x,
                        const float *w, size_t ldw, const float *bias,
                        float *out, size_t ldo)
{
	for (size_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
		size_t nb = n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK;
		const float *xb = x + i0 * d;
		for (size_t c0 = 0; c0 < k;) {
			size_t cc = chunk_size(k - c0, 6);
			const float *wc = w + c0 * ldw, *bc = bias ? bias + c0 : NULL;
			float *oc = out + c0 * ldo + i0;
#define XWT256(R, C) xwt256_rows(R, C, nb, d, xb, n - i0, wc, ldw, bc, oc, ldo)
			switch (cc) {
			case 1: XWT256(6, 1); break;
			case 2: XWT256(4, 2); break;
			case 3: XWT256(3, 3); break;
			case 4: XWT256(2, 4); break;
			case 5: XWT256(2, 5); break;
			default: XWT256(2, 6); break;
			}
#undef XWT256
			c0 += cc;
		}
	}
}

I256 void atx256_cj(const int C, const int J, const int TAIL, size_t n,
                    size_t d, size_t rem, const float *a, size_t lda,
                    const float *x, const float *w, float l2, float *g,
                    int accumulate, pf_stream *pf)
{
	uintptr_t pf_at = pf->at, pf_end = pf->end;
	__m256 acc[6][8], xv[8];
	__m256i mk[8];
	UNROLL for (int v = 0; v < J; v++)
		mk[v] = TAIL ? mask256(rem, v) : _mm256_set1_epi32(-1);
	if (accumulate) {
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = TAIL ? _mm256_maskload_ps(g + c * d + v * 8, mk[v])
				                 : _mm256_loadu_ps(g + c * d + v * 8);
	} else if (w) {
		__m256 l2v = _mm256_set1_ps(l2);
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = _mm256_mul_ps(l2v, TAIL ? _mm256_maskload_ps(
					w + c * d + v * 8, mk[v]) : _mm256_loadu_ps(w + c * d + v * 8));
	} else {
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = _mm256_setzero_ps();
	}
	for (size_t i = 0; i < n; i++) {
		const float *xi = x + i * d, *ai = a + i;
		const float *xp = x + (i + PREFETCH_ROWS < n ? i + PREFETCH_ROWS : i) * d;
		UNROLL for (int v = 0; v < J; v++) {
			xv[v] = TAIL ? _mm256_maskload_ps(xi + v * 8, mk[v])
			             : _mm256_loadu_ps(xi + v * 8);
			if (v % 2 == 0)
				_mm_prefetch((const char *)(xp + v * 8), _MM_HINT_T0);
		}
		if (pf_at < pf_end) {
			_mm_prefetch((const char *)pf_at, _MM_HINT_T1);
			_mm_prefetch((const char *)(pf_at + 64), _MM_HINT_T1);
			pf_at += 128;
		}
		UNROLL for (int c = 0; c < C; c++) {
			__m256 av = _mm256_broadcast_ss(ai + (size_t)c * lda);
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = _mm256_fmadd_ps(av, xv[v], acc[c][v]);
		}
	}
	UNROLL for (int c = 0; c < C; c++)
		UNROLL for (int v = 0; v < J; v++) {
			if (TAIL)
				_mm256_maskstore_ps(g + c * d + v * 8, mk[v], acc[c][v]);
			else
				_mm256_storeu_ps(g + c * d + v * 8, acc[c][v]);
		}
	pf->at = pf_at;
}

I256 void atx256_cols(const int C, const int J, size_t n, size_t d,
                      const float *a, size_t lda, const float *x,
                      const float *w, float l2, float *g, int accumulate,
                      pf_stream *pf)
{
	size_t j = 0, step = (size_t)J * 8;
	size_t head = (8 - (size_t)((uintptr_t)x / sizeof(float)) % 8) % 8;
	if (head && d > head) {
		atx256_cj(C, J, 1, n, d, head, a, lda, x, w, l2, g, accumulate, pf);
		j = head;
	}
	for (; j + step <= d; j += step)
		atx256_cj(C, J, 0, n, d, 0, a, lda, x + j, w ? w + j : NULL, l2, g + j,
		          accumulate, pf);
	if (j < d)
		atx256_cj(C, J, 1, n, d, d - j, a, lda, x + j, w ? w + j : NULL, l2, g + j,
		          accumulate, pf);
}

T256 static void atx256(size_t n, size_t d, size_t k, const float *a,
                        size_t lda, const float *x, const float *w, float l2,
                        float *g, int accumulate, const void *pfp,
                        size_t pf_bytes)
{
	pf_stream pf = pf_make(pfp, pf_bytes);
	for (size_t c0 = 0; c0 < k;) {
		size_t cc = chunk_size(k - c0, 6);
		const float *ac = a + c0 * lda, *wc = w ? w + c0 * d : NULL;
		float *gc = g + c0 * d;
#define ATX256(C, J) atx256_cols(C, J, n, d, ac, lda, x, wc, l2, gc, accumulate, &pf)
		switch (cc) {
		case 1: ATX256(1, 8); break;
		case 2: ATX256(2, 4); break;
		case 3: ATX256(3, 3); break;
		case 4: ATX256(4, 2); break;
		case 5: ATX256(5, 2); break;
		default: ATX256(6, 2); break;
		}
#undef ATX256
		c0 += cc;
	}
}

/* exp512's algorithm; 2^n is built in the exponent bits. */
I256 __m256 exp256(__m256 x)
{
	x = _mm256_max_ps(x, _mm256_set1_ps(-87.33654f));
	x = _mm256_min_ps(x, _mm256_set1_ps(88.37626f));
	__m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
	                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 p = _mm256_set1_ps(1.9875691500e-4f);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
	p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	__m256i e = _mm256_slli_epi32(
		_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

T256 static double softmax_xent256(size_t n, size_t k, float *z, size_t ldz,
                                   const float *y, float scale, float *dsum)
{
	double loss = 0;
	float part[8], sums[8];
	const __m256 scv = _mm256_set1_ps(scale), zero = _mm256_setzero_ps();
	for (size_t i = 0; i < n; i += 8) {
		__m256i m = mask256(n - i, 0);
		__m256i yv = _mm256_cvttps_epi32(_mm256_maskload_ps(y + i, m));
		__m256 mx = _mm256_set1_ps(-INFINITY), zy = zero;
		for (size_t c = 0; c < k; c++) {
			__m256 zc = _mm256_maskload_ps(z + c * ldz + i, m);
			__m256 is_y = _mm256_castsi256_ps(
				_mm256_cmpeq_epi32(yv, _mm256_set1_epi32((int)c)));
			mx = _mm256_max_ps(mx, zc);
			zy = _mm256_blendv_ps(zy, zc, is_y);
		}
		__m256 sv = zero;
		for (size_t c = 0; c < k; c++) {
			float *zc = z + c * ldz + i;
			__m256 e = exp256(_mm256_sub_ps(_mm256_maskload_ps(zc, m), mx));
			_mm256_maskstore_ps(zc, m, e);
			sv = _mm256_add_ps(sv, e);
		}
		_mm256_storeu_ps(part, _mm256_sub_ps(mx, zy));
		_mm256_storeu_ps(sums, sv);
		loss += block_loss(part, sums, n - i < 8 ? n - i : 8);
		__m256 inv = _mm256_div_ps(scv, sv);
		for (size_t c = 0; c < k; c++) {
			float *zc = z + c * ldz + i;
			__m256 is_y = _mm256_castsi256_ps(
				_mm256_cmpeq_epi32(yv, _mm256_set1_epi32((int)c)));
			__m256 dv = _mm256_mul_ps(_mm256_maskload_ps(zc, m), inv);
			dv = _mm256_sub_ps(dv, _mm256_and_ps(is_y, scv));
			_mm256_maskstore_ps(zc, m, dv);
			if (dsum)
				dsum[c] += hsum256(_mm256_and_ps(dv, _mm256_castsi256_ps(m)));
		}
	}
	return loss;
}

T256 static double sumsq256(const float *v, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		__m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + i + 8);
		__m256 c = _mm256_loadu_ps(v + i + 16), e = _mm256_loadu_ps(v + i + 24);
		s0 = _mm256_fmadd_ps(a, a, s0);
		s1 = _mm256_fmadd_ps(b, b, s1);
		s2 = _mm256_fmadd_ps(c, c, s2);
		s3 = _mm256_fmadd_ps(e, e, s3);
	}
	s0 = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
	float lanes[8];
	_mm256_storeu_ps(lanes, s0);
	double s = 0;
	for (int l = 0; l < 8; l++)
		s += lanes[l];
	for (; i < n; i++)
		s += (double)v[i] * v[i];
	return s;
}

static const dml__kern kern_avx2 = {DML__ISA_AVX2, xwt256, atx256,
                                    softmax_xent256, sumsq256};
#endif /* x86 */

int dml__isa_supported(int isa)
{
	switch (isa) {
	case DML__ISA_PORTABLE:
		return 1;
#ifdef DML__X86
	case DML__ISA_AVX2:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	case DML__ISA_AVX512:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx512f") != 0;
#endif
	default:
		return 0;
	}
}

int dml__isa_best(void)
{
	for (int isa = DML__ISA_COUNT - 1; isa > 0; isa--)
		if (dml__isa_supported(isa))
			return isa;
	return DML__ISA_PORTABLE;
}

const char *dml__isa_name(int isa)
{
	switch (isa) {
	case DML__ISA_PORTABLE: return "portable";
	case DML__ISA_AVX2: return "avx2";
	case DML__ISA_AVX512: return "avx512";
	default: return "?";
	}
}

int dml__kern_get(dml__kern *kr, int isa)
{
	if (!kr || !dml__isa_supported(isa))
		return DML_EINVAL;
	switch (isa) {
#ifdef DML__X86
	case DML__ISA_AVX512: *kr = kern_avx512; break;
	case DML__ISA_AVX2: *kr = kern_avx2; break;
#endif
	default: *kr = kern_port; break;
	}
	return 0;
}

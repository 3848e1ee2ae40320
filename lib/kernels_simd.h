/*
 * kernels_simd.h - the vector kernels (kernels.h), written once for any
 * vector width. Not a header of its own: kernels_avx512.c and
 * kernels_avx2.c each include it once, after defining
 *
 *   SIMD(name)     the instance's name for `name` (xwt -> xwt512)
 *   SIMD_TARGET    the target attribute string ("avx512f", "avx2,fma")
 *   SIMD_ISA       its DML__ISA_* value
 *   SIMD_KERN      the name of the kernel table it defines
 *   VW             floats per vector
 *   CMAX           classes per register block (the accumulators must fit
 *                  the register file: 10 for 32 registers, 6 for 16)
 *   PF_EVERY       vectors per 64-byte line (each line is prefetched once)
 *   XWT_SHAPES(X)  X(classes, R, C) for each chunk size but the largest,
 *   XWT_LAST       (R, C) for the largest: the rows x classes register
 *                  block of X W^T
 *   ATX_SHAPES(X), ATX_LAST    the same for A^T X: classes x vectors
 *
 * and the primitives, always-inline functions with the target attribute:
 * vf (a vector of floats), vi (of 32-bit integers), vtail (the lanes of a
 * vector tail), vsel (lanes chosen by a comparison), and v_zero, v_set1,
 * v_load, v_loadm (masked by a vtail), v_store, v_storem, v_fma (a*b + c),
 * v_fnma (c - a*b), v_add, v_sub, v_mul, v_div, v_max, v_min, v_sum (the
 * sum of the lanes), v_tail(rem, v) (lanes [0, rem - VW*v) of vector v),
 * v_all, v_bcast (a float from memory in every lane), v_round (to the
 * nearest integer), v_scale2(p, n) (p * 2^n), v_cvtt (to integers,
 * truncating), v_eq(i, c) (lanes equal to c), v_select(m, a, b) (a where m,
 * else b), v_sub_where(m, a, b) (a - b where m, else a), v_keep(t, v) (v in
 * the tail's lanes, 0 elsewhere).
 *
 * Why one template: the two instances differ only in those primitives and
 * in the block shapes; written twice, they drifted (and the duplicate
 * finder flagged 80 lines).
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

#include <math.h>

/* Full unrolling of the loops over the register block (gcc needs the
 * pragma; clang's spelling of it differs). */
#ifdef __clang__
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

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

/* Adds, in double, the losses mx - zy + log(s) of the first `lanes`
 * rows of a vector block. */
static double block_loss(const float *part, const float *sums, size_t lanes)
{
	double loss = 0;
	for (size_t l = 0; l < lanes; l++)
		loss += (double)part[l] + log((double)sums[l]);
	return loss;
}


#define TSIMD __attribute__((target(SIMD_TARGET)))
#define APPLY(m, args) m args
#define ISIMD static inline __attribute__((always_inline, target(SIMD_TARGET)))

/* R rows x C classes: out[c*ldo + r] for rows x[0..R) (stride d) and
 * classes w[0..C) (stride ldw); prefetches the rows at xn meanwhile. */
ISIMD void SIMD(xwt_rc)(const int R, const int C, size_t d, const float *x,
                        const float *xn, const float *w, size_t ldw,
                        const float *bias, float *out, size_t ldo)
{
	vf acc[8][CMAX], xv[8];
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int c = 0; c < C; c++)
			acc[r][c] = v_zero();
	size_t j = 0;
	for (; j + VW <= d; j += VW) {
		UNROLL for (int r = 0; r < R; r++) {
			xv[r] = v_load(x + r * d + j);
			if (PF_EVERY == 1 || j % (VW * PF_EVERY) == 0)
				_mm_prefetch((const char *)(xn + r * d + j), _MM_HINT_T0);
		}
		UNROLL for (int c = 0; c < C; c++) {
			vf wv = v_load(w + c * ldw + j);
			if (R > 1)
				IN_REG(wv);
			UNROLL for (int r = 0; r < R; r++)
				acc[r][c] = v_fma(xv[r], wv, acc[r][c]);
		}
	}
	if (j < d) {
		vtail m = v_tail(d - j, 0);
		UNROLL for (int r = 0; r < R; r++)
			xv[r] = v_loadm(m, x + r * d + j);
		UNROLL for (int c = 0; c < C; c++) {
			vf wv = v_loadm(m, w + c * ldw + j);
			UNROLL for (int r = 0; r < R; r++)
				acc[r][c] = v_fma(xv[r], wv, acc[r][c]);
		}
	}
	UNROLL for (int r = 0; r < R; r++)
		UNROLL for (int c = 0; c < C; c++)
			out[c * ldo + r] = v_sum(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

/* Rows [0, n) of a block, C classes, R rows at a time. */
ISIMD void SIMD(xwt_rows)(const int R, const int C, size_t n, size_t d,
                          const float *x, size_t avail, const float *w,
                          size_t ldw, const float *bias, float *out, size_t ldo)
{
	size_t i = 0;
	for (; i + (size_t)R <= n; i += (size_t)R) {
		/* prefetch the next R rows, while there are (avail: rows
		 * from x to the end of the batch) */
		size_t next = i + 2 * (size_t)R <= avail ? i + (size_t)R : i;
		SIMD(xwt_rc)(R, C, d, x + i * d, x + next * d, w, ldw, bias, out + i, ldo);
	}
	for (; i < n; i++)
		SIMD(xwt_rc)(1, C, d, x + i * d, x + i * d, w, ldw, bias, out + i, ldo);
}

TSIMD static void SIMD(xwt)(size_t n, size_t d, size_t k, const float *x,
                            const float *w, size_t ldw, const float *bias,
                            float *out, size_t ldo)
{
	for (size_t i0 = 0; i0 < n; i0 += ROW_BLOCK) {
		size_t nb = n - i0 < ROW_BLOCK ? n - i0 : ROW_BLOCK;
		const float *xb = x + i0 * d;
		for (size_t c0 = 0; c0 < k;) {
			size_t cc = chunk_size(k - c0, CMAX);
			const float *wc = w + c0 * ldw, *bc = bias ? bias + c0 : NULL;
			float *oc = out + c0 * ldo + i0;
#define XWT_CASE(classes, R, C)                                                \
	case classes:                                                          \
		SIMD(xwt_rows)(R, C, nb, d, xb, n - i0, wc, ldw, bc, oc, ldo); \
		break;
#define XWT_DEFAULT(R, C)                                                      \
	default:                                                               \
		SIMD(xwt_rows)(R, C, nb, d, xb, n - i0, wc, ldw, bc, oc, ldo);
			switch (cc) {
				XWT_SHAPES(XWT_CASE)
				APPLY(XWT_DEFAULT, XWT_LAST)
			}
#undef XWT_CASE
#undef XWT_DEFAULT
			c0 += cc;
		}
	}
}

/* C classes x J vectors of features starting at column j0 (x, w and g
 * point there); rem = d - j0 when this is the tail block (TAIL). */
ISIMD void SIMD(atx_cj)(const int C, const int J, const int TAIL, size_t n,
                        size_t d, size_t rem, const float *a, size_t lda,
                        const float *x, const float *w, float l2, float *g,
                        int accumulate, pf_stream *pf)
{
	uintptr_t pf_at = pf->at, pf_end = pf->end;
	vf acc[CMAX][8], xv[8];
	vtail mk[8];
	UNROLL for (int v = 0; v < J; v++)
		mk[v] = TAIL ? v_tail(rem, v) : v_all();
	if (accumulate) {
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = TAIL ? v_loadm(mk[v], g + c * d + v * VW)
				                 : v_load(g + c * d + v * VW);
	} else if (w) {
		vf l2v = v_set1(l2);
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = v_mul(l2v, TAIL ? v_loadm(mk[v], w + c * d + v * VW)
				                            : v_load(w + c * d + v * VW));
	} else {
		UNROLL for (int c = 0; c < C; c++)
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = v_zero();
	}
	for (size_t i = 0; i < n; i++) {
		const float *xi = x + i * d, *ai = a + i;
		const float *xp = x + (i + PREFETCH_ROWS < n ? i + PREFETCH_ROWS : i) * d;
		UNROLL for (int v = 0; v < J; v++) {
			xv[v] = TAIL ? v_loadm(mk[v], xi + v * VW) : v_load(xi + v * VW);
			if (v % PF_EVERY == 0)
				_mm_prefetch((const char *)(xp + v * VW), _MM_HINT_T0);
		}
		if (pf_at < pf_end) {
			_mm_prefetch((const char *)pf_at, _MM_HINT_T1);
			_mm_prefetch((const char *)(pf_at + 64), _MM_HINT_T1);
			pf_at += 128;
		}
		UNROLL for (int c = 0; c < C; c++) {
			vf av = v_bcast(ai + (size_t)c * lda);
			UNROLL for (int v = 0; v < J; v++)
				acc[c][v] = v_fma(av, xv[v], acc[c][v]);
		}
	}
	UNROLL for (int c = 0; c < C; c++)
		UNROLL for (int v = 0; v < J; v++) {
			if (TAIL)
				v_storem(g + c * d + v * VW, mk[v], acc[c][v]);
			else
				v_store(g + c * d + v * VW, acc[c][v]);
		}
	pf->at = pf_at;
}

ISIMD void SIMD(atx_cols)(const int C, const int J, size_t n, size_t d,
                          const float *a, size_t lda, const float *x,
                          const float *w, float l2, float *g, int accumulate,
                          pf_stream *pf)
{
	size_t j = 0, step = (size_t)J * VW;
	/* a head block up to the first vector boundary of x, so that the
	 * loads of the full blocks (of every row, when d % VW == 0) do not
	 * straddle cache lines */
	size_t head = (VW - (size_t)((uintptr_t)x / sizeof(float)) % VW) % VW;
	if (head && d > head) {
		SIMD(atx_cj)(C, J, 1, n, d, head, a, lda, x, w, l2, g, accumulate, pf);
		j = head;
	}
	for (; j + step <= d; j += step)
		SIMD(atx_cj)(C, J, 0, n, d, 0, a, lda, x + j, w ? w + j : NULL, l2,
		             g + j, accumulate, pf);
	if (j < d)
		SIMD(atx_cj)(C, J, 1, n, d, d - j, a, lda, x + j, w ? w + j : NULL, l2,
		             g + j, accumulate, pf);
}

TSIMD static void SIMD(atx)(size_t n, size_t d, size_t k, const float *a,
                            size_t lda, const float *x, const float *w, float l2,
                            float *g, int accumulate, const void *pfp,
                            size_t pf_bytes)
{
	pf_stream pf = pf_make(pfp, pf_bytes);
	for (size_t c0 = 0; c0 < k;) {
		size_t cc = chunk_size(k - c0, CMAX);
		const float *ac = a + c0 * lda, *wc = w ? w + c0 * d : NULL;
		float *gc = g + c0 * d;
#define ATX_CASE(classes, C, J)                                                \
	case classes:                                                          \
		SIMD(atx_cols)(C, J, n, d, ac, lda, x, wc, l2, gc, accumulate, &pf); \
		break;
#define ATX_DEFAULT(C, J)                                                      \
	default:                                                               \
		SIMD(atx_cols)(C, J, n, d, ac, lda, x, wc, l2, gc, accumulate, &pf);
		switch (cc) {
			ATX_SHAPES(ATX_CASE)
			APPLY(ATX_DEFAULT, ATX_LAST)
		}
#undef ATX_CASE
#undef ATX_DEFAULT
		c0 += cc;
	}
}

/* exp(x) for x <= 88: Cephes' expf (range reduction by ln 2, degree-6
 * polynomial), about 1 ulp; inputs below -87.3 give ~1e-38, not 0. */
ISIMD vf SIMD(exp)(vf x)
{
	x = v_max(x, v_set1(-87.33654f));
	x = v_min(x, v_set1(88.37626f));
	vf n = v_round(v_mul(x, v_set1(1.44269504f)));
	vf r = v_fnma(n, v_set1(0.693359375f), x);
	r = v_fnma(n, v_set1(-2.12194440e-4f), r);
	vf p = v_set1(1.9875691500e-4f);
	p = v_fma(p, r, v_set1(1.3981999507e-3f));
	p = v_fma(p, r, v_set1(8.3334519073e-3f));
	p = v_fma(p, r, v_set1(4.1665795894e-2f));
	p = v_fma(p, r, v_set1(1.6666665459e-1f));
	p = v_fma(p, r, v_set1(5.0000001201e-1f));
	p = v_fma(p, v_mul(r, r), v_add(r, v_set1(1.0f)));
	return v_scale2(p, n);
}

/* VW rows at a time, one vector per class: max, exp and sum run down the
 * classes, across rows, with no reduction inside a vector. */
TSIMD static double SIMD(softmax_xent)(size_t n, size_t k, float *z, size_t ldz,
                                       const float *y, float scale, float *dsum)
{
	double loss = 0;
	float part[VW], sums[VW];
	const vf scv = v_set1(scale);
	for (size_t i = 0; i < n; i += VW) {
		vtail m = v_tail(n - i, 0);
		vi yv = v_cvtt(v_loadm(m, y + i));
		vf mx = v_set1(-INFINITY), zy = v_zero();
		for (size_t c = 0; c < k; c++) {
			vf zc = v_loadm(m, z + c * ldz + i);
			mx = v_max(mx, zc);
			zy = v_select(v_eq(yv, (int)c), zc, zy);
		}
		vf sv = v_zero();
		for (size_t c = 0; c < k; c++) {
			float *zc = z + c * ldz + i;
			vf e = SIMD(exp)(v_sub(v_loadm(m, zc), mx));
			v_storem(zc, m, e);
			sv = v_add(sv, e);
		}
		v_store(part, v_sub(mx, zy));
		v_store(sums, sv);
		loss += block_loss(part, sums, n - i < VW ? n - i : VW);
		vf inv = v_div(scv, sv);
		for (size_t c = 0; c < k; c++) {
			float *zc = z + c * ldz + i;
			vf dv = v_mul(v_loadm(m, zc), inv);
			dv = v_sub_where(v_eq(yv, (int)c), dv, scv);
			v_storem(zc, m, dv);
			if (dsum)
				dsum[c] += v_sum(v_keep(m, dv));
		}
	}
	return loss;
}

TSIMD static double SIMD(sumsq)(const float *v, size_t n)
{
	vf s0 = v_zero(), s1 = s0, s2 = s0, s3 = s0;
	size_t i = 0;
	for (; i + 4 * VW <= n; i += 4 * VW) {
		vf a = v_load(v + i), b = v_load(v + i + VW);
		vf c = v_load(v + i + 2 * VW), e = v_load(v + i + 3 * VW);
		s0 = v_fma(a, a, s0);
		s1 = v_fma(b, b, s1);
		s2 = v_fma(c, c, s2);
		s3 = v_fma(e, e, s3);
	}
	for (; i < n; i += VW) {
		vf a = v_loadm(v_tail(n - i, 0), v + i);
		s0 = v_fma(a, a, s0);
	}
	s0 = v_add(v_add(s0, s1), v_add(s2, s3));
	/* the lanes are summed in double: VW partial sums in float lose
	 * little; one float sum of the lot would lose more */
	float lanes[VW];
	v_store(lanes, s0);
	double s = 0;
	for (int l = 0; l < VW; l++)
		s += lanes[l];
	return s;
}

const dml__kern SIMD_KERN = {SIMD_ISA, SIMD(xwt), SIMD(atx),
                                     SIMD(softmax_xent), SIMD(sumsq)};

#undef TSIMD
#undef ISIMD
#undef APPLY

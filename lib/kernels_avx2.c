/*
 * kernels_avx2.c - the vector kernels (kernels_simd.h) for AVX2 and FMA:
 * 8-float vectors, 16 registers (register blocks of up to 6 classes),
 * vector masks for the tails (maskload) and the comparisons (blend).
 * Built without -march flags: the functions carry target attributes, and
 * the kernels are used only on CPUs that have both (dml__isa_supported).
 */
#include "kernels.h"

#ifdef DML__X86
#include <immintrin.h>

#define I256 static inline __attribute__((always_inline, target("avx2,fma")))

typedef __m256 vf;
typedef __m256i vi;
typedef __m256i vtail;
typedef __m256 vsel;

static const int32_t mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                     0, 0, 0, 0, 0, 0, 0, 0};

I256 vf v_zero(void) { return _mm256_setzero_ps(); }
I256 vf v_set1(float x) { return _mm256_set1_ps(x); }
I256 vf v_load(const float *p) { return _mm256_loadu_ps(p); }
I256 vf v_loadm(vtail m, const float *p) { return _mm256_maskload_ps(p, m); }
I256 void v_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
I256 void v_storem(float *p, vtail m, vf v) { _mm256_maskstore_ps(p, m, v); }
I256 vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
I256 vf v_fnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
I256 vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
I256 vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
I256 vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
I256 vf v_div(vf a, vf b) { return _mm256_div_ps(a, b); }
I256 vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); }
I256 vf v_min(vf a, vf b) { return _mm256_min_ps(a, b); }
I256 vtail v_all(void) { return _mm256_set1_epi32(-1); }
I256 vf v_bcast(const float *p) { return _mm256_broadcast_ss(p); }
I256 vi v_cvtt(vf v) { return _mm256_cvttps_epi32(v); }
I256 vsel v_eq(vi a, int c)
{
	return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, _mm256_set1_epi32(c)));
}
I256 vf v_select(vsel m, vf a, vf b) { return _mm256_blendv_ps(b, a, m); }
I256 vf v_sub_where(vsel m, vf a, vf b) { return _mm256_sub_ps(a, _mm256_and_ps(m, b)); }
I256 vf v_keep(vtail m, vf v) { return _mm256_and_ps(v, _mm256_castsi256_ps(m)); }

I256 float v_sum(vf v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

I256 vf v_round(vf x)
{
	return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* p * 2^n, with 2^n built in the exponent bits (AVX2 has no scalef). */
I256 vf v_scale2(vf p, vf n)
{
	__m256i e = _mm256_slli_epi32(
		_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* Lanes [0, rem - 8*v) of vector v of a tail, as a maskload mask. */
I256 vtail v_tail(size_t rem, int v)
{
	size_t lo = (size_t)v * 8;
	size_t on = rem <= lo ? 0 : rem - lo >= 8 ? 8 : rem - lo;
	return _mm256_loadu_si256((const __m256i *)(mask_tab + 8 - on));
}

#define SIMD(name) name##256
#define SIMD_TARGET "avx2,fma"
#define SIMD_ISA DML__ISA_AVX2
#define SIMD_KERN dml__kern_avx2
#define VW 8
#define CMAX 6
#define PF_EVERY 2
#define XWT_SHAPES(X) X(1, 6, 1) X(2, 4, 2) X(3, 3, 3) X(4, 2, 4) X(5, 2, 5)
#define XWT_LAST (2, 6)
#define ATX_SHAPES(X) X(1, 1, 8) X(2, 2, 4) X(3, 3, 3) X(4, 4, 2) X(5, 5, 2)
#define ATX_LAST (6, 2)
#include "kernels_simd.h"

#endif /* DML__X86 */

/*
 * kernels_avx512.c - the vector kernels (kernels_simd.h) for AVX-512F:
 * 16-float vectors, 32 registers (register blocks of up to 10 classes),
 * mask registers for the tails and the comparisons. Built without -march
 * flags: the functions carry target attributes, and the kernels are used
 * only on CPUs that have AVX-512F (dml__isa_supported).
 */
#include "kernels.h"

#ifdef DML__X86
#include <immintrin.h>

#define I512 static inline __attribute__((always_inline, target("avx512f")))

typedef __m512 vf;
typedef __m512i vi;
typedef __mmask16 vtail;
typedef __mmask16 vsel;

I512 vf v_zero(void) { return _mm512_setzero_ps(); }
I512 vf v_set1(float x) { return _mm512_set1_ps(x); }
I512 vf v_load(const float *p) { return _mm512_loadu_ps(p); }
I512 vf v_loadm(vtail m, const float *p) { return _mm512_maskz_loadu_ps(m, p); }
I512 void v_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
I512 void v_storem(float *p, vtail m, vf v) { _mm512_mask_storeu_ps(p, m, v); }
I512 vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
I512 vf v_fnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
I512 vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
I512 vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
I512 vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
I512 vf v_div(vf a, vf b) { return _mm512_div_ps(a, b); }
I512 vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }
I512 vf v_min(vf a, vf b) { return _mm512_min_ps(a, b); }
I512 float v_sum(vf v) { return _mm512_reduce_add_ps(v); }
I512 vtail v_all(void) { return (vtail)0xFFFF; }
I512 vf v_bcast(const float *p) { return _mm512_set1_ps(*p); }
I512 vi v_cvtt(vf v) { return _mm512_cvttps_epi32(v); }
I512 vsel v_eq(vi a, int c) { return _mm512_cmpeq_epi32_mask(a, _mm512_set1_epi32(c)); }
I512 vf v_select(vsel m, vf a, vf b) { return _mm512_mask_mov_ps(b, m, a); }
I512 vf v_sub_where(vsel m, vf a, vf b) { return _mm512_mask_sub_ps(a, m, a, b); }
I512 vf v_keep(vtail m, vf v) { return _mm512_maskz_mov_ps(m, v); }
I512 vf v_scale2(vf p, vf n) { return _mm512_scalef_ps(p, n); }

I512 vf v_round(vf x)
{
	return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Lanes [0, rem - 16*v) of vector v of a tail. */
I512 vtail v_tail(size_t rem, int v)
{
	size_t lo = (size_t)v * 16;
	if (rem <= lo)
		return 0;
	if (rem >= lo + 16)
		return (vtail)0xFFFF;
	return (vtail)((1u << (rem - lo)) - 1u);
}

#define SIMD(name) name##512
#define SIMD_TARGET "avx512f"
#define SIMD_ISA DML__ISA_AVX512
#define SIMD_KERN dml__kern_avx512
#define VW 16
#define CMAX 10
#define PF_EVERY 1
#define XWT_SHAPES(X) X(1, 8, 1) X(2, 8, 2) X(3, 6, 3) X(4, 4, 4) X(5, 4, 5) \
	X(6, 3, 6) X(7, 2, 7) X(8, 2, 8) X(9, 2, 9)
#define XWT_LAST (2, 10)
#define ATX_SHAPES(X) X(1, 1, 8) X(2, 2, 8) X(3, 3, 6) X(4, 4, 4) X(5, 5, 4) \
	X(6, 6, 3) X(7, 7, 2) X(8, 8, 2) X(9, 9, 2)
#define ATX_LAST (10, 2)
#include "kernels_simd.h"

#endif /* DML__X86 */

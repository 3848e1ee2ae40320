/*
 * kernels.c - the dense kernels behind the built-in models: X W^T (forward),
 * A^T X (weight gradient), row-wise softmax cross-entropy and a sum of
 * squares. The portable versions are here, with the choice of a version
 * for the CPU; the vector versions are one template (kernels_simd.h),
 * built for AVX-512F (kernels_avx512.c) and AVX2+FMA (kernels_avx2.c).
 */
#include "kernels.h"

#include <math.h>

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
	case DML__ISA_AVX512: *kr = dml__kern_avx512; break;
	case DML__ISA_AVX2: *kr = dml__kern_avx2; break;
#endif
	default: *kr = kern_port; break;
	}
	return 0;
}

/*
 * kernels.h - dense float kernels for the built-in models, and what
 * model.c and model_softmax.c share. Not installed.
 *
 * Each kernel exists in a portable version (kernels.c) and, on x86-64 with
 * gcc or clang, in AVX2+FMA and AVX-512 versions of one template
 * (kernels_simd.h, built by kernels_avx2.c and kernels_avx512.c) compiled
 * with target attributes (the library itself is built without -march
 * flags). A model picks the
 * best version the CPU supports when it is created (dml__isa_best) and
 * keeps the function pointers, so the choice costs nothing per call; tests
 * force each version with dml__model_set_isa.
 *
 * The kernels allocate nothing and keep no state: thread-safe on disjoint
 * outputs. Matrices are row-major with the strides given.
 */
#ifndef DISTML_KERNELS_H
#define DISTML_KERNELS_H

#include "internal.h"

enum {
	DML__ISA_PORTABLE = 0,
	DML__ISA_AVX2 = 1,   /* AVX2 + FMA, 8 floats a vector */
	DML__ISA_AVX512 = 2, /* AVX-512F, 16 floats a vector */
	DML__ISA_COUNT = 3,
};

typedef struct dml__kern {
	int isa;
	/* The forward of a linear layer, X W^T + b, written class-major:
	 * out[c*ldo + i] = bias[c] + sum_j x[i*d + j] * w[c*ldw + j] for i < n,
	 * c < k (bias may be NULL: 0). With W from dml__align_w, no vector
	 * load straddles two cache lines (when d % 16 == 0). */
	void (*xwt)(size_t n, size_t d, size_t k, const float *x,
	            const float *w, size_t ldw, const float *bias, float *out,
	            size_t ldo);
	/* The weight gradient, A^T X + l2 W, from class-major A:
	 * g[c*d + j] = l2 * w[c*d + j] + sum_i a[c*lda + i] * x[i*d + j] for
	 * c < k, j < d (w may be NULL: 0); when `accumulate`, g += A^T X
	 * instead (w, l2 unused). g must not overlap the inputs. Meanwhile it
	 * prefetches pf_bytes from pf into L2 (pf may be NULL): the rows the
	 * caller reads next, so that their transfer from memory overlaps
	 * this arithmetic. */
	void (*atx)(size_t n, size_t d, size_t k, const float *a, size_t lda,
	            const float *x, const float *w, float l2, float *g,
	            int accumulate, const void *pf, size_t pf_bytes);
	/* Softmax cross-entropy of n rows of k logits, class-major
	 * (z[c*ldz + i]), with class labels y[i] (integers in 0..k-1, checked
	 * by the caller): z becomes (softmax - onehot(y)) * scale; dsum[c]
	 * (dsum may be NULL) gains the sum of class c's new values over the
	 * rows; returns the sum over rows of -log softmax(row)[y[i]]. */
	double (*softmax_xent)(size_t n, size_t k, float *z, size_t ldz,
	                       const float *y, float scale, float *dsum);
	/* sum of v[i]^2 */
	double (*sumsq)(const float *v, size_t n);
} dml__kern;

/* Floats of workspace dml__align_w needs for d features and k classes
 * (0 if that overflows). */
size_t dml__xwt_ws(size_t d, size_t k);
/* Copies W (k rows of d) into ws, rows ldw (a multiple of 16) apart, the
 * first at the same offset in a 64-byte line as x; returns the copy. */
const float *dml__align_w(const float *w, size_t d, size_t k,
                          const float *x, float *ws, size_t *ldw);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DML__X86 1
/* The vector kernel sets (kernels_avx512.c, kernels_avx2.c: one template,
 * kernels_simd.h, for both widths). */
extern const dml__kern dml__kern_avx512;
extern const dml__kern dml__kern_avx2;
#endif

/* The best kernel set this CPU supports (DML__ISA_*). */
int dml__isa_best(void);
/* Non-zero if this build and CPU can run `isa`. */
int dml__isa_supported(int isa);
/* "portable", "avx2", "avx512", or "?" */
const char *dml__isa_name(int isa);
/* Fills *kr with the kernels of `isa`; DML_EINVAL if not supported. */
int dml__kern_get(dml__kern *kr, int isa);

/* ---- shared by model.c and model_softmax.c ---- */

/* Every built-in model's instance starts with its kernels. */
typedef struct dml__model_head {
	dml__kern kr;
} dml__model_head;

void dml__softmax_destroy(void *self);

/* Makes the built-in model *m use the kernels of `isa` (tests, benches).
 * DML_EINVAL for a host model or an unsupported isa. */
int dml__model_set_isa(dml_model *m, int isa);

/* Checks a batch against a model: non-NULL arrays, b->dim == features
 * (DML_EDIM) and, when classes > 0, every label an integer in
 * 0..classes-1 (DML_EINVAL). */
int dml__model_check_batch(const dml_batch *b, size_t features, int classes);

/* W for xwt on the n rows at x: an aligned copy in the workspace *ws
 * (grown as needed) when that pays, else w itself; *ldw its row stride. */
const float *dml__xwt_w(float **ws, size_t *cap, const float *w, size_t d,
                        size_t k, const float *x, size_t n, size_t *ldw);

/* Grows *buf to hold at least `count` floats (contents not kept).
 * 0 or DML_ENOMEM (then *buf and *cap are unchanged). */
int dml__scratch(float **buf, size_t *cap, size_t count);

#endif

/*
 * compress.c - the gradient codecs of compress.h. Conversions are written
 * out (no _Float16, which clang 14 lacks on x86), rounding to nearest even;
 * a value beyond a format's range is clamped to its largest finite value,
 * never sent as an infinity (which a server refuses).
 */
#include "compress.h"

#include "internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_F16C 1
#endif

static uint32_t bits_of(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	return x;
}

static float float_of(uint32_t x)
{
	float f;
	memcpy(&f, &x, 4);
	return f;
}

static uint64_t next_rand(uint64_t *s) /* xorshift64* */
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ULL;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* ---- fp16 ---------------------------------------------------------- */

static uint16_t to_half(float f)
{
	uint32_t x = bits_of(f), a = x & 0x7fffffffu;
	uint16_t sign = (uint16_t)(x >> 16 & 0x8000u);
	if (a >= 0x477ff000u) /* 65520 and up would round to infinity */
		return sign | 0x7bffu;
	if (a >= 0x38800000u) { /* a normal half: 2^-14 and up */
		uint32_t e = (a >> 23) - 127 + 15, m = a & 0x7fffffu;
		uint32_t h = e << 10 | m >> 13, rem = m & 0x1fffu;
		if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
			h++;
		return (uint16_t)(sign | h);
	}
	uint32_t e = a >> 23; /* a subnormal half: round(f * 2^24) */
	if (e < 102)          /* below 2^-25: rounds to 0 */
		return sign;
	uint32_t m = (a & 0x7fffffu) | 0x800000u, shift = 126 - e; /* 14..24 */
	uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
	if (rem > half || (rem == half && (h & 1)))
		h++;
	return (uint16_t)(sign | h);
}

/* -1 for an infinity or NaN */
static int from_half(uint16_t h, float *out)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = h >> 10 & 0x1f, m = h & 0x3ffu;
	if (e == 0x1f)
		return -1;
	if (e == 0) {
		float v = (float)m * 0x1p-24f;
		*out = sign ? -v : v;
	} else {
		*out = float_of(sign | (e + 112) << 23 | m << 13);
	}
	return 0;
}

#ifdef HAVE_F16C
/* The CPU's conversions (F16C), 8 values at a time: the same results as
 * to_half and from_half for finite values (round to nearest even,
 * subnormals kept), after the same clamp. */
__attribute__((target("avx,f16c"))) static void halves_f16c(const float *v, size_t n,
                                                          uint8_t *d)
{
	const __m256 hi = _mm256_set1_ps(65504.0f), lo = _mm256_set1_ps(-65504.0f);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_max_ps(_mm256_min_ps(_mm256_loadu_ps(v + i), hi), lo);
		__m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT);
		_mm_storeu_si128((__m128i *)(void *)(d + 2 * i), h);
	}
	for (; i < n; i++) {
		uint16_t h = to_half(v[i]);
		d[2 * i] = (uint8_t)h;
		d[2 * i + 1] = (uint8_t)(h >> 8);
	}
}

__attribute__((target("avx,f16c"))) static void floats_f16c(const uint8_t *d, size_t n,
                                                          float *out)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(const void *)(d + 2 * i));
		_mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
	}
	for (; i < n; i++)
		(void)from_half((uint16_t)(d[2 * i] | d[2 * i + 1] << 8), &out[i]);
}

static int have_f16c(void)
{
	static atomic_int has = -1;
	int k = atomic_load_explicit(&has, memory_order_relaxed);
	if (k < 0) {
		/* every CPU with AVX2 has F16C (clang 14 cannot ask for f16c) */
		k = __builtin_cpu_supports("avx2") != 0;
		atomic_store_explicit(&has, k, memory_order_relaxed);
	}
	return k;
}
#endif

/* Whether one of n little-endian halves is an infinity or NaN (all-ones
 * exponent): a loop the compiler vectorises. */
static size_t first_bad_half(const uint8_t *d, size_t n)
{
	unsigned any = 0;
	for (size_t i = 0; i < n; i++)
		any |= (d[2 * i + 1] & 0x7cu) == 0x7cu;
	if (!any)
		return n;
	for (size_t i = 0; i < n; i++)
		if ((d[2 * i + 1] & 0x7cu) == 0x7cu)
			return i;
	return n;
}

/* ---- bf16 ---------------------------------------------------------- */

static uint16_t to_bf16(float f)
{
	uint32_t x = bits_of(f);
	uint32_t r = (x + 0x7fffu + (x >> 16 & 1)) >> 16;
	if ((r & 0x7f80u) == 0x7f80u) /* rounded up to infinity */
		r = (x >> 16 & 0x8000u) | 0x7f7fu;
	return (uint16_t)r;
}

static int from_bf16(uint16_t b, float *out)
{
	if ((b & 0x7f80u) == 0x7f80u)
		return -1;
	*out = float_of((uint32_t)b << 16);
	return 0;
}

/* ---- int8 (QSGD) --------------------------------------------------- */

/* The value of level q in a bucket of scale s: the encoder's error
 * feedback and the decoder compute it alike. q / 127 first: s * q would
 * overflow for a scale near FLT_MAX (a peer's claim; found by
 * fuzz_compress). */
static float level_value(float s, int q)
{
	return s * ((float)q / 127.0f);
}

/* ---- top-k --------------------------------------------------------- */

size_t dml__gc_topk_k(size_t n, float frac)
{
	if (!n)
		return 0;
	double k = ceil((double)frac * (double)n);
	if (!(k >= 1))
		return 1;
	return k >= (double)n ? n : (size_t)k;
}

/* The k-th largest of a[0..n) (1 <= k <= n), reordering a: quickselect
 * with random pivots (Hoare's partition). */
static float kth_largest(float *a, size_t n, size_t k, uint64_t *rng)
{
	ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, want = (ptrdiff_t)(n - k);
	while (lo < hi) {
		float p = a[lo + (ptrdiff_t)(next_rand(rng) % (uint64_t)(hi - lo + 1))];
		ptrdiff_t i = lo, j = hi;
		while (i <= j) {
			while (a[i] < p)
				i++;
			while (a[j] > p)
				j--;
			if (i <= j) {
				float t = a[i];
				a[i++] = a[j];
				a[j--] = t;
			}
		}
		if (want <= j)
			hi = j;
		else if (want >= i)
			lo = i;
		else
			return a[want]; /* between: equal to the pivot */
	}
	return a[want];
}

/* The k-th largest magnitude of v[0..n), exactly. With n large and k
 * small, a sample of 1024 magnitudes gives a threshold a little below it,
 * and only the values above that are selected among (a few times k
 * instead of n, as DGC samples); if the sample misjudged and fewer than
 * k are above, all n are. tmp: n floats. */
static float topk_threshold(const float *v, size_t n, size_t k, uint64_t *rng,
                            float *tmp)
{
	enum { SAMPLE = 1024 };
	if (n > 8 * SAMPLE && k < n / 16) {
		for (size_t s = 0; s < SAMPLE; s++)
			tmp[s] = fabsf(v[next_rand(rng) % n]);
		/* about twice the sample's share of k, and a few more */
		size_t c = (size_t)((double)k * SAMPLE / (double)n * 2) + 8;
		float lo = kth_largest(tmp, SAMPLE, c < SAMPLE ? c : SAMPLE, rng);
		size_t m = 0;
		for (size_t i = 0; i < n; i++) {
			float a = fabsf(v[i]);
			if (a >= lo)
				tmp[m++] = a;
		}
		if (m >= k)
			return kth_largest(tmp, m, k, rng);
	}
	for (size_t i = 0; i < n; i++)
		tmp[i] = fabsf(v[i]);
	return kth_largest(tmp, n, k, rng);
}

/* ---- the interface ------------------------------------------------- */

void dml__gc_sizes(int codec, size_t n, size_t k, size_t *nbytes,
                   size_t *nscales, size_t *nidx)
{
	*nbytes = *nscales = *nidx = 0;
	switch (codec) {
	case DML__GC_FP16:
	case DML__GC_BF16:
		*nbytes = 2 * n;
		break;
	case DML__GC_INT8:
		*nbytes = n;
		*nscales = (n + DML__GC_BUCKET - 1) / DML__GC_BUCKET;
		break;
	case DML__GC_TOPK:
		*nbytes = 4 * k;
		*nidx = k;
		break;
	default:
		*nbytes = 4 * n;
	}
}

void dml__gc_encode(int codec, const float *v, size_t n, size_t k,
                    uint64_t *rng, dml__gc_piece *p, float *back, float *tmp)
{
	uint8_t *d = p->data;
	switch (codec) {
	case DML__GC_FP16:
#ifdef HAVE_F16C
		if (have_f16c()) {
			halves_f16c(v, n, d);
			if (back)
				floats_f16c(d, n, back);
			break;
		}
#endif
		/* fall through */
	case DML__GC_BF16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h = codec == DML__GC_FP16 ? to_half(v[i]) : to_bf16(v[i]);
			d[2 * i] = (uint8_t)h;
			d[2 * i + 1] = (uint8_t)(h >> 8);
			if (back)
				(void)(codec == DML__GC_FP16 ? from_half(h, &back[i])
				                             : from_bf16(h, &back[i]));
		}
		break;
	case DML__GC_INT8:
		for (size_t b = 0; b * DML__GC_BUCKET < n; b++) {
			size_t lo = b * DML__GC_BUCKET;
			size_t hi = lo + DML__GC_BUCKET < n ? lo + DML__GC_BUCKET : n;
			float s = 0;
			for (size_t i = lo; i < hi; i++)
				s = fabsf(v[i]) > s ? fabsf(v[i]) : s;
			p->scales[b] = s;
			float inv = s > 0 ? 127.0f / s : 0;
			uint64_t bits = 0;
			for (size_t i = lo; i < hi; i++) {
				/* |v| / s * 127 + u, u uniform in [0, 1) (24 random
				 * bits; two draws per random number), truncated */
				if (!((i - lo) & 1))
					bits = next_rand(rng);
				else
					bits >>= 32;
				float u = (float)(bits & 0xffffffu) * 0x1p-24f;
				int q = (int)(fabsf(v[i]) * inv + u);
				q = q > 127 ? 127 : q;
				q = v[i] < 0 ? -q : q;
				d[i] = (uint8_t)(int8_t)q;
				if (back)
					back[i] = level_value(s, q);
			}
		}
		break;
	case DML__GC_TOPK: {
		if (!k || !n)
			break;
		float thr = topk_threshold(v, n, k, rng, tmp);
		size_t above = 0;
		for (size_t i = 0; i < n; i++)
			above += fabsf(v[i]) > thr;
		size_t ties = k - above, j = 0; /* the first ties at thr, in order */
		for (size_t i = 0; i < n && j < k; i++) {
			float a = fabsf(v[i]);
			int keep = a > thr || (a == thr && ties && ties--);
			if (back)
				back[i] = keep ? v[i] : 0;
			if (keep) {
				p->idx[j] = (uint32_t)i;
				memcpy(d + 4 * j, &v[i], 4);
				j++;
			}
		}
		if (back)
			for (size_t i = p->idx[k - 1] + 1; i < n; i++)
				back[i] = 0;
		break;
	}
	default:
		memcpy(d, v, 4 * n);
		if (back)
			memcpy(back, v, 4 * n);
	}
}

#define BAD(code, ...) (snprintf(msg, msgsz, __VA_ARGS__), (code))

int dml__gc_check(int codec, size_t n, const dml__gc_piece *p, char *msg, size_t msgsz)
{
	const uint8_t *d = p->data;
	size_t nbytes, nscales, nidx;
	if (codec <= DML__GC_NONE || codec >= DML__GC_COUNT)
		return BAD(DML_EINVAL, "unknown codec %d", codec);
	dml__gc_sizes(codec, n, p->nidx, &nbytes, &nscales, &nidx);
	if (codec == DML__GC_TOPK && p->nidx > n)
		return BAD(DML_EINVAL, "%zu values kept of %zu", p->nidx, n);
	if (p->nbytes != nbytes || p->nscales != nscales || p->nidx != nidx)
		return BAD(DML_EINVAL, "%zu bytes, %zu scales and %zu indices for %zu "
		           "values (codec %d wants %zu, %zu, %zu)", p->nbytes,
		           p->nscales, p->nidx, n, codec, nbytes, nscales, nidx);
	switch (codec) {
	case DML__GC_FP16: {
		size_t bad = first_bad_half(d, n);
		if (bad < n)
			return BAD(DML_ENONFINITE, "value %zu is not finite", bad);
		break;
	}
	case DML__GC_BF16:
		for (size_t i = 0; i < n; i++)
			if ((d[2 * i + 1] & 0x7fu) == 0x7fu && (d[2 * i] & 0x80u))
				return BAD(DML_ENONFINITE, "value %zu is not finite", i);
		break;
	case DML__GC_INT8: {
		for (size_t b = 0; b < nscales; b++)
			if (!(p->scales[b] >= 0 && p->scales[b] <= 3.4e38f)) /* NaN fails both */
				return BAD(DML_ENONFINITE, "scale %zu is not finite and >= 0", b);
		unsigned bad = 0;
		for (size_t i = 0; i < n; i++)
			bad |= d[i] == 0x80u;
		for (size_t i = 0; bad && i < n; i++)
			if (d[i] == 0x80u)
				return BAD(DML_EINVAL, "level -128 at %zu (levels: -127 to 127)", i);
		break;
	}
	case DML__GC_TOPK:
		for (size_t j = 0; j < nidx; j++) {
			uint32_t i = p->idx[j];
			if (i >= n || (j && i <= p->idx[j - 1]))
				return BAD(DML_EINVAL, "index %u at %zu: below %zu and increasing",
				           (unsigned)i, j, n);
			float x;
			memcpy(&x, d + 4 * j, 4);
			if (!isfinite(x))
				return BAD(DML_ENONFINITE, "value %zu is not finite", j);
		}
		break;
	}
	return 0;
}

void dml__gc_decode_range(int codec, const dml__gc_piece *p, size_t lo, size_t hi,
                          float *out)
{
	const uint8_t *d = p->data;
	size_t m = hi - lo;
	switch (codec) {
	case DML__GC_FP16:
#ifdef HAVE_F16C
		if (have_f16c()) {
			floats_f16c(d + 2 * lo, m, out);
			break;
		}
#endif
		for (size_t i = 0; i < m; i++)
			(void)from_half((uint16_t)(d[2 * (lo + i)] | d[2 * (lo + i) + 1] << 8), &out[i]);
		break;
	case DML__GC_BF16:
		for (size_t i = 0; i < m; i++)
			(void)from_bf16((uint16_t)(d[2 * (lo + i)] | d[2 * (lo + i) + 1] << 8), &out[i]);
		break;
	case DML__GC_INT8:
		for (size_t i = 0; i < m; i++)
			out[i] = level_value(p->scales[(lo + i) / DML__GC_BUCKET], (int8_t)d[lo + i]);
		break;
	case DML__GC_TOPK: {
		memset(out, 0, m * sizeof *out);
		size_t a = 0, b = p->nidx; /* the first kept position >= lo */
		while (a < b) {
			size_t mid = a + (b - a) / 2;
			if (p->idx[mid] < lo)
				a = mid + 1;
			else
				b = mid;
		}
		for (size_t j = a; j < p->nidx && p->idx[j] < hi; j++)
			memcpy(&out[p->idx[j] - lo], d + 4 * j, 4);
		break;
	}
	}
}

int dml__gc_decode(int codec, size_t n, const dml__gc_piece *p, float *out,
                   char *msg, size_t msgsz)
{
	int rc = dml__gc_check(codec, n, p, msg, msgsz);
	if (!rc)
		dml__gc_decode_range(codec, p, 0, n, out);
	return rc;
}

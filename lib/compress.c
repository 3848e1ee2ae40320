/*
 * compress.c - the gradient codecs of compress.h. Conversions are written
 * out (no _Float16, which clang 14 lacks on x86), rounding to nearest even;
 * a value beyond a format's range is clamped to its largest finite value,
 * never sent as an infinity (which a server refuses).
 */
#include "compress.h"

#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

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
 * feedback and the decoder compute it alike. */
static float level_value(float s, int q)
{
	return s * (float)q / 127.0f;
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
			for (size_t i = lo; i < hi; i++) {
				int q = 0;
				if (s > 0) {
					float t = fabsf(v[i]) / s * 127.0f;
					float u = (float)(next_rand(rng) >> 40) * 0x1p-24f;
					q = (int)floorf(t + u);
					q = q > 127 ? 127 : q;
					q = v[i] < 0 ? -q : q;
				}
				d[i] = (uint8_t)(int8_t)q;
				if (back)
					back[i] = level_value(s, q);
			}
		}
		break;
	case DML__GC_TOPK: {
		if (!k || !n)
			break;
		for (size_t i = 0; i < n; i++)
			tmp[i] = fabsf(v[i]);
		float thr = kth_largest(tmp, n, k, rng);
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

int dml__gc_decode(int codec, size_t n, const dml__gc_piece *p, float *out,
                   char *msg, size_t msgsz)
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
	case DML__GC_FP16:
	case DML__GC_BF16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h = (uint16_t)(d[2 * i] | d[2 * i + 1] << 8);
			if ((codec == DML__GC_FP16 ? from_half(h, &out[i])
			                           : from_bf16(h, &out[i])) < 0)
				return BAD(DML_ENONFINITE, "value %zu is not finite", i);
		}
		break;
	case DML__GC_INT8:
		for (size_t b = 0; b < nscales; b++) {
			float s = p->scales[b];
			if (!(s >= 0 && s <= 3.4e38f)) /* NaN fails both */
				return BAD(DML_ENONFINITE, "scale %zu is not finite and >= 0", b);
			size_t lo = b * DML__GC_BUCKET;
			size_t hi = lo + DML__GC_BUCKET < n ? lo + DML__GC_BUCKET : n;
			for (size_t i = lo; i < hi; i++) {
				int q = (int8_t)d[i];
				if (q == -128)
					return BAD(DML_EINVAL, "level -128 at %zu (levels: -127 to 127)", i);
				out[i] = level_value(s, q);
			}
		}
		break;
	case DML__GC_TOPK:
		memset(out, 0, n * sizeof *out);
		for (size_t j = 0; j < nidx; j++) {
			uint32_t i = p->idx[j];
			if (i >= n || (j && i <= p->idx[j - 1]))
				return BAD(DML_EINVAL, "index %u at %zu: below %zu and increasing",
				           (unsigned)i, j, n);
			float x;
			memcpy(&x, d + 4 * j, 4);
			if (!isfinite(x))
				return BAD(DML_ENONFINITE, "value %zu is not finite", j);
			out[i] = x;
		}
		break;
	}
	return 0;
}

/*
 * sparse_gen.c - a generated click-through-like data set: sparse binary
 * classification in LIBSVM format, a train file and a test file.
 *
 *     sparse_gen TRAIN TEST [--rows N] [--test-rows N] [--features F]
 *                [--nnz K] [--zipf S] [--noise P] [--signal D] [--seed X]
 *
 * Defaults: 100000 train rows, 20000 test rows, F = 1000000 (hashed)
 * features, K = 50, S = 1.1, P = 0.02, D = 0.1, X = 1. On the default set
 * LIBLINEAR (-s 0, C = 1) reaches a test accuracy of about 0.80, where a
 * model that knew w would score 0.98: the rare features (a row's score
 * depends on some that occur only a few times in 100000 rows) cannot be
 * learnt. A larger S moves the mass to features that can: --zipf 1.3 gives
 * about 0.85, --zipf 0.8 --noise 0.1 about 0.62.
 *
 * The model, all of it a function of the seed:
 *  - A row has a number of distinct features drawn uniformly from
 *    K - K/2 .. K + K/2 (mean K). Each id is drawn from Zipf(S) over 1..F
 *    (an alias table for the 32768 most popular ranks, rejection-inversion
 *    for the others: O(1) per draw, a 256 KB table), then mapped by a
 *    bijection of 0..F-1 keyed by the seed, so that the popular features
 *    are spread over the id range. A duplicate within the row is drawn
 *    again: ids are drawn without replacement, a feature occurs at most
 *    once per row. (With a steep S and a large K, a row may stop short of
 *    its count after 100 draws per id.)
 *  - Values are binary, written as 1, as in click-through data.
 *  - A hidden separator w: feature j has w_j ~ N(0,1) with probability D,
 *    else 0, computed from hash(seed, j) when needed (no F-sized array).
 *  - score = sum of w_j over the row's features. The threshold is the
 *    median score of 20001 pilot rows, so classes are balanced (ties, as
 *    between rows without signal features, are split at random). The label
 *    is 1 if score > threshold, else 0, then flipped with probability P: a
 *    perfect model scores 1 - P on the test set.
 *  - Pilot, train and test rows come from three separate generator streams,
 *    so the test set does not change with --rows.
 *
 * Lines are "LABEL i:1 j:1 ..." with 1-based ids, ascending. Prints a
 * one-line summary to stderr. Any error, including a failed write (disk
 * full), is reported on stderr with exit status 1; a file being written at
 * that moment is then incomplete.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PILOT_ROWS 20001
#define TWO_PI 6.283185307179586476925

/* --- Random numbers: splitmix64 for hashing and seeding, xoshiro256** for
 * streams. */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15u;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
	return x ^ (x >> 31);
}

typedef struct rng {
	uint64_t s[4];
} rng;

static void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ mix64(stream);
	for (int i = 0; i < 4; i++) {
		x += 0x9e3779b97f4a7c15u;
		r->s[i] = mix64(x);
	}
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

/* Uniform in [0, 1). */
static double rng_uniform(rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in 0 .. n-1, n >= 1 (bias below 2^-40 for the n used here). */
static uint64_t rng_below(rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

/* --- Zipf(s) over 1..n. The head, ranks 1..T (T = 32768 or n if smaller,
 * 87% of the draws for s = 1.1, n = 1M), comes from an alias table (Walker,
 * Vose: one lookup in 256 KB, which stays in L2); the tail, ranks T+1..n, by
 * rejection-inversion (Hormann and Derflinger 1996, as in Apache Commons
 * RNG's RejectionInversionZipfSampler, with its first rank moved from 1 to
 * T+1). H is the integral of h(x) = x^-s, written with log1p/expm1 so that
 * s near 1 stays accurate. */

#define ZIPF_HEAD 32768

typedef struct zipf {
	double s, n;
	double head_p;            /* the head's share of the mass */
	uint64_t head;            /* T */
	struct zipf_cell {
		uint32_t thr, alias;
	} *cell;                  /* T entries */
	double tail_lo, tail_hi;  /* tail: u in (tail_lo, tail_hi] */
	double accept;
} zipf;

static double helper1(double x) /* log1p(x) / x */
{
	return fabs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
}

static double helper2(double x) /* expm1(x) / x */
{
	return fabs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x * (1.0 / 3) * (1 + 0.25 * x));
}

static double zipf_h(const zipf *z, double x)
{
	return exp(-z->s * log(x));
}

static double zipf_H(const zipf *z, double x)
{
	double lx = log(x);
	return helper2((1 - z->s) * lx) * lx;
}

static double zipf_H_inv(const zipf *z, double x)
{
	double t = x * (1 - z->s);
	if (t < -1)
		t = -1;
	return exp(helper1(t) * x);
}

/* The alias table of ranks 1..T; returns their total weight, or -1. */
static double zipf_head_init(zipf *z)
{
	size_t t = (size_t)z->head;
	double *p = malloc(t * sizeof *p);
	uint32_t *small = malloc(t * sizeof *small), *large = malloc(t * sizeof *large);
	z->cell = malloc(t * sizeof *z->cell);
	double sum = -1;
	if (!p || !small || !large || !z->cell)
		goto out;
	sum = 0;
	for (size_t i = 0; i < t; i++)
		sum += p[i] = zipf_h(z, (double)(i + 1));
	size_t ns = 0, nl = 0;
	for (size_t i = 0; i < t; i++) {
		p[i] *= (double)t / sum;
		if (p[i] < 1)
			small[ns++] = (uint32_t)i;
		else
			large[nl++] = (uint32_t)i;
	}
	while (ns && nl) {
		uint32_t l = small[--ns], g = large[--nl];
		z->cell[l].thr = p[l] > 0 ? (uint32_t)(p[l] * 4294967296.0) : 0;
		z->cell[l].alias = g;
		p[g] = (p[g] + p[l]) - 1;
		if (p[g] < 1)
			small[ns++] = g;
		else
			large[nl++] = g;
	}
	/* What is left has weight 1, up to rounding: always itself. */
	while (nl) {
		uint32_t g = large[--nl];
		z->cell[g].thr = UINT32_MAX;
		z->cell[g].alias = g;
	}
	while (ns) {
		uint32_t l = small[--ns];
		z->cell[l].thr = UINT32_MAX;
		z->cell[l].alias = l;
	}
out:
	free(p);
	free(small);
	free(large);
	return sum;
}

static int zipf_init(zipf *z, double s, uint64_t n)
{
	z->s = s;
	z->n = (double)n;
	z->head = n < ZIPF_HEAD ? n : ZIPF_HEAD;
	double head_w = zipf_head_init(z);
	if (head_w < 0)
		return -1;
	double m = (double)z->head + 1; /* the tail's first rank */
	z->tail_lo = zipf_H(z, m + 0.5) - zipf_h(z, m);
	z->tail_hi = zipf_H(z, z->n + 0.5);
	z->accept = 2 - zipf_H_inv(z, zipf_H(z, 2.5) - zipf_h(z, 2));
	/* The tail's weight: the midpoint rule, relative error below
	 * s(s+1)/(24 m^2), under 1e-9 at m = 32769. */
	double tail_w = (double)z->head < z->n ? zipf_H(z, z->n + 0.5) - zipf_H(z, m - 0.5) : 0;
	z->head_p = head_w / (head_w + tail_w);
	return 0;
}

static void zipf_free(zipf *z)
{
	free(z->cell);
}

static uint64_t zipf_draw(const zipf *z, rng *r)
{
	if (z->head_p >= 1 || rng_uniform(r) < z->head_p) {
		uint64_t x = rng_next(r);
		uint64_t i = ((x >> 32) * z->head) >> 32;
		struct zipf_cell c = z->cell[i];
		return ((uint32_t)x < c.thr ? i : c.alias) + 1;
	}
	double lo = (double)z->head + 1;
	for (;;) {
		double u = z->tail_hi + rng_uniform(r) * (z->tail_lo - z->tail_hi);
		double x = zipf_H_inv(z, u);
		double k = floor(x + 0.5);
		if (k < lo)
			k = lo;
		else if (k > z->n)
			k = z->n;
		if (k - x <= z->accept || u >= zipf_H(z, k + 0.5) - zipf_h(z, k))
			return (uint64_t)k;
	}
}

/* --- A keyed bijection of 0..n-1: rounds of add, odd multiply and
 * xor-shift on b bits (2^b >= n, each step invertible mod 2^b), with cycle
 * walking to stay below n (fewer than 2 walks on average). */

typedef struct perm {
	uint64_t n, mask;
	unsigned shift;
	uint64_t add[3], mul[3];
} perm;

static void perm_init(perm *p, uint64_t n, uint64_t seed)
{
	unsigned bits = 0;
	while (bits < 64 && (UINT64_C(1) << bits) < n)
		bits++;
	p->n = n;
	p->mask = bits == 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;
	p->shift = bits > 1 ? (bits + 1) / 2 : 1;
	uint64_t x = mix64(seed ^ 0x5ca1ab1e0ddba11u);
	for (int i = 0; i < 3; i++) {
		p->add[i] = mix64(x + 2 * (uint64_t)i) & p->mask;
		p->mul[i] = mix64(x + 2 * (uint64_t)i + 1) | 1;
	}
}

static uint64_t perm_apply(const perm *p, uint64_t x)
{
	do {
		for (int i = 0; i < 3; i++) {
			x = (x + p->add[i]) & p->mask;
			x = (x * p->mul[i]) & p->mask;
			x ^= x >> p->shift;
		}
	} while (x >= p->n);
	return x;
}

/* --- The data model. */

typedef struct gen {
	zipf z;
	perm p;
	uint64_t wkey;
	double signal, noise, threshold;
	uint64_t nnz_lo, nnz_span; /* a row has nnz_lo + (0 .. nnz_span-1) */
	uint32_t *ids;             /* one row, 0-based, ascending */
	char *line;                /* one row, formatted */
} gen;

/* The hidden weight of feature j (0-based). */
static double weight(const gen *g, uint64_t j)
{
	uint64_t h = mix64(g->wkey ^ j);
	if ((double)(h >> 11) * 0x1.0p-53 >= g->signal)
		return 0;
	uint64_t a = mix64(h), b = mix64(a);
	double u1 = (double)((a >> 11) + 1) * 0x1.0p-53; /* (0, 1] */
	double u2 = (double)(b >> 11) * 0x1.0p-53;
	return sqrt(-2 * log(u1)) * cos(TWO_PI * u2);
}

/* Draws one row's distinct ids into g->ids, sorted; returns their count. */
static size_t row_draw(gen *g, rng *r)
{
	uint64_t want = g->nnz_lo + rng_below(r, g->nnz_span);
	uint64_t tries = 100 * want;
	size_t n = 0;
	uint32_t *ids = g->ids;
	while (n < want && tries-- > 0) {
		uint32_t id = (uint32_t)perm_apply(&g->p, zipf_draw(&g->z, r) - 1);
		size_t lo = 0, hi = n;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (ids[mid] < id)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < n && ids[lo] == id)
			continue;
		memmove(ids + lo + 1, ids + lo, (n - lo) * sizeof *ids);
		ids[lo] = id;
		n++;
	}
	return n;
}

/* The row's score, plus a jitter of at most 1e-9, which (almost) never
 * reorders two different scores: rows with the same signal features (with a
 * small D, many have none) tie, and the jitter splits them at the threshold
 * at random, so the classes stay balanced. */
static double row_score(const gen *g, size_t n, rng *r)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += weight(g, g->ids[i]);
	return s + 1e-9 * rng_uniform(r);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int pilot_threshold(gen *g, uint64_t seed)
{
	double *s = malloc(PILOT_ROWS * sizeof *s);
	if (!s)
		return -1;
	rng r;
	rng_seed(&r, seed, 0);
	for (size_t i = 0; i < PILOT_ROWS; i++)
		s[i] = row_score(g, row_draw(g, &r), &r);
	qsort(s, PILOT_ROWS, sizeof *s, cmp_double);
	g->threshold = s[PILOT_ROWS / 2];
	free(s);
	return 0;
}

static char *put_uint(char *p, uint64_t v)
{
	char tmp[20];
	int n = 0;
	do
		tmp[n++] = (char)('0' + v % 10);
	while (v /= 10);
	while (n)
		*p++ = tmp[--n];
	return p;
}

typedef struct set_stats {
	uint64_t rows, positives, nnz, flipped;
} set_stats;

/* Writes rows from stream `stream` to path; 0, or -1 after saying why. */
static int write_set(gen *g, const char *path, uint64_t seed, uint64_t stream,
		     uint64_t rows, set_stats *st)
{
	static char buf[1 << 20];
	FILE *f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "sparse_gen: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (setvbuf(f, buf, _IOFBF, sizeof buf) != 0) {
		fprintf(stderr, "sparse_gen: %s: setvbuf failed\n", path);
		fclose(f);
		return -1;
	}
	rng r;
	rng_seed(&r, seed, stream);
	memset(st, 0, sizeof *st);
	int err = 0;
	for (uint64_t i = 0; i < rows; i++) {
		size_t n = row_draw(g, &r);
		int y = row_score(g, n, &r) > g->threshold;
		if (rng_uniform(&r) < g->noise) {
			y = !y;
			st->flipped++;
		}
		char *p = g->line;
		*p++ = (char)('0' + y);
		for (size_t k = 0; k < n; k++) {
			*p++ = ' ';
			p = put_uint(p, (uint64_t)g->ids[k] + 1);
			*p++ = ':';
			*p++ = '1';
		}
		*p++ = '\n';
		size_t len = (size_t)(p - g->line);
		if (fwrite(g->line, 1, len, f) != len) {
			err = errno;
			break;
		}
		st->rows++;
		st->positives += (uint64_t)y;
		st->nnz += n;
	}
	if (!err && (fflush(f) != 0 || ferror(f)))
		err = errno ? errno : EIO;
	if (fclose(f) != 0 && !err)
		err = errno ? errno : EIO;
	if (err) {
		fprintf(stderr, "sparse_gen: writing %s: %s (the file is incomplete)\n", path,
			strerror(err));
		return -1;
	}
	return 0;
}

/* --- Options. */

static void usage(FILE *f)
{
	fputs("usage: sparse_gen TRAIN TEST [--rows N] [--test-rows N] [--features F]\n"
	      "                  [--nnz K] [--zipf S] [--noise P] [--signal D] [--seed X]\n"
	      "  --rows N       train rows (default 100000)\n"
	      "  --test-rows N  test rows (default 20000; 0 gives an empty file)\n"
	      "  --features F   feature ids 1..F (default 1000000, at most 2147483647)\n"
	      "  --nnz K        mean distinct features per row, uniform in K-K/2..K+K/2\n"
	      "                 (default 50)\n"
	      "  --zipf S       Zipf exponent of feature popularity, >= 0 (default 1.1)\n"
	      "  --noise P      label flip probability, 0..1 (default 0.02)\n"
	      "  --signal D     fraction of features with a non-zero hidden weight,\n"
	      "                 0 < D <= 1 (default 0.1)\n"
	      "  --seed X       seed, 0..2^64-1 (default 1)\n",
	      f);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_double(const char *s, double min, double max, int min_open, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end || errno || !isfinite(v) || v < min || v > max ||
	    (min_open && v == min))
		return -1;
	*out = v;
	return 0;
}

typedef struct opts {
	const char *train, *test;
	uint64_t rows, test_rows, features, nnz, seed;
	double zipf, noise, signal;
} opts;

static int parse_opts(int argc, char **argv, opts *o)
{
	int npos = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		}
		if (strncmp(a, "--", 2) != 0 || !a[2]) {
			if (npos == 0)
				o->train = a;
			else if (npos == 1)
				o->test = a;
			else {
				fprintf(stderr, "sparse_gen: unexpected argument '%s'\n", a);
				return -1;
			}
			npos++;
			continue;
		}
		/* --name VALUE or --name=VALUE */
		char name[16];
		const char *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		const char *val;
		if (len >= sizeof name) {
			fprintf(stderr, "sparse_gen: unknown option '%s'\n", a);
			return -1;
		}
		memcpy(name, a, len);
		name[len] = 0;
		if (eq)
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			fprintf(stderr, "sparse_gen: %s needs a value\n", name);
			return -1;
		}
		int bad;
		if (!strcmp(name, "--rows"))
			bad = parse_u64(val, 1, UINT64_MAX / 2, &o->rows);
		else if (!strcmp(name, "--test-rows"))
			bad = parse_u64(val, 0, UINT64_MAX / 2, &o->test_rows);
		else if (!strcmp(name, "--features"))
			bad = parse_u64(val, 1, INT32_MAX, &o->features);
		else if (!strcmp(name, "--nnz"))
			bad = parse_u64(val, 1, INT32_MAX, &o->nnz);
		else if (!strcmp(name, "--seed"))
			bad = parse_u64(val, 0, UINT64_MAX, &o->seed);
		else if (!strcmp(name, "--zipf"))
			bad = parse_double(val, 0, 100, 0, &o->zipf);
		else if (!strcmp(name, "--noise"))
			bad = parse_double(val, 0, 1, 0, &o->noise);
		else if (!strcmp(name, "--signal"))
			bad = parse_double(val, 0, 1, 1, &o->signal);
		else {
			fprintf(stderr, "sparse_gen: unknown option '%s'\n", name);
			return -1;
		}
		if (bad) {
			fprintf(stderr, "sparse_gen: bad value '%s' for %s\n", val, name);
			return -1;
		}
	}
	if (npos != 2) {
		usage(stderr);
		return -1;
	}
	if (o->nnz + o->nnz / 2 > o->features) {
		fprintf(stderr, "sparse_gen: --nnz %llu: rows of up to %llu distinct features "
				"need --features >= %llu\n",
			(unsigned long long)o->nnz, (unsigned long long)(o->nnz + o->nnz / 2),
			(unsigned long long)(o->nnz + o->nnz / 2));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	opts o = {.rows = 100000, .test_rows = 20000, .features = 1000000, .nnz = 50,
		  .seed = 1, .zipf = 1.1, .noise = 0.02, .signal = 0.1};
	if (parse_opts(argc, argv, &o))
		return 1;

	gen g;
	if (zipf_init(&g.z, o.zipf, o.features)) {
		fprintf(stderr, "sparse_gen: out of memory\n");
		return 1;
	}
	perm_init(&g.p, o.features, o.seed);
	g.wkey = mix64(o.seed ^ 0x3779b97f4a7c15u);
	g.signal = o.signal;
	g.noise = o.noise;
	g.nnz_lo = o.nnz - o.nnz / 2;
	g.nnz_span = 2 * (o.nnz / 2) + 1;
	uint64_t max_nnz = g.nnz_lo + g.nnz_span - 1;
	/* "1 " then per id at most 10 digits and ":1 ", then "\n" */
	g.ids = malloc(max_nnz * sizeof *g.ids);
	g.line = malloc(max_nnz * 13 + 4);
	if (!g.ids || !g.line) {
		fprintf(stderr, "sparse_gen: out of memory\n");
		return 1;
	}
	set_stats tr, te;
	if (pilot_threshold(&g, o.seed)) {
		fprintf(stderr, "sparse_gen: out of memory\n");
		return 1;
	}
	if (write_set(&g, o.train, o.seed, 1, o.rows, &tr) ||
	    write_set(&g, o.test, o.seed, 2, o.test_rows, &te))
		return 1;
	fprintf(stderr,
		"sparse_gen: %s %llu rows (%.1f%% label 1), %s %llu rows (%.1f%% label 1), "
		"%llu features, mean nnz %.2f, zipf %g, noise %g, signal %g, seed %llu\n",
		o.train, (unsigned long long)tr.rows, 100.0 * (double)tr.positives / (double)tr.rows,
		o.test, (unsigned long long)te.rows,
		te.rows ? 100.0 * (double)te.positives / (double)te.rows : 0.0,
		(unsigned long long)o.features,
		(double)(tr.nnz + te.nnz) / (double)(tr.rows + te.rows), o.zipf, o.noise,
		o.signal, (unsigned long long)o.seed);
	zipf_free(&g.z);
	free(g.ids);
	free(g.line);
	return 0;
}

/*
 * model_bench.c - single-thread softmax-regression SGD on Fashion-MNIST
 * (60000 x 784, 10 classes), in samples/s and GFLOP/s, beside a probe of
 * this core's fp32 FMA peak measured in the same run.
 *
 * One SGD epoch = for each minibatch: loss_grad (X W^T, softmax, D^T X)
 * then dml_optim_step (plain SGD). FLOPs counted: 4 n d k per minibatch
 * (2 n d k for each product), the rest is not counted but is timed.
 * The peak probe runs 12 independent chains of FMAs on registers of the
 * widest vectors the CPU has (AVX-512, else AVX2, else scalar):
 * GFLOP/s = 2 * lanes * FMAs / s.
 *
 * Rounds alternate probe and epoch; each figure is the median of the
 * rounds. Times are wall-clock; the same figures in thread CPU time are
 * printed too, since on a shared machine the wall clock also counts the
 * time other processes held the core.
 *
 * The data: /usr/share/datasets/fashion-mnist/train-*-ubyte.gz when there
 * (DML_FASHION_DIR overrides the directory), else random data of the same
 * shape. Every kernel set the CPU supports is measured; the best is the
 * RESULT line.
 *
 *     model_bench [batch]   (default 256)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <distml.h>

#include "../lib/kernels.h"

#define ROUNDS 7
#define N_ROWS 60000
#define N_FEAT 784
#define N_CLASS 10

typedef struct clocks {
	double wall, cpu;
} clocks;

static clocks now(void)
{
	struct timespec w, c;
	clock_gettime(CLOCK_MONOTONIC, &w);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c);
	return (clocks){w.tv_sec + w.tv_nsec * 1e-9, c.tv_sec + c.tv_nsec * 1e-9};
}

static clocks since(clocks t0)
{
	clocks t = now();
	return (clocks){t.wall - t0.wall, t.cpu - t0.cpu};
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- the peak probe: 12 independent FMA chains ---- */

#define CHAINS 12
/* Full unrolling of the loops over the register block (gcc needs the
 * pragma; clang's spelling of it differs). */
#ifdef __clang__
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx512f"))) static float probe512(long iters)
{
	__m512 acc[CHAINS];
	const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-6f);
	UNROLL for (int c = 0; c < CHAINS; c++)
		acc[c] = _mm512_set1_ps((float)c);
	for (long i = 0; i < iters; i++)
		UNROLL for (int c = 0; c < CHAINS; c++)
			acc[c] = _mm512_fmadd_ps(acc[c], m, a);
	float s = 0;
	UNROLL for (int c = 0; c < CHAINS; c++)
		s += _mm512_reduce_add_ps(acc[c]);
	return s;
}

__attribute__((target("avx2,fma"))) static float probe256(long iters)
{
	__m256 acc[CHAINS];
	const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-6f);
	UNROLL for (int c = 0; c < CHAINS; c++)
		acc[c] = _mm256_set1_ps((float)c);
	for (long i = 0; i < iters; i++)
		UNROLL for (int c = 0; c < CHAINS; c++)
			acc[c] = _mm256_fmadd_ps(acc[c], m, a);
	float s = 0, lanes[8];
	UNROLL for (int c = 0; c < CHAINS; c++) {
		_mm256_storeu_ps(lanes, acc[c]);
		for (int l = 0; l < 8; l++)
			s += lanes[l];
	}
	return s;
}
#endif

static float probe_scalar(long iters)
{
	float acc[CHAINS];
	for (int c = 0; c < CHAINS; c++)
		acc[c] = (float)c;
	for (long i = 0; i < iters; i++)
		UNROLL for (int c = 0; c < CHAINS; c++)
			acc[c] = acc[c] * 0.999999f + 1e-6f; /* mul + add: 2 flops, as an FMA */
	float s = 0;
	for (int c = 0; c < CHAINS; c++)
		s += acc[c];
	return s;
}

static volatile float sink;

/* FLOPs per second of `iters` iterations of the probe for `isa`. */
static clocks probe(int isa, long iters, int *lanes)
{
	clocks t0 = now();
	switch (isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
	case DML__ISA_AVX512: sink = probe512(iters); *lanes = 16; break;
	case DML__ISA_AVX2: sink = probe256(iters); *lanes = 8; break;
#endif
	default: sink = probe_scalar(iters); *lanes = 1; break;
	}
	clocks t = since(t0);
	double flops = 2.0 * *lanes * CHAINS * (double)iters;
	return (clocks){flops / t.wall / 1e9, flops / t.cpu / 1e9};
}

/* ---- data ---- */

static dml_dataset *load_data(const char **what)
{
	const char *dir = getenv("DML_FASHION_DIR");
	char img[512], lab[512];
	if (!dir)
		dir = "/usr/share/datasets/fashion-mnist";
	snprintf(img, sizeof img, "%s/train-images-idx3-ubyte.gz", dir);
	snprintf(lab, sizeof lab, "%s/train-labels-idx1-ubyte.gz", dir);
	dml_dataset *ds = NULL;
	dml_data_opts o = {0};
	o.classes = N_CLASS;
	if (dml_dataset_new_idx(&ds, img, lab, &o) == 0 &&
	    dml_dataset_dim(ds) == N_FEAT) {
		*what = "Fashion-MNIST train";
		return ds;
	}
	dml_dataset_free(ds);
	*what = "random data of Fashion-MNIST's shape";
	float *x = malloc((size_t)N_ROWS * N_FEAT * sizeof(float));
	float *y = malloc(N_ROWS * sizeof(float));
	if (!x || !y) {
		free(x);
		free(y);
		return NULL;
	}
	uint32_t s = 1;
	for (size_t i = 0; i < (size_t)N_ROWS * N_FEAT; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = (float)(s >> 8) / (float)(1u << 24);
	}
	for (size_t i = 0; i < N_ROWS; i++)
		y[i] = (float)(i % N_CLASS);
	ds = NULL;
	if (dml_dataset_new_dense(&ds, N_ROWS, N_FEAT, x, y) == 0)
		dml_dataset_set_classes(ds, N_CLASS);
	free(x);
	free(y);
	return ds;
}

/* ---- one SGD epoch ---- */

static int epoch(dml_model *m, dml_optim *opt, float *w, float *g,
                 const dml_dataset *ds, size_t batch, double *loss)
{
	size_t n = dml_dataset_rows(ds);
	double sum = 0;
	for (size_t s = 0; s < n; s += batch) {
		dml_batch b;
		double l;
		int rc = dml_dataset_batch(ds, s, batch, &b);
		if (!rc)
			rc = m->loss_grad(m->self, w, &b, g, &l);
		if (rc)
			return rc;
		dml_optim_step(opt, w, g);
		sum += l * (double)b.n;
	}
	*loss = sum / (double)n;
	return 0;
}

typedef struct figures {
	double sps, gflops, peak, ratio; /* wall clock */
	double sps_cpu, gflops_cpu, peak_cpu, ratio_cpu;
	double loss;
} figures;

static int measure(int isa, int peak_isa, const dml_dataset *ds, size_t batch,
                   int rounds, figures *f)
{
	dml_model m;
	int rc = dml_model_init_softmax(&m, N_FEAT, N_CLASS, 0);
	if (rc)
		return rc;
	dml_optim_opts oo = {0};
	oo.kind = DML_OPTIM_SGD;
	oo.lr = 0.05f;
	dml_optim *opt = NULL;
	float *w = calloc(m.dim, sizeof(float)), *g = calloc(m.dim, sizeof(float));
	if (!w || !g || (rc = dml__model_set_isa(&m, isa)) ||
	    (rc = dml_optim_new_dim(&opt, m.dim, &oo)) || (rc = m.init(m.self, w, 1)))
		goto out;
	/* the probe's length: about 0.1 s at the peak */
	int lanes;
	long iters = 1000000;
	clocks p = probe(peak_isa, iters, &lanes);
	iters = (long)(0.1 * p.cpu * 1e9 / (2.0 * lanes * CHAINS));
	if (iters < 1000)
		iters = 1000;
	double ew[ROUNDS], ec[ROUNDS], pw[ROUNDS], pc[ROUNDS];
	double flops = 4.0 * N_ROWS * N_FEAT * N_CLASS;
	if ((rc = epoch(&m, opt, w, g, ds, batch, &f->loss))) /* warm up */
		goto out;
	for (int r = 0; r < rounds; r++) {
		p = probe(peak_isa, iters, &lanes);
		pw[r] = p.wall;
		pc[r] = p.cpu;
		clocks t0 = now();
		if ((rc = epoch(&m, opt, w, g, ds, batch, &f->loss)))
			goto out;
		clocks t = since(t0);
		ew[r] = t.wall;
		ec[r] = t.cpu;
	}
	double tw = median(ew, rounds), tc = median(ec, rounds);
	f->sps = N_ROWS / tw;
	f->gflops = flops / tw / 1e9;
	f->peak = median(pw, rounds);
	f->ratio = f->gflops / f->peak;
	f->sps_cpu = N_ROWS / tc;
	f->gflops_cpu = flops / tc / 1e9;
	f->peak_cpu = median(pc, rounds);
	f->ratio_cpu = f->gflops_cpu / f->peak_cpu;
out:
	free(w);
	free(g);
	dml_optim_free(opt);
	dml_model_destroy(&m);
	return rc;
}

int main(int argc, char **argv)
{
	size_t batch = argc > 1 ? (size_t)atol(argv[1]) : 256;
	if (batch == 0 || batch > N_ROWS)
		batch = 256;
	const char *what;
	dml_dataset *ds = load_data(&what);
	if (!ds) {
		fprintf(stderr, "model_bench: cannot load or make the data\n");
		return 1;
	}
	int best = dml__isa_best();
	printf("# softmax regression SGD, single thread, %zu x %zu, %d classes, batch %zu (%s)\n",
	       dml_dataset_rows(ds), dml_dataset_dim(ds), N_CLASS, batch, what);
	printf("# peak: %s FMA probe, %d chains; median of %d rounds (epoch and probe alternating)\n",
	       dml__isa_name(best), CHAINS, ROUNDS);
	printf("%-9s %12s %9s %9s %7s %9s %7s %8s %7s\n", "kernels", "samples/s",
	       "GFLOP/s", "peak", "ratio", "GFLOP/s", "ratio", "epoch s", "loss");
	printf("%-9s %12s %9s %9s %7s %9s %7s %8s %7s\n", "", "(wall)", "(wall)",
	       "(wall)", "(wall)", "(cpu)", "(cpu)", "(wall)", "");
	figures top = {0};
	for (int isa = best; isa >= 0; isa--) {
		if (!dml__isa_supported(isa))
			continue;
		figures f = {0};
		/* the slower kernel sets get fewer rounds: under ~20 s in all */
		int rc = measure(isa, best, ds, batch, isa == best ? ROUNDS : 3, &f);
		if (rc) {
			fprintf(stderr, "model_bench: %s: %s\n", dml__isa_name(isa), dml_strerror(rc));
			dml_dataset_free(ds);
			return 1;
		}
		printf("%-9s %12.0f %9.1f %9.1f %7.3f %9.1f %7.3f %8.4f %7.4f\n",
		       dml__isa_name(isa), f.sps, f.gflops, f.peak, f.ratio,
		       f.gflops_cpu, f.ratio_cpu, N_ROWS / f.sps, f.loss);
		if (isa == best)
			top = f;
	}
	printf("# target: ratio >= 0.25 of the peak for the best kernels\n");
	printf("RESULT softmax_sgd isa=%s batch=%zu samples_per_s=%.0f gflops=%.1f peak_gflops=%.1f ratio=%.3f cpu_gflops=%.1f cpu_peak_gflops=%.1f cpu_ratio=%.3f\n",
	       dml__isa_name(best), batch, top.sps, top.gflops, top.peak, top.ratio,
	       top.gflops_cpu, top.peak_cpu, top.ratio_cpu);
	dml_dataset_free(ds);
	return 0;
}

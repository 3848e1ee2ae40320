/*
 * rpc_calls.h - the libdistml side of the RPC benchmarks (rpc_bench,
 * tls_bench): the handlers and the timed loops of sequential, pipelined
 * and bulk calls. Header-only, included once per benchmark, after
 * "../examples/arith.h" and after the benchmark defines
 *     static double secs;                        (seconds per measurement)
 *     static void die(const char *what, int rc);
 * Every loop runs for `secs` seconds, bounded in count too.
 */
#ifndef DML_BENCH_RPC_CALLS_H
#define DML_BENCH_RPC_CALLS_H

#include <distml.h>

#include "bench.h"

#define WINDOW 64                      /* pipelined calls in flight */
#define BULK_FLOATS (10 * 1000 * 1000) /* 40 MB float32 argument */
#define MAX_CALLS 5000000

typedef struct floats { dml_f32s v; } floats;
static const dml_field floats_f[] = {DML_FIELD(floats, v, DML_F32S)};
static const dml_type floats_t = DML_TYPE(floats, floats_f);
static const dml_rpc_method arith_sum = {"Arith.Sum", &floats_t, &reply_type};

static int h_multiply(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	((Reply *)r)->C = ((const Args *)a)->A * ((const Args *)a)->B;
	return 0;
}

static int h_sum(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	((Reply *)r)->C = (int64_t)((const floats *)a)->v.n;
	return 0;
}

static void *run_server(void *s)
{
	dml_rpc_server_run(s);
	return NULL;
}

/* Sequential Arith.Multiply calls per second, one in flight. */
static double dml_seq(dml_rpc_client *c)
{
	long n = 0;
	double t0 = now(), t;
	do {
		for (int i = 0; i < 100; i++, n++) {
			Args a = {n, 3};
			Reply r;
			int rc = dml_rpc_call(c, &arith_multiply, &a, &r, 10000);
			if (rc || r.C != 3 * n)
				die("seq call", rc);
		}
		t = now() - t0;
	} while (t < secs && n < MAX_CALLS);
	return n / t;
}

/* Pipelined calls per second, in windows of WINDOW on one connection. */
static double dml_pipe(dml_rpc_client *c)
{
	long n = 0;
	dml_rpc_pending *k[WINDOW];
	Args a[WINDOW];
	Reply r[WINDOW];
	double t0 = now(), t;
	do {
		for (int i = 0; i < WINDOW; i++) {
			a[i] = (Args){n + i, 3};
			int rc = dml_rpc_start(&k[i], c, &arith_multiply, &a[i], &r[i], 10000);
			if (rc)
				die("go", rc);
		}
		for (int i = 0; i < WINDOW; i++) {
			int rc = dml_rpc_pending_wait(k[i]);
			if (rc || r[i].C != 3 * (n + i))
				die("wait", rc);
			dml_rpc_pending_free(k[i]);
		}
		n += WINDOW;
		t = now() - t0;
	} while (t < secs && n < MAX_CALLS);
	return n / t;
}

/* MB/s of a BULK_FLOATS argument (v), after one warm-up call. */
static double dml_bulk(dml_rpc_client *c, float *v)
{
	int n = -1;
	double t0 = 0, t = 0;
	do {
		if (n == 0)
			t0 = now();
		floats f = {{v, BULK_FLOATS, 0}};
		Reply r;
		int rc = dml_rpc_call(c, &arith_sum, &f, &r, 30000);
		if (rc || r.C != BULK_FLOATS)
			die("bulk call", rc);
		n++;
		t = now() - t0;
	} while ((t < secs || n < 3) && n < 1000);
	return n * (BULK_FLOATS * 4.0 / 1e6) / t;
}

#endif

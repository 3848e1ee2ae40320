/*
 * test_compress.c - compressed pushes (docs/ps.md, "Compressed pushes"):
 * the codecs' rounding and bounds, top-k's choice, a decoder that refuses
 * what a hostile peer can send, and pushes through a remote handle to a
 * served store that asks for each codec, top-k's error feedback included.
 */
#include "testutil.h"

#include "../lib/compress.h"
#include "../lib/ps_wire.h"

#include <math.h>

static float frand(uint64_t *s) /* in [-1, 1) */
{
	return (float)(splitmix(s) >> 40) * 0x1p-23f - 1.0f;
}

static dml__gc_piece piece_new(int codec, size_t n, size_t k)
{
	dml__gc_piece p;
	dml__gc_sizes(codec, n, k, &p.nbytes, &p.nscales, &p.nidx);
	p.data = malloc(p.nbytes + 1);
	p.scales = malloc(p.nscales * sizeof(float) + 4);
	p.idx = malloc(p.nidx * sizeof(uint32_t) + 4);
	assert_true(p.data && p.scales && p.idx);
	return p;
}

static void piece_free(dml__gc_piece *p)
{
	free(p->data);
	free(p->scales);
	free(p->idx);
}

/* Encodes, decodes, and checks that the decoder gives what the encoder
 * said it would (error feedback relies on it). */
static void round_trip(int codec, const float *v, size_t n, size_t k, float *out,
                       uint64_t *rng)
{
	dml__gc_piece p = piece_new(codec, n, k);
	float *back = malloc(n * sizeof *back), *tmp = malloc(n * sizeof *tmp);
	char msg[160];
	dml__gc_encode(codec, v, n, k, rng, &p, back, tmp);
	assert_int_equal(dml__gc_decode(codec, n, &p, out, msg, sizeof msg), 0);
	assert_memory_equal(out, back, n * sizeof *out);
	free(back);
	free(tmp);
	piece_free(&p);
}

static void test_half_floats(void **state)
{
	(void)state;
	enum { N = 4096 };
	static float v[N], out[N];
	uint64_t s = 1, rng = 7;
	for (int i = 0; i < N; i++)
		v[i] = frand(&s) * ldexpf(1, (int)(splitmix(&s) % 40) - 30);
	v[0] = 1.0f;
	v[1] = -2.5f;
	v[2] = 65504.0f;  /* fp16's largest */
	v[3] = 1e6f;      /* beyond it: clamped */
	v[4] = 0x1p-24f;  /* fp16's smallest subnormal, exact */
	v[5] = 0x1p-26f;  /* below half of it: 0 */
	v[6] = 0;
	v[7] = 3.0e38f;   /* bf16 rounds it up to infinity: clamped */
	round_trip(DML__GC_FP16, v, N, 0, out, &rng);
	assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] == 65504.0f);
	assert_true(out[3] == 65504.0f && out[4] == 0x1p-24f && out[5] == 0);
	assert_true(out[7] == 65504.0f);
	for (int i = 8; i < N; i++) {
		float a = fabsf(v[i]);
		if (a >= 0x1p-14f) /* normal: half an ulp of 11 bits */
			assert_true(fabsf(out[i] - v[i]) <= a * 0x1p-11f);
		else /* subnormal: half of 2^-24 */
			assert_true(fabsf(out[i] - v[i]) <= 0x1p-25f);
	}
	round_trip(DML__GC_BF16, v, N, 0, out, &rng);
	assert_true(out[0] == 1.0f && out[1] == -2.5f && out[6] == 0);
	assert_true(isfinite(out[7]) && out[7] > 3.0e38f * 0.99f);
	for (int i = 8; i < N; i++)
		assert_true(fabsf(out[i] - v[i]) <= fabsf(v[i]) * 0x1p-8f);
}

/* QSGD: within one level of the bucket's scale, and unbiased: the mean
 * of many codings approaches the value. */
static void test_int8_stochastic(void **state)
{
	(void)state;
	enum { N = 1000, RUNS = 400 };
	static float v[N], out[N], sum[N];
	uint64_t s = 2, rng = 9;
	for (int i = 0; i < N; i++)
		v[i] = frand(&s) * (i < 512 ? 1.0f : 0.001f);
	for (int r = 0; r < RUNS; r++) {
		round_trip(DML__GC_INT8, v, N, 0, out, &rng);
		for (int i = 0; i < N; i++) {
			float scale = i < 512 ? 1.0f : 0.001f;
			assert_true(fabsf(out[i] - v[i]) <= scale / 127 * 1.0001f);
			sum[i] += out[i];
		}
	}
	double worst = 0;
	for (int i = 0; i < N; i++) {
		float scale = i < 512 ? 1.0f : 0.001f;
		/* the mean of RUNS draws: sd at most scale/127/2/sqrt(RUNS) */
		double z = fabs(sum[i] / RUNS - v[i]) / (scale / 127 / 2 / sqrt(RUNS));
		worst = z > worst ? z : worst;
	}
	assert_true(worst < 5.5); /* 1000 values: 5.5 sd is far beyond chance */
}

static void test_topk_choice(void **state)
{
	(void)state;
	enum { N = 1000 };
	static float v[N], out[N];
	uint64_t s = 3, rng = 11;
	for (int i = 0; i < N; i++)
		v[i] = frand(&s);
	assert_int_equal(dml__gc_topk_k(N, 0.01f), 10);
	assert_int_equal(dml__gc_topk_k(N, 1e-9f), 1);
	assert_int_equal(dml__gc_topk_k(N, 1.0f), N);
	round_trip(DML__GC_TOPK, v, N, 10, out, &rng);
	/* the 10 kept are the 10 largest magnitudes, exactly */
	int kept = 0;
	float least_kept = INFINITY, most_dropped = 0;
	for (int i = 0; i < N; i++) {
		if (out[i] != 0) {
			assert_true(out[i] == v[i]);
			kept++;
			least_kept = fminf(least_kept, fabsf(v[i]));
		} else {
			most_dropped = fmaxf(most_dropped, fabsf(v[i]));
		}
	}
	assert_int_equal(kept, 10);
	assert_true(least_kept >= most_dropped);
	/* ties: all equal, exactly k kept, the first ones */
	for (int i = 0; i < N; i++)
		v[i] = (i % 2) ? 0.5f : -0.5f;
	round_trip(DML__GC_TOPK, v, N, 7, out, &rng);
	for (int i = 0; i < N; i++)
		assert_true(out[i] == (i < 7 ? v[i] : 0));
}

static int by_magnitude_desc(const void *a, const void *b)
{
	float x = fabsf(*(const float *)a), y = fabsf(*(const float *)b);
	return (x < y) - (x > y);
}

/* Large n, small k: the sampled threshold gives the exact top k. */
static void test_topk_large(void **state)
{
	(void)state;
	enum { N = 200000 };
	float *v = malloc(N * sizeof *v), *out = malloc(N * sizeof *out);
	float *sorted = malloc(N * sizeof *sorted);
	assert_true(v && out && sorted);
	uint64_t s = 12, rng = 13;
	for (size_t k = 1; k <= 2001; k += 500) {
		for (int i = 0; i < N; i++)
			v[i] = frand(&s) * (i % 7 == 0 ? 10.0f : 1.0f);
		memcpy(sorted, v, N * sizeof *v);
		qsort(sorted, N, sizeof *sorted, by_magnitude_desc);
		round_trip(DML__GC_TOPK, v, N, k, out, &rng);
		size_t kept = 0;
		for (int i = 0; i < N; i++)
			if (out[i] != 0) {
				kept++;
				assert_true(fabsf(v[i]) >= fabsf(sorted[k - 1]));
			}
		assert_int_equal(kept, k);
	}
	free(v);
	free(out);
	free(sorted);
}

/* What a peer sends is a claim: every size, index, level and value. */
static void test_decode_refuses(void **state)
{
	(void)state;
	float v[600], out[600];
	char msg[160];
	uint64_t s = 4, rng = 5;
	for (int i = 0; i < 600; i++)
		v[i] = frand(&s);
	dml__gc_piece p = piece_new(DML__GC_INT8, 600, 0);
	dml__gc_encode(DML__GC_INT8, v, 600, 0, &rng, &p, NULL, NULL);
	assert_int_equal(dml__gc_decode(DML__GC_INT8, 600, &p, out, msg, sizeof msg), 0);
	assert_int_equal(dml__gc_decode(DML__GC_INT8, 601, &p, out, msg, sizeof msg), DML_EINVAL);
	assert_int_equal(dml__gc_decode(7, 600, &p, out, msg, sizeof msg), DML_EINVAL);
	assert_int_equal(dml__gc_decode(DML__GC_NONE, 600, &p, out, msg, sizeof msg), DML_EINVAL);
	p.scales[1] = NAN;
	assert_int_equal(dml__gc_decode(DML__GC_INT8, 600, &p, out, msg, sizeof msg), DML_ENONFINITE);
	p.scales[1] = -1;
	assert_int_equal(dml__gc_decode(DML__GC_INT8, 600, &p, out, msg, sizeof msg), DML_ENONFINITE);
	p.scales[1] = INFINITY;
	assert_int_equal(dml__gc_decode(DML__GC_INT8, 600, &p, out, msg, sizeof msg), DML_ENONFINITE);
	p.scales[1] = 3.4e38f; /* near FLT_MAX: level 127 must stay finite */
	p.data[512] = 127;
	assert_int_equal(dml__gc_decode(DML__GC_INT8, 600, &p, out, msg, sizeof msg), 0);
	assert_true(isfinite(out[512]) && out[512] == 3.4e38f);
	p.scales[1] = 1;
	p.data[3] = 0x80; /* -128 */
	assert_int_equal(dml__gc_decode(DML__GC_INT8, 600, &p, out, msg, sizeof msg), DML_EINVAL);
	p.nscales = 1;
	assert_int_equal(dml__gc_decode(DML__GC_INT8, 600, &p, out, msg, sizeof msg), DML_EINVAL);
	piece_free(&p);

	p = piece_new(DML__GC_FP16, 4, 0);
	dml__gc_encode(DML__GC_FP16, v, 4, 0, &rng, &p, NULL, NULL);
	p.data[2] = 0x00;
	p.data[3] = 0x7c; /* +infinity */
	assert_int_equal(dml__gc_decode(DML__GC_FP16, 4, &p, out, msg, sizeof msg), DML_ENONFINITE);
	p.data[3] = 0x7e; /* NaN */
	assert_int_equal(dml__gc_decode(DML__GC_FP16, 4, &p, out, msg, sizeof msg), DML_ENONFINITE);
	p.data[2] = 0x80;
	p.data[3] = 0x7f; /* a bf16 NaN */
	assert_int_equal(dml__gc_decode(DML__GC_BF16, 4, &p, out, msg, sizeof msg), DML_ENONFINITE);
	p.nbytes = 7;
	assert_int_equal(dml__gc_decode(DML__GC_FP16, 4, &p, out, msg, sizeof msg), DML_EINVAL);
	piece_free(&p);

	p = piece_new(DML__GC_TOPK, 600, 3);
	dml__gc_encode(DML__GC_TOPK, v, 600, 3, &rng, &p, NULL, out);
	assert_int_equal(dml__gc_decode(DML__GC_TOPK, 600, &p, out, msg, sizeof msg), 0);
	uint32_t keep = p.idx[1];
	p.idx[1] = p.idx[0]; /* not increasing (a repeat would add twice) */
	assert_int_equal(dml__gc_decode(DML__GC_TOPK, 600, &p, out, msg, sizeof msg), DML_EINVAL);
	p.idx[1] = keep;
	p.idx[2] = 600; /* outside */
	assert_int_equal(dml__gc_decode(DML__GC_TOPK, 600, &p, out, msg, sizeof msg), DML_EINVAL);
	p.idx[2] = keep + 1;
	float nan = NAN;
	memcpy(p.data + 8, &nan, 4);
	assert_int_equal(dml__gc_decode(DML__GC_TOPK, 600, &p, out, msg, sizeof msg), DML_ENONFINITE);
	p.nbytes = 8;
	assert_int_equal(dml__gc_decode(DML__GC_TOPK, 600, &p, out, msg, sizeof msg), DML_EINVAL);
	p.nidx = 601;
	p.nbytes = 4 * 601;
	assert_int_equal(dml__gc_decode(DML__GC_TOPK, 600, &p, out, msg, sizeof msg), DML_EINVAL);
	piece_free(&p);
}

/* ---- over RPC --------------------------------------------------------- */

typedef struct served {
	fixture f[2];
	dml_ps *store[2];
	dml_rpc_client *c[2];
	dml_ps *remote;
} served;

/* 2 shards of a dim-dim SGD store (lr 1: a push subtracts the gradient),
 * both asking for `codec`, and a remote handle to them. */
static void serve2(served *s, size_t dim, int codec, float topk)
{
	memset(s, 0, sizeof *s);
	for (int i = 0; i < 2; i++) {
		size_t off, n;
		assert_int_equal(dml_shard_range(dim, i, 2, &off, &n), 0);
		dml_ps_opts o = {.optim = {.kind = DML_OPTIM_SGD, .lr = 1}};
		assert_int_equal(dml_ps_new(&s->store[i], n, &o), 0);
		assert_int_equal(dml_rpc_server_new(&s->f[i].srv, NULL), 0);
		dml_ps_serve_opts so = {.compress = codec, .topk = topk};
		assert_int_equal(dml_ps_serve_with(s->store[i], s->f[i].srv, &so), 0);
		assert_int_equal(dml_rpc_server_listen(s->f[i].srv, "127.0.0.1:0"), 0);
		fixture_start(&s->f[i], 1);
		assert_int_equal(dml_rpc_dial(&s->c[i], s->f[i].addr, NULL), 0);
	}
	assert_int_equal(dml_ps_connect(&s->remote, s->c, 2, NULL), 0);
}

static void unserve2(served *s)
{
	dml_ps_free(s->remote);
	for (int i = 0; i < 2; i++) {
		dml_rpc_free(s->c[i]);
		fixture_stop(&s->f[i]);
		dml_ps_free(s->store[i]);
	}
}

static uint64_t coded_calls(served *s, int i)
{
	dml_rpc_stats st;
	assert_int_equal(dml_rpc_server_stats(&st, s->f[i].srv, "PS.PushCoded"), 0);
	return st.calls;
}

/* Each codec through a handle: the store moves by the decoded gradient,
 * within the codec's error, and the pushes travel as PS.PushCoded. */
static void test_push_each_codec(void **state)
{
	(void)state;
	enum { DIM = 3000 };
	static float g[DIM], w[DIM];
	uint64_t sd = 6;
	for (int i = 0; i < DIM; i++)
		g[i] = frand(&sd);
	const struct {
		int codec;
		float tol; /* of |g| <= 1 */
	} c[] = {{DML_PS_COMPRESS_NONE, 0}, {DML_PS_COMPRESS_FP16, 1.0f / 2048},
	         {DML_PS_COMPRESS_BF16, 1.0f / 256}, {DML_PS_COMPRESS_INT8, 1.0f / 127}};
	for (size_t t = 0; t < sizeof c / sizeof c[0]; t++) {
		served s;
		serve2(&s, DIM, c[t].codec, 0);
		assert_int_equal(dml_ps_push(s.remote, g), 0);
		assert_int_equal(dml_ps_pull(s.remote, w), 0);
		for (int i = 0; i < DIM; i++)
			assert_true(fabsf(w[i] + g[i]) <= c[t].tol * 1.0001f);
		uint64_t n = coded_calls(&s, 0) + coded_calls(&s, 1);
		assert_int_equal(n, c[t].codec ? 2 : 0);
		uint64_t u;
		assert_int_equal(dml_ps_updates(s.store[0], &u), 0);
		assert_int_equal(u, 1);
		/* updates and assigns are not compressed: exact */
		assert_int_equal(dml_ps_assign(s.remote, g), 0);
		assert_int_equal(dml_ps_update(s.remote, g), 0);
		assert_int_equal(dml_ps_pull(s.remote, w), 0);
		for (int i = 0; i < DIM; i++)
			assert_true(w[i] == 2 * g[i]);
		unserve2(&s);
	}
}

/* Top-k with error feedback: what was not sent is sent later, so after T
 * pushes of the same gradient the store is within the residual's bound of
 * -T g everywhere; without feedback most coordinates would never move. */
static void test_topk_error_feedback(void **state)
{
	(void)state;
	enum { DIM = 2000, T = 60 };
	static float g[DIM], w[DIM];
	uint64_t sd = 8;
	for (int i = 0; i < DIM; i++)
		g[i] = 0.1f + 0.9f * fabsf(frand(&sd)); /* 0.1 .. 1 */
	served s;
	serve2(&s, DIM, DML_PS_COMPRESS_TOPK, 0.1f);
	for (int t = 0; t < T; t++)
		assert_int_equal(dml_ps_push(s.remote, g), 0);
	assert_int_equal(dml_ps_pull(s.remote, w), 0);
	int moved = 0;
	for (int i = 0; i < DIM; i++) {
		/* a coordinate's residual grows by g_i per push until it is among
		 * the largest tenth: at most ~ 10 pushes' worth */
		assert_true(fabsf(w[i] + T * g[i]) <= 12.0f);
		moved += w[i] != 0;
	}
	assert_int_equal(moved, DIM);
	assert_int_equal(coded_calls(&s, 0) + coded_calls(&s, 1), 2 * T);
	unserve2(&s);
}

/* Hostile coded frames: refused with a status, the store unchanged. */
static void test_hostile_coded_frames(void **state)
{
	(void)state;
	served s;
	serve2(&s, 100, DML_PS_COMPRESS_NONE, 0);
	uint8_t data[200] = {0};
	float scales[1] = {1};
	uint32_t idx[2] = {5, 3};
	const struct {
		int32_t op, codec;
		uint64_t off, n;
		size_t nb, ns, ni;
	} bad[] = {
		{PSW_OP_ASSIGN, DML__GC_FP16, 0, 10, 20, 0, 0}, /* assign: not coded */
		{PSW_OP_PUSH, 9, 0, 10, 20, 0, 0},              /* unknown codec */
		{PSW_OP_PUSH, DML__GC_FP16, 45, 10, 20, 0, 0},  /* beyond the shard's 50 */
		{PSW_OP_PUSH, DML__GC_FP16, 0, UINT64_MAX, 20, 0, 0},
		{PSW_OP_PUSH, DML__GC_FP16, 0, 10, 19, 0, 0},   /* bytes for 9.5 */
		{PSW_OP_PUSH, DML__GC_INT8, 0, 10, 10, 0, 0},   /* no scale */
		{PSW_OP_PUSH, DML__GC_TOPK, 0, 10, 8, 0, 2},    /* 5 then 3 */
	};
	for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
		psw_cpush a = {77, t + 1, bad[t].op, 1, bad[t].off, bad[t].n, bad[t].codec,
		               {scales, bad[t].ns, 0}, {idx, bad[t].ni, 0},
		               {data, bad[t].nb, 0}};
		psw_status st = {0};
		st.msg = (dml_str){st.buf, 0, sizeof st.buf};
		int rc = dml_rpc_call(s.c[0], &psw_m_push_coded, &a, &st, 10000);
		if (rc)
			fprintf(stderr, "case %zu: %d %s\n", t, rc, dml_error_detail());
		assert_int_equal(rc, 0);
		assert_true(st.code == DML_EINVAL || st.code == DML_ENONFINITE);
	}
	/* a frame larger than a plain frame could be, claimed by a few bytes */
	psw_cpush a = {77, 100, PSW_OP_PUSH, 1, 0, (uint64_t)1 << 30, DML__GC_TOPK,
	               {scales, 0, 0}, {idx, 0, 0}, {data, 0, 0}};
	psw_status st = {0};
	st.msg = (dml_str){st.buf, 0, sizeof st.buf};
	assert_int_equal(dml_rpc_call(s.c[0], &psw_m_push_coded, &a, &st, 10000), 0);
	assert_int_equal(st.code, DML_EINVAL);
	uint64_t u;
	assert_int_equal(dml_ps_updates(s.store[0], &u), 0);
	assert_int_equal(u, 0);
	float w[50];
	assert_int_equal(dml_ps_pull(s.store[0], w), 0);
	for (int i = 0; i < 50; i++)
		assert_true(w[i] == 0);
	/* and a good one is applied once, even when sent twice */
	uint16_t one = 0x3c00; /* 1.0 in fp16 */
	for (int i = 0; i < 10; i++)
		memcpy(data + 2 * i, &one, 2);
	psw_cpush ok = {77, 101, PSW_OP_PUSH, 1, 0, 10, DML__GC_FP16,
	                {scales, 0, 0}, {idx, 0, 0}, {data, 20, 0}};
	for (int k = 0; k < 2; k++) {
		st = (psw_status){0};
		st.msg = (dml_str){st.buf, 0, sizeof st.buf};
		assert_int_equal(dml_rpc_call(s.c[0], &psw_m_push_coded, &ok, &st, 10000), 0);
		assert_int_equal(st.code, 0);
	}
	assert_int_equal(dml_ps_pull(s.store[0], w), 0);
	for (int i = 0; i < 50; i++)
		assert_true(w[i] == (i < 10 ? -1.0f : 0.0f));
	unserve2(&s);
}

/* Options: what a store may ask for. */
static void test_serve_options(void **state)
{
	(void)state;
	dml_ps *ps;
	dml_rpc_server *srv;
	assert_int_equal(dml_ps_new(&ps, 10, NULL), 0);
	assert_int_equal(dml_rpc_server_new(&srv, NULL), 0);
	dml_ps_serve_opts o = {.compress = 5};
	assert_int_equal(dml_ps_serve_with(ps, srv, &o), DML_EINVAL);
	o = (dml_ps_serve_opts){.compress = DML_PS_COMPRESS_TOPK, .topk = 1.5f};
	assert_int_equal(dml_ps_serve_with(ps, srv, &o), DML_EINVAL);
	o.topk = NAN;
	assert_int_equal(dml_ps_serve_with(ps, srv, &o), DML_EINVAL);
	o.topk = 0.5f;
	assert_int_equal(dml_ps_serve_with(ps, srv, &o), 0);
	dml_rpc_server_free(srv);
	dml_ps_free(ps);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_half_floats),
		cmocka_unit_test(test_int8_stochastic),
		cmocka_unit_test(test_topk_choice),
		cmocka_unit_test(test_topk_large),
		cmocka_unit_test(test_decode_refuses),
		cmocka_unit_test(test_push_each_codec),
		cmocka_unit_test(test_topk_error_feedback),
		cmocka_unit_test(test_hostile_coded_frames),
		cmocka_unit_test(test_serve_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

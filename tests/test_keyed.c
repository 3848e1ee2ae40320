/* test_keyed.c - keyed stores (rows by 64-bit key), local, remote and
 * sharded; non-finite values refused everywhere; dense calls split into
 * frames; sizes from a peer checked; keyed checkpoints. */
#define _GNU_SOURCE
#include "testutil.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ps_wire.h"

/* ---- helpers ------------------------------------------------------- */

typedef struct served {
	dml_ps *ps;
	fixture f;
} served;

static void serve_store(served *s, dml_ps *ps, int threads)
{
	s->ps = ps;
	assert_int_equal(dml_rpc_server_new(&s->f.srv, NULL), 0);
	assert_int_equal(dml_ps_serve(s->ps, s->f.srv), 0);
	assert_int_equal(dml_rpc_server_listen(s->f.srv, "127.0.0.1:0"), 0);
	fixture_start(&s->f, threads);
}

static void serve_stop(served *s)
{
	fixture_stop(&s->f);
	dml_ps_free(s->ps);
}

static dml_rpc_client *dial_opts(const char *addr, const dml_rpc_client_opts *o)
{
	dml_rpc_client *c;
	assert_int_equal(dml_rpc_dial(&c, addr, o), 0);
	return c;
}

static dml_ps *keyed(size_t width, const dml_ps_opts *o)
{
	dml_ps *ps;
	assert_int_equal(dml_ps_new_keyed(&ps, width, o), 0);
	return ps;
}

static float frand(uint64_t *s)
{
	return (float)((double)(splitmix(s) >> 40) / 16777216.0 - 0.5);
}

/* ---- local --------------------------------------------------------- */

/* Width 1 with keys 0..dim-1: the same pushes give the same parameters as
 * a dense store's sparse pushes (and, when every key is pushed every
 * step, as its dense pushes), for each optimizer rule. */
static void test_keyed_equals_dense(void **state)
{
	(void)state;
	const size_t dim = 64;
	dml_optim_kind kinds[] = {DML_OPTIM_SGD, DML_OPTIM_MOMENTUM,
	                          DML_OPTIM_ADAGRAD, DML_OPTIM_ADAM};
	for (size_t q = 0; q < sizeof kinds / sizeof kinds[0]; q++) {
		dml_ps_opts o = {0};
		o.optim.kind = kinds[q];
		o.optim.lr = 0.1f;
		o.optim.l2 = 0.01f;
		dml_ps *d, *ds, *k = keyed(1, &o);
		assert_int_equal(dml_ps_new(&d, dim, &o), 0);
		assert_int_equal(dml_ps_new(&ds, dim, &o), 0);
		uint64_t seed = 7 + q;
		float g[64], out[64], outd[64], outk[64];
		uint64_t keys[64];
		uint32_t idx[64];
		for (int step = 0; step < 50; step++) {
			/* all keys, in a shuffled order */
			for (size_t i = 0; i < dim; i++)
				idx[i] = (uint32_t)i;
			for (size_t i = dim - 1; i > 0; i--) {
				size_t j = splitmix(&seed) % (i + 1);
				uint32_t t = idx[i];
				idx[i] = idx[j];
				idx[j] = t;
			}
			float dense_g[64];
			for (size_t i = 0; i < dim; i++) {
				g[i] = frand(&seed);
				keys[i] = idx[i];
				dense_g[idx[i]] = g[i];
			}
			assert_int_equal(dml_ps_push_rows(k, keys, dim, g), 0);
			assert_int_equal(dml_ps_push_sparse(ds, idx, g, dim), 0);
			assert_int_equal(dml_ps_push(d, dense_g), 0);
		}
		for (size_t i = 0; i < dim; i++)
			keys[i] = i;
		assert_int_equal(dml_ps_pull_rows(k, keys, dim, outk), 0);
		assert_int_equal(dml_ps_pull(d, outd), 0);
		assert_int_equal(dml_ps_pull(ds, out), 0);
		for (size_t i = 0; i < dim; i++) {
			assert_true(outk[i] == out[i]); /* the same rule, bit for bit */
			assert_true(fabsf(outk[i] - outd[i]) <= 1e-6f * (1 + fabsf(outd[i])));
		}
		/* sparse steps on a few keys: lazy, the same as the dense store's
		 * sparse steps */
		for (int step = 0; step < 20; step++) {
			size_t n = 1 + splitmix(&seed) % 5;
			for (size_t i = 0; i < n; i++) {
				idx[i] = (uint32_t)(splitmix(&seed) % dim);
				keys[i] = idx[i];
				g[i] = frand(&seed);
			}
			assert_int_equal(dml_ps_push_rows(k, keys, n, g), 0);
			assert_int_equal(dml_ps_push_sparse(ds, idx, g, n), 0);
		}
		for (size_t i = 0; i < dim; i++)
			keys[i] = i;
		assert_int_equal(dml_ps_pull_rows(k, keys, dim, outk), 0);
		assert_int_equal(dml_ps_pull(ds, out), 0);
		for (size_t i = 0; i < dim; i++)
			assert_true(outk[i] == out[i]);
		uint64_t rows;
		assert_int_equal(dml_ps_rows(k, &rows), 0);
		assert_int_equal(rows, dim);
		dml_ps_free(k);
		dml_ps_free(d);
		dml_ps_free(ds);
	}
}

/* Keys anywhere in 2^64, absent keys read as their initial value and are
 * not created, repeated keys add up, assign and update. */
static void test_keys_and_absent_rows(void **state)
{
	(void)state;
	dml_ps_opts o = {0};
	o.optim.lr = 1.0f;
	dml_ps *k = keyed(3, &o);
	uint64_t keys[] = {UINT64_MAX, UINT64_MAX - 1, 0, 1ULL << 63, UINT64_MAX};
	float g[15], out[15];
	for (int i = 0; i < 15; i++)
		g[i] = (float)(i + 1);
	assert_int_equal(dml_ps_pull_rows(k, keys, 5, out), 0);
	for (int i = 0; i < 15; i++)
		assert_true(out[i] == 0.0f);
	uint64_t rows = 99;
	assert_int_equal(dml_ps_rows(k, &rows), 0);
	assert_int_equal(rows, 0); /* a pull creates nothing */
	assert_int_equal(dml_ps_push_rows(k, keys, 5, g), 0);
	assert_int_equal(dml_ps_rows(k, &rows), 0);
	assert_int_equal(rows, 4);
	assert_int_equal(dml_ps_pull_rows(k, keys, 5, out), 0);
	for (int c = 0; c < 3; c++) {
		assert_true(out[c] == -(g[c] + g[12 + c])); /* UINT64_MAX twice */
		assert_true(out[12 + c] == out[c]);
		assert_true(out[3 + c] == -g[3 + c]);
		assert_true(out[9 + c] == -g[9 + c]);
	}
	float v[3] = {5, 6, 7};
	uint64_t one = 42;
	assert_int_equal(dml_ps_assign_rows(k, &one, 1, v), 0);
	assert_int_equal(dml_ps_update_rows(k, &one, 1, v), 0);
	assert_int_equal(dml_ps_pull_rows(k, &one, 1, out), 0);
	assert_true(out[0] == 10 && out[1] == 12 && out[2] == 14);
	/* the dense calls are not a keyed store's, and the reverse */
	float d[3];
	assert_int_equal(dml_ps_pull(k, d), DML_EINVAL);
	assert_int_equal(dml_ps_push(k, d), DML_EINVAL);
	assert_int_equal(dml_ps_dim(k), 0);
	assert_int_equal(dml_ps_width(k), 3);
	dml_ps *dense;
	assert_int_equal(dml_ps_new(&dense, 3, NULL), 0);
	assert_int_equal(dml_ps_pull_rows(dense, &one, 1, out), DML_EINVAL);
	assert_int_equal(dml_ps_rows(dense, &rows), DML_EINVAL);
	dml_ps_free(dense);
	/* bad options */
	dml_ps *bad;
	assert_int_equal(dml_ps_new_keyed(&bad, 0, NULL), DML_EINVAL);
	assert_int_equal(dml_ps_new_keyed(&bad, DML_PS_MAX_WIDTH + 1, NULL), DML_EINVAL);
	assert_int_equal(dml_ps_new_keyed(&bad, 1, &(dml_ps_opts){.init = v}), DML_EINVAL);
	assert_int_equal(dml_ps_new_keyed(&bad, 1, &(dml_ps_opts){.row_init = 9}), DML_EINVAL);
	assert_int_equal(dml_ps_new(&bad, 3, &(dml_ps_opts){.max_rows = 5}), DML_EINVAL);
	dml_ps_free(k);
}

/* Seeded initial values: a function of (seed, key, element) only, the
 * same in two stores; a push starts from them. */
static void test_seeded_init(void **state)
{
	(void)state;
	dml_ps_opts o = {0};
	o.row_init = DML_PS_INIT_NORMAL;
	o.init_scale = 0.5f;
	o.init_seed = 99;
	o.optim.lr = 1.0f;
	dml_ps *a = keyed(8, &o), *b = keyed(8, &o);
	o.init_seed = 100;
	dml_ps *c = keyed(8, &o);
	uint64_t keys[200];
	uint64_t s = 3;
	for (int i = 0; i < 200; i++)
		keys[i] = splitmix(&s);
	float *ra = malloc(200 * 8 * sizeof *ra), *rb = malloc(200 * 8 * sizeof *rb);
	float *rc = malloc(200 * 8 * sizeof *rc);
	assert_int_equal(dml_ps_pull_rows(a, keys, 200, ra), 0);
	assert_int_equal(dml_ps_pull_rows(b, keys + 100, 100, rb + 800), 0);
	assert_int_equal(dml_ps_pull_rows(b, keys, 100, rb), 0);
	assert_int_equal(dml_ps_pull_rows(c, keys, 200, rc), 0);
	double sum = 0, sq = 0;
	int differ = 0;
	for (int i = 0; i < 1600; i++) {
		assert_true(ra[i] == rb[i]);
		differ += ra[i] != rc[i];
		sum += ra[i];
		sq += (double)ra[i] * ra[i];
	}
	assert_true(differ > 1500);
	double mean = sum / 1600, sd = sqrt(sq / 1600 - mean * mean);
	assert_true(fabs(mean) < 0.05 && fabs(sd - 0.5) < 0.05);
	/* a push creates the row from its initial value */
	float g[8] = {1, 1, 1, 1, 1, 1, 1, 1}, out[8];
	assert_int_equal(dml_ps_push_rows(a, keys, 1, g), 0);
	assert_int_equal(dml_ps_pull_rows(a, keys, 1, out), 0);
	for (int i = 0; i < 8; i++)
		assert_true(out[i] == ra[i] - 1);
	/* uniform lies in [-scale, scale) */
	o.row_init = DML_PS_INIT_UNIFORM;
	dml_ps *u = keyed(8, &o);
	assert_int_equal(dml_ps_pull_rows(u, keys, 200, ra), 0);
	for (int i = 0; i < 1600; i++)
		assert_true(ra[i] >= -0.5f && ra[i] < 0.5f);
	free(ra);
	free(rb);
	free(rc);
	dml_ps_free(a);
	dml_ps_free(b);
	dml_ps_free(c);
	dml_ps_free(u);
}

/* max_rows: a push that would create more is DML_EFULL and changes
 * nothing; repeated new keys count once; existing rows still take
 * pushes. */
static void test_max_rows(void **state)
{
	(void)state;
	dml_ps_opts o = {0};
	o.max_rows = 4;
	o.optim.lr = 1.0f;
	dml_ps *k = keyed(1, &o);
	uint64_t keys[] = {1, 2, 3, 3, 3, 4};
	float g[6] = {1, 1, 1, 1, 1, 1}, out[6];
	assert_int_equal(dml_ps_push_rows(k, keys, 6, g), 0); /* 4 distinct */
	uint64_t more[] = {1, 5};
	assert_int_equal(dml_ps_push_rows(k, more, 2, g), DML_EFULL);
	assert_int_equal(dml_ps_update_rows(k, more + 1, 1, g), DML_EFULL);
	uint64_t rows, updates;
	assert_int_equal(dml_ps_rows(k, &rows), 0);
	assert_int_equal(rows, 4);
	assert_int_equal(dml_ps_updates(k, &updates), 0);
	assert_int_equal(updates, 1);
	assert_int_equal(dml_ps_pull_rows(k, keys, 6, out), 0);
	assert_true(out[0] == -1 && out[2] == -3 && out[5] == -1);
	assert_int_equal(dml_ps_push_rows(k, keys, 2, g), 0); /* old rows: fine */
	dml_ps_free(k);
}

/* Every entry point refuses NaN and infinities, changing nothing; an
 * Adam store's state is not poisoned. */
static void test_nonfinite_refused_local(void **state)
{
	(void)state;
	dml_ps_opts o = {0};
	o.optim.kind = DML_OPTIM_ADAM;
	dml_ps *d, *k = keyed(2, &o);
	assert_int_equal(dml_ps_new(&d, 4, &o), 0);
	float bad[4] = {1, NAN, 2, 3}, inf[4] = {INFINITY, 0, 0, 0}, out[4];
	uint32_t idx[2] = {0, 1};
	uint64_t keys[2] = {7, 8};
	float *vals[] = {bad, inf};
	for (int v = 0; v < 2; v++) {
		assert_int_equal(dml_ps_push(d, vals[v]), DML_ENONFINITE);
		assert_int_equal(dml_ps_update(d, vals[v]), DML_ENONFINITE);
		assert_int_equal(dml_ps_assign(d, vals[v]), DML_ENONFINITE);
		assert_int_equal(dml_ps_push_sparse(d, idx, vals[v], 2), DML_ENONFINITE);
		assert_int_equal(dml_ps_update_sparse(d, idx, vals[v], 2), DML_ENONFINITE);
		assert_int_equal(dml_ps_push_rows(k, keys, 2, vals[v]), DML_ENONFINITE);
		assert_int_equal(dml_ps_update_rows(k, keys, 2, vals[v]), DML_ENONFINITE);
		assert_int_equal(dml_ps_assign_rows(k, keys, 2, vals[v]), DML_ENONFINITE);
		assert_non_null(strstr(dml_error_detail(), "value"));
	}
	assert_int_equal(dml_ps_pull(d, out), 0);
	for (int i = 0; i < 4; i++)
		assert_true(out[i] == 0);
	uint64_t n;
	assert_int_equal(dml_ps_rows(k, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(dml_ps_updates(d, &n), 0);
	assert_int_equal(n, 0);
	dml_ps *bi;
	assert_int_equal(dml_ps_new(&bi, 4, &(dml_ps_opts){.init = bad}), DML_ENONFINITE);
	/* in whole blocks of the vectorised check and in the tail, every kind
	 * of non-finite value; the largest finite values pass */
	enum { BIG = 5000 };
	dml_ps *big;
	assert_int_equal(dml_ps_new(&big, BIG, NULL), 0);
	float *v = calloc(BIG, sizeof *v);
	size_t where[] = {0, 1023, 1024, 3000, 4095, 4096, 4999};
	float what[] = {NAN, INFINITY, -INFINITY, -NAN};
	for (size_t a = 0; a < sizeof where / sizeof where[0]; a++)
		for (size_t b = 0; b < 4; b++) {
			for (size_t i = 0; i < BIG; i++)
				v[i] = i % 2 ? 3.4e38f : -3.4e38f;
			v[where[a]] = what[b];
			assert_int_equal(dml_ps_update(big, v), DML_ENONFINITE);
			char want[32];
			snprintf(want, sizeof want, "value %zu ", where[a]);
			assert_non_null(strstr(dml_error_detail(), want));
		}
	for (size_t i = 0; i < BIG; i++)
		v[i] = i % 2 ? 3.4e38f : -1e-45f;
	assert_int_equal(dml_ps_assign(big, v), 0);
	free(v);
	dml_ps_free(big);
	dml_ps_free(d);
	dml_ps_free(k);
}

/* ---- remote -------------------------------------------------------- */

/* The same pushes to a local keyed store, one served shard and three
 * served shards give the same rows; counts add up over shards. */
static void test_remote_and_sharded_keyed(void **state)
{
	(void)state;
	dml_ps_opts o = {0};
	o.optim.kind = DML_OPTIM_ADAGRAD;
	o.optim.lr = 0.5f;
	o.row_init = DML_PS_INIT_UNIFORM;
	o.init_seed = 5;
	dml_ps *local = keyed(4, &o);
	served one, three[3];
	serve_store(&one, keyed(4, &o), 1);
	for (int i = 0; i < 3; i++)
		serve_store(&three[i], keyed(4, &o), 1);
	dml_rpc_client *c1 = dial_opts(one.f.addr, NULL), *c3[3];
	for (int i = 0; i < 3; i++)
		c3[i] = dial_opts(three[i].f.addr, NULL);
	dml_ps *r1, *r3;
	assert_int_equal(dml_ps_connect(&r1, &c1, 1, NULL), 0);
	assert_int_equal(dml_ps_connect(&r3, c3, 3, NULL), 0);
	assert_int_equal(dml_ps_width(r3), 4);
	assert_int_equal(dml_ps_dim(r3), 0);
	dml_ps *all[] = {local, r1, r3};
	uint64_t s = 11;
	enum { N = 300 };
	uint64_t *keys = malloc(N * sizeof *keys);
	float *g = malloc(N * 4 * sizeof *g);
	for (int step = 0; step < 10; step++) {
		size_t n = 1 + splitmix(&s) % N;
		for (size_t i = 0; i < n; i++)
			keys[i] = splitmix(&s) % 500 + (step % 2 ? UINT64_MAX - 600 : 0);
		for (size_t i = 0; i < n * 4; i++)
			g[i] = frand(&s);
		for (int a = 0; a < 3; a++)
			assert_int_equal(dml_ps_push_rows(all[a], keys, n, g), 0);
	}
	for (size_t i = 0; i < N; i++)
		keys[i] = i % 2 ? splitmix(&s) % 500 : UINT64_MAX - 600 + splitmix(&s) % 700;
	float *out[3];
	for (int a = 0; a < 3; a++) {
		out[a] = malloc(N * 4 * sizeof(float));
		assert_int_equal(dml_ps_pull_rows(all[a], keys, N, out[a]), 0);
	}
	for (size_t i = 0; i < N * 4; i++) {
		assert_true(out[0][i] == out[1][i]);
		assert_true(out[0][i] == out[2][i]);
	}
	uint64_t rl, r3n, sum = 0;
	assert_int_equal(dml_ps_rows(local, &rl), 0);
	assert_int_equal(dml_ps_rows(r3, &r3n), 0);
	assert_int_equal(rl, r3n);
	for (int i = 0; i < 3; i++) {
		uint64_t n;
		assert_int_equal(dml_ps_rows(three[i].ps, &n), 0);
		assert_true(n > 0); /* the hash spreads the keys */
		sum += n;
	}
	assert_int_equal(sum, rl);
	/* non-finite values are refused before anything is sent */
	g[1] = NAN;
	assert_int_equal(dml_ps_push_rows(r3, keys, 2, g), DML_ENONFINITE);
	/* max_rows on a server is the client's DML_EFULL */
	dml_ps_free(r1);
	dml_rpc_free(c1);
	for (int a = 0; a < 3; a++)
		free(out[a]);
	free(keys);
	free(g);
	dml_ps_free(r3);
	for (int i = 0; i < 3; i++) {
		dml_rpc_free(c3[i]);
		serve_stop(&three[i]);
	}
	serve_stop(&one);
	dml_ps_free(local);
}

/* A server's refusals reach the client as codes: DML_EFULL from
 * max_rows, DML_ENONFINITE from a raw peer's NaN (which the server
 * checks itself), and dense calls on a keyed store. */
static void test_remote_refusals(void **state)
{
	(void)state;
	dml_ps_opts o = {0};
	o.max_rows = 10;
	served sv;
	serve_store(&sv, keyed(1, &o), 1);
	dml_rpc_client *c = dial_opts(sv.f.addr, NULL);
	dml_ps *r;
	assert_int_equal(dml_ps_connect(&r, &c, 1, NULL), 0);
	uint64_t keys[20];
	float g[20];
	for (int i = 0; i < 20; i++) {
		keys[i] = (uint64_t)i * 1000003;
		g[i] = 1;
	}
	assert_int_equal(dml_ps_push_rows(r, keys, 11, g), DML_EFULL);
	assert_non_null(strstr(dml_error_detail(), "max_rows"));
	assert_int_equal(dml_ps_push_rows(r, keys, 10, g), 0);
	/* a raw peer's NaN */
	float nan1[1] = {NAN};
	psw_rpush q = {77, 1, PSW_OP_PUSH, 1, {(int64_t *)keys, 1, 0}, {nan1, 1, 0}};
	psw_status st = {0};
	st.msg = (dml_str){st.buf, 0, sizeof st.buf};
	assert_int_equal(dml_rpc_call(c, &psw_m_push_rows, &q, &st, 5000), 0);
	assert_int_equal(st.code, DML_ENONFINITE);
	/* the same number again is not taken for a duplicate: refused again */
	assert_int_equal(dml_rpc_call(c, &psw_m_push_rows, &q, &st, 5000), 0);
	assert_int_equal(st.code, DML_ENONFINITE);
	/* the 0.2 dense methods on a keyed store */
	psw_push dp = {78, 1, PSW_OP_PUSH, {g, 1, 0}};
	assert_int_equal(dml_rpc_call(c, &psw_m_push, &dp, NULL, 5000), DML_EHANDLER);
	psw_range pr = {0, 0};
	float pb[4];
	psw_vec pv = {{pb, 0, 4}};
	assert_int_equal(dml_rpc_call(c, &psw_m_pull, &pr, &pv, 5000), DML_EHANDLER);
	/* an old client's PS.Info sees dimension 0 and stops there */
	psw_info info;
	assert_int_equal(dml_rpc_call(c, &psw_m_info, NULL, &info, 5000), 0);
	assert_int_equal(info.dim, 0);
	dml_ps_free(r);
	dml_rpc_free(c);
	serve_stop(&sv);
}

/* A raw peer's NaN in the 0.2 dense methods is refused too. */
static void test_remote_nonfinite_dense(void **state)
{
	(void)state;
	served sv;
	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, 4, NULL), 0);
	serve_store(&sv, ps, 1);
	dml_rpc_client *c = dial_opts(sv.f.addr, NULL);
	dml_ps *r;
	assert_int_equal(dml_ps_connect(&r, &c, 1, NULL), 0);
	float v[4] = {0, 0, INFINITY, 0}, out[4];
	assert_int_equal(dml_ps_push(r, v), DML_ENONFINITE);
	assert_int_equal(dml_ps_assign(r, v), DML_ENONFINITE);
	psw_push dp = {78, 1, PSW_OP_PUSH, {v, 4, 0}};
	assert_int_equal(dml_rpc_call(c, &psw_m_push, &dp, NULL, 5000), DML_EHANDLER);
	psw_vec av = {{v, 4, 0}};
	assert_int_equal(dml_rpc_call(c, &psw_m_assign, &av, NULL, 5000), DML_EHANDLER);
	uint32_t idx[1] = {2};
	psw_spush sp = {78, 2, PSW_OP_PUSH, {idx, 1, 0}, {v + 2, 1, 0}};
	assert_int_equal(dml_rpc_call(c, &psw_m_spush, &sp, NULL, 5000), DML_EHANDLER);
	psw_xpush xp = {78, 3, PSW_OP_PUSH, 1, 0, {v, 4, 0}};
	psw_status st = {0};
	st.msg = (dml_str){st.buf, 0, sizeof st.buf};
	assert_int_equal(dml_rpc_call(c, &psw_m_push_range, &xp, &st, 5000), 0);
	assert_int_equal(st.code, DML_ENONFINITE);
	assert_int_equal(dml_ps_pull(r, out), 0);
	for (int i = 0; i < 4; i++)
		assert_true(out[i] == 0);
	dml_ps_free(r);
	dml_rpc_free(c);
	serve_stop(&sv);
}

/* ---- split dense calls, across a dropped connection ---------------- */

/* A relay between a client and a server that cuts its first connection
 * after `cut` bytes from the client (both ways closed), and relays every
 * later connection whole. */
typedef struct relay {
	int lfd;
	struct sockaddr_in to;
	size_t cut;
	atomic_int stop;
	atomic_int cuts;
	pthread_t t;
	char addr[64];
} relay;

static void relay_pair(relay *r, int a, int b, size_t cut)
{
	char buf[65536];
	size_t sent = 0;
	struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
	while (!atomic_load(&r->stop)) {
		if (poll(p, 2, 50) < 0)
			break;
		if (p[0].revents) {
			ssize_t n = read(a, buf, sizeof buf);
			if (n <= 0)
				break;
			if (cut && sent + (size_t)n >= cut) {
				atomic_fetch_add(&r->cuts, 1);
				break; /* drop it mid-stream */
			}
			sent += (size_t)n;
			if (write(b, buf, (size_t)n) != n)
				break;
		}
		if (p[1].revents) {
			ssize_t n = read(b, buf, sizeof buf);
			if (n <= 0 || write(a, buf, (size_t)n) != n)
				break;
		}
	}
	close(a);
	close(b);
}

static void *relay_main(void *p)
{
	relay *r = p;
	for (int k = 0; !atomic_load(&r->stop); k++) {
		struct pollfd pl = {r->lfd, POLLIN, 0};
		if (poll(&pl, 1, 50) <= 0)
			continue;
		int a = accept(r->lfd, NULL, NULL);
		if (a < 0)
			continue;
		int b = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(b, (struct sockaddr *)&r->to, sizeof r->to) != 0) {
			close(a);
			close(b);
			continue;
		}
		relay_pair(r, a, b, k == 0 ? r->cut : 0); /* one at a time */
	}
	return NULL;
}

static void relay_start(relay *r, const char *server_addr, size_t cut)
{
	memset(r, 0, sizeof *r);
	r->cut = cut;
	const char *colon = strrchr(server_addr, ':');
	r->to.sin_family = AF_INET;
	r->to.sin_port = htons((uint16_t)atoi(colon + 1));
	r->to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in me = {0};
	me.sin_family = AF_INET;
	me.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(r->lfd, (struct sockaddr *)&me, sizeof me), 0);
	assert_int_equal(listen(r->lfd, 4), 0);
	socklen_t len = sizeof me;
	getsockname(r->lfd, (struct sockaddr *)&me, &len);
	snprintf(r->addr, sizeof r->addr, "127.0.0.1:%d", ntohs(me.sin_port));
	pthread_create(&r->t, NULL, relay_main, r);
}

static void relay_stop(relay *r)
{
	atomic_store(&r->stop, 1);
	pthread_join(r->t, NULL);
	close(r->lfd);
}

/* A 4 MB dense push through a client with a 64 KiB frame limit: split
 * into frames, pipelined, and, with the connection cut in the middle,
 * resent after a redial and applied exactly once. Pull and assign split
 * the same way. */
static void test_split_push_exactly_once(void **state)
{
	(void)state;
	const size_t dim = 1 << 20; /* 4 MB */
	dml_ps_opts o = {0};
	o.optim.lr = 1.0f;
	served sv;
	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, dim, &o), 0);
	serve_store(&sv, ps, 2);
	relay rl;
	relay_start(&rl, sv.f.addr, 2 << 20); /* cut after 2 MB */
	dml_rpc_client_opts co = {0};
	co.max_frame = 64 * 1024;
	co.reconnect = 1;
	dml_rpc_client *c = dial_opts(rl.addr, &co);
	dml_ps_remote_opts ro = {0};
	ro.retries = 3;
	ro.retry_timeout = 20000;
	dml_ps *r;
	assert_int_equal(dml_ps_connect(&r, &c, 1, &ro), 0);
	float *g = malloc(dim * sizeof *g), *out = malloc(dim * sizeof *out);
	for (size_t i = 0; i < dim; i++)
		g[i] = (float)(i % 1000) + 1;
	assert_int_equal(dml_ps_push(r, g), 0);
	assert_int_equal(atomic_load(&rl.cuts), 1);
	assert_int_equal(dml_ps_pull(r, out), 0);
	for (size_t i = 0; i < dim; i++)
		if (out[i] != -g[i])
			fail_msg("parameter %zu: %g, not %g", i, (double)out[i], (double)-g[i]);
	uint64_t updates;
	assert_int_equal(dml_ps_updates(ps, &updates), 0);
	assert_int_equal(updates, 1);
	assert_int_equal(dml_ps_assign(r, g), 0);
	assert_int_equal(dml_ps_pull_range(r, 1000, dim - 2000, out), 0);
	for (size_t i = 0; i < dim - 2000; i++)
		assert_true(out[i] == g[1000 + i]);
	free(g);
	free(out);
	dml_ps_free(r);
	dml_rpc_free(c);
	relay_stop(&rl);
	serve_stop(&sv);
}

/* ---- sizes from a peer are claims ----------------------------------- */

/* A fake store that answers with absurd sizes. */
typedef struct fake {
	psw_desc d;
	int info_only;
	size_t pull_n; /* values it answers a pull with */
} fake;

static int fake_describe(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	fake *f = u;
	if (f->info_only)
		return dml_rpc_ctx_errorf(ctx, "no");
	*(psw_desc *)r = f->d;
	return 0;
}

static int fake_info(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	fake *f = u;
	psw_info *i = r;
	i->dim = f->d.dim;
	i->optim = 0;
	i->workers = f->d.workers;
	i->staleness = f->d.staleness;
	i->updates = 0;
	return 0;
}

static float fake_values[64];

static int fake_pull(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)a;
	fake *f = u;
	psw_vec *v = r;
	v->v = (dml_f32s){fake_values, f->pull_n, 0};
	return 0;
}

static dml_rpc_client *fake_client;

static int connect_fake(const char *addr, dml_ps **out)
{
	fake_client = dial_opts(addr, NULL);
	int rc = dml_ps_connect(out, &fake_client, 1, NULL);
	if (rc)
		dml_rpc_free(fake_client);
	return rc;
}

static void test_absurd_sizes_from_peer(void **state)
{
	(void)state;
	fake f = {0};
	fixture fx = {0}, old = {0};
	assert_int_equal(dml_rpc_server_new(&fx.srv, NULL), 0);
	assert_int_equal(dml_rpc_server_register(fx.srv, &psw_m_describe, fake_describe, &f), 0);
	assert_int_equal(dml_rpc_server_register(fx.srv, &psw_m_pull, fake_pull, &f), 0);
	assert_int_equal(dml_rpc_server_register(fx.srv, &psw_m_pull_rows, fake_pull, &f), 0);
	assert_int_equal(dml_rpc_server_listen(fx.srv, "127.0.0.1:0"), 0);
	fixture_start(&fx, 1);
	/* a 0.2 server: PS.Info only */
	assert_int_equal(dml_rpc_server_new(&old.srv, NULL), 0);
	assert_int_equal(dml_rpc_server_register(old.srv, &psw_m_info, fake_info, &f), 0);
	assert_int_equal(dml_rpc_server_listen(old.srv, "127.0.0.1:0"), 0);
	fixture_start(&old, 1);
	dml_ps *r;
	struct { int32_t kind; uint64_t dim, width; int64_t workers, staleness; uint64_t frame; } bad[] = {
		{PSW_KIND_DENSE, ((uint64_t)1 << 62) + 4, 0, 0, 0, 0},
		{PSW_KIND_DENSE, 0, 0, 0, 0, 0},
		{PSW_KIND_DENSE, UINT64_MAX, 0, 0, 0, 0},
		{PSW_KIND_KEYED, 0, 0, 0, 0, 0},
		{PSW_KIND_KEYED, 0, (uint64_t)1 << 40, 0, 0, 0},
		{7, 16, 0, 0, 0, 0},
		{PSW_KIND_DENSE, 16, 0, -5, 0, 0},
		{PSW_KIND_DENSE, 16, 0, 2, (int64_t)1 << 40, 0},
		{PSW_KIND_DENSE, 16, 0, 0, 0, 10},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		f.d = (psw_desc){bad[i].kind, bad[i].dim, bad[i].width, 0, 0, 0,
		                 bad[i].workers, bad[i].staleness, 0, bad[i].frame};
		assert_int_equal(connect_fake(fx.addr, &r), DML_EPROTO);
		assert_non_null(strstr(dml_error_detail(), "shard 0"));
		if (bad[i].kind == PSW_KIND_DENSE && bad[i].frame == 0 &&
		    bad[i].workers >= 0 && bad[i].staleness == 0) {
			assert_int_equal(connect_fake(old.addr, &r), DML_EPROTO);
		}
	}
	/* sane sizes, then replies of the wrong length */
	f.d = (psw_desc){PSW_KIND_DENSE, 16, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(connect_fake(fx.addr, &r), 0);
	float out[16];
	f.pull_n = 64;
	assert_int_equal(dml_ps_pull(r, out), DML_ETOOBIG);
	f.pull_n = 8;
	assert_int_equal(dml_ps_pull(r, out), DML_EPROTO);
	f.pull_n = 16;
	assert_int_equal(dml_ps_pull(r, out), 0);
	dml_ps_free(r);
	dml_rpc_free(fake_client);
	f.d = (psw_desc){PSW_KIND_KEYED, 0, 2, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(connect_fake(fx.addr, &r), 0);
	uint64_t keys[4] = {1, 2, 3, 4};
	f.pull_n = 64;
	assert_int_equal(dml_ps_pull_rows(r, keys, 4, out), DML_ETOOBIG);
	f.pull_n = 7;
	assert_int_equal(dml_ps_pull_rows(r, keys, 4, out), DML_EPROTO);
	f.pull_n = 8;
	assert_int_equal(dml_ps_pull_rows(r, keys, 4, out), 0);
	dml_ps_free(r);
	dml_rpc_free(fake_client);
	fixture_stop(&fx);
	fixture_stop(&old);
}

/* ---- checkpoints ---------------------------------------------------- */

static void tmp_path(char *buf, size_t cap, const char *name)
{
	const char *d = getenv("TMPDIR");
	snprintf(buf, cap, "%s/dml_keyed_%d_%s", d && *d ? d : "/tmp", (int)getpid(),
	         name);
}

/* Only the rows that exist are saved, with their state: a loaded store
 * continues exactly as the saved one; a wrong width or rule is refused
 * with nothing changed. */
static void test_keyed_checkpoint(void **state)
{
	(void)state;
	char path[256];
	tmp_path(path, sizeof path, "kv.ckpt");
	dml_ps_opts o = {0};
	o.optim.kind = DML_OPTIM_ADAM;
	o.row_init = DML_PS_INIT_UNIFORM;
	o.init_seed = 3;
	dml_ps *a = keyed(3, &o), *b = keyed(3, &o);
	uint64_t s = 1, keys[100];
	float g[300], ra[300], rb[300];
	for (int step = 0; step < 20; step++) {
		for (int i = 0; i < 100; i++) {
			keys[i] = splitmix(&s) % 1000 * 0x100000001ULL;
			for (int c = 0; c < 3; c++)
				g[i * 3 + c] = frand(&s);
		}
		assert_int_equal(dml_ps_push_rows(a, keys, 100, g), 0);
	}
	assert_int_equal(dml_ps_save(a, path), 0);
	assert_int_equal(dml_ps_push_rows(b, keys, 1, g), 0); /* replaced by the load */
	assert_int_equal(dml_ps_load(b, path), 0);
	uint64_t na, nb;
	assert_int_equal(dml_ps_rows(a, &na), 0);
	assert_int_equal(dml_ps_rows(b, &nb), 0);
	assert_int_equal(na, nb);
	assert_true(na < 1000);
	for (int i = 0; i < 100; i++)
		keys[i] = (uint64_t)i * 10 * 0x100000001ULL;
	assert_int_equal(dml_ps_push_rows(a, keys, 100, g), 0);
	assert_int_equal(dml_ps_push_rows(b, keys, 100, g), 0);
	assert_int_equal(dml_ps_pull_rows(a, keys, 100, ra), 0);
	assert_int_equal(dml_ps_pull_rows(b, keys, 100, rb), 0);
	assert_memory_equal(ra, rb, sizeof ra);
	dml_ps *w = keyed(2, &o);
	assert_int_equal(dml_ps_load(w, path), DML_EDIM);
	o.optim.kind = DML_OPTIM_SGD;
	dml_ps *sg = keyed(3, &o), *dense;
	assert_int_equal(dml_ps_load(sg, path), DML_ETYPE);
	assert_int_equal(dml_ps_new(&dense, 3, NULL), 0);
	assert_int_equal(dml_ps_load(dense, path), DML_EFORMAT);
	assert_int_equal(dml_ps_rows(sg, &na), 0);
	assert_int_equal(na, 0);
	/* a corrupted byte: refused, nothing changed */
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, 200, SEEK_SET);
	int ch = fgetc(f);
	fseek(f, 200, SEEK_SET);
	fputc(ch ^ 0x40, f);
	fclose(f);
	int rc = dml_ps_load(b, path);
	assert_true(rc == DML_ECORRUPT || rc == DML_EFORMAT);
	assert_int_equal(dml_ps_pull_rows(b, keys, 100, rb), 0);
	assert_memory_equal(ra, rb, sizeof ra);
	unlink(path);
	dml_ps_free(a);
	dml_ps_free(b);
	dml_ps_free(w);
	dml_ps_free(sg);
	dml_ps_free(dense);
}

/* A child saving a keyed store over and over is killed with SIGKILL in
 * the middle of a save; what is left at the path loads, and holds one of
 * the two states whole. */
static void test_keyed_save_killed(void **state)
{
	(void)state;
	TEST_PLAIN_ONLY();
	char path[256];
	tmp_path(path, sizeof path, "kill.ckpt");
	enum { N = 300000 }; /* a save takes a while */
	dml_ps *ps = keyed(4, NULL);
	uint64_t *keys = malloc(N * sizeof *keys);
	float *v = malloc(N * 4 * sizeof *v);
	for (int i = 0; i < N; i++)
		keys[i] = (uint64_t)i * 0x9e3779b97f4a7c15ULL;
	for (int i = 0; i < N * 4; i++)
		v[i] = 1;
	assert_int_equal(dml_ps_assign_rows(ps, keys, N, v), 0); /* state A: ones */
	assert_int_equal(dml_ps_save(ps, path), 0);
	for (int round = 0; round < 3; round++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			dml_ps_update_rows(ps, keys, N, v); /* state B: twos */
			for (int i = 0; i < 1000; i++) {
				if (write(p[1], "x", 1) != 1)
					_exit(1);
				dml_ps_save(ps, path);
			}
			_exit(0);
		}
		close(p[1]);
		char ch;
		for (int k = 0; k <= round; k++)
			assert_int_equal(read(p[0], &ch, 1), 1);
		volatile unsigned long spin = 0; /* part way into the save */
		for (unsigned long i = 0; i < 3000000ul * (unsigned long)round; i++)
			spin = spin + i;
		(void)spin;
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		close(p[0]);
		dml_ps *back = keyed(4, NULL);
		assert_int_equal(dml_ps_load(back, path), 0);
		uint64_t rows;
		assert_int_equal(dml_ps_rows(back, &rows), 0);
		assert_int_equal(rows, N);
		float first[4], last[4];
		dml_ps_pull_rows(back, keys, 1, first);
		dml_ps_pull_rows(back, keys + N - 1, 1, last);
		assert_true(first[0] == last[3] && (first[0] == 1 || first[0] == 2));
		dml_ps_free(back);
	}
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -f %s*", path);
	assert_int_equal(system(cmd), 0);
	free(keys);
	free(v);
	dml_ps_free(ps);
}

/* The exactly-once table is in the checkpoint: a push applied before a
 * save and retried (same client id and number) after a restart from it
 * is not applied twice, for both kinds. */
static void test_checkpoint_keeps_exactly_once(void **state)
{
	(void)state;
	char path[256];
	tmp_path(path, sizeof path, "dd.ckpt");
	for (int kind = 0; kind < 2; kind++) {
		dml_ps_opts o = {0};
		o.optim.lr = 1.0f;
		dml_ps *ps;
		if (kind)
			ps = keyed(1, &o);
		else
			assert_int_equal(dml_ps_new(&ps, 4, &o), 0);
		served sv;
		serve_store(&sv, ps, 1);
		dml_rpc_client *c = dial_opts(sv.f.addr, NULL);
		float v[4] = {1, 2, 3, 4};
		int64_t keys[4] = {0, 1, 2, 3};
		psw_push dp = {4242, 1, PSW_OP_PUSH, {v, 4, 0}};
		psw_rpush kp = {4242, 1, PSW_OP_PUSH, 1, {keys, 4, 0}, {v, 4, 0}};
		psw_status st = {0};
		st.msg = (dml_str){st.buf, 0, sizeof st.buf};
		if (kind)
			assert_int_equal(dml_rpc_call(c, &psw_m_push_rows, &kp, &st, 5000), 0);
		else
			assert_int_equal(dml_rpc_call(c, &psw_m_push, &dp, NULL, 5000), 0);
		assert_int_equal(dml_ps_save(ps, path), 0);
		dml_rpc_free(c);
		serve_stop(&sv);
		/* the restart */
		if (kind)
			ps = keyed(1, &o);
		else
			assert_int_equal(dml_ps_new(&ps, 4, &o), 0);
		assert_int_equal(dml_ps_load(ps, path), 0);
		serve_store(&sv, ps, 1);
		c = dial_opts(sv.f.addr, NULL);
		if (kind)
			assert_int_equal(dml_rpc_call(c, &psw_m_push_rows, &kp, &st, 5000), 0);
		else
			assert_int_equal(dml_rpc_call(c, &psw_m_push, &dp, NULL, 5000), 0);
		float out[4];
		uint64_t k64[4] = {0, 1, 2, 3};
		if (kind)
			assert_int_equal(dml_ps_pull_rows(ps, k64, 4, out), 0);
		else
			assert_int_equal(dml_ps_pull(ps, out), 0);
		for (int i = 0; i < 4; i++)
			assert_true(out[i] == -v[i]); /* once, not twice */
		dml_rpc_free(c);
		serve_stop(&sv);
	}
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keyed_equals_dense),
		cmocka_unit_test(test_keys_and_absent_rows),
		cmocka_unit_test(test_seeded_init),
		cmocka_unit_test(test_max_rows),
		cmocka_unit_test(test_nonfinite_refused_local),
		cmocka_unit_test(test_remote_and_sharded_keyed),
		cmocka_unit_test(test_remote_refusals),
		cmocka_unit_test(test_remote_nonfinite_dense),
		cmocka_unit_test(test_split_push_exactly_once),
		cmocka_unit_test(test_absurd_sizes_from_peer),
		cmocka_unit_test(test_keyed_checkpoint),
		cmocka_unit_test(test_keyed_save_killed),
		cmocka_unit_test(test_checkpoint_keeps_exactly_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

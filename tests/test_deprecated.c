/* test_deprecated.c - every name deprecated in 0.2 (docs/api.md) still
 * works, with its old signature, for one release: each is called here and
 * does what its replacement does. scripts/check-api.sh checks that every
 * DML_DEPRECATED declaration in the headers is called in this file. */
#define DML_NO_DEPRECATION_WARNINGS
#include "testutil.h"

#include <dirent.h>
#include <unistd.h>

/* ---- codec -------------------------------------------------------- */

typedef struct { int64_t A, B; } Args;
typedef struct { int64_t C; } Reply;
static const dml_field args_f[] = {DML_FIELD(Args, A, DML_I64), DML_FIELD(Args, B, DML_I64)};
static const dml_field reply_f[] = {DML_FIELD(Reply, C, DML_I64)};
static const dml_type args_t = DML_TYPE(Args, args_f);
static const dml_type reply_t = DML_TYPE(Reply, reply_f);
static const dml_rpc_method m_mul = {"Old.Multiply", &args_t, &reply_t};
static const dml_rpc_method m_fail = {"Old.Fail", NULL, NULL};
static const dml_rpc_method m_later = {"Old.Later", &args_t, &reply_t};

static void test_codec(void **state)
{
	(void)state;
	_Alignas(8) uint8_t buf[64];
	size_t len;
	Args a = {7, -8}, b = {0, 0};
	assert_int_equal(dml_encode(&args_t, &a, buf, sizeof buf, &len), 0);
	assert_int_equal(len, 18);
	assert_int_equal(dml_decode(&args_t, &b, buf, len), 0); /* message, then buffer */
	assert_true(b.A == 7 && b.B == -8);
}

/* ---- RPC ---------------------------------------------------------- */

static int h_mul(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)ctx;
	(void)u;
	((Reply *)r)->C = ((const Args *)a)->A * ((const Args *)a)->B;
	return 0;
}

static int h_fail(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)a;
	(void)r;
	(void)u;
	return dml_rpc_errorf(ctx, "old %s", "failure");
}

static int h_later(dml_rpc_ctx *ctx, const void *a, void *r, void *u)
{
	(void)r;
	(void)u;
	dml_rpc_deferred *d;
	int rc = dml_rpc_defer(ctx, &d); /* ctx, then out */
	if (rc)
		return rc;
	Reply rep = {((const Args *)a)->A + ((const Args *)a)->B};
	return dml_rpc_deferred_reply(d, 0, &rep, NULL);
}

static void test_rpc(void **state)
{
	(void)state;
	fixture f;
	memset(&f, 0, sizeof f);
	assert_int_equal(dml_rpc_server_new(&f.srv, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_mul, h_mul, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_fail, h_fail, NULL), 0);
	assert_int_equal(dml_rpc_server_register(f.srv, &m_later, h_later, NULL), 0);
	assert_int_equal(dml_rpc_server_listen(f.srv, "127.0.0.1:0"), 0);
	fixture_start(&f, 1);
	dml_rpc_client *c;
	assert_int_equal(dml_rpc_dial(&c, f.addr, NULL), 0);

	dml_rpc_pending *p;
	Args a = {6, 7};
	Reply r = {0};
	assert_int_equal(dml_rpc_go(c, &m_mul, &a, &r, 10000, &p), 0); /* out last */
	assert_int_equal(dml_rpc_wait(p), 0);
	assert_int_equal(r.C, 42);
	dml_rpc_pending_free(p);
	assert_int_equal(dml_rpc_call(c, &m_later, &a, &r, 10000), 0);
	assert_int_equal(r.C, 13);

	char msg[DML_RPC_ERRMSG_MAX];
	assert_int_equal(dml_rpc_call(c, &m_fail, NULL, NULL, 10000), DML_EHANDLER);
	dml_rpc_client_errmsg(c, msg, sizeof msg);
	assert_string_equal(msg, "old failure");
	assert_string_equal(dml_error_detail(), "old failure");

	dml_rpc_client_close(c);
	assert_int_equal(dml_rpc_call(c, &m_mul, &a, &r, 10000), DML_ECLOSED);
	dml_rpc_client_free(c);
	fixture_stop(&f);
}

/* ---- parameter store ---------------------------------------------- */

static void test_ps(void **state)
{
	(void)state;
	size_t off, len;
	assert_int_equal(dml_ps_shard_range(10, 3, 1, &off, &len), 0); /* n, then i */
	assert_true(off == 4 && len == 3);
	assert_int_equal(dml_ps_shard_range(2, 3, 0, &off, &len), DML_EINVAL); /* its old rule */

	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, 4, &(dml_ps_opts){.workers = 1}), 0);
	dml_ps_clock_info ci = {0};
	assert_int_equal(dml_ps_clock(ps, 0, DML_DEFAULT, &ci), 0); /* timeout, then info */
	assert_true(ci.clock == 1 && ci.min == 1 && !ci.waited);
	dml_ps_free(ps);

	dml_optim *opt;
	dml_optim_opts oo = {.lr = 0.5f};
	assert_int_equal(dml_optim_new(&opt, &oo, 3), 0); /* options, then dim */
	float w[3] = {1, 1, 1}, g[3] = {2, 2, 2};
	dml_optim_step(opt, w, g);
	assert_true(w[0] == 0.0f);
	dml_optim_free(opt);
}

/* ---- data ------------------------------------------------------------- */

static char tmpdir[64];

static const char *write_file(const char *name, const void *p, size_t n)
{
	static char path[128];
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, n, fp), n);
	fclose(fp);
	return path;
}

static void test_data(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/dml_test_old.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));

	/* IDX: 2 images of 2 x 2 pixels, 2 labels */
	static const uint8_t img[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2,
	                              0, 255, 0, 255, 255, 0, 255, 0};
	static const uint8_t lab[] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 0};
	char ip[128], lp[128];
	snprintf(ip, sizeof ip, "%s", write_file("img.idx", img, sizeof img));
	snprintf(lp, sizeof lp, "%s", write_file("lab.idx", lab, sizeof lab));
	char err[128];
	dml_dataset *ds, *part;
	assert_int_equal(dml_dataset_load_idx(&ds, ip, lp, NULL, err, sizeof err), 0);
	assert_string_equal(err, "");
	assert_int_equal(dml_dataset_rows(ds), 2);
	assert_int_equal(dml_dataset_shard(ds, 1, 2, &part), 0); /* out last */
	assert_int_equal(dml_dataset_rows(part), 1);
	assert_true(dml_dataset_labels(part)[0] == 0.0f);
	dml_dataset_free(part);
	assert_int_equal(dml_dataset_slice(ds, 0, 1, &part), 0);
	assert_true(dml_dataset_labels(part)[0] == 1.0f);
	dml_dataset_free(part);
	dml_scaler *sc;
	assert_int_equal(dml_scaler_fit(ds, DML_SCALE_MAXABS, &sc), 0);
	dml_scaler_free(sc);
	dml_dataset_free(ds);

	/* LIBSVM, and the old message buffer on a failure */
	static const char good[] = "1 1:0.5 3:2\n0 2:1\n";
	static const char bad[] = "1 1:0.5\n1 0:2\n";
	const char *gp = write_file("good.svm", good, sizeof good - 1);
	assert_int_equal(dml_dataset_load_libsvm(&ds, gp, NULL, err, sizeof err), 0);
	assert_int_equal(dml_dataset_dim(ds), 3);
	dml_dataset_free(ds);
	const char *bp = write_file("bad.svm", bad, sizeof bad - 1);
	assert_int_equal(dml_dataset_load_libsvm(&ds, bp, NULL, err, sizeof err),
	                 DML_EFORMAT);
	assert_non_null(strstr(err, "bad.svm:2:"));
	assert_string_equal(err, dml_error_detail());
	assert_int_equal(dml_dataset_load_libsvm(&ds, bp, NULL, NULL, 0), DML_EFORMAT);

	DIR *d = opendir(tmpdir);
	struct dirent *de;
	char path[320];
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			snprintf(path, sizeof path, "%s/%s", tmpdir, de->d_name);
			unlink(path);
		}
	closedir(d);
	rmdir(tmpdir);
}

/* ---- models and training -------------------------------------------- */

static void test_models(void **state)
{
	(void)state;
	dml_model m;
	assert_int_equal(dml_model_linreg(&m, 3, 0), 0);
	assert_int_equal(m.dim, 4);
	dml_model_free(&m);
	assert_int_equal(m.dim, 0); /* the old free zeroed all of it */
	assert_null(m.loss_grad);
	assert_int_equal(dml_model_logreg(&m, 3, 0), 0);
	assert_int_equal(m.classes, 2);
	dml_model_free(&m);
	assert_int_equal(dml_model_svm(&m, 3, 0), 0);
	assert_int_equal(m.task, DML_TASK_CLASSIFICATION);
	dml_model_free(&m);
	assert_int_equal(dml_model_softmax(&m, 2, 3, 0), 0);
	assert_int_equal(m.dim, 9);
	dml_model_free(&m);
}

static void test_training(void **state)
{
	(void)state;
	/* y = 1 exactly when x > 0 */
	float x[8] = {-2, -1, -0.5f, -0.25f, 0.25f, 0.5f, 1, 2};
	float y[8] = {0, 0, 0, 0, 1, 1, 1, 1};
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_dense(&ds, 8, 1, x, y), 0);
	dml_model m;
	assert_int_equal(dml_model_init_logreg(&m, 1, 0), 0);
	float w[2] = {0, 0};
	dml_sgd_opts so = {.epochs = 20, .batch = 4, .optim = {.lr = 0.5f}};
	dml_train_stats st;
	assert_int_equal(dml_sgd_train(&m, ds, w, &so, &st), 0); /* options, then stats */
	assert_int_equal(st.epochs, 20);
	assert_true(w[0] > 0);

	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, 2, NULL), 0);
	dml_dsgd_opts dopt = {.epochs = 2, .batch = 4};
	assert_int_equal(dml_dsgd_worker(ps, &m, ds, &dopt, &st), 0);
	assert_int_equal(st.steps, 4);
	dml_ps_free(ps);
	dml_model_destroy(&m);
	dml_dataset_free(ds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec),
		cmocka_unit_test(test_rpc),
		cmocka_unit_test(test_ps),
		cmocka_unit_test(test_data),
		cmocka_unit_test(test_models),
		cmocka_unit_test(test_training),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

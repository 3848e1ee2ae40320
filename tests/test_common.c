/* test_common.c - error names and version. */
#include "testutil.h"

#include <math.h>

static void test_strerror_distinct(void **state)
{
	(void)state;
	const char *seen[64] = {0};
	for (int e = DML_EPERM; e <= 0; e++) {
		const char *s = dml_strerror(e);
		assert_non_null(s);
		assert_string_not_equal(s, "unknown error");
		for (int k = DML_EPERM; k < e; k++)
			assert_string_not_equal(seen[-k], s);
		seen[-e] = s;
	}
	assert_string_equal(dml_strerror(-9999), "unknown error");
	assert_string_equal(dml_strerror(1), "unknown error");
}

static void test_version(void **state)
{
	(void)state;
	char want[32];
	snprintf(want, sizeof want, "%d.%d.%d", DML_VERSION_MAJOR, DML_VERSION_MINOR,
	         DML_VERSION_PATCH);
	assert_string_equal(dml_version(), want);
	assert_int_equal(dml_version_number(), DML_VERSION_NUMBER);
}

/* The error detail is the calling thread's: set by a failed call, cleared
 * by the next call that returns a code, untouched by other threads. */
static void *fail_in_thread(void *arg)
{
	(void)arg;
	dml_rpc_server *s;
	int rc = dml_rpc_server_new(&s, &(dml_rpc_server_opts){.max_frame = 3});
	static char seen[DML_ERRMSG_MAX];
	snprintf(seen, sizeof seen, "%d %s", rc, dml_error_detail());
	return seen;
}

static void test_error_detail(void **state)
{
	(void)state;
	dml_rpc_server *s;
	assert_int_equal(dml_rpc_server_new(&s, &(dml_rpc_server_opts){.spin_us = -1}),
	                 DML_EINVAL);
	assert_non_null(strstr(dml_error_detail(), "spin_us"));
	pthread_t t;
	void *other;
	assert_int_equal(pthread_create(&t, NULL, fail_in_thread, NULL), 0);
	assert_int_equal(pthread_join(t, &other), 0);
	assert_non_null(strstr(other, "-1 max_frame 3"));
	assert_non_null(strstr(dml_error_detail(), "spin_us")); /* ours is kept */
	assert_int_equal(dml_rpc_server_new(&s, NULL), 0); /* a success clears it */
	assert_string_equal(dml_error_detail(), "");
	dml_rpc_server_free(s);
	/* a failure with nothing to add leaves "" rather than an old message */
	assert_int_equal(dml_rpc_server_new(&s, &(dml_rpc_server_opts){.spin_us = -1}),
	                 DML_EINVAL);
	assert_int_equal(dml_ps_pull(NULL, NULL), DML_EINVAL);
	assert_string_equal(dml_error_detail(), "");
}

/* A caller built against a layout level the library does not know is
 * refused, whatever it passes. */
static void test_abi_level(void **state)
{
	(void)state;
	dml_rpc_client *c = NULL;
	assert_int_equal(dml_rpc_dial_abi(&c, "127.0.0.1:1", NULL, DML_ABI + 1), DML_EVERSION);
	assert_non_null(strstr(dml_error_detail(), "layout level"));
	assert_null(c);
	assert_int_equal(dml_rpc_dial_abi(&c, "127.0.0.1:1", NULL, 0), DML_EVERSION);
	dml_ps *ps = NULL;
	assert_int_equal(dml_ps_new_abi(&ps, 4, NULL, DML_ABI + 1), DML_EVERSION);
	assert_int_equal(dml_optim_check_abi(NULL, -3), DML_EVERSION);
	assert_true(isnan(dml_schedule_lr_abi(NULL, 0, DML_ABI + 1)));
	dml_model m;
	assert_int_equal(dml_model_init_linreg_abi(&m, 4, 0, DML_ABI + 1), DML_EVERSION);
}

/* Durations in options: 0 = default, DML_INFINITE = no limit, positive;
 * DML_DEFAULT and other negatives are refused by every struct. */
static void test_option_durations(void **state)
{
	(void)state;
	const dml_duration bad[] = {DML_DEFAULT, -3, INT64_MIN};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		dml_rpc_server *s;
		dml_rpc_client *c;
		dml_ps *ps;
		dml_duration d = bad[i];
		assert_int_equal(dml_rpc_server_new(&s, &(dml_rpc_server_opts){.frame_timeout = d}), DML_EINVAL);
		assert_int_equal(dml_rpc_server_new(&s, &(dml_rpc_server_opts){.write_timeout = d}), DML_EINVAL);
		assert_int_equal(dml_rpc_server_new(&s, &(dml_rpc_server_opts){.idle_timeout = d}), DML_EINVAL);
		assert_int_equal(dml_rpc_dial(&c, "127.0.0.1:1", &(dml_rpc_client_opts){.dial_timeout = d}), DML_EINVAL);
		assert_int_equal(dml_rpc_dial(&c, "127.0.0.1:1", &(dml_rpc_client_opts){.call_timeout = d}), DML_EINVAL);
		assert_int_equal(dml_ps_new(&ps, 4, &(dml_ps_opts){.worker_timeout = d}), DML_EINVAL);
		assert_int_equal(dml_ps_new(&ps, 4, &(dml_ps_opts){.clock_timeout = d}), DML_EINVAL);
		assert_non_null(strstr(dml_error_detail(), "DML_INFINITE"));
	}
	dml_rpc_server *s;
	assert_int_equal(dml_rpc_server_new(&s, &(dml_rpc_server_opts){.frame_timeout = DML_INFINITE,
	                 .write_timeout = DML_INFINITE, .idle_timeout = DML_INFINITE}), 0);
	/* a server has no default wait; a call's other negatives are refused */
	assert_int_equal(dml_rpc_server_poll(s, DML_DEFAULT), DML_EINVAL);
	assert_int_equal(dml_rpc_server_poll(s, -9), DML_EINVAL);
	assert_int_equal(dml_rpc_server_poll(s, 0), 0);
	dml_rpc_server_free(s);
	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, 4, &(dml_ps_opts){.workers = 1,
	                 .worker_timeout = DML_INFINITE, .clock_timeout = DML_INFINITE}), 0);
	assert_int_equal(dml_ps_advance(ps, 0, NULL, -9), DML_EINVAL);
	assert_int_equal(dml_ps_advance(ps, 0, NULL, DML_DEFAULT), 0);
	dml_ps_free(ps);
	/* the defaults are public, and what 0 means */
	assert_true(DML_RPC_DEFAULT_DIAL_TIMEOUT == 10000 && DML_RPC_DEFAULT_CALL_TIMEOUT == 60000);
	assert_true(DML_PS_DEFAULT_TIMEOUT == 30000 && DML_PS_DEFAULT_CLOCK_TIMEOUT == DML_INFINITE);
}

/* An output struct is written only as far as the caller's layout goes. */
static void test_outputs_bounded(void **state)
{
	(void)state;
	struct {
		dml_ps_clock_info info;
		unsigned char canary[64];
	} out;
	memset(&out, 0xA5, sizeof out);
	dml_ps *ps;
	assert_int_equal(dml_ps_new(&ps, 2, &(dml_ps_opts){.workers = 1}), 0);
	assert_int_equal(dml_ps_advance(ps, 0, &out.info, DML_INFINITE), 0);
	assert_int_equal(out.info.clock, 1);
	for (size_t i = 0; i < sizeof out.canary; i++)
		assert_int_equal(out.canary[i], 0xA5);
	dml_ps_free(ps);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strerror_distinct),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_error_detail),
		cmocka_unit_test(test_abi_level),
		cmocka_unit_test(test_option_durations),
		cmocka_unit_test(test_outputs_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

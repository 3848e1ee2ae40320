/* test_common.c - error names and version. */
#include "testutil.h"

static void test_strerror_distinct(void **state)
{
	(void)state;
	const char *seen[64] = {0};
	for (int e = DML_EDIM; e <= 0; e++) {
		const char *s = dml_strerror(e);
		assert_non_null(s);
		assert_string_not_equal(s, "unknown error");
		for (int k = DML_EDIM; k < e; k++)
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strerror_distinct),
		cmocka_unit_test(test_version),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

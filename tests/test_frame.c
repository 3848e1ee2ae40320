/* test_frame.c - the frame header parser (a pure function). */
#include "testutil.h"

#include "frame.h"

static void test_roundtrip(void **state)
{
	(void)state;
	uint8_t h[DML__FRAME_HDR];
	assert_int_equal(dml__frame_header(h, DML__KIND_REQUEST, 77, 0, 14, 100), 0);
	dml__frame f;
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), 0);
	assert_int_equal(f.kind, DML__KIND_REQUEST);
	assert_int_equal(f.seq, 77);
	assert_int_equal(f.name_len, 14);
	assert_int_equal(f.payload_len, 100);
	assert_int_equal(f.total, DML__FRAME_HDR + 14 + 100);
	for (size_t n = 0; n < DML__FRAME_HDR; n++)
		assert_int_equal(dml__frame_parse(h, n, 1 << 20, &f), DML_EAGAIN);
}

static void test_limits(void **state)
{
	(void)state;
	uint8_t h[DML__FRAME_HDR];
	dml__frame f;
	dml__frame_header(h, DML__KIND_REPLY, 1, 0, 0, 1000);
	assert_int_equal(dml__frame_parse(h, sizeof h, 1020, &f), 0);
	assert_int_equal(dml__frame_parse(h, sizeof h, 1019, &f), DML_ETOOBIG);
	assert_int_equal(f.total, 1020); /* filled, so the frame can be skipped */
	assert_int_equal(dml__frame_header(h, DML__KIND_REPLY, 1, 0, 70000, 0), DML_ETOOBIG);
	assert_int_equal(dml__frame_header(h, DML__KIND_REPLY, 1, 0, 0, (size_t)UINT32_MAX), DML_ETOOBIG);
}

static void test_malformed(void **state)
{
	(void)state;
	uint8_t h[DML__FRAME_HDR];
	dml__frame f;
	dml__frame_header(h, DML__KIND_REQUEST, 77, 0, 5, 0);
	h[4] = 2; /* another version: refused as such, its seq read for the reply */
	f.seq = 0;
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), DML_EVERSION);
	assert_int_equal(f.seq, 77);
	dml__frame_header(h, DML__KIND_REQUEST, 1, 0, 5, 0);
	h[5] = 9; /* kind */
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), DML_EPROTO);
	dml__frame_header(h, DML__KIND_REQUEST, 1, 0, 5, 0);
	h[0] = 3; /* length shorter than the header */
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), DML_EPROTO);
	dml__frame_header(h, DML__KIND_REQUEST, 1, 0, 5, 0);
	h[6] = 6; /* name longer than the frame */
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), DML_EPROTO);
	dml__frame_header(h, DML__KIND_REQUEST, 1, 0, 0, 4); /* no method name */
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), DML_EPROTO);
	dml__frame_header(h, DML__KIND_REQUEST, 1, 3, 4, 0); /* request with status */
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), DML_EPROTO);
	dml__frame_header(h, DML__KIND_REPLY, 1, 99, 0, 0); /* a newer peer's status */
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), 0);
	assert_int_equal(f.status, 99);
	dml__frame_header(h, DML__KIND_REPLY, 1, 0, 4, 10); /* OK reply with a name */
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), DML_EPROTO);
	dml__frame_header(h, DML__KIND_REPLY, 1, 2, 4, 0); /* error with a message */
	assert_int_equal(dml__frame_parse(h, sizeof h, 1 << 20, &f), 0);
	/* random headers never crash and never report more than they say */
	srand(1);
	for (int i = 0; i < 100000; i++) {
		for (size_t k = 0; k < sizeof h; k++)
			h[k] = (uint8_t)rand();
		if (i & 1)
			h[4] = 1;
		int rc = dml__frame_parse(h, sizeof h, 1 << 20, &f);
		if (rc == 0)
			assert_true(f.total >= (size_t)DML__FRAME_HDR + f.name_len && f.total <= ((size_t)1 << 20));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

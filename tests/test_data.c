/* test_data.c - data sets: IDX and LIBSVM loaders on small files written
 * here (good and malformed, plain and gzip), batch views, shuffling,
 * sharding, label mapping and feature scaling. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <math.h> /* NAN, INFINITY (no libm needed) */
#include <unistd.h>
#include <zlib.h>

/* ---- temporary files -------------------------------------------------- */

static char tmpdir[256];
static char pathbuf[512];

static int make_tmpdir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/dml_test_data.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
	(void)state;
	DIR *d = opendir(tmpdir);
	if (!d)
		return -1;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(pathbuf, sizeof pathbuf, "%s/%s", tmpdir, de->d_name);
		unlink(pathbuf);
	}
	closedir(d);
	return rmdir(tmpdir);
}

/* The path of `name` in the temporary directory (static buffer). */
static const char *tpath(const char *name)
{
	snprintf(pathbuf, sizeof pathbuf, "%s/%s", tmpdir, name);
	return pathbuf;
}

/* Writes `len` bytes to `name`, gzip-compressed if `gz`; returns the path
 * in a static buffer that the fourth call after this one reuses. */
static const char *put_file(const char *name, const void *data, size_t len,
                            int gz)
{
	static char slots[4][512];
	static int next;
	char *p = slots[next++ % 4];
	snprintf(p, 512, "%s/%s", tmpdir, name);
	if (gz) {
		gzFile f = gzopen(p, "wb");
		assert_non_null(f);
		if (len)
			assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
		assert_int_equal(gzclose(f), Z_OK);
	} else {
		FILE *f = fopen(p, "wb");
		assert_non_null(f);
		if (len)
			assert_int_equal(fwrite(data, 1, len, f), len);
		assert_int_equal(fclose(f), 0);
	}
	return p;
}

static const char *put_text(const char *name, const char *text, int gz)
{
	return put_file(name, text, strlen(text), gz);
}

/* Reads a whole (small) file into buf; returns its length. */
static size_t get_file(const char *path, uint8_t *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	size_t n = fread(buf, 1, cap, f);
	fclose(f);
	return n;
}

/* Asserts that a message names the file and contains `what`. */
static void assert_err(const char *msg, const char *file, const char *what)
{
	if (!strstr(msg, file) || !strstr(msg, what))
		fail_msg("message \"%s\" lacks \"%s\" or \"%s\"", msg, file, what);
}

/* ---- IDX -------------------------------------------------------------- */

/* Appends an IDX header to b at *len. */
static void idx_header(uint8_t *b, size_t *len, int type, int ndims,
                       const uint32_t *dims)
{
	b[(*len)++] = 0;
	b[(*len)++] = 0;
	b[(*len)++] = (uint8_t)type;
	b[(*len)++] = (uint8_t)ndims;
	for (int d = 0; d < ndims; d++) {
		b[(*len)++] = (uint8_t)(dims[d] >> 24);
		b[(*len)++] = (uint8_t)(dims[d] >> 16);
		b[(*len)++] = (uint8_t)(dims[d] >> 8);
		b[(*len)++] = (uint8_t)dims[d];
	}
}

/* 3 images of 2x2 pixels, 3 labels. */
static size_t make_images(uint8_t *b)
{
	static const uint32_t dims[3] = {3, 2, 2};
	size_t len = 0;
	idx_header(b, &len, 0x08, 3, dims);
	for (int i = 0; i < 12; i++)
		b[len++] = (uint8_t)(i * 20);
	b[len - 1] = 255;
	return len;
}

static size_t make_labels(uint8_t *b, uint32_t n, const uint8_t *labels)
{
	size_t len = 0;
	idx_header(b, &len, 0x08, 1, &n);
	memcpy(b + len, labels, n);
	return len + n;
}

static void test_idx_u8(void **state)
{
	(void)state;
	uint8_t img[64], lab[64];
	static const uint8_t labels[3] = {2, 0, 7};
	size_t ni = make_images(img), nl = make_labels(lab, 3, labels);
	for (int gz = 0; gz < 2; gz++) {
		const char *ip = put_file(gz ? "img.idx.gz" : "img.idx", img, ni, gz);
		const char *lp = put_file(gz ? "lab.idx.gz" : "lab.idx", lab, nl, gz);
		dml_dataset *ds = NULL;
		assert_int_equal(dml_dataset_new_idx(&ds, ip, lp, NULL), 0);
		assert_string_equal(dml_error_detail(), "");
		assert_int_equal(dml_dataset_rows(ds), 3);
		assert_int_equal(dml_dataset_dim(ds), 4);
		assert_false(dml_dataset_is_sparse(ds));
		assert_int_equal(dml_dataset_classes(ds), 8); /* largest label + 1 */
		dml_batch b;
		assert_int_equal(dml_dataset_batch(ds, 0, 100, &b), 0);
		assert_int_equal(b.n, 3);
		assert_null(b.indptr);
		for (int i = 0; i < 11; i++)
			assert_true(b.x[i] == (float)(i * 20) / 255.0f);
		assert_true(b.x[11] == 1.0f);
		for (int i = 0; i < 3; i++)
			assert_true(b.y[i] == labels[i]);
		dml_dataset_free(ds);

		/* raw pixels, declared classes, no labels */
		dml_data_opts o = {0};
		o.raw_pixels = 1;
		o.classes = 10;
		assert_int_equal(dml_dataset_new_idx(&ds, ip, lp, &o), 0);
		assert_int_equal(dml_dataset_classes(ds), 10);
		assert_int_equal(dml_dataset_batch(ds, 1, 1, &b), 0);
		assert_true(b.x[0] == 80.0f && b.x[3] == 140.0f && b.y[0] == 0.0f);
		dml_dataset_free(ds);
		assert_int_equal(dml_dataset_new_idx(&ds, ip, NULL, NULL), 0);
		assert_int_equal(dml_dataset_classes(ds), 0);
		assert_true(dml_dataset_labels(ds)[2] == 0.0f);
		dml_dataset_free(ds);
		/* remap_labels without labels: still no classes */
		dml_data_opts rm = {0};
		rm.remap_labels = 1;
		assert_int_equal(dml_dataset_new_idx(&ds, ip, NULL, &rm), 0);
		assert_int_equal(dml_dataset_classes(ds), 0);
		assert_null(dml_dataset_class_values(ds));
		dml_dataset_free(ds);
	}
}

static void put_f32_be(uint8_t *p, float v)
{
	uint32_t u;
	memcpy(&u, &v, 4);
	p[0] = (uint8_t)(u >> 24);
	p[1] = (uint8_t)(u >> 16);
	p[2] = (uint8_t)(u >> 8);
	p[3] = (uint8_t)u;
}

static void test_idx_f32(void **state)
{
	(void)state;
	static const uint32_t dims[2] = {2, 3};
	static const float v[6] = {-1.5f, 0.0f, 3.25f, 1e-3f, 7.0f, -1e20f};
	uint8_t img[64], lab[32];
	size_t len = 0;
	idx_header(img, &len, 0x0D, 2, dims);
	for (int i = 0; i < 6; i++, len += 4)
		put_f32_be(img + len, v[i]);
	static const uint8_t labels[2] = {1, 1};
	size_t nl = make_labels(lab, 2, labels);
	const char *ip = put_file("f32.idx.gz", img, len, 1);
	const char *lp = put_file("f32lab.idx", lab, nl, 0);
	dml_dataset *ds = NULL;
	assert_int_equal(dml_dataset_new_idx(&ds, ip, lp, NULL), 0);
	assert_int_equal(dml_dataset_rows(ds), 2);
	assert_int_equal(dml_dataset_dim(ds), 3);
	dml_batch b;
	assert_int_equal(dml_dataset_batch(ds, 0, 2, &b), 0);
	assert_memory_equal(b.x, v, sizeof v); /* never scaled */
	dml_dataset_free(ds);

	/* a NaN at value 4: offset 12 + 4*4 */
	put_f32_be(img + 12 + 16, NAN);
	ip = put_file("nan.idx", img, len, 0);
	ds = NULL;
	assert_int_equal(dml_dataset_new_idx(&ds, ip, lp, NULL),
	                 DML_EFORMAT);
	assert_null(ds);
	assert_err(dml_error_detail(), "nan.idx", "offset 28");
}

/* Loads images (and the 3 good labels) expecting `rc` and a message with
 * `file` and `what`. */
static void expect_idx(const char *ip, const char *lp, const dml_data_opts *o,
                       int rc, const char *file, const char *what)
{
	dml_dataset *ds = NULL;
	int got = dml_dataset_new_idx(&ds, ip, lp, o);
	if (got != rc)
		fail_msg("%s: got %d (%s), want %d", ip, got, dml_error_detail(), rc);
	assert_null(ds);
	assert_err(dml_error_detail(), file, what);
}

static void test_idx_malformed(void **state)
{
	(void)state;
	uint8_t good[64], lab[64], b[128];
	static const uint8_t labels[3] = {2, 0, 7};
	size_t ni = make_images(good), nl = make_labels(lab, 3, labels);
	char lp[512]; /* put_file's buffers are reused */
	snprintf(lp, sizeof lp, "%s", put_file("good-labels.idx", lab, nl, 0));
	size_t len;

	memcpy(b, good, ni);
	b[0] = 0x1f;
	expect_idx(put_file("magic.idx", b, ni, 0), lp, NULL, DML_EFORMAT,
	           "magic.idx", "offset 0: bad magic");
	memcpy(b, good, ni);
	b[2] = 0x42;
	expect_idx(put_file("type.idx", b, ni, 0), lp, NULL, DML_EFORMAT,
	           "type.idx", "offset 2: bad type byte 0x42");
	b[2] = 0x0B; /* i16: valid IDX, not supported */
	expect_idx(put_file("i16.idx", b, ni, 0), lp, NULL, DML_EFORMAT,
	           "i16.idx", "offset 2: type i16");
	memcpy(b, good, ni);
	b[3] = 1;
	expect_idx(put_file("ndims.idx", b, ni, 0), lp, NULL, DML_EFORMAT,
	           "ndims.idx", "offset 3");

	/* a labels file of the wrong type */
	memcpy(b, lab, nl);
	b[2] = 0x0D;
	expect_idx(put_file("good.idx", good, ni, 0),
	           put_file("flab.idx", b, nl, 0), NULL, DML_EFORMAT, "flab.idx",
	           "offset 2: type f32");

	/* dims whose product overflows 64 bits */
	static const uint32_t huge[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
	len = 0;
	idx_header(b, &len, 0x08, 3, huge);
	expect_idx(put_file("overflow.idx", b, len, 0), lp, NULL, DML_EFORMAT,
	           "overflow.idx", "offset 4: dimensions overflow");

	/* a zero dimension */
	static const uint32_t zero[3] = {3, 0, 2};
	len = 0;
	idx_header(b, &len, 0x08, 3, zero);
	expect_idx(put_file("zero.idx", b, len, 0), lp, NULL, DML_EFORMAT,
	           "zero.idx", "offset 8: dimension 1 is 0");

	/* more than max_bytes (4 GiB by default): 10^9 images of 28x28 */
	static const uint32_t big[3] = {1000000000u, 28, 28};
	len = 0;
	idx_header(b, &len, 0x08, 3, big);
	expect_idx(put_file("big.idx", b, len, 0), lp, NULL, DML_ETOOBIG,
	           "big.idx", "offset 4");
	/* under the cap, but the 16-byte file holds none of the claimed 3 GB:
	 * memory grows with the data, so this fails fast and small */
	static const uint32_t claim[3] = {1000000u, 28, 28};
	len = 0;
	idx_header(b, &len, 0x08, 3, claim);
	expect_idx(put_file("claim.idx.gz", b, len, 1), NULL, NULL, DML_ETRUNC,
	           "claim.idx.gz", "offset 16: truncated");
	/* a small max_bytes */
	dml_data_opts o = {0};
	o.max_bytes = 32;
	expect_idx(put_file("good.idx", good, ni, 0), lp, &o, DML_ETOOBIG,
	           "good.idx", "max_bytes");

	/* data cut short: 10 of 12 pixels */
	expect_idx(put_file("short.idx", good, ni - 2, 0), lp, NULL, DML_ETRUNC,
	           "short.idx", "offset 26");
	expect_idx(put_file("short.idx.gz", good, ni - 2, 1), lp, NULL, DML_ETRUNC,
	           "short.idx.gz", "offset 26");
	/* header cut short */
	expect_idx(put_file("hdr.idx", good, 9, 0), lp, NULL, DML_ETRUNC,
	           "hdr.idx", "offset 9: file ends inside the header");
	expect_idx(put_file("empty.idx", good, 0, 0), lp, NULL, DML_ETRUNC,
	           "empty.idx", "offset 0");
	/* trailing bytes */
	memcpy(b, good, ni);
	b[ni] = 9;
	expect_idx(put_file("trail.idx", b, ni + 1, 0), lp, NULL, DML_EFORMAT,
	           "trail.idx", "offset 28: unexpected data");

	/* image and label counts disagree */
	static const uint8_t two[2] = {1, 2};
	size_t n2 = make_labels(b, 2, two);
	expect_idx(put_file("good.idx", good, ni, 0),
	           put_file("two-labels.idx", b, n2, 0), NULL, DML_EDIM,
	           "two-labels.idx", "2 labels, but");
	/* a label out of the declared range */
	o.max_bytes = 0;
	o.classes = 5;
	expect_idx(put_file("good.idx", good, ni, 0), lp, &o, DML_EFORMAT,
	           "good-labels.idx", "offset 10: label 7 out of range 0..4");

	/* missing file */
	expect_idx(tpath("missing.idx"), lp, NULL, DML_EIO, "missing.idx",
	           "cannot open");

	/* gzip: stream cut in the middle, and a corrupted checksum */
	uint8_t gzb[256];
	const char *gp = put_file("cut.idx.gz", good, ni, 1);
	size_t gl = get_file(gp, gzb, sizeof gzb);
	expect_idx(put_file("cut.idx.gz", gzb, gl - 6, 0), lp, NULL, DML_ETRUNC,
	           "cut.idx.gz", "offset");
	gzb[gl - 6] ^= 0xFF; /* in the CRC-32 of the trailer */
	expect_idx(put_file("crc.idx.gz", gzb, gl, 0), lp, NULL, DML_EFORMAT,
	           "crc.idx.gz", "incorrect data check"); /* offset: where zlib noticed */

	/* bad arguments */
	dml_dataset *ds = NULL;
	assert_int_equal(dml_dataset_new_idx(NULL, lp, lp, NULL), DML_EINVAL);
	assert_int_equal(dml_dataset_new_idx(&ds, NULL, lp, NULL), DML_EINVAL);
	o.remap_labels = 1;
	assert_int_equal(dml_dataset_new_idx(&ds, lp, lp, &o), DML_EINVAL);
	assert_null(ds);
}

/* ---- LIBSVM ----------------------------------------------------------- */

static const char svm_text[] =
	"# a comment line\n"
	"+1 1:0.5 3:-2 7:1e2\n"
	"\n"
	"-1\tqid:3 2:4.25\t5:1 # trailing comment\r\n"
	"   \t\n"
	"1 \n"
	"-1 7:0.125";

static void check_svm(dml_dataset *ds, size_t dim)
{
	static const uint64_t indptr[4] = {0, 3, 5, 5};
	static const uint32_t idx[6] = {0, 2, 6, 1, 4, 6};
	static const float val[6] = {0.5f, -2.0f, 100.0f, 4.25f, 1.0f, 0.125f};
	static const float y[4] = {1, -1, 1, -1};
	assert_int_equal(dml_dataset_rows(ds), 4);
	assert_int_equal(dml_dataset_dim(ds), dim);
	assert_true(dml_dataset_is_sparse(ds));
	assert_int_equal(dml_dataset_nnz(ds), 6);
	assert_int_equal(dml_dataset_classes(ds), 0);
	dml_batch b;
	assert_int_equal(dml_dataset_batch(ds, 0, 4, &b), 0);
	assert_null(b.x);
	assert_memory_equal(b.indptr, indptr, 3 * sizeof *indptr);
	assert_true(b.indptr[4] == 6);
	assert_memory_equal(b.idx, idx, sizeof idx);
	assert_memory_equal(b.val, val, sizeof val);
	assert_memory_equal(b.y, y, sizeof y);
}

static void test_libsvm_good(void **state)
{
	(void)state;
	dml_dataset *ds;
	for (int gz = 0; gz < 2; gz++) {
		const char *p = put_text(gz ? "a.svm.gz" : "a.svm", svm_text, gz);
		assert_int_equal(dml_dataset_new_libsvm(&ds, p, NULL), 0);
		assert_string_equal(dml_error_detail(), "");
		check_svm(ds, 7);
		dml_dataset_free(ds);

		/* a given, larger dim */
		dml_data_opts o = {0};
		o.dim = 10;
		assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), 0);
		check_svm(ds, 10);
		dml_dataset_free(ds);

		/* dense */
		o.dim = 0;
		o.dense = 1;
		assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), 0);
		assert_false(dml_dataset_is_sparse(ds));
		assert_int_equal(dml_dataset_dim(ds), 7);
		dml_batch b;
		assert_int_equal(dml_dataset_batch(ds, 0, 4, &b), 0);
		static const float x[28] = {0.5f, 0, -2, 0, 0, 0, 100, 0, 4.25f, 0, 0, 1,
		                            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.125f};
		assert_null(b.indptr);
		assert_memory_equal(b.x, x, sizeof x);
		dml_dataset_free(ds);
	}
	/* 0-based indices */
	dml_data_opts o = {0};
	o.zero_based = 1;
	const char *p = put_text("zero.svm", "3 0:1 4:2\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), 0);
	assert_int_equal(dml_dataset_dim(ds), 5);
	dml_batch b;
	assert_int_equal(dml_dataset_batch(ds, 0, 1, &b), 0);
	assert_true(b.idx[0] == 0 && b.idx[1] == 4 && b.val[1] == 2.0f && b.y[0] == 3.0f);
	dml_dataset_free(ds);
	/* an empty file is an empty data set */
	p = put_text("empty.svm", "# nothing\n\n", 1);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, NULL), 0);
	assert_int_equal(dml_dataset_rows(ds), 0);
	assert_int_equal(dml_dataset_dim(ds), 0);
	dml_dataset_free(ds);
	/* many rows (grows the arrays several times), plain and gzip */
	size_t cap = 4000 * 40;
	char *big = malloc(cap), *w = big;
	for (int i = 0; i < 4000; i++)
		w += sprintf(w, "%d %d:%d %d:0.5\n", i % 3, i % 50 + 1, i, 60 + i % 7);
	for (int gz = 0; gz < 2; gz++) {
		p = put_text("big.svm", big, gz);
		assert_int_equal(dml_dataset_new_libsvm(&ds, p, NULL), 0);
		assert_int_equal(dml_dataset_rows(ds), 4000);
		assert_int_equal(dml_dataset_dim(ds), 66);
		assert_int_equal(dml_dataset_nnz(ds), 8000);
		assert_int_equal(dml_dataset_batch(ds, 3999, 1, &b), 0);
		assert_true(b.y[0] == 3999 % 3 && b.indptr[0] == 7998);
		assert_true(b.idx[7998] == 3999 % 50 && b.val[7998] == 3999.0f);
		assert_true(b.idx[7999] == 59 + 3999 % 7 && b.val[7999] == 0.5f);
		dml_dataset_free(ds);
	}
	free(big);
}

typedef struct bad_case {
	const char *text;
	int rc;
	const char *what; /* expected in the message after "file:" */
} bad_case;

static void test_libsvm_malformed(void **state)
{
	(void)state;
	static const bad_case cases[] = {
		{"1 1:1\n1 0:2\n", DML_EFORMAT, ":2: index 0 is not 1-based"},
		{"1 3:1 2:1\n", DML_EFORMAT, ":1: index 2 is not above the previous index 3"},
		{"1 3:1 3:1\n", DML_EFORMAT, ":1: index 3 is not above"},
		{"1 1:1\n\n# c\n1 2:abc\n", DML_EFORMAT, ":4: bad value in '2:abc'"},
		{"1 2:1.5x\n", DML_EFORMAT, ":1: bad value"},
		{"1 2\n", DML_EFORMAT, ":1: missing ':' after index '2'"},
		{"1 2 3:1\n", DML_EFORMAT, ":1: missing ':'"},
		{"1 2:\n", DML_EFORMAT, ":1: missing value after '2:'"},
		{"1 2:nan\n", DML_EFORMAT, ":1: value in '2:nan' is not finite"},
		{"1 2:inf\n", DML_EFORMAT, "not finite"},
		{"1 2:1e99\n", DML_EFORMAT, "not finite"},
		{"1 -2:1\n", DML_EFORMAT, ":1: bad index in '-2:1'"},
		{"1 x:1\n", DML_EFORMAT, ":1: bad index"},
		{"1 99999999999:1\n", DML_EFORMAT, ":1: index 99999999999 too large"},
		{"abc 1:1\n", DML_EFORMAT, ":1: bad label 'abc'"},
		{"nan 1:1\n", DML_EFORMAT, ":1: label 'nan' is not finite"},
		{"1,2 1:1\n", DML_EFORMAT, ":1: bad label"},
		{"1 1:1 qid:2\n", DML_EFORMAT, ":1: qid after the features"},
		{"1 qid:x 1:1\n", DML_EFORMAT, ":1: bad qid"},
		{"1 1:1\n1 1:1\r2:1\n", DML_EFORMAT, ":2: bad value"},
		{"1 2:\f3\n", DML_EFORMAT, ":1: bad value"}, /* strtof would skip \f */
		{"1 2:\v3\n", DML_EFORMAT, ":1: bad value"},
		{"1 2:\r 3\n", DML_EFORMAT, ":1: bad value"},
		{"\v1 1:1\n", DML_EFORMAT, ":1: bad label"},
		/* bytes of the file are quoted escaped */
		{"1 1:1\n1 1:1\r2:1\n", DML_EFORMAT, ":2: bad value in '1:1\\x0d2:1'"},
		{"\xef\xbb\xbf" "1 1:1\n", DML_EFORMAT, ":1: bad label '\\xef\\xbb\\xbf1'"},
		{"1\\ 1:1\n", DML_EFORMAT, ":1: bad label '1\\\\'"},
	};
	char name[32];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (int gz = 0; gz < 2; gz++) {
			snprintf(name, sizeof name, "bad%zu.svm%s", i, gz ? ".gz" : "");
			const char *p = put_text(name, cases[i].text, gz);
			dml_dataset *ds = NULL;
			int rc = dml_dataset_new_libsvm(&ds, p, NULL);
			if (rc != cases[i].rc || !strstr(dml_error_detail(), name) ||
			    !strstr(dml_error_detail(), cases[i].what))
				fail_msg("case %zu: rc %d, message \"%s\"", i, rc, dml_error_detail());
			assert_null(ds);
		}
	}

	dml_dataset *ds = NULL;
	dml_data_opts o = {0};
	const char *p;
	/* a NUL byte */
	p = put_file("nul.svm", "1 1:1\n1 2:\0003\n", 13, 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, NULL), DML_EFORMAT);
	assert_err(dml_error_detail(), "nul.svm", ":2: NUL byte");
	/* an index beyond the given dim */
	o.dim = 4;
	p = put_text("dim.svm", "1 1:1 4:1\n-1 5:1\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_EFORMAT);
	assert_err(dml_error_detail(), "dim.svm", ":2: index 5 is beyond the dimension 4");
	o.dim = 0;
	/* an overlong line (the limit excludes the newline) */
	o.max_line = 16;
	p = put_text("long.svm", "1 1:1 2:1 3:1 #x\n1 1:1 2:1 3:1 4:1\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_ETOOBIG);
	assert_err(dml_error_detail(), "long.svm", ":2: line longer than 16 bytes");
	p = put_text("long.svm.gz", "1 1:1\n1 1:1 2:1 3:1 4:1 5:1", 1);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_ETOOBIG);
	assert_err(dml_error_detail(), "long.svm.gz", ":2: line longer");
	o.max_line = 0;
	/* an overlong line against the default 1 MiB limit */
	size_t n = (1u << 20) + 100;
	char *huge = malloc(n + 1);
	memset(huge, ' ', n);
	memcpy(huge, "1 1:1", 5);
	huge[n] = '\0';
	p = put_text("huge.svm", huge, 0);
	free(huge);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, NULL), DML_ETOOBIG);
	assert_err(dml_error_detail(), "huge.svm", ":1: line longer than 1048576 bytes");
	/* more data than max_bytes */
	o.max_bytes = 4096;
	char *many = malloc(1000 * 8 + 1), *w = many;
	for (int i = 0; i < 1000; i++)
		w += sprintf(w, "1 %d:1\n", i % 9 + 1);
	p = put_text("many.svm", many, 0);
	free(many);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_ETOOBIG);
	assert_err(dml_error_detail(), "many.svm", "max_bytes");
	o.max_bytes = 0;
	/* dense would be too big */
	o.dense = 1;
	o.max_bytes = 1 << 20;
	p = put_text("wide.svm", "1 1:1 200000:1\n1 1:1\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_ETOOBIG);
	assert_err(dml_error_detail(), "wide.svm", "dense exceed max_bytes");
	o.dense = 0;
	o.max_bytes = 0;
	/* labels outside the declared classes */
	o.classes = 3;
	p = put_text("cls.svm", "0 1:1\n2 1:1\n1.5 1:1\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_EFORMAT);
	assert_err(dml_error_detail(), "cls.svm", ":3: label '1.5' is not a class in 0..2");
	p = put_text("cls.svm", "0 1:1\n2 1:1\n3 1:1\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_EFORMAT);
	assert_err(dml_error_detail(), "cls.svm", ":3: label '3'");
	p = put_text("cls.svm", "0 1:1\n2 1:1\n1 1:1\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), 0);
	assert_int_equal(dml_dataset_classes(ds), 3);
	dml_dataset_free(ds);
	ds = NULL;
	/* missing file, bad arguments, NULL err */
	assert_int_equal(dml_dataset_new_libsvm(&ds, tpath("nope.svm"), NULL), DML_EIO);
	assert_err(dml_error_detail(), "nope.svm", "cannot open");
	assert_int_equal(dml_dataset_new_libsvm(&ds, tpath("nope.svm"), NULL), DML_EIO);
	assert_int_equal(dml_dataset_new_libsvm(NULL, p, NULL), DML_EINVAL);
	assert_int_equal(dml_dataset_new_libsvm(&ds, NULL, NULL), DML_EINVAL);
	o.remap_labels = 1;
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_EINVAL);
	assert_null(ds);
	/* a directory: opens, then fails to read */
	assert_int_equal(dml_dataset_new_libsvm(&ds, tmpdir, NULL), DML_EIO);
	assert_err(dml_error_detail(), tmpdir, "");
	/* a corrupt gzip stream */
	uint8_t gzb[512];
	p = put_text("c.svm.gz", svm_text, 1);
	size_t gl = get_file(p, gzb, sizeof gzb);
	gzb[gl - 5] ^= 0x55;
	p = put_file("c.svm.gz", gzb, gl, 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, NULL), DML_EFORMAT);
	assert_err(dml_error_detail(), "c.svm.gz", "incorrect");
	p = put_file("t.svm.gz", gzb, gl - 12, 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, NULL), DML_ETRUNC);
	assert_err(dml_error_detail(), "t.svm.gz", "truncated");
	assert_null(ds);
}

/* ---- labels ----------------------------------------------------------- */

static void test_remap_labels(void **state)
{
	(void)state;
	dml_dataset *ds, *te;
	dml_data_opts o = {0};
	o.remap_labels = 1;
	const char *p = put_text("pm.svm", "+1 1:1\n-1 1:2\n-1 1:3\n1 2:1\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), 0);
	assert_int_equal(dml_dataset_classes(ds), 2);
	const float *y = dml_dataset_labels(ds), *cv = dml_dataset_class_values(ds);
	assert_true(y[0] == 1 && y[1] == 0 && y[2] == 0 && y[3] == 1);
	assert_true(cv[0] == -1 && cv[1] == 1);
	dml_dataset_free(ds);

	/* 1..10 -> 0..9, then a test set mapped like the training set */
	float x[10], lab[10];
	for (int i = 0; i < 10; i++) {
		x[i] = (float)i;
		lab[i] = (float)(10 - i);
	}
	assert_int_equal(dml_dataset_new_dense(&ds, 10, 1, x, lab), 0);
	assert_int_equal(dml_dataset_classes(ds), 0);
	assert_null(dml_dataset_class_values(ds));
	size_t k = 0;
	assert_int_equal(dml_dataset_remap_labels(ds, &k), 0);
	assert_int_equal(k, 10);
	y = dml_dataset_labels(ds);
	for (int i = 0; i < 10; i++)
		assert_true(y[i] == (float)(9 - i));
	float tl[3] = {10, 3, 10};
	assert_int_equal(dml_dataset_new_dense(&te, 3, 1, x, tl), 0);
	assert_int_equal(dml_dataset_map_labels(te, dml_dataset_class_values(ds), k), 0);
	y = dml_dataset_labels(te);
	assert_true(y[0] == 9 && y[1] == 2 && y[2] == 9);
	assert_int_equal(dml_dataset_classes(te), 10);
	/* a label not in the table leaves the labels alone */
	float t2[2] = {3, 11};
	dml_dataset *te2;
	assert_int_equal(dml_dataset_new_dense(&te2, 2, 1, x, t2), 0);
	assert_int_equal(dml_dataset_map_labels(te2, dml_dataset_class_values(ds), k),
	                 DML_ENOTFOUND);
	assert_true(dml_dataset_labels(te2)[1] == 11 && dml_dataset_classes(te2) == 0);
	float dup[2] = {3, 3};
	assert_int_equal(dml_dataset_map_labels(te2, dup, 2), DML_EINVAL);
	/* set_classes checks that labels are class indices */
	/* set_classes checks that the labels are class indices */
	assert_int_equal(dml_dataset_set_classes(te2, 11), DML_EINVAL);
	assert_int_equal(dml_dataset_set_classes(te2, 12), 0);
	assert_int_equal(dml_dataset_classes(te2), 12);
	assert_true(dml_dataset_class_values(te2)[11] == 11);
	assert_int_equal(dml_dataset_set_classes(te2, 0), 0);
	assert_int_equal(dml_dataset_classes(te2), 0);
	assert_null(dml_dataset_class_values(te2));
	dml_dataset_free(te2);
	t2[1] = 2.5f;
	assert_int_equal(dml_dataset_new_dense(&te2, 2, 1, x, t2), 0);
	assert_int_equal(dml_dataset_set_classes(te2, 20), DML_EINVAL);
	dml_dataset_free(te2);
	dml_dataset_free(te);
	dml_dataset_free(ds);
}

/* ---- in-memory data sets and batches ----------------------------------- */

static void test_dense_batches(void **state)
{
	(void)state;
	float x[5 * 3], y[5];
	for (int i = 0; i < 15; i++)
		x[i] = (float)i;
	for (int i = 0; i < 5; i++)
		y[i] = (float)(i * 10);
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_dense(&ds, 5, 3, x, y), 0);
	x[0] = 99; /* copied */
	dml_batch b;
	assert_int_equal(dml_dataset_batch(ds, 0, 2, &b), 0);
	assert_int_equal(b.n, 2);
	assert_int_equal(b.dim, 3);
	assert_true(b.x[0] == 0 && b.x[5] == 5 && b.y[1] == 10);
	assert_null(b.indptr);
	assert_null(b.idx);
	assert_null(b.val);
	assert_int_equal(dml_dataset_batch(ds, 4, 2, &b), 0); /* clipped */
	assert_int_equal(b.n, 1);
	assert_true(b.x[2] == 14 && b.y[0] == 40);
	assert_int_equal(dml_dataset_batch(ds, 5, 2, &b), 0);
	assert_int_equal(b.n, 0);
	assert_int_equal(dml_dataset_batch(ds, 6, 2, &b), DML_EINVAL);
	assert_int_equal(b.n, 0); /* untouched */
	assert_int_equal(dml_dataset_nnz(ds), 15);

	/* bad input: non-finite, NULL with data */
	dml_dataset *bad = NULL;
	x[4] = NAN;
	assert_int_equal(dml_dataset_new_dense(&bad, 5, 3, x, y), DML_EINVAL);
	assert_int_equal(dml_dataset_new_dense(&bad, 5, 3, NULL, y), DML_EINVAL);
	assert_int_equal(dml_dataset_new_dense(&bad, SIZE_MAX / 2, 3, x, y), DML_ETOOBIG);
	assert_null(bad);
	/* empty data sets are fine */
	assert_int_equal(dml_dataset_new_dense(&bad, 0, 3, NULL, NULL), 0);
	assert_int_equal(dml_dataset_batch(bad, 0, 10, &b), 0);
	assert_int_equal(b.n, 0);
	dml_dataset_free(bad);
	dml_dataset_free(ds);
	dml_dataset_free(NULL);
}

/* 4 rows, dim 5: {0:1, 3:2}, {}, {4:3}, {1:4, 2:5, 4:6}; offsets from 2. */
static const uint64_t sp_indptr[5] = {2, 4, 4, 5, 8};
static const uint32_t sp_idx[8] = {9, 9, 0, 3, 4, 1, 2, 4};
static const float sp_val[8] = {-7, -7, 1, 2, 3, 4, 5, 6};
static const float sp_y[4] = {0, 1, 2, 3};

static void test_sparse_batches(void **state)
{
	(void)state;
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_sparse(&ds, 4, 5, sp_indptr, sp_idx, sp_val, sp_y), 0);
	assert_true(dml_dataset_is_sparse(ds));
	assert_int_equal(dml_dataset_nnz(ds), 6);
	dml_batch b;
	assert_int_equal(dml_dataset_batch(ds, 2, 10, &b), 0); /* clipped */
	assert_int_equal(b.n, 2);
	assert_null(b.x);
	assert_true(b.indptr[0] == 2 && b.indptr[1] == 3 && b.indptr[2] == 6);
	assert_true(b.idx[2] == 4 && b.val[2] == 3);
	assert_true(b.idx[5] == 4 && b.val[5] == 6 && b.y[1] == 3);
	assert_int_equal(dml_dataset_batch(ds, 1, 1, &b), 0);
	assert_true(b.indptr[0] == b.indptr[1]); /* empty row */

	/* to dense */
	assert_int_equal(dml_dataset_to_dense(ds), 0);
	assert_false(dml_dataset_is_sparse(ds));
	assert_int_equal(dml_dataset_batch(ds, 0, 4, &b), 0);
	static const float dense[20] = {1, 0, 0, 2, 0, 0, 0, 0, 0, 0,
	                                0, 0, 0, 0, 3, 0, 4, 5, 0, 6};
	assert_memory_equal(b.x, dense, sizeof dense);
	assert_int_equal(dml_dataset_to_dense(ds), 0); /* no-op */
	dml_dataset_free(ds);

	/* invalid CSR */
	dml_dataset *bad = NULL;
	uint64_t ip[5] = {2, 4, 3, 5, 8};
	assert_int_equal(dml_dataset_new_sparse(&bad, 4, 5, ip, sp_idx, sp_val, sp_y), DML_EINVAL);
	assert_int_equal(dml_dataset_new_sparse(&bad, 4, 4, sp_indptr, sp_idx, sp_val, sp_y), DML_EINVAL);
	uint32_t idx[8];
	memcpy(idx, sp_idx, sizeof idx);
	idx[6] = 1; /* not ascending */
	assert_int_equal(dml_dataset_new_sparse(&bad, 4, 5, sp_indptr, idx, sp_val, sp_y), DML_EINVAL);
	assert_int_equal(dml_dataset_new_sparse(&bad, 4, 5, NULL, sp_idx, sp_val, sp_y), DML_EINVAL);
	assert_null(bad);
}

/* ---- shuffle and shards ------------------------------------------------ */

/* n rows of dim 3: row i = (i, i+0.5, -i), label i. */
static dml_dataset *counting(size_t n)
{
	float *x = malloc(n * 3 * sizeof *x), *y = malloc(n * sizeof *y);
	for (size_t i = 0; i < n; i++) {
		x[3 * i] = (float)i;
		x[3 * i + 1] = (float)i + 0.5f;
		x[3 * i + 2] = -(float)i;
		y[i] = (float)i;
	}
	dml_dataset *ds;
	assert_int_equal(dml_dataset_new_dense(&ds, n, 3, x, y), 0);
	free(x);
	free(y);
	return ds;
}

/* Checks that every row still matches its label and the labels are a
 * permutation of 0..n-1. */
static void check_rows_follow(const dml_dataset *ds, size_t n)
{
	dml_batch b;
	assert_int_equal(dml_dataset_batch(ds, 0, n, &b), 0);
	char *seen = calloc(n, 1);
	for (size_t r = 0; r < n; r++) {
		float l = b.y[r];
		assert_true(b.x[3 * r] == l && b.x[3 * r + 1] == l + 0.5f &&
		            b.x[3 * r + 2] == -l);
		assert_false(seen[(size_t)l]);
		seen[(size_t)l] = 1;
	}
	free(seen);
}

static void test_shuffle(void **state)
{
	(void)state;
	size_t n = 1000;
	dml_dataset *a = counting(n), *b = counting(n), *c = counting(n);
	assert_int_equal(dml_dataset_shuffle(a, 42), 0);
	assert_int_equal(dml_dataset_shuffle(b, 42), 0);
	assert_int_equal(dml_dataset_shuffle(c, 43), 0);
	check_rows_follow(a, n);
	check_rows_follow(c, n);
	assert_memory_equal(dml_dataset_labels(a), dml_dataset_labels(b), n * sizeof(float));
	assert_memory_not_equal(dml_dataset_labels(a), dml_dataset_labels(c), n * sizeof(float));
	size_t moved = 0;
	for (size_t i = 0; i < n; i++)
		moved += dml_dataset_labels(a)[i] != (float)i;
	assert_true(moved > n / 2);
	dml_dataset_free(a);
	dml_dataset_free(b);
	dml_dataset_free(c);

	/* the order is fixed for good: xoshiro256** + Fisher-Yates, seed 1 */
	static const float golden[10] = {3, 8, 0, 9, 2, 5, 6, 4, 1, 7};
	a = counting(10);
	assert_int_equal(dml_dataset_shuffle(a, 1), 0);
	assert_memory_equal(dml_dataset_labels(a), golden, sizeof golden);
	dml_dataset_free(a);

	/* sparse rows move like dense ones under the same seed */
	dml_dataset *s, *d;
	assert_int_equal(dml_dataset_new_sparse(&s, 4, 5, sp_indptr, sp_idx, sp_val, sp_y), 0);
	assert_int_equal(dml_dataset_new_sparse(&d, 4, 5, sp_indptr, sp_idx, sp_val, sp_y), 0);
	assert_int_equal(dml_dataset_to_dense(d), 0);
	assert_int_equal(dml_dataset_shuffle(s, 7), 0);
	assert_int_equal(dml_dataset_shuffle(d, 7), 0);
	assert_memory_equal(dml_dataset_labels(s), dml_dataset_labels(d), 4 * sizeof(float));
	assert_int_equal(dml_dataset_nnz(s), 6);
	assert_int_equal(dml_dataset_to_dense(s), 0);
	dml_batch bs, bd;
	assert_int_equal(dml_dataset_batch(s, 0, 4, &bs), 0);
	assert_int_equal(dml_dataset_batch(d, 0, 4, &bd), 0);
	assert_memory_equal(bs.x, bd.x, 20 * sizeof(float));
	dml_dataset_free(s);
	dml_dataset_free(d);
}

static void test_shards(void **state)
{
	(void)state;
	size_t n = 10;
	dml_dataset *ds = counting(n);
	assert_int_equal(dml_dataset_set_classes(ds, 10), 0);
	char seen[10] = {0};
	static const size_t sizes[3] = {4, 3, 3};
	for (int i = 0; i < 3; i++) {
		dml_dataset *sh;
		assert_int_equal(dml_dataset_new_shard(&sh, ds, i, 3), 0);
		assert_int_equal(dml_dataset_rows(sh), sizes[i]);
		assert_int_equal(dml_dataset_dim(sh), 3);
		assert_int_equal(dml_dataset_classes(sh), 10);
		dml_batch b;
		assert_int_equal(dml_dataset_batch(sh, 0, 100, &b), 0);
		for (size_t r = 0; r < b.n; r++) {
			size_t l = (size_t)b.y[r];
			assert_true(b.x[3 * r] == (float)l);
			assert_false(seen[l]);
			seen[l] = 1;
		}
		dml_dataset_free(sh);
	}
	for (size_t i = 0; i < n; i++)
		assert_true(seen[i]);
	/* more shards than rows: sizes 1 and 0 */
	size_t start, count, total = 0;
	for (int i = 0; i < 16; i++) {
		assert_int_equal(dml_shard_range(n, i, 16, &start, &count), 0);
		assert_true(count == (i < 10 ? 1u : 0u) && start == total);
		total += count;
	}
	dml_dataset *sh = NULL;
	assert_int_equal(dml_dataset_new_shard(&sh, ds, 3, 3), DML_EINVAL);
	assert_int_equal(dml_dataset_new_shard(&sh, ds, -1, 3), DML_EINVAL);
	assert_int_equal(dml_dataset_new_shard(&sh, ds, 0, 0), DML_EINVAL);
	assert_null(sh);
	/* shards are copies: freeing the original leaves them valid */
	assert_int_equal(dml_dataset_new_shard(&sh, ds, 1, 2), 0);
	dml_dataset_free(ds);
	assert_int_equal(dml_dataset_rows(sh), 5);
	assert_true(dml_dataset_labels(sh)[0] == 5);
	dml_dataset_free(sh);

	/* sparse shards and slices */
	assert_int_equal(dml_dataset_new_sparse(&ds, 4, 5, sp_indptr, sp_idx, sp_val, sp_y), 0);
	assert_int_equal(dml_dataset_new_shard(&sh, ds, 1, 2), 0);
	assert_true(dml_dataset_is_sparse(sh));
	assert_int_equal(dml_dataset_rows(sh), 2);
	assert_int_equal(dml_dataset_nnz(sh), 4);
	dml_batch b;
	assert_int_equal(dml_dataset_batch(sh, 0, 2, &b), 0);
	assert_true(b.indptr[0] == 0 && b.indptr[1] == 1 && b.indptr[2] == 4);
	assert_true(b.idx[0] == 4 && b.val[3] == 6 && b.y[0] == 2);
	dml_dataset_free(sh);
	assert_int_equal(dml_dataset_new_slice(&sh, ds, 3, 5), 0);
	assert_int_equal(dml_dataset_rows(sh), 1);
	dml_dataset_free(sh);
	assert_int_equal(dml_dataset_new_slice(&sh, ds, 5, 1), DML_EINVAL);
	dml_dataset_free(ds);
}

/* ---- scaling ---------------------------------------------------------- */

static void test_scaling(void **state)
{
	(void)state;
	/* feature 0: 1,2,3,4 (mean 2.5, sd sqrt(1.25)); feature 1: -4,0,2,2;
	 * feature 2: constant 7 */
	float x[12] = {1, -4, 7, 2, 0, 7, 3, 2, 7, 4, 2, 7};
	dml_dataset *tr, *te;
	assert_int_equal(dml_dataset_new_dense(&tr, 4, 3, x, NULL), 0);
	dml_scaler *sc;
	assert_int_equal(dml_scaler_new_fit(&sc, tr, DML_SCALE_STANDARD), 0);
	size_t dim;
	const float *off, *scale;
	dml_scaler_params(sc, &dim, &off, &scale);
	assert_int_equal(dim, 3);
	assert_float_equal(off[0], 2.5, 1e-6);
	assert_float_equal(scale[0], 0.894427191, 1e-6);
	assert_float_equal(off[1], 0, 1e-6);
	assert_float_equal(scale[1], 0.408248290, 1e-6);
	assert_float_equal(off[2], 7, 1e-6);
	assert_float_equal(scale[2], 1, 0);
	assert_int_equal(dml_scaler_apply(sc, tr), 0);
	dml_batch b;
	assert_int_equal(dml_dataset_batch(tr, 0, 4, &b), 0);
	double mean = 0, var = 0;
	for (int r = 0; r < 4; r++)
		mean += b.x[3 * r];
	for (int r = 0; r < 4; r++)
		var += (b.x[3 * r] - mean / 4) * (b.x[3 * r] - mean / 4);
	assert_float_equal(mean / 4, 0, 1e-6);
	assert_float_equal(var / 4, 1, 1e-5);
	assert_true(b.x[2] == 0 && b.x[11] == 0);
	/* the training statistics applied to a test set */
	float t[3] = {5, 6, 8};
	assert_int_equal(dml_dataset_new_dense(&te, 1, 3, t, NULL), 0);
	assert_int_equal(dml_scaler_apply(sc, te), 0);
	assert_int_equal(dml_dataset_batch(te, 0, 1, &b), 0);
	assert_float_equal(b.x[0], 2.236067977, 1e-5);
	assert_float_equal(b.x[1], 2.449489743, 1e-5);
	assert_float_equal(b.x[2], 1, 1e-6);
	dml_scaler_free(sc);
	dml_dataset_free(tr);
	dml_dataset_free(te);

	/* min-max and max-abs */
	assert_int_equal(dml_dataset_new_dense(&tr, 4, 3, x, NULL), 0);
	assert_int_equal(dml_scaler_new_fit(&sc, tr, DML_SCALE_MINMAX), 0);
	assert_int_equal(dml_scaler_apply(sc, tr), 0);
	assert_int_equal(dml_dataset_batch(tr, 0, 4, &b), 0);
	static const float mm[12] = {0, 0, 0, 1.0f / 3, 4.0f / 6, 0,
	                             2.0f / 3, 1, 0, 1, 1, 0};
	for (int i = 0; i < 12; i++)
		assert_float_equal(b.x[i], mm[i], 1e-6);
	dml_scaler_free(sc);
	dml_dataset_free(tr);
	assert_int_equal(dml_dataset_new_dense(&tr, 4, 3, x, NULL), 0);
	assert_int_equal(dml_scaler_new_fit(&sc, tr, DML_SCALE_MAXABS), 0);
	dml_scaler_params(sc, NULL, &off, &scale);
	assert_true(off[0] == 0 && off[1] == 0 && off[2] == 0);
	assert_float_equal(scale[0], 0.25, 1e-7);
	assert_float_equal(scale[1], 0.25, 1e-7);
	assert_float_equal(scale[2], 1.0 / 7, 1e-7);
	dml_scaler_free(sc);

	/* sparse: only max-abs */
	dml_dataset *sp;
	assert_int_equal(dml_dataset_new_sparse(&sp, 4, 5, sp_indptr, sp_idx, sp_val, sp_y), 0);
	sc = NULL;
	assert_int_equal(dml_scaler_new_fit(&sc, sp, DML_SCALE_STANDARD), DML_EINVAL);
	assert_int_equal(dml_scaler_new_fit(&sc, sp, DML_SCALE_MINMAX), DML_EINVAL);
	assert_null(sc);
	assert_int_equal(dml_scaler_new_fit(&sc, sp, DML_SCALE_MAXABS), 0);
	assert_int_equal(dml_scaler_apply(sc, sp), 0);
	assert_int_equal(dml_dataset_batch(sp, 0, 4, &b), 0);
	static const float spv[6] = {1, 1, 0.5f, 1, 1, 1};
	assert_memory_equal(b.val + b.indptr[0], spv, sizeof spv);
	dml_scaler_free(sc);
	/* a centring scaler does not apply to sparse data; dims must match */
	float o5[5] = {0, 1, 0, 0, 0}, s5[5] = {1, 1, 1, 1, 1};
	assert_int_equal(dml_scaler_new(&sc, 5, o5, s5), 0);
	assert_int_equal(dml_scaler_apply(sc, sp), DML_EINVAL);
	assert_int_equal(dml_scaler_apply(sc, tr), DML_EDIM);
	dml_scaler_free(sc);
	/* a result that overflows changes nothing */
	float big[3] = {1e38f, 1e38f, 1e38f};
	assert_int_equal(dml_scaler_new(&sc, 3, o5, big), 0);
	assert_int_equal(dml_scaler_apply(sc, tr), DML_EINVAL);
	assert_int_equal(dml_dataset_batch(tr, 0, 4, &b), 0);
	assert_memory_equal(b.x, x, sizeof x);
	dml_scaler_free(sc);
	s5[0] = INFINITY;
	assert_int_equal(dml_scaler_new(&sc, 5, o5, s5), DML_EINVAL);
	dml_scaler_free(NULL);
	dml_dataset_free(sp);
	dml_dataset_free(tr);
}

/* ---- hostile paths and bounds --------------------------------------- */

/* A FIFO (or a directory) given to either loader fails at once instead of
 * hanging it; a symbolic link to a data file is followed (data folders
 * are often links). An alarm ends the test if a load hangs. */
static void test_hostile_paths(void **state)
{
	(void)state;
	dml_dataset *ds = NULL;
	const char *fifo = tpath("fifo");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	char fp[512];
	snprintf(fp, sizeof fp, "%s", fifo);
	alarm(20);
	assert_int_equal(dml_dataset_new_libsvm(&ds, fp, NULL), DML_EIO);
	assert_err(dml_error_detail(), fp, "not a regular file (a FIFO)");
	assert_int_equal(dml_dataset_new_idx(&ds, fp, NULL, NULL), DML_EIO);
	assert_err(dml_error_detail(), fp, "FIFO");
	uint8_t b[256];
	size_t n = make_images(b);
	char ip[512];
	snprintf(ip, sizeof ip, "%s", put_file("img", b, n, 0));
	assert_int_equal(dml_dataset_new_idx(&ds, ip, fp, NULL), DML_EIO);
	alarm(0);
	assert_null(ds);
	assert_int_equal(dml_dataset_new_libsvm(&ds, tmpdir, NULL), DML_EIO);
	assert_err(dml_error_detail(), tmpdir, "a directory");

	char lp[512];
	snprintf(lp, sizeof lp, "%s", tpath("link.svm"));
	const char *real = put_text("real.svm", svm_text, 1);
	assert_int_equal(symlink(real, lp), 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, lp, NULL), 0);
	assert_int_equal(dml_dataset_rows(ds), 4);
	dml_dataset_free(ds);
}

/* max_bytes bounds every array of a load together, and what the declared
 * dimension can make later steps allocate. */
static void test_loader_bounds(void **state)
{
	(void)state;
	dml_dataset *ds = NULL;
	/* 15 bytes declaring a dimension of 4e9 (16 GB as one float each) */
	const char *p = put_text("huge_index.svm", "1 4000000000:1\n", 0);
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, NULL), DML_ETOOBIG);
	assert_err(dml_error_detail(), p, "dimension 4000000000");
	assert_null(ds);

	/* 500 rows of one entry: the rows' arrays (12 B a row) and the
	 * entries' (8 B each) fit 8 KiB one by one, not together */
	char text[500 * 8 + 1], *t = text;
	for (int i = 0; i < 500; i++)
		t += sprintf(t, "1 %d:1\n", 1 + i % 9);
	p = put_text("many.svm", text, 0);
	dml_data_opts o = {.max_bytes = 8192};
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), DML_ETOOBIG);
	assert_err(dml_error_detail(), p, "max_bytes (8192 bytes)");
	o.max_bytes = 16384;
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), 0);
	assert_int_equal(dml_dataset_rows(ds), 500);
	dml_dataset_free(ds);

	/* a dimension of 100000 fits 1 MiB sparse; a dense view of 10 rows
	 * (4 MB) or a fitted scaler (2.4 MB) would not */
	t = text;
	for (int i = 0; i < 10; i++)
		t += sprintf(t, "1 %d:2\n", i ? 1 + i : 100000);
	p = put_text("wide.svm", text, 0);
	o.max_bytes = 1 << 20;
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), 0);
	assert_int_equal(dml_dataset_dim(ds), 100000);
	dml_scaler *sc = NULL;
	assert_int_equal(dml_scaler_new_fit(&sc, ds, DML_SCALE_MAXABS), DML_ETOOBIG);
	assert_non_null(strstr(dml_error_detail(), "scaler of 100000 features"));
	assert_null(sc);
	assert_int_equal(dml_dataset_to_dense(ds), DML_ETOOBIG);
	assert_non_null(strstr(dml_error_detail(), "stored dense"));
	dml_dataset_free(ds);
	o.max_bytes = 8 << 20; /* room for both */
	assert_int_equal(dml_dataset_new_libsvm(&ds, p, &o), 0);
	assert_int_equal(dml_scaler_new_fit(&sc, ds, DML_SCALE_MAXABS), 0);
	assert_int_equal(dml_dataset_to_dense(ds), 0);
	dml_scaler_free(sc);
	dml_dataset_free(ds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idx_u8),
		cmocka_unit_test(test_idx_f32),
		cmocka_unit_test(test_idx_malformed),
		cmocka_unit_test(test_libsvm_good),
		cmocka_unit_test(test_libsvm_malformed),
		cmocka_unit_test(test_remap_labels),
		cmocka_unit_test(test_dense_batches),
		cmocka_unit_test(test_sparse_batches),
		cmocka_unit_test(test_shuffle),
		cmocka_unit_test(test_shards),
		cmocka_unit_test(test_scaling),
		cmocka_unit_test(test_hostile_paths),
		cmocka_unit_test(test_loader_bounds),
	};
	return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}

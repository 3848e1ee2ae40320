/* test_ckpt.c - the checkpoint container: round trips, every flipped bit and
 * every truncation, files built by hand from docs/checkpoint.md, hostile
 * claims, atomic replacement, and a writer killed with SIGKILL mid-save. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "ckpt.h"

/* ---- fixtures and helpers ---- */

static char dir[256]; /* a fresh directory per test */

static int setup_dir(void **state)
{
	(void)state;
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/dml_ckpt.XXXXXX", t && *t ? t : "/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

/* Removes every entry of d (files only) and returns how many there were. */
static int clear_dir(const char *d, const char *keep)
{
	DIR *dp = opendir(d);
	assert_non_null(dp);
	struct dirent *e;
	int n = 0;
	char p[512];
	while ((e = readdir(dp))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (keep && !strcmp(e->d_name, keep))
			continue;
		snprintf(p, sizeof p, "%s/%s", d, e->d_name);
		if (unlink(p))
			rmdir(p);
		n++;
	}
	closedir(dp);
	return n;
}

/* Entries in d other than . and .. */
static int count_entries(const char *d)
{
	DIR *dp = opendir(d);
	assert_non_null(dp);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(dp)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(dp);
	return n;
}

static int teardown_dir(void **state)
{
	(void)state;
	clear_dir(dir, NULL);
	return rmdir(dir);
}

/* A path in the test's directory. The last 8 results stay valid. */
static const char *in_dir(const char *name)
{
	static char p[8][512];
	static int i;
	i = (i + 1) % 8;
	snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
	return p[i];
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	uint8_t *b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static void spit(const char *path, const void *b, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	if (len)
		assert_int_equal(fwrite(b, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static float *random_floats(size_t n)
{
	float *v = malloc(n * sizeof *v);
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = (float)((double)(next_rand() >> 11) / 9007199254740992.0 * 2 - 1);
	return v;
}

static const char small_meta[8] = "dim=40;";
static float small_floats[40];
static const dml__ckpt_sec small_secs[] = {
	{1, "abc", 3}, {2, NULL, 0}, {3, small_floats, sizeof small_floats}};

/* Writes the small checkpoint used by the byte-by-byte tests. */
static void save_small(const char *path)
{
	for (int i = 0; i < 40; i++)
		small_floats[i] = (float)i * 0.37f - 3;
	assert_int_equal(dml__ckpt_save(path, 7, small_meta, sizeof small_meta,
	                                small_secs, 3, DML__CKPT_LEVEL_DEFAULT), 0);
}

/* Reads the small checkpoint and checks it: 0 or the first error. */
static int load_small(const char *path)
{
	dml__ckpt_reader *r;
	uint32_t kind, mlen;
	char meta[64], abc[3];
	float f[40];
	int rc = dml__ckpt_open(&r, path, &kind, meta, sizeof meta, &mlen);
	if (rc)
		return rc;
	if ((rc = dml__ckpt_read(r, 1, abc, 3)) || (rc = dml__ckpt_read(r, 2, NULL, 0)) ||
	    (rc = dml__ckpt_read(r, 3, f, sizeof f))) {
		dml__ckpt_abort(r);
		return rc;
	}
	if ((rc = dml__ckpt_close(r)))
		return rc;
	assert_int_equal(kind, 7);
	assert_int_equal(mlen, sizeof small_meta);
	assert_memory_equal(meta, small_meta, sizeof small_meta);
	assert_memory_equal(abc, "abc", 3);
	assert_memory_equal(f, small_floats, sizeof f);
	return 0;
}

/* ---- round trips ---- */

static void test_roundtrip(void **state)
{
	(void)state;
	const size_t nf = 3 * 1024 * 1024 / sizeof(float) + 3; /* ~3 MB */
	float *rnd = random_floats(nf);
	const size_t nz = 4 * 1024 * 1024;
	uint8_t *zeros = calloc(nz, 1);
	assert_non_null(zeros);
	for (size_t i = 0; i < nz; i += 4096)
		zeros[i] = (uint8_t)(i >> 12);
	const char meta[] = "dimension=786435 optimizer=adam beta1=0.9";
	const dml__ckpt_sec secs[] = {
		{10, "hello", 5},
		{11, NULL, 0},
		{12, rnd, nf * sizeof(float)},
		{13, zeros, nz},
		{10, "again", 5}, /* tags may repeat */
	};
	const char *path = in_dir("rt.ckpt");
	assert_int_equal(dml__ckpt_save(path, 0xC0FFEEu, meta, sizeof meta, secs, 5,
	                                DML__CKPT_LEVEL_DEFAULT), 0);
	assert_int_equal(count_entries(dir), 1); /* no temporary file left */

	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	/* random floats barely shrink; the compressible section nearly vanishes */
	assert_true((size_t)st.st_size < nf * sizeof(float) + nz / 50);
	assert_int_equal(st.st_mode & 0777, 0600); /* the owner's alone */

	dml__ckpt_reader *r;
	uint32_t kind = 0, mlen = 0, tag;
	uint64_t len;
	char m[128];
	assert_int_equal(dml__ckpt_open(&r, path, &kind, m, sizeof m, &mlen), 0);
	assert_int_equal(kind, 0xC0FFEEu);
	assert_int_equal(mlen, sizeof meta);
	assert_memory_equal(m, meta, sizeof meta);
	char s[5];
	assert_int_equal(dml__ckpt_peek(r, &tag, &len), 0);
	assert_int_equal(tag, 10);
	assert_int_equal(len, 5);
	assert_int_equal(dml__ckpt_peek(r, &tag, &len), 0); /* idempotent */
	assert_int_equal(dml__ckpt_read(r, 10, s, 5), 0);
	assert_memory_equal(s, "hello", 5);
	assert_int_equal(dml__ckpt_read(r, 11, NULL, 0), 0);
	float *back = malloc(nf * sizeof(float));
	uint8_t *zback = malloc(nz);
	assert_non_null(back);
	assert_non_null(zback);
	assert_int_equal(dml__ckpt_read(r, 12, back, nf * sizeof(float)), 0);
	assert_memory_equal(back, rnd, nf * sizeof(float));
	assert_int_equal(dml__ckpt_read(r, 13, zback, nz), 0);
	assert_memory_equal(zback, zeros, nz);
	assert_int_equal(dml__ckpt_read(r, 10, s, 5), 0);
	assert_memory_equal(s, "again", 5);
	assert_int_equal(dml__ckpt_peek(r, &tag, &len), DML_ENOTFOUND);
	assert_int_equal(dml__ckpt_close(r), 0);
	free(back);
	free(zback);
	free(rnd);
	free(zeros);
}

static void test_levels_and_empty(void **state)
{
	(void)state;
	const size_t nf = 65536;
	float *v = random_floats(nf);
	float *back = malloc(nf * sizeof *back);
	assert_non_null(back);
	const dml__ckpt_sec sec = {5, v, nf * sizeof *v};
	const char *path = in_dir("lv.ckpt");
	for (int level = -1; level <= 9; level++) {
		assert_int_equal(dml__ckpt_save(path, 1, NULL, 0, &sec, 1, level), 0);
		dml__ckpt_reader *r;
		uint32_t mlen = 99;
		assert_int_equal(dml__ckpt_open(&r, path, NULL, NULL, 0, &mlen), 0);
		assert_int_equal(mlen, 0);
		memset(back, 0, nf * sizeof *back);
		assert_int_equal(dml__ckpt_read(r, 5, back, nf * sizeof *back), 0);
		assert_int_equal(dml__ckpt_close(r), 0);
		assert_memory_equal(back, v, nf * sizeof *v);
	}
	/* no sections, no meta */
	assert_int_equal(dml__ckpt_save(path, 2, NULL, 0, NULL, 0, 1), 0);
	dml__ckpt_reader *r;
	uint32_t kind;
	assert_int_equal(dml__ckpt_open(&r, path, &kind, NULL, 0, NULL), 0);
	assert_int_equal(kind, 2);
	assert_int_equal(dml__ckpt_peek(r, NULL, NULL), DML_ENOTFOUND);
	assert_int_equal(dml__ckpt_read(r, 5, NULL, 0), DML_EFORMAT);
	assert_int_equal(dml__ckpt_close(r), 0);
	assert_int_equal(count_entries(dir), 1);
	free(v);
	free(back);
}

static void test_meta_limits(void **state)
{
	(void)state;
	uint8_t *meta = malloc(DML__CKPT_META_MAX + 1), *m2 = malloc(DML__CKPT_META_MAX);
	assert_non_null(meta);
	assert_non_null(m2);
	for (size_t i = 0; i <= DML__CKPT_META_MAX; i++)
		meta[i] = (uint8_t)(i * 31 + 7);
	const char *path = in_dir("meta.ckpt");
	assert_int_equal(dml__ckpt_save(path, 3, meta, DML__CKPT_META_MAX + 1, NULL, 0, 1),
	                 DML_EINVAL);
	assert_int_equal(count_entries(dir), 0);
	assert_int_equal(dml__ckpt_save(path, 3, meta, DML__CKPT_META_MAX, NULL, 0, 1), 0);
	dml__ckpt_reader *r;
	uint32_t mlen = 0;
	assert_int_equal(dml__ckpt_open(&r, path, NULL, m2, DML__CKPT_META_MAX, &mlen), 0);
	assert_int_equal(mlen, DML__CKPT_META_MAX);
	assert_memory_equal(m2, meta, DML__CKPT_META_MAX);
	assert_int_equal(dml__ckpt_close(r), 0);
	/* a meta larger than the caller's buffer is refused, not cut */
	r = (dml__ckpt_reader *)&r;
	mlen = 0;
	assert_int_equal(dml__ckpt_open(&r, path, NULL, m2, DML__CKPT_META_MAX - 1, &mlen),
	                 DML_EFORMAT);
	assert_null(r);
	assert_int_equal(mlen, DML__CKPT_META_MAX); /* the size it needs */
	assert_int_equal(dml__ckpt_open(&r, path, NULL, NULL, 0, NULL), DML_EFORMAT);
	free(meta);
	free(m2);
}

static void test_bad_args(void **state)
{
	(void)state;
	const char *path = in_dir("args.ckpt");
	dml__ckpt_sec sec = {1, NULL, 4};
	char m[4] = "meta";
	assert_int_equal(dml__ckpt_save(NULL, 0, NULL, 0, NULL, 0, 1), DML_EINVAL);
	assert_int_equal(dml__ckpt_save("", 0, NULL, 0, NULL, 0, 1), DML_EINVAL);
	assert_int_equal(dml__ckpt_save(path, 0, NULL, 4, NULL, 0, 1), DML_EINVAL);
	assert_int_equal(dml__ckpt_save(path, 0, NULL, 0, NULL, 1, 1), DML_EINVAL);
	assert_int_equal(dml__ckpt_save(path, 0, NULL, 0, &sec, 1, 1), DML_EINVAL);
	assert_int_equal(dml__ckpt_save(path, 0, m, 4, NULL, 0, 10), DML_EINVAL);
	assert_int_equal(dml__ckpt_save(path, 0, m, 4, NULL, 0, -2), DML_EINVAL);
	dml__ckpt_sec two[2] = {{1, m, UINT64_MAX - 8}, {2, m, 4}};
	assert_int_equal(dml__ckpt_save(path, 0, NULL, 0, two, 2, 1), DML_EINVAL);
	assert_int_equal(count_entries(dir), 0);

	assert_int_equal(dml__ckpt_save(path, 0, m, 4, NULL, 0, 1), 0);
	dml__ckpt_reader *r;
	assert_int_equal(dml__ckpt_open(NULL, path, NULL, NULL, 0, NULL), DML_EINVAL);
	assert_int_equal(dml__ckpt_open(&r, NULL, NULL, NULL, 0, NULL), DML_EINVAL);
	assert_int_equal(dml__ckpt_open(&r, path, NULL, NULL, 4, NULL), DML_EINVAL);
	assert_int_equal(dml__ckpt_open(&r, path, NULL, m, 4, NULL), 0);
	assert_int_equal(dml__ckpt_read(r, 1, NULL, 4), DML_EINVAL);
	assert_int_equal(dml__ckpt_read(NULL, 1, m, 4), DML_EINVAL);
	assert_int_equal(dml__ckpt_peek(NULL, NULL, NULL), DML_EINVAL);
	assert_int_equal(dml__ckpt_skip(NULL), DML_EINVAL);
	assert_int_equal(dml__ckpt_close(r), 0);
	assert_int_equal(dml__ckpt_close(NULL), DML_EINVAL);
	dml__ckpt_abort(NULL);
}

/* ---- what the caller asks for ---- */

static void test_wrong_tag_or_len(void **state)
{
	(void)state;
	const char *path = in_dir("tags.ckpt");
	save_small(path);
	dml__ckpt_reader *r;
	char abc[4];
	float f[41];
	assert_int_equal(dml__ckpt_open(&r, path, NULL, abc, 0, NULL), DML_EFORMAT);
	char meta[8];
	assert_int_equal(dml__ckpt_open(&r, path, NULL, meta, sizeof meta, NULL), 0);
	assert_int_equal(dml__ckpt_read(r, 2, abc, 3), DML_EFORMAT); /* tag */
	assert_int_equal(dml__ckpt_read(r, 1, abc, 4), DML_EFORMAT); /* length */
	assert_int_equal(dml__ckpt_read(r, 1, abc, 2), DML_EFORMAT);
	assert_int_equal(dml__ckpt_read(r, 1, abc, 3), 0); /* not final: retry */
	assert_memory_equal(abc, "abc", 3);
	assert_int_equal(dml__ckpt_read(r, 2, NULL, 0), 0);
	assert_int_equal(dml__ckpt_read(r, 3, f, sizeof f), DML_EFORMAT);
	assert_int_equal(dml__ckpt_read(r, 3, f, 40 * sizeof(float)), 0);
	assert_int_equal(dml__ckpt_read(r, 4, f, 4), DML_EFORMAT); /* none left */
	assert_int_equal(dml__ckpt_close(r), 0);
}

static void test_peek_skip_unread(void **state)
{
	(void)state;
	const char *path = in_dir("skip.ckpt");
	save_small(path);
	dml__ckpt_reader *r;
	char meta[8];
	uint32_t tag;
	uint64_t len;
	float f[40];
	assert_int_equal(dml__ckpt_open(&r, path, NULL, meta, sizeof meta, NULL), 0);
	assert_int_equal(dml__ckpt_skip(r), 0); /* an optional section */
	assert_int_equal(dml__ckpt_peek(r, &tag, &len), 0);
	assert_int_equal(tag, 2);
	assert_int_equal(len, 0);
	assert_int_equal(dml__ckpt_skip(r), 0);
	assert_int_equal(dml__ckpt_read(r, 3, f, sizeof f), 0);
	assert_memory_equal(f, small_floats, sizeof f);
	assert_int_equal(dml__ckpt_skip(r), DML_ENOTFOUND);
	assert_int_equal(dml__ckpt_close(r), 0);

	/* sections left unread: the file is checked, then DML_EFORMAT */
	assert_int_equal(dml__ckpt_open(&r, path, NULL, meta, sizeof meta, NULL), 0);
	assert_int_equal(dml__ckpt_close(r), DML_EFORMAT);
	assert_int_equal(dml__ckpt_open(&r, path, NULL, meta, sizeof meta, NULL), 0);
	dml__ckpt_abort(r);

	/* ... and if it is corrupt, that wins */
	size_t n;
	uint8_t *b = slurp(path, &n);
	b[n - 5] ^= 0x10; /* a trailer byte */
	spit(path, b, n);
	assert_int_equal(dml__ckpt_open(&r, path, NULL, meta, sizeof meta, NULL), 0);
	assert_int_equal(dml__ckpt_close(r), DML_ECORRUPT);
	free(b);
}

/* ---- damaged files ---- */

/* What a changed byte at `off` must give: docs/checkpoint.md, section 5. */
static int flip_expect(size_t off)
{
	return off < 8 ? DML_EFORMAT : off < 12 ? DML_EVERSION : DML_ECORRUPT;
}

static void test_every_flip_rejected(void **state)
{
	(void)state;
	const char *good = in_dir("good.ckpt"), *bad = in_dir("bad.ckpt");
	save_small(good);
	assert_int_equal(load_small(good), 0);
	size_t n;
	uint8_t *b = slurp(good, &n);
	static const uint8_t masks[] = {1, 2, 4, 8, 16, 32, 64, 128, 0xff};
	for (size_t off = 0; off < n; off++) {
		for (size_t m = 0; m < sizeof masks; m++) {
			b[off] ^= masks[m];
			spit(bad, b, n);
			b[off] ^= masks[m];
			int rc = load_small(bad);
			if (rc != flip_expect(off))
				fail_msg("offset %zu of %zu, mask 0x%02x: %d (%s)", off, n,
				         masks[m], rc, dml_strerror(rc));
		}
	}
	free(b);
}

static void test_every_truncation_rejected(void **state)
{
	(void)state;
	const char *good = in_dir("good.ckpt"), *bad = in_dir("bad.ckpt");
	save_small(good);
	size_t n;
	uint8_t *b = slurp(good, &n);
	for (size_t cut = 0; cut < n; cut++) {
		spit(bad, b, cut);
		int rc = load_small(bad);
		if (rc != DML_ETRUNC)
			fail_msg("cut at %zu of %zu: %d (%s)", cut, n, rc, dml_strerror(rc));
	}
	/* one byte too many */
	b[n] = 0;
	spit(bad, b, n + 1);
	assert_int_equal(load_small(bad), DML_ECORRUPT);
	free(b);
}

static void test_not_a_checkpoint(void **state)
{
	(void)state;
	const char *p = in_dir("other");
	dml__ckpt_reader *r;
	static const char text[] = "# not a checkpoint, but long enough for a header\n";
	spit(p, text, sizeof text - 1);
	assert_int_equal(dml__ckpt_open(&r, p, NULL, NULL, 0, NULL), DML_EFORMAT);
	spit(p, "hi", 2); /* shorter than a header, and not the magic */
	assert_int_equal(dml__ckpt_open(&r, p, NULL, NULL, 0, NULL), DML_EFORMAT);
	spit(p, "", 0); /* an empty file is a checkpoint cut at 0 */
	assert_int_equal(dml__ckpt_open(&r, p, NULL, NULL, 0, NULL), DML_ETRUNC);
	errno = 0;
	assert_int_equal(dml__ckpt_open(&r, in_dir("missing"), NULL, NULL, 0, NULL), DML_EIO);
	assert_int_equal(errno, ENOENT);
	assert_null(r);
	assert_int_equal(mkdir(in_dir("sub"), 0755), 0);
	assert_int_equal(dml__ckpt_open(&r, in_dir("sub"), NULL, NULL, 0, NULL), DML_EIO);
}

/* ---- files built by hand, from docs/checkpoint.md alone ---- */

typedef struct hand {
	uint32_t version, kind, nsec;
	const void *meta;
	uint32_t meta_len;
	const uint8_t *raw; /* the uncompressed stream */
	size_t raw_len;
	const uint8_t *junk; /* bytes after the zlib stream, before the trailer */
	size_t junk_len;
	int64_t file_len_delta; /* a false file_len: this much off */
	uint64_t file_len_claim; /* if nonzero, a false file_len */
	uint32_t meta_len_claim; /* if nonzero, a false meta_len */
} hand;

static size_t raw_section(uint8_t *p, uint32_t tag, uint64_t len_claim,
                          const void *data, size_t n)
{
	memcpy(p, &tag, 4);
	memcpy(p + 4, &len_claim, 8);
	uint32_t c = (uint32_t)crc32(0, p, 12);
	memcpy(p + 12, &c, 4);
	if (n)
		memcpy(p + 16, data, n);
	return 16 + n;
}

static size_t hand_build(uint8_t *out, size_t cap, const hand *h)
{
	uLongf zlen = (uLongf)(cap - 40 - h->meta_len - h->junk_len - 28);
	uint8_t *z = out + 40 + h->meta_len;
	assert_int_equal(compress2(z, &zlen, h->raw, (uLong)h->raw_len, 1), Z_OK);
	if (h->junk_len)
		memcpy(z + zlen, h->junk, h->junk_len);
	uint64_t comp_len = zlen + h->junk_len, raw_len = h->raw_len;
	uint64_t file_len = 40 + h->meta_len + comp_len + 28;
	uint64_t claimed = h->file_len_claim ? h->file_len_claim
	                                     : file_len + (uint64_t)h->file_len_delta;
	uint32_t meta_len = h->meta_len_claim ? h->meta_len_claim : h->meta_len;
	uint32_t meta_crc = (uint32_t)crc32(0, h->meta, h->meta_len);
	memcpy(out, "DMLCKPT", 8);
	memcpy(out + 8, &h->version, 4);
	memcpy(out + 12, &h->kind, 4);
	memcpy(out + 16, &meta_len, 4);
	memcpy(out + 20, &h->nsec, 4);
	memcpy(out + 24, &claimed, 8);
	memcpy(out + 32, &meta_crc, 4);
	uint32_t hc = (uint32_t)crc32(0, out, 36);
	memcpy(out + 36, &hc, 4);
	if (h->meta_len)
		memcpy(out + 40, h->meta, h->meta_len);
	uint8_t *t = z + comp_len;
	memcpy(t, "DMLCKEND", 8);
	memcpy(t + 8, &raw_len, 8);
	memcpy(t + 16, &comp_len, 8);
	uint32_t c = (uint32_t)crc32(0, out + 40, (uInt)(t + 24 - (out + 40)));
	memcpy(t + 24, &c, 4);
	return (size_t)file_len;
}

static void test_hand_built(void **state)
{
	(void)state;
	static uint8_t raw[4096], file[8192];
	const char *p = in_dir("hand.ckpt");
	uint64_t x = 0x1122334455667788ull;
	size_t rl = raw_section(raw, 42, 8, &x, 8);
	rl += raw_section(raw + rl, 43, 3, "xyz", 3);
	hand h = {1, 9, 2, "m", 1, raw, rl, NULL, 0, 0, 0, 0};
	spit(p, file, hand_build(file, sizeof file, &h));

	dml__ckpt_reader *r;
	uint32_t kind;
	char m[4], xyz[3];
	uint64_t y;
	assert_int_equal(dml__ckpt_open(&r, p, &kind, m, sizeof m, NULL), 0);
	assert_int_equal(kind, 9);
	assert_int_equal(dml__ckpt_read(r, 42, &y, 8), 0);
	assert_true(y == x);
	assert_int_equal(dml__ckpt_read(r, 43, xyz, 3), 0);
	assert_memory_equal(xyz, "xyz", 3);
	assert_int_equal(dml__ckpt_close(r), 0);

	/* the header and the file's length disagree */
	hand h2 = h;
	h2.file_len_delta = 1;
	spit(p, file, hand_build(file, sizeof file, &h2));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, m, sizeof m, NULL), DML_ETRUNC);
	h2.file_len_delta = -1;
	spit(p, file, hand_build(file, sizeof file, &h2));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, m, sizeof m, NULL), DML_ECORRUPT);
	h2.file_len_delta = 0;
	h2.file_len_claim = 40 + 1 + 28; /* too short for any zlib stream */
	spit(p, file, hand_build(file, sizeof file, &h2));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, m, sizeof m, NULL), DML_EFORMAT);
	/* a future version; a meta length over the limit */
	h2 = h;
	h2.version = 3;
	spit(p, file, hand_build(file, sizeof file, &h2));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, m, sizeof m, NULL), DML_EVERSION);
	h2 = h;
	h2.meta_len_claim = 1u << 30;
	spit(p, file, hand_build(file, sizeof file, &h2));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, m, sizeof m, NULL), DML_EFORMAT);

	/* bytes after the zlib stream, inside the compressed data */
	h2 = h;
	h2.junk = (const uint8_t *)"??";
	h2.junk_len = 2;
	spit(p, file, hand_build(file, sizeof file, &h2));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, m, sizeof m, NULL), 0);
	assert_int_equal(dml__ckpt_read(r, 42, &y, 8), 0);
	assert_int_equal(dml__ckpt_read(r, 43, xyz, 3), 0);
	assert_int_equal(dml__ckpt_close(r), DML_ECORRUPT);

	/* more uncompressed data than the sections hold */
	h2 = h;
	h2.nsec = 1;
	spit(p, file, hand_build(file, sizeof file, &h2));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, m, sizeof m, NULL), 0);
	assert_int_equal(dml__ckpt_read(r, 42, &y, 8), 0);
	assert_int_equal(dml__ckpt_close(r), DML_ECORRUPT);

	/* more sections claimed than the stream holds */
	h2 = h;
	h2.nsec = 0xffffffffu;
	spit(p, file, hand_build(file, sizeof file, &h2));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, m, sizeof m, NULL), 0);
	assert_int_equal(dml__ckpt_read(r, 42, &y, 8), 0);
	assert_int_equal(dml__ckpt_read(r, 43, xyz, 3), 0);
	assert_int_equal(dml__ckpt_read(r, 44, xyz, 3), DML_ECORRUPT);
	assert_int_equal(dml__ckpt_read(r, 43, xyz, 3), DML_ECORRUPT); /* final */
	assert_int_equal(dml__ckpt_close(r), DML_ECORRUPT);
}

static void test_hostile_section_length(void **state)
{
	(void)state;
	static uint8_t raw[256], file[4096];
	const char *p = in_dir("claim.ckpt");
	/* a section claiming 2^60 bytes with 8 behind it */
	size_t rl = raw_section(raw, 1, (uint64_t)1 << 60, "12345678", 8);
	hand h = {1, 1, 1, NULL, 0, raw, rl, NULL, 0, 0, 0, 0};
	spit(p, file, hand_build(file, sizeof file, &h));
	dml__ckpt_reader *r;
	uint64_t len;
	char b[8];
	assert_int_equal(dml__ckpt_open(&r, p, NULL, NULL, 0, NULL), 0);
	assert_int_equal(dml__ckpt_read(r, 1, b, 8), DML_EFORMAT); /* a claim, checked */
	assert_int_equal(dml__ckpt_peek(r, NULL, &len), 0);
	assert_true(len == (uint64_t)1 << 60);
	assert_int_equal(dml__ckpt_skip(r), DML_ECORRUPT); /* no huge buffer */
	assert_int_equal(dml__ckpt_close(r), DML_ECORRUPT);

	/* a section header whose CRC does not match */
	h.raw_len = raw_section(raw, 1, 8, "12345678", 8);
	raw[12] ^= 1;
	spit(p, file, hand_build(file, sizeof file, &h));
	assert_int_equal(dml__ckpt_open(&r, p, NULL, NULL, 0, NULL), 0);
	assert_int_equal(dml__ckpt_read(r, 1, b, 8), DML_ECORRUPT);
	dml__ckpt_abort(r);
}

/* ---- saving: failures, replacement ---- */

static void test_save_missing_dir(void **state)
{
	(void)state;
	const char *p = in_dir("nowhere/x.ckpt");
	errno = 0;
	assert_int_equal(dml__ckpt_save(p, 1, "m", 1, small_secs, 3, 1), DML_EIO);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(count_entries(dir), 0);
}

static void test_save_replaces(void **state)
{
	(void)state;
	const char *p = in_dir("r.ckpt");
	const dml__ckpt_sec a = {1, "first", 5}, b = {1, "second", 6};
	assert_int_equal(dml__ckpt_save(p, 1, NULL, 0, &a, 1, 1), 0);
	assert_int_equal(dml__ckpt_save(p, 1, NULL, 0, &b, 1, 1), 0);
	assert_int_equal(count_entries(dir), 1);
	dml__ckpt_reader *r;
	char s[6];
	assert_int_equal(dml__ckpt_open(&r, p, NULL, NULL, 0, NULL), 0);
	assert_int_equal(dml__ckpt_read(r, 1, s, 5), DML_EFORMAT);
	assert_int_equal(dml__ckpt_read(r, 1, s, 6), 0);
	assert_memory_equal(s, "second", 6);
	assert_int_equal(dml__ckpt_close(r), 0);

	/* a relative path (the directory to sync is ".") */
	char cwd[512];
	assert_non_null(getcwd(cwd, sizeof cwd));
	assert_int_equal(chdir(dir), 0);
	assert_int_equal(dml__ckpt_save("rel.ckpt", 1, NULL, 0, &a, 1, 1), 0);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(count_entries(dir), 2);

	/* the target is a directory: the rename fails, nothing is left */
	assert_int_equal(mkdir(in_dir("d"), 0755), 0);
	spit(in_dir("d/keep"), "k", 1);
	assert_int_equal(dml__ckpt_save(in_dir("d"), 1, NULL, 0, &a, 1, 1), DML_EIO);
	assert_int_equal(count_entries(dir), 3);
	unlink(in_dir("d/keep"));
}

/* A save that fails half-way (the file-size limit) leaves the old file. */
static void test_failed_save_keeps_old(void **state)
{
	(void)state;
	const char *p = in_dir("keep.ckpt");
	save_small(p);
	const size_t nf = 1 << 20; /* 4 MB that do not compress */
	float *v = random_floats(nf);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = {1 << 20, 1 << 20};
		signal(SIGXFSZ, SIG_IGN);
		if (setrlimit(RLIMIT_FSIZE, &rl))
			_exit(2);
		const dml__ckpt_sec sec = {1, v, nf * sizeof *v};
		errno = 0;
		int rc = dml__ckpt_save(p, 1, NULL, 0, &sec, 1, 1);
		_exit(rc == DML_EIO && errno == EFBIG ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(load_small(p), 0);
	assert_int_equal(count_entries(dir), 1); /* the temporary file is gone */
	free(v);
}

/* Threads saving the same path at once get distinct temporary files. */
typedef struct saver {
	pthread_t t;
	int id, rc;
	const char *path; /* in_dir's buffers are not for threads */
} saver;

static void *save_thread(void *arg)
{
	saver *s = arg;
	uint32_t v[1024];
	for (int i = 0; i < 1024; i++)
		v[i] = (uint32_t)(s->id * 100000 + i);
	const dml__ckpt_sec sec = {1, v, sizeof v};
	for (int i = 0; i < 5 && !s->rc; i++)
		s->rc = dml__ckpt_save(s->path, (uint32_t)s->id, NULL, 0, &sec, 1, 1);
	return NULL;
}

static void test_concurrent_saves(void **state)
{
	(void)state;
	saver s[4];
	char path[600];
	snprintf(path, sizeof path, "%s", in_dir("conc.ckpt"));
	for (int i = 0; i < 4; i++) {
		s[i].id = i;
		s[i].rc = 0;
		s[i].path = path;
		assert_int_equal(pthread_create(&s[i].t, NULL, save_thread, &s[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(s[i].t, NULL);
		assert_int_equal(s[i].rc, 0);
	}
	dml__ckpt_reader *r;
	uint32_t kind, v[1024];
	assert_int_equal(dml__ckpt_open(&r, in_dir("conc.ckpt"), &kind, NULL, 0, NULL), 0);
	assert_true(kind < 4);
	assert_int_equal(dml__ckpt_read(r, 1, v, sizeof v), 0);
	assert_int_equal(dml__ckpt_close(r), 0);
	for (int i = 0; i < 1024; i++)
		assert_int_equal(v[i], kind * 100000 + (uint32_t)i);
	assert_int_equal(count_entries(dir), 1);
}

/* ---- a writer killed mid-save ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Busy-waits (no sleep: the point is to land anywhere in a save). */
static void spin(double seconds)
{
	double end = now_s() + seconds;
	while (now_s() < end)
		;
}

enum { KIND_A = 0xA, KIND_B = 0xB };

/* Loads `p`, which must be exactly A or B. Returns its kind. */
static uint32_t load_a_or_b(const char *p, const float *a, size_t na,
                            const float *b, size_t nb, float *buf)
{
	dml__ckpt_reader *r;
	uint32_t kind;
	uint64_t n;
	assert_int_equal(dml__ckpt_open(&r, p, &kind, &n, sizeof n, NULL), 0);
	assert_true(kind == KIND_A || kind == KIND_B);
	const float *want = kind == KIND_A ? a : b;
	assert_true(n == (kind == KIND_A ? na : nb));
	assert_int_equal(dml__ckpt_read(r, 1, buf, n * sizeof(float)), 0);
	assert_int_equal(dml__ckpt_close(r), 0);
	assert_memory_equal(buf, want, n * sizeof(float));
	return kind;
}

static void test_sigkill_mid_save(void **state)
{
	(void)state;
	const size_t na = 16384, nb = 6u << 20; /* 64 KB and 24 MB */
	float *a = random_floats(na), *b = random_floats(nb);
	float *buf = malloc(nb * sizeof *buf);
	assert_non_null(buf);
	uint64_t mna = na, mnb = nb;
	const dml__ckpt_sec sa = {1, a, na * sizeof *a}, sb = {1, b, nb * sizeof *b};
	const char *p = in_dir("kill.ckpt");

	/* How long one save of B takes here, to spread the kills over it.
	 * B is stored uncompressed (level 0) to keep saves short: the file
	 * handling, which is what a kill can break, is the same at every level. */
	const char *probe = in_dir("probe.ckpt");
	double t0 = now_s();
	assert_int_equal(dml__ckpt_save(probe, KIND_B, &mnb, 8, &sb, 1, 0), 0);
	double t_save = now_s() - t0;
	unlink(probe);
	/* Keep it bounded where saves are slow (valgrind). */
	int rounds = t_save < 0.25 ? 10 : 3;

	int got[2] = {0, 0}, stray = 0;
	for (int i = 0; i < rounds; i++) {
		assert_int_equal(dml__ckpt_save(p, KIND_A, &mna, 8, &sa, 1, 1), 0);
		int fds[2];
		assert_int_equal(pipe(fds), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			for (;;) {
				if (write(fds[1], "s", 1) != 1)
					_exit(1);
				dml__ckpt_save(p, KIND_B, &mnb, 8, &sb, 1, 0);
			}
		}
		close(fds[1]);
		/* The child is inside (or entering) its k-th save. Then wait 0 to
		 * 2.5 probe saves (the child's take longer than the probe), so
		 * that kills land in the writes, the fsync, the rename, or
		 * between two saves. */
		int k = 1 + (i % 2);
		char c;
		for (int j = 0; j < k; j++)
			assert_int_equal(read(fds[0], &c, 1), 1);
		spin(t_save * (double)(next_rand() % 2500) / 1000.0);
		assert_int_equal(kill(pid, SIGKILL), 0);
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		close(fds[0]);
		got[load_a_or_b(p, a, na, b, nb, buf) == KIND_B]++;
		stray += clear_dir(dir, "kill.ckpt");
	}
	print_message("sigkill: %d rounds (save %.0f ms): A %d, B %d, %d stray temp files\n",
	              rounds, t_save * 1000, got[0], got[1], stray);
	free(a);
	free(b);
	free(buf);
}

/* ---- shared directories: planted names, links, FIFOs, forgeries ---- */

/* Another user who creates the names a save would use in advance (the
 * pid-and-counter names of 0.3) cannot make it fail: the names are random. */
static void test_planted_temporaries(void **state)
{
	(void)state;
	const char *p = in_dir("plant.ckpt");
	char name[600];
	for (int i = 0; i < 2000; i++) { /* beyond this process's saves so far */
		snprintf(name, sizeof name, "%s.tmp.%ld.%d", p, (long)getpid(), i);
		spit(name, "x", 1);
	}
	save_small(p);
	assert_int_equal(load_small(p), 0);
	assert_int_equal(count_entries(dir), 2001); /* no temporary left */
}

/* New checkpoints are the owner's alone, whatever the umask allows. */
static void test_private_mode(void **state)
{
	(void)state;
	mode_t old = umask(022);
	const char *p = in_dir("mode.ckpt");
	save_small(p);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	dml__ckpt_opts o = {.mode = 0640};
	assert_int_equal(dml__ckpt_save_with(p, 7, small_meta, sizeof small_meta,
	                                     small_secs, 3, 1, &o), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	o.mode = 01000;
	assert_int_equal(dml__ckpt_save_with(p, 7, NULL, 0, small_secs, 3, 1, &o),
	                 DML_EINVAL);
	umask(old);
}

/* A symbolic link at the checkpoint path is refused on load (it could
 * point at another user's file), and a save replaces the link itself. */
static void test_symlink_refused(void **state)
{
	(void)state;
	const char *real = in_dir("real.ckpt"), *link = in_dir("link.ckpt");
	save_small(real);
	assert_int_equal(symlink(real, link), 0);
	errno = 0;
	assert_int_equal(load_small(link), DML_EIO);
	assert_int_equal(errno, ELOOP);
	assert_non_null(strstr(dml_error_detail(), "symbolic link"));
	const dml__ckpt_sec s = {1, "new", 3};
	assert_int_equal(dml__ckpt_save(link, 1, NULL, 0, &s, 1, 1), 0);
	struct stat st;
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISREG(st.st_mode)); /* the link was replaced ... */
	assert_int_equal(load_small(real), 0); /* ... and its target untouched */
}

/* A FIFO at the path fails the load at once instead of hanging it (an
 * alarm ends the test if it hangs). */
static void test_fifo_refused(void **state)
{
	(void)state;
	const char *p = in_dir("fifo.ckpt");
	assert_int_equal(mkfifo(p, 0600), 0);
	alarm(20);
	errno = 0;
	assert_int_equal(load_small(p), DML_EIO);
	alarm(0);
	assert_int_equal(errno, EINVAL);
	assert_non_null(strstr(dml_error_detail(), "FIFO"));
}

static const char key1[] = "a key of the training job, 32 B.";
static const char key2[] = "another key, of somebody else...";

static int save_keyed(const char *path, const char *key)
{
	dml__ckpt_opts o = {key, key ? strlen(key) : 0, 0};
	return dml__ckpt_save_with(path, 7, small_meta, sizeof small_meta,
	                           small_secs, 3, DML__CKPT_LEVEL_DEFAULT, &o);
}

/* load_small under a key (NULL: none), without checking the contents: 0
 * or the first error. */
static int load_keyed(const char *path, const char *key)
{
	dml__ckpt_opts o = {key, key ? strlen(key) : 0, 0};
	dml__ckpt_reader *r;
	char meta[64], abc[3];
	float f[40];
	int rc = dml__ckpt_open_with(&r, path, NULL, meta, sizeof meta, NULL, &o);
	if (rc)
		return rc;
	if ((rc = dml__ckpt_read(r, 1, abc, 3)) || (rc = dml__ckpt_read(r, 2, NULL, 0)) ||
	    (rc = dml__ckpt_read(r, 3, f, sizeof f))) {
		dml__ckpt_abort(r);
		return rc;
	}
	return dml__ckpt_close(r);
}

/* Rewrites the header's and the trailer's checksums of a file in b, as a
 * forger who knows the format would after changing bytes. */
static void fix_crcs(uint8_t *b, size_t n, size_t mac_len)
{
	uint32_t meta_len;
	memcpy(&meta_len, b + 16, 4);
	uint32_t mc = (uint32_t)crc32(0, b + 40, meta_len);
	memcpy(b + 32, &mc, 4);
	uint32_t hc = (uint32_t)crc32(0, b, 36);
	memcpy(b + 36, &hc, 4);
	uint8_t *t = b + n - mac_len - 28;
	uint32_t c = (uint32_t)crc32(0, b + 40, (uInt)(t + 24 - (b + 40)));
	memcpy(t + 24, &c, 4);
}

/* Under a key, only files signed with it load: a planted unsigned file,
 * one signed with another key, and one whose bytes were changed with
 * every checksum fixed up are refused with DML_EAUTH. */
static void test_mac(void **state)
{
	(void)state;
	const char *p = in_dir("mac.ckpt"), *q = in_dir("forged.ckpt");
	if (!dml_tls_available()) { /* no OpenSSL: keys are refused */
		assert_int_equal(save_keyed(p, key1), DML_ENOTSUP);
		return;
	}
	assert_int_equal(save_keyed(p, key1), 0);
	assert_int_equal(load_keyed(p, key1), 0);
	assert_int_equal(load_small(p), 0); /* no key: the CRC alone */
	size_t n;
	uint8_t *b = slurp(p, &n);
	uint32_t version;
	memcpy(&version, b + 8, 4);
	assert_int_equal(version, DML__CKPT_VERSION_MAC);

	assert_int_equal(load_keyed(p, key2), DML_EAUTH);
	assert_non_null(strstr(dml_error_detail(), "MAC"));
	save_small(q); /* planted: a sound file without a MAC */
	assert_int_equal(load_keyed(q, key1), DML_EAUTH);
	assert_non_null(strstr(dml_error_detail(), "not signed"));
	assert_int_equal(save_keyed(q, key2), 0); /* signed by someone else */
	assert_int_equal(load_keyed(q, key1), DML_EAUTH);

	/* the meta changed, every CRC fixed: only the MAC can tell */
	b[40] ^= 1;
	fix_crcs(b, n, 32);
	spit(q, b, n);
	assert_int_equal(load_keyed(q, NULL), 0); /* the CRCs are sound */
	assert_int_equal(load_keyed(q, key1), DML_EAUTH);
	b[40] ^= 1;
	fix_crcs(b, n, 32);
	/* a forged MAC byte, and every flipped bit anywhere */
	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			b[i] ^= (uint8_t)(1u << bit);
			spit(q, b, n);
			int rc = load_keyed(q, key1);
			if (rc != DML_EAUTH && rc != DML_ECORRUPT && rc != DML_EFORMAT &&
			    rc != DML_EVERSION && rc != DML_ETRUNC)
				fail_msg("flip of bit %d at %zu of %zu: %d", bit, i, n, rc);
			b[i] ^= (uint8_t)(1u << bit);
		}
	}
	spit(q, b, n);
	assert_int_equal(load_keyed(q, key1), 0);
	free(b);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)
	const struct CMUnitTest tests[] = {
		T(test_roundtrip),
		T(test_levels_and_empty),
		T(test_meta_limits),
		T(test_bad_args),
		T(test_wrong_tag_or_len),
		T(test_peek_skip_unread),
		T(test_every_flip_rejected),
		T(test_every_truncation_rejected),
		T(test_not_a_checkpoint),
		T(test_hand_built),
		T(test_hostile_section_length),
		T(test_save_missing_dir),
		T(test_save_replaces),
		T(test_failed_save_keeps_old),
		T(test_concurrent_saves),
		T(test_sigkill_mid_save),
		T(test_planted_temporaries),
		T(test_private_mode),
		T(test_symlink_refused),
		T(test_fifo_refused),
		T(test_mac),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}

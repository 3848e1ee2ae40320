/*
 * fuzz_ckpt.c - the checkpoint reader (lib/ckpt.c, through its internal
 * API dml__ckpt_open/peek/read/skip/close) and the parameter store's loader
 * (dml_ps_load) on arbitrary files.
 *
 * Every byte of a checkpoint is checksummed, so random bytes never get past
 * the header. Most inputs therefore describe a file that the harness builds
 * and seals, optionally damaging it afterwards:
 *
 * Input: [mode][flags][level/store][nsec][meta_len u16][pos u16][xor][kind]
 *        [meta...][body...]
 *   mode   (mode & 3) == 0: the rest of the input is the file, as is;
 *          bit 2: with flags bit 0, a last section whose length runs past
 *          the body is filled out by repeating its bytes (up to 256 KiB:
 *          sections larger than the reader's buffers)
 *   flags  bit 0: body = the uncompressed sections, compressed here at
 *                 `level` (else body = the compressed data, used as is);
 *          bit 1: seal the section headers' CRCs in the body;
 *          bit 2: nsec = the sections found in the body (else `nsec`);
 *          bit 3: kind = the parameter store's (else `kind`);
 *          bit 4: a parameter-store meta (88 bytes) for `store`;
 *          bit 5: then flip the bits `xor` of byte `pos`;
 *          bit 6: then cut the file at `pos`;
 *          bit 7: the trailer's raw length one too large
 *   level/store  bits 0-3: zlib level (value % 11 - 1: -1 is the library's
 *          default); bits 4-7: the store to load into (4 dims x 4 rules)
 *
 * The reader's verdict must match a reference reader written from
 * docs/checkpoint.md (section 7's checks): a file it accepts must be valid,
 * with the same sections; a valid file must be accepted. dml_ps_load must
 * load exactly the files that fit the store, and change nothing otherwise.
 */
#include "fuzz_util.h"

#include "ckpt.h"

#define HDR 40
#define TRL 28
#define PS_KIND 0x53504d44u /* "DMPS" (lib/ps.c) */
#define PS_META 88
#define RAW_MAX ((size_t)8 << 20) /* the reference inflates this much */
#define SEC_MAX ((size_t)1 << 20) /* sections read, not skipped */
#define MAX_SECS 64               /* sections compared */

static fz_file file = FZ_REAL_FILE_INIT; /* checkpoint loads refuse links */

static uint32_t crc(const void *p, size_t n)
{
	return (uint32_t)crc32(0, p, (uInt)n);
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Inflates a zlib stream into a new buffer: 1 if it ends exactly at the
 * end of the input, 0 if not, -1 if it yields more than RAW_MAX bytes. */
static int inflate_all(const uint8_t *p, size_t n, uint8_t **out, size_t *len)
{
	z_stream zs;
	memset(&zs, 0, sizeof zs);
	FZ_CHECK(inflateInit(&zs) == Z_OK);
	size_t cap = 4096;
	uint8_t *b = malloc(cap);
	FZ_CHECK(b);
	zs.next_in = (Bytef *)(uintptr_t)p;
	zs.avail_in = (uInt)n;
	int zr, res;
	for (;;) {
		if (zs.total_out == cap) {
			if (cap >= RAW_MAX) {
				res = -1;
				break;
			}
			cap *= 2;
			b = realloc(b, cap);
			FZ_CHECK(b);
		}
		zs.next_out = b + zs.total_out;
		zs.avail_out = (uInt)(cap - zs.total_out);
		zr = inflate(&zs, Z_NO_FLUSH);
		if (zr == Z_STREAM_END) {
			res = zs.avail_in == 0;
			break;
		}
		if (zr != Z_OK && !(zr == Z_BUF_ERROR && zs.avail_out == 0)) {
			res = 0;
			break;
		}
	}
	*len = zs.total_out;
	*out = b;
	inflateEnd(&zs);
	return res;
}

/* ---- the reference reader (docs/checkpoint.md, section 7) ---- */

typedef struct sec {
	uint32_t tag;
	uint64_t len;
	const uint8_t *data;
} sec;

typedef struct ref {
	uint32_t kind, meta_len, nsec;
	const uint8_t *meta;
	uint8_t *raw;
	sec secs[MAX_SECS];
} ref;

/* 1 valid, 0 not, -1 too large to tell. */
static int ref_read(ref *r, const uint8_t *d, size_t n)
{
	static const uint8_t magic[8] = "DMLCKPT", end[8] = {'D', 'M', 'L', 'C', 'K', 'E', 'N', 'D'};
	memset(r, 0, sizeof *r);
	uint32_t version = n >= HDR ? get32(d + 8) : 0;
	if (n < HDR || memcmp(d, magic, 8) || (version != 1 && version != 2) ||
	    crc(d, 36) != get32(d + 36))
		return 0;
	size_t mac = version == 2 ? 32 : 0; /* a MAC after the trailer: no key
	                                      here, so only its room counts */
	r->kind = get32(d + 12);
	r->meta_len = get32(d + 16);
	r->nsec = get32(d + 20);
	uint64_t file_len = get64(d + 24);
	if (r->meta_len > 65536 || file_len < HDR + (uint64_t)r->meta_len + 8 + TRL + mac ||
	    n != file_len)
		return 0;
	r->meta = d + HDR;
	if (crc(r->meta, r->meta_len) != get32(d + 32))
		return 0;
	const uint8_t *t = d + n - mac - TRL, *comp = d + HDR + r->meta_len;
	size_t comp_len = n - mac - HDR - r->meta_len - TRL;
	if (memcmp(t, end, 8) || get64(t + 16) != comp_len ||
	    crc(d + HDR, n - mac - HDR - 4) != get32(t + 24))
		return 0;
	size_t raw_len;
	int rc = inflate_all(comp, comp_len, &r->raw, &raw_len);
	if (rc <= 0)
		return rc;
	if (raw_len != get64(t + 8))
		return 0;
	size_t pos = 0;
	for (uint32_t i = 0; i < r->nsec; i++) {
		if (raw_len - pos < 16)
			return 0;
		const uint8_t *s = r->raw + pos;
		uint64_t len = get64(s + 4);
		if (crc(s, 12) != get32(s + 12) || len > raw_len - pos - 16)
			return 0;
		if (i < MAX_SECS)
			r->secs[i] = (sec){get32(s), len, s + 16};
		pos += 16 + (size_t)len;
	}
	return pos == raw_len;
}

/* ---- building a file from the input ---- */

typedef struct store_cfg {
	size_t dim;
	dml_optim_kind rule;
} store_cfg;

static store_cfg store_of(unsigned s)
{
	static const size_t dims[4] = {1, 2, 4, 7};
	return (store_cfg){dims[s & 3], (dml_optim_kind)(s >> 2 & 3)};
}

/* Seals the CRCs of the section headers in a raw stream; counts them. */
static uint32_t seal_sections(uint8_t *raw, size_t n, int seal)
{
	uint32_t k = 0;
	for (size_t pos = 0; n - pos >= 16; k++) {
		if (seal)
			put32(raw + pos + 12, crc(raw + pos, 12));
		uint64_t len = get64(raw + pos + 4);
		if (len > n - pos - 16) {
			k++;
			break;
		}
		pos += 16 + (size_t)len;
	}
	return k;
}

#define FILL_MAX ((size_t)256 << 10)

/* Extends the raw stream so that its last section, if cut short, gets all
 * the bytes its header claims (by repeating those it has), within
 * FILL_MAX. */
static uint8_t *fill_sections(uint8_t *raw, size_t *n)
{
	size_t pos = 0;
	while (*n - pos >= 16) {
		uint64_t len = get64(raw + pos + 4);
		size_t have = *n - pos - 16;
		if (len <= have) {
			pos += 16 + (size_t)len;
			continue;
		}
		if (len > FILL_MAX - (pos + 16))
			break;
		uint8_t *more = fz_cycle(raw + pos + 16, have, (size_t)len);
		uint8_t *r = realloc(raw, pos + 16 + (size_t)len + 1);
		FZ_CHECK(r);
		memcpy(r + pos + 16, more, (size_t)len);
		free(more);
		*n = pos + 16 + (size_t)len;
		return r;
	}
	return raw;
}

static uint8_t *deflate_all(const uint8_t *p, size_t n, int level, size_t *len)
{
	return fz_deflate(p, n, level < 0 ? 1 : level, 15,
	                  level < 0 ? Z_RLE : Z_DEFAULT_STRATEGY, len);
}

static uint8_t *build(fz *in, unsigned *store, size_t *flen)
{
	uint8_t mode = fz_u8(in), flags = fz_u8(in), ls = fz_u8(in);
	uint8_t nsec8 = fz_u8(in);
	uint16_t meta_len = fz_u16(in), pos = fz_u16(in);
	uint8_t xr = fz_u8(in), kind8 = fz_u8(in);
	*store = ls >> 4;
	if ((mode & 3) == 0) { /* the file as given */
		size_t n;
		const uint8_t *p = fz_take(in, SIZE_MAX, &n);
		uint8_t *f = malloc(n + 1);
		FZ_CHECK(f);
		memcpy(f, p, n);
		*flen = n;
		return f;
	}
	if (flags & 16)
		meta_len = PS_META;
	size_t mlen, blen;
	const uint8_t *mp = fz_take(in, meta_len, &mlen);
	uint8_t meta[PS_META];
	if (flags & 16) {
		store_cfg sc = store_of(*store);
		memset(meta, 0, sizeof meta);
		memcpy(meta, mp, mlen);
		put64(meta, sc.dim);
		put32(meta + 24, (uint32_t)sc.rule);
		mp = meta;
		mlen = PS_META;
	}
	const uint8_t *bp = fz_take(in, SIZE_MAX, &blen);
	uint8_t *body = malloc(blen + 1), *comp = NULL;
	FZ_CHECK(body);
	memcpy(body, bp, blen);
	size_t clen, raw_len = 0;
	uint32_t nsec = nsec8;
	if (flags & 1) {
		if (mode & 4)
			body = fill_sections(body, &blen);
		uint32_t k = seal_sections(body, blen, flags & 2);
		if (flags & 4)
			nsec = k;
		comp = deflate_all(body, blen, (ls & 15) % 11 - 1, &clen);
		raw_len = blen;
		free(body);
	} else {
		uint8_t *raw;
		if (inflate_all(body, blen, &raw, &raw_len) >= 0) {
			if (flags & 4)
				nsec = seal_sections(raw, raw_len, 0);
		}
		free(raw);
		comp = body;
		clen = blen;
	}
	size_t n = HDR + mlen + clen + TRL;
	uint8_t *f = malloc(n);
	FZ_CHECK(f);
	memcpy(f, "DMLCKPT", 8);
	put32(f + 8, 1);
	put32(f + 12, flags & 8 ? PS_KIND : kind8);
	put32(f + 16, (uint32_t)mlen);
	put32(f + 20, nsec);
	put64(f + 24, n);
	put32(f + 32, crc(mp, mlen));
	put32(f + 36, crc(f, 36));
	memcpy(f + HDR, mp, mlen);
	memcpy(f + HDR + mlen, comp, clen);
	free(comp);
	uint8_t *t = f + n - TRL;
	memcpy(t, "DMLCKEND", 8);
	put64(t + 8, raw_len + (flags >> 7));
	put64(t + 16, clen);
	put32(t + 24, crc(f + HDR, n - HDR - 4));
	if (flags & 32)
		f[pos % n] ^= xr;
	if (flags & 64)
		n = pos % n;
	*flen = n;
	return f;
}

/* ---- the checks ---- */

static int final_error(int rc)
{
	return rc == DML_ECORRUPT || rc == DML_ETRUNC || rc == DML_EIO ||
	       rc == DML_ENOMEM;
}

/* Reads the file through the internal API: 1 if every check passed. The
 * sections read are compared with the reference's when it says valid. */
static int read_ckpt(const ref *rf, int valid)
{
	uint8_t *meta = malloc(DML__CKPT_META_MAX);
	FZ_CHECK(meta);
	dml__ckpt_reader *r = (dml__ckpt_reader *)(uintptr_t)1;
	uint32_t kind = 0, mlen = 0;
	int rc = dml__ckpt_open(&r, file.path, &kind, meta, DML__CKPT_META_MAX,
	                        &mlen);
	if (rc) {
		FZ_CHECK(r == NULL);
		FZ_CHECK(rc == DML_ETRUNC || rc == DML_EFORMAT ||
		         rc == DML_EVERSION || rc == DML_ECORRUPT);
		free(meta);
		return 0;
	}
	FZ_CHECK(mlen <= DML__CKPT_META_MAX);
	if (valid == 1) {
		FZ_CHECK(kind == rf->kind && mlen == rf->meta_len);
		FZ_CHECK(memcmp(meta, rf->meta, mlen) == 0);
	}
	free(meta);
	uint8_t dummy[1];
	for (uint32_t i = 0;; i++) {
		uint32_t tag;
		uint64_t len;
		rc = dml__ckpt_peek(r, &tag, &len);
		if (rc == DML_ENOTFOUND)
			break;
		if (rc)
			break;
		/* another tag or length: refused, and the section stays next */
		FZ_CHECK(dml__ckpt_read(r, tag ^ 1, len ? dummy : NULL, len) ==
		         DML_EFORMAT);
		if (valid == 1 && i < MAX_SECS)
			FZ_CHECK(rf->secs[i].tag == tag && rf->secs[i].len == len);
		if (len > SEC_MAX) {
			rc = dml__ckpt_skip(r);
		} else {
			uint8_t *buf = malloc(len ? (size_t)len : 1);
			FZ_CHECK(buf);
			rc = dml__ckpt_read(r, tag, len ? buf : NULL, len);
			if (!rc && valid == 1 && i < MAX_SECS)
				FZ_CHECK(!len || !memcmp(buf, rf->secs[i].data, len));
			free(buf);
		}
		if (rc)
			break;
	}
	if (rc && rc != DML_ENOTFOUND) {
		/* errors are final */
		FZ_CHECK(final_error(rc));
		FZ_CHECK(dml__ckpt_peek(r, NULL, NULL) == rc);
		FZ_CHECK(dml__ckpt_close(r) == rc);
		return 0;
	}
	rc = dml__ckpt_close(r);
	FZ_CHECK(rc == 0 || final_error(rc));
	return rc == 0;
}

/* The optional exactly-once section (tag 4, docs/ps.md): a count n <= 4096,
 * then n records of 4 u64 with a nonzero client id. */
static int dedup_ok(const uint8_t *p, uint64_t len)
{
	if (len < 8)
		return 0;
	uint64_t n = get64(p);
	if (n > 4096 || len != 8 + n * 32)
		return 0;
	for (uint64_t k = 0; k < n; k++)
		if (!get64(p + 8 + k * 32))
			return 0;
	return 1;
}

/* dml_ps_load loads exactly the checkpoints that fit the store. */
static void load_ps(unsigned store, const ref *rf, int valid)
{
	store_cfg sc = store_of(store);
	float init[8];
	for (size_t i = 0; i < sc.dim; i++)
		init[i] = (float)i + 0.5f;
	dml_ps_opts o;
	memset(&o, 0, sizeof o);
	o.init = init;
	o.optim.kind = sc.rule;
	o.stripes = store & 1 ? 1 : 2;
	dml_ps *ps;
	FZ_CHECK(dml_ps_new(&ps, sc.dim, &o) == 0);
	int nstate = dml_optim_state_floats(&o.optim);
	/* 0.2's 88-byte meta or 0.3's 96 (l1, beta); the parameters and state,
	 * then the optional exactly-once section */
	int fits = valid == 1 && rf->kind == PS_KIND &&
	           (rf->meta_len == PS_META || rf->meta_len == PS_META + 8) &&
	           get64(rf->meta) == sc.dim &&
	           get32(rf->meta + 24) == (uint32_t)sc.rule &&
	           (rf->nsec == (uint32_t)nstate + 1 ||
	            (rf->nsec == (uint32_t)nstate + 2 &&
	             rf->secs[nstate + 1].tag == 4 &&
	             dedup_ok(rf->secs[nstate + 1].data, rf->secs[nstate + 1].len)));
	for (int j = 0; fits && j <= nstate; j++)
		fits = rf->secs[j].tag == 1u + (uint32_t)j &&
		       rf->secs[j].len == sc.dim * 4;
	int rc = dml_ps_load(ps, file.path);
	float w[8];
	uint64_t updates;
	FZ_CHECK(dml_ps_pull(ps, w) == 0);
	FZ_CHECK(dml_ps_updates(ps, &updates) == 0);
	if (rc == 0) {
		FZ_CHECK(valid == 1);
		FZ_CHECK(fits);
		FZ_CHECK(memcmp(w, rf->secs[0].data, sc.dim * 4) == 0);
		FZ_CHECK(updates == get64(rf->meta + 16));
	} else {
		FZ_CHECK(rc == DML_EDIM || rc == DML_ETYPE || rc == DML_ETRUNC ||
		         rc == DML_ECORRUPT || rc == DML_EFORMAT ||
		         rc == DML_EVERSION);
		FZ_CHECK(!fits);
		FZ_CHECK(memcmp(w, init, sc.dim * 4) == 0 && updates == 0);
	}
	dml_ps_free(ps);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz in = {data, size};
	unsigned store;
	size_t n;
	uint8_t *f = build(&in, &store, &n);
	fz_file_set(&file, f, n);
	ref rf;
	int valid = ref_read(&rf, f, n);
	int ok = read_ckpt(&rf, valid);
	if (valid >= 0)
		FZ_CHECK(ok == valid);
	load_ps(store, &rf, valid);
	free(rf.raw);
	free(f);
	return 0;
}

/*
 * fuzz_idx.c - the IDX reader (dml_dataset_new_idx, lib/data_idx.c) on
 * arbitrary files, plain or gzip, with or without a labels file.
 *
 * Input: [flags][classes][opts][level][split u16][cut u16][body...]
 *   flags  bits 0-1: how the images file is stored (0 plain, 1 gzip,
 *          2 gzip cut at `cut`, 3 gzip with a bit flipped at `cut`);
 *          bit 2: a labels file; bits 3-4: how it is stored; bit 5:
 *          raw_pixels; bit 6: remap_labels; bit 7: opts.classes = classes
 *   opts   bits 0-1: max_bytes (default, 1 KiB, 64 KiB, 16 MiB);
 *          bits 2-3: the size of the error buffer (none, 1, 24, 256);
 *          bits 4-5: fill each file out to the size its header declares
 *          (0: no; 1: exactly; 2: one byte short; 3: one byte over) by
 *          repeating the bytes after the header, at most 512 KiB
 *   body   the images file; with labels, its first `split` bytes (modulo
 *          the body's length + 1), the labels file the rest
 *
 * A load must succeed or fail with a documented code, leave *out alone on
 * failure and say why in `err`; a data set it returns must hold exactly
 * the values of the (uncompressed) files.
 */
#include "fuzz_util.h"

static fz_file images = FZ_FILE_INIT, labels = FZ_FILE_INIT;

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/* The data set holds the values of the plain images and labels files. */
static void check_content(dml_dataset *ds, const uint8_t *img, size_t ilen,
                          const uint8_t *lab, size_t llen, int have_labels,
                          int raw)
{
	FZ_CHECK(ilen >= 4 && img[0] == 0 && img[1] == 0);
	int type = img[2], nd = img[3];
	FZ_CHECK((type == 0x08 || type == 0x0D) && nd >= 2 && nd <= 4);
	size_t off = 4 + 4 * (size_t)nd, es = type == 0x08 ? 1 : 4;
	FZ_CHECK(ilen >= off);
	size_t n = be32(img + 4), dim = 1;
	for (int d = 1; d < nd; d++)
		dim *= be32(img + 4 + 4 * d);
	FZ_CHECK(dml_dataset_rows(ds) == n && dml_dataset_dim(ds) == dim);
	FZ_CHECK(!dml_dataset_is_sparse(ds));
	FZ_CHECK(ilen - off == n * dim * es); /* trailing bytes are an error */
	dml_batch b;
	FZ_CHECK(dml_dataset_batch(ds, 0, n, &b) == 0);
	for (size_t i = 0; i < n * dim; i++) {
		const uint8_t *p = img + off + i * es;
		float v;
		if (es == 4) {
			uint32_t u = be32(p);
			memcpy(&v, &u, 4);
		} else {
			v = raw ? (float)p[0] : (float)p[0] / 255.0f;
		}
		FZ_CHECK(memcmp(&v, &b.x[i], 4) == 0);
	}
	if (!have_labels) {
		for (size_t i = 0; i < n; i++)
			FZ_CHECK(b.y[i] == 0);
		/* no classes, remap_labels or not (nothing to remap) */
		FZ_CHECK(dml_dataset_classes(ds) == 0);
		return;
	}
	FZ_CHECK(llen == 8 + n && lab[0] == 0 && lab[1] == 0 && lab[2] == 0x08 &&
	         lab[3] == 1 && be32(lab + 4) == n);
	const float *cv = dml_dataset_class_values(ds);
	for (size_t i = 0; i < n; i++) {
		/* after a remap, class values map the labels back */
		float l = cv ? cv[(size_t)b.y[i]] : b.y[i];
		FZ_CHECK(l == (float)lab[8 + i]);
	}
}

/* Whether plain IDX files are valid (include/distml/data.h), limits of
 * memory aside: the library must then load them. */
static int idx_valid(const uint8_t *img, size_t ilen, const uint8_t *lab,
                     size_t llen, int have_labels, size_t classes)
{
	if (ilen < 4 || img[0] || img[1] || (img[2] != 0x08 && img[2] != 0x0D) ||
	    img[3] < 2 || img[3] > 4)
		return 0;
	size_t nd = img[3], off = 4 + 4 * nd, es = img[2] == 0x08 ? 1 : 4;
	if (ilen < off)
		return 0;
	uint64_t n = be32(img + 4), row = 1, count, bytes;
	for (size_t d = 1; d < nd; d++) {
		uint64_t k = be32(img + 4 + 4 * d);
		if (k == 0 || __builtin_mul_overflow(row, k, &row))
			return 0;
	}
	if (__builtin_mul_overflow(row, n, &count) ||
	    __builtin_mul_overflow(count, es, &bytes) || bytes != ilen - off)
		return 0;
	for (uint64_t i = 0; es == 4 && i < count; i++) {
		uint32_t u = be32(img + off + 4 * i);
		float v;
		memcpy(&v, &u, 4);
		if (!isfinite(v))
			return 0;
	}
	if (!have_labels)
		return 1;
	if (llen != 8 + n || lab[0] || lab[1] || lab[2] != 0x08 || lab[3] != 1 ||
	    be32(lab + 4) != n)
		return 0;
	for (uint64_t i = 0; classes && i < n; i++)
		if (lab[8 + i] >= classes)
			return 0;
	return 1;
}

#define FILL_MAX ((uint64_t)512 << 10)

/* An IDX file filled out to the size its header declares, plus `delta`
 * bytes (-1, 0, 1), by repeating its data; as is if its header is cut. */
static uint8_t *fill_idx(const uint8_t *p, size_t n, int delta, size_t *len)
{
	size_t off = n >= 4 ? 4 + 4 * (size_t)p[3] : SIZE_MAX;
	if (off > n || p[3] == 0) {
		*len = n;
		return fz_cycle(p, n, n);
	}
	uint64_t want = p[2] == 0x0D ? 4 : 1;
	for (size_t d = 0; d < p[3]; d++)
		if (__builtin_mul_overflow(want, (uint64_t)be32(p + 4 + 4 * d), &want))
			want = UINT64_MAX;
	if (want > FILL_MAX)
		want = FILL_MAX;
	else if (delta < 0 && want)
		want--;
	else if (delta > 0)
		want++;
	uint8_t *data = fz_cycle(p + off, n - off, (size_t)want);
	uint8_t *out = malloc(off + (size_t)want + 1);
	FZ_CHECK(out);
	memcpy(out, p, off);
	memcpy(out + off, data, (size_t)want);
	free(data);
	*len = off + (size_t)want;
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t max_bytes[4] = {0, 1 << 10, 1 << 16, 1 << 24};
	fz in = {data, size};
	uint8_t flags = fz_u8(&in), classes = fz_u8(&in), opt = fz_u8(&in);
	int level = fz_u8(&in) % 10;
	uint16_t split = fz_u16(&in), cut = fz_u16(&in);
	size_t blen;
	const uint8_t *body = fz_take(&in, SIZE_MAX, &blen);
	int have_labels = flags >> 2 & 1, fill = opt >> 4 & 3;
	size_t ilen = have_labels ? split % (blen + 1) : blen;
	size_t llen = blen - ilen;
	uint8_t *img, *lab;
	if (fill) {
		int delta = fill == 1 ? 0 : fill == 2 ? -1 : 1;
		img = fill_idx(body, ilen, delta, &ilen);
		lab = fill_idx(body + (blen - llen), llen, delta, &llen);
	} else {
		img = fz_cycle(body, ilen, ilen);
		lab = fz_cycle(body + ilen, llen, llen);
	}

	size_t zlen;
	uint8_t *z = fz_encode_file(flags & 3, img, ilen, level, cut, &zlen);
	fz_file_set(&images, z, zlen);
	free(z);
	size_t zimg = zlen, zlab = 0;
	if (have_labels) {
		z = fz_encode_file(flags >> 3 & 3, lab, llen, level, cut, &zlen);
		fz_file_set(&labels, z, zlen);
		free(z);
		zlab = zlen;
	}

	dml_data_opts o;
	memset(&o, 0, sizeof o);
	o.max_bytes = max_bytes[opt & 3];
	o.raw_pixels = flags >> 5 & 1;
	o.remap_labels = flags >> 6 & 1;
	o.classes = flags >> 7 ? classes : 0;
	dml_dataset *ds = (dml_dataset *)(uintptr_t)0x1;
	int rc = dml_dataset_new_idx(&ds, images.path,
	                              have_labels ? labels.path : NULL, &o);
	if (o.remap_labels && o.classes) {
		FZ_CHECK(rc == DML_EINVAL);
	} else if (rc == 0) {
		fz_check_dataset(ds);
		/* a gzip stream cut short never loads */
		FZ_CHECK(!((flags & 3) == 2 && zimg >= 10));
		FZ_CHECK(!(have_labels && (flags >> 3 & 3) == 2 && zlab >= 10));
		check_content(ds, img, ilen, lab, llen, have_labels,
		              o.raw_pixels);
		dml_dataset_free(ds);
	} else {
		FZ_CHECK(rc == DML_EFORMAT || rc == DML_ETRUNC ||
		         rc == DML_ETOOBIG || rc == DML_EDIM);
		FZ_CHECK(ds == (dml_dataset *)(uintptr_t)0x1);
		fz_check_detail(rc);
		/* intact files that are valid load, unless too large */
		if ((flags & 3) <= 1 && (!have_labels || (flags >> 3 & 3) <= 1) &&
		    rc != DML_ETOOBIG)
			FZ_CHECK(!idx_valid(img, ilen, lab, llen,
			                    have_labels, o.classes));
	}
	free(img);
	free(lab);
	return 0;
}

/*
 * data_idx.c - the IDX reader (MNIST, Fashion-MNIST), plain or gzip.
 *
 * An IDX file is a 4-byte magic (0, 0, type, number of dimensions), one
 * big-endian u32 per dimension, then the values row-major, big-endian. The
 * header's sizes are a claim: the product is checked for overflow and
 * against max_bytes, and memory then grows with the data actually read.
 */
#include "dataset.h"
#include "file.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define IDX_U8 0x08
#define IDX_F32 0x0D
#define IDX_MAX_DIMS 4
#define CHUNK ((size_t)1 << 18)         /* bytes read per gzread */
#define FIRST_CAP ((size_t)1 << 16)     /* values allocated before data arrives */

/* An open IDX file and its header. */
typedef struct idx_file {
	gzFile gz;
	const char *path;
	int type;
	int ndims;
	uint32_t dims[IDX_MAX_DIMS];
	uint64_t off;   /* bytes consumed so far */
	uint64_t row;   /* values per item: the product of dims[1..] */
	uint64_t count; /* values in the file: the product of dims */
} idx_file;

/* A message naming the file and the byte offset. */
#define FAIL(code, f, at, ...)                                                 \
	dml__data_fail(code, (f)->path, (unsigned long long)(at), 1, __VA_ARGS__)

static const char *type_name(int t)
{
	switch (t) {
	case 0x08: return "u8";
	case 0x09: return "i8";
	case 0x0B: return "i16";
	case 0x0C: return "i32";
	case 0x0D: return "f32";
	case 0x0E: return "f64";
	default: return NULL;
	}
}

/* Reads exactly n bytes or fails, naming what was being read. */
static int read_exact(idx_file *f, void *buf, size_t n,
                      const char *what)
{
	size_t got;
	const char *why = "";
	int rc = dml__gz_read(f->gz, f->path, buf, n, &got, &why);
	if (rc)
		return FAIL(rc, f, f->off + got, "%s", why);
	if (got < n)
		return FAIL(DML_ETRUNC, f, f->off + got,
		            "file ends inside the %s", what);
	f->off += n;
	return 0;
}

/* Opens `path` and reads its header; the role says which types and
 * dimensions are acceptable. */
static int idx_open(idx_file *f, const char *path, int images)
{
	memset(f, 0, sizeof *f);
	f->path = path;
	int fd;
	const char *why;
	if (dml__file_open_read(path, 0, &fd, &why))
		return dml__data_fail(DML_EIO, path, 0, 1, "cannot open: %s", why);
	f->gz = gzdopen(fd, "rb");
	if (!f->gz) {
		close(fd);
		return dml__data_fail(DML_ENOMEM, path, 0, 1,
		                      "cannot open: out of memory");
	}
	gzbuffer(f->gz, DML__GZ_BUFFER);
	uint8_t magic[4];
	int rc = read_exact(f, magic, 4, "header");
	if (rc)
		return rc;
	if (magic[0] || magic[1])
		return FAIL(DML_EFORMAT, f, 0,
		            "bad magic %02x %02x %02x %02x (not an IDX file)",
		            magic[0], magic[1], magic[2], magic[3]);
	f->type = magic[2];
	f->ndims = magic[3];
	const char *tn = type_name(f->type);
	if (!tn)
		return FAIL(DML_EFORMAT, f, 2, "bad type byte 0x%02x",
		            (unsigned)f->type);
	if (images ? f->type != IDX_U8 && f->type != IDX_F32 : f->type != IDX_U8)
		return FAIL(DML_EFORMAT, f, 2,
		            "type %s (0x%02x) not supported for %s; expected %s", tn,
		            (unsigned)f->type, images ? "images" : "labels",
		            images ? "u8 (0x08) or f32 (0x0d)" : "u8 (0x08)");
	if (images ? f->ndims < 2 || f->ndims > IDX_MAX_DIMS : f->ndims != 1)
		return FAIL(DML_EFORMAT, f, 3,
		            "%d dimensions; %s need %s", f->ndims,
		            images ? "images" : "labels", images ? "2 to 4" : "1");
	uint8_t raw[4 * IDX_MAX_DIMS];
	if ((rc = read_exact(f, raw, 4 * (size_t)f->ndims, "header")))
		return rc;
	uint64_t row = 1;
	for (int d = 0; d < f->ndims; d++) {
		const uint8_t *p = raw + 4 * d;
		f->dims[d] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
		             (uint32_t)p[2] << 8 | p[3];
		if (d == 0)
			continue;
		if (f->dims[d] == 0)
			return FAIL(DML_EFORMAT, f, 4 + 4 * d, "dimension %d is 0",
			            d);
		if (row > UINT64_MAX / f->dims[d])
			return FAIL(DML_EFORMAT, f, 4, "dimensions overflow");
		row *= f->dims[d];
	}
	if (row > SIZE_MAX || (f->dims[0] && row > UINT64_MAX / f->dims[0]))
		return FAIL(DML_EFORMAT, f, 4, "dimensions overflow: %u x %llu",
		            f->dims[0], (unsigned long long)row);
	f->row = row;
	f->count = row * f->dims[0];
	return 0;
}

static void idx_close(idx_file *f)
{
	if (f->gz)
		gzclose(f->gz);
	f->gz = NULL;
}

/* After the data: anything more is an error (and reading on lets zlib
 * verify the gzip trailer's checksum). */
static int expect_end(idx_file *f)
{
	uint8_t b;
	size_t got;
	const char *why = "";
	int rc = dml__gz_read(f->gz, f->path, &b, 1, &got, &why);
	if (rc)
		return FAIL(rc, f, f->off, "%s", why);
	if (got)
		return FAIL(DML_EFORMAT, f, f->off,
		            "unexpected data after the %llu values the header "
		            "declares", (unsigned long long)f->count);
	return 0;
}

/* Grows *buf (floats) to hold at least `need` of at most `total` values. */
static int grow(float **buf, size_t *cap, size_t need, size_t total)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap > total / 2 ? total : *cap * 2;
	if (nc < need)
		nc = need;
	float *p = realloc(*buf, nc * sizeof *p);
	if (!p)
		return DML_ENOMEM;
	*buf = p;
	*cap = nc;
	return 0;
}

static float f32_be(const uint8_t *p)
{
	uint32_t u = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	             (uint32_t)p[2] << 8 | p[3];
	float v;
	memcpy(&v, &u, sizeof v);
	return v;
}

/*
 * Reads the f->count values as floats into a new array *out: u8 through
 * `lut`, f32 checked finite. Labels (lut NULL) are checked against
 * `classes` when non-zero, and their maximum goes to *max_label.
 */
static int read_values(idx_file *f, const float *lut,
                       size_t classes, unsigned *max_label, float **out)
{
	size_t total = (size_t)f->count, esize = f->type == IDX_F32 ? 4 : 1;
	size_t have = 0, cap = total < FIRST_CAP ? total : FIRST_CAP;
	uint64_t start = f->off;
	float *v = malloc((cap ? cap : 1) * sizeof *v);
	uint8_t *chunk = malloc(CHUNK);
	int rc = v && chunk ? 0 : DML_ENOMEM;
	if (max_label)
		*max_label = 0;
	while (!rc && have < total) {
		size_t k = (total - have) < CHUNK / esize ? total - have : CHUNK / esize;
		size_t got;
		const char *why = "";
		if ((rc = dml__gz_read(f->gz, f->path, chunk, k * esize, &got, &why))) {
			FAIL(rc, f, f->off + got, "%s", why);
			break;
		}
		if (got < k * esize) {
			rc = FAIL(DML_ETRUNC, f, f->off + got,
			          "truncated: the header declares %llu values of %zu "
			          "byte(s) at offsets %llu..%llu, the file ends here",
			          (unsigned long long)total, esize,
			          (unsigned long long)start,
			          (unsigned long long)(start + total * esize - 1));
			break;
		}
		f->off += got;
		if ((rc = grow(&v, &cap, have + k, total))) /* only once it is here */
			break;
		uint64_t at = f->off - k * esize;
		for (size_t i = 0; i < k; i++) {
			if (esize == 4) {
				float x = f32_be(chunk + 4 * i);
				if (!isfinite(x)) {
					rc = FAIL(DML_EFORMAT, f, at + 4 * i,
					          "value is NaN or infinite");
					break;
				}
				v[have + i] = x;
			} else if (lut) {
				v[have + i] = lut[chunk[i]];
			} else {
				unsigned l = chunk[i];
				if (classes && l >= classes) {
					rc = FAIL(DML_EFORMAT, f, at + i,
					          "label %u out of range 0..%zu", l,
					          classes - 1);
					break;
				}
				if (l > *max_label)
					*max_label = l;
				v[have + i] = (float)l;
			}
		}
		have += k;
	}
	if (!rc)
		rc = expect_end(f);
	free(chunk);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	return 0;
}

/* The bytes the data set will take, against the limit. */
static int check_size(idx_file *img, uint64_t limit)
{
	uint64_t n = img->dims[0], values = img->count;
	if (values > (UINT64_MAX - 4 * n) / 4 || values > SIZE_MAX / 4 ||
	    4 * values + 4 * n > limit)
		return FAIL(DML_ETOOBIG, img, 4,
		            "header declares %llu values, more than max_bytes "
		            "(%llu bytes) allows", (unsigned long long)values,
		            (unsigned long long)limit);
	return 0;
}

static int load(dml_dataset **out, idx_file *img, idx_file *lab,
                const char *labels_path, const dml_data_opts *o)
{
	uint64_t limit = o->max_bytes ? o->max_bytes : DML_DATA_DEFAULT_MAX_BYTES;
	int rc = idx_open(img, img->path, 1);
	if (!rc)
		rc = check_size(img, limit);
	if (!rc && labels_path) {
		rc = idx_open(lab, labels_path, 0);
		if (!rc && lab->dims[0] != img->dims[0])
			rc = dml__data_fail(DML_EDIM, lab->path, 4, 1,
			             "%u labels, but %s has %u images", lab->dims[0],
			             img->path, img->dims[0]);
	}
	if (rc)
		return rc;
	size_t n = img->dims[0], dim = (size_t)img->row;
	float lut[256];
	for (int i = 0; i < 256; i++)
		lut[i] = o->raw_pixels ? (float)i : (float)i / 255.0f;
	float *x = NULL, *y = NULL;
	unsigned max_label = 0;
	rc = read_values(img, lut, 0, NULL, &x);
	if (!rc && labels_path)
		rc = read_values(lab, NULL, o->classes, &max_label, &y);
	if (!rc && !labels_path && !(y = calloc(n ? n : 1, sizeof *y)))
		rc = DML_ENOMEM;
	if (rc) {
		free(x);
		free(y);
		return rc;
	}
	dml_dataset *ds;
	if ((rc = dml__dataset_adopt(&ds, n, dim, x, NULL, NULL, NULL, y)))
		return rc;
	dml__dataset_set_limit(ds, limit);
	if (labels_path && (o->classes || n))
		rc = dml__dataset_set_class_info(ds, o->classes ? o->classes
		                                                : (size_t)max_label + 1);
	if (!rc && o->remap_labels && labels_path) /* no labels: nothing to remap */
		rc = dml_dataset_remap_labels(ds, NULL);
	if (rc) {
		dml_dataset_free(ds);
		return rc;
	}
	*out = ds;
	return 0;
}

int dml__load_idx(dml_dataset **out, const char *images_path,
                  const char *labels_path, const dml_data_opts *o)
{
	if (!out || !images_path)
		return DML_EINVAL;
	if ((o->remap_labels && o->classes) || o->classes > DML_DATA_MAX_CLASSES)
		return dml__fail(DML_EINVAL, "classes %zu (at most %zu, not with "
		                 "remap_labels)", o->classes, DML_DATA_MAX_CLASSES);
	idx_file img = {0}, lab = {0};
	img.path = images_path;
	int rc = load(out, &img, &lab, labels_path, o);
	idx_close(&img);
	idx_close(&lab);
	return rc;
}

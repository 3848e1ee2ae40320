/*
 * ckpt.c - the checkpoint file container (see ckpt.h, docs/checkpoint.md).
 *
 * A file is a 40-byte header, the caller's meta, one zlib stream holding the
 * sections (each a 16-byte section header and its bytes), and a 28-byte
 * trailer. The header gives the total file length, so a reader learns at
 * open whether the file was cut, and knows exactly where the compressed data
 * must end; it is written last, once that length is known. Format version
 * 2 is version 1 with a 32-byte HMAC-SHA256 after the trailer (of every
 * byte after the header, then of the header), written under a key.
 */
#include "ckpt.h"
#include "file.h"
#include "mac.h"

#define ZLIB_CONST
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define HDR_LEN 40
#define TRAILER_LEN 28
#define SEC_HDR_LEN 16
#define IO_CHUNK 65536           /* file reads and writes */
#define ZLIB_MAX_IN (1u << 30)   /* avail_in / avail_out are uInt */

static const uint8_t ckpt_magic[8] = {'D', 'M', 'L', 'C', 'K', 'P', 'T', 0};
static const uint8_t end_magic[8] = {'D', 'M', 'L', 'C', 'K', 'E', 'N', 'D'};

/* Header fields after the magic. */
typedef struct header {
	uint32_t version;
	uint32_t kind;
	uint32_t meta_len;
	uint32_t nsec;
	uint64_t file_len;
	uint32_t meta_crc;
} header;

static uint32_t crc(uint32_t c, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) { /* crc32 takes a uInt length */
		uInt k = n > ZLIB_MAX_IN ? ZLIB_MAX_IN : (uInt)n;
		c = (uint32_t)crc32(c, b, k);
		b += k;
		n -= k;
	}
	return c;
}

static void header_put(uint8_t *h, const header *f)
{
	memcpy(h, ckpt_magic, 8);
	dml__put_u32(h + 8, f->version);
	dml__put_u32(h + 12, f->kind);
	dml__put_u32(h + 16, f->meta_len);
	dml__put_u32(h + 20, f->nsec);
	dml__put_u64(h + 24, f->file_len);
	dml__put_u32(h + 32, f->meta_crc);
	dml__put_u32(h + 36, crc(0, h, 36));
}

/* Section header in the uncompressed stream: tag, length, CRC of both. */
static void sec_header_put(uint8_t *s, uint32_t tag, uint64_t len)
{
	dml__put_u32(s, tag);
	dml__put_u64(s + 4, len);
	dml__put_u32(s + 12, crc(0, s, 12));
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return DML_EIO; /* k == 0 cannot happen for a regular file */
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Reads up to n bytes, stopping early only at end of file. -1 on error. */
static ssize_t read_full(int fd, uint8_t *p, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = read(fd, p + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -1;
		if (k == 0)
			break;
		got += (size_t)k;
	}
	return (ssize_t)got;
}

/* ---- writing ---- */

typedef struct writer {
	int fd;
	int zinit;
	z_stream zs;
	uint32_t crc; /* of every byte after the header, so far */
	dml__mac *mac; /* ... and its MAC, under a key (else NULL) */
	uint64_t off; /* bytes handed to write() */
	size_t used;  /* bytes waiting in out */
	uint8_t out[IO_CHUNK];
} writer;

static int w_flush(writer *w)
{
	w->crc = crc(w->crc, w->out, w->used);
	if (w->mac)
		dml__mac_update(w->mac, w->out, w->used);
	int rc = write_all(w->fd, w->out, w->used);
	w->off += w->used;
	w->used = 0;
	return rc;
}

/* Appends bytes that are not compressed (meta, trailer). */
static int w_put(writer *w, const uint8_t *p, size_t n)
{
	while (n) {
		size_t k = sizeof w->out - w->used;
		if (k > n)
			k = n;
		memcpy(w->out + w->used, p, k);
		w->used += k;
		p += k;
		n -= k;
		if (w->used == sizeof w->out) {
			int rc = w_flush(w);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* Compresses n bytes into the output; with `finish`, ends the stream. */
static int w_deflate(writer *w, const uint8_t *p, uint64_t n, int finish)
{
	do {
		uInt k = n > ZLIB_MAX_IN ? ZLIB_MAX_IN : (uInt)n;
		w->zs.next_in = p;
		w->zs.avail_in = k;
		if (k) /* p may be NULL when n is 0 */
			p += k;
		n -= k;
		int flush = finish && !n ? Z_FINISH : Z_NO_FLUSH;
		for (;;) {
			w->zs.next_out = w->out + w->used;
			w->zs.avail_out = (uInt)(sizeof w->out - w->used);
			int zr = deflate(&w->zs, flush);
			if (zr == Z_STREAM_ERROR)
				return DML_EINVAL; /* cannot happen: state is ours */
			w->used = sizeof w->out - w->zs.avail_out;
			int full = w->zs.avail_out == 0;
			if (full) {
				int rc = w_flush(w);
				if (rc)
					return rc;
			}
			if (zr == Z_STREAM_END)
				break;
			if (!full && flush == Z_NO_FLUSH && w->zs.avail_in == 0)
				break;
		}
	} while (n);
	return 0;
}

/* Writes everything after the placeholder header, then the real header. */
static int w_body(writer *w, uint32_t kind, const void *meta, uint32_t meta_len,
                  const dml__ckpt_sec *secs, uint32_t nsec, uint64_t raw_len)
{
	uint8_t h[HDR_LEN] = {0}, s[SEC_HDR_LEN], t[TRAILER_LEN];
	int rc = write_all(w->fd, h, sizeof h);
	w->off = sizeof h;
	if (!rc)
		rc = w_put(w, meta, meta_len);
	for (uint32_t i = 0; !rc && i < nsec; i++) {
		sec_header_put(s, secs[i].tag, secs[i].len);
		rc = w_deflate(w, s, sizeof s, 0);
		if (!rc && secs[i].len)
			rc = w_deflate(w, secs[i].data, secs[i].len, 0);
	}
	if (!rc)
		rc = w_deflate(w, NULL, 0, 1);
	if (rc)
		return rc;
	uint64_t comp_len = w->off + w->used - HDR_LEN - meta_len;
	memcpy(t, end_magic, 8);
	dml__put_u64(t + 8, raw_len);
	dml__put_u64(t + 16, comp_len);
	/* w->crc covers flushed bytes only: add what waits in the buffer */
	dml__put_u32(t + 24, crc(crc(w->crc, w->out, w->used), t, 24));
	if ((rc = w_put(w, t, sizeof t)) || (rc = w_flush(w)))
		return rc;
	header f = {w->mac ? DML__CKPT_VERSION_MAC : DML__CKPT_VERSION, kind,
	            meta_len, nsec, w->off + (w->mac ? DML__MAC_LEN : 0),
	            crc(0, meta, meta_len)};
	header_put(h, &f);
	if (w->mac) { /* the MAC covers the header too: it ends the file */
		uint8_t tag[DML__MAC_LEN];
		dml__mac_update(w->mac, h, sizeof h);
		if ((rc = dml__mac_final(w->mac, tag)) ||
		    (rc = write_all(w->fd, tag, sizeof tag)))
			return rc;
	}
	ssize_t k;
	do
		k = pwrite(w->fd, h, sizeof h, 0);
	while (k < 0 && errno == EINTR);
	if (k != (ssize_t)sizeof h)
		return DML_EIO;
	return 0;
}

/* The directory holding `path`, for its fsync. */
static int open_dir(const char *path, char *dir)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		strcpy(dir, ".");
	} else {
		size_t n = slash == path ? 1 : (size_t)(slash - path);
		memcpy(dir, path, n);
		dir[n] = 0;
	}
	int fd;
	do
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	return fd;
}

static int check_save_args(const char *path, const void *meta,
                           uint32_t meta_len, const dml__ckpt_sec *secs,
                           uint32_t nsec, int level, uint64_t *raw_len)
{
	if (!path || !*path || (meta_len && !meta) ||
	    meta_len > DML__CKPT_META_MAX || (nsec && !secs) ||
	    level < DML__CKPT_LEVEL_DEFAULT || level > 9)
		return DML_EINVAL;
	uint64_t raw = 0;
	for (uint32_t i = 0; i < nsec; i++) {
		if (secs[i].len && !secs[i].data)
			return DML_EINVAL;
		if (secs[i].len > UINT64_MAX - SEC_HDR_LEN - raw)
			return DML_EINVAL;
		raw += SEC_HDR_LEN + secs[i].len;
	}
	*raw_len = raw;
	return 0;
}

int dml__ckpt_save(const char *path, uint32_t kind, const void *meta,
                   uint32_t meta_len, const dml__ckpt_sec *secs, uint32_t nsec,
                   int level)
{
	return dml__ckpt_save_with(path, kind, meta, meta_len, secs, nsec, level,
	                           NULL);
}

int dml__ckpt_save_with(const char *path, uint32_t kind, const void *meta,
                        uint32_t meta_len, const dml__ckpt_sec *secs,
                        uint32_t nsec, int level, const dml__ckpt_opts *o)
{
	static const dml__ckpt_opts none;
	if (!o)
		o = &none;
	uint64_t raw_len;
	int rc = check_save_args(path, meta, meta_len, secs, nsec, level, &raw_len);
	if (rc)
		return rc;
	if (o->mode > 0777)
		return DML_EINVAL;
	dml__mac *mac = NULL;
	if (o->key_len && (rc = dml__mac_new(&mac, o->key, o->key_len)))
		return rc;
	size_t cap = strlen(path) + DML__FILE_TMP_EXTRA;
	char *names = malloc(2 * cap);
	writer *w = malloc(sizeof *w);
	if (!names || !w) {
		free(names);
		free(w);
		dml__mac_free(mac);
		return DML_ENOMEM;
	}
	char *tmp = names, *dir = names + cap;
	int dfd, fd, zr, created = 0;
	w->fd = -1;
	w->zinit = 0;
	w->crc = 0;
	w->mac = mac;
	w->used = 0;
	memset(&w->zs, 0, sizeof w->zs);

	rc = DML_EIO;
	if ((dfd = open_dir(path, dir)) < 0 ||
	    (w->fd = dml__file_create_tmp(path, o->mode, tmp)) < 0)
		goto out;
	created = 1;
	/* The default: run-length matches only, then Huffman coding. On float
	 * vectors it compresses as well as level 1 at three times the speed
	 * (the gain is in the exponent bytes, and in runs of zeros). */
	zr = deflateInit2(&w->zs, level < 0 ? 1 : level, Z_DEFLATED, 15, 8,
	                  level < 0 ? Z_RLE : Z_DEFAULT_STRATEGY);
	if (zr != Z_OK) {
		rc = zr == Z_MEM_ERROR ? DML_ENOMEM : DML_EINVAL;
		goto out;
	}
	w->zinit = 1;
	if ((rc = w_body(w, kind, meta, meta_len, secs, nsec, raw_len)))
		goto out;
	rc = DML_EIO;
	if (fsync(w->fd))
		goto out;
	fd = w->fd;
	w->fd = -1;
	if ((close(fd) && errno != EINTR) || rename(tmp, path))
		goto out;
	created = 0; /* renamed: nothing to remove */
	rc = 0;
	/* Some file systems cannot sync a directory: that is not a failure. */
	if (fsync(dfd) && errno != EINVAL)
		rc = DML_EIO;
out:;
	int err = errno;
	if (w->zinit)
		deflateEnd(&w->zs);
	if (w->fd >= 0)
		close(w->fd);
	if (created)
		unlink(tmp);
	if (dfd >= 0)
		close(dfd);
	dml__mac_free(w->mac);
	free(w);
	free(names);
	errno = err;
	return rc;
}

/* ---- reading ---- */

struct dml__ckpt_reader {
	int fd;
	int err;         /* final error; every later call returns it */
	int zinit;
	int ended;       /* the zlib stream has ended */
	int peeked;      /* the next section's header has been read */
	uint32_t ptag;   /* ... and says this tag */
	uint64_t plen;   /* ... and this length */
	uint32_t nsec;   /* sections in the file */
	uint32_t next;   /* sections consumed */
	uint64_t comp_len;
	uint64_t comp_left; /* compressed bytes not read from the file yet */
	uint64_t raw_len;   /* uncompressed bytes produced so far */
	uint32_t crc;       /* of every byte after the header read so far */
	uint32_t version;
	dml__mac *mac;      /* under a key: the MAC of the same bytes */
	uint8_t hdr[HDR_LEN];
	z_stream zs;
	uint8_t in[IO_CHUNK];
	uint8_t scratch[4096];
};

void dml__ckpt_abort(dml__ckpt_reader *r)
{
	if (!r)
		return;
	int err = errno;
	if (r->zinit)
		inflateEnd(&r->zs);
	if (r->fd >= 0)
		close(r->fd);
	dml__mac_free(r->mac);
	free(r);
	errno = err;
}

/* A file shorter than a header: cut short if what is there begins the
 * magic, else something else altogether. */
static int short_header(const uint8_t *h, size_t n)
{
	return memcmp(h, ckpt_magic, n < 8 ? n : 8) ? DML_EFORMAT : DML_ETRUNC;
}

static uint32_t mac_len(uint32_t version)
{
	return version == DML__CKPT_VERSION_MAC ? DML__MAC_LEN : 0;
}

static int parse_header(const uint8_t *h, header *f)
{
	if (memcmp(h, ckpt_magic, 8))
		return DML_EFORMAT;
	f->version = dml__get_u32(h + 8);
	if (f->version != DML__CKPT_VERSION && f->version != DML__CKPT_VERSION_MAC)
		return DML_EVERSION;
	if (crc(0, h, 36) != dml__get_u32(h + 36))
		return DML_ECORRUPT;
	f->kind = dml__get_u32(h + 12);
	f->meta_len = dml__get_u32(h + 16);
	f->nsec = dml__get_u32(h + 20);
	f->file_len = dml__get_u64(h + 24);
	f->meta_crc = dml__get_u32(h + 32);
	/* A zlib stream takes at least 8 bytes. */
	if (f->meta_len > DML__CKPT_META_MAX ||
	    f->file_len < (uint64_t)HDR_LEN + f->meta_len + 8 + TRAILER_LEN +
	                  mac_len(f->version))
		return DML_EFORMAT;
	return 0;
}

/* Checks the file's size against the header's file_len. */
static int check_size(int fd, uint64_t file_len)
{
	struct stat st;
	if (fstat(fd, &st))
		return DML_EIO;
	if (!S_ISREG(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		return DML_EIO;
	}
	uint64_t size = (uint64_t)st.st_size;
	return size < file_len ? DML_ETRUNC : size > file_len ? DML_ECORRUPT : 0;
}

static int open_body(dml__ckpt_reader *r, const char *path, uint32_t *kind,
                     void *meta, uint32_t meta_cap, uint32_t *meta_len,
                     const dml__ckpt_opts *o)
{
	uint8_t *h = r->hdr;
	header f;
	int rc;
	const char *why;
	if ((rc = dml__file_open_read(path, DML__FILE_NOFOLLOW, &r->fd, &why))) {
		int err = errno;
		dml__fail(rc, "%s: cannot open: %s", path, why);
		errno = err;
		return rc;
	}
	ssize_t n = read_full(r->fd, h, HDR_LEN);
	if (n < 0)
		return DML_EIO;
	if (n < HDR_LEN)
		return short_header(h, (size_t)n);
	if ((rc = parse_header(h, &f)))
		return rc;
	if (kind)
		*kind = f.kind;
	if (meta_len)
		*meta_len = f.meta_len;
	if ((rc = check_size(r->fd, f.file_len)))
		return rc;
	if (f.meta_len > meta_cap)
		return DML_EFORMAT;
	n = read_full(r->fd, meta, f.meta_len);
	if (n < 0)
		return DML_EIO;
	if (n < (ssize_t)f.meta_len)
		return DML_ETRUNC; /* shrank since fstat */
	r->crc = crc(0, meta, f.meta_len);
	if (r->crc != f.meta_crc)
		return DML_ECORRUPT;
	r->version = f.version;
	if (o->key_len) {
		if (f.version != DML__CKPT_VERSION_MAC)
			return dml__fail(DML_EAUTH, "%s: not signed (a key was given, "
			                 "and the file has no MAC)", path);
		if ((rc = dml__mac_new(&r->mac, o->key, o->key_len)))
			return rc;
		dml__mac_update(r->mac, meta, f.meta_len);
	}
	int zr = inflateInit(&r->zs);
	if (zr != Z_OK)
		return zr == Z_MEM_ERROR ? DML_ENOMEM : DML_EINVAL;
	r->zinit = 1;
	r->nsec = f.nsec;
	r->comp_len = r->comp_left = f.file_len - HDR_LEN - f.meta_len -
	                             TRAILER_LEN - mac_len(f.version);
	return 0;
}

int dml__ckpt_open(dml__ckpt_reader **out, const char *path, uint32_t *kind,
                   void *meta, uint32_t meta_cap, uint32_t *meta_len)
{
	return dml__ckpt_open_with(out, path, kind, meta, meta_cap, meta_len, NULL);
}

int dml__ckpt_open_with(dml__ckpt_reader **out, const char *path,
                        uint32_t *kind, void *meta, uint32_t meta_cap,
                        uint32_t *meta_len, const dml__ckpt_opts *o)
{
	static const dml__ckpt_opts none;
	if (!o)
		o = &none;
	if (!out)
		return DML_EINVAL;
	*out = NULL;
	if (!path || (meta_cap && !meta))
		return DML_EINVAL;
	dml__ckpt_reader *r = malloc(sizeof *r);
	if (!r)
		return DML_ENOMEM;
	r->fd = -1;
	r->err = r->zinit = r->ended = r->peeked = 0;
	r->next = 0;
	r->raw_len = 0;
	r->mac = NULL;
	memset(&r->zs, 0, sizeof r->zs);
	int rc = open_body(r, path, kind, meta, meta_cap, meta_len, o);
	if (rc) {
		dml__ckpt_abort(r);
		return rc;
	}
	*out = r;
	return 0;
}

static int refill(dml__ckpt_reader *r)
{
	size_t want = r->comp_left < sizeof r->in ? (size_t)r->comp_left : sizeof r->in;
	ssize_t n;
	do
		n = read(r->fd, r->in, want);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return DML_EIO;
	if (n == 0)
		return DML_ETRUNC; /* shrank since open */
	r->crc = crc(r->crc, r->in, (size_t)n);
	if (r->mac)
		dml__mac_update(r->mac, r->in, (size_t)n);
	r->comp_left -= (uint64_t)n;
	r->zs.next_in = r->in;
	r->zs.avail_in = (uInt)n;
	return 0;
}

/*
 * One inflate step into dst (at most `cap` bytes); *got says how many came.
 * The compressed data has a known end: a stream that needs more than that,
 * or that is malformed, is corrupt.
 */
static int inflate_step(dml__ckpt_reader *r, uint8_t *dst, uint64_t cap,
                        size_t *got)
{
	if (!r->zs.avail_in && r->comp_left) {
		int rc = refill(r);
		if (rc)
			return rc;
	}
	uInt k = cap > ZLIB_MAX_IN ? ZLIB_MAX_IN : (uInt)cap;
	r->zs.next_out = dst;
	r->zs.avail_out = k;
	int zr = inflate(&r->zs, Z_NO_FLUSH);
	*got = k - r->zs.avail_out;
	r->raw_len += *got;
	switch (zr) {
	case Z_OK:
		return 0;
	case Z_STREAM_END:
		r->ended = 1;
		return 0;
	case Z_MEM_ERROR:
		return DML_ENOMEM;
	case Z_BUF_ERROR: /* no progress: out of compressed data */
		return r->zs.avail_in || r->comp_left ? 0 : DML_ECORRUPT;
	default: /* Z_DATA_ERROR, Z_NEED_DICT */
		return DML_ECORRUPT;
	}
}

/* Inflates exactly `len` bytes into dst. */
static int pull(dml__ckpt_reader *r, uint8_t *dst, uint64_t len)
{
	while (len) {
		if (r->ended)
			return DML_ECORRUPT; /* the stream ends inside a section */
		size_t got;
		int rc = inflate_step(r, dst, len, &got);
		if (rc)
			return rc;
		dst += got;
		len -= got;
	}
	return 0;
}

/* Reads the next section header, if not done already. Errors are final,
 * except DML_ENOTFOUND (no section left). */
static int next_header(dml__ckpt_reader *r)
{
	if (r->err || r->peeked)
		return r->err;
	if (r->next == r->nsec)
		return DML_ENOTFOUND;
	uint8_t s[SEC_HDR_LEN];
	int rc = pull(r, s, sizeof s);
	if (rc)
		return r->err = rc;
	if (crc(0, s, 12) != dml__get_u32(s + 12))
		return r->err = DML_ECORRUPT;
	r->ptag = dml__get_u32(s);
	r->plen = dml__get_u64(s + 4);
	r->peeked = 1;
	return 0;
}

static void consumed(dml__ckpt_reader *r)
{
	r->peeked = 0;
	r->next++;
}

int dml__ckpt_read(dml__ckpt_reader *r, uint32_t tag, void *dst, uint64_t len)
{
	if (!r || (len && !dst))
		return DML_EINVAL;
	int rc = next_header(r);
	if (rc)
		return rc == DML_ENOTFOUND ? DML_EFORMAT : rc;
	if (r->ptag != tag || r->plen != len)
		return DML_EFORMAT;
	if ((rc = pull(r, dst, len)))
		return r->err = rc;
	consumed(r);
	return 0;
}

int dml__ckpt_peek(dml__ckpt_reader *r, uint32_t *tag, uint64_t *len)
{
	if (!r)
		return DML_EINVAL;
	int rc = next_header(r);
	if (rc)
		return rc;
	if (tag)
		*tag = r->ptag;
	if (len)
		*len = r->plen;
	return 0;
}

int dml__ckpt_skip(dml__ckpt_reader *r)
{
	if (!r)
		return DML_EINVAL;
	int rc = next_header(r);
	if (rc)
		return rc;
	/* plen is only a claim: a false one ends in DML_ECORRUPT when the
	 * stream runs out, having used no more memory than the scratch. */
	for (uint64_t left = r->plen; left;) {
		uint64_t k = left < sizeof r->scratch ? left : sizeof r->scratch;
		if ((rc = pull(r, r->scratch, k)))
			return r->err = rc;
		left -= k;
	}
	consumed(r);
	return 0;
}

/* After the last section: the zlib stream must end, with no more output,
 * exactly where the compressed data does. */
static int finish_stream(dml__ckpt_reader *r)
{
	while (!r->ended) {
		size_t got;
		int rc = inflate_step(r, r->scratch, sizeof r->scratch, &got);
		if (rc)
			return rc;
		if (got)
			return DML_ECORRUPT;
	}
	return r->zs.avail_in || r->comp_left ? DML_ECORRUPT : 0;
}

static int check_trailer(dml__ckpt_reader *r)
{
	uint8_t t[TRAILER_LEN + DML__MAC_LEN + 1];
	ssize_t want = TRAILER_LEN + (ssize_t)mac_len(r->version);
	ssize_t n = read_full(r->fd, t, (size_t)want + 1);
	if (n < 0)
		return DML_EIO;
	if (n < want)
		return DML_ETRUNC; /* shrank since open */
	if (n > want)
		return DML_ECORRUPT; /* grew since open */
	uint32_t c = crc(r->crc, t, 24);
	if (memcmp(t, end_magic, 8) || dml__get_u64(t + 8) != r->raw_len ||
	    dml__get_u64(t + 16) != r->comp_len || dml__get_u32(t + 24) != c)
		return DML_ECORRUPT;
	if (!r->mac) /* no key: the MAC (if any) cannot be checked */
		return 0;
	uint8_t tag[DML__MAC_LEN];
	dml__mac_update(r->mac, t, TRAILER_LEN);
	dml__mac_update(r->mac, r->hdr, HDR_LEN);
	int rc = dml__mac_final(r->mac, tag);
	if (rc)
		return rc;
	if (!dml__ct_equal(tag, t + TRAILER_LEN, DML__MAC_LEN))
		return dml__fail(DML_EAUTH, "the checkpoint's MAC does not match "
		                 "this key: forged, or signed with another key");
	return 0;
}

int dml__ckpt_close(dml__ckpt_reader *r)
{
	if (!r)
		return DML_EINVAL;
	int rc = r->err, unread = 0;
	while (!rc && !(rc = dml__ckpt_skip(r)))
		unread = 1;
	if (rc == DML_ENOTFOUND)
		rc = 0;
	if (!rc)
		rc = finish_stream(r);
	if (!rc)
		rc = check_trailer(r);
	if (!rc && unread)
		rc = DML_EFORMAT;
	dml__ckpt_abort(r);
	return rc;
}
